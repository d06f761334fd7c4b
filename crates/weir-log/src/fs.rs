//! Durable file-system steps: the one implementation every Weir crate uses when it makes a file
//! or a directory entry survive a crash (the log's metadata, checkpoints, file and Parquet sinks).
//!
//! # What each step promises
//!
//! - [`write_atomic`] replaces a file so that after a crash (process, OS or power loss) the path
//!   holds either the old or the new contents, never a mix: write a temporary file beside it,
//!   fsync it, rename it over the path, fsync the directory.
//! - [`sync_dir`] makes the entries created, renamed or removed in a directory durable; a
//!   rename is not durable until its directory is synced. [`sync_parent`] does it for the
//!   directory holding a path.
//!
//! # Platform behaviour
//!
//! - **Unix** (Linux, macOS, the BSDs): [`sync_dir`] opens the directory read-only and calls
//!   `fsync` on it. On macOS `fsync` does not flush the drive's cache (`F_FULLFSYNC` would); the
//!   same holds for file syncs in the standard library, so Weir's durability there is the
//!   operating system's, not the drive's.
//! - **Other platforms** (Windows): the standard library cannot open a directory as a file, so
//!   [`sync_dir`] does nothing and succeeds; a completed rename is as durable as the file
//!   system's metadata journal makes it (NTFS journals it). File contents are still synced.
//!
//! Every sync made here goes through the log's fault-injection hooks, so tests can make it fail.
//!
//! # Errors
//!
//! The `std::io::Error` of the step that failed, with its kind kept; [`write_atomic`]'s message
//! names the step and the file (`fsync /data/x.tmp: ...`).

use std::fs::File;
use std::io::{self, Write};
use std::path::Path;

/// Makes directory entries (files created, renamed or removed) in `dir` durable. Does nothing,
/// successfully, off Unix (see the [module docs](crate::fs)).
///
/// # Errors
///
/// `dir` cannot be opened, or its `fsync` fails.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    crate::fault::before_sync(dir, 0)?;
    if cfg!(unix) { File::open(dir)?.sync_all() } else { Ok(()) }
}

/// [`sync_dir`] of the directory holding `path` (the current directory for a bare file name):
/// after creating, renaming or removing `path`.
///
/// # Errors
///
/// As [`sync_dir`].
pub fn sync_parent(path: &Path) -> io::Result<()> {
    sync_dir(parent(path))
}

/// The directory holding `path`; `.` for a bare name.
fn parent(path: &Path) -> &Path {
    path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."))
}

/// An error of `step` on `file`, naming both and keeping the kind.
fn step(step: &'static str, file: &Path) -> impl FnOnce(io::Error) -> io::Error + use<> {
    let file = file.display().to_string();
    move |e| io::Error::new(e.kind(), format!("{step} {file}: {e}"))
}

/// Replaces `path` with `contents` atomically: write `<path>.tmp` beside it, fsync it, rename it
/// over `path`, fsync the directory. A crash leaves either the old or the new contents (and
/// perhaps a stale `.tmp`, which the next call replaces).
///
/// # Errors
///
/// The step that failed (`create`, `write`, `fsync`, `rename`, `fsync directory`) and its file;
/// `path` then holds its old contents, unless only the final directory sync failed (then the
/// new contents are in place but not known to be durable).
pub fn write_atomic(path: &Path, contents: &[u8]) -> io::Result<()> {
    let dir = parent(path);
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(".tmp");
    let tmp = dir.join(tmp_name);
    let mut f = File::create(&tmp).map_err(step("create", &tmp))?;
    f.write_all(contents).map_err(step("write", &tmp))?;
    crate::fault::before_sync(&tmp, contents.len() as u64)
        .and_then(|()| f.sync_all())
        .map_err(step("fsync", &tmp))?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(step("rename into place", path))?;
    sync_dir(dir).map_err(step("fsync directory", dir))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn write_atomic_replaces_the_contents_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("offsets");
        write_atomic(&path, b"old").unwrap();
        write_atomic(&path, b"new").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, ["offsets"]);
    }

    #[test]
    fn a_failed_write_names_the_step_and_the_file_and_keeps_the_old_contents() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing-dir").join("offsets");
        let err = write_atomic(&path, b"x").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        assert!(err.to_string().starts_with("create ") && err.to_string().contains("offsets.tmp"), "{err}");
    }

    #[test]
    fn the_parent_of_a_bare_name_is_the_current_directory() {
        assert_eq!(parent(Path::new("file")), Path::new("."));
        assert_eq!(parent(Path::new("a/file")), Path::new("a"));
        sync_parent(Path::new("file")).unwrap();
    }
}
