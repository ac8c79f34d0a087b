//! The `schema:` section: what every series must look like at admission, and which label
//! values are redacted before any stage sees them. Raw serde types and their validation.

use std::collections::BTreeMap;

use regex::Regex;
use serde::Deserialize;
use serde_saphyr::Spanned;

use super::validate::Errors;

/// What a schema rule does with a series that breaks it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SchemaAction {
    /// Drop the series (counted); the request still succeeds.
    #[default]
    Drop,
    /// Refuse the whole request with 400 and the reason.
    Reject,
}

/// The schema rules, in the order they are checked. The index is stable: it names the rule in
/// metrics (`reason="schema_<name>"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SchemaRule {
    RequiredLabels,
    ForbiddenLabelNames,
    MetricName,
    MaxLabels,
    LabelNameLength,
    LabelValueLength,
}

impl SchemaRule {
    pub const ALL: [SchemaRule; 6] = [
        SchemaRule::RequiredLabels,
        SchemaRule::ForbiddenLabelNames,
        SchemaRule::MetricName,
        SchemaRule::MaxLabels,
        SchemaRule::LabelNameLength,
        SchemaRule::LabelValueLength,
    ];

    /// The config key of the rule (also its name in `actions:` and in metrics).
    pub fn key(self) -> &'static str {
        match self {
            SchemaRule::RequiredLabels => "required_labels",
            SchemaRule::ForbiddenLabelNames => "forbidden_label_names",
            SchemaRule::MetricName => "metric_name_regex",
            SchemaRule::MaxLabels => "max_labels_per_series",
            SchemaRule::LabelNameLength => "max_label_name_length",
            SchemaRule::LabelValueLength => "max_label_value_length",
        }
    }
}

/// How a matching label value is redacted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedactAction {
    /// Replace the value by `redacted:` + 16 hex digits of its hash: series stay distinct.
    Hash,
    /// Remove the label.
    DropLabel,
}

#[derive(Debug, Clone)]
pub struct Redaction {
    /// Anchored, as Prometheus anchors regexes.
    pub regex: Regex,
    /// Only these label names (empty: every label but `__name__`).
    pub labels: Vec<String>,
    pub action: RedactAction,
}

/// The validated `schema:` section.
#[derive(Debug, Clone, Default)]
pub struct SchemaConfig {
    pub required_labels: Vec<String>,
    pub forbidden_label_names: Option<Regex>,
    pub metric_name: Option<Regex>,
    pub max_labels: Option<usize>,
    pub max_label_name_length: Option<usize>,
    pub max_label_value_length: Option<usize>,
    /// Action per rule, indexed like `SchemaRule::ALL`.
    pub actions: [SchemaAction; 6],
    pub redact: Vec<Redaction>,
}

impl SchemaConfig {
    pub fn action(&self, rule: SchemaRule) -> SchemaAction {
        self.actions[rule as usize]
    }
}

impl PartialEq for SchemaConfig {
    fn eq(&self, other: &Self) -> bool {
        let re = |a: &Option<Regex>, b: &Option<Regex>| {
            a.as_ref().map(Regex::as_str) == b.as_ref().map(Regex::as_str)
        };
        self.required_labels == other.required_labels
            && re(&self.forbidden_label_names, &other.forbidden_label_names)
            && re(&self.metric_name, &other.metric_name)
            && self.max_labels == other.max_labels
            && self.max_label_name_length == other.max_label_name_length
            && self.max_label_value_length == other.max_label_value_length
            && self.actions == other.actions
            && self.redact.len() == other.redact.len()
            && self.redact.iter().zip(&other.redact).all(|(a, b)| {
                a.regex.as_str() == b.regex.as_str() && a.labels == b.labels && a.action == b.action
            })
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSchema {
    #[serde(default)]
    pub required_labels: Vec<String>,
    pub forbidden_label_names: Option<Spanned<String>>,
    pub metric_name_regex: Option<Spanned<String>>,
    pub max_labels_per_series: Option<usize>,
    pub max_label_name_length: Option<usize>,
    pub max_label_value_length: Option<usize>,
    #[serde(default)]
    pub actions: BTreeMap<String, Spanned<String>>,
    #[serde(default)]
    pub redact: Vec<RawRedaction>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRedaction {
    pub regex: Spanned<String>,
    #[serde(default)]
    pub labels: Vec<String>,
    pub action: Option<Spanned<String>>,
}

fn anchored(path: &str, raw: &Spanned<String>, errs: &mut Errors) -> Option<Regex> {
    match Regex::new(&format!("^(?:{})$", raw.value)) {
        Ok(r) => Some(r),
        Err(e) => {
            errs.push(path, raw, format!("invalid regex: {e}"));
            None
        }
    }
}

pub(super) fn validate(raw: &RawSchema, errs: &mut Errors) -> SchemaConfig {
    let mut s = SchemaConfig {
        required_labels: raw.required_labels.clone(),
        max_labels: raw.max_labels_per_series,
        max_label_name_length: raw.max_label_name_length,
        max_label_value_length: raw.max_label_value_length,
        ..Default::default()
    };
    if let Some(r) = &raw.forbidden_label_names {
        s.forbidden_label_names = anchored("schema.forbidden_label_names", r, errs);
    }
    if let Some(r) = &raw.metric_name_regex {
        s.metric_name = anchored("schema.metric_name_regex", r, errs);
    }
    for (key, action) in &raw.actions {
        let path = format!("schema.actions.{key}");
        let Some(rule) = SchemaRule::ALL.iter().find(|r| r.key() == key) else {
            let keys: Vec<_> = SchemaRule::ALL.iter().map(|r| r.key()).collect();
            errs.push(
                &path,
                action,
                format!("unknown schema rule {key:?} (one of {})", keys.join(", ")),
            );
            continue;
        };
        s.actions[*rule as usize] = match action.value.as_str() {
            "drop" => SchemaAction::Drop,
            "reject" => SchemaAction::Reject,
            other => {
                errs.push(
                    &path,
                    action,
                    format!("unknown action {other:?} (drop or reject)"),
                );
                SchemaAction::Drop
            }
        };
    }
    for (i, r) in raw.redact.iter().enumerate() {
        let path = format!("schema.redact[{i}]");
        let action = match r.action.as_ref().map(|a| (a, a.value.as_str())) {
            None | Some((_, "hash")) => RedactAction::Hash,
            Some((_, "drop_label")) => RedactAction::DropLabel,
            Some((a, other)) => {
                errs.push(
                    &format!("{path}.action"),
                    a,
                    format!("unknown action {other:?} (hash or drop_label)"),
                );
                RedactAction::Hash
            }
        };
        if r.labels.iter().any(|l| l == "__name__") {
            errs.push(
                &format!("{path}.labels"),
                &r.regex,
                "__name__ cannot be redacted",
            );
        }
        if let Some(regex) = anchored(&format!("{path}.regex"), &r.regex, errs) {
            s.redact.push(Redaction {
                regex,
                labels: r.labels.clone(),
                action,
            });
        }
    }
    s
}
