//! The guard's validated settings: who owns a series, each owner's budget, and what happens
//! past it. `config::guard` builds them from the `guard:` section; the guard only reads them.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderName;
use regex::Regex;

/// What happens to a new series over its budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Drop it; series admitted earlier keep flowing.
    Drop,
    /// Admit it anyway and count what would have been dropped (a dry run).
    Warn,
    /// Collapse it: set the overflow labels to `__overflow__` and merge the series that
    /// collapse together into one aggregate, emitted every `overflow_flush_interval`.
    Relabel,
}

/// How the members of an overflow aggregate combine when they are gauges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GaugeFunction {
    Sum,
    Max,
    Min,
    Last,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Drop => "drop",
            Action::Warn => "warn",
            Action::Relabel => "relabel",
        }
    }
}

/// One owner's limits, resolved (rule fields fall back to `default_budget`).
#[derive(Debug, Clone, PartialEq)]
pub struct Budget {
    /// Most active series.
    pub max_series: u64,
    pub action: Action,
    /// Most active series per metric name, unless `metrics` names it.
    pub max_series_per_metric: Option<u64>,
    /// Per-metric limits by metric name.
    pub metrics: HashMap<String, u64>,
    /// Most distinct values per label name (e.g. `user_id: 1000`).
    pub label_limits: Vec<(String, u64)>,
    /// `relabel`: the labels set to `__overflow__`; empty means the owner's label with the
    /// most distinct values at that moment.
    pub overflow_labels: Vec<String>,
    /// `relabel`: how gauge members combine.
    pub overflow_gauge: GaugeFunction,
}

impl Budget {
    /// The series limit for `metric` within this budget, if any.
    pub fn metric_limit(&self, metric: &[u8]) -> Option<u64> {
        if !self.metrics.is_empty() {
            if let Some(n) = std::str::from_utf8(metric)
                .ok()
                .and_then(|m| self.metrics.get(m))
            {
                return Some(*n);
            }
        }
        self.max_series_per_metric
    }
}

/// `guard.tenants`: which tenants may write. A tenant is allowed when `allow` lists it or
/// `allow_regex` matches it; anything else (a request without the header too) goes to
/// `default` when set, else is refused.
#[derive(Debug, Clone)]
pub struct TenantPolicy {
    pub allow: Vec<String>,
    /// Anchored.
    pub allow_regex: Option<Regex>,
    /// Where unknown tenants are mapped instead of being refused.
    pub default: Option<String>,
}

impl PartialEq for TenantPolicy {
    fn eq(&self, other: &Self) -> bool {
        self.allow == other.allow
            && self.allow_regex.as_ref().map(Regex::as_str)
                == other.allow_regex.as_ref().map(Regex::as_str)
            && self.default == other.default
    }
}

/// Why a request's tenant was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TenantRefused {
    #[error("tenant header {header} is not valid UTF-8")]
    NotUtf8 { header: String },
    #[error("tenant {tenant:?} is not allowed to write here (guard.tenants)")]
    Unknown { tenant: String },
    #[error("a tenant header {header} is required (guard.tenants)")]
    Missing { header: String },
}

impl TenantPolicy {
    pub fn allows(&self, tenant: &str) -> bool {
        self.allow.iter().any(|a| a == tenant)
            || self
                .allow_regex
                .as_ref()
                .is_some_and(|r| r.is_match(tenant))
    }
}

impl GuardConfig {
    /// The tenant a request is accounted to, from its tenant header's raw value: itself when
    /// allowed, the policy's `default` when not, else refused. `Ok(None)`: tenants are off, or
    /// no header and no policy. A value that is not UTF-8 is always refused: the guard could
    /// not account it, yet it would be forwarded.
    pub fn resolve_tenant<'a>(
        &'a self,
        raw: Option<&'a [u8]>,
    ) -> Result<Option<&'a str>, TenantRefused> {
        let Some(header) = &self.tenant_header else {
            return Ok(None);
        };
        let value = match raw.map(std::str::from_utf8) {
            Some(Ok(v)) => Some(v),
            Some(Err(_)) => {
                return Err(TenantRefused::NotUtf8 {
                    header: header.to_string(),
                })
            }
            None => None,
        };
        let Some(policy) = &self.tenants else {
            return Ok(value);
        };
        match (value, &policy.default) {
            (Some(v), _) if policy.allows(v) => Ok(Some(v)),
            (_, Some(d)) => Ok(Some(d.as_str())),
            (Some(v), None) => Err(TenantRefused::Unknown { tenant: v.into() }),
            (None, None) => Err(TenantRefused::Missing {
                header: header.to_string(),
            }),
        }
    }
}

/// Which owners a budget rule applies to.
#[derive(Debug, Clone)]
pub enum OwnerMatch {
    Exact(String),
    /// Anchored, as Prometheus anchors regexes.
    Regex(Regex),
}

impl PartialEq for OwnerMatch {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (OwnerMatch::Exact(a), OwnerMatch::Exact(b)) => a == b,
            (OwnerMatch::Regex(a), OwnerMatch::Regex(b)) => a.as_str() == b.as_str(),
            _ => false,
        }
    }
}

impl OwnerMatch {
    fn matches(&self, owner: &str) -> bool {
        match self {
            OwnerMatch::Exact(s) => s == owner,
            OwnerMatch::Regex(r) => r.is_match(owner),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct BudgetRule {
    /// Only for this tenant (when tenants are enabled).
    pub tenant: Option<String>,
    pub owner: OwnerMatch,
    pub budget: Arc<Budget>,
}

/// The validated `guard:` section.
#[derive(Debug, Clone, PartialEq)]
pub struct GuardConfig {
    /// The first of these labels present on a series names its owner.
    pub owner_labels: Vec<String>,
    /// When set, the tenant (this request header) is an outer level: owners are per tenant.
    pub tenant_header: Option<HeaderName>,
    /// Seed of the series-id hash; replicas sharing budgets must agree on it.
    pub hash_seed: u64,
    /// A series counts as active while seen within this window.
    pub window: Duration,
    /// The window is tracked in this many slices; a series unseen for all of them frees its slot.
    pub window_slices: u8,
    /// Cap on active series across all owners.
    pub max_series: Option<u64>,
    /// Distinct owners tracked; series of further owners are accounted to `other`.
    pub max_owners: usize,
    /// Distinct tenants tracked (with `tenant_header`); the series of further tenants are
    /// accounted together to one shared owner, tenant `other`, service `other`.
    pub max_tenants: usize,
    /// Distinct owners tracked per tenant; further owners of that tenant share its `other`.
    pub max_owners_per_tenant: usize,
    /// Which tenants may write (with `tenant_header`); `None` lets every tenant in, bounded by
    /// `max_tenants`.
    pub tenants: Option<TenantPolicy>,
    /// Bytes the overflow aggregates (action `relabel`) may hold, labels and members.
    pub max_overflow_bytes: usize,
    /// Owners reported individually on /metrics; the rest are summed as `other`.
    pub max_reported_services: usize,
    /// Label names and metric names reported as top offenders per owner.
    pub top_k: usize,
    /// How often overflow aggregates (action `relabel`) are sent upstream.
    pub overflow_flush_interval: Duration,
    pub default_budget: Arc<Budget>,
    pub unowned_budget: Arc<Budget>,
    pub rules: Vec<BudgetRule>,
    /// `guard.shared`: budgets shared with other replicas through Redis.
    pub shared: Option<SharedConfig>,
    /// Which load of the config this is; set by the server on start and every reload, so
    /// owners can tell a newer budget from an older one.
    pub generation: u64,
}

impl GuardConfig {
    /// The budget of an owner: the first rule that matches, else the default.
    pub fn budget_for(&self, tenant: Option<&str>, owner: Option<&str>) -> Arc<Budget> {
        let Some(owner) = owner else {
            return self.unowned_budget.clone();
        };
        self.rules
            .iter()
            .find(|r| {
                r.tenant.as_deref().is_none_or(|t| Some(t) == tenant) && r.owner.matches(owner)
            })
            .map(|r| r.budget.clone())
            .unwrap_or_else(|| self.default_budget.clone())
    }

    /// Length of one window slice.
    pub fn slice_length(&self) -> Duration {
        self.window / u32::from(self.window_slices.max(1))
    }

    /// A guard with one budget for every owner: what `--max-series-per-service` builds.
    pub fn with_default_budget(max_series: u64, owner_labels: Vec<String>) -> Self {
        let budget = Arc::new(Budget {
            max_series,
            ..Budget::default()
        });
        GuardConfig {
            owner_labels,
            default_budget: budget.clone(),
            unowned_budget: budget,
            ..Self::default()
        }
    }
}

/// The budget of an owner the config gives none: 10,000 series, then drop.
impl Default for Budget {
    fn default() -> Self {
        Budget {
            max_series: 10_000,
            action: Action::Drop,
            max_series_per_metric: None,
            metrics: HashMap::new(),
            label_limits: Vec::new(),
            overflow_labels: Vec::new(),
            overflow_gauge: GaugeFunction::Sum,
        }
    }
}

impl Default for GuardConfig {
    fn default() -> Self {
        GuardConfig {
            owner_labels: vec!["service".into()],
            tenant_header: None,
            hash_seed: 0,
            window: Duration::from_secs(3600),
            window_slices: 6,
            max_series: None,
            max_owners: 10_000,
            max_tenants: 1_000,
            max_owners_per_tenant: 1_000,
            tenants: None,
            max_overflow_bytes: 64 << 20,
            max_reported_services: 50,
            top_k: 5,
            overflow_flush_interval: Duration::from_secs(30),
            default_budget: Arc::new(Budget::default()),
            unowned_budget: Arc::new(Budget::default()),
            rules: Vec::new(),
            shared: None,
            generation: 0,
        }
    }
}

/// `guard.shared`: where the replicas' shared admission state lives, and how long to wait for
/// it. Read at start: a reload that changes it is logged and takes effect on restart.
#[derive(Clone, PartialEq)]
pub struct SharedConfig {
    /// `redis://[user:password@]host:port[/db]` (or `redis+unix://`; not `rediss://`: the
    /// client is built without TLS).
    pub url: String,
    /// Prepended to every key cardguard writes, so several cardguard fleets can share a Redis.
    pub key_prefix: String,
    /// Longest wait for one admission round trip; past it the request is decided locally.
    pub timeout: Duration,
    /// Longest wait for a connection to Redis.
    pub connect_timeout: Duration,
    /// How many replicas share the budgets: while Redis is away each admits new series up to
    /// `budget / replicas_hint` on its own.
    pub replicas_hint: u64,
}

impl Default for SharedConfig {
    fn default() -> Self {
        SharedConfig {
            url: String::new(),
            key_prefix: "cardguard:".into(),
            timeout: Duration::from_millis(100),
            connect_timeout: Duration::from_secs(1),
            replicas_hint: 2,
        }
    }
}

/// The URL may carry a password: kept out of debug prints.
impl std::fmt::Debug for SharedConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let url = match self.url.rsplit_once('@') {
            Some((_, host)) => format!("<credentials>@{host}"),
            None => self.url.clone(),
        };
        f.debug_struct("SharedConfig")
            .field("url", &url)
            .field("key_prefix", &self.key_prefix)
            .field("timeout", &self.timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("replicas_hint", &self.replicas_hint)
            .finish()
    }
}
