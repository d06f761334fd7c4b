//! Running a file of statements (`weir sql -f`): sources are registered, every `CREATE SINK`
//! and every bare query (printed as tables) join one pipeline, `EXPLAIN` prints plans.

use std::path::PathBuf;

use arrow::array::RecordBatch;
use weir_runtime::{Checkpointing, JobReport, Metrics, Pipeline, Stream};

use crate::ParquetSink;
use crate::ddl::{SinkDef, Statement, parse_script};
use crate::error::{Result, SqlError};
use crate::plan::StreamContext;
use crate::sink::{LogTopicSink, StdoutTableSink, TextFileSink};
use crate::source::Format;

/// How a script runs.
#[derive(Debug, Clone)]
pub struct ScriptOptions {
    /// The pipeline's name (metrics, dead-letter topic).
    pub name: String,
    /// Subtasks per operator.
    pub parallelism: usize,
    /// Log sources stop at the end offsets they see at start (for one-off queries).
    pub bounded: bool,
    /// Export metrics to this registry.
    pub metrics: Option<Metrics>,
    /// Checkpoint the pipeline (and restore its latest checkpoint on start): state, source
    /// positions and file and log sinks become exactly once (see the crate docs). The location
    /// belongs to this script: another script's checkpoints there would be restored into it.
    /// Default: none (at least once: a restarted job starts over).
    pub checkpointing: Option<Checkpointing>,
    /// Whether the pipeline prints its report on stderr when dead letters or late records went
    /// to no output of their own (see
    /// [`PipelineBuilder::report_on_stderr`](weir_runtime::PipelineBuilder::report_on_stderr)).
    /// Default: `true`; off when the caller prints the returned report.
    pub report_on_stderr: bool,
    /// Whether Ctrl-C / SIGTERM stop the job gracefully (see
    /// [`PipelineBuilder::handle_signals`](weir_runtime::PipelineBuilder::handle_signals)).
    /// Default: `false`, as a library must not take over its host's signals; the `weir` command
    /// turns it on.
    pub handle_signals: bool,
}

impl Default for ScriptOptions {
    fn default() -> Self {
        ScriptOptions {
            name: "sql".into(),
            parallelism: 2,
            bounded: false,
            metrics: None,
            checkpointing: None,
            report_on_stderr: true,
            handle_signals: false,
        }
    }
}

/// A parsed script.
#[derive(Debug, Clone)]
pub struct Script {
    statements: Vec<Statement>,
}

impl Script {
    /// Parses `text` (see [`crate::ddl`]).
    ///
    /// # Errors
    ///
    /// [`SqlError::Parse`].
    pub fn parse(text: &str) -> Result<Script> {
        Ok(Script { statements: parse_script(text)? })
    }

    /// Registers the sources, plans the rest, and runs the pipeline if it has any sink; returns
    /// the printed `EXPLAIN` texts and the job's report.
    ///
    /// # Errors
    ///
    /// The first statement that fails to plan, or [`SqlError::Job`]: the job's error with its
    /// report up to the failure.
    pub async fn run(
        &self,
        ctx: &mut StreamContext,
        options: &ScriptOptions,
    ) -> Result<(Vec<String>, Option<JobReport>)> {
        let mut builder = Pipeline::builder(options.name.clone())
            .parallelism(options.parallelism)
            .report_on_stderr(options.report_on_stderr)
            .handle_signals(options.handle_signals);
        if let Some(m) = &options.metrics {
            builder = builder.metrics(m.clone());
        }
        if let Some(c) = &options.checkpointing {
            builder = builder.checkpointing(c.clone());
        }
        let p = builder.build()?;
        if let Some(log) = ctx.log() {
            p.dead_letters(weir_connectors::LogSink::dead_letters(log, &options.name));
        }
        let mut explained = Vec::new();
        let mut sinks = 0;
        for stmt in &self.statements {
            match stmt {
                Statement::Source(def) => {
                    ctx.register_source(def).await?;
                    if options.bounded {
                        ctx.bound_log_sources();
                    }
                }
                Statement::Explain(q) => explained.push(ctx.explain(q, options.parallelism).await?),
                Statement::Query(q) => {
                    ctx.sql(q).await?.build(&p)?.sink(StdoutTableSink);
                    sinks += 1;
                }
                Statement::Sink(def) => {
                    // Checkpoint ids from the statement's sink, not its position in the script.
                    p.set_uid_scope(Some(&def.name));
                    let stream = ctx.sql(&def.query).await?.build(&p)?;
                    attach_sink(ctx, def, stream)?;
                    p.set_uid_scope(None);
                    sinks += 1;
                }
            }
        }
        if sinks == 0 {
            return Ok((explained, None));
        }
        match p.run_with_report().await {
            (report, Ok(())) => Ok((explained, Some(report))),
            (report, Err(source)) => Err(SqlError::Job { source, report: Box::new(report) }),
        }
    }
}

fn option(def: &SinkDef, field: &str, reason: impl Into<String>) -> SqlError {
    SqlError::Option { object: def.name.clone(), field: field.into(), reason: reason.into() }
}

fn attach_sink(ctx: &StreamContext, def: &SinkDef, stream: Stream<RecordBatch>) -> Result<()> {
    let get = |k: &str| def.options.get(k).map(String::as_str);
    match get("connector") {
        Some("file") => {
            let path =
                PathBuf::from(get("path").ok_or_else(|| option(def, "path", "a file sink needs a path"))?);
            match Format::parse(&def.name, get("format").unwrap_or("json"))? {
                Format::Json => stream.sink(TextFileSink::new(path, false)),
                Format::Csv => stream.sink(TextFileSink::new(path, true)),
                Format::Parquet => {
                    let rows = match get("rows_per_file") {
                        None => 1_000_000,
                        Some(v) => v
                            .parse()
                            .map_err(|_| option(def, "rows_per_file", format!("{v:?} is not a number")))?,
                    };
                    stream.sink(ParquetSink::new(path, rows))
                }
            }
        }
        Some("log") => {
            let log = ctx.log().ok_or_else(|| option(def, "connector", "no log directory is open"))?;
            let topic = get("topic").ok_or_else(|| option(def, "topic", "a log sink needs a topic"))?;
            stream.sink(LogTopicSink::new(log, topic));
        }
        Some("stdout") => stream.sink(StdoutTableSink),
        Some(other) => return Err(option(def, "connector", format!("{other:?} is not file, log or stdout"))),
        None => return Err(option(def, "connector", "missing (file, log or stdout)")),
    }
    Ok(())
}
