//! One file being read, and followed across rotation and truncation (see the
//! [`file_source`](crate::file_source) module docs).

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek};
use std::path::PathBuf;
use std::sync::Arc;

use weir_runtime::Result;

use super::{Line, LineFormat};
use crate::connector_error;
use crate::parse::CsvHeader;

/// Longest line kept whole; longer lines are cut into pieces of this size.
pub(super) const MAX_LINE_BYTES: usize = 16 << 20;

/// Read buffer per open file.
pub(super) const READ_BUFFER_BYTES: usize = 64 << 10;

/// How many of a file's first bytes follow mode remembers to tell a rewrite from an append.
pub(super) const FINGERPRINT_BYTES: usize = 4096;

/// Where a file's reading resumes (see the [module docs](crate::file_source)).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub(super) struct FilePosition {
    pub(super) path: String,
    /// Read to its end.
    pub(super) done: bool,
    /// Bytes of the complete lines handed downstream.
    pub(super) offset: u64,
    /// The number of the last of them.
    pub(super) line: u64,
}

/// A file's identity: device and inode where there are inodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct FileId(u64, u64);

#[cfg(unix)]
pub(super) fn file_id(meta: &std::fs::Metadata) -> Option<FileId> {
    use std::os::unix::fs::MetadataExt;
    Some(FileId(meta.dev(), meta.ino()))
}

#[cfg(not(unix))]
pub(super) fn file_id(_: &std::fs::Metadata) -> Option<FileId> {
    None
}

/// An open file and how far it has been read.
pub(super) struct OpenFile {
    reader: BufReader<File>,
    id: Option<FileId>,
    /// Bytes consumed: complete lines plus the held-back partial line.
    consumed: u64,
    /// Lines consumed so far: the number of the last line.
    line: u64,
    /// A trailing line without its newline yet (follow mode).
    partial: Vec<u8>,
    /// The file's CSV header, once read.
    header: Option<Arc<CsvHeader>>,
    /// The file's first bytes as read (up to [`FINGERPRINT_BYTES`]): if the file no longer
    /// starts with them, it was rewritten.
    head: Vec<u8>,
    /// The file was rewritten in place: nothing more is read from this handle.
    stale: bool,
}

impl OpenFile {
    pub(super) fn new(file: File) -> OpenFile {
        let id = file.metadata().ok().as_ref().and_then(file_id);
        OpenFile {
            reader: BufReader::with_capacity(READ_BUFFER_BYTES, file),
            id,
            consumed: 0,
            line: 0,
            partial: Vec::new(),
            header: None,
            head: Vec::new(),
            stale: false,
        }
    }

    /// Remembers the part of `read`, the bytes just read at `at`, that lies in the first
    /// [`FINGERPRINT_BYTES`] of the file.
    fn remember_head(&mut self, at: u64, read: &[u8]) {
        if at < FINGERPRINT_BYTES as u64 && at == self.head.len() as u64 {
            let n = read.len().min(FINGERPRINT_BYTES - self.head.len());
            self.head.extend_from_slice(&read[..n]);
        }
    }
}

/// The first `n` bytes of the file at `path` (fewer if it is shorter).
pub(super) fn first_bytes(path: &std::path::Path, n: usize) -> std::io::Result<Vec<u8>> {
    let mut head = Vec::with_capacity(n);
    File::open(path)?.take(n as u64).read_to_end(&mut head)?;
    Ok(head)
}

/// One file of a subtask.
pub(super) struct TailedFile {
    pub(super) index: u32,
    pub(super) path: PathBuf,
    pub(super) name: Arc<str>,
    pub(super) open: Option<OpenFile>,
    /// The path now names another file (or this one was truncated): finish the old handle, then
    /// reopen.
    pub(super) reopen: bool,
    /// Read to the end (bounded mode).
    pub(super) done: bool,
    /// Bytes of the lines read, line ends included.
    pub(super) bytes_read: u64,
    /// Follow mode: the last read found the end; the file is checked before it is read again.
    pub(super) at_end: bool,
}

/// What one read found at the end.
pub(super) enum Step {
    /// A line, complete or (at the end of a finished file) not.
    Line(Vec<u8>),
    /// Nothing more for now.
    End,
}

impl TailedFile {
    pub(super) fn new(index: u32, path: PathBuf) -> TailedFile {
        let name: Arc<str> = path.to_string_lossy().into();
        TailedFile { index, path, name, open: None, reopen: false, done: false, bytes_read: 0, at_end: false }
    }

    fn error(&self, action: &str, e: impl Into<weir_runtime::BoxError>) -> weir_runtime::Error {
        connector_error("file source", self.path.display(), crate::Failed::new(action, e))
    }

    /// Where reading resumes; `None` for a file not opened yet.
    pub(super) fn position(&self) -> Option<FilePosition> {
        let path = self.name.to_string();
        if self.done {
            return Some(FilePosition { path, done: true, offset: 0, line: 0 });
        }
        let open = self.open.as_ref()?;
        let offset = open.consumed - open.partial.len() as u64;
        Some(FilePosition { path, done: false, offset, line: open.line })
    }

    /// Continues at a saved position: opens the file there (after reading a CSV header).
    pub(super) fn resume<F: LineFormat>(&mut self, p: &FilePosition, format: &F) -> Result<()> {
        if p.done {
            self.done = true;
            return Ok(());
        }
        let file = File::open(&self.path).map_err(|e| self.error("open", e))?;
        self.open = Some(OpenFile::new(file));
        if format.has_header() {
            // The header is the first non-blank line (read again, then skipped past).
            let mut header = Vec::new();
            while self.open.as_ref().is_some_and(|o| o.header.is_none() && o.consumed < p.offset) {
                match self.next_line(true)? {
                    Step::Line(bytes) => self.push_line(format, bytes, &mut header),
                    Step::End => break,
                }
            }
        }
        // What the file starts with now stands for what was read before the checkpoint.
        let n = (p.offset as usize).min(FINGERPRINT_BYTES);
        let head = first_bytes(&self.path, n).map_err(|e| self.error("read", e))?;
        let Some(open) = self.open.as_mut() else { return Ok(()) };
        open.head = head;
        if let Err(e) = open.reader.seek(std::io::SeekFrom::Start(p.offset)) {
            return Err(self.error("seek", e));
        }
        open.consumed = p.offset;
        open.line = p.line;
        open.partial.clear();
        Ok(())
    }

    /// Reads up to `max` records into `out`. At the end of the file, a bounded read marks the
    /// file done; a follow-mode read switches to the new file if a rotation was seen.
    pub(super) fn read<F: LineFormat>(
        &mut self,
        format: &F,
        max: usize,
        follow: bool,
        out: &mut Vec<F::Item>,
    ) -> Result<()> {
        if follow && std::mem::take(&mut self.at_end) {
            // What was written since may be a rewrite: look before reading on.
            self.check_rotation()?;
        }
        while out.len() < max {
            if self.open.is_none() {
                match File::open(&self.path) {
                    Ok(file) => self.open = Some(OpenFile::new(file)),
                    // Follow mode: gone between the rotation check and here; wait for it.
                    Err(e) if follow && e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
                    Err(e) => return Err(self.error("open", e)),
                }
            }
            // The last complete data of a file is final when the file is finished: bounded, or
            // rotated away.
            let last = !follow || self.reopen;
            match self.next_line(last)? {
                Step::Line(bytes) => self.push_line(format, bytes, out),
                Step::End if self.reopen => {
                    tracing::info!(file = %self.name, "file rotated or truncated; reading the new one from its start");
                    self.open = None;
                    self.reopen = false;
                }
                Step::End => {
                    if follow {
                        self.at_end = true;
                    } else {
                        self.done = true;
                        self.open = None;
                    }
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// The next line of the open file. A trailing line without a newline is returned if `last`,
    /// else held back.
    fn next_line(&mut self, last: bool) -> Result<Step> {
        let Some(open) = self.open.as_mut() else { return Ok(Step::End) };
        let mut buf = std::mem::take(&mut open.partial);
        let limit = MAX_LINE_BYTES.saturating_sub(buf.len()) as u64;
        let before = buf.len();
        let read = if open.stale {
            Ok(0) // Rewritten: what follows in this handle is the new content, read from 0.
        } else {
            (&mut open.reader).take(limit).read_until(b'\n', &mut buf)
        };
        let n = match read {
            Ok(n) => n,
            Err(e) => {
                open.partial = buf;
                return Err(self.error("read", e));
            }
        };
        open.remember_head(open.consumed, &buf[before..]);
        open.consumed += n as u64;
        if buf.last() == Some(&b'\n') {
            return Ok(Step::Line(buf));
        }
        if buf.len() >= MAX_LINE_BYTES {
            tracing::warn!(file = %self.name, line = open.line + 1, "line longer than 16 MiB cut into pieces");
            return Ok(Step::Line(buf));
        }
        if buf.is_empty() {
            return Ok(Step::End);
        }
        if last {
            // A final line without a newline; the next read finds the end.
            return Ok(Step::Line(buf));
        }
        open.partial = buf;
        Ok(Step::End)
    }

    fn push_line<F: LineFormat>(&mut self, format: &F, mut bytes: Vec<u8>, out: &mut Vec<F::Item>) {
        let Some(open) = self.open.as_mut() else { return };
        open.line += 1;
        self.bytes_read += bytes.len() as u64;
        if bytes.last() == Some(&b'\n') {
            bytes.pop();
            if bytes.last() == Some(&b'\r') {
                bytes.pop();
            }
        }
        let text =
            String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
        if format.skip_blank() && text.trim().is_empty() {
            return;
        }
        if format.has_header() && open.header.is_none() {
            open.header = Some(Arc::new(CsvHeader::parse(&text)));
            return;
        }
        let line = Line { path: self.name.clone(), line: open.line, text };
        out.push(format.item(line, open.header.as_ref()));
    }

    /// Follow mode, at the end of the file: whether the path now names another file, or the
    /// file was truncated, or a file appeared where none was open. Returns whether there is
    /// something new to read.
    pub(super) fn check_rotation(&mut self) -> Result<bool> {
        if self.reopen {
            return Ok(true);
        }
        let meta = match std::fs::metadata(&self.path) {
            Ok(meta) => meta,
            // Renamed away and not recreated yet: keep reading the old handle.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(self.error("stat", e)),
        };
        let Some(open) = &self.open else { return Ok(true) };
        let rotated = match (open.id, file_id(&meta)) {
            (Some(old), Some(new)) => old != new,
            _ => false,
        };
        let truncated = !rotated && meta.len() < open.consumed;
        let rewritten = !rotated && !truncated && self.rewritten(open)?;
        if rewritten && let Some(open) = self.open.as_mut() {
            open.stale = true;
        }
        if rotated || truncated || rewritten {
            self.reopen = true;
        }
        Ok(self.reopen)
    }

    /// Whether the file at the path (the open one) no longer starts with the bytes read from it.
    fn rewritten(&self, open: &OpenFile) -> Result<bool> {
        if open.head.is_empty() {
            return Ok(false);
        }
        match first_bytes(&self.path, open.head.len()) {
            Ok(now) => Ok(now != open.head),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(self.error("read", e)),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::file_source::Lines;

    /// Lines written to the old file after the reader last found its end, but before it saw
    /// the rotation, are still read (the old handle is drained before the switch).
    #[test]
    fn rotation_drains_the_old_file_first() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.log");
        std::fs::write(&path, "a1\n").unwrap();
        let mut file = TailedFile::new(0, path.clone());
        let mut out = Vec::new();
        file.read(&Lines, 10, true, &mut out).unwrap();
        assert_eq!(out.len(), 1);
        assert!(!file.check_rotation().unwrap(), "nothing changed yet");

        let old = dir.path().join("app.log.1");
        std::fs::rename(&path, &old).unwrap();
        assert!(!file.check_rotation().unwrap(), "no new file yet: keep the old one");
        let mut w = std::fs::OpenOptions::new().append(true).open(&old).unwrap();
        w.write_all(b"a2\npart").unwrap();
        std::fs::write(&path, "b1\n").unwrap();
        assert!(file.check_rotation().unwrap());

        out.clear();
        file.read(&Lines, 10, true, &mut out).unwrap();
        let got: Vec<(u64, &str)> = out.iter().map(|l| (l.line, l.text.as_str())).collect();
        assert_eq!(got, [(2, "a2"), (3, "part"), (1, "b1")]);
    }
}
