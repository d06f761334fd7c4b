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
use crate::damage::DamagedRange;
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

/// Damage found in a segment file: bytes `position..end_position` hold no intact batch where
/// one with offset `offset` was due; the offsets from `offset` up to `end_offset`, the base
/// offset of the next intact batch (`None` when no intact batch follows in the file), are lost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Damage {
    pub(crate) position: u64,
    pub(crate) end_position: u64,
    pub(crate) offset: u64,
    pub(crate) end_offset: Option<u64>,
    pub(crate) reason: String,
}

/// A segment as recovery found it, and the damage it holds (in file order; only the last entry
/// may run to the end of the file).
pub(crate) struct Recovered {
    pub(crate) segment: Segment,
    pub(crate) damage: Vec<Damage>,
}

/// The largest offset a batch of the segment starting at `base_offset` can end at: relative
/// offsets are `u32`.
fn max_offset(base_offset: u64) -> u64 {
    base_offset.saturating_add(u64::from(u32::MAX))
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

    /// The next batch if it is complete and intact (shape, CRC-32C) and starts at offset
    /// `expected`; else `None`, and the scan stays where it was.
    fn next_complete(&mut self, expected: u64) -> Option<ScannedBatch> {
        let position = self.position;
        match self.next() {
            Ok(Some(b)) if b.header.base_offset == expected && batch::verify(&b.header, &b.bytes).is_ok() => {
                Some(b)
            }
            _ => {
                self.position = position;
                None
            }
        }
    }

    /// The next batch if it is intact (shape, CRC-32C) and starts at offset `expected`. Else
    /// the damage there, which runs to the next intact batch with offsets in
    /// `expected..=max_offset` (see [`Scan::resync`]); the scan then stands at that batch.
    fn next_intact(
        &mut self,
        expected: u64,
        max_offset: u64,
    ) -> std::result::Result<Option<ScannedBatch>, Damage> {
        let position = self.position;
        let (reason, hint) = match self.next() {
            Ok(None) => return Ok(None),
            Ok(Some(b)) => {
                let failure = if b.header.base_offset != expected {
                    format!("batch offset {} where {expected} was due", b.header.base_offset)
                } else {
                    match batch::verify(&b.header, &b.bytes) {
                        Ok(()) => return Ok(Some(b)),
                        Err(e) => e.to_owned(),
                    }
                };
                (failure, Some(b.position + b.bytes.len() as u64))
            }
            Err((_, reason)) => {
                let hint = self
                    .peek(position, HEADER_LEN)
                    .ok()
                    .flatten()
                    .and_then(|h| BatchHeader::parse(&h))
                    .map(|h| position + h.total_len() as u64);
                (reason, hint)
            }
        };
        let found = self.resync(position + 1, hint, expected, max_offset);
        let end_position = found.as_ref().map_or(self.end, |b| b.position);
        self.position = end_position;
        Err(Damage {
            position,
            end_position,
            offset: expected,
            end_offset: found.map(|b| b.header.base_offset),
            reason,
        })
    }

    /// The first intact batch at or after byte `from` whose offsets lie in
    /// `min_offset..=max_offset`: the one at `hint` (where a damaged header's length points) if
    /// it is intact, else the first found byte by byte.
    fn resync(
        &mut self,
        from: u64,
        hint: Option<u64>,
        min_offset: u64,
        max_offset: u64,
    ) -> Option<ScannedBatch> {
        if let Some(b) = hint.filter(|&h| h >= from).and_then(|h| self.intact_at(h, min_offset, max_offset)) {
            return Some(b);
        }
        let last = self.end.checked_sub(HEADER_LEN as u64)?;
        (from..=last).find_map(|pos| self.intact_at(pos, min_offset, max_offset))
    }

    /// The batch at `pos` if it is intact and its offsets lie in `min_offset..=max_offset`.
    fn intact_at(&mut self, pos: u64, min_offset: u64, max_offset: u64) -> Option<ScannedBatch> {
        let header = BatchHeader::parse(&self.peek(pos, HEADER_LEN).ok()??)?;
        header.check_shape().ok()?;
        let next = header.base_offset.checked_add(u64::from(header.record_count))?;
        if header.base_offset < min_offset || next > max_offset {
            return None;
        }
        let bytes = self.peek(pos, header.total_len()).ok()??;
        batch::verify(&header, &bytes).ok()?;
        Some(ScannedBatch { position: pos, header, bytes })
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
        let file = SegmentFile::with_open(path.clone(), file);
        Ok(Segment::new(base_offset, path, index_path, file, index, 0, base_offset, i64::MIN))
    }

    #[allow(clippy::too_many_arguments)]
    fn new(
        base_offset: u64,
        path: PathBuf,
        index_path: PathBuf,
        file: SegmentFile,
        index: Index,
        size: u64,
        next_offset: u64,
        max_timestamp: i64,
    ) -> Segment {
        Segment {
            base_offset,
            file,
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
    /// verifies every batch after the last good index entry (header, offset sequence, CRC-32C)
    /// and adds the index entries that were missing. A batch that fails is damage: the scan
    /// resumes at the next intact batch (see [`Scan::resync`]) and the damage is returned, not
    /// cut; the caller decides (only a torn tail of a partition's last segment is cut, with
    /// [`Segment::cut_tail`]).
    pub(crate) fn recover(dir: &Path, base_offset: u64, index_interval: u64) -> Result<Recovered> {
        Segment::scan_file(dir, base_offset, index_interval, false)
    }

    /// [`Segment::recover`] for a reader beside another process's writer: the files are opened
    /// read-only and never written (index entries found missing are kept in memory only).
    pub(crate) fn open_read_only(dir: &Path, base_offset: u64, index_interval: u64) -> Result<Recovered> {
        Segment::scan_file(dir, base_offset, index_interval, true)
    }

    fn scan_file(dir: &Path, base_offset: u64, index_interval: u64, read_only: bool) -> Result<Recovered> {
        let path = dir.join(file_name(base_offset, "log"));
        let file = OpenOptions::new()
            .read(true)
            .write(!read_only)
            .open(&path)
            .map_err(Error::io("open segment", &path))?;
        let len = file.metadata().map_err(Error::io("stat segment", &path))?.len();
        let index_path = dir.join(file_name(base_offset, "index"));
        let mut index =
            if read_only { Index::open_read_only(&index_path) } else { Index::open(&index_path)? };
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
        let mut damage = Vec::new();
        let max_offset = max_offset(base_offset);
        loop {
            match scan.next_intact(next, max_offset) {
                Ok(None) => break,
                Ok(Some(b)) => {
                    // The first batch after damage is always indexed, so reads past the damage
                    // start there.
                    let resumed = damage.last().is_some_and(|d: &Damage| d.end_position == b.position);
                    if b.position >= last_indexed + index_interval || (resumed && b.position > last_indexed) {
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
                Err(d) => {
                    tracing::debug!(path = %path.display(), position = d.position, reason = d.reason, "segment holds a damaged batch");
                    if let Some(end) = d.end_offset {
                        next = end;
                    }
                    damage.push(d);
                }
            }
        }
        let file = SegmentFile::with_open_as(path.clone(), file, read_only);
        let segment = Segment::new(base_offset, path, index_path, file, index, len, next, max_ts);
        Ok(Recovered { segment, damage })
    }

    /// Reads what another process appended to this segment since the last look (a reader's
    /// view): every intact batch from the visible end on becomes visible, with index entries in
    /// memory. `sealed` says the writer has moved on to a later segment: damage then is damage
    /// (returned, and the scan resumes after it); otherwise the first batch that is not intact
    /// yet, a write in progress or a torn tail, ends what is visible for now. Returns the damage
    /// found. Never writes.
    pub(crate) fn catch_up(&self, index_interval: u64, sealed: bool) -> Result<Vec<Damage>> {
        let file = self.open()?;
        let len = file.metadata().map_err(Error::io("stat segment", &self.path))?.len();
        let from = self.visible.load(Ordering::Acquire);
        if len <= from {
            return Ok(Vec::new());
        }
        let mut scan = Scan {
            file: &file,
            position: from,
            end: len,
            chunk_size: SCAN_CHUNK,
            chunk: Bytes::new(),
            chunk_position: 0,
        };
        let (mut next, mut max_ts) = (self.next_offset(), self.max_timestamp());
        let mut visible = from;
        let mut damage = Vec::new();
        {
            let mut index = self.index();
            let mut last_indexed = u64::from(index.last().position);
            loop {
                let found = if sealed {
                    scan.next_intact(next, max_offset(self.base_offset))
                } else {
                    // A batch not complete yet ends the look, without searching past it.
                    Ok(scan.next_complete(next))
                };
                match found {
                    Ok(None) => break,
                    Ok(Some(b)) => {
                        // As in recovery, the first batch after damage is always indexed.
                        let resumed = damage.last().is_some_and(|d: &Damage| d.end_position == b.position);
                        if b.position >= last_indexed + index_interval
                            || (resumed && b.position > last_indexed)
                        {
                            // In memory only: a reader's index is never written.
                            let _ = index.push(IndexEntry {
                                relative_offset: (b.header.base_offset - self.base_offset) as u32,
                                position: b.position as u32,
                                max_timestamp_before: max_ts,
                            });
                            last_indexed = b.position;
                        }
                        max_ts = max_ts.max(b.header.max_timestamp);
                        next = b.header.next_offset();
                        visible = b.position + b.bytes.len() as u64;
                    }
                    Err(d) => {
                        if let Some(end) = d.end_offset {
                            next = end;
                        }
                        visible = d.end_position;
                        damage.push(d);
                    }
                }
            }
        }
        self.max_timestamp.store(max_ts, Ordering::Release);
        self.next_offset.store(next, Ordering::Release);
        self.size.store(visible, Ordering::Release);
        self.visible.store(visible, Ordering::Release);
        Ok(damage)
    }

    /// A reader's view ends at `position`: the bytes after it (a tail being written, or torn)
    /// are not visible. Nothing is written.
    pub(crate) fn hide_from(&self, position: u64) {
        self.size.store(position, Ordering::Release);
        self.visible.store(position, Ordering::Release);
    }

    /// The base offset of the segment file's first batch if that batch is intact and its base
    /// offset is not `base_offset` (the file's name): a copy under another name. Only such a
    /// header makes it read the whole batch (to check its CRC-32C); a file whose first header
    /// agrees with its name, or is damaged, is not a stray.
    pub(crate) fn misnamed_first_batch(path: &Path, base_offset: u64) -> Result<Option<u64>> {
        let file = File::open(path).map_err(Error::io("open segment", path))?;
        let len = file.metadata().map_err(Error::io("stat segment", path))?.len();
        let mut scan = Scan {
            file: &file,
            position: 0,
            end: len,
            chunk_size: HEADER_LEN,
            chunk: Bytes::new(),
            chunk_position: 0,
        };
        let header = scan.peek(0, HEADER_LEN).ok().flatten().and_then(|h| BatchHeader::parse(&h));
        if header.is_none_or(|h| h.base_offset == base_offset) {
            return Ok(None);
        }
        Ok(scan.intact_at(0, 0, u64::MAX).map(|b| b.header.base_offset))
    }

    /// Cuts the file at `position` (a torn tail of the partition's last segment), fsyncs the cut
    /// and drops the index entries past it. Returns the bytes cut. Only called during open.
    pub(crate) fn cut_tail(&self, position: u64) -> Result<u64> {
        let len = self.size();
        let file = self.open()?;
        file.set_len(position).map_err(Error::io("truncate torn segment tail", &self.path))?;
        crate::fault::before_sync(&self.path, position)
            .and_then(|()| file.sync_all())
            .map_err(Error::io("fsync truncated segment", &self.path))?;
        self.index().truncate_to_position(position)?;
        self.size.store(position, Ordering::Release);
        self.visible.store(position, Ordering::Release);
        Ok(len - position)
    }

    /// The damage `d` of this segment as offsets and bytes lost; a damage running to the end
    /// of the file loses the offsets up to `end_offset`.
    pub(crate) fn damaged_range(&self, origin: &Origin, d: Damage, end_offset: u64) -> DamagedRange {
        DamagedRange {
            topic: origin.topic.clone(),
            partition: origin.partition,
            offsets: d.offset..d.end_offset.unwrap_or(end_offset).max(d.offset),
            path: self.path.clone(),
            bytes: d.position..d.end_position,
            reason: d.reason,
        }
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
        crate::fault::before_sync(&self.path, self.size())
            .and_then(|()| self.file.sync())
            .map_err(Error::io("fdatasync segment", &self.path))
    }

    /// Reads records from `from` on, stopping before offset `end` (the partition's high
    /// watermark, or the start of a damaged range it knows), after roughly `max_bytes` of batches
    /// (at least one batch is returned), or at damage: damage wholly before `from` is stepped
    /// over; damage holding offsets `>= from` ends the read, and is returned with the records
    /// before it. Returns the bytes of the batches returned.
    pub(crate) fn read(
        &self,
        origin: &Origin,
        from: u64,
        end: u64,
        max_bytes: usize,
        out: &mut Vec<StoredRecord>,
    ) -> Result<(usize, Option<DamagedRange>)> {
        let entry = self.index().lookup_offset(from.saturating_sub(self.base_offset) as u32);
        let file = self.open()?;
        let mut scan = self.scan_from(&file, entry, max_bytes.clamp(HEADER_LEN, READ_CHUNK));
        let mut expected = self.base_offset + u64::from(entry.relative_offset);
        let mut read_bytes = 0usize;
        while read_bytes == 0 || read_bytes < max_bytes {
            let b = match self.next_below(origin, &mut scan, expected, end) {
                Ok(None) => break,
                Ok(Some(b)) => b,
                Err(range) if range.offsets.end <= from => {
                    expected = range.offsets.end;
                    continue;
                }
                Err(range) => return Ok((read_bytes, Some(range))),
            };
            expected = b.header.next_offset();
            if expected <= from {
                continue;
            }
            batch::decode(&b.header, &b.bytes, from, out).map_err(|e| self.corrupt(origin, &b, e))?;
            read_bytes += b.bytes.len();
        }
        Ok((read_bytes, None))
    }

    /// The offset of the first record with a timestamp `>= timestamp`, if the segment has one.
    /// Damage on the way is an [`Error::Corrupt`]: the lost records may have been the answer.
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
        loop {
            let Some(b) = self.next_below(origin, &mut scan, expected, end).map_err(|r| r.to_error())? else {
                break;
            };
            expected = b.header.next_offset();
            if b.header.max_timestamp < timestamp {
                continue;
            }
            let mut records = Vec::new();
            batch::decode(&b.header, &b.bytes, 0, &mut records).map_err(|e| self.corrupt(origin, &b, e))?;
            if let Some(r) = records.iter().find(|r| r.timestamp >= timestamp) {
                return Ok(Some(r.offset));
            }
        }
        Ok(None)
    }

    /// The next batch of a read scan if it is intact and starts below offset `end`; `Ok(None)`
    /// at the end of the file or of the range; the damaged range if the scan meets damage
    /// holding offsets below `end`.
    fn next_below(
        &self,
        origin: &Origin,
        scan: &mut Scan<'_>,
        expected: u64,
        end: u64,
    ) -> std::result::Result<Option<ScannedBatch>, DamagedRange> {
        match scan.next_intact(expected, max_offset(self.base_offset)) {
            Ok(b) => Ok(b.filter(|b| b.header.base_offset < end)),
            Err(d) => {
                let range = self.damaged_range(origin, d, self.next_offset());
                if range.offsets.start >= end { Ok(None) } else { Err(range) }
            }
        }
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

    /// A batch whose CRC-32C holds but whose records do not decode.
    fn corrupt(&self, origin: &Origin, b: &ScannedBatch, reason: &str) -> Error {
        let range = DamagedRange {
            topic: origin.topic.clone(),
            partition: origin.partition,
            offsets: b.header.base_offset..b.header.next_offset(),
            path: self.path.clone(),
            bytes: b.position..b.position + b.bytes.len() as u64,
            reason: reason.to_owned(),
        };
        range.to_error()
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
