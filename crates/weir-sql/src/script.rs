//! Running a file of statements (`weir sql -f`): sources are registered, every `CREATE SINK`
//! and every bare query (printed as tables, or JSON lines) join one pipeline, `EXPLAIN` prints
//! plans. A source that several of them read is read once and forked, so each of its records
//! is decoded once: a line that does not decode is one dead letter, however many queries read
//! it.

use std::collections::BTreeMap;
use std::path::PathBuf;

use arrow::array::RecordBatch;
use weir_runtime::{Checkpointing, JobReport, Metrics, Pipeline, Stream};

use crate::ParquetSink;
use crate::ddl::{SinkDef, Statement, check_options, parse_script};
use crate::error::{Result, SqlError};
use crate::plan::{SqlStream, StreamContext};
use crate::sink::{LogTopicSink, StdoutJsonSink, StdoutTableSink, TextFileSink};
use crate::source::Format;

/// How a script runs.
#[derive(Debug, Clone)]
pub struct ScriptOptions {
    /// The pipeline's name (metrics, dead-letter topic).
    pub name: String,
    /// Subtasks per operator.
    pub parallelism: usize,
    /// Log and Kafka sources stop at the end offsets they see at start (for one-off queries).
    pub bounded: bool,
    /// Export metrics to this registry.
    pub metrics: Option<Metrics>,
    /// Checkpoint the pipeline (and restore its latest checkpoint on start): state, source
    /// positions and file, log and exactly-once Kafka sinks become exactly once (see the crate
    /// docs; an exactly-once Kafka sink over an unbounded source needs it). The location
    /// belongs to this script: another script's checkpoints there would be restored into it.
    /// Default: none (at least once: a restarted job starts over).
    pub checkpointing: Option<Checkpointing>,
    /// Whether the pipeline prints its report on stderr when dead letters or late records went
    /// to no output of their own (see
    /// [`PipelineBuilder::report_on_stderr`](weir_runtime::PipelineBuilder::report_on_stderr)).
    /// Default: `true`; off when the caller prints the returned report.
    pub report_on_stderr: bool,
    /// Bare queries, and `stdout` sinks without a `format`, print JSON lines (one object per
    /// row) instead of tables (`weir sql --json`). Default: `false`.
    pub stdout_json: bool,
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
            stdout_json: false,
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

    /// The script's `CREATE SOURCE` statements alone: its sinks, queries and `EXPLAIN`s
    /// dropped. `weir sql -f pipeline.sql -e QUERY` runs `QUERY` over the sources of a pipeline
    /// file this way, without running (and rewriting the outputs of) the file's sinks.
    pub fn sources_only(&self) -> Script {
        let statements =
            self.statements.iter().filter(|s| matches!(s, Statement::Source(_))).cloned().collect();
        Script { statements }
    }

    /// This script followed by the statements of `next`.
    #[must_use]
    pub fn then(mut self, next: Script) -> Script {
        self.statements.extend(next.statements);
        self
    }

    /// Whether a source or sink of the script reads or writes a log topic (`connector =
    /// 'log'`): only then does running it need a [`StreamContext::with_log`].
    pub fn uses_log(&self) -> bool {
        self.statements.iter().any(|s| {
            let options = match s {
                Statement::Source(def) => &def.options,
                Statement::Sink(def) => &def.options,
                Statement::Explain(_) | Statement::Query(_) => return false,
            };
            options.get("connector").is_some_and(|c| c.eq_ignore_ascii_case("log"))
        })
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
        let (explained, planned) = self.plan(ctx, options).await?;
        if planned.is_empty() {
            return Ok((explained, None));
        }
        build(&p, ctx, &planned, options, Place::Alone)?;
        match p.run_with_report().await {
            (report, Ok(())) => Ok((explained, Some(report))),
            (report, Err(source)) => Err(SqlError::Job { source, report: Box::new(report) }),
        }
    }

    /// Registers the sources and plans every query and sink, in script order (a query sees the
    /// sources declared before it); returns the `EXPLAIN` texts and the planned statements.
    async fn plan(&self, ctx: &mut StreamContext, options: &ScriptOptions) -> Result<(Vec<String>, Planned)> {
        let mut explained = Vec::new();
        let mut planned = Vec::new();
        for stmt in &self.statements {
            match stmt {
                Statement::Source(def) => {
                    ctx.register_source(def).await?;
                    if options.bounded {
                        ctx.bound_log_sources();
                    }
                }
                Statement::Explain(q) => explained.push(ctx.explain(q, options.parallelism).await?),
                Statement::Query(q) => planned.push((ctx.sql(q).await?, None)),
                Statement::Sink(def) => planned.push((ctx.sql(&def.query).await?, Some(def.clone()))),
            }
        }
        Ok((explained, planned))
    }
}

/// Every query and sink of a script, planned, with its sink (none: printed).
type Planned = Vec<(SqlStream, Option<SinkDef>)>;

/// Where a script's pipeline runs: alone, or as one task of a scale-out run (see
/// [`Script::run_tasks`]), where a Kafka source reads the task's partition and a Kafka sink
/// writes in the task's transactions.
#[derive(Clone, Copy)]
pub(crate) enum Place<'a> {
    /// The whole job in one pipeline.
    Alone,
    /// One task of a task group.
    #[cfg(feature = "kafka")]
    Task(&'a weir_kafka::Task),
    #[doc(hidden)]
    #[cfg(not(feature = "kafka"))]
    _Unused(std::marker::PhantomData<&'a ()>),
}

/// Builds the planned statements into `p`. A source that several of them read is read once,
/// and forked: each of its records is decoded once (a bad one is one dead letter), whatever
/// reads it. Checkpoint ids come from the source's and the sinks' names.
fn build(
    p: &Pipeline,
    ctx: &StreamContext,
    planned: &Planned,
    options: &ScriptOptions,
    place: Place<'_>,
) -> Result<()> {
    let mut readers: BTreeMap<&str, usize> = BTreeMap::new();
    for (stream, _) in planned {
        *readers.entry(stream.source().name.as_str()).or_default() += 1;
    }
    let mut shared: BTreeMap<&str, Vec<Stream<RecordBatch>>> = BTreeMap::new();
    for (stream, _) in planned {
        let name = stream.source().name.as_str();
        let n = readers.get(name).copied().unwrap_or(0);
        if n < 2 || shared.contains_key(name) {
            continue;
        }
        p.set_uid_scope(Some(&format!("source {name}")));
        let mut rest = stream.source().stream_at(p, place)?;
        let mut branches = Vec::with_capacity(n);
        for _ in 1..n {
            let (branch, next) = rest.fork();
            branches.push(branch);
            rest = next;
        }
        branches.push(rest);
        p.set_uid_scope(None);
        shared.insert(name, branches);
    }
    for (stream, sink) in planned {
        // Checkpoint ids from the statement's sink, not its position in the script.
        p.set_uid_scope(sink.as_ref().map(|def| def.name.as_str()));
        let input = match shared.get_mut(stream.source().name.as_str()).and_then(Vec::pop) {
            Some(input) => input,
            None => stream.source().stream_at(p, place)?,
        };
        // Named after the sink: the ids after a fork do not depend on the branch.
        let uid = sink.as_ref().map(|def| format!("{}/scan", def.name));
        let shared_input = readers.get(stream.source().name.as_str()).copied().unwrap_or(0) > 1;
        let built = stream.build_on(input, if shared_input { uid.as_deref() } else { None });
        match sink {
            Some(def) => attach_sink(ctx, def, stream, built, options, place)?,
            None => stdout(built, options.stdout_json),
        }
        p.set_uid_scope(None);
    }
    Ok(())
}

/// How a script runs as one of many processes (see [`Script::run_tasks`]).
#[cfg(feature = "kafka")]
#[derive(Debug, Clone)]
pub struct ScaleOut {
    /// Where each task checkpoints (under `<dir>/<group>/<topic>-<partition>`): a directory
    /// every process of the run reaches.
    pub dir: PathBuf,
    /// How often tasks checkpoint, which is how often their Kafka transactions commit.
    pub interval: std::time::Duration,
}

#[cfg(feature = "kafka")]
impl Script {
    /// Runs the script as one of any number of processes started alike, until `shutdown`:
    /// they share the partitions of its Kafka source through the source's consumer group
    /// (`properties.group.id`), one task per partition, each running every statement over its
    /// partition with its state checkpointed under [`ScaleOut::dir`]. A process that dies or
    /// leaves hands its tasks, and their state, to the others; one that joins takes some over
    /// (weir-kafka's `KafkaTasks`). Exactly-once Kafka sinks commit each task's output with its
    /// input offsets. Returns the printed `EXPLAIN` texts.
    ///
    /// The script reads one Kafka source (one topic, unbounded) and writes Kafka sinks or
    /// stdout (every process would write a file or log topic of its own). A `GROUP BY` runs per
    /// partition, so it must group by the column the topic is keyed by, declared on the source
    /// with `'key.fields' = '<column>'`; otherwise the script is refused, saying so.
    ///
    /// # Errors
    ///
    /// A statement that fails to plan, a script that cannot run this way (as above), or what
    /// the task group fails with.
    pub async fn run_tasks(
        &self,
        ctx: &mut StreamContext,
        options: &ScriptOptions,
        scale_out: &ScaleOut,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> Result<Vec<String>> {
        let (explained, planned) = self.plan(ctx, options).await?;
        if planned.is_empty() {
            return Ok(explained);
        }
        let source = scale_out_source(&planned)?;
        let topic = source.topics().first().cloned().unwrap_or_default();
        let mut tasks = weir_kafka::KafkaTasks::new(source.config().clone(), topic, source.group())
            .checkpoint_dir(&scale_out.dir)
            .checkpoint_interval(scale_out.interval);
        if let Some(m) = &options.metrics {
            tasks = tasks.metrics(m);
        }
        let (ctx, options) = (ctx.clone(), options.clone());
        tasks
            .run(
                move |task| {
                    let p =
                        task.pipeline(&options.name).report_on_stderr(options.report_on_stderr).build()?;
                    build(&p, &ctx, &planned, &options, Place::Task(task)).map_err(|e| match e {
                        SqlError::Runtime(e) => e,
                        other => {
                            weir_runtime::Error::InvalidConfig { field: "script", reason: other.to_string() }
                        }
                    })?;
                    Ok(p)
                },
                shutdown,
            )
            .await?;
        Ok(explained)
    }
}

/// The one Kafka source of a scale-out run, once every statement is found fit for it.
#[cfg(feature = "kafka")]
fn scale_out_source(planned: &Planned) -> Result<weir_kafka::KafkaSource> {
    use crate::source::Connector;
    let unfit = |why: String| SqlError::Unsupported(format!("a scale-out run (--scale-out): {why}"));
    let mut found: Option<(&str, &weir_kafka::KafkaSource, Option<&String>)> = None;
    for (stream, sink) in planned {
        let config = stream.source();
        let what = sink.as_ref().map_or_else(|| "a query".to_owned(), |def| format!("sink {}", def.name));
        let Connector::Kafka { source, topics, bounded, key, .. } = &config.connector else {
            return Err(unfit(format!("{what} reads {}, not a Kafka source", config.name)));
        };
        if topics.len() != 1 || *bounded {
            return Err(unfit(format!("source {} must read one topic, unbounded", config.name)));
        }
        match found {
            Some((name, ..)) if name != config.name => {
                return Err(unfit(format!(
                    "{what} reads {}, another source than {name}: read one",
                    config.name
                )));
            }
            _ => found = Some((&config.name, source, key.as_ref())),
        }
        if stream.aggregates() && !key.as_ref().is_some_and(|k| stream.groups_by_source_column(k)) {
            return Err(unfit(format!(
                "{what} groups rows, and each task sees one partition of topic {}, so the rows of a group \
                 must all be in one partition: group by the column the topic is keyed by, declared on the \
                 source ('key.fields' = '<column>' on {}), as it is (not renamed or computed); or write the \
                 rows keyed by a GROUP BY column to another topic first (a Kafka sink with 'key.fields') and \
                 aggregate that topic",
                topics[0], config.name
            )));
        }
        if let Some(def) = sink {
            let connector = def.options.get("connector").map(|c| c.to_ascii_lowercase());
            if !matches!(connector.as_deref(), Some("kafka" | "stdout")) {
                return Err(option(
                    def,
                    "connector",
                    "a scale-out run writes Kafka topics or stdout: every process would write a file or log topic of its own",
                ));
            }
        }
    }
    found.map(|(_, source, _)| source.clone()).ok_or_else(|| unfit("nothing to run".into()))
}

fn option(def: &SinkDef, field: &str, reason: impl Into<String>) -> SqlError {
    SqlError::Option { object: def.name.clone(), field: field.into(), reason: reason.into() }
}

/// Prints `stream` on stdout: JSON lines if `json`, else tables.
fn stdout(stream: Stream<RecordBatch>, json: bool) {
    if json {
        stream.sink(StdoutJsonSink);
    } else {
        stream.sink(StdoutTableSink);
    }
}

#[cfg_attr(not(feature = "kafka"), allow(unused_variables))]
fn attach_sink(
    ctx: &StreamContext,
    def: &SinkDef,
    planned: &SqlStream,
    stream: Stream<RecordBatch>,
    options: &ScriptOptions,
    place: Place<'_>,
) -> Result<()> {
    let get = |k: &str| def.options.get(k).map(String::as_str);
    match get("connector") {
        Some("file") => {
            check_options(
                &def.name,
                "a file sink",
                &def.options,
                &["connector", "path", "format", "rows_per_file"],
            )?;
            let path = get("path").ok_or_else(|| option(def, "path", "a file sink needs a path"))?;
            let path = PathBuf::from(crate::plan::absolute(&def.name, path)?);
            match Format::parse(&def.name, get("format").unwrap_or("json"))? {
                Format::Json => stream.sink(TextFileSink::new(path, false)),
                Format::Csv => stream.sink(TextFileSink::new(path, true)),
                Format::Raw => return Err(option(def, "format", "raw is a format of Kafka sources")),
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
            check_options(&def.name, "a log sink", &def.options, &["connector", "topic", "format"])?;
            if let Some(f) = get("format").filter(|f| Format::parse(&def.name, f).ok() != Some(Format::Json))
            {
                return Err(option(def, "format", format!("{f:?}: a log sink writes json")));
            }
            let log = ctx.log().ok_or_else(|| option(def, "connector", "no log directory is open"))?;
            let topic = get("topic").ok_or_else(|| option(def, "topic", "a log sink needs a topic"))?;
            stream.sink(LogTopicSink::new(log, topic));
        }
        Some("stdout") => {
            check_options(&def.name, "a stdout sink", &def.options, &["connector", "format"])?;
            let json = match get("format").map(str::to_ascii_lowercase).as_deref() {
                None => options.stdout_json,
                Some("table") => false,
                Some("json" | "jsonl" | "ndjson" | "json_lines") => true,
                Some(other) => return Err(option(def, "format", format!("{other:?} is not table or json"))),
            };
            stdout(stream, json);
        }
        #[cfg(feature = "kafka")]
        Some("kafka") => {
            let (parallelism, checkpointed) = match place {
                Place::Task(_) => (1, true),
                Place::Alone => (options.parallelism, options.checkpointing.is_some()),
            };
            let mut plan = crate::kafka::sink(
                &def.name,
                &def.options,
                &planned.schema(),
                parallelism,
                checkpointed,
                planned.source().is_bounded(),
            )?;
            if let Place::Task(task) = place {
                plan.sink = plan.sink.for_task(task);
            }
            // An exactly-once sink has one writer: every row goes to subtask 0.
            let stream = if plan.to_first { stream.partition_by(crate::exec::ToFirst) } else { stream };
            stream.sink(plan.sink);
        }
        #[cfg(not(feature = "kafka"))]
        Some("kafka") => return Err(option(def, "connector", crate::plan::NO_KAFKA)),
        Some(other) => {
            return Err(option(def, "connector", format!("{other:?} is not file, log, kafka or stdout")));
        }
        None => return Err(option(def, "connector", "missing (file, log, kafka or stdout)")),
    }
    Ok(())
}
