//! The log's error type.
//!
//! Every variant names what failed and with which input (path, topic, partition, offset), so an
//! error printed at the top of a program is enough to act on. Variants split into the caller's
//! mistakes (bad names, bad configuration, unknown topics, offsets out of range) and the
//! environment's failures (I/O, corruption found on disk, a poisoned partition).

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use crate::topic::RecordPosition;

/// The log's `Result` alias.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the log.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An operating-system call on a file or directory failed (permission denied, disk full, …).
    #[error("{op} {path}: {source}")]
    Io {
        /// What the log was doing, e.g. "append to segment".
        op: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// A topic or group name breaks the naming rule (`[a-zA-Z0-9._-]`, 1–249 characters, not `.`
    /// or `..`).
    #[error("invalid {kind} name {name:?}: {reason}")]
    InvalidName {
        /// `"topic"` or `"group"`.
        kind: &'static str,
        /// The name as given.
        name: String,
        /// Which part of the rule it breaks.
        reason: &'static str,
    },

    /// A configuration value is out of range; `field` names the setting.
    #[error("invalid configuration: {field}: {reason}")]
    InvalidConfig {
        /// The configuration field, e.g. `"partitions"`.
        field: &'static str,
        /// Why the value is rejected.
        reason: String,
    },

    /// `create_topic` named a topic that already exists.
    #[error("topic {0:?} already exists")]
    TopicExists(String),

    /// The topic does not exist (or was deleted).
    #[error("unknown topic {0:?}")]
    UnknownTopic(String),

    /// The group has neither committed offsets nor members.
    #[error("unknown consumer group {0:?}")]
    UnknownGroup(String),

    /// The group has live members (consumers in this process), so it cannot be deleted.
    #[error("consumer group {group:?} has {members} live member(s); stop its consumers first")]
    GroupActive {
        /// The group.
        group: String,
        /// How many members it has.
        members: usize,
    },

    /// The partition number is not below the topic's partition count.
    #[error("topic {topic:?} has {partitions} partitions; there is no partition {partition}")]
    UnknownPartition {
        /// The topic.
        topic: String,
        /// The partition asked for.
        partition: u32,
        /// How many partitions the topic has.
        partitions: u32,
    },

    /// The offset is outside `[earliest, latest]` for the partition. Offsets below `earliest` were
    /// removed by retention.
    #[error(
        "offset {offset} is out of range for {topic}/{partition}: available offsets are {earliest}..={latest}"
    )]
    OffsetOutOfRange {
        /// The topic.
        topic: String,
        /// The partition.
        partition: u32,
        /// The offset asked for.
        offset: u64,
        /// The log start offset: the earliest offset still stored.
        earliest: u64,
        /// The log end offset: the offset the next record will get.
        latest: u64,
    },

    /// Stored data failed verification (CRC mismatch, impossible header, a missing segment) where
    /// the log expected intact data. The records at offsets `offset..end_offset` are lost: they
    /// are not returned, and nothing is skipped silently (see
    /// [`ConsumerConfig::on_damage`](crate::ConsumerConfig::on_damage) and
    /// [`Topic::read_skipping_damage`](crate::Topic::read_skipping_damage) to read past them).
    #[error(
        "corrupt data in {topic}/{partition}: offsets {offset}..{end_offset} lost ({path}, bytes {position}..{end_position}): {reason}"
    )]
    Corrupt {
        /// The topic.
        topic: String,
        /// The partition.
        partition: u32,
        /// The first offset of the damaged range.
        offset: u64,
        /// The first offset after the damaged range (the next intact record's).
        end_offset: u64,
        /// The segment file, or the partition directory when no file holds the offsets.
        path: PathBuf,
        /// The byte position in the segment file where the damage starts.
        position: u64,
        /// The byte position where the next intact batch starts (or the end of the file).
        end_position: u64,
        /// What check failed.
        reason: String,
    },

    /// A single record does not fit in a batch of the configured maximum size.
    #[error("record of {size} bytes exceeds the maximum batch size of {max} bytes ({topic}/{partition})")]
    RecordTooLarge {
        /// The topic.
        topic: String,
        /// The partition.
        partition: u32,
        /// The encoded size of the record.
        size: usize,
        /// `TopicConfig::max_batch_bytes`.
        max: usize,
    },

    /// An earlier `fdatasync` or failed write left the partition's on-disk state unknown, so it
    /// refuses further appends. Reopen the log to recover it from disk.
    #[error("{topic}/{partition} refuses writes after an earlier I/O failure; reopen the log to recover")]
    Poisoned {
        /// The topic.
        topic: String,
        /// The partition.
        partition: u32,
    },

    /// Another process (or another `Log` in this process) holds the directory's lock (an OS lock
    /// on the directory itself: deleting `.lock` does not release it).
    #[error("log directory {} is in use by {}", dir.display(), match pid { Some(pid) => format!("process {pid}"), None => "another process".to_owned() })]
    Locked {
        /// The log directory.
        dir: PathBuf,
        /// The process holding the lock, as it wrote its id into `.lock` (`None` if it could
        /// not be read: an older version, or the owner is still starting).
        pid: Option<u32>,
    },

    /// A change was asked of a log opened read-only ([`Log::open_read_only`](crate::Log::open_read_only)):
    /// appends, topic and group changes, commits need the directory's lock.
    #[error("log directory {} is open read-only: cannot {op}", dir.display())]
    ReadOnly {
        /// The log directory.
        dir: PathBuf,
        /// What was asked, e.g. "append".
        op: &'static str,
    },

    /// The topic's files exist but it could not be opened when the log was (unreadable
    /// configuration, unreadable partition): the log's other topics work, this one fails with
    /// this error until it is repaired (then reopen the log) or deleted with
    /// [`Log::delete_topic`](crate::Log::delete_topic).
    #[error("topic {topic:?} could not be opened: {source}")]
    TopicUnavailable {
        /// The topic.
        topic: String,
        /// Why opening it failed.
        #[source]
        source: Arc<Error>,
    },

    /// An append or send failed part-way: the records in `appended` are in the log (whole,
    /// valid, with these positions; readable unless the partition is poisoned), the others of
    /// the call are not. Retry only the records missing from `appended`.
    #[error("{} of {total} records were appended to topic {topic:?} before an error: {source}", appended.len())]
    PartiallyAppended {
        /// The topic.
        topic: String,
        /// Records of the call given to the failing method.
        total: usize,
        /// For each record that made it, its index in the call's input and where it landed, in
        /// input order.
        appended: Vec<(usize, RecordPosition)>,
        /// The failure that stopped the rest.
        #[source]
        source: Box<Error>,
    },

    /// A metadata file (topic configuration, committed offsets) cannot be parsed.
    #[error("cannot parse {path}: {reason}")]
    Metadata {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        reason: String,
    },
}

impl Error {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { op, path, source }
    }
}
