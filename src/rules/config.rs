//! The recording rules' validated settings and loaded groups, as `config::rules` builds them
//! from `rule_files:` and `rules:`; and what the rule tasks read from the config in force.

use std::sync::Arc;
use std::time::Duration;

use super::file::RuleGroup;
use crate::route::Routing;

/// Recording rules: settings and the groups loaded from the rule files.
#[derive(Debug, Clone, PartialEq)]
pub struct RulesConfig {
    /// For groups that set no `interval` (Prometheus's `global.evaluation_interval`).
    pub evaluation_interval: Duration,
    /// For groups that set no `query_offset`: how far behind the clock a group evaluates, so
    /// that samples still in flight through remote write (queueing, batching, retries) are
    /// in the buffers when their timestamp is evaluated.
    pub query_offset: Duration,
    /// Series the buffers may hold; new ones beyond it are not buffered (counted, logged).
    pub max_buffered_series: usize,
    /// Samples kept per buffered series at most (oldest go first, counted).
    pub max_samples_per_series: usize,
    /// Recorded samples waiting to go upstream; beyond it new results are dropped (counted).
    pub max_output_queue_samples: usize,
    /// Bytes of labels of all buffered series; new series beyond it are not buffered.
    pub max_buffered_label_bytes: usize,
    /// Bytes of recorded series waiting to go upstream; beyond it new results are dropped.
    pub max_output_queue_bytes: usize,
    /// `rule_files:` as written (globs, relative to the config file).
    pub rule_files: Vec<String>,
    /// The loaded groups, in file order then group order.
    pub groups: Arc<Vec<Arc<RuleGroup>>>,
}

impl Default for RulesConfig {
    fn default() -> Self {
        RulesConfig {
            evaluation_interval: Duration::from_secs(60),
            query_offset: Duration::from_secs(30),
            max_buffered_series: 1_000_000,
            max_samples_per_series: 4096,
            max_output_queue_samples: 1_000_000,
            max_buffered_label_bytes: 256 << 20,
            max_output_queue_bytes: 64 << 20,
            rule_files: Vec::new(),
            groups: Arc::new(Vec::new()),
        }
    }
}

/// What the rule tasks read from the config in force on every round. The server's config
/// implements it, so the rules see a reload without depending on the config's whole shape.
pub trait InForce: Send + Sync + 'static {
    fn rules(&self) -> &RulesConfig;
    /// Where recorded series go: routed like any other series. `None`: no upstream.
    fn routing(&self) -> Option<&Arc<Routing>>;
}
