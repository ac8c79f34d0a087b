//! Admission behaviour, driven through real parsed requests.

use std::sync::Arc;
use std::time::Duration;

use prost::Message;

use super::*;
use super::{Action, Budget, GuardConfig};
use crate::series::Reason;
use crate::wire::testgen;
use crate::wire::types::v1;
use crate::wire::{Limits, Version};

const T0: i64 = 1_700_000_000_000;

/// A series with `samples` samples, valued 0, 1, … one millisecond apart from `T0`.
fn series(labels: &[(&str, &str)], samples: usize) -> v1::TimeSeries {
    let samples: Vec<(f64, i64)> = (0..samples).map(|i| (i as f64, T0 + i as i64)).collect();
    testgen::series(labels, &samples)
}

/// `n` series of `metric` owned by `service`, told apart by an `id` label starting at `from`.
fn batch(service: &str, metric: &str, from: usize, n: usize) -> Vec<v1::TimeSeries> {
    (from..from + n)
        .map(|i| {
            series(
                &[
                    ("__name__", metric),
                    ("id", &i.to_string()),
                    ("service", service),
                ],
                1,
            )
        })
        .collect()
}

struct Run {
    guard: Guard,
    cfg: GuardConfig,
    scratch: Scratch,
    decisions: Decisions,
}

impl Run {
    fn new(cfg: GuardConfig) -> Self {
        Run {
            guard: Guard::new(),
            cfg,
            scratch: Scratch::default(),
            decisions: Decisions::default(),
        }
    }

    /// Admit one request at `now_ms`; the verdicts in request order.
    fn send(&mut self, ts: Vec<v1::TimeSeries>, now_ms: i64) -> Vec<Verdict> {
        self.admit_body(&v1_body(ts), Version::V1, false, now_ms)
            .unwrap()
    }

    /// `send` at `T0`, read lazily as the server reads it where the guard is the first
    /// stage to read labels (every series of these requests is).
    fn send_lazy(&mut self, ts: Vec<v1::TimeSeries>) -> Vec<Verdict> {
        self.admit_body(&v1_body(ts), Version::V1, true, T0)
            .unwrap()
    }

    /// Admit one 2.0 request at `T0`, read lazily as the server reads it.
    fn send_v2(
        &mut self,
        req: crate::wire::types::v2::Request,
    ) -> Result<Vec<Verdict>, crate::wire::WireError> {
        self.admit_body(&req.encode_to_vec(), Version::V2, true, T0)
    }

    fn admit_body(
        &mut self,
        buf: &[u8],
        version: Version,
        lazy: bool,
        now_ms: i64,
    ) -> Result<Vec<Verdict>, crate::wire::WireError> {
        let mut parsed = Parsed::new();
        parsed.set_lazy_labels(lazy);
        parsed.parse(buf, version, &Limits::default())?;
        assert!(
            (0..parsed.len()).all(|i| parsed.lazy(i) == lazy),
            "read lazily: {lazy}"
        );
        let batch = Batch {
            req: &parsed,
            buf,
            tenant: None,
            now_ms,
        };
        self.decisions.reset(parsed.len());
        self.guard
            .admit(&self.cfg, batch, &mut self.decisions, &mut self.scratch)?;
        Ok((0..parsed.len())
            .map(|i| self.decisions.verdict(i))
            .collect())
    }

    fn row(&self, service: &str) -> report::OwnerReport {
        self.guard
            .report(&self.cfg)
            .services
            .into_iter()
            .find(|r| r.service == service)
            .unwrap_or_else(|| panic!("no report row for {service}"))
    }
}

fn v1_body(ts: Vec<v1::TimeSeries>) -> Vec<u8> {
    v1::WriteRequest {
        timeseries: ts,
        metadata: vec![],
    }
    .encode_to_vec()
}

fn kept(v: &[Verdict]) -> usize {
    v.iter().filter(|v| **v == Verdict::Keep).count()
}

fn budget(max_series: u64) -> Budget {
    Budget {
        max_series,
        action: Action::Drop,
        ..(*GuardConfig::default().default_budget).clone()
    }
}

fn cfg(max_series: u64) -> GuardConfig {
    GuardConfig::with_default_budget(max_series, vec!["service".into()])
}

#[test]
fn admits_up_to_the_budget_and_keeps_admitted_series_flowing() {
    let mut r = Run::new(cfg(100));
    assert_eq!(kept(&r.send(batch("a", "m", 0, 80), T0)), 80);
    // 50 more: 20 fit, 30 are refused.
    let v = r.send(batch("a", "m", 80, 50), T0 + 1000);
    assert_eq!(kept(&v), 20);
    assert!(v[20..].iter().all(|v| *v == Verdict::Drop(Reason::Budget)));
    // The first 100 keep flowing; the refused ones stay refused.
    assert_eq!(kept(&r.send(batch("a", "m", 0, 130), T0 + 2000)), 100);
    let row = r.row("a");
    assert_eq!((row.active, row.created_total, row.budget), (100, 100, 100));
    assert_eq!(row.dropped_samples_total["budget"], 60);
    // Another service has its own budget.
    assert_eq!(kept(&r.send(batch("b", "m", 0, 100), T0 + 3000)), 100);
}

#[test]
fn retries_do_not_double_count() {
    let mut r = Run::new(cfg(10));
    let req = batch("a", "m", 0, 8);
    r.send(req.clone(), T0);
    r.send(req.clone(), T0);
    r.send(req, T0 + 1);
    let row = r.row("a");
    assert_eq!((row.active, row.created_total), (8, 8));
    assert_eq!(r.guard.global_active(), 8);
}

#[test]
fn series_unseen_for_a_window_free_their_slot() {
    let mut c = cfg(10);
    c.window = Duration::from_secs(3600);
    c.window_slices = 6;
    let mut r = Run::new(c);
    r.send(batch("a", "m", 0, 10), T0);
    assert_eq!(kept(&r.send(batch("a", "m", 10, 5), T0)), 0);
    // Keep series 0..5 alive half way through; 5..10 go quiet.
    r.send(batch("a", "m", 0, 5), T0 + 30 * 60 * 1000);
    // One full window after the start, 5..10 have expired and 5 new series fit.
    let v = r.send(batch("a", "m", 10, 5), T0 + 61 * 60 * 1000);
    assert_eq!(kept(&v), 5);
    assert_eq!(r.row("a").active, 10);
    // tick expires idle owners too, and forgets them.
    r.guard.tick(&r.cfg, T0 + 200 * 60 * 1000);
    assert!(r.guard.owners().is_empty());
    assert_eq!(r.guard.global_active(), 0);
}

#[test]
fn warn_admits_everything_and_counts_what_drop_would_have_dropped() {
    let mut c = cfg(10);
    Arc::make_mut(&mut c.default_budget).action = Action::Warn;
    let mut r = Run::new(c);
    assert_eq!(kept(&r.send(batch("a", "m", 0, 25), T0)), 25);
    let row = r.row("a");
    assert_eq!(row.active, 25);
    assert_eq!(row.warned_samples_total["budget"], 15);
    assert_eq!(row.dropped_samples_total["budget"], 0);
}

#[test]
fn per_metric_budgets() {
    let mut c = cfg(1000);
    let b = Arc::make_mut(&mut c.default_budget);
    b.max_series_per_metric = Some(10);
    b.metrics.insert("big".into(), 50);
    let mut r = Run::new(c);
    assert_eq!(kept(&r.send(batch("a", "small", 0, 20), T0)), 10);
    assert_eq!(kept(&r.send(batch("a", "big", 0, 60), T0)), 50);
    assert_eq!(r.row("a").dropped_samples_total["metric_budget"], 20);
}

#[test]
fn label_value_limits() {
    let mut c = cfg(1000);
    Arc::make_mut(&mut c.default_budget).label_limits = vec![("id".into(), 30)];
    let mut r = Run::new(c);
    assert_eq!(kept(&r.send(batch("a", "m", 0, 40), T0)), 30);
    // A known value on another metric is fine; a new value is not.
    assert_eq!(kept(&r.send(batch("a", "other", 0, 1), T0)), 1);
    assert_eq!(kept(&r.send(batch("a", "other", 35, 1), T0)), 0);
    assert_eq!(r.row("a").dropped_samples_total["label_limit"], 11);
}

#[test]
fn global_cap_across_services() {
    let mut c = cfg(1000);
    c.max_series = Some(150);
    let mut r = Run::new(c);
    assert_eq!(kept(&r.send(batch("a", "m", 0, 100), T0)), 100);
    assert_eq!(kept(&r.send(batch("b", "m", 0, 100), T0)), 50);
    assert_eq!(r.row("b").dropped_samples_total["global_cap"], 50);
}

#[test]
fn owner_fallback_unowned_and_rules() {
    let mut c = cfg(5);
    c.owner_labels = vec!["service".into(), "job".into()];
    c.unowned_budget = Arc::new(budget(2));
    c.rules.push(BudgetRule {
        tenant: None,
        owner: OwnerMatch::Exact("vip".into()),
        budget: Arc::new(budget(20)),
    });
    let mut r = Run::new(c);
    let by_job: Vec<_> = (0..10)
        .map(|i| {
            series(
                &[("__name__", "m"), ("i", &i.to_string()), ("job", "vip")],
                1,
            )
        })
        .collect();
    assert_eq!(kept(&r.send(by_job, T0)), 10);
    let no_owner: Vec<_> = (0..10)
        .map(|i| series(&[("__name__", "m"), ("i", &i.to_string())], 1))
        .collect();
    assert_eq!(kept(&r.send(no_owner, T0)), 2);
    assert_eq!(r.row(UNOWNED).budget, 2);
    assert_eq!(r.row("vip").budget, 20);
}

/// A budget of 1000 series for each of at most `max_owners` owners, all reported.
fn capped(max_owners: usize) -> Run {
    let mut c = cfg(1000);
    c.max_owners = max_owners;
    c.max_reported_services = 100;
    Run::new(c)
}

#[test]
fn owners_past_the_cap_share_other() {
    let mut r = capped(3);
    for s in 0..10 {
        r.send(batch(&format!("s{s}"), "m", 0, 2), T0);
    }
    assert_eq!(r.guard.owners().len(), 4);
    assert_eq!(r.row(OTHER).active, 14);
}

/// A request mixing owners the registry has, a new one and owners past the cap (which the
/// registry never holds under their own value, so every request resolves them again) admits
/// each series into the right owner, request after request.
#[test]
fn a_request_mixes_known_new_and_capped_owners() {
    let mut r = capped(3);
    let mut first = batch("a", "m", 0, 2);
    first.extend(batch("b", "m", 0, 2));
    assert_eq!(kept(&r.send(first, T0)), 4);
    let mixed = || {
        let mut ts = Vec::new();
        for (s, n) in [("a", 3), ("d", 2), ("c", 2), ("b", 1), ("e", 4), ("a", 1)] {
            // Ids from 100: none of the first request's.
            ts.extend(batch(s, "m", 100 + ts.len(), n));
        }
        ts
    };
    for round in 0..3 {
        assert_eq!(kept(&r.send(mixed(), T0 + round)), 13, "round {round}");
        // `d` came first of the new owners and took the last place; `c` and `e` are past it.
        assert_eq!(r.guard.owners().len(), 4, "a, b, d and other");
        assert_eq!(r.row("a").active, 2 + 4, "round {round}");
        assert_eq!(r.row("b").active, 2 + 1);
        assert_eq!(r.row("d").active, 2);
        assert_eq!(r.row(OTHER).active, 2 + 4);
    }
}

#[test]
fn without_tenants_only_max_owners_caps_owners() {
    let mut c = cfg(1000);
    c.max_owners = 8;
    c.max_owners_per_tenant = 2;
    c.max_reported_services = 100;
    let mut r = Run::new(c);
    for s in 0..10 {
        r.send(batch(&format!("s{s}"), "m", 0, 1), T0);
    }
    // Eight services of their own and `other`, not two and `other`.
    assert_eq!(r.guard.owners().len(), 9);
    assert_eq!(r.row(OTHER).active, 2);
}

#[test]
fn report_is_bounded_and_sums_the_rest() {
    let mut c = cfg(1000);
    c.max_reported_services = 2;
    let mut r = Run::new(c);
    for (s, n) in [("a", 30), ("b", 20), ("c", 10), ("d", 5)] {
        r.send(batch(s, "m", 0, n), T0);
    }
    let rep = r.guard.report(&r.cfg);
    let names: Vec<_> = rep.services.iter().map(|s| s.service.as_str()).collect();
    assert_eq!(names, ["a", "b", OTHER]);
    assert_eq!(rep.services[2].active, 15);
    let text = rep.to_prometheus();
    assert!(
        text.contains("cardguard_series_active{service=\"other\"} 15"),
        "{text}"
    );
    assert!(text.contains("cardguard_series_budget{service=\"a\"} 1000"));
    assert!(text.contains("cardguard_samples_dropped_total{service=\"a\",reason=\"budget\"} 0"));
}

#[test]
fn demand_and_top_offenders_see_refused_series() {
    let mut r = Run::new(cfg(100));
    let mut sent = 0;
    for round in 0..20 {
        let ts: Vec<_> = (0..500)
            .map(|i| {
                let user = (round * 500 + i).to_string();
                series(
                    &[("__name__", "req"), ("service", "x"), ("user_id", &user)],
                    1,
                )
            })
            .collect();
        sent += ts.len();
        r.send(ts, T0 + round as i64);
    }
    let row = r.row("x");
    assert_eq!(row.active, 100);
    let demand = row.demand.unwrap();
    assert!(
        (demand - sent as f64).abs() / (sent as f64) < 0.02,
        "demand {demand} vs {sent}"
    );
    assert_eq!(row.top_labels[0].name, "user_id");
    assert_eq!(row.top_metrics[0].name, "req");
}

#[test]
fn reload_re_resolves_budgets() {
    let mut r = Run::new(cfg(10));
    r.send(batch("a", "m", 0, 20), T0);
    assert_eq!(r.row("a").active, 10);
    r.cfg = cfg(15);
    r.cfg.generation = 1;
    assert_eq!(kept(&r.send(batch("a", "m", 0, 20), T0)), 15);
    assert_eq!(r.row("a").budget, 15);
}

#[test]
fn unsorted_labels_are_the_same_series() {
    let mut r = Run::new(cfg(10));
    r.send(
        vec![series(
            &[("__name__", "m"), ("a", "1"), ("service", "s")],
            1,
        )],
        T0,
    );
    r.send(
        vec![series(
            &[("service", "s"), ("a", "1"), ("__name__", "m")],
            1,
        )],
        T0,
    );
    assert_eq!(r.row("s").created_total, 1);
}

#[test]
fn relabel_collapses_over_budget_series_into_one_counter() {
    let mut c = cfg(3);
    let b = Arc::make_mut(&mut c.default_budget);
    b.action = Action::Relabel;
    b.overflow_labels = vec!["id".into()];
    let mut r = Run::new(c);
    // 10 counters of one service: 3 admitted, 7 collapse into id="__overflow__".
    let ts: Vec<_> = (0..10)
        .map(|i| {
            let mut s = series(
                &[
                    ("__name__", "req_total"),
                    ("id", &i.to_string()),
                    ("service", "a"),
                ],
                0,
            );
            s.samples = vec![v1::Sample {
                value: 10.0 + i as f64,
                timestamp: T0,
            }];
            s
        })
        .collect();
    let v = r.send(ts.clone(), T0);
    assert_eq!(kept(&v), 3);
    assert_eq!(
        v.iter()
            .filter(|v| matches!(v, Verdict::Overflow(Reason::Budget)))
            .count(),
        7
    );
    let out = r.guard.overflow.flush(T0, 3_600_000);
    assert_eq!(out.len(), 1);
    let want: f64 = (3..10).map(|i| 10.0 + i as f64).sum();
    assert_eq!(
        out[0].samples[0],
        (want, T0),
        "the sum, stamped with the flush time"
    );
    assert!(out[0]
        .labels
        .contains(&("id".to_string(), "__overflow__".to_string())));
    assert_eq!(r.row("a").overflowed_samples_total["budget"], 7);
    // A retry of the same request changes nothing.
    r.send(ts, T0);
    assert!(r.guard.overflow.flush(T0, 3_600_000).is_empty());
}

/// `n` series of service `a`, one `user_id` value each, in one request.
fn send_exploding_user_ids(r: &mut Run, n: usize) {
    let ts: Vec<_> = (0..n)
        .map(|i| {
            series(
                &[
                    ("__name__", "hits_total"),
                    ("service", "a"),
                    ("user_id", &format!("u{i}")),
                ],
                1,
            )
        })
        .collect();
    r.send(ts, T0);
}

/// The overflow holds one series, with `user_id` aggregated away.
fn assert_only_user_id_collapsed(r: &mut Run) {
    let out = r.guard.overflow.flush(T0, 3_600_000);
    assert_eq!(out.len(), 1, "{out:?}");
    assert!(out[0]
        .labels
        .contains(&("user_id".to_string(), "__overflow__".to_string())));
}

#[test]
fn relabel_without_named_labels_uses_the_exploding_label() {
    let mut c = cfg(5);
    Arc::make_mut(&mut c.default_budget).action = Action::Relabel;
    let mut r = Run::new(c);
    send_exploding_user_ids(&mut r, 50);
    assert_only_user_id_collapsed(&mut r);
}

#[test]
fn relabel_without_named_labels_finds_the_exploding_label_of_a_small_owner() {
    // Refused by a per-metric limit while the owner is far from its budget: the label to
    // aggregate away is still the one with the most values, not a tie of the refused series'.
    let mut c = cfg(1000);
    let b = Arc::make_mut(&mut c.default_budget);
    b.action = Action::Relabel;
    b.max_series_per_metric = Some(3);
    let mut r = Run::new(c);
    send_exploding_user_ids(&mut r, 10);
    assert_only_user_id_collapsed(&mut r);
}

#[test]
fn tenants_are_an_outer_level() {
    let mut c = cfg(2);
    c.tenant_header = Some(http::HeaderName::from_static("x-scope-orgid"));
    c.rules.push(BudgetRule {
        tenant: Some("big".into()),
        owner: OwnerMatch::Regex(regex::Regex::new("^.*$").unwrap()),
        budget: Arc::new(budget(5)),
    });
    let mut r = Run::new(c);
    let mut send = |tenant: &str, n: usize| {
        let buf = v1::WriteRequest {
            timeseries: batch("a", "m", 0, n),
            metadata: vec![],
        }
        .encode_to_vec();
        let mut parsed = Parsed::new();
        parsed.parse(&buf, Version::V1, &Limits::default()).unwrap();
        let batch = Batch {
            req: &parsed,
            buf: &buf,
            tenant: Some(tenant),
            now_ms: T0,
        };
        r.decisions.reset(parsed.len());
        r.guard
            .admit(&r.cfg, batch, &mut r.decisions, &mut r.scratch)
            .unwrap()
            .kept_series
    };
    // Service "a" of two tenants: separate owners, separate budgets.
    assert_eq!(send("small", 10), 2);
    assert_eq!(send("big", 10), 5);
    let rep = r.guard.report(&r.cfg);
    let mut rows: Vec<_> = rep
        .services
        .iter()
        .map(|s| (s.tenant.clone().unwrap(), s.active))
        .collect();
    rows.sort();
    assert_eq!(rows, vec![("big".into(), 5), ("small".into(), 2)]);
    assert!(rep
        .to_prometheus()
        .contains("cardguard_series_active{service=\"a\",tenant=\"big\"} 5"));
}

#[test]
fn label_values_seen_in_an_expired_slice_are_sketched_again() {
    // The label sketches skip a (name, value) already inserted in the current slice; once
    // the window has moved past that slice, the value must be counted anew. An owner of a
    // few series tracks no names (see `small_owners_track_no_names_until_they_grow`): its
    // budget is near, so it does.
    let mut r = Run::new(cfg(2));
    let one = |id: &str| series(&[("__name__", "m"), ("service", "x"), ("zone", id)], 1);
    r.send(vec![one("a"), one("a")], T0);
    let later = T0 + 2 * 3_600_000;
    r.send(vec![one("a")], later);
    let row = r.row("x");
    let zone = row
        .top_labels
        .iter()
        .find(|l| l.name == "zone")
        .unwrap_or_else(|| panic!("zone not among {:?}", row.top_labels));
    assert!((zone.estimate - 1.0).abs() < 0.5, "zone: {}", zone.estimate);
}

#[test]
fn small_owners_track_no_names_until_they_grow() {
    let n = owner::UNTRACKED_MAX as usize;
    let id_values = |row: &report::OwnerReport| {
        row.top_labels
            .iter()
            .find(|l| l.name == "id")
            .map(|l| l.estimate)
    };
    // Far from its budget: no names while it holds `UNTRACKED_MAX` series or fewer...
    let mut r = Run::new(cfg(1000));
    r.send(batch("a", "m", 0, n), T0);
    let row = r.row("a");
    assert_eq!(row.active, n as u64);
    assert!(row.top_metrics.is_empty() && row.top_labels.is_empty());
    // ...then the series that come past it...
    r.send(batch("a", "m", 0, n + 4), T0);
    let row = r.row("a");
    assert_eq!(row.top_metrics[0].name, "m");
    assert_eq!(id_values(&row), Some(3.0));
    // ...and, a slice later, every series sent again.
    let slice_ms = Window::new(r.cfg.window, r.cfg.window_slices).slice_ms() as i64;
    r.send(batch("a", "m", 0, n + 4), T0 + slice_ms);
    assert_eq!(id_values(&r.row("a")), Some((n + 4) as f64));

    // Near its budget, an owner names its first series; a refusal names what comes next.
    let mut r = Run::new(cfg(n as u64));
    r.send(batch("a", "m", 0, 1), T0);
    assert_eq!(id_values(&r.row("a")), Some(1.0));
    let mut c = cfg(1000);
    Arc::make_mut(&mut c.default_budget).max_series_per_metric = Some(1);
    let mut r = Run::new(c);
    r.send(batch("a", "m", 0, 3), T0);
    assert_eq!(id_values(&r.row("a")), Some(2.0));
}

#[test]
fn demand_is_the_admitted_series_until_one_is_refused() {
    let slice_ms = {
        let c = cfg(10);
        Window::new(c.window, c.window_slices).slice_ms() as i64
    };
    let mut r = Run::new(cfg(10));
    r.send(batch("a", "m", 0, 8), T0);
    assert_eq!(r.row("a").demand, Some(8.0));
    // A slice later, ids 4..12: four again, two admitted, two refused.
    r.send(batch("a", "m", 4, 8), T0 + slice_ms);
    let row = r.row("a");
    assert_eq!((row.active, row.demand), (10, Some(12.0)));
    // Refused again, and one more new: each counted once.
    r.send(batch("a", "m", 0, 13), T0 + 2 * slice_ms);
    assert_eq!(r.row("a").demand, Some(13.0));
    // A window with nothing: no demand, and the admitted series are the demand again.
    let later = T0 + 2 * slice_ms + 2 * 3_600_000;
    r.send(batch("a", "m", 0, 3), later);
    let row = r.row("a");
    assert_eq!((row.active, row.demand), (3, Some(3.0)));
}

#[test]
fn owner_values_compare_inline_when_short_and_by_the_key_when_long() {
    let long = [b'x'; SHORT_VALUE + 1];
    let values: [Option<&[u8]>; 7] = [
        None,
        Some(b""),
        Some(b"a"),
        Some(b"svc-00001"),
        Some(b"svc-00002"),
        Some(&long[..SHORT_VALUE]),
        Some(&long[..SHORT_VALUE - 1]),
    ];
    for a in values {
        for b in values {
            assert_eq!(ShortValue::new(a).is(b), Some(a == b), "{a:?} {b:?}");
        }
        assert_eq!(ShortValue::new(a).is(Some(&long)), Some(false));
        assert_eq!(ShortValue::new(Some(&long)).is(a), None);
    }
}

#[test]
fn counts_are_the_reports_rows_without_the_sketches() {
    let mut c = cfg(10);
    c.max_reported_services = 2;
    let mut r = Run::new(c);
    for (s, n) in [("a", 30), ("b", 8), ("c", 4), ("d", 2)] {
        r.send(batch(s, "m", 0, n), T0);
    }
    let rep = r.guard.report(&r.cfg);
    let counts = r.guard.counts(&r.cfg);
    let rows: Vec<_> = counts
        .iter()
        .map(|c| (c.service.as_str(), c.summary, c.active, c.budget))
        .collect();
    assert_eq!(
        rows,
        [
            ("a", false, 10, 10),
            ("b", false, 8, 10),
            (OTHER, true, 6, 20)
        ]
    );
    for (c, row) in counts.iter().zip(&rep.services) {
        assert_eq!(c.created_total, row.created_total);
        assert_eq!(c.samples_total, row.samples_total);
        assert_eq!(
            c.dropped_samples_total[Reason::Budget.index()],
            row.dropped_samples_total["budget"]
        );
        assert_eq!(c.summary, row.is_summary());
    }
    assert_eq!(counts[0].demand, 30.0);
    assert_eq!(rep.services[0].fill(), 1.0);
    assert_eq!(rep.services[1].fill(), 0.8);
}

/// Admit one request of `ts` for `tenant` at `now_ms`; the series kept.
fn send_as(r: &mut Run, tenant: &str, ts: Vec<v1::TimeSeries>, now_ms: i64) -> u64 {
    let buf = v1::WriteRequest {
        timeseries: ts,
        metadata: vec![],
    }
    .encode_to_vec();
    let mut parsed = Parsed::new();
    parsed.parse(&buf, Version::V1, &Limits::default()).unwrap();
    let batch = Batch {
        req: &parsed,
        buf: &buf,
        tenant: Some(tenant),
        now_ms,
    };
    r.decisions.reset(parsed.len());
    r.guard
        .admit(&r.cfg, batch, &mut r.decisions, &mut r.scratch)
        .unwrap()
        .kept_series
}

fn tenants_cfg(max_series: u64) -> GuardConfig {
    let mut c = cfg(max_series);
    c.tenant_header = Some(http::HeaderName::from_static("x-scope-orgid"));
    c.max_reported_services = 1000;
    c
}

/// Issue 11: 10,000 junk `service` values pushed every later real service into `other`
/// forever. Owners idle for a whole window are forgotten, so a real service gets its own
/// slot (and budget) back once the junk stops.
#[test]
fn junk_owners_idle_for_a_window_are_forgotten() {
    let mut c = cfg(1000);
    c.max_owners = 100;
    let mut r = Run::new(c);
    for s in 0..10_000 {
        r.send(batch(&format!("junk{s}"), "m", 0, 1), T0);
    }
    assert_eq!(r.guard.owners().len(), 101);
    r.send(batch("real", "m", 0, 1), T0);
    assert!(r
        .guard
        .owners()
        .iter()
        .all(|o| o.key.display_name() != "real"));
    // Half a window later nothing is forgotten yet; a full window after the junk, all of it.
    r.guard.tick(&r.cfg, T0 + 30 * 60 * 1000);
    assert_eq!(r.guard.owners().len(), 101);
    r.guard.tick(&r.cfg, T0 + 61 * 60 * 1000);
    assert_eq!(r.guard.owners().len(), 0);
    assert_eq!(r.guard.global_active(), 0);
    r.send(batch("real", "m", 0, 3), T0 + 62 * 60 * 1000);
    assert_eq!(r.row("real").active, 3);
}

/// Owners on one registry hash are told apart by value: the same verdicts, rows and
/// survivors as without the collision, through admission, a request of many owners, budgets
/// and idle expiry (which moves a collided owner into the freed place).
#[test]
fn owners_whose_hashes_collide_are_kept_apart() {
    let run = |collide: bool| {
        super::COLLIDE.with(|c| c.set(collide));
        let mut c = cfg(3);
        c.max_reported_services = 100;
        let mut r = Run::new(c);
        let mut verdicts = Vec::new();
        for s in 0..4 {
            verdicts.push(r.send(batch(&format!("s{s}"), "m", 0, 5), T0));
        }
        let mut mixed = Vec::new();
        for s in 0..6 {
            mixed.extend(batch(&format!("s{s}"), "m", 1, 4));
        }
        verdicts.push(r.send(mixed, T0));
        let mut rows: Vec<_> = (0..6)
            .map(|s| {
                let row = r.row(&format!("s{s}"));
                (row.active, row.budget)
            })
            .collect();
        // s1 and s4 keep sending; the others are forgotten a window after their last series.
        for k in 1..=4 {
            let t = T0 + k * 20 * 60 * 1000;
            let mut live = batch("s1", "m", 0, 2);
            live.extend(batch("s4", "m", 0, 2));
            verdicts.push(r.send(live, t));
            r.guard.tick(&r.cfg, t);
        }
        let mut names: Vec<String> = r
            .guard
            .owners()
            .iter()
            .map(|o| o.key.display_name().to_string())
            .collect();
        names.sort();
        rows.extend(["s1", "s4"].map(|s| (r.row(s).active, r.row(s).budget)));
        verdicts.push(r.send(batch("s0", "m", 0, 5), T0 + 100 * 60 * 1000));
        super::COLLIDE.with(|c| c.set(false));
        (verdicts, rows, names)
    };
    let collided = run(true);
    assert_eq!(collided.2, ["s1", "s4"]);
    // s0..s3 are full at 3 (ids 0-2) and keep ids 1 and 2; s4 and s5 admit 3 of 4.
    assert_eq!(kept(&collided.0[4]), 2 * 4 + 3 * 2);
    assert_eq!(collided, run(false));
}

#[test]
fn an_owner_with_live_series_is_not_forgotten() {
    let mut r = Run::new(cfg(1000));
    r.send(batch("a", "m", 0, 2), T0);
    // Still sending every 20 minutes: never idle.
    for k in 1..=6 {
        r.send(batch("a", "m", 0, 2), T0 + k * 20 * 60 * 1000);
        r.guard.tick(&r.cfg, T0 + k * 20 * 60 * 1000);
    }
    assert_eq!(r.row("a").active, 2);
    assert_eq!(r.row("a").created_total, 2);
}

#[test]
fn tenants_past_max_tenants_share_one_owner() {
    let mut c = tenants_cfg(5);
    c.max_tenants = 3;
    let mut r = Run::new(c);
    for t in 0..50 {
        send_as(&mut r, &format!("t{t}"), batch("a", "m", t * 4, 4), T0);
    }
    // Three real tenants, and everyone after them on tenant `other`, service `other`, whose
    // one budget (5) all the invented tenants share: rotating the tenant escapes nothing.
    assert_eq!(r.guard.tenants(), 4);
    let rep = r.guard.report(&r.cfg);
    let other = rep
        .services
        .iter()
        .find(|s| s.tenant.as_deref() == Some(OTHER))
        .unwrap();
    assert_eq!((other.service.as_str(), other.active), (OTHER, 5));
    assert_eq!(r.guard.global_active(), 3 * 4 + 5);
    // Once they are idle for a window, the slots are free again.
    r.guard.tick(&r.cfg, T0 + 61 * 60 * 1000);
    assert_eq!(r.guard.tenants(), 0);
    assert_eq!(
        send_as(&mut r, "late", batch("a", "m", 0, 4), T0 + 62 * 60 * 1000),
        4
    );
}

#[test]
fn owners_per_tenant_are_capped() {
    let mut c = tenants_cfg(1000);
    c.max_owners_per_tenant = 2;
    let mut r = Run::new(c);
    for s in 0..20 {
        send_as(&mut r, "a", batch(&format!("s{s}"), "m", 0, 1), T0);
        send_as(&mut r, "b", batch(&format!("s{s}"), "m", 0, 1), T0);
    }
    // Two owners each, plus each tenant's `other`.
    assert_eq!(r.guard.owners().len(), 6);
}

#[test]
fn long_owner_values_and_tenants_go_to_other() {
    let mut r = Run::new(tenants_cfg(1000));
    let long = "x".repeat(MAX_OWNER_KEY_BYTES + 1);
    send_as(&mut r, "a", batch(&long, "m", 0, 1), T0);
    send_as(&mut r, &long, batch("s", "m", 0, 1), T0);
    let mut keys: Vec<_> = r
        .guard
        .owners()
        .iter()
        .map(|o| (o.key.tenant.clone().unwrap(), o.key.owner.clone().unwrap()))
        .collect();
    keys.sort();
    assert_eq!(
        keys,
        [("a".into(), OTHER.into()), (OTHER.into(), OTHER.into())]
    );
}

/// Metric names that change every request: the owner keeps hashes of them, and the names it
/// tracks for top offenders are few and short, so its memory follows its series, not the
/// names' lengths.
#[test]
fn owner_memory_does_not_grow_with_metric_name_length() {
    let mut r = Run::new(cfg(100));
    let bytes = |r: &Run| r.guard.owners()[0].state.lock().unwrap().memory_bytes();
    for i in 0..100 {
        r.send(batch("a", &format!("m{i}"), 0, 1), T0);
    }
    let short = bytes(&r);
    let mut r = Run::new(cfg(100));
    for i in 0..100 {
        r.send(batch("a", &format!("{}{i}", "m".repeat(16_000)), 0, 1), T0);
    }
    let long = bytes(&r);
    assert!(
        long < short + 64 * owner::MAX_TRACKED_NAME_BYTES,
        "{short} vs {long}"
    );
}

/// The soak's property in seconds (benches/load `--soak-hostile` measures RSS for real):
/// junk owners, rotating tenants, exploding labels, 16 KiB label values and metric names new
/// in every request, alongside well-behaved services, over several windows. The guard's own
/// accounting stays under its caps, flat from one window to the next, and the well-behaved
/// services keep every series.
#[test]
fn hostile_mix_stays_bounded_and_well_behaved_services_lose_nothing() {
    let mut c = tenants_cfg(50);
    c.window = Duration::from_secs(60);
    c.window_slices = 6;
    c.max_owners = 300;
    c.max_tenants = 20;
    c.max_owners_per_tenant = 100;
    c.max_overflow_bytes = 1 << 20;
    c.rules.push(BudgetRule {
        tenant: None,
        owner: OwnerMatch::Regex(regex::Regex::new("^explode.*$").unwrap()),
        budget: Arc::new(Budget {
            action: Action::Relabel,
            overflow_labels: vec!["user_id".into()],
            ..budget(20)
        }),
    });
    let mut r = Run::new(c);
    let long = "v".repeat(16_000);
    let mut n = 0usize;
    let mut per_window = Vec::new();
    for step in 0..60 {
        // 10 s steps: six windows.
        let now = T0 + step * 10_000;
        for k in 0..4 {
            let kept = send_as(&mut r, "good", batch(&format!("good{k}"), "m", 0, 40), now);
            assert_eq!(
                kept, 40,
                "well-behaved service good{k} lost series at step {step}"
            );
        }
        let mut hostile = Vec::new();
        for _ in 0..30 {
            n += 1;
            let id = n.to_string();
            hostile.push(series(
                &[("__name__", "m"), ("service", &format!("junk{n}"))],
                1,
            ));
            hostile.push(series(
                &[
                    ("__name__", "req_total"),
                    ("service", "explode"),
                    ("user_id", &id),
                ],
                1,
            ));
            hostile.push(series(
                &[("__name__", &format!("m_{n}")), ("service", "names")],
                1,
            ));
            hostile.push(series(
                &[
                    ("__name__", "m"),
                    ("service", "long"),
                    ("v", &format!("{long}{n}")),
                ],
                1,
            ));
        }
        send_as(&mut r, &format!("tenant{}", n % 1000), hostile.clone(), now);
        send_as(&mut r, "good", hostile, now);
        r.guard.tick(&r.cfg, now);
        r.guard.overflow.flush_keyed(now, 60_000);
        let rep = r.guard.report(&r.cfg);
        let owners_bytes = rep.memory[0].bytes;
        let overflow = &rep.memory[1];
        assert!(rep.owners_total <= 300 + 20 + 2, "{}", rep.owners_total);
        assert!(rep.tenants_total.unwrap() <= 21);
        assert!(overflow.bytes <= overflow.limit_bytes.unwrap());
        if step % 6 == 5 {
            per_window.push(owners_bytes);
        }
    }
    // No growth: after the first window, no window holds more than 10% over it (about 15 MB
    // here, which is the owners' fixed filters and sketches: the caps, not the input).
    let first = per_window[0] as f64;
    assert!(
        per_window.iter().all(|&b| b as f64 <= first * 1.1),
        "owner bytes per window: {per_window:?}"
    );
}

/// Series of 30 of service `a` and 20 of `b`, interleaved as senders' shards mix targets.
fn mixed() -> Vec<v1::TimeSeries> {
    let (a, b) = (batch("a", "m", 0, 30), batch("b", "m", 0, 20));
    let mut out = Vec::new();
    let (mut a, mut b) = (a.into_iter(), b.into_iter());
    loop {
        match (a.next(), b.next()) {
            (None, None) => break out,
            (x, y) => out.extend(x.into_iter().chain(y)),
        }
    }
}

#[test]
fn steady_series_go_past_the_owners_and_are_counted_alike() {
    let mut r = Run::new(cfg(100));
    for k in 0..5 {
        assert_eq!(kept(&r.send(mixed(), T0 + k * 1000)), 50);
    }
    // The table was sized by the first request and filled by the second: the rest went
    // past the owners.
    assert!(r.guard.fresh.slots() > 0);
    let lane = r.scratch.lane.as_ref().unwrap().1.clone();
    assert!(lane.0.read().unwrap().len() >= 2, "room for both owners");
    let (a, b) = (r.row("a"), r.row("b"));
    assert_eq!((a.samples_total, a.created_total, a.active), (150, 30, 30));
    assert_eq!((b.samples_total, b.created_total, b.active), (100, 20, 20));
    // Over the budget, new series are still refused while the kept ones flow.
    let mut more = mixed();
    more.extend(batch("a", "m", 30, 100));
    let v = r.send(more, T0 + 6000);
    assert_eq!(kept(&v), 120);
    assert_eq!(r.row("a").active, 100);
    assert_eq!(r.row("a").dropped_samples_total["budget"], 30);
}

#[test]
fn what_an_earlier_stage_dropped_is_counted_against_its_owner_not_kept() {
    let mut r = Run::new(cfg(100));
    for k in 0..3 {
        r.send(batch("a", "m", 0, 10), T0 + k * 1000);
    }
    let buf = v1::WriteRequest {
        timeseries: batch("a", "m", 0, 10),
        metadata: vec![],
    }
    .encode_to_vec();
    let mut parsed = Parsed::new();
    parsed.parse(&buf, Version::V1, &Limits::default()).unwrap();
    r.decisions.reset(parsed.len());
    r.decisions.decide(3, Verdict::Drop(Reason::Relabel));
    let batch = Batch {
        req: &parsed,
        buf: &buf,
        tenant: None,
        now_ms: T0 + 3000,
    };
    let out = r
        .guard
        .admit(&r.cfg, batch, &mut r.decisions, &mut r.scratch)
        .unwrap();
    assert_eq!(out.kept_series, 9);
    assert_eq!(r.decisions.verdict(3), Verdict::Drop(Reason::Relabel));
    let row = r.row("a");
    assert_eq!(row.samples_total, 40);
    assert_eq!(row.dropped_samples_total["relabel"], 1);
}

#[test]
fn tenants_keep_their_own_fresh_series() {
    let mut r = Run::new(tenants_cfg(100));
    for k in 0..4 {
        assert_eq!(
            send_as(&mut r, "t1", batch("a", "m", 0, 10), T0 + k * 1000),
            10
        );
        assert_eq!(
            send_as(&mut r, "t2", batch("a", "m", 0, 5), T0 + k * 1000),
            5
        );
    }
    let rep = r.guard.report(&r.cfg);
    let row = |t: &str| {
        rep.services
            .iter()
            .find(|s| s.tenant.as_deref() == Some(t) && s.service == "a")
            .unwrap()
    };
    assert_eq!((row("t1").samples_total, row("t1").active), (40, 10));
    assert_eq!((row("t2").samples_total, row("t2").active), (20, 5));
}

#[test]
fn owners_forgotten_and_new_ones_in_their_indices_are_counted_apart() {
    let mut c = cfg(1000);
    c.max_reported_services = 1000;
    let mut r = Run::new(c);
    let minute = 60 * 1000;
    for s in 0..50 {
        for k in 0..3 {
            r.send(batch(&format!("old{s}"), "m", 0, 2), T0 + k * 1000);
        }
    }
    r.guard.tick(&r.cfg, T0 + 61 * minute);
    assert_eq!(r.guard.owners().len(), 0);
    for k in 0..3 {
        for s in 0..50 {
            r.send(
                batch(&format!("new{s}"), "m", 0, 2),
                T0 + 62 * minute + k * 1000,
            );
        }
    }
    for s in 0..50 {
        let row = r.row(&format!("new{s}"));
        assert_eq!((row.samples_total, row.active), (6, 2), "new{s}");
    }
}

#[test]
fn samples_the_fresh_table_admitted_stay_with_their_owner_when_it_goes() {
    let mut r = Run::new(cfg(100));
    for k in 0..4 {
        r.send(batch("old", "m", 0, 5), T0 + k * 1000);
    }
    // Forgotten with samples still pending by its index (as `tick` would, but without the
    // read of the counters that `tick` starts with).
    let old = r
        .guard
        .owners
        .read()
        .unwrap()
        .values()
        .next()
        .unwrap()
        .clone();
    r.guard.owners.write().unwrap().remove(&old.key);
    assert_eq!(old.counters.samples.load(Ordering::Relaxed), 20);
    for k in 0..4 {
        r.send(batch("new", "m", 0, 3), T0 + k * 1000);
    }
    assert_eq!(
        r.row("new").samples_total,
        12,
        "none of the old owner's samples"
    );
}

#[test]
fn samples_counted_on_several_threads_all_reach_their_owners() {
    let mut r = Run::new(cfg(100));
    // A second thread's scratch, with a lane of its own.
    let mut other = Scratch::default();
    let buf = v1::WriteRequest {
        timeseries: mixed(),
        metadata: vec![],
    }
    .encode_to_vec();
    let mut parsed = Parsed::new();
    parsed.parse(&buf, Version::V1, &Limits::default()).unwrap();
    let mut decisions = Decisions::default();
    for k in 0..4 {
        r.send(mixed(), T0 + k * 1000);
        decisions.reset(parsed.len());
        let batch = Batch {
            req: &parsed,
            buf: &buf,
            tenant: None,
            now_ms: T0 + k * 1000,
        };
        r.guard
            .admit(&r.cfg, batch, &mut decisions, &mut other)
            .unwrap();
    }
    assert_eq!(r.guard.owners.read().unwrap().lanes.len(), 2);
    // Each lane's room for the owners is counted with them.
    assert!(r.guard.index_bytes() >= 2 * 1024 * 8);
    let (a, b) = (r.row("a"), r.row("b"));
    assert_eq!((a.samples_total, b.samples_total), (240, 160));
    // Folded once: read again, nothing counts twice.
    assert_eq!(r.row("a").samples_total, 240);
}

#[test]
fn series_refused_for_the_budget_stay_refused_and_counted_through_the_fresh_table() {
    let mut c = cfg(10);
    c.max_series = Some(15);
    let mut r = Run::new(c);
    for k in 0..4 {
        let v = r.send(batch("a", "m", 0, 20), T0 + k * 1000);
        assert_eq!(kept(&v), 10);
        assert!(v[10..].iter().all(|v| *v == Verdict::Drop(Reason::Budget)));
    }
    let row = r.row("a");
    assert_eq!((row.samples_total, row.active), (80, 10));
    assert_eq!(row.dropped_samples_total["budget"], 40);
    // The global cap reached since: checked first, as the owners' way does.
    assert_eq!(kept(&r.send(batch("b", "m", 0, 5), T0 + 5000)), 5);
    let v = r.send(batch("a", "m", 0, 20), T0 + 6000);
    assert_eq!(kept(&v), 10);
    assert!(v[10..]
        .iter()
        .all(|v| *v == Verdict::Drop(Reason::GlobalCap)));
    assert_eq!(r.row("a").dropped_samples_total["global_cap"], 10);
    // A reload that raises the budget admits them at once.
    r.cfg = cfg(30);
    r.cfg.generation = 1;
    assert_eq!(kept(&r.send(batch("a", "m", 0, 20), T0 + 7000)), 20);
}

#[test]
fn refused_series_may_come_in_once_the_slice_turns_and_series_expire() {
    let mut r = Run::new(cfg(10));
    for k in 0..3 {
        assert_eq!(kept(&r.send(batch("a", "m", 0, 10), T0 + k * 1000)), 10);
        assert_eq!(kept(&r.send(batch("a", "m", 100, 5), T0 + k * 1000)), 0);
    }
    // A window later the first ten have expired: the refused ones fit.
    let later = T0 + 61 * 60 * 1000;
    assert_eq!(kept(&r.send(batch("a", "m", 100, 5), later)), 5);
    assert_eq!(kept(&r.send(batch("a", "m", 100, 5), later + 1000)), 5);
}

#[test]
fn shared_budgets_hold_no_fresh_table() {
    let mut c = cfg(100);
    c.shared = Some(Default::default());
    let mut r = Run::new(c);
    for k in 0..3 {
        assert_eq!(kept(&r.send(batch("a", "m", 0, 10), T0 + k * 1000)), 10);
    }
    r.guard.tick(&r.cfg, T0 + 5000);
    assert_eq!(r.guard.fresh.slots(), 0);
    assert!(r.scratch.lane.is_none());
}

#[test]
fn a_released_scratch_keeps_its_lane() {
    let mut r = Run::new(cfg(100));
    r.send(mixed(), T0);
    assert!(r.scratch.ids.capacity() > 0);
    r.scratch = std::mem::take(&mut r.scratch).released();
    assert_eq!(r.scratch.ids.capacity(), 0, "buffers let go");
    r.send(mixed(), T0 + 1000);
    // The same lane again: a new one per release would add its room per owner each time.
    assert_eq!(r.guard.owners.read().unwrap().lanes.len(), 1);
    assert_eq!(r.row("a").samples_total, 60);
}

/// 2.0 series read lazily are known by their key (`Identity::refs_key`), and checked and
/// hashed to their id only when the fresh table does not know them: the same labels from a
/// 1.0 sender are the same series, found by id the first time and by key after; unsorted
/// labels are the same series too; refs that do not resolve fail the request uncounted.
#[test]
fn lazy_v2_series_are_known_by_their_key() {
    let mut r = Run::new(cfg(10));
    let up = series(&[("__name__", "up"), ("service", "a")], 1);
    let unsorted = series(&[("service", "a"), ("__name__", "up")], 1);
    let v2 = |ts: &[&v1::TimeSeries]| {
        testgen::v1_to_v2(&v1::WriteRequest {
            timeseries: ts.iter().map(|&t| t.clone()).collect(),
            metadata: vec![],
        })
    };
    // Answered by the key alone: the id was never made.
    let by_key = |r: &Run, n: usize| -> Vec<bool> {
        (0..n)
            .map(|i| r.scratch.hits[i].is_some() && r.scratch.ids[i] == r.scratch.keys[i])
            .collect()
    };

    assert_eq!(kept(&r.send(vec![up.clone()], T0)), 1);
    let id = r.scratch.ids[0];
    // Known from the 1.0 sender by id: checked, found, and now held by key too.
    assert_eq!(r.send_v2(v2(&[&up])), Ok(vec![Verdict::Keep]));
    assert_eq!(by_key(&r, 1), [false]);
    assert_eq!(r.scratch.ids[0], id, "the 1.0 sender's series");
    assert_ne!(r.scratch.keys[0], id);
    assert_eq!(r.send_v2(v2(&[&up])), Ok(vec![Verdict::Keep]));
    assert_eq!(by_key(&r, 1), [true]);
    // Unsorted: the same series (by id), then known by its own key.
    for want in [false, true] {
        assert_eq!(r.send_v2(v2(&[&unsorted])), Ok(vec![Verdict::Keep]));
        assert_eq!(by_key(&r, 1), [want]);
    }
    assert_eq!(r.guard.global_active(), 1);
    // A new series goes the owners' way, once.
    let other = series(&[("__name__", "other"), ("service", "a")], 1);
    for want in [false, true] {
        assert!(r.send_v2(v2(&[&up, &other])).is_ok());
        assert_eq!(by_key(&r, 2), [true, want]);
    }
    assert_eq!(r.guard.global_active(), 2);
    let samples = r.row("a").samples_total;

    // A ref past the table: the request fails, and nothing of it is counted.
    let mut bad = v2(&[&up, &up]);
    bad.timeseries[1].labels_refs[1] = 99;
    let err = r.send_v2(bad).unwrap_err();
    assert!(
        matches!(
            err,
            crate::wire::WireError::SymbolOutOfRange {
                series: 1,
                reference: 99,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(r.row("a").samples_total, samples, "nothing counted");
}

/// A 1.0 series read lazily is known to the fresh table by its run's key (`runkey`), and to
/// the owners by its id, the one a full read gives it.
#[test]
fn lazy_v1_runs_are_known_by_their_key() {
    let mut r = Run::new(cfg(10));
    let up = series(&[("__name__", "up"), ("service", "a")], 1);
    // Read in full: held by its id (from its third request on: the table is made once a
    // series was admitted, and the first is put in it on its second request).
    for known in [false, false, true] {
        assert_eq!(kept(&r.send(vec![up.clone()], T0)), 1);
        assert_eq!(r.scratch.hits[0].is_some(), known);
    }
    let id = r.scratch.ids[0];
    // Read lazily: not known by its key, asked again by its id and found, then held by
    // its key too.
    assert_eq!(kept(&r.send_lazy(vec![up.clone()])), 1);
    assert_eq!(r.scratch.ids[0], id);
    assert!(r.scratch.hits[0].is_some(), "found by its id");
    if !r.guard.run_keys.are_ids() {
        assert_ne!(r.scratch.keys[0], id);
    }
    // Then answered by its key alone: its id never made.
    assert_eq!(kept(&r.send_lazy(vec![up.clone()])), 1);
    assert!(r.scratch.hits[0].is_some());
    assert_eq!(r.scratch.ids[0], r.scratch.keys[0]);

    // A new series goes the owners' way, once, by its id.
    let other = series(&[("__name__", "other"), ("service", "a")], 1);
    for known in [false, true] {
        assert_eq!(kept(&r.send_lazy(vec![up.clone(), other.clone()])), 2);
        assert_eq!(r.scratch.hits[1].is_some(), known);
    }
    assert_eq!(r.guard.global_active(), 2);
    // Read in full, it is the same series to the owners (held by key, the table misses).
    assert_eq!(kept(&r.send(vec![other], T0)), 1);
    assert_eq!(r.guard.global_active(), 2);
}
