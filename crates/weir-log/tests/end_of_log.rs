//! The end of a partition's log lost: its last segment deleted, or cut short exactly at a batch
//! boundary, leaves bytes that look like a shorter, intact log. Recovery compares the segments'
//! end with the offset the log is known to have reached (its recorded end offset, written at
//! rolls, by the background flush and on close, and the consumer groups' commits): the missing
//! offsets are reported as a damaged range, and appends continue past them, so that no offset
//! handed out before is handed out again. Two opens of the same bytes agree.

#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

mod common;

use std::path::{Path, PathBuf};

use common::{Fixture, batches, build_fixture, files_with_ext, small_segments, truncate};
use weir_log::{AutoOffsetReset, ConsumerConfig, DamagedRange, Durability, Error, Log, LogOptions, Record};

const TOPIC: &str = "events";

fn options() -> LogOptions {
    LogOptions::default().durability(Durability::EveryBatch)
}

fn record(i: u64) -> Record {
    let mut value = format!("value-{i}-").into_bytes();
    value.resize(value.len() + (i as usize * 31) % 61, b'a' + (i % 26) as u8);
    Record::new(value).with_timestamp(1_000 + i as i64)
}

/// One partition of several segments, closed cleanly.
fn build() -> Fixture {
    let sizes = [5u64, 8, 3, 7].into_iter().cycle().take(40).chain([2, 3]);
    let fixture = build_fixture(options(), TOPIC, small_segments(1), sizes, record);
    assert!(segments(&fixture.dir).len() >= 3, "the fixture needs several segments");
    fixture
}

fn partition_dir(dir: &Path) -> PathBuf {
    dir.join("topics").join(TOPIC).join("0")
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    files_with_ext(&partition_dir(dir), "log")
}

/// Opens the log and returns the damaged ranges recovery reported and the end offset.
fn open(dir: &Path) -> (Log, Vec<DamagedRange>, u64) {
    let log = Log::open(dir, options()).unwrap();
    let damaged: Vec<DamagedRange> = log.recovery().iter().flat_map(|r| r.damaged.clone()).collect();
    let end = log.topic(TOPIC).unwrap().end_offset(0).unwrap();
    (log, damaged, end)
}

/// The log reopened after its end (offsets `lost_from..reached`) was lost: the loss is reported
/// exactly, the end offset stays at `reached`, two opens agree, the records before the loss
/// read back, reads stop at the loss, and new appends get fresh offsets that survive a reopen.
fn check_end_lost(fixture: &Fixture, lost_from: u64, reached: u64) {
    let (log, damaged, end) = open(&fixture.dir);
    assert_eq!(end, reached, "the end offset went back: {damaged:?}");
    assert_eq!(damaged.len(), 1, "{damaged:?}");
    assert_eq!(damaged[0].offsets, lost_from..reached, "{damaged:?}");
    assert!(damaged[0].reason.contains("end of the log lost"), "{}", damaged[0].reason);
    drop(log);

    let (log, again, end) = open(&fixture.dir);
    assert_eq!((&again, end), (&damaged, reached), "two opens of the same bytes disagree");
    let topic = log.topic(TOPIC).unwrap();
    let before = topic.read(0, 0, usize::MAX).unwrap();
    assert_eq!(before.len() as u64, lost_from);
    assert!(
        before.iter().enumerate().all(|(i, r)| r.offset == i as u64 && r.value == record(i as u64).value)
    );
    match topic.read(0, lost_from, usize::MAX) {
        Err(Error::Corrupt { .. }) => {}
        other => panic!("a read at the lost offsets must fail naming them: {other:?}"),
    }
    let appended = topic.append(0, &[record(1_000), record(1_001)]).unwrap();
    assert_eq!(appended.base_offset, reached, "an offset handed out before was handed out again");
    drop(topic);
    drop(log);

    let (log, after, end) = open(&fixture.dir);
    assert_eq!(end, reached + 2);
    assert_eq!(after.iter().map(|d| d.offsets.clone()).collect::<Vec<_>>(), vec![lost_from..reached]);
    let read = log.topic(TOPIC).unwrap().read(0, reached, usize::MAX).unwrap();
    assert_eq!(
        read.iter().map(|r| r.value.clone()).collect::<Vec<_>>(),
        vec![record(1_000).value, record(1_001).value]
    );
}

#[test]
fn a_deleted_last_segment_is_reported_and_its_offsets_are_never_handed_out_again() {
    let fixture = build();
    let last = segments(&fixture.dir).pop().unwrap();
    let lost_from = batches(&last)[0].base_offset;
    std::fs::remove_file(&last).unwrap();
    let _ = std::fs::remove_file(last.with_extension("index"));
    check_end_lost(&fixture, lost_from, fixture.records.len() as u64);
}

#[test]
fn a_last_segment_cut_at_a_batch_boundary_is_reported_and_its_offsets_are_never_handed_out_again() {
    let fixture = build();
    let last = segments(&fixture.dir).pop().unwrap();
    let walked = batches(&last);
    assert!(walked.len() >= 2, "the last segment needs two batches: {walked:?}");
    truncate(&last, walked[1].position);
    check_end_lost(&fixture, walked[1].base_offset, fixture.records.len() as u64);
}

#[test]
fn a_group_commit_past_the_recovered_end_is_reported_and_appends_continue_past_it() {
    let fixture = build();
    let end = fixture.records.len() as u64;
    {
        let log = Log::open(&fixture.dir, options()).unwrap();
        let config = ConsumerConfig::new(TOPIC).group("g").auto_offset_reset(AutoOffsetReset::Earliest);
        let mut consumer = log.consumer(config).unwrap();
        consumer.seek(TOPIC, 0, end).unwrap();
        consumer.commit().unwrap();
    }
    // Without a recorded end offset (a log written before it was recorded, or the file lost),
    // the group's commit alone says how far the log had come.
    let _ = std::fs::remove_file(partition_dir(&fixture.dir).join("end-offset"));
    let last = segments(&fixture.dir).pop().unwrap();
    let lost_from = batches(&last)[0].base_offset;
    std::fs::remove_file(&last).unwrap();
    let _ = std::fs::remove_file(last.with_extension("index"));
    check_end_lost(&fixture, lost_from, end);
}

#[test]
fn a_torn_tail_of_an_unacknowledged_batch_is_cut_without_reporting_a_loss() {
    let fixture = build();
    let last = segments(&fixture.dir).pop().unwrap();
    // Half of a copy of the segment's first batch: a write a crash interrupted.
    let bytes = std::fs::read(&last).unwrap();
    let first = batches(&last)[0];
    common::append_bytes(&last, &bytes[..(first.len / 2) as usize]);
    for _ in 0..2 {
        let (log, damaged, end) = open(&fixture.dir);
        assert!(damaged.is_empty(), "a torn tail was reported as a loss: {damaged:?}");
        assert_eq!(end, fixture.records.len() as u64);
        drop(log);
    }
}

#[test]
fn a_commit_past_the_end_claims_no_offsets_and_a_clean_reopen_reports_nothing() {
    let fixture = build();
    let end = fixture.records.len() as u64;
    {
        let log = Log::open(&fixture.dir, options()).unwrap();
        let config = ConsumerConfig::new(TOPIC).group("g");
        let mut consumer = log.consumer(config).unwrap();
        consumer.seek(TOPIC, 0, end + 10).unwrap();
        consumer.commit().unwrap();
        let group = log.describe_group("g").unwrap();
        assert_eq!(group.partitions[0].committed, Some(end), "a commit past the end is the end");
    }
    let (_log, damaged, reopened_end) = open(&fixture.dir);
    assert!(damaged.is_empty(), "{damaged:?}");
    assert_eq!(reopened_end, end);
}

#[test]
fn under_interval_the_background_flush_records_the_end_so_a_crash_then_a_lost_last_segment_is_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    let options = LogOptions::default().durability(Durability::Interval(std::time::Duration::from_millis(5)));
    let log = Log::open(&dir, options.clone()).unwrap();
    let topic = log.create_topic(TOPIC, small_segments(1)).unwrap();
    for i in 0..40 {
        topic.append(0, &(i * 5..i * 5 + 5).map(record).collect::<Vec<_>>()).unwrap();
    }
    // The last roll's end, once the background flush made it durable, is recorded.
    let last_base = batches(&segments(&dir).pop().unwrap())[0].base_offset;
    let recorded = || {
        std::fs::read_to_string(partition_dir(&dir).join("end-offset"))
            .ok()
            // `<offset> crc32c=<hex>` (see the crate docs, "On-disk format").
            .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while recorded().is_none_or(|end| end < last_base) {
        assert!(std::time::Instant::now() < deadline, "the end offset was never recorded: {:?}", recorded());
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    // A crash now (a copy of the files of the running log), then the last segment is lost.
    let crashed = tmp.path().join("crashed");
    common::fresh_copy(&dir, &crashed);
    let last = segments(&crashed).pop().unwrap();
    std::fs::remove_file(&last).unwrap();
    let _ = std::fs::remove_file(last.with_extension("index"));
    let reopened = Log::open(&crashed, options).unwrap();
    let damaged: Vec<DamagedRange> = reopened.recovery().iter().flat_map(|r| r.damaged.clone()).collect();
    assert_eq!(damaged.len(), 1, "{damaged:?}");
    assert_eq!(damaged[0].offsets.start, last_base, "{damaged:?}");
    let end = reopened.topic(TOPIC).unwrap().end_offset(0).unwrap();
    assert!(end >= last_base && end == damaged[0].offsets.end, "end {end}, {damaged:?}");
}
