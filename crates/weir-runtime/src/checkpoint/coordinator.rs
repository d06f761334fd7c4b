//! The checkpoint coordinator: starts checkpoints, collects acknowledgements, completes and
//! commits them, and restores the latest one when the pipeline starts (see the module docs of
//! `checkpoint` for the protocol). All its I/O goes through [`CheckpointStore`]; what to restore
//! and what to prune are decided by the pure functions of `decide`.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError};
use tokio::time::Instant;

use tokio::sync::{mpsc, watch};

use super::format::{Manifest, PartSnapshot};
use super::{Ack, AckOf, CheckpointStore, Restored, Shared, SplitPositions, Trigger};
use crate::error::{Error, Result};
use crate::metrics::CheckpointMetrics;
use crate::sink::CommittedOutput;

type PartKey = (Arc<str>, u32);

/// A checkpoint whose barriers are on their way.
struct InFlight {
    id: u64,
    started: Instant,
    acks: HashMap<PartKey, PartSnapshot>,
}

/// Runs the checkpoints of one pipeline.
pub(crate) struct Coordinator {
    shared: Arc<Shared>,
    store: CheckpointStore,
    pipeline: String,
    parallelism: u32,
    next_id: u64,
    metrics: Option<CheckpointMetrics>,
    /// Committables of checkpoints that failed after parts pre-committed, by part, oldest
    /// first: they go with the part's next complete checkpoint (dropping them would lose the
    /// output they hold).
    carried: HashMap<PartKey, Vec<Vec<u8>>>,
}

fn is_empty(p: &PartSnapshot) -> bool {
    p.keyed.is_empty() && p.meta.is_empty() && p.positions.is_empty() && p.committables.is_empty()
}

fn now_ms() -> i64 {
    crate::time::now_ms()
}

/// Refuses a start with nothing to restore when the sinks or sources show progress an earlier
/// run committed (its checkpoints were deleted, or all of them are unusable): starting over
/// would replay the whole input into output that holds its results.
fn refuse_fresh_start(shared: &Shared, store: &CheckpointStore, outputs: &[CommittedOutput]) -> Result<()> {
    let mut found: Vec<String> = outputs.iter().map(|o| o.description.clone()).collect();
    let sources = shared.sources.lock().unwrap_or_else(PoisonError::into_inner).clone();
    for (_, s) in sources {
        if let Some(progress) = s.committed_progress()? {
            found.push(format!("source {}: {progress}", s.name()));
        }
    }
    if found.is_empty() {
        return Ok(());
    }
    Err(Error::Checkpoint(format!(
        "no checkpoint to restore in {}, but an earlier run of this pipeline committed progress: {}; \
         starting without its state would process the input again into that output. Restore its \
         checkpoints, or start over with `--from-scratch` (`Checkpointing::from_scratch`), which \
         replaces file sinks' output and appends to topics after what they hold",
        store.location(),
        found.join("; ")
    )))
}

/// Refuses a checkpoint holding state of operators this pipeline does not have (removed, or
/// their uid changed), unless `allow_non_restored_state` drops it with a warning.
fn check_operators(
    shared: &Shared,
    store: &CheckpointStore,
    id: u64,
    parts: &mut HashMap<String, Vec<PartSnapshot>>,
) -> Result<()> {
    let known = shared.operator_uids();
    let mut unknown: Vec<String> = parts.keys().filter(|u| !known.contains(u.as_str())).cloned().collect();
    if unknown.is_empty() {
        return Ok(());
    }
    unknown.sort_unstable();
    if shared.config.allow_non_restored_state {
        tracing::warn!(checkpoint = id, location = %store.location(), operators = ?unknown, "dropping the state of operators this pipeline does not have");
        parts.retain(|u, _| known.contains(u.as_str()));
        return Ok(());
    }
    let mut ours: Vec<&str> = known.iter().map(|u| &**u).collect();
    ours.sort_unstable();
    Err(Error::Checkpoint(format!(
        "checkpoint {id} in {} holds state of operators this pipeline does not have: {}; this \
         pipeline's operators are {}. Give operators the ids they had (`Stream::uid`), allow \
         dropping that state (`Checkpointing::allow_non_restored_state`), or start over with \
         `--from-scratch`",
        store.location(),
        unknown.join(", "),
        ours.join(", ")
    )))
}

/// Refuses a checkpoint whose sinks wrote to another destination than this pipeline's sinks
/// of the same uid (see [`Sink::destination`](crate::Sink::destination)).
fn check_destinations(
    shared: &Shared,
    committers: &[super::Registered<dyn super::Committer>],
    id: u64,
    parts: &HashMap<String, Vec<PartSnapshot>>,
) -> Result<()> {
    for (uid, c) in committers {
        let uid = shared.uid_of(uid);
        let Some(now) = c.destination() else { continue };
        for part in parts.get(&*uid).into_iter().flatten().filter(|p| !p.meta.is_empty()) {
            let then: String = super::decode(&part.meta)?;
            if then != now {
                return Err(Error::Checkpoint(format!(
                    "checkpoint {id}: sink `{uid}` wrote to {then}, but it now writes to {now} (was \
                     its path changed, or a relative path resolved in another working directory?); \
                     restore it with the same destination, or start over with `--from-scratch`"
                )));
            }
        }
    }
    Ok(())
}

impl Coordinator {
    /// Opens the checkpoint location and restores the latest complete checkpoint into `shared`
    /// (unless the configuration says to start from scratch): its committables are committed
    /// again, and what sinks left uncommitted is discarded.
    pub(crate) async fn restore(
        shared: Arc<Shared>,
        pipeline: &str,
        parallelism: usize,
        metrics: Option<CheckpointMetrics>,
    ) -> Result<Coordinator> {
        let store = shared.config.store()?;
        let (published, unpublished) = store.list().await?;
        let newest = published.iter().chain(&unpublished).copied().max().unwrap_or(0);
        let committers = shared.committers.lock().unwrap_or_else(PoisonError::into_inner).clone();
        let mut limit: Option<u64> = None;
        for (_, c) in &committers {
            if let Some(l) = c.restore_limit()? {
                limit = Some(limit.map_or(l, |m| m.min(l)));
            }
        }
        let loaded = if shared.config.from_scratch {
            if newest > 0 {
                tracing::info!(pipeline, location = %store.location(), "starting from scratch; existing checkpoints are ignored");
            }
            None
        } else {
            store.load_latest(limit).await?
        };
        let mut outputs = Vec::new();
        for (_, c) in &committers {
            if let Some(output) = c.committed_output()? {
                outputs.push(output);
            }
        }
        if loaded.is_none() && !shared.config.from_scratch {
            refuse_fresh_start(&shared, &store, &outputs)?;
        }
        // Ids stay above every checkpoint whose output a sink holds, even if its directory is
        // gone: a sink recognises what it committed by the id.
        let committed = outputs.iter().filter_map(|o| o.checkpoint).max().unwrap_or(0);
        let coordinator = Coordinator {
            shared: shared.clone(),
            store,
            pipeline: pipeline.to_owned(),
            parallelism: parallelism as u32,
            next_id: newest.max(committed) + 1,
            metrics,
            carried: HashMap::new(),
        };
        let restored = match loaded {
            None => None,
            Some(loaded) => {
                let mut parts: HashMap<String, Vec<PartSnapshot>> = HashMap::new();
                let mut entries = loaded.parts;
                entries.sort_by(|a, b| (&a.0.uid, a.0.subtask).cmp(&(&b.0.uid, b.0.subtask)));
                for (entry, part) in entries {
                    parts.entry(entry.uid).or_default().push(part);
                }
                let m = &loaded.manifest;
                check_operators(&shared, &coordinator.store, m.id, &mut parts)?;
                check_destinations(&shared, &committers, m.id, &parts)?;
                tracing::info!(
                    pipeline,
                    checkpoint = m.id,
                    location = %coordinator.store.location(),
                    parallelism = m.parallelism,
                    bytes = m.total_bytes(),
                    skipped_newer = loaded.skipped.len(),
                    "restoring checkpoint"
                );
                if let Some(metrics) = &coordinator.metrics {
                    metrics.restored(m.id, m.created_ms);
                }
                let renamed = shared.renamed.lock().unwrap_or_else(PoisonError::into_inner).clone();
                Some(Restored { id: m.id, parts, renamed })
            }
        };
        // Two phases: every sink says whether it can roll back before any is changed, so a
        // refusal leaves every output as it was.
        for (_, c) in &committers {
            c.check_restore(restored.as_ref().map(|r| r.id))?;
        }
        if let Some(r) = &restored {
            coordinator.commit(r.id, |uid| r.of(uid).to_vec())?;
        }
        for (_, c) in committers {
            c.discard_uncommitted(restored.as_ref().map(|r| r.id))?;
        }
        let _ = shared.restored.set(restored);
        Ok(coordinator)
    }

    /// Commits what the parts of checkpoint `id` saved: sinks' committables, then sources'
    /// positions. `parts_of(uid)` gives the parts of an operator.
    fn commit(&self, id: u64, parts_of: impl Fn(&str) -> Vec<PartSnapshot>) -> Result<()> {
        let committers = self.shared.committers.lock().unwrap_or_else(PoisonError::into_inner).clone();
        for (uid, c) in committers {
            let committables: Vec<Vec<u8>> =
                parts_of(&self.shared.uid_of(&uid)).into_iter().flat_map(|p| p.committables).collect();
            if !committables.is_empty() {
                c.commit(id, &committables)?;
            }
        }
        let sources = self.shared.sources.lock().unwrap_or_else(PoisonError::into_inner).clone();
        for (uid, s) in sources {
            let parts = parts_of(&self.shared.uid_of(&uid));
            let positions = SplitPositions::from_parts(&parts);
            if !positions.is_empty() {
                s.commit(&positions)?;
            }
        }
        Ok(())
    }

    /// Runs until every part ended (or the task is aborted because the job failed). `stop`
    /// turning true takes a savepoint; `demand` starts a checkpoint now.
    pub(crate) async fn run(
        mut self,
        mut stop: watch::Receiver<bool>,
        mut demand: mpsc::UnboundedReceiver<()>,
    ) -> Result<()> {
        let Some(mut acks) = self.shared.take_acks() else {
            return Err(Error::Checkpoint("the coordinator of this pipeline already ran".into()));
        };
        let total = self.shared.parts();
        let interval = self.shared.config.interval;
        let timeout = self.shared.config.timeout;
        let mut ended: HashMap<PartKey, PartSnapshot> = HashMap::new();
        let mut stopped = false;
        let mut stopping = false;
        let mut in_flight: Option<InFlight> = None;
        let mut next_at = Instant::now() + interval;
        while ended.len() < total {
            let deadline = in_flight.as_ref().map_or(next_at, |f| f.started + timeout);
            tokio::select! {
                ack = acks.recv() => {
                    let Some(ack) = ack else { break };
                    self.on_ack(ack, &mut in_flight, &mut ended, &mut stopped);
                }
                () = tokio::time::sleep_until(deadline), if !stopping => {
                    match in_flight.take() {
                        Some(f) => self.abandon(f, &format!("not complete after {timeout:?}")),
                        None => in_flight = Some(self.start(false)),
                    }
                    next_at = Instant::now() + interval;
                }
                changed = stop.changed(), if !stopping => {
                    if changed.is_ok() && *stop.borrow() {
                        stopping = true;
                        if let Some(f) = in_flight.take() {
                            self.abandon(f, "overtaken by the savepoint of a stop");
                        }
                        tracing::info!(pipeline = %self.pipeline, checkpoint = self.next_id, "stop requested: taking a savepoint");
                        in_flight = Some(self.start(true));
                    }
                }
                Some(()) = demand.recv(), if in_flight.is_none() && !stopping => {
                    in_flight = Some(self.start(false));
                }
            }
            if let Some(f) = in_flight.take_if(|f| {
                f.acks.len() + ended.keys().filter(|k| !f.acks.contains_key(*k)).count() >= total
            }) {
                let InFlight { id, started, mut acks } = f;
                let stand_ins: Vec<PartKey> =
                    ended.keys().filter(|k| !acks.contains_key(*k)).cloned().collect();
                for (k, part) in acks.iter_mut() {
                    if let Some(mut earlier) = self.carried.remove(k) {
                        earlier.append(&mut part.committables);
                        part.committables = earlier;
                    }
                }
                for k in &stand_ins {
                    acks.insert(k.clone(), ended[k].clone());
                }
                match self.complete(id, started, &acks, false).await? {
                    // What an ended part pre-committed is committed now, once: later
                    // checkpoints keep its state, not its committables.
                    Ok(()) => {
                        for k in &stand_ins {
                            if let Some(p) = ended.get_mut(k) {
                                p.committables.clear();
                            }
                        }
                    }
                    Err(e) => {
                        for k in &stand_ins {
                            acks.remove(k);
                        }
                        self.abandon(InFlight { id, started, acks }, &e.to_string());
                    }
                }
                next_at = Instant::now() + interval;
            }
        }
        if ended.len() >= total && !stopped {
            // Every source ran out of input: the last checkpoint commits the final output.
            let id = self.next_id;
            self.next_id += 1;
            for (k, part) in ended.iter_mut() {
                if let Some(mut earlier) = self.carried.remove(k) {
                    earlier.append(&mut part.committables);
                    part.committables = earlier;
                }
            }
            self.complete(id, Instant::now(), &ended, true).await??;
        }
        Ok(())
    }

    fn start(&mut self, stop: bool) -> InFlight {
        let id = self.next_id;
        self.next_id += 1;
        tracing::debug!(pipeline = %self.pipeline, checkpoint = id, "checkpoint started");
        self.shared.trigger.send_replace(Trigger { id, stop });
        InFlight { id, started: Instant::now(), acks: HashMap::new() }
    }

    fn on_ack(
        &mut self,
        ack: Ack,
        in_flight: &mut Option<InFlight>,
        ended: &mut HashMap<PartKey, PartSnapshot>,
        stopped: &mut bool,
    ) {
        let key = (ack.uid, ack.subtask);
        let snapshot = match ack.snapshot {
            Ok(s) => s,
            Err(reason) => {
                let reason = format!("{}[{}]: {reason}", key.0, key.1);
                if let Some(f) = in_flight.take() {
                    self.abandon(f, &reason);
                } else {
                    tracing::warn!(pipeline = %self.pipeline, reason = %reason, "a part could not snapshot its state");
                }
                return;
            }
        };
        match ack.of {
            AckOf::Barrier(id) => match in_flight.as_mut().filter(|f| f.id == id) {
                Some(f) => {
                    f.acks.insert(key, snapshot);
                }
                // The barrier of an abandoned checkpoint reached a sink: keep what it
                // pre-committed for the next complete checkpoint.
                None => self.carry(key, snapshot.committables),
            },
            AckOf::End { exhausted } => {
                if ack.source && !exhausted {
                    *stopped = true;
                }
                ended.insert(key, snapshot);
            }
        }
    }

    /// Gives up checkpoint `f`, keeping what its parts pre-committed.
    fn abandon(&mut self, f: InFlight, reason: &str) {
        for (key, part) in f.acks {
            self.carry(key, part.committables);
        }
        self.failed(f.id, reason);
    }

    fn carry(&mut self, key: PartKey, committables: Vec<Vec<u8>>) {
        if !committables.is_empty() {
            self.carried.entry(key).or_default().extend(committables);
        }
    }

    fn failed(&self, id: u64, reason: &str) {
        tracing::warn!(pipeline = %self.pipeline, checkpoint = id, reason, "checkpoint failed");
        if let Some(m) = &self.metrics {
            m.failed.inc();
        }
    }

    /// Writes the parts and the manifest of checkpoint `id`, then commits it and prunes.
    ///
    /// `Ok(Err(e))`: writing failed; the checkpoint is not complete and the job goes on.
    /// `Err(e)`: committing a complete checkpoint failed; the job must fail, and a restart
    /// commits it again.
    async fn complete(
        &self,
        id: u64,
        started: Instant,
        parts: &HashMap<PartKey, PartSnapshot>,
        finished: bool,
    ) -> Result<Result<()>> {
        if let Err(e) = self.write(id, parts, finished, started).await {
            return Ok(Err(e));
        }
        self.commit(id, |uid| {
            parts.iter().filter(|((u, _), _)| &**u == uid).map(|(_, p)| p.clone()).collect()
        })
        .map_err(|e| {
            Error::Checkpoint(format!("checkpoint {id} is complete but committing it failed: {e}"))
        })?;
        self.prune(id).await;
        Ok(Ok(()))
    }

    /// Writes the parts, then publishes the manifest: the checkpoint is complete on return.
    async fn write(
        &self,
        id: u64,
        parts: &HashMap<PartKey, PartSnapshot>,
        finished: bool,
        started: Instant,
    ) -> Result<()> {
        let mut entries = Vec::new();
        let mut sorted: Vec<_> = parts.iter().filter(|(_, p)| !is_empty(p)).collect();
        sorted.sort_by(|a, b| a.0.cmp(b.0));
        for ((uid, subtask), part) in sorted {
            entries.push(self.store.write_part(id, uid, *subtask, part).await?);
        }
        let manifest = Manifest {
            format_version: super::format::FORMAT_VERSION,
            pipeline: self.pipeline.clone(),
            id,
            created_ms: now_ms(),
            parallelism: self.parallelism,
            max_parallelism: super::KEY_GROUPS,
            finished,
            parts: entries,
        };
        self.store.publish(&manifest).await?;
        let took = started.elapsed();
        tracing::debug!(pipeline = %self.pipeline, checkpoint = id, bytes = manifest.total_bytes(), ?took, finished, "checkpoint complete");
        if let Some(m) = &self.metrics {
            m.completed(id, took, manifest.total_bytes(), manifest.created_ms);
        }
        Ok(())
    }

    /// Deletes what the retention leaves out; a failure is logged, not fatal (the next
    /// checkpoint tries again).
    async fn prune(&self, current: u64) {
        let listed = self.store.list().await;
        let result = match listed {
            Ok((published, unpublished)) => {
                let doomed = super::decide::prune(
                    &published,
                    &unpublished,
                    self.shared.config.keep,
                    Some(current + 1),
                );
                let mut result = Ok(());
                for id in doomed {
                    if let Err(e) = self.store.delete(id).await {
                        result = Err(e);
                    }
                }
                result
            }
            Err(e) => Err(e),
        };
        if let Err(e) = result {
            tracing::warn!(pipeline = %self.pipeline, error = %e, "could not prune old checkpoints");
        }
    }
}
