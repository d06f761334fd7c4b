//! The Kafka metrics against a real broker: the lag a source exports is the partition's last
//! stable offset minus the offset the pipeline committed (both as the broker reports them),
//! also while a transaction is open and while the pipeline is stuck, and it reaches 0 when the
//! input stops; a task group counts its rebalances and the partitions it owns when a second
//! process joins and leaves, and its tasks' lag reaches 0 too.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::*;
use rdkafka::ClientConfig;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use weir_kafka::{KafkaRecord, KafkaSink, KafkaSource, KafkaTasks, StartOffset};
use weir_runtime::{Checkpointing, DiscardSink, Metrics, Pipeline};
use weir_testkit::prometheus::Scrape;

const WAIT: Duration = Duration::from_secs(60);
/// How long the lag must match: two polls of the last stable offsets (one a second), so that a
/// value polled before the input changed cannot pass for one polled after.
const STEADY: Duration = Duration::from_millis(2_500);

/// The value of the series of `name` whose labels include `labels`, in the registry's text.
fn sample(m: &Metrics, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    Scrape::parse(m.encode()).series(name, labels).first().map(|(_, v)| *v)
}

/// The sum of every series of `name`.
fn total(m: &Metrics, name: &str) -> f64 {
    Scrape::parse(m.encode()).sum(name, &[]).unwrap_or(0.0)
}

fn producer(bootstrap: &str, transactional_id: Option<&str>) -> ThreadedProducer<DefaultProducerContext> {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap);
    if let Some(id) = transactional_id {
        // Open until the test commits it, not aborted by the broker meanwhile.
        c.set("transactional.id", id).set("transaction.timeout.ms", "600000");
    }
    c.create().unwrap()
}

/// Sends `n[p]` records to each partition `p` of `topic`, and waits for their acks.
fn send(producer: &ThreadedProducer<DefaultProducerContext>, topic: &str, n: &[usize]) {
    for (p, &n) in n.iter().enumerate() {
        for i in 0..n {
            let value = format!("{p}-{i}");
            producer.send(BaseRecord::<(), _>::to(topic).partition(p as i32).payload(&value)).unwrap();
        }
    }
    producer.flush(Duration::from_secs(30)).unwrap();
}

/// Per partition: the broker's LSO and high watermark, the group's committed offset, and the
/// source's exported lag and committed offset.
#[derive(Debug, PartialEq)]
struct Offsets {
    lso: i64,
    high: i64,
    committed: Option<i64>,
    lag: Option<f64>,
    exported_committed: Option<f64>,
}

fn offsets(
    b: &str,
    m: &Metrics,
    pipeline: &str,
    group: &str,
    topic: &str,
    partitions: i32,
) -> BTreeMap<i32, Offsets> {
    let committed = committed(b, group, topic, partitions);
    (0..partitions)
        .map(|p| {
            let (lso, high) = lso_and_high(b, topic, p);
            let labels = [("pipeline", pipeline), ("topic", topic), ("partition", &p.to_string())];
            let o = Offsets {
                lso,
                high,
                committed: committed.get(&p).map(|(o, _)| *o),
                lag: sample(m, "weir_kafka_consumer_lag", &labels),
                exported_committed: sample(m, "weir_kafka_committed_offset", &labels),
            };
            (p, o)
        })
        .collect()
}

/// Waits until every partition's exported lag is the broker's LSO minus the group's committed
/// offset, and the exported committed offset the group's, and `expect` holds for the lag, and
/// all this for [`STEADY`]; returns the offsets.
fn wait_for_lag(
    b: &str,
    m: &Metrics,
    group: &str,
    topic: &str,
    what: &str,
    expect: impl Fn(i32, &Offsets) -> bool,
) -> BTreeMap<i32, Offsets> {
    let mut last = BTreeMap::new();
    let mut matches = || {
        last = offsets(b, m, "lag", group, topic, 3);
        last.iter().all(|(p, o)| {
            let Some(committed) = o.committed else { return false };
            o.lag == Some((o.lso - committed) as f64)
                && o.exported_committed == Some(committed as f64)
                && expect(*p, o)
        })
    };
    let deadline = std::time::Instant::now() + WAIT;
    let mut since = None;
    loop {
        if !matches() {
            since = None;
        } else if since.get_or_insert_with(std::time::Instant::now).elapsed() >= STEADY {
            return last;
        }
        assert!(std::time::Instant::now() < deadline, "{what}: lag never matched the broker: {last:#?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Lets a stuck pipeline go when the test ends, also by a failed assertion (the runtime could
/// not shut down while a worker waits on the gate).
struct Unstick(Arc<AtomicBool>);

impl Drop for Unstick {
    fn drop(&mut self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lag_metric_equals_lso_minus_committed_offset_and_reaches_zero() {
    let Some(b) = bootstrap() else { return };
    let topic = unique("lag");
    let group = unique("lag-group");
    create_topic(&b, &topic, 3);
    let plain = producer(&b, None);
    send(&plain, &topic, &[20, 30, 40]);

    let metrics = Metrics::new();
    let dir = tempfile::tempdir().unwrap();
    let p = Pipeline::builder("lag")
        .parallelism(1)
        .handle_signals(false)
        .metrics(metrics.clone())
        .checkpointing(Checkpointing::to_dir(dir.path()).interval(Duration::from_millis(100)))
        .build()
        .unwrap();
    // While `stuck`, the pipeline cannot take a record (nor complete a checkpoint).
    let stuck = Arc::new(AtomicBool::new(false));
    let gate = stuck.clone();
    let _unstick = Unstick(stuck.clone());
    p.source(
        KafkaSource::new(config(&b), [topic.clone()], group.clone())
            .start_offset(StartOffset::Earliest)
            .metrics(&metrics, "lag"),
    )
    .map(move |r: KafkaRecord| {
        while gate.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(5));
        }
        r.offset
    })
    .sink(DiscardSink);
    let stop = p.stop_handle();
    let run = tokio::spawn(p.run());

    // Caught up: the lag is 0.
    wait_for_lag(&b, &metrics, &group, &topic, "caught up", |_, o| o.lag == Some(0.0) && o.lso == o.high);

    // Stuck, with 5/6/7 new records per partition and an open transaction after them: the lag
    // counts the new records, not those of the open transaction.
    stuck.store(true, Ordering::SeqCst);
    send(&plain, &topic, &[5, 6, 7]);
    let txn = producer(&b, Some(&unique("open-txn")));
    txn.init_transactions(Duration::from_secs(30)).unwrap();
    txn.begin_transaction().unwrap();
    send(&txn, &topic, &[3, 3, 3]);
    let at = wait_for_lag(&b, &metrics, &group, &topic, "stuck", |p, o| {
        o.lag == Some([5.0, 6.0, 7.0][p as usize]) && o.high > o.lso
    });
    assert!(at.values().all(|o| o.lag.unwrap() < (o.high - o.committed.unwrap()) as f64), "{at:#?}");

    // Unstuck: the pipeline reads up to the open transaction; the lag is 0.
    stuck.store(false, Ordering::SeqCst);
    wait_for_lag(&b, &metrics, &group, &topic, "up to the open transaction", |_, o| {
        o.lag == Some(0.0) && o.high > o.lso
    });

    // The transaction commits and the input stops: the lag reaches 0 at the end of the topic.
    txn.commit_transaction(Duration::from_secs(30)).unwrap();
    wait_for_lag(&b, &metrics, &group, &topic, "input stopped", |_, o| o.lag == Some(0.0) && o.lso == o.high);

    stop.stop();
    run.await.unwrap().unwrap();
}

/// The value of `weir_kafka_owned_partitions` (0 if not exported yet).
fn owned(m: &Metrics, group: &str) -> f64 {
    sample(m, "weir_kafka_owned_partitions", &[("group", group)]).unwrap_or(0.0)
}

fn rebalances(m: &Metrics, group: &str, kind: &str) -> f64 {
    sample(m, "weir_kafka_rebalances_total", &[("group", group), ("kind", kind)]).unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebalances_and_owned_partitions_are_counted_when_a_second_process_joins_and_leaves() {
    let Some(b) = bootstrap() else { return };
    let (input, output) = (unique("tasks-in"), unique("tasks-out"));
    let group = unique("tasks-group");
    create_topic(&b, &input, 4);
    create_topic(&b, &output, 1);
    let plain = producer(&b, None);
    send(&plain, &input, &[10, 10, 10, 10]);
    let dir = tempfile::tempdir().unwrap();
    let sink = KafkaSink::bytes(config(&b), output.clone()).exactly_once(unique("copy"));

    // A "process": a task group with its own registry, stopped by its sender.
    let start = |metrics: &Metrics| {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let sink = sink.clone();
        let tasks = KafkaTasks::new(config(&b), input.clone(), group.clone())
            .checkpoint_dir(dir.path())
            .checkpoint_interval(Duration::from_millis(200))
            .session_timeout(Duration::from_secs(6))
            .metrics(metrics);
        let run = tokio::spawn(tasks.run(
            move |task| {
                let p = task.pipeline("copy").build()?;
                p.source(task.source().start_offset(StartOffset::Earliest))
                    .map(|r: KafkaRecord| r.value)
                    .sink(task.sink(sink.clone()));
                Ok(p)
            },
            async move {
                let _ = stopped.await;
            },
        ));
        (stop, run)
    };
    let (a, b_metrics) = (Metrics::new(), Metrics::new());
    let (stop_a, run_a) = start(&a);
    wait_until(WAIT, "the first process owns every partition", || owned(&a, &group) == 4.0);
    assert_eq!(rebalances(&a, &group, "assign"), 1.0);
    assert_eq!(rebalances(&a, &group, "revoke"), 0.0);

    let (stop_b, run_b) = start(&b_metrics);
    wait_until(WAIT, "the partitions split between the two processes", || {
        let (na, nb) = (owned(&a, &group), owned(&b_metrics, &group));
        na + nb == 4.0 && na > 0.0 && nb > 0.0
    });
    assert!(rebalances(&a, &group, "revoke") >= 1.0, "{}", a.encode());
    assert!(rebalances(&b_metrics, &group, "assign") >= 1.0, "{}", b_metrics.encode());
    assert_eq!(rebalances(&a, &group, "lost") + rebalances(&b_metrics, &group, "lost"), 0.0);

    // More input; every task catches up: its lag, in the registry of the process that owns
    // its partition, reaches 0 at the committed offset the broker reports.
    send(&plain, &input, &[5, 5, 5, 5]);
    let caught_up = |p: i32, committed: &BTreeMap<i32, (i64, String)>| {
        let (lso, _) = lso_and_high(&b, &input, p);
        let (pipeline, partition) = (format!("copy-{p}"), p.to_string());
        let labels = [("pipeline", pipeline.as_str()), ("topic", input.as_str()), ("partition", &partition)];
        committed.get(&p).is_some_and(|(c, _)| *c == lso)
            && [&a, &b_metrics].iter().any(|m| {
                sample(m, "weir_kafka_consumer_lag", &labels) == Some(0.0)
                    && sample(m, "weir_kafka_committed_offset", &labels) == Some(lso as f64)
            })
    };
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let committed = committed(&b, &group, &input, 4);
        if (0..4).all(|p| caught_up(p, &committed)) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "every task's lag at 0: committed {committed:?}\n{}\n{}",
            a.encode(),
            b_metrics.encode()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    for m in [&a, &b_metrics] {
        assert!(total(m, "weir_kafka_txn_commit_seconds_count") >= 1.0, "{}", m.encode());
    }

    // The second process leaves: the first owns everything again.
    stop_b.send(()).unwrap();
    run_b.await.unwrap().unwrap();
    assert_eq!(owned(&b_metrics, &group), 0.0);
    wait_until(WAIT, "the first process owns every partition again", || owned(&a, &group) == 4.0);
    assert!(rebalances(&a, &group, "assign") >= 2.0, "{}", a.encode());

    stop_a.send(()).unwrap();
    run_a.await.unwrap().unwrap();
}
