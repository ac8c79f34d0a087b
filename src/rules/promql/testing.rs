//! An in-memory [`Storage`] for tests and the conformance harness: series kept in label
//! order (the order Prometheus's TSDB returns them in), samples in time order.

use std::collections::BTreeMap;

use promql_parser::label::Matchers;

use super::{matches, Labels, Sample, Storage};

#[derive(Debug, Default, Clone)]
pub struct MemStorage {
    series: BTreeMap<Labels, Vec<Sample>>,
}

impl MemStorage {
    pub fn new() -> Self {
        Self::default()
    }

    /// Add samples to a series (labels sorted by name); a sample at an existing timestamp
    /// replaces it.
    pub fn add(&mut self, mut labels: Labels, samples: &[Sample]) {
        labels.sort();
        let s = self.series.entry(labels).or_default();
        for p in samples {
            match s.binary_search_by_key(&p.t, |q| q.t) {
                Ok(i) => s[i] = *p,
                Err(i) => s.insert(i, *p),
            }
        }
    }

    pub fn clear(&mut self) {
        self.series.clear();
    }

    pub fn len(&self) -> usize {
        self.series.len()
    }

    pub fn is_empty(&self) -> bool {
        self.series.is_empty()
    }
}

impl Storage for MemStorage {
    fn select(
        &self,
        matchers: &Matchers,
        mint: i64,
        maxt: i64,
        f: &mut dyn FnMut(&Labels, &[Sample]),
    ) {
        for (labels, samples) in &self.series {
            if !matches(
                matchers,
                labels.iter().map(|(n, v)| (n.as_str(), v.as_str())),
            ) {
                continue;
            }
            let lo = samples.partition_point(|s| s.t <= mint);
            let hi = samples.partition_point(|s| s.t <= maxt);
            if lo < hi {
                f(labels, &samples[lo..hi]);
            }
        }
    }
}
