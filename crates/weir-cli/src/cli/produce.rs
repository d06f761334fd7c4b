//! `weir produce TOPIC`: append lines read from stdin, one record per line.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};

use anyhow::{Context, Result, bail};
use clap::Args;
use serde::Serialize;
use weir::log::{Error, Log, Record, Topic};

use super::output::{AppendedBeforeError, Output, ReportError, note};

/// Arguments of `weir produce`.
#[derive(Debug, Args)]
#[command(after_help = "Each line read from stdin (bytes, not necessarily UTF-8) is one record; the \
line ending (\\n or \\r\\n) is not part of it, and an empty line is a record with an empty value. \
Records are appended in batches of --batch-size lines, so when typing lines by hand use \
--batch-size 1 to append each at once. A summary goes to stderr (with --json: a JSON object on \
stdout). If an append fails after records were appended, the exit code is 3 and the message says \
how many records of this run are in the log: exactly those, so a retry should skip them.\n\nRecord \
timestamps: the time of the append by default; --timestamp sets one for every record; \
--timestamp-separator reads one at the start of each line (TIME SEP [KEY SEP] VALUE). A time is \
milliseconds since the Unix epoch, an RFC 3339 timestamp (2024-05-01T12:00:00Z) or a duration \
before now (10m).")]
pub(crate) struct ProduceArgs {
    /// The topic to append to.
    topic: String,
    /// Split each line at the first SEP: the text before it is the record's key, the rest its
    /// value. A line without SEP is a keyless record. Without this flag every record is keyless.
    /// `\t` stands for a tab.
    #[arg(long, short = 'k', value_name = "SEP", value_parser = super::separator)]
    key_separator: Option<String>,
    /// Append every record to this partition. Without it, keyed records go to the partition of
    /// their key's hash and keyless records round-robin.
    #[arg(long, short, value_name = "P")]
    partition: Option<u32>,
    /// Give every record this timestamp: milliseconds since the Unix epoch, an RFC 3339
    /// timestamp (2024-05-01T12:00:00Z, 2024-05-01T14:00:00+02:00) or a duration before now
    /// (10m). [default: the time of the append]
    #[arg(long, value_name = "TIME", value_parser = super::values::time, conflicts_with = "timestamp_separator")]
    timestamp: Option<i64>,
    /// Each line starts with its record's timestamp (a TIME, as for --timestamp), then SEP; the
    /// rest is the key (with --key-separator) and value. A line whose timestamp does not parse
    /// fails the command, naming the line. `\t` stands for a tab.
    #[arg(long, value_name = "SEP", value_parser = super::separator)]
    timestamp_separator: Option<String>,
    /// Lines per append.
    #[arg(long, short, value_name = "N", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    batch_size: u64,
}

/// The summary of a `produce` run.
#[derive(Debug, Default, Serialize)]
struct Summary {
    topic: String,
    records: u64,
    /// The partitions appended to, sorted.
    partitions: BTreeSet<u32>,
}

/// Runs `weir produce`, reading stdin.
pub(crate) fn run(log: &Log, args: &ProduceArgs, out: &mut Output) -> Result<()> {
    let stdin = std::io::stdin().lock();
    let summary = produce(log, args, BufReader::with_capacity(1 << 20, stdin))?;
    if out.json() {
        out.json_line(&summary)
    } else {
        let partitions: Vec<String> = summary.partitions.iter().map(u32::to_string).collect();
        note(format_args!(
            "produced {} record{} to topic {} (partitions: {})",
            summary.records,
            if summary.records == 1 { "" } else { "s" },
            summary.topic,
            if partitions.is_empty() { "none".to_owned() } else { partitions.join(", ") },
        ))
        .context(ReportError::Stderr)
    }
}

/// Appends every line of `input`. On an error after records were appended, the error carries
/// [`AppendedBeforeError`] with their exact number.
fn produce(log: &Log, args: &ProduceArgs, input: impl BufRead) -> Result<Summary> {
    let topic = log.topic(&args.topic)?;
    let mut summary = Summary { topic: topic.name().to_owned(), ..Summary::default() };
    match produce_into(&topic, args, input, &mut summary) {
        Ok(()) => Ok(summary),
        Err(e) if summary.records > 0 => {
            Err(e.context(AppendedBeforeError { topic: summary.topic, records: summary.records }))
        }
        Err(e) => Err(e),
    }
}

fn produce_into(
    topic: &Topic,
    args: &ProduceArgs,
    mut input: impl BufRead,
    summary: &mut Summary,
) -> Result<()> {
    if let Some(p) = args.partition
        && p >= topic.partition_count()
    {
        bail!("topic {} has {} partitions; there is no partition {p}", topic.name(), topic.partition_count());
    }
    let separator = args.key_separator.as_deref().map(str::as_bytes);
    let time_separator = args.timestamp_separator.as_deref().map(str::as_bytes);
    let mut line_number = 0u64;
    let batch_size = usize::try_from(args.batch_size).unwrap_or(usize::MAX);
    let mut batch: Vec<Record> = Vec::with_capacity(batch_size.min(1 << 16));
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = input.read_until(b'\n', &mut line).context("cannot read stdin")?;
        if n == 0 {
            break;
        }
        line_number += 1;
        let mut record = match time_separator {
            Some(sep) => {
                match split_at_timestamp(&line, sep) {
                    Ok((time, rest)) => to_record(rest, separator).with_timestamp(time),
                    Err(e) => {
                        // The lines before it are appended: the error says how many are in.
                        append(topic, args.partition, &batch, summary)?;
                        bail!("line {line_number} of stdin: {e}");
                    }
                }
            }
            None => to_record(&line, separator),
        };
        if let Some(t) = args.timestamp {
            record = record.with_timestamp(t);
        }
        batch.push(record);
        if batch.len() >= batch_size {
            append(topic, args.partition, &batch, summary)?;
            batch.clear();
        }
    }
    append(topic, args.partition, &batch, summary)
}

/// Splits a line's leading timestamp field off at the first `sep`: the time in milliseconds
/// since the Unix epoch, and the rest of the line.
fn split_at_timestamp<'a>(line: &'a [u8], sep: &[u8]) -> std::result::Result<(i64, &'a [u8]), String> {
    let Some(at) = line.windows(sep.len()).position(|w| w == sep) else {
        let sep = String::from_utf8_lossy(sep);
        return Err(format!("no timestamp separator {sep:?}: expected TIME{sep}[KEY SEP]VALUE"));
    };
    let field = String::from_utf8_lossy(&line[..at]);
    let time = super::values::time(&field).map_err(|e| format!("bad timestamp {field:?}: {e}"))?;
    Ok((time, &line[at + sep.len()..]))
}

/// One line as a record: without its line ending, split at the first separator if one is given.
fn to_record(line: &[u8], separator: Option<&[u8]>) -> Record {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let split = separator.and_then(|sep| {
        let at = line.windows(sep.len()).position(|w| w == sep)?;
        Some((&line[..at], &line[at + sep.len()..]))
    });
    match split {
        Some((key, value)) => Record::new(value.to_vec()).with_key(key.to_vec()),
        None => Record::new(line.to_vec()),
    }
}

/// Appends one batch and counts it in `summary`; on failure counts exactly the records of the
/// batch that made it into the log.
fn append(topic: &Topic, partition: Option<u32>, batch: &[Record], summary: &mut Summary) -> Result<()> {
    if batch.is_empty() {
        return Ok(());
    }
    let result = match partition {
        Some(p) => topic.append(p, batch).map(|_| vec![p]),
        None => topic.send(batch).map(|positions| positions.iter().map(|pos| pos.partition).collect()),
    };
    match result {
        Ok(partitions) => {
            summary.partitions.extend(partitions);
            summary.records += batch.len() as u64;
            Ok(())
        }
        Err(Error::PartiallyAppended { appended, source, .. }) => {
            summary.partitions.extend(appended.iter().map(|(_, pos)| pos.partition));
            summary.records += appended.len() as u64;
            Err(anyhow::Error::new(*source).context(format!("append to topic {} failed", topic.name())))
        }
        Err(e) => Err(anyhow::Error::new(e).context(format!("append to topic {} failed", topic.name()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_split_at_the_first_separator_and_lose_their_line_ending() {
        let r = to_record(b"k::v::w\r\n", Some(b"::"));
        assert_eq!(r.key.as_deref(), Some(&b"k"[..]));
        assert_eq!(&r.value[..], b"v::w");
        let r = to_record(b"no separator\n", Some(b"::"));
        assert_eq!(r.key, None);
        assert_eq!(&r.value[..], b"no separator");
        let r = to_record(b"last line without newline", None);
        assert_eq!(&r.value[..], b"last line without newline");
        let r = to_record(b":leading\n", Some(b":"));
        assert_eq!(r.key.as_deref(), Some(&b""[..]));
        assert_eq!(&r.value[..], b"leading");
        let r = to_record(b"\xff\xfe:\x80\n", Some(b":"));
        assert_eq!(r.key.as_deref(), Some(&b"\xff\xfe"[..]));
        assert_eq!(&r.value[..], b"\x80");
    }
}
