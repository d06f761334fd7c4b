//! Readers beside a writer: [`Log::open_read_only`] works while another `Log` (here, of this
//! process; the lock is per open handle, so it excludes a second writer here as it does in
//! another process) owns the directory, sees only complete batches, follows new records, segments
//! and retention, and never writes a byte.

#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use weir_log::{AutoOffsetReset, ConsumerConfig, Durability, Error, Log, LogOptions, Record, TopicConfig};

fn options() -> LogOptions {
    LogOptions::default().durability(Durability::None)
}

fn records(from: u64, n: u64) -> Vec<Record> {
    (from..from + n).map(|i| Record::new(format!("record-{i}")).with_timestamp(i as i64)).collect()
}

fn values(records: &[weir_log::StoredRecord]) -> Vec<String> {
    records.iter().map(|r| String::from_utf8_lossy(&r.value).into_owned()).collect()
}

/// Every file under `dir` with its bytes, and every directory.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Option<Vec<u8>>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                out.insert(path.clone(), None);
                stack.push(path);
            } else {
                out.insert(path.clone(), Some(std::fs::read(&path).unwrap()));
            }
        }
    }
    out
}

fn segment_file(dir: &Path, topic: &str, partition: u32) -> PathBuf {
    let mut logs: Vec<PathBuf> =
        std::fs::read_dir(dir.join("topics").join(topic).join(partition.to_string()))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "log"))
            .collect();
    logs.sort();
    logs.pop().unwrap()
}

#[test]
fn a_reader_opens_beside_a_live_writer_and_sees_what_it_published() {
    let dir = tempfile::tempdir().unwrap();
    let writer = Log::open(dir.path(), options()).unwrap();
    let topic = writer.create_topic("t", TopicConfig::with_partitions(2)).unwrap();
    topic.append(0, &records(0, 3)).unwrap();
    assert!(matches!(Log::open(dir.path(), options()), Err(Error::Locked { .. })));

    let reader = Log::open_read_only(dir.path()).unwrap();
    assert!(reader.is_read_only());
    assert_eq!(reader.topics(), vec!["t".to_owned()]);
    let seen = reader.topic("t").unwrap();
    assert_eq!(seen.end_offset(0).unwrap(), 3);
    assert_eq!(values(&seen.read(0, 0, 1 << 20).unwrap()), ["record-0", "record-1", "record-2"]);
    assert_eq!(reader.describe_topic("t").unwrap().partitions[1].end_offset, 0);

    // New records, and a topic created after the reader opened, appear.
    topic.append(0, &records(3, 2)).unwrap();
    writer.create_topic("later", TopicConfig::with_partitions(1)).unwrap().append(0, &records(0, 1)).unwrap();
    reader.catch_up().unwrap();
    assert_eq!(seen.end_offset(0).unwrap(), 5);
    assert_eq!(values(&seen.read(0, 3, 1 << 20).unwrap()), ["record-3", "record-4"]);
    assert_eq!(reader.topic("later").unwrap().end_offset(0).unwrap(), 1);

    // A deleted topic goes.
    writer.delete_topic("later").unwrap();
    reader.catch_up().unwrap();
    assert!(matches!(reader.topic("later"), Err(Error::UnknownTopic(_))));
}

#[test]
fn a_reader_is_woken_by_records_the_writer_appends() {
    let dir = tempfile::tempdir().unwrap();
    let writer = Log::open(dir.path(), options()).unwrap();
    let topic = writer.create_topic("t", TopicConfig::with_partitions(1)).unwrap();
    topic.append(0, &records(0, 1)).unwrap();
    let reader = Log::open_read_only(dir.path()).unwrap();
    let config = ConsumerConfig::new("t").auto_offset_reset(AutoOffsetReset::Earliest);
    let mut consumer = reader.consumer(config).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
    rt.block_on(async {
        assert_eq!(values(&consumer.poll(Duration::from_secs(10)).await.unwrap()[0].records), ["record-0"]);
        let appender = std::thread::spawn(move || topic.append(0, &records(1, 2)).unwrap());
        // Woken by the reader's background look at the directory; no catch_up call here.
        let mut got = Vec::new();
        while got.len() < 2 {
            for batch in consumer.poll(Duration::from_secs(10)).await.unwrap() {
                got.extend(values(&batch.records));
            }
        }
        assert_eq!(got, ["record-1", "record-2"]);
        appender.join().unwrap();
    });
}

#[test]
fn a_batch_being_written_is_not_visible_until_complete_and_the_reader_cuts_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (whole, before) = {
        let writer = Log::open(dir.path(), options()).unwrap();
        let topic = writer.create_topic("t", TopicConfig::with_partitions(1)).unwrap();
        topic.append(0, &records(0, 2)).unwrap();
        let path = segment_file(dir.path(), "t", 0);
        let before = std::fs::metadata(&path).unwrap().len();
        topic.append(0, &records(2, 1)).unwrap();
        (std::fs::read(&path).unwrap(), before as usize)
    };
    // The last batch half written, as a reader may find it while the writer's write is under way.
    let path = segment_file(dir.path(), "t", 0);
    let half = before + (whole.len() - before) / 2;
    std::fs::write(&path, &whole[..half]).unwrap();
    let files = snapshot(dir.path());

    let reader = Log::open_read_only(dir.path()).unwrap();
    let topic = reader.topic("t").unwrap();
    assert_eq!(topic.end_offset(0).unwrap(), 2);
    assert_eq!(values(&topic.read(0, 0, 1 << 20).unwrap()), ["record-0", "record-1"]);
    assert!(reader.recovery().is_empty());
    assert_eq!(snapshot(dir.path()), files, "a reader changed the log directory");

    // The write completes: the batch appears.
    std::fs::write(&path, &whole).unwrap();
    reader.catch_up().unwrap();
    assert_eq!(topic.end_offset(0).unwrap(), 3);
    assert_eq!(values(&topic.read(0, 2, 1 << 20).unwrap()), ["record-2"]);
}

#[test]
fn a_reader_writes_nothing_and_refuses_changes() {
    let dir = tempfile::tempdir().unwrap();
    let writer = Log::open(dir.path(), options()).unwrap();
    let topic = writer.create_topic("t", TopicConfig::with_partitions(2)).unwrap();
    topic.append(0, &records(0, 5)).unwrap();
    let mut member = writer.consumer(ConsumerConfig::new("t").group("g")).unwrap();
    member.poll_now().unwrap();
    member.commit().unwrap();
    writer.flush().unwrap();
    let files = snapshot(dir.path());

    let reader = Log::open_read_only(dir.path()).unwrap();
    let seen = reader.topic("t").unwrap();
    let read_only = |e: Error| matches!(e, Error::ReadOnly { .. });
    assert!(read_only(seen.append(0, &records(0, 1)).unwrap_err()));
    assert!(read_only(reader.create_topic("u", TopicConfig::default()).unwrap_err()));
    assert!(read_only(reader.delete_topic("t").unwrap_err()));
    let group = reader.describe_group("g").unwrap();
    assert_eq!(group.partitions.iter().map(|p| p.committed).collect::<Vec<_>>(), [Some(5), Some(0)]);
    let mut consumer = reader.consumer(ConsumerConfig::new("t").group("g")).unwrap();
    assert!(consumer.poll_now().unwrap().is_empty(), "resumes at the group's committed offsets");
    assert!(read_only(consumer.commit().unwrap_err()));
    reader.enforce_retention().unwrap();
    reader.flush().unwrap();
    drop((consumer, seen, reader));
    assert_eq!(snapshot(dir.path()), files, "a reader changed the log directory");

    // The writer's later commits are what the reader reports.
    let reader = Log::open_read_only(dir.path()).unwrap();
    topic.append(1, &records(0, 4)).unwrap();
    member.poll_now().unwrap();
    member.commit().unwrap();
    reader.catch_up().unwrap();
    let group = reader.describe_group("g").unwrap();
    assert_eq!(
        group.partitions.iter().map(|p| (p.committed, p.lag)).collect::<Vec<_>>(),
        [(Some(5), Some(0)), (Some(4), Some(0))]
    );
}

#[test]
fn segments_retention_deletes_under_a_reader_move_its_start_and_new_segments_appear() {
    let dir = tempfile::tempdir().unwrap();
    let writer = Log::open(dir.path(), options()).unwrap();
    let config = TopicConfig {
        segment_bytes: 4096,
        retention_bytes: Some(8192),
        index_interval_bytes: 128,
        ..TopicConfig::with_partitions(1)
    };
    let topic = writer.create_topic("t", config).unwrap();
    for _ in 0..20 {
        topic.append(0, &[Record::new(vec![b'x'; 200])]).unwrap();
    }
    let reader = Log::open_read_only(dir.path()).unwrap();
    let seen = reader.topic("t").unwrap();
    let first = seen.start_offset(0).unwrap();
    assert_eq!(seen.end_offset(0).unwrap(), 20);
    let config = ConsumerConfig::new("t").auto_offset_reset(AutoOffsetReset::Earliest);
    let mut consumer = reader.consumer(config).unwrap();

    for _ in 20..200 {
        topic.append(0, &[Record::new(vec![b'x'; 200])]).unwrap();
    }
    writer.enforce_retention().unwrap();
    reader.catch_up().unwrap();
    let start = seen.start_offset(0).unwrap();
    assert!(start > first, "retention deleted segments: start {first} → {start}");
    assert_eq!(start, topic.start_offset(0).unwrap());
    assert_eq!(seen.end_offset(0).unwrap(), 200);
    assert!(matches!(seen.read(0, first, 1 << 20), Err(Error::OffsetOutOfRange { .. })));
    assert_eq!(seen.describe().partitions[0].segments, topic.describe().partitions[0].segments);

    // A consumer positioned in deleted segments moves to the new start (the default reset).
    let mut got = Vec::new();
    loop {
        let batches = consumer.poll_now().unwrap();
        if batches.is_empty() {
            break;
        }
        got.extend(batches.into_iter().flat_map(|b| b.records).map(|r| r.offset));
    }
    assert!(got.first().is_some_and(|&o| o <= start), "{got:?}");
    assert_eq!(got.last(), Some(&199));
}

#[test]
fn a_reader_following_a_busy_writer_always_sees_a_prefix_of_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let writer = Log::open(dir.path(), options()).unwrap();
    let config =
        TopicConfig { segment_bytes: 4096, index_interval_bytes: 256, ..TopicConfig::with_partitions(1) };
    let topic = writer.create_topic("t", config).unwrap();
    let reader = Log::open_read_only(dir.path()).unwrap();
    let seen = reader.topic("t").unwrap();
    const TOTAL: u64 = 3000;
    let appender = std::thread::spawn(move || {
        let mut next = 0;
        while next < TOTAL {
            let n = (next % 7 + 1).min(TOTAL - next);
            topic.append(0, &records(next, n)).unwrap();
            next += n;
        }
    });
    let mut position = 0;
    while position < TOTAL {
        reader.catch_up().unwrap();
        let end = seen.end_offset(0).unwrap();
        assert!(end >= position && end <= TOTAL);
        while position < end {
            for r in seen.read(0, position, 1 << 16).unwrap() {
                assert_eq!((r.offset, &r.value[..]), (position, format!("record-{position}").as_bytes()));
                position += 1;
            }
        }
    }
    appender.join().unwrap();
    assert!(seen.describe().partitions[0].segments > 1);
}

#[test]
fn a_reader_takes_no_lock_a_writer_opens_beside_it() {
    let dir = tempfile::tempdir().unwrap();
    drop(Log::open(dir.path(), options()).unwrap());
    let reader = Log::open_read_only(dir.path()).unwrap();
    let writer = Log::open(dir.path(), options()).unwrap();
    writer.create_topic("t", TopicConfig::with_partitions(1)).unwrap().append(0, &records(0, 1)).unwrap();
    reader.catch_up().unwrap();
    assert_eq!(reader.topic("t").unwrap().end_offset(0).unwrap(), 1);
}
