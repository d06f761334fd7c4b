//! Feature view definitions: the entity, the event time, the inputs and the features.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use weir_runtime::{KeyedStream, Stream};

use crate::error::{FeatureError, Result};
use crate::hash::hash_value;

/// The window a feature aggregates over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Window {
    /// The last `w` of event time as of the lookup time `t`: events with `t - w < ts <= t`.
    Last(Duration),
    /// Every accepted event at or before the lookup time `t`.
    Lifetime,
}

/// What a feature computes over the events of its window. Inputs are named by the view's
/// [`FeatureViewBuilder::number`] and [`FeatureViewBuilder::category`] calls.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Agg {
    /// The number of events ([`Value::Count`]).
    Count,
    /// The sum of a number input ([`Value::Number`], 0 without events). Exact for integer
    /// inputs while every partial sum stays below 2^53 in magnitude.
    Sum(String),
    /// The mean of a number input ([`Value::Number`]; [`Value::Missing`] without events).
    Avg(String),
    /// The smallest value of a number input ([`Value::Missing`] without events).
    Min(String),
    /// The largest value of a number input ([`Value::Missing`] without events).
    Max(String),
    /// The exact number of distinct values of an input ([`Value::Count`]), compared by a 64-bit
    /// hash of their encoding (two distinct values collide with probability 2^-64). Windowed
    /// only: a lifetime count of distinct values needs unbounded state.
    Distinct(String),
    /// The approximate number of distinct values of an input ([`Value::Count`]). Over a
    /// window it is counted exactly as [`Agg::Distinct`] when the lookup is at or after the
    /// entity's newest event or the window holds at most 65 536 events (its events are kept
    /// anyway, for exact edges); beyond that, and over a lifetime (whose pruned part is a
    /// sketch), HyperLogLog with 2^14 registers: exact below a few hundred values, above that a
    /// relative standard error of 0.81 % (99.7 % of estimates within 2.5 %).
    ApproxDistinct(String),
    /// The number input of the newest event ([`Value::Number`]; [`Value::Missing`] without
    /// events). Among events with equal timestamps the one that arrived last is the newest.
    Last(String),
    /// The number inputs of the newest `n` events, newest first ([`Value::Numbers`], empty
    /// without events).
    LastN(String, usize),
    /// `Σ value · 2^(-(t - ts) / half_life)` over the window's events ([`Value::Number`], 0
    /// without events): exact up to floating-point rounding.
    DecayedSum(String, Duration),
}

impl Agg {
    /// The input the aggregation reads, if any.
    fn input(&self) -> Option<&str> {
        match self {
            Agg::Count => None,
            Agg::Sum(i)
            | Agg::Avg(i)
            | Agg::Min(i)
            | Agg::Max(i)
            | Agg::Distinct(i)
            | Agg::ApproxDistinct(i)
            | Agg::Last(i)
            | Agg::LastN(i, _)
            | Agg::DecayedSum(i, _) => Some(i),
        }
    }
}

/// A feature's value as of a lookup time.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Value {
    /// A count: [`Agg::Count`], [`Agg::Distinct`], [`Agg::ApproxDistinct`].
    Count(u64),
    /// A number: [`Agg::Sum`], [`Agg::Avg`], [`Agg::Min`], [`Agg::Max`], [`Agg::Last`],
    /// [`Agg::DecayedSum`].
    Number(f64),
    /// Numbers, newest first: [`Agg::LastN`].
    Numbers(Vec<f64>),
    /// No value: a mean, minimum, maximum or last value of no events.
    Missing,
}

/// Whether a feature's window held events as of the lookup time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Status {
    /// The window holds at least one event.
    Present,
    /// The window holds no event, but the entity has an event at or before the lookup time:
    /// the window has passed it. The value is that of no events (a count of 0), never the
    /// old one.
    Expired,
    /// The entity has no known event at or before the lookup time (never seen, or evicted).
    Empty,
}

/// One feature of a lookup: its status and value.
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureValue {
    /// Whether the window held events.
    pub status: Status,
    /// The value (that of no events unless [`Status::Present`]).
    pub value: Value,
}

/// The features of one entity as of one time.
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureRow {
    /// The lookup time, ms since the epoch.
    pub at: i64,
    /// The event time of the entity's newest known event at or before `at`.
    pub newest_event: Option<i64>,
    /// One value per feature, in the order the view defines them
    /// ([`FeatureView::feature_names`]).
    pub values: Vec<FeatureValue>,
}

/// Extracts a column from a batch of events: one dynamic call per batch, not per event.
pub(crate) type Column<T, V> = Arc<dyn Fn(&[T], &mut Vec<V>) + Send + Sync>;

/// Partitions a stream by entity.
pub(crate) type KeyBy<K, T> = Arc<dyn Fn(Stream<T>) -> KeyedStream<K, T> + Send + Sync>;

/// A number or category input.
pub(crate) enum Input<T> {
    Number(Column<T, f64>),
    Category(Column<T, u64>),
}

/// One feature, resolved against the inputs.
#[derive(Debug, Clone)]
pub(crate) struct FeatureDef {
    pub(crate) name: String,
    pub(crate) kind: Kind,
    /// The window length in ms; `None` for lifetime.
    pub(crate) window: Option<i64>,
    /// The feature's column: in the numbers for number aggregations, in the hashes for
    /// distinct counts.
    pub(crate) column: usize,
    /// The slot of its partial aggregate per tile, for kinds kept in tiles.
    pub(crate) tile_slot: Option<usize>,
    /// The slot of its base (folded pruned events), for lifetime features.
    pub(crate) base_slot: Option<usize>,
    /// For windowed distinct counts: the index of its category in [`ViewDef::seen`].
    pub(crate) seen: Option<usize>,
}

/// What a feature computes, with inputs resolved.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Kind {
    Count,
    Sum,
    Avg,
    Min,
    Max,
    Distinct,
    ApproxDistinct,
    Last,
    LastN(usize),
    /// Half-life in ms.
    Decayed(f64),
}

impl Kind {
    /// Kinds whose partial aggregates are kept per tile.
    pub(crate) fn tiled(self) -> bool {
        matches!(self, Kind::Count | Kind::Sum | Kind::Avg | Kind::Min | Kind::Max | Kind::Decayed(_))
    }
}

pub(crate) struct ViewDef<K, T> {
    pub(crate) name: String,
    pub(crate) entities: Column<T, K>,
    /// `key_by` on the entity, with the entity function statically dispatched per event.
    pub(crate) key_by: KeyBy<K, T>,
    pub(crate) event_time: Column<T, i64>,
    pub(crate) lateness: i64,
    pub(crate) tile: i64,
    /// The longest window in ms (0 for a view of lifetime features only).
    pub(crate) max_window: i64,
    pub(crate) has_lifetime: bool,
    pub(crate) numbers: Vec<Column<T, f64>>,
    pub(crate) categories: Vec<Column<T, u64>>,
    pub(crate) features: Vec<FeatureDef>,
    /// The partial aggregates kept per tile (one per number input and decayed half-life that
    /// a tiled feature reads, shared by its windows), and the number of them.
    pub(crate) slots: Vec<Slot>,
    pub(crate) tiled: usize,
    /// The category columns windowed distinct counts read: each gets an index of its values'
    /// newest occurrences (not saved in checkpoints: rebuilt from the events on restore).
    pub(crate) seen: Vec<usize>,
}

impl<K, T> ViewDef<K, T> {
    /// What the saved state of an entity depends on: a checkpoint of another layout cannot be
    /// read by this view.
    pub(crate) fn layout(&self) -> String {
        let bases: Vec<String> =
            self.features.iter().filter(|f| f.base_slot.is_some()).map(|f| format!("{:?}", f.kind)).collect();
        format!(
            "v1 tile {} ms, {} numbers, {} categories, partials {:?}, lifetime {:?}",
            self.tile,
            self.numbers.len(),
            self.categories.len(),
            self.slots,
            bases
        )
    }
}

/// One partial aggregate per tile: of a number input (`None`: counts only), decayed with a
/// half-life in ms, or not.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Slot {
    pub(crate) column: Option<usize>,
    pub(crate) half_life: Option<f64>,
}

/// A feature view: the definition of per-entity features over event-time windows. Cheap to
/// clone (shared).
///
/// Build one with [`FeatureView::builder`]; compute it with a
/// [`FeatureState`](crate::FeatureState), or in a pipeline with
/// [`FeatureView::attach`](crate::FeatureView::attach).
pub struct FeatureView<K, T> {
    pub(crate) def: Arc<ViewDef<K, T>>,
}

impl<K, T> Clone for FeatureView<K, T> {
    fn clone(&self) -> Self {
        FeatureView { def: self.def.clone() }
    }
}

impl<K, T> std::fmt::Debug for FeatureView<K, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FeatureView")
            .field("name", &self.def.name)
            .field("features", &self.feature_names().collect::<Vec<_>>())
            .field("lateness_ms", &self.def.lateness)
            .field("tile_ms", &self.def.tile)
            .finish()
    }
}

impl<K, T> FeatureView<K, T> {
    /// A builder for the view `name` (its identity in checkpoints: keep it when the program
    /// changes, change it when the features change incompatibly, e.g. `user_txn@v2`).
    pub fn builder(name: &str) -> FeatureViewBuilder<K, T> {
        FeatureViewBuilder {
            name: name.to_owned(),
            entity: None,
            event_time: None,
            lateness: Duration::ZERO,
            tile: None,
            inputs: Vec::new(),
            features: Vec::new(),
        }
    }

    /// The view's name.
    pub fn name(&self) -> &str {
        &self.def.name
    }

    /// The features' names, in definition order (the order of [`FeatureRow::values`]).
    pub fn feature_names(&self) -> impl Iterator<Item = &str> {
        self.def.features.iter().map(|f| f.name.as_str())
    }

    /// The tile length in ms (see the [crate docs](crate)).
    pub fn tile_ms(&self) -> i64 {
        self.def.tile
    }
}

/// Builds a [`FeatureView`]; [`FeatureViewBuilder::build`] checks it.
pub struct FeatureViewBuilder<K, T> {
    name: String,
    entity: Option<(Column<T, K>, KeyBy<K, T>)>,
    event_time: Option<Column<T, i64>>,
    lateness: Duration,
    tile: Option<Duration>,
    inputs: Vec<(String, Input<T>)>,
    features: Vec<(String, Agg, Window)>,
}

impl<K, T> std::fmt::Debug for FeatureViewBuilder<K, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FeatureViewBuilder").field("name", &self.name).finish_non_exhaustive()
    }
}

fn ms(d: Duration) -> i64 {
    d.as_millis().min(i64::MAX as u128) as i64
}

/// The largest divisor of `n` (positive) that is at most `limit` (at least 1).
fn largest_divisor_at_most(n: i64, limit: i64) -> i64 {
    let mut best = 1;
    let mut d = 1;
    while d <= n / d {
        if n % d == 0 {
            for c in [d, n / d] {
                if c <= limit {
                    best = best.max(c);
                }
            }
        }
        d += 1;
    }
    best
}

fn gcd(a: i64, b: i64) -> i64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

impl<K: 'static, T: 'static> FeatureViewBuilder<K, T> {
    /// The entity an event belongs to (required): features are kept per entity.
    pub fn entity<F>(mut self, f: F) -> Self
    where
        F: Fn(&T) -> K + Send + Sync + 'static,
        K: Hash + Eq + Clone + Send + Serialize,
        T: Send,
    {
        let f = Arc::new(f);
        let column: Column<T, K> = {
            let f = f.clone();
            Arc::new(move |events, out| out.extend(events.iter().map(|e| f(e))))
        };
        let key_by: KeyBy<K, T> = Arc::new(move |s: Stream<T>| {
            let f = f.clone();
            s.key_by(move |e| f(e))
        });
        self.entity = Some((column, key_by));
        self
    }

    /// The event time of an event, ms since the epoch (required). In a pipeline, assign the
    /// same timestamps (`assign_timestamps`) so that watermarks speak of this time.
    pub fn event_time(mut self, f: impl Fn(&T) -> i64 + Send + Sync + 'static) -> Self {
        self.event_time = Some(Arc::new(move |events, out| out.extend(events.iter().map(&f))));
        self
    }

    /// How far behind the watermark an event may be and still count. Default: zero (an event
    /// at or behind the watermark is late). Late events are counted and dropped, never
    /// applied.
    pub fn allowed_lateness(mut self, lateness: Duration) -> Self {
        self.lateness = lateness;
        self
    }

    /// The tile length. Default: the largest divisor of the windows' greatest common divisor
    /// that is at most a quarter of the shortest window (one minute for a view of lifetime
    /// features only). It must divide every window.
    pub fn tile(mut self, tile: Duration) -> Self {
        self.tile = Some(tile);
        self
    }

    /// A number input named `name`, for [`Agg::Sum`], [`Agg::Avg`] and the others.
    pub fn number(mut self, name: &str, f: impl Fn(&T) -> f64 + Send + Sync + 'static) -> Self {
        let column: Column<T, f64> = Arc::new(move |events, out| out.extend(events.iter().map(&f)));
        self.inputs.push((name.to_owned(), Input::Number(column)));
        self
    }

    /// A category input named `name` (compared by a stable 64-bit hash of its postcard
    /// encoding), for [`Agg::Distinct`] and [`Agg::ApproxDistinct`].
    pub fn category<V: Serialize>(mut self, name: &str, f: impl Fn(&T) -> V + Send + Sync + 'static) -> Self {
        let column: Column<T, u64> = Arc::new(move |events, out| {
            crate::hash::with_scratch(|scratch| out.extend(events.iter().map(|e| hash_value(scratch, &f(e)))))
        });
        self.inputs.push((name.to_owned(), Input::Category(column)));
        self
    }

    /// A feature named `name`: `agg` over `window`.
    pub fn feature(mut self, name: &str, agg: Agg, window: Window) -> Self {
        self.features.push((name.to_owned(), agg, window));
        self
    }

    /// Checks the definition.
    ///
    /// # Errors
    ///
    /// [`FeatureError::InvalidConfig`] naming the field: no entity or event time, no feature,
    /// a name used twice, an unknown input, an input of the wrong kind (a number aggregation
    /// of a category), an empty window, a lifetime exact distinct count, `LastN` of 0, a
    /// half-life of zero, a tile that does not divide a window.
    pub fn build(self) -> Result<FeatureView<K, T>> {
        let view = self.name.clone();
        let invalid =
            |field: String, reason: String| FeatureError::InvalidConfig { view: view.clone(), field, reason };
        let entity = self.entity.ok_or_else(|| invalid("entity".into(), "is required".into()))?;
        let event_time = self.event_time.ok_or_else(|| invalid("event_time".into(), "is required".into()))?;
        if self.features.is_empty() {
            return Err(invalid("features".into(), "a view needs at least one feature".into()));
        }
        let mut inputs: HashMap<&str, (bool, usize)> = HashMap::new();
        let (mut numbers, mut categories) = (Vec::new(), Vec::new());
        for (name, input) in &self.inputs {
            let slot = match input {
                Input::Number(c) => {
                    numbers.push(c.clone());
                    (true, numbers.len() - 1)
                }
                Input::Category(c) => {
                    categories.push(c.clone());
                    (false, categories.len() - 1)
                }
            };
            if inputs.insert(name, slot).is_some() {
                return Err(invalid(format!("input {name}"), "is defined twice".into()));
            }
        }
        let mut features = Vec::new();
        let (mut slots, mut bases, mut windows) = (Vec::new(), 0, Vec::new());
        let mut seen_columns = Vec::new();
        let mut names = std::collections::HashSet::new();
        for (name, agg, window) in &self.features {
            let field = || format!("feature {name}");
            if !names.insert(name.as_str()) {
                return Err(invalid(field(), "the name is used twice".into()));
            }
            let window = match *window {
                Window::Last(d) if ms(d) <= 0 => {
                    return Err(invalid(field(), "the window must be at least 1 ms".into()));
                }
                Window::Last(d) => Some(ms(d)),
                Window::Lifetime => None,
            };
            let (number, column) = match agg.input() {
                None => (true, 0),
                Some(input) => *inputs
                    .get(input)
                    .ok_or_else(|| invalid(field(), format!("no input is named {input}")))?,
            };
            let kind = match agg {
                Agg::Count => Kind::Count,
                Agg::Sum(_) => Kind::Sum,
                Agg::Avg(_) => Kind::Avg,
                Agg::Min(_) => Kind::Min,
                Agg::Max(_) => Kind::Max,
                Agg::Distinct(_) if window.is_none() => {
                    return Err(invalid(field(), "an exact distinct count needs a window (its state would grow without bound); use ApproxDistinct".into()));
                }
                Agg::Distinct(_) => Kind::Distinct,
                Agg::ApproxDistinct(_) => Kind::ApproxDistinct,
                Agg::Last(_) => Kind::Last,
                Agg::LastN(_, 0) => return Err(invalid(field(), "LastN needs n of at least 1".into())),
                Agg::LastN(_, n) => Kind::LastN(*n),
                Agg::DecayedSum(_, h) if h.is_zero() => {
                    return Err(invalid(field(), "the half-life must be positive".into()));
                }
                Agg::DecayedSum(_, h) => Kind::Decayed(h.as_secs_f64() * 1000.0),
            };
            let categorical = matches!(kind, Kind::Distinct | Kind::ApproxDistinct);
            if !number && !categorical {
                return Err(invalid(field(), format!("{kind:?} needs a number input, not a category")));
            }
            if number && categorical && agg.input().is_some() {
                return Err(invalid(field(), "a distinct count needs a category input".into()));
            }
            let tile_slot = kind.tiled().then(|| {
                let slot = match kind {
                    Kind::Count => Slot { column: None, half_life: None },
                    Kind::Decayed(h) => Slot { column: Some(column), half_life: Some(h) },
                    _ => Slot { column: Some(column), half_life: None },
                };
                slots.iter().position(|s| *s == slot).unwrap_or_else(|| {
                    slots.push(slot);
                    slots.len() - 1
                })
            });
            let base_slot = window.is_none().then(|| {
                bases += 1;
                bases - 1
            });
            windows.extend(window);
            let seen = (categorical && window.is_some()).then(|| {
                seen_columns.iter().position(|c| *c == column).unwrap_or_else(|| {
                    seen_columns.push(column);
                    seen_columns.len() - 1
                })
            });
            features.push(FeatureDef {
                name: name.clone(),
                kind,
                window,
                column,
                tile_slot,
                base_slot,
                seen,
            });
        }
        // Counts read the event count of any undecayed slot: drop a counts-only slot if there
        // is one.
        if let Some(counts) = slots.iter().position(|s| s.column.is_none())
            && let Some(other) = slots.iter().position(|s| s.column.is_some() && s.half_life.is_none())
        {
            slots.remove(counts);
            let other = if other > counts { other - 1 } else { other };
            for f in &mut features {
                match f.tile_slot {
                    Some(s) if s == counts => f.tile_slot = Some(other),
                    Some(s) if s > counts => f.tile_slot = Some(s - 1),
                    _ => {}
                }
            }
        }
        let common = windows.iter().copied().reduce(gcd);
        let tile = match (self.tile, common) {
            (Some(t), _) if ms(t) <= 0 => return Err(invalid("tile".into(), "must be at least 1 ms".into())),
            (Some(t), Some(g)) if g % ms(t) != 0 => {
                return Err(invalid("tile".into(), format!("{} ms does not divide every window", ms(t))));
            }
            (Some(t), _) => ms(t),
            (None, None) => 60_000,
            (None, Some(g)) => {
                let limit = (windows.iter().min().copied().unwrap_or(1) / 4).max(1);
                largest_divisor_at_most(g, limit)
            }
        };
        let (entities, key_by) = entity;
        Ok(FeatureView {
            def: Arc::new(ViewDef {
                name: self.name,
                entities,
                key_by,
                event_time,
                lateness: ms(self.lateness),
                tile,
                max_window: windows.iter().copied().max().unwrap_or(0),
                has_lifetime: bases > 0,
                numbers,
                categories,
                features,
                tiled: slots.len(),
                slots,
                seen: seen_columns,
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Ev = (u32, i64, f64, &'static str);

    fn builder() -> FeatureViewBuilder<u32, Ev> {
        FeatureView::builder("v")
            .entity(|e: &Ev| e.0)
            .event_time(|e| e.1)
            .number("amount", |e| e.2)
            .category("merchant", |e| e.3)
    }

    fn field_of(b: FeatureViewBuilder<u32, Ev>) -> String {
        match b.build() {
            Err(FeatureError::InvalidConfig { field, .. }) => field,
            other => panic!("not refused: {other:?}"),
        }
    }

    const MIN5: Duration = Duration::from_secs(300);

    #[test]
    fn invalid_definitions_are_refused_naming_the_field() {
        let no_entity = FeatureView::<u32, Ev>::builder("v").event_time(|e| e.1).feature(
            "c",
            Agg::Count,
            Window::Lifetime,
        );
        assert_eq!(field_of(no_entity), "entity");
        assert_eq!(field_of(builder()), "features");
        let f = |agg: Agg, w: Window| builder().feature("f", agg, w);
        assert_eq!(field_of(f(Agg::Sum("nope".into()), Window::Lifetime)), "feature f");
        assert_eq!(field_of(f(Agg::Sum("merchant".into()), Window::Lifetime)), "feature f");
        assert_eq!(field_of(f(Agg::Distinct("amount".into()), Window::Last(MIN5))), "feature f");
        assert_eq!(field_of(f(Agg::Distinct("merchant".into()), Window::Lifetime)), "feature f");
        assert_eq!(field_of(f(Agg::LastN("amount".into(), 0), Window::Lifetime)), "feature f");
        assert_eq!(
            field_of(f(Agg::DecayedSum("amount".into(), Duration::ZERO), Window::Lifetime)),
            "feature f"
        );
        assert_eq!(field_of(f(Agg::Count, Window::Last(Duration::ZERO))), "feature f");
        let twice = f(Agg::Count, Window::Lifetime).feature("f", Agg::Count, Window::Last(MIN5));
        assert_eq!(field_of(twice), "feature f");
        let bad_tile = f(Agg::Count, Window::Last(MIN5)).tile(Duration::from_secs(7));
        assert_eq!(field_of(bad_tile), "tile");
        assert_eq!(
            field_of(builder().number("amount", |e| e.2).feature("c", Agg::Count, Window::Lifetime)),
            "input amount"
        );
    }

    #[test]
    fn features_of_one_input_share_one_partial_per_tile_whatever_their_windows() {
        let hour = Window::Last(Duration::from_secs(3600));
        let view = builder()
            .feature("count", Agg::Count, Window::Last(MIN5))
            .feature("count_1h", Agg::Count, hour)
            .feature("sum", Agg::Sum("amount".into()), Window::Last(MIN5))
            .feature("max_1h", Agg::Max("amount".into()), hour)
            .feature("life", Agg::Avg("amount".into()), Window::Lifetime)
            .build()
            .unwrap();
        assert_eq!(view.def.tiled, 1);
        let decayed = builder()
            .feature("count", Agg::Count, Window::Last(MIN5))
            .feature("decayed", Agg::DecayedSum("amount".into(), Duration::from_secs(60)), Window::Lifetime)
            .build()
            .unwrap();
        assert_eq!(decayed.def.tiled, 2, "counts alone, and the decayed sum");
    }

    #[test]
    fn the_default_tile_divides_every_window_and_is_at_most_a_quarter_of_the_shortest() {
        let hour = Duration::from_secs(3600);
        let view = builder()
            .feature("a", Agg::Count, Window::Last(MIN5))
            .feature("b", Agg::Count, Window::Last(hour))
            .feature("c", Agg::Count, Window::Last(24 * hour))
            .build()
            .unwrap();
        assert_eq!(view.tile_ms(), 75_000);
        let odd = builder().feature("a", Agg::Count, Window::Last(Duration::from_millis(7))).build().unwrap();
        assert_eq!(odd.tile_ms(), 1);
        let lifetime = builder().feature("a", Agg::Count, Window::Lifetime).build().unwrap();
        assert_eq!(lifetime.tile_ms(), 60_000);
    }
}
