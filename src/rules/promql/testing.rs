//! An in-memory [`Storage`] for tests and the conformance harness: series kept in label
//! order (the order Prometheus's TSDB returns them in), samples in time order.

use std::collections::BTreeMap;

use promql_parser::label::Matchers;

use super::{matches, HistogramSample, Labels, Sample, SeriesSink, Storage};

#[derive(Debug, Default, Clone)]
pub struct MemStorage {
    series: BTreeMap<Labels, Vec<Sample>>,
    histograms: BTreeMap<Labels, Vec<HistogramSample>>,
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

    /// Add native-histogram samples to a series; one at an existing timestamp replaces it.
    pub fn add_histograms(&mut self, mut labels: Labels, samples: &[HistogramSample]) {
        labels.sort();
        let s = self.histograms.entry(labels).or_default();
        for p in samples {
            match s.binary_search_by_key(&p.t, |q| q.t) {
                Ok(i) => s[i] = p.clone(),
                Err(i) => s.insert(i, p.clone()),
            }
        }
    }

    pub fn clear(&mut self) {
        self.series.clear();
        self.histograms.clear();
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

    fn select_all(&self, matchers: &Matchers, mint: i64, maxt: i64, f: &mut SeriesSink<'_>) {
        let keys: std::collections::BTreeSet<&Labels> =
            self.series.keys().chain(self.histograms.keys()).collect();
        for labels in keys {
            if !matches(
                matchers,
                labels.iter().map(|(n, v)| (n.as_str(), v.as_str())),
            ) {
                continue;
            }
            let fs = self.series.get(labels).map_or(&[][..], |s| {
                &s[s.partition_point(|p| p.t <= mint)..s.partition_point(|p| p.t <= maxt)]
            });
            let hs = self.histograms.get(labels).map_or(&[][..], |s| {
                &s[s.partition_point(|p| p.t <= mint)..s.partition_point(|p| p.t <= maxt)]
            });
            if !fs.is_empty() || !hs.is_empty() {
                f(labels, fs, hs);
            }
        }
    }
}
