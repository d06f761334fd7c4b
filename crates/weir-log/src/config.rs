//! Configuration: the log's options, durability, and per-topic settings.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::batch::HEADER_LEN;
use crate::error::{Error, Result};

/// When appended data is forced to stable storage, and so what a crash can take back.
///
/// | mode | process crash | OS crash / power loss |
/// |---|---|---|
/// | `None` | nothing lost (data is in the page cache) | writes since the kernel last flushed (Linux: up to ~30 s) |
/// | `Interval(d)` | nothing lost | writes of the last `d` (plus one `fdatasync`) |
/// | `EveryBatch` | nothing lost | nothing acknowledged: `append` returns after `fdatasync` |
///
/// In every mode a crash never corrupts the log: recovery cuts off a torn tail, and offsets stay
/// dense. Under `EveryBatch`, consumers see a record only once it is durable, so nothing a
/// consumer saw can be taken back by a crash; concurrent appenders to a partition share one
/// `fdatasync` (group commit). A failed `fdatasync` poisons the partition (it refuses further
/// appends until the log is reopened), because after such a failure the kernel may have dropped
/// the dirty pages and what is on disk is unknown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// Leave flushing to the operating system.
    None,
    /// A background thread `fdatasync`s partitions with new data at this interval.
    Interval(Duration),
    /// Every append is durable before it returns.
    #[default]
    EveryBatch,
}

/// Options for [`Log::open`](crate::Log::open).
///
/// [`Log::open`](crate::Log::open) checks them first and fails with
/// [`Error::InvalidConfig`](crate::Error::InvalidConfig) naming the field: `Interval(d)` needs
/// `1 ms <= d <= 1 day` ([`MAX_SYNC_INTERVAL`]), `retention_check_interval` `1 ms` to 365 days
/// ([`MAX_RETENTION_CHECK_INTERVAL`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogOptions {
    /// Durability of appends. Default: [`Durability::EveryBatch`].
    pub durability: Durability,
    /// How often a background thread applies retention. Default: 5 minutes (Kafka's
    /// `log.retention.check.interval.ms`). Retention also runs whenever a segment rolls.
    pub retention_check_interval: Duration,
}

impl Default for LogOptions {
    fn default() -> Self {
        LogOptions { durability: Durability::default(), retention_check_interval: Duration::from_secs(300) }
    }
}

impl LogOptions {
    /// Sets [`LogOptions::durability`].
    pub fn durability(mut self, durability: Durability) -> Self {
        self.durability = durability;
        self
    }

    /// Checks every field; the error names the first bad one.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] naming `durability` or `retention_check_interval`.
    pub fn validate(&self) -> Result<()> {
        if let Durability::Interval(d) = self.durability {
            if d < Duration::from_millis(1) {
                return Err(invalid(
                    "durability",
                    format!("Interval({d:?}) would sync continuously; use EveryBatch, or at least 1 ms"),
                ));
            }
            if d > MAX_SYNC_INTERVAL {
                return Err(invalid(
                    "durability",
                    format!("Interval({d:?}) is longer than the maximum of 1 day; use None not to sync"),
                ));
            }
        }
        let check = self.retention_check_interval;
        if check < Duration::from_millis(1) || check > MAX_RETENTION_CHECK_INTERVAL {
            return Err(invalid(
                "retention_check_interval",
                format!("{check:?} is not between 1 ms and 365 days (retention also runs on every roll)"),
            ));
        }
        Ok(())
    }
}

/// The longest [`Durability::Interval`]: one day.
pub const MAX_SYNC_INTERVAL: Duration = Duration::from_secs(24 * 3600);

/// The longest [`LogOptions::retention_check_interval`]: 365 days.
pub const MAX_RETENTION_CHECK_INTERVAL: Duration = Duration::from_secs(365 * 24 * 3600);

/// The largest value of a millisecond setting ([`TopicConfig::retention_ms`],
/// [`TopicConfig::segment_ms`]): `i64::MAX`, about 292 million years, as Kafka's `Long.MAX_VALUE`.
/// Times are `i64` milliseconds since the Unix epoch, so a larger value cannot be compared with
/// them. "Forever" is `None`, not a large number.
pub const MAX_MS: u64 = i64::MAX as u64;

/// Which time a topic stores as each record's timestamp (Kafka's `message.timestamp.type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum TimestampType {
    /// The producer's: [`Record::timestamp`](crate::Record::timestamp), or the append time
    /// for a record without one.
    #[default]
    CreateTime,
    /// The log's: every record of an append is stamped with the wall clock at that append (in
    /// milliseconds since the Unix epoch), whatever timestamp the producer gave. The clock is
    /// read once the append holds its partition's writer, and a stamp is never below the
    /// previous append's, so stamps never decrease with offsets. Event time then travels in
    /// the payload, and the stored timestamp says when the log had the record: what a
    /// consumer could have seen by a given time.
    LogAppendTime,
}

impl TimestampType {
    fn is_create_time(&self) -> bool {
        *self == TimestampType::CreateTime
    }

    /// Kafka's name for it: `CreateTime` or `LogAppendTime`.
    pub fn name(self) -> &'static str {
        match self {
            TimestampType::CreateTime => "CreateTime",
            TimestampType::LogAppendTime => "LogAppendTime",
        }
    }
}

/// Settings of one topic, fixed at creation and stored with it.
///
/// "No limit" is `None` for every optional setting (the CLI spells it `forever` or
/// `unlimited`); `Some(0)` and values above the documented ranges are refused by
/// [`TopicConfig::validate`] with [`Error::InvalidConfig`] naming the field, never wrapped or
/// clamped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicConfig {
    /// Number of partitions, 1 to 10 000. Default: 1.
    pub partitions: u32,
    /// Retention by size, per partition: the oldest segments are deleted while the partition
    /// stays at least this large without them. At least 1. Default: `None` (unlimited).
    pub retention_bytes: Option<u64>,
    /// Retention by age: a segment is deleted once its newest record is older than this many
    /// milliseconds, 1 to [`MAX_MS`]. Default: `None` (kept forever).
    pub retention_ms: Option<u64>,
    /// A segment is rolled before it would grow past this size, 4 KiB to 1 GiB. Default: 128 MiB.
    pub segment_bytes: u64,
    /// A non-empty active segment older than this many milliseconds is rolled on the next append,
    /// 1 to [`MAX_MS`]. Default: `None` (roll by size only).
    pub segment_ms: Option<u64>,
    /// Bytes between sparse index entries, 64 B to 1 MiB. Default: 4 KiB.
    pub index_interval_bytes: u64,
    /// Largest batch written, 1 KiB to 64 MiB; a larger append is split into several batches, and a
    /// single record that does not fit is refused. Default: 8 MiB.
    pub max_batch_bytes: u32,
    /// Which time is stored as each record's timestamp. Default:
    /// [`TimestampType::CreateTime`]. `topic.json` names it only when it is not the default, so
    /// the file of a topic that keeps the default is the one earlier versions wrote and read,
    /// and a file without it reads as the default.
    #[serde(default, skip_serializing_if = "TimestampType::is_create_time")]
    pub timestamp_type: TimestampType,
}

impl Default for TopicConfig {
    fn default() -> Self {
        TopicConfig {
            partitions: 1,
            retention_bytes: None,
            retention_ms: None,
            segment_bytes: 128 << 20,
            segment_ms: None,
            index_interval_bytes: 4096,
            max_batch_bytes: 8 << 20,
            timestamp_type: TimestampType::CreateTime,
        }
    }
}

impl TopicConfig {
    /// The default configuration with `partitions` partitions.
    pub fn with_partitions(partitions: u32) -> Self {
        TopicConfig { partitions, ..TopicConfig::default() }
    }

    /// Checks every field; the error names the first bad one.
    pub fn validate(&self) -> Result<()> {
        if !(1..=10_000).contains(&self.partitions) {
            return Err(invalid("partitions", format!("{} is not between 1 and 10000", self.partitions)));
        }
        if !(4096..=1 << 30).contains(&self.segment_bytes) {
            return Err(invalid(
                "segment_bytes",
                format!("{} is not between 4 KiB and 1 GiB", self.segment_bytes),
            ));
        }
        if !(64..=1 << 20).contains(&self.index_interval_bytes) {
            let v = self.index_interval_bytes;
            return Err(invalid("index_interval_bytes", format!("{v} is not between 64 B and 1 MiB")));
        }
        if !(1024..=64 << 20).contains(&self.max_batch_bytes) || (self.max_batch_bytes as usize) < HEADER_LEN
        {
            let v = self.max_batch_bytes;
            return Err(invalid("max_batch_bytes", format!("{v} is not between 1 KiB and 64 MiB")));
        }
        if self.retention_bytes == Some(0) {
            return Err(invalid(
                "retention_bytes",
                "0 would delete every sealed segment at once; use None for no limit",
            ));
        }
        if let Some(ms) = self.retention_ms {
            check_ms("retention_ms", ms, "0 would delete every sealed segment at once")?;
        }
        if let Some(ms) = self.segment_ms {
            check_ms("segment_ms", ms, "0 would roll on every append")?;
        }
        Ok(())
    }
}

/// A millisecond setting: `1..=MAX_MS`.
fn check_ms(field: &'static str, ms: u64, zero: &str) -> Result<()> {
    if ms == 0 {
        return Err(invalid(field, format!("{zero}; use None for no limit")));
    }
    if ms > MAX_MS {
        return Err(invalid(
            field,
            format!("{ms} ms is more than the maximum of {MAX_MS} ms; use None for no limit"),
        ));
    }
    Ok(())
}

fn invalid(field: &'static str, reason: impl Into<String>) -> Error {
    Error::InvalidConfig { field, reason: reason.into() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_is_valid() {
        TopicConfig::default().validate().unwrap();
        LogOptions::default().validate().unwrap();
    }

    #[test]
    fn each_bad_field_is_named() {
        let cases: Vec<(TopicConfig, &str)> = vec![
            (TopicConfig::with_partitions(0), "partitions"),
            (TopicConfig { segment_bytes: 10, ..Default::default() }, "segment_bytes"),
            (TopicConfig { index_interval_bytes: 1, ..Default::default() }, "index_interval_bytes"),
            (TopicConfig { max_batch_bytes: 100 << 20, ..Default::default() }, "max_batch_bytes"),
            (TopicConfig { retention_ms: Some(0), ..Default::default() }, "retention_ms"),
            (TopicConfig { segment_ms: Some(0), ..Default::default() }, "segment_ms"),
            (TopicConfig { retention_bytes: Some(0), ..Default::default() }, "retention_bytes"),
        ];
        for (config, field) in cases {
            let err = config.validate().unwrap_err();
            assert!(matches!(err, Error::InvalidConfig { field: f, .. } if f == field), "{err}");
        }
        let err = LogOptions::default().durability(Durability::Interval(Duration::ZERO)).validate();
        assert!(matches!(err, Err(Error::InvalidConfig { field: "durability", .. })));
    }

    #[test]
    fn millisecond_settings_beyond_i64_are_refused_not_wrapped() {
        for ms in [u64::MAX, MAX_MS + 1] {
            let config = TopicConfig { retention_ms: Some(ms), ..Default::default() };
            let err = config.validate().unwrap_err();
            assert!(matches!(err, Error::InvalidConfig { field: "retention_ms", .. }), "{err}");
            let config = TopicConfig { segment_ms: Some(ms), ..Default::default() };
            let err = config.validate().unwrap_err();
            assert!(matches!(err, Error::InvalidConfig { field: "segment_ms", .. }), "{err}");
        }
        let longest =
            TopicConfig { retention_ms: Some(MAX_MS), segment_ms: Some(MAX_MS), ..Default::default() };
        longest.validate().unwrap();
    }

    #[test]
    fn log_option_durations_out_of_range_are_named() {
        let cases = [
            (LogOptions::default().durability(Durability::Interval(Duration::from_nanos(1))), "durability"),
            (LogOptions::default().durability(Durability::Interval(Duration::MAX)), "durability"),
            (
                LogOptions { retention_check_interval: Duration::MAX, ..Default::default() },
                "retention_check_interval",
            ),
            (
                LogOptions { retention_check_interval: Duration::ZERO, ..Default::default() },
                "retention_check_interval",
            ),
        ];
        for (options, field) in cases {
            let err = options.validate().unwrap_err();
            assert!(matches!(err, Error::InvalidConfig { field: f, .. } if f == field), "{err}");
        }
    }
}
