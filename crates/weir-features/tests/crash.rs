//! Feature state survives crashes exactly once: a job computing a feature view from a log topic
//! is killed with SIGKILL three times, each a random moment after a checkpoint of its own
//! completed, and restarted; after it finishes, every lookup and the late-event count equal
//! those of one uninterrupted run.
//!
//! The job runs in a child process: this test binary started again with `WEIR_FEATURES_DIR`
//! set, which makes `child_process` run the job instead of returning.

#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

use std::path::Path;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use weir_connectors::{LogRecord, LogSource};
use weir_features::{Agg, FeatureView, Window};
use weir_log::{Durability, Log, LogOptions, Record, TopicConfig};
use weir_runtime::{Checkpointing, DiscardSink, Pipeline, Watermarks};
use weir_testkit::{ChildTest, Rng, missing, newest_checkpoint};

const CHILD: ChildTest = ChildTest::new("child_process", "WEIR_FEATURES_DIR");

const USERS: u32 = 200;
const EVENTS: i64 = 150_000;
const START: i64 = 1_800_000_000_000;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Txn {
    user: u32,
    merchant: u32,
    amount: i64,
    ts: i64,
}

fn open_log(dir: &Path) -> Log {
    Log::open(dir.join("log"), LogOptions::default().durability(Durability::EveryBatch)).unwrap()
}

/// 150 000 transactions 20 ms apart, out of order by up to 0.5 s, hot users, and one in 200
/// (after the first 20 000) an hour late. The late ones are late in every run: the operator's
/// watermark is the minimum over its inputs, which may lag the newest event by as much as the
/// whole input (50 minutes) when one subtask reads faster, but not by an hour.
fn prepare(dir: &Path) {
    let log = open_log(dir);
    let topic = log.create_topic("txns", TopicConfig::with_partitions(3)).unwrap();
    let records: Vec<Record> = (0..EVENTS)
        .map(|i| {
            let late = is_late(i);
            let t = Txn {
                user: ((i * i + 3 * i) % i64::from(USERS) / if i % 3 == 0 { 10 } else { 1 }) as u32,
                merchant: (i * 7919 % 37) as u32,
                amount: i % 1000,
                ts: START + i * 20 - (i * 7919 % 500) - if late { 3_600_000 } else { 0 },
            };
            Record::new(serde_json::to_vec(&t).unwrap()).with_key(t.user.to_string())
        })
        .collect();
    for chunk in records.chunks(4096) {
        topic.send(chunk).unwrap();
    }
    log.flush().unwrap();
}

fn is_late(i: i64) -> bool {
    i > 20_000 && i % 200 == 7
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
    // A subtask per partition: each subtask's watermark follows its partition from its first
    // record (a subtask reading several partitions holds its watermark back until each sent
    // records, which makes events late or not depending on where a restored run resumes).
    let p = Pipeline::builder("features")
        .parallelism(3)
        .handle_signals(false)
        .report_on_stderr(false)
        .checkpointing(Checkpointing::to_dir(dir.join("checkpoints")).interval(Duration::from_millis(20)))
        .build()?;
    let events = p
        .source(LogSource::topic(&log, "txns", "features").bounded().batch_size(128))
        .try_map(LogRecord::parse_json::<Txn>)
        .assign_timestamps(|t| t.ts, Watermarks::bounded_out_of_orderness(Duration::from_secs(1)));
    let (late, lookup) = view().attach(events);
    late.sink(DiscardSink);
    p.run().await?;
    let end = START + EVENTS * 20;
    let mut lines = vec![format!("late {}", lookup.late_events()), format!("entities {}", lookup.entities())];
    for user in 0..USERS {
        for t in [end, end + 90_000, end + 400_000] {
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

#[test]
fn a_feature_job_killed_three_times_serves_exactly_the_lookups_of_one_run() {
    if CHILD.is_child() {
        return;
    }
    let reference = tempfile::tempdir().unwrap();
    prepare(reference.path());
    weir_testkit::run_to_end(CHILD.spawn(reference.path()));
    let want = lookups(reference.path());
    let late: u64 = want[0].strip_prefix("late ").unwrap().parse().unwrap();
    assert_eq!(
        late,
        (0..EVENTS).filter(|&i| is_late(i)).count() as u64,
        "the input has late events: {}",
        want[0]
    );

    let mut rng = Rng::from_env_or_clock("WEIR_KILL_SEED");
    let dir = tempfile::tempdir().unwrap();
    prepare(dir.path());
    let mut kills = Vec::new();
    while kills.len() < 3 {
        let mut child = CHILD.spawn(dir.path());
        let before = newest_checkpoint(dir.path());
        let started = Instant::now();
        while newest_checkpoint(dir.path()) <= before && child.try_wait().unwrap().is_none() {
            assert!(started.elapsed() < Duration::from_secs(60), "no checkpoint completed within 60 s");
            std::thread::sleep(Duration::from_millis(1));
        }
        std::thread::sleep(Duration::from_millis(rng.below(40)));
        assert!(
            child.try_wait().unwrap().is_none(),
            "the job ended after {} kills; make the input larger",
            kills.len()
        );
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        kills.push(newest_checkpoint(dir.path()));
    }
    weir_testkit::run_to_end(CHILD.spawn(dir.path()));
    eprintln!("killed after checkpoints {kills:?}");
    let got = lookups(dir.path());
    let (mut g, mut w) = (got.clone(), want.clone());
    g.sort();
    w.sort();
    assert!(
        got == want,
        "lookups differ from one run's: extra {:?}; missing {:?}",
        missing(&g, &w),
        missing(&w, &g)
    );
}
