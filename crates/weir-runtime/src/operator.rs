//! Operators: the code that runs inside a task, one batch at a time.
//!
//! An [`Operator`] has one required method, [`Operator::process_batch`], and hooks with defaults
//! for watermarks, checkpoint barriers and the end of input. Operators of a task are fused into a
//! chain: each pushes its output into a [`Collector`], and the chain hands the collected messages
//! to the next operator in the same task, with no channel or copy in between.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::time::Instant;

use futures::future::BoxFuture;

use crate::batch::{Batch, Message, Timestamp};
use crate::checkpoint::{AckOf, Part, StateReader, StateWriter};
use crate::dead_letter::{DeadLetter, DeadLetters};
use crate::error::{Error, Result};
use crate::metrics::OperatorMetrics;

/// Why records left an operator's main output (counted in
/// `weir_operator_dropped_records_total{reason}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DropReason {
    /// Behind the watermark plus the allowed lateness (sent to the late side output).
    Late,
    /// The user function failed (sent to the dead-letter output).
    DeadLetter,
}

/// Collects what an operator emits while it handles one message.
#[derive(Debug)]
pub struct Collector<T> {
    messages: Vec<Message<T>>,
    /// When the source read the newest input this operator saw: given to output batches that
    /// do not carry a read time (window results, process output).
    read_at: Option<Instant>,
    /// The newest input's append time ([`Batch::appended_ms`]), given to output batches the
    /// same way.
    appended_ms: Option<i64>,
    /// Records dropped while handling the current message, by [`DropReason`].
    dropped: [u64; 2],
    /// Dead letters of the current message.
    dead: Vec<DeadLetter>,
    /// Sends to side outputs, awaited before the output moves on (see [`Collector::defer`]).
    deferred: Deferred,
}

/// Futures a [`Collector`] holds for its stage to await.
#[derive(Default)]
struct Deferred(Vec<BoxFuture<'static, ()>>);

impl std::fmt::Debug for Deferred {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} deferred sends", self.0.len())
    }
}

impl<T> Default for Collector<T> {
    fn default() -> Self {
        Collector {
            messages: Vec::new(),
            read_at: None,
            appended_ms: None,
            dropped: [0; 2],
            dead: Vec::new(),
            deferred: Deferred::default(),
        }
    }
}

impl<T> Collector<T> {
    /// Emits a batch (empty batches are dropped).
    pub fn batch(&mut self, mut batch: Batch<T>) {
        if !batch.is_empty() {
            if batch.read_at().is_none() {
                batch.set_read_at(self.read_at);
            }
            if batch.appended_ms().is_none() {
                batch.set_appended_ms(self.appended_ms);
            }
            self.messages.push(Message::Data(batch));
        }
    }

    /// Sends a record the operator could not handle to the pipeline's dead-letter output (see
    /// [`Pipeline::dead_letters`](crate::Pipeline::dead_letters)); it is counted as dropped with
    /// [`DropReason::DeadLetter`] and in [`JobReport::dead_letters`](crate::JobReport).
    pub fn dead_letter(&mut self, letter: DeadLetter) {
        self.dropped[DropReason::DeadLetter as usize] += 1;
        self.dead.push(letter);
    }

    /// Counts `n` records taken out of the main output for `reason`.
    pub fn dropped(&mut self, reason: DropReason, n: u64) {
        self.dropped[reason as usize] += n;
    }

    /// Emits a watermark.
    pub fn watermark(&mut self, watermark: Timestamp) {
        self.messages.push(Message::Watermark(watermark));
    }

    /// Emits a checkpoint barrier.
    pub fn barrier(&mut self, id: u64) {
        self.messages.push(Message::Barrier(id));
    }

    /// Says this operator's output is idle (see [`Message::Idle`]).
    pub fn idle(&mut self) {
        self.messages.push(Message::Idle);
    }

    /// Says a source split will be read (see [`Message::SplitStart`]).
    pub fn split_start(&mut self, split: u32) {
        self.messages.push(Message::SplitStart(split));
    }

    /// Says a source split ended (see [`Message::SplitEnd`]).
    pub fn split_end(&mut self, split: u32) {
        self.messages.push(Message::SplitEnd(split));
    }

    /// Has the stage await `send` (a send to a bounded side output, e.g. late records) before
    /// its output moves on: an operator's code is synchronous, and this is how a full side
    /// output makes it wait (backpressure) instead of growing.
    pub(crate) fn defer(&mut self, send: BoxFuture<'static, ()>) {
        self.deferred.0.push(send);
    }

    fn take(&mut self) -> Vec<Message<T>> {
        std::mem::take(&mut self.messages)
    }

    #[cfg(test)]
    pub(crate) fn take_for_test(&mut self) -> Vec<Message<T>> {
        self.take()
    }
}

/// A streaming operator from `In` records to `Out` records.
///
/// Watermarks, barriers and the end of input are forwarded unchanged unless an operator overrides
/// the hook; an operator that holds records back (a window) emits them from `on_watermark` or
/// `on_end`.
///
/// # Implementing
///
/// [`Operator::process_batch`] is the one required method; it emits through the [`Collector`].
/// An operator with state saves it in [`Operator::snapshot`] and reads it back in
/// [`Operator::restore`]: keyed state with [`StateWriter::put`] follows its keys when a
/// checkpoint is restored at another parallelism. Added with
/// [`Stream::operator`](crate::Stream::operator), which clones it for each subtask. Here, a
/// running count of each key, after a `key_by` so that a subtask sees all records of its keys:
///
/// ```
/// use std::collections::HashMap;
///
/// use weir_runtime::{
///     Batch, CollectSink, Collector, MemorySource, Operator, Pipeline, Result, StateReader, StateWriter,
/// };
///
/// #[derive(Clone, Default)]
/// struct RunningCount {
///     counts: HashMap<char, u64>,
/// }
///
/// impl Operator<char, (char, u64)> for RunningCount {
///     fn process_batch(&mut self, batch: Batch<char>, out: &mut Collector<(char, u64)>) {
///         let counted = batch
///             .records
///             .iter()
///             .map(|c| {
///                 let n = self.counts.entry(*c).or_insert(0);
///                 *n += 1;
///                 (*c, *n)
///             })
///             .collect();
///         out.batch(batch.derive(counted, batch.timestamps.clone()));
///     }
///
///     fn snapshot(&mut self, state: &mut StateWriter) -> Result<()> {
///         self.counts.iter().try_for_each(|(key, n)| state.put(key, n))
///     }
///
///     fn restore(&mut self, state: &StateReader<'_>) -> Result<()> {
///         for entry in state.entries::<char, u64>() {
///             let (key, n) = entry?;
///             self.counts.insert(key, n);
///         }
///         Ok(())
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<()> {
/// let p = Pipeline::builder("running").parallelism(2).handle_signals(false).build()?;
/// let out = CollectSink::new();
/// p.source(MemorySource::new("abracadabra".chars().collect()))
///     .key_by(|c| *c)
///     .into_stream()
///     .operator("running_count", RunningCount::default())
///     .sink(out.clone());
/// p.run().await?;
/// let mut got = out.take();
/// got.sort();
/// assert_eq!(got.iter().filter(|(c, _)| *c == 'a').map(|(_, n)| *n).max(), Some(5));
/// assert_eq!(got.len(), 11);
/// # Ok(())
/// # }
/// ```
pub trait Operator<In, Out>: Send + 'static {
    /// Handles one batch of input.
    fn process_batch(&mut self, batch: Batch<In>, out: &mut Collector<Out>);

    /// Event time advanced. Default: forward the watermark.
    fn on_watermark(&mut self, watermark: Timestamp, out: &mut Collector<Out>) {
        out.watermark(watermark);
    }

    /// A checkpoint barrier passed. Default: forward it.
    fn on_barrier(&mut self, id: u64, out: &mut Collector<Out>) {
        out.barrier(id);
    }

    /// The input is idle (see [`Message::Idle`]). Default: forward it.
    fn on_idle(&mut self, out: &mut Collector<Out>) {
        out.idle();
    }

    /// A source split will be read (see [`Message::SplitStart`]). Default: forward it.
    fn on_split_start(&mut self, split: u32, out: &mut Collector<Out>) {
        out.split_start(split);
    }

    /// A source split ended (see [`Message::SplitEnd`]). Default: forward it.
    fn on_split_end(&mut self, split: u32, out: &mut Collector<Out>) {
        out.split_end(split);
    }

    /// The input ended; emit what is still held. Default: nothing. The chain forwards `End`.
    fn on_end(&mut self, _out: &mut Collector<Out>) {}

    /// Saves the operator's state when a checkpoint barrier passes it (keyed state with
    /// [`StateWriter::put`], operator-wide values with [`StateWriter::set_meta`]); the operator
    /// goes on with its state unchanged afterwards (`&mut` for state that must be taken out and
    /// put back to be read). Default: nothing (a stateless operator).
    ///
    /// # Errors
    ///
    /// A value that cannot be encoded; the checkpoint fails, the job goes on.
    fn snapshot(&mut self, _state: &mut StateWriter) -> Result<()> {
        Ok(())
    }

    /// Restores what [`Operator::snapshot`] saved, before the first message: the entries of the
    /// key groups this subtask owns, whatever the parallelism of the checkpoint. Default:
    /// nothing.
    ///
    /// # Errors
    ///
    /// State that does not decode (the job changed incompatibly); the job fails to start.
    fn restore(&mut self, _state: &StateReader<'_>) -> Result<()> {
        Ok(())
    }

    /// The size of the operator's keyed state, for metrics; `None` (the default) for a
    /// stateless operator. With metrics on, called after every message (batch, watermark,
    /// end), so the gauges show the current state: keep it cheap (count incrementally, or
    /// cache what costs a walk over the state).
    fn state_stats(&self) -> Option<StateStats> {
        None
    }
}

/// The size of an operator's keyed state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StateStats {
    /// Distinct keys with state.
    pub keys: u64,
    /// Windows (per key) holding state.
    pub windows: u64,
    /// Approximate bytes (entries times their in-memory size).
    pub bytes: u64,
    /// Window results emitted so far.
    pub fired: u64,
}

/// One link of a task's chain: accepts messages, passes results on.
pub(crate) trait Stage<T>: Send {
    fn push(&mut self, msg: Message<T>) -> BoxFuture<'_, Result<()>>;
}

/// An operator and the rest of the chain after it.
pub(crate) struct OpStage<In, Out, O> {
    op: O,
    out: Collector<Out>,
    next: Box<dyn Stage<Out>>,
    metrics: Option<OperatorMetrics>,
    dead_letters: DeadLetters,
    /// The pipeline's count of late records ([`JobReport::late_records`](crate::JobReport)).
    late_count: Arc<AtomicU64>,
    /// This operator subtask's part in checkpoints, until restored: `(part, restored yet)`.
    checkpoint: Option<(Part, bool)>,
    _in: std::marker::PhantomData<fn(In)>,
}

impl<In, Out, O> OpStage<In, Out, O> {
    pub(crate) fn new(
        op: O,
        next: Box<dyn Stage<Out>>,
        metrics: Option<OperatorMetrics>,
        dead_letters: DeadLetters,
        late_count: Arc<AtomicU64>,
        checkpoint: Option<Part>,
    ) -> Self {
        OpStage {
            op,
            out: Collector::default(),
            next,
            metrics,
            dead_letters,
            late_count,
            checkpoint: checkpoint.map(|p| (p, false)),
            _in: std::marker::PhantomData,
        }
    }
}

impl<In, Out, O: Operator<In, Out>> OpStage<In, Out, O> {
    /// Restores the operator's state before its first message, if the pipeline restored a
    /// checkpoint.
    fn restore(&mut self) -> Result<()> {
        let Some((part, restored)) = &mut self.checkpoint else { return Ok(()) };
        if !*restored {
            *restored = true;
            if let Some(reader) = part.reader() {
                self.op.restore(&reader).map_err(|e| match e {
                    Error::Checkpoint(m) => Error::Checkpoint(format!("restoring {}: {m}", part.uid())),
                    other => other,
                })?;
            }
        }
        Ok(())
    }

    /// Snapshots the operator and acknowledges `of`.
    fn acknowledge(&mut self, of: AckOf) {
        if let Some((part, _)) = &self.checkpoint {
            let part = part.clone();
            let mut state = StateWriter::default();
            let snapshot =
                self.op.snapshot(&mut state).map(|()| state.into_part()).map_err(|e| e.to_string());
            part.ack(of, snapshot, false);
        }
    }
}

impl<In, Out, O> Stage<In> for OpStage<In, Out, O>
where
    In: Send + 'static,
    Out: Send + 'static,
    O: Operator<In, Out>,
{
    fn push(&mut self, msg: Message<In>) -> BoxFuture<'_, Result<()>> {
        if let Err(e) = self.restore() {
            return Box::pin(async move { Err(e) });
        }
        let end = matches!(msg, Message::End);
        let mut records_in = 0;
        let mut watermark = None;
        match msg {
            Message::Data(batch) => {
                records_in = batch.len();
                if batch.read_at().is_some() {
                    self.out.read_at = batch.read_at();
                }
                if batch.appended_ms().is_some() {
                    self.out.appended_ms = batch.appended_ms();
                }
                self.op.process_batch(batch, &mut self.out)
            }
            Message::Watermark(w) => {
                watermark = Some(w);
                self.op.on_watermark(w, &mut self.out)
            }
            Message::Barrier(id) => {
                self.acknowledge(AckOf::Barrier(id));
                self.op.on_barrier(id, &mut self.out)
            }
            Message::Idle => self.op.on_idle(&mut self.out),
            Message::SplitStart(split) => self.op.on_split_start(split, &mut self.out),
            Message::SplitEnd(split) => self.op.on_split_end(split, &mut self.out),
            Message::End => {
                self.op.on_end(&mut self.out);
                self.acknowledge(AckOf::End { exhausted: true });
            }
        }
        let mut messages = self.out.take();
        let dropped = std::mem::take(&mut self.out.dropped);
        let dead = std::mem::take(&mut self.out.dead);
        let deferred = std::mem::take(&mut self.out.deferred.0);
        let late = dropped[DropReason::Late as usize];
        if late > 0 {
            self.late_count.fetch_add(late, Ordering::Relaxed);
        }
        if let Some(m) = &self.metrics {
            let records_out =
                messages.iter().map(|m| if let Message::Data(b) = m { b.len() } else { 0 }).sum();
            m.record(records_in, records_out, dropped);
            m.watermark(watermark, self.op.state_stats());
        }
        if end {
            messages.push(Message::End);
        }
        Box::pin(async move {
            if !dead.is_empty() {
                self.dead_letters.send(dead).await;
            }
            for send in deferred {
                send.await;
            }
            for m in messages {
                self.next.push(m).await?;
            }
            Ok(())
        })
    }
}
