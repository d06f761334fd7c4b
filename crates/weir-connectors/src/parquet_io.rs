//! Parquet files (feature `parquet`): a bounded source of Arrow record batches (one split per
//! file of a path or glob, named as every file source names files: see [`FileSource`]) and a
//! rolling, exactly-once sink. Neither needs a SQL engine: a typed pipeline of
//! `Stream<RecordBatch>` reads and writes Parquet with them, and weir-sql's Parquet tables are
//! these same connectors.
//!
//! [`FileSource`]: crate::FileSource
//!
//! # In a checkpointed pipeline
//!
//! The source saves, per file it started, the file's path and the rows read from it (or that
//! it was read to its end); a restored reader skips the row groups before its position and
//! the rows before it in the next one, whatever the parallelism (positions are found by path).
//!
//! The sink writes each file hidden, as `<dir>/.part-<subtask>-<n>.parquet.inprogress`. At a
//! checkpoint barrier the open file is closed (footer written) and synced; the files closed
//! (rolled, or closed at the barrier) and not committed yet are the writer's committable, and
//! a complete checkpoint renames them to their final names `<dir>/part-<subtask>-<n>.parquet`
//! (a rename that already happened is skipped, so commits are idempotent; a file handed over
//! for a checkpoint that failed goes with the next one). A restored job
//! deletes the hidden files left (never committed) and numbers its new files after the
//! committed ones; a fresh start deletes the old `part-*.parquet` files too (the output is
//! replaced). Files appear once per checkpoint, so `rows_per_file` bounds a file's size, not
//! its minimum.
//!
//! Before renaming, a commit records each file and its checkpoint in `<dir>/.committed` (lines
//! `<checkpoint> <file name>`, replaced atomically). A restore of checkpoint `r` deletes the
//! files that checkpoints after `r` committed (the newer checkpoints were damaged or deleted,
//! and their rows are written again), and a start without a checkpoint refuses while the
//! directory holds committed files (see `Sink::committed_output`). The directory is made
//! absolute when the sink is built.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use ::parquet::arrow::ArrowWriter;
use ::parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};
use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use serde::{Deserialize, Serialize};

use weir_log::fs::{sync_dir, sync_parent, write_atomic};
use weir_runtime::{Batch, Result, Sink, SinkWriter, Source, SourceReader, SplitPositions};

fn error(what: impl std::fmt::Display, e: impl std::fmt::Display) -> weir_runtime::Error {
    weir_runtime::Error::connector("parquet", format!("{what}: {e}"))
}

/// Reads Parquet files as Arrow record batches; subtask `i` of `p` reads files `i, i + p, …` of
/// the files the pattern names, oldest first (the order of every file source). Columns are taken
/// by name and cast to the declared schema.
///
/// A pattern that names no file, a missing file, a directory and a glob entry that cannot be
/// listed are errors when the pipeline starts the source, never skipped. In a checkpointed
/// pipeline a restored reader resumes each file at the row it had read (see the [module docs](crate::parquet_io)).
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
        crate::files::resolve(&self.pattern).map_err(|e| error(&self.pattern, e))
    }
}

impl Source for ParquetSource {
    type Item = RecordBatch;
    type Reader = ParquetReader;

    fn name(&self) -> String {
        format!("parquet:{}", self.pattern)
    }

    fn is_bounded(&self) -> bool {
        true
    }

    fn reader(&self, subtask: usize, parallelism: usize) -> Result<ParquetReader> {
        let files = self
            .files()?
            .into_iter()
            .enumerate()
            .skip(subtask)
            .step_by(parallelism.max(1))
            .map(|(index, path)| FileState {
                split: u32::try_from(index).unwrap_or(u32::MAX),
                path,
                read: None,
            })
            .collect::<Vec<_>>();
        Ok(ParquetReader { files, next: 0, current: None, schema: self.schema.clone(), finished: Vec::new() })
    }

    fn reader_at(
        &self,
        subtask: usize,
        parallelism: usize,
        positions: &SplitPositions,
    ) -> Result<ParquetReader> {
        let mut reader = self.reader(subtask, parallelism)?;
        // By path: the files a glob matches may have changed (and with them the splits).
        let mut saved = HashMap::new();
        for (_, bytes) in positions.iter() {
            let p: Position = weir_runtime::decode(bytes)?;
            saved.insert(PathBuf::from(p.path), p.read);
        }
        for f in &mut reader.files {
            f.read = saved.get(&f.path).copied();
        }
        Ok(reader)
    }
}

/// How far a file was read: rows, or to its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
enum Read {
    Rows(u64),
    All,
}

/// A file's position in a checkpoint.
#[derive(Serialize, Deserialize)]
struct Position {
    path: String,
    read: Read,
}

/// One file of a reader, and how far it was read (`None`: not started).
#[derive(Debug)]
struct FileState {
    split: u32,
    path: PathBuf,
    read: Option<Read>,
}

/// The reader of one [`ParquetSource`] subtask.
pub struct ParquetReader {
    files: Vec<FileState>,
    next: usize,
    /// The file being read (an index into `files`) and its reader.
    current: Option<(usize, ParquetRecordBatchReader)>,
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

    /// A reader of `path` from row `skip`: the row groups before it are skipped, then the rows
    /// before it in its row group.
    fn open(path: &Path, skip: u64) -> Result<ParquetRecordBatchReader> {
        let file = File::open(path).map_err(|e| error(path.display(), e))?;
        let mut builder = ParquetRecordBatchReaderBuilder::try_new(file)
            .map_err(|e| error(path.display(), e))?
            .with_batch_size(8192);
        if skip > 0 {
            let mut before = 0u64;
            let mut first = 0;
            for rg in builder.metadata().row_groups() {
                let rows = rg.num_rows().max(0) as u64;
                if before + rows > skip {
                    break;
                }
                before += rows;
                first += 1;
            }
            let groups = (first..builder.metadata().num_row_groups()).collect();
            builder = builder.with_row_groups(groups).with_offset((skip - before) as usize);
        }
        builder.build().map_err(|e| error(path.display(), e))
    }
}

impl SourceReader for ParquetReader {
    type Item = RecordBatch;

    async fn next_batch(&mut self) -> Result<Option<Batch<RecordBatch>>> {
        loop {
            if let Some((i, reader)) = self.current.as_mut() {
                let i = *i;
                match reader.next() {
                    Some(Ok(b)) => {
                        let b = self.conform(&b)?;
                        let file = &mut self.files[i];
                        let before = match file.read {
                            Some(Read::Rows(n)) => n,
                            _ => 0,
                        };
                        file.read = Some(Read::Rows(before + b.num_rows() as u64));
                        return Ok(Some(Batch::from_split(file.split, vec![b])));
                    }
                    Some(Err(e)) => return Err(error("read", e)),
                    None => {
                        self.files[i].read = Some(Read::All);
                        self.finished.push(self.files[i].split);
                        self.current = None;
                    }
                }
            }
            let Some(file) = self.files.get(self.next) else { return Ok(None) };
            let i = self.next;
            self.next += 1;
            let skip = match file.read {
                Some(Read::All) => continue, // Read before the checkpoint this job restored.
                Some(Read::Rows(n)) => n,
                None => 0,
            };
            self.current = Some((i, Self::open(&file.path, skip)?));
        }
    }

    fn finished_split(&mut self) -> Option<u32> {
        self.finished.pop()
    }

    fn positions(&self) -> Vec<(u32, Vec<u8>)> {
        self.files
            .iter()
            .filter_map(|f| {
                let read = f.read?;
                let position = Position { path: f.path.to_string_lossy().into_owned(), read };
                weir_runtime::encode(&position).ok().map(|p| (f.split, p))
            })
            .collect()
    }
}

/// Writes Parquet files `<dir>/part-<subtask>-<n>.parquet`, starting a new file every
/// `rows_per_file` rows; a file is complete (footer written) when it is rolled or the job ends.
/// Exactly once in a checkpointed pipeline (see the [module docs](crate::parquet_io)).
#[derive(Debug, Clone)]
pub struct ParquetSink {
    dir: PathBuf,
    rows_per_file: usize,
}

impl ParquetSink {
    /// Files in `dir`, rolled every `rows_per_file` rows.
    pub fn new(dir: impl Into<PathBuf>, rows_per_file: usize) -> Self {
        ParquetSink { dir: crate::file_commit::absolute(dir.into()), rows_per_file: rows_per_file.max(1) }
    }

    /// The record of which checkpoint committed which file.
    fn commits_path(&self) -> PathBuf {
        self.dir.join(".committed")
    }

    /// The committed files, `(checkpoint, file name)`, in commit order; empty without a record.
    fn read_commits(&self) -> Result<Vec<(u64, String)>> {
        let path = self.commits_path();
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(error(path.display(), e)),
        };
        text.lines()
            .filter(|l| !l.is_empty())
            .map(|l| {
                let (id, name) = l.split_once(' ').unwrap_or_default();
                match id.parse() {
                    Ok(id) if part_number(name).is_some() => Ok((id, name.to_owned())),
                    _ => Err(error(path.display(), format_args!("not `<checkpoint> <file name>`: {l:?}"))),
                }
            })
            .collect()
    }

    /// Replaces the record of committed files atomically (through `.committed.tmp`).
    fn write_commits(&self, commits: &[(u64, String)]) -> Result<()> {
        let path = self.commits_path();
        let text: String = commits.iter().map(|(id, name)| format!("{id} {name}\n")).collect();
        write_atomic(&path, text.as_bytes()).map_err(|e| error(path.display(), e))
    }

    fn final_path(&self, subtask: usize, n: usize) -> PathBuf {
        self.dir.join(format!("part-{subtask}-{n}.parquet"))
    }

    /// The hidden file a checkpointed writer writes before `final_path` is committed.
    fn in_progress(final_path: &Path) -> PathBuf {
        let name = final_path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        final_path.with_file_name(format!(".{name}.inprogress"))
    }

    /// The names in the directory (none if it does not exist).
    fn names(&self) -> Result<Vec<String>> {
        match std::fs::read_dir(&self.dir) {
            Ok(entries) => Ok(entries
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(error(self.dir.display(), e)),
        }
    }
}

/// `(subtask, n)` of a final file name `part-<subtask>-<n>.parquet`.
fn part_number(name: &str) -> Option<(usize, usize)> {
    let (subtask, n) = name.strip_prefix("part-")?.strip_suffix(".parquet")?.split_once('-')?;
    Some((subtask.parse().ok()?, n.parse().ok()?))
}

/// What a checkpointed writer pre-committed: the files it closed and has not seen committed,
/// each `(in-progress path, final path)`.
#[derive(Serialize, Deserialize)]
struct ParquetCommittable {
    files: Vec<(PathBuf, PathBuf)>,
}

impl Sink<RecordBatch> for ParquetSink {
    type Writer = ParquetWriter;

    fn name(&self) -> String {
        format!("parquet:{}", self.dir.display())
    }

    fn writer(&self, subtask: usize, _parallelism: usize) -> Result<ParquetWriter> {
        std::fs::create_dir_all(&self.dir).map_err(|e| error(self.dir.display(), e))?;
        Ok(ParquetWriter {
            sink: self.clone(),
            subtask,
            file_no: 0,
            rows: 0,
            current: None,
            written: 0,
            tx: None,
        })
    }

    fn transactional_writer(&self, subtask: usize, parallelism: usize) -> Result<ParquetWriter> {
        let mut writer = self.writer(subtask, parallelism)?;
        // After the files this subtask committed in earlier runs.
        writer.file_no = self
            .names()?
            .iter()
            .filter_map(|n| part_number(n))
            .filter(|(s, _)| *s == subtask)
            .map(|(_, n)| n + 1)
            .max()
            .unwrap_or(0);
        writer.tx = Some(Vec::new());
        Ok(writer)
    }

    fn commit(&self, checkpoint: u64, committables: &[Vec<u8>]) -> Result<()> {
        let committables = committables
            .iter()
            .map(|c| weir_runtime::decode::<ParquetCommittable>(c))
            .collect::<Result<Vec<_>>>()?;
        // Recorded before the renames: a file renamed is always in the record.
        let mut commits = self.read_commits()?;
        let before = commits.len();
        for (_, to) in committables.iter().flat_map(|c| &c.files) {
            let name = to.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            if !commits.iter().any(|(_, n)| *n == name) {
                commits.push((checkpoint, name));
            }
        }
        if commits.len() > before {
            self.write_commits(&commits)?;
        }
        let mut renamed = false;
        for c in committables {
            for (from, to) in c.files {
                match std::fs::rename(&from, &to) {
                    Ok(()) => renamed = true,
                    // Renamed by an earlier commit (of this checkpoint, or of an earlier one
                    // if a writer handed the file over again).
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound && to.exists() => {}
                    Err(e) => {
                        return Err(error(
                            from.display(),
                            format_args!("commit checkpoint {checkpoint}: {e}"),
                        ));
                    }
                }
            }
        }
        if renamed {
            sync_dir(&self.dir).map_err(|e| error(self.dir.display(), format_args!("fsync: {e}")))?;
        }
        Ok(())
    }

    /// A restore only needs the record of commits to be readable.
    fn check_restore(&self, restored: Option<u64>) -> Result<()> {
        match restored {
            Some(_) => self.read_commits().map(drop),
            None => Ok(()),
        }
    }

    fn discard_uncommitted(&self, restored: Option<u64>) -> Result<()> {
        let mut removed = false;
        match restored {
            Some(r) => {
                let mut commits = self.read_commits()?;
                let newer: Vec<String> =
                    commits.iter().filter(|(id, _)| *id > r).map(|(_, n)| n.clone()).collect();
                if !newer.is_empty() {
                    tracing::warn!(dir = %self.dir.display(), restored = r, files = ?newer, "deleting the files of checkpoints newer than the restored one");
                    for name in &newer {
                        let path = self.dir.join(name);
                        match std::fs::remove_file(&path) {
                            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                                return Err(error(path.display(), e));
                            }
                            _ => removed = true,
                        }
                    }
                    commits.retain(|(id, _)| *id <= r);
                    self.write_commits(&commits)?;
                }
            }
            None => match std::fs::remove_file(self.commits_path()) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(error(self.commits_path().display(), e));
                }
                _ => {}
            },
        }
        for name in self.names()? {
            let stale = match restored {
                None => part_number(&name).is_some(),
                Some(_) => false,
            };
            let hidden = name
                .strip_prefix('.')
                .and_then(|n| n.strip_suffix(".inprogress"))
                .is_some_and(|n| part_number(n).is_some());
            if stale || hidden {
                let path = self.dir.join(&name);
                std::fs::remove_file(&path).map_err(|e| error(path.display(), e))?;
                removed = true;
            }
        }
        if removed {
            sync_dir(&self.dir).map_err(|e| error(self.dir.display(), format_args!("fsync: {e}")))?;
        }
        Ok(())
    }

    fn committed_output(&self) -> Result<Option<weir_runtime::CommittedOutput>> {
        self.committed()
    }

    fn destination(&self) -> Option<String> {
        Some(self.dir.display().to_string())
    }
}

impl ParquetSink {
    /// See [`Sink::committed_output`]: the newest checkpoint the record names, or files
    /// written without checkpoints.
    fn committed(&self) -> Result<Option<weir_runtime::CommittedOutput>> {
        let commits = self.read_commits()?;
        if let Some(id) = commits.iter().map(|(id, _)| *id).max() {
            let files = commits.len();
            let what =
                format!("{}: {files} files committed, the last by checkpoint {id}", self.dir.display());
            return Ok(Some(weir_runtime::CommittedOutput::new(Some(id), what)));
        }
        let files = self.names()?.iter().filter(|n| part_number(n).is_some()).count();
        Ok((files > 0).then(|| {
            let what = format!("{}: {files} files written without checkpoints", self.dir.display());
            weir_runtime::CommittedOutput::new(None, what)
        }))
    }
}

/// The writer of one [`ParquetSink`] subtask.
pub struct ParquetWriter {
    sink: ParquetSink,
    subtask: usize,
    file_no: usize,
    rows: usize,
    /// The open file: its writer and final path.
    current: Option<(ArrowWriter<File>, PathBuf)>,
    written: u64,
    /// In a checkpointed pipeline: the files closed and not seen committed yet, each
    /// `(in-progress path, final path)`.
    tx: Option<Vec<(PathBuf, PathBuf)>>,
}

impl std::fmt::Debug for ParquetWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParquetWriter").field("dir", &self.sink.dir).finish_non_exhaustive()
    }
}

impl ParquetWriter {
    fn close_current(&mut self) -> Result<()> {
        if let Some((w, target)) = self.current.take() {
            let file = w.into_inner().map_err(|e| error("close", e))?;
            if let Some(closed) = self.tx.as_mut() {
                file.sync_all().map_err(|e| error(target.display(), format_args!("fsync: {e}")))?;
                closed.push((ParquetSink::in_progress(&target), target));
            }
        }
        self.rows = 0;
        Ok(())
    }
}

impl SinkWriter<RecordBatch> for ParquetWriter {
    async fn write_batch(&mut self, batch: Batch<RecordBatch>) -> Result<()> {
        for b in &batch.records {
            if self.current.is_none() {
                let target = self.sink.final_path(self.subtask, self.file_no);
                let path = if self.tx.is_some() { ParquetSink::in_progress(&target) } else { target.clone() };
                self.file_no += 1;
                let file = File::create(&path).map_err(|e| error(path.display(), e))?;
                let w = ArrowWriter::try_new(file, b.schema(), None).map_err(|e| error(path.display(), e))?;
                self.current = Some((w, target));
            }
            if let Some((w, _)) = self.current.as_mut() {
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

    /// Closes the open file; the committable lists the files closed since the last
    /// pre-commit. (If the checkpoint fails, the coordinator carries the committable to the next
    /// complete one.)
    async fn pre_commit(&mut self, _checkpoint: u64) -> Result<Option<Vec<u8>>> {
        if self.tx.is_none() {
            return Ok(None);
        }
        self.close_current()?;
        let Some(files) = self.tx.as_mut() else { return Ok(None) };
        let files = std::mem::take(files);
        let Some((_, target)) = files.first() else { return Ok(None) };
        sync_parent(target).map_err(|e| error(self.sink.dir.display(), format_args!("fsync: {e}")))?;
        weir_runtime::encode(&ParquetCommittable { files }).map(Some)
    }

    async fn finish(&mut self) -> Result<()> {
        self.close_current()
    }

    fn bytes_written(&self) -> u64 {
        self.written
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// Checkpoint `id` commits file `n` of subtask 0 (a stand-in for a closed Parquet file).
    fn commit(sink: &ParquetSink, id: u64, n: usize) {
        let to = sink.final_path(0, n);
        let from = ParquetSink::in_progress(&to);
        std::fs::write(&from, format!("file {n}")).unwrap();
        let c = weir_runtime::encode(&ParquetCommittable { files: vec![(from, to)] }).unwrap();
        sink.commit(id, std::slice::from_ref(&c)).unwrap();
        sink.commit(id, &[c]).unwrap(); // idempotent
    }

    #[test]
    fn restoring_an_older_checkpoint_deletes_the_files_newer_ones_committed() {
        let dir = tempfile::tempdir().unwrap();
        let sink = ParquetSink::new(dir.path(), 10);
        assert_eq!(sink.committed_output().unwrap(), None);
        commit(&sink, 3, 0);
        commit(&sink, 5, 1);
        commit(&sink, 6, 2);
        assert_eq!(sink.committed_output().unwrap().unwrap().checkpoint, Some(6));
        // Checkpoints 6 and 5 were damaged: 4 is restored.
        sink.discard_uncommitted(Some(4)).unwrap();
        assert!(sink.final_path(0, 0).exists());
        assert!(!sink.final_path(0, 1).exists() && !sink.final_path(0, 2).exists());
        assert_eq!(sink.read_commits().unwrap(), [(3, "part-0-0.parquet".to_owned())]);
        // A fresh start replaces everything, record included.
        sink.discard_uncommitted(None).unwrap();
        assert!(!sink.final_path(0, 0).exists() && !sink.commits_path().exists());
        assert_eq!(sink.committed_output().unwrap(), None);
    }
}
