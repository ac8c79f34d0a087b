//! Prometheus 2.42, the reference sender and the reference TSDB: [`PromConfig`] renders its
//! config (scrape jobs, remote_write queue settings), [`Prom`] runs it and reads its raw samples
//! back, and the Prometheus HTTP API answers (which VictoriaMetrics speaks too) are decoded with
//! serde into label sets and samples.

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use super::{
    fmt_ms, http_get, http_get_query, metric_sum, now_ms, parse_prom_float, peer_bin,
    start_on_free_port, Labels, Proc, SeriesMap, TestDir,
};

#[derive(Debug, Clone)]
pub struct PromConfig {
    pub remote_write_url: String,
    /// (job name, host:port) scraped every second in addition to Prometheus itself.
    pub jobs: Vec<(String, String)>,
    pub batch_send_deadline: String,
    pub min_backoff: String,
    pub max_backoff: String,
    pub max_samples_per_send: Option<u32>,
    /// More `remote_write:` entries, as YAML list items indented by two spaces.
    pub extra_remote_write_yaml: String,
    /// More keys of the first `remote_write:` entry (`basic_auth:`, `tls_config:`...),
    /// indented by four spaces.
    pub remote_write_settings: String,
    /// Scrape interval of the test jobs (default 1s).
    pub scrape_interval: String,
    /// More command-line flags (`--enable-feature=native-histograms`).
    pub extra_args: Vec<String>,
}

impl PromConfig {
    pub fn new(remote_write_url: &str) -> PromConfig {
        PromConfig {
            remote_write_url: remote_write_url.to_string(),
            jobs: Vec::new(),
            batch_send_deadline: "1s".into(),
            min_backoff: "100ms".into(),
            max_backoff: "1s".into(),
            max_samples_per_send: None,
            extra_remote_write_yaml: String::new(),
            remote_write_settings: String::new(),
            scrape_interval: "1s".into(),
            extra_args: Vec::new(),
        }
    }
    pub fn job(mut self, name: &str, addr: &str) -> PromConfig {
        self.jobs.push((name.to_string(), addr.to_string()));
        self
    }

    fn render(&self, self_addr: &str) -> String {
        let mut y = String::new();
        y.push_str(&format!(
            "global:\n  scrape_interval: {0}\n  scrape_timeout: {0}\n  evaluation_interval: 1s\n",
            self.scrape_interval
        ));
        y.push_str("scrape_configs:\n");
        y.push_str(&format!(
            "  - job_name: prometheus\n    static_configs:\n      - targets: ['{self_addr}']\n"
        ));
        for (job, addr) in &self.jobs {
            y.push_str(&format!(
                "  - job_name: {job}\n    static_configs:\n      - targets: ['{addr}']\n"
            ));
        }
        y.push_str(&format!(
            "remote_write:\n  - url: {}\n    queue_config:\n      batch_send_deadline: {}\n      \
             min_backoff: {}\n      max_backoff: {}\n",
            self.remote_write_url, self.batch_send_deadline, self.min_backoff, self.max_backoff
        ));
        if let Some(n) = self.max_samples_per_send {
            y.push_str(&format!("      max_samples_per_send: {n}\n"));
        }
        y.push_str(&self.remote_write_settings);
        y.push_str(&self.extra_remote_write_yaml);
        y
    }
}

pub struct Prom {
    pub port: u16,
    pub proc: Proc,
    pub started_ms: i64,
}

impl Prom {
    pub fn start(dir: &TestDir, cfg: &PromConfig) -> Prom {
        let started_ms = now_ms();
        let (port, proc) = start_on_free_port(
            |port| {
                let addr = format!("127.0.0.1:{port}");
                let cfg_path = dir.join("prometheus.yml");
                std::fs::write(&cfg_path, cfg.render(&addr)).unwrap();
                let data = dir.join("prom-data");
                let _ = std::fs::remove_dir_all(&data); // a retried start begins afresh
                let mut cmd = Command::new(peer_bin("prometheus"));
                cmd.arg(format!("--config.file={}", cfg_path.display()))
                    .arg(format!("--storage.tsdb.path={}", data.display()))
                    .arg(format!("--web.listen-address={addr}"))
                    .arg("--log.level=info")
                    .args(&cfg.extra_args)
                    .current_dir(dir.path());
                Proc::spawn("prometheus", cmd, dir.join("prometheus.log"))
            },
            |port| format!("http://127.0.0.1:{port}/-/ready"),
            Duration::from_secs(30),
        );
        Prom {
            port,
            proc,
            started_ms,
        }
    }

    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The `data` of Prometheus's answer to the instant query `expr` at `at_ms`, or why there
    /// is none (a transport error, or a status other than success, with the body).
    pub fn query_data(&self, expr: &str, at_ms: i64) -> Result<serde_json::Value, String> {
        let r = http_get_query(
            &format!("{}/api/v1/query", self.base()),
            &[("query", expr), ("time", &fmt_ms(at_ms))],
        )?;
        let mut j: serde_json::Value = serde_json::from_slice(&r.body)
            .map_err(|e| format!("prom query {expr}: {e}: {}", r.text()))?;
        if j.get("status").and_then(|s| s.as_str()) != Some("success") {
            return Err(format!("prom query {expr} @ {at_ms}: {}", r.text()));
        }
        Ok(j["data"].take())
    }

    /// Raw samples from Prometheus's own TSDB: `selector[range_s]` evaluated at `at_ms`
    /// (2.42: closed window [at-range, at]; stale markers are not returned).
    pub fn raw_samples(
        &self,
        selector: &str,
        at_ms: i64,
        range_s: u64,
    ) -> Result<SeriesMap, String> {
        let q = format!("{selector}[{range_s}s]");
        let t = fmt_ms(at_ms);
        let r = http_get_query(
            &format!("{}/api/v1/query", self.base()),
            &[("query", &q), ("time", &t)],
        )?;
        let answer: ApiAnswer<QueryData> = serde_json::from_slice(&r.body)
            .map_err(|e| format!("prom query: {e}: {}", r.text()))?;
        let data = match answer {
            ApiAnswer {
                status,
                data: Some(data),
            } if status == "success" => data,
            _ => return Err(format!("prom query {q}: {}", r.text())),
        };
        let mut out = SeriesMap::new();
        for s in data.result {
            let mut samples = Vec::new();
            for (t, v) in s.values {
                samples.push(((t * 1000.0).round() as i64, parse_prom_float(&v)?));
            }
            out.insert(s.metric, samples);
        }
        Ok(out)
    }

    pub fn series(
        &self,
        selector: &str,
        start_ms: i64,
        end_ms: i64,
    ) -> Result<BTreeSet<Labels>, String> {
        api_series(&self.base(), selector, start_ms, end_ms)
    }

    /// Prometheus's own /metrics, for remote-storage counters.
    pub fn metrics_text(&self) -> String {
        http_get(&format!("{}/metrics", self.base()))
            .map(|r| r.text())
            .unwrap_or_default()
    }
}

/// The remote-storage counters of a Prometheus /metrics text, for diagnostics.
pub fn remote_storage_summary(text: &str) -> String {
    [
        "prometheus_remote_storage_samples_total",
        "prometheus_remote_storage_samples_retried_total",
        "prometheus_remote_storage_samples_failed_total",
        "prometheus_remote_storage_samples_dropped_total",
        "prometheus_remote_storage_samples_pending",
    ]
    .iter()
    .map(|n| {
        format!(
            "{}={:?}",
            n.trim_start_matches("prometheus_remote_storage_"),
            metric_sum(text, n)
        )
    })
    .collect::<Vec<_>>()
    .join(" ")
}

/// The envelope of every Prometheus HTTP API answer (VictoriaMetrics answers the same).
#[derive(Deserialize)]
struct ApiAnswer<T> {
    status: String,
    data: Option<T>,
}

/// `data` of a range-vector `/api/v1/query`.
#[derive(Deserialize)]
struct QueryData {
    result: Vec<RangeSeries>,
}

#[derive(Deserialize)]
struct RangeSeries {
    metric: Labels,
    /// (seconds, value as Prometheus formats it).
    values: Vec<(f64, String)>,
}

/// `/api/v1/series` label sets of Prometheus or VictoriaMetrics over [start, end] ms.
pub fn api_series(
    base: &str,
    selector: &str,
    start_ms: i64,
    end_ms: i64,
) -> Result<BTreeSet<Labels>, String> {
    let (s, e) = (fmt_ms(start_ms), fmt_ms(end_ms));
    let r = http_get_query(
        &format!("{base}/api/v1/series"),
        &[("match[]", selector), ("start", &s), ("end", &e)],
    )?;
    let answer: ApiAnswer<Vec<Labels>> =
        serde_json::from_slice(&r.body).map_err(|e| format!("{base} series: {e}: {}", r.text()))?;
    match answer {
        ApiAnswer {
            status,
            data: Some(data),
        } if status == "success" => Ok(data.into_iter().collect()),
        _ => Err(format!("{base} series {selector}: {}", r.text())),
    }
}

/// A JSON object of label names to values (`metric` in a query answer).
pub fn json_labels(j: &Value) -> Result<Labels, String> {
    serde_json::from_value(j.clone()).map_err(|e| format!("labels: {e}: {j}"))
}
