//! Prometheus rule files: strict serde types, then the checks `promtool check rules` makes,
//! every problem reported at once with its file, line and column.
//!
//! The format is Prometheus's own (`groups:` with `name`, `interval`, `query_offset`, `limit`,
//! `labels`, `rules:` of `record`, `expr`, `labels`), so users' existing files load unchanged.
//! One extension: `forward_inputs: false` on a group withholds the raw series its selectors
//! match. Alerting rules are refused by name: cardguard forwards, it does not alert.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_saphyr::Spanned;

use super::promql::Compiled;
use crate::duration::PromDuration;

/// One group of recording rules, validated and compiled.
#[derive(Debug, Clone)]
pub struct RuleGroup {
    /// The rule file as it was named (config-relative globs resolved).
    pub file: String,
    pub name: String,
    /// `None`: the global `rules.evaluation_interval`.
    pub interval: Option<Duration>,
    /// `None`: the global `rules.query_offset`.
    pub query_offset: Option<Duration>,
    /// Most series one rule may produce; 0 means no limit (Prometheus's `limit`).
    pub limit: usize,
    /// Added to every rule's output (a rule's own labels win).
    pub labels: Vec<(String, String)>,
    /// cardguard extension: `false` withholds the raw series matched by this group's selectors.
    pub forward_inputs: bool,
    pub rules: Vec<RecordingRule>,
}

impl RuleGroup {
    /// The group's identity in logs and metrics, as Prometheus spells it: `file;name`.
    pub fn key(&self) -> String {
        format!("{};{}", self.file, self.name)
    }
}

/// One recording rule.
#[derive(Debug, Clone)]
pub struct RecordingRule {
    pub record: String,
    pub expr: String,
    /// The rule's own labels merged over the group's; an empty value removes the label.
    pub labels: Vec<(String, String)>,
    pub compiled: Arc<Compiled>,
}

// The compiled plan follows from the text, so comparing the text is comparing the rule.
impl PartialEq for RecordingRule {
    fn eq(&self, o: &Self) -> bool {
        self.record == o.record && self.expr == o.expr && self.labels == o.labels
    }
}

impl PartialEq for RuleGroup {
    fn eq(&self, o: &Self) -> bool {
        self.file == o.file
            && self.name == o.name
            && self.interval == o.interval
            && self.query_offset == o.query_offset
            && self.limit == o.limit
            && self.labels == o.labels
            && self.forward_inputs == o.forward_inputs
            && self.rules == o.rules
    }
}

/// One problem in a rule file, located like a compiler error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleError {
    pub file: String,
    pub line: Option<u64>,
    pub column: Option<u64>,
    /// YAML path, e.g. `groups[0].rules[2].expr`.
    pub path: String,
    pub message: String,
}

impl fmt::Display for RuleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.file)?;
        if let Some(l) = self.line {
            write!(f, ":{l}")?;
            if let Some(c) = self.column {
                write!(f, ":{c}")?;
            }
        }
        f.write_str(": ")?;
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    groups: Vec<Spanned<RawGroup>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGroup {
    name: Option<Spanned<String>>,
    interval: Option<Spanned<PromDuration>>,
    query_offset: Option<Spanned<PromDuration>>,
    limit: Option<Spanned<i64>>,
    #[serde(default)]
    labels: BTreeMap<String, Spanned<String>>,
    forward_inputs: Option<Spanned<bool>>,
    #[serde(default)]
    rules: Vec<Spanned<RawRule>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    record: Option<Spanned<String>>,
    // Accepted by the parser only so that an alerting rule is refused with a message that
    // says why, not as an unknown field.
    alert: Option<Spanned<String>>,
    #[serde(rename = "for")]
    for_: Option<Spanned<String>>,
    keep_firing_for: Option<Spanned<String>>,
    annotations: Option<Spanned<BTreeMap<String, String>>>,
    expr: Option<Spanned<String>>,
    #[serde(default)]
    labels: BTreeMap<String, Spanned<String>>,
}

struct Errors<'a> {
    file: &'a str,
    list: Vec<RuleError>,
}

impl Errors<'_> {
    fn push<T>(&mut self, path: String, at: &Spanned<T>, message: impl Into<String>) {
        let (l, c) = (at.referenced.line(), at.referenced.column());
        self.list.push(RuleError {
            file: self.file.to_string(),
            line: (l > 0).then_some(l),
            column: (l > 0).then_some(c),
            path,
            message: message.into(),
        });
    }
}

/// Read and check every file, collecting every problem from every file.
pub fn load_files(files: &[impl AsRef<Path>]) -> Result<Vec<RuleGroup>, Vec<RuleError>> {
    let mut groups = Vec::new();
    let mut errors = Vec::new();
    for f in files {
        let name = f.as_ref().display().to_string();
        match std::fs::read_to_string(f) {
            Ok(text) => match parse(&name, &text) {
                Ok(g) => groups.extend(g),
                Err(e) => errors.extend(e),
            },
            Err(e) => errors.push(RuleError {
                file: name,
                line: None,
                column: None,
                path: String::new(),
                message: format!("cannot read rule file: {e}"),
            }),
        }
    }
    if errors.is_empty() {
        Ok(groups)
    } else {
        Err(errors)
    }
}

/// Parse and check one rule file's text; `file` names it in errors and group keys.
pub fn parse(file: &str, text: &str) -> Result<Vec<RuleGroup>, Vec<RuleError>> {
    let raw = if text.trim().is_empty() {
        RawFile::default()
    } else {
        match serde_saphyr::from_str::<Option<RawFile>>(text) {
            Ok(r) => r.unwrap_or_default(),
            Err(e) => {
                let loc = e.location();
                let line = loc.map(|l| l.line()).filter(|&l| l > 0);
                let s = e.to_string();
                return Err(vec![RuleError {
                    file: file.to_string(),
                    line,
                    column: line.and(loc.map(|l| l.column())),
                    path: String::new(),
                    message: s.lines().next().unwrap_or(&s).trim().to_string(),
                }]);
            }
        }
    };
    let mut errs = Errors {
        file,
        list: Vec::new(),
    };
    let mut seen = HashSet::new();
    let mut groups = Vec::new();
    for (gi, g) in raw.groups.iter().enumerate() {
        if let Some(group) = check_group(file, gi, g, &mut seen, &mut errs) {
            groups.push(group);
        }
    }
    if errs.list.is_empty() {
        Ok(groups)
    } else {
        Err(errs.list)
    }
}

fn check_group(
    file: &str,
    gi: usize,
    sg: &Spanned<RawGroup>,
    seen: &mut HashSet<String>,
    errs: &mut Errors<'_>,
) -> Option<RuleGroup> {
    let g = &sg.value;
    let gp = format!("groups[{gi}]");
    let name = match &g.name {
        Some(n) if !n.value.is_empty() => {
            if !seen.insert(n.value.clone()) {
                errs.push(
                    format!("{gp}.name"),
                    n,
                    format!("{:?}: repeated in the same file", n.value),
                );
            }
            n.value.clone()
        }
        Some(n) => {
            errs.push(format!("{gp}.name"), n, "group name must not be empty");
            String::new()
        }
        None => {
            errs.push(gp.clone(), sg, "group name must not be empty");
            String::new()
        }
    };
    let positive = |d: &Option<Spanned<PromDuration>>, field: &str, errs: &mut Errors<'_>| {
        d.as_ref().map(|d| {
            if d.value.0.is_zero() {
                // Prometheus reads 0 as "the global value"; say so rather than guess.
                errs.push(
                    format!("{gp}.{field}"),
                    d,
                    "must be greater than 0 (leave it out for the global value)",
                );
            }
            d.value.0
        })
    };
    let interval = positive(&g.interval, "interval", errs);
    let query_offset = g.query_offset.as_ref().map(|d| d.value.0);
    let limit = match &g.limit {
        Some(l) if l.value < 0 => {
            errs.push(format!("{gp}.limit"), l, "must not be negative");
            0
        }
        Some(l) => l.value as usize,
        None => 0,
    };
    let labels = check_labels(&g.labels, &format!("{gp}.labels"), errs);
    let mut rules = Vec::new();
    for (ri, r) in g.rules.iter().enumerate() {
        let rp = format!("{gp}.rules[{ri}]");
        if let Some(rule) = check_rule(&rp, r, &labels, &name, errs) {
            rules.push(rule);
        }
    }
    Some(RuleGroup {
        file: file.to_string(),
        name,
        interval,
        query_offset,
        limit,
        labels,
        forward_inputs: g.forward_inputs.as_ref().is_none_or(|f| f.value),
        rules,
    })
}

fn check_rule(
    rp: &str,
    sr: &Spanned<RawRule>,
    group_labels: &[(String, String)],
    group: &str,
    errs: &mut Errors<'_>,
) -> Option<RecordingRule> {
    let r = &sr.value;
    if let Some(a) = &r.alert {
        errs.push(
            format!("{rp}.alert"),
            a,
            format!(
                "alerting rule {:?} in group {group:?}: cardguard evaluates recording rules only \
                 (it forwards, it does not alert); keep alerting rules in Prometheus or Alertmanager's ruler",
                a.value
            ),
        );
        return None;
    }
    let Some(record) = &r.record else {
        errs.push(rp.to_string(), sr, "one of 'record' or 'alert' must be set");
        return None;
    };
    let mut ok = true;
    if !valid_metric_name(&record.value) {
        errs.push(
            format!("{rp}.record"),
            record,
            format!("invalid recording rule name: {:?}", record.value),
        );
        ok = false;
    }
    for (field, present) in [
        ("for", r.for_.as_ref().map(|s| s.referenced)),
        (
            "keep_firing_for",
            r.keep_firing_for.as_ref().map(|s| s.referenced),
        ),
        ("annotations", r.annotations.as_ref().map(|s| s.referenced)),
    ] {
        if let Some(at) = present {
            errs.push(
                format!("{rp}.{field}"),
                &Spanned::new((), at, at),
                format!("invalid field '{field}' in recording rule"),
            );
            ok = false;
        }
    }
    let own = check_labels(&r.labels, &format!("{rp}.labels"), errs);
    let compiled = match &r.expr {
        Some(e) if !e.value.trim().is_empty() => match Compiled::new(&e.value) {
            Ok(c) => Some(c),
            Err(err) => {
                errs.push(format!("{rp}.expr"), e, format!("{err}"));
                None
            }
        },
        Some(e) => {
            errs.push(format!("{rp}.expr"), e, "field 'expr' must be set in rule");
            None
        }
        None => {
            errs.push(rp.to_string(), sr, "field 'expr' must be set in rule");
            None
        }
    };
    let compiled = compiled?;
    if !ok {
        return None;
    }
    // Group labels first, the rule's own over them (Prometheus 3 semantics).
    let mut labels: BTreeMap<String, String> = group_labels.iter().cloned().collect();
    labels.extend(own);
    Some(RecordingRule {
        record: record.value.clone(),
        expr: r.expr.as_ref().map(|e| e.value.clone()).unwrap_or_default(),
        labels: labels.into_iter().collect(),
        compiled: Arc::new(compiled),
    })
}

fn check_labels(
    raw: &BTreeMap<String, Spanned<String>>,
    path: &str,
    errs: &mut Errors<'_>,
) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (k, v) in raw {
        if !valid_label_name(k) || k == "__name__" {
            errs.push(
                format!("{path}.{k}"),
                v,
                format!("invalid label name: {k:?}"),
            );
            continue;
        }
        out.push((k.clone(), v.value.clone()));
    }
    out
}

/// `[a-zA-Z_:][a-zA-Z0-9_:]*`: the classic metric name, which every backend accepts.
pub fn valid_metric_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && (b[0].is_ascii_alphabetic() || b[0] == b'_' || b[0] == b':')
        && b[1..]
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || *c == b'_' || *c == b':')
}

/// `[a-zA-Z_][a-zA-Z0-9_]*`.
pub fn valid_label_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && (b[0].is_ascii_alphabetic() || b[0] == b'_')
        && b[1..]
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || *c == b'_')
}

#[cfg(test)]
mod tests;
