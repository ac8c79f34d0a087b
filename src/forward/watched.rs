//! A value built from files (a password, a token, a TLS client) that is rebuilt when one of the
//! files changes, so that rotated credentials and certificates need no restart.
//!
//! The request path pays one clock read and one atomic load; at most once a second per value
//! one request also looks at the files' modification times (a `stat` each) and rebuilds on a
//! change. A rebuild that fails (a half-written file, a bad PEM) keeps the previous value and
//! is logged once per distinct problem; the files are looked at again a second later.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Instant, SystemTime};

use arc_swap::ArcSwap;

/// How often the files are looked at, at most.
const CHECK_EVERY_MS: u64 = 1000;

static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);

fn now_ms() -> u64 {
    EPOCH.elapsed().as_millis() as u64
}

/// What identifies a version of a file without reading it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
}

fn stamp(path: &PathBuf) -> Option<Stamp> {
    // `metadata` follows symlinks: a Kubernetes secret swaps the link, not the file.
    std::fs::metadata(path).ok().map(|m| Stamp {
        modified: m.modified().ok(),
        len: m.len(),
    })
}

type Build<T> = dyn Fn() -> Result<T, String> + Send + Sync;

pub struct Watched<T> {
    /// Who this belongs to and what it is, for the log lines (`upstream mimir: tls_config`).
    what: String,
    paths: Vec<PathBuf>,
    build: Box<Build<T>>,
    current: ArcSwap<T>,
    next_check_ms: AtomicU64,
    /// The stamps `current` was built from, and the last rebuild error (logged once).
    state: Mutex<(Vec<Option<Stamp>>, Option<String>)>,
}

impl<T> Watched<T> {
    /// Build the first value now: an error here is a configuration error.
    pub fn new(
        what: String,
        paths: Vec<PathBuf>,
        build: impl Fn() -> Result<T, String> + Send + Sync + 'static,
    ) -> Result<Watched<T>, String> {
        let stamps = paths.iter().map(stamp).collect();
        let first = build()?;
        Ok(Watched {
            what,
            paths,
            build: Box::new(build),
            current: ArcSwap::from_pointee(first),
            next_check_ms: AtomicU64::new(now_ms() + CHECK_EVERY_MS),
            state: Mutex::new((stamps, None)),
        })
    }

    /// The current value, rebuilt first if a file changed since the last look.
    pub fn get(&self) -> Arc<T> {
        let next = self.next_check_ms.load(Ordering::Relaxed);
        let now = now_ms();
        if now >= next
            && self
                .next_check_ms
                .compare_exchange(
                    next,
                    now + CHECK_EVERY_MS,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok()
        {
            self.refresh();
        }
        self.current.load_full()
    }

    /// Look at the files now (the caller won the once-a-second race).
    fn refresh(&self) {
        let stamps: Vec<_> = self.paths.iter().map(stamp).collect();
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.0 == stamps {
            return;
        }
        match (self.build)() {
            Ok(v) => {
                self.current.store(Arc::new(v));
                state.0 = stamps;
                state.1 = None;
                tracing::info!("{}: files changed, reloaded", self.what);
            }
            Err(e) => {
                // The stamps stay old: the next look tries again (the file may be half written).
                if state.1.as_ref() != Some(&e) {
                    tracing::error!("{}: keeping the previous settings: {e}", self.what);
                    state.1 = Some(e);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_changed_file_is_read_again_and_a_broken_one_keeps_the_old_value() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "one").unwrap();
        let p = path.clone();
        let w = Watched::new("test".into(), vec![path.clone()], move || {
            let s = std::fs::read_to_string(&p).map_err(|e| e.to_string())?;
            if s.is_empty() {
                return Err("empty".into());
            }
            Ok(s)
        })
        .unwrap();
        assert_eq!(*w.get(), "one");
        // Different length, so the change shows even where mtimes are coarse.
        std::fs::write(&path, "second").unwrap();
        // Not looked at again within the second.
        assert_eq!(*w.get(), "one");
        w.next_check_ms.store(0, Ordering::Relaxed);
        assert_eq!(*w.get(), "second");
        std::fs::write(&path, "").unwrap();
        w.next_check_ms.store(0, Ordering::Relaxed);
        assert_eq!(*w.get(), "second");
        std::fs::write(&path, "third!!").unwrap();
        w.next_check_ms.store(0, Ordering::Relaxed);
        assert_eq!(*w.get(), "third!!");
    }
}
