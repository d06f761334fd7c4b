//! The sparse offset-and-time index of one segment.
//!
//! An entry is 20 bytes, little-endian: `relative_offset: u32` (batch base offset minus the
//! segment's base offset), `position: u32` (byte position of that batch in the segment file),
//! `max_timestamp_before: i64` (the largest record timestamp of all batches before `position`
//! in the segment; `i64::MIN` if none), `crc: u32` (CRC-32C of the first 16 bytes, so a stale,
//! torn or damaged entry is recognised and the index rebuilt from there). An entry is added for the first batch that starts at
//! least `index_interval_bytes` after the previous entry; the segment's start is an implicit
//! entry `(0, 0, i64::MIN)`.
//!
//! One file serves both lookups. By offset: the last entry with `relative_offset <= target`
//! gives a position at or before the batch holding the target. By time: timestamps need not be
//! monotonic, but `max_timestamp_before` is; the last entry with `max_timestamp_before < t` is a
//! position before which no record has a timestamp `>= t`, so a forward scan from there finds the
//! first such record. (Kafka keeps two files for this; one file with both columns needs one write
//! and one file handle instead of two, and the time lookup lands directly on a byte position.)
//!
//! The index is a cache, never the truth: it is written without fsync, checked on open, cut back
//! to what the segment really holds, and rebuilt from the segment when it is missing or wrong.

use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Bytes per index entry.
pub(crate) const ENTRY_LEN: usize = 20;

/// One index entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct IndexEntry {
    pub(crate) relative_offset: u32,
    pub(crate) position: u32,
    pub(crate) max_timestamp_before: i64,
}

impl IndexEntry {
    const START: IndexEntry = IndexEntry { relative_offset: 0, position: 0, max_timestamp_before: i64::MIN };

    fn to_bytes(self) -> [u8; ENTRY_LEN] {
        let mut b = [0u8; ENTRY_LEN];
        b[0..4].copy_from_slice(&self.relative_offset.to_le_bytes());
        b[4..8].copy_from_slice(&self.position.to_le_bytes());
        b[8..16].copy_from_slice(&self.max_timestamp_before.to_le_bytes());
        let crc = crc32c::crc32c(&b[..16]);
        b[16..20].copy_from_slice(&crc.to_le_bytes());
        b
    }

    fn from_bytes(b: &[u8]) -> Option<IndexEntry> {
        let crc = u32::from_le_bytes(b[16..20].try_into().ok()?);
        if crc != crc32c::crc32c(&b[..16]) {
            return None;
        }
        let mut r = [0u8; 4];
        let mut p = [0u8; 4];
        let mut t = [0u8; 8];
        r.copy_from_slice(&b[0..4]);
        p.copy_from_slice(&b[4..8]);
        t.copy_from_slice(&b[8..16]);
        Some(IndexEntry {
            relative_offset: u32::from_le_bytes(r),
            position: u32::from_le_bytes(p),
            max_timestamp_before: i64::from_le_bytes(t),
        })
    }
}

/// The in-memory index of a segment and the file it is mirrored to.
#[derive(Debug)]
pub(crate) struct Index {
    entries: Vec<IndexEntry>,
    /// How many entries at the end of `entries` are not in the file yet.
    pending: usize,
    /// The file, opened for each write (an index keeps no file handle open).
    path: PathBuf,
    /// The index of a segment another process writes: never written to its file.
    read_only: bool,
}

/// Entries gathered before they are written out together.
const WRITE_EVERY: usize = 64;

impl Index {
    /// Opens (creating if absent) the index file and reads whatever well-formed entries it
    /// holds, in order, stopping at the first that is not strictly after its predecessor.
    /// The caller checks them against the segment with [`Index::retain_valid`].
    pub(crate) fn open(path: &Path) -> Result<Index> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(Error::io("open index", path))?;
        let mut raw = Vec::new();
        (&file).read_to_end(&mut raw).map_err(Error::io("read index", path))?;
        drop(file);
        let (mut index, well_formed) = Index::parse(path, &raw, false);
        if !well_formed {
            index.rewrite()?;
        }
        Ok(index)
    }

    /// Reads the index of a segment another process writes: its well-formed entries, nothing
    /// if the file is missing or unreadable. The file is never written: entries pushed stay in
    /// memory.
    pub(crate) fn open_read_only(path: &Path) -> Index {
        let raw = std::fs::read(path).unwrap_or_default();
        Index::parse(path, &raw, true).0
    }

    /// The entries of `raw` up to the first malformed or disordered one, and whether that was
    /// all of it.
    fn parse(path: &Path, raw: &[u8], read_only: bool) -> (Index, bool) {
        let mut entries: Vec<IndexEntry> = Vec::with_capacity(raw.len() / ENTRY_LEN);
        for chunk in raw.chunks_exact(ENTRY_LEN) {
            let Some(e) = IndexEntry::from_bytes(chunk) else { break };
            let prev = entries.last().copied().unwrap_or(IndexEntry::START);
            if e.relative_offset <= prev.relative_offset && !entries.is_empty()
                || e.position <= prev.position
                || e.max_timestamp_before < prev.max_timestamp_before
            {
                break;
            }
            entries.push(e);
        }
        let well_formed = entries.len() * ENTRY_LEN == raw.len();
        (Index { entries, pending: 0, path: path.to_owned(), read_only }, well_formed)
    }

    /// Drops entries from the end while `valid` says no, then rewrites the file if any went.
    pub(crate) fn retain_valid(&mut self, mut valid: impl FnMut(&IndexEntry) -> bool) -> Result<()> {
        let before = self.entries.len();
        while let Some(last) = self.entries.last() {
            if valid(last) {
                break;
            }
            self.entries.pop();
        }
        if self.entries.len() != before { self.rewrite() } else { Ok(()) }
    }

    /// Drops every entry at or past `position` (after the segment was cut back).
    pub(crate) fn truncate_to_position(&mut self, position: u64) -> Result<()> {
        self.retain_valid(|e| u64::from(e.position) < position)
    }

    /// The last entry, or the implicit start entry.
    pub(crate) fn last(&self) -> IndexEntry {
        self.entries.last().copied().unwrap_or(IndexEntry::START)
    }

    /// Appends an entry. It reaches the file with the next [`WRITE_EVERY`] entries, at
    /// [`Index::write_pending`] or on drop (never fsynced: the index is a cache).
    pub(crate) fn push(&mut self, e: IndexEntry) -> Result<()> {
        self.entries.push(e);
        self.pending += 1;
        if self.pending >= WRITE_EVERY { self.write_pending() } else { Ok(()) }
    }

    /// Writes the entries not yet in the file.
    pub(crate) fn write_pending(&mut self) -> Result<()> {
        if self.read_only {
            self.pending = 0;
            return Ok(());
        }
        if self.pending == 0 {
            return Ok(());
        }
        let start = self.entries.len() - self.pending;
        let bytes: Vec<u8> = self.entries[start..].iter().flat_map(|e| e.to_bytes()).collect();
        self.pending = 0;
        match OpenOptions::new().append(true).open(&self.path) {
            Ok(mut file) => file.write_all(&bytes).map_err(Error::io("append to index", &self.path)),
            // Retention deleted the segment with its index.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io("open index", &self.path)(e)),
        }
    }

    /// The last entry whose batch starts at or before `relative_offset`.
    pub(crate) fn lookup_offset(&self, relative_offset: u32) -> IndexEntry {
        let i = self.entries.partition_point(|e| e.relative_offset <= relative_offset);
        if i == 0 { IndexEntry::START } else { self.entries[i - 1] }
    }

    /// The last entry before which every record's timestamp is `< timestamp`.
    pub(crate) fn lookup_time(&self, timestamp: i64) -> IndexEntry {
        let i = self.entries.partition_point(|e| e.max_timestamp_before < timestamp);
        if i == 0 { IndexEntry::START } else { self.entries[i - 1] }
    }

    /// Writes the file anew from memory (after entries were dropped).
    fn rewrite(&mut self) -> Result<()> {
        self.pending = 0;
        if self.read_only {
            return Ok(());
        }
        let bytes: Vec<u8> = self.entries.iter().flat_map(|e| e.to_bytes()).collect();
        let mut file = OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&self.path)
            .map_err(Error::io("truncate index", &self.path))?;
        file.write_all(&bytes).map_err(Error::io("rewrite index", &self.path))
    }
}

impl Drop for Index {
    fn drop(&mut self) {
        if let Err(e) = self.write_pending() {
            tracing::warn!(error = %e, "index entries not written");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(o: u32, p: u32, t: i64) -> IndexEntry {
        IndexEntry { relative_offset: o, position: p, max_timestamp_before: t }
    }

    #[test]
    fn lookups_find_the_last_entry_at_or_before() {
        let dir = tempfile::tempdir().unwrap();
        let mut idx = Index::open(&dir.path().join("0.index")).unwrap();
        idx.push(entry(10, 4096, 100)).unwrap();
        idx.push(entry(20, 8192, 100)).unwrap();
        idx.push(entry(30, 12288, 250)).unwrap();
        assert_eq!(idx.lookup_offset(5), IndexEntry::START);
        assert_eq!(idx.lookup_offset(10).position, 4096);
        assert_eq!(idx.lookup_offset(29).position, 8192);
        assert_eq!(idx.lookup_offset(1000).position, 12288);
        assert_eq!(idx.lookup_time(50), IndexEntry::START);
        assert_eq!(idx.lookup_time(100), IndexEntry::START);
        assert_eq!(idx.lookup_time(101).position, 8192);
        assert_eq!(idx.lookup_time(251).position, 12288);
    }

    #[test]
    fn reopen_reads_entries_and_drops_a_torn_or_disordered_tail() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.index");
        {
            let mut idx = Index::open(&path).unwrap();
            idx.push(entry(10, 4096, 1)).unwrap();
            idx.push(entry(20, 8192, 2)).unwrap();
        }
        assert_eq!(Index::open(&path).unwrap().entries.len(), 2);
        // A torn last entry and a backwards one are both dropped, and the file is rewritten.
        let mut raw = std::fs::read(&path).unwrap();
        raw.extend_from_slice(&entry(5, 100, 3).to_bytes());
        raw.extend_from_slice(&[1, 2, 3]);
        std::fs::write(&path, &raw).unwrap();
        let idx = Index::open(&path).unwrap();
        assert_eq!(idx.entries.len(), 2);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 2 * ENTRY_LEN as u64);
    }

    #[test]
    fn truncate_drops_entries_past_the_cut() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.index");
        let mut idx = Index::open(&path).unwrap();
        idx.push(entry(10, 4096, 1)).unwrap();
        idx.push(entry(20, 8192, 2)).unwrap();
        idx.truncate_to_position(8192).unwrap();
        assert_eq!(idx.last().position, 4096);
        assert_eq!(Index::open(&path).unwrap().entries.len(), 1);
    }
}
