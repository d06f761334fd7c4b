//! Appending and reading back: across segment rolls, by timestamp, after reopen.

#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

use weir_log::{Durability, Error, Log, LogOptions, Record, TopicConfig};

fn small_segments(partitions: u32) -> TopicConfig {
    TopicConfig { partitions, segment_bytes: 4096, index_interval_bytes: 256, ..TopicConfig::default() }
}

fn record(i: u64) -> Record {
    Record::new(format!("value-{i:06}")).with_key(format!("key-{}", i % 7)).with_timestamp(1_000 + i as i64)
}

fn read_all(topic: &weir_log::Topic, partition: u32, from: u64) -> Vec<weir_log::StoredRecord> {
    let mut out = Vec::new();
    let mut offset = from;
    loop {
        let batch = topic.read(partition, offset, 1000).unwrap();
        let Some(last) = batch.last() else { break };
        offset = last.offset + 1;
        out.extend(batch);
    }
    out
}

#[test]
fn append_and_read_back_across_segment_rolls_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    for durability in [Durability::None, Durability::EveryBatch] {
        let path = dir.path().join(format!("{durability:?}"));
        let log = Log::open(&path, LogOptions::default().durability(durability)).unwrap();
        let topic = log.create_topic("t", small_segments(1)).unwrap();
        let mut next = 0;
        for size in [1usize, 5, 100, 3, 250, 1] {
            let records: Vec<Record> = (next..next + size as u64).map(record).collect();
            let appended = topic.append(0, &records).unwrap();
            assert_eq!(appended.base_offset, next);
            assert_eq!(appended.count, size as u64);
            next += size as u64;
        }
        let info = topic.describe().partitions[0];
        assert!(info.segments >= 3, "expected several segments, got {info:?}");
        assert_eq!(info.end_offset, next);

        let check = |topic: &weir_log::Topic| {
            let all = read_all(topic, 0, 0);
            assert_eq!(all.len() as u64, next);
            for (i, r) in all.iter().enumerate() {
                let want = record(i as u64);
                assert_eq!(r.offset, i as u64);
                assert_eq!(r.value, want.value);
                assert_eq!(r.key, want.key);
                assert_eq!(r.timestamp, want.timestamp.unwrap());
            }
            // Reads from any offset start exactly there.
            for from in [0, 1, 57, 105, next - 1] {
                assert_eq!(topic.read(0, from, 10).unwrap()[0].offset, from);
            }
            assert!(topic.read(0, next, 10).unwrap().is_empty());
            assert!(matches!(topic.read(0, next + 1, 10), Err(Error::OffsetOutOfRange { .. })));
        };
        check(&topic);
        drop(topic);
        drop(log);
        let log = Log::open(&path, LogOptions::default().durability(durability)).unwrap();
        assert!(log.recovery().is_empty(), "clean reopen cut data: {:?}", log.recovery());
        let topic = log.topic("t").unwrap();
        check(&topic);
        let appended = topic.append(0, &[record(next)]).unwrap();
        assert_eq!(appended.base_offset, next);
    }
}

#[test]
fn read_by_timestamp_finds_the_first_record_at_or_after() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), LogOptions::default().durability(Durability::None)).unwrap();
    let topic = log.create_topic("t", small_segments(1)).unwrap();
    // Timestamps out of order inside batches: 0, 10, 5, 20, 15, ...
    let records: Vec<Record> = (0..500u64)
        .map(|i| {
            Record::new(format!("{i}")).with_timestamp(if i % 2 == 0 {
                i as i64 * 10
            } else {
                i as i64 * 10 - 15
            })
        })
        .collect();
    for chunk in records.chunks(17) {
        topic.append(0, chunk).unwrap();
    }
    for t in [-5i64, 0, 1, 5, 6, 995, 2_500, 4_985, 4_990] {
        let want = records.iter().position(|r| r.timestamp.unwrap() >= t).map(|i| i as u64);
        assert_eq!(topic.offset_for_timestamp(0, t).unwrap(), want, "timestamp {t}");
    }
    assert_eq!(topic.offset_for_timestamp(0, 10_000).unwrap(), None);
}

#[tokio::test]
async fn waiting_without_a_time_limit_does_not_overflow_the_clock() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), LogOptions::default()).unwrap();
    let topic = log.create_topic("t", TopicConfig::default()).unwrap();
    topic.append(0, &[Record::new("x")]).unwrap();
    assert!(topic.wait_for(0, 0, std::time::Duration::MAX).await.unwrap());
    let config = weir_log::ConsumerConfig::new("t").auto_offset_reset(weir_log::AutoOffsetReset::Earliest);
    let mut consumer = log.consumer(config).unwrap();
    assert_eq!(consumer.poll(std::time::Duration::MAX).await.unwrap().len(), 1);
}
