//! Where the peers are, and the processes the tests run: [`peer_bin`] finds Prometheus and
//! VictoriaMetrics under `$CARDGUARD_PEERS_DIR/bin` (and panics naming `scripts/fetch-peers.sh`
//! when they are missing, so a missing peer is a failure, never a skip); [`Proc`] runs a child
//! with its output in a log file, kills it on drop and prints the log tail when the test is
//! failing; [`TestDir`] is kept (path printed) when the test fails. Also free ports, wall-clock
//! milliseconds and [`poll_until`], the one polling loop every wait is built on.

use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn peers_dir() -> PathBuf {
    match std::env::var_os("CARDGUARD_PEERS_DIR") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => repo_root().join(".peers"),
    }
}

/// Path of a peer binary (`prometheus`, `promtool`, `victoria-metrics`, `vmagent`).
/// Panics — never skips — when it is missing.
pub fn peer_bin(name: &str) -> PathBuf {
    let p = peers_dir().join("bin").join(name);
    let ok = std::fs::metadata(&p)
        .map(|m| {
            use std::os::unix::fs::PermissionsExt;
            m.is_file() && m.permissions().mode() & 0o111 != 0
        })
        .unwrap_or(false);
    if !ok {
        panic!(
            "peer binary `{name}` not found or not executable at {}.\n\
             The end-to-end tests need the real Prometheus 2.42 and VictoriaMetrics peers: \
             run `scripts/fetch-peers.sh` (or set CARDGUARD_PEERS_DIR to a directory with \
             bin/{{prometheus,promtool,victoria-metrics,vmagent}}).",
            p.display()
        );
    }
    p
}

pub fn cardguard_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_cardguard"))
}

/// True when `CARDGUARD_E2E_DIRECT=1`: Prometheus writes straight into VictoriaMetrics.
pub fn direct_mode() -> bool {
    std::env::var("CARDGUARD_E2E_DIRECT")
        .map(|v| v == "1")
        .unwrap_or(false)
}

/// A free loopback port (bind 127.0.0.1:0, read it, release it).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind 127.0.0.1:0")
        .local_addr()
        .unwrap()
        .port()
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

pub fn fmt_ms(ms: i64) -> String {
    format!("{}.{:03}", ms.div_euclid(1000), ms.rem_euclid(1000))
}

/// Poll `f` every `every` until it returns `Some`, or panic after `timeout` with `what` and
/// the last diagnostic the closure produced (`Err(String)`).
pub fn poll_until<T>(
    what: &str,
    timeout: Duration,
    every: Duration,
    mut f: impl FnMut() -> Result<T, String>,
) -> T {
    let deadline = Instant::now() + timeout;
    let mut last;
    loop {
        match f() {
            Ok(v) => return v,
            Err(e) => last = e,
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}; last state: {last}");
        }
        thread::sleep(every);
    }
}

/// A temporary directory that is deleted on success and kept (path printed) on failure.
pub struct TestDir {
    dir: Option<tempfile::TempDir>,
}

impl TestDir {
    pub fn new(name: &str) -> TestDir {
        let dir = tempfile::Builder::new()
            .prefix(&format!("cardguard-{name}-"))
            .tempdir()
            .expect("create temp dir");
        TestDir { dir: Some(dir) }
    }
    pub fn path(&self) -> &Path {
        self.dir.as_ref().unwrap().path()
    }
    pub fn join(&self, p: &str) -> PathBuf {
        self.path().join(p)
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        if thread::panicking() {
            if let Some(d) = self.dir.take() {
                let p = d.keep();
                eprintln!(
                    "[harness] test failed; logs and data kept in {}",
                    p.display()
                );
            }
        }
    }
}

/// A child process whose output goes to a log file. Killed on drop; on a failing test the tail
/// of its log is printed.
pub struct Proc {
    pub name: String,
    child: Option<Child>,
    pub log: PathBuf,
}

impl Proc {
    pub fn spawn(name: &str, mut cmd: Command, log: PathBuf) -> Proc {
        let out = File::create(&log).unwrap_or_else(|e| panic!("create {}: {e}", log.display()));
        let err = out.try_clone().unwrap();
        cmd.stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err));
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {name} ({cmd:?}): {e}"));
        Proc {
            name: name.to_string(),
            child: Some(child),
            log,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// `Some(status)` if the process has exited.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// Panic (with the log tail) if the process has exited.
    pub fn assert_running(&mut self) {
        if let Some(st) = self.exited() {
            panic!(
                "{} exited unexpectedly ({st}); last log lines:\n{}",
                self.name,
                self.log_tail(40)
            );
        }
    }

    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read(&self.log).map(|b| String::from_utf8_lossy(&b).into_owned());
        match text {
            Ok(t) => {
                let all: Vec<&str> = t.lines().collect();
                let start = all.len().saturating_sub(lines);
                all[start..].join("\n")
            }
            Err(e) => format!("(cannot read {}: {e})", self.log.display()),
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read(&self.log)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// Send a signal by pid (`INT`, `TERM`, ...) and wait up to `timeout` for exit; SIGKILL
    /// after that. Returns the time the process took to exit.
    pub fn stop(&mut self, signal: &str, timeout: Duration) -> Duration {
        let t = Instant::now();
        let Some(child) = self.child.as_mut() else {
            return Duration::ZERO;
        };
        if child.try_wait().ok().flatten().is_none() {
            let _ = Command::new("kill")
                .args(["-s", signal, &child.id().to_string()])
                .status();
            let deadline = Instant::now() + timeout;
            while child.try_wait().ok().flatten().is_none() {
                if Instant::now() > deadline {
                    eprintln!(
                        "[harness] {} ignored SIG{signal} for {timeout:?}; killing",
                        self.name
                    );
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                thread::sleep(Duration::from_millis(20));
            }
        }
        self.child = None;
        t.elapsed()
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!(
                "[harness] ---- last log lines of {} ({}) ----\n{}\n[harness] ---- end of {} log ----",
                self.name,
                self.log.display(),
                self.log_tail(60),
                self.name
            );
        }
        self.kill();
    }
}
