//! `--scale-out`: the same analysis as one of any number of processes, through Apache Kafka.
//!
//! Every process runs three task groups ([`KafkaTasks`]); Kafka spreads each group's
//! partitions over the processes, and a process that dies hands its tasks (and their
//! checkpointed state, under `--dir`, which every process must reach) to the others. Every
//! task writes exactly once, so the results topic gets each row once, whoever died.
//!
//! | group | reads | keyed by | computes | writes |
//! |---|---|---|---|---|
//! | `parse` | the access topic | client (as ingest keys it) | parses; sessions and the 5-minute client counts with each task's top 10 | `requests`: requests keyed by path, the client tops and sessions |
//! | `paths` | `requests` | path | per path and minute: requests and percentiles, each task's top 10; per task and minute: requests by status class, 5xx | `partials`, keyed by window |
//! | `merge` | `partials` | window | the global top 10s (the top 10 of the tasks' top 10s, each key in one task), sums by status class, alerts | the results topic, keyed by kind |
//!
//! The rows are those of the one-process job (`<kind>.jsonl`), field for field: every key of a
//! keyed aggregation is in one task, and a global result is merged from per-task partials that
//! cover every key once. Event time crosses the topics with the writers' watermarks
//! ([`KafkaSink::repartition`]), so a window's results, written when the writer's watermark
//! passed the window's end, are on time downstream.
//!
//! A partition without data holds the windows back (there is no idle timeout: a task that is
//! moving between processes must not be taken for idle, or its records would come late).

use std::time::Duration;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use weir::runtime::{Pipeline, TumblingWindows, Watermarks, WindowResult};
use weir_kafka::{KafkaConfig, KafkaRecord, KafkaSink, KafkaTasks, StartOffset, Task};

use crate::access_log::parse_access_log;
use crate::stats::{self, Access, ClientCount, Errors, PathStats, Session};
use crate::{Args, MINUTE, PIPELINE};

/// A record of the `requests` topic.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
enum Shuffled {
    /// A request, keyed by path.
    Request(Access),
    /// A `parse` task's 10 busiest clients of a 5-minute window, keyed by the window.
    Clients(WindowResult<i64, Vec<ClientCount>>),
    /// A client's session, keyed by client.
    Session(Session),
}

impl Shuffled {
    /// The key on the `requests` topic.
    fn key(&self) -> String {
        match self {
            Shuffled::Request(a) => a.path.to_string(),
            Shuffled::Clients(top) => top.key.to_string(),
            Shuffled::Session(s) => s.key.to_string(),
        }
    }

    /// The request `self` is, if it is one.
    fn request(self) -> Option<Access> {
        match self {
            Shuffled::Request(a) => Some(a),
            _ => None,
        }
    }
}

/// A record of the `partials` topic: one task's part of a window's result, keyed by the
/// window (a session passing through, by client).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
enum Partial {
    /// A task's requests and bytes of a status class.
    Status(WindowResult<u8, (u64, u64)>),
    /// A task's requests and 5xx responses.
    Errors(Errors),
    /// A task's 10 busiest paths (every path is in one task).
    Paths(WindowResult<i64, Vec<PathStats>>),
    /// A `parse` task's 10 busiest clients (every client is in one task).
    Clients(WindowResult<i64, Vec<ClientCount>>),
    /// A session.
    Session(Session),
}

impl Partial {
    /// The key on the `partials` topic.
    fn key(&self) -> String {
        match self {
            Partial::Status(r) => r.window_start.to_string(),
            Partial::Errors(r) => r.window_start.to_string(),
            Partial::Paths(top) => top.key.to_string(),
            Partial::Clients(top) => top.key.to_string(),
            Partial::Session(s) => s.key.to_string(),
        }
    }
}

/// How the rows report: the alert threshold, and whether percentiles are of request times
/// (else of response bytes).
#[derive(Debug, Clone, Copy)]
struct Rows {
    threshold: f64,
    time_mode: bool,
}

/// A result row: its kind (the record key) and its JSON (the value).
#[derive(Debug, Clone)]
struct Out {
    kind: &'static str,
    json: String,
}

fn out<T: Serialize>(kind: &'static str, row: &T) -> Out {
    Out { kind, json: serde_json::to_string(row).unwrap_or_default() }
}

/// The topics of a run: the access lines, the two internal ones and the results.
struct Topics {
    input: String,
    requests: String,
    partials: String,
    results: String,
    dead_letters: String,
}

/// Runs this process's share of the job until Ctrl-C.
pub(crate) async fn run(args: &Args, bootstrap: &str, time_mode: bool) -> anyhow::Result<()> {
    let config = KafkaConfig::new(bootstrap);
    let partitions = weir_examples::partition_count(bootstrap, &args.kafka_topic).with_context(|| {
        format!(
            "fill topic {} first (log_analytics --kafka-bootstrap ... --kafka-ingest-only)",
            args.kafka_topic
        )
    })?;
    let topics = Topics {
        input: args.kafka_topic.clone(),
        requests: format!("{PIPELINE}.requests"),
        partials: format!("{PIPELINE}.partials"),
        results: format!("{PIPELINE}.results"),
        dead_letters: format!("{PIPELINE}.dlq"),
    };
    let new = |name, partitions, keep| weir_examples::NewTopic { name, partitions, keep };
    weir_examples::create_topics(
        bootstrap,
        &[
            new(&topics.requests, partitions, true),
            new(&topics.partials, partitions, true),
            new(&topics.results, 1, false),
            new(&topics.dead_letters, 1, false),
        ],
    )
    .await
    .with_context(|| format!("creating the topics on {bootstrap}"))?;
    eprintln!(
        "scale-out      {} ({partitions} partitions) -> {} (keyed by kind); tasks checkpoint under {}",
        topics.input,
        topics.results,
        args.dir.join("tasks").display()
    );
    let metrics = weir::runtime::Metrics::new();
    let server = weir::metrics::serve(
        metrics.clone(),
        &weir::metrics::ServerConfig::default().addr(args.metrics_addr),
    )
    .await;
    match &server {
        Ok(s) => eprintln!("metrics        http://{}/metrics", s.addr()),
        Err(e) => eprintln!("note: no metrics endpoint: {e}"),
    }
    let interval = args.checkpoint_interval.unwrap_or(Duration::from_secs(1));
    let tasks = |topic: &str, group: &str| {
        KafkaTasks::new(config.clone(), topic, format!("{PIPELINE}-{group}"))
            .checkpoint_dir(args.dir.join("tasks"))
            .checkpoint_interval(interval)
            .metrics(&metrics)
    };
    let writers = partitions as u32;
    let disorder = Watermarks::bounded_out_of_orderness(Duration::from_secs(args.max_disorder_secs));
    let dead_letters = KafkaSink::json(config.clone(), topics.dead_letters.clone());

    let requests = KafkaSink::json(config.clone(), topics.requests.clone())
        .key_by(Shuffled::key)
        .repartition()
        .exactly_once(format!("{PIPELINE}-parse"));
    let parse = tasks(&topics.input, "parse").run(
        move |task| {
            // The access topic is keyed by client (ingest keys it so), the key of both
            // aggregations here.
            task.copartitioned();
            let p = task.pipeline("parse").build()?;
            p.dead_letters(dead_letters.clone());
            parse_stage(&p, task, disorder, task.sink(requests.clone()));
            Ok(p)
        },
        shutdown(),
    );

    let partials = KafkaSink::json(config.clone(), topics.partials.clone())
        .key_by(Partial::key)
        .repartition()
        .exactly_once(format!("{PIPELINE}-paths"));
    let paths = tasks(&topics.requests, "paths").run(
        move |task| {
            // `requests` is keyed by path, the key of the per-path statistics; the other
            // aggregations here are per task, merged downstream.
            task.copartitioned();
            let p = task.pipeline("paths").build()?;
            paths_stage(&p, task, writers, time_mode, task.sink(partials.clone()));
            Ok(p)
        },
        shutdown(),
    );

    let results = KafkaSink::with_encoder(config.clone(), topics.results.clone(), |o: &Out, buf| {
        buf.extend_from_slice(o.json.as_bytes());
        Ok(())
    })
    .key_by(|o: &Out| o.kind)
    .exactly_once(format!("{PIPELINE}-merge"));
    let rows = Rows { threshold: args.error_threshold, time_mode };
    let merge = tasks(&topics.partials, "merge").run(
        move |task| {
            // `partials` is keyed by window, the key of every merge.
            task.copartitioned();
            let p = task.pipeline("merge").build()?;
            merge_stage(&p, task, writers, rows, task.sink(results.clone()));
            Ok(p)
        },
        shutdown(),
    );
    let ran = tokio::try_join!(parse, paths, merge);
    if let Ok(server) = server {
        server.shutdown().await;
    }
    ran?;
    Ok(())
}

/// Access lines → requests keyed by path, each task's top clients per 5-minute window, and
/// sessions.
fn parse_stage(p: &Pipeline, task: &Task, disorder: Watermarks, sink: KafkaSink<Shuffled>) {
    let events = p
        .source(task.source().start_offset(StartOffset::Earliest))
        .try_map(|r: &KafkaRecord| {
            let line = r.value_str().map_err(|e| format!("not UTF-8: {e}"))?;
            parse_access_log(line).map(Access::from).map_err(|e| e.to_string())
        })
        .assign_timestamps(|a| a.ts, disorder);
    let [requests, clients, sessions] = events.split();
    requests
        .map(Shuffled::Request)
        .union(stats::top_clients(clients).map(Shuffled::Clients))
        .union(stats::sessions(sessions).map(Shuffled::Session))
        .sink(sink);
}

/// Requests keyed by path → each task's top paths, status-class and 5xx counts per minute;
/// client tops and sessions pass through.
fn paths_stage(p: &Pipeline, task: &Task, writers: u32, time_mode: bool, sink: KafkaSink<Partial>) {
    let [requests, passing] = repartitioned::<Shuffled>(p, task, writers).split();
    let passing = passing.flat_map(|s| match s {
        Shuffled::Clients(top) => Some(Partial::Clients(top)),
        Shuffled::Session(s) => Some(Partial::Session(s)),
        Shuffled::Request(_) => None,
    });
    let [paths, status, errors] = requests.flat_map(Shuffled::request).split();
    stats::top_paths(paths, time_mode)
        .map(Partial::Paths)
        .union(stats::status_counts(status).map(Partial::Status))
        .union(stats::error_counts(errors).map(Partial::Errors))
        .union(passing)
        .sink(sink);
}

/// Partials keyed by window → the rows, keyed by kind.
fn merge_stage(p: &Pipeline, task: &Task, writers: u32, rows: Rows, sink: KafkaSink<Out>) {
    let Rows { threshold, time_mode } = rows;
    let [status, errors, paths, clients, sessions] = repartitioned::<Partial>(p, task, writers).split();
    let status = status
        .flat_map(|p| match p {
            Partial::Status(r) => Some(r),
            _ => None,
        })
        .key_by(|r| r.key)
        .window(TumblingWindows::of(MINUTE))
        .aggregate_with(|a| (a.sum(|r| r.value.0), a.sum(|r| r.value.1)))
        .map(|r| out("status", &stats::status_row(r)));
    let alerts = errors
        .flat_map(|p| match p {
            Partial::Errors(r) => Some(r),
            _ => None,
        })
        .key_by(|_| ())
        .window(TumblingWindows::of(MINUTE))
        .aggregate_with(|a| (a.sum(|r| r.value.0), a.sum(|r| r.value.1)))
        .flat_map(move |r| stats::alert_row(r, threshold).map(|row| out("alerts", &row)));
    let paths = paths
        .flat_map(|p| match p {
            Partial::Paths(top) => top.value,
            _ => Vec::new(),
        })
        .key_by(|s| s.window_start)
        .window(TumblingWindows::of(MINUTE))
        .aggregate_with(|a| a.top_by(10, stats::path_rank))
        .flat_map(move |top| {
            stats::path_rows(top.value, time_mode).iter().map(|r| out("paths", r)).collect::<Vec<_>>()
        });
    let clients = clients
        .flat_map(|p| match p {
            Partial::Clients(top) => top.value,
            _ => Vec::new(),
        })
        .key_by(|c| c.window_start)
        .window(TumblingWindows::of(MINUTE))
        .aggregate_with(|a| a.top_by(10, stats::client_rank))
        .flat_map(|top| stats::client_rows(top.value).iter().map(|r| out("clients", r)).collect::<Vec<_>>());
    let sessions = sessions.flat_map(|p| match p {
        Partial::Session(s) => Some(out("sessions", &stats::session_row(s))),
        _ => None,
    });
    status.union(alerts).union(paths).union(clients).union(sessions).sink(sink);
}

/// A repartition topic's records, decoded, with event time and the writers' watermarks.
fn repartitioned<T>(p: &Pipeline, task: &Task, writers: u32) -> weir::runtime::Stream<T>
where
    T: serde::de::DeserializeOwned + Send + 'static,
{
    p.source(task.source().from_repartition(writers).start_offset(StartOffset::Earliest))
        .assign_timestamps_punctuated(|r| r.timestamp.unwrap_or(i64::MIN), KafkaRecord::watermark, None)
        .filter(|r| !r.is_heartbeat())
        .try_map(|r: &KafkaRecord| r.parse_json::<T>())
}

async fn shutdown() {
    let _ = tokio::signal::ctrl_c().await;
}
