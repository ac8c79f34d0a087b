//! The shutdown sequence of `cardguard serve`, on the real binary: on SIGTERM `/-/ready`
//! answers 503 at once while writes are still served for `server.shutdown_drain_delay`, then
//! the listener closes, in-flight requests finish (acknowledged), and the process exits 0. A
//! second signal exits at once.
//!
//! The upstream is the in-process recording sink, answering slowly so that requests are in
//! flight when the signal arrives.

mod common;

use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use common::*;

fn signal(proc: &Proc, sig: &str) {
    let st = Command::new("kill")
        .args(["-s", sig, &proc.pid().to_string()])
        .status()
        .expect("run kill");
    assert!(st.success(), "kill -{sig}: {st}");
}

fn start(dir: &TestDir, upstream: &Sink, drain: &str) -> Cardguard {
    let config = dir.join("cardguard.yml");
    std::fs::write(
        &config,
        format!(
            "upstream:\n  url: {}\nserver:\n  shutdown_drain_delay: {drain}\n  \
             shutdown_grace_period: 20s\n",
            upstream.write_url()
        ),
    )
    .unwrap();
    Cardguard::start_args(dir, &["--config", config.to_str().unwrap()])
}

fn write_body(i: u32) -> Vec<u8> {
    rw::body(&[rw::Series::new(
        "shutdown_probe",
        &[("job", "probe"), ("i", &i.to_string())],
        1.0,
        now_ms(),
    )])
}

fn wait_exit(proc: &mut Proc, timeout: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(st) = proc.exited() {
            return st;
        }
        assert!(
            Instant::now() < deadline,
            "cardguard still running {timeout:?} after the signal; log:\n{}",
            proc.log_tail(30)
        );
        thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn sigterm_drains_finishes_in_flight_requests_and_exits_0() {
    let dir = TestDir::new("shutdown-drain");
    let upstream = fake_upstream();
    upstream.answer(Answer::status(204).with_delay(Duration::from_secs(3)));
    let mut cg = start(&dir, &upstream, "2s");
    let url = cg.write_url();

    // A write in flight (held by the slow upstream) when the signal arrives.
    let u = url.clone();
    let first = thread::spawn(move || post_remote_write(&u, &write_body(1)));
    thread::sleep(Duration::from_millis(300));
    let signalled = Instant::now();
    signal(&cg.proc, "TERM");

    // Not ready at once...
    poll_until(
        "/-/ready to answer 503 after SIGTERM",
        Duration::from_secs(1),
        Duration::from_millis(20),
        || match http_get(&format!("{}/-/ready", cg.base())) {
            Ok(r) if r.status == 503 => Ok(()),
            Ok(r) => Err(format!("status {}", r.status)),
            Err(e) => Err(e),
        },
    );
    // ...while writes are still taken during the drain delay.
    let u = url.clone();
    let second = thread::spawn(move || post_remote_write(&u, &write_body(2)));
    thread::sleep(Duration::from_millis(200));
    assert!(
        signalled.elapsed() < Duration::from_secs(2),
        "the drain check came too late to mean anything"
    );

    // After the drain delay the listener is closed.
    poll_until(
        "the listener to close after server.shutdown_drain_delay",
        Duration::from_secs(4),
        Duration::from_millis(50),
        || match std::net::TcpStream::connect(cg.addr()) {
            Err(_) => Ok(()),
            Ok(_) => Err("still accepting".to_string()),
        },
    );
    assert!(
        signalled.elapsed() >= Duration::from_millis(1900),
        "stopped accepting {:?} after SIGTERM, before the 2s drain delay",
        signalled.elapsed()
    );

    // Both writes finished and were acknowledged: the upstream held them.
    for (n, t) in [(1, first), (2, second)] {
        let r = t
            .join()
            .unwrap()
            .unwrap_or_else(|e| panic!("write {n}: {e}"));
        assert!(
            (200..300).contains(&r.status),
            "write {n} in flight at shutdown answered {}: {}",
            r.status,
            r.text()
        );
    }
    assert_eq!(upstream.samples(), 2);

    let st = wait_exit(&mut cg.proc, Duration::from_secs(20));
    assert_eq!(
        st.code(),
        Some(0),
        "exit status {st}; log:\n{}",
        cg.proc.log_tail(30)
    );
    let log = cg.proc.log_text();
    assert!(log.contains("SIGTERM received"), "{log}");
    assert!(log.contains("cardguard stopped"), "{log}");
}

#[test]
fn a_second_signal_exits_at_once() {
    let dir = TestDir::new("shutdown-second");
    let upstream = fake_upstream();
    let mut cg = start(&dir, &upstream, "60s");
    signal(&cg.proc, "TERM");
    poll_until(
        "/-/ready to answer 503 after SIGTERM",
        Duration::from_secs(2),
        Duration::from_millis(20),
        || match http_get(&format!("{}/-/ready", cg.base())) {
            Ok(r) if r.status == 503 => Ok(()),
            Ok(r) => Err(format!("status {}", r.status)),
            Err(e) => Err(e),
        },
    );
    let t = Instant::now();
    signal(&cg.proc, "INT");
    let st = wait_exit(&mut cg.proc, Duration::from_secs(2));
    eprintln!(
        "[shutdown] exited {:?} after the second signal: {st}",
        t.elapsed()
    );
    // Not the orderly 0: the drain and the grace period were cut short.
    assert_eq!(st.code(), Some(1), "log:\n{}", cg.proc.log_tail(20));
    assert!(cg
        .proc
        .log_text()
        .contains("SIGINT received during shutdown"));
}
