//! Reading a write request's body off the wire, before and apart from processing it: the
//! bytes buffered by bodies still arriving are bounded across requests (`Reading`), and a
//! body is cut off when it arrives too slowly on average after a grace period, not only when
//! it takes too long in total. A sender trickling bytes therefore costs a little memory for a
//! few seconds, never a processing permit (issue 11, point 3).
//!
//! The bound is in bytes, not bodies: memory is what reading costs, and a slow sender holds
//! almost none of it. A bound on the count would either be low enough for slow senders to
//! fill (locking everyone out again) or high enough to allow count × `max_body_size`.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper::body::Body;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use super::config::ServerConfig;
use super::metrics::ServerMetrics;

/// Why a body was not read whole.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("request body larger than the limit of {limit} bytes")]
    TooLarge { limit: usize },
    #[error("reading request body: {0}")]
    Read(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("request body not received within {0:?}")]
    Timeout(Duration),
    #[error(
        "request body arrived at {rate} bytes/s on average, below the minimum of {min} bytes/s"
    )]
    TooSlow { rate: u64, min: u64 },
    #[error("too many request bodies arriving at once ({0} bytes buffered); retry later")]
    Busy(usize),
}

/// The bytes of bodies still arriving, shared by every request of one server.
pub struct Reading {
    bytes: Arc<Semaphore>,
    capacity: usize,
}

impl Reading {
    pub fn new(capacity: usize) -> Self {
        Reading {
            bytes: Arc::new(Semaphore::new(capacity)),
            capacity,
        }
    }
}

/// How one body must arrive, from the config in force.
#[derive(Debug, Clone, Copy)]
pub struct Pace {
    pub max_bytes: usize,
    pub timeout: Duration,
    pub min_rate: u64,
    pub grace: Duration,
    pub wait: Duration,
}

impl Pace {
    pub fn new(server: &ServerConfig, max_bytes: usize) -> Self {
        Pace {
            max_bytes,
            timeout: server.body_read_timeout,
            min_rate: server.body_min_rate,
            grace: server.body_rate_grace_period,
            wait: server.body_reading_wait,
        }
    }

    /// When a body that has `received` bytes since `start` stops being fast enough, given
    /// its own `grace`.
    fn rate_deadline(&self, start: Instant, grace: Duration, received: usize) -> Option<Instant> {
        if self.min_rate == 0 {
            return None;
        }
        let earned = Duration::from_secs_f64(received as f64 / self.min_rate as f64);
        Some(start + grace.max(earned))
    }

    /// The grace period of one body: `grace` stretched by up to half, at random. Attackers
    /// started together would otherwise all be cut off, and come back, in the same
    /// millisecond, and that burst is what real senders' requests queue behind (the load
    /// harness's `--attack`: p99 ×9 with it, ×1.7 with the attackers spread).
    fn jittered_grace(&self) -> Duration {
        use std::hash::{BuildHasher, Hasher};
        let r = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        self.grace.mul_f64(1.0 + (r % 1024) as f64 / 2048.0)
    }
}

/// Read `body` whole under `pace`, holding room in `reading` for what has arrived until it
/// has all arrived.
pub async fn read<B>(
    body: B,
    pace: Pace,
    reading: &Reading,
    m: &ServerMetrics,
) -> Result<Bytes, BodyError>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    m.bodies_reading.inc();
    let mut held = Held {
        permit: None,
        bytes: 0,
        m,
    };
    let result = read_held(body, pace, reading, &mut held).await;
    drop(held);
    m.bodies_reading.dec();
    if let Err(e) = &result {
        match e {
            BodyError::TooSlow { .. } => m.body_timeouts.with_label_values(&["rate"]).inc(),
            BodyError::Timeout(_) => m.body_timeouts.with_label_values(&["total"]).inc(),
            _ => {}
        }
    }
    result
}

/// The room a body holds in `Reading`, given back (and the gauge lowered) when dropped.
struct Held<'a> {
    permit: Option<OwnedSemaphorePermit>,
    bytes: usize,
    m: &'a ServerMetrics,
}

impl Held<'_> {
    fn add(&mut self, p: OwnedSemaphorePermit, n: usize) {
        match &mut self.permit {
            Some(held) => held.merge(p),
            None => self.permit = Some(p),
        }
        self.bytes += n;
        self.m.body_bytes_reading.add(n as i64);
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.m.body_bytes_reading.sub(self.bytes as i64);
    }
}

async fn read_held<B>(
    mut body: B,
    pace: Pace,
    reading: &Reading,
    held: &mut Held<'_>,
) -> Result<Bytes, BodyError>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut start = Instant::now();
    let total_deadline = start + pace.timeout;
    let grace = pace.jittered_grace();
    let mut chunks: Vec<Bytes> = Vec::new();
    let mut received = 0usize;
    loop {
        let rate_deadline = pace.rate_deadline(start, grace, received);
        let deadline = rate_deadline.map_or(total_deadline, |r| r.min(total_deadline));
        let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
            Ok(Some(Ok(f))) => f,
            Ok(Some(Err(e))) => return Err(BodyError::Read(e.into())),
            Ok(None) => break,
            Err(_) if deadline < total_deadline => {
                let secs = (Instant::now() - start).as_secs_f64().max(1e-3);
                return Err(BodyError::TooSlow {
                    rate: (received as f64 / secs) as u64,
                    min: pace.min_rate,
                });
            }
            Err(_) => return Err(BodyError::Timeout(pace.timeout)),
        };
        let Ok(data) = frame.into_data() else {
            continue; // trailers: remote write has none worth keeping
        };
        let n = data.len();
        if n == 0 {
            continue;
        }
        received += n;
        if received > pace.max_bytes {
            return Err(BodyError::TooLarge {
                limit: pace.max_bytes,
            });
        }
        // Never more than the whole capacity, or the wait could never end.
        let want = n.min(reading.capacity) as u32;
        let permit = match reading.bytes.clone().try_acquire_many_owned(want) {
            Ok(p) => p,
            Err(_) => {
                let waited = Instant::now();
                let got =
                    tokio::time::timeout(pace.wait, reading.bytes.clone().acquire_many_owned(want))
                        .await;
                // Waiting for room is ours, not the sender's slowness.
                start += waited.elapsed();
                match got {
                    Ok(Ok(p)) => p,
                    _ => return Err(BodyError::Busy(reading.capacity)),
                }
            }
        };
        held.add(permit, n);
        chunks.push(data);
    }
    Ok(match chunks.len() {
        0 => Bytes::new(),
        1 => chunks.pop().expect("one chunk"),
        _ => {
            let mut all = BytesMut::with_capacity(received);
            for c in &chunks {
                all.extend_from_slice(c);
            }
            all.freeze()
        }
    })
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use hyper::body::Frame;
    use prometheus::Registry;
    use tokio::sync::mpsc;

    use super::*;

    /// A body fed chunk by chunk by the test.
    struct Chan(mpsc::Receiver<Bytes>);

    impl Body for Chan {
        type Data = Bytes;
        type Error = Infallible;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
            self.0.poll_recv(cx).map(|o| o.map(|b| Ok(Frame::data(b))))
        }
    }

    fn pace() -> Pace {
        Pace {
            max_bytes: 1 << 20,
            timeout: Duration::from_secs(60),
            min_rate: 1000,
            grace: Duration::from_secs(5),
            wait: Duration::from_secs(1),
        }
    }

    /// Feed `chunks` of `size` bytes `every` apart (the first at once), then end the body.
    fn feed(size: usize, chunks: usize, every: Duration) -> Chan {
        let (tx, rx) = mpsc::channel(1);
        tokio::spawn(async move {
            for i in 0..chunks {
                if i > 0 {
                    tokio::time::sleep(every).await;
                }
                if tx.send(Bytes::from(vec![b'x'; size])).await.is_err() {
                    return;
                }
            }
        });
        Chan(rx)
    }

    fn metrics() -> ServerMetrics {
        ServerMetrics::register(&Registry::new())
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_fast_enough_is_read_whole_and_gives_its_room_back() {
        let (r, m) = (Reading::new(1 << 20), metrics());
        // 1200 bytes/s against a minimum of 1000, for 20 s.
        let b = read(feed(1200, 20, Duration::from_secs(1)), pace(), &r, &m)
            .await
            .unwrap();
        assert_eq!(b.len(), 24_000);
        assert_eq!(m.body_bytes_reading.get(), 0);
        assert_eq!(m.bodies_reading.get(), 0);
        assert_eq!(r.bytes.available_permits(), 1 << 20);
    }

    #[tokio::test(start_paused = true)]
    async fn a_trickle_is_cut_off_after_the_grace_period() {
        let (r, m) = (Reading::new(1 << 20), metrics());
        let started = Instant::now();
        let e = read(feed(1, 1000, Duration::from_millis(100)), pace(), &r, &m)
            .await
            .unwrap_err();
        assert!(matches!(e, BodyError::TooSlow { min: 1000, .. }), "{e}");
        // 10 bytes/s: cut when its grace period (5 s, stretched by up to half) ends, not at
        // the 60 s total.
        let cut = started.elapsed().as_secs_f64();
        assert!((5.0..7.5).contains(&cut), "{cut}");
        assert_eq!(m.body_timeouts.with_label_values(&["rate"]).get(), 1);
        assert_eq!(m.body_bytes_reading.get(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_that_stalls_after_a_good_start_is_cut_when_its_credit_runs_out() {
        let (r, m) = (Reading::new(1 << 20), metrics());
        let started = Instant::now();
        // 8000 bytes at once, then nothing (the sender stays): 8 s of credit at 1000 bytes/s.
        let (tx, rx) = mpsc::channel(1);
        tx.send(Bytes::from(vec![b'x'; 8000])).await.unwrap();
        let e = read(Chan(rx), pace(), &r, &m).await.unwrap_err();
        assert!(matches!(e, BodyError::TooSlow { .. }), "{e}");
        assert_eq!(started.elapsed().as_secs(), 8);
        drop(tx);
    }

    #[tokio::test(start_paused = true)]
    async fn the_total_timeout_holds_whatever_the_rate() {
        let (r, m) = (Reading::new(1 << 20), metrics());
        let p = Pace {
            timeout: Duration::from_secs(3),
            ..pace()
        };
        let e = read(feed(5000, 100, Duration::from_secs(1)), p, &r, &m)
            .await
            .unwrap_err();
        assert!(matches!(e, BodyError::Timeout(_)), "{e}");
        assert_eq!(m.body_timeouts.with_label_values(&["total"]).get(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn no_room_to_read_waits_briefly_then_refuses() {
        let (r, m) = (Reading::new(10_000), metrics());
        // Someone else holds all but 1000 bytes.
        let other = r.bytes.clone().try_acquire_many_owned(9_000).unwrap();
        let e = read(feed(2000, 1, Duration::ZERO), pace(), &r, &m)
            .await
            .unwrap_err();
        assert!(matches!(e, BodyError::Busy(10_000)), "{e}");
        // Room that frees within the wait is taken.
        let freer = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(500)).await;
            drop(other);
        });
        let b = read(feed(2000, 1, Duration::ZERO), pace(), &r, &m)
            .await
            .unwrap();
        assert_eq!(b.len(), 2000);
        freer.await.unwrap();
        assert_eq!(r.bytes.available_permits(), 10_000);
    }

    #[tokio::test]
    async fn too_large_is_refused_while_reading() {
        let (r, m) = (Reading::new(1 << 20), metrics());
        let p = Pace {
            max_bytes: 1500,
            ..pace()
        };
        let e = read(feed(1000, 2, Duration::ZERO), p, &r, &m)
            .await
            .unwrap_err();
        assert!(matches!(e, BodyError::TooLarge { limit: 1500 }), "{e}");
    }
}
