//! cardguard under test: `cardguard serve` started on a free port, its reload paths (HTTP and
//! SIGHUP), its `/metrics` and `/api/v1/cardinality`, and the names of its own metrics the
//! tests read.

use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use super::{
    cardguard_bin, direct_mode, http_get, http_post, start_on_free_port, Proc, Resp, TestDir,
};

pub struct Cardguard {
    pub port: u16,
    pub proc: Proc,
}

impl Cardguard {
    pub fn start(dir: &TestDir, upstream: &str, extra: &[&str]) -> Cardguard {
        let mut args = vec!["--upstream", upstream];
        args.extend_from_slice(extra);
        Self::start_args(dir, &args)
    }

    /// `cardguard serve --listen <free port>` with exactly `args` (e.g. a config file listing
    /// several upstreams, which `--upstream` would contradict).
    pub fn start_args(dir: &TestDir, args: &[&str]) -> Cardguard {
        let (port, proc) = start_on_free_port(
            |port| {
                let mut cmd = Command::new(cardguard_bin());
                cmd.arg("serve")
                    .arg("--listen")
                    .arg(format!("127.0.0.1:{port}"))
                    .args(args)
                    .env("RUST_BACKTRACE", "1")
                    .current_dir(dir.path());
                Proc::spawn("cardguard", cmd, dir.join(&format!("cardguard-{port}.log")))
            },
            |port| format!("http://127.0.0.1:{port}/-/ready"),
            Duration::from_secs(20),
        );
        Cardguard { port, proc }
    }
    /// `cardguard serve` on `port` with `args`: a restart where the senders keep the URL they
    /// have. Waits for `/-/ready`.
    pub fn start_on_port(dir: &TestDir, port: u16, args: &[&str]) -> Cardguard {
        let mut cmd = Command::new(cardguard_bin());
        cmd.arg("serve")
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .args(args)
            .env("RUST_BACKTRACE", "1")
            .current_dir(dir.path());
        let mut proc = Proc::spawn(
            "cardguard",
            cmd,
            dir.join(&format!("cardguard-{port}-{}.log", super::now_ms())),
        );
        super::wait_http_ok(
            &mut proc,
            &format!("http://127.0.0.1:{port}/-/ready"),
            Duration::from_secs(20),
        );
        Cardguard { port, proc }
    }

    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
    pub fn write_url(&self) -> String {
        format!("{}/api/v1/write", self.base())
    }
    pub fn metrics_text(&self) -> String {
        match http_get(&format!("{}/metrics", self.base())) {
            Ok(r) if r.status == 200 => r.text(),
            Ok(r) => panic!("cardguard /metrics answered {}: {}", r.status, r.text()),
            Err(e) => panic!("cardguard /metrics: {e}"),
        }
    }

    /// `POST /-/reload`.
    pub fn reload_http(&self) -> Result<Resp, String> {
        http_post(&format!("{}/-/reload", self.base()), &[], b"")
    }

    /// Send SIGHUP (by pid, through `kill`).
    pub fn sighup(&self) {
        let pid = self.proc.pid();
        assert!(pid != 0, "cardguard has no pid");
        let st = Command::new("kill")
            .args(["-s", "HUP", &pid.to_string()])
            .status()
            .expect("run kill");
        assert!(st.success(), "kill -HUP {pid}: {st}");
    }

    /// `GET /api/v1/cardinality`, parsed.
    pub fn cardinality(&self) -> Result<Value, String> {
        let r = http_get(&format!("{}/api/v1/cardinality", self.base()))?;
        if r.status != 200 {
            return Err(format!(
                "/api/v1/cardinality answered {}: {}",
                r.status,
                r.text()
            ));
        }
        serde_json::from_slice(&r.body)
            .map_err(|e| format!("/api/v1/cardinality: {e}: {}", r.text()))
    }
}

/// cardguard's own metric names, in one place because they are still in flux.
pub mod cg_metrics {
    /// Samples received from senders (sum over all label sets).
    pub const SAMPLES_RECEIVED: &str = "cardguard_samples_received_total";

    /// Assert that cardguard counted received samples; returns the count.
    pub fn assert_received_samples(text: &str) -> f64 {
        let v = crate::common::metric_sum(text, SAMPLES_RECEIVED);
        match v {
            Some(v) if v > 0.0 => v,
            _ => {
                let names: std::collections::BTreeSet<&str> = text
                    .lines()
                    .filter(|l| !l.starts_with('#') && !l.is_empty())
                    .map(|l| l.split(['{', ' ']).next().unwrap_or(""))
                    .collect();
                panic!(
                    "cardguard /metrics: expected {SAMPLES_RECEIVED} > 0, found {v:?}; \
                     metric names present: {names:?}"
                )
            }
        }
    }
}

/// A test that checks cardguard itself has nothing to check when `CARDGUARD_E2E_DIRECT=1`
/// points Prometheus straight at VictoriaMetrics; it says so and returns true.
pub fn skip_in_direct_mode(test: &str) -> bool {
    if direct_mode() {
        eprintln!(
            "[{test}] SKIPPED: CARDGUARD_E2E_DIRECT=1 bypasses cardguard, which this test checks"
        );
        return true;
    }
    false
}

/// The row of `service` in a /api/v1/cardinality answer.
pub fn service_row<'a>(card: &'a Value, service: &str) -> Option<&'a Value> {
    card.get("services")?
        .as_array()?
        .iter()
        .find(|r| r.get("service").and_then(Value::as_str) == Some(service))
}

/// A number field of a JSON object.
pub fn num(row: &Value, key: &str) -> Option<f64> {
    row.get(key).and_then(Value::as_f64)
}
