//! `sql_throughput`: the 10-second tumbling `count(*), avg(latency_ms), sum(bytes) GROUP BY
//! status` over 10 million CSV access events in one file, three ways in the same run: streaming
//! SQL (`weir-sql`), the same pipeline in Weir's typed API, and DuckDB's batch query when a
//! Python with `duckdb` is available.
//!
//! ```text
//! cargo bench -p weir-benches --bench sql_throughput                  # full run, 10,000,000 events
//! cargo bench -p weir-benches --bench sql_throughput -- --quick       # smoke run, 200,000 events
//! cargo bench -p weir-benches --bench sql_throughput -- sql           # only rows whose id contains this
//! cargo bench -p weir-benches --bench sql_throughput -- --duckdb-python PATH
//! ```
//!
//! The input is the lines of `weir_benches::access_events` (the same generator and seed as
//! `window_throughput` and `compare_weir`), written untimed with a header to one CSV file in a
//! temporary directory (under `WEIR_BENCH_DIR` if set, else Cargo's `CARGO_TARGET_TMPDIR`), so
//! every row reads it from the page cache. Rows:
//!
//! - `sql/p<P>`: `CREATE SOURCE events (ts BIGINT, ip TEXT, method TEXT, path TEXT, status INT,
//!   bytes BIGINT, latency_ms INT, t AS to_timestamp_millis(ts), WATERMARK FOR t AS t - INTERVAL
//!   '2' SECOND) WITH (connector = 'file', path = …, format = 'csv', header = 'true')`
//!   (registered once), then per run `StreamContext::sql` of `SELECT window_start, status,
//!   count(*) AS n, avg(latency_ms) AS avg_ms, sum(bytes) AS total FROM events GROUP BY
//!   tumble(t, INTERVAL '10' SECOND), status`, `SqlStream::build` into a pipeline of
//!   parallelism P and `run()`: the wall time covers planning, building and running.
//! - `typed/p<P>`: `FileSource::lines` → `filter` (the header) → `try_map(parse)` →
//!   `assign_timestamps` (bounded out-of-orderness 2 s) → `key_by(status)` →
//!   `TumblingWindows::of(10 s)` → `aggregate((Count, Avg::of(latency), Sum::of(bytes)))`.
//! - `duckdb`: `benches/compare/duckdb_agg.py` (one `COPY (SELECT … FROM read_csv(…) GROUP BY
//!   ALL) TO …`, DuckDB's default threads), run by `benches/compare/.venv/duckdb/bin/python`
//!   (made by `benches/compare/run.sh`) or by `--duckdb-python PATH`; skipped, saying why, when
//!   neither has `duckdb`. Its time is the script's own (interpreter start and import excluded).
//!
//! Both Weir rows end in a `CollectSink`. Before the timed rounds, one untimed run of each row
//! is verified: the typed results against a hand-written loop over the file (exact), the SQL
//! results against the typed ones, DuckDB's against the typed ones (counts and sums exact,
//! averages within 1e-9). Every timed run is checked against the hand loop in the same way and
//! for no dead letters and no late records. Any difference exits non-zero. With one input file
//! one source subtask reads and decodes at any P (`FileSource` splits by file); P is the
//! parallelism of the window aggregation.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{Float64Type, Int32Type, Int64Type, TimestampMillisecondType};
use tokio::runtime::Runtime;
use weir_benches::access_events::{self, Totals, WindowOut, print_input};
use weir_benches::{
    Args, Budget, Figures, Sched, Target, bench_root, check_report, describe_fs, print_disturbed,
    print_summary, start,
};
use weir_connectors::FileSource;
use weir_runtime::{CollectSink, Pipeline};
use weir_sql::StreamContext;
use weir_sql::ddl::{Statement, parse_statement};

const USAGE: &str = "usage: sql_throughput [--quick] [--duckdb-python PATH] [FILTER]   \
     (FILTER: substring of row ids, e.g. sql/p2)";

/// The targets the figures are held against.
const TARGET_SQL_EVENTS_PER_SEC: f64 = 1_000_000.0;
const TARGET_TYPED_RATIO: f64 = 1.5;

/// The main row first.
const PARALLELISMS: [usize; 2] = [2, 1];

const QUERY: &str = "SELECT window_start, status, count(*) AS n, avg(latency_ms) AS avg_ms, \
     sum(bytes) AS total FROM events GROUP BY tumble(t, INTERVAL '10' SECOND), status";

/// How close the averages of two rows must be.
const AVG_TOLERANCE: f64 = 1e-9;

/// The Python of `benches/compare/run.sh`'s DuckDB venv, and the query it runs.
const DUCKDB_VENV_PYTHON: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/compare/.venv/duckdb/bin/python");
const DUCKDB_SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/compare/duckdb_agg.py");

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Row {
    Typed(usize),
    Sql(usize),
    DuckDb,
}

impl Row {
    fn id(self) -> String {
        match self {
            Row::Typed(p) => format!("typed/p{p}"),
            Row::Sql(p) => format!("sql/p{p}"),
            Row::DuckDb => "duckdb".to_owned(),
        }
    }
}

/// The selected rows: the selected SQL rows with the typed rows of their parallelism (their
/// ratio needs them), the selected typed rows, and DuckDB.
fn select_rows(args: &Args) -> Vec<Row> {
    let mut rows = Vec::new();
    for p in PARALLELISMS {
        if args.selects(&Row::Typed(p).id()) || args.selects(&Row::Sql(p).id()) {
            rows.push(Row::Typed(p));
        }
        if args.selects(&Row::Sql(p).id()) {
            rows.push(Row::Sql(p));
        }
    }
    if args.selects(&Row::DuckDb.id()) {
        rows.push(Row::DuckDb);
    }
    rows
}

/// A result row: (status, window start in epoch ms) → (count, average latency, sum of bytes).
type Results = BTreeMap<(u16, i64), (u64, f64, u64)>;

/// What one run measured.
struct Sample {
    wall: Duration,
    /// CPU time of the process's threads (none for DuckDB, another process).
    sched: Option<Sched>,
}

fn main() -> Result<()> {
    let args = Args::parse_with(USAGE, &["--duckdb-python"])?;
    let budget = Budget::of(&args);
    let mut rows = select_rows(&args);
    if rows.is_empty() {
        bail!("no row id contains {:?}\n{USAGE}", args.filter.as_deref().unwrap_or(""));
    }
    let (runtime, _) = start("weir-sql: streaming SQL vs the typed API (vs DuckDB) benchmark", &args)?;
    let started = Instant::now();

    // The input, written untimed, and the expected result from a hand loop over it.
    let generated = Instant::now();
    let root = bench_root(PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("weir-sql-bench"))?;
    let dir = tempfile::tempdir_in(root)?;
    let path = dir.path().join("events.csv");
    access_events::write_csv(&path, budget.events as u64)?;
    let path_text = path.to_str().context("the bench directory's path is not UTF-8")?.to_owned();
    let input_bytes = std::fs::metadata(&path)?.len();
    let expected = hand_file(&path)?;
    let generated = generated.elapsed();
    ensure!(expected.bad == 0, "{} generated lines do not parse", expected.bad);
    let events = expected.groups.values().map(|a| a.0).sum::<u64>();
    ensure!(events == budget.events as u64, "the file holds {events} events, not {}", budget.events);
    let reference: Results = expected
        .groups
        .iter()
        .map(|(&k, &(count, latency, bytes))| (k, (count, latency as f64 / count as f64, bytes)))
        .collect();

    let duckdb = if rows.contains(&Row::DuckDb) { find_duckdb(&args)? } else { Err("not selected".into()) };

    let mut ctx = StreamContext::new();
    let ddl = format!(
        "CREATE SOURCE events (ts BIGINT, ip TEXT, method TEXT, path TEXT, status INT, bytes BIGINT, \
         latency_ms INT, t AS to_timestamp_millis(ts), WATERMARK FOR t AS t - INTERVAL '2' SECOND) \
         WITH (connector = 'file', path = '{path_text}', format = 'csv', header = 'true')"
    );
    let Statement::Source(def) = parse_statement(&ddl)? else { bail!("not a CREATE SOURCE: {ddl}") };
    runtime.block_on(ctx.register_source(&def))?;
    let plan = runtime.block_on(ctx.explain(QUERY, PARALLELISMS[0]))?;

    print_input(events, input_bytes);
    println!(
        "    sequence (up to 2 s of disorder), after a header, in one file written and read by the hand"
    );
    println!(
        "    loop untimed in {:.1} s (so the rows read it from the page cache): {} ({})",
        generated.as_secs_f64(),
        path.display(),
        describe_fs(dir.path())
    );
    println!("    expected result: {} rows (status × 10 s window), from the hand loop", reference.len());
    println!("  sql/p<P>: {ddl}");
    println!("    registered once; per run: plan the query below, build, run at parallelism P:");
    println!("    {QUERY}");
    println!("    its streaming plan at p{}:", PARALLELISMS[0]);
    for line in plan.lines() {
        println!("      {line}");
    }
    println!(
        "  typed/p<P>: FileSource::lines -> filter(not the header) -> try_map(parse) -> assign_timestamps("
    );
    println!(
        "    bounded out-of-orderness 2 s) -> key_by(status) -> TumblingWindows::of(10 s) -> aggregate((Count,"
    );
    println!("    Avg::of(latency), Sum::of(bytes))), parallelism P.");
    println!(
        "    Both Weir rows end in a CollectSink; the wall time covers planning (SQL), building and run()."
    );
    println!("    One file: one source subtask reads and decodes at any P; P is the window aggregation's.");
    match &duckdb {
        Ok(py) => {
            println!("  duckdb: {} {DUCKDB_SCRIPT}", py.python);
            println!(
                "    (duckdb {}): a batch query, DuckDB's default threads; its time is the script's own",
                py.version
            );
            println!("    (interpreter start and import excluded).");
        }
        Err(why) => {
            rows.retain(|r| *r != Row::DuckDb);
            println!("  duckdb: skipped: {why}");
        }
    }
    budget.print_rounds();
    println!("  sql/typed = the SQL row's median wall time / the typed row's at the same P; cpu = the same");
    println!("    ratio of CPU time.");

    // Verification: one untimed run of each row, SQL against typed, DuckDB against typed.
    println!();
    let mut typed_results: BTreeMap<usize, Results> = BTreeMap::new();
    for &row in &rows {
        let (_, got) = run_row(&runtime, &ctx, &path_text, duckdb.as_ref().ok(), dir.path(), row)
            .with_context(|| format!("verification run of {}", row.id()))?;
        let typed = match row {
            Row::Typed(_) => None,
            Row::Sql(p) => typed_results.get_key_value(&p),
            Row::DuckDb => {
                typed_results.get_key_value(&PARALLELISMS[0]).or_else(|| typed_results.iter().next())
            }
        };
        let (against, want) = match typed {
            Some((p, typed)) => (Row::Typed(*p).id(), typed),
            None => ("the hand loop".to_owned(), &reference),
        };
        let agreement = compare(&row.id(), &got, &against, want)?;
        println!("verification of {}: {agreement}", row.id());
        if let Row::Typed(p) = row {
            typed_results.insert(p, got);
        }
    }

    let samples = budget.run_rounds(rows.len(), |round, i| {
        let row = rows[i];
        let (sample, got) = run_row(&runtime, &ctx, &path_text, duckdb.as_ref().ok(), dir.path(), row)
            .with_context(|| format!("{}: round {round}", row.id()))?;
        compare(&row.id(), &got, "the hand loop", &reference)
            .with_context(|| format!("{}: round {round}", row.id()))?;
        Ok(sample)
    })?;

    let mut targets = Vec::new();
    let figures: Vec<Option<Figures>> = samples
        .iter()
        .map(|s| {
            let walls = s.iter().map(|s| s.wall).collect();
            let cpus = s.iter().filter_map(|s| Some(s.sched?.cpu)).collect();
            Figures::of(walls, cpus, events, input_bytes)
        })
        .collect();
    print_table(&rows, &figures, &mut targets);
    print_disturbed(rows.iter().zip(&samples).flat_map(|(row, s)| {
        s.iter().enumerate().map(|(round, sample)| (row.id(), round, sample.wall, sample.sched))
    }));
    print_summary(&targets, started);
    Ok(())
}

/// The hand loop over the CSV file (its header skipped): the reference result.
fn hand_file(path: &Path) -> Result<Totals> {
    let mut totals = Totals::new();
    let file = File::open(path).with_context(|| format!("open {}", path.display()))?;
    for (i, line) in BufReader::with_capacity(64 << 10, file).lines().enumerate() {
        let line = line?;
        if i > 0 {
            totals.add(&line);
        }
    }
    Ok(totals)
}

/// Runs `row` once: its sample and its results.
fn run_row(
    runtime: &Runtime,
    ctx: &StreamContext,
    path: &str,
    duckdb: Option<&DuckDb>,
    dir: &Path,
    row: Row,
) -> Result<(Sample, Results)> {
    let before = Sched::now();
    let start = Instant::now();
    let (wall, results) = match row {
        Row::Typed(parallelism) => {
            let p = Pipeline::builder("sql_throughput-typed")
                .parallelism(parallelism)
                .handle_signals(false)
                .build()?;
            let out = CollectSink::new();
            access_events::aggregate_windows(access_events::parse_lines(p.source(FileSource::lines(path))))
                .sink(out.clone());
            let report = runtime.block_on(p.run())?;
            let wall = start.elapsed();
            check_report(&report)?;
            (wall, typed_results(out.take())?)
        }
        Row::Sql(parallelism) => {
            let out = CollectSink::new();
            let report = runtime.block_on(async {
                let p = Pipeline::builder("sql_throughput-sql")
                    .parallelism(parallelism)
                    .handle_signals(false)
                    .build()?;
                ctx.sql(QUERY).await?.build(&p)?.sink(out.clone());
                anyhow::Ok(p.run().await?)
            })?;
            let wall = start.elapsed();
            check_report(&report)?;
            (wall, sql_results(&out.take())?)
        }
        Row::DuckDb => {
            let py = duckdb.context("no Python with duckdb")?;
            let (wall, results) = py.run(path, dir)?;
            return Ok((Sample { wall, sched: None }, results));
        }
    };
    Ok((Sample { wall, sched: Sched::since(before) }, results))
}

/// The typed pipeline's window results as [`Results`]; checks window ends and duplicates.
fn typed_results(out: Vec<WindowOut>) -> Result<Results> {
    let mut results = Results::new();
    for r in out {
        ensure!(
            r.window_end == r.window_start + access_events::WINDOW_MS,
            "window [{}, {}) is not 10 s long",
            r.window_start,
            r.window_end
        );
        let row = r.value;
        ensure!(
            results.insert((r.key, r.window_start), row).is_none(),
            "two results for {:?}",
            (r.key, r.window_start)
        );
    }
    Ok(results)
}

/// The SQL query's record batches as [`Results`]; checks the column types and duplicates.
fn sql_results(batches: &[RecordBatch]) -> Result<Results> {
    fn column<'a>(b: &'a RecordBatch, name: &str) -> Result<&'a dyn Array> {
        Ok(b.column_by_name(name).with_context(|| format!("no column {name} in {}", b.schema()))?.as_ref())
    }
    let mut results = Results::new();
    for b in batches {
        let ws = column(b, "window_start")?;
        let status = column(b, "status")?;
        let n = column(b, "n")?;
        let avg = column(b, "avg_ms")?;
        let total = column(b, "total")?;
        let wrong = |name: &str, a: &dyn Array| format!("column {name} is {}", a.data_type());
        let ws =
            ws.as_primitive_opt::<TimestampMillisecondType>().with_context(|| wrong("window_start", ws))?;
        let status = status.as_primitive_opt::<Int32Type>().with_context(|| wrong("status", status))?;
        let n = n.as_primitive_opt::<Int64Type>().with_context(|| wrong("n", n))?;
        let avg = avg.as_primitive_opt::<Float64Type>().with_context(|| wrong("avg_ms", avg))?;
        let total = total.as_primitive_opt::<Int64Type>().with_context(|| wrong("total", total))?;
        for i in 0..b.num_rows() {
            ensure!(
                [ws.is_null(i), status.is_null(i), n.is_null(i), avg.is_null(i), total.is_null(i)]
                    .iter()
                    .all(|null| !null),
                "a null in result row {i}"
            );
            let key = (u16::try_from(status.value(i))?, ws.value(i));
            let row = (u64::try_from(n.value(i))?, avg.value(i), u64::try_from(total.value(i))?);
            ensure!(results.insert(key, row).is_none(), "two results for {key:?}");
        }
    }
    Ok(results)
}

/// Compares `got` (of `id`) with `want` (of `against`): the same keys, counts and sums exact,
/// averages within [`AVG_TOLERANCE`]. What agrees, or an error listing the first differences.
fn compare(id: &str, got: &Results, against: &str, want: &Results) -> Result<String> {
    let mut differing = Vec::new();
    let mut max_avg_diff = 0.0f64;
    let keys: std::collections::BTreeSet<_> = got.keys().chain(want.keys()).collect();
    for &key in &keys {
        match (got.get(key), want.get(key)) {
            (Some(g), Some(w)) if g.0 == w.0 && g.2 == w.2 && (g.1 - w.1).abs() <= AVG_TOLERANCE => {
                max_avg_diff = max_avg_diff.max((g.1 - w.1).abs());
            }
            (g, w) => {
                differing.push(format!("status {} window {}: {id} {g:?}, {against} {w:?}", key.0, key.1))
            }
        }
    }
    if differing.is_empty() {
        return Ok(format!(
            "{} rows equal {against}'s (count and sum of bytes exact, avg latency within {AVG_TOLERANCE:e}, \
             largest difference {max_avg_diff:e}): OK",
            got.len()
        ));
    }
    println!("{id} FAILED against {against}: {} of {} rows differ", differing.len(), keys.len());
    for d in differing.iter().take(10) {
        println!("  {d}");
    }
    bail!("{id}: {} of {} result rows differ from {against}'s", differing.len(), keys.len())
}

// ---------------------------------------------------------------------------------------------
// DuckDB.

/// A Python that imports `duckdb`.
struct DuckDb {
    python: String,
    version: String,
}

/// The Python to run DuckDB with: `--duckdb-python` (an error if it cannot import duckdb), else
/// `benches/compare/.venv/duckdb/bin/python` if it exists and can; `Err(why)` when skipped.
fn find_duckdb(args: &Args) -> Result<std::result::Result<DuckDb, String>> {
    let (python, given) = match args.value("--duckdb-python") {
        Some(p) => (p.to_owned(), true),
        None => (DUCKDB_VENV_PYTHON.to_owned(), false),
    };
    if !given && !Path::new(&python).exists() {
        return Ok(Err(format!(
            "{python} does not exist (benches/compare/run.sh makes it; or pass --duckdb-python PATH)"
        )));
    }
    let probe = Command::new(&python).args(["-c", "import duckdb; print(duckdb.__version__)"]).output();
    let why = match probe {
        Ok(out) if out.status.success() => {
            let version = String::from_utf8_lossy(&out.stdout).trim().to_owned();
            return Ok(Ok(DuckDb { python, version }));
        }
        Ok(out) => format!(
            "{python} cannot import duckdb: {}",
            String::from_utf8_lossy(&out.stderr).lines().last().unwrap_or("(no message)")
        ),
        Err(e) => format!("cannot run {python}: {e}"),
    };
    if given {
        bail!("--duckdb-python: {why}");
    }
    Ok(Err(why))
}

impl DuckDb {
    /// Runs the query once: the script's own time and the results it wrote.
    fn run(&self, input: &str, dir: &Path) -> Result<(Duration, Results)> {
        let out_path = dir.join("duckdb.csv");
        let started = Instant::now();
        let out = Command::new(&self.python).arg(DUCKDB_SCRIPT).arg(input).arg(&out_path).output()?;
        let process = started.elapsed();
        let stdout = String::from_utf8_lossy(&out.stdout);
        ensure!(
            out.status.success(),
            "{} {DUCKDB_SCRIPT} failed ({}): {}",
            self.python,
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
        // "duckdb 1.2.0: IN -> OUT (2 threads) in 1.234 s (import excluded)"; the process's wall
        // time if the line changes.
        let own = stdout
            .rsplit_once(" in ")
            .and_then(|(_, rest)| rest.split_whitespace().next()?.parse::<f64>().ok())
            .map_or(process, Duration::from_secs_f64);
        let mut results = Results::new();
        let text =
            std::fs::read_to_string(&out_path).with_context(|| format!("read {}", out_path.display()))?;
        let mut lines = text.lines();
        ensure!(
            lines.next() == Some("status,window_start,window_end,count,avg_latency,sum_bytes"),
            "{}: unexpected header",
            out_path.display()
        );
        for line in lines {
            let f: Vec<&str> = line.split(',').collect();
            let [status, start, end, count, avg, sum] = f.as_slice() else {
                bail!("{}: bad line {line:?}", out_path.display())
            };
            let (start, end): (i64, i64) = (start.parse()?, end.parse()?);
            ensure!(
                end == start + access_events::WINDOW_MS,
                "duckdb window [{start}, {end}) is not 10 s long"
            );
            let key = (status.parse()?, start);
            ensure!(
                results.insert(key, (count.parse()?, avg.parse()?, sum.parse()?)).is_none(),
                "two duckdb results for {key:?}"
            );
        }
        Ok((own, results))
    }
}

// ---------------------------------------------------------------------------------------------
// Reporting.

/// Prints the table of `rows` with their `figures` (the same order) and adds their targets.
fn print_table(rows: &[Row], figures: &[Option<Figures>], targets: &mut Vec<Target>) {
    let typed = |p: usize| rows.iter().position(|r| *r == Row::Typed(p)).and_then(|i| figures[i]);
    println!();
    println!("{:<10} {} {:>9} {:>8}  targets", "id", Figures::header(), "sql/typed", "cpu");
    for (row, f) in rows.iter().zip(figures) {
        let id = row.id();
        let Some(f) = f else { continue };
        let mut ratios = (None, None);
        let mut verdicts = Vec::new();
        if let Row::Sql(p) = row {
            let what = "from a CSV file, decoding included";
            let (target, verdict) = Target::min_rate(&id, f.rate, TARGET_SQL_EVENTS_PER_SEC, what);
            targets.push(target);
            verdicts.push(verdict);
            if let Some(t) = typed(*p) {
                let ratio = f.wall.as_secs_f64() / t.wall.as_secs_f64().max(1e-9);
                let cpu_ratio = f.cpu.zip(t.cpu).map(|(c, t)| c.as_secs_f64() / t.as_secs_f64().max(1e-9));
                ratios = (Some(ratio), cpu_ratio);
                let what = format!("{id}: ≤ {TARGET_TYPED_RATIO} × typed/p{p} wall time");
                let label = format!("≤{TARGET_TYPED_RATIO}x typed");
                let (target, verdict) = Target::max_ratio(what, &label, ratio, cpu_ratio, TARGET_TYPED_RATIO);
                targets.push(target);
                verdicts.push(verdict);
            }
        }
        let ratio = |r: Option<f64>| r.map_or("-".to_owned(), |r| format!("{r:.2}"));
        println!(
            "{:<10} {} {:>9} {:>8}  {}",
            id,
            f.columns(),
            ratio(ratios.0),
            ratio(ratios.1),
            verdicts.join(", ")
        );
    }
}
