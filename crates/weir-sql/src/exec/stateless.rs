//! The stateless operators: [`Scan`], [`Filter`], [`Project`].

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, Int64Array, RecordBatch, UInt32Array};
use arrow::datatypes::{DataType, SchemaRef, TimeUnit};
use datafusion::physical_expr::PhysicalExpr;
use weir_runtime::{Batch, Collector, DeadLetter, Operator};

use super::{batch_or_rows, concat, event_time_ms, report, row_json};
use crate::window::WindowCall;

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
                                format!(
                                    "{column} is so near the start or end of time that no window of the row exists"
                                )
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
