use promql_parser::label::{MatchOp, Matcher, Matchers};

use super::*;

const LIMITS: BufferLimits = BufferLimits {
    max_series: 100,
    max_samples_per_series: 1000,
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
