//! The request's tenant, read once: checked against `guard.tenants` (refused, or mapped to the
//! policy's default), then used by the guard, matched by routes and passed upstream. A mapped
//! tenant is what goes upstream too, when the routes read the same header: a tenant the
//! policy does not know never reaches the backend under its own name.

use http::header::HeaderValue;
use http::HeaderMap;

use crate::config::Config;
use crate::guard::TenantRefused;
use crate::route::Routing;

/// The tenant as the guard and as the routes see it.
#[derive(Debug, Default, PartialEq)]
pub(super) struct Tenant {
    pub guard: Option<String>,
    pub route: Option<HeaderValue>,
}

/// `tenant_from_user`: the authenticated user replaces whatever the sender put in the tenant
/// headers (the guard's and the routes'), so that a sender can only write as itself, to the
/// guard and upstream alike.
pub(super) fn set_user(config: &Config, headers: &mut HeaderMap, user: &str) {
    let names = [
        config.guard.as_ref().and_then(|g| g.tenant_header.clone()),
        config
            .routing
            .as_ref()
            .and_then(|r| r.tenant_header.clone()),
    ];
    // Validated as a header value when the web config was loaded.
    let value = HeaderValue::from_str(user).ok();
    for name in names.into_iter().flatten() {
        headers.remove(&name);
        if let Some(v) = &value {
            headers.insert(name, v.clone());
        }
    }
}

pub(super) fn read(
    config: &Config,
    routing: &Routing,
    headers: &HeaderMap,
) -> Result<Tenant, TenantRefused> {
    let mut route = routing
        .tenant_header
        .as_ref()
        .and_then(|name| headers.get(name).cloned());
    let Some(g) = config.guard.as_ref() else {
        return Ok(Tenant { guard: None, route });
    };
    let Some(name) = &g.tenant_header else {
        return Ok(Tenant { guard: None, route });
    };
    let raw = headers.get(name).map(HeaderValue::as_bytes);
    let guard = g.resolve_tenant(raw)?.map(str::to_string);
    if routing.tenant_header.as_ref() == Some(name) && guard.as_deref().map(str::as_bytes) != raw {
        // Validated as a header value when the config was loaded.
        route = guard.as_deref().and_then(|t| HeaderValue::from_str(t).ok());
    }
    Ok(Tenant { guard, route })
}
