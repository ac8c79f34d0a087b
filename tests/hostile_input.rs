//! Hostile and malformed input against a running cardguard binary, with an in-test fake
//! upstream that answers 204 and records what reaches it.
//!
//! For every hostile request: the status is the documented one (docs/protocol.md §3), a 400
//! carries a non-empty one-line reason, nothing is forwarded upstream, and afterwards the process still
//! serves: `/-/healthy` is 200 and a valid write gets 204 and reaches the upstream.
//! Separately: how upstream failures map to the sender (down/500/timeout → 503, 429 with
//! Retry-After passed back, 4xx passed back with its body).

mod common;

use common::*;
use std::io::Write;
use std::time::{Duration, Instant};

/// cardguard + a fake upstream; drop order: cardguard, upstream, dir.
struct Env {
    cg: Cardguard,
    up: Sink,
    _dir: TestDir,
}

impl Env {
    fn start(name: &str, config_yaml: Option<&str>, extra: &[&str]) -> Env {
        let dir = TestDir::new(name);
        let up = fake_upstream();
        let mut args: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        if let Some(y) = config_yaml {
            let p = dir.join("cardguard.yml");
            std::fs::write(&p, y).unwrap();
            args.push("--config".into());
            args.push(p.display().to_string());
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let cg = Cardguard::start(&dir, &up.write_url(), &args);
        Env { cg, up, _dir: dir }
    }

    /// `/-/healthy` is 200, a valid write is answered 204, and that write reached the upstream.
    fn assert_still_serves(&mut self, marker: &str) -> Result<(), String> {
        self.cg.proc.assert_running();
        let h = http_get(&format!("{}/-/healthy", self.cg.base()))?;
        if h.status != 200 {
            return Err(format!("/-/healthy answered {} {:?}", h.status, h.text()));
        }
        let before = self.up.requests();
        let body = valid_body(marker);
        let r = post_remote_write(&self.cg.write_url(), &body)?;
        if r.status != 204 {
            return Err(format!("valid write answered {} {:?}", r.status, r.text()));
        }
        forwarded_with_marker(&self.up, before, marker)
    }
}

fn valid_body(marker: &str) -> Vec<u8> {
    rw::body(&[
        rw::Series::new(
            "cg_valid_total",
            &[("job", "hostile"), ("marker", marker)],
            42.0,
            now_ms(),
        ),
        rw::Series::new(
            "cg_valid_gauge",
            &[("job", "hostile"), ("marker", marker)],
            -1.5,
            now_ms(),
        ),
    ])
}

/// Some request to the upstream after index `from` carries a series with `marker`.
fn forwarded_with_marker(up: &Sink, from: u64, marker: &str) -> Result<(), String> {
    let reqs = up.received();
    for r in reqs.iter().skip(from as usize) {
        let raw = match rw::unsnappy(&r.body) {
            Ok(raw) => raw,
            Err(e) => return Err(format!("upstream got a body that is not snappy block: {e}")),
        };
        let (series, _) =
            rw::decode(&raw).map_err(|e| format!("upstream got undecodable protobuf: {e}"))?;
        if series
            .iter()
            .any(|s| s.label("marker") == Some(marker.as_bytes()))
        {
            let s = series
                .iter()
                .find(|s| s.label("marker") == Some(marker.as_bytes()))
                .unwrap();
            if s.samples.is_empty() {
                return Err("forwarded marker series has no samples".into());
            }
            return Ok(());
        }
    }
    Err(format!(
        "the valid write (marker {marker:?}) did not reach the upstream ({} requests after #{from})",
        reqs.len().saturating_sub(from as usize)
    ))
}

/// A hostile request and what cardguard must answer.
struct Case {
    name: &'static str,
    method: &'static str,
    path: &'static str,
    headers: Vec<(&'static str, &'static str)>,
    body: Vec<u8>,
    want: u16,
}

const PROTO: [(&str, &str); 3] = [
    ("Content-Type", "application/x-protobuf"),
    ("Content-Encoding", "snappy"),
    ("X-Prometheus-Remote-Write-Version", "0.1.0"),
];

fn post(name: &'static str, body: Vec<u8>, want: u16) -> Case {
    Case {
        name,
        method: "POST",
        path: "/api/v1/write",
        headers: PROTO.to_vec(),
        body,
        want,
    }
}

fn with_headers(
    name: &'static str,
    headers: &[(&'static str, &'static str)],
    body: Vec<u8>,
    want: u16,
) -> Case {
    Case {
        name,
        method: "POST",
        path: "/api/v1/write",
        headers: headers.to_vec(),
        body,
        want,
    }
}

/// Deterministic pseudo-random bytes.
fn noise(n: usize, mut seed: u64) -> Vec<u8> {
    (0..n)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed as u8
        })
        .collect()
}

fn series_with_n_labels(n: usize) -> rw::Series {
    // n labels in total, __name__ included.
    let mut s = rw::Series::new("cg_wide", &[], 1.0, now_ms());
    for i in 0..n - 1 {
        s.labels
            .push((format!("l{i:05}").into_bytes(), b"v".to_vec()));
    }
    s.labels.sort();
    s
}

fn hostile_cases() -> Vec<Case> {
    let ts = now_ms();
    let good_raw = rw::encode(&[
        rw::Series::new("cg_a", &[("job", "x")], 1.0, ts),
        rw::Series::new(
            "cg_b",
            &[
                ("job", "x"),
                (
                    "k",
                    "a fairly long label value to give snappy something to do",
                ),
            ],
            2.0,
            ts,
        ),
    ]);
    let good = rw::snappy(&good_raw);

    // Declared decoded length 2^32-1 (varint ff ff ff ff 0f), then a few literal bytes.
    let mut bomb = vec![0xff, 0xff, 0xff, 0xff, 0x0f];
    bomb.extend_from_slice(&[0x3c, 0x01, 0x02, 0x03, 0x04]);
    // Declared 64 MiB: over the 32 MiB decode limit but a plausible size.
    let mut bomb64 = Vec::new();
    rw::put_varint(&mut bomb64, 64 << 20);
    bomb64.extend_from_slice(&good[1..]);

    let mut framed = Vec::new();
    {
        let mut w = snap::write::FrameEncoder::new(&mut framed);
        w.write_all(&good_raw).unwrap();
        w.flush().unwrap();
    }

    // Field 0 / wire type 7 first: no protobuf decoder can accept this.
    let mut garbage = vec![0x07];
    garbage.extend(noise(4096, 0x9E3779B97F4A7C15));

    let mut bad_utf8_value = rw::Series::new("cg_bad", &[("job", "x")], 1.0, ts);
    bad_utf8_value
        .labels
        .push((b"zz".to_vec(), vec![b'o', 0xff, 0xfe, b'k']));
    let mut bad_utf8_name = rw::Series::new("cg_bad", &[("job", "x")], 1.0, ts);
    bad_utf8_name
        .labels
        .push((vec![b'z', 0xc3, 0x28], b"v".to_vec()));
    let no_name = rw::Series {
        labels: vec![
            (b"instance".to_vec(), b"a:1".to_vec()),
            (b"job".to_vec(), b"x".to_vec()),
        ],
        samples: vec![(1.0, ts)],
    };
    // A valid series followed by an invalid one: the whole request is rejected.
    let mixed = vec![
        rw::Series::new("cg_ok", &[("job", "x")], 1.0, ts),
        no_name.clone(),
    ];

    let json = br#"{"timeseries":[{"labels":[{"name":"__name__","value":"x"}],"samples":[{"value":1,"timestamp":1}]}]}"#.to_vec();
    // A gzip member header followed by junk: cardguard must refuse on the header alone.
    let mut gzip = vec![0x1f, 0x8b, 0x08, 0x00, 0, 0, 0, 0, 0x00, 0xff];
    gzip.extend(noise(64, 7));

    vec![
        post("truncated snappy", good[..good.len() / 2].to_vec(), 400),
        post("snappy declared-length bomb (4 GiB)", bomb, 400),
        post("snappy declared length 64 MiB", bomb64, 400),
        post("framed snappy stream", framed, 400),
        post("empty-preamble garbage (not snappy)", vec![0xff; 16], 400),
        post(
            "garbage protobuf in valid snappy",
            rw::snappy(&garbage),
            400,
        ),
        post(
            "series with 10,000 labels",
            rw::body(&[series_with_n_labels(10_000)]),
            400,
        ),
        post(
            "series with 129 labels (cap 128)",
            rw::body(&[series_with_n_labels(129)]),
            400,
        ),
        post(
            "invalid UTF-8 label value",
            rw::body(&[bad_utf8_value]),
            400,
        ),
        post("invalid UTF-8 label name", rw::body(&[bad_utf8_name]), 400),
        post("series without __name__", rw::body(&[no_name]), 400),
        post(
            "valid series + series without __name__",
            rw::body(&mixed),
            400,
        ),
        with_headers(
            "JSON body, application/json",
            &[("Content-Type", "application/json")],
            json.clone(),
            415,
        ),
        with_headers(
            "JSON body, application/json, snappy encoding",
            &[
                ("Content-Type", "application/json"),
                ("Content-Encoding", "snappy"),
            ],
            rw::snappy(&json),
            415,
        ),
        with_headers(
            "gzip Content-Encoding",
            &[
                ("Content-Type", "application/x-protobuf"),
                ("Content-Encoding", "gzip"),
            ],
            gzip,
            415,
        ),
        with_headers(
            "deflate Content-Encoding on a valid body",
            &[
                ("Content-Type", "application/x-protobuf"),
                ("Content-Encoding", "deflate"),
            ],
            good.clone(),
            415,
        ),
        with_headers(
            "text/plain Content-Type on a valid body",
            &[
                ("Content-Type", "text/plain"),
                ("Content-Encoding", "snappy"),
            ],
            good.clone(),
            415,
        ),
        with_headers(
            "image/png Content-Type",
            &[
                ("Content-Type", "image/png"),
                ("Content-Encoding", "snappy"),
            ],
            noise(256, 3),
            415,
        ),
        Case {
            name: "GET on /api/v1/write",
            method: "GET",
            path: "/api/v1/write",
            headers: vec![],
            body: vec![],
            want: 405,
        },
        Case {
            name: "PUT on /api/v1/write",
            method: "PUT",
            path: "/api/v1/write",
            headers: PROTO.to_vec(),
            body: good.clone(),
            want: 405,
        },
        Case {
            name: "GET on /api/v1/push",
            method: "GET",
            path: "/api/v1/push",
            headers: vec![],
            body: vec![],
            want: 405,
        },
    ]
}

fn send(base: &str, c: &Case) -> Result<Resp, String> {
    let url = format!("{base}{}", c.path);
    match c.method {
        "POST" => http_post(&url, &c.headers, &c.body),
        "GET" => http_get(&url),
        "PUT" => {
            let mut req = agent().put(&url);
            for (k, v) in &c.headers {
                req = req.header(*k, *v);
            }
            let mut r = req.send(&c.body[..]).map_err(|e| e.to_string())?;
            let status = r.status().as_u16();
            let body = r.body_mut().read_to_vec().map_err(|e| e.to_string())?;
            Ok(Resp {
                status,
                headers: vec![],
                body,
            })
        }
        m => panic!("method {m}"),
    }
}

/// The 400 body must be a short, non-empty, single-line reason.
fn check_reason(r: &Resp) -> Result<(), String> {
    let t = r.text();
    let line = t.trim_end_matches(['\n', '\r']);
    if line.trim().is_empty() {
        return Err("empty body; expected a one-line reason".into());
    }
    if line.contains('\n') || line.contains('\r') {
        return Err(format!("reason spans several lines: {t:?}"));
    }
    if line.len() > 1024 {
        return Err(format!("reason is {} bytes long", line.len()));
    }
    Ok(())
}

#[test]
fn hostile_bodies_are_rejected_and_the_proxy_keeps_serving() {
    let mut env = Env::start("hostile", None, &[]);
    env.assert_still_serves("warmup")
        .unwrap_or_else(|e| panic!("before any hostile input: {e}"));

    let mut failures = Vec::new();
    let cases = hostile_cases();
    for (i, c) in cases.iter().enumerate() {
        let before = env.up.requests();
        let result = send(&env.cg.base(), c).and_then(|r| {
            let mut errs = Vec::new();
            if r.status != c.want {
                errs.push(format!(
                    "status {} (want {}), body {:?}",
                    r.status,
                    c.want,
                    r.text()
                ));
            }
            if r.status == 400 {
                if let Err(e) = check_reason(&r) {
                    errs.push(e);
                }
            }
            if env.up.requests() != before {
                errs.push(format!(
                    "{} request(s) reached the upstream",
                    env.up.requests() - before
                ));
            }
            eprintln!(
                "[hostile] {:<48} -> {} {:?}",
                c.name,
                r.status,
                r.text().trim_end()
            );
            if errs.is_empty() {
                Ok(())
            } else {
                Err(errs.join("; "))
            }
        });
        if let Err(e) = result {
            failures.push(format!("{}: {e}", c.name));
        }
        if let Err(e) = env.assert_still_serves(&format!("after-{i}")) {
            failures.push(format!("after {:?}: proxy no longer serves: {e}", c.name));
        }
    }

    // Accepted variants: the boundary of the label cap, the `proto=` parameter, /api/v1/push.
    let before = env.up.requests();
    let at_cap = post_remote_write(&env.cg.write_url(), &rw::body(&[series_with_n_labels(128)]));
    match at_cap {
        Ok(r) if r.status == 204 => {}
        other => failures.push(format!(
            "series with exactly 128 labels: want 204, got {other:?}"
        )),
    }
    let mut headers = PROTO.to_vec();
    headers[0] = (
        "Content-Type",
        "application/x-protobuf;proto=prometheus.WriteRequest",
    );
    match http_post(&env.cg.write_url(), &headers, &valid_body("proto-param")) {
        Ok(r) if r.status == 204 => {
            if let Err(e) = forwarded_with_marker(&env.up, before, "proto-param") {
                failures.push(format!("proto=prometheus.WriteRequest: {e}"));
            }
        }
        other => failures.push(format!(
            "Content-Type with proto=prometheus.WriteRequest: want 204, got {other:?}"
        )),
    }
    match post_remote_write(
        &format!("{}/api/v1/push", env.cg.base()),
        &valid_body("push"),
    ) {
        Ok(r) if r.status == 204 => {
            if let Err(e) = forwarded_with_marker(&env.up, before, "push") {
                failures.push(format!("/api/v1/push: {e}"));
            }
        }
        other => failures.push(format!("POST /api/v1/push: want 204, got {other:?}")),
    }

    assert!(
        failures.is_empty(),
        "{} of {} hostile-input checks failed:\n{}",
        failures.len(),
        cases.len() + 3,
        summarize(&failures, 50)
    );
}

#[test]
fn body_over_configured_cap_is_413() {
    let mut env = Env::start("cap", Some("limits:\n  max_body_size: 64KiB\n"), &[]);
    let addr = env.cg.addr();
    let big = noise(100 << 10, 11);
    let before = env.up.requests();

    // With Content-Length.
    let head = format!(
        "POST /api/v1/write HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/x-protobuf\r\n\
         Content-Encoding: snappy\r\nContent-Length: {}\r\n\r\n",
        big.len()
    );
    let r = raw_http(&addr, &head, big.clone(), Duration::from_secs(20)).expect("response");
    assert_eq!(
        r.status,
        413,
        "100 KiB body with a 64 KiB cap (Content-Length): body {:?}",
        r.text()
    );

    // Chunked, no Content-Length: the cap must hold while streaming.
    let mut chunked = Vec::new();
    for c in big.chunks(8 << 10) {
        chunked.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
        chunked.extend_from_slice(c);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let head = format!(
        "POST /api/v1/write HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/x-protobuf\r\n\
         Content-Encoding: snappy\r\nTransfer-Encoding: chunked\r\n\r\n"
    );
    let r = raw_http(&addr, &head, chunked, Duration::from_secs(20)).expect("response");
    assert_eq!(
        r.status,
        413,
        "100 KiB chunked body with a 64 KiB cap: body {:?}",
        r.text()
    );

    assert_eq!(
        env.up.requests(),
        before,
        "an oversized body reached the upstream"
    );
    env.assert_still_serves("after-cap").unwrap();
}

#[test]
fn body_over_default_cap_is_413() {
    let mut env = Env::start("cap40", None, &[]);
    let addr = env.cg.addr();
    let big = noise(40 << 20, 5);
    let head = format!(
        "POST /api/v1/write HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/x-protobuf\r\n\
         Content-Encoding: snappy\r\nContent-Length: {}\r\n\r\n",
        big.len()
    );
    let t = Instant::now();
    let r = raw_http(&addr, &head, big, Duration::from_secs(60)).expect("response");
    assert_eq!(r.status, 413, "40 MiB body: body {:?}", r.text());
    eprintln!("[cap] 40 MiB body answered 413 in {:?}", t.elapsed());
    assert_eq!(
        env.up.requests(),
        0,
        "an oversized body reached the upstream"
    );
    env.assert_still_serves("after-40mib").unwrap();
}

// ---------------------------------------------------------------------------------------------
// Upstream trouble → what the sender sees
// ---------------------------------------------------------------------------------------------

fn write_once(env: &Env, marker: &str) -> Resp {
    post_remote_write(&env.cg.write_url(), &valid_body(marker)).expect("request to cardguard")
}

#[test]
fn upstream_down_is_503() {
    let dir = TestDir::new("updown");
    let dead = format!("http://127.0.0.1:{}/api/v1/write", free_port());
    let mut cg = Cardguard::start(&dir, &dead, &[]);
    let r = post_remote_write(&cg.write_url(), &valid_body("down")).expect("request");
    assert_eq!(
        r.status,
        503,
        "upstream refusing connections: body {:?}",
        r.text()
    );
    cg.proc.assert_running();
    let h = http_get(&format!("{}/-/healthy", cg.base())).unwrap();
    assert_eq!(h.status, 200);
}

#[test]
fn upstream_500_is_503() {
    let env = Env::start("up500", None, &[]);
    env.up
        .answer(Answer::status(500).with_body(b"internal trouble"));
    let r = write_once(&env, "500");
    assert_eq!(r.status, 503, "upstream 500: body {:?}", r.text());
    assert!(
        env.up.requests() >= 1,
        "cardguard never contacted the upstream"
    );
    env.up.answer(Answer::status(502));
    assert_eq!(write_once(&env, "502").status, 503, "upstream 502");
    env.up.answer(Answer::status(204));
    assert_eq!(write_once(&env, "ok").status, 204, "upstream healthy again");
}

#[test]
fn upstream_timeout_is_503() {
    let env = Env::start("uptimeout", None, &["--upstream-timeout", "1s"]);
    env.up
        .answer(Answer::status(204).with_delay(Duration::from_secs(4)));
    let t = Instant::now();
    let r = write_once(&env, "slow");
    let took = t.elapsed();
    assert_eq!(
        r.status,
        503,
        "upstream slower than --upstream-timeout: body {:?}",
        r.text()
    );
    assert!(
        took < Duration::from_millis(3500),
        "503 came after {took:?}; the 1s timeout did not apply"
    );
    eprintln!("[upstream] timeout answered 503 after {took:?}");
}

#[test]
fn upstream_429_is_passed_back_with_retry_after() {
    let env = Env::start("up429", None, &[]);
    env.up.answer(
        Answer::status(429)
            .with_header("Retry-After", "7")
            .with_body(b"slow down"),
    );
    let r = write_once(&env, "429");
    assert_eq!(r.status, 429, "upstream 429: body {:?}", r.text());
    assert_eq!(
        r.header("retry-after"),
        Some("7"),
        "Retry-After not passed back; headers {:?}",
        r.headers
    );
}

#[test]
fn upstream_4xx_is_passed_back_with_its_body() {
    let env = Env::start("up400", None, &[]);
    env.up.answer(Answer::status(400).with_body(b"bad"));
    let r = write_once(&env, "400");
    assert_eq!(r.status, 400, "upstream 400: body {:?}", r.text());
    assert_eq!(
        r.text().trim_end(),
        "bad",
        "upstream 400 body not passed back"
    );
}

#[test]
fn upstream_2xx_other_than_204_is_success() {
    let env = Env::start("up200", None, &[]);
    env.up
        .answer(Answer::status(200).with_body(b"{\"ok\":true}"));
    let r = write_once(&env, "200");
    assert!(
        (200..300).contains(&r.status),
        "upstream 200: cardguard answered {} {:?}",
        r.status,
        r.text()
    );
    forwarded_with_marker(&env.up, 0, "200").unwrap();
}
