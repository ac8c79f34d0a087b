//! The stages together: each one's drops are added to the request's total, none replaces
//! another's.

mod lazy;
mod own_series;
mod routing;

use bytes::Bytes;

use super::*;
use crate::config::Config;
use crate::wire::testgen;

const NOW: i64 = 1_700_000_000_000;

fn body(series: &[&[(&str, &str)]]) -> Bytes {
    testgen::body_v1(
        series
            .iter()
            .map(|labels| testgen::sorted_series(labels, &[(1.0, NOW)]))
            .collect(),
    )
}

#[test]
fn drops_of_relabel_schema_and_guard_add_up() {
    let config = Config::from_yaml(
        "relabel_configs:\n  - source_labels: [__name__]\n    regex: \"debug_.*\"\n    action: drop\nschema:\n  forbidden_label_names: user_id\n",
    )
    .unwrap();
    let b = body(&[
        &[("__name__", "up"), ("service", "a")],
        &[("__name__", "debug_x"), ("service", "a")],
        &[("__name__", "up"), ("service", "a"), ("user_id", "1")],
        &[("__name__", "other"), ("service", "a")],
    ]);
    let limits = Limits::default();
    let guard = Guard::new();
    let budget_of_one = GuardConfig::with_default_budget(1, vec!["service".into()]);
    let staged = Context {
        relabel: &config.relabel,
        schema: config.schema.as_ref(),
        ..Context::new(Version::V1, Version::V1, &limits, NOW)
    };

    let p = prepare(&b, &staged).unwrap();
    assert_eq!(p.relabel.dropped_series, 1);
    assert_eq!(p.schema_dropped.iter().sum::<u64>(), 1);
    let two = DropCounts {
        dropped_series: 2,
        dropped_samples: 2,
    };
    assert_eq!(p.dropped, two);
    assert_eq!(p.forwarded.series, 2);

    // The guard admits `up` (budget 1) and drops `other`: its drop comes on top.
    let guarded = Context {
        guard: Some((&guard, &budget_of_one)),
        ..staged
    };
    let p = prepare(&b, &guarded).unwrap();
    let three = DropCounts {
        dropped_series: 3,
        dropped_samples: 3,
    };
    assert_eq!(p.dropped, three);
    assert_eq!((p.forwarded.series, p.passthrough), (1, false));
}

/// The relabel memo vouches only for label bytes it has seen pass validation and that are
/// ASCII; every other series is validated in full every time.
#[test]
fn the_relabel_memo_vouches_only_for_ascii_labels_it_has_seen() {
    let config = Config::from_yaml(
        "relabel_configs:\n  - source_labels: [__name__]\n    regex: \"debug_.*\"\n    action: drop\n",
    )
    .unwrap();
    let limits = Limits::default();
    let ctx = Context {
        relabel: &config.relabel,
        ..Context::new(Version::V1, Version::V1, &limits, NOW)
    };
    let good = body(&[
        &[("__name__", "up"), ("service", "a")],
        &[("__name__", "up"), ("service", "é")],
    ]);
    let looked_up = |b: &Bytes| {
        let mut decoded = Vec::new();
        crate::wire::snappy::decompress(b, usize::MAX, &mut decoded).unwrap();
        let mut parsed = Parsed::new();
        parsed.parse(&decoded, Version::V1, &limits).unwrap();
        let mut scratch = crate::relabel::Scratch::default();
        crate::relabel::lookup(&config.relabel, &parsed, &decoded, &mut scratch);
        (0..parsed.len())
            .map(|i| crate::relabel::vouched(&scratch, i))
            .collect::<Vec<_>>()
    };
    assert_eq!(looked_up(&good), [false, false], "nothing seen yet");
    for _ in 0..2 {
        assert_eq!(prepare(&good, &ctx).unwrap().forwarded.series, 2);
    }
    assert_eq!(looked_up(&good), [true, false], "é is not ASCII");

    // The same series with its value's UTF-8 broken (é = c3 a9 → c3 28): not the bytes the
    // memo knows, refused as before.
    let mut decoded = Vec::new();
    crate::wire::snappy::decompress(&good, usize::MAX, &mut decoded).unwrap();
    let at = decoded.windows(2).position(|w| w == [0xc3, 0xa9]).unwrap();
    decoded[at + 1] = 0x28;
    let mut bad = Vec::new();
    crate::wire::snappy::compress(&decoded, &mut bad);
    let bad = Bytes::from(bad);
    for _ in 0..2 {
        assert!(matches!(
            prepare(&bad, &ctx),
            Err(PipelineError::Wire(WireError::InvalidUtf8 {
                series: 1,
                ..
            }))
        ));
    }
    assert_eq!(looked_up(&bad), [true, false]);
}

/// `release_idle` counts sweeps for every thread: the tests that call it take turns.
static SWEEPS: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// A thread's buffers go at the second sweep without a request (the first only marks it
/// idle), and a request in between keeps them.
#[test]
fn an_idle_threads_scratch_is_released_at_the_second_sweep() {
    let _turn = SWEEPS.lock().unwrap_or_else(|e| e.into_inner());
    // A thread of its own, so that its scratch is not another test's.
    std::thread::spawn(|| {
        let limits = Limits::default();
        let guard = Guard::new();
        let budget = GuardConfig::with_default_budget(10, vec!["service".into()]);
        let ctx = Context {
            guard: Some((&guard, &budget)),
            ..Context::new(Version::V1, Version::V1, &limits, NOW)
        };
        let b = body(&[&[("__name__", "up"), ("service", "a")]]);
        let held = || SCRATCH.with(|s| s.lock().unwrap().scratch.decoded.capacity());
        prepare(&b, &ctx).unwrap();
        assert!(held() > 0);
        release_idle();
        assert!(held() > 0, "used since the previous sweep");
        prepare(&b, &ctx).unwrap();
        release_idle();
        assert!(held() > 0, "used again since");
        release_idle();
        assert_eq!(held(), 0, "idle for a whole round");
        // And serves the next request as before.
        let p = prepare(&b, &ctx).unwrap();
        assert_eq!(p.forwarded.series, 1);
    })
    .join()
    .unwrap();
}

/// A request that panicked poisons its thread's slot; its buffers still go when idle.
#[test]
fn a_poisoned_threads_scratch_is_released_too() {
    let _turn = SWEEPS.lock().unwrap_or_else(|e| e.into_inner());
    std::thread::spawn(|| {
        let limits = Limits::default();
        let ctx = Context::new(Version::V1, Version::V1, &limits, NOW);
        let b = body(&[&[("__name__", "up"), ("service", "a")]]);
        prepare(&b, &ctx).unwrap();
        let poisoned = std::panic::catch_unwind(|| {
            SCRATCH.with(|s| {
                let _held = s.lock().unwrap();
                panic!("a request that panicked");
            })
        });
        assert!(poisoned.is_err());
        let held = || {
            SCRATCH.with(|s| {
                s.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .scratch
                    .decoded
                    .capacity()
            })
        };
        assert!(held() > 0);
        release_idle();
        release_idle();
        assert_eq!(held(), 0);
    })
    .join()
    .unwrap();
}
