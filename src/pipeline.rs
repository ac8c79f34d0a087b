//! The stage order, and nothing else: decompress → read → validate → (relabel → guard → rules,
//! as they land) → write out. Each stage lives in its own module; this file only decides who
//! runs when and whether the request can leave as the body it came in.
//!
//! Runs synchronously on the calling worker thread with per-thread scratch buffers, so the
//! decompressed body, offset tables and output buffer are reused from request to request and
//! the hot path allocates nothing per series.

use std::cell::RefCell;

use bytes::Bytes;

use crate::config::schema::{SchemaAction, SchemaConfig, SchemaRule};
use crate::config::GuardConfig;
use crate::guard::schema::OwnedLabels;
use crate::guard::{self, Guard, Reason, Verdict};
use crate::wire::{self, Counts, Limits, Parsed, Version, WireError, Writer};

/// Why a request cannot be forwarded: the sender's fault, answered with 400.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Wire(#[from] WireError),
    /// A schema rule configured with `action: reject`.
    #[error("series {series}: schema: {reason}")]
    Schema { series: usize, reason: String },
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
    /// Series and samples dropped by policy (schema and guard).
    pub dropped: guard::Outcome,
    /// Series dropped per schema rule (indexed like `SchemaRule::ALL`).
    pub schema_dropped: [u64; SchemaRule::ALL.len()],
    /// Series whose labels were redacted.
    pub redacted: u64,
    /// What the recording rules' tap buffered and withheld.
    pub rules: crate::rules::tap::Observed,
    /// Series dropped and rewritten by `relabel_configs` (the drops are in `dropped` too).
    pub relabel: crate::relabel::StageCounts,
    /// With routing: one body per upstream (`body` is then empty).
    pub routed: Option<crate::route::Routed>,
}

/// Buffers reused by every request processed on one thread.
struct Scratch {
    decoded: Vec<u8>,
    parsed: Parsed,
    writer: Writer,
    compressed: Vec<u8>,
    guard: guard::Scratch,
    /// Rewritten labels by series index (redaction); empty when nothing was rewritten.
    rewrites: Vec<Option<OwnedLabels>>,
    /// Schema decisions by series index; empty when no schema is configured.
    decided: Vec<Verdict>,
    /// Series buffered for rules and not forwarded (`forward_inputs: false`); empty if none.
    withhold: Vec<bool>,
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
        guard: guard::Scratch::default(),
        rewrites: Vec::new(),
        decided: Vec::new(),
        withhold: Vec::new(),
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
        guard: guard_scratch,
        rewrites,
        decided,
        withhold,
        relabel,
        route,
    } = s;
    let (version_in, version_out) = (ctx.version_in, ctx.version_out);
    wire::snappy::decompress(body, ctx.limits.max_decoded_bytes, decoded)?;
    parsed.parse(decoded, version_in, ctx.limits)?;
    let received = parsed.counts();
    for i in 0..parsed.len() {
        parsed.series(decoded, i).validate(i)?;
    }

    rewrites.clear();
    decided.clear();
    let mut dropped = guard::Outcome::default();
    let mut schema_dropped = [0u64; SchemaRule::ALL.len()];
    let mut redacted = 0;
    let relabeled = crate::relabel::stage(ctx.relabel, parsed, decoded, rewrites, decided, relabel);
    dropped.dropped_series += relabeled.dropped_series;
    dropped.dropped_samples += relabeled.dropped_samples;
    if let Some(schema) = ctx.schema {
        // Redaction first: no later stage may see a redacted value. Then the schema, on the
        // labels as redacted.
        decided.resize(parsed.len(), Verdict::Keep);
        for i in 0..parsed.len() {
            if decided[i] != Verdict::Keep {
                continue; // dropped by relabeling
            }
            let view = parsed.series(decoded, i);
            let redact = match rewrites.get(i).and_then(Option::as_ref) {
                Some(owned) => guard::schema::redact(
                    schema,
                    owned.iter().map(|(n, v)| (n.as_slice(), v.as_slice())),
                ),
                None => guard::schema::redact(schema, view.labels()),
            };
            if let Some(owned) = redact {
                if rewrites.is_empty() {
                    rewrites.resize(parsed.len(), None);
                }
                rewrites[i] = Some(owned);
                redacted += 1;
            }
            let broken = match rewrites.get(i).and_then(Option::as_ref) {
                Some(owned) => guard::schema::check(
                    schema,
                    owned.iter().map(|(n, v)| (n.as_slice(), v.as_slice())),
                ),
                None => guard::schema::check(schema, view.labels()),
            };
            if let Some((rule, action, reason)) = broken {
                if action == SchemaAction::Reject {
                    return Err(PipelineError::Schema { series: i, reason });
                }
                decided[i] = Verdict::Drop(Reason::Schema(rule));
                schema_dropped[rule as usize] += 1;
                dropped.dropped_series += 1;
                dropped.dropped_samples += (view.sample_count() + view.histogram_count()) as u64;
            }
        }
    }
    if let Some((guard, cfg)) = ctx.guard {
        let batch = guard::Batch {
            req: parsed,
            buf: decoded,
            tenant: ctx.tenant,
            now_ms: ctx.now_ms,
            rewrites,
            decided,
        };
        // The guard's outcome counts the schema drops too (by owner).
        dropped = guard.admit(cfg, batch, guard_scratch);
    }
    let verdicts: &[Verdict] = if ctx.guard.is_some() {
        &guard_scratch.verdicts
    } else {
        decided
    };
    // Rules see what is admitted, as it will be forwarded (redacted labels included).
    let rules = match ctx.rules {
        Some(tap) => tap.observe(parsed, decoded, verdicts, rewrites, withhold),
        None => {
            withhold.clear();
            crate::rules::tap::Observed::default()
        }
    };
    let changed = dropped.dropped_series > 0
        || dropped.overflowed_series > 0
        || redacted > 0
        || rules.withheld_series > 0
        || relabeled.rewritten_series > 0;

    if let Some(plan) = &ctx.routing {
        let routed = crate::route::split(
            plan, body, parsed, decoded, verdicts, withhold, rewrites, route,
        );
        let mut forwarded = Counts::default();
        for p in &routed.parts {
            forwarded.series += p.forwarded.series;
            forwarded.samples += p.forwarded.samples;
            forwarded.histograms += p.forwarded.histograms;
            forwarded.exemplars += p.forwarded.exemplars;
            forwarded.metadata += p.forwarded.metadata;
        }
        return Ok(Prepared {
            body: Bytes::new(),
            version: version_out,
            received,
            forwarded,
            decoded_bytes: decoded.len(),
            passthrough: false,
            empty: routed.parts.is_empty(),
            dropped,
            schema_dropped,
            redacted,
            relabel: relabeled,
            routed: Some(routed),
            rules,
        });
    }

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
            schema_dropped,
            redacted,
            rules,
            relabel: relabeled,
            routed: None,
        });
    }

    if writer.version() != version_out {
        *writer = Writer::new(version_out);
    }
    writer.begin(parsed, decoded);
    let mut forwarded = Counts::default();
    for i in 0..parsed.len() {
        if verdicts.get(i).is_some_and(|v| *v != Verdict::Keep) || withhold.get(i) == Some(&true) {
            continue;
        }
        let view = parsed.series(decoded, i);
        forwarded.series += 1;
        forwarded.samples += view.sample_count() as u64;
        forwarded.histograms += view.histogram_count() as u64;
        forwarded.exemplars += view.exemplar_count() as u64;
        match rewrites.get(i).and_then(Option::as_ref) {
            Some(owned) => {
                let labels: Vec<(&[u8], &[u8])> = owned
                    .iter()
                    .map(|(n, v)| (n.as_slice(), v.as_slice()))
                    .collect();
                writer.relabeled_series(parsed, decoded, i, &labels);
            }
            None => writer.copy_series(parsed, decoded, i),
        }
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
        schema_dropped,
        redacted,
        rules,
        relabel: relabeled,
        routed: None,
    })
}
