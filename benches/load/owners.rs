//! `--small-owners N`: what an owner costs when owners are many and small (issue 16). cardguard
//! alone, twice, fresh each time, with the very same requests: series of N services of 1–10
//! series each (service `s` has `1 + s % 10`), each also labelled `group="grp-NNNN"` for
//! `s % 20` (`Shape::groups`); the first run's guard owns them by `service`, the second's by
//! `group`, so that only the owners differ. Each run: idle RSS, every series sent once (owners
//! created), then `--duration` s at saturation (or at `--small-owners-rate` samples/s);
//! reported: RSS growth per owner and per series, CPU-seconds per million samples and the
//! request p50, both ways.
//!
//! Before `group`, the second run rewrote the `service` label to 20 values (`owner_groups`):
//! the same lengths, but bodies that compress better and so decompress faster than the small
//! owners'. Before that, it was 20 services of the load's usual shape, other label values.

use std::path::Path;
use std::time::Duration;

use cardguard::sink::Sink;

use crate::gen::{self, Labels, Load, Shape};
use crate::target::{Extra, Kind, Limits, Target};
use crate::{assert_ok, at_rate, mib, plan, settle, Args, Sat};

struct Run {
    owners: usize,
    series: usize,
    idle_rss: u64,
    created_rss: u64,
    sat: Sat,
}

impl Run {
    fn growth(&self) -> u64 {
        self.created_rss.saturating_sub(self.idle_rss)
    }
    fn cpu_per_million(&self) -> f64 {
        self.sat.cpu_s / (self.sat.out.samples_ok as f64 / 1e6)
    }
}

/// One run of `load`, owned by `service`, or by `group` (`by_group`).
async fn one(
    args: &Args,
    upstream: &Sink,
    dir: &Path,
    load: &Load,
    by_group: bool,
    per_service: u64,
    max_owners: usize,
) -> Run {
    let shape = load.shape;
    let series = shape.distinct();
    let limits = Limits {
        per_service,
        global: (series as f64 * args.headroom).ceil() as u64,
    };
    let extra = Extra {
        // Builds before `2e63c2b` capped tenant-less owners at `max_owners_per_tenant` (1000
        // by default) too; set it as well so that runs against builds before that compare.
        guard_yaml: format!("  max_owners: {max_owners}\n  max_owners_per_tenant: {max_owners}\n"),
        owner_label: by_group.then_some("group"),
        ..Extra::default()
    };
    let mut t = Target::start_with(Kind::Cardguard, dir, &upstream.write_url(), limits, &extra);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle = t.stats();
    let warm = crate::drive::run(plan(
        &t,
        load,
        args.conns,
        Duration::from_secs(3600),
        None,
        true,
        0,
        load.first_step,
    ))
    .await;
    settle(upstream).await;
    assert_ok(Kind::Cardguard, "owners warm-up", &warm);
    let created = t.stats();
    let duration = Duration::from_secs_f64(args.duration);
    let rate = (args.small_owners_rate > 0.0).then_some(args.small_owners_rate);
    let sat = at_rate(&mut t, upstream, load, args.conns, duration, rate).await;
    assert_ok(Kind::Cardguard, "owners", &sat.out);
    let run = Run {
        owners: if by_group {
            shape.groups
        } else {
            shape.services
        },
        series,
        idle_rss: idle.rss,
        created_rss: created.rss,
        sat,
    };
    println!(
        "cardguard, {} owners, {} series: RSS idle {:.1} MiB, after creating them {:.1} MiB \
         (+{:.0} B per owner, +{:.1} B per series); {}: {:.0} samples/s, {:.3} CPU-s per \
         million samples, p50 {:.2} ms, p99 {:.2} ms, {}",
        run.owners,
        run.series,
        mib(run.idle_rss),
        mib(run.created_rss),
        run.growth() as f64 / run.owners as f64,
        run.growth() as f64 / run.series as f64,
        load_name(args),
        run.sat.out.samples_per_sec(),
        run.cpu_per_million(),
        run.sat.out.quantile_ms(0.5),
        run.sat.out.quantile_ms(0.99),
        run.sat.out.statuses_text()
    );
    run
}

/// How the runs were driven, for the report.
fn load_name(args: &Args) -> String {
    if args.small_owners_rate > 0.0 {
        format!("at {:.0} samples/s offered", args.small_owners_rate)
    } else {
        "at saturation".to_string()
    }
}

pub async fn run(args: &Args, owners: usize, upstream: &Sink, dir: &Path, full: bool) {
    let small = Shape {
        services: owners,
        series_per_service: 10,
        explosion: 0.0,
        min_batch: args.min_batch,
        max_batch: args.max_batch,
        steps: 2,
        labels: Labels::Exporter,
        samples_per_series: 1,
        v2: false,
        small_owners: true,
        groups: 20,
    };
    let load = gen::build(small, 11);
    // The largest group: the services `s` of one `s % groups` have `1 + s % 10` series each.
    let largest = (0..small.groups)
        .map(|g| {
            (0..owners)
                .filter(|s| s % small.groups == g)
                .map(|s| small.owner_series(s))
                .sum::<usize>()
        })
        .max()
        .unwrap_or(1);
    let max_owners = owners + 100;
    let a = one(args, upstream, dir, &load, false, 1000, max_owners).await;
    let b = one(
        args,
        upstream,
        dir,
        &load,
        true,
        (largest as f64 * args.headroom).ceil() as u64,
        max_owners,
    )
    .await;
    // What the small owners cost beyond the series themselves (as the large owners pay them).
    let per_owner = (a.growth() as f64 - b.growth() as f64 * a.series as f64 / b.series as f64)
        / a.owners as f64;
    println!();
    println!("## many small owners ({})", crate::machine());
    println!();
    println!(
        "| measure | {} owners of 1–10 series | the same series, 20 owners | ratio | target |",
        a.owners
    );
    println!("|---|---|---|---|---|");
    println!("| series | {} | {} | | |", a.series, b.series);
    println!(
        "| RSS growth after every series once, MiB (idle) | {:.1} ({:.1}) | {:.1} ({:.1}) | {:.2}× | |",
        mib(a.growth()),
        mib(a.idle_rss),
        mib(b.growth()),
        mib(b.idle_rss),
        a.growth() as f64 / b.growth().max(1) as f64
    );
    println!(
        "| RSS per owner beyond its series, bytes | {per_owner:.0} | | | a few hundred {} |",
        crate::verdict(per_owner <= 500.0)
    );
    let r = a.cpu_per_million() / b.cpu_per_million();
    println!(
        "| CPU-s per million samples {} | {:.3} | {:.3} | {r:.2}× | ≤ 1× {} |",
        load_name(args),
        a.cpu_per_million(),
        b.cpu_per_million(),
        crate::verdict(r <= 1.05)
    );
    println!(
        "| request p50 / p99 {}, ms | {:.2} / {:.2} | {:.2} / {:.2} | | |",
        load_name(args),
        a.sat.out.quantile_ms(0.5),
        a.sat.out.quantile_ms(0.99),
        b.sat.out.quantile_ms(0.5),
        b.sat.out.quantile_ms(0.99)
    );
    if !full {
        assert_eq!(
            a.sat.forwarded, a.sat.out.samples_ok,
            "small owners: not everything acknowledged was forwarded"
        );
    }
}
