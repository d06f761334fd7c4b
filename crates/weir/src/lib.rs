//! Weir: an embedded, persistent stream processing framework.
//!
//! This facade re-exports Weir's crates; depend on `weir` and `use weir::prelude::*`.

pub use weir_log as log;

/// The names most programs need.
pub mod prelude {
    pub use weir_log::{
        AutoOffsetReset, ConsumedBatch, Consumer, ConsumerConfig, Durability, Log, LogOptions, Record,
        StoredRecord, Topic, TopicConfig,
    };
}
