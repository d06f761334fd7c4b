//! `compare_weir`: Weir's side of the side-by-side comparison in `benches/compare/` (run by
//! `benches/compare/run.sh`, not in CI). Two modes:
//!
//! ```text
//! compare_weir --generate FILE [--events N]                   # write the input CSV and exit
//! compare_weir --input PATH_OR_GLOB --out FILE [--parallelism P] [--batch B]
//! ```
//!
//! `--generate` writes the same CSV as `window_throughput` (the generator and the `parse`
//! function are `weir_benches::access_events`, seed and all): a header `ts,ip,method,path,status,
//! bytes,latency_ms`, then `N` lines (default 10,000,000), ten per millisecond of event time from
//! 2023-11-14T22:13:20Z, each up to 2 s older than its place in the sequence.
//!
//! `--input` runs `FileSource::lines` → `filter` (not the header) → `try_map(parse)` →
//! `assign_timestamps` (bounded out-of-orderness 2 s) → `key_by(status)` →
//! `TumblingWindows::of(10 s)` → `aggregate((Count, Avg::of(latency), Sum::of(bytes)))` → a CSV
//! file (`FileSink::csv(..).single_file()`): `status,window_start,window_end,count,avg_latency,
//! sum_bytes`, epoch milliseconds, rows in the order the windows fired. Parallelism default 2.
//! `FileSource` splits its input by file: with one file one subtask reads and parses, and the
//! window operator runs on `P` subtasks. It prints the wall time from the start of `main` and of
//! the pipeline alone, and fails (non-zero exit) on dead letters or late records.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail, ensure};
use weir_benches::access_events::{WindowOut, aggregate_windows, parse_lines, write_csv};
use weir_connectors::{FileSink, FileSource};
use weir_runtime::Pipeline;

const USAGE: &str = "usage: compare_weir --generate FILE [--events N]\n       \
     compare_weir --input PATH_OR_GLOB --out FILE [--parallelism P] [--batch B]";

#[derive(Debug, Default)]
struct Args {
    generate: Option<PathBuf>,
    events: Option<u64>,
    input: Option<String>,
    out: Option<PathBuf>,
    parallelism: Option<usize>,
    batch: Option<usize>,
}

impl Args {
    fn parse() -> Result<Args> {
        let mut args = Args::default();
        let mut it = std::env::args().skip(1);
        while let Some(arg) = it.next() {
            let mut value = || it.next().with_context(|| format!("{arg} needs a value\n{USAGE}"));
            match arg.as_str() {
                // Cargo passes `--bench` to harness-less bench binaries.
                "--bench" => {}
                "--generate" => args.generate = Some(value()?.into()),
                "--events" => args.events = Some(value()?.replace('_', "").parse()?),
                "--input" => args.input = Some(value()?),
                "--out" => args.out = Some(value()?.into()),
                "--parallelism" => args.parallelism = Some(value()?.parse()?),
                "--batch" => args.batch = Some(value()?.parse()?),
                "-h" | "--help" => {
                    println!("{USAGE}");
                    std::process::exit(0);
                }
                other => bail!("unexpected argument {other}\n{USAGE}"),
            }
        }
        Ok(args)
    }
}

fn main() -> Result<()> {
    let started = Instant::now();
    let args = Args::parse()?;
    match (&args.generate, &args.input) {
        (Some(path), None) => {
            let events = args.events.unwrap_or(10_000_000);
            write_csv(path, events)?;
            println!(
                "wrote {events} events to {} in {:.2} s",
                path.display(),
                started.elapsed().as_secs_f64()
            );
            Ok(())
        }
        (None, Some(input)) => {
            let out = args.out.clone().with_context(|| format!("--input needs --out\n{USAGE}"))?;
            run(input, out, args.parallelism.unwrap_or(2), args.batch, started)
        }
        _ => bail!("give either --generate or --input\n{USAGE}"),
    }
}

// ---------------------------------------------------------------------------------------------
// The pipeline.

/// One result row, flat for the CSV sink.
#[derive(Debug, Clone, serde::Serialize)]
struct OutRow {
    status: u16,
    window_start: i64,
    window_end: i64,
    count: u64,
    avg_latency: f64,
    sum_bytes: u64,
}

fn run(input: &str, out: PathBuf, parallelism: usize, batch: Option<usize>, started: Instant) -> Result<()> {
    let workers = std::thread::available_parallelism().map_or(2, usize::from);
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(workers).enable_all().build()?;
    let pipeline_started = Instant::now();
    let p = Pipeline::builder("compare_weir").parallelism(parallelism).handle_signals(false).build()?;
    let mut source = FileSource::lines(input);
    if let Some(batch) = batch {
        source = source.batch_size(batch);
    }
    aggregate_windows(parse_lines(p.source(source)))
        .map(|r: WindowOut| OutRow {
            status: r.key,
            window_start: r.window_start,
            window_end: r.window_end,
            count: r.value.0,
            avg_latency: r.value.1,
            sum_bytes: r.value.2,
        })
        .sink(FileSink::csv(&out).single_file());
    let report = runtime.block_on(p.run())?;
    let pipeline = pipeline_started.elapsed();
    ensure!(report.dead_letters == 0, "{} dead letters (lines that did not parse)", report.dead_letters);
    ensure!(report.late_records == 0, "{} late records", report.late_records);
    println!(
        "weir: {input} -> {} (parallelism {parallelism}, {workers} tokio workers): pipeline {:.3} s, \
         wall since start {:.3} s",
        out.display(),
        pipeline.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
