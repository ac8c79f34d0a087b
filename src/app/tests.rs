use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use super::*;

fn quick() -> Backoff {
    Backoff {
        first: Duration::from_millis(10),
        max: Duration::from_millis(40),
        reset_after: Duration::from_secs(60),
    }
}

fn restarts(r: &Registry) -> IntCounterVec {
    AppMetrics::register(r).task_restarts
}

async fn until(what: &str, cond: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !cond() {
        assert!(std::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn a_task_that_panics_is_restarted_and_counted() {
    let r = Registry::new();
    let counter = restarts(&r);
    let mut tasks = Supervisor::new(counter.clone(), quick());
    let runs = Arc::new(AtomicUsize::new(0));
    let r2 = runs.clone();
    tasks.spawn("flaky", move || {
        let runs = r2.clone();
        async move {
            if runs.fetch_add(1, Ordering::SeqCst) < 2 {
                panic!("boom");
            }
            std::future::pending::<()>().await;
        }
    });
    until("third run", || runs.load(Ordering::SeqCst) == 3).await;
    assert_eq!(counter.with_label_values(&["flaky"]).get(), 2);
    tasks.shutdown().await;
    assert_eq!(
        runs.load(Ordering::SeqCst),
        3,
        "not restarted after shutdown"
    );
}

#[tokio::test]
async fn a_task_that_returns_is_restarted_and_counted() {
    let r = Registry::new();
    let counter = restarts(&r);
    let mut tasks = Supervisor::new(counter.clone(), quick());
    let runs = Arc::new(AtomicUsize::new(0));
    let r2 = runs.clone();
    tasks.spawn("quitter", move || {
        let runs = r2.clone();
        async move {
            runs.fetch_add(1, Ordering::SeqCst);
        }
    });
    until("four runs", || runs.load(Ordering::SeqCst) >= 4).await;
    assert!(counter.with_label_values(&["quitter"]).get() >= 3);
    tasks.shutdown().await;
}

#[tokio::test]
async fn shutdown_stops_every_task() {
    let r = Registry::new();
    let mut tasks = Supervisor::new(restarts(&r), quick());
    // Each task holds a clone until its future is dropped.
    let held = Arc::new(());
    for name in ["a", "b", "c"] {
        let h = held.clone();
        tasks.spawn(name, move || {
            let h = h.clone();
            async move {
                let _h = h;
                std::future::pending::<()>().await;
            }
        });
    }
    until("all started", || Arc::strong_count(&held) == 1 + 3 + 3).await;
    tasks.shutdown().await;
    assert_eq!(Arc::strong_count(&held), 1, "a task outlived shutdown");
}

#[tokio::test]
async fn the_app_serves_exports_its_tasks_and_shuts_down() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut config = Config::default();
    config.server.shutdown_drain_delay = Duration::ZERO;
    let app = App::start_on(config, ConfigSource::default(), listener).unwrap();
    let addr = app.local_addr();
    tokio::net::TcpStream::connect(addr).await.unwrap();
    let (_, body) = app.state().telemetry.encode();
    let text = String::from_utf8(body).unwrap();
    for task in TASKS {
        let series = format!("cardguard_task_restarts_total{{task=\"{task}\"}} 0");
        assert!(text.contains(&series), "{series} missing from\n{text}");
    }
    let state = app.state().clone();
    until("ready", || state.is_ready()).await;
    app.shutdown().await;
    assert!(!state.is_ready());
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

/// One HTTP/1.1 GET over a fresh connection; the status line.
async fn get_status(addr: SocketAddr, path: &str) -> std::io::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    let req = format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).await?;
    let text = String::from_utf8_lossy(&out);
    Ok(text.lines().next().unwrap_or("").to_string())
}

/// A load balancer must see `/-/ready` fail before connections are refused: not ready at once,
/// still serving for the drain delay, then closed.
#[tokio::test]
async fn shutdown_turns_unready_first_and_serves_through_the_drain_delay() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut config = Config::default();
    config.server.shutdown_drain_delay = Duration::from_millis(600);
    let app = App::start_on(config, ConfigSource::default(), listener).unwrap();
    let addr = app.local_addr();
    let state = app.state().clone();
    until("ready", || state.is_ready()).await;
    assert!(get_status(addr, "/-/ready").await.unwrap().contains("200"));
    let started = std::time::Instant::now();
    let stopping = tokio::spawn(app.shutdown());
    until("not ready", || !state.is_ready()).await;
    let during = get_status(addr, "/-/ready").await.unwrap();
    assert!(during.contains("503"), "{during}");
    let healthy = get_status(addr, "/-/healthy").await.unwrap();
    assert!(healthy.contains("200"), "{healthy}");
    stopping.await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(600));
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

/// With `storage.path`, shutdown calls the final-snapshot hook once and leaves the durable
/// queue whole for the next start.
#[tokio::test]
async fn shutdown_calls_the_snapshot_hook_and_leaves_the_queue_whole() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::from_yaml(&format!(
        "upstream:\n  url: http://127.0.0.1:9/api/v1/write\n\
         storage:\n  path: {}\n\
         server:\n  shutdown_drain_delay: 0s\n",
        dir.path().display()
    ))
    .unwrap();
    config.guard = Some(crate::guard::GuardConfig::with_default_budget(
        1,
        vec!["service".into()],
    ));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let app = App::start_on(config, ConfigSource::default(), listener).unwrap();
    let q = app.state().queue.clone().unwrap();
    let before = q.len();
    let called = Arc::new(AtomicUsize::new(0));
    let c = called.clone();
    let mut app = app;
    app.set_final_snapshot(Box::new(move |_| {
        c.fetch_add(1, Ordering::SeqCst);
    }));
    app.shutdown().await;
    assert_eq!(
        called.load(Ordering::SeqCst),
        1,
        "final snapshot hook not called"
    );
    assert!(q.len() >= before);
    drop(q);
    let m = crate::forward::queue::QueueMetrics::register(&Registry::new());
    crate::forward::queue::DiskQueue::open(
        &dir.path().join("queue"),
        crate::forward::queue::QueueOptions::new(512 << 20),
        m.clone(),
    )
    .unwrap();
    assert_eq!(m.corruptions.get(), 0);
}

/// With `storage.path`, an overflow flush and recorded rule results become records of the
/// durable queue (sent from there), not requests of their own.
#[tokio::test]
async fn with_storage_overflow_flushes_and_rule_results_are_queued_on_disk() {
    use crate::route::durable::{decode, Kind};
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::from_yaml(&format!(
        "upstream:\n  url: http://127.0.0.1:9/api/v1/write\nstorage:\n  path: {}\n",
        dir.path().display()
    ))
    .unwrap();
    config.guard = Some(crate::guard::GuardConfig::with_default_budget(
        10,
        vec!["service".into()],
    ));
    let telemetry = Telemetry::new();
    let q = open_queue(&config.storage, &telemetry).unwrap().unwrap();
    let source = ConfigSource::default();
    let web = crate::ingest::web::Web::new(&source.web, telemetry.registry()).unwrap();
    let state = State::with_queue(config.clone(), source, telemetry, web, Some(q.clone()));
    let labels: crate::series::OwnedLabels = [("__name__", "slo_ok"), ("slo", "true")]
        .iter()
        .map(|(n, v)| (n.as_bytes().to_vec(), v.as_bytes().to_vec()))
        .collect();
    let now = 1_700_000_000_000;
    state.guard.overflow.absorb(
        0,
        Some("team-a"),
        &labels,
        1,
        crate::guard::GaugeFunction::Sum,
        [(1.0, now)].into_iter(),
        now,
    );
    let mut scratch = crate::route::own::Scratch::default();
    ingest::flush_overflow(&state, &config, &mut scratch).await;
    assert_eq!(q.len(), 1);
    let recorded = crate::wire::OwnedSeries {
        labels: vec![("__name__".into(), "job:x:sum".into())],
        samples: vec![(2.0, now)],
        histograms: Vec::new(),
    };
    assert_eq!(state.rules.output.push(vec![recorded], 100, usize::MAX), 0);
    assert_eq!(state.rules.output.queued_samples(), 0, "went to memory");
    let records: Vec<_> = q
        .peek(10, usize::MAX)
        .unwrap()
        .iter()
        .map(|r| decode(&r.payload).unwrap())
        .collect();
    assert_eq!(records.len(), 2);
    assert_eq!(records[0].kind, Kind::Overflow);
    assert_eq!(records[0].tenant.as_deref(), Some("team-a"));
    assert_eq!(records[1].kind, Kind::Rules);
    assert_eq!(records[1].series[0].labels[0].1, "job:x:sum");
}
