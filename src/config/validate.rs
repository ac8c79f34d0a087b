//! Raw config → validated `Config`: the top-level settings here, each section by its own
//! module, every problem collected with its path and line.

use std::net::SocketAddr;

use serde_saphyr::Spanned;

use super::raw::{ByteSize, RawConfig, RawLimits};
use super::{
    guard, relabel, route, rules, schema, server, storage, upstream, Config, ConfigErrors,
};

use super::errors::Errors;

pub(super) fn validate(raw: RawConfig) -> Result<Config, ConfigErrors> {
    let mut errs = Errors::default();
    let mut c = Config::default();

    if let Some(addr) = &raw.server.listen_address {
        match addr.value.parse::<SocketAddr>() {
            Ok(a) => c.server.listen_address = a,
            Err(_) => errs.push(
                "server.listen_address",
                addr,
                format!(
                    "{:?} is not HOST:PORT with a numeric address (e.g. 127.0.0.1:9201)",
                    addr.value
                ),
            ),
        }
    }
    if let Some(n) = &raw.server.max_inflight_requests {
        if n.value == 0 {
            errs.push("server.max_inflight_requests", n, "must be at least 1");
        }
        c.server.max_inflight_requests = n.value;
    }
    if let Some(d) = raw.server.shutdown_grace_period {
        c.server.shutdown_grace = d.0;
    }
    if let Some(d) = raw.server.shutdown_drain_delay {
        c.server.shutdown_drain_delay = d.0;
    }

    validate_limits(&raw.limits, &mut c, &mut errs);
    server::validate(
        &raw.server,
        &mut c.server,
        c.limits.max_body_bytes,
        &mut errs,
    );

    if let Some(up) = &raw.upstream {
        c.routing = upstream::validate(&up.value, "upstream", &mut errs)
            .map(|u| std::sync::Arc::new(crate::route::Routing::single(u)));
    }
    c.relabel = relabel::validate(&raw.relabel_configs, "relabel_configs", &mut errs);
    match (&raw.upstream, &raw.upstreams) {
        (Some(up), Some(_)) => errs.push(
            "upstreams",
            up,
            "`upstream` and `upstreams` cannot both be set; list the single upstream under `upstreams`",
        ),
        (_, Some(ups)) => {
            let r = route::validate(ups, &raw.routes, raw.tenant_header.as_ref(), &mut errs);
            c.routing = Some(std::sync::Arc::new(r));
        }
        (_, None) => {
            if let Some(r) = raw.routes.first() {
                errs.push("routes", r, "routes need `upstreams:` to route to");
            }
            if let Some(t) = &raw.tenant_header {
                errs.push(
                    "tenant_header",
                    t,
                    "only used with `upstreams:`; a single `upstream:` has its own tenant_header",
                );
            }
        }
    }
    if let Some(g) = &raw.guard {
        c.guard = Some(guard::validate(g, &mut errs));
    }
    if let Some(s) = &raw.schema {
        c.schema = Some(schema::validate(s, &mut errs));
    }
    c.rules = rules::validate(raw.rules.as_ref(), &raw.rule_files, &mut errs);
    c.storage = storage::validate(raw.storage.as_ref(), &mut errs);

    errs.finish().map(|()| c)
}

fn validate_limits(raw: &RawLimits, c: &mut Config, errs: &mut Errors) {
    let positive = |errs: &mut Errors, path: &str, v: &Spanned<usize>| -> usize {
        if v.value == 0 {
            errs.push(path, v, "must be at least 1");
        }
        v.value
    };
    // 1 GiB: past that a single request would hold the process hostage.
    const MAX_BYTES: u64 = 1 << 30;
    let size = |errs: &mut Errors, path: &str, v: &Spanned<ByteSize>| -> usize {
        if v.value.0 == 0 || v.value.0 > MAX_BYTES {
            errs.push(path, v, "must be between 1 byte and 1GiB");
        }
        v.value.0.min(MAX_BYTES) as usize
    };
    let l = &mut c.limits;
    if let Some(v) = &raw.max_body_size {
        l.max_body_bytes = size(errs, "limits.max_body_size", v);
    }
    if let Some(v) = &raw.max_decoded_size {
        l.wire.max_decoded_bytes = size(errs, "limits.max_decoded_size", v);
    }
    if let Some(v) = &raw.max_series_per_request {
        l.wire.max_series = positive(errs, "limits.max_series_per_request", v);
    }
    if let Some(v) = &raw.max_labels_per_series {
        l.wire.max_labels_per_series = positive(errs, "limits.max_labels_per_series", v);
    }
    if let Some(v) = &raw.max_label_name_length {
        l.wire.max_label_name_bytes = positive(errs, "limits.max_label_name_length", v);
    }
    if let Some(v) = &raw.max_label_value_length {
        l.wire.max_label_value_bytes = positive(errs, "limits.max_label_value_length", v);
    }
    if let Some(v) = &raw.max_symbols_per_request {
        l.wire.max_symbols = positive(errs, "limits.max_symbols_per_request", v);
    }
    // A translated body may not outgrow what a sender may send decoded, unless told.
    l.wire.max_output_bytes = match &raw.max_output_size {
        Some(v) => size(errs, "limits.max_output_size", v),
        None => l.wire.max_decoded_bytes,
    };
}
