//! Scrape fixtures: label sets, the standard target whose every value on the n-th scrape is
//! known in advance ([`standard_target_series`] next to the exposition that serves it), a bigger
//! realistic exposition for the payload capture, and [`TestTarget`], the server Prometheus
//! scrapes.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::{HttpServer, Reply, Request};

pub type Labels = BTreeMap<String, String>;

pub fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

pub fn fmt_labels(l: &Labels) -> String {
    let name = l.get("__name__").cloned().unwrap_or_default();
    let rest: Vec<String> = l
        .iter()
        .filter(|(k, _)| *k != "__name__")
        .map(|(k, v)| format!("{k}={v:?}"))
        .collect();
    format!("{name}{{{}}}", rest.join(","))
}

/// What value a target series has on the n-th scrape (n = 1, 2, ...).
#[derive(Debug, Clone, Copy)]
pub enum Expect {
    Const(f64),
    /// `mul * n`, n being the scrape number: strictly increasing.
    PerScrape(f64),
}

impl Expect {
    pub fn at(self, n: u64) -> f64 {
        match self {
            Expect::Const(v) => v,
            Expect::PerScrape(m) => m * n as f64,
        }
    }
}

/// The series the standard test target exposes: (labels without job/instance, value rule,
/// exposition line). Names, label values and numbers are chosen to exercise escaping, UTF-8,
/// negative/exponent values and a classic histogram.
pub fn standard_target_series() -> Vec<(Labels, Expect)> {
    let mut v = vec![
        (
            labels(&[("__name__", "cg_test_scrapes_total")]),
            Expect::PerScrape(1.0),
        ),
        (
            labels(&[
                ("__name__", "cg_test_requests_total"),
                ("method", "get"),
                ("code", "200"),
            ]),
            Expect::PerScrape(3.0),
        ),
        (
            labels(&[
                ("__name__", "cg_test_requests_total"),
                ("method", "post"),
                ("code", "500"),
            ]),
            Expect::Const(7.0),
        ),
        (
            labels(&[("__name__", "cg_test_temperature_celsius"), ("room", "a")]),
            Expect::Const(21.5),
        ),
        (
            labels(&[("__name__", "cg_test_temperature_celsius"), ("room", "b")]),
            Expect::Const(-3.25),
        ),
        (
            labels(&[("__name__", "cg_test_temperature_celsius"), ("room", "c")]),
            Expect::Const(1e6),
        ),
        (
            labels(&[
                ("__name__", "cg_test_info"),
                ("city", "Zürich"),
                ("quote", "a\"b\\c"),
                ("multi", "line1\nline2"),
            ]),
            Expect::Const(1.0),
        ),
        (
            labels(&[("__name__", "cg_test_latency_seconds_sum")]),
            Expect::Const(4.75),
        ),
        (
            labels(&[("__name__", "cg_test_latency_seconds_count")]),
            Expect::Const(10.0),
        ),
    ];
    for (le, c) in [("0.1", 3.0), ("0.5", 5.0), ("1", 8.0), ("+Inf", 10.0)] {
        v.push((
            labels(&[("__name__", "cg_test_latency_seconds_bucket"), ("le", le)]),
            Expect::Const(c),
        ));
    }
    v
}

pub fn standard_exposition(n: u64) -> String {
    format!(
        "# HELP cg_test_scrapes_total Number of times this target was scraped.\n\
         # TYPE cg_test_scrapes_total counter\n\
         cg_test_scrapes_total {n}\n\
         # HELP cg_test_requests_total Requests served, by method and code.\n\
         # TYPE cg_test_requests_total counter\n\
         cg_test_requests_total{{method=\"get\",code=\"200\"}} {}\n\
         cg_test_requests_total{{method=\"post\",code=\"500\"}} 7\n\
         # HELP cg_test_temperature_celsius Temperature per room.\n\
         # TYPE cg_test_temperature_celsius gauge\n\
         cg_test_temperature_celsius{{room=\"a\"}} 21.5\n\
         cg_test_temperature_celsius{{room=\"b\"}} -3.25\n\
         cg_test_temperature_celsius{{room=\"c\"}} 1e+06\n\
         # HELP cg_test_info Exotic label values.\n\
         # TYPE cg_test_info gauge\n\
         cg_test_info{{city=\"Zürich\",quote=\"a\\\"b\\\\c\",multi=\"line1\\nline2\"}} 1\n\
         # HELP cg_test_latency_seconds Request latency.\n\
         # TYPE cg_test_latency_seconds histogram\n\
         cg_test_latency_seconds_bucket{{le=\"0.1\"}} 3\n\
         cg_test_latency_seconds_bucket{{le=\"0.5\"}} 5\n\
         cg_test_latency_seconds_bucket{{le=\"1\"}} 8\n\
         cg_test_latency_seconds_bucket{{le=\"+Inf\"}} 10\n\
         cg_test_latency_seconds_sum 4.75\n\
         cg_test_latency_seconds_count 10\n",
        3 * n
    )
}

/// A bigger, realistic-looking exposition (~300 series) for the payload capture.
pub fn capture_exposition(n: u64) -> String {
    let mut s = String::new();
    s.push_str("# HELP http_requests_total Requests by handler, method and code.\n");
    s.push_str("# TYPE http_requests_total counter\n");
    let handlers = [
        "/",
        "/api/users",
        "/api/orders",
        "/api/items",
        "/login",
        "/logout",
        "/health",
        "/metrics",
    ];
    let methods = ["GET", "POST", "PUT", "DELETE"];
    let codes = ["200", "201", "400", "404", "500"];
    for (hi, h) in handlers.iter().enumerate() {
        for (mi, m) in methods.iter().enumerate() {
            for (ci, c) in codes.iter().enumerate() {
                let v = (hi * 97 + mi * 13 + ci * 7 + 1) as u64 * n;
                s.push_str(&format!(
                    "http_requests_total{{handler=\"{h}\",method=\"{m}\",code=\"{c}\"}} {v}\n"
                ));
            }
        }
    }
    s.push_str("# HELP http_request_duration_seconds Request latency.\n");
    s.push_str("# TYPE http_request_duration_seconds histogram\n");
    let les = [
        "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10", "+Inf",
    ];
    for (hi, h) in handlers.iter().enumerate() {
        let mut cum = 0u64;
        for (li, le) in les.iter().enumerate() {
            cum += ((hi + 1) * (li + 2)) as u64 * n;
            s.push_str(&format!(
                "http_request_duration_seconds_bucket{{handler=\"{h}\",le=\"{le}\"}} {cum}\n"
            ));
        }
        s.push_str(&format!(
            "http_request_duration_seconds_sum{{handler=\"{h}\"}} {}\n",
            cum as f64 * 0.137
        ));
        s.push_str(&format!(
            "http_request_duration_seconds_count{{handler=\"{h}\"}} {cum}\n"
        ));
    }
    s.push_str("# HELP app_queue_depth Items waiting per queue.\n# TYPE app_queue_depth gauge\n");
    for q in 0..40 {
        s.push_str(&format!(
            "app_queue_depth{{queue=\"q{q:02}\",shard=\"{}\"}} {}\n",
            q % 4,
            (q * 31 + n as usize) % 100
        ));
    }
    s
}

/// A scrape target on 127.0.0.1 serving `render(n)` on the n-th GET (n starts at 1).
pub struct TestTarget {
    pub server: HttpServer,
    scrapes: Arc<AtomicU64>,
}

impl TestTarget {
    pub fn start() -> TestTarget {
        Self::start_with(Arc::new(standard_exposition))
    }

    pub fn start_with(render: Arc<dyn Fn(u64) -> String + Send + Sync>) -> TestTarget {
        let scrapes = Arc::new(AtomicU64::new(0));
        let s2 = scrapes.clone();
        let server = HttpServer::start(Arc::new(move |req: &Request| {
            if req.method == "GET" && req.path.starts_with("/metrics") {
                let n = s2.fetch_add(1, Ordering::SeqCst) + 1;
                Reply::status(200)
                    .with_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
                    .with_body(render(n).as_bytes())
            } else {
                Reply::status(404)
            }
        }));
        TestTarget { server, scrapes }
    }

    pub fn addr(&self) -> String {
        self.server.addr()
    }

    pub fn scrapes(&self) -> u64 {
        self.scrapes.load(Ordering::SeqCst)
    }
}
