//! A monitored job on the embedded log, for the Grafana dashboards: a producer pipeline writes
//! synthetic access events to the topic `access`; an analytics pipeline reads it in a consumer
//! group, parses (malformed lines go to the dead-letter topic), counts requests per status in
//! 10-second event-time windows (late events go to a side output) and writes JSON lines. The
//! analytics pipeline checkpoints every second into `<dir>/checkpoints` (and restores the latest
//! checkpoint when started again on the same directory). Both pipelines and the log export their
//! metrics to one registry, served at `/metrics`.
//!
//! ```text
//! cargo run --example monitoring -- --metrics-addr 127.0.0.1:9898 --dir weir-data --duration-secs 60
//! ```
//!
//! With `--duration-secs 0` (the default) it runs until Ctrl-C.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use weir::connectors::{FileSink, GeneratorSource, LogRecord, LogSink, LogSource};
use weir::log::{Log, LogOptions, TopicConfig};
use weir::metrics::ServerConfig;
use weir::runtime::{Avg, Checkpointing, Count, DiscardSink, Metrics, Pipeline, TumblingWindows, Watermarks};

/// Events per second the producer writes.
const RATE: f64 = 5_000.0;
const STATUSES: [u16; 8] = [200, 200, 200, 200, 304, 404, 500, 503];
/// Time between two checkpoints of the analytics pipeline: short, so that the dashboards' test
/// (dashboards/test.sh, one scrape a second) sees several complete within its rate interval.
const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(1);

struct Args {
    metrics_addr: SocketAddr,
    dir: String,
    duration: Option<Duration>,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Args {
        metrics_addr: ServerConfig::default().configured_addr(),
        dir: "weir-data".into(),
        duration: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| anyhow::anyhow!("{flag} needs a value"));
        match flag.as_str() {
            "--metrics-addr" => args.metrics_addr = value()?.parse()?,
            "--dir" => args.dir = value()?,
            "--duration-secs" => {
                let secs: u64 = value()?.parse()?;
                args.duration = (secs > 0).then(|| Duration::from_secs(secs));
            }
            other => anyhow::bail!(
                "unknown argument {other}\nusage: monitoring [--metrics-addr ADDR] [--dir DIR] [--duration-secs N]"
            ),
        }
    }
    Ok(args)
}

/// Event `i`: `ts_ms,client,path,status,latency_ms`; every 200th line is malformed and every
/// 500th is 30 s old (late for its window).
fn event(i: u64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    if i % 200 == 7 {
        return format!("malformed line {i}");
    }
    let ts = if i % 500 == 3 { now - 30_000 } else { now - (i % 1_000) as i64 };
    let status = STATUSES[(i % STATUSES.len() as u64) as usize];
    format!("{ts},10.0.{}.{},/page/{},{status},{}", i % 7, i % 251, i % 13, 5 + (i * 7919) % 300)
}

#[derive(Debug, Clone, serde::Serialize)]
struct Access {
    ts: i64,
    status: u16,
    latency_ms: f64,
}

fn parse(r: &LogRecord) -> Result<Access, String> {
    // The producer's sink wrote each line as a JSON string.
    let line: String = r.parse_json().map_err(|e| e.to_string())?;
    let f: Vec<&str> = line.split(',').collect();
    let [ts, _client, _path, status, latency] = f[..] else {
        return Err(format!("expected 5 fields, found {}", f.len()));
    };
    Ok(Access {
        ts: ts.parse().map_err(|e| format!("ts: {e}"))?,
        status: status.parse().map_err(|e| format!("status: {e}"))?,
        latency_ms: latency.parse().map_err(|e| format!("latency: {e}"))?,
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber_init();
    let args = parse_args()?;
    let metrics = Metrics::new();
    let log = Log::open(&args.dir, LogOptions::default())?;
    log.topic_or_create("access", TopicConfig::with_partitions(3))?;
    log.register_metrics(&metrics);
    let server =
        weir::metrics::serve(metrics.clone(), &ServerConfig::default().addr(args.metrics_addr)).await?;
    println!("metrics at http://{}/metrics", server.addr());

    let producer = Pipeline::builder("access-producer")
        .parallelism(1)
        .handle_signals(true)
        .metrics(metrics.clone())
        .build()?;
    producer.source(GeneratorSource::new(u64::MAX, event).rate(RATE).batch_size(256)).sink(
        LogSink::topic(&log, "access")
            .key_by(|line: &String| line.split(',').nth(1).unwrap_or("").to_owned()),
    );

    let dir = Path::new(&args.dir);
    let analytics = Pipeline::builder("access-stats")
        .parallelism(2)
        .handle_signals(true)
        .metrics(metrics.clone())
        .checkpointing(Checkpointing::to_dir(dir.join("checkpoints")).interval(CHECKPOINT_INTERVAL))
        .build()?;
    analytics.dead_letters(LogSink::dead_letters(&log, "access-stats"));
    let out = dir.join("out");
    std::fs::create_dir_all(&out)?;
    let mut windows = analytics
        .source(LogSource::topic(&log, "access", "access-stats"))
        .try_map(parse)
        .assign_timestamps(|a| a.ts, Watermarks::bounded_out_of_orderness(Duration::from_secs(2)))
        .key_by(|a| a.status)
        .window(TumblingWindows::of(Duration::from_secs(10)))
        .allowed_lateness(Duration::from_secs(5));
    windows.late_records().sink(DiscardSink);
    windows
        .aggregate((Count, Avg::of(|a: &Access| a.latency_ms)))
        .sink(FileSink::json_lines(out.join("per_status")));

    let stops = [producer.stop_handle(), analytics.stop_handle()];
    if let Some(d) = args.duration {
        tokio::spawn(async move {
            tokio::time::sleep(d).await;
            stops.iter().for_each(|s| s.stop());
        });
    }
    let (produced, analysed) = tokio::join!(producer.run(), analytics.run());
    let (produced, analysed) = (produced?, analysed?);
    server.shutdown().await;
    println!(
        "done: {} dead letters, {} late events (produced with {} dead letters)",
        analysed.dead_letters, analysed.late_records, produced.dead_letters
    );
    Ok(())
}

/// Log messages to stderr, filtered by `RUST_LOG` (default `info`).
fn tracing_subscriber_init() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
}
