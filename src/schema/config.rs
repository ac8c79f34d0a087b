//! The validated `schema:` section, as the stage uses it: compiled regexes, an action per rule.

use regex::Regex;

use super::SchemaRule;

/// What a schema rule does with a series that breaks it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SchemaAction {
    /// Drop the series (counted); the request still succeeds.
    #[default]
    Drop,
    /// Refuse the whole request with 400 and the reason.
    Reject,
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
    pub actions: [SchemaAction; SchemaRule::ALL.len()],
    pub redact: Vec<Redaction>,
}

impl SchemaConfig {
    pub fn action(&self, rule: SchemaRule) -> SchemaAction {
        self.actions[rule as usize]
    }
}

// By the regexes' sources: `Regex` has no equality of its own.
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
