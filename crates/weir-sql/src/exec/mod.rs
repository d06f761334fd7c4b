//! The streaming operators a SQL plan runs as, on Arrow record batches.
//!
//! - [`Scan`]: appends `window_start` / `window_end` (a sliding window repeats a row once per
//!   window) and keeps the columns DataFusion's scan asked for.
//! - [`Filter`], [`Project`]: DataFusion physical expressions, batch by batch.
//! - [`KeyHash`]: the exchange: rows go to the subtask that owns the key group of
//!   `hash(group keys)` (see the runtime's `subtask_for_hash`).
//! - [`BatchQuery`]: on a bounded source, a query a stream cannot answer (`ORDER BY`, `LIMIT`,
//!   `GROUP BY` without a window), run by DataFusion over all the rows at the end of the input.
//! - [`WindowAggregate`]: per window and group, DataFusion groups accumulators updated as rows
//!   arrive (state is the accumulators', never the rows); a window is emitted and dropped when
//!   the watermark passes its end − 1. Session windows keep per-group sessions with row
//!   accumulators and merge them as in the runtime's session windows.
//!
//! Rows whose window already closed when they arrive are late: dropped and counted
//! (`weir_operator_dropped_records_total{reason="late"}`).
//!
//! # No row lost without a trace
//!
//! Expressions are evaluated on a whole batch; when that fails (a division by zero, a CAST of
//! one bad value), the batch is evaluated again row by row ([`batch_or_rows`]): the good rows go
//! on, and each failing row alone goes to the dead letters, as JSON, with the error. The same
//! holds for filters, computed columns and the window aggregate's keys and arguments. A row
//! without an event time (its time column NULL: missing from the record, null, or declared
//! under a name the records do not use) belongs to no window: the scan sends it to the dead
//! letters, with the reason. So every input row of a windowed query ends in a window, in the
//! late count, or in the dead letters.
//!
//! A dead letter's origin names the source (`source <name>`); while rows still map to the
//! records they were decoded from (decoding and computed columns), it adds where the record was
//! read (`source <name>: <path>:<line>`, `source <name>: <topic>/<partition>@<offset>`).
//!
//! # Checkpoints
//!
//! The exchange routes a row by the hash of its group keys — arrow's `create_hashes` (as
//! DataFusion computes it, with a fixed seed) over the key columns — to
//! [`subtask_for_hash`], the owner of the hash's key group. The window aggregate saves each
//! group in the key group of that same hash, recomputed from the group's key columns, so a
//! checkpoint taken at one parallelism restores at any other. Its state:
//!
//! - meta: `(format version, watermark)`; a restored subtask takes the lowest watermark of the
//!   old subtasks (they all saw the same watermarks before the barrier);
//! - per key group and window (tumble, hop): the groups' key columns, then each aggregate's
//!   intermediate state (DataFusion's `GroupsAccumulator::state`, the arrays its multi-phase
//!   aggregation merges), as one Arrow IPC stream; restored with `merge_batch` into fresh
//!   accumulators;
//! - per key group (session): the sessions' key columns, start, end, and each row
//!   accumulator's `state()`, as one Arrow IPC stream.
//!
//! Taking a state drains DataFusion's accumulators, so a snapshot merges it straight back into
//! fresh ones and the job goes on with the same values. Arrow IPC is Arrow's own stable
//! serialization: every type an accumulator state can have (lists, structs, decimals, views)
//! round-trips, with no second encoding of `ScalarValue`s to maintain. Each entry also names its
//! key group, and a restore checks that the keys still hash to it (a DataFusion upgrade that
//! changed the hash would otherwise send a key's rows to another subtask than its state).

mod batch;
mod exchange;
mod state;
mod stateless;
mod window_aggregate;

pub(crate) use batch::{BatchQuery, ToFirst};
pub(crate) use exchange::{KeyHash, key_hashes};
pub(crate) use stateless::{Filter, Project, Scan};
pub(crate) use window_aggregate::{AggregateSpec, WindowAggregate};

use arrow::array::{Array, ArrayRef, AsArray, Int64Array, RecordBatch};
use arrow::datatypes::{DataType, SchemaRef, TimeUnit, TimestampMillisecondType};
use weir_runtime::{Collector, DeadLetter, Timestamp};

/// The event time of the rows of `column`, in ms (a timestamp of any unit, or integers taken as
/// ms).
pub(crate) fn event_time_ms(column: &ArrayRef) -> Option<Int64Array> {
    let ms = match column.data_type() {
        DataType::Timestamp(TimeUnit::Millisecond, None) => column.clone(),
        DataType::Timestamp(..) | DataType::Date32 | DataType::Date64 => {
            arrow::compute::cast(column, &DataType::Timestamp(TimeUnit::Millisecond, None)).ok()?
        }
        DataType::Int64 | DataType::Int32 | DataType::UInt32 | DataType::UInt64 => {
            return arrow::compute::cast(column, &DataType::Int64).ok().map(|a| a.as_primitive().clone());
        }
        _ => return None,
    };
    let ts = ms.as_primitive::<TimestampMillisecondType>();
    Some(Int64Array::new(ts.values().clone(), ts.nulls().cloned()))
}

/// The largest event time of a batch, for watermarks.
pub(crate) fn max_event_time(batch: &RecordBatch, column: usize) -> Timestamp {
    event_time_ms(batch.column(column)).and_then(|a| arrow::compute::max(&a)).unwrap_or(Timestamp::MIN)
}

/// A row of `batch` as one JSON object (nulls included), for a dead letter.
pub(crate) fn row_json(batch: &RecordBatch, row: usize) -> String {
    let mut writer = arrow::json::WriterBuilder::new()
        .with_explicit_nulls(true)
        .build::<_, arrow::json::writer::LineDelimited>(Vec::new());
    match writer.write(&batch.slice(row, 1)).and_then(|()| writer.finish()) {
        Ok(()) => String::from_utf8_lossy(&writer.into_inner()).trim_end().to_owned(),
        Err(e) => format!("(row {row} of a batch of {} rows: not encodable as JSON: {e})", batch.num_rows()),
    }
}

/// The origin of a dead letter of a query over source `source`: `source` and, where the
/// row's record is known, where it was read (`<path>:<line>`, `<topic>/<partition>@<offset>`).
pub(crate) fn origin(source: &str, record: Option<&str>) -> String {
    match record {
        Some(r) if !r.is_empty() => format!("source {source}: {r}"),
        _ => format!("source {source}"),
    }
}

/// `f` over `batch`, or, if that fails, over each row alone: the results of the rows it
/// succeeds on, in order; each row it fails on goes to the dead letters of `operator`, as JSON,
/// with the error and `origin(row)`.
pub(crate) fn batch_or_rows<T, E: std::fmt::Display>(
    batch: &RecordBatch,
    operator: &str,
    origin: &dyn Fn(usize) -> String,
    out: &mut Collector<RecordBatch>,
    f: impl Fn(&RecordBatch) -> Result<T, E>,
) -> Vec<T> {
    if let Ok(t) = f(batch) {
        return vec![t];
    }
    let mut results = Vec::new();
    for row in 0..batch.num_rows() {
        match f(&batch.slice(row, 1)) {
            Ok(t) => results.push(t),
            Err(e) => out.dead_letter(DeadLetter {
                operator: operator.into(),
                origin: origin(row),
                payload: row_json(batch, row),
                error: e.to_string(),
            }),
        }
    }
    results
}

/// The batches of `parts` (of `schema`) as one; if that fails, a dead letter of `operator`
/// from `origin` that says how many rows were lost.
pub(crate) fn concat(
    schema: &SchemaRef,
    parts: Vec<RecordBatch>,
    operator: &str,
    origin: &str,
    out: &mut Collector<RecordBatch>,
) -> Option<RecordBatch> {
    match parts.len() {
        0 => None,
        1 => parts.into_iter().next(),
        _ => match arrow::compute::concat_batches(schema, &parts) {
            Ok(b) => Some(b),
            Err(e) => {
                report(out, operator, origin, parts.iter().map(RecordBatch::num_rows).sum(), e);
                None
            }
        },
    }
}

pub(super) fn report(
    out: &mut Collector<RecordBatch>,
    operator: &str,
    origin: &str,
    rows: usize,
    error: impl std::fmt::Display,
) {
    out.dead_letter(DeadLetter {
        operator: operator.into(),
        origin: origin.into(),
        payload: format!("a batch of {rows} rows"),
        error: error.to_string(),
    });
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use arrow::array::{Float64Array, Int32Array, StringArray, StringViewArray, TimestampMillisecondArray};

    use super::*;
    use std::sync::Arc;

    use arrow::row::{RowConverter, SortField};
    use weir_runtime::subtask_for_hash;

    use super::state::{from_ipc, to_ipc};

    /// The window aggregate saves a group in the key group of the hash of its key columns as
    /// the row converter gives them back; the exchange routed its rows by the hash of the
    /// evaluated columns. Both must be the same hash, or a restore at another parallelism puts
    /// state where the key's rows do not go.
    #[test]
    fn keys_hash_the_same_after_a_round_trip_through_rows() {
        let columns: Vec<ArrayRef> = vec![
            Arc::new(Int32Array::from(vec![Some(200), None, Some(-1), Some(404), Some(200)])),
            Arc::new(StringArray::from(vec![Some("GET"), Some(""), None, Some("é"), Some("GET")])),
            Arc::new(StringViewArray::from(vec![
                Some("a long string value, longer than twelve"),
                None,
                Some("x"),
                Some(""),
                Some("y"),
            ])),
            Arc::new(Float64Array::from(vec![Some(0.0), Some(-0.0), Some(f64::NAN), None, Some(1.5)])),
            Arc::new(TimestampMillisecondArray::from(vec![Some(1), None, Some(-5), Some(0), Some(i64::MAX)])),
        ];
        let converter =
            RowConverter::new(columns.iter().map(|c| SortField::new(c.data_type().clone())).collect())
                .unwrap();
        let rows = converter.convert_columns(&columns).unwrap();
        let back = converter.convert_rows(rows.iter()).unwrap();
        for n in 1..=columns.len() {
            assert_eq!(
                key_hashes(&columns[..n], 5).unwrap(),
                key_hashes(&back[..n], 5).unwrap(),
                "{n} columns"
            );
        }
        // No key columns: one global group, in key group 0 (subtask 0 at any parallelism).
        assert_eq!(key_hashes(&[], 3).unwrap(), vec![0; 3]);
        assert!((1..=1024).all(|n| subtask_for_hash(0, n) == 0));
    }

    #[test]
    fn state_batches_round_trip_through_arrow_ipc_even_without_columns() {
        let columns: Vec<ArrayRef> = vec![Arc::new(Int32Array::from(vec![1, 2, 3]).slice(1, 2))];
        let bytes = to_ipc(columns.clone(), 2).unwrap();
        let batch = from_ipc(&bytes).unwrap();
        assert_eq!(batch.num_rows(), 2);
        assert_eq!(batch.column(0).as_ref(), columns[0].as_ref());
        let empty = from_ipc(&to_ipc(Vec::new(), 7).unwrap()).unwrap();
        assert_eq!((empty.num_columns(), empty.num_rows()), (0, 7));
        assert!(from_ipc(b"not ipc").is_err());
    }
}
