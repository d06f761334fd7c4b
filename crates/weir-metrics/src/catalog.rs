//! The metric catalog: every metric Weir exports, the only place a name is spelled.
//!
//! Each entry is a typed definition ([`CounterDef`], [`GaugeDef`], [`HistogramDef`]) whose label
//! names are fixed in its type, so code cannot record a counter as a gauge or pass the wrong
//! number of labels. [`CATALOG`] lists them all for the exporter docs, the README table and the
//! dashboard checks.
//!
//! Conventions (checked by this module's tests): the `weir_` prefix; base units in the name
//! (`_seconds`, `_bytes`); `_total` on counters and only on counters; histograms, not summaries,
//! for durations; labels only from [`ALLOWED_LABELS`] (never a key, record id or offset).

/// Label names a metric may carry: all of low cardinality.
pub const ALLOWED_LABELS: &[&str] =
    &["pipeline", "operator", "subtask", "topic", "partition", "group", "reason", "kind", "view", "path"];

/// What kind of metric an entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up (resets when the process restarts); queried with `rate()`.
    Counter,
    /// A value that goes up and down.
    Gauge,
    /// Observations counted into buckets (`_bucket`, `_sum`, `_count` series).
    Histogram,
}

/// The kind-independent description of a metric.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MetricInfo {
    /// The full name, e.g. `weir_operator_records_in_total`.
    pub name: &'static str,
    /// Counter, gauge or histogram.
    pub kind: Kind,
    /// The unit, in words (`records`, `seconds`, …), for the docs.
    pub unit: &'static str,
    /// One sentence: what is measured, and where.
    pub help: &'static str,
    /// Label names, in the order values are given.
    pub labels: &'static [&'static str],
}

/// A counter with `N` labels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CounterDef<const N: usize> {
    /// Name, unit and help.
    pub info: MetricInfo,
}

/// A gauge with `N` labels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GaugeDef<const N: usize> {
    /// Name, unit and help.
    pub info: MetricInfo,
}

/// A histogram with `N` labels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HistogramDef<const N: usize> {
    /// Name, unit and help.
    pub info: MetricInfo,
    /// Upper bounds of the buckets, ascending (`+Inf` is implied).
    pub buckets: &'static [f64],
}

const fn info(
    name: &'static str,
    kind: Kind,
    unit: &'static str,
    help: &'static str,
    labels: &'static [&'static str],
) -> MetricInfo {
    MetricInfo { name, kind, unit, help, labels }
}

const fn counter<const N: usize>(
    name: &'static str,
    unit: &'static str,
    help: &'static str,
    labels: &'static [&'static str; N],
) -> CounterDef<N> {
    CounterDef { info: info(name, Kind::Counter, unit, help, labels) }
}

const fn gauge<const N: usize>(
    name: &'static str,
    unit: &'static str,
    help: &'static str,
    labels: &'static [&'static str; N],
) -> GaugeDef<N> {
    GaugeDef { info: info(name, Kind::Gauge, unit, help, labels) }
}

const fn histogram<const N: usize>(
    name: &'static str,
    help: &'static str,
    labels: &'static [&'static str; N],
    buckets: &'static [f64],
) -> HistogramDef<N> {
    HistogramDef { info: info(name, Kind::Histogram, "seconds", help, labels), buckets }
}

/// Durations of work on one batch, one append or one fsync: 10 µs to 10 s.
pub const SHORT_DURATION_BUCKETS: &[f64] = &[
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
    0.5, 1.0, 2.5, 5.0, 10.0,
];

/// End-to-end latencies: 1 ms to 5 min.
pub const LATENCY_BUCKETS: &[f64] =
    &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0];

/// Event-time lag: 100 ms to 1 day (windows hold results back by their size).
pub const LAG_BUCKETS: &[f64] =
    &[0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 21600.0, 86400.0];

/// Checkpoint durations: 10 ms to 10 min.
pub const CHECKPOINT_BUCKETS: &[f64] =
    &[0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 600.0];

/// Checkpoint sizes: 1 KiB to 16 GiB, by powers of 4.
pub const CHECKPOINT_SIZE_BUCKETS: &[f64] = &[
    1024.0,
    4096.0,
    16384.0,
    65536.0,
    262144.0,
    1048576.0,
    4194304.0,
    16777216.0,
    67108864.0,
    268435456.0,
    1073741824.0,
    4294967296.0,
    17179869184.0,
];

const OP: &[&str; 3] = &["pipeline", "operator", "subtask"];
const TOPIC_PARTITION: &[&str; 2] = &["topic", "partition"];
const GROUP_PARTITION: &[&str; 3] = &["group", "topic", "partition"];

// ---- Operators and tasks ------------------------------------------------------------------

/// Records an operator received.
pub const OPERATOR_RECORDS_IN: CounterDef<3> =
    counter("weir_operator_records_in_total", "records", "Records an operator received.", OP);
/// Records an operator emitted.
pub const OPERATOR_RECORDS_OUT: CounterDef<3> =
    counter("weir_operator_records_out_total", "records", "Records an operator emitted.", OP);
/// Bytes a source read.
pub const OPERATOR_BYTES_IN: CounterDef<3> = counter(
    "weir_operator_input_bytes_total",
    "bytes",
    "Bytes a source read from its input (file bytes, log record keys and values).",
    OP,
);
/// Bytes a sink wrote.
pub const OPERATOR_BYTES_OUT: CounterDef<3> =
    counter("weir_operator_output_bytes_total", "bytes", "Bytes a sink wrote to its output.", OP);
/// Records taken out of an operator's main output, by reason.
pub const OPERATOR_DROPPED: CounterDef<4> = counter(
    "weir_operator_dropped_records_total",
    "records",
    "Records taken out of an operator's main output, by reason: late (behind the watermark plus \
     allowed lateness; to the late side output), dead_letter (the function failed; to the \
     dead-letter output).",
    &["pipeline", "operator", "subtask", "reason"],
);
/// Time a task spent processing.
pub const TASK_BUSY: CounterDef<3> = counter(
    "weir_task_busy_seconds_total",
    "seconds",
    "Time a task spent running its operators (rate() is the share of one core).",
    OP,
);
/// Time a task waited on a full downstream channel.
pub const TASK_BACKPRESSURED: CounterDef<3> = counter(
    "weir_task_backpressured_seconds_total",
    "seconds",
    "Time a task waited for room in a full downstream channel (backpressure).",
    OP,
);
/// Time a task waited for input.
pub const TASK_IDLE: CounterDef<3> = counter(
    "weir_task_idle_seconds_total",
    "seconds",
    "Time a task waited for input (an upstream channel or its source).",
    OP,
);
/// Processing time of one batch.
pub const OPERATOR_BATCH_DURATION: HistogramDef<3> = histogram(
    "weir_operator_batch_duration_seconds",
    "Time a task's fused operators took for one batch.",
    OP,
    SHORT_DURATION_BUCKETS,
);
/// The current watermark.
pub const OPERATOR_WATERMARK: GaugeDef<3> = gauge(
    "weir_operator_watermark_timestamp_seconds",
    "seconds since the epoch",
    "The event-time watermark an operator last received (seconds since the Unix epoch).",
    OP,
);

// ---- Pipelines --------------------------------------------------------------------------

/// Ingestion to sink.
pub const PIPELINE_LATENCY: HistogramDef<1> = histogram(
    "weir_pipeline_end_to_end_latency_seconds",
    "From the time a source read a record to the time the result it led to reached a sink \
     (for windows: the last record read before the window fired).",
    &["pipeline"],
    LATENCY_BUCKETS,
);
/// Sink wall clock minus event time.
pub const PIPELINE_EVENT_TIME_LAG: HistogramDef<1> = histogram(
    "weir_pipeline_event_time_lag_seconds",
    "Wall-clock time at a sink minus the event time of the newest record of each batch written.",
    &["pipeline"],
    LAG_BUCKETS,
);
/// Windows holding state.
pub const WINDOWS_OPEN: GaugeDef<3> =
    gauge("weir_window_open_windows", "windows", "Windows (per key) holding state, not yet purged.", OP);
/// Window results emitted.
pub const WINDOWS_FIRED: CounterDef<3> = counter(
    "weir_window_fired_total",
    "windows",
    "Window results emitted (a window re-fired by a late record counts again).",
    OP,
);
/// Keys in keyed state.
pub const KEYED_STATE_KEYS: GaugeDef<3> =
    gauge("weir_keyed_state_keys", "keys", "Distinct keys an operator holds state for.", OP);
/// Approximate bytes of keyed state.
pub const KEYED_STATE_BYTES: GaugeDef<3> = gauge(
    "weir_keyed_state_bytes",
    "bytes",
    "Approximate memory of an operator's keyed state (entries times their in-memory size; heap \
     data an aggregate owns is not counted).",
    OP,
);

// ---- Checkpoints ------------------------------------------------------------------------

/// Checkpoint duration.
pub const CHECKPOINT_DURATION: HistogramDef<1> = histogram(
    "weir_checkpoint_duration_seconds",
    "From injecting a checkpoint's barriers to its completion.",
    &["pipeline"],
    CHECKPOINT_BUCKETS,
);
/// Checkpoint sizes.
pub const CHECKPOINT_SIZE: HistogramDef<1> = HistogramDef {
    info: info(
        "weir_checkpoint_size_bytes",
        Kind::Histogram,
        "bytes",
        "Bytes written by a completed checkpoint (state, positions, pre-committed output).",
        &["pipeline"],
    ),
    buckets: CHECKPOINT_SIZE_BUCKETS,
};
/// The id of the last completed checkpoint.
pub const CHECKPOINT_LAST_ID: GaugeDef<1> = gauge(
    "weir_checkpoint_last_completed_id",
    "",
    "Id of the last completed checkpoint (0 before the first).",
    &["pipeline"],
);
/// When the last checkpoint completed.
pub const CHECKPOINT_LAST_TIME: GaugeDef<1> = gauge(
    "weir_checkpoint_last_completed_timestamp_seconds",
    "seconds",
    "When the last checkpoint completed, seconds since the Unix epoch (0 before the first).",
    &["pipeline"],
);
/// Completed checkpoints.
pub const CHECKPOINTS_COMPLETED: CounterDef<1> =
    counter("weir_checkpoints_completed_total", "checkpoints", "Checkpoints completed.", &["pipeline"]);
/// Failed checkpoints.
pub const CHECKPOINT_FAILURES: CounterDef<1> = counter(
    "weir_checkpoint_failures_total",
    "checkpoints",
    "Checkpoints that failed or expired.",
    &["pipeline"],
);

// ---- The log ----------------------------------------------------------------------------

/// Records appended.
pub const LOG_APPENDED_RECORDS: CounterDef<2> = counter(
    "weir_log_appended_records_total",
    "records",
    "Records appended to a partition.",
    TOPIC_PARTITION,
);
/// Bytes appended.
pub const LOG_APPENDED_BYTES: CounterDef<2> = counter(
    "weir_log_appended_bytes_total",
    "bytes",
    "Bytes appended to a partition's segments (batch headers included).",
    TOPIC_PARTITION,
);
/// Append latency.
pub const LOG_APPEND_DURATION: HistogramDef<2> = histogram(
    "weir_log_append_duration_seconds",
    "Time one append call took, waiting for durability included.",
    TOPIC_PARTITION,
    SHORT_DURATION_BUCKETS,
);
/// fsync latency.
pub const LOG_FSYNC_DURATION: HistogramDef<2> = histogram(
    "weir_log_fsync_duration_seconds",
    "Time one fdatasync of a partition's active segment took.",
    TOPIC_PARTITION,
    SHORT_DURATION_BUCKETS,
);
/// End offset.
pub const LOG_END_OFFSET: GaugeDef<2> = gauge(
    "weir_log_end_offset",
    "offset",
    "The offset the next record appended to a partition gets.",
    TOPIC_PARTITION,
);
/// Log start offset.
pub const LOG_START_OFFSET: GaugeDef<2> = gauge(
    "weir_log_start_offset",
    "offset",
    "The first offset a partition still holds (retention removes older segments).",
    TOPIC_PARTITION,
);
/// Segments.
pub const LOG_SEGMENTS: GaugeDef<2> =
    gauge("weir_log_segments", "segments", "Segment files of a partition.", TOPIC_PARTITION);
/// Bytes on disk.
pub const LOG_SIZE: GaugeDef<2> =
    gauge("weir_log_size_bytes", "bytes", "Bytes of a partition's segments on disk.", TOPIC_PARTITION);
/// Recovery truncations.
pub const LOG_RECOVERY_TRUNCATIONS: CounterDef<2> = counter(
    "weir_log_recovery_truncations_total",
    "truncations",
    "Partitions whose tail was cut when the log was opened (a torn or corrupt tail after a crash).",
    TOPIC_PARTITION,
);

// ---- Consumer groups --------------------------------------------------------------------

/// Committed offset.
pub const GROUP_COMMITTED_OFFSET: GaugeDef<3> = gauge(
    "weir_consumer_group_committed_offset",
    "offset",
    "The offset a consumer group committed for a partition (the next record it reads).",
    GROUP_PARTITION,
);
/// Lag in records.
pub const GROUP_LAG: GaugeDef<3> = gauge(
    "weir_consumer_group_lag",
    "records",
    "Records appended to a partition and not yet committed by a consumer group.",
    GROUP_PARTITION,
);
/// Lag in seconds.
pub const GROUP_LAG_SECONDS: GaugeDef<3> = gauge(
    "weir_consumer_group_lag_seconds",
    "seconds",
    "Wall-clock time minus the timestamp of the first record a consumer group has not committed \
     (0 when caught up).",
    GROUP_PARTITION,
);

// ---- Apache Kafka (weir-kafka) --------------------------------------------------------------

const PIPELINE_TOPIC_PARTITION: &[&str; 3] = &["pipeline", "topic", "partition"];

/// Kafka consumer lag against the last stable offset.
pub const KAFKA_CONSUMER_LAG: GaugeDef<3> = gauge(
    "weir_kafka_consumer_lag",
    "records",
    "Offsets between a Kafka partition's last stable offset (what a read_committed reader can \
     reach, polled every second) and the offset the pipeline last committed for it (0 when caught \
     up).",
    PIPELINE_TOPIC_PARTITION,
);
/// Kafka committed offset.
pub const KAFKA_COMMITTED_OFFSET: GaugeDef<3> = gauge(
    "weir_kafka_committed_offset",
    "offset",
    "The offset a pipeline last committed to its consumer group for a Kafka partition (the next \
     record it reads), by a completed checkpoint or a task's transaction.",
    PIPELINE_TOPIC_PARTITION,
);
/// Partitions a task group owns in this process.
pub const KAFKA_OWNED_PARTITIONS: GaugeDef<2> = gauge(
    "weir_kafka_owned_partitions",
    "partitions",
    "Partitions of its topic the consumer group assigns to this process's KafkaTasks (one task each).",
    &["group", "topic"],
);
/// Rebalances of a task group, by kind.
pub const KAFKA_REBALANCES: CounterDef<2> = counter(
    "weir_kafka_rebalances_total",
    "rebalances",
    "Rebalances that moved partitions of this process's KafkaTasks, by kind: assign (partitions \
     taken), revoke (partitions handed back), lost (partitions taken away without a revoke, e.g. \
     after the session timed out).",
    &["group", "kind"],
);
/// Kafka transaction commit latency.
pub const KAFKA_TXN_COMMIT: HistogramDef<1> = histogram(
    "weir_kafka_txn_commit_seconds",
    "Time an exactly-once Kafka sink took to commit one checkpoint's transaction (its marker and \
     a task's input offsets included).",
    &["pipeline"],
    SHORT_DURATION_BUCKETS,
);
/// Aborted Kafka transactions, by reason.
pub const KAFKA_TXN_ABORTS: CounterDef<2> = counter(
    "weir_kafka_txn_aborts_total",
    "transactions",
    "Transactions an exactly-once Kafka sink aborted because their commit failed, by reason: \
     fenced (a newer producer of the transactional id took over), error (any other failure; the \
     pipeline restarts from its last checkpoint).",
    &["pipeline", "reason"],
);
/// Kafka producer fencings.
pub const KAFKA_FENCED: CounterDef<1> = counter(
    "weir_kafka_fenced_total",
    "fencings",
    "Times an exactly-once Kafka sink found its producer fenced: another process took its \
     transactional id over (its partition moved) and this one's open transaction can never commit.",
    &["pipeline"],
);

// ---- Feature views (weir-features) ----------------------------------------------------------

/// Lookup latencies: 1 µs to 1 s (an in-process lookup takes microseconds).
pub const LOOKUP_BUCKETS: &[f64] = &[
    0.000001, 0.0000025, 0.000005, 0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005,
    0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];

const PIPELINE_VIEW: &[&str; 2] = &["pipeline", "view"];
const PIPELINE_VIEW_SUBTASK: &[&str; 3] = &["pipeline", "view", "subtask"];

/// Feature lookup latency, by path.
pub const FEATURE_LOOKUP_DURATION: HistogramDef<3> = histogram(
    "weir_feature_lookup_duration_seconds",
    "Time one lookup into a feature view took, by path: inprocess (one lookup_at or lookup_many \
     call, its entities' rows included) or http (one GET /features request, from its arrival to \
     the JSON body, the network excluded).",
    &["pipeline", "view", "path"],
    LOOKUP_BUCKETS,
);
/// Arrival to servable.
pub const FEATURE_FRESHNESS: HistogramDef<2> = histogram(
    "weir_feature_freshness_seconds",
    "From the log append of the newest event of a batch (on a topic that keeps append times: \
     LogAppendTime), else from the time a source read it (its arrival at the feature view's \
     operator if the batch carries no read time), to the batch being applied: servable by lookups.",
    PIPELINE_VIEW,
    LATENCY_BUCKETS,
);
/// Entities with feature state.
pub const FEATURE_ENTITIES: GaugeDef<3> = gauge(
    "weir_feature_entities",
    "entities",
    "Entities a feature view's subtask holds state for (updated after every batch and watermark).",
    PIPELINE_VIEW_SUBTASK,
);
/// Approximate bytes of feature state.
pub const FEATURE_STATE_BYTES: GaugeDef<3> = gauge(
    "weir_feature_state_bytes",
    "bytes",
    "Approximate memory of a feature view's subtask state (retained events, tiles, lifetime \
     aggregates), sampled by every checkpoint and between checkpoints at most every 10 seconds: \
     computing it walks every entity.",
    PIPELINE_VIEW_SUBTASK,
);
/// Late events a feature view dropped.
pub const FEATURE_LATE_EVENTS: CounterDef<2> = counter(
    "weir_feature_late_events_total",
    "events",
    "Events a feature view dropped as late (at or behind its watermark minus its allowed \
     lateness), never applied.",
    PIPELINE_VIEW,
);

/// Every metric Weir exports.
pub const CATALOG: &[MetricInfo] = &[
    OPERATOR_RECORDS_IN.info,
    OPERATOR_RECORDS_OUT.info,
    OPERATOR_BYTES_IN.info,
    OPERATOR_BYTES_OUT.info,
    OPERATOR_DROPPED.info,
    TASK_BUSY.info,
    TASK_BACKPRESSURED.info,
    TASK_IDLE.info,
    OPERATOR_BATCH_DURATION.info,
    OPERATOR_WATERMARK.info,
    PIPELINE_LATENCY.info,
    PIPELINE_EVENT_TIME_LAG.info,
    WINDOWS_OPEN.info,
    WINDOWS_FIRED.info,
    KEYED_STATE_KEYS.info,
    KEYED_STATE_BYTES.info,
    CHECKPOINT_DURATION.info,
    CHECKPOINT_SIZE.info,
    CHECKPOINTS_COMPLETED.info,
    CHECKPOINT_FAILURES.info,
    CHECKPOINT_LAST_ID.info,
    CHECKPOINT_LAST_TIME.info,
    LOG_APPENDED_RECORDS.info,
    LOG_APPENDED_BYTES.info,
    LOG_APPEND_DURATION.info,
    LOG_FSYNC_DURATION.info,
    LOG_END_OFFSET.info,
    LOG_START_OFFSET.info,
    LOG_SEGMENTS.info,
    LOG_SIZE.info,
    LOG_RECOVERY_TRUNCATIONS.info,
    GROUP_COMMITTED_OFFSET.info,
    GROUP_LAG.info,
    GROUP_LAG_SECONDS.info,
    KAFKA_CONSUMER_LAG.info,
    KAFKA_COMMITTED_OFFSET.info,
    KAFKA_OWNED_PARTITIONS.info,
    KAFKA_REBALANCES.info,
    KAFKA_TXN_COMMIT.info,
    KAFKA_TXN_ABORTS.info,
    KAFKA_FENCED.info,
    FEATURE_LOOKUP_DURATION.info,
    FEATURE_FRESHNESS.info,
    FEATURE_ENTITIES.info,
    FEATURE_STATE_BYTES.info,
    FEATURE_LATE_EVENTS.info,
];

/// The catalog entry named `name`, or the histogram whose `_bucket`, `_sum` or `_count` series
/// it is.
pub fn lookup(name: &str) -> Option<&'static MetricInfo> {
    CATALOG.iter().find(|m| m.name == name).or_else(|| {
        let base = ["_bucket", "_sum", "_count"].iter().find_map(|s| name.strip_suffix(s))?;
        CATALOG.iter().find(|m| m.kind == Kind::Histogram && m.name == base)
    })
}

/// The catalog as a Markdown table (name, type, unit, labels, help), for the README.
pub fn markdown_table() -> String {
    let mut s = String::from("| Metric | Type | Unit | Labels | Meaning |\n|---|---|---|---|---|\n");
    for m in CATALOG {
        let kind = match m.kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        };
        s.push_str(&format!(
            "| `{}` | {kind} | {} | {} | {} |\n",
            m.name,
            m.unit,
            m.labels.iter().map(|l| format!("`{l}`")).collect::<Vec<_>>().join(", "),
            m.help
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_prometheus_conventions() {
        let mut seen = std::collections::HashSet::new();
        for m in CATALOG {
            assert!(seen.insert(m.name), "{} twice", m.name);
            assert!(m.name.starts_with("weir_"), "{}", m.name);
            assert!(
                m.name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
                "{}",
                m.name
            );
            assert_eq!(
                m.kind == Kind::Counter,
                m.name.ends_with("_total"),
                "{}: _total on counters only",
                m.name
            );
            for suffix in ["_bucket", "_sum", "_count"] {
                assert!(!m.name.ends_with(suffix), "{} ends with a histogram suffix", m.name);
            }
            let base = m.name.strip_suffix("_total").unwrap_or(m.name);
            if m.unit == "seconds" {
                assert!(base.ends_with("_seconds"), "{}: unit seconds, name must say so", m.name);
            }
            if m.unit == "bytes" {
                assert!(base.ends_with("_bytes"), "{}: unit bytes, name must say so", m.name);
            }
            for l in m.labels {
                assert!(ALLOWED_LABELS.contains(l), "{}: label {l} is not allowed", m.name);
            }
            assert!(m.help.ends_with('.') && m.help.len() > 10, "{}: help", m.name);
        }
    }

    #[test]
    fn histogram_buckets_ascend() {
        for b in [
            SHORT_DURATION_BUCKETS,
            LATENCY_BUCKETS,
            LAG_BUCKETS,
            CHECKPOINT_BUCKETS,
            CHECKPOINT_SIZE_BUCKETS,
            LOOKUP_BUCKETS,
        ] {
            assert!(b.windows(2).all(|w| w[0] < w[1]));
        }
    }

    #[test]
    fn lookup_finds_histogram_series() {
        assert_eq!(
            lookup("weir_log_fsync_duration_seconds_bucket").map(|m| m.name),
            Some(LOG_FSYNC_DURATION.info.name)
        );
        assert_eq!(lookup("weir_operator_records_in_total").map(|m| m.kind), Some(Kind::Counter));
        assert!(lookup("weir_operator_records_in_total_count").is_none(), "counters have no _count series");
        assert!(lookup("weir_nope").is_none());
    }
}
