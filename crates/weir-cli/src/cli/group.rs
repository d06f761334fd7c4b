//! `weir group list | describe`.

use anyhow::{Result, anyhow};
use clap::Subcommand;
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
}

/// Runs a `group` subcommand.
pub(crate) fn run(log: &Log, command: GroupCommand, out: &mut Output) -> Result<()> {
    match command {
        GroupCommand::List => list(log, out),
        GroupCommand::Describe { group } => describe(log, &group, out),
    }
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
        // Members live in one process, and only one process opens the log: here a known group is
        // one that has committed.
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
