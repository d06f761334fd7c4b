//! The pipeline builder and its execution.
//!
//! A [`Stream`] is a set of parallel *lanes*, each a chain of operators not yet closed. One-to-one
//! operators (`map`, `filter`, `try_map`, `assign_timestamps`, …) extend every lane: they are
//! fused into the task that runs the lane, with no channel in between. `key_by` closes the lanes
//! with a hash exchange and opens new ones, one per downstream subtask, each reading its own
//! bounded channel. A sink closes the lanes for good; every closed lane becomes a tokio task
//! when the pipeline runs.

use std::collections::BTreeMap;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use weir_metrics::{Metrics, ServerConfig};

use crate::aggregate::Aggregator;
use crate::batch::{Batch, Message, Timestamp};
use crate::checkpoint::{
    AckOf, Checkpointing, Committer, Coordinator, Part, PartSnapshot, PositionCommitter, Shared,
    SplitPositions, Trigger,
};
use crate::dead_letter::{DeadLetter, DeadLetters, Traceable};
use crate::error::{Error, Result};
use crate::exchange::{ExchangeStage, Inputs, KeyPartitioner, Partitioner};
use crate::metrics::{PipelineMetrics, SinkMetrics, SourceMetrics, TaskClock};
use crate::operator::{OpStage, Operator, Stage};
use crate::ops::{Filter, FlatMap, Inspect, Map, TryMap};
use crate::sink::{Sink, SinkWriter};
use crate::source::{Source, SourceReader};
use crate::time::{AssignTimestamps, Watermarks};
use crate::window::{LateRecords, WindowOperator, WindowResult, WindowSpec};

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
    Box<dyn FnOnce(mpsc::UnboundedReceiver<Vec<DeadLetter>>) -> BoxFuture<'static, Result<()>> + Send>;

struct Inner {
    tasks: Vec<Task>,
    dead_letter_sink: Option<DeadLetterSink>,
    /// A window sends its late records to a late output ([`WindowedStream::late_records`]).
    late_output: bool,
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
    serve_metrics: Option<ServerConfig>,
    checkpointing: Option<Checkpointing>,
}

impl PipelineBuilder {
    /// Checkpoints the pipeline as `config` says, and restores the latest checkpoint on start
    /// (see the `checkpoint` module for what that guarantees). Default: no checkpoints.
    pub fn checkpointing(mut self, config: Checkpointing) -> Self {
        self.checkpointing = Some(config);
        self
    }

    /// Subtasks per operator. Default: the number of CPUs.
    pub fn parallelism(mut self, n: usize) -> Self {
        self.parallelism = n;
        self
    }

    /// Batches a channel between tasks holds before its sender waits. Default: 8.
    pub fn channel_capacity(mut self, n: usize) -> Self {
        self.channel_capacity = n;
        self
    }

    /// Whether Ctrl-C / SIGTERM stop the job gracefully (sources stop, in-flight batches drain,
    /// windows fire, sinks flush). Default: `true`.
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

    /// Exports the pipeline's metrics (see the `metrics` module) into `metrics`, the
    /// application's registry. Default: no metrics.
    pub fn metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Serves the metrics at `GET /metrics` (and `GET /healthz`) while the pipeline runs, as
    /// `config` says (default `127.0.0.1:9898`). Implies [`PipelineBuilder::metrics`] with a new
    /// registry if none was given.
    pub fn serve_metrics(mut self, config: ServerConfig) -> Self {
        self.serve_metrics = Some(config);
        self.metrics.get_or_insert_with(Metrics::new);
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
        let (dead_letters, dead_rx, dead_count) = DeadLetters::new();
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
    dead_rx: Option<mpsc::UnboundedReceiver<Vec<DeadLetter>>>,
    dead_count: Arc<AtomicU64>,
    late_count: Arc<AtomicU64>,
    metrics: Option<PipelineMetrics>,
    checkpoint: Option<Arc<Shared>>,
    demand: mpsc::UnboundedSender<()>,
    demand_rx: Option<mpsc::UnboundedReceiver<()>>,
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

    fn add_task(&self, name: String, subtask: usize, blocked_ns: Arc<AtomicU64>, run: TaskFn) {
        let task = Task { name, subtask, blocked_ns, run };
        self.inner.lock().unwrap_or_else(PoisonError::into_inner).tasks.push(task);
    }
}

impl Pipeline {
    /// Starts configuring a pipeline called `name`.
    pub fn builder(name: impl Into<String>) -> PipelineBuilder {
        PipelineBuilder {
            name: name.into(),
            parallelism: std::thread::available_parallelism().map_or(1, |n| n.get()),
            channel_capacity: 8,
            handle_signals: true,
            report_on_stderr: true,
            metrics: None,
            serve_metrics: None,
            checkpointing: None,
        }
    }

    /// The pipeline's name.
    pub fn name(&self) -> &str {
        &self.settings.name
    }

    /// A handle that stops the running job gracefully, as Ctrl-C does.
    pub fn stop_handle(&self) -> StopHandle {
        StopHandle(self.stop.clone())
    }

    /// Derives the default checkpoint ids (see [`Stream::uid`]) of the operators, sources and
    /// sinks added from now on from `scope` as well, until it is set again (`None`: no scope).
    /// Streaming SQL scopes each statement by its sink's name, so two statements reading the
    /// same source keep their own state and positions whatever their order in the script.
    pub fn set_uid_scope(&self, scope: Option<&str>) {
        if let Some(shared) = &self.checkpoint {
            *shared.scope.lock().unwrap_or_else(PoisonError::into_inner) = scope.map(str::to_owned);
        }
    }

    /// A handle that starts a checkpoint on demand (ignored without
    /// [`PipelineBuilder::checkpointing`]).
    pub fn checkpoint_handle(&self) -> CheckpointHandle {
        CheckpointHandle(self.demand.clone())
    }

    fn context(&self) -> Context {
        Context {
            inner: self.inner.clone(),
            parallelism: self.settings.parallelism,
            channel_capacity: self.settings.channel_capacity,
            dead_letters: self.dead_letters.clone(),
            late_count: self.late_count.clone(),
            metrics: self.metrics.clone(),
            checkpoint: self.checkpoint.clone(),
        }
    }

    /// Adds a source; its readers run at the pipeline's parallelism.
    pub fn source<S: Source>(&self, source: S) -> Stream<S::Item> {
        let ctx = self.context();
        let source = Arc::new(source);
        let parallelism = ctx.parallelism;
        let label = ctx.metrics.as_ref().map(|m| m.unique_name("source"));
        let origin: Arc<str> = format!("source:{}", source.name()).into();
        let parts = ctx.parts("source", &origin, parallelism, true);
        let made_by = parts.first().and_then(|p| p.as_ref()).map(|p| p.uid.clone());
        if let (Some(shared), Some(Some(part))) = (&ctx.checkpoint, parts.first()) {
            let committer: Arc<dyn PositionCommitter> = Arc::new(SourceCommitter(source.clone()));
            shared.sources.lock().unwrap_or_else(PoisonError::into_inner).push((part.uid.clone(), committer));
        }
        let lanes = parts
            .into_iter()
            .enumerate()
            .map(|(subtask, part)| {
                let source = source.clone();
                let name = format!("source {}", source.name());
                let metrics = ctx.metrics.as_ref().zip(label.as_deref()).map(|(m, l)| m.source(l, subtask));
                Lane {
                    name,
                    checkpointed: true,
                    close: Box::new(move |mut head: Box<dyn Stage<S::Item>>| -> TaskFn {
                        Box::new(move |ctx: TaskContext| {
                            Box::pin(async move {
                                let reader = match &part {
                                    Some(part) => {
                                        let restored =
                                            part.shared.restored_parts(&part.uid()).unwrap_or_default();
                                        let positions = SplitPositions::from_parts(restored);
                                        source.reader_at(subtask, parallelism, &positions)?
                                    }
                                    None => source.reader(subtask, parallelism)?,
                                };
                                run_source(reader, &mut *head, ctx, metrics, part).await
                            })
                        })
                    }),
                }
            })
            .collect();
        Stream { ctx, lanes, origin, made_by }
    }

    /// Sends dead letters to `sink` (one writer) instead of logging them as warnings.
    pub fn dead_letters<S: Sink<DeadLetter>>(&self, sink: S) {
        let drain: DeadLetterSink = Box::new(move |mut rx| {
            Box::pin(async move {
                let mut writer = sink.writer(0, 1)?;
                while let Some(letters) = rx.recv().await {
                    writer.write_batch(Batch::new(letters)).await?;
                }
                writer.finish().await
            })
        });
        self.inner.lock().unwrap_or_else(PoisonError::into_inner).dead_letter_sink = Some(drain);
    }

    /// Runs every task until the sources are exhausted (or the job is stopped by Ctrl-C/SIGTERM)
    /// and every sink finished.
    ///
    /// When dead letters went to no dead-letter sink, or late records to no late output, the
    /// [`JobReport`] is printed on stderr at the end (also when the job fails), so they are
    /// visible without a `tracing` subscriber. Writing it never fails the job.
    ///
    /// # Errors
    ///
    /// The first task error: a connector's [`Error::Connector`], or [`Error::Panicked`] naming
    /// the operators of a task whose user code panicked. The other tasks are stopped.
    pub async fn run(self) -> Result<JobReport> {
        let (report, result) = self.run_with_report().await;
        result.map(|()| report)
    }

    /// Runs like [`Pipeline::run`], and returns the [`JobReport`] also when the job fails: then
    /// it counts the dead letters and late records up to the failure (all zero if the job
    /// failed before it started, e.g. a refused restore). For a caller that shows the report
    /// itself (see [`PipelineBuilder::report_on_stderr`]) whatever the outcome.
    pub async fn run_with_report(mut self) -> (JobReport, Result<()>) {
        let (tasks, dead_sink, late_output) = {
            let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
            (std::mem::take(&mut inner.tasks), inner.dead_letter_sink.take(), inner.late_output)
        };
        let dead_letter_sink = dead_sink.is_some();
        // Failures before the job starts: nothing was counted yet.
        let not_started = |e: Error| (JobReport::default(), Err(e));
        if tasks.is_empty() {
            return not_started(Error::InvalidConfig {
                field: "sinks",
                reason: "the pipeline has no sink".into(),
            });
        }
        let server = match (&self.settings.serve_metrics, &self.settings.metrics) {
            (Some(config), Some(metrics)) => match weir_metrics::serve(metrics.clone(), config).await {
                Ok(server) => Some(server),
                Err(weir_metrics::Error::InvalidConfig { field, reason }) => {
                    return not_started(Error::InvalidConfig { field, reason });
                }
                Err(other) => return not_started(Error::Metrics(other.to_string())),
            },
            _ => None,
        };
        let stop_tx = self.stop.clone();
        let stop_rx = stop_tx.subscribe();
        // Restore before any task starts: tasks read the restored state as they start.
        let mut coordinator = match &self.checkpoint {
            Some(shared) => {
                let metrics = self.metrics.as_ref().map(PipelineMetrics::checkpoints);
                let c = Coordinator::restore(
                    shared.clone(),
                    &self.settings.name,
                    self.settings.parallelism,
                    metrics,
                );
                let demand = self.demand_rx.take().unwrap_or_else(|| mpsc::unbounded_channel().1);
                match c.await {
                    Ok(c) => Some(tokio::spawn(c.run(stop_rx.clone(), demand))),
                    Err(e) => return not_started(e),
                }
            }
            None => None,
        };
        let mut set = JoinSet::new();
        let mut names = std::collections::HashMap::new();
        let mut blocked = Vec::with_capacity(tasks.len());
        let dead_rx = self.dead_rx.take();
        for task in tasks {
            let metrics = self.metrics.as_ref().map(|m| m.task(&task.name, task.subtask));
            let clock = TaskClock::new(metrics, task.blocked_ns.clone());
            blocked.push(task.blocked_ns);
            let handle = set.spawn((task.run)(TaskContext { stop: stop_rx.clone(), clock }));
            names.insert(handle.id(), task.name);
        }
        // The operators hold the senders now; the channel closes when they finish.
        let tally = self.dead_letters.tally();
        drop(std::mem::replace(&mut self.dead_letters, DeadLetters::new().0));
        let dead_task = tokio::spawn(drain_dead_letters(dead_rx, dead_sink));
        let name = self.settings.name.clone();
        tracing::info!(pipeline = %name, parallelism = self.settings.parallelism, tasks = names.len(), "pipeline started");

        let mut signal = std::pin::pin!(shutdown_signal());
        let mut listening = self.settings.handle_signals;
        let mut first_error: Option<Error> = None;
        let mut coordinator_result = None;
        loop {
            let joined = tokio::select! {
                joined = set.join_next_with_id() => joined,
                // A coordinator that fails (a complete checkpoint could not be committed) fails
                // the job; one that ends fine has seen every part end.
                done = async { coordinator.as_mut()?.await.ok() }, if coordinator.is_some() && coordinator_result.is_none() => {
                    match done {
                        Some(Err(e)) => {
                            tracing::error!(pipeline = %name, error = %e, "checkpoint coordinator failed");
                            first_error.get_or_insert(e);
                            set.abort_all();
                            coordinator_result = Some(Ok(()));
                        }
                        Some(Ok(())) => coordinator_result = Some(Ok(())),
                        None => coordinator_result = Some(Err(Error::Panicked {
                            operator: "checkpoint coordinator".into(),
                            message: "the coordinator task ended abnormally".into(),
                        })),
                    }
                    continue;
                }
                () = &mut signal, if listening => {
                    tracing::info!(pipeline = %name, "stop requested; draining");
                    listening = false;
                    let _ = stop_tx.send(true);
                    continue;
                }
            };
            let Some(joined) = joined else { break };
            let (id, error) = match joined {
                Ok((_, Ok(()))) => continue,
                Ok((id, Err(e))) => (id, e),
                Err(e) => {
                    let id = e.id();
                    if e.is_cancelled() {
                        (id, Error::Cancelled)
                    } else {
                        let operator = names.get(&id).cloned().unwrap_or_default();
                        (id, Error::Panicked { operator, message: panic_message(e.into_panic()) })
                    }
                }
            };
            // Tasks cancelled because another failed report `Cancelled`; keep the cause.
            if !matches!(error, Error::Cancelled) {
                let task = names.get(&id).map_or("", String::as_str);
                tracing::error!(pipeline = %name, task, error = %error, "task failed");
            }
            if first_error.as_ref().is_none_or(|e| matches!(e, Error::Cancelled)) {
                first_error = Some(error);
            }
            set.abort_all();
        }
        let checkpoints = match (coordinator, coordinator_result) {
            (_, Some(result)) => result,
            (Some(c), None) if first_error.is_some() => {
                c.abort();
                Ok(())
            }
            (Some(c), None) => c.await.unwrap_or_else(|e| {
                Err(Error::Panicked { operator: "checkpoint coordinator".into(), message: e.to_string() })
            }),
            (None, None) => Ok(()),
        };
        let dead = dead_task.await;
        if let Some(server) = server {
            server.shutdown().await;
        }
        let tally = std::mem::take(&mut *tally.lock().unwrap_or_else(PoisonError::into_inner));
        let report = JobReport {
            dead_letters: self.dead_count.load(Ordering::Relaxed),
            dead_letters_by_operator: tally.by_operator,
            first_dead_letters: tally.first,
            dead_letter_sink,
            late_records: self.late_count.load(Ordering::Relaxed),
            late_output,
            backpressure: Duration::from_nanos(blocked.iter().map(|b| b.load(Ordering::Relaxed)).sum()),
        };
        if report.has_untold_losses() && self.settings.report_on_stderr {
            use std::io::Write as _;
            // A closed or full stderr must not fail (or panic) the job: the error is ignored.
            let _ = writeln!(std::io::stderr().lock(), "weir: pipeline {name}: {report}");
        }
        let result = match (first_error, checkpoints, dead) {
            (Some(e), _, _) | (None, Err(e), _) | (None, Ok(()), Ok(Err(e))) => Err(e),
            (None, Ok(()), Err(e)) => {
                Err(Error::Panicked { operator: "dead letters".into(), message: e.to_string() })
            }
            (None, Ok(()), Ok(Ok(()))) => Ok(()),
        };
        (report, result)
    }
}

async fn drain_dead_letters(
    rx: Option<mpsc::UnboundedReceiver<Vec<DeadLetter>>>,
    sink: Option<DeadLetterSink>,
) -> Result<()> {
    let Some(mut rx) = rx else { return Ok(()) };
    match sink {
        Some(drain) => drain(rx).await,
        None => {
            while let Some(letters) = rx.recv().await {
                for l in letters {
                    tracing::warn!(
                        operator = l.operator,
                        origin = l.origin,
                        error = l.error,
                        payload = l.payload,
                        "dead letter"
                    );
                }
            }
            Ok(())
        }
    }
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let term = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            () = term => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".to_owned())
}

/// How often a silent source subtask sends [`Message::Idle`] down its chain, so that
/// `assign_timestamps` can tell when its splits went idle without waiting for a batch.
const IDLE_TICK: Duration = Duration::from_millis(50);

/// Runs a source subtask: reads batches into the chain until the source is exhausted or the job
/// stops, then ends the stream with the final watermark. While the reader has nothing, the chain
/// gets `Idle` every [`IDLE_TICK`].
///
/// In a checkpointed pipeline the source follows the coordinator's triggers instead of the stop
/// signal: between two batches it acknowledges its positions and sends the checkpoint's
/// barrier; after a savepoint's barrier it ends without the final watermark.
async fn run_source<R: SourceReader>(
    mut reader: R,
    head: &mut dyn Stage<R::Item>,
    ctx: TaskContext,
    mut metrics: Option<SourceMetrics>,
    part: Option<Part>,
) -> Result<()> {
    let TaskContext { mut stop, mut clock } = ctx;
    let mut trigger = match &part {
        Some(p) => {
            let mut rx = p.shared.trigger.subscribe();
            rx.mark_changed();
            Some(rx)
        }
        None => None,
    };
    let mut injected = 0;
    let snapshot = |reader: &R| PartSnapshot { positions: reader.positions(), ..PartSnapshot::default() };
    for split in reader.splits() {
        head.push(Message::SplitStart(split)).await?;
    }
    'read: while part.is_some() || !*stop.borrow() {
        let mut waiting = Instant::now();
        let next = {
            // The same read stays pending across idle ticks: only a stop or a checkpoint
            // cancels it (reads are cancel safe).
            let read = reader.next_batch();
            tokio::pin!(read);
            loop {
                tokio::select! {
                    next = &mut read => break Ok(next?),
                    _ = stop.changed(), if part.is_none() => continue 'read,
                    Some(t) = next_trigger(trigger.as_mut()) => break Err(t),
                    () = tokio::time::sleep(IDLE_TICK) => {
                        clock.idle(waiting.elapsed());
                        let start = Instant::now();
                        head.push(Message::Idle).await?;
                        clock.pushed(start, false);
                        waiting = Instant::now();
                    }
                }
            }
        };
        let next = match next {
            Ok(next) => next,
            Err(Trigger { id, stop: savepoint }) => {
                if id > injected {
                    injected = id;
                    if let Some(p) = &part {
                        p.ack(AckOf::Barrier(id), Ok(snapshot(&reader)), true);
                    }
                    head.push(Message::Barrier(id)).await?;
                    if savepoint {
                        if let Some(p) = &part {
                            p.ack(AckOf::End { exhausted: false }, Ok(snapshot(&reader)), true);
                        }
                        return head.push(Message::End).await;
                    }
                }
                continue 'read;
            }
        };
        clock.idle(waiting.elapsed());
        let Some(mut batch) = next else { break };
        let start = Instant::now();
        if let Some(m) = metrics.as_mut() {
            m.read(batch.len(), reader.bytes_read());
        }
        batch.set_read_at(Some(start));
        head.push(Message::Data(batch)).await?;
        while let Some(split) = reader.finished_split() {
            head.push(Message::SplitEnd(split)).await?;
        }
        clock.pushed(start, true);
        // A reader that is always ready and a chain that never waits would otherwise keep
        // this worker forever, starving tasks woken on it (the checkpoint coordinator's timer).
        tokio::task::consume_budget().await;
    }
    head.push(Message::Watermark(Timestamp::MAX)).await?;
    if let Some(p) = &part {
        p.ack(AckOf::End { exhausted: true }, Ok(snapshot(&reader)), true);
    }
    head.push(Message::End).await
}

/// The coordinator's next trigger, or never without checkpoints.
async fn next_trigger(trigger: Option<&mut watch::Receiver<Trigger>>) -> Option<Trigger> {
    match trigger {
        Some(rx) => match rx.changed().await {
            Ok(()) => Some(*rx.borrow_and_update()),
            Err(_) => std::future::pending().await,
        },
        None => std::future::pending().await,
    }
}

/// Commits a source's positions for the coordinator.
struct SourceCommitter<S>(Arc<S>);

impl<S: Source> PositionCommitter for SourceCommitter<S> {
    fn commit(&self, positions: &SplitPositions) -> Result<()> {
        self.0.commit(positions)
    }

    fn committed_progress(&self) -> Result<Option<String>> {
        self.0.committed_progress()
    }

    fn name(&self) -> String {
        self.0.name()
    }
}

/// Commits a sink's committables for the coordinator.
struct SinkCommitter<S, T>(Arc<S>, std::marker::PhantomData<fn(T)>);

impl<T: Send + 'static, S: Sink<T>> Committer for SinkCommitter<S, T> {
    fn commit(&self, checkpoint: u64, committables: &[Vec<u8>]) -> Result<()> {
        self.0.commit(checkpoint, committables)
    }

    fn check_restore(&self, restored: Option<u64>) -> Result<()> {
        self.0.check_restore(restored)
    }

    fn discard_uncommitted(&self, restored: Option<u64>) -> Result<()> {
        self.0.discard_uncommitted(restored)
    }

    fn committed_output(&self) -> Result<Option<crate::sink::CommittedOutput>> {
        self.0.committed_output()
    }

    fn destination(&self) -> Option<String> {
        self.0.destination()
    }
}

/// Reads a task's merged input channel into its chain.
async fn run_inputs<T: Send + 'static>(
    mut inputs: Inputs<T>,
    head: &mut dyn Stage<T>,
    mut clock: TaskClock,
) -> Result<()> {
    loop {
        let mut waiting = Instant::now();
        let msg = if clock.enabled() {
            // Idle time is flushed every tick, so a long wait shows as it happens.
            let next = inputs.next();
            tokio::pin!(next);
            loop {
                tokio::select! {
                    msg = &mut next => break msg,
                    () = tokio::time::sleep(IDLE_TICK) => {
                        clock.idle(waiting.elapsed());
                        waiting = Instant::now();
                    }
                }
            }
        } else {
            inputs.next().await
        };
        clock.idle(waiting.elapsed());
        let Some(msg) = msg else { return Ok(()) };
        let end = matches!(msg, Message::End);
        let data = matches!(msg, Message::Data(_));
        let start = Instant::now();
        head.push(msg).await?;
        clock.pushed(start, data);
        if end {
            return Ok(());
        }
        tokio::task::consume_budget().await;
    }
}

/// A lane that reads one channel per upstream subtask.
fn inputs_lane<T: Send + 'static>(
    name: String,
    rx: Vec<mpsc::Receiver<Message<T>>>,
    checkpointed: bool,
) -> Lane<T> {
    Lane {
        name,
        checkpointed,
        close: Box::new(move |mut head: Box<dyn Stage<T>>| -> TaskFn {
            Box::new(move |ctx: TaskContext| {
                Box::pin(async move { run_inputs(Inputs::new(rx), &mut *head, ctx.clock).await })
            })
        }),
    }
}

/// The end of a chain that hands every message to two channels.
struct Broadcast<T> {
    senders: [mpsc::Sender<Message<T>>; 2],
    blocked_ns: Arc<AtomicU64>,
}

impl<T: Clone + Send + 'static> Stage<T> for Broadcast<T> {
    fn push(&mut self, msg: Message<T>) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            crate::exchange::send(&self.senders[0], msg.clone(), &self.blocked_ns).await?;
            crate::exchange::send(&self.senders[1], msg, &self.blocked_ns).await
        })
    }
}

/// The end of a chain that writes to a sink. In a checkpointed pipeline (`part`), the writer
/// pre-commits at every barrier and at the end, and the committables go to the coordinator.
struct SinkStage<W> {
    writer: W,
    metrics: Option<SinkMetrics>,
    part: Option<Part>,
    last_barrier: u64,
    /// The sink's [`Sink::destination`], encoded, saved with each snapshot.
    destination: Vec<u8>,
}

impl<W> SinkStage<W> {
    async fn pre_commit<T: Send + 'static>(&mut self, of: AckOf) -> Result<()>
    where
        W: SinkWriter<T>,
    {
        let Some(part) = &self.part else { return Ok(()) };
        let id = match of {
            AckOf::Barrier(id) => id,
            AckOf::End { .. } => self.last_barrier + 1,
        };
        self.last_barrier = id;
        let committables = self.writer.pre_commit(id).await?.into_iter().collect();
        let meta = self.destination.clone();
        part.ack(of, Ok(PartSnapshot { committables, meta, ..PartSnapshot::default() }), false);
        Ok(())
    }
}

impl<T: Send + 'static, W: SinkWriter<T>> Stage<T> for SinkStage<W> {
    fn push(&mut self, msg: Message<T>) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            match msg {
                Message::Data(batch) => {
                    let facts = self
                        .metrics
                        .is_some()
                        .then(|| (batch.len(), batch.timestamps.iter().copied().max(), batch.read_at()));
                    self.writer.write_batch(batch).await?;
                    if let (Some(m), Some((records, newest, read_at))) = (self.metrics.as_mut(), facts) {
                        m.wrote(records, newest, read_at, self.writer.bytes_written());
                    }
                    Ok(())
                }
                Message::End => {
                    self.pre_commit(AckOf::End { exhausted: true }).await?;
                    self.writer.finish().await
                }
                Message::Barrier(id) => self.pre_commit(AckOf::Barrier(id)).await,
                Message::Watermark(_) | Message::Idle | Message::SplitStart(_) | Message::SplitEnd(_) => {
                    Ok(())
                }
            }
        })
    }
}

/// A stream of `T` records: the lanes of its parallel subtasks.
pub struct Stream<T> {
    ctx: Context,
    lanes: Vec<Lane<T>>,
    /// What is upstream (sources and operator kinds), from which operators' default ids are
    /// derived (see [`Stream::uid`]).
    origin: Arc<str>,
    /// The default id of the checkpointed operator that made this stream, if any.
    made_by: Option<Arc<str>>,
}

impl<T> std::fmt::Debug for Stream<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stream").field("lanes", &self.lanes.len()).finish_non_exhaustive()
    }
}

impl<T: Send + 'static> Stream<T> {
    /// Extends every lane with an operator made by `make`, fused into the lane's task.
    pub fn operator<U, O>(self, name: &str, make: impl Fn() -> O) -> Stream<U>
    where
        U: Send + 'static,
        O: Operator<T, U>,
    {
        let label = self.ctx.metrics.as_ref().map(|m| m.unique_name(name));
        let checkpointed = self.lanes.iter().all(|l| l.checkpointed);
        let parts = self.ctx.parts(name, &self.origin, self.lanes.len(), checkpointed);
        let made_by = parts.first().and_then(|p| p.as_ref()).map(|p| p.uid.clone());
        let origin: Arc<str> = format!("{}/{name}", self.origin).into();
        let lanes = self
            .lanes
            .into_iter()
            .zip(parts)
            .enumerate()
            .map(|(subtask, (lane, part))| {
                let op = make();
                let stateful = op.state_stats().is_some();
                let metrics = self
                    .ctx
                    .metrics
                    .as_ref()
                    .zip(label.as_deref())
                    .map(|(m, l)| m.operator(l, subtask, stateful));
                let close = lane.close;
                let dead_letters = self.ctx.dead_letters.clone();
                let late_count = self.ctx.late_count.clone();
                Lane {
                    name: format!("{} -> {name}", lane.name),
                    checkpointed,
                    close: Box::new(move |next: Box<dyn Stage<U>>| {
                        close(Box::new(OpStage::new(op, next, metrics, dead_letters, late_count, part)))
                    }),
                }
            })
            .collect();
        Stream { ctx: self.ctx, lanes, origin, made_by }
    }

    /// Names the operator that made this stream `uid` in checkpoints (as Flink's `uid`): its
    /// state is restored from the checkpoint's state of `uid`, whatever else changed in the
    /// program. Without one an operator's id is derived from its kind and what is upstream of
    /// it (sources and operator kinds): stable across runs and builds of the same program, and
    /// changed (so the restore refuses the old state rather than misplace it) when an operator
    /// is added or removed upstream. Give ids to the stateful operators (windows, sinks) of a
    /// job whose program will change. Without checkpoints, or on a stream no operator made
    /// (a `fork`, `union`, `key_by`), it does nothing; an id used twice fails the pipeline's
    /// run with [`Error::InvalidConfig`].
    ///
    /// Operators downstream of a named one derive their default ids from its uid instead of
    /// everything upstream of it: naming the windows keeps the ids of what follows them (the
    /// sinks, which cannot be named) when the program changes upstream of the windows.
    pub fn uid(mut self, uid: &str) -> Stream<T> {
        if let (Some(shared), Some(made_by)) = (&self.ctx.checkpoint, &self.made_by) {
            if let Err(e) = shared.rename(made_by, uid) {
                let reason = e.to_string();
                return self.invalid("operator uid", reason);
            }
            self.origin = format!("uid:{uid}").into();
        }
        self
    }

    /// Transforms every record.
    pub fn map<U, F>(self, f: F) -> Stream<U>
    where
        U: Send + 'static,
        F: Fn(T) -> U + Send + Sync + 'static,
    {
        let f = Arc::new(f);
        self.operator("map", || Map(f.clone()))
    }

    /// Keeps the records for which `f` is true.
    pub fn filter<F>(self, f: F) -> Stream<T>
    where
        F: Fn(&T) -> bool + Send + Sync + 'static,
    {
        let f = Arc::new(f);
        self.operator("filter", || Filter(f.clone()))
    }

    /// Replaces every record by the records `f` returns (each keeps the input's timestamp).
    pub fn flat_map<U, I, F>(self, f: F) -> Stream<U>
    where
        U: Send + 'static,
        I: IntoIterator<Item = U>,
        F: Fn(T) -> I + Send + Sync + 'static,
    {
        let f = Arc::new(f);
        self.operator("flat_map", || FlatMap(f.clone()))
    }

    /// Calls `f` on every record, passing it on unchanged.
    pub fn inspect<F>(self, f: F) -> Stream<T>
    where
        F: Fn(&T) + Send + Sync + 'static,
    {
        let f = Arc::new(f);
        self.operator("inspect", || Inspect(f.clone()))
    }

    /// Transforms every record with a function that can fail. A failure never stops the
    /// pipeline: the record's origin, payload and the error go to the dead-letter output (see
    /// [`Pipeline::dead_letters`]) and are counted in [`JobReport::dead_letters`].
    pub fn try_map<U, E, F>(self, f: F) -> Stream<U>
    where
        T: Traceable,
        U: Send + 'static,
        E: std::fmt::Display,
        F: Fn(&T) -> Result<U, E> + Send + Sync + 'static,
    {
        let f = Arc::new(f);
        self.operator("try_map", || TryMap { f: f.clone(), operator: "try_map".into() })
    }

    /// Gives every record an event timestamp (ms) and starts generating watermarks per source
    /// split with `strategy` (see the `time` module for the rules).
    pub fn assign_timestamps<F>(self, f: F, strategy: Watermarks) -> Stream<T>
    where
        F: Fn(&T) -> Timestamp + Send + Sync + 'static,
    {
        let f = Arc::new(f);
        self.operator("assign_timestamps", || AssignTimestamps::new(f.clone(), strategy))
    }

    /// Two streams with the same records, so one stream can feed several sinks or branches. Each
    /// lane hands every message to both branches over bounded channels (a slow branch holds
    /// back both, as in Flink).
    pub fn fork(self) -> (Stream<T>, Stream<T>)
    where
        T: Clone,
    {
        let capacity = self.ctx.channel_capacity;
        let mut left = Vec::with_capacity(self.lanes.len());
        let mut right = Vec::with_capacity(self.lanes.len());
        for (subtask, lane) in self.lanes.into_iter().enumerate() {
            let (ltx, lrx) = mpsc::channel::<Message<T>>(capacity);
            let (rtx, rrx) = mpsc::channel::<Message<T>>(capacity);
            let checkpointed = lane.checkpointed;
            let blocked = Arc::new(AtomicU64::new(0));
            let stage = Broadcast { senders: [ltx, rtx], blocked_ns: blocked.clone() };
            let name = format!("{} -> fork", lane.name);
            self.ctx.add_task(name, subtask, blocked, (lane.close)(Box::new(stage)));
            left.push(inputs_lane(format!("{} (left)", lane.name), vec![lrx], checkpointed));
            right.push(inputs_lane(format!("{} (right)", lane.name), vec![rrx], checkpointed));
        }
        let (l, r) = (format!("{}/fork-left", self.origin), format!("{}/fork-right", self.origin));
        (
            Stream { ctx: self.ctx.clone(), lanes: left, origin: l.into(), made_by: None },
            Stream { ctx: self.ctx, lanes: right, origin: r.into(), made_by: None },
        )
    }

    /// Gives every record the wall-clock time it arrives as its timestamp, with watermarks that
    /// follow the clock: windows after this are processing-time windows, and they close on time
    /// even when no record arrives.
    pub fn assign_processing_time(self) -> Stream<T> {
        self.operator("assign_processing_time", crate::time::ProcessingTime::new)
    }

    /// Merges another stream of the same records into this one.
    pub fn union(mut self, other: Stream<T>) -> Stream<T> {
        self.lanes.extend(other.lanes);
        self.origin = format!("({}|{})", self.origin, other.origin).into();
        self.made_by = None;
        self
    }

    /// Partitions the stream by key: records with equal keys go to the same subtask (a hash
    /// exchange over bounded channels).
    pub fn key_by<K, KF>(self, key: KF) -> KeyedStream<K, T, KF>
    where
        K: Hash + Eq + Clone + Send + serde::Serialize + 'static,
        KF: Fn(&T) -> K + Send + Sync + 'static,
    {
        let key = Arc::new(key);
        let stream = self.exchange(KeyPartitioner(key.clone()), "key_by", "keyed");
        KeyedStream { stream, key, _k: std::marker::PhantomData }
    }

    /// Redistributes the stream over the pipeline's subtasks with `partitioner` (the exchange
    /// behind [`Stream::key_by`], for batch types that route rows themselves).
    pub fn partition_by<P: Partitioner<T>>(self, partitioner: P) -> Stream<T> {
        self.exchange(partitioner, "exchange", "exchanged")
    }

    /// Closes the lanes with an exchange named `closing` and opens new ones named `opening`.
    fn exchange<P: Partitioner<T>>(self, partitioner: P, closing: &str, opening: &str) -> Stream<T> {
        let partitioner = Arc::new(partitioner);
        let n = self.ctx.parallelism;
        let checkpointed = self.lanes.iter().all(|l| l.checkpointed);
        // One channel per (upstream, downstream) pair: receivers[d][u].
        let mut receivers: Vec<Vec<mpsc::Receiver<Message<T>>>> = (0..n).map(|_| Vec::new()).collect();
        for (me, lane) in self.lanes.into_iter().enumerate() {
            let senders = receivers
                .iter_mut()
                .map(|rx| {
                    let (tx, r) = mpsc::channel::<Message<T>>(self.ctx.channel_capacity);
                    rx.push(r);
                    tx
                })
                .collect();
            let blocked = Arc::new(AtomicU64::new(0));
            let stage =
                ExchangeStage { partitioner: partitioner.clone(), senders, blocked_ns: blocked.clone() };
            let name = format!("{} -> {closing}", lane.name);
            self.ctx.add_task(name, me, blocked, (lane.close)(Box::new(stage)));
        }
        let lanes =
            receivers.into_iter().map(|rx| inputs_lane(opening.to_owned(), rx, checkpointed)).collect();
        let origin = format!("{}/{closing}", self.origin).into();
        Stream { ctx: self.ctx, lanes, origin, made_by: None }
    }

    /// Writes every record to `sink`, one writer per subtask.
    pub fn sink<S: Sink<T>>(self, sink: S) {
        let sink = Arc::new(sink);
        let parallelism = self.lanes.len();
        let label = self.ctx.metrics.as_ref().map(|m| m.unique_name("sink"));
        let checkpointed = self.lanes.iter().all(|l| l.checkpointed);
        let parts = self.ctx.parts("sink", &self.origin, parallelism, checkpointed);
        if let (Some(shared), Some(Some(part))) = (&self.ctx.checkpoint, parts.first()) {
            let committer: Arc<dyn Committer> =
                Arc::new(SinkCommitter(sink.clone(), std::marker::PhantomData));
            shared
                .committers
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push((part.uid.clone(), committer));
        }
        for ((subtask, lane), part) in self.lanes.into_iter().enumerate().zip(parts) {
            let sink = sink.clone();
            let name = format!("{} -> sink {}", lane.name, sink.name());
            let metrics = self.ctx.metrics.as_ref().zip(label.as_deref()).map(|(m, l)| m.sink(l, subtask));
            let head = DeferredSink { sink, subtask, parallelism, metrics, part, writer: None };
            let run = (lane.close)(Box::new(head));
            self.ctx.add_task(name, subtask, Arc::new(AtomicU64::new(0)), run);
        }
    }
}

/// A sink stage whose writer is created when the task starts.
struct DeferredSink<S, W> {
    sink: Arc<S>,
    subtask: usize,
    parallelism: usize,
    metrics: Option<SinkMetrics>,
    part: Option<Part>,
    writer: Option<SinkStage<W>>,
}

impl<T, S> Stage<T> for DeferredSink<S, S::Writer>
where
    T: Send + 'static,
    S: Sink<T> + Sync,
{
    fn push(&mut self, msg: Message<T>) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            if self.writer.is_none() {
                let writer = match self.part {
                    Some(_) => self.sink.transactional_writer(self.subtask, self.parallelism)?,
                    None => self.sink.writer(self.subtask, self.parallelism)?,
                };
                let (metrics, part) = (self.metrics.take(), self.part.take());
                let destination = match (&part, self.sink.destination()) {
                    (Some(_), Some(d)) => crate::checkpoint::encode(&d)?,
                    _ => Vec::new(),
                };
                self.writer = Some(SinkStage { writer, metrics, part, last_barrier: 0, destination });
            }
            match self.writer.as_mut() {
                Some(w) => w.push(msg).await,
                None => Ok(()),
            }
        })
    }
}

/// A stream partitioned by key; see [`Stream::key_by`].
pub struct KeyedStream<K, T, KF> {
    stream: Stream<T>,
    key: Arc<KF>,
    _k: std::marker::PhantomData<fn() -> K>,
}

impl<K, T, KF> KeyedStream<K, T, KF>
where
    K: Hash + Eq + Clone + Send + 'static,
    T: Send + 'static,
    KF: Fn(&T) -> K + Send + Sync + 'static,
{
    /// Groups the records of each key into event-time windows.
    pub fn window(self, spec: WindowSpec) -> WindowedStream<K, T, KF> {
        WindowedStream { keyed: self, spec, lateness: 0, late: None }
    }

    /// Runs `process` on every record with its key, with event-time timers (see
    /// [`KeyedProcess`](crate::KeyedProcess)). Each subtask gets its own clone of `process`.
    pub fn process<P>(self, process: P) -> Stream<P::Out>
    where
        P: crate::process::KeyedProcess<K, T> + Clone,
    {
        let key = self.key.clone();
        self.stream.operator("process", || crate::process::ProcessOperator::new(key.clone(), process.clone()))
    }

    /// The stream again, still partitioned by key.
    pub fn into_stream(self) -> Stream<T> {
        self.stream
    }
}

/// A keyed stream cut into windows; see [`KeyedStream::window`].
pub struct WindowedStream<K, T, KF> {
    keyed: KeyedStream<K, T, KF>,
    spec: WindowSpec,
    lateness: i64,
    late: Option<mpsc::UnboundedSender<Batch<T>>>,
}

impl<K, T, KF> WindowedStream<K, T, KF>
where
    K: Hash + Eq + Clone + Send + 'static,
    T: Send + 'static,
    KF: Fn(&T) -> K + Send + Sync + 'static,
{
    /// Keeps windows open for `lateness` after they fire, updating and re-firing them for records
    /// that arrive late but within it. Default: zero.
    pub fn allowed_lateness(mut self, lateness: Duration) -> Self {
        self.lateness = lateness.as_millis().min(i64::MAX as u128) as i64;
        self
    }

    /// The records that arrive after their windows' allowed lateness, as a stream of their own
    /// (one lane) to sink. Without it they are only counted ([`JobReport::late_records`]).
    pub fn late_records(&mut self) -> Stream<T> {
        let (tx, mut rx) = mpsc::unbounded_channel::<Batch<T>>();
        self.late = Some(tx);
        self.keyed.stream.ctx.inner.lock().unwrap_or_else(PoisonError::into_inner).late_output = true;
        let lane = Lane {
            name: "late records".to_owned(),
            checkpointed: false,
            close: Box::new(move |mut head: Box<dyn Stage<T>>| -> TaskFn {
                Box::new(move |_ctx: TaskContext| {
                    Box::pin(async move {
                        while let Some(batch) = rx.recv().await {
                            head.push(Message::Data(batch)).await?;
                        }
                        head.push(Message::Watermark(Timestamp::MAX)).await?;
                        head.push(Message::End).await
                    })
                })
            }),
        };
        let origin = format!("{}/late", self.keyed.stream.origin).into();
        Stream { ctx: self.keyed.stream.ctx.clone(), lanes: vec![lane], origin, made_by: None }
    }

    /// Aggregates each window of each key with `agg`, emitting a [`WindowResult`] when the
    /// window fires.
    ///
    /// # Panics
    ///
    /// Never; an invalid window size is reported by [`WindowSpec`]'s checks as a
    /// [`Error::InvalidConfig`] when the pipeline runs.
    pub fn aggregate<A: Aggregator<T>>(self, agg: A) -> Stream<WindowResult<K, A::Output>>
    where
        K: serde::Serialize + serde::de::DeserializeOwned,
    {
        let agg = Arc::new(agg);
        let key = self.keyed.key.clone();
        let spec = self.spec;
        let lateness = self.lateness;
        let late = LateRecords { tx: self.late.clone() };
        let invalid = spec.validate().err();
        let stream = self.keyed.stream.operator("window", || {
            WindowOperator::new(key.clone(), spec, agg.clone(), lateness, late.clone())
        });
        match invalid {
            None => stream,
            Some((field, reason)) => stream.invalid(field, reason),
        }
    }
}

impl<K, T, KF> WindowedStream<K, T, KF>
where
    K: Hash + Eq + Clone + Send + 'static,
    T: Clone + Send + 'static,
    KF: Fn(&T) -> K + Send + Sync + 'static,
{
    /// Folds each window of each key with `f(accumulated, next)`; the result's value is `None`
    /// never (a window exists only once a record arrived) but typed as `Option<T>`.
    pub fn reduce<F>(self, f: F) -> Stream<WindowResult<K, Option<T>>>
    where
        F: Fn(T, &T) -> T + Send + Sync + 'static,
        K: serde::Serialize + serde::de::DeserializeOwned,
        T: serde::Serialize + serde::de::DeserializeOwned,
    {
        self.aggregate(crate::aggregate::Reduce::with(f))
    }
}

impl<T: Send + 'static> Stream<T> {
    /// A stream whose tasks fail with [`Error::InvalidConfig`] naming `field` when the pipeline
    /// runs.
    fn invalid(self, field: &'static str, reason: String) -> Stream<T> {
        let lanes = self
            .lanes
            .into_iter()
            .map(|lane| {
                let reason = reason.clone();
                Lane {
                    name: lane.name,
                    checkpointed: lane.checkpointed,
                    close: Box::new(move |_next: Box<dyn Stage<T>>| -> TaskFn {
                        Box::new(move |_ctx| {
                            Box::pin(async move { Err(Error::InvalidConfig { field, reason }) })
                        })
                    }),
                }
            })
            .collect();
        Stream { ctx: self.ctx, lanes, origin: self.origin, made_by: self.made_by }
    }
}
