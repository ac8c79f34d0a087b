//! Shared harness for cardguard's end-to-end and hostile-input tests.
//!
//! Everything here uses std threads and blocking IO (ureq) and binds 127.0.0.1 only.
//!
//! * [`peer_bin`] finds Prometheus / VictoriaMetrics under `$CARDGUARD_PEERS_DIR/bin` (default
//!   `<repo>/.peers/bin`) and panics naming `scripts/fetch-peers.sh` when they are missing.
//! * [`Proc`] runs a child with stdout+stderr in a log file, kills it on drop and prints the
//!   tail of the log when the test is failing. [`TestDir`] is a temp dir that is kept (and its
//!   path printed) when the test fails.
//! * [`Vm`], [`Prom`], [`Cardguard`] start the real processes; [`TestTarget`] is a scrape
//!   target with known values; [`FakeUpstream`] is a remote-write receiver that records bodies.
//! * [`rw`] hand-encodes / decodes remote-write 1.0 protobuf (no dependency on `cardguard::wire`).
//! * [`json`] is a tiny JSON reader for the Prometheus and VictoriaMetrics HTTP APIs.
//!
//! `CARDGUARD_E2E_DIRECT=1` makes the e2e tests point Prometheus straight at VictoriaMetrics
//! (a self-test of the harness; cardguard is then not exercised and a warning is printed).
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

// ---------------------------------------------------------------------------------------------
// Paths, peers, ports, time
// ---------------------------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------------------------
// Test directory and child processes
// ---------------------------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------------------------
// HTTP client helpers
// ---------------------------------------------------------------------------------------------

/// A ureq agent that returns non-2xx responses as `Ok`, ignores proxy env vars, and times out.
pub fn agent() -> ureq::Agent {
    agent_with_timeout(Duration::from_secs(30))
}

pub fn agent_with_timeout(t: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .proxy(None)
        .timeout_global(Some(t))
        .build()
        .into()
}

/// A response reduced to what the tests look at.
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

fn into_resp(r: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> Result<Resp, String> {
    let mut r = r.map_err(|e| e.to_string())?;
    let status = r.status().as_u16();
    let headers = r
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let body = r
        .body_mut()
        .with_config()
        .limit(512 << 20)
        .read_to_vec()
        .map_err(|e| format!("reading body: {e}"))?;
    Ok(Resp {
        status,
        headers,
        body,
    })
}

pub fn http_get(url: &str) -> Result<Resp, String> {
    into_resp(agent().get(url).call())
}

pub fn http_get_query(url: &str, query: &[(&str, &str)]) -> Result<Resp, String> {
    let mut req = agent().get(url);
    for (k, v) in query {
        req = req.query(*k, *v);
    }
    into_resp(req.call())
}

/// POST with explicit headers (no headers are added other than ureq's own basics).
pub fn http_post(url: &str, headers: &[(&str, &str)], body: &[u8]) -> Result<Resp, String> {
    let mut req = agent().post(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    into_resp(req.send(body))
}

/// POST a snappy-compressed remote-write 1.0 body with the standard headers.
pub fn post_remote_write(url: &str, snappy_body: &[u8]) -> Result<Resp, String> {
    http_post(url, &rw::STANDARD_HEADERS, snappy_body)
}

/// Wait until GET `url` answers 200, checking that `proc` is still alive on every attempt.
pub fn wait_http_ok(proc: &mut Proc, url: &str, timeout: Duration) {
    if let Err(e) = try_wait_http_ok(proc, url, timeout) {
        panic!("{e}");
    }
}

/// Like [`wait_http_ok`] but returns the failure (with the log tail) instead of panicking.
pub fn try_wait_http_ok(proc: &mut Proc, url: &str, timeout: Duration) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    let mut last;
    loop {
        if let Some(st) = proc.exited() {
            return Err(format!(
                "{} exited ({st}) before answering 200 on {url}; last log lines:\n{}",
                proc.name,
                proc.log_tail(40)
            ));
        }
        match http_get(url) {
            Ok(r) if r.status == 200 => return Ok(()),
            Ok(r) => last = format!("status {} body {:?}", r.status, r.text()),
            Err(e) => last = e,
        }
        if Instant::now() > deadline {
            return Err(format!(
                "{} did not answer 200 on {url} within {timeout:?} (last: {last}); log tail:\n{}",
                proc.name,
                proc.log_tail(40)
            ));
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// Start a server on a free port: `spawn(port)` starts it, `ready_url(port)` must answer 200.
/// [`free_port`] is racy (the port is released before the child binds it), so a child that
/// died with "address already in use" is retried on another port.
pub fn start_on_free_port(
    spawn: impl Fn(u16) -> Proc,
    ready_url: impl Fn(u16) -> String,
    timeout: Duration,
) -> (u16, Proc) {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let port = free_port();
        let mut p = spawn(port);
        match try_wait_http_ok(&mut p, &ready_url(port), timeout) {
            Ok(()) => return (port, p),
            Err(e) => {
                let log = p.log_text().to_ascii_lowercase();
                if log.contains("address already in use") && attempt < 4 {
                    eprintln!(
                        "[harness] {}: port {port} was taken meanwhile; retrying",
                        p.name
                    );
                    p.kill();
                    continue;
                }
                panic!("{e}");
            }
        }
    }
}

/// A raw HTTP/1.1 exchange over a TcpStream: the request head and body are written from a
/// separate thread (write errors ignored), so a server that answers early and closes (e.g. a
/// 413 before reading an oversized body) still yields its response.
pub fn raw_http(addr: &str, head: &str, body: Vec<u8>, timeout: Duration) -> Result<Resp, String> {
    let stream = TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
    stream.set_read_timeout(Some(timeout)).unwrap();
    let mut w = stream.try_clone().unwrap();
    let head = head.to_string();
    let writer = thread::spawn(move || {
        if w.write_all(head.as_bytes()).is_err() {
            return;
        }
        for chunk in body.chunks(64 << 10) {
            if w.write_all(chunk).is_err() {
                return;
            }
        }
        let _ = w.flush();
    });
    let mut reader = BufReader::new(stream);
    let resp = read_http_response(&mut reader);
    let _ = reader.get_ref().shutdown(Shutdown::Both);
    let _ = writer.join();
    resp
}

fn read_http_response(r: &mut BufReader<TcpStream>) -> Result<Resp, String> {
    let mut line = String::new();
    r.read_line(&mut line)
        .map_err(|e| format!("reading status line: {e}"))?;
    let mut parts = line.split_whitespace();
    let _ver = parts.next().ok_or("empty response")?;
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or(format!("bad status line {line:?}"))?;
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        r.read_line(&mut h)
            .map_err(|e| format!("reading headers: {e}"))?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    let resp = Resp {
        status,
        headers,
        body: Vec::new(),
    };
    let mut body = Vec::new();
    if let Some(n) = resp
        .header("content-length")
        .and_then(|v| v.parse::<usize>().ok())
    {
        body.resize(n, 0);
        r.read_exact(&mut body)
            .map_err(|e| format!("reading body: {e}"))?;
    } else if resp
        .header("transfer-encoding")
        .map(|v| v.eq_ignore_ascii_case("chunked"))
        == Some(true)
    {
        body = read_chunked(r)?;
    }
    Ok(Resp { body, ..resp })
}

// ---------------------------------------------------------------------------------------------
// A tiny threaded HTTP/1.1 server (scrape target, fake upstream, capture server)
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub path: String,
    /// Header names lower-cased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Sleep this long before answering (to provoke upstream timeouts).
    pub delay: Duration,
}

impl Reply {
    pub fn status(status: u16) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body: Vec::new(),
            delay: Duration::ZERO,
        }
    }
    pub fn with_header(mut self, k: &str, v: &str) -> Reply {
        self.headers.push((k.to_string(), v.to_string()));
        self
    }
    pub fn with_body(mut self, b: &[u8]) -> Reply {
        self.body = b.to_vec();
        self
    }
    pub fn with_delay(mut self, d: Duration) -> Reply {
        self.delay = d;
        self
    }
}

type Handler = Arc<dyn Fn(&Request) -> Reply + Send + Sync>;

pub struct HttpServer {
    pub port: u16,
    stop: Arc<AtomicBool>,
    acceptor: Option<thread::JoinHandle<()>>,
}

impl HttpServer {
    pub fn start(handler: Handler) -> HttpServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind test server");
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let acceptor = thread::spawn(move || {
            for conn in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let h = handler.clone();
                let stop3 = stop2.clone();
                thread::spawn(move || serve_conn(conn, h, stop3));
            }
        });
        HttpServer {
            port,
            stop,
            acceptor: Some(acceptor),
        }
    }
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(a) = self.acceptor.take() {
            let _ = a.join();
        }
    }
}

fn serve_conn(conn: TcpStream, handler: Handler, stop: Arc<AtomicBool>) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(60)));
    let _ = conn.set_nodelay(true);
    let mut w = match conn.try_clone() {
        Ok(w) => w,
        Err(_) => return,
    };
    let mut r = BufReader::new(conn);
    loop {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let req = match read_http_request(&mut r) {
            Ok(Some(req)) => req,
            Ok(None) => return,
            Err(_) => return,
        };
        let close = req
            .header("connection")
            .map(|v| v.eq_ignore_ascii_case("close"))
            == Some(true);
        let reply = handler(&req);
        if !reply.delay.is_zero() {
            thread::sleep(reply.delay);
        }
        let mut out = format!("HTTP/1.1 {} {}\r\n", reply.status, reason(reply.status));
        for (k, v) in &reply.headers {
            out.push_str(&format!("{k}: {v}\r\n"));
        }
        out.push_str(&format!("Content-Length: {}\r\n", reply.body.len()));
        if close {
            out.push_str("Connection: close\r\n");
        }
        out.push_str("\r\n");
        let mut bytes = out.into_bytes();
        if req.method != "HEAD" {
            bytes.extend_from_slice(&reply.body);
        }
        if w.write_all(&bytes).is_err() || close {
            return;
        }
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        204 => "No Content",
        400 => "Bad Request",
        404 => "Not Found",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

fn read_http_request(r: &mut BufReader<TcpStream>) -> Result<Option<Request>, String> {
    let mut line = String::new();
    let n = r.read_line(&mut line).map_err(|e| e.to_string())?;
    if n == 0 {
        return Ok(None);
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().ok_or("no method")?.to_string();
    let path = parts.next().ok_or("no path")?.to_string();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        r.read_line(&mut h).map_err(|e| e.to_string())?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    let mut req = Request {
        method,
        path,
        headers,
        body: Vec::new(),
    };
    if req
        .header("transfer-encoding")
        .map(|v| v.eq_ignore_ascii_case("chunked"))
        == Some(true)
    {
        req.body = read_chunked(r)?;
    } else if let Some(n) = req
        .header("content-length")
        .and_then(|v| v.parse::<usize>().ok())
    {
        let mut body = vec![0; n];
        r.read_exact(&mut body).map_err(|e| e.to_string())?;
        req.body = body;
    }
    Ok(Some(req))
}

fn read_chunked(r: &mut BufReader<TcpStream>) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    loop {
        let mut size = String::new();
        r.read_line(&mut size).map_err(|e| e.to_string())?;
        let size = size.trim().split(';').next().unwrap_or("");
        let n = usize::from_str_radix(size, 16).map_err(|e| format!("chunk size {size:?}: {e}"))?;
        if n == 0 {
            // trailers
            loop {
                let mut t = String::new();
                r.read_line(&mut t).map_err(|e| e.to_string())?;
                if t.trim().is_empty() {
                    return Ok(body);
                }
            }
        }
        let start = body.len();
        body.resize(start + n, 0);
        r.read_exact(&mut body[start..])
            .map_err(|e| e.to_string())?;
        let mut crlf = [0u8; 2];
        r.read_exact(&mut crlf).map_err(|e| e.to_string())?;
    }
}

// ---------------------------------------------------------------------------------------------
// Scrape target with known values
// ---------------------------------------------------------------------------------------------

pub type Labels = BTreeMap<String, String>;

pub fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

pub fn fmt_labels(l: &Labels) -> String {
    let name = l.get("__name__").cloned().unwrap_or_default();
    let rest: Vec<String> = l
        .iter()
        .filter(|(k, _)| *k != "__name__")
        .map(|(k, v)| format!("{k}={v:?}"))
        .collect();
    format!("{name}{{{}}}", rest.join(","))
}

/// What value a target series has on the n-th scrape (n = 1, 2, ...).
#[derive(Debug, Clone, Copy)]
pub enum Expect {
    Const(f64),
    /// `mul * n`, n being the scrape number: strictly increasing.
    PerScrape(f64),
}

impl Expect {
    pub fn at(self, n: u64) -> f64 {
        match self {
            Expect::Const(v) => v,
            Expect::PerScrape(m) => m * n as f64,
        }
    }
}

/// The series the standard test target exposes: (labels without job/instance, value rule,
/// exposition line). Names, label values and numbers are chosen to exercise escaping, UTF-8,
/// negative/exponent values and a classic histogram.
pub fn standard_target_series() -> Vec<(Labels, Expect)> {
    let mut v = vec![
        (
            labels(&[("__name__", "cg_test_scrapes_total")]),
            Expect::PerScrape(1.0),
        ),
        (
            labels(&[
                ("__name__", "cg_test_requests_total"),
                ("method", "get"),
                ("code", "200"),
            ]),
            Expect::PerScrape(3.0),
        ),
        (
            labels(&[
                ("__name__", "cg_test_requests_total"),
                ("method", "post"),
                ("code", "500"),
            ]),
            Expect::Const(7.0),
        ),
        (
            labels(&[("__name__", "cg_test_temperature_celsius"), ("room", "a")]),
            Expect::Const(21.5),
        ),
        (
            labels(&[("__name__", "cg_test_temperature_celsius"), ("room", "b")]),
            Expect::Const(-3.25),
        ),
        (
            labels(&[("__name__", "cg_test_temperature_celsius"), ("room", "c")]),
            Expect::Const(1e6),
        ),
        (
            labels(&[
                ("__name__", "cg_test_info"),
                ("city", "Zürich"),
                ("quote", "a\"b\\c"),
                ("multi", "line1\nline2"),
            ]),
            Expect::Const(1.0),
        ),
        (
            labels(&[("__name__", "cg_test_latency_seconds_sum")]),
            Expect::Const(4.75),
        ),
        (
            labels(&[("__name__", "cg_test_latency_seconds_count")]),
            Expect::Const(10.0),
        ),
    ];
    for (le, c) in [("0.1", 3.0), ("0.5", 5.0), ("1", 8.0), ("+Inf", 10.0)] {
        v.push((
            labels(&[("__name__", "cg_test_latency_seconds_bucket"), ("le", le)]),
            Expect::Const(c),
        ));
    }
    v
}

pub fn standard_exposition(n: u64) -> String {
    format!(
        "# HELP cg_test_scrapes_total Number of times this target was scraped.\n\
         # TYPE cg_test_scrapes_total counter\n\
         cg_test_scrapes_total {n}\n\
         # HELP cg_test_requests_total Requests served, by method and code.\n\
         # TYPE cg_test_requests_total counter\n\
         cg_test_requests_total{{method=\"get\",code=\"200\"}} {}\n\
         cg_test_requests_total{{method=\"post\",code=\"500\"}} 7\n\
         # HELP cg_test_temperature_celsius Temperature per room.\n\
         # TYPE cg_test_temperature_celsius gauge\n\
         cg_test_temperature_celsius{{room=\"a\"}} 21.5\n\
         cg_test_temperature_celsius{{room=\"b\"}} -3.25\n\
         cg_test_temperature_celsius{{room=\"c\"}} 1e+06\n\
         # HELP cg_test_info Exotic label values.\n\
         # TYPE cg_test_info gauge\n\
         cg_test_info{{city=\"Zürich\",quote=\"a\\\"b\\\\c\",multi=\"line1\\nline2\"}} 1\n\
         # HELP cg_test_latency_seconds Request latency.\n\
         # TYPE cg_test_latency_seconds histogram\n\
         cg_test_latency_seconds_bucket{{le=\"0.1\"}} 3\n\
         cg_test_latency_seconds_bucket{{le=\"0.5\"}} 5\n\
         cg_test_latency_seconds_bucket{{le=\"1\"}} 8\n\
         cg_test_latency_seconds_bucket{{le=\"+Inf\"}} 10\n\
         cg_test_latency_seconds_sum 4.75\n\
         cg_test_latency_seconds_count 10\n",
        3 * n
    )
}

/// A bigger, realistic-looking exposition (~300 series) for the payload capture.
pub fn capture_exposition(n: u64) -> String {
    let mut s = String::new();
    s.push_str("# HELP http_requests_total Requests by handler, method and code.\n");
    s.push_str("# TYPE http_requests_total counter\n");
    let handlers = [
        "/",
        "/api/users",
        "/api/orders",
        "/api/items",
        "/login",
        "/logout",
        "/health",
        "/metrics",
    ];
    let methods = ["GET", "POST", "PUT", "DELETE"];
    let codes = ["200", "201", "400", "404", "500"];
    for (hi, h) in handlers.iter().enumerate() {
        for (mi, m) in methods.iter().enumerate() {
            for (ci, c) in codes.iter().enumerate() {
                let v = (hi * 97 + mi * 13 + ci * 7 + 1) as u64 * n;
                s.push_str(&format!(
                    "http_requests_total{{handler=\"{h}\",method=\"{m}\",code=\"{c}\"}} {v}\n"
                ));
            }
        }
    }
    s.push_str("# HELP http_request_duration_seconds Request latency.\n");
    s.push_str("# TYPE http_request_duration_seconds histogram\n");
    let les = [
        "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10", "+Inf",
    ];
    for (hi, h) in handlers.iter().enumerate() {
        let mut cum = 0u64;
        for (li, le) in les.iter().enumerate() {
            cum += ((hi + 1) * (li + 2)) as u64 * n;
            s.push_str(&format!(
                "http_request_duration_seconds_bucket{{handler=\"{h}\",le=\"{le}\"}} {cum}\n"
            ));
        }
        s.push_str(&format!(
            "http_request_duration_seconds_sum{{handler=\"{h}\"}} {}\n",
            cum as f64 * 0.137
        ));
        s.push_str(&format!(
            "http_request_duration_seconds_count{{handler=\"{h}\"}} {cum}\n"
        ));
    }
    s.push_str("# HELP app_queue_depth Items waiting per queue.\n# TYPE app_queue_depth gauge\n");
    for q in 0..40 {
        s.push_str(&format!(
            "app_queue_depth{{queue=\"q{q:02}\",shard=\"{}\"}} {}\n",
            q % 4,
            (q * 31 + n as usize) % 100
        ));
    }
    s
}

/// A scrape target on 127.0.0.1 serving `render(n)` on the n-th GET (n starts at 1).
pub struct TestTarget {
    pub server: HttpServer,
    scrapes: Arc<AtomicU64>,
}

impl TestTarget {
    pub fn start() -> TestTarget {
        Self::start_with(Arc::new(standard_exposition))
    }

    pub fn start_with(render: Arc<dyn Fn(u64) -> String + Send + Sync>) -> TestTarget {
        let scrapes = Arc::new(AtomicU64::new(0));
        let s2 = scrapes.clone();
        let server = HttpServer::start(Arc::new(move |req: &Request| {
            if req.method == "GET" && req.path.starts_with("/metrics") {
                let n = s2.fetch_add(1, Ordering::SeqCst) + 1;
                Reply::status(200)
                    .with_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
                    .with_body(render(n).as_bytes())
            } else {
                Reply::status(404)
            }
        }));
        TestTarget { server, scrapes }
    }

    pub fn addr(&self) -> String {
        self.server.addr()
    }

    pub fn scrapes(&self) -> u64 {
        self.scrapes.load(Ordering::SeqCst)
    }
}

// ---------------------------------------------------------------------------------------------
// Fake remote-write upstream
// ---------------------------------------------------------------------------------------------

pub struct FakeUpstream {
    pub server: HttpServer,
    reply: Arc<Mutex<Reply>>,
    requests: Arc<Mutex<Vec<Request>>>,
    count: Arc<AtomicUsize>,
}

impl FakeUpstream {
    /// Answers 204 to everything and records every request.
    pub fn start() -> FakeUpstream {
        let reply = Arc::new(Mutex::new(Reply::status(204)));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let count = Arc::new(AtomicUsize::new(0));
        let (r2, q2, c2) = (reply.clone(), requests.clone(), count.clone());
        let server = HttpServer::start(Arc::new(move |req: &Request| {
            q2.lock().unwrap().push(req.clone());
            c2.fetch_add(1, Ordering::SeqCst);
            r2.lock().unwrap().clone()
        }));
        FakeUpstream {
            server,
            reply,
            requests,
            count,
        }
    }
    pub fn set_reply(&self, r: Reply) {
        *self.reply.lock().unwrap() = r;
    }
    pub fn count(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }
    pub fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }
    pub fn write_url(&self) -> String {
        format!("http://{}/api/v1/write", self.server.addr())
    }
}

// ---------------------------------------------------------------------------------------------
// VictoriaMetrics single-node
// ---------------------------------------------------------------------------------------------

/// Raw samples of one series: (timestamp ms, value).
pub type Samples = Vec<(i64, f64)>;
pub type SeriesMap = BTreeMap<Labels, Samples>;

pub struct Vm {
    pub port: u16,
    pub data_dir: PathBuf,
    log_dir: PathBuf,
    proc: Option<Proc>,
    starts: u32,
}

impl Vm {
    pub fn start(dir: &TestDir) -> Vm {
        let mut vm = Vm {
            port: 0,
            data_dir: dir.join("vm-data"),
            log_dir: dir.path().to_path_buf(),
            proc: None,
            starts: 1,
        };
        let (port, p) = start_on_free_port(
            |port| vm.spawn(port),
            |port| format!("http://127.0.0.1:{port}/health"),
            Duration::from_secs(30),
        );
        vm.port = port;
        vm.proc = Some(p);
        vm
    }

    fn spawn(&self, port: u16) -> Proc {
        let mut cmd = Command::new(peer_bin("victoria-metrics"));
        cmd.arg(format!("-httpListenAddr=127.0.0.1:{port}"))
            .arg(format!("-storageDataPath={}", self.data_dir.display()))
            .arg("-retentionPeriod=100y")
            // Make just-written samples visible to queries at once (default hides the last 30s).
            .arg("-search.latencyOffset=0s")
            // No response cache: the tests re-query the same ranges while data is arriving.
            .arg("-search.disableCache")
            // Lossless floats (the default, stated explicitly because the tests compare exactly).
            .arg("-precisionBits=64")
            .arg("-loggerLevel=INFO");
        let log = self
            .log_dir
            .join(format!("victoria-metrics-{}.log", self.starts));
        Proc::spawn("victoria-metrics", cmd, log)
    }

    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
    pub fn write_url(&self) -> String {
        format!("{}/api/v1/write", self.base())
    }

    /// Graceful stop (SIGINT: VictoriaMetrics flushes acknowledged data to disk first).
    pub fn stop(&mut self) -> Duration {
        match self.proc.take() {
            Some(mut p) => p.stop("INT", Duration::from_secs(20)),
            None => Duration::ZERO,
        }
    }

    /// Start again on the same port and data directory.
    pub fn restart(&mut self) {
        assert!(self.proc.is_none(), "Vm::restart while running");
        self.starts += 1;
        let mut p = self.spawn(self.port);
        wait_http_ok(
            &mut p,
            &format!("{}/health", self.base()),
            Duration::from_secs(30),
        );
        self.proc = Some(p);
    }

    pub fn assert_running(&mut self) {
        if let Some(p) = self.proc.as_mut() {
            p.assert_running();
        }
    }

    /// Make everything ingested so far searchable.
    pub fn force_flush(&self) {
        let _ = http_get(&format!("{}/internal/force_flush", self.base()));
    }

    /// `/api/v1/export` (JSON lines, raw samples) for a selector over [start, end] ms.
    pub fn export(&self, selector: &str, start_ms: i64, end_ms: i64) -> Result<SeriesMap, String> {
        self.force_flush();
        let (s, e) = (fmt_ms(start_ms), fmt_ms(end_ms));
        let r = http_get_query(
            &format!("{}/api/v1/export", self.base()),
            &[("match[]", selector), ("start", &s), ("end", &e)],
        )?;
        if r.status != 200 {
            return Err(format!(
                "VM export {selector}: status {} {}",
                r.status,
                r.text()
            ));
        }
        let mut out = SeriesMap::new();
        for line in r.text().lines().filter(|l| !l.trim().is_empty()) {
            let j = json::parse(line).map_err(|e| format!("VM export line {line:?}: {e}"))?;
            let labels = json_labels(j.get("metric").ok_or("no metric")?)?;
            let vals = j
                .get("values")
                .and_then(|v| v.as_arr())
                .ok_or("no values")?;
            let ts = j
                .get("timestamps")
                .and_then(|v| v.as_arr())
                .ok_or("no timestamps")?;
            if vals.len() != ts.len() {
                return Err(format!(
                    "VM export: {} values vs {} timestamps",
                    vals.len(),
                    ts.len()
                ));
            }
            let entry = out.entry(labels).or_default();
            for (v, t) in vals.iter().zip(ts) {
                let t = t.as_f64().ok_or("timestamp not a number")? as i64;
                entry.push((t, v.as_f64().unwrap_or(f64::NAN)));
            }
        }
        for s in out.values_mut() {
            s.sort_by_key(|(t, _)| *t);
        }
        Ok(out)
    }

    /// `/api/v1/series` label sets (VM resolves the time range per day, so this is coarse).
    pub fn series(
        &self,
        selector: &str,
        start_ms: i64,
        end_ms: i64,
    ) -> Result<BTreeSet<Labels>, String> {
        self.force_flush();
        api_series(&self.base(), selector, start_ms, end_ms)
    }
}

fn api_series(
    base: &str,
    selector: &str,
    start_ms: i64,
    end_ms: i64,
) -> Result<BTreeSet<Labels>, String> {
    let (s, e) = (fmt_ms(start_ms), fmt_ms(end_ms));
    let r = http_get_query(
        &format!("{base}/api/v1/series"),
        &[("match[]", selector), ("start", &s), ("end", &e)],
    )?;
    let j = json::parse(&r.text()).map_err(|e| format!("{base} series: {e}: {}", r.text()))?;
    if j.get("status").and_then(|s| s.as_str()) != Some("success") {
        return Err(format!("{base} series {selector}: {}", r.text()));
    }
    let data = j.get("data").and_then(|d| d.as_arr()).ok_or("no data")?;
    data.iter().map(json_labels).collect()
}

pub fn json_labels(j: &json::Json) -> Result<Labels, String> {
    let obj = j.as_obj().ok_or("labels not an object")?;
    obj.iter()
        .map(|(k, v)| {
            Ok((
                k.clone(),
                v.as_str().ok_or("label value not a string")?.to_string(),
            ))
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Prometheus 2.42
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
pub struct PromConfig {
    pub remote_write_url: String,
    /// (job name, host:port) scraped every second in addition to Prometheus itself.
    pub jobs: Vec<(String, String)>,
    pub batch_send_deadline: String,
    pub min_backoff: String,
    pub max_backoff: String,
    pub max_samples_per_send: Option<u32>,
    /// More `remote_write:` entries, as YAML list items indented by two spaces.
    pub extra_remote_write_yaml: String,
    /// Scrape interval of the test jobs (default 1s).
    pub scrape_interval: String,
}

impl PromConfig {
    pub fn new(remote_write_url: &str) -> PromConfig {
        PromConfig {
            remote_write_url: remote_write_url.to_string(),
            jobs: Vec::new(),
            batch_send_deadline: "1s".into(),
            min_backoff: "100ms".into(),
            max_backoff: "1s".into(),
            max_samples_per_send: None,
            extra_remote_write_yaml: String::new(),
            scrape_interval: "1s".into(),
        }
    }
    pub fn job(mut self, name: &str, addr: &str) -> PromConfig {
        self.jobs.push((name.to_string(), addr.to_string()));
        self
    }

    fn render(&self, self_addr: &str) -> String {
        let mut y = String::new();
        y.push_str(&format!(
            "global:\n  scrape_interval: {0}\n  scrape_timeout: {0}\n  evaluation_interval: 1s\n",
            self.scrape_interval
        ));
        y.push_str("scrape_configs:\n");
        y.push_str(&format!(
            "  - job_name: prometheus\n    static_configs:\n      - targets: ['{self_addr}']\n"
        ));
        for (job, addr) in &self.jobs {
            y.push_str(&format!(
                "  - job_name: {job}\n    static_configs:\n      - targets: ['{addr}']\n"
            ));
        }
        y.push_str(&format!(
            "remote_write:\n  - url: {}\n    queue_config:\n      batch_send_deadline: {}\n      \
             min_backoff: {}\n      max_backoff: {}\n",
            self.remote_write_url, self.batch_send_deadline, self.min_backoff, self.max_backoff
        ));
        if let Some(n) = self.max_samples_per_send {
            y.push_str(&format!("      max_samples_per_send: {n}\n"));
        }
        y.push_str(&self.extra_remote_write_yaml);
        y
    }
}

pub struct Prom {
    pub port: u16,
    pub proc: Proc,
    pub started_ms: i64,
}

impl Prom {
    pub fn start(dir: &TestDir, cfg: &PromConfig) -> Prom {
        let started_ms = now_ms();
        let (port, proc) = start_on_free_port(
            |port| {
                let addr = format!("127.0.0.1:{port}");
                let cfg_path = dir.join("prometheus.yml");
                std::fs::write(&cfg_path, cfg.render(&addr)).unwrap();
                let data = dir.join("prom-data");
                let _ = std::fs::remove_dir_all(&data); // a retried start begins afresh
                let mut cmd = Command::new(peer_bin("prometheus"));
                cmd.arg(format!("--config.file={}", cfg_path.display()))
                    .arg(format!("--storage.tsdb.path={}", data.display()))
                    .arg(format!("--web.listen-address={addr}"))
                    .arg("--log.level=info")
                    .current_dir(dir.path());
                Proc::spawn("prometheus", cmd, dir.join("prometheus.log"))
            },
            |port| format!("http://127.0.0.1:{port}/-/ready"),
            Duration::from_secs(30),
        );
        Prom {
            port,
            proc,
            started_ms,
        }
    }

    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Raw samples from Prometheus's own TSDB: `selector[range_s]` evaluated at `at_ms`
    /// (2.42: closed window [at-range, at]; stale markers are not returned).
    pub fn raw_samples(
        &self,
        selector: &str,
        at_ms: i64,
        range_s: u64,
    ) -> Result<SeriesMap, String> {
        let q = format!("{selector}[{range_s}s]");
        let t = fmt_ms(at_ms);
        let r = http_get_query(
            &format!("{}/api/v1/query", self.base()),
            &[("query", &q), ("time", &t)],
        )?;
        let j = json::parse(&r.text()).map_err(|e| format!("prom query: {e}: {}", r.text()))?;
        if j.get("status").and_then(|s| s.as_str()) != Some("success") {
            return Err(format!("prom query {q}: {}", r.text()));
        }
        let result = j
            .get("data")
            .and_then(|d| d.get("result"))
            .and_then(|r| r.as_arr())
            .ok_or("no result")?;
        let mut out = SeriesMap::new();
        for s in result {
            let labels = json_labels(s.get("metric").ok_or("no metric")?)?;
            let mut samples = Vec::new();
            for pair in s
                .get("values")
                .and_then(|v| v.as_arr())
                .ok_or("no values")?
            {
                let pair = pair.as_arr().ok_or("sample not a pair")?;
                let t = pair[0].as_f64().ok_or("bad ts")?;
                let v = parse_prom_float(pair[1].as_str().ok_or("value not a string")?)?;
                samples.push(((t * 1000.0).round() as i64, v));
            }
            out.insert(labels, samples);
        }
        Ok(out)
    }

    pub fn series(
        &self,
        selector: &str,
        start_ms: i64,
        end_ms: i64,
    ) -> Result<BTreeSet<Labels>, String> {
        api_series(&self.base(), selector, start_ms, end_ms)
    }

    /// Prometheus's own /metrics, for remote-storage counters.
    pub fn metrics_text(&self) -> String {
        http_get(&format!("{}/metrics", self.base()))
            .map(|r| r.text())
            .unwrap_or_default()
    }
}

pub fn parse_prom_float(s: &str) -> Result<f64, String> {
    match s {
        "NaN" => Ok(f64::NAN),
        "+Inf" | "Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        _ => s
            .parse::<f64>()
            .map_err(|e| format!("bad float {s:?}: {e}")),
    }
}

/// Sum of all samples of `name` in a Prometheus text exposition (None if absent).
pub fn metric_sum(text: &str, name: &str) -> Option<f64> {
    let mut found = None;
    for line in text.lines() {
        if line.starts_with('#') || !line.starts_with(name) {
            continue;
        }
        let rest = &line[name.len()..];
        let value_part = if let Some(r) = rest.strip_prefix('{') {
            match r.rfind('}') {
                Some(i) => &r[i + 1..],
                None => continue,
            }
        } else if rest.starts_with(' ') {
            rest
        } else {
            continue;
        };
        if let Some(v) = value_part
            .split_whitespace()
            .next()
            .and_then(|v| parse_prom_float(v).ok())
        {
            *found.get_or_insert(0.0) += v;
        }
    }
    found
}

// ---------------------------------------------------------------------------------------------
// cardguard
// ---------------------------------------------------------------------------------------------

pub struct Cardguard {
    pub port: u16,
    pub proc: Proc,
}

impl Cardguard {
    pub fn start(dir: &TestDir, upstream: &str, extra: &[&str]) -> Cardguard {
        let mut args = vec!["--upstream", upstream];
        args.extend_from_slice(extra);
        Self::start_args(dir, &args)
    }

    /// `cardguard serve --listen <free port>` with exactly `args` (e.g. a config file listing
    /// several upstreams, which `--upstream` would contradict).
    pub fn start_args(dir: &TestDir, args: &[&str]) -> Cardguard {
        let (port, proc) = start_on_free_port(
            |port| {
                let mut cmd = Command::new(cardguard_bin());
                cmd.arg("serve")
                    .arg("--listen")
                    .arg(format!("127.0.0.1:{port}"))
                    .args(args)
                    .env("RUST_BACKTRACE", "1")
                    .current_dir(dir.path());
                Proc::spawn("cardguard", cmd, dir.join(&format!("cardguard-{port}.log")))
            },
            |port| format!("http://127.0.0.1:{port}/-/ready"),
            Duration::from_secs(20),
        );
        Cardguard { port, proc }
    }
    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
    pub fn write_url(&self) -> String {
        format!("{}/api/v1/write", self.base())
    }
    pub fn metrics_text(&self) -> String {
        match http_get(&format!("{}/metrics", self.base())) {
            Ok(r) if r.status == 200 => r.text(),
            Ok(r) => panic!("cardguard /metrics answered {}: {}", r.status, r.text()),
            Err(e) => panic!("cardguard /metrics: {e}"),
        }
    }
}

/// cardguard's own metric names, in one place because they are still in flux.
pub mod cg_metrics {
    /// Samples received from senders (sum over all label sets).
    pub const SAMPLES_RECEIVED: &str = "cardguard_samples_received_total";

    /// Assert that cardguard counted received samples; returns the count.
    pub fn assert_received_samples(text: &str) -> f64 {
        let v = super::metric_sum(text, SAMPLES_RECEIVED);
        match v {
            Some(v) if v > 0.0 => v,
            _ => {
                let names: std::collections::BTreeSet<&str> = text
                    .lines()
                    .filter(|l| !l.starts_with('#') && !l.is_empty())
                    .map(|l| l.split(['{', ' ']).next().unwrap_or(""))
                    .collect();
                panic!(
                    "cardguard /metrics: expected {SAMPLES_RECEIVED} > 0, found {v:?}; \
                     metric names present: {names:?}"
                )
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Comparing raw samples
// ---------------------------------------------------------------------------------------------

/// Restrict to [from, to] ms and drop NaN values (VictoriaMetrics does not store ordinary NaN
/// samples; stale markers are NaN too and Prometheus range queries never return them).
pub fn window(m: &SeriesMap, from_ms: i64, to_ms: i64) -> SeriesMap {
    m.iter()
        .filter_map(|(l, s)| {
            let s: Samples = s
                .iter()
                .copied()
                .filter(|(t, v)| *t >= from_ms && *t <= to_ms && !v.is_nan())
                .collect();
            (!s.is_empty()).then(|| (l.clone(), s))
        })
        .collect()
}

fn values_equal(a: f64, b: f64, rel_tol: f64) -> bool {
    if a == b || (a.is_nan() && b.is_nan()) {
        return true;
    }
    if rel_tol == 0.0 {
        return false;
    }
    (a - b).abs() <= rel_tol * a.abs().max(b.abs())
}

/// Compare `expected` (Prometheus's TSDB) to `actual` (VictoriaMetrics) over [from, to]:
/// same label sets, same timestamps, values equal within `rel_tol` (0 = bit-exact). Returns
/// human-readable problems (empty = equal).
pub fn compare_samples(
    expected: &SeriesMap,
    actual: &SeriesMap,
    from_ms: i64,
    to_ms: i64,
    rel_tol: f64,
) -> Vec<String> {
    let e = window(expected, from_ms, to_ms);
    let a = window(actual, from_ms, to_ms);
    let mut problems = Vec::new();
    for (l, es) in &e {
        let Some(as_) = a.get(l) else {
            problems.push(format!(
                "missing in VM: {} ({} samples in Prometheus)",
                fmt_labels(l),
                es.len()
            ));
            continue;
        };
        let em: BTreeMap<i64, f64> = es.iter().copied().collect();
        let am: BTreeMap<i64, f64> = as_.iter().copied().collect();
        let missing: Vec<i64> = em.keys().filter(|t| !am.contains_key(t)).copied().collect();
        let extra: Vec<i64> = am.keys().filter(|t| !em.contains_key(t)).copied().collect();
        let wrong: Vec<String> = em
            .iter()
            .filter_map(|(t, v)| {
                am.get(t)
                    .filter(|av| !values_equal(*v, **av, rel_tol))
                    .map(|av| format!("@{}: prom {v} vm {av}", fmt_ms(*t)))
            })
            .collect();
        if !missing.is_empty() {
            problems.push(format!(
                "{}: {} of {} Prometheus timestamps missing in VM, e.g. {:?}",
                fmt_labels(l),
                missing.len(),
                em.len(),
                missing
                    .iter()
                    .take(8)
                    .map(|t| fmt_ms(*t))
                    .collect::<Vec<_>>()
            ));
        }
        if !extra.is_empty() {
            problems.push(format!(
                "{}: {} timestamps in VM that Prometheus does not have, e.g. {:?}",
                fmt_labels(l),
                extra.len(),
                extra.iter().take(8).map(|t| fmt_ms(*t)).collect::<Vec<_>>()
            ));
        }
        if !wrong.is_empty() {
            problems.push(format!(
                "{}: {} values differ: {:?}",
                fmt_labels(l),
                wrong.len(),
                &wrong[..wrong.len().min(5)]
            ));
        }
    }
    for l in a.keys().filter(|l| !e.contains_key(*l)) {
        problems.push(format!("in VM but not in Prometheus: {}", fmt_labels(l)));
    }
    problems
}

pub fn summarize(problems: &[String], max: usize) -> String {
    let mut s: Vec<String> = problems
        .iter()
        .take(max)
        .map(|p| format!("  - {p}"))
        .collect();
    if problems.len() > max {
        s.push(format!("  ... and {} more", problems.len() - max));
    }
    s.join("\n")
}

/// Everything Prometheus and VM need for the e2e tests, with cardguard in between unless
/// `CARDGUARD_E2E_DIRECT=1`. Field order = drop order: Prometheus first, VM last, dir kept last.
pub struct Stack {
    pub prom: Prom,
    pub cardguard: Option<Cardguard>,
    pub target: TestTarget,
    pub vm: Vm,
    pub dir: TestDir,
}

impl Stack {
    pub fn start(name: &str, cardguard_args: &[&str]) -> Stack {
        // Fail fast (before spawning anything) if a peer is missing.
        peer_bin("prometheus");
        peer_bin("victoria-metrics");
        let dir = TestDir::new(name);
        let vm = Vm::start(&dir);
        let target = TestTarget::start();
        let cardguard = if direct_mode() {
            eprintln!(
                "[harness] WARNING: CARDGUARD_E2E_DIRECT=1 — Prometheus writes straight to \
                 VictoriaMetrics; cardguard is NOT under test"
            );
            None
        } else {
            Some(Cardguard::start(&dir, &vm.write_url(), cardguard_args))
        };
        let rw_url = cardguard
            .as_ref()
            .map(|c| c.write_url())
            .unwrap_or_else(|| vm.write_url());
        let prom = Prom::start(
            &dir,
            &PromConfig::new(&rw_url).job("target", &target.addr()),
        );
        Stack {
            prom,
            cardguard,
            target,
            vm,
            dir,
        }
    }

    pub fn target_instance(&self) -> String {
        self.target.addr()
    }

    /// Wait until the target has been scraped `n` times, checking the processes meanwhile.
    pub fn wait_scrapes(&mut self, n: u64, timeout: Duration) {
        let what = format!("Prometheus to scrape the test target {n} times");
        poll_until(&what, timeout, Duration::from_millis(200), || {
            self.assert_running();
            match self.target.scrapes() {
                s if s >= n => Ok(()),
                s => Err(format!("{s} scrapes")),
            }
        })
    }

    /// Panic (with log tails) if Prometheus, VM (when running) or cardguard exited.
    pub fn assert_running(&mut self) {
        self.prom.proc.assert_running();
        self.vm.assert_running();
        if let Some(c) = self.cardguard.as_mut() {
            c.proc.assert_running();
        }
    }

    /// Newest timestamp VM holds for `cg_test_scrapes_total` (None = nothing yet).
    pub fn vm_newest_target_ts(&self) -> Option<i64> {
        let m = self
            .vm
            .export(
                "cg_test_scrapes_total",
                self.prom.started_ms - 60_000,
                now_ms() + 60_000,
            )
            .ok()?;
        m.values().filter_map(|s| s.last().map(|(t, _)| *t)).max()
    }

    /// Wait until VM has a target sample at or after `ts`.
    pub fn wait_vm_reaches(&mut self, ts: i64, timeout: Duration) {
        let what = format!(
            "VictoriaMetrics to hold a target sample at or after {}",
            fmt_ms(ts)
        );
        poll_until(&what, timeout, Duration::from_millis(500), || {
            self.assert_running();
            match self.vm_newest_target_ts() {
                Some(t) if t >= ts => Ok(()),
                other => Err(format!(
                    "newest VM sample {:?}; target scraped {} times; prometheus remote metrics: {}",
                    other.map(fmt_ms),
                    self.target.scrapes(),
                    remote_storage_summary(&self.prom.metrics_text())
                )),
            }
        })
    }
}

/// The remote-storage counters of a Prometheus /metrics text, for diagnostics.
pub fn remote_storage_summary(text: &str) -> String {
    [
        "prometheus_remote_storage_samples_total",
        "prometheus_remote_storage_samples_retried_total",
        "prometheus_remote_storage_samples_failed_total",
        "prometheus_remote_storage_samples_dropped_total",
        "prometheus_remote_storage_samples_pending",
    ]
    .iter()
    .map(|n| {
        format!(
            "{}={:?}",
            n.trim_start_matches("prometheus_remote_storage_"),
            metric_sum(text, n)
        )
    })
    .collect::<Vec<_>>()
    .join(" ")
}

// ---------------------------------------------------------------------------------------------
// Remote write 1.0: hand-written protobuf encoder/decoder + snappy
// ---------------------------------------------------------------------------------------------

pub mod rw {
    pub const STANDARD_HEADERS: [(&str, &str); 4] = [
        ("Content-Type", "application/x-protobuf"),
        ("Content-Encoding", "snappy"),
        ("X-Prometheus-Remote-Write-Version", "0.1.0"),
        ("User-Agent", "cardguard-tests/0"),
    ];

    /// One series as raw bytes (so invalid UTF-8 can be encoded).
    #[derive(Debug, Clone, PartialEq)]
    pub struct Series {
        pub labels: Vec<(Vec<u8>, Vec<u8>)>,
        pub samples: Vec<(f64, i64)>,
    }

    impl Series {
        /// `name{labels...}` with one sample; labels are sorted with `__name__`.
        pub fn new(name: &str, labels: &[(&str, &str)], value: f64, ts_ms: i64) -> Series {
            let mut l: Vec<(Vec<u8>, Vec<u8>)> = std::iter::once(("__name__", name))
                .chain(labels.iter().copied())
                .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
                .collect();
            l.sort();
            Series {
                labels: l,
                samples: vec![(value, ts_ms)],
            }
        }
        pub fn label(&self, name: &str) -> Option<&[u8]> {
            self.labels
                .iter()
                .find(|(k, _)| k == name.as_bytes())
                .map(|(_, v)| v.as_slice())
        }
    }

    pub fn put_varint(out: &mut Vec<u8>, mut v: u64) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }

    fn put_len(out: &mut Vec<u8>, field: u32, bytes: &[u8]) {
        put_varint(out, ((field as u64) << 3) | 2);
        put_varint(out, bytes.len() as u64);
        out.extend_from_slice(bytes);
    }

    /// Encode a `prometheus.WriteRequest` (uncompressed).
    pub fn encode(series: &[Series]) -> Vec<u8> {
        let mut out = Vec::new();
        for s in series {
            let mut ts = Vec::new();
            for (k, v) in &s.labels {
                let mut l = Vec::new();
                put_len(&mut l, 1, k);
                put_len(&mut l, 2, v);
                put_len(&mut ts, 1, &l);
            }
            for (v, t) in &s.samples {
                let mut smp = Vec::new();
                smp.push(0x09); // field 1, fixed64
                smp.extend_from_slice(&v.to_bits().to_le_bytes());
                smp.push(0x10); // field 2, varint
                put_varint(&mut smp, *t as u64);
                put_len(&mut ts, 2, &smp);
            }
            put_len(&mut out, 1, &ts);
        }
        out
    }

    pub fn snappy(raw: &[u8]) -> Vec<u8> {
        snap::raw::Encoder::new()
            .compress_vec(raw)
            .expect("snappy compress")
    }

    pub fn unsnappy(body: &[u8]) -> Result<Vec<u8>, String> {
        let mut out = Vec::new();
        cardguard::wire::snappy::decompress(body, 64 << 20, &mut out).map_err(|e| e.to_string())?;
        Ok(out)
    }

    /// Encode + snappy.
    pub fn body(series: &[Series]) -> Vec<u8> {
        snappy(&encode(series))
    }

    fn get_varint(b: &[u8], pos: &mut usize) -> Result<u64, String> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = *b.get(*pos).ok_or("truncated varint")?;
            *pos += 1;
            v |= ((byte & 0x7f) as u64) << shift;
            if byte < 0x80 {
                return Ok(v);
            }
        }
        Err("varint too long".into())
    }

    /// One protobuf field: number, wire type, payload bytes, varint value.
    type Field<'a> = (u64, u8, &'a [u8], u64);

    /// Iterate (field, wire type, payload) over one message.
    fn fields(b: &[u8]) -> Result<Vec<Field<'_>>, String> {
        let mut pos = 0;
        let mut out = Vec::new();
        while pos < b.len() {
            let key = get_varint(b, &mut pos)?;
            let (field, wt) = (key >> 3, (key & 7) as u8);
            match wt {
                0 => {
                    let v = get_varint(b, &mut pos)?;
                    out.push((field, wt, &b[0..0], v));
                }
                1 => {
                    let s = b.get(pos..pos + 8).ok_or("truncated fixed64")?;
                    pos += 8;
                    out.push((field, wt, s, 0));
                }
                2 => {
                    let n = get_varint(b, &mut pos)? as usize;
                    let s = b
                        .get(pos..pos.checked_add(n).ok_or("len overflow")?)
                        .ok_or("truncated bytes")?;
                    pos += n;
                    out.push((field, wt, s, 0));
                }
                5 => {
                    let s = b.get(pos..pos + 4).ok_or("truncated fixed32")?;
                    pos += 4;
                    out.push((field, wt, s, 0));
                }
                _ => return Err(format!("bad wire type {wt} at {pos}")),
            }
        }
        Ok(out)
    }

    /// Decode the series (labels + float samples) of an uncompressed WriteRequest; exemplars,
    /// histograms and metadata are skipped. Also returns the number of metadata entries.
    pub fn decode(raw: &[u8]) -> Result<(Vec<Series>, usize), String> {
        let mut series = Vec::new();
        let mut metadata = 0;
        for (f, wt, ts, _) in fields(raw)? {
            if f == 3 && wt == 2 {
                metadata += 1;
            }
            if f != 1 || wt != 2 {
                continue;
            }
            let mut s = Series {
                labels: Vec::new(),
                samples: Vec::new(),
            };
            for (f, wt, p, _) in fields(ts)? {
                match (f, wt) {
                    (1, 2) => {
                        let (mut k, mut v) = (Vec::new(), Vec::new());
                        for (f, _, p, _) in fields(p)? {
                            match f {
                                1 => k = p.to_vec(),
                                2 => v = p.to_vec(),
                                _ => {}
                            }
                        }
                        s.labels.push((k, v));
                    }
                    (2, 2) => {
                        let (mut v, mut t) = (0f64, 0i64);
                        for (f, wt, p, n) in fields(p)? {
                            match (f, wt) {
                                (1, 1) => {
                                    v = f64::from_bits(u64::from_le_bytes(p.try_into().unwrap()))
                                }
                                (2, 0) => t = n as i64,
                                _ => {}
                            }
                        }
                        s.samples.push((v, t));
                    }
                    _ => {}
                }
            }
            series.push(s);
        }
        Ok((series, metadata))
    }
}

// ---------------------------------------------------------------------------------------------
// A small JSON reader
// ---------------------------------------------------------------------------------------------

pub mod json {
    #[derive(Debug, Clone, PartialEq)]
    pub enum Json {
        Null,
        Bool(bool),
        Num(f64),
        Str(String),
        Arr(Vec<Json>),
        Obj(Vec<(String, Json)>),
    }

    impl Json {
        pub fn get(&self, key: &str) -> Option<&Json> {
            match self {
                Json::Obj(o) => o.iter().find(|(k, _)| k == key).map(|(_, v)| v),
                _ => None,
            }
        }
        pub fn as_str(&self) -> Option<&str> {
            match self {
                Json::Str(s) => Some(s),
                _ => None,
            }
        }
        pub fn as_f64(&self) -> Option<f64> {
            match self {
                Json::Num(n) => Some(*n),
                _ => None,
            }
        }
        pub fn as_arr(&self) -> Option<&Vec<Json>> {
            match self {
                Json::Arr(a) => Some(a),
                _ => None,
            }
        }
        pub fn as_obj(&self) -> Option<&Vec<(String, Json)>> {
            match self {
                Json::Obj(o) => Some(o),
                _ => None,
            }
        }
    }

    pub fn parse(s: &str) -> Result<Json, String> {
        let mut p = P {
            b: s.as_bytes(),
            i: 0,
        };
        let v = p.value()?;
        p.ws();
        if p.i != p.b.len() {
            return Err(format!("trailing data at {}", p.i));
        }
        Ok(v)
    }

    struct P<'a> {
        b: &'a [u8],
        i: usize,
    }

    impl<'a> P<'a> {
        fn ws(&mut self) {
            while self.i < self.b.len() && matches!(self.b[self.i], b' ' | b'\n' | b'\r' | b'\t') {
                self.i += 1;
            }
        }
        fn peek(&self) -> Option<u8> {
            self.b.get(self.i).copied()
        }
        fn expect(&mut self, c: u8) -> Result<(), String> {
            self.ws();
            if self.peek() == Some(c) {
                self.i += 1;
                Ok(())
            } else {
                Err(format!("expected {:?} at {}", c as char, self.i))
            }
        }
        fn value(&mut self) -> Result<Json, String> {
            self.ws();
            match self.peek().ok_or("unexpected end")? {
                b'{' => {
                    self.i += 1;
                    let mut o = Vec::new();
                    self.ws();
                    if self.peek() == Some(b'}') {
                        self.i += 1;
                        return Ok(Json::Obj(o));
                    }
                    loop {
                        self.ws();
                        let k = self.string()?;
                        self.expect(b':')?;
                        let v = self.value()?;
                        o.push((k, v));
                        self.ws();
                        match self.peek() {
                            Some(b',') => self.i += 1,
                            Some(b'}') => {
                                self.i += 1;
                                return Ok(Json::Obj(o));
                            }
                            _ => return Err(format!("bad object at {}", self.i)),
                        }
                    }
                }
                b'[' => {
                    self.i += 1;
                    let mut a = Vec::new();
                    self.ws();
                    if self.peek() == Some(b']') {
                        self.i += 1;
                        return Ok(Json::Arr(a));
                    }
                    loop {
                        a.push(self.value()?);
                        self.ws();
                        match self.peek() {
                            Some(b',') => self.i += 1,
                            Some(b']') => {
                                self.i += 1;
                                return Ok(Json::Arr(a));
                            }
                            _ => return Err(format!("bad array at {}", self.i)),
                        }
                    }
                }
                b'"' => Ok(Json::Str(self.string()?)),
                _ => {
                    // numbers, true/false/null, and the non-standard NaN/Inf some servers emit
                    let start = self.i;
                    while self.i < self.b.len()
                        && !matches!(
                            self.b[self.i],
                            b',' | b']' | b'}' | b' ' | b'\n' | b'\r' | b'\t'
                        )
                    {
                        self.i += 1;
                    }
                    let tok = std::str::from_utf8(&self.b[start..self.i]).unwrap();
                    match tok {
                        "null" => Ok(Json::Null),
                        "true" => Ok(Json::Bool(true)),
                        "false" => Ok(Json::Bool(false)),
                        "NaN" => Ok(Json::Num(f64::NAN)),
                        "Inf" | "+Inf" => Ok(Json::Num(f64::INFINITY)),
                        "-Inf" => Ok(Json::Num(f64::NEG_INFINITY)),
                        _ => tok
                            .parse::<f64>()
                            .map(Json::Num)
                            .map_err(|_| format!("bad token {tok:?} at {start}")),
                    }
                }
            }
        }
        fn string(&mut self) -> Result<String, String> {
            if self.peek() != Some(b'"') {
                return Err(format!("expected string at {}", self.i));
            }
            self.i += 1;
            let mut out: Vec<u8> = Vec::new();
            loop {
                let c = *self.b.get(self.i).ok_or("unterminated string")?;
                self.i += 1;
                match c {
                    b'"' => return String::from_utf8(out).map_err(|e| e.to_string()),
                    b'\\' => {
                        let e = *self.b.get(self.i).ok_or("bad escape")?;
                        self.i += 1;
                        match e {
                            b'"' => out.push(b'"'),
                            b'\\' => out.push(b'\\'),
                            b'/' => out.push(b'/'),
                            b'b' => out.push(8),
                            b'f' => out.push(12),
                            b'n' => out.push(b'\n'),
                            b'r' => out.push(b'\r'),
                            b't' => out.push(b'\t'),
                            b'u' => {
                                let mut cp = self.hex4()?;
                                if (0xD800..0xDC00).contains(&cp)
                                    && self.b.get(self.i..self.i + 2) == Some(b"\\u")
                                {
                                    self.i += 2;
                                    let lo = self.hex4()?;
                                    cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                                }
                                let ch = char::from_u32(cp).unwrap_or('\u{FFFD}');
                                let mut buf = [0u8; 4];
                                out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
                            }
                            _ => return Err(format!("bad escape \\{}", e as char)),
                        }
                    }
                    _ => out.push(c),
                }
            }
        }
        fn hex4(&mut self) -> Result<u32, String> {
            let h = self.b.get(self.i..self.i + 4).ok_or("short \\u escape")?;
            self.i += 4;
            u32::from_str_radix(std::str::from_utf8(h).map_err(|e| e.to_string())?, 16)
                .map_err(|e| e.to_string())
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Guard e2e helpers (tests/e2e_guard.rs): a stack with a custom target and a config file,
// reloads, /api/v1/cardinality and labelled samples of a text exposition.
// ---------------------------------------------------------------------------------------------

impl Stack {
    /// Like [`Stack::start`], but with the given scrape target (job `target`) and, when
    /// `cardguard_config` is set, a cardguard config file written to [`Stack::config_path`]
    /// and passed as `--config` (before `cardguard_args`). `--listen` and `--upstream` are
    /// passed as flags as in [`Stack::start`], so the file needs neither.
    pub fn start_with(
        name: &str,
        target: TestTarget,
        cardguard_config: Option<&str>,
        cardguard_args: &[&str],
    ) -> Stack {
        peer_bin("prometheus");
        peer_bin("victoria-metrics");
        let dir = TestDir::new(name);
        let vm = Vm::start(&dir);
        let cardguard = if direct_mode() {
            eprintln!(
                "[harness] WARNING: CARDGUARD_E2E_DIRECT=1 — Prometheus writes straight to \
                 VictoriaMetrics; cardguard is NOT under test"
            );
            None
        } else {
            let mut args: Vec<String> = Vec::new();
            if let Some(cfg) = cardguard_config {
                let path = dir.join("cardguard.yml");
                std::fs::write(&path, cfg)
                    .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
                args.push("--config".into());
                args.push(path.display().to_string());
            }
            args.extend(cardguard_args.iter().map(|s| s.to_string()));
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            Some(Cardguard::start(&dir, &vm.write_url(), &args))
        };
        let rw_url = cardguard
            .as_ref()
            .map(|c| c.write_url())
            .unwrap_or_else(|| vm.write_url());
        let prom = Prom::start(
            &dir,
            &PromConfig::new(&rw_url).job("target", &target.addr()),
        );
        Stack {
            prom,
            cardguard,
            target,
            vm,
            dir,
        }
    }

    /// Where [`Stack::start_with`] wrote cardguard's config file.
    pub fn config_path(&self) -> PathBuf {
        self.dir.join("cardguard.yml")
    }
}

impl Cardguard {
    /// `POST /-/reload`.
    pub fn reload_http(&self) -> Result<Resp, String> {
        http_post(&format!("{}/-/reload", self.base()), &[], b"")
    }

    /// Send SIGHUP (by pid, through `kill`).
    pub fn sighup(&self) {
        let pid = self.proc.pid();
        assert!(pid != 0, "cardguard has no pid");
        let st = Command::new("kill")
            .args(["-s", "HUP", &pid.to_string()])
            .status()
            .expect("run kill");
        assert!(st.success(), "kill -HUP {pid}: {st}");
    }

    /// `GET /api/v1/cardinality`, parsed.
    pub fn cardinality(&self) -> Result<json::Json, String> {
        let r = http_get(&format!("{}/api/v1/cardinality", self.base()))?;
        if r.status != 200 {
            return Err(format!(
                "/api/v1/cardinality answered {}: {}",
                r.status,
                r.text()
            ));
        }
        json::parse(&r.text()).map_err(|e| format!("/api/v1/cardinality: {e}: {}", r.text()))
    }
}

/// Every sample of metric `name` in a text exposition: (labels, value). Handles escaped
/// label values; `__name__` is not included in the labels.
pub fn metric_samples(text: &str, name: &str) -> Vec<(Labels, f64)> {
    let mut out = Vec::new();
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let mut l = Labels::new();
        let value_part = if let Some(mut r) = rest.strip_prefix('{') {
            // name="value",... }
            loop {
                r = r.trim_start_matches([',', ' ']);
                if let Some(after) = r.strip_prefix('}') {
                    break after;
                }
                let Some(eq) = r.find('=') else { break "" };
                let key = r[..eq].trim().to_string();
                let Some(v) = r[eq + 1..].strip_prefix('"') else {
                    break "";
                };
                let mut val = String::new();
                let mut chars = v.char_indices();
                let mut end = None;
                while let Some((i, c)) = chars.next() {
                    match c {
                        '\\' => match chars.next() {
                            Some((_, 'n')) => val.push('\n'),
                            Some((_, c2)) => val.push(c2),
                            None => break,
                        },
                        '"' => {
                            end = Some(i + 1);
                            break;
                        }
                        c => val.push(c),
                    }
                }
                let Some(end) = end else { break "" };
                l.insert(key, val);
                r = &v[end..];
            }
        } else if rest.starts_with(' ') {
            rest
        } else {
            continue; // a longer metric name with this prefix
        };
        if let Some(v) = value_part
            .split_whitespace()
            .next()
            .and_then(|v| parse_prom_float(v).ok())
        {
            out.push((l, v));
        }
    }
    out
}

/// The value of the sample of `name` whose labels include all of `want` (the first match).
pub fn metric_value(text: &str, name: &str, want: &[(&str, &str)]) -> Option<f64> {
    metric_samples(text, name)
        .into_iter()
        .find(|(l, _)| {
            want.iter()
                .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|(_, v)| v)
}

/// A test that checks cardguard itself has nothing to check when `CARDGUARD_E2E_DIRECT=1`
/// points Prometheus straight at VictoriaMetrics; it says so and returns true.
pub fn skip_in_direct_mode(test: &str) -> bool {
    if direct_mode() {
        eprintln!(
            "[{test}] SKIPPED: CARDGUARD_E2E_DIRECT=1 bypasses cardguard, which this test checks"
        );
        return true;
    }
    false
}

/// The row of `service` in a /api/v1/cardinality answer.
pub fn service_row<'a>(card: &'a json::Json, service: &str) -> Option<&'a json::Json> {
    card.get("services")?
        .as_arr()?
        .iter()
        .find(|r| r.get("service").and_then(json::Json::as_str) == Some(service))
}

/// A number field of a JSON object.
pub fn num(row: &json::Json, key: &str) -> Option<f64> {
    row.get(key).and_then(json::Json::as_f64)
}
