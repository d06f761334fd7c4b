//! `weir sql`, run as a user would: real processes in a temporary directory, over files.

#![allow(clippy::unwrap_used, reason = "tests may unwrap (STYLE.md)")]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A temporary working directory to run `weir sql` in (no `--dir`: the default `./weir-data`).
struct Dir {
    dir: tempfile::TempDir,
}

impl Dir {
    fn new() -> Dir {
        Dir { dir: tempfile::tempdir().unwrap() }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    /// Runs `weir ARGS` in the directory.
    fn run(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_weir"))
            .current_dir(self.dir.path())
            .args(args)
            .env_remove("WEIR_DIR")
            .env_remove("RUST_LOG")
            .output()
            .unwrap()
    }

    /// Runs `weir ARGS`, which must succeed; returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "weir {args:?} failed: {stderr}");
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs `weir ARGS`, which must fail with exit code 1; returns stderr.
    fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert_eq!(out.status.code(), Some(1), "weir {args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "weir {args:?} panicked: {stderr}");
        stderr
    }
}

/// `n` readings as CSV lines `ts_ms,sensor,value` (no header), 1 s apart, three sensors.
fn readings(n: u64) -> String {
    (0..n).map(|i| format!("{},s-{},{}\n", 1_699_999_980_000 + i * 1_000, i % 3, i)).collect()
}

const SOURCE: &str = "CREATE SOURCE readings (ts_ms BIGINT, sensor TEXT, value BIGINT, \
     ts AS to_timestamp_millis(ts_ms), WATERMARK FOR ts AS ts - INTERVAL '1' SECOND) \
     WITH (connector = 'file', path = 'readings.csv', format = 'csv');\n";

/// A pipeline file: the readings and a sink of counts per sensor and minute into `out.jsonl`.
fn pipeline(dir: &Dir) -> PathBuf {
    dir.write("readings.csv", &readings(600));
    dir.write(
        "pipeline.sql",
        &format!(
            "{SOURCE}CREATE SINK per_sensor WITH (connector = 'file', path = 'out.jsonl', format = 'json') AS \
             SELECT window_start, sensor, count(*) AS n FROM readings \
             GROUP BY tumble(ts, INTERVAL '1' MINUTE), sensor;"
        ),
    )
}

fn modified(path: &Path) -> std::time::SystemTime {
    std::fs::metadata(path).unwrap().modified().unwrap()
}

#[test]
fn explain_and_queries_against_a_pipeline_file_do_not_run_its_sinks() {
    let dir = Dir::new();
    pipeline(&dir);
    dir.ok(&["sql", "-f", "pipeline.sql"]);
    let out = dir.path("out.jsonl");
    assert_eq!(std::fs::read_to_string(&out).unwrap().lines().count(), 30, "10 minutes × 3 sensors");
    // Mark the output: a sink that runs again rewrites it.
    std::fs::write(&out, "kept\n").unwrap();
    let before = modified(&out);

    let plan = dir.ok(&["sql", "-f", "pipeline.sql", "-e", "EXPLAIN SELECT sensor, value FROM readings"]);
    assert!(plan.contains("source readings"), "{plan}");
    let rows =
        dir.ok(&["sql", "-f", "pipeline.sql", "-e", "SELECT sensor, value FROM readings WHERE value = 7"]);
    assert!(rows.contains("| s-1    | 7     |"), "{rows}");
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "kept\n", "the sink ran");
    assert_eq!(modified(&out), before);
}

#[test]
fn sql_over_files_creates_no_log_directory() {
    let dir = Dir::new();
    pipeline(&dir);
    dir.ok(&["sql", "-f", "pipeline.sql"]);
    dir.ok(&["sql", "-f", "pipeline.sql", "-e", "SELECT sensor FROM readings WHERE value = 1"]);
    dir.write("bad.csv", "1700000000000,s-1,not a number\n");
    dir.ok(&[
        "sql",
        "-e",
        "CREATE SOURCE bad (ts_ms BIGINT, sensor TEXT, value BIGINT) \
         WITH (connector = 'file', path = 'bad.csv', format = 'csv'); SELECT * FROM bad",
    ]);
    assert!(dir.path("out.jsonl").is_file());
    assert!(!dir.path("weir-data").exists(), "a log directory was created for SQL over files");
}

#[test]
fn an_unknown_with_option_is_refused_naming_it_and_the_nearest() {
    let dir = Dir::new();
    dir.write("readings.csv", &readings(3));
    for (typo, nearest) in [("hedaer", "header"), ("follw", "follow")] {
        let err = dir.fails(&[
            "sql",
            "-e",
            &format!(
                "CREATE SOURCE r (ts_ms BIGINT, sensor TEXT, value BIGINT) \
                 WITH (connector = 'file', path = 'readings.csv', format = 'csv', {typo} = 'true'); \
                 SELECT * FROM r"
            ),
        ]);
        assert!(err.contains(&format!("option {typo}: unknown option; did you mean {nearest}?")), "{err}");
    }
    let err = dir.fails(&[
        "sql",
        "-e",
        "CREATE SOURCE r (ts_ms BIGINT) WITH (connector = 'file', path = 'readings.csv', format = 'csv'); \
         CREATE SINK s WITH (connector = 'file', path = 'out.csv', fromat = 'csv') AS SELECT * FROM r",
    ]);
    assert!(err.contains("s: option fromat: unknown option; did you mean format?"), "{err}");
}

#[test]
fn json_output_prints_one_object_per_row_with_nulls_and_utc_timestamps() {
    let dir = Dir::new();
    dir.write("r.csv", "1700000000000,s-1,5\n1700000000883,,7\n");
    let source = "CREATE SOURCE r (ts_ms BIGINT, sensor TEXT, value BIGINT, ts AS to_timestamp_millis(ts_ms)) \
                  WITH (connector = 'file', path = 'r.csv', format = 'csv');";
    let parse = |out: &str| -> Vec<serde_json::Value> {
        let mut rows: Vec<serde_json::Value> =
            out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        rows.sort_by_key(|r| r["value"].as_i64());
        rows
    };
    let want = serde_json::json!([
        {"ts": "2023-11-14T22:13:20Z", "sensor": "s-1", "value": 5},
        {"ts": "2023-11-14T22:13:20.883Z", "sensor": null, "value": 7},
    ]);
    let out = dir.ok(&["--json", "sql", "-e", &format!("{source} SELECT ts, sensor, value FROM r")]);
    assert_eq!(serde_json::Value::from(parse(&out)), want, "{out}");
    let out = dir.ok(&[
        "sql",
        "-e",
        &format!(
            "{source} CREATE SINK s WITH (connector = 'stdout', format = 'json') AS SELECT ts, sensor, value FROM r"
        ),
    ]);
    assert_eq!(serde_json::Value::from(parse(&out)), want, "{out}");
    // Tables show the same values.
    let table = dir.ok(&["sql", "-e", &format!("{source} SELECT ts, sensor, value FROM r")]);
    assert!(table.contains("2023-11-14T22:13:20.883Z") && table.contains("NULL"), "{table}");
}

#[test]
fn ad_hoc_queries_over_files_order_limit_and_group_as_a_batch_engine() {
    let dir = Dir::new();
    pipeline(&dir);
    let table = dir.ok(&[
        "sql",
        "-f",
        "pipeline.sql",
        "-e",
        "SELECT sensor, count(*) AS n, max(value) AS top FROM readings GROUP BY sensor ORDER BY top DESC LIMIT 2",
    ]);
    // One table, ordered: 600 readings, value i of sensor s-(i % 3); the largest is 599 (s-2).
    let rows: Vec<&str> = table.lines().filter(|l| l.starts_with("| s-")).collect();
    assert_eq!(rows, ["| s-2    | 200 | 599 |", "| s-1    | 200 | 598 |"], "{table}");
    assert_eq!(table.lines().filter(|l| l.starts_with('+')).count(), 3, "one table: {table}");
}

#[test]
fn a_bad_line_read_by_several_queries_is_one_dead_letter() {
    let dir = Dir::new();
    dir.write("r.csv", &format!("{}1700000000000,s-1,not a number\n", readings(5)));
    let out = dir.run(&[
        "sql",
        "-e",
        "CREATE SOURCE r (ts_ms BIGINT, sensor TEXT, value BIGINT) \
         WITH (connector = 'file', path = 'r.csv', format = 'csv'); \
         SELECT sensor FROM r WHERE value = 1; SELECT value FROM r WHERE value = 2; SELECT count(*) AS n FROM r",
    ]);
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("weir: pipeline sql: 1 dead letters (decode: 1)"), "{stderr}");
    assert_eq!(stderr.matches("r.csv:6").count(), 1, "the dead letter is shown once: {stderr}");
    assert!(stdout.contains("| 5 |"), "the count of the good rows: {stdout}");
}

#[test]
fn relative_paths_are_relative_to_the_current_directory_and_an_error_prints_once() {
    let dir = Dir::new();
    std::fs::create_dir(dir.path("scripts")).unwrap();
    dir.write("readings.csv", &readings(3));
    // The script lives in scripts/; its paths are relative to where weir runs.
    dir.write(
        "scripts/copy.sql",
        &format!("{SOURCE}CREATE SINK copy WITH (connector = 'file', path = 'copy.csv', format = 'csv') AS SELECT sensor FROM readings;"),
    );
    dir.ok(&["sql", "-f", "scripts/copy.sql"]);
    assert_eq!(
        std::fs::read_to_string(dir.path("copy.csv")).unwrap().lines().count(),
        4,
        "a header and 3 rows"
    );
    assert!(!dir.path("scripts/copy.csv").exists());

    let err = dir.fails(&[
        "sql",
        "-e",
        "CREATE SOURCE r (a BIGINT) WITH (connector = 'file', path = 'missing.csv', format = 'csv'); SELECT a FROM r",
    ]);
    assert_eq!(err.matches("missing.csv").count(), 1, "one error: {err}");
}
