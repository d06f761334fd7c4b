//! `log_append`: append and consume throughput of `weir-log`, each append figure printed next to
//! raw `std::fs::File` writes of the same bytes, measured in the same run.
//!
//! ```text
//! cargo bench -p weir-benches --bench log_append                  # full run, about 1–2 minutes
//! cargo bench -p weir-benches --bench log_append -- --quick       # smoke run for CI, seconds
//! cargo bench -p weir-benches --bench log_append -- v100/b10000   # only rows whose id contains this
//! ```
//!
//! Three sections, every row named by an id the filter matches against:
//!
//! - `append/v<value bytes>/b<records per append>/<durability>`: one thread appends pre-built
//!   records to a one-partition topic in a fresh directory; in the same row the raw baseline
//!   writes the same bytes with one `write_all` per Weir append (plus `sync_data` where Weir
//!   syncs every batch). Weir and raw take turns over a few rounds, so drift on the machine falls
//!   on both.
//! - `concurrent/every-batch/v100/b100/t<threads>`: group commit. Several threads append to one
//!   `EveryBatch` partition; the number of `fdatasync`s is inferred from the disk's flush counter
//!   (`/sys/dev/block/<dev>/stat`), calibrated by raw `sync_data` calls in the same run. A filter
//!   matching either row runs both (1 thread is the reference).
//! - `consume/v<value bytes>/max<read size>`: `Topic::read_into` over a whole partition that was
//!   just written, so it is read from the page cache.
//!
//! Every row prints records/s, MB/s and p50/p99/max latency per call, and the targets it is held
//! against; a summary of the targets closes the run. Data goes to a temporary directory under
//! `WEIR_BENCH_DIR` if that is set, else under Cargo's `CARGO_TARGET_TMPDIR` (the target
//! directory, on the real disk); the run warns if the directory is on tmpfs, where `fsync` costs
//! nothing and the figures mean little. Figures from `--quick` only show that everything runs.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Barrier;
use std::time::{Duration, Instant};
use weir_benches::{Args, Target, bench_root, describe_fs, load_average, pass, print_summary, si};

use anyhow::{Context, Result, bail, ensure};
use bytes::Bytes;
use weir::log::{Durability, Log, LogOptions, Record, StoredRecord, Topic, TopicConfig};

const USAGE: &str = "usage: log_append [--quick] [FILTER]   (FILTER: substring of row ids, e.g. v100/b10000)";

/// The targets the figures are held against.
const TARGET_RECORDS_PER_SEC: f64 = 2_000_000.0;
const TARGET_RAW_RATIO: f64 = 0.80;
const TARGET_RAW_RATIO_MIN_BATCH: usize = 1_000;
const TARGET_CONSUME_BYTES_PER_SEC: f64 = 1e9;

const VALUE_SIZES: [usize; 2] = [100, 1024];
const BATCH_SIZES: [usize; 3] = [1, 100, 10_000];
const MODES: [Durability; 3] =
    [Durability::None, Durability::Interval(Duration::from_secs(1)), Durability::EveryBatch];
const CONCURRENT_THREADS: [usize; 2] = [1, 4];
const CONCURRENT_BATCH: usize = 100;
const CONCURRENT_VALUE: usize = 100;
const CONSUME_BATCH: usize = 1_000;
const CONSUME_READ_SIZES: [usize; 2] = [1 << 20, 4 << 20];
/// Bytes of pseudo-random data that record values and raw writes are sliced from.
const DATA_POOL: usize = 32 << 20;

/// How long and how much each measurement may take.
struct Budget {
    /// Timed rounds per append row; each runs Weir and raw once, in alternating order.
    rounds: u32,
    /// Longest the untimed probe (a Weir phase) may run; it fixes the work every phase of the
    /// row then repeats.
    round_time: Duration,
    /// Most payload bytes one phase writes.
    round_bytes: u64,
    /// Most appends one phase makes (bounds latency samples).
    round_appends: u64,
    /// Duration of each concurrent run.
    concurrent_time: Duration,
    /// Payload bytes of each consume data set.
    consume_bytes: u64,
    /// Time spent reading each consume data set, per read size (after one untimed pass).
    consume_time: Duration,
}

impl Budget {
    fn full() -> Budget {
        Budget {
            rounds: 3,
            round_time: Duration::from_millis(400),
            round_bytes: 128 << 20,
            round_appends: 2_000_000,
            concurrent_time: Duration::from_secs(2),
            consume_bytes: 256 << 20,
            consume_time: Duration::from_millis(1_500),
        }
    }

    fn quick() -> Budget {
        Budget {
            rounds: 2,
            round_time: Duration::from_millis(20),
            round_bytes: 2 << 20,
            round_appends: 10_000,
            concurrent_time: Duration::from_millis(150),
            consume_bytes: 4 << 20,
            consume_time: Duration::from_millis(40),
        }
    }
}

fn main() -> Result<()> {
    let args = Args::parse(USAGE)?;
    let budget = if args.quick { Budget::quick() } else { Budget::full() };
    let root = bench_root(PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("weir-log-bench"))?;
    let data = pseudo_random(DATA_POOL);
    let started = Instant::now();

    println!("weir-log append/consume benchmark");
    println!(
        "  mode: {}   filter: {}   cpus: {}",
        if args.quick { "--quick (smoke run; figures not meaningful)" } else { "full" },
        args.filter.as_deref().unwrap_or("(none)"),
        std::thread::available_parallelism().map_or(0, usize::from),
    );
    println!("  data dir: {} ({})", root.display(), describe_fs(&root));
    println!("  load average at start: {}", load_average());
    if let Some(kib) = reported_kib() {
        println!(
            "  this VM hands freed memory back to its host (free page reporting, {} MiB so far); a page",
            kib >> 10
        );
        println!(
            "    touched again then costs a host fault (~0.4 GB/s); append phases start on warm page-cache"
        );
        println!("    memory freed just before them (see `Ballast` in the source)");
    }
    println!(
        "  units: MB = 10^6 bytes; rec/s in k = 10^3, M = 10^6; latencies are per append (or read) call"
    );
    println!(
        "  disk bytes = the encoded batches as they land in the segment .log files (38-byte batch header +"
    );
    println!(
        "    varint-framed records; the sparse .index files are not counted); payload = value bytes only"
    );

    let mut targets = Vec::new();
    append_section(&args, &budget, &root, &data, &mut targets)?;
    concurrent_section(&args, &budget, &root, &data)?;
    consume_section(&args, &budget, &root, &data, &mut targets)?;

    print_summary(&targets, started);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Append, single thread, against raw writes.

/// What one timed phase did.
struct Phase {
    /// Append (or write) calls.
    calls: u64,
    /// Records appended (for raw: the records whose bytes were written).
    records: u64,
    /// Payload (value) bytes.
    payload_bytes: u64,
    /// Bytes that reached the file(s).
    disk_bytes: u64,
    elapsed: Duration,
    /// Nanoseconds per call, sorted.
    latencies: Vec<u64>,
}

impl Phase {
    /// The phases' work and time added up, their latencies pooled.
    fn combine(phases: Vec<Phase>) -> Phase {
        let mut all = Phase {
            calls: 0,
            records: 0,
            payload_bytes: 0,
            disk_bytes: 0,
            elapsed: Duration::ZERO,
            latencies: Vec::new(),
        };
        for p in phases {
            all.calls += p.calls;
            all.records += p.records;
            all.payload_bytes += p.payload_bytes;
            all.disk_bytes += p.disk_bytes;
            all.elapsed += p.elapsed;
            all.latencies.extend(p.latencies);
        }
        all.latencies.sort_unstable();
        all
    }

    fn secs(&self) -> f64 {
        self.elapsed.as_secs_f64().max(1e-9)
    }

    fn records_per_sec(&self) -> f64 {
        self.records as f64 / self.secs()
    }

    fn disk_mb_per_sec(&self) -> f64 {
        self.disk_bytes as f64 / self.secs() / 1e6
    }

    fn payload_mb_per_sec(&self) -> f64 {
        self.payload_bytes as f64 / self.secs() / 1e6
    }

    fn percentile(&self, q: f64) -> u64 {
        percentile(&self.latencies, q)
    }
}

fn mode_name(mode: Durability) -> &'static str {
    match mode {
        Durability::None => "none",
        Durability::Interval(_) => "interval-1s",
        Durability::EveryBatch => "every-batch",
    }
}

/// When a Weir append phase stops.
#[derive(Clone, Copy)]
enum Limit {
    /// After `time`, `payload_bytes` or `appends`, whichever comes first.
    Budget { time: Duration, payload_bytes: u64, appends: u64 },
    /// After exactly this many appends.
    Appends(u64),
}

fn append_section(
    args: &Args,
    budget: &Budget,
    root: &Path,
    data: &Bytes,
    targets: &mut Vec<Target>,
) -> Result<()> {
    let mut rows = Vec::new();
    for value in VALUE_SIZES {
        for batch in BATCH_SIZES {
            for mode in MODES {
                let id = format!("append/v{value}/b{batch}/{}", mode_name(mode));
                if args.selects(&id) {
                    rows.push((id, value, batch, mode));
                }
            }
        }
    }
    if rows.is_empty() {
        return Ok(());
    }
    println!();
    println!(
        "append: 1 thread, 1-partition topic (default TopicConfig: 128 MiB segments), fresh directory per"
    );
    println!("  phase; keyless records, values pre-built as slices of a 32 MiB buffer (so mostly not in CPU");
    println!(
        "  cache, for Weir and raw alike); timestamps set by the log. An untimed Weir probe stops after"
    );
    println!(
        "  {:?} or {} MiB of payload and fixes the number of appends every phase of the row repeats;",
        budget.round_time,
        budget.round_bytes >> 20
    );
    println!(
        "  then {} rounds of Weir + raw, order alternating (W R, R W, ...). Each Weir phase makes one",
        budget.rounds
    );
    println!("  untimed append first. Figures are totals over the rounds (latencies pooled); `range` is the");
    println!("  lowest and highest per-round ratio.");
    println!(
        "raw: per Weir append, ONE File::write_all of the same byte count (Weir's .log growth / appends,"
    );
    println!(
        "  i.e. batch header + record framing included) to one fresh file on the same file system, from"
    );
    println!("  the same 32 MiB buffer;");
    println!("  none, interval-1s: write_all only. No fsync at all: Weir's 1 s background fdatasync and the");
    println!("    fdatasync of a segment when it rolls (every 128 MiB) count against Weir.");
    println!("  every-batch: write_all + sync_data per write.");
    println!("  Raw does no encoding, no CRC, no index writes, no segment roll.");
    println!(
        "weir/raw = raw time / Weir time for the same bytes (1.00: as fast as raw); the targets use it."
    );
    println!(
        "p50 ratio = raw p50 / Weir p50 latency: the typical call, much less moved by other load on the"
    );
    println!("  machine (stalls, preemption) than the totals are.");
    println!();
    println!(
        "{:<28} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} | {:>8} {:>8} {:>8} | {:>8} {:>9} {:>5}  targets",
        "id",
        "appends",
        "rec/s",
        "disk",
        "payload",
        "p50",
        "p99",
        "max",
        "raw disk",
        "raw p50",
        "raw p99",
        "weir/raw",
        "range",
        "p50"
    );
    println!(
        "{:<28} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} | {:>8} {:>8} {:>8} | {:>8} {:>9} {:>5}",
        "", "", "", "MB/s", "MB/s", "", "", "", "MB/s", "", "", "", "", "ratio"
    );
    // Room for a phase's page cache (payload + framing + one warm-up append), the encode buffer,
    // and what other processes grab meanwhile.
    let ballast = Ballast::new(root, usize::try_from(budget.round_bytes * 5 / 2)?)?;
    for (id, value, batch, mode) in rows {
        let records = build_records(data, value, batch);
        let sync = mode == Durability::EveryBatch;
        let weir_phase = |limit| {
            ballast
                .released(|| append_weir(root, mode, &records, batch, value, limit))
                .with_context(|| format!("{id}: Weir phase"))
        };
        let raw_phase = |bytes_per_write, writes| {
            ballast
                .released(|| append_raw(root, data, bytes_per_write, batch as u64, writes, sync))
                .with_context(|| format!("{id}: raw phase"))
        };
        // An untimed probe fixes the work of every phase of the row. (It also takes the first
        // phase's extra costs: the first phase of a row ran consistently slower here.)
        let probe = weir_phase(Limit::Budget {
            time: budget.round_time,
            payload_bytes: budget.round_bytes,
            appends: budget.round_appends,
        })?;
        let appends = probe.calls;
        let bytes_per_write = usize::try_from(probe.disk_bytes / appends.max(1))?;
        let (mut weirs, mut raws) = (Vec::new(), Vec::new());
        for round in 0..budget.rounds {
            if round % 2 == 0 {
                weirs.push(weir_phase(Limit::Appends(appends))?);
                raws.push(raw_phase(bytes_per_write, appends)?);
            } else {
                raws.push(raw_phase(bytes_per_write, appends)?);
                weirs.push(weir_phase(Limit::Appends(appends))?);
            }
        }
        let ratios: Vec<f64> = weirs.iter().zip(&raws).map(|(w, r)| r.secs() / w.secs()).collect();
        let low = ratios.iter().copied().fold(f64::INFINITY, f64::min);
        let high = ratios.iter().copied().fold(0.0, f64::max);
        let weir = Phase::combine(weirs);
        let raw = Phase::combine(raws);
        let ratio = raw.secs() / weir.secs();
        let p50_ratio = raw.percentile(0.50) as f64 / weir.percentile(0.50).max(1) as f64;

        let mut verdicts = Vec::new();
        if value == 100 && batch == 10_000 && mode != Durability::EveryBatch {
            let met = weir.records_per_sec() >= TARGET_RECORDS_PER_SEC;
            verdicts.push(format!("≥2M rec/s {}", pass(met)));
            targets.push(Target {
                what: format!("{id}: ≥ 2,000,000 records/s"),
                measured: format!("{} rec/s", si(weir.records_per_sec())),
                met,
            });
        }
        if batch >= TARGET_RAW_RATIO_MIN_BATCH {
            // Both the total and the typical call must clear the bar: a stall in one raw round
            // can inflate the total ratio far past 1.
            let met = ratio.min(p50_ratio) >= TARGET_RAW_RATIO;
            verdicts.push(format!("≥0.80 raw {}", pass(met)));
            targets.push(Target {
                what: format!("{id}: ≥ 80 % of raw"),
                measured: format!("{ratio:.2} of raw (rounds {low:.2}–{high:.2}; p50 ratio {p50_ratio:.2})"),
                met,
            });
        }
        println!(
            "{:<28} {:>8} {:>8} {:>8.1} {:>8.1} {:>8} {:>8} {:>8} | {:>8.1} {:>8} {:>8} | {:>8.2} {:>9} {:>5.2}  {}",
            id,
            weir.calls,
            si(weir.records_per_sec()),
            weir.disk_mb_per_sec(),
            weir.payload_mb_per_sec(),
            dur(weir.percentile(0.50)),
            dur(weir.percentile(0.99)),
            dur(weir.percentile(1.0)),
            raw.disk_mb_per_sec(),
            dur(raw.percentile(0.50)),
            dur(raw.percentile(0.99)),
            ratio,
            format!("{low:.2}–{high:.2}"),
            p50_ratio,
            verdicts.join(", "),
        );
    }
    Ok(())
}

/// At least [`DATA_POOL`] bytes' worth of records (a multiple of `batch`), each value a slice
/// of `data`, so consecutive appends copy different memory.
fn build_records(data: &Bytes, value: usize, batch: usize) -> Vec<Record> {
    let count = (DATA_POOL / value).max(batch).div_ceil(batch) * batch;
    let span = data.len() - value;
    (0..count)
        .map(|i| {
            let at = (i * value) % span;
            Record::new(data.slice(at..at + value))
        })
        .collect()
}

fn open_topic(dir: &Path, mode: Durability) -> Result<(Log, Topic)> {
    let log = Log::open(dir, LogOptions::default().durability(mode))?;
    let topic = log.create_topic("bench", TopicConfig::with_partitions(1))?;
    Ok((log, topic))
}

fn append_weir(
    root: &Path,
    mode: Durability,
    records: &[Record],
    batch: usize,
    value: usize,
    limit: Limit,
) -> Result<Phase> {
    let dir = tempfile::tempdir_in(root)?;
    let (log, topic) = open_topic(dir.path(), mode)?;
    let chunks = records.len() / batch;
    let payload_per_append = (batch * value) as u64;
    // One untimed append first: the log's encode buffer grows to size once per process, and a
    // phase this short would count that (first-touch page faults of up to ~20 MiB) against it.
    topic.append(0, &records[..batch])?;
    let warm_bytes: u64 = topic.describe().partitions.iter().map(|p| p.size_bytes).sum();
    let mut latencies = Vec::with_capacity(1 << 16);
    let mut calls = 0u64;
    let start = Instant::now();
    let mut last = start;
    loop {
        let at = (calls as usize % chunks) * batch;
        topic.append(0, &records[at..at + batch])?;
        let now = Instant::now();
        latencies.push((now - last).as_nanos() as u64);
        last = now;
        calls += 1;
        let done = match limit {
            Limit::Budget { time, payload_bytes, appends } => {
                now - start >= time || calls * payload_per_append >= payload_bytes || calls >= appends
            }
            Limit::Appends(appends) => calls >= appends,
        };
        if done {
            break;
        }
    }
    let elapsed = last - start;
    let records = calls * batch as u64;
    let end = topic.end_offset(0)?;
    ensure!(end == records + batch as u64, "end offset {end} after {records} + {batch} records");
    let disk_bytes = topic.describe().partitions.iter().map(|p| p.size_bytes).sum::<u64>() - warm_bytes;
    drop(topic);
    drop(log); // Under Interval this syncs: after the clock stopped.
    dir.close()?;
    latencies.sort_unstable();
    Ok(Phase { calls, records, payload_bytes: records * value as u64, disk_bytes, elapsed, latencies })
}

/// `writes` calls of `File::write_all` with `bytes_per_write` bytes each (+ `sync_data` each if
/// `sync`), to one fresh file. `records_per_write` only feeds the record rate.
fn append_raw(
    root: &Path,
    data: &Bytes,
    bytes_per_write: usize,
    records_per_write: u64,
    writes: u64,
    sync: bool,
) -> Result<Phase> {
    ensure!(bytes_per_write < data.len(), "{bytes_per_write} bytes per write exceed the data pool");
    let dir = tempfile::tempdir_in(root)?;
    let path = dir.path().join("raw.log");
    let mut file = File::create(&path).with_context(|| format!("create {}", path.display()))?;
    let span = data.len() - bytes_per_write;
    let mut latencies = Vec::with_capacity(writes as usize);
    let start = Instant::now();
    let mut last = start;
    for i in 0..writes as usize {
        let at = (i * bytes_per_write) % span;
        file.write_all(&data[at..at + bytes_per_write])?;
        if sync {
            file.sync_data()?;
        }
        let now = Instant::now();
        latencies.push((now - last).as_nanos() as u64);
        last = now;
    }
    let elapsed = last - start;
    let disk_bytes = file.metadata()?.len();
    drop(file);
    dir.close()?;
    latencies.sort_unstable();
    // Raw writes no records; it writes the bytes of `records` Weir records.
    let records = writes * records_per_write;
    Ok(Phase { calls: writes, records, payload_bytes: 0, disk_bytes, elapsed, latencies })
}

// ---------------------------------------------------------------------------------------------
// Concurrent EveryBatch appenders: group commit.

fn concurrent_section(args: &Args, budget: &Budget, root: &Path, data: &Bytes) -> Result<()> {
    let id =
        |threads: usize| format!("concurrent/every-batch/v{CONCURRENT_VALUE}/b{CONCURRENT_BATCH}/t{threads}");
    if !CONCURRENT_THREADS.iter().any(|&t| args.selects(&id(t))) {
        return Ok(());
    }
    println!();
    println!(
        "concurrent: N threads append batches of {CONCURRENT_BATCH} x {CONCURRENT_VALUE}-byte records to ONE \
         EveryBatch partition for {:?}.",
        budget.concurrent_time
    );
    let flushes = FlushCounter::for_path(root);
    match &flushes {
        Some(c) => println!(
            "  fdatasyncs are inferred: device flushes ({}, system-wide, so other I/O on the machine adds noise)",
            c.path.display()
        ),
        None => println!("  no device flush counter readable: fdatasync counts not inferred"),
    }
    println!(
        "  divided by the flushes one raw write_all + sync_data of the same size costs (calibrated below)."
    );
    println!("  Without group commit every append would need its own fdatasync.");
    println!();
    println!(
        "{:<36} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>9} {:>9} {:>8}",
        "id", "appends", "rec/s", "disk", "p50", "p99", "max", "dev flush", "≈fsyncs", "app/sync"
    );
    let records = build_records(data, CONCURRENT_VALUE, CONCURRENT_BATCH);
    let mut bytes_per_append = 0u64;
    let mut runs = Vec::new();
    for threads in CONCURRENT_THREADS {
        let before = flushes.as_ref().and_then(FlushCounter::read);
        let phase = concurrent_weir(root, &records, threads, budget.concurrent_time)
            .with_context(|| format!("{}: Weir phase", id(threads)))?;
        let after = flushes.as_ref().and_then(FlushCounter::read);
        bytes_per_append = phase.disk_bytes / phase.calls.max(1);
        runs.push((threads, phase, before.zip(after).map(|(b, a)| a.saturating_sub(b))));
    }
    // Calibration: how many device flushes one sync_data of this size costs.
    let before = flushes.as_ref().and_then(FlushCounter::read);
    let calibration_writes = if args.quick { 20 } else { 300 };
    let raw = append_raw(
        root,
        data,
        usize::try_from(bytes_per_append)?,
        CONCURRENT_BATCH as u64,
        calibration_writes,
        true,
    )?;
    let after = flushes.as_ref().and_then(FlushCounter::read);
    let raw_flushes = before.zip(after).map(|(b, a)| a.saturating_sub(b));
    let per_sync = raw_flushes.map(|f| f as f64 / calibration_writes as f64).filter(|&k| k > 0.0);

    for (threads, phase, dev_flushes) in &runs {
        let fsyncs = dev_flushes.zip(per_sync).map(|(f, k)| f as f64 / k);
        println!(
            "{:<36} {:>8} {:>8} {:>8.1} {:>8} {:>8} {:>8} {:>9} {:>9} {:>8}",
            id(*threads),
            phase.calls,
            si(phase.records_per_sec()),
            phase.disk_mb_per_sec(),
            dur(phase.percentile(0.50)),
            dur(phase.percentile(0.99)),
            dur(phase.percentile(1.0)),
            dev_flushes.map_or("n/a".to_owned(), |f| f.to_string()),
            fsyncs.map_or("n/a".to_owned(), |f| format!("{f:.0}")),
            fsyncs.map_or("n/a".to_owned(), |f| format!("{:.2}", phase.calls as f64 / f.max(1.0))),
        );
    }
    println!(
        "{:<36} {:>8} {:>8} {:>8.1} {:>8} {:>8} {:>8} {:>9} {:>9} {:>8}",
        format!("raw write_all+sync_data, {bytes_per_append} B"),
        raw.calls,
        si(raw.records_per_sec()),
        raw.disk_mb_per_sec(),
        dur(raw.percentile(0.50)),
        dur(raw.percentile(0.99)),
        dur(raw.percentile(1.0)),
        raw_flushes.map_or("n/a".to_owned(), |f| f.to_string()),
        raw.calls,
        "1.00",
    );
    if let Some(k) = per_sync {
        println!(
            "  calibration: {k:.2} device flushes per raw sync_data (rec/s of raw: records of {CONCURRENT_BATCH} per write)"
        );
    }
    if let (Some((_, one, _)), Some((threads, many, Some(f))), Some(k)) =
        (runs.first(), runs.last(), per_sync)
    {
        let fsyncs = *f as f64 / k;
        let saved = (many.calls as f64 - fsyncs).max(0.0);
        println!(
            "  {threads} threads: {:.2}x the records/s of 1 thread; ≈{saved:.0} of {} fdatasyncs saved ({:.0} %)",
            many.records_per_sec() / one.records_per_sec(),
            many.calls,
            100.0 * saved / many.calls.max(1) as f64,
        );
    }
    Ok(())
}

/// What one appender thread reports: when it stopped, and its per-append latencies.
type Appender = (Instant, Vec<u64>);

fn concurrent_weir(root: &Path, records: &[Record], threads: usize, time: Duration) -> Result<Phase> {
    let dir = tempfile::tempdir_in(root)?;
    let (log, topic) = open_topic(dir.path(), Durability::EveryBatch)?;
    let chunks = records.len() / CONCURRENT_BATCH;
    let barrier = Barrier::new(threads + 1);
    let (start, results) = std::thread::scope(|s| -> Result<(Instant, Vec<Appender>)> {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (topic, barrier) = (&topic, &barrier);
                s.spawn(move || -> Result<Appender> {
                    let mut latencies = Vec::with_capacity(1 << 14);
                    barrier.wait();
                    let start = Instant::now();
                    let mut last = start;
                    let mut i = t * chunks / threads;
                    while last - start < time {
                        let at = (i % chunks) * CONCURRENT_BATCH;
                        topic.append(0, &records[at..at + CONCURRENT_BATCH])?;
                        let now = Instant::now();
                        latencies.push((now - last).as_nanos() as u64);
                        last = now;
                        i += 1;
                    }
                    Ok((last, latencies))
                })
            })
            .collect();
        barrier.wait();
        let start = Instant::now();
        let mut results = Vec::new();
        for h in handles {
            match h.join() {
                Ok(r) => results.push(r?),
                Err(_) => bail!("an appender thread panicked"),
            }
        }
        Ok((start, results))
    })?;
    let end = results.iter().map(|(end, _)| *end).max().unwrap_or(start);
    let mut latencies: Vec<u64> = results.into_iter().flat_map(|(_, l)| l).collect();
    latencies.sort_unstable();
    let calls = latencies.len() as u64;
    let records = calls * CONCURRENT_BATCH as u64;
    ensure!(topic.end_offset(0)? == records, "end offset {} after {records} records", topic.end_offset(0)?);
    let disk_bytes = topic.describe().partitions.iter().map(|p| p.size_bytes).sum();
    drop(topic);
    drop(log);
    dir.close()?;
    Ok(Phase {
        calls,
        records,
        payload_bytes: records * CONCURRENT_VALUE as u64,
        disk_bytes,
        elapsed: end.saturating_duration_since(start),
        latencies,
    })
}

/// The "flushes completed" counter of the block device a path lives on.
struct FlushCounter {
    path: PathBuf,
}

impl FlushCounter {
    fn for_path(path: &Path) -> Option<FlushCounter> {
        let dev = std::fs::metadata(path).ok()?.dev();
        let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
        let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
        let counter = FlushCounter { path: PathBuf::from(format!("/sys/dev/block/{major}:{minor}/stat")) };
        counter.read().map(|_| counter)
    }

    /// Field 16 of the block layer's stat file (kernel 5.5 and later): flush requests completed.
    fn read(&self) -> Option<u64> {
        let stat = std::fs::read_to_string(&self.path).ok()?;
        stat.split_whitespace().nth(15)?.parse().ok()
    }
}

// ---------------------------------------------------------------------------------------------
// Consume from the page cache.

fn consume_section(
    args: &Args,
    budget: &Budget,
    root: &Path,
    data: &Bytes,
    targets: &mut Vec<Target>,
) -> Result<()> {
    let id = |value: usize, read: usize| format!("consume/v{value}/max{}MiB", read >> 20);
    let values: Vec<usize> = VALUE_SIZES
        .into_iter()
        .filter(|&v| CONSUME_READ_SIZES.iter().any(|&r| args.selects(&id(v, r))))
        .collect();
    if values.is_empty() {
        return Ok(());
    }
    println!();
    println!(
        "consume: Topic::read_into over a whole 1-partition topic, {} MiB of payload appended just before",
        budget.consume_bytes >> 20
    );
    println!(
        "  (Durability::None, {CONSUME_BATCH} records per append), so reads hit the page cache. Read from offset 0 to \
         the end,"
    );
    println!("  reusing one Vec; one untimed pass first, then passes for {:?}.", budget.consume_time);
    println!(
        "  disk MB/s counts the segment bytes read (batches as stored); payload MB/s counts value bytes;"
    );
    println!("  p50/p99 are per read_into call. The ≥ 1 GB/s target is held against disk MB/s.");
    println!();
    println!(
        "{:<24} {:>6} {:>10} {:>9} {:>9} {:>9} {:>9} {:>9}  target",
        "id", "passes", "records", "rec/s", "disk MB/s", "pay MB/s", "p50", "p99"
    );
    for value in values {
        let dir = tempfile::tempdir_in(root)?;
        let (log, topic) = open_topic(dir.path(), Durability::None)?;
        let records = build_records(data, value, CONSUME_BATCH);
        let chunks = records.len() / CONSUME_BATCH;
        let mut payload = 0u64;
        let mut i = 0;
        while payload < budget.consume_bytes {
            let at = (i % chunks) * CONSUME_BATCH;
            topic.append(0, &records[at..at + CONSUME_BATCH])?;
            payload += (CONSUME_BATCH * value) as u64;
            i += 1;
        }
        drop(records);
        let end = topic.end_offset(0)?;
        let disk_bytes: u64 = topic.describe().partitions.iter().map(|p| p.size_bytes).sum();
        let mut out = Vec::new();
        read_pass(&topic, end, CONSUME_READ_SIZES[0], &mut out, &mut Vec::new())?;
        for read_size in CONSUME_READ_SIZES {
            let id = id(value, read_size);
            if !args.selects(&id) {
                continue;
            }
            let mut latencies = Vec::new();
            let mut passes = 0u64;
            let mut payload_read = 0u64;
            let start = Instant::now();
            while passes == 0 || start.elapsed() < budget.consume_time {
                payload_read += read_pass(&topic, end, read_size, &mut out, &mut latencies)?;
                passes += 1;
            }
            let elapsed = start.elapsed();
            latencies.sort_unstable();
            let phase = Phase {
                calls: latencies.len() as u64,
                records: passes * end,
                payload_bytes: payload_read,
                disk_bytes: passes * disk_bytes,
                elapsed,
                latencies,
            };
            let met = phase.disk_mb_per_sec() * 1e6 >= TARGET_CONSUME_BYTES_PER_SEC;
            targets.push(Target {
                what: format!("{id}: ≥ 1 GB/s from page cache (disk bytes)"),
                measured: format!(
                    "{:.2} GB/s disk bytes, {:.2} GB/s payload",
                    phase.disk_mb_per_sec() / 1e3,
                    phase.payload_mb_per_sec() / 1e3
                ),
                met,
            });
            println!(
                "{:<24} {:>6} {:>10} {:>9} {:>9.1} {:>9.1} {:>9} {:>9}  ≥1 GB/s {}",
                id,
                passes,
                end,
                si(phase.records_per_sec()),
                phase.disk_mb_per_sec(),
                phase.payload_mb_per_sec(),
                dur(phase.percentile(0.50)),
                dur(phase.percentile(0.99)),
                pass(met),
            );
        }
        drop(topic);
        drop(log);
        dir.close()?;
    }
    Ok(())
}

/// Reads offsets `0..end` with `read_into`; returns the payload bytes (keys + values) seen.
fn read_pass(
    topic: &Topic,
    end: u64,
    max_bytes: usize,
    out: &mut Vec<StoredRecord>,
    latencies: &mut Vec<u64>,
) -> Result<u64> {
    let mut offset = 0;
    let mut payload = 0u64;
    while offset < end {
        out.clear();
        let t = Instant::now();
        topic.read_into(0, offset, max_bytes, out)?;
        latencies.push(t.elapsed().as_nanos() as u64);
        let Some(last) = out.last() else { bail!("read at offset {offset} of {end} returned nothing") };
        ensure!(out[0].offset == offset, "read at {offset} started at {}", out[0].offset);
        offset = last.offset + 1;
        payload +=
            out.iter().map(|r| (r.value.len() + r.key.as_ref().map_or(0, Bytes::len)) as u64).sum::<u64>();
    }
    out.clear();
    Ok(payload)
}

// ---------------------------------------------------------------------------------------------
// Helpers.

/// A file held in the page cache between timed append phases and deleted just before each.
///
/// Page-cache pages for a fresh file come from the kernel's free memory. On a VM with free page
/// reporting (Firecracker, this machine), memory that stayed free for about a second has been
/// handed back to the host, and the first touch of each such page costs a host fault: writes run
/// at ~0.4 GB/s instead of several GB/s. Without care, whichever phase runs after a pause pays
/// that and the phase right after it (reusing the pages the first one just freed) does not,
/// which skews the Weir/raw ratio either way, by up to 10x. So every timed phase starts right
/// after this file is deleted (its page-cache folios, warm and of the sizes a page-cache write
/// asks for, go back to the allocator), and the file is written again, from the pages the phase
/// freed, right after it. (Anonymous memory does not serve: freed 4 KiB pages do not come back
/// as the large folios ext4 asks for.)
struct Ballast {
    dir: tempfile::TempDir,
    size: usize,
    chunk: Vec<u8>,
}

impl Ballast {
    fn new(root: &Path, size: usize) -> Result<Ballast> {
        let ballast = Ballast { dir: tempfile::tempdir_in(root)?, size, chunk: vec![0x5a; 1 << 20] };
        ballast.acquire()?;
        Ok(ballast)
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("ballast")
    }

    fn acquire(&self) -> Result<()> {
        let mut file = File::create(self.path())?;
        let mut written = 0;
        while written < self.size {
            file.write_all(&self.chunk)?;
            written += self.chunk.len();
        }
        Ok(())
    }

    /// Runs `phase` with the ballast deleted; the phase must delete what it wrote before
    /// returning.
    fn released<T>(&self, phase: impl FnOnce() -> Result<T>) -> Result<T> {
        std::fs::remove_file(self.path())?;
        let out = phase()?;
        self.acquire()?;
        Ok(out)
    }
}

/// KiB of free memory this (virtual) machine has reported to its host so far, if it does that.
fn reported_kib() -> Option<u64> {
    let s = std::fs::read_to_string("/sys/module/page_reporting/parameters/reported_kib").ok()?;
    s.trim().parse().ok()
}

/// `len` bytes of xorshift output: nothing compresses or dedupes it.
fn pseudo_random(len: usize) -> Bytes {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
    Bytes::from(out)
}

/// Nearest-rank percentile of sorted samples.
fn percentile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Nanoseconds, in the unit that reads best.
fn dur(ns: u64) -> String {
    match ns {
        0..1_000 => format!("{ns}ns"),
        1_000..1_000_000 => format!("{:.1}µs", ns as f64 / 1e3),
        1_000_000..1_000_000_000 => format!("{:.2}ms", ns as f64 / 1e6),
        _ => format!("{:.2}s", ns as f64 / 1e9),
    }
}
