//! Supervision of the background tasks: each runs in its own tokio task, and one that panics
//! or returns (they are meant to run until shutdown) is logged, counted in
//! `cardguard_task_restarts_total{task}` and started afresh after a backoff, so that no task is
//! ever silently gone.

use std::future::Future;
use std::time::{Duration, Instant};

use prometheus::{IntCounter, IntCounterVec};
use tokio::sync::watch;
use tokio::task::{JoinError, JoinHandle, JoinSet};

/// How long to wait before restarting a task that failed.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    /// The wait after a first failure, and after a failure of a task that ran `reset_after`.
    pub first: Duration,
    /// The wait doubles on each failure in a row, up to this.
    pub max: Duration,
    /// A task that ran this long before failing is not failing in a loop: start over at
    /// `first`.
    pub reset_after: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            first: Duration::from_secs(1),
            max: Duration::from_secs(30),
            reset_after: Duration::from_secs(60),
        }
    }
}

/// The running background tasks. Dropping it aborts them all; `shutdown` does so and waits
/// until they are gone.
pub struct Supervisor {
    /// One supervising loop per task; each owns its task's handle.
    loops: JoinSet<()>,
    stop: watch::Sender<bool>,
    restarts: IntCounterVec,
    backoff: Backoff,
}

impl Supervisor {
    /// `restarts` is counted by task name (one label).
    pub fn new(restarts: IntCounterVec, backoff: Backoff) -> Self {
        Supervisor {
            loops: JoinSet::new(),
            stop: watch::channel(false).0,
            restarts,
            backoff,
        }
    }

    /// Run `start()` as the task `name` until shutdown, starting it again whenever it ends.
    /// Must be called within a tokio runtime.
    pub fn spawn<F, Fut>(&mut self, name: &'static str, start: F)
    where
        F: Fn() -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        // Created here so that the series exists at 0 before any restart.
        let restarts = self.restarts.with_label_values(&[name]);
        let stop = self.stop.subscribe();
        self.loops
            .spawn(supervise(name, start, restarts, self.backoff, stop));
    }

    /// Stop every task and wait until all have ended.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        while self.loops.join_next().await.is_some() {}
    }
}

async fn supervise<F, Fut>(
    name: &'static str,
    start: F,
    restarts: IntCounter,
    backoff: Backoff,
    mut stop: watch::Receiver<bool>,
) where
    F: Fn() -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut delay = backoff.first;
    loop {
        let started = Instant::now();
        // Aborted when this loop is dropped or returns: a task never outlives its supervisor.
        let mut run = AbortOnDrop(tokio::spawn(start()));
        let ended = tokio::select! {
            ended = &mut run.0 => ended,
            () = stopped(&mut stop) => {
                // Wait until it is gone, so that `shutdown` returns with nothing running.
                run.0.abort();
                let _ = (&mut run.0).await;
                return;
            }
        };
        restarts.inc();
        if started.elapsed() >= backoff.reset_after {
            delay = backoff.first;
        }
        match ended {
            Ok(()) => tracing::error!(
                task = name,
                "background task returned although it should run until shutdown; restarting in {delay:?}"
            ),
            Err(e) => tracing::error!(
                task = name,
                "background task {}; restarting in {delay:?}",
                failure(e)
            ),
        }
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = stopped(&mut stop) => return,
        }
        delay = (delay * 2).min(backoff.max);
    }
}

/// Resolves once stop is asked for, or once the supervisor is gone.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// How the task ended, with the panic message if it panicked with one.
fn failure(e: JoinError) -> String {
    match e.try_into_panic() {
        Ok(payload) => {
            let msg = payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a non-text payload".into());
            format!("panicked: {msg}")
        }
        // Aborted from outside: nothing here aborts a task it still supervises.
        Err(_) => "was cancelled".into(),
    }
}

struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
