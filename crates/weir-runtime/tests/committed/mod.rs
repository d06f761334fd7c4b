//! A transactional sink for the checkpoint tests (each test binary uses part of it).

#![allow(dead_code)]

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use serde::Serialize;
use serde::de::DeserializeOwned;
use weir_runtime::{Batch, Result, Sink, SinkWriter};

/// A transactional sink for tests: writers hold records until a barrier; a complete
/// checkpoint's records are added once (by id) to the shared output.
pub(crate) struct Committed<T> {
    inner: Arc<Mutex<(BTreeSet<u64>, Vec<T>)>>,
}

impl<T> Clone for Committed<T> {
    fn clone(&self) -> Self {
        Committed { inner: self.inner.clone() }
    }
}

impl<T: Clone> Committed<T> {
    pub(crate) fn new() -> Self {
        Committed { inner: Arc::new(Mutex::new((BTreeSet::new(), Vec::new()))) }
    }

    pub(crate) fn output(&self) -> Vec<T> {
        self.inner.lock().unwrap().1.clone()
    }

    /// The checkpoints committed and their records.
    pub(crate) fn state(&self) -> (BTreeSet<u64>, Vec<T>) {
        self.inner.lock().unwrap().clone()
    }

    /// A sink that already committed checkpoints `ids` (their records are elsewhere).
    pub(crate) fn after(ids: BTreeSet<u64>) -> Self {
        Committed { inner: Arc::new(Mutex::new((ids, Vec::new()))) }
    }
}

pub(crate) struct Holding<T> {
    held: Vec<T>,
}

impl<T: Serialize + DeserializeOwned + Clone + Send + 'static> Sink<T> for Committed<T> {
    type Writer = Holding<T>;
    fn name(&self) -> String {
        "committed".into()
    }
    fn writer(&self, _: usize, _: usize) -> Result<Holding<T>> {
        panic!("the test pipelines are checkpointed")
    }
    fn transactional_writer(&self, _: usize, _: usize) -> Result<Holding<T>> {
        Ok(Holding { held: Vec::new() })
    }
    fn commit(&self, checkpoint: u64, committables: &[Vec<u8>]) -> Result<()> {
        let mut inner = self.inner.lock().unwrap();
        if inner.0.insert(checkpoint) {
            for c in committables {
                inner.1.extend(weir_runtime::decode::<Vec<T>>(c)?);
            }
        }
        Ok(())
    }
}

impl<T: Serialize + Send + 'static> SinkWriter<T> for Holding<T> {
    async fn write_batch(&mut self, batch: Batch<T>) -> Result<()> {
        self.held.extend(batch.records);
        Ok(())
    }
    async fn finish(&mut self) -> Result<()> {
        Ok(())
    }
    async fn pre_commit(&mut self, _: u64) -> Result<Option<Vec<u8>>> {
        if self.held.is_empty() {
            return Ok(None);
        }
        weir_runtime::encode(&std::mem::take(&mut self.held)).map(Some)
    }
}
