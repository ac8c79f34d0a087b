//! cardguard's own series take the routes a scraped series with the same labels would take
//! (relabeling, downsampling, several upstreams in their own versions), reach each upstream
//! with its tenant header, and commit downsampling only once every upstream took them.

use std::sync::Arc;
use std::time::Duration;

use prost::Message;

use bytes::Bytes;

use crate::config::Config;
use crate::forward::Forwarder;
use crate::pipeline::{self, Context};
use crate::route::own::Scratch;
use crate::route::own::*;
use crate::route::{Downsampler, Part, Plan, Routed, Routing};
use crate::sink::{Answer, Sink, SinkOptions};
use crate::wire::types::v1;
use crate::wire::OwnedSeries;
use crate::wire::{self, Limits, Version, Writer};

/// Two upstreams (the long-term one in v2): `slo` series to both, downsampled and relabeled
/// on their way to `long`; the rest only to `short`.
const ROUTES: &str = r#"
tenant_header: X-Scope-OrgID
upstreams:
  - name: short
    url: http://SHORT/api/v1/write
  - name: long
    url: http://LONG/api/v1/write
    remote_write_version: "2.0"
routes:
  - match: '{slo="true"}'
    upstreams: [long]
    min_interval: 10s
    continue: true
    relabel_configs:
      - action: labeldrop
        regex: slo
  - upstreams: [short]
"#;

fn config(short: &str, long: &str) -> Config {
    Config::from_yaml(&ROUTES.replace("SHORT", short).replace("LONG", long)).unwrap()
}

fn own(name: &str, slo: bool, samples: &[(f64, i64)]) -> OwnedSeries {
    let mut labels = vec![("__name__".to_string(), name.to_string())];
    if slo {
        labels.push(("slo".into(), "true".into()));
    }
    OwnedSeries {
        histograms: Vec::new(),
        labels,
        samples: samples.to_vec(),
    }
}

fn batch() -> Vec<OwnedSeries> {
    vec![
        own("a", true, &[(1.0, 1_000), (2.0, 5_000), (3.0, 12_000)]),
        own("b", false, &[(4.0, 1_000)]),
        own("c", true, &[(5.0, 2_000)]),
    ]
}

/// The same series as a request body, for the splitter.
fn as_request(series: &[OwnedSeries]) -> Bytes {
    let mut w = Writer::new(Version::V1);
    w.reset();
    for s in series {
        w.push_series(s);
    }
    let mut out = Vec::new();
    wire::snappy::compress(w.finish().unwrap(), &mut out);
    Bytes::from(out)
}

/// One series as sent: its labels and `(value, timestamp)` samples.
type Sent = (Vec<(String, String)>, Vec<(f64, i64)>);

/// A part's series, whatever its version.
fn decoded(p: &Part) -> Vec<Sent> {
    let mut raw = Vec::new();
    wire::snappy::decompress(&p.body, 1 << 20, &mut raw).unwrap();
    let mut parsed = wire::Parsed::new();
    parsed.parse(&raw, p.version, &Limits::default()).unwrap();
    (0..parsed.len())
        .map(|i| {
            let s = parsed.series(&raw, i);
            let labels = s
                .labels()
                .map(|(n, v)| {
                    (
                        String::from_utf8(n.to_vec()).unwrap(),
                        String::from_utf8(v.to_vec()).unwrap(),
                    )
                })
                .collect();
            (
                labels,
                s.samples().map(|x| (x.value, x.timestamp)).collect(),
            )
        })
        .collect()
}

fn parts(r: &Routed) -> Vec<(usize, Version, Vec<Sent>)> {
    r.parts
        .iter()
        .map(|p| (p.upstream, p.version, decoded(p)))
        .collect()
}

#[test]
fn routes_like_the_splitter_does_for_the_same_series() {
    let c = config("127.0.0.1:1", "127.0.0.1:2");
    let routing = c.routing.as_deref().unwrap();
    let series = batch();

    let ds = Downsampler::default();
    let mine = route(routing, &ds, &series, None, &mut Scratch::default());

    let ds = Downsampler::default();
    let limits = Limits::default();
    let ctx = Context {
        routing: Plan {
            routing,
            tenant: None,
            downsampler: &ds,
        },
        ..Context::new(Version::V1, Version::V1, &limits, 0)
    };
    let theirs = pipeline::prepare(&as_request(&series), &ctx)
        .unwrap()
        .routed;

    assert_eq!(parts(&mine), parts(&theirs));
    assert_eq!(mine.downsampled, theirs.downsampled);
    assert_eq!(mine.forwarded(), theirs.forwarded());
    // long: v2, `slo` dropped by the route, a's sample at 5s downsampled away.
    let long = &parts(&mine)[1];
    assert_eq!(long.1, Version::V2);
    assert_eq!(
        long.2,
        vec![
            (
                vec![("__name__".into(), "a".into())],
                vec![(1.0, 1_000), (3.0, 12_000)]
            ),
            (vec![("__name__".into(), "c".into())], vec![(5.0, 2_000)]),
        ]
    );
    assert_eq!(mine.downsampled, vec![(0, 1)]);
}

#[test]
fn a_single_upstream_gets_every_series_in_its_version() {
    let mut c = Config::default();
    let up = crate::forward::UpstreamConfig {
        name: "default".into(),
        url: "http://127.0.0.1:1/api/v1/write".parse().unwrap(),
        version: Version::V2,
        timeout: Duration::from_secs(1),
        headers: Vec::new(),
        tenant_header: None,
        client: None,
    };
    c.routing = Some(Arc::new(Routing::single(up)));
    let series = batch();
    let r = route(
        c.routing.as_deref().unwrap(),
        &Downsampler::default(),
        &series,
        None,
        &mut Scratch::default(),
    );
    let got = parts(&r);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].1, Version::V2);
    let want: Vec<_> = series
        .iter()
        .map(|s| (s.labels.clone(), s.samples.clone()))
        .collect();
    assert_eq!(got[0].2, want);
}

fn forwarder() -> Forwarder {
    let telemetry = crate::telemetry::Telemetry::new();
    Forwarder::new(crate::forward::metrics::ForwardMetrics::register(
        telemetry.registry(),
    ))
}

#[tokio::test]
async fn sends_each_upstream_its_part_with_the_tenant_and_commits_only_when_all_took_it() {
    let short = Sink::start(SinkOptions::recording()).await.unwrap();
    let long = Sink::start(SinkOptions::recording()).await.unwrap();
    let c = config(&short.addr().to_string(), &long.addr().to_string());
    let routing = c.routing.clone().unwrap();
    let (f, ds, mut s) = (forwarder(), Downsampler::default(), Scratch::default());
    let series = batch();

    long.answer(Answer::status(503));
    let err = send(&f, &routing, &ds, &series, Some("team-a"), 0, &mut s)
        .await
        .unwrap_err();
    assert!(
        err.class() == crate::forward::FailureClass::ServerError,
        "{err}"
    );
    assert!(ds.is_empty(), "nothing committed while an upstream failed");

    long.answer(Answer::default());
    let d = send(&f, &routing, &ds, &series, Some("team-a"), 0, &mut s)
        .await
        .unwrap();
    assert_eq!(d.parts, 2);
    // short: a, b, c (5 samples); long: a, c after downsampling (3 samples).
    assert_eq!((d.forwarded.series, d.forwarded.samples), (5, 8));
    assert_eq!(ds.len(), 2, "the long route's decisions are committed");
    for sink in [&short, &long] {
        let got = sink.received();
        assert_eq!(got.len(), 2);
        assert_eq!(got[1].header("x-scope-orgid"), Some("team-a"));
    }
    let long_got = &long.received()[1];
    assert_eq!(
        long_got.header("content-type"),
        Some(Version::V2.content_type())
    );
    let short_got = v1::WriteRequest::decode(
        {
            let mut raw = Vec::new();
            wire::snappy::decompress(&short.received()[1].body, 1 << 20, &mut raw).unwrap();
            raw
        }
        .as_slice(),
    )
    .unwrap();
    assert_eq!(short_got.timeseries.len(), 3);
}
