//! [`BatchQuery`]: a query over a bounded source that a stream cannot answer (`ORDER BY`,
//! `LIMIT`, a `GROUP BY` without a window, `OVER (...)`), answered as a batch engine would.
//!
//! The source's rows are decoded and scanned (window columns added) as for a streaming query,
//! so dead letters and metrics are the same; the exchange sends every row to subtask 0, whose
//! `BatchQuery` keeps them and, at the end of the input, runs DataFusion's physical plan of the
//! query over them (the plan's empty scan replaced by the rows). The result, in the plan's
//! order, leaves as one batch. The other subtasks hold nothing and emit nothing.
//!
//! In a checkpoint, subtask 0's rows are saved in key group 0 (as Arrow IPC), which subtask 0
//! owns at any parallelism.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::execution::TaskContext;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::empty::EmptyExec;
use weir_runtime::{Batch, Collector, Operator, Partitioner, StateReader, StateWriter};

use super::report;
use super::state::{checkpoint_error, from_ipc, to_ipc};

/// Sends every row to subtask 0.
pub(crate) struct ToFirst;

impl Partitioner<RecordBatch> for ToFirst {
    fn partition(&self, mut batch: Batch<RecordBatch>, n: usize) -> Vec<Batch<RecordBatch>> {
        let records = std::mem::take(&mut batch.records);
        let mut parts = Vec::with_capacity(n);
        parts.push(batch.derive(records, Vec::new()));
        parts.extend((1..n).map(|_| batch.derive(Vec::new(), Vec::new())));
        for p in &mut parts {
            p.split = 0;
        }
        parts
    }
}

/// Keeps the rows of subtask 0 and runs the query over them at the end (see the module docs).
pub(crate) struct BatchQuery {
    /// DataFusion's physical plan, its leaf an empty scan of `schema`.
    plan: Arc<dyn ExecutionPlan>,
    schema: SchemaRef,
    /// Whether this is subtask 0, the one that answers.
    first: bool,
    rows: Vec<RecordBatch>,
    origin: Arc<str>,
    /// How many copies were made: the pipeline copies the operator once per subtask, in subtask
    /// order, so the first copy is subtask 0's.
    copies: Arc<AtomicUsize>,
}

impl Clone for BatchQuery {
    fn clone(&self) -> Self {
        let first = self.copies.fetch_add(1, Ordering::Relaxed) == 0;
        let (plan, schema, origin) = (self.plan.clone(), self.schema.clone(), self.origin.clone());
        BatchQuery { plan, schema, first, rows: Vec::new(), origin, copies: self.copies.clone() }
    }
}

impl BatchQuery {
    /// The operator to give [`Stream::operator`](weir_runtime::Stream::operator): its first copy
    /// answers the query.
    pub(crate) fn new(plan: Arc<dyn ExecutionPlan>, schema: SchemaRef, origin: Arc<str>) -> Self {
        let copies = Arc::new(AtomicUsize::new(0));
        BatchQuery { plan, schema, first: false, rows: Vec::new(), origin, copies }
    }

    /// The plan over the kept rows.
    fn run(&self) -> datafusion::error::Result<Vec<RecordBatch>> {
        let rows = self.rows.clone();
        let schema = self.schema.clone();
        let plan = self
            .plan
            .clone()
            .transform_up(|node| {
                if node.downcast_ref::<EmptyExec>().is_some() {
                    let scan: Arc<dyn ExecutionPlan> =
                        MemorySourceConfig::try_new_exec(std::slice::from_ref(&rows), schema.clone(), None)?;
                    Ok(Transformed::yes(scan))
                } else {
                    Ok(Transformed::no(node))
                }
            })?
            .data;
        // The physical optimizer runs now, over the rows: planned over an empty table, its
        // rules would answer from the empty table's statistics. (It adds what the plan needs to
        // run, e.g. the sort under `OVER (PARTITION BY ...)`.)
        let config = datafusion::config::ConfigOptions::default();
        let mut plan = plan;
        for rule in datafusion::physical_optimizer::optimizer::PhysicalOptimizer::new().rules {
            plan = rule.optimize(plan, &config)?;
        }
        // DataFusion's execution is async: run it to completion on a thread of its own (this
        // operator's task is synchronous; the input has ended).
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    let runtime = tokio::runtime::Builder::new_current_thread().build()?;
                    runtime
                        .block_on(datafusion::physical_plan::collect(plan, Arc::new(TaskContext::default())))
                })
                .join()
                .unwrap_or_else(|_| {
                    Err(datafusion::error::DataFusionError::Execution("the batch query panicked".into()))
                })
        })
    }
}

impl Operator<RecordBatch, RecordBatch> for BatchQuery {
    fn process_batch(&mut self, batch: Batch<RecordBatch>, _out: &mut Collector<RecordBatch>) {
        self.rows.extend(batch.records.into_iter().filter(|b| b.num_rows() > 0));
    }

    fn on_end(&mut self, out: &mut Collector<RecordBatch>) {
        if !self.first {
            return;
        }
        match self.run() {
            Ok(result) => out.batch(Batch::new(result.into_iter().filter(|b| b.num_rows() > 0).collect())),
            Err(e) => {
                let rows = self.rows.iter().map(RecordBatch::num_rows).sum();
                report(out, "batch query", &self.origin, rows, e);
            }
        }
    }

    fn snapshot(&mut self, state: &mut StateWriter) -> weir_runtime::Result<()> {
        for b in &self.rows {
            let bytes =
                to_ipc(b.columns().to_vec(), b.num_rows()).map_err(|e| checkpoint_error("rows", e))?;
            state.put_hashed(0, &bytes)?;
        }
        Ok(())
    }

    fn restore(&mut self, state: &StateReader<'_>) -> weir_runtime::Result<()> {
        for bytes in state.values::<Vec<u8>>() {
            let batch = from_ipc(&bytes?).map_err(|e| checkpoint_error("restore rows", e))?;
            let options = arrow::array::RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
            let batch =
                RecordBatch::try_new_with_options(self.schema.clone(), batch.columns().to_vec(), &options)
                    .map_err(|e| checkpoint_error("restore rows", e))?;
            self.rows.push(batch);
        }
        Ok(())
    }
}
