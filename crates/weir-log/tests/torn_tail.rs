//! A torn tail (the log closed or crashed in the middle of writing a batch), garbage after the last
//! batch, and damaged or missing `.index` files: recovery on open cuts exactly the incomplete
//! bytes, keeps every complete batch, reports what it cut, and appends continue at the recovered
//! end. Indexes are caches: whatever happens to them, reads by offset and by timestamp stay right.
//!
//! The segment files are edited directly, using the on-disk format documented in the crate docs
//! (`base_offset: u64` at byte 0, `length: u32` at byte 8, `record_count: u32` at byte 18; a
//! batch is `12 + length` bytes; an index entry is 16 bytes: `u32` relative offset, `u32`
//! position, `i64` largest timestamp before that position).

#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

mod common;

use std::path::{Path, PathBuf};

use bytes::Bytes;
use common::{Fixture, Rng, append_bytes, batches, build_fixture, files_with_ext, fresh_copy, truncate};
use weir_log::{Durability, Error, Log, LogOptions, Record, Topic, TopicConfig};

const TOPIC: &str = "t";
/// The partition that gets damaged; partition 0 holds the same data and is never touched.
const DAMAGED: u32 = 1;

fn options() -> LogOptions {
    LogOptions::default().durability(Durability::None)
}

fn config() -> TopicConfig {
    TopicConfig { partitions: 2, segment_bytes: 4096, index_interval_bytes: 256, ..TopicConfig::default() }
}

/// Record `i` of the fixture: varied value lengths, keys (some absent), headers (some without a
/// value) and out-of-order timestamps, all derived from `i`.
fn record(i: u64) -> Record {
    let mut value = format!("value-{i}-").into_bytes();
    value.resize(value.len() + (i as usize * 37) % 61, b'a' + (i % 26) as u8);
    let mut r = Record::new(value).with_timestamp(1_000 + (i as i64 * 13) % 97);
    if !i.is_multiple_of(7) {
        r = r.with_key(format!("key-{}", i % 5));
    }
    if i.is_multiple_of(3) {
        r = r.with_header("h", Some(Bytes::from(i.to_string())));
    }
    if i.is_multiple_of(4) {
        r = r.with_header("n", None);
    }
    r
}

/// Sizes of the appends that build the fixture; every append is at least one batch. The last
/// one is a batch of its own at the end of the active segment.
const APPENDS: [u64; 16] = [3, 1, 17, 40, 5, 60, 2, 33, 8, 1, 25, 4, 12, 7, 3, 5];

fn build() -> Fixture {
    let fixture = build_fixture(options(), TOPIC, config(), APPENDS, record);
    // The fixture stands for a log whose writer crashed: no clean close recorded its end
    // offset, so a cut at a batch boundary is indistinguishable from a write that never ended
    // (with the recorded end it is a reported loss; see `end_of_log.rs`).
    for p in 0..config().partitions {
        let _ = std::fs::remove_file(partition_dir(&fixture.dir, p).join("end-offset"));
    }
    let segments = segment_files(&fixture.dir, DAMAGED);
    assert!(segments.len() >= 3, "fixture needs sealed segments, has {} segments", segments.len());
    let active = batches(segments.last().unwrap());
    assert!(active.len() >= 3, "fixture needs several batches in the active segment: {active:?}");
    assert_eq!(active.last().unwrap().count, APPENDS[APPENDS.len() - 1]);
    fixture
}

// --- file-level helpers -------------------------------------------------------------------

fn partition_dir(log_dir: &Path, partition: u32) -> PathBuf {
    log_dir.join("topics").join(TOPIC).join(partition.to_string())
}

fn segment_files(log_dir: &Path, partition: u32) -> Vec<PathBuf> {
    files_with_ext(&partition_dir(log_dir, partition), "log")
}

fn index_files(log_dir: &Path, partition: u32) -> Vec<PathBuf> {
    files_with_ext(&partition_dir(log_dir, partition), "index")
}

// --- checks ---------------------------------------------------------------------------------

/// Checks that the partition holds exactly `expected` (offsets `0..expected.len()`): by scanning
/// reads, at and past the end, and if `thorough`, by reads from many single offsets and by
/// timestamp.
fn check_contents(topic: &Topic, partition: u32, expected: &[Record], thorough: bool, context: &str) {
    let end = expected.len() as u64;
    assert_eq!(topic.end_offset(partition).unwrap(), end, "{context}: end offset");
    let check = |r: &weir_log::StoredRecord| {
        let want = &expected[r.offset as usize];
        assert_eq!(r.value, want.value, "{context}: value at {}", r.offset);
        assert_eq!(r.key, want.key, "{context}: key at {}", r.offset);
        assert_eq!(Some(r.timestamp), want.timestamp, "{context}: timestamp at {}", r.offset);
        assert_eq!(r.headers, want.headers, "{context}: headers at {}", r.offset);
    };
    let mut offset = 0;
    while offset < end {
        let got = topic.read(partition, offset, 700).unwrap();
        assert!(!got.is_empty(), "{context}: empty read at {offset} below the end {end}");
        for (k, r) in got.iter().enumerate() {
            assert_eq!(r.offset, offset + k as u64, "{context}: offsets not dense");
            check(r);
        }
        offset += got.len() as u64;
    }
    assert_eq!(offset, end, "{context}: a read went past the end");
    for from in (0..end).step_by(5) {
        let got = topic.read(partition, from, 1).unwrap();
        assert_eq!(got.first().map(|r| r.offset), Some(from), "{context}: read from {from}");
        check(&got[0]);
    }
    assert!(topic.read(partition, end, 1 << 20).unwrap().is_empty(), "{context}: read at the end");
    let past = topic.read(partition, end + 1, 1 << 20);
    assert!(matches!(past, Err(Error::OffsetOutOfRange { .. })), "{context}: read past the end: {past:?}");
    if !thorough {
        return;
    }

    let mut times: Vec<i64> = expected.iter().map(|r| r.timestamp.unwrap()).collect();
    times.sort_unstable();
    times.dedup();
    let probes = times.iter().flat_map(|&t| [t, t + 1]).chain([i64::MIN, 0, 999]);
    for t in probes {
        let want = expected.iter().position(|r| r.timestamp.unwrap() >= t).map(|i| i as u64);
        assert_eq!(topic.offset_for_timestamp(partition, t).unwrap(), want, "{context}: timestamp {t}");
    }
}

/// Checks that appends continue right after the last surviving record and are readable, and if
/// `thorough`, also after one more (clean) reopen.
fn check_append_continues(log: Log, dir: &Path, survivors: &[Record], thorough: bool, context: &str) {
    let topic = log.topic(TOPIC).unwrap();
    let next = survivors.len() as u64;
    let extra: Vec<Record> = (next..next + 3).map(record).collect();
    let appended = topic.append(DAMAGED, &extra).unwrap();
    assert_eq!(appended.base_offset, next, "{context}: first offset appended after recovery");
    let mut all = survivors.to_vec();
    all.extend(extra);
    let got = topic.read(DAMAGED, next, 1 << 20).unwrap();
    assert_eq!(got.iter().map(|r| r.offset).collect::<Vec<_>>(), vec![next, next + 1, next + 2], "{context}");
    for (r, want) in got.iter().zip(&all[next as usize..]) {
        assert_eq!(r.value, want.value, "{context}: appended value at {}", r.offset);
    }
    if !thorough {
        return;
    }
    drop(topic);
    drop(log);
    let log = Log::open(dir, options()).unwrap();
    assert!(log.recovery().is_empty(), "{context}: second reopen cut data: {:?}", log.recovery());
    check_contents(&log.topic(TOPIC).unwrap(), DAMAGED, &all, true, &format!("{context}, after the append"));
}

/// Reopens `dir`, expects recovery to have cut `cut_bytes` of partition [`DAMAGED`] (nothing if
/// 0) and `survivors` to be what is left, the other partition intact, and appends to continue.
/// Without `thorough`, only the cheaper checks run (for tests that try hundreds of cuts).
fn reopen_and_check(
    dir: &Path,
    fixture: &Fixture,
    survivors: usize,
    cut_bytes: u64,
    thorough: bool,
    context: &str,
) {
    let log = Log::open(dir, options()).unwrap();
    let survivors = &fixture.records[..survivors];
    if cut_bytes == 0 {
        assert!(log.recovery().is_empty(), "{context}: nothing to cut, yet {:?}", log.recovery());
    } else {
        let [report] = log.recovery() else { panic!("{context}: one report expected: {:?}", log.recovery()) };
        assert_eq!((report.topic.as_str(), report.partition), (TOPIC, DAMAGED), "{context}");
        assert_eq!(report.truncated_bytes, cut_bytes, "{context}: truncated bytes");
        assert!(report.damaged.is_empty() && report.quarantined.is_empty(), "{context}: {report:?}");
        assert_eq!(report.end_offset, survivors.len() as u64, "{context}: reported end offset");
    }
    let topic = log.topic(TOPIC).unwrap();
    check_contents(&topic, DAMAGED, survivors, thorough, context);
    if thorough {
        check_contents(
            &topic,
            1 - DAMAGED,
            &fixture.records,
            true,
            &format!("{context}, untouched partition"),
        );
    }
    drop(topic);
    check_append_continues(log, dir, survivors, thorough, context);
}

// --- tests ----------------------------------------------------------------------------------

#[test]
fn every_cut_inside_the_last_batch_keeps_the_complete_batches_before_it() {
    let fixture = build();
    let segment = segment_files(&fixture.dir, DAMAGED).pop().unwrap();
    let last = *batches(&segment).last().unwrap();
    let mut cuts: Vec<u64> = (last.position..last.position + last.len).collect();
    if cuts.len() > 400 {
        let mut rng = Rng(0x5eed);
        cuts = (0..400).map(|_| last.position + rng.below(last.len)).collect();
    }
    assert!(cuts.len() >= 50, "the last batch is too small for the test: {last:?}");
    let scratch = fixture.tmp.path().join("scratch");
    for (i, cut) in cuts.into_iter().enumerate() {
        // Every cut gets the essential checks; the header, the first and every 16th the rest.
        let thorough = i % 16 == 0 || cut - last.position < 40 || cut + 1 == last.position + last.len;
        fresh_copy(&fixture.dir, &scratch);
        let name = segment.file_name().unwrap();
        truncate(&partition_dir(&scratch, DAMAGED).join(name), cut);
        let context =
            format!("cut at byte {cut} of a batch at {}..{}", last.position, last.position + last.len);
        let cut_bytes = cut - last.position;
        reopen_and_check(&scratch, &fixture, last.base_offset as usize, cut_bytes, thorough, &context);
    }
}

#[test]
fn random_cuts_anywhere_in_the_active_segment_keep_the_batches_before_them() {
    let fixture = build();
    let segment = segment_files(&fixture.dir, DAMAGED).pop().unwrap();
    let all = batches(&segment);
    let size = std::fs::metadata(&segment).unwrap().len();
    let mut rng = Rng(0xc0ffee);
    let scratch = fixture.tmp.path().join("scratch");
    for i in 0..40 {
        let cut = rng.below(size);
        let torn = all.iter().rfind(|b| b.position <= cut).unwrap();
        fresh_copy(&fixture.dir, &scratch);
        truncate(&partition_dir(&scratch, DAMAGED).join(segment.file_name().unwrap()), cut);
        let context = format!("cut at byte {cut} of the active segment (batch {torn:?})");
        let cut_bytes = cut - torn.position;
        reopen_and_check(&scratch, &fixture, torn.base_offset as usize, cut_bytes, i % 4 == 0, &context);
    }
}

#[test]
fn garbage_after_the_last_batch_is_cut_on_reopen() {
    let fixture = build();
    let segment = segment_files(&fixture.dir, DAMAGED).pop().unwrap();
    let original = std::fs::read(&segment).unwrap();
    let last = *batches(&segment).last().unwrap();
    let last_batch = original[last.position as usize..].to_vec();
    let mut rng = Rng(42);
    let garbage: Vec<(&str, Vec<u8>)> = vec![
        ("1 zero byte", vec![0]),
        ("100 zero bytes", vec![0; 100]),
        ("a zeroed page", vec![0; 4096]),
        ("37 random bytes (shorter than a header)", rng.bytes(37)),
        ("500 random bytes", rng.bytes(500)),
        ("a copy of the last batch (offset out of sequence)", last_batch.clone()),
        ("the last batch's header alone", last_batch[..38].to_vec()),
        ("a copy of the last batch renumbered to follow, with a stale CRC", {
            let mut b = last_batch.clone();
            b[0..8].copy_from_slice(&(last.base_offset + last.count).to_le_bytes());
            b
        }),
    ];
    let scratch = fixture.tmp.path().join("scratch");
    for (what, bytes) in garbage {
        fresh_copy(&fixture.dir, &scratch);
        append_bytes(&partition_dir(&scratch, DAMAGED).join(segment.file_name().unwrap()), &bytes);
        let context = format!("garbage after the last batch: {what}");
        reopen_and_check(&scratch, &fixture, fixture.records.len(), bytes.len() as u64, true, &context);
    }
}

/// Reopens after `damage` was done to the `.index` files of partition [`DAMAGED`] and checks
/// reads by offset and by timestamp, and that no data was cut.
fn check_index_damage(what: &str, damage: impl Fn(&Path)) {
    let fixture = build();
    let indexes = index_files(&fixture.dir, DAMAGED);
    assert!(
        indexes.iter().filter(|p| std::fs::metadata(p).unwrap().len() >= 48).count() >= 2,
        "fixture needs several index entries per segment"
    );
    for index in &indexes {
        damage(index);
    }
    let context = format!("index damage: {what}");
    reopen_and_check(&fixture.dir, &fixture, fixture.records.len(), 0, true, &context);
}

#[test]
fn deleted_indexes_are_rebuilt() {
    check_index_damage("deleted", |index| std::fs::remove_file(index).unwrap());
}

#[test]
fn indexes_of_odd_length_are_cut_back() {
    check_index_damage("truncated to an odd length", |index| {
        let len = std::fs::metadata(index).unwrap().len();
        truncate(index, len.saturating_sub(7));
    });
}

#[test]
fn indexes_full_of_garbage_are_ignored() {
    let rng = std::cell::RefCell::new(Rng(7));
    check_index_damage("random bytes", |index| {
        let len = std::fs::metadata(index).unwrap().len() as usize;
        std::fs::write(index, rng.borrow_mut().bytes(len + 16)).unwrap();
    });
    check_index_damage("zeros", |index| {
        let len = std::fs::metadata(index).unwrap().len() as usize;
        std::fs::write(index, vec![0u8; len]).unwrap();
    });
    check_index_damage("entries pointing past the end", |index| {
        let mut raw = std::fs::read(index).unwrap();
        let mut e = [0u8; 16];
        e[0..4].copy_from_slice(&100_000u32.to_le_bytes());
        e[4..8].copy_from_slice(&1_000_000u32.to_le_bytes());
        e[8..16].copy_from_slice(&i64::MAX.to_le_bytes());
        raw.extend_from_slice(&e);
        std::fs::write(index, raw).unwrap();
    });
}

/// Rewrites entry `k` of every index with at least `k + 2` entries (so the damaged entry is
/// not the last one, which recovery checks against its segment).
fn damage_middle_entry(index: &Path, k: usize, edit: impl Fn(&mut [u8])) {
    let mut raw = std::fs::read(index).unwrap();
    if raw.len() / 16 < k + 2 {
        return;
    }
    edit(&mut raw[k * 16..(k + 1) * 16]);
    std::fs::write(index, raw).unwrap();
}

#[test]
fn an_index_entry_with_a_wrong_position_is_not_trusted() {
    // The entry still looks well-formed (its position stays between its neighbours'), but no
    // batch starts there.
    check_index_damage("a middle entry's position moved back by one byte", |index| {
        damage_middle_entry(index, 0, |e| {
            let pos = u32::from_le_bytes(e[4..8].try_into().unwrap());
            e[4..8].copy_from_slice(&(pos - 1).to_le_bytes());
        });
    });
}

#[test]
fn an_index_entry_with_a_wrong_time_is_not_trusted() {
    // The entry still looks well-formed (times never decrease), but claims that everything
    // before it is older than any timestamp, so a time lookup may start its scan too late.
    check_index_damage("the first entry's time lowered to the start's", |index| {
        damage_middle_entry(index, 0, |e| e[8..16].copy_from_slice(&i64::MIN.to_le_bytes()));
    });
}
