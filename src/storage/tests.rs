//! Snapshots: a restart keeps what was learned; a bad file starts empty, says why, and never
//! panics.

use std::sync::Arc;
use std::time::Duration;

use prometheus::Registry;
use proptest::prelude::*;
use prost::Message;

use super::*;
use crate::guard::image::{AggregateImage, GuardImage, OwnerImage, RingImage};
use crate::guard::sketch::{Sketch, DEMAND_PRECISION, OFFENDER_PRECISION};
use crate::guard::table::SeriesTable;
use crate::guard::{Batch, GuardConfig, Scratch};
use crate::rules::buffer::SeriesImage;
use crate::rules::group::{GroupImage, RuleImage};
use crate::rules::promql::Sample;
use crate::series::{Decisions, Verdict};
use crate::wire::types::v1;
use crate::wire::{testgen, Limits, Parsed, Version};

const T0: i64 = 1_700_000_000_000;

fn config(budget: u64) -> Config {
    Config {
        guard: Some(GuardConfig::with_default_budget(
            budget,
            vec!["service".into()],
        )),
        ..Config::default()
    }
}

fn parts(config: Config) -> Parts {
    Parts::standalone(config)
}

/// Admit series `from..from + n` of `service` at `now_ms`; the verdicts.
fn send(p: &Parts, service: &str, from: usize, n: usize, now_ms: i64) -> Vec<Verdict> {
    let ts: Vec<v1::TimeSeries> = (from..from + n)
        .map(|i| {
            testgen::series(
                &[
                    ("__name__", "requests_total"),
                    ("id", &i.to_string()),
                    ("service", service),
                ],
                &[(1.0, now_ms)],
            )
        })
        .collect();
    let buf = v1::WriteRequest {
        timeseries: ts,
        metadata: vec![],
    }
    .encode_to_vec();
    let mut parsed = Parsed::new();
    parsed.parse(&buf, Version::V1, &Limits::default()).unwrap();
    let mut decisions = Decisions::default();
    decisions.reset(parsed.len());
    let cfg = p.config.load();
    p.guard
        .admit(
            cfg.guard.as_ref().unwrap(),
            Batch {
                req: &parsed,
                buf: &buf,
                tenant: None,
                now_ms,
            },
            &mut decisions,
            &mut Scratch::default(),
        )
        .unwrap();
    (0..parsed.len()).map(|i| decisions.verdict(i)).collect()
}

fn kept(v: &[Verdict]) -> usize {
    v.iter().filter(|v| **v == Verdict::Keep).count()
}

fn round_trip(p: &Parts) -> Parts {
    let bytes = encode_file(&p.capture());
    let image = decode_file(&bytes).unwrap();
    let fresh = parts((**p.config.load()).clone());
    fresh.apply(image).unwrap();
    fresh
}

#[test]
fn the_admitted_series_keep_their_place_across_a_restart() {
    let before = parts(config(100));
    assert_eq!(kept(&send(&before, "api", 0, 100, T0)), 100);
    assert_eq!(kept(&send(&before, "api", 100, 10, T0)), 0);
    let after = round_trip(&before);
    assert_eq!(after.guard.global_active(), 100);
    // The exploding service's new series arrive first: refused; the admitted ones go on.
    assert_eq!(kept(&send(&after, "api", 1000, 50, T0 + 1000)), 0);
    assert_eq!(kept(&send(&after, "api", 0, 100, T0 + 1000)), 100);
    // The demand estimate came along: 110 distinct series were seen, not 0.
    let g = after.config.load();
    let report = after.guard.report(g.guard.as_ref().unwrap());
    let api = report.services.iter().find(|s| s.service == "api").unwrap();
    assert!(api.demand.unwrap() >= 150.0, "{:?}", api.demand);
}

#[test]
fn a_restored_state_is_the_state_that_was_saved() {
    let before = parts(config(1000));
    send(&before, "api", 0, 300, T0);
    send(&before, "web", 0, 20, T0 + 60_000);
    let once = before.capture();
    let after = round_trip(&before);
    // Sketches compare by estimate: their pending sparse entries are a hash set, written in
    // its iteration order.
    assert_eq!(comparable(&after.capture()), comparable(&once));
}

#[test]
fn a_changed_window_or_seed_is_incompatible_and_restores_nothing() {
    let before = parts(config(10));
    send(&before, "api", 0, 10, T0);
    let bytes = encode_file(&before.capture());
    for change in [
        (|g: &mut GuardConfig| g.window = Duration::from_secs(600)) as fn(&mut GuardConfig),
        |g: &mut GuardConfig| g.hash_seed = 7,
    ] {
        let mut c = config(10);
        change(c.guard.as_mut().unwrap());
        let fresh = parts(c);
        let e = fresh.apply(decode_file(&bytes).unwrap()).unwrap_err();
        assert_eq!(e.reason(), "incompatible", "{e}");
        assert_eq!(fresh.guard.global_active(), 0);
    }
}

#[test]
fn every_truncation_and_bit_flip_is_refused_without_a_panic() {
    let p = parts(config(50));
    send(&p, "api", 0, 60, T0);
    let bytes = encode_file(&p.capture());
    for len in 0..bytes.len() {
        let e = decode_file(&bytes[..len]).unwrap_err();
        assert!(matches!(e.reason(), "truncated" | "corrupt"), "{len}: {e}");
    }
    for i in 0..bytes.len() {
        let mut b = bytes.clone();
        b[i] ^= 1 << (i % 8);
        let e = decode_file(&b).unwrap_err();
        assert!(
            matches!(e.reason(), "truncated" | "corrupt" | "incompatible"),
            "{i}: {e}"
        );
    }
}

fn snapshotter(dir: &std::path::Path, p: Parts) -> (Arc<Snapshotter>, Registry) {
    let r = Registry::new();
    (Arc::new(Snapshotter::new(Some(dir), p, &r)), r)
}

fn failures(r: &Registry, reason: &str) -> u64 {
    r.gather()
        .iter()
        .find(|f| f.name() == "cardguard_snapshot_load_failures_total")
        .and_then(|f| {
            f.get_metric()
                .iter()
                .find(|m| m.get_label().iter().any(|l| l.value() == reason))
                .map(|m| m.get_counter().get_value() as u64)
        })
        .unwrap_or(0)
}

#[tokio::test]
async fn a_written_snapshot_is_restored_from_the_directory() {
    let dir = tempfile::tempdir().unwrap();
    let p = parts(config(100));
    send(&p, "api", 0, 40, T0);
    let (s, _) = snapshotter(dir.path(), p);
    let stats = s.write_now().await.unwrap();
    assert_eq!(stats.admitted_series, 40);
    assert!(dir.path().join(SNAPSHOT_FILE).exists());
    assert!(!dir.path().join("snapshot.tmp").exists());

    let fresh = parts(config(100));
    let (s, r) = snapshotter(dir.path(), fresh.clone());
    s.restore();
    assert_eq!(fresh.guard.global_active(), 40);
    assert_eq!(failures(&r, "corrupt"), 0);
}

#[test]
fn a_missing_file_starts_empty_and_is_counted() {
    let dir = tempfile::tempdir().unwrap();
    let (s, r) = snapshotter(dir.path(), parts(config(1)));
    s.restore();
    assert_eq!(failures(&r, "missing"), 1);
}

#[tokio::test]
async fn a_bad_file_is_moved_aside_counted_and_cardguard_starts_empty() {
    let dir = tempfile::tempdir().unwrap();
    let p = parts(config(100));
    send(&p, "api", 0, 40, T0);
    let (s, _) = snapshotter(dir.path(), p);
    s.write_now().await.unwrap();
    let file = dir.path().join(SNAPSHOT_FILE);
    let mut bytes = std::fs::read(&file).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x10;
    std::fs::write(&file, &bytes).unwrap();

    let fresh = parts(config(100));
    let (s, r) = snapshotter(dir.path(), fresh.clone());
    s.restore();
    assert_eq!(fresh.guard.global_active(), 0);
    assert_eq!(failures(&r, "corrupt"), 1);
    assert!(!file.exists());
    let aside: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(
        aside.iter().any(|n| n.starts_with("snapshot.cgs.bad-")),
        "{aside:?}"
    );
}

// --- the encoder/decoder pair over arbitrary images ---

fn table_strategy() -> impl Strategy<Value = SeriesTable> {
    proptest::collection::vec((any::<u64>(), any::<u8>()), 0..200).prop_map(|v| {
        let mut t = SeriesTable::new();
        for (id, tag) in v {
            t.insert(id, tag);
        }
        t
    })
}

fn sketch(ids: &[u64], precision: u8) -> Sketch {
    let mut s = Sketch::new(precision);
    for &id in ids {
        s.insert(id);
    }
    s
}

fn ring_strategy(precision: u8) -> impl Strategy<Value = RingImage> {
    proptest::collection::vec(
        proptest::option::of(proptest::collection::vec(any::<u64>(), 0..50)),
        6,
    )
    .prop_map(move |slices| RingImage {
        precision,
        slices: slices
            .into_iter()
            .map(|s| s.map(|ids| sketch(&ids, precision)))
            .collect(),
    })
}

fn owner_strategy() -> impl Strategy<Value = OwnerImage> {
    (
        proptest::option::of("[a-z]{0,8}"),
        proptest::option::of("[a-z]{0,8}"),
        any::<u64>(),
        any::<u64>(),
        proptest::collection::vec((any::<u64>(), table_strategy()), 0..4),
        proptest::collection::vec(("[a-z]{1,6}", table_strategy()), 0..2),
        ring_strategy(DEMAND_PRECISION),
        proptest::collection::vec(
            (
                proptest::collection::vec(any::<u8>(), 0..10),
                ring_strategy(OFFENDER_PRECISION),
            ),
            0..3,
        ),
    )
        .prop_map(
            |(tenant, owner, slice, last_seen, metrics, label_values, demand, named)| OwnerImage {
                tenant,
                owner,
                slice,
                last_seen,
                metrics,
                label_values,
                demand,
                metric_demand: named.clone(),
                label_demand: named,
            },
        )
}

fn labels_strategy() -> impl Strategy<Value = Vec<(String, String)>> {
    proptest::collection::vec(("[a-z_]{1,6}", ".{0,6}"), 0..4)
}

fn image_strategy() -> impl Strategy<Value = Image> {
    let aggregate = (
        any::<u64>(),
        proptest::option::of("[a-z]{1,4}"),
        labels_strategy(),
        0u8..5,
        proptest::collection::vec(
            (any::<u64>(), any::<f64>(), any::<i64>(), any::<i64>()),
            0..5,
        ),
        (any::<f64>(), any::<i64>(), any::<i64>(), any::<bool>()),
    )
        .prop_map(
            |(key, tenant, labels, kind, members, (base, timestamp, emitted, dirty))| {
                AggregateImage {
                    key,
                    tenant,
                    labels,
                    kind,
                    members,
                    base,
                    timestamp,
                    emitted,
                    dirty,
                }
            },
        );
    // Native histograms as the buffers hold them (float counts, spans and their buckets).
    let histogram = (
        any::<i64>(),
        (-4i32..=8, 0u8..4),
        (0.0f64..1.0, 0.0f64..1e3, 0.0f64..1e6, -1e6f64..1e6),
        proptest::collection::vec((-3i32..5, 1u32..4, 0.0f64..1e3), 0..3),
    )
        .prop_map(
            |(t, (schema, hint), (zero_threshold, zero_count, extra, sum), spans)| {
                use crate::rules::promql::{Histogram, HistogramSample, ResetHint, Span};
                // Valid as the wire reader checks them (the snapshot reader does too): spans
                // after the first never go back, the count holds every bucket.
                let spans: Vec<(i32, u32, f64)> = spans
                    .into_iter()
                    .enumerate()
                    .map(|(i, (o, l, c))| (if i == 0 { o } else { o.abs() }, l, c))
                    .collect();
                let positive: Vec<f64> = spans
                    .iter()
                    .flat_map(|&(_, length, c)| (0..length).map(move |i| c + f64::from(i)))
                    .collect();
                let count = zero_count + positive.iter().sum::<f64>() + extra;
                HistogramSample {
                    t,
                    h: Arc::new(Histogram {
                        hint: [
                            ResetHint::Unknown,
                            ResetHint::Reset,
                            ResetHint::NotReset,
                            ResetHint::Gauge,
                        ][usize::from(hint)],
                        schema,
                        zero_threshold,
                        zero_count,
                        count,
                        sum,
                        positive_spans: spans
                            .iter()
                            .map(|&(offset, length, _)| Span { offset, length })
                            .collect(),
                        positive,
                        ..Histogram::default()
                    }),
                }
            },
        );
    let series = (
        proptest::option::of("[a-z]{1,4}"),
        labels_strategy(),
        proptest::collection::vec((any::<i64>(), any::<f64>()), 0..6),
        proptest::collection::vec(histogram, 0..3),
        any::<i64>(),
    )
        .prop_map(
            |(tenant, labels, samples, histograms, retention_ms)| SeriesImage {
                tenant,
                labels,
                samples: samples.into_iter().map(|(t, v)| Sample { t, v }).collect(),
                histograms,
                retention_ms,
            },
        );
    let group = (
        ".{0,10}",
        proptest::option::of(any::<i64>()),
        proptest::collection::vec(
            (
                "[a-z:]{1,10}",
                ".{0,10}",
                labels_strategy(),
                proptest::collection::vec(labels_strategy(), 0..3),
            ),
            0..3,
        ),
    )
        .prop_map(|(key, last_eval_ms, rules)| GroupImage {
            key,
            last_eval_ms,
            rules: rules
                .into_iter()
                .map(|(record, expr, labels, previous)| RuleImage {
                    record,
                    expr,
                    labels,
                    previous,
                })
                .collect(),
        });
    (
        proptest::option::of((
            any::<u64>(),
            any::<u8>(),
            any::<u64>(),
            proptest::collection::vec(owner_strategy(), 0..3),
        )),
        any::<u64>(),
        proptest::collection::vec(aggregate, 0..3),
        proptest::collection::vec((any::<u64>(), any::<i64>(), any::<i64>()), 0..20),
        proptest::collection::vec(series, 0..3),
        proptest::collection::vec(group, 0..3),
    )
        .prop_map(
            |(guard, seed, overflow, downsample, rule_buffers, rule_groups)| {
                let mut i = Image {
                    guard: guard.map(|(slice_ms, slices, seed_check, owners)| GuardImage {
                        slice_ms,
                        slices,
                        seed_check,
                        owners,
                    }),
                    overflow: (seed, overflow),
                    downsample,
                    rule_buffers,
                    rule_groups,
                    rule_histograms: Vec::new(),
                };
                i.canonicalize();
                i
            },
        )
}

/// An image in comparable form: tables as sorted entries, sketches as their estimates.
fn comparable(i: &Image) -> String {
    let table = |t: &SeriesTable| t.iter_sorted().collect::<Vec<_>>();
    let ring = |r: &RingImage| {
        (
            r.precision,
            r.slices
                .iter()
                .map(|s| s.clone().map(|mut s| s.count().to_bits()))
                .collect::<Vec<_>>(),
        )
    };
    let guard = i.guard.as_ref().map(|g| {
        (
            g.slice_ms,
            g.slices,
            g.seed_check,
            g.owners
                .iter()
                .map(|o| {
                    format!(
                        "{:?}",
                        (
                            &o.tenant,
                            &o.owner,
                            o.slice,
                            o.last_seen,
                            o.metrics
                                .iter()
                                .map(|(k, t)| (k, table(t)))
                                .collect::<Vec<_>>(),
                            o.label_values
                                .iter()
                                .map(|(k, t)| (k, table(t)))
                                .collect::<Vec<_>>(),
                            ring(&o.demand),
                            o.metric_demand
                                .iter()
                                .chain(&o.label_demand)
                                .map(|(k, r)| (k, ring(r)))
                                .collect::<Vec<_>>(),
                        )
                    )
                })
                .collect::<Vec<_>>(),
        )
    });
    // Floats by their bits: NaN members must come back as the same NaN.
    let overflow: Vec<_> = i
        .overflow
        .1
        .iter()
        .map(|a| {
            format!(
                "{:?}",
                (
                    a.key,
                    &a.tenant,
                    &a.labels,
                    a.kind,
                    a.members
                        .iter()
                        .map(|m| (m.0, m.1.to_bits(), m.2, m.3))
                        .collect::<Vec<_>>(),
                    a.base.to_bits(),
                    a.timestamp,
                    a.emitted,
                    a.dirty
                )
            )
        })
        .collect();
    let buffers: Vec<_> = i
        .rule_buffers
        .iter()
        .map(|s| {
            format!(
                "{:?}",
                (
                    &s.tenant,
                    &s.labels,
                    s.retention_ms,
                    s.samples
                        .iter()
                        .map(|x| (x.t, x.v.to_bits()))
                        .collect::<Vec<_>>(),
                    &s.histograms
                )
            )
        })
        .collect();
    format!(
        "{guard:?}\n{}\n{overflow:?}\n{:?}\n{buffers:?}\n{:?}",
        i.overflow.0, i.downsample, i.rule_groups
    )
}

/// A buffered native histogram comes back from a snapshot; one the wire reader would refuse
/// (its spans name more buckets than it has) fails the load, as a corrupt section does.
#[test]
fn rule_histograms_come_back_and_bad_ones_are_refused() {
    use crate::rules::promql::{Histogram, HistogramSample, Span};
    let histogram = |buckets: Vec<f64>| HistogramSample {
        t: 1_000,
        h: Arc::new(Histogram {
            count: 10.0,
            positive_spans: vec![Span {
                offset: 0,
                length: 2,
            }],
            positive: buckets,
            ..Histogram::default()
        }),
    };
    let image = |buckets: Vec<f64>| Image {
        rule_buffers: vec![
            SeriesImage {
                tenant: None,
                labels: vec![("__name__".into(), "floats".into())],
                samples: vec![Sample { t: 1_000, v: 1.0 }],
                histograms: Vec::new(),
                retention_ms: 60_000,
            },
            SeriesImage {
                tenant: None,
                labels: vec![("__name__".into(), "h".into())],
                samples: Vec::new(),
                histograms: vec![histogram(buckets)],
                retention_ms: 60_000,
            },
        ],
        ..Image::default()
    };
    let good = image(vec![3.0, 4.0]);
    let back = decode_file(&encode_file(&good)).unwrap();
    assert_eq!(back.rule_buffers, good.rule_buffers);
    assert!(back.rule_histograms.is_empty());
    let bad = decode_file(&encode_file(&image(vec![3.0])));
    assert!(
        matches!(
            bad,
            Err(LoadError::Decode {
                section: "rule_histograms",
                ..
            })
        ),
        "{bad:?}"
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn encode_then_decode_gives_the_same_image(image in image_strategy()) {
        let back = decode_file(&encode_file(&image)).unwrap();
        prop_assert_eq!(comparable(&back), comparable(&image));
    }

    #[test]
    fn arbitrary_bytes_after_a_valid_header_never_panic(tail in proptest::collection::vec(any::<u8>(), 0..256)) {
        let mut bytes = encode_file(&Image::default());
        bytes.truncate(28);
        bytes.extend_from_slice(&tail);
        let _ = decode_file(&bytes);
    }
}

/// Seeds for the `snapshot` fuzz target (`fuzz/seeds/snapshot`): a whole file, and each
/// section alone behind its kind byte. Run with `--ignored` to write them again.
#[test]
#[ignore]
fn write_fuzz_seeds() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/snapshot");
    std::fs::create_dir_all(&dir).unwrap();
    let p = parts(config(20));
    send(&p, "api", 0, 30, T0);
    send(&p, "web", 0, 5, T0 + 600_000);
    let image = p.capture();
    std::fs::write(dir.join("file.cgs"), encode_file(&image)).unwrap();
    for (i, kind) in image::Kind::ALL.into_iter().enumerate() {
        let mut b = vec![i as u8];
        b.extend(image.encode_section(kind));
        std::fs::write(dir.join(format!("section-{}.bin", kind.name())), b).unwrap();
    }
}
