//! The process's lifecycle. `App` owns what runs while cardguard runs: it builds the shared
//! state from a validated config, binds (or takes) the listener, starts the HTTP server and
//! every background task, keeps their handles, supervises the tasks and shuts everything down
//! in order. `serve`, `demo` and the in-process tests all start cardguard through it, so they
//! run the same process.

mod supervisor;

use std::net::SocketAddr;
use std::sync::Arc;

use prometheus::{IntCounterVec, Registry};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use supervisor::{Backoff, Supervisor};

use crate::config::Config;
use crate::ingest::{self, ConfigSource, State};
use crate::telemetry::{counter_vec, Telemetry};

/// The background tasks, by the name they carry in logs and in
/// `cardguard_task_restarts_total{task}`.
pub const TASKS: [&str; 6] = [
    "guard_ticker",
    "downsample_janitor",
    "overflow_flusher",
    "rule_evaluator",
    "rule_sender",
    "snapshotter",
];

/// The task that keeps a replica joined to the shared budgets (only with `guard.shared`).
pub const SHARED_TASK: &str = "shared_admission";

/// Why cardguard could not start.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("listening on {addr}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("reading the listener's address")]
    LocalAddr(#[source] std::io::Error),
    /// `guard.shared`: another `hash_seed` is recorded in Redis (or the client could not be
    /// built).
    #[error("guard.shared: {0}")]
    Shared(#[from] crate::guard::shared::SharedError),
    #[error("invalid web config (--web.config.file)")]
    WebConfig(#[from] crate::ingest::web::WebConfigErrors),
    #[error("opening the durable queue")]
    Queue(#[source] crate::forward::queue::QueueError),
}

/// What runs at shutdown once the queue holds everything: the final snapshot (see
/// `App::set_final_snapshot`).
pub type FinalSnapshot = Box<dyn FnOnce(&State) + Send>;

/// The process's own metrics: its background tasks.
#[derive(Clone)]
pub struct AppMetrics {
    /// Background tasks started again after they panicked or ended, by task.
    pub task_restarts: IntCounterVec,
}

impl AppMetrics {
    pub fn register(r: &Registry) -> Self {
        AppMetrics {
            task_restarts: counter_vec(
                r,
                "cardguard_task_restarts_total",
                "Background tasks restarted after they panicked or ended, by task.",
                &["task"],
            ),
        }
    }
}

/// A running cardguard: the HTTP server and the supervised background tasks over one
/// `State`. Dropping it stops everything too, without waiting; `shutdown` is the orderly way.
pub struct App {
    state: Arc<State>,
    addr: SocketAddr,
    /// Tells the server to stop accepting; dropping it does too.
    stop_server: watch::Sender<bool>,
    /// `None` once it has ended (see `server_ended`).
    server: Option<JoinHandle<()>>,
    tasks: Supervisor,
    final_snapshot: Option<FinalSnapshot>,
}

impl App {
    /// Restore the saved state (`storage.path`), then bind `server.listen_address` and
    /// start: nothing is accepted before the state is back.
    pub async fn start(config: Config, source: ConfigSource) -> Result<App, AppError> {
        let addr = config.server.listen_address;
        // A replica whose seed differs from the one its peers recorded in Redis refuses to
        // start: its series ids would never match theirs.
        if let Some(g) = &config.guard {
            if let Some(sh) = &g.shared {
                crate::guard::shared::check_seed_at_start(sh, g.hash_seed).await?;
            }
        }
        let state = restored_state(config, source)?;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| AppError::Bind { addr, source })?;
        App::start_state(state, listener, Backoff::default())
    }

    /// Start on a listener the caller bound (an ephemeral port in tests, the demo's own
    /// error message). Must be called within a tokio runtime.
    pub fn start_on(
        config: Config,
        source: ConfigSource,
        listener: TcpListener,
    ) -> Result<App, AppError> {
        App::start_with(config, source, listener, Backoff::default())
    }

    fn start_with(
        config: Config,
        source: ConfigSource,
        listener: TcpListener,
        backoff: Backoff,
    ) -> Result<App, AppError> {
        App::start_state(restored_state(config, source)?, listener, backoff)
    }

    /// Start serving `state` (already restored) on `listener`; `/-/ready` turns 200 once the
    /// server runs.
    fn start_state(
        state: Arc<State>,
        listener: TcpListener,
        backoff: Backoff,
    ) -> Result<App, AppError> {
        let addr = listener.local_addr().map_err(AppError::LocalAddr)?;
        let metrics = AppMetrics::register(state.telemetry.registry());
        let mut tasks = Supervisor::new(metrics.task_restarts, backoff);
        start_tasks(&mut tasks, &state);
        if let Some(g) = state.config().guard.as_ref() {
            if let Some(sh) = &g.shared {
                let shared = crate::guard::shared::Shared::new(
                    sh.clone(),
                    g.hash_seed,
                    state.telemetry.registry(),
                )?;
                state.guard.attach_shared(shared);
                let s = state.clone();
                tasks.spawn(SHARED_TASK, move || ingest::shared_maintainer(s.clone()));
            }
        }
        let (stop_server, stop) = watch::channel(false);
        let server = tokio::spawn(ingest::serve(state.clone(), listener, stopped(stop)));
        Ok(App {
            state,
            addr,
            stop_server,
            server: Some(server),
            tasks,
            final_snapshot: None,
        })
    }

    /// Run `f` at the end of `shutdown`, after the last overflow flush went into the durable
    /// queue and before the queue is synced: where the final snapshot is written.
    pub fn set_final_snapshot(&mut self, f: FinalSnapshot) {
        self.final_snapshot = Some(f);
    }

    pub fn state(&self) -> &Arc<State> {
        &self.state
    }

    /// Where the server listens (the bound port when started on port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Resolves if the HTTP server ends on its own, which only a bug makes it do (it runs
    /// until `shutdown`); never resolves otherwise.
    pub async fn server_ended(&mut self) {
        let Some(server) = &mut self.server else {
            return std::future::pending().await;
        };
        let ended = server.await;
        self.server = None;
        match ended {
            Ok(()) => tracing::error!("the HTTP server stopped on its own"),
            Err(e) => tracing::error!("the HTTP server failed: {e}"),
        }
    }

    /// The orderly stop: `/-/ready` answers 503 while the server keeps serving for
    /// `server.shutdown_drain_delay` (a load balancer stops sending), then it stops accepting
    /// and gives in-flight requests up to `server.shutdown_grace_period`; the background tasks
    /// stop, the overflow aggregates go into the durable queue (recorded results are there
    /// already), the final snapshot is written and the queue synced to disk.
    pub async fn shutdown(mut self) {
        self.state.set_ready(false);
        let drain = self.state.config().server.shutdown_drain_delay;
        if !drain.is_zero() {
            tracing::info!("shutting down: not ready; serving for {drain:?} more (server.shutdown_drain_delay)");
            tokio::select! {
                () = tokio::time::sleep(drain) => {}
                () = self.server_ended() => {}
            }
        }
        let _ = self.stop_server.send(true);
        if let Some(server) = self.server.take() {
            if let Err(e) = server.await {
                tracing::error!("the HTTP server failed while shutting down: {e}");
            }
        }
        self.tasks.shutdown().await;
        if self.state.queue.is_some() {
            let config = self.state.config();
            let mut scratch = crate::route::own::Scratch::default();
            ingest::flush_overflow(&self.state, &config, &mut scratch).await;
        }
        if let Some(f) = self.final_snapshot.take() {
            f(&self.state);
        }
        write_final_snapshot(&self.state).await;
        if let Some(q) = &self.state.queue {
            match q.sync() {
                Ok(()) => tracing::info!(
                    records = q.len(),
                    "durable queue synced; unsent records go out after the restart"
                ),
                Err(e) => tracing::error!("syncing the durable queue at shutdown: {e}"),
            }
        }
    }
}

/// The last snapshot, once requests and background tasks are done changing the state.
async fn write_final_snapshot(state: &State) {
    if state.snapshotter.enabled() {
        // Logged and counted inside on failure; the previous snapshot is still on disk.
        let _ = state.snapshotter.write_now().await;
    }
}

/// The shared state, with what `storage.path` saved put back and the durable queue open.
/// Before any request: the restore runs once, on this thread, while nothing else touches the
/// state.
fn restored_state(config: Config, source: ConfigSource) -> Result<Arc<State>, AppError> {
    let telemetry = Telemetry::new();
    let web = crate::ingest::web::Web::new(&source.web, telemetry.registry())?;
    let queue = open_queue(&config.storage, &telemetry)?;
    let state = State::with_queue(config, source, telemetry, web, queue);
    state.snapshotter.restore();
    Ok(state)
}

/// The durable queue in `storage.path`, if set.
fn open_queue(
    storage: &crate::config::storage::StorageConfig,
    telemetry: &Telemetry,
) -> Result<Option<Arc<crate::forward::queue::DiskQueue>>, AppError> {
    use crate::forward::queue::{DiskQueue, QueueMetrics, QueueOptions};
    let Some(dir) = storage.queue_dir() else {
        tracing::info!("no storage.path: cardguard's own output (overflow aggregates, recorded rule results) is queued in memory only and lost on restart");
        return Ok(None);
    };
    let metrics = QueueMetrics::register(telemetry.registry());
    let q = DiskQueue::open(&dir, QueueOptions::new(storage.max_queue_bytes), metrics)
        .map_err(AppError::Queue)?;
    Ok(Some(Arc::new(q)))
}

/// Every background task, under supervision. The functions themselves live with the state
/// they work on.
fn start_tasks(tasks: &mut Supervisor, state: &Arc<State>) {
    let [ticker, janitor, flusher, evaluator, sender, snapshots] = TASKS;
    let s = state.clone();
    tasks.spawn(ticker, move || ingest::guard_ticker(s.clone()));
    let s = state.clone();
    tasks.spawn(janitor, move || ingest::downsample_janitor(s.clone()));
    let s = state.clone();
    tasks.spawn(flusher, move || ingest::overflow_flusher(s.clone()));
    let s = state.clone();
    tasks.spawn(evaluator, move || ingest::rule_evaluator(s.clone()));
    let s = state.clone();
    tasks.spawn(sender, move || ingest::rule_sender(s.clone()));
    let s = state.clone();
    tasks.spawn(snapshots, move || ingest::snapshotter(s.clone()));
}

async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

#[cfg(test)]
mod tests;
