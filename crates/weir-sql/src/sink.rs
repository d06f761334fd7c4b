//! SQL sinks: where `CREATE SINK ... WITH (connector = ...)` writes query results.
//!
//! | connector | options | formats |
//! |---|---|---|
//! | `file` | `path`: a file (`json`, `csv`: all subtasks append whole batches to it) or a directory (`parquet`: rolling files, `rows_per_file`, default 1 000 000) | `json` (JSON lines), `csv`, `parquet` |
//! | `log` | `topic` (created with 1 partition if missing) | `json` (one record per row) |
//! | `stdout` | — | an aligned table per batch |
//!
//! Timestamps are written as ISO 8601 (UTC, no offset), as `arrow-json` and `arrow-csv` do.

use std::fs::File;
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use datafusion::arrow::array::RecordBatch;
use weir_log::{Log, Record, Topic, TopicConfig};
use weir_runtime::{Batch, Result, Sink, SinkWriter};

fn error(what: impl std::fmt::Display, e: impl std::fmt::Display) -> weir_runtime::Error {
    weir_runtime::Error::connector("sql sink", format!("{what}: {e}"))
}

/// JSON lines of record batches.
pub(crate) fn json_lines(batches: &[RecordBatch]) -> Result<Vec<u8>> {
    let mut w = arrow::json::LineDelimitedWriter::new(Vec::new());
    let refs: Vec<&RecordBatch> = batches.iter().collect();
    w.write_batches(&refs).map_err(|e| error("JSON", e))?;
    w.finish().map_err(|e| error("JSON", e))?;
    Ok(w.into_inner())
}

/// A text file every subtask appends to, whole batches at a time.
#[derive(Debug, Clone)]
pub struct TextFileSink {
    path: PathBuf,
    csv: bool,
    file: Arc<Mutex<Option<File>>>,
}

impl TextFileSink {
    /// JSON lines (or CSV with a header) in `path`, created or truncated when the job starts.
    pub fn new(path: impl Into<PathBuf>, csv: bool) -> Self {
        TextFileSink { path: path.into(), csv, file: Arc::default() }
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
            if let Some(parent) = self.path.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent).map_err(|e| error(parent.display(), e))?;
            }
            *file = Some(File::create(&self.path).map_err(|e| error(self.path.display(), e))?);
        }
        Ok(TextFileWriter { sink: self.clone(), written: 0 })
    }
}

/// The writer of one [`TextFileSink`] subtask.
#[derive(Debug)]
pub struct TextFileWriter {
    sink: TextFileSink,
    written: u64,
}

impl SinkWriter<RecordBatch> for TextFileWriter {
    async fn write_batch(&mut self, batch: Batch<RecordBatch>) -> Result<()> {
        let bytes = if self.sink.csv {
            let mut file = self.sink.file.lock().unwrap_or_else(PoisonError::into_inner);
            let Some(f) = file.as_mut() else { return Err(error(self.sink.path.display(), "closed")) };
            // The header once, when the file is still empty.
            let header = f.metadata().map(|m| m.len() == 0).unwrap_or(false);
            let mut w = arrow::csv::WriterBuilder::new().with_header(header).build(Vec::new());
            for b in &batch.records {
                w.write(b).map_err(|e| error("CSV", e))?;
            }
            let bytes = w.into_inner();
            f.write_all(&bytes).map_err(|e| error(self.sink.path.display(), e))?;
            bytes.len()
        } else {
            let bytes = json_lines(&batch.records)?;
            let mut file = self.sink.file.lock().unwrap_or_else(PoisonError::into_inner);
            let Some(f) = file.as_mut() else { return Err(error(self.sink.path.display(), "closed")) };
            f.write_all(&bytes).map_err(|e| error(self.sink.path.display(), e))?;
            bytes.len()
        };
        self.written += bytes as u64;
        Ok(())
    }

    async fn finish(&mut self) -> Result<()> {
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

/// Rows as JSON values of a log topic.
#[derive(Debug, Clone)]
pub struct LogTopicSink {
    log: Log,
    topic: String,
}

impl LogTopicSink {
    /// Rows to `topic` of `log` (created with one partition if missing).
    pub fn new(log: &Log, topic: impl Into<String>) -> Self {
        LogTopicSink { log: log.clone(), topic: topic.into() }
    }
}

impl Sink<RecordBatch> for LogTopicSink {
    type Writer = LogTopicWriter;

    fn name(&self) -> String {
        format!("log:{}", self.topic)
    }

    fn writer(&self, _subtask: usize, _parallelism: usize) -> Result<LogTopicWriter> {
        let topic = self
            .log
            .topic_or_create(&self.topic, TopicConfig::with_partitions(1))
            .map_err(|e| error(&self.topic, e))?;
        Ok(LogTopicWriter { topic, written: 0 })
    }
}

/// The writer of one [`LogTopicSink`] subtask.
#[derive(Debug)]
pub struct LogTopicWriter {
    topic: Topic,
    written: u64,
}

impl SinkWriter<RecordBatch> for LogTopicWriter {
    async fn write_batch(&mut self, batch: Batch<RecordBatch>) -> Result<()> {
        let bytes = Bytes::from(json_lines(&batch.records)?);
        let records: Vec<Record> = bytes
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| Record::new(bytes.slice_ref(l)))
            .collect();
        self.written += bytes.len() as u64;
        if records.is_empty() {
            return Ok(());
        }
        let topic = self.topic.clone();
        tokio::task::spawn_blocking(move || topic.send(&records))
            .await
            .map_err(|e| error("append", e))?
            .map(drop)
            .map_err(|e| error("append", e))
    }

    async fn finish(&mut self) -> Result<()> {
        self.topic.flush().map_err(|e| error("flush", e))
    }

    fn bytes_written(&self) -> u64 {
        self.written
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
        let table = arrow::util::pretty::pretty_format_batches(&non_empty).map_err(|e| error("table", e))?;
        let mut out = std::io::stdout().lock();
        writeln!(out, "{table}").map_err(|e| error("stdout", e))
    }

    async fn finish(&mut self) -> Result<()> {
        std::io::stdout().flush().map_err(|e| error("stdout", e))
    }
}
