//! SQL sources: what `CREATE SOURCE ... WITH (connector = ...)` reads, as Arrow record batches.
//!
//! | connector | options | formats |
//! |---|---|---|
//! | `file` | `path` (a file or a glob), `follow` (`true`: tail it), `header` (CSV: `true` if each file starts with a header line; default `false`, as Flink's CSV format) | `csv`, `json` (JSON lines), `parquet` |
//! | `log` | `topic`, `group` (default: the source's name), `bounded` (`true`: stop at the end offsets seen at start) | `json`, `csv` |
//! | `kafka` (cargo feature `kafka`) | Flink SQL's names: `topic` (`'a;b'`: several), `properties.bootstrap.servers`, `properties.group.id` (default: the source's name; offsets are committed to it when a checkpoint completes), `scan.startup.mode` (`group-offsets`, the default: the group's committed offsets, else the earliest; `earliest-offset`; `latest-offset`; `timestamp` with `scan.startup.timestamp-millis`), `scan.bounded.mode` (`latest-offset`: stop at the end offsets seen at start; `unbounded`, the default), security (below), any other `properties.*` passed through to librdkafka | `json`, `csv`, `raw` (the value in the one column declared, VARCHAR or BYTEA) |
//!
//! Kafka security options (sources and sinks): `properties.sasl.mechanism` (`PLAIN`,
//! `SCRAM-SHA-256`, `SCRAM-SHA-512`), `properties.sasl.username` and the password from
//! `properties.sasl.password.env` (an environment variable's name) or
//! `properties.sasl.password.file` (a file); `properties.ssl.ca.location`,
//! `properties.ssl.certificate.location`, `properties.ssl.key.location` (PEM files) and
//! `properties.ssl.key.password.env` / `.file`; `properties.security.protocol` is accepted when
//! it matches what these give. A password is never written in SQL and never printed. Keys Weir
//! owns (`properties.enable.auto.commit`, `properties.isolation.level`, ...) are refused, naming
//! them. A Kafka source reads `read_committed`, a partition per split (event time and idleness
//! per partition); subtask `i` of `p` reads partitions `i, i + p, ...`.
//!
//! Any other option is refused, naming the nearest valid one. A relative `path` (of sources and
//! sinks alike) is relative to the current directory of the program (for `weir sql`: where it
//! is run, not where the script file is); a sink's is made absolute when its statement is
//! planned.
//!
//! Text formats are decoded by `arrow-json` / `arrow-csv` with the declared schema: JSON
//! fields by name (unknown fields ignored, missing ones null); CSV columns by position, or, with
//! `header = 'true'`, by the names in each file's header (exactly, else ignoring case; columns
//! the source does not declare are skipped). A header that lacks a declared column is refused
//! when the source is declared, naming the file and the columns; a file that appears later with
//! such a header (`follow`) sends its lines to the dead letters with that reason. A batch
//! of lines is decoded at once; if that fails, line by line, and each line that does not decode
//! goes to the pipeline's dead-letter output with its origin (`path:line`,
//! `topic/partition@offset`) and the decoder's error. Computed columns are evaluated on every
//! decoded batch and appended; if that fails, row by row, and each row they fail on goes to the
//! dead letters as JSON (its read columns) with the error.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
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
#[non_exhaustive]
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
    /// Kafka topics (cargo feature `kafka`).
    #[cfg(feature = "kafka")]
    Kafka {
        /// The source (without its bound: see `bounded`).
        source: Box<weir_kafka::KafkaSource>,
        /// The topics.
        topics: Vec<String>,
        /// The consumer group.
        group: String,
        /// Stop at the end offsets seen when the job starts.
        bounded: bool,
        /// The format of the values.
        format: Format,
        /// The column the topic's records are keyed by (`key.fields`), if declared.
        key: Option<String>,
    },
}

/// How records are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Format {
    /// One JSON object per line (or per log record).
    Json,
    /// Comma-separated values.
    Csv,
    /// Apache Parquet files.
    Parquet,
    /// Each record's value as it is, in the one column declared (Kafka sources).
    Raw,
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
    /// The file the record was read from, and whether it is the file's first line (a CSV
    /// header when the source has headers).
    fn file(&self) -> Option<(&Arc<str>, bool)>;
}

impl Raw for Line {
    fn raw(&self) -> &[u8] {
        self.text.as_bytes()
    }
    fn file(&self) -> Option<(&Arc<str>, bool)> {
        Some((&self.path, self.line == 1))
    }
}

#[cfg(feature = "kafka")]
impl Raw for weir_kafka::KafkaRecord {
    fn raw(&self) -> &[u8] {
        &self.value
    }
    fn file(&self) -> Option<(&Arc<str>, bool)> {
        None
    }
}

impl Raw for LogRecord {
    fn raw(&self) -> &[u8] {
        &self.value
    }
    fn file(&self) -> Option<(&Arc<str>, bool)> {
        None
    }
}

/// How the columns of one CSV file with a header map to the declared columns.
#[derive(Debug)]
struct Layout {
    /// The file's columns in its order: the declared ones with their types, the others text.
    schema: SchemaRef,
    /// For each declared column, its index in the file.
    projection: Vec<usize>,
}

/// The fields of one CSV line (RFC 4180 quoting; surrounding whitespace trimmed).
fn csv_fields(line: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut quoted = false;
    let mut chars = line.trim_start_matches('\u{feff}').chars().peekable();
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                if let Some(f) = fields.last_mut() {
                    f.push('"');
                }
            }
            (_, '"') => quoted = !quoted,
            (false, ',') => fields.push(String::new()),
            (_, c) => {
                if let Some(f) = fields.last_mut() {
                    f.push(c);
                }
            }
        }
    }
    fields.into_iter().map(|f| f.trim().to_owned()).collect()
}

/// Maps the header `line` of a CSV file to the declared columns `raw`, by name (exactly, or
/// else ignoring case); columns the header has and the source does not declare are skipped.
///
/// # Errors
///
/// The declared columns the header lacks, and the header's columns.
fn layout(raw: &SchemaRef, line: &str) -> std::result::Result<Layout, String> {
    let header = csv_fields(line.trim_end_matches('\r'));
    let mut projection = Vec::with_capacity(raw.fields().len());
    let mut missing = Vec::new();
    for f in raw.fields() {
        let name = f.name();
        let at = header
            .iter()
            .position(|h| h == name)
            .or_else(|| header.iter().position(|h| h.eq_ignore_ascii_case(name)));
        match at {
            Some(i) => projection.push(i),
            None => missing.push(name.as_str()),
        }
    }
    if !missing.is_empty() {
        return Err(format!(
            "the header ({}) lacks the declared column{} {} (a file without a header: header = 'false')",
            header.join(", "),
            if missing.len() == 1 { "" } else { "s" },
            missing.join(", ")
        ));
    }
    let fields: Vec<Field> = header
        .iter()
        .enumerate()
        .map(|(i, h)| match projection.iter().position(|p| *p == i) {
            Some(d) => raw.field(d).clone(),
            None => Field::new(format!("_{i}_{h}"), DataType::Utf8, true),
        })
        .collect();
    Ok(Layout { schema: Arc::new(Schema::new(fields)), projection })
}

/// The first line of the file at `path`.
fn first_line(path: &str) -> std::result::Result<String, String> {
    use std::io::BufRead;
    let file = std::fs::File::open(path).map_err(|e| format!("cannot read the header of {path}: {e}"))?;
    let mut line = String::new();
    std::io::BufReader::new(file)
        .read_line(&mut line)
        .map_err(|e| format!("cannot read the header of {path}: {e}"))?;
    Ok(line.trim_end_matches(['\n', '\r']).to_owned())
}

/// Checks the header of every CSV file `path` (a file or a glob) names now against the declared
/// columns `raw`: a mismatch is refused when the source is declared, not row by row.
///
/// # Errors
///
/// A header that lacks declared columns, naming the file and the columns.
pub(crate) fn check_headers(source: &str, path: &str, raw: &SchemaRef) -> Result<()> {
    // A pattern that names no file yet is the source's to report when it runs.
    let files = weir_connectors::files::resolve(path).unwrap_or_default();
    for file in &files {
        let text = file.display().to_string();
        let check = first_line(&text).and_then(|line| layout(raw, &line));
        if let Err(reason) = check {
            return Err(SqlError::Option {
                object: source.to_owned(),
                field: "header".into(),
                reason: format!("{text}: {reason}"),
            });
        }
    }
    Ok(())
}

impl SourceConfig {
    /// Whether the source ends: files not followed, log sources bounded to the end offsets they
    /// see at start, and record batches in memory. A query over a bounded source that a stream
    /// cannot answer (`ORDER BY`, `LIMIT`, `GROUP BY` without a window) runs as a batch query.
    pub fn is_bounded(&self) -> bool {
        match &self.connector {
            Connector::File { follow, .. } => !follow,
            Connector::Log { bounded, .. } => *bounded,
            Connector::Memory(_) => true,
            #[cfg(feature = "kafka")]
            Connector::Kafka { bounded, .. } => *bounded,
        }
    }

    /// The stream of this source's record batches (read columns and computed ones) in `p`.
    pub fn stream(&self, p: &Pipeline) -> Result<Stream<RecordBatch>> {
        self.stream_at(p, crate::script::Place::Alone)
    }

    /// [`SourceConfig::stream`] for a pipeline that runs at `place` (a task reads its
    /// partition of a Kafka source).
    #[cfg_attr(not(feature = "kafka"), allow(unused_variables))]
    pub(crate) fn stream_at(
        &self,
        p: &Pipeline,
        place: crate::script::Place<'_>,
    ) -> Result<Stream<RecordBatch>> {
        let decoder = {
            let (raw, schema, computed) =
                (self.raw_schema.clone(), self.schema.clone(), self.computed.clone());
            let source: Arc<str> = self.name.as_str().into();
            move |format: Format, header: bool| Decode {
                format,
                header,
                layouts: HashMap::new(),
                raw: raw.clone(),
                schema: schema.clone(),
                computed: computed.clone(),
                source: source.clone(),
            }
        };
        Ok(match &self.connector {
            Connector::File { path, format: Format::Parquet, .. } => p
                .source(crate::ParquetSource::new(path.clone(), self.raw_schema.clone()))
                .operator("computed", decoder(Format::Parquet, false)),
            Connector::File { path, format, follow, header } => {
                let mut source = FileSource::lines(path.as_str());
                if *follow {
                    source = source.follow();
                }
                let header = *header && *format == Format::Csv;
                let format = *format;
                p.source(source).operator("decode", decoder(format, header))
            }
            Connector::Log { log, topic, group, bounded, format } => {
                let mut source = LogSource::topic(log, topic.clone(), group.clone());
                if *bounded {
                    source = source.bounded();
                }
                let format = *format;
                p.source(source).operator("decode", decoder(format, false))
            }
            Connector::Memory(batches) => p
                .source(weir_runtime::MemorySource::new(batches.clone()).batch_size(1))
                .operator("computed", decoder(Format::Parquet, false)),
            #[cfg(feature = "kafka")]
            Connector::Kafka { source, bounded, format, .. } => {
                let mut source = match place {
                    crate::script::Place::Task(task) => task.source_from((**source).clone()),
                    crate::script::Place::Alone => (**source).clone(),
                };
                if *bounded {
                    source = source.bounded();
                }
                let format = *format;
                p.source(source).operator("decode", decoder(format, false))
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
    /// CSV files with a header: columns are mapped by name, per file.
    header: bool,
    /// The layout of each file seen (or why its header does not fit).
    layouts: HashMap<Arc<str>, Arc<std::result::Result<Layout, String>>>,
    raw: SchemaRef,
    schema: SchemaRef,
    computed: Vec<Arc<dyn PhysicalExpr>>,
    /// The source's name, for the origin of dead letters.
    source: Arc<str>,
}

impl Decode {
    /// Decodes `records` at once, of a CSV file laid out as `layout` if given.
    fn decode<'a>(
        &self,
        records: impl Iterator<Item = &'a [u8]>,
        layout: Option<&Layout>,
    ) -> std::result::Result<Option<RecordBatch>, String> {
        if self.format == Format::Raw {
            return self.decode_raw(records);
        }
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
                let schema = layout.map_or(&self.raw, |l| &l.schema);
                let mut d =
                    arrow::csv::ReaderBuilder::new(schema.clone()).with_batch_size(rows).build_decoder();
                match (decode_all(&buf, &mut d)?, layout) {
                    (Some(b), Some(l)) => Some(
                        b.project(&l.projection)
                            .and_then(|b| RecordBatch::try_new(self.raw.clone(), b.columns().to_vec()))
                            .map_err(|e| e.to_string())?,
                    ),
                    (b, _) => b,
                }
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

    /// Each record's bytes in the one column declared: text (UTF-8, else an error) or bytes.
    fn decode_raw<'a>(
        &self,
        records: impl Iterator<Item = &'a [u8]>,
    ) -> std::result::Result<Option<RecordBatch>, String> {
        use arrow::array::{Array, BinaryArray, StringArray};
        let column: Arc<dyn Array> = match self.raw.fields().first().map(|f| f.data_type()) {
            Some(t @ (DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View)) => {
                let text = records
                    .map(|r| std::str::from_utf8(r).map(Some))
                    .collect::<std::result::Result<StringArray, _>>()
                    .map_err(|e| format!("the value is not UTF-8 text: {e}"))?;
                arrow::compute::cast(&text, t).map_err(|e| e.to_string())?
            }
            Some(t @ (DataType::Binary | DataType::LargeBinary)) => {
                arrow::compute::cast(&BinaryArray::from_iter_values(records), t).map_err(|e| e.to_string())?
            }
            other => return Err(format!("format raw reads into one text or bytes column, not {other:?}")),
        };
        if column.is_empty() {
            return Ok(None);
        }
        RecordBatch::try_new(self.raw.clone(), vec![column]).map(Some).map_err(|e| e.to_string())
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

impl Decode {
    /// The layout of the CSV file `path` (its header `line` if this is it, else read from the
    /// file: a job restored mid-file has not seen it).
    fn layout_of(
        &mut self,
        path: &Arc<str>,
        line: Option<&[u8]>,
    ) -> Arc<std::result::Result<Layout, String>> {
        if let Some(l) = self.layouts.get(path) {
            return l.clone();
        }
        let header = match line {
            Some(l) => Ok(String::from_utf8_lossy(l).into_owned()),
            None => first_line(path),
        };
        let layout = Arc::new(header.and_then(|h| layout(&self.raw, &h)));
        self.layouts.insert(path.clone(), layout.clone());
        layout
    }

    /// Decodes `records` (of one file laid out as `layout`, if given): the decoded rows and
    /// where each was read; the records that do not decode go to the dead letters, one by one.
    fn decode_records<T: Raw>(
        &self,
        records: &[&T],
        layout: Option<&Layout>,
        origins: &mut Vec<String>,
        out: &mut Collector<RecordBatch>,
    ) -> Option<RecordBatch> {
        match self.decode(records.iter().map(|r| r.raw()), layout) {
            Ok(b) => {
                origins.extend(records.iter().map(|r| r.origin()));
                b
            }
            // One bad line fails the batch: decode line by line, the bad ones to dead letters.
            Err(_) => {
                let mut good = Vec::new();
                for r in records {
                    match self.decode(std::iter::once(r.raw()), layout) {
                        Ok(Some(b)) => {
                            origins.push(r.origin());
                            good.push(b);
                        }
                        Ok(None) => {}
                        Err(error) => self.dead_letter(*r, error, out),
                    }
                }
                concat(&self.raw, good, "decode", &origin(&self.source, None), out)
            }
        }
    }

    fn dead_letter<T: Raw>(&self, r: &T, error: String, out: &mut Collector<RecordBatch>) {
        out.dead_letter(DeadLetter {
            operator: "decode".into(),
            origin: origin(&self.source, Some(&r.origin())),
            payload: r.payload(),
            error,
        });
    }
}

impl<T: Raw + Send + 'static> Operator<T, RecordBatch> for Decode {
    fn process_batch(&mut self, batch: Batch<T>, out: &mut Collector<RecordBatch>) {
        let records: Vec<&T> = batch.records.iter().collect();
        // Where each decoded row was read.
        let mut origins: Vec<String> = Vec::with_capacity(records.len());
        let decoded = if !self.header {
            self.decode_records(&records, None, &mut origins, out)
        } else {
            // Runs of lines of one file, each decoded with its file's layout.
            let mut parts = Vec::new();
            let mut start = 0;
            while start < records.len() {
                let path = records[start].file().map(|(p, _)| p.clone());
                let end = start
                    + records[start..]
                        .iter()
                        .take_while(|r| r.file().map(|(p, _)| p) == path.as_ref())
                        .count();
                let run = &records[start..end];
                start = end;
                let Some(path) = path else {
                    parts.extend(self.decode_records(run, None, &mut origins, out));
                    continue;
                };
                let header = run.iter().find(|r| r.file().is_some_and(|(_, first)| first)).map(|r| r.raw());
                let layout = self.layout_of(&path, header);
                let lines: Vec<&T> =
                    run.iter().filter(|r| !r.file().is_some_and(|(_, first)| first)).copied().collect();
                match layout.as_ref() {
                    Ok(l) => parts.extend(self.decode_records(&lines, Some(l), &mut origins, out)),
                    Err(e) => {
                        for r in lines {
                            self.dead_letter(r, e.clone(), out);
                        }
                    }
                }
            }
            concat(&self.raw, parts, "decode", &origin(&self.source, None), out)
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
