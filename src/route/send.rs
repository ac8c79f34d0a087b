//! Sending a split request: every part to its upstream at once; the sender is acknowledged
//! only when every upstream that received part of the request acknowledged it.

use std::sync::Arc;

use http::HeaderValue;

use super::split::Part;
use super::Routing;
use crate::forward::{FailureClass, ForwardError, Forwarder, Outgoing};

/// The outcome of each part, in the order given.
pub async fn send_all(
    forwarder: &Forwarder,
    routing: &Arc<Routing>,
    parts: &[Part],
    tenant: Option<HeaderValue>,
) -> Vec<Result<(), ForwardError>> {
    if let [p] = parts {
        // One upstream: no task to spawn.
        let up = &routing.upstreams[p.upstream];
        let out = Outgoing {
            body: p.body.clone(),
            version: p.version,
            tenant,
        };
        return vec![forwarder.send(up, out).await];
    }
    let mut set = tokio::task::JoinSet::new();
    for (k, p) in parts.iter().enumerate() {
        let (f, r, t) = (forwarder.clone(), routing.clone(), tenant.clone());
        let out = Outgoing {
            body: p.body.clone(),
            version: p.version,
            tenant: t,
        };
        let u = p.upstream;
        set.spawn(async move { (k, f.send(&r.upstreams[u], out).await) });
    }
    let mut results: Vec<Option<Result<(), ForwardError>>> =
        (0..parts.len()).map(|_| None).collect();
    while let Some(joined) = set.join_next().await {
        match joined {
            Ok((k, r)) => results[k] = Some(r),
            Err(e) => tracing::error!("upstream send task failed: {e}"),
        }
    }
    results
        .into_iter()
        .enumerate()
        .map(|(k, r)| {
            r.unwrap_or_else(|| {
                Err(ForwardError::Transport {
                    upstream: routing.upstreams[parts[k].upstream].name.clone(),
                    reason: "send task failed".into(),
                })
            })
        })
        .collect()
}

/// The one error that answers the sender when some parts failed: 429 (with its Retry-After)
/// only if every failure was a 429; an upstream's refusal of the data (400, 409, 422) passed
/// back only if every failure was such a final refusal; otherwise the first failure that makes
/// the sender retry (→ 503: a 5xx, a timeout, or an upstream refusing cardguard's own request,
/// `FailureClass::Config`), so the whole request comes again and the upstreams that did take
/// it get identical duplicates. Any upstream that needs a retry gets one.
pub fn answer(failures: Vec<ForwardError>) -> Option<ForwardError> {
    let is_429 = |e: &ForwardError| e.class() == FailureClass::TooManyRequests;
    let is_final = |e: &ForwardError| !e.class().is_retryable();
    if failures.is_empty() {
        return None;
    }
    if failures.iter().all(is_429) || failures.iter().all(is_final) {
        return failures.into_iter().next();
    }
    // A retryable failure wins; failing that (429s mixed with final 4xx) a 429, because a
    // retry can still deliver to the upstream that was only busy.
    let pick = failures
        .iter()
        .position(|e| !is_429(e) && !is_final(e))
        .or_else(|| failures.iter().position(is_429))
        .unwrap_or(0);
    failures.into_iter().nth(pick)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http::StatusCode;

    fn status(code: u16) -> ForwardError {
        ForwardError::Status {
            upstream: format!("u{code}"),
            status: StatusCode::from_u16(code).unwrap(),
            retry_after: None,
            body: Bytes::new(),
        }
    }

    #[test]
    fn picks_the_status_that_makes_the_sender_do_the_right_thing() {
        assert!(answer(vec![]).is_none());
        let a = answer(vec![status(429), status(429)]).unwrap();
        assert_eq!(a.class(), FailureClass::TooManyRequests);
        let a = answer(vec![status(400)]).unwrap();
        assert_eq!(a.class(), FailureClass::Refused);
        // Mixed: retry everything.
        let a = answer(vec![status(429), status(503)]).unwrap();
        assert_eq!(a.class(), FailureClass::ServerError);
        let a = answer(vec![status(400), status(429)]).unwrap();
        assert_eq!(a.class(), FailureClass::TooManyRequests);
        let timeout = ForwardError::Timeout {
            upstream: "t".into(),
            timeout: std::time::Duration::from_secs(1),
        };
        let a = answer(vec![status(400), timeout]).unwrap();
        assert_eq!(a.class(), FailureClass::Timeout);
    }

    /// An upstream refusing cardguard's own request (expired token, wrong URL) must be
    /// retried whatever the others answered: a final 4xx elsewhere does not drop its data.
    #[test]
    fn a_configuration_refusal_anywhere_makes_the_sender_retry() {
        let a = answer(vec![status(401)]).unwrap();
        assert_eq!(a.class(), FailureClass::Config);
        let a = answer(vec![status(400), status(404)]).unwrap();
        assert_eq!(a.class(), FailureClass::Config);
        assert_eq!(a.to_string(), "upstream u404: answered 404 Not Found");
        let a = answer(vec![status(422), status(413), status(409)]).unwrap();
        assert_eq!(a.class(), FailureClass::Config);
        // Busy and misconfigured: retry, and not at the busy one's pace only.
        let a = answer(vec![status(429), status(403)]).unwrap();
        assert_eq!(a.class(), FailureClass::Config);
        // Two data refusals: the first goes back.
        let a = answer(vec![status(422), status(400)]).unwrap();
        assert_eq!(
            a.to_string(),
            "upstream u422: answered 422 Unprocessable Entity"
        );
    }
}
