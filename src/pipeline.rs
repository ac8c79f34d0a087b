//! The stage order, and nothing else: decompress → read → validate → (relabel → guard → rules,
//! as they land) → write out. Each stage lives in its own module; this file only decides who
//! runs when and whether the request can leave as the body it came in.
//!
//! Runs synchronously on the calling worker thread with per-thread scratch buffers, so the
//! decompressed body, offset tables and output buffer are reused from request to request and
//! the hot path allocates nothing per series.

use std::cell::RefCell;

use bytes::Bytes;

use crate::config::GuardConfig;
use crate::guard::{self, Guard, Verdict};
use crate::wire::{self, Counts, Limits, Parsed, Version, WireError, Writer};

/// What the stages need to know about one request besides its body.
#[derive(Clone, Copy)]
pub struct Context<'a> {
    pub version_in: Version,
    pub version_out: Version,
    pub limits: &'a Limits,
    /// The guard and its config, when the guard is on.
    pub guard: Option<(&'a Guard, &'a GuardConfig)>,
    /// The tenant of the request (its tenant header), if any.
    pub tenant: Option<&'a str>,
    /// Wall-clock time of the request, in milliseconds since the epoch.
    pub now_ms: i64,
}

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
    /// Nothing to forward (every series dropped by policy, or a v1 metadata-only request
    /// bound for a v2 upstream, which has no place for metadata without series).
    pub empty: bool,
    /// Series and samples the guard dropped.
    pub dropped: guard::Outcome,
}

/// Buffers reused by every request processed on one thread.
struct Scratch {
    decoded: Vec<u8>,
    parsed: Parsed,
    writer: Writer,
    compressed: Vec<u8>,
    guard: guard::Scratch,
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
        guard: guard::Scratch::default(),
    });
}

/// Run the stages over one compressed request body.
pub fn prepare(body: &Bytes, ctx: &Context<'_>) -> Result<Prepared, WireError> {
    SCRATCH.with(|s| {
        let mut s = s.borrow_mut();
        let result = prepare_with(&mut s, body, ctx);
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

fn prepare_with(s: &mut Scratch, body: &Bytes, ctx: &Context<'_>) -> Result<Prepared, WireError> {
    let Scratch {
        decoded,
        parsed,
        writer,
        compressed,
        guard: guard_scratch,
    } = s;
    let (version_in, version_out) = (ctx.version_in, ctx.version_out);
    wire::snappy::decompress(body, ctx.limits.max_decoded_bytes, decoded)?;
    parsed.parse(decoded, version_in, ctx.limits)?;
    let received = parsed.counts();
    for i in 0..parsed.len() {
        parsed.series(decoded, i).validate(i)?;
    }

    let mut dropped = guard::Outcome::default();
    guard_scratch.verdicts.clear();
    if let Some((guard, cfg)) = ctx.guard {
        let batch = guard::Batch {
            req: parsed,
            buf: decoded,
            tenant: ctx.tenant,
            now_ms: ctx.now_ms,
        };
        dropped = guard.admit(cfg, batch, guard_scratch);
    }
    let verdicts = &guard_scratch.verdicts;
    let changed = dropped.dropped_series > 0;

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
            dropped,
        });
    }

    if writer.version() != version_out {
        *writer = Writer::new(version_out);
    }
    writer.begin(parsed, decoded);
    let mut forwarded = Counts::default();
    for i in 0..parsed.len() {
        if verdicts.get(i).is_some_and(|v| *v != Verdict::Keep) {
            continue;
        }
        let view = parsed.series(decoded, i);
        forwarded.series += 1;
        forwarded.samples += view.sample_count() as u64;
        forwarded.histograms += view.histogram_count() as u64;
        forwarded.exemplars += view.exemplar_count() as u64;
        writer.copy_series(parsed, decoded, i);
    }
    writer.copy_metadata(parsed, decoded);
    forwarded.metadata = writer.metadata_written() as u64;
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
        dropped,
    })
}
