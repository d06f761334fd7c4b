//! The log's use of [`crate::fs`]: the same steps, with errors as [`Error::Io`] naming the step
//! and the path.

use std::path::Path;

use crate::error::{Error, Result};

/// [`crate::fs::sync_dir`].
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    crate::fs::sync_dir(dir).map_err(Error::io("sync directory", dir))
}

/// [`crate::fs::write_atomic`].
pub(crate) fn write_atomic(path: &Path, contents: &[u8]) -> Result<()> {
    crate::fs::write_atomic(path, contents).map_err(Error::io("replace atomically", path))
}

/// Creates a directory and its parents.
pub(crate) fn create_dir_all(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(Error::io("create directory", dir))
}
