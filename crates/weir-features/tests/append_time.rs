//! A training set *as served* from a topic that keeps the log's append time
//! ([`TimestampType::LogAppendTime`]): the stored timestamps are when the log had each event,
//! whatever time the producer stamped on it, so a label sees exactly the events appended by its
//! time; *as happened* still goes by the event times in the payload.

#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

use std::time::Duration;

use weir_features::{Agg, FeatureView, Label, Replay, Value, Window};
use weir_log::{Durability, Log, LogOptions, Record, TimestampType, TopicConfig};
use weir_testkit::now_ms as wall_ms;

/// An event: (user, event time in ms), as the payload `user,ts`.
fn record(user: &str, ts: i64) -> Record {
    // The producer stamps the event time, as a producer with CreateTime semantics would.
    Record::new(format!("{user},{ts}")).with_timestamp(ts)
}

fn parse(value: &[u8]) -> (String, i64) {
    let text = std::str::from_utf8(value).unwrap();
    let (user, ts) = text.split_once(',').unwrap();
    (user.to_owned(), ts.parse().unwrap())
}

/// Appends two batches with a label time `t` between them, the second holding an event whose
/// event time is before `t`; returns the replay's answers *as happened* and *as served* at `t`.
fn counts_at_a_time_between_two_appends(timestamp_type: TimestampType) -> (Value, Value) {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), LogOptions::default().durability(Durability::None)).unwrap();
    let topic = log.create_topic("events", TopicConfig { timestamp_type, ..TopicConfig::default() }).unwrap();
    let start = wall_ms();
    topic.append(0, &[record("u1", start - 1_000), record("u1", start - 500)]).unwrap();
    std::thread::sleep(Duration::from_millis(20));
    let t = wall_ms();
    std::thread::sleep(Duration::from_millis(20));
    // Appended after `t`, though it happened before `start`: a late arrival.
    topic.append(0, &[record("u1", start - 800)]).unwrap();

    let stored = topic.read(0, 0, 1 << 20).unwrap();
    let events: Vec<(String, i64)> = stored.iter().map(|r| parse(&r.value)).collect();
    let appended: Vec<i64> = stored.iter().map(|r| r.timestamp).collect();
    let view = FeatureView::builder("clicks")
        .entity(|e: &(String, i64)| e.0.clone())
        .event_time(|e| e.1)
        .allowed_lateness(Duration::from_secs(60))
        .feature("count_1h", Agg::Count, Window::Last(Duration::from_secs(3600)))
        .build()
        .unwrap();
    let replay = Replay::new(view);
    let labels = [Label { entity: "u1".to_owned(), at: t }];
    let happened = replay.as_happened(events.clone(), &labels).unwrap();
    let served = replay.as_served(events, &appended, &labels).unwrap();
    (happened.rows[0].values[0].value.clone(), served.rows[0].values[0].value.clone())
}

#[test]
fn as_served_from_a_log_append_time_topic_sees_only_what_was_appended_by_the_label() {
    let (happened, served) = counts_at_a_time_between_two_appends(TimestampType::LogAppendTime);
    assert_eq!(happened, Value::Count(3), "every event happened before the label");
    assert_eq!(served, Value::Count(2), "the late arrival was appended after the label");
}

#[test]
fn with_producer_timestamps_the_same_replay_cannot_tell_a_late_arrival() {
    // The control: a CreateTime topic stores the event times, so *as served* equals *as
    // happened* here, and the skew a model meets in production is invisible.
    let (happened, served) = counts_at_a_time_between_two_appends(TimestampType::CreateTime);
    assert_eq!((happened, served), (Value::Count(3), Value::Count(3)));
}
