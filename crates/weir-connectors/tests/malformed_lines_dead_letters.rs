//! CSV and JSON-lines files with 5 % malformed lines: every good line is processed, every bad
//! line is a dead letter with its `path:line`, and the job succeeds.

#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

use std::collections::BTreeMap;

use serde::Deserialize;
use weir_connectors::{FileSource, ParseExt};
use weir_runtime::{CollectSink, DeadLetter, Pipeline};

#[derive(Debug, Clone, PartialEq, Deserialize)]
struct Reading {
    sensor: String,
    value: f64,
    count: u32,
}

const LINES: usize = 1_000;

/// Line `i` (0-based, data lines only) is bad when `i % 20 == 7`: 5 %.
fn bad(i: usize) -> bool {
    i % 20 == 7
}

fn pipeline(name: &str) -> (Pipeline, CollectSink<DeadLetter>) {
    let p = Pipeline::builder(name).parallelism(2).handle_signals(false).build().unwrap();
    let dead = CollectSink::new();
    p.dead_letters(dead.clone());
    (p, dead)
}

/// Checks that the good records are all there and the dead letters are exactly the bad lines,
/// by `path:line`.
fn check(
    good: Vec<Reading>,
    dead: Vec<DeadLetter>,
    want_bad: &BTreeMap<String, String>,
    error_prefix: &str,
    dead_count: u64,
) {
    let mut counts: Vec<u32> = good.iter().map(|r| r.count).collect();
    counts.sort_unstable();
    let want: Vec<u32> = (0..LINES).filter(|&i| !bad(i)).map(|i| i as u32).collect();
    assert_eq!(counts, want, "every good line is processed once");
    assert!(good.iter().all(|r| r.sensor == format!("s{}", r.count % 4)));

    assert_eq!(dead.len(), want_bad.len());
    assert_eq!(dead_count, want_bad.len() as u64);
    let got: BTreeMap<String, String> = dead.iter().map(|d| (d.origin.clone(), d.payload.clone())).collect();
    assert_eq!(&got, want_bad, "dead letters by origin");
    for d in &dead {
        assert_eq!(d.operator, "try_map");
        assert!(d.error.starts_with(error_prefix), "{d:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_json_lines_become_dead_letters_with_their_line_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("readings.jsonl");
    let name = path.to_str().unwrap();
    let mut text = String::new();
    let mut want_bad = BTreeMap::new();
    let mut line = 0;
    let malformed =
        [r#"{"sensor": "s1", "value": 1.5"#, r#"{"sensor": 3, "value": 1, "count": 1}"#, "not json", "[]"];
    for i in 0..LINES {
        if i % 100 == 50 {
            text.push('\n'); // Blank lines are skipped, not dead, and still count.
            line += 1;
        }
        line += 1;
        let l = if bad(i) {
            let l = malformed[i / 20 % malformed.len()].to_owned();
            want_bad.insert(format!("{name}:{line}"), l.clone());
            l
        } else {
            format!(r#"{{"sensor":"s{}","value":{}.25,"count":{i}}}"#, i % 4, i)
        };
        text.push_str(&l);
        text.push('\n');
    }
    std::fs::write(&path, text).unwrap();
    assert_eq!(want_bad.len(), LINES / 20);

    let (p, dead) = pipeline("json-dlq");
    let good = CollectSink::new();
    p.source(FileSource::json_lines::<Reading>(name).batch_size(64)).parsed().sink(good.clone());
    let report = p.run().await.unwrap();
    check(good.take(), dead.take(), &want_bad, "invalid JSON", report.dead_letters);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_csv_lines_become_dead_letters_with_their_line_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("readings.csv");
    let name = path.to_str().unwrap();
    // Columns in another order than the struct's fields: mapped by name.
    let mut text = String::from("count,sensor,value\n");
    let mut want_bad = BTreeMap::new();
    let malformed = ["1,s1", "x,s1,2.5", "1,s1,2.5,extra", "2,\"s1,3.5", "3,s1,not-a-number"];
    for i in 0..LINES {
        let line = i + 2; // The header is line 1.
        let l = if bad(i) {
            let l = malformed[i / 20 % malformed.len()].to_owned();
            want_bad.insert(format!("{name}:{line}"), l.clone());
            l
        } else {
            format!("{i},s{},{}.5", i % 4, i)
        };
        text.push_str(&l);
        text.push_str(if i % 2 == 0 { "\n" } else { "\r\n" });
    }
    std::fs::write(&path, text).unwrap();

    let (p, dead) = pipeline("csv-dlq");
    let good = CollectSink::new();
    p.source(FileSource::csv::<Reading>(name).batch_size(64)).parsed().sink(good.clone());
    let report = p.run().await.unwrap();
    check(good.take(), dead.take(), &want_bad, "invalid CSV", report.dead_letters);
}

/// A reading outside the plausible range.
fn plausible(r: &Reading) -> Result<Reading, String> {
    if r.value < 500.0 { Ok(r.clone()) } else { Err(format!("implausible value {}", r.value)) }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_fallible_step_after_parsing_sends_its_failures_with_their_lines() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("readings.jsonl");
    let name = path.to_str().unwrap();
    let lines: Vec<String> = (0..LINES)
        .map(|i| match i {
            7 => "not json".to_owned(),
            _ => format!(r#"{{"sensor":"s{}","value":{i}.25,"count":{i}}}"#, i % 4),
        })
        .collect();
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();

    let (p, dead) = pipeline("two-steps");
    let good = CollectSink::new();
    p.source(FileSource::json_lines::<Reading>(name).batch_size(64))
        .parsed_traced()
        .try_map(|r| plausible(r))
        .sink(good.clone());
    let report = p.run().await.unwrap();
    assert_eq!(good.take().len(), 500 - 1, "values below 500, less the line that is not JSON");
    let mut dead = dead.take();
    dead.sort_by_key(|d| d.origin.rsplit(':').next().unwrap().parse::<usize>().unwrap());
    assert_eq!(report.dead_letters, 1 + 500);
    assert!(dead[0].error.starts_with("invalid JSON"), "{:?}", dead[0]);
    let second = &dead[1];
    assert_eq!(second.origin, format!("{name}:501"), "the line of the 500th reading");
    assert_eq!(second.payload, lines[500], "the line's text");
    assert_eq!(second.error, "implausible value 500.25");
}
