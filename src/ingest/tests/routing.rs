//! The server with `upstreams:`/`routes:` against two recording upstreams: split bodies,
//! tenant passed on, 2xx only when every upstream acknowledged, 503/429 otherwise, and a
//! retry after a failure resending the same downsampled samples.

use super::*;

struct Routed {
    h: Harness,
    long: Sink,
}

async fn start_routed() -> Routed {
    let short = Sink::start(SinkOptions::recording()).await.unwrap();
    let long = Sink::start(SinkOptions::recording()).await.unwrap();
    let (short_addr, long_addr) = (short.addr(), long.addr());
    let yaml = format!(
        r#"
upstreams:
  - name: short
    url: http://{short_addr}/api/v1/write
    remote_timeout: 2s
  - name: long
    url: http://{long_addr}/api/v1/write
    remote_timeout: 2s
    headers:
      X-Fixed: "1"
routes:
  - match: '{{slo="true"}}'
    upstreams: [long]
    min_interval: 10s
    continue: true
  - upstreams: [short]
"#
    );
    let config = Config::from_yaml(&yaml).unwrap();
    let app = App::start_on(config, ConfigSource::default(), listener().await).unwrap();
    Routed {
        h: Harness {
            addr: app.local_addr(),
            upstream: short,
            state: app.state().clone(),
            client: Client::builder(TokioExecutor::new()).build_http(),
            _app: app,
        },
        long,
    }
}

fn request() -> Bytes {
    let req = v1::WriteRequest {
        timeseries: vec![
            ts(&[("__name__", "slo_ok"), ("slo", "true")], 1.0, 1_000),
            ts(&[("__name__", "slo_ok"), ("slo", "true")], 2.0, 2_000),
            ts(&[("__name__", "other")], 3.0, 1_000),
        ],
        metadata: vec![],
    };
    compress(&req.encode_to_vec())
}

#[tokio::test]
async fn splits_by_route_and_passes_the_tenant() {
    let r = start_routed().await;
    let (status, _, _) =
        r.h.post(
            "application/x-protobuf",
            request(),
            &[("X-Scope-OrgID", "team-a")],
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let short = r.h.upstream.received();
    let long = r.long.received();
    assert_eq!(short.len(), 1);
    assert_eq!(long.len(), 1);
    // short: everything, the original body; long: the SLO series at 10s resolution.
    assert_eq!(short[0].body, request());
    assert_eq!(decoded(&long[0].body).timeseries.len(), 1);
    assert_eq!(
        decoded(&long[0].body).timeseries[0].samples[0].timestamp,
        1_000
    );
    assert_eq!(short[0].headers.get("x-scope-orgid").unwrap(), "team-a");
    assert_eq!(long[0].headers.get("x-scope-orgid").unwrap(), "team-a");
    assert_eq!(long[0].headers.get("x-fixed").unwrap(), "1");
    assert!(short[0].headers.get("x-fixed").is_none());
    let (_, metrics) = r.h.get("/metrics").await;
    assert!(
        metrics.contains("cardguard_downsampled_samples_total{route=\"route0\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn one_failing_upstream_fails_the_request_and_the_retry_resends_the_same() {
    let r = start_routed().await;
    r.long.answer(Answer::status(503).with_body("down"));
    let (status, _, _) = r.h.post("application/x-protobuf", request(), &[]).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    // short took its part; the retry sends it again (an identical duplicate).
    assert_eq!(r.h.upstream.received().len(), 1);
    r.long.answer(Answer::default());
    let (status, _, _) = r.h.post("application/x-protobuf", request(), &[]).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let long = r.long.received();
    assert_eq!(long.len(), 2);
    // Same decision on the retry: the sample kept the first time is the one sent again.
    assert_eq!(long[0].body, long[1].body);
    // Acknowledged now: a further resend of the same data keeps the same kept sample only.
    let (status, _, _) = r.h.post("application/x-protobuf", request(), &[]).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let long = r.long.received();
    assert_eq!(long[2].body, long[1].body);
}

#[tokio::test]
async fn all_failures_429_answer_429_with_retry_after() {
    let r = start_routed().await;
    r.long.answer(
        Answer::status(429)
            .with_header("retry-after", "7")
            .with_body("slow down"),
    );
    let (status, headers, _) = r.h.post("application/x-protobuf", request(), &[]).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(headers.get("retry-after").unwrap(), "7");
    // A 429 and a 5xx: retry everything.
    r.h.upstream.answer(Answer::status(500).with_body("boom"));
    let (status, _, _) = r.h.post("application/x-protobuf", request(), &[]).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn own_series_are_routed_like_a_senders() {
    use crate::wire::OwnedSeries;
    let r = start_routed().await;
    let config = r.h.state.config();
    let routing = config.routing.clone().unwrap();
    let series = |name: &str, slo: bool, t: i64| OwnedSeries {
        histograms: Vec::new(),
        labels: std::iter::once(("__name__".to_string(), name.to_string()))
            .chain(slo.then(|| ("slo".to_string(), "true".to_string())))
            .collect(),
        samples: vec![(0.5, t)],
    };
    let own = [
        series("service:slo_ok:ratio", true, 1_000),
        series("service:requests:rate5m", false, 1_000),
    ];
    let sent = crate::route::own::send(
        &r.h.state.forwarder,
        &routing,
        &r.h.state.downsampler,
        &own,
        None,
        1_000,
        &mut Default::default(),
    )
    .await
    .unwrap();
    assert_eq!(sent.parts, 2);
    let names = |u: &Sink| -> Vec<String> {
        u.received()
            .iter()
            .flat_map(|r| decoded(&r.body).timeseries)
            .map(|ts| ts.labels[0].value.clone())
            .collect()
    };
    assert_eq!(
        names(&r.h.upstream),
        ["service:slo_ok:ratio", "service:requests:rate5m"]
    );
    assert_eq!(names(&r.long), ["service:slo_ok:ratio"]);
}

#[tokio::test]
async fn a_final_4xx_commits_what_the_other_upstreams_took() {
    let r = start_routed().await;
    r.h.upstream.answer(Answer::status(400).with_body("bad"));
    let (status, _, body) = r.h.post("application/x-protobuf", request(), &[]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(&body[..], b"bad");
    // Prometheus drops that batch for good; long kept the 1 s sample, so a later sample in
    // the same 10 s interval is not sent to long again.
    r.h.upstream.answer(Answer::default());
    let later = v1::WriteRequest {
        timeseries: vec![ts(&[("__name__", "slo_ok"), ("slo", "true")], 3.0, 5_000)],
        metadata: vec![],
    };
    let (status, _, _) =
        r.h.post(
            "application/x-protobuf",
            compress(&later.encode_to_vec()),
            &[],
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(r.long.received().len(), 1);
}

fn names(u: &Sink) -> Vec<String> {
    u.received()
        .iter()
        .flat_map(|r| decoded(&r.body).timeseries)
        .map(|ts| ts.labels[0].value.clone())
        .collect()
}

/// Overflow aggregates go through the routes like any series; a flush that one upstream
/// refuses with a 5xx is sent again at the next flush, to every upstream its route names.
#[tokio::test]
async fn overflow_aggregates_are_routed_and_requeued_on_failure() {
    use crate::guard::{GaugeFunction, GuardConfig};
    let r = start_routed().await;
    let mut config = (*r.h.state.config()).clone();
    config.guard = Some(GuardConfig::with_default_budget(10, vec!["service".into()]));
    let labels: crate::series::OwnedLabels = [("__name__", "slo_ok"), ("slo", "true")]
        .iter()
        .map(|(n, v)| (n.as_bytes().to_vec(), v.as_bytes().to_vec()))
        .collect();
    let now = crate::ingest::state::unix_now_ms();
    r.h.state.guard.overflow.absorb(
        0,
        None,
        &labels,
        1,
        GaugeFunction::Sum,
        [(1.0, now)].into_iter(),
        now,
    );
    let mut scratch = crate::route::own::Scratch::default();

    r.long.answer(Answer::status(503));
    super::state::flush_overflow(&r.h.state, &config, &mut scratch).await;
    assert_eq!(r.long.received().len(), 1);
    assert_eq!(r.h.state.metrics.forward.forwarded.samples(), 0);

    r.long.answer(Answer::default());
    super::state::flush_overflow(&r.h.state, &config, &mut scratch).await;
    assert_eq!(names(&r.h.upstream), ["slo_ok", "slo_ok"]);
    assert_eq!(names(&r.long), ["slo_ok", "slo_ok"]);
    assert_eq!(r.long.received()[1].header("x-fixed"), Some("1"));
    // Both upstreams took it: one series each.
    assert_eq!(r.h.state.metrics.forward.forwarded.samples(), 2);

    // Delivered and unchanged since: nothing more to send.
    super::state::flush_overflow(&r.h.state, &config, &mut scratch).await;
    assert_eq!(r.h.upstream.received().len(), 2);
}
