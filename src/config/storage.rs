//! The `storage:` section: where cardguard keeps what must survive a restart (`path`), and
//! the bound of the durable queue for its own output (`max_queue_bytes`, `forward::queue`).

use std::path::PathBuf;

use serde::Deserialize;
use serde_saphyr::Spanned;

use super::errors::Errors;
use super::raw::ByteSize;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStorage {
    pub path: Option<Spanned<String>>,
    pub max_queue_bytes: Option<Spanned<ByteSize>>,
}

/// Where state lives on disk. Without a `path` cardguard keeps everything in memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageConfig {
    /// A directory; relative paths are from the working directory.
    pub path: Option<PathBuf>,
    /// Bytes of the durable queue on disk (`<path>/queue`); when full, its oldest records are
    /// dropped.
    pub max_queue_bytes: u64,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            path: None,
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

/// Below this a segment or two would fill the queue.
const MIN_QUEUE_BYTES: u64 = 1 << 20;

pub(super) fn validate(raw: Option<&RawStorage>, errs: &mut Errors) -> StorageConfig {
    let mut c = StorageConfig::default();
    let Some(raw) = raw else {
        return c;
    };
    if let Some(p) = &raw.path {
        if p.value.trim().is_empty() {
            errs.push("storage.path", p, "must not be empty");
        } else {
            c.path = Some(PathBuf::from(&p.value));
        }
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

    #[test]
    fn storage_defaults_to_memory_only() {
        let c = Config::from_yaml("").unwrap();
        assert_eq!(c.storage.path, None);
        assert_eq!(c.storage.max_queue_bytes, 512 << 20);
    }

    #[test]
    fn reads_and_checks_storage() {
        let c = Config::from_yaml("storage:\n  path: data\n  max_queue_bytes: 64MiB\n").unwrap();
        assert_eq!(
            c.storage.queue_dir().unwrap(),
            std::path::Path::new("data/queue")
        );
        assert_eq!(c.storage.max_queue_bytes, 64 << 20);
        let e = Config::from_yaml("storage:\n  path: ''\n  max_queue_bytes: 1KiB\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 2: storage.path: must not be empty"), "{e}");
        assert!(
            e.contains("line 3: storage.max_queue_bytes: must be at least 1MiB"),
            "{e}"
        );
    }
}
