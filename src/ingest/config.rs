//! The HTTP server's validated settings (`server:`), as `config` builds them: the listener,
//! the processing permits, and the bounds that keep slow senders and connection floods from
//! locking real senders out (connections, header and protocol-detection time, bodies being
//! read and how fast they must arrive, HTTP/2 streams and keep-alive).

use std::net::SocketAddr;
use std::time::Duration;

/// The HTTP listener and what a connection or a request body may cost it.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerConfig {
    pub listen_address: SocketAddr,
    /// Complete write requests processed at once; more are answered 503 so the sender backs
    /// off. Bodies still arriving do not hold one (`max_body_bytes_reading` bounds those).
    pub max_inflight_requests: usize,
    /// How long to wait for in-flight requests on shutdown.
    pub shutdown_grace: Duration,
    /// On shutdown, how long `/-/ready` answers 503 while the listener still serves, so that
    /// a load balancer stops sending before connections are refused.
    pub shutdown_drain_delay: Duration,
    /// Open connections; a connection accepted beyond this is answered 503 and closed.
    pub max_connections: usize,
    /// Time from accepting a connection (or from the end of the previous HTTP/1 request) to
    /// its protocol being known and, for HTTP/1, the request headers read. Also how long an
    /// idle HTTP/1 keep-alive connection stays open.
    pub header_read_timeout: Duration,
    /// Bytes of request bodies buffered while still arriving, across every request. A body
    /// whose next bytes find no room waits up to `body_reading_wait`, then gets 503.
    pub max_body_bytes_reading: usize,
    pub body_reading_wait: Duration,
    /// Longest a body may take to arrive, however fast it flows.
    pub body_read_timeout: Duration,
    /// After `body_rate_grace_period` (stretched by up to half at random per body), a body
    /// must have arrived at this many bytes per second on average since its headers, or it
    /// is cut off with 408. 0 turns the check off.
    pub body_min_rate: u64,
    pub body_rate_grace_period: Duration,
    /// Streams one HTTP/2 connection may have open at once.
    pub http2_max_concurrent_streams: u32,
    /// HTTP/2 PING interval on a connection (`None`: no pings), and how long to wait for the
    /// answer before closing the connection.
    pub http2_keep_alive_interval: Option<Duration>,
    pub http2_keep_alive_timeout: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen_address: SocketAddr::from(([127, 0, 0, 1], 9201)),
            max_inflight_requests: 1024,
            shutdown_grace: Duration::from_secs(30),
            shutdown_drain_delay: Duration::from_secs(5),
            max_connections: 4096,
            header_read_timeout: Duration::from_secs(30),
            max_body_bytes_reading: 128 << 20,
            body_reading_wait: Duration::from_secs(1),
            body_read_timeout: Duration::from_secs(60),
            body_min_rate: 4 << 10,
            body_rate_grace_period: Duration::from_secs(5),
            http2_max_concurrent_streams: 100,
            http2_keep_alive_interval: Some(Duration::from_secs(30)),
            http2_keep_alive_timeout: Duration::from_secs(10),
        }
    }
}

impl ServerConfig {
    /// The settings bound when the server starts (the socket, the semaphores' sizes), by
    /// their YAML path, that differ between `self` and `new`: a reload cannot apply them.
    pub fn changed_needing_restart(&self, new: &ServerConfig) -> Vec<&'static str> {
        let mut changed = Vec::new();
        if new.listen_address != self.listen_address {
            changed.push("server.listen_address");
        }
        if new.max_inflight_requests != self.max_inflight_requests {
            changed.push("server.max_inflight_requests");
        }
        if new.max_connections != self.max_connections {
            changed.push("server.max_connections");
        }
        if new.max_body_bytes_reading != self.max_body_bytes_reading {
            changed.push("server.max_body_bytes_reading");
        }
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_settings_bound_at_start_need_a_restart() {
        let old = ServerConfig::default();
        let new = ServerConfig {
            max_connections: 10,
            max_body_bytes_reading: 1 << 30,
            header_read_timeout: Duration::from_secs(1),
            body_min_rate: 0,
            http2_max_concurrent_streams: 1,
            ..ServerConfig::default()
        };
        assert_eq!(
            old.changed_needing_restart(&new),
            ["server.max_connections", "server.max_body_bytes_reading"]
        );
        assert!(old.changed_needing_restart(&old.clone()).is_empty());
    }
}
