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

/// The names most programs need.
pub mod prelude {
    pub use weir_connectors::{
        FileSink, FileSource, GeneratorSource, Line, LogRecord, LogSink, LogSource, ParseExt, StdoutSink,
    };
    pub use weir_log::{
        AutoOffsetReset, ConsumedBatch, Consumer, ConsumerConfig, Durability, Log, LogOptions, Record,
        StoredRecord, Topic, TopicConfig,
    };
    pub use weir_metrics::{ServerConfig, serve};
    pub use weir_runtime::{
        ApproxDistinctCount, Avg, Batch, Checkpointing, CollectSink, Count, DistinctCount, First,
        KeyedProcess, Last, Max, MemorySource, Metrics, Min, Pipeline, ProcessContext, Quantile, Reduce,
        SessionWindows, SlidingWindows, StopHandle, Stream, Sum, Timestamp, TopK, Traceable, TumblingWindows,
        Watermarks, WindowResult,
    };
}
