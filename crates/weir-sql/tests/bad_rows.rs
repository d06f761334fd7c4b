//! No row lost without a trace: a row an expression fails on, or a row without an event time,
//! goes to the dead letters alone (as JSON, with the error); the other rows of its batch go on.
//! Hostile queries (expressions nested thousands deep, a hop with millions of windows per row)
//! are refused at planning with an explanation. Expected results are computed by brute force
//! here, never taken from Weir.

#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Array, ArrayRef, AsArray, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Int32Type, Int64Type, Schema, SchemaRef};
use weir_runtime::{CollectSink, DeadLetter, JobReport, Pipeline};
use weir_sql::StreamContext;
use weir_sql::ddl::{Statement, parse_statement};

/// Runs `query` over `ctx` at `parallelism`; returns the rows, the dead letters and the report.
async fn run(
    ctx: &StreamContext,
    query: &str,
    parallelism: usize,
) -> (Vec<RecordBatch>, Vec<DeadLetter>, JobReport) {
    let p = Pipeline::builder("bad rows").parallelism(parallelism).handle_signals(false).build().unwrap();
    let (out, dead) = (CollectSink::new(), CollectSink::new());
    p.dead_letters(dead.clone());
    ctx.sql(query).await.unwrap().build(&p).unwrap().sink(out.clone());
    let report = tokio::time::timeout(Duration::from_secs(60), p.run()).await.unwrap().unwrap();
    (out.take(), dead.take(), report)
}

/// `ids` as a memory source `t (id BIGINT)` in batches of 1 024 rows.
async fn ids(ids: impl Iterator<Item = i64>) -> StreamContext {
    let schema: SchemaRef = Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, true)]));
    let all: Vec<i64> = ids.collect();
    let batches = all
        .chunks(1_024)
        .map(|c| {
            RecordBatch::try_new(schema.clone(), vec![Arc::new(Int64Array::from(c.to_vec())) as ArrayRef])
                .unwrap()
        })
        .collect();
    let mut ctx = StreamContext::new();
    ctx.register_batches("t", schema, batches, None).await.unwrap();
    ctx
}

/// Column `c` of every batch, as (possibly null) i64s.
fn column_i64(batches: &[RecordBatch], c: usize) -> Vec<Option<i64>> {
    let mut v = Vec::new();
    for b in batches {
        let a = arrow::compute::cast(b.column(c), &DataType::Int64).unwrap();
        let a = a.as_primitive::<Int64Type>();
        v.extend((0..a.len()).map(|i| a.is_valid(i).then(|| a.value(i))));
    }
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_division_by_zero_in_one_row_dead_letters_that_row_alone() {
    let ctx = ids(0..100_000).await;
    for parallelism in [1, 2] {
        let (batches, dead, report) =
            run(&ctx, "SELECT id, 10 / (id - 50000) AS q FROM t", parallelism).await;
        let mut got: Vec<(i64, Option<i64>)> =
            column_i64(&batches, 0).into_iter().map(Option::unwrap).zip(column_i64(&batches, 1)).collect();
        got.sort();
        let want: Vec<(i64, Option<i64>)> =
            (0..100_000i64).filter(|id| *id != 50_000).map(|id| (id, Some(10 / (id - 50_000)))).collect();
        assert_eq!(got.len(), 99_999, "p{parallelism}");
        assert_eq!(got, want, "p{parallelism}");
        assert_eq!(report.dead_letters, 1, "p{parallelism}");
        assert_eq!(dead.len(), 1);
        assert_eq!(dead[0].operator, "projection");
        assert_eq!(dead[0].payload, r#"{"id":50000}"#);
        assert!(dead[0].error.to_lowercase().contains("divide by zero"), "{}", dead[0].error);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_cast_dead_letters_only_the_rows_that_do_not_cast() {
    let values: Vec<String> =
        (0..400).map(|i| if i % 97 == 13 { format!("x{i}") } else { i.to_string() }).collect();
    let schema: SchemaRef = Arc::new(Schema::new(vec![Field::new("v", DataType::Utf8, true)]));
    let batch =
        RecordBatch::try_new(schema.clone(), vec![Arc::new(StringArray::from(values.clone()))]).unwrap();
    let mut ctx = StreamContext::new();
    ctx.register_batches("t", schema, vec![batch], None).await.unwrap();
    let (batches, dead, _) = run(&ctx, "SELECT CAST(v AS INT) AS n FROM t", 1).await;
    let got: Vec<i32> =
        batches.iter().flat_map(|b| b.column(0).as_primitive::<Int32Type>().values().to_vec()).collect();
    let want: Vec<i32> = values.iter().filter_map(|v| v.parse().ok()).collect();
    assert_eq!(want.len(), 396);
    assert_eq!(got, want);
    let payloads: Vec<&str> = dead.iter().map(|d| d.payload.as_str()).collect();
    let bad: Vec<String> =
        values.iter().filter(|v| v.parse::<i32>().is_err()).map(|v| format!(r#"{{"v":"{v}"}}"#)).collect();
    assert_eq!(payloads, bad);
    assert!(dead.iter().all(|d| d.error.contains("Cannot cast")), "{dead:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filter_failing_on_one_row_keeps_the_other_rows_of_its_batch() {
    let ctx = ids(0..5_000).await;
    let (batches, dead, _) = run(&ctx, "SELECT id FROM t WHERE 10 / (id - 700) > 0", 2).await;
    let mut got: Vec<i64> = column_i64(&batches, 0).into_iter().map(Option::unwrap).collect();
    got.sort();
    let want: Vec<i64> = (0..5_000i64).filter(|id| *id != 700 && 10 / (id - 700) > 0).collect();
    assert_eq!(got, want);
    assert_eq!(dead.len(), 1);
    assert_eq!((dead[0].operator.as_str(), dead[0].payload.as_str()), ("filter", r#"{"id":700}"#));
}

/// A reading: id, sensor, event time (ms; `None`: missing or null), value.
type Reading = (i64, i64, Option<i64>, i64);

/// Readings `{"id":…,"sensor":…,"ts":…,"v":…}`, every 50th without `ts`, every 77th with
/// `"ts":null`, in time order, into a JSON-lines file with the time column named `time_key`.
fn readings(dir: &std::path::Path, n: i64, time_key: &str) -> (std::path::PathBuf, Vec<Reading>) {
    let rows: Vec<Reading> = (0..n)
        .map(|id| {
            let ts = (id % 50 != 7 && id % 77 != 3).then_some(1_700_000_000_000 + id * 100);
            (id, id % 4, ts, id % 13)
        })
        .collect();
    let text: String = rows
        .iter()
        .map(|(id, sensor, ts, v)| match ts {
            Some(ts) => format!("{{\"id\":{id},\"sensor\":{sensor},\"{time_key}\":{ts},\"v\":{v}}}\n"),
            None if id % 77 == 3 => {
                format!("{{\"id\":{id},\"sensor\":{sensor},\"{time_key}\":null,\"v\":{v}}}\n")
            }
            None => format!("{{\"id\":{id},\"sensor\":{sensor},\"v\":{v}}}\n"),
        })
        .collect();
    let path = dir.join("readings.jsonl");
    std::fs::write(&path, text).unwrap();
    (path, rows)
}

async fn readings_source(path: &std::path::Path) -> StreamContext {
    let ddl = format!(
        "CREATE SOURCE readings (id BIGINT, sensor BIGINT, ts_ms BIGINT, v BIGINT, \
         ts AS to_timestamp_millis(ts_ms), WATERMARK FOR ts AS ts - INTERVAL '1' SECOND) \
         WITH (connector = 'file', path = '{}', format = 'json')",
        path.display()
    );
    let Statement::Source(def) = parse_statement(&ddl).unwrap() else { panic!() };
    let mut ctx = StreamContext::new();
    ctx.register_source(&def).await.unwrap();
    ctx
}

const PER_SENSOR: &str = "SELECT window_start, sensor, count(*) AS n, sum(v) AS total FROM readings \
                          GROUP BY tumble(ts, INTERVAL '10' SECOND), sensor";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_without_an_event_time_are_dead_letters_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let (path, rows) = readings(dir.path(), 5_000, "ts_ms");
    let ctx = readings_source(&path).await;
    let mut want: BTreeMap<(i64, i64), (i64, i64)> = BTreeMap::new();
    for (_, sensor, ts, v) in &rows {
        if let Some(ts) = ts {
            let w = want.entry((ts - ts.rem_euclid(10_000), *sensor)).or_default();
            w.0 += 1;
            w.1 += v;
        }
    }
    let untimed: Vec<i64> = rows.iter().filter(|r| r.2.is_none()).map(|r| r.0).collect();
    assert!(untimed.len() > 150, "every 50th row has no ts, every 77th a null one");
    for parallelism in [1, 2] {
        let (batches, dead, report) = run(&ctx, PER_SENSOR, parallelism).await;
        let (starts, sensors, n, total) = (
            column_i64(&batches, 0),
            column_i64(&batches, 1),
            column_i64(&batches, 2),
            column_i64(&batches, 3),
        );
        let got: BTreeMap<(i64, i64), (i64, i64)> = (0..starts.len())
            .map(|i| ((starts[i].unwrap(), sensors[i].unwrap()), (n[i].unwrap(), total[i].unwrap())))
            .collect();
        assert_eq!(got, want, "p{parallelism}");
        assert_eq!(report.late_records, 0);
        // Every row is in a window or a dead letter, and each dead letter says why.
        let mut dead_ids: Vec<i64> = dead
            .iter()
            .map(|d| {
                assert_eq!(d.operator, "scan");
                assert!(d.error.starts_with("no event time: ts is NULL"), "{}", d.error);
                let row: serde_json::Value = serde_json::from_str(&d.payload).unwrap();
                assert!(row["ts"].is_null(), "{}", d.payload);
                row["id"].as_i64().unwrap()
            })
            .collect();
        dead_ids.sort();
        assert_eq!(dead_ids, untimed, "p{parallelism}");
        assert_eq!(got.values().map(|w| w.0).sum::<i64>() + dead.len() as i64, 5_000);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_time_column_missing_from_every_row_dead_letters_every_row() {
    let dir = tempfile::tempdir().unwrap();
    // The records call it `time`; the source declares `ts_ms`.
    let (path, _) = readings(dir.path(), 3_000, "time");
    let ctx = readings_source(&path).await;
    let (batches, dead, report) = run(&ctx, PER_SENSOR, 2).await;
    assert_eq!(batches.iter().map(RecordBatch::num_rows).sum::<usize>(), 0);
    assert_eq!(report.dead_letters, 3_000);
    assert_eq!(report.dead_letters_by_operator, BTreeMap::from([("scan".to_owned(), 3_000)]));
    assert_eq!(dead.len(), 3_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aggregate_argument_failing_on_one_row_dead_letters_that_row_alone() {
    let dir = tempfile::tempdir().unwrap();
    let (path, rows) = readings(dir.path(), 3_000, "ts_ms");
    let ctx = readings_source(&path).await;
    let query = "SELECT window_start, count(*) AS n, sum(100 / (id - 1234)) AS q FROM readings \
                 GROUP BY tumble(ts, INTERVAL '10' SECOND)";
    let mut want: BTreeMap<i64, (i64, i64)> = BTreeMap::new();
    for (id, _, ts, _) in &rows {
        if let Some(ts) = ts
            && *id != 1_234
        {
            let w = want.entry(ts - ts.rem_euclid(10_000)).or_default();
            w.0 += 1;
            w.1 += 100 / (id - 1_234);
        }
    }
    let (batches, dead, _) = run(&ctx, query, 2).await;
    let (starts, n, q) = (column_i64(&batches, 0), column_i64(&batches, 1), column_i64(&batches, 2));
    let got: BTreeMap<i64, (i64, i64)> =
        (0..starts.len()).map(|i| (starts[i].unwrap(), (n[i].unwrap(), q[i].unwrap()))).collect();
    assert_eq!(got, want);
    let divisions: Vec<&DeadLetter> = dead.iter().filter(|d| d.operator != "scan").collect();
    assert_eq!(divisions.len(), 1, "{dead:?}");
    let row: serde_json::Value = serde_json::from_str(&divisions[0].payload).unwrap();
    assert_eq!(row["id"], 1_234);
}

/// `n` terms joined by `op`.
fn chain(n: usize, term: impl Fn(usize) -> String, op: &str) -> String {
    (0..n).map(term).collect::<Vec<_>>().join(op)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expressions_nested_thousands_deep_are_refused_not_a_crash() {
    let ctx = ids(0..10).await;
    for query in [
        format!("SELECT id FROM t WHERE {}", chain(4_000, |i| format!("id <> {i}"), " AND ")),
        format!("SELECT {} AS s FROM t", chain(5_000, |_| "id".to_owned(), " + ")),
        format!("SELECT id FROM t WHERE {}", chain(3_000, |i| format!("id = {i}"), " OR ")),
        format!("SELECT {}id{} AS p FROM t", "(".repeat(10_000), ")".repeat(10_000)),
    ] {
        let err = ctx.sql(&query).await.unwrap_err().to_string();
        assert!(err.contains("too deeply nested"), "{err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expressions_within_the_nesting_limit_plan_and_run() {
    let ctx = ids(0..2_000).await;
    let terms = weir_sql::MAX_EXPRESSION_DEPTH - 10;
    let query = format!(
        "SELECT {} AS s FROM t WHERE {}",
        chain(terms, |_| "id".to_owned(), " + "),
        chain(terms, |i| format!("id <> {}", i * 3), " AND ")
    );
    let (batches, dead, _) = run(&ctx, &query, 1).await;
    assert!(dead.is_empty());
    let mut got: Vec<i64> = column_i64(&batches, 0).into_iter().map(Option::unwrap).collect();
    got.sort();
    let want: Vec<i64> = (0..2_000i64)
        .filter(|id| (0..terms as i64).all(|i| *id != i * 3))
        .map(|id| id * terms as i64)
        .collect();
    assert_eq!(got, want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hop_with_millions_of_windows_per_row_is_refused_naming_the_call() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = readings(dir.path(), 10, "ts_ms");
    let ctx = readings_source(&path).await;
    let call = "hop(ts, INTERVAL '1' MILLISECOND, INTERVAL '1' HOUR)";
    let err = ctx
        .sql(&format!("SELECT window_start, count(*) FROM readings GROUP BY {call}"))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains(call) && err.contains("3600000 windows"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_computed_column_nested_thousands_deep_is_refused_not_a_crash() {
    let ddl = format!(
        "CREATE SOURCE s (a BIGINT, b AS {}) WITH (connector = 'file', path = '/nonexistent', format = 'json')",
        chain(5_000, |_| "a".to_owned(), " + ")
    );
    let Statement::Source(def) = parse_statement(&ddl).unwrap() else { panic!() };
    let err = StreamContext::new().register_source(&def).await.unwrap_err().to_string();
    assert!(err.contains("computed column b") && err.contains("too deeply nested"), "{err}");
}

/// The readings at `path` as a source with the computed column `q AS 1000 / (id - 999)`.
async fn failing_computed_column(path: &std::path::Path) -> StreamContext {
    let ddl = format!(
        "CREATE SOURCE readings (id BIGINT, v BIGINT, q AS 1000 / (id - 999)) \
         WITH (connector = 'file', path = '{}', format = 'json')",
        path.display()
    );
    let Statement::Source(def) = parse_statement(&ddl).unwrap() else { panic!() };
    let mut ctx = StreamContext::new();
    ctx.register_source(&def).await.unwrap();
    ctx
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_computed_column_failing_on_one_row_dead_letters_that_row_alone() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = readings(dir.path(), 2_000, "ts_ms");
    let ctx = failing_computed_column(&path).await;
    let (batches, dead, _) = run(&ctx, "SELECT id, q FROM readings", 1).await;
    let got: Vec<(Option<i64>, Option<i64>)> =
        column_i64(&batches, 0).into_iter().zip(column_i64(&batches, 1)).collect();
    let want: Vec<(Option<i64>, Option<i64>)> =
        (0..2_000i64).filter(|id| *id != 999).map(|id| (Some(id), Some(1_000 / (id - 999)))).collect();
    assert_eq!(got, want);
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].operator, "computed columns");
    assert_eq!(dead[0].payload, format!(r#"{{"id":999,"v":{}}}"#, 999 % 13));
}

/// A row at the very end of time is in no window that exists: a dead letter saying so, never a
/// panic or a window that wrapped around; the rows before it are counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_at_the_end_of_time_is_a_dead_letter_not_an_overflow() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("readings.jsonl");
    let mut text: String = (0..100)
        .map(|id| format!("{{\"id\":{id},\"sensor\":1,\"ts_ms\":{},\"v\":1}}\n", id * 1_000))
        .collect();
    text.push_str(&format!("{{\"id\":100,\"sensor\":1,\"ts_ms\":{},\"v\":1}}\n", i64::MAX));
    std::fs::write(&path, text).unwrap();
    let ctx = readings_source(&path).await;
    for window in ["tumble(ts, INTERVAL '10' SECOND)", "hop(ts, INTERVAL '5' SECOND, INTERVAL '10' SECOND)"] {
        let query = format!("SELECT window_start, count(*) AS n FROM readings GROUP BY {window}");
        let (batches, dead, report) = run(&ctx, &query, 1).await;
        let per_window = if window.starts_with("hop") { 2 } else { 1 };
        let counted: i64 = column_i64(&batches, 1).into_iter().map(Option::unwrap).sum();
        assert_eq!(counted, 100 * per_window, "{window}");
        assert_eq!((report.late_records, dead.len()), (0, 1), "{window}: {dead:?}");
        assert!(dead[0].error.contains("end of time"), "{}", dead[0].error);
    }
    // A session ending after i64::MAX: no window either.
    let query = "SELECT window_start, count(*) AS n FROM readings GROUP BY session(ts, INTERVAL '1' SECOND)";
    let (_, dead, _) = run(&ctx, query, 1).await;
    assert_eq!(dead.len(), 1, "{dead:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_name_their_source_and_where_the_row_was_read() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = readings(dir.path(), 2_000, "ts_ms");
    let ctx = failing_computed_column(&path).await;
    let (_, mut dead, _) = run(&ctx, "SELECT id, q, 10 / (id - 500) AS r FROM readings", 2).await;
    dead.sort_by(|a, b| a.operator.cmp(&b.operator));
    assert_eq!(dead.len(), 2, "{dead:?}");
    // Decoded from line 1 000 of the file: the computed column knows the line.
    assert_eq!(dead[0].operator, "computed columns");
    assert_eq!(dead[0].origin, format!("source readings: {}:1000", path.display()));
    // After decoding, rows no longer know their line: the source is named.
    assert_eq!(dead[1].operator, "projection");
    assert_eq!(dead[1].origin, "source readings");
    // Memory batches have no lines either.
    let (_, dead, _) = run(&ids(0..3_000).await, "SELECT 10 / (id - 2000) FROM t", 1).await;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].origin, "source t");
}
