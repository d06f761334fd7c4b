//! Watermarks through a running pipeline: the minimum over splits and subtasks holds windows back,
//! idle splits stop holding them back, finished splits do not pin event time, and the final
//! watermark of a bounded source fires every open window.
//!
//! Most tests drive a [`ScriptedSource`]: the test sends each batch (with its split) to a source
//! subtask through a channel and watches the window results arrive in a [`CollectSink`], so it
//! can check what has fired *between* two source batches. Every record has the key `"k"`, the
//! windows are tumbling windows of one second counted with [`Count`], and watermarks are
//! monotonic (`watermark = max timestamp − 1`) unless a test says otherwise.
//!
//! The tests run on a paused tokio clock: a sleep ends only once every task of the job waits
//! (tokio advances a paused clock only then), so "nothing fired after the sleep" means nothing
//! would fire, and the idle timeouts pass in virtual time.

#![allow(clippy::unwrap_used)] // Tests fail loudly by design.
#![expect(clippy::disallowed_methods, reason = "a test spawns its job or a stopper and ends with it")]

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use weir_runtime::{
    Batch, CollectSink, Count, Error, JobReport, MemorySource, Pipeline, Result, SessionWindows,
    SlidingWindows, Source, SourceReader, TumblingWindows, Watermarks, WindowResult, WindowSpec,
};

/// How long a test waits for something that must happen.
const PATIENCE: Duration = Duration::from_secs(5);

/// A record: its split (for the test's bookkeeping) and its event time.
type Ev = (u32, i64);

/// (window start, window end, count) of key `"k"`.
type Fired = (i64, i64, u64);

/// A source whose subtasks read the batches the test sends them; a subtask ends when its sender
/// is dropped.
struct ScriptedSource {
    readers: Mutex<Vec<Option<mpsc::UnboundedReceiver<Batch<Ev>>>>>,
}

impl ScriptedSource {
    fn new(subtasks: usize) -> (ScriptedSource, Vec<mpsc::UnboundedSender<Batch<Ev>>>) {
        let (senders, receivers): (Vec<_>, Vec<_>) =
            (0..subtasks).map(|_| mpsc::unbounded_channel()).map(|(tx, rx)| (tx, Some(rx))).unzip();
        (ScriptedSource { readers: Mutex::new(receivers) }, senders)
    }
}

struct ScriptedReader {
    rx: mpsc::UnboundedReceiver<Batch<Ev>>,
}

impl Source for ScriptedSource {
    type Item = Ev;
    type Reader = ScriptedReader;

    fn name(&self) -> String {
        "scripted".to_owned()
    }

    fn reader(&self, subtask: usize, _parallelism: usize) -> Result<ScriptedReader> {
        let rx = self.readers.lock().unwrap().get_mut(subtask).and_then(Option::take);
        rx.map(|rx| ScriptedReader { rx })
            .ok_or_else(|| Error::connector("source scripted", format!("no script for subtask {subtask}")))
    }
}

impl SourceReader for ScriptedReader {
    type Item = Ev;

    async fn next_batch(&mut self) -> Result<Option<Batch<Ev>>> {
        Ok(self.rx.recv().await)
    }
}

/// A running scripted job and what its window has emitted so far.
struct Job {
    senders: Vec<mpsc::UnboundedSender<Batch<Ev>>>,
    out: CollectSink<WindowResult<char, u64>>,
    fired: Vec<Fired>,
    handle: JoinHandle<Result<JobReport>>,
}

impl Job {
    /// Starts `scripted → assign_timestamps(strategy) → key_by('k') → window(spec) → Count`, with
    /// one scripted reader per subtask.
    fn start(parallelism: usize, strategy: Watermarks, spec: WindowSpec) -> Job {
        let (source, senders) = ScriptedSource::new(parallelism);
        let p =
            Pipeline::builder("watermarks").parallelism(parallelism).handle_signals(false).build().unwrap();
        let out = CollectSink::new();
        p.source(source)
            .assign_timestamps(|e: &Ev| e.1, strategy)
            .key_by(|_: &Ev| 'k')
            .window(spec)
            .aggregate(Count)
            .sink(out.clone());
        Job { senders, out, fired: Vec::new(), handle: tokio::spawn(p.run()) }
    }

    /// Sends the records of `split`, with these timestamps, to source subtask `subtask`.
    fn send(&self, subtask: usize, split: u32, timestamps: &[i64]) {
        let records = timestamps.iter().map(|&t| (split, t)).collect();
        self.senders[subtask].send(Batch::from_split(split, records)).unwrap();
    }

    /// Everything fired so far.
    fn poll(&mut self) -> &[Fired] {
        self.fired.extend(self.out.take().into_iter().map(|r| (r.window_start, r.window_end, r.value)));
        &self.fired
    }

    /// Waits until the window `[start, end)` has fired; its count, or `None` after [`PATIENCE`].
    async fn fired_within(&mut self, start: i64, end: i64, patience: Duration) -> Option<u64> {
        let deadline = Instant::now() + patience;
        loop {
            if let Some(&(_, _, n)) = self.poll().iter().find(|f| f.0 == start && f.1 == end) {
                return Some(n);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Ends every source subtask and waits for the job; the report and everything fired.
    async fn finish(mut self) -> (JobReport, Vec<Fired>) {
        self.senders.clear();
        let report = tokio::time::timeout(PATIENCE, &mut self.handle).await.expect("the job completes");
        let report = report.unwrap().unwrap();
        self.poll();
        (report, self.fired)
    }
}

/// Where the two splits of a test are read.
#[derive(Debug, Clone, Copy)]
enum Layout {
    /// Parallelism 1: both splits in the one source subtask (merged in `assign_timestamps`).
    OneTask,
    /// Parallelism 2: split `i` in subtask `i` (merged after the `key_by` exchange).
    TwoSubtasks,
}

impl Layout {
    fn parallelism(self) -> usize {
        match self {
            Layout::OneTask => 1,
            Layout::TwoSubtasks => 2,
        }
    }

    fn subtask(self, split: u32) -> usize {
        match self {
            Layout::OneTask => 0,
            Layout::TwoSubtasks => split as usize,
        }
    }
}

/// The watermark is the minimum over splits: a split far ahead does not fire `[0, 1000)` while the
/// other split is at 500; the window fires as soon as the slow split passes 1000, and only it.
async fn slow_split_holds_the_window_back(layout: Layout) {
    let mut job = Job::start(layout.parallelism(), Watermarks::monotonic(), TumblingWindows::of(ms(1_000)));
    let (fast, slow) = (0, 1);
    job.send(layout.subtask(fast), fast, &[500]);
    job.send(layout.subtask(slow), slow, &[500]);
    job.send(layout.subtask(fast), fast, &[5_000]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(job.poll(), &[] as &[Fired], "{layout:?}: the slow split (at 500) holds every window back");

    job.send(layout.subtask(slow), slow, &[1_500]);
    assert_eq!(
        job.fired_within(0, 1_000, PATIENCE).await,
        Some(2),
        "{layout:?}: [0, 1000) fires once the slow split passed 1000"
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        job.poll(),
        &[(0, 1_000, 2)],
        "{layout:?}: the watermark is 1499, not 4999: nothing else fired"
    );

    let (report, mut fired) = job.finish().await;
    fired.sort_unstable();
    assert_eq!(fired, vec![(0, 1_000, 2), (1_000, 2_000, 1), (5_000, 6_000, 1)], "{layout:?}");
    assert_eq!(report.late_records, 0, "{layout:?}");
}

#[tokio::test(start_paused = true)]
async fn a_slow_split_in_the_same_task_holds_the_window_back() {
    slow_split_holds_the_window_back(Layout::OneTask).await;
}

#[tokio::test(start_paused = true)]
async fn a_slow_subtask_holds_the_window_back_after_the_exchange() {
    slow_split_holds_the_window_back(Layout::TwoSubtasks).await;
}

/// Splits 0 and 1 start at 500; split 1 then goes silent while split 0 moves to 5000. Before the
/// idle timeout split 1 still holds `[0, 1000)` back; after it, split 0's next batch fires it.
/// Once split 1 sends again it counts again.
async fn idle_split_stops_holding_the_window_back(layout: Layout) {
    const IDLE: Duration = Duration::from_millis(400);
    let strategy = Watermarks::monotonic().with_idle_timeout(IDLE);
    let mut job = Job::start(layout.parallelism(), strategy, TumblingWindows::of(ms(1_000)));
    let (busy, silent) = (0, 1);
    job.send(layout.subtask(busy), busy, &[500]);
    job.send(layout.subtask(silent), silent, &[500]);
    job.send(layout.subtask(busy), busy, &[5_000]);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(job.poll(), &[] as &[Fired], "{layout:?}: split 1 is not idle yet");

    // Split 1 has been silent for longer than the idle timeout; split 0 keeps sending.
    let silent_since = Instant::now();
    tokio::time::sleep(IDLE + Duration::from_millis(100)).await;
    let (mut count, mut sent) = (None, 1);
    for ts in 5_001..5_040 {
        job.send(layout.subtask(busy), busy, &[ts]);
        sent += 1;
        count = job.fired_within(0, 1_000, Duration::from_millis(50)).await;
        if count.is_some() {
            break;
        }
    }
    assert_eq!(
        count,
        Some(2),
        "{layout:?}: [0, 1000) fires while split 1 has been silent for {:?} (idle timeout {IDLE:?})",
        silent_since.elapsed()
    );

    let (report, mut fired) = job.finish().await;
    fired.sort_unstable();
    assert_eq!(fired, vec![(0, 1_000, 2), (5_000, 6_000, sent)], "{layout:?}");
    assert_eq!(report.late_records, 0, "{layout:?}");
}

#[tokio::test(start_paused = true)]
async fn an_idle_split_stops_holding_the_window_back() {
    idle_split_stops_holding_the_window_back(Layout::OneTask).await;
}

/// The same with the silent split alone in its subtask (parallelism = number of splits, the
/// usual layout for a partitioned source): the idle subtask must not hold the window back
/// either (ARCHITECTURE.md: "idle partitions excluded after a timeout").
#[tokio::test(start_paused = true)]
async fn an_idle_subtask_stops_holding_the_window_back() {
    idle_split_stops_holding_the_window_back(Layout::TwoSubtasks).await;
}

/// A split that resumes after being idle counts again: with split 1 back at 5500, split 0 at
/// 9000 does not fire `[5000, 6000)`.
#[tokio::test(start_paused = true)]
async fn a_split_that_resumes_counts_again() {
    const IDLE: Duration = Duration::from_millis(400);
    let strategy = Watermarks::monotonic().with_idle_timeout(IDLE);
    let mut job = Job::start(1, strategy, TumblingWindows::of(ms(1_000)));
    job.send(0, 0, &[500]);
    job.send(0, 1, &[500]);
    tokio::time::sleep(IDLE + Duration::from_millis(100)).await;
    job.send(0, 0, &[5_000]);
    assert_eq!(job.fired_within(0, 1_000, PATIENCE).await, Some(2), "split 1 was idle");
    job.send(0, 1, &[5_500]);
    job.send(0, 0, &[9_000]);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        !job.poll().iter().any(|f| f.0 == 5_000),
        "split 1 at 5500 holds [5000, 6000) back again: {:?}",
        job.poll()
    );
    let (_, mut fired) = job.finish().await;
    fired.sort_unstable();
    assert_eq!(fired, vec![(0, 1_000, 2), (5_000, 6_000, 2), (9_000, 10_000, 1)]);
}

/// A split that has ended (a file read to its end, a chunk of memory) must not pin event time:
/// with batches of one record from a `MemorySource` (each its own split) at 0, 10 s and 20 s, the
/// record at 5 ms that follows is 20 s behind the watermark and must be late.
#[tokio::test(start_paused = true)]
async fn finished_splits_do_not_pin_the_watermark() {
    let p = Pipeline::builder("finished splits").parallelism(1).handle_signals(false).build().unwrap();
    let out = CollectSink::new();
    p.source(MemorySource::new(vec![0i64, 10_000, 20_000, 5]).batch_size(1))
        .assign_timestamps(|t| *t, Watermarks::monotonic())
        .key_by(|_| 'k')
        .window(TumblingWindows::of(ms(1_000)))
        .aggregate(Count)
        .sink(out.clone());
    let report = tokio::time::timeout(PATIENCE, p.run()).await.unwrap().unwrap();
    let mut fired: Vec<Fired> =
        out.take().into_iter().map(|r| (r.window_start, r.window_end, r.value)).collect();
    fired.sort_unstable();
    assert_eq!(
        (report.late_records, fired),
        (1, vec![(0, 1_000, 1), (10_000, 11_000, 1), (20_000, 21_000, 1)]),
        "the watermark is 19 999 when the record at 5 ms arrives"
    );
}

/// A bounded source ends with the final watermark: every window still open fires (here all of
/// them, since nothing passes the huge bound before the end), however far in the future, and
/// the job completes.
#[tokio::test(start_paused = true)]
async fn the_final_watermark_fires_every_open_window_and_the_job_completes() {
    const YEAR_2100: i64 = 4_102_444_800_000;
    const YEAR_9999: i64 = 253_402_300_799_000;
    let timestamps = vec![-5_000, 0, 999, 1_000, 3_000, 3_500, YEAR_2100, YEAR_2100 + 1, YEAR_9999];
    let specs = [
        (
            TumblingWindows::of(ms(1_000)),
            vec![
                (-5_000, -4_000, 1),
                (0, 1_000, 2),
                (1_000, 2_000, 1),
                (3_000, 4_000, 2),
                (YEAR_2100, YEAR_2100 + 1_000, 2),
                (YEAR_9999, YEAR_9999 + 1_000, 1),
            ],
        ),
        (
            SlidingWindows::of(ms(2_000), ms(1_000)),
            vec![
                (-6_000, -4_000, 1),
                (-5_000, -3_000, 1),
                (-1_000, 1_000, 2),
                (0, 2_000, 3),
                (1_000, 3_000, 1),
                (2_000, 4_000, 2),
                (3_000, 5_000, 2),
                (YEAR_2100 - 1_000, YEAR_2100 + 1_000, 2),
                (YEAR_2100, YEAR_2100 + 2_000, 2),
                (YEAR_9999 - 1_000, YEAR_9999 + 1_000, 1),
                (YEAR_9999, YEAR_9999 + 2_000, 1),
            ],
        ),
        (
            SessionWindows::with_gap(ms(1_000)),
            vec![
                (-5_000, -4_000, 1),
                (0, 2_000, 3),
                (3_000, 4_500, 2),
                (YEAR_2100, YEAR_2100 + 1_001, 2),
                (YEAR_9999, YEAR_9999 + 1_000, 1),
            ],
        ),
    ];
    for (spec, want) in specs {
        for parallelism in [1, 4] {
            let p = Pipeline::builder("final watermark")
                .parallelism(parallelism)
                .handle_signals(false)
                .build()
                .unwrap();
            let out = CollectSink::new();
            p.source(MemorySource::new(timestamps.clone()).batch_size(2))
                .assign_timestamps(|t| *t, Watermarks::bounded_out_of_orderness(Duration::from_secs(1 << 40)))
                .key_by(|_| 'k')
                .window(spec)
                .aggregate(Count)
                .sink(out.clone());
            let report = tokio::time::timeout(PATIENCE, p.run())
                .await
                .unwrap_or_else(|_| panic!("{spec:?} p{parallelism}: the job completes"))
                .unwrap();
            let mut fired: Vec<Fired> =
                out.take().into_iter().map(|r| (r.window_start, r.window_end, r.value)).collect();
            fired.sort_unstable();
            assert_eq!(fired, want, "{spec:?} p{parallelism}");
            assert_eq!(report.late_records, 0, "{spec:?} p{parallelism}");
        }
    }
}

/// An event time within one window of the largest timestamp (a garbage timestamp, say) must
/// neither crash the job nor vanish: it lands in a window whose end is clamped to the end of time
/// or is counted as late.
#[tokio::test(start_paused = true)]
async fn a_timestamp_at_the_end_of_time_does_not_crash_the_job() {
    for spec in [
        TumblingWindows::of(ms(1_000)),
        SlidingWindows::of(ms(2_000), ms(1_000)),
        SessionWindows::with_gap(ms(1_000)),
    ] {
        let p = Pipeline::builder("end of time").parallelism(1).handle_signals(false).build().unwrap();
        let out = CollectSink::new();
        p.source(MemorySource::new(vec![1_000i64, i64::MAX - 1]))
            .assign_timestamps(|t| *t, Watermarks::monotonic())
            .key_by(|_| 'k')
            .window(spec)
            .aggregate(Count)
            .sink(out.clone());
        let report = tokio::time::timeout(PATIENCE, p.run()).await.unwrap();
        assert!(report.is_ok(), "{spec:?}: {report:?}");
        let counted: u64 = out.take().iter().map(|r| r.value).sum::<u64>() + report.unwrap().late_records;
        assert!(counted >= 2, "{spec:?}: every record is in a window or counted late");
    }
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}
