//! The exchange: [`KeyHash`] routes rows by the hash of their group keys.

use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, UInt32Array};
use datafusion::common::hash_utils::{RandomState, create_hashes};
use datafusion::physical_expr::PhysicalExpr;
use weir_runtime::{Batch, Partitioner, subtask_for_hash};

/// Routes rows by the hash of the group keys (window columns excluded: a key's windows stay
/// on one subtask) to the subtask that owns the hash's key group.
pub(crate) struct KeyHash {
    pub(crate) keys: Vec<Arc<dyn PhysicalExpr>>,
}

pub(super) const HASH_STATE: RandomState = RandomState::with_seed(0x5745_4952);

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
