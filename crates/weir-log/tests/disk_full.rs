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
