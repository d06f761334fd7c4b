//! Checkpoints: consistent snapshots of a running pipeline, and restoring from them.
//!
//! The scheme is Flink's asynchronous barrier snapshotting (Chandy–Lamport for DAGs):
//!
//! 1. The coordinator starts checkpoint `c` (on its interval, or on demand) by telling every
//!    source subtask. Between two batches, each source records its positions (log offsets per
//!    partition, file path and byte offset), acknowledges them and sends `Barrier(c)` down its
//!    chain.
//! 2. Every operator that a barrier passes snapshots its state into a [`StateWriter`] and
//!    acknowledges. A task with several inputs *aligns* the barrier: an input that delivered it
//!    is not read again until every input did (see `exchange::Inputs`), so each snapshot holds
//!    exactly the effect of the records before the barrier on every input.
//! 3. Sinks *pre-commit* at the barrier: what they wrote since the previous one is made durable
//!    but not visible (an in-progress file, records held back), and the handle that makes it
//!    visible (the committable) is acknowledged.
//! 4. When every part acknowledged, the coordinator writes the parts and then the manifest (see
//!    `store`): from that moment the checkpoint is *complete*. Only then are the sources'
//!    positions committed (to the log's consumer group) and the sinks' committables committed,
//!    and older checkpoints pruned. At most one checkpoint is in flight; one that does not
//!    complete within its timeout is abandoned (a newer barrier overtakes it) and counted as
//!    failed.
//!
//! # Restore
//!
//! A pipeline started on a checkpoint location restores its latest complete checkpoint (a
//! corrupt or partial one is skipped with a warning; one written by an incompatible version is
//! refused): the committables of that checkpoint are committed again (commits are idempotent,
//! the crash may have come between completing and committing), what sinks left uncommitted is
//! discarded, every operator restores the key groups it owns (the parallelism may differ, see
//! `state`), window operators their watermark, and sources resume at the saved positions.
//! Records after the checkpoint are read again and their results, never committed before,
//! are produced again: exactly once in state and in transactional sinks' output.
//!
//! When the restored checkpoint is older than the newest one committed (the newer ones were
//! damaged or deleted), the sinks hold output the restore will produce again.
//! [`Sink::discard_uncommitted`](crate::Sink::discard_uncommitted) then rolls each sink back to
//! what the restored checkpoint committed, or refuses the start if it cannot (a log sink: a
//! topic cannot take records back). Output is never committed twice in silence. Every sink is
//! first asked whether it can roll back ([`Sink::check_restore`](crate::Sink::check_restore)),
//! and only when all can is any sink committed again or rolled back: a refusal leaves every
//! output byte for byte as it was.
//!
//! A sink whose commits cannot be repeated (a Kafka transaction aborted when its producer
//! died) bounds the restore with [`Sink::restore_limit`](crate::Sink::restore_limit): a
//! checkpoint completed after the last commit that sink saw is not restored, and its input is
//! processed again.
//!
//! A start refuses, unless configured to start from scratch:
//! - checkpoints exist but none is usable (`decide`);
//! - no checkpoint exists, but a sink reports output committed by an earlier run
//!   ([`Sink::committed_output`](crate::Sink::committed_output)) or a source reports committed
//!   progress ([`Source::committed_progress`](crate::Source::committed_progress)): the
//!   checkpoints were deleted, and starting over would replay the input into that output;
//! - the checkpoint holds state of an operator id the pipeline does not have (see below),
//!   unless [`Checkpointing::allow_non_restored_state`];
//! - a sink's saved [`Sink::destination`](crate::Sink::destination) differs from its current
//!   one (e.g. a relative path resolved in another working directory).
//!
//! New checkpoints are numbered after every checkpoint in the location and every checkpoint a
//! sink reports committed, so an id is never reused for other output.
//!
//! # Operator ids
//!
//! State is saved and found by operator id: the one given with
//! [`Stream::uid`](crate::Stream::uid), else `<kind>-<hash>` where the hash (CRC-32C) is over a
//! description of what is upstream of the operator (its sources' names and the kinds of the
//! operators between, or the uid of the nearest named operator upstream). Ids do not depend on
//! an operator's position among the others, so they survive rebuilding the same program, and
//! an operator added upstream of an unnamed one changes its id: the restore refuses the old
//! state rather than hand it to another operator.
//!
//! # Format version
//!
//! Checkpoints are written in format version 2 (see `format`): key groups by
//! [`key_hash`](crate::key_hash), the CRC-32C of the key's postcard encoding (version 1 used
//! std's unspecified `DefaultHasher`, and ids by position). A checkpoint of another version is
//! refused. A restore checks that every restored key still hashes to the key group it was saved
//! in. `tests/fixtures` holds a checkpoint of this version that CI restores.
//!
//! # The end of a job
//!
//! A part that ends acknowledges its last state. For a later checkpoint, a part that ended
//! counts with that last state. When every source was exhausted and every part ended, the
//! coordinator completes a last checkpoint marked *finished* and commits it, so the output of
//! the final windows is committed exactly once too. A stop (Ctrl-C, SIGTERM,
//! [`StopHandle`](crate::StopHandle)) takes a *savepoint*: sources send a last barrier and end
//! without the final watermark, windows keep their state, and the job resumes from it on the
//! next start.
//!
//! # What is not in checkpoints
//!
//! Records sent to the late side output and to dead letters are delivered at least once; the
//! state of a [`KeyedProcess`](crate::KeyedProcess) is not checkpointed. Sinks that do not
//! pre-commit (stdout, collectors) are at least once: after a restore they see again what
//! followed the checkpoint.

mod coordinator;
mod decide;
mod format;
mod state;
mod store;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use tokio::sync::{mpsc, watch};

pub(crate) use coordinator::Coordinator;
pub(crate) use format::PartSnapshot;
pub use state::{KEY_GROUPS, StateReader, StateWriter, decode, encode, key_group, subtask_for_hash};
pub(crate) use store::CheckpointStore;

use crate::error::{Error, Result};

/// How a pipeline checkpoints; see [`PipelineBuilder::checkpointing`](crate::PipelineBuilder::checkpointing).
#[derive(Clone)]
pub struct Checkpointing {
    location: Location,
    interval: Duration,
    keep: usize,
    timeout: Duration,
    from_scratch: bool,
    allow_non_restored_state: bool,
}

#[derive(Clone)]
enum Location {
    Dir(PathBuf),
    Store(Arc<dyn object_store::ObjectStore>, String),
}

impl std::fmt::Debug for Checkpointing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let location = match &self.location {
            Location::Dir(d) => d.display().to_string(),
            Location::Store(s, prefix) => format!("{s}/{prefix}"),
        };
        f.debug_struct("Checkpointing")
            .field("location", &location)
            .field("interval", &self.interval)
            .field("keep", &self.keep)
            .field("timeout", &self.timeout)
            .field("from_scratch", &self.from_scratch)
            .field("allow_non_restored_state", &self.allow_non_restored_state)
            .finish()
    }
}

impl Checkpointing {
    /// Checkpoints in a local directory (created if missing), every 10 s, keeping the last 3.
    pub fn to_dir(dir: impl Into<PathBuf>) -> Self {
        Self::with_location(Location::Dir(dir.into()))
    }

    /// Checkpoints on an object store (S3, GCS, Azure, a shared filesystem) under `prefix`.
    pub fn to_store(store: Arc<dyn object_store::ObjectStore>, prefix: impl Into<String>) -> Self {
        Self::with_location(Location::Store(store, prefix.into()))
    }

    fn with_location(location: Location) -> Self {
        Checkpointing {
            location,
            interval: Duration::from_secs(10),
            keep: 3,
            timeout: Duration::from_secs(600),
            from_scratch: false,
            allow_non_restored_state: false,
        }
    }

    /// Time between checkpoints (from one's completion to the next one's start). Default: 10 s.
    pub fn interval(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }

    /// Complete checkpoints kept; older ones are deleted. Default: 3.
    pub fn keep(mut self, n: usize) -> Self {
        self.keep = n;
        self
    }

    /// A checkpoint not complete after this is abandoned and counted as failed. Default: 10 min.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Ignores existing checkpoints: the job starts over (new checkpoints are numbered after the
    /// old ones, which are pruned as usual). Default: `false`.
    pub fn from_scratch(mut self, yes: bool) -> Self {
        self.from_scratch = yes;
        self
    }

    /// Restores a checkpoint that holds state of operators this pipeline does not have (an
    /// operator was removed, or its uid changed), dropping that state. Default: `false`, such a
    /// restore is refused with an error naming the operators (as Flink's
    /// `allowNonRestoredState`).
    pub fn allow_non_restored_state(mut self, yes: bool) -> Self {
        self.allow_non_restored_state = yes;
        self
    }

    pub(crate) fn validate(&self) -> Result<()> {
        if self.interval.is_zero() {
            return Err(Error::InvalidConfig {
                field: "checkpoint interval",
                reason: "must be above zero".into(),
            });
        }
        if self.keep == 0 {
            return Err(Error::InvalidConfig {
                field: "checkpoints kept",
                reason: "must be at least 1".into(),
            });
        }
        if self.timeout.is_zero() {
            return Err(Error::InvalidConfig {
                field: "checkpoint timeout",
                reason: "must be above zero".into(),
            });
        }
        if let Location::Dir(d) = &self.location
            && d.as_os_str().is_empty()
        {
            return Err(Error::InvalidConfig {
                field: "checkpoint location",
                reason: "must not be empty".into(),
            });
        }
        Ok(())
    }

    pub(crate) fn store(&self) -> Result<CheckpointStore> {
        match &self.location {
            Location::Dir(d) => CheckpointStore::local(d),
            Location::Store(s, prefix) => Ok(CheckpointStore::with_store(s.clone(), prefix)),
        }
    }
}

/// Positions of a source's splits saved in a checkpoint: split → what the source encoded (see
/// [`encode`]). A reader given them resumes where the checkpoint was taken.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SplitPositions(pub(crate) BTreeMap<u32, Vec<u8>>);

impl SplitPositions {
    /// The saved position of `split`.
    pub fn get(&self, split: u32) -> Option<&[u8]> {
        self.0.get(&split).map(Vec::as_slice)
    }

    /// Every split and its position.
    pub fn iter(&self) -> impl Iterator<Item = (u32, &[u8])> {
        self.0.iter().map(|(s, p)| (*s, p.as_slice()))
    }

    /// Whether nothing was saved (a fresh start).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub(crate) fn from_parts<'a>(parts: impl IntoIterator<Item = &'a PartSnapshot>) -> Self {
        SplitPositions(parts.into_iter().flat_map(|p| p.positions.iter().cloned()).collect())
    }
}

/// What a checkpoint saved, by operator uid (each a list of its old subtasks' parts).
#[derive(Debug, Default)]
pub(crate) struct Restored {
    pub(crate) id: u64,
    pub(crate) parts: HashMap<String, Vec<PartSnapshot>>,
    /// Operators renamed by `uid()`: default uid → chosen uid.
    pub(crate) renamed: HashMap<Arc<str>, Arc<str>>,
}

impl Restored {
    /// The uid of the operator registered as `default`.
    fn name_of<'a>(&'a self, default: &'a Arc<str>) -> &'a str {
        self.renamed.get(default).map_or(default, |u| u)
    }

    pub(crate) fn of(&self, uid: &str) -> &[PartSnapshot] {
        self.parts.get(uid).map_or(&[], Vec::as_slice)
    }
}

/// Which checkpoint an acknowledgement is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AckOf {
    /// The barrier of this checkpoint passed the part.
    Barrier(u64),
    /// The part ended; `exhausted` when a source ran out of input (not stopped).
    End { exhausted: bool },
}

/// A part's acknowledgement: its snapshot, or why it could not take one.
#[derive(Debug)]
pub(crate) struct Ack {
    pub(crate) of: AckOf,
    pub(crate) uid: Arc<str>,
    pub(crate) subtask: u32,
    pub(crate) snapshot: std::result::Result<PartSnapshot, String>,
    /// Whether the part is a source (sources decide whether the job finished).
    pub(crate) source: bool,
}

/// What the coordinator asks sources to do.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Trigger {
    /// The checkpoint to inject a barrier for (0: none yet).
    pub(crate) id: u64,
    /// Stop after the barrier (a savepoint).
    pub(crate) stop: bool,
}

/// Makes a sink's committables visible; see [`Sink::commit`](crate::Sink::commit).
pub(crate) trait Committer: Send + Sync {
    fn commit(&self, checkpoint: u64, committables: &[Vec<u8>]) -> Result<()>;
    fn check_restore(&self, restored: Option<u64>) -> Result<()>;
    fn discard_uncommitted(&self, restored: Option<u64>) -> Result<()>;
    fn committed_output(&self) -> Result<Option<crate::sink::CommittedOutput>>;
    fn restore_limit(&self) -> Result<Option<u64>>;
    fn destination(&self) -> Option<String>;
}

/// Commits a source's positions; see [`Source::commit`](crate::Source::commit).
pub(crate) trait PositionCommitter: Send + Sync {
    fn commit(&self, positions: &SplitPositions) -> Result<()>;
    fn committed_progress(&self) -> Result<Option<String>>;
    fn name(&self) -> String;
}

/// A sink's or source's committer, by operator uid.
pub(crate) type Registered<C> = (Arc<str>, Arc<C>);

/// What the parts of a checkpointed pipeline share with the coordinator.
pub(crate) struct Shared {
    pub(crate) config: Checkpointing,
    pub(crate) acks: mpsc::UnboundedSender<Ack>,
    acks_rx: Mutex<Option<mpsc::UnboundedReceiver<Ack>>>,
    pub(crate) trigger: watch::Sender<Trigger>,
    pub(crate) restored: OnceLock<Option<Restored>>,
    parts: AtomicUsize,
    /// Every uid given out, the ids chosen by `uid()` included.
    uids: Mutex<std::collections::HashSet<Arc<str>>>,
    /// Operators renamed by [`Stream::uid`](crate::Stream::uid): default uid → chosen uid.
    renamed: Mutex<HashMap<Arc<str>, Arc<str>>>,
    /// See [`Pipeline::set_uid_scope`](crate::Pipeline::set_uid_scope).
    pub(crate) scope: Mutex<Option<String>>,
    pub(crate) committers: Mutex<Vec<Registered<dyn Committer>>>,
    pub(crate) sources: Mutex<Vec<Registered<dyn PositionCommitter>>>,
}

impl Shared {
    pub(crate) fn new(config: Checkpointing) -> Arc<Self> {
        let (acks, rx) = mpsc::unbounded_channel();
        Arc::new(Shared {
            config,
            acks,
            acks_rx: Mutex::new(Some(rx)),
            trigger: watch::channel(Trigger::default()).0,
            restored: OnceLock::new(),
            parts: AtomicUsize::new(0),
            uids: Mutex::default(),
            renamed: Mutex::default(),
            scope: Mutex::default(),
            committers: Mutex::default(),
            sources: Mutex::default(),
        })
    }

    /// The default id of an operator of `kind` whose input is described by `origin` (see
    /// [`default_uid`]), made unique (`#1`, `#2`, … for twins); registers `subtasks` parts that
    /// acknowledge every checkpoint.
    pub(crate) fn register(&self, kind: &str, origin: &str, subtasks: usize) -> Arc<str> {
        let scope = self.scope.lock().unwrap_or_else(PoisonError::into_inner).clone();
        let base = match scope {
            Some(scope) => default_uid(kind, &format!("scope:{scope}/{origin}")),
            None => default_uid(kind, origin),
        };
        let mut uids = self.uids.lock().unwrap_or_else(PoisonError::into_inner);
        let mut uid: Arc<str> = base.clone().into();
        let mut n = 0;
        while uids.contains(&uid) {
            n += 1;
            uid = format!("{base}#{n}").into();
        }
        uids.insert(uid.clone());
        self.parts.fetch_add(subtasks, Ordering::Relaxed);
        uid
    }

    /// Gives the operator registered as `default` the id `chosen`; an id already in use is
    /// [`Error::InvalidConfig`].
    pub(crate) fn rename(&self, default: &Arc<str>, chosen: &str) -> Result<()> {
        let mut uids = self.uids.lock().unwrap_or_else(PoisonError::into_inner);
        let chosen: Arc<str> = chosen.into();
        if chosen.is_empty() || uids.contains(&chosen) {
            return Err(Error::InvalidConfig {
                field: "operator uid",
                reason: format!("`{chosen}` is empty or already the id of another operator of the pipeline"),
            });
        }
        uids.insert(chosen.clone());
        self.renamed.lock().unwrap_or_else(PoisonError::into_inner).insert(default.clone(), chosen);
        Ok(())
    }

    /// The id of the operator registered as `default`: the one `uid()` chose, else `default`.
    pub(crate) fn uid_of(&self, default: &Arc<str>) -> Arc<str> {
        let renamed = self.renamed.lock().unwrap_or_else(PoisonError::into_inner);
        renamed.get(default).cloned().unwrap_or_else(|| default.clone())
    }

    /// The ids of every registered operator, as checkpoints name them.
    pub(crate) fn operator_uids(&self) -> std::collections::HashSet<Arc<str>> {
        let uids = self.uids.lock().unwrap_or_else(PoisonError::into_inner);
        let renamed = self.renamed.lock().unwrap_or_else(PoisonError::into_inner);
        uids.iter().filter(|u| !renamed.contains_key(*u)).cloned().collect()
    }

    pub(crate) fn parts(&self) -> usize {
        self.parts.load(Ordering::Relaxed)
    }

    pub(crate) fn take_acks(&self) -> Option<mpsc::UnboundedReceiver<Ack>> {
        self.acks_rx.lock().unwrap_or_else(PoisonError::into_inner).take()
    }

    /// [`Shared::uid_of`] without allocating, borrowed from `self` or `default`.
    fn renamed_or<'a>(&'a self, default: &'a Arc<str>) -> &'a str {
        // Renames happen while the pipeline is built, before any part reads its state: the
        // map is final here, and `Restored` keeps the names alive.
        match self.restored.get().and_then(Option::as_ref) {
            Some(r) => r.name_of(default),
            None => default,
        }
    }

    /// The restored state of `uid`, if the pipeline restored a checkpoint.
    pub(crate) fn restored_parts(&self, uid: &str) -> Option<&[PartSnapshot]> {
        self.restored.get().and_then(Option::as_ref).map(|r| r.of(uid))
    }
}

/// One part (an operator, source or sink subtask) of a checkpointed pipeline.
#[derive(Clone)]
pub(crate) struct Part {
    pub(crate) shared: Arc<Shared>,
    pub(crate) uid: Arc<str>,
    pub(crate) subtask: usize,
    pub(crate) parallelism: usize,
}

impl Part {
    /// The operator's id, as checkpoints name it (see [`Shared::uid_of`]).
    pub(crate) fn uid(&self) -> Arc<str> {
        self.shared.uid_of(&self.uid)
    }

    pub(crate) fn ack(&self, of: AckOf, snapshot: std::result::Result<PartSnapshot, String>, source: bool) {
        // The coordinator is gone only when the job is over.
        let _ = self.shared.acks.send(Ack {
            of,
            uid: self.uid(),
            subtask: self.subtask as u32,
            snapshot,
            source,
        });
    }

    /// This part's restored state, read through a [`StateReader`] for its key groups.
    pub(crate) fn reader(&self) -> Option<StateReader<'_>> {
        let uid = self.shared.renamed_or(&self.uid);
        self.shared
            .restored_parts(uid)
            .map(|parts| StateReader::new(parts, self.subtask, self.parallelism, uid))
    }
}

/// The default id of an operator of `kind` whose input `origin` describes (the sources and
/// operator kinds upstream of it, see `Stream`): `<kind>-<CRC-32C of origin, 8 hex digits>`.
/// It depends on what is upstream, not on the operator's position among the others of its
/// kind, so adding an operator elsewhere leaves it alone, and adding one upstream changes it
/// (the restore then refuses the old id's state instead of handing it to another operator).
pub(crate) fn default_uid(kind: &str, origin: &str) -> String {
    format!("{kind}-{:08x}", crc32c::crc32c(origin.as_bytes()))
}
