//! The null upstream: answers every remote-write request 204 at once and counts what it got
//! (requests, samples, and samples per `service` label), so the proxy, not a backend, is what
//! the harness measures.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use cardguard::wire::{self, Limits, Parsed, Version};
use http_body_util::{BodyExt, Empty};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

#[derive(Default)]
pub struct Counts {
    pub requests: AtomicU64,
    pub samples: AtomicU64,
    /// Requests that could not be decoded (counted, still answered 204).
    pub undecodable: AtomicU64,
    per_service: Mutex<HashMap<Vec<u8>, u64>>,
}

impl Counts {
    pub fn per_service(&self) -> BTreeMap<String, u64> {
        self.per_service
            .lock()
            .unwrap()
            .iter()
            .map(|(k, v)| (String::from_utf8_lossy(k).into_owned(), *v))
            .collect()
    }

    pub fn reset(&self) {
        self.requests.store(0, Ordering::Relaxed);
        self.samples.store(0, Ordering::Relaxed);
        self.undecodable.store(0, Ordering::Relaxed);
        self.per_service.lock().unwrap().clear();
    }

    fn record(&self, body: &[u8], scratch: &mut (Vec<u8>, Parsed)) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let (decoded, parsed) = scratch;
        let limits = Limits {
            max_decoded_bytes: 256 << 20,
            max_series: 10_000_000,
            ..Limits::default()
        };
        if wire::snappy::decompress(body, limits.max_decoded_bytes, decoded).is_err()
            || parsed.parse(decoded, Version::V1, &limits).is_err()
        {
            self.undecodable.fetch_add(1, Ordering::Relaxed);
            return;
        }
        // Tally locally, publish once per request.
        let mut local: Vec<(&[u8], u64)> = Vec::new();
        let mut total = 0u64;
        for s in parsed.iter(decoded) {
            let n = s.sample_count() as u64;
            total += n;
            let svc = s
                .labels()
                .find(|(name, _)| *name == b"service")
                .map(|(_, v)| v)
                .unwrap_or(b"");
            match local.iter_mut().find(|(k, _)| *k == svc) {
                Some(e) => e.1 += n,
                None => local.push((svc, n)),
            }
        }
        self.samples.fetch_add(total, Ordering::Relaxed);
        let mut map = self.per_service.lock().unwrap();
        for (k, n) in local {
            match map.get_mut(k) {
                Some(v) => *v += n,
                None => {
                    map.insert(k.to_vec(), n);
                }
            }
        }
    }
}

pub struct NullUpstream {
    pub addr: SocketAddr,
    pub counts: Arc<Counts>,
}

impl NullUpstream {
    pub async fn start() -> NullUpstream {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind null upstream");
        let addr = listener.local_addr().unwrap();
        let counts = Arc::new(Counts::default());
        let c = counts.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let c = c.clone();
                tokio::spawn(async move {
                    // One connection's requests arrive one at a time: reuse its buffers.
                    let scratch = Arc::new(Mutex::new((Vec::new(), Parsed::new())));
                    let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let (c, scratch) = (c.clone(), scratch.clone());
                        async move {
                            let body = req.into_body().collect().await?.to_bytes();
                            c.record(&body, &mut scratch.lock().unwrap());
                            let mut resp = http::Response::new(Empty::<Bytes>::new());
                            *resp.status_mut() = http::StatusCode::NO_CONTENT;
                            Ok::<_, hyper::Error>(resp)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        NullUpstream { addr, counts }
    }

    pub fn write_url(&self) -> String {
        format!("http://{}/api/v1/write", self.addr)
    }
}
