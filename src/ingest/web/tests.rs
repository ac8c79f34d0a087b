use std::path::Path;

use super::auth::{self, AuthFailure, Users};
use super::config::{ClientAuth, TlsVersion, WebConfig, WebConfigError};
use super::*;

fn parse(yaml: &str) -> Result<WebConfig, Vec<WebConfigError>> {
    WebConfig::from_yaml(yaml, Path::new("/etc/cardguard"))
}

/// A bcrypt hash cheap enough for tests (cost 4).
fn hash(password: &str) -> String {
    bcrypt::hash(password, 4).unwrap()
}

#[test]
fn a_full_web_config_parses_with_paths_from_its_directory() {
    let h = hash("secret");
    let c = parse(&format!(
        r#"
tls_server_config:
  cert_file: server.pem
  key_file: /abs/server-key.pem
  client_auth_type: RequireAndVerifyClientCert
  client_ca_file: ca.pem
  min_version: TLS13
  cipher_suites: [TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256, TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305]
http_server_config:
  http2: false
  headers:
    X-Frame-Options: deny
basic_auth_users:
  prometheus: "{h}"
tenant_from_user: true
"#
    ))
    .unwrap();
    let t = c.tls.as_ref().unwrap();
    assert_eq!(t.cert_file, Path::new("/etc/cardguard/server.pem"));
    assert_eq!(t.key_file, Path::new("/abs/server-key.pem"));
    assert_eq!(t.client_auth, ClientAuth::RequireAndVerifyClientCert);
    assert_eq!(
        t.client_ca_file.as_deref(),
        Some(Path::new("/etc/cardguard/ca.pem"))
    );
    assert_eq!(
        (t.min_version, t.max_version),
        (TlsVersion::TLS13, TlsVersion::TLS13)
    );
    assert!(!c.http2);
    assert_eq!(c.headers[0].0.as_str(), "x-frame-options");
    assert_eq!(c.users["prometheus"], h);
    assert!(c.tenant_from_user);
}

#[test]
fn an_empty_file_is_an_empty_config() {
    for yaml in ["", "# nothing\n", "{}"] {
        let c = parse(yaml).unwrap();
        assert!(c.tls.is_none() && c.users.is_empty() && c.headers.is_empty());
        assert!(c.http2);
    }
}

#[test]
fn every_problem_is_reported_and_no_secret_is_printed() {
    let cases: &[(&str, &[&str])] = &[
        ("tls_server_config: {}\n", &["cert_file is required", "key_file is required"]),
        (
            "tls_server_config: {cert_file: a, key_file: b, client_ca_file: c}\n",
            &["client_auth_type is NoClientCert"],
        ),
        (
            "tls_server_config: {cert_file: a, key_file: b, client_auth_type: VerifyClientCertIfGiven}\n",
            &["needs client_ca_file"],
        ),
        (
            "tls_server_config: {cert_file: a, key_file: b, min_version: TLS13, max_version: TLS12}\n",
            &["min_version TLS13 is above max_version TLS12"],
        ),
        (
            "tls_server_config: {cert_file: a, key_file: b, cipher_suites: [TLS_RSA_WITH_RC4_128_SHA]}\n",
            &["TLS_RSA_WITH_RC4_128_SHA"],
        ),
        ("tls_server_config: {cert_file: a, key_file: b, min_version: TLS10}\n", &["TLS10"]),
        ("tls_server_config: {client_auth_type: Sometimes}\n", &["Sometimes"]),
        ("tls_server_config: {cert: inline}\n", &["cert"]),
        (
            "basic_auth_users:\n  alice: hunter2-not-a-hash\n  'b:ob': $2y$04$abcdefghijklmnopqrstuu5Zb2Yn5Yi1W3zY0yZt5cVh0yWl0Gf1i\n",
            &["basic_auth_users.alice: not a bcrypt hash", "\"b:ob\" cannot be a basic auth user name"],
        ),
        ("tenant_from_user: true\n", &["tenant_from_user needs basic_auth_users"]),
        (
            "http_server_config:\n  headers:\n    Set-Cookie: x\n    X-Frame-Options: \"a\\nb\"\n",
            &["\"Set-Cookie\" cannot be set", "X-Frame-Options: not a valid header value"],
        ),
        ("unknown_key: 1\n", &["unknown_key"]),
    ];
    for (yaml, wants) in cases {
        let errs = parse(yaml).expect_err(yaml);
        let text = errs
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n");
        for want in *wants {
            assert!(text.contains(want), "{yaml}: {want:?} not in:\n{text}");
        }
        assert!(
            !text.contains("hunter2"),
            "{yaml}: a secret printed:\n{text}"
        );
    }
    // All of a file's problems at once.
    let errs = parse(
        "tls_server_config: {min_version: TLS13, max_version: TLS12}\ntenant_from_user: true\n",
    )
    .unwrap_err();
    assert_eq!(errs.len(), 4, "{errs:?}");
}

/// A CA, and a certificate for 127.0.0.1 signed by it, as PEM files in `dir`.
pub(crate) fn certificates(dir: &Path, name: &str) -> (std::path::PathBuf, String) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = rcgen::CertifiedIssuer::self_signed(params, ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    std::fs::write(dir.join(format!("{name}.pem")), cert.pem()).unwrap();
    std::fs::write(dir.join(format!("{name}-key.pem")), key.serialize_pem()).unwrap();
    std::fs::write(dir.join(format!("{name}-ca.pem")), ca.pem()).unwrap();
    (dir.join(format!("{name}-ca.pem")), ca.pem())
}

#[test]
fn every_client_auth_type_builds_and_a_bad_key_names_its_file() {
    let dir = tempfile::tempdir().unwrap();
    certificates(dir.path(), "s");
    for (auth, ca) in [
        ("NoClientCert", ""),
        ("RequestClientCert", ""),
        ("RequireAnyClientCert", ""),
        ("VerifyClientCertIfGiven", "client_ca_file: s-ca.pem"),
        ("RequireAndVerifyClientCert", "client_ca_file: s-ca.pem"),
    ] {
        let yaml = format!(
            "tls_server_config:\n  cert_file: s.pem\n  key_file: s-key.pem\n  client_auth_type: {auth}\n  {ca}\n"
        );
        let c = WebConfig::from_yaml(&yaml, dir.path()).unwrap();
        let sc = tls::server_config(c.tls.as_ref().unwrap(), true).unwrap();
        assert_eq!(sc.alpn_protocols, [b"h2".to_vec(), b"http/1.1".to_vec()]);
    }
    std::fs::write(dir.path().join("bad-key.pem"), "not a key").unwrap();
    let c = WebConfig::from_yaml(
        "tls_server_config: {cert_file: s.pem, key_file: bad-key.pem}\n",
        dir.path(),
    )
    .unwrap();
    let e = tls::server_config(c.tls.as_ref().unwrap(), false).unwrap_err();
    assert!(
        matches!(&e, WebConfigError::File { key: "key_file", path, .. } if path.ends_with("bad-key.pem")),
        "{e}"
    );
    // A file that loads: `Loaded::load` reads everything and names the files to watch.
    let file = dir.path().join("web.yml");
    std::fs::write(
        &file,
        "tls_server_config: {cert_file: s.pem, key_file: s-key.pem}\n",
    )
    .unwrap();
    let (loaded, files) = Loaded::load(&file).unwrap();
    assert!(loaded.tls.is_some());
    assert_eq!(files.len(), 3);
}

#[test]
fn basic_auth_headers_decode() {
    use base64::Engine as _;
    let enc = |s: &str| {
        http::HeaderValue::from_str(&format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(s)
        ))
        .unwrap()
    };
    let c = auth::parse(Some(&enc("alice:pa:ss"))).unwrap();
    assert_eq!(c.user, "alice");
    assert!(auth::parse(Some(&enc("no-colon"))).is_none());
    assert!(auth::parse(None).is_none());
    assert!(auth::parse(Some(&http::HeaderValue::from_static("Bearer x"))).is_none());
    assert!(auth::parse(Some(&http::HeaderValue::from_static("Basic !!!"))).is_none());
    let lower =
        http::HeaderValue::from_str(&enc("bob:x").to_str().unwrap().replace("Basic", "basic"))
            .unwrap();
    assert_eq!(auth::parse(Some(&lower)).unwrap().user, "bob");
}

fn creds(user: &str, password: &str) -> auth::Credentials {
    use base64::Engine as _;
    let v = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    );
    auth::parse(Some(&http::HeaderValue::from_str(&v).unwrap())).unwrap()
}

#[test]
fn a_verified_password_is_remembered_and_a_wrong_one_is_not() {
    let users = Users::new([("alice".to_string(), hash("right"))].into());
    // First time: bcrypt.
    let pending = users.check(creds("alice", "right")).unwrap_err();
    let user = users.remember(pending.verify().unwrap());
    assert_eq!(user, "alice");
    assert_eq!(users.remembered(), 1);
    // Then from the cache, without bcrypt.
    assert_eq!(users.check(creds("alice", "right")).ok().unwrap(), "alice");
    // A wrong password, an unknown user (checked against the dummy hash): refused, not cached.
    for (u, p) in [("alice", "wrong"), ("mallory", "right"), ("alice", "")] {
        let pending = users.check(creds(u, p)).unwrap_err();
        assert_eq!(pending.verify().err(), Some(AuthFailure::Wrong));
    }
    assert_eq!(users.remembered(), 1);
    // Another version of the users (a new hash for alice) does not share the cache.
    let rotated = Users::new([("alice".to_string(), hash("new"))].into());
    assert!(rotated.check(creds("alice", "right")).is_err());
}

#[tokio::test]
async fn authenticate_counts_failures_by_reason() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("web.yml");
    std::fs::write(
        &file,
        format!("basic_auth_users:\n  alice: \"{}\"\n", hash("pw")),
    )
    .unwrap();
    let registry = prometheus::Registry::new();
    let web = Web::new(
        &WebSource {
            config_file: Some(file),
            enable_lifecycle: false,
        },
        &registry,
    )
    .unwrap();
    let w = web.current().unwrap();
    let header = |u: &str, p: &str| {
        use base64::Engine as _;
        http::HeaderValue::from_str(&format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
        ))
        .unwrap()
    };
    assert_eq!(
        web.authenticate(&w, Some(&header("alice", "pw"))).await,
        Ok("alice".into())
    );
    assert_eq!(
        web.authenticate(&w, Some(&header("alice", "nope"))).await,
        Err(AuthFailure::Wrong)
    );
    assert_eq!(web.authenticate(&w, None).await, Err(AuthFailure::Missing));
    let m = &web.metrics.auth_failures;
    assert_eq!(m.with_label_values(&["wrong"]).get(), 1);
    assert_eq!(m.with_label_values(&["missing"]).get(), 1);
}

#[test]
fn a_broken_file_refuses_to_start_with_its_name_and_problem() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("web.yml");
    std::fs::write(
        &file,
        "tls_server_config: {cert_file: gone.pem, key_file: gone-key.pem}\n",
    )
    .unwrap();
    let e = Web::new(
        &WebSource {
            config_file: Some(file.clone()),
            enable_lifecycle: false,
        },
        &prometheus::Registry::new(),
    )
    .err()
    .unwrap()
    .to_string();
    assert!(e.starts_with(&file.display().to_string()), "{e}");
    assert!(
        e.contains("tls_server_config.cert_file") && e.contains("gone.pem"),
        "{e}"
    );
}

#[test]
fn a_changed_file_is_read_again_and_a_broken_version_is_counted() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("web.yml");
    std::fs::write(
        &file,
        format!("basic_auth_users: {{a: \"{}\"}}\n", hash("x")),
    )
    .unwrap();
    let web = Web::new(
        &WebSource {
            config_file: Some(file.clone()),
            enable_lifecycle: false,
        },
        &prometheus::Registry::new(),
    )
    .unwrap();
    assert!(web.current().unwrap().config.users.contains_key("a"));
    std::fs::write(&file, "basic_auth_users: {a: not-a-hash}\n").unwrap();
    assert!(web.check_now().is_err());
    assert!(web.current().unwrap().config.users.contains_key("a"));
    assert_eq!(web.metrics.reload_failures.get(), 1);
    std::fs::write(
        &file,
        format!("basic_auth_users: {{bb: \"{}\"}}\n", hash("x")),
    )
    .unwrap();
    web.check_now().unwrap();
    assert!(web.current().unwrap().config.users.contains_key("bb"));
}
