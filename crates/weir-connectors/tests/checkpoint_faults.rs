//! Exactly once under checkpoint faults: a windowed job on a log topic, writing to a file sink
//! (and, in half the runs, to a log sink too), is killed at a random moment, its newest
//! checkpoint is damaged (a flipped byte or a cut in a part, a deleted part, a garbled or
//! deleted manifest) and it is started again. The committed output must then equal, row for
//! row, that of one uninterrupted run, or the job must refuse to start with an error saying
//! why; never may a row be committed twice. Also: a job whose checkpoints are gone refuses to
//! start while its output or its consumer group shows committed progress, and a job resumed
//! from another working directory refuses to write anywhere but where it wrote first.
//!
//! The job runs in a child process: this test binary started again with `WEIR_FAULTS_DIR`
//! set, which makes `child_process` run the job instead of returning.

#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::{Event, Rng, Row, file_rows, open_log, topic_records};
use weir_connectors::{FileSink, LogRecord, LogSink, LogSource};
use weir_log::TopicConfig;
use weir_runtime::{Checkpointing, Count, Pipeline, Sum, TumblingWindows, Watermarks};
use weir_testkit::ChildTest;

/// The job's child process: `child_process`, given the job's directory.
const CHILD: ChildTest = ChildTest::new("child_process", "WEIR_FAULTS_DIR");
/// `file`: the file sink only; `both`: the file and the log sink.
const SINKS_ENV: &str = "WEIR_FAULTS_SINKS";
/// The file sink's path as the job is given it (relative paths resolve in the child's
/// working directory).
const OUT_ENV: &str = "WEIR_FAULTS_OUT";
const FROM_SCRATCH_ENV: &str = "WEIR_FAULTS_FROM_SCRATCH";
/// The log sink's topic; default `rows`.
const TOPIC_ENV: &str = "WEIR_FAULTS_TOPIC";
/// What the child prints before the job's error, so the parent can find the message.
const FAILED: &str = "JOB FAILED: ";

/// The input: 120 000 events over 10 minutes of event time.
fn prepare(dir: &Path) {
    common::prepare(dir, 120_000);
}

/// The job (in the child process).
async fn job(
    dir: &Path,
    both: bool,
    out: &Path,
    topic: &str,
    from_scratch: bool,
) -> weir_runtime::Result<()> {
    let log = open_log(dir);
    let p = Pipeline::builder("faults")
        .parallelism(2)
        .handle_signals(false)
        .checkpointing(
            Checkpointing::to_dir(dir.join("checkpoints"))
                .interval(Duration::from_millis(40))
                .from_scratch(from_scratch),
        )
        .build()?;
    let rows = p
        .source(LogSource::topic(&log, "events", "faults").bounded().batch_size(256))
        .try_map(LogRecord::parse_json::<Event>)
        // About a second of work per subtask, so a kill lands mid-run on any machine.
        .inspect(|e| {
            if e.ts % 64 == 0 {
                std::thread::sleep(Duration::from_millis(1));
            }
        })
        .assign_timestamps(|e| e.ts, Watermarks::bounded_out_of_orderness(Duration::from_secs(1)))
        .key_by(|e| e.user)
        .window(TumblingWindows::of(Duration::from_secs(1)))
        .aggregate((Count, Sum::of(|e: &Event| e.amount)))
        .uid("per-user-seconds")
        .map(|r| Row { user: r.key, window_start: r.window_start, events: r.value.0, amount: r.value.1 });
    if both {
        let (to_file, to_log) = rows.fork();
        to_file.sink(FileSink::json_lines(out));
        to_log.sink(
            LogSink::topic(&log, topic)
                .create_if_missing(TopicConfig::with_partitions(3))
                .key_by(|r: &Row| r.user.to_string()),
        );
    } else {
        rows.sink(FileSink::json_lines(out));
    }
    p.run().await.map(drop)
}

/// Runs the job when started as the child process; does nothing otherwise.
#[test]
fn child_process() {
    let Some(dir) = CHILD.value() else { return };
    let both = std::env::var(SINKS_ENV).is_ok_and(|s| s == "both");
    let out = std::env::var(OUT_ENV).unwrap();
    let from_scratch = std::env::var(FROM_SCRATCH_ENV).is_ok();
    let topic = std::env::var(TOPIC_ENV).unwrap_or_else(|_| "rows".to_owned());
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    if let Err(e) = rt.block_on(job(Path::new(&dir), both, Path::new(&out), &topic, from_scratch)) {
        eprintln!("{FAILED}{e}");
        std::process::exit(3);
    }
}

/// How a child is started.
#[derive(Clone)]
struct Run<'a> {
    dir: &'a Path,
    both: bool,
    /// The file sink's path as given to the job; default `<dir>/out/rows.jsonl`.
    out: Option<&'a str>,
    cwd: Option<&'a Path>,
    /// The log sink's topic; default `rows`.
    topic: Option<&'a str>,
    from_scratch: bool,
}

impl<'a> Run<'a> {
    fn new(dir: &'a Path, both: bool) -> Self {
        Run { dir, both, out: None, cwd: None, topic: None, from_scratch: false }
    }

    fn spawn(&self) -> Child {
        let out = self.out.map_or_else(|| self.dir.join("out/rows.jsonl"), PathBuf::from);
        let mut cmd = CHILD.command(self.dir);
        cmd.env(SINKS_ENV, if self.both { "both" } else { "file" }).env(OUT_ENV, out).stderr(Stdio::piped());
        if self.from_scratch {
            cmd.env(FROM_SCRATCH_ENV, "1");
        }
        if let Some(topic) = self.topic {
            cmd.env(TOPIC_ENV, topic);
        }
        if let Some(cwd) = self.cwd {
            cmd.current_dir(cwd);
        }
        cmd.spawn().unwrap()
    }

    /// Runs the job to its end: `Ok(())`, or `Err(the job's error message)`.
    fn to_end(&self) -> Result<(), String> {
        finish(self.spawn())
    }
}

/// Waits for a child: `Ok(())` if the job succeeded, else the error it printed.
fn finish(child: Child) -> Result<(), String> {
    let out = child.wait_with_output().unwrap();
    if out.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    match stderr.lines().find_map(|l| l.strip_prefix(FAILED)) {
        Some(message) => Err(message.to_owned()),
        None => panic!("the job crashed ({}): {stderr}", out.status),
    }
}

/// The committed output: file rows and topic records (partition, key, value), sorted.
type Output = (Vec<String>, Vec<(u32, String, String)>);

fn output(dir: &Path) -> Output {
    (file_rows(&dir.join("out")), topic_records(dir))
}

/// The output of one uninterrupted run with both sinks (the file rows are the same with the
/// file sink alone).
fn reference() -> Output {
    let dir = tempfile::tempdir().unwrap();
    prepare(dir.path());
    Run::new(dir.path(), true).to_end().unwrap();
    let out = output(dir.path());
    assert!(
        out.0.len() > 5_000 && out.0.len() == out.1.len(),
        "{} rows, {} records",
        out.0.len(),
        out.1.len()
    );
    out
}

/// A directory in which the job ran to its end (`both`: with the log sink too); `None` in the
/// child process.
fn ran_to_end(both: bool) -> Option<tempfile::TempDir> {
    if CHILD.is_child() {
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    prepare(dir.path());
    Run::new(dir.path(), both).to_end().unwrap();
    Some(dir)
}

/// Published checkpoints (with a manifest) in the job's directory, ascending.
fn published(dir: &Path) -> Vec<u64> {
    let Ok(entries) = std::fs::read_dir(dir.join("checkpoints")) else { return Vec::new() };
    let mut ids: Vec<u64> = entries
        .filter_map(Result::ok)
        .filter(|e| e.path().join("_manifest.json").exists())
        .filter_map(|e| e.file_name().to_str()?.strip_prefix("chk-")?.parse::<u64>().ok())
        .collect();
    ids.sort_unstable();
    ids
}

fn checkpoint_dir(dir: &Path, id: u64) -> PathBuf {
    dir.join("checkpoints").join(format!("chk-{id:020}"))
}

/// The ways a checkpoint is damaged.
#[derive(Debug, Clone, Copy)]
enum Damage {
    FlipPartBytes,
    TruncatePart,
    DeletePart,
    GarbleManifest,
    DeleteManifest,
}

const DAMAGES: [Damage; 5] = [
    Damage::FlipPartBytes,
    Damage::TruncatePart,
    Damage::DeletePart,
    Damage::GarbleManifest,
    Damage::DeleteManifest,
];

/// Damages checkpoint `id`; returns the file damaged.
fn damage(dir: &Path, id: u64, how: Damage, rng: &mut Rng) -> PathBuf {
    let chk = checkpoint_dir(dir, id);
    let mut parts: Vec<PathBuf> = std::fs::read_dir(&chk)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "part"))
        .collect();
    parts.sort_unstable();
    let manifest = chk.join("_manifest.json");
    let part = if parts.is_empty() {
        manifest.clone()
    } else {
        parts[rng.below(parts.len() as u64) as usize].clone()
    };
    match how {
        Damage::FlipPartBytes => {
            let mut bytes = std::fs::read(&part).unwrap();
            let at = rng.below(bytes.len() as u64) as usize;
            bytes[at] ^= 1 << rng.below(8);
            std::fs::write(&part, bytes).unwrap();
            part
        }
        Damage::TruncatePart => {
            let len = std::fs::metadata(&part).unwrap().len();
            let file = std::fs::OpenOptions::new().write(true).open(&part).unwrap();
            file.set_len(rng.below(len)).unwrap();
            part
        }
        Damage::DeletePart => {
            std::fs::remove_file(&part).unwrap();
            part
        }
        Damage::GarbleManifest => {
            let mut bytes = std::fs::read(&manifest).unwrap();
            let from = rng.below(bytes.len() as u64) as usize;
            for b in &mut bytes[from..] {
                *b = b'#';
            }
            std::fs::write(&manifest, bytes).unwrap();
            manifest
        }
        Damage::DeleteManifest => {
            std::fs::remove_file(&manifest).unwrap();
            manifest
        }
    }
}

/// The newest checkpoint the file sink's markers record as committed.
fn marked(out_dir: &Path) -> Option<u64> {
    let entries = std::fs::read_dir(out_dir).ok()?;
    entries
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().ends_with(".committed"))
        .filter_map(|e| {
            std::fs::read_to_string(e.path()).ok()?.lines().last()?.split(' ').next()?.parse().ok()
        })
        .max()
}

/// Every file in the file sink's directory (markers included) and its bytes, sorted by name.
fn out_files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let Ok(entries) = std::fs::read_dir(dir.join("out")) else { return Vec::new() };
    let mut files: Vec<(String, Vec<u8>)> = entries
        .map(|e| e.unwrap().path())
        .map(|p| (p.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read(&p).unwrap()))
        .collect();
    files.sort_unstable();
    files
}

/// Whether every item of `got` is in `want` at most as often (both sorted).
fn is_sub_multiset<T: Ord>(got: &[T], want: &[T]) -> bool {
    let mut w = want.iter().peekable();
    got.iter().all(|g| {
        while w.peek().is_some_and(|x| *x < g) {
            w.next();
        }
        w.next_if(|x| *x == g).is_some()
    })
}

fn assert_same(got: &Output, want: &Output, both: bool, what: &str) {
    assert!(
        got.0 == want.0,
        "{what}: the file rows differ from the uninterrupted run's: {} rows, want {}; duplicates: {}",
        got.0.len(),
        want.0.len(),
        !is_sub_multiset(&got.0, &want.0)
    );
    if both {
        assert!(
            got.1 == want.1,
            "{what}: the topic records differ from the uninterrupted run's: {} records, want {}; duplicates: {}",
            got.1.len(),
            want.1.len(),
            !is_sub_multiset(&got.1, &want.1)
        );
    }
}

#[test]
fn a_damaged_newest_checkpoint_never_duplicates_output() {
    if CHILD.is_child() {
        return;
    }
    let want = reference();
    let mut rng = Rng::from_env_or_clock("WEIR_FAULT_SEED");
    // Each damage once with the file sink alone and once with both sinks in CI;
    // `WEIR_FAULTS=100 cargo test -p weir-connectors --release --test checkpoint_faults` for
    // a longer run.
    let runs: usize = std::env::var("WEIR_FAULTS").ok().and_then(|k| k.parse().ok()).unwrap_or(10).max(1);
    let first = rng.below(DAMAGES.len() as u64) as usize;
    let mut log = Vec::new();
    for run in 0..runs {
        let how = DAMAGES[(first + run) % DAMAGES.len()];
        let both = (run / DAMAGES.len()) % 2 == 1;
        let dir = tempfile::tempdir().unwrap();
        prepare(dir.path());
        let job = Run::new(dir.path(), both);
        let mut child = job.spawn();
        // Killed a random moment (0 to 2 checkpoint intervals) after its third checkpoint
        // completed, so an older published one is left to fall back to.
        let started = Instant::now();
        while published(dir.path()).len() < 3 && child.try_wait().unwrap().is_none() {
            assert!(started.elapsed() < Duration::from_secs(60), "no checkpoints within 60 s");
            std::thread::sleep(Duration::from_millis(1));
        }
        std::thread::sleep(Duration::from_millis(rng.below(80)));
        assert!(child.try_wait().unwrap().is_none(), "the job ended before the kill; make the input larger");
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let newest = *published(dir.path()).last().unwrap();
        // Whether the damaged checkpoint's output was already committed to the files (the
        // restore must then cut it away).
        let cut = marked(&dir.path().join("out")) == Some(newest);
        let damaged = damage(dir.path(), newest, how, &mut rng);
        let before = out_files(dir.path());
        let what = format!("run {run}: {how:?} of {} (both sinks: {both})", damaged.display());
        match job.to_end() {
            Ok(()) => {
                assert_same(&output(dir.path()), &want, both, &what);
                let sinks = if both { "both" } else { "file" };
                log.push(format!("{how:?}/{sinks}/newest committed: {cut}: same output"));
            }
            Err(message) => {
                // Only a log sink cannot be rolled back: a file sink alone always restores.
                assert!(both, "{what}: the job refused although its file sink can be cut back: {message}");
                assert!(
                    message.contains("cannot be rolled back")
                        && message.contains(&format!("checkpoint {newest}")),
                    "{what}: unclear refusal: {message}"
                );
                let got = output(dir.path());
                assert!(out_files(dir.path()) == before, "{what}: the refusal changed the file sink's files");
                assert!(is_sub_multiset(&got.0, &want.0), "{what}: duplicate file rows after a refusal");
                assert!(is_sub_multiset(&got.1, &want.1), "{what}: duplicate topic records after a refusal");
                log.push(format!("{how:?}/both/newest committed: {cut}: refused"));
            }
        }
    }
    eprintln!("{runs} runs: {log:?}");
}

#[test]
fn a_job_without_checkpoints_refuses_to_start_while_its_output_or_group_shows_progress() {
    let Some(dir) = ran_to_end(false) else { return };
    let job = Run::new(dir.path(), false);
    assert!(!file_rows(&dir.path().join("out")).is_empty());
    // Every manifest deleted: no checkpoint is restorable, the output holds their commits.
    for id in published(dir.path()) {
        std::fs::remove_file(checkpoint_dir(dir.path(), id).join("_manifest.json")).unwrap();
    }
    let message = job.to_end().unwrap_err();
    for needle in
        ["no checkpoint to restore", "out/rows-", "committed by checkpoint", "consumer group faults"]
    {
        assert!(message.contains(needle), "{needle:?} not in {message:?}");
    }
    // Every checkpoint and the output deleted: the consumer group's offsets still show it.
    std::fs::remove_dir_all(dir.path().join("checkpoints")).unwrap();
    std::fs::remove_dir_all(dir.path().join("out")).unwrap();
    let message = job.to_end().unwrap_err();
    assert!(message.contains("consumer group faults has committed offsets"), "{message}");
    // From scratch it runs: the source starts at the group's committed offsets (the end of
    // the input), and the file sink's output is replaced.
    std::fs::create_dir_all(dir.path().join("out")).unwrap();
    std::fs::write(dir.path().join("out/rows-0.jsonl"), "stale\n").unwrap();
    Run { from_scratch: true, ..job.clone() }.to_end().unwrap();
    let rows = file_rows(&dir.path().join("out"));
    assert!(rows.is_empty(), "{} rows after a start from scratch at the end of the input", rows.len());
}

#[test]
fn a_job_resumed_from_another_working_directory_writes_only_where_it_wrote_first() {
    if CHILD.is_child() {
        return;
    }
    let want = {
        let dir = tempfile::tempdir().unwrap();
        prepare(dir.path());
        Run::new(dir.path(), false).to_end().unwrap();
        file_rows(&dir.path().join("out"))
    };
    let dir = tempfile::tempdir().unwrap();
    prepare(dir.path());
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    std::fs::create_dir_all(&a).unwrap();
    std::fs::create_dir_all(&b).unwrap();
    let in_a = Run { out: Some("out/rows.jsonl"), cwd: Some(&a), ..Run::new(dir.path(), false) };
    let mut child = in_a.spawn();
    let started = Instant::now();
    while published(dir.path()).is_empty() {
        assert!(child.try_wait().unwrap().is_none(), "the job ended before its first checkpoint");
        assert!(started.elapsed() < Duration::from_secs(60));
        std::thread::sleep(Duration::from_millis(1));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    // The same relative path from another directory names other files: refused.
    let message = Run { cwd: Some(&b), ..in_a.clone() }.to_end().unwrap_err();
    let (was, now) = (a.join("out/rows.jsonl"), b.join("out/rows.jsonl"));
    assert!(
        message.contains(&*was.to_string_lossy()) && message.contains(&*now.to_string_lossy()),
        "{message}"
    );
    assert!(file_rows(&b.join("out")).is_empty(), "output written in the other directory");
    // The same files by their absolute path, from any directory: resumes exactly once.
    let absolute = was.to_string_lossy().into_owned();
    Run { out: Some(&absolute), cwd: Some(&b), ..in_a.clone() }.to_end().unwrap();
    let got = file_rows(&a.join("out"));
    assert!(got == want, "{} rows, want {}", got.len(), want.len());
}

/// The newest checkpoint whose records topic `rows` holds (by their `weir.checkpoint` header).
fn newest_topic_checkpoint(dir: &Path) -> Option<u64> {
    let log = open_log(dir);
    let mut consumer = log
        .consumer(
            weir_log::ConsumerConfig::new("rows").auto_offset_reset(weir_log::AutoOffsetReset::Earliest),
        )
        .ok()?;
    let mut newest = None;
    loop {
        let polled = consumer.poll_now().unwrap();
        if polled.is_empty() {
            return newest;
        }
        for r in polled.iter().flat_map(|b| &b.records) {
            let header = r.headers.iter().find(|h| h.key == weir_connectors::CHECKPOINT_HEADER);
            let text = header.and_then(|h| h.value.as_ref()).map(|v| String::from_utf8_lossy(v).into_owned());
            if let Some(id) = text.and_then(|t| t.split_once('/')?.0.parse::<u64>().ok()) {
                newest = newest.max(Some(id));
            }
        }
    }
}

#[test]
fn a_refused_restore_leaves_every_output_byte_identical() {
    let Some(dir) = ran_to_end(true) else { return };
    let job = Run::new(dir.path(), true);
    // The checkpoints from the newest one that wrote to the topic on are gone: the older one
    // restored would cut the files back, but the topic holds a newer one's records and cannot be
    // cut back. (The last checkpoints of a run may commit nothing new to the topic.)
    let newest = newest_topic_checkpoint(dir.path()).expect("the topic holds checkpointed records");
    for id in published(dir.path()).into_iter().filter(|&id| id >= newest) {
        std::fs::remove_file(checkpoint_dir(dir.path(), id).join("_manifest.json")).unwrap();
    }
    assert!(!published(dir.path()).is_empty(), "no older checkpoint to restore");
    let (files, records) = (out_files(dir.path()), topic_records(dir.path()));
    assert!(files.iter().any(|(_, bytes)| !bytes.is_empty()));
    let message = job.to_end().unwrap_err();
    assert!(
        message.contains("cannot be rolled back") && message.contains(&format!("checkpoint {newest}")),
        "{message}"
    );
    assert!(out_files(dir.path()) == files, "the refused restore changed the file sink's files");
    assert!(topic_records(dir.path()) == records, "the refused restore changed the topic");
}

#[test]
fn a_log_sink_restored_into_another_topic_is_refused() {
    let Some(dir) = ran_to_end(true) else { return };
    let job = Run::new(dir.path(), true);
    let files = out_files(dir.path());
    let message = Run { topic: Some("rows-renamed"), ..job.clone() }.to_end().unwrap_err();
    let log_dir = dir.path().join("log").canonicalize().unwrap();
    for needle in [&*log_dir.to_string_lossy(), "topic rows,", "topic rows-renamed"] {
        assert!(message.contains(needle), "{needle:?} not in {message:?}");
    }
    assert!(open_log(dir.path()).topic("rows-renamed").is_err(), "the other topic was written");
    assert!(out_files(dir.path()) == files, "the refused restore changed the file sink's files");
}
