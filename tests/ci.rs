//! `cardguard ci`, the built binary on the expositions in `testdata/ci/` against
//! `testdata/ci/cardguard.yml`, and against the proxy itself:
//!
//! * `verdicts_and_exit_codes`: a table of cases: a clean service passes; a `user_id` label
//!   fails as unbounded with three examples; a histogram's new buckets × 4 instances past the
//!   budget warn with the arithmetic; `--baseline` reports only the added series; label limits,
//!   forbidden labels, malformed input (exit 3 with the line); json and github formats.
//! * `admits_what_the_proxy_admits`: the series `ci` says the proxy admits (after relabeling,
//!   redaction, the schema and the guard) are the ones an in-process cardguard forwards to its
//!   upstream for the same exposition, label for label, and the routes it names are the ones
//!   the series take.
//! * `live_current_use_from_a_running_cardguard`: `--live` against `cardguard serve`.
//! * `scrapes_a_url_once`: an http:// target instead of a file, OpenMetrics by Content-Type.

mod common;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::Arc;

use ::cardguard::ci::exposition;
use ::cardguard::ci::{self, Options, Source};
use ::cardguard::config::Config;
use ::cardguard::wire::{testgen, Limits, Parsed, Version};
use common::*;
use serde_json::Value as Json;

fn testdata(name: &str) -> String {
    format!("testdata/ci/{name}")
}

fn run_ci(args: &[&str], stdin: Option<&str>) -> Output {
    let mut cmd = Command::new(cardguard_bin());
    cmd.arg("ci")
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"));
    match stdin {
        None => cmd.output().expect("run cardguard ci"),
        Some(text) => {
            use std::io::Write;
            let mut child = cmd
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("run cardguard ci");
            child
                .stdin
                .take()
                .unwrap()
                .write_all(text.as_bytes())
                .unwrap();
            child.wait_with_output().unwrap()
        }
    }
}

struct Case {
    name: &'static str,
    args: &'static [&'static str],
    exit: i32,
    stdout: &'static [&'static str],
    not_stdout: &'static [&'static str],
    stderr: &'static [&'static str],
}

const CFG: &str = "testdata/ci/cardguard.yml";

#[test]
fn verdicts_and_exit_codes() {
    let cases = [
        Case {
            name: "a clean service passes; relabeling and routes are reported",
            args: &["--config", CFG, "--owner", "checkout", "testdata/ci/clean.prom"],
            exit: 0,
            stdout: &[
                "go_gc_duration_seconds: 2 series dropped by relabel_configs",
                "checkout: +12 series, uses 12 of 200",
                "slo_requests_total (2 series): slo-long → long (one sample per 1m); default → short",
                "result: PASS (exit 0)",
            ],
            // One commit hash in build_info is not an unbounded label.
            not_stdout: &["FAIL", "WARN", "revision"],
            stderr: &[],
        },
        Case {
            name: "a user_id label fails as unbounded, with three examples",
            args: &["--config", CFG, "--owner", "cart", "testdata/ci/user_id.prom"],
            exit: 1,
            stdout: &[
                "FAIL  unbounded",
                "cart_items_added_total: label user_id has values that look like identifiers (long numbers)",
                r#"e.g. "10293847", "10293848", "10293911""#,
                "[testdata/ci/user_id.prom:4]",
                "result: FAIL (exit 1)",
            ],
            not_stdout: &["10294020"],
            stderr: &[],
        },
        Case {
            name: "new histogram buckets x 4 instances past the budget warn with the arithmetic",
            args: &[
                "--config",
                CFG,
                "--owner",
                "checkout",
                "--instances",
                "4",
                "--baseline",
                "testdata/ci/histogram-baseline.prom",
                "testdata/ci/histogram-head.prom",
            ],
            exit: 2,
            stdout: &[
                // 4 paths x 6 new buckets x 4 instances = 96; the baseline's 4 x 9 x 4 = 144.
                "WARN  budget        checkout: +96 series (×4 instances), uses 240 of 200: over budget; the proxy would drop new series past it (action drop)",
                "60 series exposed, 240 sent (×4 instances); 96 added over testdata/ci/histogram-baseline.prom",
                "http_request_duration_seconds_bucket (96 series): default → short",
                "result: WARN (exit 2)",
            ],
            not_stdout: &["orders_total", "_sum", "FAIL"],
            stderr: &[],
        },
        Case {
            name: "without a baseline, the main branch's identifier label fails",
            args: &["--config", CFG, "--owner", "shop", "testdata/ci/legacy-head.prom"],
            exit: 1,
            stdout: &["legacy_orders_total: label order_id"],
            not_stdout: &[],
            stderr: &[],
        },
        Case {
            name: "--baseline reports only the added series",
            args: &[
                "--config",
                CFG,
                "--owner",
                "shop",
                "--baseline",
                "testdata/ci/legacy-baseline.prom",
                "testdata/ci/legacy-head.prom",
            ],
            exit: 0,
            stdout: &[
                "2 added over testdata/ci/legacy-baseline.prom",
                "shop: +2 series, uses 5 of 10,000",
                "payment_attempts_total (2 series): default → short",
            ],
            not_stdout: &["legacy_orders_total", "order_id"],
            stderr: &[],
        },
        Case {
            name: "a label past its label_limits fails as unbounded",
            args: &["--config", CFG, "--owner", "billing", "testdata/ci/customers.prom"],
            exit: 1,
            stdout: &[
                r#"invoices_total: label customer: 4 distinct values, over its label_limits of 3 (billing, action drop); e.g. "umbrella", "acme", "globex""#,
            ],
            not_stdout: &[],
            stderr: &[],
        },
        Case {
            name: "OpenMetrics: forbidden labels, redaction, relabeling, SLO routing",
            args: &["--config", CFG, "--owner", "auth", "testdata/ci/redaction.om"],
            exit: 1,
            stdout: &[
                r#"session_seconds: label session_id is forbidden by the schema (forbidden_label_names); the proxy drops these series; e.g. "s-1""#,
                "logins_total: label email has values that look like identifiers (hashes (redaction hides the values",
                "logins_total: 3 series have label values redacted",
                "checkout_latency_seconds_bucket (2 series): slo-long → long (one sample per 1m); default → short",
            ],
            not_stdout: &["alice@example.com", "tok_9f8e7d"],
            stderr: &[],
        },
        Case {
            name: "a malformed exposition is an error with its line, exit 3",
            args: &["--config", CFG, "testdata/ci/malformed.prom"],
            exit: 3,
            stdout: &[],
            not_stdout: &[],
            stderr: &["testdata/ci/malformed.prom:3: unterminated value of label code"],
        },
        Case {
            name: "a missing file is exit 3",
            args: &["--config", CFG, "testdata/ci/nope.prom"],
            exit: 3,
            stdout: &[],
            not_stdout: &[],
            stderr: &["testdata/ci/nope.prom: No such file"],
        },
        Case {
            name: "a usage error is exit 3, not 2 (warn)",
            args: &["--config", CFG, "--instances", "0", "testdata/ci/clean.prom"],
            exit: 3,
            stdout: &[],
            not_stdout: &[],
            stderr: &["--instances"],
        },
        Case {
            name: "github annotations point at the file and line",
            args: &[
                "--config",
                CFG,
                "--owner",
                "cart",
                "--format",
                "github",
                "testdata/ci/user_id.prom",
            ],
            exit: 1,
            stdout: &[
                "::error title=cardguard ci%3A unbounded,file=testdata/ci/user_id.prom,line=4::cart_items_added_total: label user_id",
                "::notice title=cardguard ci%3A budget::cart: +5 series, uses 5 of 10,000",
            ],
            not_stdout: &[],
            stderr: &[],
        },
    ];
    for c in &cases {
        let out = run_ci(c.args, None);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        let ctx = format!("case {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}", c.name);
        assert_eq!(out.status.code(), Some(c.exit), "{ctx}");
        for s in c.stdout {
            assert!(stdout.contains(s), "missing {s:?} in {ctx}");
        }
        for s in c.not_stdout {
            assert!(!stdout.contains(s), "unexpected {s:?} in {ctx}");
        }
        for s in c.stderr {
            assert!(stderr.contains(s), "missing {s:?} on stderr in {ctx}");
        }
        assert!(!stderr.contains("panicked"), "{ctx}");
    }
}

#[test]
fn json_from_stdin() {
    let text = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(testdata("user_id.prom")),
    )
    .unwrap();
    let out = run_ci(
        &["--config", CFG, "--owner", "cart", "--format", "json", "-"],
        Some(&text),
    );
    assert_eq!(out.status.code(), Some(1));
    let v: Json = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["result"], "fail");
    assert_eq!(v["exit_code"], 1);
    let f = &v["findings"][0];
    assert_eq!(f["kind"], "unbounded");
    assert_eq!(f["metric"], "cart_items_added_total");
    assert_eq!(f["label"], "user_id");
    assert_eq!(
        f["examples"],
        serde_json::json!(["10293847", "10293848", "10293911"])
    );
    assert_eq!(f["location"]["file"], "-");
    assert_eq!(v["budgets"][0]["owner"], "cart");
    assert_eq!(v["budgets"][0]["current_from"], "none");
}

fn source(name: &str) -> Source {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(testdata(name));
    let text = std::fs::read_to_string(&path).unwrap();
    Source {
        name: name.into(),
        exposition: exposition::parse(&text).unwrap(),
    }
}

type Series = BTreeSet<Vec<(String, String)>>;

/// The series in every request `sink` received on `path`.
fn received(sink: &Sink, path: &str) -> Series {
    let mut out = Series::new();
    for r in sink.received().iter().filter(|r| r.path == path) {
        let mut buf = Vec::new();
        ::cardguard::wire::snappy::decompress(&r.body, 64 << 20, &mut buf).unwrap();
        let mut p = Parsed::new();
        p.parse(&buf, Version::V1, &Limits::default()).unwrap();
        for s in p.iter(&buf) {
            let mut l: Vec<(String, String)> = s
                .labels()
                .map(|(n, v)| {
                    (
                        String::from_utf8(n.to_vec()).unwrap(),
                        String::from_utf8(v.to_vec()).unwrap(),
                    )
                })
                .collect();
            l.sort();
            out.insert(l);
        }
    }
    out
}

#[test]
fn admits_what_the_proxy_admits() {
    let sink = fake_upstream();
    let yaml = std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(CFG))
        .unwrap()
        .replace(
            "http://127.0.0.1:8428/api/v1/write",
            &format!("http://{}/short", sink.addr()),
        )
        .replace(
            "http://127.0.0.1:8429/api/v1/write",
            &format!("http://{}/long", sink.addr()),
        );
    let mut config = Config::from_yaml(&yaml).unwrap();
    config.server.shutdown_drain_delay = std::time::Duration::ZERO;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let app = rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        ::cardguard::app::App::start_on(config.clone(), Default::default(), listener).unwrap()
    });
    let write_url = format!("http://{}/api/v1/write", app.local_addr());

    // Each case its own owner: the guard's state of one does not touch the others'.
    let cases: &[(&[&str], &str, u32)] = &[
        (&["redaction.om"], "auth", 2),
        (&["customers.prom"], "billing", 1),
        (&["clean.prom", "user_id.prom"], "cart", 3),
        // 240 series against a budget of 200: the guard drops 40, the same 40 in both.
        (&["histogram-head.prom"], "checkout", 4),
    ];
    let now = now_ms();
    for (files, owner, instances) in cases {
        sink.reset();
        let sources: Vec<Source> = files.iter().map(|f| source(f)).collect();
        let opts = Options {
            owner: Some(owner.to_string()),
            instances: *instances,
            now_ms: now,
        };
        let (series, _) = ci::expand(&config, &sources, &opts);
        let staged = ci::stages::run(&config, &series, now);
        let admitted: Series = staged
            .iter()
            .filter(|s| s.fate == ci::stages::Fate::Kept)
            .map(|s| s.labels.clone())
            .collect();
        assert!(
            !admitted.is_empty() && admitted.len() < series.len(),
            "{files:?}: the case must drop something"
        );

        let body = testgen::body_v1(
            series
                .iter()
                .map(|l| {
                    let pairs: Vec<(&str, &str)> =
                        l.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
                    testgen::series(&pairs, &[(1.0, now)])
                })
                .collect(),
        );
        let resp = post_remote_write(&write_url, &body).expect("post to cardguard");
        assert_eq!(resp.status, 204, "{files:?}: {}", resp.text());

        let short = received(&sink, "/short");
        assert_eq!(
            short, admitted,
            "{files:?}: the default route carries every admitted series"
        );
        let long = received(&sink, "/long");
        let report = ci::check(&config, &sources, None, None, &opts);
        let to_long: BTreeSet<&str> = report
            .retention
            .iter()
            .filter(|r| {
                r.routes
                    .iter()
                    .any(|h| h.upstreams.iter().any(|u| u == "long"))
            })
            .map(|r| r.metric.as_str())
            .collect();
        let long_metrics: BTreeSet<&str> = long
            .iter()
            .map(|l| l.iter().find(|(n, _)| n == "__name__").unwrap().1.as_str())
            .collect();
        assert_eq!(long_metrics, to_long, "{files:?}: the SLO route");
    }
    // What the cases had the stages do, so the comparison above compared something.
    let redaction = ci::check(
        &config,
        &[source("redaction.om")],
        None,
        None,
        &Options {
            owner: Some("auth".into()),
            instances: 2,
            now_ms: now,
        },
    );
    let kinds: BTreeSet<String> = redaction
        .findings
        .iter()
        .map(|f| {
            serde_json::to_value(f.kind)
                .unwrap()
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    for k in ["unbounded", "relabel", "redaction"] {
        assert!(kinds.contains(k), "{kinds:?}");
    }
    rt.block_on(app.shutdown());
}

#[test]
fn live_current_use_from_a_running_cardguard() {
    let sink = fake_upstream();
    let dir = TestDir::new("ci-live");
    let yaml = std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(CFG))
        .unwrap()
        .replace("http://127.0.0.1:8428/api/v1/write", &sink.write_url())
        .replace("http://127.0.0.1:8429/api/v1/write", &sink.write_url());
    std::fs::write(dir.join("cardguard.yml"), yaml).unwrap();
    let cg = Cardguard::start_args(&dir, &["--config", "cardguard.yml"]);

    // checkout already has 70 active series in production.
    let now = now_ms();
    let running: Vec<_> = (0..70)
        .map(|i| {
            let v = format!("/p{i}");
            testgen::sorted_series(
                &[
                    ("__name__", "requests_total"),
                    ("service", "checkout"),
                    ("path", &v),
                ],
                &[(1.0, now)],
            )
        })
        .collect();
    let resp = post_remote_write(&cg.write_url(), &testgen::body_v1(running)).unwrap();
    assert_eq!(resp.status, 204, "{}", resp.text());

    // The clean service's 12 series fit: 70 + 12 of 200.
    let out = run_ci(
        &[
            "--config",
            CFG,
            "--owner",
            "checkout",
            "--live",
            &cg.base(),
            "--format",
            "json",
            "testdata/ci/clean.prom",
        ],
        None,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let v: Json = serde_json::from_slice(&out.stdout).unwrap();
    let b = &v["budgets"][0];
    assert_eq!(
        (
            b["current"].as_u64(),
            b["added"].as_u64(),
            b["uses"].as_u64()
        ),
        (Some(70), Some(12), Some(82)),
        "{v:#}"
    );
    assert_eq!(b["current_from"], "live");
    assert_eq!(v["live"], format!("{}/api/v1/cardinality", cg.base()));

    // The histogram change: 70 live + 96 new series is within 200 ... but from the baseline
    // alone it would not be: live use replaces the baseline's estimate.
    let out = run_ci(
        &[
            "--config",
            CFG,
            "--owner",
            "checkout",
            "--instances",
            "4",
            "--baseline",
            "testdata/ci/histogram-baseline.prom",
            "--live",
            &cg.base(),
            "testdata/ci/histogram-head.prom",
        ],
        None,
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.contains("checkout: +96 series (×4 instances), uses 166 of 200"),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!(
            "current use from {}/api/v1/cardinality",
            cg.base()
        )),
        "{stdout}"
    );

    // 140 more live series: now the change passes the budget.
    let more: Vec<_> = (70..210)
        .map(|i| {
            let v = format!("/p{i}");
            testgen::sorted_series(
                &[
                    ("__name__", "requests_total"),
                    ("service", "checkout"),
                    ("path", &v),
                ],
                &[(1.0, now)],
            )
        })
        .collect();
    let resp = post_remote_write(&cg.write_url(), &testgen::body_v1(more)).unwrap();
    assert_eq!(resp.status, 204);
    let out = run_ci(
        &[
            "--config",
            CFG,
            "--owner",
            "checkout",
            "--instances",
            "4",
            "--baseline",
            "testdata/ci/histogram-baseline.prom",
            "--live",
            &cg.base(),
            "testdata/ci/histogram-head.prom",
        ],
        None,
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{stdout}");
    // 200 admitted (the budget), the other 10 dropped by the running guard.
    assert!(
        stdout.contains("checkout: +96 series (×4 instances), uses 296 of 200: over budget"),
        "{stdout}"
    );

    // A --live URL that answers nothing useful is an error (exit 3), not a pass.
    let out = run_ci(
        &[
            "--config",
            CFG,
            "--live",
            &format!("{}/-/healthy", cg.base()),
            "testdata/ci/clean.prom",
        ],
        None,
    );
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn scrapes_a_url_once() {
    let om =
        std::fs::read(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(testdata("redaction.om")))
            .unwrap();
    let prom =
        std::fs::read(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(testdata("user_id.prom")))
            .unwrap();
    let server = HttpServer::start(Arc::new(move |req: &Request| match req.path.as_str() {
        "/om" => Reply::status(200)
            .with_header(
                "Content-Type",
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )
            .with_body(&om),
        "/metrics" => Reply::status(200)
            .with_header("Content-Type", "text/plain; version=0.0.4")
            .with_body(&prom),
        _ => Reply::status(404).with_body(b"not found"),
    }));
    let url = |p: &str| format!("http://{}{p}", server.addr());

    let out = run_ci(
        &["--config", CFG, "--owner", "cart", &url("/metrics")],
        None,
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("label user_id"), "{stdout}");
    assert!(
        stdout.contains(&format!("[{}:4]", url("/metrics"))),
        "{stdout}"
    );

    let out = run_ci(&["--config", CFG, "--owner", "auth", &url("/om")], None);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("session_id is forbidden"), "{stdout}");

    let out = run_ci(&["--config", CFG, &url("/gone")], None);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("404"), "{stderr}");
}
