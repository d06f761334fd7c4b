//! Kafka metrics: consumer lag and committed offsets per partition, a task group's partitions
//! and rebalances, and an exactly-once sink's transactions (the `weir_kafka_*` entries of
//! [`weir_metrics::catalog`]).
//!
//! A connector exports them once it is given the application's registry:
//! [`KafkaSource::metrics`](crate::KafkaSource::metrics) and
//! [`KafkaSink::metrics`](crate::KafkaSink::metrics) with the pipeline's name (the `pipeline`
//! label, as [`PipelineBuilder::metrics`](weir_runtime::PipelineBuilder::metrics) gives it to
//! the runtime's metrics), or [`KafkaTasks::metrics`](crate::KafkaTasks::metrics), which also
//! hands the registry to every task's pipeline, source and sink (labelled with the task
//! pipeline's name, `<name>-<partition>`).
//!
//! # Lag
//!
//! `weir_kafka_consumer_lag` is a partition's last stable offset (LSO) minus the offset the
//! pipeline committed for it, never below 0. The LSO is what a `read_committed` reader can
//! reach: records of open transactions are not lag the pipeline could work off. It is polled
//! once a second ([`LSO_INTERVAL`]) by a thread per reader, with one `ListOffsets` request (at
//! `read_committed`) for all the reader's partitions; the poll does not depend on the reader
//! being polled, so the lag of a pipeline that is stuck or backpressured keeps growing. (Not
//! librdkafka's statistics: they only reach the application when the reader polls its
//! consumer, so a stuck pipeline would show a frozen lag.) The committed offset is the one the
//! pipeline commits: a [`KafkaSource`](crate::KafkaSource) when a checkpoint completes, a
//! task's exactly-once sink when its transaction commits; until the first commit, the group's
//! committed offset read when the reader starts. A partition without a committed offset has no
//! lag series.
//!
//! A process whose task group hands a partition over keeps the partition's last lag and
//! committed offset (the registry never drops a series): the new owner exports the live
//! values under its own `instance`.
//!
//! # Cost
//!
//! Nothing per record: offsets are set per poll and per commit, rebalance counts per
//! rebalance, transaction metrics per checkpoint.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::{Offset, TopicPartitionList};
use weir_metrics::catalog::{
    KAFKA_COMMITTED_OFFSET, KAFKA_CONSUMER_LAG, KAFKA_FENCED, KAFKA_OWNED_PARTITIONS, KAFKA_REBALANCES,
    KAFKA_TXN_ABORTS, KAFKA_TXN_COMMIT,
};
use weir_metrics::{Gauge, Histogram, IntCounter, Metrics};

use crate::source::REQUEST_TIMEOUT;

/// How often a reader polls its partitions' last stable offsets.
pub const LSO_INTERVAL: Duration = Duration::from_secs(1);

/// The Kafka metrics of one pipeline: its registry and name, and its partitions' offsets.
#[derive(Clone)]
pub(crate) struct KafkaMetrics {
    inner: Arc<Inner>,
}

struct Inner {
    metrics: Metrics,
    pipeline: String,
    partitions: Mutex<HashMap<(String, i32), Arc<PartitionOffsets>>>,
}

impl std::fmt::Debug for KafkaMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaMetrics").field("pipeline", &self.inner.pipeline).finish_non_exhaustive()
    }
}

impl KafkaMetrics {
    pub(crate) fn new(metrics: &Metrics, pipeline: &str) -> Self {
        KafkaMetrics {
            inner: Arc::new(Inner {
                metrics: metrics.clone(),
                pipeline: pipeline.to_owned(),
                partitions: Mutex::default(),
            }),
        }
    }

    /// The offsets of `topic`/`partition` (made on first use).
    pub(crate) fn partition(&self, topic: &str, partition: i32) -> Arc<PartitionOffsets> {
        let mut all = self.inner.partitions.lock().unwrap_or_else(PoisonError::into_inner);
        all.entry((topic.to_owned(), partition))
            .or_insert_with(|| {
                Arc::new(PartitionOffsets {
                    metrics: self.inner.metrics.clone(),
                    labels: [self.inner.pipeline.clone(), topic.to_owned(), partition.to_string()],
                    lso: AtomicI64::new(-1),
                    committed: AtomicI64::new(-1),
                    lag: OnceLock::new(),
                    committed_gauge: OnceLock::new(),
                })
            })
            .clone()
    }

    /// The pipeline committed these `(topic, partition, next offset)`s.
    pub(crate) fn committed<'a>(&self, offsets: impl IntoIterator<Item = (&'a str, i32, i64)>) {
        for (topic, partition, offset) in offsets {
            self.partition(topic, partition).set_committed(offset);
        }
    }

    /// The metrics of an exactly-once sink's transactions (registered at 0).
    pub(crate) fn transactions(&self) -> TxnMetrics {
        let m = &self.inner.metrics;
        let p = self.inner.pipeline.as_str();
        TxnMetrics {
            offsets: self.clone(),
            commit: m.histogram(&KAFKA_TXN_COMMIT, [p]),
            aborted_fenced: m.counter(&KAFKA_TXN_ABORTS, [p, "fenced"]),
            aborted_error: m.counter(&KAFKA_TXN_ABORTS, [p, "error"]),
            fenced: m.counter(&KAFKA_FENCED, [p]),
        }
    }
}

/// One partition's last stable and committed offsets (`-1`: not known yet).
pub(crate) struct PartitionOffsets {
    metrics: Metrics,
    /// `pipeline`, `topic`, `partition`.
    labels: [String; 3],
    lso: AtomicI64,
    committed: AtomicI64,
    lag: OnceLock<Gauge>,
    committed_gauge: OnceLock<Gauge>,
}

impl PartitionOffsets {
    fn labels(&self) -> [&str; 3] {
        [&self.labels[0], &self.labels[1], &self.labels[2]]
    }

    fn set_lso(&self, lso: i64) {
        self.lso.store(lso, Ordering::Relaxed);
        self.update_lag();
    }

    fn set_committed(&self, offset: i64) {
        self.committed.store(offset, Ordering::Relaxed);
        self.committed_gauge
            .get_or_init(|| self.metrics.gauge(&KAFKA_COMMITTED_OFFSET, self.labels()))
            .set(offset as f64);
        self.update_lag();
    }

    /// The group's offset read at start, unless the pipeline committed one since.
    fn set_initial_committed(&self, offset: i64) {
        if self.committed.load(Ordering::Relaxed) < 0 {
            self.set_committed(offset);
        }
    }

    fn update_lag(&self) {
        let (lso, committed) = (self.lso.load(Ordering::Relaxed), self.committed.load(Ordering::Relaxed));
        if lso >= 0 && committed >= 0 {
            self.lag
                .get_or_init(|| self.metrics.gauge(&KAFKA_CONSUMER_LAG, self.labels()))
                .set((lso - committed).max(0) as f64);
        }
    }
}

/// Starts polling the last stable offsets of `partitions` with `consumer` (see
/// [`LsoPoller::start`]); `None` if `partitions` is empty or no thread could be started (the
/// lag is then not measured; the reader works on).
pub(crate) fn watch<'a>(
    metrics: &KafkaMetrics,
    consumer: BaseConsumer,
    partitions: impl IntoIterator<Item = (&'a str, i32)>,
) -> Option<LsoPoller> {
    let partitions: Vec<_> =
        partitions.into_iter().map(|(t, p)| (t.to_owned(), p, metrics.partition(t, p))).collect();
    if partitions.is_empty() {
        return None;
    }
    LsoPoller::start(consumer, partitions)
        .inspect_err(|e| tracing::warn!(error = %e, "kafka lag not measured: no thread"))
        .ok()
}

/// Polls the last stable offsets of a reader's partitions every [`LSO_INTERVAL`] on a thread
/// of its own, until dropped.
pub(crate) struct LsoPoller {
    _stop: mpsc::Sender<()>,
}

impl LsoPoller {
    /// Starts polling with `consumer` (made with `isolation.level=read_committed` and the
    /// pipeline's group, whose committed offsets are read once, first).
    pub(crate) fn start(
        consumer: BaseConsumer,
        partitions: Vec<(String, i32, Arc<PartitionOffsets>)>,
    ) -> std::io::Result<LsoPoller> {
        let (stop, stopped) = mpsc::channel::<()>();
        std::thread::Builder::new().name("weir-kafka-lso".into()).spawn(move || {
            let mut tpl = TopicPartitionList::new();
            for (topic, partition, _) in &partitions {
                tpl.add_partition(topic, *partition);
            }
            let find = |topic: &str, partition: i32| {
                partitions.iter().find(|(t, p, _)| t == topic && *p == partition).map(|(_, _, o)| o)
            };
            match crate::coordinator::ask(|| consumer.committed_offsets(tpl.clone(), REQUEST_TIMEOUT)) {
                Ok(committed) => {
                    for e in committed.elements() {
                        if let (Offset::Offset(o), Some(p)) = (e.offset(), find(e.topic(), e.partition())) {
                            p.set_initial_committed(o);
                        }
                    }
                }
                Err(e) => tracing::debug!(error = %e, "reading committed offsets for the lag"),
            }
            // Offset::End as a timestamp asks for the end offset: the LSO at read_committed.
            if let Err(e) = tpl.set_all_offsets(Offset::End) {
                tracing::warn!(error = %e, "kafka lag not measured");
                return;
            }
            loop {
                match consumer.offsets_for_times(tpl.clone(), REQUEST_TIMEOUT) {
                    Ok(ends) => {
                        for e in ends.elements() {
                            if let (Offset::Offset(o), Some(p)) = (e.offset(), find(e.topic(), e.partition()))
                            {
                                p.set_lso(o);
                            }
                        }
                    }
                    Err(e) => tracing::debug!(error = %e, "polling last stable offsets"),
                }
                match stopped.recv_timeout(LSO_INTERVAL) {
                    Err(RecvTimeoutError::Timeout) => {}
                    Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
                }
            }
        })?;
        Ok(LsoPoller { _stop: stop })
    }
}

/// An exactly-once sink's transactions.
pub(crate) struct TxnMetrics {
    offsets: KafkaMetrics,
    commit: Histogram,
    aborted_fenced: IntCounter,
    aborted_error: IntCounter,
    fenced: IntCounter,
}

impl TxnMetrics {
    /// A transaction committed in `took`, with a task's input `offsets`.
    pub(crate) fn committed(&self, took: Duration, offsets: &[(String, i32, i64)]) {
        self.commit.observe(took.as_secs_f64());
        self.offsets.committed(offsets.iter().map(|(t, p, o)| (t.as_str(), *p, *o)));
    }

    /// A transaction's commit failed with `error` and it was aborted.
    pub(crate) fn aborted(&self, error: &KafkaError) {
        if is_fenced(error) {
            self.aborted_fenced.inc();
            self.fenced.inc();
        } else {
            self.aborted_error.inc();
        }
    }
}

/// Whether `error` says a newer producer of the transactional id fenced this one.
fn is_fenced(error: &KafkaError) -> bool {
    matches!(
        error.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::Fenced
                | RDKafkaErrorCode::ProducerFenced
                | RDKafkaErrorCode::InvalidProducerEpoch
                | RDKafkaErrorCode::TransactionCoordinatorFenced
        )
    )
}

/// A task group's partitions and rebalances in this process.
#[derive(Clone)]
pub(crate) struct GroupMetrics {
    owned: Gauge,
    assign: IntCounter,
    revoke: IntCounter,
    lost: IntCounter,
}

impl GroupMetrics {
    pub(crate) fn new(metrics: &Metrics, group: &str, topic: &str) -> Self {
        GroupMetrics {
            owned: metrics.gauge(&KAFKA_OWNED_PARTITIONS, [group, topic]),
            assign: metrics.counter(&KAFKA_REBALANCES, [group, "assign"]),
            revoke: metrics.counter(&KAFKA_REBALANCES, [group, "revoke"]),
            lost: metrics.counter(&KAFKA_REBALANCES, [group, "lost"]),
        }
    }

    /// Partitions were assigned to this process.
    pub(crate) fn assigned(&self) {
        self.assign.inc();
    }

    /// Partitions were revoked (`lost`: taken away without a chance to hand them over).
    pub(crate) fn revoked(&self, lost: bool) {
        if lost { &self.lost } else { &self.revoke }.inc();
    }

    /// This process now owns `n` partitions.
    pub(crate) fn owned(&self, n: usize) {
        self.owned.set(n as f64);
    }
}

/// A task's metrics: the registry, and the task pipeline's name once
/// [`Task::pipeline`](crate::Task::pipeline) named it.
pub(crate) struct TaskMetrics {
    metrics: Metrics,
    /// The pipeline label if the task's pipeline was not made by `Task::pipeline`.
    fallback: String,
    pipeline: OnceLock<String>,
    handle: OnceLock<KafkaMetrics>,
}

impl TaskMetrics {
    pub(crate) fn new(metrics: &Metrics, fallback: String) -> Self {
        TaskMetrics { metrics: metrics.clone(), fallback, pipeline: OnceLock::new(), handle: OnceLock::new() }
    }

    /// The task's pipeline is named `name`.
    pub(crate) fn named(&self, name: &str) {
        let _ = self.pipeline.set(name.to_owned());
    }

    pub(crate) fn registry(&self) -> &Metrics {
        &self.metrics
    }

    /// The task's metrics, shared by its source and sink (labelled when first asked for, that
    /// is, once the pipeline runs).
    pub(crate) fn handle(&self) -> KafkaMetrics {
        self.handle
            .get_or_init(|| KafkaMetrics::new(&self.metrics, self.pipeline.get().unwrap_or(&self.fallback)))
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exported(m: &Metrics, name: &str) -> Option<String> {
        m.encode()
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit_once(' '))
            .map(|(_, v)| v.to_owned())
    }

    #[test]
    fn lag_is_the_lso_minus_the_committed_offset_once_both_are_known() {
        let m = Metrics::new();
        let p = KafkaMetrics::new(&m, "p").partition("t", 0);
        p.set_lso(100);
        assert_eq!(exported(&m, "weir_kafka_consumer_lag"), None, "no committed offset yet");
        p.set_initial_committed(40);
        assert_eq!(exported(&m, "weir_kafka_consumer_lag").as_deref(), Some("60"));
        p.set_committed(90);
        p.set_initial_committed(10);
        assert_eq!(exported(&m, "weir_kafka_committed_offset").as_deref(), Some("90"), "commits win");
        assert_eq!(exported(&m, "weir_kafka_consumer_lag").as_deref(), Some("10"));
        p.set_committed(120);
        assert_eq!(
            exported(&m, "weir_kafka_consumer_lag").as_deref(),
            Some("0"),
            "a stale LSO is no negative lag"
        );
    }

    #[test]
    fn fencing_errors_are_told_apart() {
        assert!(is_fenced(&KafkaError::MessageProduction(RDKafkaErrorCode::ProducerFenced)));
        assert!(is_fenced(&KafkaError::MessageProduction(RDKafkaErrorCode::Fenced)));
        assert!(!is_fenced(&KafkaError::MessageProduction(RDKafkaErrorCode::RequestTimedOut)));
    }
}
