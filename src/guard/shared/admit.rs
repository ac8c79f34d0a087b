//! The guard's side of shared budgets: a request's series split into those this replica
//! decides alone (admitted here in this slice, or refused here in this slice) and the new
//! ones Redis decides, in one call per request; and what a replica tells Redis on rejoining.

use std::sync::Arc;

use super::{Answer, Call, Mode, OwnerKeys, Shared, RESYNC_CHUNK};
use crate::guard::owner::{value_hash, Lookup, OwnerDelta, SeriesKey};
use crate::guard::window::Window;
use crate::guard::{AdmissionCounts, Batch, Budget, Guard, GuardConfig, Owner, Scratch};
use crate::series::{Decisions, Verdict};

/// One owner of the request that has series for Redis.
struct Asking {
    owner: Arc<Owner>,
    budget: Arc<Budget>,
    /// Ranges in `new` and `refreshed`.
    new: (usize, usize),
    refreshed: (usize, usize),
}

impl Guard {
    /// `admit` while Redis decides: the owner locks are never held across the round trip.
    #[allow(clippy::too_many_arguments)]
    pub(in crate::guard) fn admit_shared(
        &self,
        sh: &Arc<Shared>,
        cfg: &GuardConfig,
        batch: Batch<'_>,
        decisions: &mut Decisions,
        scratch: &mut Scratch,
        window: &Window,
        now: u64,
    ) -> AdmissionCounts {
        let Batch { req, buf, .. } = batch;
        let tenant = cfg.tenant_header.as_ref().and(batch.tenant);
        let generation = cfg.generation;
        let mut out = AdmissionCounts::default();
        // Allocated only when a request has series for Redis.
        let mut asking: Vec<Asking> = Vec::new();
        let mut new: Vec<(u32, u64)> = Vec::new();
        let mut refreshed: Vec<(u32, u64)> = Vec::new();

        let mut tally = OwnerDelta::default();
        let mut start = 0;
        // The slots in order, each ending where the counting sort left its count.
        for slot in 0..scratch.owners.len() as u32 {
            let end = scratch.slot_counts[slot as usize] as usize;
            let owner = self.owner(cfg, tenant, scratch.owner(slot), window, now, generation);
            let (new_from, refreshed_from) = (new.len(), refreshed.len());
            let budget = {
                let mut state = owner.state.lock().unwrap_or_else(|e| e.into_inner());
                if generation > state.generation {
                    state.budget =
                        cfg.budget_for(owner.key.tenant.as_deref(), owner.key.owner.as_deref());
                    state.generation = generation;
                }
                let expired = state.advance(window, now);
                self.sub_active(expired);
                state.seen(now);
                let mut overflow_names: Option<Vec<String>> = None;
                for &(_, i, id) in &scratch.series[start..end] {
                    let s = req.series(buf, i as usize);
                    let samples = (s.sample_count() + s.histogram_count()) as u64;
                    if let crate::series::Verdict::Drop(reason) = decisions.verdict(i as usize) {
                        tally.dropped(reason, samples);
                        continue;
                    }
                    let key = series_key(
                        decisions,
                        &batch,
                        (i, id, scratch.metric_keys[i as usize]),
                        samples,
                    );
                    match state.lookup(&key, now, &mut tally) {
                        Lookup::Fresh => {
                            self.settled(Verdict::Keep, decisions, i, samples, &mut out)
                        }
                        Lookup::Refreshed => {
                            refreshed.push((i, id));
                            self.settled(Verdict::Keep, decisions, i, samples, &mut out)
                        }
                        Lookup::RefusedThisSlice(reason) => {
                            let v = state.refuse_again(id, reason, samples, &mut tally);
                            if matches!(v, Verdict::Overflow(_)) {
                                self.absorb_overflow(
                                    cfg,
                                    &batch,
                                    decisions,
                                    &state,
                                    &mut overflow_names,
                                    (i, id),
                                );
                            }
                            self.settled(v, decisions, i, samples, &mut out)
                        }
                        Lookup::New => new.push((i, id)),
                    }
                }
                owner.counters.add(&mut tally, &state);
                state.budget.clone()
            };
            if new.len() > new_from || refreshed.len() > refreshed_from {
                asking.push(Asking {
                    owner,
                    budget,
                    new: (new_from, new.len()),
                    refreshed: (refreshed_from, refreshed.len()),
                });
            }
            start = end;
        }
        if asking.is_empty() {
            return out;
        }

        let slice_ms = cfg.slice_length().as_millis().max(1) as u64;
        let mut call = sh.call(window, slice_ms, now);
        for a in &asking {
            let keys = OwnerKeys::new(&a.owner.key);
            call.owner(&keys, true, a.budget.max_series, cfg.max_series);
            let warn = a.budget.action == crate::guard::Action::Warn;
            let mode = if warn {
                Mode::DecideRecord
            } else {
                Mode::Decide
            };
            for &(i, id) in &new[a.new.0..a.new.1] {
                add_series(
                    &mut call,
                    &keys,
                    &a.budget,
                    decisions,
                    &batch,
                    (i, id, scratch.metric_keys[i as usize]),
                    mode,
                );
            }
            for &(i, id) in &refreshed[a.refreshed.0..a.refreshed.1] {
                let m = Mode::Refresh(now);
                let series = (i, id, scratch.metric_keys[i as usize]);
                add_series(&mut call, &keys, &a.budget, decisions, &batch, series, m);
            }
        }
        if new.is_empty() {
            // Nothing to decide: told, not waited for.
            sh.refresh(call);
            return out;
        }
        // The answers in call order: per owner, its new series (refreshes are not answered).
        let answers = sh.decide(&call);
        let mut at = 0;
        for a in &asking {
            let mut tally = OwnerDelta::default();
            {
                let mut state = a.owner.state.lock().unwrap_or_else(|e| e.into_inner());
                let mut overflow_names: Option<Vec<String>> = None;
                for &(i, id) in &new[a.new.0..a.new.1] {
                    let s = req.series(buf, i as usize);
                    let samples = (s.sample_count() + s.histogram_count()) as u64;
                    let key = series_key(
                        decisions,
                        &batch,
                        (i, id, scratch.metric_keys[i as usize]),
                        samples,
                    );
                    let v = match &answers {
                        Ok(answers) => {
                            let refused = match answers[at] {
                                Answer::Admitted => None,
                                Answer::Refused(r) => Some(r),
                            };
                            at += 1;
                            state.settle(&key, refused, now, &self.global_active, &mut tally)
                        }
                        Err(_) => {
                            sh.metrics.new_series.with_label_values(&["local"]).inc();
                            let v = state.admit(
                                key,
                                now,
                                &self.global_active,
                                cfg.max_series,
                                sh.cfg.replicas_hint,
                                &mut tally,
                            );
                            // `admit` counts the samples again; `lookup` already did.
                            tally.samples -= samples.min(tally.samples);
                            v
                        }
                    };
                    if matches!(v, Verdict::Overflow(_)) {
                        self.absorb_overflow(
                            cfg,
                            &batch,
                            decisions,
                            &state,
                            &mut overflow_names,
                            (i, id),
                        );
                    }
                    self.settled(v, decisions, i, samples, &mut out);
                }
                a.owner.counters.add(&mut tally, &state);
            }
        }
        out
    }

    fn settled(
        &self,
        v: Verdict,
        decisions: &mut Decisions,
        i: u32,
        samples: u64,
        out: &mut AdmissionCounts,
    ) {
        match v {
            Verdict::Drop(_) => {
                out.dropped_series += 1;
                out.dropped_samples += samples;
            }
            Verdict::Overflow(_) => out.overflowed_series += 1,
            Verdict::Keep => out.kept_series += 1,
        }
        decisions.decide(i as usize, v);
    }

    /// Every series and limited label value this replica holds, as refresh calls at the
    /// slice each was last seen in: sent when it (re)joins, so that Redis counts them before
    /// it decides anything (after a Redis restart it has lost them).
    fn held_calls(&self, sh: &Shared, cfg: &GuardConfig, now_ms: i64) -> Vec<Call> {
        let window = Window::new(cfg.window, cfg.window_slices);
        let slice_ms = cfg.slice_length().as_millis().max(1) as u64;
        let now = window.slice(now_ms);
        let mut calls = Vec::new();
        let mut call: Option<Call> = None;
        for owner in self.owners() {
            let keys = OwnerKeys::new(&owner.key);
            let state = owner.state.lock().unwrap_or_else(|e| e.into_inner());
            let (series, values) = state.held();
            let slice = state.slice();
            let at =
                |tag: u8| slice.saturating_sub(u64::from(Window::tag(slice).wrapping_sub(tag)));
            let budget = &state.budget;
            let metric_limited =
                budget.max_series_per_metric.is_some() || !budget.metrics.is_empty();
            let mut started = false;
            let mut room = |call: &mut Option<Call>, started: &mut bool| {
                if call.as_ref().is_some_and(|c| c.len() >= RESYNC_CHUNK) {
                    calls.push(call.take().expect("checked"));
                    *started = false;
                }
                let c = call.get_or_insert_with(|| sh.call(&window, slice_ms, now));
                if !*started {
                    c.owner(&keys, false, budget.max_series, cfg.max_series);
                    *started = true;
                }
            };
            for (k, metric, tag) in series {
                room(&mut call, &mut started);
                call.as_mut().expect("made by room").series(
                    &keys,
                    k,
                    Mode::Refresh(at(tag)),
                    metric_limited.then_some((metric, 0)),
                    &[],
                );
            }
            for (name, v, tag) in values {
                room(&mut call, &mut started);
                call.as_mut()
                    .expect("made by room")
                    .label_value(&keys, name, v, at(tag));
            }
        }
        calls.extend(call);
        calls
    }

    /// Run every second when `guard.shared` is set: see `Shared::maintain`.
    pub async fn maintain_shared(&self, cfg: &GuardConfig, now_ms: i64) {
        let Some(sh) = cfg.shared.as_ref().and(self.shared.get()) else {
            return;
        };
        // Only the owners the report shows one by one: the largest `max_reported_services`
        // here (Redis's ranking may differ slightly; the rest are summed locally anyway).
        let mut ranked: Vec<_> = self
            .owners()
            .iter()
            .map(|o| {
                let active = o.state.lock().unwrap_or_else(|e| e.into_inner()).active();
                (active, o.key.clone())
            })
            .collect();
        ranked.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
        ranked.truncate(cfg.max_reported_services);
        let owners: Vec<_> = ranked.into_iter().map(|(_, k)| k).collect();
        sh.maintain(|sh| self.held_calls(sh, cfg, now_ms), &owners, cfg, now_ms)
            .await;
    }
}

type Labels<'a> = crate::series::Labels<'a, crate::wire::LabelsIter<'a>>;

fn series_key<'a>(
    decisions: &'a Decisions,
    batch: &Batch<'a>,
    (i, id, metric_key): (u32, u64, u64),
    samples: u64,
) -> SeriesKey<'a, Labels<'a>> {
    SeriesKey::new(
        id,
        decisions.labels(batch.req, batch.buf, i as usize),
        samples,
        metric_key,
    )
}

/// One series into the call with the limits of `budget` that apply to it.
#[allow(clippy::too_many_arguments)]
fn add_series(
    call: &mut Call,
    keys: &OwnerKeys,
    budget: &Budget,
    decisions: &Decisions,
    batch: &Batch<'_>,
    series: (u32, u64, u64),
    mode: Mode,
) {
    let key = series_key(decisions, batch, series, 0);
    let metric = budget
        .metric_limit(key.metric)
        .map(|limit| (key.metric_key, limit));
    let labels: Vec<(&str, u64, u64)> = budget
        .label_limits
        .iter()
        .filter_map(|(name, limit)| {
            key.labels
                .clone()
                .find(|(n, _)| *n == name.as_bytes())
                .map(|(_, v)| (name.as_str(), value_hash(v), *limit))
        })
        .collect();
    call.series(
        keys,
        crate::guard::table::key_of(key.id),
        mode,
        metric,
        &labels,
    );
}
