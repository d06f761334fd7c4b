//! What Weir's benchmarks share: argument parsing, where data goes, timing rounds, tables and
//! target reporting, and ([`access_events`]) the CSV events the window benchmarks aggregate. The
//! benchmarks themselves live beside this file, one per file; each prints what it measured.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

/// A benchmark's command line: `[--quick] [FILTER]`, and the value flags a benchmark names.
#[derive(Debug, Clone, Default)]
pub struct Args {
    /// Run a tiny version (a smoke test; figures not meaningful).
    pub quick: bool,
    /// Only rows whose id contains this.
    pub filter: Option<String>,
    /// The flags given with a value (see [`Args::parse_with`]), in order.
    pub values: Vec<(String, String)>,
}

impl Args {
    /// Parses the process's arguments; prints `usage` and exits on `--help`.
    ///
    /// # Errors
    ///
    /// An unknown flag or more than one filter.
    pub fn parse(usage: &str) -> Result<Args> {
        Args::parse_with(usage, &[])
    }

    /// As [`Args::parse`], also accepting the flags `value_flags` each with a value
    /// (`--flag VALUE` or `--flag=VALUE`), read with [`Args::value`].
    ///
    /// # Errors
    ///
    /// An unknown flag, a value flag without its value, or more than one filter.
    pub fn parse_with(usage: &str, value_flags: &[&str]) -> Result<Args> {
        let mut args = Args::default();
        let mut it = std::env::args().skip(1);
        while let Some(arg) = it.next() {
            let (flag, inline) = match arg.split_once('=') {
                Some((flag, value)) if flag.starts_with("--") => (flag, Some(value.to_owned())),
                _ => (arg.as_str(), None),
            };
            if value_flags.contains(&flag) {
                let value = match inline {
                    Some(value) => value,
                    None => it.next().with_context(|| format!("{flag} needs a value\n{usage}"))?,
                };
                args.values.push((flag.to_owned(), value));
                continue;
            }
            match arg.as_str() {
                // Cargo passes `--bench` to harness-less bench binaries.
                "--bench" => {}
                "--quick" => args.quick = true,
                "-h" | "--help" => {
                    println!("{usage}");
                    std::process::exit(0);
                }
                flag if flag.starts_with('-') => bail!("unknown flag {flag}\n{usage}"),
                filter => {
                    if args.filter.replace(filter.to_owned()).is_some() {
                        bail!("more than one filter given\n{usage}");
                    }
                }
            }
        }
        Ok(args)
    }

    /// The value given last to `flag` (one of the `value_flags` of [`Args::parse_with`]).
    pub fn value(&self, flag: &str) -> Option<&str> {
        self.values.iter().rev().find(|(f, _)| f == flag).map(|(_, v)| v.as_str())
    }

    /// Whether the row `id` is selected by the filter.
    pub fn selects(&self, id: &str) -> bool {
        self.filter.as_deref().is_none_or(|f| id.contains(f))
    }
}

/// A target a figure is held against, and what was measured.
#[derive(Debug, Clone)]
pub struct Target {
    /// The row and the target, e.g. `"append/v100/b10000/none: ≥ 2,000,000 records/s"`.
    pub what: String,
    /// The figure, as printed.
    pub measured: String,
    /// Whether the target was met.
    pub met: bool,
}

impl Target {
    /// Row `id`'s `rate` (events/s) held against a floor of `target`; `what` says what the row
    /// reads. The target, and its short verdict for the row's line in a table.
    pub fn min_rate(id: &str, rate: f64, target: f64, what: &str) -> (Target, String) {
        let met = rate >= target;
        let verdict = format!("≥{}M ev/s {}", target / 1e6, pass(met));
        let target = Target {
            what: format!("{id}: ≥ {} events/s {what}", group(target as u64)),
            measured: format!("{} events/s", si(rate)),
            met,
        };
        (target, verdict)
    }

    /// A ratio of wall times held against a ceiling of `max` (`what`: the row and the target;
    /// `label`: the verdict's words), with the same ratio of CPU times if known. The target, and
    /// its short verdict for the row's line in a table.
    pub fn max_ratio(
        what: String,
        label: &str,
        ratio: f64,
        cpu_ratio: Option<f64>,
        max: f64,
    ) -> (Target, String) {
        let met = ratio <= max;
        let verdict = format!("{label} {}", pass(met));
        let measured =
            format!("{ratio:.2} × wall, {} × CPU", cpu_ratio.map_or("n/a".to_owned(), |r| format!("{r:.2}")));
        (Target { what, measured, met }, verdict)
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {:<70} measured {}", pass(self.met), self.what, self.measured)
    }
}

/// `PASS` or `MISS`.
pub fn pass(met: bool) -> &'static str {
    if met { "PASS" } else { "MISS" }
}

/// The directory benchmark data goes to: `$WEIR_BENCH_DIR`, else `default` (created).
///
/// # Errors
///
/// The directory cannot be created.
pub fn bench_root(default: PathBuf) -> Result<PathBuf> {
    let root = std::env::var_os("WEIR_BENCH_DIR").map_or(default, PathBuf::from);
    std::fs::create_dir_all(&root).with_context(|| format!("create {}", root.display()))?;
    Ok(root.canonicalize()?)
}

/// The file system `path` is on, warning when it is in memory.
pub fn describe_fs(path: &Path) -> String {
    let Ok(mounts) = std::fs::read_to_string("/proc/self/mounts") else {
        return "file system unknown".to_owned();
    };
    let found = mounts
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let (source, target, fstype) = (fields.next()?, fields.next()?, fields.next()?);
            path.starts_with(target).then_some((target.len(), source, fstype))
        })
        .max_by_key(|(len, _, _)| *len);
    match found {
        Some((_, _, fstype)) if fstype == "tmpfs" || fstype == "ramfs" => {
            format!("{fstype}: WARNING, in memory; set WEIR_BENCH_DIR to a directory on a real disk")
        }
        Some((_, source, fstype)) => format!("{fstype} on {source}"),
        None => "file system unknown".to_owned(),
    }
}

/// The 1, 5 and 15 minute load averages.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".to_owned())
}

/// A rate with a k/M/G suffix.
pub fn si(v: f64) -> String {
    if v >= 1e9 {
        format!("{:.2}G", v / 1e9)
    } else if v >= 1e6 {
        format!("{:.2}M", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.1}k", v / 1e3)
    } else {
        format!("{v:.0}")
    }
}

/// Prints the targets and the closing line every benchmark ends with.
pub fn print_summary(targets: &[Target], started: std::time::Instant) {
    if !targets.is_empty() {
        println!();
        println!("targets");
        for t in targets {
            println!("  {t}");
        }
    }
    println!();
    println!("total time {:.1} s; load average at end: {}", started.elapsed().as_secs_f64(), load_average());
}

/// Median (the upper one of an even count) of some durations.
pub fn median(mut v: Vec<std::time::Duration>) -> Option<std::time::Duration> {
    v.sort_unstable();
    v.get(v.len() / 2).copied()
}

/// Seconds with three decimals.
pub fn secs(d: std::time::Duration) -> String {
    format!("{:.3}s", d.as_secs_f64())
}

/// An integer with thousands separators.
pub fn group(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Scheduler times summed over the process's threads (`/proc/self/task/*/schedstat`).
#[derive(Debug, Clone, Copy)]
pub struct Sched {
    /// Time on a CPU.
    pub cpu: std::time::Duration,
    /// Time runnable but waiting for a CPU: other load on the machine (the bench's busy threads,
    /// the runtime's workers or the main thread, never outnumber the CPUs).
    pub wait: std::time::Duration,
}

impl Sched {
    /// The times so far (threads that exited are not counted).
    pub fn now() -> Option<Sched> {
        let (mut cpu, mut wait) = (0u64, 0u64);
        for entry in std::fs::read_dir("/proc/self/task").ok()? {
            let Ok(entry) = entry else { continue };
            // A thread that exited between the listing and the read is skipped.
            let Ok(stat) = std::fs::read_to_string(entry.path().join("schedstat")) else { continue };
            let mut fields = stat.split_whitespace();
            cpu += fields.next()?.parse::<u64>().ok()?;
            wait += fields.next()?.parse::<u64>().ok()?;
        }
        Some(Sched { cpu: std::time::Duration::from_nanos(cpu), wait: std::time::Duration::from_nanos(wait) })
    }

    /// The times since `before`.
    pub fn since(before: Option<Sched>) -> Option<Sched> {
        let (before, now) = (before?, Sched::now()?);
        Some(Sched { cpu: now.cpu.saturating_sub(before.cpu), wait: now.wait.saturating_sub(before.wait) })
    }
}

/// How much a benchmark runs: `--quick` or full.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    /// Events in the input.
    pub events: usize,
    /// Timed runs of every row; each round runs every row once, the order reversed every other
    /// round, so drift on the machine falls on all rows alike.
    pub rounds: usize,
}

impl Budget {
    /// The full run: 10,000,000 events, 3 rounds.
    pub fn full() -> Budget {
        Budget { events: 10_000_000, rounds: 3 }
    }

    /// The smoke run: 200,000 events, 1 round.
    pub fn quick() -> Budget {
        Budget { events: 200_000, rounds: 1 }
    }

    /// [`Budget::quick`] under `--quick`, else [`Budget::full`].
    pub fn of(args: &Args) -> Budget {
        if args.quick { Budget::quick() } else { Budget::full() }
    }

    /// Runs `run(round, row)` for every row of `rows` in every round, the order reversed every
    /// other round; the results by row, in round order.
    ///
    /// # Errors
    ///
    /// The first error of `run`.
    pub fn run_rounds<S>(
        &self,
        rows: usize,
        mut run: impl FnMut(usize, usize) -> Result<S>,
    ) -> Result<Vec<Vec<S>>> {
        let mut samples: Vec<Vec<S>> = (0..rows).map(|_| Vec::new()).collect();
        for round in 0..self.rounds {
            let order: Vec<usize> =
                if round % 2 == 0 { (0..rows).collect() } else { (0..rows).rev().collect() };
            for i in order {
                samples[i].push(run(round, i)?);
            }
        }
        Ok(samples)
    }

    /// Says how the rounds run and what the table's figures are.
    pub fn print_rounds(&self) {
        println!(
            "  {} timed round(s); each runs every row once, in reverse order every other round. Figures are",
            self.rounds
        );
        println!("    medians over the rounds; `range` is the fastest and slowest run.");
        println!(
            "  cpu = CPU time of all the process's threads during the run (/proc/self/task/*/schedstat)."
        );
    }
}

/// The tokio runtime the benchmarks run pipelines on, one worker per CPU, and the number of
/// workers; prints `title` and the run's settings.
///
/// # Errors
///
/// The runtime cannot be built.
pub fn start(title: &str, args: &Args) -> Result<(tokio::runtime::Runtime, usize)> {
    let workers = std::thread::available_parallelism().map_or(2, usize::from);
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(workers).enable_all().build()?;
    let mode = if args.quick { "--quick (smoke run; figures not meaningful)" } else { "full" };
    let filter = args.filter.as_deref().unwrap_or("(none)");
    let cpus = std::thread::available_parallelism().map_or(0, usize::from);
    println!("{title}");
    println!("  mode: {mode}   filter: {filter}   cpus: {cpus}   tokio worker threads: {workers}");
    println!("  load average at start: {}", load_average());
    Ok((runtime, workers))
}

/// Fails if a job sent records to the dead letters or dropped late ones.
///
/// # Errors
///
/// Either happened.
pub fn check_report(report: &weir_runtime::JobReport) -> Result<()> {
    anyhow::ensure!(report.dead_letters == 0, "{} dead letters", report.dead_letters);
    anyhow::ensure!(report.late_records == 0, "{} late records", report.late_records);
    Ok(())
}

/// The figures of a row that every table shows: runs, wall time (median and range), events/s,
/// MB/s of input, CPU time and CPU time per event.
#[derive(Debug, Clone, Copy)]
pub struct Figures {
    /// Timed runs.
    pub runs: usize,
    /// Median wall time.
    pub wall: std::time::Duration,
    /// Fastest run.
    pub low: std::time::Duration,
    /// Slowest run.
    pub high: std::time::Duration,
    /// Median CPU time, if measured.
    pub cpu: Option<std::time::Duration>,
    /// Events per second at the median wall time.
    pub rate: f64,
    /// Input MB per second at the median wall time.
    pub mb: f64,
    /// Events per run.
    pub events: u64,
}

impl Figures {
    /// The figures of some runs over `events` events of `input_bytes` bytes; `None` without runs.
    pub fn of(
        walls: Vec<std::time::Duration>,
        cpus: Vec<std::time::Duration>,
        events: u64,
        input_bytes: u64,
    ) -> Option<Figures> {
        let runs = walls.len();
        let low = walls.iter().min().copied()?;
        let high = walls.iter().max().copied()?;
        let wall = median(walls)?;
        let secs = wall.as_secs_f64().max(1e-9);
        Some(Figures {
            runs,
            wall,
            low,
            high,
            cpu: median(cpus),
            rate: events as f64 / secs,
            mb: input_bytes as f64 / secs / 1e6,
            events,
        })
    }

    /// The column headers of [`Figures::columns`].
    pub fn header() -> String {
        format!(
            "{:>4} {:>8} {:>15} {:>9} {:>8} {:>7} {:>7}",
            "runs", "wall", "range", "events/s", "MB/s in", "cpu", "cpu/ev"
        )
    }

    /// The figures as table columns.
    pub fn columns(&self) -> String {
        format!(
            "{:>4} {:>8} {:>15} {:>9} {:>8.1} {:>7} {:>7}",
            self.runs,
            secs(self.wall),
            format!("{}–{}", secs(self.low), secs(self.high)),
            si(self.rate),
            self.mb,
            self.cpu.map_or("n/a".to_owned(), secs),
            self.cpu
                .map_or("n/a".to_owned(), |c| format!("{:.0}ns", c.as_nanos() as f64 / self.events as f64)),
        )
    }
}

/// Lists the runs other load on the machine slowed down noticeably: `runs` are (row id, round,
/// wall time, scheduler times) of every timed run.
pub fn print_disturbed(runs: impl IntoIterator<Item = (String, usize, std::time::Duration, Option<Sched>)>) {
    let mut disturbed = Vec::new();
    for (id, round, wall, sched) in runs {
        if let Some(sched) = sched
            && sched.wait.as_secs_f64() > 0.05 * wall.as_secs_f64()
            && sched.wait > std::time::Duration::from_millis(10)
        {
            disturbed.push(format!(
                "{id} round {round}: waited {} for a CPU in {} wall",
                secs(sched.wait),
                secs(wall)
            ));
        }
    }
    if disturbed.is_empty() {
        return;
    }
    println!();
    println!(
        "WARNING: other load on the machine slowed these runs (rq wait > 5 % of wall); rerun when idle:"
    );
    for d in disturbed {
        println!("  {d}");
    }
}

pub mod access_events {
    //! The access events the window benchmarks aggregate (`window_throughput`, `sql_throughput`,
    //! `compare_weir`): the CSV lines `ts,ip,method,path,status,bytes,latency_ms`, their seeded
    //! generator and the parser the typed pipelines and the hand loops use.
    //!
    //! The generator makes [`EVENTS_PER_MS`] lines per millisecond of event time from
    //! [`START_MS`], each 0 to [`DISORDER_MS`] ms older than its place in the sequence, so a
    //! bounded out-of-orderness of [`DISORDER`] loses none. The same seed every time: the same
    //! `n` gives the same lines in every benchmark.

    use std::fmt::Write as _;
    use std::fs::File;
    use std::io::{BufWriter, Write as _};
    use std::net::Ipv4Addr;
    use std::path::Path;
    use std::time::Duration;

    use std::collections::HashMap;

    use anyhow::{Context, Result};
    use weir_connectors::Line;
    use weir_runtime::{Stream, TumblingWindows, Watermarks, WindowResult};

    /// The CSV header line (without its newline).
    pub const CSV_HEADER: &str = "ts,ip,method,path,status,bytes,latency_ms";
    /// Event time of the first line: 2023-11-14T22:13:20Z.
    pub const START_MS: i64 = 1_700_000_000_000;
    /// Lines per millisecond of event time.
    pub const EVENTS_PER_MS: i64 = 10;
    /// How much older than its place in the sequence a line may be.
    pub const DISORDER: Duration = Duration::from_secs(2);
    /// [`DISORDER`] in milliseconds.
    pub const DISORDER_MS: u64 = 2_000;
    /// The tumbling window the benchmarks aggregate over.
    pub const WINDOW: Duration = Duration::from_secs(10);
    /// [`WINDOW`] in milliseconds.
    pub const WINDOW_MS: i64 = 10_000;

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
    const SEED: u64 = 0x5eed;

    /// An HTTP method.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
    #[serde(rename_all = "UPPERCASE")]
    pub enum Method {
        /// `GET`.
        Get,
        /// `POST`.
        Post,
        /// `PUT`.
        Put,
        /// `DELETE`.
        Delete,
        /// `HEAD`.
        Head,
    }

    /// A parsed access event. The path is checked but not kept: nothing reads it, and keeping it
    /// would cost an allocation per event for owned lines. (`FileSource::csv::<Event>` maps CSV
    /// columns to these fields by name; its `path` column has no field and is skipped.)
    #[derive(Debug, Clone, Copy, serde::Deserialize)]
    pub struct Event {
        /// Event time, epoch milliseconds.
        pub ts: i64,
        /// Client address (parsed as a real job would; the aggregations do not read it).
        pub ip: Ipv4Addr,
        /// Request method (parsed as a real job would; the aggregations do not read it).
        pub method: Method,
        /// HTTP status.
        pub status: u16,
        /// Response size.
        pub bytes: u64,
        /// Response time.
        pub latency_ms: u32,
    }

    /// A line that does not parse; names the field.
    #[derive(Debug)]
    pub struct ParseError(pub &'static str);

    impl std::fmt::Display for ParseError {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "bad or missing field `{}`", self.0)
        }
    }

    impl std::error::Error for ParseError {}

    /// Parses one CSV line (without its newline). (`#[inline]`: the benchmarks' hot loops call it
    /// from their own crates.)
    ///
    /// # Errors
    ///
    /// A missing, extra or malformed field, named.
    #[inline]
    pub fn parse(line: &str) -> Result<Event, ParseError> {
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
    use weir_testkit::Rng;

    /// The lines, one after the other, always from the same seed.
    pub struct Generator {
        rng: Rng,
        /// The index of the next line.
        next: u64,
    }

    impl Default for Generator {
        fn default() -> Self {
            Generator::new()
        }
    }

    impl Generator {
        /// A generator at the first line.
        pub fn new() -> Generator {
            Generator { rng: Rng(SEED), next: 0 }
        }

        /// Appends the next line, and its `\n`, to `text`.
        ///
        /// # Errors
        ///
        /// None in practice: writing to a `String` does not fail.
        pub fn push_line(&mut self, text: &mut String) -> std::fmt::Result {
            let rng = &mut self.rng;
            let place = START_MS + self.next as i64 / EVENTS_PER_MS;
            self.next += 1;
            let ts = place - (rng.next_u64() % (DISORDER_MS + 1)) as i64;
            let r = rng.next_u64();
            let ip = Ipv4Addr::new(10, (r >> 8) as u8, (r >> 16) as u8, (r >> 24) as u8);
            let method = match (r >> 32) % 100 {
                0..70 => "GET",
                70..88 => "POST",
                88..94 => "PUT",
                94..98 => "DELETE",
                _ => "HEAD",
            };
            let (path, with_id) = PATHS[((r >> 40) % PATHS.len() as u64) as usize];
            let r = rng.next_u64();
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
            write!(text, "{ts},{ip},{method},{path}")?;
            if with_id {
                write!(text, "{}", (r >> 48) % 100_000)?;
            }
            writeln!(text, ",{status},{bytes},{latency}")
        }
    }

    /// Prints the first lines of a benchmark's description of its input: `events` lines of
    /// `input_bytes` bytes; the caller goes on with the third.
    pub fn print_input(events: u64, input_bytes: u64) {
        println!(
            "  input: {} CSV lines `{CSV_HEADER}`, {:.1} MB ({:.1} B/line),",
            crate::group(events),
            input_bytes as f64 / 1e6,
            input_bytes as f64 / events as f64
        );
        println!(
            "    {EVENTS_PER_MS} per ms of event time ({:.0} s), each 0–{DISORDER_MS} ms older than its place in the",
            events as f64 / EVENTS_PER_MS as f64 / 1e3
        );
    }

    /// The first `n` lines, each ending in `\n` (no header).
    ///
    /// # Errors
    ///
    /// None in practice: writing to a `String` does not fail.
    pub fn generate(n: usize) -> Result<String> {
        let mut generator = Generator::new();
        let mut text = String::with_capacity(n * 64);
        for _ in 0..n {
            generator.push_line(&mut text)?;
        }
        Ok(text)
    }

    /// Writes [`CSV_HEADER`] and the first `n` lines to `path` (creating its directory), synced.
    ///
    /// # Errors
    ///
    /// What creating, writing or syncing the file fails with.
    pub fn write_csv(path: &Path, n: u64) -> Result<()> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        }
        let file = File::create(path).with_context(|| format!("create {}", path.display()))?;
        let mut out = BufWriter::with_capacity(1 << 20, file);
        writeln!(out, "{CSV_HEADER}")?;
        let mut generator = Generator::new();
        let mut line = String::with_capacity(128);
        for _ in 0..n {
            line.clear();
            generator.push_line(&mut line)?;
            out.write_all(line.as_bytes())?;
        }
        out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        Ok(())
    }

    /// (count, average latency, sum of bytes) of one status in one window.
    pub type Value = (u64, f64, u64);
    /// One window result of [`aggregate_windows`].
    pub type WindowOut = WindowResult<u16, Value>;

    /// The events in the lines of `FileSource::lines`: each file's first line (the header)
    /// dropped, the others parsed (a line that does not parse goes to the dead letters).
    pub fn parse_lines(lines: Stream<Line>) -> Stream<Event> {
        lines.filter(|l| l.line != 1).try_map(|l: &Line| parse(&l.text))
    }

    /// The job: `assign_timestamps` (bounded out-of-orderness [`DISORDER`]) → `key_by(status)` →
    /// `TumblingWindows::of(WINDOW)` → `aggregate((Count, Avg::of(latency), Sum::of(bytes)))`.
    pub fn aggregate_windows(events: Stream<Event>) -> Stream<WindowOut> {
        events
            .assign_timestamps(|e: &Event| e.ts, Watermarks::bounded_out_of_orderness(DISORDER))
            .key_by(|e: &Event| e.status)
            .window(TumblingWindows::of(WINDOW))
            .aggregate_with(|a| (a.count(), a.avg(|e| f64::from(e.latency_ms)), a.sum(|e| e.bytes)))
    }

    /// count, sum of latency_ms, sum of bytes.
    pub type Acc = (u64, u64, u64);

    /// The job's result computed by hand: per (status, window start), an [`Acc`].
    #[derive(Debug, Default)]
    pub struct Totals {
        /// The groups: (status, window start in epoch ms) → (count, sum of latency, sum of bytes).
        pub groups: HashMap<(u16, i64), Acc>,
        /// Lines that did not parse.
        pub bad: u64,
    }

    impl Totals {
        /// No lines yet.
        pub fn new() -> Totals {
            Totals::default()
        }

        /// Parses `line` and adds it to its group (or counts it as bad). (`#[inline]`: the hand
        /// loops call it from their own crates.)
        #[inline]
        pub fn add(&mut self, line: &str) {
            match parse(line) {
                Ok(e) => {
                    let start = e.ts - e.ts.rem_euclid(WINDOW_MS);
                    let acc = self.groups.entry((e.status, start)).or_default();
                    acc.0 += 1;
                    acc.1 += u64::from(e.latency_ms);
                    acc.2 += e.bytes;
                }
                Err(_) => self.bad += 1,
            }
        }
    }
}

pub mod checkpoints {
    //! What the benchmarks read of a checkpoint directory (`chk-<20 digits>/_manifest.json`, see
    //! `weir_runtime`'s `checkpoint` module) and of the checkpoint metrics in a registry's text.

    use std::path::Path;

    use anyhow::{Context, Result};

    /// The manifest's name in a checkpoint's directory.
    pub const MANIFEST: &str = "_manifest.json";

    /// The fields of a checkpoint's manifest the benchmarks read.
    #[derive(Debug, Clone, serde::Deserialize)]
    pub struct Manifest {
        /// The checkpoint's id (1 for a job's first checkpoint).
        pub id: u64,
        /// Whether it is the job's last checkpoint, taken when every source ended.
        pub finished: bool,
        /// Its part files.
        pub parts: Vec<Part>,
    }

    /// One part file of a checkpoint.
    #[derive(Debug, Clone, serde::Deserialize)]
    pub struct Part {
        /// The operator's id, e.g. `window#0`.
        pub uid: String,
        /// The subtask that wrote it.
        pub subtask: u32,
        /// Its length in bytes.
        pub size: u64,
    }

    impl Manifest {
        /// The bytes of all its part files.
        pub fn bytes(&self) -> u64 {
            self.parts.iter().map(|p| p.size).sum()
        }

        /// The bytes of the parts of operators whose id starts with `kind` (e.g. `"window"`).
        pub fn bytes_of(&self, kind: &str) -> u64 {
            self.parts.iter().filter(|p| p.uid.starts_with(kind)).map(|p| p.size).sum()
        }
    }

    /// The ids of the published checkpoints in `dir` (those with a manifest), ascending.
    ///
    /// # Errors
    ///
    /// `dir` cannot be listed.
    pub fn published(dir: &Path) -> Result<Vec<u64>> {
        let mut ids = Vec::new();
        for entry in std::fs::read_dir(dir).with_context(|| format!("list {}", dir.display()))? {
            let entry = entry?;
            let name = entry.file_name();
            let Some(digits) = name.to_str().and_then(|n| n.strip_prefix("chk-")) else { continue };
            if let Ok(id) = digits.parse::<u64>()
                && entry.path().join(MANIFEST).is_file()
            {
                ids.push(id);
            }
        }
        ids.sort_unstable();
        Ok(ids)
    }

    /// The manifest of checkpoint `id` in `dir`.
    ///
    /// # Errors
    ///
    /// It cannot be read or parsed.
    pub fn manifest(dir: &Path, id: u64) -> Result<Manifest> {
        let path = dir.join(format!("chk-{id:020}")).join(MANIFEST);
        let bytes = std::fs::read(&path).with_context(|| format!("read {}", path.display()))?;
        serde_json::from_slice(&bytes).with_context(|| format!("parse {}", path.display()))
    }

    /// The manifest of the newest published checkpoint in `dir`, if any.
    ///
    /// # Errors
    ///
    /// `dir` cannot be listed, or the manifest cannot be read or parsed.
    pub fn latest(dir: &Path) -> Result<Option<Manifest>> {
        match published(dir)?.last() {
            Some(&id) => manifest(dir, id).map(Some),
            None => Ok(None),
        }
    }

    /// The sum over its label sets of the metric `name` (a counter, a gauge, or a histogram's
    /// `_sum` / `_count`) in a registry's text (`Metrics::encode`); `None` if it is absent.
    pub fn metric(text: &str, name: &str) -> Option<f64> {
        let mut found = None;
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let Some(rest) = line.strip_prefix(name) else { continue };
            if !(rest.starts_with('{') || rest.starts_with(' ')) {
                continue;
            }
            if let Some(value) = rest.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) {
                *found.get_or_insert(0.0) += value;
            }
        }
        found
    }
}
