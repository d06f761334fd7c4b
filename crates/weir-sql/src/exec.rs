//! The streaming operators a SQL plan runs as, on Arrow record batches.
//!
//! - [`Scan`]: appends `window_start` / `window_end` (a sliding window repeats a row once per
//!   window) and keeps the columns DataFusion's scan asked for.
//! - [`Filter`], [`Project`]: DataFusion physical expressions, batch by batch.
//! - [`KeyHash`]: the exchange: rows go to subtask `hash(group keys) mod n`.
//! - [`WindowAggregate`]: per window and group, DataFusion groups accumulators updated as rows
//!   arrive (state is the accumulators', never the rows); a window is emitted and dropped when
//!   the watermark passes its end − 1. Session windows keep per-group sessions with row
//!   accumulators and merge them as in the runtime's session windows.
//!
//! Rows whose window already closed when they arrive are late: dropped and counted
//! (`weir_operator_dropped_records_total{reason="late"}`).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, Int64Array, RecordBatch, UInt32Array};
use arrow::datatypes::{DataType, SchemaRef, TimeUnit, TimestampMillisecondType};
use arrow::row::{RowConverter, SortField};
use datafusion::common::ScalarValue;
use datafusion::common::hash_utils::{RandomState, create_hashes};
use datafusion::logical_expr::{Accumulator, EmitTo, GroupsAccumulator};
use datafusion::physical_expr::GroupsAccumulatorAdapter;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::aggregate::AggregateFunctionExpr;
use weir_runtime::{Batch, Collector, DeadLetter, DropReason, Operator, Partitioner, StateStats, Timestamp};

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

fn report(out: &mut Collector<RecordBatch>, operator: &str, rows: usize, error: impl std::fmt::Display) {
    out.dead_letter(DeadLetter {
        operator: operator.into(),
        origin: String::new(),
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
}

impl Scan {
    fn apply(&self, batch: &RecordBatch) -> Result<RecordBatch, String> {
        let mut columns = batch.columns().to_vec();
        if let Some((window, time)) = &self.window {
            let ts =
                event_time_ms(batch.column(*time)).ok_or("the window's time column is not a timestamp")?;
            let mut take = Vec::with_capacity(batch.num_rows());
            let (mut starts, mut ends) =
                (Vec::with_capacity(batch.num_rows()), Vec::with_capacity(batch.num_rows()));
            let mut bounds = Vec::new();
            for i in 0..ts.len() {
                if ts.is_null(i) {
                    continue; // No event time: in no window.
                }
                bounds.clear();
                window.assign(ts.value(i), &mut bounds);
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
        RecordBatch::try_new_with_options(self.schema.clone(), columns, &options).map_err(|e| e.to_string())
    }
}

impl Operator<RecordBatch, RecordBatch> for Scan {
    fn process_batch(&mut self, batch: Batch<RecordBatch>, out: &mut Collector<RecordBatch>) {
        let mut records = Vec::with_capacity(batch.records.len());
        for b in &batch.records {
            match self.apply(b) {
                Ok(b) => records.push(b),
                Err(e) => report(out, "scan", b.num_rows(), e),
            }
        }
        out.batch(batch.derive(records, batch.timestamps.clone()));
    }
}

/// `WHERE` / `HAVING`.
pub(crate) struct Filter {
    pub(crate) predicate: Arc<dyn PhysicalExpr>,
    pub(crate) projection: Option<Vec<usize>>,
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
            match self.apply(b) {
                Ok(b) if b.num_rows() > 0 => records.push(b),
                Ok(_) => {}
                Err(e) => report(out, "filter", b.num_rows(), e),
            }
        }
        out.batch(batch.derive(records, Vec::new()));
    }
}

/// `SELECT` expressions.
pub(crate) struct Project {
    pub(crate) exprs: Vec<Arc<dyn PhysicalExpr>>,
    pub(crate) schema: SchemaRef,
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
            match self.apply(b) {
                Ok(b) => records.push(b),
                Err(e) => report(out, "projection", b.num_rows(), e),
            }
        }
        out.batch(batch.derive(records, Vec::new()));
    }
}

/// Routes rows by the hash of the group keys (window columns excluded: a key's windows stay
/// on one subtask).
pub(crate) struct KeyHash {
    pub(crate) keys: Vec<Arc<dyn PhysicalExpr>>,
}

const HASH_STATE: RandomState = RandomState::with_seed(0x5745_4952);

impl Partitioner<RecordBatch> for KeyHash {
    fn partition(&self, batch: Batch<RecordBatch>, n: usize) -> Vec<Batch<RecordBatch>> {
        let mut parts: Vec<Vec<RecordBatch>> = (0..n).map(|_| Vec::new()).collect();
        for b in &batch.records {
            let rows = b.num_rows();
            let keys: Option<Vec<ArrayRef>> =
                self.keys.iter().map(|k| k.evaluate(b).and_then(|v| v.into_array(rows)).ok()).collect();
            let mut hashes = vec![0u64; rows];
            let target = match keys {
                Some(keys) if !keys.is_empty() && create_hashes(&keys, &HASH_STATE, &mut hashes).is_ok() => {
                    let mut idx: Vec<Vec<u32>> = vec![Vec::new(); n];
                    for (i, h) in hashes.iter().enumerate() {
                        idx[(*h % n as u64) as usize].push(i as u32);
                    }
                    idx
                }
                // No keys (one global group): everything to subtask 0.
                _ => {
                    let mut idx = vec![Vec::new(); n];
                    idx[0] = (0..rows as u32).collect();
                    idx
                }
            };
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

/// One session of one group.
struct Session {
    start: i64,
    end: i64,
    accumulators: Vec<Box<dyn Accumulator>>,
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
}

impl WindowAggregate {
    pub(crate) fn new(spec: AggregateSpec) -> Self {
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
        }
    }

    fn converter(&self) -> datafusion::error::Result<&RowConverter> {
        self.converter
            .as_ref()
            .map_err(|e| datafusion::error::DataFusionError::Execution(format!("group keys: {e}")))
    }

    /// Adds a batch; returns the number of late rows.
    fn add(&mut self, batch: &RecordBatch) -> datafusion::error::Result<u64> {
        let rows = batch.num_rows();
        let eval = |e: &Arc<dyn PhysicalExpr>| e.evaluate(batch).and_then(|v| v.into_array(rows));
        let (ws, we) = self.spec.window_cols;
        let starts = event_time_ms(&eval(&self.spec.group_exprs[ws])?)
            .unwrap_or_else(|| Int64Array::from(vec![0; rows]));
        let ends = event_time_ms(&eval(&self.spec.group_exprs[we])?)
            .unwrap_or_else(|| Int64Array::from(vec![0; rows]));
        let keys = self.spec.key_exprs().iter().map(eval).collect::<datafusion::error::Result<Vec<_>>>()?;
        let key_rows = self.converter()?.convert_columns(&keys)?;
        // Without key columns (one group per window) every row has the empty key.
        let key_of = |i: usize| -> &[u8] { if keys.is_empty() { &[] } else { key_rows.row(i).data() } };
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
        let mut late = 0;
        if let WindowKind::Session { gap } = self.spec.window {
            for i in 0..rows {
                let ts = starts.value(i);
                // Late only if the session it would join (or open) already closed.
                if self.merged_end(key_of(i), ts, ts.saturating_add(gap)) - 1 <= self.watermark {
                    late += 1;
                    continue;
                }
                let one = |a: &ArrayRef| a.slice(i, 1);
                let row_args: Vec<Vec<ArrayRef>> = args.iter().map(|v| v.iter().map(one).collect()).collect();
                let keep = filters
                    .iter()
                    .map(|f| f.as_ref().is_none_or(|f| f.is_valid(i) && f.value(i)))
                    .collect::<Vec<_>>();
                self.add_to_session(key_of(i), ts, ts + gap, &row_args, &keep)?;
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
                let g = match w.index.get(key) {
                    Some(g) => *g,
                    None => {
                        let g = w.keys.len();
                        let bytes: Box<[u8]> = key.into();
                        w.keys.push(bytes.clone());
                        w.index.insert(bytes, g);
                        g
                    }
                };
                groups.push(g);
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

impl Operator<RecordBatch, RecordBatch> for WindowAggregate {
    fn process_batch(&mut self, batch: Batch<RecordBatch>, out: &mut Collector<RecordBatch>) {
        for b in &batch.records {
            match self.add(b) {
                Ok(late) => out.dropped(DropReason::Late, late),
                Err(e) => report(out, "window aggregate", b.num_rows(), e),
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
            Err(e) => report(out, "window aggregate", 0, e),
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
