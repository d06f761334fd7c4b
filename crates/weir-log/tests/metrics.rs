#![allow(clippy::unwrap_used)] // Tests fail loudly by design.
//! `Log::register_metrics`: the values a scrape shows (parsed from the Prometheus text format)
//! after known appends and commits, for topics created after registration and deleted ones,
//! after a second registration, and after recovery cut a torn tail.

mod common;

use std::path::Path;

use weir_log::{
    AutoOffsetReset, BATCH_HEADER_LEN, ConsumerConfig, Durability, Log, LogOptions, Record, TopicConfig,
};
use weir_metrics::Metrics;
use weir_metrics::catalog::{
    GROUP_COMMITTED_OFFSET, GROUP_LAG, GROUP_LAG_SECONDS, LOG_APPEND_DURATION, LOG_APPENDED_BYTES,
    LOG_APPENDED_RECORDS, LOG_END_OFFSET, LOG_FSYNC_DURATION, LOG_RECOVERY_TRUNCATIONS, LOG_SEGMENTS,
    LOG_SIZE, LOG_START_OFFSET,
};
use weir_testkit::now_ms;
use weir_testkit::prometheus::Scrape;

/// One scrape of the registry.
fn scrape(metrics: &Metrics) -> Scrape {
    Scrape::parse(metrics.encode())
}

fn tp<'a>(topic: &'a str, partition: &'a str) -> [(&'a str, &'a str); 2] {
    [("topic", topic), ("partition", partition)]
}

fn gtp<'a>(group: &'a str, topic: &'a str, partition: &'a str) -> [(&'a str, &'a str); 3] {
    [("group", group), ("topic", topic), ("partition", partition)]
}

fn count(name: &str) -> String {
    format!("{name}_count")
}

/// `n` records stamped an hour ago.
fn records(n: usize) -> Vec<Record> {
    let hour_ago = now_ms() - 3_600_000;
    (0..n)
        .map(|i| Record::new(format!("value-{i}")).with_key(format!("k{i}")).with_timestamp(hour_ago))
        .collect()
}

fn log_with(dir: &Path, durability: Durability) -> Log {
    Log::open(dir, LogOptions::default().durability(durability)).unwrap()
}

/// Bytes of the `.log` files of a partition.
fn segment_bytes(log: &Log, topic: &str, partition: u32) -> u64 {
    let dir = log.dir().join("topics").join(topic).join(partition.to_string());
    common::files_with_ext(&dir, "log").iter().map(|f| std::fs::metadata(f).unwrap().len()).sum()
}

/// Commits `offset` for every partition of `topic` in `group`.
fn commit(log: &Log, group: &str, topic: &str, offsets: &[(u32, u64)]) {
    let partitions = offsets.iter().map(|(p, _)| *p);
    let config = ConsumerConfig::new(topic)
        .group(group)
        .partitions(partitions)
        .auto_offset_reset(AutoOffsetReset::Earliest);
    let mut consumer = log.consumer(config).unwrap();
    for &(p, offset) in offsets {
        consumer.seek(topic, p, offset).unwrap();
    }
    consumer.commit().unwrap();
}

#[test]
fn appends_offsets_and_group_lag_have_exact_values() {
    let dir = tempfile::tempdir().unwrap();
    let log = log_with(dir.path(), Durability::EveryBatch);
    let topic = log.create_topic("orders", TopicConfig::with_partitions(2)).unwrap();
    let metrics = Metrics::new();
    log.register_metrics(&metrics);

    for n in [2, 3, 1] {
        topic.append(0, &records(n)).unwrap();
    }
    topic.append(1, &records(4)).unwrap();
    commit(&log, "billing", "orders", &[(0, 4), (1, 4)]);

    let s = scrape(&metrics);
    let (p0, p1) = (tp("orders", "0"), tp("orders", "1"));
    assert_eq!(s.value(LOG_APPENDED_RECORDS.info.name, &p0), 6.0);
    assert_eq!(s.value(LOG_APPENDED_RECORDS.info.name, &p1), 4.0);
    for (labels, p, calls) in [(p0, 0, 3), (p1, 1, 1)] {
        // A fresh log: every byte appended is in the segment files.
        let bytes = segment_bytes(&log, "orders", p);
        assert!(bytes > (calls * BATCH_HEADER_LEN) as u64, "{bytes}");
        assert_eq!(s.value(LOG_APPENDED_BYTES.info.name, &labels), bytes as f64);
        assert_eq!(s.value(LOG_SIZE.info.name, &labels), bytes as f64);
        assert_eq!(s.value(&count(LOG_APPEND_DURATION.info.name), &labels), calls as f64);
        assert!(
            s.value(&count(LOG_FSYNC_DURATION.info.name), &labels) > 0.0,
            "EveryBatch syncs every append"
        );
        assert_eq!(s.value(LOG_START_OFFSET.info.name, &labels), 0.0);
        assert!(s.value(LOG_SEGMENTS.info.name, &labels) >= 1.0);
        assert_eq!(s.value(LOG_RECOVERY_TRUNCATIONS.info.name, &labels), 0.0);
    }
    assert_eq!(s.value(LOG_END_OFFSET.info.name, &p0), 6.0);
    assert_eq!(s.value(LOG_END_OFFSET.info.name, &p1), 4.0);

    let (g0, g1) = (gtp("billing", "orders", "0"), gtp("billing", "orders", "1"));
    assert_eq!(s.value(GROUP_COMMITTED_OFFSET.info.name, &g0), 4.0);
    assert_eq!(s.value(GROUP_COMMITTED_OFFSET.info.name, &g1), 4.0);
    assert_eq!(s.value(GROUP_LAG.info.name, &g0), 2.0);
    assert_eq!(s.value(GROUP_LAG.info.name, &g1), 0.0, "caught up");
    // The first uncommitted record of partition 0 was stamped an hour ago.
    let behind = s.value(GROUP_LAG_SECONDS.info.name, &g0);
    assert!(behind >= 3599.0, "{behind}");
    assert_eq!(s.value(GROUP_LAG_SECONDS.info.name, &g1), 0.0, "caught up");

    // The gauges follow the log between scrapes; the counters only go up.
    topic.append(1, &records(2)).unwrap();
    let s = scrape(&metrics);
    assert_eq!(s.value(LOG_APPENDED_RECORDS.info.name, &p1), 6.0);
    assert_eq!(s.value(&count(LOG_APPEND_DURATION.info.name), &p1), 2.0);
    assert_eq!(s.value(LOG_END_OFFSET.info.name, &p1), 6.0);
    assert_eq!(s.value(GROUP_LAG.info.name, &g1), 2.0);
    assert!(s.value(GROUP_LAG_SECONDS.info.name, &g1) >= 3599.0);
}

#[test]
fn every_partition_starts_at_zero() {
    let dir = tempfile::tempdir().unwrap();
    let log = log_with(dir.path(), Durability::EveryBatch);
    log.create_topic("idle", TopicConfig::with_partitions(2)).unwrap();
    let metrics = Metrics::new();
    log.register_metrics(&metrics);
    let s = scrape(&metrics);
    for p in ["0", "1"] {
        let labels = tp("idle", p);
        for name in
            [LOG_APPENDED_RECORDS.info.name, LOG_APPENDED_BYTES.info.name, LOG_RECOVERY_TRUNCATIONS.info.name]
        {
            assert_eq!(s.value(name, &labels), 0.0, "{name}");
        }
        assert_eq!(s.value(&count(LOG_APPEND_DURATION.info.name), &labels), 0.0);
        assert_eq!(s.value(&count(LOG_FSYNC_DURATION.info.name), &labels), 0.0);
        assert_eq!(s.value(LOG_END_OFFSET.info.name, &labels), 0.0);
        assert_eq!(s.value(LOG_SEGMENTS.info.name, &labels), 1.0);
    }
    assert!(!s.any(GROUP_LAG.info.name, "topic", "idle"), "no group has committed");
}

#[test]
fn topics_created_later_appear_and_deleted_topics_disappear() {
    let dir = tempfile::tempdir().unwrap();
    let log = log_with(dir.path(), Durability::None);
    let old = log.create_topic("old", TopicConfig::with_partitions(1)).unwrap();
    let metrics = Metrics::new();
    log.register_metrics(&metrics);

    let new = log.create_topic("new", TopicConfig::with_partitions(2)).unwrap();
    new.append(1, &records(5)).unwrap();
    old.append(0, &records(3)).unwrap();
    commit(&log, "g", "old", &[(0, 1)]);
    commit(&log, "g", "new", &[(1, 5)]);

    let s = scrape(&metrics);
    assert_eq!(s.value(LOG_APPENDED_RECORDS.info.name, &tp("new", "1")), 5.0);
    assert_eq!(s.value(LOG_APPENDED_RECORDS.info.name, &tp("new", "0")), 0.0);
    assert_eq!(s.value(&count(LOG_APPEND_DURATION.info.name), &tp("new", "1")), 1.0);
    assert_eq!(s.value(LOG_END_OFFSET.info.name, &tp("new", "1")), 5.0);
    assert_eq!(s.value(LOG_END_OFFSET.info.name, &tp("old", "0")), 3.0);
    assert_eq!(s.value(GROUP_LAG.info.name, &gtp("g", "old", "0")), 2.0);
    assert_eq!(s.value(GROUP_LAG.info.name, &gtp("g", "new", "1")), 0.0);

    log.delete_topic("old").unwrap();
    let s = scrape(&metrics);
    for name in [
        LOG_END_OFFSET.info.name,
        LOG_START_OFFSET.info.name,
        LOG_SEGMENTS.info.name,
        LOG_SIZE.info.name,
        GROUP_COMMITTED_OFFSET.info.name,
        GROUP_LAG.info.name,
        GROUP_LAG_SECONDS.info.name,
    ] {
        assert!(!s.any(name, "topic", "old"), "{name} of a deleted topic:\n{}", s.text);
    }
    assert_eq!(s.value(LOG_END_OFFSET.info.name, &tp("new", "1")), 5.0);
    assert_eq!(s.value(GROUP_COMMITTED_OFFSET.info.name, &gtp("g", "new", "1")), 5.0);
}

#[test]
fn registering_twice_counts_once() {
    let dir = tempfile::tempdir().unwrap();
    let log = log_with(dir.path(), Durability::None);
    let topic = log.create_topic("t", TopicConfig::with_partitions(2)).unwrap();
    let metrics = Metrics::new();
    log.register_metrics(&metrics);
    log.register_metrics(&metrics);
    log.clone().register_metrics(&metrics.clone());
    // Another registry: ignored, the first one wins.
    let other = Metrics::new();
    log.register_metrics(&other);

    topic.append(0, &records(5)).unwrap();
    let s = scrape(&metrics); // Fails on a series exported twice.
    assert_eq!(s.value(LOG_APPENDED_RECORDS.info.name, &tp("t", "0")), 5.0);
    assert_eq!(s.value(&count(LOG_APPEND_DURATION.info.name), &tp("t", "0")), 1.0);
    assert_eq!(s.value(LOG_END_OFFSET.info.name, &tp("t", "0")), 5.0);
    assert_eq!(s.value(LOG_RECOVERY_TRUNCATIONS.info.name, &tp("t", "1")), 0.0);
    assert!(!scrape(&other).any(LOG_END_OFFSET.info.name, "topic", "t"));
}

#[test]
fn recovery_truncations_are_counted() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    {
        let log = log_with(&dir, Durability::None);
        let topic = log.create_topic("t", TopicConfig::with_partitions(2)).unwrap();
        for _ in 0..3 {
            for p in 0..2 {
                topic.append(p, &records(2)).unwrap();
            }
        }
    }
    // Tear the last batch of partition 1, as a crash in the middle of its write would (before
    // the clean close recorded the end offset, which would make the cut a reported loss).
    std::fs::remove_file(dir.join("topics/t/1/end-offset")).unwrap();
    let segments = common::files_with_ext(&dir.join("topics/t/1"), "log");
    let last = segments.last().unwrap();
    common::truncate(last, std::fs::metadata(last).unwrap().len() - 5);

    let log = log_with(&dir, Durability::None);
    assert_eq!(log.recovery().len(), 1, "{:?}", log.recovery());
    let metrics = Metrics::new();
    log.register_metrics(&metrics);
    log.register_metrics(&metrics);
    let s = scrape(&metrics);
    assert_eq!(s.value(LOG_RECOVERY_TRUNCATIONS.info.name, &tp("t", "1")), 1.0);
    assert_eq!(s.value(LOG_RECOVERY_TRUNCATIONS.info.name, &tp("t", "0")), 0.0);
    assert_eq!(s.value(LOG_END_OFFSET.info.name, &tp("t", "1")), 4.0);
    assert_eq!(s.value(LOG_END_OFFSET.info.name, &tp("t", "0")), 6.0);
}

#[test]
fn an_unreadable_group_file_is_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let log = log_with(dir.path(), Durability::None);
    let topic = log.create_topic("t", TopicConfig::with_partitions(1)).unwrap();
    topic.append(0, &records(3)).unwrap();
    commit(&log, "good", "t", &[(0, 3)]);
    std::fs::write(log.dir().join("groups").join("broken.json"), b"{not json").unwrap();
    let metrics = Metrics::new();
    log.register_metrics(&metrics);

    let s = scrape(&metrics);
    assert_eq!(s.value(GROUP_COMMITTED_OFFSET.info.name, &gtp("good", "t", "0")), 3.0);
    assert_eq!(s.value(GROUP_LAG_SECONDS.info.name, &gtp("good", "t", "0")), 0.0);
    assert!(!s.any(GROUP_COMMITTED_OFFSET.info.name, "group", "broken"));
    assert_eq!(s.value(LOG_END_OFFSET.info.name, &tp("t", "0")), 3.0);
}

#[test]
fn the_registry_does_not_keep_the_log_open() {
    let dir = tempfile::tempdir().unwrap();
    let metrics = Metrics::new();
    {
        let log = log_with(dir.path(), Durability::None);
        log.register_metrics(&metrics);
        log.create_topic("t", TopicConfig::with_partitions(1)).unwrap().append(0, &records(1)).unwrap();
        assert_eq!(scrape(&metrics).value(LOG_END_OFFSET.info.name, &tp("t", "0")), 1.0);
    }
    let s = scrape(&metrics);
    assert!(!s.any(LOG_END_OFFSET.info.name, "topic", "t"), "gauges of a dropped log:\n{}", s.text);
    assert_eq!(s.value(LOG_APPENDED_RECORDS.info.name, &tp("t", "0")), 1.0, "counters stay");
    // The directory lock was released: nothing but the dropped handle held the log.
    let reopened = Log::open(dir.path(), LogOptions::default().durability(Durability::None)).unwrap();
    assert_eq!(reopened.topic("t").unwrap().end_offset(0).unwrap(), 1);
}
