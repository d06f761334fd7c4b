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
