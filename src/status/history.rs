//! Recent counter snapshots, so the status page can show rates (a counter alone says nothing
//! about *now*) and tell an explosion from a service's usual churn.
//!
//! Two bounded rings, fed by the guard ticker (every 10 s) and by each page render:
//! - `recent`: full snapshots (per reported owner, upstream and rule group), at least
//!   `RECENT_SPACING` apart, at most `RECENT_LEN` of them; rates are taken over the oldest one
//!   at most `RATE_WINDOW` old;
//! - `hourly`: one cumulative new-series count per owner a minute, over the last hour: the
//!   baseline an explosion is measured against.
//!
//! Owners are the report's rows (at most `max_reported_services` and `other`), upstreams and
//! groups come from the config, so every map here is bounded by the config.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use crate::guard::report::OwnerCounts;
use crate::series::REASONS;

/// Snapshots kept for rates.
const RECENT_LEN: usize = 64;
/// Snapshots closer than this to the newest are not kept (unless an owner appeared), so that a
/// page reloaded in a loop cannot push the rate window's start out of the ring.
const RECENT_SPACING_MS: i64 = 2_000;
/// Rates are taken against the oldest snapshot at most this old...
const RATE_WINDOW_MS: i64 = 60_000;
/// ...and at least this old, so a rate never divides by a few milliseconds.
const MIN_SPAN_MS: i64 = 1_000;
/// One baseline point a minute, an hour of them.
const HOURLY_SPACING_MS: i64 = 60_000;
const HOURLY_LEN: usize = 61;
/// A baseline needs this much history before the rate window to mean anything.
const MIN_BASELINE_MS: i64 = 5 * 60_000;

/// An owner is exploding when, over the rate window, it brought at least this many new
/// series...
pub const EXPLOSION_MIN_NEW: u64 = 10;
/// ...at least this many times its new-series rate over the rest of the last hour (when there
/// is an hour of history at all)...
pub const EXPLOSION_FACTOR: f64 = 3.0;
/// ...and at a pace that would bring a tenth of its budget in an hour.
pub const EXPLOSION_BUDGET_SHARE_PER_HOUR: f64 = 0.1;

/// A row of the report: service, tenant and whether it is the summed `other` row.
pub type OwnerId = (String, Option<String>, bool);

fn owner_id(c: &OwnerCounts) -> OwnerId {
    (c.service.clone(), c.tenant.clone(), c.summary)
}

/// An upstream's counters at one moment (from forward's metrics).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UpstreamCounts {
    pub name: String,
    /// Requests answered 2xx.
    pub ok: u64,
    pub requests: u64,
    /// Failed bodies by class (`FailureClass::as_str`).
    pub errors: Vec<(String, u64)>,
    pub latency_sum_s: f64,
    pub latency_count: u64,
}

/// A rule group's counters at one moment (from the rules' metrics).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GroupCounts {
    pub key: String,
    pub evaluations: u64,
    pub failures: u64,
}

/// Everything sampled at one moment.
#[derive(Debug, Clone, Default)]
pub struct Observation {
    pub at_ms: i64,
    pub owners: Vec<OwnerCounts>,
    pub upstreams: Vec<UpstreamCounts>,
    pub groups: Vec<GroupCounts>,
}

/// An owner's rates over the rate window.
#[derive(Debug, Clone, PartialEq)]
pub struct OwnerRates {
    pub window_s: f64,
    pub samples_per_s: f64,
    /// Indexed by `Reason::index`.
    pub dropped_per_s: [f64; REASONS],
    /// New distinct series (admitted or not) per second.
    pub new_series_per_s: f64,
    /// The same over the last hour before the window; `None` without enough history.
    pub baseline_per_s: Option<f64>,
    pub exploding: bool,
}

/// What the counters say about an upstream.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UpstreamState {
    /// When a request was last seen to succeed (to the nearest observation).
    pub last_success_ms: Option<i64>,
    /// The class of the last failure seen, and when.
    pub last_error: Option<(String, i64)>,
    /// Mean latency over the rate window, else since the start.
    pub latency_s: Option<f64>,
    pub requests_per_s: Option<f64>,
}

/// The rates of one observation.
#[derive(Debug, Clone, Default)]
pub struct Rates {
    pub owners: HashMap<OwnerId, OwnerRates>,
    pub upstreams: HashMap<String, UpstreamState>,
    /// Rule failures within the rate window, by group.
    pub group_failures: HashMap<String, u64>,
}

#[derive(Debug, Clone)]
struct OwnerSnap {
    budget: u64,
    samples: u64,
    dropped: [u64; REASONS],
    created: u64,
    demand: f64,
    /// Cumulative new series since the owner was first observed.
    new_series: u64,
}

#[derive(Debug, Clone)]
struct Snapshot {
    at_ms: i64,
    owners: HashMap<OwnerId, OwnerSnap>,
    upstreams: HashMap<String, UpstreamCounts>,
    groups: HashMap<String, GroupCounts>,
}

#[derive(Default)]
struct Inner {
    recent: VecDeque<Snapshot>,
    hourly: VecDeque<(i64, HashMap<OwnerId, u64>)>,
    /// The latest observation (kept even when the ring skips it: it is the base for the next
    /// one's new-series count and upstream marks).
    last: Option<Snapshot>,
    marks: HashMap<String, UpstreamState>,
}

/// The rings; one per server, in `ingest::State`.
#[derive(Default)]
pub struct History {
    inner: Mutex<Inner>,
}

impl History {
    /// Record an observation and return its rates against the earlier ones.
    pub fn observe(&self, obs: Observation) -> Rates {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.observe(obs)
    }

    /// Snapshots held: (recent, hourly).
    #[cfg(test)]
    pub fn sizes(&self) -> (usize, usize) {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        (inner.recent.len(), inner.hourly.len())
    }
}

impl Inner {
    fn observe(&mut self, obs: Observation) -> Rates {
        let now = obs.at_ms;
        let snap = self.snapshot(obs);
        let rates = Rates {
            owners: snap
                .owners
                .iter()
                .filter_map(|(id, o)| Some((id.clone(), self.owner_rates(now, id, o)?)))
                .collect(),
            upstreams: self.upstream_states(&snap),
            group_failures: snap
                .groups
                .iter()
                .map(|(k, g)| {
                    let before = self
                        .reference(now, |s| s.groups.get(k).map(|g| g.failures))
                        .map_or(0, |(_, f)| f);
                    (k.clone(), g.failures.saturating_sub(before))
                })
                .collect(),
        };
        self.keep(snap);
        rates
    }

    /// The observation as a snapshot, each owner's cumulative new-series count carried on from
    /// the last observation: the larger of the admitted and the distinct-arrived growth, since
    /// `created` stops at the budget while the demand sketch goes on counting (and the sketch
    /// shrinks when the window slides).
    fn snapshot(&self, obs: Observation) -> Snapshot {
        let last = self.last.as_ref();
        let owners = obs
            .owners
            .iter()
            .map(|c| {
                let id = owner_id(c);
                let new_series = match last.and_then(|l| l.owners.get(&id)) {
                    Some(p) => {
                        let created = c.created_total.saturating_sub(p.created);
                        let arrived = (c.demand - p.demand).max(0.0).round() as u64;
                        p.new_series + created.max(arrived)
                    }
                    // First seen: its series so far are its base, not an explosion.
                    None => 0,
                };
                let snap = OwnerSnap {
                    budget: c.budget,
                    samples: c.samples_total,
                    dropped: c.dropped_samples_total,
                    created: c.created_total,
                    demand: c.demand,
                    new_series,
                };
                (id, snap)
            })
            .collect();
        Snapshot {
            at_ms: obs.at_ms,
            owners,
            upstreams: obs
                .upstreams
                .into_iter()
                .map(|u| (u.name.clone(), u))
                .collect(),
            groups: obs.groups.into_iter().map(|g| (g.key.clone(), g)).collect(),
        }
    }

    /// The oldest kept snapshot within the rate window (and at least `MIN_SPAN_MS` old) for
    /// which `f` has a value.
    fn reference<T>(&self, now: i64, f: impl Fn(&Snapshot) -> Option<T>) -> Option<(i64, T)> {
        self.recent
            .iter()
            .filter(|s| now - s.at_ms <= RATE_WINDOW_MS && now - s.at_ms >= MIN_SPAN_MS)
            .find_map(|s| f(s).map(|v| (s.at_ms, v)))
    }

    fn owner_rates(&self, now: i64, id: &OwnerId, o: &OwnerSnap) -> Option<OwnerRates> {
        let (then, before) = self.reference(now, |s| s.owners.get(id).cloned())?;
        let secs = (now - then) as f64 / 1000.0;
        let per_s = |a: u64, b: u64| a.saturating_sub(b) as f64 / secs;
        let new = o.new_series.saturating_sub(before.new_series);
        let new_series_per_s = new as f64 / secs;
        // The hour before the window: the oldest minute point that has the owner, far enough
        // before the window's start.
        let baseline_per_s = self
            .hourly
            .iter()
            .find_map(|(at, m)| {
                m.get(id)
                    .filter(|_| then - at >= MIN_BASELINE_MS)
                    .map(|n| (*at, *n))
            })
            .map(|(at, n)| {
                before.new_series.saturating_sub(n) as f64 / ((then - at) as f64 / 1000.0)
            });
        Some(OwnerRates {
            window_s: secs,
            samples_per_s: per_s(o.samples, before.samples),
            dropped_per_s: std::array::from_fn(|i| per_s(o.dropped[i], before.dropped[i])),
            new_series_per_s,
            baseline_per_s,
            exploding: false,
        })
        .map(|mut r| {
            r.exploding = is_exploding(new, &r, o.budget);
            r
        })
    }

    fn upstream_states(&mut self, snap: &Snapshot) -> HashMap<String, UpstreamState> {
        let now = snap.at_ms;
        let mut out = HashMap::new();
        for (name, u) in &snap.upstreams {
            let prev = self.last.as_ref().and_then(|l| l.upstreams.get(name));
            let mark = self.marks.entry(name.clone()).or_default();
            if let Some(p) = prev {
                if u.ok > p.ok {
                    mark.last_success_ms = Some(now);
                }
                let grown = u
                    .errors
                    .iter()
                    .map(|(class, n)| {
                        let before = p
                            .errors
                            .iter()
                            .find(|(c, _)| c == class)
                            .map_or(0, |(_, b)| *b);
                        (class, n.saturating_sub(before))
                    })
                    .filter(|(_, d)| *d > 0)
                    .max_by_key(|(_, d)| *d);
                if let Some((class, _)) = grown {
                    mark.last_error = Some((class.clone(), now));
                }
            }
            let mut state = mark.clone();
            let reference = self.reference(now, |s| s.upstreams.get(name).cloned());
            state.latency_s = match &reference {
                Some((_, r)) if u.latency_count > r.latency_count => Some(
                    (u.latency_sum_s - r.latency_sum_s)
                        / (u.latency_count - r.latency_count) as f64,
                ),
                _ if u.latency_count > 0 => Some(u.latency_sum_s / u.latency_count as f64),
                _ => None,
            };
            state.requests_per_s = reference.map(|(at, r)| {
                u.requests.saturating_sub(r.requests) as f64 / ((now - at) as f64 / 1000.0)
            });
            out.insert(name.clone(), state);
        }
        // Upstreams gone from the config are forgotten.
        self.marks
            .retain(|name, _| snap.upstreams.contains_key(name));
        out
    }

    fn keep(&mut self, snap: Snapshot) {
        let now = snap.at_ms;
        let keep_recent = match self.recent.back() {
            None => true,
            Some(newest) => {
                now - newest.at_ms >= RECENT_SPACING_MS
                    || snap.owners.keys().any(|id| !newest.owners.contains_key(id))
            }
        };
        if keep_recent {
            if self.recent.len() == RECENT_LEN {
                self.recent.pop_front();
            }
            self.recent.push_back(snap.clone());
        }
        let keep_hourly = self
            .hourly
            .back()
            .is_none_or(|(at, _)| now - at >= HOURLY_SPACING_MS);
        if keep_hourly {
            if self.hourly.len() == HOURLY_LEN {
                self.hourly.pop_front();
            }
            let counts = snap
                .owners
                .iter()
                .map(|(id, o)| (id.clone(), o.new_series))
                .collect();
            self.hourly.push_back((now, counts));
        }
        self.last = Some(snap);
    }
}

/// See `EXPLOSION_*`.
fn is_exploding(new: u64, r: &OwnerRates, budget: u64) -> bool {
    let fast_enough =
        r.new_series_per_s * 3600.0 >= budget as f64 * EXPLOSION_BUDGET_SHARE_PER_HOUR;
    let above_usual = r
        .baseline_per_s
        .is_none_or(|b| r.new_series_per_s >= b * EXPLOSION_FACTOR);
    new >= EXPLOSION_MIN_NEW && fast_enough && above_usual
}
