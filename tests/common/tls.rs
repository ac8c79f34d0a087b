//! An upstream behind TLS and basic auth: certificates the test makes (a CA and a server
//! certificate for 127.0.0.1, with rcgen), and VictoriaMetrics single-node serving HTTPS
//! (`-tls`) with `-httpAuth.username/password`, restartable on the same port and data with
//! another password, and read back over HTTPS with its CA and credentials.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;

use super::{fmt_ms, free_port, peer_bin, poll_until, Labels, Proc, SeriesMap, TestDir};

/// A CA and a server certificate signed by it, written as PEM files into the test directory.
pub struct TestCa {
    pub ca_file: PathBuf,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    ca_pem: String,
}

impl TestCa {
    /// `name` keeps two CAs of one test apart (`ca-<name>.pem`, ...).
    pub fn new(dir: &TestDir, name: &str) -> TestCa {
        let ca_key = rcgen::KeyPair::generate().expect("CA key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.distinguished_name.push(
            rcgen::DnType::CommonName,
            format!("cardguard test CA {name}"),
        );
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        let ca = rcgen::CertifiedIssuer::self_signed(params, ca_key).expect("CA certificate");
        let key = rcgen::KeyPair::generate().expect("server key");
        let server = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
            .expect("server params")
            .signed_by(&key, &ca)
            .expect("server certificate");
        let write = |file: &str, pem: &str| {
            let p = dir.join(&format!("{file}-{name}.pem"));
            std::fs::write(&p, pem).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
            p
        };
        TestCa {
            ca_file: write("ca", &ca.pem()),
            cert_file: write("server", &server.pem()),
            key_file: write("server-key", &key.serialize_pem()),
            ca_pem: ca.pem(),
        }
    }

    /// A blocking client that trusts this CA only and sends `user:password` as basic auth.
    pub fn agent(&self) -> ureq::Agent {
        let ca = ureq::tls::Certificate::from_pem(self.ca_pem.as_bytes()).expect("CA PEM");
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .proxy(None)
            .timeout_global(Some(Duration::from_secs(30)))
            .tls_config(
                ureq::tls::TlsConfig::builder()
                    .root_certs(ureq::tls::RootCerts::Specific(Arc::new(vec![ca])))
                    .build(),
            )
            .build()
            .into()
    }
}

/// VictoriaMetrics over HTTPS with basic auth.
pub struct SecureVm {
    pub port: u16,
    pub user: String,
    pub password: String,
    data_dir: PathBuf,
    log_dir: PathBuf,
    cert_file: PathBuf,
    key_file: PathBuf,
    agent: ureq::Agent,
    proc: Option<Proc>,
    starts: u32,
}

impl SecureVm {
    pub fn start(dir: &TestDir, ca: &TestCa, user: &str, password: &str) -> SecureVm {
        let mut vm = SecureVm {
            port: 0,
            user: user.into(),
            password: password.into(),
            data_dir: dir.join("vm-data"),
            log_dir: dir.path().to_path_buf(),
            cert_file: ca.cert_file.clone(),
            key_file: ca.key_file.clone(),
            agent: ca.agent(),
            proc: None,
            starts: 0,
        };
        // `free_port` is racy: retry on another port if VictoriaMetrics could not bind it.
        for attempt in 1.. {
            vm.port = free_port();
            match vm.spawn_and_wait() {
                Ok(()) => return vm,
                Err(e) if attempt < 4 && e.contains("address already in use") => continue,
                Err(e) => panic!("{e}"),
            }
        }
        unreachable!()
    }

    fn spawn_and_wait(&mut self) -> Result<(), String> {
        self.starts += 1;
        let mut cmd = Command::new(peer_bin("victoria-metrics"));
        cmd.arg(format!("-httpListenAddr=127.0.0.1:{}", self.port))
            .arg(format!("-storageDataPath={}", self.data_dir.display()))
            .arg("-retentionPeriod=100y")
            .arg("-search.latencyOffset=0s")
            .arg("-search.disableCache")
            .arg("-precisionBits=64")
            .arg("-tls")
            .arg(format!("-tlsCertFile={}", self.cert_file.display()))
            .arg(format!("-tlsKeyFile={}", self.key_file.display()))
            .arg(format!("-httpAuth.username={}", self.user))
            .arg(format!("-httpAuth.password={}", self.password))
            .arg("-loggerLevel=INFO");
        let log = self
            .log_dir
            .join(format!("victoria-metrics-tls-{}.log", self.starts));
        let mut p = Proc::spawn("victoria-metrics", cmd, log);
        let health = format!("{}/health", self.base());
        let started = std::time::Instant::now();
        loop {
            if let Some(st) = p.exited() {
                return Err(format!(
                    "VictoriaMetrics exited ({st}) before serving HTTPS: {}",
                    p.log_tail(20).to_ascii_lowercase()
                ));
            }
            if matches!(self.get(&health), Ok((200, _))) {
                self.proc = Some(p);
                return Ok(());
            }
            if started.elapsed() > Duration::from_secs(30) {
                return Err(format!(
                    "VictoriaMetrics did not answer {health} within 30s: {}",
                    p.log_tail(20)
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn base(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }
    pub fn write_url(&self) -> String {
        format!("{}/api/v1/write", self.base())
    }

    fn get(&self, url: &str) -> Result<(u16, String), String> {
        let auth = base64::engine::general_purpose::STANDARD
            .encode(format!("{}:{}", self.user, self.password));
        let mut r = self
            .agent
            .get(url)
            .header("Authorization", &format!("Basic {auth}"))
            .call()
            .map_err(|e| e.to_string())?;
        let status = r.status().as_u16();
        let body = r
            .body_mut()
            .with_config()
            .limit(256 << 20)
            .read_to_string()
            .map_err(|e| e.to_string())?;
        Ok((status, body))
    }

    /// Graceful stop (SIGINT flushes acknowledged data).
    pub fn stop(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.stop("INT", Duration::from_secs(20));
        }
    }

    /// Start again on the same port and data with another password.
    pub fn restart_with_password(&mut self, password: &str) {
        assert!(self.proc.is_none(), "SecureVm::restart while running");
        self.password = password.into();
        self.spawn_and_wait().unwrap_or_else(|e| panic!("{e}"));
    }

    pub fn assert_running(&mut self) {
        if let Some(p) = self.proc.as_mut() {
            p.assert_running();
        }
    }

    /// `/api/v1/export` over [start, end] ms, as raw samples per series.
    pub fn export(&self, selector: &str, start_ms: i64, end_ms: i64) -> Result<SeriesMap, String> {
        let _ = self.get(&format!("{}/internal/force_flush", self.base()));
        let url = format!(
            "{}/api/v1/export?match[]={}&start={}&end={}",
            self.base(),
            percent(selector),
            fmt_ms(start_ms),
            fmt_ms(end_ms)
        );
        let (status, text) = self.get(&url)?;
        if status != 200 {
            return Err(format!("VM export {selector}: status {status} {text}"));
        }
        let mut out = SeriesMap::new();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            #[derive(serde::Deserialize)]
            struct Line {
                metric: Labels,
                values: Vec<serde_json::Value>,
                timestamps: Vec<i64>,
            }
            let l: Line =
                serde_json::from_str(line).map_err(|e| format!("VM export line {line:?}: {e}"))?;
            let entry = out.entry(l.metric).or_default();
            for (v, t) in l.values.iter().zip(l.timestamps) {
                entry.push((t, v.as_f64().unwrap_or(f64::NAN)));
            }
        }
        for s in out.values_mut() {
            s.sort_by_key(|(t, _)| *t);
        }
        Ok(out)
    }

    /// Wait until VictoriaMetrics holds a sample of `selector` at or after `ts`.
    pub fn wait_reaches(&mut self, selector: &str, from_ms: i64, ts: i64, timeout: Duration) {
        let what = format!(
            "VictoriaMetrics (https) to hold {selector} at or after {}",
            fmt_ms(ts)
        );
        poll_until(&what, timeout, Duration::from_millis(500), || {
            self.assert_running();
            let m = self.export(selector, from_ms, super::now_ms() + 60_000)?;
            match m.values().filter_map(|s| s.last().map(|(t, _)| *t)).max() {
                Some(t) if t >= ts => Ok(()),
                other => Err(format!("newest sample {:?}", other.map(fmt_ms))),
            }
        })
    }
}

/// Enough percent-encoding for a PromQL selector in a query string.
fn percent(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'-' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
