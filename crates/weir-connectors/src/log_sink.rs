//! The log sink: records appended to a weir-log topic as JSON values (or as the bytes they
//! are), and dead-letter topics.
//!
//! Each batch becomes one [`Topic::send`]: a record's value is its `serde_json` encoding (its
//! bytes with [`LogSink::raw`]; the payload of a dead letter), its key the bytes of the
//! [`LogSink::key_by`] extractor (keyed records go to the partition of their key's hash,
//! keyless ones round-robin), its timestamp the record's event time if the stream assigned one,
//! else the append's wall clock. `Topic::send` is blocking (it may wait for
//! `fdatasync`, per the log's durability), so it runs on tokio's blocking pool; the writer waits
//! for it, so batches keep their order. [`SinkWriter::finish`] flushes the topic.
//!
//! The topic must exist when the writer starts, unless [`LogSink::create_if_missing`] gives the
//! configuration to create it with.
//!
//! # Exactly once, in a checkpointed pipeline
//!
//! The transactional writer appends nothing while records arrive: it encodes them (partition
//! chosen as above; keyless records round-robin per writer, so a replay chooses the same) and
//! holds them. At a checkpoint barrier it hands them over as its committable, which the
//! checkpoint stores durably. Once the checkpoint is complete, [`Sink::commit`] appends them,
//! partition by partition, each record with the header `weir.checkpoint` = `<checkpoint>/<i>`
//! (its index among that checkpoint's records of the partition). Readers therefore only ever
//! see records of complete checkpoints (what Kafka calls `read_committed`, for free), and a
//! restored pipeline never appends twice:
//!
//! - a commit is repeated after a crash (the restore commits the restored checkpoint again): it
//!   reads the partition's last record; if that carries this checkpoint's header with index `i`,
//!   only the records after `i` are appended (an append cut short by the crash is finished); if
//!   it carries a newer checkpoint, nothing is;
//! - records produced after the checkpoint were never appended, and are produced again;
//! - a restore of a checkpoint older than the newest one committed (the newer ones were
//!   damaged or deleted) is refused: the topic holds their records, a log cannot take them
//!   back, and producing them again would append them twice. The error names the partition,
//!   offset and checkpoint; repair or restore the newer checkpoint, or start over (from
//!   scratch, into a new topic).
//!
//! A checkpoint saves the sink's [`Sink::destination`], the log directory's canonical path and
//! the topic: a restore into another log or topic (another working directory, a renamed topic)
//! is refused instead of committing the rest of the output elsewhere.
//!
//! Checkpoint ids keep rising across restarts (a pipeline numbers its checkpoints after the
//! newest one a sink reports with [`Sink::committed_output`]), so a header is never reused.
//!
//! This needs the sink to be the topic's only writer while the pipeline runs. Output becomes
//! visible once per checkpoint (latency: the checkpoint interval), and the records of one
//! interval are held in memory and stored in the checkpoint. Without checkpoints the sink
//! appends every batch as it comes (at least once).
//!
//! # Dead letters
//!
//! [`LogSink::dead_letters`] sends a pipeline's dead letters to the topic `<pipeline>.dlq`
//! (created with one partition if missing) the way Kafka users expect of a dead-letter queue:
//! each record's value is the failed record's payload, byte for byte as the operator saw it
//! (a bad line is stored as the line, a bad JSON value as that value, not as a JSON string
//! holding it), and what happened is in its headers: [`DEAD_LETTER_OPERATOR_HEADER`],
//! [`DEAD_LETTER_ORIGIN_HEADER`] and [`DEAD_LETTER_ERROR_HEADER`] (UTF-8 text). `weir consume
//! <pipeline>.dlq` prints the payloads, `--json` the headers with them.
//!
//! ```no_run
//! # use weir_connectors::LogSink;
//! # fn f(log: weir_log::Log) -> weir_runtime::Result<()> {
//! let p = weir_runtime::Pipeline::builder("clicks").build()?;
//! p.dead_letters(LogSink::dead_letters(&log, p.name())); // topic `clicks.dlq`
//! # Ok(())
//! # }
//! ```
//!
//! # Raw values
//!
//! [`LogSink::raw`] appends records that already are bytes (`String`, `Vec<u8>`, `Bytes`) as
//! they are, without the JSON encoding: a topic of log lines holds the lines.

use std::sync::Arc;

use bytes::Bytes;
use serde::Serialize;
use weir_log::{Header, Log, Record, Topic, TopicConfig};
use weir_runtime::{Batch, DeadLetter, Result, Sink, SinkWriter};

use crate::connector_error;

type KeyFn<T> = Arc<dyn Fn(&T) -> Bytes + Send + Sync>;

/// Writes a record's value into the buffer and its headers (if any) into the vector.
type EncodeFn<T> = fn(&T, &mut Vec<u8>, &mut Vec<Header>) -> serde_json::Result<()>;

fn encode_json<T: Serialize>(record: &T, value: &mut Vec<u8>, _: &mut Vec<Header>) -> serde_json::Result<()> {
    serde_json::to_writer(value, record)
}

fn encode_raw<T: AsRef<[u8]>>(
    record: &T,
    value: &mut Vec<u8>,
    _: &mut Vec<Header>,
) -> serde_json::Result<()> {
    value.extend_from_slice(record.as_ref());
    Ok(())
}

/// The header of a dead letter that names the operator that failed (e.g. `try_map`).
pub const DEAD_LETTER_OPERATOR_HEADER: &str = "weir.dead_letter.operator";
/// The header of a dead letter that says where the failed record came from (`path:line`,
/// `topic/partition@offset`).
pub const DEAD_LETTER_ORIGIN_HEADER: &str = "weir.dead_letter.origin";
/// The header of a dead letter that holds the error.
pub const DEAD_LETTER_ERROR_HEADER: &str = "weir.dead_letter.error";

fn encode_dead_letter(
    letter: &DeadLetter,
    value: &mut Vec<u8>,
    headers: &mut Vec<Header>,
) -> serde_json::Result<()> {
    value.extend_from_slice(letter.payload.as_bytes());
    for (key, text) in [
        (DEAD_LETTER_OPERATOR_HEADER, &letter.operator),
        (DEAD_LETTER_ORIGIN_HEADER, &letter.origin),
        (DEAD_LETTER_ERROR_HEADER, &letter.error),
    ] {
        headers.push(Header { key: key.to_owned(), value: Some(Bytes::copy_from_slice(text.as_bytes())) });
    }
    Ok(())
}

/// Appends records of any `T: Serialize` to a log topic as JSON (or bytes as they are, with
/// [`LogSink::raw`]); see the [module docs](crate::log_sink).
///
/// # Examples
///
/// ```no_run
/// use weir_connectors::{LogSink, LogSource};
/// use weir_runtime::Pipeline;
///
/// # async fn run(log: weir_log::Log) -> weir_runtime::Result<()> {
/// #[derive(serde::Serialize)]
/// struct Click { user: String, page: String }
///
/// let p = Pipeline::builder("copy").build()?;
/// p.source(LogSource::topic(&log, "raw", "copier"))
///     .map(|r| Click { user: r.payload(), page: String::new() })
///     .sink(LogSink::topic(&log, "clicks").key_by(|c: &Click| c.user.clone()));
/// # use weir_runtime::Traceable;
/// # Ok(())
/// # }
/// ```
pub struct LogSink<T> {
    log: Log,
    topic: String,
    create: Option<TopicConfig>,
    key: Option<KeyFn<T>>,
    encode: EncodeFn<T>,
}

impl<T> std::fmt::Debug for LogSink<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogSink")
            .field("topic", &self.topic)
            .field("create", &self.create)
            .field("keyed", &self.key.is_some())
            .finish_non_exhaustive()
    }
}

impl<T> Clone for LogSink<T> {
    fn clone(&self) -> Self {
        LogSink {
            log: self.log.clone(),
            topic: self.topic.clone(),
            create: self.create.clone(),
            key: self.key.clone(),
            encode: self.encode,
        }
    }
}

impl<T: Serialize + Send + 'static> LogSink<T> {
    /// Appends to the existing topic `topic`, keyless, each record's value its JSON encoding.
    pub fn topic(log: &Log, topic: impl Into<String>) -> LogSink<T> {
        LogSink { log: log.clone(), topic: topic.into(), create: None, key: None, encode: encode_json::<T> }
    }
}

impl<T: AsRef<[u8]> + Send + 'static> LogSink<T> {
    /// Appends to the existing topic `topic`, keyless, each record's value its bytes as they
    /// are (a `String` line is stored as the line, not as a JSON string).
    pub fn raw(log: &Log, topic: impl Into<String>) -> LogSink<T> {
        LogSink { log: log.clone(), topic: topic.into(), create: None, key: None, encode: encode_raw::<T> }
    }
}

impl<T: Send + 'static> LogSink<T> {
    /// Keys every record with the bytes of `key(record)`: equal keys go to the same partition.
    /// Default: keyless (round-robin).
    pub fn key_by<K, F>(mut self, key: F) -> Self
    where
        K: AsRef<[u8]>,
        F: Fn(&T) -> K + Send + Sync + 'static,
    {
        self.key = Some(Arc::new(move |t: &T| Bytes::copy_from_slice(key(t).as_ref())));
        self
    }

    /// Creates the topic with `config` if it does not exist when the writer starts. Default:
    /// the topic must exist.
    pub fn create_if_missing(mut self, config: TopicConfig) -> Self {
        self.create = Some(config);
        self
    }

    /// The topic's name.
    pub fn topic_name(&self) -> &str {
        &self.topic
    }
}

impl LogSink<DeadLetter> {
    /// A sink for a pipeline's dead letters (see
    /// [`Pipeline::dead_letters`](weir_runtime::Pipeline::dead_letters)): the topic
    /// [`LogSink::dead_letter_topic`]`(pipeline)`, created with one partition if missing.
    /// Each record's value is the dead letter's payload, its operator, origin and error are
    /// headers (see the module docs).
    pub fn dead_letters(log: &Log, pipeline: &str) -> LogSink<DeadLetter> {
        LogSink {
            log: log.clone(),
            topic: LogSink::dead_letter_topic(pipeline),
            create: Some(TopicConfig::default()),
            key: None,
            encode: encode_dead_letter,
        }
    }

    /// The dead-letter topic of a pipeline: `<pipeline>.dlq`, with every character a topic name
    /// cannot hold (anything but `[a-zA-Z0-9._-]`) replaced by `_`, cut to the longest topic
    /// name.
    pub fn dead_letter_topic(pipeline: &str) -> String {
        let max = weir_log::MAX_NAME_LEN - ".dlq".len();
        let mut name: String = pipeline
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') { c } else { '_' })
            .take(max)
            .collect();
        if name.is_empty() {
            name.push('_');
        }
        name.push_str(".dlq");
        name
    }
}

impl<T: Send + 'static> Sink<T> for LogSink<T> {
    type Writer = LogWriter<T>;

    fn name(&self) -> String {
        format!("log:{}", self.topic)
    }

    fn writer(&self, _: usize, _: usize) -> Result<LogWriter<T>> {
        Ok(LogWriter {
            topic: self.open()?,
            key: self.key.clone(),
            encode: self.encode,
            scratch: Vec::new(),
            written: 0,
            held: None,
        })
    }

    fn transactional_writer(&self, subtask: usize, _: usize) -> Result<LogWriter<T>> {
        let mut writer = self.writer(subtask, 0)?;
        writer.held = Some(Held { records: Vec::new(), next_keyless: subtask as u32 });
        Ok(writer)
    }

    fn commit(&self, checkpoint: u64, committables: &[Vec<u8>]) -> Result<()> {
        let topic = self.open()?;
        let error = |e: weir_log::Error| connector_error("log sink", &self.topic, e);
        let mut by_partition: std::collections::BTreeMap<u32, Vec<HeldRecord>> = Default::default();
        for c in committables {
            for r in weir_runtime::decode::<Vec<HeldRecord>>(c)? {
                by_partition.entry(r.partition).or_default().push(r);
            }
        }
        for (partition, records) in by_partition {
            let done = committed_upto(&topic, partition, checkpoint).map_err(error)?;
            let records: Vec<Record> = records
                .into_iter()
                .enumerate()
                .skip(done)
                .map(|(i, r)| {
                    let mut headers: Vec<Header> = r
                        .headers
                        .into_iter()
                        .map(|(key, value)| Header { key, value: value.map(Bytes::from) })
                        .collect();
                    headers.push(Header {
                        key: CHECKPOINT_HEADER.to_owned(),
                        value: Some(Bytes::from(format!("{checkpoint}/{i}"))),
                    });
                    Record {
                        key: r.key.map(Bytes::from),
                        value: Bytes::from(r.value),
                        headers,
                        timestamp: r.timestamp,
                    }
                })
                .collect();
            if !records.is_empty() {
                topic.append(partition, &records).map_err(error)?;
            }
        }
        topic.flush().map_err(error)
    }

    /// Nothing to discard (uncommitted records were never appended); refuses like
    /// [`Sink::check_restore`] if called alone.
    fn discard_uncommitted(&self, restored: Option<u64>) -> Result<()> {
        Sink::<T>::check_restore(self, restored)
    }

    /// Refuses a restore of checkpoint `r` when a partition's last record was committed by a
    /// newer checkpoint (see the [module docs](crate::log_sink)).
    fn check_restore(&self, restored: Option<u64>) -> Result<()> {
        let Some(r) = restored else { return Ok(()) };
        let Some(Mark { partition, checkpoint: id, offset, .. }) = self.newest_mark()? else { return Ok(()) };
        if id <= r {
            return Ok(());
        }
        Err(connector_error(
            "log sink",
            &self.topic,
            format!(
                "partition {partition} holds records committed by checkpoint {id} (its last, at offset \
                 {offset}), newer than the restored checkpoint {r}: a topic cannot be rolled back, so \
                 restoring {r} would append that output a second time. Repair or restore checkpoint \
                 {id}, or start over from scratch into a new topic"
            ),
        ))
    }

    /// The log directory (canonical, else absolute) and the topic: `log <dir>, topic <topic>`.
    fn destination(&self) -> Option<String> {
        let dir = self.log.dir();
        let dir = dir.canonicalize().unwrap_or_else(|_| crate::file_commit::absolute(dir.to_path_buf()));
        Some(format!("log {}, topic {}", dir.display(), self.topic))
    }

    fn committed_output(&self) -> Result<Option<weir_runtime::CommittedOutput>> {
        Ok(self.newest_mark()?.map(|Mark { partition, checkpoint: id, offset, .. }| {
            weir_runtime::CommittedOutput::new(
                Some(id),
                format!(
                    "topic {} partition {partition}: records committed by checkpoint {id} (up to offset {offset})",
                    self.topic
                ),
            )
        }))
    }
}

impl<T> LogSink<T> {
    /// The newest [`CHECKPOINT_HEADER`] a partition's last record carries; `None` if no
    /// partition ends with one (or the topic does not exist yet).
    fn newest_mark(&self) -> Result<Option<Mark>> {
        let topic = match self.log.topic(&self.topic) {
            Ok(t) => t,
            Err(weir_log::Error::UnknownTopic(_)) => return Ok(None),
            Err(e) => return Err(connector_error("log sink", &self.topic, e)),
        };
        let mut newest = None;
        for partition in 0..topic.partition_count() {
            let mark =
                last_mark(&topic, partition).map_err(|e| connector_error("log sink", &self.topic, e))?;
            if let Some(m) = mark
                && newest.is_none_or(|n: Mark| m.checkpoint > n.checkpoint)
            {
                newest = Some(m);
            }
        }
        Ok(newest)
    }
}

/// The header that marks records a checkpoint committed: `<checkpoint>/<index>`.
pub const CHECKPOINT_HEADER: &str = "weir.checkpoint";

/// The [`CHECKPOINT_HEADER`] of a partition's last record.
#[derive(Debug, Clone, Copy)]
struct Mark {
    partition: u32,
    /// The checkpoint that committed it.
    checkpoint: u64,
    /// Its index among that checkpoint's records of the partition.
    index: usize,
    /// Its offset.
    offset: u64,
}

/// The mark of the last record of `partition`; `None` if the partition is empty or its last
/// record has no [`CHECKPOINT_HEADER`].
fn last_mark(topic: &Topic, partition: u32) -> weir_log::Result<Option<Mark>> {
    let end = topic.end_offset(partition)?;
    if end == topic.start_offset(partition)? {
        return Ok(None);
    }
    let last = topic.read(partition, end - 1, 1)?.into_iter().rfind(|r| r.offset == end - 1);
    Ok(last.and_then(|r| {
        let h = r.headers.into_iter().find(|h| h.key == CHECKPOINT_HEADER)?;
        let text = String::from_utf8(h.value?.to_vec()).ok()?;
        let (id, index) = text.split_once('/')?;
        Some(Mark { partition, checkpoint: id.parse().ok()?, index: index.parse().ok()?, offset: end - 1 })
    }))
}

/// How many records of `checkpoint` partition `partition` already holds, judged by its last
/// record's [`CHECKPOINT_HEADER`] (`usize::MAX` when a newer checkpoint was committed after).
fn committed_upto(topic: &Topic, partition: u32, checkpoint: u64) -> weir_log::Result<usize> {
    let mark = last_mark(topic, partition)?.map(|m| (m.checkpoint, m.index));
    Ok(match mark {
        Some((id, _)) if id > checkpoint => usize::MAX,
        Some((id, index)) if id == checkpoint => index + 1,
        _ => 0,
    })
}

impl<T> LogSink<T> {
    fn open(&self) -> Result<Topic> {
        match &self.create {
            Some(config) => self.log.topic_or_create(&self.topic, config.clone()),
            None => self.log.topic(&self.topic),
        }
        .map_err(|e| connector_error("log sink", &self.topic, e))
    }
}

/// A record a transactional writer holds until its checkpoint commits.
#[derive(serde::Serialize, serde::Deserialize)]
struct HeldRecord {
    partition: u32,
    key: Option<Vec<u8>>,
    value: Vec<u8>,
    headers: Vec<(String, Option<Vec<u8>>)>,
    timestamp: Option<i64>,
}

/// What a transactional writer holds since the last barrier.
struct Held {
    records: Vec<HeldRecord>,
    next_keyless: u32,
}

/// The writer of one [`LogSink`] subtask.
pub struct LogWriter<T> {
    topic: Topic,
    key: Option<KeyFn<T>>,
    encode: EncodeFn<T>,
    scratch: Vec<u8>,
    /// Bytes of the serialized values sent.
    written: u64,
    /// A transactional writer's records since the last barrier.
    held: Option<Held>,
}

impl<T> std::fmt::Debug for LogWriter<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogWriter").field("topic", &self.topic.name()).finish_non_exhaustive()
    }
}

impl<T> LogWriter<T> {
    fn error(&self, e: impl Into<weir_runtime::BoxError>) -> weir_runtime::Error {
        connector_error("log sink", self.topic.name(), e)
    }

    /// Runs a blocking call on the topic on tokio's blocking pool.
    async fn blocking<R: Send + 'static>(
        &self,
        f: impl FnOnce(&Topic) -> weir_log::Result<R> + Send + 'static,
    ) -> Result<R> {
        let topic = self.topic.clone();
        match tokio::task::spawn_blocking(move || f(&topic)).await {
            Ok(result) => result.map_err(|e| self.error(e)),
            Err(e) => Err(self.error(crate::Failed::new("append task failed", e))),
        }
    }
}

impl<T: Send + 'static> SinkWriter<T> for LogWriter<T> {
    async fn write_batch(&mut self, batch: Batch<T>) -> Result<()> {
        let mut records = Vec::with_capacity(batch.len());
        for (i, r) in batch.records.iter().enumerate() {
            self.scratch.clear();
            let mut headers = Vec::new();
            if let Err(e) = (self.encode)(r, &mut self.scratch, &mut headers) {
                return Err(self.error(crate::Failed::new("serialize record as JSON", e)));
            }
            self.written += self.scratch.len() as u64;
            let mut record = Record::new(Bytes::copy_from_slice(&self.scratch));
            record.headers = headers;
            if let Some(key) = &self.key {
                record.key = Some(key(r));
            }
            record.timestamp = batch.timestamp(i);
            records.push(record);
        }
        if let Some(held) = &mut self.held {
            let partitions = self.topic.partition_count();
            for r in records {
                let partition = match &r.key {
                    Some(k) => weir_log::partition_for_key(k, partitions),
                    None => {
                        held.next_keyless = held.next_keyless.wrapping_add(1);
                        held.next_keyless % partitions.max(1)
                    }
                };
                held.records.push(HeldRecord {
                    partition,
                    key: r.key.map(|k| k.to_vec()),
                    value: r.value.to_vec(),
                    headers: r.headers.into_iter().map(|h| (h.key, h.value.map(|v| v.to_vec()))).collect(),
                    timestamp: r.timestamp,
                });
            }
            return Ok(());
        }
        if records.is_empty() {
            return Ok(());
        }
        self.blocking(move |topic| topic.send(&records)).await.map(drop)
    }

    async fn finish(&mut self) -> Result<()> {
        self.blocking(Topic::flush).await
    }

    async fn pre_commit(&mut self, _checkpoint: u64) -> Result<Option<Vec<u8>>> {
        match &mut self.held {
            Some(held) if !held.records.is_empty() => {
                let records = std::mem::take(&mut held.records);
                weir_runtime::encode(&records).map(Some)
            }
            _ => Ok(None),
        }
    }

    fn bytes_written(&self) -> u64 {
        self.written
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dead_letter_topics_are_valid_names() {
        assert_eq!(LogSink::dead_letter_topic("clicks"), "clicks.dlq");
        assert_eq!(LogSink::dead_letter_topic("log analytics/v2"), "log_analytics_v2.dlq");
        assert_eq!(LogSink::dead_letter_topic(""), "_.dlq");
        let long = LogSink::dead_letter_topic(&"x".repeat(500));
        assert_eq!(long.len(), weir_log::MAX_NAME_LEN);
        assert!(long.ends_with(".dlq"));
    }
}
