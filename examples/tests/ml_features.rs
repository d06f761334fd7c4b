//! `ml_features` run as a user runs it: its online lookups (taken from the running pipeline as
//! the append clock reaches each label) equal its *as served* training set; a run killed three
//! times at random moments and restarted writes what an uninterrupted run writes; `--follow`
//! serves lookups over HTTP until SIGINT. The DuckDB oracle (`examples/oracle/ml_features/`)
//! checks the values themselves.

#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use weir_testkit::Rng;

mod built;

fn example() -> PathBuf {
    built::example("ml_features", None)
}

/// Small synthetic data, its end time fixed so that every run over `dir` sees the same lines.
/// Dense enough (20 000 events over 4 hours) that a batch of the log source (1 024 records)
/// spans less event time (12 minutes) than the margins around the allowed lateness of an hour
/// (late events are up to 30 minutes or at least 90 minutes behind): which events are late then
/// does not depend on where batches start, which differs after a restore.
const SMALL: [&str; 14] = [
    "--events",
    "20000",
    "--span-hours",
    "4",
    "--users",
    "400",
    "--label-rows",
    "3000",
    "--serve",
    "127.0.0.1:0",
    "--metrics-addr",
    "127.0.0.1:0",
    "--checkpoint-interval",
    "100ms",
];
const END_MS: &str = "1796000000000";

fn command(dir: &Path, extra: &[&str]) -> Command {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("synthetic-end-ms"), END_MS).unwrap();
    let mut cmd = Command::new(example());
    cmd.args(SMALL).arg("--data-dir").arg(dir).args(extra).env_remove("RUST_LOG");
    cmd
}

fn run(dir: &Path, extra: &[&str]) -> Output {
    let out = command(dir, extra).output().unwrap();
    assert!(
        out.status.success(),
        "ml_features {extra:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The `summary {json}` line, without the output path.
fn summary(out: &Output) -> serde_json::Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line =
        stdout.lines().last().and_then(|l| l.strip_prefix("summary ")).unwrap_or_else(|| panic!("{stdout}"));
    let mut v: serde_json::Value = serde_json::from_str(line).unwrap();
    v.as_object_mut().unwrap().remove("training_set");
    v
}

/// The lookups the run printed (the busiest users as of the newest event).
fn printed_lookups(out: &Output) -> Vec<String> {
    let stderr = String::from_utf8_lossy(&out.stderr);
    stderr.lines().skip_while(|l| !l.starts_with("lookups as of")).take(4).map(str::to_owned).collect()
}

#[test]
fn online_lookups_equal_the_as_served_training_set() {
    let tmp = tempfile::tempdir().unwrap();
    let (online, served, happened) =
        (tmp.path().join("online.csv"), tmp.path().join("served.csv"), tmp.path().join("happened.csv"));
    let data = tmp.path().join("data");
    let out = run(
        &data,
        &[
            "--online-lookups",
            online.to_str().unwrap(),
            "--as-served",
            "--training-set",
            served.to_str().unwrap(),
        ],
    );
    let s = summary(&out);
    assert!(s["late"].as_u64().unwrap() > 0 && s["malformed"].as_u64().unwrap() > 0, "{s}");
    let (online, served) =
        (std::fs::read_to_string(online).unwrap(), std::fs::read_to_string(served).unwrap());
    assert_eq!(online.lines().count(), 3001);
    assert!(online == served, "online lookups differ from the as-served training set");
    run(&data, &["--training-set", happened.to_str().unwrap()]);
    let happened = std::fs::read_to_string(happened).unwrap();
    let differ = served.lines().zip(happened.lines()).filter(|(a, b)| a != b).count();
    // Late events make them differ, on some rows only.
    assert!(differ > 0 && differ < 1500, "{differ} of 3000 rows differ between as served and as happened");
}

#[test]
fn a_run_killed_three_times_writes_what_an_uninterrupted_run_writes() {
    let tmp = tempfile::tempdir().unwrap();
    let (reference, resumed) = (tmp.path().join("reference.csv"), tmp.path().join("resumed.csv"));
    let expected =
        run(&tmp.path().join("a"), &["--as-served", "--training-set", reference.to_str().unwrap()]);
    let mut rng = Rng::from_env_or_clock("ML_FEATURES_KILL_SEED");
    let dir = tmp.path().join("b");
    let args = ["--as-served", "--training-set", resumed.to_str().unwrap()];
    for _ in 0..3 {
        let mut child = command(&dir, &args).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
        std::thread::sleep(Duration::from_millis(rng.range(100, 2_500)));
        child.kill().unwrap();
        child.wait().unwrap();
    }
    let last = run(&dir, &args);
    assert_eq!(summary(&last), summary(&expected), "the summaries (late count included) differ");
    assert_eq!(printed_lookups(&last), printed_lookups(&expected), "the online state differs");
    assert!(
        std::fs::read(&resumed).unwrap() == std::fs::read(&reference).unwrap(),
        "the training set differs"
    );
}

/// One `GET` on a fresh connection: the status line and the body.
fn get(addr: &str, path: &str) -> (String, String) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let status = text.lines().next().unwrap_or_default().to_owned();
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (status, body)
}

fn interrupt(child: &Child) {
    let status = Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
}

#[test]
fn follow_serves_lookups_over_http_until_sigint() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("txns.jsonl");
    let mut lines = String::new();
    for i in 0..50 {
        let user = if i % 2 == 0 { "u7" } else { "u8" };
        lines += &format!(
            "{{\"user\":\"{user}\",\"merchant\":\"m{}\",\"amount_cents\":{},\"ts\":{}}}\n",
            i % 5,
            100 + i,
            1_796_000_000_000i64 + i * 1_000
        );
    }
    lines += "not json\n";
    std::fs::write(&input, &lines).unwrap();
    let mut child = Command::new(example())
        .args([
            "--input",
            input.to_str().unwrap(),
            "--follow",
            "--serve",
            "127.0.0.1:0",
            "--metrics-addr",
            "127.0.0.1:0",
        ])
        .arg("--data-dir")
        .arg(tmp.path().join("data"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env_remove("RUST_LOG")
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    let addr = loop {
        line.clear();
        assert!(stderr.read_line(&mut line).unwrap() > 0, "ml_features ended before serving");
        if let Some(rest) = line.strip_prefix("lookups        http://") {
            break rest.split('/').next().unwrap().to_owned();
        }
    };
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let deadline = Instant::now() + Duration::from_secs(60);
    line.clear();
    while !line.starts_with("caught up") {
        line.clear();
        assert!(stdout.read_line(&mut line).unwrap() > 0 && Instant::now() < deadline, "no `caught up`");
    }
    // u7 has 25 events 2 s apart, the newest at 48 s; as of 48 s the 5-minute window holds all.
    let (status, body) = get(&addr, "/features/user_txn/u7?at=1796000048000");
    assert!(status.contains("200"), "{status}: {body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["features"]["txn_count_5m"]["value"], 25, "{body}");
    assert_eq!(v["features"]["last_amount"]["value"], 148.0, "{body}");
    assert_eq!(v["newest_event"], 1_796_000_048_000i64, "{body}");
    // More input while it runs: served once applied.
    std::fs::OpenOptions::new()
        .append(true)
        .open(&input)
        .unwrap()
        .write_all(b"{\"user\":\"u9\",\"merchant\":\"m1\",\"amount_cents\":5,\"ts\":1796000050000}\n")
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, body) = get(&addr, "/features/user_txn/u9?at=1796000050000");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        if v["features"]["txn_count_1h"]["value"] == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "the appended line was never served: {body}");
        std::thread::sleep(Duration::from_millis(50));
    }
    interrupt(&child);
    let status = child.wait().unwrap();
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).unwrap();
    assert!(status.success(), "after SIGINT: {status}");
    let summary =
        rest.lines().last().and_then(|l| l.strip_prefix("summary ")).unwrap_or_else(|| panic!("{rest}"));
    let v: serde_json::Value = serde_json::from_str(summary).unwrap();
    assert_eq!((v["events"].as_u64(), v["malformed"].as_u64()), (Some(51), Some(1)), "{v}");
}
