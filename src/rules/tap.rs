//! The tap on the stream: in the pipeline, after the guard, every admitted series is offered to
//! the plan; the ones some rule reads are buffered, and withheld from forwarding when their
//! group says `forward_inputs: false`. What is forwarded is exactly what the rules see.

use std::cell::RefCell;

use super::buffer::{Buffer, BufferLimits, SeriesKey};
use super::plan::{Match, Plan};
use super::promql::{HistogramSample, Sample};
use crate::series::Decisions;
use crate::wire::short_eq;
use crate::wire::Parsed;

/// The rules' view for one request: the plan in force and the buffers.
#[derive(Clone, Copy)]
pub struct Tap<'a> {
    pub plan: &'a Plan,
    pub buffer: &'a Buffer,
    pub limits: BufferLimits,
    /// The request's tenant: part of a buffered series' identity.
    pub tenant: Option<&'a str>,
}

/// What the tap did with one request, counted locally and published once.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TapCounts {
    /// Samples added to the buffers.
    pub samples: u64,
    /// Samples at or before the newest buffered for their series (retries, out of order).
    pub out_of_order: u64,
    /// Series some rule reads that the buffers refused (`rules.max_buffered_series`).
    pub refused_series: u64,
    /// Samples pushed out by `rules.max_samples_per_series`.
    pub evicted_early: u64,
    /// Buffered series not forwarded (`forward_inputs: false`), and their samples.
    pub withheld_series: u64,
    pub withheld_samples: u64,
}

/// How many matched series ahead their buffered series are asked for.
const AHEAD: usize = 8;

impl<'a> Tap<'a> {
    /// This tap for a request of `tenant`.
    pub fn for_tenant(self, tenant: Option<&'a str>) -> Self {
        Tap { tenant, ..self }
    }

    /// Offer every kept series of the request, with its labels as `decisions` has them; the
    /// series not to forward are marked withheld there.
    ///
    /// Two passes: the first finds the series some rule reads and their buffer keys; the
    /// second appends to them, loading where each is buffered `AHEAD` series before. One pass
    /// waited for each buffered series' cache misses in turn, a few hundred a request.
    pub fn observe(&self, req: &Parsed, buf: &[u8], decisions: &mut Decisions) -> TapCounts {
        let mut o = TapCounts::default();
        if self.plan.is_empty() {
            return o;
        }
        thread_local! {
            static MATCHED: RefCell<Vec<(usize, SeriesKey, Match)>> = const { RefCell::new(Vec::new()) };
        }
        MATCHED.with_borrow_mut(|matched| {
            matched.clear();
            for i in 0..req.len() {
                if !decisions.kept(i) {
                    continue;
                }
                let view = req.series(buf, i);
                if view.sample_count() == 0 && view.histogram_count() == 0 {
                    continue;
                }
                let found = match decisions.rewritten(i) {
                    Some(owned) => {
                        let labels = owned.iter().map(|(n, v)| (n.as_slice(), v.as_slice()));
                        self.key(labels, || None)
                    }
                    // The buffer's key hashes the labels' canonical bytes in place when the
                    // request holds them so (asked only of series a rule reads).
                    None => self.key(view.labels(), || view.canonical_labels()),
                };
                if let Some((key, m)) = found {
                    if matched.len() < AHEAD {
                        self.buffer.prefetch(&key);
                    }
                    matched.push((i, key, m));
                }
            }
            for (j, &(i, key, m)) in matched.iter().enumerate() {
                if let Some((_, ahead, _)) = matched.get(j + AHEAD) {
                    self.buffer.prefetch(ahead);
                }
                let view = req.series(buf, i);
                let samples = view.samples().map(|s| Sample {
                    t: s.timestamp,
                    v: s.value,
                });
                // Histograms are decoded only for series some rule reads.
                let histograms = || view.histograms_raw();
                let (withheld, a) = match decisions.rewritten(i) {
                    Some(owned) => {
                        let labels = owned.iter().map(|(n, v)| (n.as_slice(), v.as_slice()));
                        self.append(key, m, labels, samples, histograms)
                    }
                    None => self.append(key, m, view.labels(), samples, histograms),
                };
                o.samples += a.samples;
                o.out_of_order += a.out_of_order;
                o.refused_series += u64::from(a.refused_series);
                o.evicted_early += a.evicted_early;
                if withheld {
                    decisions.withhold(i);
                    o.withheld_series += 1;
                    o.withheld_samples += (view.sample_count() + view.histogram_count()) as u64;
                }
            }
        });
        o
    }

    /// What the plan wants of a series, and its key in the buffers, if some rule reads it.
    fn key<'l, L>(
        &self,
        labels: L,
        canonical: impl Fn() -> Option<&'l [u8]>,
    ) -> Option<(SeriesKey, Match)>
    where
        L: Iterator<Item = (&'l [u8], &'l [u8])> + Clone,
    {
        let name = labels
            .clone()
            .find(|(n, _)| short_eq(n, b"__name__"))
            .map(|(_, v)| v);
        let m = self.plan.match_series(name, labels.clone())?;
        Some((SeriesKey::new(self.tenant, labels, canonical()), m))
    }

    fn append<'l, 'h, L, H>(
        &self,
        key: SeriesKey,
        m: Match,
        labels: L,
        samples: impl Iterator<Item = Sample>,
        histograms: impl Fn() -> H,
    ) -> (bool, super::buffer::Appended)
    where
        L: Iterator<Item = (&'l [u8], &'l [u8])> + Clone,
        H: Iterator<Item = &'h [u8]>,
    {
        let mut hists: Vec<HistogramSample> = Vec::new();
        let mut stale: Vec<Sample> = Vec::new();
        for raw in histograms() {
            match histogram::decode(raw) {
                Some(Decoded::Histogram(h)) => hists.push(h),
                Some(Decoded::Stale(t)) => stale.push(Sample {
                    t,
                    v: f64::from_bits(STALE_NAN_BITS),
                }),
                None => {}
            }
        }
        let a = if stale.is_empty() {
            self.buffer.append_all(
                self.tenant,
                Some(key),
                labels,
                samples,
                hists.into_iter(),
                m.retention_ms,
                &self.limits,
            )
        } else {
            // A histogram series' stale marker is a float sample to the engine.
            let mut all: Vec<Sample> = samples.chain(stale).collect();
            all.sort_by_key(|s| s.t);
            self.buffer.append_all(
                self.tenant,
                Some(key),
                labels,
                all.into_iter(),
                hists.into_iter(),
                m.retention_ms,
                &self.limits,
            )
        };
        (m.withhold && a.buffered, a)
    }
}

mod histogram;

use super::promql::STALE_NAN_BITS;
pub use histogram::{
    decode as decode_histogram, decode_checked as decode_histogram_checked,
    encode as encode_histogram, Decoded,
};

#[cfg(test)]
mod tests;
