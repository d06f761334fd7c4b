//! Feature views in a pipeline: the operator that keeps their state, and lookups into it.

use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use serde::Serialize;
use serde::de::DeserializeOwned;
use weir_runtime::{
    Batch, Collector, DropReason, Operator, StateReader, StateStats, StateWriter, Stream, Timestamp,
    key_hash, subtask_for_hash,
};

use crate::error::Result;
use crate::state::{Columns, Entity, FeatureState, empty_row, now_ms};
use crate::view::{FeatureRow, FeatureView};

type Shard<K, T> = Arc<RwLock<FeatureState<K, T>>>;

/// The shards of one attached view, in subtask order, and the late count restored from a
/// checkpoint.
struct Registry<K, T> {
    shards: RwLock<Vec<Shard<K, T>>>,
    restored_late: AtomicU64,
}

/// The operator that keeps a [`FeatureView`]'s state in a pipeline, after a `key_by` on the
/// view's entity (see [`FeatureView::attach`], which adds it). Each subtask keeps the entities
/// of its key groups; [`FeatureLookup`] reads them.
///
/// Per batch: the view's columns are extracted without a lock, then the subtask's state is
/// locked once for writing and every event applied. Its output is the late events (dropped,
/// and counted as the job's late records); watermarks advance the state.
pub struct FeatureOperator<K, T> {
    view: FeatureView<K, T>,
    shard: Shard<K, T>,
    registry: Arc<Registry<K, T>>,
    columns: Columns<K>,
    late: Vec<usize>,
}

impl<K, T> std::fmt::Debug for FeatureOperator<K, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FeatureOperator").field("view", &self.view.name()).finish_non_exhaustive()
    }
}

fn read<S>(lock: &RwLock<S>) -> std::sync::RwLockReadGuard<'_, S> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

fn write<S>(lock: &RwLock<S>) -> std::sync::RwLockWriteGuard<'_, S> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}

impl<K: Hash + Eq + Clone, T> FeatureOperator<K, T> {
    /// The operator of `view`; each clone (one per subtask, made by
    /// [`Stream::operator`](weir_runtime::Stream::operator)) is a shard of the state that
    /// [`FeatureOperator::lookup`] reads.
    pub fn new(view: FeatureView<K, T>) -> Self {
        let shard = Arc::new(RwLock::new(FeatureState::new(view.clone())));
        let registry =
            Arc::new(Registry { shards: RwLock::new(Vec::new()), restored_late: AtomicU64::new(0) });
        FeatureOperator { view, shard, registry, columns: Columns::default(), late: Vec::new() }
    }

    /// Lookups into the state of this operator's clones.
    pub fn lookup(&self) -> FeatureLookup<K, T> {
        FeatureLookup { view: self.view.clone(), registry: self.registry.clone() }
    }
}

impl<K: Hash + Eq + Clone, T> Clone for FeatureOperator<K, T> {
    /// A new shard of the same view, registered for lookups after those cloned before it.
    fn clone(&self) -> Self {
        let shard = Arc::new(RwLock::new(FeatureState::new(self.view.clone())));
        write(&self.registry.shards).push(shard.clone());
        FeatureOperator {
            view: self.view.clone(),
            shard,
            registry: self.registry.clone(),
            columns: Columns::default(),
            late: Vec::new(),
        }
    }
}

/// Meta a subtask saves: `(watermark, late events it dropped since the restore, late events
/// restored, the view's state layout)`.
type Meta = (Timestamp, u64, u64, String);

impl<K, T> Operator<T, T> for FeatureOperator<K, T>
where
    K: Hash + Eq + Clone + Send + Sync + Serialize + DeserializeOwned + 'static,
    T: Send + Sync + 'static,
{
    fn process_batch(&mut self, batch: Batch<T>, out: &mut Collector<T>) {
        self.columns.fill(&self.view.def, &batch.records);
        self.late.clear();
        write(&self.shard).apply_columns(&mut self.columns, &mut self.late);
        if self.late.is_empty() {
            return;
        }
        out.dropped(DropReason::Late, self.late.len() as u64);
        let timed = batch.timestamps.len() == batch.records.len();
        let timestamps =
            if timed { self.late.iter().map(|&i| batch.timestamps[i]).collect() } else { Vec::new() };
        let mut late = self.late.iter().peekable();
        let records = batch
            .records
            .into_iter()
            .enumerate()
            .filter_map(|(i, r)| late.next_if(|&&l| l == i).map(|_| r))
            .collect();
        let mut late_batch = Batch::new(records);
        late_batch.timestamps = timestamps;
        out.batch(late_batch);
    }

    /// Advances the state, except for the end of a bounded input's `Timestamp::MAX`, which
    /// would prune everything: after a bounded job the state stays as of its last watermark.
    fn on_watermark(&mut self, watermark: Timestamp, out: &mut Collector<T>) {
        if watermark < Timestamp::MAX {
            write(&self.shard).advance(watermark);
        }
        out.watermark(watermark);
    }

    /// Saves each entity under its key, and the watermark, the late counts and the view's
    /// state layout as the subtask's meta.
    fn snapshot(&mut self, state: &mut StateWriter) -> weir_runtime::Result<()> {
        let shard = read(&self.shard);
        let (watermark, late) = shard.meta();
        let restored = self.registry.restored_late.load(Ordering::Relaxed);
        state.set_meta::<Meta>(&(watermark, late, restored, self.view.def.layout()))?;
        shard.entries().try_for_each(|(k, e)| state.put(k, e))
    }

    /// Restores the entities of the key groups this subtask owns, the lowest saved watermark
    /// and the late count (once, whatever the parallelism). State of a view whose layout
    /// changed (inputs, partials per tile, lifetime features, tile length) is refused.
    fn restore(&mut self, state: &StateReader<'_>) -> weir_runtime::Result<()> {
        let metas: Vec<Meta> = state.metas()?;
        let layout = self.view.def.layout();
        if let Some(old) = metas.iter().map(|m| &m.3).find(|l| **l != layout) {
            let name = self.view.name();
            return Err(weir_runtime::Error::Checkpoint(format!(
                "feature view {name}: the checkpoint holds the state of another definition ({old}, now {layout}); \
                 give the changed view a new name (e.g. {name}@v2), or start from scratch"
            )));
        }
        let watermark = metas.iter().map(|m| m.0).min().unwrap_or(Timestamp::MIN);
        let late = metas.iter().map(|m| m.1).sum::<u64>() + metas.iter().map(|m| m.2).max().unwrap_or(0);
        // Every subtask stores the same total: the count is restored once, at any parallelism.
        self.registry.restored_late.store(late, Ordering::Relaxed);
        let entities = state.entries::<K, Entity>().collect::<weir_runtime::Result<Vec<_>>>()?;
        write(&self.shard).restore(watermark, 0, entities);
        Ok(())
    }

    fn state_stats(&self) -> Option<StateStats> {
        let keys = self.shard.try_read().map_or(0, |s| s.entities() as u64);
        Some(StateStats { keys, ..StateStats::default() })
    }
}

/// Lookups into the state of an attached [`FeatureView`], from any thread, while the pipeline
/// runs and after it ended. Cheap to clone.
///
/// Read-your-writes: a lookup made after the operator handled a batch sees its events (each
/// batch is applied under the subtask's write lock, lookups take its read lock). A lookup
/// before the pipeline started sees no entity.
pub struct FeatureLookup<K, T> {
    view: FeatureView<K, T>,
    registry: Arc<Registry<K, T>>,
}

impl<K, T> Clone for FeatureLookup<K, T> {
    fn clone(&self) -> Self {
        FeatureLookup { view: self.view.clone(), registry: self.registry.clone() }
    }
}

impl<K, T> std::fmt::Debug for FeatureLookup<K, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FeatureLookup").field("view", &self.view.name()).finish_non_exhaustive()
    }
}

impl<K, T> FeatureLookup<K, T>
where
    K: Hash + Eq + Clone + Serialize,
{
    /// The view.
    pub fn view(&self) -> &FeatureView<K, T> {
        &self.view
    }

    /// The features of `entity` as of the wall clock's now.
    ///
    /// # Errors
    ///
    /// As [`FeatureState::lookup_at`].
    pub fn lookup(&self, entity: &K) -> Result<FeatureRow> {
        self.lookup_at(entity, now_ms())
    }

    /// The features of `entity` as of `t`, from the subtask that owns the entity's key group.
    ///
    /// # Errors
    ///
    /// As [`FeatureState::lookup_at`] (with that subtask's horizon).
    pub fn lookup_at(&self, entity: &K, t: i64) -> Result<FeatureRow> {
        let shards = read(&self.registry.shards);
        if shards.is_empty() {
            return Ok(empty_row(&self.view.def, t));
        }
        let shard = &shards[subtask_for_hash(key_hash(entity), shards.len())];
        read(shard).lookup_at(entity, t)
    }

    /// [`FeatureLookup::lookup_at`] for each of `entities`, at one time, in their order; each
    /// subtask's state is locked once for all of its entities.
    ///
    /// # Errors
    ///
    /// As [`FeatureState::lookup_at`].
    pub fn lookup_many(&self, entities: &[K], t: i64) -> Result<Vec<FeatureRow>> {
        let shards = read(&self.registry.shards);
        if shards.is_empty() {
            return Ok(entities.iter().map(|_| empty_row(&self.view.def, t)).collect());
        }
        let owner: Vec<usize> =
            entities.iter().map(|k| subtask_for_hash(key_hash(k), shards.len())).collect();
        let mut rows: Vec<Option<FeatureRow>> = vec![None; entities.len()];
        for (i, shard) in shards.iter().enumerate() {
            if !owner.contains(&i) {
                continue;
            }
            let state = read(shard);
            for (j, k) in entities.iter().enumerate().filter(|(j, _)| owner[*j] == i) {
                rows[j] = Some(state.lookup_at(k, t)?);
            }
        }
        Ok(rows.into_iter().flatten().collect())
    }

    /// The late events dropped so far, restored checkpoints included.
    pub fn late_events(&self) -> u64 {
        let shards = read(&self.registry.shards);
        self.registry.restored_late.load(Ordering::Relaxed)
            + shards.iter().map(|s| read(s).late_events()).sum::<u64>()
    }

    /// The events the operator's subtasks handled (applied, or dropped as late) since the
    /// pipeline started in this process (not those of a restored checkpoint): a lookup made
    /// once this reached `n` sees the first `n` events sent to the operator.
    pub fn events_handled(&self) -> u64 {
        read(&self.registry.shards).iter().map(|s| read(s).events_handled()).sum()
    }

    /// The entities with state.
    pub fn entities(&self) -> usize {
        read(&self.registry.shards).iter().map(|s| read(s).entities()).sum()
    }

    /// Approximate bytes of state (walks every entity: not for a hot path).
    pub fn state_bytes(&self) -> usize {
        read(&self.registry.shards).iter().map(|s| read(s).state_bytes()).sum()
    }
}

impl<K, T> FeatureView<K, T>
where
    K: Hash + Eq + Clone + Send + Sync + Serialize + DeserializeOwned + 'static,
    T: Send + Sync + 'static,
{
    /// Computes the view over `events` in their pipeline: partitions them by entity
    /// (`key_by`), adds a [`FeatureOperator`] with the view's name as its checkpoint id, and
    /// returns its output — the late events, to sink or discard (the job's report tells
    /// them as late output) — and the lookups into its state. Assign timestamps upstream with the view's event time so that the watermarks
    /// speak of it.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use weir_features::{Agg, FeatureView, Value, Window};
    /// use weir_runtime::{DiscardSink, MemorySource, Pipeline, Watermarks};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let view = FeatureView::builder("user_txn")
    ///     .entity(|t: &(u32, i64, f64)| t.0)
    ///     .event_time(|t| t.1)
    ///     .number("amount", |t| t.2)
    ///     .feature("amount_sum_1m", Agg::Sum("amount".into()), Window::Last(Duration::from_secs(60)))
    ///     .build()?;
    /// let p = Pipeline::builder("features").parallelism(2).handle_signals(false).build()?;
    /// let events = p
    ///     .source(MemorySource::new(vec![(7, 1_000, 2.5), (7, 2_000, 4.0), (8, 2_000, 1.0)]))
    ///     .assign_timestamps(|t| t.1, Watermarks::monotonic());
    /// let (late, lookup) = view.attach(events);
    /// late.sink(DiscardSink);
    /// p.run().await?;
    /// let row = lookup.lookup_at(&7, 61_000)?;
    /// assert_eq!(row.values[0].value, Value::Number(4.0), "the event at 1 s left the window");
    /// # Ok(())
    /// # }
    /// ```
    pub fn attach(&self, events: Stream<T>) -> (Stream<T>, FeatureLookup<K, T>) {
        let op = FeatureOperator::new(self.clone());
        let lookup = op.lookup();
        let late =
            (self.def.key_by)(events).into_stream().operator("features", op).uid(self.name()).late_output();
        (late, lookup)
    }
}
