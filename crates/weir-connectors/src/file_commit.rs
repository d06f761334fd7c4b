//! Two-phase commit for file sinks in a checkpointed pipeline.
//!
//! [`FileSink`](crate::FileSink)'s transactional writer uses it, and so can any sink that
//! appends whole files of output to final files (weir-sql's JSON and CSV sinks do): a writer
//! writes [`in_progress`], renames it to [`pending`] at a barrier and returns a [`Committable`]
//! (encoded with [`weir_runtime::encode`]) as its pre-commit; the sink's
//! [`Sink::commit`](weir_runtime::Sink::commit) calls [`commit`] and its
//! [`Sink::discard_uncommitted`](weir_runtime::Sink::discard_uncommitted) calls [`discard`].
//!
//! # Files
//!
//! For a final file `dir/name` (what the sink writes without checkpoints, see `file_sink`):
//!
//! | file | what |
//! |---|---|
//! | `dir/.name.s<subtask>.inprogress` | what subtask `<subtask>` wrote since its last barrier |
//! | `dir/.name.s<subtask>.c<checkpoint>.pending` | the same, closed and synced at the barrier of `<checkpoint>` (pre-committed) |
//! | `dir/name` | committed output only |
//! | `dir/.name.committed` | lines `<checkpoint> <length>`, oldest first: the checkpoints committed to `name` and `name`'s length after each; the first line is `0 0` (the empty file before the first commit) until more than [`MARKER_HISTORY`] lines would be kept |
//!
//! Paths in committables are absolute (sinks resolve their paths when they are built), so a
//! checkpoint identifies its output whatever the working directory of the process restoring
//! it; [`check_targets`] refuses a restore whose sink now writes elsewhere.
//!
//! # Commit
//!
//! When checkpoint `c` is complete, each final file gets `c`'s pending files appended, in
//! subtask order (a CSV part's header line is dropped when the file already has content), then
//! is synced; then the marker is replaced (write, sync, rename, directory sync) and the pending
//! files are removed. A commit is idempotent: if the marker already names `c` or later, it does
//! nothing; otherwise it first cuts the file back to the marker's last length (undoing an append
//! a crash interrupted) and appends again. A final file shorter than its marker's last length
//! (or missing) lost committed output after the commit (it was truncated or replaced): the
//! commit fails with an error naming the file and both lengths, and writes nothing.
//!
//! # Restore
//!
//! On start, after the restored checkpoint `r` was committed again, every in-progress and pending
//! file is deleted and every final file cut back to the length its marker records for the
//! newest checkpoint at or before `r`, and the marker's later lines are dropped: what was
//! written after the checkpoint is gone, and will be written again. That holds when `r` is
//! older than the newest commit too (the newer checkpoints were damaged or deleted, and an
//! older one is restored): their output is cut away instead of kept and produced a second
//! time. If the marker no longer records a checkpoint at or before `r` (it keeps the last
//! [`MARKER_HISTORY`] commits), or the file (or a missing file its marker names) is shorter than
//! the length it records for that checkpoint, the restore fails with an error saying so;
//! [`check_discard`] finds both without changing anything, so the pipeline can refuse before
//! any sink is cut. On a fresh start
//! (nothing restored), the final files and markers are deleted too: the output is replaced,
//! as without checkpoints.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use weir_log::fs::{sync_dir, write_atomic};
use weir_runtime::CommittedOutput;

/// What a writer pre-committed: a pending file and the final file it goes to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Committable {
    /// The pending file (see [`pending`]), closed and synced.
    pub pending: PathBuf,
    /// The final file it is appended to on commit.
    pub target: PathBuf,
}

fn hidden(target: &Path, suffix: &str) -> PathBuf {
    let name = target.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    target.with_file_name(format!(".{name}.{suffix}"))
}

/// The in-progress file of `subtask` for `target`: `dir/.name.s<subtask>.inprogress`.
pub fn in_progress(target: &Path, subtask: usize) -> PathBuf {
    hidden(target, &format!("s{subtask}.inprogress"))
}

/// The pending file of `subtask` for `target` at `checkpoint`:
/// `dir/.name.s<subtask>.c<checkpoint>.pending`.
pub fn pending(target: &Path, subtask: usize, checkpoint: u64) -> PathBuf {
    hidden(target, &format!("s{subtask}.c{checkpoint}.pending"))
}

fn marker(target: &Path) -> PathBuf {
    hidden(target, "committed")
}

/// How many commits a marker remembers: a restore can cut a file back to any of them.
pub const MARKER_HISTORY: usize = 256;

/// The commits recorded for `target`, oldest first: (checkpoint, length after it); empty if
/// there is no marker.
fn read_history(target: &Path) -> std::io::Result<Vec<(u64, u64)>> {
    let text = match std::fs::read_to_string(marker(target)) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let malformed = || {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{} is not lines of `<checkpoint> <length>`", marker(target).display()),
        )
    };
    let mut history = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let mut it = line.split_whitespace().map(str::parse::<u64>);
        match (it.next(), it.next(), it.next()) {
            (Some(Ok(id)), Some(Ok(len)), None) => history.push((id, len)),
            _ => return Err(malformed()),
        }
    }
    if history.is_empty() || history.windows(2).any(|w| w[0].0 >= w[1].0) {
        return Err(malformed());
    }
    Ok(history)
}

/// The last checkpoint committed to `target` and its length then; `(0, 0)` if none.
fn read_marker(target: &Path) -> std::io::Result<(u64, u64)> {
    Ok(read_history(target)?.last().copied().unwrap_or((0, 0)))
}

/// Replaces `target`'s marker atomically (through `.name.committed.tmp`).
fn write_marker(target: &Path, history: &[(u64, u64)]) -> std::io::Result<()> {
    let text: String = history.iter().map(|(id, len)| format!("{id} {len}\n")).collect();
    write_atomic(&marker(target), text.as_bytes())
}

/// Commits checkpoint `id`'s parts (see the [module docs](crate::file_commit)): each target gets its parts appended
/// in the order given, once; `csv` drops the first line (the header) of a part appended to a
/// file that already has content.
///
/// # Errors
///
/// I/O errors, a malformed marker, or a pending file missing although the marker says `id` was
/// not committed.
pub fn commit(id: u64, parts: &[Committable], csv: bool) -> std::io::Result<()> {
    let mut targets: Vec<&Path> = parts.iter().map(|c| c.target.as_path()).collect();
    targets.sort_unstable();
    targets.dedup();
    for target in targets {
        let mut history = read_history(target)?;
        let (done, len) = history.last().copied().unwrap_or((0, 0));
        if done >= id {
            continue;
        }
        if history.is_empty() {
            history.push((0, 0));
        }
        // A file shorter than its marker lost committed output (it was truncated or replaced):
        // refuse rather than extend it with zeros.
        check_holds(target, len, done)?;
        let mut file = OpenOptions::new().create(true).truncate(false).read(true).write(true).open(target)?;
        file.set_len(len)?;
        file.seek(SeekFrom::Start(len))?;
        let mut size = len;
        for part in parts.iter().filter(|c| c.target == target) {
            let mut bytes = Vec::new();
            match File::open(&part.pending) {
                Ok(mut f) => f.read_to_end(&mut bytes)?,
                // Committed before and removed: only possible if the marker says so.
                Err(e) => {
                    return Err(std::io::Error::new(e.kind(), format!("{}: {e}", part.pending.display())));
                }
            };
            let body = if csv && size > 0 {
                bytes.iter().position(|b| *b == b'\n').map_or(&bytes[..0], |i| &bytes[i + 1..])
            } else {
                &bytes[..]
            };
            file.write_all(body)?;
            size += body.len() as u64;
        }
        file.sync_all()?;
        history.push((id, size));
        let excess = history.len().saturating_sub(MARKER_HISTORY);
        history.drain(..excess);
        write_marker(target, &history)?;
        for part in parts.iter().filter(|c| c.target == target) {
            let _ = std::fs::remove_file(&part.pending);
        }
    }
    Ok(())
}

/// The final file an in-progress or pending file named `name` belongs to.
fn uncommitted_target(name: &str) -> Option<&str> {
    let rest = name.strip_prefix('.')?;
    let subtask = match rest.strip_suffix(".inprogress") {
        Some(r) => r,
        None => rest.strip_suffix(".pending")?.rsplit_once(".c")?.0,
    };
    Some(subtask.rsplit_once(".s")?.0)
}

/// Where the history of `target` puts the restored checkpoint `r`: the index of the newest
/// commit at or before `r` (`None` if nothing was committed); an error if the history no longer
/// reaches back to `r`.
fn restore_point(target: &Path, history: &[(u64, u64)], r: u64) -> std::io::Result<Option<usize>> {
    match history.iter().rposition(|(id, _)| *id <= r) {
        Some(i) => Ok(Some(i)),
        None if history.is_empty() => Ok(None),
        None => Err(std::io::Error::other(format!(
            "{}: the restored checkpoint {r} is older than every commit its marker remembers \
             (checkpoints {} to {}): the output cannot be cut back to it",
            target.display(),
            history[0].0,
            history[history.len() - 1].0
        ))),
    }
}

/// The size of `target`, 0 if it does not exist.
fn size_of(target: &Path) -> std::io::Result<u64> {
    match std::fs::metadata(target) {
        Ok(m) => Ok(m.len()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(e),
    }
}

/// An error unless `target` holds at least the `len` bytes its marker says checkpoint
/// `checkpoint` left in it: a shorter (or missing) file was truncated or replaced after the
/// commit, and neither extending it nor cutting it back would give the committed output.
fn check_holds(target: &Path, len: u64, checkpoint: u64) -> std::io::Result<()> {
    let size = size_of(target)?;
    if size < len {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            format!(
                "{} has {size} bytes, but {len} were committed to it (up to checkpoint {checkpoint}, \
                 see {}): was it truncated or replaced? Restore the file, or start over with \
                 `--from-scratch`",
                target.display(),
                marker(target).display()
            ),
        ));
    }
    Ok(())
}

/// The final files in `dir` (of the names `names`): those `is_target` accepts, and those
/// a marker names (a final file deleted after a commit), sorted.
fn targets_in(names: &[String], is_target: &dyn Fn(&str) -> bool) -> Vec<String> {
    let mut targets: Vec<String> = names
        .iter()
        .map(|n| n.strip_prefix('.').and_then(|r| r.strip_suffix(".committed")).unwrap_or(n))
        .filter(|n| is_target(n))
        .map(str::to_owned)
        .collect();
    targets.sort_unstable();
    targets.dedup();
    targets
}

/// The names in `dir`; empty if `dir` does not exist.
fn names_in(dir: &Path) -> std::io::Result<Vec<String>> {
    match std::fs::read_dir(dir) {
        Ok(entries) => {
            Ok(entries.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

/// Checks, changing nothing, that [`discard`] can restore checkpoint `restored` (see the
/// [module docs](crate::file_commit)): every marker is readable, reaches back to `restored`, and every final file
/// holds at least the bytes `restored` left in it. A sink calls it from
/// [`Sink::check_restore`](weir_runtime::Sink::check_restore), so that a refusal by any sink of
/// the pipeline leaves these files as they were.
///
/// # Errors
///
/// What [`discard`] would fail on: I/O errors, a malformed marker, a marker that no longer
/// reaches back to `restored`, a final file shorter than its committed length.
pub fn check_discard(
    dir: &Path,
    is_target: &dyn Fn(&str) -> bool,
    restored: Option<u64>,
) -> std::io::Result<()> {
    let Some(r) = restored else { return Ok(()) };
    for name in targets_in(&names_in(dir)?, is_target) {
        let target = dir.join(name);
        let history = read_history(&target)?;
        let Some(i) = restore_point(&target, &history, r)? else { continue };
        // Lengths only grow along the history: the file must hold what the restore point left
        // in it, whether it is cut back to it or `r` is committed again on top of it.
        check_holds(&target, history[i].1, history[i].0)?;
    }
    Ok(())
}

/// Cleans up on start (see the [module docs](crate::file_commit)). `is_target` tells the sink's final file names
/// (the name of a file in `dir`); `restored` is the checkpoint the pipeline restored (final
/// files are cut back to their markers), `None` on a fresh start (final files and markers are
/// deleted).
///
/// # Errors
///
/// I/O errors, or a malformed marker.
pub fn discard(dir: &Path, is_target: &dyn Fn(&str) -> bool, restored: Option<u64>) -> std::io::Result<()> {
    let names = names_in(dir)?;
    if names.is_empty() {
        return Ok(());
    }
    let targets = targets_in(&names, is_target);
    for name in &names {
        if uncommitted_target(name).is_some_and(is_target) {
            std::fs::remove_file(dir.join(name))?;
        }
    }
    for name in &targets {
        let target = dir.join(name);
        match restored {
            Some(r) => {
                let mut history = read_history(&target)?;
                let len = match restore_point(&target, &history, r)? {
                    Some(i) => {
                        let len = history[i].1;
                        check_holds(&target, len, history[i].0)?;
                        if i + 1 < history.len() {
                            tracing::warn!(
                                file = %target.display(),
                                restored = r,
                                newest_committed = history[history.len() - 1].0,
                                "cutting away the output of checkpoints newer than the restored one"
                            );
                            history.truncate(i + 1);
                            cut(&target, len)?;
                            write_marker(&target, &history)?;
                        }
                        len
                    }
                    None => 0,
                };
                cut(&target, len)?;
            }
            None => {
                for path in [target.clone(), marker(&target)] {
                    match std::fs::remove_file(path) {
                        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                        _ => {}
                    }
                }
            }
        }
    }
    sync_dir(dir)
}

/// Cuts `target` back to `len` bytes if it is longer (the caller checked it is not shorter);
/// a missing file stays missing.
fn cut(target: &Path, len: u64) -> std::io::Result<()> {
    let file = match OpenOptions::new().write(true).open(target) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && len == 0 => return Ok(()),
        Err(e) => return Err(e),
    };
    if file.metadata()?.len() > len {
        file.set_len(len)?;
        file.sync_all()?;
    }
    Ok(())
}

/// What the final files in `dir` (those `is_target` accepts) hold from an earlier run: the
/// newest checkpoint their markers record, or output written without checkpoints (a non-empty
/// final file without a marker); `None` if there is neither.
///
/// # Errors
///
/// I/O errors, or a malformed marker.
pub fn committed(dir: &Path, is_target: &dyn Fn(&str) -> bool) -> std::io::Result<Option<CommittedOutput>> {
    let mut names = names_in(dir)?;
    names.retain(|n| is_target(n));
    names.sort_unstable();
    let mut found: Option<CommittedOutput> = None;
    for name in names {
        let target = dir.join(&name);
        let size = std::fs::metadata(&target)?.len();
        let (id, len) = read_marker(&target)?;
        let (checkpoint, what) = match id {
            0 if size == 0 => continue,
            0 => (None, format!("{}: {size} bytes written without checkpoints", target.display())),
            id => (Some(id), format!("{}: {len} bytes committed by checkpoint {id}", target.display())),
        };
        found = Some(match found {
            Some(f) if f.checkpoint >= checkpoint => f,
            _ => CommittedOutput::new(checkpoint, what),
        });
    }
    Ok(found)
}

/// Checks that the final files of `parts` (a restored checkpoint's committables) are files of
/// a sink writing in `dir` (those `is_target` accepts): a checkpoint taken while the sink
/// wrote elsewhere (the program changed its path, or a relative path was resolved in another
/// working directory) must not be restored into it.
///
/// # Errors
///
/// A message naming the file the checkpoint wrote and where the sink writes now.
pub fn check_targets(
    parts: &[Committable],
    dir: &Path,
    is_target: &dyn Fn(&str) -> bool,
) -> Result<(), String> {
    for part in parts {
        let name = part.target.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let parent = part.target.parent().unwrap_or(Path::new(""));
        if parent != dir || !is_target(&name) {
            return Err(format!(
                "the checkpoint was taken while this sink wrote {}, but it now writes in {}; was the \
                 path changed, or is a relative path resolved in another working directory? Restore \
                 with the same output path, or start over with `--from-scratch`",
                part.target.display(),
                dir.display()
            ));
        }
    }
    Ok(())
}

/// `path` made absolute against the current directory (lexically: `..` and symbolic links are
/// kept, and the file need not exist); `path` itself if the current directory is unknown.
pub fn absolute(path: PathBuf) -> PathBuf {
    std::path::absolute(&path).unwrap_or(path)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn part(dir: &Path, subtask: usize, id: u64, text: &str) -> Committable {
        let target = dir.join("out.csv");
        let pending = pending(&target, subtask, id);
        std::fs::write(&pending, text).unwrap();
        Committable { pending, target }
    }

    #[test]
    fn uncommitted_files_name_their_target() {
        let t = Path::new("d/out-1.jsonl");
        let name = |p: PathBuf| p.file_name().unwrap().to_string_lossy().into_owned();
        assert_eq!(uncommitted_target(&name(in_progress(t, 3))), Some("out-1.jsonl"));
        assert_eq!(uncommitted_target(&name(pending(t, 0, 12))), Some("out-1.jsonl"));
        assert_eq!(uncommitted_target(".out-1.jsonl.committed"), None);
        assert_eq!(uncommitted_target("out-1.jsonl"), None);
    }

    #[test]
    fn a_commit_appends_once_and_a_repeated_commit_does_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("out.csv");
        let parts = [part(dir.path(), 0, 1, "a,b\n1,2\n"), part(dir.path(), 1, 1, "a,b\n3,4\n")];
        commit(1, &parts, true).unwrap();
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "a,b\n1,2\n3,4\n");
        commit(1, &parts, true).unwrap();
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "a,b\n1,2\n3,4\n");
        let parts = [part(dir.path(), 0, 2, "a,b\n5,6\n")];
        commit(2, &parts, true).unwrap();
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "a,b\n1,2\n3,4\n5,6\n");
        assert!(!parts[0].pending.exists());
    }

    #[test]
    fn an_interrupted_commit_is_redone_from_the_marker() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("out.csv");
        commit(1, &[part(dir.path(), 0, 1, "h\n1\n")], true).unwrap();
        let parts = [part(dir.path(), 0, 2, "h\n2\n")];
        // A crash after half an append, before the marker.
        std::fs::OpenOptions::new().append(true).open(&target).unwrap().write_all(b"2").unwrap();
        commit(2, &parts, true).unwrap();
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "h\n1\n2\n");
    }

    #[test]
    fn restore_discards_uncommitted_files_and_a_fresh_start_replaces_the_output() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("out.csv");
        commit(1, &[part(dir.path(), 0, 1, "h\n1\n")], true).unwrap();
        let stale = part(dir.path(), 0, 2, "h\n2\n");
        std::fs::write(in_progress(&target, 1), "h\n3\n").unwrap();
        std::fs::OpenOptions::new().append(true).open(&target).unwrap().write_all(b"junk").unwrap();
        let is_target = |n: &str| n == "out.csv";
        discard(dir.path(), &is_target, Some(1)).unwrap();
        assert!(!stale.pending.exists() && !in_progress(&target, 1).exists());
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "h\n1\n");
        discard(dir.path(), &is_target, None).unwrap();
        assert!(!target.exists() && !marker(&target).exists());
    }

    #[test]
    fn restoring_an_older_checkpoint_cuts_away_what_newer_ones_committed() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("out.csv");
        let is_target = |n: &str| n == "out.csv";
        commit(3, &[part(dir.path(), 0, 3, "h\n1\n")], true).unwrap();
        commit(5, &[part(dir.path(), 0, 5, "h\n2\n")], true).unwrap();
        commit(8, &[part(dir.path(), 0, 8, "h\n3\n")], true).unwrap();
        assert_eq!(committed(dir.path(), &is_target).unwrap().unwrap().checkpoint, Some(8));
        // Checkpoints 8 and 7 were damaged: 6 is restored, which committed nothing here.
        discard(dir.path(), &is_target, Some(6)).unwrap();
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "h\n1\n2\n");
        assert_eq!(read_history(&target).unwrap(), [(0, 0), (3, 4), (5, 6)]);
        // The job goes on with checkpoint 9: appended once, after 5's output.
        commit(9, &[part(dir.path(), 0, 9, "h\n3\n")], true).unwrap();
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "h\n1\n2\n3\n");
        // Restoring before the first commit empties the file.
        discard(dir.path(), &is_target, Some(2)).unwrap();
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "");
    }

    #[test]
    fn a_restore_older_than_the_marker_remembers_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("out.csv");
        for id in 1..=(MARKER_HISTORY as u64 + 1) {
            commit(id, &[part(dir.path(), 0, id, "h\nx\n")], true).unwrap();
        }
        assert_eq!(read_history(&target).unwrap().len(), MARKER_HISTORY);
        let before = std::fs::read(&target).unwrap();
        let e = check_discard(dir.path(), &|n: &str| n == "out.csv", Some(1)).unwrap_err();
        assert!(e.to_string().contains("older than every commit"), "{e}");
        assert_eq!(std::fs::read(&target).unwrap(), before, "a check changes nothing");
        check_discard(dir.path(), &|n: &str| n == "out.csv", Some(MARKER_HISTORY as u64)).unwrap();
        let e = discard(dir.path(), &|n: &str| n == "out.csv", Some(1)).unwrap_err();
        assert!(e.to_string().contains("older than every commit"), "{e}");
        // One the marker remembers is fine.
        discard(dir.path(), &|n: &str| n == "out.csv", Some(MARKER_HISTORY as u64)).unwrap();
    }

    #[test]
    fn a_commit_refuses_a_final_file_shorter_than_its_marker_instead_of_writing_zeros() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("out.csv");
        commit(1, &[part(dir.path(), 0, 1, "h\n1\n2\n")], true).unwrap();
        // Truncated by a user or a tool, then deleted: the committed output is not there.
        for damage in [Some(3_u64), None] {
            match damage {
                Some(len) => {
                    std::fs::OpenOptions::new().write(true).open(&target).unwrap().set_len(len).unwrap()
                }
                None => std::fs::remove_file(&target).unwrap(),
            }
            let before = std::fs::read(&target).ok();
            let e = commit(2, &[part(dir.path(), 0, 2, "h\n3\n")], true).unwrap_err();
            let message = e.to_string();
            let size = before.as_ref().map_or(0, Vec::len);
            assert!(
                message.contains("out.csv")
                    && message.contains(&format!("has {size} bytes, but 6 were committed")),
                "{message}"
            );
            assert_eq!(std::fs::read(&target).ok(), before, "a refused commit writes nothing");
            assert_eq!(read_history(&target).unwrap(), [(0, 0), (1, 6)]);
        }
    }

    #[test]
    fn a_restore_refuses_a_final_file_shorter_than_its_marker_and_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("out.csv");
        let is_target = |n: &str| n == "out.csv";
        commit(1, &[part(dir.path(), 0, 1, "h\n1\n")], true).unwrap();
        commit(2, &[part(dir.path(), 0, 2, "h\n2\n")], true).unwrap();
        // Uncommitted output of checkpoint 3, which is restored: its commit is redone.
        let pending3 = part(dir.path(), 0, 3, "h\n3\n");
        std::fs::write(in_progress(&target, 0), "h\n4\n").unwrap();
        std::fs::OpenOptions::new().write(true).open(&target).unwrap().set_len(5).unwrap();
        let files = || {
            let mut names = names_in(dir.path()).unwrap();
            names.sort_unstable();
            names.into_iter().map(|n| (std::fs::read(dir.path().join(&n)).unwrap(), n)).collect::<Vec<_>>()
        };
        let before = files();
        for restored in [3, 2] {
            let e = check_discard(dir.path(), &is_target, Some(restored)).unwrap_err();
            assert!(e.to_string().contains("out.csv has 5 bytes, but"), "{e}");
            assert_eq!(files(), before, "a refused restore changes nothing");
        }
        let e = commit(3, &[pending3], true).unwrap_err();
        assert!(e.to_string().contains("out.csv has 5 bytes, but 6 were committed"), "{e}");
        assert_eq!(files(), before, "a refused commit changes nothing");
        // Restoring a checkpoint whose output is all there is fine: checkpoint 1 left 4 bytes.
        check_discard(dir.path(), &is_target, Some(1)).unwrap();
        discard(dir.path(), &is_target, Some(1)).unwrap();
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "h\n1\n");
        // A deleted final file whose marker records output is refused too.
        std::fs::remove_file(&target).unwrap();
        let e = check_discard(dir.path(), &is_target, Some(1)).unwrap_err();
        assert!(e.to_string().contains("out.csv has 0 bytes, but 4 were committed"), "{e}");
        // A fresh start replaces everything, the marker included.
        discard(dir.path(), &is_target, None).unwrap();
        assert!(!marker(&target).exists());
    }

    #[test]
    fn committed_reports_markers_and_files_written_without_checkpoints() {
        let dir = tempfile::tempdir().unwrap();
        let is_target = |n: &str| n == "out.csv";
        assert_eq!(committed(dir.path(), &is_target).unwrap(), None);
        std::fs::write(dir.path().join("out.csv"), "").unwrap();
        assert_eq!(committed(dir.path(), &is_target).unwrap(), None);
        std::fs::write(dir.path().join("out.csv"), "h\n").unwrap();
        assert_eq!(committed(dir.path(), &is_target).unwrap().unwrap().checkpoint, None);
        commit(4, &[part(dir.path(), 0, 4, "h\n1\n")], true).unwrap();
        let found = committed(dir.path(), &is_target).unwrap().unwrap();
        assert_eq!(found.checkpoint, Some(4));
        assert!(found.description.contains("out.csv"), "{}", found.description);
    }

    #[test]
    fn targets_outside_the_sinks_directory_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let parts = [part(dir.path(), 0, 1, "x")];
        let is_target = |n: &str| n == "out.csv";
        assert!(check_targets(&parts, dir.path(), &is_target).is_ok());
        let e = check_targets(&parts, &dir.path().join("elsewhere"), &is_target).unwrap_err();
        assert!(e.contains("out.csv") && e.contains("elsewhere"), "{e}");
    }
}
