//! End to end: SQL over a JSON-lines file, windowed and stateless, against brute force.

#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

use std::collections::BTreeMap;

use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::{Float64Type, Int32Type, Int64Type, TimestampMillisecondType};
use weir_runtime::{CollectSink, Pipeline};
use weir_sql::StreamContext;
use weir_sql::ddl::{Statement, parse_statement};

fn rows(n: i64) -> Vec<(i64, i32, f64, &'static str)> {
    (0..n)
        .map(|i| {
            (
                1_700_000_000_000 + i * 37 % 200_000,
                [200, 404, 500][(i % 3) as usize],
                (i % 17) as f64,
                ["GET", "OPTIONS"][(i % 5 == 0) as usize],
            )
        })
        .collect()
}

async fn context(dir: &std::path::Path, data: &[(i64, i32, f64, &str)]) -> StreamContext {
    let path = dir.join("access.jsonl");
    let text: String = data
        .iter()
        .map(|(ts, s, l, m)| {
            format!("{{\"ts_ms\":{ts},\"status\":{s},\"latency_ms\":{l},\"method\":\"{m}\"}}\n")
        })
        .collect();
    std::fs::write(&path, text + "not json\n").unwrap();
    let mut ctx = StreamContext::new();
    let ddl = format!(
        "CREATE SOURCE access (ts_ms BIGINT, status INT, latency_ms DOUBLE, method TEXT, \
         ts AS to_timestamp_millis(ts_ms), WATERMARK FOR ts AS ts - INTERVAL '1' SECOND) \
         WITH (connector = 'file', path = '{}', format = 'json')",
        path.display()
    );
    let Statement::Source(def) = parse_statement(&ddl).unwrap() else { panic!() };
    ctx.register_source(&def).await.unwrap();
    ctx
}

async fn run(
    ctx: &StreamContext,
    query: &str,
    parallelism: usize,
) -> (Vec<RecordBatch>, weir_runtime::JobReport) {
    let p = Pipeline::builder("sql").parallelism(parallelism).handle_signals(false).build().unwrap();
    let out = CollectSink::new();
    ctx.sql(query).await.unwrap().build(&p).unwrap().sink(out.clone());
    let report = p.run().await.unwrap();
    (out.take(), report)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tumbling_count_avg_sum_match_brute_force() {
    let dir = tempfile::tempdir().unwrap();
    let data = rows(20_000);
    let ctx = context(dir.path(), &data).await;
    // In file order, records are up to 200 s out of order; sort them so the 1 s bound holds.
    let mut sorted = data.clone();
    sorted.sort_by_key(|r| r.0);
    let ctx_sorted = context(dir.path(), &sorted).await;
    drop(ctx);
    let mut want: BTreeMap<(i64, i32), (i64, f64, f64)> = BTreeMap::new();
    for (ts, s, l, m) in &sorted {
        if *m == "OPTIONS" {
            continue;
        }
        let e = want.entry((ts - ts.rem_euclid(10_000), *s)).or_default();
        e.0 += 1;
        e.1 += l;
        e.2 += l;
    }
    for p in [1, 2] {
        let (batches, report) = run(
            &ctx_sorted,
            "SELECT window_start, status, count(*) AS n, avg(latency_ms) AS avg_ms, sum(latency_ms) AS total \
             FROM access WHERE method <> 'OPTIONS' GROUP BY tumble(ts, INTERVAL '10' SECOND), status",
            p,
        )
        .await;
        assert_eq!(report.dead_letters, 1, "the malformed line");
        let mut got = BTreeMap::new();
        for b in &batches {
            let ws = b.column(0).as_primitive::<TimestampMillisecondType>();
            let st = b.column(1).as_primitive::<Int32Type>();
            let n = b.column(2).as_primitive::<Int64Type>();
            let avg = b.column(3).as_primitive::<Float64Type>();
            let sum = b.column(4).as_primitive::<Float64Type>();
            for i in 0..b.num_rows() {
                assert!(
                    got.insert((ws.value(i), st.value(i)), (n.value(i), avg.value(i), sum.value(i)))
                        .is_none(),
                    "duplicate"
                );
            }
        }
        assert_eq!(got.len(), want.len(), "p{p}");
        for (k, (n, sum_l, _)) in &want {
            let (gn, gavg, gsum) = got[k];
            assert_eq!(gn, *n, "{k:?}");
            assert!((gsum - sum_l).abs() < 1e-9 && (gavg - sum_l / *n as f64).abs() < 1e-9, "{k:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stateless_queries_stream_and_errors_say_what_to_write() {
    let dir = tempfile::tempdir().unwrap();
    let ctx = context(dir.path(), &rows(1_000)).await;
    let (batches, _) =
        run(&ctx, "SELECT status, upper(method) AS m FROM access WHERE latency_ms > 15", 2).await;
    let n: usize = batches.iter().map(RecordBatch::num_rows).sum();
    assert_eq!(n, rows(1_000).iter().filter(|r| r.2 > 15.0).count());
    let err = ctx.sql("SELECT nope FROM access").await.unwrap_err().to_string();
    assert!(err.contains("nope"), "{err}");
}

/// Over a bounded source, queries a stream cannot answer run as a batch engine would: one
/// result, in order; over an unbounded one they are refused, saying what to write instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_over_a_bounded_source_run_as_batch_queries() {
    let dir = tempfile::tempdir().unwrap();
    let data = rows(1_000);
    let ctx = context(dir.path(), &data).await;
    for p in [1, 2] {
        let (batches, report) = run(&ctx, "SELECT status FROM access LIMIT 3", p).await;
        assert_eq!(batches.iter().map(RecordBatch::num_rows).sum::<usize>(), 3, "p{p}");
        assert_eq!(report.dead_letters, 1, "the malformed line, once");

        let (batches, _) =
            run(&ctx, "SELECT status, count(*) AS n FROM access GROUP BY status ORDER BY status", p).await;
        assert_eq!(batches.len(), 1, "one result batch: {batches:?}");
        let (status, n) = (
            batches[0].column(0).as_primitive::<Int32Type>(),
            batches[0].column(1).as_primitive::<Int64Type>(),
        );
        let got: Vec<(i32, i64)> =
            (0..batches[0].num_rows()).map(|i| (status.value(i), n.value(i))).collect();
        let mut want: BTreeMap<i32, i64> = BTreeMap::new();
        for r in &data {
            *want.entry(r.1).or_default() += 1;
        }
        assert_eq!(got, want.into_iter().collect::<Vec<_>>(), "p{p}");
    }
    // The same queries over a followed file: refused, with what to do instead.
    let path = dir.path().join("access.jsonl");
    let mut follow = StreamContext::new();
    let Statement::Source(def) = parse_statement(&format!(
        "CREATE SOURCE access (status INT) WITH (connector = 'file', path = '{}', format = 'json', follow = 'true')",
        path.display()
    ))
    .unwrap() else {
        panic!()
    };
    follow.register_source(&def).await.unwrap();
    for (q, want) in [
        ("SELECT status, count(*) FROM access GROUP BY status", "needs a window"),
        ("SELECT status FROM access ORDER BY status", "ORDER BY"),
        ("SELECT status FROM access LIMIT 3", "LIMIT"),
    ] {
        let err = follow.sql(q).await.unwrap_err().to_string();
        assert!(err.contains(want) && err.contains("bounded source"), "{q}: {err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_defined_functions_plan_and_run() {
    use std::sync::Arc;

    use arrow::array::{ArrayRef, Float64Array};
    use arrow::datatypes::DataType;
    use datafusion::logical_expr::{ColumnarValue, Volatility, create_udf};

    let dir = tempfile::tempdir().unwrap();
    let mut ctx = context(dir.path(), &rows(100)).await;
    let double = create_udf(
        "double_it",
        vec![DataType::Float64],
        DataType::Float64,
        Volatility::Immutable,
        Arc::new(|args: &[ColumnarValue]| {
            let arrays = ColumnarValue::values_to_arrays(args)?;
            let v = arrays[0].as_primitive::<Float64Type>();
            Ok(ColumnarValue::Array(
                Arc::new(v.iter().map(|x| x.map(|x| 2.0 * x)).collect::<Float64Array>()) as ArrayRef
            ))
        }),
    );
    ctx.register_udf(double);
    let (batches, _) = run(&ctx, "SELECT double_it(latency_ms) AS d, latency_ms FROM access", 1).await;
    let mut n = 0;
    for b in &batches {
        let (d, l) = (b.column(0).as_primitive::<Float64Type>(), b.column(1).as_primitive::<Float64Type>());
        for i in 0..b.num_rows() {
            assert_eq!(d.value(i), 2.0 * l.value(i));
            n += 1;
        }
    }
    assert_eq!(n, 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approximate_percentiles_run_in_windows() {
    let dir = tempfile::tempdir().unwrap();
    let mut data = rows(6_000);
    data.sort_by_key(|r| r.0);
    let ctx = context(dir.path(), &data).await;
    let (batches, _) = run(
        &ctx,
        "SELECT window_start, status, approx_percentile_cont(latency_ms, 0.99) AS p99, max(latency_ms) AS top \
         FROM access GROUP BY tumble(ts, INTERVAL '1' MINUTE), status",
        2,
    )
    .await;
    let mut windows = 0;
    for b in &batches {
        let (p99, top) =
            (b.column(2).as_primitive::<Float64Type>(), b.column(3).as_primitive::<Float64Type>());
        for i in 0..b.num_rows() {
            // latency_ms is i % 17 (0..=16): the 99th percentile of a window is 16 or very near.
            assert!(
                p99.value(i) > 15.0 && p99.value(i) <= top.value(i) + 1e-9,
                "{} vs {}",
                p99.value(i),
                top.value(i)
            );
            windows += 1;
        }
    }
    assert!(windows >= 3 * 3, "{windows}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parquet_files_round_trip_through_a_script() {
    let dir = tempfile::tempdir().unwrap();
    let mut data = rows(3_000);
    data.sort_by_key(|r| r.0);
    let mut ctx = context(dir.path(), &data).await;
    let parquet_dir = dir.path().join("pq");
    let script = weir_sql::Script::parse(&format!(
        "CREATE SINK copy WITH (connector = 'file', path = '{}', format = 'parquet', rows_per_file = '1000') AS \
         SELECT ts_ms, status, latency_ms FROM access WHERE method = 'GET'",
        parquet_dir.display()
    ))
    .unwrap();
    let options = weir_sql::ScriptOptions { parallelism: 2, ..Default::default() };
    script.run(&mut ctx, &options).await.unwrap();
    let files = std::fs::read_dir(&parquet_dir).unwrap().count();
    let gets = data.iter().filter(|r| r.3 == "GET").count();
    assert!(files >= gets / 1000, "{files} files for {gets} rows");

    let mut back = StreamContext::new();
    let Statement::Source(def) = parse_statement(&format!(
        "CREATE SOURCE copy (ts_ms BIGINT, status INT, latency_ms DOUBLE) \
         WITH (connector = 'file', path = '{}/*.parquet', format = 'parquet')",
        parquet_dir.display()
    ))
    .unwrap() else {
        panic!()
    };
    back.register_source(&def).await.unwrap();
    let (batches, _) = run(&back, "SELECT ts_ms, latency_ms FROM copy", 2).await;
    let mut got: Vec<(i64, f64)> = Vec::new();
    for b in &batches {
        let (t, l) = (b.column(0).as_primitive::<Int64Type>(), b.column(1).as_primitive::<Float64Type>());
        got.extend((0..b.num_rows()).map(|i| (t.value(i), l.value(i))));
    }
    got.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let mut want: Vec<(i64, f64)> = data.iter().filter(|r| r.3 == "GET").map(|r| (r.0, r.2)).collect();
    want.sort_by(|a, b| a.partial_cmp(b).unwrap());
    assert_eq!(got, want);
}
