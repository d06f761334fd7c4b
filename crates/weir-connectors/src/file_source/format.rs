//! How lines become records: [`Lines`], [`JsonLines`], [`Csv`].

use std::marker::PhantomData;
use std::sync::Arc;

use weir_runtime::Traceable;

#[cfg(doc)]
use super::FileSource;
use super::Line;
use crate::parse::{CsvHeader, CsvLine, JsonLine};

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
pub struct JsonLines<T>(pub(super) PhantomData<fn() -> T>);

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
pub struct Csv<T>(pub(super) PhantomData<fn() -> T>);

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
