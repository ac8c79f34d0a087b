//! `cardguard demo`: the whole path in one process. A traffic generator plays a fleet of
//! Prometheus-scraped services, cardguard sits in the middle started by the same `App` as
//! `serve` (server and background tasks), and an in-process upstream (`sink::Sink`) stands in
//! for the metrics backend, counting what arrives. Every few seconds the demo prints what
//! flowed through each hop.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use prost::Message;
use tokio::net::TcpListener;

use crate::app::{App, AppError};
use crate::config::{Config, ConfigErrors, GuardConfig, UpstreamConfig};
use crate::duration::PromDuration;
use crate::ingest::{ConfigSource, State};
use crate::sink::{Sink, SinkOptions};
use crate::wire::types::v1;
use crate::wire::{self, Version};

/// Options of `cardguard demo`.
#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// Where the demo's cardguard listens (its /metrics is worth a look while it runs).
    #[arg(long, default_value = "127.0.0.1:9201")]
    pub listen: SocketAddr,
    /// Stop after this long (default: run until Ctrl-C).
    #[arg(long)]
    pub duration: Option<PromDuration>,
    /// Simulated services.
    #[arg(long, default_value_t = 5)]
    pub services: usize,
    /// Series each service exposes.
    #[arg(long, default_value_t = 400)]
    pub series_per_service: usize,
    /// Wall time between simulated scrapes (each one advances counters by 15 s of traffic).
    #[arg(long, default_value = "1s")]
    pub scrape_interval: PromDuration,
    /// Seconds between progress reports.
    #[arg(long, default_value = "5s")]
    pub report_interval: PromDuration,
    /// Series budget of every service (the guard's `max_series`).
    #[arg(long, default_value_t = 500)]
    pub budget: u64,
    /// New series the exploding service (`svc-search`) gains per scrape, each with a fresh
    /// `user_id` label: the cardinality explosion the guard contains. 0 turns it off.
    #[arg(long, default_value_t = 50)]
    pub explosion: usize,
}

impl Default for DemoArgs {
    fn default() -> Self {
        DemoArgs {
            listen: SocketAddr::from(([127, 0, 0, 1], 9201)),
            duration: None,
            services: 5,
            series_per_service: 400,
            scrape_interval: PromDuration(Duration::from_secs(1)),
            report_interval: PromDuration(Duration::from_secs(5)),
            budget: 500,
            explosion: 50,
        }
    }
}

/// Why the demo could not run.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error(
        "cannot listen on {addr}: {source} (pass --listen 127.0.0.1:PORT to pick another port)"
    )]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Config(#[from] ConfigErrors),
    #[error(transparent)]
    Start(#[from] AppError),
    #[error("the demo upstream never answered: {0}")]
    Sink(String),
}

/// Start the stand-in upstream on an ephemeral loopback port.
async fn start_sink() -> Result<Sink, DemoError> {
    Sink::start(SinkOptions {
        distinct_series: true,
        reject_undecodable: true,
        ..SinkOptions::default()
    })
    .await
    .map_err(|source| DemoError::Bind {
        addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        source,
    })
}

/// The simulated fleet: per service, a fixed set of series whose counters advance each scrape.
pub struct Fleet {
    series: Vec<v1::TimeSeries>,
    step: u64,
    /// Index into `series` where the exploding series start.
    steady: usize,
}

/// The exploding series are capped so a demo left running for days stays small itself.
const MAX_EXPLODED: usize = 100_000;

/// The metric names of the demo's services (also the benches' explosion load).
pub const METRICS: &[&str] = &[
    "http_requests_total",
    "http_request_duration_seconds_count",
    "process_cpu_seconds_total",
    "rpc_errors_total",
];
/// Their `method` values.
pub const METHODS: &[&str] = &["GET", "POST", "PUT", "DELETE"];
const CODES: &[&str] = &["200", "201", "400", "404", "500"];

impl Fleet {
    pub fn new(services: usize, series_per_service: usize) -> Self {
        let mut series = Vec::with_capacity(services * series_per_service);
        for s in 0..services {
            let service = format!(
                "svc-{}",
                ["checkout", "search", "payments", "auth", "catalog", "cart", "ads", "email"]
                    [s % 8]
            );
            let service = if s >= 8 {
                format!("{service}-{s}")
            } else {
                service
            };
            for i in 0..series_per_service {
                let label = |n: &str, v: &str| v1::Label {
                    name: n.into(),
                    value: v.into(),
                };
                // Sorted by name, as Prometheus sends them.
                let labels = vec![
                    label("__name__", METRICS[i % METRICS.len()]),
                    label("code", CODES[(i / 4) % CODES.len()]),
                    label("instance", &format!("10.0.{}.{}:9100", s, (i / 80) % 250)),
                    label("job", "app"),
                    label("method", METHODS[(i / 20) % METHODS.len()]),
                    label("pod", &format!("{service}-{}", i / 80)),
                    label("service", &service),
                ];
                series.push(v1::TimeSeries {
                    labels,
                    samples: vec![v1::Sample::default()],
                    ..Default::default()
                });
            }
        }
        let steady = series.len();
        Fleet {
            series,
            step: 0,
            steady,
        }
    }

    /// Add `n` series to `svc-search`, each with a `user_id` never seen before: the classic
    /// cardinality explosion (a label tied to a customer id).
    pub fn explode(&mut self, n: usize) {
        for _ in 0..n {
            let k = self.series.len() - self.steady;
            if k >= MAX_EXPLODED {
                return;
            }
            let label = |n: &str, v: &str| v1::Label {
                name: n.into(),
                value: v.into(),
            };
            self.series.push(v1::TimeSeries {
                labels: vec![
                    label("__name__", "search_requests_total"),
                    label("instance", "10.0.1.7:9100"),
                    label("job", "app"),
                    label("service", "svc-search"),
                    label("user_id", &format!("u{:06}", 100_000 + k)),
                ],
                samples: vec![v1::Sample::default()],
                ..Default::default()
            });
        }
    }

    /// One scrape of every series, as remote-write bodies of at most `per_request` series.
    pub fn scrape(&mut self, now_ms: i64, per_request: usize) -> Vec<Bytes> {
        self.step += 1;
        for (i, ts) in self.series.iter_mut().enumerate() {
            // A steady rate per series, varied across series: counters that look real.
            let rate = 1.0 + (i % 17) as f64;
            ts.samples[0] = v1::Sample {
                value: rate * 15.0 * self.step as f64,
                timestamp: now_ms,
            };
        }
        self.series
            .chunks(per_request.max(1))
            .map(|chunk| {
                let req = v1::WriteRequest {
                    timeseries: chunk.to_vec(),
                    metadata: Vec::new(),
                };
                let mut out = Vec::new();
                wire::snappy::compress(&req.encode_to_vec(), &mut out);
                Bytes::from(out)
            })
            .collect()
    }

    pub fn len(&self) -> usize {
        self.series.len()
    }

    pub fn is_empty(&self) -> bool {
        self.series.is_empty()
    }
}

#[derive(Default)]
struct SenderStats {
    sent: AtomicU64,
    samples: AtomicU64,
    by_status: Mutex<BTreeMap<u16, u64>>,
}

/// Run the demo until Ctrl-C or `args.duration`.
pub async fn run(args: DemoArgs) -> Result<(), DemoError> {
    let sink = start_sink().await?;
    let sink_addr = sink.addr();
    let mut config = Config::default();
    config.server.listen_address = args.listen;
    // No load balancer to drain: Ctrl-C stops at once.
    config.server.shutdown_drain_delay = std::time::Duration::ZERO;
    config.routing = Some(Arc::new(crate::route::Routing::single(UpstreamConfig {
        name: "demo-sink".into(),
        url: format!("http://{sink_addr}/api/v1/write")
            .parse()
            .map_err(|e| DemoError::Sink(format!("{e}")))?,
        version: Version::V1,
        timeout: Duration::from_secs(5),
        headers: Vec::new(),
        tenant_header: None,
        client: None,
    })));
    let listener = TcpListener::bind(args.listen)
        .await
        .map_err(|source| DemoError::Bind {
            addr: args.listen,
            source,
        })?;
    let guard_config = GuardConfig::with_default_budget(args.budget, vec!["service".into()]);
    config.guard = Some(guard_config.clone());
    let app = App::start_on(config, ConfigSource::default(), listener)?;
    let report_state = app.state().clone();

    println!("cardguard demo");
    println!(
        "  sender   {} services x {} series, one scrape every {}",
        args.services, args.series_per_service, args.scrape_interval
    );
    println!(
        "  cardguard http://{}  (try: curl http://{}/metrics)",
        args.listen, args.listen
    );
    println!("  upstream http://{sink_addr}/api/v1/write (in-process sink)");
    println!(
        "  Ctrl-C to stop{}",
        args.duration
            .map(|d| format!(", or it stops after {d}"))
            .unwrap_or_default()
    );
    println!();

    let sender_stats = Arc::new(SenderStats::default());
    let (sender_stop, sender_stop_rx) = tokio::sync::watch::channel(false);
    let sender = tokio::spawn(send_loop(
        args.clone(),
        sender_stats.clone(),
        sender_stop_rx,
    ));

    let started = Instant::now();
    let mut report = tokio::time::interval(args.report_interval.0.max(Duration::from_millis(100)));
    report.tick().await;
    let deadline = args.duration.map(|d| started + d.0);
    let mut last = (0u64, 0u64, Instant::now());
    loop {
        let until_deadline = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        tokio::select! {
            _ = report.tick() => {
                last = print_report(&sender_stats, &report_state, &guard_config, &sink, last);
            }
            _ = tokio::signal::ctrl_c() => break,
            _ = tokio::time::sleep(until_deadline.unwrap_or(Duration::MAX)), if until_deadline.is_some() => break,
        }
    }
    // The sender stops first so no request meets a closed listener.
    let _ = sender_stop.send(true);
    let _ = sender.await;
    app.shutdown().await;
    println!();
    print_report(&sender_stats, &report_state, &guard_config, &sink, last);
    println!("distinct series at the upstream, per service:");
    for (service, n) in sink.distinct_by_service() {
        let service = if service.is_empty() {
            "(none)"
        } else {
            &service
        };
        println!("  {service:<16} {n}");
    }
    Ok(())
}

/// Series per request, as a Prometheus shard batches them.
const PER_REQUEST: usize = 1500;

async fn send_loop(
    args: DemoArgs,
    stats: Arc<SenderStats>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let url: http::Uri = match format!("http://{}/api/v1/write", args.listen).parse() {
        Ok(u) => u,
        Err(_) => return,
    };
    let mut fleet = Fleet::new(args.services, args.series_per_service);
    let mut tick = tokio::time::interval(args.scrape_interval.0.max(Duration::from_millis(10)));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        fleet.explode(args.explosion);
        let total = fleet.len();
        let bodies = fleet.scrape(now_ms, PER_REQUEST);
        for (k, body) in bodies.into_iter().enumerate() {
            let samples = (total - k * PER_REQUEST).min(PER_REQUEST) as u64;
            let req = Request::post(url.clone())
                .header("content-type", "application/x-protobuf")
                .header("content-encoding", "snappy")
                .header("x-prometheus-remote-write-version", "0.1.0")
                .body(Full::new(body));
            let Ok(req) = req else { continue };
            let status = match client.request(req).await {
                Ok(resp) => {
                    let s = resp.status().as_u16();
                    let _ = resp.into_body().collect().await;
                    s
                }
                Err(_) => 0,
            };
            stats.sent.fetch_add(1, Ordering::Relaxed);
            stats.samples.fetch_add(samples, Ordering::Relaxed);
            *stats
                .by_status
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .entry(status)
                .or_insert(0) += 1;
        }
    }
}

fn print_report(
    sender: &SenderStats,
    state: &State,
    guard: &GuardConfig,
    sink: &Sink,
    (last_sent, last_sink, last_at): (u64, u64, Instant),
) -> (u64, u64, Instant) {
    let now = Instant::now();
    let secs = now.duration_since(last_at).as_secs_f64().max(1e-3);
    let sent = sender.samples.load(Ordering::Relaxed);
    let got = sink.samples();
    let statuses: Vec<String> = sender
        .by_status
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .map(|(code, n)| {
            if *code == 0 {
                format!("conn-error={n}")
            } else {
                format!("{code}={n}")
            }
        })
        .collect();
    let t = &state.metrics.forward;
    println!(
        "sent {sent} samples ({:.0}/s) [{}] -> cardguard forwarded {} ({} requests as-is) -> upstream got {got} ({:.0}/s)",
        (sent - last_sent) as f64 / secs,
        statuses.join(" "),
        t.forwarded.samples(),
        t.passthrough_requests.get(),
        (got - last_sink) as f64 / secs,
    );
    println!(
        "  {:<14} {:>7} {:>7} {:>8} {:>9}  top label by distinct values",
        "service", "budget", "active", "demand", "dropped"
    );
    for row in state.guard.report(guard).services {
        let dropped: u64 = row.dropped_samples_total.values().sum();
        let top = row
            .top_labels
            .first()
            .map(|t| format!("{} ({:.0})", t.name, t.estimate))
            .unwrap_or_default();
        println!(
            "  {:<14} {:>7} {:>7} {:>8.0} {:>9}  {top}",
            row.service,
            row.budget,
            row.active,
            row.demand.unwrap_or(f64::NAN),
            dropped
        );
    }
    (sent, got, now)
}
