//! State that survives a restart: the `storage:` section, and the snapshots of what cardguard
//! learned while running (admission tables with their slice tags, the owner registry, the
//! demand, metric and label sketches, overflow aggregates with their members, downsampling
//! state, the rule buffers and group states), written every `storage.snapshot_interval` and
//! at shutdown, and restored before the listener opens.
//!
//! A snapshot that is missing, truncated, corrupt or written under an incompatible format or
//! config is logged, counted (`cardguard_snapshot_load_failures_total{reason}`), moved aside
//! and cardguard starts empty: a bad file never keeps it from starting.
//!
//! Writing never stalls requests on a big lock: each stage's state is copied one owner or one
//! shard at a time (`Parts::capture`), and encoding, checksumming and fsync run on the copy.
//! `codec` is the byte encoding, `image` the sections, `file` the framing and atomic write.
//!
//! The format is hand-written rather than serde with bincode or postcard: those store each
//! 64-bit series key as a plain varint (9–10 bytes), while sorted keys delta-coded take about
//! 6, which is what keeps a snapshot within 16 bytes per admitted series. Only the
//! HyperLogLog sketches go through serde (bincode), in the sketch crate's own form.

mod codec;
mod file;
mod image;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use prometheus::{Gauge, IntCounterVec, IntGauge, Registry};

pub use codec::DecodeError;
pub use file::{LoadError, VERSION};
pub use image::Image;

use crate::config::Config;
use crate::guard::Guard;
use crate::route::Downsampler;
use crate::rules::buffer::BufferLimits;
use crate::rules::Runtime;
use crate::telemetry::{counter_vec, gauge, register};

/// The file name of the snapshot inside `storage.path`.
pub const SNAPSHOT_FILE: &str = "snapshot.cgs";

/// The `storage:` section. Kept as a struct of its own so other stored state (the output
/// queue's bounds) can join it without touching the snapshot's fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageConfig {
    /// Where state lives; `None`: in memory only (lost on restart).
    pub path: Option<PathBuf>,
    /// How often a snapshot is written.
    pub snapshot_interval: Duration,
    /// Bytes of the durable queue on disk (`<path>/queue`); when full, its oldest records are
    /// dropped.
    pub max_queue_bytes: u64,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            path: None,
            snapshot_interval: Duration::from_secs(60),
            max_queue_bytes: 512 << 20,
        }
    }
}

impl StorageConfig {
    /// The durable queue's directory, when storage is configured.
    pub fn queue_dir(&self) -> Option<PathBuf> {
        self.path.as_ref().map(|p| p.join("queue"))
    }
}

/// What one snapshot write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotStats {
    pub bytes: u64,
    pub admitted_series: u64,
    pub duration: Duration,
}

/// Why a snapshot was not written.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("no storage.path configured")]
    Disabled,
    #[error("writing {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the snapshot task failed: {0}")]
    Task(String),
}

/// `cardguard_snapshot_*`.
#[derive(Clone)]
pub struct StorageMetrics {
    pub last_success: IntGauge,
    pub duration: Gauge,
    pub bytes: IntGauge,
    pub write_failures: prometheus::IntCounter,
    pub load_failures: IntCounterVec,
    pub restored_series: IntGauge,
}

impl StorageMetrics {
    pub fn register(r: &Registry) -> Self {
        let load_failures = counter_vec(
            r,
            "cardguard_snapshot_load_failures_total",
            "Snapshots not restored at start, by reason (missing, unreadable, truncated, corrupt, incompatible).",
            &["reason"],
        );
        for reason in [
            "missing",
            "unreadable",
            "truncated",
            "corrupt",
            "incompatible",
        ] {
            load_failures.with_label_values(&[reason]);
        }
        StorageMetrics {
            last_success: gauge(
                r,
                "cardguard_snapshot_last_success_timestamp_seconds",
                "Unix time of the last snapshot written (0: none yet).",
            ),
            duration: register(
                r,
                Gauge::new(
                    "cardguard_snapshot_duration_seconds",
                    "How long the last snapshot took to copy, encode and write.",
                )
                .expect("valid metric name"),
            ),
            bytes: gauge(
                r,
                "cardguard_snapshot_bytes",
                "Size of the last snapshot written.",
            ),
            write_failures: crate::telemetry::counter(
                r,
                "cardguard_snapshot_write_failures_total",
                "Snapshots that could not be written.",
            ),
            load_failures,
            restored_series: gauge(
                r,
                "cardguard_snapshot_restored_series",
                "Admitted series restored from the snapshot at start.",
            ),
        }
    }
}

/// The state a snapshot covers, shared with the request path.
#[derive(Clone)]
pub struct Parts {
    pub config: Arc<ArcSwap<Config>>,
    pub guard: Arc<Guard>,
    pub rules: Arc<Runtime>,
    pub downsampler: Arc<Downsampler>,
}

impl Parts {
    /// Empty state under `config`, outside a server (benches, the fuzz target, tests).
    pub fn standalone(config: Config) -> Parts {
        Parts {
            config: Arc::new(ArcSwap::from_pointee(config)),
            guard: Arc::new(Guard::new()),
            rules: Arc::new(Runtime::new(&Registry::new())),
            downsampler: Arc::new(Downsampler::default()),
        }
    }

    /// Copy everything out, one owner or shard at a time.
    pub fn capture(&self) -> Image {
        let config = self.config.load();
        let guard = config.guard.as_ref();
        let mut image = Image {
            guard: guard.map(|g| self.guard.image(g)),
            overflow: (
                crate::guard::image::seed_check(guard.map_or(0, |g| g.hash_seed)),
                self.guard.overflow.image(),
            ),
            downsample: self.downsampler.image(),
            rule_buffers: self.rules.buffer.image(),
            rule_groups: self.rules.group_images(),
            rule_histograms: Vec::new(),
        };
        image.canonicalize();
        image
    }

    /// Put an image back; nothing is applied unless the guard part fits the config in force.
    /// Returns the admitted series restored.
    pub fn apply(&self, image: Image) -> Result<u64, LoadError> {
        let config = self.config.load();
        let mut admitted = 0;
        match (&config.guard, image.guard) {
            (Some(g), Some(img)) => {
                admitted = self
                    .guard
                    .restore(g, img)
                    .map_err(|e| LoadError::Mismatch(e.to_string()))?;
                if image.overflow.0 == crate::guard::image::seed_check(g.hash_seed) {
                    self.guard.overflow.set_max_bytes(g.max_overflow_bytes);
                    self.guard.overflow.restore(image.overflow.1);
                }
            }
            (None, Some(_)) => {
                tracing::info!(
                    "the snapshot has guard state but no guard is configured: not restored"
                );
            }
            _ => {}
        }
        self.downsampler.restore(&image.downsample);
        let r = &config.rules;
        let limits = BufferLimits {
            max_series: r.max_buffered_series,
            max_samples_per_series: r.max_samples_per_series,
            max_label_bytes: r.max_buffered_label_bytes,
        };
        self.rules.buffer.restore(image.rule_buffers, &limits);
        self.rules.restore_groups(image.rule_groups);
        Ok(admitted)
    }
}

/// Writes snapshots of [`Parts`] into `storage.path` and restores them. One write at a time:
/// the periodic task and the shutdown may both ask.
pub struct Snapshotter {
    /// The snapshot file; `None` without `storage.path`.
    file: Option<PathBuf>,
    parts: Parts,
    pub metrics: StorageMetrics,
    writing: tokio::sync::Mutex<()>,
}

impl Snapshotter {
    pub fn new(path: Option<&Path>, parts: Parts, registry: &Registry) -> Self {
        Snapshotter {
            file: path.map(|p| p.join(SNAPSHOT_FILE)),
            parts,
            metrics: StorageMetrics::register(registry),
            writing: tokio::sync::Mutex::new(()),
        }
    }

    pub fn enabled(&self) -> bool {
        self.file.is_some()
    }

    /// Load the snapshot, if any, into the parts: called once at start, before any request.
    /// Never fails: whatever is wrong with the file is logged, counted and the file moved
    /// aside, and cardguard starts empty.
    pub fn restore(&self) {
        let Some(file) = &self.file else {
            tracing::info!("no storage.path: state is kept in memory only and lost on restart");
            return;
        };
        if let Some(dir) = file.parent() {
            if let Err(e) = std::fs::create_dir_all(dir) {
                // Not fatal: every snapshot write will fail, logged and counted, until it is
                // fixed; requests are served meanwhile.
                tracing::error!(path = %dir.display(), "cannot create storage.path: {e}");
            }
        }
        let started = Instant::now();
        match self.load(file) {
            Ok((admitted, written_ms)) => {
                self.metrics.restored_series.set(admitted as i64);
                tracing::info!(
                    file = %file.display(),
                    admitted_series = admitted,
                    age_seconds = (crate::ingest::unix_now_ms() - written_ms) / 1000,
                    took_ms = started.elapsed().as_millis() as u64,
                    "state restored from the snapshot"
                );
            }
            Err(e) => {
                self.metrics
                    .load_failures
                    .with_label_values(&[e.reason()])
                    .inc();
                if let LoadError::Missing(_) = e {
                    tracing::info!(file = %file.display(), "no snapshot yet: starting empty");
                    return;
                }
                let aside = moved_aside(file);
                match std::fs::rename(file, &aside) {
                    Ok(()) => tracing::error!(
                        file = %file.display(),
                        moved_to = %aside.display(),
                        reason = e.reason(),
                        "snapshot not restored, starting empty: {e}"
                    ),
                    Err(mv) => tracing::error!(
                        file = %file.display(),
                        reason = e.reason(),
                        "snapshot not restored, starting empty: {e} (and it could not be moved aside: {mv})"
                    ),
                }
            }
        }
    }

    fn load(&self, file: &Path) -> Result<(u64, i64), LoadError> {
        let bytes = match std::fs::read(file) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(LoadError::Missing(file.display().to_string()))
            }
            Err(e) => return Err(LoadError::Unreadable(e)),
        };
        let (image, written_ms) = file::decode(&bytes)?;
        Ok((self.parts.apply(image)?, written_ms))
    }

    /// Write a snapshot now: copy the state, encode it and replace the file atomically, off
    /// the async threads. Safe to call from any task (the shutdown sequence calls it last).
    pub async fn write_now(self: &Arc<Self>) -> Result<SnapshotStats, SnapshotError> {
        if self.file.is_none() {
            return Err(SnapshotError::Disabled);
        }
        let _one_at_a_time = self.writing.lock().await;
        let me = self.clone();
        let done = tokio::task::spawn_blocking(move || me.write_blocking())
            .await
            .map_err(|e| SnapshotError::Task(e.to_string()))
            .and_then(|r| r);
        match &done {
            Ok(s) => {
                self.metrics
                    .last_success
                    .set(crate::ingest::unix_now_ms() / 1000);
                self.metrics.duration.set(s.duration.as_secs_f64());
                self.metrics.bytes.set(s.bytes as i64);
                tracing::debug!(
                    bytes = s.bytes,
                    admitted_series = s.admitted_series,
                    took_ms = s.duration.as_millis() as u64,
                    "snapshot written"
                );
            }
            Err(e) => {
                self.metrics.write_failures.inc();
                tracing::error!("snapshot not written: {e}");
            }
        }
        done
    }

    /// [`Self::write_now`]'s work, on the calling thread (for benches and blocking callers).
    pub fn write_blocking(&self) -> Result<SnapshotStats, SnapshotError> {
        let Some(file) = &self.file else {
            return Err(SnapshotError::Disabled);
        };
        let started = Instant::now();
        let image = self.parts.capture();
        let bytes = file::encode(&image, crate::ingest::unix_now_ms());
        file::write_atomically(file, &bytes).map_err(|source| SnapshotError::Io {
            path: file.clone(),
            source,
        })?;
        Ok(SnapshotStats {
            bytes: bytes.len() as u64,
            admitted_series: image.admitted_series(),
            duration: started.elapsed(),
        })
    }
}

/// Encode a whole snapshot file (for tests, benches and the fuzz target's seeds).
pub fn encode_file(image: &Image) -> Vec<u8> {
    file::encode(image, 0)
}

/// Decode a whole snapshot file without applying it: the reader the fuzz target drives.
pub fn decode_file(bytes: &[u8]) -> Result<Image, LoadError> {
    file::decode(bytes).map(|(i, _)| i)
}

/// One section's payload decoded without its file around it (`kind` picks the section, modulo
/// their number): random bytes rarely pass a checksum, so the fuzz target reaches the section
/// decoders this way too.
pub fn decode_section_unframed(kind: u8, payload: &[u8]) -> Result<Image, DecodeError> {
    let kind = image::Kind::ALL[usize::from(kind) % image::Kind::ALL.len()];
    let mut image = Image::default();
    image.decode_section(kind, payload)?;
    image.attach_histograms()?;
    Ok(image)
}

/// `snapshot.cgs.bad-<unix seconds>` next to the file: kept for a post-mortem, never read.
fn moved_aside(file: &Path) -> PathBuf {
    let secs = crate::ingest::unix_now_ms() / 1000;
    let mut name = file.as_os_str().to_owned();
    name.push(format!(".bad-{secs}"));
    PathBuf::from(name)
}

/// Write a snapshot every `storage.snapshot_interval` (read from the config in force each
/// round). Runs until the process ends; does nothing without `storage.path`.
pub async fn snapshot_task(snapshotter: Arc<Snapshotter>, config: impl Fn() -> Arc<Config>) {
    if !snapshotter.enabled() {
        return std::future::pending().await;
    }
    loop {
        let interval = config().storage.snapshot_interval;
        tokio::time::sleep(interval).await;
        // Failures are logged and counted inside; the next round tries again.
        let _ = snapshotter.write_now().await;
    }
}

#[cfg(test)]
mod tests;
