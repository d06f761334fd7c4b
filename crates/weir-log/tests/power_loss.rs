//! Power loss under `Durability::EveryBatch`: whatever was not synced may be gone, and nothing
//! acknowledged is lost. And a failed `fdatasync` poisons the partition, as documented.
//!
//! The log's fault-injection hook (`weir_log::fault`) reports every sync with the file's length
//! when it started. Appends run in this process; after acknowledged appends, a copy of the
//! directory is damaged as a power loss could leave it: every segment file cut to a random
//! length no shorter than its last synced length, then zeros or random bytes where unsynced
//! data was, and the never-synced index files cut or filled with garbage. The copy is opened,
//! every acknowledged record must be there, intact, and a second open must agree with the
//! first. `WEIR_POWER_CUTS` sets the number of simulated power losses (default 60);
//! `WEIR_POWER_SEED` replays a run (the seed is in every failure message).

#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use common::{Rng, files_with_ext, fresh_copy, truncate};
use weir_log::{Durability, Error, Log, LogOptions, Record, Topic, TopicConfig};

const TOPIC: &str = "power";
const PARTITIONS: u32 = 2;

fn options() -> LogOptions {
    LogOptions::default().durability(Durability::EveryBatch)
}

fn config() -> TopicConfig {
    TopicConfig {
        partitions: PARTITIONS,
        segment_bytes: 8 << 10,
        max_batch_bytes: 2 << 10,
        index_interval_bytes: 256,
        ..TopicConfig::default()
    }
}

fn record(partition: u32, offset: u64) -> Record {
    let mut value = format!("pl-{partition}-{offset}-").into_bytes();
    value.resize(value.len() + (offset as usize * 131) % 90, b'0' + (offset % 10) as u8);
    Record::new(value).with_key(format!("k{}", offset % 7)).with_timestamp(offset as i64)
}

/// The longest length each file had when a sync of it started (and so is durable once the sync
/// returned).
type Synced = Arc<Mutex<HashMap<PathBuf, u64>>>;

fn segment_dirs(dir: &Path) -> Vec<PathBuf> {
    (0..PARTITIONS).map(|p| dir.join("topics").join(TOPIC).join(p.to_string())).collect()
}

/// Damages the copy at `copy` of the log at `original` as a power loss could.
fn lose_power(original: &Path, copy: &Path, synced: &HashMap<PathBuf, u64>, rng: &mut Rng) {
    for (from, to) in segment_dirs(original).iter().zip(segment_dirs(copy)) {
        for path in files_with_ext(&to, "log").into_iter().chain(files_with_ext(&to, "index")) {
            let name = path.file_name().unwrap();
            let is_index = path.extension().is_some_and(|e| e == "index");
            let durable = if is_index { 0 } else { synced.get(&from.join(name)).copied().unwrap_or(0) };
            let len = std::fs::metadata(&path).unwrap().len();
            assert!(len >= durable, "{} is shorter than what was synced", path.display());
            if len == durable {
                continue;
            }
            let keep = rng.range(durable, len);
            truncate(&path, keep);
            let extra = rng.range(0, 300) as usize;
            match rng.below(3) {
                0 => {}
                1 => common::append_bytes(&path, &vec![0; extra]),
                _ => common::append_bytes(&path, &rng.bytes(extra)),
            }
        }
    }
}

/// What a reader sees of a partition: the end offset and every record, read skipping damage.
fn view(topic: &Topic, partition: u32) -> (u64, Vec<(u64, bytes::Bytes)>, usize) {
    let end = topic.end_offset(partition).unwrap();
    let (mut offset, mut records, mut skipped) = (topic.start_offset(partition).unwrap(), Vec::new(), 0);
    while offset < end {
        let read = topic.read_skipping_damage(partition, offset, 1 << 16).unwrap();
        skipped += read.skipped.len();
        let next = read.records.last().map(|r| r.offset + 1).max(read.skipped.last().map(|d| d.offsets.end));
        records.extend(read.records.into_iter().map(|r| (r.offset, r.value)));
        offset = next.unwrap();
    }
    (end, records, skipped)
}

#[test]
fn under_every_batch_no_acknowledged_record_is_lost_to_power_loss() {
    let seed: u64 = std::env::var("WEIR_POWER_SEED").map_or_else(
        |_| std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64,
        |s| s.parse().unwrap(),
    );
    let cuts: usize = std::env::var("WEIR_POWER_CUTS").map_or(60, |s| s.parse().unwrap());
    let mut rng = Rng(seed);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    let synced: Synced = Arc::default();
    let scratch = tmp.path().join("after-power-loss");
    // When armed, the hook copies the directory just before the next sync of a segment: the
    // power goes out between the write of an append and its `fdatasync`.
    let armed = Arc::new(Mutex::new(false));
    let taken: Arc<Mutex<Option<HashMap<PathBuf, u64>>>> = Arc::default();
    let (seen, arm, copy, source) = (synced.clone(), armed.clone(), taken.clone(), dir.clone());
    let target = scratch.clone();
    let _hook = weir_log::fault::on_sync(
        &dir,
        Arc::new(move |path: &Path, len: u64| {
            let mut seen = seen.lock().unwrap();
            if path.extension().is_some_and(|e| e == "log") && std::mem::take(&mut *arm.lock().unwrap()) {
                fresh_copy(&source, &target);
                *copy.lock().unwrap() = Some(seen.clone());
            }
            let entry = seen.entry(path.to_owned()).or_insert(0);
            *entry = (*entry).max(len);
            Ok(())
        }),
    );
    let log = Log::open(&dir, options()).unwrap();
    let mut topic = log.create_topic(TOPIC, config()).unwrap();
    let mut acked = [0u64; PARTITIONS as usize];
    let mut damaged_opens = 0;
    let mut mid_append = 0;
    for cut in 0..cuts {
        if cut > 0 && cut % 50 == 0 {
            // Start over now and then, so that long runs stay linear in time.
            log.delete_topic(TOPIC).unwrap();
            synced.lock().unwrap().clear();
            topic = log.create_topic(TOPIC, config()).unwrap();
            acked = [0; PARTITIONS as usize];
        }
        // A few appends, each acknowledged when it returns; the power goes out during the last
        // one (before one of its syncs) or after it.
        let appends = rng.range(1, 4);
        let mut acked_before_loss = acked;
        for k in 0..appends {
            let p = rng.below(u64::from(PARTITIONS)) as u32;
            if k + 1 == appends {
                *armed.lock().unwrap() = rng.below(3) > 0;
                acked_before_loss = acked;
            }
            let next = acked[p as usize];
            let records: Vec<Record> = (next..next + rng.range(1, 40)).map(|o| record(p, o)).collect();
            let appended = topic.append(p, &records).unwrap();
            assert_eq!(appended.base_offset, next);
            acked[p as usize] += appended.count;
        }
        *armed.lock().unwrap() = false;
        let (acked, durable) = match taken.lock().unwrap().take() {
            Some(durable) => {
                mid_append += 1;
                (acked_before_loss, durable)
            }
            None => {
                fresh_copy(&dir, &scratch);
                (acked, synced.lock().unwrap().clone())
            }
        };
        let context = format!("power loss {cut} (seed {seed}, acknowledged {acked:?})");
        lose_power(&dir, &scratch, &durable, &mut rng);

        let mut views = Vec::new();
        for open in 0..2 {
            let recovered =
                Log::open(&scratch, options()).unwrap_or_else(|e| panic!("{context}: open {open}: {e}"));
            if open == 1 {
                assert!(
                    recovered.recovery().iter().all(|r| r.truncated_bytes == 0),
                    "{context}: the second open cut again: {:?}",
                    recovered.recovery()
                );
            } else {
                damaged_opens += usize::from(!recovered.recovery().is_empty());
            }
            let t = recovered.topic(TOPIC).unwrap();
            let mut partitions = Vec::new();
            for p in 0..PARTITIONS {
                let acked = acked[p as usize];
                let got = t.read(p, 0, usize::MAX).unwrap_or_else(|e| panic!("{context}: read {p}: {e}"));
                assert!(
                    got.len() as u64 >= acked,
                    "{context}: partition {p} holds {} of {acked} acknowledged",
                    got.len()
                );
                for (k, r) in got.iter().enumerate().take(acked as usize) {
                    assert_eq!(r.offset, k as u64, "{context}: offsets of partition {p}");
                    assert_eq!(r.value, record(p, r.offset).value, "{context}: value at {p}/{}", r.offset);
                }
                partitions.push(view(&t, p));
            }
            views.push(partitions);
        }
        assert_eq!(views[0], views[1], "{context}: two opens of the same bytes disagree");
    }
    eprintln!(
        "{cuts} simulated power losses ({mid_append} between an append's write and its fdatasync), \
         seed {seed}: {damaged_opens} opens found something to recover"
    );
    assert!(damaged_opens > 0, "no simulated power loss left anything to recover (seed {seed})");
}

#[test]
fn a_failed_fdatasync_poisons_the_partition_until_the_log_is_reopened() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    let failing = dir.join("topics").join(TOPIC).join("1");
    let fail = Arc::new(Mutex::new(false));
    let armed = fail.clone();
    let _hook = weir_log::fault::on_sync(
        &failing,
        Arc::new(move |path: &Path, _| {
            if *armed.lock().unwrap() && path.extension().is_some_and(|e| e == "log") {
                return Err(std::io::Error::other("injected fdatasync failure"));
            }
            Ok(())
        }),
    );
    let log = Log::open(&dir, options()).unwrap();
    let topic = log.create_topic(TOPIC, config()).unwrap();
    let first: Vec<Record> = (0..10).map(|o| record(1, o)).collect();
    assert_eq!(topic.append(1, &first).unwrap().count, 10);

    *fail.lock().unwrap() = true;
    let failed = topic.append(1, &[record(1, 10)]);
    assert!(
        matches!(&failed, Err(Error::Io { op: "fdatasync segment", path, .. }) if path.starts_with(&failing)),
        "{failed:?}"
    );
    // Refused from now on, even once the disk works again; other partitions are unaffected.
    *fail.lock().unwrap() = false;
    let refused = topic.append(1, &[record(1, 10)]);
    assert!(matches!(&refused, Err(Error::Poisoned { topic: t, partition: 1 }) if t == TOPIC), "{refused:?}");
    assert_eq!(topic.append(0, &[record(0, 0)]).unwrap().base_offset, 0);
    // The unsynced append was never published to readers.
    assert_eq!(topic.end_offset(1).unwrap(), 10);
    assert_eq!(topic.read(1, 0, usize::MAX).unwrap().len(), 10);
    drop(topic);
    drop(log);

    // Reopening recovers the partition from disk; appends work again.
    let log = Log::open(&dir, options()).unwrap();
    let topic = log.topic(TOPIC).unwrap();
    let end = topic.end_offset(1).unwrap();
    assert!(end >= 10, "acknowledged records lost: end {end}");
    let got = topic.read(1, 0, usize::MAX).unwrap();
    for r in &got {
        assert_eq!(r.value, record(1, r.offset).value);
    }
    assert_eq!(topic.append(1, &[record(1, end)]).unwrap().base_offset, end);
}
