//! `relabel_configs:`, `upstreams:`, `routes:` and `tenant_header:` in the config.

use super::*;
use std::time::Duration;

#[test]
fn routing_example_loads() {
    let c = Config::load(std::path::Path::new("testdata/config/valid/routing.yml")).unwrap();
    assert_eq!(c.relabel.len(), 1);
    let r = c.routing.unwrap();
    assert!(!r.single);
    assert_eq!(r.tenant_header.as_ref().unwrap().as_str(), "x-scope-orgid");
    assert_eq!(r.upstreams.len(), 2);
    assert_eq!(r.upstreams[1].name, "long");
    assert_eq!(
        r.upstreams[1].tenant_header.as_ref().unwrap().as_str(),
        "x-scope-orgid"
    );
    assert_eq!(r.routes.len(), 2);
    let slo = &r.routes[0];
    assert_eq!(slo.name, "slo-long");
    assert_eq!(slo.upstreams, vec![1]);
    assert_eq!(slo.min_interval, Some(Duration::from_secs(60)));
    assert_eq!(slo.relabel.len(), 1);
    assert!(slo.continue_matching);
    assert_eq!(slo.tenants.as_deref().unwrap(), ["team-a", "team-b"]);
    assert!(r.routes[1].is_catch_all());
    assert_eq!(r.routes[1].name, "route1");
}

#[test]
fn one_upstream_needs_no_default_route() {
    let c = Config::from_yaml("upstreams:\n  - name: a\n    url: http://x/\n").unwrap();
    assert_eq!(c.routing.unwrap().routes.len(), 0);
}

const INVALID: &[(&str, &[&str])] = &[
    (
        "relabel_configs:\n  - action: hashmod\n    target_label: x\n",
        &["line 2", "relabel_configs[0]", "requires non-zero modulus"],
    ),
    (
        "relabel_configs:\n  - source_labels: [a]\n    regex: \"(\"\n    target_label: b\n",
        &["relabel_configs[0]", "invalid regex"],
    ),
    (
        "relabel_configs:\n  - action: replace\n",
        &["requires 'target_label' value"],
    ),
    ("relabel_configs:\n  - bogus: 1\n", &["line 2", "bogus"]),
    (
        "upstream:\n  url: http://x/\nupstreams:\n  - name: a\n    url: http://y/\n",
        &["cannot both be set"],
    ),
    ("upstreams: []\n", &["at least one upstream"]),
    (
        "upstreams:\n  - url: http://y/\n",
        &["upstreams[0]", "needs a `name`"],
    ),
    (
        "upstreams:\n  - name: a\n    url: http://y/\n  - name: a\n    url: http://z/\nroutes:\n  - upstreams: [a]\n",
        &["duplicate upstream name"],
    ),
    (
        "upstreams:\n  - name: a\n    url: http://y/\n  - name: b\n    url: http://z/\nroutes:\n  - match: '{x=\"1\"}'\n    upstreams: [a]\n",
        &["default route"],
    ),
    (
        "upstreams:\n  - name: a\n    url: http://y/\nroutes:\n  - upstreams: [nope]\n",
        &["line 5", "routes[0].upstreams", "unknown upstream \"nope\""],
    ),
    (
        "upstreams:\n  - name: a\n    url: http://y/\nroutes:\n  - upstreams: []\n",
        &["routes[0].upstreams", "at least one"],
    ),
    (
        "upstreams:\n  - name: a\n    url: http://y/\nroutes:\n  - match: '{x=}'\n    upstreams: [a]\n",
        &["line 5", "routes[0].match"],
    ),
    (
        "upstreams:\n  - name: a\n    url: ftp://y/\n",
        &["upstreams[0].url", "http://"],
    ),
    (
        "upstreams:\n  - name: a\n    url: http://y/\nroutes:\n  - upstreams: [a]\n    min_interval: 0s\n",
        &["routes[0].min_interval", "greater than 0"],
    ),
    (
        "upstreams:\n  - name: a\n    url: http://y/\nroutes:\n  - upstreams: [a]\n    relabel_configs:\n      - action: keepequal\n",
        &["routes[0].relabel_configs[0]", "target_label"],
    ),
    (
        "routes:\n  - upstreams: [a]\n",
        &["routes need `upstreams:`"],
    ),
];

#[test]
fn invalid_routing_documents() {
    for (yaml, wants) in INVALID {
        let err = Config::from_yaml(yaml).expect_err(yaml).to_string();
        for w in *wants {
            assert!(
                err.contains(w),
                "error for {yaml:?} should mention {w:?}, got:\n{err}"
            );
        }
    }
}

#[test]
fn upstream_flags_refuse_a_routed_config() {
    let o = Overrides {
        upstream_url: Some("http://127.0.0.1:1/api/v1/write".into()),
        ..Default::default()
    };
    let err = Config::load_with(
        Some(std::path::Path::new("testdata/config/valid/routing.yml")),
        &o,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("--upstream"), "{err}");
}
