//! The rules' running state, shared by the write path and the evaluator: the buffers and the
//! plan (which survive reloads), group states, the output queue, metrics; and the evaluator
//! task that runs every group on its aligned ticks.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use prometheus::Registry;

use super::buffer::{Buffer, BufferLimits};
use super::file::RuleGroup;
use super::group::{self, GroupState};
use super::metrics::RuleMetrics;
use super::output::Output;
use super::plan::Plan;
use super::tap::Tap;
use super::{InForce, RulesConfig};
use crate::wire::OwnedSeries;

/// How often idle series and expired samples are swept from the buffers.
const SWEEP_EVERY: Duration = Duration::from_secs(10);

pub struct Runtime {
    pub buffer: Buffer,
    plan: ArcSwap<Plan>,
    /// The groups the plan was built from, to notice a reload.
    planned: Mutex<Option<Arc<Vec<Arc<RuleGroup>>>>>,
    states: Mutex<HashMap<String, GroupState>>,
    pub output: Arc<Output>,
    pub metrics: RuleMetrics,
    /// Log at most one evaluation failure per group per this long.
    failure_log: Mutex<HashMap<String, Instant>>,
}

impl Runtime {
    pub fn new(registry: &Registry) -> Runtime {
        Runtime {
            buffer: Buffer::new(),
            plan: ArcSwap::from_pointee(Plan::default()),
            planned: Mutex::new(None),
            states: Mutex::new(HashMap::new()),
            output: Arc::new(Output::default()),
            metrics: RuleMetrics::register(registry),
            failure_log: Mutex::new(HashMap::new()),
        }
    }

    /// Rebuild the plan when the loaded groups changed (start and every reload).
    pub fn configure(&self, rules: &RulesConfig) {
        let mut planned = self.planned.lock().unwrap_or_else(|e| e.into_inner());
        if planned
            .as_ref()
            .is_some_and(|p| Arc::ptr_eq(p, &rules.groups))
        {
            return;
        }
        let plan = Plan::new(
            rules.groups.iter().map(|g| &**g),
            rules.evaluation_interval,
            rules.query_offset,
        );
        if !rules.groups.is_empty() || !self.plan.load().is_empty() {
            tracing::info!(
                groups = rules.groups.len(),
                rules = rules.groups.iter().map(|g| g.rules.len()).sum::<usize>(),
                selectors = plan.selector_count(),
                "recording rules loaded"
            );
        }
        self.plan.store(Arc::new(plan));
        *planned = Some(rules.groups.clone());
    }

    /// Every group's state, for a snapshot.
    pub fn group_images(&self) -> Vec<group::GroupImage> {
        let states = self.states.lock().unwrap_or_else(|e| e.into_inner());
        states.iter().map(|(k, s)| s.image(k)).collect()
    }

    /// Put saved group states back before the evaluator starts: its first round carries them
    /// over to the groups in force (`reconcile`), so rules that are gone get stale markers
    /// and the others go on from the series they last wrote.
    pub fn restore_groups(&self, images: Vec<group::GroupImage>) {
        let mut states = self.states.lock().unwrap_or_else(|e| e.into_inner());
        for img in images {
            let (key, state) = GroupState::from_image(img);
            states.insert(key, state);
        }
    }

    /// The plan in force, for one request.
    pub fn plan(&self) -> Arc<Plan> {
        self.plan.load_full()
    }

    pub fn tap<'a>(&'a self, plan: &'a Plan, rules: &RulesConfig) -> Option<Tap<'a>> {
        (!plan.is_empty()).then_some(Tap {
            plan,
            buffer: &self.buffer,
            limits: BufferLimits {
                max_series: rules.max_buffered_series,
                max_samples_per_series: rules.max_samples_per_series,
                max_label_bytes: rules.max_buffered_label_bytes,
            },
            tenant: None,
        })
    }

    /// Evaluate `group` at tick `tick_ms` (its query offset is subtracted here) and queue the
    /// results. Blocking: call from a blocking-friendly thread.
    pub fn evaluate_group(&self, group: &RuleGroup, rules: &RulesConfig, tick_ms: i64) {
        let (_, offset) = group::timing(group, rules.evaluation_interval, rules.query_offset);
        let t = tick_ms - offset;
        let key = group.key();
        let mut state = {
            let mut states = self.states.lock().unwrap_or_else(|e| e.into_inner());
            states.remove(&key).unwrap_or_default()
        };
        let started = Instant::now();
        let plan = self.plan();
        let limits = BufferLimits {
            max_series: rules.max_buffered_series,
            max_samples_per_series: rules.max_samples_per_series,
            max_label_bytes: rules.max_buffered_label_bytes,
        };
        // Recorded series that some rule reads go into the buffers like any input, so a rule
        // sees what earlier rules recorded (in its group at once, in other groups by their
        // next evaluation), as in Prometheus.
        let mut feed_back = |series: &[OwnedSeries]| {
            for s in series {
                let labels = s.labels.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes()));
                let name = s
                    .labels
                    .iter()
                    .find(|(n, _)| n == "__name__")
                    .map(|(_, v)| v.as_bytes());
                if let Some(m) = plan.match_series(name, labels.clone()) {
                    let samples = s
                        .samples
                        .iter()
                        .map(|&(v, t)| super::promql::Sample { t, v });
                    let histograms = s.histograms.iter().filter_map(|raw| {
                        match super::tap::decode_histogram(raw) {
                            Some(super::tap::Decoded::Histogram(h)) => Some(h),
                            _ => None,
                        }
                    });
                    self.buffer.append_all(
                        None,
                        None,
                        labels,
                        samples,
                        histograms,
                        m.retention_ms,
                        &limits,
                    );
                }
            }
        };
        let evaluated = group::evaluate_with(group, &self.buffer, t, &mut state, &mut feed_back);
        let elapsed = started.elapsed();
        self.states
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key.clone(), state);

        let m = &self.metrics;
        m.evaluations.with_label_values(&[&key]).inc();
        m.last_duration
            .with_label_values(&[&key])
            .set(elapsed.as_secs_f64());
        m.last_evaluation
            .with_label_values(&[&key])
            .set(t as f64 / 1000.0);
        if !evaluated.failures.is_empty() {
            m.evaluation_failures
                .with_label_values(&[&key])
                .inc_by(evaluated.failures.len() as u64);
            self.log_failures(&key, &evaluated.failures);
        }
        m.stale_markers.inc_by(evaluated.stale_markers);
        m.set_buffer(&self.buffer.stats());
        m.set_memory_limits(rules);
        self.queue(evaluated.series, rules);
    }

    fn queue(&self, series: Vec<OwnedSeries>, rules: &RulesConfig) {
        let n: usize = series.iter().map(|s| s.samples.len()).sum();
        self.metrics.samples_recorded.inc_by(n as u64);
        let dropped = self.output.push(
            series,
            rules.max_output_queue_samples,
            rules.max_output_queue_bytes,
        );
        if dropped > 0 {
            self.metrics
                .output_dropped
                .with_label_values(&["queue_full"])
                .inc_by(dropped as u64);
        }
        self.metrics
            .set_output_queue(self.output.queued_samples(), self.output.queued_bytes());
    }

    fn log_failures(&self, key: &str, failures: &[group::RuleFailure]) {
        let mut log = self.failure_log.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let due = log
            .get(key)
            .is_none_or(|t| now.duration_since(*t) >= Duration::from_secs(60));
        if due {
            log.insert(key.to_string(), now);
            for f in failures {
                tracing::warn!(
                    rule_group = key,
                    record = %f.record,
                    "rule evaluation failed (logged at most once a minute per group): {}",
                    f.message
                );
            }
        }
    }

    /// Carry group states over to a new set of groups; groups that are gone get stale markers.
    fn reconcile(&self, groups: &[Arc<RuleGroup>], rules: &RulesConfig, now_ms: i64) {
        let mut out = Vec::new();
        {
            let mut states = self.states.lock().unwrap_or_else(|e| e.into_inner());
            let keep: HashMap<String, &RuleGroup> =
                groups.iter().map(|g| (g.key(), &**g)).collect();
            let gone: Vec<String> = states
                .keys()
                .filter(|k| !keep.contains_key(*k))
                .cloned()
                .collect();
            let mut log = self.failure_log.lock().unwrap_or_else(|e| e.into_inner());
            log.retain(|k, _| keep.contains_key(k));
            for k in gone {
                // A removed group's series end here; so do its metric rows.
                let m = &self.metrics;
                let _ = m.evaluations.remove_label_values(&[&k]);
                let _ = m.evaluation_failures.remove_label_values(&[&k]);
                let _ = m.last_duration.remove_label_values(&[&k]);
                let _ = m.last_evaluation.remove_label_values(&[&k]);
                if let Some(s) = states.remove(&k) {
                    if let Some(t) = s.last_eval_ms {
                        s.retire(
                            t.max(now_ms - rules.query_offset.as_millis() as i64),
                            &mut out,
                        );
                    }
                }
            }
            for (k, g) in keep {
                if let Some(s) = states.get_mut(&k) {
                    let t = s.last_eval_ms;
                    s.adopt(g, t, &mut out);
                }
            }
        }
        self.queue(out, rules);
    }

    /// Run every group on its ticks until the process ends. `config` gives the config in force.
    pub async fn run_evaluator<C: InForce>(
        self: Arc<Self>,
        config: impl Fn() -> Arc<C> + Send + Sync + 'static,
        now_ms: impl Fn() -> i64 + Send + Sync + 'static,
    ) {
        let mut next_due: HashMap<String, i64> = HashMap::new();
        let mut seen_groups: Option<Arc<Vec<Arc<RuleGroup>>>> = None;
        let mut last_sweep = Instant::now();
        loop {
            let cfg = config();
            let rules = cfg.rules();
            self.configure(rules);
            let now = now_ms();
            if seen_groups
                .as_ref()
                .is_none_or(|g| !Arc::ptr_eq(g, &rules.groups))
            {
                self.reconcile(&rules.groups, rules, now);
                seen_groups = Some(rules.groups.clone());
                next_due.retain(|k, _| rules.groups.iter().any(|g| &g.key() == k));
            }
            let mut sleep_until = now + 1000;
            for g in rules.groups.iter() {
                let (interval, _) = group::timing(g, rules.evaluation_interval, rules.query_offset);
                let key = g.key();
                let due = *next_due
                    .entry(key.clone())
                    .or_insert_with(|| group::aligned_tick(now, interval) + interval);
                if due <= now {
                    let tick = group::aligned_tick(now, interval);
                    let (rt, g2, cfg2) = (self.clone(), g.clone(), cfg.clone());
                    // A bug in the engine must cost one evaluation, never the evaluator.
                    let done = tokio::task::spawn_blocking(move || {
                        rt.evaluate_group(&g2, cfg2.rules(), tick)
                    })
                    .await;
                    if let Err(e) = done {
                        tracing::error!(rule_group = %key, "rule group evaluation panicked: {e}");
                        self.metrics
                            .evaluation_failures
                            .with_label_values(&[&key])
                            .inc();
                    }
                    next_due.insert(key, tick + interval);
                    sleep_until = sleep_until.min(tick + interval);
                } else {
                    sleep_until = sleep_until.min(due);
                }
            }
            if last_sweep.elapsed() >= SWEEP_EVERY {
                last_sweep = Instant::now();
                let rt = self.clone();
                let _ = tokio::task::spawn_blocking(move || {
                    rt.buffer.sweep(now);
                    rt.metrics.set_buffer(&rt.buffer.stats());
                })
                .await;
            }
            let wait = (sleep_until - now_ms()).clamp(1, 1000);
            tokio::time::sleep(Duration::from_millis(wait as u64)).await;
        }
    }
}

#[cfg(test)]
mod tests;
