//! The series a scrape sends (`expand`), the stages' answers per series (`stages::run`), and the
//! verdicts the configured actions do not change, from inline expositions and configs.

use super::*;
use crate::ci::exposition;
use crate::ci::stages::{Fate, Staged};

const NOW: i64 = 1_700_000_000_000;

fn src(text: &str) -> Source {
    Source {
        name: "t.prom".into(),
        exposition: exposition::parse(text).unwrap(),
    }
}

fn opts(owner: Option<&str>, instances: u32) -> Options {
    Options {
        owner: owner.map(str::to_string),
        instances,
        now_ms: NOW,
    }
}

fn labels(l: &[(&str, &str)]) -> LabelSet {
    let mut v: LabelSet = l
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect();
    v.sort();
    v
}

#[test]
fn a_scrape_adds_instance_and_the_owner_where_missing() {
    let config = Config::from_yaml("guard:\n  owner_labels: [team, service]\n").unwrap();
    let text = "a{instance=\"x\"} 1\nb{service=\"own\"} 1\nc{team=\"\"} 1\n";
    let (series, origins) = expand(&config, &[src(text)], &opts(Some("shop"), 2));
    assert_eq!(series.len(), 6);
    assert_eq!(
        series[0],
        labels(&[
            ("__name__", "a"),
            ("exported_instance", "x"),
            ("instance", "ci-1"),
            ("team", "shop")
        ])
    );
    // An owner label present (any of them) is kept; an empty one is no owner.
    assert_eq!(
        series[2],
        labels(&[("__name__", "b"), ("instance", "ci-1"), ("service", "own")])
    );
    assert_eq!(
        series[5],
        labels(&[("__name__", "c"), ("instance", "ci-2"), ("team", "shop")])
    );
    assert_eq!(origins[5].line, 3);
    // The same series in two sources is sent once.
    let (twice, _) = expand(&config, &[src(text), src(text)], &opts(None, 1));
    assert_eq!(twice.len(), 3);
}

#[test]
fn each_series_gets_its_own_answer() {
    let config = Config::from_yaml(
        "limits:\n  max_label_value_length: 8\nschema:\n  required_labels: [service]\n  actions:\n    required_labels: reject\n",
    )
    .unwrap();
    let series = vec![
        labels(&[("__name__", "a"), ("service", "s")]),
        labels(&[("__name__", "b")]),
        labels(&[("__name__", "c"), ("service", "much-too-long")]),
        labels(&[("__name__", "d")]),
    ];
    let staged: Vec<Staged> = stages::run(&config, &series, NOW);
    assert_eq!(staged[0].fate, Fate::Kept);
    // `reject` would have refused the request at `b`: each breaking series is marked instead.
    let required = Fate::Dropped(Reason::Schema(SchemaRule::RequiredLabels));
    assert_eq!(staged[1].fate, required);
    assert_eq!(staged[3].fate, required);
    assert!(
        matches!(&staged[2].fate, Fate::Refused(m) if m.contains("longer than 8 bytes")),
        "{:?}",
        staged[2].fate
    );

    let report = check(
        &config,
        &[src("a{service=\"s\"} 1\nb 1\n")],
        None,
        None,
        &opts(None, 1),
    );
    assert_eq!(report.result, "fail");
    assert!(
        report.findings[0]
            .message
            .contains("the proxy refuses (400) every request carrying one"),
        "{:?}",
        report.findings
    );
}

#[test]
fn a_warn_budget_still_warns_and_says_what_it_does() {
    let config = Config::from_yaml(
        "guard:\n  default_budget:\n    max_series: 2\n    action: warn\n    max_series_per_metric: 1\n",
    )
    .unwrap();
    let r = check(
        &config,
        &[src("a{k=\"1\"} 1\na{k=\"2\"} 1\nb 1\n")],
        None,
        None,
        &opts(Some("svc"), 1),
    );
    assert_eq!((r.result, r.exit_code), ("warn", 2));
    let msgs: Vec<&str> = r.findings.iter().map(|f| f.message.as_str()).collect();
    assert!(
        msgs.contains(
            &"svc: +3 series, uses 3 of 2: over budget; the proxy would admit and count the series past it (action warn)"
        ),
        "{msgs:?}"
    );
    assert!(
        msgs.contains(&"svc: a: 2 series, over its limit of 1 (action warn)"),
        "{msgs:?}"
    );
}

#[test]
fn without_a_guard_only_the_schema_and_the_detector_judge() {
    let config = Config::from_yaml("{}").unwrap();
    let r = check(
        &config,
        &[src("x{id=\"3f2504e0-4f89-11d3-9a0c-0305e82c3301\"} 1\nx{id=\"3f2504e0-4f89-11d3-9a0c-0305e82c3302\"} 1\ny{path=\"/users/1\"} 1\n")],
        None,
        None,
        &opts(None, 1),
    );
    assert!(r.budgets.is_empty() && r.retention.is_empty());
    assert_eq!(r.findings.len(), 1, "{:?}", r.findings);
    assert_eq!(r.findings[0].label.as_deref(), Some("id"));
    assert_eq!(r.findings[0].examples.len(), 2);
}
