//! `weir consume TOPIC`: print a topic's records.
//!
//! One [`Consumer`] reads in every case:
//! - without `--group`, a consumer outside any group, of every partition or only the one given
//!   with `--partition`; it has nothing to commit;
//! - with `--group`, a member of that group: it starts from the group's committed offsets;
//! - with `--group` and `--partition`, a consumer manually assigned that partition: it starts
//!   from the group's committed offset for it and commits to the group, without joining the
//!   group's membership.
//!
//! A start flag then moves every position (`--offset` clamped to what each partition holds).
//! The loop commits after each printed batch and on exit. Positions and commits only ever cover
//! printed records: when the loop stops inside a batch (`-n`, or the end offsets taken at start),
//! it seeks the partition back to the first record it did not print before committing. A commit
//! happens only after stdout was flushed, so a record lost in a closed pipe is not committed
//! (at-least-once).
//!
//! What is committed: only partitions this run read from (its position there moved), and only
//! forward, past the group's committed offset; a partition the group has no offset for gets
//! where the run stands (so a new group starts where it was told to). A look back with
//! `--offset` or `--since` ("peek") thus never moves the group back; `weir group reset-offsets`
//! does that. With `--no-commit` nothing is committed, and the log is opened read-only, so it
//! works beside the program that owns the log directory (as does every consume without
//! `--group`).
//!
//! Records lost to damage on disk are never passed over silently: with `--on-damage stop` (the
//! default) the records before the damaged range are printed (and committed), then the command
//! fails naming the range; with `--on-damage skip` it steps over the range and prints a warning
//! naming it on stderr.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Result;
use clap::Args;
use serde::Serialize;
use tokio::sync::Notify;
use weir::log::{AutoOffsetReset, Consumer, ConsumerConfig, DamagePolicy, Log, StoredRecord, Topic};

use super::output::{Output, base64, note};

/// How long one wait for new records lasts under `--follow` before the loop checks again.
const POLL_TIMEOUT: Duration = Duration::from_millis(500);

/// Arguments of `weir consume`.
#[derive(Debug, Args)]
#[command(after_help = "Where reading starts: without --group and without a start flag, at the \
earliest offset of each partition, like reading a file. With --group and no start flag, at the \
group's committed offsets (the earliest offset where it has none). A start flag \
(--from-beginning, --offset, --since) overrides both.\n\n\
Commits (with --group): after each printed batch and on exit, only for partitions read from, and \
only forward: a look back (--offset 0 -n 2) leaves the group's offsets where they are; `weir group \
reset-offsets` moves them back. With --no-commit, nothing is committed.\n\n\
Beside a running program: without --group, or with --no-commit, the log is opened read-only and \
this works while another process owns the log directory, showing what it has written so far \
(with --follow, as it writes).\n\n\
Where it stops: without --follow, at the end offsets the partitions had when the command started \
(or after -n records); with --follow, on Ctrl-C (or after -n records).\n\n\
Output: each record's value as raw bytes followed by a newline. With --json, one JSON object per \
line: {\"topic\", \"partition\", \"offset\", \"timestamp\" (ms since the Unix epoch), \"key\" \
(null when keyless), \"value\", \"headers\"}; keys and values are decoded as UTF-8 with invalid \
bytes replaced by U+FFFD, or given in base64 with --base64.")]
pub(crate) struct ConsumeArgs {
    /// The topic to read.
    topic: String,
    /// Read as this consumer group: start from its committed offsets and commit after each
    /// printed batch and on exit, only forward and only for partitions read from.
    #[arg(long, short, value_name = "GROUP")]
    group: Option<String>,
    /// With --group: start from the group's committed offsets but commit nothing. Opens the log
    /// read-only, so it works while another process owns the log directory.
    #[arg(long, requires = "group")]
    no_commit: bool,
    /// Start at the earliest offset still stored.
    #[arg(long, group = "start")]
    from_beginning: bool,
    /// Start at offset N in each selected partition. Where N is past a partition's end, start at
    /// the end; where retention deleted it, at the earliest offset left (with a warning).
    #[arg(long, group = "start", value_name = "N")]
    offset: Option<u64>,
    /// Start at the first record with a timestamp at or after TIME: milliseconds since the Unix
    /// epoch, an RFC 3339 timestamp (2024-05-01T12:00:00Z, 2024-05-01T14:00:00+02:00) or a
    /// duration before now (10m, 2h 30m, 1day).
    #[arg(long, group = "start", value_name = "TIME", value_parser = super::values::time)]
    since: Option<i64>,
    /// Read only this partition. With --group, read it for the group without joining the group
    /// as a member: start from, and commit to, the group's committed offset for this partition.
    #[arg(long, short, value_name = "P")]
    partition: Option<u32>,
    /// Keep waiting for new records until Ctrl-C.
    #[arg(long, short)]
    follow: bool,
    /// Stop after N records.
    #[arg(short = 'n', long = "max-records", value_name = "N",
          value_parser = clap::value_parser!(u64).range(1..))]
    max_records: Option<u64>,
    /// Print each record's key, then the separator, before its value (nothing for a keyless
    /// record).
    #[arg(long)]
    print_key: bool,
    /// Print each record's partition and offset, each followed by the separator, first.
    #[arg(long)]
    print_offset: bool,
    /// The separator printed after the fields of --print-offset and --print-key (`\t` stands
    /// for a tab). [default: tab]
    #[arg(long, short = 'k', value_name = "SEP", default_value = "\t", hide_default_value = true,
          value_parser = super::separator)]
    key_separator: String,
    /// With --json, give keys and values in base64 (lossless for binary data) instead of text.
    #[arg(long, requires = "json")]
    base64: bool,
    /// What to do at records lost to damage on disk (a damaged batch, a missing segment): `stop`
    /// prints the records before them, then fails naming the lost offsets (exit code 1); `skip`
    /// steps over them with a warning naming them on stderr.
    #[arg(long, value_enum, value_name = "WHAT", default_value_t = OnDamage::Stop)]
    on_damage: OnDamage,
}

/// The values of `--on-damage`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum OnDamage {
    /// Print the records before the damage, then fail naming it.
    Stop,
    /// Step over the damage with a warning naming it.
    Skip,
}

impl ConsumeArgs {
    /// Whether this run commits to a group (and so needs the log opened for writing).
    pub(crate) fn commits(&self) -> bool {
        self.group.is_some() && !self.no_commit
    }
}

/// The group commits of a run: only partitions read from, only forward (see the module docs).
struct Commits {
    /// The group, if this run commits.
    group: Option<String>,
    /// The group's committed offsets of the topic, as last known.
    committed: HashMap<u32, u64>,
    /// Each partition's position when reading started.
    started: HashMap<u32, u64>,
    /// Partitions read from whose position stayed behind the group's committed offset:
    /// (position, committed), reported at the end.
    behind: HashMap<u32, (u64, u64)>,
}

impl Commits {
    fn new(log: &Log, args: &ConsumeArgs, consumer: &Consumer) -> Result<Commits> {
        let group = args.group.clone().filter(|_| args.commits());
        let committed = match &group {
            Some(g) => super::group::committed(log, g, &args.topic)?,
            None => HashMap::new(),
        };
        Ok(Commits {
            group,
            committed,
            started: positions(consumer).into_iter().collect(),
            behind: HashMap::new(),
        })
    }

    /// Commits the positions of the partitions read from, where they are past the committed
    /// offset (or there is none yet).
    fn commit(&mut self, log: &Log, topic: &str, consumer: &Consumer) -> Result<()> {
        let Some(group) = &self.group else { return Ok(()) };
        let mut offsets = Vec::new();
        for (p, position) in positions(consumer) {
            let read = self.started.get(&p) != Some(&position);
            match self.committed.get(&p) {
                None => offsets.push((p, position)),
                Some(&c) if read && position > c => offsets.push((p, position)),
                Some(&c) if read && position < c => {
                    self.behind.insert(p, (position, c));
                }
                Some(_) => {}
            }
        }
        if offsets.is_empty() {
            return Ok(());
        }
        log.commit_offsets(group, topic, offsets.iter().copied())?;
        for (p, offset) in offsets {
            self.committed.insert(p, offset);
            self.behind.remove(&p);
        }
        Ok(())
    }

    /// Says which partitions were left uncommitted because the group is further on.
    fn report(&self, topic: &str) {
        let mut behind: Vec<_> = self.behind.iter().collect();
        behind.sort();
        for (p, (position, committed)) in behind {
            let _ = note(format_args!(
                "weir: note: partition {p} of {topic} read up to offset {position}, behind the group's \
                 committed offset {committed}: not committed (the group's offsets only move forward; \
                 `weir group reset-offsets` moves them back)"
            ));
        }
    }
}

/// Runs `weir consume`; returns on Ctrl-C, at the end of the records to print, or on an error.
pub(crate) async fn run(log: &Log, args: &ConsumeArgs, out: &mut Output) -> Result<()> {
    let topic = log.topic(&args.topic)?;
    let stop = Stop::install()?;
    let policy = match args.on_damage {
        OnDamage::Stop => DamagePolicy::Fail,
        OnDamage::Skip => DamagePolicy::Skip,
    };
    let mut config =
        ConsumerConfig::new(topic.name()).auto_offset_reset(AutoOffsetReset::Earliest).on_damage(policy);
    if let Some(group) = &args.group {
        config = config.group(group.as_str());
    }
    if let Some(p) = args.partition {
        config = config.partitions([p]);
    }
    let mut consumer = log.consumer(config)?;
    seek_to_start(&mut consumer, &topic, args)?;
    // Without --follow, read up to the ends as they are now.
    let ends: HashMap<u32, u64> = positions(&consumer)
        .into_iter()
        .map(|(p, _)| Ok((p, topic.end_offset(p)?)))
        .collect::<Result<_>>()?;
    tracing::debug!(partitions = ?positions(&consumer), ?ends, "consuming");
    let mut commits = Commits::new(log, args, &consumer)?;

    let mut printed = 0u64;
    let mut warned = 0;
    let max = args.max_records.unwrap_or(u64::MAX);
    while printed < max && !stop.requested() {
        warn_skipped(&consumer, &mut warned);
        let batches = if args.follow {
            tokio::select! {
                () = stop.wait() => break,
                batches = consumer.poll(POLL_TIMEOUT) => batches?,
            }
        } else {
            if positions(&consumer).iter().all(|(p, pos)| ends.get(p).is_none_or(|end| pos >= end)) {
                break;
            }
            // Empty only when no partition has a record left to read (a position under the log
            // start is moved to the earliest record, which is read in the same call).
            let batches = consumer.poll_now()?;
            if batches.is_empty() {
                break;
            }
            batches
        };
        warn_skipped(&consumer, &mut warned);
        if batches.is_empty() {
            continue;
        }
        for batch in &batches {
            let end = if args.follow { u64::MAX } else { ends.get(&batch.partition).copied().unwrap_or(0) };
            let mut unprinted = None;
            for record in &batch.records {
                if record.offset >= end || printed >= max {
                    unprinted = Some(record.offset);
                    break;
                }
                print(out, args, &batch.topic, batch.partition, record)?;
                printed += 1;
            }
            if let Some(offset) = unprinted {
                consumer.seek(&batch.topic, batch.partition, offset)?;
            }
        }
        out.flush()?;
        commits.commit(log, topic.name(), &consumer)?;
    }
    out.flush()?;
    commits.commit(log, topic.name(), &consumer)?;
    commits.report(topic.name());
    Ok(())
}

/// Prints a warning for each damaged range the consumer stepped over since the last call
/// (`--on-damage skip`); `warned` counts those already reported.
fn warn_skipped(consumer: &Consumer, warned: &mut usize) {
    for range in consumer.skipped().iter().skip(*warned) {
        let _ = note(format_args!(
            "weir: warning: skipped offsets {}..{} of {}/{}, lost to damage on disk ({}, bytes {}..{}): {}",
            range.offsets.start,
            range.offsets.end,
            range.topic,
            range.partition,
            range.path.display(),
            range.bytes.start,
            range.bytes.end,
            range.reason
        ));
    }
    *warned = consumer.skipped().len();
}

/// (partition, next offset to read) of every partition the consumer reads.
fn positions(consumer: &Consumer) -> Vec<(u32, u64)> {
    consumer.assignment().into_iter().filter_map(|(t, p)| Some((p, consumer.position(&t, p)?))).collect()
}

/// Applies the start flag, if any; without one the consumer keeps the positions it chose (the
/// group's committed offsets, or the earliest offsets).
fn seek_to_start(consumer: &mut Consumer, topic: &Topic, args: &ConsumeArgs) -> Result<()> {
    if args.from_beginning {
        consumer.seek_to_beginning()?;
    } else if let Some(timestamp) = args.since {
        consumer.seek_to_timestamp(timestamp)?;
    } else if let Some(offset) = args.offset {
        for (p, _) in positions(consumer) {
            let (start, end) = (topic.start_offset(p)?, topic.end_offset(p)?);
            let clamped = offset.clamp(start, end);
            if clamped != offset {
                let _ = note(format_args!(
                    "weir: warning: partition {p} of {} holds offsets {start}..{end}; starting at {clamped} instead of {offset}",
                    topic.name()
                ));
            }
            consumer.seek(topic.name(), p, clamped)?;
        }
    }
    Ok(())
}

/// Prints one record: JSON, or `[partition SEP offset SEP] [key SEP] value`.
fn print(out: &mut Output, args: &ConsumeArgs, topic: &str, partition: u32, r: &StoredRecord) -> Result<()> {
    if out.json() {
        let text = |b: &'_ [u8]| -> String {
            if args.base64 { base64(b) } else { String::from_utf8_lossy(b).into_owned() }
        };
        return out.json_line(&RecordJson {
            topic,
            partition,
            offset: r.offset,
            timestamp: r.timestamp,
            key: r.key.as_deref().map(text),
            value: text(&r.value),
            headers: r
                .headers
                .iter()
                .map(|h| HeaderJson { key: Cow::Borrowed(&h.key), value: h.value.as_deref().map(text) })
                .collect(),
        });
    }
    let sep = args.key_separator.as_bytes();
    let mut line = Vec::with_capacity(r.value.len() + 32);
    if args.print_offset {
        line.extend_from_slice(partition.to_string().as_bytes());
        line.extend_from_slice(sep);
        line.extend_from_slice(r.offset.to_string().as_bytes());
        line.extend_from_slice(sep);
    }
    if args.print_key {
        line.extend_from_slice(r.key.as_deref().unwrap_or_default());
        line.extend_from_slice(sep);
    }
    line.extend_from_slice(&r.value);
    line.push(b'\n');
    out.bytes(&line)
}

/// One line of `consume --json`.
#[derive(Serialize)]
struct RecordJson<'a> {
    topic: &'a str,
    partition: u32,
    offset: u64,
    /// Milliseconds since the Unix epoch.
    timestamp: i64,
    key: Option<String>,
    value: String,
    headers: Vec<HeaderJson<'a>>,
}

#[derive(Serialize)]
struct HeaderJson<'a> {
    key: Cow<'a, str>,
    value: Option<String>,
}

/// Set by Ctrl-C (SIGINT) or SIGTERM, so the loop can commit and exit cleanly.
struct Stop {
    requested: AtomicBool,
    notify: Notify,
}

impl Stop {
    /// Installs the signal handlers now (so a signal is never lost to the default handler once
    /// this returns) and a task that waits for them. Needs a runtime with a worker thread, so the
    /// task runs even while the loop reads files.
    fn install() -> Result<Arc<Stop>> {
        let stop = Arc::new(Stop { requested: AtomicBool::new(false), notify: Notify::new() });
        let signalled = signal_handler()?;
        let task_stop = stop.clone();
        tokio::spawn(async move {
            signalled.await;
            task_stop.requested.store(true, Ordering::Release);
            task_stop.notify.notify_one();
        });
        Ok(stop)
    }

    fn requested(&self) -> bool {
        self.requested.load(Ordering::Acquire)
    }

    async fn wait(&self) {
        self.notify.notified().await;
    }
}

#[cfg(unix)]
fn signal_handler() -> Result<impl Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
    })
}

#[cfg(not(unix))]
fn signal_handler() -> Result<impl Future<Output = ()>> {
    Ok(async {
        let _ = tokio::signal::ctrl_c().await;
    })
}
