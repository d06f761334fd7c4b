//! Helpers shared by the integration tests: walking segment files with the documented batch
//! header layout (`base_offset: u64` at byte 0, `length: u32` at byte 8, `record_count: u32` at
//! byte 18; a batch is `12 + length` bytes), editing files directly, and a deterministic random
//! number generator.

// Not every test uses every helper.
#![allow(dead_code)]
#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

use std::path::{Path, PathBuf};

use weir_log::{Log, LogOptions, Record, TopicConfig};

/// A log written once by [`build_fixture`] and closed, for tests to reopen, copy and damage.
pub(crate) struct Fixture {
    pub(crate) tmp: tempfile::TempDir,
    /// The log's directory, inside `tmp`.
    pub(crate) dir: PathBuf,
    /// Records appended to each partition (offset = index).
    pub(crate) records: Vec<Record>,
}

/// Writes a log in a fresh temporary directory: creates `topic` with `config` and appends
/// `record(0)`, `record(1)`, ... to every partition, in appends of `sizes` records each, checking
/// that each append starts where the previous one ended.
pub(crate) fn build_fixture(
    options: LogOptions,
    topic: &str,
    config: TopicConfig,
    sizes: impl IntoIterator<Item = u64>,
    record: impl Fn(u64) -> Record,
) -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    let log = Log::open(&dir, options).unwrap();
    let partitions = config.partitions;
    let topic = log.create_topic(topic, config).unwrap();
    let mut records = Vec::new();
    for n in sizes {
        let batch: Vec<Record> = (records.len() as u64..records.len() as u64 + n).map(&record).collect();
        for p in 0..partitions {
            let appended = topic.append(p, &batch).unwrap();
            assert_eq!(appended.base_offset, records.len() as u64);
        }
        records.extend(batch);
    }
    drop(topic);
    drop(log);
    Fixture { tmp, dir, records }
}

/// A topic of `partitions` partitions with 4 KiB segments and an index entry every 256 bytes:
/// a few hundred small records make several segments with several index entries each.
pub(crate) fn small_segments(partitions: u32) -> TopicConfig {
    TopicConfig { partitions, segment_bytes: 4096, index_interval_bytes: 256, ..TopicConfig::default() }
}

/// A batch as found by walking a segment file with the documented header layout.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BatchInfo {
    pub(crate) position: u64,
    pub(crate) len: u64,
    pub(crate) base_offset: u64,
    pub(crate) count: u64,
}

impl BatchInfo {
    pub(crate) fn next_offset(&self) -> u64 {
        self.base_offset + self.count
    }
}

/// The batches of a segment file, in order; fails unless the file ends on a batch boundary.
pub(crate) fn batches(segment: &Path) -> Vec<BatchInfo> {
    let bytes = std::fs::read(segment).unwrap();
    let mut out = Vec::new();
    let mut pos = 0usize;
    while pos < bytes.len() {
        let h = &bytes[pos..];
        let base_offset = u64::from_le_bytes(h[0..8].try_into().unwrap());
        let len = 12 + u64::from(u32::from_le_bytes(h[8..12].try_into().unwrap()));
        let count = u64::from(u32::from_le_bytes(h[18..22].try_into().unwrap()));
        out.push(BatchInfo { position: pos as u64, len, base_offset, count });
        pos += len as usize;
    }
    assert_eq!(pos, bytes.len(), "{} does not end on a batch boundary", segment.display());
    out
}

/// The files in `dir` with extension `ext`, sorted by path.
pub(crate) fn files_with_ext(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect();
    files.sort();
    files
}

/// Copies the directory tree `from` to `to`.
pub(crate) fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// Replaces whatever is at `to` with a fresh copy of the directory tree `from`.
pub(crate) fn fresh_copy(from: &Path, to: &Path) {
    let _ = std::fs::remove_dir_all(to);
    copy_dir(from, to);
}

/// Cuts (or extends) the file at `path` to `len` bytes.
pub(crate) fn truncate(path: &Path, len: u64) {
    std::fs::OpenOptions::new().write(true).open(path).unwrap().set_len(len).unwrap();
}

/// Appends `bytes` to the file at `path`.
pub(crate) fn append_bytes(path: &Path, bytes: &[u8]) {
    use std::io::Write;
    std::fs::OpenOptions::new().append(true).open(path).unwrap().write_all(bytes).unwrap();
}

/// A small deterministic generator (SplitMix64), so failures reproduce.
#[allow(unused_imports)] // Not every test that includes this module draws random numbers.
pub(crate) use weir_testkit::Rng;
