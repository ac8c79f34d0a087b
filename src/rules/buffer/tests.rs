use promql_parser::label::{MatchOp, Matcher, Matchers};

use super::*;

const LIMITS: BufferLimits = BufferLimits {
    max_series: 100,
    max_samples_per_series: 1000,
    max_label_bytes: usize::MAX,
};

fn l(pairs: &[(&'static str, &'static str)]) -> Vec<(&'static [u8], &'static [u8])> {
    pairs
        .iter()
        .map(|(n, v)| (n.as_bytes(), v.as_bytes()))
        .collect()
}

fn samples(ts: &[i64]) -> Vec<Sample> {
    ts.iter().map(|&t| Sample { t, v: t as f64 }).collect()
}

fn name(n: &str) -> Matchers {
    Matchers::one(Matcher::new(MatchOp::Equal, "__name__", n))
}

fn collect(b: &Buffer, m: &Matchers, mint: i64, maxt: i64) -> Vec<(Labels, Vec<i64>)> {
    let mut out = Vec::new();
    b.select(m, mint, maxt, &mut |labels, s| {
        out.push((labels.clone(), s.iter().map(|x| x.t).collect()))
    });
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Every series' inline `oldest` and `newest` are its ring's.
fn ends_agree(b: &Buffer) -> bool {
    b.shards.iter().all(|m| {
        let shard = m.lock().unwrap();
        let agree = shard.series.values().all(Series::ends_agree);
        agree
    })
}

#[test]
fn inline_ends_follow_the_ring_through_order_trim_cap_and_restore() {
    let b = Buffer::new();
    let limits = BufferLimits {
        max_samples_per_series: 4,
        ..LIMITS
    };
    let s = l(&[("__name__", "m")]);
    let append = |ts: &[i64], retention| {
        let a = b.append(
            s.clone().into_iter(),
            samples(ts).into_iter(),
            retention,
            &limits,
        );
        assert!(ends_agree(&b), "after {ts:?}");
        a
    };
    // Out of order within the request and against the ring.
    assert_eq!(append(&[10, 5, 20], 100).out_of_order, 1);
    assert_eq!(append(&[20, 15, 30], 100).out_of_order, 2);
    // The cap evicts from the front.
    assert_eq!(append(&[40, 50, 60], 100).evicted_early, 2);
    // Retention expires a prefix, then all but the newest.
    append(&[140], 100);
    append(&[1000], 100);
    let want = vec![(vec![("__name__".into(), "m".into())], vec![1000])];
    assert_eq!(collect(&b, &name("m"), 0, 2000), want);
    // Emptied by a sweep: any timestamp is in order again.
    b.sweep(5000);
    assert!(ends_agree(&b));
    assert_eq!(append(&[3], 100).samples, 1);
    let restored = Buffer::new();
    restored.restore(b.image(), &limits);
    assert!(ends_agree(&restored));
    assert_eq!(
        collect(&restored, &name("m"), 0, 2000),
        collect(&b, &name("m"), 0, 2000)
    );
}

#[test]
fn select_returns_the_left_open_window_with_sorted_labels() {
    let b = Buffer::new();
    let a = l(&[("job", "x"), ("__name__", "up")]);
    let r = b.append(
        a.iter().copied(),
        samples(&[10, 20, 30, 40]).into_iter(),
        1000,
        &LIMITS,
    );
    assert_eq!(r.samples, 4);
    assert!(r.buffered);
    let got = collect(&b, &name("up"), 10, 30);
    assert_eq!(got.len(), 1);
    assert_eq!(
        got[0].0,
        vec![
            ("__name__".to_string(), "up".to_string()),
            ("job".to_string(), "x".to_string())
        ]
    );
    assert_eq!(got[0].1, vec![20, 30]);
    assert!(collect(&b, &name("down"), 0, 100).is_empty());
    // Without a name matcher every series is checked.
    let by_job = Matchers::one(Matcher::new(MatchOp::Equal, "job", "x"));
    assert_eq!(collect(&b, &by_job, 0, 100).len(), 1);
}

#[test]
fn retried_and_out_of_order_samples_are_ignored_and_counted() {
    let b = Buffer::new();
    let a = l(&[("__name__", "up")]);
    b.append(
        a.iter().copied(),
        samples(&[10, 20]).into_iter(),
        1000,
        &LIMITS,
    );
    // The same request again (a retry), then one older and one equal sample.
    let r = b.append(
        a.iter().copied(),
        samples(&[10, 20]).into_iter(),
        1000,
        &LIMITS,
    );
    assert_eq!((r.samples, r.out_of_order), (0, 2));
    let r = b.append(
        a.iter().copied(),
        samples(&[15, 30]).into_iter(),
        1000,
        &LIMITS,
    );
    assert_eq!((r.samples, r.out_of_order), (1, 1));
    assert_eq!(collect(&b, &name("up"), 0, 100)[0].1, vec![10, 20, 30]);
}

#[test]
fn label_order_on_the_wire_does_not_make_a_new_series() {
    let b = Buffer::new();
    let x = l(&[("__name__", "up"), ("a", "1"), ("b", "2")]);
    let y = l(&[("b", "2"), ("__name__", "up"), ("a", "1")]);
    b.append(x.iter().copied(), samples(&[1]).into_iter(), 1000, &LIMITS);
    b.append(y.iter().copied(), samples(&[2]).into_iter(), 1000, &LIMITS);
    assert_eq!(b.stats().series, 1);
    assert_eq!(collect(&b, &name("up"), 0, 10)[0].1, vec![1, 2]);
}

#[test]
fn history_beyond_retention_is_evicted() {
    let b = Buffer::new();
    let a = l(&[("__name__", "up")]);
    let ts: Vec<i64> = (1..=200).map(|i| i * 10).collect();
    b.append(a.iter().copied(), samples(&ts).into_iter(), 100, &LIMITS);
    // Newest 2000, retention 100: samples after 1900 stay.
    let got = collect(&b, &name("up"), i64::MIN, i64::MAX);
    assert_eq!(got[0].1, (191..=200).map(|i| i * 10).collect::<Vec<_>>());
    assert_eq!(b.stats().samples, 10);
}

#[test]
fn per_series_sample_cap_evicts_oldest_first() {
    let b = Buffer::new();
    let limits = BufferLimits {
        max_series: 10,
        max_samples_per_series: 3,
        max_label_bytes: usize::MAX,
    };
    let a = l(&[("__name__", "up")]);
    let r = b.append(
        a.iter().copied(),
        samples(&[1, 2, 3, 4, 5]).into_iter(),
        1000,
        &limits,
    );
    assert_eq!(r.evicted_early, 2);
    assert_eq!(collect(&b, &name("up"), 0, 10)[0].1, vec![3, 4, 5]);
}

#[test]
fn new_series_beyond_the_cap_are_refused_and_existing_ones_still_grow() {
    let b = Buffer::new();
    let limits = BufferLimits {
        max_series: 2,
        max_samples_per_series: 10,
        max_label_bytes: usize::MAX,
    };
    let names = ["a", "b", "c"];
    let mut refused = 0;
    for n in names {
        let ls = vec![(&b"__name__"[..], n.as_bytes())];
        if b.append(ls.into_iter(), samples(&[1]).into_iter(), 1000, &limits)
            .refused_series
        {
            refused += 1;
        }
    }
    assert_eq!(refused, 1);
    assert_eq!(b.stats().series, 2);
    let a = l(&[("__name__", "a")]);
    let r = b.append(a.iter().copied(), samples(&[2]).into_iter(), 1000, &limits);
    assert!(r.buffered && r.samples == 1);
}

#[test]
fn sweep_drops_idle_series_and_frees_their_names() {
    let b = Buffer::new();
    let a = l(&[("__name__", "up"), ("i", "1")]);
    let c = l(&[("__name__", "up"), ("i", "2")]);
    b.append(a.iter().copied(), samples(&[100]).into_iter(), 50, &LIMITS);
    b.append(c.iter().copied(), samples(&[180]).into_iter(), 50, &LIMITS);
    b.sweep(200);
    let st = b.stats();
    assert_eq!((st.series, st.samples), (1, 1));
    assert_eq!(collect(&b, &name("up"), 0, 1000).len(), 1);
    b.sweep(1000);
    assert_eq!(b.stats().series, 0);
    assert!(collect(&b, &name("up"), 0, 1000).is_empty());
    // The slot is free again.
    b.append(a.iter().copied(), samples(&[2000]).into_iter(), 50, &LIMITS);
    assert_eq!(b.stats().series, 1);
}

#[test]
fn stale_markers_are_kept() {
    let b = Buffer::new();
    let a = l(&[("__name__", "up")]);
    let stale = f64::from_bits(crate::rules::promql::STALE_NAN_BITS);
    b.append(
        a.iter().copied(),
        [Sample { t: 1, v: 1.0 }, Sample { t: 2, v: stale }].into_iter(),
        1000,
        &LIMITS,
    );
    let mut seen = Vec::new();
    b.select(&name("up"), 0, 10, &mut |_, s| {
        seen.extend(s.iter().map(|x| x.v.to_bits()))
    });
    assert_eq!(
        seen,
        vec![1.0f64.to_bits(), crate::rules::promql::STALE_NAN_BITS]
    );
}

#[test]
fn bytes_per_sample_stay_near_sixteen_for_long_rings() {
    let b = Buffer::new();
    let a = l(&[
        ("__name__", "up"),
        ("job", "api"),
        ("instance", "10.0.0.1:9100"),
    ]);
    let ts: Vec<i64> = (1..=1000).collect();
    b.append(
        a.iter().copied(),
        samples(&ts).into_iter(),
        1_000_000,
        &LIMITS,
    );
    let st = b.stats();
    assert_eq!(st.samples, 1000);
    // Ring capacity, labels and map slots: well under 32 bytes a sample at this length.
    assert!(st.bytes < 32 * 1000, "{st:?}");
}

mod model {
    //! The buffers against a plain model: per series a sorted list, the same rules applied
    //! naively (ignore at or before the newest, keep what is newer than newest − retention,
    //! at most the cap, sweep by `now − retention`).
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;

    const RETENTION: i64 = 50;
    const CAP: usize = 6;

    #[derive(Debug, Clone)]
    enum Op {
        Append(usize, Vec<i64>),
        Sweep(i64),
        /// A snapshot taken and put back into new buffers.
        Restore,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0..4usize, proptest::collection::vec(0..200i64, 0..8)).prop_map(|(s, ts)| Op::Append(s, ts)),
            1 => (0..250i64).prop_map(Op::Sweep),
            1 => Just(Op::Restore),
        ]
    }

    fn labels_of(i: usize) -> Vec<(String, String)> {
        // Two metric names, so name-indexed and unindexed selects both run.
        vec![
            ("__name__".into(), if i % 2 == 0 { "a" } else { "b" }.into()),
            ("i".into(), i.to_string()),
        ]
    }

    proptest! {
        #[test]
        fn buffers_agree_with_the_model(ops in proptest::collection::vec(op(), 1..40), mint in 0..200i64, span in 0..200i64) {
            let mut b = Buffer::new();
            let limits = BufferLimits { max_series: 100, max_samples_per_series: CAP,     max_label_bytes: usize::MAX, };
            let mut model: BTreeMap<usize, Vec<i64>> = BTreeMap::new();
            for op in ops {
                match op {
                    Op::Append(i, ts) => {
                        let l = labels_of(i);
                        let wire: Vec<(&[u8], &[u8])> =
                            l.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())).collect();
                        let r = b.append(wire.into_iter(), samples(&ts).into_iter(), RETENTION, &limits);
                        let m = model.entry(i).or_default();
                        let mut added = 0;
                        for t in ts {
                            if m.last().is_none_or(|&n| t > n) {
                                m.push(t);
                                added += 1;
                            }
                        }
                        prop_assert_eq!(r.samples, added);
                        if let Some(&newest) = m.last() {
                            m.retain(|&t| t > newest - RETENTION);
                        }
                        if m.len() > CAP {
                            m.drain(..m.len() - CAP);
                        }
                    }
                    Op::Sweep(now) => {
                        b.sweep(now);
                        for m in model.values_mut() {
                            m.retain(|&t| t > now - RETENTION);
                        }
                        model.retain(|_, m| !m.is_empty());
                    }
                    Op::Restore => {
                        let image = b.image();
                        b = Buffer::new();
                        prop_assert_eq!(b.restore(image, &limits), model.len());
                    }
                }
                prop_assert!(ends_agree(&b));
            }
            let maxt = mint + span;
            for (sel, want_name) in [(name("a"), Some("a")), (name("b"), Some("b")), (Matchers::one(Matcher::new(MatchOp::NotEqual, "i", "x")), None)] {
                let got = collect(&b, &sel, mint, maxt);
                let mut want: Vec<(Labels, Vec<i64>)> = model
                    .iter()
                    .filter(|(i, _)| want_name.is_none_or(|n| labels_of(**i)[0].1 == n))
                    .map(|(i, ts)| {
                        let mut l = labels_of(*i);
                        l.sort();
                        (l, ts.iter().copied().filter(|&t| t > mint && t <= maxt).collect::<Vec<_>>())
                    })
                    .filter(|(_, ts)| !ts.is_empty())
                    .collect();
                want.sort_by(|a, b| a.0.cmp(&b.0));
                prop_assert_eq!(got, want);
            }
            let st = b.stats();
            prop_assert_eq!(st.samples as usize, model.values().map(Vec::len).sum::<usize>());
        }
    }
}

/// Issue 11: the buffers were capped in series only; 16 KiB label values made that cap worth
/// gigabytes. Their label bytes are capped too, and freed when series go.
#[test]
fn label_bytes_stay_under_their_cap_and_are_freed() {
    let b = Buffer::new();
    let limits = BufferLimits {
        max_series: 1_000_000,
        max_samples_per_series: 10,
        max_label_bytes: 1 << 20,
    };
    let long = "v".repeat(16 << 10);
    let mut refused = 0;
    for i in 0..200 {
        let id = i.to_string();
        let ls = [
            (&b"__name__"[..], &b"up"[..]),
            (b"id", id.as_bytes()),
            (b"x", long.as_bytes()),
        ];
        let r = b.append_for(
            Some("t"),
            ls.into_iter(),
            samples(&[1]).into_iter(),
            1000,
            &limits,
        );
        refused += u64::from(r.refused_series);
        assert!(b.label_bytes() <= limits.max_label_bytes);
    }
    assert!(refused > 100, "{refused}");
    b.sweep(1_000_000);
    assert_eq!(b.label_bytes(), 0);
}

#[test]
fn histograms_are_buffered_next_to_floats_and_counted_in_bytes() {
    use crate::rules::promql::{Histogram, HistogramSample, Span};
    let b = Buffer::new();
    let h = |t: i64| HistogramSample {
        t,
        h: std::sync::Arc::new(Histogram {
            count: 3.0,
            positive_spans: vec![Span {
                offset: -1,
                length: 3,
            }],
            positive: vec![1.0, 1.0, 1.0],
            ..Histogram::default()
        }),
    };
    let labels = l(&[("__name__", "h")]);
    let a = b.append_all(
        None,
        None,
        labels.clone().into_iter(),
        samples(&[10]).into_iter(),
        [h(20), h(30)].into_iter(),
        1_000,
        &LIMITS,
    );
    assert_eq!((a.samples, a.out_of_order), (3, 0));
    let bytes_with = b.stats().bytes;
    // A retried histogram is out of order, like a float.
    let a = b.append_all(
        None,
        None,
        labels.into_iter(),
        std::iter::empty(),
        [h(30)].into_iter(),
        1_000,
        &LIMITS,
    );
    assert_eq!((a.samples, a.out_of_order), (0, 1));
    let mut got = Vec::new();
    b.select_all(&name("h"), 15, 30, &mut |_, fs, hs| {
        got.push((fs.len(), hs.iter().map(|x| x.t).collect::<Vec<_>>()))
    });
    assert_eq!(got, vec![(0, vec![20, 30])]);
    // A snapshot carries the histograms, and a restore puts them back beside the floats.
    let restored = Buffer::new();
    assert_eq!(restored.restore(b.image(), &LIMITS), 1);
    let mut back = Vec::new();
    restored.select_all(&name("h"), 0, 30, &mut |_, fs, hs| {
        back.push((fs.len(), hs.to_vec()))
    });
    assert_eq!(back, vec![(1, vec![h(20), h(30)])]);
    assert_eq!(restored.stats(), b.stats());
    // Past the retention everything goes, and the bytes with it.
    b.sweep(10_000);
    assert_eq!(b.stats().samples, 0);
    assert!(b.stats().bytes < bytes_with);
}

/// The key is the labels' canonical form: any order is one series, bytes in place give the
/// same key as labels built, and two series sharing the map's 64 bits are never mixed.
#[test]
fn series_keys_follow_the_labels_and_collisions_are_refused() {
    let sorted = l(&[("__name__", "up"), ("job", "x")]);
    let shuffled = l(&[("job", "x"), ("__name__", "up")]);
    let key = SeriesKey::new(None, sorted.iter().copied(), None);
    assert_eq!(SeriesKey::new(None, shuffled.iter().copied(), None), key);
    let mut canonical = Vec::new();
    for (n, v) in &sorted {
        canonical.extend_from_slice(&[0x0a, (n.len() + v.len() + 4) as u8, 0x0a, n.len() as u8]);
        canonical.extend_from_slice(n);
        canonical.extend_from_slice(&[0x12, v.len() as u8]);
        canonical.extend_from_slice(v);
    }
    assert_eq!(
        SeriesKey::new(None, sorted.iter().copied(), Some(&canonical)),
        key
    );
    assert_ne!(SeriesKey::new(Some("t"), sorted.iter().copied(), None), key);

    let b = Buffer::new();
    let put = |key, labels: &[(&'static [u8], &'static [u8])], t| {
        b.append_all(
            None,
            Some(key),
            labels.iter().copied(),
            samples(&[t]).into_iter(),
            std::iter::empty(),
            1_000,
            &LIMITS,
        )
    };
    assert!(put(key, &shuffled, 10).buffered);
    let other = l(&[("__name__", "up"), ("job", "y")]);
    let clash = SeriesKey {
        hash: key.hash,
        check: key.check ^ 1,
    };
    let a = put(clash, &other, 20);
    assert!(a.refused_series && !a.buffered);
    assert_eq!(
        collect(&b, &name("up"), 0, 100),
        vec![(
            vec![
                ("__name__".to_string(), "up".to_string()),
                ("job".to_string(), "x".to_string())
            ],
            vec![10]
        )]
    );
}
