//! File sources: the lines of one file or of every file a glob matches, bounded or followed.
//!
//! # Splits
//!
//! The path is resolved once, when the first subtask starts: a pattern with `*`, `?` or `[` is a
//! glob (directories it matches are skipped), anything else a literal path. The matches are
//! sorted by modification time, oldest first (then by path), so rotated logs are read in the
//! order they were written; file `k` of that list is split `k` (each [`Batch::split`] is the file's index) and
//! subtask `i` of `p` reads files `i, i + p, i + 2p, …` (a subtask left without a file ends at
//! once, even in follow mode). A pattern matching nothing, or a missing
//! literal path, is an error: a typo must not look like an empty input. Files created after the
//! start are not picked up.
//!
//! # Lines
//!
//! A line ends at `\n` (a `\r` before it is dropped too). Line numbers are 1-based and count
//! every line, blank and header lines included, so a [`Line`]'s `path:line` points into the file
//! as an editor shows it. Invalid UTF-8 is replaced by U+FFFD (the line is kept). A line longer
//! than 16 MiB is cut into 16 MiB pieces, each a line of its own (logged as a warning), so one
//! runaway line cannot exhaust memory. A batch holds lines of one file only.
//!
//! # Bounded and follow mode
//!
//! Bounded (the default), a subtask reads its files one after the other to their end; a last
//! line without a final newline is still a line. A file read to its end is reported as a
//! finished split, so it stops holding the watermark back and windows fire while the next file
//! is read. Then the subtask ends.
//!
//! With [`FileSource::follow`] the source never ends. Every file is read from its start (like
//! `tail -n +1 -F`); at the end it waits for more, checking every `poll_interval`
//! (default 100 ms) and taking the subtask's files in turn so none starves. A trailing line
//! without a newline is held back until its newline arrives: the writer may be mid-line.
//!
//! Follow mode survives log rotation. At the end of a file it `stat`s the path:
//!
//! - **a different file** (new inode: renamed and recreated, `logrotate`'s default): the old
//!   handle is read to its end first — lines written just before the rotation are not lost —
//!   a held-back partial line is emitted, and the new file is read from its start, with line
//!   numbers starting again at 1;
//! - **the same file, shorter than what was read** (truncated in place, `copytruncate`): the file
//!   is read again from its start;
//! - **the same file, as long or longer, but with other first bytes** (truncated and rewritten
//!   past the read position before the check, `copytruncate` followed by a burst of writes):
//!   the file is read again from its start. The first 4 KiB of each file
//!   are remembered as they are read and compared with the file's at every check;
//! - **no file** (renamed, not yet recreated): the old handle is kept and read, since writers
//!   often write a last line to it, until a new file appears.
//!
//! A file truncated and rewritten with the same first bytes (a constant header line longer than
//! the fingerprint, say) is not told from an append. The checks run when the reader is at the
//! end of the file, before it reads what was written since: a rewrite while the reader is
//! still behind is noticed only when it catches up. On systems without
//! inodes only truncation and rewriting are detected.
//!
//! # Checkpoints
//!
//! A reader's position, per file, is its path, the byte offset after the last complete line
//! handed downstream and that line's number (or that the file was read to its end). A restored
//! reader opens each of its files that has a saved position at that offset (re-reading a CSV
//! file's header first), and skips the files that were finished; files are matched by path, so
//! the files may be spread over another number of subtasks. A file replaced under the same path
//! between the checkpoint and the restore is not noticed.
//!
//! # Cancel safety
//!
//! Reads are buffered (64 KiB) blocking calls inside [`FileReader::next_batch`]; its only await
//! is the follow-mode sleep, at which no data is in flight, so dropping the future loses nothing.

mod format;
mod tail;

pub use format::{Csv, JsonLines, LineFormat, Lines};

use std::marker::PhantomData;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use weir_runtime::{Batch, Result, Source, SourceReader, SplitPositions, Traceable};

use crate::files::resolve;
#[cfg(doc)]
use crate::parse::{CsvLine, JsonLine};
use crate::{DEFAULT_BATCH_SIZE, check_batch_size, connector_error};
use tail::{FilePosition, TailedFile};

/// One line of a text file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// The file, as given or as the glob matched it.
    pub path: Arc<str>,
    /// The line number, from 1.
    pub line: u64,
    /// The line, without its line ending.
    pub text: String,
}

impl Traceable for Line {
    /// `path:line`, e.g. `logs/access.log:17`.
    fn origin(&self) -> String {
        format!("{}:{}", self.path, self.line)
    }

    /// The line's text.
    fn payload(&self) -> String {
        self.text.clone()
    }
}

/// Reads the lines of a file, or of every file a glob matches (see the [module docs](crate::file_source) for splits,
/// follow mode and rotation).
///
/// # Examples
///
/// ```no_run
/// use weir_connectors::{FileSink, FileSource};
/// use weir_runtime::Pipeline;
///
/// # async fn run() -> weir_runtime::Result<()> {
/// let p = Pipeline::builder("errors").parallelism(2).build()?;
/// p.source(FileSource::lines("logs/*.log"))
///     .filter(|l| l.text.contains("ERROR"))
///     .map(|l| l.text)
///     .sink(FileSink::json_lines("out/errors.jsonl"));
/// p.run().await?;
/// # Ok(())
/// # }
/// ```
pub struct FileSource<F = Lines> {
    pattern: String,
    format: Arc<F>,
    follow: bool,
    poll_interval: Duration,
    batch_size: usize,
    /// The matched files, resolved once and shared by the subtasks (or why resolving failed).
    files: OnceLock<std::result::Result<Arc<[PathBuf]>, String>>,
}

impl<F> std::fmt::Debug for FileSource<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileSource")
            .field("pattern", &self.pattern)
            .field("follow", &self.follow)
            .field("poll_interval", &self.poll_interval)
            .field("batch_size", &self.batch_size)
            .finish_non_exhaustive()
    }
}

impl<F> Clone for FileSource<F> {
    /// A copy with the same settings; it resolves the path again when it starts.
    fn clone(&self) -> Self {
        FileSource {
            pattern: self.pattern.clone(),
            format: self.format.clone(),
            follow: self.follow,
            poll_interval: self.poll_interval,
            batch_size: self.batch_size,
            files: OnceLock::new(),
        }
    }
}

impl FileSource<Lines> {
    /// Every line of the file at `path_or_glob` (or of every file the glob matches) as a
    /// [`Line`]: bounded, in batches of 1024.
    pub fn lines(path_or_glob: impl Into<String>) -> FileSource<Lines> {
        FileSource::with_format(path_or_glob.into(), Lines)
    }

    /// The non-blank lines of JSON-lines files, each a [`JsonLine<T>`] to parse with
    /// [`ParseExt::parsed`](crate::ParseExt::parsed) (or `try_map(JsonLine::parse)`), which sends
    /// lines that are not a valid `T` to the dead letters.
    pub fn json_lines<T: 'static>(path_or_glob: impl Into<String>) -> FileSource<JsonLines<T>> {
        FileSource::with_format(path_or_glob.into(), JsonLines(PhantomData))
    }

    /// The records of CSV files with a header line: every non-blank line after the header is a
    /// [`CsvLine<T>`] to parse with [`ParseExt::parsed`](crate::ParseExt::parsed), which maps
    /// columns to `T`'s fields by the header's names and sends bad lines to the dead letters.
    ///
    /// One line is one record: quoted fields cannot span lines (a line break inside quotes
    /// leaves both halves with unbalanced quotes, and both become dead letters). In exchange, a
    /// malformed line never swallows the lines after it.
    pub fn csv<T: 'static>(path_or_glob: impl Into<String>) -> FileSource<Csv<T>> {
        FileSource::with_format(path_or_glob.into(), Csv(PhantomData))
    }
}

impl<F: LineFormat> FileSource<F> {
    fn with_format(pattern: String, format: F) -> FileSource<F> {
        FileSource {
            pattern,
            format: Arc::new(format),
            follow: false,
            poll_interval: Duration::from_millis(100),
            batch_size: DEFAULT_BATCH_SIZE,
            files: OnceLock::new(),
        }
    }

    /// Tails the files instead of ending at their end, surviving rotation and truncation (see
    /// the [module docs](crate::file_source)). Default: bounded.
    pub fn follow(mut self) -> Self {
        self.follow = true;
        self
    }

    /// How long follow mode waits before looking again when no file has new data. Default:
    /// 100 ms.
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval;
        self
    }

    /// Most lines per batch (at least 1, checked when the source starts). Default: 1024.
    pub fn batch_size(mut self, n: usize) -> Self {
        self.batch_size = n;
        self
    }

    /// The path or glob, as given.
    pub fn pattern(&self) -> &str {
        &self.pattern
    }

    fn resolved(&self) -> Result<Arc<[PathBuf]>> {
        self.files
            .get_or_init(|| resolve(&self.pattern).map(Arc::from))
            .clone()
            .map_err(|message| connector_error("file source", &self.pattern, message))
    }
}

impl<F: LineFormat> Source for FileSource<F> {
    type Item = F::Item;
    type Reader = FileReader<F>;

    fn name(&self) -> String {
        format!("file:{}", self.pattern)
    }

    fn is_bounded(&self) -> bool {
        !self.follow
    }

    fn reader_at(
        &self,
        subtask: usize,
        parallelism: usize,
        positions: &SplitPositions,
    ) -> Result<FileReader<F>> {
        let mut reader = self.reader(subtask, parallelism)?;
        let mut saved = std::collections::HashMap::new();
        for (_, bytes) in positions.iter() {
            let p: FilePosition = weir_runtime::decode(bytes)?;
            saved.insert(p.path.clone(), p);
        }
        for file in &mut reader.files {
            if let Some(p) = saved.get(&*file.name) {
                file.resume(p, &*self.format)?;
            }
        }
        Ok(reader)
    }

    fn reader(&self, subtask: usize, parallelism: usize) -> Result<FileReader<F>> {
        check_batch_size(self.batch_size)?;
        if self.follow && self.poll_interval.is_zero() {
            return Err(weir_runtime::Error::InvalidConfig {
                field: "poll_interval",
                reason: "must be greater than zero in follow mode".into(),
            });
        }
        let files = self.resolved()?;
        let files = files
            .iter()
            .enumerate()
            .skip(subtask)
            .step_by(parallelism.max(1))
            .map(|(index, path)| TailedFile::new(u32::try_from(index).unwrap_or(u32::MAX), path.clone()))
            .collect();
        Ok(FileReader {
            format: self.format.clone(),
            files,
            cursor: 0,
            finished: Vec::new(),
            follow: self.follow,
            poll_interval: self.poll_interval,
            batch_size: self.batch_size,
        })
    }
}

/// The reader of one [`FileSource`] subtask: its share of the files.
pub struct FileReader<F> {
    format: Arc<F>,
    files: Vec<TailedFile>,
    /// The file to read first on the next call.
    cursor: usize,
    /// Splits (files) read to their end and not reported yet.
    finished: Vec<u32>,
    follow: bool,
    poll_interval: Duration,
    batch_size: usize,
}

impl<F> std::fmt::Debug for FileReader<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileReader")
            .field("files", &self.files.iter().map(|t| &t.name).collect::<Vec<_>>())
            .field("follow", &self.follow)
            .finish_non_exhaustive()
    }
}

impl<F: LineFormat> SourceReader for FileReader<F> {
    type Item = F::Item;

    async fn next_batch(&mut self) -> Result<Option<Batch<F::Item>>> {
        loop {
            let n = self.files.len();
            if self.files.iter().all(|f| f.done) {
                return Ok(None);
            }
            for k in 0..n {
                let i = (self.cursor + k) % n;
                let file = &mut self.files[i];
                if file.done {
                    continue;
                }
                let mut records = Vec::new();
                file.read(&*self.format, self.batch_size, self.follow, &mut records)?;
                if file.done {
                    self.finished.push(file.index);
                }
                if !records.is_empty() {
                    // Follow mode takes the files in turn; bounded mode finishes one first.
                    self.cursor = if self.follow { (i + 1) % n } else { i };
                    return Ok(Some(Batch::from_split(file.index, records)));
                }
            }
            if !self.follow {
                continue; // Every file read to its end is `done` now.
            }
            let mut changed = false;
            for file in &mut self.files {
                changed |= file.check_rotation()?;
            }
            if !changed {
                tokio::time::sleep(self.poll_interval).await;
            }
        }
    }

    fn finished_split(&mut self) -> Option<u32> {
        self.finished.pop()
    }

    fn bytes_read(&self) -> u64 {
        self.files.iter().map(|f| f.bytes_read).sum()
    }

    fn positions(&self) -> Vec<(u32, Vec<u8>)> {
        self.files
            .iter()
            .filter_map(|f| {
                let position = f.position()?;
                weir_runtime::encode(&position).ok().map(|p| (f.index, p))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[tokio::test]
    async fn bounded_reads_every_line_and_the_last_without_newline() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.txt");
        std::fs::write(&path, "one\r\ntwo\n\nfour").unwrap();
        let source = FileSource::lines(path.to_str().unwrap()).batch_size(2);
        let mut reader = source.reader(0, 1).unwrap();
        let mut lines = Vec::new();
        while let Some(batch) = reader.next_batch().await.unwrap() {
            assert!(batch.len() <= 2);
            lines.extend(batch.records.into_iter().map(|l| (l.line, l.text)));
        }
        let want = vec![(1, "one"), (2, "two"), (3, ""), (4, "four")];
        assert_eq!(lines, want.into_iter().map(|(n, t)| (n, t.to_owned())).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn invalid_utf8_is_replaced_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bin.txt");
        std::fs::write(&path, b"ok\n\xff\xfe\n").unwrap();
        let mut reader = FileSource::lines(path.to_str().unwrap()).reader(0, 1).unwrap();
        let batch = reader.next_batch().await.unwrap().unwrap();
        assert_eq!(batch.records[0].text, "ok");
        assert_eq!(batch.records[1].text, "\u{fffd}\u{fffd}");
        assert!(reader.next_batch().await.unwrap().is_none());
    }

    #[test]
    fn zero_batch_size_is_rejected_naming_the_field() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.txt");
        std::fs::write(&path, "x\n").unwrap();
        let err = FileSource::lines(path.to_str().unwrap()).batch_size(0).reader(0, 1).unwrap_err();
        assert!(matches!(err, weir_runtime::Error::InvalidConfig { field: "batch_size", .. }), "{err}");
    }

    /// Lines written to the old file after the reader last found its end, but before it saw

    #[test]
    fn line_origin_is_path_and_line() {
        let line = Line { path: "logs/a.log".into(), line: 17, text: "x".into() };
        assert_eq!(line.origin(), "logs/a.log:17");
        assert_eq!(line.payload(), "x");
    }
}
