//! Segment file handles, opened on use and cached with a bound, so a log of many partitions
//! works under a default `ulimit -n`.
//!
//! Every segment has a [`SegmentFile`]: its path and, while cached, an open file. One
//! process-wide cache holds at most [`capacity`] open segment files (a quarter of the soft
//! `RLIMIT_NOFILE`, between 16 and 4096). Opening one more closes the least recently used other
//! one first. Readers and writers hold an `Arc<File>` only for the duration of one operation, so
//! an evicted file closes when the last such operation ends.
//!
//! Invariants:
//! - A file with writes not yet synced is synced (`fdatasync`) before the cache closes it; if
//!   that sync fails, the error is kept and returned by the segment's next [`SegmentFile::sync`],
//!   which poisons the partition as any failed sync does. No write error is lost to eviction.
//! - Handles of index files are not cached: an index is read once on open and written in groups
//!   of entries, each write opening and closing the file.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError, Weak};

/// Fewest and most open segment files the cache keeps.
const MIN_CAPACITY: usize = 16;
const MAX_CAPACITY: usize = 4096;
/// Used when the file-descriptor limit cannot be read.
const DEFAULT_CAPACITY: usize = 256;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A segment's file: its path, and an open handle while the cache keeps one.
#[derive(Debug)]
pub(crate) struct SegmentFile {
    slot: Arc<Slot>,
}

#[derive(Debug)]
struct Slot {
    path: PathBuf,
    /// Opened read-only (a reader beside another process's writer), else read-write.
    read_only: bool,
    /// The cache's clock at the last use.
    last_used: AtomicU64,
    state: Mutex<SlotState>,
}

#[derive(Debug, Default)]
struct SlotState {
    file: Option<Arc<File>>,
    /// Written since the last `fdatasync`.
    dirty: bool,
    /// A failed `fdatasync` made when the cache closed the file, for the next `sync` to report.
    failed_sync: Option<io::Error>,
}

struct Cache {
    capacity: usize,
    clock: AtomicU64,
    open: Mutex<Vec<Weak<Slot>>>,
}

/// How many segment files the process keeps open at most.
#[cfg(test)]
fn capacity() -> usize {
    cache().capacity
}

fn cache() -> &'static Cache {
    static CACHE: OnceLock<Cache> = OnceLock::new();
    CACHE.get_or_init(|| Cache {
        capacity: open_files_limit()
            .map_or(DEFAULT_CAPACITY, |n| usize::try_from(n / 4).unwrap_or(MAX_CAPACITY))
            .clamp(MIN_CAPACITY, MAX_CAPACITY),
        clock: AtomicU64::new(0),
        open: Mutex::new(Vec::new()),
    })
}

/// The soft limit on open files (`ulimit -n`), from `/proc/self/limits` where there is one.
fn open_files_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.trim_start_matches("Max open files").split_whitespace().next()?.parse().ok()
}

impl Cache {
    /// Records that `slot` holds an open file, and closes the least recently used others while
    /// more than `capacity` are open.
    fn opened(&self, slot: &Arc<Slot>) {
        let victims: Vec<Arc<Slot>> = {
            let mut open = lock(&self.open);
            open.push(Arc::downgrade(slot));
            if open.len() <= self.capacity {
                return;
            }
            let mut live: Vec<(u64, Arc<Slot>)> = open
                .iter()
                .filter_map(Weak::upgrade)
                .filter(|s| !Arc::ptr_eq(s, slot) && s.is_open())
                .map(|s| (s.last_used.load(Ordering::Relaxed), s))
                .collect();
            let excess = (live.len() + 1).saturating_sub(self.capacity);
            live.sort_unstable_by_key(|(t, _)| *t);
            let victims: Vec<Arc<Slot>> = live.drain(..excess.min(live.len())).map(|(_, s)| s).collect();
            *open = live.iter().map(|(_, s)| Arc::downgrade(s)).chain([Arc::downgrade(slot)]).collect();
            victims
        };
        for victim in victims {
            victim.close();
        }
    }
}

impl Slot {
    fn is_open(&self) -> bool {
        lock(&self.state).file.is_some()
    }

    /// Closes the cached handle, syncing it first if it has unsynced writes.
    fn close(&self) {
        let (file, dirty) = {
            let mut state = lock(&self.state);
            (state.file.take(), std::mem::take(&mut state.dirty))
        };
        if let (Some(file), true) = (file, dirty)
            && let Err(e) = file.sync_data()
        {
            tracing::error!(path = %self.path.display(), error = %e, "fdatasync of a segment closed by the file cache failed");
            lock(&self.state).failed_sync.get_or_insert(e);
        }
    }
}

impl SegmentFile {
    /// A segment file that is not open yet.
    #[cfg(test)]
    pub(crate) fn closed(path: PathBuf) -> SegmentFile {
        SegmentFile::closed_with(path, false)
    }

    fn closed_with(path: PathBuf, read_only: bool) -> SegmentFile {
        SegmentFile {
            slot: Arc::new(Slot {
                path,
                read_only,
                last_used: AtomicU64::new(0),
                state: Mutex::new(SlotState::default()),
            }),
        }
    }

    /// A segment file already opened (read-write) by the caller; the cache takes it over.
    pub(crate) fn with_open(path: PathBuf, file: File) -> SegmentFile {
        SegmentFile::with_open_as(path, file, false)
    }

    /// A segment file already opened by the caller, read-only if `read_only` (then it is
    /// reopened read-only too); the cache takes it over.
    pub(crate) fn with_open_as(path: PathBuf, file: File, read_only: bool) -> SegmentFile {
        let segment = SegmentFile::closed_with(path, read_only);
        lock(&segment.slot.state).file = Some(Arc::new(file));
        segment.touch();
        cache().opened(&segment.slot);
        segment
    }

    fn touch(&self) {
        self.slot.last_used.store(cache().clock.fetch_add(1, Ordering::Relaxed), Ordering::Relaxed);
    }

    /// The open file, opened (read-write, or read-only for a reader) if the cache closed it.
    pub(crate) fn get(&self) -> io::Result<Arc<File>> {
        self.touch();
        if let Some(file) = &lock(&self.slot.state).file {
            return Ok(file.clone());
        }
        let file = Arc::new(OpenOptions::new().read(true).write(!self.slot.read_only).open(&self.slot.path)?);
        {
            let mut state = lock(&self.slot.state);
            if let Some(raced) = &state.file {
                return Ok(raced.clone());
            }
            state.file = Some(file.clone());
        }
        cache().opened(&self.slot);
        Ok(file)
    }

    /// Records a write that is not synced yet (the cache syncs before closing the file).
    pub(crate) fn written(&self) {
        lock(&self.slot.state).dirty = true;
    }

    /// `fdatasync`: reports a sync that failed when the cache closed the file, else syncs now.
    pub(crate) fn sync(&self) -> io::Result<()> {
        let file = self.get()?;
        {
            let mut state = lock(&self.slot.state);
            if let Some(e) = state.failed_sync.take() {
                return Err(e);
            }
            state.dirty = false;
        }
        file.sync_data().inspect_err(|_| lock(&self.slot.state).dirty = true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_keeps_at_most_its_capacity_open_and_reopens_on_use() {
        let dir = tempfile::tempdir().expect("temp dir");
        let n = capacity() + 10;
        let files: Vec<SegmentFile> = (0..n)
            .map(|i| {
                let path = dir.path().join(format!("{i}.log"));
                std::fs::write(&path, format!("file {i}")).expect("write");
                SegmentFile::closed(path)
            })
            .collect();
        for f in &files {
            f.get().expect("open");
        }
        let open = files.iter().filter(|f| f.slot.is_open()).count();
        assert!(open <= capacity(), "{open} open, capacity {}", capacity());
        // The first ones were evicted and open again on use, with their contents.
        let first = files[0].get().expect("reopen");
        let mut buf = [0u8; 6];
        std::os::unix::fs::FileExt::read_exact_at(&*first, &mut buf, 0).expect("read");
        assert_eq!(&buf, b"file 0");
        files[0].written();
        files[0].sync().expect("sync");
    }
}
