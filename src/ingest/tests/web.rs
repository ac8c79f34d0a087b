//! The web config on a running server: TLS with HTTP/2 chosen by ALPN, basic auth on every
//! endpoint (401 with `WWW-Authenticate: Basic`), the configured response headers, the
//! authenticated user as the tenant sent upstream, and `/-/reload` refused without the
//! lifecycle flag.

use base64::Engine as _;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;

use super::*;
use crate::ingest::web::WebSource;

type Https = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// A client trusting only `ca_pem`, offering h2 and http/1.1 by ALPN.
fn https_client(ca_pem: &str) -> Https {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pki_types::CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_only()
        .enable_all_versions()
        .build();
    Client::builder(TokioExecutor::new()).build(connector)
}

fn basic(user: &str, password: &str) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Basic {b64}")
}

async fn send(
    client: &Https,
    req: http::request::Builder,
    body: Bytes,
) -> (StatusCode, http::HeaderMap, http::Version, String) {
    let resp = client
        .request(req.body(Full::new(body)).unwrap())
        .await
        .unwrap();
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    (
        parts.status,
        parts.headers,
        parts.version,
        String::from_utf8_lossy(&body).into_owned(),
    )
}

#[tokio::test]
async fn tls_h2_basic_auth_and_the_user_as_tenant() {
    let dir = tempfile::tempdir().unwrap();
    let (_, ca_pem) = crate::ingest::web::tests::certificates(dir.path(), "server");
    let web_file = dir.path().join("web.yml");
    std::fs::write(
        &web_file,
        format!(
            "tls_server_config:\n  cert_file: server.pem\n  key_file: server-key.pem\n\
             http_server_config:\n  headers:\n    X-Frame-Options: deny\n\
             basic_auth_users:\n  team-a: \"{}\"\n\
             tenant_from_user: true\n",
            bcrypt::hash("pw", 4).unwrap()
        ),
    )
    .unwrap();
    let source = ConfigSource {
        file: None,
        overrides: Overrides {
            upstream_url: Some("http://127.0.0.1:1/api/v1/write".into()),
            ..Default::default()
        },
        web: WebSource {
            config_file: Some(web_file),
            enable_lifecycle: false,
        },
    };
    let h = start(Version::V1, source).await;
    let client = https_client(&ca_pem);
    let base = format!("https://127.0.0.1:{}", h.addr.port());
    let write = || {
        Request::post(format!("{base}/api/v1/write"))
            .header("content-type", "application/x-protobuf")
            .header("content-encoding", "snappy")
    };
    let body = compress(&v1_request().encode_to_vec());

    // The sender claims another tenant; the user it authenticated as is what goes upstream.
    let (status, headers, version, text) = send(
        &client,
        write()
            .header("authorization", basic("team-a", "pw"))
            .header("x-scope-orgid", "team-b"),
        body.clone(),
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{text}");
    assert_eq!(version, http::Version::HTTP_2, "h2 by ALPN");
    assert_eq!(headers.get("x-frame-options").unwrap(), "deny");
    let got = h.upstream.received();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].header("x-scope-orgid"), Some("team-a"));

    // No credentials, a wrong password, an unknown user: 401 on every endpoint.
    for auth in [
        None,
        Some(basic("team-a", "nope")),
        Some(basic("team-b", "pw")),
    ] {
        for path in ["/api/v1/write", "/metrics", "/-/healthy"] {
            let mut req = Request::get(format!("{base}{path}"));
            if path == "/api/v1/write" {
                req = write();
            }
            if let Some(a) = &auth {
                req = req.header("authorization", a);
            }
            let (status, headers, _, _) = send(&client, req, body.clone()).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{path} {auth:?}");
            assert_eq!(headers.get("www-authenticate").unwrap(), "Basic");
            assert_eq!(headers.get("x-frame-options").unwrap(), "deny");
        }
    }
    assert_eq!(h.upstream.received().len(), 1);

    // Without --web.enable-lifecycle, /-/reload is refused (SIGHUP would still reload).
    let (status, _, _, text) = send(
        &client,
        Request::post(format!("{base}/-/reload")).header("authorization", basic("team-a", "pw")),
        Bytes::new(),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(text, "Lifecycle API is not enabled.\n");

    let (status, _, version, metrics) = send(
        &client,
        Request::get(format!("{base}/metrics")).header("authorization", basic("team-a", "pw")),
        Bytes::new(),
    )
    .await;
    assert_eq!((status, version), (StatusCode::OK, http::Version::HTTP_2));
    for line in [
        "cardguard_http_auth_failures_total{reason=\"missing\"} 3",
        "cardguard_http_auth_failures_total{reason=\"wrong\"} 6",
        "cardguard_write_requests_total{code=\"401\"} 3",
    ] {
        assert!(metrics.contains(line), "{line} not in\n{metrics}");
    }

    // Plain HTTP on the TLS port: the handshake fails and is counted.
    let plain = Request::get(format!("http://{}/-/healthy", h.addr))
        .body(Full::new(Bytes::new()))
        .unwrap();
    assert!(h.client.request(plain).await.is_err());
    assert_eq!(h.state.web.metrics.tls_handshake_failures.get(), 1);
}

#[tokio::test]
async fn reload_answers_with_the_lifecycle_flag() {
    let source = ConfigSource {
        overrides: Overrides {
            upstream_url: Some("http://127.0.0.1:1/api/v1/write".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    let h = start(Version::V1, source.clone()).await;
    let post = |h: &Harness| {
        let req = Request::post(format!("http://{}/-/reload", h.addr))
            .body(Full::new(Bytes::new()))
            .unwrap();
        h.client.request(req)
    };
    assert_eq!(post(&h).await.unwrap().status(), StatusCode::FORBIDDEN);
    // Other methods are still 405.
    assert_eq!(h.get("/-/reload").await.0, StatusCode::METHOD_NOT_ALLOWED);
    let h = start(
        Version::V1,
        ConfigSource {
            web: WebSource {
                enable_lifecycle: true,
                ..Default::default()
            },
            ..source
        },
    )
    .await;
    assert_eq!(post(&h).await.unwrap().status(), StatusCode::OK);
}
