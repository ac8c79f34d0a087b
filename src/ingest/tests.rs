//! The server in-process against a recording upstream on loopback: statuses, headers, the
//! unchanged-body fast path, translation, reload.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use prost::Message;
use tokio::net::TcpListener;

use super::*;
use crate::app::App;
use crate::config::{Config, Overrides, UpstreamConfig};
use crate::sink::{Answer, Sink, SinkOptions};
use crate::wire::types::{v1, v2};
use crate::wire::{self, Version};

struct Harness {
    addr: SocketAddr,
    upstream: Sink,
    state: Arc<State>,
    client: Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
    /// The server and background tasks, running until the test ends.
    _app: App,
}

async fn start(version_out: Version, source: ConfigSource) -> Harness {
    let upstream = Sink::start(SinkOptions::recording()).await.unwrap();
    let up_addr = upstream.addr();
    let mut config = source.load().unwrap_or_default();
    config.routing = Some(std::sync::Arc::new(crate::route::Routing::single(
        UpstreamConfig {
            name: "test".into(),
            url: format!("http://{up_addr}/api/v1/write").parse().unwrap(),
            version: version_out,
            timeout: Duration::from_secs(2),
            headers: vec![],
            tenant_header: Some(http::HeaderName::from_static("x-scope-orgid")),
            client: None,
        },
    )));
    let app = App::start_on(config, source, listener().await).unwrap();
    Harness {
        addr: app.local_addr(),
        upstream,
        state: app.state().clone(),
        client: Client::builder(TokioExecutor::new()).build_http(),
        _app: app,
    }
}

async fn listener() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").await.unwrap()
}

impl Harness {
    async fn post(
        &self,
        ct: &str,
        body: Bytes,
        extra: &[(&str, &str)],
    ) -> (StatusCode, http::HeaderMap, Bytes) {
        let mut b = Request::post(format!("http://{}/api/v1/write", self.addr))
            .header("content-type", ct)
            .header("content-encoding", "snappy");
        for (k, v) in extra {
            b = b.header(*k, *v);
        }
        let resp = self
            .client
            .request(b.body(Full::new(body)).unwrap())
            .await
            .unwrap();
        let (parts, body) = resp.into_parts();
        (
            parts.status,
            parts.headers,
            body.collect().await.unwrap().to_bytes(),
        )
    }

    async fn get(&self, path: &str) -> (StatusCode, String) {
        let req = Request::get(format!("http://{}{path}", self.addr))
            .body(Full::new(Bytes::new()))
            .unwrap();
        let resp = self.client.request(req).await.unwrap();
        let status = resp.status();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }
}

fn v1_request() -> v1::WriteRequest {
    let l = |n: &str, v: &str| v1::Label {
        name: n.into(),
        value: v.into(),
    };
    v1::WriteRequest {
        timeseries: vec![
            v1::TimeSeries {
                labels: vec![
                    l("__name__", "up"),
                    l("instance", "a:9100"),
                    l("job", "node"),
                ],
                samples: vec![v1::Sample {
                    value: 1.0,
                    timestamp: 1_700_000_000_000,
                }],
                ..Default::default()
            },
            v1::TimeSeries {
                labels: vec![
                    l("__name__", "http_requests_total"),
                    l("code", "200"),
                    l("job", "api"),
                ],
                samples: vec![
                    v1::Sample {
                        value: 10.0,
                        timestamp: 1_700_000_000_000,
                    },
                    v1::Sample {
                        value: 12.0,
                        timestamp: 1_700_000_015_000,
                    },
                ],
                ..Default::default()
            },
        ],
        metadata: vec![],
    }
}

/// One v1 series with a single sample.
fn ts(labels: &[(&str, &str)], value: f64, timestamp: i64) -> v1::TimeSeries {
    crate::wire::testgen::series(labels, &[(value, timestamp)])
}

impl Harness {
    /// POST these series as a v1 request; the status.
    async fn post_v1(&self, timeseries: Vec<v1::TimeSeries>) -> StatusCode {
        let req = v1::WriteRequest {
            timeseries,
            metadata: vec![],
        };
        self.post(
            "application/x-protobuf",
            compress(&req.encode_to_vec()),
            &[],
        )
        .await
        .0
    }
}

fn compress(raw: &[u8]) -> Bytes {
    let mut out = Vec::new();
    wire::snappy::compress(raw, &mut out);
    Bytes::from(out)
}

#[tokio::test]
async fn unchanged_request_is_forwarded_byte_for_byte() {
    let h = start(Version::V1, ConfigSource::default()).await;
    let body = compress(&v1_request().encode_to_vec());
    let (status, headers, _) = h
        .post(
            "application/x-protobuf",
            body.clone(),
            &[("x-scope-orgid", "team-a")],
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    // v1 responses carry no Written headers (docs/protocol.md §2).
    assert!(headers
        .get("x-prometheus-remote-write-samples-written")
        .is_none());
    let got = h.upstream.received();
    assert_eq!(got.len(), 1);
    assert_eq!(
        got[0].body, body,
        "the original compressed body goes upstream"
    );
    assert_eq!(got[0].headers["content-encoding"], "snappy");
    assert_eq!(got[0].headers["content-type"], "application/x-protobuf");
    assert_eq!(got[0].headers["x-prometheus-remote-write-version"], "0.1.0");
    assert_eq!(
        got[0].headers["x-scope-orgid"], "team-a",
        "tenant passed through"
    );
    assert_eq!(h.state.metrics.forward.passthrough_requests.get(), 1);
    assert_eq!(h.state.metrics.forward.forwarded.samples(), 3);
}

#[tokio::test]
async fn v2_sender_gets_written_headers_and_v1_upstream_gets_translation() {
    let h = start(Version::V1, ConfigSource::default()).await;
    let req = v2::Request {
        symbols: vec![
            "".into(),
            "__name__".into(),
            "up".into(),
            "job".into(),
            "node".into(),
        ],
        timeseries: vec![v2::TimeSeries {
            labels_refs: vec![1, 2, 3, 4],
            samples: vec![v2::Sample {
                value: 1.0,
                timestamp: 5,
                start_timestamp: 0,
            }],
            ..Default::default()
        }],
    };
    let (status, headers, _) = h
        .post(
            "application/x-protobuf;proto=io.prometheus.write.v2.Request",
            compress(&req.encode_to_vec()),
            &[],
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(headers["x-prometheus-remote-write-samples-written"], "1");
    assert_eq!(headers["x-prometheus-remote-write-histograms-written"], "0");
    assert_eq!(headers["x-prometheus-remote-write-exemplars-written"], "0");
    let got = h.upstream.received();
    let mut raw = Vec::new();
    wire::snappy::decompress(&got[0].body, 1 << 20, &mut raw).unwrap();
    let v1req = v1::WriteRequest::decode(raw.as_slice()).unwrap();
    assert_eq!(v1req.timeseries.len(), 1);
    assert_eq!(v1req.timeseries[0].labels[1].value, "node");
    assert_eq!(v1req.timeseries[0].samples[0].timestamp, 5);
}

#[tokio::test]
async fn v1_sender_to_v2_upstream() {
    let h = start(Version::V2, ConfigSource::default()).await;
    let (status, _, _) = h
        .post(
            "application/x-protobuf",
            compress(&v1_request().encode_to_vec()),
            &[],
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let got = h.upstream.received();
    assert_eq!(
        got[0].headers["content-type"],
        "application/x-protobuf;proto=io.prometheus.write.v2.Request"
    );
    assert_eq!(got[0].headers["x-prometheus-remote-write-version"], "2.0.0");
    let mut raw = Vec::new();
    wire::snappy::decompress(&got[0].body, 1 << 20, &mut raw).unwrap();
    let v2req = v2::Request::decode(raw.as_slice()).unwrap();
    assert_eq!(v2req.timeseries.len(), 2);
    assert_eq!(v2req.symbols[0], "");
    assert_eq!(v2req.timeseries[1].samples.len(), 2);
}

#[tokio::test]
async fn upstream_failures_become_retryable_statuses() {
    let h = start(Version::V1, ConfigSource::default()).await;
    let body = compress(&v1_request().encode_to_vec());
    h.upstream.answer(Answer::status(500).with_body("boom"));
    assert_eq!(
        h.post("application/x-protobuf", body.clone(), &[]).await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
    h.upstream.answer(
        Answer::status(429)
            .with_header("retry-after", "7")
            .with_body("slow down"),
    );
    let (status, headers, _) = h.post("application/x-protobuf", body.clone(), &[]).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(headers["retry-after"], "7");
    h.upstream
        .answer(Answer::status(400).with_body("out of order sample"));
    let (status, _, text) = h.post("application/x-protobuf", body.clone(), &[]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(text, "out of order sample");
    let (_, metrics) = h.get("/metrics").await;
    assert!(
        metrics.contains("cardguard_upstream_errors_total{class=\"5xx\",upstream=\"test\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("cardguard_write_requests_total{code=\"503\"} 1"));
}

#[tokio::test]
async fn upstream_down_is_503() {
    let h = start(Version::V1, ConfigSource::default()).await;
    // Point at a port nothing listens on: bind, learn the port, close.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut config = (*h.state.config()).clone();
    std::sync::Arc::make_mut(config.routing.as_mut().unwrap()).upstreams[0].url =
        format!("http://{dead}/api/v1/write").parse().unwrap();
    let app = App::start_on(config, ConfigSource::default(), listener().await).unwrap();
    let h2 = Harness {
        addr: app.local_addr(),
        _app: app,
        ..h
    };
    let (status, _, text) = h2
        .post(
            "application/x-protobuf",
            compress(&v1_request().encode_to_vec()),
            &[],
        )
        .await;
    let text = String::from_utf8_lossy(&text);
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(text.contains("cannot connect"), "{text}");
}

#[tokio::test]
async fn malformed_bodies_are_400_with_a_reason() {
    let h = start(Version::V1, ConfigSource::default()).await;
    for (body, want) in [
        (Bytes::from_static(b"\xff\x06\x00\x00sNaPpY"), "framed"),
        (
            Bytes::from_static(b"\xff\xff\xff\xff\x0f"),
            "exceeds the limit",
        ),
        (compress(b"\x0a\xff\xff\xff\xff\x0f"), "protobuf"),
    ] {
        let (status, _, text) = h.post("application/x-protobuf", body, &[]).await;
        let text = String::from_utf8_lossy(&text);
        assert_eq!(status, StatusCode::BAD_REQUEST, "{text}");
        assert!(text.contains(want), "{text:?} should mention {want}");
        assert_eq!(text.trim_end().lines().count(), 1);
    }
    assert!(h.upstream.received().is_empty());
}

#[tokio::test]
async fn operational_endpoints() {
    let h = start(Version::V1, ConfigSource::default()).await;
    assert_eq!(h.get("/-/healthy").await.0, StatusCode::OK);
    assert_eq!(h.get("/-/ready").await.0, StatusCode::OK);
    assert_eq!(h.get("/nope").await.0, StatusCode::NOT_FOUND);
    assert_eq!(
        h.get("/api/v1/write").await.0,
        StatusCode::METHOD_NOT_ALLOWED
    );
    let (status, metrics) = h.get("/metrics").await;
    assert_eq!(status, StatusCode::OK);
    assert!(metrics.contains("cardguard_config_last_reload_successful 1"));
}

#[tokio::test]
async fn reload_keeps_the_old_config_when_the_new_one_is_invalid() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cardguard.yml");
    std::fs::write(&file, "limits:\n  max_labels_per_series: 50\n").unwrap();
    let source = ConfigSource {
        file: Some(file.clone()),
        overrides: Overrides {
            upstream_url: Some("http://127.0.0.1:1/api/v1/write".into()),
            ..Default::default()
        },
        web: crate::ingest::web::WebSource {
            enable_lifecycle: true,
            ..Default::default()
        },
    };
    let h = start(Version::V1, source).await;
    assert_eq!(h.state.config().limits.wire.max_labels_per_series, 50);

    std::fs::write(&file, "limits:\n  max_labels_per_series: 0\n").unwrap();
    let req = Request::post(format!("http://{}/-/reload", h.addr))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = h.client.request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(h.state.config().limits.wire.max_labels_per_series, 50);
    assert!(h
        .get("/metrics")
        .await
        .1
        .contains("cardguard_config_last_reload_successful 0"));

    std::fs::write(&file, "limits:\n  max_labels_per_series: 60\n").unwrap();
    let req = Request::post(format!("http://{}/-/reload", h.addr))
        .body(Full::new(Bytes::new()))
        .unwrap();
    assert_eq!(
        h.client.request(req).await.unwrap().status(),
        StatusCode::OK
    );
    assert_eq!(h.state.config().limits.wire.max_labels_per_series, 60);
    assert!(h
        .get("/metrics")
        .await
        .1
        .contains("cardguard_config_last_reload_successful 1"));
    let _ = Config::default();
}

/// A harness whose config (besides the upstream) comes from YAML.
async fn start_yaml(yaml: &str) -> (Harness, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cardguard.yml");
    std::fs::write(&file, yaml).unwrap();
    let source = ConfigSource {
        file: Some(file),
        overrides: Overrides {
            upstream_url: Some("http://127.0.0.1:1/api/v1/write".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    (start(Version::V1, source).await, dir)
}

/// Every request the upstream received, decoded as v1.
fn forwarded(h: &Harness) -> Vec<v1::WriteRequest> {
    h.upstream
        .received()
        .iter()
        .map(|r| decoded(&r.body))
        .collect()
}

/// A snappy v1 body, decoded.
fn decoded(body: &Bytes) -> v1::WriteRequest {
    let mut raw = Vec::new();
    wire::snappy::decompress(body, 1 << 30, &mut raw).unwrap();
    v1::WriteRequest::decode(raw.as_slice()).unwrap()
}

#[tokio::test]
async fn schema_drop_keeps_the_rest_and_reject_refuses_the_request() {
    let (h, _dir) =
        start_yaml("schema:\n  required_labels: [job]\n  forbidden_label_names: code\n").await;
    // Series 1 carries the forbidden `code` label: dropped, the request still succeeds.
    let (status, _, _) = h
        .post(
            "application/x-protobuf",
            compress(&v1_request().encode_to_vec()),
            &[],
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let got = forwarded(&h);
    assert_eq!(got[0].timeseries.len(), 1);
    assert_eq!(got[0].timeseries[0].labels[0].value, "up");
    let (_, metrics) = h.get("/metrics").await;
    assert!(
        metrics.contains("cardguard_schema_dropped_series_total{rule=\"forbidden_label_names\"} 1"),
        "{metrics}"
    );

    let (h, _dir) = start_yaml(
        "schema:\n  forbidden_label_names: code\n  actions:\n    forbidden_label_names: reject\n",
    )
    .await;
    let (status, _, text) = h
        .post(
            "application/x-protobuf",
            compress(&v1_request().encode_to_vec()),
            &[],
        )
        .await;
    let text = String::from_utf8_lossy(&text);
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        text.contains("series 1: schema: label name \"code\" is forbidden"),
        "{text}"
    );
    assert!(
        h.upstream.received().is_empty(),
        "nothing of a rejected request is forwarded"
    );
}

#[tokio::test]
async fn redaction_happens_before_forwarding_and_admission() {
    let yaml = "schema:\n  redact:\n    - regex: \"[^@]+@[^@]+\"\nguard:\n  default_budget:\n    max_series: 10\n";
    let (h, _dir) = start_yaml(yaml).await;
    let series = ts(
        &[
            ("__name__", "logins_total"),
            ("service", "auth"),
            ("user", "bob@example.com"),
        ],
        1.0,
        1,
    );
    assert_eq!(h.post_v1(vec![series]).await, StatusCode::NO_CONTENT);
    let got = forwarded(&h);
    let user = &got[0].timeseries[0].labels[2];
    assert_eq!(user.name, "user");
    assert!(user.value.starts_with("redacted:"), "{user:?}");
    assert_eq!(got[0].timeseries[0].samples[0].value, 1.0);
    let (_, api) = h.get("/api/v1/cardinality").await;
    assert!(api.contains("\"service\": \"auth\""), "{api}");
    assert!(
        !api.contains("bob"),
        "the guard never saw the raw value: {api}"
    );
}

#[tokio::test]
async fn guard_drops_over_budget_and_answers_204() {
    let (h, _dir) =
        start_yaml("guard:\n  owner_labels: [job]\n  default_budget:\n    max_series: 1\n").await;
    let series = (0..3)
        .map(|i| {
            ts(
                &[("__name__", "m"), ("i", &i.to_string()), ("job", "api")],
                1.0,
                1,
            )
        })
        .collect();
    assert_eq!(h.post_v1(series).await, StatusCode::NO_CONTENT);
    assert_eq!(forwarded(&h)[0].timeseries.len(), 1);
    let (_, metrics) = h.get("/metrics").await;
    assert!(
        metrics.contains("cardguard_series_active{service=\"api\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("cardguard_samples_dropped_total{service=\"api\",reason=\"budget\"} 2"),
        "{metrics}"
    );
    assert!(metrics.contains("cardguard_policy_dropped_samples_total 2"));
}

#[tokio::test]
async fn relabel_budget_forwards_an_overflow_aggregate_to_its_tenant() {
    let yaml = "guard:\n  overflow_flush_interval: 1s\n  tenant_header: X-Scope-OrgID\n  default_budget:\n    max_series: 2\n    action: relabel\n    overflow_labels: [path]\n";
    let (h, _dir) = start_yaml(yaml).await;
    let series = (0..5)
        .map(|i| {
            let path = format!("/u/{i}");
            ts(
                &[
                    ("__name__", "http_requests_total"),
                    ("path", &path),
                    ("service", "web"),
                ],
                10.0,
                1_000,
            )
        })
        .collect();
    let req = v1::WriteRequest {
        timeseries: series,
        metadata: vec![],
    };
    let (status, _, _) = h
        .post(
            "application/x-protobuf",
            compress(&req.encode_to_vec()),
            &[("x-scope-orgid", "team-a")],
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(
        forwarded(&h)[0].timeseries.len(),
        2,
        "admitted series go straight through"
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let overflow = loop {
        let got = forwarded(&h);
        if got.len() >= 2 {
            break got[1].clone();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no overflow flush arrived"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(overflow.timeseries.len(), 1);
    let s = &overflow.timeseries[0];
    assert!(
        s.labels
            .iter()
            .any(|x| x.name == "path" && x.value == "__overflow__"),
        "{s:?}"
    );
    assert_eq!(s.samples[0].value, 30.0, "three collapsed counters summed");
    assert_eq!(
        h.upstream.received()[1].headers["x-scope-orgid"],
        "team-a",
        "the aggregate goes back to the tenant whose series it merges"
    );
    let (_, metrics) = h.get("/metrics").await;
    assert!(
        metrics.contains("cardguard_samples_overflowed_total{service=\"web\",tenant=\"team-a\",reason=\"budget\"} 3"),
        "{metrics}"
    );
}

mod routing;
mod tenants;
mod web;
