//! The load driver: C keep-alive HTTP/1.1 connections over raw TCP sending pre-encoded
//! requests, either as fast as the target answers (saturation) or on a fixed schedule
//! (latency at a given rate). Latency is measured from the scheduled send time, so a target
//! that falls behind is charged for the queue it causes (no coordinated omission).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::gen::Request;

#[derive(Clone)]
pub struct Plan {
    pub addr: SocketAddr,
    pub conns: usize,
    /// Stop after this long (and after `once` ran out, if set).
    pub duration: Duration,
    /// Samples per second to offer; `None` = as fast as the target answers.
    pub rate: Option<f64>,
    pub requests: Arc<Vec<Request>>,
    /// Which requests to send: `start..end`, cycled unless `once`.
    pub start: usize,
    pub end: usize,
    /// Send each request of the range exactly once, then stop.
    pub once: bool,
    /// Number of services (size of the per-service tallies).
    pub services: usize,
}

#[derive(Debug, Default, Clone)]
pub struct LoadResult {
    pub elapsed: Duration,
    pub requests: u64,
    /// Samples in requests answered 2xx.
    pub samples_ok: u64,
    pub statuses: BTreeMap<u16, u64>,
    /// Connection failures (connect, write, read, unparsable answer).
    pub errors: u64,
    pub latencies_us: Vec<u32>,
    /// (scheduled send time since the run's start, latency), both in µs, by send time: where
    /// in time the slow requests fall (`CARDGUARD_LOAD_LATENCY_LOG`).
    pub timeline_us: Vec<(u32, u32)>,
    /// Samples in 2xx-answered requests, per service index.
    pub sent_per_service: Vec<u64>,
}

impl LoadResult {
    pub fn samples_per_sec(&self) -> f64 {
        self.samples_ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Latency quantile in milliseconds.
    pub fn quantile_ms(&self, q: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return f64::NAN;
        }
        let i = ((self.latencies_us.len() as f64 - 1.0) * q).round() as usize;
        self.latencies_us[i] as f64 / 1000.0
    }

    pub fn statuses_text(&self) -> String {
        let mut parts: Vec<String> = self
            .statuses
            .iter()
            .map(|(s, n)| format!("{s}×{n}"))
            .collect();
        if self.errors > 0 {
            parts.push(format!("conn-errors×{}", self.errors));
        }
        parts.join(" ")
    }
}

struct Shared {
    next: AtomicU64,
    stop: AtomicBool,
}

pub async fn run(plan: Plan) -> LoadResult {
    let shared = Arc::new(Shared {
        next: AtomicU64::new(0),
        stop: AtomicBool::new(false),
    });
    let samples_per_req = {
        let r = &plan.requests[plan.start..plan.end];
        r.iter().map(|x| x.samples).sum::<u64>() as f64 / r.len().max(1) as f64
    };
    let interval = plan
        .rate
        .map(|rate| Duration::from_secs_f64(samples_per_req / rate.max(1.0)));
    let started = Instant::now();
    let deadline = started + plan.duration;
    let mut tasks = Vec::new();
    for _ in 0..plan.conns {
        let (plan, shared) = (plan.clone(), shared.clone());
        tasks.push(tokio::spawn(async move {
            conn_loop(&plan, &shared, started, deadline, interval).await
        }));
    }
    let mut out = LoadResult {
        sent_per_service: vec![0; plan.services],
        ..LoadResult::default()
    };
    for t in tasks {
        let o = t.await.expect("driver task");
        out.requests += o.requests;
        out.samples_ok += o.samples_ok;
        out.errors += o.errors;
        for (s, n) in o.statuses {
            *out.statuses.entry(s).or_default() += n;
        }
        out.latencies_us.extend(o.latencies_us);
        out.timeline_us.extend(o.timeline_us);
        for (a, b) in out.sent_per_service.iter_mut().zip(o.sent_per_service) {
            *a += b;
        }
    }
    out.elapsed = started.elapsed();
    out.latencies_us.sort_unstable();
    out.timeline_us.sort_unstable();
    out
}

async fn conn_loop(
    plan: &Plan,
    shared: &Shared,
    started: Instant,
    deadline: Instant,
    interval: Option<Duration>,
) -> LoadResult {
    let mut out = LoadResult {
        sent_per_service: vec![0; plan.services],
        ..LoadResult::default()
    };
    let mut conn: Option<TcpStream> = None;
    let mut buf = Vec::with_capacity(4096);
    let span = (plan.end - plan.start) as u64;
    loop {
        if shared.stop.load(Ordering::Relaxed) || Instant::now() >= deadline {
            break;
        }
        let k = shared.next.fetch_add(1, Ordering::Relaxed);
        if plan.once && k >= span {
            break;
        }
        let scheduled = match interval {
            Some(iv) => {
                let at = started + iv.mul_f64(k as f64);
                if at >= deadline {
                    break;
                }
                tokio::time::sleep_until(at.into()).await;
                at
            }
            None => Instant::now(),
        };
        let req = &plan.requests[plan.start + (k % span) as usize];
        if conn.is_none() {
            match TcpStream::connect(plan.addr).await {
                Ok(c) => {
                    let _ = c.set_nodelay(true);
                    conn = Some(c);
                }
                Err(_) => {
                    out.errors += 1;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            }
        }
        let c = conn.as_mut().expect("connected above");
        out.requests += 1;
        let answer = async {
            c.write_all(&req.bytes).await?;
            read_response(c, &mut buf).await
        }
        .await;
        match answer {
            Ok((status, keep_alive)) => {
                let lat = scheduled.elapsed().as_micros().min(u32::MAX as u128) as u32;
                out.latencies_us.push(lat);
                let at = scheduled
                    .duration_since(started)
                    .as_micros()
                    .min(u32::MAX as u128);
                out.timeline_us.push((at as u32, lat));
                *out.statuses.entry(status).or_default() += 1;
                if (200..300).contains(&status) {
                    out.samples_ok += req.samples;
                    for &(s, n) in &req.per_service {
                        out.sent_per_service[s as usize] += n as u64;
                    }
                }
                if !keep_alive {
                    conn = None;
                }
            }
            Err(_) => {
                out.errors += 1;
                conn = None;
                buf.clear();
            }
        }
    }
    out
}

fn bad(what: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string())
}

/// Read one HTTP/1.1 response; returns its status and whether the connection stays open.
async fn read_response(c: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<(u16, bool)> {
    let head_end = loop {
        if let Some(p) = find(buf, b"\r\n\r\n") {
            break p + 4;
        }
        fill(c, buf).await?;
    };
    let head = std::str::from_utf8(&buf[..head_end]).map_err(|_| bad("non-UTF-8 head"))?;
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("status line"))?;
    let mut length = 0usize;
    let mut chunked = false;
    let mut keep_alive = true;
    for l in lines {
        let Some((k, v)) = l.split_once(':') else {
            continue;
        };
        let (k, v) = (k.trim(), v.trim());
        if k.eq_ignore_ascii_case("content-length") {
            length = v.parse().map_err(|_| bad("content-length"))?;
        } else if k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked") {
            chunked = true;
        } else if k.eq_ignore_ascii_case("connection") && v.eq_ignore_ascii_case("close") {
            keep_alive = false;
        }
    }
    buf.drain(..head_end);
    if chunked {
        // Rare here (error bodies); read up to the last chunk.
        loop {
            if let Some(p) = find(buf, b"0\r\n\r\n") {
                buf.drain(..p + 5);
                break;
            }
            fill(c, buf).await?;
        }
    } else {
        while buf.len() < length {
            fill(c, buf).await?;
        }
        buf.drain(..length);
    }
    Ok((status, keep_alive))
}

async fn fill(c: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<()> {
    let mut tmp = [0u8; 4096];
    let n = c.read(&mut tmp).await?;
    if n == 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "connection closed",
        ));
    }
    buf.extend_from_slice(&tmp[..n]);
    Ok(())
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}
