//! The log sink writes records readable with weir-log (JSON values, keys, event time), and a
//! pipeline's dead letters go to its `<pipeline>.dlq` topic.

#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use weir_connectors::{FileSource, LogSink};
use weir_log::{ConsumerConfig, Durability, Log, LogOptions, TopicConfig, partition_for_key};
use weir_runtime::{DeadLetter, MemorySource, Pipeline, Watermarks};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Click {
    user: String,
    page: u32,
    at: i64,
}

fn open(dir: &std::path::Path) -> Log {
    Log::open(dir, LogOptions::default().durability(Durability::None)).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_sink_writes_json_values_with_keys_and_event_time() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    log.create_topic("clicks", TopicConfig::with_partitions(3)).unwrap();
    let clicks: Vec<Click> = (0..1_000)
        .map(|i| Click { user: format!("u{}", i % 11), page: i, at: 1_700_000_000_000 + i as i64 })
        .collect();

    let p = Pipeline::builder("produce").parallelism(2).handle_signals(false).build().unwrap();
    p.source(MemorySource::new(clicks.clone()).batch_size(64))
        .assign_timestamps(|c| c.at, Watermarks::monotonic())
        .sink(LogSink::topic(&log, "clicks").key_by(|c: &Click| c.user.clone()));
    tokio::time::timeout(Duration::from_secs(30), p.run()).await.unwrap().unwrap();

    let mut consumer = log
        .consumer(ConsumerConfig::new("clicks").auto_offset_reset(weir_log::AutoOffsetReset::Earliest))
        .unwrap();
    let mut got = Vec::new();
    loop {
        let polled = consumer.poll_now().unwrap();
        if polled.is_empty() {
            break;
        }
        for batch in polled {
            for r in batch.records {
                let click: Click = serde_json::from_slice(&r.value).unwrap();
                let key = r.key.unwrap();
                assert_eq!(&key[..], click.user.as_bytes());
                assert_eq!(batch.partition, partition_for_key(&key, 3), "keyed records go by key hash");
                assert_eq!(r.timestamp, click.at, "the event time is the record's timestamp");
                got.push(click);
            }
        }
    }
    got.sort_by_key(|c| c.page);
    assert_eq!(got, clicks);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_topics_fail_unless_created() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    let p = Pipeline::builder("nowhere").parallelism(1).handle_signals(false).build().unwrap();
    p.source(MemorySource::new(vec![1u32])).sink(LogSink::topic(&log, "absent"));
    let err = p.run().await.unwrap_err().to_string();
    assert!(err.contains("log sink absent"), "{err}");

    let p = Pipeline::builder("somewhere").parallelism(1).handle_signals(false).build().unwrap();
    p.source(MemorySource::new(vec![1u32, 2]))
        .sink(LogSink::topic(&log, "created").create_if_missing(TopicConfig::with_partitions(2)));
    p.run().await.unwrap();
    let topic = log.topic("created").unwrap();
    assert_eq!(topic.partition_count(), 2);
    assert_eq!(topic.end_offset(0).unwrap() + topic.end_offset(1).unwrap(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_go_to_the_pipeline_dlq_topic() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(&dir.path().join("log"));
    let input = dir.path().join("numbers.txt");
    std::fs::write(&input, "1\n2\nthree\n4\nfive\n").unwrap();
    let name = input.to_str().unwrap();

    let p = Pipeline::builder("numbers").parallelism(1).handle_signals(false).build().unwrap();
    p.dead_letters(LogSink::dead_letters(&log, p.name()));
    let out = weir_runtime::CollectSink::new();
    p.source(FileSource::lines(name)).try_map(|l| l.text.parse::<u32>()).sink(out.clone());
    let report = p.run().await.unwrap();
    assert_eq!(report.dead_letters, 2);
    assert_eq!(out.take(), [1, 2, 4]);

    assert_eq!(LogSink::<DeadLetter>::dead_letter_topic("numbers"), "numbers.dlq");
    let records = log.topic("numbers.dlq").unwrap().read(0, 0, 1 << 20).unwrap();
    let letters: Vec<serde_json::Value> =
        records.iter().map(|r| serde_json::from_slice(&r.value).unwrap()).collect();
    assert_eq!(letters.len(), 2);
    assert_eq!(letters[0]["origin"], format!("{name}:3"));
    assert_eq!(letters[0]["payload"], "three");
    assert_eq!(letters[0]["operator"], "try_map");
    assert!(letters[0]["error"].as_str().unwrap().contains("invalid digit"), "{}", letters[0]);
    assert_eq!(letters[1]["origin"], format!("{name}:5"));
}

/// The log's own error stays reachable from the job's error, so a caller can tell a record
/// that can never fit from a full disk or a poisoned partition, and decide whether to retry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_append_keeps_the_log_error_as_the_source() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    let mut config = TopicConfig::with_partitions(1);
    config.max_batch_bytes = 1024;
    log.create_topic("small", config).unwrap();
    let p = Pipeline::builder("too-large").parallelism(1).build().unwrap();
    p.source(MemorySource::new(vec!["x".repeat(4096)])).sink(LogSink::topic(&log, "small"));
    let err = p.run().await.unwrap_err();
    assert!(matches!(err, weir_runtime::Error::Connector { .. }), "{err:?}");
    let source = std::error::Error::source(&err).and_then(|s| s.downcast_ref::<weir_log::Error>());
    assert!(matches!(source, Some(weir_log::Error::RecordTooLarge { size, .. }) if *size > 4096), "{err:?}");
}
