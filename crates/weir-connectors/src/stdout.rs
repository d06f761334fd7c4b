//! Standard output: records as JSON lines, or as a readable table per batch.
//!
//! Each batch is rendered into memory and written with one `write_all` under the stdout lock,
//! so the output of parallel subtasks interleaves by whole batches, never inside a line or a
//! table. A closed stdout (`| head`) fails the job with a connector error.
//!
//! Standard output is not transactional: in a checkpointed pipeline it is at least once (after
//! a restore, what followed the checkpoint is printed again).
//!
//! # Tables
//!
//! [`StdoutSink::table`] prints each batch as an aligned table, `psql` style:
//!
//! ```text
//!  key | window_start | window_end | value
//! -----+--------------+------------+-------
//!  a   |         1000 |       2000 |     3
//!  b   |         1000 |       2000 |    12
//! (2 rows)
//! ```
//!
//! Columns are a struct's fields in declaration order (a map's keys in its order; a tuple's
//! positions `0`, `1`, …; a single column `value` for anything else). Strings print bare, `null`
//! as an empty cell, nested values as compact JSON. Cells longer than 48 characters are cut with
//! `…`; control characters are escaped. Columns whose every cell is a number are right-aligned.

use std::io::Write;

use serde::Serialize;
use serde::ser::{self, Impossible};
use serde_json::Value;
use weir_runtime::{Batch, Result, Sink, SinkWriter};

use crate::connector_error;

/// Widest cell, in characters, before it is cut.
const MAX_CELL_CHARS: usize = 48;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Json,
    Table,
}

/// Prints records of any `T: Serialize` to standard output (see the [module docs](crate::stdout)).
#[derive(Debug, Clone, Copy)]
pub struct StdoutSink {
    mode: Mode,
}

impl StdoutSink {
    /// One JSON value per line.
    pub fn json() -> StdoutSink {
        StdoutSink { mode: Mode::Json }
    }

    /// An aligned table per batch.
    pub fn table() -> StdoutSink {
        StdoutSink { mode: Mode::Table }
    }
}

impl<T: Serialize + Send + 'static> Sink<T> for StdoutSink {
    type Writer = StdoutWriter;

    fn name(&self) -> String {
        match self.mode {
            Mode::Json => "stdout:json".to_owned(),
            Mode::Table => "stdout:table".to_owned(),
        }
    }

    fn writer(&self, _: usize, _: usize) -> Result<StdoutWriter> {
        Ok(StdoutWriter { mode: self.mode, buf: Vec::new() })
    }
}

/// The writer of one [`StdoutSink`] subtask.
#[derive(Debug)]
pub struct StdoutWriter {
    mode: Mode,
    buf: Vec<u8>,
}

fn stdout_error(action: &str, e: impl Into<weir_runtime::BoxError>) -> weir_runtime::Error {
    connector_error("stdout sink", "stdout", crate::Failed::new(action, e))
}

impl<T: Serialize + Send + 'static> SinkWriter<T> for StdoutWriter {
    async fn write_batch(&mut self, batch: Batch<T>) -> Result<()> {
        self.buf.clear();
        match self.mode {
            Mode::Json => {
                render_json_lines(&batch.records, &mut self.buf).map_err(|e| stdout_error("serialize", e))?
            }
            Mode::Table => {
                let table = render_table(&batch.records).map_err(|e| stdout_error("serialize", e))?;
                self.buf.extend_from_slice(table.as_bytes());
            }
        }
        let mut out = std::io::stdout().lock();
        out.write_all(&self.buf).map_err(|e| stdout_error("write", e))
    }

    async fn finish(&mut self) -> Result<()> {
        std::io::stdout().lock().flush().map_err(|e| stdout_error("flush", e))
    }
}

fn render_json_lines<T: Serialize>(records: &[T], out: &mut Vec<u8>) -> serde_json::Result<()> {
    for r in records {
        serde_json::to_writer(&mut *out, r)?;
        out.push(b'\n');
    }
    Ok(())
}

/// Renders records as an aligned table (see the [module docs](crate::stdout)).
pub(crate) fn render_table<T: Serialize>(records: &[T]) -> serde_json::Result<String> {
    let mut columns: Vec<String> = Vec::new();
    let mut values = Vec::with_capacity(records.len());
    for r in records {
        let value = serde_json::to_value(r)?;
        let names: Vec<String> = match field_names(r) {
            Some(names) => names,
            None => match &value {
                Value::Object(map) => map.keys().cloned().collect(),
                Value::Array(items) => (0..items.len()).map(|i| i.to_string()).collect(),
                _ => vec!["value".to_owned()],
            },
        };
        for name in names {
            if !columns.contains(&name) {
                columns.push(name);
            }
        }
        values.push(value);
    }
    let rows: Vec<Vec<(String, bool)>> = values
        .iter()
        .map(|v| {
            columns
                .iter()
                .map(|c| {
                    let cell = match v {
                        Value::Object(map) => map.get(c),
                        Value::Array(items) => c.parse::<usize>().ok().and_then(|i| items.get(i)),
                        other => Some(other),
                    };
                    render_cell(cell)
                })
                .collect()
        })
        .collect();
    let width = |i: usize, header: &str| {
        rows.iter().map(|r| r[i].0.chars().count()).chain([header.chars().count()]).max().unwrap_or(0)
    };
    let widths: Vec<usize> = columns.iter().enumerate().map(|(i, c)| width(i, c)).collect();
    let numeric: Vec<bool> = (0..columns.len())
        .map(|i| rows.iter().all(|r| r[i].1 || r[i].0.is_empty()) && rows.iter().any(|r| r[i].1))
        .collect();

    let mut out = String::new();
    let cells = |out: &mut String, texts: &mut dyn Iterator<Item = (usize, &str)>| {
        let line: Vec<String> = texts
            .map(|(i, t)| {
                let pad = widths[i].saturating_sub(t.chars().count());
                if numeric[i] {
                    format!(" {}{t} ", " ".repeat(pad))
                } else {
                    format!(" {t}{} ", " ".repeat(pad))
                }
            })
            .collect();
        out.push_str(line.join("|").trim_end());
        out.push('\n');
    };
    cells(&mut out, &mut columns.iter().enumerate().map(|(i, c)| (i, c.as_str())));
    let rule: Vec<String> = widths.iter().map(|w| "-".repeat(w + 2)).collect();
    out.push_str(&rule.join("+"));
    out.push('\n');
    for row in &rows {
        cells(&mut out, &mut row.iter().enumerate().map(|(i, (t, _))| (i, t.as_str())));
    }
    out.push_str(&format!("({} row{})\n", rows.len(), if rows.len() == 1 { "" } else { "s" }));
    Ok(out)
}

/// A cell's text and whether it is a number.
fn render_cell(value: Option<&Value>) -> (String, bool) {
    let (text, number) = match value {
        None | Some(Value::Null) => (String::new(), false),
        Some(Value::String(s)) => (s.clone(), false),
        Some(Value::Number(n)) => (n.to_string(), true),
        Some(v) => (v.to_string(), false),
    };
    let mut cell = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            cell.extend(c.escape_default());
        } else {
            cell.push(c);
        }
    }
    if cell.chars().count() > MAX_CELL_CHARS {
        cell = cell.chars().take(MAX_CELL_CHARS - 1).collect();
        cell.push('…');
    }
    (cell, number)
}

/// The top-level field names of a struct or map record, in serialization order.
fn field_names<T: Serialize + ?Sized>(record: &T) -> Option<Vec<String>> {
    record.serialize(FieldNames).ok()
}

/// A serializer that only collects the field names of a struct (or the keys of a map) and
/// refuses everything else.
struct FieldNames;

#[derive(Debug)]
struct NotAStruct;

impl std::fmt::Display for NotAStruct {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("not a struct")
    }
}

impl std::error::Error for NotAStruct {}

impl ser::Error for NotAStruct {
    fn custom<M: std::fmt::Display>(_: M) -> Self {
        NotAStruct
    }
}

struct Names(Vec<String>);

macro_rules! refuse {
    ($($name:ident($($arg:ty),*)),* $(,)?) => {
        $(fn $name(self, $(_: $arg),*) -> Result<Vec<String>, NotAStruct> { Err(NotAStruct) })*
    };
}

impl ser::Serializer for FieldNames {
    type Ok = Vec<String>;
    type Error = NotAStruct;
    type SerializeSeq = Impossible<Vec<String>, NotAStruct>;
    type SerializeTuple = Impossible<Vec<String>, NotAStruct>;
    type SerializeTupleStruct = Impossible<Vec<String>, NotAStruct>;
    type SerializeTupleVariant = Impossible<Vec<String>, NotAStruct>;
    type SerializeMap = Names;
    type SerializeStruct = Names;
    type SerializeStructVariant = Impossible<Vec<String>, NotAStruct>;

    refuse!(
        serialize_bool(bool),
        serialize_i8(i8),
        serialize_i16(i16),
        serialize_i32(i32),
        serialize_i64(i64),
        serialize_u8(u8),
        serialize_u16(u16),
        serialize_u32(u32),
        serialize_u64(u64),
        serialize_f32(f32),
        serialize_f64(f64),
        serialize_char(char),
        serialize_str(&str),
        serialize_bytes(&[u8]),
        serialize_none(),
        serialize_unit(),
        serialize_unit_struct(&'static str),
        serialize_unit_variant(&'static str, u32, &'static str),
    );

    fn serialize_some<V: Serialize + ?Sized>(self, value: &V) -> Result<Vec<String>, NotAStruct> {
        value.serialize(self)
    }

    fn serialize_newtype_struct<V: Serialize + ?Sized>(
        self,
        _: &'static str,
        value: &V,
    ) -> Result<Vec<String>, NotAStruct> {
        value.serialize(self)
    }

    fn serialize_newtype_variant<V: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: &V,
    ) -> Result<Vec<String>, NotAStruct> {
        Err(NotAStruct)
    }

    fn serialize_seq(self, _: Option<usize>) -> Result<Self::SerializeSeq, NotAStruct> {
        Err(NotAStruct)
    }

    fn serialize_tuple(self, _: usize) -> Result<Self::SerializeTuple, NotAStruct> {
        Err(NotAStruct)
    }

    fn serialize_tuple_struct(
        self,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleStruct, NotAStruct> {
        Err(NotAStruct)
    }

    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleVariant, NotAStruct> {
        Err(NotAStruct)
    }

    fn serialize_map(self, _: Option<usize>) -> Result<Names, NotAStruct> {
        Ok(Names(Vec::new()))
    }

    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Names, NotAStruct> {
        Ok(Names(Vec::new()))
    }

    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStructVariant, NotAStruct> {
        Err(NotAStruct)
    }
}

impl ser::SerializeStruct for Names {
    type Ok = Vec<String>;
    type Error = NotAStruct;

    fn serialize_field<V: Serialize + ?Sized>(&mut self, key: &'static str, _: &V) -> Result<(), NotAStruct> {
        self.0.push(key.to_owned());
        Ok(())
    }

    fn skip_field(&mut self, _: &'static str) -> Result<(), NotAStruct> {
        Ok(())
    }

    fn end(self) -> Result<Vec<String>, NotAStruct> {
        Ok(self.0)
    }
}

impl ser::SerializeMap for Names {
    type Ok = Vec<String>;
    type Error = NotAStruct;

    fn serialize_key<K: Serialize + ?Sized>(&mut self, key: &K) -> Result<(), NotAStruct> {
        // serde_json renders map keys as strings; do the same so the names match its objects.
        let name = match serde_json::to_value(key).map_err(|_| NotAStruct)? {
            Value::String(s) => s,
            other => other.to_string(),
        };
        self.0.push(name);
        Ok(())
    }

    fn serialize_value<V: Serialize + ?Sized>(&mut self, _: &V) -> Result<(), NotAStruct> {
        Ok(())
    }

    fn end(self) -> Result<Vec<String>, NotAStruct> {
        Ok(self.0)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[derive(Serialize)]
    struct Row {
        zeta: &'static str,
        count: u64,
        note: Option<&'static str>,
        pair: (u8, u8),
    }

    #[test]
    fn tables_keep_field_order_and_align_numbers_right() {
        let rows = [
            Row { zeta: "a", count: 3, note: None, pair: (1, 2) },
            Row { zeta: "bbbb", count: 1200, note: Some("tab\there"), pair: (3, 4) },
        ];
        let table = render_table(&rows).unwrap();
        let want = [
            " zeta | count | note      | pair",
            "------+-------+-----------+-------",
            " a    |     3 |           | [1,2]",
            " bbbb |  1200 | tab\\there | [3,4]",
            "(2 rows)\n",
        ]
        .join("\n");
        assert_eq!(table, want);
    }

    #[test]
    fn tables_of_scalars_tuples_and_long_cells() {
        let table = render_table(&[7u32]).unwrap();
        assert_eq!(table, " value\n-------\n     7\n(1 row)\n");
        let table = render_table(&[("x", 1)]).unwrap();
        assert_eq!(table, " 0 | 1\n---+---\n x | 1\n(1 row)\n");
        let long = "y".repeat(100);
        let table = render_table(&[long]).unwrap();
        let cell = table.lines().nth(2).unwrap().trim();
        assert_eq!(cell.chars().count(), MAX_CELL_CHARS);
        assert!(cell.ends_with('…'));
    }

    #[test]
    fn json_lines_are_one_value_per_line() {
        let mut out = Vec::new();
        render_json_lines(&[serde_json::json!({"a": 1}), serde_json::json!("b")], &mut out).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "{\"a\":1}\n\"b\"\n");
    }
}
