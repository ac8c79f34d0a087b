//! The splitter: series land on exactly the upstreams their routes name, unchanged series keep
//! their bytes, per-route relabeling and downsampling stay on their route, retries decide the
//! same. Then a property test over random routes and series.

use bytes::Bytes;
use proptest::prelude::*;
use prost::Message;

use crate::config::Config;
use crate::pipeline::{self, Context};
use crate::route::*;
use crate::wire::types::v1;
use crate::wire::{self, Limits, Version};

use crate::wire::testgen::{body_v1 as body, sorted_series as series};

fn decode(b: &Bytes) -> v1::WriteRequest {
    let mut raw = Vec::new();
    wire::snappy::decompress(b, 1 << 30, &mut raw).unwrap();
    v1::WriteRequest::decode(raw.as_slice()).unwrap()
}

fn run(config: &Config, ds: &Downsampler, tenant: Option<&str>, b: &Bytes) -> Routed {
    let limits = Limits::default();
    let ctx = Context {
        relabel: &config.relabel,
        routing: Plan {
            routing: config.routing.as_deref().unwrap(),
            tenant,
            downsampler: ds,
        },
        ..Context::new(Version::V1, Version::V1, &limits, 0)
    };
    pipeline::prepare(b, &ctx).unwrap().routed
}

fn part(r: &Routed, upstream: usize) -> Option<&Part> {
    r.parts.iter().find(|p| p.upstream == upstream)
}

fn names(r: &Routed, upstream: usize) -> Vec<String> {
    part(r, upstream)
        .map(|p| {
            decode(&p.body)
                .timeseries
                .iter()
                .map(|t| {
                    t.labels
                        .iter()
                        .map(|l| format!("{}={}", l.name, l.value))
                        .collect::<Vec<_>>()
                        .join(",")
                })
                .collect()
        })
        .unwrap_or_default()
}

const TWO: &str = r#"
upstreams:
  - name: short
    url: http://127.0.0.1:1/w
  - name: long
    url: http://127.0.0.1:2/w
routes:
  - match: '{slo="true"}'
    upstreams: [long]
    continue: true
  - upstreams: [short]
"#;

#[test]
fn slo_series_go_to_both_the_rest_only_to_short() {
    let c = Config::from_yaml(TWO).unwrap();
    let ds = Downsampler::default();
    let b = body(vec![
        series(&[("__name__", "a"), ("slo", "true")], &[(1.0, 1000)]),
        series(&[("__name__", "b")], &[(2.0, 1000)]),
        series(&[("__name__", "c"), ("slo", "true")], &[(3.0, 1000)]),
    ]);
    let r = run(&c, &ds, None, &b);
    // short receives everything unchanged: the original body as it came.
    let short = part(&r, 0).unwrap();
    assert!(short.passthrough);
    assert_eq!(short.body, b);
    assert_eq!(short.forwarded.series, 3);
    let long = part(&r, 1).unwrap();
    assert!(!long.passthrough);
    assert_eq!(names(&r, 1), ["__name__=a,slo=true", "__name__=c,slo=true"]);
    // Raw bytes: the series in long's body are byte-for-byte those of the source.
    let src = decode(&b);
    let got = decode(&long.body);
    assert_eq!(
        got.timeseries[0].encode_to_vec(),
        src.timeseries[0].encode_to_vec()
    );
    assert_eq!(got.timeseries[1], src.timeseries[2]);
}

#[test]
fn first_match_wins_without_continue_and_upstreams_without_series_get_nothing() {
    let yaml = TWO.replace("    continue: true\n", "");
    let c = Config::from_yaml(&yaml).unwrap();
    let ds = Downsampler::default();
    let b = body(vec![series(
        &[("__name__", "a"), ("slo", "true")],
        &[(1.0, 1)],
    )]);
    let r = run(&c, &ds, None, &b);
    assert_eq!(r.parts.len(), 1);
    assert_eq!(r.parts[0].upstream, 1);
    assert!(r.parts[0].passthrough, "long gets every series unchanged");
}

#[test]
fn tenants_select_routes() {
    let yaml = r#"
upstreams:
  - name: a
    url: http://127.0.0.1:1/w
  - name: b
    url: http://127.0.0.1:2/w
routes:
  - tenants: [team-b]
    upstreams: [b]
  - upstreams: [a]
"#;
    let c = Config::from_yaml(yaml).unwrap();
    let ds = Downsampler::default();
    let b = body(vec![series(&[("__name__", "x")], &[(1.0, 1)])]);
    assert_eq!(run(&c, &ds, Some("team-b"), &b).parts[0].upstream, 1);
    assert_eq!(run(&c, &ds, Some("team-a"), &b).parts[0].upstream, 0);
    assert_eq!(run(&c, &ds, None, &b).parts[0].upstream, 0);
}

#[test]
fn route_relabeling_stays_on_its_route() {
    let yaml = r#"
relabel_configs:
  - source_labels: [env]
    target_label: stage
upstreams:
  - name: short
    url: http://127.0.0.1:1/w
  - name: long
    url: http://127.0.0.1:2/w
routes:
  - match: '{slo="true"}'
    upstreams: [long]
    continue: true
    relabel_configs:
      - regex: pod
        action: labeldrop
      - source_labels: [__name__]
        regex: drop_me
        action: drop
  - upstreams: [short]
"#;
    let c = Config::from_yaml(yaml).unwrap();
    let ds = Downsampler::default();
    let b = body(vec![
        series(
            &[
                ("__name__", "a"),
                ("slo", "true"),
                ("pod", "p1"),
                ("env", "prod"),
            ],
            &[(1.0, 1)],
        ),
        series(&[("__name__", "drop_me"), ("slo", "true")], &[(1.0, 1)]),
    ]);
    let r = run(&c, &ds, None, &b);
    assert_eq!(
        names(&r, 0),
        [
            "__name__=a,env=prod,pod=p1,slo=true,stage=prod",
            "__name__=drop_me,slo=true"
        ]
    );
    assert_eq!(names(&r, 1), ["__name__=a,env=prod,slo=true,stage=prod"]);
    assert_eq!(r.route_relabel_dropped, 1);
}

const DOWNSAMPLED: &str = r#"
upstreams:
  - name: short
    url: http://127.0.0.1:1/w
  - name: long
    url: http://127.0.0.1:2/w
routes:
  - match: '{slo="true"}'
    upstreams: [long]
    min_interval: 10s
    continue: true
  - upstreams: [short]
"#;

fn long_samples(r: &Routed) -> Vec<i64> {
    part(r, 1)
        .map(|p| {
            decode(&p.body)
                .timeseries
                .iter()
                .flat_map(|t| t.samples.iter().map(|s| s.timestamp))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn downsampling_is_per_route_and_deterministic_under_retries() {
    let c = Config::from_yaml(DOWNSAMPLED).unwrap();
    let ds = Downsampler::default();
    let slo = [("__name__", "a"), ("slo", "true")];
    // One TimeSeries per sample, as Prometheus sends them, across two buckets.
    let b1 = body(vec![
        series(&slo, &[(1.0, 1_000)]),
        series(&slo, &[(2.0, 2_000)]),
        series(&slo, &[(3.0, 11_000)]),
        series(&slo, &[(4.0, 12_000), (5.0, 21_000)]),
    ]);
    let r = run(&c, &ds, None, &b1);
    assert_eq!(long_samples(&r), [1_000, 11_000, 21_000]);
    assert!(
        part(&r, 0).unwrap().passthrough,
        "short keeps full resolution"
    );
    assert_eq!(r.downsampled, vec![(0, 2)]);
    // Not acknowledged: the retry decides exactly the same.
    let retry = run(&c, &ds, None, &b1);
    assert_eq!(long_samples(&retry), [1_000, 11_000, 21_000]);
    ds.commit(&retry.pending, 0);
    // The next request continues after the committed bucket.
    let b2 = body(vec![
        series(&slo, &[(6.0, 22_000)]),
        series(&slo, &[(7.0, 31_000)]),
    ]);
    let r2 = run(&c, &ds, None, &b2);
    assert_eq!(long_samples(&r2), [31_000]);
    // A series whose samples are all left out is not sent to long at all.
    let b3 = body(vec![series(&slo, &[(8.0, 23_000)])]);
    assert!(part(&run(&c, &ds, None, &b3), 1).is_none());
}

#[test]
fn downsampling_translates_versions() {
    let yaml = DOWNSAMPLED.replace(
        "url: http://127.0.0.1:2/w",
        "url: http://127.0.0.1:2/w\n    remote_write_version: \"2.0\"",
    );
    let c = Config::from_yaml(&yaml).unwrap();
    let ds = Downsampler::default();
    let slo = [("__name__", "a"), ("slo", "true")];
    let b = body(vec![series(
        &slo,
        &[(1.0, 1_000), (2.0, 2_000), (3.0, 11_000)],
    )]);
    let r = run(&c, &ds, None, &b);
    let p = part(&r, 1).unwrap();
    assert_eq!(p.version, Version::V2);
    let mut raw = Vec::new();
    wire::snappy::decompress(&p.body, 1 << 30, &mut raw).unwrap();
    let req = crate::wire::types::v2::Request::decode(raw.as_slice()).unwrap();
    let ts: Vec<i64> = req.timeseries[0]
        .samples
        .iter()
        .map(|s| s.timestamp)
        .collect();
    assert_eq!(ts, [1_000, 11_000]);
    assert_eq!(p.forwarded.samples, 2);
}

/// Random series over a small label space, routed by a fixed table; the reference decides
/// each series' upstreams with the plain semantics and compares bodies.
fn arb_series() -> impl Strategy<Value = Vec<(u8, u8, u8)>> {
    prop::collection::vec((0u8..4, 0u8..3, 0u8..3), 1..40)
}

proptest! {
    #[test]
    fn every_series_lands_exactly_on_its_routed_upstreams(spec in arb_series(), tenant in 0u8..3) {
        let yaml = r#"
upstreams:
  - name: u0
    url: http://127.0.0.1:1/w
  - name: u1
    url: http://127.0.0.1:2/w
  - name: u2
    url: http://127.0.0.1:3/w
routes:
  - match: '{team="t0"}'
    upstreams: [u1]
    continue: true
  - match: '{tier=~"gold|silver"}'
    upstreams: [u2, u1]
  - tenants: [x]
    upstreams: [u2]
  - upstreams: [u0]
"#;
        let c = Config::from_yaml(yaml).unwrap();
        let ds = Downsampler::default();
        let teams = ["t0", "t1", "t2"];
        let tiers = ["gold", "silver", "bronze"];
        let tenant = [None, Some("x"), Some("y")][tenant as usize];
        let ts: Vec<v1::TimeSeries> = spec
            .iter()
            .enumerate()
            .map(|(k, &(m, team, tier))| {
                series(
                    &[
                        ("__name__", ["m0", "m1", "m2", "m3"][m as usize]),
                        ("team", teams[team as usize]),
                        ("tier", tiers[tier as usize]),
                    ],
                    &[(k as f64, 1_000 + k as i64)],
                )
            })
            .collect();
        let b = body(ts.clone());
        let r = run(&c, &ds, tenant, &b);
        let mut expected: [Vec<v1::TimeSeries>; 3] = Default::default();
        for (s, &(_, team, tier)) in ts.iter().zip(&spec) {
            let mut to = [false; 3];
            let mut done = false;
            if team == 0 {
                to[1] = true;
            }
            if tier <= 1 {
                to[2] = true;
                to[1] = true;
                done = true;
            }
            if !done && tenant == Some("x") {
                to[2] = true;
                done = true;
            }
            if !done {
                to[0] = true;
            }
            for u in 0..3 {
                if to[u] {
                    expected[u].push(s.clone());
                }
            }
        }
        for (u, want) in expected.iter().enumerate() {
            let got = part(&r, u).map(|p| decode(&p.body).timeseries).unwrap_or_default();
            prop_assert_eq!(&got, want, "upstream u{}", u);
            if let Some(p) = part(&r, u) {
                prop_assert_eq!(p.passthrough, want.len() == ts.len());
                // Unchanged series are the source's bytes, re-framed only.
                let src = decode(&b);
                for g in &got {
                    prop_assert!(src.timeseries.iter().any(|s| s.encode_to_vec() == g.encode_to_vec()));
                }
            }
        }
    }
}

/// Labels and sample timestamps of one series.
type SeriesSamples = (Vec<(String, String)>, Vec<i64>);

/// v2 input to a v2 and a v1 upstream, downsampled and relabeled on the way: the raw v2 copy,
/// the v2 re-encode with the source's symbols, and the v2→v1 translation all keep exactly
/// the samples the route decided.
#[test]
fn v2_input_is_downsampled_for_v2_and_v1_upstreams() {
    let yaml = r#"
upstreams:
  - name: v2
    url: http://127.0.0.1:1/w
    remote_write_version: "2.0"
  - name: v1
    url: http://127.0.0.1:2/w
routes:
  - upstreams: [v2, v1]
    min_interval: 10s
    relabel_configs:
      - source_labels: [slo]
        regex: "true"
        target_label: tier
        replacement: gold
"#;
    let c = Config::from_yaml(yaml).unwrap();
    let ds = Downsampler::default();
    let v1req = v1::WriteRequest {
        timeseries: vec![
            series(
                &[("__name__", "a"), ("slo", "true")],
                &[(1.0, 1_000), (2.0, 2_000), (3.0, 12_000)],
            ),
            series(&[("__name__", "b")], &[(4.0, 1_000), (5.0, 3_000)]),
        ],
        metadata: vec![],
    };
    let v2req = crate::wire::testgen::v1_to_v2(&v1req);
    let mut raw = Vec::new();
    wire::snappy::compress(&v2req.encode_to_vec(), &mut raw);
    let b = Bytes::from(raw);
    let limits = Limits::default();
    let ctx = Context {
        relabel: &c.relabel,
        routing: Plan {
            routing: c.routing.as_deref().unwrap(),
            tenant: None,
            downsampler: &ds,
        },
        ..Context::new(Version::V2, Version::V1, &limits, 0)
    };
    let r = pipeline::prepare(&b, &ctx).unwrap().routed;
    // v1 upstream: translated, relabeled, downsampled.
    let v1out = decode(&part(&r, 1).unwrap().body);
    let got: Vec<SeriesSamples> = v1out
        .timeseries
        .iter()
        .map(|t| {
            (
                t.labels
                    .iter()
                    .map(|l| (l.name.clone(), l.value.clone()))
                    .collect(),
                t.samples.iter().map(|s| s.timestamp).collect(),
            )
        })
        .collect();
    let l = |p: &[(&str, &str)]| -> Vec<(String, String)> {
        p.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    };
    assert_eq!(
        got,
        vec![
            (
                l(&[("__name__", "a"), ("slo", "true"), ("tier", "gold")]),
                vec![1_000, 12_000]
            ),
            (l(&[("__name__", "b")]), vec![1_000]),
        ]
    );
    // v2 upstream: the same series and samples, symbols resolved.
    let p = part(&r, 0).unwrap();
    assert_eq!(p.version, Version::V2);
    let mut raw = Vec::new();
    wire::snappy::decompress(&p.body, 1 << 30, &mut raw).unwrap();
    let v2out = crate::wire::types::v2::Request::decode(raw.as_slice()).unwrap();
    let resolved: Vec<SeriesSamples> = v2out
        .timeseries
        .iter()
        .map(|t| {
            (
                t.labels_refs
                    .chunks(2)
                    .map(|c| {
                        (
                            v2out.symbols[c[0] as usize].clone(),
                            v2out.symbols[c[1] as usize].clone(),
                        )
                    })
                    .collect(),
                t.samples.iter().map(|s| s.timestamp).collect(),
            )
        })
        .collect();
    assert_eq!(resolved, got);
    assert_eq!(p.forwarded.samples, 3);
}
