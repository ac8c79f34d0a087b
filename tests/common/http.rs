//! The HTTP client side of the tests: blocking ureq calls reduced to a [`Resp`], waiting for a
//! child to answer 200 (retrying on another port when [`free_port`]'s race lost), and
//! [`raw_http`] for the hostile-input tests, which must send what no client library would.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use super::http_server::read_chunked;
use super::{free_port, rw, Proc};

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
