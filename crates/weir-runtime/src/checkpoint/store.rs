//! [`CheckpointStore`]: every byte of checkpoint I/O, through `object_store` (a local directory,
//! or S3, GCS, Azure, …).
//!
//! # Layout
//!
//! ```text
//! <root>/chk-<id, 20 digits>/<uid>-<subtask>.part   one per part (see `format`)
//! <root>/chk-<id, 20 digits>/_manifest.json         the manifest: the checkpoint is published
//! ```
//!
//! The root is the local directory or the object store's prefix. Ids are zero-padded so names
//! sort like ids. In part file names, characters of the uid other than `[A-Za-z0-9_-]` become
//! `_` (`window#0` → `window_0-0.part`).
//!
//! # Atomicity and durability
//!
//! A checkpoint exists (is listed as *published*, and may be restored) exactly when its
//! `_manifest.json` exists. Publishing goes in this order:
//!
//! 1. every part file is written and made durable;
//! 2. the manifest is written to `_manifest.json.tmp` and made durable;
//! 3. it is renamed to `_manifest.json`, and the directory made durable.
//!
//! A crash before 3 leaves an *unpublished* directory (part files, maybe a `.tmp` manifest),
//! which restoring ignores and pruning deletes later. On the local store "durable" means
//! fsynced: the file, its directory, and the root (which holds the directory's entry); on other
//! stores a completed put is durable, and the rename's copy makes the manifest appear whole.
//! Deleting removes the manifest first (durably), then the parts, so a checkpoint is never
//! restorable yet half-deleted.
//!
//! # Reading
//!
//! A part is verified against its manifest entry (size, whole-file CRC-32C) and then its own
//! header and checksum. [`CheckpointStore::load_latest`] reads checkpoints newest first and stops
//! at the first intact one; which one to restore is decided by `decide::choose_restore`. Missing
//! or damaged files make a checkpoint *corrupt* (skipped); any other I/O failure is an error, so
//! a store that is briefly unreachable never makes a restore go back to an older checkpoint.

use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

use super::decide::{self, Candidate, RestoreChoice};
use super::format::{self, FormatError, Manifest, PartEntry, PartSnapshot};
use crate::error::{Error, Result};

/// The manifest's name in a checkpoint's directory.
const MANIFEST: &str = "_manifest.json";
/// Where the manifest is written before it is renamed to [`MANIFEST`].
const MANIFEST_TMP: &str = "_manifest.json.tmp";
/// Where a pipeline's checkpoints are written and read.
#[derive(Debug, Clone)]
pub(crate) struct CheckpointStore {
    store: Arc<dyn ObjectStore>,
    /// The root of the checkpoints inside `store`.
    prefix: Path,
    /// The local directory `store` is rooted at (canonical), which is fsynced; `None` for other
    /// stores.
    local: Option<PathBuf>,
}

/// A checkpoint read back by [`CheckpointStore::load_latest`].
#[derive(Debug)]
pub(crate) struct Loaded {
    /// Its manifest.
    pub(crate) manifest: Manifest,
    /// Every part, verified, in the manifest's order.
    pub(crate) parts: Vec<(PartEntry, PartSnapshot)>,
    /// Newer checkpoints that could not be used, one line each saying which and why (each was
    /// also logged as a warning).
    pub(crate) skipped: Vec<String>,
}

/// The name of checkpoint `id`'s directory.
fn dir_name(id: u64) -> String {
    format!("chk-{id:020}")
}

/// The id of a checkpoint directory's name, if it is one.
fn parse_dir_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("chk-")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The name of the part file of `uid`'s subtask `subtask`.
fn part_file_name(uid: &str, subtask: u32) -> String {
    let uid: String = uid
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '_' || c == '-' { c } else { '_' })
        .collect();
    format!("{uid}-{subtask}.part")
}

fn is_not_found(e: &object_store::Error) -> bool {
    matches!(e, object_store::Error::NotFound { .. })
}

impl CheckpointStore {
    /// A store in a local directory (created if missing), with fsync for durability.
    pub(crate) fn local(dir: &std::path::Path) -> Result<CheckpointStore> {
        let failed = |what: &str, e: &dyn std::fmt::Display| {
            Error::Checkpoint(format!("cannot {what} the checkpoint directory {}: {e}", dir.display()))
        };
        std::fs::create_dir_all(dir).map_err(|e| failed("create", &e))?;
        let root = std::fs::canonicalize(dir).map_err(|e| failed("resolve", &e))?;
        let fs = LocalFileSystem::new_with_prefix(&root).map_err(|e| failed("open", &e))?;
        Ok(CheckpointStore { store: Arc::new(fs), prefix: Path::default(), local: Some(root) })
    }

    /// A store on any object store (S3, GCS, Azure, …) under `prefix`.
    pub(crate) fn with_store(store: Arc<dyn ObjectStore>, prefix: &str) -> CheckpointStore {
        CheckpointStore { store, prefix: Path::from(prefix), local: None }
    }

    /// Where checkpoints go, for messages (the directory, or the prefix).
    pub(crate) fn location(&self) -> String {
        match &self.local {
            Some(root) => root.display().to_string(),
            None if self.prefix.as_ref().is_empty() => self.store.to_string(),
            None => format!("{}/{}", self.store, self.prefix),
        }
    }

    /// The path of `name` in checkpoint `id`'s directory.
    fn path(&self, id: u64, name: &str) -> Path {
        self.prefix.clone().join(dir_name(id)).join(name)
    }

    /// `name` of checkpoint `id` and the location, for messages.
    fn describe(&self, id: u64, name: &str) -> String {
        format!("{}/{name} in {}", dir_name(id), self.location())
    }

    /// An error about `name` of checkpoint `id`.
    fn error(&self, id: u64, name: &str, what: impl std::fmt::Display) -> Error {
        Error::Checkpoint(format!("checkpoint {id}: {}: {what}", self.describe(id, name)))
    }

    /// On the local store, fsyncs `file` (if any) of checkpoint `id`, its directory and the root.
    async fn sync(&self, id: u64, file: Option<&str>) -> Result<()> {
        let Some(root) = self.local.clone() else {
            return Ok(());
        };
        let dir = root.join(dir_name(id));
        let path = file.map(|f| dir.join(f));
        let synced = tokio::task::spawn_blocking(move || {
            if let Some(path) = &path {
                std::fs::File::open(path)?.sync_all()?;
            }
            weir_log::fs::sync_dir(&dir)?;
            weir_log::fs::sync_dir(&root)
        })
        .await;
        let name = file.unwrap_or("");
        match synced {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(self.error(id, name, format_args!("cannot fsync: {e}"))),
            Err(e) => Err(self.error(id, name, format_args!("the fsync task failed: {e}"))),
        }
    }

    /// Writes part file `<uid>-<subtask>.part` of checkpoint `id` (uid sanitized to
    /// `[A-Za-z0-9_-]`, others → `_`); durable on return.
    pub(crate) async fn write_part(
        &self,
        id: u64,
        uid: &str,
        subtask: u32,
        part: &PartSnapshot,
    ) -> Result<PartEntry> {
        let file = part_file_name(uid, subtask);
        let bytes = format::encode_part(part);
        let size = bytes.len() as u64;
        let crc32c = format::content_crc(&bytes);
        self.store
            .put(&self.path(id, &file), PutPayload::from(bytes))
            .await
            .map_err(|e| self.error(id, &file, format_args!("cannot write the part file: {e}")))?;
        self.sync(id, Some(&file)).await?;
        Ok(PartEntry { uid: uid.to_owned(), subtask, file, size, crc32c })
    }

    /// Publishes the manifest: the checkpoint is complete (and restorable) once this returns.
    pub(crate) async fn publish(&self, manifest: &Manifest) -> Result<()> {
        let id = manifest.id;
        let mut files: Vec<&str> = manifest.parts.iter().map(|p| p.file.as_str()).collect();
        files.sort_unstable();
        if let Some(pair) = files.windows(2).find(|w| w[0] == w[1]) {
            return Err(self.error(
                id,
                pair[0],
                "two parts were written to this one file (their operator uids differ only in characters \
                 other than [A-Za-z0-9_-]); the checkpoint is not published",
            ));
        }
        let json = manifest
            .to_json()
            .map_err(|e| self.error(id, MANIFEST_TMP, format_args!("cannot encode the manifest: {e}")))?;
        let tmp = self.path(id, MANIFEST_TMP);
        self.store
            .put(&tmp, PutPayload::from(json))
            .await
            .map_err(|e| self.error(id, MANIFEST_TMP, format_args!("cannot write the manifest: {e}")))?;
        self.sync(id, Some(MANIFEST_TMP)).await?;
        self.store
            .rename(&tmp, &self.path(id, MANIFEST))
            .await
            .map_err(|e| self.error(id, MANIFEST, format_args!("cannot rename {MANIFEST_TMP} to it: {e}")))?;
        self.sync(id, None).await
    }

    /// Checkpoint ids found: (published, i.e. with a manifest file, ascending; unpublished
    /// directories holding only part files, ascending).
    pub(crate) async fn list(&self) -> Result<(Vec<u64>, Vec<u64>)> {
        let listing = self.store.list_with_delimiter(Some(&self.prefix)).await.map_err(|e| {
            Error::Checkpoint(format!("cannot list the checkpoints in {}: {e}", self.location()))
        })?;
        let mut ids: Vec<u64> =
            listing.common_prefixes.iter().filter_map(|p| p.filename().and_then(parse_dir_name)).collect();
        ids.sort_unstable();
        ids.dedup();
        let (mut published, mut unpublished) = (Vec::new(), Vec::new());
        for id in ids {
            match self.store.head(&self.path(id, MANIFEST)).await {
                Ok(_) => published.push(id),
                Err(e) if is_not_found(&e) => unpublished.push(id),
                Err(e) => return Err(self.error(id, MANIFEST, format_args!("cannot look it up: {e}"))),
            }
        }
        Ok((published, unpublished))
    }

    /// The bytes of `name` in checkpoint `id`, `None` if there is no such file.
    async fn get(&self, id: u64, name: &str) -> Result<Option<Bytes>> {
        let got = async { self.store.get(&self.path(id, name)).await?.bytes().await }.await;
        match got {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(self.error(id, name, format_args!("cannot read: {e}"))),
        }
    }

    /// Reads checkpoint `id`'s manifest. `Err` is an I/O failure; `Ok(Err(candidate))` says why
    /// the checkpoint cannot be used: [`Candidate::Corrupt`] (missing, not a manifest, another
    /// checkpoint's) or [`Candidate::Incompatible`] (another format version).
    pub(crate) async fn read_manifest(&self, id: u64) -> Result<std::result::Result<Manifest, Candidate>> {
        let corrupt =
            |what: String| Ok(Err(Candidate::Corrupt { id, reason: self.describe(id, MANIFEST) + &what }));
        let Some(bytes) = self.get(id, MANIFEST).await? else {
            return corrupt(": missing".into());
        };
        match Manifest::from_json(&bytes) {
            Ok(m) if m.id != id => corrupt(format!(": it is the manifest of checkpoint {}", m.id)),
            Ok(m) => Ok(Ok(m)),
            Err(FormatError::Version { found, .. }) => Ok(Err(Candidate::Incompatible { id, found })),
            Err(e) => corrupt(format!(": {e}")),
        }
    }

    /// Reads and verifies (size, CRC) one part. `Err` is an I/O failure; `Ok(Err(reason))` says
    /// why the part is unusable (missing, wrong size or CRC, undecodable), naming the file.
    pub(crate) async fn read_part(
        &self,
        id: u64,
        entry: &PartEntry,
    ) -> Result<std::result::Result<PartSnapshot, String>> {
        let name = entry.file.as_str();
        let reason = |what: std::fmt::Arguments<'_>| format!("{}: {what}", self.describe(id, name));
        let Some(bytes) = self.get(id, name).await? else {
            return Ok(Err(reason(format_args!("missing"))));
        };
        if bytes.len() as u64 != entry.size {
            return Ok(Err(reason(format_args!("{} bytes, the manifest says {}", bytes.len(), entry.size))));
        }
        let crc = format::content_crc(&bytes);
        if crc != entry.crc32c {
            return Ok(Err(reason(format_args!(
                "CRC-32C {crc:#010x}, the manifest says {:#010x}",
                entry.crc32c
            ))));
        }
        Ok(format::decode_part(&bytes).map_err(|e| reason(format_args!("{e}"))))
    }

    /// Deletes a checkpoint: its manifest first (so it is never half-deleted yet restorable),
    /// then its parts. Deleting one that does not exist is not an error.
    pub(crate) async fn delete(&self, id: u64) -> Result<()> {
        match self.store.delete(&self.path(id, MANIFEST)).await {
            Ok(()) => {}
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(self.error(id, MANIFEST, format_args!("cannot delete: {e}"))),
        }
        let dir = self.prefix.clone().join(dir_name(id));
        if let Some(root) = &self.local {
            if !root.join(dir_name(id)).is_dir() {
                return Ok(());
            }
            self.sync(id, None).await?;
        }
        let listing = self
            .store
            .list_with_delimiter(Some(&dir))
            .await
            .map_err(|e| self.error(id, "", format_args!("cannot list the directory: {e}")))?;
        for object in listing.objects {
            match self.store.delete(&object.location).await {
                Ok(()) => {}
                Err(e) if is_not_found(&e) => {}
                Err(e) => {
                    let name = object.location.filename().unwrap_or_default();
                    return Err(self.error(id, name, format_args!("cannot delete: {e}")));
                }
            }
        }
        if let Some(root) = self.local.clone() {
            // What is left: the directory, and files `object_store` does not list (its staging
            // files of interrupted writes).
            let dir = root.join(dir_name(id));
            let removed = tokio::task::spawn_blocking(move || match std::fs::remove_dir_all(&dir) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
                _ => weir_log::fs::sync_dir(&root),
            })
            .await;
            match removed {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    return Err(self.error(id, "", format_args!("cannot remove the directory: {e}")));
                }
                Err(e) => return Err(self.error(id, "", format_args!("the removing task failed: {e}"))),
            }
        }
        Ok(())
    }

    /// Reads checkpoint `id`, manifest then parts; `Ok(Err(candidate))` if it cannot be used.
    async fn read_checkpoint(
        &self,
        id: u64,
    ) -> Result<std::result::Result<(Manifest, Vec<(PartEntry, PartSnapshot)>), Candidate>> {
        let manifest = match self.read_manifest(id).await? {
            Ok(m) => m,
            Err(unusable) => return Ok(Err(unusable)),
        };
        // Owned futures, read concurrently (a part per operator subtask: few, some large).
        let reads: Vec<_> = manifest
            .parts
            .iter()
            .cloned()
            .map(|entry| {
                let store = self.clone();
                Box::pin(async move {
                    let read = store.read_part(id, &entry).await;
                    (entry, read)
                })
            })
            .collect();
        let mut parts = Vec::with_capacity(manifest.parts.len());
        for (entry, read) in futures::future::join_all(reads).await {
            match read? {
                Ok(part) => parts.push((entry, part)),
                Err(reason) => return Ok(Err(Candidate::Corrupt { id, reason })),
            }
        }
        Ok(Ok((manifest, parts)))
    }

    /// The newest restorable checkpoint and all its parts (see [`decide::choose_restore`]):
    /// tries newest first; a checkpoint whose manifest is unreadable/truncated or whose part is
    /// missing, short or fails its CRC is skipped with a warning naming it and why, and the
    /// previous one is used; one written in another format version is refused with an error
    /// that names its id, the version found and the version this build reads, and says
    /// `--from-scratch` starts over. `Ok(None)` when there is no checkpoint at all. With a
    /// `limit`, checkpoints newer than it are not considered (see
    /// [`Sink::restore_limit`](crate::Sink::restore_limit)).
    pub(crate) async fn load_latest(&self, limit: Option<u64>) -> Result<Option<Loaded>> {
        let (mut published, _) = self.list().await?;
        if let Some(limit) = limit {
            let newer: Vec<u64> = published.iter().copied().filter(|&id| id > limit).collect();
            if !newer.is_empty() {
                tracing::info!(location = %self.location(), limit, ?newer, "not restoring checkpoints whose output a sink never committed");
            }
            published.retain(|&id| id <= limit);
        }
        let mut candidates = Vec::new();
        let mut read = None;
        for &id in published.iter().rev() {
            match self.read_checkpoint(id).await? {
                Ok(checkpoint) => {
                    candidates.push(Candidate::Valid(id));
                    read = Some(checkpoint);
                    break;
                }
                // Nothing older may be restored in its place.
                Err(incompatible @ Candidate::Incompatible { .. }) => {
                    candidates.push(incompatible);
                    break;
                }
                Err(unusable) => candidates.push(unusable),
            }
        }
        match decide::choose_restore(&candidates) {
            RestoreChoice::Nothing => Ok(None),
            RestoreChoice::Refuse(why) => {
                Err(Error::Checkpoint(format!("cannot restore from {}: {why}", self.location())))
            }
            RestoreChoice::Restore { id, skipped } => {
                for reason in &skipped {
                    tracing::warn!(location = %self.location(), restoring = id, "skipping {reason}");
                }
                match read {
                    Some((manifest, parts)) if manifest.id == id => {
                        Ok(Some(Loaded { manifest, parts, skipped }))
                    }
                    _ => Err(Error::Checkpoint(format!(
                        "checkpoint {id} in {} was chosen for restoring but not read (a bug)",
                        self.location()
                    ))),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use object_store::memory::InMemory;

    use super::*;
    use crate::checkpoint::format::FORMAT_VERSION;

    fn part(n: u8) -> PartSnapshot {
        PartSnapshot {
            keyed: vec![(u16::from(n), vec![n; 30])],
            meta: vec![n],
            positions: vec![(0, vec![n, n])],
            committables: if n.is_multiple_of(2) { vec![vec![n; 3]] } else { Vec::new() },
        }
    }

    /// Writes checkpoint `id` with two parts and publishes it.
    async fn checkpoint(store: &CheckpointStore, id: u64) -> (Manifest, Vec<PartSnapshot>) {
        let parts = vec![part(id as u8), part(id as u8 + 100)];
        let mut entries = Vec::new();
        for (subtask, p) in parts.iter().enumerate() {
            entries.push(store.write_part(id, "window#0", subtask as u32, p).await.unwrap());
        }
        let manifest = Manifest {
            format_version: FORMAT_VERSION,
            pipeline: "test".into(),
            id,
            created_ms: 1_700_000_000_000 + id as i64,
            parallelism: 2,
            max_parallelism: 1024,
            finished: false,
            parts: entries,
        };
        store.publish(&manifest).await.unwrap();
        (manifest, parts)
    }

    fn file(dir: &tempfile::TempDir, id: u64, name: &str) -> PathBuf {
        dir.path().join(dir_name(id)).join(name)
    }

    fn loaded_parts(loaded: &Loaded) -> Vec<PartSnapshot> {
        loaded.parts.iter().map(|(_, p)| p.clone()).collect()
    }

    #[tokio::test]
    async fn written_and_published_checkpoints_load_back() {
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::local(&dir.path().join("new")).unwrap();
        checkpoint(&store, 1).await;
        let (manifest, parts) = checkpoint(&store, 2).await;
        assert!(dir.path().join("new").join(dir_name(2)).join("window_0-1.part").is_file());
        assert_eq!(store.list().await.unwrap(), (vec![1, 2], vec![]));
        let loaded = store.load_latest(None).await.unwrap().unwrap();
        assert_eq!(loaded.manifest, manifest);
        assert_eq!(loaded_parts(&loaded), parts);
        assert!(loaded.skipped.is_empty());
        assert_eq!(store.read_manifest(2).await.unwrap(), Ok(manifest));
    }

    #[tokio::test]
    async fn a_restore_limit_leaves_newer_checkpoints_out() {
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::local(dir.path()).unwrap();
        checkpoint(&store, 1).await;
        let (manifest, _) = checkpoint(&store, 2).await;
        checkpoint(&store, 3).await;
        assert_eq!(store.load_latest(Some(2)).await.unwrap().unwrap().manifest, manifest);
        assert!(store.load_latest(Some(0)).await.unwrap().is_none());
        assert_eq!(store.load_latest(Some(9)).await.unwrap().unwrap().manifest.id, 3);
    }

    #[tokio::test]
    async fn a_checkpoint_without_parts_is_published_and_loads() {
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::local(dir.path()).unwrap();
        let manifest = Manifest {
            format_version: FORMAT_VERSION,
            pipeline: "test".into(),
            id: 3,
            created_ms: 0,
            parallelism: 1,
            max_parallelism: 1024,
            finished: true,
            parts: vec![],
        };
        store.publish(&manifest).await.unwrap();
        assert!(!file(&dir, 3, MANIFEST_TMP).exists());
        let loaded = store.load_latest(None).await.unwrap().unwrap();
        assert_eq!((loaded.manifest, loaded.parts), (manifest, vec![]));
    }

    #[tokio::test]
    async fn object_stores_keep_checkpoints_under_their_prefix() {
        let memory = Arc::new(InMemory::new());
        let store = CheckpointStore::with_store(memory.clone(), "jobs/clicks/");
        let other = CheckpointStore::with_store(memory.clone(), "jobs/other");
        let (manifest, parts) = checkpoint(&store, 7).await;
        assert!(
            memory.head(&Path::from("jobs/clicks/chk-00000000000000000007/_manifest.json")).await.is_ok()
        );
        assert_eq!(other.list().await.unwrap(), (vec![], vec![]));
        let loaded = store.load_latest(None).await.unwrap().unwrap();
        assert_eq!((&loaded.manifest, loaded_parts(&loaded)), (&manifest, parts));
        store.delete(7).await.unwrap();
        assert_eq!(store.list().await.unwrap(), (vec![], vec![]));
        assert_eq!(store.location(), "InMemory/jobs/clicks");
    }

    #[tokio::test]
    async fn a_truncated_manifest_falls_back_to_the_previous_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::local(dir.path()).unwrap();
        let (manifest, _) = checkpoint(&store, 1).await;
        checkpoint(&store, 2).await;
        let path = file(&dir, 2, MANIFEST);
        let json = std::fs::read(&path).unwrap();
        std::fs::write(&path, &json[..json.len() / 2]).unwrap();
        let loaded = store.load_latest(None).await.unwrap().unwrap();
        assert_eq!(loaded.manifest, manifest);
        assert_eq!(loaded.skipped.len(), 1);
        let reason = &loaded.skipped[0];
        assert!(reason.starts_with("checkpoint 2: ") && reason.contains(MANIFEST), "{reason}");
        assert!(reason.contains(&store.location()), "{reason}");
    }

    #[tokio::test]
    async fn a_missing_part_falls_back_to_the_previous_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::local(dir.path()).unwrap();
        let (manifest, parts) = checkpoint(&store, 1).await;
        checkpoint(&store, 2).await;
        std::fs::remove_file(file(&dir, 2, "window_0-1.part")).unwrap();
        let loaded = store.load_latest(None).await.unwrap().unwrap();
        assert_eq!((&loaded.manifest, loaded_parts(&loaded)), (&manifest, parts));
        assert!(loaded.skipped[0].contains("window_0-1.part") && loaded.skipped[0].contains("missing"));
    }

    #[tokio::test]
    async fn a_part_with_a_flipped_byte_falls_back_to_the_previous_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::local(dir.path()).unwrap();
        let (manifest, _) = checkpoint(&store, 1).await;
        let (two, _) = checkpoint(&store, 2).await;
        let path = file(&dir, 2, "window_0-0.part");
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[30] ^= 0x04;
        std::fs::write(&path, &bytes).unwrap();
        let loaded = store.load_latest(None).await.unwrap().unwrap();
        assert_eq!(loaded.manifest, manifest);
        assert!(loaded.skipped[0].contains("CRC-32C"), "{:?}", loaded.skipped);
        assert!(store.read_part(2, &two.parts[0]).await.unwrap().is_err());
        assert!(store.read_part(2, &two.parts[1]).await.unwrap().is_ok());
    }

    #[tokio::test]
    async fn an_intact_part_of_another_checkpoint_put_in_place_of_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::local(dir.path()).unwrap();
        let (manifest, _) = checkpoint(&store, 1).await;
        let (three, _) = checkpoint(&store, 3).await;
        // Same uid, subtask and size: only the content tells them apart.
        let (older, newer) = (file(&dir, 1, "window_0-0.part"), file(&dir, 3, "window_0-0.part"));
        assert_eq!(std::fs::metadata(&older).unwrap().len(), std::fs::metadata(&newer).unwrap().len());
        std::fs::copy(&older, &newer).unwrap();
        assert!(store.read_part(3, &three.parts[0]).await.unwrap().is_err());
        let loaded = store.load_latest(None).await.unwrap().unwrap();
        assert_eq!(loaded.manifest, manifest);
        assert!(loaded.skipped[0].contains("CRC-32C"), "{:?}", loaded.skipped);
    }

    #[tokio::test]
    async fn a_manifest_of_another_version_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::local(dir.path()).unwrap();
        checkpoint(&store, 1).await;
        checkpoint(&store, 2).await;
        let path = file(&dir, 2, MANIFEST);
        let mut json: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        json["format_version"] = 1.into();
        std::fs::write(&path, serde_json::to_vec(&json).unwrap()).unwrap();
        let Err(Error::Checkpoint(message)) = store.load_latest(None).await else {
            panic!("a checkpoint of version 1 was not refused");
        };
        let needles = ["checkpoint 2", "version 1", &format!("version {FORMAT_VERSION}"), "--from-scratch"];
        for needle in needles.iter().chain([&store.location().as_str()]) {
            assert!(message.contains(needle), "{needle:?} not in {message:?}");
        }
        assert_eq!(store.read_manifest(2).await.unwrap(), Err(Candidate::Incompatible { id: 2, found: 1 }));
    }

    #[tokio::test]
    async fn no_checkpoints_load_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::local(dir.path()).unwrap();
        assert!(store.load_latest(None).await.unwrap().is_none());
        // Neither do a failed checkpoint's parts nor unrelated files.
        store.write_part(1, "source#0", 0, &part(1)).await.unwrap();
        std::fs::create_dir(dir.path().join("chk-2")).unwrap();
        std::fs::write(dir.path().join("notes.txt"), "hello").unwrap();
        assert_eq!(store.list().await.unwrap(), (vec![], vec![1]));
        assert!(store.load_latest(None).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn delete_removes_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::local(dir.path()).unwrap();
        checkpoint(&store, 1).await;
        checkpoint(&store, 2).await;
        store.write_part(3, "source#0", 0, &part(1)).await.unwrap();
        // A staging file of an interrupted put, which object_store does not list.
        std::fs::write(file(&dir, 3, "source_0-1.part#1"), "partial").unwrap();
        store.delete(1).await.unwrap();
        store.delete(3).await.unwrap();
        store.delete(4).await.unwrap();
        assert!(!dir.path().join(dir_name(1)).exists());
        assert!(!dir.path().join(dir_name(3)).exists());
        assert_eq!(store.list().await.unwrap(), (vec![2], vec![]));
    }

    #[tokio::test]
    async fn a_tmp_manifest_alone_is_not_published() {
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::local(dir.path()).unwrap();
        checkpoint(&store, 1).await;
        std::fs::rename(file(&dir, 1, MANIFEST), file(&dir, 1, MANIFEST_TMP)).unwrap();
        assert_eq!(store.list().await.unwrap(), (vec![], vec![1]));
        assert!(store.load_latest(None).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn parts_sharing_a_file_are_not_published() {
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::local(dir.path()).unwrap();
        let a = store.write_part(1, "a#0", 0, &part(1)).await.unwrap();
        let b = store.write_part(1, "a_0", 0, &part(2)).await.unwrap();
        assert_eq!(a.file, b.file);
        let manifest = Manifest {
            format_version: FORMAT_VERSION,
            pipeline: "test".into(),
            id: 1,
            created_ms: 0,
            parallelism: 1,
            max_parallelism: 1024,
            finished: true,
            parts: vec![a, b],
        };
        assert!(store.publish(&manifest).await.is_err());
        assert_eq!(store.list().await.unwrap(), (vec![], vec![1]));
    }

    #[test]
    fn names() {
        assert_eq!(dir_name(42), "chk-00000000000000000042");
        assert_eq!(parse_dir_name(&dir_name(u64::MAX)), Some(u64::MAX));
        assert_eq!(parse_dir_name("chk-42"), None);
        assert_eq!(parse_dir_name("chk-0000000000000000004x"), None);
        assert_eq!(part_file_name("map/é#3", 7), "map___3-7.part");
    }
}
