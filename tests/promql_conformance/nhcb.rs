//! `load_with_nhcb`: the classic histograms of a load command (`<name>_bucket` with `le`,
//! `<name>_count`, `<name>_sum`) also loaded as native histograms with custom buckets under
//! `<name>`, as promqltest's `appendCustomHistogram` and `util/convertnhcb` build them.

use std::collections::{BTreeMap, HashMap};

use cardguard::rules::promql::{Histogram, Labels, Sample, Span, CUSTOM_BUCKETS_SCHEMA};

/// One timestamp's classic histogram being collected (`convertnhcb.TempHistogram`).
#[derive(Default)]
struct Temp {
    /// `(le, cumulative count)`, by `le`.
    buckets: Vec<(f64, f64)>,
    count: Option<f64>,
    sum: f64,
    err: Option<String>,
}

impl Temp {
    fn set_bucket(&mut self, le: f64, c: f64) {
        if self.err.is_some() {
            return;
        }
        if c < 0.0 {
            self.err = Some(format!("negative bucket count {c} at le={le}"));
            return;
        }
        let i = self.buckets.partition_point(|b| b.0 < le);
        if self.buckets.get(i).is_some_and(|b| b.0 == le) {
            return; // A duplicate sample.
        }
        let below = i.checked_sub(1).map(|j| self.buckets[j].1);
        let above = self.buckets.get(i).map(|b| b.1);
        if below.is_some_and(|b| c < b) || above.is_some_and(|a| c > a) {
            self.err = Some(format!("bucket counts not cumulative at le={le}"));
            return;
        }
        self.buckets.insert(i, (le, c));
    }

    /// `TempHistogram.Convert`: bucket counts from the cumulative ones, a `+Inf` bucket with
    /// the count when there is none; an integer histogram (compacted keeping runs of up to
    /// two empty buckets, as `Compact(2)`) when every count is whole, else a float one (every
    /// empty bucket dropped).
    fn convert(mut self) -> Result<Histogram, String> {
        if let Some(e) = self.err {
            return Err(e);
        }
        let count = match (self.count, self.buckets.last()) {
            (Some(c), _) => c,
            (None, Some(b)) => b.1,
            (None, None) => 0.0,
        };
        if self.buckets.last().is_none_or(|b| b.0 != f64::INFINITY) {
            self.buckets.push((f64::INFINITY, count));
        }
        let last = self.buckets[self.buckets.len() - 1].1;
        if count != last {
            return Err(format!("count {count} != +Inf bucket {last}"));
        }
        let integer = count.fract() == 0.0 && self.buckets.iter().all(|b| b.1.fract() == 0.0);
        let mut prev = 0.0;
        let counts: Vec<f64> = self
            .buckets
            .iter()
            .map(|b| {
                let d = b.1 - prev;
                prev = b.1;
                d
            })
            .collect();
        let bounds: Vec<f64> = self.buckets[..self.buckets.len() - 1]
            .iter()
            .map(|b| b.0)
            .collect();
        let (positive_spans, positive) = compact(&counts, if integer { 2 } else { 0 });
        Ok(Histogram {
            schema: CUSTOM_BUCKETS_SCHEMA,
            count,
            sum: self.sum,
            positive_spans,
            positive,
            custom_values: bounds.into(),
            ..Histogram::default()
        })
    }
}

/// Spans over dense bucket counts from index 0, without leading and trailing empty buckets,
/// and split where more than `max_empty` empty buckets follow each other.
fn compact(counts: &[f64], max_empty: usize) -> (Vec<Span>, Vec<f64>) {
    let mut spans: Vec<Span> = Vec::new();
    let mut out = Vec::new();
    let mut next = 0usize; // Index after the end of the last span.
    let mut i = 0;
    while i < counts.len() {
        if counts[i] == 0.0 {
            i += 1;
            continue;
        }
        let mut end = i + 1;
        loop {
            let zeros = counts[end..].iter().take_while(|c| **c == 0.0).count();
            if end + zeros < counts.len() && zeros <= max_empty {
                end += zeros + 1;
            } else {
                break;
            }
        }
        spans.push(Span {
            offset: (i - next) as i32,
            length: (end - i) as u32,
        });
        out.extend_from_slice(&counts[i..end]);
        next = end;
        i = end;
    }
    (spans, out)
}

/// One native-histogram series derived from classic ones: labels and `(t, histogram)`s.
pub type Derived = (Labels, Vec<(i64, Histogram)>);

/// The native histograms one load command's classic histograms make, by series, in time
/// order (hints left unknown for the caller to set as for any loaded histogram).
pub fn derive(series: &[(Labels, Vec<Sample>)]) -> Result<Vec<Derived>, String> {
    let mut by_series: HashMap<Labels, BTreeMap<i64, Temp>> = HashMap::new();
    for (labels, samples) in series {
        let name = labels
            .iter()
            .find(|(n, _)| n == "__name__")
            .map_or("", |(_, v)| v.as_str());
        let (kind, base) = if let Some(b) = name.strip_suffix("_bucket") {
            (0, b)
        } else if let Some(b) = name.strip_suffix("_sum") {
            (1, b)
        } else if let Some(b) = name.strip_suffix("_count") {
            (2, b)
        } else {
            continue;
        };
        let le = labels.iter().find(|(n, _)| n == "le").map(|(_, v)| v);
        let le = match (kind, le) {
            (0, None) => return Err(format!("expected an le label in {labels:?}")),
            (0, Some(v)) => match parse_le(v) {
                Some(le) => le,
                None => continue,
            },
            _ => 0.0,
        };
        let mut base_labels: Labels = labels
            .iter()
            .filter(|(n, _)| n != "le" && n != "__name__")
            .cloned()
            .collect();
        base_labels.push(("__name__".into(), base.into()));
        base_labels.sort();
        let temps = by_series.entry(base_labels).or_default();
        for s in samples {
            let t = temps.entry(s.t).or_default();
            match kind {
                0 => t.set_bucket(le, s.v),
                1 => t.sum = s.v,
                _ => {
                    if s.v < 0.0 {
                        t.err
                            .get_or_insert_with(|| format!("negative count {}", s.v));
                    }
                    t.count = Some(s.v);
                }
            }
        }
    }
    let mut out = Vec::new();
    for (labels, temps) in by_series {
        let mut hs = Vec::new();
        for (t, temp) in temps {
            hs.push((t, temp.convert()?));
        }
        out.push((labels, hs));
    }
    Ok(out)
}

/// `le` as Go's `strconv.ParseFloat` reads it (NaN skipped by the caller).
fn parse_le(v: &str) -> Option<f64> {
    let f = match v.to_ascii_lowercase().as_str() {
        "+inf" | "inf" | "+infinity" | "infinity" => f64::INFINITY,
        "-inf" | "-infinity" => f64::NEG_INFINITY,
        s => s.parse().ok()?,
    };
    (!f.is_nan()).then_some(f)
}
