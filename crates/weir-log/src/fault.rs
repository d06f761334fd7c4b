//! Fault injection for tests: watch every `fsync`/`fdatasync` the log makes and make chosen ones
//! fail. Hidden from the documentation and not part of the stable API; it exists so that tests
//! outside the crate can simulate power loss (everything not synced is gone) and failing disks.
//!
//! With no hook registered, a sync pays one atomic load.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

/// A hook: called with the file or directory about to be synced and the file's length when the
/// sync starts (0 for a directory). An error makes that sync fail with it, without syncing.
pub type SyncHook = dyn Fn(&Path, u64) -> io::Result<()> + Send + Sync;

static ACTIVE: AtomicUsize = AtomicUsize::new(0);
static NEXT_ID: AtomicU64 = AtomicU64::new(0);
static HOOKS: Mutex<Vec<(u64, PathBuf, Arc<SyncHook>)>> = Mutex::new(Vec::new());

/// Keeps a hook registered; dropping it removes the hook.
#[derive(Debug)]
#[must_use = "the hook is removed when the guard is dropped"]
pub struct SyncHookGuard(u64);

impl Drop for SyncHookGuard {
    fn drop(&mut self) {
        HOOKS.lock().unwrap_or_else(PoisonError::into_inner).retain(|(id, _, _)| *id != self.0);
        ACTIVE.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Calls `hook` before every sync the log makes of a file or directory under `dir` (compared
/// as given, so pass the path the log was opened with), until the guard is dropped.
pub fn on_sync(dir: &Path, hook: Arc<SyncHook>) -> SyncHookGuard {
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    HOOKS.lock().unwrap_or_else(PoisonError::into_inner).push((id, dir.to_owned(), hook));
    ACTIVE.fetch_add(1, Ordering::AcqRel);
    SyncHookGuard(id)
}

/// Runs the hooks registered for `path` before it is synced.
pub(crate) fn before_sync(path: &Path, len: u64) -> io::Result<()> {
    if ACTIVE.load(Ordering::Acquire) == 0 {
        return Ok(());
    }
    let hooks: Vec<Arc<SyncHook>> = HOOKS
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .iter()
        .filter(|(_, dir, _)| path.starts_with(dir))
        .map(|(_, _, hook)| hook.clone())
        .collect();
    hooks.iter().try_for_each(|hook| hook(path, len))
}
