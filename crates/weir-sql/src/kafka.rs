//! `connector = 'kafka'`: Kafka topics as SQL sources and sinks (weir-kafka's
//! [`KafkaSource`] and [`KafkaSink`]), configured with Flink SQL's option names.
//!
//! Invariants:
//! - Every option is either typed (listed in [`SOURCE_OPTIONS`] / [`SINK_OPTIONS`], or one of
//!   the typed `properties.*` below) or a `properties.*` key passed through to librdkafka
//!   without its prefix; any other option is refused, naming the nearest valid one.
//! - Keys weir-kafka owns are refused when the statement is planned, naming the option.
//! - Passwords are never written in SQL: they come from an environment variable
//!   (`*.password.env`) or a file (`*.password.file`), are read when the statement is planned,
//!   and are never printed.
//! - An exactly-once sink has one writer: at parallelism above 1 every row is sent to subtask
//!   0 (an exchange), whose writer is the sink's only one; the other subtasks write nothing.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, SchemaRef};
use weir_kafka::{
    KafkaConfig, KafkaSink, KafkaSource, KafkaWriter, Sasl, SaslMechanism, Secret, StartOffset, Tls,
};
use weir_runtime::{Batch, CommittedOutput, Sink, SinkWriter};

use crate::ddl::check_options;
use crate::error::{Result, SqlError};
use crate::source::{Connector, Format};

/// The options of a Kafka source, besides `properties.*` pass-through.
pub(crate) const SOURCE_OPTIONS: [&str; 9] = [
    "connector",
    "key.fields",
    "topic",
    "format",
    "properties.bootstrap.servers",
    "properties.group.id",
    "scan.startup.mode",
    "scan.startup.timestamp-millis",
    "scan.bounded.mode",
];

/// The options of a Kafka sink, besides `properties.*` pass-through.
pub(crate) const SINK_OPTIONS: [&str; 7] = [
    "connector",
    "topic",
    "format",
    "properties.bootstrap.servers",
    "sink.delivery-guarantee",
    "sink.transactional-id-prefix",
    "key.fields",
];

/// The typed `properties.*` options of sources and sinks alike (security).
const SECURITY_OPTIONS: [&str; 10] = [
    "properties.security.protocol",
    "properties.sasl.mechanism",
    "properties.sasl.username",
    "properties.sasl.password.env",
    "properties.sasl.password.file",
    "properties.ssl.ca.location",
    "properties.ssl.certificate.location",
    "properties.ssl.key.location",
    "properties.ssl.key.password.env",
    "properties.ssl.key.password.file",
];

fn option(object: &str, field: &str, reason: impl Into<String>) -> SqlError {
    SqlError::Option { object: object.to_owned(), field: field.to_owned(), reason: reason.into() }
}

/// The text of a weir-kafka configuration error, without its field (the SQL error names the
/// option instead).
fn reason(e: weir_runtime::Error) -> String {
    match e {
        weir_runtime::Error::InvalidConfig { reason, .. } => reason,
        other => other.to_string(),
    }
}

/// Refuses options that are neither `allowed` nor `properties.*`, naming the nearest valid one.
fn check(object: &str, what: &str, options: &BTreeMap<String, String>, allowed: &[&str]) -> Result<()> {
    let own: BTreeMap<String, String> = options
        .iter()
        .filter(|(k, _)| !k.starts_with("properties."))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let mut listed = allowed.to_vec();
    listed.push("properties.*");
    check_options(object, what, &own, &listed)
}

/// A secret from `<prefix>.env` (an environment variable's name) or `<prefix>.file` (a path):
/// exactly one of them, or neither.
fn secret(object: &str, options: &BTreeMap<String, String>, prefix: &str) -> Result<Option<Secret>> {
    let (env, file) = (format!("{prefix}.env"), format!("{prefix}.file"));
    match (options.get(&env), options.get(&file)) {
        (None, None) => Ok(None),
        (Some(_), Some(_)) => Err(option(object, &file, format!("give {env} or {file}, not both"))),
        (Some(var), None) => Secret::from_env(var).map(Some).map_err(|e| option(object, &env, reason(e))),
        (None, Some(path)) => Secret::from_file(path).map(Some).map_err(|e| option(object, &file, reason(e))),
    }
}

/// The connection settings of a source or sink: `properties.bootstrap.servers`, the typed
/// security options and the other `properties.*` (passed through; `skip` are typed options
/// of the caller).
fn config(object: &str, options: &BTreeMap<String, String>, skip: &[&str]) -> Result<KafkaConfig> {
    let get = |k: &str| options.get(k).map(String::as_str);
    let bootstrap =
        get("properties.bootstrap.servers").filter(|b| !b.trim().is_empty()).ok_or_else(|| {
            option(
                object,
                "properties.bootstrap.servers",
                "a Kafka connector needs the brokers (host:port[,host:port…])",
            )
        })?;
    let mut config = KafkaConfig::new(bootstrap);

    // SASL: a mechanism, a user name and a password, all or none.
    let password = secret(object, options, "properties.sasl.password")?;
    match (get("properties.sasl.mechanism"), get("properties.sasl.username"), password) {
        (None, None, None) => {}
        (Some(mechanism), Some(username), Some(password)) => {
            let mechanism = SaslMechanism::parse(mechanism)
                .map_err(|e| option(object, "properties.sasl.mechanism", reason(e)))?;
            config = config.sasl(Sasl { mechanism, username: username.to_owned(), password });
        }
        (mechanism, username, password) => {
            let missing = [
                (mechanism.is_none(), "properties.sasl.mechanism"),
                (username.is_none(), "properties.sasl.username"),
                (password.is_none(), "properties.sasl.password.env (or .file)"),
            ];
            let missing: Vec<&str> = missing.iter().filter(|(m, _)| *m).map(|(_, k)| *k).collect();
            return Err(option(
                object,
                missing[0].split(' ').next().unwrap_or(missing[0]),
                format!(
                    "SASL needs a mechanism, a user name and a password; missing: {}",
                    missing.join(", ")
                ),
            ));
        }
    }

    // TLS: any of its options, or a security protocol that asks for it (the system's CAs).
    let path = |k: &str| get(k).map(std::path::PathBuf::from);
    let tls = Tls {
        ca: path("properties.ssl.ca.location"),
        certificate: path("properties.ssl.certificate.location"),
        key: path("properties.ssl.key.location"),
        key_password: secret(object, options, "properties.ssl.key.password")?,
    };
    let protocol = get("properties.security.protocol").map(str::to_ascii_uppercase);
    let tls_asked = protocol.as_deref().is_some_and(|p| p.ends_with("SSL"));
    if tls.ca.is_some()
        || tls.certificate.is_some()
        || tls.key.is_some()
        || tls.key_password.is_some()
        || tls_asked
    {
        config = config.tls(tls);
    }
    if let Some(protocol) = protocol
        && protocol != config.security_protocol()
    {
        return Err(option(
            object,
            "properties.security.protocol",
            format!(
                "{protocol:?} does not match the typed options, which give {:?}: SASL comes with \
                 properties.sasl.mechanism / .username / .password.env, TLS with properties.ssl.*.location",
                config.security_protocol()
            ),
        ));
    }

    for (key, value) in options {
        let Some(property) = key.strip_prefix("properties.") else { continue };
        if SECURITY_OPTIONS.contains(&key.as_str()) || skip.contains(&key.as_str()) {
            continue;
        }
        let instead = match property {
            "sasl.password" | "ssl.key.password" => Some(format!(
                "a password is not written in SQL: use {key}.env (an environment variable) or {key}.file"
            )),
            "transactional.id" => Some("use sink.transactional-id-prefix".to_owned()),
            "sasl.mechanisms" => Some("use properties.sasl.mechanism".to_owned()),
            _ => None,
        };
        if let Some(instead) = instead {
            return Err(option(object, key, format!("{property:?} is set by Weir ({instead})")));
        }
        // Refused here, naming the option, rather than when the job starts.
        KafkaConfig::new(bootstrap)
            .set(property, value.as_str())
            .check()
            .map_err(|e| option(object, key, reason(e)))?;
        config = config.set(property, value.as_str());
    }
    Ok(config)
}

/// The format of a Kafka source or sink (`json` by default); `raw` only for a source.
fn format(object: &str, options: &BTreeMap<String, String>, source: bool) -> Result<Format> {
    let text = options.get("format").map_or("json", String::as_str);
    let format =
        if text.eq_ignore_ascii_case("raw") { Some(Format::Raw) } else { Format::parse(object, text).ok() };
    match format {
        Some(f @ (Format::Json | Format::Csv)) => Ok(f),
        Some(Format::Raw) if source => Ok(Format::Raw),
        _ => Err(option(
            object,
            "format",
            format!("{text:?} is not {}", if source { "json, csv or raw" } else { "json or csv" }),
        )),
    }
}

/// The topics of `topic = 'a'` or `'a;b'` (Flink's list).
fn topics(object: &str, options: &BTreeMap<String, String>) -> Result<Vec<String>> {
    let topics: Vec<String> = options
        .get("topic")
        .map(|t| t.split(';').map(str::trim).filter(|t| !t.is_empty()).map(str::to_owned).collect())
        .unwrap_or_default();
    if topics.is_empty() {
        return Err(option(object, "topic", "a Kafka connector needs a topic"));
    }
    Ok(topics)
}

/// The connector of `CREATE SOURCE name ... WITH (connector = 'kafka', ...)`.
pub(crate) fn source(object: &str, options: &BTreeMap<String, String>) -> Result<Connector> {
    check(object, "a kafka source", options, &SOURCE_OPTIONS)?;
    let get = |k: &str| options.get(k).map(String::as_str);
    let topics = topics(object, options)?;
    let group = get("properties.group.id").unwrap_or(object).to_owned();
    let config = config(object, options, &["properties.bootstrap.servers", "properties.group.id"])?;
    let timestamp = get("scan.startup.timestamp-millis");
    let start = match get("scan.startup.mode").map(str::to_ascii_lowercase).as_deref() {
        None | Some("group-offsets") => StartOffset::Committed,
        Some("earliest-offset") => StartOffset::Earliest,
        Some("latest-offset") => StartOffset::Latest,
        Some("timestamp") => {
            let ms = timestamp.ok_or_else(|| {
                option(object, "scan.startup.timestamp-millis", "scan.startup.mode = 'timestamp' needs it")
            })?;
            StartOffset::Timestamp(ms.trim().parse().map_err(|_| {
                option(
                    object,
                    "scan.startup.timestamp-millis",
                    format!("{ms:?} is not milliseconds since the Unix epoch"),
                )
            })?)
        }
        Some(other) => {
            return Err(option(
                object,
                "scan.startup.mode",
                format!("{other:?} is not earliest-offset, latest-offset, group-offsets or timestamp"),
            ));
        }
    };
    if timestamp.is_some() && !matches!(start, StartOffset::Timestamp(_)) {
        return Err(option(
            object,
            "scan.startup.timestamp-millis",
            "only with scan.startup.mode = 'timestamp'",
        ));
    }
    let bounded = match get("scan.bounded.mode").map(str::to_ascii_lowercase).as_deref() {
        None | Some("unbounded") => false,
        Some("latest-offset") => true,
        Some(other) => {
            return Err(option(
                object,
                "scan.bounded.mode",
                format!(
                    "{other:?} is not latest-offset (stop at the end offsets seen at start) or unbounded"
                ),
            ));
        }
    };
    let format = format(object, options, true)?;
    let key = match get("key.fields").map(|k| k.trim().trim_matches('"')) {
        None => None,
        Some(k) if k.is_empty() || k.contains([',', ';']) => {
            return Err(option(object, "key.fields", "the key is one column (the records' key as text)"));
        }
        Some(k) => Some(k.to_owned()),
    };
    let source = KafkaSource::new(config, topics.clone(), group.clone()).start_offset(start);
    Ok(Connector::Kafka { source: Box::new(source), topics, group, bounded, format, key })
}

/// Checks that a `raw` source declares one text or bytes column.
pub(crate) fn check_raw(object: &str, raw: &SchemaRef) -> Result<()> {
    let ok = raw.fields().len() == 1
        && matches!(
            raw.field(0).data_type(),
            DataType::Utf8
                | DataType::LargeUtf8
                | DataType::Utf8View
                | DataType::Binary
                | DataType::LargeBinary
        );
    if ok {
        return Ok(());
    }
    Err(option(
        object,
        "format",
        "format 'raw' reads each value into the one column declared (VARCHAR or BYTEA)",
    ))
}

/// Where `CREATE SINK ... WITH (connector = 'kafka', ...)` writes, and how.
pub(crate) struct SinkPlan {
    /// The sink.
    pub(crate) sink: KafkaTopicSink,
    /// Whether every row must be sent to subtask 0 first (exactly once at parallelism above 1).
    pub(crate) to_first: bool,
}

/// The sink of `CREATE SINK name WITH (connector = 'kafka', ...)` over rows of `schema`, in a
/// pipeline of `parallelism`, `checkpointed` or not, over a `bounded` source or not.
pub(crate) fn sink(
    object: &str,
    options: &BTreeMap<String, String>,
    schema: &SchemaRef,
    parallelism: usize,
    checkpointed: bool,
    bounded: bool,
) -> Result<SinkPlan> {
    check(object, "a kafka sink", options, &SINK_OPTIONS)?;
    let get = |k: &str| options.get(k).map(String::as_str);
    let topic = match topics(object, options)?.as_slice() {
        [one] => one.clone(),
        _ => return Err(option(object, "topic", "a Kafka sink writes one topic")),
    };
    let config =
        config(object, options, &["properties.bootstrap.servers", "properties.transaction.timeout.ms"])?;
    let csv = format(object, options, false)? == Format::Csv;
    let key = match get("key.fields") {
        None => None,
        Some(col) => {
            let col = col.trim().trim_matches('"');
            if col.contains(';') || col.contains(',') {
                return Err(option(object, "key.fields", "the key is one column (its value as text)"));
            }
            let at = schema
                .index_of(col)
                .ok()
                .or_else(|| schema.fields().iter().position(|f| f.name().eq_ignore_ascii_case(col)));
            let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
            Some(at.ok_or_else(|| {
                option(
                    object,
                    "key.fields",
                    format!("no column {col:?} in the query's result ({})", names.join(", ")),
                )
            })?)
        }
    };
    let mut inner = KafkaSink::with_encoder(config, topic, encode);
    if key.is_some() {
        inner = inner.key_by(|r: &Row| Key(r.clone()));
    }
    if let Some(ms) = get("properties.transaction.timeout.ms") {
        let ms: u64 = ms.trim().parse().map_err(|_| {
            option(
                object,
                "properties.transaction.timeout.ms",
                format!("{ms:?} is not a number of milliseconds"),
            )
        })?;
        inner = inner.transaction_timeout(Duration::from_millis(ms));
    }
    let exactly_once = match get("sink.delivery-guarantee").map(str::to_ascii_lowercase).as_deref() {
        None | Some("at-least-once") => false,
        Some("exactly-once") => true,
        Some(other) => {
            return Err(option(
                object,
                "sink.delivery-guarantee",
                format!("{other:?} is not at-least-once or exactly-once"),
            ));
        }
    };
    match (exactly_once, get("sink.transactional-id-prefix")) {
        (true, Some(prefix)) if !prefix.trim().is_empty() => inner = inner.exactly_once(prefix.trim()),
        (true, _) => {
            return Err(option(
                object,
                "sink.transactional-id-prefix",
                "sink.delivery-guarantee = 'exactly-once' needs a transactional id prefix, unique to this job on \
                 the cluster",
            ));
        }
        (false, Some(_)) => {
            return Err(option(
                object,
                "sink.transactional-id-prefix",
                "only with sink.delivery-guarantee = 'exactly-once'",
            ));
        }
        (false, None) => {}
    }
    if exactly_once && !checkpointed && !bounded {
        return Err(option(
            object,
            "sink.delivery-guarantee",
            "'exactly-once' commits one transaction per checkpoint, and this job over an unbounded source is \
             not checkpointed: run it with checkpoints (weir sql -f FILE --checkpoint-interval 10s)",
        ));
    }
    let to_first = exactly_once && parallelism > 1;
    Ok(SinkPlan { sink: KafkaTopicSink { inner, csv, key, one_writer: exactly_once }, to_first })
}

/// One row of a sink: its encoded value and key, ranges of a buffer shared by its batch (no
/// allocation per row).
#[derive(Clone)]
pub(crate) struct Row {
    buf: Arc<Vec<u8>>,
    value: Range<usize>,
    key: Range<usize>,
}

/// A row's key, for [`KafkaSink::key_by`].
struct Key(Row);

impl AsRef<[u8]> for Key {
    fn as_ref(&self) -> &[u8] {
        &self.0.buf[self.0.key.clone()]
    }
}

fn encode(r: &Row, out: &mut Vec<u8>) -> std::result::Result<(), String> {
    out.extend_from_slice(&r.buf[r.value.clone()]);
    Ok(())
}

/// The ends of the lines of `buf` (JSON lines, or CSV records with quotes that may hold line
/// breaks), without their line breaks.
fn lines(buf: &[u8], csv: bool) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let (mut start, mut quoted) = (0, false);
    for (i, b) in buf.iter().enumerate() {
        match b {
            b'"' if csv => quoted = !quoted,
            b'\n' if !quoted => {
                let end = if i > start && buf[i - 1] == b'\r' { i - 1 } else { i };
                out.push(start..end);
                start = i + 1;
            }
            _ => {}
        }
    }
    if start < buf.len() {
        out.push(start..buf.len());
    }
    out
}

/// Rows of query results to a Kafka topic, one record per row (JSON or CSV), keyed by a column
/// if `key.fields` names one.
#[derive(Clone)]
pub(crate) struct KafkaTopicSink {
    inner: KafkaSink<Row>,
    csv: bool,
    /// The key column.
    key: Option<usize>,
    /// Only subtask 0 writes (exactly once: one transaction per checkpoint).
    one_writer: bool,
}

impl KafkaTopicSink {
    fn writer_of(
        &self,
        subtask: usize,
        parallelism: usize,
        transactional: bool,
    ) -> weir_runtime::Result<KafkaTopicWriter> {
        let inner = match (self.one_writer, subtask) {
            (true, 0) if transactional => Some(self.inner.transactional_writer(0, 1)?),
            (true, 0) => Some(self.inner.writer(0, 1)?),
            (true, _) => None,
            (false, _) if transactional => Some(self.inner.transactional_writer(subtask, parallelism)?),
            (false, _) => Some(self.inner.writer(subtask, parallelism)?),
        };
        Ok(KafkaTopicWriter { inner, csv: self.csv, key: self.key, subtask })
    }
}

impl KafkaTopicSink {
    /// The sink made `task`'s: exactly once, it writes in the task's transactions.
    pub(crate) fn for_task(mut self, task: &weir_kafka::Task) -> Self {
        self.inner = task.sink(self.inner);
        self
    }
}

impl Sink<RecordBatch> for KafkaTopicSink {
    type Writer = KafkaTopicWriter;

    fn name(&self) -> String {
        Sink::<Row>::name(&self.inner)
    }
    fn writer(&self, subtask: usize, parallelism: usize) -> weir_runtime::Result<KafkaTopicWriter> {
        self.writer_of(subtask, parallelism, false)
    }
    fn transactional_writer(
        &self,
        subtask: usize,
        parallelism: usize,
    ) -> weir_runtime::Result<KafkaTopicWriter> {
        self.writer_of(subtask, parallelism, true)
    }
    fn commit(&self, checkpoint: u64, committables: &[Vec<u8>]) -> weir_runtime::Result<()> {
        Sink::<Row>::commit(&self.inner, checkpoint, committables)
    }
    fn check_restore(&self, restored: Option<u64>) -> weir_runtime::Result<()> {
        Sink::<Row>::check_restore(&self.inner, restored)
    }
    fn discard_uncommitted(&self, restored: Option<u64>) -> weir_runtime::Result<()> {
        Sink::<Row>::discard_uncommitted(&self.inner, restored)
    }
    fn restore_limit(&self) -> weir_runtime::Result<Option<u64>> {
        Sink::<Row>::restore_limit(&self.inner)
    }
    fn committed_output(&self) -> weir_runtime::Result<Option<CommittedOutput>> {
        Sink::<Row>::committed_output(&self.inner)
    }
    fn destination(&self) -> Option<String> {
        Sink::<Row>::destination(&self.inner)
    }
}

/// The writer of one [`KafkaTopicSink`] subtask (none for the idle subtasks of a one-writer sink).
pub(crate) struct KafkaTopicWriter {
    inner: Option<KafkaWriter<Row>>,
    csv: bool,
    key: Option<usize>,
    subtask: usize,
}

impl KafkaTopicWriter {
    /// The rows of `batch`, encoded into one buffer.
    fn rows(&self, batch: &RecordBatch) -> weir_runtime::Result<Vec<Row>> {
        let error = |e: String| weir_runtime::Error::connector("sql sink", e);
        let mut buf = if self.csv {
            crate::sink::csv_lines(std::slice::from_ref(batch), false)?
        } else {
            crate::sink::json_lines(std::slice::from_ref(batch))?
        };
        let values = lines(&buf, self.csv);
        if values.len() != batch.num_rows() {
            return Err(error(format!("encoded {} rows as {} lines", batch.num_rows(), values.len())));
        }
        let mut keys = vec![0..0; values.len()];
        if let Some(k) = self.key {
            let column = arrow::compute::cast(batch.column(k), &DataType::Utf8)
                .map_err(|e| error(format!("the key column as text: {e}")))?;
            let text = column.as_string::<i32>();
            for (row, key) in keys.iter_mut().enumerate() {
                let start = buf.len();
                if text.is_valid(row) {
                    buf.extend_from_slice(text.value(row).as_bytes());
                }
                *key = start..buf.len();
            }
        }
        let buf = Arc::new(buf);
        Ok(values.into_iter().zip(keys).map(|(value, key)| Row { buf: buf.clone(), value, key }).collect())
    }
}

impl SinkWriter<RecordBatch> for KafkaTopicWriter {
    async fn write_batch(&mut self, batch: Batch<RecordBatch>) -> weir_runtime::Result<()> {
        let mut rows = Vec::new();
        for b in batch.records.iter().filter(|b| b.num_rows() > 0) {
            rows.extend(self.rows(b)?);
        }
        if rows.is_empty() {
            return Ok(());
        }
        match &mut self.inner {
            Some(w) => w.write_batch(Batch::new(rows)).await,
            None => Err(weir_runtime::Error::Internal(format!(
                "rows reached subtask {} of a Kafka sink that writes from subtask 0 only",
                self.subtask
            ))),
        }
    }

    async fn pre_commit(&mut self, checkpoint: u64) -> weir_runtime::Result<Option<Vec<u8>>> {
        match &mut self.inner {
            Some(w) => w.pre_commit(checkpoint).await,
            None => Ok(None),
        }
    }

    async fn finish(&mut self) -> weir_runtime::Result<()> {
        match &mut self.inner {
            Some(w) => w.finish().await,
            None => Ok(()),
        }
    }

    fn bytes_written(&self) -> u64 {
        self.inner.as_ref().map_or(0, |w| w.bytes_written())
    }
}

impl std::fmt::Debug for KafkaTopicSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaTopicSink")
            .field("inner", &self.inner)
            .field("csv", &self.csv)
            .finish_non_exhaustive()
    }
}
