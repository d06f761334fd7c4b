//! `log_analytics --scale-out` on three processes sharing a real Kafka broker, one of them
//! SIGKILLed at a random moment past 30 % of the lines and started again, gives exactly the rows
//! of the one-process job over the same lines (its `<kind>.jsonl` files): every row once, none
//! missing, none repeated, field for field.
//!
//! The lines go to Kafka through `log_analytics --kafka-ingest-only`; a closing line per
//! partition, two hours of event time later, closes every window and session of the lines
//! (the rows it makes itself are left out of the comparison). Run with `--features kafka`
//! (`.ci/run` does); the broker comes from `weir_testkit::kafka`.

#![allow(clippy::unwrap_used)]

#[path = "../../crates/weir-kafka/tests/common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{Children, assigned, bootstrap, create_topic, lso_and_high, read_all, wait_until};
use rdkafka::ClientConfig;
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
use weir_testkit::Rng;

const EVENTS: u64 = 200_000;
const PARTITIONS: i32 = 6;
const KINDS: [&str; 5] = ["status", "paths", "clients", "alerts", "sessions"];
/// 2026-11-24T00:00:00Z, where the synthetic log starts (100 lines per second).
const START_MS: i64 = 1_795_478_400_000;

mod built;

/// The example `name` built with the feature `kafka`.
fn example(name: &str) -> PathBuf {
    built::example(name, Some("kafka"))
}

fn log_analytics(cwd: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(example("log_analytics"));
    cmd.args(args).args(["--metrics-addr", "127.0.0.1:0"]).current_dir(cwd);
    cmd.env_remove("WEIR_DIR").env_remove("RUST_LOG");
    cmd
}

fn succeed(mut cmd: Command) {
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{cmd:?}: {}\n{}", out.status, String::from_utf8_lossy(&out.stderr));
}

/// A row: its kind and its fields.
type Row = (String, serde_json::Value);

/// The one-process job's rows, from its files.
fn expected(out: &Path) -> Vec<Row> {
    let mut rows: Vec<Row> = KINDS
        .iter()
        .flat_map(|kind| {
            let text = std::fs::read_to_string(out.join(format!("{kind}.jsonl"))).unwrap();
            text.lines().map(|l| (kind.to_string(), serde_json::from_str(l).unwrap())).collect::<Vec<_>>()
        })
        .collect();
    rows.sort_by_key(|r| format!("{r:?}"));
    rows
}

/// The results topic's committed rows of windows that start before `before` (RFC 3339).
fn results(b: &str, before: &str) -> Vec<Row> {
    let mut rows: Vec<Row> = read_all(b, "access_stats.results", "read_committed")
        .into_iter()
        .map(|r| (r.key.unwrap(), serde_json::from_str::<serde_json::Value>(&r.value).unwrap()))
        .filter(|(_, v)| v["window_start"].as_str().unwrap() < before)
        .collect();
    rows.sort_by_key(|r| format!("{r:?}"));
    rows
}

/// One line per partition at `at_ms`: a client of its own, so it
/// joins no session or count of the lines.
fn closing_lines(b: &str, topic: &str, at_ms: i64) {
    let producer: ThreadedProducer<_> = ClientConfig::new().set("bootstrap.servers", b).create().unwrap();
    let secs = (at_ms - START_MS) / 1000;
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    for p in 0..PARTITIONS {
        let line = format!(
            "10.255.0.{p} - - [24/Nov/2026:{h:02}:{m:02}:{s:02} +0000] \"GET /closing HTTP/1.1\" 200 1 \"-\" \"closing\" 0.001"
        );
        producer.send(BaseRecord::<str, str>::to(topic).partition(p).key("closing").payload(&line)).unwrap();
    }
    producer.flush(Duration::from_secs(30)).unwrap();
}

/// The lines the first task group committed (0 before it committed).
fn parsed(b: &str) -> i64 {
    common::committed(b, "access_stats-parse", "access", PARTITIONS).values().map(|(offset, _)| offset).sum()
}

fn start(cwd: &Path, b: &str, shared: &Path) -> Child {
    let dir = shared.to_str().unwrap();
    log_analytics(
        cwd,
        &["--kafka-bootstrap", b, "--scale-out", "--dir", dir, "--checkpoint-interval", "300ms"],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::inherit())
    .spawn()
    .unwrap()
}

#[test]
fn three_processes_one_killed_give_the_rows_of_one() {
    let Some(b) = bootstrap() else { return };
    let mut rng = Rng::from_env_or_clock("WEIR_KAFKA_SEED");
    let cwd = tempfile::tempdir().unwrap();
    let cwd = cwd.path();
    let events = EVENTS.to_string();
    succeed(log_analytics(cwd, &["--generate", "access.log", "--events", &events]));
    succeed(log_analytics(cwd, &["--input", "access.log", "--dir", "one", "--out", "one-out", "--quiet"]));
    let want = expected(&cwd.join("one-out"));
    let sessions = want.iter().filter(|r| r.0 == "sessions").count();
    assert!(want.len() > 500 && sessions > 100, "{} rows, {sessions} sessions", want.len());

    succeed(log_analytics(
        cwd,
        &[
            "--input",
            "access.log",
            "--kafka-bootstrap",
            &b,
            "--kafka-ingest-only",
            "--dir",
            "ingest",
            "--quiet",
        ],
    ));
    let end_ms = START_MS + EVENTS as i64 * 10;
    closing_lines(&b, "access", end_ms + 2 * 3_600_000);
    // Every row of the lines starts before their end; the closing lines' rows start after.
    let before = "2026-11-24T01:00:00.000Z";

    // Made here so that it can be read before the processes make it.
    create_topic(&b, "access_stats.results", 1);
    let shared = cwd.join("shared");
    let mut children = Children::default();
    for _ in 0..3 {
        children.0.push(start(cwd, &b, &shared));
    }
    wait_until(Duration::from_secs(120), "every process owning partitions", || {
        children.check_running();
        let owned = assigned(&b, "access_stats-parse");
        owned.len() == 3 && owned.iter().all(|n| *n > 0)
    });
    // Past 30 % of the lines (by the offsets the first task group committed), at random.
    let lines = (EVENTS + PARTITIONS as u64) as i64;
    let threshold = lines * 3 / 10 + rng.below(lines as u64 * 4 / 10) as i64;
    wait_until(Duration::from_secs(300), "30 % of the lines", || {
        children.check_running();
        parsed(&b) >= threshold
    });
    let victim = rng.below(3) as usize;
    eprintln!("SIGKILL process {victim} past line {threshold} of {lines}");
    children.0[victim].kill().unwrap();
    children.0[victim].wait().unwrap();
    std::thread::sleep(Duration::from_millis(rng.below(3_000)));
    children.0[victim] = start(cwd, &b, &shared);

    let mut last = 0;
    wait_until(Duration::from_secs(300), "every row", || {
        children.check_running();
        if lso_and_high(&b, "access_stats.results", 0).0 < want.len() as i64 {
            return false;
        }
        let n = results(&b, before).len();
        if n != last {
            eprintln!("{n} of {} rows", want.len());
            last = n;
        }
        n >= want.len()
    });
    // Let a late duplicate show up before comparing.
    std::thread::sleep(Duration::from_secs(3));
    let got = results(&b, before);
    if got != want {
        let mut diff: BTreeMap<String, i64> = BTreeMap::new();
        for r in &want {
            *diff.entry(format!("{r:?}")).or_default() -= 1;
        }
        for r in &got {
            *diff.entry(format!("{r:?}")).or_default() += 1;
        }
        diff.retain(|_, n| *n != 0);
        let shown: Vec<_> = diff.iter().take(10).collect();
        panic!(
            "{} rows from Kafka, {} from one process; (+ extra, - missing) {shown:#?}",
            got.len(),
            want.len()
        );
    }
}
