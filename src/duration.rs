//! Durations written the way Prometheus writes them: `30s`, `1m`, `1h30m`, `500ms`, `1d`.
//!
//! Shared by the YAML config and the command line so both accept the same spelling.

use std::fmt;
use std::time::Duration;

/// A Prometheus-style duration, as read from YAML or a flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct PromDuration(pub Duration);

/// Why a duration string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a valid duration string: {0:?} (expected e.g. 30s, 1m, 1h30m, 500ms)")]
pub struct ParseDurationError(pub String);

const UNITS: &[(&str, u64)] = &[
    ("ms", 1),
    ("s", 1000),
    ("m", 60 * 1000),
    ("h", 60 * 60 * 1000),
    ("d", 24 * 60 * 60 * 1000),
    ("w", 7 * 24 * 60 * 60 * 1000),
    ("y", 365 * 24 * 60 * 60 * 1000),
];

/// Parse `1h30m`-style strings. Units must appear from largest to smallest, each at most once,
/// as in Prometheus's `model.ParseDuration`; `0` alone is accepted.
pub fn parse(s: &str) -> Result<Duration, ParseDurationError> {
    let err = || ParseDurationError(s.to_string());
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() {
        return Err(err());
    }
    let mut rest = s;
    let mut total: u64 = 0;
    // Position in UNITS (smallest first); each unit must be smaller than the one before.
    let mut last_rank = usize::MAX;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(err());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| err())?;
        rest = &rest[digits..];
        // "ms" must be tried before "m".
        let (unit, ms) = UNITS
            .iter()
            .find(|(u, _)| rest.starts_with(u))
            .ok_or_else(err)?;
        let rank = UNITS.iter().position(|(u, _)| u == unit).unwrap_or(0);
        if rank >= last_rank {
            return Err(err());
        }
        last_rank = rank;
        rest = &rest[unit.len()..];
        total = n
            .checked_mul(*ms)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(err)?;
    }
    Ok(Duration::from_millis(total))
}

impl std::str::FromStr for PromDuration {
    type Err = ParseDurationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse(s).map(PromDuration)
    }
}

impl fmt::Display for PromDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut ms = self.0.as_millis() as u64;
        if ms == 0 {
            return f.write_str("0s");
        }
        for (unit, size) in UNITS.iter().rev() {
            if *unit == "ms" {
                continue;
            }
            if ms >= *size {
                write!(f, "{}{}", ms / size, unit)?;
                ms %= size;
            }
        }
        if ms > 0 {
            write!(f, "{ms}ms")?;
        }
        Ok(())
    }
}

impl<'de> serde::Deserialize<'de> for PromDuration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_prometheus_spellings() {
        let ms = |s: &str| parse(s).map(|d| d.as_millis() as u64);
        assert_eq!(ms("0"), Ok(0));
        assert_eq!(ms("500ms"), Ok(500));
        assert_eq!(ms("30s"), Ok(30_000));
        assert_eq!(ms("1m"), Ok(60_000));
        assert_eq!(ms("1h30m"), Ok(5_400_000));
        assert_eq!(ms("1d"), Ok(86_400_000));
        assert_eq!(ms("2w"), Ok(14 * 86_400_000));
        assert_eq!(ms("1m30s500ms"), Ok(90_500));
    }

    #[test]
    fn refuses_malformed() {
        for s in [
            "",
            "s",
            "10",
            "1x",
            "30s1m",
            "1m1m",
            "-1s",
            "1.5s",
            "9999999999999999999y",
        ] {
            assert!(parse(s).is_err(), "{s:?} should be refused");
        }
    }

    #[test]
    fn display_round_trips() {
        for s in ["0s", "500ms", "30s", "1m", "1h30m", "1d", "1m30s500ms"] {
            let d: PromDuration = s.parse().unwrap();
            assert_eq!(d.to_string(), s);
        }
    }
}
