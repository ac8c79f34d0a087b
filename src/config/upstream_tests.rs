//! The HTTP client settings of an upstream: Prometheus's keys and exclusions, files read at
//! load, and secrets that no error message or debug print shows.

use std::path::Path;

use http::HeaderMap;

use crate::config::Config;

const SECRET: &str = "hunter2-very-secret";

fn load(yaml: &str) -> Result<Config, String> {
    Config::from_yaml(yaml).map_err(|e| e.to_string())
}

fn upstream(extra: &str) -> String {
    format!("upstream:\n  name: mimir\n  url: https://127.0.0.1:9/api/v1/write\n{extra}")
}

/// Each invalid upstream, with the fragments its error must contain.
#[test]
fn invalid_client_settings_name_key_and_reason() {
    let cases: &[(&str, &[&str])] = &[
        (
            "  basic_auth:\n    username: u\n    password: p\n    password_file: /x\n",
            &[
                "line 7",
                "upstream.basic_auth.password_file",
                "at most one of password & password_file",
            ],
        ),
        (
            "  authorization:\n    credentials: c\n    credentials_file: /x\n",
            &[
                "upstream.authorization.credentials_file",
                "at most one of credentials & credentials_file",
            ],
        ),
        (
            "  basic_auth:\n    username: u\n  authorization:\n    credentials: c\n",
            &[
                "upstream.authorization",
                "at most one of basic_auth & authorization",
            ],
        ),
        (
            "  authorization:\n    type: Basic\n    credentials: c\n",
            &["upstream.authorization.type", "use \"basic_auth\" instead"],
        ),
        (
            "  tls_config:\n    cert_file: /c.pem\n",
            &["upstream.tls_config.key_file", "must be configured"],
        ),
        (
            "  tls_config:\n    key_file: /k.pem\n",
            &["upstream.tls_config.cert_file", "must be configured"],
        ),
        (
            "  tls_config:\n    min_version: TLS10\n",
            &["upstream.tls_config.min_version", "TLS 1.2 and 1.3 only"],
        ),
        (
            "  tls_config:\n    min_version: TLS99\n",
            &["upstream.tls_config.min_version", "unknown TLS version"],
        ),
        (
            "  tls_config:\n    server_name: \"not a name\"\n",
            &["upstream.tls_config.server_name"],
        ),
        (
            "  tls_config:\n    ca_file: /nonexistent/ca.pem\n",
            &[
                "line 5",
                "upstream: tls_config.ca_file /nonexistent/ca.pem",
                "No such file",
            ],
        ),
        (
            "  basic_auth:\n    username: u\n    password_file: /nonexistent/pw\n",
            &["upstream: basic_auth.password_file /nonexistent/pw"],
        ),
        (
            "  tls_config:\n    insecure: true\n",
            &["unknown field", "insecure"],
        ),
        (
            "  sigv4:\n    region: eu-west-1\n",
            &["upstream.sigv4", "not supported yet"],
        ),
        (
            "  proxy_url: socks5://127.0.0.1:1080\n",
            &["upstream.proxy_url", "only http:// proxies"],
        ),
        (
            "  headers:\n    Authorization: Bearer abc\n  authorization:\n    credentials: c\n",
            &[
                "upstream.headers.Authorization",
                "set the credentials in one place",
            ],
        ),
    ];
    for (extra, wants) in cases {
        let yaml = upstream(extra);
        let err = load(&yaml).expect_err(&yaml);
        for w in *wants {
            assert!(
                err.contains(w),
                "error for {yaml:?} should mention {w:?}, got:\n{err}"
            );
        }
    }
}

/// Passwords, tokens and a proxy's password reach no error message and no debug print.
#[test]
fn secrets_never_show() {
    let failing = [
        format!("  basic_auth:\n    password: {SECRET}\n    password_file: /x\n"),
        format!("  authorization:\n    credentials: {SECRET}\n    credentials_file: /x\n"),
        format!("  proxy_url: ftp://u:{SECRET}@proxy:3128\n"),
        format!("  proxy_url: \"http://u:{SECRET}@\"\n"),
        format!("  authorization:\n    credentials: {SECRET}\n  tls_config:\n    ca_file: /nonexistent\n"),
    ];
    for extra in &failing {
        let err = load(&upstream(extra)).expect_err(extra);
        assert!(!err.contains(SECRET), "{err}");
    }
    let ok = [
        format!("  basic_auth:\n    username: u\n    password: {SECRET}\n"),
        format!("  authorization:\n    credentials: {SECRET}\n"),
        format!("  proxy_url: http://u:{SECRET}@127.0.0.1:3128\n"),
    ];
    for extra in &ok {
        let c = load(&upstream(extra)).unwrap();
        let debug = format!("{c:?} {c:#?}");
        assert!(!debug.contains(SECRET), "{debug}");
        assert!(debug.contains("<secret>"), "{debug}");
    }
    let c = load(&upstream(&format!(
        "  headers:\n    Authorization: Bearer {SECRET}\n"
    )))
    .unwrap();
    let debug = format!("{c:?}");
    assert!(!debug.contains(SECRET), "{debug}");
}

#[test]
fn https_upstreams_load_and_plain_ones_need_no_client_of_their_own() {
    let c = load("upstream:\n  url: https://mimir.example/api/v1/push\n").unwrap();
    let up = &c.routing.unwrap().upstreams[0];
    assert_eq!(up.url.scheme_str(), Some("https"));
    assert!(up.client.is_none());
}

fn authorization_of(yaml: &str) -> String {
    let c = load(yaml).unwrap();
    let up = &c.routing.unwrap().upstreams[0];
    let mut h = HeaderMap::new();
    up.client.as_ref().expect("a client").authorize(&mut h);
    h["authorization"].to_str().unwrap().to_string()
}

#[test]
fn credentials_become_the_authorization_header_as_in_prometheus() {
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("pw");
    // Prometheus trims the file's surrounding whitespace (a trailing newline).
    std::fs::write(&pw, "s3cret\n").unwrap();
    let yaml = upstream(&format!(
        "  basic_auth:\n    username: writer\n    password_file: {}\n",
        pw.display()
    ));
    // base64("writer:s3cret")
    assert_eq!(authorization_of(&yaml), "Basic d3JpdGVyOnMzY3JldA==");
    assert_eq!(
        authorization_of(&upstream("  basic_auth:\n    username: writer\n")),
        "Basic d3JpdGVyOg=="
    );
    assert_eq!(
        authorization_of(&upstream("  authorization:\n    credentials: tok\n")),
        "Bearer tok"
    );
    assert_eq!(
        authorization_of(&upstream(
            "  authorization:\n    type: Token\n    credentials: tok\n"
        )),
        "Token tok"
    );
}

#[test]
fn reload_compares_settings_not_connections() {
    let yaml = upstream("  authorization:\n    credentials: tok\n");
    assert_eq!(load(&yaml).unwrap(), load(&yaml).unwrap());
    assert_ne!(
        load(&yaml).unwrap(),
        load(&upstream("  authorization:\n    credentials: other\n")).unwrap()
    );
}

#[test]
fn the_example_with_tls_and_auth_loads() {
    // Relative to the working directory, which is the crate root under cargo test.
    let c = Config::load(Path::new("testdata/config/valid/upstream_tls.yml")).unwrap();
    let routing = c.routing.unwrap();
    let up = &routing.upstreams[0];
    let s = up.client.as_ref().unwrap().settings();
    assert_eq!(s.authorization.as_ref().unwrap().kind, "Bearer");
    assert!(s.tls.ca_file.is_some());
}
