//! Training sets by replay against a brute-force model: for random logs (events out of order,
//! late within and beyond the lateness, duplicate timestamps, events exactly at `t` and at
//! `t - w`) and random labels, *as happened* equals a recomputation over every event with
//! `ts <= t`, and *as served* one over the events appended by `t` that the late rule kept.

#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

use std::time::Duration;

use proptest::prelude::*;
use weir_features::{Agg, FeatureView, Label, Replay, Status, Value, Window};

/// (entity, event time, amount)
type Event = (u8, i64, i64);

const LATENESS: i64 = 20;
const BOUND: i64 = 3;
const WINDOWS: [i64; 2] = [10, 50];

fn view() -> FeatureView<u8, Event> {
    let mut b = FeatureView::builder("replayed")
        .entity(|e: &Event| e.0)
        .event_time(|e| e.1)
        .allowed_lateness(Duration::from_millis(LATENESS as u64))
        .tile(Duration::from_millis(5))
        .number("amount", |e| e.2 as f64);
    for w in WINDOWS {
        let window = Window::Last(Duration::from_millis(w as u64));
        b = b.feature(&format!("count_{w}"), Agg::Count, window).feature(
            &format!("sum_{w}"),
            Agg::Sum("amount".into()),
            window,
        );
    }
    b.feature("last", Agg::Last("amount".into()), Window::Lifetime).build().unwrap()
}

/// The expected row of `entity` at `t` over `events` (in arrival order): per window, the count
/// and sum of `t - w < ts <= t`; the amount of the newest event at or before `t` (the later
/// arrival among equal times).
fn model(events: &[&Event], entity: u8, t: i64) -> Vec<(Status, Value)> {
    let mine: Vec<&&Event> = events.iter().filter(|e| e.0 == entity && e.1 <= t).collect();
    let mut row = Vec::new();
    for w in WINDOWS {
        let inside: Vec<&&&Event> = mine.iter().filter(|e| e.1 > t - w).collect();
        let status = if !inside.is_empty() {
            Status::Present
        } else if mine.is_empty() {
            Status::Empty
        } else {
            Status::Expired
        };
        row.push((status, Value::Count(inside.len() as u64)));
        row.push((status, Value::Number(inside.iter().map(|e| e.2 as f64).sum())));
    }
    let newest = mine.iter().enumerate().max_by_key(|(i, e)| (e.1, *i)).map(|(_, e)| e.2);
    row.push(match newest {
        Some(a) => (Status::Present, Value::Number(a as f64)),
        None => (Status::Empty, Value::Missing),
    });
    row
}

/// A log: each event arrives `back` ms behind the newest event time so far, after the clock
/// moved on by `step`; its append time is the clock.
fn log() -> impl Strategy<Value = (Vec<Event>, Vec<i64>)> {
    prop::collection::vec(
        (
            0..3u8,
            0..4i64,
            prop_oneof![6 => Just(0i64), 3 => 0..LATENESS, 1 => LATENESS..3 * LATENESS],
            -5..50i64,
        ),
        0..120,
    )
    .prop_map(|ops| {
        let (mut clock, mut events, mut appended) = (1_000i64, Vec::new(), Vec::new());
        for (entity, step, back, amount) in ops {
            clock += step;
            events.push((entity, clock - back, amount));
            appended.push(clock);
        }
        (events, appended)
    })
}

/// Label rows at event times, at window edges after them, and around them.
fn labels(times: Vec<i64>) -> impl Strategy<Value = Vec<Label<u8>>> {
    prop::collection::vec((0..3u8, 0..5usize, 0..usize::MAX, -3..80i64), 1..40).prop_map(move |picks| {
        picks
            .into_iter()
            .map(|(entity, kind, i, offset)| {
                let base = if times.is_empty() { 1_000 } else { times[i % times.len()] };
                let at = match kind {
                    0 => base,
                    1 => base + WINDOWS[0],
                    2 => base + WINDOWS[1],
                    _ => base + offset,
                };
                Label { entity, at }
            })
            .collect()
    })
}

/// A log, its append times and labels over it.
fn case() -> impl Strategy<Value = (Vec<Event>, Vec<i64>, Vec<Label<u8>>)> {
    log().prop_flat_map(|(events, appended)| {
        let times = events.iter().map(|e| e.1).collect();
        (Just(events), Just(appended), labels(times))
    })
}

fn check(
    rows: &[weir_features::FeatureRow],
    labels: &[Label<u8>],
    expected: impl Fn(&Label<u8>) -> Vec<(Status, Value)>,
) {
    assert_eq!(rows.len(), labels.len());
    for (row, label) in rows.iter().zip(labels) {
        assert_eq!(row.at, label.at);
        let got: Vec<(Status, Value)> = row.values.iter().map(|v| (v.status, v.value.clone())).collect();
        assert_eq!(got, expected(label), "{label:?}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn as_happened_sees_every_event_at_or_before_t((events, _, labels) in case()) {
        let set = Replay::new(view()).as_happened(events.clone(), &labels).unwrap();
        let all: Vec<&Event> = events.iter().collect();
        check(&set.rows, &labels, |l| model(&all, l.entity, l.at));
        prop_assert_eq!(set.late_events, 0);
    }

    #[test]
    fn as_served_sees_what_was_appended_and_not_late((events, appended, labels) in case()) {
        // The late rule, one event at a time: late iff at or behind the newest event time
        // before it, minus the bound and the lateness.
        let mut newest = i64::MIN;
        let kept: Vec<bool> = events.iter().map(|e| {
            let late = newest > i64::MIN && e.1 <= newest - BOUND - LATENESS;
            newest = newest.max(e.1);
            !late
        }).collect();
        let set = Replay::new(view())
            .out_of_orderness(Duration::from_millis(BOUND as u64))
            .run(1)
            .as_served(events.clone(), &appended, &labels)
            .unwrap();
        check(&set.rows, &labels, |l| {
            let seen: Vec<&Event> = events.iter().zip(&appended).zip(&kept)
                .filter(|((_, a), k)| **a <= l.at && **k)
                .map(|((e, _), _)| e)
                .collect();
            model(&seen, l.entity, l.at)
        });
        prop_assert_eq!(set.late_events, kept.iter().filter(|k| !**k).count() as u64);
    }
}
