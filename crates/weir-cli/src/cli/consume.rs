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
//! Records lost to damage on disk are never passed over silently: with `--on-damage stop` (the
//! default) the records before the damaged range are printed (and committed), then the command
//! fails naming the range; with `--on-damage skip` it steps over the range and prints a warning
//! naming it on stderr.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

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
    /// printed batch and on exit.
    #[arg(long, short, value_name = "GROUP")]
    group: Option<String>,
    /// Start at the earliest offset still stored.
    #[arg(long, group = "start")]
    from_beginning: bool,
    /// Start at offset N in each selected partition. Where N is past a partition's end, start at
    /// the end; where retention deleted it, at the earliest offset left (with a warning).
    #[arg(long, group = "start", value_name = "N")]
    offset: Option<u64>,
    /// Start at the first record with a timestamp at or after TIME: an RFC 3339 timestamp
    /// (2024-05-01T12:00:00Z, 2024-05-01T14:00:00+02:00) or a duration before now (10m, 2h 30m,
    /// 1day).
    #[arg(long, group = "start", value_name = "TIME", value_parser = parse_since)]
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
        consumer.commit()?;
    }
    out.flush()?;
    Ok(consumer.commit()?)
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

const SINCE_HELP: &str = "expected an RFC 3339 timestamp with a time zone (2024-05-01T12:00:00Z, \
2024-05-01T14:00:00+02:00) or a duration before now (10m, 2h 30m, 1day)";

/// Parses `--since`: milliseconds since the Unix epoch.
fn parse_since(s: &str) -> Result<i64, String> {
    parse_time(s.trim(), SystemTime::now())
}

fn parse_time(s: &str, now: SystemTime) -> Result<i64, String> {
    if let Ok(ago) = humantime::parse_duration(s) {
        let t = now.checked_sub(ago).ok_or_else(|| format!("{s} ago is out of range"))?;
        return millis(t);
    }
    let (body, zone_minutes) = split_zone(s).ok_or(SINCE_HELP)?;
    let mut body = body.to_owned();
    if body.as_bytes().get(10) == Some(&b't') {
        body.replace_range(10..11, "T");
    }
    let t = humantime::parse_rfc3339_weak(&body).map_err(|e| format!("{e}; {SINCE_HELP}"))?;
    Ok(millis(t)? - zone_minutes * 60_000)
}

/// Splits an RFC 3339 time zone (`Z` or `±HH:MM`) off the end: the rest and the zone's offset
/// from UTC in minutes.
fn split_zone(s: &str) -> Option<(&str, i64)> {
    if let Some(body) = s.strip_suffix(['Z', 'z']) {
        return Some((body, 0));
    }
    let at = s.len().checked_sub(6)?;
    if !s.is_char_boundary(at) {
        return None;
    }
    let (body, zone) = s.split_at(at);
    let &[sign, h1, h2, b':', m1, m2] = zone.as_bytes() else { return None };
    let sign = match sign {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let two = |a: u8, b: u8| {
        (a.is_ascii_digit() && b.is_ascii_digit()).then(|| i64::from(a - b'0') * 10 + i64::from(b - b'0'))
    };
    let (hours, minutes) = (two(h1, h2)?, two(m1, m2)?);
    (hours <= 23 && minutes <= 59).then_some((body, sign * (hours * 60 + minutes)))
}

fn millis(t: SystemTime) -> Result<i64, String> {
    let since_epoch = t.duration_since(UNIX_EPOCH).map_err(|_| "times before 1970 are not supported")?;
    i64::try_from(since_epoch.as_millis()).map_err(|_| "time out of range".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_accepts_rfc_3339_with_any_zone_and_durations() {
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let utc = 1_714_564_800_000; // 2024-05-01T12:00:00Z
        assert_eq!(parse_time("2024-05-01T12:00:00Z", now), Ok(utc));
        assert_eq!(parse_time("2024-05-01t12:00:00z", now), Ok(utc));
        assert_eq!(parse_time("2024-05-01T14:00:00+02:00", now), Ok(utc));
        assert_eq!(parse_time("2024-05-01T07:30:00-04:30", now), Ok(utc));
        assert_eq!(parse_time("2024-05-01T12:00:00.250Z", now), Ok(utc + 250));
        assert_eq!(parse_time("10m", now), Ok(1_700_000_000_000 - 600_000));
        assert_eq!(parse_time("1h 30m", now), Ok(1_700_000_000_000 - 5_400_000));
        for bad in
            ["", "yesterday", "2024-05-01T12:00:00", "2024-05-01T12:00:00+2:00", "2024-05-01", "ääääääää"]
        {
            assert!(parse_time(bad, now).is_err(), "{bad:?} was accepted");
        }
    }
}
