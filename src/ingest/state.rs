//! What every request handler shares: the current config (swapped whole on reload), the
//! upstream client, every stage's metrics and the in-flight limit.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use tokio::sync::{Mutex, Semaphore};

use super::metrics::Metrics;
use crate::config::{Config, ConfigErrors, Overrides};
use crate::forward::queue::DiskQueue;
use crate::forward::Forwarder;
use crate::guard::metrics::GuardMetrics;
use crate::guard::Guard;
use crate::telemetry::Telemetry;

/// Where the config comes from, so a reload can build it again the same way.
#[derive(Debug, Clone, Default)]
pub struct ConfigSource {
    pub file: Option<PathBuf>,
    pub overrides: Overrides,
    /// `--web.config.file` and `--web.enable-lifecycle`.
    pub web: super::web::WebSource,
}

impl ConfigSource {
    pub fn load(&self) -> Result<Config, ConfigErrors> {
        Config::load_with(self.file.as_deref(), &self.overrides)
    }
}

pub struct State {
    config: Arc<ArcSwap<Config>>,
    source: ConfigSource,
    pub forwarder: Forwarder,
    /// The registry `/metrics` encodes.
    pub telemetry: Telemetry,
    /// Every stage's metrics but the rules' (`rules.metrics`) and the guard's report (a
    /// collector in the registry), registered in `telemetry`.
    pub metrics: Metrics,
    /// Admission state; lives across reloads.
    pub guard: Arc<Guard>,
    /// Recording rules: buffers (live across reloads), plan, evaluator and output.
    pub rules: Arc<crate::rules::Runtime>,
    /// Per-route downsampling state (`min_interval`); lives across reloads.
    pub downsampler: Arc<crate::route::Downsampler>,
    /// Permits for write requests being processed; sized from the config at start.
    pub inflight: Arc<Semaphore>,
    /// Room for bodies still arriving (`server.max_body_bytes_reading`); sized at start.
    pub reading: super::body::Reading,
    ready: AtomicBool,
    /// Serialises reloads (SIGHUP and /-/reload may race); never held on the write path.
    reload_lock: Mutex<()>,
    /// Loads of the config so far (1 at start); stamped on each as its generation.
    generation: std::sync::atomic::AtomicU64,
    /// Recent counter snapshots for the status page's rates.
    pub status: crate::status::History,
    /// TLS, authentication and the lifecycle flag (`--web.*`).
    pub web: super::web::Web,
    /// Saves the guard, downsampling and rule state into `storage.path` and restores it.
    pub snapshotter: Arc<crate::storage::Snapshotter>,
    /// The durable queue for cardguard's own output (`storage.path`); `None`: in memory.
    pub queue: Option<Arc<DiskQueue>>,
}

impl State {
    pub fn new(
        config: Config,
        source: ConfigSource,
        telemetry: Telemetry,
        web: super::web::Web,
    ) -> Arc<Self> {
        Self::with_queue(config, source, telemetry, web, None)
    }

    /// `new`, with cardguard's own output going through `queue` (opened on `telemetry`'s
    /// registry) instead of memory.
    pub fn with_queue(
        mut config: Config,
        source: ConfigSource,
        telemetry: Telemetry,
        web: super::web::Web,
        queue: Option<Arc<DiskQueue>>,
    ) -> Arc<Self> {
        stamp(&mut config, 1);
        let rules = Arc::new(crate::rules::Runtime::new(telemetry.registry()));
        rules.configure(&config.rules);
        if let Some(q) = &queue {
            rules.output.set_durable(q.clone());
        }
        let metrics = Metrics::register(telemetry.registry());
        metrics.ingest.reload_success.set(1);
        metrics.ingest.reload_timestamp.set(unix_now());
        metrics.server.set_limits(&config.server);
        let config = Arc::new(ArcSwap::from_pointee(config));
        let guard = Arc::new(Guard::new());
        let downsampler = Arc::new(crate::route::Downsampler::default());
        let storage_path = config.load().storage.path.clone();
        let snapshotter = Arc::new(crate::storage::Snapshotter::new(
            storage_path.as_deref(),
            crate::storage::Parts {
                config: config.clone(),
                guard: guard.clone(),
                rules: rules.clone(),
                downsampler: downsampler.clone(),
            },
            telemetry.registry(),
        ));
        let (max_inflight, max_reading) = {
            let c = config.load();
            (
                c.server.max_inflight_requests,
                c.server.max_body_bytes_reading,
            )
        };
        let state = Arc::new(State {
            inflight: Arc::new(Semaphore::new(max_inflight)),
            reading: super::body::Reading::new(max_reading),
            config,
            source,
            forwarder: Forwarder::new(metrics.forward.clone()),
            telemetry,
            metrics,
            guard,
            rules,
            downsampler,
            ready: AtomicBool::new(false),
            reload_lock: Mutex::new(()),
            generation: std::sync::atomic::AtomicU64::new(1),
            status: crate::status::History::default(),
            web,
            snapshotter,
            queue,
        });
        // The guard report is gathered from the state on each scrape; through a weak handle,
        // so that the registry does not keep the state alive.
        let weak = Arc::downgrade(&state);
        GuardMetrics::register(state.telemetry.registry(), move || {
            weak.upgrade().and_then(|s| s.guard_report())
        });
        state
    }

    /// The guard's report under the config in force, if a guard is configured.
    pub fn guard_report(&self) -> Option<crate::guard::report::Report> {
        self.config().guard.as_ref().map(|g| self.guard.report(g))
    }

    /// The config file reloads read, if any.
    pub fn config_file(&self) -> Option<&std::path::Path> {
        self.source.file.as_deref()
    }

    /// The config in force now. Cheap; take it once per request and use that snapshot.
    pub fn config(&self) -> Arc<Config> {
        self.config.load_full()
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Build the config again from its source and swap it in. On failure the old config stays,
    /// the error is logged and `cardguard_config_last_reload_successful` drops to 0.
    pub async fn reload(&self) -> Result<(), ConfigErrors> {
        let _guard = self.reload_lock.lock().await;
        // The web config has its own file, watched on its own; a reload looks at it now too.
        // Its failure is logged and counted there and does not fail the reload of the config.
        let _ = self.web.check_now();
        match self.source.load().and_then(|c| self.check_reloadable(c)) {
            Ok(mut new) => {
                let next = self.generation.fetch_add(1, Ordering::AcqRel) + 1;
                stamp(&mut new, next);
                self.rules.configure(&new.rules);
                self.metrics.server.set_limits(&new.server);
                if new.server != self.config.load().server {
                    tracing::info!("server: settings changed; timeouts and HTTP/2 settings apply to connections opened from now on, body limits to requests from now on");
                }
                self.config.store(Arc::new(new));
                self.metrics.ingest.reload_success.set(1);
                self.metrics.ingest.reload_timestamp.set(unix_now());
                tracing::info!(file = ?self.source.file, "configuration reloaded");
                Ok(())
            }
            Err(e) => {
                self.metrics.ingest.reload_success.set(0);
                tracing::error!("configuration reload failed, keeping the previous one:\n{e}");
                Err(e)
            }
        }
    }

    /// Settings bound at start (the listener, the permits, the connection and reading caps)
    /// cannot change on a reload; say so instead of silently ignoring the new value.
    fn check_reloadable(&self, new: Config) -> Result<Config, ConfigErrors> {
        let old = self.config.load();
        let mut errors = old.server.changed_needing_restart(&new.server);
        if old.storage.path != new.storage.path {
            errors.push("storage.path");
        }
        if old.storage.max_queue_bytes != new.storage.max_queue_bytes {
            errors.push("storage.max_queue_bytes");
        }
        if errors.is_empty() {
            return Ok(new);
        }
        Err(ConfigErrors {
            file: self.source.file.as_ref().map(|p| p.display().to_string()),
            errors: errors
                .into_iter()
                .map(|path| crate::config::ConfigError {
                    path: path.into(),
                    line: None,
                    message: "changes to this setting need a restart".into(),
                })
                .collect(),
        })
    }
}

/// Slide the guard's window for every owner, idle ones included, and sample the counters for
/// the status page's rates. Runs until the process ends.
pub async fn guard_ticker(state: Arc<State>) {
    let mut every = tokio::time::interval(std::time::Duration::from_secs(10));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        every.tick().await;
        let config = state.config();
        if let Some(g) = &config.guard {
            state.guard.tick(g, unix_now_ms());
        }
        crate::status::observe(&state);
    }
}

/// Keep this replica joined to the shared budgets (`guard.shared`): every second, find Redis
/// again when it was away and fetch the global counts the report shows.
pub async fn shared_maintainer(state: Arc<State>) {
    let mut every = tokio::time::interval(std::time::Duration::from_secs(1));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        every.tick().await;
        let config = state.config();
        if let Some(g) = &config.guard {
            state.guard.maintain_shared(g, unix_now_ms()).await;
        }
    }
}

/// Forget downsampling state of series idle for twice the longest `min_interval` (at least
/// 10 minutes), so that state follows the live series and not every series ever seen.
pub async fn downsample_janitor(state: Arc<State>) {
    let mut every = tokio::time::interval(std::time::Duration::from_secs(60));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        every.tick().await;
        let config = state.config();
        let longest = config
            .routing
            .iter()
            .flat_map(|r| r.routes.iter().filter_map(|rt| rt.min_interval))
            .max()
            .unwrap_or_default();
        let idle = (longest * 2).max(std::time::Duration::from_secs(600));
        state
            .downsampler
            .evict_idle(unix_now_ms() - idle.as_millis() as i64);
        state
            .metrics
            .forward
            .downsample_series
            .set(state.downsampler.len() as i64);
    }
}

/// Send the overflow aggregates of `relabel` budgets through the routes every flush interval.
/// A flush the upstreams do not all take is sent again at the next interval (the aggregates
/// are cumulative). With a durable queue each flush is queued there instead, and sent from it.
pub async fn overflow_flusher(state: Arc<State>) {
    let mut scratch = crate::route::own::Scratch::default();
    loop {
        let config = state.config();
        let interval = config
            .guard
            .as_ref()
            .map_or(std::time::Duration::from_secs(30), |g| {
                g.overflow_flush_interval
            });
        tokio::time::sleep(interval).await;
        flush_overflow(&state, &config, &mut scratch).await;
    }
}

/// One flush: the aggregates changed since the last one, sent through the routes, one send
/// per tenant with its tenant header. A tenant whose send fails is flushed again next time,
/// the others are done.
pub(crate) async fn flush_overflow(
    state: &State,
    config: &Config,
    scratch: &mut crate::route::own::Scratch,
) {
    let (Some(g), Some(routing)) = (&config.guard, &config.routing) else {
        return;
    };
    let now = unix_now_ms();
    let flushed = state
        .guard
        .overflow
        .flush_keyed(now, g.window.as_millis() as i64);
    let mut by_tenant: std::collections::BTreeMap<Option<String>, (Vec<u64>, Vec<_>)> =
        Default::default();
    for f in flushed {
        let (keys, series) = by_tenant.entry(f.tenant).or_default();
        keys.push(f.key);
        series.push(f.series);
    }
    for (tenant, (keys, series)) in by_tenant {
        if let Some(q) = &state.queue {
            let record = crate::route::durable::OwnRecord {
                kind: crate::route::durable::Kind::Overflow,
                tenant,
                series,
            };
            if let Err(e) = crate::route::durable::queue(q, &record) {
                tracing::warn!("overflow aggregates not queued, retrying next flush: {e}");
                state.guard.overflow.requeue(keys.into_iter());
            }
            continue;
        }
        let sent = crate::route::own::send(
            &state.forwarder,
            routing,
            &state.downsampler,
            &series,
            tenant.as_deref(),
            now,
            scratch,
        )
        .await;
        match sent {
            Ok(delivered) => state.metrics.forward.forwarded.add(&delivered.forwarded),
            Err(e) => {
                tracing::warn!(
                    tenant = tenant.as_deref().unwrap_or(""),
                    "overflow aggregates not delivered, retrying next flush: {e}"
                );
                state.guard.overflow.requeue(keys.into_iter());
            }
        }
    }
}

/// Write a snapshot every `storage.snapshot_interval`. Runs until the process ends.
pub async fn snapshotter(state: Arc<State>) {
    let s = state.clone();
    crate::storage::snapshot_task(state.snapshotter.clone(), move || s.config()).await;
}

/// Evaluate the recording rules on their ticks; their results go to the output queue. Runs
/// until the process ends.
pub async fn rule_evaluator(state: Arc<State>) {
    let s = state.clone();
    state
        .rules
        .clone()
        .run_evaluator(move || s.config(), unix_now_ms)
        .await;
}

/// Send the recorded series from the output queue upstream, through the routes. With a durable
/// queue, send what it holds (recorded series and overflow aggregates) instead. Runs until
/// the process ends.
pub async fn rule_sender(state: Arc<State>) {
    let s = state.clone();
    if let Some(q) = &state.queue {
        let metrics = crate::route::durable::SenderMetrics {
            rules: state.rules.metrics.clone(),
            forward: state.metrics.forward.clone(),
        };
        return crate::route::durable::run(
            q.clone(),
            state.forwarder.clone(),
            move || s.config(),
            metrics,
            state.downsampler.clone(),
        )
        .await;
    }
    state
        .rules
        .output
        .clone()
        .run(
            state.forwarder.clone(),
            move || s.config(),
            state.rules.metrics.clone(),
            state.downsampler.clone(),
        )
        .await;
}

pub fn unix_now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Mark a freshly loaded config with its generation (it only grows).
fn stamp(config: &mut Config, next: u64) {
    if let Some(g) = &mut config.guard {
        g.generation = next;
    }
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
