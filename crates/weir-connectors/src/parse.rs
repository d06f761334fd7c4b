//! Parsing lines into records, with failures going to the dead letters.
//!
//! Sources do not parse: a source has no way to hand a bad record to the dead-letter output,
//! and one bad line must not stop a pipeline. The typed file sources yield the raw line typed
//! with its target — [`JsonLine<T>`], [`CsvLine<T>`] — and the parse runs in the runtime's
//! [`Stream::try_map`], fused into the source's task (no channel, no copy in between):
//!
//! ```text
//!  FileSource::csv::<T>  ──CsvLine<T>──►  .parsed()  ──T──►  …
//!                                             │ = try_map(Parse::parse)
//!                                             └─ bad line ──► DeadLetter { origin: "path:line",
//!                                                              payload: the line, error }
//! ```
//!
//! [`ParseExt::parsed`] is that `try_map` for any stream of [`Parse`] records; plain [`Line`]s
//! (and [`LogRecord`](crate::LogRecord)s) parse with [`parse_json`] (or
//! [`LogRecord::parse_json`](crate::LogRecord::parse_json)) in a `try_map` of one's own.
//!
//! A CSV line is parsed alone against its file's header: the field count must equal the
//! header's, and columns map to `T`'s fields by name (serde's derive, as in the `csv` crate).

use std::marker::PhantomData;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use weir_runtime::{Stream, Traceable, Traced};

use crate::file_source::Line;

/// Why a line is not a valid record. Goes to the dead letters as the `error` text.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ParseError {
    /// Not valid JSON, or not the shape of the target type.
    #[error("invalid JSON: {0}")]
    Json(#[source] serde_json::Error),
    /// Not valid CSV, or a field not of its column's type.
    #[error("invalid CSV: {0}")]
    Csv(#[source] csv::Error),
    /// A CSV line with more or fewer fields than its file's header.
    #[error("invalid CSV: {found} fields, but the header has {expected}")]
    CsvFieldCount {
        /// Fields in the header.
        expected: usize,
        /// Fields in the line.
        found: usize,
    },
    /// A CSV line that holds more than one record (a bare `\r` inside it).
    #[error("invalid CSV: more than one record on the line")]
    CsvExtraRecord,
    /// A CSV line with an odd number of `"`: a quoted field not closed on its line (or a stray
    /// quote).
    #[error("invalid CSV: unbalanced quotes (a quoted field must end on its line)")]
    CsvUnbalancedQuotes,
}

/// A record that can be parsed into a typed value; see [`ParseExt::parsed`].
pub trait Parse: Traceable {
    /// The parsed value.
    type Output;

    /// Parses the record.
    ///
    /// # Errors
    ///
    /// [`ParseError`] saying why the record is invalid.
    fn parse(&self) -> Result<Self::Output, ParseError>;
}

/// Parsing for streams of [`Parse`] records.
pub trait ParseExt {
    /// The parsed records.
    type Output;

    /// The parsed records, each with the record it was parsed from.
    type Traced;

    /// Parses every record; a record that fails goes to the pipeline's dead letters (origin,
    /// raw payload, error) and the pipeline goes on. This is `try_map(Parse::parse)`.
    fn parsed(self) -> Self::Output;

    /// [`ParseExt::parsed`], keeping each record with its value
    /// ([`Traced`](weir_runtime::Traced), which dereferences to the value): a later
    /// [`try_map`](Stream::try_map) sends its failures to the dead letters with the line's
    /// origin and text. This is `try_map_traced(Parse::parse)`.
    fn parsed_traced(self) -> Self::Traced;
}

impl<R> ParseExt for Stream<R>
where
    R: Parse + Send + 'static,
    R::Output: Send + 'static,
{
    type Output = Stream<R::Output>;
    type Traced = Stream<Traced<R, R::Output>>;

    fn parsed(self) -> Stream<R::Output> {
        self.try_map(R::parse)
    }

    fn parsed_traced(self) -> Stream<Traced<R, R::Output>> {
        self.try_map_traced(R::parse)
    }
}

/// Parses a line as JSON into `T`, for `try_map` over plain [`Line`]s.
///
/// # Errors
///
/// [`ParseError::Json`].
pub fn parse_json<T: DeserializeOwned>(line: &Line) -> Result<T, ParseError> {
    serde_json::from_str(&line.text).map_err(ParseError::Json)
}

/// A line of a JSON-lines file that should hold a `T`; see
/// [`FileSource::json_lines`](crate::FileSource::json_lines).
pub struct JsonLine<T> {
    /// The line.
    pub line: Line,
    _target: PhantomData<fn() -> T>,
}

impl<T> JsonLine<T> {
    /// A line to parse as a `T`.
    pub fn new(line: Line) -> Self {
        JsonLine { line, _target: PhantomData }
    }
}

impl<T: DeserializeOwned> JsonLine<T> {
    /// Parses the line.
    ///
    /// # Errors
    ///
    /// [`ParseError::Json`].
    pub fn parse(&self) -> Result<T, ParseError> {
        parse_json(&self.line)
    }
}

impl<T> Clone for JsonLine<T> {
    fn clone(&self) -> Self {
        JsonLine::new(self.line.clone())
    }
}

impl<T> std::fmt::Debug for JsonLine<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("JsonLine").field(&self.line).finish()
    }
}

impl<T> Traceable for JsonLine<T> {
    fn origin(&self) -> String {
        self.line.origin()
    }
    fn payload(&self) -> String {
        self.line.payload()
    }
}

impl<T: DeserializeOwned> Parse for JsonLine<T> {
    type Output = T;

    fn parse(&self) -> Result<T, ParseError> {
        JsonLine::parse(self)
    }
}

/// The header of a CSV file: its column names, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsvHeader {
    names: csv::StringRecord,
}

impl CsvHeader {
    /// Parses a header line. A line that is not valid CSV gives the columns the lenient parser
    /// sees (the lines after it will fail their own checks).
    pub fn parse(line: &str) -> CsvHeader {
        let names = read_one_record(line).ok().flatten().map(|(r, _)| r).unwrap_or_default();
        CsvHeader { names }
    }

    /// The column names.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.names.iter()
    }

    /// The number of columns.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Whether there are no columns.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

/// Reads the first CSV record of `text`, and whether another follows.
///
/// One `csv_core::Reader` per thread, reset per line: building a `csv::Reader` per line builds its
/// DFA each time (~17 µs, 95 % of a CSV pipeline's time before this).
fn read_one_record(text: &str) -> Result<Option<(csv::StringRecord, bool)>, csv::Error> {
    thread_local! {
        static CORE: std::cell::RefCell<(csv_core::Reader, Vec<u8>, Vec<usize>)> =
            std::cell::RefCell::new((csv_core::Reader::new(), vec![0; 256], vec![0; 32]));
    }
    CORE.with_borrow_mut(|(core, out, ends)| {
        core.reset();
        let mut input = text.as_bytes();
        let Some(record) = next_record(core, &mut input, out, ends) else { return Ok(None) };
        let more = next_record(core, &mut input, out, ends).is_some();
        Ok(Some((record, more)))
    })
}

/// The next record of `input` (advanced past it), or `None` at its end.
fn next_record(
    core: &mut csv_core::Reader,
    input: &mut &[u8],
    out: &mut Vec<u8>,
    ends: &mut Vec<usize>,
) -> Option<csv::StringRecord> {
    use csv_core::ReadRecordResult as R;
    let (mut outlen, mut endlen) = (0, 0);
    loop {
        let (res, nin, nout, nend) = core.read_record(input, &mut out[outlen..], &mut ends[endlen..]);
        *input = &input[nin..];
        outlen += nout;
        endlen += nend;
        match res {
            R::InputEmpty => {} // Called again with the empty rest: that signals the end.
            R::OutputFull => out.resize(out.len() * 2, 0),
            R::OutputEndsFull => ends.resize(ends.len() * 2, 0),
            R::Record => {
                let mut record = csv::StringRecord::with_capacity(outlen, endlen);
                let mut start = 0;
                for &end in &ends[..endlen] {
                    record.push_field(&String::from_utf8_lossy(&out[start..end]));
                    start = end;
                }
                return Some(record);
            }
            R::End => return None,
        }
    }
}

/// A line of a CSV file that should hold a `T`, with its file's header; see
/// [`FileSource::csv`](crate::FileSource::csv).
pub struct CsvLine<T> {
    /// The line.
    pub line: Line,
    header: Arc<CsvHeader>,
    _target: PhantomData<fn() -> T>,
}

impl<T> CsvLine<T> {
    /// A line to parse as a `T` with the columns of `header`.
    pub fn new(line: Line, header: Arc<CsvHeader>) -> Self {
        CsvLine { line, header, _target: PhantomData }
    }

    /// The header of the line's file.
    pub fn header(&self) -> &CsvHeader {
        &self.header
    }
}

impl<T: DeserializeOwned> CsvLine<T> {
    /// Parses the line, mapping fields to `T` by the header's column names.
    ///
    /// # Errors
    ///
    /// [`ParseError::Csv`], [`ParseError::CsvFieldCount`], [`ParseError::CsvExtraRecord`],
    /// [`ParseError::CsvUnbalancedQuotes`].
    pub fn parse(&self) -> Result<T, ParseError> {
        // `""` escapes a quote, so a complete line has an even number of them.
        if self.line.text.bytes().filter(|&b| b == b'"').count() % 2 == 1 {
            return Err(ParseError::CsvUnbalancedQuotes);
        }
        let (record, more) = read_one_record(&self.line.text)
            .map_err(ParseError::Csv)?
            .ok_or(ParseError::CsvFieldCount { expected: self.header.len(), found: 0 })?;
        if more {
            return Err(ParseError::CsvExtraRecord);
        }
        if record.len() != self.header.len() {
            return Err(ParseError::CsvFieldCount { expected: self.header.len(), found: record.len() });
        }
        record.deserialize(Some(&self.header.names)).map_err(ParseError::Csv)
    }
}

impl<T> Clone for CsvLine<T> {
    fn clone(&self) -> Self {
        CsvLine::new(self.line.clone(), self.header.clone())
    }
}

impl<T> std::fmt::Debug for CsvLine<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CsvLine").field("line", &self.line).field("header", &self.header).finish()
    }
}

impl<T> Traceable for CsvLine<T> {
    fn origin(&self) -> String {
        self.line.origin()
    }
    fn payload(&self) -> String {
        self.line.payload()
    }
}

impl<T: DeserializeOwned> Parse for CsvLine<T> {
    type Output = T;

    fn parse(&self) -> Result<T, ParseError> {
        CsvLine::parse(self)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[derive(Debug, PartialEq, serde::Deserialize)]
    struct Row {
        name: String,
        n: u32,
    }

    fn line(text: &str) -> Line {
        Line { path: "f.csv".into(), line: 2, text: text.into() }
    }

    #[test]
    fn csv_maps_columns_by_header_name() {
        let header = Arc::new(CsvHeader::parse("n,name"));
        assert_eq!(header.names().collect::<Vec<_>>(), ["n", "name"]);
        let row = CsvLine::<Row>::new(line("7,\"a, b\""), header.clone()).parse().unwrap();
        assert_eq!(row, Row { name: "a, b".into(), n: 7 });
        let row = CsvLine::<Row>::new(line("8,\"say \"\"hi\"\"\""), header).parse().unwrap();
        assert_eq!(row, Row { name: "say \"hi\"".into(), n: 8 });
    }

    #[test]
    fn csv_rejects_wrong_field_counts_types_and_extra_records() {
        let header = Arc::new(CsvHeader::parse("name,n"));
        let parse = |t: &str| CsvLine::<Row>::new(line(t), header.clone()).parse().unwrap_err();
        assert!(matches!(parse("a"), ParseError::CsvFieldCount { expected: 2, found: 1 }));
        assert!(matches!(parse("a,1,2"), ParseError::CsvFieldCount { expected: 2, found: 3 }));
        assert!(matches!(parse("a,x"), ParseError::Csv(_)));
        assert!(matches!(parse("a,1\rb,2"), ParseError::CsvExtraRecord));
        assert!(matches!(parse("\"a,1"), ParseError::CsvUnbalancedQuotes));
        assert!(matches!(parse("a\"b,1"), ParseError::CsvUnbalancedQuotes));
        let e = parse("a,x").to_string();
        assert!(e.starts_with("invalid CSV"), "{e}");
    }

    #[test]
    fn json_errors_say_json() {
        let e = parse_json::<Row>(&line("{\"name\": 1}")).unwrap_err();
        assert!(matches!(e, ParseError::Json(_)));
        assert!(e.to_string().starts_with("invalid JSON"), "{e}");
        let ok: Row = parse_json(&line(r#"{"name":"x","n":3}"#)).unwrap();
        assert_eq!(ok, Row { name: "x".into(), n: 3 });
    }

    #[test]
    fn typed_lines_trace_to_their_line() {
        let j = JsonLine::<Row>::new(line("{"));
        assert_eq!(j.origin(), "f.csv:2");
        assert_eq!(j.payload(), "{");
    }
}
