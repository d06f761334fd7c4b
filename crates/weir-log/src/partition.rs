//! A partition: an ordered list of segments, one writer at a time, any number of readers.
//!
//! Locks and what they guard:
//! - `writer` (mutex): the active segment's tail, the next offset, the encode buffer. Held for
//!   the encode and the write of one append; never across an `fdatasync` of a group commit.
//! - `segments` (rwlock): the list of segments. Readers hold it only to clone the `Arc`s they
//!   need; the writer takes it to add a segment on roll, retention to drop old ones.
//! - `sync` (mutex): one group commit at a time. Whoever holds it `fdatasync`s everything
//!   written so far; appenders queued behind it find their data already durable and return.
//!
//! Metrics (`metrics`, set at most once when metrics are registered) cost one `OnceLock::get` per
//! append call and per `fdatasync` when absent; see the `metrics` module.
//!
//! The recorded end offset (`recovery::END_OFFSET`, see the `recovery` module) only ever holds
//! an offset already durable under the durability mode in force, except on a clean close under
//! `Durability::None`: it is written at a roll once the sealed segment is synced, by the
//! background flush, and on close; never per append. `recorded_end` (a mutex, held across the
//! write and never while taking another lock but the writer's, which may be held around it)
//! keeps one write at a time and the value monotonic.
//!
//! Publication order (what makes lock-free reads safe): the writer writes the bytes, stores the
//! segment's size, then its visible size, then the high watermark; readers load the high
//! watermark first, then the visible size, and read no further than either.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError, RwLock};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::batch::{self, EncodedBatch};
use crate::config::{Durability, TimestampType, TopicConfig};
use crate::damage::DamagedRange;
use crate::error::{Error, Result};
use crate::fsutil;
use crate::metrics::{PartitionMetrics, Written};
use crate::record::{Record, StoredRecord};
use crate::recovery;
use crate::segment::{Origin, Segment};
use crate::topic::RecordPosition;

/// Where an append landed: its records got offsets `base_offset .. base_offset + count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// The partition written to.
    pub partition: u32,
    /// Offset of the first record.
    pub base_offset: u64,
    /// Number of records appended.
    pub count: u64,
}

/// What recovery found and changed in one partition when the log was opened (see the crate
/// docs, "Recovery").
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PartitionRecovery {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: u32,
    /// Bytes cut off the end of the partition's last segment: a torn tail, the part of a write
    /// that a crash interrupted. Nothing else is ever cut.
    pub truncated_bytes: u64,
    /// Records lost to damage found on open, kept on disk: damaged batches (bit rot, holes) and
    /// offsets no segment holds. Reads stop at them unless told to skip
    /// ([`DamagePolicy`](crate::DamagePolicy)). Listed on every open while the damage is there.
    pub damaged: Vec<DamagedRange>,
    /// Stray segment files (copies whose name does not match their contents, or whose offsets
    /// lie inside another segment's) moved aside, with their new paths under the partition's
    /// `quarantine/` directory, which is never read.
    pub quarantined: Vec<PathBuf>,
    /// The partition's directory was missing or held no segment: its records are lost, and it
    /// was recreated empty, starting at `end_offset`, the higher of its recorded end offset and
    /// the highest offset any consumer group had committed for it, so no offset is handed out
    /// twice.
    pub recreated: bool,
    /// The log end offset after recovery.
    pub end_offset: u64,
}

impl PartitionRecovery {
    /// Whether recovery found the partition intact and changed nothing.
    pub fn is_clean(&self) -> bool {
        self.truncated_bytes == 0 && self.damaged.is_empty() && self.quarantined.is_empty() && !self.recreated
    }
}

/// A snapshot of a partition's extent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct PartitionInfo {
    /// The partition number.
    pub partition: u32,
    /// The earliest offset still stored (the log start offset).
    pub start_offset: u64,
    /// The offset the next record will get (the high watermark: readable up to here).
    pub end_offset: u64,
    /// Bytes on disk in segments.
    pub size_bytes: u64,
    /// Number of segments.
    pub segments: usize,
}

struct Writer {
    active: Arc<Segment>,
    next_offset: u64,
    buf: Vec<u8>,
    batches: Vec<EncodedBatch>,
    /// Written since the last `fdatasync`.
    dirty: bool,
    /// Segments sealed without an `fdatasync` (every mode but `EveryBatch` rolls without one),
    /// and whether the directory has entries not yet synced: the next flush syncs them.
    unsynced: Vec<Arc<Segment>>,
    dir_unsynced: bool,
    /// The largest timestamp stored: on a [`TimestampType::LogAppendTime`] topic, the stamp
    /// of the last append, which the next one never goes below.
    last_stamp: i64,
}

/// The segments a partition opens with, its known damage, log start and active segment.
struct View {
    segments: Vec<Arc<Segment>>,
    damaged: Vec<DamagedRange>,
    start: u64,
    active: Arc<Segment>,
}

pub(crate) struct Partition {
    pub(crate) origin: Origin,
    dir: PathBuf,
    config: Arc<TopicConfig>,
    durability: Durability,
    writer: Mutex<Writer>,
    segments: RwLock<Vec<Arc<Segment>>>,
    /// Damaged ranges known so far (found by recovery or by reads), non-empty, by offset.
    damaged: RwLock<Vec<DamagedRange>>,
    high_watermark: AtomicU64,
    log_start: AtomicU64,
    durable: AtomicU64,
    /// The highest offset an `fdatasync` made durable since the log was opened (0 before one).
    synced_end: AtomicU64,
    /// The end offset recorded in the partition's end-offset file.
    recorded_end: Mutex<u64>,
    /// Whether an `fdatasync` is in flight; `synced` is signalled when one ends.
    sync: Mutex<bool>,
    synced: Condvar,
    poisoned: AtomicBool,
    deleted: AtomicBool,
    /// Retention by size and age (`u64::MAX`: none), set from `config` and changed by
    /// [`Partition::set_retention`].
    retention_bytes: AtomicU64,
    retention_ms: AtomicU64,
    /// A reader's view of a partition another process writes (see [`Partition::open_read_only`]).
    read_only: bool,
    /// Woken (all waiters) whenever the high watermark of any partition of the topic moves.
    notify: Arc<Notify>,
    /// Metric handles, set once by `Log::register_metrics` (or at creation after it).
    pub(crate) metrics: OnceLock<PartitionMetrics>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Partition {
    /// Opens the partition directory and recovers its segments (see the `recovery` module).
    /// `existing` is `None` when the partition is being created, else the highest offset any
    /// consumer group committed for it.
    pub(crate) fn open(
        dir: PathBuf,
        origin: Origin,
        config: Arc<TopicConfig>,
        durability: Durability,
        notify: Arc<Notify>,
        existing: Option<u64>,
    ) -> Result<(Partition, PartitionRecovery)> {
        let recovered = recovery::recover(&dir, &origin, config.index_interval_bytes, existing)?;
        let (segments, report, recorded_end) = (recovered.segments, recovered.report, recovered.recorded_end);
        let Some(active) = segments.last().cloned() else {
            return Err(Error::io("recover partition", &dir)(std::io::ErrorKind::NotFound.into()));
        };
        let view = View { segments, damaged: recovered.damaged, start: recovered.start_offset, active };
        let partition =
            Partition::assemble(origin, dir, config, durability, view, recorded_end, notify, false);
        Ok((partition, report))
    }

    /// Opens a read-only view of a partition another process may be writing: what its files
    /// hold now, up to the last complete batch, without recovery or any write (see
    /// [`recovery::catch_up`]). [`Partition::catch_up`] moves the view on. Fails if the
    /// partition has no segment yet (a topic being created).
    pub(crate) fn open_read_only(
        dir: PathBuf,
        origin: Origin,
        config: Arc<TopicConfig>,
        notify: Arc<Notify>,
    ) -> Result<Partition> {
        let mut segments = Vec::new();
        let damaged = recovery::catch_up(&dir, &origin, config.index_interval_bytes, &mut segments)?;
        let (Some(first), Some(active)) = (segments.first().cloned(), segments.last().cloned()) else {
            return Err(Error::io("read partition", &dir)(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "no segment yet (the topic is being created)",
            )));
        };
        let damaged = damaged.into_iter().filter(|r| !r.offsets.is_empty()).collect();
        let view = View { segments, damaged, start: first.base_offset, active };
        Ok(Partition::assemble(origin, dir, config, Durability::None, view, 0, notify, true))
    }

    #[allow(clippy::too_many_arguments)]
    fn assemble(
        origin: Origin,
        dir: PathBuf,
        config: Arc<TopicConfig>,
        durability: Durability,
        view: View,
        recorded_end: u64,
        notify: Arc<Notify>,
        read_only: bool,
    ) -> Partition {
        let next_offset = view.active.next_offset();
        let last_stamp = view.segments.iter().chain([&view.active]).map(|s| s.max_timestamp()).max();
        Partition {
            origin,
            dir,
            retention_bytes: AtomicU64::new(config.retention_bytes.unwrap_or(u64::MAX)),
            retention_ms: AtomicU64::new(config.retention_ms.unwrap_or(u64::MAX)),
            config,
            durability,
            writer: Mutex::new(Writer {
                active: view.active,
                next_offset,
                buf: Vec::new(),
                batches: Vec::new(),
                dirty: false,
                unsynced: Vec::new(),
                dir_unsynced: false,
                last_stamp: last_stamp.unwrap_or(i64::MIN),
            }),
            segments: RwLock::new(view.segments),
            damaged: RwLock::new(view.damaged),
            high_watermark: AtomicU64::new(next_offset),
            log_start: AtomicU64::new(view.start),
            durable: AtomicU64::new(next_offset),
            synced_end: AtomicU64::new(0),
            recorded_end: Mutex::new(recorded_end),
            sync: Mutex::new(false),
            synced: Condvar::new(),
            poisoned: AtomicBool::new(false),
            deleted: AtomicBool::new(false),
            read_only,
            notify,
            metrics: OnceLock::new(),
        }
    }

    /// Moves a read-only view on to what the writer has published since: new batches, new
    /// segments, segments deleted by retention. Returns whether the end offset moved. Never
    /// writes; a partition directory that is gone (its topic deleted) changes nothing.
    pub(crate) fn catch_up(&self) -> Result<bool> {
        // The writer's lock serializes catch-ups (a read-only view has no writer).
        let mut w = lock(&self.writer);
        let mut segments = self.segments();
        let found = match recovery::catch_up(
            &self.dir,
            &self.origin,
            self.config.index_interval_bytes,
            &mut segments,
        ) {
            Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                return Ok(false);
            }
            other => other?,
        };
        let (Some(first), Some(last)) = (segments.first().cloned(), segments.last().cloned()) else {
            return Ok(false);
        };
        for range in found {
            self.remember(range);
        }
        let end = last.next_offset();
        w.active = last;
        w.next_offset = end;
        *self.segments.write().unwrap_or_else(PoisonError::into_inner) = segments;
        self.log_start.store(first.base_offset, Ordering::Release);
        let moved = self.high_watermark.fetch_max(end, Ordering::AcqRel) < end;
        if moved {
            self.notify.notify_waiters();
        }
        Ok(moved)
    }

    fn read_only_error(&self, op: &'static str) -> Error {
        Error::ReadOnly { dir: self.dir.clone(), op }
    }

    pub(crate) fn id(&self) -> u32 {
        self.origin.partition
    }

    fn segments(&self) -> Vec<Arc<Segment>> {
        self.segments.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    pub(crate) fn start_offset(&self) -> u64 {
        self.log_start.load(Ordering::Acquire)
    }

    pub(crate) fn end_offset(&self) -> u64 {
        self.high_watermark.load(Ordering::Acquire)
    }

    pub(crate) fn info(&self) -> PartitionInfo {
        let segments = self.segments();
        PartitionInfo {
            partition: self.id(),
            start_offset: self.start_offset(),
            end_offset: self.end_offset(),
            size_bytes: segments.iter().map(|s| s.size()).sum(),
            segments: segments.len(),
        }
    }

    fn poisoned_error(&self) -> Error {
        Error::Poisoned { topic: self.origin.topic.clone(), partition: self.id() }
    }

    fn poison(&self, err: Error) -> Error {
        self.poisoned.store(true, Ordering::Release);
        tracing::error!(topic = %self.origin.topic, partition = self.id(), error = %err, "partition poisoned");
        err
    }

    /// Appends `records` as one or more batches; see [`Topic::append`](crate::Topic::append).
    pub(crate) fn append(&self, records: &[Record], now_ms: i64) -> Result<Appended> {
        let Some(metrics) = self.metrics.get() else {
            return self.append_unmetered(records, now_ms, &mut Written::default());
        };
        let start = Instant::now();
        let mut written = Written::default();
        let result = self.append_unmetered(records, now_ms, &mut written);
        metrics.appended(written, start.elapsed());
        result
    }

    /// [`Partition::append`] without metrics; `written` follows what reached the segment files.
    fn append_unmetered(&self, records: &[Record], now_ms: i64, written: &mut Written) -> Result<Appended> {
        if self.read_only {
            return Err(self.read_only_error("append"));
        }
        if self.poisoned.load(Ordering::Acquire) {
            return Err(self.poisoned_error());
        }
        let mut guard = lock(&self.writer);
        let w = &mut *guard;
        if self.deleted.load(Ordering::Acquire) {
            return Err(Error::UnknownTopic(self.origin.topic.clone()));
        }
        if self.poisoned.load(Ordering::Acquire) {
            return Err(self.poisoned_error());
        }
        let base_offset = w.next_offset;
        if records.is_empty() {
            return Ok(Appended { partition: self.id(), base_offset, count: 0 });
        }
        w.buf.clear();
        w.batches.clear();
        let max = self.config.max_batch_bytes as usize;
        let log_append_time = self.config.timestamp_type == TimestampType::LogAppendTime;
        let now_ms = if log_append_time {
            // The clock read under the writer's lock, never below the last append's stamp: an
            // append waiting for the lock is stamped when it gets it, so stamps rise with
            // offsets, and no record is stamped before a record ahead of it.
            w.last_stamp = crate::topic::now_ms().max(w.last_stamp);
            w.last_stamp
        } else {
            now_ms
        };
        batch::encode(records, base_offset, now_ms, log_append_time, max, &mut w.buf, &mut w.batches)
            .map_err(|size| Error::RecordTooLarge {
                topic: self.origin.topic.clone(),
                partition: self.id(),
                size,
                max,
            })?;

        // Write runs of batches that fit the active segment, rolling between them.
        let mut rolled = false;
        let result = self.write_runs(w, base_offset, &mut rolled, written);
        let end = w.next_offset;
        drop(guard);
        if let Err(err) = result {
            if end == base_offset {
                return Err(err);
            }
            // Batches of this call already written stay (they are whole and valid); report
            // exactly which records they hold, once they are as durable as an acknowledged append.
            if self.durability == Durability::EveryBatch {
                self.sync_to(end)?;
            } else {
                self.notify.notify_waiters();
            }
            let positions = (0..end - base_offset)
                .map(|i| (i as usize, RecordPosition { partition: self.id(), offset: base_offset + i }));
            return Err(Error::PartiallyAppended {
                topic: self.origin.topic.clone(),
                total: records.len(),
                appended: positions.collect(),
                source: Box::new(err),
            });
        }
        if self.durability == Durability::EveryBatch {
            self.sync_to(end)?;
        } else {
            self.notify.notify_waiters();
        }
        if rolled && let Err(e) = self.enforce_retention(now_ms) {
            tracing::error!(topic = %self.origin.topic, partition = self.id(), error = %e, "retention after roll failed");
        }
        Ok(Appended { partition: self.id(), base_offset, count: end - base_offset })
    }

    /// Writes the encoded batches of `w` as runs that fit the active segment, rolling between
    /// them. On `Err`, the batches before the failing one are written (`w.next_offset` says how
    /// far).
    fn write_runs(
        &self,
        w: &mut Writer,
        base_offset: u64,
        rolled: &mut bool,
        written: &mut Written,
    ) -> Result<()> {
        let mut first = 0;
        while first < w.batches.len() {
            let run_start = w.batches[first].start;
            let first_len = (batch_end(&w.batches, w.buf.len(), first) - run_start) as u64;
            let full = w.active.size() + first_len > self.config.segment_bytes;
            if !w.active.is_empty() && (full || self.too_old(&w.active)) {
                self.roll(w)?;
                *rolled = true;
            }
            let room = self.config.segment_bytes.saturating_sub(w.active.size());
            let mut last = first;
            while last + 1 < w.batches.len()
                && (batch_end(&w.batches, w.buf.len(), last + 1) - run_start) as u64 <= room
            {
                last += 1;
            }
            let run_end = batch_end(&w.batches, w.buf.len(), last);
            let result = w.active.append(
                &w.buf[run_start..run_end],
                run_start,
                &w.batches[first..=last],
                self.config.index_interval_bytes,
            );
            if let Err((err, unknown)) = result {
                return Err(if unknown { self.poison(err) } else { err });
            }
            w.next_offset = w.active.next_offset();
            w.dirty = true;
            *written = Written { records: w.next_offset - base_offset, bytes: run_end as u64 };
            if self.durability != Durability::EveryBatch {
                w.active.publish();
                self.high_watermark.store(w.next_offset, Ordering::Release);
            }
            first = last + 1;
        }
        Ok(())
    }

    fn too_old(&self, segment: &Segment) -> bool {
        self.config.segment_ms.is_some_and(|ms| segment.opened.elapsed() >= Duration::from_millis(ms))
    }

    /// Seals the active segment and starts a new one at the next offset. Under `EveryBatch` the
    /// sealed segment and the directory are synced first; in the other modes the next flush
    /// syncs them (a roll every `segment_bytes` would otherwise cost a full `fdatasync` inside an
    /// append).
    fn roll(&self, w: &mut Writer) -> Result<()> {
        if self.durability == Durability::EveryBatch {
            self.sync_active(&w.active).map_err(|e| self.poison(e))?;
            w.dirty = false;
            self.synced_end.fetch_max(w.next_offset, Ordering::AcqRel);
            self.record_end(w.next_offset);
        } else {
            w.unsynced.push(w.active.clone());
        }
        w.active.seal();
        let segment = Arc::new(Segment::create(&self.dir, w.next_offset)?);
        if self.durability == Durability::EveryBatch {
            fsutil::sync_dir(&self.dir).map_err(|e| self.poison(e))?;
        } else {
            w.dir_unsynced = true;
        }
        self.segments.write().unwrap_or_else(PoisonError::into_inner).push(segment.clone());
        w.active = segment;
        tracing::debug!(topic = %self.origin.topic, partition = self.id(), base_offset = w.next_offset, "rolled segment");
        Ok(())
    }

    /// Makes everything up to offset `end` durable (group commit): if an `fdatasync` is in flight,
    /// wait for it, since it may cover `end`; otherwise sync everything written so far, covering
    /// every appender that wrote before it started. Under `EveryBatch`, then publishes to readers.
    fn sync_to(&self, end: u64) -> Result<()> {
        if self.durable.load(Ordering::Acquire) >= end {
            return Ok(());
        }
        let mut in_flight = lock(&self.sync);
        loop {
            if self.durable.load(Ordering::Acquire) >= end {
                return Ok(());
            }
            if self.poisoned.load(Ordering::Acquire) {
                return Err(self.poisoned_error());
            }
            if !*in_flight {
                break;
            }
            in_flight = self.synced.wait(in_flight).unwrap_or_else(PoisonError::into_inner);
        }
        *in_flight = true;
        drop(in_flight);
        let result = self.sync_written();
        *lock(&self.sync) = false;
        self.synced.notify_all();
        result
    }

    /// `fdatasync`s segments sealed since the last sync, the directory if it changed, and the
    /// active segment; then records what is durable. Called by one thread at a time.
    fn sync_written(&self) -> Result<()> {
        let (active, target, size, sealed, dir) = {
            let mut w = lock(&self.writer);
            w.dirty = false;
            let sealed = std::mem::take(&mut w.unsynced);
            let dir = std::mem::take(&mut w.dir_unsynced);
            (w.active.clone(), w.next_offset, w.active.size(), sealed, dir)
        };
        for segment in &sealed {
            segment.sync().map_err(|e| self.poison(e))?;
        }
        if dir {
            fsutil::sync_dir(&self.dir).map_err(|e| self.poison(e))?;
        }
        self.sync_active(&active).map_err(|e| self.poison(e))?;
        self.durable.fetch_max(target, Ordering::AcqRel);
        self.synced_end.fetch_max(target, Ordering::AcqRel);
        if !sealed.is_empty() {
            // Segments rolled since the last sync (every mode but `EveryBatch`): now durable.
            self.record_end(target);
        }
        if self.durability == Durability::EveryBatch {
            active.publish_up_to(size);
            self.high_watermark.fetch_max(target, Ordering::AcqRel);
            self.notify.notify_waiters();
        }
        Ok(())
    }

    /// `fdatasync`s the active segment (timed when metrics are registered).
    fn sync_active(&self, active: &Segment) -> Result<()> {
        crate::metrics::time_fsync(self.metrics.get(), || active.sync())
    }

    /// `fdatasync`s the partition if anything was written since the last one.
    pub(crate) fn flush(&self) -> Result<()> {
        let (dirty, end) = {
            let w = lock(&self.writer);
            (w.dirty, w.next_offset)
        };
        if dirty { self.sync_to(end) } else { Ok(()) }
    }

    /// Records `end` as the partition's durably reached end offset unless as high a value is
    /// recorded. A failure is logged, never returned: the record is a safety net for reopening
    /// (it lets recovery report a lost end of the log), not data, so it never fails an append.
    fn record_end(&self, end: u64) {
        if self.read_only {
            return;
        }
        let mut recorded = lock(&self.recorded_end);
        if end <= *recorded || self.deleted.load(Ordering::Acquire) {
            return;
        }
        match recovery::record_end(&self.dir, end) {
            Ok(()) => *recorded = end,
            Err(e) => tracing::warn!(
                topic = %self.origin.topic, partition = self.id(), end, error = %e,
                "could not record the end offset; recovery can tell a lost end of the log only up \
                 to the one recorded before"
            ),
        }
    }

    /// Records the end offset made durable by the last `fdatasync` (background flush).
    pub(crate) fn record_synced_end(&self) {
        self.record_end(self.synced_end.load(Ordering::Acquire));
    }

    /// Records the end offset on a clean close, after the final sync: what is durable, or under
    /// `Durability::None`, which never syncs on its own, everything written (a power loss before
    /// the operating system writes it back then turns the lost records into a reported gap).
    pub(crate) fn record_end_on_close(&self) {
        let end = match self.durability {
            Durability::None if !self.poisoned.load(Ordering::Acquire) => lock(&self.writer).next_offset,
            _ => self.synced_end.load(Ordering::Acquire),
        };
        self.record_end(end);
    }

    fn out_of_range(&self, offset: u64) -> Error {
        Error::OffsetOutOfRange {
            topic: self.origin.topic.clone(),
            partition: self.id(),
            offset,
            earliest: self.start_offset(),
            latest: self.end_offset(),
        }
    }

    /// Reads records from `offset` on, about `max_bytes` of batches (at least one batch if any
    /// record is available). Empty at the end of the partition. At a damaged range: with
    /// `skipped` (`DamagePolicy::Skip`), steps over it and adds it to `skipped`; without, returns
    /// the records before it, or fails with [`Error::Corrupt`] if there are none.
    pub(crate) fn read(
        &self,
        offset: u64,
        max_bytes: usize,
        out: &mut Vec<StoredRecord>,
        mut skipped: Option<&mut Vec<DamagedRange>>,
    ) -> Result<()> {
        let end = self.end_offset();
        if offset < self.start_offset() || offset > end {
            return Err(self.out_of_range(offset));
        }
        let segments = self.segments();
        let returned = out.len();
        let mut budget = max_bytes;
        let mut from = offset;
        while from < end && (budget > 0 || out.len() == returned) {
            let (holding, next_damage) = self.damage_near(from);
            if let Some(range) = holding {
                match skipped.as_deref_mut() {
                    Some(list) => {
                        tracing::warn!(
                            topic = %self.origin.topic, partition = self.id(), offsets = ?range.offsets,
                            file = %range.path.display(), reason = range.reason, "read skipped records lost to damage"
                        );
                        from = range.offsets.end;
                        list.push(range);
                        continue;
                    }
                    None if out.len() > returned => return Ok(()),
                    None => return Err(range.to_error()),
                }
            }
            let stop = next_damage.map_or(end, |s| s.min(end));
            let i = segments.partition_point(|s| s.base_offset <= from);
            let Some(segment) = i.checked_sub(1).map(|i| &segments[i]) else {
                return Err(self.out_of_range(from));
            };
            let before = out.len();
            let (read, damage) = match segment.read(&self.origin, from, stop, budget, out) {
                // Retention deleted the segment under a reader: its offsets are below the log
                // start now.
                Err(e) if self.deleted_under_reader(&e) => {
                    self.catch_up()?;
                    return Err(self.out_of_range(from));
                }
                other => other?,
            };
            budget = budget.saturating_sub(read);
            if let Some(last) = out[before..].last() {
                from = last.offset + 1;
            }
            if let Some(range) = damage {
                self.remember(range);
                continue;
            }
            if from >= stop || (budget == 0 && out.len() > returned) {
                continue;
            }
            match segments.get(i) {
                // The segment has nothing more below `stop`. If the next one starts later, these
                // offsets are in no segment (recovery lists such gaps, so this one appeared
                // since); if it starts here, the loop goes on in it.
                Some(next) if from >= segment.next_offset() && next.base_offset > from => {
                    self.remember(DamagedRange {
                        topic: self.origin.topic.clone(),
                        partition: self.id(),
                        offsets: from..next.base_offset,
                        path: self.dir.clone(),
                        bytes: 0..0,
                        reason: "no segment holds these offsets".to_owned(),
                    })
                }
                Some(_) if from >= segment.next_offset() => {}
                // Nothing more to read: never loop.
                _ => break,
            }
        }
        Ok(())
    }

    /// The known damaged range holding `offset`, and the start of the first one after it.
    fn damage_near(&self, offset: u64) -> (Option<DamagedRange>, Option<u64>) {
        let damaged = self.damaged.read().unwrap_or_else(PoisonError::into_inner);
        let holding = damaged.iter().find(|r| r.offsets.contains(&offset)).cloned();
        let next = damaged.iter().map(|r| r.offsets.start).filter(|&s| s > offset).min();
        (holding, next)
    }

    /// Adds a damaged range a read found (once; logged the first time).
    fn remember(&self, range: DamagedRange) {
        if range.offsets.is_empty() {
            return;
        }
        let mut damaged = self.damaged.write().unwrap_or_else(PoisonError::into_inner);
        if damaged.iter().any(|r| r.offsets.start == range.offsets.start) {
            return;
        }
        tracing::warn!(
            topic = %self.origin.topic, partition = self.id(), file = %range.path.display(),
            offsets = ?range.offsets, bytes = ?range.bytes, reason = range.reason,
            "a read found records lost to damage on disk"
        );
        let at = damaged.partition_point(|r| r.offsets.start < range.offsets.start);
        damaged.insert(at, range);
    }

    /// The first offset whose record has a timestamp `>= timestamp`, or `None` if no record has.
    pub(crate) fn offset_for_timestamp(&self, timestamp: i64) -> Result<Option<u64>> {
        let end = self.end_offset();
        for segment in self.segments() {
            match segment.offset_for_timestamp(&self.origin, timestamp, end) {
                Ok(Some(offset)) => return Ok(Some(offset)),
                Ok(None) => {}
                // Its records are gone: the answer is in a later segment.
                Err(e) if self.deleted_under_reader(&e) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    }

    /// Whether `e` is a read-only view's read of a segment file retention deleted since.
    fn deleted_under_reader(&self, e: &Error) -> bool {
        self.read_only
            && matches!(e, Error::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
    }

    /// Deletes the oldest sealed segments that retention no longer keeps. Returns how many.
    pub(crate) fn enforce_retention(&self, now_ms: i64) -> Result<usize> {
        if self.read_only {
            return Ok(0);
        }
        let limit = |a: &AtomicU64| Some(a.load(Ordering::Acquire)).filter(|&v| v != u64::MAX);
        let (retention_bytes, retention_ms) = (limit(&self.retention_bytes), limit(&self.retention_ms));
        if retention_bytes.is_none() && retention_ms.is_none() {
            return Ok(0);
        }
        let removed: Vec<Arc<Segment>> = {
            let mut segments = self.segments.write().unwrap_or_else(PoisonError::into_inner);
            let mut total: u64 = segments.iter().map(|s| s.size()).sum();
            let mut n = 0;
            // Never the last (active) segment.
            while n + 1 < segments.len() {
                let s = &segments[n];
                let too_big = retention_bytes.is_some_and(|max| total - s.size() >= max);
                let too_old =
                    retention_ms.is_some_and(|ms| s.max_timestamp() < now_ms.saturating_sub(ms as i64));
                if !(too_big || too_old) {
                    break;
                }
                total -= s.size();
                n += 1;
            }
            let removed: Vec<_> = segments.drain(..n).collect();
            self.log_start.store(segments[0].base_offset, Ordering::Release);
            removed
        };
        if !removed.is_empty() {
            // Recorded before the files go, so that recovery can tell these offsets were
            // removed on purpose from offsets lost with a deleted segment file.
            recovery::record_log_start(&self.dir, self.start_offset())?;
        }
        for s in &removed {
            s.delete_files()?;
            tracing::debug!(topic = %self.origin.topic, partition = self.id(), base_offset = s.base_offset, "retention deleted segment");
        }
        Ok(removed.len())
    }

    /// Changes retention (`None`: no limit); applied by the next retention check.
    pub(crate) fn set_retention(&self, bytes: Option<u64>, ms: Option<u64>) {
        self.retention_bytes.store(bytes.unwrap_or(u64::MAX), Ordering::Release);
        self.retention_ms.store(ms.unwrap_or(u64::MAX), Ordering::Release);
    }

    /// Marks the partition deleted and waits out any append in progress.
    pub(crate) fn mark_deleted(&self) {
        let _w = lock(&self.writer);
        self.deleted.store(true, Ordering::Release);
    }
}

/// Where batch `i` of an encode buffer ends.
fn batch_end(batches: &[EncodedBatch], buf_len: usize, i: usize) -> usize {
    batches.get(i + 1).map_or(buf_len, |b| b.start)
}
