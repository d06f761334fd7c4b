//! Consumer groups: committed offsets, resuming, members sharing partitions, independent
//! groups, lag.

#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

use std::collections::BTreeSet;
use std::time::Duration;

use weir_log::{
    AutoOffsetReset, ConsumedBatch, ConsumerConfig, Durability, Log, LogOptions, Record, TopicConfig,
};

fn open(dir: &std::path::Path) -> Log {
    Log::open(dir, LogOptions::default().durability(Durability::None)).unwrap()
}

fn produce(log: &Log, topic: &str, from: u64, n: u64) {
    let records: Vec<Record> =
        (from..from + n).map(|i| Record::new(i.to_string()).with_key(i.to_string())).collect();
    log.topic(topic).unwrap().send(&records).unwrap();
}

fn values(batches: &[ConsumedBatch]) -> Vec<u64> {
    batches
        .iter()
        .flat_map(|b| b.records.iter().map(|r| std::str::from_utf8(&r.value).unwrap().parse().unwrap()))
        .collect()
}

fn earliest(topic: &str, group: &str) -> ConsumerConfig {
    ConsumerConfig::new(topic).group(group).auto_offset_reset(AutoOffsetReset::Earliest)
}

fn drain(consumer: &mut weir_log::Consumer) -> Vec<u64> {
    let mut all = Vec::new();
    loop {
        let got = values(&consumer.poll_now().unwrap());
        if got.is_empty() {
            return all;
        }
        all.extend(got);
    }
}

#[test]
fn a_group_resumes_from_its_commit_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    log.create_topic("t", TopicConfig::with_partitions(3)).unwrap();
    produce(&log, "t", 0, 100);
    let mut c = log.consumer(earliest("t", "g")).unwrap();
    let first: BTreeSet<u64> = drain(&mut c).into_iter().collect();
    assert_eq!(first, (0..100).collect());
    c.commit().unwrap();
    drop(c);
    let d = log.describe_group("g").unwrap();
    assert_eq!(d.partitions.len(), 3);
    assert!(d.partitions.iter().all(|p| p.lag == Some(0)), "{d:?}");

    produce(&log, "t", 100, 50);
    let d = log.describe_group("g").unwrap();
    assert_eq!(d.partitions.iter().map(|p| p.lag.unwrap()).sum::<u64>(), 50);
    drop(log);

    let log = open(dir.path());
    assert_eq!(log.list_groups().unwrap(), vec!["g".to_owned()]);
    let mut c = log.consumer(earliest("t", "g")).unwrap();
    let second: BTreeSet<u64> = drain(&mut c).into_iter().collect();
    assert_eq!(second, (100..150).collect(), "resumed at the commit, nothing twice");
}

#[test]
fn latest_reset_skips_existing_records_and_independent_groups_each_see_everything() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    log.create_topic("t", TopicConfig::with_partitions(2)).unwrap();
    produce(&log, "t", 0, 10);
    let mut latest = log.consumer(ConsumerConfig::new("t").group("late")).unwrap();
    let mut a = log.consumer(earliest("t", "a")).unwrap();
    let mut b = log.consumer(earliest("t", "b")).unwrap();
    produce(&log, "t", 10, 10);
    assert_eq!(drain(&mut latest).into_iter().collect::<BTreeSet<_>>(), (10..20).collect());
    assert_eq!(drain(&mut a).into_iter().collect::<BTreeSet<_>>(), (0..20).collect());
    assert_eq!(drain(&mut b).into_iter().collect::<BTreeSet<_>>(), (0..20).collect());
}

#[test]
fn two_members_split_the_partitions_and_together_see_every_record_once() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    log.create_topic("t", TopicConfig::with_partitions(4)).unwrap();
    let mut m1 = log.consumer(earliest("t", "g")).unwrap();
    let mut m2 = log.consumer(earliest("t", "g")).unwrap();
    produce(&log, "t", 0, 1000);
    let got1 = drain(&mut m1);
    let got2 = drain(&mut m2);
    let a1: BTreeSet<u32> = m1.assignment().into_iter().map(|(_, p)| p).collect();
    let a2: BTreeSet<u32> = m2.assignment().into_iter().map(|(_, p)| p).collect();
    assert_eq!(a1.len(), 2, "{a1:?}");
    assert_eq!(a2.len(), 2, "{a2:?}");
    assert!(a1.is_disjoint(&a2));
    assert!(!got1.is_empty() && !got2.is_empty());
    let mut all = got1.clone();
    all.extend(&got2);
    all.sort_unstable();
    assert_eq!(all, (0..1000).collect::<Vec<_>>(), "every record exactly once");

    // When one leaves, the other takes over its partitions from the committed offsets.
    m1.commit().unwrap();
    m2.commit().unwrap();
    drop(m2);
    produce(&log, "t", 1000, 100);
    let rest: BTreeSet<u64> = drain(&mut m1).into_iter().collect();
    assert_eq!(m1.assignment().len(), 4);
    assert_eq!(rest, (1000..1100).collect());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poll_wakes_on_append_and_times_out_when_idle() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    log.create_topic("t", TopicConfig::with_partitions(2)).unwrap();
    let mut c = log.consumer(earliest("t", "g")).unwrap();

    let started = std::time::Instant::now();
    assert!(c.poll(Duration::from_millis(100)).await.unwrap().is_empty());
    assert!(started.elapsed() >= Duration::from_millis(100));

    let producer = log.clone();
    let writer = tokio::task::spawn_blocking(move || {
        std::thread::sleep(Duration::from_millis(50));
        produce(&producer, "t", 0, 1);
    });
    let started = std::time::Instant::now();
    let got = c.poll(Duration::from_secs(10)).await.unwrap();
    assert_eq!(values(&got), vec![0]);
    assert!(started.elapsed() < Duration::from_secs(5), "woke only after {:?}", started.elapsed());
    writer.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_producers_and_a_tailing_consumer_see_everything() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), LogOptions::default().durability(Durability::EveryBatch)).unwrap();
    log.create_topic("t", TopicConfig::with_partitions(2)).unwrap();
    let mut c = log.consumer(ConsumerConfig::new("t").auto_offset_reset(AutoOffsetReset::Earliest)).unwrap();
    let producers: Vec<_> = (0..4u64)
        .map(|t| {
            let log = log.clone();
            std::thread::spawn(move || {
                for i in 0..50 {
                    produce(&log, "t", t * 10_000 + i * 10, 10);
                }
            })
        })
        .collect();
    let mut seen = BTreeSet::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while seen.len() < 2000 && std::time::Instant::now() < deadline {
        for v in values(&c.poll(Duration::from_millis(200)).await.unwrap()) {
            assert!(seen.insert(v), "{v} delivered twice");
        }
    }
    for p in producers {
        p.join().unwrap();
    }
    let want: BTreeSet<u64> = (0..4u64).flat_map(|t| (0..500).map(move |i| t * 10_000 + i)).collect();
    assert_eq!(seen, want);
}

#[test]
fn manual_assignment_reads_only_its_partitions_and_commits_to_the_group() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    log.create_topic("t", TopicConfig::with_partitions(3)).unwrap();
    produce(&log, "t", 0, 300);
    let mut c = log.consumer(earliest("t", "g").partitions([1])).unwrap();
    assert_eq!(c.assignment(), vec![("t".to_owned(), 1)]);
    let got = drain(&mut c);
    let topic = log.topic("t").unwrap();
    assert_eq!(got.len() as u64, topic.end_offset(1).unwrap());
    c.commit().unwrap();
    let d = log.describe_group("g").unwrap();
    assert_eq!(d.members, 0, "a manually assigned consumer is not a member");
    assert_eq!(d.partitions.len(), 1);
    assert_eq!(d.partitions[0].committed, Some(topic.end_offset(1).unwrap()));

    let bad = log.consumer(ConsumerConfig::new("t").partitions([3]));
    assert!(matches!(bad, Err(weir_log::Error::UnknownPartition { partition: 3, partitions: 3, .. })));
}

#[test]
fn describing_an_unknown_group_is_an_error_and_does_not_create_it() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    assert!(matches!(log.describe_group("ghost"), Err(weir_log::Error::UnknownGroup(_))));
    assert!(log.list_groups().unwrap().is_empty());
}

#[test]
fn a_position_removed_by_retention_resets_and_reads_in_the_same_poll() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    let config = TopicConfig { segment_bytes: 4096, retention_bytes: Some(4096), ..TopicConfig::default() };
    let topic = log.create_topic("t", config).unwrap();
    let mut c = log.consumer(earliest("t", "g")).unwrap();
    for i in 0..50u64 {
        topic.append(0, &[Record::new(format!("{i:0>500}"))]).unwrap();
    }
    log.enforce_retention().unwrap();
    let start = topic.start_offset(0).unwrap();
    assert!(start > 0);
    let first = c.poll_now().unwrap();
    assert_eq!(first.first().map(|b| b.records[0].offset), Some(start));
}
