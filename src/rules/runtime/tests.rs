use std::path::PathBuf;

use super::*;
use crate::app::App;
use crate::ingest::ConfigSource;
use crate::rules::promql::Sample;

const GOOD: &str = "groups:\n  - name: g\n    rules:\n      - record: job:up:sum\n        expr: sum by (job) (up)\n";

fn put(rt: &Runtime, job: &str, t: i64) {
    let l: Vec<(&[u8], &[u8])> = vec![(b"__name__", b"up"), (b"job", job.as_bytes())];
    rt.buffer.append(
        l.into_iter(),
        [Sample { t, v: 1.0 }].into_iter(),
        3_600_000,
        &BufferLimits {
            max_series: 10,
            max_samples_per_series: 10,
            max_label_bytes: usize::MAX,
        },
    );
}

fn source(dir: &std::path::Path, rules: &str) -> (ConfigSource, PathBuf) {
    let rule_file = dir.join("r.yml");
    std::fs::write(&rule_file, rules).unwrap();
    let cfg = dir.join("c.yml");
    std::fs::write(
        &cfg,
        "upstream:\n  url: http://127.0.0.1:1/api/v1/write\nrule_files: [r.yml]\nrules:\n  query_offset: 10s\n",
    )
    .unwrap();
    (
        ConfigSource {
            file: Some(cfg),
            overrides: Default::default(),
            web: Default::default(),
        },
        rule_file,
    )
}

#[tokio::test]
async fn rules_reload_with_the_config_and_a_bad_file_keeps_the_old_ones() {
    let dir = tempfile::tempdir().unwrap();
    let (src, rule_file) = source(dir.path(), GOOD);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let app = App::start_on(src.load().unwrap(), src, listener).unwrap();
    let state = app.state();
    assert_eq!(state.rules.plan().selector_count(), 1);

    std::fs::write(
        &rule_file,
        "groups:\n  - name: g\n    rules:\n      - alert: Down\n        expr: up == 0\n",
    )
    .unwrap();
    let err = state.reload().await.unwrap_err().to_string();
    assert!(err.contains("Down"), "{err}");
    assert_eq!(state.config().rules.groups[0].rules[0].record, "job:up:sum");
    assert_eq!(state.rules.plan().selector_count(), 1);

    std::fs::write(
        &rule_file,
        format!("{GOOD}      - record: r2\n        expr: node_up\n"),
    )
    .unwrap();
    state.reload().await.unwrap();
    assert_eq!(state.config().rules.groups[0].rules.len(), 2);
    assert_eq!(state.rules.plan().selector_count(), 2);
}

#[test]
fn a_group_evaluates_at_its_tick_minus_the_offset_and_queues_results() {
    let rt = Runtime::new(&prometheus::Registry::new());
    let mut rules = RulesConfig::default();
    let groups = crate::rules::file::parse("r.yml", GOOD).unwrap();
    rules.query_offset = Duration::from_secs(10);
    rules.groups = Arc::new(groups.into_iter().map(Arc::new).collect());
    rt.configure(&rules);
    put(&rt, "a", 50_000);
    put(&rt, "b", 50_000);
    rt.evaluate_group(&rules.groups[0], &rules, 60_000);
    assert_eq!(rt.output.queued_samples(), 2);
    assert_eq!(rt.metrics.samples_recorded.get(), 2);
    assert_eq!(
        rt.metrics
            .last_evaluation
            .with_label_values(&["r.yml;g"])
            .get(),
        50.0
    );

    // The group is removed by a reload: its series are retired with stale markers.
    rt.reconcile(&[], &rules, 70_000);
    assert_eq!(rt.output.queued_samples(), 4);
    assert_eq!(rt.metrics.samples_recorded.get(), 4);
}
