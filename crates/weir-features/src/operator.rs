//! Feature views in a pipeline: the operator that keeps their state, and lookups into it.

use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, PoisonError, RwLock};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde::de::DeserializeOwned;
use weir_metrics::Metrics;
use weir_runtime::{
    Batch, Collector, DropReason, Operator, StateReader, StateStats, StateWriter, Stream, Timestamp,
    key_hash, subtask_for_hash,
};

use crate::error::Result;
use crate::metrics::{Path, SubtaskMetrics, ViewMetrics, timed};
use crate::state::{Columns, Entity, empty_row, entry_bytes, now_ms};
use crate::striped::{Striped, Writer};
use crate::view::{FeatureRow, FeatureView};

/// A subtask's state, shared with lookups.
type Shard<K, T> = Arc<Striped<K, T>>;

/// The shards of one attached view, in subtask order, the late count restored from a
/// checkpoint, and the view's metrics once registered.
struct Registry<K, T> {
    shards: RwLock<Vec<Shard<K, T>>>,
    restored_late: AtomicU64,
    metrics: OnceLock<ViewMetrics>,
}

/// The operator that keeps a [`FeatureView`]'s state in a pipeline, after a `key_by` on the
/// view's entity (see [`FeatureView::attach`], which adds it). Each subtask keeps the entities
/// of its key groups; [`FeatureLookup`] reads them.
///
/// Per batch: the view's columns are extracted without a lock, then applied to the subtask's
/// state stripe by stripe, at most [`EVENTS_PER_LOCK`](crate::EVENTS_PER_LOCK) events per hold
/// of a stripe's write lock (see the [crate docs](crate), Cost). A lookup waits only if its
/// entity's stripe is being written, and then for one hold (microseconds), never for a batch.
/// Its output is the late events (dropped, and counted as the job's late records); watermarks
/// advance the state.
pub struct FeatureOperator<K, T> {
    view: FeatureView<K, T>,
    shard: Shard<K, T>,
    registry: Arc<Registry<K, T>>,
    columns: Columns<K>,
    /// What only this writer keeps of the state: its expiry queue, and scratch.
    writer: Writer<K>,
    late: Vec<usize>,
    /// This shard's index in the registry (its subtask).
    subtask: usize,
    /// Made on the first message after the view's metrics were registered.
    metrics: Option<SubtaskMetrics>,
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
        let shard = Arc::new(Striped::new(&view));
        let registry = Arc::new(Registry {
            shards: RwLock::new(Vec::new()),
            restored_late: AtomicU64::new(0),
            metrics: OnceLock::new(),
        });
        FeatureOperator {
            view,
            shard,
            registry,
            columns: Columns::default(),
            writer: Writer::default(),
            late: Vec::new(),
            subtask: 0,
            metrics: None,
        }
    }

    /// Lookups into the state of this operator's clones.
    pub fn lookup(&self) -> FeatureLookup<K, T> {
        FeatureLookup { view: self.view.clone(), registry: self.registry.clone() }
    }
}

impl<K: Hash + Eq + Clone, T> Clone for FeatureOperator<K, T> {
    /// A new shard of the same view, registered for lookups after those cloned before it.
    fn clone(&self) -> Self {
        let shard = Arc::new(Striped::new(&self.view));
        let mut shards = write(&self.registry.shards);
        let subtask = shards.len();
        shards.push(shard.clone());
        FeatureOperator {
            view: self.view.clone(),
            shard,
            registry: self.registry.clone(),
            columns: Columns::default(),
            writer: Writer::default(),
            late: Vec::new(),
            subtask,
            metrics: None,
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
        let arrived = self.metered().then(Instant::now);
        self.late.clear();
        self.columns.fill(&self.view.def, &batch.records);
        let entities = self.shard.apply(&self.columns, &mut self.writer, &mut self.late);
        if let (Some(m), Some(arrived)) = (&self.metrics, arrived) {
            // From the append if the batch knows it and the appender's clock is not ahead of
            // this one (a broker's may be); else from the read.
            let now = now_ms();
            let after = match batch.appended_ms().filter(|&ms| ms <= now) {
                Some(ms) => Duration::from_millis(now.abs_diff(ms)),
                None => batch.read_at().map_or_else(|| arrived.elapsed(), |read| read.elapsed()),
            };
            m.applied(after, batch.len() - self.late.len(), self.late.len());
            m.entities(entities);
            self.sample_if_due(entities);
        }
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
            let entities = self.shard.advance(watermark, &mut self.writer);
            if self.metered()
                && let Some(m) = &self.metrics
            {
                m.entities(entities);
                self.sample_if_due(entities);
            }
        }
        out.watermark(watermark);
    }

    /// Saves each entity under its key, and the watermark, the late counts and the view's
    /// state layout as the subtask's meta; the view's metrics sample the state's bytes in the
    /// same pass.
    fn snapshot(&mut self, state: &mut StateWriter) -> weir_runtime::Result<()> {
        self.metered();
        let (watermark, late) = self.shard.meta();
        let restored = self.registry.restored_late.load(Ordering::Relaxed);
        state.set_meta::<Meta>(&(watermark, late, restored, self.view.def.layout()))?;
        let mut bytes = 0;
        self.shard.each(|stripe| {
            stripe.entries().try_for_each(|(k, e)| {
                bytes += entry_bytes(k, e);
                state.put(k, e)
            })
        })?;
        if let Some(m) = &mut self.metrics {
            m.sampled(bytes, self.shard.entities());
        }
        Ok(())
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
        self.shard.restore(watermark, entities, &mut self.writer);
        Ok(())
    }

    /// The entities, and the bytes of the last sample of the view's metrics (0 without them).
    fn state_stats(&self) -> Option<StateStats> {
        let keys = self.shard.entities() as u64;
        let bytes = self.metrics.as_ref().map_or(0, SubtaskMetrics::bytes);
        Some(StateStats { keys, bytes, ..StateStats::default() })
    }
}

impl<K: Hash + Eq + Clone, T> FeatureOperator<K, T> {
    /// Whether the view's metrics are on; makes this subtask's handles the first time.
    fn metered(&mut self) -> bool {
        if self.metrics.is_none()
            && let Some(m) = self.registry.metrics.get()
        {
            self.metrics = Some(m.subtask(self.subtask));
        }
        self.metrics.is_some()
    }

    /// Samples the state's bytes if due, a stripe at a time under its read lock (lookups go on
    /// meanwhile).
    fn sample_if_due(&mut self, entities: usize) {
        if let Some(m) = self.metrics.as_mut().filter(|m| m.sample_due(entities)) {
            m.sampled(self.shard.state_bytes(), self.shard.entities());
        }
    }
}

/// Lookups into the state of an attached [`FeatureView`], from any thread, while the pipeline
/// runs and after it ended. Cheap to clone.
///
/// Read-your-writes: a lookup made after the operator handled a batch sees its events (each
/// is applied under its stripe's write lock, lookups take the stripe's read lock). A lookup
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
    /// As [`FeatureState::lookup_at`](crate::FeatureState::lookup_at).
    pub fn lookup(&self, entity: &K) -> Result<FeatureRow> {
        self.lookup_at(entity, now_ms())
    }

    /// The features of `entity` as of `t`, from the subtask that owns the entity's key group.
    ///
    /// # Errors
    ///
    /// As [`FeatureState::lookup_at`](crate::FeatureState::lookup_at) (with that subtask's horizon).
    pub fn lookup_at(&self, entity: &K, t: i64) -> Result<FeatureRow> {
        timed(self.registry.metrics.get(), Path::InProcess, || self.lookup_untimed(entity, t))
    }

    /// [`FeatureLookup::lookup_at`], not counted in the lookup metrics (the HTTP server times
    /// its requests itself).
    pub(crate) fn lookup_untimed(&self, entity: &K, t: i64) -> Result<FeatureRow> {
        self.lookup_in(&read(&self.registry.shards), entity, t)
    }

    /// The lookup of `entity` at `t` in the subtask of `shards` that owns it.
    fn lookup_in(&self, shards: &[Shard<K, T>], entity: &K, t: i64) -> Result<FeatureRow> {
        if shards.is_empty() {
            return Ok(empty_row(&self.view.def, t));
        }
        shards[subtask_for_hash(key_hash(entity), shards.len())].lookup_at(entity, t)
    }

    /// [`FeatureLookup::lookup_at`] for each of `entities`, at one time, in their order.
    ///
    /// # Errors
    ///
    /// As [`FeatureState::lookup_at`](crate::FeatureState::lookup_at).
    pub fn lookup_many(&self, entities: &[K], t: i64) -> Result<Vec<FeatureRow>> {
        timed(self.registry.metrics.get(), Path::InProcess, || {
            // The subtasks once for the whole batch, not once per entity.
            let shards = read(&self.registry.shards);
            entities.iter().map(|k| self.lookup_in(&shards, k, t)).collect()
        })
    }

    /// The late events dropped so far, restored checkpoints included.
    pub fn late_events(&self) -> u64 {
        let shards = read(&self.registry.shards);
        self.registry.restored_late.load(Ordering::Relaxed)
            + shards.iter().map(|s| s.late_events()).sum::<u64>()
    }

    /// The events the operator's subtasks handled (applied, or dropped as late) since the
    /// pipeline started in this process (not those of a restored checkpoint): a lookup made
    /// once this reached `n` sees the first `n` events sent to the operator.
    pub fn events_handled(&self) -> u64 {
        read(&self.registry.shards).iter().map(|s| s.events_handled()).sum()
    }

    /// The entities with state.
    pub fn entities(&self) -> usize {
        read(&self.registry.shards).iter().map(|s| s.entities()).sum()
    }

    /// Approximate bytes of state (walks every entity: not for a hot path).
    pub fn state_bytes(&self) -> usize {
        read(&self.registry.shards).iter().map(|s| s.state_bytes()).sum()
    }

    /// Exports the view's metrics into `metrics`, labelled `pipeline` (see the
    /// [`metrics`](crate::metrics) module): lookups from now on, and the operator's subtasks
    /// from their next message. [`FeatureView::attach`] calls it for a pipeline with metrics;
    /// only the first registration of a view's lookups counts, later ones do nothing.
    pub fn register_metrics(&self, metrics: &Metrics, pipeline: &str) {
        self.registry.metrics.get_or_init(|| ViewMetrics::new(metrics, pipeline, self.view.name()));
    }

    /// Counts an HTTP request for this view that took `took`.
    #[cfg(feature = "http")]
    pub(crate) fn observe_http(&self, took: std::time::Duration) {
        if let Some(m) = self.registry.metrics.get() {
            m.lookup(Path::Http, took);
        }
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
    /// them as late output) — and the lookups into its state. Assign timestamps upstream with
    /// the view's event time so that the watermarks speak of it. A pipeline built with
    /// [`PipelineBuilder::metrics`](weir_runtime::PipelineBuilder::metrics) exports the view's
    /// metrics (see the [`metrics`](crate::metrics) module).
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
        if let Some((metrics, pipeline)) = events.metrics() {
            lookup.register_metrics(metrics, pipeline);
        }
        let late =
            (self.def.key_by)(events).into_stream().operator("features", op).uid(self.name()).late_output();
        (late, lookup)
    }
}
