//! File handles are opened on use and cached with a bound: a log with far more partitions than
//! the process may open files creates, appends to, reads, and reopens its topic. A topic that
//! cannot be opened leaves the log's other topics usable.
//!
//! The many-partitions case runs in a child process (this test binary, only
//! [`many_partitions_child`] selected) under `ulimit -n`.

#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

use std::process::Command;

use weir_log::{Durability, Error, Log, LogOptions, Record, TopicConfig};

const CHILD_DIR_ENV: &str = "WEIR_HANDLES_CHILD_DIR";
/// The child's limit on open files.
const NOFILE: u32 = 256;
/// Partitions of the child's topic: far more than `NOFILE`. `WEIR_HANDLES_PARTITIONS` overrides
/// (up to 10 000, the documented maximum).
const PARTITIONS: u32 = 2_000;

fn partitions() -> u32 {
    std::env::var("WEIR_HANDLES_PARTITIONS").ok().and_then(|n| n.parse().ok()).unwrap_or(PARTITIONS)
}

fn record(p: u32, i: u64) -> Record {
    Record::new(format!("p{p}-r{i}")).with_timestamp(i as i64)
}

/// The child: creates the topic, appends two records to every partition (the second after a
/// pass over all others, so every active segment is reopened), reads them back, reopens the log
/// and reads and appends again.
#[test]
fn many_partitions_child() {
    let Ok(dir) = std::env::var(CHILD_DIR_ENV) else { return };
    let n = partitions();
    let options =
        LogOptions::default().durability(Durability::Interval(std::time::Duration::from_millis(50)));
    {
        let log = Log::open(&dir, options.clone()).unwrap();
        let topic = log.create_topic("wide", TopicConfig::with_partitions(n)).unwrap();
        for i in 0..2 {
            for p in 0..n {
                assert_eq!(topic.append(p, &[record(p, i)]).unwrap().base_offset, i);
            }
        }
        for p in 0..n {
            let got = topic.read(p, 0, 1 << 20).unwrap();
            assert_eq!(got.len(), 2, "partition {p}");
            assert_eq!(got[1].value, record(p, 1).value);
        }
        log.flush().unwrap();
    }
    let log = Log::open(&dir, options).unwrap();
    let topic = log.topic("wide").unwrap();
    for p in 0..n {
        assert_eq!(topic.append(p, &[record(p, 2)]).unwrap().base_offset, 2);
        assert_eq!(topic.read(p, 0, 1 << 20).unwrap().len(), 3, "partition {p}");
    }
    println!("done {n}");
}

#[test]
fn a_topic_with_far_more_partitions_than_open_files_allowed_works() {
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let script = format!("ulimit -n {NOFILE} && exec \"$0\" --exact many_partitions_child --nocapture");
    let out =
        Command::new("sh").arg("-c").arg(script).arg(&exe).env(CHILD_DIR_ENV, dir.path()).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains(&format!("done {}", partitions())),
        "child failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_topic_that_cannot_be_opened_leaves_the_others_usable() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = Log::open(dir.path(), LogOptions::default()).unwrap();
        for name in ["good", "bad"] {
            log.create_topic(name, TopicConfig::default()).unwrap().append(0, &[Record::new(name)]).unwrap();
        }
    }
    std::fs::write(dir.path().join("topics/bad/topic.json"), b"{ not json").unwrap();

    let log = Log::open(dir.path(), LogOptions::default()).unwrap();
    let good = log.topic("good").unwrap();
    assert_eq!(good.append(0, &[Record::new("more")]).unwrap().base_offset, 1);
    assert_eq!(good.read(0, 0, 1 << 20).unwrap().len(), 2);
    let err = log.topic("bad").unwrap_err();
    assert!(matches!(&err, Error::TopicUnavailable { topic, .. } if topic == "bad"), "{err}");
    let unavailable = log.unavailable_topics();
    assert_eq!(unavailable.len(), 1);
    assert!(matches!(&*unavailable[0].1, Error::Metadata { .. }), "{}", unavailable[0].1);
    assert!(matches!(log.create_topic("bad", TopicConfig::default()), Err(Error::TopicExists(_))));

    // The broken topic can be deleted, and then created anew.
    log.delete_topic("bad").unwrap();
    assert!(log.unavailable_topics().is_empty());
    assert!(!dir.path().join("topics/bad").exists());
    log.create_topic("bad", TopicConfig::default()).unwrap();
}
