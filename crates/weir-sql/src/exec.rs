//! The streaming operators a SQL plan runs as, on Arrow record batches.
//!
//! - [`Scan`]: appends `window_start` / `window_end` (a sliding window repeats a row once per
//!   window) and keeps the columns DataFusion's scan asked for.
//! - [`Filter`], [`Project`]: DataFusion physical expressions, batch by batch.
//! - [`KeyHash`]: the exchange: rows go to the subtask that owns the key group of
//!   `hash(group keys)` (see the runtime's `subtask_for_hash`).
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

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Int64Array, RecordBatch, RecordBatchOptions, UInt32Array,
};
use arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef, TimeUnit, TimestampMillisecondType};
use arrow::row::{RowConverter, SortField};
use datafusion::common::ScalarValue;
use datafusion::common::hash_utils::{RandomState, create_hashes};
use datafusion::logical_expr::{Accumulator, EmitTo, GroupsAccumulator};
use datafusion::physical_expr::GroupsAccumulatorAdapter;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::aggregate::AggregateFunctionExpr;
use serde::{Deserialize, Serialize};
use weir_runtime::{
    Batch, Collector, DeadLetter, DropReason, Operator, Partitioner, StateReader, StateStats, StateWriter,
    Timestamp, key_group, subtask_for_hash,
};

use crate::window::{WindowCall, WindowKind};

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

fn report(
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

/// Appends window columns and keeps the scan's columns.
#[derive(Clone)]
pub(crate) struct Scan {
    /// The window, and the index of its time column in the source's schema.
    pub(crate) window: Option<(WindowCall, usize)>,
    /// Indices of the scan's columns in the source's schema plus the window columns.
    pub(crate) projection: Vec<usize>,
    pub(crate) schema: SchemaRef,
    /// The origin of its dead letters (see [`origin`]).
    pub(crate) origin: Arc<str>,
}

impl Scan {
    /// The batch with its window columns, and the rows without an event time.
    fn apply(&self, batch: &RecordBatch) -> Result<(RecordBatch, Vec<usize>), String> {
        let mut columns = batch.columns().to_vec();
        let mut no_time = Vec::new();
        if let Some((window, time)) = &self.window {
            let ts =
                event_time_ms(batch.column(*time)).ok_or("the window's time column is not a timestamp")?;
            let mut take = Vec::with_capacity(batch.num_rows());
            let (mut starts, mut ends) =
                (Vec::with_capacity(batch.num_rows()), Vec::with_capacity(batch.num_rows()));
            let mut bounds = Vec::new();
            for i in 0..ts.len() {
                if ts.is_null(i) {
                    no_time.push(i); // No event time: in no window.
                    continue;
                }
                bounds.clear();
                window.assign(ts.value(i), &mut bounds);
                if bounds.is_empty() {
                    no_time.push(i); // At the end of time: in no window that exists.
                }
                for &(s, e) in &bounds {
                    take.push(i as u32);
                    starts.push(s);
                    ends.push(e);
                }
            }
            if take.len() != batch.num_rows() || !take.iter().enumerate().all(|(i, t)| *t as usize == i) {
                let idx = UInt32Array::from(take);
                columns = columns
                    .iter()
                    .map(|c| arrow::compute::take(c, &idx, None))
                    .collect::<Result<_, _>>()
                    .map_err(|e| e.to_string())?;
            }
            let ts_type = DataType::Timestamp(TimeUnit::Millisecond, None);
            for v in [starts, ends] {
                let a: ArrayRef = Arc::new(Int64Array::from(v));
                columns.push(arrow::compute::cast(&a, &ts_type).map_err(|e| e.to_string())?);
            }
        }
        let rows = columns.first().map_or(batch.num_rows(), |c| c.len());
        let columns = self.projection.iter().map(|&i| columns[i].clone()).collect();
        let options = arrow::array::RecordBatchOptions::new().with_row_count(Some(rows));
        let scanned = RecordBatch::try_new_with_options(self.schema.clone(), columns, &options)
            .map_err(|e| e.to_string())?;
        Ok((scanned, no_time))
    }
}

impl Operator<RecordBatch, RecordBatch> for Scan {
    fn process_batch(&mut self, batch: Batch<RecordBatch>, out: &mut Collector<RecordBatch>) {
        let mut records = Vec::with_capacity(batch.records.len());
        for b in &batch.records {
            match self.apply(b) {
                Ok((scanned, no_time)) => {
                    if let Some((window, time)) = &self.window {
                        let column = &window.time_column;
                        for row in no_time {
                            let error = if b.column(*time).is_null(row) {
                                format!(
                                    "no event time: {column} is NULL (missing from the record, null, or \
                                     not a timestamp), so the row is in no window"
                                )
                            } else {
                                format!("{column} is so near the end of time that no window of the row ends")
                            };
                            out.dead_letter(DeadLetter {
                                operator: "scan".into(),
                                origin: self.origin.to_string(),
                                payload: row_json(b, row),
                                error,
                            });
                        }
                    }
                    records.push(scanned);
                }
                Err(e) => report(out, "scan", &self.origin, b.num_rows(), e),
            }
        }
        out.batch(batch.derive(records, batch.timestamps.clone()));
    }
}

/// `WHERE` / `HAVING`.
#[derive(Clone)]
pub(crate) struct Filter {
    pub(crate) predicate: Arc<dyn PhysicalExpr>,
    pub(crate) projection: Option<Vec<usize>>,
    /// The origin of its dead letters (see [`origin`]).
    pub(crate) origin: Arc<str>,
}

impl Filter {
    fn apply(&self, batch: &RecordBatch) -> datafusion::error::Result<RecordBatch> {
        let mask = self.predicate.evaluate(batch)?.into_array(batch.num_rows())?;
        let mask = mask
            .as_boolean_opt()
            .cloned()
            .unwrap_or_else(|| BooleanArray::from(vec![false; batch.num_rows()]));
        let filtered = arrow::compute::filter_record_batch(batch, &mask)?;
        Ok(match &self.projection {
            Some(p) => filtered.project(p)?,
            None => filtered,
        })
    }
}

impl Operator<RecordBatch, RecordBatch> for Filter {
    fn process_batch(&mut self, batch: Batch<RecordBatch>, out: &mut Collector<RecordBatch>) {
        let mut records = Vec::with_capacity(batch.records.len());
        for b in &batch.records {
            let parts = batch_or_rows(b, "filter", &|_| self.origin.to_string(), out, |b| self.apply(b));
            let Some(schema) = parts.first().map(RecordBatch::schema) else { continue };
            if let Some(b) = concat(&schema, parts, "filter", &self.origin, out).filter(|b| b.num_rows() > 0)
            {
                records.push(b);
            }
        }
        out.batch(batch.derive(records, Vec::new()));
    }
}

/// `SELECT` expressions.
#[derive(Clone)]
pub(crate) struct Project {
    pub(crate) exprs: Vec<Arc<dyn PhysicalExpr>>,
    pub(crate) schema: SchemaRef,
    /// The origin of its dead letters (see [`origin`]).
    pub(crate) origin: Arc<str>,
}

impl Project {
    fn apply(&self, batch: &RecordBatch) -> datafusion::error::Result<RecordBatch> {
        let columns = self
            .exprs
            .iter()
            .map(|e| e.evaluate(batch).and_then(|v| v.into_array(batch.num_rows())))
            .collect::<datafusion::error::Result<Vec<_>>>()?;
        let options = arrow::array::RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
        Ok(RecordBatch::try_new_with_options(self.schema.clone(), columns, &options)?)
    }
}

impl Operator<RecordBatch, RecordBatch> for Project {
    fn process_batch(&mut self, batch: Batch<RecordBatch>, out: &mut Collector<RecordBatch>) {
        let mut records = Vec::with_capacity(batch.records.len());
        for b in &batch.records {
            let parts = batch_or_rows(b, "projection", &|_| self.origin.to_string(), out, |b| self.apply(b));
            records.extend(concat(&self.schema, parts, "projection", &self.origin, out));
        }
        out.batch(batch.derive(records, Vec::new()));
    }
}

/// Routes rows by the hash of the group keys (window columns excluded: a key's windows stay
/// on one subtask) to the subtask that owns the hash's key group.
pub(crate) struct KeyHash {
    pub(crate) keys: Vec<Arc<dyn PhysicalExpr>>,
}

const HASH_STATE: RandomState = RandomState::with_seed(0x5745_4952);

/// The routing hash of each of `rows` rows of the group-key columns `keys`: arrow's
/// `create_hashes` with a fixed seed. The exchange sends a row to
/// `subtask_for_hash(hash, n)`, and the window aggregate saves a group's state in the key group
/// of the same hash. Without key columns (one global group) every hash is 0: key group 0, on
/// subtask 0 at any parallelism.
pub(crate) fn key_hashes(keys: &[ArrayRef], rows: usize) -> datafusion::error::Result<Vec<u64>> {
    let mut hashes = vec![0u64; rows];
    if !keys.is_empty() {
        create_hashes(keys, &HASH_STATE, &mut hashes)?;
    }
    Ok(hashes)
}

impl Partitioner<RecordBatch> for KeyHash {
    fn partition(&self, batch: Batch<RecordBatch>, n: usize) -> Vec<Batch<RecordBatch>> {
        let mut parts: Vec<Vec<RecordBatch>> = (0..n).map(|_| Vec::new()).collect();
        for b in &batch.records {
            let rows = b.num_rows();
            let keys: Option<Vec<ArrayRef>> =
                self.keys.iter().map(|k| k.evaluate(b).and_then(|v| v.into_array(rows)).ok()).collect();
            let mut target: Vec<Vec<u32>> = vec![Vec::new(); n];
            match keys.and_then(|keys| key_hashes(&keys, rows).ok()) {
                Some(hashes) => {
                    for (i, h) in hashes.iter().enumerate() {
                        target[subtask_for_hash(*h, n)].push(i as u32);
                    }
                }
                // Keys that do not evaluate: everything to subtask 0 (the rows fail there).
                None => target[0] = (0..rows as u32).collect(),
            }
            for (t, rows_of) in target.into_iter().enumerate() {
                if rows_of.is_empty() {
                    continue;
                }
                if rows_of.len() == rows {
                    parts[t].push(b.clone());
                } else if let Ok(part) = arrow::compute::take_record_batch(b, &UInt32Array::from(rows_of)) {
                    parts[t].push(part);
                }
            }
        }
        parts
            .into_iter()
            .map(|records| {
                let mut part = batch.derive(records, Vec::new());
                part.split = 0;
                part
            })
            .collect()
    }
}

/// What an aggregate computes, taken from DataFusion's `AggregateExec`.
#[derive(Clone)]
pub(crate) struct AggregateSpec {
    /// Group expressions, in output order; two of them are the window columns.
    pub(crate) group_exprs: Vec<Arc<dyn PhysicalExpr>>,
    /// Positions of `window_start` and `window_end` among `group_exprs`.
    pub(crate) window_cols: (usize, usize),
    pub(crate) aggregates: Vec<Arc<AggregateFunctionExpr>>,
    pub(crate) filters: Vec<Option<Arc<dyn PhysicalExpr>>>,
    /// Group columns then aggregate results.
    pub(crate) schema: SchemaRef,
    pub(crate) window: WindowKind,
}

impl AggregateSpec {
    /// The group expressions that are not window columns.
    pub(crate) fn key_exprs(&self) -> Vec<Arc<dyn PhysicalExpr>> {
        let (s, e) = self.window_cols;
        self.group_exprs
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != s && *i != e)
            .map(|(_, x)| x.clone())
            .collect()
    }

    fn groups_accumulators(&self) -> datafusion::error::Result<Vec<Box<dyn GroupsAccumulator>>> {
        self.aggregates
            .iter()
            .map(|a| {
                if a.groups_accumulator_supported() {
                    a.create_groups_accumulator()
                } else {
                    let a = a.clone();
                    Ok(Box::new(GroupsAccumulatorAdapter::new(move || a.create_accumulator()))
                        as Box<dyn GroupsAccumulator>)
                }
            })
            .collect()
    }
}

/// The groups of one window.
struct WindowGroups {
    start: i64,
    /// Group key bytes (a row of the key columns) → group index.
    index: HashMap<Box<[u8]>, usize>,
    keys: Vec<Box<[u8]>>,
    accumulators: Vec<Box<dyn GroupsAccumulator>>,
}

impl WindowGroups {
    /// The group index of a key (its row bytes), adding the group if new.
    fn group_of(&mut self, key: &[u8]) -> usize {
        if let Some(g) = self.index.get(key) {
            return *g;
        }
        let g = self.keys.len();
        let bytes: Box<[u8]> = key.into();
        self.keys.push(bytes.clone());
        self.index.insert(bytes, g);
        g
    }
}
/// One session of one group.
struct Session {
    start: i64,
    end: i64,
    accumulators: Vec<Box<dyn Accumulator>>,
}

/// A batch's window bounds, group keys, aggregate arguments and filters.
struct Evaluated {
    rows: usize,
    starts: Int64Array,
    ends: Int64Array,
    /// No key columns: one group per window.
    no_keys: bool,
    key_rows: arrow::row::Rows,
    args: Vec<Vec<ArrayRef>>,
    filters: Vec<Option<BooleanArray>>,
}

/// The windowed aggregation (see the module docs).
pub(crate) struct WindowAggregate {
    spec: AggregateSpec,
    /// Group keys ⇄ rows of bytes; an error if the key types cannot be encoded.
    converter: Result<RowConverter, String>,
    watermark: Timestamp,
    windows: BTreeMap<i64, WindowGroups>,
    sessions: HashMap<Box<[u8]>, Vec<Session>>,
    fired: u64,
    /// The origin of its dead letters (see [`origin`]).
    origin: Arc<str>,
}

/// A copy for another subtask: the same query, without the windows' state (accumulators cannot be
/// copied). The pipeline copies an operator once per subtask before any record reaches it.
impl Clone for WindowAggregate {
    fn clone(&self) -> Self {
        WindowAggregate::new(self.spec.clone(), self.origin.clone())
    }
}

impl WindowAggregate {
    pub(crate) fn new(spec: AggregateSpec, origin: Arc<str>) -> Self {
        // Key types come from the output schema: group columns keep their types.
        let (s, e) = spec.window_cols;
        let key_fields: Vec<SortField> = spec
            .schema
            .fields()
            .iter()
            .take(spec.group_exprs.len())
            .enumerate()
            .filter(|(i, _)| *i != s && *i != e)
            .map(|(_, f)| SortField::new(f.data_type().clone()))
            .collect();
        let converter = RowConverter::new(key_fields).map_err(|e| e.to_string());
        WindowAggregate {
            spec,
            converter,
            watermark: Timestamp::MIN,
            windows: BTreeMap::new(),
            sessions: HashMap::new(),
            fired: 0,
            origin,
        }
    }

    fn converter(&self) -> datafusion::error::Result<&RowConverter> {
        self.converter
            .as_ref()
            .map_err(|e| datafusion::error::DataFusionError::Execution(format!("group keys: {e}")))
    }

    /// Evaluates what [`WindowAggregate::add`] needs of a batch: nothing changes yet.
    fn evaluate(&self, batch: &RecordBatch) -> datafusion::error::Result<Evaluated> {
        let rows = batch.num_rows();
        let eval = |e: &Arc<dyn PhysicalExpr>| e.evaluate(batch).and_then(|v| v.into_array(rows));
        let (ws, we) = self.spec.window_cols;
        let starts = event_time_ms(&eval(&self.spec.group_exprs[ws])?)
            .unwrap_or_else(|| Int64Array::from(vec![0; rows]));
        let ends = event_time_ms(&eval(&self.spec.group_exprs[we])?)
            .unwrap_or_else(|| Int64Array::from(vec![0; rows]));
        let keys = self.spec.key_exprs().iter().map(eval).collect::<datafusion::error::Result<Vec<_>>>()?;
        let key_rows = self.converter()?.convert_columns(&keys)?;
        let args: Vec<Vec<ArrayRef>> = self
            .spec
            .aggregates
            .iter()
            .map(|a| a.expressions().iter().map(eval).collect::<datafusion::error::Result<Vec<_>>>())
            .collect::<datafusion::error::Result<_>>()?;
        let filters: Vec<Option<BooleanArray>> = self
            .spec
            .filters
            .iter()
            .map(|f| f.as_ref().map(|f| eval(f).map(|a| a.as_boolean().clone())).transpose())
            .collect::<datafusion::error::Result<_>>()?;
        Ok(Evaluated { rows, starts, ends, no_keys: keys.is_empty(), key_rows, args, filters })
    }

    /// Adds an evaluated batch; returns the number of late rows.
    fn add(&mut self, input: Evaluated) -> datafusion::error::Result<u64> {
        let Evaluated { rows, starts, ends, no_keys, key_rows, args, filters } = input;
        // Without key columns (one group per window) every row has the empty key.
        let key_of = |i: usize| -> &[u8] { if no_keys { &[] } else { key_rows.row(i).data() } };
        let mut late = 0;
        if let WindowKind::Session { gap } = self.spec.window {
            for i in 0..rows {
                let ts = starts.value(i);
                // Late only if the session it would join (or open) already closed.
                if self.merged_end(key_of(i), ts, ts.saturating_add(gap)).saturating_sub(1) <= self.watermark
                {
                    late += 1;
                    continue;
                }
                let one = |a: &ArrayRef| a.slice(i, 1);
                let row_args: Vec<Vec<ArrayRef>> = args.iter().map(|v| v.iter().map(one).collect()).collect();
                let keep = filters
                    .iter()
                    .map(|f| f.as_ref().is_none_or(|f| f.is_valid(i) && f.value(i)))
                    .collect::<Vec<_>>();
                self.add_to_session(key_of(i), ts, ts.saturating_add(gap), &row_args, &keep)?;
            }
            return Ok(late);
        }
        // Rows by window end (usually one or a few per batch).
        let mut by_window: BTreeMap<i64, Vec<u32>> = BTreeMap::new();
        for i in 0..rows {
            let end = ends.value(i);
            if end - 1 <= self.watermark {
                late += 1;
                continue;
            }
            by_window.entry(end).or_default().push(i as u32);
        }
        for (end, idx) in by_window {
            let start = starts.value(idx[0] as usize);
            if !self.windows.contains_key(&end) {
                let accumulators = self.spec.groups_accumulators()?;
                self.windows.insert(
                    end,
                    WindowGroups { start, index: HashMap::new(), keys: Vec::new(), accumulators },
                );
            }
            let Some(w) = self.windows.get_mut(&end) else { continue };
            let mut groups = Vec::with_capacity(idx.len());
            for &i in &idx {
                let key = key_of(i as usize);
                groups.push(w.group_of(key));
            }
            let all = idx.len() == rows;
            let take = UInt32Array::from(idx);
            for (a, acc) in w.accumulators.iter_mut().enumerate() {
                let values: Vec<ArrayRef> = if all {
                    args[a].clone()
                } else {
                    args[a].iter().map(|v| arrow::compute::take(v, &take, None)).collect::<Result<_, _>>()?
                };
                let filter = match &filters[a] {
                    Some(f) if all => Some(f.clone()),
                    Some(f) => Some(arrow::compute::take(f, &take, None)?.as_boolean().clone()),
                    None => None,
                };
                acc.update_batch(&values, &groups, filter.as_ref(), w.keys.len())?;
            }
        }
        Ok(late)
    }

    /// The end of the session `[start, end)` would form with the open sessions of `key`.
    fn merged_end(&self, key: &[u8], start: i64, end: i64) -> i64 {
        let (mut start, mut end) = (start, end);
        if let Some(sessions) = self.sessions.get(key) {
            // Merging can chain: repeat until no open session touches [start, end).
            loop {
                let before = (start, end);
                for s in sessions {
                    if s.start <= end && start <= s.end {
                        start = start.min(s.start);
                        end = end.max(s.end);
                    }
                }
                if (start, end) == before {
                    break;
                }
            }
        }
        end
    }

    fn add_to_session(
        &mut self,
        key: &[u8],
        start: i64,
        end: i64,
        args: &[Vec<ArrayRef>],
        keep: &[bool],
    ) -> datafusion::error::Result<()> {
        let sessions = self.sessions.entry(key.into()).or_default();
        let mut accumulators = self
            .spec
            .aggregates
            .iter()
            .map(|a| a.create_accumulator())
            .collect::<datafusion::error::Result<Vec<_>>>()?;
        for ((acc, values), keep) in accumulators.iter_mut().zip(args).zip(keep) {
            if *keep {
                acc.update_batch(values)?;
            }
        }
        let mut merged = Session { start, end, accumulators };
        // Sessions that overlap or touch [start, end) merge into one.
        let mut i = 0;
        while i < sessions.len() {
            let s = &sessions[i];
            if s.start <= merged.end && merged.start <= s.end {
                let mut s = sessions.remove(i);
                merged.start = merged.start.min(s.start);
                merged.end = merged.end.max(s.end);
                for (acc, other) in merged.accumulators.iter_mut().zip(s.accumulators.iter_mut()) {
                    let state = other.state()?;
                    let arrays =
                        state.iter().map(|v| v.to_array()).collect::<datafusion::error::Result<Vec<_>>>()?;
                    acc.merge_batch(&arrays)?;
                }
            } else {
                i += 1;
            }
        }
        sessions.push(merged);
        Ok(())
    }

    /// Emits the windows that end at or before `watermark + 1`.
    fn fire(&mut self, watermark: Timestamp) -> datafusion::error::Result<Vec<RecordBatch>> {
        let mut out = Vec::new();
        if let WindowKind::Session { .. } = self.spec.window {
            let mut rows: Vec<(Box<[u8]>, Session)> = Vec::new();
            for (key, sessions) in self.sessions.iter_mut() {
                let mut i = 0;
                while i < sessions.len() {
                    if sessions[i].end - 1 <= watermark {
                        rows.push((key.clone(), sessions.remove(i)));
                    } else {
                        i += 1;
                    }
                }
            }
            self.sessions.retain(|_, s| !s.is_empty());
            if rows.is_empty() {
                return Ok(out);
            }
            let converter = self.converter()?;
            let parser = converter.parser();
            let keys = converter.convert_rows(rows.iter().map(|(k, _)| parser.parse(k)))?;
            let starts: Vec<i64> = rows.iter().map(|(_, s)| s.start).collect();
            let ends: Vec<i64> = rows.iter().map(|(_, s)| s.end).collect();
            let mut values = Vec::with_capacity(self.spec.aggregates.len());
            for a in 0..self.spec.aggregates.len() {
                let scalars = rows
                    .iter_mut()
                    .map(|(_, s)| s.accumulators[a].evaluate())
                    .collect::<datafusion::error::Result<Vec<_>>>()?;
                let field = self.spec.schema.field(self.spec.group_exprs.len() + a);
                values.push(scalars_to_array(scalars, field.data_type())?);
            }
            out.push(self.assemble(keys, &starts, &ends, values)?);
            self.fired += rows.len() as u64;
            return Ok(out);
        }
        let due: Vec<i64> = self.windows.range(..=watermark.saturating_add(1)).map(|(e, _)| *e).collect();
        for end in due {
            let Some(mut w) = self.windows.remove(&end) else { continue };
            if w.keys.is_empty() {
                continue;
            }
            let converter = self.converter()?;
            let parser = converter.parser();
            let keys = converter.convert_rows(w.keys.iter().map(|k| parser.parse(k)))?;
            let n = w.keys.len();
            let values = w
                .accumulators
                .iter_mut()
                .map(|a| a.evaluate(EmitTo::All))
                .collect::<datafusion::error::Result<Vec<_>>>()?;
            out.push(self.assemble(keys, &vec![w.start; n], &vec![end; n], values)?);
            self.fired += n as u64;
        }
        Ok(out)
    }

    /// Output columns in group-expression order, then the aggregates.
    fn assemble(
        &self,
        keys: Vec<ArrayRef>,
        starts: &[i64],
        ends: &[i64],
        values: Vec<ArrayRef>,
    ) -> datafusion::error::Result<RecordBatch> {
        let (ws, we) = self.spec.window_cols;
        let mut keys = keys.into_iter();
        let mut columns = Vec::with_capacity(self.spec.schema.fields().len());
        for i in 0..self.spec.group_exprs.len() {
            let field = self.spec.schema.field(i);
            let col: ArrayRef = if i == ws || i == we {
                let v: ArrayRef =
                    Arc::new(Int64Array::from(if i == ws { starts.to_vec() } else { ends.to_vec() }));
                arrow::compute::cast(&v, field.data_type())?
            } else {
                keys.next()
                    .ok_or_else(|| datafusion::error::DataFusionError::Internal("group key columns".into()))?
            };
            columns.push(col);
        }
        for (i, v) in values.into_iter().enumerate() {
            let field = self.spec.schema.field(self.spec.group_exprs.len() + i);
            columns.push(if v.data_type() == field.data_type() {
                v
            } else {
                arrow::compute::cast(&v, field.data_type())?
            });
        }
        Ok(RecordBatch::try_new(self.spec.schema.clone(), columns)?)
    }
}

fn scalars_to_array(scalars: Vec<ScalarValue>, data_type: &DataType) -> datafusion::error::Result<ArrayRef> {
    if scalars.is_empty() {
        return Ok(arrow::array::new_empty_array(data_type));
    }
    ScalarValue::iter_to_array(scalars)
}

/// The version of the window aggregate's checkpoint state; another version is refused.
const STATE_VERSION: u32 = 1;

/// The operator-wide state of one subtask.
#[derive(Serialize, Deserialize)]
struct Meta {
    version: u32,
    watermark: Timestamp,
}

/// One keyed entry: the groups of one key group, as an Arrow IPC stream of one record batch.
#[derive(Serialize, Deserialize)]
enum Entry {
    /// Tumbling and sliding windows: the groups of the window `[start, end)`; columns: the
    /// group keys, then each aggregate's state.
    Window { key_group: u16, start: i64, end: i64, groups: Vec<u8> },
    /// Session windows: one row per session; columns: the group keys, start, end, then each
    /// aggregate's state.
    Sessions { key_group: u16, sessions: Vec<u8> },
}

fn checkpoint_error(what: &str, e: impl std::fmt::Display) -> weir_runtime::Error {
    weir_runtime::Error::Checkpoint(format!("window aggregate: {what}: {e}"))
}

/// `columns` (of `rows` rows) as an Arrow IPC stream.
fn to_ipc(columns: Vec<ArrayRef>, rows: usize) -> Result<Vec<u8>, arrow::error::ArrowError> {
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
fn from_ipc(bytes: &[u8]) -> Result<RecordBatch, String> {
    let mut reader = arrow::ipc::reader::StreamReader::try_new(bytes, None).map_err(|e| e.to_string())?;
    match reader.next() {
        Some(batch) => batch.map_err(|e| e.to_string()),
        None => Err("no record batch".into()),
    }
}

/// Writes `columns` (`rows` rows; the first `keys` are the group keys) as one entry per key
/// group of the rows' routing hashes, made by `entry(key_group, ipc)`.
fn put_by_key_group(
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
fn check_key_group(keys: &[ArrayRef], rows: usize, saved: u16) -> weir_runtime::Result<()> {
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
fn rebuilt(
    aggregate: &AggregateFunctionExpr,
    state: &[ScalarValue],
) -> datafusion::error::Result<Box<dyn Accumulator>> {
    let mut acc = aggregate.create_accumulator()?;
    let arrays = state.iter().map(ScalarValue::to_array).collect::<datafusion::error::Result<Vec<_>>>()?;
    acc.merge_batch(&arrays)?;
    Ok(acc)
}

impl WindowAggregate {
    /// How many state columns each aggregate has.
    fn state_widths(&self) -> weir_runtime::Result<Vec<usize>> {
        self.spec
            .aggregates
            .iter()
            .map(|a| a.state_fields().map(|f| f.len()))
            .collect::<datafusion::error::Result<_>>()
            .map_err(|e| checkpoint_error("aggregate state fields", e))
    }

    /// The key columns of `keys` (row bytes of the group keys).
    fn key_columns<'a>(
        converter: &Result<RowConverter, String>,
        key_count: usize,
        keys: impl Iterator<Item = &'a [u8]>,
    ) -> weir_runtime::Result<Vec<ArrayRef>> {
        if key_count == 0 {
            return Ok(Vec::new());
        }
        let converter = converter.as_ref().map_err(|e| checkpoint_error("group keys", e))?;
        let parser = converter.parser();
        converter.convert_rows(keys.map(|k| parser.parse(k))).map_err(|e| checkpoint_error("group keys", e))
    }

    /// Tumbling and sliding windows: every window's groups, by key group.
    fn snapshot_windows(&mut self, state: &mut StateWriter) -> weir_runtime::Result<()> {
        let key_count = self.spec.key_exprs().len();
        let WindowAggregate { spec, converter, windows, .. } = self;
        for (&end, w) in windows.iter_mut() {
            let n = w.keys.len();
            if n == 0 {
                continue;
            }
            let mut columns = Self::key_columns(converter, key_count, w.keys.iter().map(|k| &k[..]))?;
            let groups: Vec<usize> = (0..n).collect();
            let mut fresh = spec.groups_accumulators().map_err(|e| checkpoint_error("accumulators", e))?;
            for (acc, new) in w.accumulators.iter_mut().zip(fresh.iter_mut()) {
                // `state` drains the accumulator: merge the state straight into a fresh one.
                let arrays = acc.state(EmitTo::All).map_err(|e| checkpoint_error("aggregate state", e))?;
                if let Err(e) = new.merge_batch(&arrays, &groups, n) {
                    // The drained state is gone: failing the job makes it restart from the
                    // last checkpoint rather than go on with wrong results.
                    panic!(
                        "window aggregate: cannot merge an accumulator's state back after a snapshot: {e}"
                    );
                }
                std::mem::swap(acc, new);
                columns.extend(arrays);
            }
            let start = w.start;
            put_by_key_group(state, columns, key_count, n, |key_group, groups| Entry::Window {
                key_group,
                start,
                end,
                groups,
            })?;
        }
        Ok(())
    }

    /// Session windows: every open session, by key group.
    fn snapshot_sessions(&mut self, state: &mut StateWriter) -> weir_runtime::Result<()> {
        let key_count = self.spec.key_exprs().len();
        let widths = self.state_widths()?;
        let WindowAggregate { spec, converter, sessions, .. } = self;
        let mut keys: Vec<&[u8]> = Vec::new();
        let (mut starts, mut ends) = (Vec::new(), Vec::new());
        // Per aggregate, per state field, the value of each session.
        let mut values: Vec<Vec<Vec<ScalarValue>>> = widths.iter().map(|w| vec![Vec::new(); *w]).collect();
        for (key, list) in sessions.iter_mut() {
            for s in list.iter_mut() {
                for (a, acc) in s.accumulators.iter_mut().enumerate() {
                    // `state` consumes the accumulator's state: continue with a rebuilt one.
                    let st = acc.state().map_err(|e| checkpoint_error("aggregate state", e))?;
                    match rebuilt(&spec.aggregates[a], &st) {
                        Ok(new) => *acc = new,
                        Err(e) => panic!(
                            "window aggregate: cannot merge an accumulator's state back after a snapshot: {e}"
                        ),
                    }
                    if st.len() != values[a].len() {
                        return Err(checkpoint_error(
                            "aggregate state",
                            format!("{} values, {} state fields", st.len(), values[a].len()),
                        ));
                    }
                    for (field, v) in values[a].iter_mut().zip(st) {
                        field.push(v);
                    }
                }
                keys.push(key);
                starts.push(s.start);
                ends.push(s.end);
            }
        }
        let n = keys.len();
        if n == 0 {
            return Ok(());
        }
        let mut columns = Self::key_columns(converter, key_count, keys.into_iter())?;
        columns.push(Arc::new(Int64Array::from(starts)));
        columns.push(Arc::new(Int64Array::from(ends)));
        for field in values.into_iter().flatten() {
            columns
                .push(ScalarValue::iter_to_array(field).map_err(|e| checkpoint_error("aggregate state", e))?);
        }
        put_by_key_group(state, columns, key_count, n, |key_group, sessions| Entry::Sessions {
            key_group,
            sessions,
        })
    }

    /// The restored entry's batch, checked against this query's columns (`extra` between the
    /// keys and the aggregate states); the key columns checked against its key group.
    fn restored_batch(
        &self,
        bytes: &[u8],
        key_group: u16,
        extra: usize,
        widths: &[usize],
    ) -> weir_runtime::Result<RecordBatch> {
        let batch = from_ipc(bytes).map_err(|e| checkpoint_error("decode state", e))?;
        let key_count = self.spec.key_exprs().len();
        let want = key_count + extra + widths.iter().sum::<usize>();
        if batch.num_columns() != want {
            return Err(checkpoint_error(
                "restore",
                format!(
                    "the saved state has {} columns, this query's {want} (was the query changed?)",
                    batch.num_columns()
                ),
            ));
        }
        check_key_group(&batch.columns()[..key_count], batch.num_rows(), key_group)?;
        Ok(batch)
    }

    /// The group-key bytes of each row of `keys` (empty without key columns).
    fn key_rows(&self, keys: &[ArrayRef]) -> weir_runtime::Result<Option<arrow::row::Rows>> {
        if keys.is_empty() {
            return Ok(None);
        }
        let converter = self.converter().map_err(|e| checkpoint_error("group keys", e))?;
        converter.convert_columns(keys).map(Some).map_err(|e| checkpoint_error("group keys", e))
    }

    fn restore_window(
        &mut self,
        key_group: u16,
        start: i64,
        end: i64,
        bytes: &[u8],
        widths: &[usize],
    ) -> weir_runtime::Result<()> {
        let batch = self.restored_batch(bytes, key_group, 0, widths)?;
        let key_count = self.spec.key_exprs().len();
        let rows = self.key_rows(&batch.columns()[..key_count])?;
        if !self.windows.contains_key(&end) {
            let accumulators =
                self.spec.groups_accumulators().map_err(|e| checkpoint_error("accumulators", e))?;
            self.windows
                .insert(end, WindowGroups { start, index: HashMap::new(), keys: Vec::new(), accumulators });
        }
        let Some(w) = self.windows.get_mut(&end) else { return Ok(()) };
        let mut groups = Vec::with_capacity(batch.num_rows());
        for i in 0..batch.num_rows() {
            let key: &[u8] = rows.as_ref().map_or(&[], |r| r.row(i).data());
            groups.push(w.group_of(key));
        }
        let mut column = key_count;
        for (acc, width) in w.accumulators.iter_mut().zip(widths) {
            let states = &batch.columns()[column..column + width];
            acc.merge_batch(states, &groups, w.keys.len()).map_err(|e| checkpoint_error("restore", e))?;
            column += width;
        }
        Ok(())
    }

    fn restore_sessions(
        &mut self,
        key_group: u16,
        bytes: &[u8],
        widths: &[usize],
    ) -> weir_runtime::Result<()> {
        let batch = self.restored_batch(bytes, key_group, 2, widths)?;
        let key_count = self.spec.key_exprs().len();
        let rows = self.key_rows(&batch.columns()[..key_count])?;
        let bounds = |i: usize| {
            batch
                .column(key_count + i)
                .as_primitive_opt::<Int64Type>()
                .ok_or_else(|| checkpoint_error("restore", "session bounds are not BIGINT"))
        };
        let (starts, ends) = (bounds(0)?, bounds(1)?);
        for i in 0..batch.num_rows() {
            let mut accumulators = Vec::with_capacity(widths.len());
            let mut column = key_count + 2;
            for (aggregate, width) in self.spec.aggregates.iter().zip(widths) {
                let states: Vec<ArrayRef> =
                    batch.columns()[column..column + width].iter().map(|c| c.slice(i, 1)).collect();
                let mut acc = aggregate.create_accumulator().map_err(|e| checkpoint_error("restore", e))?;
                acc.merge_batch(&states).map_err(|e| checkpoint_error("restore", e))?;
                accumulators.push(acc);
                column += width;
            }
            let key: &[u8] = rows.as_ref().map_or(&[], |r| r.row(i).data());
            self.sessions.entry(key.into()).or_default().push(Session {
                start: starts.value(i),
                end: ends.value(i),
                accumulators,
            });
        }
        Ok(())
    }
}

impl Operator<RecordBatch, RecordBatch> for WindowAggregate {
    /// Saves the watermark, and every open window's (or session's) groups in the key groups of
    /// their keys (see the module docs).
    fn snapshot(&mut self, state: &mut StateWriter) -> weir_runtime::Result<()> {
        state.set_meta(&Meta { version: STATE_VERSION, watermark: self.watermark })?;
        match self.spec.window {
            WindowKind::Session { .. } => self.snapshot_sessions(state),
            WindowKind::Tumble { .. } | WindowKind::Hop { .. } => self.snapshot_windows(state),
        }
    }

    /// Restores the groups of the key groups this subtask owns; the watermark is the lowest the
    /// old subtasks saved.
    fn restore(&mut self, state: &StateReader<'_>) -> weir_runtime::Result<()> {
        let metas: Vec<Meta> = state.metas()?;
        if let Some(m) = metas.iter().find(|m| m.version != STATE_VERSION) {
            return Err(checkpoint_error(
                "restore",
                format!(
                    "state version {} is not {STATE_VERSION} (written by another Weir version)",
                    m.version
                ),
            ));
        }
        if let Some(w) = metas.iter().map(|m| m.watermark).min() {
            self.watermark = w;
        }
        let widths = self.state_widths()?;
        let session = matches!(self.spec.window, WindowKind::Session { .. });
        for entry in state.values::<Entry>() {
            match entry? {
                Entry::Window { key_group, start, end, groups } if !session => {
                    self.restore_window(key_group, start, end, &groups, &widths)?;
                }
                Entry::Sessions { key_group, sessions } if session => {
                    self.restore_sessions(key_group, &sessions, &widths)?;
                }
                _ => {
                    return Err(checkpoint_error(
                        "restore",
                        "the saved windows are of another kind than this query's (was the query changed?)",
                    ));
                }
            }
        }
        Ok(())
    }

    fn process_batch(&mut self, batch: Batch<RecordBatch>, out: &mut Collector<RecordBatch>) {
        for b in &batch.records {
            // Rows whose keys or arguments fail to evaluate go to the dead letters one by one.
            let origin = self.origin.clone();
            for input in
                batch_or_rows(b, "window aggregate", &|_| origin.to_string(), out, |b| self.evaluate(b))
            {
                let rows = input.rows;
                match self.add(input) {
                    Ok(late) => out.dropped(DropReason::Late, late),
                    Err(e) => report(out, "window aggregate", &origin, rows, e),
                }
            }
        }
    }

    fn on_watermark(&mut self, watermark: Timestamp, out: &mut Collector<RecordBatch>) {
        if watermark <= self.watermark {
            return;
        }
        self.watermark = watermark;
        match self.fire(watermark) {
            Ok(batches) if !batches.is_empty() => out.batch(Batch::new(batches)),
            Ok(_) => {}
            Err(e) => report(out, "window aggregate", &self.origin, 0, e),
        }
        out.watermark(watermark);
    }

    fn state_stats(&self) -> Option<StateStats> {
        let windows = self.windows.values().map(|w| w.keys.len() as u64).sum::<u64>()
            + self.sessions.values().map(|s| s.len() as u64).sum::<u64>();
        let bytes = self.windows.values().flat_map(|w| &w.accumulators).map(|a| a.size() as u64).sum::<u64>();
        Some(StateStats { keys: windows, windows, bytes, fired: self.fired })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use arrow::array::{Float64Array, Int32Array, StringArray, StringViewArray, TimestampMillisecondArray};

    use super::*;

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
