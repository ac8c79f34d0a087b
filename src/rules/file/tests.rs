use super::*;

fn errors(yaml: &str) -> Vec<String> {
    parse("r.yml", yaml)
        .expect_err("should be refused")
        .iter()
        .map(ToString::to_string)
        .collect()
}

#[test]
fn loads_a_prometheus_rule_file() {
    let g = parse(
        "r.yml",
        r#"
groups:
  - name: svc
    interval: 30s
    query_offset: 1m
    limit: 10
    labels: {tier: agg}
    forward_inputs: false
    rules:
      - record: job:up:sum
        expr: sum by (job) (up)
        labels: {tier: override, extra: x}
  - name: other
    rules: []
"#,
    )
    .unwrap();
    assert_eq!(g.len(), 2);
    let s = &g[0];
    assert_eq!(s.key(), "r.yml;svc");
    assert_eq!(s.interval, Some(Duration::from_secs(30)));
    assert_eq!(s.query_offset, Some(Duration::from_secs(60)));
    assert_eq!(s.limit, 10);
    assert!(!s.forward_inputs);
    assert!(g[1].forward_inputs);
    assert_eq!(
        s.rules[0].labels,
        vec![
            ("extra".to_string(), "x".to_string()),
            ("tier".to_string(), "override".to_string())
        ]
    );
    assert!(!s.rules[0].compiled.needs().is_empty());
}

#[test]
fn empty_files_have_no_groups() {
    assert!(parse("r.yml", "").unwrap().is_empty());
    assert!(parse("r.yml", "groups: []\n").unwrap().is_empty());
}

#[test]
fn alerting_rules_are_refused_by_name() {
    let e = errors(
        "groups:\n  - name: g\n    rules:\n      - alert: HighLatency\n        expr: up == 0\n        for: 5m\n",
    );
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(e[0].starts_with("r.yml:4:"), "{}", e[0]);
    assert!(e[0].contains("HighLatency"), "{}", e[0]);
    assert!(e[0].contains("group \"g\""), "{}", e[0]);
    assert!(e[0].contains("recording rules only"), "{}", e[0]);
}

#[test]
fn every_problem_is_reported_with_its_position() {
    let e = errors(
        r#"groups:
  - name: g
    rules:
      - record: "bad name"
        expr: up
      - record: ok
        expr: up
        labels: {"0bad": x}
      - record: ok2
        expr: ""
  - name: g
    interval: 0s
    rules:
      - expr: up
      - record: r
        expr: up
        annotations: {summary: x}
"#,
    );
    let joined = e.join("\n");
    for want in [
        "r.yml:4:",
        "invalid recording rule name",
        "r.yml:8:",
        "invalid label name",
        "r.yml:10:",
        "'expr' must be set",
        "r.yml:11:",
        "repeated in the same file",
        "r.yml:12:",
        "interval",
        "one of 'record' or 'alert'",
        "invalid field 'annotations'",
    ] {
        assert!(joined.contains(want), "missing {want:?} in\n{joined}");
    }
    assert_eq!(e.len(), 7, "{joined}");
}

#[test]
fn unknown_fields_and_bad_expressions_are_refused() {
    let e = errors("groups:\n  - name: g\n    evaluation_interval: 1m\n");
    assert!(e[0].contains("evaluation_interval"), "{e:?}");
    let e = errors("groups:\n  - name: g\n    rules:\n      - record: r\n        expr: sum(\n");
    assert!(
        e[0].starts_with("r.yml:5:") && e[0].contains("expr"),
        "{e:?}"
    );
}

#[test]
fn names_follow_prometheus() {
    assert!(valid_metric_name("job:http_requests:rate5m"));
    assert!(!valid_metric_name("1abc"));
    assert!(!valid_metric_name(""));
    assert!(valid_label_name("_x1"));
    assert!(!valid_label_name("a:b"));
}

#[test]
fn prometheus_3_constructs_are_named_at_load() {
    let rule = |expr: &str| {
        format!("groups:\n  - name: g\n    rules:\n      - record: r\n        expr: '{expr}'\n")
    };
    for (expr, want) in [
        (
            "rate(x[5m] anchored)",
            "unsupported: range modifier `anchored`",
        ),
        ("x[5m] smoothed", "unsupported: range modifier `smoothed`"),
        (
            "rate(x[step()])",
            "range [step()]: duration must be greater than 0",
        ),
        ("rate(x[1m/0])", "division by zero"),
        ("sum (x) by y", "syntax error"),
    ] {
        let e = errors(&rule(expr));
        assert!(
            e.len() == 1 && e[0].starts_with("r.yml:5:") && e[0].contains(want),
            "{expr}: {e:?}"
        );
        assert!(!e[0].contains("invalid promql query"), "{expr}: {e:?}");
    }
    // What Prometheus 3 parses and the engine evaluates loads.
    for expr in [
        "limitk(10, x)",
        "limit_ratio by (job) (-0.25, x)",
        "rate(x[4m+1m] offset (1h/2))",
        "max_over_time(x[1h:max_of(1m, 30s)])",
    ] {
        assert!(parse("r.yml", &rule(expr)).is_ok(), "{expr}");
    }
}
