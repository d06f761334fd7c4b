//! `weir group list | describe | reset-offsets | delete`.

use std::collections::HashMap;

use anyhow::{Result, anyhow, bail};
use clap::{Args, Subcommand};
use serde::Serialize;
use weir::log::{Error, Log};

use super::output::{Align, Output, Table, note};

/// The `group` subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum GroupCommand {
    /// List consumer groups with their partition count and total lag.
    List,
    /// Show a group's committed offset, end offset, lag and owning member per partition.
    Describe {
        /// The group.
        group: String,
    },
    /// Move a group's committed offsets for a topic, as Kafka's `kafka-consumer-groups
    /// --reset-offsets` does: shows the plan, and applies it only with --execute.
    ResetOffsets(ResetArgs),
    /// Delete a group: its committed offsets are removed.
    Delete {
        /// The group.
        group: String,
    },
}

/// Arguments of `weir group reset-offsets`.
#[derive(Debug, Args)]
#[command(
    after_help = "Every new offset is clamped to what the partition holds (its earliest offset to its \
end). Without --execute (or with --dry-run) the plan is printed and nothing changes; the log is \
then only read, so a dry run works while another process owns the log directory."
)]
#[command(group(clap::ArgGroup::new("to").required(true)))]
pub(crate) struct ResetArgs {
    /// The group.
    #[arg(long, short, value_name = "GROUP")]
    group: String,
    /// The topic whose offsets to move.
    #[arg(long, short, value_name = "TOPIC")]
    topic: String,
    /// Only this partition. [default: every partition of the topic]
    #[arg(long, short, value_name = "P")]
    partition: Option<u32>,
    /// To the earliest offset still stored.
    #[arg(long, group = "to")]
    to_earliest: bool,
    /// To the end (past the last record).
    #[arg(long, group = "to")]
    to_latest: bool,
    /// To the first record with a timestamp at or after TIME (the end if none): milliseconds
    /// since the Unix epoch, an RFC 3339 timestamp (2024-05-01T12:00:00Z) or a duration before
    /// now (10m, 1day).
    #[arg(long, group = "to", value_name = "TIME", value_parser = super::values::time)]
    to_datetime: Option<i64>,
    /// To offset N.
    #[arg(long, group = "to", value_name = "N")]
    to_offset: Option<u64>,
    /// By N (negative: back) from the committed offset.
    #[arg(long, group = "to", value_name = "N", allow_hyphen_values = true)]
    shift_by: Option<i64>,
    /// Apply the plan.
    #[arg(long, conflicts_with = "dry_run")]
    execute: bool,
    /// Only print the plan (the default).
    #[arg(long)]
    dry_run: bool,
}

impl GroupCommand {
    /// How the command opens the log.
    pub(crate) fn access(&self) -> super::Access {
        match self {
            GroupCommand::ResetOffsets(args) if args.execute => super::Access::Write,
            GroupCommand::Delete { .. } => super::Access::Write,
            _ => super::Access::Read,
        }
    }
}

/// Runs a `group` subcommand.
pub(crate) fn run(log: &Log, command: GroupCommand, out: &mut Output) -> Result<()> {
    match command {
        GroupCommand::List => list(log, out),
        GroupCommand::Describe { group } => describe(log, &group, out),
        GroupCommand::ResetOffsets(args) => reset_offsets(log, &args, out),
        GroupCommand::Delete { group } => {
            log.delete_group(&group)?;
            if out.json() {
                out.json_line(&serde_json::json!({ "deleted": group }))
            } else {
                out.bytes(format!("deleted group {group}\n").as_bytes())
            }
        }
    }
}

/// One partition of a `group reset-offsets` plan (a line of its `--json` output).
#[derive(Serialize)]
struct Reset<'a> {
    group: &'a str,
    topic: &'a str,
    partition: u32,
    /// The committed offset before, if any.
    current: Option<u64>,
    new: u64,
}

/// A group's committed offsets for the partitions of `topic`; none for an unknown group.
pub(crate) fn committed(log: &Log, group: &str, topic: &str) -> Result<HashMap<u32, u64>> {
    match log.describe_group(group) {
        Ok(d) => Ok(d
            .partitions
            .into_iter()
            .filter(|p| p.topic == topic)
            .filter_map(|p| Some((p.partition, p.committed?)))
            .collect()),
        Err(Error::UnknownGroup(_)) => Ok(HashMap::new()),
        Err(e) => Err(e.into()),
    }
}

fn reset_offsets(log: &Log, args: &ResetArgs, out: &mut Output) -> Result<()> {
    let topic = log.topic(&args.topic)?;
    let committed = committed(log, &args.group, &args.topic)?;
    let partitions = match args.partition {
        Some(p) => vec![p],
        None => (0..topic.partition_count()).collect(),
    };
    let mut plan = Vec::with_capacity(partitions.len());
    for p in partitions {
        let (start, end) = (topic.start_offset(p)?, topic.end_offset(p)?);
        let current = committed.get(&p).copied();
        let new = if args.to_earliest {
            start
        } else if args.to_latest {
            end
        } else if let Some(t) = args.to_datetime {
            topic.offset_for_timestamp(p, t)?.unwrap_or(end)
        } else if let Some(n) = args.to_offset {
            n
        } else if let Some(by) = args.shift_by {
            let Some(c) = current else {
                bail!(
                    "group {} has no committed offset for partition {p} of {} to shift",
                    args.group,
                    args.topic
                )
            };
            c.saturating_add_signed(by)
        } else {
            bail!("no target offset given")
        };
        plan.push(Reset {
            group: &args.group,
            topic: &args.topic,
            partition: p,
            current,
            new: new.clamp(start, end),
        });
    }
    if args.execute {
        log.commit_offsets(&args.group, &args.topic, plan.iter().map(|r| (r.partition, r.new)))?;
    }
    if out.json() {
        return plan.iter().try_for_each(|r| out.json_line(r));
    }
    let mut table = Table::new(&[
        ("TOPIC", Align::Left),
        ("PARTITION", Align::Right),
        ("CURRENT", Align::Right),
        ("NEW", Align::Right),
    ]);
    for r in &plan {
        table.row(vec![
            r.topic.to_owned(),
            r.partition.to_string(),
            r.current.map_or_else(|| "-".to_owned(), |c| c.to_string()),
            r.new.to_string(),
        ]);
    }
    out.table(&table)?;
    if !args.execute {
        let _ = note(format_args!("dry run: nothing changed (add --execute to apply)"));
    }
    Ok(())
}

/// One line of `group list --json`.
#[derive(Serialize)]
struct GroupSummary {
    group: String,
    partitions: usize,
    /// Sum of the lag of the partitions the group has committed to.
    lag: u64,
}

fn list(log: &Log, out: &mut Output) -> Result<()> {
    let mut table =
        Table::new(&[("GROUP", Align::Left), ("PARTITIONS", Align::Right), ("LAG", Align::Right)]);
    for group in log.list_groups()? {
        let d = log.describe_group(&group)?;
        let summary = GroupSummary {
            partitions: d.partitions.len(),
            lag: d.partitions.iter().filter_map(|p| p.lag).sum(),
            group,
        };
        if out.json() {
            out.json_line(&summary)?;
        } else {
            table.row(vec![summary.group, summary.partitions.to_string(), summary.lag.to_string()]);
        }
    }
    if out.json() {
        Ok(())
    } else if table.is_empty() {
        let _ = note(format_args!("no consumer groups in {}", log.dir().display()));
        Ok(())
    } else {
        out.table(&table)
    }
}

fn describe(log: &Log, group: &str, out: &mut Output) -> Result<()> {
    let d = log.describe_group(group).map_err(|e| match e {
        // Members live in the process that owns the log: seen from here, a known group is one
        // that has committed.
        Error::UnknownGroup(_) => anyhow!("{e} (it has never committed an offset)"),
        e => e.into(),
    })?;
    if out.json() {
        return out.json_line(&d);
    }
    let mut settings = Table::settings();
    settings.row(vec!["group".into(), d.group.clone()]);
    settings.row(vec!["members".into(), d.members.to_string()]);
    out.table(&settings)?;
    out.bytes(b"\n")?;
    let dash = || "-".to_owned();
    let mut table = Table::new(&[
        ("TOPIC", Align::Left),
        ("PARTITION", Align::Right),
        ("COMMITTED", Align::Right),
        ("END", Align::Right),
        ("LAG", Align::Right),
        ("MEMBER", Align::Left),
    ]);
    for p in &d.partitions {
        table.row(vec![
            p.topic.clone(),
            p.partition.to_string(),
            p.committed.map_or_else(dash, |c| c.to_string()),
            p.end_offset.to_string(),
            p.lag.map_or_else(dash, |l| l.to_string()),
            p.member.map_or_else(dash, |m| m.to_string()),
        ]);
    }
    if table.is_empty() {
        let _ = note(format_args!("group {group} has no committed offsets for existing topics"));
        Ok(())
    } else {
        out.table(&table)
    }
}
