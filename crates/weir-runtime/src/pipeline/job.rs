//! Running a pipeline: starting its tasks, supervising them, and stopping.

use super::{
    CheckpointHandle, Context, DeadLetterSink, JobReport, Lane, Pipeline, PipelineBuilder, StopHandle,
    Stream, TaskContext, TaskFn,
};
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use crate::batch::{Batch, Message, Timestamp};
use crate::checkpoint::{
    AckOf, Committer, Coordinator, Part, PartSnapshot, PositionCommitter, SplitPositions, Trigger,
};
use crate::dead_letter::{DeadLetter, DeadLetters};
use crate::error::{Error, Result};
use crate::exchange::Inputs;
use crate::metrics::{PipelineMetrics, SourceMetrics, TaskClock};
use crate::operator::Stage;
use crate::sink::{Sink, SinkWriter};
use crate::source::{Source, SourceReader};

impl Pipeline {
    /// Starts configuring a pipeline called `name`.
    pub fn builder(name: impl Into<String>) -> PipelineBuilder {
        PipelineBuilder {
            name: name.into(),
            parallelism: std::thread::available_parallelism().map_or(1, |n| n.get()),
            channel_capacity: 8,
            handle_signals: false,
            report_on_stderr: true,
            metrics: None,
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
                                let bounded = source.is_bounded();
                                let run = run_source(reader, &mut *head, ctx, metrics, part, bounded);
                                crate::time::BOUNDED_SOURCE.scope(bounded, run).await
                            })
                        })
                    }),
                }
            })
            .collect();
        Stream { ctx, lanes, origin, made_by, label: None }
    }

    /// Sends dead letters to `sink` (one writer) instead of logging them as warnings.
    ///
    /// Dead letters are written as they come, outside checkpoints: at least once. After a
    /// restore, a record read again since the last checkpoint that fails again is sent again,
    /// with the same origin (e.g. `topic/partition@offset`), which tells the copies apart.
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

    /// Runs every task until the sources are exhausted (or the job is stopped by its
    /// [`StopHandle`], or by Ctrl-C/SIGTERM with [`PipelineBuilder::handle_signals`]) and every
    /// sink finished.
    ///
    /// When dead letters went to no dead-letter sink, or late records to no late output, the
    /// [`JobReport`] is printed on stderr at the end (also when the job fails), so they are
    /// visible without a `tracing` subscriber. Writing it never fails the job.
    ///
    /// # Errors
    ///
    /// The first task error: a connector's [`Error::Connector`], or [`Error::Panicked`] naming
    /// the operators of a task whose user code panicked. The other tasks are stopped.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future before it completes cancels the job at once: every task it started
    /// (sources, operators, sinks, the dead-letter output and the checkpoint coordinator) is
    /// aborted at its next await point, and none outlives the future. Nothing is drained or
    /// flushed: sinks do not finish (a file sink may hold a partly written batch), no checkpoint
    /// is taken, and records read since the last checkpoint are read again on the next start of
    /// a checkpointed job (transactional sinks discard what they pre-committed). File operations
    /// of a checkpoint already handed to tokio's blocking pool run to their end. To stop
    /// gracefully, call [`StopHandle::stop`] and keep awaiting the future.
    pub async fn run(self) -> Result<JobReport> {
        let (report, result) = self.run_with_report().await;
        result.map(|()| report)
    }

    /// Runs like [`Pipeline::run`], and returns the [`JobReport`] also when the job fails: then
    /// it counts the dead letters and late records up to the failure (all zero if the job
    /// failed before it started, e.g. a refused restore). For a caller that shows the report
    /// itself (see [`PipelineBuilder::report_on_stderr`]) whatever the outcome.
    ///
    /// # Cancel safety
    ///
    /// As [`Pipeline::run`]'s: dropping the future aborts every task of the job; no report is
    /// returned then.
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
                    Ok(c) => Some(OwnedTask::spawn(c.run(stop_rx.clone(), demand))),
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
        drop(std::mem::replace(&mut self.dead_letters, DeadLetters::new(1).0));
        let dead_task = OwnedTask::spawn(drain_dead_letters(dead_rx, dead_sink));
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
                        None => coordinator_result = Some(Err(Error::Internal(
                            "the checkpoint coordinator task ended abnormally".into(),
                        ))),
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
                drop(c);
                Ok(())
            }
            (Some(c), None) => c
                .await
                .unwrap_or_else(|e| Err(Error::Internal(format!("the checkpoint coordinator failed: {e}")))),
            (None, None) => Ok(()),
        };
        let dead = dead_task.await;
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

/// A task owned by the job: aborted when dropped, so no task outlives [`Pipeline::run`]'s future.
struct OwnedTask<T>(tokio::task::JoinHandle<T>);

impl<T: Send + 'static> OwnedTask<T> {
    fn spawn(future: impl std::future::Future<Output = T> + Send + 'static) -> Self {
        #[expect(clippy::disallowed_methods, reason = "the handle is owned and aborts the task when dropped")]
        OwnedTask(tokio::spawn(future))
    }
}

impl<T> std::future::Future for OwnedTask<T> {
    type Output = std::result::Result<T, tokio::task::JoinError>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        std::pin::Pin::new(&mut self.0).poll(cx)
    }
}

impl<T> Drop for OwnedTask<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn drain_dead_letters(
    rx: Option<mpsc::Receiver<Vec<DeadLetter>>>,
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
/// stops, then ends the stream with the final watermark. While the reader of an unbounded
/// source has nothing, the chain gets `Idle` every [`IDLE_TICK`]; a bounded source's chain
/// never does, so nothing downstream depends on how fast it reads.
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
    bounded: bool,
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
                        if bounded {
                            waiting = Instant::now();
                            continue;
                        }
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
pub(super) struct SinkCommitter<S, T>(pub(super) Arc<S>, pub(super) std::marker::PhantomData<fn(T)>);

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

    fn restore_limit(&self) -> Result<Option<u64>> {
        self.0.restore_limit()
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
pub(super) fn inputs_lane<T: Send + 'static>(
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
