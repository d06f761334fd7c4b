//! Log analytics on the embedded log: web access logs in, per-window statistics out.
//!
//! ```text
//! cargo run --release --example log_analytics                        # a synthetic log, no input needed
//! cargo run --release --example log_analytics -- --input access.log  # combined/common format or nginx JSON lines
//! cargo run --release --example log_analytics -- --input '/var/log/nginx/access.log*' --follow
//! ```
//!
//! # Flow
//!
//! Lines are appended to the log topic `access` (keyed by client); the analytics pipeline reads
//! that topic in the consumer group `access_stats`: the queue sits in the middle, as it would
//! with Kafka. A bounded input is appended first and then analysed to its end; with `--follow`
//! both run together until Ctrl-C. Each run starts the example's topics afresh.
//!
//! # On Apache Kafka (`--features kafka`)
//!
//! `--kafka-bootstrap HOST:PORT` puts the access lines in a Kafka topic instead (`--kafka-topic`,
//! 6 partitions, keyed by client) and analyses them from there; `--kafka-ingest-only` only
//! appends them, `--kafka-read-only` only analyses. `--scale-out` analyses the topic as one of
//! any number of processes started alike, through three Kafka task groups, and writes the rows
//! exactly once to the topic `access_stats.results`, keyed by kind: see `scale_out.rs`.
//!
//! # Checkpoints
//!
//! With `--checkpoint-interval 10s` both pipelines checkpoint under `DIR/checkpoints`: the
//! result files and topics receive every record exactly once (they grow at each checkpoint), and
//! a run that was killed, or stopped with Ctrl-C (a savepoint), resumes where it left off when
//! started again with the same arguments; `--from-scratch` starts over. A run whose checkpoints
//! are gone or all damaged, while its files, topics or consumer groups show committed progress,
//! refuses to start rather than produce that output again. The stdout tables and the
//! alerts on stderr are at least once: after a restore they may repeat what followed the
//! checkpoint.
//!
//! # Results (event time; epoch-aligned, half-open `[start, end)` windows)
//!
//! | kind | window | key | fields |
//! |---|---|---|---|
//! | `status` | 1 min tumbling | status class | `status_class`, `requests`, `bytes` |
//! | `paths` | 1 min tumbling | path (top 10 by requests, ties by path) | `path`, `requests`, `rank`, `p50_ms`, `p95_ms`, `p99_ms` (or `p50_bytes`, … when the log has no request time) |
//! | `clients` | 5 min sliding by 1 min | client (top 10 by requests, ties by client) | `client`, `requests`, `rank` |
//! | `alerts` | 1 min tumbling | — (when 5xx / requests > `--error-threshold`) | `requests`, `errors`, `error_ratio`, `threshold` |
//! | `sessions` | session, 30 min gap | client | `client`, `pages`, `duration_s` |
//!
//! Every record starts with `window_start` and `window_end` (RFC 3339, UTC, milliseconds); a
//! session's window is `[first request, last request + 30 min)` and `duration_s` the time from
//! its first to its last request. Percentiles come from a DDSketch (1 % relative error). Records
//! go to `--out DIR/<kind>.jsonl` and to the log topics `access_stats.<kind>`; the alerts go to
//! stderr too. Lines that do not parse go to the topic `access_stats.dlq`, as they are (the
//! error and origin in each record's headers); the summary at the end prints the command that
//! shows them.
//!
//! Unless `--quiet`, stdout gets one table per minute, in window order, once the minute is
//! complete (all at the end of a bounded run): requests, bytes and share by status class, the
//! top 5 paths with their percentiles and the top 5 clients of the five minutes that end with
//! it (the files hold the top 10), and `ALERT` when its 5xx share is over the threshold. The
//! metrics URL is printed on stderr at the start.
//!
//! # Input
//!
//! `access_log.rs` says which lines parse and how (Apache/nginx common and combined, with any
//! fields after them, and nginx JSON lines); `corpus/access_logs.txt` holds real-world variants
//! with their expected parse.
//!
//! # The synthetic log
//!
//! Without `--input`, `--events` lines (default 1 000 000) of the combined format with a request
//! time (`... "user agent" 0.123`), 100 per second of event time from 2026-11-24T00:00:00Z:
//! 2 000 clients and 400 paths with long tails (who is busiest changes every 45 minutes, so
//! clients have several sessions), a status mix with a burst of 5xx every 17th
//! minute, log-normal-ish latencies, and disorder of up to 3 s (below the 5 s watermark bound,
//! so nothing is late). `--generate FILE` writes it to a file and exits; the same `--events`
//! give the same lines.

mod access_log;
mod report;
#[cfg(feature = "kafka")]
mod scale_out;
mod stats;
mod synthetic;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use access_log::parse_access_log;
use clap::Parser;
use report::Report;
use serde::Serialize;
use weir::connectors::{FileSink, FileSource, GeneratorSource, LogRecord, LogSink, LogSource};
use weir::log::{Log, LogOptions, TopicConfig};
use weir::metrics::ServerConfig;
use weir::runtime::{Batch, Checkpointing, Collector, Metrics, Operator, Pipeline, Stream, Watermarks};

const PIPELINE: &str = "access_stats";
const INGEST: &str = "access_ingest";
const KINDS: [&str; 5] = ["status", "paths", "clients", "alerts", "sessions"];
const MINUTE: Duration = Duration::from_secs(60);

#[derive(Debug, Parser)]
#[command(about = "Per-window statistics of web access logs, on Weir's embedded log")]
struct Args {
    /// An access log (combined, common or nginx JSON lines), or a glob. Default: a synthetic log.
    #[arg(long)]
    input: Option<String>,
    /// Keep reading the input as it grows (across rotation), until Ctrl-C.
    #[arg(long, requires = "input")]
    follow: bool,
    /// Lines of the synthetic log.
    #[arg(long, default_value_t = 1_000_000)]
    events: u64,
    /// Write the synthetic log to this file and exit.
    #[arg(long, value_name = "FILE")]
    generate: Option<PathBuf>,
    /// The log directory.
    #[arg(long, default_value = "weir-data", env = "WEIR_DIR")]
    dir: PathBuf,
    /// Where the JSON lines results go (one file per kind).
    #[arg(long, default_value = "access-stats")]
    out: PathBuf,
    /// Alert when a minute's share of 5xx responses exceeds this.
    #[arg(long, default_value_t = 0.05)]
    error_threshold: f64,
    /// How late (seconds) a line may arrive behind the newest one before it counts as late.
    #[arg(long, default_value_t = 5)]
    max_disorder_secs: u64,
    /// Subtasks per operator.
    #[arg(long, default_value_t = 2)]
    parallelism: usize,
    /// Where the Prometheus metrics are served.
    #[arg(long, default_value = "127.0.0.1:9898")]
    metrics_addr: SocketAddr,
    /// No tables on stdout (the files and topics are still written).
    #[arg(long)]
    quiet: bool,
    /// Checkpoint both pipelines this often (e.g. `10s`, `500ms`), under `<dir>/checkpoints`:
    /// the files and topics get every result exactly once, and a run that was killed or stopped
    /// resumes where its last checkpoint left off. Default: no checkpoints (every run starts
    /// over).
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    checkpoint_interval: Option<Duration>,
    /// With `--checkpoint-interval`: start over, ignoring (and deleting) earlier checkpoints.
    #[arg(long, requires = "checkpoint_interval")]
    from_scratch: bool,
    /// Read (and write) the access lines through Apache Kafka at these bootstrap servers
    /// instead of the embedded log (built with `--features kafka`).
    #[arg(long, value_name = "HOST:PORT")]
    kafka_bootstrap: Option<String>,
    /// With `--kafka-bootstrap`: the topic of the access lines (created with 6 partitions if
    /// missing).
    #[arg(long, default_value = "access", requires = "kafka_bootstrap")]
    kafka_topic: String,
    /// With `--kafka-bootstrap`: only analyse what the topic holds (another process fills it);
    /// without it, the input is appended to the topic first.
    #[arg(long, requires = "kafka_bootstrap")]
    kafka_read_only: bool,
    /// With `--kafka-bootstrap`: append the input to the topic and exit, without analysing it.
    #[arg(long, requires = "kafka_bootstrap", conflicts_with_all = ["kafka_read_only", "follow"])]
    kafka_ingest_only: bool,
    /// With `--kafka-bootstrap`: analyse the topic as one of any number of processes started
    /// alike (three Kafka task groups; see `scale_out.rs`), until Ctrl-C. The rows go, exactly
    /// once, to the topic `access_stats.results`, keyed by kind; each task checkpoints under
    /// `<dir>/tasks`, which every process must reach. Another process fills the topic.
    #[arg(long, requires = "kafka_bootstrap", conflicts_with_all = ["kafka_ingest_only", "follow", "from_scratch"])]
    scale_out: bool,
}

/// Counts the records that pass, per batch.
#[derive(Clone)]
struct Progress(Arc<AtomicU64>);

impl<T: Send + 'static> Operator<T, T> for Progress {
    fn process_batch(&mut self, batch: Batch<T>, out: &mut Collector<T>) {
        self.0.fetch_add(batch.len() as u64, Ordering::Relaxed);
        out.batch(batch);
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(path) = &args.generate {
        synthetic::write(path, args.events)?;
        eprintln!("wrote {} lines to {}", args.events, path.display());
        return Ok(());
    }
    weir_examples::init_tracing("warn");
    if args.scale_out {
        return kafka::scale_out(&args, has_request_time(&args)?).await;
    }
    let started = Instant::now();
    let log = Log::open(&args.dir, LogOptions::default())?;
    let resume = resumes(&args)?;
    if resume {
        eprintln!("resuming from the checkpoints in {}", args.dir.join("checkpoints").display());
    }
    reset_topics(&log, resume || (args.input.is_some() && args.follow))?;
    let metrics = Metrics::new();
    log.register_metrics(&metrics);
    let server =
        match weir::metrics::serve(metrics.clone(), &ServerConfig::default().addr(args.metrics_addr)).await {
            Ok(s) => {
                eprintln!("metrics        http://{}/metrics", s.addr());
                Some(s)
            }
            Err(e) => {
                eprintln!("note: no metrics endpoint: {e}");
                None
            }
        };
    std::fs::create_dir_all(&args.out)?;

    let ingested = Arc::new(Ingested::default());
    if let (Some(bootstrap), false) = (&args.kafka_bootstrap, args.kafka_read_only) {
        kafka::create_topic(bootstrap, &args.kafka_topic).await?;
    }
    // `--kafka-read-only`: another process fills the topic.
    let ingest =
        (!args.kafka_read_only).then(|| ingest_pipeline(&args, &log, &metrics, &ingested)).transpose()?;
    let analysed = Arc::new(AtomicU64::new(0));
    let results: Arc<[AtomicU64; 5]> = Arc::default();
    let time_mode = has_request_time(&args)?;
    let tables =
        (!args.quiet).then(|| Report::new(if time_mode { "ms" } else { "bytes" }, args.error_threshold));
    let stages =
        Stages { bounded: !args.follow, time_mode, count: analysed.clone(), results, tables: tables.clone() };

    let (ingest_report, report) = if args.follow {
        let analytics = analytics_pipeline(&args, &log, &metrics, &stages)?;
        // Each minute's table once it is complete.
        let printer = tables.clone().map(|tables| {
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    print!("{}", tables.take_ready(false));
                }
            })
        });
        let ingesting = async {
            match ingest {
                Some(ingest) => ingest.run().await.map(Some),
                None => Ok(None),
            }
        };
        let (a, b) = tokio::join!(ingesting, analytics.run());
        printer.inspect(tokio::task::JoinHandle::abort);
        (a?, b?)
    } else {
        let bar = progress_bar("appending to topic `access`", ingest_total(&args)?);
        let progress = if args.input.is_some() { &ingested.bytes } else { &ingested.lines };
        let ticker = tick(bar.clone(), progress.clone());
        let ingest_report = match ingest {
            Some(ingest) => Some(ingest.run().await?),
            None => None,
        };
        ticker.abort();
        bar.finish_and_clear();
        if args.kafka_ingest_only {
            let lines = ingested.lines.load(Ordering::Relaxed);
            eprintln!("appended       {lines} lines to the Kafka topic {}", args.kafka_topic);
            if let Some(r) = ingest_report.filter(|r| r.dead_letters > 0) {
                eprintln!("not appended   {}", r.dead_letters);
            }
            return Ok(());
        }
        let analytics = analytics_pipeline(&args, &log, &metrics, &stages)?;
        let bar = progress_bar("analysing", ingested.lines.load(Ordering::Relaxed));
        let ticker = tick(bar.clone(), analysed.clone());
        let report = analytics.run().await;
        ticker.abort();
        bar.finish_and_clear();
        (ingest_report, report?)
    };
    if let Some(server) = server {
        server.shutdown().await;
    }
    if let Some(tables) = &tables {
        print!("{}", tables.take_ready(true));
    }

    let wall = started.elapsed();
    let lines = ingested.lines.load(Ordering::Relaxed);
    eprintln!();
    eprintln!(
        "lines          {lines} ({:.0} lines/s over {:.2} s)",
        lines as f64 / wall.as_secs_f64(),
        wall.as_secs_f64()
    );
    eprintln!("parsed         {}", analysed.load(Ordering::Relaxed));
    eprintln!("malformed      {}", report.dead_letters);
    if report.dead_letters > 0 {
        // The lines themselves; `--json` adds each one's error and origin (headers).
        eprintln!(
            "               {} --dir {} consume {PIPELINE}.dlq --json",
            weir_command(),
            args.dir.display()
        );
    }
    eprintln!("late           {}", report.late_records);
    for (kind, n) in KINDS.iter().zip(stages.results.iter()) {
        eprintln!(
            "{kind:<14} {} records -> {}",
            n.load(Ordering::Relaxed),
            args.out.join(format!("{kind}.jsonl")).display()
        );
    }
    if let Some(r) = ingest_report.filter(|r| r.dead_letters > 0) {
        eprintln!("not appended   {}", r.dead_letters);
    }
    Ok(())
}

/// How to run the `weir` CLI from here: the binary built beside this example (`cargo build
/// -p weir-cli`), else through cargo.
fn weir_command() -> String {
    let exe = std::env::current_exe().ok();
    let built = exe
        .as_deref()
        .and_then(|e| Some(e.parent()?.parent()?.join(format!("weir{}", std::env::consts::EXE_SUFFIX))));
    match built.filter(|w| w.is_file()) {
        Some(weir) => weir.display().to_string(),
        None => "cargo run --release -p weir-cli --".to_owned(),
    }
}

/// Whether this run resumes from checkpoints: checkpointing is on and not from scratch (the
/// pipelines restore their checkpoints, start fresh if there are none and nothing shows
/// progress, or refuse if their output or consumer groups show progress but no checkpoint is
/// left). Otherwise earlier checkpoints (of topics about to be recreated) go.
fn resumes(args: &Args) -> anyhow::Result<bool> {
    if args.checkpoint_interval.is_some() && !args.from_scratch {
        return Ok(true);
    }
    let dir = args.dir.join("checkpoints");
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    Ok(false)
}

/// The builder of pipeline `name`, checkpointed if `--checkpoint-interval` says so.
fn builder(args: &Args, name: &str) -> weir::runtime::PipelineBuilder {
    let b = Pipeline::builder(name).handle_signals(true);
    match args.checkpoint_interval {
        Some(interval) => {
            let dir = args.dir.join("checkpoints").join(name);
            b.checkpointing(Checkpointing::to_dir(dir).interval(interval).from_scratch(args.from_scratch))
        }
        None => b,
    }
}

/// Deletes and recreates the example's topics (their committed group offsets go with them),
/// unless following a live log, which resumes.
fn reset_topics(log: &Log, resume: bool) -> anyhow::Result<()> {
    let mut topics = vec!["access".to_owned(), format!("{PIPELINE}.dlq")];
    topics.extend(KINDS.iter().map(|k| format!("{PIPELINE}.{k}")));
    for t in &topics {
        if !resume && log.topics().contains(t) {
            log.delete_topic(t)?;
        }
        let partitions = if t == "access" { 4 } else { 1 };
        log.topic_or_create(t, TopicConfig::with_partitions(partitions))?;
    }
    Ok(())
}

/// Whether percentiles are of request times (the synthetic log, or an input whose first
/// parseable line has one) or of response sizes.
fn has_request_time(args: &Args) -> anyhow::Result<bool> {
    let Some(input) = &args.input else { return Ok(true) };
    let first = glob::glob(input)
        .ok()
        .and_then(|mut g| g.next())
        .and_then(Result::ok)
        .unwrap_or_else(|| input.into());
    let text = std::fs::read(&first).unwrap_or_default();
    Ok(String::from_utf8_lossy(&text)
        .lines()
        .take(1_000)
        .find_map(|l| parse_access_log(l).ok())
        .is_none_or(|e| e.request_time_ms.is_some()))
}

/// Lines (synthetic) or bytes (files) the ingest pipeline will read.
fn ingest_total(args: &Args) -> anyhow::Result<u64> {
    Ok(match &args.input {
        None => args.events,
        Some(input) => {
            glob::glob(input)?.filter_map(Result::ok).filter_map(|p| p.metadata().ok()).map(|m| m.len()).sum()
        }
    })
}

fn progress_bar(what: &str, total: u64) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{msg:<28} [{bar:30}] {percent:>3}% {per_sec} eta {eta}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_message(what.to_owned());
    bar
}

/// Moves `bar` to `count` ten times a second.
fn tick(bar: indicatif::ProgressBar, count: Arc<AtomicU64>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            bar.set_position(count.load(Ordering::Relaxed));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
}

/// Input lines → topic `access`, keyed by client.
fn ingest_pipeline(
    args: &Args,
    log: &Log,
    metrics: &Metrics,
    ingested: &Arc<Ingested>,
) -> anyhow::Result<Pipeline> {
    // One task appends, so the topic's partitions keep the order of the input lines (the
    // disorder the watermark allows for is the input's own, not the ingest's).
    let p = builder(args, INGEST).parallelism(1).metrics(metrics.clone()).build()?;
    let lines: Stream<String> = match &args.input {
        None => p.source(GeneratorSource::new(args.events, synthetic::line).batch_size(1024)),
        Some(input) => {
            let mut source = FileSource::lines(input.as_str());
            if args.follow {
                source = source.follow();
            }
            p.source(source).map(|l| l.text)
        }
    };
    let ingested = ingested.clone();
    let lines = lines.operator("progress", IngestProgress(ingested.clone()));
    // The lines as they are (a dead letter then holds the line itself), keyed by client: the
    // line's first word (of a JSON line, `{"...`: one key for all).
    let client = |l: &String| l.split(' ').next().unwrap_or_default().to_owned();
    match &args.kafka_bootstrap {
        None => lines.sink(LogSink::raw(log, "access").key_by(client)),
        Some(bootstrap) => kafka::sink(bootstrap, &args.kafka_topic, lines, client)?,
    }
    Ok(p)
}

/// Lines appended to the topic, and their bytes (line ends included).
#[derive(Debug, Default)]
struct Ingested {
    lines: Arc<AtomicU64>,
    bytes: Arc<AtomicU64>,
}

/// Counts the lines that pass and their bytes, per batch.
#[derive(Clone)]
struct IngestProgress(Arc<Ingested>);

impl Operator<String, String> for IngestProgress {
    fn process_batch(&mut self, batch: Batch<String>, out: &mut Collector<String>) {
        let bytes: usize = batch.records.iter().map(|l| l.len() + 1).sum();
        self.0.lines.fetch_add(batch.len() as u64, Ordering::Relaxed);
        self.0.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
        out.batch(batch);
    }
}

fn parse(r: &LogRecord) -> Result<stats::Access, String> {
    let line = std::str::from_utf8(&r.value).map_err(|e| format!("not UTF-8: {e}"))?;
    parse_access_log(line).map(stats::Access::from).map_err(|e| e.to_string())
}

/// What the analytics pipeline needs beside the arguments.
struct Stages {
    /// Read the topic to its end (else follow it).
    bounded: bool,
    /// Percentiles of request times (else of response bytes).
    time_mode: bool,
    /// Records parsed.
    count: Arc<AtomicU64>,
    /// Result records per kind.
    results: Arc<[AtomicU64; 5]>,
    /// Where the stdout tables are gathered (none with `--quiet`).
    tables: Option<Report>,
}

/// Topic `access` → the five result kinds.
fn analytics_pipeline(
    args: &Args,
    log: &Log,
    metrics: &Metrics,
    stages: &Stages,
) -> anyhow::Result<Pipeline> {
    let Stages { bounded, time_mode, ref count, ref results, ref tables } = *stages;
    let p = builder(args, PIPELINE).parallelism(args.parallelism).metrics(metrics.clone()).build()?;
    p.dead_letters(LogSink::dead_letters(log, PIPELINE));
    let mut source = LogSource::topic(log, "access", PIPELINE);
    if bounded {
        source = source.bounded();
    }
    let mut watermarks = Watermarks::bounded_out_of_orderness(Duration::from_secs(args.max_disorder_secs));
    if !bounded {
        // A live log may leave a partition without new lines for a while: it must not keep
        // every window from closing.
        watermarks = watermarks.with_idle_timeout(Duration::from_secs(10));
    }
    let records: Stream<LogRecord> = match &args.kafka_bootstrap {
        None => p.source(source),
        Some(bootstrap) => kafka::source(&p, bootstrap, &args.kafka_topic, bounded)?,
    };
    let events = records
        .try_map(parse)
        .operator("progress", Progress(count.clone()))
        .assign_timestamps(|a| a.ts, watermarks);
    let [events, rest, more, last, sessions] = events.split();

    let sink = Sinks { log: log.clone(), out: args.out.clone(), results: results.clone() };

    // Requests and bytes per minute by status class.
    let table = tables.clone();
    let status = stats::status_counts(events)
        .inspect(move |r| {
            if let Some(t) = &table {
                t.status(r.window_start, r.key, r.value.0, r.value.1);
            }
        })
        .map(stats::status_row);
    sink.write(0, status);

    // Top 10 paths per minute with percentiles.
    let table = tables.clone();
    let top_paths = stats::top_paths(rest, time_mode)
        .inspect(move |top| {
            if let Some(t) = &table {
                t.paths(
                    top.key,
                    top.value
                        .iter()
                        .map(|r| (r.key.clone(), r.value.0, [r.value.1, r.value.2, r.value.3]))
                        .collect(),
                );
            }
        })
        .flat_map(move |top| stats::path_rows(top.value, time_mode));
    sink.write(1, top_paths);

    // Top 10 clients over 5 minutes, sliding by 1.
    let table = tables.clone();
    let top_clients = stats::top_clients(more)
        .inspect(move |top| {
            if let Some(t) = &table {
                t.clients(
                    top.key + (5 * MINUTE).as_millis() as i64,
                    top.value.iter().map(|r| (r.key.clone(), r.value)).collect(),
                );
            }
        })
        .flat_map(|top| stats::client_rows(top.value));
    sink.write(2, top_clients);

    // An alert for every minute whose 5xx share exceeds the threshold.
    let threshold = args.error_threshold;
    let alerts = stats::error_counts(last).flat_map(move |r| stats::alert_row(r, threshold)).inspect(|a| {
        eprintln!(
            "ALERT {} – {}: {:.1} % of {} requests were 5xx (threshold {:.1} %)",
            a.window_start,
            a.window_end,
            100.0 * a.error_ratio,
            a.requests,
            100.0 * a.threshold
        );
    });
    sink.write(3, alerts);

    // Sessions per client: 30 minutes of inactivity end one.
    sink.write(4, stats::sessions(sessions).map(stats::session_row));
    Ok(p)
}

/// Where every result kind goes.
struct Sinks {
    log: Log,
    out: PathBuf,
    results: Arc<[AtomicU64; 5]>,
}

impl Sinks {
    /// Writes result kind `i` to `--out/<kind>.jsonl` and the topic `access_stats.<kind>`.
    fn write<T: Serialize + Clone + Send + 'static>(&self, i: usize, stream: Stream<T>) {
        let kind = KINDS[i];
        let results = self.results.clone();
        let (to_file, to_topic) = stream.operator("count", Counted(results, i)).fork();
        to_file.sink(FileSink::json_lines(self.out.join(format!("{kind}.jsonl"))).single_file());
        to_topic.sink(LogSink::topic(&self.log, format!("{PIPELINE}.{kind}")));
    }
}

/// Counts result records of kind `.1`.
#[derive(Clone)]
struct Counted(Arc<[AtomicU64; 5]>, usize);

impl<T: Send + 'static> Operator<T, T> for Counted {
    fn process_batch(&mut self, batch: Batch<T>, out: &mut Collector<T>) {
        self.0[self.1].fetch_add(batch.len() as u64, Ordering::Relaxed);
        out.batch(batch);
    }
}

/// The access topic on Apache Kafka (`--kafka-bootstrap`).
#[cfg(feature = "kafka")]
mod kafka {
    use weir::connectors::LogRecord;
    use weir::runtime::{Pipeline, Stream};
    use weir_kafka::{KafkaConfig, KafkaRecord, KafkaSink, KafkaSource, StartOffset};

    /// Appends the lines to `topic`, keyed by `key`.
    pub(crate) fn sink(
        bootstrap: &str,
        topic: &str,
        lines: Stream<String>,
        key: impl Fn(&String) -> String + Send + Sync + 'static,
    ) -> anyhow::Result<()> {
        lines.sink(KafkaSink::bytes(KafkaConfig::new(bootstrap), topic).key_by(key));
        Ok(())
    }

    /// Reads `topic` (up to its end offsets at start if `bounded`) as the embedded log's
    /// records, for the same parser and dead letters.
    pub(crate) fn source(
        p: &Pipeline,
        bootstrap: &str,
        topic: &str,
        bounded: bool,
    ) -> anyhow::Result<Stream<LogRecord>> {
        let mut source = KafkaSource::new(KafkaConfig::new(bootstrap), [topic], super::PIPELINE)
            .start_offset(StartOffset::Earliest);
        if bounded {
            source = source.bounded();
        }
        Ok(p.source(source).map(|r: KafkaRecord| LogRecord {
            topic: r.topic,
            partition: r.partition as u32,
            offset: r.offset as u64,
            timestamp: r.timestamp.unwrap_or_default(),
            key: r.key.map(Into::into),
            value: r.value.into(),
            headers: Vec::new(),
        }))
    }

    /// Creates `topic` with 6 partitions if it is missing.
    pub(crate) async fn create_topic(bootstrap: &str, topic: &str) -> anyhow::Result<()> {
        let new = weir_examples::NewTopic { name: topic, partitions: 6, keep: false };
        weir_examples::create_topics(bootstrap, &[new]).await
    }

    /// `--scale-out`: this process's share of the analysis, until Ctrl-C.
    pub(crate) async fn scale_out(args: &super::Args, time_mode: bool) -> anyhow::Result<()> {
        let bootstrap = args.kafka_bootstrap.as_deref().unwrap_or_default();
        super::scale_out::run(args, bootstrap, time_mode).await
    }
}

/// Without the `kafka` feature, `--kafka-bootstrap` says how to get it.
#[cfg(not(feature = "kafka"))]
mod kafka {
    use weir::connectors::LogRecord;
    use weir::runtime::{Pipeline, Stream};

    const MISSING: &str = "--kafka-bootstrap needs Kafka support: build with `--features kafka` \
        (cargo run --release --features kafka --example log_analytics -- ...)";

    pub(crate) fn sink(
        _: &str,
        _: &str,
        _: Stream<String>,
        _: impl Fn(&String) -> String + Send + Sync + 'static,
    ) -> anyhow::Result<()> {
        anyhow::bail!(MISSING)
    }

    pub(crate) fn source(_: &Pipeline, _: &str, _: &str, _: bool) -> anyhow::Result<Stream<LogRecord>> {
        anyhow::bail!(MISSING)
    }

    pub(crate) async fn create_topic(_: &str, _: &str) -> anyhow::Result<()> {
        anyhow::bail!(MISSING)
    }

    pub(crate) async fn scale_out(_: &super::Args, _: bool) -> anyhow::Result<()> {
        anyhow::bail!(MISSING)
    }
}
