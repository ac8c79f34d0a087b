//! Schema at admission: redaction of sensitive label values (before any other stage sees the
//! series) and the label schema every series must meet.

use xxhash_rust::xxh3::xxh3_64;

use crate::config::schema::{RedactAction, SchemaAction, SchemaConfig, SchemaRule};

/// Labels owned by cardguard after a rewrite (redaction now; relabeling later).
pub type OwnedLabels = Vec<(Vec<u8>, Vec<u8>)>;

/// A series' labels: as they came off the wire, or rewritten.
#[derive(Clone)]
pub enum Labels<'a, W> {
    Wire(W),
    Owned(std::slice::Iter<'a, (Vec<u8>, Vec<u8>)>),
}

impl<'a, W> Iterator for Labels<'a, W>
where
    W: Iterator<Item = (&'a [u8], &'a [u8])>,
{
    type Item = (&'a [u8], &'a [u8]);
    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        match self {
            Labels::Wire(w) => w.next(),
            Labels::Owned(o) => o.next().map(|(n, v)| (n.as_slice(), v.as_slice())),
        }
    }
}

/// Apply the redaction rules. `Some(labels)` when anything was redacted.
pub fn redact<'a, I>(cfg: &SchemaConfig, labels: I) -> Option<OwnedLabels>
where
    I: Iterator<Item = (&'a [u8], &'a [u8])> + Clone,
{
    if cfg.redact.is_empty() {
        return None;
    }
    let hit = |name: &[u8], value: &[u8]| -> Option<RedactAction> {
        if name == b"__name__" {
            return None;
        }
        let value = std::str::from_utf8(value).ok()?;
        cfg.redact
            .iter()
            .find(|r| {
                (r.labels.is_empty() || r.labels.iter().any(|l| l.as_bytes() == name))
                    && r.regex.is_match(value)
            })
            .map(|r| r.action)
    };
    if !labels.clone().any(|(n, v)| hit(n, v).is_some()) {
        return None;
    }
    let mut out = OwnedLabels::new();
    for (name, value) in labels {
        match hit(name, value) {
            None => out.push((name.to_vec(), value.to_vec())),
            Some(RedactAction::DropLabel) => {}
            Some(RedactAction::Hash) => {
                out.push((
                    name.to_vec(),
                    format!("redacted:{:016x}", xxh3_64(value)).into_bytes(),
                ));
            }
        }
    }
    Some(out)
}

/// The first schema rule the series breaks, with its action and a one-line reason.
pub fn check<'a, I>(cfg: &SchemaConfig, labels: I) -> Option<(SchemaRule, SchemaAction, String)>
where
    I: Iterator<Item = (&'a [u8], &'a [u8])> + Clone,
{
    let fail = |rule: SchemaRule, reason: String| Some((rule, cfg.action(rule), reason));
    for req in &cfg.required_labels {
        if !labels
            .clone()
            .any(|(n, v)| n == req.as_bytes() && !v.is_empty())
        {
            return fail(
                SchemaRule::RequiredLabels,
                format!("required label {req:?} missing"),
            );
        }
    }
    if let Some(re) = &cfg.forbidden_label_names {
        if let Some((n, _)) = labels
            .clone()
            .find(|(n, _)| std::str::from_utf8(n).is_ok_and(|n| re.is_match(n)))
        {
            return fail(
                SchemaRule::ForbiddenLabelNames,
                format!("label name {:?} is forbidden", String::from_utf8_lossy(n)),
            );
        }
    }
    if let Some(re) = &cfg.metric_name {
        let name = labels
            .clone()
            .find(|(n, _)| *n == b"__name__")
            .map(|(_, v)| v)
            .unwrap_or_default();
        if !std::str::from_utf8(name).is_ok_and(|n| re.is_match(n)) {
            return fail(
                SchemaRule::MetricName,
                format!(
                    "metric name {:?} does not match {}",
                    String::from_utf8_lossy(name),
                    re.as_str()
                ),
            );
        }
    }
    if let Some(max) = cfg.max_labels {
        let n = labels.clone().count();
        if n > max {
            return fail(
                SchemaRule::MaxLabels,
                format!("{n} labels, more than {max}"),
            );
        }
    }
    if let Some(max) = cfg.max_label_name_length {
        if let Some((n, _)) = labels.clone().find(|(n, _)| n.len() > max) {
            return fail(
                SchemaRule::LabelNameLength,
                format!(
                    "label name {:?} longer than {max} bytes",
                    String::from_utf8_lossy(n)
                ),
            );
        }
    }
    if let Some(max) = cfg.max_label_value_length {
        if let Some((n, _)) = labels.clone().find(|(_, v)| v.len() > max) {
            return fail(
                SchemaRule::LabelValueLength,
                format!(
                    "value of label {:?} longer than {max} bytes",
                    String::from_utf8_lossy(n)
                ),
            );
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn schema(yaml: &str) -> SchemaConfig {
        Config::from_yaml(yaml).unwrap().schema.unwrap()
    }

    fn pairs<'a>(
        l: &'a [(&'a str, &'a str)],
    ) -> impl Iterator<Item = (&'a [u8], &'a [u8])> + Clone {
        l.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes()))
    }

    #[test]
    fn each_rule_and_its_action() {
        let s = schema(
            "schema:\n  required_labels: [service]\n  forbidden_label_names: \"user_id|session_.*\"\n  metric_name_regex: \"[a-z_]+\"\n  max_labels_per_series: 4\n  max_label_name_length: 10\n  max_label_value_length: 8\n  actions:\n    required_labels: reject\n",
        );
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
        let s = schema(
            "schema:\n  redact:\n    - regex: \"[^@]+@[^@]+\"\n    - regex: \"tok_.*\"\n      labels: [token]\n      action: drop_label\n",
        );
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
}
