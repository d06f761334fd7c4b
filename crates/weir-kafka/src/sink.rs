//! The Kafka sink: at-least-once, or exactly-once through Kafka transactions.
//!
//! # At least once
//!
//! Records are produced as they arrive (idempotent producer, `acks=all`). At every checkpoint
//! barrier the writer waits until every record it produced is acknowledged, so a complete
//! checkpoint never covers a record that is not in Kafka; after a restore the records after
//! the checkpoint are produced again (duplicates, never losses).
//!
//! # Exactly once
//!
//! Records go into a Kafka transaction; a checkpoint's transaction commits once the checkpoint
//! is complete, so a `read_committed` reader sees each checkpoint's output once or not at all.
//! librdkafka cannot resume a transaction after a crash, so the commit point is the
//! transaction itself, not the checkpoint:
//!
//! - Each transaction also commits a *marker*: the consumer group named by the transactional
//!   id gets offset `checkpoint` on partition 0 of the output topic, with metadata
//!   `weir:checkpoint=<id>`. A [`KafkaTasks`](crate::KafkaTasks) task commits its input
//!   offsets in the same transaction too.
//! - On start the sink calls `init_transactions` for its transactional ids, which fences any
//!   previous producer of them (a zombie cannot commit any more) and aborts its open
//!   transaction at once, without waiting for `transaction.timeout.ms`. It then reads the
//!   marker `M` and bounds the restore to it ([`Sink::restore_limit`]): a checkpoint completed
//!   after `M` whose transaction never committed is not restored; its input is read again.
//! - A restore of a checkpoint older than `M` (the newer ones were damaged) is refused: the
//!   topic holds output the restore would produce again.
//!
//! # Repartition topics
//!
//! A sink made with [`KafkaSink::repartition`] writes a topic that a second task group reads
//! (see [`crate::tasks`]): each record carries the header `weir.task` (the writing task's
//! partition, or its subtask), and at every checkpoint barrier the writer also writes a
//! *heartbeat* to every partition: an empty record with the headers `weir.task` and
//! `weir.heartbeat`, whose value is the writer's input watermark (decimal milliseconds), if
//! it rose since the last heartbeat. Every record written before the barrier precedes the
//! heartbeat in each partition. A
//! [`KafkaSource::from_repartition`](crate::KafkaSource::from_repartition) reading the topic
//! treats each writer as a split and takes the split's watermark from the heartbeats
//! ([`KafkaRecord::watermark`](crate::KafkaRecord::watermark) with
//! `Stream::assign_timestamps_punctuated`), so the reader's watermark is the minimum of its
//! writers' watermarks, and a record is late downstream exactly when it was behind its
//! writer's watermark: event time crosses the topic as it crosses an exchange inside one
//! process, also for the results of windows upstream (which are behind the newest event time
//! but not behind the watermark).
//!
//! The writer alternates between two transactional producers (`<id>-0`, `<id>-1`), so records
//! after a barrier go into the next transaction while the previous one waits for its
//! checkpoint to complete. Transactions commit in checkpoint order. An exactly-once sink runs
//! with one writer (a pipeline of parallelism 1, such as a [`KafkaTasks`](crate::KafkaTasks)
//! task): the writers of parallel subtasks would commit separate transactions, and a crash
//! between them would leave a checkpoint half visible.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerGroupMetadata, DefaultConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use serde::Serialize;
use weir_runtime::{Batch, CommittedOutput, Error, Result, Sink, SinkWriter};

use crate::config::KafkaConfig;
use crate::metrics::{KafkaMetrics, TxnMetrics};
use crate::source::REQUEST_TIMEOUT;
use crate::tasks::TaskLink;

/// The metadata prefix of a marker offset.
const MARKER: &str = "weir:checkpoint=";

type Encode<T> = fn(&T, &mut Vec<u8>) -> std::result::Result<(), String>;
type KeyFn<T> = Arc<dyn Fn(&T, &mut Vec<u8>) + Send + Sync>;

/// How a [`KafkaSink`] delivers.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Delivery {
    /// Every record at least once.
    AtLeastOnce,
    /// Every record once, through transactions with ids starting with this prefix (unique per
    /// pipeline on a cluster).
    ExactlyOnce {
        /// The transactional id prefix.
        transactional_id_prefix: String,
    },
}

/// Writes records to a Kafka topic; see the [module docs](crate::sink).
///
/// ```no_run
/// use weir_kafka::{KafkaConfig, KafkaSink};
/// use weir_runtime::{Checkpointing, MemorySource, Pipeline};
///
/// # async fn run() -> weir_runtime::Result<()> {
/// #[derive(serde::Serialize, Clone)]
/// struct Count { key: String, n: u64 }
///
/// let p = Pipeline::builder("counts").checkpointing(Checkpointing::to_dir("ckpt")).build()?;
/// let sink = KafkaSink::json(KafkaConfig::new("127.0.0.1:9092"), "counts")
///     .key_by(|c: &Count| c.key.clone())
///     .exactly_once("counts");
/// p.source(MemorySource::new(vec![Count { key: "a".into(), n: 1 }])).sink(sink);
/// p.run().await?;
/// # Ok(())
/// # }
/// ```
pub struct KafkaSink<T> {
    config: KafkaConfig,
    topic: String,
    encode: Encode<T>,
    key: Option<KeyFn<T>>,
    delivery: Delivery,
    transaction_timeout: Duration,
    repartition: bool,
    pub(crate) task: Option<Arc<TaskLink>>,
    /// Shared by clones (the writer's and the commits'); a task's sink gets its own.
    pub(crate) txn: Arc<OnceLock<Arc<Txn>>>,
    metrics: Option<KafkaMetrics>,
}

/// The header naming the task that wrote a repartition topic's record.
pub const TASK_HEADER: &str = "weir.task";
/// The header marking a repartition topic's heartbeat.
pub const HEARTBEAT_HEADER: &str = "weir.heartbeat";

impl<T> Clone for KafkaSink<T> {
    fn clone(&self) -> Self {
        KafkaSink {
            config: self.config.clone(),
            topic: self.topic.clone(),
            encode: self.encode,
            key: self.key.clone(),
            delivery: self.delivery.clone(),
            transaction_timeout: self.transaction_timeout,
            repartition: self.repartition,
            task: self.task.clone(),
            txn: self.txn.clone(),
            metrics: self.metrics.clone(),
        }
    }
}

impl<T> std::fmt::Debug for KafkaSink<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSink")
            .field("config", &self.config)
            .field("topic", &self.topic)
            .field("delivery", &self.delivery)
            .finish_non_exhaustive()
    }
}

impl<T: Serialize> KafkaSink<T> {
    /// Writes each record as a JSON value, at least once.
    pub fn json(config: KafkaConfig, topic: impl Into<String>) -> Self {
        KafkaSink::with_encoder(config, topic, |r, out| {
            serde_json::to_writer(out, r).map_err(|e| e.to_string())
        })
    }
}

impl<T: AsRef<[u8]>> KafkaSink<T> {
    /// Writes each record's bytes as they are (strings, byte vectors), at least once.
    pub fn bytes(config: KafkaConfig, topic: impl Into<String>) -> Self {
        KafkaSink::with_encoder(config, topic, |r, out| {
            out.extend_from_slice(r.as_ref());
            Ok(())
        })
    }
}

impl<T> KafkaSink<T> {
    /// Writes each record as `encode` appends it to the buffer (an error becomes the job's
    /// error, naming the topic), at least once.
    pub fn with_encoder(config: KafkaConfig, topic: impl Into<String>, encode: Encode<T>) -> Self {
        KafkaSink {
            config,
            topic: topic.into(),
            encode,
            key: None,
            delivery: Delivery::AtLeastOnce,
            transaction_timeout: Duration::from_secs(60),
            repartition: false,
            task: None,
            txn: Arc::new(OnceLock::new()),
            metrics: None,
        }
    }

    /// Keys each record (records without a key are spread by the producer's partitioner,
    /// `murmur2_random`, Java's, so records keyed alike land with Java producers' ones).
    pub fn key_by<K: AsRef<[u8]>>(mut self, key: impl Fn(&T) -> K + Send + Sync + 'static) -> Self {
        self.key = Some(Arc::new(move |r, out| out.extend_from_slice(key(r).as_ref())));
        self
    }

    /// Exactly-once delivery with transactional ids starting with `transactional_id_prefix`
    /// (unique per pipeline on the cluster).
    pub fn exactly_once(mut self, transactional_id_prefix: impl Into<String>) -> Self {
        self.delivery = Delivery::ExactlyOnce { transactional_id_prefix: transactional_id_prefix.into() };
        self
    }

    /// Writes a repartition topic: records carry the writing task in a header, and heartbeats
    /// carry the writer's watermark to every partition (see the [module docs](crate::sink)).
    /// Records need event time (`assign_timestamps` upstream).
    pub fn repartition(mut self) -> Self {
        self.repartition = true;
        self
    }

    /// At-least-once delivery (the default).
    pub fn at_least_once(mut self) -> Self {
        self.delivery = Delivery::AtLeastOnce;
        self
    }

    /// The transactions' timeout: longer than a checkpoint interval plus the longest
    /// checkpoint (the broker aborts a transaction open longer). Default: 60 s.
    pub fn transaction_timeout(mut self, timeout: Duration) -> Self {
        self.transaction_timeout = timeout;
        self
    }

    /// Exports an exactly-once sink's transaction metrics (commit latency, aborts, fencings)
    /// into `metrics`, labelled with `pipeline` (the name of the pipeline it is in); see
    /// [`crate::metrics`]. An at-least-once sink exports none.
    pub fn metrics(mut self, metrics: &weir_runtime::Metrics, pipeline: &str) -> Self {
        self.metrics = Some(KafkaMetrics::new(metrics, pipeline));
        self
    }

    /// The topic.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The delivery guarantee.
    pub fn delivery(&self) -> &Delivery {
        &self.delivery
    }

    fn error(&self, e: impl Into<weir_runtime::BoxError>) -> Error {
        Error::connector(format!("kafka sink {}", self.topic), e)
    }

    /// The transactional id (without the producer's `-0`/`-1`), in exactly-once mode.
    fn transactional_id(&self) -> Option<String> {
        match &self.delivery {
            Delivery::AtLeastOnce => None,
            Delivery::ExactlyOnce { transactional_id_prefix } => Some(match &self.task {
                Some(task) => format!("{transactional_id_prefix}-{}", task.partition),
                None => transactional_id_prefix.clone(),
            }),
        }
    }

    fn producer(&self, transactional_id: Option<&str>) -> Result<ThreadedProducer<Deliveries>> {
        let mut c = self.config.client(transactional_id.is_some())?;
        c.set("partitioner", "murmur2_random");
        if let Some(id) = transactional_id {
            let timeout = self.transaction_timeout.as_millis().to_string();
            c.set("transactional.id", id).set("transaction.timeout.ms", &timeout);
            if c.get("message.timeout.ms").is_none() {
                c.set("message.timeout.ms", &timeout);
            }
        } else {
            c.set("enable.idempotence", c.get("enable.idempotence").unwrap_or("true").to_owned());
        }
        self.config.create(&c, Deliveries::default()).map_err(|e| self.error(e))
    }

    /// The transactions of an exactly-once sink, made (and every older producer of their ids
    /// fenced) on first use.
    fn txn(&self) -> Result<Arc<Txn>> {
        if let Some(txn) = self.txn.get() {
            return Ok(txn.clone());
        }
        let Some(id) = self.transactional_id() else {
            return Err(Error::Internal("a transaction of an at-least-once Kafka sink".into()));
        };
        let started = std::time::Instant::now();
        self.partition_count()?;
        let mut slots = Vec::new();
        for i in 0..2 {
            let producer = self.producer(Some(&format!("{id}-{i}")))?;
            producer.init_transactions(REQUEST_TIMEOUT).map_err(|e| self.error(e))?;
            slots.push(Slot { producer, open: AtomicBool::new(false), busy: AtomicBool::new(false) });
        }
        let mut c = self.config.client(false)?;
        c.set("group.id", &id).set("enable.auto.commit", "false");
        let markers: BaseConsumer =
            self.config.create(&c, DefaultConsumerContext).map_err(|e| self.error(e))?;
        let marker_group = markers
            .group_metadata()
            .ok_or_else(|| self.error(format!("no group metadata for group {id}")))?;
        let metrics =
            self.metrics.clone().or_else(|| self.task.as_ref()?.metrics.as_ref().map(|m| m.handle()));
        let txn = Txn {
            id,
            slots,
            markers,
            marker_group,
            marker: AtomicU64::new(0),
            metrics: metrics.map(|m| m.transactions()),
        };
        let marker = txn.read_marker(&self.topic).map_err(|e| self.error(e))?;
        txn.marker.store(marker, Ordering::SeqCst);
        tracing::info!(
            transactional_id = %txn.id,
            committed_checkpoint = marker,
            took_ms = started.elapsed().as_millis() as u64,
            "kafka sink fenced earlier producers and aborted their open transactions"
        );
        Ok(self.txn.get_or_init(|| Arc::new(txn)).clone())
    }

    /// The output topic's partition count.
    fn partition_count(&self) -> Result<i32> {
        self.config.topic_partitions(&self.topic).map_err(|e| self.error(e))
    }

    fn writer_for(&self, transactional: bool, subtask: usize, parallelism: usize) -> Result<KafkaWriter<T>> {
        let txn = match &self.delivery {
            Delivery::AtLeastOnce => None,
            Delivery::ExactlyOnce { .. } if parallelism > 1 => {
                return Err(Error::InvalidConfig {
                    field: "delivery",
                    reason: format!(
                        "an exactly-once Kafka sink (topic {}) runs with one writer, but the pipeline's \
                         parallelism is {parallelism}: run it at parallelism 1, or spread the work over \
                         KafkaTasks (one pipeline per partition)",
                        self.topic
                    ),
                });
            }
            Delivery::ExactlyOnce { .. } => Some(self.txn()?),
        };
        let producer = match &txn {
            Some(_) => None,
            None => Some(self.producer(None)?),
        };
        // Fails fast on a missing topic or a refused authentication.
        let count = self.partition_count()?;
        let partitions = if self.repartition { count } else { 0 };
        Ok(KafkaWriter {
            sink: self.clone(),
            producer,
            txn,
            current: 0,
            commit_at_finish: !transactional,
            writer_task: self.task.as_ref().map_or(subtask as i32, |t| t.partition).to_string(),
            partitions,
            watermark: None,
            heartbeat_at: None,
            key: Vec::new(),
            value: Vec::new(),
            bytes: 0,
        })
    }
}

/// Counts delivery failures (librdkafka reports each record's delivery on its own thread).
#[derive(Default)]
struct Deliveries {
    failed: AtomicU64,
    first: Mutex<Option<String>>,
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((e, _)) = result {
            self.failed.fetch_add(1, Ordering::Relaxed);
            let mut first = self.first.lock().unwrap_or_else(PoisonError::into_inner);
            first.get_or_insert_with(|| e.to_string());
        }
    }
}

/// One transactional producer of an exactly-once sink.
struct Slot {
    producer: ThreadedProducer<Deliveries>,
    /// A transaction is open and takes records.
    open: AtomicBool,
    /// Its transaction was pre-committed and waits for its checkpoint to complete.
    busy: AtomicBool,
}

/// What an exactly-once sink shares between its writer and its commits.
pub(crate) struct Txn {
    id: String,
    slots: Vec<Slot>,
    /// A consumer of the marker group (never joined): reads the marker.
    markers: BaseConsumer,
    /// The marker group's metadata (a group without members), which the marker's offsets are
    /// sent with.
    marker_group: ConsumerGroupMetadata,
    /// The newest checkpoint whose transaction committed.
    marker: AtomicU64,
    metrics: Option<TxnMetrics>,
}

impl Txn {
    /// The checkpoint the marker group's committed offset names (0: none).
    fn read_marker(&self, topic: &str) -> std::result::Result<u64, KafkaError> {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(topic, 0);
        let committed =
            crate::coordinator::ask(|| self.markers.committed_offsets(tpl.clone(), REQUEST_TIMEOUT))?;
        Ok(committed
            .elements()
            .first()
            .and_then(|e| e.metadata().strip_prefix(MARKER).and_then(|n| n.parse().ok()))
            .unwrap_or(0))
    }
}

/// What a pre-committed transaction needs to commit.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Committable {
    checkpoint: u64,
    slot: usize,
    /// A task's input positions `(topic, partition, next offset)`.
    offsets: Vec<(String, i32, i64)>,
}

impl<T: Send + Sync + 'static> Sink<T> for KafkaSink<T> {
    type Writer = KafkaWriter<T>;

    fn name(&self) -> String {
        format!("kafka:{}", self.topic)
    }

    fn writer(&self, subtask: usize, parallelism: usize) -> Result<KafkaWriter<T>> {
        self.writer_for(false, subtask, parallelism)
    }

    fn transactional_writer(&self, subtask: usize, parallelism: usize) -> Result<KafkaWriter<T>> {
        self.writer_for(true, subtask, parallelism)
    }

    fn restore_limit(&self) -> Result<Option<u64>> {
        match self.delivery {
            Delivery::AtLeastOnce => Ok(None),
            Delivery::ExactlyOnce { .. } => Ok(Some(self.txn()?.marker.load(Ordering::SeqCst))),
        }
    }

    fn check_restore(&self, restored: Option<u64>) -> Result<()> {
        let Delivery::ExactlyOnce { .. } = self.delivery else { return Ok(()) };
        let marker = self.txn()?.marker.load(Ordering::SeqCst);
        let restored = restored.unwrap_or(0);
        if marker > restored {
            return Err(self.error(format!(
                "the topic holds the output of checkpoint {marker}, but checkpoint {} is being restored \
                 (newer ones are damaged or gone): its output would be committed again. Restore checkpoint \
                 {marker}, or start over from scratch into a new topic or transactional id",
                if restored == 0 { "none".to_owned() } else { restored.to_string() }
            )));
        }
        Ok(())
    }

    fn committed_output(&self) -> Result<Option<CommittedOutput>> {
        let Delivery::ExactlyOnce { .. } = self.delivery else { return Ok(None) };
        let txn = self.txn()?;
        let marker = txn.marker.load(Ordering::SeqCst);
        Ok((marker > 0).then(|| {
            CommittedOutput::new(
                Some(marker),
                format!("topic {} holds output committed by checkpoint {marker} ({})", self.topic, txn.id),
            )
        }))
    }

    fn destination(&self) -> Option<String> {
        Some(format!("kafka:{}@{}", self.topic, self.config.bootstrap_servers()))
    }

    /// Commits the pre-committed transactions, oldest checkpoint first, each with its marker
    /// (and a task's input offsets); those the marker already covers are skipped (a restore).
    fn commit(&self, _checkpoint: u64, committables: &[Vec<u8>]) -> Result<()> {
        let Delivery::ExactlyOnce { .. } = self.delivery else { return Ok(()) };
        let txn = self.txn()?;
        let mut pending: Vec<Committable> =
            committables.iter().map(|c| weir_runtime::decode(c)).collect::<Result<_>>()?;
        pending.sort_by_key(|c| c.checkpoint);
        for c in pending {
            if c.checkpoint <= txn.marker.load(Ordering::SeqCst) {
                continue;
            }
            let Some(slot) = txn.slots.get(c.slot) else {
                return Err(Error::Internal(format!("kafka sink {}: no producer {}", self.topic, c.slot)));
            };
            if !slot.busy.load(Ordering::SeqCst) {
                // After a restart, the transaction of a restored checkpoint newer than the
                // marker cannot exist: the restore limit keeps it from being restored.
                return Err(Error::Internal(format!(
                    "kafka sink {}: checkpoint {} has no open transaction to commit",
                    self.topic, c.checkpoint
                )));
            }
            let started = std::time::Instant::now();
            let result = self.commit_one(&txn, slot, &c);
            slot.busy.store(false, Ordering::SeqCst);
            if let Err(e) = result {
                if let Some(m) = &txn.metrics {
                    m.aborted(&e);
                }
                let _ = slot.producer.abort_transaction(REQUEST_TIMEOUT);
                return Err(
                    self.error(format!("committing the transaction of checkpoint {}: {e}", c.checkpoint))
                );
            }
            txn.marker.store(c.checkpoint, Ordering::SeqCst);
            if let Some(m) = &txn.metrics {
                m.committed(started.elapsed(), &c.offsets);
            }
            tracing::debug!(topic = %self.topic, checkpoint = c.checkpoint, took_us = started.elapsed().as_micros() as u64, "kafka transaction committed");
        }
        Ok(())
    }
}

impl<T> KafkaSink<T> {
    fn commit_one(&self, txn: &Txn, slot: &Slot, c: &Committable) -> std::result::Result<(), KafkaError> {
        let mut marker = TopicPartitionList::new();
        let mut e = marker.add_partition(&self.topic, 0);
        e.set_offset(Offset::Offset(c.checkpoint as i64))?;
        e.set_metadata(format!("{MARKER}{}", c.checkpoint));
        slot.producer.send_offsets_to_transaction(&marker, &txn.marker_group, REQUEST_TIMEOUT)?;
        if let (Some(task), false) = (&self.task, c.offsets.is_empty()) {
            let mut offsets = TopicPartitionList::new();
            for (topic, partition, offset) in &c.offsets {
                let mut e = offsets.add_partition(topic, *partition);
                e.set_offset(Offset::Offset(*offset))?;
                e.set_metadata(format!("{MARKER}{}", c.checkpoint));
            }
            if let Some(metadata) = task.group_metadata() {
                slot.producer.send_offsets_to_transaction(&offsets, &metadata, REQUEST_TIMEOUT)?;
            }
        }
        slot.producer.commit_transaction(REQUEST_TIMEOUT)?;
        slot.open.store(false, Ordering::SeqCst);
        Ok(())
    }
}

/// The writer of a [`KafkaSink`].
pub struct KafkaWriter<T> {
    sink: KafkaSink<T>,
    /// At least once: the writer's producer.
    producer: Option<ThreadedProducer<Deliveries>>,
    /// Exactly once: the sink's transactions.
    txn: Option<Arc<Txn>>,
    /// Exactly once: the slot taking records.
    current: usize,
    /// Exactly once without checkpoints: one transaction, committed when the input ends.
    commit_at_finish: bool,
    /// Repartition topics: the writer's name in the task header.
    writer_task: String,
    /// Repartition topics: the topic's partition count (0: not a repartition topic).
    partitions: i32,
    /// Repartition topics: the writer's input watermark.
    watermark: Option<i64>,
    /// Repartition topics: the watermark of the last heartbeat.
    heartbeat_at: Option<i64>,
    key: Vec<u8>,
    value: Vec<u8>,
    bytes: u64,
}

impl<T> std::fmt::Debug for KafkaWriter<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaWriter").field("topic", &self.sink.topic).finish_non_exhaustive()
    }
}

impl<T> KafkaWriter<T> {
    /// The producer records go to now, with its transaction begun (exactly once).
    fn target(&self) -> Result<&ThreadedProducer<Deliveries>> {
        if let Some(p) = &self.producer {
            return Ok(p);
        }
        let Some(txn) = &self.txn else {
            return Err(Error::Internal("kafka writer without a producer".into()));
        };
        let slot = &txn.slots[self.current];
        if !slot.open.load(Ordering::SeqCst) {
            if slot.busy.load(Ordering::SeqCst) {
                return Err(self.sink.error(
                    "both transactions wait for checkpoints to complete (a checkpoint was abandoned); \
                     the job restarts from the last committed one",
                ));
            }
            slot.producer.begin_transaction().map_err(|e| self.sink.error(e))?;
            slot.open.store(true, Ordering::SeqCst);
        }
        Ok(&slot.producer)
    }

    /// Repartition topics: a heartbeat to every partition if the watermark rose.
    async fn heartbeat(&mut self) -> Result<()> {
        let Some(watermark) = self.watermark.filter(|w| self.partitions > 0 && Some(*w) > self.heartbeat_at)
        else {
            return Ok(());
        };
        let value = watermark.to_string();
        for partition in 0..self.partitions {
            loop {
                let headers = OwnedHeaders::new()
                    .insert(Header { key: TASK_HEADER, value: Some(&self.writer_task) })
                    .insert(Header { key: HEARTBEAT_HEADER, value: Some(&value) });
                // The record's own timestamp is the producer's clock: the watermark may be
                // past what a broker accepts (the end of input is `i64::MAX`).
                let r: BaseRecord<'_, [u8], [u8]> =
                    BaseRecord::to(&self.sink.topic).partition(partition).payload(&[][..]).headers(headers);
                match self.target()?.send(r) {
                    Ok(()) => break,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                    Err((e, _)) => return Err(self.sink.error(e)),
                }
            }
        }
        self.heartbeat_at = Some(watermark);
        Ok(())
    }

    /// Waits until every record produced was acknowledged; fails on any delivery failure.
    async fn drain(&self, producer: &ThreadedProducer<Deliveries>) -> Result<()> {
        while producer.in_flight_count() > 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let context = producer.context();
        let failed = context.failed.swap(0, Ordering::Relaxed);
        if failed > 0 {
            let first =
                context.first.lock().unwrap_or_else(PoisonError::into_inner).take().unwrap_or_default();
            return Err(self.sink.error(format!("{failed} records were not delivered; the first: {first}")));
        }
        Ok(())
    }
}

impl<T: Send + Sync + 'static> SinkWriter<T> for KafkaWriter<T> {
    async fn write_batch(&mut self, batch: Batch<T>) -> Result<()> {
        let topic = self.sink.topic.as_str();
        for (i, record) in batch.records.iter().enumerate() {
            self.value.clear();
            (self.sink.encode)(record, &mut self.value)
                .map_err(|e| self.sink.error(format!("encoding a record: {e}")))?;
            if let Some(key) = &self.sink.key {
                self.key.clear();
                key(record, &mut self.key);
            }
            self.bytes += (self.value.len() + self.key.len()) as u64;
            loop {
                let mut r: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(topic).payload(&self.value[..]);
                if self.sink.key.is_some() {
                    r = r.key(&self.key[..]);
                }
                if let Some(ts) = batch.timestamp(i) {
                    r = r.timestamp(ts);
                }
                if self.partitions > 0 {
                    r = r.headers(
                        OwnedHeaders::new()
                            .insert(Header { key: TASK_HEADER, value: Some(&self.writer_task) }),
                    );
                }
                match self.target()?.send(r) {
                    Ok(()) => break,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                    Err((e, _)) => return Err(self.sink.error(e)),
                }
            }
        }
        Ok(())
    }

    async fn pre_commit(&mut self, checkpoint: u64) -> Result<Option<Vec<u8>>> {
        self.heartbeat().await?;
        let producer = self.target()?;
        self.drain(producer).await?;
        let Some(txn) = &self.txn else { return Ok(None) };
        let slot = &txn.slots[self.current];
        slot.busy.store(true, Ordering::SeqCst);
        let offsets = self.sink.task.as_ref().map(|t| t.take_positions()).unwrap_or_default();
        let committable = Committable { checkpoint, slot: self.current, offsets };
        self.current = 1 - self.current;
        weir_runtime::encode(&committable).map(Some)
    }

    async fn finish(&mut self) -> Result<()> {
        if self.txn.is_some() && !self.commit_at_finish {
            // The last records were pre-committed at the end barrier.
            return Ok(());
        }
        self.heartbeat().await?;
        let producer = self.target()?;
        self.drain(producer).await?;
        if let (true, Some(txn)) = (self.commit_at_finish, &self.txn) {
            let slot = &txn.slots[self.current];
            slot.producer.commit_transaction(REQUEST_TIMEOUT).map_err(|e| self.sink.error(e))?;
            slot.open.store(false, Ordering::SeqCst);
        }
        Ok(())
    }

    fn on_watermark(&mut self, watermark: i64) {
        if self.partitions > 0 {
            self.watermark = self.watermark.max(Some(watermark));
        }
    }

    fn bytes_written(&self) -> u64 {
        self.bytes
    }
}
