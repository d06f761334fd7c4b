//! The views' metrics as Prometheus scrapes them: a metered pipeline feeds a view, lookups go
//! in process and over HTTP, and `GET /metrics` on the registry's real endpoint shows the
//! lookups by path, the freshness of every applied batch, the entities and state bytes per
//! subtask (as the lookups count them), and the late events.

#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use weir_connectors::{LogRecord, LogSource};
use weir_features::http::{ServerConfig as FeatureServerConfig, Views, serve as serve_features};
use weir_features::{Agg, FeatureLookup, FeatureView, Window};
use weir_log::{Durability, Log, LogOptions, Record, TimestampType, TopicConfig};
use weir_metrics::catalog::{
    FEATURE_ENTITIES, FEATURE_FRESHNESS, FEATURE_LATE_EVENTS, FEATURE_LOOKUP_DURATION, FEATURE_STATE_BYTES,
};
use weir_metrics::{Metrics, MetricsServer, ServerConfig};
use weir_runtime::{
    Checkpointing, DiscardSink, JobReport, KeyedProcess, MemorySource, Pipeline, ProcessContext, Watermarks,
};
use weir_testkit::prometheus::Scrape;

/// (user, event time ms, amount)
type Txn = (u32, i64, f64);

fn view() -> FeatureView<u32, Txn> {
    FeatureView::builder("user_txn")
        .entity(|t: &Txn| t.0)
        .event_time(|t| t.1)
        .allowed_lateness(Duration::from_secs(1))
        .number("amount", |t| t.2)
        .feature("count_1m", Agg::Count, Window::Last(Duration::from_secs(60)))
        .feature("sum_1m", Agg::Sum("amount".into()), Window::Last(Duration::from_secs(60)))
        .build()
        .unwrap()
}

/// One request on a fresh connection: the whole response.
async fn get(addr: SocketAddr, target: &str) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {target} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut out = String::new();
    stream.read_to_string(&mut out).await.unwrap();
    out
}

/// One scrape of `GET /metrics` from `server`.
async fn scrape_of(server: &MetricsServer) -> Scrape {
    let response = get(server.addr(), "/metrics").await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    Scrape::parse(response.split_once("\r\n\r\n").unwrap().1)
}

async fn metrics_server(metrics: &Metrics) -> MetricsServer {
    weir_metrics::serve(metrics.clone(), &ServerConfig::default().addr("127.0.0.1:0".parse().unwrap()))
        .await
        .unwrap()
}

/// Runs a pipeline named `name` over `events` with `parallelism`, metered into `metrics`
/// (checkpointing into `dir` if given, so that its end takes a checkpoint); returns the
/// lookups and the report.
async fn run(
    name: &str,
    events: Vec<Txn>,
    parallelism: usize,
    metrics: &Metrics,
    dir: Option<&std::path::Path>,
) -> (FeatureLookup<u32, Txn>, JobReport) {
    let mut p =
        Pipeline::builder(name).parallelism(parallelism).handle_signals(false).metrics(metrics.clone());
    if let Some(dir) = dir {
        p = p.checkpointing(Checkpointing::to_dir(dir).interval(Duration::from_secs(3600)));
    }
    let p = p.build().unwrap();
    let stream = p
        .source(MemorySource::new(events).batch_size(100))
        .assign_timestamps(|t| t.1, Watermarks::monotonic());
    let (late, lookup) = view().attach(stream);
    late.sink(DiscardSink);
    let report = p.run().await.unwrap();
    (lookup, report)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scrape_shows_lookups_by_path_freshness_entities_and_state_bytes() {
    // 2 000 events of 50 users over 20 s, in time order: nothing is late or evicted.
    let events: Vec<Txn> = (0..2_000i64).map(|i| ((i % 50) as u32, i * 10, (i % 7) as f64)).collect();
    let metrics = Metrics::new();
    let endpoint = metrics_server(&metrics).await;
    let dir = tempfile::tempdir().unwrap();
    let (lookup, report) = run("feats", events, 2, &metrics, Some(dir.path())).await;
    assert_eq!(report.late_records, 0);

    // Before any lookup: the two paths' series exist, at 0.
    let scrape = scrape_of(&endpoint).await;
    let lookups = |s: &Scrape, path| {
        s.value(
            &format!("{}_count", FEATURE_LOOKUP_DURATION.info.name),
            &[("pipeline", "feats"), ("view", "user_txn"), ("path", path)],
        )
    };
    assert_eq!((lookups(&scrape, "inprocess"), lookups(&scrape, "http")), (0.0, 0.0));

    // 10 lookups and 1 lookup_many in process; 3 requests for the view over HTTP (200, 422
    // before the horizon, 400 for a key that is not one) and 1 for an unknown view.
    for user in 0..10 {
        assert_eq!(lookup.lookup_at(&user, 20_000).unwrap().values.len(), 2);
    }
    assert_eq!(lookup.lookup_many(&[1, 2, 3], 20_000).unwrap().len(), 3);
    let config = FeatureServerConfig::default().addr("127.0.0.1:0".parse().unwrap());
    let features = serve_features(Views::new().with(lookup.clone()), &config).await.unwrap();
    for (target, status) in [
        ("/features/user_txn/7?at=20000", "200"),
        ("/features/user_txn/7?at=0", "422"),
        ("/features/user_txn/x?at=20000", "400"),
        ("/features/other/7", "404"),
    ] {
        let r = get(features.addr(), target).await;
        assert!(r.starts_with(&format!("HTTP/1.1 {status}")), "{target}: {r}");
    }

    let scrape = scrape_of(&endpoint).await;
    assert_eq!(lookups(&scrape, "inprocess"), 11.0, "one per lookup_at and lookup_many call");
    assert_eq!(lookups(&scrape, "http"), 3.0, "every request naming the view, not the unknown one");
    let buckets = format!("{}_bucket", FEATURE_LOOKUP_DURATION.info.name);
    let within_1s = scrape
        .value(&buckets, &[("pipeline", "feats"), ("view", "user_txn"), ("path", "inprocess"), ("le", "1")]);
    assert_eq!(within_1s, 11.0, "in-process lookups take microseconds");

    // Freshness: one observation per batch the operator's subtasks applied. 20 source batches
    // of 100, each split by the exchange between the 2 subtasks.
    let view = [("pipeline", "feats"), ("view", "user_txn")];
    let fresh = scrape.value(&format!("{}_count", FEATURE_FRESHNESS.info.name), &view);
    assert!((20.0..=40.0).contains(&fresh), "{fresh} batches applied\n{}", scrape.text);
    let fresh_within_60s =
        scrape.value(&format!("{}_bucket", FEATURE_FRESHNESS.info.name), &[view[0], view[1], ("le", "60")]);
    assert_eq!(fresh_within_60s, fresh, "a batch is servable within a minute of being read");
    assert!(scrape.value(&format!("{}_sum", FEATURE_FRESHNESS.info.name), &view) > 0.0);

    // Entities and state bytes, per subtask: the checkpoint at the end sampled the final state.
    for (def, total) in [
        (FEATURE_ENTITIES.info.name, lookup.entities() as f64),
        (FEATURE_STATE_BYTES.info.name, lookup.state_bytes() as f64),
    ] {
        let per_subtask = scrape.series(def, &view);
        let subtasks: Vec<&str> = per_subtask.iter().map(|(l, _)| l["subtask"].as_str()).collect();
        assert_eq!(subtasks, ["0", "1"], "{def}");
        assert!(per_subtask.iter().all(|(_, v)| *v > 0.0), "{def}: both subtasks hold users");
        assert_eq!(per_subtask.iter().map(|(_, v)| v).sum::<f64>(), total, "{def}");
    }
    assert_eq!(lookup.entities(), 50);
    // The runtime's keyed state gauge of the operator shows the same sample.
    let keyed: f64 = scrape
        .series("weir_keyed_state_bytes", &[("pipeline", "feats"), ("operator", "features")])
        .iter()
        .map(|(_, v)| v)
        .sum();
    assert_eq!(keyed, lookup.state_bytes() as f64);
    assert_eq!(scrape.value(FEATURE_LATE_EVENTS.info.name, &view), 0.0, "a series at 0 from the start");
    features.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_events_are_counted_per_view() {
    // One subtask, in batches of 100: 1 000 events over 10 s, then 20 at 0 ms, behind the
    // watermark (9 989 ms) minus the allowed lateness (1 s).
    let mut events: Vec<Txn> = (0..1_000i64).map(|i| ((i % 10) as u32, i * 10, 1.0)).collect();
    events.extend((0..20).map(|i| (i, 0, 1.0)));
    let metrics = Metrics::new();
    let endpoint = metrics_server(&metrics).await;
    let (lookup, report) = run("late", events, 1, &metrics, None).await;
    assert_eq!((report.late_records, lookup.late_events()), (20, 20));

    let scrape = scrape_of(&endpoint).await;
    let view = [("pipeline", "late"), ("view", "user_txn")];
    assert_eq!(scrape.value(FEATURE_LATE_EVENTS.info.name, &view), 20.0, "{}", scrape.text);
    // Without checkpoints, the first batch sampled the state's bytes; the entities follow
    // every batch.
    assert_eq!(scrape.value(FEATURE_ENTITIES.info.name, &[view[0], view[1], ("subtask", "0")]), 10.0);
    let bytes = scrape.value(FEATURE_STATE_BYTES.info.name, &[view[0], view[1], ("subtask", "0")]);
    assert!(bytes > 0.0 && bytes < lookup.state_bytes() as f64, "{bytes} of {}", lookup.state_bytes());
    // The batch of only late events made nothing servable: 10 batches observed, not 11.
    assert_eq!(scrape.value(&format!("{}_count", FEATURE_FRESHNESS.info.name), &view), 10.0);
}

#[tokio::test]
async fn a_pipeline_without_metrics_exports_nothing_and_registers_later() {
    let metrics = Metrics::new();
    let p = Pipeline::builder("quiet").parallelism(1).handle_signals(false).build().unwrap();
    let stream = p
        .source(MemorySource::new(vec![(1, 1_000, 2.0)]))
        .assign_timestamps(|t| t.1, Watermarks::monotonic());
    assert!(stream.metrics().is_none());
    let (late, lookup) = view().attach(stream);
    late.sink(DiscardSink);
    p.run().await.unwrap();
    lookup.lookup_at(&1, 2_000).unwrap();
    assert!(!metrics.encode().contains("weir_feature"), "nothing registered yet");

    // Registered by hand: lookups from then on are counted, under the given pipeline name.
    lookup.register_metrics(&metrics, "by-hand");
    lookup.register_metrics(&Metrics::new(), "ignored");
    lookup.lookup_at(&1, 2_000).unwrap();
    let text = metrics.encode();
    assert!(
        text.contains(
            r#"weir_feature_lookup_duration_seconds_count{path="inprocess",pipeline="by-hand",view="user_txn"} 1"#
        ),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn freshness_counts_from_the_log_append_on_a_topic_that_keeps_append_times() {
    // The same 1 000 events in two topics, one of them keeping append times; both are read
    // 600 ms after their append. Freshness counts that wait on that one only: from the append,
    // not from the read.
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), LogOptions::default().durability(Durability::None)).unwrap();
    let records: Vec<Record> = (0..1_000i64)
        .map(|i| Record::new(serde_json::to_vec(&((i % 50) as u32, i * 10, 1.0)).unwrap()))
        .collect();
    for (topic, timestamp_type) in
        [("appended", TimestampType::LogAppendTime), ("created", TimestampType::CreateTime)]
    {
        let config = TopicConfig { timestamp_type, ..TopicConfig::default() };
        log.create_topic(topic, config).unwrap().append(0, &records).unwrap();
    }
    tokio::time::sleep(Duration::from_millis(600)).await;

    let metrics = Metrics::new();
    let endpoint = metrics_server(&metrics).await;
    // `processed` reads the first topic through a keyed process, whose output batches are
    // built anew: they take the append time of the input they came from.
    for (pipeline, topic) in [("appended", "appended"), ("created", "created"), ("processed", "appended")] {
        let p = Pipeline::builder(pipeline)
            .parallelism(1)
            .handle_signals(false)
            .metrics(metrics.clone())
            .build()
            .unwrap();
        let mut stream = p
            .source(LogSource::topic(&log, topic, pipeline).bounded().batch_size(100))
            .try_map(LogRecord::parse_json::<Txn>)
            .assign_timestamps(|t| t.1, Watermarks::monotonic());
        if pipeline == "processed" {
            stream = stream.key_by(|t| t.0).process(Forward);
        }
        let (late, lookup) = view().attach(stream);
        late.sink(DiscardSink);
        p.run().await.unwrap();
        assert_eq!(lookup.entities(), 50);
    }

    let scrape = scrape_of(&endpoint).await;
    let freshness = |pipeline: &str, le: &str| {
        let labels = [("pipeline", pipeline), ("view", "user_txn"), ("le", le)];
        scrape.value(&format!("{}_bucket", FEATURE_FRESHNESS.info.name), &labels)
    };
    assert_eq!(freshness("appended", "+Inf"), 10.0, "one observation per batch");
    assert_eq!(freshness("appended", "0.5"), 0.0, "every batch was appended 600 ms before it was applied");
    assert_eq!(freshness("created", "+Inf"), 10.0);
    assert!(freshness("created", "0.5") > 0.0, "without append times, freshness counts from the read");
    assert!(freshness("processed", "+Inf") > 0.0);
    assert_eq!(freshness("processed", "0.5"), 0.0, "the process output kept its input's append time");
}

/// A keyed process that emits each record as it came.
#[derive(Clone)]
struct Forward;

impl KeyedProcess<u32, Txn> for Forward {
    type Out = Txn;

    fn process(&mut self, _key: &u32, record: Txn, ctx: &mut ProcessContext<'_, u32, Txn>) {
        ctx.emit(record);
    }
}
