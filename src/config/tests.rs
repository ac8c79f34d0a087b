use super::*;
use crate::wire::Version;
use std::time::Duration;

#[test]
fn empty_document_is_the_default() {
    assert_eq!(Config::from_yaml("").unwrap(), Config::default());
    assert_eq!(
        Config::from_yaml("# only a comment\n").unwrap(),
        Config::default()
    );
}

#[test]
fn full_example_loads() {
    let c = Config::load(Path::new("testdata/config/valid/full.yml")).unwrap();
    let r = c.routing.unwrap();
    assert!(r.single);
    let up = &r.upstreams[0];
    assert_eq!(up.name, "victoriametrics");
    assert_eq!(up.url.to_string(), "http://127.0.0.1:8428/api/v1/write");
    assert_eq!(up.version, Version::V1);
    assert_eq!(up.timeout, Duration::from_secs(30));
    assert_eq!(up.headers.len(), 1);
    assert_eq!(up.tenant_header.clone().unwrap().as_str(), "x-scope-orgid");
    assert_eq!(c.limits.max_body_bytes, 32 << 20);
    assert_eq!(c.limits.wire.max_labels_per_series, 128);
}

#[test]
fn every_file_in_valid_loads() {
    for entry in std::fs::read_dir("testdata/config/valid").unwrap() {
        let path = entry.unwrap().path();
        if let Err(e) = Config::load(&path) {
            panic!("{} should load:\n{e}", path.display());
        }
    }
}

/// Each invalid document, with the fragments its error list must contain.
const INVALID: &[(&str, &[&str])] = &[
    ("bogus: 1\n", &["line 1", "bogus"]),
    ("server:\n  listen: 1.2.3.4:1\n", &["line 2", "listen"]),
    (
        "server:\n  listen_address: localhost\n",
        &["line 2", "server.listen_address"],
    ),
    (
        "upstream:\n  url: ftp://x/\n",
        &["line 2", "upstream.url", "http://"],
    ),
    (
        "upstream:\n  url: http://x/\n  remote_timeout: 5 seconds\n",
        &["line 3", "duration"],
    ),
    (
        "upstream:\n  url: http://x/\n  remote_write_version: \"3.0\"\n",
        &["line 3", "remote_write_version"],
    ),
    (
        "upstream:\n  url: http://x/\n  headers:\n    Content-Type: text/plain\n",
        &["line 4", "cannot be overridden"],
    ),
    (
        "limits:\n  max_body_size: 12 parsecs\n",
        &["line 2", "size"],
    ),
    (
        "limits:\n  max_labels_per_series: 0\n",
        &["line 2", "limits.max_labels_per_series", "at least 1"],
    ),
    ("upstream: [1, 2]\n", &["line 1"]),
];

#[test]
fn invalid_documents_name_path_and_line() {
    for (yaml, wants) in INVALID {
        let err = Config::from_yaml(yaml).expect_err(yaml).to_string();
        for w in *wants {
            assert!(
                err.contains(w),
                "error for {yaml:?} should mention {w:?}, got:\n{err}"
            );
        }
        assert!(!err.contains('\n') || err.lines().count() >= 1);
    }
}

#[test]
fn reports_every_semantic_error_at_once() {
    let yaml = "server:\n  listen_address: nope\n  max_inflight_requests: 0\nlimits:\n  max_series_per_request: 0\nupstream:\n  url: ftp://x\n  name: \"a b\"\n";
    let err = Config::from_yaml(yaml).unwrap_err();
    assert_eq!(err.errors.len(), 5, "{err}");
    let lines: Vec<_> = err.errors.iter().map(|e| e.line.unwrap()).collect();
    assert_eq!(lines, vec![2, 3, 5, 7, 8]);
}

#[test]
fn flags_override_the_file() {
    let o = Overrides {
        listen_address: Some("127.0.0.1:9999".parse().unwrap()),
        upstream_url: Some("http://127.0.0.1:1/api/v1/write".into()),
        upstream_version: Some("2.0".into()),
        upstream_timeout: Some(Duration::from_secs(3)),
        ..Default::default()
    };
    let c = Config::load_with(Some(Path::new("testdata/config/valid/full.yml")), &o).unwrap();
    assert_eq!(c.server.listen_address.port(), 9999);
    let up = &c.routing.unwrap().upstreams[0];
    assert_eq!(up.url.port_u16(), Some(1));
    assert_eq!(up.version, Version::V2);
    assert_eq!(up.timeout, Duration::from_secs(3));
    // Settings the flags do not touch stay as the file has them.
    assert_eq!(up.headers.len(), 1);
}

#[test]
fn flags_alone_make_a_config() {
    let o = Overrides {
        upstream_url: Some("http://127.0.0.1:8428/api/v1/write".into()),
        ..Default::default()
    };
    let c = Config::load_with(None, &o).unwrap();
    assert!(c.routing.is_some_and(|r| r.single));
    let bad = Overrides {
        upstream_url: Some("127.0.0.1:8428".into()),
        ..Default::default()
    };
    let err = Config::load_with(None, &bad).unwrap_err().to_string();
    assert!(err.contains("--upstream"), "{err}");
}

#[test]
fn byte_sizes() {
    assert_eq!("1024".parse::<ByteSize>(), Ok(ByteSize(1024)));
    assert_eq!("32MiB".parse::<ByteSize>(), Ok(ByteSize(32 << 20)));
    assert_eq!("1KB".parse::<ByteSize>(), Ok(ByteSize(1000)));
    assert!("1TiB".parse::<ByteSize>().is_err());
    assert!("".parse::<ByteSize>().is_err());
}

#[test]
fn guard_section() {
    let yaml = r#"
guard:
  owner_labels: [service, job]
  window: 2h
  window_slices: 12
  max_series: 1000000
  default_budget:
    max_series: 5000
    max_series_per_metric: 1000
    label_limits: {user_id: 100}
  unowned_budget:
    max_series: 50
  budgets:
    - service: checkout
      max_series: 50000
      action: warn
    - service_regex: "team-.*"
      metrics: {http_requests_total: 20000}
"#;
    let c = Config::from_yaml(yaml).unwrap();
    let g = c.guard.unwrap();
    assert_eq!(g.owner_labels, ["service", "job"]);
    assert_eq!(g.slice_length(), Duration::from_secs(600));
    assert_eq!(g.max_series, Some(1_000_000));
    let b = g.budget_for(None, Some("checkout"));
    assert_eq!((b.max_series, b.action), (50_000, Action::Warn));
    // Rules inherit what they do not say from the default budget.
    assert_eq!(b.max_series_per_metric, Some(1000));
    let t = g.budget_for(None, Some("team-a"));
    assert_eq!(t.max_series, 5000);
    assert_eq!(t.metric_limit(b"http_requests_total"), Some(20_000));
    assert_eq!(t.metric_limit(b"other"), Some(1000));
    assert_eq!(g.budget_for(None, Some("team-a-b")).max_series, 5000);
    assert_eq!(g.budget_for(None, Some("xteam-a")).max_series, 5000);
    assert_eq!(g.budget_for(None, None).max_series, 50);
    assert_eq!(
        g.budget_for(None, Some("anything")).label_limits,
        vec![("user_id".to_string(), 100)]
    );
}

#[test]
fn guard_errors() {
    let yaml = "guard:\n  window: 10s\n  budgets:\n    - max_series: 1\n    - service_regex: \"(\"\n    - service: a\n      action: explode\n";
    let err = Config::from_yaml(yaml).unwrap_err();
    let text = err.to_string();
    assert_eq!(err.errors.len(), 4, "{text}");
    assert!(text.contains("guard.window"), "{text}");
    assert!(
        text.contains("guard.budgets[0]: needs exactly one of service or service_regex"),
        "{text}"
    );
    assert!(text.contains("guard.budgets[1].service_regex"), "{text}");
    assert!(text.contains("guard.budgets[2].action"), "{text}");
}

#[test]
fn quick_start_flags_turn_the_guard_on() {
    let o = Overrides {
        upstream_url: Some("http://127.0.0.1:1/api/v1/write".into()),
        max_series_per_service: Some(500),
        owner_label: Some("team".into()),
        ..Default::default()
    };
    let g = Config::load_with(None, &o).unwrap().guard.unwrap();
    assert_eq!(g.owner_labels, ["team"]);
    assert_eq!(g.budget_for(None, Some("x")).max_series, 500);
}

#[test]
fn guard_bounds_and_tenant_policy() {
    let yaml = r#"
guard:
  tenant_header: X-Scope-OrgID
  max_tenants: 50
  max_owners_per_tenant: 200
  max_overflow_bytes: 16MiB
  tenants:
    allow: [team-a]
    allow_regex: "team-b-.*"
    default: shared
"#;
    let g = Config::from_yaml(yaml).unwrap().guard.unwrap();
    assert_eq!((g.max_tenants, g.max_owners_per_tenant), (50, 200));
    assert_eq!(g.max_overflow_bytes, 16 << 20);
    let resolve = |t: &[u8]| g.resolve_tenant(Some(t)).map(|t| t.map(str::to_string));
    assert_eq!(resolve(b"team-a"), Ok(Some("team-a".into())));
    assert_eq!(resolve(b"team-b-1"), Ok(Some("team-b-1".into())));
    // Anchored: only whole values match.
    assert_eq!(resolve(b"xteam-b-1"), Ok(Some("shared".into())));
    assert_eq!(g.resolve_tenant(None), Ok(Some("shared")));
    assert!(matches!(
        resolve(b"\xff"),
        Err(crate::guard::TenantRefused::NotUtf8 { .. })
    ));

    // Defaults: bounded without any of the keys.
    let g = Config::from_yaml("guard: {}\n").unwrap().guard.unwrap();
    assert_eq!((g.max_tenants, g.max_owners_per_tenant), (1000, 1000));
    assert!(g.tenants.is_none());
}

#[test]
fn guard_bounds_and_tenant_policy_errors() {
    let yaml = "guard:\n  max_tenants: 0\n  max_owners_per_tenant: 0\n  max_overflow_bytes: 1KiB\n  tenants:\n    allow_regex: \"(\"\n";
    let err = Config::from_yaml(yaml).unwrap_err();
    let text = err.to_string();
    for key in [
        "guard.max_tenants",
        "guard.max_owners_per_tenant",
        "guard.max_overflow_bytes",
        "guard.tenants: needs guard.tenant_header",
        "guard.tenants.allow_regex",
    ] {
        assert!(text.contains(key), "{key} not in {text}");
    }
    let err = Config::from_yaml("guard:\n  tenant_header: X-Scope-OrgID\n  tenants: {}\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("needs allow, allow_regex or default"), "{err}");
}

#[test]
fn max_output_size_defaults_to_max_decoded_size() {
    let c = Config::from_yaml("limits:\n  max_decoded_size: 4MiB\n").unwrap();
    assert_eq!(c.limits.wire.max_output_bytes, 4 << 20);
    let c =
        Config::from_yaml("limits:\n  max_decoded_size: 4MiB\n  max_output_size: 64MiB\n").unwrap();
    assert_eq!(c.limits.wire.max_output_bytes, 64 << 20);
    let e = Config::from_yaml("limits:\n  max_output_size: 0\n").unwrap_err();
    assert!(e.to_string().contains("limits.max_output_size"), "{e}");
}

#[test]
fn guard_shared() {
    let yaml = "guard:\n  hash_seed: 7\n  shared:\n    url: redis://:secret@127.0.0.1:6379/2\n    key_prefix: \"cg:\"\n    timeout: 50ms\n    replicas_hint: 4\n";
    let c = Config::from_yaml(yaml).unwrap();
    let sh = c.guard.unwrap().shared.unwrap();
    assert_eq!(sh.url, "redis://:secret@127.0.0.1:6379/2");
    assert_eq!(sh.key_prefix, "cg:");
    assert_eq!(sh.timeout, std::time::Duration::from_millis(50));
    assert_eq!(sh.connect_timeout, std::time::Duration::from_secs(1));
    assert_eq!(sh.replicas_hint, 4);
    assert!(!format!("{sh:?}").contains("secret"), "{sh:?}");

    let defaults = Config::from_yaml("guard:\n  shared:\n    url: redis://r:6379\n").unwrap();
    let sh = defaults.guard.unwrap().shared.unwrap();
    assert_eq!(sh.key_prefix, "cardguard:");
    assert_eq!(sh.timeout, std::time::Duration::from_millis(100));
    assert_eq!(sh.replicas_hint, 2);
}

#[test]
fn guard_shared_errors() {
    let yaml = "guard:\n  shared:\n    key_prefix: x\n    timeout: 0s\n    replicas_hint: 0\n";
    let err = Config::from_yaml(yaml).unwrap_err();
    let text = err.to_string();
    assert_eq!(err.errors.len(), 3, "{text}");
    assert!(text.contains("guard.shared.url: is required"), "{text}");
    assert!(text.contains("line 4: guard.shared.timeout"), "{text}");
    assert!(
        text.contains("line 5: guard.shared.replicas_hint: must be at least 1"),
        "{text}"
    );
    let bad = Config::from_yaml("guard:\n  shared:\n    url: http://r:6379\n").unwrap_err();
    assert!(
        bad.to_string()
            .contains("line 3: guard.shared.url: not a Redis URL"),
        "{bad}"
    );
    let unknown = Config::from_yaml("guard:\n  shared:\n    url: redis://r\n    cluster: true\n");
    assert!(unknown.is_err());
}
