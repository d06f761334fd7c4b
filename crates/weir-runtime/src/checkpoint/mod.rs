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
pub use state::{KEY_GROUPS, StateReader, StateWriter, decode, encode, subtask_for_hash};
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
pub struct SplitPositions(BTreeMap<u32, Vec<u8>>);

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
}

impl Restored {
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
    fn discard_uncommitted(&self, restored: Option<u64>) -> Result<()>;
}

/// Commits a source's positions; see [`Source::commit`](crate::Source::commit).
pub(crate) trait PositionCommitter: Send + Sync {
    fn commit(&self, positions: &SplitPositions) -> Result<()>;
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
    uids: Mutex<HashMap<String, usize>>,
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
            committers: Mutex::default(),
            sources: Mutex::default(),
        })
    }

    /// A stable id for the next operator of `kind` (`window#0`, `window#1`, …): the same
    /// program gets the same ids, which is how a restored operator finds its state. Registers
    /// `subtasks` parts that acknowledge every checkpoint.
    pub(crate) fn register(&self, kind: &str, subtasks: usize) -> Arc<str> {
        let mut uids = self.uids.lock().unwrap_or_else(PoisonError::into_inner);
        let n = uids.entry(kind.to_owned()).or_insert(0);
        let uid = format!("{kind}#{n}");
        *n += 1;
        self.parts.fetch_add(subtasks, Ordering::Relaxed);
        uid.into()
    }

    pub(crate) fn parts(&self) -> usize {
        self.parts.load(Ordering::Relaxed)
    }

    pub(crate) fn take_acks(&self) -> Option<mpsc::UnboundedReceiver<Ack>> {
        self.acks_rx.lock().unwrap_or_else(PoisonError::into_inner).take()
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
    pub(crate) fn ack(&self, of: AckOf, snapshot: std::result::Result<PartSnapshot, String>, source: bool) {
        // The coordinator is gone only when the job is over.
        let _ = self.shared.acks.send(Ack {
            of,
            uid: self.uid.clone(),
            subtask: self.subtask as u32,
            snapshot,
            source,
        });
    }

    /// This part's restored state, read through a [`StateReader`] for its key groups.
    pub(crate) fn reader(&self) -> Option<StateReader<'_>> {
        self.shared
            .restored_parts(&self.uid)
            .map(|parts| StateReader::new(parts, self.subtask, self.parallelism))
    }
}
