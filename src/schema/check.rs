//! The label schema for one series: the first rule it breaks, in `SchemaRule::ALL` order.

use super::{SchemaAction, SchemaConfig, SchemaRule};

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
