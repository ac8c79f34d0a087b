//! The standard end-to-end stack: a scrape target, Prometheus scraping it and remote-writing
//! through cardguard into VictoriaMetrics (straight into VictoriaMetrics when
//! `CARDGUARD_E2E_DIRECT=1`, a self-test of the harness), and the waits on it.

use std::path::PathBuf;
use std::time::Duration;

use super::{
    direct_mode, fmt_ms, now_ms, peer_bin, poll_until, remote_storage_summary, Cardguard, Prom,
    PromConfig, TestDir, TestTarget, Vm,
};

/// Everything Prometheus and VM need for the e2e tests, with cardguard in between unless
/// `CARDGUARD_E2E_DIRECT=1`. Field order = drop order: Prometheus first, VM last, dir kept last.
pub struct Stack {
    pub prom: Prom,
    pub cardguard: Option<Cardguard>,
    pub target: TestTarget,
    pub vm: Vm,
    pub dir: TestDir,
}

impl Stack {
    /// The standard stack: [`TestTarget::start`] as job `target`, cardguard with `cardguard_args`.
    pub fn start(name: &str, cardguard_args: &[&str]) -> Stack {
        Self::start_with(name, TestTarget::start(), None, cardguard_args)
    }

    /// Like [`Stack::start`], but with the given scrape target (job `target`) and, when
    /// `cardguard_config` is set, a cardguard config file written to [`Stack::config_path`]
    /// and passed as `--config` (before `cardguard_args`). `--listen` and `--upstream` are
    /// passed as flags as in [`Stack::start`], so the file needs neither.
    pub fn start_with(
        name: &str,
        target: TestTarget,
        cardguard_config: Option<&str>,
        cardguard_args: &[&str],
    ) -> Stack {
        // Fail fast (before spawning anything) if a peer is missing.
        peer_bin("prometheus");
        peer_bin("victoria-metrics");
        let dir = TestDir::new(name);
        let vm = Vm::start(&dir);
        let cardguard = if direct_mode() {
            eprintln!(
                "[harness] WARNING: CARDGUARD_E2E_DIRECT=1 — Prometheus writes straight to \
                 VictoriaMetrics; cardguard is NOT under test"
            );
            None
        } else {
            let mut args: Vec<String> = Vec::new();
            if let Some(cfg) = cardguard_config {
                let path = dir.join("cardguard.yml");
                std::fs::write(&path, cfg)
                    .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
                args.push("--config".into());
                args.push(path.display().to_string());
            }
            args.extend(cardguard_args.iter().map(|s| s.to_string()));
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            Some(Cardguard::start(&dir, &vm.write_url(), &args))
        };
        let rw_url = cardguard
            .as_ref()
            .map(|c| c.write_url())
            .unwrap_or_else(|| vm.write_url());
        let prom = Prom::start(
            &dir,
            &PromConfig::new(&rw_url).job("target", &target.addr()),
        );
        Stack {
            prom,
            cardguard,
            target,
            vm,
            dir,
        }
    }

    /// Where [`Stack::start_with`] wrote cardguard's config file.
    pub fn config_path(&self) -> PathBuf {
        self.dir.join("cardguard.yml")
    }

    pub fn target_instance(&self) -> String {
        self.target.addr()
    }

    /// Wait until the target has been scraped `n` times, checking the processes meanwhile.
    pub fn wait_scrapes(&mut self, n: u64, timeout: Duration) {
        let what = format!("Prometheus to scrape the test target {n} times");
        poll_until(&what, timeout, Duration::from_millis(200), || {
            self.assert_running();
            match self.target.scrapes() {
                s if s >= n => Ok(()),
                s => Err(format!("{s} scrapes")),
            }
        })
    }

    /// Panic (with log tails) if Prometheus, VM (when running) or cardguard exited.
    pub fn assert_running(&mut self) {
        self.prom.proc.assert_running();
        self.vm.assert_running();
        if let Some(c) = self.cardguard.as_mut() {
            c.proc.assert_running();
        }
    }

    /// Newest timestamp VM holds for `cg_test_scrapes_total` (None = nothing yet).
    pub fn vm_newest_target_ts(&self) -> Option<i64> {
        let m = self
            .vm
            .export(
                "cg_test_scrapes_total",
                self.prom.started_ms - 60_000,
                now_ms() + 60_000,
            )
            .ok()?;
        m.values().filter_map(|s| s.last().map(|(t, _)| *t)).max()
    }

    /// Wait until VM has a target sample at or after `ts`.
    pub fn wait_vm_reaches(&mut self, ts: i64, timeout: Duration) {
        let what = format!(
            "VictoriaMetrics to hold a target sample at or after {}",
            fmt_ms(ts)
        );
        poll_until(&what, timeout, Duration::from_millis(500), || {
            self.assert_running();
            match self.vm_newest_target_ts() {
                Some(t) if t >= ts => Ok(()),
                other => Err(format!(
                    "newest VM sample {:?}; target scraped {} times; prometheus remote metrics: {}",
                    other.map(fmt_ms),
                    self.target.scrapes(),
                    remote_storage_summary(&self.prom.metrics_text())
                )),
            }
        })
    }
}
