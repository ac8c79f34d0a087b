//! End to end: the aggregation tier (`forward_inputs: false`) keeps its recorded results
//! through an upstream outage and a restart. Prometheus scrapes a target and writes through
//! cardguard, which withholds the raw series and sends only what its rule records to
//! VictoriaMetrics. VictoriaMetrics is stopped for 60 s; halfway through, cardguard gets
//! SIGTERM and is started again on the same `storage.path`. Once VictoriaMetrics is back,
//! every evaluation cardguard made is in VictoriaMetrics exactly once: the recorded series has
//! one sample per rule interval with no gap (but the few ticks while cardguard itself was
//! down) and no timestamp twice.
//!
//! Needs the peers from `scripts/fetch-peers.sh`.

mod common;

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::*;

const OUTAGE: Duration = Duration::from_secs(60);
const INTERVAL_MS: i64 = 2_000;
const OFFSET_MS: i64 = 3_000;
const RECORD: &str = "job:cg_q_requests:sum";

const RULES: &str = "groups:
  - name: tier
    interval: 2s
    forward_inputs: false
    rules:
      - record: job:cg_q_requests:sum
        expr: sum by (job) (cg_q_requests_total)
";

fn exposition(n: u64) -> String {
    format!(
        "cg_q_requests_total{{pod=\"a\"}} {}\ncg_q_requests_total{{pod=\"b\"}} {}\n",
        1000 + n,
        2000 + 3 * n
    )
}

fn spawn_cardguard(dir: &TestDir, port: u16, run: u32) -> Proc {
    let mut cmd = Command::new(cardguard_bin());
    cmd.arg("serve")
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--config")
        .arg(dir.join("cardguard.yml"))
        .env("RUST_BACKTRACE", "1")
        .current_dir(dir.path());
    Proc::spawn(
        "cardguard",
        cmd,
        dir.join(&format!("cardguard-run{run}.log")),
    )
}

/// The recorded series' samples in VictoriaMetrics: timestamp → how many times it is there.
fn recorded_in_vm(vm: &Vm, from: i64) -> BTreeMap<i64, usize> {
    let series = vm
        .export(RECORD, from, now_ms() + 60_000)
        .unwrap_or_else(|e| panic!("VictoriaMetrics export: {e}"));
    assert!(
        series.len() <= 1,
        "one recorded series expected: {series:?}"
    );
    let mut out = BTreeMap::new();
    for samples in series.values() {
        for (t, _) in samples {
            *out.entry(*t).or_insert(0) += 1;
        }
    }
    out
}

#[test]
fn recorded_points_survive_an_outage_and_a_restart_exactly_once() {
    peer_bin("prometheus");
    peer_bin("victoria-metrics");
    let t0 = Instant::now();
    let dir = TestDir::new("queue-restart");
    let mut vm = Vm::start(&dir);
    std::fs::write(dir.join("rules.yml"), RULES).unwrap();
    std::fs::write(
        dir.join("cardguard.yml"),
        format!(
            "upstream:\n  url: {}\nrule_files: [rules.yml]\nrules:\n  query_offset: 3s\n\
             storage:\n  path: cg-data\nserver:\n  shutdown_drain_delay: 1s\n",
            vm.write_url()
        ),
    )
    .unwrap();
    let target = TestTarget::start_with(Arc::new(exposition));
    let (port, proc) = start_on_free_port(
        |port| spawn_cardguard(&dir, port, 1),
        |port| format!("http://127.0.0.1:{port}/-/ready"),
        Duration::from_secs(20),
    );
    let mut cg = Cardguard { port, proc };
    // Only the rule's inputs go to cardguard, so every write is one the tier withholds and
    // acknowledges while VictoriaMetrics is down (Prometheus's own series would be 503ed).
    let mut pc = PromConfig::new(&cg.write_url()).job("target", &target.addr());
    pc.extra_remote_write_yaml =
        "    write_relabel_configs:\n      - source_labels: [__name__]\n        \
                                  regex: cg_q_requests_total\n        action: keep\n"
            .into();
    let mut prom = Prom::start(&dir, &pc);
    let from = now_ms() - 60_000;

    poll_until(
        "VictoriaMetrics to hold 3 recorded points",
        Duration::from_secs(60),
        Duration::from_millis(500),
        || {
            cg.proc.assert_running();
            prom.proc.assert_running();
            match recorded_in_vm(&vm, from).len() {
                n if n >= 3 => Ok(()),
                n => Err(format!("{n} so far")),
            }
        },
    );
    eprintln!("[queue] recorded points flowing after {:?}", t0.elapsed());

    // --- outage, with a restart in the middle ---------------------------------------------
    let t_down = now_ms();
    let took = vm.stop();
    let down = Instant::now();
    eprintln!("[queue] VictoriaMetrics stopped ({took:?})");
    thread::sleep(OUTAGE / 2);
    let text = cg.metrics_text();
    let queued = metric_sum(&text, "cardguard_queue_records").unwrap_or(0.0);
    assert!(queued > 0.0, "nothing queued during the outage:\n{text}");

    let t_term = now_ms();
    cg.proc.stop("TERM", Duration::from_secs(30));
    let log1 = std::fs::read_to_string(dir.join("cardguard-run1.log")).unwrap();
    assert!(log1.contains("durable queue synced"), "{log1}");
    assert!(log1.contains("cardguard stopped"), "{log1}");
    cg.proc = spawn_cardguard(&dir, port, 2);
    wait_http_ok(
        &mut cg.proc,
        &format!("http://127.0.0.1:{port}/-/ready"),
        Duration::from_secs(20),
    );
    let t_ready = now_ms();
    eprintln!(
        "[queue] cardguard restarted during the outage in {} ms",
        t_ready - t_term
    );
    let log2 = cg.proc.log_text();
    assert!(
        log2.contains("resending what the upstream had not acknowledged"),
        "{log2}"
    );
    while down.elapsed() < OUTAGE.saturating_sub(took) {
        cg.proc.assert_running();
        prom.proc.assert_running();
        thread::sleep(Duration::from_millis(500));
    }

    // --- recovery ---------------------------------------------------------------------------
    vm.restart();
    let t_up = now_ms();
    eprintln!("[queue] VictoriaMetrics back after {} ms", t_up - t_down);
    poll_until(
        "cardguard's durable queue to empty into VictoriaMetrics",
        Duration::from_secs(60),
        Duration::from_millis(500),
        || {
            cg.proc.assert_running();
            let text = cg.metrics_text();
            match metric_sum(&text, "cardguard_queue_records") {
                Some(0.0) => Ok(()),
                other => Err(format!("cardguard_queue_records {other:?}")),
            }
        },
    );
    // A few more evaluations after the queue emptied, so the tail is checked too.
    thread::sleep(Duration::from_secs(5));
    let end = now_ms() - OFFSET_MS - INTERVAL_MS;
    let got = recorded_in_vm(&vm, from);

    let twice: Vec<_> = got.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        twice.is_empty(),
        "recorded points in VictoriaMetrics more than once: {twice:?}"
    );

    // Every tick from the first recorded point to `end`, but those cardguard could not
    // evaluate while restarting: down from SIGTERM, and until its buffers held the inputs again.
    let first = *got.keys().next().expect("recorded points");
    let restart = (t_term - OFFSET_MS - INTERVAL_MS)..(t_ready + 4 * INTERVAL_MS);
    let mut missing = Vec::new();
    let mut t = first;
    while t <= end {
        if !got.contains_key(&t) && !restart.contains(&t) {
            missing.push(fmt_ms(t));
        }
        t += INTERVAL_MS;
    }
    let in_outage = got.keys().filter(|t| (t_down..t_up).contains(*t)).count();
    eprintln!(
        "[queue] {} recorded points in VictoriaMetrics, {in_outage} of them recorded during the \
         outage; restart window {}..{}",
        got.len(),
        fmt_ms(restart.start),
        fmt_ms(restart.end)
    );
    assert!(
        missing.is_empty(),
        "recorded points missing from VictoriaMetrics (outage {}..{}, restart {}..{}): {missing:?}",
        fmt_ms(t_down),
        fmt_ms(t_up),
        fmt_ms(t_term),
        fmt_ms(t_ready)
    );
    // At least most of the 60 s of outage at one point per 2 s.
    assert!(
        in_outage >= 20,
        "{in_outage} points recorded during the outage"
    );
    assert!(
        got.keys().all(|t| (t - first) % INTERVAL_MS == 0),
        "recorded points off the rule's ticks: {:?}",
        got.keys().map(|t| fmt_ms(*t)).collect::<Vec<_>>()
    );
}
