//! Planning: SQL text → DataFusion's logical and physical plans → a chain of streaming
//! operators on Weir's runtime.
//!
//! Every source is registered with DataFusion as an empty table of its schema (plus
//! `window_start` and `window_end` when the query has a window function), so DataFusion
//! resolves names, checks types, optimises (projection pushdown, constant folding, …) and
//! builds physical expressions and aggregate functions. The physical plan — one partition, so
//! no repartitioning — is then read from the scan up: filters and projections become
//! stateless operators, the `AggregateExec` becomes an exchange by its group keys and a
//! [`WindowAggregate`](crate::exec::WindowAggregate) driven by watermarks. Anything else (a
//! sort, a limit, a join, `OVER (...)`) is refused with a message that says what to write.
//!
//! Before DataFusion sees a query, its expressions' nesting depth is checked against
//! [`MAX_EXPRESSION_DEPTH`]: DataFusion plans, optimises and evaluates expressions
//! recursively, so thousands of terms joined by `AND` or `+` (a left-deep tree as deep as it is
//! long) would overflow the stack and abort the process. Checking and planning run on a thread
//! of their own with a large stack (parsing such a chain is iterative, but dropping it,
//! visiting it and planning it are not; an unoptimised build's planner needs tens of KiB per
//! level), and the check stops visiting at the limit.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::catalog::TableProvider;
use datafusion::common::DFSchema;
use datafusion::datasource::empty::EmptyTable;
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::logical_expr::{AggregateUDF, ScalarUDF};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode};
use datafusion::physical_plan::empty::EmptyExec;
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::prelude::{SessionConfig, SessionContext};
use weir_log::Log;
use weir_runtime::{Pipeline, Stream, Watermarks};

use crate::ddl::{SourceDef, check_options};
use crate::error::{Result, SqlError};
use crate::exec::{
    AggregateSpec, BatchQuery, Filter, KeyHash, Project, Scan, ToFirst, WindowAggregate, max_event_time,
};
use crate::source::{Connector, Format, SourceConfig};
use crate::window::{self, WINDOW_END, WINDOW_START, WindowCall, WindowKind};

/// The `WITH` options of a `file` source.
const FILE_SOURCE_OPTIONS: [&str; 5] = ["connector", "path", "format", "follow", "header"];
/// The `WITH` options of a `log` source.
const LOG_SOURCE_OPTIONS: [&str; 5] = ["connector", "topic", "group", "bounded", "format"];

/// Why `connector = 'kafka'` is refused by a build without the `kafka` feature.
#[cfg(not(feature = "kafka"))]
pub(crate) const NO_KAFKA: &str =
    "this build has no Kafka connector (the cargo feature `kafka` of weir-sql, or of weir with `sql`)";

/// How long a source split may send nothing before it stops holding the watermark back.
const IDLE_TIMEOUT: Duration = Duration::from_secs(10);

/// The deepest an expression of a query may nest: 256 levels. `a AND b AND c` is three levels
/// deep (`(a AND b) AND c`), so this is also the most terms one chain of `AND`, `OR`, `+`, …
/// may have; a longer disjunction of equalities is an `IN (...)` list, which is one level.
/// Deeper queries are refused with [`SqlError::Unsupported`] ("too deeply nested").
pub const MAX_EXPRESSION_DEPTH: usize = 256;

/// The stack of the thread that checks and plans a query (reserved, touched only as needed).
const PLANNER_STACK_BYTES: usize = 256 << 20;

/// Runs `plan` to completion on a thread with a [`PLANNER_STACK_BYTES`] stack.
fn on_planner_thread<T: Send>(plan: impl Future<Output = Result<T>> + Send) -> Result<T> {
    std::thread::scope(|scope| {
        let thread = std::thread::Builder::new()
            .name("weir-sql-planner".into())
            .stack_size(PLANNER_STACK_BYTES)
            .spawn_scoped(scope, move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .build()
                    .map_err(|e| SqlError::Plan(format!("cannot start the planner's runtime: {e}")))?;
                runtime.block_on(plan)
            })
            .map_err(|e| SqlError::Plan(format!("cannot start the planner's thread: {e}")))?;
        thread.join().unwrap_or_else(|_| Err(SqlError::Plan("planning the query panicked".into())))
    })
}

/// Refuses `query` if an expression in it nests deeper than [`MAX_EXPRESSION_DEPTH`], or its
/// parentheses and subqueries deeper than the SQL parser's recursion limit. A query that does
/// not parse otherwise passes: DataFusion reports its syntax error.
fn check_nesting(query: &str) -> Result<()> {
    match deepest_expression(query) {
        Err(limit) => Err(SqlError::Unsupported(format!(
            "the query is too deeply nested for the SQL parser: {limit}; nest fewer parentheses \
             or subqueries"
        ))),
        Ok(Some(depth)) if depth > MAX_EXPRESSION_DEPTH => Err(SqlError::Unsupported(format!(
            "the query is too deeply nested: an expression nests more than {MAX_EXPRESSION_DEPTH} \
             levels deep (each term of a chain of AND, OR, + … is a level); split it into \
             several queries or computed columns, or write a list of alternatives as IN (...)"
        ))),
        _ => Ok(()),
    }
}

/// The nesting depth of the deepest expression of `query` (counted up to just past
/// [`MAX_EXPRESSION_DEPTH`]), or `None` if it does not parse; the parser's error if it nests
/// deeper than the parser's recursion limit.
fn deepest_expression(query: &str) -> std::result::Result<Option<usize>, String> {
    use std::ops::ControlFlow;

    use datafusion::sql::parser::{DFParser, Statement};
    use datafusion::sql::sqlparser::ast::{Expr, Visit, Visitor};

    struct Depth {
        now: usize,
        max: usize,
    }
    impl Visitor for Depth {
        type Break = ();
        fn pre_visit_expr(&mut self, _: &Expr) -> ControlFlow<()> {
            self.now += 1;
            self.max = self.max.max(self.now);
            // Stop at the limit: visiting is recursive too.
            if self.now > MAX_EXPRESSION_DEPTH { ControlFlow::Break(()) } else { ControlFlow::Continue(()) }
        }
        fn post_visit_expr(&mut self, _: &Expr) -> ControlFlow<()> {
            self.now -= 1;
            ControlFlow::Continue(())
        }
    }
    let statements = match DFParser::parse_sql(query) {
        Ok(statements) => statements,
        Err(datafusion::error::DataFusionError::SQL(e, limit))
            if matches!(*e, datafusion::sql::sqlparser::parser::ParserError::RecursionLimitExceeded) =>
        {
            return Err(format!("recursion limit exceeded{}", limit.unwrap_or_default()));
        }
        Err(_) => return Ok(None),
    };
    let mut depth = Depth { now: 0, max: 0 };
    for statement in &statements {
        if let Statement::Statement(s) = statement
            && s.visit(&mut depth).is_break()
        {
            break;
        }
    }
    Ok(Some(depth.max))
}

/// Sources, and the planner for queries over them.
#[derive(Debug, Default, Clone)]
pub struct StreamContext {
    sources: BTreeMap<String, Arc<SourceConfig>>,
    log: Option<Log>,
    udfs: Vec<Arc<ScalarUDF>>,
    udafs: Vec<Arc<AggregateUDF>>,
}

/// One stateless step.
#[derive(Clone)]
enum Stage {
    Filter { predicate: Arc<dyn PhysicalExpr>, projection: Option<Vec<usize>> },
    Project { exprs: Vec<Arc<dyn PhysicalExpr>>, names: Vec<String>, schema: SchemaRef },
}

impl Stage {
    fn describe(&self) -> String {
        match self {
            Stage::Filter { predicate, .. } => format!("filter: {predicate}"),
            Stage::Project { exprs, names, .. } => format!(
                "projection: {}",
                exprs.iter().zip(names).map(|(e, n)| format!("{e} AS {n}")).collect::<Vec<_>>().join(", ")
            ),
        }
    }

    /// Adds the step to `s`; its dead letters say they come from `origin`.
    fn apply(&self, s: Stream<RecordBatch>, origin: &Arc<str>) -> Stream<RecordBatch> {
        let origin = origin.clone();
        match self.clone() {
            Stage::Filter { predicate, projection } => {
                s.operator("filter", Filter { predicate, projection, origin })
            }
            Stage::Project { exprs, schema, .. } => {
                s.operator("projection", Project { exprs, schema, origin })
            }
        }
    }
}

/// A planned query: a stream of record batches once built into a pipeline.
#[derive(Clone)]
pub struct SqlStream {
    source: Arc<SourceConfig>,
    scan: Scan,
    window: Option<WindowCall>,
    below: Vec<Stage>,
    aggregate: Option<AggregateSpec>,
    above: Vec<Stage>,
    schema: SchemaRef,
    /// On a bounded source, a query a stream cannot answer: DataFusion's physical plan, run
    /// over all the scanned rows at the end of the input.
    batch: Option<Arc<dyn ExecutionPlan>>,
}

impl std::fmt::Debug for SqlStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.explain(1))
    }
}

fn plan_error(e: impl std::fmt::Display) -> SqlError {
    SqlError::Plan(e.to_string())
}

fn option(object: &str, field: &str, reason: impl Into<String>) -> SqlError {
    SqlError::Option { object: object.to_owned(), field: field.to_owned(), reason: reason.into() }
}

/// A DataFusion session for planning streams: one partition, and no physical optimizer rules —
/// they reason about a bounded input (a scan of an empty table would let them drop sorts or
/// answer `count(*)` from statistics); the logical optimizer's rewrites (projection pushdown,
/// simplification) stay.
fn session(udfs: &[Arc<ScalarUDF>], udafs: &[Arc<AggregateUDF>]) -> SessionContext {
    let config = SessionConfig::new().with_target_partitions(1).with_information_schema(false);
    // A single `count(DISTINCT x)` would be rewritten into two aggregates; distinct
    // accumulators do it in one.
    let rules = datafusion::optimizer::Optimizer::new()
        .rules
        .into_iter()
        .filter(|r| r.name() != "single_distinct_aggregation_to_group_by")
        .collect();
    let state = SessionStateBuilder::new()
        .with_config(config)
        .with_default_features()
        .with_optimizer_rules(rules)
        .with_physical_optimizer_rules(Vec::new())
        .build();
    let ctx = SessionContext::new_with_state(state);
    for f in udfs {
        ctx.register_udf(f.as_ref().clone());
    }
    for f in udafs {
        ctx.register_udaf(f.as_ref().clone());
    }
    ctx
}

impl StreamContext {
    /// A context without a log (file and memory sources only).
    pub fn new() -> Self {
        StreamContext::default()
    }

    /// A context whose `connector = 'log'` sources and sinks use `log`.
    pub fn with_log(log: Log) -> Self {
        StreamContext { log: Some(log), ..StreamContext::default() }
    }

    /// Registers a user-defined scalar function (DataFusion's `ScalarUDF`, e.g. from
    /// `create_udf` or an `impl ScalarUDFImpl`) for queries and computed columns planned after.
    pub fn register_udf(&mut self, f: ScalarUDF) {
        self.udfs.push(Arc::new(f));
    }

    /// Registers a user-defined aggregate function (DataFusion's `AggregateUDF`); windowed
    /// aggregates use its accumulators like the built-in ones.
    pub fn register_udaf(&mut self, f: AggregateUDF) {
        self.udafs.push(Arc::new(f));
    }

    /// The log, if any.
    pub fn log(&self) -> Option<&Log> {
        self.log.as_ref()
    }

    /// The registered sources.
    pub fn sources(&self) -> impl Iterator<Item = &SourceConfig> {
        self.sources.values().map(|s| &**s)
    }

    /// Makes every log (and Kafka) source stop at the end offsets it sees when the job starts.
    pub fn bound_log_sources(&mut self) {
        for s in self.sources.values_mut() {
            match &mut Arc::make_mut(s).connector {
                Connector::Log { bounded, .. } => *bounded = true,
                #[cfg(feature = "kafka")]
                Connector::Kafka { bounded, .. } => *bounded = true,
                _ => {}
            }
        }
    }

    /// Registers a source from its `CREATE SOURCE` statement.
    ///
    /// # Errors
    ///
    /// A missing or invalid option ([`SqlError::Option`] naming it), an unknown type or a
    /// computed column DataFusion cannot plan ([`SqlError::Plan`]).
    pub async fn register_source(&mut self, def: &SourceDef) -> Result<()> {
        let config = on_planner_thread(self.source_config(def))?;
        self.sources.insert(def.name.clone(), Arc::new(config));
        Ok(())
    }

    /// The configuration `def` declares (see [`StreamContext::register_source`]).
    async fn source_config(&self, def: &SourceDef) -> Result<SourceConfig> {
        let ctx = session(&self.udfs, &self.udafs);
        let name = &def.name;
        // Types: let DataFusion's SQL planner map them.
        let raw_schema = if def.columns.is_empty() {
            return Err(option(name, "columns", "a source needs at least one column"));
        } else {
            let select = def
                .columns
                .iter()
                .map(|(c, t)| format!("CAST(NULL AS {t}) AS \"{c}\""))
                .collect::<Vec<_>>()
                .join(", ");
            let df = ctx
                .sql(&format!("SELECT {select}"))
                .await
                .map_err(|e| SqlError::Plan(format!("source {name}: {e}")))?;
            let fields: Vec<Field> = df
                .schema()
                .fields()
                .iter()
                .map(|f| Field::new(f.name(), f.data_type().clone(), true))
                .collect();
            Arc::new(Schema::new(fields))
        };
        let connector = self.connector(def)?;
        if let Connector::File { path, format: Format::Csv, header: true, .. } = &connector {
            crate::source::check_headers(name, path, &raw_schema)?;
        }
        #[cfg(feature = "kafka")]
        if let Connector::Kafka { format: Format::Raw, .. } = &connector {
            crate::kafka::check_raw(name, &raw_schema)?;
        }
        for (col, text) in &def.computed {
            check_nesting(&format!("SELECT {text}"))
                .map_err(|e| SqlError::Plan(format!("source {name}: computed column {col}: {e}")))?;
        }
        SourceConfig::new(&ctx, name, raw_schema, &def.computed, def.watermark.clone(), connector).await
    }

    /// Registers record batches in memory as a bounded source named `name`, with `event_time`
    /// (a column and the out-of-orderness bound) if windows will use it.
    ///
    /// # Errors
    ///
    /// [`SqlError::Option`] if the event-time column does not exist.
    pub async fn register_batches(
        &mut self,
        name: &str,
        schema: SchemaRef,
        batches: Vec<RecordBatch>,
        event_time: Option<(&str, Duration)>,
    ) -> Result<()> {
        let watermark = event_time.map(|(c, d)| (c.to_owned(), d.as_millis() as i64));
        let ctx = session(&self.udfs, &self.udafs);
        let config =
            SourceConfig::new(&ctx, name, schema, &[], watermark, Connector::Memory(batches)).await?;
        self.sources.insert(name.to_owned(), Arc::new(config));
        Ok(())
    }

    fn connector(&self, def: &SourceDef) -> Result<Connector> {
        let name = &def.name;
        let get = |k: &str| def.options.get(k).map(String::as_str);
        let flag = |k: &str, default: bool| -> Result<bool> {
            match get(k) {
                None => Ok(default),
                Some(v) if v.eq_ignore_ascii_case("true") => Ok(true),
                Some(v) if v.eq_ignore_ascii_case("false") => Ok(false),
                Some(v) => Err(option(name, k, format!("{v:?} is not true or false"))),
            }
        };
        let format = |default: &str| Format::parse(name, get("format").unwrap_or(default));
        match get("connector") {
            Some("file") => {
                check_options(name, "a file source", &def.options, &FILE_SOURCE_OPTIONS)?;
                Ok(Connector::File {
                    // As written: relative to the current directory (the source's checkpoint
                    // ids derive from it, so they do not depend on where the directory is).
                    path: get("path")
                        .ok_or_else(|| option(name, "path", "a file source needs a path"))?
                        .to_owned(),
                    format: format("json")?,
                    follow: flag("follow", false)?,
                    header: flag("header", false)?,
                })
            }
            Some("log") => {
                check_options(name, "a log source", &def.options, &LOG_SOURCE_OPTIONS)?;
                let log =
                    self.log.clone().ok_or_else(|| option(name, "connector", "no log directory is open"))?;
                let format = format("json")?;
                if format == Format::Parquet {
                    return Err(option(name, "format", "log topics hold json or csv records"));
                }
                Ok(Connector::Log {
                    log,
                    topic: get("topic")
                        .ok_or_else(|| option(name, "topic", "a log source needs a topic"))?
                        .to_owned(),
                    group: get("group").unwrap_or(name).to_owned(),
                    bounded: flag("bounded", false)?,
                    format,
                })
            }
            #[cfg(feature = "kafka")]
            Some("kafka") => crate::kafka::source(name, &def.options),
            #[cfg(not(feature = "kafka"))]
            Some("kafka") => Err(option(name, "connector", NO_KAFKA)),
            Some(other) => Err(option(name, "connector", format!("{other:?} is not file, log or kafka"))),
            None => Err(option(name, "connector", "missing (file, log or kafka)")),
        }
    }

    /// Plans `query` over the registered sources.
    ///
    /// # Errors
    ///
    /// [`SqlError::Plan`] for what DataFusion rejects (unknown columns, type errors — its
    /// message names the column), [`SqlError::Unsupported`] for valid SQL a stream cannot run
    /// or a query nested deeper than [`MAX_EXPRESSION_DEPTH`].
    pub async fn sql(&self, query: &str) -> Result<SqlStream> {
        let (rewritten, window) = window::rewrite(query)?;
        on_planner_thread(async {
            check_nesting(&rewritten)?;
            self.plan(&rewritten, window).await
        })
    }

    /// Plans the rewritten query (see [`StreamContext::sql`]).
    async fn plan(&self, rewritten: &str, window: Option<WindowCall>) -> Result<SqlStream> {
        let rewritten = rewritten.to_owned();
        let ctx = session(&self.udfs, &self.udafs);
        for (name, source) in &self.sources {
            let mut fields: Vec<Field> = source.schema.fields().iter().map(|f| (**f).clone()).collect();
            if window.is_some() {
                let ts = DataType::Timestamp(TimeUnit::Millisecond, None);
                fields.push(Field::new(WINDOW_START, ts.clone(), false));
                fields.push(Field::new(WINDOW_END, ts, false));
            }
            let table: Arc<dyn TableProvider> = Arc::new(EmptyTable::new(Arc::new(Schema::new(fields))));
            ctx.register_table(name.as_str(), table).map_err(plan_error)?;
        }
        let df = match ctx.sql(&rewritten).await {
            Ok(df) => df,
            Err(e) => return Err(locate_error(&ctx, &rewritten, e.into()).await),
        };
        let tables = scanned_tables(df.logical_plan());
        let source = match tables.as_slice() {
            [one] => {
                self.sources.get(one).cloned().ok_or_else(|| SqlError::Plan(format!("no source {one}")))?
            }
            [] => {
                return Err(SqlError::Unsupported(
                    "a query must read a source (FROM a CREATE SOURCE name)".into(),
                ));
            }
            _ => {
                return Err(SqlError::Unsupported(
                    "joins, unions and subqueries over several sources are not supported yet; query one source".into(),
                ));
            }
        };
        let physical = df.create_physical_plan().await?;
        let window_time = window_time(&source, window.as_ref())?;
        match self.convert(physical.clone(), source.clone(), window.clone(), window_time.clone()) {
            Err(SqlError::Unsupported(reason)) => {
                let session = matches!(&window, Some(WindowCall { kind: WindowKind::Session { .. }, .. }));
                if session {
                    return Err(SqlError::Unsupported(format!(
                        "{reason} (a query over session windows runs only as a stream)"
                    )));
                }
                if !source.is_bounded() {
                    return Err(SqlError::Unsupported(format!("{reason}; {BOUNDED_HINT}")));
                }
                batch_stream(physical, source, window, window_time)
            }
            planned => planned,
        }
    }

    fn convert(
        &self,
        root: Arc<dyn ExecutionPlan>,
        source: Arc<SourceConfig>,
        window: Option<WindowCall>,
        window_time: Option<(WindowCall, usize)>,
    ) -> Result<SqlStream> {
        // Root to leaf.
        let mut chain = vec![root];
        loop {
            let children = chain.last().map(|n| n.children()).unwrap_or_default();
            match children.as_slice() {
                [] => break,
                [one] => {
                    let child = Arc::clone(*one);
                    chain.push(child);
                }
                _ => {
                    return Err(SqlError::Unsupported(
                        "joins and UNION are not supported yet; query one source".into(),
                    ));
                }
            }
        }
        chain.reverse();
        let leaf = &chain[0];
        if leaf.downcast_ref::<EmptyExec>().is_none() {
            return Err(SqlError::Unsupported(format!("unexpected plan leaf {}", leaf.name())));
        }
        let scan = scan(leaf, &source, window.is_some(), window_time)?;
        let mut below = Vec::new();
        let mut above = Vec::new();
        let mut aggregate: Option<AggregateSpec> = None;
        for node in &chain[1..] {
            let stages = if aggregate.is_some() { &mut above } else { &mut below };
            if let Some(f) = node.downcast_ref::<FilterExec>() {
                let projection = f.projection().as_ref().map(|p| p.to_vec());
                stages.push(Stage::Filter { predicate: f.predicate().clone(), projection });
            } else if let Some(p) = node.downcast_ref::<ProjectionExec>() {
                stages.push(Stage::Project {
                    exprs: p.expr().iter().map(|e| e.expr.clone()).collect(),
                    names: p.expr().iter().map(|e| e.alias.clone()).collect(),
                    schema: p.schema(),
                });
            } else if let Some(a) = node.downcast_ref::<AggregateExec>() {
                match (a.mode(), &mut aggregate) {
                    (AggregateMode::Final | AggregateMode::FinalPartitioned, Some(spec)) => {
                        spec.schema = a.schema();
                    }
                    (_, None) => aggregate = Some(self.aggregate(a, &window)?),
                    (_, Some(_)) => {
                        return Err(SqlError::Unsupported(
                            "an aggregate over an aggregate is not supported yet".into(),
                        ));
                    }
                }
            } else if ["CoalesceBatchesExec", "RepartitionExec", "CoalescePartitionsExec"]
                .contains(&node.name())
            {
            } else {
                return Err(unsupported_node(node.name()));
            }
        }
        if aggregate.is_none() && window.is_some() {
            return Err(SqlError::Unsupported(
                "a window function needs aggregates in the SELECT list".into(),
            ));
        }
        let schema = chain.last().map(|n| n.schema()).unwrap_or_else(|| Arc::new(Schema::empty()));
        Ok(SqlStream { source, scan, window, below, aggregate, above, schema, batch: None })
    }

    fn aggregate(&self, a: &AggregateExec, window: &Option<WindowCall>) -> Result<AggregateSpec> {
        let Some(window) = window else {
            return Err(SqlError::Unsupported(
                "an aggregate over an unbounded stream needs a window, as results must be final when \
                 emitted; add one to GROUP BY, e.g. GROUP BY tumble(ts, INTERVAL '1' MINUTE), ..."
                    .into(),
            ));
        };
        let group = a.group_expr();
        if !group.is_single() {
            return Err(SqlError::Unsupported("GROUPING SETS, CUBE and ROLLUP are not supported".into()));
        }
        let group_exprs: Vec<Arc<dyn PhysicalExpr>> = group.expr().iter().map(|(e, _)| e.clone()).collect();
        let position = |name: &str| {
            group.expr().iter().position(|(e, alias)| {
                alias == name || e.downcast_ref::<Column>().is_some_and(|c| c.name() == name)
            })
        };
        let (Some(ws), Some(we)) = (position(WINDOW_START), position(WINDOW_END)) else {
            return Err(plan_error("the window columns are missing from the aggregate"));
        };
        Ok(AggregateSpec {
            group_exprs,
            window_cols: (ws, we),
            aggregates: a.aggr_expr().to_vec(),
            filters: a.filter_expr().to_vec(),
            schema: a.schema(),
            window: window.kind,
        })
    }

    /// `EXPLAIN`: the streaming plan of `query` at `parallelism`.
    pub async fn explain(&self, query: &str, parallelism: usize) -> Result<String> {
        Ok(self.sql(query).await?.explain(parallelism))
    }
}

/// Names the part of a query a planning error is about: DataFusion's type errors describe the
/// types (`Utf8View - Int64`), not the expression. Each item of the SELECT list and the WHERE
/// clause is planned alone; the first that fails is named.
async fn locate_error(ctx: &SessionContext, query: &str, error: SqlError) -> SqlError {
    let SqlError::Plan(message) = &error else { return error };
    // A signature mismatch DataFusion reports as an internal error is the user's type error.
    let message = match message.find("This issue was likely caused by a bug") {
        Some(at) => message[..at].trim_end().trim_end_matches('.').to_owned(),
        None => message.clone(),
    };
    let message =
        message.strip_prefix("Internal error: ").unwrap_or(&message).replace("Error during planning: ", "");
    let upper = query.to_ascii_uppercase();
    let (Some(select), Some(from)) = (upper.find("SELECT "), upper.find(" FROM ")) else {
        return SqlError::Plan(message);
    };
    if from < select + 7 {
        return SqlError::Plan(message);
    }
    let rest = &query[from..];
    let table_end = rest[6..]
        .trim_start()
        .find(char::is_whitespace)
        .map_or(rest.len(), |i| 6 + (rest[6..].len() - rest[6..].trim_start().len()) + i);
    let table = &rest[..table_end];
    let where_clause = upper[from..].find(" WHERE ").map(|w| &query[from + w + 7..]).map(|w| {
        let upper = w.to_ascii_uppercase();
        let end =
            [" GROUP BY ", " HAVING ", " ORDER BY ", " LIMIT "].iter().filter_map(|k| upper.find(k)).min();
        w[..end.unwrap_or(w.len())].trim().to_owned()
    });
    let mut items: Vec<(String, String)> = crate::ddl::split_statements(&query[select + 7..from])
        .first()
        .map(|list| crate::ddl::split_top_level(list))
        .unwrap_or_default()
        .into_iter()
        .map(|item| (item.clone(), format!("SELECT {item}{table}")))
        .collect();
    if let Some(w) = where_clause {
        items.push((format!("WHERE {w}"), format!("SELECT 1{table} WHERE {w}")));
    }
    for (item, probe) in items {
        if ctx.sql(&probe).await.is_err() {
            return SqlError::Plan(format!("{item}: {message}"));
        }
    }
    SqlError::Plan(message)
}

fn unsupported_node(name: &str) -> SqlError {
    SqlError::Unsupported(match name {
        "SortExec" | "SortPreservingMergeExec" | "PartialSortExec" => {
            "ORDER BY needs the whole input; a stream never ends. Sort the output where it lands, or \
             order within a window's results downstream"
                .into()
        }
        "GlobalLimitExec" | "LocalLimitExec" => "LIMIT is not supported on a stream".into(),
        "BoundedWindowAggExec" | "WindowAggExec" => {
            "OVER (...) window functions are not supported; use GROUP BY tumble/hop/session".into()
        }
        n if n.contains("Join") => "joins are not supported yet; query one source".into(),
        other => format!("{other} is not supported on a stream"),
    })
}

/// A sink's `path` made absolute against the current directory: a relative `path` in a
/// statement is relative to the directory the program runs in (for `weir sql`, where it is
/// started; not the script file's), for sources (read there) and sinks (resolved when planned).
///
/// # Errors
///
/// [`SqlError::Option`] if the current directory cannot be read.
pub(crate) fn absolute(object: &str, path: &str) -> Result<String> {
    std::path::absolute(path)
        .map(|p| p.display().to_string())
        .map_err(|e| option(object, "path", format!("{path}: cannot resolve it: {e}")))
}

/// What a query refused on an unbounded source can do instead.
const BOUNDED_HINT: &str = "on a bounded source (a file without follow, a log source with bounded = \
     'true', or `weir sql -e` without --follow) the query runs as a batch query";

/// The window `window` runs on and the index of its time column in `source`'s schema.
fn window_time(source: &SourceConfig, window: Option<&WindowCall>) -> Result<Option<(WindowCall, usize)>> {
    let Some(w) = window else { return Ok(None) };
    let (time, _) = source.event_time.ok_or_else(|| {
        SqlError::Unsupported(format!(
            "source {} has no event time; declare WATERMARK FOR {} AS {} - INTERVAL '5' SECOND",
            source.name, w.time_column, w.time_column
        ))
    })?;
    let declared = source.schema.field(time).name();
    if *declared != w.time_column {
        return Err(SqlError::Unsupported(format!(
            "windows run on the event-time column {declared} (the WATERMARK's), not {}",
            w.time_column
        )));
    }
    Ok(Some((w.clone(), time)))
}

/// The scan that feeds the plan's `leaf`: the source's columns it reads, and the window columns.
fn scan(
    leaf: &Arc<dyn ExecutionPlan>,
    source: &SourceConfig,
    windowed: bool,
    window_time: Option<(WindowCall, usize)>,
) -> Result<Scan> {
    let scan_schema = leaf.schema();
    let mut all: Vec<String> = source.schema.fields().iter().map(|f| f.name().clone()).collect();
    if windowed {
        all.push(WINDOW_START.into());
        all.push(WINDOW_END.into());
    }
    let projection = scan_schema
        .fields()
        .iter()
        .map(|f| {
            all.iter()
                .position(|n| n == f.name())
                .ok_or_else(|| plan_error(format!("scan column {}", f.name())))
        })
        .collect::<Result<Vec<_>>>()?;
    let origin = crate::exec::origin(&source.name, None).into();
    Ok(Scan { window: window_time, projection, schema: scan_schema, origin })
}

/// A query over a bounded source that a stream cannot answer, as a batch query (see
/// [`BatchQuery`](crate::exec::BatchQuery)): DataFusion's physical plan over the scanned rows.
fn batch_stream(
    physical: Arc<dyn ExecutionPlan>,
    source: Arc<SourceConfig>,
    window: Option<WindowCall>,
    window_time: Option<(WindowCall, usize)>,
) -> Result<SqlStream> {
    use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
    let mut leaves = Vec::new();
    physical.apply(|node| {
        if node.children().is_empty() {
            leaves.push(node.clone());
        }
        Ok(TreeNodeRecursion::Continue)
    })?;
    let [leaf] = leaves.as_slice() else {
        return Err(SqlError::Unsupported("joins and UNION are not supported yet; query one source".into()));
    };
    if leaf.downcast_ref::<EmptyExec>().is_none() {
        return Err(SqlError::Unsupported(format!("unexpected plan leaf {}", leaf.name())));
    }
    let scan = scan(leaf, &source, window.is_some(), window_time)?;
    Ok(SqlStream {
        source,
        scan,
        window,
        below: Vec::new(),
        aggregate: None,
        above: Vec::new(),
        schema: physical.schema(),
        batch: Some(physical),
    })
}

/// The tables a logical plan scans.
fn scanned_tables(plan: &datafusion::logical_expr::LogicalPlan) -> Vec<String> {
    use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
    let mut names = Vec::new();
    let _ = plan.apply(|node| {
        if let datafusion::logical_expr::LogicalPlan::TableScan(scan) = node {
            names.push(scan.table_name.table().to_owned());
        }
        Ok(TreeNodeRecursion::Continue)
    });
    names.sort();
    names.dedup();
    names
}

impl SourceConfig {
    pub(crate) async fn new(
        ctx: &SessionContext,
        name: &str,
        raw_schema: SchemaRef,
        computed: &[(String, String)],
        watermark: Option<(String, i64)>,
        connector: Connector,
    ) -> Result<SourceConfig> {
        let df_schema = DFSchema::try_from(raw_schema.as_ref().clone()).map_err(plan_error)?;
        let mut fields: Vec<Field> = raw_schema.fields().iter().map(|f| (**f).clone()).collect();
        let mut exprs = Vec::new();
        for (col, text) in computed {
            let expr = ctx
                .parse_sql_expr(text, &df_schema)
                .map_err(|e| SqlError::Plan(format!("source {name}: computed column {col}: {e}")))?;
            let physical = ctx
                .create_physical_expr(expr, &df_schema)
                .map_err(|e| SqlError::Plan(format!("source {name}: computed column {col}: {e}")))?;
            let data_type = physical.data_type(&raw_schema).map_err(plan_error)?;
            fields.push(Field::new(col, data_type, true));
            exprs.push(physical);
        }
        let schema = Arc::new(Schema::new(fields));
        let event_time = match watermark {
            None => None,
            Some((col, bound)) => {
                let (i, f) = schema
                    .column_with_name(&col)
                    .ok_or_else(|| option(name, "watermark", format!("no column {col}")))?;
                if !matches!(
                    f.data_type(),
                    DataType::Timestamp(..) | DataType::Int64 | DataType::Date32 | DataType::Date64
                ) {
                    return Err(option(
                        name,
                        "watermark",
                        format!("{col} is {}, not a timestamp (or BIGINT epoch milliseconds)", f.data_type()),
                    ));
                }
                Some((i, bound))
            }
        };
        Ok(SourceConfig { name: name.to_owned(), raw_schema, schema, computed: exprs, event_time, connector })
    }
}

impl SqlStream {
    /// The schema of the result rows.
    pub fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    /// Adds the query's operators to `p` (its source included) and returns the result stream,
    /// to be sunk or mixed with typed operators.
    ///
    /// # Errors
    ///
    /// What building the source fails with.
    pub fn build(&self, p: &Pipeline) -> Result<Stream<RecordBatch>> {
        Ok(self.build_on(self.source.stream(p)?, None))
    }

    /// The source the query reads.
    pub(crate) fn source(&self) -> &Arc<SourceConfig> {
        &self.source
    }

    #[cfg(feature = "kafka")]
    /// Whether the query aggregates (`GROUP BY`): its state is keyed.
    pub(crate) fn aggregates(&self) -> bool {
        self.aggregate.is_some() || self.batch.is_some()
    }

    #[cfg(feature = "kafka")]
    /// Whether the query's `GROUP BY` keys include the source's column `column` as it is
    /// (traced through the filters and projections below the aggregate, so a renamed or
    /// computed key is not taken for it).
    pub(crate) fn groups_by_source_column(&self, column: &str) -> bool {
        let Some(spec) = &self.aggregate else { return false };
        let Ok(wanted) = self.source.schema.index_of(column) else { return false };
        spec.key_exprs().iter().any(|key| self.scanned_column(key) == Some(wanted))
    }

    #[cfg(feature = "kafka")]
    /// The source column (its index in the source's schema) that `expr`, an expression over the
    /// aggregate's input, is, if it is one.
    fn scanned_column(&self, expr: &Arc<dyn PhysicalExpr>) -> Option<usize> {
        let mut at = expr.downcast_ref::<Column>()?.index();
        for stage in self.below.iter().rev() {
            match stage {
                Stage::Filter { projection: Some(p), .. } => at = *p.get(at)?,
                Stage::Filter { projection: None, .. } => {}
                Stage::Project { exprs, .. } => at = exprs.get(at)?.downcast_ref::<Column>()?.index(),
            }
        }
        self.scan.projection.get(at).copied()
    }

    /// Adds the query's operators after `s`, a stream of its source's batches (a script builds
    /// a source read by several queries once, and forks it). With `uid`, the scan is named so in
    /// checkpoints, and the operators after it take their ids from it, not from `s`'s path.
    pub(crate) fn build_on(&self, mut s: Stream<RecordBatch>, uid: Option<&str>) -> Stream<RecordBatch> {
        let named = |s: Stream<RecordBatch>| match uid {
            Some(uid) => s.uid(uid),
            None => s,
        };
        if let Some(plan) = &self.batch {
            let query = BatchQuery::new(plan.clone(), self.scan.schema.clone(), self.scan.origin.clone());
            return named(s.operator("scan", self.scan.clone()))
                .partition_by(ToFirst)
                .operator("batch query", query);
        }
        if let Some((col, bound)) = self.source.event_time {
            // A log partition announced up front holds the watermark back until it sends
            // records; one that stays empty must not stop every window for ever.
            let strategy = Watermarks::bounded_out_of_orderness(Duration::from_millis(bound.max(0) as u64))
                .with_idle_timeout(IDLE_TIMEOUT);
            s = s.assign_timestamps(move |b: &RecordBatch| max_event_time(b, col), strategy);
        }
        s = named(s.operator("scan", self.scan.clone()));
        let origin = self.scan.origin.clone();
        for stage in &self.below {
            s = stage.apply(s, &origin);
        }
        if let Some(spec) = &self.aggregate {
            let keys = spec.key_exprs();
            let aggregate = WindowAggregate::new(spec.clone(), origin.clone());
            s = s.partition_by(KeyHash { keys }).operator("window_aggregate", aggregate);
        }
        for stage in &self.above {
            s = stage.apply(s, &origin);
        }
        s
    }

    /// The streaming plan, operator by operator, with parallelism and exchanges.
    pub fn explain(&self, parallelism: usize) -> String {
        let src = &self.source;
        let mut lines = vec![format!(
            "source {} ({}) × {parallelism}: {}",
            src.name,
            match &src.connector {
                Connector::File { path, format, follow, .. } =>
                    format!("file {path}, {format:?}{}", if *follow { ", follow" } else { "" }),
                Connector::Log { topic, group, bounded, format, .. } => format!(
                    "log topic {topic}, group {group}, {format:?}{}",
                    if *bounded { ", bounded" } else { "" }
                ),
                Connector::Memory(b) => format!("{} batches in memory", b.len()),
                #[cfg(feature = "kafka")]
                Connector::Kafka { topics, group, bounded, format, .. } => format!(
                    "kafka topic {}, group {group}, {format:?}{}",
                    topics.join(";"),
                    if *bounded { ", bounded" } else { "" }
                ),
            },
            src.schema
                .fields()
                .iter()
                .map(|f| format!("{} {}", f.name(), f.data_type()))
                .collect::<Vec<_>>()
                .join(", ")
        )];
        if let Some((col, bound)) = src.event_time.filter(|_| self.batch.is_none()) {
            lines.push(format!(
                "  -> watermarks per split: max({}) - {bound} ms",
                src.schema.field(col).name()
            ));
        }
        let window = match &self.window {
            Some(WindowCall { kind: WindowKind::Tumble { size }, time_column }) => {
                format!("tumble({time_column}, {size} ms) → window_start, window_end; ")
            }
            Some(WindowCall { kind: WindowKind::Hop { slide, size }, time_column }) => {
                format!("hop({time_column}, slide {slide} ms, size {size} ms) → window_start, window_end; ")
            }
            Some(WindowCall { kind: WindowKind::Session { gap }, time_column }) => {
                format!("session({time_column}, gap {gap} ms); ")
            }
            None => String::new(),
        };
        lines.push(format!(
            "  -> scan: {window}columns {}",
            self.scan.schema.fields().iter().map(|f| f.name().as_str()).collect::<Vec<_>>().join(", ")
        ));
        lines.extend(self.below.iter().map(|s| format!("  -> {}", s.describe())));
        if let Some(plan) = &self.batch {
            lines.push(format!("  == exchange: every row to subtask 0 of {parallelism}"));
            lines.push("  -> batch query × 1, at the end of the bounded input: DataFusion's plan".to_owned());
            let text = datafusion::physical_plan::displayable(plan.as_ref()).indent(false).to_string();
            lines.extend(text.lines().map(|l| format!("       {l}")));
        }
        if let Some(spec) = &self.aggregate {
            let keys = spec.key_exprs();
            lines.push(format!(
                "  == exchange: hash({}) over {parallelism} subtasks",
                keys.iter().map(|k| k.to_string()).collect::<Vec<_>>().join(", ")
            ));
            lines.push(format!(
                "  -> window aggregate × {parallelism}: group by {}: {}",
                spec.group_exprs.iter().map(|g| g.to_string()).collect::<Vec<_>>().join(", "),
                spec.aggregates.iter().map(|a| a.name().to_owned()).collect::<Vec<_>>().join(", ")
            ));
        }
        lines.extend(self.above.iter().map(|s| format!("  -> {}", s.describe())));
        lines.push(format!(
            "  => {}",
            self.schema
                .fields()
                .iter()
                .map(|f| format!("{} {}", f.name(), f.data_type()))
                .collect::<Vec<_>>()
                .join(", ")
        ));
        lines.join("\n")
    }
}
