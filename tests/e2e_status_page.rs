//! The status page in a real browser: cardguard in-process (`App::start_on`, its config from a
//! file with a rule file) in front of the fake upstream (`cardguard::sink::Sink`), with a
//! cardinality explosion under way, loaded by headless Chromium (`scripts/fetch-peers.sh`
//! puts it in `$CARDGUARD_PEERS_DIR/bin`, or the system's `/usr/bin/chromium` is used).
//!
//! Checks the DOM Chromium rendered (the exploding service first and flagged, bar widths,
//! a hostile service name shown as text, the `other`/`unowned` notes, upstream and rule
//! group rows) and that screenshots come out at laptop and phone sizes. With
//! `CARDGUARD_UPDATE_SCREENSHOT=1` the laptop screenshot is written to `docs/status-page.png`,
//! the README's picture (the phone one to `target/`). `curl /` keeps the plain endpoint list.
//!
//! A missing Chromium fails the test with the command that fetches it; it never skips.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

use ::cardguard::app::App;
use ::cardguard::ingest::ConfigSource;

const HOSTILE: &str = "<img src=x onerror=alert(1)>\"'&";

/// cardguard on its own runtime, on an ephemeral loopback port; stops when dropped.
struct InProcess {
    addr: String,
    _app: App,
    _rt: tokio::runtime::Runtime,
}

impl InProcess {
    fn start(config_file: &Path) -> InProcess {
        let source = ConfigSource {
            file: Some(config_file.to_path_buf()),
            ..ConfigSource::default()
        };
        let config = source
            .load()
            .unwrap_or_else(|e| panic!("config {}: {e}", config_file.display()));
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let app = rt.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            App::start_on(config, source, listener).unwrap()
        });
        InProcess {
            addr: app.local_addr().to_string(),
            _app: app,
            _rt: rt,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn write(&self, series: &[rw::Series]) {
        let r = post_remote_write(&self.url("/api/v1/write"), &rw::body(series)).expect("write");
        assert_eq!(r.status, 204, "write answered {}: {}", r.status, r.text());
    }

    fn get(&self, path: &str, accept: Option<&str>) -> Resp {
        let accept = accept.map_or(String::new(), |a| format!("Accept: {a}\r\n"));
        let head = format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\n{accept}Connection: close\r\n\r\n",
            self.addr
        );
        raw_http(&self.addr, &head, Vec::new(), Duration::from_secs(10)).expect("GET")
    }
}

/// `n` series of `metric` for `service` (none: unowned), `user` from `from`.
fn series(service: Option<&str>, metric: &str, from: usize, n: usize) -> Vec<rw::Series> {
    (from..from + n)
        .map(|i| {
            let user = format!("u{i:05}");
            let mut labels = vec![("instance", "10.0.0.1:9100"), ("user_id", user.as_str())];
            if let Some(s) = service {
                labels.push(("service", s));
            }
            rw::Series::new(metric, &labels, i as f64, now_ms())
        })
        .collect()
}

/// The steady traffic: the same series every round.
fn steady() -> Vec<rw::Series> {
    let mut s = series(Some("checkout"), "http_requests_total", 0, 60);
    s.extend(series(Some("search"), "search_latency_seconds", 0, 30));
    s.extend(series(Some(HOSTILE), "hostile_metric", 0, 5));
    s.extend(series(None, "node_load1", 0, 3));
    s
}

fn chromium() -> PathBuf {
    let peer = peers_dir().join("bin").join("chromium");
    for candidate in [peer.clone(), PathBuf::from("/usr/bin/chromium")] {
        if candidate.exists() {
            return candidate;
        }
    }
    panic!(
        "headless Chromium not found at {} nor /usr/bin/chromium.\n\
         The status page's browser test needs it: run `scripts/fetch-peers.sh` (it fetches \
         Debian's `chromium` package and the libraries the machine lacks into \
         $CARDGUARD_PEERS_DIR, default ./.peers), or set CARDGUARD_PEERS_DIR to a directory \
         with bin/chromium.",
        peer.display()
    );
}

/// Run headless Chromium with `args` + `url`; its stdout. Fails the test on a non-zero exit
/// or after a minute.
fn run_chromium(dir: &TestDir, args: &[&str], url: &str) -> String {
    let profile = tempfile::Builder::new()
        .prefix("chromium-profile-")
        .tempdir_in(dir.path())
        .unwrap();
    let log = dir.join("chromium.log");
    let mut child = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .arg(url)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {}: {e}", chromium().display()));
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut out = String::new();
            use std::io::Read;
            child
                .stdout
                .take()
                .unwrap()
                .read_to_string(&mut out)
                .unwrap();
            let err = std::fs::read_to_string(&log).unwrap_or_default();
            assert!(status.success(), "chromium {args:?} {url}: {status}\n{err}");
            return out;
        }
        if started.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            let err = std::fs::read_to_string(&log).unwrap_or_default();
            panic!("chromium {args:?} {url} still running after 60 s\n{err}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn screenshot(dir: &TestDir, size: &str, url: &str, file: &Path) {
    let _ = std::fs::remove_file(file);
    run_chromium(
        dir,
        &[
            &format!("--screenshot={}", file.display()),
            &format!("--window-size={size}"),
        ],
        url,
    );
    let png = std::fs::read(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    assert!(
        png.len() > 10_000 && png.starts_with(b"\x89PNG\r\n\x1a\n"),
        "{}: not a screenshot ({} bytes)",
        file.display(),
        png.len()
    );
}

/// The `<tr class="svc...">` elements of the DOM, as (opening tag, whole row).
fn service_rows(dom: &str) -> Vec<(String, String)> {
    dom.split("<tr class=\"svc")
        .skip(1)
        .map(|rest| {
            let row = rest.split("</tr>").next().unwrap_or("");
            let tag = row.split('>').next().unwrap_or("").to_string();
            (tag, row.to_string())
        })
        .collect()
}

fn attr<'a>(tag: &'a str, name: &str) -> &'a str {
    let key = format!("{name}=\"");
    let start = tag
        .find(&key)
        .unwrap_or_else(|| panic!("no {name} in {tag}"))
        + key.len();
    &tag[start..start + tag[start..].find('"').unwrap()]
}

/// The width of the first bar of `kind` in `row`, in percent.
fn bar_width(row: &str, kind: &str) -> f64 {
    let at = row
        .find(&format!("class=\"bar {kind}\""))
        .unwrap_or_else(|| panic!("no {kind} bar in {row}"));
    let rest = &row[at..];
    let w = rest.find("width:").unwrap() + "width:".len();
    rest[w..w + rest[w..].find('%').unwrap()].parse().unwrap()
}

#[test]
fn the_status_page_shows_an_explosion_first_in_a_real_browser() {
    chromium(); // fail first, and clearly, when it is missing
    let dir = TestDir::new("status-page");
    let sink = fake_upstream();
    std::fs::write(
        dir.join("rules.yml"),
        "groups:\n  - name: requests\n    interval: 1s\n    query_offset: 0s\n    rules:\n      \
         - record: service:http_requests:rate1m\n        \
         expr: sum by (service) (rate(http_requests_total[1m]))\n",
    )
    .unwrap();
    let config = dir.join("cardguard.yml");
    std::fs::write(
        &config,
        format!(
            "upstream:\n  name: victoriametrics\n  url: {}\n  remote_timeout: 5s\n\
             guard:\n  owner_labels: [service]\n  default_budget:\n    max_series: 200\n\
             \x20 unowned_budget:\n    max_series: 50\n  budgets:\n    - service: checkout\n      \
             max_series: 1000\n    - service: search\n      max_series: 40\n\
             rule_files: [rules.yml]\n",
            sink.write_url()
        ),
    )
    .unwrap();
    let cg = InProcess::start(&config);

    // curl and scripts keep the plain list; a browser's Accept gets the page.
    for accept in [None, Some("*/*"), Some("text/plain")] {
        let r = cg.get("/", accept);
        assert_eq!(r.status, 200);
        assert!(
            r.text().contains("GET  /metrics"),
            "{accept:?}: {}",
            r.text()
        );
    }
    let r = cg.get("/", Some("text/html,application/xhtml+xml,*/*;q=0.8"));
    assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
    let r = cg.get("/runbook", None);
    assert!(r.text().starts_with('#'), "the runbook: {}", r.text());

    // Calm first: every service seen once, by the page (the first of two observations).
    cg.write(&steady());
    cg.write(&series(Some("payments"), "checkout_cart_items", 0, 150));
    let first = cg.get("/", Some("text/html"));
    assert!(first.text().contains("needs a second look"));

    // Then payments explodes: 100 new user_id values every round, far past its budget of 200.
    let mut next = 150;
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        cg.write(&steady());
        cg.write(&series(Some("payments"), "checkout_cart_items", next, 100));
        next += 100;
        std::thread::sleep(Duration::from_millis(200));
    }

    let url = cg.url("/");
    let dom = run_chromium(&dir, &["--dump-dom"], &url);
    std::fs::write(dir.join("dom.html"), &dom).unwrap();
    let rows = service_rows(&dom);
    let names: Vec<&str> = rows
        .iter()
        .map(|(tag, _)| attr(tag, "data-service"))
        .collect();
    assert_eq!(names.len(), 5, "rows: {names:?}\n{dom}");

    let (tag, row) = &rows[0];
    assert_eq!(
        attr(tag, "data-service"),
        "payments",
        "the exploding service comes first: {names:?}"
    );
    assert_eq!(attr(tag, "data-exploding"), "true", "{row}");
    assert_eq!(attr(tag, "data-fill"), "1.0000");
    assert_eq!(bar_width(row, "budget"), 100.0);
    assert!(
        bar_width(row, "demand") == 100.0,
        "demand far past the budget: {row}"
    );
    assert!(row.contains("exploding"), "{row}");
    assert!(
        row.contains("<code>budget</code>"),
        "drops by reason: {row}"
    );
    assert!(row.contains("user_id"), "top label: {row}");
    for (tag, row) in &rows[1..] {
        assert_eq!(attr(tag, "data-exploding"), "false", "{row}");
    }
    // Sorted by budget use: search 30/40, checkout 60/1000 after unowned 3/50 and the
    // hostile service's 5/200.
    let order: Vec<&str> = names
        .iter()
        .map(|n| if *n == HOSTILE { "hostile" } else { n })
        .collect();
    let fill = |name: &str| -> f64 {
        let (tag, _) = rows
            .iter()
            .find(|(t, _)| attr(t, "data-service") == name)
            .unwrap();
        attr(tag, "data-fill").parse().unwrap()
    };
    assert_eq!(order[1], "search", "{order:?}");
    assert_eq!(fill("search"), 0.75);
    assert_eq!(fill("checkout"), 0.06);
    let checkout = &rows
        .iter()
        .find(|(t, _)| attr(t, "data-service") == "checkout")
        .unwrap()
        .1;
    assert_eq!(bar_width(checkout, "budget"), 6.0);
    assert!(order.contains(&"unowned"), "{order:?}");

    // The hostile name is text in the DOM: escaped in its attribute and its cell, no element.
    assert!(
        !dom.contains("<img"),
        "a service name became markup:\n{dom}"
    );
    assert!(dom.contains("&lt;img src=x onerror=alert(1)&gt;"), "{dom}");

    // Upstreams, rules, config, links.
    assert!(dom.contains("data-upstream=\"victoriametrics\""), "{dom}");
    assert!(dom.contains("data-failing=\"false\""), "{dom}");
    assert!(
        dom.contains("rules.yml;requests\""),
        "the rule group: {dom}"
    );
    assert!(
        dom.contains(&config.display().to_string()),
        "the config file: {dom}"
    );
    for link in ["/metrics", "/api/v1/cardinality", "/runbook"] {
        assert!(dom.contains(&format!("href=\"{link}\"")), "{link}");
    }

    // Screenshots at laptop and phone sizes (the laptop one tall enough for every section).
    let laptop = dir.join("status-page.png");
    let phone = dir.join("status-page-phone.png");
    screenshot(&dir, "1280,1180", &url, &laptop);
    screenshot(&dir, "390,844", &url, &phone);
    if std::env::var_os("CARDGUARD_UPDATE_SCREENSHOT").is_some_and(|v| v == "1") {
        let docs = repo_root().join("docs/status-page.png");
        std::fs::copy(&laptop, &docs).unwrap();
        let kept = repo_root().join("target/status-page-phone.png");
        std::fs::copy(&phone, &kept).unwrap();
        eprintln!("wrote {} and {}", docs.display(), kept.display());
    }
}
