//! Retention by size and by age deletes whole old segments, never the active one.

#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

use weir_log::{Durability, Error, Log, LogOptions, Record, TopicConfig};

fn options() -> LogOptions {
    LogOptions::default().durability(Durability::None)
}

fn fill(topic: &weir_log::Topic, n: u64, ts: impl Fn(u64) -> i64) {
    for i in 0..n {
        topic.append(0, &[Record::new(vec![b'x'; 500]).with_timestamp(ts(i))]).unwrap();
    }
}

#[test]
fn retention_by_size_keeps_at_least_the_limit_and_the_active_segment() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), options()).unwrap();
    let config = TopicConfig { segment_bytes: 4096, retention_bytes: Some(10_000), ..TopicConfig::default() };
    let topic = log.create_topic("t", config).unwrap();
    // Retention runs as segments roll: 200 × ~550 bytes is ~110 KB written, ~10 KB kept.
    fill(&topic, 200, |_| 1);
    let after = topic.describe().partitions[0];
    assert_eq!(log.enforce_retention().unwrap(), 0, "rolling already applied retention");
    assert!(after.size_bytes >= 10_000, "kept {} bytes", after.size_bytes);
    assert!(after.size_bytes < 10_000 + 4096, "kept {} bytes", after.size_bytes);
    assert!(after.start_offset > 0);
    assert_eq!(after.end_offset, 200);

    // Below the start is a typed error carrying the earliest offset; at the start reads work.
    let err = topic.read(0, 0, 1 << 20).unwrap_err();
    assert!(
        matches!(err, Error::OffsetOutOfRange { earliest, offset: 0, .. } if earliest == after.start_offset),
        "{err}"
    );
    assert_eq!(topic.read(0, after.start_offset, 1 << 20).unwrap()[0].offset, after.start_offset);

    // Files of deleted segments are gone, and the start offset survives a reopen.
    let files = std::fs::read_dir(dir.path().join("topics/t/0"))
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "log" || x == "index"))
        .count();
    assert_eq!(files, 2 * after.segments);
    drop(topic);
    drop(log);
    let log = Log::open(dir.path(), options()).unwrap();
    assert_eq!(log.topic("t").unwrap().start_offset(0).unwrap(), after.start_offset);
}

#[test]
fn retention_by_age_deletes_segments_whose_newest_record_is_too_old() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), options()).unwrap();
    let config = TopicConfig { segment_bytes: 4096, retention_ms: Some(60_000), ..TopicConfig::default() };
    let topic = log.create_topic("t", config).unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    // 100 records from two hours ago, then 30 fresh ones.
    fill(&topic, 100, |_| now - 7_200_000);
    fill(&topic, 30, |_| now);
    log.enforce_retention().unwrap();
    let info = topic.describe().partitions[0];
    let first = topic.read(0, info.start_offset, 1 << 20).unwrap();
    assert!(first[0].offset <= 100, "a segment with fresh records was deleted: start {}", info.start_offset);
    // Everything old that is left shares a segment with the first fresh record.
    assert!(info.start_offset > 80, "old segments kept: start {}", info.start_offset);
}

#[test]
fn the_active_segment_is_never_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), options()).unwrap();
    let config = TopicConfig { retention_bytes: Some(1), retention_ms: Some(1), ..TopicConfig::default() };
    let topic = log.create_topic("t", config).unwrap();
    fill(&topic, 10, |_| 0);
    assert_eq!(log.enforce_retention().unwrap(), 0);
    assert_eq!(topic.read(0, 0, 1 << 20).unwrap().len(), 10);
}

#[test]
fn a_retention_past_i64_is_refused_and_the_longest_one_keeps_every_segment() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), options()).unwrap();
    // u64::MAX ms ("forever" typed as a number) once wrapped to -1 and deleted every sealed segment.
    let forever = TopicConfig { segment_bytes: 4096, retention_ms: Some(u64::MAX), ..TopicConfig::default() };
    let err = log.create_topic("t", forever).unwrap_err();
    assert!(matches!(err, Error::InvalidConfig { field: "retention_ms", .. }), "{err}");
    assert!(log.topics().is_empty());

    let longest =
        TopicConfig { segment_bytes: 4096, retention_ms: Some(i64::MAX as u64), ..TopicConfig::default() };
    let topic = log.create_topic("t", longest).unwrap();
    fill(&topic, 50, |_| 1);
    assert_eq!(log.enforce_retention().unwrap(), 0);
    let info = topic.describe().partitions[0];
    assert!(info.segments > 1);
    assert_eq!((info.start_offset, info.end_offset), (0, 50));
}
