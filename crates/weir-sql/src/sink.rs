//! SQL sinks: where `CREATE SINK ... WITH (connector = ...)` writes query results.
//!
//! | connector | options | formats |
//! |---|---|---|
//! | `file` | `path`: a file (`json`, `csv`: all subtasks append whole batches to it) or a directory (`parquet`: rolling files, `rows_per_file`, default 1 000 000) | `json` (JSON lines), `csv`, `parquet` |
//! | `log` | `topic` (created with 1 partition if missing) | `json` (one record per row) |
//! | `stdout` | `format`: `table` (default: an aligned table per batch) or `json` (JSON lines) | `table`, `json` |
//! | `kafka` (cargo feature `kafka`) | Flink SQL's names: `topic`, `properties.bootstrap.servers`, `sink.delivery-guarantee` (`at-least-once`, the default, or `exactly-once`), `sink.transactional-id-prefix` (required with `exactly-once`), `key.fields` (a column whose value, as text, is the record key; a NULL is an empty key), `properties.transaction.timeout.ms`, the security options and other `properties.*` of [sources](crate::source) | `json`, `csv` (one record per row) |
//!
//! Timestamps are written as RFC 3339 in UTC (`2023-11-14T22:13:20Z`), as the typed API
//! writes window bounds; in JSON, NULLs are written as `null` (a field is never left out).
//!
//! # Exactly once, in a checkpointed pipeline
//!
//! - JSON and CSV files use weir-connectors' two-phase commit for files
//!   ([`weir_connectors::file_commit`]): each subtask writes a hidden in-progress file, closes
//!   it at every checkpoint barrier (pending), and a complete checkpoint appends the pending
//!   files to the final file, in subtask order, once (a marker beside it records the last
//!   checkpoint committed and the file's length then). A writer hands over its pending files
//!   until it sees them committed, so the files of a checkpoint that failed (overtaken by a
//!   stop's savepoint) go with the next one. A restore cuts the file back to its marker and
//!   deletes what was not committed.
//! - Log topics reuse [`weir_connectors::LogSink`]: rows are held until their checkpoint is
//!   complete, then appended with a `weir.checkpoint` header, never twice. (As for every
//!   `LogSink`, rows handed over for a checkpoint that then fails — one a stop's savepoint
//!   overtakes — are not committed with the next one.)
//! - Parquet: see [`ParquetSink`](crate::ParquetSink).
//! - Kafka topics with `sink.delivery-guarantee = 'exactly-once'`: one Kafka transaction per
//!   checkpoint, committed when the checkpoint completes (weir-kafka's exactly-once sink, whose
//!   marker in each transaction bounds the restore). It has one writer: at parallelism above 1
//!   every row is sent to subtask 0 first, whose writer is the sink's only one. Over an
//!   unbounded source without checkpoints it is refused (it would commit only at the end).
//!   `at-least-once` (the default) flushes at every checkpoint barrier: after a restore the rows
//!   that followed the checkpoint are written again.
//! - `stdout` is at least once: after a restore it prints again what followed the checkpoint.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use datafusion::arrow::array::RecordBatch;
use serde_json::value::RawValue;
use weir_connectors::file_commit::{self, Committable};
use weir_connectors::{LogSink, LogWriter};
use weir_log::{Log, TopicConfig};
use weir_runtime::{Batch, Result, Sink, SinkWriter};

fn error(what: impl std::fmt::Display, e: impl std::fmt::Display) -> weir_runtime::Error {
    weir_runtime::Error::connector("sql sink", format!("{what}: {e}"))
}

/// How timestamps without a time zone are written: RFC 3339 in UTC, as the typed API's window
/// bounds (`2023-11-14T22:13:20Z`, `2023-11-14T22:13:20.883Z`). SQL timestamps are UTC.
const TIMESTAMP_FORMAT: &str = "%Y-%m-%dT%H:%M:%S%.fZ";

/// JSON lines of record batches: one object per row, NULLs as `null`.
pub(crate) fn json_lines(batches: &[RecordBatch]) -> Result<Vec<u8>> {
    let mut w = arrow::json::WriterBuilder::new()
        .with_explicit_nulls(true)
        .with_timestamp_format(TIMESTAMP_FORMAT.to_owned())
        .build::<_, arrow::json::writer::LineDelimited>(Vec::new());
    let refs: Vec<&RecordBatch> = batches.iter().collect();
    w.write_batches(&refs).map_err(|e| error("JSON", e))?;
    w.finish().map_err(|e| error("JSON", e))?;
    Ok(w.into_inner())
}

/// CSV of record batches, with a header line first if `header`.
pub(crate) fn csv_lines(batches: &[RecordBatch], header: bool) -> Result<Vec<u8>> {
    let mut w = arrow::csv::WriterBuilder::new()
        .with_header(header)
        .with_timestamp_format(TIMESTAMP_FORMAT.to_owned())
        .build(Vec::new());
    for b in batches {
        w.write(b).map_err(|e| error("CSV", e))?;
    }
    Ok(w.into_inner())
}

/// A text file every subtask appends to, whole batches at a time; exactly once in a
/// checkpointed pipeline (see the module docs).
#[derive(Debug, Clone)]
pub struct TextFileSink {
    path: PathBuf,
    csv: bool,
    file: Arc<Mutex<Option<File>>>,
}

impl TextFileSink {
    /// JSON lines (or CSV with a header) in `path`, created or truncated when the job starts
    /// (in a checkpointed pipeline: on a fresh start; a restored job keeps what was committed).
    pub fn new(path: impl Into<PathBuf>, csv: bool) -> Self {
        TextFileSink { path: file_commit::absolute(path.into()), csv, file: Arc::default() }
    }

    fn dir(&self) -> &Path {
        self.path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."))
    }

    fn create_dir(&self) -> Result<()> {
        std::fs::create_dir_all(self.dir()).map_err(|e| error(self.dir().display(), e))
    }
}

impl Sink<RecordBatch> for TextFileSink {
    type Writer = TextFileWriter;

    fn name(&self) -> String {
        format!("file:{}", self.path.display())
    }

    fn writer(&self, _subtask: usize, _parallelism: usize) -> Result<TextFileWriter> {
        let mut file = self.file.lock().unwrap_or_else(PoisonError::into_inner);
        if file.is_none() {
            self.create_dir()?;
            *file = Some(File::create(&self.path).map_err(|e| error(self.path.display(), e))?);
        }
        Ok(TextFileWriter { sink: self.clone(), written: 0, tx: None })
    }

    fn transactional_writer(&self, subtask: usize, _parallelism: usize) -> Result<TextFileWriter> {
        self.create_dir()?;
        let tx = Tx {
            subtask,
            path: file_commit::in_progress(&self.path, subtask),
            file: None,
            len: 0,
            pending: Vec::new(),
        };
        Ok(TextFileWriter { sink: self.clone(), written: 0, tx: Some(tx) })
    }

    /// Appends the pending files of `committables` (each writer's, in order) that are not
    /// committed yet; see [`TextFileWriter`]'s `pre_commit` for why a file may be named twice.
    fn commit(&self, checkpoint: u64, committables: &[Vec<u8>]) -> Result<()> {
        let mut parts: Vec<Committable> = Vec::new();
        for c in committables {
            for part in weir_runtime::decode::<Vec<Committable>>(c)? {
                // A pending file is removed once committed: one that is gone was committed by
                // an earlier checkpoint (if this one is already committed, `commit` skips it).
                if part.pending.exists() && !parts.contains(&part) {
                    parts.push(part);
                }
            }
        }
        if parts.is_empty() {
            return Ok(());
        }
        let name = self.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        file_commit::check_targets(&parts, self.dir(), &|n: &str| n == name)
            .map_err(|e| error(self.path.display(), format_args!("commit checkpoint {checkpoint}: {e}")))?;
        file_commit::commit(checkpoint, &parts, self.csv)
            .map_err(|e| error(self.path.display(), format_args!("commit checkpoint {checkpoint}: {e}")))
    }

    fn check_restore(&self, restored: Option<u64>) -> Result<()> {
        let name = self.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        file_commit::check_discard(self.dir(), &|n: &str| n == name, restored)
            .map_err(|e| error(self.path.display(), format_args!("roll back: {e}")))
    }

    fn discard_uncommitted(&self, restored: Option<u64>) -> Result<()> {
        let name = self.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let is_target = |n: &str| n == name;
        file_commit::discard(self.dir(), &is_target, restored)
            .map_err(|e| error(self.path.display(), format_args!("clean up uncommitted output: {e}")))
    }

    fn destination(&self) -> Option<String> {
        Some(self.path.display().to_string())
    }

    fn committed_output(&self) -> Result<Option<weir_runtime::CommittedOutput>> {
        let name = self.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        file_commit::committed(self.dir(), &|n: &str| n == name)
            .map_err(|e| error(self.path.display(), format_args!("read committed output: {e}")))
    }
}

/// A transactional writer's in-progress file.
#[derive(Debug)]
struct Tx {
    subtask: usize,
    path: PathBuf,
    /// Open from the first batch after a barrier until the next barrier.
    file: Option<File>,
    /// Bytes in the in-progress file.
    len: u64,
    /// Pending files handed over at barriers and not seen committed yet.
    pending: Vec<Committable>,
}

/// The writer of one [`TextFileSink`] subtask.
#[derive(Debug)]
pub struct TextFileWriter {
    sink: TextFileSink,
    written: u64,
    /// In a checkpointed pipeline: this subtask's in-progress file.
    tx: Option<Tx>,
}

impl TextFileWriter {
    /// Appends a batch to the in-progress file (a CSV header first when it is empty).
    fn write_in_progress(&mut self, batch: &[RecordBatch]) -> Result<usize> {
        let csv = self.sink.csv;
        let Some(tx) = self.tx.as_mut() else { return Ok(0) };
        let bytes = if csv { csv_lines(batch, tx.len == 0)? } else { json_lines(batch)? };
        if tx.file.is_none() {
            tx.file = Some(File::create(&tx.path).map_err(|e| error(tx.path.display(), e))?);
            tx.len = 0;
        }
        if let Some(f) = tx.file.as_mut() {
            f.write_all(&bytes).map_err(|e| error(tx.path.display(), e))?;
        }
        tx.len += bytes.len() as u64;
        Ok(bytes.len())
    }
}

impl SinkWriter<RecordBatch> for TextFileWriter {
    async fn write_batch(&mut self, batch: Batch<RecordBatch>) -> Result<()> {
        let records: Vec<RecordBatch> = batch.records.into_iter().filter(|b| b.num_rows() > 0).collect();
        if records.is_empty() {
            return Ok(());
        }
        if self.tx.is_some() {
            self.written += self.write_in_progress(&records)? as u64;
            return Ok(());
        }
        let mut file = self.sink.file.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(f) = file.as_mut() else { return Err(error(self.sink.path.display(), "closed")) };
        let bytes = if self.sink.csv {
            // The header once, when the file is still empty.
            let header = f.metadata().map(|m| m.len() == 0).unwrap_or(false);
            csv_lines(&records, header)?
        } else {
            json_lines(&records)?
        };
        f.write_all(&bytes).map_err(|e| error(self.sink.path.display(), e))?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    /// Closes and syncs the in-progress file and renames it to the checkpoint's pending file,
    /// which the committable names. (If the checkpoint fails, the coordinator carries the
    /// committable to the next complete one.)
    async fn pre_commit(&mut self, checkpoint: u64) -> Result<Option<Vec<u8>>> {
        let Some(tx) = self.tx.as_mut() else { return Ok(None) };
        if let Some(file) = tx.file.take() {
            tx.len = 0;
            file.sync_all().map_err(|e| error(tx.path.display(), format_args!("fsync: {e}")))?;
            drop(file);
            let pending = file_commit::pending(&self.sink.path, tx.subtask, checkpoint);
            std::fs::rename(&tx.path, &pending)
                .map_err(|e| error(tx.path.display(), format_args!("rename to pending: {e}")))?;
            weir_log::fs::sync_parent(&pending)
                .map_err(|e| error(pending.display(), format_args!("fsync directory: {e}")))?;
            tx.pending.push(Committable { pending, target: self.sink.path.clone() });
        }
        let pending = std::mem::take(&mut tx.pending);
        if pending.is_empty() {
            return Ok(None);
        }
        weir_runtime::encode(&pending).map(Some)
    }

    async fn finish(&mut self) -> Result<()> {
        if self.tx.is_some() {
            return Ok(()); // The last records were pre-committed.
        }
        let file = self.sink.file.lock().unwrap_or_else(PoisonError::into_inner);
        match file.as_ref() {
            Some(f) => f.sync_all().map_err(|e| error(self.sink.path.display(), e)),
            None => Ok(()),
        }
    }

    fn bytes_written(&self) -> u64 {
        self.written
    }
}

/// Rows as JSON values of a log topic: weir-connectors' [`LogSink`] with rows already encoded
/// (so exactly once in a checkpointed pipeline, as `LogSink` is).
#[derive(Debug, Clone)]
pub struct LogTopicSink {
    inner: LogSink<Box<RawValue>>,
}

impl LogTopicSink {
    /// Rows to `topic` of `log` (created with one partition if missing).
    pub fn new(log: &Log, topic: impl Into<String>) -> Self {
        LogTopicSink { inner: LogSink::topic(log, topic).create_if_missing(TopicConfig::with_partitions(1)) }
    }
}

impl Sink<RecordBatch> for LogTopicSink {
    type Writer = LogTopicWriter;

    fn name(&self) -> String {
        format!("log:{}", self.inner.topic_name())
    }

    fn writer(&self, subtask: usize, parallelism: usize) -> Result<LogTopicWriter> {
        Ok(LogTopicWriter { inner: self.inner.writer(subtask, parallelism)? })
    }

    fn transactional_writer(&self, subtask: usize, parallelism: usize) -> Result<LogTopicWriter> {
        Ok(LogTopicWriter { inner: self.inner.transactional_writer(subtask, parallelism)? })
    }

    fn commit(&self, checkpoint: u64, committables: &[Vec<u8>]) -> Result<()> {
        self.inner.commit(checkpoint, committables)
    }

    fn check_restore(&self, restored: Option<u64>) -> Result<()> {
        Sink::<Box<RawValue>>::check_restore(&self.inner, restored)
    }

    fn discard_uncommitted(&self, restored: Option<u64>) -> Result<()> {
        Sink::<Box<RawValue>>::discard_uncommitted(&self.inner, restored)
    }

    fn destination(&self) -> Option<String> {
        Sink::<Box<RawValue>>::destination(&self.inner)
    }

    fn committed_output(&self) -> Result<Option<weir_runtime::CommittedOutput>> {
        Sink::<Box<RawValue>>::committed_output(&self.inner)
    }
}

/// The writer of one [`LogTopicSink`] subtask.
#[derive(Debug)]
pub struct LogTopicWriter {
    inner: LogWriter<Box<RawValue>>,
}

impl SinkWriter<RecordBatch> for LogTopicWriter {
    async fn write_batch(&mut self, batch: Batch<RecordBatch>) -> Result<()> {
        let bytes = json_lines(&batch.records)?;
        let text = String::from_utf8(bytes).map_err(|e| error("JSON", e))?;
        let rows = text
            .lines()
            .filter(|l| !l.is_empty())
            .map(|l| RawValue::from_string(l.to_owned()))
            .collect::<serde_json::Result<Vec<_>>>()
            .map_err(|e| error("JSON", e))?;
        if rows.is_empty() {
            return Ok(());
        }
        self.inner.write_batch(Batch::new(rows)).await
    }

    async fn pre_commit(&mut self, checkpoint: u64) -> Result<Option<Vec<u8>>> {
        self.inner.pre_commit(checkpoint).await
    }

    async fn finish(&mut self) -> Result<()> {
        SinkWriter::<Box<RawValue>>::finish(&mut self.inner).await
    }

    fn bytes_written(&self) -> u64 {
        SinkWriter::<Box<RawValue>>::bytes_written(&self.inner)
    }
}

/// An aligned table per batch on stdout.
#[derive(Debug, Clone, Copy, Default)]
pub struct StdoutTableSink;

impl Sink<RecordBatch> for StdoutTableSink {
    type Writer = StdoutTableSink;

    fn name(&self) -> String {
        "stdout".into()
    }

    fn writer(&self, _subtask: usize, _parallelism: usize) -> Result<StdoutTableSink> {
        Ok(StdoutTableSink)
    }
}

impl SinkWriter<RecordBatch> for StdoutTableSink {
    async fn write_batch(&mut self, batch: Batch<RecordBatch>) -> Result<()> {
        let non_empty: Vec<RecordBatch> = batch.records.into_iter().filter(|b| b.num_rows() > 0).collect();
        if non_empty.is_empty() {
            return Ok(());
        }
        let options = arrow::util::display::FormatOptions::new()
            .with_null("NULL")
            .with_timestamp_format(Some(TIMESTAMP_FORMAT));
        let table = arrow::util::pretty::pretty_format_batches_with_options(&non_empty, &options)
            .map_err(|e| error("table", e))?;
        let mut out = std::io::stdout().lock();
        writeln!(out, "{table}").map_err(|e| error("stdout", e))
    }

    async fn finish(&mut self) -> Result<()> {
        std::io::stdout().flush().map_err(|e| error("stdout", e))
    }
}

/// JSON lines on stdout: one object per row (NULLs as `null`, timestamps RFC 3339 in UTC), each
/// batch written at once.
#[derive(Debug, Clone, Copy, Default)]
pub struct StdoutJsonSink;

impl Sink<RecordBatch> for StdoutJsonSink {
    type Writer = StdoutJsonSink;

    fn name(&self) -> String {
        "stdout".into()
    }

    fn writer(&self, _subtask: usize, _parallelism: usize) -> Result<StdoutJsonSink> {
        Ok(StdoutJsonSink)
    }
}

impl SinkWriter<RecordBatch> for StdoutJsonSink {
    async fn write_batch(&mut self, batch: Batch<RecordBatch>) -> Result<()> {
        let bytes = json_lines(&batch.records)?;
        if bytes.is_empty() {
            return Ok(());
        }
        std::io::stdout().lock().write_all(&bytes).map_err(|e| error("stdout", e))
    }

    async fn finish(&mut self) -> Result<()> {
        std::io::stdout().flush().map_err(|e| error("stdout", e))
    }
}
