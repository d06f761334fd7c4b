//! A topic: a named set of partitions sharing one configuration.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use tokio::sync::Notify;

use crate::config::TopicConfig;
use crate::damage::{DamagedRange, SkippingRead};
use crate::error::{Error, Result};
use crate::partition::{Appended, Partition, PartitionInfo};
use crate::partitioner::partition_for_key;
use crate::record::{Record, StoredRecord};

/// Where one record of a [`Topic::send`] landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct RecordPosition {
    /// The partition.
    pub partition: u32,
    /// The record's offset in it.
    pub offset: u64,
}

/// A topic's configuration and the extent of each partition.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TopicDescription {
    /// The topic's name.
    pub name: String,
    /// Its configuration.
    pub config: TopicConfig,
    /// One entry per partition, in order.
    pub partitions: Vec<PartitionInfo>,
}

/// A handle to a topic, for producing and reading. Cheap to clone; every clone refers to the
/// same topic. Operations on a handle to a deleted topic fail with [`Error::UnknownTopic`].
#[derive(Clone)]
pub struct Topic {
    inner: Arc<TopicInner>,
}

impl std::fmt::Debug for Topic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Topic").field("name", &self.inner.name).finish_non_exhaustive()
    }
}

pub(crate) struct TopicInner {
    pub(crate) name: Arc<str>,
    pub(crate) dir: PathBuf,
    /// The configuration; replaced whole when retention is changed.
    config: RwLock<Arc<TopicConfig>>,
    pub(crate) partitions: Vec<Partition>,
    round_robin: AtomicU32,
    pub(crate) notify: Arc<Notify>,
}

/// `timeout` from now, or a century from now for a longer (or `Duration::MAX`) timeout, which
/// would overflow the clock.
pub(crate) fn deadline(timeout: Duration) -> tokio::time::Instant {
    let now = tokio::time::Instant::now();
    let century = Duration::from_secs(100 * 365 * 24 * 3600);
    now.checked_add(timeout.min(century)).unwrap_or(now)
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

impl Topic {
    pub(crate) fn new(
        name: &str,
        dir: PathBuf,
        config: Arc<TopicConfig>,
        partitions: Vec<Partition>,
        notify: Arc<Notify>,
    ) -> Topic {
        Topic {
            inner: Arc::new(TopicInner {
                name: name.into(),
                dir,
                config: RwLock::new(config),
                partitions,
                round_robin: AtomicU32::new(0),
                notify,
            }),
        }
    }

    pub(crate) fn inner(&self) -> &TopicInner {
        &self.inner
    }

    /// The topic's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The topic's name, shared.
    pub fn name_arc(&self) -> Arc<str> {
        self.inner.name.clone()
    }

    /// The topic's configuration (retention as last set by
    /// [`Log::set_topic_retention`](crate::Log::set_topic_retention)).
    pub fn config(&self) -> Arc<TopicConfig> {
        self.inner.config.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Replaces the configuration (only retention differs) and the partitions' retention.
    pub(crate) fn set_config(&self, config: TopicConfig) {
        for p in &self.inner.partitions {
            p.set_retention(config.retention_bytes, config.retention_ms);
        }
        *self.inner.config.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(config);
    }

    /// Number of partitions.
    pub fn partition_count(&self) -> u32 {
        self.inner.partitions.len() as u32
    }

    pub(crate) fn partition(&self, partition: u32) -> Result<&Partition> {
        self.inner.partitions.get(partition as usize).ok_or_else(|| Error::UnknownPartition {
            topic: self.name().to_owned(),
            partition,
            partitions: self.partition_count(),
        })
    }

    /// Appends `records` to one partition, in order, as one or more batches, and returns the
    /// offsets they got (`base_offset .. base_offset + count`). This is the fast path: the
    /// records are encoded straight into the partition's write buffer.
    ///
    /// Records without a timestamp get the current wall-clock time.
    ///
    /// This call does blocking file I/O (and, under `Durability::EveryBatch`, waits for
    /// `fdatasync`): from async code, call it where blocking is acceptable (e.g.
    /// `tokio::task::spawn_blocking`).
    ///
    /// # Errors
    ///
    /// [`Error::UnknownPartition`], [`Error::RecordTooLarge`] (nothing of the call is written),
    /// [`Error::Io`] (disk full, permission denied: nothing of the call is written),
    /// [`Error::PartiallyAppended`] when an I/O failure stopped the call after some of its
    /// batches were written: it lists exactly the records that are in the log (a prefix of
    /// `records`), so a retry of the others duplicates nothing; [`Error::Poisoned`] after a
    /// failed `fdatasync` (what the failing call wrote may or may not survive a reopen),
    /// [`Error::UnknownTopic`] after the topic was deleted.
    pub fn append(&self, partition: u32, records: &[Record]) -> Result<Appended> {
        self.partition(partition)?.append(records, now_ms())
    }

    /// Appends records, choosing each one's partition: by key hash
    /// ([`partition_for_key`]) for keyed records, round-robin for keyless ones. Returns each
    /// record's partition and offset, in input order.
    ///
    /// # Errors
    ///
    /// As [`Topic::append`]. Records go to their partitions one partition at a time; when a
    /// partition fails after others (or part of its own records) were appended,
    /// [`Error::PartiallyAppended`] lists every record that is in the log and where.
    pub fn send(&self, records: &[Record]) -> Result<Vec<RecordPosition>> {
        let n = self.partition_count();
        let mut targets = Vec::with_capacity(records.len());
        for r in records {
            targets.push(match &r.key {
                Some(key) => partition_for_key(key, n),
                None => self.inner.round_robin.fetch_add(1, Ordering::Relaxed) % n,
            });
        }
        let now = now_ms();
        let mut positions = vec![RecordPosition { partition: 0, offset: 0 }; records.len()];
        if targets.iter().all(|&p| p == targets.first().copied().unwrap_or(0)) {
            if let Some(&p) = targets.first() {
                let appended = self.partition(p)?.append(records, now)?;
                for (i, pos) in positions.iter_mut().enumerate() {
                    *pos = RecordPosition { partition: p, offset: appended.base_offset + i as u64 };
                }
            }
            return Ok(positions);
        }
        let mut buckets: Vec<Vec<usize>> = vec![Vec::new(); n as usize];
        for (i, &p) in targets.iter().enumerate() {
            buckets[p as usize].push(i);
        }
        // Input indices of the records appended so far, for a failure part-way.
        let mut done: Vec<usize> = Vec::new();
        for (p, indices) in buckets.iter().enumerate().filter(|(_, b)| !b.is_empty()) {
            let group: Vec<Record> = indices.iter().map(|&i| records[i].clone()).collect();
            match self.partition(p as u32)?.append(&group, now) {
                Ok(appended) => {
                    for (k, &i) in indices.iter().enumerate() {
                        positions[i] =
                            RecordPosition { partition: p as u32, offset: appended.base_offset + k as u64 };
                    }
                    done.extend_from_slice(indices);
                }
                Err(err) => return Err(self.partial(records.len(), &positions, done, indices, err)),
            }
        }
        Ok(positions)
    }

    /// The error of a [`Topic::send`] that failed at a partition after the records `done`
    /// (indices into the input, their positions in `positions`) were appended; `failed` maps the
    /// failing partition's records to input indices.
    fn partial(
        &self,
        total: usize,
        positions: &[RecordPosition],
        done: Vec<usize>,
        failed: &[usize],
        err: Error,
    ) -> Error {
        let mut appended: Vec<(usize, RecordPosition)> =
            done.into_iter().map(|i| (i, positions[i])).collect();
        let source = match err {
            Error::PartiallyAppended { appended: some, source, .. } => {
                appended.extend(some.into_iter().map(|(k, pos)| (failed[k], pos)));
                source
            }
            err if appended.is_empty() => return err,
            err => Box::new(err),
        };
        appended.sort_unstable_by_key(|&(i, _)| i);
        Error::PartiallyAppended { topic: self.name().to_owned(), total, appended, source }
    }

    /// Reads records of a partition from `offset` on: about `max_bytes` worth of batches, and
    /// at least one batch if any record is available. Empty at the end of the partition.
    /// Keys and values are slices of the read buffers, not copies.
    ///
    /// # Errors
    ///
    /// [`Error::OffsetOutOfRange`] below the log start offset (removed by retention; the error
    /// carries the earliest available offset) or past the end; [`Error::Corrupt`] if `offset`
    /// lies in records lost to damage on disk (a batch failing its CRC check, a missing
    /// segment), naming the lost range. A read that starts before such a range returns the
    /// intact records before it; nothing is skipped.
    /// [`Error::Io`].
    pub fn read(&self, partition: u32, offset: u64, max_bytes: usize) -> Result<Vec<StoredRecord>> {
        let mut out = Vec::new();
        self.read_into(partition, offset, max_bytes, &mut out)?;
        Ok(out)
    }

    /// As [`Topic::read`], appending to `out` (to reuse its allocation).
    pub fn read_into(
        &self,
        partition: u32,
        offset: u64,
        max_bytes: usize,
        out: &mut Vec<StoredRecord>,
    ) -> Result<()> {
        self.partition(partition)?.read(offset, max_bytes, out, None)
    }

    /// As [`Topic::read`], but steps over records lost to damage on disk instead of stopping at
    /// them ([`DamagePolicy::Skip`](crate::DamagePolicy::Skip)): returns the intact records and
    /// every damaged range skipped to reach them (each also logged as a `tracing` warning).
    /// Offsets of the partition below the last record returned are each either returned or in
    /// a skipped range.
    ///
    /// # Errors
    ///
    /// As [`Topic::read`], but never [`Error::Corrupt`] for damage found by checking batches
    /// (a batch whose CRC-32C holds but whose records do not decode still fails).
    pub fn read_skipping_damage(
        &self,
        partition: u32,
        offset: u64,
        max_bytes: usize,
    ) -> Result<SkippingRead> {
        let mut read = SkippingRead::default();
        self.read_with(partition, offset, max_bytes, &mut read.records, Some(&mut read.skipped))?;
        Ok(read)
    }

    /// Reads as [`Topic::read_into`], skipping damage into `skipped` if given.
    pub(crate) fn read_with(
        &self,
        partition: u32,
        offset: u64,
        max_bytes: usize,
        out: &mut Vec<StoredRecord>,
        skipped: Option<&mut Vec<DamagedRange>>,
    ) -> Result<()> {
        self.partition(partition)?.read(offset, max_bytes, out, skipped)
    }

    /// The earliest offset whose record's timestamp is `>= timestamp_ms`, or `None` if there is
    /// none yet (Kafka's `offsetsForTimes`). Uses the time index, then scans forward.
    pub fn offset_for_timestamp(&self, partition: u32, timestamp_ms: i64) -> Result<Option<u64>> {
        self.partition(partition)?.offset_for_timestamp(timestamp_ms)
    }

    /// The earliest offset still stored in a partition (the log start offset).
    pub fn start_offset(&self, partition: u32) -> Result<u64> {
        Ok(self.partition(partition)?.start_offset())
    }

    /// The offset the next record appended to a partition will get (the high watermark).
    pub fn end_offset(&self, partition: u32) -> Result<u64> {
        Ok(self.partition(partition)?.end_offset())
    }

    /// Waits until the partition holds a record at `offset` (its end offset passes `offset`), or
    /// `timeout` runs out. Returns whether data is there. Wakes as soon as an append publishes;
    /// no polling.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the future loses nothing.
    pub async fn wait_for(&self, partition: u32, offset: u64, timeout: Duration) -> Result<bool> {
        let p = self.partition(partition)?;
        let deadline = crate::topic::deadline(timeout);
        loop {
            let notified = self.inner.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if p.end_offset() > offset {
                return Ok(true);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Ok(p.end_offset() > offset);
            }
        }
    }

    /// `fdatasync`s every partition with unsynced appends.
    pub fn flush(&self) -> Result<()> {
        self.inner.partitions.iter().try_for_each(Partition::flush)
    }

    /// The configuration and the extent of every partition.
    pub fn describe(&self) -> TopicDescription {
        TopicDescription {
            name: self.name().to_owned(),
            config: TopicConfig::clone(&self.config()),
            partitions: self.inner.partitions.iter().map(Partition::info).collect(),
        }
    }
}
