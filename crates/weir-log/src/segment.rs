//! A segment: one `.log` file of consecutive batches and its `.index`.
//!
//! The segment's writer (the partition, under its write lock) appends whole batches with
//! positional writes and then publishes the new size; readers read with positional reads up to
//! the published (`visible`) size only, so they never see a half-written batch and never take
//! the writer's lock.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use bytes::Bytes;

use crate::batch::{self, BatchHeader, EncodedBatch, HEADER_LEN};
use crate::error::{Error, Result};
use crate::handles::SegmentFile;
use crate::index::{Index, IndexEntry};
use crate::record::StoredRecord;

/// Size of the reads recovery and scans make.
const SCAN_CHUNK: usize = 1 << 20;
/// Largest read a fetch makes at once: larger reads fall out of the CPU cache between the copy,
/// the CRC and the decode.
const READ_CHUNK: usize = 1 << 20;

/// File name of the segment starting at `base_offset`: the offset, zero-padded to 20 digits, so
/// names sort like offsets.
pub(crate) fn file_name(base_offset: u64, ext: &str) -> String {
    format!("{base_offset:020}.{ext}")
}

/// What recovery found wrong with a segment and cut away.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Truncation {
    pub(crate) bytes: u64,
    pub(crate) position: u64,
}

/// Identifies a segment's partition in errors.
#[derive(Debug, Clone)]
pub(crate) struct Origin {
    pub(crate) topic: String,
    pub(crate) partition: u32,
}

#[derive(Debug)]
pub(crate) struct Segment {
    pub(crate) base_offset: u64,
    pub(crate) path: PathBuf,
    index_path: PathBuf,
    /// Opened on use, closed by the file cache when others are used more recently.
    file: SegmentFile,
    index: Mutex<Index>,
    /// Bytes written so far (the writer's view).
    size: AtomicU64,
    /// Bytes readers may read: every batch below it is complete (and durable, under
    /// `Durability::EveryBatch`).
    visible: AtomicU64,
    /// Offset after the last record written.
    next_offset: AtomicU64,
    /// Largest record timestamp in the segment (`i64::MIN` when empty).
    max_timestamp: AtomicI64,
    /// When this process opened or created the segment (drives rolling by age).
    pub(crate) opened: Instant,
}

/// A batch found by a scan: where it starts and its bytes (header included).
struct ScannedBatch {
    position: u64,
    header: BatchHeader,
    bytes: Bytes,
}

/// Walks the batches of a segment from a position, reading in chunks.
struct Scan<'a> {
    file: &'a File,
    position: u64,
    end: u64,
    chunk_size: usize,
    chunk: Bytes,
    chunk_position: u64,
}

impl Scan<'_> {
    /// The next batch, `Ok(None)` at `end`, or the position and reason where the bytes stop
    /// making sense (torn write, garbage).
    fn next(&mut self) -> std::result::Result<Option<ScannedBatch>, (u64, String)> {
        if self.position >= self.end {
            return Ok(None);
        }
        let pos = self.position;
        let header = match self.peek(pos, HEADER_LEN).map_err(|e| (pos, e))? {
            Some(h) => BatchHeader::parse(&h).ok_or((pos, "short header".to_owned()))?,
            None => return Err((pos, format!("{} bytes left, too few for a batch header", self.end - pos))),
        };
        header.check_shape().map_err(|e| (pos, e.to_owned()))?;
        let total = header.total_len();
        let bytes = match self.peek(pos, total).map_err(|e| (pos, e))? {
            Some(b) => b,
            None => {
                let left = self.end - pos;
                return Err((pos, format!("batch of {total} bytes but only {left} bytes left")));
            }
        };
        self.position = pos + total as u64;
        Ok(Some(ScannedBatch { position: pos, header, bytes }))
    }

    /// The length of the batch at `pos` if its header is readable and the whole batch lies
    /// before `end`, whatever else is wrong with it.
    fn whole_batch_len(&mut self, pos: u64) -> Option<u64> {
        let header = BatchHeader::parse(&self.peek(pos, HEADER_LEN).ok()??)?;
        let len = header.total_len() as u64;
        (len >= HEADER_LEN as u64 && pos + len <= self.end).then_some(len)
    }

    /// `len` bytes at `pos` (from the current chunk, or read anew), `None` if they pass `end`.
    fn peek(&mut self, pos: u64, len: usize) -> std::result::Result<Option<Bytes>, String> {
        if pos + len as u64 > self.end {
            return Ok(None);
        }
        let in_chunk =
            pos >= self.chunk_position && pos + len as u64 <= self.chunk_position + self.chunk.len() as u64;
        if !in_chunk {
            let want = (self.end - pos).min(self.chunk_size.max(len) as u64) as usize;
            let mut buf = vec![0u8; want];
            self.file.read_exact_at(&mut buf, pos).map_err(|e| format!("read failed: {e}"))?;
            self.chunk = Bytes::from(buf);
            self.chunk_position = pos;
        }
        let at = (pos - self.chunk_position) as usize;
        Ok(Some(self.chunk.slice(at..at + len)))
    }
}

impl Segment {
    /// Creates an empty segment (the files must not exist).
    pub(crate) fn create(dir: &Path, base_offset: u64) -> Result<Segment> {
        let path = dir.join(file_name(base_offset, "log"));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(Error::io("create segment", &path))?;
        let index_path = dir.join(file_name(base_offset, "index"));
        let _ = std::fs::remove_file(&index_path);
        let index = Index::open(&index_path)?;
        Ok(Segment::new(base_offset, path, index_path, file, index, 0, base_offset, i64::MIN))
    }

    #[allow(clippy::too_many_arguments)]
    fn new(
        base_offset: u64,
        path: PathBuf,
        index_path: PathBuf,
        file: File,
        index: Index,
        size: u64,
        next_offset: u64,
        max_timestamp: i64,
    ) -> Segment {
        Segment {
            base_offset,
            file: SegmentFile::with_open(path.clone(), file),
            path,
            index_path,
            index: Mutex::new(index),
            size: AtomicU64::new(size),
            visible: AtomicU64::new(size),
            next_offset: AtomicU64::new(next_offset),
            max_timestamp: AtomicI64::new(max_timestamp),
            opened: Instant::now(),
        }
    }

    /// Opens an existing segment and recovers it: checks the index against the data, then
    /// verifies every batch after the last good index entry (header, sequence, CRC), cuts off a
    /// torn or corrupt tail, and adds the index entries that were missing. `sealed_end` is the
    /// next segment's base offset, `None` for the active segment.
    pub(crate) fn recover(
        dir: &Path,
        base_offset: u64,
        index_interval: u64,
        sealed_end: Option<u64>,
    ) -> Result<(Segment, Option<Truncation>)> {
        let path = dir.join(file_name(base_offset, "log"));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(Error::io("open segment", &path))?;
        let len = file.metadata().map_err(Error::io("stat segment", &path))?.len();
        let index_path = dir.join(file_name(base_offset, "index"));
        let mut index = Index::open(&index_path)?;
        index.retain_valid(|e| {
            let mut h = [0u8; HEADER_LEN];
            u64::from(e.position) + HEADER_LEN as u64 <= len
                && file.read_exact_at(&mut h, u64::from(e.position)).is_ok()
                && BatchHeader::parse(&h)
                    .is_some_and(|h| h.base_offset == base_offset + u64::from(e.relative_offset))
        })?;

        let start = index.last();
        let mut next = base_offset + u64::from(start.relative_offset);
        let mut max_ts = start.max_timestamp_before;
        let mut scan = Scan {
            file: &file,
            position: u64::from(start.position),
            end: len,
            chunk_size: SCAN_CHUNK,
            chunk: Bytes::new(),
            chunk_position: 0,
        };
        let mut last_indexed = u64::from(start.position);
        // A batch that fails is a torn tail, cut with everything after it -- unless it sits whole
        // inside a sealed segment: that is bit rot, kept (reads of it report `Corrupt`) while the
        // scan resumes after it and accepts the next intact batch's offset.
        let mut cut: Option<(u64, String)> = None;
        let mut resync = false;
        let mut rotten = false;
        loop {
            let checked = match scan.next() {
                Ok(None) => break,
                Err((position, reason)) => Err((position, reason, scan.whole_batch_len(position))),
                Ok(Some(b)) => {
                    let due = if resync { b.header.base_offset } else { next };
                    let failure = if b.header.base_offset != due {
                        Some(format!("batch offset {} where {due} was due", b.header.base_offset))
                    } else {
                        batch::verify(&b.header, &b.bytes).err().map(str::to_owned)
                    };
                    match failure {
                        None => Ok(b),
                        Some(reason) => Err((b.position, reason, Some(b.bytes.len() as u64))),
                    }
                }
            };
            match checked {
                Ok(b) => {
                    resync = false;
                    if b.position >= last_indexed + index_interval {
                        index.push(IndexEntry {
                            relative_offset: (b.header.base_offset - base_offset) as u32,
                            position: b.position as u32,
                            max_timestamp_before: max_ts,
                        })?;
                        last_indexed = b.position;
                    }
                    max_ts = max_ts.max(b.header.max_timestamp);
                    next = b.header.next_offset();
                }
                Err((position, reason, Some(len))) if sealed_end.is_some() => {
                    tracing::warn!(
                        path = %path.display(), position, reason,
                        "sealed segment holds a damaged batch; reads of it will fail"
                    );
                    scan.position = position + len;
                    resync = true;
                    rotten = true;
                }
                Err((position, reason, _)) => {
                    cut = Some((position, reason));
                    break;
                }
            }
        }
        if let (true, Some(end)) = (rotten, sealed_end) {
            next = end;
        }
        let mut truncation = None;
        let size = match cut {
            None => len,
            Some((position, reason)) => {
                tracing::debug!(path = %path.display(), position, reason, "segment tail fails verification");
                file.set_len(position).map_err(Error::io("truncate torn segment tail", &path))?;
                file.sync_all().map_err(Error::io("fsync truncated segment", &path))?;
                index.truncate_to_position(position)?;
                truncation = Some(Truncation { bytes: len - position, position });
                position
            }
        };
        Ok((Segment::new(base_offset, path, index_path, file, index, size, next, max_ts), truncation))
    }

    fn index(&self) -> MutexGuard<'_, Index> {
        self.index.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn size(&self) -> u64 {
        self.size.load(Ordering::Acquire)
    }

    pub(crate) fn next_offset(&self) -> u64 {
        self.next_offset.load(Ordering::Acquire)
    }

    pub(crate) fn max_timestamp(&self) -> i64 {
        self.max_timestamp.load(Ordering::Acquire)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.size() == 0
    }

    /// Appends encoded batches: `buf` holds them back to back and starts at byte `buf_start` of
    /// the encoder's buffer, which `batches`' positions refer to. Called by the partition's
    /// single writer. On a failed write the file is cut back to its
    /// previous size; `Err` with `true` means even that failed and the segment's state is
    /// unknown.
    pub(crate) fn append(
        &self,
        buf: &[u8],
        buf_start: usize,
        batches: &[EncodedBatch],
        index_interval: u64,
    ) -> std::result::Result<(), (Error, bool)> {
        let start = self.size();
        let file = self.file.get().map_err(|e| (Error::io("open segment", &self.path)(e), false))?;
        if let Err(e) = file.write_all_at(buf, start) {
            let unknown = file.set_len(start).is_err();
            return Err((Error::io("append to segment", &self.path)(e), unknown));
        }
        self.file.written();
        let mut max_ts = self.max_timestamp();
        let mut next = self.next_offset();
        {
            let mut index = self.index();
            let mut last_indexed = u64::from(index.last().position);
            for b in batches {
                let position = start + (b.start - buf_start) as u64;
                if position >= last_indexed + index_interval {
                    let entry = IndexEntry {
                        relative_offset: (b.base_offset - self.base_offset) as u32,
                        position: position as u32,
                        max_timestamp_before: max_ts,
                    };
                    // The index is a cache: failing to extend it costs lookup speed, not data.
                    if let Err(e) = index.push(entry) {
                        tracing::warn!(error = %e, "index entry not written");
                    }
                    last_indexed = position;
                }
                max_ts = max_ts.max(b.max_timestamp);
                next = b.base_offset + u64::from(b.record_count);
            }
        }
        self.max_timestamp.store(max_ts, Ordering::Release);
        self.next_offset.store(next, Ordering::Release);
        self.size.store(start + buf.len() as u64, Ordering::Release);
        Ok(())
    }

    /// Marks the end of writing: readers see everything, and the index file catches up.
    pub(crate) fn seal(&self) {
        self.publish();
        if let Err(e) = self.index().write_pending() {
            tracing::warn!(error = %e, "index entries not written");
        }
    }

    /// Lets readers see everything written so far.
    pub(crate) fn publish(&self) {
        self.visible.store(self.size(), Ordering::Release);
    }

    /// Lets readers see the first `size` bytes.
    pub(crate) fn publish_up_to(&self, size: u64) {
        self.visible.fetch_max(size, Ordering::AcqRel);
    }

    /// `fdatasync` of the segment file.
    pub(crate) fn sync(&self) -> Result<()> {
        self.file.sync().map_err(Error::io("fdatasync segment", &self.path))
    }

    /// Reads records from `from` on, stopping before offset `end` (the partition's high
    /// watermark), after roughly `max_bytes` of batches (at least one batch is returned).
    /// Every returned batch's CRC is verified. Returns the bytes of the batches returned.
    pub(crate) fn read(
        &self,
        origin: &Origin,
        from: u64,
        end: u64,
        max_bytes: usize,
        out: &mut Vec<StoredRecord>,
    ) -> Result<usize> {
        let entry = self.index().lookup_offset(from.saturating_sub(self.base_offset) as u32);
        let file = self.open()?;
        let mut scan = self.scan_from(&file, entry, max_bytes.clamp(HEADER_LEN, READ_CHUNK));
        let mut expected = self.base_offset + u64::from(entry.relative_offset);
        let mut read_bytes = 0usize;
        while read_bytes == 0 || read_bytes < max_bytes {
            let Some(b) = self.next_checked(origin, &mut scan, expected)? else { break };
            if b.header.base_offset >= end {
                break;
            }
            expected = b.header.next_offset();
            if expected <= from {
                continue;
            }
            self.verify(origin, &b)?;
            batch::decode(&b.header, &b.bytes, from, out).map_err(|e| self.corrupt(origin, &b, e))?;
            read_bytes += b.bytes.len();
        }
        Ok(read_bytes)
    }

    /// The offset of the first record with a timestamp `>= timestamp`, if the segment has one.
    pub(crate) fn offset_for_timestamp(
        &self,
        origin: &Origin,
        timestamp: i64,
        end: u64,
    ) -> Result<Option<u64>> {
        if self.max_timestamp() < timestamp {
            return Ok(None);
        }
        let entry = self.index().lookup_time(timestamp);
        let file = self.open()?;
        let mut scan = self.scan_from(&file, entry, SCAN_CHUNK);
        let mut expected = self.base_offset + u64::from(entry.relative_offset);
        while let Some(b) = self.next_checked(origin, &mut scan, expected)? {
            if b.header.base_offset >= end {
                break;
            }
            expected = b.header.next_offset();
            if b.header.max_timestamp < timestamp {
                continue;
            }
            self.verify(origin, &b)?;
            let mut records = Vec::new();
            batch::decode(&b.header, &b.bytes, 0, &mut records).map_err(|e| self.corrupt(origin, &b, e))?;
            if let Some(r) = records.iter().find(|r| r.timestamp >= timestamp) {
                return Ok(Some(r.offset));
            }
        }
        Ok(None)
    }

    /// The segment's file, opened if the file cache closed it.
    fn open(&self) -> Result<Arc<File>> {
        self.file.get().map_err(Error::io("open segment", &self.path))
    }

    fn scan_from<'f>(&self, file: &'f File, entry: IndexEntry, chunk_size: usize) -> Scan<'f> {
        Scan {
            file,
            position: u64::from(entry.position),
            end: self.visible.load(Ordering::Acquire),
            chunk_size,
            chunk: Bytes::new(),
            chunk_position: 0,
        }
    }

    /// The next batch of a read scan, checked for shape and offset sequence.
    fn next_checked(
        &self,
        origin: &Origin,
        scan: &mut Scan<'_>,
        expected: u64,
    ) -> Result<Option<ScannedBatch>> {
        match scan.next() {
            Ok(None) => Ok(None),
            Err((position, reason)) => Err(Error::Corrupt {
                topic: origin.topic.clone(),
                partition: origin.partition,
                offset: expected,
                path: self.path.clone(),
                position,
                reason,
            }),
            Ok(Some(b)) if b.header.base_offset != expected => {
                let reason = format!("batch offset {} where {expected} was due", b.header.base_offset);
                let mut err = self.corrupt(origin, &b, &reason);
                if let Error::Corrupt { offset, .. } = &mut err {
                    *offset = expected;
                }
                Err(err)
            }
            Ok(Some(b)) => Ok(Some(b)),
        }
    }

    fn verify(&self, origin: &Origin, b: &ScannedBatch) -> Result<()> {
        batch::verify(&b.header, &b.bytes).map_err(|e| self.corrupt(origin, b, e))
    }

    fn corrupt(&self, origin: &Origin, b: &ScannedBatch, reason: &str) -> Error {
        Error::Corrupt {
            topic: origin.topic.clone(),
            partition: origin.partition,
            offset: b.header.base_offset,
            path: self.path.clone(),
            position: b.position,
            reason: reason.to_owned(),
        }
    }

    /// Removes the segment's files (it stays readable through open handles until dropped).
    pub(crate) fn delete_files(&self) -> Result<()> {
        std::fs::remove_file(&self.path).map_err(Error::io("delete segment", &self.path))?;
        match std::fs::remove_file(&self.index_path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(Error::io("delete index", &self.index_path)(e))
            }
            _ => Ok(()),
        }
    }
}
