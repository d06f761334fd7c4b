//! Checkpoints end to end: a job stopped with a savepoint and started again produces exactly
//! the committed output of an uninterrupted run; an unusable checkpoint location is refused
//! unless the job starts from scratch. (Rescaling and crashes are tested with the log and file
//! connectors, whose positions move between subtasks: `weir-connectors/tests/exactly_once.rs`.)

#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

mod committed;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use committed::Committed;
use weir_runtime::{
    Checkpointing, Count, Error, MemorySource, Metrics, Pipeline, Result, Sum, TumblingWindows, Watermarks,
};

/// (key, window start, count, sum) rows.
type Row = (u32, i64, u64, i64);

fn events() -> Vec<(i64, u32, i64)> {
    // 40 000 events over 40 s of event time, 64 keys, slightly out of order.
    (0..40_000i64).map(|i| (i - (i % 7) * 3, (i * 31 % 64) as u32, i % 100)).collect()
}

/// Records a stopped run lets through before it asks to stop: a quarter of the input. The stop
/// comes from the data, not a clock, so it lands mid-run on a machine of any speed (behind it,
/// at most a few channels of batches are in flight).
const STOP_AT: usize = 10_000;

/// Builds the job: per key, 1 s windows of count and sum. With `stop`, the job asks to stop
/// once [`STOP_AT`] records went through.
fn job(p: &Pipeline, out: Committed<Row>, stop: bool) {
    job_with(p, out, stop, Variant::default());
}

/// Changes to the program between a savepoint and its restore.
#[derive(Clone, Copy, Default)]
struct Variant {
    /// The window operator's uid, if it has one.
    uid: Option<&'static str>,
    /// An operator added upstream of the window.
    added_upstream: bool,
    /// The window's display name in metrics, if it has one.
    name: Option<&'static str>,
}

fn job_with(p: &Pipeline, out: Committed<Row>, stop: bool, variant: Variant) {
    let stop = stop.then(|| (p.stop_handle(), Arc::new(AtomicUsize::new(0))));
    let mut events = p.source(MemorySource::new(events()).batch_size(100)).inspect(move |_| {
        if let Some((handle, seen)) = &stop
            && seen.fetch_add(1, Ordering::Relaxed) + 1 == STOP_AT
        {
            handle.stop();
        }
    });
    if variant.added_upstream {
        events = events.filter(|_| true);
    }
    let windows = events
        .assign_timestamps(|e| e.0, Watermarks::bounded_out_of_orderness(Duration::from_millis(100)))
        .key_by(|e| e.1)
        .window(TumblingWindows::of(Duration::from_secs(1)))
        .aggregate((Count, Sum::of(|e: &(i64, u32, i64)| e.2)));
    let windows = match variant.uid {
        Some(uid) => windows.uid(uid),
        None => windows,
    };
    let windows = match variant.name {
        Some(name) => windows.name(name),
        None => windows,
    };
    windows.map(|r| (r.key, r.window_start, r.value.0, r.value.1)).sink(out);
}

fn sorted(mut rows: Vec<Row>) -> Vec<Row> {
    rows.sort_unstable();
    rows
}

async fn run(dir: &std::path::Path, parallelism: usize, out: Committed<Row>, stop: bool) -> Result<()> {
    run_with(dir, parallelism, out, stop, Variant::default(), |c| c).await
}

async fn run_with(
    dir: &std::path::Path,
    parallelism: usize,
    out: Committed<Row>,
    stop: bool,
    variant: Variant,
    config: impl FnOnce(Checkpointing) -> Checkpointing,
) -> Result<()> {
    let mut builder = Pipeline::builder("ckpt")
        .parallelism(parallelism)
        .handle_signals(false)
        .checkpointing(config(Checkpointing::to_dir(dir).interval(Duration::from_millis(20))));
    if variant.name.is_some() {
        builder = builder.metrics(Metrics::new());
    }
    let p = builder.build()?;
    job_with(&p, out, stop, variant);
    p.run().await.map(drop)
}

async fn reference() -> Vec<Row> {
    let dir = tempfile::tempdir().unwrap();
    let out = Committed::new();
    run(dir.path(), 2, out.clone(), false).await.unwrap();
    sorted(out.output())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_job_resumes_from_its_savepoint_with_identical_output() {
    let want = reference().await;
    assert!(want.len() > 1000, "{} rows", want.len());
    let dir = tempfile::tempdir().unwrap();
    let out = Committed::new();
    run(dir.path(), 2, out.clone(), true).await.unwrap();
    let partial = out.output().len();
    assert!(partial < want.len(), "the stop came after the end ({partial} rows)");
    run(dir.path(), 2, out.clone(), false).await.unwrap();
    assert_eq!(sorted(out.output()), want);
}

#[tokio::test]
async fn a_location_without_a_usable_checkpoint_is_refused_unless_from_scratch() {
    let dir = tempfile::tempdir().unwrap();
    // A checkpoint directory whose only checkpoint has a truncated manifest.
    let chk = dir.path().join(format!("chk-{:020}", 1));
    std::fs::create_dir_all(&chk).unwrap();
    std::fs::write(chk.join("_manifest.json"), "{\"format_version\": 2, \"pipe").unwrap();
    let out = Committed::new();
    let err = run(dir.path(), 1, out.clone(), false).await.unwrap_err();
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

/// Takes a savepoint of the job as `variant` builds it, mid-run, in a new directory.
async fn savepoint(variant: Variant) -> (tempfile::TempDir, Committed<Row>) {
    let dir = tempfile::tempdir().unwrap();
    let out = Committed::new();
    run_with(dir.path(), 2, out.clone(), true, variant, |c| c).await.unwrap();
    let (partial, all) = (out.output().len(), reference().await.len());
    assert!(partial < all, "the stop came after the end ({partial} of {all} rows)");
    (dir, out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_added_upstream_does_not_take_over_the_state_of_another() {
    // Without uids, the window's id depends on what is upstream of it: with an operator added
    // there, the saved window state belongs to no operator, and the restore says so.
    let (dir, out) = savepoint(Variant::default()).await;
    let changed = Variant { added_upstream: true, ..Variant::default() };
    let err = run_with(dir.path(), 2, out.clone(), false, changed, |c| c).await.unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::Checkpoint(_)), "{msg}");
    for needle in
        ["operators this pipeline does not have", "window-", "Stream::uid", "allow_non_restored_state"]
    {
        assert!(msg.contains(needle), "{needle:?} not in {msg:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_window_with_a_uid_keeps_its_state_when_the_program_changes_upstream() {
    let named = Variant { uid: Some("per-key-seconds"), ..Variant::default() };
    let (dir, out) = savepoint(named).await;
    let changed = Variant { added_upstream: true, ..named };
    run_with(dir.path(), 2, out.clone(), false, changed, |c| c).await.unwrap();
    assert_eq!(sorted(out.output()), reference().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_display_name_given_after_a_savepoint_keeps_the_window_state() {
    // `name` labels metrics only: the window's checkpoint id stays the default one.
    let (dir, out) = savepoint(Variant::default()).await;
    let named = Variant { name: Some("per_key_seconds"), ..Variant::default() };
    run_with(dir.path(), 2, out.clone(), false, named, |c| c).await.unwrap();
    assert_eq!(sorted(out.output()), reference().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_of_a_uid_the_pipeline_lacks_is_refused_unless_dropping_it_is_allowed() {
    let (dir, out) = savepoint(Variant { uid: Some("counts"), ..Variant::default() }).await;
    let renamed = Variant { uid: Some("totals"), ..Variant::default() };
    let err = run_with(dir.path(), 2, out.clone(), false, renamed, |c| c).await.unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("`counts`") || msg.contains("counts,") || msg.contains("counts;"), "{msg}");
    assert!(msg.contains("totals"), "the pipeline's own ids are listed: {msg}");
    // Opted in: the old state is dropped, the job runs (its windows start empty).
    run_with(dir.path(), 2, out.clone(), false, renamed, |c| c.allow_non_restored_state(true)).await.unwrap();
}

#[tokio::test]
async fn two_operators_cannot_share_a_uid() {
    let dir = tempfile::tempdir().unwrap();
    let p = Pipeline::builder("ckpt")
        .parallelism(1)
        .handle_signals(false)
        .checkpointing(Checkpointing::to_dir(dir.path()))
        .build()
        .unwrap();
    let out = Committed::<u32>::new();
    p.source(MemorySource::new(vec![1u32, 2, 3]))
        .map(|x| x + 1)
        .uid("same")
        .map(|x| x * 2)
        .uid("same")
        .sink(out);
    let err = p.run().await.unwrap_err();
    assert!(matches!(err, Error::InvalidConfig { field: "operator uid", .. }), "{err}");
}
