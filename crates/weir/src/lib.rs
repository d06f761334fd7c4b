//! Weir: an embedded, persistent stream processing framework.
//!
//! This facade re-exports Weir's crates; depend on `weir` and `use weir::prelude::*`.
//! - [`log`]: the embedded partitioned log (topics, partitions, consumer groups, retention).
//! - [`runtime`]: the dataflow runtime (pipelines, event time, windows, aggregation).
//! - [`connectors`]: sources and sinks (files, log topics, generators, stdout).
//! - [`metrics`]: the metric catalog, the registry and the `/metrics` endpoint.
//! - `sql` (feature `sql`, default): streaming SQL on DataFusion.

pub use weir_connectors as connectors;
pub use weir_log as log;
pub use weir_metrics as metrics;
pub use weir_runtime as runtime;
#[cfg(feature = "sql")]
pub use weir_sql as sql;

/// The names most programs need: the runtime's [`prelude`](weir_runtime::prelude) (pipelines,
/// streams, windows, aggregators, checkpoints, reports, dead letters, the extension traits), the
/// connectors and the log.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use weir::prelude::*;
///
/// /// A job's parts, held by the program: every type is nameable.
/// struct Job {
///     pipeline: Pipeline,
///     by_sensor: KeyedStream<u32, (i64, u32)>,
///     dead_letters: CollectSink<DeadLetter>,
/// }
///
/// fn per_minute(by_sensor: KeyedStream<u32, (i64, u32)>) -> WindowedStream<u32, (i64, u32)> {
///     by_sensor.window(TumblingWindows::of(Duration::from_secs(60)))
/// }
///
/// # fn main() -> Result<()> {
/// let pipeline = Pipeline::builder("tour").checkpointing(Checkpointing::to_dir("checkpoints")).build()?;
/// let by_sensor = pipeline
///     .source(MemorySource::new(vec![(0i64, 1u32)]))
///     .assign_timestamps(|r| r.0, Watermarks::monotonic())
///     .key_by(|r| r.1);
/// let job = Job { pipeline, by_sensor, dead_letters: CollectSink::new() };
/// job.pipeline.dead_letters(job.dead_letters.clone());
/// per_minute(job.by_sensor).aggregate(Count).sink(DiscardSink);
/// // `job.pipeline.run().await` returns a `JobReport`.
/// # Ok(())
/// # }
/// ```
pub mod prelude {
    pub use weir_connectors::{
        FileSink, FileSource, GeneratorSource, Line, LogRecord, LogSink, LogSource, ParseExt, StdoutSink,
    };
    pub use weir_log::{
        AutoOffsetReset, ConsumedBatch, Consumer, ConsumerConfig, Durability, Log, LogOptions, Record,
        StoredRecord, Topic, TopicConfig,
    };
    pub use weir_runtime::prelude::*;
}
