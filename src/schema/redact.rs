//! Redaction of one series' label values: hashed or removed, before any later stage (the
//! guard's sketches, the rules' buffers, the upstream) can see them.

use xxhash_rust::xxh3::xxh3_64;

use super::{RedactAction, SchemaConfig};
use crate::series::OwnedLabels;

/// Apply the redaction rules. `Some(labels)` when anything was redacted.
pub fn redact<'a, I>(cfg: &SchemaConfig, labels: I) -> Option<OwnedLabels>
where
    I: Iterator<Item = (&'a [u8], &'a [u8])> + Clone,
{
    if cfg.redact.is_empty() {
        return None;
    }
    let hit = |name: &[u8], value: &[u8]| -> Option<RedactAction> {
        if name == b"__name__" {
            return None;
        }
        let value = std::str::from_utf8(value).ok()?;
        cfg.redact
            .iter()
            .find(|r| {
                (r.labels.is_empty() || r.labels.iter().any(|l| l.as_bytes() == name))
                    && r.regex.is_match(value)
            })
            .map(|r| r.action)
    };
    if !labels.clone().any(|(n, v)| hit(n, v).is_some()) {
        return None;
    }
    let mut out = OwnedLabels::new();
    for (name, value) in labels {
        match hit(name, value) {
            None => out.push((name.to_vec(), value.to_vec())),
            Some(RedactAction::DropLabel) => {}
            Some(RedactAction::Hash) => {
                out.push((
                    name.to_vec(),
                    format!("redacted:{:016x}", xxh3_64(value)).into_bytes(),
                ));
            }
        }
    }
    Some(out)
}
