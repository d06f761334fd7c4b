//! The generator makes every index once across subtasks, and its rate limit holds.

#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

use std::time::{Duration, Instant};

use weir_connectors::GeneratorSource;
use weir_runtime::{CollectSink, Pipeline};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generator_makes_every_index_once_across_subtasks() {
    let p = Pipeline::builder("gen").parallelism(3).handle_signals(false).build().unwrap();
    let out = CollectSink::new();
    p.source(GeneratorSource::new(10_000, |i| (i, i * i))).sink(out.clone());
    p.run().await.unwrap();
    let mut got = out.take();
    got.sort_unstable();
    assert_eq!(got, (0..10_000u64).map(|i| (i, i * i)).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limited_generator_takes_as_long_as_its_rate_says() {
    let p = Pipeline::builder("paced").parallelism(2).handle_signals(false).build().unwrap();
    let out = CollectSink::new();
    // 400 records at 1000/s: about 0.4 s (the first record of each subtask is due at once).
    p.source(GeneratorSource::new(400, |i| i).rate(1_000.0).batch_size(16)).sink(out.clone());
    let start = Instant::now();
    tokio::time::timeout(Duration::from_secs(30), p.run()).await.unwrap().unwrap();
    let took = start.elapsed();
    assert_eq!(out.take().len(), 400);
    assert!(took >= Duration::from_millis(350), "too fast: {took:?}");
    assert!(took < Duration::from_secs(5), "too slow: {took:?}");
}
