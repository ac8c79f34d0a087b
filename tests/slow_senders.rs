//! Slow senders and connection floods against one in-process cardguard (issue 11, point 3):
//! 2,000 slow-loris HTTP/1 connections (headers byte by byte, a few stalling in the HTTP/2
//! preface, or a body trickling after complete headers) and 500 trickling h2c streams, while
//! a well-behaved sender writes: every one of its requests gets 2xx. Then the connection cap:
//! beyond it a connection is answered 503 and closed, and counted.
//!
//! Timeouts are configured short so the run takes seconds. Latency under attack is measured
//! in the load harness (`cargo bench --bench load -- --attack`), not here.
//!
//! File descriptors: the attackers and cardguard share this process, two per connection, so
//! about 4,100 at the peak; the test raises its soft `RLIMIT_NOFILE` to the hard limit and
//! fails with a clear message if that is still too low.

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use cardguard::app::App;
use cardguard::config::Config;
use cardguard::ingest::ConfigSource;
use cardguard::sink::{Sink, SinkOptions};
use common::rw;
use http_body_util::Full;
use hyper::body::{Body, Frame};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const SLOWLORIS: usize = 2000;
const H2_CONNS: usize = 5;
const H2_STREAMS_PER_CONN: usize = 100;
/// Bytes every this often: far below `body_min_rate`, well inside every timeout's reach.
const TRICKLE: Duration = Duration::from_millis(250);

fn config(upstream: &Sink, extra: &str) -> Config {
    Config::from_yaml(&format!(
        "server:\n  shutdown_drain_delay: 0s\n  header_read_timeout: 3s\n  body_read_timeout: 10s\n  body_min_rate: 1KiB\n  \
         body_rate_grace_period: 2s\n  http2_max_concurrent_streams: {H2_STREAMS_PER_CONN}\n  \
         http2_keep_alive_interval: 1s\n  http2_keep_alive_timeout: 1s\n{extra}\
         upstream:\n  url: {}\n",
        upstream.write_url()
    ))
    .expect("test config")
}

/// Raise the soft fd limit to the hard one; fail clearly if it cannot hold the test.
fn raise_fd_limit(need: u64) {
    let mut l = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut l), 0);
        if l.rlim_cur < l.rlim_max {
            l.rlim_cur = l.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &l);
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut l);
        }
    }
    assert!(
        l.rlim_cur >= need,
        "this test needs {need} file descriptors and the limit is {} (hard {}); raise `ulimit -n`",
        l.rlim_cur,
        l.rlim_max
    );
}

/// Attack counters, for the failure message and to see that the attack ran.
#[derive(Default)]
struct Attack {
    stop: AtomicBool,
    /// HTTP/1 connections opened (first ones and reconnects).
    h1_connects: AtomicU64,
    /// HTTP/2 streams opened.
    h2_streams: AtomicU64,
}

/// One slow-loris connection, again and again until told to stop: `mode` 0 sends its headers
/// a byte at a time, 1 completes its headers then trickles a body, 2 starts the HTTP/2
/// preface and stalls.
async fn slowloris(addr: SocketAddr, mode: usize, attack: Arc<Attack>) {
    let head = b"POST /api/v1/write HTTP/1.1\r\nhost: cardguard\r\ncontent-type: application/x-protobuf\r\ncontent-encoding: snappy\r\ncontent-length: 100000\r\n\r\n";
    while !attack.stop.load(Ordering::Relaxed) {
        let Ok(mut c) = TcpStream::connect(addr).await else {
            tokio::time::sleep(TRICKLE).await;
            continue;
        };
        attack.h1_connects.fetch_add(1, Ordering::Relaxed);
        let mut sent = 0usize;
        if mode == 1 && c.write_all(head).await.is_err() {
            continue;
        }
        if mode == 2 && c.write_all(b"PRI * HTTP/2.0\r\n").await.is_err() {
            continue;
        }
        let mut buf = [0u8; 256];
        loop {
            if attack.stop.load(Ordering::Relaxed) {
                return;
            }
            // Keep trickling until cardguard answers or closes.
            let byte = match mode {
                0 => head.get(sent).copied().unwrap_or(b'x'),
                1 => b'x',
                _ => {
                    // Stalled: only wait for the close.
                    match tokio::time::timeout(TRICKLE, c.read(&mut buf)).await {
                        Ok(Ok(0)) | Ok(Err(_)) => break,
                        _ => continue,
                    }
                }
            };
            if c.write_all(&[byte]).await.is_err() {
                break;
            }
            sent += 1;
            match tokio::time::timeout(TRICKLE, c.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => break,
                // An answer (408): the connection is done; start again.
                Ok(Ok(_)) => break,
                Err(_) => {}
            }
        }
    }
}

/// A request body that never ends: one byte every `TRICKLE`.
struct Trickle(tokio::time::Interval);

impl Body for Trickle {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0
            .poll_tick(cx)
            .map(|_| Some(Ok(Frame::data(Bytes::from_static(b"x")))))
    }
}

/// One h2c connection whose `H2_STREAMS_PER_CONN` streams each trickle a body, opened again
/// when cardguard cuts them off, until told to stop.
async fn h2_trickler(addr: SocketAddr, attack: Arc<Attack>) {
    while !attack.stop.load(Ordering::Relaxed) {
        let Ok(tcp) = TcpStream::connect(addr).await else {
            tokio::time::sleep(TRICKLE).await;
            continue;
        };
        let Ok((sender, conn)) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp)).await
        else {
            continue;
        };
        let conn = tokio::spawn(conn);
        let mut streams = Vec::new();
        for _ in 0..H2_STREAMS_PER_CONN {
            let mut sender = sender.clone();
            let attack = attack.clone();
            streams.push(tokio::spawn(async move {
                while !attack.stop.load(Ordering::Relaxed) {
                    if sender.ready().await.is_err() {
                        return;
                    }
                    let req = http::Request::post(format!("http://{addr}/api/v1/write"))
                        .header("content-type", "application/x-protobuf")
                        .header("content-encoding", "snappy")
                        .body(Trickle(tokio::time::interval(TRICKLE)))
                        .unwrap();
                    attack.h2_streams.fetch_add(1, Ordering::Relaxed);
                    if sender.send_request(req).await.is_err() && sender.is_closed() {
                        return;
                    }
                }
            }));
        }
        for s in streams {
            let _ = s.await;
        }
        conn.abort();
    }
}

fn good_body(i: usize) -> Bytes {
    Bytes::from(rw::body(&[rw::Series::new(
        "cg_good_total",
        &[("job", "good"), ("i", &i.to_string())],
        i as f64,
        common::now_ms(),
    )]))
}

fn metric(app: &App, f: impl Fn(&cardguard::ingest::metrics::ServerMetrics) -> i64) -> i64 {
    f(&app.state().metrics.server)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_well_behaved_sender_gets_through_slow_loris_and_trickling_h2c_streams() {
    raise_fd_limit(2 * (SLOWLORIS + H2_CONNS) as u64 + 512);
    let upstream = Sink::start(SinkOptions::default()).await.unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let app = App::start_on(config(&upstream, ""), ConfigSource::default(), listener).unwrap();
    let addr = app.local_addr();

    let attack = Arc::new(Attack::default());
    let mut tasks = Vec::new();
    for i in 0..SLOWLORIS {
        // Half trickle headers, half bodies, one in a hundred stall in the HTTP/2 preface.
        let mode = if i % 100 == 0 { 2 } else { i % 2 };
        tasks.push(tokio::spawn(slowloris(addr, mode, attack.clone())));
    }
    for _ in 0..H2_CONNS {
        tasks.push(tokio::spawn(h2_trickler(addr, attack.clone())));
    }

    // The attack in place: every connection open and the bodies arriving.
    let deadline = Instant::now() + Duration::from_secs(20);
    let want_bodies = (SLOWLORIS / 2) as i64 + (H2_CONNS * H2_STREAMS_PER_CONN) as i64 / 2;
    loop {
        let conns = metric(&app, |m| m.connections.get());
        let bodies = metric(&app, |m| m.bodies_reading.get());
        if conns >= SLOWLORIS as i64 && bodies >= want_bodies {
            eprintln!("attack in place: {conns} connections, {bodies} bodies arriving");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the attack did not build up: {conns} connections, {bodies} bodies arriving"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The well-behaved sender: keep-alive HTTP/1.1, like Prometheus, for long enough that the
    // attackers are cut off and come back at least once.
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let started = Instant::now();
    let mut answers = Vec::new();
    let mut latencies = Vec::new();
    let mut i = 0;
    while started.elapsed() < Duration::from_secs(6) {
        let req = http::Request::post(format!("http://{addr}/api/v1/write"))
            .header("content-type", "application/x-protobuf")
            .header("content-encoding", "snappy")
            .body(Full::new(good_body(i)))
            .unwrap();
        let sent = Instant::now();
        let status = match client.request(req).await {
            Ok(r) => r.status().as_u16(),
            Err(e) => panic!("well-behaved request {i} failed: {e}"),
        };
        latencies.push(sent.elapsed());
        answers.push(status);
        i += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let peak_bodies = metric(&app, |m| m.bodies_reading.get());
    attack.stop.store(true, Ordering::Relaxed);

    let bad: Vec<_> = answers
        .iter()
        .enumerate()
        .filter(|(_, s)| !(200..300).contains(*s))
        .collect();
    assert!(
        bad.is_empty(),
        "{} of {} well-behaved requests not 2xx (index, status): {:?}",
        bad.len(),
        answers.len(),
        &bad[..bad.len().min(20)]
    );
    // A floor only to show the sender kept writing; how fast is the load harness's business.
    assert!(answers.len() >= 10, "only {} requests sent", answers.len());
    assert_eq!(upstream.requests(), answers.len() as u64);

    // The attack ran, and cardguard cut it off by its rules, not by luck.
    let s = &app.state().metrics.server;
    let timeouts = |phase: &str| s.connection_timeouts.with_label_values(&[phase]).get();
    let body_timeouts = |r: &str| s.body_timeouts.with_label_values(&[r]).get();
    latencies.sort();
    eprintln!(
        "{} good requests, slowest {:?}; attack: {} HTTP/1 connections, {} h2 streams; {} bodies arriving at \
         the end; timeouts: header {}, detect {}, body rate {}, body total {}; rejected {}",
        answers.len(),
        latencies.last(),
        attack.h1_connects.load(Ordering::Relaxed),
        attack.h2_streams.load(Ordering::Relaxed),
        peak_bodies,
        timeouts("header"),
        timeouts("detect"),
        body_timeouts("rate"),
        body_timeouts("total"),
        s.connections_rejected.get()
    );
    assert!(timeouts("header") > 0, "no header read timed out");
    assert!(timeouts("detect") > 0, "no protocol detection timed out");
    assert!(body_timeouts("rate") > 0, "no slow body was cut off");
    assert_eq!(s.connections_rejected.get(), 0);

    for t in tasks {
        t.abort();
    }
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_cap_are_answered_503_and_counted() {
    let upstream = Sink::start(SinkOptions::default()).await.unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let config = config(&upstream, "  max_connections: 20\n");
    let app = App::start_on(config, ConfigSource::default(), listener).unwrap();
    let addr = app.local_addr();

    // 20 idle connections fill the cap.
    let mut idle = Vec::new();
    for _ in 0..20 {
        idle.push(TcpStream::connect(addr).await.unwrap());
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while metric(&app, |m| m.connections.get()) < 20 {
        assert!(
            Instant::now() < deadline,
            "the idle connections never counted"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut extra = TcpStream::connect(addr).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), extra.read_to_end(&mut answer))
        .await
        .expect("the connection beyond the cap was closed")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 503 "), "{answer:?}");
    assert!(answer.contains("retry-after: 1"), "{answer:?}");
    assert_eq!(app.state().metrics.server.connections_rejected.get(), 1);
    assert_eq!(metric(&app, |m| m.connections.get()), 20);

    // Room again once they go: a write gets through.
    drop(idle);
    let deadline = Instant::now() + Duration::from_secs(5);
    while metric(&app, |m| m.connections.get()) > 0 {
        assert!(
            Instant::now() < deadline,
            "closed connections still counted"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let req = http::Request::post(format!("http://{addr}/api/v1/write"))
        .header("content-type", "application/x-protobuf")
        .header("content-encoding", "snappy")
        .body(Full::new(good_body(0)))
        .unwrap();
    assert_eq!(client.request(req).await.unwrap().status().as_u16(), 204);

    let text = String::from_utf8(app.state().telemetry.encode().1).unwrap();
    for line in [
        "cardguard_server_connections_rejected_total 1",
        "cardguard_server_limit{limit=\"max_connections\"} 20",
        "cardguard_server_limit{limit=\"header_read_timeout_seconds\"} 3",
        "cardguard_server_limit{limit=\"http2_max_concurrent_streams\"} 100",
    ] {
        assert!(text.contains(line), "{line:?} not on /metrics");
    }
    app.shutdown().await;
}
