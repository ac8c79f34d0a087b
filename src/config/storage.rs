//! The `storage:` section as written, validated into `storage::StorageConfig`.

use std::path::PathBuf;

use serde::Deserialize;
use serde_saphyr::Spanned;

use super::errors::Errors;
use crate::duration::PromDuration;
use crate::storage::StorageConfig;

/// Shortest snapshot interval: each one copies and writes every admission table.
const MIN_INTERVAL_MS: u128 = 1000;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStorage {
    pub path: Option<Spanned<String>>,
    pub snapshot_interval: Option<Spanned<PromDuration>>,
}

pub(super) fn validate(raw: &RawStorage, errs: &mut Errors) -> StorageConfig {
    let mut c = StorageConfig::default();
    if let Some(p) = &raw.path {
        if p.value.trim().is_empty() {
            errs.push(
                "storage.path",
                p,
                "must not be empty (leave it out to keep state in memory only)",
            );
        }
        c.path = Some(PathBuf::from(&p.value));
    }
    if let Some(d) = &raw.snapshot_interval {
        if d.value.0.as_millis() < MIN_INTERVAL_MS {
            errs.push("storage.snapshot_interval", d, "must be at least 1s");
        }
        c.snapshot_interval = d.value.0;
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
    }

    #[test]
    fn reads_path_and_interval() {
        let c =
            Config::from_yaml("storage:\n  path: /var/lib/cardguard\n  snapshot_interval: 15s\n")
                .unwrap();
        assert_eq!(
            c.storage.path.as_deref(),
            Some(std::path::Path::new("/var/lib/cardguard"))
        );
        assert_eq!(c.storage.snapshot_interval, Duration::from_secs(15));
    }

    #[test]
    fn names_every_bad_storage_setting() {
        let e = Config::from_yaml("storage:\n  path: ''\n  snapshot_interval: 10ms\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("storage.path"), "{e}");
        assert!(e.contains("storage.snapshot_interval"), "{e}");
        let e = Config::from_yaml("storage:\n  max_bytes: 1\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("max_bytes"), "{e}");
    }
}
