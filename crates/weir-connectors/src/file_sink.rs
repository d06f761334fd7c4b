//! File sinks: records as JSON lines or CSV, one file per subtask or one for all.
//!
//! # Files
//!
//! With one subtask the sink writes exactly `path`. With `p > 1` subtasks, subtask `i` writes
//! `path` with `-{i}` inserted before the extension — `out/events.jsonl` becomes
//! `out/events-0.jsonl`, `out/events-1.jsonl`, … — so the files keep their extension and no two
//! writers share one. [`FileSink::output_path`] computes the name. With
//! [`FileSink::single_file`] every subtask writes `path` itself: each batch is written whole
//! under a lock, so lines never interleave, and the last subtask to finish flushes and syncs.
//! Missing parent directories are created; an existing file is replaced (truncated) when the
//! first writer starts. A relative path is resolved against the working directory when the
//! sink is built ([`FileSink::json_lines`], [`FileSink::csv`]): the files, and the paths a
//! checkpoint records, stay the same whatever the working directory later.
//!
//! # Formats
//!
//! - JSON lines: one `serde_json` object (or value) per line.
//! - CSV: a header line from `T`'s field names (written with the first record; a job that writes
//!   nothing leaves an empty file), then one line per record. `T` must be flat (structs of
//!   scalars, options, unit enums), as the `csv` crate requires; a nested field fails the job.
//!
//! # Durability
//!
//! A batch is serialized through a 64 KiB buffer and handed to the file (one `write` per
//! buffer-full) before the next batch, so a followed file shows results as windows close;
//! [`SinkWriter::finish`] `fsync`s the file, so a finished bounded job's output survives a
//! crash. A record that cannot be serialized fails the job (it is a type
//! that the format cannot represent, not a bad input); so does an I/O error. Without
//! checkpoints, a failed job leaves what it wrote.
//!
//! # Exactly once, in a checkpointed pipeline
//!
//! The same final files receive only committed output: writers write hidden in-progress files,
//! close them at each checkpoint barrier (pre-commit), and a complete checkpoint appends them to
//! the final files; a restore removes whatever was not committed. See `file_commit` for the
//! files and the protocol.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use serde::Serialize;
use weir_runtime::{Batch, Result, Sink, SinkWriter};

use crate::connector_error;

const WRITE_BUFFER_BYTES: usize = 64 << 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    JsonLines,
    Csv,
}

/// Writes records of any `T: Serialize` to files, as JSON lines or CSV (see the [module docs](crate::file_sink)).
///
/// # Examples
///
/// ```no_run
/// use weir_connectors::FileSink;
/// use weir_runtime::{MemorySource, Pipeline};
///
/// # async fn run() -> weir_runtime::Result<()> {
/// #[derive(Clone, serde::Serialize)]
/// struct Hit { path: String, status: u16 }
///
/// let p = Pipeline::builder("export").parallelism(1).build()?;
/// p.source(MemorySource::new(vec![Hit { path: "/".into(), status: 200 }]))
///     .sink(FileSink::csv("out/hits.csv")); // header "path,status"
/// p.run().await?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct FileSink {
    path: PathBuf,
    format: Format,
    /// Single-file mode: the file all subtasks share, opened (under the lock) by the first.
    shared: Option<Arc<Mutex<Option<Shared>>>>,
}

/// The output every subtask of a single-file sink writes to.
#[derive(Debug)]
struct Shared {
    out: Arc<Mutex<Option<Out>>>,
    /// Writers not finished yet.
    open: Arc<AtomicUsize>,
}

impl FileSink {
    /// One JSON value per line.
    pub fn json_lines(path: impl Into<PathBuf>) -> FileSink {
        FileSink { path: crate::file_commit::absolute(path.into()), format: Format::JsonLines, shared: None }
    }

    /// CSV with a header line from the records' field names.
    pub fn csv(path: impl Into<PathBuf>) -> FileSink {
        FileSink { path: crate::file_commit::absolute(path.into()), format: Format::Csv, shared: None }
    }

    /// Every subtask writes to `path` itself, one batch at a time (see the [module docs](crate::file_sink)).
    pub fn single_file(mut self) -> FileSink {
        self.shared = Some(Arc::default());
        self
    }

    /// The file subtask `subtask` of `parallelism` writes: the path itself with one subtask,
    /// else the path with `-{subtask}` before its extension (absolute, see the [module docs](crate::file_sink)).
    pub fn output_path(&self, subtask: usize, parallelism: usize) -> PathBuf {
        if parallelism <= 1 || self.shared.is_some() {
            return self.path.clone();
        }
        let stem = self.path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        let name = match self.path.extension() {
            Some(ext) => format!("{stem}-{subtask}.{}", ext.to_string_lossy()),
            None => format!("{stem}-{subtask}"),
        };
        self.path.with_file_name(name)
    }
}

impl<T: Serialize + Send + 'static> Sink<T> for FileSink {
    type Writer = FileWriter;

    fn name(&self) -> String {
        format!("file:{}", self.path.display())
    }

    fn writer(&self, subtask: usize, parallelism: usize) -> Result<FileWriter> {
        let path = self.output_path(subtask, parallelism);
        let (out, open) = match &self.shared {
            None => (Arc::new(Mutex::new(Some(self.open(&path)?))), Arc::new(AtomicUsize::new(1))),
            Some(shared) => {
                let mut shared = shared.lock().unwrap_or_else(PoisonError::into_inner);
                if shared.is_none() {
                    *shared = Some(Shared {
                        out: Arc::new(Mutex::new(Some(self.open(&path)?))),
                        open: Arc::new(AtomicUsize::new(parallelism.max(1))),
                    });
                }
                match shared.as_ref() {
                    Some(s) => (s.out.clone(), s.open.clone()),
                    None => return Err(connector_error("file sink", path.display(), "not opened")),
                }
            }
        };
        Ok(FileWriter { path, out, open, finished: false, line: Vec::new(), written: 0, tx: None })
    }

    fn transactional_writer(&self, subtask: usize, parallelism: usize) -> Result<FileWriter> {
        let target = self.output_path(subtask, parallelism);
        Ok(FileWriter {
            path: crate::file_commit::in_progress(&target, subtask),
            out: Arc::default(),
            open: Arc::new(AtomicUsize::new(1)),
            finished: false,
            line: Vec::new(),
            written: 0,
            tx: Some(Tx { target, subtask, format: self.format }),
        })
    }

    fn commit(&self, checkpoint: u64, committables: &[Vec<u8>]) -> Result<()> {
        let parts = committables
            .iter()
            .map(|c| weir_runtime::decode::<crate::file_commit::Committable>(c))
            .collect::<Result<Vec<_>>>()?;
        let is_target = |name: &str| self.is_output_name(name);
        crate::file_commit::check_targets(&parts, self.dir(), &is_target).map_err(|e| {
            connector_error(
                "file sink",
                self.path.display(),
                crate::Failed::new(format_args!("commit checkpoint {checkpoint}"), e),
            )
        })?;
        crate::file_commit::commit(checkpoint, &parts, self.format == Format::Csv).map_err(|e| {
            connector_error(
                "file sink",
                self.path.display(),
                crate::Failed::new(format_args!("commit checkpoint {checkpoint}"), e),
            )
        })
    }

    fn check_restore(&self, restored: Option<u64>) -> Result<()> {
        let is_target = |name: &str| self.is_output_name(name);
        crate::file_commit::check_discard(self.dir(), &is_target, restored).map_err(|e| {
            connector_error("file sink", self.path.display(), crate::Failed::new("roll back", e))
        })
    }

    fn discard_uncommitted(&self, restored: Option<u64>) -> Result<()> {
        let is_target = |name: &str| self.is_output_name(name);
        crate::file_commit::discard(self.dir(), &is_target, restored).map_err(|e| {
            connector_error(
                "file sink",
                self.path.display(),
                crate::Failed::new("clean up uncommitted output", e),
            )
        })
    }

    fn destination(&self) -> Option<String> {
        Some(self.path.display().to_string())
    }

    fn committed_output(&self) -> Result<Option<weir_runtime::CommittedOutput>> {
        let is_target = |name: &str| self.is_output_name(name);
        crate::file_commit::committed(self.dir(), &is_target).map_err(|e| {
            connector_error("file sink", self.path.display(), crate::Failed::new("read committed output", e))
        })
    }
}

impl FileSink {
    /// The directory the files are in.
    fn dir(&self) -> &Path {
        self.path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."))
    }

    /// Whether a file named `name` beside the path is one of this sink's outputs at some
    /// parallelism: the path's name, or its name with `-{subtask}` before the extension.
    fn is_output_name(&self, name: &str) -> bool {
        let Some(own) = self.path.file_name().map(|n| n.to_string_lossy()) else { return false };
        if name == own {
            return true;
        }
        let stem = self.path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        let rest = match self.path.extension() {
            Some(ext) => name.strip_suffix(&format!(".{}", ext.to_string_lossy())),
            None => Some(name),
        };
        rest.and_then(|r| r.strip_prefix(&format!("{stem}-")))
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    }

    /// Creates (or truncates) `path` for writing.
    fn open(&self, path: &Path) -> Result<Out> {
        open_out(path, self.format)
    }
}

/// Creates (or truncates) `path` for writing in `format`.
fn open_out(path: &Path, format: Format) -> Result<Out> {
    {
        let error = |action: &str, e: std::io::Error| {
            connector_error("file sink", path.display(), crate::Failed::new(action, e))
        };
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| error("create directory", e))?;
        }
        let file = File::create(path).map_err(|e| error("create", e))?;
        Ok(match format {
            Format::JsonLines => Out::Json(BufWriter::with_capacity(WRITE_BUFFER_BYTES, file)),
            Format::Csv => Out::Csv(Box::new(
                csv::WriterBuilder::new().buffer_capacity(WRITE_BUFFER_BYTES).from_writer(file),
            )),
        })
    }
}

#[derive(Debug)]
enum Out {
    Json(BufWriter<File>),
    Csv(Box<csv::Writer<File>>),
}

/// The writer of one [`FileSink`] subtask.
pub struct FileWriter {
    path: PathBuf,
    /// The output (shared by all subtasks in single-file mode); `None` once closed.
    out: Arc<Mutex<Option<Out>>>,
    /// Writers of `out` not finished yet; the last one closes it.
    open: Arc<AtomicUsize>,
    finished: bool,
    /// Reused serialization buffer.
    line: Vec<u8>,
    /// Bytes of JSON lines written (CSV output is not measured).
    written: u64,
    /// A transactional writer's final file (`path` is then its in-progress file).
    tx: Option<Tx>,
}

/// What a transactional writer needs to pre-commit.
#[derive(Debug)]
struct Tx {
    target: PathBuf,
    subtask: usize,
    format: Format,
}

impl std::fmt::Debug for FileWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileWriter").field("path", &self.path).finish_non_exhaustive()
    }
}

impl FileWriter {
    /// The file this writer writes.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn error(&self, action: &str, e: impl Into<weir_runtime::BoxError>) -> weir_runtime::Error {
        connector_error("file sink", self.path.display(), crate::Failed::new(action, e))
    }
}

impl<T: Serialize + Send + 'static> SinkWriter<T> for FileWriter {
    async fn write_batch(&mut self, batch: Batch<T>) -> Result<()> {
        let out = self.out.clone();
        let mut out = out.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(tx) = &self.tx
            && out.is_none()
            && !self.finished
        {
            *out = Some(open_out(&self.path, tx.format)?);
        }
        match out.as_mut().filter(|_| !self.finished) {
            Some(Out::Json(w)) => {
                for record in &batch.records {
                    self.line.clear();
                    if let Err(e) = serde_json::to_writer(&mut self.line, record) {
                        return Err(self.error("serialize record as JSON", e));
                    }
                    self.line.push(b'\n');
                    if let Err(e) = w.write_all(&self.line) {
                        return Err(self.error("write", e));
                    }
                    self.written += self.line.len() as u64;
                }
                w.flush().map_err(|e| self.error("write", e))
            }
            Some(Out::Csv(w)) => {
                for record in &batch.records {
                    if let Err(e) = w.serialize(record) {
                        return Err(self.error("write CSV record", e));
                    }
                }
                w.flush().map_err(|e| self.error("write", e))
            }
            None => Err(self.error("write", "the writer was already finished")),
        }
    }

    fn bytes_written(&self) -> u64 {
        self.written
    }

    async fn pre_commit(&mut self, checkpoint: u64) -> Result<Option<Vec<u8>>> {
        let Some(tx) = &self.tx else { return Ok(None) };
        let Some(file) = self.close()? else { return Ok(None) };
        file.sync_all().map_err(|e| self.error("fsync", e))?;
        drop(file);
        let pending = crate::file_commit::pending(&tx.target, tx.subtask, checkpoint);
        std::fs::rename(&self.path, &pending).map_err(|e| self.error("rename to pending", e))?;
        weir_log::fs::sync_parent(&pending).map_err(|e| self.error("fsync directory", e))?;
        weir_runtime::encode(&crate::file_commit::Committable { pending, target: tx.target.clone() })
            .map(Some)
    }

    async fn finish(&mut self) -> Result<()> {
        if std::mem::replace(&mut self.finished, true) || self.open.fetch_sub(1, Ordering::AcqRel) != 1 {
            return Ok(()); // Another writer of the same file closes it.
        }
        match self.close()? {
            Some(file) => file.sync_all().map_err(|e| self.error("fsync", e)),
            None => Ok(()),
        }
    }
}

impl FileWriter {
    /// Flushes and closes the output; its file, if it was open.
    fn close(&self) -> Result<Option<File>> {
        let out = self.out.lock().unwrap_or_else(PoisonError::into_inner).take();
        Ok(Some(match out {
            Some(Out::Json(w)) => w.into_inner().map_err(|e| self.error("flush", e.into_error()))?,
            Some(Out::Csv(w)) => w.into_inner().map_err(|e| self.error("flush", e.into_error()))?,
            None => return Ok(None),
        }))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn subtask_files_keep_their_extension() {
        let cwd = std::env::current_dir().unwrap();
        let sink = FileSink::json_lines("out/events.jsonl");
        assert_eq!(sink.output_path(0, 1), cwd.join("out/events.jsonl"));
        assert_eq!(sink.output_path(1, 3), cwd.join("out/events-1.jsonl"));
        assert_eq!(FileSink::csv("/data").output_path(2, 4), PathBuf::from("/data-2"));
    }

    #[tokio::test]
    async fn csv_writes_a_header_and_unserializable_records_fail() {
        #[derive(Serialize)]
        struct Row {
            a: u32,
            b: &'static str,
        }
        #[derive(Serialize)]
        struct Nested {
            inner: Vec<Vec<u32>>,
        }
        let dir = tempfile::tempdir().unwrap();
        let sink = FileSink::csv(dir.path().join("x/rows.csv"));
        let mut w = <FileSink as Sink<Row>>::writer(&sink, 0, 1).unwrap();
        w.write_batch(Batch::new(vec![Row { a: 1, b: "x,y" }, Row { a: 2, b: "z" }])).await.unwrap();
        SinkWriter::<Row>::finish(&mut w).await.unwrap();
        let text = std::fs::read_to_string(dir.path().join("x/rows.csv")).unwrap();
        assert_eq!(text, "a,b\n1,\"x,y\"\n2,z\n");

        let mut w = <FileSink as Sink<Nested>>::writer(&sink, 0, 1).unwrap();
        let err = w.write_batch(Batch::new(vec![Nested { inner: vec![vec![1]] }])).await.unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("file sink") && msg.contains("rows.csv"), "{msg}");
    }
}
