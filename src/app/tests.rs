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
    let app = App::start_on(Config::default(), ConfigSource::default(), listener).unwrap();
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
