//! The log checked against a model: random sequences of appends, reads by offset and by
//! timestamp, group commits, reopens and retention, with every answer compared to a plain
//! in-memory `Vec` of records per partition.
//!
//! What the model knows: the records of each partition in offset order (key, value, headers,
//! timestamp), the offset each append started at, the log start offset (only ever raised, by
//! retention), and the committed offset of each group and partition. What it checks: every read
//! returns a non-empty run of exactly the model's records from the requested offset (unless at
//! the end), not stopping before `max_bytes` worth of batches; out-of-range reads fail naming the
//! range; `offset_for_timestamp` is the first stored offset with a timestamp `>=` the probe;
//! oversized records are refused whole; committed offsets survive reopen; a clean reopen cuts
//! nothing.

#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use proptest::prelude::*;
use weir_log::{
    AutoOffsetReset, ConsumerConfig, Durability, Error, Log, LogOptions, Record, StoredRecord, Topic,
    TopicConfig,
};

const TOPIC: &str = "model";
const PARTITIONS: u32 = 2;
const GROUPS: [&str; 2] = ["g1", "g.two"];
const MAX_BATCH_BYTES: u32 = 1024;

/// A record as generated, with every field set (the model cannot predict wall-clock times).
#[derive(Debug, Clone)]
struct Rec {
    key: Option<Vec<u8>>,
    value: Vec<u8>,
    headers: Vec<(String, Option<Vec<u8>>)>,
    timestamp: i64,
}

impl Rec {
    fn to_record(&self) -> Record {
        Record {
            key: self.key.clone().map(Bytes::from),
            value: Bytes::from(self.value.clone()),
            headers: self
                .headers
                .iter()
                .map(|(k, v)| weir_log::Header { key: k.clone(), value: v.clone().map(Bytes::from) })
                .collect(),
            timestamp: Some(self.timestamp),
        }
    }

    /// An upper bound on the record's encoded size in a batch, counting every varint as 10 bytes
    /// and a batch header for the record alone.
    fn max_encoded_len(&self) -> usize {
        let headers: usize =
            self.headers.iter().map(|(k, v)| 20 + k.len() + v.as_ref().map_or(0, Vec::len)).sum();
        weir_log::BATCH_HEADER_LEN
            + 10
            + 1
            + 30
            + 10
            + self.key.as_ref().map_or(0, Vec::len)
            + 10
            + self.value.len()
            + headers
    }

    fn assert_matches(&self, got: &StoredRecord, context: &str) {
        let want = self.to_record();
        assert_eq!(got.key, want.key, "{context}: key at {}", got.offset);
        assert_eq!(got.value, want.value, "{context}: value at {}", got.offset);
        assert_eq!(got.headers, want.headers, "{context}: headers at {}", got.offset);
        assert_eq!(got.timestamp, self.timestamp, "{context}: timestamp at {}", got.offset);
    }
}

#[derive(Debug, Clone)]
enum Op {
    Append {
        partition: u32,
        records: Vec<Rec>,
    },
    /// An append with one record too large for a batch at `at`: refused whole.
    AppendOversized {
        partition: u32,
        records: Vec<Rec>,
        at: usize,
    },
    /// `offset` is taken modulo `end + 3`, so some reads are past the end (and some, after
    /// retention, below the start).
    Read {
        partition: u32,
        offset: u64,
        max_bytes: usize,
    },
    ReadByTimestamp {
        partition: u32,
        timestamp: i64,
    },
    /// Commits `offset` (modulo `end + 3`) for `partition` through a consumer of `group`.
    Commit {
        group: usize,
        partition: u32,
        offset: u64,
    },
    Reopen,
    Retention,
}

#[derive(Debug, Clone)]
struct Setup {
    durability: Durability,
    index_interval_bytes: u64,
    retention_bytes: Option<u64>,
}

fn timestamp() -> impl Strategy<Value = i64> {
    // Mostly a narrow range (so probes hit equal and out-of-order timestamps), sometimes
    // anywhere in the i64 range.
    prop_oneof![8 => -50i64..1_000, 1 => any::<i64>()]
}

fn rec() -> impl Strategy<Value = Rec> {
    let header = (
        prop_oneof![
            Just(String::new()),
            Just("h".to_owned()),
            Just("trace-id".to_owned()),
            Just("ключ".to_owned())
        ],
        proptest::option::of(proptest::collection::vec(any::<u8>(), 0..8)),
    );
    (
        proptest::option::of(proptest::collection::vec(any::<u8>(), 0..16)),
        prop_oneof![
            1 => proptest::collection::vec(any::<u8>(), 0..40),
            1 => proptest::collection::vec(any::<u8>(), 40..400),
        ],
        proptest::collection::vec(header, 0..3),
        timestamp(),
    )
        .prop_map(|(key, value, headers, timestamp)| Rec { key, value, headers, timestamp })
}

fn op() -> impl Strategy<Value = Op> {
    let partition = 0..PARTITIONS;
    prop_oneof![
        8 => (partition.clone(), proptest::collection::vec(rec(), 1..30))
            .prop_map(|(partition, records)| Op::Append { partition, records }),
        1 => (partition.clone(), proptest::collection::vec(rec(), 0..5), any::<prop::sample::Index>())
            .prop_map(|(partition, records, at)| {
                let at = at.index(records.len() + 1);
                Op::AppendOversized { partition, records, at }
            }),
        6 => (partition.clone(), any::<u64>(), prop_oneof![Just(0usize), 1usize..600, Just(1 << 20)])
            .prop_map(|(partition, offset, max_bytes)| Op::Read { partition, offset, max_bytes }),
        4 => (partition.clone(), prop_oneof![timestamp(), Just(i64::MIN), Just(i64::MAX)])
            .prop_map(|(partition, timestamp)| Op::ReadByTimestamp { partition, timestamp }),
        2 => (0..GROUPS.len(), partition.clone(), any::<u64>())
            .prop_map(|(group, partition, offset)| Op::Commit { group, partition, offset }),
        2 => Just(Op::Reopen),
        1 => Just(Op::Retention),
    ]
}

fn setup() -> impl Strategy<Value = Setup> {
    (
        prop_oneof![
            Just(Durability::None),
            Just(Durability::EveryBatch),
            Just(Durability::Interval(Duration::from_millis(5)))
        ],
        prop_oneof![Just(64u64), Just(256), Just(4096)],
        prop_oneof![Just(None), Just(Some(3_000u64))],
    )
        .prop_map(|(durability, index_interval_bytes, retention_bytes)| Setup {
            durability,
            index_interval_bytes,
            retention_bytes,
        })
}

#[derive(Default)]
struct Model {
    records: Vec<Vec<Rec>>,
    /// Per partition, the first offset of every append (for the `max_bytes` bound).
    append_starts: Vec<Vec<u64>>,
    start: Vec<u64>,
    committed: BTreeMap<(usize, u32), u64>,
}

impl Model {
    fn end(&self, p: u32) -> u64 {
        self.records[p as usize].len() as u64
    }
}

struct Harness {
    dir: tempfile::TempDir,
    setup: Setup,
    log: Option<Log>,
    topic: Option<Topic>,
    model: Model,
}

impl Harness {
    fn new(setup: Setup) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(dir.path(), LogOptions::default().durability(setup.durability)).unwrap();
        let config = TopicConfig {
            partitions: PARTITIONS,
            segment_bytes: 4096,
            index_interval_bytes: setup.index_interval_bytes,
            max_batch_bytes: MAX_BATCH_BYTES,
            retention_bytes: setup.retention_bytes,
            ..TopicConfig::default()
        };
        let topic = log.create_topic(TOPIC, config).unwrap();
        let model = Model {
            records: vec![Vec::new(); PARTITIONS as usize],
            append_starts: vec![Vec::new(); PARTITIONS as usize],
            start: vec![0; PARTITIONS as usize],
            committed: BTreeMap::new(),
        };
        Harness { dir, setup, log: Some(log), topic: Some(topic), model }
    }

    fn log(&self) -> &Log {
        self.log.as_ref().unwrap()
    }

    fn topic(&self) -> &Topic {
        self.topic.as_ref().unwrap()
    }

    /// Picks up log start offsets moved by retention (explicit, at open, or on a roll), checking
    /// they only move forward, never past the end, and only as far as the size limit allows.
    fn sync_start_offsets(&mut self, context: &str) {
        for p in 0..PARTITIONS {
            let start = self.topic().start_offset(p).unwrap();
            let (old, end) = (self.model.start[p as usize], self.model.end(p));
            assert!(
                old <= start && start <= end,
                "{context}: start offset of {p} went {old} -> {start} (end {end})"
            );
            if start > old {
                let limit = self.setup.retention_bytes.expect("start moved without retention");
                let size = self.topic().describe().partitions[p as usize].size_bytes;
                assert!(size >= limit, "{context}: retention left {size} bytes, less than {limit}");
            }
            self.model.start[p as usize] = start;
        }
    }

    fn check_extent(&self, context: &str) {
        for p in 0..PARTITIONS {
            assert_eq!(
                self.topic().end_offset(p).unwrap(),
                self.model.end(p),
                "{context}: end offset of {p}"
            );
            assert_eq!(
                self.topic().start_offset(p).unwrap(),
                self.model.start[p as usize],
                "{context}: start of {p}"
            );
        }
    }

    fn check_committed(&self, context: &str) {
        for (g, group) in GROUPS.iter().enumerate() {
            let described = match self.log().describe_group(group) {
                Ok(d) => d.partitions,
                // A group that never committed (and has no members) may be unknown.
                Err(Error::UnknownGroup(name)) if !self.model.committed.keys().any(|k| k.0 == g) => {
                    assert_eq!(name, *group, "{context}");
                    Vec::new()
                }
                Err(e) => panic!("{context}: describe {group}: {e}"),
            };
            for p in 0..PARTITIONS {
                let want = self.model.committed.get(&(g, p)).copied();
                let got =
                    described.iter().find(|d| d.topic == TOPIC && d.partition == p).and_then(|d| d.committed);
                assert_eq!(got, want, "{context}: committed offset of {group} for partition {p}");
            }
        }
    }

    fn offset(&self, p: u32, raw: u64) -> u64 {
        raw % (self.model.end(p) + 3)
    }

    fn apply(&mut self, op: &Op, step: usize) {
        let context = format!("step {step}: {op:?}");
        match op {
            Op::Append { partition, records } => {
                let p = *partition;
                let input: Vec<Record> = records.iter().map(Rec::to_record).collect();
                let appended = self.topic().append(p, &input).unwrap();
                assert_eq!(appended.partition, p, "{context}");
                assert_eq!(appended.base_offset, self.model.end(p), "{context}: base offset");
                assert_eq!(appended.count, records.len() as u64, "{context}: count");
                self.model.append_starts[p as usize].push(appended.base_offset);
                self.model.records[p as usize].extend(records.iter().cloned());
                // Retention may run when a segment rolls.
                self.sync_start_offsets(&context);
            }
            Op::AppendOversized { partition, records, at } => {
                let mut input: Vec<Record> = records.iter().map(Rec::to_record).collect();
                input.insert(*at, Record::new(vec![7u8; MAX_BATCH_BYTES as usize]).with_timestamp(1));
                let result = self.topic().append(*partition, &input);
                assert!(
                    matches!(
                        &result,
                        Err(Error::RecordTooLarge { topic, partition: p, max, .. })
                            if topic == TOPIC && p == partition && *max == MAX_BATCH_BYTES as usize
                    ),
                    "{context}: {result:?}"
                );
            }
            Op::Read { partition, offset, max_bytes } => {
                self.check_read(*partition, *offset, *max_bytes, &context)
            }
            Op::ReadByTimestamp { partition, timestamp } => {
                let p = *partition;
                let start = self.model.start[p as usize] as usize;
                let want = self.model.records[p as usize][start..]
                    .iter()
                    .position(|r| r.timestamp >= *timestamp)
                    .map(|i| (start + i) as u64);
                assert_eq!(self.topic().offset_for_timestamp(p, *timestamp).unwrap(), want, "{context}");
            }
            Op::Commit { group, partition, offset } => {
                let offset = self.offset(*partition, *offset);
                let config = ConsumerConfig::new(TOPIC)
                    .group(GROUPS[*group])
                    .auto_offset_reset(AutoOffsetReset::Earliest);
                let mut consumer = self.log().consumer(config).unwrap();
                for p in 0..PARTITIONS {
                    let at = if p == *partition {
                        offset
                    } else {
                        self.model.committed.get(&(*group, p)).copied().unwrap_or(0)
                    };
                    consumer.seek(TOPIC, p, at).unwrap();
                    // A position past the end is committed as the end.
                    self.model.committed.insert((*group, p), at.min(self.model.end(p)));
                }
                consumer.commit().unwrap();
                drop(consumer);
                self.check_committed(&context);
            }
            Op::Reopen => {
                self.topic = None;
                self.log = None;
                let log = Log::open(self.dir.path(), LogOptions::default().durability(self.setup.durability))
                    .unwrap();
                assert!(
                    log.recovery().is_empty(),
                    "{context}: a clean reopen cut data: {:?}",
                    log.recovery()
                );
                self.topic = Some(log.topic(TOPIC).unwrap());
                self.log = Some(log);
                self.sync_start_offsets(&context);
                self.check_committed(&context);
                // A consumer of a group starts where the group committed, if that is still stored.
                for (g, group) in GROUPS.iter().enumerate() {
                    let config =
                        ConsumerConfig::new(TOPIC).group(*group).auto_offset_reset(AutoOffsetReset::Earliest);
                    let consumer = self.log().consumer(config).unwrap();
                    for p in 0..PARTITIONS {
                        let (start, end) = (self.model.start[p as usize], self.model.end(p));
                        let want = match self.model.committed.get(&(g, p)) {
                            Some(&c) if (start..=end).contains(&c) => c,
                            _ => start,
                        };
                        assert_eq!(
                            consumer.position(TOPIC, p),
                            Some(want),
                            "{context}: {group} position of {p}"
                        );
                    }
                }
            }
            Op::Retention => {
                self.log().enforce_retention().unwrap();
                self.sync_start_offsets(&context);
            }
        }
        self.check_extent(&context);
    }

    fn check_read(&self, p: u32, raw_offset: u64, max_bytes: usize, context: &str) {
        let offset = self.offset(p, raw_offset);
        let (start, end) = (self.model.start[p as usize], self.model.end(p));
        let result = self.topic().read(p, offset, max_bytes);
        if offset < start || offset > end {
            assert!(
                matches!(
                    &result,
                    Err(Error::OffsetOutOfRange { topic, partition, offset: o, earliest, latest })
                        if topic == TOPIC && *partition == p && *o == offset && *earliest == start && *latest == end
                ),
                "{context}: read at {offset} outside {start}..={end}: {result:?}"
            );
            return;
        }
        let got = result.unwrap_or_else(|e| panic!("{context}: read at {offset}: {e}"));
        if offset == end {
            assert!(got.is_empty(), "{context}: read at the end returned {} records", got.len());
            return;
        }
        assert!(!got.is_empty(), "{context}: empty read at {offset} below the end {end}");
        let model = &self.model.records[p as usize];
        for (k, r) in got.iter().enumerate() {
            assert_eq!(r.offset, offset + k as u64, "{context}: offsets");
            assert!(r.offset < end, "{context}: read past the end");
            model[r.offset as usize].assert_matches(r, context);
        }
        let last = got.last().unwrap().offset;
        if last + 1 < end {
            // A read stops early only after at least `max_bytes` of batches. The batches returned
            // hold at most the records from the start of the append holding `offset` on.
            let starts = &self.model.append_starts[p as usize];
            let first = starts[starts.partition_point(|&s| s <= offset) - 1];
            let bound: usize = model[first as usize..=last as usize].iter().map(Rec::max_encoded_len).sum();
            assert!(
                bound >= max_bytes,
                "{context}: read from {offset} stopped at {last} (end {end}) with at most {bound} of {max_bytes} bytes"
            );
        }
    }

    /// Reads every partition from its start to its end and compares it with the model.
    fn check_everything(&self, context: &str) {
        for p in 0..PARTITIONS {
            let (mut offset, end) = (self.model.start[p as usize], self.model.end(p));
            while offset < end {
                let got = self.topic().read(p, offset, 2048).unwrap();
                assert!(!got.is_empty(), "{context}: empty read at {offset}");
                for r in &got {
                    assert_eq!(r.offset, offset, "{context}: offsets");
                    self.model.records[p as usize][offset as usize].assert_matches(r, context);
                    offset += 1;
                }
            }
        }
    }
}

/// What the model found first: timestamps far apart in one batch (their deltas from the batch's
/// first timestamp overflow `i64`) must round-trip like any others.
#[test]
fn timestamps_anywhere_in_the_i64_range_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), LogOptions::default().durability(Durability::None)).unwrap();
    let topic = log.create_topic(TOPIC, TopicConfig::default()).unwrap();
    let times = [i64::MAX, i64::MIN, 0, -1, i64::MIN + 1, i64::MAX - 1];
    let records: Vec<Record> = times.iter().map(|&t| Record::new("x").with_timestamp(t)).collect();
    topic.append(0, &records).unwrap();
    let got: Vec<i64> = topic.read(0, 0, 1 << 20).unwrap().iter().map(|r| r.timestamp).collect();
    assert_eq!(got, times);
    assert_eq!(topic.offset_for_timestamp(0, i64::MAX).unwrap(), Some(0));
    assert_eq!(topic.offset_for_timestamp(0, 1).unwrap(), Some(0));
    assert_eq!(topic.offset_for_timestamp(0, i64::MIN).unwrap(), Some(0));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn the_log_agrees_with_a_vec_of_records(setup in setup(), ops in proptest::collection::vec(op(), 1..60)) {
        let mut h = Harness::new(setup);
        for (step, op) in ops.iter().enumerate() {
            h.apply(op, step);
        }
        h.check_everything("after the last step");
        h.apply(&Op::Reopen, ops.len());
        h.check_everything("after a final reopen");
    }
}
