//! Where accepted data goes: one upstream's validated settings, as `config` builds them from
//! `upstream:` or an entry of `upstreams:`.

use std::time::Duration;

use http::{HeaderName, HeaderValue, Uri};

use crate::wire::Version;

/// One upstream.
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamConfig {
    /// A short name used in logs and metric labels.
    pub name: String,
    pub url: Uri,
    pub version: Version,
    pub timeout: Duration,
    /// Sent with every request (Authorization, a fixed X-Scope-OrgID, ...).
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Copied from the incoming request to the upstream one when present and not fixed by
    /// `headers`.
    pub tenant_header: Option<HeaderName>,
}
