//! Budgets shared by several replicas through Redis (`guard.shared`): the connection, the
//! admission script, the replicas' agreement on `hash_seed`, the fallback while Redis is away,
//! and the global counts the report shows.
//!
//! Only series new to this replica leave the process: the guard asks Redis about all of a
//! request's new series in one script call (`admit.lua`), grouped by owner, and waits for the
//! answer; series first seen again in a slice are told to Redis without waiting (`refresh`).
//! When a call fails or times out, the request is decided locally against `budget /
//! replicas_hint` and the replica stays local until `maintain` finds Redis again, agrees on
//! the seed and has told Redis every series it holds (so the global count is exact again
//! before Redis decides anything).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus::{Histogram, IntCounter, IntCounterVec, IntGauge, Registry};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::window::Window;
use super::{GuardConfig, OwnerKey, SharedConfig};
use crate::series::Reason;
use crate::telemetry::{counter, counter_vec, gauge, histogram};

mod admit;

const SCRIPT: &str = include_str!("shared/admit.lua");

/// Refreshes sent without waiting that may be in flight at once; past it a refresh is
/// skipped (the next slice's refresh, or a rejoin, tells Redis again).
const MAX_REFRESHES_IN_FLIGHT: usize = 64;
/// Idle blocking connections kept for requests that wait on Redis; more requests waiting at
/// once open more, closed after use.
const MAX_IDLE_BLOCKING: usize = 8;
/// Series per script call when a replica tells Redis everything it holds.
pub const RESYNC_CHUNK: usize = 5_000;

/// Why a call to Redis did not decide.
#[derive(Debug, thiserror::Error)]
pub enum SharedError {
    #[error("Redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("Redis did not answer within {0:?}")]
    Timeout(Duration),
    #[error("no multi-threaded runtime to wait for Redis on")]
    NoRuntime,
    #[error("Redis answered {got} verdicts for {sent} series")]
    Short { sent: usize, got: usize },
    #[error(
        "this replica's guard.hash_seed ({ours}) differs from the one the other replicas use \
         ({theirs}, Redis key {key}): its series ids would not match theirs, so it does not \
         join the shared budgets; give every replica the same guard.hash_seed"
    )]
    SeedMismatch {
        ours: u64,
        theirs: String,
        key: String,
    },
}

/// What a series' verdict from Redis means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    Admitted,
    /// Refused for this reason (a `warn` budget recorded it anyway).
    Refused(Reason),
}

impl Answer {
    fn from_code(code: i64) -> Answer {
        match code {
            2 => Answer::Refused(Reason::MetricBudget),
            3 => Answer::Refused(Reason::LabelLimit),
            4 => Answer::Refused(Reason::GlobalCap),
            c if c > 0 => Answer::Refused(Reason::Budget),
            _ => Answer::Admitted,
        }
    }
}

/// How a series goes to the script.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Redis decides; a refusal records nothing.
    Decide,
    /// Redis decides, and records it even when refused (action `warn`).
    DecideRecord,
    /// Already admitted here: keep its slot, last seen in `slice`.
    Refresh(u64),
}

/// The keys of one owner, built once per owner per call.
pub struct OwnerKeys {
    part: String,
    series: String,
    /// `x ^ owner_hash` is a series' member in the global set.
    owner_hash: u64,
}

impl OwnerKeys {
    pub fn new(key: &OwnerKey) -> Self {
        let esc = |v: Option<&str>| match v {
            None => "-".to_string(),
            Some(v) => v.replace('%', "%25").replace(':', "%3A"),
        };
        let part = format!(
            "{}:{}",
            esc(key.tenant.as_deref()),
            esc(key.owner.as_deref())
        );
        OwnerKeys {
            series: format!("s:{part}"),
            owner_hash: xxhash_rust::xxh3::xxh3_64(part.as_bytes()),
            part,
        }
    }
}

/// One script call being built: `EVALSHA` and the arguments of `admit.lua`, written straight
/// into the command's one buffer (numbers formatted in place, key suffixes through one reused
/// string), so that a request's hundreds of new series cost no allocation each.
pub struct Call {
    cmd: redis::Cmd,
    suffix: String,
    /// Whether the current owner has a global cap (its series carry a global member).
    global: bool,
    series: usize,
    /// Series Redis decides (`Decide`, `DecideRecord`): the script answers these alone.
    decided: usize,
    /// The last `Refresh` slice and its tag.
    refresh_tag: (Option<u64>, String),
    slice: u64,
}

impl Call {
    fn new(hash: &str, cfg: &SharedConfig, window: &Window, slice_ms: u64, now: u64) -> Self {
        let oldest = (now + 1).saturating_sub(u64::from(window.slices()));
        let ttl = slice_ms * (u64::from(window.slices()) + 1);
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(hash)
            .arg(0)
            .arg(cfg.key_prefix.as_str())
            .arg(now)
            .arg(oldest)
            .arg(ttl);
        Call {
            cmd,
            suffix: String::new(),
            global: false,
            series: 0,
            decided: 0,
            refresh_tag: (None, String::new()),
            slice: now,
        }
    }

    /// Start the series of one owner, under `budget` and the global `cap`; `demand`: count
    /// them in its global demand.
    pub fn owner(&mut self, keys: &OwnerKeys, demand: bool, budget: u64, cap: Option<u64>) {
        self.cmd.arg("o");
        if demand {
            self.suffix.clear();
            let _ = write!(self.suffix, "d:{}:{}", keys.part, self.slice);
            self.cmd.arg(self.suffix.as_str());
        } else {
            self.cmd.arg("");
        }
        self.cmd.arg(keys.series.as_str()).arg(budget);
        match cap {
            Some(c) => self.cmd.arg(c),
            None => self.cmd.arg(""),
        };
        self.global = cap.is_some();
    }

    /// One series of the current owner with its other limits: its metric's (metric hash,
    /// limit) and its limited labels' (name, value hash, limit).
    pub fn series(
        &mut self,
        keys: &OwnerKeys,
        id_key: u64,
        mode: Mode,
        metric: Option<(u64, u64)>,
        labels: &[(&str, u64, u64)],
    ) {
        self.decided += usize::from(!matches!(mode, Mode::Refresh(_)));
        match mode {
            Mode::Decide => self.cmd.arg("d"),
            Mode::DecideRecord => self.cmd.arg("w"),
            Mode::Refresh(s) => {
                // Every series of a slice's refresh carries the same tag: formatted once.
                if self.refresh_tag.0 != Some(s) {
                    self.refresh_tag.1.clear();
                    let _ = write!(self.refresh_tag.1, "r{s}");
                    self.refresh_tag.0 = Some(s);
                }
                self.cmd.arg(self.refresh_tag.1.as_str())
            }
        };
        self.cmd.arg(&id_key.to_be_bytes()[..]);
        if self.global {
            self.cmd.arg(&(id_key ^ keys.owner_hash).to_be_bytes()[..]);
        } else {
            self.cmd.arg("");
        }
        self.cmd.arg(usize::from(metric.is_some()) + labels.len());
        if let Some((metric_hash, limit)) = metric {
            self.suffix.clear();
            let _ = write!(self.suffix, "m:{}:{metric_hash:016x}", keys.part);
            self.cmd
                .arg(self.suffix.as_str())
                .arg(&id_key.to_be_bytes()[..])
                .arg(limit);
        }
        for &(name, value_hash, limit) in labels {
            self.label(keys, name, value_hash, limit);
        }
        self.series += 1;
    }

    fn label(&mut self, keys: &OwnerKeys, name: &str, value_hash: u64, limit: u64) {
        self.suffix.clear();
        let _ = write!(self.suffix, "l:{}:{name}", keys.part);
        self.cmd
            .arg(self.suffix.as_str())
            .arg(&value_hash.to_be_bytes()[..])
            .arg(limit);
    }

    /// A limited label's value this owner holds, last seen in `slice`, told to Redis on a
    /// rejoin.
    pub fn label_value(&mut self, keys: &OwnerKeys, name: &str, value_hash: u64, slice: u64) {
        self.suffix.clear();
        let _ = write!(self.suffix, "v{slice}");
        self.cmd
            .arg(self.suffix.as_str())
            .arg(&value_hash.to_be_bytes()[..])
            .arg("")
            .arg(1);
        self.label(keys, name, value_hash, 0);
        self.series += 1;
    }

    pub fn len(&self) -> usize {
        self.series
    }

    /// Series in the call that Redis decides, and so answers (refreshes get no answer).
    pub fn decided(&self) -> usize {
        self.decided
    }

    pub fn is_empty(&self) -> bool {
        self.series == 0
    }
}

/// The shared admission's own metrics.
#[derive(Clone)]
pub struct SharedMetrics {
    pub up: IntGauge,
    pub errors: IntCounter,
    pub round_trips: IntCounterVec,
    pub new_series: IntCounterVec,
    pub duration: Histogram,
}

impl SharedMetrics {
    pub fn register(r: &Registry) -> Self {
        SharedMetrics {
            up: gauge(
                r,
                "cardguard_shared_admission_up",
                "1 while new series are decided by the shared budgets in Redis, 0 while this \
                 replica decides them locally (Redis away, or a different hash_seed).",
            ),
            errors: counter(
                r,
                "cardguard_shared_admission_errors_total",
                "Calls to Redis for shared budgets that failed or timed out.",
            ),
            round_trips: counter_vec(
                r,
                "cardguard_shared_round_trips_total",
                "Calls to Redis, by what they were for: admit (a request waited), refresh \
                 (sent without waiting), resync (on rejoining), report (global counts).",
                &["call"],
            ),
            new_series: counter_vec(
                r,
                "cardguard_shared_new_series_total",
                "Series new to this replica, by how they were decided: admitted or refused \
                 by Redis, or local (while Redis was away).",
                &["decision"],
            ),
            duration: histogram(
                r,
                "cardguard_shared_admission_duration_seconds",
                "Time requests carrying new series waited for Redis.",
                &[
                    0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                ],
            ),
        }
    }
}

/// Global active series and demand of one owner, as Redis counts them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GlobalCounts {
    pub active: u64,
    pub demand: f64,
}

pub struct Shared {
    pub cfg: SharedConfig,
    hash_seed: u64,
    client: redis::Client,
    conn: Mutex<Option<ConnectionManager>>,
    /// Idle blocking connections for requests waiting on Redis (`decide`).
    blocking: Mutex<Vec<redis::Connection>>,
    up: AtomicBool,
    /// Logged once until the next change: the reason the replica is local.
    down_logged: AtomicBool,
    script: redis::Script,
    pub metrics: SharedMetrics,
    global: Mutex<HashMap<String, GlobalCounts>>,
    refreshes: Arc<tokio::sync::Semaphore>,
}

impl Shared {
    /// The client (not yet connected; `join` or `maintain` connects).
    pub fn new(
        cfg: SharedConfig,
        hash_seed: u64,
        registry: &Registry,
    ) -> Result<Arc<Self>, SharedError> {
        let client = redis::Client::open(cfg.url.as_str())?;
        let metrics = SharedMetrics::register(registry);
        metrics.up.set(0);
        Ok(Arc::new(Shared {
            cfg,
            hash_seed,
            client,
            conn: Mutex::new(None),
            blocking: Mutex::new(Vec::new()),
            up: AtomicBool::new(false),
            down_logged: AtomicBool::new(false),
            script: redis::Script::new(SCRIPT),
            metrics,
            global: Mutex::new(HashMap::new()),
            refreshes: Arc::new(tokio::sync::Semaphore::new(MAX_REFRESHES_IN_FLIGHT)),
        }))
    }

    /// Whether Redis decides new series now.
    #[inline]
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    pub fn call(&self, window: &Window, slice_ms: u64, now: u64) -> Call {
        Call::new(self.script.get_hash(), &self.cfg, window, slice_ms, now)
    }

    async fn connection(&self) -> Result<ConnectionManager, SharedError> {
        if let Some(c) = self.conn.lock().unwrap_or_else(|e| e.into_inner()).clone() {
            return Ok(c);
        }
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.cfg.connect_timeout))
            .set_response_timeout(Some(self.cfg.timeout.max(Duration::from_secs(1))))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(1));
        let c = tokio::time::timeout(
            self.cfg.connect_timeout * 2,
            ConnectionManager::new_with_config(self.client.clone(), config),
        )
        .await
        .map_err(|_| SharedError::Timeout(self.cfg.connect_timeout))??;
        *self.conn.lock().unwrap_or_else(|e| e.into_inner()) = Some(c.clone());
        Ok(c)
    }

    fn went_down(&self, e: &SharedError) {
        // Connections to a Redis that failed would fail again once it is back (or another
        // node answers in its place): every request opens fresh ones after the rejoin.
        self.blocking
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        self.metrics.errors.inc();
        self.metrics.up.set(0);
        let was_up = self.up.swap(false, Ordering::AcqRel);
        if was_up || !self.down_logged.swap(true, Ordering::AcqRel) {
            tracing::error!(
                "shared budgets: {e}; deciding new series locally (budget / replicas_hint = \
                 budget / {}) until Redis answers again",
                self.cfg.replicas_hint
            );
        }
    }

    /// Decide a request's new series: one round trip, waited for on this worker thread.
    pub fn decide(&self, call: &Call) -> Result<Vec<Answer>, SharedError> {
        let r = self.decide_inner(call);
        match &r {
            Ok(v) => {
                for a in v {
                    let d = match a {
                        Answer::Admitted => "admitted",
                        Answer::Refused(_) => "refused",
                    };
                    self.metrics.new_series.with_label_values(&[d]).inc();
                }
            }
            Err(e) => self.went_down(e),
        }
        r
    }

    fn decide_inner(&self, call: &Call) -> Result<Vec<Answer>, SharedError> {
        use tokio::runtime::{Handle, RuntimeFlavor};
        if let Ok(h) = Handle::try_current() {
            if h.runtime_flavor() != RuntimeFlavor::MultiThread {
                return Err(SharedError::NoRuntime);
            }
        }
        self.metrics.round_trips.with_label_values(&["admit"]).inc();
        let started = Instant::now();
        // The pipeline runs synchronously on a worker thread; `block_in_place` hands the
        // thread's other tasks to another worker while this request waits, on a blocking
        // connection of its own: the reply wakes this thread directly, rather than the
        // multiplexed connection's task, which would then wake it (two more thread hand-offs,
        // each a run-queue wait on a busy machine).
        let codes = tokio::task::block_in_place(|| self.invoke_blocking(call))?;
        self.metrics
            .duration
            .observe(started.elapsed().as_secs_f64());
        if codes.len() != call.decided() {
            return Err(SharedError::Short {
                sent: call.decided(),
                got: codes.len(),
            });
        }
        Ok(codes.into_iter().map(Answer::from_code).collect())
    }

    fn invoke_blocking(&self, call: &Call) -> Result<Vec<i64>, SharedError> {
        let pooled = self
            .blocking
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop();
        let mut conn = match pooled {
            Some(c) => c,
            None => {
                let c = self
                    .client
                    .get_connection_with_timeout(self.cfg.connect_timeout)?;
                c.set_read_timeout(Some(self.cfg.timeout))?;
                c.set_write_timeout(Some(self.cfg.timeout))?;
                c
            }
        };
        let r = match call.cmd.query(&mut conn) {
            Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
                self.script
                    .load(&mut conn)
                    .and_then(|_| call.cmd.query(&mut conn))
            }
            r => r,
        };
        match r {
            Ok(codes) => {
                let mut pool = self.blocking.lock().unwrap_or_else(|e| e.into_inner());
                if pool.len() < MAX_IDLE_BLOCKING {
                    pool.push(conn);
                }
                Ok(codes)
            }
            // The connection is dropped: after an error its state is unknown.
            Err(e) if e.is_timeout() => Err(SharedError::Timeout(self.cfg.timeout)),
            Err(e) => Err(e.into()),
        }
    }

    /// Tell Redis about series first seen again in this slice, without waiting.
    pub fn refresh(self: &Arc<Self>, call: Call) {
        let Ok(permit) = self.refreshes.clone().try_acquire_owned() else {
            return;
        };
        let Some(conn) = self.conn.lock().unwrap_or_else(|e| e.into_inner()).clone() else {
            return;
        };
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        self.metrics
            .round_trips
            .with_label_values(&["refresh"])
            .inc();
        let me = self.clone();
        handle.spawn(async move {
            let mut conn = conn;
            if let Err(e) = invoke(&me.script, &mut conn, &call, me.cfg.timeout).await {
                me.went_down(&e);
            }
            drop(permit);
        });
    }

    /// Run periodically (every second): find Redis again when away, agree on the seed, tell
    /// it what this replica holds (`held`), then let it decide again; and while joined,
    /// fetch the global counts of `owners` for the report.
    pub async fn maintain(
        &self,
        held: impl FnOnce(&Self) -> Vec<Call>,
        owners: &[OwnerKey],
        cfg: &GuardConfig,
        now_ms: i64,
    ) {
        if self.is_up() {
            if let Err(e) = self.fetch_global(owners, cfg, now_ms).await {
                self.went_down(&e);
            }
            return;
        }
        let joined = async {
            let mut conn = self.connection().await?;
            agree_on_seed(&mut conn, &self.cfg.key_prefix, self.hash_seed).await?;
            for call in held(self) {
                self.metrics
                    .round_trips
                    .with_label_values(&["resync"])
                    .inc();
                invoke(&self.script, &mut conn, &call, self.cfg.timeout * 10).await?;
            }
            Ok::<(), SharedError>(())
        }
        .await;
        match joined {
            Ok(()) => {
                self.up.store(true, Ordering::Release);
                self.metrics.up.set(1);
                self.down_logged.store(false, Ordering::Release);
                tracing::info!(
                    "shared budgets: joined through Redis; new series are decided there"
                );
            }
            Err(e) => {
                // Counted and logged once, like a failed admission.
                self.metrics.errors.inc();
                if !self.down_logged.swap(true, Ordering::AcqRel) {
                    tracing::error!(
                        "shared budgets: {e}; deciding new series locally (budget / {}) until \
                         Redis answers again",
                        self.cfg.replicas_hint
                    );
                }
            }
        }
    }

    async fn fetch_global(
        &self,
        owners: &[OwnerKey],
        cfg: &GuardConfig,
        now_ms: i64,
    ) -> Result<(), SharedError> {
        if owners.is_empty() {
            return Ok(());
        }
        let window = Window::new(cfg.window, cfg.window_slices);
        let now = window.slice(now_ms);
        let oldest = (now + 1).saturating_sub(u64::from(window.slices()));
        let p = &self.cfg.key_prefix;
        let mut pipe = redis::pipe();
        let parts: Vec<String> = owners.iter().map(|o| OwnerKeys::new(o).part).collect();
        for part in &parts {
            pipe.cmd("ZCOUNT")
                .arg(format!("{p}s:{part}"))
                .arg(oldest)
                .arg("+inf");
            let mut pf = redis::cmd("PFCOUNT");
            for s in oldest..=now {
                pf.arg(format!("{p}d:{part}:{s}"));
            }
            pipe.add_command(pf);
        }
        let mut conn = self.connection().await?;
        self.metrics
            .round_trips
            .with_label_values(&["report"])
            .inc();
        let counts: Vec<u64> =
            tokio::time::timeout(self.cfg.timeout * 10, pipe.query_async(&mut conn))
                .await
                .map_err(|_| SharedError::Timeout(self.cfg.timeout * 10))??;
        let mut global = self.global.lock().unwrap_or_else(|e| e.into_inner());
        global.clear();
        for (part, c) in parts.into_iter().zip(counts.chunks(2)) {
            if let [active, demand] = c {
                global.insert(
                    part,
                    GlobalCounts {
                        active: *active,
                        demand: *demand as f64,
                    },
                );
            }
        }
        Ok(())
    }

    /// The owner's global counts as last fetched, while joined.
    pub fn global_counts(&self, key: &OwnerKey) -> Option<GlobalCounts> {
        if !self.is_up() {
            return None;
        }
        let part = OwnerKeys::new(key).part;
        self.global
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&part)
            .copied()
    }
}

async fn invoke(
    script: &redis::Script,
    conn: &mut ConnectionManager,
    call: &Call,
    timeout: Duration,
) -> Result<Vec<i64>, SharedError> {
    let run = async {
        match call.cmd.query_async(conn).await {
            // A Redis restarted (or flushed) has forgotten the script: load it, once more.
            Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
                script.load_async(conn).await?;
                call.cmd.query_async(conn).await
            }
            r => r,
        }
    };
    tokio::time::timeout(timeout, run)
        .await
        .map_err(|_| SharedError::Timeout(timeout))?
        .map_err(SharedError::from)
}

/// At start, before serving: connect and agree on the seed. Another seed recorded in Redis is
/// an error (the replica refuses to start, saying why); Redis unreachable is not (the replica
/// starts deciding locally and joins when Redis answers).
pub async fn check_seed_at_start(cfg: &SharedConfig, hash_seed: u64) -> Result<(), SharedError> {
    let client = redis::Client::open(cfg.url.as_str())?;
    let checked = async {
        let mut conn = tokio::time::timeout(
            cfg.connect_timeout,
            client.get_multiplexed_async_connection(),
        )
        .await
        .map_err(|_| SharedError::Timeout(cfg.connect_timeout))??;
        agree_on_seed(&mut conn, &cfg.key_prefix, hash_seed).await
    }
    .await;
    match checked {
        Err(e @ SharedError::SeedMismatch { .. }) => Err(e),
        Err(e) => {
            tracing::warn!(
                "shared budgets: Redis not reachable at start ({e}); starting with local \
                 budgets (budget / {}) until it answers",
                cfg.replicas_hint
            );
            Ok(())
        }
        Ok(()) => Ok(()),
    }
}

/// Record this replica's seed if no replica has yet; refuse when another one is recorded.
async fn agree_on_seed<C: redis::aio::ConnectionLike>(
    conn: &mut C,
    prefix: &str,
    hash_seed: u64,
) -> Result<(), SharedError> {
    let key = format!("{prefix}hash_seed");
    let ours = hash_seed.to_string();
    let (theirs,): (Option<String>,) = redis::pipe()
        .cmd("SET")
        .arg(&key)
        .arg(&ours)
        .arg("NX")
        .ignore()
        .cmd("GET")
        .arg(&key)
        .query_async(conn)
        .await?;
    match theirs {
        Some(t) if t != ours => Err(SharedError::SeedMismatch {
            ours: hash_seed,
            theirs: t,
            key,
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU64;

    use super::*;
    use crate::guard::owner::{value_hash, OwnerDelta, OwnerState, SeriesKey};
    use crate::guard::Budget;

    #[test]
    fn owner_keys_cannot_run_into_each_other() {
        let k = |t: Option<&str>, o: Option<&str>| {
            OwnerKeys::new(&OwnerKey {
                tenant: t.map(str::to_string),
                owner: o.map(str::to_string),
            })
            .series
        };
        assert_eq!(k(None, Some("api")), "s:-:api");
        assert_eq!(k(Some("a:b"), Some("c")), "s:a%3Ab:c");
        assert_ne!(k(Some("a:b"), Some("c")), k(Some("a"), Some("b:c")));
        assert_eq!(k(Some("t"), Some("100%")), "s:t:100%25");
        assert_eq!(k(None, None), "s:-:-");
    }

    /// The codes `admit.lua` answers.
    fn reason_code(r: Reason) -> u8 {
        match r {
            Reason::MetricBudget => 2,
            Reason::LabelLimit => 3,
            Reason::GlobalCap => 4,
            _ => 1,
        }
    }

    #[test]
    fn verdict_codes_round_trip() {
        for r in [
            Reason::Budget,
            Reason::MetricBudget,
            Reason::LabelLimit,
            Reason::GlobalCap,
        ] {
            assert_eq!(
                Answer::from_code(i64::from(reason_code(r))),
                Answer::Refused(r)
            );
        }
        assert_eq!(Answer::from_code(0), Answer::Admitted);
        assert_eq!(Answer::from_code(-1), Answer::Admitted);
    }

    fn args(call: &Call) -> Vec<Vec<u8>> {
        call.cmd
            .args_iter()
            .map(|a| match a {
                redis::Arg::Simple(b) => b.to_vec(),
                _ => b"<not a plain argument>".to_vec(),
            })
            .collect()
    }

    #[test]
    fn a_call_lays_out_owners_and_series_as_the_script_reads_them() {
        let cfg = SharedConfig::default();
        let window = Window::new(Duration::from_secs(3600), 6);
        let mut call = Call::new("sha", &cfg, &window, 600_000, 100);
        let a = OwnerKeys::new(&OwnerKey {
            tenant: None,
            owner: Some("a".into()),
        });
        call.owner(&a, true, 10, Some(5));
        call.series(&a, 1 << 8, Mode::Decide, None, &[]);
        call.series(
            &a,
            2 << 8,
            Mode::Refresh(99),
            Some((7, 3)),
            &[("user", 9, 4)],
        );
        call.owner(&a, false, 10, None);
        call.label_value(&a, "user", 9, 98);
        assert_eq!(call.len(), 3);
        assert_eq!(call.decided(), 1, "only the decided series are answered");
        let id = |k: u64| k.to_be_bytes().to_vec();
        let s = |v: &str| v.as_bytes().to_vec();
        let mut want = vec![s("EVALSHA"), s("sha"), s("0"), s(&cfg.key_prefix)];
        // now, oldest, ttl.
        want.extend([s("100"), s("95"), s("4200000")]);
        want.extend([s("o"), s("d:-:a:100"), s("s:-:a"), s("10"), s("5")]);
        want.extend([s("d"), id(1 << 8), id((1 << 8) ^ a.owner_hash), s("0")]);
        want.extend([s("r99"), id(2 << 8), id((2 << 8) ^ a.owner_hash), s("2")]);
        want.extend([s("m:-:a:0000000000000007"), id(2 << 8), s("3")]);
        want.extend([s("l:-:a:user"), id(9), s("4")]);
        want.extend([s("o"), s(""), s("s:-:a"), s("10"), s("")]);
        want.extend([
            s("v98"),
            id(9),
            s(""),
            s("1"),
            s("l:-:a:user"),
            id(9),
            s("0"),
        ]);
        assert_eq!(args(&call), want);
    }

    /// While Redis is away a replica admits `budget / replicas_hint` new series.
    #[test]
    fn the_fallback_admits_a_share_of_the_budget() {
        let window = Window::new(Duration::from_secs(3600), 6);
        let budget = Arc::new(Budget {
            max_series: 30,
            ..Budget::default()
        });
        let mut st = OwnerState::new(budget, 0, &window, 10);
        let global = AtomicU64::new(0);
        let mut tally = OwnerDelta::default();
        let labels: [(&[u8], &[u8]); 1] = [(b"__name__", b"m")];
        let admitted = (0..100u64)
            .filter(|i| {
                let s = SeriesKey::new((i + 1) << 8, labels.iter().copied(), 1, value_hash(b"m"));
                st.admit(s, 10, &global, None, 3, &mut tally) == crate::series::Verdict::Keep
            })
            .count();
        assert_eq!(admitted, 10);
    }
}
