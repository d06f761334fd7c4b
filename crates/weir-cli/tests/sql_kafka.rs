//! `weir sql` over Apache Kafka, run as a user would: `CREATE SOURCE` / `CREATE SINK` with
//! `connector = 'kafka'` in a file. Tests that need a broker read its address from
//! `WEIR_KAFKA_BOOTSTRAP` ([`bootstrap`]) and skip, saying so, without it.

#![allow(clippy::unwrap_used, reason = "tests may unwrap (STYLE.md)")]

#[path = "../../weir-kafka/tests/common/mod.rs"]
mod common;

use std::process::{Command, Output};

/// The broker's bootstrap address, or `None` (the test returns; it printed why).
fn bootstrap() -> Option<String> {
    common::bootstrap()
}

/// Runs `weir ARGS` in `dir`.
fn weir(dir: &std::path::Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_weir"))
        .current_dir(dir)
        .args(args)
        .env_remove("WEIR_DIR")
        .env_remove("RUST_LOG")
        .output()
        .unwrap()
}

#[test]
fn kafka_options_weir_owns_are_refused_naming_the_option() {
    let dir = tempfile::tempdir().unwrap();
    let source = "CREATE SOURCE s (line VARCHAR) WITH (connector = 'kafka', topic = 't', \
                  'properties.bootstrap.servers' = '127.0.0.1:1', format = 'raw'";
    let cases = [
        (
            format!("{source}, 'properties.enable.auto.commit' = 'true');"),
            "option properties.enable.auto.commit:",
        ),
        (
            format!(
                "{source}); CREATE SINK o WITH (connector = 'kafka', topic = 'o', \
                 'properties.bootstrap.servers' = '127.0.0.1:1', 'sink.delivery-guarantee' = 'exactly-once', \
                 'sink.transactional-id-prefix' = 'p') AS SELECT line FROM s;"
            ),
            "--checkpoint-interval",
        ),
    ];
    for (script, says) in cases {
        std::fs::write(dir.path().join("job.sql"), &script).unwrap();
        let out = weir(dir.path(), &["sql", "-f", "job.sql"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{script}: {stderr}");
        assert!(stderr.contains(says), "{script}: {stderr}");
    }
}

#[test]
fn weir_sql_writes_a_kafka_topic_and_queries_it_back() {
    let Some(b) = bootstrap() else { return };
    let dir = tempfile::tempdir().unwrap();
    let topic = common::unique("cli-sql");
    common::create_topic(&b, &topic, 2);
    let rows = 300u64;
    let csv: String =
        (0..rows).map(|i| format!("{},s-{},{i}\n", 1_700_000_000_000 + i * 1_000, i % 3)).collect();
    std::fs::write(dir.path().join("readings.csv"), csv).unwrap();
    let kafka = format!("connector = 'kafka', topic = '{topic}', 'properties.bootstrap.servers' = '{b}'");
    std::fs::write(
        dir.path().join("copy.sql"),
        format!(
            "CREATE SOURCE readings (ts_ms BIGINT, sensor TEXT, value BIGINT) \
               WITH (connector = 'file', path = 'readings.csv', format = 'csv'); \
             CREATE SINK to_kafka WITH ({kafka}, format = 'json', 'key.fields' = 'sensor') AS \
               SELECT ts_ms, sensor, value FROM readings;"
        ),
    )
    .unwrap();
    let out = weir(dir.path(), &["sql", "-f", "copy.sql"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // Every record keyed by its sensor.
    let records = common::read_all(&b, &topic, "read_committed");
    assert_eq!(records.len(), rows as usize);
    assert!(records.iter().all(|r| r.key.as_deref().is_some_and(|k| r.value.contains(&format!("\"{k}\"")))));

    std::fs::write(
        dir.path().join("sources.sql"),
        format!(
            "CREATE SOURCE readings (ts_ms BIGINT, sensor TEXT, value BIGINT) \
               WITH ({kafka}, 'properties.group.id' = '{topic}-reader', 'scan.startup.mode' = 'earliest-offset');"
        ),
    )
    .unwrap();
    // `-e` reads the topic to its current end, as it reads log topics.
    let out = weir(
        dir.path(),
        &[
            "sql",
            "--json",
            "-f",
            "sources.sql",
            "-e",
            "SELECT sensor, count(*) AS n, sum(value) AS total FROM readings GROUP BY sensor ORDER BY sensor",
        ],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let want: String = (0..3)
        .map(|s| {
            let values: Vec<u64> = (0..rows).filter(|i| i % 3 == s).collect();
            format!(
                "{{\"sensor\":\"s-{s}\",\"n\":{},\"total\":{}}}\n",
                values.len(),
                values.iter().sum::<u64>()
            )
        })
        .collect();
    assert_eq!(String::from_utf8(out.stdout).unwrap(), want);
}

/// A scale-out script: per-user counts per second of event time, from a topic keyed by user,
/// into `output` exactly once. `group_by` is the GROUP BY key (besides the window), `key` the
/// source's `key.fields`.
fn scale_out_job(b: &str, input: &str, output: &str, group: &str, key: &str, group_by: &str) -> String {
    format!(
        "CREATE SOURCE clicks (uid VARCHAR, ts_ms BIGINT, ts AS to_timestamp_millis(ts_ms), \
                               WATERMARK FOR ts AS ts - INTERVAL '2' SECOND) \
           WITH (connector = 'kafka', topic = '{input}', 'properties.bootstrap.servers' = '{b}', \
                 'properties.group.id' = '{group}', 'scan.startup.mode' = 'earliest-offset', \
                 format = 'json'{key}); \
         CREATE SINK per_user WITH (connector = 'kafka', topic = '{output}', \
                 'properties.bootstrap.servers' = '{b}', format = 'json', \
                 'sink.delivery-guarantee' = 'exactly-once', 'sink.transactional-id-prefix' = '{group}') AS \
         SELECT to_unixtime(window_start) AS w, {group_by} AS k, count(*) AS n \
         FROM clicks GROUP BY tumble(ts, INTERVAL '1' SECOND), {group_by};"
    )
}

/// `weir sql --scale-out ARGS` in `dir`, started.
fn scale_out(dir: &std::path::Path) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_weir"))
        .current_dir(dir)
        .args(["--dir", "data", "sql", "-f", "job.sql", "--scale-out", "--checkpoint-interval", "300ms"])
        .args(["--checkpoint-dir", "shared"])
        .env_remove("WEIR_DIR")
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

#[test]
fn a_scale_out_group_by_that_is_not_the_topics_key_is_refused_saying_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("", "uid", "declared on the source ('key.fields' = '<column>' on clicks)"),
        (", 'key.fields' = 'uid'", "upper(uid)", "as it is (not renamed or computed)"),
    ];
    for (key, group_by, says) in cases {
        std::fs::write(
            dir.path().join("job.sql"),
            scale_out_job("127.0.0.1:1", "in", "out", "g", key, group_by),
        )
        .unwrap();
        let out = weir(
            dir.path(),
            &[
                "sql",
                "-f",
                "job.sql",
                "--scale-out",
                "--checkpoint-interval",
                "1s",
                "--checkpoint-dir",
                "shared",
            ],
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{group_by}: {stderr}");
        assert!(stderr.contains("a scale-out run (--scale-out): sink per_user groups rows"), "{stderr}");
        assert!(stderr.contains(says), "{group_by}: {stderr}");
    }
}

/// The lines the task group committed on `topic`.
fn committed_lines(b: &str, group: &str, topic: &str, partitions: i32) -> i64 {
    common::committed(b, group, topic, partitions).values().map(|(offset, _)| offset).sum()
}

#[test]
fn three_scale_out_processes_one_killed_count_every_event_once() {
    use std::collections::BTreeMap;
    use std::time::Duration;

    let Some(b) = bootstrap() else { return };
    let mut rng = weir_testkit::Rng::from_env_or_clock("WEIR_KAFKA_SEED");
    let (input, output, group) = (common::unique("so-in"), common::unique("so-out"), common::unique("so"));
    const PARTITIONS: i32 = 6;
    const EVENTS: i64 = 60_000;
    const T0: i64 = 1_700_000_000_000;
    common::create_topic(&b, &input, PARTITIONS);
    common::create_topic(&b, &output, 1);
    // 300 users, 500 events per second of event time, up to 1 s out of order (the watermark
    // allows 2 s); then one event per partition an hour later, which closes every window.
    let mut want: BTreeMap<(i64, String), i64> = BTreeMap::new();
    let records: Vec<(String, String)> = (0..EVENTS)
        .map(|i| {
            let uid = format!("u{}", rng.below(300));
            let ts = T0 + i * 2 - rng.below(1_000) as i64;
            *want.entry((ts.div_euclid(1_000) * 1_000, uid.clone())).or_default() += 1;
            (uid.clone(), format!(r#"{{"uid": "{uid}", "ts_ms": {ts}}}"#))
        })
        .collect();
    common::produce(&b, &input, &records);
    let producer: rdkafka::producer::BaseProducer =
        rdkafka::ClientConfig::new().set("bootstrap.servers", &b).create().unwrap();
    for p in 0..PARTITIONS {
        let closing = format!(r#"{{"uid": "closing", "ts_ms": {}}}"#, T0 + 3_600_000);
        producer
            .send(rdkafka::producer::BaseRecord::<str, str>::to(&input).partition(p).payload(&closing))
            .unwrap();
    }
    rdkafka::producer::Producer::flush(&producer, Duration::from_secs(30)).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let job = scale_out_job(&b, &input, &output, &group, ", 'key.fields' = 'uid'", "uid");
    std::fs::write(dir.path().join("job.sql"), job).unwrap();
    let mut children = common::Children::default();
    for _ in 0..3 {
        children.0.push(scale_out(dir.path()));
    }
    let started = std::time::Instant::now();
    common::wait_until(Duration::from_secs(120), "every process owning partitions", || {
        children.check_running();
        let owned = common::assigned(&b, &group);
        owned.len() == 3 && owned.iter().all(|n| *n > 0)
    });
    let threshold = EVENTS * 3 / 10 + rng.below(EVENTS as u64 * 4 / 10) as i64;
    common::wait_until(Duration::from_secs(300), "30 % of the events", || {
        children.check_running();
        committed_lines(&b, &group, &input, PARTITIONS) >= threshold
    });
    let victim = rng.below(3) as usize;
    eprintln!(
        "SIGKILL process {victim} past event {threshold} of {EVENTS}, {:?} after the start",
        started.elapsed()
    );
    children.0[victim].kill().unwrap();
    children.0[victim].wait().unwrap();
    std::thread::sleep(Duration::from_millis(rng.below(3_000)));
    children.0[victim] = scale_out(dir.path());

    let rows = || -> Vec<(i64, String, i64)> {
        let mut rows: Vec<(i64, String, i64)> = common::read_all(&b, &output, "read_committed")
            .iter()
            .map(|r| {
                let v: serde_json::Value = serde_json::from_str(&r.value).unwrap();
                (
                    v["w"].as_i64().unwrap() * 1_000,
                    v["k"].as_str().unwrap().to_owned(),
                    v["n"].as_i64().unwrap(),
                )
            })
            .filter(|(_, k, _)| k != "closing")
            .collect();
        rows.sort();
        rows
    };
    let want: Vec<(i64, String, i64)> = want.into_iter().map(|((w, k), n)| (w, k, n)).collect();
    let mut last = 0;
    common::wait_until(Duration::from_secs(300), "every window's row", || {
        children.check_running();
        if common::lso_and_high(&b, &output, 0).0 < want.len() as i64 {
            return false;
        }
        let n = rows().len();
        if n != last {
            eprintln!("{n} of {} rows", want.len());
            last = n;
        }
        n >= want.len()
    });
    eprintln!("every row {:?} after the start", started.elapsed());
    // Let a late duplicate show up before comparing.
    std::thread::sleep(Duration::from_secs(3));
    let got = rows();
    assert_eq!(got.len(), want.len(), "rows from three processes, one killed, against a brute-force count");
    assert!(got == want, "the rows differ from a brute-force count");
}
