//! Unit tests of the engine; the bulk of its checking is Prometheus's own scripts in
//! `tests/promql_conformance.rs`.

use super::testing::MemStorage;
use super::*;

fn store() -> MemStorage {
    let mut s = MemStorage::new();
    let l = |name: &str, job: &str| -> Labels {
        vec![("__name__".into(), name.into()), ("job".into(), job.into())]
    };
    let pts = |step: i64, vals: &[f64]| -> Vec<Sample> {
        vals.iter()
            .enumerate()
            .map(|(i, v)| Sample {
                t: i as i64 * step,
                v: *v,
            })
            .collect()
    };
    s.add(
        l("req_total", "a"),
        &pts(60_000, &[0.0, 60.0, 120.0, 180.0, 240.0, 300.0]),
    );
    s.add(
        l("req_total", "b"),
        &pts(60_000, &[0.0, 30.0, 60.0, 90.0, 120.0, 150.0]),
    );
    s
}

#[test]
fn rate_sum_by() {
    let c = Compiled::new("sum by (job) (rate(req_total[5m]))").unwrap();
    let v = c.eval(&store(), 300_000).unwrap();
    let Value::Vector(mut v) = v else {
        panic!("{v:?}")
    };
    v.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(v.len(), 2);
    assert!((v[0].1 - 1.0).abs() < 1e-9, "{v:?}");
    assert!((v[1].1 - 0.5).abs() < 1e-9, "{v:?}");
    assert_eq!(v[0].0, vec![("job".to_string(), "a".to_string())]);
}

#[test]
fn needs_cover_range_offset_and_subquery() {
    let c = Compiled::new("max_over_time(rate(x{a=\"b\"}[2m] offset 1m)[10m:30s])").unwrap();
    let n = c.needs();
    assert_eq!(n.len(), 1);
    assert_eq!(n[0].history_ms, 120_000 + 60_000 + 600_000 + 30_000);
    assert!(n[0]
        .matchers
        .matchers
        .iter()
        .any(|m| m.name == "__name__" && m.value == "x"));
    let c = Compiled::new("x").unwrap();
    assert_eq!(c.needs()[0].history_ms, 300_000);
    assert_eq!(c.needs()[0].at_ms, None);
    // A fixed `@` on a subquery anchors the selectors inside it; their own `@` wins.
    let c = Compiled::new("max_over_time(x[10m:1m] @ 3600) + y @ 60").unwrap();
    let n = c.needs();
    assert_eq!(
        (n[0].at_ms, n[0].history_ms),
        (Some(3_600_000), 300_000 + 660_000)
    );
    assert_eq!((n[1].at_ms, n[1].history_ms), (Some(60_000), 300_000));
    let c = Compiled::new("max_over_time((x @ 60)[10m:1m])").unwrap();
    assert_eq!(
        (c.needs()[0].at_ms, c.needs()[0].history_ms),
        (Some(60_000), 300_000)
    );
}

#[test]
fn unsupported_constructs_are_named() {
    for (e, what) in [
        ("info(x)", "info"),
        // Prometheus 3 syntax promql-parser cannot parse is named, not "invalid promql query".
        ("rate(x[5m] anchored)", "range modifier `anchored`"),
        ("x[5m] smoothed", "range modifier `smoothed`"),
    ] {
        match Compiled::new(e) {
            Err(CompileError::Unsupported(m)) => assert!(m.contains(what), "{e}: {m}"),
            other => panic!("{e}: {other:?}"),
        }
    }
    assert!(matches!(Compiled::new("sum("), Err(CompileError::Parse(_))));
    // The trim operators are parsed around promql-parser, with the comparisons' precedence.
    for e in ["h >/ 0.5", "sum(h) </ on() group_left x", "h </ 2 > 1 >/ 0"] {
        assert!(Compiled::new(e).is_ok(), "{e}");
    }
    assert!(matches!(
        Compiled::new("h >/ bool 0.5"),
        Err(CompileError::Parse(m)) if m.contains("bool modifier")
    ));
    // A metric or label of those names is not mistaken for the construct.
    assert!(Compiled::new("sum by (job) (x{smoothed=\"a>/b\", anchored=\"1\"})").is_ok());
    match Compiled::new("sum (x) by y") {
        Err(CompileError::Parse(m)) => assert!(!m.contains("invalid promql query"), "{m}"),
        other => panic!("{other:?}"),
    }
    // Duration arithmetic is resolved at load; `step()` is 0 in a rule (an instant query).
    let c = Compiled::new("rate(x[4m+1m] offset (1m*2))").unwrap();
    assert_eq!(c.needs()[0].history_ms, 300_000 + 120_000);
    match Compiled::new("rate(x[step()])") {
        Err(CompileError::Parse(m)) => assert!(m.contains("greater than 0"), "{m}"),
        other => panic!("{other:?}"),
    }
    // label_replace's regex is compiled at load, and an invalid one refused there.
    assert!(matches!(
        Compiled::new("label_replace(x, \"d\", \"$1\", \"s\", \"(.*\")"),
        Err(CompileError::Parse(m)) if m.contains("invalid regular expression")
    ));
    // Deep nesting is refused before it can overflow the stack.
    let deep = vec!["1"; 20_000].join("+");
    assert!(matches!(
        Compiled::new(&deep),
        Err(CompileError::Unsupported(_))
    ));
    let deep = format!("{}x{}", "(".repeat(5000), ")".repeat(5000));
    assert!(matches!(
        Compiled::new(&deep),
        Err(CompileError::Unsupported(_))
    ));
    // Regexes and strings do not count.
    let wide = format!("x{{a=~\"{}\"}}", "(a|b)+".repeat(200));
    assert!(Compiled::new(&wide).is_ok());
}

#[test]
fn duplicate_labelsets_after_name_removal_are_an_error() {
    let mut s = MemStorage::new();
    for n in ["a", "b"] {
        s.add(
            vec![("__name__".into(), n.into())],
            &[Sample { t: 0, v: 1.0 }],
        );
    }
    let c = Compiled::new("abs({__name__=~\"a|b\"})").unwrap();
    assert!(c.eval(&s, 0).is_err());
    let c = Compiled::new("last_over_time({__name__=~\"a|b\"}[1m])").unwrap();
    assert!(c.eval(&s, 0).is_ok());
}

#[test]
fn label_replace_collisions_fail_even_under_an_aggregation() {
    let mut s = MemStorage::new();
    for a in ["1", "2"] {
        s.add(
            vec![("__name__".into(), "x".into()), ("a".into(), a.into())],
            &[Sample { t: 0, v: 1.0 }],
        );
    }
    let c = Compiled::new("sum(label_replace(x, \"a\", \"\", \"a\", \".*\"))").unwrap();
    assert!(c.eval(&s, 0).is_err());
}

#[test]
fn evaluation_budgets_stop_runaway_queries() {
    let mut s = MemStorage::new();
    for i in 0..50 {
        let pts: Vec<Sample> = (0..10)
            .map(|k| Sample {
                t: k * 60_000,
                v: 1.0,
            })
            .collect();
        s.add(
            vec![("__name__".into(), "x".into()), ("i".into(), i.to_string())],
            &pts,
        );
    }
    // 10800 outer steps x 10800 inner steps: refused once the step budget is spent instead
    // of running for hours.
    let c = Compiled::new("max_over_time((max_over_time(x[3h:1s]))[3h:1s])").unwrap();
    match c.eval(&s, 600_000) {
        Err(EvalError::Runtime(m)) => assert!(m.contains("subquery steps"), "{m}"),
        other => panic!("{other:?}"),
    }
    // The sample budget bounds what the reads load.
    let c = Compiled::new("max_over_time((sum(x))[10m:1s])")
        .unwrap()
        .with_max_samples(10_000);
    match c.eval(&s, 600_000) {
        Err(EvalError::Runtime(m)) => assert!(m.contains("too many samples"), "{m}"),
        other => panic!("{other:?}"),
    }
    let c = Compiled::new("sum(x)").unwrap().with_max_samples(49);
    assert!(c.eval(&s, 600_000).is_err());
    let c = Compiled::new("sum(x)").unwrap().with_max_samples(50);
    assert!(c.eval(&s, 600_000).is_ok());
}

#[test]
fn stale_marker_ends_instant_selection() {
    let mut s = MemStorage::new();
    s.add(
        vec![("__name__".into(), "x".into())],
        &[
            Sample { t: 0, v: 1.0 },
            Sample {
                t: 60_000,
                v: f64::from_bits(STALE_NAN_BITS),
            },
        ],
    );
    let c = Compiled::new("x").unwrap();
    assert_eq!(
        c.eval(&s, 30_000).unwrap(),
        Value::Vector(vec![(vec![("__name__".into(), "x".into())], 1.0)])
    );
    assert_eq!(c.eval(&s, 90_000).unwrap(), Value::Vector(vec![]));
}

fn bucket_store(counts: &[(&str, f64)]) -> MemStorage {
    let mut s = MemStorage::new();
    for (le, c) in counts {
        s.add(
            vec![
                ("__name__".into(), "lat_bucket".into()),
                ("job".into(), "a".into()),
                ("le".into(), le.to_string()),
            ],
            &[Sample { t: 0, v: *c }],
        );
    }
    s
}

fn single(c: &Compiled, s: &MemStorage, t: i64) -> (Labels, f64) {
    match c.eval(s, t).unwrap() {
        Value::Vector(v) if v.len() == 1 => v.into_iter().next().unwrap(),
        other => panic!("{other:?}"),
    }
}

#[test]
fn histogram_quantile_interpolates_within_classic_buckets() {
    let s = bucket_store(&[("0.1", 10.0), ("0.2", 20.0), ("+Inf", 20.0)]);
    for (q, want) in [(0.5, 0.1), (0.75, 0.15), (1.0, 0.2), (0.0, 0.0)] {
        let c = Compiled::new(&format!("histogram_quantile({q}, lat_bucket)")).unwrap();
        let (labels, v) = single(&c, &s, 0);
        assert!((v - want).abs() < 1e-12, "q={q}: {v}");
        assert_eq!(labels, vec![("job".to_string(), "a".to_string())]);
    }
    let c = Compiled::new("histogram_quantile(1.5, lat_bucket)").unwrap();
    assert_eq!(single(&c, &s, 0).1, f64::INFINITY);
}

#[test]
fn histogram_quantile_fixes_buckets_like_prometheus() {
    // A decreasing bucket is raised to its predecessor; `1` and `1.0` are one bound.
    let s = bucket_store(&[("0.1", 10.0), ("0.2", 8.0), ("+Inf", 20.0)]);
    let c = Compiled::new("histogram_quantile(0.9, lat_bucket)").unwrap();
    assert_eq!(single(&c, &s, 0).1, 0.2);
    let s = bucket_store(&[("1", 5.0), ("1.0", 5.0), ("+Inf", 10.0)]);
    let c = Compiled::new("histogram_quantile(0.5, lat_bucket)").unwrap();
    assert_eq!(single(&c, &s, 0).1, 0.5);
    // No +Inf bucket: NaN.
    let s = bucket_store(&[("0.1", 10.0), ("0.2", 20.0)]);
    assert!(single(&c, &s, 0).1.is_nan());
}

#[test]
fn rate_extrapolates_and_handles_counter_resets() {
    let mut s = MemStorage::new();
    // Samples every 60s from 30s, with a reset after 40: the increase is 10+20+30 + 10.
    let vals = [10.0, 20.0, 40.0, 5.0, 15.0];
    let pts: Vec<Sample> = vals
        .iter()
        .enumerate()
        .map(|(i, v)| Sample {
            t: 30_000 + i as i64 * 60_000,
            v: *v,
        })
        .collect();
    s.add(vec![("__name__".into(), "c_total".into())], &pts);
    // Window (0, 300s]: first sample 30s in, last 30s before the end; both under 1.1 of
    // the 60s spacing, so extrapolated to the edges; the zero point (10/45 of 240s) is
    // further back than 30s, so the start extends the full 30s.
    let c = Compiled::new("increase(c_total[5m])").unwrap();
    let (labels, v) = single(&c, &s, 300_000);
    assert!(labels.is_empty());
    let want = 45.0 * (240.0 + 30.0 + 30.0) / 240.0;
    assert!((v - want).abs() < 1e-9, "{v} != {want}");
    let c = Compiled::new("rate(c_total[5m])").unwrap();
    assert!((single(&c, &s, 300_000).1 - want / 300.0).abs() < 1e-12);
}

#[test]
fn subquery_steps_are_aligned_to_absolute_multiples() {
    let mut s = MemStorage::new();
    let pts: Vec<Sample> = (0..20)
        .map(|i| Sample {
            t: i * 10_000,
            v: i as f64,
        })
        .collect();
    s.add(vec![("__name__".into(), "g".into())], &pts);
    // At t=95s, g[50s:20s] evaluates at 60s and 80s (multiples of 20s in (45s, 95s]), not
    // at 55s/75s/95s.
    let c = Compiled::new("count_over_time(g[50s:20s])").unwrap();
    assert_eq!(single(&c, &s, 95_000).1, 2.0);
    let c = Compiled::new("min_over_time(g[50s:20s])").unwrap();
    assert_eq!(single(&c, &s, 95_000).1, 6.0);
}

mod fuzz {
    use super::*;
    use proptest::prelude::*;

    /// Instant-vector leaves.
    const VECTORS: &[&str] = &[
        "x",
        "y{job=\"a\"}",
        "x offset 1m",
        "x offset -1m",
        "x @ 60",
        "x @ 9e15",
        "x @ end()",
        "{__name__=~\"x|y\"}",
        "vector(1)",
        "vector(time())",
        "absent(nope)",
    ];
    /// Range-vector forms; `%1` is an instant vector.
    const MATRICES: &[&str] = &[
        "x[5m]",
        "y[1m]",
        "x[10m] offset 2m",
        "x[1m] @ -9e15",
        "(%1)[5m:1m]",
        "(%1)[3m:]",
        "(%1)[2m:20s] @ start()",
        "x[4m+1m] offset (1m*2)",
        "(%1)[2m+1m:max_of(20s, 10s)]",
    ];
    /// Instant-vector expressions over `%1`/`%2` (instant vectors) and `%m` (a range vector).
    const WRAPS: &[&str] = &[
        "rate(%m)",
        "irate(%m)",
        "increase(%m)",
        "delta(%m)",
        "idelta(%m)",
        "deriv(%m)",
        "changes(%m)",
        "resets(%m)",
        "max_over_time(%m)",
        "avg_over_time(%m)",
        "stddev_over_time(%m)",
        "mad_over_time(%m)",
        "ts_of_max_over_time(%m)",
        "absent_over_time(%m)",
        "last_over_time(%m)",
        "quantile_over_time(2, %m)",
        "quantile_over_time(0.3, %m)",
        "predict_linear(%m, 60)",
        "double_exponential_smoothing(%m, 0.5, 0.5)",
        "sum by (job) (%1)",
        "avg without (le) (%1)",
        "stddev without (job) (%1)",
        "count(%1)",
        "group by (job) (%1)",
        "topk(2, %1)",
        "bottomk(NaN, %1)",
        "topk(scalar(%2), %1)",
        "limitk(2, %1)",
        "limitk(scalar(%2), %1)",
        "limit_ratio(0.5, %1)",
        "limit_ratio by (job) (-0.3, %1)",
        "quantile(0.5, %1)",
        "count_values(\"v\", %1)",
        "count_values without (job) (\"job\", %1)",
        "abs(%1)",
        "-%1",
        "histogram_quantile(0.9, %1)",
        "histogram_quantile(scalar(%2), %1)",
        "label_replace(%1, \"d\", \"$1\", \"job\", \"(.*)\")",
        "label_replace(%1, \"__name__\", \"n$1\", \"job\", \"(.*)\")",
        "label_join(%1, \"d\", \",\", \"job\", \"le\")",
        "absent(%1)",
        "sort_by_label(%1, \"job\")",
        "sort_desc(%1)",
        "clamp(%1, 0, 1)",
        "clamp_min(%1, NaN)",
        "day_of_week(%1)",
        "days_in_month(%1)",
        "round(%1, 0.1)",
        "timestamp(%1)",
        "vector(scalar(%1))",
        "%1 > bool 1",
        "%1 > %2",
        "1 < %1",
        "%1 * NaN",
        "%1 % 0",
        "%1 ^ %2",
        "%1 + on(job) group_left %2",
        "%1 - on(job) group_right(le) %2",
        "%1 == ignoring(le) %2",
        "%1 or %2",
        "%1 and on() %2",
        "%1 unless %2",
        "%1 / ignoring(job) %2",
        "%1 atan2 %2",
    ];

    fn vector() -> impl Strategy<Value = String> {
        let leaf = proptest::sample::select(VECTORS).prop_map(str::to_string);
        leaf.prop_recursive(4, 48, 3, |inner| {
            (
                proptest::sample::select(WRAPS),
                proptest::sample::select(MATRICES),
                inner.clone(),
                inner.clone(),
                inner,
            )
                .prop_map(|(w, m, a, b, c)| {
                    let m = m.replace("%1", &c);
                    w.replace("%m", &m).replace("%1", &a).replace("%2", &b)
                })
        })
    }

    fn expr() -> impl Strategy<Value = String> {
        prop_oneof![
            8 => vector(),
            1 => proptest::sample::select(MATRICES)
                .prop_map(|m| m.replace("%1", "x")),
            1 => proptest::sample::select(&["1", "-2.5", "NaN", "\"s\"", "time()", "start()"][..])
                .prop_map(str::to_string),
        ]
    }

    fn storage(vals: Vec<(u8, i64, f64)>) -> MemStorage {
        let mut s = MemStorage::new();
        for (k, t, v) in vals {
            let name = if k % 2 == 0 { "x" } else { "y" };
            let mut labels = vec![
                (
                    "job".to_string(),
                    ["0", "1", "", "ü", "a\"b", "1e3"][(k % 6) as usize].to_string(),
                ),
                (
                    "le".to_string(),
                    ["0.1", "1", "+Inf", "x", "1.0", "-Inf", "NaN"][(k % 7) as usize].to_string(),
                ),
            ];
            // Some series without a name, some with an extra label.
            if k % 11 != 0 {
                labels.push(("__name__".to_string(), name.to_string()));
            }
            if k % 5 == 0 {
                labels.push(("zone".to_string(), format!("z{}", k % 13)));
            }
            // Empty values mean "no label", as in Prometheus.
            labels.retain(|(_, v)| !v.is_empty());
            let v = if k % 9 == 0 {
                f64::from_bits(STALE_NAN_BITS)
            } else {
                v
            };
            s.add(labels, &[Sample { t, v }]);
        }
        s
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(500))]
        #[test]
        fn compile_and_eval_never_panic(
            e in expr(),
            data in proptest::collection::vec((any::<u8>(), 0i64..600_000, prop_oneof![4 => -100.0f64..100.0, 1 => any::<f64>()]), 0..80),
            t in prop_oneof![8 => 0i64..700_000, 1 => -100_000i64..1_000_000, 1 => prop_oneof![Just(i64::MAX), Just(i64::MIN), any::<i64>()]],
        ) {
            let s = storage(data);
            if let Ok(c) = Compiled::new(&e) {
                let _ = c.eval(&s, t);
                let _ = c.eval_in_range(&s, t, t.saturating_sub(60_000), t.saturating_add(60_000));
            }
        }
    }
}

#[test]
fn compiled_is_shareable_across_threads() {
    fn send_sync<T: Send + Sync + Clone>() {}
    send_sync::<Compiled>();
    send_sync::<Value>();
    send_sync::<SelectorNeed>();
}
