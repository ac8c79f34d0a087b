use std::time::Duration;

use crate::config::{Config, Overrides};

const RULES: &str = "groups:\n  - name: g\n    rules:\n      - record: job:up:sum\n        expr: sum by (job) (up)\n";

#[test]
fn settings_have_documented_defaults() {
    let c = Config::from_yaml("").unwrap();
    assert_eq!(c.rules.evaluation_interval, Duration::from_secs(60));
    assert_eq!(c.rules.query_offset, Duration::from_secs(30));
    assert!(c.rules.groups.is_empty());
    let c = Config::from_yaml("rules:\n  evaluation_interval: 10s\n  query_offset: 0s\n").unwrap();
    assert_eq!(c.rules.evaluation_interval, Duration::from_secs(10));
    assert_eq!(c.rules.query_offset, Duration::ZERO);
}

#[test]
fn invalid_settings_name_path_and_line() {
    for (yaml, wants) in [
        (
            "rules:\n  evaluation_interval: 0s\n",
            &["line 2", "rules.evaluation_interval"][..],
        ),
        (
            "rules:\n  max_buffered_series: 0\n",
            &["line 2", "rules.max_buffered_series"],
        ),
        ("rules:\n  alerting: true\n", &["line 2", "alerting"]),
        (
            "rule_files: [\"[x\"]\n",
            &["line 1", "rule_files[0]", "pattern"],
        ),
    ] {
        let err = Config::from_yaml(yaml).expect_err(yaml).to_string();
        for w in wants {
            assert!(err.contains(w), "{yaml:?}: want {w:?} in {err}");
        }
    }
}

#[test]
fn rule_files_are_globs_relative_to_the_config_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("rules")).unwrap();
    std::fs::write(dir.path().join("rules/a.yml"), RULES).unwrap();
    std::fs::write(
        dir.path().join("rules/b.yml"),
        RULES.replace("name: g", "name: h"),
    )
    .unwrap();
    let cfg = dir.path().join("cardguard.yml");
    std::fs::write(&cfg, "rule_files: [\"rules/*.yml\", \"none/*.yml\"]\n").unwrap();
    let c = Config::load(&cfg).unwrap();
    let names: Vec<&str> = c.rules.groups.iter().map(|g| g.name.as_str()).collect();
    assert_eq!(names, ["g", "h"]);

    // --rules adds files; the same file twice loads once.
    let extra = dir.path().join("extra.yml");
    std::fs::write(&extra, RULES.replace("name: g", "name: x")).unwrap();
    let o = Overrides {
        rule_files: vec![extra.clone(), extra],
        ..Default::default()
    };
    let c = Config::load_with(Some(&cfg), &o).unwrap();
    assert_eq!(c.rules.groups.len(), 3);
}

#[test]
fn rule_file_problems_name_file_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("bad.yml"),
        "groups:\n  - name: g\n    rules:\n      - alert: Down\n        expr: up == 0\n",
    )
    .unwrap();
    let cfg = dir.path().join("cardguard.yml");
    std::fs::write(&cfg, "rule_files: [bad.yml, missing.yml]\n").unwrap();
    let err = Config::load(&cfg).unwrap_err().to_string();
    assert!(err.contains("missing.yml: no such file"), "{err}");
    let bad = dir.path().join("bad.yml").display().to_string();
    assert!(
        err.contains(&format!("{bad}:4:")) && err.contains("groups[0].rules[0].alert"),
        "{err}"
    );
    assert!(err.contains("\"Down\""), "{err}");
    // From the command line too.
    let o = Overrides {
        rule_files: vec![dir.path().join("bad.yml")],
        ..Default::default()
    };
    assert!(Config::load_with(None, &o).is_err());
    assert!(Config::load_with(None, &Overrides::default()).is_ok());
}
