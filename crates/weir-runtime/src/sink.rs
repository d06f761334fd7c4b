//! Sinks: where records leave a pipeline.

use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};

use crate::batch::{Batch, Timestamp};
use crate::error::Result;

/// A description of where records go; at run time it makes one [`SinkWriter`] per subtask.
///
/// # Implementing
///
/// A sink names itself and makes a [`SinkWriter`] per subtask, which writes batches and
/// flushes in [`SinkWriter::finish`]. That is an at-least-once sink in a checkpointed
/// pipeline; an exactly-once one also implements [`Sink::transactional_writer`],
/// [`SinkWriter::pre_commit`] and [`Sink::commit`] (see the file and log sinks of
/// `weir-connectors`). Here, a sink that adds up the records of all subtasks:
///
/// ```
/// use std::sync::Arc;
/// use std::sync::atomic::{AtomicU64, Ordering};
///
/// use weir_runtime::{Batch, MemorySource, Pipeline, Result, Sink, SinkWriter};
///
/// #[derive(Clone, Default)]
/// struct Total(Arc<AtomicU64>);
///
/// impl Sink<u64> for Total {
///     type Writer = TotalWriter;
///
///     fn name(&self) -> String {
///         "total".to_owned()
///     }
///
///     fn writer(&self, _subtask: usize, _parallelism: usize) -> Result<TotalWriter> {
///         Ok(TotalWriter { total: self.0.clone(), sum: 0 })
///     }
/// }
///
/// /// Sums its subtask's records, and adds the sum to the total at the end.
/// struct TotalWriter {
///     total: Arc<AtomicU64>,
///     sum: u64,
/// }
///
/// impl SinkWriter<u64> for TotalWriter {
///     async fn write_batch(&mut self, batch: Batch<u64>) -> Result<()> {
///         self.sum += batch.records.iter().sum::<u64>();
///         Ok(())
///     }
///
///     async fn finish(&mut self) -> Result<()> {
///         self.total.fetch_add(self.sum, Ordering::Relaxed);
///         Ok(())
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<()> {
/// let p = Pipeline::builder("total").parallelism(2).handle_signals(false).build()?;
/// let total = Total::default();
/// p.source(MemorySource::new((1..=100u64).collect())).sink(total.clone());
/// p.run().await?;
/// assert_eq!(total.0.load(Ordering::Relaxed), 5_050);
/// # Ok(())
/// # }
/// ```
pub trait Sink<T>: Send + Sync + 'static {
    /// The writer of one subtask.
    type Writer: SinkWriter<T>;

    /// A short name for task names and errors.
    fn name(&self) -> String;

    /// The writer of subtask `subtask` of `parallelism`.
    fn writer(&self, subtask: usize, parallelism: usize) -> Result<Self::Writer>;

    /// The writer of subtask `subtask` in a checkpointed pipeline: it makes nothing visible by
    /// itself, only through [`SinkWriter::pre_commit`] and [`Sink::commit`]. Default:
    /// [`Sink::writer`] (an at-least-once sink: after a restore it sees again what followed the
    /// checkpoint).
    fn transactional_writer(&self, subtask: usize, parallelism: usize) -> Result<Self::Writer> {
        self.writer(subtask, parallelism)
    }

    /// Makes visible what the writers pre-committed for `checkpoint` (their committables, in
    /// subtask order), once the checkpoint is complete. Must be idempotent: after a crash it is
    /// called again, on restore, with the restored checkpoint's committables. Default: nothing.
    fn commit(&self, _checkpoint: u64, _committables: &[Vec<u8>]) -> Result<()> {
        Ok(())
    }

    /// Whether this sink can be rolled back to the restored checkpoint `restored` (`None`: a
    /// fresh start), without changing anything. Called on start for every sink of the
    /// pipeline before any of them is [committed](Sink::commit) again or
    /// [rolled back](Sink::discard_uncommitted): if one refuses, the start is refused and
    /// every output is left as it was. It must return the error
    /// [`Sink::discard_uncommitted`] would, e.g. a topic holding records of a newer
    /// checkpoint, or a file whose history no longer reaches back to `restored`. Default:
    /// `Ok(())`.
    fn check_restore(&self, _restored: Option<u64>) -> Result<()> {
        Ok(())
    }

    /// Removes what writers pre-committed or wrote but was never committed. Called on start,
    /// before any writer exists, once every sink passed [`Sink::check_restore`]: after the restored checkpoint `restored` was committed again,
    /// or with `None` on a fresh start (when earlier output may be replaced).
    ///
    /// With `Some(r)` the output must afterwards hold exactly what checkpoints up to `r`
    /// committed. It may hold more: when the newest checkpoints were damaged or deleted, an
    /// older one is restored, and what the newer ones committed is produced again. A sink
    /// that can cut its output back does (file sinks cut their files back to the length `r`
    /// left); one that cannot must return an error naming what it holds, rather than let the
    /// job commit those results a second time. Default: nothing.
    fn discard_uncommitted(&self, _restored: Option<u64>) -> Result<()> {
        Ok(())
    }

    /// The newest checkpoint a restore may use (`None`: any). A sink whose commit cannot be
    /// repeated after a crash returns the newest checkpoint it committed: a Kafka transaction
    /// left open by a process that died between completing a checkpoint and committing it is
    /// aborted, so that checkpoint's output never became visible, and restoring it would lose
    /// that output. The pipeline restores the newest valid checkpoint no newer than every
    /// sink's limit (`Some(0)`: none, a fresh start) and produces the rest again. Called on
    /// start, before [`Sink::check_restore`]. Default: `None`.
    fn restore_limit(&self) -> Result<Option<u64>> {
        Ok(None)
    }

    /// What an earlier run of a checkpointed pipeline committed to this sink's destination
    /// (`None`: nothing, or the sink cannot tell). A pipeline that finds no checkpoint to
    /// restore refuses to start while a sink reports some (unless started from scratch), and
    /// numbers its checkpoints after the reported id. Default: `None`.
    fn committed_output(&self) -> Result<Option<CommittedOutput>> {
        Ok(None)
    }

    /// What identifies the output independently of the process's working directory (an
    /// absolute path, a topic), saved in checkpoints: a restore whose sink now has another
    /// destination is refused with an error naming both, instead of committing the
    /// checkpoint's output to one place and the rest to another. Default: `None` (not
    /// compared).
    fn destination(&self) -> Option<String> {
        None
    }
}

/// Output a sink's destination holds from an earlier run; see [`Sink::committed_output`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CommittedOutput {
    /// The newest checkpoint whose output it holds, if it records one.
    pub checkpoint: Option<u64>,
    /// What and where, for messages: e.g. `out/rows.jsonl: 1234 bytes committed by checkpoint 17`.
    pub description: String,
}

impl CommittedOutput {
    /// Output committed by `checkpoint` (if known), described by `description`.
    pub fn new(checkpoint: Option<u64>, description: impl Into<String>) -> Self {
        CommittedOutput { checkpoint, description: description.into() }
    }
}

/// Writes batches for one subtask.
pub trait SinkWriter<T>: Send + 'static {
    /// Writes a batch.
    fn write_batch(&mut self, batch: Batch<T>) -> impl Future<Output = Result<()>> + Send;

    /// The input ended: flush and close. A transactional writer (see
    /// [`Sink::transactional_writer`]) is asked to [`pre_commit`](SinkWriter::pre_commit) its
    /// last records first, and only closes here.
    fn finish(&mut self) -> impl Future<Output = Result<()>> + Send;

    /// A checkpoint barrier reached this writer: make what was written since the previous
    /// barrier durable but not yet visible, and return what [`Sink::commit`] needs to make it
    /// visible (the committable; `None` when there is nothing to commit). Default: `None`.
    fn pre_commit(&mut self, _checkpoint: u64) -> impl Future<Output = Result<Option<Vec<u8>>>> + Send {
        std::future::ready(Ok(None))
    }

    /// The writer's input watermark rose to `watermark`: no record with a timestamp
    /// `<= watermark` follows, except late ones. A sink that hands event time on (a Kafka
    /// repartition topic) records it. Default: nothing.
    fn on_watermark(&mut self, _watermark: Timestamp) {}

    /// Bytes written so far, for the `weir_operator_output_bytes_total` metric. Default: 0
    /// (not measured).
    fn bytes_written(&self) -> u64 {
        0
    }
}

/// Collects every record into a shared `Vec`, for tests and examples (at least once in a
/// checkpointed pipeline: it does not pre-commit).
#[derive(Debug)]
pub struct CollectSink<T> {
    records: Arc<Mutex<Vec<T>>>,
}

impl<T> Clone for CollectSink<T> {
    fn clone(&self) -> Self {
        CollectSink { records: self.records.clone() }
    }
}

impl<T: Send + 'static> Default for CollectSink<T> {
    fn default() -> Self {
        CollectSink { records: Arc::new(Mutex::new(Vec::new())) }
    }
}

impl<T: Send + 'static> CollectSink<T> {
    /// An empty collector.
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes what was collected so far.
    pub fn take(&self) -> Vec<T> {
        std::mem::take(&mut *self.records.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

impl<T: Send + 'static> Sink<T> for CollectSink<T> {
    type Writer = CollectSink<T>;

    fn name(&self) -> String {
        "collect".to_owned()
    }

    fn writer(&self, _: usize, _: usize) -> Result<CollectSink<T>> {
        Ok(self.clone())
    }
}

impl<T: Send + 'static> SinkWriter<T> for CollectSink<T> {
    async fn write_batch(&mut self, batch: Batch<T>) -> Result<()> {
        self.records.lock().unwrap_or_else(PoisonError::into_inner).extend(batch.records);
        Ok(())
    }

    async fn finish(&mut self) -> Result<()> {
        Ok(())
    }
}

/// Drops every record (benchmarks).
#[derive(Debug, Clone, Copy, Default)]
pub struct DiscardSink;

impl<T: Send + 'static> Sink<T> for DiscardSink {
    type Writer = DiscardSink;

    fn name(&self) -> String {
        "discard".to_owned()
    }

    fn writer(&self, _: usize, _: usize) -> Result<DiscardSink> {
        Ok(DiscardSink)
    }
}

impl<T: Send + 'static> SinkWriter<T> for DiscardSink {
    async fn write_batch(&mut self, _: Batch<T>) -> Result<()> {
        Ok(())
    }

    async fn finish(&mut self) -> Result<()> {
        Ok(())
    }
}
