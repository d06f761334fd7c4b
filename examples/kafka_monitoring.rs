//! A monitored job on Apache Kafka, for the Kafka row of the Grafana dashboards: a producer
//! pipeline writes synthetic lines to a 3-partition input topic (at least once); a
//! [`KafkaTasks`] group runs one task per input partition that upper-cases its lines into an
//! output topic, exactly once (a Kafka transaction per checkpoint, every second). Everything
//! exports its metrics to one registry, served at `/metrics`: the Kafka metrics (lag and
//! committed offsets per partition, owned partitions, rebalances, transaction commits, aborts,
//! fencings) and the task pipelines' runtime metrics.
//!
//! Needs a broker (`tools/kafka-broker/broker.sh start DIR` prints one) and the examples'
//! `kafka` feature (it builds librdkafka):
//!
//! ```text
//! cargo run -p weir-examples --features kafka --example kafka_monitoring -- \
//!     --bootstrap 127.0.0.1:9092 --metrics-addr 127.0.0.1:9899 --dir weir-kafka-data --duration-secs 60
//! ```
//!
//! The topics (`<prefix>-in`, `<prefix>-out`) are created if missing. With `--duration-secs 0`
//! (the default) it runs until Ctrl-C.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use weir::connectors::GeneratorSource;
use weir::metrics::ServerConfig;
use weir::runtime::{Metrics, Pipeline};
use weir_examples::NewTopic;
use weir_kafka::{KafkaConfig, KafkaRecord, KafkaSink, KafkaTasks, StartOffset};

/// Lines per second the producer writes.
const RATE: f64 = 2_000.0;
const PARTITIONS: i32 = 3;

#[derive(Debug, clap::Parser)]
#[command(about = "A metered Kafka producer and exactly-once task group, for the Grafana dashboards")]
struct Args {
    /// The Kafka bootstrap servers.
    #[arg(long)]
    bootstrap: String,
    /// Where the Prometheus metrics are served.
    #[arg(long, default_value = "127.0.0.1:9899")]
    metrics_addr: SocketAddr,
    /// Where the tasks checkpoint.
    #[arg(long, default_value = "weir-kafka-data")]
    dir: PathBuf,
    /// The topics' prefix (`<prefix>-in`, `<prefix>-out`) and the consumer group's name.
    #[arg(long, default_value = "weir-demo")]
    prefix: String,
    /// Stop after this many seconds; 0 runs until Ctrl-C.
    #[arg(long = "duration-secs", value_name = "SECS", default_value_t = 0)]
    duration_secs: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = <Args as clap::Parser>::parse();
    weir_examples::init_tracing("info");
    let (input, output) = (format!("{}-in", args.prefix), format!("{}-out", args.prefix));
    weir_examples::create_topics(
        &args.bootstrap,
        &[
            NewTopic { name: &input, partitions: PARTITIONS, keep: false },
            NewTopic { name: &output, partitions: 1, keep: false },
        ],
    )
    .await
    .with_context(|| format!("creating the topics on {}", args.bootstrap))?;
    let metrics = Metrics::new();
    let server =
        weir::metrics::serve(metrics.clone(), &ServerConfig::default().addr(args.metrics_addr)).await?;
    println!("metrics at http://{}/metrics", server.addr());
    let config = KafkaConfig::new(&args.bootstrap);

    let producer = Pipeline::builder("kafka-producer")
        .parallelism(1)
        .handle_signals(true)
        .metrics(metrics.clone())
        .build()?;
    producer
        .source(GeneratorSource::new(u64::MAX, |i| format!("line {i} from client {}", i % 17)).rate(RATE))
        .sink(
            KafkaSink::bytes(config.clone(), input.clone())
                .key_by(|line: &String| line.rsplit(' ').next().unwrap_or("").to_owned()),
        );
    let stop_producer = producer.stop_handle();

    let upper = KafkaSink::bytes(config.clone(), output).exactly_once(format!("{}-upper", args.prefix));
    let tasks = KafkaTasks::new(config, input, format!("{}-upper", args.prefix))
        .checkpoint_dir(args.dir.join("checkpoints"))
        .checkpoint_interval(Duration::from_secs(1))
        .session_timeout(Duration::from_secs(6))
        .metrics(&metrics);
    let duration = Duration::from_secs(args.duration_secs);
    let shutdown = async move {
        if duration.is_zero() {
            let _ = tokio::signal::ctrl_c().await;
        } else {
            tokio::select! {
                () = tokio::time::sleep(duration) => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        stop_producer.stop();
    };
    let group = tasks.run(
        move |task| {
            let p = task.pipeline("kafka-upper").build()?;
            p.source(task.source().start_offset(StartOffset::Earliest))
                .map(|r: KafkaRecord| r.value.to_ascii_uppercase())
                .sink(task.sink(upper.clone()));
            Ok(p)
        },
        shutdown,
    );
    let (produced, grouped) = tokio::join!(producer.run(), group);
    produced?;
    grouped?;
    server.shutdown().await;
    println!("done");
    Ok(())
}
