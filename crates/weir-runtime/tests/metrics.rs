//! Pipeline metrics: a job with dead letters, late records and windows exports what happened,
//! per operator, and serves it over HTTP while it runs.

#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

use std::time::Duration;

use weir_runtime::{CollectSink, Count, Metrics, Pipeline, Traceable, TumblingWindows, Watermarks};
use weir_testkit::prometheus::Scrape;

#[derive(Debug, Clone)]
struct Line(String);

impl Traceable for Line {
    fn origin(&self) -> String {
        "memory".into()
    }
    fn payload(&self) -> String {
        self.0.clone()
    }
}

/// The sum of the samples of `name` whose labels include all of `labels`.
fn value(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    Scrape::parse(text).sum(name, labels)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_reports_records_drops_windows_and_latency() {
    // In batches of 25: 1 000 good lines at 0..10 s, 50 malformed, 25 at 20 s, then 20 late
    // lines (timestamp 0, in the batch after the watermark passed 10 s).
    let mut lines: Vec<Line> = (0..1_000).map(|i| Line(format!("{}", i * 10))).collect();
    lines.extend((0..50).map(|i| Line(format!("bad {i}"))));
    lines.extend((0..25).map(|i| Line(format!("{}", 20_000 + i))));
    lines.extend((0..20).map(|_| Line("0".into())));
    let metrics = Metrics::new();
    let p = Pipeline::builder("metered")
        .parallelism(1)
        .handle_signals(false)
        .metrics(metrics.clone())
        .build()
        .unwrap();
    let out = CollectSink::new();
    p.source(weir_runtime::MemorySource::new(lines).batch_size(25))
        .try_map(|l: &Line| l.0.parse::<i64>())
        .assign_timestamps(|t| *t, Watermarks::monotonic())
        .key_by(|_| 0u8)
        .window(TumblingWindows::of(Duration::from_secs(10)))
        .aggregate(Count)
        .sink(out.clone());
    let report = p.run().await.unwrap();
    assert_eq!((report.dead_letters, report.late_records), (50, 20));
    let results = out.take();
    let text = metrics.encode();
    let op =
        |name: &str, operator: &str| value(&text, name, &[("pipeline", "metered"), ("operator", operator)]);

    assert_eq!(op("weir_operator_records_out_total", "source"), Some(1_095.0), "{text}");
    assert_eq!(op("weir_operator_records_in_total", "try_map"), Some(1_095.0));
    assert_eq!(op("weir_operator_records_out_total", "try_map"), Some(1_045.0));
    let dropped = |reason| {
        value(&text, "weir_operator_dropped_records_total", &[("operator", "try_map"), ("reason", reason)])
    };
    assert_eq!(dropped("dead_letter"), Some(50.0));
    assert_eq!(dropped("late"), None, "a try_map never drops late records: no series that cannot change");
    assert_eq!(
        value(
            &text,
            "weir_operator_dropped_records_total",
            &[("operator", "window"), ("reason", "dead_letter")]
        ),
        None,
        "a window sends no dead letters"
    );
    assert_eq!(
        value(&text, "weir_operator_dropped_records_total", &[("operator", "assign_timestamps")]),
        None,
        "assign_timestamps drops nothing"
    );
    assert_eq!(
        value(&text, "weir_operator_dropped_records_total", &[("operator", "window"), ("reason", "late")]),
        Some(20.0)
    );
    assert_eq!(op("weir_operator_records_in_total", "window"), Some(1_045.0));
    assert_eq!(op("weir_window_fired_total", "window"), Some(results.len() as f64));
    assert_eq!(op("weir_operator_records_in_total", "sink"), Some(results.len() as f64));
    // The window saw watermarks up to the last on-time record: 20 024 ms - 1.
    assert_eq!(op("weir_operator_watermark_timestamp_seconds", "window"), Some(20.023));
    let count = |name| value(&text, name, &[("pipeline", "metered")]);
    // Two windows, fired by two watermarks: two batches reached the sink.
    assert_eq!(results.len(), 2);
    assert_eq!(count("weir_pipeline_end_to_end_latency_seconds_count"), Some(2.0));
    assert!(count("weir_pipeline_event_time_lag_seconds_count").unwrap() >= 1.0);
    // Event time is 1970: the lag is decades.
    assert!(value(&text, "weir_pipeline_event_time_lag_seconds_bucket", &[("le", "86400")]) == Some(0.0));
    assert!(count("weir_task_busy_seconds_total").unwrap() > 0.0);
    assert!(count("weir_operator_batch_duration_seconds_count").unwrap() >= 44.0, "one per batch at least");
}

/// Fifty records, one per batch, each of its own key in the window `[0, 10 s)`, then silence.
struct Burst;

struct BurstReader(std::ops::Range<u32>);

impl weir_runtime::Source for Burst {
    type Item = u32;
    type Reader = BurstReader;
    fn name(&self) -> String {
        "burst".into()
    }
    fn reader(&self, _: usize, _: usize) -> weir_runtime::Result<BurstReader> {
        Ok(BurstReader(0..50))
    }
}

impl weir_runtime::SourceReader for BurstReader {
    type Item = u32;
    async fn next_batch(&mut self) -> weir_runtime::Result<Option<weir_runtime::Batch<u32>>> {
        match self.0.next() {
            Some(key) => Ok(Some(weir_runtime::Batch::new(vec![key]))),
            None => std::future::pending().await,
        }
    }
}

/// After a burst that opens windows without moving the watermark, the state gauges show the
/// windows open now, not those of the last watermark. On a paused clock: the sleep ends once
/// every task waits, i.e. once the burst was handled.
#[tokio::test(start_paused = true)]
async fn window_gauges_show_the_state_after_a_burst_without_new_watermarks() {
    let metrics = Metrics::new();
    let p = Pipeline::builder("burst").parallelism(1).metrics(metrics.clone()).build().unwrap();
    p.source(Burst)
        .assign_timestamps(|_| 5_000, Watermarks::monotonic())
        .key_by(|k| *k)
        .window(TumblingWindows::of(Duration::from_secs(10)))
        .aggregate(Count)
        .sink(CollectSink::new());
    tokio::select! {
        result = p.run() => panic!("an endless job ended: {result:?}"),
        () = tokio::time::sleep(Duration::from_secs(3600)) => {}
    }
    let text = metrics.encode();
    let window = |name| value(&text, name, &[("pipeline", "burst"), ("operator", "window")]);
    assert_eq!(window("weir_window_open_windows"), Some(50.0), "{text}");
    assert!(window("weir_keyed_state_bytes").unwrap() >= 50.0, "{text}");
}
