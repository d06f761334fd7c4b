//! SQL sources: what `CREATE SOURCE ... WITH (connector = ...)` reads, as Arrow record batches.
//!
//! | connector | options | formats |
//! |---|---|---|
//! | `file` | `path` (a file or a glob), `follow` (`true`: tail it), `header` (CSV, default `true`) | `csv`, `json` (JSON lines), `parquet` |
//! | `log` | `topic`, `group` (default: the source's name), `bounded` (`true`: stop at the end offsets seen at start) | `json`, `csv` |
//!
//! Text formats are decoded by `arrow-json` / `arrow-csv` with the declared schema (JSON
//! fields by name, unknown fields ignored, missing ones null; CSV columns by position). A batch
//! of lines is decoded at once; if that fails, line by line, and each line that does not decode
//! goes to the pipeline's dead-letter output with its origin (`path:line`,
//! `topic/partition@offset`) and the decoder's error. Computed columns are evaluated on every
//! decoded batch and appended; if that fails, row by row, and each row they fail on goes to the
//! dead letters as JSON (its read columns) with the error.

use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::physical_expr::PhysicalExpr;
use weir_connectors::{FileSource, Line, LogRecord, LogSource};
use weir_log::Log;
use weir_runtime::{Batch, Collector, DeadLetter, Operator, Pipeline, Stream, Traceable};

use crate::error::{Result, SqlError};
use crate::exec::{batch_or_rows, concat, origin};

/// A source declared by `CREATE SOURCE`, resolved against its options.
#[derive(Debug, Clone)]
pub struct SourceConfig {
    /// The source's name.
    pub name: String,
    /// The columns read from the input.
    pub raw_schema: SchemaRef,
    /// The columns queries see: the read ones, then the computed ones.
    pub schema: SchemaRef,
    /// Computed columns, evaluated on the read columns.
    pub computed: Vec<Arc<dyn PhysicalExpr>>,
    /// The event-time column (an index into `schema`) and the out-of-orderness bound (ms).
    pub event_time: Option<(usize, i64)>,
    /// Where records come from.
    pub connector: Connector,
}

/// Where a source reads.
#[derive(Debug, Clone)]
pub enum Connector {
    /// Files (one, or a glob).
    File {
        /// Path or glob.
        path: String,
        /// The format.
        format: Format,
        /// Tail the files.
        follow: bool,
        /// CSV files start with a header line.
        header: bool,
    },
    /// A topic of the embedded log, read in a consumer group.
    Log {
        /// The log.
        log: Log,
        /// The topic.
        topic: String,
        /// The consumer group.
        group: String,
        /// Stop at the end offsets seen when the job starts.
        bounded: bool,
        /// The format of the values.
        format: Format,
    },
    /// Record batches in memory (tests and programs that hold their data).
    Memory(Vec<RecordBatch>),
}

/// How records are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// One JSON object per line (or per log record).
    Json,
    /// Comma-separated values.
    Csv,
    /// Apache Parquet files.
    Parquet,
}

impl Format {
    pub(crate) fn parse(object: &str, text: &str) -> Result<Format> {
        match text.to_ascii_lowercase().as_str() {
            "json" | "jsonl" | "ndjson" | "json_lines" => Ok(Format::Json),
            "csv" => Ok(Format::Csv),
            "parquet" => Ok(Format::Parquet),
            other => Err(SqlError::Option {
                object: object.to_owned(),
                field: "format".into(),
                reason: format!("{other:?} is not json, csv or parquet"),
            }),
        }
    }
}

/// A record whose raw bytes a decoder reads.
trait Raw: Traceable {
    fn raw(&self) -> &[u8];
    /// A CSV header line to skip.
    fn is_header(&self) -> bool;
}

impl Raw for Line {
    fn raw(&self) -> &[u8] {
        self.text.as_bytes()
    }
    fn is_header(&self) -> bool {
        self.line == 1
    }
}

impl Raw for LogRecord {
    fn raw(&self) -> &[u8] {
        &self.value
    }
    fn is_header(&self) -> bool {
        false
    }
}

impl SourceConfig {
    /// The stream of this source's record batches (read columns and computed ones) in `p`.
    pub fn stream(&self, p: &Pipeline) -> Result<Stream<RecordBatch>> {
        let decoder = {
            let (raw, schema, computed) =
                (self.raw_schema.clone(), self.schema.clone(), self.computed.clone());
            let source: Arc<str> = self.name.as_str().into();
            move |format: Format, skip_header: bool| Decode {
                format,
                skip_header,
                raw: raw.clone(),
                schema: schema.clone(),
                computed: computed.clone(),
                source: source.clone(),
            }
        };
        Ok(match &self.connector {
            Connector::File { path, format: Format::Parquet, .. } => {
                let compute = decoder(Format::Parquet, false);
                p.source(crate::ParquetSource::new(path.clone(), self.raw_schema.clone()))
                    .operator("computed", move || compute.clone())
            }
            Connector::File { path, format, follow, header } => {
                let mut source = FileSource::lines(path.as_str());
                if *follow {
                    source = source.follow();
                }
                let skip = *header && *format == Format::Csv;
                let format = *format;
                p.source(source).operator("decode", move || decoder(format, skip))
            }
            Connector::Log { log, topic, group, bounded, format } => {
                let mut source = LogSource::topic(log, topic.clone(), group.clone());
                if *bounded {
                    source = source.bounded();
                }
                let format = *format;
                p.source(source).operator("decode", move || decoder(format, false))
            }
            Connector::Memory(batches) => {
                let compute = decoder(Format::Parquet, false);
                p.source(weir_runtime::MemorySource::new(batches.clone()).batch_size(1))
                    .operator("computed", move || compute.clone())
            }
        })
    }
}

/// Decodes text records into one record batch per input batch and appends computed columns.
/// (For `Format::Parquet` and memory sources, the input is already a record batch: only the
/// computed columns are added.)
#[derive(Clone)]
struct Decode {
    format: Format,
    skip_header: bool,
    raw: SchemaRef,
    schema: SchemaRef,
    computed: Vec<Arc<dyn PhysicalExpr>>,
    /// The source's name, for the origin of dead letters.
    source: Arc<str>,
}

impl Decode {
    /// Decodes `records` at once.
    fn decode<'a>(
        &self,
        records: impl Iterator<Item = &'a [u8]>,
    ) -> std::result::Result<Option<RecordBatch>, String> {
        let mut buf = Vec::new();
        let mut rows = 0;
        for r in records {
            buf.extend_from_slice(r);
            buf.push(b'\n');
            rows += 1;
        }
        if rows == 0 {
            return Ok(None);
        }
        let batch = match self.format {
            Format::Csv => {
                let mut d =
                    arrow::csv::ReaderBuilder::new(self.raw.clone()).with_batch_size(rows).build_decoder();
                decode_all(&buf, &mut d)?
            }
            _ => {
                let mut d = arrow::json::ReaderBuilder::new(self.raw.clone())
                    .with_batch_size(rows)
                    .build_decoder()
                    .map_err(|e| e.to_string())?;
                decode_all(&buf, &mut d)?
            }
        };
        match batch {
            Some(b) if b.num_rows() == rows => Ok(Some(b)),
            Some(b) => Err(format!("decoded {} rows from {rows} lines", b.num_rows())),
            None => Err("no row decoded".into()),
        }
    }

    fn with_computed(&self, batch: RecordBatch) -> std::result::Result<RecordBatch, String> {
        if self.computed.is_empty() {
            return Ok(batch);
        }
        let mut columns = batch.columns().to_vec();
        for expr in &self.computed {
            let value = expr.evaluate(&batch).map_err(|e| e.to_string())?;
            columns.push(value.into_array(batch.num_rows()).map_err(|e| e.to_string())?);
        }
        RecordBatch::try_new(self.schema.clone(), columns).map_err(|e| e.to_string())
    }

    /// The batch with its computed columns; the rows they fail on go to the dead letters, one
    /// by one, with the origin of their record (`records[row]`, where the rows were decoded
    /// from records).
    fn computed_or_dead_letters(
        &self,
        batch: &RecordBatch,
        records: Option<&[String]>,
        out: &mut Collector<RecordBatch>,
    ) -> Option<RecordBatch> {
        const OPERATOR: &str = "computed columns";
        let origin = |row: usize| origin(&self.source, records.and_then(|r| r.get(row)).map(String::as_str));
        let parts = batch_or_rows(batch, OPERATOR, &origin, out, |b| self.with_computed(b.clone()));
        concat(&self.schema, parts, OPERATOR, &origin(usize::MAX), out)
    }
}

/// The two decoders `arrow` has for text, behind one interface.
trait TextDecoder {
    fn decode(&mut self, buf: &[u8]) -> std::result::Result<usize, arrow::error::ArrowError>;
    fn flush(&mut self) -> std::result::Result<Option<RecordBatch>, arrow::error::ArrowError>;
}

impl TextDecoder for arrow::csv::reader::Decoder {
    fn decode(&mut self, buf: &[u8]) -> std::result::Result<usize, arrow::error::ArrowError> {
        arrow::csv::reader::Decoder::decode(self, buf)
    }
    fn flush(&mut self) -> std::result::Result<Option<RecordBatch>, arrow::error::ArrowError> {
        arrow::csv::reader::Decoder::flush(self)
    }
}

impl TextDecoder for arrow::json::reader::Decoder {
    fn decode(&mut self, buf: &[u8]) -> std::result::Result<usize, arrow::error::ArrowError> {
        arrow::json::reader::Decoder::decode(self, buf)
    }
    fn flush(&mut self) -> std::result::Result<Option<RecordBatch>, arrow::error::ArrowError> {
        arrow::json::reader::Decoder::flush(self)
    }
}

fn decode_all(buf: &[u8], d: &mut impl TextDecoder) -> std::result::Result<Option<RecordBatch>, String> {
    let mut at = 0;
    while at < buf.len() {
        let n = d.decode(&buf[at..]).map_err(|e| e.to_string())?;
        if n == 0 {
            break;
        }
        at += n;
    }
    d.flush().map_err(|e| e.to_string())
}

impl<T: Raw + Send + 'static> Operator<T, RecordBatch> for Decode {
    fn process_batch(&mut self, batch: Batch<T>, out: &mut Collector<RecordBatch>) {
        let records: Vec<&T> =
            batch.records.iter().filter(|r| !(self.skip_header && r.is_header())).collect();
        // Where each decoded row was read.
        let mut origins: Vec<String> = Vec::with_capacity(records.len());
        let decoded = match self.decode(records.iter().map(|r| r.raw())) {
            Ok(b) => {
                origins.extend(records.iter().map(|r| r.origin()));
                b
            }
            // One bad line fails the batch: decode line by line, the bad ones to dead letters.
            Err(_) => {
                let mut good = Vec::new();
                for r in &records {
                    match self.decode(std::iter::once(r.raw())) {
                        Ok(Some(b)) => {
                            origins.push(r.origin());
                            good.push(b);
                        }
                        Ok(None) => {}
                        Err(error) => out.dead_letter(DeadLetter {
                            operator: "decode".into(),
                            origin: origin(&self.source, Some(&r.origin())),
                            payload: r.payload(),
                            error,
                        }),
                    }
                }
                concat(&self.raw, good, "decode", &origin(&self.source, None), out)
            }
        };
        if let Some(b) = decoded.and_then(|b| self.computed_or_dead_letters(&b, Some(&origins), out)) {
            out.batch(batch.derive(vec![b], Vec::new()));
        }
    }
}

impl Operator<RecordBatch, RecordBatch> for Decode {
    fn process_batch(&mut self, batch: Batch<RecordBatch>, out: &mut Collector<RecordBatch>) {
        let mut records = Vec::with_capacity(batch.records.len());
        for b in &batch.records {
            records.extend(self.computed_or_dead_letters(b, None, out));
        }
        out.batch(batch.derive(records, Vec::new()));
    }
}
