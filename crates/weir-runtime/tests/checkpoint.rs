//! Checkpoints end to end: a job stopped with a savepoint and started again produces exactly
//! the committed output of an uninterrupted run; an unusable checkpoint location is refused
//! unless the job starts from scratch. (Rescaling and crashes are tested with the log and file
//! connectors, whose positions move between subtasks: `weir-connectors/tests/exactly_once.rs`.)

#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use weir_runtime::{
    Batch, Checkpointing, Count, Error, MemorySource, Pipeline, Result, Sink, SinkWriter, Sum,
    TumblingWindows, Watermarks,
};

/// A transactional sink for tests: writers hold records until a barrier; a complete
/// checkpoint's records are added once (by id) to the shared output.
struct Committed<T> {
    inner: Arc<Mutex<(BTreeSet<u64>, Vec<T>)>>,
}

impl<T> Clone for Committed<T> {
    fn clone(&self) -> Self {
        Committed { inner: self.inner.clone() }
    }
}

impl<T: Clone> Committed<T> {
    fn new() -> Self {
        Committed { inner: Arc::new(Mutex::new((BTreeSet::new(), Vec::new()))) }
    }

    fn output(&self) -> Vec<T> {
        self.inner.lock().unwrap().1.clone()
    }
}

struct Holding<T> {
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

/// (key, window start, count, sum) rows.
type Row = (u32, i64, u64, i64);

fn events() -> Vec<(i64, u32, i64)> {
    // 40 000 events over 40 s of event time, 64 keys, slightly out of order.
    (0..40_000i64).map(|i| (i - (i % 7) * 3, (i * 31 % 64) as u32, i % 100)).collect()
}

/// Builds the job: per key, 1 s windows of count and sum. `slow` makes each batch take a
/// millisecond, so a stop lands in the middle.
fn job(p: &Pipeline, out: Committed<Row>, slow: bool) {
    p.source(MemorySource::new(events()).batch_size(100))
        .inspect(move |_| {
            if slow {
                std::thread::sleep(Duration::from_micros(20));
            }
        })
        .assign_timestamps(|e| e.0, Watermarks::bounded_out_of_orderness(Duration::from_millis(100)))
        .key_by(|e| e.1)
        .window(TumblingWindows::of(Duration::from_secs(1)))
        .aggregate((Count, Sum::of(|e: &(i64, u32, i64)| e.2)))
        .map(|r| (r.key, r.window_start, r.value.0, r.value.1))
        .sink(out);
}

fn sorted(mut rows: Vec<Row>) -> Vec<Row> {
    rows.sort_unstable();
    rows
}

async fn run(
    dir: &std::path::Path,
    parallelism: usize,
    out: Committed<Row>,
    stop_after: Option<Duration>,
) -> Result<()> {
    let p = Pipeline::builder("ckpt")
        .parallelism(parallelism)
        .handle_signals(false)
        .checkpointing(Checkpointing::to_dir(dir).interval(Duration::from_millis(20)))
        .build()?;
    job(&p, out, stop_after.is_some());
    if let Some(after) = stop_after {
        // Stop once a checkpoint completed (and at least `after` passed): mid-run, whatever
        // the machine's speed.
        let stop = p.stop_handle();
        let dir = dir.to_owned();
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            let complete = |d: &std::path::Path| {
                std::fs::read_dir(d)
                    .is_ok_and(|mut it| it.any(|e| e.is_ok_and(|e| e.path().join("_manifest.json").exists())))
            };
            while !complete(&dir) {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            stop.stop();
        });
    }
    p.run().await.map(drop)
}

async fn reference() -> Vec<Row> {
    let dir = tempfile::tempdir().unwrap();
    let out = Committed::new();
    run(dir.path(), 2, out.clone(), None).await.unwrap();
    sorted(out.output())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_job_resumes_from_its_savepoint_with_identical_output() {
    let want = reference().await;
    assert!(want.len() > 1000, "{} rows", want.len());
    let dir = tempfile::tempdir().unwrap();
    let out = Committed::new();
    run(dir.path(), 2, out.clone(), Some(Duration::from_millis(30))).await.unwrap();
    let partial = out.output().len();
    assert!(partial < want.len(), "the stop came after the end ({partial} rows)");
    run(dir.path(), 2, out.clone(), None).await.unwrap();
    assert_eq!(sorted(out.output()), want);
}

#[tokio::test]
async fn a_location_without_a_usable_checkpoint_is_refused_unless_from_scratch() {
    let dir = tempfile::tempdir().unwrap();
    // A checkpoint directory whose only checkpoint has a truncated manifest.
    let chk = dir.path().join(format!("chk-{:020}", 1));
    std::fs::create_dir_all(&chk).unwrap();
    std::fs::write(chk.join("_manifest.json"), "{\"format_version\": 1, \"pipe").unwrap();
    let out = Committed::new();
    let err = run(dir.path(), 1, out.clone(), None).await.unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::Checkpoint(_)) && msg.contains("--from-scratch"), "{msg}");

    let p = Pipeline::builder("ckpt")
        .parallelism(1)
        .handle_signals(false)
        .checkpointing(Checkpointing::to_dir(dir.path()).from_scratch(true))
        .build()
        .unwrap();
    job(&p, out.clone(), false);
    p.run().await.unwrap();
    assert_eq!(sorted(out.output()), reference().await);
}
