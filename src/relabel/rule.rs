//! One relabel rule: the config entry as written (`RuleSpec`), validated and compiled into a
//! `Rule` with the checks and messages of Prometheus's `relabel.Config.Validate`.

use regex::bytes::Regex;

use super::template::Template;

/// What a rule does (`action:`, case-insensitive as in Prometheus).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Replace,
    Keep,
    Drop,
    KeepEqual,
    DropEqual,
    HashMod,
    LabelMap,
    LabelDrop,
    LabelKeep,
    Lowercase,
    Uppercase,
}

impl Action {
    pub fn parse(s: &str) -> Result<Action, String> {
        Ok(match s.to_lowercase().as_str() {
            "replace" => Action::Replace,
            "keep" => Action::Keep,
            "drop" => Action::Drop,
            "keepequal" => Action::KeepEqual,
            "dropequal" => Action::DropEqual,
            "hashmod" => Action::HashMod,
            "labelmap" => Action::LabelMap,
            "labeldrop" => Action::LabelDrop,
            "labelkeep" => Action::LabelKeep,
            "lowercase" => Action::Lowercase,
            "uppercase" => Action::Uppercase,
            "" => return Err("relabel action cannot be empty".into()),
            _ => return Err(format!("unknown relabel action {s:?}")),
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Action::Replace => "replace",
            Action::Keep => "keep",
            Action::Drop => "drop",
            Action::KeepEqual => "keepequal",
            Action::DropEqual => "dropequal",
            Action::HashMod => "hashmod",
            Action::LabelMap => "labelmap",
            Action::LabelDrop => "labeldrop",
            Action::LabelKeep => "labelkeep",
            Action::Lowercase => "lowercase",
            Action::Uppercase => "uppercase",
        }
    }
}

/// A rule as written, keys exactly as Prometheus spells them (it is also the YAML entry of
/// `relabel_configs:`); `None` means the key was absent, so the Prometheus default applies.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    /// Labels whose values are joined with `separator` (default `;`).
    pub source_labels: Option<Vec<String>>,
    pub separator: Option<String>,
    /// Anchored at both ends; default `(.*)`.
    pub regex: Option<String>,
    /// `hashmod` only.
    pub modulus: Option<u64>,
    pub target_label: Option<String>,
    /// Default `$1`.
    pub replacement: Option<String>,
    /// Default `replace`.
    pub action: Option<String>,
}

pub const DEFAULT_SEPARATOR: &str = ";";
pub const DEFAULT_REGEX: &str = "(.*)";
pub const DEFAULT_REPLACEMENT: &str = "$1";

/// A validated, compiled rule.
#[derive(Debug, Clone)]
pub struct Rule {
    pub action: Action,
    pub(super) source_labels: Vec<Vec<u8>>,
    pub(super) separator: Vec<u8>,
    pub(super) regex: super::prefilter::Anchored,
    /// The regex is the default `(.*)`: it matches anything, group 0 and 1 being the input,
    /// so `replace` needs no regex run (and no capture allocation) at all.
    pub(super) regex_default: bool,
    pub(super) modulus: u64,
    /// The target label as written (a template for `replace`).
    pub(super) target_label: Vec<u8>,
    pub(super) target: Template,
    pub(super) replacement: Template,
    /// Set by `RuleSet`: where each source label (and a `keepequal`/`dropequal` target)
    /// sits in the set's name table.
    pub(super) source_idx: Vec<usize>,
    pub(super) target_idx: usize,
}

/// A compiled rule list, with the label names its rules read resolved once per series in one
/// merge pass over the (sorted) labels, instead of one scan per rule and source label.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RuleSet {
    rules: Vec<Rule>,
    /// Distinct names read by the rules, sorted by bytes.
    pub(super) names: Vec<Vec<u8>>,
    /// Series these rules are known to leave unchanged or drop; starts empty with every new
    /// (reloaded) rule set.
    pub(super) memo: super::memo::Memo,
}

impl RuleSet {
    pub fn new(mut rules: Vec<Rule>) -> RuleSet {
        let mut names: Vec<Vec<u8>> = rules
            .iter()
            .flat_map(|r| {
                // keepequal/dropequal read their target; a default-regex replace with a
                // literal target is checked for the target's presence (see `quick`).
                let equal =
                    matches!(r.action, Action::KeepEqual | Action::DropEqual) || r.copies_value();
                r.source_labels
                    .iter()
                    .cloned()
                    .chain(equal.then(|| r.target_label.clone()))
            })
            .collect();
        names.sort();
        names.dedup();
        let at = |n: &[u8]| names.binary_search_by(|x| x.as_slice().cmp(n)).unwrap_or(0);
        for r in &mut rules {
            r.source_idx = r.source_labels.iter().map(|n| at(n)).collect();
            r.target_idx = at(&r.target_label);
        }
        RuleSet {
            rules,
            names,
            memo: Default::default(),
        }
    }
}

impl Rule {
    /// A `replace` with the default regex, a literal target and a replacement of group
    /// references only (`source_labels: [x]`, `target_label: y`): on an empty source value it
    /// deletes the target, which changes nothing when the target is absent.
    pub(super) fn copies_value(&self) -> bool {
        self.action == Action::Replace
            && self.regex_default
            && !self.target_label.contains(&b'$')
            && self.replacement.has_no_literal()
    }
}

impl std::ops::Deref for RuleSet {
    type Target = [Rule];
    fn deref(&self) -> &[Rule] {
        &self.rules
    }
}

impl PartialEq for Rule {
    fn eq(&self, o: &Rule) -> bool {
        self.action == o.action
            && self.source_labels == o.source_labels
            && self.separator == o.separator
            && self.regex.regex.as_str() == o.regex.regex.as_str()
            && self.modulus == o.modulus
            && self.target_label == o.target_label
            && self.replacement == o.replacement
    }
}

/// The legacy (remote write 1.0) label name rule `[a-zA-Z_][a-zA-Z0-9_]*`, which Prometheus
/// 2.x applies to relabel targets (and 3.x still applies with the legacy validation scheme).
pub fn is_valid_label_name(s: &[u8]) -> bool {
    match s.split_first() {
        None => false,
        Some((first, rest)) => {
            (first.is_ascii_alphabetic() || *first == b'_')
                && rest.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'_')
        }
    }
}

/// Prometheus's `relabelTarget`: `^(?:(?:[a-zA-Z_]|\$(?:\{\w+\}|\w+))+\w*)+$`.
fn is_valid_target_template(s: &str) -> bool {
    static RE: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    RE.get_or_init(|| {
        regex::Regex::new(r"^(?:(?:[a-zA-Z_]|\$(?:\{\w+\}|\w+))+\w*)+$").expect("valid regex")
    })
    .is_match(s)
}

impl Rule {
    /// Validate and compile, with Prometheus's messages.
    pub fn compile(spec: &RuleSpec) -> Result<Rule, String> {
        let action = match &spec.action {
            None => Action::Replace,
            Some(a) => Action::parse(a)?,
        };
        let mut source_labels = Vec::new();
        for l in spec.source_labels.iter().flatten() {
            if !is_valid_label_name(l.as_bytes()) {
                return Err(format!("{l:?} is not a valid label name"));
            }
            source_labels.push(l.as_bytes().to_vec());
        }
        let regex_src = spec.regex.as_deref().unwrap_or(DEFAULT_REGEX);
        let regex = Regex::new(&format!("^(?:{regex_src})$"))
            .map_err(|e| format!("invalid regex {regex_src:?}: {}", one_line(&e.to_string())))?;
        let separator = spec.separator.as_deref().unwrap_or(DEFAULT_SEPARATOR);
        let replacement = spec.replacement.as_deref().unwrap_or(DEFAULT_REPLACEMENT);
        let target = spec.target_label.as_deref().unwrap_or("");
        let modulus = spec.modulus.unwrap_or(0);
        let a = action.as_str();
        use Action::*;

        if modulus == 0 && action == HashMod {
            return Err("relabel configuration for hashmod requires non-zero modulus".into());
        }
        if matches!(
            action,
            Replace | HashMod | Lowercase | Uppercase | KeepEqual | DropEqual
        ) && target.is_empty()
        {
            return Err(format!(
                "relabel configuration for {a} action requires 'target_label' value"
            ));
        }
        let invalid_target = || format!("{target:?} is invalid 'target_label' for {a} action");
        if action == Replace && !target.contains('$') && !is_valid_label_name(target.as_bytes()) {
            return Err(invalid_target());
        }
        if action == Replace && target.contains('$') && !is_valid_target_template(target) {
            return Err(invalid_target());
        }
        if matches!(action, Lowercase | Uppercase | KeepEqual | DropEqual)
            && !is_valid_label_name(target.as_bytes())
        {
            return Err(invalid_target());
        }
        if matches!(action, Lowercase | Uppercase | KeepEqual | DropEqual)
            && replacement != DEFAULT_REPLACEMENT
        {
            return Err(format!("'replacement' can not be set for {a} action"));
        }
        if action == LabelMap && !is_valid_target_template(replacement) {
            return Err(format!(
                "{replacement:?} is invalid 'replacement' for {a} action"
            ));
        }
        if action == HashMod && !is_valid_label_name(target.as_bytes()) {
            return Err(invalid_target());
        }
        // Prometheus compares the regex by identity with the default: any regex written out,
        // even "(.*)", counts as set.
        if matches!(action, KeepEqual | DropEqual)
            && (spec.regex.is_some()
                || modulus != 0
                || separator != DEFAULT_SEPARATOR
                || replacement != DEFAULT_REPLACEMENT)
        {
            return Err(format!(
                "{a} action requires only 'source_labels' and `target_label`, and no other fields"
            ));
        }
        if matches!(action, LabelDrop | LabelKeep)
            && (spec.source_labels.is_some()
                || !target.is_empty()
                || modulus != 0
                || separator != DEFAULT_SEPARATOR
                || replacement != DEFAULT_REPLACEMENT)
        {
            return Err(format!(
                "{a} action requires only 'regex', and no other fields"
            ));
        }

        Ok(Rule {
            action,
            source_labels,
            separator: separator.as_bytes().to_vec(),
            target: Template::compile(target, &regex),
            replacement: Template::compile(replacement, &regex),
            regex_default: spec.regex.is_none(),
            regex: super::prefilter::Anchored::new(regex_src, regex),
            source_idx: Vec::new(),
            target_idx: 0,
            modulus,
            target_label: target.as_bytes().to_vec(),
        })
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}
