//! Small file-system helpers with the durability steps spelled out.

use std::fs::{self, File};
use std::io::Write;
use std::path::Path;

use crate::error::{Error, Result};

/// Makes directory entries (created, renamed or removed files) in `dir` durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    crate::fault::before_sync(dir, 0)
        .and_then(|()| File::open(dir)?.sync_all())
        .map_err(Error::io("sync directory", dir))
}

/// Replaces `path` with `contents` atomically: write a temporary file beside it, fsync it, rename
/// it over `path`, fsync the directory. A crash leaves either the old or the new contents.
pub(crate) fn write_atomic(path: &Path, contents: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(".tmp");
    let tmp = dir.join(tmp_name);
    let mut f = File::create(&tmp).map_err(Error::io("create", &tmp))?;
    f.write_all(contents).map_err(Error::io("write", &tmp))?;
    crate::fault::before_sync(&tmp, contents.len() as u64)
        .and_then(|()| f.sync_all())
        .map_err(Error::io("fsync", &tmp))?;
    drop(f);
    fs::rename(&tmp, path).map_err(Error::io("rename into place", path))?;
    sync_dir(dir)
}

/// Creates a directory and its parents.
pub(crate) fn create_dir_all(dir: &Path) -> Result<()> {
    fs::create_dir_all(dir).map_err(Error::io("create directory", dir))
}
