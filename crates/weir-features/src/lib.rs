//! `weir-features`: feature views — per-entity aggregates over sliding event-time windows,
//! evaluated at lookup time, computed by the same code online (in a pipeline) and offline.
//!
//! ```text
//!  events ─► key_by(entity) ─► FeatureOperator ──(state, one shard per subtask)──► FeatureLookup
//!                               apply / advance      checkpointed per entity         lookup_at(entity, t)
//! ```
//!
//! # Semantics
//!
//! A [`FeatureView`] names an entity function, an event-time function (ms since the epoch), an
//! allowed lateness `L` and features, each an [`Agg`] over a [`Window`]:
//!
//! | window | the value as of `t` covers |
//! |---|---|
//! | [`Window::Last`]`(w)` | the accepted events of the entity with `t - w < ts <= t` |
//! | [`Window::Lifetime`] | the accepted events of the entity with `ts <= t` |
//!
//! Values are computed when looked up, so a 1-hour count decays without new events; nothing is
//! materialised. An event exactly at `t` counts; one exactly at `t - w` does not.
//!
//! - **Watermark and lateness.** The state follows a watermark `W` (in a pipeline, the
//!   pipeline's; standalone, [`FeatureState::advance`]). The *horizon* is `H = W - L`. An
//!   event with `ts <= H` is **late**: it is dropped, counted
//!   ([`FeatureState::late_events`]; in a pipeline also the job's late records) and, in a
//!   pipeline, emitted on the operator's output; never applied. Every other event is applied,
//!   in any order. In a pipeline the operator takes the watermarks that reach it, except the
//!   `i64::MAX` that ends a bounded input (it would prune everything): after a bounded job the
//!   state stays queryable as of its last watermark. Which events are late there depends on
//!   the watermark when they arrive, which with several input subtasks can depend on timing
//!   (the minimum over the inputs, held at its lowest until every input reported).
//! - **Lookups** at `t >= H` are exact with respect to the events applied so far; a lookup at
//!   `t < H` is refused ([`FeatureError::BeforeHorizon`]), because that history is pruned.
//! - **Status** per feature ([`Status`]): `Present` if the window holds events; `Expired` if
//!   it holds none but the entity has an event at or before `t` (the value is then that of no
//!   events — a count of 0 — never the old value); `Empty` if the entity has no known event at
//!   or before `t`. [`FeatureRow::newest_event`] is the newest known event time at or before
//!   `t`.
//! - **Ties.** Events with equal timestamps are kept in arrival order: the last one to arrive
//!   is the newest for [`Agg::Last`] and [`Agg::LastN`].
//!
//! # Serving
//!
//! [`FeatureLookup`] answers in process, from any thread: [`FeatureLookup::lookup`] (as of
//! the wall clock), [`FeatureLookup::lookup_at`] and [`FeatureLookup::lookup_many`]. With the
//! cargo feature `http`, `http::serve` answers `GET /features/<view>/<entity>[?at=<ms>]` with
//! the same rows as JSON, for any number of views, on loopback unless allowed otherwise (see
//! the module for the endpoint table).
//!
//! A view attached to a pipeline with metrics exports lookup latency (by path), freshness,
//! entities, state bytes and late events into the pipeline's registry: see [`metrics`].
//!
//! # Training sets
//!
//! [`Replay`] answers label rows `(entity, t)` by replaying logged events through the same
//! [`FeatureState`]: [`Replay::as_happened`] (every event with event time `<= t`, late ones
//! included) or [`Replay::as_served`] (the events appended by `t` that the late rule kept: what a
//! lookup at `t` returned online). See the [`training`] module for the rules; `examples/ml_features`
//! writes them as Parquet or CSV, and checks them against the running pipeline's own lookups.
//!
//! # State: tiles, exact edges, pruning, eviction
//!
//! Per entity the state keeps the *retained history*: the events that a lookup at or after
//! the horizon can still see (`ts > H - longest window`), as time-sorted columns (the event
//! time and one 8-byte value per input), and, once it holds 32 events or more, one row of
//! partial aggregates (count, sum, min, max, decayed sum) per non-empty **tile** (a quieter
//! entity is read from its few events). Tiles have one length, chosen from the windows so that
//! every window is a whole number of tiles ([`FeatureViewBuilder::tile`]).
//!
//! A lookup at an arbitrary `t` reads the tiles that lie entirely inside `(t - w, t]` from
//! their partials and the two partial **edge tiles** from their raw events: counts, sums,
//! minima and maxima are **exact at every millisecond**, not rounded to tiles. Exactness at
//! every `t` needs every event time in the window (the counts at all `t` determine them), so
//! the retained history holds one row per event of the longest window, plus the lateness;
//! tiles bound the *work* of a lookup (about `w / tile` partials plus two tiles of events),
//! not the memory. Last value and last N read the newest raw events. Distinct counts of a
//! busy entity (256 retained events or more) keep, per value, its newest occurrence and, per
//! tile, how many values have theirs there: a lookup at or after the entity's newest event
//! then reads tiles too; otherwise they count the window's raw events.
//!
//! When the watermark advances, the tiles before `H - longest window` are **pruned**: their
//! events are folded into the *bases* of the lifetime features (a partial aggregate, a
//! HyperLogLog sketch, the newest `N` values), whose size does not grow. An entity whose
//! every event is pruned is **evicted** — unless the view has lifetime features, whose bases
//! it keeps forever (a few bytes per feature; a sketch grows to at most 12 KiB). An evicted
//! entity looks `Empty`.
//!
//! An exact distinct count over a lifetime would grow without bound and is refused; the
//! approximate one ([`Agg::ApproxDistinct`], HyperLogLog with 2^14 registers) is exact for
//! small sets and otherwise within 0.81 % (one standard error). Over a window, where the
//! events are kept anyway, the approximate count is mostly exact (see [`Agg::ApproxDistinct`]).
//!
//! # Cost
//!
//! An event costs an append to its entity's columns and an update of one partial per input in
//! its tile (plus, for busy entities with windowed distinct counts, of its value's newest
//! occurrence). In a pipeline, a subtask's entities are spread by key over 64 stripes, each a
//! state behind its own read-write lock. The operator extracts a batch's columns without a
//! lock, then applies them stripe by stripe, at most [`EVENTS_PER_LOCK`] events per hold of a
//! stripe's write lock: a lookup waits only when its entity's stripe is the one being
//! written, and then for one hold (microseconds), never for a batch. `cargo bench -p weir-features --bench feature_updates`
//! prints updates per second per core, state bytes per entity and lookup latency.
//!
//! # Checkpoints
//!
//! In a pipeline ([`FeatureView::attach`]) the operator saves each entity's state under its
//! key (so it follows the key to another parallelism on restore) and the watermark, the late
//! count and the view's state layout as the subtask's meta; its checkpoint id is the view's
//! name. A restore takes the lowest saved watermark, counts the late events once whatever the
//! parallelism, and refuses the state of a view whose layout changed (inputs, partials, lifetime
//! features, tile length) under the same name: give a changed view a new name (`user_txn@v2`).
//! `tests/fixtures/features-v1` pins the encoding (layout `v1`).

mod error;
mod hash;
#[cfg(feature = "http")]
pub mod http;
pub mod metrics;
mod operator;
mod state;
mod striped;
pub mod training;
mod view;

pub use error::{FeatureError, Result};
pub use operator::{FeatureLookup, FeatureOperator};
pub use state::FeatureState;
pub use striped::EVENTS_PER_LOCK;
pub use training::{Label, Replay, TrainingSet};
pub use view::{Agg, FeatureRow, FeatureValue, FeatureView, FeatureViewBuilder, Status, Value, Window};

// The brute-force model again, inside the crate, where entities keep tiles and index their
// distinct values from a few events on (see `state::TILED_FROM` and `state::INDEXED_FROM`).
#[cfg(test)]
extern crate self as weir_features;
#[cfg(test)]
#[path = "../tests/model.rs"]
mod model_with_small_index;

#[cfg(test)]
mod tests {
    fn send_sync<T: Send + Sync>() {}

    #[test]
    fn public_types_are_send_and_sync() {
        type Ev = (String, i64);
        send_sync::<crate::FeatureView<String, Ev>>();
        send_sync::<crate::FeatureViewBuilder<String, Ev>>();
        send_sync::<crate::FeatureState<String, Ev>>();
        send_sync::<crate::FeatureOperator<String, Ev>>();
        send_sync::<crate::FeatureLookup<String, Ev>>();
        send_sync::<crate::FeatureRow>();
        send_sync::<crate::FeatureError>();
    }
}
