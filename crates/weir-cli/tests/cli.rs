//! The `weir` binary, run as a user would: real processes on a temporary log directory.

#![allow(clippy::unwrap_used, reason = "tests may unwrap (STYLE.md)")]

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Output, Stdio};

use serde_json::Value;

/// A log directory and a way to run `weir` on it.
struct Weir {
    dir: tempfile::TempDir,
}

impl Weir {
    fn new() -> Weir {
        Weir { dir: tempfile::tempdir().unwrap() }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_weir"));
        cmd.arg("--dir").arg(self.dir.path().join("log")).args(args);
        cmd.env_remove("WEIR_DIR").env_remove("RUST_LOG");
        cmd
    }

    /// Runs `weir ARGS` with `stdin` as its standard input.
    fn run(&self, args: &[&str], stdin: &[u8]) -> Output {
        let mut child = self
            .command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(stdin).unwrap();
        child.wait_with_output().unwrap()
    }

    /// Starts `weir ARGS` with its stdout piped, to be read line by line with [`next_line`].
    fn spawn(&self, args: &[&str]) -> (std::process::Child, BufReader<std::process::ChildStdout>) {
        let mut child = self.command(args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        (child, stdout)
    }

    /// Runs `weir ARGS`, which must succeed; returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        self.ok_with_input(args, b"")
    }

    fn ok_with_input(&self, args: &[&str], stdin: &[u8]) -> String {
        let out = self.run(args, stdin);
        assert!(out.status.success(), "weir {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs `weir ARGS`, which must fail with `code`; returns stderr.
    fn fails(&self, args: &[&str], code: i32) -> String {
        let out = self.run(args, b"");
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert_eq!(out.status.code(), Some(code), "weir {args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "weir {args:?} panicked: {stderr}");
        stderr
    }

    /// `consume` output as sorted lines.
    fn consume_sorted(&self, args: &[&str]) -> Vec<String> {
        let mut lines: Vec<String> = self.ok(args).lines().map(str::to_owned).collect();
        lines.sort();
        lines
    }

    fn json_lines(&self, args: &[&str]) -> Vec<Value> {
        self.ok(args).lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    }

    /// `group describe G --json`, as (topic, partition, committed, end, lag) rows.
    fn group(&self, group: &str) -> Vec<GroupRow> {
        let d = &self.json_lines(&["group", "describe", group, "--json"])[0];
        d["partitions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    p["topic"].as_str().unwrap().to_owned(),
                    p["partition"].as_u64().unwrap(),
                    p["committed"].as_u64(),
                    p["end_offset"].as_u64().unwrap(),
                    p["lag"].as_u64(),
                )
            })
            .collect()
    }
}

/// The next line a spawned command printed (waits for it).
fn next_line(stdout: &mut BufReader<std::process::ChildStdout>) -> String {
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    line
}

/// A row of `group describe --json`: (topic, partition, committed, end offset, lag).
type GroupRow = (String, u64, Option<u64>, u64, Option<u64>);

fn sorted(lines: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = lines.iter().map(|s| (*s).to_owned()).collect();
    v.sort();
    v
}

/// Cells of the table row whose first cell is `first`.
fn row<'a>(table: &'a str, first: &str) -> Vec<&'a str> {
    table
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|cells| cells.first() == Some(&first))
        .unwrap_or_else(|| panic!("no row {first:?} in\n{table}"))
}

#[test]
fn topic_create_list_describe_delete() {
    let weir = Weir::new();
    let created = weir.ok(&[
        "topic",
        "create",
        "events",
        "--partitions",
        "3",
        "--retention-bytes",
        "1000000",
        "--segment-bytes",
        "65536",
    ]);
    assert_eq!(created, "created topic events with 3 partitions\n");
    weir.ok(&["topic", "create", "other", "--partitions", "1"]);

    let list = weir.ok(&["topic", "list"]);
    assert_eq!(row(&list, "TOPIC"), ["TOPIC", "PARTITIONS", "RECORDS", "BYTES"]);
    assert_eq!(row(&list, "events"), ["events", "3", "0", "0"]);
    assert_eq!(row(&list, "other"), ["other", "1", "0", "0"]);

    weir.ok_with_input(&["produce", "events", "--partition", "2"], b"a\nb\n");
    let describe = weir.ok(&["topic", "describe", "events"]);
    assert_eq!(row(&describe, "partitions"), ["partitions", "3"]);
    assert_eq!(row(&describe, "retention.bytes"), ["retention.bytes", "1000000"]);
    assert_eq!(row(&describe, "retention.ms"), ["retention.ms", "unlimited"]);
    assert_eq!(row(&describe, "segment.bytes"), ["segment.bytes", "65536"]);
    assert_eq!(row(&describe, "PARTITION"), ["PARTITION", "START", "END", "RECORDS", "BYTES", "SEGMENTS"]);
    assert_eq!(row(&describe, "0")[1..4], ["0", "0", "0"]);
    assert_eq!(row(&describe, "2")[1..4], ["0", "2", "2"]);
    assert!(row(&describe, "2")[4].parse::<u64>().unwrap() > 0);
    assert_eq!(row(&describe, "2")[5], "1");
    // Columns are aligned: every line of the partition table has the same width.
    let widths: Vec<usize> =
        describe.lines().skip_while(|l| !l.contains("PARTITION")).map(str::len).collect();
    assert_eq!(widths.len(), 4);
    assert!(widths.iter().all(|&w| w == widths[0]), "{describe}");

    assert_eq!(weir.ok(&["topic", "delete", "events"]), "deleted topic events\n");
    let list = weir.ok(&["topic", "list"]);
    assert!(!list.contains("events"), "{list}");
    assert!(list.contains("other"), "{list}");
    let err = weir.fails(&["topic", "describe", "events"], 1);
    assert!(err.contains("unknown topic \"events\""), "{err}");
}

#[test]
fn produced_keyed_lines_are_consumed_from_the_beginning() {
    let weir = Weir::new();
    weir.ok(&["topic", "create", "t", "--partitions", "3"]);
    let input = b"a:1\nb:1\nc:1\na:2\nb:2\nkeyless\nc:2\na:3:with:colons\n\nlast-without-newline";
    let out = weir.run(&["produce", "t", "--key-separator", ":", "--batch-size", "4"], input);
    assert!(out.status.success());
    let summary = String::from_utf8(out.stderr).unwrap();
    assert!(summary.starts_with("produced 10 records to topic t (partitions: "), "{summary}");

    let values = weir.consume_sorted(&["consume", "t", "--from-beginning"]);
    let expected =
        sorted(&["1", "1", "1", "2", "2", "keyless", "2", "3:with:colons", "", "last-without-newline"]);
    assert_eq!(values, expected);
    // Without a start flag and without a group, reading starts at the earliest offset too.
    assert_eq!(weir.consume_sorted(&["consume", "t"]), expected);

    // Records of one key stay in order (one partition), and keys come back with --print-key.
    let keyed = weir.ok(&["consume", "t", "--print-key", "--key-separator", "="]);
    let a: Vec<&str> = keyed.lines().filter(|l| l.starts_with("a=")).collect();
    assert_eq!(a, ["a=1", "a=2", "a=3:with:colons"]);
    assert!(keyed.lines().any(|l| l == "=keyless"), "{keyed}");

    // --print-offset: partition, offset, value; offsets count from 0 in each partition.
    let with_offsets = weir.ok(&["consume", "t", "--print-offset", "--key-separator", " "]);
    assert_eq!(with_offsets.lines().count(), 10);
    assert!(with_offsets.lines().any(|l| l.ends_with(" 0 1")), "{with_offsets}");
}

#[test]
fn a_group_commits_what_it_printed_and_reports_lag() {
    let weir = Weir::new();
    weir.ok(&["topic", "create", "t", "--partitions", "2"]);
    weir.ok_with_input(&["produce", "t"], b"one\ntwo\nthree\nfour\n");

    assert_eq!(
        weir.consume_sorted(&["consume", "t", "--group", "g"]),
        sorted(&["one", "two", "three", "four"])
    );
    assert_eq!(weir.ok(&["consume", "t", "--group", "g"]), "", "a second run has nothing new");
    assert_eq!(weir.group("g"), [("t".into(), 0, Some(2), 2, Some(0)), ("t".into(), 1, Some(2), 2, Some(0))]);

    let table = weir.ok(&["group", "describe", "g"]);
    assert_eq!(row(&table, "TOPIC"), ["TOPIC", "PARTITION", "COMMITTED", "END", "LAG", "MEMBER"]);
    assert_eq!(row(&table, "t"), ["t", "0", "2", "2", "0", "-"]);
    assert_eq!(row(&weir.ok(&["group", "list"]), "g"), ["g", "2", "0"]);

    weir.ok_with_input(&["produce", "t", "--partition", "1"], b"five\nsix\nseven\n");
    assert_eq!(weir.group("g")[1], ("t".into(), 1, Some(2), 5, Some(3)));
    assert_eq!(row(&weir.ok(&["group", "list"]), "g"), ["g", "2", "3"]);

    // -n stops mid-batch: only the printed records are committed.
    assert_eq!(weir.ok(&["consume", "t", "--group", "g", "-n", "1"]), "five\n");
    assert_eq!(weir.group("g")[1], ("t".into(), 1, Some(3), 5, Some(2)));
    assert_eq!(weir.ok(&["consume", "t", "--group", "g"]), "six\nseven\n");
    assert_eq!(weir.group("g")[1].4, Some(0));

    // A start flag overrides the committed offsets (and commits the new position).
    assert_eq!(weir.ok(&["consume", "t", "--group", "g", "--offset", "4"]), "seven\n");
    assert_eq!(
        weir.ok(&["consume", "t", "--group", "other", "--from-beginning", "-n", "2"]).lines().count(),
        2
    );
    let groups = weir.ok(&["group", "list"]);
    assert_eq!(row(&groups, "other"), ["other", "2", "5"]);

    // A run that prints nothing still commits where it started: here, the end.
    assert_eq!(weir.ok(&["consume", "t", "--group", "late", "--since", "2999-01-01T00:00:00Z"]), "");
    assert_eq!(
        weir.group("late"),
        [("t".into(), 0, Some(2), 2, Some(0)), ("t".into(), 1, Some(5), 5, Some(0))]
    );

    // Deleting the topic forgets its committed offsets.
    weir.ok(&["topic", "delete", "t"]);
    assert_eq!(weir.group("g"), []);
}

#[test]
fn a_group_can_read_a_single_partition() {
    let weir = Weir::new();
    weir.ok(&["topic", "create", "t", "--partitions", "2"]);
    weir.ok_with_input(&["produce", "t", "--partition", "0"], b"p0-0\np0-1\n");
    weir.ok_with_input(&["produce", "t", "--partition", "1"], b"p1-0\np1-1\np1-2\n");

    // Only partition 1 is read, and only partition 1 is committed to the group.
    assert_eq!(weir.ok(&["consume", "t", "--group", "g", "--partition", "1"]), "p1-0\np1-1\np1-2\n");
    assert_eq!(weir.group("g"), [("t".into(), 1, Some(3), 3, Some(0))]);
    let table = weir.ok(&["group", "describe", "g"]);
    assert_eq!(row(&table, "members"), ["members", "0"]);
    assert_eq!(row(&table, "t"), ["t", "1", "3", "3", "0", "-"]);
    assert_eq!(row(&weir.ok(&["group", "list"]), "g"), ["g", "1", "0"]);

    // The next run starts from the group's committed offset; -n commits only what it printed.
    weir.ok_with_input(&["produce", "t", "--partition", "1"], b"p1-3\np1-4\n");
    assert_eq!(weir.ok(&["consume", "t", "--group", "g", "--partition", "1", "-n", "1"]), "p1-3\n");
    assert_eq!(weir.group("g"), [("t".into(), 1, Some(4), 5, Some(1))]);
    assert_eq!(weir.ok(&["consume", "t", "--group", "g", "-p", "1"]), "p1-4\n");
    assert_eq!(weir.group("g"), [("t".into(), 1, Some(5), 5, Some(0))]);

    // A start flag applies to the one partition, and its new position is committed.
    assert_eq!(
        weir.ok(&["consume", "t", "--group", "g", "--partition", "1", "--offset", "3"]),
        "p1-3\np1-4\n"
    );
    assert_eq!(weir.ok(&["consume", "t", "--group", "g", "--partition", "0", "--offset", "1"]), "p0-1\n");
    assert_eq!(weir.group("g"), [("t".into(), 0, Some(2), 2, Some(0)), ("t".into(), 1, Some(5), 5, Some(0))]);

    // The whole group then picks up from the offsets committed per partition.
    weir.ok_with_input(&["produce", "t", "--partition", "0"], b"p0-2\n");
    weir.ok_with_input(&["produce", "t", "--partition", "1"], b"p1-5\n");
    assert_eq!(weir.consume_sorted(&["consume", "t", "--group", "g"]), sorted(&["p0-2", "p1-5"]));
    assert_eq!(weir.group("g"), [("t".into(), 0, Some(3), 3, Some(0)), ("t".into(), 1, Some(6), 6, Some(0))]);

    // A new group reading one partition starts at its earliest offset.
    assert_eq!(weir.ok(&["consume", "t", "--group", "h", "--partition", "0", "--json"]).lines().count(), 3);
    assert_eq!(weir.group("h"), [("t".into(), 0, Some(3), 3, Some(0))]);
}

#[test]
fn json_output_is_one_object_per_line() {
    let weir = Weir::new();
    let created = weir.json_lines(&["topic", "create", "t", "--partitions", "2", "--json"]);
    assert_eq!(created[0]["topic"], "t");
    assert_eq!(created[0]["config"]["partitions"], 2);
    weir.ok_with_input(&["produce", "t", "-k", ":"], b"k:v\nplain\n");
    let summary = weir.json_lines(&["produce", "t", "--json"]);
    assert_eq!(summary[0]["records"], 0);

    let records = weir.json_lines(&["consume", "t", "--json"]);
    assert_eq!(records.len(), 2);
    for r in &records {
        assert_eq!(r["topic"], "t");
        assert!(r["partition"].as_u64().unwrap() < 2, "{r}");
        assert!(r["offset"].as_u64().unwrap() < 2, "{r}");
        assert!(r["timestamp"].as_i64().unwrap() > 1_600_000_000_000, "{r}");
        assert!(r["headers"].as_array().unwrap().is_empty(), "{r}");
    }
    assert_ne!(
        (&records[0]["partition"], &records[0]["offset"]),
        (&records[1]["partition"], &records[1]["offset"])
    );
    let keyed = records.iter().find(|r| r["value"] == "v").unwrap();
    assert_eq!(keyed["key"], "k");
    let keyless = records.iter().find(|r| r["value"] == "plain").unwrap();
    assert!(keyless["key"].is_null(), "{keyless}");

    let topics = weir.json_lines(&["topic", "list", "--json"]);
    assert_eq!(
        topics,
        [
            serde_json::json!({"topic": "t", "partitions": 2, "records": 2, "size_bytes": topics[0]["size_bytes"]})
        ]
    );
    assert!(topics[0]["size_bytes"].as_u64().unwrap() > 0);
    let described = weir.json_lines(&["topic", "describe", "t", "--json"]);
    assert_eq!(described.len(), 1);
    let keys = |v: &Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
    assert_eq!(keys(&described[0]), ["config", "partitions", "topic"]);
    assert_eq!(described[0]["topic"], "t");
    assert_eq!(described[0]["config"], created[0]["config"]);
    let partitions = described[0]["partitions"].as_array().unwrap();
    assert_eq!(partitions.len(), 2);
    for (i, p) in partitions.iter().enumerate() {
        assert_eq!(keys(p), ["end_offset", "partition", "segments", "size_bytes", "start_offset"]);
        assert_eq!(p["partition"], i);
        assert_eq!(p["start_offset"], 0);
    }
    assert_eq!(partitions.iter().map(|p| p["end_offset"].as_u64().unwrap()).sum::<u64>(), 2);
    assert_eq!(partitions[0]["segments"], 1);

    weir.ok(&["consume", "t", "--group", "g"]);
    let groups = weir.json_lines(&["group", "list", "--json"]);
    assert_eq!(groups, [serde_json::json!({"group": "g", "partitions": 2, "lag": 0})]);
    assert_eq!(weir.json_lines(&["topic", "delete", "t", "--json"]), [serde_json::json!({"deleted": "t"})]);
}

#[test]
fn bytes_that_are_not_utf8_round_trip() {
    let weir = Weir::new();
    weir.ok(&["topic", "create", "bin", "--partitions", "1"]);
    let input = b"\xff\xfe\x00raw\n\xc3\x28\tk\xfftab\r\n";
    // `\t` as two characters, as typed in a shell, stands for a tab.
    weir.ok_with_input(&["produce", "bin", "--key-separator", "\\t"], input);

    let out = weir.run(&["consume", "bin"], b"");
    assert!(out.status.success());
    assert_eq!(out.stdout, b"\xff\xfe\x00raw\nk\xfftab\n", "values are printed as raw bytes");
    let out = weir.run(&["consume", "bin", "--print-key"], b"");
    assert_eq!(out.stdout, b"\t\xff\xfe\x00raw\n\xc3\x28\tk\xfftab\n", "keys too (empty when keyless)");

    let lossy = weir.json_lines(&["consume", "bin", "--json"]);
    assert_eq!(lossy[0]["value"], "\u{fffd}\u{fffd}\u{0}raw");
    assert_eq!(lossy[1]["key"], "\u{fffd}(");
    let exact = weir.json_lines(&["consume", "bin", "--json", "--base64"]);
    assert_eq!(exact[0]["value"], "//4AcmF3");
    assert_eq!(exact[1]["key"], "wyg=");
}

#[test]
fn start_flags_pick_offsets_partitions_and_times() {
    let weir = Weir::new();
    weir.ok(&["topic", "create", "t", "--partitions", "2"]);
    weir.ok_with_input(&["produce", "t", "--partition", "1"], b"p1-0\np1-1\np1-2\np1-3\n");
    weir.ok_with_input(&["produce", "t", "--partition", "0"], b"p0-0\n");

    assert_eq!(weir.ok(&["consume", "t", "--partition", "1", "--offset", "2"]), "p1-2\np1-3\n");
    assert_eq!(weir.ok(&["consume", "t", "--partition", "1", "--offset", "1", "-n", "2"]), "p1-1\np1-2\n");
    assert_eq!(weir.ok(&["consume", "t", "--partition", "0"]), "p0-0\n");
    // --offset applies to each partition; past a partition's end it starts at the end.
    let out = weir.run(&["consume", "t", "--offset", "3"], b"");
    assert_eq!(String::from_utf8(out.stdout).unwrap(), "p1-3\n");
    assert!(String::from_utf8(out.stderr).unwrap().contains("starting at 1 instead of 3"));

    assert_eq!(weir.consume_sorted(&["consume", "t", "--since", "1h"]).len(), 5);
    assert_eq!(weir.ok(&["consume", "t", "--since", "2999-01-01T00:00:00Z"]), "");
    assert_eq!(weir.consume_sorted(&["consume", "t", "--since", "2000-01-01T02:00:00+02:00"]).len(), 5);
}

#[test]
fn follow_stops_after_n_records() {
    let weir = Weir::new();
    weir.ok(&["topic", "create", "t", "--partitions", "2"]);
    weir.ok_with_input(&["produce", "t"], b"a\nb\nc\n");
    assert_eq!(weir.ok(&["consume", "t", "--follow", "-n", "3"]).lines().count(), 3);
}

#[cfg(unix)]
#[test]
fn follow_commits_and_exits_cleanly_on_ctrl_c() {
    use std::time::{Duration, Instant};

    let weir = Weir::new();
    weir.ok(&["topic", "create", "t", "--partitions", "2"]);
    weir.ok_with_input(&["produce", "t"], b"a\nb\nc\n");
    let (mut child, mut stdout) = weir.spawn(&["consume", "t", "--follow", "--group", "g"]);
    for _ in 0..3 {
        let line = next_line(&mut stdout);
        assert!(["a\n", "b\n", "c\n"].contains(&line.as_str()), "{line:?}");
    }
    let killed = Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(killed.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("weir consume --follow did not exit on SIGINT");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status}");
    let committed: u64 = weir.group("g").iter().map(|p| p.2.unwrap()).sum();
    assert_eq!(committed, 3);
}

/// A writer holding the log directory, as a running program would: a `Log` of this (test)
/// process, while the `weir` commands run in their own processes.
fn live_writer(weir: &Weir, partitions: u32) -> (weir::log::Log, weir::log::Topic) {
    let log = weir::log::Log::open(weir.dir.path().join("log"), weir::log::LogOptions::default()).unwrap();
    let topic = log.create_topic("t", weir::log::TopicConfig::with_partitions(partitions)).unwrap();
    (log, topic)
}

fn append(topic: &weir::log::Topic, partition: u32, values: &[&str]) {
    let records: Vec<weir::log::Record> =
        values.iter().map(|v| weir::log::Record::new(v.to_string())).collect();
    topic.append(partition, &records).unwrap();
}

#[test]
fn reading_commands_work_beside_a_live_writer_and_writing_ones_name_its_pid() {
    let weir = Weir::new();
    let (log, topic) = live_writer(&weir, 2);
    append(&topic, 0, &["a", "b", "c"]);
    append(&topic, 1, &["d"]);
    log.commit_offsets("g", "t", [(0, 1)]).unwrap();

    assert_eq!(row(&weir.ok(&["topic", "list"]), "t")[..3], ["t", "2", "4"]);
    assert_eq!(row(&weir.ok(&["topic", "describe", "t"]), "0")[..3], ["0", "0", "3"]);
    assert_eq!(weir.group("g"), [("t".into(), 0, Some(1), 3, Some(2))]);
    assert_eq!(row(&weir.ok(&["group", "list"]), "g"), ["g", "1", "2"]);
    assert_eq!(weir.ok(&["consume", "t", "--partition", "0", "-n", "2"]), "a\nb\n");
    assert_eq!(weir.consume_sorted(&["consume", "t"]), sorted(&["a", "b", "c", "d"]));
    // A group's records, from its committed offsets, without committing.
    assert_eq!(
        weir.consume_sorted(&["consume", "t", "--group", "g", "--no-commit"]),
        sorted(&["b", "c", "d"])
    );
    assert_eq!(weir.group("g"), [("t".into(), 0, Some(1), 3, Some(2))]);

    // What the writer publishes later is seen by the next command.
    append(&topic, 1, &["e"]);
    log.commit_offsets("g", "t", [(0, 3)]).unwrap();
    assert_eq!(weir.ok(&["consume", "t", "--partition", "1"]), "d\ne\n");
    assert_eq!(weir.group("g"), [("t".into(), 0, Some(3), 3, Some(0))]);

    // Commands that change the log are refused, naming the process that holds it.
    let pid = format!("process {}", std::process::id());
    for args in [
        &["produce", "t"][..],
        &["consume", "t", "--group", "g"],
        &["topic", "create", "u", "--partitions", "1"],
        &["topic", "alter", "t", "--retention-ms", "1h"],
        &["group", "delete", "g"],
        &["group", "reset-offsets", "--group", "g", "--topic", "t", "--to-earliest", "--execute"],
    ] {
        let stderr = weir.fails(args, 1);
        assert!(stderr.contains(&pid), "weir {args:?}: {stderr}");
        assert!(stderr.contains("--no-commit"), "weir {args:?} does not say what works: {stderr}");
    }
    // A dry run only reads.
    let plan = weir.ok(&["group", "reset-offsets", "--group", "g", "--topic", "t", "--to-earliest"]);
    assert_eq!(row(&plan, "t"), ["t", "0", "3", "0"]);
    drop((topic, log));
}

#[test]
fn follow_beside_a_live_writer_prints_records_as_they_are_appended() {
    let weir = Weir::new();
    let (_log, topic) = live_writer(&weir, 1);
    append(&topic, 0, &["one", "two"]);
    let (mut child, mut stdout) = weir.spawn(&["consume", "t", "--follow", "-n", "4"]);
    assert_eq!([next_line(&mut stdout), next_line(&mut stdout)], ["one\n", "two\n"]);
    append(&topic, 0, &["three", "four"]);
    assert_eq!([next_line(&mut stdout), next_line(&mut stdout)], ["three\n", "four\n"]);
    assert!(child.wait().unwrap().success());
}

#[test]
fn a_batch_the_writer_is_still_writing_is_not_shown() {
    let weir = Weir::new();
    let (_log, topic) = live_writer(&weir, 1);
    let segment = weir.dir.path().join("log/topics/t/0/00000000000000000000.log");
    append(&topic, 0, &["first"]);
    let before = std::fs::metadata(&segment).unwrap().len() as usize;
    append(&topic, 0, &["second"]);
    let bytes = std::fs::read(&segment).unwrap();
    // Half of a third batch (a copy of the second, as the writer would write one) at the end.
    let torn = &bytes[before..before + (bytes.len() - before) / 2];
    let mut file = std::fs::OpenOptions::new().append(true).open(&segment).unwrap();
    file.write_all(torn).unwrap();
    drop(file);

    assert_eq!(weir.ok(&["consume", "t"]), "first\nsecond\n");
    assert_eq!(row(&weir.ok(&["topic", "describe", "t"]), "0")[..3], ["0", "0", "2"]);
    let stderr = String::from_utf8(weir.run(&["consume", "t"], b"").stderr).unwrap();
    assert!(stderr.is_empty(), "a batch being written is not damage: {stderr}");
    assert_eq!(
        std::fs::metadata(&segment).unwrap().len() as usize,
        bytes.len() + torn.len(),
        "nothing was cut"
    );

    // The writer's next batch goes where the torn bytes were, and is seen.
    append(&topic, 0, &["third"]);
    assert_eq!(weir.ok(&["consume", "t"]), "first\nsecond\nthird\n");
}

#[test]
fn a_peek_at_an_offset_commits_only_what_it_read_and_never_rewinds() {
    let weir = Weir::new();
    weir.ok(&["topic", "create", "t", "--partitions", "3"]);
    weir.ok_with_input(&["produce", "t"], &lines(30));
    assert_eq!(weir.ok(&["consume", "t", "--group", "g"]).lines().count(), 30);
    let caught_up = weir.group("g");
    assert!(caught_up.iter().all(|p| p.4 == Some(0)), "{caught_up:?}");

    // The peek reads two records of one partition: no partition is rewound.
    assert_eq!(weir.ok(&["consume", "t", "--group", "g", "--offset", "0", "-n", "2"]).lines().count(), 2);
    assert_eq!(weir.group("g"), caught_up, "a peek moved the group's committed offsets");

    // Reading on from the committed offsets still commits forward, only where it read.
    weir.ok_with_input(&["produce", "t", "--partition", "1"], b"x\ny\n");
    assert_eq!(weir.ok(&["consume", "t", "--group", "g", "-n", "1"]), "x\n");
    let after = weir.group("g");
    assert_eq!(after[1].2, caught_up[1].2.map(|c| c + 1));
    assert_eq!((after[0].clone(), after[2].clone()), (caught_up[0].clone(), caught_up[2].clone()));
}

#[test]
fn group_reset_offsets_moves_a_groups_offsets_as_kafkas_tool_does() {
    let weir = Weir::new();
    weir.ok(&["topic", "create", "t", "--partitions", "2"]);
    weir.ok_with_input(&["produce", "t", "--partition", "0", "--timestamp", "1000"], b"a\nb\nc\n");
    weir.ok_with_input(&["produce", "t", "--partition", "0", "--timestamp", "2000"], b"d\n");
    weir.ok_with_input(
        &["produce", "t", "--partition", "1", "--timestamp", "1970-01-01T00:00:03Z"],
        b"e\nf\n",
    );
    weir.ok(&["consume", "t", "--group", "g"]);
    let reset = |args: &[&str]| {
        let mut all = vec!["group", "reset-offsets", "--group", "g", "--topic", "t"];
        all.extend_from_slice(args);
        weir.ok(&all)
    };
    let committed = || weir.group("g").iter().map(|p| p.2.unwrap()).collect::<Vec<_>>();
    assert_eq!(committed(), [4, 2]);

    // Without --execute: the plan, and nothing changes.
    let plan = reset(&["--to-earliest"]);
    assert_eq!(row(&plan, "TOPIC"), ["TOPIC", "PARTITION", "CURRENT", "NEW"]);
    assert_eq!(row(&plan, "t"), ["t", "0", "4", "0"]);
    assert_eq!(committed(), [4, 2]);
    reset(&["--to-earliest", "--execute"]);
    assert_eq!(committed(), [0, 0]);
    reset(&["--to-latest", "--partition", "1", "--execute"]);
    assert_eq!(committed(), [0, 2]);
    reset(&["--to-offset", "2", "--execute"]);
    assert_eq!(committed(), [2, 2]);
    reset(&["--shift-by", "-1", "--execute"]);
    assert_eq!(committed(), [1, 1]);
    reset(&["--shift-by", "10", "--execute"]);
    assert_eq!(committed(), [4, 2], "clamped to the end");
    // Times: epoch milliseconds, RFC 3339, or a duration before now.
    reset(&["--to-datetime", "2000", "--execute"]);
    assert_eq!(committed(), [3, 0]);
    reset(&["--to-datetime", "1970-01-01T00:00:01.500Z", "--execute"]);
    assert_eq!(committed(), [3, 0]);
    reset(&["--to-datetime", "1h", "--execute"]);
    assert_eq!(committed(), [4, 2], "no record that recent: the end");
    let json = weir.json_lines(&[
        "group",
        "reset-offsets",
        "--group",
        "g",
        "--topic",
        "t",
        "--to-offset",
        "1",
        "--json",
    ]);
    assert_eq!(
        json[0],
        serde_json::json!({"group": "g", "topic": "t", "partition": 0, "current": 4, "new": 1})
    );
    assert_eq!(committed(), [4, 2]);

    let stderr = weir.fails(&["group", "reset-offsets", "--group", "g", "--topic", "t", "--execute"], 2);
    assert!(stderr.contains("--to-earliest"), "{stderr}");
    let stderr = weir.fails(
        &["group", "reset-offsets", "--group", "g", "--topic", "t", "--to-earliest", "--to-latest"],
        2,
    );
    assert!(stderr.contains("cannot be used with"), "{stderr}");
    let stderr = weir
        .fails(&["group", "reset-offsets", "--group", "g", "--topic", "t", "--to-datetime", "yesterday"], 2);
    assert!(stderr.contains("RFC 3339"), "{stderr}");
    let stderr = weir.fails(
        &["group", "reset-offsets", "--group", "g", "--topic", "t", "--to-earliest", "--partition", "7"],
        1,
    );
    assert!(stderr.contains("no partition 7"), "{stderr}");
}

#[test]
fn group_delete_removes_a_groups_committed_offsets() {
    let weir = Weir::new();
    weir.ok(&["topic", "create", "t", "--partitions", "1"]);
    weir.ok_with_input(&["produce", "t"], b"a\n");
    weir.ok(&["consume", "t", "--group", "g"]);
    assert_eq!(weir.ok(&["group", "delete", "g"]), "deleted group g\n");
    assert!(weir.ok(&["group", "list"]).is_empty());
    assert!(weir.fails(&["group", "delete", "g"], 1).contains("unknown consumer group"));
    // A new group of that name starts over.
    assert_eq!(weir.ok(&["consume", "t", "--group", "g"]), "a\n");
}

#[test]
fn topic_alter_changes_retention_and_durations_are_accepted_wherever_one_is_taken() {
    let weir = Weir::new();
    weir.ok(&["topic", "create", "t", "--partitions", "1", "--retention-ms", "7d", "--segment-ms", "1h"]);
    let describe = || weir.json_lines(&["topic", "describe", "t", "--json"])[0]["config"].clone();
    assert_eq!(describe()["retention_ms"], 604_800_000);
    assert_eq!(describe()["segment_ms"], 3_600_000);
    assert_eq!(
        weir.ok(&["topic", "alter", "t", "--retention-ms", "36h", "--retention-bytes", "1000000"]),
        "altered topic t\n"
    );
    assert_eq!(
        (describe()["retention_ms"].clone(), describe()["retention_bytes"].clone()),
        (129_600_000.into(), 1_000_000.into())
    );
    weir.ok(&["topic", "alter", "t", "--retention-ms", "forever"]);
    assert_eq!(
        (describe()["retention_ms"].clone(), describe()["retention_bytes"].clone()),
        (Value::Null, 1_000_000.into())
    );
    weir.ok(&["topic", "alter", "t", "--retention-ms", "90000", "--retention-bytes", "unlimited"]);
    assert_eq!(
        (describe()["retention_ms"].clone(), describe()["retention_bytes"].clone()),
        (90_000.into(), Value::Null)
    );

    assert!(weir.fails(&["topic", "alter", "t"], 2).contains("--retention-ms"));
    assert!(weir.fails(&["topic", "alter", "t", "--retention-ms", "7 parsecs"], 2).contains("7d"));
    assert!(weir.fails(&["topic", "alter", "nope", "--retention-ms", "1d"], 1).contains("nope"));

    // Retention applies at once: a topic altered to keep little loses its old segments.
    weir.ok(&["topic", "create", "small", "--partitions", "1", "--segment-bytes", "4096"]);
    let big: Vec<u8> = (0..100).flat_map(|i| format!("{i:0>200}\n").into_bytes()).collect();
    weir.ok_with_input(&["produce", "small", "--batch-size", "1"], &big);
    weir.ok(&["topic", "alter", "small", "--retention-bytes", "8192"]);
    let start =
        weir.json_lines(&["topic", "describe", "small", "--json"])[0]["partitions"][0]["start_offset"]
            .as_u64()
            .unwrap();
    assert!(start > 0, "retention did not apply");
}

#[test]
fn produce_sets_record_timestamps_and_times_are_epoch_ms_or_rfc_3339_everywhere() {
    let weir = Weir::new();
    weir.ok(&["topic", "create", "t", "--partitions", "1"]);
    weir.ok_with_input(&["produce", "t", "--timestamp", "2024-05-01T12:00:00Z"], b"a\n");
    weir.ok_with_input(&["produce", "t", "--timestamp", "1714564801000"], b"b\n");
    weir.ok_with_input(
        &["produce", "t", "--timestamp-separator", ",", "--key-separator", ":"],
        b"1714564802000,k:c\n2024-05-01T14:00:03+02:00,d\n",
    );
    let records = weir.json_lines(&["consume", "t", "--json"]);
    let got: Vec<(i64, &str, Option<&str>)> = records
        .iter()
        .map(|r| (r["timestamp"].as_i64().unwrap(), r["value"].as_str().unwrap(), r["key"].as_str()))
        .collect();
    assert_eq!(
        got,
        [
            (1_714_564_800_000, "a", None),
            (1_714_564_801_000, "b", None),
            (1_714_564_802_000, "c", Some("k")),
            (1_714_564_803_000, "d", None)
        ]
    );
    assert_eq!(weir.ok(&["consume", "t", "--since", "1714564802000"]), "c\nd\n");
    assert_eq!(weir.ok(&["consume", "t", "--since", "2024-05-01T12:00:03Z"]), "d\n");

    let out = weir.run(&["produce", "t", "--timestamp-separator", ","], b"1714564804000,e\nnot a time,f\n");
    assert_eq!(out.status.code(), Some(3));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("line 2") && stderr.contains("not a time"), "{stderr}");
    assert!(weir.fails(&["produce", "t", "--timestamp", "soon"], 2).contains("RFC 3339"));
    assert!(
        weir.fails(&["produce", "t", "--timestamp", "1", "--timestamp-separator", ","], 2)
            .contains("cannot be used with")
    );
}

#[test]
fn a_log_append_time_topic_stamps_records_with_the_append_time_not_the_producers() {
    let weir = Weir::new();
    weir.ok(&[
        "topic",
        "create",
        "appended",
        "--partitions",
        "1",
        "--message-timestamp-type",
        "LogAppendTime",
    ]);
    weir.ok(&["topic", "create", "created", "--partitions", "1"]);
    let describe = |topic: &str| weir.ok(&["topic", "describe", topic]);
    let row_of = |topic: &str| row(&describe(topic), "message.timestamp.type").join(" ");
    assert_eq!(row_of("appended"), "message.timestamp.type LogAppendTime");
    assert_eq!(row_of("created"), "message.timestamp.type CreateTime");
    let json = |topic: &str| weir.json_lines(&["topic", "describe", topic, "--json"])[0]["config"].clone();
    assert_eq!(json("appended")["timestamp_type"], "LogAppendTime");
    assert_eq!(json("created")["timestamp_type"], "CreateTime");
    let before = weir_testkit::now_ms();
    for topic in ["appended", "created"] {
        weir.ok_with_input(&["produce", topic, "--timestamp", "2024-05-01T12:00:00Z"], b"a\n");
    }
    let stamp =
        |topic: &str| weir.json_lines(&["consume", topic, "--json"])[0]["timestamp"].as_i64().unwrap();
    assert!(stamp("appended") >= before, "{} < {before}", stamp("appended"));
    assert_eq!(stamp("created"), 1_714_564_800_000);
    let err = weir.fails(
        &["topic", "create", "t", "--partitions", "1", "--message-timestamp-type", "logappendtime"],
        2,
    );
    assert!(err.contains("expected CreateTime or LogAppendTime"), "{err}");
}

#[test]
fn errors_name_the_problem() {
    let weir = Weir::new();
    let err = weir.fails(&["topic", "list"], 1);
    assert!(err.starts_with("weir: error: no weir log in "), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");

    let err = weir.fails(&["topic", "create", "a/b", "--partitions", "1"], 1);
    assert!(err.contains("invalid topic name \"a/b\""), "{err}");
    let err = weir.fails(&["topic", "create", "t", "--partitions", "0"], 1);
    assert_eq!(err, "weir: error: invalid --partitions: 0 is not between 1 and 10000\n");
    let err = weir.fails(&["topic", "create", "t", "--partitions", "1", "--segment-bytes", "10"], 1);
    assert!(err.contains("invalid --segment-bytes: 10 is not between"), "{err}");
    weir.ok(&["topic", "create", "t", "--partitions", "2"]);
    let err = weir.fails(&["topic", "create", "t", "--partitions", "2"], 1);
    assert!(err.contains("topic \"t\" already exists"), "{err}");

    for args in [
        &["consume", "nope"][..],
        &["produce", "nope"],
        &["topic", "describe", "nope"],
        &["topic", "delete", "nope"],
    ] {
        let err = weir.fails(args, 1);
        assert_eq!(err, "weir: error: unknown topic \"nope\"\n", "{args:?}");
    }
    for args in
        [&["consume", "t", "--partition", "5"][..], &["consume", "t", "--group", "g", "--partition", "5"]]
    {
        let err = weir.fails(args, 1);
        assert!(err.contains("there is no partition 5"), "{args:?}: {err}");
    }
    let err = weir.fails(&["produce", "t", "--partition", "2"], 1);
    assert!(err.contains("there is no partition 2"), "{err}");
    let err = weir.fails(&["consume", "t", "--group", "bad name"], 1);
    assert!(err.contains("invalid group name \"bad name\""), "{err}");
    let err = weir.fails(&["group", "describe", "ghost"], 1);
    assert_eq!(err, "weir: error: unknown consumer group \"ghost\" (it has never committed an offset)\n");
    // Neither a failed consume nor a failed describe leaves a group behind.
    let err = weir.fails(&["group", "describe", "g"], 1);
    assert!(err.contains("unknown consumer group \"g\""), "{err}");
    assert_eq!(weir.json_lines(&["group", "list", "--json"]), Vec::<Value>::new());
    let err = weir.fails(&["group", "describe", "../x"], 1);
    assert!(err.contains("invalid group name"), "{err}");

    // Usage errors come from the argument parser, with exit code 2.
    let err = weir.fails(&["consume", "t", "--base64"], 2);
    assert!(err.contains("--base64") && err.contains("--json"), "{err}");
    let err = weir.fails(&["consume", "t", "--since", "yesterday"], 2);
    assert!(err.contains("RFC 3339"), "{err}");
    let err = weir.fails(&["consume", "t", "--offset", "1", "--from-beginning"], 2);
    assert!(err.contains("cannot be used with"), "{err}");
    let err = weir.fails(&["produce", "t", "--batch-size", "0"], 2);
    assert!(err.contains("--batch-size"), "{err}");
}

#[test]
fn sql_runs_a_file_of_sources_and_sinks_and_one_off_queries() {
    let weir = Weir::new();
    // Events in a log topic (JSON values), appended with the CLI itself.
    weir.ok(&["topic", "create", "access", "--partitions", "2"]);
    let events: String = (0..600)
        .map(|i| {
            let status = [200, 404, 500][i % 3];
            format!(
                "{{\"ts_ms\":{},\"status\":{status},\"latency_ms\":{}}}\n",
                1_700_000_000_000u64 + i as u64 * 100,
                i % 7
            )
        })
        .collect();
    weir.ok_with_input(&["produce", "access"], events.as_bytes());
    let out = weir.dir.path().join("per_status.jsonl");
    let script = weir.dir.path().join("pipeline.sql");
    let sources = "CREATE SOURCE access (ts_ms BIGINT, status INT, latency_ms DOUBLE, ts AS to_timestamp_millis(ts_ms), \
           WATERMARK FOR ts AS ts - INTERVAL '1' SECOND) \
           WITH (connector = 'log', topic = 'access', format = 'json', bounded = 'true');\n".to_owned();
    std::fs::write(
        &script,
        format!(
            "{sources}CREATE SINK per_status WITH (connector = 'file', path = '{}', format = 'json') AS \
             SELECT window_start, status, count(*) AS n FROM access GROUP BY tumble(ts, INTERVAL '10' SECOND), status;\n\
             EXPLAIN SELECT status, count(*) FROM access GROUP BY tumble(ts, INTERVAL '10' SECOND), status;",
            out.display()
        ),
    )
    .unwrap();
    let printed = weir.ok(&["sql", "-f", script.to_str().unwrap()]);
    assert!(printed.contains("exchange: hash("), "EXPLAIN shows the exchange: {printed}");
    assert!(printed.contains("tumble(ts, 10000 ms)"), "{printed}");
    // 600 events, 100 ms apart: 60 s, six 10-second windows × 3 statuses.
    let rows: Vec<Value> =
        std::fs::read_to_string(&out).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(rows.len(), 18, "{rows:?}");
    assert!(rows.iter().all(|r| r["n"] == 33 || r["n"] == 34), "{rows:?}");
    assert_eq!(rows.iter().map(|r| r["n"].as_u64().unwrap()).sum::<u64>(), 600);

    // -e prints a query's rows; log sources stop at their current end. (A source reads in its
    // consumer group, the source's name unless `group` says otherwise: the job above committed
    // `access` to the end.)
    let sources_file = weir.dir.path().join("sources.sql");
    std::fs::write(&sources_file, sources.replace(", bounded = 'true'", ", group = 'adhoc'")).unwrap();
    let table = weir.ok(&[
        "sql",
        "-f",
        sources_file.to_str().unwrap(),
        "-e",
        "SELECT status, latency_ms FROM access WHERE latency_ms > 5",
    ]);
    let want = (0..600).filter(|i| i % 7 == 6).count();
    assert_eq!(table.matches("| 6.0 ").count(), want, "{table}");

    // A bounded read sorts as a batch engine (in a group of its own: `adhoc` was read to the
    // end); following the topic, a stream cannot.
    let sorted_file = weir.dir.path().join("sorted.sql");
    std::fs::write(&sorted_file, sources.replace(", bounded = 'true'", ", group = 'sorted'")).unwrap();
    let order = "SELECT status, count(*) AS n FROM access GROUP BY status ORDER BY status";
    let table = weir.ok(&["sql", "-f", sorted_file.to_str().unwrap(), "-e", order]);
    let statuses: Vec<&str> = table
        .lines()
        .filter_map(|l| l.split('|').nth(1))
        .map(str::trim)
        .filter(|c| c.starts_with(['2', '4', '5']))
        .collect();
    assert_eq!(statuses, ["200", "404", "500"], "{table}");
    let err = weir.fails(&["sql", "-f", sources_file.to_str().unwrap(), "-e", order, "--follow"], 1);
    assert!(err.contains("bounded source"), "{err}");
}

#[test]
fn sql_checkpoints_under_the_log_directory_and_names_bad_checkpoint_flags() {
    let weir = Weir::new();
    weir.ok(&["topic", "create", "access", "--partitions", "2"]);
    let events: String = (0..600)
        .map(|i| {
            format!(
                "{{\"ts_ms\":{},\"status\":{}}}\n",
                1_700_000_000_000u64 + i * 100,
                [200, 404][i as usize % 2]
            )
        })
        .collect();
    weir.ok_with_input(&["produce", "access"], events.as_bytes());
    let out = weir.dir.path().join("per_status.jsonl");
    let write_script = |group: &str| per_status_script(&weir, group, &out);
    let script = &write_script("first");
    let rows = || std::fs::read_to_string(&out).unwrap().lines().count();
    // A manifest per complete checkpoint, in <--dir>/checkpoints/<pipeline>.
    let manifests = || -> usize {
        let dir = weir.dir.path().join("log/checkpoints/sql");
        std::fs::read_dir(dir).map_or(0, |it| {
            it.filter(|e| e.as_ref().unwrap().path().join("_manifest.json").is_file()).count()
        })
    };

    weir.ok(&["sql", "-f", script, "--checkpoint-interval", "100ms"]);
    assert!(manifests() > 0, "no checkpoint in {}", weir.dir.path().join("log/checkpoints/sql").display());
    // 600 events 100 ms apart: six 10-second windows × 2 statuses.
    assert_eq!(rows(), 12);
    // Run again, it restores its last checkpoint: the input was all read and the output is
    // kept, not repeated.
    weir.ok(&["sql", "-f", script, "--checkpoint-interval", "100ms"]);
    assert_eq!(rows(), 12);
    // A checkpoint directory of one's own, from scratch: the output is replaced. (A log
    // source resumes at its consumer group's offsets, which the runs above committed: a new
    // group reads the topic again.)
    let own = weir.dir.path().join("own-checkpoints");
    weir.ok(&[
        "sql",
        "-f",
        &write_script("again"),
        "--checkpoint-interval",
        "1s",
        "--checkpoint-dir",
        own.to_str().unwrap(),
        "--from-scratch",
    ]);
    assert!(own.is_dir());
    assert_eq!(rows(), 12);

    for (args, flag) in [
        (vec!["--checkpoint-interval", "soon"], "--checkpoint-interval"),
        (vec!["--checkpoint-interval", "0s"], "--checkpoint-interval"),
        (vec!["--checkpoint-interval", "1s", "--checkpoint-dir", ""], "--checkpoint-dir"),
        (vec!["--checkpoint-dir", "x"], "--checkpoint-interval"),
        (vec!["--checkpoint-interval", "1s", "-e", "SELECT 1"], "--checkpoint-interval"),
    ] {
        let mut all = vec!["sql", "-f", script];
        all.extend(&args);
        let err = weir.fails(&all, 2);
        assert!(err.contains(flag), "weir {all:?}: {err}");
    }
}

impl Weir {
    /// Runs `weir ARGS` through `sh -c`, with `setup` (ulimits, redirections) before it and
    /// `redirect` after it: `sh -c "SETUP; exec weir --dir D ARGS REDIRECT"`. Returns the output.
    fn shell(&self, setup: &str, args: &[&str], redirect: &str, stdin: &[u8]) -> Output {
        let script = format!("{setup}\nexec \"$0\" --dir \"$1\" \"${{@:2}}\" {redirect}");
        let mut child = Command::new("bash")
            .arg("-c")
            .arg(script)
            .arg(env!("CARGO_BIN_EXE_weir"))
            .arg(self.dir.path().join("log"))
            .args(args)
            .env_remove("WEIR_DIR")
            .env_remove("RUST_LOG")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // The child may exit without reading everything (a full disk).
        let _ = child.stdin.take().unwrap().write_all(stdin);
        child.wait_with_output().unwrap()
    }

    /// Records stored in `topic`, over all partitions.
    fn records(&self, topic: &str) -> u64 {
        let d = &self.json_lines(&["topic", "describe", topic, "--json"])[0];
        d["partitions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["end_offset"].as_u64().unwrap() - p["start_offset"].as_u64().unwrap())
            .sum()
    }
}

fn lines(n: usize) -> Vec<u8> {
    (0..n).map(|i| format!("line {i:0>100}\n")).collect::<String>().into_bytes()
}

fn no_panic(out: &Output) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked") && out.status.code() != Some(101), "panicked: {stderr}");
}

#[test]
fn a_retention_too_large_is_refused_naming_the_flag_and_forever_means_no_limit() {
    let weir = Weir::new();
    let err = weir.fails(&["topic", "create", "t", "-p", "1", "--retention-ms", "18446744073709551615"], 1);
    assert!(
        err.contains("invalid --retention-ms: 18446744073709551615 ms is more than the maximum"),
        "{err}"
    );
    assert!(err.contains("forever"), "{err}");
    let err = weir.fails(&["topic", "create", "t", "-p", "1", "--segment-ms", "18446744073709551615"], 1);
    assert!(err.contains("invalid --segment-ms"), "{err}");
    let err = weir.fails(&["topic", "create", "t", "-p", "1", "--retention-bytes", "0"], 1);
    assert!(err.contains("invalid --retention-bytes"), "{err}");
    let err = weir.fails(&["topic", "create", "t", "-p", "1", "--retention-ms", "soon"], 2);
    assert!(err.contains("forever"), "{err}");

    weir.ok(&[
        "topic",
        "create",
        "a",
        "-p",
        "1",
        "--retention-ms",
        "forever",
        "--retention-bytes",
        "unlimited",
    ]);
    weir.ok(&["topic", "create", "b", "-p", "1", "--retention-ms", "-1", "--segment-ms", "forever"]);
    for topic in ["a", "b"] {
        let d = &weir.json_lines(&["topic", "describe", topic, "--json"])[0];
        assert_eq!(d["config"]["retention_ms"], Value::Null);
        assert_eq!(d["config"]["retention_bytes"], Value::Null);
        assert_eq!(d["config"]["segment_ms"], Value::Null);
    }
}

#[test]
fn a_closed_broken_or_full_stderr_never_panics_and_the_exit_code_says_what_was_appended() {
    let weir = Weir::new();
    weir.ok(&["topic", "create", "t", "-p", "3"]);
    let input = lines(100);
    // Full stderr: the records are appended, the summary is lost, the exit code says so.
    let out = weir.shell("", &["produce", "t"], "2>/dev/full", &input);
    no_panic(&out);
    assert_eq!(out.status.code(), Some(4));
    assert_eq!(weir.records("t"), 100);
    // Broken stderr: a pipe whose reader has gone.
    let out = weir.shell("exec 3>&1", &["produce", "t"], "2> >(exec 0<&-; true)", &input);
    no_panic(&out);
    assert!(matches!(out.status.code(), Some(0 | 4)), "{:?}", out.status);
    assert_eq!(weir.records("t"), 200);
    // Closed stderr.
    let out = weir.shell("", &["produce", "t"], "2>&-", &input);
    no_panic(&out);
    assert!(matches!(out.status.code(), Some(0 | 4)), "{:?}", out.status);
    assert_eq!(weir.records("t"), 300);
    // With --json the summary goes to stdout: a full stdout is code 4 too.
    let out = weir.shell("", &["produce", "t", "--json"], ">/dev/full", &input);
    no_panic(&out);
    assert_eq!(out.status.code(), Some(4));
    assert_eq!(weir.records("t"), 400);
    // An error that changed nothing is 1, whether or not the message can be written.
    let out = weir.shell("", &["produce", "nope"], "2>/dev/full", &input);
    no_panic(&out);
    assert_eq!(out.status.code(), Some(1));
    // Warnings through tracing to a full stderr do not panic either.
    let out = weir.shell("export RUST_LOG=debug", &["topic", "list"], "2>/dev/full", b"");
    no_panic(&out);
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn consume_into_a_closed_or_full_stdout_never_panics_nor_commits_what_was_lost() {
    let weir = Weir::new();
    weir.ok(&["topic", "create", "t", "-p", "1"]);
    weir.ok_with_input(&["produce", "t"], &lines(10_000));
    let out = weir.shell("set -o pipefail", &["consume", "t"], "| head -1", b"");
    no_panic(&out);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 1);
    let out = weir.shell("", &["consume", "t", "--group", "g"], ">/dev/full 2>/dev/full", b"");
    no_panic(&out);
    assert_eq!(out.status.code(), Some(1));
    // Nothing printed, nothing committed.
    let err = weir.fails(&["group", "describe", "g"], 1);
    assert!(err.contains("unknown consumer group"), "{err}");
}

#[test]
fn produce_on_a_full_disk_reports_exactly_the_records_it_appended() {
    let weir = Weir::new();
    weir.ok(&["topic", "create", "t", "-p", "3"]);
    // The file-size limit fails writes with EFBIG as a full disk does with ENOSPC.
    let out = weir.shell(
        "trap '' XFSZ; ulimit -f 256",
        &["produce", "t", "--batch-size", "300"],
        "",
        &lines(20_000),
    );
    no_panic(&out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    let reported: u64 = stderr
        .split(" record")
        .next()
        .and_then(|s| s.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count in {stderr}"));
    assert!(stderr.contains("were appended to topic t before the error"), "{stderr}");
    assert!(reported > 0);
    assert_eq!(weir.records("t"), reported, "{stderr}");
}

#[test]
fn a_topic_with_more_partitions_than_open_files_works_and_a_broken_topic_spares_the_others() {
    let weir = Weir::new();
    let low = "ulimit -n 256";
    let out = weir.shell(low, &["topic", "create", "wide", "-p", "600"], "", b"");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = weir.shell(low, &["produce", "wide"], "", &lines(3_000));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = weir.shell(low, &["consume", "wide"], "", b"");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 3_000);

    // A topic whose configuration is unreadable: the others still work, with a warning.
    weir.ok(&["topic", "create", "bad", "-p", "1"]);
    std::fs::write(weir.dir.path().join("log/topics/bad/topic.json"), b"garbage").unwrap();
    let out = weir.run(&["produce", "wide"], b"one more\n");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("topic bad could not be opened"));
    assert_eq!(weir.records("wide"), 3_001);
    let err = weir.fails(&["consume", "bad"], 1);
    assert!(err.contains("topic \"bad\" could not be opened"), "{err}");
    weir.ok(&["topic", "delete", "bad"]);
    assert!(!weir.ok(&["topic", "list"]).contains("bad"));
}

#[test]
fn consume_stops_at_a_damaged_batch_naming_it_or_skips_it_when_told() {
    let weir = Weir::new();
    weir.ok(&["topic", "create", "t", "--partitions", "1", "--segment-bytes", "4096"]);
    let input: String = (0..600).map(|i| format!("line-{i}\n")).collect();
    weir.ok_with_input(&["produce", "t", "--batch-size", "10"], input.as_bytes());
    // Flip a byte in the payload of the first batch of a sealed segment (not the first one).
    let partition = weir.dir.path().join("log/topics/t/0");
    let mut segments: Vec<_> = std::fs::read_dir(&partition)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    segments.sort();
    assert!(segments.len() >= 3, "the topic needs sealed segments: {segments:?}");
    let victim = &segments[1];
    let mut bytes = std::fs::read(victim).unwrap();
    let base = u64::from_le_bytes(bytes[0..8].try_into().unwrap());
    let length = u32::from_le_bytes(bytes[8..12].try_into().unwrap()) as usize;
    let count = u64::from(u32::from_le_bytes(bytes[18..22].try_into().unwrap()));
    bytes[(12 + length) / 2 + 20] ^= 0x40;
    std::fs::write(victim, &bytes).unwrap();
    let lost = format!("{base}..{}", base + count);
    let line = |i: u64| format!("line-{i}");

    // A read that starts before the damage returns the records before it.
    assert_eq!(weir.ok(&["consume", "t", "--offset", "0", "-n", "1"]), "line-0\n");

    // Stop (the default): every record before the damage, then an error naming it.
    let out = weir.run(&["consume", "t"], b"");
    let (stdout, stderr) = (String::from_utf8(out.stdout).unwrap(), String::from_utf8(out.stderr).unwrap());
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(stderr.contains(&format!("offsets {lost} lost")), "{stderr}");
    let before: Vec<String> = (0..base).map(line).collect();
    assert_eq!(stdout.lines().collect::<Vec<_>>(), before, "{stderr}");
    assert_eq!(weir.run(&["consume", "t", "--on-damage", "stop"], b"").status.code(), Some(1));

    // Skip: every other record, and a warning naming the range.
    let out = weir.run(&["consume", "t", "--on-damage", "skip"], b"");
    let (stdout, stderr) = (String::from_utf8(out.stdout).unwrap(), String::from_utf8(out.stderr).unwrap());
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains(&format!("skipped offsets {lost} of t/0")), "{stderr}");
    let kept: Vec<String> = (0..600).filter(|i| !(base..base + count).contains(i)).map(line).collect();
    assert_eq!(stdout.lines().collect::<Vec<_>>(), kept, "{stderr}");
}

/// Writes `<group>.sql`: the log source `access` (JSON with `ts_ms` and `status`, bounded, read in
/// consumer group `group`) and a sink of rows per status and 10-second window into `out`; returns
/// its path.
fn per_status_script(weir: &Weir, group: &str, out: &std::path::Path) -> String {
    let script = weir.dir.path().join(format!("{group}.sql"));
    std::fs::write(
        &script,
        format!(
            "CREATE SOURCE access (ts_ms BIGINT, status INT, ts AS to_timestamp_millis(ts_ms), \
               WATERMARK FOR ts AS ts - INTERVAL '1' SECOND) \
               WITH (connector = 'log', topic = 'access', format = 'json', bounded = 'true', group = '{group}');\n\
             CREATE SINK per_status WITH (connector = 'file', path = '{}', format = 'json') AS \
               SELECT window_start, status, count(*) AS n FROM access GROUP BY tumble(ts, INTERVAL '10' SECOND), status;",
            out.display()
        ),
    )
    .unwrap();
    script.to_str().unwrap().to_owned()
}

#[test]
fn sql_prints_one_summary_of_dead_letters_and_late_records_and_a_lost_one_is_exit_code_4() {
    let weir = Weir::new();
    weir.ok(&["topic", "create", "access", "--partitions", "1"]);
    // 5 000 events 100 ms apart, then 5 behind the closed first window (late), then 2 lines
    // that are not JSON (dead letters).
    let mut events: String = (0..5_000u64)
        .map(|i| format!("{{\"ts_ms\":{},\"status\":200}}\n", 1_700_000_000_000 + i * 100))
        .collect();
    for i in 0..5u64 {
        events.push_str(&format!("{{\"ts_ms\":{},\"status\":500}}\n", 1_700_000_000_000 + i));
    }
    events.push_str("not json\n{\"ts_ms\": oops}\n");
    weir.ok_with_input(&["produce", "access"], events.as_bytes());
    // Each run reads the topic in its own consumer group, into its own file.
    let script =
        |group: &str| per_status_script(&weir, group, &weir.dir.path().join(format!("{group}.jsonl")));
    let out = weir.run(&["sql", "-f", &script("a")], b"");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(stderr.matches("late records").count(), 1, "one summary: {stderr}");
    assert_eq!(stderr.matches("dead letters").count(), 2, "{stderr}"); // the report's and the topic's line
    assert!(stderr.contains("weir: pipeline sql: 2 dead letters (decode: 2)"), "{stderr}");
    assert!(stderr.contains("\n5 late records"), "{stderr}");
    assert!(stderr.contains("dead letters are in topic sql.dlq: weir --dir"), "{stderr}");
    // A full or closed stderr: no panic, the job's output is written; a summary lost to a full
    // stderr is code 4 (a closed one may count as written: Rust's stderr ignores EBADF).
    for (group, redirect, codes) in [("b", "2>/dev/full", [4, 4]), ("c", "2>&-", [0, 4])] {
        let out = weir.shell("", &["sql", "-f", &script(group)], redirect, b"");
        no_panic(&out);
        assert!(out.status.code().is_some_and(|c| codes.contains(&c)), "{redirect}: {:?}", out.status);
        assert!(weir.dir.path().join(format!("{group}.jsonl")).exists(), "{redirect}");
    }
}

#[test]
#[cfg(target_os = "linux")]
fn a_failing_sql_job_still_prints_its_summary_of_dead_letters() {
    let weir = Weir::new();
    // A line that is not JSON (a dead letter), then rows for a sink that cannot write them: the
    // job fails after the dead letter was counted (one subtask: another one, without input,
    // could fail the job first, syncing /dev/full).
    let input = weir.dir.path().join("in.jsonl");
    let lines: String = std::iter::once("not json\n".to_owned())
        .chain((0..100).map(|i| format!("{{\"a\":{i}}}\n")))
        .collect();
    std::fs::write(&input, lines).unwrap();
    let script = weir.dir.path().join("full.sql");
    std::fs::write(
        &script,
        format!(
            "CREATE SOURCE s (a BIGINT) WITH (connector = 'file', path = '{}', format = 'json');\n\
             CREATE SINK out WITH (connector = 'file', path = '/dev/full', format = 'json') AS SELECT a FROM s;",
            input.display()
        ),
    )
    .unwrap();
    let args = ["sql", "--parallelism", "1", "-f", script.to_str().unwrap()];
    let stderr = weir.fails(&args, 1);
    assert!(
        stderr.contains("/dev/full") && stderr.contains("(os error 28)"),
        "the failure is reported: {stderr}"
    );
    assert_eq!(stderr.matches("weir: pipeline sql:").count(), 1, "one summary: {stderr}");
    assert!(stderr.contains("weir: pipeline sql: 1 dead letters (decode: 1)"), "{stderr}");
    assert!(stderr.contains("not json"), "the first dead letter is shown: {stderr}");
    // SQL over files opens no log, so no topic keeps the dead letters: the summary shows them.
    assert!(!stderr.contains("sql.dlq"), "{stderr}");
    // A full stderr on top: still the job's failure, no panic.
    let out = weir.shell("", &args, "2>/dev/full", b"");
    no_panic(&out);
    assert_eq!(out.status.code(), Some(1), "{:?}", out.status);
}
