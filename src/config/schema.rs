//! The `schema:` section as written: raw serde types, validated into `crate::schema`'s
//! `SchemaConfig` (what every series must look like at admission, and which label values are
//! redacted before any later stage sees them).

use std::collections::BTreeMap;

use regex::Regex;
use serde::Deserialize;
use serde_saphyr::Spanned;

use super::errors::Errors;
use crate::schema::{RedactAction, Redaction, SchemaAction, SchemaConfig, SchemaRule};

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
