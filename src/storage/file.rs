//! The snapshot file: a versioned header, then sections, each with its kind, length and a
//! CRC-32 (crc32fast) of its payload; written atomically (temporary file, fsync, rename,
//! fsync of the directory), so a crash leaves the previous snapshot or the new one, never
//! a mix.
//!
//! ```text
//! header   "CGSNAP\r\n" | version u32 | sections u32 | written_ms i64 | crc32 of the above
//! section  kind u32 | length u64 | crc32 of kind, length and payload u32 | payload
//! ```
//! (integers little-endian; the `\r\n` in the magic catches a file mangled as text.)

use std::fs::File;
use std::io::Write;
use std::path::Path;

use super::image::{Image, Kind};

const MAGIC: &[u8; 8] = b"CGSNAP\r\n";
/// Bumped whenever a section's encoding changes; another version is refused as incompatible.
pub const VERSION: u32 = 1;
const HEADER_BYTES: usize = 8 + 4 + 4 + 8 + 4;
const SECTION_HEADER_BYTES: usize = 4 + 8 + 4;

/// Why a snapshot could not be loaded; `reason` is the label of
/// `cardguard_snapshot_load_failures_total`.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("no snapshot at {0}")]
    Missing(String),
    #[error("cannot read the snapshot: {0}")]
    Unreadable(#[source] std::io::Error),
    #[error("the file ends early ({0})")]
    Truncated(&'static str),
    #[error("not a cardguard snapshot (wrong magic bytes)")]
    NotASnapshot,
    #[error("the header's checksum does not match")]
    HeaderChecksum,
    #[error("written by snapshot format version {found}; this cardguard reads version {VERSION}")]
    Version { found: u32 },
    #[error("an unknown section kind {0} (written by a newer cardguard?)")]
    UnknownSection(u32),
    #[error("section {section}: checksum does not match")]
    Checksum { section: &'static str },
    #[error("section {section}: {source}")]
    Decode {
        section: &'static str,
        source: super::codec::DecodeError,
    },
    #[error("section {0} appears twice")]
    Duplicate(&'static str),
    #[error("{0} bytes after the last section")]
    Trailing(usize),
    #[error("does not fit the config in force: {0}")]
    Mismatch(String),
}

impl LoadError {
    pub fn reason(&self) -> &'static str {
        match self {
            LoadError::Missing(_) => "missing",
            LoadError::Unreadable(_) => "unreadable",
            LoadError::Truncated(_) => "truncated",
            LoadError::NotASnapshot
            | LoadError::HeaderChecksum
            | LoadError::Checksum { .. }
            | LoadError::Decode { .. }
            | LoadError::Duplicate(_)
            | LoadError::Trailing(_) => "corrupt",
            LoadError::Version { .. } | LoadError::UnknownSection(_) | LoadError::Mismatch(_) => {
                "incompatible"
            }
        }
    }
}

/// The whole file's bytes for `image`.
pub fn encode(image: &Image, written_ms: i64) -> Vec<u8> {
    let sections: Vec<(Kind, Vec<u8>)> = Kind::ALL
        .into_iter()
        .map(|k| (k, image.encode_section(k)))
        .collect();
    let total = HEADER_BYTES
        + sections
            .iter()
            .map(|(_, p)| SECTION_HEADER_BYTES + p.len())
            .sum::<usize>();
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&(sections.len() as u32).to_le_bytes());
    out.extend_from_slice(&written_ms.to_le_bytes());
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    for (kind, payload) in sections {
        let (kind, len) = (kind as u32, payload.len() as u64);
        out.extend_from_slice(&kind.to_le_bytes());
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&section_crc(kind, len, &payload).to_le_bytes());
        out.extend_from_slice(&payload);
    }
    out
}

/// Parse a whole file. Every section's checksum is verified before it is decoded.
pub fn decode(bytes: &[u8]) -> Result<(Image, i64), LoadError> {
    if bytes.len() < MAGIC.len() {
        return Err(if MAGIC.starts_with(bytes) {
            LoadError::Truncated("in the header")
        } else {
            LoadError::NotASnapshot
        });
    }
    if &bytes[..8] != MAGIC {
        return Err(LoadError::NotASnapshot);
    }
    let Some(header) = bytes.get(..HEADER_BYTES) else {
        return Err(LoadError::Truncated("in the header"));
    };
    let u32_at = |b: &[u8], at: usize| u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
    let u64_at = |b: &[u8], at: usize| {
        let mut a = [0u8; 8];
        a.copy_from_slice(&b[at..at + 8]);
        u64::from_le_bytes(a)
    };
    if crc32fast::hash(&header[..HEADER_BYTES - 4]) != u32_at(header, HEADER_BYTES - 4) {
        return Err(LoadError::HeaderChecksum);
    }
    let version = u32_at(header, 8);
    if version != VERSION {
        return Err(LoadError::Version { found: version });
    }
    let count = u32_at(header, 12);
    let written_ms = u64_at(header, 16) as i64;
    let mut rest = &bytes[HEADER_BYTES..];
    let mut image = Image::default();
    let mut seen = std::collections::HashSet::new();
    for _ in 0..count {
        if rest.len() < SECTION_HEADER_BYTES {
            return Err(LoadError::Truncated("in a section header"));
        }
        let kind = u32_at(rest, 0);
        let len = u64_at(rest, 4);
        let crc = u32_at(rest, 12);
        rest = &rest[SECTION_HEADER_BYTES..];
        if len > rest.len() as u64 {
            return Err(LoadError::Truncated("in a section"));
        }
        let (payload, after) = rest.split_at(len as usize);
        rest = after;
        if section_crc(kind, len, payload) != crc {
            return Err(LoadError::Checksum {
                section: Kind::from_u32(kind).map_or("unknown", Kind::name),
            });
        }
        let kind = Kind::from_u32(kind).ok_or(LoadError::UnknownSection(kind))?;
        if !seen.insert(kind as u32) {
            return Err(LoadError::Duplicate(kind.name()));
        }
        image
            .decode_section(kind, payload)
            .map_err(|source| LoadError::Decode {
                section: kind.name(),
                source,
            })?;
    }
    if !rest.is_empty() {
        return Err(LoadError::Trailing(rest.len()));
    }
    image
        .attach_histograms()
        .map_err(|source| LoadError::Decode {
            section: Kind::RuleHistograms.name(),
            source,
        })?;
    Ok((image, written_ms))
}

/// A section's checksum covers its kind and length too: a flipped kind must not pass a
/// payload off as another section's.
fn section_crc(kind: u32, len: u64, payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&kind.to_le_bytes());
    h.update(&len.to_le_bytes());
    h.update(payload);
    h.finalize()
}

/// Replace `path` with `bytes` atomically: write a temporary file next to it, fsync it,
/// rename it over `path`, fsync the directory (so the rename itself survives a power cut).
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let written = (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}
