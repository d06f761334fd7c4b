//! A real crash: a child process appends under `Durability::EveryBatch` from two threads and is
//! killed with SIGKILL at a random moment, again and again on the same directory (every other
//! round the kill may land while the child opens and recovers the log; in the others, while it
//! appends). After every kill the log reopens with every acknowledged record present and intact,
//! offsets dense from 0, and appends continuing at the end.
//!
//! The child is this test binary itself, run with only [`crash_child`] selected and
//! `WEIR_CRASH_CHILD_DIR` set. Its records carry values derived from their partition and offset,
//! so the parent can check every record it finds, acknowledged or not. Set `WEIR_CRASH_SEED` to
//! replay a failing run (the seed is in every failure message).

#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::Rng;
use weir_log::{Durability, Log, LogOptions, Record, Topic, TopicConfig};
use weir_testkit::ChildTest;

/// The child process: `crash_child`, given its directory.
const CHILD: ChildTest = ChildTest::new("crash_child", "WEIR_CRASH_CHILD_DIR");
const CHILD_SEED_ENV: &str = "WEIR_CRASH_CHILD_SEED";
const TOPIC: &str = "crash";
const PARTITIONS: u32 = 2;
const ROUNDS: usize = 24;
/// The child gives up on its own after this long, should the parent be gone.
const CHILD_LIFETIME: Duration = Duration::from_secs(30);

fn config() -> TopicConfig {
    // Small segments and batches: appends often span several batches and a roll, so kills land
    // in the middle of multi-batch appends and of rolls too.
    TopicConfig {
        partitions: PARTITIONS,
        segment_bytes: 64 << 10,
        max_batch_bytes: 16 << 10,
        index_interval_bytes: 1024,
        ..TopicConfig::default()
    }
}

fn options() -> LogOptions {
    LogOptions::default().durability(Durability::EveryBatch)
}

/// The record at `offset` of `partition`: its value names both and is padded to a length that
/// varies with the offset; its timestamp is the offset.
fn record(partition: u32, offset: u64) -> Record {
    let mut value = format!("rec-{partition}-{offset}-").into_bytes();
    value.resize(value.len() + (offset as usize * 7919) % 300, b'.');
    Record::new(value).with_timestamp(offset as i64)
}

/// The child: appends to both partitions, one thread each, and acknowledges every append on
/// stdout, until it is killed. Does nothing unless run by [`acknowledged_records_survive_sigkill`].
#[test]
fn crash_child() {
    let Some(dir) = CHILD.value() else { return };
    let seed: u64 = std::env::var(CHILD_SEED_ENV).unwrap().parse().unwrap();
    let log = Log::open(&dir, options()).unwrap();
    let topic = log.topic_or_create(TOPIC, config()).unwrap();
    // The test harness may have printed "test crash_child ... " without a newline.
    println!();
    let started = Instant::now();
    let writers: Vec<_> = (0..PARTITIONS)
        .map(|p| {
            let topic = topic.clone();
            std::thread::spawn(move || {
                let mut rng = Rng(seed ^ u64::from(p));
                let mut next = topic.end_offset(p).unwrap();
                while started.elapsed() < CHILD_LIFETIME {
                    let n = rng.range(1, 200);
                    let records: Vec<Record> = (next..next + n).map(|o| record(p, o)).collect();
                    let appended = topic.append(p, &records).unwrap();
                    assert_eq!(appended.base_offset, next);
                    next += appended.count;
                    let mut out = std::io::stdout().lock();
                    // A closed pipe means the parent is gone: stop.
                    if writeln!(out, "ack {p} {} {}", appended.base_offset, appended.count)
                        .and_then(|()| out.flush())
                        .is_err()
                    {
                        return;
                    }
                }
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
}

/// An acknowledged append: partition, base offset, count.
type Ack = (u32, u64, u64);

/// Reads the child's acknowledgements until its stdout closes, saying so on `first_ack` when the
/// first arrives. A line cut short by the kill (no newline) is ignored.
fn read_acks(out: impl std::io::Read, first_ack: mpsc::Sender<()>) -> Vec<Ack> {
    let mut reader = BufReader::new(out);
    let mut acks = Vec::new();
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => return acks,
            Ok(_) if line.last() != Some(&b'\n') => return acks,
            Ok(_) => {}
        }
        let text = String::from_utf8_lossy(&line);
        let Some(rest) = text.trim().strip_prefix("ack ") else { continue };
        let fields: Vec<u64> = rest.split(' ').map(|f| f.parse().unwrap()).collect();
        acks.push((fields[0] as u32, fields[1], fields[2]));
        if acks.len() == 1 {
            let _ = first_ack.send(());
        }
    }
}

/// Reads `from..end` of a partition and checks every record's offset, value and timestamp.
fn check_partition(topic: &Topic, partition: u32, from: u64, end: u64, context: &str) {
    let mut offset = from;
    while offset < end {
        let got = topic.read(partition, offset, 1 << 20).unwrap_or_else(|e| panic!("{context}: read: {e}"));
        assert!(!got.is_empty(), "{context}: nothing at {partition}/{offset} below the end {end}");
        for r in &got {
            assert_eq!(r.offset, offset, "{context}: offsets not dense in partition {partition}");
            let want = record(partition, offset);
            assert_eq!(r.value, want.value, "{context}: value at {partition}/{offset}");
            assert_eq!(Some(r.timestamp), want.timestamp, "{context}: timestamp at {partition}/{offset}");
            offset += 1;
        }
    }
    assert_eq!(offset, end, "{context}: read past the end of partition {partition}");
}

/// When the parent kills the child.
#[derive(Debug, Clone, Copy)]
enum Kill {
    /// This long after starting it: the kill may land while it opens and recovers the log.
    AfterStart(Duration),
    /// This long after its first acknowledgement: the kill lands while it appends.
    AfterFirstAck(Duration),
}

/// Runs the child on `dir`, kills it as `kill` says, and returns its acknowledgements.
fn run_child(dir: &Path, seed: u64, round: usize, kill: Kill) -> Vec<Ack> {
    let stderr_path = dir.with_extension(format!("child-{round}.stderr"));
    let mut child = CHILD
        .command(dir)
        .env(CHILD_SEED_ENV, seed.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (first_ack, first_ack_seen) = mpsc::channel();
    let reader = std::thread::spawn(move || read_acks(stdout, first_ack));
    match kill {
        Kill::AfterStart(delay) => std::thread::sleep(delay),
        Kill::AfterFirstAck(delay) => {
            // No ack in time (or the child died) shows up in the checks below.
            let _ = first_ack_seen.recv_timeout(Duration::from_secs(20));
            std::thread::sleep(delay);
        }
    }
    child.kill().unwrap();
    let status = child.wait().unwrap();
    let acks = reader.join().unwrap();
    let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
    assert_eq!(status.signal(), Some(9), "round {round}, seed {seed}: the child ended by itself: {stderr}");
    acks
}

#[test]
fn acknowledged_records_survive_sigkill() {
    let seed: u64 = match std::env::var("WEIR_CRASH_SEED") {
        Ok(s) => s.parse().unwrap(),
        Err(_) => {
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
        }
    };
    let mut rng = Rng(seed);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    // Per partition: the end verified after the previous round (everything below it was checked
    // then; appends of a later round can only add to it).
    let mut verified = [0u64; PARTITIONS as usize];
    let mut rounds_with_acks = 0;
    for round in 0..ROUNDS {
        let delay = Duration::from_millis(rng.range(20, 300));
        let kill = if round % 2 == 0 { Kill::AfterStart(delay) } else { Kill::AfterFirstAck(delay / 2) };
        let acks = run_child(&dir, rng.next_u64(), round, kill);
        let context = format!("round {round} (child killed {kill:?}), seed {seed}");

        let log = Log::open(&dir, options()).unwrap();
        let topic = log.topic_or_create(TOPIC, config()).unwrap();
        let mut acked_end = verified;
        for &(p, base, count) in &acks {
            // Each partition has one writer, so its acks follow each other without gaps.
            assert_eq!(base, acked_end[p as usize], "{context}: acks of partition {p} not contiguous");
            acked_end[p as usize] = base + count;
        }
        let both_acked = acked_end.iter().zip(&verified).all(|(a, v)| a > v);
        if matches!(kill, Kill::AfterFirstAck(_)) {
            assert!(!acks.is_empty(), "{context}: the child acknowledged nothing");
        }
        rounds_with_acks += usize::from(both_acked);
        let last_round = round + 1 == ROUNDS;
        for p in 0..PARTITIONS {
            let end = topic.end_offset(p).unwrap();
            let acked = acked_end[p as usize];
            assert!(end >= acked, "{context}: partition {p} ends at {end}, but {acked} records were acked");
            assert_eq!(topic.start_offset(p).unwrap(), 0, "{context}");
            // Everything is checked in the last round; before that, what this round added and a
            // margin before it.
            let from = if last_round { 0 } else { verified[p as usize].saturating_sub(500) };
            check_partition(&topic, p, from, end, &context);
            // Appends continue at the end.
            let more: Vec<Record> = (end..end + 3).map(|o| record(p, o)).collect();
            let appended = topic.append(p, &more).unwrap();
            assert_eq!(appended.base_offset, end, "{context}: append after recovery, partition {p}");
            check_partition(&topic, p, end, end + 3, &context);
            verified[p as usize] = end + 3;
        }
    }
    assert!(
        rounds_with_acks >= ROUNDS / 4,
        "only {rounds_with_acks} of {ROUNDS} rounds acknowledged appends to both partitions (seed {seed})"
    );
}
