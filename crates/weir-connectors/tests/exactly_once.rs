//! Exactly once across crashes and rescaling: a windowed job on a log topic, writing to a
//! file sink and a log sink, is killed with SIGKILL at random moments and restarted until it
//! finishes; its committed output must equal, row for row, that of one uninterrupted run. The
//! same holds when a checkpoint taken at parallelism 2 is restored at 1 and at 4.
//!
//! The job runs in a child process: this test binary started again with `WEIR_EXACTLY_ONCE_DIR`
//! set, which makes `child_process` run the job instead of returning (`weir_testkit::ChildTest`).

#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

mod common;

use common::{Event, Rng, Row, file_rows, open_log, topic_records};
use weir_connectors::{FileSink, LogRecord, LogSink, LogSource};
use weir_log::TopicConfig;
use weir_runtime::{Checkpointing, Count, Pipeline, Sum, TumblingWindows, Watermarks};
use weir_testkit::{ChildTest, missing, newest_checkpoint};

/// The job's child process: `child_process`, given the job's directory.
const CHILD: ChildTest = ChildTest::new("child_process", "WEIR_EXACTLY_ONCE_DIR");
const PARALLELISM_ENV: &str = "WEIR_EXACTLY_ONCE_PARALLELISM";

/// The job (in the child process).
async fn job(dir: &Path, parallelism: usize) -> weir_runtime::Result<()> {
    let log = open_log(dir);
    let p = Pipeline::builder("exactly-once")
        .parallelism(parallelism)
        .handle_signals(false)
        .checkpointing(Checkpointing::to_dir(dir.join("checkpoints")).interval(Duration::from_millis(50)))
        .build()?;
    let (to_file, to_log) = p
        .source(LogSource::topic(&log, "events", "exactly-once").bounded().batch_size(256))
        .try_map(LogRecord::parse_json::<Event>)
        .assign_timestamps(|e| e.ts, Watermarks::bounded_out_of_orderness(Duration::from_secs(1)))
        .key_by(|e| e.user)
        .window(TumblingWindows::of(Duration::from_secs(1)))
        .aggregate((Count, Sum::of(|e: &Event| e.amount)))
        .map(|r| Row { user: r.key, window_start: r.window_start, events: r.value.0, amount: r.value.1 })
        .fork();
    to_file.sink(FileSink::json_lines(dir.join("out/rows.jsonl")));
    to_log.sink(
        LogSink::topic(&log, "rows")
            .create_if_missing(TopicConfig::with_partitions(3))
            .key_by(|r: &Row| r.user.to_string()),
    );
    p.run().await.map(drop)
}

/// Runs the job when started as the child process; does nothing otherwise.
#[test]
fn child_process() {
    let Some(dir) = CHILD.value() else { return };
    let parallelism = std::env::var(PARALLELISM_ENV).ok().and_then(|p| p.parse().ok()).unwrap_or(2);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(job(Path::new(&dir), parallelism)).unwrap();
}

fn spawn(dir: &Path, parallelism: usize) -> Child {
    CHILD.command(dir).env(PARALLELISM_ENV, parallelism.to_string()).spawn().unwrap()
}

fn run_to_end(dir: &Path, parallelism: usize) {
    weir_testkit::run_to_end(spawn(dir, parallelism));
}

/// The input: 360 000 events over 30 minutes of event time.
fn prepare(dir: &Path) {
    common::prepare(dir, 360_000);
}

/// The committed output: file rows and topic records (partition, key, value), sorted.
fn output(dir: &Path) -> (Vec<String>, Vec<(u32, String, String)>) {
    (file_rows(&dir.join("out")), topic_records(dir))
}

fn reference() -> (Vec<String>, Vec<(u32, String, String)>) {
    let dir = tempfile::tempdir().unwrap();
    prepare(dir.path());
    run_to_end(dir.path(), 2);
    let out = output(dir.path());
    assert!(
        out.0.len() > 10_000 && out.0.len() == out.1.len(),
        "{} rows, {} records",
        out.0.len(),
        out.1.len()
    );
    out
}

fn assert_same(
    got: &(Vec<String>, Vec<(u32, String, String)>),
    want: &(Vec<String>, Vec<(u32, String, String)>),
) {
    assert!(
        got.0 == want.0,
        "the file rows differ from the uninterrupted run's: {} rows, want {}; extra {:?}; missing {:?}",
        got.0.len(),
        want.0.len(),
        missing(&got.0, &want.0),
        missing(&want.0, &got.0)
    );
    assert!(
        got.1 == want.1,
        "the topic records differ from the uninterrupted run's: {} records, want {}; extra {:?}; missing {:?}",
        got.1.len(),
        want.1.len(),
        missing(&got.1, &want.1),
        missing(&want.1, &got.1)
    );
}

#[test]
fn a_job_killed_at_random_moments_commits_exactly_the_output_of_one_run() {
    if CHILD.is_child() {
        return;
    }
    let want = reference();
    let mut rng = Rng::from_env_or_clock("WEIR_KILL_SEED");
    let dir = tempfile::tempdir().unwrap();
    prepare(dir.path());
    // 10 kills in CI; `WEIR_KILLS=200 cargo test -p weir-connectors --release --test
    // exactly_once` for a longer run (it ends early, and passes, if the job finishes first).
    let target: usize = std::env::var("WEIR_KILLS").ok().and_then(|k| k.parse().ok()).unwrap_or(10).max(10);
    let mut kills = Vec::new();
    let started = Instant::now();
    loop {
        let mut child = spawn(dir.path(), 2);
        if kills.len() == target {
            // The last life runs to the end.
            let status = child.wait().unwrap();
            assert!(status.success(), "the job failed: {status}");
            break;
        }
        // Most lives are killed a random moment (0 to 1.5 checkpoint intervals) after they
        // completed a checkpoint of their own: they made progress, and the next life restores
        // it. One in four is killed at a random moment from its start, checkpoint or not.
        let before = newest_checkpoint(dir.path());
        let life = Instant::now();
        let anytime = rng.below(4) == 0;
        let delay = rng.below(76);
        let mut ended = None;
        while !anytime && newest_checkpoint(dir.path()) <= before {
            if let Some(status) = child.try_wait().unwrap() {
                ended = Some(status);
                break;
            }
            assert!(life.elapsed() < Duration::from_secs(60), "no checkpoint completed within 60 s");
            std::thread::sleep(Duration::from_millis(1));
        }
        std::thread::sleep(Duration::from_millis(delay));
        if let Some(status) = ended.or_else(|| child.try_wait().unwrap()) {
            assert!(status.success(), "the job failed: {status}");
            assert!(kills.len() >= 10, "the job ended after {} kills; make the input larger", kills.len());
            break;
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        kills.push((newest_checkpoint(dir.path()), anytime, delay));
    }
    eprintln!(
        "killed {} times, (newest checkpoint, killed from the start, ms after): {kills:?}; finished after {:?}",
        kills.len(),
        started.elapsed()
    );
    assert_same(&output(dir.path()), &want);
}

#[test]
fn a_checkpoint_taken_at_parallelism_two_restores_at_one_and_at_four() {
    if CHILD.is_child() {
        return;
    }
    let want = reference();
    for restore_at in [1, 4] {
        let dir = tempfile::tempdir().unwrap();
        prepare(dir.path());
        let mut child = spawn(dir.path(), 2);
        // Kill it once a checkpoint is complete (and some output committed).
        let started = Instant::now();
        while newest_checkpoint(dir.path()) == 0 {
            assert!(child.try_wait().unwrap().is_none(), "the job ended before its first checkpoint");
            assert!(started.elapsed() < Duration::from_secs(60));
            std::thread::sleep(Duration::from_millis(2));
        }
        assert!(child.try_wait().unwrap().is_none(), "the job ended before the kill");
        child.kill().unwrap();
        child.wait().unwrap();
        run_to_end(dir.path(), restore_at);
        assert_same(&output(dir.path()), &want);
        let files: Vec<PathBuf> =
            std::fs::read_dir(dir.path().join("out")).unwrap().map(|e| e.unwrap().path()).collect();
        assert!(
            files.iter().any(|f| f.ends_with(if restore_at == 1 { "rows.jsonl" } else { "rows-3.jsonl" })),
            "restored at {restore_at}: {files:?}"
        );
    }
}
