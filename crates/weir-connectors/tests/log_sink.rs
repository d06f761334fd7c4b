//! The log sink writes records readable with weir-log (JSON or raw values, keys, event time),
//! and a pipeline's dead letters go to its `<pipeline>.dlq` topic: the payload as the value, the
//! reason in headers.

#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use weir_connectors::{
    DEAD_LETTER_ERROR_HEADER, DEAD_LETTER_OPERATOR_HEADER, DEAD_LETTER_ORIGIN_HEADER, FileSource, LogSink,
    ParseExt,
};
use weir_log::{ConsumerConfig, Durability, Log, LogOptions, StoredRecord, TopicConfig, partition_for_key};
use weir_runtime::{Checkpointing, DeadLetter, DiscardSink, MemorySource, Pipeline, Watermarks};

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
    assert_eq!(records.len(), 2);
    let header = |i: usize, key: &str| {
        let h = records[i].headers.iter().find(|h| h.key == key).unwrap_or_else(|| panic!("no {key}"));
        String::from_utf8(h.value.as_ref().unwrap().to_vec()).unwrap()
    };
    assert_eq!(&records[0].value[..], b"three");
    assert_eq!(header(0, DEAD_LETTER_ORIGIN_HEADER), format!("{name}:3"));
    assert_eq!(header(0, DEAD_LETTER_OPERATOR_HEADER), "try_map");
    let error = header(0, DEAD_LETTER_ERROR_HEADER);
    assert!(error.contains("invalid digit"), "{error}");
    assert_eq!(&records[1].value[..], b"five");
    assert_eq!(header(1, DEAD_LETTER_ORIGIN_HEADER), format!("{name}:5"));
}

/// Lines no reader should have to unescape: quotes, backslashes, JSON not of the record's
/// shape, JSON string escapes, non-ASCII text, a JSON string.
const AWKWARD_LINES: [&str; 5] = [
    r#"{"user": "a \"quoted\" name", "page": 7}"#,
    r#"10.0.0.1 - - [24/Nov/2026:00:00:00 +0000] "GET /\"x HTTP/1.1" 200 - "-" "ua \" q""#,
    r"tab\there\tand a literal \\t",
    "\\u00e9 caf\u{e9} \u{1F600}",
    r#""just a JSON string""#,
];

/// Runs `lines` (as a file) through a JSON parse into `Click`, which every line fails, with the
/// dead letters into the pipeline's topic; returns the topic's records.
async fn dead_letters_of(dir: &std::path::Path, lines: &[&str], checkpointed: bool) -> Vec<StoredRecord> {
    let log = open(&dir.join("log"));
    let input = dir.join("in.jsonl");
    std::fs::write(&input, lines.iter().map(|l| format!("{l}\n")).collect::<String>()).unwrap();
    let mut b = Pipeline::builder("awkward").parallelism(1).handle_signals(false);
    if checkpointed {
        b = b.checkpointing(Checkpointing::to_dir(dir.join("cp")).interval(Duration::from_millis(10)));
    }
    let p = b.build().unwrap();
    p.dead_letters(LogSink::dead_letters(&log, p.name()));
    p.source(FileSource::json_lines::<Click>(input.to_str().unwrap())).parsed().sink(DiscardSink);
    let report = p.run().await.unwrap();
    assert_eq!(report.dead_letters, lines.len() as u64);
    log.topic("awkward.dlq").unwrap().read(0, 0, 1 << 20).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_line_is_stored_in_the_dead_letter_topic_byte_for_byte() {
    for checkpointed in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let records = dead_letters_of(dir.path(), &AWKWARD_LINES, checkpointed).await;
        // Compared as text for readable failures; equal `str`s are equal bytes.
        let values: Vec<&str> = records.iter().map(|r| std::str::from_utf8(&r.value).unwrap()).collect();
        assert_eq!(values, AWKWARD_LINES, "checkpointed: {checkpointed}");
        for (i, r) in records.iter().enumerate() {
            let origin = r.headers.iter().find(|h| h.key == DEAD_LETTER_ORIGIN_HEADER).unwrap();
            assert!(origin.value.as_deref().unwrap().ends_with(format!(":{}", i + 1).as_bytes()));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_sinks_store_lines_as_they_are() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    log.topic_or_create("lines", TopicConfig::with_partitions(1)).unwrap();
    let p = Pipeline::builder("raw").parallelism(1).handle_signals(false).build().unwrap();
    let lines: Vec<String> = AWKWARD_LINES.iter().map(|l| (*l).to_owned()).collect();
    p.source(MemorySource::new(lines.clone())).sink(LogSink::raw(&log, "lines"));
    p.run().await.unwrap();
    let records = log.topic("lines").unwrap().read(0, 0, 1 << 20).unwrap();
    let values: Vec<&str> = records.iter().map(|r| std::str::from_utf8(&r.value).unwrap()).collect();
    assert_eq!(values, AWKWARD_LINES);
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
