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
//! non-windowed GROUP BY) or several sources (joins) are refused at planning, with what to write
//! instead.

pub mod ddl;
mod error;
mod exec;
mod parquet_io;
mod plan;
mod script;
pub mod sink;
pub mod source;
pub mod window;

pub use error::{Result, SqlError};
pub use parquet_io::{ParquetSink, ParquetSource};
pub use plan::{SqlStream, StreamContext};
pub use script::{Script, ScriptOptions};
