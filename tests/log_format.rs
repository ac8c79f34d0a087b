//! The built `cardguard` binary's log lines when stderr is not a terminal (a pipe here, a file
//! or journald in production): no ANSI escapes in any format, `--log.format=json` lines that
//! parse as JSON objects with `time`, `level`, `msg` and the event's fields, and
//! `--log.format=logfmt` lines in logfmt, as Prometheus writes them.

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// `cardguard serve` on an ephemeral loopback port with `args` added, stopped with SIGTERM
/// once it logged that it serves; returns everything it wrote on stderr.
fn serve_logs(args: &[&str], env: &[(&str, &str)]) -> String {
    let mut child = Command::new(env!("CARGO_BIN_EXE_cardguard"))
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args(["--upstream", "http://127.0.0.1:9/api/v1/write"])
        .args(args)
        .envs(env.iter().copied())
        .env_remove("CARDGUARD_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start cardguard");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut r = BufReader::new(stderr);
        let mut all = Vec::new();
        let mut line = Vec::new();
        while r.read_until(b'\n', &mut line).unwrap_or(0) > 0 {
            if String::from_utf8_lossy(&line).contains("cardguard serving") {
                let _ = tx.send(());
            }
            all.append(&mut line);
        }
        let _ = r.read_to_end(&mut all);
        all
    });
    let served = rx.recv_timeout(Duration::from_secs(20)).is_ok();
    let killed = Command::new("kill")
        .args(["-s", "TERM", &child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(killed.success());
    let status = child.wait().unwrap();
    let out = reader.join().unwrap();
    let text = String::from_utf8(out).expect("log lines are UTF-8");
    assert!(served, "cardguard did not log that it serves:\n{text}");
    // The SIGTERM handler is installed before `cardguard serving` is logged (it once came
    // after, and a SIGTERM sent on that line killed the process): an orderly exit, always.
    assert!(status.success(), "cardguard exited {status}:\n{text}");
    text
}

fn assert_no_escapes(text: &str) {
    assert!(
        !text.contains('\u{1b}'),
        "ANSI escapes in logs written to a pipe:\n{text:?}"
    );
}

#[test]
fn text_logs_to_a_pipe_have_no_colors() {
    let text = serve_logs(&[], &[]);
    assert_no_escapes(&text);
    let line = text
        .lines()
        .find(|l| l.contains("cardguard serving"))
        .unwrap();
    assert!(line.contains(" INFO "), "{line}");
    assert!(line.contains("listen=127.0.0.1:"), "{line}");
}

#[test]
fn json_logs_are_one_object_per_line() {
    let text = serve_logs(&["--log.format=json"], &[]);
    assert_no_escapes(&text);
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
        .collect();
    assert!(!lines.is_empty(), "{text}");
    for l in &lines {
        for key in ["time", "level", "msg"] {
            assert!(l[key].is_string(), "no {key} in {l}");
        }
    }
    let serving = lines
        .iter()
        .find(|l| l["msg"] == "cardguard serving")
        .unwrap();
    assert_eq!(serving["level"], "info");
    assert!(serving["listen"]
        .as_str()
        .is_some_and(|a| a.starts_with("127.0.0.1:")));
    assert_eq!(serving["upstream"], "http://127.0.0.1:9/api/v1/write");
}

#[test]
fn logfmt_logs_as_prometheus_writes_them() {
    // From the environment too, as CARDGUARD_LOG sets the level.
    let text = serve_logs(&[], &[("CARDGUARD_LOG_FORMAT", "logfmt")]);
    assert_no_escapes(&text);
    for l in text.lines() {
        assert!(l.starts_with("time="), "{l}");
        assert!(l.contains(" level="), "{l}");
        assert!(l.contains(" msg="), "{l}");
    }
    let serving = text
        .lines()
        .find(|l| l.contains("cardguard serving"))
        .unwrap();
    assert!(
        serving.contains(" level=info msg=\"cardguard serving\" listen=127.0.0.1:"),
        "{serving}"
    );
    assert!(
        serving.ends_with(" upstream=http://127.0.0.1:9/api/v1/write"),
        "{serving}"
    );
}

#[test]
fn an_unknown_log_format_is_refused() {
    let out = Command::new(env!("CARGO_BIN_EXE_cardguard"))
        .args(["--log.format=pretty", "check", "nonexistent.yml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("text, logfmt, json"), "{err}");
}
