//! Recording rules on the stream: rule files, the buffers that feed them, group evaluation,
//! and the recorded series sent upstream.
//!
//! ```text
//! config    settings and loaded groups (built by `config::rules`)
//! file      rule files → checked, compiled groups (at config load)
//! plan      the selectors of every rule, indexed by metric name
//! tap       pipeline hook: admitted series a selector matches → buffer (maybe withheld)
//! buffer    per-series rings of recent samples; the engine's Storage
//! group     one group at one timestamp: rename, labels, limit, stale markers
//! runtime   the evaluator task (aligned ticks), group states across reloads
//! output    bounded queue → batched remote-write requests upstream, retried
//! promql    the engine (instant queries with Prometheus 3 semantics)
//! ```

pub mod buffer;
mod config;
pub mod file;
pub mod group;
pub mod metrics;
pub mod output;
pub mod plan;
pub mod promql;
pub mod runtime;
pub mod tap;

pub use config::{InForce, RulesConfig};
pub use runtime::Runtime;
