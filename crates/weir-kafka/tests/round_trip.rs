//! Kafka source and sink against a real broker: every record read once, offsets committed to
//! the group when checkpoints complete, keys and timestamps kept; batches of a LogAppendTime
//! topic carry the broker's append time.

#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use weir_kafka::{KafkaRecord, KafkaSink, KafkaSource, StartOffset};
use weir_runtime::{
    Batch, Checkpointing, CollectSink, Collector, DiscardSink, Error, MemorySource, Operator, Pipeline,
    Watermarks,
};

fn input(n: usize) -> Vec<(String, String)> {
    (0..n).map(|i| (format!("k{}", i % 37), format!("{i}"))).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bounded_source_reads_every_partition_once_and_commits_its_offsets_to_the_group() {
    let Some(b) = bootstrap() else { return };
    let topic = unique("in");
    create_topic(&b, &topic, 3);
    produce(&b, &topic, &input(3_000));
    let dir = tempfile::tempdir().unwrap();
    let group = unique("group");
    for parallelism in [1, 2] {
        let p = Pipeline::builder("read")
            .parallelism(parallelism)
            .handle_signals(false)
            .checkpointing(
                Checkpointing::to_dir(dir.path().join(parallelism.to_string()))
                    .interval(Duration::from_millis(50)),
            )
            .build()
            .unwrap();
        let out = CollectSink::new();
        let source = KafkaSource::new(config(&b), [topic.clone()], format!("{group}-{parallelism}"))
            .start_offset(StartOffset::Earliest)
            .batch_size(100)
            .bounded();
        p.source(source)
            .map(|r: KafkaRecord| r.value_str().unwrap().parse::<u64>().unwrap())
            .sink(out.clone());
        p.run().await.unwrap();
        let mut got = out.take();
        got.sort_unstable();
        assert_eq!(got, (0..3_000).collect::<Vec<u64>>(), "parallelism {parallelism}");
        let offsets = committed(&b, &format!("{group}-{parallelism}"), &topic, 3);
        let ends: Vec<i64> = (0..3).map(|p| lso_and_high(&b, &topic, p).1).collect();
        assert_eq!(offsets.values().map(|(o, _)| *o).collect::<Vec<_>>(), ends, "lag is 0 at the end");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_source_resumes_at_its_committed_offsets_without_rereading() {
    let Some(b) = bootstrap() else { return };
    let topic = unique("in");
    create_topic(&b, &topic, 2);
    let group = unique("group");
    let dir = tempfile::tempdir().unwrap();
    let mut seen = Vec::new();
    for round in 0..2u64 {
        produce(
            &b,
            &topic,
            &(0..500).map(|i| (format!("k{i}"), format!("{}", round * 500 + i))).collect::<Vec<_>>(),
        );
        let p = Pipeline::builder("resume")
            .handle_signals(false)
            .checkpointing(Checkpointing::to_dir(dir.path()).interval(Duration::from_millis(50)))
            .build()
            .unwrap();
        let out = CollectSink::new();
        p.source(KafkaSource::new(config(&b), [topic.clone()], group.clone()).bounded())
            .map(|r: KafkaRecord| r.value_str().unwrap().parse::<u64>().unwrap())
            .sink(out.clone());
        p.run().await.unwrap();
        let got = out.take();
        assert_eq!(got.len(), 500, "round {round} reads only the new records");
        seen.extend(got);
    }
    seen.sort_unstable();
    assert_eq!(seen, (0..1_000).collect::<Vec<u64>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_at_least_once_sink_keeps_keys_together_and_record_timestamps() {
    let Some(b) = bootstrap() else { return };
    let topic = unique("out");
    create_topic(&b, &topic, 4);
    let records: Vec<(String, i64)> =
        (0..2_000).map(|i| (format!("user{}", i % 50), 1_700_000_000_000 + i)).collect();
    let p = Pipeline::builder("write").parallelism(2).handle_signals(false).build().unwrap();
    p.source(MemorySource::new(records))
        .assign_timestamps(|r: &(String, i64)| r.1, Watermarks::bounded_out_of_orderness(Duration::ZERO))
        .sink(KafkaSink::json(config(&b), topic.clone()).key_by(|r: &(String, i64)| r.0.clone()));
    p.run().await.unwrap();
    let read = read_all(&b, &topic, "read_committed");
    assert_eq!(read.len(), 2_000);
    let mut partition_of = std::collections::HashMap::new();
    for r in &read {
        let key = r.key.clone().unwrap();
        let (k, ts): (String, i64) = serde_json::from_str(&r.value).unwrap();
        assert_eq!(k, key);
        assert_eq!(
            *partition_of.entry(key).or_insert(r.partition),
            r.partition,
            "a key stays in one partition"
        );
        assert!(ts >= 1_700_000_000_000);
    }
    assert_eq!(partition_of.len(), 50);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exactly_once_sink_refuses_parallel_writers_naming_the_setting() {
    let Some(b) = bootstrap() else { return };
    let topic = unique("out");
    create_topic(&b, &topic, 1);
    let dir = tempfile::tempdir().unwrap();
    let p = Pipeline::builder("eo")
        .parallelism(2)
        .handle_signals(false)
        .checkpointing(Checkpointing::to_dir(dir.path()))
        .build()
        .unwrap();
    p.source(MemorySource::new(vec![1u64, 2, 3]))
        .sink(KafkaSink::json(config(&b), topic.clone()).exactly_once(unique("txn")));
    let err = p.run().await.unwrap_err();
    assert!(matches!(err, Error::InvalidConfig { field: "delivery", .. }), "{err}");
    assert!(err.to_string().contains("parallelism 1"), "{err}");
}

/// A batch's append time ([`Batch::appended_ms`]) and its records' timestamps.
type Seen = (Option<i64>, Vec<Option<i64>>);

/// Forwards batches, noting what each one carried.
#[derive(Clone, Default)]
struct AppendTimes(Arc<Mutex<Vec<Seen>>>);

impl Operator<KafkaRecord, KafkaRecord> for AppendTimes {
    fn process_batch(&mut self, batch: Batch<KafkaRecord>, out: &mut Collector<KafkaRecord>) {
        let stamps = batch.records.iter().map(|r| r.timestamp).collect();
        self.0.lock().unwrap().push((batch.appended_ms(), stamps));
        out.batch(batch);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_of_a_log_append_time_topic_carry_the_brokers_append_time() {
    let Some(b) = bootstrap() else { return };
    let (appended, created) = (unique("appended"), unique("created"));
    create_topic_with(&b, &appended, 2, &[("message.timestamp.type", "LogAppendTime")]);
    create_topic(&b, &created, 2);
    let before = weir_testkit::now_ms();
    produce(&b, &appended, &input(500));
    produce(&b, &created, &input(500));
    for (topic, log_append_time) in [(appended, true), (created, false)] {
        let p = Pipeline::builder("append-time").parallelism(1).handle_signals(false).build().unwrap();
        let seen = AppendTimes::default();
        let source = KafkaSource::new(config(&b), [topic.clone()], unique("group"))
            .start_offset(StartOffset::Earliest)
            .batch_size(100)
            .bounded();
        p.source(source).operator("append-times", seen.clone()).sink(DiscardSink);
        p.run().await.unwrap();
        let seen = seen.0.lock().unwrap();
        assert_eq!(seen.iter().map(|(_, s)| s.len()).sum::<usize>(), 500, "{topic}");
        for (appended_ms, stamps) in seen.iter() {
            if log_append_time {
                // The broker stamped each record; a batch carries its newest stamp.
                let newest = stamps.iter().copied().max().flatten();
                assert_eq!(*appended_ms, newest, "{topic}");
                assert!(newest.is_some_and(|t| t >= before), "{topic}: {newest:?} before {before}");
            } else {
                assert_eq!(*appended_ms, None, "{topic}: producer timestamps are no append times");
            }
        }
    }
}
