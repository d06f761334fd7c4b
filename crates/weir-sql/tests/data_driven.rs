//! Data-driven SQL tests: every directory of `tests/sql/` is a case whose expected output was
//! computed by DuckDB (`tests/sql/regenerate.sh`), never by Weir. See `tests/sql/generate.py` for
//! the layout of a case.
//!
//! For each case, the runner registers the source(s) of `source.sql` through the DDL path
//! (`parse_script` + `StreamContext::register_source`; `{dir}` is the case's directory), plans
//! `query.sql`, and then either
//! - runs it at each parallelism of `case.json` (default 1 and 2), collects the result batches,
//!   and compares them, as rows in any order, with `expected.csv` (same column names; `NULL` for
//!   nulls; timestamps as epoch ms; numbers equal within 1e-9 relative; in order if `case.json`
//!   says `"ordered": true`), and the number of dead
//!   letters with `expected_dead_letters.txt` (no file: none), or
//! - checks that planning fails with an error containing every line of `error.txt` (and none
//!   of its lines that start with `!`).
//!
//! `WEIR_SQL_CASE=substring cargo test -p weir-sql --test data_driven` runs only matching cases.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly by design.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Float64Type, TimeUnit, TimestampMillisecondType};
use weir_connectors::{FileSource, JsonLine};
use weir_runtime::{
    Avg, CollectSink, Count, JobReport, Pipeline, Sum, TumblingWindows, Watermarks, WindowResult,
};
use weir_sql::StreamContext;
use weir_sql::ddl::{Statement, parse_script};

/// How long one pipeline may run before the case counts as hung.
const RUN_TIMEOUT: Duration = Duration::from_secs(120);

fn cases_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests").join("sql")
}

#[derive(Debug)]
struct Case {
    name: String,
    dir: PathBuf,
    source_sql: String,
    query: String,
    parallelism: Vec<usize>,
    /// `Some((column, bound ms))`: register the input as in-memory batches of one row.
    memory: Option<(String, u64)>,
    /// The rows must come in expected.csv's order (a query with ORDER BY).
    ordered: bool,
    expected: Expected,
}

#[derive(Debug)]
enum Expected {
    Rows { header: Vec<String>, rows: Vec<Vec<String>>, dead_letters: u64 },
    Error(Vec<String>),
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn load_case(dir: &Path) -> Case {
    let name = dir.file_name().unwrap().to_string_lossy().into_owned();
    let config: serde_json::Value = match std::fs::read_to_string(dir.join("case.json")) {
        Ok(text) => serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}/case.json: {e}")),
        Err(_) => serde_json::json!({}),
    };
    let parallelism = match config.get("parallelism").and_then(|p| p.as_array()) {
        Some(ps) => ps.iter().map(|p| p.as_u64().unwrap() as usize).collect(),
        None => vec![1, 2],
    };
    let memory = match config.get("source").and_then(|s| s.as_str()) {
        None | Some("file") => None,
        Some("memory") => {
            let et = config["event_time"].as_array().expect("a memory source needs event_time");
            Some((et[0].as_str().unwrap().to_owned(), et[1].as_u64().unwrap()))
        }
        Some(other) => panic!("{name}/case.json: unknown source {other:?}"),
    };
    let expected = if dir.join("error.txt").exists() {
        Expected::Error(
            read(&dir.join("error.txt"))
                .lines()
                .filter(|l| !l.trim().is_empty())
                .map(str::to_owned)
                .collect(),
        )
    } else {
        let path = dir.join("expected.csv");
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(true)
            .from_path(&path)
            .unwrap_or_else(|e| panic!("{}: {e} (run tests/sql/regenerate.sh)", path.display()));
        let header = reader.headers().unwrap().iter().map(str::to_owned).collect();
        let rows =
            reader.records().map(|r| r.unwrap().iter().map(str::to_owned).collect::<Vec<_>>()).collect();
        let dead_letters = match std::fs::read_to_string(dir.join("expected_dead_letters.txt")) {
            Ok(text) => {
                text.trim().parse().unwrap_or_else(|e| panic!("{name}/expected_dead_letters.txt: {e}"))
            }
            Err(_) => 0,
        };
        Expected::Rows { header, rows, dead_letters }
    };
    let ordered = config.get("ordered").and_then(serde_json::Value::as_bool).unwrap_or(false);
    Case {
        ordered,
        source_sql: read(&dir.join("source.sql")).replace("{dir}", &dir.display().to_string()),
        query: read(&dir.join("query.sql")),
        name,
        dir: dir.to_owned(),
        parallelism,
        memory,
        expected,
    }
}

fn all_cases() -> Vec<Case> {
    let filter = std::env::var("WEIR_SQL_CASE").unwrap_or_default();
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(cases_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("query.sql").is_file())
        .collect();
    dirs.sort();
    assert!(!dirs.is_empty(), "no case under {}", cases_dir().display());
    dirs.iter()
        .filter(|d| d.file_name().unwrap().to_string_lossy().contains(&filter))
        .map(|d| load_case(d))
        .collect()
}

/// The context with the case's sources.
async fn context(case: &Case) -> Result<StreamContext, String> {
    let mut ctx = StreamContext::new();
    for stmt in parse_script(&case.source_sql).map_err(|e| format!("source.sql: {e}"))? {
        match stmt {
            Statement::Source(def) => {
                ctx.register_source(&def).await.map_err(|e| format!("source.sql: {e}"))?;
            }
            other => return Err(format!("source.sql: not a CREATE SOURCE: {other:?}")),
        }
    }
    let Some((time_column, bound)) = &case.memory else { return Ok(ctx) };
    // The same rows as in-memory batches of one row each: a watermark after every row.
    let source = ctx.sources().next().ok_or("source.sql: no source")?;
    let (name, schema) = (source.name.clone(), source.raw_schema.clone());
    let file = std::fs::File::open(case.dir.join("input.jsonl")).map_err(|e| e.to_string())?;
    let batches = arrow::json::ReaderBuilder::new(schema.clone())
        .with_batch_size(1)
        .build(std::io::BufReader::new(file))
        .map_err(|e| e.to_string())?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    let mut memory = StreamContext::new();
    memory
        .register_batches(&name, schema, batches, Some((time_column, Duration::from_millis(*bound))))
        .await
        .map_err(|e| e.to_string())?;
    Ok(memory)
}

async fn run_query(
    ctx: &StreamContext,
    query: &str,
    parallelism: usize,
) -> Result<(Vec<String>, Vec<RecordBatch>, JobReport), String> {
    let stream = ctx.sql(query).await.map_err(|e| format!("planning failed: {e}"))?;
    let header = stream.schema().fields().iter().map(|f| f.name().clone()).collect();
    let p = Pipeline::builder("sql-case")
        .parallelism(parallelism)
        .handle_signals(false)
        .build()
        .map_err(|e| e.to_string())?;
    let out = CollectSink::new();
    stream.build(&p).map_err(|e| format!("building failed: {e}"))?.sink(out.clone());
    let report = tokio::time::timeout(RUN_TIMEOUT, p.run())
        .await
        .map_err(|_| format!("no result within {RUN_TIMEOUT:?}"))?
        .map_err(|e| format!("run failed: {e}"))?;
    Ok((header, out.take(), report))
}

/// A cell as expected.csv writes it: `NULL`, epoch ms for timestamps, shortest round-trip floats.
fn cell(column: &ArrayRef, row: usize) -> String {
    if column.is_null(row) {
        return "NULL".into();
    }
    match column.data_type() {
        DataType::Timestamp(TimeUnit::Millisecond, _) => {
            column.as_primitive::<TimestampMillisecondType>().value(row).to_string()
        }
        DataType::Timestamp(..) => {
            let ms = arrow::compute::cast(column, &DataType::Timestamp(TimeUnit::Millisecond, None)).unwrap();
            ms.as_primitive::<TimestampMillisecondType>().value(row).to_string()
        }
        DataType::Float16 | DataType::Float32 | DataType::Float64 => {
            let f = arrow::compute::cast(column, &DataType::Float64).unwrap();
            f.as_primitive::<Float64Type>().value(row).to_string()
        }
        _ => arrow::util::display::array_value_to_string(column, row).unwrap(),
    }
}

fn batch_rows(batches: &[RecordBatch]) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    for b in batches {
        for r in 0..b.num_rows() {
            rows.push(b.columns().iter().map(|c| cell(c, r)).collect());
        }
    }
    rows
}

fn as_number(s: &str) -> Option<f64> {
    if s.is_empty() || s.chars().any(|c| c.is_ascii_alphabetic() && !matches!(c, 'e' | 'E')) {
        // "NaN", "inf" and words are not numbers here (they compare as text).
        return None;
    }
    s.parse().ok()
}

/// A cell for ordering rows: numbers rounded to 6 significant digits, so rows whose floats differ
/// by rounding sort the same.
fn sort_cell(s: &str) -> String {
    match (s.parse::<i64>(), as_number(s)) {
        (Ok(i), _) => format!("{i:020}"),
        (_, Some(f)) if f.fract() == 0.0 && f.abs() < 1e15 => format!("{:020}", f as i64),
        (_, Some(f)) => format!("{f:.5e}"),
        _ => s.to_owned(),
    }
}

fn cells_match(got: &str, want: &str) -> bool {
    if got == want {
        return true;
    }
    match (as_number(got), as_number(want)) {
        (Some(a), Some(b)) => (a - b).abs() <= 1e-9 * a.abs().max(b.abs()),
        _ => false,
    }
}

fn sorted(mut rows: Vec<Vec<String>>) -> Vec<Vec<String>> {
    rows.sort_by_cached_key(|r| r.iter().map(|c| sort_cell(c)).collect::<Vec<_>>());
    rows
}

/// `None` if equal as multisets of rows (numbers within tolerance), or as sequences if
/// `ordered`, else a description.
fn compare(header: &[String], got: Vec<Vec<String>>, want: &[Vec<String>], ordered: bool) -> Option<String> {
    let (got, want) = if ordered { (got, want.to_vec()) } else { (sorted(got), sorted(want.to_vec())) };
    let same = got.len() == want.len()
        && got
            .iter()
            .zip(&want)
            .all(|(g, w)| g.len() == w.len() && g.iter().zip(w).all(|(a, b)| cells_match(a, b)));
    if same {
        return None;
    }
    // Rows on one side only, by their rounded form.
    let key = |r: &Vec<String>| r.iter().map(|c| sort_cell(c)).collect::<Vec<_>>();
    let mut count: BTreeMap<Vec<String>, usize> = BTreeMap::new();
    for r in &got {
        *count.entry(key(r)).or_default() += 1;
    }
    let mut missing = Vec::new();
    for r in &want {
        match count.get_mut(&key(r)) {
            Some(n) if *n > 0 => *n -= 1,
            _ => missing.push(r.join(",")),
        }
    }
    let mut unexpected = Vec::new();
    for r in &got {
        let n = count.get_mut(&key(r)).unwrap();
        if *n > 0 {
            *n -= 1;
            unexpected.push(r.join(","));
        }
    }
    if missing.is_empty() && unexpected.is_empty() {
        // Same rows to 6 digits: a difference beyond the tolerance.
        let (g, w) = got
            .iter()
            .zip(&want)
            .find(|(g, w)| g.len() != w.len() || !g.iter().zip(w.iter()).all(|(a, b)| cells_match(a, b)))
            .unwrap();
        return Some(format!(
            "produced {} where {} was expected ({})",
            g.join(","),
            w.join(","),
            header.join(",")
        ));
    }
    let show = |rows: &[String]| {
        let mut s: String = rows.iter().take(12).map(|r| format!("\n      {r}")).collect();
        if rows.len() > 12 {
            s += &format!("\n      … {} more", rows.len() - 12);
        }
        s
    };
    Some(format!(
        "{} rows, expected {} ({})\n    expected, not produced ({}):{}\n    produced, not expected ({}):{}",
        got.len(),
        want.len(),
        header.join(","),
        missing.len(),
        show(&missing),
        unexpected.len(),
        show(&unexpected),
    ))
}

async fn run_case(case: &Case) -> Result<(), String> {
    let ctx = context(case).await?;
    match &case.expected {
        Expected::Error(needles) => {
            let err = match ctx.sql(&case.query).await {
                Ok(stream) => return Err(format!("planned, but expected an error; plan:\n{stream:?}")),
                Err(e) => e.to_string(),
            };
            let wrong: Vec<String> = needles
                .iter()
                .filter_map(|n| match n.strip_prefix('!') {
                    Some(not) => err.contains(not).then(|| format!("has {not:?}")),
                    None => (!err.contains(n.as_str())).then(|| format!("lacks {n:?}")),
                })
                .collect();
            if wrong.is_empty() { Ok(()) } else { Err(format!("error {err:?} {}", wrong.join(", "))) }
        }
        Expected::Rows { header, rows, dead_letters } => {
            let mut problems = Vec::new();
            for &p in &case.parallelism {
                let (got_header, batches, report) = run_query(&ctx, &case.query, p).await?;
                if &got_header != header {
                    problems.push(format!("parallelism {p}: columns {got_header:?}, expected {header:?}"));
                }
                if report.dead_letters != *dead_letters {
                    problems.push(format!(
                        "parallelism {p}: {} dead letters, expected {dead_letters}",
                        report.dead_letters
                    ));
                }
                if let Some(diff) = compare(header, batch_rows(&batches), rows, case.ordered) {
                    problems.push(format!("parallelism {p}: {diff}"));
                }
            }
            if problems.is_empty() { Ok(()) } else { Err(problems.join("\n  ")) }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_cases_match_duckdb() {
    let mut failures = Vec::new();
    let mut passed = 0;
    for case in all_cases() {
        match run_case(&case).await {
            Ok(()) => passed += 1,
            Err(e) => failures.push(format!("{}:\n  {e}", case.name)),
        }
    }
    eprintln!("{passed} cases passed, {} failed", failures.len());
    assert!(failures.is_empty(), "{} failing case(s):\n{}", failures.len(), failures.join("\n"));
}

/// Every case directory is complete, and the generator knows every case with data.
#[test]
fn cases_are_complete() {
    for case in all_cases() {
        if let Expected::Rows { header, rows, .. } = &case.expected {
            assert!(!header.is_empty() && !rows.is_empty(), "{}: empty expected.csv", case.name);
            assert!(case.dir.join("duckdb.sql").is_file(), "{}: expected.csv without duckdb.sql", case.name);
            assert!(rows.iter().all(|r| r.len() == header.len()), "{}: ragged expected.csv", case.name);
        }
    }
}

/// A result of the typed pipeline: per host and window, (count, sum of bytes, mean latency).
type TypedResult = WindowResult<String, (u64, i64, f64)>;

/// A record of the typed pipeline.
#[derive(Debug, Clone)]
struct Access {
    ts_ms: i64,
    host: String,
    bytes: i64,
    latency: f64,
}

fn access(line: &JsonLine<serde_json::Value>) -> Result<Access, String> {
    let v = line.parse().map_err(|e| e.to_string())?;
    Ok(Access {
        ts_ms: v["ts_ms"].as_i64().ok_or("no ts_ms")?,
        host: v["host"].as_str().unwrap_or("-").to_owned(),
        bytes: v["bytes"].as_i64().unwrap_or(0),
        latency: v["latency"].as_f64().unwrap_or(0.0),
    })
}

/// The same windowed aggregation written in SQL and with the typed API gives the same rows, on
/// input with out-of-order and late rows (tests/sql/tumble_late_rows/input.jsonl): both read the
/// file in the same batches and drop the same late rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_and_typed_api_agree() {
    let input = cases_dir().join("tumble_late_rows").join("input.jsonl");
    let path = input.display().to_string();
    let ddl = format!(
        "CREATE SOURCE access (ts_ms BIGINT, host TEXT, bytes BIGINT, latency DOUBLE, \
         ts AS to_timestamp_millis(ts_ms), WATERMARK FOR ts AS ts - INTERVAL '5' SECOND) \
         WITH (connector = 'file', path = '{path}', format = 'json')"
    );
    let mut ctx = StreamContext::new();
    let Statement::Source(def) = &parse_script(&ddl).unwrap()[0] else { panic!("not a source") };
    ctx.register_source(def).await.unwrap();
    let query = "SELECT window_start, window_end, COALESCE(host, '-') AS host, count(*) AS n, \
                 sum(COALESCE(bytes, 0)) AS total_bytes, avg(COALESCE(latency, 0.0)) AS avg_latency \
                 FROM access GROUP BY tumble(ts, INTERVAL '10' SECOND), COALESCE(host, '-')";
    for parallelism in [1, 2] {
        let (_, batches, _) = run_query(&ctx, query, parallelism).await.unwrap();
        let sql_rows = batch_rows(&batches);

        let p = Pipeline::builder("typed").parallelism(parallelism).handle_signals(false).build().unwrap();
        let out = CollectSink::new();
        p.source(FileSource::json_lines::<serde_json::Value>(path.as_str()))
            .try_map(access)
            .assign_timestamps(
                |r: &Access| r.ts_ms,
                Watermarks::bounded_out_of_orderness(Duration::from_secs(5)),
            )
            .key_by(|r: &Access| r.host.clone())
            .window(TumblingWindows::of(Duration::from_secs(10)))
            .aggregate((Count, Sum::of(|r: &Access| r.bytes), Avg::of(|r: &Access| r.latency)))
            .sink(out.clone());
        let report = p.run().await.unwrap();
        assert_eq!(report.dead_letters, 0);
        assert!(report.late_records > 0, "the input has late rows; the comparison should cover them");
        let typed: Vec<TypedResult> = out.take();
        let typed_rows: Vec<Vec<String>> = typed
            .iter()
            .map(|w| {
                let (n, total, avg) = &w.value;
                vec![
                    w.window_start.to_string(),
                    w.window_end.to_string(),
                    w.key.clone(),
                    n.to_string(),
                    total.to_string(),
                    avg.to_string(),
                ]
            })
            .collect();
        let header: Vec<String> = ["window_start", "window_end", "host", "n", "total_bytes", "avg_latency"]
            .map(String::from)
            .into();
        if let Some(diff) = compare(&header, sql_rows, &typed_rows, false) {
            panic!("parallelism {parallelism}: SQL (produced) vs typed (expected): {diff}");
        }
    }
}

#[test]
fn float_cells_compare_within_tolerance() {
    assert!(cells_match("0.30000000000000004", "0.3"));
    assert!(cells_match("5", "5.0"));
    assert!(!cells_match("5", "5.001"));
    assert!(!cells_match("NULL", "0"));
    assert!(!cells_match("1e3x", "1e3"));
    let a = Arc::new(arrow::array::Int64Array::from(vec![Some(3), None])) as ArrayRef;
    assert_eq!((cell(&a, 0), cell(&a, 1)), ("3".to_owned(), "NULL".to_owned()));
}
