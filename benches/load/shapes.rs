//! `--shapes`: samples per CPU-second of cardguard and of vmagent, side by side, on every shape
//! of load the issue names (issue 16): few (4–5) and many (10–12) labels per series, 1 and 10
//! samples per series, remote write 1.0 and 2.0 senders, and the guard with no explosion, with
//! an explosion, with 10 relabel rules and with 10 recording rules reading 10% of the series.
//! Each shape varies one thing from its labels' base row; each proxy runs fresh per shape, one
//! warm-up step, then `--duration` s at saturation. The lowest ratio is the one that counts.

use std::path::Path;
use std::time::Duration;

use cardguard::sink::Sink;

use crate::gen::{self, Labels, Shape};
use crate::target::{Extra, Kind, Target};
use crate::{assert_ok, budget, saturate, settle, warm_up, Args, Sat};

/// What the guard does in a shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Plain,
    Explosion,
    Relabel,
    Rules,
}

#[derive(Debug, Clone, Copy)]
struct Variant {
    labels: Labels,
    samples: usize,
    v2: bool,
    mode: Mode,
}

impl Variant {
    fn name(&self) -> String {
        let mut s = format!(
            "{}, {} sample{}/series, v{}",
            self.labels.name(),
            self.samples,
            if self.samples == 1 { "" } else { "s" },
            if self.v2 { "2.0" } else { "1.0" }
        );
        s.push_str(match self.mode {
            Mode::Plain => ", guard, no explosion",
            Mode::Explosion => ", guard, 20% exploding",
            Mode::Relabel => ", guard + 10 relabel rules",
            Mode::Rules => ", guard + 10 recording rules on 10%",
        });
        s
    }
}

fn variants(labels: &[Labels]) -> Vec<Variant> {
    let mut v = Vec::new();
    for &labels in labels {
        let base = Variant {
            labels,
            samples: 1,
            v2: false,
            mode: Mode::Plain,
        };
        v.push(base);
        v.push(Variant {
            samples: 10,
            ..base
        });
        v.push(Variant { v2: true, ..base });
        v.push(Variant {
            mode: Mode::Explosion,
            ..base
        });
        v.push(Variant {
            mode: Mode::Relabel,
            ..base
        });
        v.push(Variant {
            mode: Mode::Rules,
            ..base
        });
    }
    v
}

/// Ten rules of the kinds people write, none touching the load's series (the relabel bench's
/// set). `keepequal` is Prometheus's; vmagent 1.79 spells the same check `keep_if_equal`.
fn relabel_rules(vmagent: bool) -> String {
    let last = if vmagent {
        "- source_labels: [job, job]\n  action: keep_if_equal\n"
    } else {
        "- source_labels: [job]\n  target_label: job\n  action: keepequal\n"
    };
    format!(
        r#"- source_labels: [instance, __name__]
  regex: '10\.9\.9\.9:9100;http_requests_total'
  target_label: hot
  replacement: "yes"
- source_labels: [hot]
  regex: "yes"
  target_label: tier
  replacement: gold
- source_labels: [__name__]
  regex: "debug_.*|go_gc_.*"
  action: drop
- source_labels: [__name__]
  regex: ".+"
  action: keep
- regex: "tmp_.*"
  action: labeldrop
- source_labels: [service, method]
  regex: "svc-none;.*"
  target_label: x
- source_labels: [code]
  regex: "599"
  target_label: err
  replacement: "1"
- regex: "__meta_(.*)"
  action: labelmap
- source_labels: [hot]
  target_label: hot_copy
{last}"#
    )
}

/// Ten recording rules over `http_requests_total`, one of the load's ten metric names: they
/// read 10% of the series.
const RULES: &str = r#"groups:
  - name: shapes
    interval: 1m
    rules:
      - record: service:http_requests:rate5m
        expr: sum by (service) (rate(http_requests_total[5m]))
      - record: service_method:http_requests:rate5m
        expr: sum by (service, method) (rate(http_requests_total[5m]))
      - record: job:http_requests:rate1m
        expr: sum by (job) (rate(http_requests_total[1m]))
      - record: service:http_requests:increase5m
        expr: sum by (service) (increase(http_requests_total[5m]))
      - record: service:http_requests:max
        expr: max by (service) (http_requests_total)
      - record: service:http_requests:min
        expr: min by (service) (http_requests_total)
      - record: service:http_requests:count
        expr: count by (service) (http_requests_total)
      - record: instance:http_requests:rate5m
        expr: sum by (instance) (rate(http_requests_total[5m]))
      - record: http_requests:rate5m
        expr: sum(rate(http_requests_total[5m]))
      - record: service:http_requests:avg
        expr: avg by (service) (http_requests_total)
"#;

fn extra(v: &Variant, kind: Kind, dir: &Path, unguarded: bool) -> Extra {
    let mut e = Extra {
        upstream_v2: v.v2,
        no_guard: unguarded,
        ..Extra::default()
    };
    match v.mode {
        Mode::Plain | Mode::Explosion => {}
        Mode::Relabel => match kind {
            Kind::Cardguard => {
                let rules = relabel_rules(false);
                e.cardguard_yaml = format!(
                    "relabel_configs:\n{}",
                    rules
                        .lines()
                        .map(|l| format!("  {l}\n"))
                        .collect::<String>()
                );
            }
            Kind::Vmagent => {
                let path = dir.join("shapes-relabel.yml");
                std::fs::write(&path, relabel_rules(true)).expect("write relabel rules");
                e.vmagent_args
                    .push(format!("-remoteWrite.relabelConfig={}", path.display()));
            }
        },
        // vmagent 1.79 has no recording rules (vmalert does, reading back from storage) nor
        // stream aggregation: it runs this shape as the plain one.
        Mode::Rules => {
            if kind == Kind::Cardguard {
                let path = dir.join("shapes-rules.yml");
                std::fs::write(&path, RULES).expect("write rule file");
                e.cardguard_yaml = format!("rule_files:\n  - {}\n", path.display());
            }
        }
    }
    e
}

pub struct Row {
    name: String,
    samples_per_request: f64,
    /// Each round's run (`--repeat`).
    cg: Vec<Sat>,
    vm: Vec<Sat>,
}

impl Row {
    fn ratio(&self) -> f64 {
        median(&self.cg) / median(&self.vm)
    }
}

/// The median of the runs' samples per CPU-second (the mean of the middle two of an even
/// count).
fn median(runs: &[Sat]) -> f64 {
    let mut v: Vec<f64> = runs.iter().map(Sat::per_cpu_s).collect();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// Run every shape (only the few-labels ones in the smoke run) and print the table.
pub async fn run(args: &Args, upstream: &Sink, dir: &Path, full: bool) -> Vec<Row> {
    let labels: &[Labels] = if full {
        &[Labels::Few, Labels::Many]
    } else {
        &[Labels::Few]
    };
    let duration = Duration::from_secs_f64(args.duration);
    let limits = budget(args, args.series_per_service);
    let mut rows = Vec::new();
    // The smoke run checks the configurations the base run doesn't: 2.0, relabel, rules.
    let all = variants(labels);
    let chosen = all
        .into_iter()
        .filter(|v| full || v.v2 || matches!(v.mode, Mode::Relabel | Mode::Rules))
        .filter(|v| {
            args.shape
                .as_ref()
                .is_none_or(|s| v.name().contains(s.as_str()))
        });
    for v in chosen {
        let shape = Shape {
            services: args.services,
            series_per_service: args.series_per_service,
            explosion: if v.mode == Mode::Explosion {
                args.explosion
            } else {
                0.0
            },
            min_batch: args.min_batch,
            max_batch: args.max_batch,
            steps: 2,
            labels: v.labels,
            samples_per_series: v.samples,
            v2: v.v2,
            small_owners: false,
            groups: 0,
        };
        let load = gen::build(shape, 7);
        // vmagent 1.79 takes remote write 1.0 only: a 2.0 shape sends it the same series as 1.0.
        let v1_load = v.v2.then(|| gen::build(Shape { v2: false, ..shape }, 7));
        let (mut cg, mut vm) = (Vec::new(), Vec::new());
        for round in 0..args.repeat.max(1) {
            // vmagent first in even rounds, cardguard first in odd ones.
            let order = if round % 2 == 0 {
                [Kind::Vmagent, Kind::Cardguard]
            } else {
                [Kind::Cardguard, Kind::Vmagent]
            };
            for kind in order {
                let load = match (&v1_load, kind) {
                    (Some(l), Kind::Vmagent) => l,
                    _ => &load,
                };
                let mut t = Target::start_with(
                    kind,
                    dir,
                    &upstream.write_url(),
                    limits,
                    &extra(&v, kind, dir, args.unguarded),
                );
                let warm = warm_up(&t, load, args.conns, duration).await;
                settle(upstream).await;
                assert_ok(kind, "shape warm-up", &warm);
                let sat = saturate(&mut t, upstream, load, args.conns, duration).await;
                assert_ok(kind, "shape", &sat.out);
                if args.repeat > 1 {
                    println!(
                        "  round {round} {:<9} {:>9.0} samples/CPU-s ({:.2} CPU-s)",
                        kind.name(),
                        sat.per_cpu_s(),
                        sat.cpu_s
                    );
                }
                match kind {
                    Kind::Cardguard => cg.push(sat),
                    Kind::Vmagent => vm.push(sat),
                }
            }
        }
        let row = Row {
            name: if args.unguarded {
                format!("{} [cardguard unguarded]", v.name())
            } else {
                v.name()
            },
            samples_per_request: load.samples_per_request(),
            cg,
            vm,
        };
        let cpu = |runs: &[Sat]| runs.iter().map(|s| s.cpu_s).sum::<f64>();
        println!(
            "shape {:<58} cardguard {:>9.0} samples/CPU-s ({:.2} CPU-s), vmagent {:>9.0} ({:.2} CPU-s): {:.2}×",
            row.name,
            median(&row.cg),
            cpu(&row.cg),
            median(&row.vm),
            cpu(&row.vm),
            row.ratio()
        );
        if !full {
            assert!(
                row.cg.iter().chain(&row.vm).all(|s| s.forwarded > 0),
                "shape {}: nothing forwarded",
                row.name
            );
        }
        rows.push(row);
    }
    print(&rows);
    rows
}

fn print(rows: &[Row]) {
    println!();
    let runs = rows.first().map_or(1, |r| r.cg.len());
    println!(
        "## samples per CPU-second by load shape ({}{})",
        crate::machine(),
        if runs > 1 {
            format!("; medians of {runs} runs a side")
        } else {
            String::new()
        }
    );
    println!();
    println!(
        "| shape | samples/request | cardguard samples/CPU-s | vmagent samples/CPU-s | ratio |"
    );
    println!("|---|---|---|---|---|");
    for r in rows {
        println!(
            "| {} | {:.0} | {:.0} | {:.0} | {:.2}× |",
            r.name,
            r.samples_per_request,
            median(&r.cg),
            median(&r.vm),
            r.ratio()
        );
    }
    if let Some(low) = rows.iter().min_by(|a, b| a.ratio().total_cmp(&b.ratio())) {
        println!();
        println!(
            "lowest ratio: {:.2}× ({}); target ≥ 5× {}",
            low.ratio(),
            low.name,
            crate::verdict(low.ratio() >= 5.0)
        );
    }
}
