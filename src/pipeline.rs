//! The stage order, and nothing else: decompress → read → validate → (relabel → guard → rules,
//! as they land) → write out. Each stage lives in its own module; this file only decides who
//! runs when and whether the request can leave as the body it came in.
//!
//! Runs synchronously on the calling worker thread with per-thread scratch buffers, so the
//! decompressed body, offset tables and output buffer are reused from request to request and
//! the hot path allocates nothing per series.

use std::cell::RefCell;

use bytes::Bytes;

use crate::wire::{self, Counts, Limits, Parsed, Version, WireError, Writer};

/// A request ready for the forwarder.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// Snappy-compressed body in `version`.
    pub body: Bytes,
    pub version: Version,
    /// What the incoming request carried.
    pub received: Counts,
    /// What the outgoing body carries.
    pub forwarded: Counts,
    /// Decompressed size of the incoming body.
    pub decoded_bytes: usize,
    /// The original body is forwarded as it came (nothing changed, same version).
    pub passthrough: bool,
    /// Nothing to forward (e.g. a v1 metadata-only request bound for a v2 upstream, which
    /// has no place for metadata without series).
    pub empty: bool,
}

/// Buffers reused by every request processed on one thread.
struct Scratch {
    decoded: Vec<u8>,
    parsed: Parsed,
    writer: Writer,
    compressed: Vec<u8>,
}

/// Buffers that grew past this while serving an outsized request are released afterwards, so
/// one large request does not pin memory on every worker thread for good.
const KEEP_CAPACITY: usize = 8 << 20;

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch {
        decoded: Vec::new(),
        parsed: Parsed::new(),
        writer: Writer::new(Version::V1),
        compressed: Vec::new(),
    });
}

/// Run the stages over one compressed request body.
pub fn prepare(
    body: &Bytes,
    version_in: Version,
    version_out: Version,
    limits: &Limits,
) -> Result<Prepared, WireError> {
    SCRATCH.with(|s| {
        let mut s = s.borrow_mut();
        let result = prepare_with(&mut s, body, version_in, version_out, limits);
        if s.decoded.capacity() > KEEP_CAPACITY {
            s.decoded = Vec::new();
        }
        if s.compressed.capacity() > KEEP_CAPACITY {
            s.compressed = Vec::new();
        }
        // The offset tables can reach several times the decoded size on a hostile body
        // (e.g. millions of empty labels); release them too.
        if s.parsed.heap_bytes() > KEEP_CAPACITY {
            s.parsed = Parsed::new();
        }
        result
    })
}

fn prepare_with(
    s: &mut Scratch,
    body: &Bytes,
    version_in: Version,
    version_out: Version,
    limits: &Limits,
) -> Result<Prepared, WireError> {
    let Scratch {
        decoded,
        parsed,
        writer,
        compressed,
    } = s;
    wire::snappy::decompress(body, limits.max_decoded_bytes, decoded)?;
    parsed.parse(decoded, version_in, limits)?;
    let received = parsed.counts();
    for i in 0..parsed.len() {
        parsed.series(decoded, i).validate(i)?;
    }

    // Stages that drop or rewrite series plug in here; until one does, every series is kept.
    let changed = false;

    if !changed && version_in == version_out {
        let empty = received.series == 0 && received.metadata == 0;
        return Ok(Prepared {
            body: body.clone(),
            version: version_out,
            received,
            forwarded: received,
            decoded_bytes: decoded.len(),
            passthrough: true,
            empty,
        });
    }

    if writer.version() != version_out {
        *writer = Writer::new(version_out);
    }
    writer.begin(parsed, decoded);
    for i in 0..parsed.len() {
        writer.copy_series(parsed, decoded, i);
    }
    writer.copy_metadata(parsed, decoded);
    let mut forwarded = received;
    if version_out == Version::V2 && version_in == Version::V1 {
        // v2 carries metadata on series; what had no series to ride on is not forwarded.
        forwarded.metadata = 0;
    }
    let out = writer.finish();
    wire::snappy::compress(out, compressed);
    Ok(Prepared {
        body: Bytes::copy_from_slice(compressed),
        version: version_out,
        received,
        forwarded,
        decoded_bytes: decoded.len(),
        passthrough: false,
        empty: forwarded.series == 0 && forwarded.metadata == 0,
    })
}
