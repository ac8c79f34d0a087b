use std::collections::BTreeMap;

use http::header::ACCEPT;
use http::{HeaderMap, HeaderValue};

use super::history::{
    GroupCounts, History, Observation, OwnerRates, UpstreamCounts, EXPLOSION_MIN_NEW,
};
use super::html::{esc, render, utc};
use super::view::{safe_url, ConfigView, GuardView, Row, UpstreamView, View};
use super::wants_html;
use crate::guard::report::{OwnerCounts, OwnerReport, Report, Top};
use crate::series::{Reason, REASONS};

const T0: i64 = 1_700_000_000_000;

fn accept(v: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(ACCEPT, HeaderValue::from_str(v).unwrap());
    h
}

#[test]
fn browsers_get_html_and_curl_gets_the_plain_list() {
    let chrome = "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,\
                  image/webp,*/*;q=0.8";
    assert!(wants_html(&accept(chrome)));
    assert!(wants_html(&accept("application/xhtml+xml")));
    assert!(!wants_html(&accept("*/*")), "curl");
    assert!(!wants_html(&HeaderMap::new()), "no Accept");
    assert!(!wants_html(&accept("text/plain")));
    assert!(!wants_html(&accept("text/plain, text/html;q=0.5")));
    assert!(!wants_html(&accept("text/html;q=0")));
    assert!(wants_html(&accept("text/plain;q=0.5, TEXT/HTML")));
}

fn owner(service: &str, budget: u64, created: u64, demand: f64, samples: u64) -> OwnerCounts {
    OwnerCounts {
        service: service.into(),
        tenant: None,
        summary: false,
        budget,
        active: created.min(budget),
        demand,
        created_total: created,
        samples_total: samples,
        dropped_samples_total: [0; REASONS],
    }
}

fn obs(at_ms: i64, owners: Vec<OwnerCounts>) -> Observation {
    Observation {
        at_ms,
        owners,
        upstreams: Vec::new(),
        groups: Vec::new(),
    }
}

fn rates_of(r: &super::history::Rates, service: &str) -> OwnerRates {
    r.owners
        .get(&(service.to_string(), None, false))
        .cloned()
        .unwrap_or_else(|| panic!("no rates for {service}: {:?}", r.owners.keys()))
}

#[test]
fn rates_need_two_observations_and_explosions_count_refused_series() {
    let h = History::default();
    // First look: no rates yet, whatever the counters say.
    let r = h.observe(obs(T0, vec![owner("steady", 100, 50, 50.0, 1000)]));
    assert!(r.owners.is_empty());
    let mut boom = owner("boom", 100, 80, 80.0, 80);
    let r = h.observe(obs(
        T0 + 500,
        vec![owner("steady", 100, 50, 50.0, 1500), boom.clone()],
    ));
    assert!(!r.owners.contains_key(&("boom".into(), None, false)));

    // Ten seconds on: steady sent samples and no new series; boom reached its budget (20 more
    // admitted) while 400 more distinct series arrived and were refused.
    boom.created_total = 100;
    boom.active = 100;
    boom.demand = 500.0;
    boom.samples_total = 580;
    boom.dropped_samples_total[Reason::Budget.index()] = 400;
    let r = h.observe(obs(
        T0 + 10_500,
        vec![owner("steady", 100, 50, 50.0, 2500), boom],
    ));
    let steady = rates_of(&r, "steady");
    assert!(!steady.exploding);
    assert_eq!(steady.new_series_per_s, 0.0);
    // Against the oldest snapshot within the minute: 1500 samples over 10.5 s.
    assert!((steady.samples_per_s - 1500.0 / 10.5).abs() < 1e-9);
    let b = rates_of(&r, "boom");
    assert!(b.exploding, "{b:?}");
    assert_eq!(b.window_s, 10.0);
    assert_eq!(
        b.new_series_per_s, 42.0,
        "420 distinct new series over 10 s"
    );
    assert_eq!(b.dropped_per_s[Reason::Budget.index()], 40.0);
    assert_eq!(b.baseline_per_s, None, "no hour of history yet");
}

#[test]
fn an_explosion_is_measured_against_the_services_last_hour() {
    let h = History::default();
    // A service that churns 20 series a minute for an hour (a deploy pattern)...
    let mut created = 1000;
    for minute in 0..=60 {
        h.observe(obs(
            T0 + minute * 60_000,
            vec![owner("churn", 100_000, created, created as f64, 0)],
        ));
        created += 20;
    }
    // ...is not exploding at that pace...
    let at = T0 + 60 * 60_000 + 30_000;
    let r = h.observe(obs(
        at,
        vec![owner(
            "churn",
            100_000,
            created - 10,
            (created - 10) as f64,
            0,
        )],
    ));
    let c = rates_of(&r, "churn");
    assert!(
        c.baseline_per_s
            .is_some_and(|b| (b - 20.0 / 60.0).abs() < 0.01),
        "{c:?}"
    );
    assert!(!c.exploding, "{c:?}");
    // ...but is at 50 times it.
    let r = h.observe(obs(
        at + 30_000,
        vec![owner(
            "churn",
            100_000,
            created + 1000,
            (created + 1000) as f64,
            0,
        )],
    ));
    assert!(rates_of(&r, "churn").exploding);
}

#[test]
fn a_few_new_series_are_not_an_explosion() {
    let h = History::default();
    h.observe(obs(T0, vec![owner("small", 1_000_000, 10, 10.0, 0)]));
    let n = 10 + EXPLOSION_MIN_NEW - 1;
    let r = h.observe(obs(
        T0 + 5000,
        vec![owner("small", 1_000_000, n, n as f64, 0)],
    ));
    assert!(!rates_of(&r, "small").exploding);
    // Nor is a pace that would take a year to fill the budget.
    let r = h.observe(obs(
        T0 + 10_000,
        vec![owner("small", 1_000_000, n + 50, (n + 50) as f64, 0)],
    ));
    assert!(!rates_of(&r, "small").exploding);
}

#[test]
fn the_history_stays_bounded() {
    let h = History::default();
    // A page reloaded in a tight loop for two hours, and owners coming and going.
    for i in 0..20_000i64 {
        let owners = (0..3)
            .map(|k| owner(&format!("s{}", (i / 100 + k) % 50), 100, 0, 0.0, i as u64))
            .collect();
        h.observe(obs(T0 + i * 400, owners));
    }
    let debug = h.sizes();
    assert!(debug.0 <= 64 && debug.1 <= 61, "{debug:?}");
}

#[test]
fn upstream_marks_follow_the_counters() {
    let h = History::default();
    let up = |ok, errors: Vec<(&str, u64)>, count, sum| UpstreamCounts {
        name: "vm".into(),
        ok,
        requests: ok + errors.iter().map(|(_, n)| n).sum::<u64>(),
        errors: errors
            .into_iter()
            .map(|(c, n)| (c.to_string(), n))
            .collect(),
        latency_sum_s: sum,
        latency_count: count,
    };
    let mut o = obs(T0, vec![]);
    o.upstreams = vec![up(10, vec![], 10, 0.1)];
    o.groups = vec![GroupCounts {
        key: "f;g".into(),
        evaluations: 1,
        failures: 0,
    }];
    h.observe(o.clone());
    o.at_ms = T0 + 5000;
    o.upstreams = vec![up(20, vec![("timeout", 0)], 20, 0.3)];
    o.groups[0].failures = 2;
    let r = h.observe(o.clone());
    let s = &r.upstreams["vm"];
    assert_eq!(s.last_success_ms, Some(T0 + 5000));
    assert_eq!(s.last_error, None);
    assert!((s.latency_s.unwrap() - 0.02).abs() < 1e-9, "{s:?}");
    assert_eq!(s.requests_per_s, Some(2.0));
    assert_eq!(r.group_failures["f;g"], 2);
    o.at_ms = T0 + 10_000;
    o.upstreams = vec![up(20, vec![("timeout", 3), ("5xx", 1)], 24, 20.3)];
    let r = h.observe(o);
    let s = &r.upstreams["vm"];
    assert_eq!(s.last_success_ms, Some(T0 + 5000));
    assert_eq!(s.last_error, Some(("timeout".to_string(), T0 + 10_000)));
}

fn report_row(service: &str, tenant: Option<&str>, active: u64, budget: u64) -> OwnerReport {
    OwnerReport {
        service: service.into(),
        tenant: tenant.map(Into::into),
        budget,
        action: "drop",
        active,
        demand: Some(active as f64 * 1.5),
        created_total: active,
        samples_total: active * 10,
        dropped_samples_total: BTreeMap::new(),
        warned_samples_total: BTreeMap::new(),
        overflowed_samples_total: BTreeMap::new(),
        top_metrics: vec![Top {
            name: "http_requests_total".into(),
            estimate: active as f64,
        }],
        top_labels: vec![Top {
            name: "<b>user_id</b>".into(),
            estimate: 42.0,
        }],
    }
}

fn view(rows: Vec<Row>) -> View {
    let report = Report {
        active_total: rows.iter().map(|r| r.report.active).sum(),
        max_series: Some(10_000),
        owners_total: rows.len(),
        max_owners: 10_000,
        tenants_total: None,
        max_tenants: None,
        memory: Vec::new(),
        window_seconds: 3600,
        services: rows.iter().map(|r| r.report.clone()).collect(),
    };
    View {
        version: "0.1.0",
        now_ms: T0,
        guard: Some(GuardView {
            report,
            max_reported_services: 50,
            max_owners: 10_000,
            owner_labels: vec!["service".into(), "job".into()],
            rows,
        }),
        upstreams: vec![UpstreamView {
            name: "vm".into(),
            url: "http://127.0.0.1:8428/api/v1/write".into(),
            version: "V1".into(),
            timeout_s: 30.0,
            ..UpstreamView::default()
        }],
        groups: Vec::new(),
        config: ConfigView {
            file: Some("/etc/cardguard/<cardguard>.yml".into()),
            last_reload_ok: true,
            last_reload_success_s: T0 / 1000,
        },
    }
}

#[test]
fn hostile_names_are_text_and_bars_are_readable() {
    let hostile = "<script>alert('x')</script>\"><img src=x onerror=alert(1)>";
    let rows = vec![
        Row {
            report: report_row(hostile, Some("t&\"a"), 50, 100),
            rates: None,
        },
        Row {
            report: report_row("checkout", None, 120, 100),
            rates: None,
        },
    ];
    let html = render(&view(rows));
    assert!(!html.contains("<script>"), "{html}");
    assert!(!html.contains("<img"), "{html}");
    assert!(!html.contains("<b>user_id"), "{html}");
    assert!(html.contains(&esc(hostile)));
    assert!(html.contains("data-tenant=\"t&amp;&quot;a\""));
    assert!(html.contains("&lt;cardguard&gt;.yml"));
    assert!(html.contains("style=\"width:50.0%\""));
    // Over the budget: a full bar, the ratio in the attribute and the text.
    assert!(html.contains("data-fill=\"1.2000\""));
    assert!(html.contains("style=\"width:100.0%\""));
    assert!(html.contains("120 / 100 (120 %)"));
    for needle in [
        "href=\"/metrics\"",
        "href=\"/api/v1/cardinality\"",
        "href=\"/runbook\"",
        "<meta http-equiv=\"refresh\"",
        "<dt>other</dt>",
        "<dt>unowned</dt>",
        "@media (max-width:760px)",
    ] {
        assert!(html.contains(needle), "{needle} missing");
    }
    assert!(!html.contains("src=\"http"), "no external assets");
    assert!(!html.contains("href=\"http"), "no external links");
}

#[test]
fn rows_are_ordered_by_budget_use_with_the_summary_last() {
    // `gather` orders the rows; the renderer keeps the order it is given.
    let mut rows = vec![
        report_row("calm", None, 10, 100),
        report_row("other", None, 500, 1000),
        report_row("full", None, 100, 100),
        report_row("half", Some("team-a"), 50, 100),
    ];
    rows[1].action = "mixed";
    let mut rows: Vec<Row> = rows
        .into_iter()
        .map(|report| Row {
            report,
            rates: None,
        })
        .collect();
    super::view::order(&mut rows);
    let names: Vec<_> = rows.iter().map(|r| r.report.service.as_str()).collect();
    assert_eq!(names, ["full", "half", "calm", "other"]);
}

#[test]
fn urls_lose_their_credentials() {
    let u: http::Uri = "https://user:secret@vm.example:8443/api/v1/write?token=abc"
        .parse()
        .unwrap();
    assert_eq!(safe_url(&u), "https://vm.example:8443/api/v1/write");
}

#[test]
fn utc_formats_civil_time() {
    assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
    assert_eq!(utc(1_700_000_000), "2023-11-14 22:13:20 UTC");
    assert_eq!(utc(951_825_600), "2000-02-29 12:00:00 UTC");
}
