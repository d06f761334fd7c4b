//! The second main job: ML features over card transactions — per-user features computed by a
//! streaming pipeline and served online, and a point-in-time-correct training set computed
//! from the same definition by replaying the same log.
//!
//! ```text
//! cargo run --release --example ml_features
//! ```
//!
//! ```text
//!  lines ─► topic `txns` ─► parse ─► key_by(user) ─► FeatureOperator (view `user_txn`) ─► lookups
//!  (file or   (append time     │ malformed:                 │ late: topic            in process and
//!  synthetic)  per record)     ▼ ml_features.dlq            ▼ ml_features.late      GET /features/user_txn/<user>
//!                                                                                    
//!  topic `txns` + labels (user, t) ─► replay through the view's state ─► training set (Parquet or CSV)
//! ```
//!
//! - **Input**: `--input FILE`, JSON lines `{"user", "merchant", "amount_cents", "ts"}` (`ts` as
//!   epoch ms or RFC 3339 `...Z`); without it, synthetic transactions (hot users, users idle for
//!   more than a day, duplicate timestamps, late events within and beyond the allowed lateness
//!   of one hour, malformed lines).
//! - **Append time.** Lines are appended to the topic `txns` in their order. Each record's
//!   timestamp is its arrival time: the largest event time of the valid lines up to it (the
//!   file is a recording of arrivals, each appended when the stream's time reached it).
//! - **Online**: the pipeline's watermark is the largest event time seen, as of the batch
//!   before ([`BATCH`] records); an event at or behind it minus one hour is late: dropped (to
//!   `ml_features.late`, counted), never applied.
//!   Lookups are served over HTTP while the job runs (`--serve`, default `127.0.0.1:9899`).
//! - **Offline**: `--labels FILE` (CSV `user,ts`; else synthetic labels) and
//!   `--training-set OUT` (`.csv`, else Parquet): one row per label, the features *as happened*
//!   (every event with event time `<= t`) or, with `--as-served`, as the online lookup served
//!   them at `t` (events appended by `t`, late ones dropped). See `weir::features::Replay`.
//! - **Exactly once**: with `--data-dir DIR` the log and the pipeline's checkpoints live in DIR;
//!   a run killed at any moment and started again with the same arguments appends no line
//!   twice, restores the online state from its last checkpoint, and writes the same training
//!   set (written atomically).
//! - The last line of stdout is `summary {json}`.

mod output;
mod synthetic;
mod txn;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use weir::connectors::{LogRecord, LogSink, LogSource};
use weir::features::http::{ServerConfig, Views};
use weir::features::{FeatureLookup, FeatureRow, Label, Replay, Status};
use weir::log::{Log, LogOptions, Record, Topic, TopicConfig};
use weir::metrics::Metrics;
use weir::runtime::{Checkpointing, Pipeline, Watermarks};

use crate::txn::{Txn, VIEW};

/// The pipeline's name: its consumer group, checkpoints and dead-letter topic.
const PIPELINE: &str = "ml_features";
const TOPIC: &str = "txns";

/// Records per batch of the pipeline's source, and events per run of the *as served* replay.
/// The watermark advances once per batch, so an event is judged late against the newest event
/// time up to the batch before it: small batches keep that lag small (64 records), and the
/// replay takes the same steps. The first batch of a log has no watermark yet: nothing in it
/// is late.
const BATCH: usize = 64;

/// Per-user card-transaction features: computed by a pipeline, served over HTTP, and replayed
/// into a point-in-time-correct training set.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// JSON lines `{"user": "u17", "merchant": "m3", "amount_cents": 1250, "ts": ...}` (`ts` in
    /// epoch ms or RFC 3339). Default: synthetic transactions.
    #[arg(long)]
    input: Option<PathBuf>,
    /// Label rows: CSV with the header `user,ts` (`ts` in epoch ms). Default: synthetic labels.
    #[arg(long)]
    labels: Option<PathBuf>,
    /// Where the training set goes: CSV if the name ends in `.csv`, else Parquet.
    #[arg(long, default_value = "ml-features/training_set.parquet")]
    training_set: PathBuf,
    /// The training set as the online lookups served it (append time), not as it happened
    /// (event time).
    #[arg(long)]
    as_served: bool,
    /// Also take each label row's features online, from the running pipeline, at the moment the
    /// input's append clock reaches its `t` (the appends pause there until the operator has
    /// handled every event before), and write them here (`.csv`, else Parquet). They equal the
    /// `--as-served` training set. Needs a fresh topic (no `--data-dir` of an earlier run).
    #[arg(long, conflicts_with = "follow")]
    online_lookups: Option<PathBuf>,
    /// Serve `GET /features/user_txn/<user>[?at=<epoch ms>]` here while running (loopback).
    #[arg(long, default_value = "127.0.0.1:9899")]
    serve: SocketAddr,
    /// Keep reading the input as it grows, and serving, until Ctrl-C (needs `--input`).
    #[arg(long, requires = "input")]
    follow: bool,
    /// Keep the log and the checkpoints here: a second run resumes. Default: a temporary
    /// directory, removed at exit.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Prometheus metrics endpoint (`/metrics`).
    #[arg(long, default_value = "127.0.0.1:9898")]
    metrics_addr: SocketAddr,
    /// Checkpoint the pipeline this often (e.g. `1s`, `500ms`).
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    checkpoint_interval: Duration,
    /// Subtasks of the feature operator.
    #[arg(long, default_value_t = 2)]
    parallelism: usize,
    /// Synthetic transactions (without `--input`).
    #[arg(long, default_value_t = 1_000_000)]
    events: u64,
    /// Synthetic users.
    #[arg(long, default_value_t = 100_000)]
    users: u64,
    /// Synthetic label rows (without `--labels`).
    #[arg(long, default_value_t = 100_000)]
    label_rows: u64,
    /// Hours of event time the synthetic transactions span (ending now).
    #[arg(long, default_value_t = 48)]
    span_hours: u32,
    /// Seed of the synthetic data.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    weir_examples::init_tracing("warn");
    let started = Instant::now();
    let tmp;
    let dir = match &args.data_dir {
        Some(d) => d.clone(),
        None => {
            tmp = tempfile::tempdir()?;
            tmp.path().to_path_buf()
        }
    };
    std::fs::create_dir_all(&dir)?;
    let log = Log::open(dir.join("log"), LogOptions::default())?;
    let topic = log.topic_or_create(TOPIC, TopicConfig::with_partitions(1))?;
    log.topic_or_create(&format!("{PIPELINE}.late"), TopicConfig::with_partitions(1))?;
    let metrics = Metrics::new();
    log.register_metrics(&metrics);
    let metrics_server = match weir::metrics::serve(
        metrics.clone(),
        &weir::metrics::ServerConfig::default().addr(args.metrics_addr),
    )
    .await
    {
        Ok(s) => Some(s),
        Err(e) => {
            eprintln!("note: no metrics endpoint: {e}");
            None
        }
    };

    let spec = match &args.input {
        Some(_) => None,
        None => Some(synthetic_spec(&args, &dir)?),
    };
    let labels = match (&args.labels, &spec) {
        (Some(path), _) => output::read_labels(path)?,
        (None, Some(spec)) => {
            spec.labels(args.label_rows).into_iter().map(|(entity, at)| Label { entity, at }).collect()
        }
        (None, None) => Vec::new(),
    };
    if args.online_lookups.is_some() && topic.end_offset(0)? > 0 {
        anyhow::bail!(
            "--online-lookups takes its lookups as the input is appended: it needs an empty topic, not {}",
            dir.display()
        );
    }
    let view = txn::view()?;
    let pipeline = Pipeline::builder(PIPELINE)
        .handle_signals(true)
        .parallelism(args.parallelism)
        .metrics(metrics.clone())
        .checkpointing(Checkpointing::to_dir(dir.join("checkpoints")).interval(args.checkpoint_interval))
        .build()?;
    pipeline.dead_letters(LogSink::dead_letters(&log, PIPELINE));
    let mut source = LogSource::topic(&log, TOPIC, PIPELINE).batch_size(BATCH);
    let mut watermarks = Watermarks::bounded_out_of_orderness(Duration::ZERO);
    if args.follow {
        watermarks = watermarks.with_idle_timeout(Duration::from_secs(10));
    } else if args.online_lookups.is_none() {
        source = source.bounded();
    }
    let txns = pipeline
        .source(source)
        .try_map(|r: &LogRecord| txn::parse(&r.value))
        .assign_timestamps(|t| t.ts, watermarks);
    let (late, lookup) = view.attach(txns);
    late.sink(LogSink::topic(&log, format!("{PIPELINE}.late")));

    let server = weir::features::http::serve(
        Views::new().with(lookup.clone()),
        &ServerConfig::default().addr(args.serve),
    )
    .await
    .with_context(|| format!("serving lookups on {}", args.serve))?;
    eprintln!("lookups        http://{}/features/{VIEW}/<user>[?at=<epoch ms>]", server.addr());
    if let Some(s) = &metrics_server {
        eprintln!("metrics        http://{}/metrics", s.addr());
    }

    let ingest = Ingest::new(topic.clone());
    let report = if args.follow {
        let path = args.input.clone().context("--follow needs --input")?;
        let stop = Arc::new(AtomicBool::new(false));
        let tail = {
            let (ingest, stop) = (ingest.clone(), stop.clone());
            tokio::task::spawn_blocking(move || ingest.follow(&path, &stop))
        };
        let caught_up = tokio::spawn(announce_caught_up(log.clone(), ingest.clone()));
        let report = pipeline.run().await;
        stop.store(true, Ordering::Relaxed);
        caught_up.abort();
        tail.await??;
        report?
    } else if let Some(out) = &args.online_lookups {
        let lines = input_lines(&args, spec.as_ref())?;
        let stop = pipeline.stop_handle();
        let ended = Arc::new(AtomicBool::new(false));
        let running = {
            let ended = ended.clone();
            tokio::spawn(async move {
                let report = pipeline.run().await;
                ended.store(true, Ordering::Relaxed);
                report
            })
        };
        let rows = {
            let (ingest, lookup, labels) = (ingest.clone(), lookup.clone(), labels.clone());
            tokio::task::spawn_blocking(move || ingest.append_with_lookups(&lines, &labels, &lookup, &ended))
                .await?
        };
        stop.stop();
        // The pipeline's error (or its stop by a signal) first: it explains a failed lookup.
        let report = running.await??;
        let rows = rows?;
        output::write_training_set(out, &labels, &rows)?;
        eprintln!("online lookups {} rows -> {}", rows.len(), out.display());
        report
    } else {
        let lines = input_lines(&args, spec.as_ref())?;
        let appended = {
            let ingest = ingest.clone();
            tokio::task::spawn_blocking(move || ingest.append(lines.split(|&b| b == b'\n'))).await??
        };
        eprintln!("appended       {appended} lines to topic `{TOPIC}` ({} in all)", topic.end_offset(0)?);
        pipeline.run().await?
    };
    let online = started.elapsed();

    // The training set, replayed from the log.
    let replayed = Instant::now();
    let logged = read_log(&topic)?;
    let logged_users: Vec<String> = logged.txns.iter().map(|t| t.user.clone()).collect();
    let read_time = replayed.elapsed();
    let replay = Replay::new(view.clone()).run(BATCH);
    let set = if args.as_served {
        replay.as_served(logged.txns, &logged.appended, &labels)?
    } else {
        replay.as_happened(logged.txns, &labels)?
    };
    let computed = replayed.elapsed();
    // An input without labels (`--input` alone, `--follow`) makes no training set.
    let written = (!labels.is_empty() || args.labels.is_some()).then_some(&args.training_set);
    if let Some(out) = written {
        output::write_training_set(out, &labels, &set.rows)?;
    }
    let replay_time = replayed.elapsed();

    let newest = logged.newest.unwrap_or(0);
    print_lookups(&lookup, &busiest(&logged_users, 3), newest)?;
    server.shutdown().await;
    if let Some(s) = metrics_server {
        s.shutdown().await;
    }
    eprintln!();
    eprintln!(
        "events         {} valid, {} malformed (dead letters: topic {PIPELINE}.dlq), {} late (dropped online: topic {PIPELINE}.late)",
        logged.valid,
        logged.malformed,
        lookup.late_events()
    );
    eprintln!(
        "users          {} with state, {:.1} KiB of state",
        lookup.entities(),
        lookup.state_bytes() as f64 / 1024.0
    );
    eprintln!(
        "online         {:.2} s ({:.0} events/s, ingest and features)",
        online.as_secs_f64(),
        logged.valid as f64 / online.as_secs_f64()
    );
    match written {
        Some(out) => eprintln!(
            "training set   {} rows {} -> {} in {:.2} s (reading the log {:.2} s, replaying {:.2} s, writing {:.2} s)",
            labels.len(),
            if args.as_served { "as served" } else { "as happened" },
            out.display(),
            replay_time.as_secs_f64(),
            read_time.as_secs_f64(),
            (computed - read_time).as_secs_f64(),
            (replay_time - computed).as_secs_f64()
        ),
        None => eprintln!("training set   none: no label rows (--labels FILE)"),
    }
    if report.has_untold_losses() {
        anyhow::bail!("records were lost without a trace: {report:?}");
    }
    let summary = serde_json::json!({
        "events": logged.valid,
        "malformed": logged.malformed,
        "late": lookup.late_events(),
        "users": lookup.entities(),
        "labels": labels.len(),
        "training_set": written,
        "as_served": args.as_served,
        "newest_event": logged.newest,
    });
    println!("summary {summary}");
    Ok(())
}

/// The synthetic data's spec. Its end time is fixed at the first run over a data dir (now,
/// to the minute) and read back by later runs, which append the same lines.
fn synthetic_spec(args: &Args, dir: &Path) -> anyhow::Result<synthetic::Spec> {
    let file = dir.join("synthetic-end-ms");
    let end_ms = match std::fs::read_to_string(&file) {
        Ok(s) => s.trim().parse().with_context(|| format!("{} holds no epoch ms", file.display()))?,
        Err(_) => {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis() as i64;
            let end = now - now % 60_000;
            std::fs::write(&file, end.to_string())?;
            end
        }
    };
    let span_ms = i64::from(args.span_hours.max(1)) * 3_600_000;
    Ok(synthetic::Spec { events: args.events, users: args.users, seed: args.seed, end_ms, span_ms })
}

/// The input's bytes: the file, or the synthetic lines.
fn input_lines(args: &Args, spec: Option<&synthetic::Spec>) -> anyhow::Result<Vec<u8>> {
    Ok(match (&args.input, spec) {
        (Some(path), _) => std::fs::read(path).with_context(|| format!("reading {}", path.display()))?,
        (None, Some(spec)) => spec.lines().join(&b'\n'),
        (None, None) => Vec::new(),
    })
}

/// Appends input lines to the topic, each stamped with its arrival time (the largest event
/// time of the valid lines up to it). Lines the topic holds already (a previous run's) are
/// skipped, so a restarted run appends each line once: the topic has one partition, and an
/// append of a batch is all or nothing after a crash (torn tails are cut on recovery).
#[derive(Clone)]
struct Ingest {
    topic: Topic,
    lines: Arc<AtomicU64>,
    newest: Arc<std::sync::atomic::AtomicI64>,
}

impl Ingest {
    fn new(topic: Topic) -> Self {
        Ingest { topic, lines: Arc::default(), newest: Arc::new(i64::MIN.into()) }
    }

    /// Appends `lines` (blank ones skipped) after those the topic has; returns how many it
    /// appended.
    fn append<'a>(&self, lines: impl Iterator<Item = &'a [u8]>) -> anyhow::Result<u64> {
        let skip = self.topic.end_offset(0)?;
        let mut batch = Vec::with_capacity(4096);
        let mut appended = 0;
        for line in lines.filter(|l| !blank(l)) {
            let (n, record, _) = self.record(line);
            if n < skip {
                continue;
            }
            batch.push(record);
            if batch.len() == 4096 {
                appended += self.flush(&mut batch)?;
            }
        }
        appended += self.flush(&mut batch)?;
        Ok(appended)
    }

    /// The record of a (non-blank) input line: numbers the line (from 0), moves the arrival
    /// clock to its event time if it parses, and stamps the record with the clock, keyed by
    /// its user if it parses. Returns the line's number, the record and whether it parsed.
    fn record(&self, line: &[u8]) -> (u64, Record, bool) {
        let n = self.lines.fetch_add(1, Ordering::Relaxed);
        let parsed = txn::parse(line).ok();
        if let Some(t) = &parsed {
            self.newest.fetch_max(t.ts, Ordering::Relaxed);
        }
        let arrival = self.newest.load(Ordering::Relaxed).max(0);
        let mut record = Record::new(line.to_vec()).with_timestamp(arrival);
        let valid = parsed.is_some();
        if let Some(t) = parsed {
            record = record.with_key(t.user);
        }
        (n, record, valid)
    }

    /// Appends `lines` and, whenever the append clock is about to pass label times, waits until
    /// the operator has handled every valid line appended so far and looks those labels up:
    /// the features each label row was served online at its `t`. Returns them in the labels'
    /// order; fails if the pipeline `ended` first.
    fn append_with_lookups(
        &self,
        lines: &[u8],
        labels: &[Label<String>],
        lookup: &FeatureLookup<String, Txn>,
        ended: &AtomicBool,
    ) -> anyhow::Result<Vec<FeatureRow>> {
        let mut order: Vec<usize> = (0..labels.len()).collect();
        order.sort_by_key(|&i| labels[i].at);
        let mut rows: Vec<Option<FeatureRow>> = vec![None; labels.len()];
        let mut due = order.into_iter().peekable();
        let (mut batch, mut valid) = (Vec::with_capacity(4096), 0u64);
        // Answers the labels before `before` (`None`: all that are left).
        let mut answer = |batch: &mut Vec<Record>, valid: u64, before: Option<i64>| -> anyhow::Result<()> {
            let is_due = |i: &usize| before.is_none_or(|b| labels[*i].at < b);
            if !due.peek().is_some_and(is_due) {
                return Ok(());
            }
            self.flush(batch)?;
            while lookup.events_handled() < valid {
                // Stopped (Ctrl-C) or failed: the rest will never be handled.
                anyhow::ensure!(
                    !ended.load(Ordering::Relaxed),
                    "the pipeline stopped before the online lookups were taken"
                );
                std::thread::sleep(Duration::from_micros(50));
            }
            while let Some(i) = due.next_if(is_due) {
                rows[i] = Some(lookup.lookup_at(&labels[i].entity, labels[i].at)?);
            }
            Ok(())
        };
        for line in lines.split(|&b| b == b'\n').filter(|l| !blank(l)) {
            let (_, record, parsed) = self.record(line);
            // Labels before this arrival have seen everything appended before it.
            answer(&mut batch, valid, record.timestamp)?;
            valid += u64::from(parsed);
            batch.push(record);
            if batch.len() == 4096 {
                self.flush(&mut batch)?;
            }
        }
        answer(&mut batch, valid, None)?;
        Ok(rows.into_iter().flatten().collect())
    }

    fn flush(&self, batch: &mut Vec<Record>) -> anyhow::Result<u64> {
        if !batch.is_empty() {
            self.topic.append(0, batch)?;
        }
        let n = batch.len() as u64;
        batch.clear();
        Ok(n)
    }

    /// Appends the file's complete lines as it grows, until `stop`.
    fn follow(&self, path: &Path, stop: &AtomicBool) -> anyhow::Result<()> {
        use std::io::{Read, Seek, SeekFrom};
        let mut file = std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
        let (mut offset, mut pending) = (0u64, Vec::new());
        while !stop.load(Ordering::Relaxed) {
            file.seek(SeekFrom::Start(offset))?;
            let mut chunk = Vec::new();
            offset += file.read_to_end(&mut chunk)? as u64;
            pending.extend_from_slice(&chunk);
            if let Some(end) = pending.iter().rposition(|&b| b == b'\n') {
                let complete: Vec<u8> = pending.drain(..=end).collect();
                self.append(complete.split(|&b| b == b'\n'))?;
            }
            if chunk.is_empty() {
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        Ok(())
    }
}

/// Whether an input line is blank (skipped, not counted).
fn blank(line: &[u8]) -> bool {
    line.iter().all(u8::is_ascii_whitespace)
}

/// Prints `caught up: ...` whenever the pipeline's committed offset (a complete checkpoint:
/// its state holds every event before it) reaches the end of the topic after new lines.
async fn announce_caught_up(log: Log, ingest: Ingest) {
    let mut announced = None;
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let Ok(group) = log.describe_group(PIPELINE) else { continue };
        let Some(p) = group.partitions.iter().find(|p| p.topic == TOPIC && p.partition == 0) else {
            continue;
        };
        if p.committed == Some(p.end_offset) && announced != Some(p.end_offset) && p.end_offset > 0 {
            announced = Some(p.end_offset);
            println!(
                "caught up: {} lines applied, newest event {}",
                ingest.lines.load(Ordering::Relaxed),
                ingest.newest.load(Ordering::Relaxed)
            );
        }
    }
}

/// The topic's valid transactions in append order, with their append times.
struct Logged {
    txns: Vec<Txn>,
    appended: Vec<i64>,
    valid: u64,
    malformed: u64,
    newest: Option<i64>,
}

fn read_log(topic: &Topic) -> anyhow::Result<Logged> {
    let end = topic.end_offset(0)?;
    let mut logged = Logged { txns: Vec::new(), appended: Vec::new(), valid: 0, malformed: 0, newest: None };
    let mut offset = topic.start_offset(0)?;
    while offset < end {
        let records = topic.read(0, offset, 4 << 20)?;
        let Some(last) = records.last() else { break };
        offset = last.offset + 1;
        for r in records.iter().filter(|r| r.offset < end) {
            match txn::parse(&r.value) {
                Ok(t) => {
                    logged.newest = logged.newest.max(Some(t.ts));
                    logged.txns.push(t);
                    logged.appended.push(r.timestamp);
                    logged.valid += 1;
                }
                Err(_) => logged.malformed += 1,
            }
        }
    }
    Ok(logged)
}

/// The `n` users with the most events.
fn busiest(users: &[String], n: usize) -> Vec<String> {
    let mut counts: std::collections::HashMap<&str, u64> = std::collections::HashMap::new();
    for u in users {
        *counts.entry(u).or_default() += 1;
    }
    let mut counts: Vec<(&str, u64)> = counts.into_iter().collect();
    counts.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    counts.into_iter().take(n).map(|(u, _)| u.to_owned()).collect()
}

/// `users`' features as of `at`, from the operator's state.
fn print_lookups(lookup: &FeatureLookup<String, Txn>, users: &[String], at: i64) -> anyhow::Result<()> {
    eprintln!("\nlookups as of the newest event ({at}):");
    for (user, row) in users.iter().zip(lookup.lookup_many(users, at)?) {
        let values: Vec<String> = lookup
            .view()
            .feature_names()
            .zip(&row.values)
            .map(|(name, v)| match (v.status, &v.value) {
                (Status::Present, weir::features::Value::Count(c)) => format!("{name}={c}"),
                (Status::Present, weir::features::Value::Number(x)) => format!("{name}={x}"),
                (status, _) => format!("{name}:{status:?}"),
            })
            .collect();
        eprintln!("  {user:<6} {}", values.join(" "));
    }
    Ok(())
}
