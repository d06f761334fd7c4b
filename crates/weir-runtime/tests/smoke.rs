//! End-to-end: a windowed count at parallelism 1 and 4 equals a brute-force count.

#![allow(clippy::unwrap_used)] // Tests fail loudly by design.
#![expect(clippy::disallowed_methods, reason = "a test spawns its job or a stopper and ends with it")]

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use weir_runtime::{CollectSink, Count, MemorySource, Pipeline, Sum, TumblingWindows, Watermarks};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tumbling_count_and_sum_match_brute_force() {
    let events: Vec<(i64, u16, u64)> = (0..10_000i64)
        .map(|i| (i * 7 % 60_000, [200, 404, 500][(i % 3) as usize], (i % 13) as u64))
        .collect();
    let mut want: BTreeMap<(u16, i64), (u64, u64)> = BTreeMap::new();
    for (ts, status, bytes) in &events {
        let e = want.entry((*status, ts - ts.rem_euclid(10_000))).or_default();
        e.0 += 1;
        e.1 += bytes;
    }
    for parallelism in [1, 4] {
        let p = Pipeline::builder("smoke").parallelism(parallelism).handle_signals(false).build().unwrap();
        let out = CollectSink::new();
        p.source(MemorySource::new(events.clone()).batch_size(100))
            .assign_timestamps(|e| e.0, Watermarks::bounded_out_of_orderness(Duration::from_secs(60)))
            .key_by(|e| e.1)
            .window(TumblingWindows::of(Duration::from_secs(10)))
            .aggregate((Count, Sum::of(|e: &(i64, u16, u64)| e.2)))
            .sink(out.clone());
        let report = p.run().await.unwrap();
        assert_eq!(report.late_records, 0);
        let got: BTreeMap<(u16, i64), (u64, u64)> =
            out.take().into_iter().map(|r| ((r.key, r.window_start), r.value)).collect();
        assert_eq!(got, want, "parallelism {parallelism}");
    }
}

/// On a paused clock: the sleep passes in virtual time, once every task waits.
#[tokio::test(start_paused = true)]
async fn a_stop_handle_drains_an_unbounded_job_and_fires_open_windows() {
    let p = Pipeline::builder("stop").parallelism(1).handle_signals(false).build().unwrap();
    let out = CollectSink::new();
    p.source(common::Endless)
        .assign_timestamps(|n| *n * 1_000, Watermarks::monotonic())
        .key_by(|_| 0u8)
        .window(TumblingWindows::of(Duration::from_secs(3600)))
        .aggregate(Count)
        .sink(out.clone());
    let stop = p.stop_handle();
    let job = tokio::spawn(p.run());
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.stop();
    let report = tokio::time::timeout(Duration::from_secs(10), job).await.unwrap().unwrap().unwrap();
    assert_eq!(report.dead_letters, 0);
    let results = out.take();
    let counted: u64 = results.iter().map(|r| r.value).sum();
    assert!(counted > 10, "the open window fired on stop with {counted} records");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forked_stream_feeds_two_sinks_and_unions_back() {
    let p = Pipeline::builder("fork").parallelism(2).handle_signals(false).build().unwrap();
    let (all, evens) = (CollectSink::new(), CollectSink::new());
    let (left, right) = p.source(MemorySource::new((0..1_000u32).collect()).batch_size(64)).fork();
    left.sink(all.clone());
    right.filter(|n| n % 2 == 0).sink(evens.clone());
    p.run().await.unwrap();
    let mut all = all.take();
    all.sort_unstable();
    assert_eq!(all, (0..1_000).collect::<Vec<_>>());
    assert_eq!(evens.take().len(), 500);

    let p = Pipeline::builder("union").parallelism(2).handle_signals(false).build().unwrap();
    let out = CollectSink::new();
    let a = p.source(MemorySource::new(vec![1u32; 10]));
    let b = p.source(MemorySource::new(vec![2u32; 5]));
    a.union(b).sink(out.clone());
    p.run().await.unwrap();
    assert_eq!(out.take().iter().sum::<u32>(), 20);
}

/// Records the parallelism its writers are made for.
#[derive(Clone, Default)]
struct Writers(std::sync::Arc<std::sync::Mutex<Vec<(usize, usize)>>>);

impl weir_runtime::Sink<u32> for Writers {
    type Writer = weir_runtime::DiscardSink;

    fn name(&self) -> String {
        "writers".into()
    }

    fn writer(&self, subtask: usize, parallelism: usize) -> weir_runtime::Result<Self::Writer> {
        self.0.lock().unwrap().push((subtask, parallelism));
        Ok(weir_runtime::DiscardSink)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_union_runs_at_the_pipelines_parallelism() {
    for parallelism in [1, 2] {
        let p = Pipeline::builder("union").parallelism(parallelism).handle_signals(false).build().unwrap();
        let (out, writers) = (CollectSink::new(), Writers::default());
        let a = p.source(MemorySource::new(vec![1u32; 10]));
        let b = p.source(MemorySource::new(vec![2u32; 5]));
        let c = p.source(MemorySource::new(vec![4u32; 3]));
        let [to_collect, to_count] = a.union(b).union(c).split();
        to_collect.sink(out.clone());
        to_count.sink(writers.clone());
        p.run().await.unwrap();
        assert_eq!(out.take().iter().sum::<u32>(), 32);
        let mut made = writers.0.lock().unwrap().clone();
        made.sort_unstable();
        assert_eq!(made, (0..parallelism).map(|s| (s, parallelism)).collect::<Vec<_>>());
    }
}

/// Five records, then silence.
struct Burst;

struct BurstReader(bool);

impl weir_runtime::Source for Burst {
    type Item = u32;
    type Reader = BurstReader;
    fn name(&self) -> String {
        "burst".into()
    }
    fn reader(&self, subtask: usize, _: usize) -> weir_runtime::Result<BurstReader> {
        Ok(BurstReader(subtask != 0))
    }
}

impl weir_runtime::SourceReader for BurstReader {
    type Item = u32;
    async fn next_batch(&mut self) -> weir_runtime::Result<Option<weir_runtime::Batch<u32>>> {
        if std::mem::replace(&mut self.0, true) {
            std::future::pending::<()>().await;
        }
        Ok(Some(weir_runtime::Batch::new(vec![1, 2, 3, 4, 5])))
    }
}

/// On a paused clock: the sleep passes in virtual time, once every task waits.
#[tokio::test(start_paused = true)]
async fn processing_time_windows_close_on_the_clock_without_new_data() {
    let p = Pipeline::builder("processing-time").parallelism(2).handle_signals(false).build().unwrap();
    let out = CollectSink::new();
    p.source(Burst)
        .assign_processing_time()
        .key_by(|_| 0u8)
        .window(TumblingWindows::of(Duration::from_millis(100)))
        .aggregate(Count)
        .sink(out.clone());
    let stop = p.stop_handle();
    let job = tokio::spawn(p.run());
    tokio::time::sleep(Duration::from_millis(500)).await;
    // The sources went silent after the burst; the window closed by the clock alone.
    let closed = out.take();
    assert_eq!(closed.iter().map(|w| w.value).sum::<u64>(), 5, "{closed:?}");
    assert!(closed.iter().all(|w| w.window_end - w.window_start == 100));
    stop.stop();
    tokio::time::timeout(Duration::from_secs(10), job).await.unwrap().unwrap().unwrap();
}

/// Elements that hold many rows, like an Arrow `RecordBatch`: the partitioner splits inside them.
struct RowsByParity;

impl weir_runtime::Partitioner<Vec<u32>> for RowsByParity {
    fn partition(
        &self,
        batch: weir_runtime::Batch<Vec<u32>>,
        n: usize,
    ) -> Vec<weir_runtime::Batch<Vec<u32>>> {
        let mut parts: Vec<Vec<Vec<u32>>> = vec![Vec::new(); n];
        for rows in batch.records {
            let mut split: Vec<Vec<u32>> = vec![Vec::new(); n];
            for r in rows {
                split[r as usize % n].push(r);
            }
            for (i, s) in split.into_iter().enumerate().filter(|(_, s)| !s.is_empty()) {
                parts[i].push(s);
            }
        }
        parts.into_iter().map(weir_runtime::Batch::new).collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_custom_partitioner_routes_rows_inside_elements() {
    let p = Pipeline::builder("rows").parallelism(2).handle_signals(false).build().unwrap();
    let out = CollectSink::new();
    let elements: Vec<Vec<u32>> = (0..50u32).map(|i| (i * 10..i * 10 + 10).collect()).collect();
    p.source(MemorySource::new(elements).batch_size(4))
        .partition_by(RowsByParity)
        .map(|rows: Vec<u32>| {
            let parity = rows[0] % 2;
            assert!(rows.iter().all(|r| r % 2 == parity), "rows of one element share a subtask: {rows:?}");
            rows.len()
        })
        .sink(out.clone());
    p.run().await.unwrap();
    assert_eq!(out.take().into_iter().sum::<usize>(), 500);
}

#[tokio::test]
async fn an_invalid_window_fails_the_run_naming_the_setting() {
    let p = Pipeline::builder("bad-window").parallelism(1).handle_signals(false).build().unwrap();
    p.source(MemorySource::new(vec![1i64]))
        .assign_timestamps(|t| *t, Watermarks::monotonic())
        .key_by(|_| 0u8)
        .window(weir_runtime::SlidingWindows::of(Duration::from_secs(10), Duration::from_secs(3)))
        .aggregate(Count)
        .sink(CollectSink::new());
    let err = p.run().await.unwrap_err();
    assert!(matches!(err, weir_runtime::Error::InvalidConfig { field: "window slide", .. }), "{err}");
}
