//! Compensated (Kahan) sums of histograms, as Prometheus 3 sums them in `sum`, `avg`,
//! `sum_over_time` and `avg_over_time` (`FloatHistogram.KahanAdd`): every count, the sum, the
//! zero bucket and each bucket carry a compensation term, added back at the end.
//!
//! The compensation follows the sum's bucket layout. When an addend would change that layout
//! (a coarser schema, another zero threshold, other custom bounds), the compensation is first
//! folded into the sum and the addition is a plain one; Prometheus carries the compensation
//! through such changes, so the two can differ there in the last bits only.

use crate::rules::promql::aggregate::kahan_inc;

use super::{Histogram, HistogramError};

/// `(bucket index, value)`, in index order.
type Pairs = Vec<(i32, f64)>;

/// The compensation terms of a [`KahanSum`]: one per stored bucket of the sum.
#[derive(Debug, Default, Clone)]
struct Comp {
    zero: f64,
    count: f64,
    sum: f64,
    positive: Pairs,
    negative: Pairs,
}

/// A running compensated sum of histograms.
#[derive(Debug, Clone)]
pub(crate) struct KahanSum {
    sum: Histogram,
    c: Comp,
}

impl KahanSum {
    pub fn new(first: &Histogram) -> KahanSum {
        KahanSum {
            sum: first.clone(),
            c: Comp::default(),
        }
    }

    /// `sum += h`, compensated.
    pub fn add(&mut self, h: &Histogram) -> Result<(), HistogramError> {
        let s = &mut self.sum;
        if s.uses_custom_buckets() != h.uses_custom_buckets() {
            return Err(HistogramError::IncompatibleSchema);
        }
        let same_layout = if s.uses_custom_buckets() {
            s.custom_values[..] == h.custom_values[..]
        } else {
            h.schema >= s.schema && h.zero_threshold == s.zero_threshold
        };
        if !same_layout {
            self.fold();
            return self.sum.add(h, false);
        }
        s.adjust_hint(h);
        (s.zero_count, self.c.zero) = kahan_inc(h.zero_count, s.zero_count, self.c.zero);
        (s.count, self.c.count) = kahan_inc(h.count, s.count, self.c.count);
        (s.sum, self.c.sum) = kahan_inc(h.sum, s.sum, self.c.sum);
        let threshold = if s.uses_custom_buckets() {
            f64::NEG_INFINITY
        } else {
            s.zero_threshold
        };
        let schema = s.schema;
        let custom = s.uses_custom_buckets();
        // Buckets of `h` inside the zero bucket were counted there (as `Add` skips them).
        let inside = |i: i32| !custom && super::bound_exponential(i, schema).abs() <= threshold;
        let first_inside =
            |spans: &[super::Span]| spans.first().is_some_and(|sp| inside(sp.offset));
        if h.schema == s.schema
            && h.positive_spans == s.positive_spans
            && h.negative_spans == s.negative_spans
            && !first_inside(&h.positive_spans)
            && !first_inside(&h.negative_spans)
        {
            // The common case, one layout throughout: bucket by bucket in place, the
            // compensation aligned with the stored buckets.
            for positive in [true, false] {
                let (mine, theirs, comp) = if positive {
                    (&mut s.positive, &h.positive, &mut self.c.positive)
                } else {
                    (&mut s.negative, &h.negative, &mut self.c.negative)
                };
                if comp.len() != mine.len() {
                    let spans = if positive {
                        &s.positive_spans
                    } else {
                        &s.negative_spans
                    };
                    let mut c: Pairs = super::pairs(spans, mine);
                    c.iter_mut().for_each(|p| p.1 = 0.0);
                    *comp = c;
                }
                for ((m, t), c) in mine.iter_mut().zip(theirs).zip(comp.iter_mut()) {
                    (*m, c.1) = kahan_inc(*t, *m, c.1);
                }
            }
            return Ok(());
        }
        let reduced;
        let h = if h.schema > s.schema && !h.uses_custom_buckets() {
            reduced = h.to_schema(s.schema);
            &reduced
        } else {
            h
        };
        for positive in [true, false] {
            let (mine, theirs, comp) = if positive {
                (s.positive_pairs(), h.positive_pairs(), &mut self.c.positive)
            } else {
                (s.negative_pairs(), h.negative_pairs(), &mut self.c.negative)
            };
            let (sum, c) = merge(&mine, &theirs, comp, inside);
            *comp = c;
            if positive {
                s.set_positive(&sum);
            } else {
                s.set_negative(&sum);
            }
        }
        Ok(())
    }

    /// Whether the running sum has overflowed (`HasOverflow`), for `avg`'s switch to an
    /// incremental mean.
    pub fn has_overflow(&self) -> bool {
        let s = &self.sum;
        [s.zero_count, s.count, s.sum]
            .iter()
            .chain(&s.positive)
            .chain(&s.negative)
            .any(|v| v.is_infinite())
    }

    /// The sum with its compensation added.
    pub fn finish(mut self) -> Histogram {
        self.fold();
        self.sum
    }

    /// The sum divided by `n` plus the compensation divided by `n` (`avg`'s direct mean).
    pub fn finish_mean(mut self, n: f64) -> Histogram {
        let c = std::mem::take(&mut self.c);
        self.sum.div(n);
        let mut sum = self.sum;
        let scaled = Comp {
            zero: c.zero / n,
            count: c.count / n,
            sum: c.sum / n,
            positive: c.positive.iter().map(|p| (p.0, p.1 / n)).collect(),
            negative: c.negative.iter().map(|p| (p.0, p.1 / n)).collect(),
        };
        add_comp(&mut sum, &scaled);
        sum
    }

    /// Add the compensation into the sum and start a new one.
    fn fold(&mut self) {
        let c = std::mem::take(&mut self.c);
        add_comp(&mut self.sum, &c);
    }
}

fn add_comp(s: &mut Histogram, c: &Comp) {
    s.zero_count += c.zero;
    s.count += c.count;
    s.sum += c.sum;
    if c.positive.iter().any(|p| p.1 != 0.0) {
        let ps = plus(&s.positive_pairs(), &c.positive);
        s.set_positive(&ps);
    }
    if c.negative.iter().any(|p| p.1 != 0.0) {
        let ps = plus(&s.negative_pairs(), &c.negative);
        s.set_negative(&ps);
    }
}

/// Each bucket of `a` plus the compensation at its index (the compensation has no bucket `a`
/// lacks).
fn plus(a: &[(i32, f64)], c: &[(i32, f64)]) -> Vec<(i32, f64)> {
    let mut j = 0;
    a.iter()
        .map(|&(i, v)| {
            while j < c.len() && c[j].0 < i {
                j += 1;
            }
            match c.get(j) {
                Some(&(ci, cv)) if ci == i => (i, v + cv),
                _ => (i, v),
            }
        })
        .collect()
}

/// Merge `theirs` into `mine` bucket by bucket with compensation `comp`; returns the new
/// buckets and their compensation terms, index for index.
fn merge(
    mine: &[(i32, f64)],
    theirs: &[(i32, f64)],
    comp: &[(i32, f64)],
    inside_zero: impl Fn(i32) -> bool,
) -> (Pairs, Pairs) {
    let mut sum = Vec::with_capacity(mine.len() + theirs.len());
    let mut c = Vec::with_capacity(mine.len() + theirs.len());
    let (mut a, mut b, mut k) = (0, 0, 0);
    let comp_at = |i: i32, k: &mut usize| {
        while *k < comp.len() && comp[*k].0 < i {
            *k += 1;
        }
        match comp.get(*k) {
            Some(&(ci, cv)) if ci == i => cv,
            _ => 0.0,
        }
    };
    while a < mine.len() || b < theirs.len() {
        let take_mine = b >= theirs.len() || (a < mine.len() && mine[a].0 < theirs[b].0);
        if take_mine {
            let (i, v) = mine[a];
            a += 1;
            sum.push((i, v));
            c.push((i, comp_at(i, &mut k)));
            continue;
        }
        let (i, v) = theirs[b];
        b += 1;
        if inside_zero(i) {
            continue;
        }
        let (base, cv) = if a < mine.len() && mine[a].0 == i {
            a += 1;
            (mine[a - 1].1, comp_at(i, &mut k))
        } else {
            (0.0, 0.0)
        };
        let (s, nc) = kahan_inc(v, base, cv);
        sum.push((i, s));
        c.push((i, nc));
    }
    (sum, c)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::promql::native::from_pairs;

    fn h(schema: i32, ps: &[(i32, f64)]) -> Histogram {
        let (positive_spans, positive) = from_pairs(ps);
        let count = ps.iter().map(|p| p.1).sum();
        Histogram {
            schema,
            count,
            sum: count,
            positive_spans,
            positive,
            ..Histogram::default()
        }
    }

    #[test]
    fn compensates_what_a_plain_sum_loses() {
        let big = h(0, &[(0, 1e16), (3, 1.0)]);
        let one = h(0, &[(0, 1.0), (3, 1.0)]);
        let mut k = KahanSum::new(&big);
        let mut plain = big.clone();
        for _ in 0..10 {
            k.add(&one).unwrap();
            plain.add(&one, false).unwrap();
        }
        let got = k.finish();
        assert_eq!(got.positive_pairs(), vec![(0, 1e16 + 10.0), (3, 11.0)]);
        assert_eq!(got.count, 1e16 + 20.0);
        assert_ne!(plain.positive_pairs()[0].1, 1e16 + 10.0);
    }

    #[test]
    fn one_layout_throughout_takes_the_in_place_path() {
        // The first addend changes the layout (merge), the rest keep it (in place).
        let mut k = KahanSum::new(&h(0, &[(0, 1e16)]));
        k.add(&h(0, &[(0, 1.0), (2, 1.0)])).unwrap();
        for _ in 0..9 {
            k.add(&h(0, &[(0, 1.0), (2, 1.0)])).unwrap();
        }
        assert_eq!(
            k.finish().positive_pairs(),
            vec![(0, 1e16 + 10.0), (2, 10.0)]
        );
    }

    #[test]
    fn a_coarser_addend_folds_and_adds_plainly() {
        let mut k = KahanSum::new(&h(1, &[(1, 1.0), (2, 1.0)]));
        k.add(&h(0, &[(1, 2.0)])).unwrap();
        let got = k.finish();
        assert_eq!((got.schema, got.positive_pairs()), (0, vec![(1, 4.0)]));
        let mut k = KahanSum::new(&h(0, &[(1, 2.0)]));
        k.add(&h(1, &[(1, 1.0), (2, 1.0)])).unwrap();
        assert_eq!(k.finish().positive_pairs(), vec![(1, 4.0)]);
    }
}
