//! Damaged bytes in sealed segments: bit rot inside a batch, a sealed segment cut short, a
//! missing or emptied segment, a stray copy of a segment. Recovery never deletes intact data:
//! it keeps every intact batch before and after the damage, reports the lost range exactly (in
//! [`Log::recovery`] when found on open, in the [`Error::Corrupt`] of the read that reaches it
//! otherwise), and reads stop at it (returning the intact records before it) unless told to
//! skip it. No damage ever makes the log panic or return wrong data, and appends never reuse an
//! offset.
//!
//! The segment files are edited directly, using the on-disk format documented in the crate docs
//! (`base_offset: u64` at byte 0, `length: u32` at byte 8, `crc: u32` at byte 12, `magic: u8` at
//! byte 16, `record_count: u32` at byte 18, timestamps at bytes 22 and 30; a batch is
//! `12 + length` bytes; an index entry is 16 bytes: `u32` relative offset, `u32` position, `i64`
//! time).

#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

mod common;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use common::{BatchInfo, Fixture, batches, build_fixture, files_with_ext, fresh_copy, truncate};
use weir_log::{
    AutoOffsetReset, ConsumerConfig, DamagePolicy, Durability, Error, Log, LogOptions, Record, StoredRecord,
    Topic,
};

const TOPIC: &str = "events";
/// The partition that gets damaged; partition 0 holds the same data and is never touched.
const DAMAGED: u32 = 1;
/// Which segment of the partition gets damaged: sealed, with sealed segments before and after.
const VICTIM: usize = 1;

fn options() -> LogOptions {
    LogOptions::default().durability(Durability::None)
}

fn record(i: u64) -> Record {
    let mut value = format!("value-{i}-").into_bytes();
    value.resize(value.len() + (i as usize * 29) % 53, b'a' + (i % 26) as u8);
    let r = Record::new(value).with_timestamp(10_000 + i as i64 * 10 - (i as i64 % 3) * 25);
    if i.is_multiple_of(5) { r } else { r.with_key(format!("key-{}", i % 4)) }
}

fn build() -> Fixture {
    let config = common::small_segments(2);
    let sizes = [4u64, 9, 2, 6, 11, 3, 5, 8].into_iter().cycle().take(60);
    let fixture = build_fixture(options(), TOPIC, config, sizes, record);
    let segments = segment_files(&fixture.dir);
    assert!(segments.len() >= VICTIM + 3, "fixture needs more segments: {segments:?}");
    let victim = &segments[VICTIM];
    let last_entry = index_entries(&victim.with_extension("index")).last().map_or(0, |e| e.1);
    assert!(last_entry > 0, "the victim needs index entries past its first batch");
    fixture
}

fn partition_dir(log_dir: &Path) -> PathBuf {
    log_dir.join("topics").join(TOPIC).join(DAMAGED.to_string())
}

fn segment_files(log_dir: &Path) -> Vec<PathBuf> {
    files_with_ext(&partition_dir(log_dir), "log")
}

/// (relative offset, position) of each entry of an index file.
fn index_entries(path: &Path) -> Vec<(u32, u32)> {
    let raw = std::fs::read(path).unwrap();
    raw.chunks_exact(16)
        .map(|e| {
            (u32::from_le_bytes(e[0..4].try_into().unwrap()), u32::from_le_bytes(e[4..8].try_into().unwrap()))
        })
        .collect()
}

/// A fresh copy of the fixture's directory to damage.
fn scratch(fixture: &Fixture, name: &str) -> PathBuf {
    let dir = fixture.tmp.path().join(name);
    fresh_copy(&fixture.dir, &dir);
    dir
}

fn xor_byte(path: &Path, position: u64, mask: u8) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[position as usize] ^= mask;
    std::fs::write(path, bytes).unwrap();
}

fn check_record(r: &StoredRecord, expected: &[Record], context: &str) {
    let want = &expected[r.offset as usize];
    assert_eq!(r.value, want.value, "{context}: value at {}", r.offset);
    assert_eq!(r.key, want.key, "{context}: key at {}", r.offset);
    assert_eq!(Some(r.timestamp), want.timestamp, "{context}: timestamp at {}", r.offset);
}

/// Reads `from..to` in small steps and checks every record.
fn check_range(topic: &Topic, partition: u32, from: u64, to: u64, expected: &[Record], context: &str) {
    let mut offset = from;
    while offset < to {
        let got =
            topic.read(partition, offset, 1).unwrap_or_else(|e| panic!("{context}: read at {offset}: {e}"));
        assert!(!got.is_empty(), "{context}: empty read at {offset}");
        for (k, r) in got.iter().enumerate() {
            assert_eq!(r.offset, offset + k as u64, "{context}: offsets not dense");
            check_record(r, expected, context);
        }
        offset += got.len() as u64;
    }
}

/// Checks that `log.recovery()` lists, for the damaged partition only, nothing cut and exactly
/// the damaged ranges `lost` (or nothing, if `lost_optional` and the damage is found by reads).
fn check_report(log: &Log, lost: &[std::ops::Range<u64>], lost_optional: bool, context: &str) {
    let reports = log.recovery();
    if lost_optional && reports.is_empty() {
        return;
    }
    let [report] = reports else { panic!("{context}: one report expected: {reports:?}") };
    assert_eq!((report.topic.as_str(), report.partition), (TOPIC, DAMAGED), "{context}");
    assert_eq!(report.truncated_bytes, 0, "{context}: recovery cut a sealed segment: {report:?}");
    assert!(report.quarantined.is_empty() && !report.recreated, "{context}: {report:?}");
    let got: Vec<_> = report.damaged.iter().map(|d| d.offsets.clone()).collect();
    assert_eq!(got, lost, "{context}: damaged ranges reported: {report:?}");
}

/// Checks that a read at `offset` fails with `Corrupt` naming exactly `lost`.
fn check_corrupt_read(topic: &Topic, offset: u64, lost: &std::ops::Range<u64>, context: &str) {
    match topic.read(DAMAGED, offset, 1 << 20) {
        Err(Error::Corrupt { topic: t, partition: DAMAGED, offset: o, end_offset: e, .. })
            if t == TOPIC && o == lost.start && e == lost.end => {}
        other => panic!("{context}: read at {offset} in the lost range {lost:?}: {other:?}"),
    }
}

/// Checks a partition that lost exactly the offsets `lost` and nothing else: reads stop at the
/// damage (returning what lies before it), a read inside it fails naming it, a skipping read
/// steps over it, every other record reads back intact, and appends continue at the old end.
fn check_lost_range(topic: &Topic, fixture: &Fixture, lost: std::ops::Range<u64>, context: &str) {
    let end = fixture.records.len() as u64;
    assert_eq!(topic.end_offset(DAMAGED).unwrap(), end, "{context}: end offset");
    for at in [lost.start, lost.end - 1] {
        check_corrupt_read(topic, at, &lost, context);
    }
    // A read that starts before the damage returns the intact records before it.
    for from in [lost.start.saturating_sub(1), lost.start.saturating_sub(40)] {
        let got =
            topic.read(DAMAGED, from, 1 << 20).unwrap_or_else(|e| panic!("{context}: read from {from}: {e}"));
        let offsets: Vec<u64> = got.iter().map(|r| r.offset).collect();
        assert_eq!(offsets, (from..lost.start).collect::<Vec<_>>(), "{context}: read from {from}");
        got.iter().for_each(|r| check_record(r, &fixture.records, context));
    }
    check_range(topic, DAMAGED, 0, lost.start, &fixture.records, context);
    check_range(topic, DAMAGED, lost.end, end, &fixture.records, context);
    check_range(topic, 1 - DAMAGED, 0, end, &fixture.records, &format!("{context}, other partition"));
    // Skipping reads return everything else and name what they skipped.
    let mut offset = 0;
    let mut skipped = Vec::new();
    let mut returned = Vec::new();
    while offset < end {
        let read = topic.read_skipping_damage(DAMAGED, offset, 1 << 12).unwrap();
        read.records.iter().for_each(|r| check_record(r, &fixture.records, context));
        returned.extend(read.records.iter().map(|r| r.offset));
        skipped.extend(read.skipped.iter().map(|d| d.offsets.clone()));
        let next = read.records.last().map(|r| r.offset + 1).max(read.skipped.last().map(|d| d.offsets.end));
        offset = next.unwrap_or_else(|| panic!("{context}: a skipping read at {offset} returned nothing"));
    }
    assert_eq!(skipped, vec![lost.clone()], "{context}: skipped ranges");
    let intact: Vec<u64> = (0..end).filter(|o| !lost.contains(o)).collect();
    assert_eq!(returned, intact, "{context}: skipping reads return every intact record once, in order");
}

/// After bit rot in batch `damaged` of the victim segment: open cuts nothing and reports at most
/// that batch; reads of it fail with `Corrupt` naming it; everything before and after it reads
/// fine; the other partition is intact; appends continue.
fn check_bit_rot(dir: &Path, fixture: &Fixture, damaged: BatchInfo, context: &str) {
    let segments: Vec<Vec<BatchInfo>> = segment_files(&fixture.dir).iter().map(|s| batches(s)).collect();
    let victim_base = segments[VICTIM][0].base_offset;
    let end = fixture.records.len() as u64;
    let lost = damaged.base_offset..damaged.next_offset();

    let log = Log::open(dir, options()).unwrap();
    // Damage after the segment's last index entry is found on open, earlier damage by reads.
    check_report(&log, std::slice::from_ref(&lost), true, context);
    let topic = log.topic(TOPIC).unwrap();
    assert_eq!(segment_files(dir).len(), segments.len(), "{context}: segments removed");
    check_lost_range(&topic, fixture, lost.clone(), context);
    let across = topic.read(DAMAGED, victim_base - 1, 1 << 20).unwrap();
    assert_eq!(
        across.first().map(|r| r.offset),
        Some(victim_base - 1),
        "{context}: read from the previous segment"
    );
    // Time lookups never panic and never answer wrongly.
    for t in [0, 10_000, 10_000 + victim_base as i64 * 10, 10_000 + end as i64 * 10 - 50] {
        let want = fixture.records.iter().position(|r| r.timestamp.unwrap() >= t).map(|i| i as u64);
        match topic.offset_for_timestamp(DAMAGED, t) {
            Ok(got) => assert_eq!(got, want, "{context}: timestamp {t}"),
            Err(e) => assert!(matches!(e, Error::Corrupt { .. }), "{context}: timestamp {t}: {e}"),
        }
    }

    let appended = topic.append(DAMAGED, &[record(end)]).unwrap();
    assert_eq!(appended.base_offset, end, "{context}: append after reopen");
    assert_eq!(topic.read(DAMAGED, end, 1 << 20).unwrap()[0].value, record(end).value, "{context}");
}

/// Byte positions (relative to the batch) worth damaging, by name.
fn damage_points(segment: &Path, batch: BatchInfo, length_too: bool) -> Vec<(&'static str, u64, u8)> {
    let bytes = std::fs::read(segment).unwrap();
    let body = &bytes[batch.position as usize..(batch.position + batch.len) as usize];
    let value_at = body.windows(6).position(|w| w == b"value-").unwrap() as u64;
    let mut points = vec![
        ("a record value", value_at + 2, 0x20),
        ("the header's base offset", 1, 0x01),
        ("the CRC", 13, 0x80),
        ("the format version", 16, 0x02),
        ("the record count", 18, 0x01),
        ("the max timestamp", 31, 0x10),
    ];
    if length_too {
        points.push(("the length field, by one", 8, 0x01));
        points.push(("the length field, past the end of the file", 10, 0x40));
    }
    points
}

/// Damages the batch `pick` chooses in the victim segment at each of [`damage_points`], one at a
/// time, and runs [`check_bit_rot`] on each; reports every case that failed.
fn run_bit_rot_cases(which: &str, length_too: bool, pick: impl Fn(&[BatchInfo]) -> BatchInfo) {
    let fixture = build();
    let victim = segment_files(&fixture.dir)[VICTIM].clone();
    let batch = pick(&batches(&victim));
    let mut failures = Vec::new();
    for (i, (what, at, mask)) in damage_points(&victim, batch, length_too).into_iter().enumerate() {
        let dir = scratch(&fixture, &format!("case-{i}"));
        xor_byte(&segment_files(&dir)[VICTIM], batch.position + at, mask);
        let context = format!("bit rot in {what} of the {which} batch of a sealed segment ({batch:?})");
        // Each failing case has printed its panic message; go on to the next one.
        if catch_unwind(AssertUnwindSafe(|| check_bit_rot(&dir, &fixture, batch, &context))).is_err() {
            failures.push(what);
        }
    }
    assert!(failures.is_empty(), "bit rot in the {which} batch: failed for {failures:?}");
}

#[test]
fn bit_rot_in_the_first_batch_of_a_sealed_segment_fails_reads_of_that_batch_only() {
    run_bit_rot_cases("first", true, |b| b[0]);
}

#[test]
fn bit_rot_in_the_last_batch_of_a_sealed_segment_is_not_cut_at_open() {
    // The last batch lies past the segment's last index entry, where recovery verifies batches.
    // A damaged length field there looks like a torn write, but only the last segment of a
    // partition can have one: in a sealed segment it is damage, reported and kept.
    run_bit_rot_cases("last", true, |b| *b.last().unwrap());
}

#[test]
fn bit_rot_in_a_middle_batch_of_a_sealed_segment_keeps_the_batches_after_it() {
    run_bit_rot_cases("middle", true, |b| b[b.len() / 2]);
}

#[test]
fn no_single_flipped_byte_panics_or_returns_wrong_data() {
    let fixture = build();
    let victim = segment_files(&fixture.dir)[VICTIM].clone();
    let all = batches(&victim);
    let size = std::fs::metadata(&victim).unwrap().len();
    // Every header byte of the first, a middle and the last batch, and a spread of other bytes.
    let mut points: Vec<u64> = [all[0], all[all.len() / 2], *all.last().unwrap()]
        .iter()
        .flat_map(|b| b.position..b.position + 38)
        .collect();
    points.extend((0..size).step_by(41));
    let end = fixture.records.len() as u64;
    for (i, at) in points.into_iter().enumerate() {
        let dir = scratch(&fixture, "flip");
        xor_byte(&segment_files(&dir)[VICTIM], at, 1 << (i % 8));
        let context = format!("byte {at} of the victim segment flipped");
        let log = Log::open(&dir, options()).unwrap();
        let topic = log.topic(TOPIC).unwrap();
        let now_end = topic.end_offset(DAMAGED).unwrap();
        assert!(now_end <= end, "{context}: end offset grew to {now_end}");
        for from in 0..now_end {
            match topic.read(DAMAGED, from, 1 << 12) {
                Ok(got) => {
                    assert_eq!(got.first().map(|r| r.offset), Some(from), "{context}: read from {from}");
                    got.iter().for_each(|r| check_record(r, &fixture.records, &context));
                }
                Err(e) => assert!(matches!(e, Error::Corrupt { .. }), "{context}: read from {from}: {e}"),
            }
        }
        for t in [0, 10_500, 11_000, 11_500, 12_000, i64::MAX] {
            let want = fixture.records[..now_end as usize]
                .iter()
                .position(|r| r.timestamp.unwrap() >= t)
                .map(|i| i as u64);
            match topic.offset_for_timestamp(DAMAGED, t) {
                Ok(got) => assert_eq!(got, want, "{context}: timestamp {t}"),
                Err(e) => assert!(matches!(e, Error::Corrupt { .. }), "{context}: timestamp {t}: {e}"),
            }
        }
        assert_eq!(topic.append(DAMAGED, &[record(now_end)]).unwrap().base_offset, now_end, "{context}");
    }
}

/// Reopens twice after damage that loses exactly `lost` of the damaged partition, and checks
/// both opens: the report, every read, the end offset (a consumer group commits there), and that
/// appends after the first open continue at the old end and survive the second open.
fn check_reported_loss(dir: &Path, fixture: &Fixture, lost: std::ops::Range<u64>, context: &str) {
    let end = fixture.records.len() as u64;
    let mut segments_before = segment_files(dir).len();
    let more: Vec<Record> = (end..end + 40).map(record).collect();
    for open in 0..2 {
        let context = format!("{context}, open {open}");
        let log = Log::open(dir, options()).unwrap();
        check_report(&log, std::slice::from_ref(&lost), false, &context);
        let [report] = log.recovery() else { unreachable!() };
        let want_end = if open == 0 { end } else { end + more.len() as u64 };
        assert_eq!(report.end_offset, want_end, "{context}: reported end offset");
        assert_eq!(segment_files(dir).len(), segments_before, "{context}: segment files removed");
        let topic = log.topic(TOPIC).unwrap();
        if open == 0 {
            check_lost_range(&topic, fixture, lost.clone(), &context);
            let config = ConsumerConfig::new(TOPIC).group("g").auto_offset_reset(AutoOffsetReset::Earliest);
            let mut consumer = log.consumer(config).unwrap();
            consumer.seek(TOPIC, DAMAGED, end).unwrap();
            consumer.commit().unwrap();
            drop(consumer);
            assert_eq!(topic.append(DAMAGED, &more).unwrap().base_offset, end, "{context}: append");
            segments_before = segment_files(dir).len();
        } else {
            assert_eq!(topic.end_offset(DAMAGED).unwrap(), want_end, "{context}: end offset moved");
            check_range(&topic, DAMAGED, 0, lost.start, &fixture.records, &context);
            let mut all = fixture.records.clone();
            all.extend(more.iter().cloned());
            check_range(&topic, DAMAGED, lost.end, want_end, &all, &context);
            check_corrupt_read(&topic, lost.start, &lost, &context);
        }
    }
}

#[test]
fn a_truncated_sealed_segment_keeps_every_later_segment() {
    let fixture = build();
    let victim = segment_files(&fixture.dir)[VICTIM].clone();
    let last = *batches(&victim).last().unwrap();
    // Cuts inside the last batch (a byte short, inside the header, just past it), and at its
    // start: a batch boundary, where the segment ends short of the next one's base offset.
    let len = last.position + last.len;
    for cut in [len - 1, last.position + 1, last.position + 37, last.position + 38, last.position] {
        let dir = scratch(&fixture, "torn");
        truncate(&segment_files(&dir)[VICTIM], cut);
        let context = format!("sealed segment cut at byte {cut} (last batch {last:?})");
        check_reported_loss(&dir, &fixture, last.base_offset..last.next_offset(), &context);
        // The report names the file and the bytes: the torn batch, or nothing at the cut.
        let log = Log::open(&dir, options()).unwrap();
        let damaged = &log.recovery()[0].damaged[0];
        assert_eq!(damaged.path, segment_files(&dir)[VICTIM], "{context}");
        let start = if cut == last.position { cut } else { last.position };
        assert_eq!(damaged.bytes, start..cut, "{context}: {damaged:?}");
    }
}

/// Damages the victim segment's file with `damage` and checks that exactly its offsets are a
/// reported loss and every later segment stays.
fn check_whole_segment_lost(what: &str, damage: impl Fn(&Path)) {
    let fixture = build();
    let all = batches(&segment_files(&fixture.dir)[VICTIM]);
    let lost = all[0].base_offset..all.last().unwrap().next_offset();
    let dir = scratch(&fixture, "whole");
    damage(&segment_files(&dir)[VICTIM]);
    check_reported_loss(&dir, &fixture, lost, what);
}

#[test]
fn a_missing_sealed_segment_is_a_reported_gap_and_keeps_every_later_segment() {
    check_whole_segment_lost("a missing sealed segment", |path| std::fs::remove_file(path).unwrap());
}

#[test]
fn an_empty_sealed_segment_is_a_reported_gap_and_keeps_every_later_segment() {
    check_whole_segment_lost("an emptied sealed segment", |path| truncate(path, 0));
}

#[test]
fn a_stray_overlapping_segment_file_is_quarantined_and_nothing_is_lost() {
    let fixture = build();
    let segments = segment_files(&fixture.dir);
    let inside = batches(&segments[VICTIM])[1].base_offset;
    let past_end = fixture.records.len() as u64 + 1_000;
    // A copy of a later segment named inside the victim's offsets, a copy of the first segment
    // named after the end, and a copy of the victim named inside itself.
    let strays = [(VICTIM + 1, inside), (0, past_end), (VICTIM, inside)];
    for (k, (copy_of, name)) in strays.into_iter().enumerate() {
        let dir = scratch(&fixture, &format!("stray-{k}"));
        let stray = partition_dir(&dir).join(format!("{name:020}.log"));
        std::fs::copy(&segment_files(&dir)[copy_of], &stray).unwrap();
        let context = format!("a copy of segment {copy_of} named {name}");
        let end = fixture.records.len() as u64;
        let log = Log::open(&dir, options()).unwrap();
        let [report] = log.recovery() else { panic!("{context}: one report expected: {:?}", log.recovery()) };
        assert_eq!(report.truncated_bytes, 0, "{context}: {report:?}");
        assert!(report.damaged.is_empty(), "{context}: {report:?}");
        assert_eq!(report.quarantined.len(), 1, "{context}: {report:?}");
        assert!(!stray.exists() && report.quarantined[0].exists(), "{context}: not moved aside: {report:?}");
        let topic = log.topic(TOPIC).unwrap();
        assert_eq!(topic.end_offset(DAMAGED).unwrap(), end, "{context}");
        check_range(&topic, DAMAGED, 0, end, &fixture.records, &context);
        assert_eq!(topic.append(DAMAGED, &[record(end)]).unwrap().base_offset, end, "{context}");
        drop(topic);
        drop(log);
        let log = Log::open(&dir, options()).unwrap();
        assert!(log.recovery().is_empty(), "{context}: second open: {:?}", log.recovery());
        assert_eq!(log.topic(TOPIC).unwrap().end_offset(DAMAGED).unwrap(), end + 1, "{context}");
    }
}

#[test]
fn a_consumer_stops_at_bit_rot_after_the_records_before_it_or_skips_it_when_told() {
    let fixture = build();
    let victim = segment_files(&fixture.dir)[VICTIM].clone();
    let damaged = batches(&victim)[2];
    let dir = scratch(&fixture, "consumer");
    xor_byte(&segment_files(&dir)[VICTIM], damaged.position + 40, 0x04);
    let end = fixture.records.len() as u64;
    let log = Log::open(&dir, options()).unwrap();
    let poll_all = |policy: DamagePolicy| {
        let config = ConsumerConfig::new(TOPIC).partitions([DAMAGED]).on_damage(policy);
        let mut consumer = log.consumer(config).unwrap();
        consumer.seek(TOPIC, DAMAGED, 0).unwrap();
        let mut got = Vec::new();
        let error = loop {
            match consumer.poll_now() {
                Ok(batches) if batches.is_empty() => break None,
                Ok(batches) => got.extend(batches.into_iter().flat_map(|b| b.records).map(|r| r.offset)),
                Err(e) => break Some(e),
            }
        };
        (got, error, consumer.skipped().to_vec(), consumer.position(TOPIC, DAMAGED))
    };
    let (got, error, skipped, position) = poll_all(DamagePolicy::Fail);
    assert_eq!(got, (0..damaged.base_offset).collect::<Vec<_>>(), "records before the damage");
    assert!(
        matches!(&error, Some(Error::Corrupt { offset, end_offset, .. })
            if *offset == damaged.base_offset && *end_offset == damaged.next_offset()),
        "{error:?}"
    );
    assert!(skipped.is_empty());
    assert_eq!(position, Some(damaged.base_offset), "the position stays at the damage");

    let (got, error, skipped, position) = poll_all(DamagePolicy::Skip);
    let want: Vec<u64> =
        (0..end).filter(|o| !(damaged.base_offset..damaged.next_offset()).contains(o)).collect();
    assert_eq!(got, want, "every intact record");
    assert!(error.is_none(), "{error:?}");
    let skipped: Vec<_> = skipped.iter().map(|d| d.offsets.clone()).collect();
    assert_eq!(skipped, vec![damaged.base_offset..damaged.next_offset()]);
    assert_eq!(position, Some(end));
}

#[test]
fn a_flipped_length_bit_with_the_index_missing_keeps_every_later_batch_and_segment() {
    let fixture = build();
    let victim = segment_files(&fixture.dir)[VICTIM].clone();
    let all = batches(&victim);
    for (k, b) in [(0, all[0]), (1, all[all.len() / 2]), (2, *all.last().unwrap())] {
        for mask in [0x01, 0x40] {
            let dir = scratch(&fixture, &format!("no-index-{k}-{mask}"));
            let segment = &segment_files(&dir)[VICTIM];
            std::fs::remove_file(segment.with_extension("index")).unwrap();
            xor_byte(segment, b.position + 8 + u64::from(mask == 0x40) * 2, mask);
            let context =
                format!("index missing, length of the batch at {} flipped by {mask:#x}", b.position);
            let lost = b.base_offset..b.next_offset();
            let log = Log::open(&dir, options()).unwrap();
            // Without the index, recovery verifies the whole segment: the damage is found on open.
            check_report(&log, std::slice::from_ref(&lost), false, &context);
            check_lost_range(&log.topic(TOPIC).unwrap(), &fixture, lost, &context);
        }
    }
}
