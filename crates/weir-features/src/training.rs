//! Training sets by replay: the feature values each label row `(entity, t)` would have seen,
//! computed by replaying the events through the same [`FeatureState`] the online operator
//! keeps — the same windows, tiles, edges and late rule, evaluated by the same lookup.
//!
//! Two flavours ([`Replay::as_happened`], [`Replay::as_served`]):
//!
//! | flavour | a row `(entity, t)` sees the entity's events with |
//! |---|---|
//! | *as happened* | event time `<= t`: every event, late ones included |
//! | *as served* | append time `<= t`, and not late when they arrived |
//!
//! *As happened* is the ground truth of the world at `t`: what a model would see if every
//! event had arrived on time. *As served* is what the online lookup returned at `t`: the events
//! the log had appended by then, minus those the operator dropped as late. They differ exactly
//! on the late events (those that arrived after a label's `t`, or beyond the allowed lateness);
//! training on *as served* reproduces the serving skew a model meets in production, training
//! on *as happened* removes it.
//!
//! # Invariants
//!
//! - *As happened* sorts the events by event time (stably: ties keep their log order, so the
//!   later one is the newest for [`Agg::Last`](crate::Agg::Last)) and answers each label after
//!   applying every event at or before its `t` and none after. The watermark follows the
//!   labels, so no event is ever late, and history no later label can see is pruned: the
//!   state stays the size of the online state (the events are held, sorted, besides).
//! - *As served* applies the events in append order, in runs of at most [`Replay::run`]
//!   events, advancing the watermark before each run to the largest event time seen minus the
//!   out-of-orderness bound — as a pipeline with
//!   [`Watermarks::bounded_out_of_orderness`] does per batch — so an event is late exactly
//!   when the online operator would drop it (up to where a batch boundary fell online: an
//!   event within a batch's span of the lateness bound can go either way). A label at `t` is
//!   answered after every event appended at or before `t`.
//!
//! [`Watermarks::bounded_out_of_orderness`]: weir_runtime::Watermarks::bounded_out_of_orderness

use std::hash::Hash;
use std::time::Duration;

use crate::error::{FeatureError, Result};
use crate::state::FeatureState;
use crate::view::{FeatureRow, FeatureView};

/// A label row: the entity and the time its features are wanted as of (ms since the epoch).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Label<K> {
    /// The entity.
    pub entity: K,
    /// The time, ms since the epoch.
    pub at: i64,
}

/// The rows of a training set, in the labels' order, and what the replay dropped.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainingSet {
    /// One row per label, in the labels' order.
    pub rows: Vec<FeatureRow>,
    /// Events of the whole log dropped as late (always 0 *as happened*).
    pub late_events: u64,
}

/// Replays events through a [`FeatureView`]'s state to answer label rows; see the
/// [module docs](self).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use weir_features::{Agg, FeatureView, Label, Replay, Value, Window};
///
/// let view = FeatureView::builder("clicks")
///     .entity(|e: &(&str, i64)| e.0.to_owned())
///     .event_time(|e| e.1)
///     .allowed_lateness(Duration::from_secs(10))
///     .feature("clicks_1m", Agg::Count, Window::Last(Duration::from_secs(60)))
///     .build()?;
/// // The event at 5 s was appended at 40 s, after the label at 30 s.
/// let events = vec![("u1", 1_000), ("u1", 20_000), ("u1", 5_000)];
/// let appended = vec![1_000, 20_000, 40_000];
/// let labels = [Label { entity: "u1".to_owned(), at: 30_000 }];
/// let replay = Replay::new(view);
/// let happened = replay.as_happened(events.clone(), &labels)?;
/// assert_eq!(happened.rows[0].values[0].value, Value::Count(3));
/// let served = replay.as_served(events, &appended, &labels)?;
/// assert_eq!(served.rows[0].values[0].value, Value::Count(2));
/// # Ok::<(), weir_features::FeatureError>(())
/// ```
#[derive(Debug, Clone)]
pub struct Replay<K, T> {
    view: FeatureView<K, T>,
    out_of_orderness: i64,
    run: usize,
}

impl<K: Hash + Eq + Clone, T> Replay<K, T> {
    /// A replay of `view`, with no out-of-orderness bound (the watermark *as served* is the
    /// largest event time seen, as [`Watermarks::monotonic`](weir_runtime::Watermarks)) and
    /// runs of 256 events.
    pub fn new(view: FeatureView<K, T>) -> Self {
        Replay { view, out_of_orderness: 0, run: 256 }
    }

    /// The out-of-orderness bound of the online pipeline's watermarks
    /// ([`Watermarks::bounded_out_of_orderness`](weir_runtime::Watermarks::bounded_out_of_orderness)), for *as served*.
    #[must_use]
    pub fn out_of_orderness(mut self, bound: Duration) -> Self {
        self.out_of_orderness = i64::try_from(bound.as_millis()).unwrap_or(i64::MAX);
        self
    }

    /// The most events applied between two watermark advances *as served* (at least 1): the
    /// online batch size. Default 256.
    #[must_use]
    pub fn run(mut self, events: usize) -> Self {
        self.run = events.max(1);
        self
    }

    /// The features of each label as of its `t` over every event with event time `<= t`.
    /// `events` in log order (ties in event time keep it).
    ///
    /// # Errors
    ///
    /// None in practice: lookups never fall before the replay's horizon. The signature
    /// leaves room for [`FeatureError`]s of the lookups.
    pub fn as_happened(&self, events: Vec<T>, labels: &[Label<K>]) -> Result<TrainingSet> {
        let def = &self.view.def;
        let mut ts = Vec::with_capacity(events.len());
        (def.event_time)(&events, &mut ts);
        let mut timed: Vec<(i64, T)> = ts.into_iter().zip(events).collect();
        timed.sort_by_key(|e| e.0);
        let (ts, events): (Vec<i64>, Vec<T>) = timed.into_iter().unzip();
        let mut state = FeatureState::new(self.view.clone());
        let mut next = 0;
        let rows = answer(labels, |group_at, group| {
            let end = next + ts[next..].partition_point(|&x| x <= group_at);
            state.apply_batch(&events[next..end]);
            next = end;
            // Every later event is after `group_at`, so after the horizon: never late.
            state.advance(group_at);
            group.iter().map(|l| state.lookup_at(&l.entity, group_at)).collect()
        })?;
        Ok(TrainingSet { rows, late_events: state.late_events() })
    }

    /// The features of each label as of its `t` as the online operator served them: over the
    /// events appended at or before `t` that were not late when they arrived. `events` in
    /// append order, `appended[i]` the append time of `events[i]` (ms since the epoch,
    /// non-decreasing; a pair out of order is sorted stably).
    ///
    /// # Errors
    ///
    /// [`FeatureError::InvalidConfig`] if `appended` and `events` differ in length;
    /// [`FeatureError::BeforeHorizon`] for a label whose `t` is behind the watermark's horizon
    /// at its append time (events with event times more than the allowed lateness ahead of
    /// their append times).
    pub fn as_served(&self, events: Vec<T>, appended: &[i64], labels: &[Label<K>]) -> Result<TrainingSet> {
        if appended.len() != events.len() {
            return Err(FeatureError::InvalidConfig {
                view: self.view.name().to_owned(),
                field: "appended".into(),
                reason: format!("holds {} append times for {} events", appended.len(), events.len()),
            });
        }
        let def = &self.view.def;
        let (appended, events) = if appended.is_sorted() {
            (appended.to_vec(), events)
        } else {
            let mut pairs: Vec<(i64, T)> = appended.iter().copied().zip(events).collect();
            pairs.sort_by_key(|p| p.0);
            pairs.into_iter().unzip()
        };
        let mut ts = Vec::with_capacity(events.len());
        (def.event_time)(&events, &mut ts);
        let mut state = FeatureState::new(self.view.clone());
        let mut cursor = Cursor { next: 0, newest: i64::MIN, bound: self.out_of_orderness, run: self.run };
        let rows = answer(labels, |group_at, group| {
            let end = cursor.next + appended[cursor.next..].partition_point(|&a| a <= group_at);
            cursor.apply_to(&mut state, &events, &ts, end);
            group.iter().map(|l| state.lookup_at(&l.entity, group_at)).collect()
        })?;
        // The rest, so that the late count is the whole log's, as the online operator's.
        cursor.apply_to(&mut state, &events, &ts, events.len());
        Ok(TrainingSet { rows, late_events: state.late_events() })
    }
}

/// How far *as served* has applied the events, and the newest event time among them.
struct Cursor {
    next: usize,
    newest: i64,
    bound: i64,
    run: usize,
}

impl Cursor {
    /// Applies the events up to `end` in runs, each judged against the watermark before it
    /// (the newest event time so far minus the bound), then advances the watermark past them.
    fn apply_to<K: Hash + Eq + Clone, T>(
        &mut self,
        state: &mut FeatureState<K, T>,
        events: &[T],
        ts: &[i64],
        end: usize,
    ) {
        while self.next < end {
            if self.newest > i64::MIN {
                state.advance(self.newest.saturating_sub(self.bound));
            }
            let stop = end.min(self.next + self.run);
            state.apply_batch(&events[self.next..stop]);
            self.newest = ts[self.next..stop].iter().copied().fold(self.newest, i64::max);
            self.next = stop;
        }
        if self.newest > i64::MIN {
            state.advance(self.newest.saturating_sub(self.bound));
        }
    }
}

/// Calls `at_time(t, labels at t)` for each distinct label time in increasing order and
/// returns the rows in the labels' order.
fn answer<K: Clone>(
    labels: &[Label<K>],
    mut at_time: impl FnMut(i64, &[Label<K>]) -> Result<Vec<FeatureRow>>,
) -> Result<Vec<FeatureRow>> {
    let mut order: Vec<u32> = (0..labels.len() as u32).collect();
    order.sort_by_key(|&i| labels[i as usize].at);
    let mut rows: Vec<Option<FeatureRow>> = vec![None; labels.len()];
    let mut group = Vec::new();
    let mut i = 0;
    while i < order.len() {
        let at = labels[order[i] as usize].at;
        let start = i;
        group.clear();
        while i < order.len() && labels[order[i] as usize].at == at {
            group.push(labels[order[i] as usize].clone());
            i += 1;
        }
        for (row, &j) in at_time(at, &group)?.into_iter().zip(&order[start..i]) {
            rows[j as usize] = Some(row);
        }
    }
    Ok(rows.into_iter().flatten().collect())
}
