//! Recorded series on their way upstream: a bounded queue, batched into remote-write requests
//! routed and encoded by `route::own`, retried with backoff while the upstream is unavailable.
//!
//! The queue is bounded in samples (`rules.max_output_queue_samples`) and in bytes
//! (`rules.max_output_queue_bytes`, labels included): while the upstream is
//! down, results pile up to that bound and later ones are dropped and counted, so an outage
//! costs a gap in the recorded series, never unbounded memory. A 4xx other than 429 means the
//! upstream will never take the batch: it is dropped and counted.
//!
//! With `storage.path` set, results bypass this queue: `push` appends them to the durable
//! queue (`forward::queue`, sent by `route::durable`), which survives outages and restarts.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

use super::metrics::RuleMetrics;
use super::InForce;
use crate::forward::queue::DiskQueue;
use crate::forward::Forwarder;
use crate::route::{own, Downsampler};
use crate::wire::OwnedSeries;

/// Series per outgoing request, like Prometheus's `max_samples_per_send` default scale.
const BATCH_SERIES: usize = 2000;
const BACKOFF_MIN: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(10);

#[derive(Default)]
pub struct Output {
    queue: Mutex<VecDeque<OwnedSeries>>,
    samples: AtomicUsize,
    bytes: AtomicUsize,
    ready: Notify,
    /// The durable queue, when `storage.path` is set; set once at start.
    durable: std::sync::OnceLock<Arc<DiskQueue>>,
}

fn sample_count(s: &[OwnedSeries]) -> usize {
    s.iter().map(|x| x.samples.len() + x.histograms.len()).sum()
}

/// What a queued series holds, about: its labels, its samples, its own struct.
fn series_bytes(s: &OwnedSeries) -> usize {
    std::mem::size_of::<OwnedSeries>()
        + s.labels
            .iter()
            .map(|(n, v)| n.len() + v.len() + std::mem::size_of::<(String, String)>())
            .sum::<usize>()
        + s.samples.len() * std::mem::size_of::<(f64, i64)>()
        + s.histograms
            .iter()
            .map(|h| h.capacity() + 24)
            .sum::<usize>()
}

impl Output {
    /// Send results through the durable queue `q` from now on (the in-memory queue and `run`
    /// stay unused).
    pub fn set_durable(&self, q: Arc<DiskQueue>) {
        let _ = self.durable.set(q);
    }

    /// Queue recorded series; what does not fit under `cap` samples and `cap_bytes` bytes is
    /// dropped, its samples returned. With a durable queue the bound is its own
    /// (`storage.max_queue_bytes`, oldest dropped first).
    pub fn push(&self, series: Vec<OwnedSeries>, cap: usize, cap_bytes: usize) -> usize {
        if series.is_empty() {
            return 0;
        }
        if let Some(q) = self.durable.get() {
            let record = crate::route::durable::OwnRecord {
                kind: crate::route::durable::Kind::Rules,
                tenant: None,
                series,
            };
            return match crate::route::durable::queue(q, &record) {
                Ok(()) => 0,
                Err(e) => {
                    tracing::error!("recorded samples not queued, dropped: {e}");
                    sample_count(&record.series)
                }
            };
        }
        let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        let mut dropped = 0;
        for s in series {
            let n = s.samples.len() + s.histograms.len();
            let b = series_bytes(&s);
            if self.samples.load(Ordering::Relaxed) + n > cap
                || self.bytes.load(Ordering::Relaxed) + b > cap_bytes
            {
                dropped += n;
                continue;
            }
            self.samples.fetch_add(n, Ordering::Relaxed);
            self.bytes.fetch_add(b, Ordering::Relaxed);
            q.push_back(s);
        }
        drop(q);
        self.ready.notify_one();
        dropped
    }

    pub fn queued_samples(&self) -> usize {
        self.samples.load(Ordering::Relaxed)
    }

    pub fn queued_bytes(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Take everything queued back (the queue bench's baseline: push, then what `run` takes).
    #[doc(hidden)]
    pub fn drain_for_bench(&self) -> usize {
        let batch = self.take_batch();
        self.release(&batch);
        batch.len()
    }

    fn take_batch(&self) -> Vec<OwnedSeries> {
        let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        let n = q.len().min(BATCH_SERIES);
        q.drain(..n).collect()
    }

    fn release(&self, batch: &[OwnedSeries]) {
        self.samples
            .fetch_sub(sample_count(batch), Ordering::Relaxed);
        self.bytes.fetch_sub(
            batch.iter().map(series_bytes).sum::<usize>(),
            Ordering::Relaxed,
        );
    }

    /// Send queued series until the process ends. `config` gives the config in force (the
    /// upstreams may change on reload). Recorded series are routed like any other series
    /// (`downsampler` is the routes' state).
    pub async fn run<C: InForce>(
        self: Arc<Self>,
        forwarder: Forwarder,
        config: impl Fn() -> Arc<C>,
        metrics: RuleMetrics,
        downsampler: Arc<Downsampler>,
    ) {
        let mut scratch = own::Scratch::default();
        loop {
            let batch = self.take_batch();
            metrics.set_output_queue(self.queued_samples(), self.queued_bytes());
            if batch.is_empty() {
                self.ready.notified().await;
                continue;
            }
            let mut backoff = BACKOFF_MIN;
            loop {
                let cfg = config();
                let sent = if let Some(routing) = cfg.routing() {
                    let now = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_millis() as i64);
                    own::send(
                        &forwarder,
                        routing,
                        &downsampler,
                        &batch,
                        None,
                        now,
                        &mut scratch,
                    )
                    .await
                    .map(|_| ())
                } else {
                    metrics
                        .output_dropped
                        .with_label_values(&["no_upstream"])
                        .inc_by(sample_count(&batch) as u64);
                    break;
                };
                match sent {
                    Ok(()) => {
                        metrics.output_sent.inc_by(sample_count(&batch) as u64);
                        break;
                    }
                    Err(e) if !e.class().is_retryable() => {
                        tracing::warn!("recorded samples refused by the upstream, dropped: {e}");
                        metrics
                            .output_dropped
                            .with_label_values(&["rejected"])
                            .inc_by(sample_count(&batch) as u64);
                        break;
                    }
                    Err(e) => {
                        tracing::debug!(
                            "recorded samples not delivered, retrying in {backoff:?}: {e}"
                        );
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(BACKOFF_MAX);
                    }
                }
            }
            self.release(&batch);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::forward::UpstreamConfig;
    use crate::route::Routing;
    use crate::rules::RulesConfig;
    use crate::wire::Version;

    /// What `run` reads of the config: here, one upstream.
    struct OneUpstream(Arc<Routing>, RulesConfig);

    impl InForce for OneUpstream {
        fn rules(&self) -> &RulesConfig {
            &self.1
        }
        fn routing(&self) -> Option<&Arc<Routing>> {
            Some(&self.0)
        }
    }

    fn series(n: usize) -> Vec<OwnedSeries> {
        (0..n)
            .map(|i| OwnedSeries {
                histograms: Vec::new(),
                labels: vec![("__name__".into(), format!("m{i}"))],
                samples: vec![(1.0, 1)],
            })
            .collect()
    }

    /// An upstream on loopback answering `statuses` in turn (then 204), counting requests.
    async fn upstream(statuses: Vec<u16>) -> (String, Arc<AtomicUsize>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let count = Arc::new(AtomicUsize::new(0));
        let c = count.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut sock, _)) = listener.accept().await else {
                    return;
                };
                let c = c.clone();
                let statuses = statuses.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    loop {
                        // One request: headers, then Content-Length bytes of body.
                        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                            match sock.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                            continue;
                        };
                        let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                        let len: usize = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .map_or(0, |v| v.trim().parse().unwrap());
                        while buf.len() < end + 4 + len {
                            match sock.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        }
                        buf.drain(..end + 4 + len);
                        let i = c.fetch_add(1, Ordering::SeqCst);
                        let status = statuses.get(i).copied().unwrap_or(204);
                        let resp = format!("HTTP/1.1 {status} X\r\ncontent-length: 0\r\n\r\n");
                        if sock.write_all(resp.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        (format!("http://{addr}/api/v1/write"), count)
    }

    async fn run_until_sent(statuses: Vec<u16>) -> (RuleMetrics, usize) {
        let (url, count) = upstream(statuses).await;
        let up = UpstreamConfig {
            name: "default".into(),
            url: url.parse().unwrap(),
            version: Version::V1,
            timeout: Duration::from_secs(2),
            headers: Vec::new(),
            tenant_header: None,
            client: None,
        };
        let config = Arc::new(OneUpstream(
            Arc::new(Routing::single(up)),
            RulesConfig::default(),
        ));
        let telemetry = crate::telemetry::Telemetry::new();
        let metrics = RuleMetrics::register(telemetry.registry());
        let out = Arc::new(Output::default());
        out.push(series(3), 100, usize::MAX);
        let task = tokio::spawn(out.clone().run(
            Forwarder::new(crate::forward::metrics::ForwardMetrics::register(
                telemetry.registry(),
            )),
            move || config.clone(),
            metrics.clone(),
            Arc::new(crate::route::Downsampler::default()),
        ));
        for _ in 0..100 {
            if out.queued_samples() == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        task.abort();
        (metrics, count.load(Ordering::SeqCst))
    }

    #[tokio::test]
    async fn retries_5xx_and_429_until_delivered() {
        let (m, requests) = run_until_sent(vec![503, 429, 500]).await;
        assert_eq!(requests, 4);
        assert_eq!(m.output_sent.get(), 3);
        assert_eq!(m.output_dropped.with_label_values(&["rejected"]).get(), 0);
    }

    #[tokio::test]
    async fn a_4xx_drops_the_batch_and_counts_it() {
        let (m, requests) = run_until_sent(vec![400]).await;
        assert_eq!(requests, 1);
        assert_eq!(m.output_sent.get(), 0);
        assert_eq!(m.output_dropped.with_label_values(&["rejected"]).get(), 3);
    }

    #[test]
    fn queue_is_bounded_in_samples() {
        let o = Output::default();
        assert_eq!(o.push(series(3), 5, usize::MAX), 0);
        assert_eq!(o.push(series(3), 5, usize::MAX), 1);
        assert_eq!(o.queued_samples(), 5);
        let b = o.take_batch();
        assert_eq!(b.len(), 5);
        o.release(&b);
        assert_eq!(o.queued_samples(), 0);
    }

    /// Issue 11: bounded in samples only, a queue of series with 16 KiB labels could hold
    /// gigabytes. Bytes are capped too, and given back when a batch is released.
    #[test]
    fn queue_is_bounded_in_bytes() {
        let o = Output::default();
        let long: Vec<OwnedSeries> = (0..100)
            .map(|i| OwnedSeries {
                histograms: Vec::new(),
                labels: vec![
                    ("__name__".into(), format!("m{i}")),
                    ("x".into(), "v".repeat(16 << 10)),
                ],
                samples: vec![(1.0, 1)],
            })
            .collect();
        let dropped = o.push(long, usize::MAX, 1 << 20);
        assert!(dropped > 30, "{dropped}");
        assert!(o.queued_bytes() <= 1 << 20);
        let b = o.take_batch();
        o.release(&b);
        assert_eq!(o.queued_bytes(), 0);
    }
}
