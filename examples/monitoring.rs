//! A monitored job on the embedded log, for the Grafana dashboards: a producer pipeline writes
//! synthetic access events to the topic `access`; an analytics pipeline reads it in a consumer
//! group, parses (malformed lines go to the dead-letter topic), counts requests per status in
//! 10-second event-time windows (late events go to a side output) and writes JSON lines; it also
//! keeps a feature view of each client's last minute (requests, server errors, mean latency,
//! distinct paths), looked up in process every 10 ms and over HTTP (`--features-addr`) every
//! 50 ms. The analytics pipeline checkpoints every second into `<dir>/checkpoints` (and restores
//! the latest checkpoint when started again on the same directory). Both pipelines, the feature
//! view and the log export their metrics to one registry, served at `/metrics`.
//!
//! ```text
//! cargo run --example monitoring -- --metrics-addr 127.0.0.1:9898 --dir weir-data --duration-secs 60
//! curl http://127.0.0.1:9899/features/client_activity/10.0.3.17
//! ```
//!
//! With `--duration-secs 0` (the default) it runs until Ctrl-C.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use weir::connectors::{FileSink, GeneratorSource, LogRecord, LogSink, LogSource};
use weir::features::http::{ServerConfig as FeatureServerConfig, Views};
use weir::features::{Agg, FeatureView, Window};
use weir::log::{Log, LogOptions, TopicConfig};
use weir::metrics::ServerConfig;
use weir::runtime::{Checkpointing, DiscardSink, Metrics, Pipeline, TumblingWindows, Watermarks};

/// Events per second the producer writes.
const RATE: f64 = 5_000.0;
const STATUSES: [u16; 8] = [200, 200, 200, 200, 304, 404, 500, 503];
/// Time between two checkpoints of the analytics pipeline: short, so that the dashboards' test
/// (dashboards/test.sh, one scrape a second) sees several complete within its rate interval.
const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(1);
/// Time between two in-process lookups of the feature view (and, times 5, HTTP lookups).
const LOOKUP_INTERVAL: Duration = Duration::from_millis(10);

#[derive(Debug, clap::Parser)]
#[command(
    about = "A metered producer and analytics pipeline on the embedded log, for the Grafana dashboards"
)]
struct Args {
    /// Where the Prometheus metrics are served.
    #[arg(long, default_value_t = ServerConfig::default().configured_addr())]
    metrics_addr: SocketAddr,
    /// Where the feature view's lookups are served (`GET /features/client_activity/<client>`).
    #[arg(long, default_value_t = FeatureServerConfig::default().configured_addr())]
    features_addr: SocketAddr,
    /// The log directory.
    #[arg(long, default_value = "weir-data")]
    dir: String,
    /// Stop after this many seconds; 0 runs until Ctrl-C.
    #[arg(long = "duration-secs", value_name = "SECS", default_value_t = 0)]
    duration_secs: u64,
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
    format!("{ts},{},/page/{},{status},{}", client(i), i % 13, 5 + (i * 7919) % 300)
}

/// The client of event `i`: one of 7 · 251 addresses.
fn client(i: u64) -> String {
    format!("10.0.{}.{}", i % 7, i % 251)
}

#[derive(Debug, Clone, serde::Serialize)]
struct Access {
    ts: i64,
    client: String,
    path: String,
    status: u16,
    latency_ms: f64,
}

/// The analytics pipeline's feature view: per client, over the last minute, its requests,
/// server errors (5xx), mean latency and distinct paths. Events 30 s old are late for it.
fn client_activity() -> anyhow::Result<FeatureView<String, Access>> {
    let minute = Window::Last(Duration::from_secs(60));
    Ok(FeatureView::builder("client_activity")
        .entity(|a: &Access| a.client.clone())
        .event_time(|a| a.ts)
        .allowed_lateness(Duration::from_secs(5))
        .number("latency_ms", |a| a.latency_ms)
        .number("server_error", |a| f64::from(u8::from(a.status >= 500)))
        .category("path", |a| a.path.clone())
        .feature("requests_1m", Agg::Count, minute)
        .feature("server_errors_1m", Agg::Sum("server_error".into()), minute)
        .feature("latency_avg_1m", Agg::Avg("latency_ms".into()), minute)
        .feature("paths_1m", Agg::Distinct("path".into()), minute)
        .build()?)
}

/// Looks up one client's features over HTTP every `every` until `stop`, as a service would
/// (answers are not checked: the dashboards show their latency).
fn http_lookups(addr: SocketAddr, every: Duration, stop: &AtomicBool) {
    let mut answer = Vec::new();
    for i in (0..).step_by(31) {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        if let Ok(mut s) = std::net::TcpStream::connect(addr) {
            let request = format!(
                "GET /features/client_activity/{} HTTP/1.1\r\nHost: demo\r\nConnection: close\r\n\r\n",
                client(i)
            );
            answer.clear();
            let _ = s.write_all(request.as_bytes()).and_then(|()| s.read_to_end(&mut answer));
        }
        std::thread::sleep(every);
    }
}

fn parse(r: &LogRecord) -> Result<Access, String> {
    // The producer's sink wrote each line as it is (so a dead letter holds the line).
    let line = std::str::from_utf8(&r.value).map_err(|e| format!("not UTF-8: {e}"))?;
    let f: Vec<&str> = line.split(',').collect();
    let [ts, client, path, status, latency] = f[..] else {
        return Err(format!("expected 5 fields, found {}", f.len()));
    };
    Ok(Access {
        ts: ts.parse().map_err(|e| format!("ts: {e}"))?,
        client: client.to_owned(),
        path: path.to_owned(),
        status: status.parse().map_err(|e| format!("status: {e}"))?,
        latency_ms: latency.parse().map_err(|e| format!("latency: {e}"))?,
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = <Args as clap::Parser>::parse();
    weir_examples::init_tracing("info");
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
        LogSink::raw(&log, "access").key_by(|line: &String| line.split(',').nth(1).unwrap_or("").to_owned()),
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
    let (accesses, for_features) = analytics
        .source(LogSource::topic(&log, "access", "access-stats"))
        .try_map(parse)
        .assign_timestamps(|a| a.ts, Watermarks::bounded_out_of_orderness(Duration::from_secs(2)))
        .fork();
    // The pipeline's registry gets the view's metrics.
    let (late, lookup) = client_activity()?.attach(for_features);
    late.sink(DiscardSink);
    let features = weir::features::http::serve(
        Views::new().with(lookup.clone()),
        &FeatureServerConfig::default().addr(args.features_addr),
    )
    .await?;
    println!("feature lookups at http://{}/features/client_activity/{}", features.addr(), client(0));
    accesses
        .key_by(|a| a.status)
        .window(TumblingWindows::of(Duration::from_secs(10)))
        .allowed_lateness(Duration::from_secs(5))
        .late_records(|late| late.sink(DiscardSink))
        .aggregate_with(|a| (a.count(), a.avg(|a| a.latency_ms)))
        .sink(FileSink::json_lines(out.join("per_status")));

    // A service reading the features: in process every LOOKUP_INTERVAL, over HTTP five times
    // less often.
    let stop_lookups = Arc::new(AtomicBool::new(false));
    let in_process = tokio::spawn(async move {
        let mut tick = tokio::time::interval(LOOKUP_INTERVAL);
        for i in 0.. {
            tick.tick().await;
            if let Err(e) = lookup.lookup(&client(i)) {
                eprintln!("lookup: {e}");
            }
        }
    });
    let over_http = {
        let (addr, stop) = (features.addr(), stop_lookups.clone());
        std::thread::spawn(move || http_lookups(addr, LOOKUP_INTERVAL * 5, &stop))
    };

    let stops = [producer.stop_handle(), analytics.stop_handle()];
    if let Some(d) = (args.duration_secs > 0).then(|| Duration::from_secs(args.duration_secs)) {
        tokio::spawn(async move {
            tokio::time::sleep(d).await;
            stops.iter().for_each(|s| s.stop());
        });
    }
    let (produced, analysed) = tokio::join!(producer.run(), analytics.run());
    let (produced, analysed) = (produced?, analysed?);
    in_process.abort();
    stop_lookups.store(true, Ordering::Relaxed);
    let _ = over_http.join();
    features.shutdown().await;
    server.shutdown().await;
    println!(
        "done: {} dead letters, {} late events (produced with {} dead letters)",
        analysed.dead_letters, analysed.late_records, produced.dead_letters
    );
    Ok(())
}
