//! The classification of upstream answers, what reaches the sender of them, and the 413
//! split against the in-process sink.

use super::FailureClass::{self, *};
use super::*;

/// The `class` label values are part of the metrics' interface (dashboards, alerts).
#[test]
fn failure_class_labels_are_stable() {
    let labels: Vec<_> = [
        Timeout,
        Connect,
        Transport,
        TooManyRequests,
        ServerError,
        Config,
        Refused,
    ]
    .iter()
    .map(|c| (c.as_str(), c.is_retryable()))
    .collect();
    assert_eq!(
        labels,
        [
            ("timeout", true),
            ("connect", true),
            ("other", true),
            ("429", true),
            ("5xx", true),
            ("config", true),
            ("4xx", false)
        ]
    );
}

/// Only an error about the data is final; everything cardguard's own settings can cause
/// makes the sender keep the data and retry.
#[test]
fn upstream_statuses_are_classified_by_whose_fault_they_are() {
    let class = |code: u16| FailureClass::of_status(StatusCode::from_u16(code).unwrap());
    for code in [400, 409, 422] {
        assert_eq!(class(code), Refused, "{code}");
    }
    assert_eq!(class(429), TooManyRequests);
    assert_eq!(class(408), Timeout);
    for code in [
        401, 403, 404, 405, 407, 410, 411, 413, 414, 415, 421, 431, 451,
    ] {
        assert_eq!(class(code), Config, "{code}");
    }
    for code in [500, 502, 503, 504, 300, 302] {
        assert_eq!(class(code), ServerError, "{code}");
    }
}

fn upstream(url: &str, headers: &[(&'static str, &'static str)]) -> UpstreamConfig {
    UpstreamConfig {
        name: "mimir".into(),
        url: url.parse().unwrap(),
        version: Version::V1,
        timeout: Duration::from_secs(1),
        headers: headers
            .iter()
            .map(|(k, v)| {
                (
                    http::HeaderName::from_static(k),
                    HeaderValue::from_static(v),
                )
            })
            .collect(),
        tenant_header: None,
        client: None,
    }
}

#[test]
fn error_bodies_lose_the_configured_credentials() {
    let up = upstream(
        "http://writer:s3cretpassw0rd@127.0.0.1:1/api/v1/write",
        &[("authorization", "Bearer abcdef0123456789")],
    );
    let body = Bytes::from_static(
        b"token abcdef0123456789 expired (Bearer abcdef0123456789); user s3cretpassw0rd",
    );
    assert_eq!(
        redact(body, &up),
        "token <redacted> expired (Bearer <redacted>); user <redacted>"
    );
    let plain = Bytes::from_static(b"authentication required");
    assert_eq!(redact(plain.clone(), &up), plain);
}

/// The password and token of `basic_auth`/`authorization` (here read from a file, as in force
/// now) and a proxy's password are cleared from what the upstream echoes, like `headers`.
#[test]
fn error_bodies_lose_the_client_settings_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "tok3n-from-a-file\n").unwrap();
    let mut up = upstream("http://127.0.0.1:1/api/v1/write", &[]);
    let settings = ClientSettings {
        authorization: Some(Authorization {
            kind: "Bearer".into(),
            credentials: Some(SecretSource::File(token)),
        }),
        proxy: Some(ProxySettings {
            url: "http://127.0.0.1:3128".parse().unwrap(),
            auth: Some(("p".into(), Secret::new("proxy-passw0rd"))),
        }),
        ..Default::default()
    };
    up.client = Some(std::sync::Arc::new(
        UpstreamClient::open("mimir", settings).unwrap(),
    ));
    let body = Bytes::from_static(b"bad token tok3n-from-a-file; via proxy-passw0rd");
    assert_eq!(redact(body, &up), "bad token <redacted>; via <redacted>");
}

#[test]
fn the_config_error_message_names_the_upstream_and_status() {
    let e = ForwardError::Status {
        upstream: "mimir".into(),
        status: StatusCode::UNAUTHORIZED,
        retry_after: None,
        body: Bytes::from_static(b"no org id\n"),
    };
    assert_eq!(e.class(), Config);
    assert_eq!(
        e.config_error_message(),
        "upstream mimir answered 401 Unauthorized: it refuses cardguard's request, not the \
         data; check its credentials or tenant (upstream headers) in cardguard's \
         configuration. Answered 503 so that the data is sent again. The upstream said: \
         no org id"
    );
}

mod split {
    use super::*;
    use crate::sink::{Answer, Sink, SinkOptions};
    use crate::wire::{self, OwnedSeries, Parsed, Writer};

    const SERIES: usize = 16;

    struct Setup {
        sink: Sink,
        forwarder: Forwarder,
        metrics: ForwardMetrics,
        up: UpstreamConfig,
    }

    async fn setup(version: Version) -> Setup {
        let sink = Sink::start(SinkOptions::recording()).await.unwrap();
        let metrics = ForwardMetrics::register(&prometheus::Registry::new());
        let mut up = upstream(&sink.write_url(), &[]);
        up.version = version;
        up.tenant_header = Some(http::HeaderName::from_static("x-scope-orgid"));
        Setup {
            sink,
            forwarder: Forwarder::new(metrics.clone()),
            metrics,
            up,
        }
    }

    /// `SERIES` series `m{k="00".."15"}` of similar size.
    fn outgoing(version: Version) -> Outgoing {
        let mut w = Writer::new(version);
        for k in 0..SERIES {
            w.push_series(&OwnedSeries {
                histograms: Vec::new(),
                labels: vec![
                    ("__name__".into(), "m".into()),
                    ("k".into(), format!("{k:02}")),
                    ("pad".into(), "x".repeat(200 + k)),
                ],
                samples: vec![(k as f64, 1_700_000_000_000 + k as i64)],
            });
        }
        let mut body = Vec::new();
        wire::snappy::compress(w.finish().unwrap(), &mut body);
        Outgoing {
            body: body.into(),
            version,
            tenant: Some(HeaderValue::from_static("acme")),
        }
    }

    /// The `k` labels of every request the sink took, request by request.
    fn delivered(sink: &Sink, version: Version) -> Vec<Vec<String>> {
        sink.received()
            .iter()
            .map(|r| {
                assert_eq!(r.header("x-scope-orgid"), Some("acme"));
                assert_eq!(r.header("content-type"), Some(version.content_type()));
                let mut raw = Vec::new();
                wire::snappy::decompress(&r.body, 1 << 20, &mut raw).unwrap();
                let mut p = Parsed::new();
                p.parse(&raw, version, &wire::Limits::default()).unwrap();
                p.iter(&raw)
                    .map(|s| {
                        let (_, v) = s.labels().find(|(n, _)| *n == b"k").unwrap();
                        String::from_utf8(v.to_vec()).unwrap()
                    })
                    .collect()
            })
            .collect()
    }

    #[tokio::test]
    async fn a_413_delivers_the_body_in_pieces_in_order() {
        for version in [Version::V1, Version::V2] {
            let s = setup(version).await;
            let out = outgoing(version);
            // Room for about a quarter of the body.
            s.sink.max_body_bytes(Some(out.body.len() / 4));
            s.forwarder.send(&s.up, out).await.unwrap();
            let pieces = delivered(&s.sink, version);
            assert!(pieces.len() >= 4, "{version:?}: {pieces:?}");
            let all: Vec<String> = pieces.concat();
            let want: Vec<String> = (0..SERIES).map(|k| format!("{k:02}")).collect();
            assert_eq!(all, want, "{version:?}: every series once, in order");
            let splits = s.metrics.body_splits.with_label_values(&["mimir"]).get();
            assert!(splits >= 3, "{version:?}: {splits} splits");
            // Pieces already known too large are not sent: at most one 413 per size.
            assert!(
                s.sink.too_large() <= 4,
                "{version:?}: {}",
                s.sink.too_large()
            );
            // Not an error: the body got through.
            assert_eq!(
                s.metrics
                    .upstream_errors
                    .with_label_values(&["mimir", "config"])
                    .get(),
                0
            );
        }
    }

    #[tokio::test]
    async fn a_series_too_large_alone_is_a_configuration_error() {
        let s = setup(Version::V1).await;
        s.sink.max_body_bytes(Some(16));
        let err = s
            .forwarder
            .send(&s.up, outgoing(Version::V1))
            .await
            .unwrap_err();
        assert_eq!(err.class(), Config);
        assert!(err
            .config_error_message()
            .contains("answered 413 Payload Too Large"));
        assert_eq!(s.sink.requests(), 0);
        // One 413 per halving depth, not one per piece: 16 → 8 → 4 → 2 → 1.
        assert_eq!(s.sink.too_large(), 5);
        let m = &s.metrics;
        assert_eq!(
            m.config_errors.with_label_values(&["mimir", "413"]).get(),
            1
        );
        assert_eq!(
            m.upstream_errors
                .with_label_values(&["mimir", "config"])
                .get(),
            1
        );
        assert_eq!(
            m.upstream_requests
                .with_label_values(&["mimir", "413"])
                .get(),
            5
        );
    }

    /// Any other failure of a piece ends the send with it: the sender retries the whole body
    /// (the pieces already taken arrive again: identical samples, which backends accept).
    #[tokio::test]
    async fn a_piece_failing_otherwise_ends_the_send() {
        let s = setup(Version::V1).await;
        let out = outgoing(Version::V1);
        s.sink.max_body_bytes(Some(out.body.len() * 3 / 4));
        s.sink.answer(Answer::status(503));
        let err = s.forwarder.send(&s.up, out).await.unwrap_err();
        assert_eq!(err.class(), ServerError);
        // The first half was answered 503: the second was not tried.
        assert_eq!((s.sink.too_large(), s.sink.requests()), (1, 1));
        assert_eq!(delivered(&s.sink, Version::V1)[0].len(), SERIES / 2);
    }

    #[tokio::test]
    async fn a_configuration_error_is_counted_by_upstream_and_status() {
        let s = setup(Version::V1).await;
        s.sink
            .answer(Answer::status(401).with_body("invalid token"));
        for _ in 0..3 {
            let err = s
                .forwarder
                .send(&s.up, outgoing(Version::V1))
                .await
                .unwrap_err();
            assert_eq!(err.class(), Config);
        }
        let m = &s.metrics;
        assert_eq!(
            m.config_errors.with_label_values(&["mimir", "401"]).get(),
            3
        );
        assert_eq!(
            m.upstream_errors
                .with_label_values(&["mimir", "config"])
                .get(),
            3
        );
        assert_eq!(s.forwarder.refusing.count.load(Ordering::Relaxed), 1);
        s.sink.answer(Answer::status(204));
        s.forwarder
            .send(&s.up, outgoing(Version::V1))
            .await
            .unwrap();
        assert_eq!(s.forwarder.refusing.count.load(Ordering::Relaxed), 0);
        // 400 is about the data: final, and not a configuration error.
        s.sink.answer(Answer::status(400));
        let err = s
            .forwarder
            .send(&s.up, outgoing(Version::V1))
            .await
            .unwrap_err();
        assert_eq!(err.class(), Refused);
        assert_eq!(
            m.config_errors.with_label_values(&["mimir", "400"]).get(),
            0
        );
    }
}
