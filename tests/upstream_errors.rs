//! An upstream refusing cardguard's own request (an expired token, a wrong URL, a body too
//! large) must not make Prometheus drop data: cardguard in-process (`App::start_on`) in front of
//! the fake upstream (`cardguard::sink::Sink`), driven over loopback HTTP as a sender would.
//!
//! - 401 → the sender gets 503 with Retry-After and a body naming the upstream and its status
//!   (and no credentials), `cardguard_upstream_config_errors_total` moves, and once the upstream
//!   takes the request again the same write gets 204.
//! - 400 → passed back with its body: the data itself is wrong.
//! - 413 above N bytes → cardguard splits the body; the data arrives in pieces, every series
//!   once, and the sender gets 204.
//! - two routed upstreams, one refusing the data (400) and one misconfigured (401) → 503.

mod common;

use common::*;

use ::cardguard::app::App;
use ::cardguard::config::Config;
use ::cardguard::ingest::ConfigSource;

/// cardguard on its own runtime, on an ephemeral loopback port; stops when dropped.
struct InProcess {
    base: String,
    _app: App,
    _rt: tokio::runtime::Runtime,
}

impl InProcess {
    fn start(yaml: &str) -> InProcess {
        let config = Config::from_yaml(yaml).unwrap_or_else(|e| panic!("config: {e}\n{yaml}"));
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let app = rt.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            App::start_on(config, ConfigSource::default(), listener).unwrap()
        });
        InProcess {
            base: format!("http://{}", app.local_addr()),
            _app: app,
            _rt: rt,
        }
    }

    fn write(&self, body: &[u8], tenant: Option<&str>) -> Resp {
        let mut headers = rw::STANDARD_HEADERS.to_vec();
        if let Some(t) = tenant {
            headers.push(("X-Scope-OrgID", t));
        }
        http_post(&format!("{}/api/v1/write", self.base), &headers, body).expect("write")
    }

    fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let text = http_get(&format!("{}/metrics", self.base)).unwrap().text();
        metric_value(&text, name, labels).unwrap_or(0.0)
    }
}

const TOKEN: &str = "Bearer tok-0123456789abcdef";

fn one_upstream(sink: &Sink) -> String {
    let url = sink
        .write_url()
        .replace("http://", "http://writer:pa55word-secret@");
    format!(
        "upstream:\n  name: mimir\n  url: {url}\n  remote_timeout: 5s\n  \
         headers:\n    Authorization: {TOKEN}\n"
    )
}

/// `n` series `cg_test{k="000".."n-1",pad=...}`, one sample each.
fn series(n: usize) -> Vec<rw::Series> {
    let pad = "p".repeat(100);
    (0..n)
        .map(|k| {
            rw::Series::new(
                "cg_test",
                &[("k", &format!("{k:03}")), ("pad", &pad)],
                k as f64,
                now_ms(),
            )
        })
        .collect()
}

/// The `k` labels the upstream received, request by request.
fn received_keys(sink: &Sink) -> Vec<Vec<String>> {
    sink.received()
        .iter()
        .map(|r| {
            let raw = rw::unsnappy(&r.body).unwrap();
            let (series, _) = rw::decode(&raw).unwrap();
            series
                .iter()
                .map(|s| String::from_utf8(s.label("k").unwrap().to_vec()).unwrap())
                .collect()
        })
        .collect()
}

#[test]
fn an_expired_token_makes_the_sender_retry_and_is_counted() {
    let sink = fake_upstream();
    let cg = InProcess::start(&one_upstream(&sink));
    sink.answer(
        Answer::status(401).with_body(format!("invalid token {}", &TOKEN["Bearer ".len()..])),
    );
    let body = rw::body(&series(3));
    let r = cg.write(&body, None);
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.header("retry-after"), Some("10"));
    let text = r.text();
    assert!(
        text.contains("upstream mimir answered 401 Unauthorized"),
        "{text}"
    );
    assert!(text.contains("credentials"), "{text}");
    for secret in ["tok-0123456789abcdef", "pa55word-secret", "127.0.0.1"] {
        assert!(!text.contains(secret), "{secret} in {text}");
    }
    let labels = [("upstream", "mimir"), ("status", "401")];
    assert_eq!(
        cg.metric("cardguard_upstream_config_errors_total", &labels),
        1.0
    );
    let class = [("upstream", "mimir"), ("class", "config")];
    assert_eq!(cg.metric("cardguard_upstream_errors_total", &class), 1.0);

    // The operator renews the token: the sender's retry goes through.
    sink.answer(Answer::status(204));
    assert_eq!(cg.write(&body, None).status, 204);
    assert_eq!(sink.requests(), 2, "the refused request and its retry");
}

#[test]
fn a_wrong_url_and_a_missing_tenant_are_retried_too() {
    let sink = fake_upstream();
    let cg = InProcess::start(&one_upstream(&sink));
    for code in [403, 404, 405, 407, 415] {
        sink.answer(Answer::status(code));
        let r = cg.write(&rw::body(&series(1)), None);
        assert_eq!(r.status, 503, "{code}: {}", r.text());
        let c = code.to_string();
        let labels = [("upstream", "mimir"), ("status", c.as_str())];
        assert_eq!(
            cg.metric("cardguard_upstream_config_errors_total", &labels),
            1.0
        );
    }
}

#[test]
fn an_error_about_the_data_is_passed_back() {
    let sink = fake_upstream();
    let cg = InProcess::start(&one_upstream(&sink));
    for code in [400, 422] {
        sink.answer(Answer::status(code).with_body("out of order sample"));
        let r = cg.write(&rw::body(&series(2)), None);
        assert_eq!(r.status, code);
        assert_eq!(r.text(), "out of order sample");
    }
    let text = http_get(&format!("{}/metrics", cg.base)).unwrap().text();
    assert_eq!(
        metric_sum(&text, "cardguard_upstream_config_errors_total"),
        None,
        "no configuration error counted"
    );
}

#[test]
fn a_body_too_large_for_the_upstream_arrives_in_pieces() {
    const N: usize = 40;
    let sink = fake_upstream();
    let cg = InProcess::start(&one_upstream(&sink));
    let body = rw::body(&series(N));
    // Room for about a fifth of the request.
    sink.max_body_bytes(Some(body.len() / 5));
    let r = cg.write(&body, Some("acme"));
    assert_eq!(r.status, 204, "{}", r.text());

    let pieces = received_keys(&sink);
    assert!(pieces.len() >= 5, "{pieces:?}");
    let want: Vec<String> = (0..N).map(|k| format!("{k:03}")).collect();
    assert_eq!(pieces.concat(), want, "every series once, in order");
    for r in sink.received() {
        assert_eq!(r.header("x-scope-orgid"), Some("acme"));
        assert_eq!(r.header("content-type"), Some("application/x-protobuf"));
        assert_eq!(r.header("authorization"), Some(TOKEN));
    }
    assert!(sink.too_large() >= 1);
    assert!(
        cg.metric(
            "cardguard_upstream_body_splits_total",
            &[("upstream", "mimir")]
        ) >= 4.0
    );
    assert_eq!(
        cg.metric("cardguard_samples_forwarded_total", &[]),
        N as f64
    );

    // Not even one series fits: 503, counted as a configuration error.
    sink.reset();
    sink.max_body_bytes(Some(8));
    let r = cg.write(&rw::body(&series(4)), Some("acme"));
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(
        r.text().contains("answered 413 Payload Too Large"),
        "{}",
        r.text()
    );
    let labels = [("upstream", "mimir"), ("status", "413")];
    assert_eq!(
        cg.metric("cardguard_upstream_config_errors_total", &labels),
        1.0
    );
}

/// One upstream refuses the data, the other cardguard's credentials: the sender must retry,
/// or the misconfigured upstream would never get the data.
#[test]
fn any_routed_upstream_needing_a_retry_makes_the_sender_retry() {
    let (a, b) = (fake_upstream(), fake_upstream());
    let yaml = format!(
        "upstreams:\n  - name: a\n    url: {}\n  - name: b\n    url: {}\n\
         routes:\n  - upstreams: [a, b]\n",
        a.write_url(),
        b.write_url()
    );
    let cg = InProcess::start(&yaml);
    a.answer(Answer::status(400).with_body("bad"));
    b.answer(Answer::status(401));
    let r = cg.write(&rw::body(&series(2)), None);
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.text().contains("upstream b answered 401"), "{}", r.text());
    // Both refusing the data: final.
    b.answer(Answer::status(400).with_body("bad"));
    assert_eq!(cg.write(&rw::body(&series(2)), None).status, 400);
}
