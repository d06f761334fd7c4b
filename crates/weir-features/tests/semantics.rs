//! Feature state behaviours named one by one: expiry, eviction, bounded state, late events.

#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

use std::time::Duration;

use weir_features::{Agg, FeatureState, FeatureView, Status, Value, Window};

/// (user, event time ms, amount)
type Txn = (u32, i64, i64);

const MINUTE: i64 = 60_000;

fn view(lifetime: bool) -> FeatureView<u32, Txn> {
    let b = FeatureView::builder("user_txn")
        .entity(|t: &Txn| t.0)
        .event_time(|t| t.1)
        .allowed_lateness(Duration::from_secs(10))
        .number("amount", |t| t.2 as f64)
        .feature("count_5m", Agg::Count, Window::Last(Duration::from_secs(300)))
        .feature("sum_1h", Agg::Sum("amount".into()), Window::Last(Duration::from_secs(3600)))
        .feature("last_5m", Agg::Last("amount".into()), Window::Last(Duration::from_secs(300)));
    let b = if lifetime { b.feature("count_life", Agg::Count, Window::Lifetime) } else { b };
    b.build().unwrap()
}

#[test]
fn an_entity_idle_past_its_window_reads_expired_with_the_value_of_no_events_never_the_old_value() {
    let mut state = FeatureState::new(view(false));
    state.apply_batch(&[(1, 10 * MINUTE, 700), (1, 11 * MINUTE, 300)]);
    let row = state.lookup_at(&1, 12 * MINUTE).unwrap();
    assert_eq!(row.values[0].value, Value::Count(2));
    assert_eq!(row.values[2].value, Value::Number(300.0));
    // Five minutes after the newest event, it has left the 5-minute window; the hour holds both.
    let row = state.lookup_at(&1, 16 * MINUTE).unwrap();
    assert_eq!((row.values[0].status, &row.values[0].value), (Status::Expired, &Value::Count(0)));
    assert_eq!((row.values[1].status, &row.values[1].value), (Status::Present, &Value::Number(1000.0)));
    assert_eq!((row.values[2].status, &row.values[2].value), (Status::Expired, &Value::Missing));
    assert_eq!(row.newest_event, Some(11 * MINUTE));
    let row = state.lookup_at(&1, 71 * MINUTE).unwrap();
    assert!(row.values.iter().all(|v| v.status == Status::Expired), "{row:?}");
    assert_eq!(row.values[1].value, Value::Number(0.0));
    // Before its first event the entity has nothing.
    let row = state.lookup_at(&1, 9 * MINUTE).unwrap();
    assert!(row.values.iter().all(|v| v.status == Status::Empty), "{row:?}");
}

#[test]
fn an_entity_is_evicted_once_every_window_passed_and_then_reads_empty() {
    let mut state = FeatureState::new(view(false));
    state.apply_batch(&[(1, 10 * MINUTE, 700), (2, 50 * MINUTE, 1)]);
    state.advance(70 * MINUTE);
    assert_eq!(state.entities(), 2, "the hour window still holds user 1's event at 70 min");
    state.advance(72 * MINUTE);
    assert_eq!(state.entities(), 1, "user 1's event left every window (and the lateness) by 72 min");
    let row = state.lookup_at(&1, 72 * MINUTE).unwrap();
    assert!(row.values.iter().all(|v| v.status == Status::Empty), "{row:?}");
    assert_eq!(row.newest_event, None);
}

#[test]
fn lifetime_features_keep_an_idle_entity_with_its_totals_after_its_windows_passed() {
    let mut state = FeatureState::new(view(true));
    state.apply_batch(&[(1, 10 * MINUTE, 700), (1, 11 * MINUTE, 300)]);
    state.advance(24 * 60 * MINUTE);
    assert_eq!(state.entities(), 1);
    let row = state.lookup_at(&1, 24 * 60 * MINUTE).unwrap();
    assert_eq!((row.values[3].status, &row.values[3].value), (Status::Present, &Value::Count(2)));
    assert_eq!(row.values[0].status, Status::Expired);
    assert_eq!(row.newest_event, Some(11 * MINUTE));
}

#[test]
fn the_state_of_a_busy_entity_stays_bounded_by_its_longest_window() {
    let mut state = FeatureState::new(view(true));
    // One event a second for 2 h and then for 10 h: the retained history is the last hour (and
    // the lateness) either way.
    let mut bytes = Vec::new();
    let mut t = 0;
    for hours in [2, 10] {
        while t < hours * 60 * MINUTE {
            let batch: Vec<Txn> = (0..600).map(|i| (1, t + i * 1000, 5)).collect();
            state.apply_batch(&batch);
            t += 600_000;
            state.advance(t - 1000);
        }
        bytes.push(state.state_bytes());
    }
    assert!(bytes[1] <= bytes[0] * 11 / 10, "state grew with time: {bytes:?}");
    assert!(bytes[1] < 3_700 * 40, "about one hour of events: {bytes:?}");
    let row = state.lookup_at(&1, t - 1).unwrap();
    assert_eq!(row.values[3].value, Value::Count((t / 1000) as u64), "the lifetime count kept every event");
    assert_eq!(row.values[1].value, Value::Number(3600.0 * 5.0));
}

#[test]
fn late_events_are_counted_and_dropped_never_applied() {
    let mut state = FeatureState::new(view(false));
    state.apply_batch(&[(1, 10 * MINUTE, 1)]);
    state.advance(10 * MINUTE);
    // The horizon is 10 s behind the watermark: 9:50 is late, 9:51 is not.
    let late = state.apply_batch(&[(1, 10 * MINUTE - 10_000, 100), (1, 10 * MINUTE - 9_999, 10)]);
    assert_eq!(late, 1);
    assert_eq!(state.late_events(), 1);
    let row = state.lookup_at(&1, 10 * MINUTE).unwrap();
    assert_eq!(row.values[1].value, Value::Number(11.0));
    assert!(state.lookup_at(&1, 10 * MINUTE - 10_001).is_err(), "before the horizon");
}

#[test]
fn events_and_lookups_at_the_ends_of_time_neither_panic_nor_miscount() {
    let mut state = FeatureState::new(view(true));
    state.apply_batch(&[(1, i64::MIN + 1, 1), (1, i64::MAX - 1, 2), (1, i64::MAX, 3), (2, i64::MIN, 4)]);
    let row = state.lookup_at(&1, i64::MAX).unwrap();
    assert_eq!(row.values[0].value, Value::Count(2));
    assert_eq!(row.values[3].value, Value::Count(3));
    assert_eq!(row.values[2].value, Value::Number(3.0));
    let row = state.lookup_at(&2, i64::MIN).unwrap();
    assert_eq!(row.values[3].value, Value::Count(1));
    state.advance(i64::MAX);
    assert!(state.lookup_at(&1, i64::MAX).is_ok());
    assert_eq!(state.apply_batch(&[(1, i64::MAX - 10_000, 5)]), 1, "behind the horizon");
}
