//! The log source: a weir-log topic read by a consumer group.
//!
//! # Partitions and splits
//!
//! Subtask `i` of `p` reads partitions `i, i + p, i + 2p, …` of the topic with a manually
//! assigned consumer ([`ConsumerConfig::partitions`]) that starts from, and commits to, the
//! group's offsets. Each batch holds records of one partition, and its `split` is the partition
//! number, so event time is tracked per partition. A subtask with no partition (more subtasks
//! than partitions) ends at once. On a topic that stores append times
//! ([`TimestampType::LogAppendTime`]), each batch carries its newest record's
//! ([`Batch::appended_ms`]), from which downstream operators measure how long after the append
//! their output is (a feature view's freshness).
//!
//! A partition the group has no committed offset for starts at the reset policy's offset:
//! [`AutoOffsetReset::Earliest`] by default here (a new pipeline reads the topic's history;
//! Kafka's consumer defaults to `Latest`).
//!
//! # Commits
//!
//! A poll returns up to 1 MiB of records, cut into batches of at most `batch_size`. The
//! consumer's positions are committed when the last batch of a poll has been handed downstream
//! — that is, at the start of the next `next_batch` call, since the runtime pushes a batch
//! through the subtask's fused operators before asking for another — and before polling again.
//! Committed offsets therefore trail the records handed downstream by at most one poll: records
//! handed downstream but not yet committed when a job stops are read again by the next run
//! (at-least-once). A commit is a durable write (fsync, rename), made as a blocking call on
//! the task once per poll.
//!
//! # In a checkpointed pipeline
//!
//! The reader commits nothing itself. Its positions — per partition, the offset after the last
//! record handed downstream — go into every checkpoint, and only a complete checkpoint commits
//! them to the group ([`Source::commit`]): the group's offsets never run ahead of the state
//! built from the records. A restored reader seeks each partition to the checkpoint's position
//! (the partitions may be spread over another number of subtasks); a partition without one
//! starts from the group's offset.
//!
//! # Bounded mode
//!
//! With [`LogSource::bounded`], each subtask notes its partitions' end offsets when it starts
//! and stops when it has handed downstream and committed everything below them; records
//! appended later are left for the next run. Without it the source tails the topic for ever,
//! waking as soon as an append publishes records ([`Consumer::poll`]).

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde::de::DeserializeOwned;
use weir_log::{AutoOffsetReset, Consumer, ConsumerConfig, Header, Log, TimestampType};
use weir_runtime::{Batch, Result, Source, SourceReader, SplitPositions, Traceable};

use crate::parse::ParseError;
use crate::{DEFAULT_BATCH_SIZE, check_batch_size, connector_error};

/// How long one wait for records lasts before the reader waits again.
const POLL_TIMEOUT: Duration = Duration::from_secs(1);

/// A record read from a log topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRecord {
    /// The topic.
    pub topic: Arc<str>,
    /// The partition.
    pub partition: u32,
    /// The record's offset in its partition.
    pub offset: u64,
    /// Milliseconds since the Unix epoch, as stored.
    pub timestamp: i64,
    /// The key.
    pub key: Option<Bytes>,
    /// The value.
    pub value: Bytes,
    /// The headers, in order.
    pub headers: Vec<Header>,
}

impl LogRecord {
    /// Parses the value as JSON into `T` (what [`LogSink`](crate::LogSink) writes), for
    /// `try_map(LogRecord::parse_json::<T>)`.
    ///
    /// # Errors
    ///
    /// [`ParseError::Json`].
    pub fn parse_json<T: DeserializeOwned>(&self) -> std::result::Result<T, ParseError> {
        serde_json::from_slice(&self.value).map_err(ParseError::Json)
    }
}

impl Traceable for LogRecord {
    /// `topic/partition@offset`, e.g. `orders/2@1041`.
    fn origin(&self) -> String {
        format!("{}/{}@{}", self.topic, self.partition, self.offset)
    }

    /// The value as UTF-8 (invalid bytes replaced by U+FFFD).
    fn payload(&self) -> String {
        String::from_utf8_lossy(&self.value).into_owned()
    }
}

/// Reads a topic of a [`Log`] as a consumer group; see the [module docs](crate::log_source).
///
/// # Examples
///
/// ```no_run
/// use weir_connectors::{LogRecord, LogSource, StdoutSink};
/// use weir_runtime::Pipeline;
///
/// # async fn run(log: weir_log::Log) -> weir_runtime::Result<()> {
/// #[derive(serde::Deserialize, serde::Serialize)]
/// struct Order { id: u64, amount: f64 }
///
/// let p = Pipeline::builder("orders").build()?;
/// p.source(LogSource::topic(&log, "orders", "orders-report").bounded())
///     .try_map(LogRecord::parse_json::<Order>)
///     .sink(StdoutSink::json());
/// p.run().await?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct LogSource {
    log: Log,
    topic: String,
    group: String,
    bounded: bool,
    batch_size: usize,
    reset: AutoOffsetReset,
}

impl LogSource {
    /// Reads `topic` as a member of consumer group `group`: unbounded, from the group's
    /// committed offsets (else the earliest), in batches of 1024.
    pub fn topic(log: &Log, topic: impl Into<String>, group: impl Into<String>) -> LogSource {
        LogSource {
            log: log.clone(),
            topic: topic.into(),
            group: group.into(),
            bounded: false,
            batch_size: DEFAULT_BATCH_SIZE,
            reset: AutoOffsetReset::Earliest,
        }
    }

    /// Stops at the end offsets the partitions have when the source starts. Default: unbounded.
    pub fn bounded(mut self) -> Self {
        self.bounded = true;
        self
    }

    /// Most records per batch (at least 1, checked when the source starts). Default: 1024.
    pub fn batch_size(mut self, n: usize) -> Self {
        self.batch_size = n;
        self
    }

    /// Where to start in a partition without a usable committed offset. Default:
    /// [`AutoOffsetReset::Earliest`].
    pub fn auto_offset_reset(mut self, reset: AutoOffsetReset) -> Self {
        self.reset = reset;
        self
    }

    fn error(&self, e: impl Into<weir_runtime::BoxError>) -> weir_runtime::Error {
        connector_error("log source", format_args!("{} (group {})", self.topic, self.group), e)
    }
}

impl Source for LogSource {
    type Item = LogRecord;
    type Reader = LogReader;

    fn name(&self) -> String {
        format!("log:{}", self.topic)
    }

    fn is_bounded(&self) -> bool {
        self.bounded
    }

    fn reader(&self, subtask: usize, parallelism: usize) -> Result<LogReader> {
        self.open(subtask, parallelism, None)
    }

    fn reader_at(&self, subtask: usize, parallelism: usize, positions: &SplitPositions) -> Result<LogReader> {
        self.open(subtask, parallelism, Some(positions))
    }

    fn commit(&self, positions: &SplitPositions) -> Result<()> {
        let mut offsets = Vec::new();
        for (partition, position) in positions.iter() {
            offsets.push((partition, weir_runtime::decode::<u64>(position)?));
        }
        let config = ConsumerConfig::new(self.topic.clone())
            .group(self.group.clone())
            .partitions(offsets.iter().map(|(p, _)| *p))
            .auto_offset_reset(self.reset);
        let mut consumer = self.log.consumer(config).map_err(|e| self.error(e))?;
        for (partition, offset) in offsets {
            consumer.seek(&self.topic, partition, offset).map_err(|e| self.error(e))?;
        }
        consumer.commit().map_err(|e| self.error(crate::Failed::new("commit", e)))
    }

    /// The group's committed offsets on the topic, if it has any: a checkpointed pipeline
    /// without a checkpoint to restore then refuses to start (see
    /// [`Source::committed_progress`]).
    fn committed_progress(&self) -> Result<Option<String>> {
        let groups = self.log.list_groups().map_err(|e| self.error(e))?;
        if !groups.contains(&self.group) {
            return Ok(None);
        }
        let group = self.log.describe_group(&self.group).map_err(|e| self.error(e))?;
        let committed: Vec<String> = group
            .partitions
            .iter()
            .filter(|p| p.topic == self.topic)
            .filter_map(|p| p.committed.map(|offset| format!("partition {} at {offset}", p.partition)))
            .collect();
        Ok((!committed.is_empty()).then(|| {
            format!(
                "consumer group {} has committed offsets on topic {}: {}",
                self.group,
                self.topic,
                committed.join(", ")
            )
        }))
    }
}

impl LogSource {
    /// The reader of a subtask; `positions` in a checkpointed pipeline.
    fn open(
        &self,
        subtask: usize,
        parallelism: usize,
        positions: Option<&SplitPositions>,
    ) -> Result<LogReader> {
        check_batch_size(self.batch_size)?;
        let topic = self.log.topic(&self.topic).map_err(|e| self.error(e))?;
        let step = u32::try_from(parallelism.max(1)).unwrap_or(u32::MAX);
        let first = u32::try_from(subtask).unwrap_or(u32::MAX);
        let partitions: Vec<u32> = (first..topic.partition_count()).step_by(step as usize).collect();
        let ends = if self.bounded {
            let ends = partitions
                .iter()
                .map(|&p| topic.end_offset(p).map(|end| (p, end)))
                .collect::<weir_log::Result<BTreeMap<u32, u64>>>()
                .map_err(|e| self.error(e))?;
            Some(ends)
        } else {
            None
        };
        let mut reader = LogReader {
            source: self.clone(),
            consumer: None,
            partitions,
            ends,
            queue: VecDeque::new(),
            uncommitted: false,
            finished: Vec::new(),
            bytes_read: 0,
            checkpointed: positions.is_some(),
            handed: BTreeMap::new(),
            append_time: topic.config().timestamp_type == TimestampType::LogAppendTime,
        };
        if !reader.partitions.is_empty() {
            let mut consumer = reader.consume(reader.partitions.clone())?;
            for &p in &reader.partitions {
                let saved = positions.and_then(|s| s.get(p)).map(weir_runtime::decode::<u64>).transpose()?;
                if let Some(offset) = saved {
                    consumer.seek(&self.topic, p, offset).map_err(|e| self.error(e))?;
                }
                if let Some(at) = consumer.position(&self.topic, p) {
                    reader.handed.insert(p, at);
                }
            }
            reader.consumer = Some(consumer);
        }
        Ok(reader)
    }
}

/// The reader of one [`LogSource`] subtask: a consumer of its partitions.
pub struct LogReader {
    source: LogSource,
    consumer: Option<Consumer>,
    /// The partitions still read.
    partitions: Vec<u32>,
    /// Bounded mode: where each partition stops.
    ends: Option<BTreeMap<u32, u64>>,
    /// Batches of the last poll not handed downstream yet.
    queue: VecDeque<Batch<LogRecord>>,
    /// Records were handed downstream since the last commit.
    uncommitted: bool,
    /// Bounded mode: partitions read to their end and not reported yet.
    finished: Vec<u32>,
    /// Bytes of the keys and values read.
    bytes_read: u64,
    /// In a checkpointed pipeline: commits wait for checkpoints.
    checkpointed: bool,
    /// Per partition, the offset after the last record handed downstream (the position a
    /// checkpoint saves).
    handed: BTreeMap<u32, u64>,
    /// The topic stores append times ([`TimestampType::LogAppendTime`]): each batch carries
    /// its newest record's ([`Batch::appended_ms`]).
    append_time: bool,
}

impl std::fmt::Debug for LogReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogReader")
            .field("topic", &self.source.topic)
            .field("group", &self.source.group)
            .field("partitions", &self.partitions)
            .finish_non_exhaustive()
    }
}

impl LogReader {
    fn consume(&self, partitions: Vec<u32>) -> Result<Consumer> {
        let s = &self.source;
        let config = ConsumerConfig::new(s.topic.clone())
            .group(s.group.clone())
            .partitions(partitions)
            .auto_offset_reset(s.reset);
        s.log.consumer(config).map_err(|e| s.error(e))
    }

    fn commit(&mut self) -> Result<()> {
        if self.checkpointed {
            self.uncommitted = false;
            return Ok(());
        }
        if let Some(c) = self.consumer.as_mut() {
            c.commit().map_err(|e| self.source.error(crate::Failed::new("commit", e)))?;
        }
        self.uncommitted = false;
        Ok(())
    }

    /// Bounded mode: drops the partitions read to their end, with a consumer for the rest (so
    /// finished partitions are not read again). Whether any partition is left.
    fn retire_finished(&mut self) -> Result<bool> {
        let (Some(ends), Some(consumer)) = (&self.ends, &self.consumer) else {
            return Ok(!self.partitions.is_empty());
        };
        let topic = &self.source.topic;
        let left: Vec<u32> = self
            .partitions
            .iter()
            .copied()
            .filter(|p| consumer.position(topic, *p).unwrap_or(u64::MAX) < ends.get(p).copied().unwrap_or(0))
            .collect();
        if left.len() != self.partitions.len() {
            // The finished partitions' final positions must be committed before their
            // consumer goes.
            // The new consumer continues where the old one was (in a checkpointed pipeline
            // the group's offsets trail behind).
            let at: Vec<(u32, Option<u64>)> =
                left.iter().map(|&p| (p, consumer.position(topic, p))).collect();
            let topic = topic.clone();
            self.commit()?;
            self.consumer = None;
            self.finished.extend(self.partitions.iter().filter(|p| !left.contains(p)));
            if !left.is_empty() {
                let mut consumer = self.consume(left.clone())?;
                for (p, offset) in at {
                    if let Some(offset) = offset {
                        consumer.seek(&topic, p, offset).map_err(|e| self.source.error(e))?;
                    }
                }
                self.consumer = Some(consumer);
            }
            self.partitions = left;
        }
        Ok(!self.partitions.is_empty())
    }

    /// Turns one poll's records into batches, cutting bounded partitions at their end.
    fn enqueue(&mut self, polled: Vec<weir_log::ConsumedBatch>) -> Result<()> {
        let size = self.source.batch_size;
        for consumed in polled {
            let partition = consumed.partition;
            let mut records = consumed.records;
            let end = self.ends.as_ref().and_then(|e| e.get(&partition)).copied();
            if let Some(end) = end
                && records.last().is_some_and(|r| r.offset >= end)
            {
                records.retain(|r| r.offset < end);
                // Not handed downstream: the position must not pass them.
                if let Some(c) = self.consumer.as_mut() {
                    c.seek(&consumed.topic, partition, end).map_err(|e| self.source.error(e))?;
                }
            }
            self.bytes_read += records
                .iter()
                .map(|r| (r.key.as_ref().map_or(0, |k| k.len()) + r.value.len()) as u64)
                .sum::<u64>();
            let mut records = records.into_iter().map(|r| LogRecord {
                topic: consumed.topic.clone(),
                partition,
                offset: r.offset,
                timestamp: r.timestamp,
                key: r.key,
                value: r.value,
                headers: r.headers,
            });
            loop {
                let chunk: Vec<LogRecord> = records.by_ref().take(size).collect();
                if chunk.is_empty() {
                    break;
                }
                let mut batch = Batch::from_split(partition, chunk);
                if self.append_time {
                    batch.set_appended_ms(batch.records.iter().map(|r| r.timestamp).max());
                }
                self.queue.push_back(batch);
            }
        }
        Ok(())
    }
}

impl SourceReader for LogReader {
    type Item = LogRecord;

    async fn next_batch(&mut self) -> Result<Option<Batch<LogRecord>>> {
        loop {
            if let Some(batch) = self.queue.pop_front() {
                self.uncommitted = true;
                if let Some(last) = batch.records.last() {
                    self.handed.insert(batch.split, last.offset + 1);
                }
                return Ok(Some(batch));
            }
            // Everything polled so far has been handed downstream.
            if self.uncommitted {
                self.commit()?;
            }
            if !self.retire_finished()? {
                return Ok(None);
            }
            let Some(consumer) = self.consumer.as_mut() else { return Ok(None) };
            let polled = consumer.poll(POLL_TIMEOUT).await.map_err(|e| self.source.error(e))?;
            self.enqueue(polled)?;
        }
    }

    fn finished_split(&mut self) -> Option<u32> {
        self.finished.pop()
    }

    fn bytes_read(&self) -> u64 {
        self.bytes_read
    }

    fn splits(&self) -> Vec<u32> {
        self.partitions.clone()
    }

    fn positions(&self) -> Vec<(u32, Vec<u8>)> {
        self.handed.iter().filter_map(|(p, at)| weir_runtime::encode(at).ok().map(|e| (*p, e))).collect()
    }
}
