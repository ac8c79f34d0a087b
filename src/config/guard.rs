//! The `guard:` section as written (strict serde types) and its validation into the guard's
//! own `GuardConfig`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderName;
use regex::Regex;
use serde::Deserialize;
use serde_saphyr::Spanned;

use super::errors::Errors;
use super::raw::ByteSize;
use crate::duration::PromDuration;
use crate::guard::{
    Action, Budget, BudgetRule, GaugeFunction, GuardConfig, OwnerMatch, SharedConfig, TenantPolicy,
};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGuard {
    pub owner_labels: Option<Spanned<Vec<String>>>,
    pub tenant_header: Option<Spanned<String>>,
    pub hash_seed: Option<u64>,
    pub window: Option<Spanned<PromDuration>>,
    pub window_slices: Option<Spanned<u32>>,
    pub max_series: Option<u64>,
    pub max_owners: Option<Spanned<usize>>,
    pub max_reported_services: Option<Spanned<usize>>,
    pub top_k: Option<usize>,
    pub overflow_flush_interval: Option<Spanned<PromDuration>>,
    pub default_budget: Option<RawBudget>,
    pub unowned_budget: Option<RawBudget>,
    #[serde(default)]
    pub budgets: Vec<Spanned<RawRule>>,
    pub max_tenants: Option<Spanned<usize>>,
    pub max_owners_per_tenant: Option<Spanned<usize>>,
    pub tenants: Option<Spanned<RawTenants>>,
    pub max_overflow_bytes: Option<Spanned<ByteSize>>,
    pub shared: Option<Spanned<RawShared>>,
}

/// `guard.shared`: budgets shared by several replicas through Redis.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawShared {
    pub url: Option<Spanned<String>>,
    pub key_prefix: Option<String>,
    pub timeout: Option<Spanned<PromDuration>>,
    pub connect_timeout: Option<Spanned<PromDuration>>,
    pub replicas_hint: Option<Spanned<u64>>,
}

/// `guard.tenants`: which tenants may write.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTenants {
    #[serde(default)]
    pub allow: Vec<String>,
    pub allow_regex: Option<Spanned<String>>,
    pub default: Option<String>,
}

/// Budget fields; any left out inherit from `default_budget`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBudget {
    pub max_series: Option<u64>,
    pub action: Option<Spanned<String>>,
    pub max_series_per_metric: Option<u64>,
    #[serde(default)]
    pub metrics: BTreeMap<String, u64>,
    #[serde(default)]
    pub label_limits: BTreeMap<String, u64>,
    pub overflow_labels: Option<Vec<String>>,
    pub overflow_gauge: Option<Spanned<String>>,
}

/// A budget rule: a matcher plus budget fields (serde cannot flatten under
/// `deny_unknown_fields`, hence the repetition of `RawBudget`'s fields).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRule {
    pub service: Option<String>,
    pub service_regex: Option<Spanned<String>>,
    pub tenant: Option<String>,
    pub max_series: Option<u64>,
    pub action: Option<Spanned<String>>,
    pub max_series_per_metric: Option<u64>,
    #[serde(default)]
    pub metrics: BTreeMap<String, u64>,
    #[serde(default)]
    pub label_limits: BTreeMap<String, u64>,
    pub overflow_labels: Option<Vec<String>>,
    pub overflow_gauge: Option<Spanned<String>>,
}

fn resolve(base: &Budget, raw: &RawBudget, path: &str, errs: &mut Errors) -> Budget {
    let mut b = base.clone();
    if let Some(n) = raw.max_series {
        b.max_series = n;
    }
    if let Some(a) = &raw.action {
        match a.value.as_str() {
            "drop" => b.action = Action::Drop,
            "warn" => b.action = Action::Warn,
            "relabel" => b.action = Action::Relabel,
            other => errs.push(
                &format!("{path}.action"),
                a,
                format!("unknown action {other:?} (drop, warn or relabel)"),
            ),
        }
    }
    if let Some(n) = raw.max_series_per_metric {
        b.max_series_per_metric = (n > 0).then_some(n);
    }
    for (k, v) in &raw.metrics {
        b.metrics.insert(k.clone(), *v);
    }
    if let Some(l) = &raw.overflow_labels {
        b.overflow_labels = l.clone();
    }
    if let Some(g) = &raw.overflow_gauge {
        b.overflow_gauge = match g.value.as_str() {
            "sum" => GaugeFunction::Sum,
            "max" => GaugeFunction::Max,
            "min" => GaugeFunction::Min,
            "last" => GaugeFunction::Last,
            other => {
                errs.push(
                    &format!("{path}.overflow_gauge"),
                    g,
                    format!("unknown function {other:?} (sum, max, min or last)"),
                );
                GaugeFunction::Sum
            }
        };
    }
    for (k, v) in &raw.label_limits {
        b.label_limits.retain(|(name, _)| name != k);
        b.label_limits.push((k.clone(), *v));
    }
    b
}

pub(super) fn validate(raw: &RawGuard, errs: &mut Errors) -> GuardConfig {
    let mut g = GuardConfig::default();
    if let Some(o) = &raw.owner_labels {
        if o.value.is_empty() || o.value.iter().any(|l| !valid_label_name(l)) {
            errs.push(
                "guard.owner_labels",
                o,
                "must be a non-empty list of label names",
            );
        }
        g.owner_labels = o.value.clone();
    }
    if let Some(t) = &raw.tenant_header {
        match HeaderName::from_bytes(t.value.as_bytes()) {
            Ok(h) => g.tenant_header = Some(h),
            Err(_) if t.value.is_empty() => {}
            Err(_) => errs.push(
                "guard.tenant_header",
                t,
                format!("{:?} is not a header name", t.value),
            ),
        }
    }
    if let Some(s) = raw.hash_seed {
        g.hash_seed = s;
    }
    if let Some(w) = &raw.window {
        if w.value.0 < Duration::from_secs(60) {
            errs.push("guard.window", w, "must be at least 1m");
        }
        g.window = w.value.0;
    }
    if let Some(s) = &raw.window_slices {
        if !(1..=60).contains(&s.value) {
            errs.push("guard.window_slices", s, "must be between 1 and 60");
        }
        g.window_slices = s.value.clamp(1, 60) as u8;
    }
    g.max_series = raw.max_series.filter(|&n| n > 0);
    if let Some(n) = &raw.max_owners {
        if n.value == 0 {
            errs.push("guard.max_owners", n, "must be at least 1");
        }
        g.max_owners = n.value.max(1);
    }
    if let Some(n) = &raw.max_reported_services {
        g.max_reported_services = n.value;
    }
    if let Some(k) = raw.top_k {
        g.top_k = k;
    }
    if let Some(f) = &raw.overflow_flush_interval {
        if f.value.0 < Duration::from_secs(1) {
            errs.push("guard.overflow_flush_interval", f, "must be at least 1s");
        }
        g.overflow_flush_interval = f.value.0.max(Duration::from_secs(1));
    }
    let base = match &raw.default_budget {
        Some(b) => resolve(&Budget::default(), b, "guard.default_budget", errs),
        None => Budget::default(),
    };
    g.unowned_budget = Arc::new(match &raw.unowned_budget {
        Some(b) => resolve(&base, b, "guard.unowned_budget", errs),
        None => base.clone(),
    });
    for (i, rule) in raw.budgets.iter().enumerate() {
        let path = format!("guard.budgets[{i}]");
        let r = &rule.value;
        let owner = match (&r.service, &r.service_regex) {
            (Some(s), None) => Some(OwnerMatch::Exact(s.clone())),
            (None, Some(re)) => match Regex::new(&format!("^(?:{})$", re.value)) {
                Ok(re) => Some(OwnerMatch::Regex(re)),
                Err(e) => {
                    errs.push(
                        &format!("{path}.service_regex"),
                        re,
                        format!("invalid regex: {e}"),
                    );
                    None
                }
            },
            _ => {
                errs.push(&path, rule, "needs exactly one of service or service_regex");
                None
            }
        };
        let raw_budget = RawBudget {
            max_series: r.max_series,
            action: r.action.clone(),
            max_series_per_metric: r.max_series_per_metric,
            metrics: r.metrics.clone(),
            label_limits: r.label_limits.clone(),
            overflow_labels: r.overflow_labels.clone(),
            overflow_gauge: r.overflow_gauge.clone(),
        };
        let budget = Arc::new(resolve(&base, &raw_budget, &path, errs));
        if let Some(owner) = owner {
            g.rules.push(BudgetRule {
                tenant: r.tenant.clone(),
                owner,
                budget,
            });
        }
    }
    g.default_budget = Arc::new(base);
    validate_bounds(raw, &mut g, errs);
    if let Some(sh) = &raw.shared {
        g.shared = validate_shared(sh, errs);
    }
    g
}

fn validate_shared(raw: &Spanned<RawShared>, errs: &mut Errors) -> Option<SharedConfig> {
    let r = &raw.value;
    let mut c = SharedConfig::default();
    match &r.url {
        None => errs.push(
            "guard.shared.url",
            raw,
            "is required (redis://HOST:PORT/DB)",
        ),
        Some(u) => match redis::Client::open(u.value.as_str()) {
            Ok(_) => c.url = u.value.clone(),
            Err(e) => errs.push(
                "guard.shared.url",
                u,
                format!(
                    "not a Redis URL: {}",
                    e.to_string().replace(&u.value, "<url>")
                ),
            ),
        },
    }
    if let Some(p) = &r.key_prefix {
        c.key_prefix = p.clone();
    }
    let mut duration = |key: &str, d: &Option<Spanned<PromDuration>>, into: &mut Duration| {
        if let Some(d) = d {
            if d.value.0 < Duration::from_millis(1) || d.value.0 > Duration::from_secs(60) {
                errs.push(
                    &format!("guard.shared.{key}"),
                    d,
                    "must be between 1ms and 1m",
                );
            }
            *into = d.value.0;
        }
    };
    duration("timeout", &r.timeout, &mut c.timeout);
    duration(
        "connect_timeout",
        &r.connect_timeout,
        &mut c.connect_timeout,
    );
    if let Some(n) = &r.replicas_hint {
        if n.value == 0 {
            errs.push("guard.shared.replicas_hint", n, "must be at least 1");
        }
        c.replicas_hint = n.value.max(1);
    }
    Some(c)
}

/// The bounds on what the guard tracks, and the tenant policy.
fn validate_bounds(raw: &RawGuard, g: &mut GuardConfig, errs: &mut Errors) {
    if let Some(n) = &raw.max_tenants {
        if n.value == 0 {
            errs.push("guard.max_tenants", n, "must be at least 1");
        }
        g.max_tenants = n.value.max(1);
    }
    if let Some(n) = &raw.max_owners_per_tenant {
        if n.value == 0 {
            errs.push("guard.max_owners_per_tenant", n, "must be at least 1");
        }
        g.max_owners_per_tenant = n.value.max(1);
    }
    if let Some(b) = &raw.max_overflow_bytes {
        if b.value.0 < 1 << 20 {
            errs.push("guard.max_overflow_bytes", b, "must be at least 1MiB");
        }
        g.max_overflow_bytes = usize::try_from(b.value.0).unwrap_or(usize::MAX);
    }
    if let Some(t) = &raw.tenants {
        if g.tenant_header.is_none() {
            errs.push(
                "guard.tenants",
                t,
                "needs guard.tenant_header (the header the tenant is read from)",
            );
        }
        let allow_regex = t.value.allow_regex.as_ref().and_then(|re| {
            Regex::new(&format!("^(?:{})$", re.value))
                .map_err(|e| {
                    errs.push(
                        "guard.tenants.allow_regex",
                        re,
                        format!("invalid regex: {e}"),
                    )
                })
                .ok()
        });
        if t.value.allow.is_empty() && t.value.allow_regex.is_none() && t.value.default.is_none() {
            errs.push(
                "guard.tenants",
                t,
                "needs allow, allow_regex or default (else every tenant would be refused)",
            );
        }
        if let Some(d) = &t.value.default {
            if d.is_empty() || http::HeaderValue::from_str(d).is_err() {
                errs.push(
                    "guard.tenants.default",
                    t,
                    format!("{d:?} is not a valid header value"),
                );
            }
        }
        g.tenants = Some(TenantPolicy {
            allow: t.value.allow.clone(),
            allow_regex,
            default: t.value.default.clone(),
        });
    }
}

fn valid_label_name(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with(|c: char| c.is_ascii_digit())
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}
