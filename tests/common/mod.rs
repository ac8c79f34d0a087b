//! Shared harness for cardguard's end-to-end and hostile-input tests.
//!
//! Everything here uses std threads and blocking IO (ureq) and binds 127.0.0.1 only. One module
//! per concern, all re-exported here so a test reads `use common::*;`:
//!
//! * [`process`]: peers, child processes, temp dirs, ports, polling.
//! * [`http`] / [`http_server`]: the client side and a tiny threaded server.
//! * [`scrape`]: scrape targets with known values; [`fake_upstream`]: a recording receiver.
//! * [`victoria`], [`prometheus`], [`cardguard`]: the real processes; [`stack`] wires them.
//! * [`compare`]: Prometheus's samples against a backend's; [`exposition`]: `/metrics` text.
//! * [`rw`]: remote-write 1.0 encoded by hand (no dependency on `cardguard::wire`).
//! * [`native`]: native histograms: the protobuf scrape format, remote-write histograms,
//!   histograms as the query API shows them.
//! * [`redis`]: Redis for replicas sharing budgets.
//! * [`tls`]: test certificates and VictoriaMetrics over HTTPS with basic auth.
//!
//! `CARDGUARD_E2E_DIRECT=1` makes the e2e tests point Prometheus straight at VictoriaMetrics
//! (a self-test of the harness; cardguard is then not exercised and a warning is printed).
#![allow(dead_code)]

pub mod cardguard;
pub mod compare;
pub mod exposition;
pub mod fake_upstream;
pub mod http;
pub mod http_server;
pub mod native;
pub mod process;
pub mod prometheus;
pub mod redis;
pub mod rw;
pub mod scrape;
pub mod stack;
pub mod tls;
pub mod victoria;

// Each test binary uses a different part of the harness.
#[allow(unused_imports)]
pub use cardguard::*;
#[allow(unused_imports)]
pub use compare::*;
#[allow(unused_imports)]
pub use exposition::*;
#[allow(unused_imports)]
pub use fake_upstream::*;
#[allow(unused_imports)]
pub use http::*;
#[allow(unused_imports)]
pub use http_server::*;
#[allow(unused_imports)]
pub use native::*;
#[allow(unused_imports)]
pub use process::*;
#[allow(unused_imports)]
pub use prometheus::*;
#[allow(unused_imports)]
pub use redis::*;
#[allow(unused_imports)]
pub use scrape::*;
#[allow(unused_imports)]
pub use stack::*;
#[allow(unused_imports)]
pub use tls::*;
#[allow(unused_imports)]
pub use victoria::*;
