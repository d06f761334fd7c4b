//! `weir topic create | list | describe | alter | delete`.

use anyhow::{Result, anyhow};
use clap::{Args, Subcommand};
use serde::Serialize;
use weir::log::{Error, Log, PartitionInfo, TimestampType, TopicConfig, TopicDescription};

use super::output::{Align, Output, Table, note};

/// The `topic` subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum TopicCommand {
    /// Create a topic.
    Create(CreateArgs),
    /// List topics with their partition count, record count and size.
    List,
    /// Show a topic's configuration and, per partition, its start and end offsets, size and
    /// segment count.
    Describe {
        /// The topic.
        name: String,
    },
    /// Change a topic's retention (as Kafka's `kafka-configs --alter` does for retention.bytes
    /// and retention.ms); retention applies at once. Other settings are fixed at creation.
    Alter(AlterArgs),
    /// Delete a topic, its data, and the committed offsets of every group for it.
    Delete {
        /// The topic.
        name: String,
    },
}

/// Arguments of `weir topic create`.
#[derive(Debug, Args)]
pub(crate) struct CreateArgs {
    /// The topic's name: 1 to 249 characters from `a-z A-Z 0-9 . _ -`.
    name: String,
    /// Number of partitions, 1 to 10000.
    #[arg(long, short, value_name = "N")]
    partitions: u32,
    /// Retention by size: delete a partition's oldest segments while it stays at least this
    /// many bytes without them; at least 1, or `unlimited` (also `-1`, as Kafka's
    /// retention.bytes). [default: unlimited]
    #[arg(long, value_name = "BYTES|unlimited", value_parser = limit, allow_hyphen_values = true)]
    retention_bytes: Option<Limit>,
    /// Retention by age: delete a segment once its newest record is older than this: a
    /// duration (7d, 36h, 1h 30m), milliseconds (1 to 9223372036854775807), or `forever` (also
    /// `-1`, as Kafka's retention.ms). [default: forever]
    #[arg(long, value_name = "DURATION|forever", value_parser = duration, allow_hyphen_values = true)]
    retention_ms: Option<Limit>,
    /// Roll to a new segment before one would grow past this size, 4096 to 1073741824 bytes.
    /// [default: 134217728 (128 MiB)]
    #[arg(long, value_name = "BYTES")]
    segment_bytes: Option<u64>,
    /// Roll a non-empty segment older than this on the next append: a duration (1h, 1d),
    /// milliseconds (1 to 9223372036854775807), or `forever` (also `-1`): roll by size only.
    /// [default: forever]
    #[arg(long, value_name = "DURATION|forever", value_parser = duration, allow_hyphen_values = true)]
    segment_ms: Option<Limit>,
    /// Which time each record's stored timestamp is, as Kafka's message.timestamp.type:
    /// `CreateTime` (the producer's) or `LogAppendTime` (the log's clock at the append).
    /// [default: CreateTime]
    #[arg(long, value_name = "TYPE", value_parser = timestamp_type)]
    message_timestamp_type: Option<TimestampType>,
}

/// Arguments of `weir topic alter`: the retention settings to change; the others stay.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("change").required(true).multiple(true)))]
pub(crate) struct AlterArgs {
    /// The topic.
    name: String,
    /// New retention by size, as for `topic create`: bytes, or `unlimited` (also `-1`).
    #[arg(long, group = "change", value_name = "BYTES|unlimited", value_parser = limit, allow_hyphen_values = true)]
    retention_bytes: Option<Limit>,
    /// New retention by age, as for `topic create`: a duration (7d, 36h), milliseconds, or
    /// `forever` (also `-1`).
    #[arg(long, group = "change", value_name = "DURATION|forever", value_parser = duration, allow_hyphen_values = true)]
    retention_ms: Option<Limit>,
}

impl TopicCommand {
    /// How the command opens the log.
    pub(crate) fn access(&self) -> super::Access {
        match self {
            TopicCommand::Create(_) => super::Access::Create,
            TopicCommand::Alter(_) | TopicCommand::Delete { .. } => super::Access::Write,
            TopicCommand::List | TopicCommand::Describe { .. } => super::Access::Read,
        }
    }
}

/// A limit given on the command line: a number, or `None` for no limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Limit(Option<u64>);

/// Parses a duration flag (see the `values` module) into a limit in milliseconds.
fn duration(s: &str) -> Result<Limit, String> {
    super::values::duration(s).map(Limit)
}

/// Parses a timestamp type by Kafka's name for it.
fn timestamp_type(s: &str) -> Result<TimestampType, String> {
    [TimestampType::CreateTime, TimestampType::LogAppendTime]
        .into_iter()
        .find(|t| t.name() == s)
        .ok_or_else(|| format!("expected CreateTime or LogAppendTime, not {s:?}"))
}

/// Parses a limit: a non-negative number, or `forever`, `unlimited`, `none` or `-1` for no limit.
/// The range of a number is checked with the topic's configuration, which names the flag.
fn limit(s: &str) -> Result<Limit, String> {
    match s {
        "forever" | "unlimited" | "none" | "-1" => Ok(Limit(None)),
        _ => s.parse::<u64>().map(|n| Limit(Some(n))).map_err(|e| {
            format!(
                "{e}: expected a number from 0 to 18446744073709551615, or forever/unlimited/-1 for no limit"
            )
        }),
    }
}

/// Runs a `topic` subcommand.
pub(crate) fn run(log: &Log, command: TopicCommand, out: &mut Output) -> Result<()> {
    match command {
        TopicCommand::Create(args) => create(log, args, out),
        TopicCommand::List => list(log, out),
        TopicCommand::Describe { name } => describe(log, &name, out),
        TopicCommand::Alter(args) => alter(log, args, out),
        TopicCommand::Delete { name } => {
            log.delete_topic(&name)?;
            if out.json() {
                out.json_line(&serde_json::json!({ "deleted": name }))
            } else {
                out.bytes(format!("deleted topic {name}\n").as_bytes())
            }
        }
    }
}

fn create(log: &Log, args: CreateArgs, out: &mut Output) -> Result<()> {
    let defaults = TopicConfig::with_partitions(args.partitions);
    let config = TopicConfig {
        retention_bytes: args.retention_bytes.and_then(|l| l.0),
        retention_ms: args.retention_ms.and_then(|l| l.0),
        segment_bytes: args.segment_bytes.unwrap_or(defaults.segment_bytes),
        segment_ms: args.segment_ms.and_then(|l| l.0),
        timestamp_type: args.message_timestamp_type.unwrap_or_default(),
        ..defaults
    };
    let topic = log.create_topic(&args.name, config).map_err(flag_error)?;
    if out.json() {
        out.json_line(&TopicJson::from(&topic.describe()))
    } else {
        let n = topic.partition_count();
        let plural = if n == 1 { "" } else { "s" };
        out.bytes(format!("created topic {} with {n} partition{plural}\n", topic.name()).as_bytes())
    }
}

/// An error of the log naming the flag, not the configuration field, for a bad setting.
fn flag_error(e: Error) -> anyhow::Error {
    match e {
        Error::InvalidConfig { field, reason } => {
            anyhow!("invalid --{}: {}", field.replace('_', "-"), reason.replace("use None", "use `forever`"))
        }
        e => e.into(),
    }
}

fn alter(log: &Log, args: AlterArgs, out: &mut Output) -> Result<()> {
    let current = log.topic(&args.name)?.config();
    let bytes = args.retention_bytes.map_or(current.retention_bytes, |l| l.0);
    let ms = args.retention_ms.map_or(current.retention_ms, |l| l.0);
    log.set_topic_retention(&args.name, bytes, ms).map_err(flag_error)?;
    // In force at once, as a user altering retention to free space expects.
    let deleted = log.enforce_retention()?;
    if out.json() {
        return out.json_line(&TopicJson::from(&log.describe_topic(&args.name)?));
    }
    if deleted > 0 {
        let _ = note(format_args!("retention deleted {deleted} segment(s)"));
    }
    out.bytes(format!("altered topic {}\n", args.name).as_bytes())
}

fn list(log: &Log, out: &mut Output) -> Result<()> {
    let mut table = Table::new(&[
        ("TOPIC", Align::Left),
        ("PARTITIONS", Align::Right),
        ("RECORDS", Align::Right),
        ("BYTES", Align::Right),
    ]);
    for name in log.topics() {
        // A topic deleted since `topics()` was read is simply not listed.
        let Ok(d) = log.describe_topic(&name) else { continue };
        let summary = TopicSummary {
            records: d.partitions.iter().map(|p| p.end_offset - p.start_offset).sum(),
            size_bytes: d.partitions.iter().map(|p| p.size_bytes).sum(),
            partitions: d.config.partitions,
            topic: d.name,
        };
        if out.json() {
            out.json_line(&summary)?;
        } else {
            table.row(vec![
                summary.topic,
                summary.partitions.to_string(),
                summary.records.to_string(),
                summary.size_bytes.to_string(),
            ]);
        }
    }
    if out.json() {
        Ok(())
    } else if table.is_empty() {
        let _ = note(format_args!("no topics in {}", log.dir().display()));
        Ok(())
    } else {
        out.table(&table)
    }
}

fn describe(log: &Log, name: &str, out: &mut Output) -> Result<()> {
    let d = log.describe_topic(name)?;
    if out.json() {
        return out.json_line(&TopicJson::from(&d));
    }
    let c = &d.config;
    let or = |v: Option<u64>, none: &str| v.map_or_else(|| none.to_owned(), |v| v.to_string());
    let mut settings = Table::settings();
    for (key, value) in [
        ("topic", d.name.clone()),
        ("partitions", c.partitions.to_string()),
        ("retention.bytes", or(c.retention_bytes, "unlimited")),
        ("retention.ms", or(c.retention_ms, "unlimited")),
        ("segment.bytes", c.segment_bytes.to_string()),
        ("segment.ms", or(c.segment_ms, "none")),
        ("index.interval.bytes", c.index_interval_bytes.to_string()),
        ("max.batch.bytes", c.max_batch_bytes.to_string()),
        ("message.timestamp.type", c.timestamp_type.name().to_owned()),
    ] {
        settings.row(vec![key.to_owned(), value]);
    }
    out.table(&settings)?;
    out.bytes(b"\n")?;
    let mut table = Table::new(&[
        ("PARTITION", Align::Right),
        ("START", Align::Right),
        ("END", Align::Right),
        ("RECORDS", Align::Right),
        ("BYTES", Align::Right),
        ("SEGMENTS", Align::Right),
    ]);
    for p in &d.partitions {
        table.row(vec![
            p.partition.to_string(),
            p.start_offset.to_string(),
            p.end_offset.to_string(),
            (p.end_offset - p.start_offset).to_string(),
            p.size_bytes.to_string(),
            p.segments.to_string(),
        ]);
    }
    out.table(&table)
}

/// One line of `topic list --json`.
#[derive(Serialize)]
struct TopicSummary {
    topic: String,
    partitions: u32,
    /// Records stored now: the sum over partitions of end − start offset.
    records: u64,
    size_bytes: u64,
}

/// `topic describe --json` (and `topic create --json`): the log's [`TopicDescription`], with its
/// `name` called `topic` as in every other output, and every setting in `config` (the
/// timestamp type too, which the topic's file leaves out when it is the default).
#[derive(Serialize)]
struct TopicJson<'a> {
    topic: &'a str,
    config: serde_json::Value,
    partitions: &'a [PartitionInfo],
}

impl<'a> From<&'a TopicDescription> for TopicJson<'a> {
    fn from(d: &'a TopicDescription) -> Self {
        let mut config = serde_json::to_value(&d.config).unwrap_or_default();
        if let Some(settings) = config.as_object_mut() {
            settings.insert("timestamp_type".into(), d.config.timestamp_type.name().into());
        }
        TopicJson { topic: &d.name, config, partitions: &d.partitions }
    }
}
