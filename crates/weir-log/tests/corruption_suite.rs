//! Damage to every on-disk structure of the log, one case at a time: segments (cuts at every
//! batch boundary and one byte either side, flipped bits in each header field and in payloads,
//! deleted, emptied, duplicated, a stray file), indexes, a consumer group's offsets file, the
//! topic's `topic.json`, the recorded `log-start-offset` and `end-offset`, and a whole
//! partition directory. For each case, against the records
//! written:
//!
//! - the log loses at most the records of the batches whose bytes were damaged;
//! - every lost record is reported: in [`Log::recovery`], or by the `Error::Corrupt` of a read
//!   that reaches it (the skipping reads here list them), or, for a torn tail of the last segment,
//!   as bytes cut;
//! - two opens of the same bytes agree: same end offsets, same records, same lost ranges;
//! - a flipped bit in a metadata file (a group's offsets, `topic.json`, `log-start-offset`,
//!   `end-offset`) is either detected (the group fails, or the topic is unavailable, naming the
//!   file; a damaged offset record is not used) or changes nothing the log or a group shows.
//!
//! Cuts and flips are sampled (every batch of the first, a middle and the last segment, every
//! third batch of the others); set `WEIR_CORRUPTION_FULL=1` to damage every batch. The counts
//! are printed.

#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

mod common;

use std::collections::BTreeSet;
use std::ops::Range;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use common::{BatchInfo, Fixture, Rng, batches, build_fixture, files_with_ext, fresh_copy, truncate};
use weir_log::{
    AutoOffsetReset, ConsumerConfig, Durability, Error, Log, LogOptions, Record, StoredRecord, TopicConfig,
};

const TOPIC: &str = "suite";
/// A named way to damage a file.
type Damage<'a> = (&'a str, Box<dyn Fn(&Path)>);
/// A named way to damage a file, using randomness.
type RandomDamage<'a> = (&'a str, Box<dyn Fn(&Path, &mut Rng)>);
const DAMAGED: u32 = 1;
const GROUP: &str = "readers";
const OTHER_GROUP: &str = "others";

fn options() -> LogOptions {
    LogOptions::default().durability(Durability::None)
}

fn record(i: u64) -> Record {
    let mut value = format!("suite-{i}-").into_bytes();
    value.resize(value.len() + (i as usize * 41) % 70, b'a' + (i % 26) as u8);
    let mut r = Record::new(value).with_timestamp(5_000 + i as i64);
    if !i.is_multiple_of(4) {
        r = r.with_key(format!("key-{}", i % 9));
    }
    if i.is_multiple_of(3) {
        r = r.with_header("h", Some(Bytes::from(i.to_string())));
    }
    r
}

/// The log: two partitions holding the same records in small segments, and two groups with
/// committed offsets.
fn build() -> Fixture {
    let config = common::small_segments(2);
    let sizes = [5u64, 9, 2, 7, 12, 3].into_iter().cycle().take(50);
    let fixture = build_fixture(options(), TOPIC, config, sizes, record);
    let log = Log::open(&fixture.dir, options()).unwrap();
    for (group, at) in [(GROUP, 100), (OTHER_GROUP, 50)] {
        let config = ConsumerConfig::new(TOPIC).group(group).auto_offset_reset(AutoOffsetReset::Earliest);
        let mut consumer = log.consumer(config).unwrap();
        consumer.seek(TOPIC, 0, at).unwrap();
        consumer.seek(TOPIC, 1, at + 1).unwrap();
        consumer.commit().unwrap();
    }
    assert!(segments(&fixture.dir).len() >= 5, "the fixture needs several segments");
    fixture
}

fn partition_dir(dir: &Path, partition: u32) -> PathBuf {
    dir.join("topics").join(TOPIC).join(partition.to_string())
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    files_with_ext(&partition_dir(dir, DAMAGED), "log")
}

/// What the log holds in one partition, as a reader sees it.
#[derive(Debug, PartialEq, Eq)]
struct View {
    end: u64,
    records: Vec<StoredRecord>,
    /// Lost ranges met by reads.
    skipped: Vec<Range<u64>>,
}

fn view(log: &Log, partition: u32) -> View {
    let topic = log.topic(TOPIC).unwrap();
    let end = topic.end_offset(partition).unwrap();
    let mut offset = topic.start_offset(partition).unwrap();
    let (mut records, mut skipped) = (Vec::new(), Vec::new());
    while offset < end {
        let read = topic.read_skipping_damage(partition, offset, 1 << 14).unwrap();
        let next = read.records.last().map(|r| r.offset + 1).max(read.skipped.last().map(|d| d.offsets.end));
        skipped.extend(read.skipped.into_iter().map(|d| d.offsets));
        records.extend(read.records);
        offset = next.unwrap();
    }
    View { end, records, skipped }
}

/// Opens `dir` twice and checks the case: partition [`DAMAGED`] lost at most `may_lose`, every
/// loss is reported, partition 0 is whole, and both opens agree. Returns how many records the
/// case lost.
fn check(dir: &Path, fixture: &Fixture, may_lose: &BTreeSet<u64>, context: &str) -> usize {
    check_with_tail(dir, fixture, may_lose, false, context)
}

/// As [`check`]; with `tail_may_vanish` (damage to the last segment), records past the
/// recovered end may be gone without a report: a last segment cut at a batch boundary, emptied
/// or deleted leaves bytes that look exactly like a shorter log.
fn check_with_tail(
    dir: &Path,
    fixture: &Fixture,
    may_lose: &BTreeSet<u64>,
    tail_may_vanish: bool,
    context: &str,
) -> usize {
    let written = fixture.records.len() as u64;
    let mut views = Vec::new();
    let mut lost_count = 0;
    for open in 0..2 {
        let context = format!("{context}, open {open}");
        let log = Log::open(dir, options()).unwrap_or_else(|e| panic!("{context}: open failed: {e}"));
        let damaged = view(&log, DAMAGED);
        let intact = view(&log, 1 - DAMAGED);
        assert_eq!(intact.end, written, "{context}: the untouched partition");
        assert_eq!(intact.records.len() as u64, written, "{context}: the untouched partition");
        let returned: BTreeSet<u64> = damaged.records.iter().map(|r| r.offset).collect();
        for r in &damaged.records {
            let want = &fixture.records[r.offset as usize];
            assert_eq!((&r.key, &r.value), (&want.key, &want.value), "{context}: record {}", r.offset);
            assert_eq!(r.headers, want.headers, "{context}: headers of {}", r.offset);
        }
        let lost: Vec<u64> = (0..written).filter(|o| !returned.contains(o)).collect();
        let beyond: Vec<&u64> = lost.iter().filter(|o| !may_lose.contains(o)).collect();
        assert!(beyond.is_empty(), "{context}: lost records outside the damaged batches: {beyond:?}");
        let report = log.recovery().iter().find(|r| r.partition == DAMAGED);
        for o in &lost {
            let in_range = |r: &Range<u64>| r.contains(o);
            let reported = damaged.skipped.iter().any(in_range)
                || report.is_some_and(|r| r.damaged.iter().any(|d| d.offsets.contains(o)))
                || (*o >= damaged.end && open == 0 && report.is_some_and(|r| r.truncated_bytes > 0))
                || (*o >= damaged.end
                    && open == 1
                    && views.first().is_some_and(|v: &View| v.end == damaged.end))
                || (*o >= damaged.end && tail_may_vanish);
            assert!(reported, "{context}: offset {o} lost without a trace: {report:?}");
        }
        if open == 1 {
            assert!(
                report.is_none_or(|r| r.truncated_bytes == 0 && r.quarantined.is_empty()),
                "{context}: the second open changed the log again: {report:?}"
            );
        }
        lost_count = lost.len();
        views.push(damaged);
    }
    assert_eq!(views[0], views[1], "{context}: two opens of the same bytes disagree");
    lost_count
}

/// The offsets of the batches of `file` overlapping the bytes `damaged`.
fn offsets_of(file: &[BatchInfo], damaged: Range<u64>) -> BTreeSet<u64> {
    file.iter()
        .filter(|b| b.position < damaged.end && damaged.start < b.position + b.len)
        .flat_map(|b| b.base_offset..b.next_offset())
        .collect()
}

/// Which batches of segment `k` of `n` get damaged.
fn sampled(k: usize, n: usize, file: &[BatchInfo]) -> Vec<BatchInfo> {
    let full = std::env::var("WEIR_CORRUPTION_FULL").is_ok_and(|v| v == "1");
    let step = if full || k == 0 || k == n / 2 || k + 1 == n { 1 } else { 3 };
    file.iter().step_by(step).copied().collect()
}

struct Counts {
    cases: usize,
    lost: usize,
}

impl Counts {
    fn add(&mut self, lost: usize) {
        self.cases += 1;
        self.lost += lost;
    }
}

#[test]
fn cuts_at_every_batch_boundary_lose_at_most_the_cut_batches() {
    let fixture = build();
    let files = segments(&fixture.dir);
    let scratch = fixture.tmp.path().join("scratch");
    let mut counts = Counts { cases: 0, lost: 0 };
    for (k, path) in files.iter().enumerate() {
        let all = batches(path);
        let len = std::fs::metadata(path).unwrap().len();
        for b in sampled(k, files.len(), &all) {
            let end = b.position + b.len;
            for cut in [b.position.saturating_sub(1), b.position, b.position + 1, end - 1, end] {
                if cut >= len {
                    continue;
                }
                fresh_copy(&fixture.dir, &scratch);
                truncate(&segments(&scratch)[k], cut);
                let context = format!("segment {k} of {} cut at byte {cut}", files.len());
                let lost = offsets_of(&all, cut..len);
                counts.add(check_with_tail(&scratch, &fixture, &lost, k + 1 == files.len(), &context));
            }
        }
    }
    eprintln!("{} cuts, {} records lost in all", counts.cases, counts.lost);
}

#[test]
fn flipped_bits_in_every_header_field_and_in_payloads_lose_at_most_that_batch() {
    let fixture = build();
    let files = segments(&fixture.dir);
    let scratch = fixture.tmp.path().join("scratch");
    let mut rng = Rng(0xb17);
    let mut counts = Counts { cases: 0, lost: 0 };
    // (field, byte within the batch): base offset, length (low and high byte), CRC, magic,
    // attributes, record count, first and max timestamp; then a payload byte.
    let fields = [
        ("base offset", 0),
        ("length", 8),
        ("length, high byte", 10),
        ("crc", 13),
        ("magic", 16),
        ("attributes", 17),
        ("record count", 18),
        ("first timestamp", 23),
        ("max timestamp", 31),
    ];
    for (k, path) in files.iter().enumerate() {
        let all = batches(path);
        for b in sampled(k, files.len(), &all) {
            let payload = ("payload", 38 + rng.below(b.len - 38));
            for (field, at) in fields.into_iter().chain([payload]) {
                fresh_copy(&fixture.dir, &scratch);
                let target = &segments(&scratch)[k];
                let mut bytes = std::fs::read(target).unwrap();
                bytes[(b.position + at) as usize] ^= 1 << rng.below(8);
                std::fs::write(target, bytes).unwrap();
                let context = format!("segment {k}, batch at {}: bit flipped in the {field}", b.position);
                let may_lose = offsets_of(&all, b.position..b.position + b.len);
                counts.add(check(&scratch, &fixture, &may_lose, &context));
            }
        }
    }
    eprintln!("{} flipped bits, {} records lost in all", counts.cases, counts.lost);
}

#[test]
fn deleted_emptied_duplicated_and_stray_segment_files_lose_at_most_their_own_records() {
    let fixture = build();
    let files = segments(&fixture.dir);
    let scratch = fixture.tmp.path().join("scratch");
    let end = fixture.records.len() as u64;
    let mut rng = Rng(0x57a7);
    let mut cases = 0;
    for (k, path) in files.iter().enumerate() {
        let all = batches(path);
        let own = offsets_of(&all, 0..u64::MAX);
        let is_last = k + 1 == files.len();
        let damages: Vec<Damage<'_>> = vec![
            ("deleted", Box::new(|p: &Path| std::fs::remove_file(p).unwrap())),
            ("emptied", Box::new(|p: &Path| truncate(p, 0))),
        ];
        for (what, damage) in damages {
            fresh_copy(&fixture.dir, &scratch);
            damage(&segments(&scratch)[k]);
            let context = format!("segment {k} of {} {what}", files.len());
            // Nothing on disk tells that the last segment held records: the log ends earlier.
            check_with_tail(&scratch, &fixture, &own, is_last, &context);
            cases += 1;
        }
        // Copies of this segment under other names: inside the offsets of a segment, past the end.
        let inside = batches(&files[(k + 1) % files.len()]).last().unwrap().base_offset;
        for name in [inside, end + 17] {
            fresh_copy(&fixture.dir, &scratch);
            let copy = partition_dir(&scratch, DAMAGED).join(format!("{name:020}.log"));
            if copy.exists() {
                continue;
            }
            std::fs::copy(&segments(&scratch)[k], &copy).unwrap();
            check(&scratch, &fixture, &BTreeSet::new(), &format!("a copy of segment {k} named {name}"));
            cases += 1;
        }
    }
    // Stray files: garbage named as a segment past the end, and files the log does not name.
    let strays: [(&str, Vec<u8>); 4] = [
        ("99999999999999999999.log", rng.bytes(3000)),
        ("00000000000000000003.log.bak", rng.bytes(100)),
        ("5.log", std::fs::read(&files[0]).unwrap()),
        ("notes.txt", b"hello".to_vec()),
    ];
    for (name, bytes) in strays {
        fresh_copy(&fixture.dir, &scratch);
        std::fs::write(partition_dir(&scratch, DAMAGED).join(name), bytes).unwrap();
        check(&scratch, &fixture, &BTreeSet::new(), &format!("a stray file {name}"));
        cases += 1;
    }
    eprintln!("{cases} deleted, emptied, duplicated or stray segment files");
}

#[test]
fn damaged_indexes_lose_nothing() {
    let fixture = build();
    let scratch = fixture.tmp.path().join("scratch");
    let mut rng = Rng(0x1d);
    let damages: Vec<RandomDamage<'_>> = vec![
        ("deleted", Box::new(|p, _| std::fs::remove_file(p).unwrap())),
        ("emptied", Box::new(|p, _| truncate(p, 0))),
        (
            "cut short by 7 bytes",
            Box::new(|p, _| truncate(p, std::fs::metadata(p).unwrap().len().saturating_sub(7))),
        ),
        (
            "a flipped bit",
            Box::new(|p, rng| {
                let mut b = std::fs::read(p).unwrap();
                if !b.is_empty() {
                    let at = rng.below(b.len() as u64) as usize;
                    b[at] ^= 1 << rng.below(8);
                }
                std::fs::write(p, b).unwrap();
            }),
        ),
        (
            "garbage",
            Box::new(|p, rng| {
                let len = std::fs::metadata(p).unwrap().len() as usize;
                std::fs::write(p, rng.bytes(len + 20)).unwrap();
            }),
        ),
    ];
    let indexes = files_with_ext(&partition_dir(&fixture.dir, DAMAGED), "index");
    let mut cases = 0;
    for k in 0..indexes.len() {
        for (what, damage) in &damages {
            fresh_copy(&fixture.dir, &scratch);
            damage(&files_with_ext(&partition_dir(&scratch, DAMAGED), "index")[k], &mut rng);
            let lost = check(&scratch, &fixture, &BTreeSet::new(), &format!("index {k} {what}"));
            assert_eq!(lost, 0);
            cases += 1;
        }
    }
    eprintln!("{cases} damaged indexes");
}

#[test]
fn a_damaged_group_offsets_file_fails_that_group_loudly_and_nothing_else() {
    let fixture = build();
    let scratch = fixture.tmp.path().join("scratch");
    let mut rng = Rng(0x9e0);
    let file = |dir: &Path| dir.join("groups").join(format!("{GROUP}.json"));
    let original = std::fs::read(file(&fixture.dir)).unwrap();
    let damages: [(&str, Vec<u8>); 4] = [
        ("emptied", Vec::new()),
        ("cut in half", original[..original.len() / 2].to_vec()),
        ("garbage", rng.bytes(original.len())),
        ("its first brace flipped", {
            let mut b = original.clone();
            b[0] ^= 0x01;
            b
        }),
    ];
    for (what, bytes) in damages {
        fresh_copy(&fixture.dir, &scratch);
        std::fs::write(file(&scratch), bytes).unwrap();
        let context = format!("the group offsets file {what}");
        check(&scratch, &fixture, &BTreeSet::new(), &context);
        let log = Log::open(&scratch, options()).unwrap();
        let config = ConsumerConfig::new(TOPIC).group(GROUP);
        match log.consumer(config) {
            Err(Error::Metadata { path, .. }) => assert_eq!(path, file(&scratch), "{context}"),
            other => panic!("{context}: the damaged group must fail, naming its file: {other:?}"),
        }
        let other = log.consumer(ConsumerConfig::new(TOPIC).group(OTHER_GROUP)).unwrap();
        assert_eq!(other.position(TOPIC, DAMAGED), Some(51), "{context}: the other group");
    }
    // Deleted: the group's committed offsets are gone, its consumers start by their reset policy.
    fresh_copy(&fixture.dir, &scratch);
    std::fs::remove_file(file(&scratch)).unwrap();
    check(&scratch, &fixture, &BTreeSet::new(), "the group offsets file deleted");
}

#[test]
fn a_damaged_topic_json_makes_its_topic_unavailable_naming_it_and_loses_nothing() {
    let fixture = build();
    let scratch = fixture.tmp.path().join("scratch");
    let meta = |dir: &Path| dir.join("topics").join(TOPIC).join("topic.json");
    let original = std::fs::read(meta(&fixture.dir)).unwrap();
    let mut rng = Rng(0x70b);
    let damages: [(&str, Option<Vec<u8>>); 4] = [
        ("deleted", None),
        ("emptied", Some(Vec::new())),
        ("cut in half", Some(original[..original.len() / 2].to_vec())),
        ("garbage", Some(rng.bytes(original.len()))),
    ];
    for (what, bytes) in damages {
        fresh_copy(&fixture.dir, &scratch);
        match bytes {
            None => std::fs::remove_file(meta(&scratch)).unwrap(),
            Some(b) => std::fs::write(meta(&scratch), b).unwrap(),
        }
        let context = format!("topic.json {what}");
        // The log opens; the topic is unavailable, naming topic.json, and nothing else is touched.
        {
            let log = Log::open(&scratch, options()).unwrap();
            let [(name, error)] = &log.unavailable_topics()[..] else {
                panic!("{context}: one unavailable topic expected: {:?}", log.unavailable_topics())
            };
            assert_eq!(name, TOPIC, "{context}");
            match &**error {
                Error::Metadata { path, .. } | Error::Io { path, .. } => {
                    assert_eq!(path, &meta(&scratch), "{context}")
                }
                other => panic!("{context}: the error must name topic.json: {other:?}"),
            }
            assert!(
                matches!(log.topic(TOPIC), Err(Error::TopicUnavailable { .. })),
                "{context}: the topic must be unavailable"
            );
        }
        // Nothing was touched: with the file restored, every record is there.
        std::fs::write(meta(&scratch), &original).unwrap();
        check(&scratch, &fixture, &BTreeSet::new(), &context);
    }
}

#[test]
fn a_deleted_partition_directory_is_recreated_past_every_committed_offset() {
    let fixture = build();
    let scratch = fixture.tmp.path().join("scratch");
    fresh_copy(&fixture.dir, &scratch);
    std::fs::remove_dir_all(partition_dir(&scratch, DAMAGED)).unwrap();
    // The highest offset a group committed for the partition.
    let floor = 101;
    for open in 0..2 {
        let context = format!("open {open}");
        let log = Log::open(&scratch, options()).unwrap();
        let topic = log.topic(TOPIC).unwrap();
        if open == 0 {
            let [report] = log.recovery() else {
                panic!("{context}: one report expected: {:?}", log.recovery())
            };
            assert_eq!((report.topic.as_str(), report.partition, report.recreated), (TOPIC, DAMAGED, true));
            assert_eq!(report.end_offset, floor, "{context}: {report:?}");
            assert_eq!(topic.end_offset(DAMAGED).unwrap(), floor, "{context}");
            assert_eq!(topic.append(DAMAGED, &[record(floor)]).unwrap().base_offset, floor, "{context}");
        } else {
            assert!(log.recovery().is_empty(), "{context}: {:?}", log.recovery());
            assert_eq!(topic.end_offset(DAMAGED).unwrap(), floor + 1, "{context}");
        }
        assert_eq!(topic.start_offset(DAMAGED).unwrap(), floor, "{context}");
        let below = topic.read(DAMAGED, 0, 1 << 20);
        assert!(matches!(below, Err(Error::OffsetOutOfRange { earliest: 101, .. })), "{context}: {below:?}");
        // The group resumes at its committed offset and gets the new record, not an old offset.
        let config = ConsumerConfig::new(TOPIC).group(GROUP).partitions([DAMAGED]);
        let mut consumer = log.consumer(config).unwrap();
        let got: Vec<u64> =
            consumer.poll_now().unwrap().into_iter().flat_map(|b| b.records).map(|r| r.offset).collect();
        assert_eq!(got, vec![floor], "{context}");
        check_partition_zero(&log, &fixture);
    }
}

fn check_partition_zero(log: &Log, fixture: &Fixture) {
    let v = view(log, 1 - DAMAGED);
    assert_eq!(v.records.len(), fixture.records.len());
}

/// What a log shows through its API: per topic its configuration, or the file that makes it
/// unavailable; per partition its start and end offsets, its records and its lost ranges; per
/// group its committed offsets, or the file that fails it.
#[derive(Debug, PartialEq)]
struct Seen {
    topic: Result<String, PathBuf>,
    partitions: Vec<SeenPartition>,
    groups: Vec<Result<Committed, PathBuf>>,
}

/// A group's committed offsets, by partition.
type Committed = Vec<(u32, Option<u64>)>;

/// What a partition shows.
#[derive(Debug, PartialEq)]
struct SeenPartition {
    start: u64,
    end: u64,
    /// The offsets of the records read from the start.
    offsets: Vec<u64>,
    /// The CRC-32C of their values.
    values: u32,
    /// The ranges recovery reported lost.
    lost: Vec<Range<u64>>,
}

/// Opens the log in `dir` and records what it shows (see [`Seen`]).
fn seen(dir: &Path) -> Seen {
    let path_of = |e: &Error| match e {
        Error::Metadata { path, .. } => path.clone(),
        Error::TopicUnavailable { source, .. } => match &**source {
            Error::Metadata { path, .. } => path.clone(),
            other => panic!("the error must name the damaged file: {other:?}"),
        },
        other => panic!("the error must name the damaged file: {other:?}"),
    };
    let log = Log::open(dir, options()).unwrap();
    let topic = log.topic(TOPIC);
    let mut partitions = Vec::new();
    if let Ok(topic) = &topic {
        for p in 0..topic.partition_count() {
            let (start, end) = (topic.start_offset(p).unwrap(), topic.end_offset(p).unwrap());
            let records = topic.read(p, start, usize::MAX).unwrap();
            let lost = log
                .recovery()
                .iter()
                .filter(|r| r.partition == p)
                .flat_map(|r| r.damaged.iter().map(|d| d.offsets.clone()))
                .collect();
            let offsets = records.iter().map(|r| r.offset).collect();
            let values = records.iter().fold(0, |crc, r| crc32c::crc32c_append(crc, &r.value));
            partitions.push(SeenPartition { start, end, offsets, values, lost });
        }
    }
    let groups = [GROUP, OTHER_GROUP]
        .into_iter()
        .map(|g| match log.describe_group(g) {
            Ok(d) => Ok(d.partitions.iter().map(|p| (p.partition, p.committed)).collect()),
            Err(e) => Err(path_of(&e)),
        })
        .collect();
    Seen { topic: topic.map(|t| format!("{:?}", t.config())).map_err(|e| path_of(&e)), partitions, groups }
}

/// A log whose metadata files all exist: a topic of two partitions whose first segments
/// retention deleted (so `log-start-offset` is recorded), closed cleanly (so `end-offset` is),
/// and two groups with committed offsets.
fn build_with_metadata() -> Fixture {
    let config = TopicConfig { retention_bytes: Some(6000), ..common::small_segments(2) };
    let fixture = build_fixture(options(), TOPIC, config, std::iter::repeat_n(4, 60), record);
    let log = Log::open(&fixture.dir, options()).unwrap();
    let topic = log.topic(TOPIC).unwrap();
    let (start, end) = (topic.start_offset(0).unwrap(), topic.end_offset(0).unwrap());
    assert!(start > 0, "retention must have deleted a segment");
    for (group, at) in [(GROUP, end - 7), (OTHER_GROUP, start + 3)] {
        let config = ConsumerConfig::new(TOPIC).group(group).auto_offset_reset(AutoOffsetReset::Earliest);
        let mut consumer = log.consumer(config).unwrap();
        consumer.seek(TOPIC, 0, at).unwrap();
        consumer.seek(TOPIC, 1, at - 1).unwrap();
        consumer.commit().unwrap();
    }
    drop(topic);
    drop(log);
    fixture
}

/// Flips bits of the metadata file `file` (relative to the log directory), one at a time in a
/// fresh copy of the log (every bit of each digit and one bit of each other byte; every bit
/// with `WEIR_CORRUPTION_FULL=1`), and checks that the log shows exactly what it showed before, or,
/// if `detected` accepts what it shows (the damage was found and reported as documented), that
/// restoring the file brings back exactly what it showed before. Returns (cases, detected).
fn flip_every_bit(file: &Path, detected: impl Fn(&Seen, &Path) -> bool) -> (usize, usize) {
    let fixture = build_with_metadata();
    let scratch = fixture.tmp.path().join("scratch");
    let original = std::fs::read(fixture.dir.join(file)).unwrap();
    fresh_copy(&fixture.dir, &scratch);
    let before = seen(&scratch);
    let (mut cases, mut found) = (0, 0);
    let full = std::env::var("WEIR_CORRUPTION_FULL").is_ok_and(|v| v == "1");
    // Sampled: every bit of each digit (a flipped digit is what still parses), one bit of each
    // other byte.
    let bits = (0..original.len() * 8)
        .filter(|bit| full || original[bit / 8].is_ascii_digit() || bit % 8 == (bit / 8) % 8);
    for bit in bits {
        fresh_copy(&fixture.dir, &scratch);
        let mut bytes = original.clone();
        bytes[bit / 8] ^= 1 << (bit % 8);
        std::fs::write(scratch.join(file), &bytes).unwrap();
        let context =
            format!("{} with bit {bit} flipped: {:?}", file.display(), String::from_utf8_lossy(&bytes));
        let after = seen(&scratch);
        cases += 1;
        if after != before && detected(&after, &scratch.join(file)) {
            found += 1;
            std::fs::write(scratch.join(file), &original).unwrap();
            assert_eq!(seen(&scratch), before, "{context}: restoring the file must restore the log");
        } else {
            assert_eq!(after, before, "{context}: accepted, so the log must show what it showed before");
        }
    }
    eprintln!("{}: {cases} bits flipped, {found} detected", file.display());
    (cases, found)
}

#[test]
fn every_flipped_bit_of_a_group_offsets_file_fails_that_group_or_changes_nothing() {
    let file = Path::new("groups").join(format!("{GROUP}.json"));
    let (cases, found) = flip_every_bit(&file, |after, path| {
        after.groups[0] == Err(path.to_owned()) && after.groups[1].is_ok() && after.topic.is_ok()
    });
    assert!(found > cases / 2, "most flips change the offsets and must be detected");
}

#[test]
fn every_flipped_bit_of_topic_json_makes_the_topic_unavailable_or_changes_nothing() {
    let file = Path::new("topics").join(TOPIC).join("topic.json");
    let (cases, found) = flip_every_bit(&file, |after, path| after.topic == Err(path.to_owned()));
    assert!(found > cases / 2, "most flips change the configuration and must be detected");
}

#[test]
fn every_flipped_bit_of_the_recorded_log_start_and_end_offsets_changes_nothing() {
    for name in ["log-start-offset", "end-offset"] {
        let file = Path::new("topics").join(TOPIC).join(DAMAGED.to_string()).join(name);
        // Damage is reported as a warning and recovery falls back to what the segments say.
        flip_every_bit(&file, |_, _| false);
    }
}
