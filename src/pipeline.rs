//! The stage order, and nothing else: decompress → read → validate → relabel → schema → guard
//! → rules' tap → split by upstream (one body per upstream; `route::split` sends the original
//! body when it can go as it came). Each stage lives in its own module and records what it
//! decided per series in the request's `Decisions`; this file only decides who runs when and
//! adds up what each stage dropped. Where the guard is the first stage to read labels, series
//! are read without them (`Context::lazy_labels`) and the guard validates those it does not
//! know, before it counts anything.
//!
//! Runs synchronously on the calling worker thread with per-thread scratch buffers, so the
//! decompressed body, offset tables and output buffer are reused from request to request and
//! the hot path allocates nothing per series. A thread that ran no request for a while gives
//! them back (`release_idle`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};

use bytes::Bytes;

use crate::guard::{self, Guard, GuardConfig};
use crate::schema::{SchemaConfig, SchemaRule};
use crate::series::{Decisions, DropCounts};
use crate::wire::{self, ItemCounts, Limits, Parsed, Version, WireError};

/// Why a request cannot be forwarded: the sender's fault, answered with 400.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Wire(#[from] WireError),
    /// A schema rule configured with `action: reject`.
    #[error(transparent)]
    Schema(#[from] crate::schema::Rejected),
    /// A body built for an upstream would pass `limits.max_output_size`.
    #[error(transparent)]
    Output(#[from] wire::OutputTooLarge),
}

/// What the stages need to know about one request besides its body.
#[derive(Clone, Copy)]
pub struct Context<'a> {
    pub version_in: Version,
    pub limits: &'a Limits,
    /// The guard and its config, when the guard is on.
    pub guard: Option<(&'a Guard, &'a GuardConfig)>,
    /// Label schema and redaction, when configured.
    pub schema: Option<&'a SchemaConfig>,
    /// `relabel_configs`, applied first; empty when none.
    pub relabel: &'a crate::relabel::RuleSet,
    /// The tenant of the request (its tenant header), if any.
    pub tenant: Option<&'a str>,
    /// Where the request goes: one body per upstream of the routing.
    pub routing: crate::route::Plan<'a>,
    /// Wall-clock time of the request, in milliseconds since the epoch.
    pub now_ms: i64,
    /// Recording rules' tap, when some rule reads anything.
    pub rules: Option<crate::rules::tap::Tap<'a>>,
    /// Where the guard is the first stage to read labels, read series without them
    /// (`Parsed::set_lazy_labels`). Always on but to compare both ways (tests, benches).
    pub lazy_labels: bool,
    /// With `lazy_labels`, guess their runs from the series' ends
    /// (`Parsed::set_guessed_runs`). Always on but to compare both ways (tests, benches).
    pub guessed_runs: bool,
}

impl<'a> Context<'a> {
    /// Only the wire stages, out to one upstream in `version_out`: no relabeling, schema,
    /// guard or rules. Callers that turn stages on set those fields over this
    /// (`Context { guard, ..Context::new(..) }`), so a stage added later does not touch every
    /// caller; the server sets `routing` to the config's.
    pub fn new(version_in: Version, version_out: Version, limits: &'a Limits, now_ms: i64) -> Self {
        use std::sync::LazyLock;
        static NO_RELABEL: LazyLock<crate::relabel::RuleSet> = LazyLock::new(Default::default);
        static NO_DOWNSAMPLING: LazyLock<crate::route::Downsampler> =
            LazyLock::new(Default::default);
        // Never sent to: only the version of its one upstream matters to `prepare`.
        static ONE_UPSTREAM: LazyLock<[crate::route::Routing; 2]> = LazyLock::new(|| {
            [Version::V1, Version::V2].map(|version| {
                crate::route::Routing::single(crate::forward::UpstreamConfig {
                    name: "default".into(),
                    url: http::Uri::from_static("http://127.0.0.1/api/v1/write"),
                    version,
                    timeout: std::time::Duration::from_secs(30),
                    headers: Vec::new(),
                    tenant_header: None,
                    client: None,
                })
            })
        });
        let one = match version_out {
            Version::V1 => &ONE_UPSTREAM[0],
            Version::V2 => &ONE_UPSTREAM[1],
        };
        Context {
            version_in,
            limits,
            guard: None,
            schema: None,
            relabel: &NO_RELABEL,
            tenant: None,
            routing: crate::route::Plan {
                routing: one,
                tenant: None,
                downsampler: &NO_DOWNSAMPLING,
            },
            now_ms,
            rules: None,
            lazy_labels: true,
            guessed_runs: true,
        }
    }
}

/// A request ready for the forwarder.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// What the incoming request carried.
    pub received: ItemCounts,
    /// What the outgoing bodies carry, added up over the upstreams.
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
    /// One body per upstream that gets something (the original body, when nothing changed
    /// and it goes to one upstream of its version).
    pub routed: crate::route::Routed,
}

/// Buffers reused by every request processed on one thread.
#[derive(Default)]
struct Scratch {
    decoded: Vec<u8>,
    parsed: Parsed,
    /// What every stage decided for each series of the current request.
    decisions: Decisions,
    guard: guard::Scratch,
    relabel: crate::relabel::Scratch,
    route: crate::route::Scratch,
    /// Requests left before this thread guesses runs again (`GUESS_BACKOFF`).
    guess_backoff: u32,
}

impl Scratch {
    /// Let go of every buffer. The guard's scratch keeps its lane: a lane is counted per
    /// thread for the guard's life, and a new one would add its memory per owner again.
    fn release(&mut self) {
        let guard = std::mem::take(&mut self.guard).released();
        *self = Scratch {
            guard,
            ..Scratch::default()
        };
    }
}

/// Buffers that grew past this while serving an outsized request are released afterwards, so
/// one large request does not pin memory on every worker thread for good.
const KEEP_CAPACITY: usize = 8 << 20;

/// A thread's scratch, and the sweep (`SWEEP`) of its last request.
struct Slot {
    scratch: Scratch,
    used: u64,
}

/// Counts `release_idle`'s calls: a slot last used in an earlier count ran no request since
/// the previous call.
static SWEEP: AtomicU64 = AtomicU64::new(0);

/// Every thread's slot, for `release_idle`; a thread's goes when the thread ends.
static SLOTS: Mutex<Vec<Weak<Mutex<Slot>>>> = Mutex::new(Vec::new());

thread_local! {
    // Behind a mutex only so that `release_idle` can reach it from the thread that calls it:
    // the worker's own lock is never contended but by that call's `try_lock`.
    static SCRATCH: Arc<Mutex<Slot>> = {
        let slot = Arc::new(Mutex::new(Slot {
            scratch: Scratch::default(),
            used: SWEEP.load(Ordering::Relaxed),
        }));
        SLOTS
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Arc::downgrade(&slot));
        slot
    };
}

/// Release the scratch buffers of every thread that ran no request since the previous call
/// (about half a megabyte a worker at requests of 2000 series): called periodically, it gives
/// back what an idle worker holds, which on a machine of many cores adds up. A thread running
/// a request is skipped.
pub fn release_idle() {
    let sweep = SWEEP.fetch_add(1, Ordering::Relaxed);
    SLOTS
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .retain(|slot| {
            let Some(slot) = slot.upgrade() else {
                return false;
            };
            // Poisoned by a request that panicked (answered 500 by ingest): its buffers are
            // cleared before each use, so they can go like any other's.
            let held = match slot.try_lock() {
                Ok(s) => Some(s),
                Err(std::sync::TryLockError::Poisoned(e)) => Some(e.into_inner()),
                Err(std::sync::TryLockError::WouldBlock) => None,
            };
            if let Some(mut s) = held.filter(|s| s.used < sweep) {
                s.scratch.release();
            }
            true
        });
}

/// This thread's requests left before it guesses runs again, and set it to `left`: tests
/// that want every request guessed (or none) say so.
#[cfg(test)]
fn swap_guess_backoff(left: u32) -> u32 {
    SCRATCH.with(|slot| {
        let mut slot = slot.lock().unwrap_or_else(PoisonError::into_inner);
        std::mem::replace(&mut slot.scratch.guess_backoff, left)
    })
}

/// Run the stages over one compressed request body.
pub fn prepare(body: &Bytes, ctx: &Context<'_>) -> Result<Prepared, PipelineError> {
    SCRATCH.with(|slot| {
        let mut slot = slot.lock().unwrap_or_else(PoisonError::into_inner);
        slot.used = SWEEP.load(Ordering::Relaxed);
        let s = &mut slot.scratch;
        let result = prepare_with(s, body, ctx);
        if s.decoded.capacity() > KEEP_CAPACITY {
            s.decoded = Vec::new();
        }
        s.route.release_above(KEEP_CAPACITY);
        s.relabel.release_above(KEEP_CAPACITY);
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
    wire::snappy::decompress(body, ctx.limits.max_decoded_bytes, &mut s.decoded)?;
    // Where the guard is the first stage to read labels, series are read without them
    // (`Parsed::set_lazy_labels`): the guard's fresh table knows most of a steady request by
    // their bytes alone, and checks the rest before it counts anything.
    let lazy =
        ctx.lazy_labels && ctx.guard.is_some() && ctx.relabel.is_empty() && ctx.schema.is_none();
    // And their runs guessed from their ends (`Parsed::set_guessed_runs`), unless a guess
    // failed lately on this thread: a request that cannot be read so (series of several
    // samples, a malformed body) is read again without guesses, which is what it would have
    // cost without them, and the next `GUESS_BACKOFF` requests of the thread are not guessed.
    let guess = lazy && ctx.guessed_runs && s.guess_backoff == 0;
    s.guess_backoff = s.guess_backoff.saturating_sub(1);
    let admitted = match read_and_admit(s, ctx, lazy, guess) {
        Err(_) if guess => {
            s.guess_backoff = GUESS_BACKOFF;
            read_and_admit(s, ctx, lazy, false)?
        }
        other => other?,
    };
    let Admitted {
        received,
        dropped,
        relabeled,
        schema,
    } = admitted;
    let Scratch {
        decoded,
        parsed,
        decisions,
        route,
        ..
    } = s;
    // Rules see what is admitted, as it will be forwarded (redacted labels included).
    let rules = match ctx.rules {
        Some(tap) => tap.observe(parsed, decoded, decisions),
        None => crate::rules::tap::TapCounts::default(),
    };

    let routed = crate::route::split(
        &ctx.routing,
        body,
        parsed,
        decoded,
        decisions,
        route,
        ctx.limits.max_output_bytes,
    )?;
    Ok(Prepared {
        received,
        forwarded: routed.forwarded(),
        decoded_bytes: decoded.len(),
        passthrough: !routed.parts.is_empty() && routed.parts.iter().all(|p| p.passthrough),
        empty: routed.parts.is_empty(),
        dropped,
        schema_dropped: schema.dropped_by_rule,
        redacted: schema.redacted_series,
        rules,
        relabel: relabeled,
        routed,
    })
}

/// A request that failed to be read with guessed runs is read again without them, and the
/// thread's next this many requests are not guessed: a sender whose series carry several
/// samples each pays for the failed guess once in this many requests.
const GUESS_BACKOFF: u32 = 64;

/// What `read_and_admit` found and decided.
struct Admitted {
    received: ItemCounts,
    dropped: DropCounts,
    relabeled: crate::relabel::RelabelCounts,
    schema: crate::schema::SchemaCounts,
}

/// Read the decompressed body and run the stages up to the guard. Until the guard has
/// counted anything it may fail without a trace, so that a request whose guessed runs do not
/// hold (`Parsed::set_guessed_runs`) can be read again. (Guesses are made only in lazy mode,
/// where no relabel rule or schema ran before the guard.)
fn read_and_admit(
    s: &mut Scratch,
    ctx: &Context<'_>,
    lazy: bool,
    guess: bool,
) -> Result<Admitted, PipelineError> {
    let Scratch {
        decoded,
        parsed,
        decisions,
        guard: guard_scratch,
        relabel,
        ..
    } = s;
    parsed.set_lazy_labels(lazy);
    parsed.set_guessed_runs(guess);
    parsed.parse(decoded, ctx.version_in, ctx.limits)?;
    let received = parsed.counts();
    // The relabel memo first: the labels of series it knows need no second validation
    // (`relabel::vouched` says why that is safe). Without rules, the plain loop.
    crate::relabel::lookup(ctx.relabel, parsed, decoded, relabel);
    // The guard hashes canonical labels where they lie, and builds the canonical form of
    // sorted ones (all 2.0 labels) without checking their order again: `Parsed::validate`
    // records both from the same walk. Without a guard nobody asks, and the view's check
    // is cheaper.
    let framing = ctx.guard.is_some();
    if ctx.relabel.is_empty() {
        for i in 0..parsed.len() {
            if lazy && parsed.lazy(i) {
                // The guard's to check (see above).
                continue;
            }
            if framing {
                parsed.validate(decoded, i)?;
            } else {
                parsed.series(decoded, i).validate(i)?;
            }
        }
    } else {
        for i in 0..parsed.len() {
            let series = parsed.series(decoded, i);
            if crate::relabel::vouched(relabel, i) {
                series.validate_samples(i)?;
            } else if framing {
                parsed.validate(decoded, i)?;
            } else {
                series.validate(i)?;
            }
        }
    }

    decisions.reset(parsed.len());
    let mut dropped = DropCounts::default();
    let relabeled =
        crate::relabel::stage_looked_up(ctx.relabel, parsed, decoded, decisions, relabel);
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
        dropped += guard.admit(cfg, batch, decisions, guard_scratch)?.dropped();
    }
    Ok(Admitted {
        received,
        dropped,
        relabeled,
        schema,
    })
}

#[cfg(test)]
mod tests;
