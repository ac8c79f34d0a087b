//! The stages together: each one's drops are added to the request's total, none replaces
//! another's.

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
