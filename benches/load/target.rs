//! The proxies under test as child processes, and what /proc says about them.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Which proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Cardguard,
    Vmagent,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Cardguard => "cardguard",
            Kind::Vmagent => "vmagent",
        }
    }
}

/// Limits both proxies get, expressed the same way.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// cardguard `guard.max_series` and vmagent `-remoteWrite.maxHourlySeries`.
    pub global: u64,
    /// cardguard's per-service budget (vmagent has none).
    pub per_service: u64,
}

/// What a shape adds to both proxies' configuration.
#[derive(Debug, Clone, Default)]
pub struct Extra {
    /// Appended to cardguard's config (top-level keys: `relabel_configs`, `rule_files`...).
    pub cardguard_yaml: String,
    /// Appended under cardguard's `guard:` (indented two spaces).
    pub guard_yaml: String,
    /// cardguard forwards remote write 2.0 (for 2.0 senders, so bodies pass through).
    pub upstream_v2: bool,
    /// cardguard without its `guard:` section (`--unguarded`): the proxy's own ceiling.
    pub no_guard: bool,
    /// The guard's owner label (`None`: `service`).
    pub owner_label: Option<&'static str>,
    /// More vmagent flags.
    pub vmagent_args: Vec<String>,
}

/// CPUs (a `taskset -c` list) the proxies run on, when `--pin-proxy` is given; the harness
/// then keeps itself off them.
pub static PIN: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Pin the harness (every thread of this process) to `cpus`.
pub fn pin_self(cpus: &str) {
    let st = Command::new("taskset")
        .args(["-a", "-p", "-c", cpus, &std::process::id().to_string()])
        .stdout(Stdio::null())
        .status()
        .expect("taskset (util-linux) is needed for --pin-proxy");
    assert!(st.success(), "taskset -a -p -c {cpus} failed");
}

/// The CPUs of `0..n` not in the `taskset -c` list `cpus` (plain numbers and ranges).
pub fn other_cpus(cpus: &str, n: usize) -> String {
    let mut taken = vec![false; n];
    for part in cpus.split(',').filter(|p| !p.is_empty()) {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        let (a, b): (usize, usize) = (a.trim().parse().unwrap(), b.trim().parse().unwrap());
        for t in taken.iter_mut().take(b + 1).skip(a) {
            *t = true;
        }
    }
    let rest: Vec<String> = (0..n)
        .filter(|i| !taken[*i])
        .map(|i| i.to_string())
        .collect();
    assert!(
        !rest.is_empty(),
        "--pin-proxy {cpus} leaves no CPU for the harness"
    );
    rest.join(",")
}

/// The cardguard binary: this build's, or `CARDGUARD_LOAD_BIN` (to compare two builds with
/// one harness, e.g. before and after a change).
fn cardguard_bin() -> PathBuf {
    match std::env::var_os("CARDGUARD_LOAD_BIN") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => PathBuf::from(env!("CARGO_BIN_EXE_cardguard")),
    }
}

pub struct Target {
    pub kind: Kind,
    pub addr: SocketAddr,
    child: Child,
    pub log: PathBuf,
}

impl Drop for Target {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind 127.0.0.1:0")
        .local_addr()
        .unwrap()
        .port()
}

pub fn peers_bin(name: &str) -> PathBuf {
    let dir = match std::env::var_os("CARDGUARD_PEERS_DIR") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".peers"),
    };
    dir.join("bin").join(name)
}

impl Target {
    /// cardguard with the config `config(port)` writes (it must listen on 127.0.0.1:port).
    pub fn start_cardguard(dir: &Path, config: impl FnOnce(u16) -> String) -> Target {
        let port = free_port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let log = dir.join(format!("cardguard-{port}.log"));
        let cfg = dir.join(format!("cardguard-{port}.yml"));
        std::fs::write(&cfg, config(port)).expect("write cardguard config");
        let mut c = Command::new(cardguard_bin());
        c.arg("--log.level=warn")
            .arg("serve")
            .arg("--config")
            .arg(cfg);
        Target::spawn(Kind::Cardguard, addr, log, c)
    }

    /// Start `kind` forwarding to `upstream_url`, with its scratch files in `dir`.
    pub fn start(kind: Kind, dir: &Path, upstream_url: &str, limits: Limits) -> Target {
        Target::start_with(kind, dir, upstream_url, limits, &Extra::default())
    }

    /// `start`, with a shape's additions to the configuration.
    pub fn start_with(
        kind: Kind,
        dir: &Path,
        upstream_url: &str,
        limits: Limits,
        extra: &Extra,
    ) -> Target {
        let port = free_port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let log = dir.join(format!("{}-{port}.log", kind.name()));
        let cmd = match kind {
            Kind::Cardguard => {
                let cfg = dir.join(format!("cardguard-{port}.yml"));
                std::fs::write(
                    &cfg,
                    format!(
                        "server:\n  listen_address: 127.0.0.1:{port}\n\
                         upstream:\n  url: {upstream_url}\n  remote_write_version: \"{version}\"\n\
                         {guard}{more}",
                        version = if extra.upstream_v2 { "2.0" } else { "1.0" },
                        guard = if extra.no_guard {
                            String::new()
                        } else {
                            format!(
                                "guard:\n  owner_labels: [{owner}]\n  max_series: {global}\n  \
                                 default_budget:\n    max_series: {per}\n    action: drop\n{more}",
                                global = limits.global,
                                per = limits.per_service,
                                owner = extra.owner_label.unwrap_or("service"),
                                more = extra.guard_yaml,
                            )
                        },
                        more = extra.cardguard_yaml,
                    ),
                )
                .expect("write cardguard config");
                let mut c = Command::new(cardguard_bin());
                c.arg("--log.level=warn")
                    .arg("serve")
                    .arg("--config")
                    .arg(cfg);
                c
            }
            Kind::Vmagent => {
                let bin = peers_bin("vmagent");
                if !bin.is_file() {
                    panic!(
                        "vmagent not found at {}: the load harness runs cardguard and vmagent \
                         side by side; run `scripts/fetch-peers.sh` (or set CARDGUARD_PEERS_DIR)",
                        bin.display()
                    );
                }
                let queue = dir.join(format!("vmagent-queue-{port}"));
                let mut c = Command::new(bin);
                c.arg(format!("-httpListenAddr=127.0.0.1:{port}"))
                    .arg(format!("-remoteWrite.url={upstream_url}"))
                    .arg(format!("-remoteWrite.maxHourlySeries={}", limits.global))
                    .arg(format!("-remoteWrite.tmpDataPath={}", queue.display()))
                    .arg("-remoteWrite.flushInterval=100ms")
                    .arg("-loggerLevel=ERROR")
                    .args(&extra.vmagent_args);
                c
            }
        };
        Target::spawn(kind, addr, log, cmd)
    }

    fn spawn(kind: Kind, addr: SocketAddr, log: PathBuf, cmd: Command) -> Target {
        let mut cmd = match PIN.get() {
            Some(cpus) => {
                let mut c = Command::new("taskset");
                c.arg("-c")
                    .arg(cpus)
                    .arg(cmd.get_program())
                    .args(cmd.get_args());
                c
            }
            None => cmd,
        };
        let logf = std::fs::File::create(&log).expect("create log");
        cmd.stdin(Stdio::null())
            .stdout(logf.try_clone().unwrap())
            .stderr(logf);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", kind.name()));
        let mut t = Target {
            kind,
            addr,
            child,
            log,
        };
        t.wait_ready();
        t
    }

    fn wait_ready(&mut self) {
        let path = match self.kind {
            Kind::Cardguard => "/-/ready",
            Kind::Vmagent => "/health",
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(st)) = self.child.try_wait() {
                panic!(
                    "{} exited during start-up ({st}); log {}:\n{}",
                    self.kind.name(),
                    self.log.display(),
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            if http_get_ok(self.addr, path) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("{} not ready within 30 s", self.kind.name());
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn stats(&self) -> ProcStats {
        ProcStats::read(self.pid())
    }

    /// Panics with the log when the process died.
    pub fn assert_running(&mut self) {
        if let Ok(Some(st)) = self.child.try_wait() {
            panic!(
                "{} exited ({st}); log:\n{}",
                self.kind.name(),
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
        }
    }
}

fn http_get_ok(addr: SocketAddr, path: &str) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
    if s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .is_err()
    {
        return false;
    }
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.starts_with("HTTP/1.1 200")
}

/// The body of `GET /metrics` (empty on any failure).
pub fn metrics(addr: SocketAddr) -> String {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)) else {
        return String::new();
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    if s.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
        .is_err()
    {
        return String::new();
    }
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default()
}

/// CPU time and memory of a process, from /proc.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcStats {
    /// utime + stime, seconds.
    pub cpu_s: f64,
    /// VmRSS, bytes.
    pub rss: u64,
    /// VmHWM (peak RSS), bytes.
    pub hwm: u64,
}

fn clk_tck() -> f64 {
    static TCK: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TCK.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

impl ProcStats {
    pub fn read(pid: u32) -> ProcStats {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // Fields after the parenthesised command name: state is field 3, utime 14, stime 15.
        let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
        let f: Vec<&str> = after.split_whitespace().collect();
        let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        let cpu_s = (ticks(11) + ticks(12)) / clk_tck();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let kb = |key: &str| {
            status
                .lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
                * 1024
        };
        ProcStats {
            cpu_s,
            rss: kb("VmRSS:"),
            hwm: kb("VmHWM:"),
        }
    }
}
