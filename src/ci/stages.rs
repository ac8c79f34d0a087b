//! The proxy's stages over the series a scrape of the exposition would send: the series are
//! written as one remote-write 1.0 request by the wire writer, read back by the wire reader
//! with the config's caps, and passed through `relabel::stage`, `schema::stage` and
//! `Guard::admit` into one `series::Decisions`, in `pipeline::prepare`'s order. No rule is
//! evaluated here; this module only reads what the stages decided.
//!
//! Two settings differ from the server, both so that every series gets its own answer
//! instead of the first one deciding for the request: schema rules with `action: reject` and
//! budgets with `action: warn` or `relabel` run as `drop` (the report says what the
//! configured action does), and the request may hold any number of series (Prometheus splits
//! a scrape into many requests; the per-series caps stay the config's).

use std::sync::Arc;

use crate::config::Config;
use crate::guard::{self, Action, Budget, Guard, GuardConfig};
use crate::schema::{SchemaAction, SchemaConfig};
use crate::series::{Decisions, Reason, Verdict};
use crate::wire::{Limits, Parsed, Version, Writer};

/// Labels, sorted by name, `__name__` among them.
pub type LabelSet = Vec<(String, String)>;

/// What the stages decided for one series.
#[derive(Debug, Clone, PartialEq)]
pub enum Fate {
    /// Admitted: forwarded with `Staged::labels`.
    Kept,
    /// Dropped (or, with `action: relabel`, merged into an overflow aggregate) by a stage.
    Dropped(Reason),
    /// The wire checks refuse it: the proxy answers 400 to the whole request carrying it.
    Refused(String),
}

/// One series after the stages.
#[derive(Debug, Clone, PartialEq)]
pub struct Staged {
    pub fate: Fate,
    /// As the guard, the rules and the upstream see it: relabeled and redacted. For a series
    /// a stage dropped, as that stage saw it.
    pub labels: LabelSet,
    /// A redaction rewrote one of its values.
    pub redacted: bool,
}

/// Run the stages over `series` (each label set sorted by name), as of `now_ms`.
pub fn run(config: &Config, series: &[LabelSet], now_ms: i64) -> Vec<Staged> {
    let mut out: Vec<Option<Staged>> = vec![None; series.len()];
    let limits = Limits {
        max_decoded_bytes: usize::MAX,
        max_series: usize::MAX,
        max_symbols: usize::MAX,
        ..config.limits.wire
    };
    let mut parsed = Parsed::new();
    let mut writer = Writer::new(Version::V1);
    let push = |w: &mut Writer, labels: &LabelSet| {
        let pairs = labels.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes()));
        w.push_labeled(pairs, std::iter::once((1.0, now_ms)));
    };
    // The wire checks one series at a time first: a series they refuse would refuse the
    // whole request, and every series deserves its own answer.
    let mut carried: Vec<usize> = Vec::with_capacity(series.len());
    for (i, labels) in series.iter().enumerate() {
        writer.reset();
        push(&mut writer, labels);
        // The writer has no output limit, so `finish` always has the body.
        let checked = match writer.finish() {
            Ok(one) => parsed
                .parse(one, Version::V1, &limits)
                .and_then(|()| parsed.series(one, 0).validate(0))
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match checked {
            Ok(()) => carried.push(i),
            Err(why) => {
                // "series 0: label value longer than …": the index is the one-series body's.
                let why = match why.split_once(": ") {
                    Some((series, rest)) if series.starts_with("series ") => rest.to_string(),
                    _ => why,
                };
                out[i] = Some(Staged {
                    fate: Fate::Refused(why),
                    labels: labels.clone(),
                    redacted: false,
                })
            }
        }
    }
    writer.reset();
    for &i in &carried {
        push(&mut writer, &series[i]);
    }
    let buf = writer.finish().map(<[u8]>::to_vec).unwrap_or_default();
    if let Err(e) = parsed.parse(&buf, Version::V1, &limits) {
        // Request-level: only a body of 4 GiB or more, far past any exposition.
        for i in carried.drain(..) {
            out[i] = Some(Staged {
                fate: Fate::Refused(e.to_string()),
                labels: series[i].clone(),
                redacted: false,
            });
        }
    }

    if !carried.is_empty() {
        let mut decisions = Decisions::default();
        decisions.reset(parsed.len());
        let mut relabel_scratch = crate::relabel::Scratch::default();
        crate::relabel::stage(
            &config.relabel,
            &parsed,
            &buf,
            &mut decisions,
            &mut relabel_scratch,
        );
        let mut redacted = vec![false; parsed.len()];
        if let Some(schema) = &config.schema {
            let schema = per_series(schema);
            let before: Vec<Option<crate::series::OwnedLabels>> = (0..parsed.len())
                .map(|k| decisions.rewritten(k).cloned())
                .collect();
            // Never `Err`: `per_series` turned every `reject` into `drop`.
            let _ = crate::schema::stage(&schema, &parsed, &buf, &mut decisions);
            for (k, before) in before.iter().enumerate() {
                redacted[k] = decisions.rewritten(k) != before.as_ref();
            }
        }
        if let Some(cfg) = &config.guard {
            let cfg = per_series_budgets(cfg);
            let batch = guard::Batch {
                req: &parsed,
                buf: &buf,
                tenant: None,
                now_ms,
            };
            // Never `Err`: only series read lazily are checked there, and `parse` read none.
            let _ = Guard::new().admit(&cfg, batch, &mut decisions, &mut guard::Scratch::default());
        }
        for (k, &i) in carried.iter().enumerate() {
            let labels = decisions
                .labels(&parsed, &buf, k)
                .map(|(n, v)| {
                    (
                        String::from_utf8_lossy(n).into_owned(),
                        String::from_utf8_lossy(v).into_owned(),
                    )
                })
                .collect();
            let fate = match decisions.verdict(k) {
                Verdict::Keep => Fate::Kept,
                Verdict::Drop(r) | Verdict::Overflow(r) => Fate::Dropped(r),
            };
            out[i] = Some(Staged {
                fate,
                labels,
                redacted: redacted[k],
            });
        }
    }
    out.into_iter()
        .map(|s| s.expect("every series got a fate"))
        .collect()
}

/// The schema with every rule's action `drop`: each series breaking a rule is marked, where
/// `reject` would end the stage at the first.
fn per_series(schema: &SchemaConfig) -> SchemaConfig {
    SchemaConfig {
        actions: [SchemaAction::Drop; crate::schema::SchemaRule::ALL.len()],
        ..schema.clone()
    }
}

/// The guard config with every budget's action `drop`: a `warn` budget admits the series
/// (so its verdict would not say it is over) and a `relabel` one merges it; `drop` names the
/// limit each series is over. The report states the configured action.
fn per_series_budgets(cfg: &GuardConfig) -> GuardConfig {
    let drop = |b: &Arc<Budget>| {
        Arc::new(Budget {
            action: Action::Drop,
            ..(**b).clone()
        })
    };
    let mut c = cfg.clone();
    c.default_budget = drop(&c.default_budget);
    c.unowned_budget = drop(&c.unowned_budget);
    for r in &mut c.rules {
        r.budget = drop(&r.budget);
    }
    c
}
