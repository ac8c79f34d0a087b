//! The memo gives the answers `process` gives, never remembers a changed series, stays within
//! its cap, and starts empty with every new rule set.

use prost::Message;

use super::super::{stage, RelabelCounts, Rule, RuleSet, RuleSpec, Scratch};
use super::{Known, Memo, MAX_ENTRIES, MAX_SLOTS, MIN_SLOTS};
use crate::series::{Decisions, OwnedLabels, Verdict};
use crate::wire::testgen;
use crate::wire::types::v1;
use crate::wire::{Limits, Parsed, Version};

fn compiled() -> RuleSet {
    // The rules as a `relabel_configs:` list holds them.
    let specs: Vec<RuleSpec> = serde_saphyr::from_str(
        r#"
- source_labels: [__name__]
  regex: "debug_.*"
  action: drop
- source_labels: [instance]
  regex: hot
  target_label: tier
  replacement: gold
"#,
    )
    .unwrap();
    RuleSet::new(specs.iter().map(|s| Rule::compile(s).unwrap()).collect())
}

fn request() -> Vec<u8> {
    let series = |labels: &[(&str, &str)]| testgen::series(labels, &[(1.0, 1)]);
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
            rules.memo.table().get(key)
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
fn label_fields_hold_every_label_or_are_none() {
    // A label after a sample: the bytes before the sample would not name it.
    let mut body = vec![0x0a, 0x0e, 0x0a, 0x08];
    body.extend_from_slice(b"__name__");
    body.extend_from_slice(&[0x12, 0x02]);
    body.extend_from_slice(b"up");
    body.extend_from_slice(&[0x12, 0x00]); // an empty sample
    body.extend_from_slice(&[0x0a, 0x08, 0x0a, 0x03]);
    body.extend_from_slice(b"job");
    body.extend_from_slice(&[0x12, 0x01]);
    body.extend_from_slice(b"a");
    let mut req = vec![0x0a, body.len() as u8];
    req.extend_from_slice(&body);
    let mut parsed = Parsed::new();
    parsed.parse(&req, Version::V1, &Limits::default()).unwrap();
    let view = parsed.series(&req, 0);
    assert_eq!(view.label_count(), 2);
    assert_eq!(view.label_fields(), None);
    // An empty label message right before the sample still counts as before it.
    let body = [0x0a, 0x00, 0x12, 0x00];
    let mut req = vec![0x0a, body.len() as u8];
    req.extend_from_slice(&body);
    parsed.parse(&req, Version::V1, &Limits::default()).unwrap();
    assert_eq!(parsed.series(&req, 0).label_fields(), Some(&req[2..4]));
    // No sample: none (the span would hold the histograms, new every scrape).
    let body = [0x0a, 0x00];
    let mut req = vec![0x0a, body.len() as u8];
    req.extend_from_slice(&body);
    parsed.parse(&req, Version::V1, &Limits::default()).unwrap();
    assert_eq!(parsed.series(&req, 0).label_fields(), None);
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

/// SplitMix64: well-spread keys, as xxh3 gives.
fn keys() -> impl Iterator<Item = u64> {
    let mut x = 0u64;
    std::iter::repeat_with(move || {
        x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    })
}

#[test]
fn the_cap_holds_under_new_series_forever() {
    let m = Memo::default();
    assert_eq!(m.slots(), 0, "nothing allocated before the first insert");
    let mut table = m.table();
    m.insert(&mut table, 1, Known::Unchanged);
    assert_eq!(m.slots(), MIN_SLOTS);
    // Twice the largest table's worth of new series, one request's table at a time: it
    // grows to its cap and stays there, the newest series still remembered.
    let mut recent = Vec::new();
    for (n, k) in keys().take(2 * MAX_ENTRIES).enumerate() {
        if n % 2000 == 0 {
            table = m.table();
        }
        m.insert(&mut table, k, Known::Dropped);
        assert_eq!(table.get(k), Some(Known::Dropped));
        if n >= 2 * MAX_ENTRIES - 1000 {
            recent.push(k);
        }
    }
    assert_eq!(m.slots(), MAX_SLOTS);
    assert!(m.len() <= MAX_ENTRIES);
    assert!(m.len() > MAX_ENTRIES / 2);
    // A full window gives up its first slot, so a few may have gone; none reads otherwise.
    let table = m.table();
    let kept = recent
        .iter()
        .filter(|&&k| table.get(k) == Some(Known::Dropped))
        .count();
    assert!(kept > 990, "{kept}");
}

#[test]
fn growing_keeps_what_was_remembered() {
    let m = Memo::default();
    let mut table = m.table();
    let ks: Vec<u64> = keys().take(10_000).collect();
    for (i, &k) in ks.iter().enumerate() {
        let known = if i % 3 == 0 {
            Known::Dropped
        } else {
            Known::Unchanged
        };
        m.insert(&mut table, k, known);
    }
    assert!(m.slots() >= 16_384);
    let table = m.table();
    let mut kept = 0;
    for (i, &k) in ks.iter().enumerate() {
        let known = if i % 3 == 0 {
            Known::Dropped
        } else {
            Known::Unchanged
        };
        // A cache: a full probe window gives up a slot, rarely at half load.
        if let Some(got) = table.get(k) {
            assert_eq!(got, known);
            kept += 1;
        }
    }
    assert!(kept > 9_900, "{kept}");
    // A request still holding an old table keeps working; its inserts may be lost, never
    // misread.
    let old = Memo::default();
    let mut stale = old.table();
    let mut fresh = old.table();
    old.insert(&mut fresh, ks[0], Known::Dropped);
    old.insert(&mut stale, ks[1], Known::Unchanged);
    assert_eq!(old.table().get(ks[0]), Some(Known::Dropped));
    assert_eq!(old.table().get(ks[1]), Some(Known::Unchanged));
    assert_eq!(old.table().get(ks[2]), None);
}

#[test]
fn threads_share_one_memo() {
    let m = Memo::default();
    let ks: Vec<u64> = keys().take(40_000).collect();
    // Half the keys dropped, so a misread (one series taking another's outcome) would show.
    let known = |k: u64| {
        if k & 4 != 0 {
            Known::Dropped
        } else {
            Known::Unchanged
        }
    };
    let seen_at_once: usize = std::thread::scope(|s| {
        let threads: Vec<_> = ks
            .chunks(10_000)
            .map(|part| {
                let m = &m;
                s.spawn(move || {
                    let mut table = m.table();
                    let mut seen = 0;
                    for &k in part {
                        m.insert(&mut table, k, known(k));
                        // A cache: another thread's insert may take the slot this one just
                        // filled (a full probe window overwrites its home slot), so an entry
                        // can be gone at once. It is never another series' outcome.
                        if let Some(got) = table.get(k) {
                            assert_eq!(got, known(k));
                            seen += 1;
                        }
                    }
                    seen
                })
            })
            .collect();
        threads.into_iter().map(|t| t.join().unwrap()).sum()
    });
    assert!(seen_at_once > ks.len() * 9 / 10, "{seen_at_once}");
    // Inserts that raced a resize may be lost too; most are there, none misread.
    let table = m.table();
    let mut found = 0;
    for &k in &ks {
        if let Some(got) = table.get(k) {
            assert_eq!(got, known(k));
            found += 1;
        }
    }
    assert!(found > ks.len() / 2, "{found}");
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
    // Both are keyed on the bytes before their first sample, without a copy.
    assert!(parsed.series(&unsorted, 0).label_fields().is_some());
    let first = run(&rules, &canonical);
    for _ in 0..2 {
        assert_eq!(run(&rules, &canonical), first);
        assert_eq!(run(&rules, &unsorted).0, first.0);
        assert_eq!(run(&compiled(), &unsorted).0, first.0);
    }
}
