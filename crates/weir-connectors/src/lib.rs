//! `weir-connectors`: where Weir's records come from and where they go.
//!
//! Every connector implements weir-runtime's [`Source`](weir_runtime::Source) /
//! [`SourceReader`](weir_runtime::SourceReader) or [`Sink`](weir_runtime::Sink) /
//! [`SinkWriter`](weir_runtime::SinkWriter) traits and moves **batches**, never single records.
//! The runtime knows nothing of them; they know the runtime's traits and the log's public API.
//!
//! ```text
//!  FileSource::lines / json_lines / csv ──┐                                ┌──► FileSink::json_lines / csv
//!    (one split per file; follow mode,    │                                │      (one file per subtask)
//!     rotation, truncation)               │                                ├──► StdoutSink::json / table
//!  LogSource::topic (consumer group,      ├──► Pipeline (weir-runtime) ───┤
//!    one split per partition, commits)    │     try_map / parsed():        ├──► LogSink::topic (JSON values,
//!  GeneratorSource (n records, rate)  ────┘     bad records → dead letters ┘       keys, event time)
//!                                                        │
//!                                                        └──► Pipeline::dead_letters(LogSink::dead_letters)
//!                                                               → topic `<pipeline>.dlq`
//! ```
//!
//! | connector | kind | splits | rules |
//! |---|---|---|---|
//! | [`FileSource`] | bounded, or unbounded with [`FileSource::follow`] | one per file | [`file_source`] (paths and globs: [`files`]) |
//! | [`LogSource`] | unbounded, or bounded with [`LogSource::bounded`] | one per partition | [`log_source`] |
//! | [`GeneratorSource`] | bounded (`n` records), optionally rate-limited | one per subtask | [`generator`] |
//! | `ParquetSource` (feature `parquet`) | bounded, Arrow record batches | one per file | `parquet_io` |
//! | [`FileSink`] | JSON lines or CSV, one file per subtask | — | [`file_sink`] |
//! | [`StdoutSink`] | JSON lines or an aligned table per batch | — | [`stdout`] |
//! | [`LogSink`] | JSON (or raw) values into a log topic; dead-letter topics (the payload as the value, the reason in headers) | — | [`log_sink`] |
//! | `ParquetSink` (feature `parquet`) | rolling Parquet files | — | `parquet_io` |
//!
//! In a checkpointed pipeline the file, Parquet and log sinks are exactly once (two-phase
//! commit, see their modules); [`file_commit`] holds the file protocol, for other sinks that
//! write files.
//!
//! # Features
//!
//! - `parquet` (off by default): `ParquetSource` and `ParquetSink`, Parquet files as Arrow
//!   record batches in typed pipelines, with the arrow and parquet crates and no SQL engine.
//!
//! # Bad records
//!
//! A source cannot send dead letters: only the runtime's
//! [`Stream::try_map`](weir_runtime::Stream::try_map) can. So sources never parse.
//! [`FileSource::json_lines`] and [`FileSource::csv`] yield the raw lines typed with the record
//! they should become ([`JsonLine<T>`], [`CsvLine<T>`]); [`ParseExt::parsed`] (which is
//! `try_map(Parse::parse)`) turns them into `T`s and sends every line that fails, with its
//! `path:line` origin, to the pipeline's dead-letter output. One bad line never stops a pipeline,
//! and never affects the lines around it (a line is always one record).
//!
//! ```no_run
//! use weir_connectors::{FileSource, LogSink, ParseExt, StdoutSink};
//! use weir_runtime::Pipeline;
//!
//! #[derive(serde::Deserialize, serde::Serialize)]
//! struct Trade { symbol: String, price: f64 }
//!
//! # async fn run(log: weir_log::Log) -> weir_runtime::Result<()> {
//! let p = Pipeline::builder("trades").build()?;
//! p.dead_letters(LogSink::dead_letters(&log, p.name())); // to topic `trades.dlq`
//! p.source(FileSource::csv::<Trade>("trades/*.csv")).parsed().sink(StdoutSink::table());
//! p.run().await?;
//! # Ok(())
//! # }
//! ```
//!
//! # Errors
//!
//! I/O and log failures are [`weir_runtime::Error::Connector`] whose operator names the connector
//! and its path or topic (e.g. `file source /var/log/app.log`, `log sink events`); they fail the
//! job. The original error stays in the chain of [`source`](std::error::Error::source)s: a
//! `weir_log::Error` (e.g. `StorageFull`, `Poisoned`) or a `std::io::Error` can be downcast from
//! it. Invalid settings (a batch size of 0) are [`weir_runtime::Error::InvalidConfig`] naming the
//! field, reported when the pipeline starts the connector.
//!
//! # Blocking I/O
//!
//! File reads and writes are buffered, blocking calls made inside the async reader and writer: a
//! batch costs microseconds from the page cache, and keeping them synchronous keeps
//! [`SourceReader::next_batch`](weir_runtime::SourceReader::next_batch) cancel safe (its only
//! await points hold no data). Log appends and commits, which may wait for `fdatasync`, run on
//! tokio's blocking pool (`spawn_blocking`) in the log sink; the log source's commit is a
//! blocking call on the task (one per poll, not per record).

// Each connector's module documents its rules (splits, rotation, commits, the single-writer
// rule); the modules are public so that rustdoc shows them, and their types are re-exported here.
pub mod file_commit;
pub mod file_sink;
pub mod file_source;
pub mod files;
pub mod generator;
pub mod log_sink;
pub mod log_source;
#[cfg(feature = "parquet")]
pub mod parquet_io;
mod parse;
pub mod stdout;

pub use file_sink::{FileSink, FileWriter};
pub use file_source::{Csv, FileReader, FileSource, JsonLines, Line, LineFormat, Lines};
pub use generator::{GeneratorReader, GeneratorSource};
pub use log_sink::{
    CHECKPOINT_HEADER, DEAD_LETTER_ERROR_HEADER, DEAD_LETTER_OPERATOR_HEADER, DEAD_LETTER_ORIGIN_HEADER,
    LogSink, LogWriter,
};
pub use log_source::{LogReader, LogRecord, LogSource};
#[cfg(feature = "parquet")]
pub use parquet_io::{ParquetReader, ParquetSink, ParquetSource, ParquetWriter};
pub use parse::{CsvHeader, CsvLine, JsonLine, Parse, ParseError, ParseExt, parse_json};
pub use stdout::{StdoutSink, StdoutWriter};

/// Default records per batch of every source here.
pub const DEFAULT_BATCH_SIZE: usize = 1024;

/// A connector error: `operator` names the connector and its path or topic; `source` is the
/// error as raised (a `weir_log::Error`, an `io::Error`, …: reachable by
/// [`source`](std::error::Error::source)), or a message.
pub(crate) fn connector_error(
    connector: &str,
    target: impl std::fmt::Display,
    source: impl Into<weir_runtime::BoxError>,
) -> weir_runtime::Error {
    weir_runtime::Error::connector(format!("{connector} {target}"), source)
}

/// What a connector was doing when `source` failed; `source` stays reachable by
/// [`source`](std::error::Error::source).
#[derive(Debug, thiserror::Error)]
#[error("{action}: {source}")]
pub(crate) struct Failed {
    action: String,
    source: weir_runtime::BoxError,
}

impl Failed {
    pub(crate) fn new(action: impl std::fmt::Display, source: impl Into<weir_runtime::BoxError>) -> Failed {
        Failed { action: action.to_string(), source: source.into() }
    }
}

/// Checks a batch size setting.
pub(crate) fn check_batch_size(n: usize) -> weir_runtime::Result<()> {
    if n == 0 {
        return Err(weir_runtime::Error::InvalidConfig {
            field: "batch_size",
            reason: "must be at least 1".into(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod send_sync {
    fn assert_send_sync<T: Send + Sync>() {}
    fn assert_send<T: Send>() {}

    #[test]
    fn public_types_are_send_and_sync() {
        assert_send_sync::<super::FileSource>();
        assert_send_sync::<super::FileSource<super::Csv<u32>>>();
        assert_send_sync::<super::FileSink>();
        assert_send_sync::<super::StdoutSink>();
        assert_send_sync::<super::LogSource>();
        assert_send_sync::<super::LogSink<u32>>();
        assert_send_sync::<super::Line>();
        assert_send_sync::<super::LogRecord>();
        assert_send_sync::<super::ParseError>();
        assert_send::<super::FileReader<super::Lines>>();
        assert_send::<super::LogReader>();
        assert_send::<super::FileWriter>();
        assert_send::<super::LogWriter<u32>>();
    }
}
