//! Parquet in a typed pipeline, without a SQL engine: record batches written by `ParquetSink`
//! come back equal through `ParquetSource`, files named by a glob are read oldest first, and a
//! pattern that names nothing is an error naming it.

#![cfg(feature = "parquet")]
#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

use std::sync::Arc;

use arrow::array::{Array, AsArray, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef};
use weir_connectors::{ParquetSink, ParquetSource};
use weir_runtime::{CollectSink, MemorySource, Pipeline};

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("n", DataType::Int64, false),
        Field::new("name", DataType::Utf8, true),
    ]))
}

/// A batch of rows `from..to`: `n` and `name = "row <n>"` (null for multiples of 7).
fn rows(from: i64, to: i64) -> RecordBatch {
    let n = Int64Array::from_iter_values(from..to);
    let name: StringArray = (from..to).map(|i| (i % 7 != 0).then(|| format!("row {i}"))).collect();
    RecordBatch::try_new(schema(), vec![Arc::new(n), Arc::new(name)]).unwrap()
}

fn pipeline(name: &str, parallelism: usize) -> Pipeline {
    Pipeline::builder(name).parallelism(parallelism).handle_signals(false).build().unwrap()
}

/// Every `(n, name)` of `batches`, sorted by `n`.
fn values(batches: &[RecordBatch]) -> Vec<(i64, Option<String>)> {
    let mut out = Vec::new();
    for b in batches {
        let n = b.column(0).as_primitive::<Int64Type>();
        let name = b.column(1).as_string::<i32>();
        for i in 0..b.num_rows() {
            out.push((n.value(i), name.is_valid(i).then(|| name.value(i).to_owned())));
        }
    }
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn record_batches_round_trip_through_parquet_files_in_a_typed_pipeline() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let input: Vec<RecordBatch> = (0..10).map(|i| rows(i * 500, (i + 1) * 500)).collect();

    let p = pipeline("to-parquet", 1);
    p.source(MemorySource::new(input.clone())).sink(ParquetSink::new(&out, 1_200));
    p.run().await.unwrap();
    let files = std::fs::read_dir(&out).unwrap().count();
    assert!(files >= 4, "5 000 rows rolled every 1 200 rows make several files, got {files}");

    // Read back at parallelism 2 (files split between the subtasks), a column cast on the way:
    // the declared schema wins.
    let collected = CollectSink::new();
    let p = pipeline("from-parquet", 2);
    let pattern = format!("{}/part-*.parquet", out.display());
    p.source(ParquetSource::new(pattern, schema())).sink(collected.clone());
    p.run().await.unwrap();
    let back = collected.take();
    assert!(back.iter().all(|b| b.schema() == schema()));
    assert_eq!(values(&back), values(&input));
}

#[tokio::test]
async fn a_glob_is_read_oldest_first_like_every_file_source() {
    let dir = tempfile::tempdir().unwrap();
    // `b` is older than `a`: modification time, not the name, orders them.
    let now = std::time::SystemTime::now();
    for (name, from, age) in [("b", 0, 60), ("a", 100, 0)] {
        let p = pipeline(name, 1);
        p.source(MemorySource::new(vec![rows(from, from + 100)]))
            .sink(ParquetSink::new(dir.path().join(name), 1_000));
        p.run().await.unwrap();
        let file = std::fs::File::options().write(true).open(dir.path().join(name).join("part-0-0.parquet"));
        file.unwrap().set_modified(now - std::time::Duration::from_secs(age)).unwrap();
    }
    let collected = CollectSink::new();
    let p = pipeline("read", 1);
    let pattern = format!("{}/*/part-*.parquet", dir.path().display());
    p.source(ParquetSource::new(pattern, schema())).sink(collected.clone());
    p.run().await.unwrap();
    let first: Vec<i64> =
        collected.take().iter().map(|b| b.column(0).as_primitive::<Int64Type>().value(0)).collect();
    assert_eq!(first, [0, 100], "b (written first) is read first");
}

#[tokio::test]
async fn a_pattern_that_names_no_file_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    for pattern in
        [format!("{}/*.parquet", dir.path().display()), format!("{}/missing.parquet", dir.path().display())]
    {
        let p = pipeline("read", 1);
        p.source(ParquetSource::new(pattern.clone(), schema())).sink(CollectSink::<RecordBatch>::new());
        let err = p.run().await.unwrap_err().to_string();
        assert!(err.contains(&pattern), "{err}");
    }
}
