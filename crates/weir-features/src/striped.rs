//! A subtask's feature state, in stripes that lookups read while the operator writes others.
//!
//! The entities of a subtask are spread over [`STRIPES`] [`FeatureState`]s by a hash of their
//! key, each behind its own read-write lock. The operator applies a batch stripe by stripe, in
//! holds of at most [`EVENTS_PER_LOCK`] events of one stripe, so at any moment it holds at most
//! one stripe's write lock, for microseconds: a lookup waits only if its entity's stripe is the
//! one being written (about one lookup in [`STRIPES`] while the operator is busy), and then
//! spins through that hold rather than sleeping (a hold is shorter than a thread's wake-up).
//!
//! Invariants:
//! - An entity lives in exactly one stripe, [`Striped::stripe_of`] its key, for the life of the
//!   process (the hasher is chosen when the state is made; checkpoints save entities by key,
//!   never stripes).
//! - The subtask's watermark is [`Striped`]'s own, and so is the queue of entities to prune
//!   (one [`Expiry`] in the operator's [`Writer`], not one per stripe: a batch queues one entry
//!   per expiry time, as a single state does). A stripe is advanced to the watermark lazily:
//!   before events are applied to it (so an event is late or not whichever stripe holds it),
//!   and when entities of it are due (so idle entities are pruned and evicted when a single
//!   state would prune them). Lookups are refused before the subtask's horizon, not the
//!   stripe's. Advancing a stripe with nothing due only moves its watermark, so a lazy stripe
//!   answers every lookup as an advanced one would.
//! - A batch's events of one entity are applied in batch order (they are in one stripe, whose
//!   rows keep batch order), so ties and `Last` keep arrival order as in one state.
//! - [`Striped::events_handled`] grows by whole batches, after each stripe applied its part:
//!   once it reached `n`, every one of the first `n` events is visible to lookups.

use std::hash::{BuildHasher, Hash, RandomState};
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use parking_lot::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::error::Result;
use crate::state::{Columns, Entity, Expiry, FeatureState, check_horizon, cutoff};
use crate::view::{FeatureRow, FeatureView};

/// How long a lookup spins for a stripe being written before it sleeps on the lock: longer
/// than a hold of [`EVENTS_PER_LOCK`] events, so it sleeps only if the writer was preempted.
const SPIN: Duration = Duration::from_micros(100);

/// The stripes of a subtask's state: enough that a lookup rarely meets the stripe being
/// written (under one lookup in 200 while the operator is always busy).
pub(crate) const STRIPES: usize = 256;
const _: () =
    assert!(STRIPES.is_power_of_two() && STRIPES <= 256, "a stripe's index is a u8 and top hash bits");

/// The most events applied per hold of a stripe's write lock: about 10 µs of work, so that a
/// lookup that meets the stripe being written waits that long at most; the lock itself costs
/// tens of nanoseconds a hold.
pub const EVENTS_PER_LOCK: usize = 16;

/// The state of one subtask of a feature view's operator (see the module docs).
pub(crate) struct Striped<K, T> {
    view: FeatureView<K, T>,
    stripes: Box<[RwLock<FeatureState<K, T>>]>,
    /// The subtask's watermark (`i64::MIN` before the first).
    watermark: AtomicI64,
    hasher: RandomState,
    /// Events of the batches applied in full.
    handled: AtomicU64,
    /// The entities with state, kept by the writer as it applies, advances and restores.
    entities: AtomicUsize,
}

/// What only the writing operator keeps of a [`Striped`] state: the queue of entities to
/// prune, and scratch for spreading a batch over the stripes.
#[derive(Debug)]
pub(crate) struct Writer<K> {
    expiry: Expiry<K>,
    /// The expiry entries of the batch being applied.
    pending: Vec<(i64, K)>,
    /// The keys due at a watermark, then per stripe.
    due: Vec<K>,
    by_stripe: Vec<Vec<K>>,
    /// The batch's rows, grouped by stripe, in batch order within a stripe.
    rows: Vec<usize>,
    /// Per row, its stripe.
    stripe: Vec<u8>,
    /// Per stripe, where its rows start in `rows` (and the end, last).
    starts: Vec<usize>,
    /// Per stripe, where its next row goes, while sorting.
    next: Vec<usize>,
}

impl<K> Default for Writer<K> {
    fn default() -> Self {
        Writer {
            expiry: Expiry::default(),
            pending: Vec::new(),
            due: Vec::new(),
            by_stripe: (0..STRIPES).map(|_| Vec::new()).collect(),
            rows: Vec::new(),
            stripe: Vec::new(),
            starts: Vec::new(),
            next: Vec::new(),
        }
    }
}

impl<K: Hash + Eq + Clone, T> Striped<K, T> {
    /// Empty state of `view`.
    pub(crate) fn new(view: &FeatureView<K, T>) -> Self {
        Striped {
            view: view.clone(),
            stripes: (0..STRIPES).map(|_| RwLock::new(FeatureState::new(view.clone()))).collect(),
            watermark: AtomicI64::new(i64::MIN),
            hasher: RandomState::new(),
            handled: AtomicU64::new(0),
            entities: AtomicUsize::new(0),
        }
    }

    /// The stripe of `key`.
    fn stripe_of(&self, key: &K) -> usize {
        // A hash of the process's own, independent of the key group that chose the subtask:
        // every subtask's entities spread over all of its stripes.
        (self.hasher.hash_one(key) >> (64 - STRIPES.trailing_zeros())) as usize
    }

    /// The stripe of `key`, read-locked. A stripe is write-locked for one hold at most
    /// (microseconds): a lookup spins through it rather than sleep and wait to be woken.
    fn read(&self, key: &K) -> RwLockReadGuard<'_, FeatureState<K, T>> {
        let stripe = &self.stripes[self.stripe_of(key)];
        if let Some(state) = stripe.try_read() {
            return state;
        }
        let started = Instant::now();
        loop {
            for _ in 0..64 {
                std::hint::spin_loop();
                if let Some(state) = stripe.try_read() {
                    return state;
                }
            }
            if started.elapsed() > SPIN {
                return stripe.read();
            }
        }
    }

    /// The features of `entity` as of `t` (see [`FeatureState::lookup_at`]), refused before
    /// the subtask's horizon.
    pub(crate) fn lookup_at(&self, entity: &K, t: i64) -> Result<FeatureRow> {
        check_horizon(&self.view.def, self.watermark(), t)?;
        self.read(entity).lookup_at(entity, t)
    }

    /// The subtask's watermark.
    fn watermark(&self) -> i64 {
        self.watermark.load(Ordering::Acquire)
    }

    /// Write-locks stripe `s`, advanced to the subtask's watermark; runs `f` on it, then keeps
    /// the entity count, and hands the lock to a waiting lookup rather than taking it straight
    /// back.
    fn write<R>(&self, s: usize, f: impl FnOnce(&mut FeatureState<K, T>) -> R) -> R {
        let mut state = self.stripes[s].write();
        let before = state.entities();
        state.advance(self.watermark());
        let r = f(&mut state);
        let after = state.entities();
        if after >= before {
            self.entities.fetch_add(after - before, Ordering::Relaxed);
        } else {
            self.entities.fetch_sub(before - after, Ordering::Relaxed);
        }
        RwLockWriteGuard::unlock_fair(state);
        r
    }

    /// Applies the events of `c`, stripe by stripe, at most [`EVENTS_PER_LOCK`] per hold of a
    /// stripe's lock, each stripe's in batch order; the late events' indices end in `late`,
    /// sorted. Returns the entities with state.
    pub(crate) fn apply(&self, c: &Columns<K>, w: &mut Writer<K>, late: &mut Vec<usize>) -> usize {
        let n = c.ts.len();
        // A counting sort of the rows by stripe: stable, so each stripe keeps batch order.
        w.stripe.clear();
        w.stripe.extend(c.keys.iter().map(|k| self.stripe_of(k) as u8));
        w.starts.clear();
        w.starts.resize(STRIPES + 1, 0);
        for &s in &w.stripe {
            w.starts[usize::from(s) + 1] += 1;
        }
        for s in 0..STRIPES {
            w.starts[s + 1] += w.starts[s];
        }
        w.rows.clear();
        w.rows.resize(n, 0);
        w.next.clear();
        w.next.extend_from_slice(&w.starts);
        for (i, &s) in w.stripe.iter().enumerate() {
            w.rows[w.next[usize::from(s)]] = i;
            w.next[usize::from(s)] += 1;
        }
        for s in 0..STRIPES {
            for run in w.rows[w.starts[s]..w.starts[s + 1]].chunks(EVENTS_PER_LOCK) {
                self.write(s, |state| state.apply_rows(c, run.iter().copied(), late, &mut w.pending));
            }
        }
        w.expiry.queue(&mut w.pending);
        late.sort_unstable();
        self.handled.fetch_add(n as u64, Ordering::Release);
        self.entities()
    }

    /// Advances the subtask to `watermark` (a lower one is ignored), and at once the stripes
    /// with entities due to be pruned, pruning those (see the module docs); returns the
    /// entities left.
    pub(crate) fn advance(&self, watermark: i64, w: &mut Writer<K>) -> usize {
        if watermark > self.watermark() {
            self.watermark.store(watermark, Ordering::Release);
            w.expiry.pop_due(cutoff(&self.view.def, watermark), &mut w.due);
            for key in w.due.drain(..) {
                w.by_stripe[self.stripe_of(&key)].push(key);
            }
            for (s, keys) in w.by_stripe.iter_mut().enumerate().filter(|(_, keys)| !keys.is_empty()) {
                self.write(s, |state| state.expire(watermark, keys.drain(..)));
            }
        }
        self.entities()
    }

    /// Runs `f` on each stripe in turn, read-locked (lookups of the others go on).
    pub(crate) fn each<E>(
        &self,
        mut f: impl FnMut(&FeatureState<K, T>) -> std::result::Result<(), E>,
    ) -> std::result::Result<(), E> {
        self.stripes.iter().try_for_each(|s| f(&s.read()))
    }

    /// The sum of `f` over the stripes.
    fn sum(&self, f: impl Fn(&FeatureState<K, T>) -> u64) -> u64 {
        self.stripes.iter().map(|s| f(&s.read())).sum()
    }

    /// The entities with state.
    pub(crate) fn entities(&self) -> usize {
        self.entities.load(Ordering::Relaxed)
    }

    /// Approximate bytes of state (walks every entity).
    pub(crate) fn state_bytes(&self) -> usize {
        self.sum(|s| s.state_bytes() as u64) as usize
    }

    /// `(watermark, late events)` for checkpoints.
    pub(crate) fn meta(&self) -> (i64, u64) {
        (self.watermark(), self.late_events())
    }

    /// The late events dropped by this state.
    pub(crate) fn late_events(&self) -> u64 {
        self.sum(FeatureState::late_events)
    }

    /// The events of the batches applied in full (see the module docs).
    pub(crate) fn events_handled(&self) -> u64 {
        self.handled.load(Ordering::Acquire)
    }

    /// Restores a checkpoint's watermark and entities, each into its stripe, and queues them
    /// to be pruned.
    pub(crate) fn restore(&self, watermark: i64, entities: Vec<(K, Entity)>, w: &mut Writer<K>) {
        let mut parts: Vec<Vec<(K, Entity)>> = (0..STRIPES).map(|_| Vec::new()).collect();
        for (k, e) in entities {
            parts[self.stripe_of(&k)].push((k, e));
        }
        self.watermark.store(watermark, Ordering::Release);
        for (s, part) in parts.into_iter().enumerate() {
            self.write(s, |state| state.restore(watermark, 0, part, &mut w.pending));
        }
        w.expiry.queue(&mut w.pending);
    }
}

#[cfg(test)]
mod tests {
    //! [`Striped`] against one [`FeatureState`] fed the same batches and watermarks: the same
    //! late events, entities and lookups, whichever stripes the batches touch.

    use std::time::Duration;

    use proptest::prelude::*;

    use super::*;
    use crate::{Agg, FeatureError, Window};

    /// (user, event time, amount, merchant)
    type Txn = (u32, i64, i64, u32);

    fn view() -> FeatureView<u32, Txn> {
        let min = |m: u64| Window::Last(Duration::from_secs(60 * m));
        FeatureView::builder("striped")
            .entity(|t: &Txn| t.0)
            .event_time(|t| t.1)
            .allowed_lateness(Duration::from_secs(30))
            .tile(Duration::from_secs(10))
            .number("amount", |t| t.2 as f64)
            .category("merchant", |t| t.3)
            .feature("count_1m", Agg::Count, min(1))
            .feature("sum_5m", Agg::Sum("amount".into()), min(5))
            .feature("merchants_5m", Agg::ApproxDistinct("merchant".into()), min(5))
            .feature("last", Agg::Last("amount".into()), min(5))
            .build()
            .unwrap()
    }

    #[derive(Debug, Clone)]
    enum Step {
        Batch(Vec<Txn>),
        /// The watermark moves this far past the newest event time so far (or back, ignored).
        Watermark(i64),
        /// The watermark whose prune cutoff is the last ms of the tile this many tiles before
        /// the newest event's: the expiry time of the entities whose newest tile that is.
        Edge(i64),
    }

    fn steps() -> impl Strategy<Value = Vec<Step>> {
        // Users from a few (most stripes empty) to many (most stripes touched); event times
        // move on by up to 20 s per event, and some go back by up to 2 minutes (late ones).
        (1u32..600).prop_flat_map(|users| {
            let txn = (0..users, -120_000i64..20_000, 0i64..100, 0u32..8);
            let step = prop_oneof![
                3 => prop::collection::vec(txn, 1..80).prop_map(Step::Batch),
                1 => (-60_000i64..400_000).prop_map(Step::Watermark),
                1 => (0i64..40).prop_map(Step::Edge),
            ];
            prop::collection::vec(step, 1..40)
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        #[test]
        fn striped_state_answers_as_one_state(steps in steps()) {
            let (striped, mut one) = (Striped::new(&view()), FeatureState::new(view()));
            let (mut columns, mut w, mut late) = (Columns::default(), Writer::default(), Vec::new());
            let mut front = 1_000_000i64;
            let mut users = std::collections::BTreeSet::new();
            for step in steps {
                match step {
                    Step::Batch(deltas) => {
                        let events: Vec<Txn> = deltas
                            .iter()
                            .map(|&(u, d, a, m)| {
                                let ts = if d < 0 { front + d } else { front += d; front };
                                users.insert(u);
                                (u, ts, a, m)
                            })
                            .collect();
                        columns.fill(&view().def, &events);
                        late.clear();
                        striped.apply(&columns, &mut w, &mut late);
                        let mut want = Vec::new();
                        one.apply_columns(&columns, &mut want);
                        prop_assert_eq!(&late, &want, "late events");
                    }
                    Step::Watermark(ahead) => {
                        striped.advance(front + ahead, &mut w);
                        one.advance(front + ahead);
                    }
                    Step::Edge(back) => {
                        // cutoff = watermark - lateness (30 s) - the longest window (5 min).
                        let tile_end = front - front.rem_euclid(10_000) - back * 10_000 + 9_999;
                        striped.advance(tile_end + 330_000, &mut w);
                        one.advance(tile_end + 330_000);
                    }
                }
                prop_assert_eq!(striped.entities(), one.entities());
                prop_assert_eq!(striped.late_events(), one.late_events());
                prop_assert_eq!(striped.meta().0, one.watermark());
                for &u in users.iter().take(40) {
                    for t in [one.horizon().saturating_sub(1), one.horizon(), front - 70_000, front, front + 45_000] {
                        let (got, want) = (striped.lookup_at(&u, t), one.lookup_at(&u, t));
                        match (&got, &want) {
                            (Err(FeatureError::BeforeHorizon { .. }), Err(FeatureError::BeforeHorizon { .. })) => {}
                            _ => prop_assert_eq!(got.ok(), want.ok(), "user {} at {}", u, t),
                        }
                    }
                }
            }
        }
    }
}
