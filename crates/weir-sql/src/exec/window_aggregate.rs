//! The windowed aggregation, [`WindowAggregate`] (see the module docs of `exec`).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, Int64Array, RecordBatch, UInt32Array};
use arrow::datatypes::{Int64Type, SchemaRef};
use arrow::row::{RowConverter, SortField};
use datafusion::common::ScalarValue;
use datafusion::logical_expr::{Accumulator, EmitTo, GroupsAccumulator};
use datafusion::physical_expr::GroupsAccumulatorAdapter;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::aggregate::AggregateFunctionExpr;
use weir_runtime::{Batch, Collector, DropReason, Operator, StateReader, StateStats, StateWriter, Timestamp};

use super::{batch_or_rows, event_time_ms, report};
use crate::window::WindowKind;

use super::state::{
    Entry, Meta, STATE_VERSION, check_key_group, checkpoint_error, from_ipc, put_by_key_group, rebuilt,
    scalars_to_array,
};

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
pub(super) struct WindowGroups {
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
pub(super) struct Session {
    start: i64,
    end: i64,
    accumulators: Vec<Box<dyn Accumulator>>,
}

/// A batch's window bounds, group keys, aggregate arguments and filters.
pub(super) struct Evaluated {
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
