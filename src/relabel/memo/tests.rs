//! The memo gives the answers `process` gives, never remembers a changed series, stays within
//! its cap, and starts empty with every new rule set.

use prost::Message;

use super::super::{stage, RuleSet, Scratch, RelabelCounts};
use super::{Known, Memo, MAX_ENTRIES, SHARD_CAP};
use crate::config::Config;
use crate::series::{Decisions, OwnedLabels, Verdict};
use crate::wire::types::v1;
use crate::wire::{Limits, Parsed, Version};

fn compiled() -> RuleSet {
    Config::from_yaml(
        r#"
relabel_configs:
  - source_labels: [__name__]
    regex: "debug_.*"
    action: drop
  - source_labels: [instance]
    regex: hot
    target_label: tier
    replacement: gold
"#,
    )
    .unwrap()
    .relabel
}

fn request() -> Vec<u8> {
    let series = |labels: &[(&str, &str)]| v1::TimeSeries {
        labels: labels
            .iter()
            .map(|(n, v)| v1::Label {
                name: n.to_string(),
                value: v.to_string(),
            })
            .collect(),
        samples: vec![v1::Sample {
            value: 1.0,
            timestamp: 1,
        }],
        ..Default::default()
    };
    v1::WriteRequest {
        timeseries: vec![
            series(&[("__name__", "up"), ("instance", "a")]),
            series(&[("__name__", "debug_x"), ("instance", "a")]),
            series(&[("__name__", "up"), ("instance", "hot")]),
            series(&[("__name__", "up"), ("instance", "b")]),
        ],
        ..Default::default()
    }
    .encode_to_vec()
}

type Run = (RelabelCounts, Vec<Option<OwnedLabels>>, Vec<Verdict>);

fn run(rules: &RuleSet, buf: &[u8]) -> Run {
    let mut parsed = Parsed::new();
    parsed.parse(buf, Version::V1, &Limits::default()).unwrap();
    let mut decisions = Decisions::default();
    decisions.reset(parsed.len());
    let c = stage(rules, &parsed, buf, &mut decisions, &mut Scratch::default());
    let rewrites = (0..parsed.len())
        .map(|i| decisions.rewritten(i).cloned())
        .collect();
    let verdicts = (0..parsed.len()).map(|i| decisions.verdict(i)).collect();
    (c, rewrites, verdicts)
}

#[test]
fn memo_hits_answer_as_a_fresh_evaluation() {
    let buf = request();
    let rules = compiled();
    let first = run(&rules, &buf);
    assert_eq!(first.0.rewritten_series, 1);
    assert_eq!(first.0.dropped_series, 1);
    // Two unchanged series and one dropped remembered; the changed one is not.
    assert_eq!(rules.memo.len(), 3);
    let mut parsed = Parsed::new();
    parsed.parse(&buf, Version::V1, &Limits::default()).unwrap();
    let known: Vec<_> = (0..parsed.len())
        .map(|i| {
            let key = rules
                .memo
                .series_key(&parsed.series(&buf, i), &mut Vec::new());
            rules.memo.get(key)
        })
        .collect();
    let expect = [
        Some(Known::Unchanged),
        Some(Known::Dropped),
        None,
        Some(Known::Unchanged),
    ];
    assert_eq!(known, expect);
    // From the memo, again and again: the same answer as rules that have seen nothing.
    for _ in 0..3 {
        assert_eq!(run(&rules, &buf), first);
        assert_eq!(rules.memo.len(), 3);
    }
    assert_eq!(run(&compiled(), &buf), first);
}

#[test]
fn label_order_and_boundaries_are_part_of_the_key() {
    let m = Memo::default();
    let mut b = Vec::new();
    let k = |l: &[(&[u8], &[u8])], b: &mut Vec<u8>| m.key(l.iter().copied(), b);
    let ab = k(&[(b"a", b"1"), (b"b", b"2")], &mut b);
    assert_ne!(ab, k(&[(b"b", b"2"), (b"a", b"1")], &mut b));
    assert_ne!(ab, k(&[(b"a", b"1b"), (b"", b"2")], &mut b));
    assert_eq!(ab, k(&[(b"a", b"1"), (b"b", b"2")], &mut b));
}

#[test]
fn the_cap_holds_under_new_series_forever() {
    let m = Memo::default();
    // One shard filled past its cap is cleared, not grown.
    for i in 0..(SHARD_CAP as u64 + 10) {
        m.insert(i, Known::Unchanged);
        assert!(m.len() <= SHARD_CAP);
    }
    assert_eq!(m.len(), 10);
    // Every shard, twice over (SplitMix64 keys spread over the shards).
    let mut x = 0u64;
    for _ in 0..2 * MAX_ENTRIES {
        x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        m.insert(z ^ (z >> 31), Known::Dropped);
    }
    assert!(m.len() <= MAX_ENTRIES);
    assert!(m.len() > MAX_ENTRIES / 4);
}

#[test]
fn a_reloaded_or_cloned_rule_set_starts_empty_and_compares_equal() {
    let buf = request();
    let seen = compiled();
    run(&seen, &buf);
    assert!(!seen.memo.is_empty());
    let reloaded = compiled();
    assert!(reloaded.memo.is_empty());
    assert_eq!(seen, reloaded, "config equality ignores the memo");
    let cloned = seen.clone();
    assert!(cloned.memo.is_empty());
    assert_eq!(run(&cloned, &buf), run(&seen, &buf));
}

#[test]
fn canonical_and_other_encodings_get_the_same_outcomes() {
    // Prometheus's sorted labels are keyed by their wire bytes; the same label sets unsorted
    // take the copying key. Both must answer as the rules do.
    let canonical = request();
    let mut unsorted = v1::WriteRequest::decode(canonical.as_slice()).unwrap();
    for ts in &mut unsorted.timeseries {
        ts.labels.reverse();
    }
    let unsorted = unsorted.encode_to_vec();
    let rules = compiled();
    let mut parsed = Parsed::new();
    parsed
        .parse(&canonical, Version::V1, &Limits::default())
        .unwrap();
    assert!(parsed.series(&canonical, 0).canonical_labels().is_some());
    parsed
        .parse(&unsorted, Version::V1, &Limits::default())
        .unwrap();
    assert!(parsed.series(&unsorted, 0).canonical_labels().is_none());
    let first = run(&rules, &canonical);
    for _ in 0..2 {
        assert_eq!(run(&rules, &canonical), first);
        assert_eq!(run(&rules, &unsorted).0, first.0);
        assert_eq!(run(&compiled(), &unsorted).0, first.0);
    }
}
