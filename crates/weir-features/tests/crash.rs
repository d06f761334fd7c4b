//! Feature state survives crashes exactly once: a job computing a feature view from a log topic
//! is killed with SIGKILL three times, each a random moment after a checkpoint of its own
//! completed, and restarted. After it finishes, every lookup equals a recomputation over the
//! input minus the late events the job committed to its late output (a file sink, exactly once),
//! and its late count equals theirs: no event applied twice, none lost, none both late and
//! applied.
//!
//! The same holds when each restart restores at another parallelism (entities follow their
//! key groups; the late count is restored once).
//!
//! Which events are late depends on timing (a pipeline's watermark stays at its minimum until
//! every input subtask reported progress, and a subtask reading several partitions holds it
//! back until each sent records), so the expectation is computed from what the job committed,
//! not from a second run.
//!
//! The job runs in a child process: this test binary started again with `WEIR_FEATURES_DIR`
//! set, which makes `child_process` run the job instead of returning.

#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

use std::path::Path;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use weir_connectors::{FileSink, LogRecord, LogSource};
use weir_features::{Agg, FeatureRow, FeatureValue, FeatureView, Status, Value, Window};
use weir_log::{Durability, Log, LogOptions, Record, TopicConfig};
use weir_runtime::{Checkpointing, Pipeline, Watermarks};
use weir_testkit::{ChildTest, Rng, newest_checkpoint};

const CHILD: ChildTest = ChildTest::new("child_process", "WEIR_FEATURES_DIR");
const PARALLELISM_ENV: &str = "WEIR_FEATURES_PARALLELISM";

const USERS: u32 = 200;
const EVENTS: i64 = 150_000;
const START: i64 = 1_800_000_000_000;
const END: i64 = START + EVENTS * 20;
/// Lookup times: at the end, when the minute has passed, when five minutes have.
const TIMES: [i64; 3] = [END, END + 90_000, END + 400_000];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Txn {
    user: u32,
    merchant: u32,
    amount: i64,
    ts: i64,
}

fn open_log(dir: &Path) -> Log {
    Log::open(dir.join("log"), LogOptions::default().durability(Durability::EveryBatch)).unwrap()
}

/// 150 000 transactions 20 ms apart, out of order by up to 0.5 s, hot users, and one in 100
/// (after the first 500) an hour late.
fn hour_late(i: i64) -> bool {
    i > 500 && i % 100 == 7
}

fn input() -> Vec<Txn> {
    (0..EVENTS)
        .map(|i| Txn {
            user: ((i * i + 3 * i) % i64::from(USERS) / if i % 3 == 0 { 10 } else { 1 }) as u32,
            merchant: (i * 7919 % 37) as u32,
            amount: i % 1000,
            ts: START + i * 20 - (i * 7919 % 500) - if hour_late(i) { 3_600_000 } else { 0 },
        })
        .collect()
}

fn prepare(dir: &Path) {
    let log = open_log(dir);
    let topic = log.create_topic("txns", TopicConfig::with_partitions(3)).unwrap();
    let records: Vec<Record> = input()
        .iter()
        .map(|t| Record::new(serde_json::to_vec(t).unwrap()).with_key(t.user.to_string()))
        .collect();
    for chunk in records.chunks(4096) {
        topic.send(chunk).unwrap();
    }
    log.flush().unwrap();
}

fn view() -> FeatureView<u32, Txn> {
    FeatureView::builder("user_txn@v1")
        .entity(|t: &Txn| t.user)
        .event_time(|t| t.ts)
        .allowed_lateness(Duration::from_secs(10))
        .number("amount", |t| t.amount as f64)
        .category("merchant", |t| t.merchant)
        .feature("count_1m", Agg::Count, Window::Last(Duration::from_secs(60)))
        .feature("sum_5m", Agg::Sum("amount".into()), Window::Last(Duration::from_secs(300)))
        .feature("merchants_5m", Agg::Distinct("merchant".into()), Window::Last(Duration::from_secs(300)))
        .feature("last3_5m", Agg::LastN("amount".into(), 3), Window::Last(Duration::from_secs(300)))
        .feature("count_life", Agg::Count, Window::Lifetime)
        .feature("max_life", Agg::Max("amount".into()), Window::Lifetime)
        .build()
        .unwrap()
}

/// The job (in the child process); when it finishes, it writes its lookups to `dir/lookups`.
async fn job(dir: &Path) -> weir_runtime::Result<()> {
    let log = open_log(dir);
    let parallelism = std::env::var(PARALLELISM_ENV).ok().and_then(|p| p.parse().ok()).unwrap_or(3);
    let p = Pipeline::builder("features")
        .parallelism(parallelism)
        .handle_signals(false)
        .report_on_stderr(false)
        .checkpointing(Checkpointing::to_dir(dir.join("checkpoints")).interval(Duration::from_millis(20)))
        .build()?;
    let events = p
        .source(LogSource::topic(&log, "txns", "features").bounded().batch_size(128))
        .try_map(LogRecord::parse_json::<Txn>)
        .assign_timestamps(|t| t.ts, Watermarks::bounded_out_of_orderness(Duration::from_secs(1)));
    let (late, lookup) = view().attach(events);
    late.sink(FileSink::json_lines(dir.join("late/late.jsonl")));
    p.run().await?;
    let mut lines = vec![format!("late {}", lookup.late_events())];
    for user in 0..USERS {
        for t in TIMES {
            lines.push(format!("{user} {t} {:?}", lookup.lookup_at(&user, t).unwrap()));
        }
    }
    std::fs::write(dir.join("lookups"), lines.join("\n")).unwrap();
    Ok(())
}

/// Runs the job when started as the child process; does nothing otherwise.
#[test]
fn child_process() {
    let Some(dir) = CHILD.value() else { return };
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(job(Path::new(&dir))).unwrap();
}

fn lookups(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("lookups")).unwrap().lines().map(str::to_owned).collect()
}

/// The committed late events (hidden in-progress files skipped).
fn late_events(dir: &Path) -> Vec<Txn> {
    let mut late = Vec::new();
    for entry in std::fs::read_dir(dir.join("late")).unwrap() {
        let path = entry.unwrap().path();
        if !path.file_name().unwrap().to_string_lossy().starts_with('.') {
            let text = std::fs::read_to_string(&path).unwrap();
            late.extend(text.lines().map(|l| serde_json::from_str::<Txn>(l).unwrap()));
        }
    }
    late
}

/// What the lookups must be: the view's features recomputed over `applied` (in input order,
/// which is each user's arrival order: a user's events share a partition).
fn expected(applied: &[Txn], late: usize) -> Vec<String> {
    let mut lines = vec![format!("late {late}")];
    for user in 0..USERS {
        let mine: Vec<&Txn> = applied.iter().filter(|t| t.user == user).collect();
        for t in TIMES {
            let upto: Vec<&Txn> = mine.iter().copied().filter(|e| e.ts <= t).collect();
            let newest = upto.iter().map(|e| e.ts).max();
            let within = |w: i64| {
                let mut evs: Vec<(usize, &Txn)> =
                    upto.iter().copied().enumerate().filter(|(_, e)| e.ts > t - w).collect();
                evs.sort_by_key(|(i, e)| (e.ts, *i));
                evs.into_iter().map(|(_, e)| e).collect::<Vec<_>>()
            };
            let status = |n: usize| match (n, newest) {
                (0, Some(_)) => Status::Expired,
                (0, None) => Status::Empty,
                _ => Status::Present,
            };
            let (m1, m5) = (within(60_000), within(300_000));
            let merchants = m5.iter().map(|e| e.merchant).collect::<std::collections::HashSet<_>>().len();
            let values = vec![
                FeatureValue { status: status(m1.len()), value: Value::Count(m1.len() as u64) },
                FeatureValue {
                    status: status(m5.len()),
                    value: Value::Number(m5.iter().fold(0.0, |sum, e| sum + e.amount as f64)),
                },
                FeatureValue { status: status(m5.len()), value: Value::Count(merchants as u64) },
                FeatureValue {
                    status: status(m5.len()),
                    value: Value::Numbers(m5.iter().rev().take(3).map(|e| e.amount as f64).collect()),
                },
                FeatureValue { status: status(upto.len()), value: Value::Count(upto.len() as u64) },
                FeatureValue {
                    status: status(upto.len()),
                    value: upto
                        .iter()
                        .map(|e| e.amount as f64)
                        .reduce(f64::max)
                        .map_or(Value::Missing, Value::Number),
                },
            ];
            lines.push(format!("{user} {t} {:?}", FeatureRow { at: t, newest_event: newest, values }));
        }
    }
    lines
}

/// Starts the job at `parallelism` and kills it (SIGKILL) a random moment after a checkpoint
/// of its own completed; returns the newest checkpoint.
fn kill_after_a_checkpoint(dir: &Path, parallelism: usize, rng: &mut Rng) -> u64 {
    let mut child = CHILD.command(dir).env(PARALLELISM_ENV, parallelism.to_string()).spawn().unwrap();
    let before = newest_checkpoint(dir);
    let started = Instant::now();
    while newest_checkpoint(dir) <= before && child.try_wait().unwrap().is_none() {
        assert!(started.elapsed() < Duration::from_secs(60), "no checkpoint completed within 60 s");
        std::thread::sleep(Duration::from_millis(1));
    }
    std::thread::sleep(Duration::from_millis(rng.below(40)));
    assert!(child.try_wait().unwrap().is_none(), "the job ended before the kill; make the input larger");
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    newest_checkpoint(dir)
}

/// Runs the job at `parallelism` to its end, then checks its lookups against the
/// recomputation over the input minus its committed late events.
fn finish_and_check(dir: &Path, parallelism: usize) {
    weir_testkit::run_to_end(
        CHILD.command(dir).env(PARALLELISM_ENV, parallelism.to_string()).spawn().unwrap(),
    );
    let late = late_events(dir);
    let hour_late = (0..EVENTS).filter(|&i| hour_late(i)).count();
    assert!(late.len() > hour_late / 2, "most of the {hour_late} hour-late events are late: {}", late.len());
    let mut applied = input();
    for l in &late {
        let i = applied
            .iter()
            .position(|t| t == l)
            .unwrap_or_else(|| panic!("a late event committed twice: {l:?}"));
        applied.remove(i);
    }
    let want = expected(&applied, late.len());
    let got = lookups(dir);
    let first = got.iter().zip(&want).find(|(g, w)| g != w);
    assert!(
        got == want,
        "lookups differ from the recomputation ({} and {} lines): first {first:#?}",
        got.len(),
        want.len()
    );
}

#[test]
fn a_feature_job_killed_three_times_applies_every_event_once_unless_it_committed_it_as_late() {
    if CHILD.is_child() {
        return;
    }
    let mut rng = Rng::from_env_or_clock("WEIR_KILL_SEED");
    let dir = tempfile::tempdir().unwrap();
    prepare(dir.path());
    let kills: Vec<u64> = (0..3).map(|_| kill_after_a_checkpoint(dir.path(), 3, &mut rng)).collect();
    eprintln!("killed after checkpoints {kills:?}");
    finish_and_check(dir.path(), 3);
}

#[test]
fn feature_state_restores_at_another_parallelism_each_time_three_two_one_two() {
    if CHILD.is_child() {
        return;
    }
    let mut rng = Rng::from_env_or_clock("WEIR_KILL_SEED");
    let dir = tempfile::tempdir().unwrap();
    prepare(dir.path());
    for parallelism in [3, 2, 1] {
        kill_after_a_checkpoint(dir.path(), parallelism, &mut rng);
    }
    finish_and_check(dir.path(), 2);
}
