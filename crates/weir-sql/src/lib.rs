//! `weir-sql`: streaming SQL on Weir's runtime, with Apache DataFusion doing the parsing,
//! planning, expressions and aggregation over Arrow record batches.
//!
//! ```sql
//! CREATE SOURCE access (ts TIMESTAMP, ip TEXT, method TEXT, path TEXT, status INT, bytes BIGINT,
//!                       latency_ms DOUBLE, WATERMARK FOR ts AS ts - INTERVAL '5' SECOND)
//!   WITH (connector = 'log', topic = 'access', format = 'json');
//! CREATE SINK per_status WITH (connector = 'file', path = 'out/per_status.jsonl', format = 'json') AS
//! SELECT window_start, window_end, status, count(*) AS n, avg(latency_ms) AS avg_ms,
//!        approx_percentile_cont(latency_ms, 0.99) AS p99_ms
//! FROM access WHERE method <> 'OPTIONS'
//! GROUP BY tumble(ts, INTERVAL '1' MINUTE), status;
//! ```
//!
//! # How a query runs
//!
//! 1. [`ddl`]: `CREATE SOURCE` / `CREATE SINK` (Weir's statements) are parsed here; everything
//!    else is DataFusion's SQL.
//! 2. [`window`]: `tumble` / `hop` / `session` in `GROUP BY` become the columns
//!    `window_start, window_end`.
//! 3. [`StreamContext::sql`]: DataFusion plans the query against empty tables of the sources'
//!    schemas; the physical plan is read into streaming operators (see the `plan` module):
//!    source → decode (+ computed columns) → watermarks (per split, as the runtime's
//!    `assign_timestamps`) → scan (window columns) → filters/projections (DataFusion physical
//!    expressions) → exchange by group keys → window aggregate (DataFusion accumulators,
//!    updated per batch, emitted when the watermark passes the window's end) → projections →
//!    sink. Record batches are the runtime's records: one runtime, typed or SQL.
//! 4. [`Script`] runs a file of statements: all its sinks in one pipeline.
//!
//! # Semantics
//!
//! Windows are epoch-aligned and half-open `[start, end)`; a window fires once, when the
//! watermark reaches `end - 1`; rows for a window that already fired are late, dropped and
//! counted (no allowed lateness in SQL yet). Session windows merge `[t, t + gap)` per group
//! when they overlap or touch. Queries that need the whole input (ORDER BY, LIMIT,
//! non-windowed GROUP BY, `OVER (...)`) run as batch queries over a bounded source (files not
//! followed, bounded log sources, batches in memory): its rows are decoded and scanned as a
//! stream's (dead letters and metrics alike), then DataFusion runs the query over all of them
//! at the end of the input and the result leaves as one batch, in order. Over an unbounded
//! source they are refused at planning, with what to write instead, as are queries over several
//! sources (joins), session windows in a batch query, expressions nested deeper than
//! [`MAX_EXPRESSION_DEPTH`] and a `hop` putting a row in more than
//! [`window::MAX_WINDOWS_PER_ROW`] windows.
//!
//! A row an expression fails on (filters, projections, computed columns, a window aggregate's
//! keys and arguments) goes to the dead letters alone, as JSON with the error: a failing batch
//! is evaluated again row by row. A row of a windowed query without an event time (NULL), or
//! whose windows would end after the end of time, goes to the dead letters with the reason.
//! Every input row ends in a result, the late count or the dead letters.
//!
//! # Checkpoints and exactly once
//!
//! A SQL pipeline checkpoints like a typed one: give [`ScriptOptions::checkpointing`] (`weir sql
//! -f FILE --checkpoint-interval 10s`), or build [`SqlStream`]s into a pipeline made with
//! `PipelineBuilder::checkpointing`. A checkpoint holds the window aggregates' state (each
//! group in the key group of its routing hash, so a job restores at another parallelism; the
//! accumulators' intermediate state as Arrow IPC, see the `exec` module), the watermark, and
//! the sources' positions. After a crash or a stop the job restores its latest complete
//! checkpoint and replays the input after it. What is exactly once:
//!
//! | part | guarantee |
//! |---|---|
//! | window aggregates (tumble, hop, session) | exactly once: each row counted once in the state that fires |
//! | `log` sources, `file` sources (csv, json, parquet) | resume at the checkpoint's positions (offsets; file and byte offset; file and row) |
//! | `file` sinks, `json` / `csv` | exactly once: two-phase commit (hidden in-progress files, appended to the final file when the checkpoint completes, once) |
//! | `file` sinks, `parquet` | exactly once: files closed at each barrier, renamed to their final names when the checkpoint completes |
//! | `log` sinks | exactly once: rows held until the checkpoint completes, appended once (`weir.checkpoint` header) |
//! | `kafka` sources | resume at the checkpoint's offsets (committed to the group when a checkpoint completes) |
//! | `kafka` sinks | `exactly-once`: a Kafka transaction per checkpoint, one writer; `at-least-once` (default): flushed at each checkpoint, rows after it written again |
//! | `stdout` sinks, bare queries | at least once: after a restore they print again what followed the checkpoint |
//! | dead letters, late rows | at least once / counted, as in the typed API |
//!
//! Exactly-once sinks make results visible once per checkpoint (the interval is their
//! latency). A snapshot takes each accumulator's intermediate state and merges it back into a
//! fresh one: exact aggregates are unchanged, a t-digest (`approx_percentile_cont`) may
//! recompress, so its estimates can differ slightly from a run without checkpoints. Memory sources resume only at the parallelism they were checkpointed at. A
//! checkpoint restores into the same script: changing a query's GROUP BY or aggregates makes
//! its state fail to restore (start from scratch); the operators are matched by their order in
//! the script.

pub mod ddl;
mod error;
mod exec;
#[cfg(feature = "kafka")]
mod kafka;
mod plan;
mod script;
pub mod sink;
pub mod source;
pub mod window;

pub use error::{Result, SqlError};
pub use plan::{MAX_EXPRESSION_DEPTH, SqlStream, StreamContext};
#[cfg(feature = "kafka")]
pub use script::ScaleOut;
pub use script::{Script, ScriptOptions};
pub use weir_connectors::{ParquetSink, ParquetSource};
