use super::*;
use crate::rules::buffer::{Buffer, BufferLimits};
use crate::rules::file;
use crate::rules::promql::Sample;

const LIMITS: BufferLimits = BufferLimits {
    max_series: 1000,
    max_samples_per_series: 1000,
    max_label_bytes: usize::MAX,
};

fn group(yaml: &str) -> RuleGroup {
    file::parse("test.yml", yaml)
        .unwrap_or_else(|e| panic!("{e:?}"))
        .remove(0)
}

fn put(b: &Buffer, labels: &[(&str, &str)], t: i64, v: f64) {
    let l: Vec<(&[u8], &[u8])> = labels
        .iter()
        .map(|(n, v)| (n.as_bytes(), v.as_bytes()))
        .collect();
    b.append(
        l.into_iter(),
        [Sample { t, v }].into_iter(),
        3_600_000,
        &LIMITS,
    );
}

fn rows(e: &Evaluated) -> Vec<(String, f64, i64)> {
    let mut v: Vec<_> = e
        .series
        .iter()
        .map(|s| {
            let labels: Vec<String> = s.labels.iter().map(|(n, v)| format!("{n}={v}")).collect();
            (labels.join(","), s.samples[0].0, s.samples[0].1)
        })
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

const GROUP: &str = r#"
groups:
  - name: g
    labels: {tier: agg, team: x}
    rules:
      - record: job:up:sum
        expr: sum by (job) (up)
        labels: {team: y, drop_me: ""}
"#;

#[test]
fn records_with_rule_and_group_labels() {
    let g = group(GROUP);
    let b = Buffer::new();
    put(
        &b,
        &[("__name__", "up"), ("job", "a"), ("i", "1")],
        1000,
        1.0,
    );
    put(
        &b,
        &[("__name__", "up"), ("job", "a"), ("i", "2")],
        1000,
        1.0,
    );
    put(
        &b,
        &[("__name__", "up"), ("job", "b"), ("i", "1")],
        1000,
        0.0,
    );
    let mut st = GroupState::default();
    let e = evaluate(&g, &b, 2000, &mut st);
    assert!(e.failures.is_empty(), "{:?}", e.failures);
    assert_eq!(
        rows(&e),
        vec![
            (
                "__name__=job:up:sum,job=a,team=y,tier=agg".into(),
                2.0,
                2000
            ),
            (
                "__name__=job:up:sum,job=b,team=y,tier=agg".into(),
                0.0,
                2000
            ),
        ]
    );
}

#[test]
fn vanished_series_get_one_stale_marker() {
    let g = group(GROUP);
    let b = Buffer::new();
    put(&b, &[("__name__", "up"), ("job", "a")], 1000, 1.0);
    put(&b, &[("__name__", "up"), ("job", "b")], 1000, 1.0);
    let mut st = GroupState::default();
    evaluate(&g, &b, 2000, &mut st);
    // Job b stops; a stale marker in the input ends it at once (no 5m lookback wait).
    put(&b, &[("__name__", "up"), ("job", "a")], 3000, 1.0);
    put(
        &b,
        &[("__name__", "up"), ("job", "b")],
        3000,
        f64::from_bits(STALE_NAN_BITS),
    );
    let e = evaluate(&g, &b, 4000, &mut st);
    assert_eq!(e.stale_markers, 1);
    let r = rows(&e);
    assert_eq!(r.len(), 2);
    assert!(r[1].0.contains("job=b") && r[1].1.to_bits() == STALE_NAN_BITS);
    // Only once.
    let e = evaluate(&g, &b, 5000, &mut st);
    assert_eq!((e.series.len(), e.stale_markers), (1, 0));
}

#[test]
fn limit_fails_the_rule_and_keeps_its_series() {
    let g = group(
        "groups:\n  - name: g\n    limit: 1\n    rules:\n      - record: r\n        expr: up\n",
    );
    let b = Buffer::new();
    put(&b, &[("__name__", "up"), ("job", "a")], 1000, 1.0);
    let mut st = GroupState::default();
    assert_eq!(evaluate(&g, &b, 2000, &mut st).series.len(), 1);
    put(&b, &[("__name__", "up"), ("job", "b")], 1000, 1.0);
    let e = evaluate(&g, &b, 2000, &mut st);
    assert_eq!(e.series.len(), 0);
    assert_eq!(e.failures.len(), 1);
    assert!(e.failures[0]
        .message
        .contains("exceeded limit of 1 with 2 series"));
}

#[test]
fn duplicate_output_labelsets_fail_the_rule() {
    // Dropping the only distinguishing label makes two outputs identical.
    let g = group(
        "groups:\n  - name: g\n    rules:\n      - record: r\n        expr: up\n        labels: {job: \"\"}\n",
    );
    let b = Buffer::new();
    put(&b, &[("__name__", "up"), ("job", "a")], 1000, 1.0);
    put(&b, &[("__name__", "up"), ("job", "b")], 1000, 1.0);
    let e = evaluate(&g, &b, 2000, &mut GroupState::default());
    assert_eq!(e.failures.len(), 1);
    assert!(e.failures[0].message.contains("same labelset"));
}

#[test]
fn removed_rules_are_retired_with_stale_markers() {
    let g = group(GROUP);
    let b = Buffer::new();
    put(&b, &[("__name__", "up"), ("job", "a")], 1000, 1.0);
    let mut st = GroupState::default();
    evaluate(&g, &b, 2000, &mut st);
    let other =
        group("groups:\n  - name: g\n    rules:\n      - record: other\n        expr: up\n");
    let mut out = Vec::new();
    st.adopt(&other, Some(2000), &mut out);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].samples[0].0.to_bits(), STALE_NAN_BITS);
}

#[test]
fn ticks_align_to_the_interval() {
    assert_eq!(aligned_tick(12_345, 5000), 10_000);
    assert_eq!(aligned_tick(10_000, 5000), 10_000);
}

#[test]
fn a_rule_reads_what_the_rules_before_it_recorded() {
    let g = group(
        "groups:\n  - name: g\n    rules:\n      - record: job:up:sum\n        expr: sum by (job) (up)\n      - record: up:total\n        expr: sum(job:up:sum)\n",
    );
    let b = Buffer::new();
    put(&b, &[("__name__", "up"), ("job", "a")], 1000, 1.0);
    put(&b, &[("__name__", "up"), ("job", "b")], 1000, 2.0);
    let mut write = |series: &[OwnedSeries]| {
        for s in series {
            let l: Vec<(&str, &str)> = s
                .labels
                .iter()
                .map(|(n, v)| (n.as_str(), v.as_str()))
                .collect();
            put(&b, &l, s.samples[0].1, s.samples[0].0);
        }
    };
    let e = evaluate_with(&g, &b, 2000, &mut GroupState::default(), &mut write);
    assert!(e.failures.is_empty(), "{:?}", e.failures);
    assert!(
        rows(&e).contains(&("__name__=up:total".to_string(), 3.0, 2000)),
        "{:?}",
        rows(&e)
    );
}

/// A histogram rule's result leaves as a native histogram, and a rule after it in the group
/// reads it back from the buffers.
#[test]
fn histogram_results_are_recorded_as_native_histograms_and_feed_later_rules() {
    use crate::rules::promql::{Histogram, HistogramSample, Span};
    use crate::rules::tap::{decode_histogram, Decoded};
    let g = group(
        r#"
groups:
  - name: g
    rules:
      - record: job:latency:sum
        expr: sum by (job) (latency)
      - record: job:latency:count
        expr: histogram_count(job:latency:sum)
"#,
    );
    let b = Buffer::new();
    let hist = |n: f64| Histogram {
        count: n,
        sum: 2.0 * n,
        positive_spans: vec![Span {
            offset: 0,
            length: 2,
        }],
        positive: vec![n / 2.0, n / 2.0],
        ..Histogram::default()
    };
    for (i, n) in [(1, 4.0), (2, 6.0)] {
        let labels = [
            ("__name__", "latency"),
            ("job", "a"),
            ("i", if i == 1 { "1" } else { "2" }),
        ];
        let l: Vec<(&[u8], &[u8])> = labels
            .iter()
            .map(|(n, v)| (n.as_bytes(), v.as_bytes()))
            .collect();
        b.append_all(
            None,
            None,
            l.into_iter(),
            std::iter::empty(),
            [HistogramSample {
                t: 1_000,
                h: std::sync::Arc::new(hist(n)),
            }]
            .into_iter(),
            3_600_000,
            &LIMITS,
        );
    }
    let mut state = GroupState::default();
    let mut fed = Vec::new();
    let e = evaluate_with(&g, &b, 10_000, &mut state, &mut |written| {
        for s in written {
            for raw in &s.histograms {
                if let Some(Decoded::Histogram(h)) = decode_histogram(raw) {
                    let l: Vec<(&[u8], &[u8])> = s
                        .labels
                        .iter()
                        .map(|(n, v)| (n.as_bytes(), v.as_bytes()))
                        .collect();
                    b.append_all(
                        None,
                        None,
                        l.into_iter(),
                        std::iter::empty(),
                        [h.clone()].into_iter(),
                        3_600_000,
                        &LIMITS,
                    );
                    fed.push(h);
                }
            }
        }
    });
    assert!(e.failures.is_empty(), "{:?}", e.failures);
    assert_eq!(fed.len(), 1);
    assert_eq!(fed[0].t, 10_000);
    assert_eq!(fed[0].h.count, 10.0);
    assert_eq!(fed[0].h.positive, vec![5.0, 5.0]);
    let count = e
        .series
        .iter()
        .find(|s| s.labels.iter().any(|(_, v)| v == "job:latency:count"))
        .expect("the second rule read the first one's histogram");
    assert_eq!(count.samples, vec![(10.0, 10_000)]);
}
