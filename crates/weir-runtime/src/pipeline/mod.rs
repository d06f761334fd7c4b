//! The pipeline builder and its execution.
//!
//! A [`Stream`] is a set of parallel *lanes*, each a chain of operators not yet closed. One-to-one
//! operators (`map`, `filter`, `try_map`, `assign_timestamps`, …) extend every lane: they are
//! fused into the task that runs the lane, with no channel in between. `key_by` closes the lanes
//! with a hash exchange and opens new ones, one per downstream subtask, each reading its own
//! bounded channel. A sink closes the lanes for good; every closed lane becomes a tokio task
//! when the pipeline runs.

mod job;
mod stages;
mod stream;

pub use stream::{KeyedStream, Stream, WindowedStream};

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::sync::{mpsc, watch};
use weir_metrics::Metrics;

use crate::checkpoint::{Checkpointing, Part, Shared};
use crate::dead_letter::{DeadLetter, DeadLetters};
use crate::error::{Error, Result};
use crate::metrics::{PipelineMetrics, TaskClock};
use crate::operator::Stage;

/// What a task gets when the pipeline starts it.
struct TaskContext {
    stop: watch::Receiver<bool>,
    clock: TaskClock,
}

type TaskFn = Box<dyn FnOnce(TaskContext) -> BoxFuture<'static, Result<()>> + Send>;

struct Task {
    name: String,
    subtask: usize,
    /// Time the task's terminal stage waited on full channels.
    blocked_ns: Arc<AtomicU64>,
    run: TaskFn,
}

/// A lane whose downstream is not known yet.
struct Lane<T> {
    name: String,
    /// Whether checkpoint barriers flow through it (not on the late side output).
    checkpointed: bool,
    close: Box<dyn FnOnce(Box<dyn Stage<T>>) -> TaskFn + Send>,
}

type DeadLetterSink =
    Box<dyn FnOnce(mpsc::Receiver<Vec<DeadLetter>>) -> BoxFuture<'static, Result<()>> + Send>;

struct Inner {
    tasks: Vec<Task>,
    dead_letter_sink: Option<DeadLetterSink>,
    /// A window sends its late records to a late output ([`WindowedStream::late_records`]).
    late_output: bool,
    /// What is upstream of each `key_by`, in the order they were added.
    key_bys: Vec<Arc<str>>,
}

/// Stops a running pipeline gracefully: sources stop reading, in-flight batches drain, every
/// window fires, sinks flush. A checkpointed pipeline instead takes a savepoint and stops there
/// (windows keep their state for the next start). Cheap to clone.
#[derive(Debug, Clone)]
pub struct StopHandle(Arc<watch::Sender<bool>>);

impl StopHandle {
    /// Requests the stop; [`Pipeline::run`] returns once the job drained.
    pub fn stop(&self) {
        self.0.send_replace(true);
    }
}

/// Starts a checkpoint of a running pipeline now (if none is in flight). Cheap to clone.
#[derive(Debug, Clone)]
pub struct CheckpointHandle(mpsc::UnboundedSender<()>);

impl CheckpointHandle {
    /// Asks the coordinator for a checkpoint.
    pub fn trigger(&self) {
        let _ = self.0.send(());
    }
}

/// Counters a finished job reports. Its `Display` is the summary [`Pipeline::run`] prints on
/// stderr when dead letters or late records went to no output of their own.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct JobReport {
    /// Records sent to the dead-letter output.
    pub dead_letters: u64,
    /// [`JobReport::dead_letters`] per operator that sent them.
    pub dead_letters_by_operator: BTreeMap<String, u64>,
    /// The first dead letters (at most [`FIRST_DEAD_LETTERS`](crate::FIRST_DEAD_LETTERS)), to show what failed.
    pub first_dead_letters: Vec<DeadLetter>,
    /// Whether dead letters went to a dead-letter sink ([`Pipeline::dead_letters`]) rather than
    /// only to `tracing` warnings and this report.
    pub dead_letter_sink: bool,
    /// Records that arrived after their windows' allowed lateness.
    pub late_records: u64,
    /// Whether late records went to a late output ([`WindowedStream::late_records`]) rather
    /// than only being counted.
    pub late_output: bool,
    /// Total time tasks waited on full channels (backpressure).
    pub backpressure: Duration,
}

impl JobReport {
    /// Whether dead letters or late records went nowhere but this report (and `tracing`): then
    /// [`Pipeline::run`] prints the report on stderr.
    pub fn has_untold_losses(&self) -> bool {
        (self.dead_letters > 0 && !self.dead_letter_sink) || (self.late_records > 0 && !self.late_output)
    }
}

/// One line per kind of trouble: dead letters with their counts per operator and the first
/// few (origin, error, payload), late records, backpressure.
impl std::fmt::Display for JobReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} dead letters", self.dead_letters)?;
        if self.dead_letters > 0 {
            let per: Vec<String> =
                self.dead_letters_by_operator.iter().map(|(op, n)| format!("{op}: {n}")).collect();
            write!(f, " ({})", per.join(", "))?;
            if !self.dead_letter_sink {
                f.write_str(", not kept (no dead-letter sink)")?;
            }
            if !self.first_dead_letters.is_empty() {
                f.write_str("; the first:")?;
            }
            for l in &self.first_dead_letters {
                const MAX: usize = 200;
                let payload: String = l.payload.chars().take(MAX).collect();
                let more = if l.payload.chars().count() > MAX { "…" } else { "" };
                write!(f, "\n  {}", l.operator)?;
                if !l.origin.is_empty() {
                    write!(f, " at {}", l.origin)?;
                }
                write!(f, ": {}; payload: {payload:?}{more}", l.error)?;
            }
        }
        write!(f, "\n{} late records", self.late_records)?;
        if self.late_records > 0 && !self.late_output {
            f.write_str(" (their windows had closed; counted only, no late output)")?;
        }
        write!(f, "\nbackpressure: {:.3?}", self.backpressure)
    }
}

/// Settings of a [`Pipeline`]; see [`Pipeline::builder`].
#[derive(Debug, Clone)]
pub struct PipelineBuilder {
    name: String,
    parallelism: usize,
    channel_capacity: usize,
    handle_signals: bool,
    report_on_stderr: bool,
    metrics: Option<Metrics>,
    checkpointing: Option<Checkpointing>,
}

impl PipelineBuilder {
    /// Checkpoints the pipeline as `config` says, and restores the latest checkpoint on start
    /// (see the [`checkpoint`](crate::checkpoint) module for what that guarantees). Default: no checkpoints.
    pub fn checkpointing(mut self, config: Checkpointing) -> Self {
        self.checkpointing = Some(config);
        self
    }

    /// Subtasks per operator. Default: the number of CPUs.
    pub fn parallelism(mut self, n: usize) -> Self {
        self.parallelism = n;
        self
    }

    /// Batches a channel between tasks holds before its sender waits. Default: 8. The
    /// dead-letter output and the late-records outputs are bounded the same way.
    pub fn channel_capacity(mut self, n: usize) -> Self {
        self.channel_capacity = n;
        self
    }

    /// Whether Ctrl-C / SIGTERM stop the job gracefully (sources stop, in-flight batches drain,
    /// windows fire, sinks flush). Default: `false`: a library must not take over its host's
    /// signals (tokio never gives back a signal's default disposition once it listened to it, so
    /// a host that embeds a pipeline would lose Ctrl-C for good). A program whose main job is the
    /// pipeline turns it on; a host stops the job with [`Pipeline::stop_handle`] instead.
    pub fn handle_signals(mut self, yes: bool) -> Self {
        self.handle_signals = yes;
        self
    }

    /// Whether [`Pipeline::run`] prints the [`JobReport`] on stderr when dead letters or late
    /// records went to no output of their own ([`JobReport::has_untold_losses`]). Default:
    /// `true`. Turn it off only when the caller shows the returned report itself (as the
    /// `weir sql` command does), so it is not printed twice.
    pub fn report_on_stderr(mut self, yes: bool) -> Self {
        self.report_on_stderr = yes;
        self
    }

    /// Exports the pipeline's metrics (see the [`metrics`](crate::metrics) module) into `metrics`, the
    /// application's registry. Default: no metrics.
    ///
    /// The runtime serves no HTTP: the program serves the registry, e.g. with
    /// `weir_metrics::serve(metrics.clone(), &ServerConfig::default()).await?`, whose handle
    /// stops the endpoint when dropped.
    pub fn metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Checks the settings and creates the pipeline.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] naming `name`, `parallelism` or `channel_capacity`.
    pub fn build(self) -> Result<Pipeline> {
        if self.name.is_empty() {
            return Err(Error::InvalidConfig { field: "name", reason: "must not be empty".into() });
        }
        if !(1..=1024).contains(&self.parallelism) {
            let reason = format!("{} is not between 1 and 1024", self.parallelism);
            return Err(Error::InvalidConfig { field: "parallelism", reason });
        }
        if self.channel_capacity == 0 {
            return Err(Error::InvalidConfig {
                field: "channel_capacity",
                reason: "must be at least 1".into(),
            });
        }
        if let Some(c) = &self.checkpointing {
            c.validate()?;
        }
        let (dead_letters, dead_rx, dead_count) = DeadLetters::new(self.channel_capacity);
        let checkpoint = self.checkpointing.clone().map(Shared::new);
        let (demand, demand_rx) = mpsc::unbounded_channel();
        let metrics = self.metrics.clone().map(|m| PipelineMetrics::new(m, &self.name));
        Ok(Pipeline {
            metrics,
            settings: self,
            stop: Arc::new(watch::channel(false).0),
            inner: Arc::new(Mutex::new(Inner {
                tasks: Vec::new(),
                dead_letter_sink: None,
                late_output: false,
                key_bys: Vec::new(),
            })),
            dead_letters,
            dead_rx: Some(dead_rx),
            dead_count,
            late_count: Arc::new(AtomicU64::new(0)),
            checkpoint,
            demand,
            demand_rx: Some(demand_rx),
        })
    }
}

/// A dataflow job: sources, operators and sinks, run on tokio.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use weir_runtime::{Count, CollectSink, MemorySource, Pipeline, TumblingWindows, Watermarks};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> weir_runtime::Result<()> {
/// let p = Pipeline::builder("counts").parallelism(2).build()?;
/// let out = CollectSink::new();
/// p.source(MemorySource::new(vec![(1_000i64, 'a'), (1_500, 'b'), (2_500, 'a')]))
///     .assign_timestamps(|e| e.0, Watermarks::monotonic())
///     .key_by(|e| e.1)
///     .window(TumblingWindows::of(Duration::from_secs(1)))
///     .aggregate(Count)
///     .sink(out.clone());
/// p.run().await?;
/// assert_eq!(out.take().len(), 3);
/// # Ok(())
/// # }
/// ```
pub struct Pipeline {
    settings: PipelineBuilder,
    stop: Arc<watch::Sender<bool>>,
    inner: Arc<Mutex<Inner>>,
    dead_letters: DeadLetters,
    dead_rx: Option<mpsc::Receiver<Vec<DeadLetter>>>,
    dead_count: Arc<AtomicU64>,
    late_count: Arc<AtomicU64>,
    metrics: Option<PipelineMetrics>,
    checkpoint: Option<Arc<Shared>>,
    demand: mpsc::UnboundedSender<()>,
    demand_rx: Option<mpsc::UnboundedReceiver<()>>,
}

impl Pipeline {
    /// What is upstream of each [`Stream::key_by`] of the pipeline (its sources and the kinds of
    /// the operators between), in the order they were added: a runner that gives each pipeline
    /// a share of the input by some key (one Kafka partition per pipeline, say) checks with it
    /// that no keyed state depends on another key.
    pub fn key_bys(&self) -> Vec<Arc<str>> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner).key_bys.clone()
    }
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline").field("settings", &self.settings).finish_non_exhaustive()
    }
}

/// Shared by the streams of one pipeline.
#[derive(Clone)]
struct Context {
    inner: Arc<Mutex<Inner>>,
    parallelism: usize,
    channel_capacity: usize,
    dead_letters: DeadLetters,
    late_count: Arc<AtomicU64>,
    metrics: Option<PipelineMetrics>,
    checkpoint: Option<Arc<Shared>>,
}

impl Context {
    /// The checkpoint parts of `lanes` lanes of an operator of `kind`, if the pipeline
    /// checkpoints and the lanes carry barriers.
    fn parts(&self, kind: &str, origin: &str, lanes: usize, checkpointed: bool) -> Vec<Option<Part>> {
        match self.checkpoint.as_ref().filter(|_| checkpointed) {
            Some(shared) => {
                let uid = shared.register(kind, origin, lanes);
                (0..lanes)
                    .map(|subtask| {
                        Some(Part { shared: shared.clone(), uid: uid.clone(), subtask, parallelism: lanes })
                    })
                    .collect()
            }
            None => vec![None; lanes],
        }
    }

    fn add_key_by(&self, upstream: Arc<str>) {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner).key_bys.push(upstream);
    }

    fn add_task(&self, name: String, subtask: usize, blocked_ns: Arc<AtomicU64>, run: TaskFn) {
        let task = Task { name, subtask, blocked_ns, run };
        self.inner.lock().unwrap_or_else(PoisonError::into_inner).tasks.push(task);
    }
}
