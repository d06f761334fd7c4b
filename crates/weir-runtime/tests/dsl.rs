//! The pipeline DSL as a program uses it: fan-out to any number of branches, several windows on
//! one keyed stream, keyed streams in struct fields and signatures, aggregators without type
//! annotations, operators given by value, late records without leaving the chain, and operator
//! names in metrics.

#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use weir_runtime::{
    Batch, CollectSink, Collector, KeyedStream, MemorySource, Metrics, Operator, Pipeline, Stream,
    TumblingWindows, Watermarks, WindowResult, WindowedStream,
};

#[derive(Debug, Clone, PartialEq)]
struct Reading {
    at: i64,
    sensor: u32,
    celsius: f64,
}

fn readings() -> Vec<Reading> {
    (0..600).map(|i| Reading { at: i * 1_000, sensor: (i % 3) as u32, celsius: (i % 7) as f64 }).collect()
}

fn pipeline(name: &str) -> Pipeline {
    Pipeline::builder(name).parallelism(2).handle_signals(false).build().unwrap()
}

fn sorted<T: PartialOrd>(mut v: Vec<T>) -> Vec<T> {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_feeds_five_branches_each_with_every_record() {
    let p = pipeline("five");
    let sinks: Vec<CollectSink<i64>> = (0..5).map(|_| CollectSink::new()).collect();
    let branches = p.source(MemorySource::new((0..1_000).collect::<Vec<i64>>()).batch_size(64)).broadcast(5);
    assert_eq!(branches.len(), 5);
    for (branch, sink) in branches.into_iter().zip(&sinks) {
        branch.sink(sink.clone());
    }
    p.run().await.unwrap();
    for sink in &sinks {
        assert_eq!(sorted(sink.take()), (0..1_000).collect::<Vec<_>>());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_and_fork_give_every_branch_every_record() {
    let p = pipeline("split");
    let (a, b, c, d) = (CollectSink::new(), CollectSink::new(), CollectSink::new(), CollectSink::new());
    let [first, second, third] = p.source(MemorySource::new((0..100).collect::<Vec<i64>>())).split();
    first.sink(a.clone());
    second.map(|x| x * 2).sink(b.clone());
    let (left, right) = third.fork();
    left.sink(c.clone());
    right.filter(|x| x % 2 == 0).sink(d.clone());
    p.run().await.unwrap();
    assert_eq!(sorted(a.take()), (0..100).collect::<Vec<_>>());
    assert_eq!(sorted(b.take()), (0..100).map(|x| x * 2).collect::<Vec<_>>());
    assert_eq!(sorted(c.take()), (0..100).collect::<Vec<_>>());
    assert_eq!(sorted(d.take()).len(), 50);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_branch_dropped_without_a_sink_does_not_stop_the_others() {
    let p = pipeline("dropped");
    let out = CollectSink::new();
    let [used, _] = p.source(MemorySource::new((0..1_000).collect::<Vec<i64>>()).batch_size(10)).split();
    used.sink(out.clone());
    p.run().await.unwrap();
    assert_eq!(sorted(out.take()), (0..1_000).collect::<Vec<_>>());
}

/// A program's own type holding keyed and windowed streams: their types name no closure.
#[derive(Debug)]
struct BySensor {
    keyed: KeyedStream<u32, Reading>,
}

impl BySensor {
    fn per(self, minutes: u64) -> WindowedStream<u32, Reading> {
        self.keyed.window(TumblingWindows::of(Duration::from_secs(60 * minutes)))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_keyed_stream_feeds_several_windows() {
    let p = pipeline("windows");
    let keyed = p
        .source(MemorySource::new(readings()).batch_size(50))
        .assign_timestamps(|r| r.at, Watermarks::monotonic())
        .key_by(|r| r.sensor);
    let shown = format!("{keyed:?}");
    assert!(shown.starts_with("KeyedStream") && shown.contains("u32"), "{shown}");
    let [minute, ten] = keyed.split();
    let (per_minute, per_ten) = (CollectSink::new(), CollectSink::new());
    BySensor { keyed: minute }.per(1).aggregate_with(|a| a.count()).sink(per_minute.clone());
    BySensor { keyed: ten }
        .per(10)
        .aggregate_with(|a| (a.count(), a.max(|r| r.celsius), a.avg(|r| r.celsius)))
        .sink(per_ten.clone());
    p.run().await.unwrap();
    let minutes = per_minute.take();
    assert_eq!(minutes.len(), 10 * 3, "10 minutes of 3 sensors");
    assert!(minutes.iter().all(|r| r.value == 20));
    let tens: Vec<WindowResult<u32, (u64, f64, f64)>> = per_ten.take();
    assert_eq!(tens.len(), 3);
    for r in tens {
        let mine: Vec<f64> =
            readings().into_iter().filter(|x| x.sensor == r.key).map(|x| x.celsius).collect();
        let avg = mine.iter().sum::<f64>() / mine.len() as f64;
        assert_eq!(r.value, (200, 6.0, avg), "sensor {}", r.key);
    }
}

/// Counts the records it passes on; cloned once per subtask, the count shared.
#[derive(Clone)]
struct Counting(Arc<AtomicU64>);

impl<T: Send + 'static> Operator<T, T> for Counting {
    fn process_batch(&mut self, batch: Batch<T>, out: &mut Collector<T>) {
        self.0.fetch_add(batch.len() as u64, Ordering::Relaxed);
        out.batch(batch);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_given_by_value_runs_once_per_subtask() {
    let p = pipeline("by-value");
    let seen = Arc::new(AtomicU64::new(0));
    let out = CollectSink::new();
    p.source(MemorySource::new((0..500).collect::<Vec<i64>>()).batch_size(10))
        .operator("counting", Counting(seen.clone()))
        .sink(out.clone());
    p.run().await.unwrap();
    assert_eq!(seen.load(Ordering::Relaxed), 500);
    assert_eq!(out.take().len(), 500);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_records_leave_the_window_chain_intact() {
    let p = Pipeline::builder("late").parallelism(1).handle_signals(false).build().unwrap();
    let (out, late) = (CollectSink::new(), CollectSink::new());
    let mut records = readings();
    records.push(Reading { at: 0, sensor: 1, celsius: -40.0 });
    p.source(MemorySource::new(records).batch_size(50))
        .assign_timestamps(|r| r.at, Watermarks::monotonic())
        .key_by(|r| r.sensor)
        .window(TumblingWindows::of(Duration::from_secs(60)))
        .late_records(|records| records.sink(late.clone()))
        .aggregate_with(|a| a.min(|r| r.celsius))
        .sink(out.clone());
    let report = p.run().await.unwrap();
    assert_eq!(late.take(), [Reading { at: 0, sensor: 1, celsius: -40.0 }]);
    assert_eq!(report.late_records, 1);
    assert!(out.take().iter().all(|r| r.value >= 0.0), "the late record is in no window");
}

/// The sum of the samples of `name` whose labels include `operator="<operator>"`.
fn operator_metric(text: &str, name: &str, operator: &str) -> Option<f64> {
    weir_testkit::prometheus::Scrape::parse(text).sum(name, &[("operator", operator)])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn named_operators_show_their_names_in_metrics() {
    let metrics = Metrics::new();
    let p = Pipeline::builder("named")
        .parallelism(2)
        .handle_signals(false)
        .metrics(metrics.clone())
        .build()
        .unwrap();
    let keyed = p
        .source(MemorySource::new(readings()).batch_size(50))
        .assign_timestamps(|r| r.at, Watermarks::monotonic())
        .key_by(|r| r.sensor);
    let [minute, ten] = keyed.split();
    let window = |k: KeyedStream<u32, Reading>, secs| -> Stream<WindowResult<u32, u64>> {
        k.window(TumblingWindows::of(Duration::from_secs(secs))).aggregate_with(|a| a.count())
    };
    window(minute, 60).name("per_minute").sink(CollectSink::new());
    window(ten, 600).name("per_ten_minutes").sink(CollectSink::new());
    p.run().await.unwrap();
    let text = metrics.encode();
    let records_in = |op| operator_metric(&text, "weir_operator_records_in_total", op);
    assert_eq!(records_in("per_minute"), Some(600.0), "{text}");
    assert_eq!(records_in("per_ten_minutes"), Some(600.0), "{text}");
    assert_eq!(records_in("window"), None, "no series under the default name: {text}");
}
