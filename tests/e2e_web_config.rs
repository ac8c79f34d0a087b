//! End to end: real Prometheus remote-writes to cardguard over TLS with basic auth, both from
//! a web config file (`--web.config.file`, Prometheus's format), and cardguard forwards to
//! VictoriaMetrics (issue 14).
//!
//! * every sample Prometheus scraped arrives in VictoriaMetrics, across a rotation of
//!   cardguard's server certificate (the files rewritten mid-run, picked up without a restart:
//!   a client trusting only the new CA gets in, one trusting only the old one no longer does);
//! * a sender without credentials, or with a wrong password, gets 401 with
//!   `WWW-Authenticate: Basic`, counted in `cardguard_http_auth_failures_total`;
//! * a broken version of the web config keeps the previous one in force and is counted;
//! * `POST /-/reload` is 403 without `--web.enable-lifecycle` and 200 with it;
//! * the password appears in no log and not in `/metrics`.
//!
//! Needs the peers from `scripts/fetch-peers.sh` (`CARDGUARD_PEERS_DIR`).

mod common;

use common::*;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use base64::Engine as _;

const USER: &str = "prometheus";
const PASSWORD: &str = "web-config-password-7d3e91";

fn web_config(hash: &str) -> String {
    format!(
        "tls_server_config:\n  cert_file: cg-cert.pem\n  key_file: cg-key.pem\n\
         basic_auth_users:\n  {USER}: \"{hash}\"\n"
    )
}

fn basic(user: &str, password: &str) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Basic {b64}")
}

/// Status, headers, body.
type Answer = (u16, Vec<(String, String)>, String);

/// A request through `agent`, with basic auth if given.
fn call(
    agent: &ureq::Agent,
    method: &str,
    url: &str,
    auth: Option<(&str, &str)>,
    body: &[u8],
) -> Result<Answer, String> {
    let mut req = ureq::http::Request::builder().method(method).uri(url);
    if let Some((u, p)) = auth {
        req = req.header("Authorization", basic(u, p));
    }
    if method == "POST" {
        for (k, v) in rw::STANDARD_HEADERS {
            req = req.header(k, v);
        }
    }
    let mut r = agent
        .run(req.body(body.to_vec()).map_err(|e| e.to_string())?)
        .map_err(|e| e.to_string())?;
    let headers = r
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), String::from_utf8_lossy(v.as_bytes()).into()))
        .collect();
    let status = r.status().as_u16();
    let text = r
        .body_mut()
        .read_to_string()
        .map_err(|e| format!("reading body: {e}"))?;
    Ok((status, headers, text))
}

/// `cardguard serve` over TLS on a free port, ready once `/-/ready` answers 200 to `agent`
/// with the credentials.
fn start_cardguard(dir: &TestDir, agent: &ureq::Agent, args: &[&str]) -> Cardguard {
    for attempt in 1.. {
        let port = free_port();
        let mut cmd = Command::new(cardguard_bin());
        cmd.arg("serve")
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .args(args)
            .env("RUST_BACKTRACE", "1")
            .current_dir(dir.path());
        let mut proc = Proc::spawn("cardguard", cmd, dir.join(&format!("cardguard-{port}.log")));
        let ready = format!("https://127.0.0.1:{port}/-/ready");
        let started = Instant::now();
        loop {
            if let Some(st) = proc.exited() {
                let log = proc.log_text();
                if log.contains("Address already in use") && attempt < 4 {
                    break;
                }
                panic!("cardguard exited ({st}) before serving HTTPS:\n{log}");
            }
            if let Ok((200, _, _)) = call(agent, "GET", &ready, Some((USER, PASSWORD)), b"") {
                return Cardguard { port, proc };
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "cardguard did not answer {ready} within 20s:\n{}",
                proc.log_tail(20)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    unreachable!()
}

fn https(cg: &Cardguard, path: &str) -> String {
    format!("https://127.0.0.1:{}{path}", cg.port)
}

fn copy(from: &Path, to: &Path) {
    std::fs::copy(from, to).unwrap_or_else(|e| panic!("copy {}: {e}", from.display()));
}

#[test]
fn prometheus_writes_over_tls_with_basic_auth_from_a_web_config() {
    peer_bin("prometheus");
    peer_bin("victoria-metrics");
    let t0 = Instant::now();
    let dir = TestDir::new("web-config");
    let one = TestCa::new(&dir, "one");
    let two = TestCa::new(&dir, "two");
    // The files the web config names; rotating the certificate rewrites them.
    copy(&one.cert_file, &dir.join("cg-cert.pem"));
    copy(&one.key_file, &dir.join("cg-key.pem"));
    // Prometheus trusts both CAs, so that it keeps writing across the rotation.
    let bundle = dir.join("cas.pem");
    std::fs::write(
        &bundle,
        std::fs::read_to_string(&one.ca_file).unwrap()
            + &std::fs::read_to_string(&two.ca_file).unwrap(),
    )
    .unwrap();
    let hash = bcrypt::hash(PASSWORD, bcrypt::DEFAULT_COST).unwrap();
    let web_file = dir.join("web.yml");
    std::fs::write(&web_file, web_config(&hash)).unwrap();

    let vm = Vm::start(&dir);
    let web = web_file.display().to_string();
    let cg = start_cardguard(
        &dir,
        &one.agent(),
        &["--upstream", &vm.write_url(), "--web.config.file", &web],
    );
    let target = TestTarget::start();
    let mut pc = PromConfig::new(&https(&cg, "/api/v1/write")).job("target", &target.addr());
    pc.remote_write_settings = format!(
        "    basic_auth:\n      username: {USER}\n      password: {PASSWORD}\n    \
         tls_config:\n      ca_file: {}\n    enable_http2: true\n",
        bundle.display()
    );
    let mut prom = Prom::start(&dir, &pc);
    let from = prom.started_ms - 60_000;
    let wait_vm = |after: i64| {
        poll_until(
            "VictoriaMetrics to hold cg_test_scrapes_total written through cardguard",
            Duration::from_secs(60),
            Duration::from_millis(500),
            || {
                let m = vm.export("cg_test_scrapes_total", from, now_ms() + 60_000)?;
                match m.values().filter_map(|s| s.last().map(|(t, _)| *t)).max() {
                    Some(t) if t >= after => Ok(()),
                    other => Err(format!("newest sample {:?}", other.map(fmt_ms))),
                }
            },
        )
    };
    wait_vm(now_ms());
    eprintln!(
        "[web-config] data flowing over TLS after {:?}",
        t0.elapsed()
    );

    // --- 401 without credentials or with a wrong password ------------------------------------
    let probe = rw::body(&[rw::Series::new(
        "cg_web_probe",
        &[("job", "probe")],
        1.0,
        now_ms(),
    )]);
    let write = https(&cg, "/api/v1/write");
    for auth in [None, Some((USER, "wrong")), Some(("nobody", PASSWORD))] {
        let (status, headers, _) = call(&one.agent(), "POST", &write, auth, &probe).unwrap();
        assert_eq!(status, 401, "{auth:?}");
        assert!(
            headers
                .iter()
                .any(|(k, v)| k.eq_ignore_ascii_case("www-authenticate") && v == "Basic"),
            "{headers:?}"
        );
    }
    let (status, _, _) = call(&one.agent(), "GET", &https(&cg, "/metrics"), None, b"").unwrap();
    assert_eq!(status, 401, "/metrics needs credentials too");

    // --- /-/reload without --web.enable-lifecycle ---------------------------------------------
    let (status, _, text) = call(
        &one.agent(),
        "POST",
        &https(&cg, "/-/reload"),
        Some((USER, PASSWORD)),
        b"",
    )
    .unwrap();
    assert_eq!(
        (status, text.trim()),
        (403, "Lifecycle API is not enabled.")
    );

    // --- a broken web config keeps the previous one ---------------------------------------
    std::fs::write(&web_file, "basic_auth_users:\n  prometheus: not-a-hash\n").unwrap();
    let metrics = |agent: &ureq::Agent| {
        let (status, _, text) = call(
            agent,
            "GET",
            &https(&cg, "/metrics"),
            Some((USER, PASSWORD)),
            b"",
        )?;
        if status != 200 {
            return Err(format!("/metrics answered {status}: {text}"));
        }
        Ok(text)
    };
    poll_until(
        "cardguard to count the broken web config",
        Duration::from_secs(10),
        Duration::from_millis(200),
        || {
            let m = metrics(&one.agent())?;
            match metric_sum(&m, "cardguard_web_config_reload_failures_total") {
                Some(n) if n >= 1.0 => Ok(()),
                other => Err(format!(
                    "cardguard_web_config_reload_failures_total {other:?}"
                )),
            }
        },
    );
    assert!(
        cg.proc
            .log_text()
            .contains("basic_auth_users.prometheus: not a bcrypt hash"),
        "the broken version is logged"
    );
    std::fs::write(&web_file, web_config(&hash)).unwrap();

    // --- rotate the server certificate ------------------------------------------------------
    let t_rotate = now_ms();
    copy(&two.cert_file, &dir.join("cg-cert.pem"));
    copy(&two.key_file, &dir.join("cg-key.pem"));
    poll_until(
        "cardguard to serve the new certificate",
        Duration::from_secs(10),
        Duration::from_millis(200),
        || metrics(&two.agent()).map(|_| ()),
    );
    let old = call(
        &one.agent(),
        "GET",
        &https(&cg, "/-/healthy"),
        Some((USER, PASSWORD)),
        b"",
    );
    assert!(old.is_err(), "a client trusting only the old CA: {old:?}");
    eprintln!(
        "[web-config] certificate rotated; picked up within {} ms",
        now_ms() - t_rotate
    );
    wait_vm(now_ms() + 2_000);
    prom.proc.assert_running();

    // --- every sample Prometheus holds is in VictoriaMetrics ---------------------------------
    let cutoff = now_ms() - 2_000;
    let range_s = ((now_ms() - from) / 1000 + 5) as u64;
    let expected = prom
        .raw_samples(r#"{job="target"}"#, cutoff, range_s)
        .expect("prometheus query");
    assert!(!expected.is_empty(), "Prometheus holds no target samples");
    let got = wait_until_backend_matches_prometheus(
        "VictoriaMetrics to hold every sample Prometheus holds for job=target",
        &vm,
        &expected,
        r#"{job="target"}"#,
        (from, cutoff),
        0.0,
        Duration::from_secs(30),
        |_, _| Ok(()),
    );
    let total: usize = window(&got, from, cutoff).values().map(Vec::len).sum();
    let pm = prom.metrics_text();
    let failed = metric_sum(&pm, "prometheus_remote_storage_samples_failed_total").unwrap_or(0.0);
    assert_eq!(failed, 0.0, "{}", remote_storage_summary(&pm));
    let cm = metrics(&two.agent()).unwrap();
    for (reason, at_least) in [("missing", 2.0), ("wrong", 2.0)] {
        let n = metric_value(
            &cm,
            "cardguard_http_auth_failures_total",
            &[("reason", reason)],
        );
        assert!(
            n.unwrap_or(0.0) >= at_least,
            "auth failures {reason}: {n:?}"
        );
    }
    eprintln!(
        "[web-config] {} series, {total} samples identical across the rotation; {}",
        got.len(),
        remote_storage_summary(&pm)
    );

    // --- with --web.enable-lifecycle, /-/reload answers ----------------------------------------
    let lifecycle = start_cardguard(
        &dir,
        &two.agent(),
        &[
            "--upstream",
            &vm.write_url(),
            "--web.config.file",
            &web,
            "--web.enable-lifecycle",
        ],
    );
    let reload = https(&lifecycle, "/-/reload");
    let (status, _, text) =
        call(&two.agent(), "POST", &reload, Some((USER, PASSWORD)), b"").unwrap();
    assert_eq!(status, 200, "{text}");
    let (status, _, _) = call(&two.agent(), "POST", &reload, None, b"").unwrap();
    assert_eq!(status, 401, "the lifecycle API needs credentials too");

    // --- the password is nowhere -------------------------------------------------------------
    for text in [cg.proc.log_text(), lifecycle.proc.log_text(), cm] {
        assert!(!text.contains(PASSWORD), "the password leaked:\n{text}");
    }
    eprintln!("[web-config] done after {:?}", t0.elapsed());
}
