//! `weir sql`: runs a file of streaming SQL statements, or one query.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use clap::Args;
use weir::log::{Log, LogOptions};
use weir::runtime::Checkpointing;
use weir::sql::{ScaleOut, Script, ScriptOptions, SqlError, StreamContext};

use super::output::{ReportError, Unreported};

/// Arguments of `weir sql`.
#[derive(Debug, Args)]
pub(crate) struct SqlArgs {
    /// A file of statements: CREATE SOURCE, CREATE SINK ... AS SELECT, EXPLAIN, queries.
    /// Relative paths in it are relative to the current directory, not to the file.
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    file: Option<PathBuf>,
    /// A query (or EXPLAIN) over the sources of the file: only the query runs, not the file's
    /// sinks or queries. Its rows print as one table per batch (with --json: JSON lines); over
    /// bounded sources ORDER BY, LIMIT and GROUP BY without a window work as in a batch engine.
    /// A one-off query: never checkpointed (see --checkpoint-interval).
    #[arg(short = 'e', long = "execute", value_name = "SQL")]
    execute: Option<String>,
    /// Subtasks per operator.
    #[arg(long, default_value_t = 2)]
    parallelism: usize,
    /// With -e: keep reading log and Kafka sources as they grow instead of stopping at their
    /// current end.
    #[arg(long)]
    follow: bool,
    /// Checkpoint the job every DURATION (e.g. 200ms, 10s): window state, source positions and
    /// the output of file, log and exactly-once Kafka sinks become exactly once, and a restarted
    /// job resumes from its last checkpoint (these sinks then show results once per
    /// checkpoint). Only with -f, not with -e.
    #[arg(
        long,
        value_name = "DURATION",
        value_parser = parse_interval,
        requires = "file",
        conflicts_with = "execute"
    )]
    checkpoint_interval: Option<Duration>,
    /// Where checkpoints are kept; one directory per script [default: <--dir>/checkpoints/sql].
    #[arg(long, value_name = "DIR", value_parser = parse_dir, requires = "checkpoint_interval")]
    checkpoint_dir: Option<PathBuf>,
    /// Ignore the existing checkpoints and start over: file sinks' output is replaced; log
    /// sources start at their consumer groups' committed offsets (a new group reads again).
    #[arg(long, requires = "checkpoint_interval")]
    from_scratch: bool,
    /// Run the file as one of any number of processes started alike: they share the
    /// partitions of its Kafka source through the source's consumer group, one task per
    /// partition, until Ctrl-C; a process that dies or leaves hands its tasks, and their state,
    /// to the others, and one that joins takes some over. Task state lives under
    /// --checkpoint-dir, which every process must reach. A GROUP BY must group by the column
    /// the topic is keyed by, declared on the source with 'key.fields'.
    #[arg(long, requires_all = ["file", "checkpoint_interval"], conflicts_with = "from_scratch")]
    scale_out: bool,
}

/// A checkpoint interval: a humantime duration above zero.
fn parse_interval(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| format!("{e} (write e.g. 200ms, 10s, 1m)"))?;
    if d.is_zero() {
        return Err("must be above zero".to_owned());
    }
    Ok(d)
}

/// A checkpoint directory: not empty.
fn parse_dir(s: &str) -> Result<PathBuf, String> {
    if s.trim().is_empty() {
        return Err("must not be empty".to_owned());
    }
    Ok(PathBuf::from(s))
}

/// The statements `weir sql` runs: the file's, or with `-e` the file's sources and the query
/// (a pipeline file's sinks do not run when it only provides the sources of a query).
fn script(args: &SqlArgs) -> Result<Script> {
    let file = match &args.file {
        Some(f) => {
            let text = std::fs::read_to_string(f).with_context(|| format!("cannot read {}", f.display()))?;
            Some(Script::parse(&text).with_context(|| format!("{}", f.display()))?)
        }
        None => None,
    };
    let script = match (file, &args.execute) {
        (None, None) => bail!("nothing to run: give -f FILE and/or -e SQL"),
        (Some(file), None) => file,
        (file, Some(query)) => {
            let query = Script::parse(query)?;
            match file {
                Some(file) => file.sources_only().then(query),
                None => query,
            }
        }
    };
    Ok(script)
}

/// Runs `weir sql`; with `json`, rows print as JSON lines instead of tables.
pub(crate) fn run(dir: &std::path::Path, json: bool, args: &SqlArgs) -> Result<()> {
    let script = script(args)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| anyhow!("cannot start the async runtime: {e}"))?;
    runtime.block_on(async {
        // The log directory is opened (and created) only for a script that reads or writes a
        // log topic: SQL over files leaves no directory behind.
        let mut ctx = if script.uses_log() {
            StreamContext::with_log(Log::open(dir, LogOptions::default())?)
        } else {
            StreamContext::new()
        };
        let name = "sql";
        let checkpointing = args.checkpoint_interval.map(|interval| {
            let location = args.checkpoint_dir.clone().unwrap_or_else(|| dir.join("checkpoints").join(name));
            Checkpointing::to_dir(location).interval(interval).from_scratch(args.from_scratch)
        });
        let options = ScriptOptions {
            name: name.into(),
            parallelism: args.parallelism,
            bounded: args.execute.is_some() && !args.follow,
            metrics: None,
            checkpointing,
            // Printed once, below, with where the dead letters are.
            report_on_stderr: false,
            stdout_json: json,
            // The command's job is the pipeline: Ctrl-C drains it.
            handle_signals: true,
        };
        if let (true, Some(interval)) = (args.scale_out, args.checkpoint_interval) {
            let scale_out = ScaleOut {
                dir: args.checkpoint_dir.clone().unwrap_or_else(|| dir.join("checkpoints").join(name)),
                interval,
            };
            let options = ScriptOptions { checkpointing: None, ..options };
            let shutdown = async {
                let _ = tokio::signal::ctrl_c().await;
            };
            let explained = script.run_tasks(&mut ctx, &options, &scale_out, shutdown).await?;
            let mut stdout = std::io::stdout().lock();
            for e in explained {
                writeln!(stdout, "{e}").context(ReportError::Stdout)?;
            }
            return stdout.flush().context(ReportError::Stdout);
        }
        let (explained, report) = match script.run(&mut ctx, &options).await {
            Ok(done) => done,
            Err(SqlError::Job { source, report }) => {
                if has_losses(&report) {
                    // The job failed, which its exit code says: a summary lost to a closed or
                    // full stderr changes nothing more.
                    let _ = summary(dir, name, &report);
                }
                return Err(source.into());
            }
            Err(e) => return Err(e.into()),
        };
        let mut stdout = std::io::stdout().lock();
        for e in explained {
            writeln!(stdout, "{e}").context(ReportError::Stdout)?;
        }
        stdout.flush().context(ReportError::Stdout)?;
        if let Some(report) = report.filter(has_losses) {
            // The job is done: a summary lost to a closed or full stderr is exit code 4.
            summary(dir, name, &report).context(ReportError::Stderr).context(Unreported)?;
        }
        Ok(())
    })
}

/// Whether the job dead-lettered or dropped late records: then its summary is printed.
fn has_losses(report: &weir::runtime::JobReport) -> bool {
    report.dead_letters > 0 || report.late_records > 0
}

/// The job's one summary on stderr: the pipeline's report (dead letters per operator and the
/// first few, late records) and the topic that keeps the dead letters.
fn summary(dir: &std::path::Path, name: &str, report: &weir::runtime::JobReport) -> std::io::Result<()> {
    let mut stderr = std::io::stderr().lock();
    writeln!(stderr, "weir: pipeline {name}: {report}")?;
    if report.dead_letters > 0 && report.dead_letter_sink {
        let topic = weir::connectors::LogSink::dead_letter_topic(name);
        writeln!(
            stderr,
            "weir: the dead letters are in topic {topic}: weir --dir {} consume {topic}",
            dir.display()
        )?;
    }
    stderr.flush()
}
