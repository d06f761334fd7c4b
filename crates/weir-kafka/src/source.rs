//! The Kafka source: topics read with assigned partitions, offsets in Weir's checkpoints.
//!
//! # Partitions and splits
//!
//! The source lists the partitions of its topics when a reader is made. Subtask `i` of `p`
//! reads partitions `i, i + p, …` of that list (sorted by topic, then partition), assigned to
//! its consumer, never subscribed: Flink's model, so a partition never moves while a job runs.
//! (To spread partitions over several processes, see [`KafkaTasks`](crate::KafkaTasks).) Every
//! batch holds records of one partition, and its split is `topic index << 16 | partition`, so
//! event time and idleness are tracked per partition; the reader names its splits up front, so
//! a partition with no data holds the watermark back only until the pipeline's idle timeout
//! ([`Watermarks::with_idle_timeout`](weir_runtime::Watermarks::with_idle_timeout)).
//!
//! # Offsets
//!
//! A split's position is the offset of the next record to read (Kafka's committed-offset
//! convention), past transaction markers once every record before them was handed downstream.
//! Positions go into every checkpoint, and a restored reader seeks to them. When a checkpoint
//! completes, they are committed to the consumer group ([`Source::commit`]), so
//! `kafka-consumer-groups.sh --describe` shows the true lag; the group's offsets are never the
//! source of truth while checkpoints exist. Without a checkpoint, a partition starts at the
//! [`StartOffset`]. A pipeline without checkpoints commits nothing.
//!
//! Consumers read with `isolation.level=read_committed`: records of aborted or open
//! transactions are never seen.
//!
//! # Repartition topics
//!
//! [`KafkaSource::from_repartition`] reads a topic written by a
//! [`KafkaSink::repartition`](crate::KafkaSink::repartition): its splits are the writers (the
//! `weir.task` header), not the partitions, so event time is tracked per writer and the
//! watermark is the minimum over them. Heartbeats come through as records carrying their
//! writer's watermark ([`KafkaRecord::watermark`]): take the watermarks from them with
//! `Stream::assign_timestamps_punctuated(|r| r.timestamp.unwrap_or(i64::MIN), KafkaRecord::watermark, None)`,
//! then drop them ([`KafkaRecord::is_heartbeat`]). A restored reader hands each writer's last
//! watermark downstream again, as a heartbeat, before any record.
//!
//! # Bounded mode
//!
//! With [`KafkaSource::bounded`], each reader notes its partitions' end offsets when it starts
//! and ends once it has read up to them.
//!
//! # Append time
//!
//! Records of a topic with `message.timestamp.type=LogAppendTime` carry the broker's append
//! time as their timestamp, and each batch carries its newest record's
//! ([`Batch::appended_ms`](weir_runtime::Batch::appended_ms)), from which downstream operators
//! measure how long after the append their output is (a feature view's freshness).

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Headers};
use rdkafka::{Message, Offset, Timestamp, TopicPartitionList};
use serde::de::DeserializeOwned;
use weir_runtime::{Batch, Error, Result, Source, SourceReader, SplitPositions, Traceable};

use crate::config::KafkaConfig;
use crate::metrics::{KafkaMetrics, LsoPoller};
use crate::tasks::TaskLink;

/// How long a metadata or offsets request may take.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a reader waits for records before it checks its bounds again.
const WAIT: Duration = Duration::from_millis(200);

/// A record read from Kafka.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaRecord {
    /// The topic.
    pub topic: Arc<str>,
    /// The partition.
    pub partition: i32,
    /// The record's offset in its partition.
    pub offset: i64,
    /// The record's timestamp (milliseconds since the Unix epoch), if it has one.
    pub timestamp: Option<i64>,
    /// The key.
    pub key: Option<Vec<u8>>,
    /// The value (empty for a tombstone).
    pub value: Vec<u8>,
    /// The headers, in order; a header without a value has an empty one.
    pub headers: Vec<(String, Vec<u8>)>,
}

impl KafkaRecord {
    /// Parses the value as JSON, for `try_map(KafkaRecord::parse_json::<T>)`.
    ///
    /// # Errors
    ///
    /// The JSON error (it becomes a dead letter's reason under `try_map`).
    pub fn parse_json<T: DeserializeOwned>(&self) -> std::result::Result<T, serde_json::Error> {
        serde_json::from_slice(&self.value)
    }

    /// The value as UTF-8 text (a line of a log, say).
    ///
    /// # Errors
    ///
    /// The UTF-8 error if it is not.
    pub fn value_str(&self) -> std::result::Result<&str, std::str::Utf8Error> {
        std::str::from_utf8(&self.value)
    }

    /// The key as UTF-8 text, if there is a key and it is text.
    pub fn key_str(&self) -> Option<&str> {
        self.key.as_deref().and_then(|k| std::str::from_utf8(k).ok())
    }

    /// Whether this is a repartition topic's heartbeat (no data: it carries a writer's
    /// watermark; see [`KafkaSource::from_repartition`]).
    pub fn is_heartbeat(&self) -> bool {
        self.header(crate::sink::HEARTBEAT_HEADER).is_some()
    }

    /// The watermark a repartition topic's heartbeat carries (its writer's: no record of that
    /// writer with a timestamp `<=` it follows, except late ones); `None` for other records.
    pub fn watermark(&self) -> Option<i64> {
        std::str::from_utf8(self.header(crate::sink::HEARTBEAT_HEADER)?).ok()?.parse().ok()
    }

    /// The value of the first header named `name`.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_slice())
    }

    fn from_message(topic: &Arc<str>, m: &BorrowedMessage<'_>) -> KafkaRecord {
        let headers = m
            .headers()
            .map(|hs| {
                hs.iter()
                    .map(|h| (h.key.to_owned(), h.value.map(<[u8]>::to_vec).unwrap_or_default()))
                    .collect()
            })
            .unwrap_or_default();
        KafkaRecord {
            topic: topic.clone(),
            partition: m.partition(),
            offset: m.offset(),
            timestamp: m.timestamp().to_millis(),
            key: m.key().map(<[u8]>::to_vec),
            value: m.payload().map(<[u8]>::to_vec).unwrap_or_default(),
            headers,
        }
    }
}

impl Traceable for KafkaRecord {
    /// `kafka:topic/partition@offset`, e.g. `kafka:orders/2@1041`.
    fn origin(&self) -> String {
        format!("kafka:{}/{}@{}", self.topic, self.partition, self.offset)
    }

    /// The value as UTF-8 (invalid bytes replaced by U+FFFD).
    fn payload(&self) -> String {
        String::from_utf8_lossy(&self.value).into_owned()
    }
}

/// Where a partition without a checkpointed position starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum StartOffset {
    /// The earliest record still stored.
    Earliest,
    /// After the last record (only records produced from now on).
    Latest,
    /// The consumer group's committed offset; [`StartOffset::Earliest`] where it has none.
    /// (Flink's `group-offsets`.)
    #[default]
    Committed,
    /// The first record with a timestamp at or after this one (milliseconds since the Unix
    /// epoch); the end where there is none.
    Timestamp(i64),
}

/// Reads Kafka topics; see the [module docs](crate::source).
///
/// ```no_run
/// use weir_kafka::{KafkaConfig, KafkaRecord, KafkaSource, StartOffset};
/// use weir_runtime::{CollectSink, Pipeline};
///
/// # async fn run() -> weir_runtime::Result<()> {
/// let p = Pipeline::builder("orders").build()?;
/// let source = KafkaSource::new(KafkaConfig::new("127.0.0.1:9092"), ["orders"], "orders-report")
///     .start_offset(StartOffset::Earliest)
///     .bounded();
/// let out = CollectSink::new();
/// p.source(source).try_map(KafkaRecord::parse_json::<serde_json::Value>).sink(out.clone());
/// p.run().await?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct KafkaSource {
    config: KafkaConfig,
    pub(crate) topics: Vec<String>,
    pub(crate) group: String,
    start: StartOffset,
    bounded: bool,
    batch_size: usize,
    /// A repartition topic written by this many writers (0: not one).
    writers: u32,
    /// Read by a [`KafkaTasks`](crate::KafkaTasks) task: one partition, offsets committed by
    /// the task's transaction.
    pub(crate) task: Option<Arc<TaskLink>>,
    metrics: Option<KafkaMetrics>,
    /// The client that commits checkpoints' positions, made on the first commit.
    pub(crate) committer: Arc<Committer>,
}

/// The client that commits a source's positions to its group, made once.
#[derive(Default)]
pub(crate) struct Committer(std::sync::OnceLock<BaseConsumer>);

impl std::fmt::Debug for Committer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Committer")
    }
}

impl KafkaSource {
    /// Reads `topics` for the consumer group `group` (whose offsets show the pipeline's lag).
    pub fn new<S: Into<String>>(
        config: KafkaConfig,
        topics: impl IntoIterator<Item = S>,
        group: impl Into<String>,
    ) -> Self {
        KafkaSource {
            config,
            topics: topics.into_iter().map(Into::into).collect(),
            group: group.into(),
            start: StartOffset::default(),
            bounded: false,
            batch_size: 1024,
            writers: 0,
            task: None,
            committer: Arc::default(),
            metrics: None,
        }
    }

    /// The connection settings.
    pub fn config(&self) -> &KafkaConfig {
        &self.config
    }

    /// Where partitions without a checkpointed position start. Default:
    /// [`StartOffset::Committed`].
    pub fn start_offset(mut self, start: StartOffset) -> Self {
        self.start = start;
        self
    }

    /// Reads up to the end offsets the partitions have when the reader starts, then ends.
    pub fn bounded(mut self) -> Self {
        self.bounded = true;
        self
    }

    /// Reads a repartition topic written by `writers` writers (the tasks of the task group that
    /// writes it: the partition count of its input topic); see the [module docs](crate::source).
    pub fn from_repartition(mut self, writers: u32) -> Self {
        self.writers = writers;
        self
    }

    /// At most this many records per batch (at least 1). Default: 1024.
    pub fn batch_size(mut self, n: usize) -> Self {
        self.batch_size = n;
        self
    }

    /// Exports the source's lag and committed offset per partition into `metrics`, labelled
    /// with `pipeline` (the name of the pipeline it is in); see [`crate::metrics`].
    ///
    /// ```no_run
    /// use weir_kafka::{KafkaConfig, KafkaSource};
    /// use weir_runtime::{Checkpointing, DiscardSink, Metrics, Pipeline};
    ///
    /// # async fn run() -> weir_runtime::Result<()> {
    /// let metrics = Metrics::new();
    /// let p = Pipeline::builder("orders")
    ///     .metrics(metrics.clone())
    ///     .checkpointing(Checkpointing::to_dir("ckpt"))
    ///     .build()?;
    /// let source = KafkaSource::new(KafkaConfig::new("127.0.0.1:9092"), ["orders"], "orders-report")
    ///     .metrics(&metrics, "orders");
    /// p.source(source).sink(DiscardSink);
    /// p.run().await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn metrics(mut self, metrics: &weir_runtime::Metrics, pipeline: &str) -> Self {
        self.metrics = Some(KafkaMetrics::new(metrics, pipeline));
        self
    }

    /// Its own metrics, or its task's.
    fn kafka_metrics(&self) -> Option<KafkaMetrics> {
        self.metrics.clone().or_else(|| self.task.as_ref()?.metrics.as_ref().map(|m| m.handle()))
    }

    /// The consumer group.
    pub fn group(&self) -> &str {
        &self.group
    }

    /// The topics.
    pub fn topics(&self) -> &[String] {
        &self.topics
    }

    fn error(&self, e: impl Into<weir_runtime::BoxError>) -> Error {
        Error::connector(format!("kafka source {}", self.topics.join(",")), e)
    }

    fn check(&self) -> Result<()> {
        if self.batch_size == 0 {
            return Err(Error::InvalidConfig { field: "batch_size", reason: "must be at least 1".into() });
        }
        if self.topics.is_empty() {
            return Err(Error::InvalidConfig { field: "topics", reason: "name at least one topic".into() });
        }
        if self.topics.len() > usize::from(u16::MAX) {
            return Err(Error::InvalidConfig { field: "topics", reason: "at most 65535 topics".into() });
        }
        if self.writers > 0 && self.bounded {
            return Err(Error::InvalidConfig {
                field: "bounded",
                reason: "a repartition topic is read unbounded (its writers' heartbeats end nothing)".into(),
            });
        }
        if self.writers > WRITER_SPLIT {
            return Err(Error::InvalidConfig { field: "writers", reason: format!("at most {WRITER_SPLIT}") });
        }
        if self.group.is_empty() {
            return Err(Error::InvalidConfig { field: "group", reason: "must not be empty".into() });
        }
        Ok(())
    }

    /// A consumer of the group that joins nothing (assigned partitions only).
    fn client<
        C: rdkafka::consumer::ConsumerContext + 'static,
        K: rdkafka::config::FromClientConfigAndContext<C>,
    >(
        &self,
        context: C,
    ) -> Result<K> {
        let mut c = self.config.client(false)?;
        c.set("group.id", &self.group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("isolation.level", "read_committed")
            .set("auto.offset.reset", "earliest");
        self.config.create(&c, context).map_err(|e| self.error(e))
    }

    /// Every `(topic, partition)` of the source's topics, sorted.
    fn partitions(&self) -> Result<Vec<(u16, i32)>> {
        let mut all = Vec::new();
        for (i, topic) in self.topics.iter().enumerate() {
            let count = self.config.topic_partitions(topic).map_err(|e| self.error(e))?;
            let index = u16::try_from(i).unwrap_or(u16::MAX);
            all.extend((0..count).map(|p| (index, p)));
        }
        all.sort_unstable();
        Ok(all)
    }

    fn open(
        &self,
        subtask: usize,
        parallelism: usize,
        positions: Option<&SplitPositions>,
    ) -> Result<KafkaReader> {
        self.check()?;
        let meta: BaseConsumer = self.client(rdkafka::consumer::DefaultConsumerContext)?;
        let mut mine: Vec<(u16, i32)> = self.partitions()?;
        if let Some(task) = &self.task {
            mine.retain(|&(_, p)| p == task.partition);
        } else {
            mine = mine.into_iter().skip(subtask).step_by(parallelism.max(1)).collect();
        }
        let names: Vec<Arc<str>> = self.topics.iter().map(|t| Arc::from(t.as_str())).collect();
        let mut tpl = TopicPartitionList::new();
        let mut handed = BTreeMap::new();
        let mut ends = BTreeMap::new();
        let mut seen: BTreeMap<u32, BTreeMap<u32, i64>> = BTreeMap::new();
        for &(t, p) in &mine {
            let topic = &self.topics[usize::from(t)];
            let split = split_of(t, p);
            let saved = match positions.map(|s| s.position::<Position>(split)).transpose()?.flatten() {
                Some(pos) if pos.topic == *topic && pos.partition == p => {
                    if !pos.writers.is_empty() {
                        seen.insert(split, pos.writers.into_iter().collect());
                    }
                    Some(pos.offset)
                }
                Some(pos) => {
                    return Err(self.error(format!(
                        "the checkpoint's position for split {split} is for {}/{}, not {topic}/{p}: \
                         the source's topics changed; start from scratch or restore with the same topics",
                        pos.topic, pos.partition
                    )));
                }
                None => None,
            };
            let offset = match (saved, self.start) {
                (Some(o), _) => Offset::Offset(o),
                (None, StartOffset::Earliest) => Offset::Beginning,
                (None, StartOffset::Latest) => Offset::End,
                (None, StartOffset::Committed) => Offset::Stored,
                (None, StartOffset::Timestamp(ms)) => {
                    let mut q = TopicPartitionList::new();
                    q.add_partition_offset(topic, p, Offset::Offset(ms)).map_err(|e| self.error(e))?;
                    let found = meta.offsets_for_times(q, REQUEST_TIMEOUT).map_err(|e| self.error(e))?;
                    found.find_partition(topic, p).map_or(Offset::End, |e| e.offset())
                }
            };
            if let Some(o) = saved {
                handed.insert(split, o);
            }
            tpl.add_partition_offset(topic, p, offset).map_err(|e| self.error(e))?;
            if self.bounded {
                let (low, high) =
                    meta.fetch_watermarks(topic, p, REQUEST_TIMEOUT).map_err(|e| self.error(e))?;
                ends.insert(split, (low, high));
            }
        }
        let lso = self.kafka_metrics().and_then(|m| {
            crate::metrics::watch(
                &m,
                meta,
                mine.iter().map(|&(t, p)| (self.topics[usize::from(t)].as_str(), p)),
            )
        });
        let consumer: StreamConsumer = self.client(rdkafka::consumer::DefaultConsumerContext)?;
        if !mine.is_empty() {
            consumer.assign(&tpl).map_err(|e| self.error(e))?;
        }
        let mut reader = KafkaReader {
            source: self.clone(),
            consumer,
            names,
            partitions: mine.iter().map(|&(t, p)| split_of(t, p)).collect(),
            splits: if self.writers > 0 {
                (0..self.writers).map(|w| WRITER_SPLIT + w).collect()
            } else {
                mine.iter().map(|&(t, p)| split_of(t, p)).collect()
            },
            handed,
            highs: ends.iter().map(|(&s, &(_, high))| (s, high)).collect(),
            seen,
            ends,
            finished: VecDeque::new(),
            queue: VecDeque::new(),
            bytes_read: 0,
            _lso: lso,
        };
        if self.bounded {
            reader.retire_finished();
        }
        reader.replay_heartbeats();
        Ok(reader)
    }

    /// Commits positions to the group (a plain commit, for monitoring: the checkpoint holds
    /// the truth).
    fn commit_positions(&self, positions: &SplitPositions) -> Result<()> {
        let mut tpl = TopicPartitionList::new();
        for (_, bytes) in positions.iter() {
            let pos: Position = weir_runtime::decode(bytes)?;
            tpl.add_partition_offset(&pos.topic, pos.partition, Offset::Offset(pos.offset))
                .map_err(|e| self.error(e))?;
        }
        if tpl.count() == 0 {
            return Ok(());
        }
        let consumer = match self.committer.0.get() {
            Some(c) => c,
            None => {
                let made: BaseConsumer = self.client(rdkafka::consumer::DefaultConsumerContext)?;
                self.committer.0.get_or_init(|| made)
            }
        };
        crate::coordinator::ask(|| consumer.commit(&tpl, CommitMode::Sync)).map_err(|e| self.error(e))?;
        if let Some(m) = self.kafka_metrics() {
            m.committed(
                tpl.elements().iter().filter_map(|e| Some((e.topic(), e.partition(), e.offset().to_raw()?))),
            );
        }
        Ok(())
    }
}

/// A split's checkpointed position: the next offset to read.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Position {
    topic: String,
    partition: i32,
    offset: i64,
    /// A repartition topic's partition: per writer, the newest watermark handed downstream.
    writers: Vec<(u32, i64)>,
}

/// Splits of a repartition topic's writers start here (partitions' splits stay below).
const WRITER_SPLIT: u32 = 1 << 30;

fn split_of(topic: u16, partition: i32) -> u32 {
    (u32::from(topic) << 16) | (partition as u32 & 0xffff)
}

impl Source for KafkaSource {
    type Item = KafkaRecord;
    type Reader = KafkaReader;

    fn name(&self) -> String {
        format!("kafka:{}", self.topics.join(","))
    }

    fn is_bounded(&self) -> bool {
        self.bounded
    }

    fn reader(&self, subtask: usize, parallelism: usize) -> Result<KafkaReader> {
        self.open(subtask, parallelism, None)
    }

    fn reader_at(
        &self,
        subtask: usize,
        parallelism: usize,
        positions: &SplitPositions,
    ) -> Result<KafkaReader> {
        self.open(subtask, parallelism, Some(positions))
    }

    /// Commits the checkpoint's positions to the group, unless a task's transaction commits
    /// them.
    fn commit(&self, positions: &SplitPositions) -> Result<()> {
        match &self.task {
            None => self.commit_positions(positions),
            Some(task) if task.transactional.load(std::sync::atomic::Ordering::SeqCst) => Ok(()),
            Some(task) => {
                let offsets = positions
                    .iter()
                    .map(|(_, bytes)| {
                        weir_runtime::decode::<Position>(bytes).map(|p| (p.topic, p.partition, p.offset))
                    })
                    .collect::<Result<Vec<_>>>()?;
                task.commit(&offsets).map_err(|e| self.error(e))?;
                if let Some(m) = self.kafka_metrics() {
                    m.committed(offsets.iter().map(|(t, p, o)| (t.as_str(), *p, *o)));
                }
                Ok(())
            }
        }
    }

    /// The group's committed offsets on the source's partitions, if any.
    fn committed_progress(&self) -> Result<Option<String>> {
        self.check()?;
        let consumer: BaseConsumer = self.client(rdkafka::consumer::DefaultConsumerContext)?;
        let mut tpl = TopicPartitionList::new();
        for (t, p) in self.partitions()? {
            if self.task.as_ref().is_none_or(|task| task.partition == p) {
                tpl.add_partition(&self.topics[usize::from(t)], p);
            }
        }
        let committed = crate::coordinator::ask(|| consumer.committed_offsets(tpl.clone(), REQUEST_TIMEOUT))
            .map_err(|e| self.error(e))?;
        let found: Vec<String> = committed
            .elements()
            .iter()
            .filter_map(|e| match e.offset() {
                Offset::Offset(o) => Some(format!("{}/{} at {o}", e.topic(), e.partition())),
                _ => None,
            })
            .collect();
        Ok((!found.is_empty())
            .then(|| format!("consumer group {} has committed offsets: {}", self.group, found.join(", "))))
    }
}

/// The reader of one [`KafkaSource`] subtask.
pub struct KafkaReader {
    source: KafkaSource,
    consumer: StreamConsumer,
    names: Vec<Arc<str>>,
    /// The partitions read, as splits.
    partitions: Vec<u32>,
    /// The splits batches carry: the partitions, or a repartition topic's writers.
    splits: Vec<u32>,
    /// Per partition, the offset after the last record handed downstream.
    handed: BTreeMap<u32, i64>,
    /// Bounded mode: per split still read, its (low, high) watermarks at start.
    ends: BTreeMap<u32, (i64, i64)>,
    /// A repartition topic: per partition, per writer, the newest watermark handed downstream
    /// (saved in checkpoints, and handed downstream again on restore as heartbeats, so that a
    /// writer which sends nothing more still counts with the watermark it had reached).
    seen: BTreeMap<u32, BTreeMap<u32, i64>>,
    /// Bounded mode: per split, its high watermark at start (a position never goes past it:
    /// records after it are dropped, and read by the next run).
    highs: BTreeMap<u32, i64>,
    /// Bounded mode: splits read to their end, not reported yet.
    finished: VecDeque<u32>,
    /// Batches read but not handed downstream yet.
    queue: VecDeque<Batch<KafkaRecord>>,
    bytes_read: u64,
    /// Polls the partitions' last stable offsets while the reader lives (with metrics).
    _lso: Option<LsoPoller>,
}

impl std::fmt::Debug for KafkaReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaReader")
            .field("topics", &self.names)
            .field("splits", &self.splits)
            .finish_non_exhaustive()
    }
}

impl KafkaReader {
    fn topic_partition(&self, split: u32) -> (&str, i32) {
        (&self.names[(split >> 16) as usize], (split & 0xffff) as i32)
    }

    /// The consumer's position of every split (past transaction markers), where known.
    fn consumer_positions(&self) -> BTreeMap<u32, i64> {
        let mut at = BTreeMap::new();
        if let Ok(tpl) = self.consumer.position() {
            for e in tpl.elements() {
                if let (Offset::Offset(o), Some(t)) =
                    (e.offset(), self.names.iter().position(|n| &**n == e.topic()))
                {
                    at.insert(split_of(u16::try_from(t).unwrap_or(u16::MAX), e.partition()), o);
                }
            }
        }
        at
    }

    /// Bounded mode, nothing read: a partition whose records up to its end were deleted
    /// (retention, `kafka-delete-records`) before they were read has nothing left to wait for.
    /// Moves it to `finished`, with a warning.
    fn retire_deleted(&mut self) {
        let pending: Vec<(u32, i64)> = self.ends.iter().map(|(&split, &(_, high))| (split, high)).collect();
        for (split, high) in pending {
            let (topic, partition) = self.topic_partition(split);
            let Ok((low, _)) = self.consumer.fetch_watermarks(topic, partition, REQUEST_TIMEOUT) else {
                continue;
            };
            if low >= high {
                tracing::warn!(
                    topic,
                    partition,
                    low,
                    end = high,
                    "records up to the end offset were deleted before they were read"
                );
                self.ends.remove(&split);
                self.finished.push_back(split);
            }
        }
    }

    /// Bounded mode: moves splits read up to their end to `finished`.
    fn retire_finished(&mut self) {
        if self.ends.is_empty() {
            return;
        }
        let at = self.consumer_positions();
        let queued: Vec<u32> = self.queue.iter().map(|b| b.split).collect();
        let done: Vec<u32> = self
            .ends
            .iter()
            .filter(|(split, (low, high))| {
                let pos = self.handed.get(split).copied().max(at.get(split).copied()).unwrap_or(*low);
                !queued.contains(split) && (high <= low || pos >= *high)
            })
            .map(|(s, _)| *s)
            .collect();
        for split in done {
            self.ends.remove(&split);
            self.finished.push_back(split);
        }
    }

    /// Reads what is ready (waiting up to [`WAIT`] for the first record) into the queue.
    async fn fill(&mut self) -> Result<()> {
        let batch_size = self.source.batch_size;
        let first = match tokio::time::timeout(WAIT, self.consumer.recv()).await {
            Err(_) => return Ok(()),
            Ok(Err(e)) => return Err(self.source.error(e)),
            Ok(Ok(m)) => self.convert(&m)?,
        };
        let mut read = vec![first];
        while read.len() < batch_size * 4 {
            match self.consumer.recv().now_or_never() {
                Some(Ok(m)) => read.push(self.convert(&m)?),
                Some(Err(e)) => return Err(self.source.error(e)),
                None => break,
            }
        }
        // Per poll, not per record: group by split (a stable sort keeps each split's order)
        // and cut each split's run into batches.
        let mut read: Vec<Read> = read.into_iter().flatten().collect();
        read.sort_by_key(|r| r.split);
        let mut records = read.into_iter().peekable();
        while let Some(first) = records.next() {
            let (split, mut appended) = (first.split, first.appended_ms);
            let mut batch = Vec::with_capacity(batch_size.min(1024));
            batch.push(first.record);
            while batch.len() < batch_size {
                match records.next_if(|r| r.split == split) {
                    Some(r) => {
                        appended = appended.max(r.appended_ms);
                        batch.push(r.record);
                    }
                    None => break,
                }
            }
            self.bytes_read += batch
                .iter()
                .map(|r| (r.value.len() + r.key.as_ref().map_or(0, Vec::len)) as u64)
                .sum::<u64>();
            let mut batch = Batch::from_split(split, batch);
            batch.set_appended_ms(appended);
            self.queue.push_back(batch);
        }
        Ok(())
    }

    /// A restored repartition reader: a heartbeat per writer with the newest watermark it had
    /// reached, before any record.
    fn replay_heartbeats(&mut self) {
        let mut newest: BTreeMap<u32, (i64, u32)> = BTreeMap::new();
        for (&split, writers) in &self.seen {
            for (&w, &ts) in writers {
                let e = newest.entry(w).or_insert((ts, split));
                if ts > e.0 {
                    *e = (ts, split);
                }
            }
        }
        for (w, (watermark, split)) in newest {
            let (topic, partition) = self.topic_partition(split);
            let heartbeat = KafkaRecord {
                topic: Arc::from(topic),
                partition,
                offset: -1,
                timestamp: None,
                key: None,
                value: Vec::new(),
                headers: vec![
                    (crate::sink::TASK_HEADER.to_owned(), w.to_string().into_bytes()),
                    (crate::sink::HEARTBEAT_HEADER.to_owned(), watermark.to_string().into_bytes()),
                ],
            };
            self.queue.push_back(Batch::from_split(WRITER_SPLIT + w, vec![heartbeat]));
        }
    }

    fn partition_split(&self, topic: &str, partition: i32) -> Option<u32> {
        let t = self.names.iter().position(|n| &**n == topic)?;
        Some(split_of(u16::try_from(t).ok()?, partition))
    }

    fn convert(&self, m: &BorrowedMessage<'_>) -> Result<Option<Read>> {
        let Some(t) = self.names.iter().position(|n| &**n == m.topic()) else { return Ok(None) };
        let record = KafkaRecord::from_message(&self.names[t], m);
        let split = if self.source.writers > 0 {
            let writer = record
                .header(crate::sink::TASK_HEADER)
                .and_then(|w| std::str::from_utf8(w).ok()?.parse::<u32>().ok())
                .filter(|w| *w < self.source.writers);
            let Some(writer) = writer else {
                return Err(self.source.error(format!(
                    "{}: not written by one of the {} writers of a repartition topic (header {})",
                    record.origin(),
                    self.source.writers,
                    crate::sink::TASK_HEADER
                )));
            };
            WRITER_SPLIT + writer
        } else {
            split_of(u16::try_from(t).unwrap_or(u16::MAX), m.partition())
        };
        let appended_ms = match m.timestamp() {
            Timestamp::LogAppendTime(ms) => Some(ms),
            Timestamp::CreateTime(_) | Timestamp::NotAvailable => None,
        };
        Ok(Some(Read { split, record, appended_ms }))
    }
}

/// A record as read, before it is batched.
struct Read {
    split: u32,
    record: KafkaRecord,
    /// The broker's append time, on a topic of `message.timestamp.type=LogAppendTime`: batches
    /// carry their newest ([`Batch::appended_ms`]).
    appended_ms: Option<i64>,
}

impl SourceReader for KafkaReader {
    type Item = KafkaRecord;

    async fn next_batch(&mut self) -> Result<Option<Batch<KafkaRecord>>> {
        loop {
            if let Some(batch) = self.queue.pop_front() {
                if self.source.writers == 0 {
                    if let Some(last) = batch.records.last() {
                        self.handed.insert(batch.split, last.offset + 1);
                    }
                } else {
                    // A writer's batch may hold records of every partition read.
                    let writer = batch.split - WRITER_SPLIT;
                    for r in &batch.records {
                        let Some(split) = self.partition_split(&r.topic, r.partition) else { continue };
                        if r.offset >= 0 {
                            self.handed.insert(split, r.offset + 1);
                        }
                        if let Some(watermark) = r.watermark() {
                            let newest =
                                self.seen.entry(split).or_default().entry(writer).or_insert(watermark);
                            *newest = (*newest).max(watermark);
                        }
                    }
                }
                return Ok(Some(batch));
            }
            if self.source.bounded {
                self.retire_finished();
                if self.ends.is_empty() {
                    return Ok(None);
                }
            } else if self.partitions.is_empty() {
                // No partition: wait for ever (an unbounded source does not end).
                std::future::pending::<()>().await;
            }
            self.fill().await?;
            if self.source.bounded && self.queue.is_empty() {
                self.retire_deleted();
            }
            // Drop records of splits a bounded reader has finished (read past its end).
            if self.source.bounded {
                let ends = &self.ends;
                self.queue.retain_mut(|b| {
                    let Some((_, high)) = ends.get(&b.split) else { return false };
                    b.records.retain(|r| r.offset < *high);
                    !b.records.is_empty()
                });
            }
        }
    }

    fn finished_split(&mut self) -> Option<u32> {
        self.finished.pop_front()
    }

    fn splits(&self) -> Vec<u32> {
        self.splits.clone()
    }

    fn positions(&self) -> Vec<(u32, Vec<u8>)> {
        // A split with nothing queued is at the consumer's position, which is past the
        // transaction markers that follow its last record.
        let at = self.consumer_positions();
        let positions: Vec<(u32, Position)> = self
            .partitions
            .iter()
            .filter_map(|&split| {
                let (topic, partition) = self.topic_partition(split);
                let queued = if self.source.writers == 0 {
                    self.queue.iter().any(|b| b.split == split)
                } else {
                    self.queue
                        .iter()
                        .flat_map(|b| &b.records)
                        .any(|r| r.partition == partition && &*r.topic == topic)
                };
                let handed = self.handed.get(&split).copied();
                let mut offset = if queued { handed } else { handed.max(at.get(&split).copied()) }?;
                if let Some(&high) = self.highs.get(&split) {
                    offset = offset.min(high.max(handed.unwrap_or(0)));
                }
                let writers = self
                    .seen
                    .get(&split)
                    .map(|w| w.iter().map(|(&w, &ts)| (w, ts)).collect())
                    .unwrap_or_default();
                Some((split, Position { topic: topic.to_owned(), partition, offset, writers }))
            })
            .collect();
        if let Some(task) = &self.source.task {
            task.set_positions(
                positions.iter().map(|(_, p)| (p.topic.clone(), p.partition, p.offset)).collect(),
            );
        }
        SplitPositions::encode(positions)
    }

    fn bytes_read(&self) -> u64 {
        self.bytes_read
    }
}
