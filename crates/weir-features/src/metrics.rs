//! Prometheus metrics of feature views, exported into the pipeline's registry.
//!
//! [`FeatureView::attach`](crate::FeatureView::attach) on a pipeline built with
//! [`PipelineBuilder::metrics`](weir_runtime::PipelineBuilder::metrics) exports them, labelled
//! with the pipeline's name and the view's; a view added otherwise (a [`FeatureOperator`] of
//! one's own) exports them with [`FeatureLookup::register_metrics`]. The names are in
//! `weir_metrics::catalog`:
//!
//! | metric | what | labels |
//! |---|---|---|
//! | `weir_feature_lookup_duration_seconds` | histogram: one `lookup`, `lookup_at` or `lookup_many` call (`path="inprocess"`), one `GET /features` request from its arrival to its JSON body (`path="http"`) | `pipeline`, `view`, `path` |
//! | `weir_feature_freshness_seconds` | histogram: from the log appending a batch's newest event (on a topic that keeps append times), else from the source reading it (its arrival at the operator if the batch carries no read time), to the batch being servable | `pipeline`, `view` |
//! | `weir_feature_entities` | gauge: entities with state, after every batch and watermark | `pipeline`, `view`, `subtask` |
//! | `weir_feature_state_bytes` | gauge: approximate bytes of state, sampled by every checkpoint and between them at most every [`STATE_BYTES_INTERVAL`] | `pipeline`, `view`, `subtask` |
//! | `weir_feature_late_events_total` | counter: events dropped as late | `pipeline`, `view` |
//!
//! Cost: a lookup reads one `OnceLock` and, with metrics on, the monotonic clock twice and
//! adds to a histogram with atomics (no lock, no allocation); a batch adds one observation and
//! sets a gauge. The state's bytes cost a walk over the subtask's entities, so they are sampled:
//! by every checkpoint, in the pass that saves the entities, and between checkpoints by the
//! first batch or watermark after [`STATE_BYTES_INTERVAL`] (or the first to find entities in
//! a state sampled empty; under the read lock: lookups go on). The operator's `weir_keyed_state_bytes` shows the same sample.
//!
//! [`FeatureOperator`]: crate::FeatureOperator
//! [`FeatureLookup::register_metrics`]: crate::FeatureLookup::register_metrics

use std::time::{Duration, Instant};

use weir_metrics::catalog::{
    FEATURE_ENTITIES, FEATURE_FRESHNESS, FEATURE_LATE_EVENTS, FEATURE_LOOKUP_DURATION, FEATURE_STATE_BYTES,
};
use weir_metrics::{Gauge, Histogram, IntCounter, Metrics};

/// The longest a subtask's `weir_feature_state_bytes` goes without a new sample while the
/// subtask handles messages.
pub const STATE_BYTES_INTERVAL: Duration = Duration::from_secs(10);

/// How a lookup came.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Path {
    /// A call of the Rust API.
    InProcess,
    /// A request to the HTTP server.
    #[cfg_attr(not(feature = "http"), allow(dead_code))]
    Http,
}

/// The metrics of one view, shared by its lookups and operator subtasks.
pub(crate) struct ViewMetrics {
    metrics: Metrics,
    pipeline: String,
    view: String,
    inprocess: Histogram,
    http: Histogram,
    freshness: Histogram,
    late: IntCounter,
}

impl ViewMetrics {
    pub(crate) fn new(metrics: &Metrics, pipeline: &str, view: &str) -> Self {
        let lookup = |path| metrics.histogram(&FEATURE_LOOKUP_DURATION, [pipeline, view, path]);
        ViewMetrics {
            metrics: metrics.clone(),
            pipeline: pipeline.to_owned(),
            view: view.to_owned(),
            inprocess: lookup("inprocess"),
            http: lookup("http"),
            freshness: metrics.histogram(&FEATURE_FRESHNESS, [pipeline, view]),
            late: metrics.counter(&FEATURE_LATE_EVENTS, [pipeline, view]),
        }
    }

    /// A lookup by `path` took `took`.
    pub(crate) fn lookup(&self, path: Path, took: Duration) {
        let h = match path {
            Path::InProcess => &self.inprocess,
            Path::Http => &self.http,
        };
        h.observe(took.as_secs_f64());
    }

    /// The handles of operator subtask `subtask`.
    pub(crate) fn subtask(&self, subtask: usize) -> SubtaskMetrics {
        let s = subtask.to_string();
        let labels = [self.pipeline.as_str(), self.view.as_str(), s.as_str()];
        SubtaskMetrics {
            entities: self.metrics.gauge(&FEATURE_ENTITIES, labels),
            state_bytes: self.metrics.gauge(&FEATURE_STATE_BYTES, labels),
            freshness: self.freshness.clone(),
            late: self.late.clone(),
            sampled_at: None,
            bytes: 0,
        }
    }
}

/// Runs `f`, a lookup by `path`, and observes how long it took if `metrics` are on.
pub(crate) fn timed<R>(metrics: Option<&ViewMetrics>, path: Path, f: impl FnOnce() -> R) -> R {
    let Some(m) = metrics else { return f() };
    let start = Instant::now();
    let r = f();
    m.lookup(path, start.elapsed());
    r
}

/// The metrics of one operator subtask.
pub(crate) struct SubtaskMetrics {
    entities: Gauge,
    state_bytes: Gauge,
    freshness: Histogram,
    late: IntCounter,
    /// When the state's bytes were last sampled.
    sampled_at: Option<Instant>,
    /// The last sample.
    bytes: u64,
}

impl SubtaskMetrics {
    /// A batch was applied: its events are servable `after` their arrival; `late` of them were
    /// dropped, `applied` applied.
    pub(crate) fn applied(&self, after: Duration, applied: usize, late: usize) {
        if applied > 0 {
            self.freshness.observe(after.as_secs_f64());
        }
        if late > 0 {
            self.late.inc_by(late as u64);
        }
    }

    /// The state has `n` entities.
    pub(crate) fn entities(&self, n: usize) {
        self.entities.set(n as f64);
    }

    /// Whether the state's bytes are due for a sample, the state holding `entities`: never
    /// sampled, sampled empty and no longer empty, or sampled [`STATE_BYTES_INTERVAL`] ago.
    pub(crate) fn sample_due(&self, entities: usize) -> bool {
        match self.sampled_at {
            None => true,
            Some(_) if self.bytes == 0 && entities > 0 => true,
            Some(at) => at.elapsed() >= STATE_BYTES_INTERVAL,
        }
    }

    /// The state holds `bytes` (a sample: computing it walks every entity) in `entities`.
    pub(crate) fn sampled(&mut self, bytes: usize, entities: usize) {
        self.bytes = bytes as u64;
        self.sampled_at = Some(Instant::now());
        self.state_bytes.set(bytes as f64);
        self.entities(entities);
    }

    /// The last sample of the state's bytes.
    pub(crate) fn bytes(&self) -> u64 {
        self.bytes
    }
}
