//! Each schema rule and its action, redaction, and the stage over a request.

use regex::Regex;

use super::*;

/// Anchored, as `config::schema` compiles every schema regex.
fn re(pattern: &str) -> Regex {
    Regex::new(&format!("^(?:{pattern})$")).unwrap()
}

fn pairs<'a>(l: &'a [(&'a str, &'a str)]) -> impl Iterator<Item = (&'a [u8], &'a [u8])> + Clone {
    l.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes()))
}

#[test]
fn each_rule_and_its_action() {
    let mut actions = [SchemaAction::Drop; SchemaRule::ALL.len()];
    actions[SchemaRule::RequiredLabels as usize] = SchemaAction::Reject;
    let s = SchemaConfig {
        required_labels: vec!["service".into()],
        forbidden_label_names: Some(re("user_id|session_.*")),
        metric_name: Some(re("[a-z_]+")),
        max_labels: Some(4),
        max_label_name_length: Some(10),
        max_label_value_length: Some(8),
        actions,
        redact: Vec::new(),
    };
    let ok = [("__name__", "up"), ("service", "a")];
    assert!(check(&s, pairs(&ok)).is_none());
    let cases: &[(&[(&str, &str)], SchemaRule)] = &[
        (&[("__name__", "up")], SchemaRule::RequiredLabels),
        (
            &[("__name__", "up"), ("service", "a"), ("session_id", "x")],
            SchemaRule::ForbiddenLabelNames,
        ),
        (
            &[("__name__", "Up"), ("service", "a")],
            SchemaRule::MetricName,
        ),
        (
            &[
                ("__name__", "up"),
                ("a", "1"),
                ("b", "1"),
                ("c", "1"),
                ("service", "a"),
            ],
            SchemaRule::MaxLabels,
        ),
        (
            &[
                ("__name__", "up"),
                ("averyverylongname", "1"),
                ("service", "a"),
            ],
            SchemaRule::LabelNameLength,
        ),
        (
            &[("__name__", "up"), ("service", "waytoolongvalue")],
            SchemaRule::LabelValueLength,
        ),
    ];
    for (labels, rule) in cases {
        let (got, action, reason) =
            check(&s, pairs(labels)).unwrap_or_else(|| panic!("{labels:?} should fail"));
        assert_eq!(got, *rule, "{reason}");
        let want = if *rule == SchemaRule::RequiredLabels {
            SchemaAction::Reject
        } else {
            SchemaAction::Drop
        };
        assert_eq!(action, want);
        assert!(!reason.contains('\n'));
    }
}

#[test]
fn redaction_hashes_or_drops() {
    let s = SchemaConfig {
        redact: vec![
            Redaction {
                regex: re("[^@]+@[^@]+"),
                labels: Vec::new(),
                action: RedactAction::Hash,
            },
            Redaction {
                regex: re("tok_.*"),
                labels: vec!["token".into()],
                action: RedactAction::DropLabel,
            },
        ],
        ..SchemaConfig::default()
    };
    assert!(redact(&s, pairs(&[("__name__", "up"), ("user", "bob")])).is_none());
    let out = redact(
        &s,
        pairs(&[
            ("__name__", "a@b"),
            ("token", "tok_1"),
            ("user", "bob@example.com"),
        ]),
    )
    .unwrap();
    let out: Vec<(String, String)> = out
        .into_iter()
        .map(|(n, v)| (String::from_utf8(n).unwrap(), String::from_utf8(v).unwrap()))
        .collect();
    assert_eq!(out.len(), 2, "{out:?}");
    assert_eq!(
        out[0],
        ("__name__".into(), "a@b".into()),
        "__name__ is never redacted"
    );
    assert_eq!(out[1].0, "user");
    assert!(out[1].1.starts_with("redacted:") && !out[1].1.contains("bob"));
    // Stable: the same value always redacts to the same string.
    let again = redact(&s, pairs(&[("user", "bob@example.com")])).unwrap();
    assert_eq!(again[0].1, out[1].1.as_bytes());
}
