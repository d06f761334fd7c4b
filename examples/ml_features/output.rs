//! Label rows in, training sets out: CSV or Parquet, written atomically (a temporary file in
//! the same directory, synced, then renamed over the target), so a run killed while writing
//! leaves the old file or none, never half of one.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use arrow::array::{ArrayRef, Int64Array, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use weir::features::{FeatureRow, Label, Value};

use crate::txn::FEATURES;

/// Reads label rows: CSV with the header `user,ts` (`ts` in epoch ms).
pub(crate) fn read_labels(path: &Path) -> anyhow::Result<Vec<Label<String>>> {
    let mut r = csv::Reader::from_path(path).with_context(|| format!("reading labels {}", path.display()))?;
    let header: Vec<String> = r.headers()?.iter().map(str::to_owned).collect();
    anyhow::ensure!(
        header == ["user", "ts"],
        "labels {}: the header must be `user,ts`, not {header:?}",
        path.display()
    );
    let mut labels = Vec::new();
    for (i, row) in r.records().enumerate() {
        let row = row.with_context(|| format!("labels {} row {}", path.display(), i + 2))?;
        let at = row[1].trim().parse::<i64>().with_context(|| {
            format!("labels {} row {}: ts {:?} is not epoch ms", path.display(), i + 2, &row[1])
        })?;
        labels.push(Label { entity: row[0].to_owned(), at });
    }
    Ok(labels)
}

/// A feature's value as an integer column: counts and sums are integers (sums of integer
/// cents are exact in an `f64` below 2^53); `None` for no value (the last amount of a user
/// with no event yet).
fn int(v: &Value) -> Option<i64> {
    match v {
        Value::Count(c) => Some(i64::try_from(*c).unwrap_or(i64::MAX)),
        Value::Number(x) => Some(x.round() as i64),
        _ => None,
    }
}

/// Writes one row per label — `user,ts` and the features — as CSV if `out` ends in `.csv`,
/// else as Parquet.
pub(crate) fn write_training_set(
    out: &Path,
    labels: &[Label<String>],
    rows: &[FeatureRow],
) -> anyhow::Result<()> {
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let name = out.file_name().context("the training set's path has no file name")?.to_string_lossy();
    let tmp = out.with_file_name(format!(".{name}.tmp"));
    let csv = out.extension().is_some_and(|e| e.eq_ignore_ascii_case("csv"));
    let written = if csv { write_csv(&tmp, labels, rows) } else { write_parquet(&tmp, labels, rows) };
    written.and_then(|()| commit(&tmp, out)).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

fn write_csv(path: &Path, labels: &[Label<String>], rows: &[FeatureRow]) -> anyhow::Result<()> {
    let mut w = csv::Writer::from_path(path)?;
    w.write_record(["user", "ts"].into_iter().chain(FEATURES))?;
    let mut fields: Vec<String> = Vec::with_capacity(2 + FEATURES.len());
    for (label, row) in labels.iter().zip(rows) {
        fields.clear();
        fields.push(label.entity.clone());
        fields.push(label.at.to_string());
        fields.extend(row.values.iter().map(|v| int(&v.value).map(|x| x.to_string()).unwrap_or_default()));
        w.write_record(&fields)?;
    }
    w.flush()?;
    Ok(())
}

fn write_parquet(path: &Path, labels: &[Label<String>], rows: &[FeatureRow]) -> anyhow::Result<()> {
    let mut fields =
        vec![Field::new("user", DataType::Utf8, false), Field::new("ts", DataType::Int64, false)];
    fields.extend(FEATURES.iter().map(|f| Field::new(*f, DataType::Int64, *f == "last_amount")));
    let schema = Arc::new(Schema::new(fields));
    let file = std::fs::File::create(path)?;
    let mut w = parquet::arrow::ArrowWriter::try_new(file, schema.clone(), None)?;
    for (labels, rows) in labels.chunks(65_536).zip(rows.chunks(65_536)) {
        let mut columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from_iter_values(labels.iter().map(|l| l.entity.as_str()))),
            Arc::new(Int64Array::from_iter_values(labels.iter().map(|l| l.at))),
        ];
        for f in 0..FEATURES.len() {
            columns.push(Arc::new(rows.iter().map(|r| int(&r.values[f].value)).collect::<Int64Array>()));
        }
        w.write(&RecordBatch::try_new(schema.clone(), columns)?)?;
    }
    w.close()?;
    Ok(())
}

/// Syncs `tmp` and renames it over `out`, then syncs the directory.
fn commit(tmp: &Path, out: &Path) -> anyhow::Result<()> {
    std::fs::File::open(tmp)?.sync_all()?;
    std::fs::rename(tmp, out).with_context(|| format!("renaming {} to {}", tmp.display(), out.display()))?;
    let dir: PathBuf = match out.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.into(),
        _ => ".".into(),
    };
    std::fs::File::open(dir)?.sync_all()?;
    Ok(())
}
