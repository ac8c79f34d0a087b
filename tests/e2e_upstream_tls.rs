//! End to end: real Prometheus -> cardguard -> VictoriaMetrics, where VictoriaMetrics serves
//! HTTPS with a certificate this test makes and requires basic auth, and cardguard's upstream
//! has `tls_config.ca_file` and `basic_auth.password_file` (issue 14).
//!
//! * every sample Prometheus scraped arrives in VictoriaMetrics;
//! * the password is rotated mid-run (the file is rewritten, VictoriaMetrics restarted with the
//!   new password) and nothing is lost: cardguard re-reads the file without a restart, and the
//!   writes refused meanwhile were answered 503, so Prometheus kept and resent them;
//! * a cardguard trusting another CA answers the sender 503 and logs a line naming the
//!   upstream and the certificate problem;
//! * neither password appears in cardguard's logs or `/metrics`.
//!
//! Needs the peers from `scripts/fetch-peers.sh` (`CARDGUARD_PEERS_DIR`).

mod common;

use common::*;
use std::time::{Duration, Instant};

const USER: &str = "cardguard-writer";
const PASSWORD_1: &str = "first-password-0f9a7c";
const PASSWORD_2: &str = "second-password-51be2d";

fn config(vm: &SecureVm, ca_file: &std::path::Path, password_file: &std::path::Path) -> String {
    format!(
        "upstream:\n  name: secure-vm\n  url: {}\n  basic_auth:\n    username: {USER}\n    \
         password_file: {}\n  tls_config:\n    ca_file: {}\n",
        vm.write_url(),
        password_file.display(),
        ca_file.display()
    )
}

#[test]
fn https_upstream_with_basic_auth_from_a_rotated_file_loses_nothing() {
    // Fail fast (before spawning anything) if a peer is missing.
    peer_bin("prometheus");
    peer_bin("victoria-metrics");
    let t0 = Instant::now();
    let dir = TestDir::new("upstream-tls");
    let ca = TestCa::new(&dir, "good");
    let mut vm = SecureVm::start(&dir, &ca, USER, PASSWORD_1);

    let password_file = dir.join("vm-password");
    std::fs::write(&password_file, format!("{PASSWORD_1}\n")).unwrap();
    let cfg_path = dir.join("cardguard.yml");
    std::fs::write(&cfg_path, config(&vm, &ca.ca_file, &password_file)).unwrap();
    let mut cg = Cardguard::start_args(&dir, &["--config", &cfg_path.display().to_string()]);

    let target = TestTarget::start();
    let mut prom = Prom::start(
        &dir,
        &PromConfig::new(&cg.write_url()).job("target", &target.addr()),
    );
    let from = prom.started_ms - 60_000;
    vm.wait_reaches(
        "cg_test_scrapes_total",
        from,
        now_ms() + 1_000,
        Duration::from_secs(60),
    );
    eprintln!(
        "[upstream-tls] data flowing over https after {:?}",
        t0.elapsed()
    );

    // --- rotation: the secret file first (as a secret manager would), then the backend ----
    std::fs::write(&password_file, format!("{PASSWORD_2}\n")).unwrap();
    vm.stop();
    let t_down = now_ms();
    std::thread::sleep(Duration::from_secs(3));
    vm.restart_with_password(PASSWORD_2);
    let t_up = now_ms();
    eprintln!(
        "[upstream-tls] password rotated; VictoriaMetrics down {} ms",
        t_up - t_down
    );
    vm.wait_reaches(
        "cg_test_scrapes_total",
        from,
        t_up + 3_000,
        Duration::from_secs(60),
    );
    prom.proc.assert_running();
    cg.proc.assert_running();

    // --- every sample Prometheus holds is in VictoriaMetrics ---------------------------------
    let cutoff = t_up + 2_000;
    let range_s = ((now_ms() - from) / 1000 + 5) as u64;
    let expected = prom
        .raw_samples(r#"{job="target"}"#, cutoff, range_s)
        .expect("prometheus query");
    assert!(!expected.is_empty(), "Prometheus holds no target samples");
    let got = poll_until(
        "VictoriaMetrics (https, basic auth) to hold every sample Prometheus holds for job=target",
        Duration::from_secs(30),
        Duration::from_millis(500),
        || {
            let got = vm.export(r#"{job="target"}"#, from, cutoff + 60_000)?;
            let problems = compare_samples(&expected, &got, from, cutoff, 0.0);
            if problems.is_empty() {
                Ok(got)
            } else {
                Err(summarize(&problems, 20))
            }
        },
    );
    let total: usize = window(&got, from, cutoff).values().map(Vec::len).sum();
    let pm = prom.metrics_text();
    let failed = metric_sum(&pm, "prometheus_remote_storage_samples_failed_total").unwrap_or(0.0);
    assert_eq!(
        failed,
        0.0,
        "Prometheus dropped samples: {}",
        remote_storage_summary(&pm)
    );
    eprintln!(
        "[upstream-tls] {} series, {total} samples identical across the rotation; {}",
        got.len(),
        remote_storage_summary(&pm)
    );

    // --- a CA that did not sign the upstream's certificate ---------------------------------
    let wrong = TestCa::new(&dir, "wrong");
    let wrong_cfg = dir.join("cardguard-wrong-ca.yml");
    std::fs::write(&wrong_cfg, config(&vm, &wrong.ca_file, &password_file)).unwrap();
    let bad = Cardguard::start_args(&dir, &["--config", &wrong_cfg.display().to_string()]);
    let probe = rw::body(&[rw::Series::new(
        "cg_tls_probe",
        &[("job", "probe")],
        1.0,
        now_ms(),
    )]);
    let r = post_remote_write(&bad.write_url(), &probe).expect("post to cardguard");
    assert_eq!(r.status, 503, "wrong CA: {}", r.text());
    let log = poll_until(
        "cardguard to log the certificate problem",
        Duration::from_secs(5),
        Duration::from_millis(100),
        || {
            let log = bad.proc.log_text();
            match log
                .lines()
                .find(|l| l.contains("secure-vm") && l.contains("UnknownIssuer"))
            {
                Some(l) => Ok(l.to_string()),
                None => Err(log.lines().rev().take(5).collect::<Vec<_>>().join("\n")),
            }
        },
    );
    assert!(log.contains("ca_file"), "{log}");
    eprintln!(
        "[upstream-tls] wrong CA: 503 {:?}; log: {log}",
        r.text().trim()
    );

    // --- no secret in logs or metrics -------------------------------------------------------
    for text in [
        cg.proc.log_text(),
        bad.proc.log_text(),
        cg.metrics_text(),
        bad.metrics_text(),
    ] {
        for p in [PASSWORD_1, PASSWORD_2] {
            assert!(!text.contains(p), "a password leaked:\n{text}");
        }
    }
    eprintln!("[upstream-tls] done after {:?}", t0.elapsed());
}
