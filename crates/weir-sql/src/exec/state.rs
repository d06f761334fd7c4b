//! The window aggregate's checkpoint state: Arrow IPC entries per key group.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, RecordBatch, RecordBatchOptions, UInt32Array};
use arrow::datatypes::{DataType, Field, Schema};
use datafusion::common::ScalarValue;
use datafusion::logical_expr::Accumulator;
use datafusion::physical_expr::aggregate::AggregateFunctionExpr;
use serde::{Deserialize, Serialize};
use weir_runtime::{StateWriter, Timestamp, key_group};

use super::key_hashes;

pub(super) fn scalars_to_array(
    scalars: Vec<ScalarValue>,
    data_type: &DataType,
) -> datafusion::error::Result<ArrayRef> {
    if scalars.is_empty() {
        return Ok(arrow::array::new_empty_array(data_type));
    }
    ScalarValue::iter_to_array(scalars)
}

/// The version of the window aggregate's checkpoint state; another version is refused.
pub(super) const STATE_VERSION: u32 = 1;

/// The operator-wide state of one subtask.
#[derive(Serialize, Deserialize)]
pub(super) struct Meta {
    pub(super) version: u32,
    pub(super) watermark: Timestamp,
}

/// One keyed entry: the groups of one key group, as an Arrow IPC stream of one record batch.
#[derive(Serialize, Deserialize)]
pub(super) enum Entry {
    /// Tumbling and sliding windows: the groups of the window `[start, end)`; columns: the
    /// group keys, then each aggregate's state.
    Window { key_group: u16, start: i64, end: i64, groups: Vec<u8> },
    /// Session windows: one row per session; columns: the group keys, start, end, then each
    /// aggregate's state.
    Sessions { key_group: u16, sessions: Vec<u8> },
}

pub(super) fn checkpoint_error(what: &str, e: impl std::fmt::Display) -> weir_runtime::Error {
    weir_runtime::Error::Checkpoint(format!("window aggregate: {what}: {e}"))
}

/// `columns` (of `rows` rows) as an Arrow IPC stream.
pub(super) fn to_ipc(columns: Vec<ArrayRef>, rows: usize) -> Result<Vec<u8>, arrow::error::ArrowError> {
    let fields: Vec<Field> = columns
        .iter()
        .enumerate()
        .map(|(i, c)| Field::new(format!("c{i}"), c.data_type().clone(), true))
        .collect();
    let schema = Arc::new(Schema::new(fields));
    let options = RecordBatchOptions::new().with_row_count(Some(rows));
    let batch = RecordBatch::try_new_with_options(schema.clone(), columns, &options)?;
    let mut writer = arrow::ipc::writer::StreamWriter::try_new(Vec::new(), &schema)?;
    writer.write(&batch)?;
    writer.into_inner()
}

/// The record batch [`to_ipc`] wrote.
pub(super) fn from_ipc(bytes: &[u8]) -> Result<RecordBatch, String> {
    let mut reader = arrow::ipc::reader::StreamReader::try_new(bytes, None).map_err(|e| e.to_string())?;
    match reader.next() {
        Some(batch) => batch.map_err(|e| e.to_string()),
        None => Err("no record batch".into()),
    }
}

/// Writes `columns` (`rows` rows; the first `keys` are the group keys) as one entry per key
/// group of the rows' routing hashes, made by `entry(key_group, ipc)`.
pub(super) fn put_by_key_group(
    state: &mut StateWriter,
    columns: Vec<ArrayRef>,
    keys: usize,
    rows: usize,
    entry: impl Fn(u16, Vec<u8>) -> Entry,
) -> weir_runtime::Result<()> {
    let hashes = key_hashes(&columns[..keys], rows).map_err(|e| checkpoint_error("hash group keys", e))?;
    let mut order: Vec<u32> = (0..rows as u32).collect();
    order.sort_by_key(|&i| key_group(hashes[i as usize]));
    let sorted: Vec<ArrayRef> = if order.iter().enumerate().all(|(i, o)| *o as usize == i) {
        columns
    } else {
        let take = UInt32Array::from(order.clone());
        columns
            .iter()
            .map(|c| arrow::compute::take(c, &take, None))
            .collect::<Result<_, _>>()
            .map_err(|e| checkpoint_error("group state", e))?
    };
    let mut start = 0;
    while start < rows {
        let hash = hashes[order[start] as usize];
        let group = key_group(hash);
        let end =
            start + order[start..].iter().take_while(|&&i| key_group(hashes[i as usize]) == group).count();
        let part = sorted.iter().map(|c| c.slice(start, end - start)).collect();
        let bytes = to_ipc(part, end - start).map_err(|e| checkpoint_error("encode state", e))?;
        state.put_hashed(hash, &entry(group, bytes))?;
        start = end;
    }
    Ok(())
}

/// Checks that the restored key columns still hash to the key group they were saved in.
pub(super) fn check_key_group(keys: &[ArrayRef], rows: usize, saved: u16) -> weir_runtime::Result<()> {
    let hashes = key_hashes(keys, rows).map_err(|e| checkpoint_error("hash group keys", e))?;
    if hashes.iter().any(|h| key_group(*h) != saved) {
        return Err(checkpoint_error(
            "restore",
            "the group keys no longer hash to the key group they were saved in (was Weir or \
             DataFusion upgraded, or the query's GROUP BY changed?); start from scratch",
        ));
    }
    Ok(())
}

/// A fresh row accumulator with `state` merged in.
pub(super) fn rebuilt(
    aggregate: &AggregateFunctionExpr,
    state: &[ScalarValue],
) -> datafusion::error::Result<Box<dyn Accumulator>> {
    let mut acc = aggregate.create_accumulator()?;
    let arrays = state.iter().map(ScalarValue::to_array).collect::<datafusion::error::Result<Vec<_>>>()?;
    acc.merge_batch(&arrays)?;
    Ok(acc)
}
