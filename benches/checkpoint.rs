//! `checkpoint`: checkpoints of a keyed tumbling-window job holding 1 million keys of state, and
//! recovery from them after the process is killed.
//!
//! ```text
//! cargo bench -p weir-benches --bench checkpoint                      # full run, about a minute
//! cargo bench -p weir-benches --bench checkpoint -- --quick           # smoke run for CI, seconds
//! cargo bench -p weir-benches --bench checkpoint -- --keys 2000000    # another amount of state
//! cargo bench -p weir-benches --bench checkpoint -- recovery          # only the recovery trials
//! ```
//!
//! The job: a source of `keys` records, one per key (a `u64` spread over its whole range, so its
//! postcard varint takes 9–10 bytes), all in the same hour of event time → `assign_timestamps`
//! (bounded out-of-orderness 1 s) → `key_by(key)` → `TumblingWindows::of(1 h)` →
//! `aggregate((Count, Sum::of(value)))` → a sink that notes when its first batch came and checks
//! the results. The window never fires while the source runs: after its last record a source
//! subtask waits (sending nothing) until it is released or the process is killed, so the window
//! operators hold one `(count, sum)` per key. The source saves its position (the next chunk of
//! records) in checkpoints and resumes there. Parallelism: one per CPU; checkpoints to a new
//! directory under `WEIR_BENCH_DIR` if set, else under Cargo's `CARGO_TARGET_TMPDIR`.
//!
//! Two parts, each a row the filter selects:
//!
//! - `checkpoint`: in this process. The keys are read, and after 250 ms (the window drains its
//!   input channel) three checkpoints are taken one after the other on demand
//!   (`CheckpointHandle::trigger`), each of the whole state. Per checkpoint: the coordinator's
//!   duration (`weir_checkpoint_duration_seconds`: from injecting the barriers to the manifest
//!   being published, fsyncs included), the time from the trigger until the bench saw it
//!   complete, and its bytes (`weir_checkpoint_size_bytes`, checked against the manifest's part
//!   sizes). Then the source is released: it ends, the final watermark fires every window, and
//!   the time until the first result reaches the sink is the cost of firing the state (no
//!   restore involved), for comparison with the recovery.
//! - `recovery`: the bench runs itself as a child process (`--child ingest`) that reads the keys,
//!   takes one checkpoint and reports it; the parent kills it (SIGKILL) and starts a second child
//!   (`--child recover`) on the same directory. That one restores the checkpoint, its source
//!   resumes after its last record (nothing left), the final watermark fires the restored
//!   windows, and the job ends. The results must be every key once, with count 1: state that
//!   came only from the checkpoint. Times from the second child's spawn (wall clock, both
//!   processes on this machine): to `main`, to `Pipeline::run`, to the runtime's `restoring
//!   checkpoint` log (checkpoint listed, read, CRC-checked and decoded), to `pipeline started`
//!   (tasks spawned), to the first result at the sink (the window operators restore their
//!   state as their first message arrives, then fire), to the end of the job.
//!   Target: spawn → first output < 2 s for 1 M keys.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, bail, ensure};
use tokio::runtime::Runtime;
use tokio::sync::watch;
use weir_benches::{
    Args, Target, bench_root, checkpoints, describe_fs, group, median, print_summary, secs, start,
};
use weir_runtime::{
    Batch, Checkpointing, Count, Metrics, Pipeline, Sink, SinkWriter, Source, SourceReader, SplitPositions,
    Sum, TumblingWindows, Watermarks, WindowResult,
};

const USAGE: &str = "usage: checkpoint [--quick] [--keys N] [FILTER]   (FILTER: `checkpoint` or `recovery`)";

/// Keys of state in the full run and under `--quick`.
const KEYS_FULL: u64 = 1_000_000;
const KEYS_QUICK: u64 = 20_000;
/// Checkpoints taken one after the other in each in-process run.
const CHECKPOINTS_PER_RUN: usize = 3;
/// In-process runs, and kill-and-recover trials (full run; `--quick`: 1 each).
const RUNS_FULL: usize = 3;
const TRIALS_FULL: usize = 5;
/// Records per source batch.
const BATCH: u64 = 4096;
/// The window: longer than the event time the records span, so it does not fire while they run.
const WINDOW: Duration = Duration::from_secs(3600);
/// Event time of the records: 2023-11-14T22:13:20Z plus up to a second.
const START_MS: i64 = 1_700_000_000_000;
/// How long the in-process runs wait after the last record was sent before the first checkpoint.
const SETTLE: Duration = Duration::from_millis(250);
/// Longest wait for a checkpoint or a child process.
const PATIENCE: Duration = Duration::from_secs(300);
const TARGET_RECOVERY: Duration = Duration::from_secs(2);
/// The pipeline's name (and its metrics' `pipeline` label).
const PIPELINE: &str = "checkpoint_bench";

fn main() -> Result<()> {
    let args = Args::parse_with(USAGE, &["--keys", "--child", "--dir"])?;
    let keys = match args.value("--keys") {
        Some(k) => k.replace(['_', ','], "").parse().with_context(|| format!("--keys {k}\n{USAGE}"))?,
        None if args.quick => KEYS_QUICK,
        None => KEYS_FULL,
    };
    ensure!(keys > 0, "--keys must be above 0");
    if let Some(child) = args.value("--child") {
        let dir = PathBuf::from(args.value("--dir").context("--child needs --dir")?);
        return match child {
            "ingest" => child_ingest(keys, &dir),
            "recover" => child_recover(keys, &dir),
            other => bail!("unknown --child {other}"),
        };
    }
    let rows = ["checkpoint", "recovery"];
    if !rows.iter().any(|r| args.selects(r)) {
        bail!("no row id contains {:?}\n{USAGE}", args.filter.as_deref().unwrap_or(""));
    }
    let (runtime, workers) = start("weir-runtime checkpoint and recovery benchmark", &args)?;
    let started = Instant::now();
    let (runs, trials) = if args.quick { (1, 1) } else { (RUNS_FULL, TRIALS_FULL) };
    let root = bench_root(PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("weir-checkpoint-bench"))?;

    println!(
        "  state: {} keys (u64 spread over its range), one record each, all in one 1 h tumbling window",
        group(keys)
    );
    println!("    that does not fire while the source runs; aggregate (Count, Sum); parallelism {workers}");
    println!("    (source and window subtasks); source batches of {BATCH} records.");
    println!("  checkpoints: to a new directory per run under {} ({}),", root.display(), describe_fs(&root));
    println!("    fsynced (part files, manifest, directories); taken on demand (interval 1 h).");
    println!(
        "  checkpoint row: {runs} in-process run(s), each {CHECKPOINTS_PER_RUN} checkpoints of the whole state one after"
    );
    println!("    the other, then the source released (fire = release → first result at the sink).");
    println!("  recovery row: {trials} trial(s): child 1 reads the keys, checkpoints, is killed (SIGKILL);");
    println!("    child 2 restores, its windows fire; times from child 2's spawn.");

    let mut targets = Vec::new();
    let mut table = Table::default();
    // The median time to fire the state without a restore (the checkpoint row), to estimate the
    // window operators' share of the recovery.
    let mut fire = None;
    if args.selects("checkpoint") {
        println!();
        let mut samples = Vec::new();
        for run in 0..runs {
            let s = in_process_run(&runtime, workers, keys, &root).with_context(|| format!("run {run}"))?;
            for (k, c) in s.checkpoints.iter().enumerate() {
                println!(
                    "checkpoint run {run} #{}: duration {} (trigger → seen complete {}), {} bytes ({} of window state)",
                    k + 1,
                    secs(c.duration),
                    secs(c.seen),
                    group(c.bytes),
                    group(c.window_bytes),
                );
            }
            println!(
                "checkpoint run {run}: ingest {}, fire {} keys {}, job end {} after the release",
                secs(s.ingest),
                group(keys),
                secs(s.fire),
                secs(s.end)
            );
            samples.push(s);
        }
        let all: Vec<&CheckpointSample> = samples.iter().flat_map(|s| &s.checkpoints).collect();
        table.row("checkpoint: keys in state", group(keys), String::new(), String::new());
        let bytes = all.iter().map(|c| c.bytes).max().unwrap_or(0);
        let window_bytes = all.iter().map(|c| c.window_bytes).max().unwrap_or(0);
        table.row(
            "checkpoint: bytes (all part files)",
            group(bytes),
            format!("{:.1} B/key", bytes as f64 / keys as f64),
            String::new(),
        );
        table.row("  of which window state", group(window_bytes), String::new(), String::new());
        table.durations("checkpoint: duration (weir_checkpoint_duration)", all.iter().map(|c| c.duration));
        table.durations("checkpoint: trigger → seen complete", all.iter().map(|c| c.seen));
        table.durations("ingest: source sent every record", samples.iter().map(|s| s.ingest));
        table.durations("fire: release → first result (no restore)", samples.iter().map(|s| s.fire));
        fire = median(samples.iter().map(|s| s.fire).collect());
    }
    if args.selects("recovery") {
        println!();
        let mut samples = Vec::new();
        for trial in 0..trials {
            let s = recovery_trial(keys, &root).with_context(|| format!("recovery trial {trial}"))?;
            println!(
                "recovery trial {trial}: checkpoint {} of {} bytes (took {} in the killed child); spawn → main {}, \
                 → run() {}, → checkpoint read {}, → tasks started {}, → first result {}, → job end {}",
                s.checkpoint_id,
                group(s.bytes),
                secs(s.checkpoint_duration),
                secs(s.main),
                secs(s.run),
                secs(s.read),
                secs(s.started),
                secs(s.first),
                secs(s.end),
            );
            samples.push(s);
        }
        let bytes = samples.iter().map(|s| s.bytes).max().unwrap_or(0);
        table.row("recovery: keys restored", group(keys), String::new(), String::new());
        table.row("recovery: checkpoint bytes", group(bytes), String::new(), String::new());
        let first = median(samples.iter().map(|s| s.first).collect());
        let verdict = first.map(|f| {
            let met = f < TARGET_RECOVERY;
            targets.push(Target {
                what: format!(
                    "recovery after a kill, {} keys: spawn → first output < {} s",
                    group(keys),
                    TARGET_RECOVERY.as_secs()
                ),
                measured: format!("{} (median of {})", secs(f), samples.len()),
                met,
            });
            format!("< {} s {}", TARGET_RECOVERY.as_secs(), weir_benches::pass(met))
        });
        table.durations_with(
            "recovery: spawn → first output",
            samples.iter().map(|s| s.first),
            verdict.unwrap_or_default(),
        );
        table.durations("  run() → first output", samples.iter().map(|s| s.first.saturating_sub(s.run)));
        table.durations("  spawn → main (exec, process start)", samples.iter().map(|s| s.main));
        table.durations(
            "  main → run() (runtime, pipeline built)",
            samples.iter().map(|s| s.run.saturating_sub(s.main)),
        );
        table.durations(
            "  run() → checkpoint read (restore I/O)",
            samples.iter().map(|s| s.read.saturating_sub(s.run)),
        );
        table.durations("  → tasks started", samples.iter().map(|s| s.started.saturating_sub(s.read)));
        table.durations(
            "  → first output (window restore + fire)",
            samples.iter().map(|s| s.first.saturating_sub(s.started)),
        );
        let restore_and_fire = median(samples.iter().map(|s| s.first.saturating_sub(s.started)).collect());
        if let (Some(both), Some(fire)) = (restore_and_fire, fire) {
            table.row(
                "    est. window restore (minus fire above)",
                secs(both.saturating_sub(fire)),
                String::new(),
                String::new(),
            );
        }
        table.durations(
            "  → job end (all results, final chk)",
            samples.iter().map(|s| s.end.saturating_sub(s.first)),
        );
        table.durations(
            "recovery: checkpoint load (run() → tasks started)",
            samples.iter().map(|s| s.started.saturating_sub(s.run)),
        );
    }
    table.print();
    print_summary(&targets, started);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The job.

/// One record: a key, a value to sum, and its event time.
#[derive(Debug, Clone, Copy)]
struct Click {
    key: u64,
    value: u64,
    ts: i64,
}

/// Record `i` of the input: key `i` scrambled (a bijection onto the `u64`s), value `i % 1000`.
fn click(i: u64) -> Click {
    Click { key: i.wrapping_mul(0x9e37_79b9_7f4a_7c15), value: i % 1000, ts: START_MS + (i % 1000) as i64 }
}

type Out = WindowResult<u64, (u64, u64)>;

/// `keys` records, one per key; subtask `s` of `p` reads chunks `s, s + p, …` of [`BATCH`]
/// records. After its last record a reader waits for `release` to turn true before it ends (no
/// `release`: it ends at once).
#[derive(Clone)]
struct KeySource {
    keys: u64,
    release: Option<watch::Receiver<bool>>,
    /// Readers that returned their last record.
    done: Arc<AtomicUsize>,
}

struct KeyReader {
    source: KeySource,
    chunk: u64,
    step: u64,
    split: u32,
    counted: bool,
}

impl Source for KeySource {
    type Item = Click;
    type Reader = KeyReader;

    fn name(&self) -> String {
        "keys".to_owned()
    }

    fn reader(&self, subtask: usize, parallelism: usize) -> weir_runtime::Result<KeyReader> {
        Ok(KeyReader {
            source: self.clone(),
            chunk: subtask as u64,
            step: parallelism.max(1) as u64,
            split: u32::try_from(subtask).unwrap_or(u32::MAX),
            counted: false,
        })
    }

    fn reader_at(
        &self,
        subtask: usize,
        parallelism: usize,
        positions: &SplitPositions,
    ) -> weir_runtime::Result<KeyReader> {
        let mut reader = self.reader(subtask, parallelism)?;
        if let Some(p) = positions.get(reader.split) {
            reader.chunk = weir_runtime::decode(p)?;
        }
        Ok(reader)
    }
}

impl SourceReader for KeyReader {
    type Item = Click;

    async fn next_batch(&mut self) -> weir_runtime::Result<Option<Batch<Click>>> {
        let start = self.chunk * BATCH;
        if start >= self.source.keys {
            if !std::mem::replace(&mut self.counted, true) {
                self.source.done.fetch_add(1, Ordering::SeqCst);
            }
            if let Some(release) = &mut self.source.release {
                // Cancel safe: the runtime drops this read for a checkpoint and reads again.
                let _ = release.wait_for(|released| *released).await;
            }
            return Ok(None);
        }
        let end = (start + BATCH).min(self.source.keys);
        self.chunk += self.step;
        Ok(Some(Batch::from_split(self.split, (start..end).map(click).collect())))
    }

    fn positions(&self) -> Vec<(u32, Vec<u8>)> {
        weir_runtime::encode(&self.chunk).map(|p| vec![(self.split, p)]).unwrap_or_default()
    }
}

/// A sink that notes when the first result arrived and sums what the results say.
#[derive(Clone, Default)]
struct FirstSink {
    inner: Arc<Seen>,
}

#[derive(Default)]
struct Seen {
    first: OnceLock<(Instant, SystemTime)>,
    results: AtomicU64,
    count: AtomicU64,
    sum: AtomicU64,
    bad: AtomicU64,
}

struct FirstWriter {
    inner: Arc<Seen>,
}

impl Sink<Out> for FirstSink {
    type Writer = FirstWriter;

    fn name(&self) -> String {
        "first".to_owned()
    }

    fn writer(&self, _subtask: usize, _parallelism: usize) -> weir_runtime::Result<FirstWriter> {
        Ok(FirstWriter { inner: self.inner.clone() })
    }
}

impl SinkWriter<Out> for FirstWriter {
    async fn write_batch(&mut self, batch: Batch<Out>) -> weir_runtime::Result<()> {
        self.inner.first.get_or_init(|| (Instant::now(), SystemTime::now()));
        let (mut count, mut sum, mut bad) = (0, 0, 0);
        for r in &batch.records {
            count += r.value.0;
            sum += r.value.1;
            // Every key is read once, so every window holds a count of 1.
            bad += u64::from(r.value.0 != 1 || r.window_end - r.window_start != WINDOW.as_millis() as i64);
        }
        self.inner.results.fetch_add(batch.len() as u64, Ordering::Relaxed);
        self.inner.count.fetch_add(count, Ordering::Relaxed);
        self.inner.sum.fetch_add(sum, Ordering::Relaxed);
        self.inner.bad.fetch_add(bad, Ordering::Relaxed);
        Ok(())
    }

    async fn finish(&mut self) -> weir_runtime::Result<()> {
        Ok(())
    }
}

impl FirstSink {
    /// Fails unless the results are every one of `keys` keys once, with count 1.
    fn check(&self, keys: u64) -> Result<()> {
        let s = &self.inner;
        let (results, count, sum, bad) = (
            s.results.load(Ordering::Relaxed),
            s.count.load(Ordering::Relaxed),
            s.sum.load(Ordering::Relaxed),
            s.bad.load(Ordering::Relaxed),
        );
        let want_sum: u64 = (0..keys).map(|i| click(i).value).sum();
        ensure!(
            results == keys && count == keys && sum == want_sum && bad == 0,
            "results: {results} windows, counts summing to {count}, values to {sum}, {bad} malformed; \
             expected {keys} windows, counts summing to {keys}, values to {want_sum}"
        );
        Ok(())
    }
}

/// The job on `dir`: its pipeline (run it), and the count of source readers that sent their
/// last record.
fn build(
    keys: u64,
    parallelism: usize,
    dir: &Path,
    release: Option<watch::Receiver<bool>>,
    sink: FirstSink,
    metrics: Option<Metrics>,
) -> Result<(Pipeline, Arc<AtomicUsize>)> {
    let mut builder = Pipeline::builder(PIPELINE)
        .parallelism(parallelism)
        .handle_signals(false)
        .checkpointing(Checkpointing::to_dir(dir).interval(WINDOW));
    if let Some(m) = metrics {
        builder = builder.metrics(m);
    }
    let p = builder.build()?;
    let done = Arc::new(AtomicUsize::new(0));
    p.source(KeySource { keys, release, done: done.clone() })
        .assign_timestamps(|c: &Click| c.ts, Watermarks::bounded_out_of_orderness(Duration::from_secs(1)))
        .key_by(|c: &Click| c.key)
        .window(TumblingWindows::of(WINDOW))
        .aggregate((Count, Sum::of(|c: &Click| c.value)))
        .sink(sink);
    Ok((p, done))
}

/// Waits until `ready` holds, polling every millisecond; fails after [`PATIENCE`].
fn wait_until(what: &str, mut ready: impl FnMut() -> Result<bool>) -> Result<()> {
    let start = Instant::now();
    while !ready()? {
        ensure!(start.elapsed() < PATIENCE, "{what}: not after {PATIENCE:?}");
        std::thread::sleep(Duration::from_millis(1));
    }
    Ok(())
}

/// The checkpoint metrics of the registry: (completed, duration sum in seconds, size sum).
fn checkpoint_metrics(metrics: &Metrics) -> (f64, f64, f64) {
    let text = metrics.encode();
    let get = |name| checkpoints::metric(&text, name).unwrap_or(0.0);
    (
        get("weir_checkpoints_completed_total"),
        get("weir_checkpoint_duration_seconds_sum"),
        get("weir_checkpoint_size_bytes_sum"),
    )
}

/// A job started by [`ingest`].
struct Ingested {
    job: tokio::task::JoinHandle<weir_runtime::Result<weir_runtime::JobReport>>,
    metrics: Metrics,
    handle: weir_runtime::CheckpointHandle,
    ingest: Duration,
}

/// Starts the job of `dir` on `runtime` and waits until every source reader sent its last
/// record, and [`SETTLE`] more.
fn ingest(
    runtime: &Runtime,
    parallelism: usize,
    keys: u64,
    dir: &Path,
    release: Option<watch::Receiver<bool>>,
    sink: FirstSink,
) -> Result<Ingested> {
    let metrics = Metrics::new();
    let (p, done) = build(keys, parallelism, dir, release, sink, Some(metrics.clone()))?;
    let handle = p.checkpoint_handle();
    let start = Instant::now();
    let job = runtime.spawn(p.run());
    wait_until("the source sending its records", || {
        ensure!(!job.is_finished(), "the job ended while reading its input");
        Ok(done.load(Ordering::SeqCst) >= parallelism)
    })?;
    let ingest = start.elapsed();
    std::thread::sleep(SETTLE);
    Ok(Ingested { job, metrics, handle, ingest })
}

/// What one checkpoint took and wrote.
#[derive(Debug, Clone, Copy)]
struct CheckpointSample {
    /// The coordinator's duration (the `weir_checkpoint_duration_seconds` observation).
    duration: Duration,
    /// From the trigger until the bench saw the completed counter rise.
    seen: Duration,
    /// Bytes of all its part files.
    bytes: u64,
    /// Bytes of the window operators' part files.
    window_bytes: u64,
    id: u64,
}

/// Takes a checkpoint of the job in `ingested` and waits for it.
fn checkpoint(ingested: &Ingested, dir: &Path) -> Result<CheckpointSample> {
    let (completed, duration, size) = checkpoint_metrics(&ingested.metrics);
    let start = Instant::now();
    ingested.handle.trigger();
    let mut now = (completed, duration, size);
    wait_until("a checkpoint", || {
        ensure!(!ingested.job.is_finished(), "the job ended while checkpointing");
        now = checkpoint_metrics(&ingested.metrics);
        Ok(now.0 > completed)
    })?;
    let seen = start.elapsed();
    // The registry is read metric by metric, so the counter may have been read after the
    // coordinator's update and the histograms before it: read until all three moved.
    wait_until("the checkpoint's metrics", || {
        now = checkpoint_metrics(&ingested.metrics);
        Ok(now.1 > duration && now.2 > size)
    })?;
    ensure!(now.0 == completed + 1.0, "{} checkpoints completed at once", now.0 - completed);
    let manifest = checkpoints::latest(dir)?.context("no checkpoint in the directory")?;
    let bytes = (now.2 - size).round() as u64;
    ensure!(
        bytes == manifest.bytes(),
        "the metrics say {bytes} bytes, the manifest of checkpoint {} {}",
        manifest.id,
        manifest.bytes()
    );
    Ok(CheckpointSample {
        duration: Duration::from_secs_f64(now.1 - duration),
        seen,
        bytes,
        window_bytes: manifest.bytes_of("window"),
        id: manifest.id,
    })
}

// ---------------------------------------------------------------------------------------------
// In process: checkpoint duration and size.

struct RunSample {
    ingest: Duration,
    checkpoints: Vec<CheckpointSample>,
    /// From the release of the source to the first result at the sink.
    fire: Duration,
    /// From the release to the end of the job.
    end: Duration,
}

fn in_process_run(runtime: &Runtime, parallelism: usize, keys: u64, root: &Path) -> Result<RunSample> {
    let dir = tempfile::Builder::new().prefix("checkpoints-").tempdir_in(root)?;
    let (release, released) = watch::channel(false);
    let sink = FirstSink::default();
    let ingested = ingest(runtime, parallelism, keys, dir.path(), Some(released), sink.clone())?;
    let mut samples = Vec::new();
    for _ in 0..CHECKPOINTS_PER_RUN {
        samples.push(checkpoint(&ingested, dir.path())?);
    }
    ensure!(sink.inner.first.get().is_none(), "the window fired before the source was released");
    let start = Instant::now();
    release.send_replace(true);
    let report = runtime.block_on(ingested.job)??;
    let end = start.elapsed();
    weir_benches::check_report(&report)?;
    sink.check(keys)?;
    let fire = sink.inner.first.get().context("no result")?.0.saturating_duration_since(start);
    Ok(RunSample { ingest: ingested.ingest, checkpoints: samples, fire, end })
}

// ---------------------------------------------------------------------------------------------
// Recovery: child processes.

/// The runtime a child runs the job on: one worker per CPU, as the parent's.
fn child_runtime() -> Result<(Runtime, usize)> {
    let workers = std::thread::available_parallelism().map_or(2, usize::from);
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(workers).enable_all().build()?;
    Ok((runtime, workers))
}

/// Nanoseconds since the Unix epoch (the clock both processes share).
fn epoch_ns(t: SystemTime) -> u128 {
    t.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_nanos())
}

/// Prints one report line for the parent: `@<tag> key=value …`.
fn report(tag: &str, fields: &[(&str, String)]) -> Result<()> {
    let mut out = std::io::stdout().lock();
    write!(out, "@{tag}")?;
    for (k, v) in fields {
        write!(out, " {k}={v}")?;
    }
    writeln!(out)?;
    out.flush()?;
    Ok(())
}

/// Child 1: reads the keys, takes a checkpoint, reports it, and waits to be killed.
fn child_ingest(keys: u64, dir: &Path) -> Result<()> {
    init_tracing(None);
    let (runtime, workers) = child_runtime()?;
    let (_release, released) = watch::channel(false);
    let ingested = ingest(&runtime, workers, keys, dir, Some(released), FirstSink::default())?;
    let c = checkpoint(&ingested, dir)?;
    report(
        "checkpointed",
        &[
            ("id", c.id.to_string()),
            ("bytes", c.bytes.to_string()),
            ("duration_ns", c.duration.as_nanos().to_string()),
        ],
    )?;
    // The job runs on (its source waits) until the parent kills this process.
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// When the runtime logged `restoring checkpoint` and `pipeline started`.
#[derive(Default)]
struct Marks {
    restoring: OnceLock<SystemTime>,
    started: OnceLock<SystemTime>,
}

struct MarkLayer(Arc<Marks>);

struct Message(String);

impl tracing::field::Visit for Message {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.0 = format!("{value:?}");
        }
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for MarkLayer {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: tracing_subscriber::layer::Context<'_, S>) {
        let mut message = Message(String::new());
        event.record(&mut message);
        match message.0.as_str() {
            "restoring checkpoint" => {
                self.0.restoring.get_or_init(SystemTime::now);
            }
            "pipeline started" => {
                self.0.started.get_or_init(SystemTime::now);
            }
            _ => {}
        }
    }
}

/// Warnings and errors to stderr; `marks` notes the runtime's start-up logs.
fn init_tracing(marks: Option<Arc<Marks>>) {
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::filter::LevelFilter;
    use tracing_subscriber::layer::SubscriberExt as _;
    let stderr = tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_filter(LevelFilter::WARN);
    let marks = marks.map(|m| MarkLayer(m).with_filter(LevelFilter::INFO));
    let subscriber = tracing_subscriber::registry().with(stderr).with(marks);
    let _ = tracing::subscriber::set_global_default(subscriber);
}

/// Child 2: restores the checkpoint in `dir`, runs the job to its end and reports when things
/// happened.
fn child_recover(keys: u64, dir: &Path) -> Result<()> {
    let main = SystemTime::now();
    let marks = Arc::new(Marks::default());
    init_tracing(Some(marks.clone()));
    let (runtime, workers) = child_runtime()?;
    let sink = FirstSink::default();
    let (p, _) = build(keys, workers, dir, None, sink.clone(), None)?;
    let run = SystemTime::now();
    let job = runtime.block_on(p.run())?;
    let end = SystemTime::now();
    weir_benches::check_report(&job)?;
    sink.check(keys).context("the restored job's results")?;
    let at = |t: Option<&SystemTime>| t.map_or("none".to_owned(), |t| epoch_ns(*t).to_string());
    report(
        "recovered",
        &[
            ("main", epoch_ns(main).to_string()),
            ("run", epoch_ns(run).to_string()),
            ("read", at(marks.restoring.get())),
            ("started", at(marks.started.get())),
            ("first", at(sink.inner.first.get().map(|f| &f.1))),
            ("end", epoch_ns(end).to_string()),
        ],
    )
}

/// A child process, killed (if still running) when dropped.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts this benchmark as child `role` on `dir`, its stdout piped.
fn spawn_child(role: &str, keys: u64, dir: &Path) -> Result<ChildGuard> {
    let exe = std::env::current_exe().context("the bench's own executable")?;
    let child = Command::new(exe)
        .args(["--child", role, "--keys", &keys.to_string(), "--dir"])
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("start child {role}"))?;
    Ok(ChildGuard(child))
}

/// Reads the child's stdout until its `@<tag>` line; its fields.
fn read_report(child: &mut ChildGuard, tag: &str) -> Result<HashMap<String, String>> {
    let stdout = child.0.stdout.as_mut().context("the child's stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let prefix = format!("@{tag}");
    for line in lines.by_ref() {
        let line = line?;
        if let Some(rest) = line.strip_prefix(&prefix) {
            return Ok(rest
                .split_whitespace()
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect());
        }
        println!("  child: {line}");
    }
    let status = child.0.wait()?;
    bail!("the child ended ({status}) without reporting {prefix}")
}

fn field<T: std::str::FromStr>(fields: &HashMap<String, String>, name: &str) -> Result<T> {
    let v = fields.get(name).with_context(|| format!("the child did not report {name}"))?;
    v.parse().map_err(|_| anyhow::anyhow!("the child reported {name}={v}"))
}

/// One kill-and-recover trial; times from the second child's spawn.
struct RecoverySample {
    checkpoint_id: u64,
    bytes: u64,
    checkpoint_duration: Duration,
    main: Duration,
    run: Duration,
    read: Duration,
    started: Duration,
    first: Duration,
    end: Duration,
}

fn recovery_trial(keys: u64, root: &Path) -> Result<RecoverySample> {
    let dir = tempfile::Builder::new().prefix("checkpoints-").tempdir_in(root)?;
    let mut first = spawn_child("ingest", keys, dir.path())?;
    let checkpointed = read_report(&mut first, "checkpointed")?;
    first.0.kill()?;
    let status = first.0.wait()?;
    {
        use std::os::unix::process::ExitStatusExt as _;
        ensure!(status.signal() == Some(9), "the first child was not killed by SIGKILL: {status}");
    }
    let checkpoint_id: u64 = field(&checkpointed, "id")?;
    let manifest = checkpoints::latest(dir.path())?.context("the killed child left no checkpoint")?;
    ensure!(
        manifest.id == checkpoint_id && !manifest.finished,
        "the directory's latest checkpoint is {} (finished: {}), the child reported {checkpoint_id}",
        manifest.id,
        manifest.finished
    );

    let spawned = epoch_ns(SystemTime::now());
    let mut second = spawn_child("recover", keys, dir.path())?;
    let recovered = read_report(&mut second, "recovered")?;
    let status = second.0.wait()?;
    ensure!(status.success(), "the recovering child failed: {status}");
    let since = |name: &str| -> Result<Duration> {
        let at: u128 = field(&recovered, name)?;
        let ns = at.checked_sub(spawned).with_context(|| format!("{name} before the spawn"))?;
        Ok(Duration::from_nanos(u64::try_from(ns)?))
    };
    Ok(RecoverySample {
        checkpoint_id,
        bytes: manifest.bytes(),
        checkpoint_duration: Duration::from_nanos(field(&checkpointed, "duration_ns")?),
        main: since("main")?,
        run: since("run")?,
        read: since("read")?,
        started: since("started")?,
        first: since("first")?,
        end: since("end")?,
    })
}

// ---------------------------------------------------------------------------------------------
// The summary table.

#[derive(Default)]
struct Table {
    rows: Vec<[String; 4]>,
}

impl Table {
    fn row(&mut self, what: &str, value: String, range: String, target: String) {
        self.rows.push([what.to_owned(), value, range, target]);
    }

    fn durations(&mut self, what: &str, d: impl Iterator<Item = Duration>) {
        self.durations_with(what, d, String::new());
    }

    fn durations_with(&mut self, what: &str, d: impl Iterator<Item = Duration>, target: String) {
        let d: Vec<Duration> = d.collect();
        let (Some(low), Some(high)) = (d.iter().min().copied(), d.iter().max().copied()) else { return };
        let n = d.len();
        let value = median(d).map_or_else(String::new, secs);
        self.row(what, value, format!("{}–{} ({n})", secs(low), secs(high)), target);
    }

    fn print(&self) {
        println!();
        println!("{:<46} {:>12} {:>22}  target", "figure", "median", "range (samples)");
        for [what, value, range, target] in &self.rows {
            println!("{what:<46} {value:>12} {range:>22}  {target}");
        }
    }
}
