//! A pipeline embedded in a larger program: dropping `run`'s future ends every task it started,
//! and a flood of dead letters waits for a slow dead-letter sink instead of filling memory.

#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{Notify, mpsc};
use weir_runtime::{Batch, Checkpointing, DiscardSink, Pipeline, Sink, SinkWriter, Source, SourceReader};

/// A source of `batches` batches of one unparsable line each (endless with `u64::MAX`); every
/// reader holds a clone of `alive`, and counts the batches it read in `read`.
struct Lines {
    batches: u64,
    read: Arc<AtomicU64>,
    alive: mpsc::Sender<()>,
}

struct LinesReader {
    left: u64,
    read: Arc<AtomicU64>,
    _alive: mpsc::Sender<()>,
}

impl Source for Lines {
    type Item = String;
    type Reader = LinesReader;
    fn name(&self) -> String {
        "lines".into()
    }
    fn reader(&self, _: usize, _: usize) -> weir_runtime::Result<LinesReader> {
        Ok(LinesReader { left: self.batches, read: self.read.clone(), _alive: self.alive.clone() })
    }
}

impl SourceReader for LinesReader {
    type Item = String;
    async fn next_batch(&mut self) -> weir_runtime::Result<Option<Batch<String>>> {
        tokio::task::yield_now().await;
        if self.left == 0 {
            return Ok(None);
        }
        self.left -= 1;
        self.read.fetch_add(1, Ordering::Relaxed);
        Ok(Some(Batch::new(vec!["not a number".to_owned()])))
    }
}

/// A dead-letter sink whose writer never finishes its first write; the writer holds a clone
/// of `alive`.
struct Stuck {
    alive: mpsc::Sender<()>,
}

struct StuckWriter {
    _alive: mpsc::Sender<()>,
}

impl<T: Send + 'static> Sink<T> for Stuck {
    type Writer = StuckWriter;
    fn name(&self) -> String {
        "stuck".into()
    }
    fn writer(&self, _: usize, _: usize) -> weir_runtime::Result<StuckWriter> {
        Ok(StuckWriter { _alive: self.alive.clone() })
    }
}

impl<T: Send + 'static> SinkWriter<T> for StuckWriter {
    async fn write_batch(&mut self, _: Batch<T>) -> weir_runtime::Result<()> {
        std::future::pending().await
    }
    async fn finish(&mut self) -> weir_runtime::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn dropping_the_run_future_ends_every_task_it_started() {
    let dir = tempfile::tempdir().unwrap();
    let (alive, mut ended) = mpsc::channel::<()>(1);
    let p = Pipeline::builder("dropped")
        .parallelism(2)
        .checkpointing(Checkpointing::to_dir(dir.path()).interval(Duration::from_millis(10)))
        .build()
        .unwrap();
    p.dead_letters(Stuck { alive: alive.clone() });
    let flowing = Arc::new(Notify::new());
    let notify = flowing.clone();
    let read = Arc::new(AtomicU64::new(0));
    p.source(Lines { batches: u64::MAX, read, alive: alive.clone() })
        .inspect(move |_| notify.notify_one())
        .try_map(|l: &String| l.parse::<i64>())
        .sink(DiscardSink);
    drop(alive);
    tokio::select! {
        result = p.run() => panic!("an endless job ended: {result:?}"),
        () = flowing.notified() => {}
    }
    // The run future is dropped: the source readers, the stuck dead-letter writer and the
    // checkpoint coordinator (which holds the source) must all be gone. The timeout only turns
    // a hang into a failure.
    let gone = tokio::time::timeout(Duration::from_secs(30), ended.recv()).await;
    assert_eq!(gone, Ok(None), "a task of the dropped job still holds its source or dead-letter sink");
}

/// On a paused clock, the one-hour sleep ends only once every task waits: then the source has
/// read no more than the bounded channels hold.
#[tokio::test(start_paused = true)]
async fn a_flood_of_dead_letters_waits_for_a_slow_dead_letter_sink() {
    const BATCHES: u64 = 10_000;
    let (alive, _ended) = mpsc::channel::<()>(1);
    let p = Pipeline::builder("flood").parallelism(1).channel_capacity(2).build().unwrap();
    p.dead_letters(Stuck { alive: alive.clone() });
    let read = Arc::new(AtomicU64::new(0));
    p.source(Lines { batches: BATCHES, read: read.clone(), alive })
        .try_map(|l: &String| l.parse::<i64>())
        .sink(DiscardSink);
    tokio::select! {
        result = p.run() => panic!("the job ended although its dead-letter sink is stuck: {result:?}"),
        () = tokio::time::sleep(Duration::from_secs(3600)) => {}
    }
    let read = read.load(Ordering::Relaxed);
    assert!(read <= 8, "{read} of {BATCHES} bad batches were read while the dead-letter sink was stuck");
}

/// A sink that fails with an I/O error of `kind`.
struct Failing(std::io::ErrorKind);

impl Sink<String> for Failing {
    type Writer = Failing;
    fn name(&self) -> String {
        "failing".into()
    }
    fn writer(&self, _: usize, _: usize) -> weir_runtime::Result<Failing> {
        Ok(Failing(self.0))
    }
}

impl SinkWriter<String> for Failing {
    async fn write_batch(&mut self, _: Batch<String>) -> weir_runtime::Result<()> {
        Err(weir_runtime::Error::connector("sink failing", std::io::Error::from(self.0)))
    }
    async fn finish(&mut self) -> weir_runtime::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn a_connector_error_keeps_its_cause_for_the_caller() {
    let p = Pipeline::builder("full").parallelism(1).build().unwrap();
    p.source(weir_runtime::MemorySource::new(vec!["a".to_owned()]))
        .sink(Failing(std::io::ErrorKind::StorageFull));
    let err = p.run().await.unwrap_err();
    assert!(err.to_string().starts_with("sink failing: "), "{err}");
    let cause = std::error::Error::source(&err).and_then(|s| s.downcast_ref::<std::io::Error>());
    assert_eq!(cause.map(std::io::Error::kind), Some(std::io::ErrorKind::StorageFull), "{err:?}");
}

/// A source of `batches` batches of one record: the first at 10 s, every other at 0 (late once
/// the first passed the window); counts the batches it read in `read`.
struct Late {
    batches: u64,
    read: Arc<AtomicU64>,
}

impl Source for Late {
    type Item = i64;
    type Reader = LateReader;
    fn name(&self) -> String {
        "late".into()
    }
    fn reader(&self, _: usize, _: usize) -> weir_runtime::Result<LateReader> {
        Ok(LateReader { left: self.batches, read: self.read.clone() })
    }
}

struct LateReader {
    left: u64,
    read: Arc<AtomicU64>,
}

impl SourceReader for LateReader {
    type Item = i64;
    async fn next_batch(&mut self) -> weir_runtime::Result<Option<Batch<i64>>> {
        tokio::task::yield_now().await;
        if self.left == 0 {
            return Ok(None);
        }
        self.left -= 1;
        let first = self.read.fetch_add(1, Ordering::Relaxed) == 0;
        Ok(Some(Batch::new(vec![if first { 10_000 } else { 0 }])))
    }
}

/// As for dead letters: late records wait for a slow late-records sink.
#[tokio::test(start_paused = true)]
async fn a_flood_of_late_records_waits_for_a_slow_late_output() {
    const BATCHES: u64 = 10_000;
    let (alive, _ended) = mpsc::channel::<()>(1);
    let p = Pipeline::builder("late flood").parallelism(1).channel_capacity(2).build().unwrap();
    let read = Arc::new(AtomicU64::new(0));
    p.source(Late { batches: BATCHES, read: read.clone() })
        .assign_timestamps(|t| *t, weir_runtime::Watermarks::monotonic())
        .key_by(|_| 0u8)
        .window(weir_runtime::TumblingWindows::of(Duration::from_secs(1)))
        .late_records(|late| late.sink(Stuck { alive }))
        .aggregate(weir_runtime::Count)
        .sink(DiscardSink);
    tokio::select! {
        result = p.run() => panic!("the job ended although its late output is stuck: {result:?}"),
        () = tokio::time::sleep(Duration::from_secs(3600)) => {}
    }
    let read = read.load(Ordering::Relaxed);
    assert!(read <= 16, "{read} of {BATCHES} batches were read while the late output was stuck");
}
