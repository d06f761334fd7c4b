//! Lines of a file go through a pipeline into JSON-lines and CSV files and come back equal.

#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

use serde::{Deserialize, Serialize};
use weir_connectors::{FileSink, FileSource, Line, ParseExt};
use weir_runtime::{CollectSink, DeadLetter, Pipeline};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Event {
    user: String,
    n: u64,
    line: u64,
    note: String,
}

fn pipeline(name: &str, parallelism: usize) -> Pipeline {
    Pipeline::builder(name).parallelism(parallelism).handle_signals(false).build().unwrap()
}

/// The event of input line `line` holding `user n`.
fn event(user: &str, n: u64, line: u64) -> Event {
    // Commas, quotes and non-ASCII exercise CSV quoting and JSON escaping.
    let note = format!("say \"hi\", {user} — #{line}");
    Event { user: user.to_owned(), n, line, note }
}

fn parse_event(l: &Line) -> Event {
    let (user, n) = l.text.split_once(' ').unwrap();
    event(user, n.parse().unwrap(), l.line)
}

/// Writes `count` lines `user{i % users} {i}` and returns the events they should become.
fn write_input(path: &std::path::Path, count: u64, users: u64) -> Vec<Event> {
    let text: String = (0..count).map(|i| format!("user{} {i}\n", i % users)).collect();
    std::fs::write(path, text).unwrap();
    (0..count).map(|i| event(&format!("user{}", i % users), i, i + 1)).collect()
}

fn sorted(mut v: Vec<Event>) -> Vec<Event> {
    v.sort_by_key(|e| e.line);
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lines_round_trip_through_json_lines_files() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("events.txt");
    let want = write_input(&input, 3_000, 7);

    // Written at parallelism 2: one input file, so subtask 1 reads nothing but still writes its
    // own, empty, file.
    let out = dir.path().join("out/events.jsonl");
    let p = pipeline("to-json", 2);
    p.source(FileSource::lines(input.to_str().unwrap()).batch_size(100))
        .map(|l| parse_event(&l))
        .sink(FileSink::json_lines(&out));
    p.run().await.unwrap();
    let sink = FileSink::json_lines(&out);
    let files = [sink.output_path(0, 2), sink.output_path(1, 2)];
    assert_eq!(files[0], dir.path().join("out/events-0.jsonl"));
    assert!(files.iter().all(|f| f.exists()), "{files:?}");
    assert!(!out.exists(), "at parallelism 2 the bare path is not written");
    let written: usize = files.iter().map(|f| std::fs::read_to_string(f).unwrap().lines().count()).sum();
    assert_eq!(written, 3_000);

    // Read back with one glob over both files, parsing every line.
    let p = pipeline("read-back", 2);
    let dead = CollectSink::<DeadLetter>::new();
    p.dead_letters(dead.clone());
    let back = CollectSink::new();
    let glob = dir.path().join("out/events-*.jsonl");
    p.source(FileSource::json_lines::<Event>(glob.to_str().unwrap())).parsed().sink(back.clone());
    let report = p.run().await.unwrap();
    assert_eq!(report.dead_letters, 0, "{:?}", dead.take());
    assert_eq!(sorted(back.take()), want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lines_round_trip_through_a_csv_file() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("events.txt");
    let want = write_input(&input, 500, 3);
    let out = dir.path().join("events.csv");

    let p = pipeline("to-csv", 1);
    p.source(FileSource::lines(input.to_str().unwrap())).map(|l| parse_event(&l)).sink(FileSink::csv(&out));
    p.run().await.unwrap();
    let text = std::fs::read_to_string(&out).unwrap();
    assert!(text.starts_with("user,n,line,note\n"), "{}", &text[..80]);
    assert_eq!(text.lines().count(), 501);

    let p = pipeline("from-csv", 1);
    let back = CollectSink::new();
    p.source(FileSource::csv::<Event>(out.to_str().unwrap())).parsed().sink(back.clone());
    let report = p.run().await.unwrap();
    assert_eq!(report.dead_letters, 0);
    assert_eq!(sorted(back.take()), want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_file_sink_gets_every_record_of_every_subtask_in_one_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("all.jsonl");
    let p = weir_runtime::Pipeline::builder("single").parallelism(3).handle_signals(false).build().unwrap();
    let records: Vec<(u32, String)> =
        (0..10_000).map(|i| (i, format!("record {i} {}", "x".repeat(i as usize % 50)))).collect();
    p.source(weir_runtime::MemorySource::new(records).batch_size(64))
        .sink(weir_connectors::FileSink::json_lines(&path).single_file());
    p.run().await.unwrap();
    let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names, ["all.jsonl"]);
    let mut seen: Vec<u32> = std::fs::read_to_string(&path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<(u32, String)>(l).unwrap().0)
        .collect();
    seen.sort_unstable();
    assert_eq!(seen, (0..10_000).collect::<Vec<_>>());
}
