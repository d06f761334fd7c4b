//! Requests per status class and minute over an access-log topic on Apache Kafka, spread over
//! as many processes as you start: the README's "from one machine to many" job.
//!
//! The topic is keyed by client (as `log_analytics --kafka-bootstrap` writes it), the counts by
//! status class, so the job has two task groups ([`KafkaTasks`]): `classify` parses each line
//! and writes `(class, bytes)` to a repartition topic keyed by class, exactly once, with
//! heartbeats that carry event time; `count` reads it and counts per class in one-minute
//! tumbling windows of event time, writing JSON rows to the output topic, exactly once. Every
//! process runs both groups; Kafka spreads the partitions, and a process that dies hands its
//! tasks (and their checkpointed state, under `--dir`, which every process must reach) to the
//! others.
//!
//! ```text
//! cargo run --release -p weir-examples --features kafka --example kafka_status_counts -- \
//!     --bootstrap 127.0.0.1:9092 --input access --output status-counts --dir /shared/weir
//! ```
//!
//! The repartition topic (`<group>-classes`, as many partitions as the input, records kept for
//! ever: they carry event time, which time-based retention would judge old) and the output
//! topic are created if missing.

#[path = "log_analytics/access_log.rs"]
#[allow(dead_code)]
mod access_log;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use weir::runtime::{Sum, TumblingWindows, Watermarks};
use weir_examples::NewTopic;
use weir_kafka::{KafkaConfig, KafkaRecord, KafkaSink, KafkaTasks, StartOffset};

#[derive(Debug, clap::Parser)]
#[command(about = "Requests per status class and minute over a Kafka access-log topic, on many processes")]
struct Args {
    /// The Kafka bootstrap servers.
    #[arg(long)]
    bootstrap: String,
    /// The topic of access-log lines.
    #[arg(long, default_value = "access")]
    input: String,
    /// Where the rows go.
    #[arg(long, default_value = "status-counts")]
    output: String,
    /// The consumer groups' prefix and the transactional ids' prefix (unique per job).
    #[arg(long, default_value = "status-counts")]
    group: String,
    /// Where tasks checkpoint: a directory every process reaches.
    #[arg(long, default_value = "weir-kafka-data")]
    dir: PathBuf,
    /// How late (seconds) a line may be behind the newest of its partition.
    #[arg(long, default_value_t = 5)]
    max_disorder_secs: u64,
}

/// A classified request, on the repartition topic.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Classified {
    class: String,
    bytes: u64,
}

/// A row of the output.
#[derive(Debug, Serialize)]
struct Row {
    class: String,
    window_start: i64,
    requests: u64,
    bytes: u64,
}

fn classify(line: &KafkaRecord) -> Result<(Classified, i64), String> {
    let line = line.value_str().map_err(|e| e.to_string())?;
    let e = access_log::parse_access_log(line).map_err(|e| e.to_string())?;
    Ok((Classified { class: format!("{}xx", e.status / 100), bytes: e.bytes }, e.timestamp_ms))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = <Args as clap::Parser>::parse();
    weir_examples::init_tracing("info");
    let config = KafkaConfig::new(&args.bootstrap);
    let partitions = weir_examples::partition_count(&args.bootstrap, &args.input)
        .context("fill it first (log_analytics --kafka-bootstrap ... --kafka-ingest-only)")?;
    let classes = format!("{}-classes", args.group);
    weir_examples::create_topics(
        &args.bootstrap,
        &[
            NewTopic { name: &classes, partitions, keep: true },
            NewTopic { name: &args.output, partitions: 1, keep: false },
        ],
    )
    .await
    .with_context(|| format!("creating the topics on {}", args.bootstrap))?;
    let disorder = Watermarks::bounded_out_of_orderness(Duration::from_secs(args.max_disorder_secs));
    let tasks = |topic: &str, stage: &str| {
        KafkaTasks::new(config.clone(), topic, format!("{}-{stage}", args.group)).checkpoint_dir(&args.dir)
    };

    let to_classes = KafkaSink::json(config.clone(), classes.clone())
        .key_by(|c: &Classified| c.class.clone())
        .repartition()
        .exactly_once(format!("{}-classify", args.group));
    let classify_group = tasks(&args.input, "classify").run(
        move |task| {
            let p = task.pipeline("classify").build()?;
            p.source(task.source().start_offset(StartOffset::Earliest))
                .try_map(classify)
                .assign_timestamps(|(_, ts)| *ts, disorder)
                .map(|(c, _)| c)
                .sink(task.sink(to_classes.clone()));
            Ok(p)
        },
        shutdown(),
    );

    let rows =
        KafkaSink::json(config.clone(), args.output.clone()).exactly_once(format!("{}-count", args.group));
    let writers = partitions as u32;
    let count_group = tasks(&classes, "count").run(
        move |task| {
            // The repartition topic is keyed by class, the key of the counts.
            task.copartitioned();
            let p = task.pipeline("count").build()?;
            p.source(task.source().from_repartition(writers).start_offset(StartOffset::Earliest))
                .assign_timestamps_punctuated(
                    |r| r.timestamp.unwrap_or(i64::MIN),
                    KafkaRecord::watermark,
                    None,
                )
                .filter(|r| !r.is_heartbeat())
                .try_map(|r| r.parse_json::<Classified>())
                .key_by(|c| c.class.clone())
                .window(TumblingWindows::of(Duration::from_secs(60)))
                .aggregate((Sum::of(|_: &Classified| 1u64), Sum::of(|c: &Classified| c.bytes)))
                .map(|w| Row {
                    class: w.key,
                    window_start: w.window_start,
                    requests: w.value.0,
                    bytes: w.value.1,
                })
                .sink(task.sink(rows.clone()));
            Ok(p)
        },
        shutdown(),
    );
    tokio::try_join!(classify_group, count_group)?;
    Ok(())
}

async fn shutdown() {
    let _ = tokio::signal::ctrl_c().await;
}
