//! A transactional sink for the checkpoint tests, and helpers for their checkpoint directories
//! (each test binary uses part of it).

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

/// The published checkpoint directories in `dir` (those with a manifest), ascending.
pub(crate) fn checkpoints(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut found: Vec<std::path::PathBuf> = entries
        .filter_map(std::result::Result::ok)
        .map(|e| e.path())
        .filter(|p| p.join("_manifest.json").exists())
        .collect();
    found.sort_unstable();
    found
}

/// Copies the directory `from` to `to`, recursively.
pub(crate) fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &to.join(entry.file_name()));
        } else {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}

/// Writes a fixture into `target` (replacing it): the newest checkpoint in `checkpoint_dir`
/// and, in `before.json`, the checkpoints `out` committed and their records, sorted.
pub(crate) fn write_fixture<T: Clone + Ord + Serialize>(
    checkpoint_dir: &std::path::Path,
    out: &Committed<T>,
    target: &std::path::Path,
) {
    let newest = checkpoints(checkpoint_dir).pop().unwrap();
    if target.exists() {
        std::fs::remove_dir_all(target).unwrap();
    }
    copy_dir(&newest, &target.join(newest.file_name().unwrap()));
    let (ids, mut records) = out.state();
    records.sort_unstable();
    std::fs::write(target.join("before.json"), serde_json::to_vec(&(ids, records)).unwrap()).unwrap();
}

/// Copies the checkpoint of the fixture in `fixture` into `checkpoint_dir`, checks that it is
/// of format version 2, and returns what was committed before it (see [`write_fixture`]),
/// which must be some but not all of `want`.
pub(crate) fn read_fixture<T: DeserializeOwned>(
    fixture: &std::path::Path,
    checkpoint_dir: &std::path::Path,
    want: &[T],
) -> (BTreeSet<u64>, Vec<T>) {
    for chk in std::fs::read_dir(fixture).unwrap() {
        let chk = chk.unwrap();
        if chk.file_type().unwrap().is_dir() {
            copy_dir(&chk.path(), &checkpoint_dir.join(chk.file_name()));
        }
    }
    let manifest =
        std::fs::read_to_string(checkpoints(checkpoint_dir).pop().unwrap().join("_manifest.json")).unwrap();
    assert!(manifest.contains("\"format_version\": 2"), "{manifest}");
    let (ids, before): (BTreeSet<u64>, Vec<T>) =
        serde_json::from_slice(&std::fs::read(fixture.join("before.json")).unwrap()).unwrap();
    assert!(!before.is_empty() && before.len() < want.len(), "the fixture was not taken mid-run");
    (ids, before)
}

/// Asserts that `before` (committed before the fixture's checkpoint) and `after` (committed
/// after restoring it) are together exactly `want`, sorted.
pub(crate) fn assert_completes<T: Ord + std::fmt::Debug>(before: Vec<T>, after: Vec<T>, want: &[T]) {
    assert!(after.len() < want.len(), "the job started over instead of restoring: {} records", after.len());
    let mut all: Vec<T> = before.into_iter().chain(after).collect();
    all.sort_unstable();
    let missing = want.iter().filter(|r| all.binary_search(r).is_err()).take(5).collect::<Vec<_>>();
    assert!(all == want, "{} records, want {}; missing e.g. {missing:?}", all.len(), want.len());
}
