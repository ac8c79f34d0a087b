//! `basic_auth_users`: checking a request's `Authorization: Basic` against bcrypt hashes.
//!
//! bcrypt is slow on purpose (tens of milliseconds at cost 10), and a remote-write sender sends
//! the same credentials with every request, so verifications that succeeded are remembered, as
//! the exporter toolkit does, under a SHA-256 of user, password and hash: the cache holds no
//! password, and a changed hash misses it. Failures are not remembered (they cannot fill the
//! cache), and one bcrypt runs at a time, off the async threads, so that a flood of wrong
//! passwords costs one core at most. An unknown user is checked against a dummy hash, so that
//! the answer takes as long as for a known one.

use std::collections::{BTreeMap, HashSet};
use std::sync::Mutex;

use base64::Engine as _;
use http::HeaderValue;

/// Successful verifications remembered; beyond this the cache starts over (a sender's next
/// request pays one bcrypt).
const CACHE_ENTRIES: usize = 1024;

/// A bcrypt hash at cost 10 of nothing anyone sends, for unknown users.
const DUMMY_HASH: &str = "$2y$10$QOauhQNbBCuQDKes6eFzPeMqBSjb7Mr5DUmpZ/VcEd00UAV/LDeSi";

/// Why a request was not authenticated, as `cardguard_http_auth_failures_total{reason}`
/// counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthFailure {
    /// No `Authorization: Basic` header, or one that does not decode.
    Missing,
    /// An unknown user or a wrong password.
    Wrong,
}

impl AuthFailure {
    pub fn reason(self) -> &'static str {
        match self {
            AuthFailure::Missing => "missing",
            AuthFailure::Wrong => "wrong",
        }
    }
}

/// Credentials as sent.
pub struct Credentials {
    pub user: String,
    password: String,
}

/// Decode an `Authorization: Basic` header.
pub fn parse(header: Option<&HeaderValue>) -> Option<Credentials> {
    let v = header?.to_str().ok()?;
    let (scheme, b64) = v.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (user, password) = text.split_once(':')?;
    Some(Credentials {
        user: user.to_string(),
        password: password.to_string(),
    })
}

/// The users of one version of the web config and the verifications that succeeded with it.
#[derive(Debug, Default)]
pub struct Users {
    hashes: BTreeMap<String, String>,
    verified: Mutex<HashSet<[u8; 32]>>,
}

impl Users {
    pub fn new(hashes: BTreeMap<String, String>) -> Users {
        Users {
            hashes,
            verified: Mutex::default(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.hashes.is_empty()
    }

    /// What verifying `c` will take: `Ok` if it is remembered as verified, else the work to
    /// do (run it with `Pending::verify`, off the async threads).
    pub fn check(&self, c: Credentials) -> Result<String, Pending> {
        let hash = self.hashes.get(&c.user);
        let key = cache_key(&c, hash.map_or("", String::as_str));
        if hash.is_some() && self.lock().contains(&key) {
            return Ok(c.user);
        }
        Err(Pending {
            known: hash.is_some(),
            hash: hash.map_or(DUMMY_HASH, String::as_str).to_string(),
            key,
            credentials: c,
        })
    }

    /// Remember a verification that succeeded.
    pub fn remember(&self, v: Verified) -> String {
        let mut cache = self.lock();
        if cache.len() >= CACHE_ENTRIES {
            cache.clear();
        }
        cache.insert(v.key);
        v.user
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<[u8; 32]>> {
        self.verified.lock().unwrap_or_else(|e| e.into_inner())
    }

    #[cfg(test)]
    pub fn remembered(&self) -> usize {
        self.lock().len()
    }
}

/// A bcrypt verification still to run.
pub struct Pending {
    known: bool,
    hash: String,
    key: [u8; 32],
    credentials: Credentials,
}

/// Credentials bcrypt accepted, to remember (`Users::remember`).
pub struct Verified {
    user: String,
    key: [u8; 32],
}

impl Pending {
    /// Run bcrypt: blocking, tens of milliseconds.
    pub fn verify(self) -> Result<Verified, AuthFailure> {
        let ok = bcrypt::verify(&self.credentials.password, &self.hash).unwrap_or(false);
        if !(ok && self.known) {
            return Err(AuthFailure::Wrong);
        }
        Ok(Verified {
            user: self.credentials.user,
            key: self.key,
        })
    }
}

fn cache_key(c: &Credentials, hash: &str) -> [u8; 32] {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    // Length-prefixed, so that no two different triples hash the same bytes.
    for part in [c.user.as_bytes(), c.password.as_bytes(), hash.as_bytes()] {
        ctx.update(&(part.len() as u64).to_le_bytes());
        ctx.update(part);
    }
    let mut key = [0u8; 32];
    key.copy_from_slice(ctx.finish().as_ref());
    key
}
