//! `kafka_pipeline`: Kafka → Weir (parse JSON, key by client, 10 s tumbling window count) →
//! Kafka against a real broker, at least once and exactly once, next to a bare rdkafka
//! consumer+producer loop moving the same records through the same broker (the practical
//! limit) and the same job in Kafka Streams, measured in the same run, alternating.
//!
//! ```text
//! cargo bench -p weir-benches --bench kafka_pipeline                   # 2 M records, 2 rounds
//! cargo bench -p weir-benches --bench kafka_pipeline -- --quick        # smoke run, 100 k records
//! cargo bench -p weir-benches --bench kafka_pipeline -- --records 4000000 --rounds 3
//! cargo bench -p weir-benches --bench kafka_pipeline -- --streams no   # without Kafka Streams
//! cargo bench -p weir-benches --bench kafka_pipeline -- weir           # only rows whose id contains this
//! ```
//!
//! The broker: `WEIR_KAFKA_BOOTSTRAP` if set, else one started for the run with
//! `tools/kafka-broker/broker.sh` (Java 17, Maven, OpenSSL; stopped at the end). Kafka Streams rows
//! need `java`, `javac` and `mvn` (the jars of `benches/kafka-streams/pom.xml` are copied once
//! under the bench directory); without them they are skipped with the reason printed.
//!
//! Input (not timed): `--records` JSON access events (default 2,000,000; `--quick`: 100,000) of
//! about 150 bytes, keyed by client (10,000 clients), produced into a topic of 6 partitions,
//! 20 per millisecond of event time ending a minute before the run, each up to 1 s older than its
//! place; the record timestamp is the event's `ts`.
//!
//! Rows, each run in a process of its own (so its CPU time and peak RSS are its own), each
//! reading the whole input topic from the beginning into a new output topic of 6 partitions:
//!
//! - `bare`: one thread, an rdkafka `BaseConsumer` (`isolation.level=read_committed`, all
//!   partitions assigned) and a `ThreadedProducer` (idempotent, `murmur2_random`), every record
//!   sent on as it is (key, value, timestamp), flushed at the end. Every input record is output.
//! - `weir/alo`: `KafkaSource` (bounded) → `try_map(parse_json)` → `assign_timestamps(ts,
//!   bounded out-of-orderness 2 s)` → `key_by(client)` → `TumblingWindows::of(10 s)` →
//!   `aggregate(Count)` → `KafkaSink::json` keyed by client, at least once; parallelism = CPUs,
//!   checkpoints every second.
//! - `weir/eo`: the same, exactly once (transactions), parallelism 1 (the exactly-once sink runs
//!   one writer), checkpoints every second.
//! - `streams/alo`, `streams/eo`: the job in Kafka Streams (`StreamsWindowCount.java`):
//!   Jackson parse, event time from `ts`, `groupByKey` → 10 s tumbling windows with 2 s grace,
//!   emitted on window close → `count` → a JSON line per window; `at_least_once` or
//!   `exactly_once_v2`, `commit.interval.ms=1000`, one stream thread per CPU. It runs until the
//!   application's committed offsets reach the input's end offsets.
//!
//! Figures per row: wall time from the process's `main` until the job ended (Weir: `run()`
//! returned after the last checkpoint's commit; bare: flushed; Kafka Streams: every input
//! offset committed), so client start-up and group set-up count in every row; records/s =
//! input records / wall time; CPU = the process's user + system time (`/proc/self/stat`, what
//! `getrusage` reports; for the JVM, `ProcessHandle`'s, start-up and JIT included);
//! records/s per core = input records / CPU seconds; peak RSS = `VmHWM`. Ratios are taken per
//! round (the rows of one round run back to back) and their median printed.
//!
//! Every Weir run's output topic is read back (`read_committed`): it must hold one record per
//! (client, window) of the input, and the job must report no dead letters and no late records.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use weir_benches::{Args, Target, bench_root, check_report, group, print_summary, si};
use weir_kafka::{KafkaConfig, KafkaRecord, KafkaSink, KafkaSource, StartOffset};
use weir_runtime::{Checkpointing, Count, Pipeline, TumblingWindows, Watermarks, WindowResult};

const USAGE: &str = "usage: kafka_pipeline [--quick] [--records N] [--rounds R] [--streams yes|no] [FILTER]   \
                     (N: input records, default 2,000,000; R: rounds, default 2; --streams no: no Kafka \
                     Streams rows; FILTER: substring of row ids, e.g. weir)";

const PARTITIONS: i32 = 6;
const CLIENTS: u64 = 10_000;
const EVENTS_PER_MS: u64 = 20;
const DISORDER_MS: u64 = 1_000;
const WINDOW: Duration = Duration::from_secs(10);
const OUT_OF_ORDERNESS: Duration = Duration::from_secs(2);
const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(1);

/// The targets: Weir's records/s over the bare loop's, and Weir's records/s per core over
/// Kafka Streams'.
const TARGET_ALO_RATIO: f64 = 0.8;
const TARGET_EO_RATIO: f64 = 0.6;
const TARGET_STREAMS_PER_CORE: f64 = 3.0;

const ROWS: [&str; 5] = ["bare", "weir/alo", "weir/eo", "streams/alo", "streams/eo"];

/// The fields of an access event the job reads; serde_json parses and skips the others.
#[derive(Debug, Clone, Copy, serde::Deserialize)]
struct Access {
    ts: i64,
    client: Ipv4Addr,
}

/// One window's count of one client.
type Out = WindowResult<Ipv4Addr, u64>;

fn main() -> Result<()> {
    let args = Args::parse_with(
        USAGE,
        &[
            "--records",
            "--rounds",
            "--streams",
            "--child",
            "--bootstrap",
            "--input",
            "--output",
            "--records-in",
        ],
    )?;
    if let Some(role) = args.value("--child") {
        return child(role, &args);
    }
    parent(&args)
}

fn parse_value<T: std::str::FromStr>(args: &Args, flag: &str) -> Result<Option<T>> {
    args.value(flag)
        .map(|v| {
            v.replace([',', '_'], "").parse::<T>().map_err(|_| anyhow::anyhow!("{flag}: not a number: {v}"))
        })
        .transpose()
}

fn parent(args: &Args) -> Result<()> {
    let started = Instant::now();
    let records: u64 =
        parse_value(args, "--records")?.unwrap_or(if args.quick { 100_000 } else { 2_000_000 });
    let rounds: usize = parse_value(args, "--rounds")?.unwrap_or(if args.quick { 1 } else { 2 });
    let cpus = std::thread::available_parallelism().map_or(2, usize::from);
    let root = bench_root(PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("weir-kafka-bench"))?;
    println!("kafka_pipeline: Kafka → parse → key_by → 10 s window count → Kafka, against a real broker");
    let mode = if args.quick { "--quick (smoke run; figures not meaningful)" } else { "full" };
    println!(
        "  mode: {mode}   filter: {}   cpus: {cpus}   rounds: {rounds}   load average at start: {}",
        args.filter.as_deref().unwrap_or("(none)"),
        weir_benches::load_average()
    );

    let broker = Broker::start(&root)?;
    let bootstrap = broker.bootstrap.clone();
    println!(
        "  broker: {bootstrap} ({})",
        if broker.dir.is_some() { "started by this run" } else { "WEIR_KAFKA_BOOTSTRAP" }
    );

    let input = unique("bench-in");
    create_topic(&bootstrap, &input, PARTITIONS)?;
    let t = Instant::now();
    let produced = produce_input(&bootstrap, &input, records)?;
    println!(
        "  input: topic {input}, {PARTITIONS} partitions, {} JSON access events keyed by client ({CLIENTS} clients), \
         {:.1} MB ({:.0} B/record), {EVENTS_PER_MS} per ms of event time ({:.0} s), up to {DISORDER_MS} ms of \
         disorder; produced in {:.1} s (not timed)",
        group(records),
        produced.bytes as f64 / 1e6,
        produced.bytes as f64 / records as f64,
        records as f64 / EVENTS_PER_MS as f64 / 1e3,
        t.elapsed().as_secs_f64()
    );
    println!("  expected output: {} (client, window) counts", group(produced.windows));

    let want_streams = args.value("--streams") != Some("no");
    let streams = if want_streams && ROWS.iter().any(|r| r.starts_with("streams") && args.selects(r)) {
        match prepare_streams(&root) {
            Ok(cp) => Some(cp),
            Err(e) => {
                println!("  Kafka Streams rows skipped: {e:#}");
                None
            }
        }
    } else {
        None
    };

    let rows: Vec<&str> = ROWS
        .iter()
        .copied()
        .filter(|r| args.selects(r))
        .filter(|r| !r.starts_with("streams") || streams.is_some())
        .collect();
    let mut runs: Vec<Run> = Vec::new();
    for round in 0..rounds {
        // Rotate the order so no row always runs first (or right after the input was written).
        for i in 0..rows.len() {
            let row = rows[(i + round) % rows.len()];
            let output = unique(&format!("bench-out-{}", row.replace('/', "-")));
            create_topic(&bootstrap, &output, PARTITIONS)?;
            let mut cmd = match row {
                "streams/alo" | "streams/eo" => {
                    let guarantee = if row == "streams/eo" { "exactly_once_v2" } else { "at_least_once" };
                    let (classpath, state) = streams.as_ref().context("Kafka Streams was not prepared")?;
                    let mut cmd = Command::new("java");
                    cmd.args(["-XX:+UseG1GC", "-cp", classpath])
                        .arg(format!("-Djava.io.tmpdir={}", state.display()))
                        .arg("dev.weir.bench.StreamsWindowCount")
                        .args([&bootstrap, &input, &output, &unique("bench-streams"), guarantee])
                        .arg(cpus.to_string());
                    cmd
                }
                _ => {
                    let mut cmd = Command::new(std::env::current_exe()?);
                    cmd.args([
                        "--child",
                        row,
                        "--bootstrap",
                        &bootstrap,
                        "--input",
                        &input,
                        "--output",
                        &output,
                    ])
                    .args(["--records-in", &records.to_string()]);
                    cmd
                }
            };
            let result = run_child(&mut cmd, row)?;
            let out = count_output(&bootstrap, &output)?;
            let expected = if row == "bare" { records } else { produced.windows };
            if row.starts_with("weir") || row == "bare" {
                ensure!(
                    out == expected,
                    "{row}: the output topic holds {out} records (read_committed), expected {expected}"
                );
            }
            println!(
                "  round {round} {row:<12} wall {:>7.2}s  cpu {:>7.2}s  {:>7} rec/s  {:>7} rec/s/core  peak RSS {:>6.0} MB  \
                 output {}",
                result.wall,
                result.cpu,
                si(records as f64 / result.wall),
                si(records as f64 / result.cpu),
                result.hwm_kb as f64 / 1024.0,
                group(out)
            );
            runs.push(Run { round, row, result, output: out });
            delete_topic(&bootstrap, &output);
        }
    }
    delete_topic(&bootstrap, &input);

    let targets = print_table(&runs, &rows, records, cpus);
    print_summary(&targets, started);
    drop(broker);
    Ok(())
}

/// What a child process measured.
#[derive(Debug, Clone, Copy)]
struct Measured {
    wall: f64,
    cpu: f64,
    hwm_kb: u64,
}

struct Run {
    round: usize,
    row: &'static str,
    result: Measured,
    output: u64,
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied()
}

fn print_table(runs: &[Run], rows: &[&'static str], records: u64, cpus: usize) -> Vec<Target> {
    let of = |row: &'static str| runs_of(runs, row);
    // Per round, `row`'s value over `base`'s, then the median over the rounds.
    let ratio = |row: &'static str, base: &'static str, f: &dyn Fn(&Measured) -> f64| {
        median(
            of(row)
                .filter_map(|r| {
                    let b = of(base).find(|b| b.round == r.round)?;
                    Some(f(&r.result) / f(&b.result))
                })
                .collect(),
        )
    };
    let rate = |m: &Measured| records as f64 / m.wall;
    let per_core = |m: &Measured| records as f64 / m.cpu;
    println!();
    println!(
        "  rows: see the head of benches/kafka_pipeline.rs; cpus: {cpus}; records per run: {}",
        group(records)
    );
    println!(
        "  {:<12} {:>4} {:>9} {:>9} {:>13} {:>12} {:>11} {:>15} {:>10}",
        "row", "runs", "wall", "rec/s", "cpu", "rec/s/core", "peak RSS", "rec/s vs bare", "per core"
    );
    for &row in rows {
        let walls: Vec<f64> = of(row).map(|r| r.result.wall).collect();
        let Some(wall) = median(walls) else { continue };
        let cpu = median(of(row).map(|r| r.result.cpu).collect()).unwrap_or(f64::NAN);
        let hwm = of(row).map(|r| r.result.hwm_kb).max().unwrap_or(0);
        let fmt = |v: Option<f64>| v.map_or("n/a".to_owned(), |v| format!("{v:.2}"));
        println!(
            "  {row:<12} {:>4} {:>8.2}s {:>9} {:>12.2}s {:>12} {:>8.0} MB {:>15} {:>10}",
            runs_of(runs, row).count(),
            wall,
            si(records as f64 / wall),
            cpu,
            si(records as f64 / cpu),
            hwm as f64 / 1024.0,
            fmt(ratio(row, "bare", &rate)),
            fmt(ratio(row, "bare", &per_core)),
        );
    }
    let outputs: Vec<String> =
        rows.iter().filter_map(|row| Some(format!("{row} {}", group(of(row).next()?.output)))).collect();
    println!("  output records (read_committed): {}", outputs.join(", "));

    let mut targets = Vec::new();
    for (row, min) in [("weir/alo", TARGET_ALO_RATIO), ("weir/eo", TARGET_EO_RATIO)] {
        if let Some(r) = ratio(row, "bare", &rate) {
            let met = r >= min;
            targets.push(Target {
                what: format!("{row}: ≥ {min} × the bare rdkafka loop's records/s"),
                measured: format!(
                    "{r:.2} × (per core {})",
                    ratio(row, "bare", &per_core).map_or("n/a".to_owned(), |v| format!("{v:.2} ×"))
                ),
                met,
            });
        }
    }
    for (weir, streams) in [("weir/alo", "streams/alo"), ("weir/eo", "streams/eo")] {
        if let Some(r) = ratio(weir, streams, &per_core) {
            let wall = ratio(weir, streams, &rate).map_or("n/a".to_owned(), |v| format!("{v:.2} ×"));
            let mem = |row: &'static str| of(row).map(|r| r.result.hwm_kb).max().unwrap_or(0) as f64 / 1024.0;
            targets.push(Target {
                what: format!("{weir}: ≥ {TARGET_STREAMS_PER_CORE} × {streams}'s records/s per core"),
                measured: format!(
                    "{r:.2} × per core, {wall} records/s; peak RSS {:.0} MB vs {:.0} MB",
                    mem(weir),
                    mem(streams)
                ),
                met: r >= TARGET_STREAMS_PER_CORE,
            });
        }
    }
    targets
}

fn runs_of<'a>(runs: &'a [Run], row: &'a str) -> impl Iterator<Item = &'a Run> + 'a {
    runs.iter().filter(move |r| r.row == row)
}

/// Runs a row's process; its last stdout line `RESULT wall_s=.. cpu_s=.. hwm_kb=..` is what it
/// measured.
fn run_child(cmd: &mut Command, row: &str) -> Result<Measured> {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("{row}: start"))?;
    let stdout = child.stdout.take().context("no stdout")?;
    let mut found = None;
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        match line.strip_prefix("RESULT ") {
            Some(rest) => found = Some(parse_result(rest).with_context(|| format!("{row}: {line}"))?),
            None => println!("    {row}: {line}"),
        }
    }
    let status = child.wait()?;
    ensure!(status.success(), "{row}: the process failed ({status})");
    found.with_context(|| format!("{row}: printed no RESULT line"))
}

fn parse_result(s: &str) -> Result<Measured> {
    let mut m = Measured { wall: f64::NAN, cpu: f64::NAN, hwm_kb: 0 };
    for field in s.split_whitespace() {
        let (k, v) = field.split_once('=').context("key=value")?;
        match k {
            "wall_s" => m.wall = v.parse()?,
            "cpu_s" => m.cpu = v.parse()?,
            "hwm_kb" => m.hwm_kb = v.parse()?,
            _ => bail!("unknown field {k}"),
        }
    }
    ensure!(m.wall.is_finite() && m.cpu.is_finite(), "missing fields");
    Ok(m)
}

/// The process's user + system CPU seconds, dead threads included (`/proc/self/stat`, in
/// clock ticks of 1/100 s, as `getrusage(RUSAGE_SELF)` reports them).
fn process_cpu() -> Result<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = stat.rsplit_once(')').context("/proc/self/stat")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line; `rest` starts at field 3.
    let ticks: u64 =
        fields.get(11).context("utime")?.parse::<u64>()? + fields.get(12).context("stime")?.parse::<u64>()?;
    Ok(ticks as f64 / 100.0)
}

/// The process's peak resident set size (`VmHWM`), in KiB.
fn peak_rss_kb() -> Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).context("VmHWM")?;
    Ok(line.trim_start_matches("VmHWM:").trim().trim_end_matches("kB").trim().parse()?)
}

fn child(role: &str, args: &Args) -> Result<()> {
    let started = Instant::now();
    // `RUST_LOG=info` (or finer) shows the job's log on stderr.
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    let value = |flag: &str| args.value(flag).with_context(|| format!("{flag} is missing"));
    let (bootstrap, input, output) = (value("--bootstrap")?, value("--input")?, value("--output")?);
    let records: u64 = parse_value(args, "--records-in")?.context("--records-in is missing")?;
    match role {
        "bare" => bare_loop(bootstrap, input, output, records)?,
        "weir/alo" | "weir/eo" => weir_job(bootstrap, input, output, role == "weir/eo")?,
        _ => bail!("unknown row {role}"),
    }
    println!(
        "RESULT wall_s={:.3} cpu_s={:.3} hwm_kb={}",
        started.elapsed().as_secs_f64(),
        process_cpu()?,
        peak_rss_kb()?
    );
    Ok(())
}

/// The practical limit: every record consumed and produced again, one thread, no processing.
fn bare_loop(bootstrap: &str, input: &str, output: &str, records: u64) -> Result<()> {
    let consumer: BaseConsumer = client(bootstrap)
        .set("group.id", unique("bench-bare"))
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("isolation.level", "read_committed")
        .set("auto.offset.reset", "earliest")
        .create()?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition_offset(input, p, Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
    let producer: ThreadedProducer<DefaultProducerContext> =
        client(bootstrap).set("enable.idempotence", "true").set("partitioner", "murmur2_random").create()?;
    let mut moved = 0;
    while moved < records {
        let Some(m) = consumer.poll(Duration::from_millis(100)) else { continue };
        let m = m?;
        loop {
            let mut r: BaseRecord<'_, [u8], [u8]> =
                BaseRecord::to(output).payload(m.payload().unwrap_or_default());
            if let Some(k) = m.key() {
                r = r.key(k);
            }
            if let Some(ts) = m.timestamp().to_millis() {
                r = r.timestamp(ts);
            }
            match producer.send(r) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err((e, _)) => return Err(e.into()),
            }
        }
        moved += 1;
    }
    producer.flush(Duration::from_secs(60))?;
    Ok(())
}

/// The job in Weir, ending when the bounded source has read the whole input.
fn weir_job(bootstrap: &str, input: &str, output: &str, exactly_once: bool) -> Result<()> {
    let cpus = std::thread::available_parallelism().map_or(2, usize::from);
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(cpus).enable_all().build()?;
    let dir = tempfile::tempdir()?;
    let parallelism = if exactly_once { 1 } else { cpus };
    let group = unique("bench-weir");
    let config = KafkaConfig::new(bootstrap);
    let p = Pipeline::builder("kafka_pipeline")
        .parallelism(parallelism)
        .handle_signals(false)
        .checkpointing(Checkpointing::to_dir(dir.path()).interval(CHECKPOINT_INTERVAL))
        .build()?;
    let sink = KafkaSink::json(config.clone(), output).key_by(|w: &Out| w.key.octets());
    let sink = if exactly_once { sink.exactly_once(group.clone()) } else { sink };
    p.source(KafkaSource::new(config, [input], group).start_offset(StartOffset::Earliest).bounded())
        .try_map(KafkaRecord::parse_json::<Access>)
        .assign_timestamps(|a: &Access| a.ts, Watermarks::bounded_out_of_orderness(OUT_OF_ORDERNESS))
        .key_by(|a: &Access| a.client)
        .window(TumblingWindows::of(WINDOW))
        .aggregate(Count)
        .sink(sink);
    let report = runtime.block_on(p.run())?;
    check_report(&report)?;
    Ok(())
}

/// A name no other run uses.
fn unique(prefix: &str) -> String {
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    format!("{prefix}-{}-{nanos}", std::process::id())
}

fn client(bootstrap: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap);
    c
}

/// The broker of the run: `WEIR_KAFKA_BOOTSTRAP`'s, or one started with
/// `tools/kafka-broker/broker.sh` and stopped when this is dropped.
struct Broker {
    bootstrap: String,
    dir: Option<PathBuf>,
}

const BROKER_SH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tools/kafka-broker/broker.sh");

impl Broker {
    fn start(root: &Path) -> Result<Broker> {
        if let Ok(bootstrap) = std::env::var("WEIR_KAFKA_BOOTSTRAP") {
            return Ok(Broker { bootstrap, dir: None });
        }
        let dir = root.join("broker");
        let out = Command::new("bash")
            .arg(BROKER_SH)
            .arg("start")
            .arg(&dir)
            .stderr(Stdio::inherit())
            .output()
            .with_context(|| format!("run {BROKER_SH}"))?;
        ensure!(out.status.success(), "{BROKER_SH} start {} failed ({})", dir.display(), out.status);
        let bootstrap = String::from_utf8(out.stdout)?.trim().to_owned();
        Ok(Broker { bootstrap, dir: Some(dir) })
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(dir) = &self.dir {
            let _ = Command::new("bash").arg(BROKER_SH).arg("stop").arg(dir).status();
        }
    }
}

fn admin_call<T>(
    bootstrap: &str,
    f: impl FnOnce(&AdminClient<DefaultClientContext>, &AdminOptions) -> T,
) -> Result<T> {
    let admin: AdminClient<DefaultClientContext> = client(bootstrap).create()?;
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    Ok(f(&admin, &options))
}

fn create_topic(bootstrap: &str, topic: &str, partitions: i32) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let results = admin_call(bootstrap, |admin, options| {
        rt.block_on(
            admin.create_topics(&[NewTopic::new(topic, partitions, TopicReplication::Fixed(1))], options),
        )
    })??;
    for r in results {
        r.map_err(|(t, e)| anyhow::anyhow!("create topic {t}: {e}"))?;
    }
    // Wait until every partition has a leader.
    let consumer: BaseConsumer = client(bootstrap).create()?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let md = consumer.fetch_metadata(Some(topic), Duration::from_secs(5))?;
        let ready = md.topics().first().is_some_and(|t| {
            t.error().is_none()
                && t.partitions().len() == partitions as usize
                && t.partitions().iter().all(|p| p.leader() >= 0)
        });
        if ready {
            return Ok(());
        }
        ensure!(Instant::now() < deadline, "topic {topic} has no leaders after 30 s");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn delete_topic(bootstrap: &str, topic: &str) {
    let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
    let _ = admin_call(bootstrap, |admin, options| rt.block_on(admin.delete_topics(&[topic], options)));
}

struct Produced {
    bytes: u64,
    /// Distinct (client, window) pairs: the job's output records.
    windows: u64,
}

/// Produces the input: `records` JSON access events keyed by client.
fn produce_input(bootstrap: &str, topic: &str, records: u64) -> Result<Produced> {
    let producer: ThreadedProducer<DefaultProducerContext> = client(bootstrap)
        .set("enable.idempotence", "true")
        .set("linger.ms", "20")
        .set("batch.size", "1000000")
        .set("partitioner", "murmur2_random")
        .create()?;
    let mut rng = weir_testkit::Rng(0x5eed_cafe);
    let mut windows = HashSet::new();
    let (mut value, mut key) = (String::with_capacity(256), String::with_capacity(16));
    let mut bytes = 0;
    let window_ms = WINDOW.as_millis() as i64;
    // Event time ends a minute before now: recent enough that the broker's time-based retention
    // (7 days by default) does not delete the input while the rows read it, and not in the future.
    let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis() as i64;
    let start_ms = (now_ms - (records / EVENTS_PER_MS) as i64 - 60_000).div_euclid(window_ms) * window_ms;
    for i in 0..records {
        let place = start_ms + (i / EVENTS_PER_MS) as i64;
        let ts = (place - rng.below(DISORDER_MS + 1) as i64).max(start_ms);
        let c = rng.below(CLIENTS);
        let client = Ipv4Addr::new(10, (c >> 16) as u8, (c >> 8) as u8, c as u8);
        windows.insert((c, ts.div_euclid(window_ms)));
        let r = rng.next_u64();
        let method = ["GET", "GET", "GET", "POST", "PUT", "DELETE"][(r % 6) as usize];
        let status = [200, 200, 200, 200, 201, 304, 404, 500][((r >> 8) % 8) as usize];
        key.clear();
        write!(key, "{client}")?;
        value.clear();
        write!(
            value,
            r#"{{"ts":{ts},"client":"{client}","method":"{method}","path":"/api/items/{}","status":{status},"bytes":{},"latency_ms":{},"agent":"bench/1.0"}}"#,
            (r >> 16) % 100_000,
            200 + (r >> 32) % 60_000,
            1 + (r >> 48) % 500
        )?;
        bytes += value.len() as u64;
        loop {
            let rec = BaseRecord::to(topic).key(key.as_bytes()).payload(value.as_bytes()).timestamp(ts);
            match producer.send(rec) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err((e, _)) => return Err(e.into()),
            }
        }
    }
    producer.flush(Duration::from_secs(120))?;
    Ok(Produced { bytes, windows: windows.len() as u64 })
}

/// The records a `read_committed` reader sees in `topic`.
fn count_output(bootstrap: &str, topic: &str) -> Result<u64> {
    let consumer: BaseConsumer = client(bootstrap)
        .set("group.id", unique("bench-check"))
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .create()?;
    let mut tpl = TopicPartitionList::new();
    let mut ends = Vec::new();
    for p in 0..PARTITIONS {
        tpl.add_partition_offset(topic, p, Offset::Beginning)?;
        ends.push(consumer.fetch_watermarks(topic, p, Duration::from_secs(10))?.1);
    }
    consumer.assign(&tpl)?;
    let mut n = 0;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        // Done once every partition's position is at its end (past the transaction markers).
        let done = consumer.position()?.elements().iter().all(|e| match e.offset() {
            Offset::Offset(o) => o >= ends[e.partition() as usize],
            _ => ends[e.partition() as usize] == 0,
        });
        if done {
            return Ok(n);
        }
        ensure!(Instant::now() < deadline, "reading {topic} back took over 120 s");
        if let Some(m) = consumer.poll(Duration::from_millis(100)) {
            let _ = m?.offset();
            n += 1;
        }
    }
}

/// Copies the Kafka Streams job's jars (once) and compiles its class: the class path, and a
/// directory for its temporary files.
fn prepare_streams(root: &Path) -> Result<(String, PathBuf)> {
    let project = Path::new(env!("CARGO_MANIFEST_DIR")).join("kafka-streams");
    let dir = root.join("kafka-streams");
    let lib = dir.join("lib");
    for tool in ["java", "javac", "mvn"] {
        let found = Command::new(tool).arg("-version").stdout(Stdio::null()).stderr(Stdio::null()).status();
        ensure!(found.is_ok(), "`{tool}` is not on PATH");
    }
    if !lib.join(".complete").exists() {
        let _ = std::fs::remove_dir_all(&lib);
        let status = Command::new("mvn")
            .args(["-q", "-B", "-Dstyle.color=never", "-f"])
            .arg(project.join("pom.xml"))
            .arg(format!("-DoutputDirectory={}", lib.display()))
            .arg("org.apache.maven.plugins:maven-dependency-plugin:3.10.0:copy-dependencies")
            .status()?;
        ensure!(status.success(), "copying the Kafka Streams jars failed ({status})");
        std::fs::write(lib.join(".complete"), "")?;
    }
    let classes = dir.join("classes");
    let status = Command::new("javac")
        .arg("-d")
        .arg(&classes)
        .arg("-cp")
        .arg(format!("{}/*", lib.display()))
        .arg(project.join("src/main/java/dev/weir/bench/StreamsWindowCount.java"))
        .status()?;
    ensure!(status.success(), "compiling StreamsWindowCount.java failed ({status})");
    let state = dir.join("tmp");
    std::fs::create_dir_all(&state)?;
    Ok((format!("{}:{}/*", classes.display(), lib.display()), state))
}
