//! An in-process remote-write receiver that decodes and records what it is sent: the demo's
//! upstream, the load harness's null upstream and the tests' fake upstream, one implementation
//! for all three. It counts requests and samples (per `service` label too, and distinct series
//! per service when asked), keeps the raw requests when asked, and answers what it is told
//! (204 by default; any status, headers, body or delay for the tests of upstream failures; 413
//! to a body over a size, as a backend with a request size limit does).
//! Decoding reuses one buffer per connection, so as a null upstream it costs the harness little.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::convert::Infallible;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::wire::{self, Limits, Parsed, Version};

/// What the sink answers to every request.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
    /// Wait this long before answering (to provoke upstream timeouts).
    pub delay: Duration,
}

impl Default for Answer {
    fn default() -> Self {
        Answer::status(204)
    }
}

impl Answer {
    pub fn status(status: u16) -> Answer {
        Answer {
            status,
            headers: Vec::new(),
            body: Bytes::new(),
            delay: Duration::ZERO,
        }
    }
    pub fn with_header(mut self, name: &str, value: &str) -> Answer {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }
    pub fn with_body(mut self, body: impl AsRef<[u8]>) -> Answer {
        self.body = Bytes::copy_from_slice(body.as_ref());
        self
    }
    pub fn with_delay(mut self, delay: Duration) -> Answer {
        self.delay = delay;
        self
    }
}

/// What the sink keeps beyond its counters.
#[derive(Debug, Clone, Copy, Default)]
pub struct SinkOptions {
    /// Keep every request (method, path, headers, body): the tests' fake upstream.
    pub keep_requests: bool,
    /// Track distinct series per service (a hash per series): the demo's report.
    pub distinct_series: bool,
    /// Answer 400 to a body that does not decode, instead of the configured answer.
    pub reject_undecodable: bool,
}

impl SinkOptions {
    /// The tests' fake upstream: keeps every request.
    pub fn recording() -> SinkOptions {
        SinkOptions {
            keep_requests: true,
            ..SinkOptions::default()
        }
    }
}

/// One request the sink received.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

#[derive(Default)]
struct ServiceTally {
    samples: u64,
    series: HashSet<u64>,
}

#[derive(Default)]
struct Shared {
    options: SinkOptions,
    answer: Mutex<Answer>,
    received: Mutex<Vec<Received>>,
    requests: AtomicU64,
    samples: AtomicU64,
    undecodable: AtomicU64,
    /// Compressed bodies larger than this are answered 413 and not recorded (`usize::MAX`: none).
    max_body_bytes: std::sync::atomic::AtomicUsize,
    too_large: AtomicU64,
    /// By `service` label value (empty when absent).
    by_service: Mutex<HashMap<Vec<u8>, ServiceTally>>,
}

/// A running sink on an ephemeral loopback port.
pub struct Sink {
    addr: SocketAddr,
    shared: Arc<Shared>,
    /// The sink's own runtime when started from blocking code; dropping it stops the sink.
    runtime: Option<tokio::runtime::Runtime>,
}

/// A test receiver must not be the limit: far above what cardguard accepts.
const LIMITS: Limits = Limits {
    max_decoded_bytes: 256 << 20,
    max_output_bytes: 256 << 20,
    max_series: 10_000_000,
    max_labels_per_series: 1 << 16,
    max_label_name_bytes: 1 << 20,
    max_label_value_bytes: 1 << 20,
    max_symbols: 10_000_000,
};

impl Sink {
    /// Start on the current tokio runtime.
    pub async fn start(options: SinkOptions) -> std::io::Result<Sink> {
        let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            options,
            max_body_bytes: usize::MAX.into(),
            ..Shared::default()
        });
        tokio::spawn(accept_loop(listener, shared.clone()));
        Ok(Sink {
            addr,
            shared,
            runtime: None,
        })
    }

    /// Start on a runtime of its own, for tests on std threads; it stops when dropped.
    pub fn start_blocking(options: SinkOptions) -> std::io::Result<Sink> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("cardguard-sink")
            .enable_all()
            .build()?;
        let mut sink = runtime.block_on(Sink::start(options))?;
        sink.runtime = Some(runtime);
        Ok(sink)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn write_url(&self) -> String {
        format!("http://{}/api/v1/write", self.addr)
    }

    /// Answer every following request with `answer`.
    pub fn answer(&self, answer: Answer) {
        *lock(&self.shared.answer) = answer;
    }

    /// From now on answer 413 to a compressed body over `limit` bytes, before decoding it; such
    /// a request is counted by [`Sink::too_large`] only. `None` lifts the limit.
    pub fn max_body_bytes(&self, limit: Option<usize>) {
        self.shared
            .max_body_bytes
            .store(limit.unwrap_or(usize::MAX), Ordering::Relaxed);
    }

    /// Requests answered 413 because of [`Sink::max_body_bytes`].
    pub fn too_large(&self) -> u64 {
        self.shared.too_large.load(Ordering::Relaxed)
    }

    /// Every request so far (only with [`SinkOptions::keep_requests`]).
    pub fn received(&self) -> Vec<Received> {
        lock(&self.shared.received).clone()
    }

    pub fn requests(&self) -> u64 {
        self.shared.requests.load(Ordering::Relaxed)
    }

    /// Float samples in the requests that decoded.
    pub fn samples(&self) -> u64 {
        self.shared.samples.load(Ordering::Relaxed)
    }

    /// Requests whose body did not decode as remote write.
    pub fn undecodable(&self) -> u64 {
        self.shared.undecodable.load(Ordering::Relaxed)
    }

    /// Samples per `service` label value ("" when absent).
    pub fn samples_by_service(&self) -> BTreeMap<String, u64> {
        lock(&self.shared.by_service)
            .iter()
            .map(|(k, t)| (String::from_utf8_lossy(k).into_owned(), t.samples))
            .collect()
    }

    /// Distinct series per `service` label value ("" when absent); only with
    /// [`SinkOptions::distinct_series`].
    pub fn distinct_by_service(&self) -> BTreeMap<String, usize> {
        lock(&self.shared.by_service)
            .iter()
            .map(|(k, t)| (String::from_utf8_lossy(k).into_owned(), t.series.len()))
            .collect()
    }

    /// Forget everything received so far (the answer stays).
    pub fn reset(&self) {
        self.shared.requests.store(0, Ordering::Relaxed);
        self.shared.samples.store(0, Ordering::Relaxed);
        self.shared.undecodable.store(0, Ordering::Relaxed);
        self.shared.too_large.store(0, Ordering::Relaxed);
        lock(&self.shared.by_service).clear();
        lock(&self.shared.received).clear();
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// A panicking test thread must not hide what the sink recorded.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        tokio::spawn(async move {
            // One connection's requests arrive one at a time: reuse its buffers.
            let scratch = Arc::new(Mutex::new((Vec::new(), Parsed::new())));
            let svc = service_fn(move |req: Request<Incoming>| {
                let (shared, scratch) = (shared.clone(), scratch.clone());
                async move { Ok::<_, Infallible>(handle(&shared, &scratch, req).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

async fn handle(
    shared: &Shared,
    scratch: &Mutex<(Vec<u8>, Parsed)>,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let version = match parts
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    {
        Some(ct) if ct.contains("io.prometheus.write.v2.Request") => Version::V2,
        _ => Version::V1,
    };
    let body = body.collect().await.map(|b| b.to_bytes());
    if let Ok(b) = &body {
        if b.len() > shared.max_body_bytes.load(Ordering::Relaxed) {
            shared.too_large.fetch_add(1, Ordering::Relaxed);
            let mut r = Response::new(Full::new(Bytes::from_static(b"request body too large\n")));
            *r.status_mut() = StatusCode::PAYLOAD_TOO_LARGE;
            return r;
        }
    }
    let decoded = match &body {
        Ok(b) => shared.record(b, version, &mut lock(scratch)),
        Err(_) => false,
    };
    if !decoded {
        shared.undecodable.fetch_add(1, Ordering::Relaxed);
    }
    if shared.options.keep_requests {
        lock(&shared.received).push(Received {
            method: parts.method.to_string(),
            path: parts.uri.path().to_string(),
            headers: parts.headers,
            body: body.unwrap_or_default(),
        });
    }
    // After the request is kept, so a test that reads the count and then the requests never
    // sees the count ahead of them.
    shared.requests.fetch_add(1, Ordering::Relaxed);
    let answer = lock(&shared.answer).clone();
    if !answer.delay.is_zero() {
        tokio::time::sleep(answer.delay).await;
    }
    let mut r = Response::new(Full::new(Bytes::new()));
    if !decoded && shared.options.reject_undecodable {
        *r.status_mut() = StatusCode::BAD_REQUEST;
        return r;
    }
    *r.body_mut() = Full::new(answer.body);
    *r.status_mut() = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::NO_CONTENT);
    for (k, v) in &answer.headers {
        if let (Ok(k), Ok(v)) = (
            http::HeaderName::try_from(k.as_str()),
            http::HeaderValue::try_from(v.as_str()),
        ) {
            r.headers_mut().append(k, v);
        }
    }
    r
}

impl Shared {
    /// Decode and tally one body; false when it is not remote write.
    fn record(&self, body: &[u8], version: Version, scratch: &mut (Vec<u8>, Parsed)) -> bool {
        let (decoded, parsed) = scratch;
        if wire::snappy::decompress(body, LIMITS.max_decoded_bytes, decoded).is_err()
            || parsed.parse(decoded, version, &LIMITS).is_err()
        {
            return false;
        }
        // Tally locally, publish once per request. Indexed by value: a request may carry a
        // thousand services (the load harness's many small owners), and a scan per series made
        // this null upstream quadratic, slower than the proxy it measured.
        let mut local: Vec<(&[u8], u64, Vec<u64>)> = Vec::new();
        let mut index: HashMap<&[u8], usize> = HashMap::new();
        for s in parsed.iter(decoded) {
            let mut service: &[u8] = b"";
            let mut h = DefaultHasher::new();
            for (name, value) in s.labels() {
                if self.options.distinct_series {
                    name.hash(&mut h);
                    value.hash(&mut h);
                }
                if name == b"service" {
                    service = value;
                }
            }
            let i = *index.entry(service).or_insert_with(|| {
                local.push((service, 0, Vec::new()));
                local.len() - 1
            });
            local[i].1 += s.sample_count() as u64;
            if self.options.distinct_series {
                local[i].2.push(h.finish());
            }
        }
        self.samples
            .fetch_add(parsed.counts().samples, Ordering::Relaxed);
        let mut map = lock(&self.by_service);
        for (k, n, ids) in local {
            let tally = match map.get_mut(k) {
                Some(t) => t,
                None => map.entry(k.to_vec()).or_default(),
            };
            tally.samples += n;
            tally.series.extend(ids);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{OwnedSeries, Writer};

    fn body(series: &[(&str, &str, usize)]) -> Vec<u8> {
        let mut w = Writer::new(Version::V1);
        w.reset();
        for (name, service, samples) in series {
            w.push_series(&OwnedSeries {
                histograms: Vec::new(),
                labels: vec![
                    ("__name__".to_string(), name.to_string()),
                    ("service".to_string(), service.to_string()),
                ],
                samples: (0..*samples).map(|i| (1.0, i as i64)).collect(),
            });
        }
        let mut out = Vec::new();
        wire::snappy::compress(w.finish().unwrap(), &mut out);
        out
    }

    #[tokio::test]
    async fn counts_per_service_keeps_requests_and_answers_as_told() {
        let sink = Sink::start(SinkOptions {
            keep_requests: true,
            distinct_series: true,
            reject_undecodable: false,
        })
        .await
        .unwrap();
        let client = poster(&sink);
        let b = body(&[("a", "web", 2), ("b", "web", 1), ("a", "db", 3)]);
        assert_eq!(client(b.clone()).await, 204);
        assert_eq!(client(b).await, 204);
        sink.answer(Answer::status(429).with_header("retry-after", "7"));
        assert_eq!(client(b"not snappy".to_vec()).await, 429);
        assert_eq!(sink.requests(), 3);
        assert_eq!(sink.undecodable(), 1);
        assert_eq!(sink.samples(), 12);
        assert_eq!(sink.samples_by_service()["web"], 6);
        assert_eq!(sink.distinct_by_service()["web"], 2);
        assert_eq!(sink.distinct_by_service()["db"], 1);
        assert_eq!(sink.received().len(), 3);
        assert_eq!(sink.received()[0].path, "/api/v1/write");
        sink.reset();
        assert_eq!(sink.requests(), 0);
        assert!(sink.received().is_empty());
    }

    #[tokio::test]
    async fn refuses_bodies_over_a_size_without_recording_them() {
        let sink = Sink::start(SinkOptions::recording()).await.unwrap();
        let client = poster(&sink);
        let (small, large) = (body(&[("a", "web", 1)]), body(&[("a", "web", 50)]));
        sink.max_body_bytes(Some(small.len()));
        assert_eq!(client(large.clone()).await, 413);
        assert_eq!(client(small).await, 204);
        assert_eq!(
            (sink.too_large(), sink.requests(), sink.samples()),
            (1, 1, 1)
        );
        assert_eq!(sink.received().len(), 1);
        sink.max_body_bytes(None);
        assert_eq!(client(large).await, 204);
    }

    /// POST `body` to the sink; the status.
    fn poster(
        sink: &Sink,
    ) -> impl Fn(Vec<u8>) -> std::pin::Pin<Box<dyn std::future::Future<Output = u16> + Send>> {
        let url = sink.write_url();
        move |body| {
            let url = url.clone();
            Box::pin(async move {
                let client = hyper_util::client::legacy::Client::builder(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .build_http();
                let req = Request::post(url)
                    .body(Full::new(Bytes::from(body)))
                    .unwrap();
                client.request(req).await.unwrap().status().as_u16()
            })
        }
    }
}
