//! Parquet in a checkpointed pipeline: a windowed job from Parquet files to a rolling Parquet
//! sink is stopped mid-run (a savepoint), and resumed at another parallelism; the committed
//! files hold the result of every input row exactly once, and what the sink left uncommitted is
//! gone.

#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use arrow::array::{AsArray, BooleanArray, Int64Array, RecordBatch};
use arrow::datatypes::{DataType, Field, Int64Type, Schema};
use datafusion::logical_expr::{ColumnarValue, Volatility, create_udf};
use parquet::arrow::ArrowWriter;
use parquet::file::properties::WriterProperties;
use weir_runtime::{Checkpointing, Pipeline};
use weir_sql::ddl::{Statement, parse_statement};
use weir_sql::{ParquetSink, StreamContext};

/// Files of input: 20 source batches (the Parquet reader's are 8 192 rows), so that the reads
/// a stop takes to land (a source ready at once and a stop race each other) leave most of the
/// input unread.
const FILES: i64 = 16;
const ROWS_PER_FILE: i64 = 10_000;
/// Rows a stopped run reads before it asks to stop: a sixteenth of the input. The stop comes
/// from the data, not a clock, so it lands mid-run on a machine of any speed.
const STOP_AT: usize = 10_000;

/// Input files of `ROWS_PER_FILE` rows `(id, v)` (`id` is also the event time, in ms), in row
/// groups of 3 000 rows (so a position falls inside a row group).
fn write_input(dir: &Path) {
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("v", DataType::Int64, false),
    ]));
    std::fs::create_dir_all(dir).unwrap();
    for f in 0..FILES {
        let file = std::fs::File::create(dir.join(format!("in-{f}.parquet"))).unwrap();
        let props = WriterProperties::builder().set_max_row_group_row_count(Some(3_000)).build();
        let mut w = ArrowWriter::try_new(file, schema.clone(), Some(props)).unwrap();
        let ids: Vec<i64> = (0..ROWS_PER_FILE).map(|i| f * ROWS_PER_FILE + i).collect();
        let vs: Vec<i64> = ids.iter().map(|i| i * 7 % 1000).collect();
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![Arc::new(Int64Array::from(ids)), Arc::new(Int64Array::from(vs))],
        )
        .unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
    }
}

/// Runs the job at `parallelism`; with `stop`, stops it (a savepoint) once [`STOP_AT`] rows
/// were read.
async fn run(dir: &Path, parallelism: usize, stop: bool) {
    let mut ctx = StreamContext::new();
    let p = Pipeline::builder("parquet-resume")
        .parallelism(parallelism)
        .handle_signals(false)
        .checkpointing(Checkpointing::to_dir(dir.join("checkpoints")).interval(Duration::from_millis(20)))
        .build()
        .unwrap();
    // `stop_at(id)` is true for every row; with `stop`, it counts the rows and stops the job
    // at `STOP_AT`.
    let handle = stop.then(|| p.stop_handle());
    let seen = AtomicUsize::new(0);
    ctx.register_udf(create_udf(
        "stop_at",
        vec![DataType::Int64],
        DataType::Boolean,
        Volatility::Volatile,
        Arc::new(move |args: &[ColumnarValue]| {
            let rows = ColumnarValue::values_to_arrays(args)?[0].len();
            let before = seen.fetch_add(rows, Ordering::Relaxed);
            if let Some(handle) = &handle
                && before < STOP_AT
                && before + rows >= STOP_AT
            {
                handle.stop();
            }
            Ok(ColumnarValue::Array(Arc::new(BooleanArray::from(vec![true; rows]))))
        }),
    ));
    let Statement::Source(def) = parse_statement(&format!(
        "CREATE SOURCE input (id BIGINT, v BIGINT, WATERMARK FOR id AS id - INTERVAL '1' SECOND) \
         WITH (connector = 'file', path = '{}/in/*.parquet', format = 'parquet')",
        dir.display()
    ))
    .unwrap() else {
        panic!()
    };
    ctx.register_source(&def).await.unwrap();
    // One group per row: every id once, with its own v.
    ctx.sql(
        "SELECT id, count(*) AS n, sum(v) AS v FROM input WHERE stop_at(id) \
         GROUP BY tumble(id, INTERVAL '1' SECOND), id",
    )
    .await
    .unwrap()
    .build(&p)
    .unwrap()
    .sink(ParquetSink::new(dir.join("out"), 3_000));
    p.run().await.unwrap();
}

/// Whether the newest checkpoint in `checkpoints` is the one of a finished job (not a
/// savepoint).
fn finished(checkpoints: &Path) -> bool {
    let newest =
        std::fs::read_dir(checkpoints).unwrap().filter_map(Result::ok).map(|e| e.path()).max().unwrap();
    let manifest = std::fs::read_to_string(newest.join("_manifest.json")).unwrap();
    let manifest: serde_json::Value = serde_json::from_str(&manifest).unwrap();
    manifest["finished"].as_bool().unwrap()
}

/// The ids of the committed output files, sorted, and the names of the other files (the
/// record of commits, `.committed`, aside).
fn output(dir: &Path) -> (Vec<i64>, Vec<String>) {
    let (mut ids, mut others) = (Vec::new(), Vec::new());
    for entry in std::fs::read_dir(dir.join("out")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name == ".committed" {
            continue;
        }
        if name.starts_with('.') {
            others.push(name);
            continue;
        }
        let file = std::fs::File::open(&path).unwrap();
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
            .unwrap()
            .build()
            .unwrap();
        for b in reader {
            let b = b.unwrap();
            let (id, n, v) = (
                b.column(0).as_primitive::<Int64Type>(),
                b.column(1).as_primitive::<Int64Type>(),
                b.column(2).as_primitive::<Int64Type>(),
            );
            for i in 0..b.num_rows() {
                assert_eq!((n.value(i), v.value(i)), (1, id.value(i) * 7 % 1000), "row {i} of {name}");
                ids.push(id.value(i));
            }
        }
    }
    ids.sort_unstable();
    (ids, others)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 16)]
async fn a_stopped_parquet_job_resumes_at_another_parallelism_without_loss_or_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    write_input(&dir.path().join("in"));
    run(dir.path(), 2, true).await;
    assert!(!finished(&dir.path().join("checkpoints")), "the job ended before the stop");
    let (first, _) = output(dir.path());
    let all: Vec<i64> = (0..FILES * ROWS_PER_FILE).collect();
    assert!(first.len() < all.len());
    // What a crash would leave: a file never committed.
    std::fs::write(dir.path().join("out/.part-0-99.parquet.inprogress"), b"half a file").unwrap();

    run(dir.path(), 3, false).await;
    let (ids, others) = output(dir.path());
    assert!(others.is_empty(), "uncommitted files left: {others:?}");
    assert_eq!(ids.len(), all.len(), "rows (duplicates or losses)");
    assert_eq!(ids, all);
}
