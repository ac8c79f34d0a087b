//! The container files cannot drift from the code, though CI cannot build images (no registry
//! is reachable): `examples/compose/cardguard.yml` passes `cardguard check`, its
//! `prometheus.yml` passes `promtool check config` and its rule file `promtool check rules`
//! (the peers' promtool; no network needed), every file `docker-compose.yml` mounts exists,
//! Grafana is provisioned with the dashboard's directory, and the Dockerfile exposes
//! cardguard's default port and runs `cardguard serve`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use serde_json::Value;

fn compose_dir() -> PathBuf {
    repo_root().join("examples/compose")
}

fn yaml(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{cmd:?}: {}\n{text}", out.status);
    text
}

#[test]
fn the_compose_cardguard_config_passes_check() {
    let out = run(Command::new(cardguard_bin())
        .arg("check")
        .arg(compose_dir().join("cardguard.yml")));
    assert!(
        out.contains("OK (1 rule groups, 2 recording rules)"),
        "{out}"
    );
}

#[test]
fn the_compose_prometheus_config_and_rules_pass_promtool() {
    let promtool = peer_bin("promtool");
    let out = run(Command::new(&promtool)
        .args(["check", "config"])
        .arg(compose_dir().join("prometheus.yml")));
    assert!(out.contains("SUCCESS"), "{out}");
    let out = run(Command::new(&promtool)
        .args(["check", "rules"])
        .arg(compose_dir().join("rules.yml")));
    assert!(out.contains("SUCCESS: 2 rules found"), "{out}");
}

#[test]
fn every_file_the_compose_file_mounts_exists() {
    let dir = compose_dir();
    let compose = yaml(&dir.join("docker-compose.yml"));
    let services = compose["services"].as_object().expect("services");
    for name in ["cardguard", "prometheus", "victoriametrics", "grafana"] {
        assert!(services.contains_key(name), "no {name} service");
    }
    let mut mounted = Vec::new();
    for (name, svc) in services {
        for v in svc["volumes"].as_array().into_iter().flatten() {
            let v = v.as_str().expect("short volume syntax");
            let (host, rest) = v.split_once(':').unwrap();
            if host.starts_with('.') {
                let p = dir.join(host);
                assert!(p.exists(), "{name} mounts {host}, which does not exist");
                mounted.push((host.to_string(), rest.to_string()));
            }
        }
    }
    // Grafana reads the dashboard from where its provider points.
    let provider = yaml(&dir.join("grafana/provisioning/dashboards/dashboards.yml"));
    let path = provider["providers"][0]["options"]["path"]
        .as_str()
        .unwrap();
    assert!(
        mounted
            .iter()
            .any(|(host, at)| host == "../../dashboards" && at.starts_with(&format!("{path}:"))),
        "the dashboards directory is not mounted at {path}: {mounted:?}"
    );
    assert!(dir.join("../../dashboards/cardguard.json").exists());
    // Prometheus writes to the cardguard service, on the port cardguard listens on.
    let cfg = yaml(&dir.join("cardguard.yml"));
    let listen = cfg["server"]["listen_address"].as_str().unwrap();
    let port = listen.rsplit(':').next().unwrap();
    let prom = yaml(&dir.join("prometheus.yml"));
    assert_eq!(
        prom["remote_write"][0]["url"],
        format!("http://cardguard:{port}/api/v1/write")
    );
}

#[test]
fn the_dockerfile_serves_on_the_default_port() {
    let text = std::fs::read_to_string(repo_root().join("Dockerfile")).unwrap();
    let default = ::cardguard::config::Config::default().server.listen_address;
    assert!(
        text.lines()
            .any(|l| l.trim() == format!("EXPOSE {}", default.port())),
        "the Dockerfile does not expose {}",
        default.port()
    );
    assert!(text.contains(r#"ENTRYPOINT ["/usr/local/bin/cardguard", "serve"]"#));
    assert!(text.contains(&format!(r#"CMD ["--listen=0.0.0.0:{}"]"#, default.port())));
    assert!(text.contains("cargo build --release --locked"));
    assert!(text.contains("USER nonroot"));
    let ignore = std::fs::read_to_string(repo_root().join(".dockerignore")).unwrap();
    for dir in ["target", ".peers", "fuzz/target"] {
        assert!(
            ignore.lines().any(|l| l == dir),
            ".dockerignore lacks {dir}"
        );
    }
}
