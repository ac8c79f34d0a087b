//! The stage order, and nothing else: decompress → read → validate → relabel → schema → guard
//! → rules' tap → write out (one body, or one per upstream with routing). Each stage lives in
//! its own module and records what it decided per series in the request's `Decisions`; this
//! file only decides who runs when, adds up what each stage dropped, and whether the request
//! can leave as the body it came in.
//!
//! Runs synchronously on the calling worker thread with per-thread scratch buffers, so the
//! decompressed body, offset tables and output buffer are reused from request to request and
//! the hot path allocates nothing per series.

use std::cell::RefCell;

use bytes::Bytes;

use crate::guard::{self, Guard, GuardConfig};
use crate::schema::{SchemaConfig, SchemaRule};
use crate::series::{Decisions, DropCounts};
use crate::wire::{self, ItemCounts, Limits, Parsed, Version, WireError, Writer};

/// Why a request cannot be forwarded: the sender's fault, answered with 400.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Wire(#[from] WireError),
    /// A schema rule configured with `action: reject`.
    #[error(transparent)]
    Schema(#[from] crate::schema::Rejected),
}

/// What the stages need to know about one request besides its body.
#[derive(Clone, Copy)]
pub struct Context<'a> {
    pub version_in: Version,
    pub version_out: Version,
    pub limits: &'a Limits,
    /// The guard and its config, when the guard is on.
    pub guard: Option<(&'a Guard, &'a GuardConfig)>,
    /// Label schema and redaction, when configured.
    pub schema: Option<&'a SchemaConfig>,
    /// `relabel_configs`, applied first; empty when none.
    pub relabel: &'a crate::relabel::RuleSet,
    /// The tenant of the request (its tenant header), if any.
    pub tenant: Option<&'a str>,
    /// With `upstreams:`/`routes:`: split the request by upstream instead of writing one body
    /// (`version_out` is then unused).
    pub routing: Option<crate::route::Plan<'a>>,
    /// Wall-clock time of the request, in milliseconds since the epoch.
    pub now_ms: i64,
    /// Recording rules' tap, when some rule reads anything.
    pub rules: Option<crate::rules::tap::Tap<'a>>,
}

impl<'a> Context<'a> {
    /// Only the wire stages: no relabeling, schema, guard, rules or routing. Callers that
    /// turn stages on set those fields over this (`Context { guard, ..Context::new(..) }`), so
    /// a stage added later does not touch every caller.
    pub fn new(version_in: Version, version_out: Version, limits: &'a Limits, now_ms: i64) -> Self {
        static NO_RELABEL: std::sync::LazyLock<crate::relabel::RuleSet> =
            std::sync::LazyLock::new(Default::default);
        Context {
            version_in,
            version_out,
            limits,
            guard: None,
            schema: None,
            relabel: &NO_RELABEL,
            tenant: None,
            routing: None,
            now_ms,
            rules: None,
        }
    }
}

/// A request ready for the forwarder.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// Snappy-compressed body in `version`.
    pub body: Bytes,
    pub version: Version,
    /// What the incoming request carried.
    pub received: ItemCounts,
    /// What the outgoing body carries.
    pub forwarded: ItemCounts,
    /// Decompressed size of the incoming body.
    pub decoded_bytes: usize,
    /// The original body is forwarded as it came (nothing changed, same version).
    pub passthrough: bool,
    /// Nothing to forward (every series dropped by policy, or a v1 metadata-only request
    /// bound for a v2 upstream, which has no place for metadata without series).
    pub empty: bool,
    /// Series and samples dropped by policy: relabeling, schema and guard, added up.
    pub dropped: DropCounts,
    /// Series dropped per schema rule (indexed like `SchemaRule::ALL`).
    pub schema_dropped: [u64; SchemaRule::ALL.len()],
    /// Series whose labels were redacted.
    pub redacted: u64,
    /// What the recording rules' tap buffered and withheld.
    pub rules: crate::rules::tap::TapCounts,
    /// Series dropped and rewritten by `relabel_configs` (the drops are in `dropped` too).
    pub relabel: crate::relabel::RelabelCounts,
    /// With routing: one body per upstream (`body` is then empty).
    pub routed: Option<crate::route::Routed>,
}

/// Buffers reused by every request processed on one thread.
struct Scratch {
    decoded: Vec<u8>,
    parsed: Parsed,
    writer: Writer,
    compressed: Vec<u8>,
    /// What every stage decided for each series of the current request.
    decisions: Decisions,
    guard: guard::Scratch,
    relabel: crate::relabel::Scratch,
    route: crate::route::Scratch,
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
        decisions: Decisions::default(),
        guard: guard::Scratch::default(),
        relabel: crate::relabel::Scratch::default(),
        route: crate::route::Scratch::default(),
    });
}

/// Run the stages over one compressed request body.
pub fn prepare(body: &Bytes, ctx: &Context<'_>) -> Result<Prepared, PipelineError> {
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

fn prepare_with(
    s: &mut Scratch,
    body: &Bytes,
    ctx: &Context<'_>,
) -> Result<Prepared, PipelineError> {
    let Scratch {
        decoded,
        parsed,
        writer,
        compressed,
        decisions,
        guard: guard_scratch,
        relabel,
        route,
    } = s;
    wire::snappy::decompress(body, ctx.limits.max_decoded_bytes, decoded)?;
    parsed.parse(decoded, ctx.version_in, ctx.limits)?;
    let received = parsed.counts();
    for i in 0..parsed.len() {
        parsed.series(decoded, i).validate(i)?;
    }

    decisions.reset(parsed.len());
    let mut dropped = DropCounts::default();
    let relabeled = crate::relabel::stage(ctx.relabel, parsed, decoded, decisions, relabel);
    dropped += relabeled.dropped();
    let schema = match ctx.schema {
        Some(cfg) => crate::schema::stage(cfg, parsed, decoded, decisions)?,
        None => crate::schema::SchemaCounts::default(),
    };
    dropped += schema.dropped();
    if let Some((guard, cfg)) = ctx.guard {
        let batch = guard::Batch {
            req: parsed,
            buf: decoded,
            tenant: ctx.tenant,
            now_ms: ctx.now_ms,
        };
        dropped += guard.admit(cfg, batch, decisions, guard_scratch).dropped();
    }
    // Rules see what is admitted, as it will be forwarded (redacted labels included).
    let rules = match ctx.rules {
        Some(tap) => tap.observe(parsed, decoded, decisions),
        None => crate::rules::tap::TapCounts::default(),
    };

    let out = if let Some(plan) = &ctx.routing {
        let routed = crate::route::split(plan, body, parsed, decoded, decisions, route);
        Outgoing {
            body: Bytes::new(),
            forwarded: routed.forwarded(),
            passthrough: false,
            empty: routed.parts.is_empty(),
            routed: Some(routed),
        }
    } else if decisions.unchanged() && ctx.version_in == ctx.version_out {
        Outgoing {
            body: body.clone(),
            forwarded: received,
            passthrough: true,
            empty: received.series == 0 && received.metadata == 0,
            routed: None,
        }
    } else {
        write_out(
            writer,
            compressed,
            parsed,
            decoded,
            decisions,
            ctx.version_out,
        )
    };
    Ok(Prepared {
        body: out.body,
        version: ctx.version_out,
        received,
        forwarded: out.forwarded,
        decoded_bytes: decoded.len(),
        passthrough: out.passthrough,
        empty: out.empty,
        dropped,
        schema_dropped: schema.dropped_by_rule,
        redacted: schema.redacted_series,
        rules,
        relabel: relabeled,
        routed: out.routed,
    })
}

/// How the request leaves: the part of `Prepared` that depends on the way out.
struct Outgoing {
    body: Bytes,
    forwarded: ItemCounts,
    passthrough: bool,
    empty: bool,
    routed: Option<crate::route::Routed>,
}

/// One body in `version` of the series `decisions` forwards: raw copies of the unchanged
/// series, rewritten labels re-encoded, then the metadata.
fn write_out(
    writer: &mut Writer,
    compressed: &mut Vec<u8>,
    req: &Parsed,
    buf: &[u8],
    decisions: &Decisions,
    version: Version,
) -> Outgoing {
    if writer.version() != version {
        *writer = Writer::new(version);
    }
    writer.begin(req, buf);
    let mut forwarded = ItemCounts::default();
    for i in 0..req.len() {
        if !decisions.forwarded(i) {
            continue;
        }
        let view = req.series(buf, i);
        forwarded.series += 1;
        forwarded.samples += view.sample_count() as u64;
        forwarded.histograms += view.histogram_count() as u64;
        forwarded.exemplars += view.exemplar_count() as u64;
        match decisions.rewritten(i) {
            Some(owned) => {
                let labels: Vec<(&[u8], &[u8])> = owned
                    .iter()
                    .map(|(n, v)| (n.as_slice(), v.as_slice()))
                    .collect();
                writer.relabeled_series(req, buf, i, &labels);
            }
            None => writer.copy_series(req, buf, i),
        }
    }
    writer.copy_metadata(req, buf);
    forwarded.metadata = writer.metadata_written() as u64;
    wire::snappy::compress(writer.finish(), compressed);
    Outgoing {
        body: Bytes::copy_from_slice(compressed),
        forwarded,
        passthrough: false,
        empty: forwarded.series == 0 && forwarded.metadata == 0,
        routed: None,
    }
}

#[cfg(test)]
mod tests;
