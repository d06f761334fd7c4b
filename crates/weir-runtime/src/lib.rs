//! `weir-runtime`: Weir's dataflow runtime.
//!
//! Users compose `source → map/filter → assign_timestamps → key_by → window → aggregate → sink`
//! with a [`Pipeline`]; the runtime runs it on tokio with batches, not single records, moving
//! between operators and tasks.
//!
//! ```text
//!  subtask 0: source ─► map ─► assign_timestamps ─┐ hash exchange ┌─► window ─► sink
//!                       (one task, fused)          ├──────────────┤   (one task per subtask)
//!  subtask 1: source ─► map ─► assign_timestamps ─┘ bounded chans └─► window ─► sink
//! ```
//!
//! # Message protocol
//!
//! Between operators and tasks flow [`Message`]s: `Data(batch)`, `Watermark(t)`,
//! `Barrier(id)`, `Idle`, `SplitStart(split)`, `SplitEnd(split)` and `End`. Each upstream subtask's messages arrive
//! in order. Watermarks only rise; `Watermark(t)` promises no more records with timestamps
//! `<= t` from that input. A task with several inputs forwards the minimum watermark of its live
//! inputs that are not idle, a barrier once every live input sent it, and `End` once all inputs
//! ended. `SplitStart` and `SplitEnd` stay inside the task that reads the split (a partition
//! announced up front holds that task's watermark back until it sends records; a file or
//! partition read to its end stops holding it back); exchanges drop them. Bounded sources send
//! `Watermark(Timestamp::MAX)` before `End`, so every window fires and the job completes.
//!
//! # Execution
//!
//! One-to-one operators are fused into the task of their source subtask. `key_by` closes those
//! tasks with a hash exchange: each downstream subtask reads one bounded channel, and a full
//! channel makes the sender wait (backpressure, measured in [`JobReport::backpressure`]).
//! Operators implement [`Operator`]: one required method, `process_batch`, and hooks for
//! watermarks, barriers and the end of input. A stream feeds several branches with
//! [`Stream::split`] (or [`Stream::broadcast`]): the task that produced it hands each branch
//! the batches over a bounded channel of its own; a keyed stream splits the same way after its
//! one exchange ([`KeyedStream::split`]), e.g. for a per-minute and a per-hour window.
//!
//! # Event time and windows
//!
//! See the [`time`] module for watermark rules and the [`window`] module for window semantics
//! (half-open, epoch-aligned windows; allowed lateness; late records to a side output, counted),
//! and the [`checkpoint`] module for the checkpoint protocol and what it guarantees. These
//! modules are public for their documentation; their types are re-exported at the crate root.
//!
//! # Determinism
//!
//! For a bounded source ([`Source::is_bounded`]: files, bounded topics, memory) with
//! `assign_timestamps` directly on it, the watermarks, hence which records each window counts
//! and which records are late, depend only on the input and the pipeline's settings
//! (parallelism, batch size), never on how fast each subtask runs: no split or subtask of a
//! bounded source is declared idle by the clock (an idle timeout does not apply), so each
//! watermark is the minimum of what every split's data promised. The order in which results
//! of different keys or subtasks reach a sink is not deterministic.
//!
//! With an unbounded source, an idle timeout ([`Watermarks::with_idle_timeout`]) makes results
//! depend on timing by design (a silent split stops holding windows back after the timeout),
//! and so does processing time ([`Stream::assign_processing_time`]). The runtime measures time
//! on tokio's clock, so tests can pause it.
//!
//! # Dead letters
//!
//! [`Stream::try_map`] sends records it fails on — origin, payload, error — to the dead-letter
//! output, and the pipeline goes on. A panic in user code fails the job with
//! [`Error::Panicked`] naming the task's operators.

mod aggregate;
mod batch;
pub mod checkpoint;
mod dead_letter;
mod error;
mod exchange;
pub mod metrics;
mod operator;
mod ops;
mod pipeline;
pub mod process;
mod sink;
mod source;
pub mod time;
pub mod window;

pub use aggregate::{
    Aggregator, Aggs, ApproxDistinctCount, Avg, Count, DistinctCount, First, Last, Max, Min, Quantile,
    Reduce, Sum, TopBy, TopK,
};
pub use batch::{Batch, Message, Timestamp};
pub use checkpoint::{
    Checkpointing, KEY_GROUPS, SplitPositions, StateReader, StateWriter, decode, encode, key_group,
    subtask_for_hash,
};
pub use dead_letter::{DeadLetter, FIRST_DEAD_LETTERS, Traceable};
pub use error::{BoxError, Error, Result};
pub use exchange::{KeyPartitioner, Partitioner, key_hash};
pub use operator::{Collector, DropReason, Operator, StateStats};
pub use ops::Traced;
pub use pipeline::{
    CheckpointHandle, JobReport, KeyedStream, Pipeline, PipelineBuilder, StopHandle, Stream, WindowedStream,
};
pub use process::{KeyedProcess, ProcessContext};
pub use sink::{CollectSink, CommittedOutput, DiscardSink, Sink, SinkWriter};
pub use source::{MemoryReader, MemorySource, Source, SourceReader};
pub use time::Watermarks;
pub use weir_metrics::Metrics;
pub use window::{SessionWindows, SlidingWindows, TumblingWindows, WindowResult, WindowSpec, format_rfc3339};

/// The names a typical pipeline uses: `use weir_runtime::prelude::*;`.
///
/// It includes [`Stream`], which a program that also imports `futures::Stream` names through
/// a path or an alias, and [`Result`], whose error type defaults to [`Error`] (so
/// `Result<T, E>` still means `std::result::Result<T, E>`).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use weir_runtime::prelude::*;
///
/// fn per_minute(readings: Stream<(i64, u32, f64)>) -> Stream<WindowResult<u32, (u64, f64)>> {
///     readings
///         .assign_timestamps(|r| r.0, Watermarks::monotonic())
///         .key_by(|r| r.1)
///         .window(TumblingWindows::of(Duration::from_secs(60)))
///         .aggregate_with(|a| (a.count(), a.avg(|r| r.2)))
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<()> {
/// let p = Pipeline::builder("prelude").parallelism(1).handle_signals(false).build()?;
/// let out = CollectSink::new();
/// per_minute(p.source(MemorySource::new(vec![(0, 7, 20.0), (1_000, 7, 22.0)]))).sink(out.clone());
/// let report: JobReport = p.run().await?;
/// assert_eq!(report.dead_letters, 0);
/// assert_eq!(out.take()[0].value, (2, 21.0));
/// # Ok(())
/// # }
/// ```
pub mod prelude {
    pub use crate::{
        Aggregator, Aggs, ApproxDistinctCount, Avg, Batch, CheckpointHandle, Checkpointing, CollectSink,
        Collector, Count, DeadLetter, DiscardSink, DistinctCount, Error, First, JobReport, KeyedProcess,
        KeyedStream, Last, Max, MemorySource, Metrics, Min, Operator, Pipeline, PipelineBuilder,
        ProcessContext, Quantile, Reduce, Result, SessionWindows, Sink, SinkWriter, SlidingWindows, Source,
        SourceReader, StopHandle, Stream, Sum, Timestamp, TopBy, TopK, Traceable, TumblingWindows,
        Watermarks, WindowResult, WindowSpec, WindowedStream,
    };
}
