//! Bad records never stop a pipeline, and broken user code does.
//!
//! A log of 2 000 text lines, 5 % of them malformed in various ways, is parsed with `try_map`:
//! every good line is counted in the window results, every bad one reaches the dead-letter sink
//! with its origin (`file:line`), its payload and the parse error, `JobReport::dead_letters`
//! counts them, and the job succeeds. A panic in a `map` closure, on the other hand, fails
//! `run()` promptly with `Error::Panicked` naming the task that holds the map.

#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

use std::collections::BTreeMap;
use std::time::Duration;

use weir_runtime::{
    CollectSink, Count, DeadLetter, Error, MemorySource, Pipeline, Sum, Traceable, TumblingWindows,
    Watermarks,
};

const FILE: &str = "access.log";

/// A line of a file, as a file source would produce it.
#[derive(Debug, Clone, PartialEq)]
struct Line {
    file: &'static str,
    /// 1-based.
    number: usize,
    text: String,
}

impl Traceable for Line {
    fn origin(&self) -> String {
        format!("{}:{}", self.file, self.number)
    }

    fn payload(&self) -> String {
        self.text.clone()
    }
}

/// A parsed line: `timestamp,user,bytes`.
#[derive(Debug, Clone, PartialEq)]
struct Hit {
    ts: i64,
    user: String,
    bytes: u64,
}

fn parse(line: &Line) -> Result<Hit, String> {
    let fields: Vec<&str> = line.text.split(',').collect();
    let [ts, user, bytes] = fields[..] else {
        return Err(format!("expected 3 fields, found {}", fields.len()));
    };
    let ts = ts.parse().map_err(|e| format!("timestamp {ts:?}: {e}"))?;
    if user.is_empty() {
        return Err("empty user".to_owned());
    }
    let bytes = bytes.parse().map_err(|e| format!("bytes {bytes:?}: {e}"))?;
    Ok(Hit { ts, user: user.to_owned(), bytes })
}

/// 2 000 lines; every 20th (5 %) is malformed, in one of several ways.
fn lines() -> Vec<Line> {
    (1..=2_000usize)
        .map(|number| {
            let ts = number as i64 * 100;
            let user = ["ann", "bob", "cy"][number % 3];
            let text = if number % 20 == 7 {
                match (number / 20) % 6 {
                    0 => format!("{ts},{user}"),
                    1 => format!("yesterday,{user},{number}"),
                    2 => String::new(),
                    3 => format!("{ts},{user},-{number}"),
                    4 => format!("{ts},,{number}"),
                    _ => format!("{ts},{user},{number},extra"),
                }
            } else {
                format!("{ts},{user},{number}")
            };
            Line { file: FILE, number, text }
        })
        .collect()
}

/// (user, window start) -> (count, bytes), brute force over the good lines.
fn expected(lines: &[Line]) -> BTreeMap<(String, i64), (u64, u64)> {
    let mut want: BTreeMap<(String, i64), (u64, u64)> = BTreeMap::new();
    for hit in lines.iter().filter_map(|l| parse(l).ok()) {
        let w = want.entry((hit.user, hit.ts - hit.ts.rem_euclid(10_000))).or_default();
        w.0 += 1;
        w.1 += hit.bytes;
    }
    want
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_lines_become_dead_letters_and_the_good_ones_are_counted() {
    let lines = lines();
    let bad: Vec<&Line> = lines.iter().filter(|l| parse(l).is_err()).collect();
    assert_eq!(bad.len(), 100, "5 % of the lines are malformed");
    let want = expected(&lines);
    for parallelism in [1, 4] {
        let p =
            Pipeline::builder("dead letters").parallelism(parallelism).handle_signals(false).build().unwrap();
        let (out, dead) = (CollectSink::new(), CollectSink::new());
        p.dead_letters(dead.clone());
        p.source(MemorySource::new(lines.clone()).batch_size(64))
            .try_map(parse)
            .assign_timestamps(|h: &Hit| h.ts, Watermarks::bounded_out_of_orderness(Duration::from_secs(1)))
            .key_by(|h: &Hit| h.user.clone())
            .window(TumblingWindows::of(Duration::from_secs(10)))
            .aggregate((Count, Sum::of(|h: &Hit| h.bytes)))
            .sink(out.clone());
        let report = tokio::time::timeout(Duration::from_secs(20), p.run())
            .await
            .expect("the job completes")
            .expect("bad records do not fail the job");

        assert_eq!(report.dead_letters, 100, "p{parallelism}");
        assert_eq!(report.late_records, 0, "p{parallelism}");
        let got: BTreeMap<(String, i64), (u64, u64)> =
            out.take().into_iter().map(|r| ((r.key, r.window_start), r.value)).collect();
        assert_eq!(
            got.values().map(|v| v.0).sum::<u64>(),
            1_900,
            "p{parallelism}: every good line is counted"
        );
        assert_eq!(got, want, "p{parallelism}");

        let mut letters: Vec<DeadLetter> = dead.take();
        letters.sort_by_key(|l| l.origin.split(':').nth(1).and_then(|n| n.parse::<usize>().ok()));
        let want_letters: Vec<DeadLetter> = bad
            .iter()
            .map(|l| DeadLetter {
                operator: "try_map".to_owned(),
                origin: format!("{FILE}:{}", l.number),
                payload: l.text.clone(),
                error: parse(l).unwrap_err(),
            })
            .collect();
        assert_eq!(letters, want_letters, "p{parallelism}: each bad line with origin, payload and error");
        assert!(
            letters.iter().any(|l| l.error.contains("timestamp \"yesterday\"")),
            "the error text is the parser's"
        );
    }
}

/// Without a dead-letter sink the bad lines are logged and still counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_counted_without_a_dead_letter_sink() {
    let p = Pipeline::builder("dead letters").parallelism(2).handle_signals(false).build().unwrap();
    let out = CollectSink::new();
    p.source(MemorySource::new(lines()).batch_size(100)).try_map(parse).sink(out.clone());
    let report = tokio::time::timeout(Duration::from_secs(20), p.run()).await.unwrap().unwrap();
    assert_eq!(report.dead_letters, 100);
    assert_eq!(out.take().len(), 1_900);
}

/// A panic in user code fails the job with `Error::Panicked` naming the task of the map (before
/// and after the exchange), and `run()` returns instead of hanging on the other tasks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_in_map_fails_the_job_and_names_the_map() {
    fn explode(line: Line) -> Line {
        if line.number == 1_234 {
            panic!("boom at line {}", line.number);
        }
        line
    }
    for parallelism in [1, 4] {
        for after_exchange in [false, true] {
            let p =
                Pipeline::builder("panics").parallelism(parallelism).handle_signals(false).build().unwrap();
            let (out, dead) = (CollectSink::new(), CollectSink::new());
            p.dead_letters(dead.clone());
            let lines = p.source(MemorySource::new(lines()).batch_size(16));
            let lines = if after_exchange {
                lines.key_by(|l: &Line| l.number % 7).into_stream().map(explode)
            } else {
                lines.map(explode)
            };
            lines
                .try_map(parse)
                .assign_timestamps(|h: &Hit| h.ts, Watermarks::monotonic())
                .key_by(|h: &Hit| h.user.clone())
                .window(TumblingWindows::of(Duration::from_secs(10)))
                .aggregate(Count)
                .sink(out.clone());
            let result = tokio::time::timeout(Duration::from_secs(10), p.run())
                .await
                .unwrap_or_else(|_| panic!("p{parallelism}: run() returns after a panic"));
            let Err(Error::Panicked { operator, message }) = result else {
                panic!("p{parallelism}: expected Error::Panicked, got {result:?}");
            };
            assert!(
                operator.contains("-> map"),
                "p{parallelism} after exchange {after_exchange}: {operator:?}"
            );
            assert!(
                operator.starts_with(if after_exchange { "keyed" } else { "source" }),
                "p{parallelism}: the task that ran the map: {operator:?}"
            );
            assert_eq!(message, "boom at line 1234");
        }
    }
}

/// The 2 000 lines, then three good lines whose windows closed long before: late.
fn lines_with_late_ones() -> Vec<Line> {
    let mut lines = lines();
    for number in 2_001..=2_003 {
        lines.push(Line { file: FILE, number, text: format!("{},ann,1", number - 2_000) });
    }
    lines
}

/// The child side of the stderr tests: runs the pipeline when `WEIR_STDERR_CHILD` says how
/// (`bare`: no dead-letter sink, no late output; `kept`: both), else does nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stderr_child() {
    let Some(mode) = std::env::var_os("WEIR_STDERR_CHILD") else { return };
    let p = Pipeline::builder("unseen").parallelism(1).handle_signals(false).build().unwrap();
    let (out, dead, late) = (CollectSink::new(), CollectSink::new(), CollectSink::new());
    if mode == "kept" {
        p.dead_letters(dead.clone());
    }
    let mut windows = p
        .source(MemorySource::new(lines_with_late_ones()).batch_size(64))
        .try_map(parse)
        .assign_timestamps(|h: &Hit| h.ts, Watermarks::monotonic())
        .key_by(|h: &Hit| h.user.clone())
        .window(TumblingWindows::of(Duration::from_secs(10)));
    if mode == "kept" {
        windows = windows.late_records(|records| records.sink(late.clone()));
    }
    windows.aggregate(Count).sink(out.clone());
    let report = p.run().await.unwrap();
    assert_eq!((report.dead_letters, report.late_records), (100, 3));
    assert_eq!(report.dead_letters_by_operator, BTreeMap::from([("try_map".to_owned(), 100)]));
    assert_eq!(report.has_untold_losses(), mode != "kept");
}

/// `stderr_child` in a child process in `mode`.
fn child(mode: &str) -> std::process::Command {
    let mut child = std::process::Command::new(std::env::current_exe().unwrap());
    child.args(["stderr_child", "--exact", "--nocapture", "--test-threads=1"]).env("WEIR_STDERR_CHILD", mode);
    child
}

/// The stderr of `stderr_child` run in a child process in `mode`.
fn child_stderr(mode: &str) -> String {
    let out = child(mode).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "child failed: {stderr}\n{}", String::from_utf8_lossy(&out.stdout));
    stderr
}

/// A program without a `tracing` subscriber and without a dead-letter sink or a late output
/// still learns what it lost: `run` prints the report on stderr — dead letters per operator,
/// the first ones with origin, error and payload, and the late records.
#[test]
fn without_a_dead_letter_sink_or_late_output_the_losses_are_summarised_on_stderr() {
    let stderr = child_stderr("bare");
    assert!(
        stderr.contains(
            "weir: pipeline unseen: 100 dead letters (try_map: 100), not kept (no dead-letter sink); the first:"
        ),
        "{stderr}"
    );
    let lines = lines();
    for l in lines.iter().filter(|l| parse(l).is_err()).take(weir_runtime::FIRST_DEAD_LETTERS) {
        let want =
            format!("\n  try_map at {FILE}:{}: {}; payload: {:?}\n", l.number, parse(l).unwrap_err(), l.text);
        assert!(stderr.contains(&want), "missing {want:?} in {stderr}");
    }
    assert!(
        stderr.contains("\n3 late records (their windows had closed; counted only, no late output)\n"),
        "{stderr}"
    );
}

/// With a dead-letter sink and a late output, nothing is printed: the user sees them there.
#[test]
fn with_a_dead_letter_sink_and_a_late_output_nothing_is_printed() {
    let stderr = child_stderr("kept");
    assert!(!stderr.contains("weir:"), "{stderr}");
}

/// A closed stderr (a pipe nobody reads: every write fails) does not make `run` panic or fail.
#[test]
fn a_closed_stderr_does_not_fail_the_job() {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let status = child("bare").stderr(writer).stdout(std::process::Stdio::null()).status().unwrap();
    assert!(status.success(), "{status}");
}
