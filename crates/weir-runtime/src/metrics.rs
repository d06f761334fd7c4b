//! Pipeline metrics: what a pipeline started with [`PipelineBuilder::metrics`] exports.
//!
//! Labels are `pipeline`, `operator` and `subtask`. An operator's label is its kind (`map`,
//! `window`, …), made unique within the pipeline by a suffix (`map_2`); a task's label is the
//! chain of kinds it runs (`source -> map -> key_by`); the subtask is the lane index.
//!
//! Where it is measured, and the cost:
//! - per operator (in the fused chain, per message): records in/out, dropped records by reason,
//!   the watermark it received, and — after watermarks — the keyed state size and windows fired
//!   of stateful operators. One atomic add per counter per batch; nothing per record.
//! - per task (in the task's loop): busy, backpressured (waiting on a full channel) and idle
//!   (waiting for input) seconds, and the busy time of every batch in a histogram. A task that
//!   waits long flushes its idle time at least every 50 ms.
//! - per sink subtask, per batch: the end-to-end latency (now minus the time the source read the
//!   newest input that led to the batch) and the event-time lag (wall clock minus the newest
//!   event timestamp of the batch), and bytes written; per source subtask, bytes read.
//!
//! [`PipelineBuilder::metrics`]: crate::PipelineBuilder::metrics

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use weir_metrics::catalog::{
    CHECKPOINT_DURATION, CHECKPOINT_FAILURES, CHECKPOINT_LAST_ID, CHECKPOINT_LAST_TIME, CHECKPOINT_SIZE,
    CHECKPOINTS_COMPLETED, KEYED_STATE_BYTES, KEYED_STATE_KEYS, OPERATOR_BATCH_DURATION, OPERATOR_BYTES_IN,
    OPERATOR_BYTES_OUT, OPERATOR_DROPPED, OPERATOR_RECORDS_IN, OPERATOR_RECORDS_OUT, OPERATOR_WATERMARK,
    PIPELINE_EVENT_TIME_LAG, PIPELINE_LATENCY, TASK_BACKPRESSURED, TASK_BUSY, TASK_IDLE, WINDOWS_FIRED,
    WINDOWS_OPEN,
};
use weir_metrics::{Gauge, Histogram, IntCounter, Metrics};

use crate::batch::Timestamp;
use crate::operator::StateStats;

/// The metrics of one pipeline: the registry, the pipeline's name and the operator names
/// handed out so far.
#[derive(Clone)]
pub(crate) struct PipelineMetrics {
    metrics: Metrics,
    pipeline: Arc<str>,
    names: Arc<Mutex<HashMap<String, usize>>>,
}

impl PipelineMetrics {
    pub(crate) fn new(metrics: Metrics, pipeline: &str) -> Self {
        PipelineMetrics { metrics, pipeline: pipeline.into(), names: Arc::default() }
    }

    /// The registry and the pipeline's name.
    pub(crate) fn registry(&self) -> (&Metrics, &str) {
        (&self.metrics, &self.pipeline)
    }

    /// `kind`, or `kind_N` if the pipeline already has `N - 1` operators of that kind.
    pub(crate) fn unique_name(&self, kind: &str) -> String {
        let mut names = self.names.lock().unwrap_or_else(PoisonError::into_inner);
        let n = names.entry(kind.to_owned()).or_insert(0);
        *n += 1;
        if *n == 1 { kind.to_owned() } else { format!("{kind}_{n}") }
    }

    pub(crate) fn operator(&self, name: &str, subtask: usize, stateful: bool) -> OperatorMetrics {
        let m = &self.metrics;
        let s = subtask.to_string();
        let labels = [&*self.pipeline, name, &s];
        let (late, dead) = drop_reasons(name);
        let reason = |yes: bool, r| yes.then(|| m.counter(&OPERATOR_DROPPED, [&*self.pipeline, name, &s, r]));
        OperatorMetrics {
            records_in: m.counter(&OPERATOR_RECORDS_IN, labels),
            records_out: m.counter(&OPERATOR_RECORDS_OUT, labels),
            dropped: [reason(late, "late"), reason(dead, "dead_letter")],
            watermark: m.gauge(&OPERATOR_WATERMARK, labels),
            state: stateful.then(|| StateMetrics {
                keys: m.gauge(&KEYED_STATE_KEYS, labels),
                bytes: m.gauge(&KEYED_STATE_BYTES, labels),
                windows: m.gauge(&WINDOWS_OPEN, labels),
                fired: m.counter(&WINDOWS_FIRED, labels),
            }),
        }
    }

    pub(crate) fn task(&self, name: &str, subtask: usize) -> TaskMetrics {
        let m = &self.metrics;
        let s = subtask.to_string();
        let name = task_label(name);
        let labels = [&*self.pipeline, name.as_str(), &s];
        TaskMetrics {
            busy: m.float_counter(&TASK_BUSY, labels),
            backpressured: m.float_counter(&TASK_BACKPRESSURED, labels),
            idle: m.float_counter(&TASK_IDLE, labels),
            batch: m.histogram(&OPERATOR_BATCH_DURATION, labels),
        }
    }

    pub(crate) fn sink(&self, name: &str, subtask: usize) -> SinkMetrics {
        let m = &self.metrics;
        let s = subtask.to_string();
        let labels = [&*self.pipeline, name, &s];
        SinkMetrics {
            records_in: m.counter(&OPERATOR_RECORDS_IN, labels),
            bytes_out: m.counter(&OPERATOR_BYTES_OUT, labels),
            latency: m.histogram(&PIPELINE_LATENCY, [&*self.pipeline]),
            lag: m.histogram(&PIPELINE_EVENT_TIME_LAG, [&*self.pipeline]),
            bytes_seen: 0,
        }
    }

    pub(crate) fn checkpoints(&self) -> CheckpointMetrics {
        let m = &self.metrics;
        let labels = [&*self.pipeline];
        CheckpointMetrics {
            duration: m.histogram(&CHECKPOINT_DURATION, labels),
            size: m.histogram(&CHECKPOINT_SIZE, labels),
            completed: m.counter(&CHECKPOINTS_COMPLETED, labels),
            failed: m.counter(&CHECKPOINT_FAILURES, labels),
            last_id: m.gauge(&CHECKPOINT_LAST_ID, labels),
            last_time: m.gauge(&CHECKPOINT_LAST_TIME, labels),
        }
    }

    pub(crate) fn source(&self, name: &str, subtask: usize) -> SourceMetrics {
        let m = &self.metrics;
        let s = subtask.to_string();
        let labels = [&*self.pipeline, name, &s];
        SourceMetrics {
            records_out: m.counter(&OPERATOR_RECORDS_OUT, labels),
            bytes_in: m.counter(&OPERATOR_BYTES_IN, labels),
            bytes_seen: 0,
        }
    }
}

/// Whether an operator labelled `label` (`kind` or `kind_N`) can drop late records and send
/// dead letters: the built-in one-to-one operators can do neither, `try_map` only the second, a
/// window only the first; any other operator (a user's) may do both. No series is exported that
/// could never change.
fn drop_reasons(label: &str) -> (bool, bool) {
    let kind = match label.rsplit_once('_') {
        Some((kind, n)) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => kind,
        _ => label,
    };
    match kind {
        "map" | "filter" | "flat_map" | "inspect" | "assign_timestamps" | "assign_processing_time" => {
            (false, false)
        }
        "try_map" => (false, true),
        "window" => (true, false),
        _ => (true, true),
    }
}

/// A task's label: its chain of operator kinds, without the source's and sink's paths or
/// topics (`source file:/var/log/a.log -> map -> key_by` becomes `source -> map -> key_by`), so
/// the label stays short and does not change with an input's name.
fn task_label(task: &str) -> String {
    task.split(" -> ")
        .map(|part| match part.split_once(' ') {
            Some((kind @ ("source" | "sink"), _)) => kind,
            _ => part,
        })
        .collect::<Vec<_>>()
        .join(" -> ")
}

struct StateMetrics {
    keys: Gauge,
    bytes: Gauge,
    windows: Gauge,
    fired: IntCounter,
}

/// One operator of one subtask.
pub(crate) struct OperatorMetrics {
    records_in: IntCounter,
    records_out: IntCounter,
    /// By [`DropReason`](crate::DropReason): `None` where the operator cannot drop so.
    dropped: [Option<IntCounter>; 2],
    watermark: Gauge,
    state: Option<StateMetrics>,
}

impl OperatorMetrics {
    /// Counts one message's records.
    pub(crate) fn record(&self, records_in: usize, records_out: usize, dropped: [u64; 2]) {
        add(&self.records_in, records_in as u64);
        add(&self.records_out, records_out as u64);
        for (counter, n) in self.dropped.iter().zip(dropped) {
            if let Some(counter) = counter {
                add(counter, n);
            }
        }
    }

    /// After every message: the watermark (if one passed) and the state size, so the state
    /// gauges show the current state also when no watermark follows a burst of data.
    pub(crate) fn watermark(&self, watermark: Option<Timestamp>, stats: Option<StateStats>) {
        if let Some(w) = watermark.filter(|w| *w != Timestamp::MAX && *w != Timestamp::MIN) {
            self.watermark.set(w as f64 / 1000.0);
        }
        if let (Some(m), Some(s)) = (&self.state, stats) {
            m.keys.set(s.keys as f64);
            m.bytes.set(s.bytes as f64);
            m.windows.set(s.windows as f64);
            let before = m.fired.get();
            add(&m.fired, s.fired.saturating_sub(before));
        }
    }
}

fn add(counter: &IntCounter, n: u64) {
    if n > 0 {
        counter.inc_by(n);
    }
}

/// The time accounts of one task.
pub(crate) struct TaskMetrics {
    busy: weir_metrics::Counter,
    backpressured: weir_metrics::Counter,
    idle: weir_metrics::Counter,
    batch: Histogram,
}

/// Splits a task's time into idle (waiting for input), busy and backpressured (waiting on a
/// full channel: the terminal stage adds to `blocked_ns`).
pub(crate) struct TaskClock {
    metrics: Option<TaskMetrics>,
    blocked_ns: Arc<AtomicU64>,
    blocked_seen: u64,
}

impl TaskClock {
    pub(crate) fn new(metrics: Option<TaskMetrics>, blocked_ns: Arc<AtomicU64>) -> Self {
        TaskClock { metrics, blocked_ns, blocked_seen: 0 }
    }

    /// The task waited `d` for input.
    pub(crate) fn idle(&self, d: Duration) {
        if let Some(m) = &self.metrics {
            m.idle.inc_by(d.as_secs_f64());
        }
    }

    /// The task handed a message down its chain, which took `d` from `start`; `batch` if it
    /// was a data batch.
    pub(crate) fn pushed(&mut self, start: Instant, batch: bool) {
        let Some(m) = &self.metrics else { return };
        let d = start.elapsed();
        let blocked_total = self.blocked_ns.load(Ordering::Relaxed);
        let blocked = Duration::from_nanos(blocked_total.saturating_sub(self.blocked_seen)).min(d);
        self.blocked_seen = blocked_total;
        let busy = d - blocked;
        m.busy.inc_by(busy.as_secs_f64());
        if !blocked.is_zero() {
            m.backpressured.inc_by(blocked.as_secs_f64());
        }
        if batch {
            m.batch.observe(busy.as_secs_f64());
        }
    }

    /// Whether metrics are on (callers skip taking the time otherwise).
    pub(crate) fn enabled(&self) -> bool {
        self.metrics.is_some()
    }
}

/// One sink subtask.
pub(crate) struct SinkMetrics {
    records_in: IntCounter,
    bytes_out: IntCounter,
    latency: Histogram,
    lag: Histogram,
    bytes_seen: u64,
}

impl SinkMetrics {
    /// A batch of `records` was written; `bytes_written` is the writer's running total.
    pub(crate) fn wrote(
        &mut self,
        records: usize,
        newest: Option<Timestamp>,
        read_at: Option<Instant>,
        bytes_written: u64,
    ) {
        add(&self.records_in, records as u64);
        add(&self.bytes_out, bytes_written.saturating_sub(self.bytes_seen));
        self.bytes_seen = self.bytes_seen.max(bytes_written);
        if let Some(at) = read_at {
            self.latency.observe(at.elapsed().as_secs_f64());
        }
        if let Some(ts) = newest {
            let lag_ms = crate::time::now_ms().saturating_sub(ts);
            self.lag.observe(lag_ms as f64 / 1000.0);
        }
    }
}

/// One source subtask.
pub(crate) struct SourceMetrics {
    records_out: IntCounter,
    bytes_in: IntCounter,
    bytes_seen: u64,
}

impl SourceMetrics {
    /// The reader returned a batch of `records`; `bytes_read` is its running total.
    pub(crate) fn read(&mut self, records: usize, bytes_read: u64) {
        add(&self.records_out, records as u64);
        add(&self.bytes_in, bytes_read.saturating_sub(self.bytes_seen));
        self.bytes_seen = self.bytes_seen.max(bytes_read);
    }
}

/// A pipeline's checkpoints (updated by the coordinator).
pub(crate) struct CheckpointMetrics {
    duration: Histogram,
    size: Histogram,
    completed: IntCounter,
    pub(crate) failed: IntCounter,
    last_id: Gauge,
    last_time: Gauge,
}

impl CheckpointMetrics {
    /// The pipeline restored checkpoint `id`, completed at `at_ms`: the last completed one.
    pub(crate) fn restored(&self, id: u64, at_ms: i64) {
        self.last_id.set(id as f64);
        self.last_time.set(at_ms as f64 / 1000.0);
    }

    pub(crate) fn completed(&self, id: u64, took: Duration, bytes: u64, at_ms: i64) {
        self.duration.observe(took.as_secs_f64());
        self.size.observe(bytes as f64);
        self.completed.inc();
        self.last_id.set(id as f64);
        self.last_time.set(at_ms as f64 / 1000.0);
    }
}

#[cfg(test)]
mod tests {
    use super::task_label;

    #[test]
    fn task_labels_drop_paths() {
        assert_eq!(task_label("source file:/tmp/a b.log -> map -> key_by"), "source -> map -> key_by");
        assert_eq!(task_label("keyed -> window -> sink file:out/x.jsonl"), "keyed -> window -> sink");
        assert_eq!(task_label("keyed (left) -> fork"), "keyed (left) -> fork");
    }
}
