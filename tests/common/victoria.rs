//! VictoriaMetrics single-node, the backend of the end-to-end tests: started on a free port with
//! settings that make just-written samples visible at once and floats lossless, stopped
//! gracefully (SIGINT flushes) and restarted on the same port and data for the outage test, and
//! read back as raw samples through `/api/v1/export`.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use super::{
    api_series, fmt_ms, http_get, http_get_query, peer_bin, start_on_free_port, wait_http_ok,
    Labels, Proc, SeriesMap, TestDir,
};

pub struct Vm {
    pub port: u16,
    pub data_dir: PathBuf,
    log_dir: PathBuf,
    proc: Option<Proc>,
    starts: u32,
}

impl Vm {
    pub fn start(dir: &TestDir) -> Vm {
        let mut vm = Vm {
            port: 0,
            data_dir: dir.join("vm-data"),
            log_dir: dir.path().to_path_buf(),
            proc: None,
            starts: 1,
        };
        let (port, p) = start_on_free_port(
            |port| vm.spawn(port),
            |port| format!("http://127.0.0.1:{port}/health"),
            Duration::from_secs(30),
        );
        vm.port = port;
        vm.proc = Some(p);
        vm
    }

    fn spawn(&self, port: u16) -> Proc {
        let mut cmd = Command::new(peer_bin("victoria-metrics"));
        cmd.arg(format!("-httpListenAddr=127.0.0.1:{port}"))
            .arg(format!("-storageDataPath={}", self.data_dir.display()))
            .arg("-retentionPeriod=100y")
            // Make just-written samples visible to queries at once (default hides the last 30s).
            .arg("-search.latencyOffset=0s")
            // No response cache: the tests re-query the same ranges while data is arriving.
            .arg("-search.disableCache")
            // Lossless floats (the default, stated explicitly because the tests compare exactly).
            .arg("-precisionBits=64")
            .arg("-loggerLevel=INFO");
        let log = self
            .log_dir
            .join(format!("victoria-metrics-{}.log", self.starts));
        Proc::spawn("victoria-metrics", cmd, log)
    }

    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
    pub fn write_url(&self) -> String {
        format!("{}/api/v1/write", self.base())
    }

    /// Graceful stop (SIGINT: VictoriaMetrics flushes acknowledged data to disk first).
    pub fn stop(&mut self) -> Duration {
        match self.proc.take() {
            Some(mut p) => p.stop("INT", Duration::from_secs(20)),
            None => Duration::ZERO,
        }
    }

    /// Start again on the same port and data directory.
    pub fn restart(&mut self) {
        assert!(self.proc.is_none(), "Vm::restart while running");
        self.starts += 1;
        let mut p = self.spawn(self.port);
        wait_http_ok(
            &mut p,
            &format!("{}/health", self.base()),
            Duration::from_secs(30),
        );
        self.proc = Some(p);
    }

    pub fn assert_running(&mut self) {
        if let Some(p) = self.proc.as_mut() {
            p.assert_running();
        }
    }

    /// Make everything ingested so far searchable.
    pub fn force_flush(&self) {
        let _ = http_get(&format!("{}/internal/force_flush", self.base()));
    }

    /// `/api/v1/export` (JSON lines, raw samples) for a selector over [start, end] ms.
    pub fn export(&self, selector: &str, start_ms: i64, end_ms: i64) -> Result<SeriesMap, String> {
        self.force_flush();
        let (s, e) = (fmt_ms(start_ms), fmt_ms(end_ms));
        let r = http_get_query(
            &format!("{}/api/v1/export", self.base()),
            &[("match[]", selector), ("start", &s), ("end", &e)],
        )?;
        if r.status != 200 {
            return Err(format!(
                "VM export {selector}: status {} {}",
                r.status,
                r.text()
            ));
        }
        let mut out = SeriesMap::new();
        for line in r.text().lines().filter(|l| !l.trim().is_empty()) {
            let line: ExportLine =
                serde_json::from_str(line).map_err(|e| format!("VM export line {line:?}: {e}"))?;
            if line.values.len() != line.timestamps.len() {
                return Err(format!(
                    "VM export: {} values vs {} timestamps",
                    line.values.len(),
                    line.timestamps.len()
                ));
            }
            let entry = out.entry(line.metric).or_default();
            for (v, t) in line.values.iter().zip(line.timestamps) {
                // NaN (a stale marker) comes as `null`.
                entry.push((t, v.as_f64().unwrap_or(f64::NAN)));
            }
        }
        for s in out.values_mut() {
            s.sort_by_key(|(t, _)| *t);
        }
        Ok(out)
    }

    /// `/api/v1/series` label sets (VM resolves the time range per day, so this is coarse).
    pub fn series(
        &self,
        selector: &str,
        start_ms: i64,
        end_ms: i64,
    ) -> Result<BTreeSet<Labels>, String> {
        self.force_flush();
        api_series(&self.base(), selector, start_ms, end_ms)
    }
}

/// One line of `/api/v1/export`.
#[derive(Deserialize)]
struct ExportLine {
    metric: Labels,
    values: Vec<Value>,
    timestamps: Vec<i64>,
}
