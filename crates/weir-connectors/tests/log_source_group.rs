//! A log topic read at parallelism 2 over 4 partitions: every record exactly once, batches split
//! by partition, offsets committed to the group (lag 0), and a second run resumes there.

#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use weir_connectors::{LogRecord, LogSource};
use weir_log::{Durability, Log, LogOptions, Record, TopicConfig};
use weir_runtime::{Batch, CollectSink, Collector, Operator, Pipeline, Traceable};

fn open(dir: &std::path::Path) -> Log {
    Log::open(dir, LogOptions::default().durability(Durability::None)).unwrap()
}

/// Checks that every batch's split is the partition of its records.
#[derive(Clone)]
struct SplitIsPartition(Arc<Mutex<Vec<(u32, usize)>>>);

impl Operator<LogRecord, LogRecord> for SplitIsPartition {
    fn process_batch(&mut self, batch: Batch<LogRecord>, out: &mut Collector<LogRecord>) {
        assert!(batch.records.iter().all(|r| r.partition == batch.split), "split {}", batch.split);
        self.0.lock().unwrap().push((batch.split, batch.len()));
        out.batch(batch);
    }
}

fn produce(log: &Log, from: u32, to: u32) {
    let topic = log.topic("events").unwrap();
    let records: Vec<Record> =
        (from..to).map(|i| Record::new(format!("v{i}")).with_key(format!("k{}", i % 37))).collect();
    for chunk in records.chunks(100) {
        topic.send(chunk).unwrap();
    }
}

async fn run_bounded(log: &Log, group: &str) -> (Vec<LogRecord>, Vec<(u32, usize)>) {
    let p = Pipeline::builder("read").parallelism(2).handle_signals(false).build().unwrap();
    let out = CollectSink::new();
    let batches = Arc::new(Mutex::new(Vec::new()));
    p.source(LogSource::topic(log, "events", group).bounded().batch_size(50))
        .operator("check", SplitIsPartition(batches.clone()))
        .sink(out.clone());
    tokio::time::timeout(Duration::from_secs(30), p.run()).await.unwrap().unwrap();
    let batches = batches.lock().unwrap().clone();
    (out.take(), batches)
}

fn assert_lag_zero(log: &Log, group: &str) {
    let described = log.describe_group(group).unwrap();
    assert_eq!(described.partitions.len(), 4, "{described:?}");
    for p in &described.partitions {
        assert_eq!(p.committed, Some(p.end_offset), "{p:?}");
        assert_eq!(p.lag, Some(0), "{p:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bounded_group_read_sees_every_record_once_and_commits() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    log.create_topic("events", TopicConfig::with_partitions(4)).unwrap();
    produce(&log, 0, 2_000);

    let (records, batches) = run_bounded(&log, "g").await;
    assert_eq!(records.len(), 2_000);
    let positions: BTreeSet<(u32, u64)> = records.iter().map(|r| (r.partition, r.offset)).collect();
    assert_eq!(positions.len(), 2_000, "a record was delivered twice");
    let values: BTreeSet<String> = records.iter().map(|r| r.payload()).collect();
    assert_eq!(values, (0..2_000).map(|i| format!("v{i}")).collect());
    let splits: BTreeSet<u32> = batches.iter().map(|b| b.0).collect();
    assert_eq!(splits, BTreeSet::from([0, 1, 2, 3]));
    assert!(batches.iter().all(|b| b.1 <= 50));
    let r = &records[0];
    assert_eq!(r.origin(), format!("events/{}@{}", r.partition, r.offset));
    assert!(r.key.as_ref().is_some_and(|k| k.starts_with(b"k")));
    assert_lag_zero(&log, "g");

    // The next run of the group resumes at the committed offsets.
    produce(&log, 2_000, 2_010);
    let (records, _) = run_bounded(&log, "g").await;
    let values: BTreeSet<String> = records.iter().map(|r| r.payload()).collect();
    assert_eq!(values, (2_000..2_010).map(|i| format!("v{i}")).collect());
    assert_lag_zero(&log, "g");

    // Nothing new: a bounded run ends at once, with nothing.
    let (records, _) = run_bounded(&log, "g").await;
    assert!(records.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_subtasks_than_partitions_is_fine() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    log.create_topic("events", TopicConfig::with_partitions(1)).unwrap();
    let topic = log.topic("events").unwrap();
    topic.append(0, &[Record::new("a"), Record::new("b")]).unwrap();
    let p = Pipeline::builder("wide").parallelism(3).handle_signals(false).build().unwrap();
    let out = CollectSink::new();
    p.source(LogSource::topic(&log, "events", "w").bounded()).sink(out.clone());
    tokio::time::timeout(Duration::from_secs(30), p.run()).await.unwrap().unwrap();
    assert_eq!(out.take().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unbounded_source_tails_new_records_and_commits_them() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    log.create_topic("events", TopicConfig::with_partitions(4)).unwrap();
    produce(&log, 0, 100);

    let p = Pipeline::builder("tail").parallelism(2).handle_signals(false).build().unwrap();
    let out = CollectSink::new();
    p.source(LogSource::topic(&log, "events", "t")).sink(out.clone());
    let job = tokio::spawn(p.run());

    let mut seen: Vec<LogRecord> = Vec::new();
    let wait = async {
        let mut produced = false;
        loop {
            seen.extend(out.take());
            if seen.len() >= 100 && !produced {
                produce(&log, 100, 300); // Appended while the job runs.
                produced = true;
            }
            // Unknown until the first commit: manually assigned consumers are not members.
            let committed = log.describe_group("t").is_ok_and(|d| {
                d.partitions.len() == 4 && d.partitions.iter().all(|p| p.lag == Some(0) && p.end_offset > 0)
            });
            if seen.len() >= 300 && committed && produced {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(30), wait).await.expect("records or commits missing");
    assert!(!job.is_finished(), "an unbounded source must not end");
    job.abort();
    let values: BTreeSet<String> = seen.iter().map(|r| r.payload()).collect();
    assert_eq!(seen.len(), 300);
    assert_eq!(values, (0..300).map(|i| format!("v{i}")).collect());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_topic_fails_the_job_naming_topic_and_group() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    let p = Pipeline::builder("missing").parallelism(1).handle_signals(false).build().unwrap();
    p.source(LogSource::topic(&log, "ghost", "g").bounded()).sink(CollectSink::new());
    let err = p.run().await.unwrap_err().to_string();
    assert!(err.contains("log source ghost (group g)") && err.contains("unknown topic"), "{err}");
}
