//! `upstreams:` and `routes:` as written (strict serde types) and their validation into the
//! routing table, `route::Routing`.

use serde::Deserialize;
use serde_saphyr::Spanned;

use super::errors::Errors;
use super::raw::RawUpstream;
use super::relabel::RawRelabel;
use super::upstream::{self, valid_name};
use crate::duration::PromDuration;
use crate::forward::UpstreamConfig;
use crate::route::selector::Selector;
use crate::route::{Route, Routing};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    pub name: Option<Spanned<String>>,
    #[serde(rename = "match")]
    pub selector: Option<Spanned<String>>,
    pub tenants: Option<Spanned<Vec<String>>>,
    pub upstreams: Spanned<Vec<String>>,
    #[serde(default)]
    pub relabel_configs: Vec<Spanned<RawRelabel>>,
    pub min_interval: Option<Spanned<PromDuration>>,
    #[serde(rename = "continue", default)]
    pub continue_matching: bool,
}

pub(super) fn validate(
    upstreams: &Spanned<Vec<Spanned<RawUpstream>>>,
    routes: &[Spanned<RawRoute>],
    tenant_header: Option<&Spanned<String>>,
    errs: &mut Errors,
) -> Routing {
    let tenant_header = upstream::tenant_header(tenant_header, "tenant_header", errs);
    if upstreams.value.is_empty() {
        errs.push("upstreams", upstreams, "needs at least one upstream");
    }
    let mut ups: Vec<UpstreamConfig> = Vec::new();
    for (i, raw) in upstreams.value.iter().enumerate() {
        let path = format!("upstreams[{i}]");
        if raw.value.name.is_none() {
            errs.push(
                &path,
                raw,
                "every upstream needs a `name` (routes refer to it)",
            );
        }
        if let Some(mut up) = upstream::validate(&raw.value, &path, errs) {
            if raw.value.tenant_header.is_none() {
                // Passed on under the name it came in with.
                up.tenant_header = tenant_header.clone();
            }
            if ups.iter().any(|u| u.name == up.name) {
                errs.push(
                    &format!("{path}.name"),
                    raw,
                    format!("duplicate upstream name {:?}", up.name),
                );
            }
            ups.push(up);
        }
    }
    let mut out = Vec::new();
    for (i, raw) in routes.iter().enumerate() {
        let path = format!("routes[{i}]");
        let r = &raw.value;
        let selector = r
            .selector
            .as_ref()
            .and_then(|s| match Selector::parse(&s.value) {
                Ok(sel) => Some(sel),
                Err(m) => {
                    errs.push(&format!("{path}.match"), s, m);
                    None
                }
            });
        if r.upstreams.value.is_empty() {
            errs.push(
                &format!("{path}.upstreams"),
                &r.upstreams,
                "needs at least one upstream name",
            );
        }
        let mut targets = Vec::new();
        for name in &r.upstreams.value {
            match upstreams.value.iter().position(|u| {
                u.value.name.as_ref().map(|n| n.value.as_str()) == Some(name.as_str())
            }) {
                Some(p) if !targets.contains(&p) => targets.push(p),
                Some(_) => errs.push(
                    &format!("{path}.upstreams"),
                    &r.upstreams,
                    format!("upstream {name:?} listed twice"),
                ),
                None => errs.push(
                    &format!("{path}.upstreams"),
                    &r.upstreams,
                    format!("unknown upstream {name:?} (not in upstreams:)"),
                ),
            }
        }
        let min_interval = match &r.min_interval {
            Some(d) if d.value.0.is_zero() => {
                errs.push(&format!("{path}.min_interval"), d, "must be greater than 0");
                None
            }
            Some(d) => Some(d.value.0),
            None => None,
        };
        let name = match &r.name {
            Some(n) => {
                if !valid_name(&n.value) {
                    errs.push(
                        &format!("{path}.name"),
                        n,
                        "must match [a-zA-Z0-9_-]+ (it is used as a metric label)",
                    );
                }
                n.value.clone()
            }
            None => format!("route{i}"),
        };
        if let Some(t) = &r.tenants {
            if t.value.is_empty() {
                errs.push(
                    &format!("{path}.tenants"),
                    t,
                    "leave `tenants` out to match every tenant",
                );
            }
        }
        out.push(Route {
            name,
            selector,
            tenants: r.tenants.as_ref().map(|t| t.value.clone()),
            upstreams: targets,
            relabel: super::relabel::validate(
                &r.relabel_configs,
                &format!("{path}.relabel_configs"),
                errs,
            ),
            min_interval,
            continue_matching: r.continue_matching,
        });
    }
    if ups.len() > 1 && !out.iter().any(|r| r.is_catch_all()) {
        errs.push(
            "routes",
            upstreams,
            "with several upstreams, add a default route (one without `match` and `tenants`) that says where the other series go",
        );
    }
    Routing {
        upstreams: ups,
        routes: out,
        tenant_header,
        single: false,
    }
}
