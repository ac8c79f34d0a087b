//! The routing table: several upstreams and which series go to which, with per-route
//! relabeling and downsampling. `config::route` builds it from `upstreams:` and `routes:`.

use std::time::Duration;

use http::HeaderName;

use super::selector::Selector;
use crate::forward::UpstreamConfig;
use crate::relabel::RuleSet;

/// Where every series goes: the upstreams and the routes between them. A single `upstream:`
/// (or `--upstream`) is a routing too: one upstream and one catch-all route (`Routing::single`).
#[derive(Debug, Clone, PartialEq)]
pub struct Routing {
    pub upstreams: Vec<UpstreamConfig>,
    /// Evaluated in order for every series.
    pub routes: Vec<Route>,
    /// Where the request's tenant is read from (`tenant_header:` at the top level).
    pub tenant_header: Option<HeaderName>,
    /// Built from a single `upstream:`: the `--upstream*` flags may change it, and a request
    /// leaves as it did with one upstream (its metadata even when every series was dropped,
    /// nothing when it carries nothing).
    pub single: bool,
}

impl Routing {
    /// The routing of a single `upstream:`: every series to it, its tenant header read from
    /// the request and passed on under the same name.
    pub fn single(up: UpstreamConfig) -> Self {
        Routing {
            tenant_header: up.tenant_header.clone(),
            upstreams: vec![up],
            routes: vec![Route {
                name: "default".into(),
                selector: None,
                tenants: None,
                upstreams: vec![0],
                relabel: RuleSet::default(),
                min_interval: None,
                continue_matching: false,
            }],
            single: true,
        }
    }

    /// The upstream of a routing built by `single`, for the `--upstream*` flags to change.
    pub fn single_upstream_mut(&mut self) -> Option<&mut UpstreamConfig> {
        if !self.single {
            return None;
        }
        // The flags change the URL, version and timeout, never the tenant header.
        self.upstreams.first_mut()
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
