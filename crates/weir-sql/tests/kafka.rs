//! SQL over Apache Kafka (`connector = 'kafka'`, Flink SQL's option names).
//!
//! - Options: typed ones parsed, unknown ones refused naming the nearest, keys Weir owns
//!   refused naming the option, passwords only from the environment or a file and never
//!   printed (no broker needed).
//! - A JSON topic → tumbling-window GROUP BY → a Kafka topic (keyed by a column), and a `raw`
//!   source → a CSV sink, over bounded input: rows equal to a brute-force computation over the
//!   same generated input.
//! - Exactly once through SIGKILL: the same job (unbounded source, exactly-once sink,
//!   checkpoints every 200 ms, parallelism 2) in a child process, killed past 30 % of its input
//!   and restarted, gives a `read_committed` output equal (as a multiset of rows) to an
//!   uninterrupted run's; a `read_uncommitted` reader sees the aborted transaction's rows.
//!
//! Tests that need a broker read its address from `WEIR_KAFKA_BOOTSTRAP` ([`bootstrap`]) and
//! skip, saying so, without it.

#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

#[path = "../../weir-kafka/tests/common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{committed, create_topic, lso_and_high, produce, read_all, unique, wait_until};
use weir_runtime::Checkpointing;
use weir_sql::{Script, ScriptOptions, SqlError, StreamContext};
use weir_testkit::{ChildTest, Rng};

/// The broker's bootstrap address, or `None` (the test returns; it printed why).
fn bootstrap() -> Option<String> {
    common::bootstrap()
}

/// Runs `script` (sources and sinks) at `parallelism`, checkpointed into `checkpoints` if given.
async fn run(script: &str, parallelism: usize, checkpoints: Option<Checkpointing>) -> Result<(), SqlError> {
    let options = ScriptOptions {
        parallelism,
        checkpointing: checkpoints,
        handle_signals: false,
        ..ScriptOptions::default()
    };
    Script::parse(script)?.run(&mut StreamContext::new(), &options).await.map(|_| ())
}

/// The error `script` is refused with when it is planned.
async fn refusal(script: &str) -> String {
    match run(script, 2, None).await {
        Ok(()) => panic!("accepted: {script}"),
        Err(e) => e.to_string(),
    }
}

const SOURCE: &str = "CREATE SOURCE s (ts_ms BIGINT, k VARCHAR, v BIGINT) WITH (connector = 'kafka', \
                      topic = 't', 'properties.bootstrap.servers' = '127.0.0.1:1'";

/// A source with `options` added.
fn source(options: &str) -> String {
    format!("{SOURCE}{options});")
}

/// A source, and a sink with `options` over `SELECT k, v FROM s`.
fn sink(options: &str) -> String {
    format!(
        "{} CREATE SINK out WITH (connector = 'kafka', topic = 'o', \
         'properties.bootstrap.servers' = '127.0.0.1:1'{options}) AS SELECT k, v FROM s",
        source("")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_options_are_parsed_and_mistakes_refused_naming_the_option() {
    // Valid: every typed option, and librdkafka properties passed through.
    run(
        &source(
            ", 'properties.group.id' = 'g', 'scan.startup.mode' = 'timestamp', \
             'scan.startup.timestamp-millis' = '1700000000000', 'scan.bounded.mode' = 'unbounded', \
             format = 'csv', 'properties.fetch.min.bytes' = '1'",
        ),
        2,
        None,
    )
    .await
    .unwrap();

    let cases: &[(String, &str, &str)] = &[
        (
            source(", 'scan.startup.mod' = 'earliest-offset'"),
            "scan.startup.mod",
            "did you mean scan.startup.mode?",
        ),
        (source(", 'scan.startup.mode' = 'specific-offsets'"), "scan.startup.mode", "earliest-offset"),
        (source(", 'scan.startup.mode' = 'timestamp'"), "scan.startup.timestamp-millis", "needs it"),
        (source(", 'scan.startup.timestamp-millis' = '5'"), "scan.startup.timestamp-millis", "only with"),
        (source(", 'scan.bounded.mode' = 'group-offsets'"), "scan.bounded.mode", "latest-offset"),
        (source(", format = 'avro'"), "format", "json, csv or raw"),
        (source(", format = 'raw'"), "format", "one column"),
        (
            source(", 'properties.enable.auto.commit' = 'true'"),
            "properties.enable.auto.commit",
            "set by Weir",
        ),
        (
            source(", 'properties.isolation.level' = 'read_uncommitted'"),
            "properties.isolation.level",
            "set by Weir",
        ),
        (
            source(", 'properties.sasl.password' = 'x'"),
            "properties.sasl.password",
            "properties.sasl.password.env",
        ),
        (source(", 'properties.sasl.mechanism' = 'PLAIN'"), "properties.sasl.username", "missing"),
        (
            source(
                ", 'properties.sasl.mechanism' = 'GSSAPI', 'properties.sasl.username' = 'u', \
                 'properties.sasl.password.file' = '/nonexistent/weir-password'",
            ),
            "properties.sasl.password.file",
            "/nonexistent/weir-password",
        ),
        (
            source(", 'properties.security.protocol' = 'SASL_SSL'"),
            "properties.security.protocol",
            "which give \"SSL\"",
        ),
        (
            source(", 'properties.security.protocol' = 'PLAINTEXT', 'properties.ssl.ca.location' = 'ca.pem'"),
            "properties.security.protocol",
            "\"SSL\"",
        ),
        (
            "CREATE SOURCE s (x INT) WITH (connector = 'kafka', topic = 't')".to_owned(),
            "properties.bootstrap.servers",
            "brokers",
        ),
        (sink(", 'sink.delivery-guarantee' = 'exactly-once'"), "sink.transactional-id-prefix", "needs"),
        (
            sink(", 'sink.delivery-guarantee' = 'exactly-once', 'sink.transactional-id-prefix' = 'p'"),
            "sink.delivery-guarantee",
            "--checkpoint-interval",
        ),
        (
            sink(", 'sink.delivery-guarantee' = 'none'"),
            "sink.delivery-guarantee",
            "at-least-once or exactly-once",
        ),
        (sink(", 'sink.transactional-id-prefix' = 'p'"), "sink.transactional-id-prefix", "only with"),
        (sink(", 'key.fields' = 'nope'"), "key.fields", "no column \"nope\""),
        (sink(", format = 'raw'"), "format", "json or csv"),
        (
            sink(", 'sink.delivery-guarante' = 'exactly-once'"),
            "sink.delivery-guarante",
            "did you mean sink.delivery-guarantee?",
        ),
        (
            sink(", 'properties.transactional.id' = 'x'"),
            "properties.transactional.id",
            "sink.transactional-id-prefix",
        ),
    ];
    for (script, field, says) in cases {
        let err = refusal(script).await;
        assert!(err.contains(&format!("option {field}:")), "{script}\n-> {err}");
        assert!(err.contains(says), "{script}\n-> {err}");
    }

    // A raw source reads into one text (or bytes) column.
    let raw = "CREATE SOURCE r (line VARCHAR) WITH (connector = 'kafka', topic = 't', \
               'properties.bootstrap.servers' = 'b:1', format = 'raw');";
    run(raw, 1, None).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_passwords_come_from_the_environment_or_a_file_and_never_print() {
    // A variable cargo sets for every test run stands for a secret in the environment.
    let in_env = std::env::var("CARGO_MANIFEST_DIR").unwrap();
    const SECRET: &str = "hunter2-sql-very-secret";
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("password");
    std::fs::write(&file, format!("{SECRET}\n")).unwrap();
    for from in [
        "'properties.sasl.password.env' = 'CARGO_MANIFEST_DIR'".to_owned(),
        format!("'properties.sasl.password.file' = '{}'", file.display()),
    ] {
        let script = source(&format!(
            ", 'properties.sasl.mechanism' = 'SCRAM-SHA-256', 'properties.sasl.username' = 'weir', {from}, \
             'properties.ssl.ca.location' = 'ca.pem', 'properties.security.protocol' = 'SASL_SSL'"
        ));
        let mut ctx = StreamContext::new();
        let options = ScriptOptions { handle_signals: false, ..ScriptOptions::default() };
        Script::parse(&script).unwrap().run(&mut ctx, &options).await.unwrap();
        let shown = format!("{:?}", ctx.sources().collect::<Vec<_>>());
        assert!(shown.contains("ScramSha256") && shown.contains("weir"), "{shown}");
        assert!(!shown.contains("hunter2") && !shown.contains(&in_env), "{shown}");
        // A refusal of the same source shows no secret either.
        let err = refusal(&script.replace("'SASL_SSL'", "'SSL'")).await;
        assert!(err.contains("properties.security.protocol"), "{err}");
        assert!(!err.contains("hunter2") && !err.contains(&in_env), "{err}");
    }
    let err = refusal(&source(
        ", 'properties.sasl.mechanism' = 'PLAIN', 'properties.sasl.username' = 'weir', \
         'properties.sasl.password.env' = 'WEIR_SQL_TEST_SURELY_UNSET'",
    ))
    .await;
    assert!(
        err.contains("option properties.sasl.password.env:") && err.contains("WEIR_SQL_TEST_SURELY_UNSET"),
        "{err}"
    );
}

/// One input event.
#[derive(Debug, Clone)]
struct Event {
    ts_ms: i64,
    k: String,
    v: i64,
}

impl Event {
    fn json(&self) -> String {
        format!(r#"{{"ts_ms":{},"k":"{}","v":{}}}"#, self.ts_ms, self.k, self.v)
    }
}

/// The first event's time.
const BASE_MS: i64 = 1_700_000_000_000;

/// `n` events 10 ms apart over 5 group keys with random values; their Kafka keys (the client)
/// are not the group keys.
fn events(n: usize, rng: &mut Rng) -> Vec<(String, Event)> {
    (0..n)
        .map(|i| {
            let e = Event {
                ts_ms: BASE_MS + 10 * i as i64,
                k: format!("k{}", rng.below(5)),
                v: rng.below(1_000) as i64,
            };
            (format!("client-{}", i % 11), e)
        })
        .collect()
}

/// A window row: (window start in seconds, key, count, sum).
type WindowRow = (i64, String, i64, i64);

/// The rows of `SELECT to_unixtime(window_start), k, count(*), sum(v) ... GROUP BY
/// tumble(ts, INTERVAL '1' SECOND), k`, computed by brute force.
fn oracle(events: &[(String, Event)]) -> Vec<WindowRow> {
    let mut groups: BTreeMap<(i64, String), (i64, i64)> = BTreeMap::new();
    for (_, e) in events {
        let g = groups.entry((e.ts_ms.div_euclid(1_000), e.k.clone())).or_default();
        g.0 += 1;
        g.1 += e.v;
    }
    groups.into_iter().map(|((w, k), (n, total))| (w, k, n, total)).collect()
}

/// The window rows of a topic's records (JSON values), sorted; checks each record's key is
/// its row's `k`.
fn window_rows(records: &[common::Read]) -> Vec<WindowRow> {
    let mut rows: Vec<WindowRow> = records
        .iter()
        .map(|r| {
            let v: serde_json::Value = serde_json::from_str(&r.value).unwrap();
            let k = v["k"].as_str().unwrap().to_owned();
            assert_eq!(r.key.as_deref(), Some(k.as_str()), "the record's key is its k column: {r:?}");
            (v["w"].as_i64().unwrap(), k, v["n"].as_i64().unwrap(), v["total"].as_i64().unwrap())
        })
        .collect();
    rows.sort();
    rows
}

/// The windowed job over `input` into `output`; `extra` adds source options, `sink` sink
/// options, `filter` a WHERE condition.
fn window_job(
    b: &str,
    input: &str,
    output: &str,
    group: &str,
    extra: &str,
    sink: &str,
    filter: &str,
) -> String {
    format!(
        "CREATE SOURCE events (ts_ms BIGINT, k VARCHAR, v BIGINT, ts AS to_timestamp_millis(ts_ms), \
                               WATERMARK FOR ts AS ts - INTERVAL '2' SECOND) \
           WITH (connector = 'kafka', topic = '{input}', 'properties.bootstrap.servers' = '{b}', \
                 'properties.group.id' = '{group}', 'scan.startup.mode' = 'earliest-offset', \
                 format = 'json'{extra}); \
         CREATE SINK per_key WITH (connector = 'kafka', topic = '{output}', \
                 'properties.bootstrap.servers' = '{b}', format = 'json', 'key.fields' = 'k'{sink}) AS \
         SELECT to_unixtime(window_start) AS w, k, count(*) AS n, sum(v) AS total \
         FROM events WHERE {filter} GROUP BY tumble(ts, INTERVAL '1' SECOND), k;"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kafka_json_topic_through_a_tumbling_window_into_kafka_equals_a_brute_force_count() {
    let Some(b) = bootstrap() else { return };
    let mut rng = Rng::from_env_or_clock("WEIR_KAFKA_SEED");
    let (input, output, copies) = (unique("sql-in"), unique("sql-windows"), unique("sql-copies"));
    create_topic(&b, &input, 3);
    create_topic(&b, &output, 2);
    create_topic(&b, &copies, 2);
    let events = events(5_000, &mut rng);
    // Every 100th value spans two lines (a line break is JSON whitespace): a CSV field that
    // holds it is quoted across the line break.
    let records: Vec<(String, String)> = events
        .iter()
        .enumerate()
        .map(|(i, (c, e))| {
            (c.clone(), if i % 100 == 0 { e.json().replacen(',', ",\n", 1) } else { e.json() })
        })
        .collect();
    produce(&b, &input, &records);

    let started = Instant::now();
    let script = format!(
        "{} CREATE SOURCE lines (line VARCHAR) WITH (connector = 'kafka', topic = '{input}', \
               'properties.bootstrap.servers' = '{b}', 'properties.group.id' = '{}', \
               'scan.startup.mode' = 'earliest-offset', 'scan.bounded.mode' = 'latest-offset', format = 'raw'); \
         CREATE SINK copies WITH (connector = 'kafka', topic = '{copies}', \
               'properties.bootstrap.servers' = '{b}', format = 'csv') AS SELECT line FROM lines;",
        window_job(&b, &input, &output, &unique("g"), ", 'scan.bounded.mode' = 'latest-offset'", "", "true"),
        unique("g")
    );
    run(&script, 2, None).await.unwrap();
    eprintln!("{} events through the job in {:?}", events.len(), started.elapsed());

    let got = window_rows(&read_all(&b, &output, "read_committed"));
    let want = oracle(&events);
    assert_eq!(got.len(), want.len(), "window rows");
    assert_eq!(got, want);

    // Each raw value, a JSON text with quotes and commas, is one CSV field.
    let mut copied: Vec<String> = read_all(&b, &copies, "read_committed")
        .iter()
        .map(|r| {
            let mut fields = csv::ReaderBuilder::new().has_headers(false).from_reader(r.value.as_bytes());
            let record = fields.records().next().unwrap().unwrap();
            assert_eq!(record.len(), 1, "{}", r.value);
            record[0].to_owned()
        })
        .collect();
    let mut want: Vec<String> = records.into_iter().map(|(_, v)| v).collect();
    copied.sort();
    want.sort();
    assert_eq!(copied, want);
}

/// The exactly-once job's child process: `bootstrap|input|output|checkpoint dir|name` (the
/// transactional id prefix; the source's group is `<name>-in`).
const CHILD: ChildTest = ChildTest::new("exactly_once_child", "WEIR_SQL_KAFKA_CHILD");
/// Events of the kill test.
const KILL_EVENTS: usize = 40_000;

/// The job (in the child): unbounded source, exactly-once sink, checkpoints every 200 ms,
/// parallelism 2; `pace` slows it so the kill lands mid-run with a transaction open.
#[test]
fn exactly_once_child() {
    use arrow::array::AsArray;
    use datafusion::logical_expr::{ColumnarValue, Volatility, create_udf};

    let Some(arg) = CHILD.value() else { return };
    common::child_setup();
    let args: Vec<&str> = arg.split('|').collect();
    let [b, input, output, dir, name] = args[..] else { panic!("bad argument {arg}") };
    let pace = create_udf(
        "pace",
        vec![arrow::datatypes::DataType::Int64],
        arrow::datatypes::DataType::Boolean,
        Volatility::Volatile,
        Arc::new(|args: &[ColumnarValue]| {
            let arrays = ColumnarValue::values_to_arrays(args)?;
            let v = arrays[0].as_primitive::<arrow::datatypes::Int64Type>();
            std::thread::sleep(Duration::from_micros(100) * v.len() as u32);
            Ok(ColumnarValue::Array(Arc::new(
                v.iter().map(|x| x.map(|_| true)).collect::<arrow::array::BooleanArray>(),
            )))
        }),
    );
    let script = window_job(
        b,
        input,
        output,
        &format!("{name}-in"),
        // Small fetches (a librdkafka property passed through), so the partitions of a subtask
        // are read side by side and event time advances evenly: windows fire all along.
        ", 'properties.max.partition.fetch.bytes' = '16384'",
        &format!(", 'sink.delivery-guarantee' = 'exactly-once', 'sink.transactional-id-prefix' = '{name}'"),
        "k <> 'end' AND pace(v)",
    );
    // `pace` blocks its worker thread: enough workers that the checkpoints and the sink's
    // transactions go on meanwhile.
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(8).enable_all().build().unwrap();
    rt.block_on(async {
        let mut ctx = StreamContext::new();
        ctx.register_udf(pace);
        let options = ScriptOptions {
            name: name.to_owned(),
            parallelism: 2,
            checkpointing: Some(Checkpointing::to_dir(dir).interval(Duration::from_millis(200))),
            handle_signals: false,
            ..ScriptOptions::default()
        };
        Script::parse(&script).unwrap().run(&mut ctx, &options).await.unwrap();
    });
}

/// Sums of the consumer group `group`'s committed offsets on `topic` (3 partitions).
fn committed_sum(b: &str, group: &str, topic: &str) -> i64 {
    committed(b, group, topic, 3).values().map(|(o, _)| *o).sum()
}

/// Waits until `output` holds `rows` rows for a `read_committed` reader and no transaction is
/// open on it, while `child` runs.
fn wait_done(b: &str, child: &mut std::process::Child, output: &str, rows: usize) {
    wait_until(Duration::from_secs(120), "the job's output", || {
        assert!(child.try_wait().unwrap().is_none(), "the job ended");
        read_all(b, output, "read_committed").len() >= rows
            && (0..3).map(|p| lso_and_high(b, output, p)).all(|(lso, high)| lso == high)
    });
}

/// Events far ahead, on every partition, that the query filters out: their watermarks fire
/// every window of the input before them.
fn produce_end(b: &str, topic: &str) {
    let end = Event { ts_ms: BASE_MS + 1_000_000_000, k: "end".into(), v: 0 };
    produce(b, topic, &(0..30).map(|i| (format!("end-{i}"), end.json())).collect::<Vec<_>>());
}

#[test]
fn sql_kafka_window_kafka_exactly_once_killed_and_restarted_equals_an_uninterrupted_run() {
    if CHILD.is_child() {
        return;
    }
    let Some(b) = bootstrap() else { return };
    let mut rng = Rng::from_env_or_clock("WEIR_KAFKA_SEED");
    // The same input in two topics: the uninterrupted run reads one, the killed one the other.
    let (clean_in, killed_in) = (unique("sql-eo-clean-in"), unique("sql-eo-killed-in"));
    let (clean_out, killed_out) = (unique("sql-eo-clean"), unique("sql-eo-killed"));
    for topic in [&clean_in, &killed_in, &clean_out, &killed_out] {
        create_topic(&b, topic, 3);
    }
    let events = events(KILL_EVENTS, &mut rng);
    let want = oracle(&events);
    let records: Vec<(String, String)> = events.iter().map(|(c, e)| (c.clone(), e.json())).collect();
    produce(&b, &clean_in, &records);
    produce_end(&b, &clean_in);
    produce(&b, &killed_in, &records);
    let dir = tempfile::tempdir().unwrap();

    // The uninterrupted run.
    let started = Instant::now();
    let clean = unique("sql-eo-clean");
    let mut child = common::spawn(
        &CHILD,
        format!("{b}|{clean_in}|{clean_out}|{}|{clean}", dir.path().join("clean").display()),
    );
    wait_done(&b, &mut child, &clean_out, want.len());
    child.kill().unwrap();
    child.wait().unwrap();
    eprintln!("uninterrupted run: {:?}", started.elapsed());

    // The run killed past 30 % of its input, and restarted.
    let name = unique("sql-eo-killed");
    let input_end: i64 = (0..3).map(|p| lso_and_high(&b, &killed_in, p).1).sum();
    let arg = format!("{b}|{killed_in}|{killed_out}|{}|{name}", dir.path().join("killed").display());
    let mut first = common::spawn(&CHILD, &arg);
    // Progress: the rows committed (each checkpoint's transaction), against the rows of the
    // whole run.
    let at = (want.len() * 3 / 10 + rng.below(want.len() as u64 / 3) as usize) as i64;
    use rdkafka::consumer::Consumer;
    let committed_reader: rdkafka::consumer::BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &b)
        .set("isolation.level", "read_committed")
        .create()
        .unwrap();
    let lso = |p: i32| committed_reader.fetch_watermarks(&killed_out, p, Duration::from_secs(10)).unwrap().1;
    wait_until(Duration::from_secs(120), "the job to pass 30 %", || {
        assert!(first.try_wait().unwrap().is_none(), "the job ended");
        (0..3).map(lso).sum::<i64>() >= at
    });
    first.kill().unwrap();
    first.wait().unwrap();
    let high_at_kill: Vec<i64> = (0..3).map(|p| lso_and_high(&b, &killed_out, p).1).collect();
    let open = (0..3).any(|p| lso_and_high(&b, &killed_out, p).0 < high_at_kill[p as usize]);
    eprintln!(
        "killed at {} output offsets ({} rows in all), {} of {input_end} input offsets committed; a \
         transaction was open: {open}",
        high_at_kill.iter().sum::<i64>(),
        want.len(),
        committed_sum(&b, &format!("{name}-in"), &killed_in)
    );
    let started = Instant::now();
    let mut second = common::spawn(&CHILD, &arg);
    // Partitions read to their end before the kill send nothing after the restore: the end
    // events come now, so their windows need not wait for the partitions to turn idle.
    produce_end(&b, &killed_in);
    wait_done(&b, &mut second, &killed_out, want.len());
    second.kill().unwrap();
    second.wait().unwrap();
    eprintln!("restarted run: {:?}", started.elapsed());

    let clean_rows = window_rows(&read_all(&b, &clean_out, "read_committed"));
    let killed_rows = window_rows(&read_all(&b, &killed_out, "read_committed"));
    assert_eq!(clean_rows, want, "the uninterrupted run against a brute-force count");
    assert_eq!(
        killed_rows.len(),
        clean_rows.len(),
        "rows of the killed and restarted run; missing: {:?}",
        weir_testkit::missing(&clean_rows, &killed_rows)
    );
    assert_eq!(killed_rows, clean_rows);
    let uncommitted = read_all(&b, &killed_out, "read_uncommitted").len();
    eprintln!("read_committed {} rows, read_uncommitted {uncommitted}", killed_rows.len());
    if open {
        assert!(
            uncommitted > killed_rows.len(),
            "the aborted transaction's rows are visible to read_uncommitted"
        );
    }
}
