//! The Grafana dashboard (`dashboards/cardguard.json`) cannot rot: every query in it (each
//! panel's `targets[].expr` and each query variable) parses as PromQL once Grafana's variables
//! are substituted, and every metric name it reads is one that cardguard really exports, read
//! from the `/metrics` of a running cardguard (in-process, `App::start_on`, in front of two
//! `cardguard::sink::Sink` upstreams) with the schema, the guard (drop, warn and relabel
//! budgets, shared through a real Redis so that the `guard.shared` families exist), recording
//! rules and routes on, after traffic that makes every labelled family appear (drops,
//! overflow, an upstream 5xx, a refused recorded sample, a failing rule, series Redis admits
//! and refuses). Needs `redis-server` from `scripts/fetch-peers.sh`.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use common::*;
use promql_parser::parser::{self, Expr};
use serde_json::Value;

use ::cardguard::app::App;
use ::cardguard::config::Config;
use ::cardguard::ingest::ConfigSource;

fn dashboard_path() -> PathBuf {
    repo_root().join("dashboards/cardguard.json")
}

fn dashboard() -> Value {
    let path = dashboard_path();
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every panel, the panels inside rows (collapsed rows keep theirs in `panels`) included.
fn panels(dash: &Value) -> Vec<&Value> {
    fn walk<'a>(list: &'a Value, out: &mut Vec<&'a Value>) {
        for p in list.as_array().into_iter().flatten() {
            out.push(p);
            if let Some(children) = p.get("panels") {
                walk(children, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(&dash["panels"], &mut out);
    out
}

fn variables(dash: &Value) -> &Vec<Value> {
    dash["templating"]["list"]
        .as_array()
        .expect("templating.list")
}

/// Every PromQL query of the dashboard: (where, query as Grafana stores it).
fn queries(dash: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for p in panels(dash) {
        let title = p["title"].as_str().unwrap_or("?");
        for t in p["targets"].as_array().into_iter().flatten() {
            let expr = t["expr"]
                .as_str()
                .unwrap_or_else(|| panic!("panel {title:?}: a target without expr: {t}"));
            let r = t["refId"].as_str().unwrap_or("?");
            out.push((format!("panel {title:?} target {r}"), expr.to_string()));
        }
    }
    for v in variables(dash) {
        if v["type"] != "query" {
            continue;
        }
        let name = v["name"].as_str().unwrap_or("?");
        // Grafana stores the query as a string (older) or as `{query: ...}` (10+).
        let q = v["query"]
            .as_str()
            .or_else(|| v["query"]["query"].as_str())
            .unwrap_or_else(|| panic!("variable {name}: no query"));
        let expr = variable_query_expr(q).unwrap_or_else(|e| panic!("variable {name}: {e}"));
        out.push((format!("variable {name}"), expr));
    }
    out
}

/// The PromQL inside a Grafana Prometheus variable query: `label_values(selector, label)` or
/// `query_result(expr)`. The other forms read no metric a test could check.
fn variable_query_expr(q: &str) -> Result<String, String> {
    let q = q.trim();
    let inner = |prefix: &str| {
        q.strip_prefix(prefix)
            .and_then(|r| r.strip_suffix(')'))
            .map(str::trim)
    };
    if let Some(args) = inner("label_values(") {
        let (selector, label) = args
            .rsplit_once(',')
            .ok_or_else(|| format!("{q:?}: label_values without a metric selector"))?;
        let label = label.trim();
        if label.is_empty() || !label.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!("{q:?}: {label:?} is not a label name"));
        }
        return Ok(selector.trim().to_string());
    }
    if let Some(expr) = inner("query_result(") {
        return Ok(expr.to_string());
    }
    Err(format!(
        "{q:?}: expected label_values(selector, label) or query_result(expr)"
    ))
}

/// The query with Grafana's variables replaced by values of the right kind: durations for the
/// interval variables, a plain value for the dashboard's own (they only appear in matchers).
fn substitute(expr: &str, own: &BTreeSet<String>) -> Result<String, String> {
    let re =
        regex::Regex::new(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::[a-z]+)?\}|\$([A-Za-z_][A-Za-z0-9_]*)")
            .unwrap();
    let mut unknown = Vec::new();
    let out = re.replace_all(expr, |c: &regex::Captures| {
        let name = c.get(1).or_else(|| c.get(2)).unwrap().as_str();
        match name {
            "__rate_interval" | "__interval" | "__range" => "5m".to_string(),
            "__interval_ms" | "__range_ms" => "300000".to_string(),
            "__range_s" => "300".to_string(),
            n if own.contains(n) => "x".to_string(),
            n => {
                unknown.push(n.to_string());
                String::new()
            }
        }
    });
    if unknown.is_empty() {
        Ok(out.into_owned())
    } else {
        Err(format!("unknown variables {unknown:?}"))
    }
}

/// The metric names an expression selects (by name or by an `__name__="..."` matcher).
fn metric_names(e: &Expr, out: &mut BTreeSet<String>) {
    let selector = |vs: &parser::VectorSelector, out: &mut BTreeSet<String>| {
        match &vs.name {
            Some(n) => {
                out.insert(n.clone());
            }
            None => {
                for m in &vs.matchers.matchers {
                    if m.name == "__name__" {
                        out.insert(m.value.clone());
                    }
                }
            }
        };
    };
    match e {
        Expr::Aggregate(a) => {
            metric_names(&a.expr, out);
            if let Some(p) = &a.param {
                metric_names(p, out);
            }
        }
        Expr::Unary(u) => metric_names(&u.expr, out),
        Expr::Binary(b) => {
            metric_names(&b.lhs, out);
            metric_names(&b.rhs, out);
        }
        Expr::Paren(p) => metric_names(&p.expr, out),
        Expr::Subquery(s) => metric_names(&s.expr, out),
        Expr::VectorSelector(vs) => selector(vs, out),
        Expr::MatrixSelector(ms) => selector(&ms.vs, out),
        Expr::Call(c) => {
            for a in &c.args.args {
                metric_names(a, out);
            }
        }
        Expr::NumberLiteral(_) | Expr::StringLiteral(_) | Expr::Extension(_) => {}
    }
}

/// Every query parsed: (where, the metric names it reads). Panics listing every query that
/// does not parse.
fn parsed_queries(dash: &Value) -> Vec<(String, BTreeSet<String>)> {
    let own: BTreeSet<String> = variables(dash)
        .iter()
        .filter_map(|v| v["name"].as_str().map(String::from))
        .collect();
    let mut bad = Vec::new();
    let mut out = Vec::new();
    for (at, q) in queries(dash) {
        let parsed =
            substitute(&q, &own).and_then(|s| parser::parse(&s).map_err(|e| e.to_string()));
        match parsed {
            Ok(ast) => {
                let mut names = BTreeSet::new();
                metric_names(&ast, &mut names);
                out.push((at, names));
            }
            Err(e) => bad.push(format!("{at}: {q}\n    {e}")),
        }
    }
    assert!(
        bad.is_empty(),
        "queries that do not parse:\n{}",
        bad.join("\n")
    );
    out
}

#[test]
fn the_dashboard_is_a_grafana_10_dashboard_with_its_variables() {
    let dash = dashboard();
    let schema = dash["schemaVersion"].as_u64().expect("schemaVersion");
    assert!(
        schema >= 38,
        "schemaVersion {schema}: Grafana 10 writes 38 or later"
    );
    assert_eq!(dash["uid"], "cardguard");

    let vars: BTreeMap<&str, &Value> = variables(&dash)
        .iter()
        .map(|v| (v["name"].as_str().unwrap(), v))
        .collect();
    let ds = vars.get("datasource").expect("a datasource variable");
    assert_eq!(ds["type"], "datasource");
    assert_eq!(ds["query"], "prometheus");
    for name in ["service", "upstream"] {
        let v = vars
            .get(name)
            .unwrap_or_else(|| panic!("a {name} variable"));
        assert_eq!(v["type"], "query", "{name}");
        assert_eq!(v["datasource"]["uid"], "${datasource}", "{name}");
    }

    let mut ids = BTreeSet::new();
    for p in panels(&dash) {
        let title = p["title"].as_str().unwrap_or("?");
        let id = p["id"]
            .as_u64()
            .unwrap_or_else(|| panic!("{title:?}: no id"));
        assert!(ids.insert(id), "{title:?}: id {id} used twice");
        for k in ["h", "w", "x", "y"] {
            assert!(p["gridPos"][k].is_u64(), "{title:?}: gridPos.{k}");
        }
        // Every query goes to the data source the user picked, never to a fixed uid.
        if p.get("targets").is_some() {
            assert_eq!(p["datasource"]["uid"], "${datasource}", "{title:?}");
            for t in p["targets"].as_array().unwrap() {
                assert_eq!(t["datasource"]["uid"], "${datasource}", "{title:?}");
            }
        }
    }
}

#[test]
fn every_query_of_the_dashboard_parses_as_promql() {
    let parsed = parsed_queries(&dashboard());
    assert!(parsed.len() >= 30, "only {} queries", parsed.len());
    for (at, names) in &parsed {
        assert!(!names.is_empty(), "{at} reads no metric");
    }
}

#[test]
fn every_metric_the_dashboard_reads_is_one_cardguard_exports() {
    let wanted: BTreeMap<String, Vec<String>> =
        parsed_queries(&dashboard())
            .into_iter()
            .fold(BTreeMap::new(), |mut m, (at, names)| {
                for n in names {
                    m.entry(n).or_insert_with(Vec::new).push(at.clone());
                }
                m
            });
    let cg = Exporting::start();
    cg.drive_traffic();

    // Labelled families appear once something set them; the rule tasks and the upstream
    // answers take a moment.
    let mut exported = BTreeSet::new();
    let mut missing = Vec::new();
    for _ in 0..100 {
        exported = exported_names(&cg.metrics());
        missing = wanted
            .iter()
            .filter(|(n, _)| !exported.contains(n.as_str()))
            .collect::<Vec<_>>();
        if missing.is_empty() {
            break;
        }
        cg.drive_traffic();
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        missing.is_empty(),
        "the dashboard reads metrics cardguard does not export:\n{}\n\ncardguard exports:\n{}",
        missing
            .iter()
            .map(|(n, at)| format!("  {n}  ({})", at.join("; ")))
            .collect::<Vec<_>>()
            .join("\n"),
        exported.iter().cloned().collect::<Vec<_>>().join("\n")
    );
}

/// The series names a `/metrics` text carries; a histogram family also answers to its
/// `_bucket`, `_sum` and `_count` series (and its family name, which is not a series).
fn exported_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut it = rest.split_whitespace();
            if let (Some(name), Some("histogram")) = (it.next(), it.next()) {
                for suffix in ["_bucket", "_sum", "_count"] {
                    names.insert(format!("{name}{suffix}"));
                }
            }
            continue;
        }
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        if let Some(name) = line.split(['{', ' ']).next() {
            names.insert(name.to_string());
        }
    }
    names
}

const RULES: &str = r#"
groups:
  - name: service-level
    interval: 1s
    query_offset: 0s
    rules:
      - record: service:http_requests:rate1m
        expr: sum by (service) (rate(http_requests_total[1m]))
  # Fails every evaluation (two series over a limit of one): the failure counter appears.
  - name: over-limit
    interval: 1s
    query_offset: 0s
    limit: 1
    rules:
      - record: path:http_requests:sum
        expr: sum by (path) (http_requests_total)
"#;

/// cardguard with everything the dashboard looks at switched on, on its own runtime.
struct Exporting {
    base: String,
    main: Sink,
    _long: Sink,
    _app: App,
    _rt: tokio::runtime::Runtime,
    _redis: Redis,
    _dir: TestDir,
    round: std::cell::Cell<i64>,
}

impl Exporting {
    fn start() -> Exporting {
        let main = fake_upstream();
        let long = fake_upstream();
        let dir = TestDir::new("dashboard");
        let redis = Redis::start(&dir);
        std::fs::write(dir.join("rules.yml"), RULES).unwrap();
        let yaml = format!(
            r#"
relabel_configs:
  - source_labels: [__name__]
    regex: "debug_.*"
    action: drop
schema:
  forbidden_label_names: "session_id"
guard:
  owner_labels: [service]
  top_k: 3
  max_series: 100000
  default_budget:
    max_series: 5
    action: drop
  budgets:
    - service: warned
      action: warn
    - service: collapsed
      action: relabel
      overflow_labels: [k]
    - service: web
      max_series: 1000
  overflow_flush_interval: 1s
  shared:
    url: {redis}
    key_prefix: "dashboard:"
rule_files: [rules.yml]
upstreams:
  - name: main
    url: {main}
  - name: long
    url: {long}
routes:
  - name: slo
    match: '{{slo="true"}}'
    upstreams: [long]
    min_interval: 1m
    relabel_configs:
      - regex: "pod"
        action: labeldrop
      - source_labels: [__name__]
        regex: "slo_skip"
        action: drop
    continue: true
  - upstreams: [main]
"#,
            main = main.write_url(),
            long = long.write_url(),
            redis = redis.url(),
        );
        let path = dir.join("cardguard.yml");
        std::fs::write(&path, &yaml).unwrap();
        let config = Config::load(&path).unwrap_or_else(|e| panic!("config: {e}\n{yaml}"));
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let source = ConfigSource {
            file: Some(path),
            ..ConfigSource::default()
        };
        let app = rt.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            App::start_on(config, source, listener).unwrap()
        });
        let cg = Exporting {
            base: format!("http://{}", app.local_addr()),
            main,
            _long: long,
            _app: app,
            _rt: rt,
            _redis: redis,
            _dir: dir,
            round: std::cell::Cell::new(0),
        };
        // Joined before the first traffic, so that Redis decides its new series (admit round
        // trips, series admitted and refused by Redis).
        poll_until(
            "cardguard to join Redis",
            Duration::from_secs(20),
            Duration::from_millis(100),
            || match metric_value(&cg.metrics(), "cardguard_shared_admission_up", &[]) {
                Some(1.0) => Ok(()),
                other => Err(format!("cardguard_shared_admission_up = {other:?}")),
            },
        );
        cg
    }

    fn write(&self, series: &[rw::Series]) -> Resp {
        let headers = rw::STANDARD_HEADERS.to_vec();
        http_post(
            &format!("{}/api/v1/write", self.base),
            &headers,
            &rw::body(series),
        )
        .expect("write")
    }

    fn metrics(&self) -> String {
        http_get(&format!("{}/metrics", self.base)).unwrap().text()
    }

    /// One round of traffic touching every stage; each round's samples are a second later.
    fn drive_traffic(&self) {
        let round = self.round.get();
        self.round.set(round + 1);
        let ts = now_ms();
        let v = round as f64;
        let mut s = Vec::new();
        for path in ["/a", "/b"] {
            s.push(rw::Series::new(
                "http_requests_total",
                &[("service", "web"), ("path", path)],
                v,
                ts,
            ));
        }
        // Over the budget of 5: dropped, counted (warn) or collapsed (relabel).
        for service in ["exploding", "warned", "collapsed"] {
            for k in 0..8 {
                let k = format!("{k}");
                s.push(rw::Series::new(
                    "requests_total",
                    &[("service", service), ("k", &k)],
                    v,
                    ts,
                ));
            }
        }
        s.push(rw::Series::new("debug_x", &[("service", "web")], v, ts));
        s.push(rw::Series::new(
            "logins_total",
            &[("service", "web"), ("session_id", "s1")],
            v,
            ts,
        ));
        // Routed to `long` too, downsampled there (one sample a minute), relabeled by the route.
        for (name, pod) in [("slo_ok", "p1"), ("slo_skip", "p2")] {
            s.push(rw::Series::new(
                name,
                &[("service", "web"), ("slo", "true"), ("pod", pod)],
                v,
                ts,
            ));
        }
        let r = self.write(&s);
        assert_eq!(r.status, 204, "{}", r.text());

        // The upstream failing: a 5xx, one refusing cardguard's credentials, one refusing the
        // data for long enough that recorded samples sent meanwhile are dropped as rejected
        // (once the rules have two samples to take a rate of), and one taking only small bodies.
        if round % 10 == 5 {
            let one = || {
                [rw::Series::new(
                    "http_requests_total",
                    &[("service", "web"), ("path", "/a")],
                    v,
                    ts,
                )]
            };
            for code in [503, 401, 400] {
                self.main.answer(Answer::status(code));
                self.write(&one());
            }
            std::thread::sleep(Duration::from_millis(2500));
            self.main.answer(Answer::status(204));
            self.main.max_body_bytes(Some(64));
            self.write(&s);
            self.main.max_body_bytes(None);
            self.main.answer(Answer::status(204));
        }
    }
}
