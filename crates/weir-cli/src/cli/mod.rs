//! Command-line parsing and dispatch for the `weir` binary.
//!
//! Every command opens the log in `--dir` (default `./weir-data`, or `$WEIR_DIR`), does its work
//! and closes the log (`weir sql` opens it only for a script that reads or writes a log topic:
//! SQL over files needs no log directory and creates none). Commands that only read (`topic
//! list`/`describe`, `group list`/`describe`, `group reset-offsets` without `--execute`, `consume` without `--group` or with `--no-commit`,
//! also with `--follow`) open it read-only: they work while another process (a running
//! pipeline, a `weir produce`) owns the directory, and see what it has published so far.
//! Commands that change the log take the directory's lock: one such process at a time; another
//! fails with a message naming the owner's process id.
//!
//! # Output
//!
//! - Human-readable (default): aligned tables for `list` and `describe`; raw record values, one
//!   per line, for `consume`; notes and summaries on stderr.
//! - `--json`: [JSON Lines](https://jsonlines.org) on stdout, one JSON object per line: one per
//!   item for `topic list` and `group list`, one per record for `consume`, one per partition for
//!   `group reset-offsets`, one object for `describe`, `create`, `alter`, `delete` and `produce`
//!   (its summary), one per result row for `sql`.
//!
//! # Exit codes
//!
//! The exit code says what happened to the data, also when stdout or stderr is closed, broken
//! or full (nothing panics on a failed write; a message that cannot be written is lost, the code
//! is not):
//!
//! - `0`: success (also when the reader of stdout went away, as in `weir consume t | head`);
//! - `1`: an error, and this command changed nothing in the log (no record appended, no topic
//!   created or deleted); a one-line `weir: error: …` message on stderr names the problem;
//! - `2`: a usage error (unknown flag, bad value), reported by the argument parser;
//! - `3`: `produce` appended some records, then failed: the message says how many, and exactly
//!   those are in the log (retry only the rest);
//! - `4`: the command did everything it was asked (records appended, topic created or deleted),
//!   but could not write its report to stdout or stderr: do not retry it.
//!
//! # Logging
//!
//! `tracing` output goes to stderr, filtered by `RUST_LOG` (default `warn`), as text or, with
//! `--log-format json`, as one JSON object per event.

pub(crate) mod consume;
pub(crate) mod group;
pub(crate) mod output;
pub(crate) mod produce;
pub(crate) mod sql;
pub(crate) mod topic;
pub(crate) mod values;

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Result, anyhow, bail};
use clap::{Parser, Subcommand};
use weir::log::{Error, Log, LogOptions};

use self::output::Output;

/// `weir`: command-line access to a Weir log directory.
#[derive(Debug, Parser)]
#[command(name = "weir", version, long_about = None)]
#[command(
    about = "Manage topics, produce and consume records, and inspect consumer groups of a Weir log directory"
)]
#[command(after_help = "With --json, every command prints JSON Lines on stdout: one JSON object per line.\n\
Logging goes to stderr; set RUST_LOG (default: warn) to see more.\n\n\
Reading commands (topic list/describe, group list/describe, group reset-offsets without --execute, \
consume without --group or with --no-commit) work while another process owns the log directory; \
commands that change the log take its lock, one process at a time.\n\n\
Exit codes: 0 success; 1 error, nothing changed in the log; 2 usage error; 3 produce appended \
some records, then failed (the message says how many; exactly those are in the log); 4 done, \
but the report could not be written to stdout/stderr (do not retry).")]
pub(crate) struct Cli {
    /// The log directory.
    #[arg(long, global = true, env = "WEIR_DIR", default_value = "./weir-data", value_name = "DIR")]
    dir: PathBuf,
    /// Machine-readable output: JSON Lines on stdout (one JSON object per line).
    #[arg(long, global = true)]
    json: bool,
    /// The format of log messages on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub(crate) log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create, list, describe, alter and delete topics.
    Topic {
        #[command(subcommand)]
        command: topic::TopicCommand,
    },
    /// Append lines read from stdin to a topic, one record per line.
    Produce(produce::ProduceArgs),
    /// Print a topic's records.
    Consume(consume::ConsumeArgs),
    /// List, describe, reset and delete consumer groups.
    Group {
        #[command(subcommand)]
        command: group::GroupCommand,
    },
    /// Run streaming SQL: sources and sinks of a file (-f), or a query (-e).
    Sql(sql::SqlArgs),
}

/// How log messages are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per event (for log shippers).
    Json,
}

/// Sets up `tracing` output to stderr, filtered by `RUST_LOG` (default `warn`, without the
/// pipeline's own events: `weir sql` prints its job's error and its report of dead letters
/// once, itself). A failed write loses the message and nothing else (tracing-subscriber's own
/// report of it, which would go to the same stderr with a panicking `eprintln!`, is off).
pub(crate) fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,weir_runtime::pipeline::job=off"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .log_internal_errors(false);
    match format {
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// The exit code for a failed command (see the module docs).
pub(crate) fn exit_code(error: &anyhow::Error) -> ExitCode {
    if error.downcast_ref::<output::AppendedBeforeError>().is_some() {
        ExitCode::from(output::EXIT_APPENDED)
    } else if error.downcast_ref::<output::Unreported>().is_some() {
        ExitCode::from(output::EXIT_UNREPORTED)
    } else if output::is_broken_pipe(error) {
        // `weir consume … | head`: the reader went away, which is how such a pipeline ends.
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Runs one parsed command line.
pub(crate) fn run(cli: Cli) -> Result<()> {
    // `sql` writes from its pipeline's tasks; the others through one locked, buffered stdout.
    if let Command::Sql(args) = &cli.command {
        return sql::run(&cli.dir, cli.json, args);
    }
    let mut out = Output::new(cli.json);
    // Whether the command changes the log: then a failure to report is `Unreported`.
    let mut changes = false;
    let result = match cli.command {
        Command::Topic { command } => {
            let access = command.access();
            changes = access != Access::Read;
            let log = open_log(&cli.dir, access)?;
            topic::run(&log, command, &mut out)
        }
        Command::Produce(args) => {
            changes = true;
            produce::run(&open_log(&cli.dir, Access::Write)?, &args, &mut out)
        }
        Command::Consume(args) => {
            let log = open_log(&cli.dir, if args.commits() { Access::Write } else { Access::Read })?;
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .map_err(|e| anyhow!("cannot start the async runtime: {e}"))?;
            runtime.block_on(consume::run(&log, &args, &mut out))
        }
        Command::Group { command } => {
            let access = command.access();
            changes = access != Access::Read;
            group::run(&open_log(&cli.dir, access)?, command, &mut out)
        }
        Command::Sql(_) => Ok(()),
    };
    result.and_then(|()| out.flush()).map_err(|e| {
        // A command that made its change and then failed only to write about it.
        let appended = e.downcast_ref::<output::AppendedBeforeError>().is_some();
        if changes && !appended && e.downcast_ref::<output::ReportError>().is_some() {
            e.context(output::Unreported)
        } else {
            e
        }
    })
}

/// How a command opens the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    /// Read-only, beside a process that may own the directory; changes nothing.
    Read,
    /// With the directory's lock, to change an existing log.
    Write,
    /// With the lock, creating the log if there is none (`topic create`).
    Create,
}

/// Opens the log in `dir`. Only `topic create` may create a new log: for every other command a
/// directory that holds no log is an error (most likely a typo in `--dir`), not an empty log.
fn open_log(dir: &Path, access: Access) -> Result<Log> {
    if access != Access::Create && !dir.join("topics").is_dir() {
        bail!(
            "no weir log in {} (create a topic with `weir topic create`, or point --dir or WEIR_DIR at a log)",
            dir.display()
        );
    }
    let log = match access {
        Access::Read => Log::open_read_only(dir)?,
        Access::Write | Access::Create => Log::open(dir, LogOptions::default()).map_err(|e| match e {
            Error::Locked { .. } => anyhow!(
                "{e}: one process at a time can change a log directory. Commands that only read work \
                 beside it: topic list/describe, group list/describe, group reset-offsets without \
                 --execute, consume without --group or with --no-commit (also with --follow)"
            ),
            e => e.into(),
        })?,
    };
    for (topic, error) in log.unavailable_topics() {
        let _ = output::note(format_args!(
            "weir: warning: topic {topic} could not be opened ({error}); the other topics are available \
             (`weir topic delete {topic}` removes it)"
        ));
    }
    Ok(log)
}

/// A separator argument: non-empty, with `\t` for a tab (shells make a literal tab awkward).
pub(crate) fn separator(s: &str) -> Result<String, String> {
    if s.is_empty() {
        return Err("the separator must not be empty".to_owned());
    }
    Ok(s.replace("\\t", "\t"))
}
