//! `guard.tenants`: allowed tenants pass, unknown ones are refused 403 (or mapped to the
//! policy's default, which is what goes upstream), a tenant header that is not UTF-8 is 400.

use super::*;

const POLICY: &str = "guard:\n  tenant_header: X-Scope-OrgID\n  tenants:\n    allow: [team-a]\n    allow_regex: 'team-b-.*'\n";

/// POST `body` with `tenant` (raw bytes, possibly not UTF-8) as X-Scope-OrgID.
async fn post_as(h: &Harness, tenant: Option<&[u8]>, body: Bytes) -> (StatusCode, String) {
    let mut b = Request::post(format!("http://{}/api/v1/write", h.addr))
        .header("content-type", "application/x-protobuf")
        .header("content-encoding", "snappy");
    if let Some(t) = tenant {
        b = b.header("x-scope-orgid", http::HeaderValue::from_bytes(t).unwrap());
    }
    let resp = h
        .client
        .request(b.body(Full::new(body)).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

fn body() -> Bytes {
    compress(&v1_request().encode_to_vec())
}

#[tokio::test]
async fn unknown_tenants_are_403_and_non_utf8_is_400() {
    let (h, _dir) = start_yaml(POLICY).await;
    for allowed in [&b"team-a"[..], b"team-b-7"] {
        assert_eq!(
            post_as(&h, Some(allowed), body()).await.0,
            StatusCode::NO_CONTENT
        );
    }
    let (status, text) = post_as(&h, Some(b"team-c"), body()).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(text.contains("\"team-c\" is not allowed"), "{text}");
    assert_eq!(post_as(&h, None, body()).await.0, StatusCode::FORBIDDEN);
    let (status, text) = post_as(&h, Some(b"team-\xff"), body()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(text.contains("not valid UTF-8"), "{text}");
    // Only the two allowed requests went upstream.
    assert_eq!(h.upstream.received().len(), 2);
    let (_, metrics) = h.get("/metrics").await;
    assert!(
        metrics.contains("cardguard_write_requests_rejected_total{reason=\"tenant\"} 3"),
        "{metrics}"
    );
    // Every bound next to its use, the stages' rows in one family.
    for line in [
        "cardguard_guard_tenants 2",
        "cardguard_guard_tenants_limit 1000",
        "cardguard_memory_limit_bytes{structure=\"guard_overflow\"} 67108864",
        "cardguard_memory_bytes{structure=\"rules_output_queue\"} 0",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "{line} not in\n{metrics}"
        );
    }
    assert!(
        metrics.contains("cardguard_memory_bytes{structure=\"guard_owners\"}"),
        "{metrics}"
    );
}

#[tokio::test]
async fn non_utf8_tenant_is_400_without_a_policy_too() {
    let (h, _dir) = start_yaml("guard:\n  tenant_header: X-Scope-OrgID\n").await;
    assert_eq!(
        post_as(&h, Some(b"\xfe"), body()).await.0,
        StatusCode::BAD_REQUEST
    );
    assert!(h.upstream.received().is_empty());
}

#[tokio::test]
async fn unknown_tenants_map_to_the_default_which_goes_upstream() {
    let (h, _dir) = start_yaml(&format!("{POLICY}    default: shared\n")).await;
    assert_eq!(
        post_as(&h, Some(b"team-c"), body()).await.0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        post_as(&h, Some(b"team-a"), body()).await.0,
        StatusCode::NO_CONTENT
    );
    let got = h.upstream.received();
    let tenants: Vec<_> = got.iter().map(|r| r.header("x-scope-orgid")).collect();
    assert_eq!(tenants, [Some("shared"), Some("team-a")]);
    let (_, metrics) = h.get("/metrics").await;
    assert!(
        metrics.contains("tenant=\"shared\"") && !metrics.contains("team-c"),
        "{metrics}"
    );
}
