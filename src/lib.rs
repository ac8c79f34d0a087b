//! cardguard: a cardinality-guarding Prometheus remote-write proxy.
//!
//! The data flow, one request at a time:
//!
//! ```text
//! ingest   HTTP server: method, size caps, Content-Type/Encoding, status mapping
//!   │      snappy block → decompressed buffer (declared length checked first)
//! wire     zero-copy reader: series views borrowing label bytes from that buffer
//!   │
//! pipeline the stage order: validate → relabel → schema → guard → rules' tap (buffer);
//!   │      where the guard reads labels first, it validates what it does not know itself
//!   │      each stage records its per-series decision in one `series::Decisions`
//!   │      → write out: unchanged request = the original compressed body; otherwise raw
//!   │        copies + re-encoded labels; with `routes:`, one body per upstream (`route`)
//! forward  pooled upstream client; acknowledge the sender only once upstream acknowledged
//! ```
//!
//! `series` is the per-series vocabulary the stages share (verdicts, drop reasons, rewritten
//! labels); `config` turns YAML and flags into validated, immutable settings swapped atomically
//! on reload; `rules` evaluates recording rules on the buffered stream and sends the results
//! upstream on its own schedule, and with `storage.path` its results and the guard's overflow
//! aggregates wait for the upstream in a queue on disk (`forward::queue`, `route::durable`);
//! `telemetry` owns cardguard's own `/metrics`; `status` the HTML status page at `/`; `storage`
//! snapshots the learned state into `storage.path` and restores it at start; `app` starts the
//! server and the supervised background tasks for `serve`,
//! `demo` and the tests; `demo` runs everything in-process; `ci` runs the same stages over an
//! exposition at merge time.
#![deny(unsafe_code)]

pub mod app;
pub mod ci;
pub mod config;
pub mod demo;
pub mod duration;
pub mod forward;
pub mod guard;
pub mod ingest;
pub mod logging;
pub mod pipeline;
mod probing;
pub mod relabel;
pub mod route;
pub mod rules;
pub mod schema;
pub mod series;
pub mod sink;
pub mod status;
pub mod storage;
pub mod telemetry;
pub mod wire;
