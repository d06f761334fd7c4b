//! Writing to stdout: JSON Lines, aligned tables and raw bytes, through one buffered handle.

use std::io::{self, BufWriter, StdoutLock, Write};

use anyhow::{Context, Result};
use serde::Serialize;

/// Buffered stdout, and whether the user asked for JSON.
pub(crate) struct Output {
    out: BufWriter<StdoutLock<'static>>,
    json: bool,
}

impl Output {
    /// Stdout, buffered; `json` selects JSON Lines output.
    pub(crate) fn new(json: bool) -> Output {
        Output { out: BufWriter::with_capacity(64 << 10, io::stdout().lock()), json }
    }

    /// Whether `--json` was given.
    pub(crate) fn json(&self) -> bool {
        self.json
    }

    /// Writes `value` as one line of JSON.
    pub(crate) fn json_line<T: Serialize>(&mut self, value: &T) -> Result<()> {
        let mut line = serde_json::to_vec(value).context("cannot encode output as JSON")?;
        line.push(b'\n');
        self.bytes(&line)
    }

    /// Writes raw bytes.
    pub(crate) fn bytes(&mut self, bytes: &[u8]) -> Result<()> {
        self.out.write_all(bytes).context(ReportError::Stdout)
    }

    /// Writes `table` with its columns aligned.
    pub(crate) fn table(&mut self, table: &Table) -> Result<()> {
        let rendered = table.render();
        self.bytes(rendered.as_bytes())
    }

    /// Pushes everything buffered to stdout.
    pub(crate) fn flush(&mut self) -> Result<()> {
        self.out.flush().context(ReportError::Stdout)
    }
}

/// Writes a line to stderr (a note, a summary, an error message). Never panics, unlike
/// `eprintln!`: a closed, broken or full stderr loses the note, and the caller learns it from the
/// result; what happened to the data is in the exit code.
pub(crate) fn note(args: std::fmt::Arguments<'_>) -> io::Result<()> {
    let mut stderr = io::stderr().lock();
    stderr.write_fmt(args)?;
    stderr.write_all(b"\n")?;
    stderr.flush()
}

/// In the error chain of a failed write of output: stdout or stderr.
#[derive(Debug, Clone, Copy)]
pub(crate) enum ReportError {
    /// Records, tables, JSON.
    Stdout,
    /// Notes and summaries.
    Stderr,
}

impl std::fmt::Display for ReportError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ReportError::Stdout => "cannot write to stdout",
            ReportError::Stderr => "cannot write to stderr",
        })
    }
}

/// In the error chain of a command that appended records before it failed: how many are in the
/// log. Exit code [`EXIT_APPENDED`].
#[derive(Debug)]
pub(crate) struct AppendedBeforeError {
    pub(crate) topic: String,
    pub(crate) records: u64,
}

impl std::fmt::Display for AppendedBeforeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = if self.records == 1 { "" } else { "s" };
        write!(
            f,
            "{} record{s} of this run were appended to topic {} before the error (exactly those are in the log; \
             retry only the rest)",
            self.records, self.topic
        )
    }
}

/// In the error chain of a command that changed the log as asked but could not write its report
/// (stdout or stderr closed, broken or full). Exit code [`EXIT_UNREPORTED`].
#[derive(Debug)]
pub(crate) struct Unreported;

impl std::fmt::Display for Unreported {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the command completed, but its report could not be written (do not retry it)")
    }
}

/// Exit code: records were appended, then an error stopped the command.
pub(crate) const EXIT_APPENDED: u8 = 3;
/// Exit code: the command did everything, but writing its report failed.
pub(crate) const EXIT_UNREPORTED: u8 = 4;

/// Whether `error` is a write to a closed pipe (`weir consume t | head`).
pub(crate) fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error
        .chain()
        .any(|e| e.downcast_ref::<io::Error>().is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe))
}

/// A table of text cells printed with aligned columns: numbers right-aligned, text left-aligned,
/// two spaces between columns, no trailing spaces.
pub(crate) struct Table {
    columns: Vec<(&'static str, Align)>,
    rows: Vec<Vec<String>>,
}

/// How a column's cells line up.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Align {
    /// Text: against the left edge.
    Left,
    /// Numbers: against the right edge.
    Right,
}

impl Table {
    /// An empty table with these column headers.
    pub(crate) fn new(columns: &[(&'static str, Align)]) -> Table {
        Table { columns: columns.to_vec(), rows: Vec::new() }
    }

    /// A table of `key value` lines without a header, for settings.
    pub(crate) fn settings() -> Table {
        Table::new(&[("", Align::Left), ("", Align::Left)])
    }

    /// Adds a row; missing cells are blank, extra cells are dropped.
    pub(crate) fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// Whether the table has no rows.
    pub(crate) fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    fn render(&self) -> String {
        let has_header = self.columns.iter().any(|(h, _)| !h.is_empty());
        let header: Vec<String> = self.columns.iter().map(|(h, _)| (*h).to_owned()).collect();
        let lines: Vec<&Vec<String>> = has_header.then_some(&header).into_iter().chain(&self.rows).collect();
        let width = |i: usize| lines.iter().map(|l| l.get(i).map_or(0, |c| c.chars().count())).max();
        let widths: Vec<usize> = (0..self.columns.len()).map(|i| width(i).unwrap_or(0)).collect();
        let mut s = String::new();
        for line in lines {
            let mut text = String::new();
            for (i, (_, align)) in self.columns.iter().enumerate() {
                let cell = line.get(i).map_or("", String::as_str);
                let pad = widths[i].saturating_sub(cell.chars().count());
                if i > 0 {
                    text.push_str("  ");
                }
                if *align == Align::Right {
                    text.extend(std::iter::repeat_n(' ', pad));
                    text.push_str(cell);
                } else {
                    text.push_str(cell);
                    text.extend(std::iter::repeat_n(' ', pad));
                }
            }
            s.push_str(text.trim_end());
            s.push('\n');
        }
        s
    }
}

/// Standard base64 (RFC 4648, with padding).
pub(crate) fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], chunk.get(1).copied().unwrap_or(0), chunk.get(2).copied().unwrap_or(0)];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for k in 0..4 {
            if k <= chunk.len() {
                s.push(char::from(ALPHABET[(n >> (18 - 6 * k)) as usize & 63]));
            } else {
                s.push('=');
            }
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc_4648_vectors() {
        let cases = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
        ];
        for (input, expected) in cases {
            assert_eq!(base64(input.as_bytes()), expected, "{input:?}");
        }
        assert_eq!(base64(&[0xff, 0xfe, 0x00]), "//4A");
    }

    #[test]
    fn tables_align_numbers_right_and_text_left() {
        let mut t = Table::new(&[("NAME", Align::Left), ("N", Align::Right)]);
        t.row(vec!["a".into(), "100".into()]);
        t.row(vec!["longer".into(), "7".into()]);
        assert_eq!(t.render(), "NAME      N\na       100\nlonger    7\n");
        let mut s = Table::settings();
        s.row(vec!["key".into(), "v".into()]);
        s.row(vec!["k".into(), "value".into()]);
        assert_eq!(s.render(), "key  v\nk    value\n");
    }
}
