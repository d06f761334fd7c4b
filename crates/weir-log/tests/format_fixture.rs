//! The on-disk format is pinned by committed log directories, one per format version:
//! `tests/fixtures/v1/log/` (metadata files without checksums) and `tests/fixtures/v2/log/`
//! (`topic.json`, group files and recorded offsets with a CRC-32C), each a topic of two
//! partitions in several segments (with indexes), records with and without keys and headers, and
//! a consumer group with committed offsets, written by [`generate`] (v1 by the version before
//! metadata checksums).
//!
//! - Every build must read every fixture back exactly: every record, offset, timestamp, key and
//!   header, the end offsets and the group's committed offsets.
//! - The writer must still produce the newest one byte for byte, so any change to the format
//!   (segments, indexes, `topic.json`, group files, offset files) fails here until it is
//!   deliberate: then bump the format version, keep reading the old fixtures, and add a new one.
//!
//! To regenerate the newest (only for a deliberate format change):
//! `WEIR_REGENERATE_FIXTURES=1 cargo test -p weir-log --test format_fixture`.

#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

mod common;

use std::path::{Path, PathBuf};

use bytes::Bytes;
use weir_log::{AutoOffsetReset, ConsumerConfig, Durability, Log, LogOptions, Record, TopicConfig};

const TOPIC: &str = "orders";
const GROUP: &str = "billing";
const RECORDS: [u64; 2] = [230, 190];
const COMMITTED: [u64; 2] = [120, 190];

/// The fixture the current writer produces.
const NEWEST: &str = "v2";

fn fixture_dir(version: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(version).join("log")
}

fn options() -> LogOptions {
    LogOptions::default().durability(Durability::None)
}

/// Record `i` of `partition`: every shape the format has (no key, an empty key, headers with
/// and without a value, an empty value, timestamps out of order and before the epoch).
fn record(partition: u32, i: u64) -> Record {
    let mut value = format!("order-{partition}-{i}:").into_bytes();
    value.resize(value.len() + (i as usize * 17) % 40, b'a' + (i % 26) as u8);
    if i % 50 == 7 {
        value.clear();
    }
    let mut r = Record::new(value).with_timestamp(1_700_000_000_000 + (i as i64 * 37) % 1000 - 500);
    if i == 3 {
        r = r.with_timestamp(-1);
    }
    match i % 5 {
        0 => {}
        1 => r = r.with_key(""),
        _ => r = r.with_key(format!("customer-{}", i % 11)),
    }
    if i.is_multiple_of(3) {
        r = r.with_header("trace", Some(Bytes::from(format!("t{i}"))));
    }
    if i.is_multiple_of(4) {
        r = r.with_header("flag", None);
    }
    r
}

/// Writes the fixture's log into `dir` (which must not hold a log).
fn generate(dir: &Path) {
    let log = Log::open(dir, options()).unwrap();
    let config = TopicConfig { segment_bytes: 4096, ..common::small_segments(2) };
    let topic = log.create_topic(TOPIC, config).unwrap();
    for (p, &n) in RECORDS.iter().enumerate() {
        let p = p as u32;
        let mut next = 0;
        for size in [1u64, 13, 2, 40, 7, 25].into_iter().cycle() {
            let size = size.min(n - next);
            let records: Vec<Record> = (next..next + size).map(|i| record(p, i)).collect();
            assert_eq!(topic.append(p, &records).unwrap().base_offset, next);
            next += size;
            if next == n {
                break;
            }
        }
    }
    let config = ConsumerConfig::new(TOPIC).group(GROUP).auto_offset_reset(AutoOffsetReset::Earliest);
    let mut consumer = log.consumer(config).unwrap();
    for (p, &offset) in COMMITTED.iter().enumerate() {
        consumer.seek(TOPIC, p as u32, offset).unwrap();
    }
    consumer.commit().unwrap();
}

/// Every file under `dir` but the lock file, as (relative path, bytes), sorted.
fn files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.file_name().is_some_and(|n| n != ".lock") {
                out.push((path.strip_prefix(dir).unwrap().to_owned(), std::fs::read(&path).unwrap()));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn the_committed_v1_fixture_without_checksums_reads_back_every_record_and_offset() {
    reads_back_every_record_and_offset("v1");
}

#[test]
fn the_committed_v2_fixture_with_checksums_reads_back_every_record_and_offset() {
    reads_back_every_record_and_offset("v2");
}

fn reads_back_every_record_and_offset(version: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    common::copy_dir(&fixture_dir(version), &dir);
    let segments = common::files_with_ext(&dir.join("topics").join(TOPIC).join("0"), "log");
    assert!(segments.len() >= 3, "the fixture has several segments: {segments:?}");

    let log = Log::open(&dir, options()).unwrap();
    assert!(log.recovery().is_empty(), "{:?}", log.recovery());
    let topic = log.topic(TOPIC).unwrap();
    assert_eq!(topic.partition_count(), 2);
    for (p, &n) in RECORDS.iter().enumerate() {
        let p = p as u32;
        assert_eq!((topic.start_offset(p).unwrap(), topic.end_offset(p).unwrap()), (0, n));
        let got = topic.read(p, 0, usize::MAX).unwrap();
        assert_eq!(got.len() as u64, n, "partition {p}");
        for (i, r) in got.iter().enumerate() {
            let want = record(p, i as u64);
            assert_eq!(r.offset, i as u64, "partition {p}");
            assert_eq!(Some(r.timestamp), want.timestamp, "timestamp of {p}/{i}");
            assert_eq!(r.key, want.key, "key of {p}/{i}");
            assert_eq!(r.value, want.value, "value of {p}/{i}");
            assert_eq!(r.headers, want.headers, "headers of {p}/{i}");
        }
        // The index answers lookups by time as the records say.
        let t = record(p, n / 2).timestamp.unwrap();
        let first = (0..n).find(|&i| record(p, i).timestamp.unwrap() >= t);
        assert_eq!(topic.offset_for_timestamp(p, t).unwrap(), first);
    }
    let group = log.describe_group(GROUP).unwrap();
    let committed: Vec<(u32, Option<u64>)> =
        group.partitions.iter().map(|g| (g.partition, g.committed)).collect();
    assert_eq!(committed, vec![(0, Some(COMMITTED[0])), (1, Some(COMMITTED[1]))]);
}

#[test]
fn the_writer_still_produces_the_committed_fixture_byte_for_byte() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    generate(&dir);
    if std::env::var("WEIR_REGENERATE_FIXTURES").is_ok_and(|v| v == "1") {
        let _ = std::fs::remove_dir_all(fixture_dir(NEWEST));
        for (path, bytes) in files(&dir) {
            let target = fixture_dir(NEWEST).join(path);
            std::fs::create_dir_all(target.parent().unwrap()).unwrap();
            std::fs::write(target, bytes).unwrap();
        }
        eprintln!("regenerated {}", fixture_dir(NEWEST).display());
    }
    let (written, committed) = (files(&dir), files(&fixture_dir(NEWEST)));
    let names = |f: &[(PathBuf, Vec<u8>)]| f.iter().map(|(p, _)| p.clone()).collect::<Vec<_>>();
    assert_eq!(names(&written), names(&committed), "the files of a log changed");
    for ((path, new), (_, old)) in written.iter().zip(&committed) {
        assert!(
            new == old,
            "{} is no longer written as the committed fixture: the format changed",
            path.display()
        );
    }
}

#[test]
fn a_v1_directory_gets_checksums_in_the_files_it_writes_next() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    common::copy_dir(&fixture_dir("v1"), &dir);
    let group_file = dir.join("groups").join(format!("{GROUP}.json"));
    let end_file = dir.join("topics").join(TOPIC).join("0").join("end-offset");
    let has_checksum = |path: &Path| std::fs::read_to_string(path).unwrap().contains("crc32c");
    assert!(!has_checksum(&group_file) && !has_checksum(&end_file), "v1 files have no checksum");
    {
        let log = Log::open(&dir, options()).unwrap();
        let topic = log.topic(TOPIC).unwrap();
        assert_eq!(topic.append(0, &[record(0, RECORDS[0])]).unwrap().base_offset, RECORDS[0]);
        let config = ConsumerConfig::new(TOPIC).group(GROUP).auto_offset_reset(AutoOffsetReset::Earliest);
        let mut consumer = log.consumer(config).unwrap();
        consumer.seek(TOPIC, 0, COMMITTED[0] + 1).unwrap();
        consumer.commit().unwrap();
    }
    assert!(has_checksum(&group_file), "the group's next commit writes a checksum");
    assert!(has_checksum(&end_file), "the next record of the end offset writes a checksum");
    let log = Log::open(&dir, options()).unwrap();
    assert!(log.recovery().is_empty(), "{:?}", log.recovery());
    assert_eq!(log.topic(TOPIC).unwrap().end_offset(0).unwrap(), RECORDS[0] + 1);
    let group = log.describe_group(GROUP).unwrap();
    assert_eq!(group.partitions[0].committed, Some(COMMITTED[0] + 1));
}
