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
}

#[test]
fn unsupported_constructs_are_named() {
    for (e, what) in [
        ("limitk(1, x)", "limitk"),
        ("info(x)", "info"),
        ("histogram_count(x)", "histogram_count"),
    ] {
        match Compiled::new(e) {
            Err(CompileError::Unsupported(m)) => assert!(m.contains(what), "{e}: {m}"),
            other => panic!("{e}: {other:?}"),
        }
    }
    assert!(matches!(Compiled::new("sum("), Err(CompileError::Parse(_))));
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

mod fuzz {
    use super::*;
    use proptest::prelude::*;

    const ATOMS: &[&str] = &[
        "x",
        "y{job=\"a\"}",
        "x[5m]",
        "y[1m:10s]",
        "1",
        "-2.5",
        "\"s\"",
        "NaN",
        "Inf",
        "x offset 1m",
        "x @ 60",
        "{__name__=~\"x|y\"}",
        "time()",
        "vector(1)",
        "x offset -1m",
        "y[1m:] @ end()",
        "x @ 9e15",
        "start()",
        "x[1m] @ -9e15",
    ];
    const WRAPS: &[&str] = &[
        "rate(%)",
        "sum by (job) (%)",
        "topk(2, %)",
        "quantile(0.5, %)",
        "abs(%)",
        "histogram_quantile(0.9, %)",
        "label_replace(%, \"d\", \"$1\", \"job\", \"(.*)\")",
        "count_values(\"v\", %)",
        "scalar(%)",
        "absent(%)",
        "(%)[5m:1m]",
        "-%",
        "sort_by_label(%, \"job\")",
        "predict_linear(%, 60)",
        "clamp(%, 0, 1)",
        "max_over_time(%)",
        "day_of_week(%)",
        "round(%, 0.1)",
        "% > bool 1",
        "% + on(job) group_left %",
        "% or %",
        "% / ignoring(job) %",
        "% and %",
        "stddev without (job) (%)",
        "bottomk(NaN, %)",
        "quantile_over_time(2, %)",
    ];

    fn expr() -> impl Strategy<Value = String> {
        let leaf = proptest::sample::select(ATOMS).prop_map(str::to_string);
        leaf.prop_recursive(4, 32, 2, |inner| {
            (proptest::sample::select(WRAPS), inner.clone(), inner)
                .prop_map(|(w, a, b)| w.replacen('%', &a, 1).replacen('%', &b, 1))
        })
    }

    fn storage(vals: Vec<(u8, i64, f64)>) -> MemStorage {
        let mut s = MemStorage::new();
        for (k, t, v) in vals {
            let name = if k % 2 == 0 { "x" } else { "y" };
            let labels = vec![
                ("__name__".to_string(), name.to_string()),
                ("job".to_string(), format!("{}", k % 3)),
                (
                    "le".to_string(),
                    ["0.1", "1", "+Inf", "x"][(k % 4) as usize].to_string(),
                ),
            ];
            let v = if k % 7 == 0 {
                f64::from_bits(STALE_NAN_BITS)
            } else {
                v
            };
            s.add(labels, &[Sample { t, v }]);
        }
        s
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]
        #[test]
        fn compile_and_eval_never_panic(
            e in expr(),
            data in proptest::collection::vec((any::<u8>(), 0i64..900_000, any::<f64>()), 0..30),
            t in prop_oneof![-100_000i64..1_000_000, Just(i64::MAX), Just(i64::MIN), any::<i64>()],
        ) {
            let s = storage(data);
            if let Ok(c) = Compiled::new(&e) {
                let _ = c.eval(&s, t);
                let _ = c.eval_in_range(&s, t, t.saturating_sub(60_000), t.saturating_add(60_000));
            }
        }
    }
}
