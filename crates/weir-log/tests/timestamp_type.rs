//! A topic's timestamp type: `CreateTime` stores the producer's timestamps, `LogAppendTime`
//! stamps every record with the wall clock at its append, whatever the producer gave; the
//! setting is stored with the topic and survives a reopen, and the file of a topic that keeps
//! the default is written as before the setting existed.

#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

use std::path::Path;

use weir_log::{Durability, Log, LogOptions, Record, TimestampType, TopicConfig};
use weir_testkit::now_ms as wall_ms;

fn open(dir: &Path) -> Log {
    Log::open(dir, LogOptions::default().durability(Durability::None)).unwrap()
}

/// Records produced at event times in 2001, one without a timestamp.
fn records() -> Vec<Record> {
    vec![
        Record::new("a").with_timestamp(1_000_000_000_000),
        Record::new("b"),
        Record::new("c").with_timestamp(1_000_000_000_500),
    ]
}

fn timestamps(log: &Log, topic: &str) -> Vec<i64> {
    log.topic(topic).unwrap().read(0, 0, 1 << 20).unwrap().iter().map(|r| r.timestamp).collect()
}

#[test]
fn log_append_time_stamps_every_record_at_its_append_and_survives_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let config = TopicConfig { timestamp_type: TimestampType::LogAppendTime, ..TopicConfig::default() };
    let (before, after) = {
        let log = open(dir.path());
        let topic = log.create_topic("appended", config).unwrap();
        let before = wall_ms();
        topic.append(0, &records()).unwrap();
        (before, wall_ms())
    };

    let log = open(dir.path());
    assert_eq!(log.topic("appended").unwrap().config().timestamp_type, TimestampType::LogAppendTime);
    let first = timestamps(&log, "appended");
    assert_eq!(first.len(), 3);
    assert!(first.iter().all(|&t| t == first[0]), "one append, one time: {first:?}");
    assert!((before..=after).contains(&first[0]), "{first:?} not within {before}..={after}");

    // After the reopen, appends are still stamped by the log.
    std::thread::sleep(std::time::Duration::from_millis(5));
    let before = wall_ms();
    log.topic("appended").unwrap().append(0, &records()).unwrap();
    let all = timestamps(&log, "appended");
    assert!(all[3..].iter().all(|&t| t >= before && t > first[0]), "{all:?}");
    // Offsets by time follow append times.
    assert_eq!(log.topic("appended").unwrap().offset_for_timestamp(0, before).unwrap(), Some(3));
}

#[test]
fn log_append_time_stamps_never_decrease_with_offsets_under_concurrent_appends() {
    // Appenders race for the partition: one that read the clock and then waited for the lock
    // must not be stamped before the records written while it waited.
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    let config = TopicConfig { timestamp_type: TimestampType::LogAppendTime, ..TopicConfig::default() };
    let topic = log.create_topic("raced", config).unwrap();
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                for i in 0..2_000 {
                    topic.append(0, &[Record::new(vec![b'x'; 64 + i % 512])]).unwrap();
                }
            });
        }
    });
    let mut stamps = Vec::new();
    let mut offset = 0;
    while offset < topic.end_offset(0).unwrap() {
        let read = topic.read(0, offset, 1 << 20).unwrap();
        offset = read.last().unwrap().offset + 1;
        stamps.extend(read.iter().map(|r| r.timestamp));
    }
    assert_eq!(stamps.len(), 8_000);
    let back = stamps.windows(2).position(|w| w[1] < w[0]);
    assert_eq!(back, None, "a stamp below the one before it, at offset {back:?}");

    // Across a reopen, too (the stamp of the last append is recovered).
    drop(topic);
    drop(log);
    let log = open(dir.path());
    log.topic("raced").unwrap().append(0, &[Record::new("after")]).unwrap();
    let last = log.topic("raced").unwrap().read(0, 8_000, 1 << 20).unwrap()[0].timestamp;
    assert!(last >= *stamps.last().unwrap());
}

#[test]
fn create_time_keeps_the_producers_timestamps() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    let topic = log.create_topic("created", TopicConfig::default()).unwrap();
    assert_eq!(topic.config().timestamp_type, TimestampType::CreateTime);
    let before = wall_ms();
    topic.append(0, &records()).unwrap();
    let got = timestamps(&log, "created");
    assert_eq!((got[0], got[2]), (1_000_000_000_000, 1_000_000_000_500));
    assert!(got[1] >= before, "a record without a timestamp gets the append time: {got:?}");
}

#[test]
fn a_topic_file_names_the_type_only_when_it_is_not_the_default() {
    // A default topic's file is the one earlier versions wrote (and the format fixtures pin),
    // so they can still open the log; a log-append-time topic's file names its type, so an
    // earlier version refuses it rather than stamping its appends with producer times.
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    log.create_topic("created", TopicConfig::default()).unwrap();
    let config = TopicConfig { timestamp_type: TimestampType::LogAppendTime, ..TopicConfig::default() };
    log.create_topic("appended", config).unwrap();
    let file = |topic: &str| -> serde_json::Value {
        serde_json::from_slice(
            &std::fs::read(dir.path().join("topics").join(topic).join("topic.json")).unwrap(),
        )
        .unwrap()
    };
    assert_eq!(file("created").get("timestamp_type"), None);
    assert_eq!(file("appended")["timestamp_type"], "LogAppendTime");
}
