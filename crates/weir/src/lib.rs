//! Weir: an embedded, persistent stream processing framework.
//!
//! This facade re-exports Weir's crates; depend on `weir` and `use weir::prelude::*`.
//! - [`log`]: the embedded partitioned log (topics, partitions, consumer groups, retention).
//! - [`runtime`]: the dataflow runtime (pipelines, event time, windows, aggregation).

pub use weir_log as log;
pub use weir_runtime as runtime;

/// The names most programs need.
pub mod prelude {
    pub use weir_log::{
        AutoOffsetReset, ConsumedBatch, Consumer, ConsumerConfig, Durability, Log, LogOptions, Record,
        StoredRecord, Topic, TopicConfig,
    };
    pub use weir_runtime::{
        Avg, Batch, CollectSink, Count, DistinctCount, First, Last, Max, MemorySource, Min, Pipeline,
        Quantile, SessionWindows, SlidingWindows, Stream, Sum, Timestamp, Traceable, TumblingWindows,
        Watermarks, WindowResult,
    };
}
