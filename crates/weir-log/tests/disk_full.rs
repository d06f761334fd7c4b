//! A write that the file system refuses (here: the file-size limit, which fails writes with
//! `EFBIG` just as a full disk fails them with `ENOSPC`) is an error, not a panic, and leaves the
//! log readable, appendable once space returns, and intact on reopen.

#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

use std::process::Command;

use weir_log::{Durability, Error, Log, LogOptions, Record, TopicConfig};

const CHILD_ENV: &str = "WEIR_DISK_FULL_CHILD_DIR";
/// The child's file-size limit, in KiB (`ulimit -f` counts 1024-byte blocks).
const LIMIT_KIB: u64 = 64;

fn record(i: u64) -> Record {
    Record::new(format!("{i:0>200}")).with_timestamp(i as i64)
}

/// Runs in a child process under `ulimit -f`: appends until the file system says no.
#[test]
fn disk_full_child() {
    let Ok(dir) = std::env::var(CHILD_ENV) else { return };
    let log = Log::open(&dir, LogOptions::default().durability(Durability::EveryBatch)).unwrap();
    let topic = log.create_topic("t", TopicConfig::default()).unwrap();
    let mut acked = 0u64;
    let err = loop {
        match topic.append(0, &(acked..acked + 10).map(record).collect::<Vec<_>>()) {
            Ok(a) => acked = a.base_offset + a.count,
            Err(e) => break e,
        }
        assert!(acked < 100_000, "the file-size limit never hit");
    };
    assert!(matches!(err, Error::Io { .. }), "{err}");
    // Everything acknowledged is still readable, and the failed batch left no trace.
    assert_eq!(topic.end_offset(0).unwrap(), acked);
    let mut offset = 0;
    while offset < acked {
        let got = topic.read(0, offset, 1 << 20).unwrap();
        for r in &got {
            assert_eq!(r.value, record(r.offset).value);
        }
        offset = got.last().unwrap().offset + 1;
    }
    // Retrying the same batch fails the same way, without a panic or a poisoned partition.
    let retry = topic.append(0, &(acked..acked + 10).map(record).collect::<Vec<_>>());
    assert!(matches!(retry, Err(Error::Io { .. })), "{retry:?}");
    println!("acked {acked}");
}

#[test]
fn a_refused_write_is_an_error_and_the_log_stays_intact() {
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    // An ignored SIGXFSZ is inherited across exec, so the write fails with EFBIG instead of
    // killing the process.
    let script =
        format!("trap '' XFSZ; ulimit -f {LIMIT_KIB}; exec \"$0\" --exact disk_full_child --nocapture");
    let out =
        Command::new("bash").arg("-c").arg(script).arg(&exe).env(CHILD_ENV, dir.path()).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "child failed: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let acked: u64 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("acked "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no ack count in: {stdout}"));
    assert!(acked > 0);

    // With the limit gone, reopen: nothing to repair, everything there, appends continue.
    let log = Log::open(dir.path(), LogOptions::default()).unwrap();
    assert!(log.recovery().is_empty(), "{:?}", log.recovery());
    let topic = log.topic("t").unwrap();
    assert_eq!(topic.end_offset(0).unwrap(), acked);
    assert_eq!(topic.append(0, &[record(acked)]).unwrap().base_offset, acked);
    assert_eq!(topic.read(0, acked, 1 << 20).unwrap()[0].value, record(acked).value);
}

const PARTIAL_CHILD_ENV: &str = "WEIR_DISK_FULL_PARTIAL_CHILD_DIR";

/// Checks that a failed append or send reported exactly what reached the log: `before` are the
/// partitions' end offsets before the call, `records` its input.
fn check_reported(topic: &weir_log::Topic, before: &[u64], records: &[Record], err: &Error) -> u64 {
    let appended = match err {
        Error::PartiallyAppended { appended, total, .. } => {
            assert_eq!(*total, records.len());
            appended.clone()
        }
        Error::Io { .. } => Vec::new(),
        other => panic!("unexpected error {other}"),
    };
    for (p, &start) in before.iter().enumerate() {
        let landed: Vec<_> = appended.iter().filter(|(_, pos)| pos.partition == p as u32).collect();
        let end = topic.end_offset(p as u32).unwrap();
        assert_eq!(end - start, landed.len() as u64, "partition {p}: reported {landed:?}, log grew to {end}");
        for (k, (i, pos)) in landed.iter().enumerate() {
            assert_eq!(pos.offset, start + k as u64);
            let stored = topic.read(p as u32, pos.offset, 1).unwrap();
            assert_eq!(stored[0].value, records[*i].value, "record {i} at {pos:?}");
        }
    }
    appended.len() as u64
}

/// Runs in a child process under `ulimit -f`: fills partition 2, then sends round-robin records
/// over all three partitions and appends multi-batch calls to partition 0, until both fail.
#[test]
fn disk_full_partial_child() {
    let Ok(dir) = std::env::var(PARTIAL_CHILD_ENV) else { return };
    let log = Log::open(&dir, LogOptions::default().durability(Durability::EveryBatch)).unwrap();
    let config = TopicConfig { partitions: 3, max_batch_bytes: 1024, ..TopicConfig::default() };
    let topic = log.create_topic("t", config).unwrap();
    let ends = |topic: &weir_log::Topic| (0..3).map(|p| topic.end_offset(p).unwrap()).collect::<Vec<_>>();
    let mut next = 0u64;
    let mut batch = |n: u64| {
        next += n;
        (next - n..next).map(record).collect::<Vec<_>>()
    };
    while topic.append(2, &batch(10)).is_ok() {}
    // Partitions 0 and 1 take their records; partition 2 refuses its own.
    let records = batch(30);
    let before = ends(&topic);
    let err = topic.send(&records).unwrap_err();
    assert!(matches!(err, Error::PartiallyAppended { .. }), "{err}");
    let mut reported = check_reported(&topic, &before, &records, &err);
    assert_eq!(reported, 20);
    // Appends of several batches each to partition 0 until one fails.
    let err = loop {
        let records = batch(40);
        let before = ends(&topic);
        match topic.append(0, &records) {
            Ok(_) => {}
            Err(e) => {
                reported += check_reported(&topic, &before, &records, &e);
                break e;
            }
        }
    };
    println!("failed with {err}");
    let total: u64 = ends(&topic).iter().sum();
    println!("total {total} reported-partial {reported}");
}

#[test]
fn a_partly_failed_send_reports_exactly_the_records_in_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let script = format!(
        "trap '' XFSZ; ulimit -f {LIMIT_KIB}; exec \"$0\" --exact disk_full_partial_child --nocapture"
    );
    let out = Command::new("bash")
        .arg("-c")
        .arg(script)
        .arg(&exe)
        .env(PARTIAL_CHILD_ENV, dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "child failed: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let total: u64 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("total ")?.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no total in: {stdout}"));
    // What the child saw is what a reopen finds.
    let log = Log::open(dir.path(), LogOptions::default()).unwrap();
    let topic = log.topic("t").unwrap();
    assert_eq!((0..3).map(|p| topic.end_offset(p).unwrap()).sum::<u64>(), total);
}
