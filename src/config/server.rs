//! The `server:` section's bounds on slow senders and connection floods, validated into the
//! server's own `ServerConfig` (the listener address, permits and grace period are checked in
//! `validate`).

use std::time::Duration;

use serde_saphyr::{Location, Spanned};

use super::errors::Errors;
use super::raw::{ByteSize, RawServer};
use crate::duration::PromDuration;
use crate::ingest::ServerConfig;

/// Past this a single setting would let a sender hold the process hostage (as for `limits:`).
const MAX_BYTES: u64 = 1 << 30;

pub(super) fn validate(
    raw: &RawServer,
    c: &mut ServerConfig,
    max_body_bytes: usize,
    errs: &mut Errors,
) {
    let positive = |errs: &mut Errors, key: &str, d: &Spanned<PromDuration>| -> Duration {
        if d.value.0.is_zero() {
            errs.push(&format!("server.{key}"), d, "must be longer than 0s");
        }
        d.value.0
    };
    if let Some(n) = &raw.max_connections {
        if n.value == 0 {
            errs.push("server.max_connections", n, "must be at least 1");
        }
        c.max_connections = n.value;
    }
    if let Some(d) = &raw.header_read_timeout {
        c.header_read_timeout = positive(errs, "header_read_timeout", d);
    }
    if let Some(b) = &raw.max_body_bytes_reading {
        let ByteSize(n) = b.value;
        if n > MAX_BYTES {
            errs.push("server.max_body_bytes_reading", b, "must be at most 1GiB");
        }
        c.max_body_bytes_reading = n.min(MAX_BYTES) as usize;
    }
    // Checked against the default too: a raised max_body_size must still fit.
    if c.max_body_bytes_reading < max_body_bytes {
        let msg = format!(
            "{} bytes cannot hold one body of limits.max_body_size ({max_body_bytes} bytes); \
             raise it to at least that",
            c.max_body_bytes_reading
        );
        match &raw.max_body_bytes_reading {
            Some(b) => errs.push("server.max_body_bytes_reading", b, msg),
            None => errs.push(
                "server.max_body_bytes_reading",
                &Spanned::new((), Location::UNKNOWN, Location::UNKNOWN),
                format!("the default {msg}"),
            ),
        }
    }
    if let Some(d) = &raw.body_reading_wait {
        c.body_reading_wait = d.value.0;
    }
    if let Some(d) = &raw.body_read_timeout {
        c.body_read_timeout = positive(errs, "body_read_timeout", d);
    }
    if let Some(r) = &raw.body_min_rate {
        c.body_min_rate = r.value.0;
    }
    if let Some(d) = &raw.body_rate_grace_period {
        c.body_rate_grace_period = d.value.0;
    }
    if let Some(n) = &raw.http2_max_concurrent_streams {
        if n.value == 0 {
            errs.push(
                "server.http2_max_concurrent_streams",
                n,
                "must be at least 1",
            );
        }
        c.http2_max_concurrent_streams = n.value;
    }
    if let Some(d) = &raw.http2_keep_alive_interval {
        // 0s turns the pings off.
        c.http2_keep_alive_interval = (!d.value.0.is_zero()).then_some(d.value.0);
    }
    if let Some(d) = &raw.http2_keep_alive_timeout {
        c.http2_keep_alive_timeout = positive(errs, "http2_keep_alive_timeout", d);
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    #[test]
    fn reads_every_server_bound() {
        let c = Config::from_yaml(
            "server:\n  max_connections: 10\n  header_read_timeout: 2s\n  \
             max_body_bytes_reading: 64MiB\n  body_reading_wait: 250ms\n  \
             body_read_timeout: 5s\n  body_min_rate: 1KiB\n  body_rate_grace_period: 1s\n  \
             http2_max_concurrent_streams: 8\n  http2_keep_alive_interval: 0s\n  \
             http2_keep_alive_timeout: 3s\n",
        )
        .unwrap();
        let s = &c.server;
        assert_eq!(s.max_connections, 10);
        assert_eq!(s.header_read_timeout.as_secs(), 2);
        assert_eq!(s.max_body_bytes_reading, 64 << 20);
        assert_eq!(s.body_reading_wait.as_millis(), 250);
        assert_eq!(s.body_read_timeout.as_secs(), 5);
        assert_eq!(s.body_min_rate, 1024);
        assert_eq!(s.body_rate_grace_period.as_secs(), 1);
        assert_eq!(s.http2_max_concurrent_streams, 8);
        assert_eq!(s.http2_keep_alive_interval, None);
        assert_eq!(s.http2_keep_alive_timeout.as_secs(), 3);
    }

    #[test]
    fn names_every_bad_server_bound() {
        let e = Config::from_yaml(
            "server:\n  max_connections: 0\n  header_read_timeout: 0s\n  \
             max_body_bytes_reading: 1MiB\n  http2_max_concurrent_streams: 0\n  \
             body_read_timeout: 0s\n  http2_keep_alive_timeout: 0s\n",
        )
        .unwrap_err()
        .to_string();
        for key in [
            "line 2: server.max_connections: must be at least 1",
            "line 3: server.header_read_timeout: must be longer than 0s",
            "line 4: server.max_body_bytes_reading: 1048576 bytes cannot hold one body",
            "line 5: server.http2_max_concurrent_streams: must be at least 1",
            "line 6: server.body_read_timeout",
            "line 7: server.http2_keep_alive_timeout",
        ] {
            assert!(e.contains(key), "{key:?} not in:\n{e}");
        }
        // A larger body cap needs room to read such a body.
        let e = Config::from_yaml("limits:\n  max_body_size: 512MiB\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("server.max_body_bytes_reading: the default 134217728 bytes"),
            "{e}"
        );
    }
}
