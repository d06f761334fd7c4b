//! Weir: stream processing in Rust on an embedded, persistent, partitioned log.
//!
//! Depend on `weir` and `use weir::prelude::*`. This crate re-exports Weir's crates, one module
//! each; every design rule (the log's on-disk format and recovery, the message protocol and
//! watermark rules, the checkpoint protocol, each connector's splits and commits) is documented
//! in the module that implements it.
//!
//! # The pieces
//!
//! ```text
//!  sources ───────────────► pipeline (weir::runtime) ─────────────────────► sinks
//!  files (lines, JSON,        map / filter / try_map ─► dead letters        files (JSON lines, CSV)
//!    CSV, Parquet*),          assign_timestamps + watermarks                Parquet*, stdout,
//!  log topics, generators,    key_by ═ hash exchange, bounded channels ═╗   log topics,
//!  your own `Source`          window / aggregate / process  ◄═══════════╝   your own `Sink`
//!          ▲                  checkpoints: barriers, state, 2-phase commit          │
//!          │                                                                         ▼
//!  [ weir::log: topics / partitions / segments / consumer groups, in one directory ]
//!
//!  every component ──► weir::metrics (catalog, registry) ──► /metrics ──► Prometheus, Grafana
//!  weir::sql*: SQL (DataFusion) compiled to the same pipelines            (* opt-in features)
//! ```
//!
//! - [`log`]: the embedded log — topics, partitions, segments, consumer groups, retention, crash
//!   recovery — as a library that opens a directory. Its crate docs are the storage design.
//! - [`runtime`]: pipelines — fused one-to-one operators, hash exchanges, event time and
//!   watermarks ([`runtime::time`]), windows ([`runtime::window`]), aggregators, dead letters,
//!   checkpoints and exactly-once output ([`runtime::checkpoint`]).
//! - [`connectors`]: sources and sinks for files, log topics, generators and stdout.
//! - [`metrics`]: the metric catalog (every name Weir exports) and the registry.
//! - `sql` (feature `sql`): streaming SQL on DataFusion over the same runtime.
//! - `kafka` (feature `kafka`): Apache Kafka sources and sinks, and a pipeline spread over processes.
//! - `features` (feature `features`): feature views — per-entity aggregates over sliding
//!   event-time windows, kept in a pipeline's checkpointed state and looked up in process.
//!
//! # A pipeline
//!
//! Count events per key in one-second tumbling windows of event time:
//!
//! ```
//! use std::time::Duration;
//! use weir::prelude::*;
//!
//! #[tokio::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     // (event time in ms, key)
//!     let events = vec![(0, 'a'), (300, 'b'), (900, 'a'), (1_200, 'a'), (1_500, 'b')];
//!     let out = CollectSink::new();
//!     let p = Pipeline::builder("counts").parallelism(2).build()?;
//!     p.source(MemorySource::new(events))
//!         .assign_timestamps(|e| e.0, Watermarks::monotonic())
//!         .key_by(|e| e.1)
//!         .window(TumblingWindows::of(Duration::from_secs(1)))
//!         .aggregate(Count)
//!         .map(|w| (w.window_start, w.key, w.value))
//!         .sink(out.clone());
//!     p.run().await?; // a bounded source: the final watermark fires every window, then it ends
//!
//!     let mut counts = out.take();
//!     counts.sort();
//!     assert_eq!(counts, [(0, 'a', 2), (0, 'b', 1), (1_000, 'a', 1), (1_000, 'b', 1)]);
//!     Ok(())
//! }
//! ```
//!
//! The same pipeline reads a file with [`connectors::FileSource`], a log topic with
//! [`connectors::LogSource`], and writes exactly once with [`connectors::FileSink`] or
//! [`connectors::LogSink`] when checkpointing is on ([`runtime::Checkpointing`]).
//!
//! # Feature flags
//!
//! None is on by default: `weir` with default features compiles the log, the runtime, the
//! connectors and the metric registry, and no SQL engine, HTTP stack or command-line parser.
//!
//! | feature | adds | brings in |
//! |---|---|---|
//! | `parquet` | `connectors::{ParquetSource, ParquetSink}`: Parquet files as Arrow record batches in typed pipelines | arrow, parquet |
//! | `sql` | the `sql` module: streaming SQL (`CREATE SOURCE` / `CREATE SINK`, windows in `GROUP BY`, ad-hoc queries); implies `parquet` | DataFusion |
//! | `kafka` | the `kafka` module: Apache Kafka sources and sinks (exactly once through transactions); with `sql`, SQL's `connector = 'kafka'` | librdkafka (built from source) |
//! | `features` | the `features` module: feature views (sliding per-entity aggregates, lookups at any time) | nothing beyond the runtime |
//!
//! The `weir` command-line tool is the separate `weir-cli` crate
//! (`cargo install --path crates/weir-cli`, or `cargo run -p weir-cli --` in the repository).
//!
//! A program needs tokio with the `rt-multi-thread` and `macros` features for `#[tokio::main]`;
//! Weir logs through `tracing`, so install a subscriber (e.g. `tracing-subscriber`) to see its
//! warnings.
//!
//! # What Weir is not
//!
//! - Not a broker: there is no network protocol and no replication. One process opens a log
//!   directory for writing at a time (an OS file lock enforces it).
//! - Not a cluster: a pipeline runs in one process, on tokio. Reading from and writing to
//!   Apache Kafka, to scale past one machine, is planned and not built.
//! - Not a batch engine: SQL runs as streaming pipelines; windows close on watermarks.

pub use weir_connectors as connectors;
#[cfg(feature = "features")]
pub use weir_features as features;
#[cfg(feature = "kafka")]
pub use weir_kafka as kafka;
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
    pub use weir_metrics::{ServerConfig, serve};
    pub use weir_runtime::prelude::*;
}

/// The Rust snippets of the repository's README, compiled and run as doctests
/// (`cargo test --doc -p weir`), so the README cannot drift from the API.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
pub struct ReadmeDoctests;
