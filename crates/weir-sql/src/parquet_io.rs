//! Parquet files: a bounded source (one split per file of a glob) and a rolling sink.

use std::fs::File;
use std::path::PathBuf;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};
use weir_runtime::{Batch, Result, Sink, SinkWriter, Source, SourceReader};

fn error(what: impl std::fmt::Display, e: impl std::fmt::Display) -> weir_runtime::Error {
    weir_runtime::Error::connector("parquet", format!("{what}: {e}"))
}

/// Reads Parquet files; subtask `i` of `p` reads files `i, i + p, …` of the sorted matches.
/// Columns are taken by name and cast to the declared schema.
#[derive(Debug, Clone)]
pub struct ParquetSource {
    pattern: String,
    schema: SchemaRef,
}

impl ParquetSource {
    /// The files `pattern` names (a path or a glob), read as `schema`.
    pub fn new(pattern: String, schema: SchemaRef) -> Self {
        ParquetSource { pattern, schema }
    }

    fn files(&self) -> Result<Vec<PathBuf>> {
        let mut files: Vec<PathBuf> = if self.pattern.contains(['*', '?', '[']) {
            glob::glob(&self.pattern).map_err(|e| error(&self.pattern, e))?.filter_map(|p| p.ok()).collect()
        } else {
            vec![PathBuf::from(&self.pattern)]
        };
        files.sort();
        if files.is_empty() {
            return Err(error(&self.pattern, "the pattern matches no file"));
        }
        Ok(files)
    }
}

impl Source for ParquetSource {
    type Item = RecordBatch;
    type Reader = ParquetReader;

    fn name(&self) -> String {
        format!("parquet:{}", self.pattern)
    }

    fn reader(&self, subtask: usize, parallelism: usize) -> Result<ParquetReader> {
        let files = self
            .files()?
            .into_iter()
            .enumerate()
            .skip(subtask)
            .step_by(parallelism.max(1))
            .collect::<Vec<_>>();
        Ok(ParquetReader { files, next: 0, current: None, schema: self.schema.clone(), finished: Vec::new() })
    }
}

/// The reader of one [`ParquetSource`] subtask.
pub struct ParquetReader {
    files: Vec<(usize, PathBuf)>,
    next: usize,
    current: Option<(u32, ParquetRecordBatchReader)>,
    schema: SchemaRef,
    finished: Vec<u32>,
}

impl std::fmt::Debug for ParquetReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParquetReader").field("files", &self.files).finish_non_exhaustive()
    }
}

impl ParquetReader {
    /// `batch` with the declared columns, by name, cast to their declared types.
    fn conform(&self, batch: &RecordBatch) -> Result<RecordBatch> {
        let columns = self
            .schema
            .fields()
            .iter()
            .map(|f| {
                let col = batch
                    .column_by_name(f.name())
                    .ok_or_else(|| error("parquet file", format!("no column {}", f.name())))?;
                arrow::compute::cast(col, f.data_type()).map_err(|e| error(f.name(), e))
            })
            .collect::<Result<Vec<_>>>()?;
        RecordBatch::try_new(self.schema.clone(), columns).map_err(|e| error("parquet file", e))
    }
}

impl SourceReader for ParquetReader {
    type Item = RecordBatch;

    async fn next_batch(&mut self) -> Result<Option<Batch<RecordBatch>>> {
        loop {
            if let Some((split, reader)) = self.current.as_mut() {
                match reader.next() {
                    Some(Ok(b)) => {
                        let split = *split;
                        let b = self.conform(&b)?;
                        return Ok(Some(Batch::from_split(split, vec![b])));
                    }
                    Some(Err(e)) => return Err(error("read", e)),
                    None => {
                        self.finished.push(*split);
                        self.current = None;
                    }
                }
            }
            let Some((index, path)) = self.files.get(self.next) else { return Ok(None) };
            self.next += 1;
            let file = File::open(path).map_err(|e| error(path.display(), e))?;
            let reader = ParquetRecordBatchReaderBuilder::try_new(file)
                .and_then(|b| b.with_batch_size(8192).build())
                .map_err(|e| error(path.display(), e))?;
            self.current = Some((u32::try_from(*index).unwrap_or(u32::MAX), reader));
        }
    }

    fn finished_split(&mut self) -> Option<u32> {
        self.finished.pop()
    }
}

/// Writes Parquet files `<dir>/part-<subtask>-<n>.parquet`, starting a new file every
/// `rows_per_file` rows; a file is complete (footer written) when it is rolled or the job ends.
#[derive(Debug, Clone)]
pub struct ParquetSink {
    dir: PathBuf,
    rows_per_file: usize,
}

impl ParquetSink {
    /// Files in `dir`, rolled every `rows_per_file` rows.
    pub fn new(dir: impl Into<PathBuf>, rows_per_file: usize) -> Self {
        ParquetSink { dir: dir.into(), rows_per_file: rows_per_file.max(1) }
    }
}

impl Sink<RecordBatch> for ParquetSink {
    type Writer = ParquetWriter;

    fn name(&self) -> String {
        format!("parquet:{}", self.dir.display())
    }

    fn writer(&self, subtask: usize, _parallelism: usize) -> Result<ParquetWriter> {
        std::fs::create_dir_all(&self.dir).map_err(|e| error(self.dir.display(), e))?;
        Ok(ParquetWriter { sink: self.clone(), subtask, file_no: 0, rows: 0, current: None, written: 0 })
    }
}

/// The writer of one [`ParquetSink`] subtask.
pub struct ParquetWriter {
    sink: ParquetSink,
    subtask: usize,
    file_no: usize,
    rows: usize,
    current: Option<ArrowWriter<File>>,
    written: u64,
}

impl std::fmt::Debug for ParquetWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParquetWriter").field("dir", &self.sink.dir).finish_non_exhaustive()
    }
}

impl ParquetWriter {
    fn close_current(&mut self) -> Result<()> {
        if let Some(w) = self.current.take() {
            w.close().map_err(|e| error("close", e))?;
        }
        self.rows = 0;
        Ok(())
    }
}

impl SinkWriter<RecordBatch> for ParquetWriter {
    async fn write_batch(&mut self, batch: Batch<RecordBatch>) -> Result<()> {
        for b in &batch.records {
            if self.current.is_none() {
                let path = self.sink.dir.join(format!("part-{}-{}.parquet", self.subtask, self.file_no));
                self.file_no += 1;
                let file = File::create(&path).map_err(|e| error(path.display(), e))?;
                let w = ArrowWriter::try_new(file, b.schema(), None).map_err(|e| error(path.display(), e))?;
                self.current = Some(w);
            }
            if let Some(w) = self.current.as_mut() {
                w.write(b).map_err(|e| error("write", e))?;
                self.written += b.get_array_memory_size() as u64;
            }
            self.rows += b.num_rows();
            if self.rows >= self.sink.rows_per_file {
                self.close_current()?;
            }
        }
        Ok(())
    }

    async fn finish(&mut self) -> Result<()> {
        self.close_current()
    }

    fn bytes_written(&self) -> u64 {
        self.written
    }
}
