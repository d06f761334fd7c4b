//! Feature state against a brute-force model: every feature, at many lookup times, equals a
//! recomputation over the raw list of accepted events, with duplicates, events out of order
//! within the lateness, late events, events exactly at `t` and at `t - w`, and evictions.

#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

use std::collections::HashSet;
use std::time::Duration;

use proptest::prelude::*;
use weir_features::{Agg, FeatureError, FeatureState, FeatureView, Status, Value, Window};

/// (entity, event time, amount, merchant)
type Event = (u8, i64, i64, u8);

#[derive(Debug, Clone)]
enum Op {
    /// An event `back` ms behind the clock, after the clock moved on by `step`.
    Event { entity: u8, step: i64, back: i64, amount: i64, merchant: u8 },
    /// The watermark moves to the clock minus `behind`.
    Watermark { behind: i64 },
    /// A lookup at a time `pick` selects (see `lookup_time`).
    Lookup { entity: u8, pick: u8, offset: i64 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..3u8, 0..4i64, 0..12i64, -50..100i64, 0..6u8)
            .prop_map(|(entity, step, back, amount, merchant)| Op::Event { entity, step, back, amount, merchant }),
        1 => (0..6i64).prop_map(|behind| Op::Watermark { behind }),
        3 => (0..3u8, 0..6u8, 0..40i64).prop_map(|(entity, pick, offset)| Op::Lookup { entity, pick, offset }),
    ]
}

const HALF_LIFE: f64 = 7.0;

/// (name, kind, window in ms or None for lifetime)
fn features(lifetime: bool) -> Vec<(&'static str, Agg, Option<u64>)> {
    let a = || "amount".to_owned();
    let m = || "merchant".to_owned();
    let h = Duration::from_millis(HALF_LIFE as u64);
    let mut f = vec![
        ("count_10", Agg::Count, Some(10)),
        ("count_25", Agg::Count, Some(25)),
        ("sum_10", Agg::Sum(a()), Some(10)),
        ("avg_25", Agg::Avg(a()), Some(25)),
        ("min_10", Agg::Min(a()), Some(10)),
        ("max_25", Agg::Max(a()), Some(25)),
        ("distinct_25", Agg::Distinct(m()), Some(25)),
        ("approx_10", Agg::ApproxDistinct(m()), Some(10)),
        ("last_10", Agg::Last(a()), Some(10)),
        ("last3_25", Agg::LastN(a(), 3), Some(25)),
        ("decay_25", Agg::DecayedSum(a(), h), Some(25)),
    ];
    if lifetime {
        f.extend([
            ("count_life", Agg::Count, None),
            ("sum_life", Agg::Sum(a()), None),
            ("min_life", Agg::Min(a()), None),
            ("avg_life", Agg::Avg(a()), None),
            ("approx_life", Agg::ApproxDistinct(m()), None),
            ("last_life", Agg::Last(a()), None),
            ("last2_life", Agg::LastN(a(), 2), None),
            ("decay_life", Agg::DecayedSum(a(), h), None),
        ]);
    }
    f
}

fn view(lifetime: bool, tile: u64, lateness: u64) -> FeatureView<u8, Event> {
    let mut b = FeatureView::builder("model")
        .entity(|e: &Event| e.0)
        .event_time(|e| e.1)
        .allowed_lateness(Duration::from_millis(lateness))
        .tile(Duration::from_millis(tile))
        .number("amount", |e| e.2 as f64)
        .category("merchant", |e| e.3);
    for (name, agg, window) in features(lifetime) {
        let w = window.map_or(Window::Lifetime, |ms| Window::Last(Duration::from_millis(ms)));
        b = b.feature(name, agg, w);
    }
    b.build().unwrap()
}

/// The model: accepted events per entity (in arrival order), the watermark, the late count.
struct Model {
    events: Vec<Vec<(i64, i64, u8)>>,
    watermark: i64,
    late: u64,
    lateness: i64,
    tile: i64,
    lifetime: bool,
}

impl Model {
    fn horizon(&self) -> i64 {
        self.watermark.saturating_sub(self.lateness)
    }

    fn apply(&mut self, (entity, ts, amount, merchant): Event) {
        if ts <= self.horizon() {
            self.late += 1;
        } else {
            self.events[entity as usize].push((ts, amount, merchant));
        }
    }

    fn advance(&mut self, w: i64) {
        if w <= self.watermark {
            return;
        }
        self.watermark = w;
        if !self.lifetime {
            // An entity all of whose events lie in tiles no lookup from now on can see is evicted.
            let cutoff = self.horizon() - 25;
            let cut = (cutoff + 1).div_euclid(self.tile) * self.tile;
            for list in &mut self.events {
                if list.iter().all(|e| e.0 < cut) {
                    list.clear();
                }
            }
        }
    }

    /// Every feature's expected status and value, and the newest event at or before `t`.
    fn expect(&self, entity: u8, t: i64) -> (Option<i64>, Vec<(Status, Value)>) {
        let list = &self.events[entity as usize];
        let newest = list.iter().map(|e| e.0).filter(|&ts| ts <= t).max();
        let values = features(self.lifetime)
            .into_iter()
            .map(|(_, agg, window)| {
                // In arrival order; ties broken by it.
                let mut evs: Vec<(usize, &(i64, i64, u8))> = list
                    .iter()
                    .enumerate()
                    .filter(|(_, e)| e.0 <= t && window.is_none_or(|w| e.0 > t - w as i64))
                    .collect();
                evs.sort_by_key(|(i, e)| (e.0, *i));
                let nums: Vec<f64> = evs.iter().map(|(_, e)| e.1 as f64).collect();
                let n = nums.len();
                let opt = |v: Option<f64>| v.map_or(Value::Missing, Value::Number);
                let value = match agg {
                    Agg::Count => Value::Count(n as u64),
                    Agg::Sum(_) => Value::Number(nums.iter().sum()),
                    Agg::Avg(_) => opt((n > 0).then(|| nums.iter().sum::<f64>() / n as f64)),
                    Agg::Min(_) => opt(nums.iter().copied().reduce(f64::min)),
                    Agg::Max(_) => opt(nums.iter().copied().reduce(f64::max)),
                    Agg::Distinct(_) | Agg::ApproxDistinct(_) => {
                        Value::Count(evs.iter().map(|(_, e)| e.2).collect::<HashSet<_>>().len() as u64)
                    }
                    Agg::Last(_) => opt(nums.last().copied()),
                    Agg::LastN(_, k) => Value::Numbers(nums.iter().rev().take(k).copied().collect()),
                    Agg::DecayedSum(_, _) => Value::Number(
                        evs.iter().map(|(_, e)| e.1 as f64 * (-((t - e.0) as f64) / HALF_LIFE).exp2()).sum(),
                    ),
                    #[allow(unreachable_patterns)] // Agg is non-exhaustive outside this crate.
                    _ => unreachable!(),
                };
                let status = if n > 0 {
                    Status::Present
                } else if newest.is_some() {
                    Status::Expired
                } else {
                    Status::Empty
                };
                (status, value)
            })
            .collect();
        (newest, values)
    }
}

fn close(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => (x - y).abs() <= 1e-9 * x.abs().max(y.abs()).max(1.0),
        _ => a == b,
    }
}

fn check(ops: Vec<Op>, lifetime: bool, tile: u64, lateness: u64) -> Result<(), TestCaseError> {
    let view = view(lifetime, tile, lateness);
    let names: Vec<String> = view.feature_names().map(str::to_owned).collect();
    let mut state = FeatureState::new(view);
    let mut model = Model {
        events: vec![Vec::new(); 3],
        watermark: i64::MIN,
        late: 0,
        lateness: lateness as i64,
        tile: tile as i64,
        lifetime,
    };
    let mut clock = 1_000i64;
    let mut recent: Vec<i64> = vec![clock];
    for op in ops {
        match op {
            Op::Event { entity, step, back, amount, merchant } => {
                clock += step;
                let e = (entity, clock - back, amount, merchant);
                recent.push(e.1);
                model.apply(e);
                state.apply_batch(&[e]);
            }
            Op::Watermark { behind } => {
                model.advance(clock - behind);
                state.advance(clock - behind);
            }
            Op::Lookup { entity, pick, offset } => {
                let h = model.horizon().max(900);
                let base = recent[recent.len() - 1 - (offset as usize % recent.len().min(8))];
                // Exactly at an event, at `ts + w` (the event just left) and one before.
                let t = match pick {
                    0 => base,
                    1 => base + 10,
                    2 => base + 9,
                    3 => base + 25,
                    4 => h,
                    _ => clock + offset,
                };
                if t < state.horizon() {
                    let refused = state.lookup_at(&entity, t);
                    prop_assert!(matches!(refused, Err(FeatureError::BeforeHorizon { .. })), "{refused:?}");
                    continue;
                }
                let row = state.lookup_at(&entity, t).unwrap();
                let (newest, expected) = model.expect(entity, t);
                prop_assert_eq!(row.newest_event, newest, "newest event of {} at {}", entity, t);
                for ((got, (status, value)), name) in row.values.iter().zip(&expected).zip(&names) {
                    prop_assert_eq!(got.status, *status, "{} of {} at {}", name, entity, t);
                    prop_assert!(
                        close(&got.value, value),
                        "{name} of {entity} at {t}: {:?} != {value:?}",
                        got.value
                    );
                }
            }
        }
    }
    prop_assert_eq!(state.late_events(), model.late);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn windowed_features_equal_a_recomputation_over_the_accepted_events(
        ops in prop::collection::vec(op(), 1..250),
        tile in prop::sample::select(vec![1u64, 5]),
        lateness in prop::sample::select(vec![0u64, 3]),
    ) {
        check(ops, false, tile, lateness)?;
    }

    #[test]
    fn lifetime_features_equal_a_recomputation_over_the_accepted_events(
        ops in prop::collection::vec(op(), 1..250),
        tile in prop::sample::select(vec![1u64, 5]),
        lateness in prop::sample::select(vec![0u64, 3]),
    ) {
        check(ops, true, tile, lateness)?;
    }
}
