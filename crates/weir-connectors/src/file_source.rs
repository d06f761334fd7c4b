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
//!   the file is read again from its start. The first [`FINGERPRINT_BYTES`] bytes of each file
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

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek};
use std::marker::PhantomData;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use weir_runtime::{Batch, Result, Source, SourceReader, SplitPositions, Traceable};

use crate::parse::{CsvHeader, CsvLine, JsonLine};
use crate::{DEFAULT_BATCH_SIZE, check_batch_size, connector_error};

/// Longest line kept whole; longer lines are cut into pieces of this size.
const MAX_LINE_BYTES: usize = 16 << 20;

/// Read buffer per open file.
const READ_BUFFER_BYTES: usize = 64 << 10;

/// How many of a file's first bytes follow mode remembers to tell a rewrite from an append.
const FINGERPRINT_BYTES: usize = 4096;

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

#[allow(unreachable_pub)] // Sealed: nameable by no one outside the crate.
mod sealed {
    pub trait Sealed {}
}

/// How a [`FileSource`] turns lines into records: [`Lines`], [`JsonLines`] or [`Csv`].
///
/// Sealed: the formats are the three types of this crate.
pub trait LineFormat: sealed::Sealed + Send + Sync + 'static {
    /// The records the source yields.
    type Item: Traceable + Send + 'static;

    /// Whether the first non-blank line of each file is a header rather than a record.
    #[doc(hidden)]
    fn has_header(&self) -> bool {
        false
    }

    /// Whether blank lines are skipped (they still count for line numbers).
    #[doc(hidden)]
    fn skip_blank(&self) -> bool {
        false
    }

    /// The record for a line; `header` is the file's header when [`LineFormat::has_header`].
    #[doc(hidden)]
    fn item(&self, line: Line, header: Option<&Arc<CsvHeader>>) -> Self::Item;
}

/// Every line as a [`Line`]; see [`FileSource::lines`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Lines;

impl sealed::Sealed for Lines {}

impl LineFormat for Lines {
    type Item = Line;

    fn item(&self, line: Line, _: Option<&Arc<CsvHeader>>) -> Line {
        line
    }
}

/// Non-blank lines as [`JsonLine<T>`]s; see [`FileSource::json_lines`].
pub struct JsonLines<T>(PhantomData<fn() -> T>);

impl<T> std::fmt::Debug for JsonLines<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JsonLines")
    }
}

impl<T> sealed::Sealed for JsonLines<T> {}

impl<T: 'static> LineFormat for JsonLines<T> {
    type Item = JsonLine<T>;

    fn skip_blank(&self) -> bool {
        true
    }

    fn item(&self, line: Line, _: Option<&Arc<CsvHeader>>) -> JsonLine<T> {
        JsonLine::new(line)
    }
}

/// A header line, then non-blank lines as [`CsvLine<T>`]s; see [`FileSource::csv`].
pub struct Csv<T>(PhantomData<fn() -> T>);

impl<T> std::fmt::Debug for Csv<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Csv")
    }
}

impl<T> sealed::Sealed for Csv<T> {}

impl<T: 'static> LineFormat for Csv<T> {
    type Item = CsvLine<T>;

    fn has_header(&self) -> bool {
        true
    }

    fn skip_blank(&self) -> bool {
        true
    }

    fn item(&self, line: Line, header: Option<&Arc<CsvHeader>>) -> CsvLine<T> {
        let header = header.cloned().unwrap_or_else(|| Arc::new(CsvHeader::parse("")));
        CsvLine::new(line, header)
    }
}

/// Reads the lines of a file, or of every file a glob matches (see the module docs for splits,
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
    /// the module docs). Default: bounded.
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

/// Whether `pattern` uses glob syntax.
fn is_glob(pattern: &str) -> bool {
    pattern.contains(['*', '?', '['])
}

/// The files `pattern` names, oldest first; an error message if none.
fn resolve(pattern: &str) -> std::result::Result<Vec<PathBuf>, String> {
    if !is_glob(pattern) {
        let path = PathBuf::from(pattern);
        return match std::fs::metadata(&path) {
            Ok(m) if m.is_dir() => Err("is a directory, not a file".to_owned()),
            Ok(_) => Ok(vec![path]),
            Err(e) => Err(format!("cannot open: {e}")),
        };
    }
    let matches = glob::glob(pattern).map_err(|e| format!("invalid glob pattern: {e}"))?;
    let mut files = Vec::new();
    for entry in matches {
        let path = entry.map_err(|e| format!("cannot list {}: {}", e.path().display(), e.error()))?;
        if !path.is_dir() {
            files.push(path);
        }
    }
    if files.is_empty() {
        return Err("the pattern matches no file".to_owned());
    }
    // Oldest first: rotated logs (`access.log.2`, `access.log.1`, `access.log`) are read in the
    // order they were written, so event time rises from file to file.
    let modified = |p: &PathBuf| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    files.sort_by_cached_key(|p| (modified(p), p.clone()));
    Ok(files)
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

/// Where a file's reading resumes (see the module docs).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct FilePosition {
    path: String,
    /// Read to its end.
    done: bool,
    /// Bytes of the complete lines handed downstream.
    offset: u64,
    /// The number of the last of them.
    line: u64,
}

/// A file's identity: device and inode where there are inodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileId(u64, u64);

#[cfg(unix)]
fn file_id(meta: &std::fs::Metadata) -> Option<FileId> {
    use std::os::unix::fs::MetadataExt;
    Some(FileId(meta.dev(), meta.ino()))
}

#[cfg(not(unix))]
fn file_id(_: &std::fs::Metadata) -> Option<FileId> {
    None
}

/// An open file and how far it has been read.
struct OpenFile {
    reader: BufReader<File>,
    id: Option<FileId>,
    /// Bytes consumed: complete lines plus the held-back partial line.
    consumed: u64,
    /// Lines consumed so far: the number of the last line.
    line: u64,
    /// A trailing line without its newline yet (follow mode).
    partial: Vec<u8>,
    /// The file's CSV header, once read.
    header: Option<Arc<CsvHeader>>,
    /// The file's first bytes as read (up to [`FINGERPRINT_BYTES`]): if the file no longer
    /// starts with them, it was rewritten.
    head: Vec<u8>,
    /// The file was rewritten in place: nothing more is read from this handle.
    stale: bool,
}

impl OpenFile {
    fn new(file: File) -> OpenFile {
        let id = file.metadata().ok().as_ref().and_then(file_id);
        OpenFile {
            reader: BufReader::with_capacity(READ_BUFFER_BYTES, file),
            id,
            consumed: 0,
            line: 0,
            partial: Vec::new(),
            header: None,
            head: Vec::new(),
            stale: false,
        }
    }

    /// Remembers the part of `read`, the bytes just read at `at`, that lies in the first
    /// [`FINGERPRINT_BYTES`] of the file.
    fn remember_head(&mut self, at: u64, read: &[u8]) {
        if at < FINGERPRINT_BYTES as u64 && at == self.head.len() as u64 {
            let n = read.len().min(FINGERPRINT_BYTES - self.head.len());
            self.head.extend_from_slice(&read[..n]);
        }
    }
}

/// The first `n` bytes of the file at `path` (fewer if it is shorter).
fn first_bytes(path: &std::path::Path, n: usize) -> std::io::Result<Vec<u8>> {
    let mut head = Vec::with_capacity(n);
    File::open(path)?.take(n as u64).read_to_end(&mut head)?;
    Ok(head)
}

/// One file of a subtask.
struct TailedFile {
    index: u32,
    path: PathBuf,
    name: Arc<str>,
    open: Option<OpenFile>,
    /// The path now names another file (or this one was truncated): finish the old handle, then
    /// reopen.
    reopen: bool,
    /// Read to the end (bounded mode).
    done: bool,
    /// Bytes of the lines read, line ends included.
    bytes_read: u64,
    /// Follow mode: the last read found the end; the file is checked before it is read again.
    at_end: bool,
}

/// What one read found at the end.
enum Step {
    /// A line, complete or (at the end of a finished file) not.
    Line(Vec<u8>),
    /// Nothing more for now.
    End,
}

impl TailedFile {
    fn new(index: u32, path: PathBuf) -> TailedFile {
        let name: Arc<str> = path.to_string_lossy().into();
        TailedFile { index, path, name, open: None, reopen: false, done: false, bytes_read: 0, at_end: false }
    }

    fn error(&self, action: &str, e: impl Into<weir_runtime::BoxError>) -> weir_runtime::Error {
        connector_error("file source", self.path.display(), crate::Failed::new(action, e))
    }

    /// Where reading resumes; `None` for a file not opened yet.
    fn position(&self) -> Option<FilePosition> {
        let path = self.name.to_string();
        if self.done {
            return Some(FilePosition { path, done: true, offset: 0, line: 0 });
        }
        let open = self.open.as_ref()?;
        let offset = open.consumed - open.partial.len() as u64;
        Some(FilePosition { path, done: false, offset, line: open.line })
    }

    /// Continues at a saved position: opens the file there (after reading a CSV header).
    fn resume<F: LineFormat>(&mut self, p: &FilePosition, format: &F) -> Result<()> {
        if p.done {
            self.done = true;
            return Ok(());
        }
        let file = File::open(&self.path).map_err(|e| self.error("open", e))?;
        self.open = Some(OpenFile::new(file));
        if format.has_header() {
            // The header is the first non-blank line (read again, then skipped past).
            let mut header = Vec::new();
            while self.open.as_ref().is_some_and(|o| o.header.is_none() && o.consumed < p.offset) {
                match self.next_line(true)? {
                    Step::Line(bytes) => self.push_line(format, bytes, &mut header),
                    Step::End => break,
                }
            }
        }
        // What the file starts with now stands for what was read before the checkpoint.
        let n = (p.offset as usize).min(FINGERPRINT_BYTES);
        let head = first_bytes(&self.path, n).map_err(|e| self.error("read", e))?;
        let Some(open) = self.open.as_mut() else { return Ok(()) };
        open.head = head;
        if let Err(e) = open.reader.seek(std::io::SeekFrom::Start(p.offset)) {
            return Err(self.error("seek", e));
        }
        open.consumed = p.offset;
        open.line = p.line;
        open.partial.clear();
        Ok(())
    }

    /// Reads up to `max` records into `out`. At the end of the file, a bounded read marks the
    /// file done; a follow-mode read switches to the new file if a rotation was seen.
    fn read<F: LineFormat>(
        &mut self,
        format: &F,
        max: usize,
        follow: bool,
        out: &mut Vec<F::Item>,
    ) -> Result<()> {
        if follow && std::mem::take(&mut self.at_end) {
            // What was written since may be a rewrite: look before reading on.
            self.check_rotation()?;
        }
        while out.len() < max {
            if self.open.is_none() {
                match File::open(&self.path) {
                    Ok(file) => self.open = Some(OpenFile::new(file)),
                    // Follow mode: gone between the rotation check and here; wait for it.
                    Err(e) if follow && e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
                    Err(e) => return Err(self.error("open", e)),
                }
            }
            // The last complete data of a file is final when the file is finished: bounded, or
            // rotated away.
            let last = !follow || self.reopen;
            match self.next_line(last)? {
                Step::Line(bytes) => self.push_line(format, bytes, out),
                Step::End if self.reopen => {
                    tracing::info!(file = %self.name, "file rotated or truncated; reading the new one from its start");
                    self.open = None;
                    self.reopen = false;
                }
                Step::End => {
                    if follow {
                        self.at_end = true;
                    } else {
                        self.done = true;
                        self.open = None;
                    }
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// The next line of the open file. A trailing line without a newline is returned if `last`,
    /// else held back.
    fn next_line(&mut self, last: bool) -> Result<Step> {
        let Some(open) = self.open.as_mut() else { return Ok(Step::End) };
        let mut buf = std::mem::take(&mut open.partial);
        let limit = MAX_LINE_BYTES.saturating_sub(buf.len()) as u64;
        let before = buf.len();
        let read = if open.stale {
            Ok(0) // Rewritten: what follows in this handle is the new content, read from 0.
        } else {
            (&mut open.reader).take(limit).read_until(b'\n', &mut buf)
        };
        let n = match read {
            Ok(n) => n,
            Err(e) => {
                open.partial = buf;
                return Err(self.error("read", e));
            }
        };
        open.remember_head(open.consumed, &buf[before..]);
        open.consumed += n as u64;
        if buf.last() == Some(&b'\n') {
            return Ok(Step::Line(buf));
        }
        if buf.len() >= MAX_LINE_BYTES {
            tracing::warn!(file = %self.name, line = open.line + 1, "line longer than 16 MiB cut into pieces");
            return Ok(Step::Line(buf));
        }
        if buf.is_empty() {
            return Ok(Step::End);
        }
        if last {
            // A final line without a newline; the next read finds the end.
            return Ok(Step::Line(buf));
        }
        open.partial = buf;
        Ok(Step::End)
    }

    fn push_line<F: LineFormat>(&mut self, format: &F, mut bytes: Vec<u8>, out: &mut Vec<F::Item>) {
        let Some(open) = self.open.as_mut() else { return };
        open.line += 1;
        self.bytes_read += bytes.len() as u64;
        if bytes.last() == Some(&b'\n') {
            bytes.pop();
            if bytes.last() == Some(&b'\r') {
                bytes.pop();
            }
        }
        let text =
            String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
        if format.skip_blank() && text.trim().is_empty() {
            return;
        }
        if format.has_header() && open.header.is_none() {
            open.header = Some(Arc::new(CsvHeader::parse(&text)));
            return;
        }
        let line = Line { path: self.name.clone(), line: open.line, text };
        out.push(format.item(line, open.header.as_ref()));
    }

    /// Follow mode, at the end of the file: whether the path now names another file, or the
    /// file was truncated, or a file appeared where none was open. Returns whether there is
    /// something new to read.
    fn check_rotation(&mut self) -> Result<bool> {
        if self.reopen {
            return Ok(true);
        }
        let meta = match std::fs::metadata(&self.path) {
            Ok(meta) => meta,
            // Renamed away and not recreated yet: keep reading the old handle.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(self.error("stat", e)),
        };
        let Some(open) = &self.open else { return Ok(true) };
        let rotated = match (open.id, file_id(&meta)) {
            (Some(old), Some(new)) => old != new,
            _ => false,
        };
        let truncated = !rotated && meta.len() < open.consumed;
        let rewritten = !rotated && !truncated && self.rewritten(open)?;
        if rewritten && let Some(open) = self.open.as_mut() {
            open.stale = true;
        }
        if rotated || truncated || rewritten {
            self.reopen = true;
        }
        Ok(self.reopen)
    }

    /// Whether the file at the path (the open one) no longer starts with the bytes read from it.
    fn rewritten(&self, open: &OpenFile) -> Result<bool> {
        if open.head.is_empty() {
            return Ok(false);
        }
        match first_bytes(&self.path, open.head.len()) {
            Ok(now) => Ok(now != open.head),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(self.error("read", e)),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn globs_are_recognised() {
        assert!(is_glob("logs/*.log"));
        assert!(is_glob("a?.txt"));
        assert!(is_glob("a[0-9].txt"));
        assert!(!is_glob("/var/log/syslog"));
    }

    #[test]
    fn missing_paths_and_empty_globs_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.log");
        let err = resolve(missing.to_str().unwrap()).unwrap_err();
        assert!(err.contains("cannot open"), "{err}");
        let err = resolve(&format!("{}/*.log", dir.path().display())).unwrap_err();
        assert!(err.contains("matches no file"), "{err}");
        let err = resolve(dir.path().to_str().unwrap()).unwrap_err();
        assert!(err.contains("directory"), "{err}");
    }

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
    /// the rotation, are still read (the old handle is drained before the switch).
    #[test]
    fn rotation_drains_the_old_file_first() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.log");
        std::fs::write(&path, "a1\n").unwrap();
        let mut file = TailedFile::new(0, path.clone());
        let mut out = Vec::new();
        file.read(&Lines, 10, true, &mut out).unwrap();
        assert_eq!(out.len(), 1);
        assert!(!file.check_rotation().unwrap(), "nothing changed yet");

        let old = dir.path().join("app.log.1");
        std::fs::rename(&path, &old).unwrap();
        assert!(!file.check_rotation().unwrap(), "no new file yet: keep the old one");
        let mut w = std::fs::OpenOptions::new().append(true).open(&old).unwrap();
        w.write_all(b"a2\npart").unwrap();
        std::fs::write(&path, "b1\n").unwrap();
        assert!(file.check_rotation().unwrap());

        out.clear();
        file.read(&Lines, 10, true, &mut out).unwrap();
        let got: Vec<(u64, &str)> = out.iter().map(|l| (l.line, l.text.as_str())).collect();
        assert_eq!(got, [(2, "a2"), (3, "part"), (1, "b1")]);
    }

    #[test]
    fn line_origin_is_path_and_line() {
        let line = Line { path: "logs/a.log".into(), line: 17, text: "x".into() };
        assert_eq!(line.origin(), "logs/a.log:17");
        assert_eq!(line.payload(), "x");
    }
}
