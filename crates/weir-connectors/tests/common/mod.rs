//! Helpers shared by the exactly-once tests: the input, the rows, reading the committed output.

#![allow(dead_code)] // Each test binary uses part of it.

use std::path::Path;

use serde::{Deserialize, Serialize};
use weir_log::{AutoOffsetReset, ConsumerConfig, Durability, Log, LogOptions, Record, TopicConfig};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Event {
    pub(crate) ts: i64,
    pub(crate) user: u32,
    pub(crate) amount: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Row {
    pub(crate) user: u32,
    pub(crate) window_start: i64,
    pub(crate) events: u64,
    pub(crate) amount: i64,
}

pub(crate) fn open_log(dir: &Path) -> Log {
    Log::open(dir.join("log"), LogOptions::default().durability(Durability::EveryBatch)).unwrap()
}

/// The input: `n` events, 5 ms of event time apart, 40 users, 4 partitions, out of order by up
/// to a second.
pub(crate) fn prepare(dir: &Path, n: i64) {
    let log = open_log(dir);
    let topic = log.create_topic("events", TopicConfig::with_partitions(4)).unwrap();
    let records: Vec<Record> = (0..n)
        .map(|i| {
            let e = Event {
                ts: 1_700_000_000_000 + i * 5 - (i * 7919 % 200),
                user: (i * 13 % 40) as u32,
                amount: i % 1000,
            };
            Record::new(serde_json::to_vec(&e).unwrap()).with_key(e.user.to_string())
        })
        .collect();
    for chunk in records.chunks(4096) {
        topic.send(chunk).unwrap();
    }
    log.flush().unwrap();
}

/// The lines of the committed files in `out_dir` (hidden in-progress files and markers
/// skipped), sorted.
pub(crate) fn file_rows(out_dir: &Path) -> Vec<String> {
    let mut lines = Vec::new();
    let Ok(entries) = std::fs::read_dir(out_dir) else { return lines };
    for entry in entries {
        let path = entry.unwrap().path();
        if path.file_name().unwrap().to_string_lossy().starts_with('.') {
            continue;
        }
        lines.extend(std::fs::read_to_string(&path).unwrap().lines().map(str::to_owned));
    }
    lines.sort_unstable();
    lines
}

/// The records of topic `rows` as (partition, key, value), sorted; none if it does not exist.
pub(crate) fn topic_records(dir: &Path) -> Vec<(u32, String, String)> {
    let log = open_log(dir);
    let mut records = Vec::new();
    if log.topic("rows").is_err() {
        return records;
    }
    let mut consumer =
        log.consumer(ConsumerConfig::new("rows").auto_offset_reset(AutoOffsetReset::Earliest)).unwrap();
    loop {
        let polled = consumer.poll_now().unwrap();
        if polled.is_empty() {
            break;
        }
        for batch in polled {
            for r in batch.records {
                let key = String::from_utf8(r.key.unwrap().to_vec()).unwrap();
                records.push((batch.partition, key, String::from_utf8(r.value.to_vec()).unwrap()));
            }
        }
    }
    records.sort_unstable();
    records
}

/// Kill times (and damages) are random, and their seed printed for a rerun.
#[allow(unused_imports)] // Not every test that includes this module draws random numbers.
pub(crate) use weir_testkit::Rng;
