//! Backpressure: a fast source in front of a slow sink waits instead of queueing without bound.
//!
//! The source produces batches as fast as it is asked (it never waits) and counts the records it
//! produced; the sink sleeps per batch and counts the records it wrote. Between them is a
//! `key_by` exchange: one bounded channel of `channel_capacity` messages per downstream subtask.
//! While the job runs, the records produced but not yet written must stay within what the
//! channels can hold plus what the tasks hold in hand: `(capacity × channels + upstream subtasks
//! + downstream subtasks) × batch size`. And the time the source spent blocked on full channels
//! shows up in `JobReport::backpressure`.

#![allow(clippy::unwrap_used)] // Tests fail loudly by design.
#![expect(clippy::disallowed_methods, reason = "a test spawns its job or a stopper and ends with it")]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use weir_runtime::{Batch, Pipeline, Result, Sink, SinkWriter, Source, SourceReader};

const BATCH: u64 = 32;
const CAPACITY: usize = 4;
const SINK_DELAY: Duration = Duration::from_millis(4);
const RUN_FOR: Duration = Duration::from_millis(600);

/// Counters shared by the test, the source and the sink.
#[derive(Default)]
struct Counters {
    produced: AtomicU64,
    written: AtomicU64,
    stop: AtomicBool,
}

/// An endless source (until `stop`): every call returns a full batch at once.
struct Firehose(Arc<Counters>);

struct FirehoseReader {
    counters: Arc<Counters>,
    split: u32,
    next: u64,
}

impl Source for Firehose {
    type Item = u64;
    type Reader = FirehoseReader;

    fn name(&self) -> String {
        "firehose".to_owned()
    }

    fn reader(&self, subtask: usize, _parallelism: usize) -> Result<FirehoseReader> {
        Ok(FirehoseReader { counters: self.0.clone(), split: subtask as u32, next: 0 })
    }
}

impl SourceReader for FirehoseReader {
    type Item = u64;

    async fn next_batch(&mut self) -> Result<Option<Batch<u64>>> {
        if self.counters.stop.load(Ordering::SeqCst) {
            return Ok(None);
        }
        let records: Vec<u64> = (self.next..self.next + BATCH).collect();
        self.next += BATCH;
        self.counters.produced.fetch_add(BATCH, Ordering::SeqCst);
        Ok(Some(Batch::from_split(self.split, records)))
    }
}

/// A sink that takes `SINK_DELAY` per batch.
struct SlowSink(Arc<Counters>);

impl Sink<u64> for SlowSink {
    type Writer = SlowWriter;

    fn name(&self) -> String {
        "slow".to_owned()
    }

    fn writer(&self, _subtask: usize, _parallelism: usize) -> Result<SlowWriter> {
        Ok(SlowWriter(self.0.clone()))
    }
}

struct SlowWriter(Arc<Counters>);

impl SinkWriter<u64> for SlowWriter {
    async fn write_batch(&mut self, batch: Batch<u64>) -> Result<()> {
        tokio::time::sleep(SINK_DELAY).await;
        self.0.written.fetch_add(batch.len() as u64, Ordering::SeqCst);
        Ok(())
    }

    async fn finish(&mut self) -> Result<()> {
        Ok(())
    }
}

async fn queue_stays_bounded(parallelism: usize) {
    let counters = Arc::new(Counters::default());
    let p = Pipeline::builder("backpressure")
        .parallelism(parallelism)
        .channel_capacity(CAPACITY)
        .handle_signals(false)
        .build()
        .unwrap();
    p.source(Firehose(counters.clone()))
        .key_by(|r: &u64| r % 8)
        .into_stream()
        .sink(SlowSink(counters.clone()));
    let job = tokio::spawn(p.run());

    // Upstream and downstream subtasks each hold at most one batch; every channel holds
    // `CAPACITY` messages of at most one batch each.
    let channels = parallelism;
    let bound = (CAPACITY * channels + parallelism + parallelism) as u64 * BATCH;
    let started = Instant::now();
    let mut worst = 0;
    while started.elapsed() < RUN_FOR {
        tokio::time::sleep(Duration::from_millis(5)).await;
        // `produced` first: reading it second could count batches produced after the reading of
        // `written` against a stale `written`.
        let produced = counters.produced.load(Ordering::SeqCst);
        let backlog = produced.saturating_sub(counters.written.load(Ordering::SeqCst));
        worst = worst.max(backlog);
        assert!(
            backlog <= bound,
            "p{parallelism}: {backlog} records produced but not written after {:?}; at most {bound} fit",
            started.elapsed()
        );
    }
    let written = counters.written.load(Ordering::SeqCst);
    assert!(written >= 10 * BATCH, "p{parallelism}: the sink made progress ({written} records)");
    assert!(
        worst >= CAPACITY as u64 * BATCH,
        "p{parallelism}: the channels filled up (worst backlog {worst})"
    );

    counters.stop.store(true, Ordering::SeqCst);
    let report =
        tokio::time::timeout(Duration::from_secs(5), job).await.expect("the job drains").unwrap().unwrap();
    assert_eq!(
        counters.written.load(Ordering::SeqCst),
        counters.produced.load(Ordering::SeqCst),
        "p{parallelism}: everything produced is written in the end"
    );
    // The source spent most of the run waiting for the sink.
    assert!(
        report.backpressure >= RUN_FOR / 4,
        "p{parallelism}: backpressure {:?} over a {RUN_FOR:?} run",
        report.backpressure
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_sink_holds_a_fast_source_back_at_parallelism_1() {
    queue_stays_bounded(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_sink_holds_a_fast_source_back_at_parallelism_2() {
    queue_stays_bounded(2).await;
}
