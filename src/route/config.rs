//! The routing table: several upstreams and which series go to which, with per-route
//! relabeling and downsampling. `config::route` builds it from `upstreams:` and `routes:`.

use std::time::Duration;

use http::HeaderName;

use super::selector::Selector;
use crate::forward::UpstreamConfig;
use crate::relabel::RuleSet;

/// Several upstreams and the routes between them; replaces the single `upstream:`.
#[derive(Debug, Clone, PartialEq)]
pub struct Routing {
    pub upstreams: Vec<UpstreamConfig>,
    /// Evaluated in order for every series.
    pub routes: Vec<Route>,
    /// Where the request's tenant is read from (`tenant_header:` at the top level).
    pub tenant_header: Option<HeaderName>,
}

impl Routing {
    /// Where cardguard's own series (the guard's overflow aggregates) go: the first upstream
    /// of the first catch-all route, or the only upstream.
    pub fn default_upstream(&self) -> Option<&UpstreamConfig> {
        match self.routes.iter().find(|r| r.is_catch_all()) {
            Some(r) => r.upstreams.first().and_then(|&u| self.upstreams.get(u)),
            None if self.upstreams.len() == 1 => self.upstreams.first(),
            None => None,
        }
    }
}

/// One entry of `routes:`.
#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    /// `name:` or `route<i>`; used in logs and metric labels.
    pub name: String,
    /// `None`: every series (a catch-all route).
    pub selector: Option<Selector>,
    /// `None`: every tenant, and requests without one.
    pub tenants: Option<Vec<String>>,
    /// Indexes into `Routing::upstreams`.
    pub upstreams: Vec<usize>,
    /// Applied to the series sent on this route only, after the top-level relabeling.
    pub relabel: RuleSet,
    /// Keep at most one sample per series per interval on this route.
    pub min_interval: Option<Duration>,
    /// Go on evaluating later routes after this one matched (Alertmanager's `continue`).
    pub continue_matching: bool,
}

impl Route {
    /// A route that matches every series of every tenant.
    pub fn is_catch_all(&self) -> bool {
        self.selector.is_none() && self.tenants.is_none()
    }
}
