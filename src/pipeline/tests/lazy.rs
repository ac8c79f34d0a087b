//! Series read lazily (`Context::lazy_labels`): the guard answers what it knows by the bytes
//! alone and checks the rest before it counts anything, so that a request gets the very
//! outcome it gets when every series is read and checked first.

use proptest::prelude::*;

use super::*;
use crate::wire::types::v1;

fn guarded<'a>(
    guard: &'a Guard,
    cfg: &'a GuardConfig,
    limits: &'a Limits,
    lazy_labels: bool,
) -> Context<'a> {
    Context {
        guard: Some((guard, cfg)),
        lazy_labels,
        guessed_runs: false,
        ..Context::new(Version::V1, Version::V1, limits, NOW)
    }
}

/// `guarded`, reading lazily with runs guessed from the series' ends.
fn guessing<'a>(guard: &'a Guard, cfg: &'a GuardConfig, limits: &'a Limits) -> Context<'a> {
    Context {
        guessed_runs: true,
        ..guarded(guard, cfg, limits, true)
    }
}

/// What a request forwarded and dropped, whether it passed through, and its bodies
/// decompressed.
type Outcome = (ItemCounts, DropCounts, bool, Vec<Vec<u8>>);

/// What a request came to, in a form both ways can be compared by.
fn outcome(r: &Result<Prepared, PipelineError>) -> Result<Outcome, String> {
    match r {
        Ok(p) => Ok((
            p.forwarded,
            p.dropped,
            p.passthrough,
            p.routed
                .parts
                .iter()
                .map(|part| {
                    let mut raw = Vec::new();
                    crate::wire::snappy::decompress(&part.body, 1 << 20, &mut raw).unwrap();
                    raw
                })
                .collect(),
        )),
        // Both ways name an invalid series; not always the same one when several are.
        Err(PipelineError::Wire(_)) => Err("invalid series".into()),
        Err(e) => Err(e.to_string()),
    }
}

/// A pool of series, so that requests repeat some (the fresh table then knows them): sorted
/// ones as Prometheus sends them, and the odd one out: unsorted, no `__name__`, a repeated
/// name, an empty value, non-ASCII.
fn pool() -> Vec<v1::TimeSeries> {
    let s = |labels: &[(&str, &str)]| testgen::series(labels, &[(1.0, NOW)]);
    let mut pool: Vec<v1::TimeSeries> = (0..12)
        .map(|k| {
            let (svc, id) = (format!("svc-{}", k % 3), format!("{k}"));
            s(&[
                ("__name__", "http_requests_total"),
                ("id", &id),
                ("service", &svc),
            ])
        })
        .collect();
    pool.push(s(&[
        ("service", "svc-0"),
        ("__name__", "unsorted"),
        ("id", "u"),
    ]));
    pool.push(s(&[("id", "1"), ("service", "svc-1")]));
    pool.push(s(&[
        ("__name__", "twice"),
        ("id", "1"),
        ("id", "2"),
        ("service", "svc-1"),
    ]));
    pool.push(s(&[
        ("__name__", "empty"),
        ("id", ""),
        ("service", "svc-2"),
    ]));
    pool.push(s(&[("__name__", "é"), ("service", "svc-2")]));
    // What a guess from the end gets wrong, or cannot make: two samples, a value of 0 (left
    // out by the encoder), an exemplar after the sample, a label of two-byte lengths.
    pool.push(testgen::series(
        &[("__name__", "two"), ("service", "svc-0")],
        &[(1.0, NOW - 15_000), (2.0, NOW)],
    ));
    pool.push(testgen::series(
        &[("__name__", "zero"), ("service", "svc-1")],
        &[(0.0, NOW)],
    ));
    let mut exemplar = s(&[("__name__", "traced"), ("service", "svc-2")]);
    exemplar.exemplars.push(v1::Exemplar {
        labels: vec![v1::Label {
            name: "trace_id".into(),
            value: "abc".into(),
        }],
        value: 1.0,
        timestamp: NOW,
    });
    pool.push(exemplar);
    let long = "p".repeat(150);
    pool.push(s(&[
        ("__name__", "long"),
        ("path", &long),
        ("service", "svc-0"),
    ]));
    pool
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Every sequence of requests gets the same outcomes, forwards the same bytes and leaves
    /// the guard with the same report, read lazily or in full.
    #[test]
    fn lazy_reads_decide_as_full_reads(
        requests in proptest::collection::vec(proptest::collection::vec(0usize..21, 1..8), 1..6),
    ) {
        let pool = pool();
        let limits = Limits::default();
        let cfg = GuardConfig::with_default_budget(3, vec!["service".into()]);
        let (lazy_guard, full_guard, guess_guard) = (Guard::new(), Guard::new(), Guard::new());
        let lazy = guarded(&lazy_guard, &cfg, &limits, true);
        let full = guarded(&full_guard, &cfg, &limits, false);
        let guess = guessing(&guess_guard, &cfg, &limits);
        for picks in requests {
            let b = testgen::body_v1(picks.iter().map(|&k| pool[k].clone()).collect());
            swap_guess_backoff(0);
            let (a, f, g) = (prepare(&b, &lazy), prepare(&b, &full), prepare(&b, &guess));
            prop_assert_eq!(outcome(&a), outcome(&f));
            prop_assert_eq!(outcome(&g), outcome(&f));
        }
        let report = |g: &Guard| serde_json::to_string(&g.report(&cfg)).unwrap();
        prop_assert_eq!(report(&lazy_guard), report(&full_guard));
        prop_assert_eq!(report(&guess_guard), report(&full_guard));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// The same of 2.0 requests, whose series are read lazily too (their refs, see
    /// `Parsed::set_lazy_labels`), forwarded as 2.0 or translated to 1.0.
    #[test]
    fn lazy_v2_reads_decide_as_full_reads(
        requests in proptest::collection::vec(proptest::collection::vec(0usize..21, 1..8), 1..6),
        translate in any::<bool>(),
    ) {
        let pool = pool();
        let limits = Limits::default();
        let cfg = GuardConfig::with_default_budget(3, vec!["service".into()]);
        let out = if translate { Version::V1 } else { Version::V2 };
        let (lazy_guard, full_guard) = (Guard::new(), Guard::new());
        let v2 = |guard, lazy_labels| Context {
            guard: Some((guard, &cfg)),
            lazy_labels,
            ..Context::new(Version::V2, out, &limits, NOW)
        };
        let (lazy, full) = (v2(&lazy_guard, true), v2(&full_guard, false));
        for picks in requests {
            let b = testgen::body_in(Version::V2, picks.iter().map(|&k| pool[k].clone()).collect());
            let (a, f) = (prepare(&b, &lazy), prepare(&b, &full));
            prop_assert_eq!(outcome(&a), outcome(&f));
        }
        let report = |g: &Guard| serde_json::to_string(&g.report(&cfg)).unwrap();
        prop_assert_eq!(report(&lazy_guard), report(&full_guard));
    }
}

/// Runs guessed from the series' ends: a request the fresh table knows is answered from the
/// guesses alone; one whose guess does not hold (a series of two samples) is read again
/// without guesses and gets the outcome it gets read in full, with the error of a request that
/// holds an invalid series too; and nothing of a request read twice is counted twice.
#[test]
fn a_guess_that_does_not_hold_reads_the_request_again() {
    let limits = Limits::default();
    let cfg = GuardConfig::with_default_budget(10, vec!["service".into()]);
    let (guess_guard, full_guard) = (Guard::new(), Guard::new());
    let guess = guessing(&guess_guard, &cfg, &limits);
    let full = guarded(&full_guard, &cfg, &limits, false);
    let one = testgen::series(&[("__name__", "up"), ("service", "a")], &[(1.0, NOW)]);
    let two = testgen::series(
        &[("__name__", "two"), ("service", "a")],
        &[(1.0, NOW - 1), (2.0, NOW)],
    );
    let nameless = testgen::series(&[("job", "x"), ("service", "a")], &[(1.0, NOW)]);
    let requests = [
        vec![one.clone()],
        vec![one.clone()],
        vec![one.clone(), two.clone()],
        vec![two.clone(), one.clone(), nameless.clone()],
        vec![nameless, one.clone()],
        vec![two, one],
    ];
    for (k, series) in requests.into_iter().enumerate() {
        let body = testgen::body_v1(series);
        let backoff = swap_guess_backoff(0);
        // Backing off after each request read twice: two samples (2, 3), an invalid series
        // (4: any error is confirmed by a read without guesses).
        assert_eq!(backoff > 0, k >= 3, "request {k}");
        let (g, f) = (prepare(&body, &guess), prepare(&body, &full));
        assert_eq!(outcome(&g), outcome(&f));
        if let (Err(g), Err(f)) = (&g, &f) {
            assert_eq!(g.to_string(), f.to_string(), "the error of the full read");
        }
    }
    let report = |g: &Guard| serde_json::to_string(&g.report(&cfg)).unwrap();
    assert_eq!(report(&guess_guard), report(&full_guard));
}

/// A request whose known series would pass but one new series is invalid is refused whole,
/// with nothing counted: not even the samples of the series the fresh table knew.
#[test]
fn an_invalid_new_series_fails_the_request_before_anything_is_counted() {
    let limits = Limits::default();
    let cfg = GuardConfig::with_default_budget(10, vec!["service".into()]);
    let guard = Guard::new();
    let ctx = guarded(&guard, &cfg, &limits, true);
    let known = testgen::series(&[("__name__", "up"), ("service", "a")], &[(1.0, NOW)]);
    let nameless = testgen::series(&[("job", "x"), ("service", "a")], &[(1.0, NOW)]);
    let samples = |g: &Guard| g.report(&cfg).services[0].samples_total;

    prepare(&testgen::body_v1(vec![known.clone()]), &ctx).unwrap();
    let before = samples(&guard);
    let bad = testgen::body_v1(vec![known.clone(), nameless]);
    assert!(matches!(
        prepare(&bad, &ctx),
        Err(PipelineError::Wire(WireError::NoMetricName { series: 1 }))
    ));
    assert_eq!(
        samples(&guard),
        before,
        "nothing counted for the refused request"
    );
    assert_eq!(guard.global_active(), 1);
    prepare(&testgen::body_v1(vec![known]), &ctx).unwrap();
    assert_eq!(guard.report(&cfg).services[0].samples_total, before + 1);
}

/// The guard itself, on requests read lazily: the series it knows are answered without a
/// check, a new one is checked, and an unsorted one is admitted under its real id.
#[test]
fn the_guard_checks_what_it_does_not_know() {
    let limits = Limits::default();
    let cfg = GuardConfig::with_default_budget(10, vec!["service".into()]);
    let guard = Guard::new();
    let mut scratch = guard::Scratch::default();
    let mut decisions = Decisions::default();
    let mut admit = |series: Vec<v1::TimeSeries>| {
        let body = testgen::body_v1(series);
        let mut raw = Vec::new();
        crate::wire::snappy::decompress(&body, 1 << 20, &mut raw).unwrap();
        let mut parsed = Parsed::new();
        parsed.set_lazy_labels(true);
        parsed.parse(&raw, Version::V1, &limits).unwrap();
        assert!((0..parsed.len()).all(|i| parsed.lazy(i)), "read lazily");
        decisions.reset(parsed.len());
        let batch = guard::Batch {
            req: &parsed,
            buf: &raw,
            tenant: None,
            now_ms: NOW,
        };
        guard
            .admit(&cfg, batch, &mut decisions, &mut scratch)
            .map(|c| c.kept_series)
    };
    let s = |labels: &[(&str, &str)]| testgen::series(labels, &[(1.0, NOW)]);
    let up = s(&[("__name__", "up"), ("service", "a")]);
    let unsorted = s(&[("service", "a"), ("__name__", "up")]);
    assert_eq!(admit(vec![up.clone()]), Ok(1));
    // The same labels unsorted are the same series: known, nothing new admitted.
    assert_eq!(admit(vec![unsorted]), Ok(1));
    assert_eq!(guard.global_active(), 1);
    let nameless = s(&[("job", "x"), ("service", "a")]);
    assert_eq!(
        admit(vec![up, nameless]),
        Err(WireError::NoMetricName { series: 1 })
    );
    assert_eq!(guard.global_active(), 1);
}
