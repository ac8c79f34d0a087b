//! cardguard's own series (recorded rule results) through the routes, like any sender's: a
//! recorded `slo="true"` series goes wherever a scraped one with that label would, with the
//! route's relabeling and downsampling.

use std::sync::Arc;

use bytes::Bytes;

use super::split::{split, Plan, Scratch};
use super::Downsampler;
use super::Routing;
use crate::forward::{ForwardError, Forwarder};
use crate::series::Decisions;
use crate::wire::{self, Limits, Parsed, Version};

/// What one routed send delivered.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Delivered {
    /// Upstreams that received a part.
    pub parts: usize,
    /// Series no route took (several upstreams and no catch-all route for them).
    pub unrouted: u64,
}

/// Route a snappy-compressed v1 body of cardguard's own making and send every part; `Ok` only
/// when every upstream that got a part acknowledged it. The downsampling decisions are
/// committed then, so a retry of the same body decides the same.
pub async fn send_own(
    forwarder: &Forwarder,
    routing: &Arc<Routing>,
    downsampler: &Downsampler,
    body: Bytes,
    now_ms: i64,
) -> Result<Delivered, ForwardError> {
    let routed = {
        let mut decoded = Vec::new();
        let mut parsed = Parsed::new();
        let limits = Limits::default();
        // Our own encoder made this body: a failure here is a bug, reported as one.
        let invalid = |e: wire::WireError| ForwardError::Transport {
            upstream: "(routing)".into(),
            reason: format!("cardguard's own series do not decode: {e}"),
        };
        wire::snappy::decompress(&body, usize::MAX, &mut decoded).map_err(invalid)?;
        parsed
            .parse(&decoded, Version::V1, &limits)
            .map_err(invalid)?;
        let plan = Plan {
            routing,
            tenant: None,
            downsampler,
        };
        // Nothing decided: every series goes to the routes as it is.
        let decisions = Decisions::default();
        split(
            &plan,
            &body,
            &parsed,
            &decoded,
            &decisions,
            &mut Scratch::default(),
        )
    };
    let results = super::send::send_all(forwarder, routing, &routed.parts, None).await;
    let failures: Vec<ForwardError> = results.into_iter().filter_map(Result::err).collect();
    if let Some(e) = super::send::answer(failures) {
        return Err(e);
    }
    downsampler.commit(&routed.pending, now_ms);
    Ok(Delivered {
        parts: routed.parts.len(),
        unrouted: routed.unrouted,
    })
}
