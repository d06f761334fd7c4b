//! The per-entity state of a feature view and its lookups.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::hash::Hash;

use serde::{Deserialize, Serialize};

use crate::error::{FeatureError, Result};
use crate::view::{FeatureDef, FeatureRow, FeatureValue, FeatureView, Kind, Slot, Status, Value, ViewDef};

/// HyperLogLog with 2^14 registers; hashes come from [`crate::hash`], so the hasher type is
/// never used.
pub(crate) type Hll = cardinality_estimator::CardinalityEstimator<u64, DefaultHasher, 14, 6>;

/// A partial aggregate of number events: enough for count, sum, mean, min, max and (in `sum`)
/// a decayed sum referenced at a known time.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub(crate) struct Partial {
    n: u64,
    sum: f64,
    min: f64,
    max: f64,
}

impl Partial {
    const EMPTY: Partial = Partial { n: 0, sum: 0.0, min: f64::INFINITY, max: f64::NEG_INFINITY };

    /// Adds a value whose contribution to `sum` is `weighted` (the value itself, or decayed).
    fn add(&mut self, v: f64, weighted: f64) {
        self.n += 1;
        self.sum += weighted;
        self.min = self.min.min(v);
        self.max = self.max.max(v);
    }

    /// Adds another partial whose `sum` is scaled by `scale`.
    fn merge(&mut self, o: &Partial, scale: f64) {
        self.n += o.n;
        self.sum += o.sum * scale;
        self.min = self.min.min(o.min);
        self.max = self.max.max(o.max);
    }
}

/// `2^(-dt / half_life)`: the weight of something `dt` ms old.
fn decay(dt: i64, half_life: f64) -> f64 {
    (-(dt as f64) / half_life).exp2()
}

/// What a lifetime feature keeps of the events pruned from the entity's retained history.
#[derive(Debug, Clone, Serialize, Deserialize)]
enum Base {
    /// Tiled kinds; a decayed sum is referenced at `at`, the newest folded event.
    Numbers { p: Partial, at: i64 },
    /// Approximate distinct count.
    Sketch(Hll),
    /// `Last` and `LastN`: the newest values, newest first.
    Newest(VecDeque<f64>),
}

/// One entity's state: its retained events in time order (columns), the tiles summarising
/// them, and the bases of its lifetime features. Invariants: `ts` is sorted (equal times in
/// arrival order); `nums` and `cats` hold one row per event; `tiles` holds the sorted starts of
/// the non-empty tiles, `parts` one row of partials per tile.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Entity {
    ts: VecDeque<i64>,
    nums: VecDeque<f64>,
    cats: VecDeque<u64>,
    tiles: VecDeque<i64>,
    parts: VecDeque<Partial>,
    bases: Vec<Base>,
    /// The newest event time pruned from `ts`.
    pruned_newest: Option<i64>,
    /// Per category of a windowed distinct count, each retained value's newest occurrence,
    /// and per tile how many values have theirs in it (one row per tile). Derived from the
    /// events: rebuilt on restore, not saved.
    #[serde(skip)]
    seen: Seen,
}

/// The newest-occurrence index of windowed distinct counts, kept for busy entities (from
/// [`INDEXED_FROM`] retained events; dropped below a quarter of that): a lookup at or after the
/// entity's newest event counts the values whose newest occurrence is in the window from
/// per-tile counts (and the events of the window's first, partial tile), not from every event
/// of the window. Quiet entities are counted from their few events, and pay nothing on ingest.
#[derive(Debug, Clone, Default)]
struct Seen {
    newest: Vec<HashMap<u64, i64, std::hash::BuildHasherDefault<Prehashed>>>,
    per_tile: VecDeque<u32>,
}

impl Entity {
    fn new<K, T>(def: &ViewDef<K, T>) -> Entity {
        let bases = def
            .features
            .iter()
            .filter(|f| f.base_slot.is_some())
            .map(|f| match f.kind {
                Kind::ApproxDistinct => Base::Sketch(Hll::new()),
                Kind::Last | Kind::LastN(_) => Base::Newest(VecDeque::new()),
                _ => Base::Numbers { p: Partial::EMPTY, at: i64::MIN },
            })
            .collect();
        Entity {
            ts: VecDeque::new(),
            nums: VecDeque::new(),
            cats: VecDeque::new(),
            tiles: VecDeque::new(),
            parts: VecDeque::new(),
            bases,
            pruned_newest: None,
            seen: Seen::default(),
        }
    }

    /// Approximate bytes held (the columns' capacities times their element sizes, plus the
    /// struct); sketches count their own size.
    fn bytes(&self) -> usize {
        let sketches: usize = self
            .bases
            .iter()
            .map(|b| match b {
                Base::Sketch(h) => h.size_of(),
                Base::Newest(v) => v.len() * 8,
                Base::Numbers { .. } => 0,
            })
            .sum();
        std::mem::size_of::<Entity>()
            + self.bases.capacity() * std::mem::size_of::<Base>()
            + self.ts.capacity() * 8
            + self.nums.capacity() * 8
            + self.cats.capacity() * 8
            + self.tiles.capacity() * 8
            + self.parts.capacity() * std::mem::size_of::<Partial>()
            + self.seen.per_tile.capacity() * 4
            + self.seen.newest.iter().map(|m| m.capacity() * 17).sum::<usize>()
            + sketches
    }
}

/// The columns of a batch of events, extracted outside any lock.
pub(crate) struct Columns<K> {
    pub(crate) keys: Vec<K>,
    pub(crate) ts: Vec<i64>,
    /// Column-major: input `c` of event `i` at `c * n + i`.
    pub(crate) nums: Vec<f64>,
    pub(crate) cats: Vec<u64>,
}

impl<K> Default for Columns<K> {
    fn default() -> Self {
        Columns { keys: Vec::new(), ts: Vec::new(), nums: Vec::new(), cats: Vec::new() }
    }
}

impl<K> Columns<K> {
    /// Extracts the columns of `events` (one dynamic call per column, not per event).
    pub(crate) fn fill<T>(&mut self, def: &ViewDef<K, T>, events: &[T]) {
        self.keys.clear();
        self.ts.clear();
        self.nums.clear();
        self.cats.clear();
        (def.entities)(events, &mut self.keys);
        (def.event_time)(events, &mut self.ts);
        for c in &def.numbers {
            c(events, &mut self.nums);
        }
        for c in &def.categories {
            c(events, &mut self.cats);
        }
    }
}

/// Entities with at least this many retained events keep tiles (dropped below a quarter of
/// that): a quiet entity's lookups read its few events, and its events cost no partials.
const TILED_FROM: usize = if cfg!(test) { 8 } else { 32 };

/// Entities with at least this many retained events keep the newest-occurrence index of
/// their windowed distinct counts ([`Seen`]). The crate's unit tests keep tiles from 8 events
/// and the index from 12, so that the brute-force model (`tests/model.rs`, also compiled into
/// them) covers every way of counting and the switches between them.
const INDEXED_FROM: usize = if cfg!(test) { 12 } else { 256 };

/// Approximate distinct counts of windows holding at most this many events are counted
/// exactly.
const EXACT_UP_TO: usize = 1 << 16;

/// A hasher for values that are already 64-bit hashes (of [`crate::hash`]): it passes them on.
#[derive(Default)]
struct Prehashed(u64);

impl std::hash::Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `u64`s are hashed with it; fold anything else in for completeness.
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }

    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }
}

type HashSet64 = HashSet<u64, std::hash::BuildHasherDefault<Prehashed>>;

thread_local! {
    static DISTINCT: std::cell::RefCell<HashSet64> = std::cell::RefCell::new(HashSet64::default());
}

/// The state of one [`FeatureView`]: per entity, the retained events and tiles, updated by
/// [`FeatureState::apply_batch`] and [`FeatureState::advance`], read by lookups. The
/// [crate docs](crate) state the semantics.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use weir_features::{Agg, FeatureState, FeatureView, Status, Value, Window};
///
/// let view = FeatureView::builder("clicks")
///     .entity(|e: &(&str, i64)| e.0.to_owned())
///     .event_time(|e| e.1)
///     .feature("clicks_1m", Agg::Count, Window::Last(Duration::from_secs(60)))
///     .build()?;
/// let mut state = FeatureState::new(view);
/// state.apply_batch(&[("u1", 1_000), ("u1", 30_000)]);
/// let row = state.lookup_at(&"u1".to_owned(), 61_000)?;
/// assert_eq!(row.values[0].value, Value::Count(1), "the event at 1 s left the window at 61 s");
/// let row = state.lookup_at(&"u1".to_owned(), 95_000)?;
/// assert_eq!(row.values[0].status, Status::Expired);
/// assert_eq!(row.newest_event, Some(30_000));
/// # Ok::<(), weir_features::FeatureError>(())
/// ```
pub struct FeatureState<K, T> {
    view: FeatureView<K, T>,
    entities: HashMap<K, Entity>,
    watermark: i64,
    late: u64,
    /// Events handled by this state since it was created (applied or late; not restored).
    handled: u64,
    expiry: Expiry<K>,
    columns: Columns<K>,
    late_scratch: Vec<usize>,
    /// Expiry entries of the batch being applied, queued once per batch.
    pending: Vec<(i64, K)>,
    /// The keys due at a watermark (scratch).
    due: Vec<K>,
}

impl<K, T> std::fmt::Debug for FeatureState<K, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FeatureState")
            .field("view", &self.view.def.name)
            .field("entities", &self.entities.len())
            .field("watermark", &self.watermark)
            .field("late", &self.late)
            .finish_non_exhaustive()
    }
}

impl<K, T> FeatureState<K, T>
where
    K: Hash + Eq + Clone,
{
    /// Empty state of `view`, at watermark `i64::MIN`.
    pub fn new(view: FeatureView<K, T>) -> Self {
        FeatureState {
            view,
            entities: HashMap::new(),
            watermark: i64::MIN,
            late: 0,
            handled: 0,
            expiry: Expiry::default(),
            columns: Columns::default(),
            late_scratch: Vec::new(),
            pending: Vec::new(),
            due: Vec::new(),
        }
    }

    /// The view.
    pub fn view(&self) -> &FeatureView<K, T> {
        &self.view
    }

    /// Applies `events` in order; returns how many were late (behind the horizon: dropped and
    /// counted in [`FeatureState::late_events`]).
    pub fn apply_batch(&mut self, events: &[T]) -> usize {
        let mut columns = std::mem::take(&mut self.columns);
        let mut late = std::mem::take(&mut self.late_scratch);
        columns.fill(&self.view.def, events);
        late.clear();
        self.apply_columns(&columns, &mut late);
        let n = late.len();
        self.columns = columns;
        self.late_scratch = late;
        n
    }

    /// Applies extracted columns, and queues their expiry entries; pushes the indices of late
    /// events to `late`.
    pub(crate) fn apply_columns(&mut self, c: &Columns<K>, late: &mut Vec<usize>) {
        let mut pending = std::mem::take(&mut self.pending);
        self.apply_rows(c, 0..c.ts.len(), late, &mut pending);
        self.expiry.queue(&mut pending);
        self.pending = pending;
    }

    /// Applies rows `rows` (in that order) of extracted columns; pushes the indices of late
    /// events to `late`, and the expiry entries to queue (see [`Expiry`]) to `pending`.
    pub(crate) fn apply_rows(
        &mut self,
        c: &Columns<K>,
        rows: impl IntoIterator<Item = usize>,
        late: &mut Vec<usize>,
        pending: &mut Vec<(i64, K)>,
    ) {
        let def = self.view.def.clone();
        // Before the first watermark nothing is late, not even an event at `i64::MIN`.
        let horizon = if self.watermark == i64::MIN { None } else { Some(self.horizon()) };
        let cut = self.cut();
        let n = c.ts.len();
        let (late_before, mut handled) = (late.len(), 0);
        for i in rows {
            handled += 1;
            let (key, ts) = (&c.keys[i], c.ts[i]);
            if horizon.is_some_and(|h| ts <= h) {
                late.push(i);
                continue;
            }
            match self.entities.get_mut(key) {
                Some(e) => {
                    if e.ts.front().is_some_and(|&x| x < cut) {
                        prune(&def, e, cut);
                    }
                    if let Some(due) = insert(&def, e, ts, i, n, c) {
                        pending.push((due, key.clone()));
                    }
                }
                None => {
                    let mut e = Entity::new(&def);
                    if let Some(due) = insert(&def, &mut e, ts, i, n, c) {
                        pending.push((due, key.clone()));
                    }
                    self.entities.insert(key.clone(), e);
                }
            }
        }
        self.late += (late.len() - late_before) as u64;
        self.handled += handled;
    }

    /// Advances event time to `watermark` (a lower one is ignored): later events at or behind
    /// `watermark - allowed lateness` are late, and history no lookup from then on can see is
    /// pruned (folded into the lifetime features), evicting entities left without any.
    pub fn advance(&mut self, watermark: i64) {
        if watermark <= self.watermark {
            return;
        }
        self.watermark = watermark;
        let mut due = std::mem::take(&mut self.due);
        self.expiry.pop_due(self.cutoff(), &mut due);
        self.expire(watermark, due.drain(..));
        self.due = due;
    }

    /// Advances to `watermark` (a lower one is ignored) and prunes the history of `keys` that
    /// no lookup from then on can see, evicting those left without any: what
    /// [`FeatureState::advance`] does for the entities its queue says are due, for keys due in
    /// a queue kept elsewhere.
    pub(crate) fn expire(&mut self, watermark: i64, keys: impl IntoIterator<Item = K>) {
        self.watermark = self.watermark.max(watermark);
        let cut = self.cut();
        let def = &self.view.def;
        for key in keys {
            let Some(e) = self.entities.get_mut(&key) else { continue };
            prune(def, e, cut);
            if e.ts.is_empty() && !def.has_lifetime {
                self.entities.remove(&key);
            }
        }
    }

    /// The watermark: `i64::MIN` until [`FeatureState::advance`] is called.
    pub fn watermark(&self) -> i64 {
        self.watermark
    }

    /// The horizon, `watermark - allowed lateness`: once a watermark arrived, events at or
    /// before it are late, and lookups before it are refused.
    pub fn horizon(&self) -> i64 {
        horizon(&self.view.def, self.watermark)
    }

    /// The newest event time no window of a lookup at or after the horizon can see.
    fn cutoff(&self) -> i64 {
        cutoff(&self.view.def, self.watermark)
    }

    /// The first tile start that may not be pruned: events before it are never needed.
    fn cut(&self) -> i64 {
        if self.watermark == i64::MIN {
            return i64::MIN;
        }
        floor(self.cutoff().saturating_add(1), self.view.def.tile)
    }

    /// The number of events dropped as late so far.
    pub fn late_events(&self) -> u64 {
        self.late
    }

    /// The events this state handled (applied, or dropped as late) since it was created: not
    /// those of a restored checkpoint. A caller that knows how many events it sent can wait
    /// for this to reach them: the state then reflects each of them.
    pub fn events_handled(&self) -> u64 {
        self.handled
    }

    /// The number of entities with state.
    pub fn entities(&self) -> usize {
        self.entities.len()
    }

    /// Approximate bytes of state, walking every entity (not for a hot path).
    pub fn state_bytes(&self) -> usize {
        self.entities.iter().map(|(k, e)| entry_bytes(k, e)).sum()
    }

    /// The features of `entity` as of the wall clock's now.
    ///
    /// # Errors
    ///
    /// As [`FeatureState::lookup_at`].
    pub fn lookup(&self, entity: &K) -> Result<FeatureRow> {
        self.lookup_at(entity, now_ms())
    }

    /// The features of `entity` as of `t` (ms since the epoch).
    ///
    /// # Errors
    ///
    /// [`FeatureError::BeforeHorizon`] if `t` is before [`FeatureState::horizon`]: the state no
    /// longer holds what such a lookup would need.
    pub fn lookup_at(&self, entity: &K, t: i64) -> Result<FeatureRow> {
        let def = &self.view.def;
        check_horizon(def, self.watermark, t)?;
        Ok(match self.entities.get(entity) {
            Some(e) => evaluate(def, e, t),
            None => empty_row(def, t),
        })
    }

    /// [`FeatureState::lookup_at`] for each of `entities`, at one time.
    ///
    /// # Errors
    ///
    /// As [`FeatureState::lookup_at`].
    pub fn lookup_many(&self, entities: &[K], t: i64) -> Result<Vec<FeatureRow>> {
        entities.iter().map(|k| self.lookup_at(k, t)).collect()
    }

    /// Every entity and its state, for checkpoints.
    pub(crate) fn entries(&self) -> impl Iterator<Item = (&K, &Entity)> {
        self.entities.iter()
    }

    /// Restores meta and entities saved by a checkpoint; pushes their expiry entries to
    /// `pending`.
    pub(crate) fn restore(
        &mut self,
        watermark: i64,
        late: u64,
        entities: impl IntoIterator<Item = (K, Entity)>,
        pending: &mut Vec<(i64, K)>,
    ) {
        self.watermark = watermark;
        self.late = late;
        let g = self.view.def.tile;
        for (key, mut e) in entities {
            if e.ts.len() >= INDEXED_FROM && !self.view.def.seen.is_empty() {
                e.rebuild_seen(&self.view.def);
            }
            if let Some(&newest) = e.ts.back() {
                pending.push((floor(newest, g).saturating_add(g - 1), key.clone()));
            }
            self.entities.insert(key, e);
        }
    }
}

/// Entities to prune (and evict) once the prune cutoff reaches their expiry time: the last ms
/// of their newest tile when it was opened. An entity may be queued several times (once per
/// newest tile); pruning it early is harmless, as it keeps whatever a lookup can still see.
#[derive(Debug)]
pub(crate) struct Expiry<K> {
    queue: BTreeMap<i64, Vec<K>>,
}

impl<K> Default for Expiry<K> {
    fn default() -> Self {
        Expiry { queue: BTreeMap::new() }
    }
}

impl<K> Expiry<K> {
    /// Queues the entries of `pending` (left empty): one map entry per expiry time of a batch,
    /// not one per event.
    pub(crate) fn queue(&mut self, pending: &mut Vec<(i64, K)>) {
        pending.sort_by_key(|p| p.0);
        let mut pending = pending.drain(..).peekable();
        while let Some((due, key)) = pending.next() {
            let keys = self.queue.entry(due).or_default();
            keys.push(key);
            while let Some((_, key)) = pending.next_if(|p| p.0 == due) {
                keys.push(key);
            }
        }
    }

    /// Moves the keys due at `cutoff` (expiry time at or before it) to `due`.
    pub(crate) fn pop_due(&mut self, cutoff: i64, due: &mut Vec<K>) {
        while let Some(entry) = self.queue.first_entry() {
            if *entry.key() > cutoff {
                break;
            }
            due.extend(entry.remove());
        }
    }
}

/// The horizon at `watermark`: `watermark - allowed lateness`.
pub(crate) fn horizon<K, T>(def: &ViewDef<K, T>, watermark: i64) -> i64 {
    watermark.saturating_sub(def.lateness)
}

/// The newest event time no window of a lookup at or after the horizon at `watermark` can see:
/// history up to it is pruned.
pub(crate) fn cutoff<K, T>(def: &ViewDef<K, T>, watermark: i64) -> i64 {
    horizon(def, watermark).saturating_sub(def.max_window)
}

/// Refuses a lookup at `t` before the horizon at `watermark`: the state no longer holds what
/// it would need.
pub(crate) fn check_horizon<K, T>(def: &ViewDef<K, T>, watermark: i64, t: i64) -> Result<()> {
    let horizon = horizon(def, watermark);
    if t < horizon {
        return Err(FeatureError::BeforeHorizon { view: def.name.clone(), at: t, horizon });
    }
    Ok(())
}

/// Approximate bytes of one entity's entry: its key and its state (the terms of
/// [`FeatureState::state_bytes`]).
pub(crate) fn entry_bytes<K>(key: &K, e: &Entity) -> usize {
    std::mem::size_of_val(key) + e.bytes()
}

/// The wall clock in ms since the epoch.
pub(crate) fn now_ms() -> i64 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    now.map_or(0, |d| d.as_millis().min(i64::MAX as u128) as i64)
}

/// The start of the tile of length `g` holding `t`.
fn floor(t: i64, g: i64) -> i64 {
    t.saturating_sub(t.rem_euclid(g))
}

/// Inserts event `i` of the columns (`n` events) into `e`; returns the expiry key to queue
/// if the event opened the entity's newest tile.
fn insert<K, T>(
    def: &ViewDef<K, T>,
    e: &mut Entity,
    ts: i64,
    i: usize,
    n: usize,
    c: &Columns<K>,
) -> Option<i64> {
    let (nn, nc) = (def.numbers.len(), def.categories.len());
    let g = def.tile;
    let start = floor(ts, g);
    // Whether the event opens the entity's newest tile (tiles kept or not).
    let newest = e.ts.back().is_none_or(|&b| floor(b, g) < start);
    let idx = if e.ts.back().is_none_or(|&b| b <= ts) {
        // In order (the common case): appends.
        e.ts.push_back(ts);
        e.nums.extend((0..nn).map(|col| c.nums[col * n + i]));
        e.cats.extend((0..nc).map(|col| c.cats[col * n + i]));
        e.ts.len() - 1
    } else {
        let idx = e.ts.partition_point(|&x| x <= ts);
        e.ts.insert(idx, ts);
        for col in 0..nn {
            e.nums.insert(idx * nn + col, c.nums[col * n + i]);
        }
        for col in 0..nc {
            e.cats.insert(idx * nc + col, c.cats[col * n + i]);
        }
        idx
    };
    if !e.tiles.is_empty() {
        let ti = add_to_tile(def, e, idx);
        if !e.seen.newest.is_empty() {
            let ns = def.seen.len();
            for (s, &col) in def.seen.iter().enumerate() {
                see(e, s, ns, c.cats[col * n + i], ts, ti);
            }
        }
    } else if e.ts.len() >= TILED_FROM {
        e.build_tiles(def);
    }
    if e.seen.newest.is_empty() && !def.seen.is_empty() && e.ts.len() >= INDEXED_FROM {
        e.rebuild_seen(def);
    }
    newest.then(|| start.saturating_add(g - 1))
}

/// Adds retained event `idx` to its tile's partials (making the tile if needed); returns the
/// tile's index.
fn add_to_tile<K, T>(def: &ViewDef<K, T>, e: &mut Entity, idx: usize) -> usize {
    let (g, nn) = (def.tile, def.numbers.len());
    let ts = e.ts[idx];
    let start = floor(ts, g);
    let ns = if e.seen.newest.is_empty() { 0 } else { def.seen.len() };
    let ti = if e.tiles.back().is_none_or(|&b| b < start) {
        e.tiles.push_back(start);
        e.parts.extend(std::iter::repeat_n(Partial::EMPTY, def.tiled));
        e.seen.per_tile.extend(std::iter::repeat_n(0, ns));
        e.tiles.len() - 1
    } else {
        let ti = e.tiles.partition_point(|&s| s < start);
        if e.tiles[ti] != start {
            e.tiles.insert(ti, start);
            for s in 0..def.tiled {
                e.parts.insert(ti * def.tiled + s, Partial::EMPTY);
            }
            for s in 0..ns {
                e.seen.per_tile.insert(ti * ns + s, 0);
            }
        }
        ti
    };
    for (slot, def_slot) in def.slots.iter().enumerate() {
        let v = def_slot.column.map_or(0.0, |col| e.nums[idx * nn + col]);
        let weighted = match def_slot.half_life {
            Some(h) => v * decay(start.saturating_add(g).saturating_sub(ts), h),
            None => v,
        };
        e.parts[ti * def.tiled + slot].add(v, weighted);
    }
    ti
}

/// Records that value `h` of seen category `s` (of `ns`) occurred at `ts`, in tile `ti`.
fn see(e: &mut Entity, s: usize, ns: usize, h: u64, ts: i64, ti: usize) {
    match e.seen.newest[s].entry(h) {
        std::collections::hash_map::Entry::Vacant(v) => {
            v.insert(ts);
        }
        std::collections::hash_map::Entry::Occupied(mut o) => {
            let old = *o.get();
            if old >= ts {
                return;
            }
            o.insert(ts);
            let old_ti = e.tiles.partition_point(|&start| start <= old) - 1;
            e.seen.per_tile[old_ti * ns + s] -= 1;
        }
    }
    e.seen.per_tile[ti * ns + s] += 1;
}

impl Entity {
    /// Builds the tiles of the retained events (an entity that became busy).
    fn build_tiles<K, T>(&mut self, def: &ViewDef<K, T>) {
        for idx in 0..self.ts.len() {
            add_to_tile(def, self, idx);
        }
    }

    /// Builds the newest-occurrence index from the retained events (an entity that became
    /// busy, or one restored busy).
    fn rebuild_seen<K, T>(&mut self, def: &ViewDef<K, T>) {
        if self.tiles.is_empty() {
            self.build_tiles(def);
        }
        let (ns, nc) = (def.seen.len(), def.categories.len());
        self.seen = Seen {
            newest: vec![HashMap::default(); ns],
            per_tile: std::iter::repeat_n(0, self.tiles.len() * ns).collect(),
        };
        for i in 0..self.ts.len() {
            let ts = self.ts[i];
            let ti = self.tiles.partition_point(|&start| start <= ts) - 1;
            for (s, &col) in def.seen.iter().enumerate() {
                see(self, s, ns, self.cats[i * nc + col], ts, ti);
            }
        }
    }
}

/// Removes the tiles before `cut` and their events, folding the events into the bases.
fn prune<K, T>(def: &ViewDef<K, T>, e: &mut Entity, cut: i64) {
    let ns = if e.seen.newest.is_empty() { 0 } else { def.seen.len() };
    while e.tiles.front().is_some_and(|&s| s < cut) {
        e.tiles.pop_front();
        e.parts.drain(..def.tiled);
        e.seen.per_tile.drain(..ns);
    }
    let (nn, nc) = (def.numbers.len(), def.categories.len());
    let k = e.ts.partition_point(|&x| x < cut);
    if k == 0 {
        return;
    }
    if ns > 0 {
        for (s, &col) in def.seen.iter().enumerate() {
            for i in 0..k {
                let h = e.cats[i * nc + col];
                if e.seen.newest[s].get(&h) == Some(&e.ts[i]) {
                    e.seen.newest[s].remove(&h);
                }
            }
        }
        if e.ts.len() - k < INDEXED_FROM / 4 {
            e.seen = Seen::default();
        }
    }
    if !e.tiles.is_empty() && e.ts.len() - k < TILED_FROM / 4 && e.seen.newest.is_empty() {
        e.tiles = VecDeque::new();
        e.parts = VecDeque::new();
    }
    if def.has_lifetime {
        for i in 0..k {
            fold(def, e, i);
        }
    }
    e.pruned_newest = Some(e.ts[k - 1]);
    e.ts.drain(..k);
    e.nums.drain(..k * nn);
    e.cats.drain(..k * nc);
    // After a burst, give back what the columns no longer use.
    if e.ts.capacity() > 4 * e.ts.len() + 16 {
        let keep = 2 * e.ts.len();
        e.ts.shrink_to(keep);
        e.nums.shrink_to(keep * nn);
        e.cats.shrink_to(keep * nc);
        e.tiles.shrink_to(2 * e.tiles.len());
        e.parts.shrink_to(2 * e.parts.len());
    }
}

/// Folds retained event `i` into the bases of the lifetime features.
fn fold<K, T>(def: &ViewDef<K, T>, e: &mut Entity, i: usize) {
    let (nn, nc) = (def.numbers.len(), def.categories.len());
    let ts = e.ts[i];
    for f in &def.features {
        let Some(slot) = f.base_slot else { continue };
        match (&mut e.bases[slot], f.kind) {
            (Base::Sketch(h), _) => h.insert_hash(e.cats[i * nc + f.column]),
            (Base::Newest(vals), Kind::LastN(keep)) => {
                vals.push_front(e.nums[i * nn + f.column]);
                vals.truncate(keep);
            }
            (Base::Newest(vals), _) => {
                vals.clear();
                vals.push_front(e.nums[i * nn + f.column]);
            }
            (Base::Numbers { p, at }, kind) => {
                let v = if kind == Kind::Count { 0.0 } else { e.nums[i * nn + f.column] };
                if let Kind::Decayed(h) = kind
                    && p.n > 0
                {
                    p.sum *= decay(ts.saturating_sub(*at), h);
                }
                p.add(v, v);
                *at = ts;
            }
        }
    }
}

/// The row of an entity without state.
pub(crate) fn empty_row<K, T>(def: &ViewDef<K, T>, t: i64) -> FeatureRow {
    let values = def
        .features
        .iter()
        .map(|f| FeatureValue { status: Status::Empty, value: finish(f.kind, &Partial::EMPTY) })
        .collect();
    FeatureRow { at: t, newest_event: None, values }
}

/// The value of a tiled kind from its accumulated partial (the decayed sum already at `t`).
fn finish(kind: Kind, p: &Partial) -> Value {
    let some = |v: f64| if p.n == 0 { Value::Missing } else { Value::Number(v) };
    match kind {
        Kind::Count => Value::Count(p.n),
        Kind::Sum | Kind::Decayed(_) => Value::Number(p.sum),
        Kind::Avg => some(p.sum / p.n as f64),
        Kind::Min => some(p.min),
        Kind::Max => some(p.max),
        Kind::Distinct | Kind::ApproxDistinct => Value::Count(0),
        Kind::Last => Value::Missing,
        Kind::LastN(_) => Value::Numbers(Vec::new()),
    }
}

/// Every feature of `e` as of `t`.
fn evaluate<K, T>(def: &ViewDef<K, T>, e: &Entity, t: i64) -> FeatureRow {
    let b = e.ts.partition_point(|&x| x <= t);
    let newest_event = if b > 0 { Some(e.ts[b - 1]) } else { e.pruned_newest };
    let mut memo = Memo::with_capacity(def.features.len());
    let values = def
        .features
        .iter()
        .map(|f| {
            let (value, present) = feature(def, e, f, t, b, &mut memo);
            let status = if present {
                Status::Present
            } else if newest_event.is_some() {
                Status::Expired
            } else {
                Status::Empty
            };
            FeatureValue { status, value }
        })
        .collect();
    FeatureRow { at: t, newest_event, values }
}

/// The partial aggregate of tile slot `slot` over the retained events in `(lo, t]`, which are
/// `a..b` (a decayed sum as of `t`): the tiles entirely inside from their partials, the edge
/// tiles from their events.
fn window_partial<K, T>(
    def: &ViewDef<K, T>,
    e: &Entity,
    slot: usize,
    lo: i64,
    t: i64,
    a: usize,
    b: usize,
) -> Partial {
    let nn = def.numbers.len();
    let Slot { column, half_life } = def.slots[slot];
    let weight = |ts: i64| half_life.map_or(1.0, |h| decay(t.saturating_sub(ts), h));
    let mut acc = Partial::EMPTY;
    let raw = |acc: &mut Partial, from: usize, to: usize| {
        for i in from..to {
            let v = column.map_or(0.0, |col| e.nums[i * nn + col]);
            acc.add(v, v * weight(e.ts[i]));
        }
    };
    let g = def.tile;
    // Tiles entirely inside (lo, t]: start > lo and start + g - 1 <= t.
    let ta = e.tiles.partition_point(|&s| s <= lo);
    let tb = e.tiles.partition_point(|&s| s <= t.saturating_sub(g - 1));
    if ta < tb {
        let ea = e.ts.partition_point(|&x| x < e.tiles[ta]);
        let eb = e.ts.partition_point(|&x| x < e.tiles[tb - 1].saturating_add(g));
        raw(&mut acc, a, ea);
        for ti in ta..tb {
            acc.merge(&e.parts[ti * def.tiled + slot], weight(e.tiles[ti].saturating_add(g)));
        }
        raw(&mut acc, eb, b);
    } else {
        raw(&mut acc, a, b);
    }
    acc
}

/// The partials computed for one lookup: `(slot, window, partial)`.
type Memo = Vec<(usize, Option<i64>, Partial)>;

/// One feature of `e` as of `t`, whose retained events at or before `t` are `..b`; and
/// whether its window held events.
fn feature<K, T>(
    def: &ViewDef<K, T>,
    e: &Entity,
    f: &FeatureDef,
    t: i64,
    b: usize,
    memo: &mut Memo,
) -> (Value, bool) {
    let (nn, nc) = (def.numbers.len(), def.categories.len());
    let (lo, a) = match f.window {
        Some(w) => {
            let lo = t.saturating_sub(w);
            (lo, e.ts.partition_point(|&x| x <= lo))
        }
        None => (i64::MIN, 0),
    };
    let base = f.base_slot.map(|s| &e.bases[s]);
    let present = b > a || (base.is_some() && e.pruned_newest.is_some());
    let num = |i: usize| e.nums[i * nn + f.column];
    let value = match f.kind {
        kind if kind.tiled() => {
            let slot = f.tile_slot.unwrap_or(0);
            // Features of one partial and one window (a count and a sum of the last hour) share
            // one pass over the tiles.
            let mut acc = match memo.iter().find(|m| m.0 == slot && m.1 == f.window) {
                Some(m) => m.2,
                None => {
                    let acc = window_partial(def, e, slot, lo, t, a, b);
                    memo.push((slot, f.window, acc));
                    acc
                }
            };
            if let Some(Base::Numbers { p, at }) = base
                && p.n > 0
            {
                let scale = if let Kind::Decayed(h) = kind { decay(t.saturating_sub(*at), h) } else { 1.0 };
                acc.merge(p, scale);
            }
            finish(kind, &acc)
        }
        // At or after the newest event: from the newest-occurrence index.
        Kind::Distinct | Kind::ApproxDistinct
            if b == e.ts.len() && f.seen.is_some() && !e.seen.newest.is_empty() =>
        {
            let (s, ns) = (f.seen.unwrap_or(0), def.seen.len());
            let newest = &e.seen.newest[s];
            // Tiles starting after `lo`, whole; the events of the tile holding `lo`, one by one.
            let ta = e.tiles.partition_point(|&start| start <= lo);
            let whole: u64 = (ta..e.tiles.len()).map(|ti| u64::from(e.seen.per_tile[ti * ns + s])).sum();
            let first_whole = e.tiles.get(ta).copied().unwrap_or(i64::MAX);
            let ea = e.ts.partition_point(|&x| x < first_whole);
            // A value of the partial tile counts there unless a whole tile holds a newer one.
            let edge = DISTINCT.with(|set| {
                let mut set = set.borrow_mut();
                set.clear();
                let partial = (a..ea).map(|i| e.cats[i * nc + f.column]);
                set.extend(partial.filter(|h| newest.get(h).is_some_and(|&n| n < first_whole)));
                set.len() as u64
            });
            Value::Count(whole + edge)
        }
        // A window of few events counts exactly: no sketch to allocate and fill.
        Kind::Distinct | Kind::ApproxDistinct
            if base.is_none() && (f.kind == Kind::Distinct || b - a <= EXACT_UP_TO) =>
        {
            DISTINCT.with(|set| {
                let mut set = set.borrow_mut();
                set.clear();
                set.extend((a..b).map(|i| e.cats[i * nc + f.column]));
                Value::Count(set.len() as u64)
            })
        }
        Kind::ApproxDistinct => {
            let mut h = match base {
                Some(Base::Sketch(h)) => h.clone(),
                _ => Hll::new(),
            };
            (a..b).for_each(|i| h.insert_hash(e.cats[i * nc + f.column]));
            Value::Count(h.estimate() as u64)
        }
        Kind::Last | Kind::LastN(_) => {
            let keep = if let Kind::LastN(n) = f.kind { n } else { 1 };
            let mut vals: Vec<f64> = (a..b).rev().take(keep).map(num).collect();
            if let Some(Base::Newest(old)) = base {
                vals.extend(old.iter().take(keep - vals.len()));
            }
            match f.kind {
                Kind::Last => vals.first().map_or(Value::Missing, |v| Value::Number(*v)),
                _ => Value::Numbers(vals),
            }
        }
        _ => Value::Missing,
    };
    (value, present)
}
