//! Exactly once for streaming SQL across crashes and rescaling: a script over a log topic —
//! a tumbling-window GROUP BY into a JSON-lines file and into a log topic, and a session-window
//! GROUP BY into a CSV file — is killed with SIGKILL at random moments and restarted until it
//! finishes; its committed output must equal, row for row, that of one uninterrupted run. The
//! same holds when a checkpoint taken at parallelism 2 is restored at 1 and at 4.
//!
//! The job runs in a child process: this test binary started again with
//! `WEIR_SQL_EXACTLY_ONCE_DIR` set, which makes `child_process` run the job instead of
//! returning (the pattern of weir-connectors' `tests/exactly_once.rs`).

#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

use std::path::Path;
use std::process::Child;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use weir_log::{AutoOffsetReset, ConsumerConfig, Durability, Log, LogOptions, Record, TopicConfig};
use weir_runtime::Checkpointing;
use weir_sql::{Script, ScriptOptions, StreamContext};
use weir_testkit::{ChildTest, Rng, missing};

/// The job's child process: `child_process`, given the job's directory.
const CHILD: ChildTest = ChildTest::new("child_process", "WEIR_SQL_EXACTLY_ONCE_DIR");
const PARALLELISM_ENV: &str = "WEIR_SQL_EXACTLY_ONCE_PARALLELISM";
/// Set: the script's CREATE SINK statements in reverse order.
const REVERSED_ENV: &str = "WEIR_SQL_EXACTLY_ONCE_REVERSED";

/// Events in the input: several times what the channels between the job's tasks hold, so a
/// checkpoint barrier (queued behind what the source already read) completes with most of
/// the input still unread, and a restored life has seconds of work left, longer than any kill
/// delay.
const EVENTS: i64 = 200_000;

fn open_log(dir: &Path) -> Log {
    Log::open(dir.join("log"), LogOptions::default().durability(Durability::None)).unwrap()
}

/// The input: events 5 ms apart, with a one-second pause every 2 000 (so sessions close), 40
/// users, 2 partitions (one per source subtask, so event time advances evenly), out of order by up to 200 ms (never late: the watermark trails by 1 s).
fn prepare(dir: &Path) {
    let log = open_log(dir);
    let topic = log.create_topic("events", TopicConfig::with_partitions(2)).unwrap();
    let records: Vec<Record> = (0..EVENTS)
        .map(|i| {
            let ts = 1_700_000_000_000 + i * 5 + (i / 2000) * 1000 - (i * 7919 % 200);
            let user = i * 13 % 40;
            let value = format!("{{\"ts_ms\":{ts},\"user_id\":{user},\"amount\":{}}}", i % 1000);
            Record::new(value).with_key(user.to_string())
        })
        .collect();
    for chunk in records.chunks(4096) {
        topic.send(chunk).unwrap();
    }
    log.flush().unwrap();
}

fn script(dir: &Path) -> String {
    let script = script_in_order(dir);
    if std::env::var(REVERSED_ENV).is_err() {
        return script;
    }
    // The CREATE SINK statements in reverse order, after the CREATE SOURCE.
    let mut statements: Vec<&str> = script.split(';').map(str::trim).filter(|s| !s.is_empty()).collect();
    statements[1..].reverse();
    statements.join(";\n")
}

fn script_in_order(dir: &Path) -> String {
    let out = dir.join("out");
    format!(
        "CREATE SOURCE events (ts_ms BIGINT, user_id INT, amount BIGINT, ts AS to_timestamp_millis(ts_ms), \
           WATERMARK FOR ts AS ts - INTERVAL '1' SECOND) \
           WITH (connector = 'log', topic = 'events', format = 'json', bounded = 'true');
         CREATE SINK per_second WITH (connector = 'file', path = '{out}/per_second.jsonl', format = 'json') AS \
           SELECT window_start, user_id, count(*) AS events, sum(amount) AS amount, avg(amount) AS mean \
           FROM events GROUP BY tumble(ts, INTERVAL '1' SECOND), user_id;
         CREATE SINK per_second_log WITH (connector = 'log', topic = 'rows') AS \
           SELECT window_start, user_id, count(*) AS events, max(amount) AS top \
           FROM events WHERE amount % 3 <> 0 GROUP BY tumble(ts, INTERVAL '1' SECOND), user_id;
         CREATE SINK sessions WITH (connector = 'file', path = '{out}/sessions.csv', format = 'csv') AS \
           SELECT window_start, window_end, user_id, count(*) AS events, min(amount) AS low \
           FROM events GROUP BY session(ts, INTERVAL '500' MILLISECOND), user_id;",
        out = out.display()
    )
}

/// The job (in the child process).
async fn job(dir: &Path, parallelism: usize) -> weir_sql::Result<()> {
    let mut ctx = StreamContext::with_log(open_log(dir));
    let options = ScriptOptions {
        name: "sql-exactly-once".into(),
        parallelism,
        checkpointing: Some(
            Checkpointing::to_dir(dir.join("checkpoints")).interval(Duration::from_millis(100)),
        ),
        ..ScriptOptions::default()
    };
    Script::parse(&script(dir))?.run(&mut ctx, &options).await.map(drop)
}

/// Runs the job when started as the child process; does nothing otherwise.
#[test]
fn child_process() {
    let Some(dir) = CHILD.value() else { return };
    let parallelism = std::env::var(PARALLELISM_ENV).ok().and_then(|p| p.parse().ok()).unwrap_or(2);
    // More workers than the job has tasks (12): in a debug build one poll of an operator task
    // can run for a second (128 batches of DataFusion work), and with a worker per CPU the
    // checkpoint coordinator's timer waits for it; the first checkpoints would come only once
    // the input is read, with no window open to restore.
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(16).enable_all().build().unwrap();
    rt.block_on(job(Path::new(&dir), parallelism)).unwrap();
}

fn spawn(dir: &Path, parallelism: usize) -> Child {
    spawn_script(dir, parallelism, false)
}

/// The child, with the script's CREATE SINK statements in reverse order if `reversed`.
fn spawn_script(dir: &Path, parallelism: usize, reversed: bool) -> Child {
    let mut cmd = CHILD.command(dir);
    cmd.env(PARALLELISM_ENV, parallelism.to_string());
    if reversed {
        cmd.env(REVERSED_ENV, "1");
    }
    cmd.spawn().unwrap()
}

fn run_to_end(dir: &Path, parallelism: usize) {
    weir_testkit::run_to_end(spawn(dir, parallelism));
}

/// The committed output: the lines of the final files (name, line) and the topic's records
/// (partition, value), sorted.
type Output = (Vec<(String, String)>, Vec<(u32, String)>);

fn output(dir: &Path) -> Output {
    let mut lines = Vec::new();
    for entry in std::fs::read_dir(dir.join("out")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue; // uncommitted or markers
        }
        let text = std::fs::read_to_string(&path).unwrap();
        lines.extend(text.lines().map(|l| (name.clone(), l.to_owned())));
    }
    lines.sort_unstable();
    let log = open_log(dir);
    let mut consumer =
        log.consumer(ConsumerConfig::new("rows").auto_offset_reset(AutoOffsetReset::Earliest)).unwrap();
    let mut records = Vec::new();
    loop {
        let polled = consumer.poll_now().unwrap();
        if polled.is_empty() {
            break;
        }
        for batch in polled {
            for r in batch.records {
                records.push((batch.partition, String::from_utf8(r.value.to_vec()).unwrap()));
            }
        }
    }
    records.sort_unstable();
    (lines, records)
}

/// The tests run one at a time: each child process keeps two threads busy, and the kill
/// times are measured against a job that does not compete for CPUs.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    SERIAL.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The output of one uninterrupted run (computed once for every test of the binary).
fn reference() -> &'static Output {
    static REFERENCE: OnceLock<Output> = OnceLock::new();
    REFERENCE.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        prepare(dir.path());
        run_to_end(dir.path(), 2);
        let out = output(dir.path());
        let count = |file: &str| out.0.iter().filter(|(f, _)| f == file).count();
        // 40 users in each of ~1 100 one-second windows; 40 users × 100 sessions (+ the header).
        assert!(count("per_second.jsonl") > 10_000, "{} rows", count("per_second.jsonl"));
        assert!(out.1.len() > 10_000, "{} topic records", out.1.len());
        assert_eq!(count("sessions.csv"), 40 * (EVENTS as usize / 2000) + 1);
        out
    })
}

fn assert_same(got: &Output, want: &Output) {
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

/// The complete checkpoints of the job in `dir` (their directories).
fn checkpoints(dir: &Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(dir.join("checkpoints"))
        .map(|it| {
            it.filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.join("_manifest.json").exists())
                .collect()
        })
        .unwrap_or_default()
}

/// When a life of the job is killed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kill {
    /// Soon after it completed a checkpoint of its own.
    AfterCheckpoint,
    /// At a random moment soon after it started.
    Early,
}

#[test]
fn a_sql_job_killed_at_random_moments_commits_exactly_the_output_of_one_run() {
    if CHILD.is_child() {
        return;
    }
    let _serial = serial();
    let want = reference();
    let mut rng = Rng::from_env_or_clock("WEIR_KILL_SEED");
    let dir = tempfile::tempdir().unwrap();
    prepare(dir.path());
    // How each life ends: killed soon after it completes a checkpoint of its own (so it made
    // progress; the kill falls around the checkpoint's commit), killed at a random moment
    // soon after it starts (before its first checkpoint: the next life restores the same
    // checkpoint over what this one left uncommitted), ..., and the last runs to the end.
    // Every planned kill must land: the input is large enough (`EVENTS`).
    let plan = [Kill::AfterCheckpoint, Kill::Early, Kill::AfterCheckpoint, Kill::Early];
    let mut kills = Vec::new();
    let started = Instant::now();
    loop {
        let before = checkpoints(dir.path());
        let mut child = spawn(dir.path(), 2);
        let life = Instant::now();
        let kill = plan.get(kills.len()).copied();
        let mut deadline = match kill {
            Some(Kill::Early) => Some(life + Duration::from_millis(20 + rng.below(180))),
            _ => None,
        };
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break Some(status);
            }
            if kill == Some(Kill::AfterCheckpoint)
                && deadline.is_none()
                && checkpoints(dir.path()).iter().any(|c| !before.contains(c))
            {
                deadline = Some(Instant::now() + Duration::from_millis(rng.below(80)));
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                break None;
            }
            std::thread::sleep(Duration::from_millis(2));
        };
        match status {
            Some(status) => {
                assert!(status.success(), "the job failed: {status}");
                assert_eq!(kills.len(), plan.len(), "the job finished before its last planned kill");
                break;
            }
            None => {
                child.kill().unwrap(); // SIGKILL
                child.wait().unwrap();
                kills.push(life.elapsed().as_millis());
            }
        }
        assert!(started.elapsed() < Duration::from_secs(120), "no progress after {} kills", kills.len());
    }
    eprintln!("killed at {kills:?} ms into each run; finished after {:?}", started.elapsed());
    assert_same(&output(dir.path()), want);
}

#[test]
fn a_sql_checkpoint_taken_at_parallelism_two_restores_at_one_and_at_four() {
    if CHILD.is_child() {
        return;
    }
    let _serial = serial();
    let want = reference();
    // Both cases at once: two jobs at parallelism 2, each killed after its first checkpoint,
    // then restored, one at 1 and one at 4.
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let mut children: Vec<Option<Child>> = dirs
        .iter()
        .map(|dir| {
            prepare(dir.path());
            Some(spawn(dir.path(), 2))
        })
        .collect();
    let started = Instant::now();
    while children.iter().any(Option::is_some) {
        for (dir, slot) in dirs.iter().zip(&mut children) {
            let Some(child) = slot else { continue };
            assert!(child.try_wait().unwrap().is_none(), "the job ended before its first checkpoint");
            if !checkpoints(dir.path()).is_empty() {
                child.kill().unwrap(); // SIGKILL
                child.wait().unwrap();
                *slot = None;
            }
        }
        assert!(started.elapsed() < Duration::from_secs(60), "no checkpoint after a minute");
        std::thread::sleep(Duration::from_millis(2));
    }
    let restored: Vec<Child> = dirs.iter().zip([1, 4]).map(|(dir, p)| spawn(dir.path(), p)).collect();
    for ((dir, mut child), restore_at) in dirs.iter().zip(restored).zip([1, 4]) {
        let status = child.wait().unwrap();
        assert!(status.success(), "the job restored at {restore_at} failed: {status}");
        eprintln!("restored at parallelism {restore_at}");
        assert_same(&output(dir.path()), want);
    }
}

#[test]
fn a_sql_checkpoint_restores_into_the_script_with_its_statements_reordered() {
    if CHILD.is_child() {
        return;
    }
    let _serial = serial();
    let want = reference();
    let dir = tempfile::tempdir().unwrap();
    prepare(dir.path());
    let mut child = spawn(dir.path(), 2);
    let started = Instant::now();
    while checkpoints(dir.path()).is_empty() {
        assert!(child.try_wait().unwrap().is_none(), "the job ended before its first checkpoint");
        assert!(started.elapsed() < Duration::from_secs(120));
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    // Each statement's state and source positions follow it to its new place.
    let status = spawn_script(dir.path(), 2, true).wait().unwrap();
    assert!(status.success(), "the job failed: {status}");
    assert_same(&output(dir.path()), want);
}
