//! CSV sources: without a header every line is a row; with one, columns are mapped by name.
//! Expected rows are computed here from the generated input, never taken from Weir.

#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::{DataType, Int64Type};
use weir_runtime::{CollectSink, Pipeline};
use weir_sql::StreamContext;
use weir_sql::ddl::{Statement, parse_statement};

/// Registers `CREATE SOURCE r (id BIGINT, name TEXT, value DOUBLE) WITH (... OPTIONS)` over `path`.
async fn source(path: &std::path::Path, options: &str) -> weir_sql::Result<StreamContext> {
    let ddl = format!(
        "CREATE SOURCE r (id BIGINT, name TEXT, value DOUBLE) \
         WITH (connector = 'file', path = '{}', format = 'csv'{options})",
        path.display()
    );
    let Statement::Source(def) = parse_statement(&ddl).unwrap() else { panic!("not a source") };
    let mut ctx = StreamContext::new();
    ctx.register_source(&def).await?;
    Ok(ctx)
}

/// `(id, name, value)` of every row of `SELECT id, name, value FROM r`, sorted, and the dead
/// letters.
async fn rows(ctx: &StreamContext) -> (Vec<(i64, String, i64)>, u64) {
    let p = Pipeline::builder("csv").parallelism(2).handle_signals(false).build().unwrap();
    let out = CollectSink::new();
    ctx.sql("SELECT id, name, CAST(value AS BIGINT) AS v FROM r")
        .await
        .unwrap()
        .build(&p)
        .unwrap()
        .sink(out.clone());
    let report = p.run().await.unwrap();
    let batches: Vec<RecordBatch> = out.take();
    let mut rows = Vec::new();
    for b in &batches {
        let (id, name) = (b.column(0).as_primitive::<Int64Type>(), b.column(1).as_string_opt::<i32>());
        let name = name.cloned().unwrap_or_else(|| {
            arrow::compute::cast(b.column(1), &DataType::Utf8).unwrap().as_string::<i32>().clone()
        });
        let v = b.column(2).as_primitive::<Int64Type>();
        rows.extend((0..b.num_rows()).map(|i| (id.value(i), name.value(i).to_owned(), v.value(i))));
    }
    rows.sort();
    (rows, report.dead_letters)
}

fn want(n: i64) -> Vec<(i64, String, i64)> {
    (0..n).map(|i| (i, format!("n{i}"), i * 10)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_csv_without_a_header_keeps_its_first_row() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.csv");
    std::fs::write(&path, (0..5).map(|i| format!("{i},n{i},{}\n", i * 10)).collect::<String>()).unwrap();
    let ctx = source(&path, "").await.unwrap();
    assert_eq!(rows(&ctx).await, (want(5), 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_csv_header_maps_columns_by_name_in_any_order() {
    let dir = tempfile::tempdir().unwrap();
    // Reordered, another case, an extra column the source does not declare; two files.
    for (file, ids) in [("a.csv", 0..2_000), ("b.csv", 2_000..20_000)] {
        let lines: String = ids.map(|i| format!("{},\"x, {i}\",n{i},{i}\n", i * 10)).collect();
        std::fs::write(dir.path().join(file), format!("Value,extra,name,ID\n{lines}")).unwrap();
    }
    let ctx = source(&dir.path().join("*.csv"), ", header = 'true'").await.unwrap();
    assert_eq!(rows(&ctx).await, (want(20_000), 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_csv_header_without_a_declared_column_is_refused_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.csv");
    std::fs::write(&path, "id,label,value\n1,a,2\n").unwrap();
    let err = source(&path, ", header = 'true'").await.unwrap_err().to_string();
    assert!(err.contains("r: option header:"), "{err}");
    assert!(err.contains(&path.display().to_string()), "{err}");
    assert!(err.contains("the header (id, label, value) lacks the declared column name"), "{err}");
}
