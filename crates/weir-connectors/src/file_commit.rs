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
//! | `dir/.name.committed` | `<checkpoint> <length>`: the last checkpoint committed to `name`, and `name`'s length after it |
//!
//! # Commit
//!
//! When checkpoint `c` is complete, each final file gets `c`'s pending files appended, in
//! subtask order (a CSV part's header line is dropped when the file already has content), then
//! is synced; then the marker is replaced (write, sync, rename, directory sync) and the pending
//! files are removed. A commit is idempotent: if the marker already names `c` or later, it does
//! nothing; otherwise it first cuts the file back to the marker's length (undoing an append a
//! crash interrupted) and appends again.
//!
//! # Restore
//!
//! On start, after the restored checkpoint was committed again, every in-progress and pending
//! file is deleted and every final file cut back to its marker's length: what was written after
//! the checkpoint is gone, and will be written again. On a fresh start (nothing restored), the
//! final files and markers are deleted too: the output is replaced, as without checkpoints.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

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

/// The last checkpoint committed to `target` and its length then; `(0, 0)` if none.
fn read_marker(target: &Path) -> std::io::Result<(u64, u64)> {
    match std::fs::read_to_string(marker(target)) {
        Ok(text) => {
            let mut it = text.split_whitespace().map(str::parse::<u64>);
            match (it.next(), it.next()) {
                (Some(Ok(id)), Some(Ok(len))) => Ok((id, len)),
                _ => Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("{} is not `<checkpoint> <length>`", marker(target).display()),
                )),
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok((0, 0)),
        Err(e) => Err(e),
    }
}

/// Syncs the directory that holds `path` (the current directory for a bare name), so renames
/// and creations in it survive a crash.
///
/// # Errors
///
/// The directory cannot be opened or synced.
pub fn sync_dir(path: &Path) -> std::io::Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    File::open(dir)?.sync_all()
}

fn write_marker(target: &Path, id: u64, len: u64) -> std::io::Result<()> {
    let tmp = hidden(target, "committed.tmp");
    let mut f = File::create(&tmp)?;
    f.write_all(format!("{id} {len}\n").as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, marker(target))?;
    sync_dir(target)
}

/// Commits checkpoint `id`'s parts (see the module docs): each target gets its parts appended
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
        let (done, len) = read_marker(target)?;
        if done >= id {
            continue;
        }
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
        write_marker(target, id, size)?;
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

/// Cleans up on start (see the module docs). `is_target` tells the sink's final file names
/// (the name of a file in `dir`); `restored` is the checkpoint the pipeline restored (final
/// files are cut back to their markers), `None` on a fresh start (final files and markers are
/// deleted).
///
/// # Errors
///
/// I/O errors, or a malformed marker.
pub fn discard(dir: &Path, is_target: &dyn Fn(&str) -> bool, restored: Option<u64>) -> std::io::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    let names: Vec<String> =
        entries.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    let targets: Vec<String> = names.iter().filter(|n| is_target(n)).cloned().collect();
    for name in &names {
        if uncommitted_target(name).is_some_and(is_target) {
            std::fs::remove_file(dir.join(name))?;
        }
    }
    for name in &targets {
        let target = dir.join(name);
        match restored {
            Some(_) => {
                let (_, len) = read_marker(&target)?;
                let file = OpenOptions::new().write(true).open(&target)?;
                if file.metadata()?.len() > len {
                    file.set_len(len)?;
                    file.sync_all()?;
                }
            }
            None => {
                std::fs::remove_file(&target)?;
                match std::fs::remove_file(marker(&target)) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                    _ => {}
                }
            }
        }
    }
    sync_dir(&dir.join("x"))
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
}
