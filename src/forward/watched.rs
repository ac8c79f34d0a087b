//! A value built from files (a password, a token, a TLS client, the web config and the
//! certificates it names) that is rebuilt when one of the files changes, so that rotated
//! credentials and certificates need no restart. The files may depend on the value (a web
//! config names its certificates): then each build says which files it read.
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

/// A build: the value, and the files it was read from.
type Build<T> = dyn Fn() -> Result<(T, Vec<PathBuf>), String> + Send + Sync;

pub struct Watched<T> {
    /// Who this belongs to and what it is, for the log lines (`upstream mimir: tls_config`).
    what: String,
    build: Box<Build<T>>,
    current: ArcSwap<T>,
    next_check_ms: AtomicU64,
    state: Mutex<Files>,
    /// Called once per broken version of the files (a counter).
    on_failure: Option<Box<dyn Fn() + Send + Sync>>,
}

/// What `current` was built from, and the last failed rebuild.
struct Files {
    paths: Vec<PathBuf>,
    stamps: Vec<Option<Stamp>>,
    /// The last rebuild error (logged once) and the stamps it was seen with (counted once).
    failed: Option<(String, Vec<Option<Stamp>>)>,
}

impl<T> Watched<T> {
    /// Build the first value from a fixed set of files now: an error here is a configuration
    /// error.
    pub fn new(
        what: String,
        paths: Vec<PathBuf>,
        build: impl Fn() -> Result<T, String> + Send + Sync + 'static,
    ) -> Result<Watched<T>, String> {
        let fixed = paths.clone();
        Self::with_files(what, move || Ok((build()?, fixed.clone())))
    }

    /// Build the first value now from files the build itself names (a config file first, then
    /// the files it lists).
    pub fn with_files(
        what: String,
        build: impl Fn() -> Result<(T, Vec<PathBuf>), String> + Send + Sync + 'static,
    ) -> Result<Watched<T>, String> {
        let (first, paths) = build()?;
        let stamps = paths.iter().map(stamp).collect();
        Ok(Watched {
            what,
            build: Box::new(build),
            current: ArcSwap::from_pointee(first),
            next_check_ms: AtomicU64::new(now_ms() + CHECK_EVERY_MS),
            state: Mutex::new(Files {
                paths,
                stamps,
                failed: None,
            }),
            on_failure: None,
        })
    }

    /// Call `f` once for each broken version of the files (not on every look at the same one).
    pub fn on_failure(mut self, f: impl Fn() + Send + Sync + 'static) -> Self {
        self.on_failure = Some(Box::new(f));
        self
    }

    /// The current value, without looking at the files.
    #[cfg(test)]
    pub fn current(&self) -> Arc<T> {
        self.current.load_full()
    }

    /// Look at the files now (a SIGHUP or `/-/reload`), whatever the time since the last look.
    /// The result: whether the value in force is built from the files as they are now.
    pub fn check_now(&self) -> Result<(), String> {
        self.next_check_ms
            .store(now_ms() + CHECK_EVERY_MS, Ordering::Relaxed);
        self.refresh();
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        match &state.failed {
            Some((e, _)) => Err(e.clone()),
            None => Ok(()),
        }
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
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let stamps: Vec<_> = state.paths.iter().map(stamp).collect();
        if state.stamps == stamps {
            // Back as the value in force was built from (a broken version undone).
            state.failed = None;
            return;
        }
        match (self.build)() {
            Ok((v, paths)) => {
                self.current.store(Arc::new(v));
                // Stamped before the build where the files are the same, so that a change
                // made while building shows at the next look.
                state.stamps = if paths == state.paths {
                    stamps
                } else {
                    paths.iter().map(stamp).collect()
                };
                state.paths = paths;
                state.failed = None;
                tracing::info!("{}: files changed, reloaded", self.what);
            }
            Err(e) => {
                // The stamps stay old: the next look tries again (the file may be half written).
                let (new_error, new_version) = match &state.failed {
                    Some((old, seen)) => (*old != e, *seen != stamps),
                    None => (true, true),
                };
                if new_error {
                    tracing::error!("{}: keeping the previous settings: {e}", self.what);
                }
                if new_version {
                    if let Some(f) = &self.on_failure {
                        f();
                    }
                }
                state.failed = Some((e, stamps));
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

    #[test]
    fn the_files_follow_the_value_and_each_broken_version_is_counted_once() {
        use std::sync::atomic::AtomicUsize;
        let dir = tempfile::tempdir().unwrap();
        let (index, a, b) = (
            dir.path().join("index"),
            dir.path().join("a"),
            dir.path().join("b"),
        );
        std::fs::write(&index, "a").unwrap();
        std::fs::write(&a, "A1").unwrap();
        std::fs::write(&b, "B1").unwrap();
        let d = dir.path().to_path_buf();
        let i = index.clone();
        let failures = Arc::new(AtomicUsize::new(0));
        let f = failures.clone();
        let w = Watched::with_files("test".into(), move || {
            let name = std::fs::read_to_string(&i).map_err(|e| e.to_string())?;
            let named = d.join(name.trim());
            let v = std::fs::read_to_string(&named).map_err(|e| e.to_string())?;
            Ok((v, vec![i.clone(), named]))
        })
        .unwrap()
        .on_failure(move || {
            f.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(*w.current(), "A1");
        std::fs::write(&index, "b").unwrap();
        w.check_now().unwrap();
        assert_eq!(*w.current(), "B1");
        // `a` is no longer watched, `b` is.
        std::fs::write(&a, "A22").unwrap();
        w.check_now().unwrap();
        assert_eq!(*w.current(), "B1");
        std::fs::write(&b, "B22").unwrap();
        w.check_now().unwrap();
        assert_eq!(*w.current(), "B22");
        // A broken index: counted once however often it is looked at.
        std::fs::write(&index, "missing").unwrap();
        assert!(w.check_now().is_err());
        assert!(w.check_now().is_err());
        assert_eq!(*w.current(), "B22");
        assert_eq!(failures.load(Ordering::Relaxed), 1);
        std::fs::write(&index, "missing2").unwrap();
        assert!(w.check_now().is_err());
        assert_eq!(failures.load(Ordering::Relaxed), 2);
        std::fs::write(&index, "a").unwrap();
        w.check_now().unwrap();
        assert_eq!(*w.current(), "A22");
    }
}
