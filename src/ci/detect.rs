//! Label values that look like identifiers: a label carrying them takes a new value per user,
//! request, object or moment, so its series grow without bound. A heuristic on the values a
//! test run produced; the verdict needs two distinct such values of one label (see `ci::verdict`),
//! so a build's one commit hash in an `*_info` series is not taken for one.

/// What an identifier-like value looks like, for the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum IdKind {
    Uuid,
    Email,
    Timestamp,
    LongNumber,
    Hash,
    PathWithId,
}

impl IdKind {
    pub fn describe(self) -> &'static str {
        match self {
            IdKind::Uuid => "UUIDs",
            IdKind::Email => "email addresses",
            IdKind::Timestamp => "timestamps",
            IdKind::LongNumber => "long numbers",
            IdKind::Hash => "hashes",
            IdKind::PathWithId => "URLs or paths with ids",
        }
    }
}

/// Labels whose values are bounds chosen in code, never identifiers.
pub fn exempt(label: &str) -> bool {
    matches!(label, "__name__" | "le" | "quantile")
}

/// Digits from which a number is taken for an id (6: order and user numbers; a port or a
/// status code has fewer).
const LONG_NUMBER: usize = 6;
/// Hex digits from which a string is taken for a hash (a short git hash has 7; 12 keeps
/// words like "deadbeef" out).
const HASH: usize = 12;

/// What `value` looks like, if it looks like an identifier.
pub fn identifier(value: &str) -> Option<IdKind> {
    if value.is_empty() {
        return None;
    }
    if is_uuid(value) {
        return Some(IdKind::Uuid);
    }
    if is_email(value) {
        return Some(IdKind::Email);
    }
    if is_iso_timestamp(value) {
        return Some(IdKind::Timestamp);
    }
    if value.bytes().all(|b| b.is_ascii_digit()) {
        // Unix seconds or milliseconds of this century: 10 or 13 digits starting with 1.
        if (value.len() == 10 || value.len() == 13) && value.starts_with('1') {
            return Some(IdKind::Timestamp);
        }
        return (value.len() >= LONG_NUMBER).then_some(IdKind::LongNumber);
    }
    if is_hash(value) {
        return Some(IdKind::Hash);
    }
    if value.contains('/')
        && value
            .split(['/', '?', '&', '=', '#', ';'])
            .any(segment_is_id)
    {
        return Some(IdKind::PathWithId);
    }
    None
}

/// A path segment that names one object: a number, a UUID, a hash.
fn segment_is_id(seg: &str) -> bool {
    (!seg.is_empty() && seg.bytes().all(|b| b.is_ascii_digit())) || is_uuid(seg) || is_hash(seg)
}

fn is_uuid(v: &str) -> bool {
    let b = v.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

fn is_hash(v: &str) -> bool {
    // Also the `redacted:<16 hex>` values of a `hash` redaction: still one value per input.
    let v = v.strip_prefix("redacted:").unwrap_or(v);
    v.len() >= HASH
        && v.bytes().all(|b| b.is_ascii_hexdigit())
        && v.bytes().any(|b| b.is_ascii_digit())
        && v.bytes().any(|b| b.is_ascii_alphabetic())
}

fn is_email(v: &str) -> bool {
    let Some((local, domain)) = v.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && !local.contains(char::is_whitespace)
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && domain
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
}

/// `2024-05-01T12:00:00...` or `2024-05-01 12:00:00...`.
fn is_iso_timestamp(v: &str) -> bool {
    let b = v.as_bytes();
    let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    b.len() >= 16
        && digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && (b[10] == b'T' || b[10] == b' ')
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_and_not() {
        let ids: &[(&str, IdKind)] = &[
            ("3f2504e0-4f89-11d3-9a0c-0305e82c3301", IdKind::Uuid),
            ("alice@example.com", IdKind::Email),
            ("2024-05-01T12:00:00Z", IdKind::Timestamp),
            ("1714564800", IdKind::Timestamp),
            ("1714564800123", IdKind::Timestamp),
            ("10293847", IdKind::LongNumber),
            ("e83c5163316f89bfbde7d9ab23ca2e25604af290", IdKind::Hash),
            ("redacted:0a1b2c3d4e5f6789", IdKind::Hash),
            ("/api/users/42/orders", IdKind::PathWithId),
            (
                "/items/3f2504e0-4f89-11d3-9a0c-0305e82c3301",
                IdKind::PathWithId,
            ),
            ("https://x.example/cart?id=991", IdKind::PathWithId),
        ];
        for (v, kind) in ids {
            assert_eq!(identifier(v), Some(*kind), "{v}");
        }
        let plain = [
            "",
            "200",
            "GET",
            "8080",
            "checkout",
            "/api/v1/users",
            "/healthz",
            "0.005",
            "+Inf",
            "us-east-1",
            "deadbeef",
            "1.2.3",
            "v2",
            "10.0.0.1:9090",
            "a@b",
        ];
        for v in plain {
            assert_eq!(identifier(v), None, "{v}");
        }
    }
}
