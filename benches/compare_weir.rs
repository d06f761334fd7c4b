//! `compare_weir`: Weir's side of the side-by-side comparison in `benches/compare/` (run by
//! `benches/compare/run.sh`, not in CI). Two modes:
//!
//! ```text
//! compare_weir --generate FILE [--events N]                   # write the input CSV and exit
//! compare_weir --input PATH_OR_GLOB --out FILE [--parallelism P] [--batch B]
//! ```
//!
//! `--generate` writes the same CSV as `window_throughput` (the generator and the `parse`
//! function are copies of that bench's, seed and all): a header `ts,ip,method,path,status,bytes,
//! latency_ms`, then `N` lines (default 10,000,000), ten per millisecond of event time from
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

use std::fs::File;
use std::io::{BufWriter, Write as _};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use weir_connectors::{FileSink, FileSource};
use weir_runtime::{Avg, Count, Pipeline, Sum, TumblingWindows, Watermarks, WindowResult};

const USAGE: &str = "usage: compare_weir --generate FILE [--events N]\n       \
     compare_weir --input PATH_OR_GLOB --out FILE [--parallelism P] [--batch B]";

const WINDOW: Duration = Duration::from_secs(10);
const DISORDER: Duration = Duration::from_secs(2);
const DISORDER_MS: u64 = 2_000;
/// Event time of the first line: 2023-11-14T22:13:20Z.
const START_MS: i64 = 1_700_000_000_000;
const EVENTS_PER_MS: i64 = 10;
const CSV_HEADER: &str = "ts,ip,method,path,status,bytes,latency_ms";

/// Status codes and their weight per mille.
const STATUSES: [(u16, u64); 8] =
    [(200, 800), (304, 60), (404, 50), (500, 25), (301, 20), (400, 20), (401, 15), (503, 10)];
const PATHS: [(&str, bool); 6] = [
    ("/api/v1/items/", true),
    ("/api/v1/users/", true),
    ("/api/v1/orders/", true),
    ("/static/app.", true),
    ("/healthz", false),
    ("/", false),
];

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
            generate(path, events)?;
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
    p.source(source)
        .filter(|l| l.line != 1)
        .try_map(|l: &weir_connectors::Line| parse(&l.text))
        .assign_timestamps(|e: &Event| e.ts, Watermarks::bounded_out_of_orderness(DISORDER))
        .key_by(|e: &Event| e.status)
        .window(TumblingWindows::of(WINDOW))
        .aggregate((Count, Avg::of(|e: &Event| f64::from(e.latency_ms)), Sum::of(|e: &Event| e.bytes)))
        .map(|r: WindowResult<u16, (u64, Option<f64>, u64)>| OutRow {
            status: r.key,
            window_start: r.window_start,
            window_end: r.window_end,
            count: r.value.0,
            avg_latency: r.value.1.unwrap_or(f64::NAN),
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

// ---------------------------------------------------------------------------------------------
// The events and their parsing: copies of `window_throughput.rs`'s.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Method {
    Get,
    Post,
    Put,
    Delete,
    Head,
}

/// A parsed access event (the path is checked but not kept, as in `window_throughput`).
#[derive(Debug, Clone, Copy)]
struct Event {
    ts: i64,
    #[expect(dead_code, reason = "parsed as a real job would; the aggregation does not read it")]
    ip: Ipv4Addr,
    #[expect(dead_code, reason = "parsed as a real job would; the aggregation does not read it")]
    method: Method,
    status: u16,
    bytes: u64,
    latency_ms: u32,
}

/// A line that does not parse; names the field.
#[derive(Debug)]
struct ParseError(&'static str);

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "bad or missing field `{}`", self.0)
    }
}

fn parse(line: &str) -> Result<Event, ParseError> {
    let mut fields = line.split(',');
    let mut field = |name: &'static str| fields.next().ok_or(ParseError(name));
    let ts = field("ts")?.parse().map_err(|_| ParseError("ts"))?;
    let ip = field("ip")?.parse().map_err(|_| ParseError("ip"))?;
    let method = match field("method")? {
        "GET" => Method::Get,
        "POST" => Method::Post,
        "PUT" => Method::Put,
        "DELETE" => Method::Delete,
        "HEAD" => Method::Head,
        _ => return Err(ParseError("method")),
    };
    if !field("path")?.starts_with('/') {
        return Err(ParseError("path"));
    }
    let status = field("status")?.parse().map_err(|_| ParseError("status"))?;
    if !(100..=599).contains(&status) {
        return Err(ParseError("status"));
    }
    let bytes = field("bytes")?.parse().map_err(|_| ParseError("bytes"))?;
    let latency_ms = field("latency_ms")?.parse().map_err(|_| ParseError("latency_ms"))?;
    if fields.next().is_some() {
        return Err(ParseError("end of line"));
    }
    Ok(Event { ts, ip, method, status, bytes, latency_ms })
}

/// splitmix64: deterministic, and good enough to spread the fields.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// Writes the header and `n` lines to `path`: the lines `window_throughput`'s `generate` makes.
fn generate(path: &PathBuf, n: u64) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    }
    let file = File::create(path).with_context(|| format!("create {}", path.display()))?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    writeln!(out, "{CSV_HEADER}")?;
    let mut rng = Rng(0x5eed);
    for i in 0..n {
        let place = START_MS + i as i64 / EVENTS_PER_MS;
        let ts = place - (rng.next() % (DISORDER_MS + 1)) as i64;
        let r = rng.next();
        let ip = Ipv4Addr::new(10, (r >> 8) as u8, (r >> 16) as u8, (r >> 24) as u8);
        let method = match (r >> 32) % 100 {
            0..70 => "GET",
            70..88 => "POST",
            88..94 => "PUT",
            94..98 => "DELETE",
            _ => "HEAD",
        };
        let (path, with_id) = PATHS[((r >> 40) % PATHS.len() as u64) as usize];
        let r = rng.next();
        let mut pick = r % 1000;
        let mut status = STATUSES[0].0;
        for (code, weight) in STATUSES {
            if pick < weight {
                status = code;
                break;
            }
            pick -= weight;
        }
        let bytes = 200 + (r >> 10) % 60_000;
        let u = (r >> 30) % 1000;
        let latency = 1 + u * u / 1000 + (r >> 40) % 20;
        write!(out, "{ts},{ip},{method},{path}")?;
        if with_id {
            write!(out, "{}", (r >> 48) % 100_000)?;
        }
        writeln!(out, ",{status},{bytes},{latency}")?;
    }
    out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    Ok(())
}
