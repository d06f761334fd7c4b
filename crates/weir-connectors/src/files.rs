//! Naming files: a path or a glob pattern, resolved the same way by every file source.
//!
//! A pattern without glob syntax (`*`, `?`, `[`) names one file, which must exist and not be a
//! directory. A glob names the files it matches (directories skipped), **oldest first** (by
//! modification time, then path): rotated logs (`access.log.2`, `access.log.1`, `access.log`)
//! are read in the order they were written. An entry that cannot be listed, a pattern that is
//! not valid glob syntax and a pattern that matches nothing are errors, never silently skipped.

use std::path::PathBuf;

/// Whether `pattern` uses glob syntax.
pub(crate) fn is_glob(pattern: &str) -> bool {
    pattern.contains(['*', '?', '['])
}

/// The files `pattern` names, oldest first (see the module docs).
///
/// # Errors
///
/// A message saying why `pattern` names no file: missing, a directory, not valid glob syntax,
/// an entry that cannot be listed, or no match.
pub fn resolve(pattern: &str) -> std::result::Result<Vec<PathBuf>, String> {
    if !is_glob(pattern) {
        let path = PathBuf::from(pattern);
        return match std::fs::metadata(&path) {
            Ok(m) if m.is_dir() => Err("is a directory, not a file".to_owned()),
            Ok(_) => Ok(vec![path]),
            Err(e) => Err(format!("cannot open: {e}")),
        };
    }
    let matches = glob::glob(pattern).map_err(|e| format!("invalid glob pattern: {e}"))?;
    let mut files = Vec::new();
    for entry in matches {
        let path = entry.map_err(|e| format!("cannot list {}: {}", e.path().display(), e.error()))?;
        if !path.is_dir() {
            files.push(path);
        }
    }
    if files.is_empty() {
        return Err("the pattern matches no file".to_owned());
    }
    // Oldest first: rotated logs (`access.log.2`, `access.log.1`, `access.log`) are read in the
    // order they were written, so event time rises from file to file.
    let modified = |p: &PathBuf| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    files.sort_by_cached_key(|p| (modified(p), p.clone()));
    Ok(files)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn globs_are_recognised() {
        assert!(is_glob("logs/*.log"));
        assert!(is_glob("a?.txt"));
        assert!(is_glob("a[0-9].txt"));
        assert!(!is_glob("/var/log/syslog"));
    }

    #[test]
    fn missing_paths_and_empty_globs_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.log");
        let err = resolve(missing.to_str().unwrap()).unwrap_err();
        assert!(err.contains("cannot open"), "{err}");
        let err = resolve(&format!("{}/*.log", dir.path().display())).unwrap_err();
        assert!(err.contains("matches no file"), "{err}");
        let err = resolve(dir.path().to_str().unwrap()).unwrap_err();
        assert!(err.contains("directory"), "{err}");
    }
}
