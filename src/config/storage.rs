//! The `storage:` section as written, validated into `storage::StorageConfig`: where cardguard
//! keeps what must survive a restart (`path`), how often it snapshots (`snapshot_interval`),
//! and the bound of the durable queue for its own output (`max_queue_bytes`, `forward::queue`).

use std::path::PathBuf;

use serde::Deserialize;
use serde_saphyr::Spanned;

use super::errors::Errors;
use super::raw::ByteSize;
use crate::duration::PromDuration;
pub use crate::storage::StorageConfig;

/// Shortest snapshot interval: each one copies and writes every admission table.
const MIN_INTERVAL_MS: u128 = 1000;
/// Below this a segment or two would fill the queue.
const MIN_QUEUE_BYTES: u64 = 1 << 20;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStorage {
    pub path: Option<Spanned<String>>,
    pub snapshot_interval: Option<Spanned<PromDuration>>,
    pub max_queue_bytes: Option<Spanned<ByteSize>>,
}

pub(super) fn validate(raw: Option<&RawStorage>, errs: &mut Errors) -> StorageConfig {
    let mut c = StorageConfig::default();
    let Some(raw) = raw else {
        return c;
    };
    if let Some(p) = &raw.path {
        if p.value.trim().is_empty() {
            errs.push(
                "storage.path",
                p,
                "must not be empty (leave it out to keep state in memory only)",
            );
        } else {
            c.path = Some(PathBuf::from(&p.value));
        }
    }
    if let Some(d) = &raw.snapshot_interval {
        if d.value.0.as_millis() < MIN_INTERVAL_MS {
            errs.push("storage.snapshot_interval", d, "must be at least 1s");
        }
        c.snapshot_interval = d.value.0;
    }
    if let Some(b) = &raw.max_queue_bytes {
        if b.value.0 < MIN_QUEUE_BYTES {
            errs.push("storage.max_queue_bytes", b, "must be at least 1MiB");
        }
        c.max_queue_bytes = b.value.0.max(MIN_QUEUE_BYTES);
    }
    c
}

#[cfg(test)]
mod tests {
    use crate::config::Config;
    use std::time::Duration;

    #[test]
    fn defaults_to_memory_only_every_minute() {
        let c = Config::from_yaml("").unwrap();
        assert_eq!(c.storage.path, None);
        assert_eq!(c.storage.snapshot_interval, Duration::from_secs(60));
        assert_eq!(c.storage.max_queue_bytes, 512 << 20);
    }

    #[test]
    fn reads_path_interval_and_queue_bound() {
        let c = Config::from_yaml(
            "storage:\n  path: /var/lib/cardguard\n  snapshot_interval: 15s\n  max_queue_bytes: 64MiB\n",
        )
        .unwrap();
        assert_eq!(
            c.storage.path.as_deref(),
            Some(std::path::Path::new("/var/lib/cardguard"))
        );
        assert_eq!(c.storage.snapshot_interval, Duration::from_secs(15));
        assert_eq!(
            c.storage.queue_dir().unwrap(),
            std::path::Path::new("/var/lib/cardguard/queue")
        );
        assert_eq!(c.storage.max_queue_bytes, 64 << 20);
    }

    #[test]
    fn names_every_bad_storage_setting() {
        let e = Config::from_yaml(
            "storage:\n  path: ''\n  snapshot_interval: 10ms\n  max_queue_bytes: 1KiB\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("line 2: storage.path: must not be empty"), "{e}");
        assert!(e.contains("storage.snapshot_interval"), "{e}");
        assert!(
            e.contains("line 4: storage.max_queue_bytes: must be at least 1MiB"),
            "{e}"
        );
        let e = Config::from_yaml("storage:\n  max_bytes: 1\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("max_bytes"), "{e}");
    }
}
