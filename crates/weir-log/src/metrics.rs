//! The log's Prometheus metrics, exported by [`Log::register_metrics`](crate::Log::register_metrics).
//!
//! Every name, help text, label set and bucket list comes from `weir_metrics::catalog`; none is
//! spelled here. Labels are `topic`, `partition` (and `group` for consumer groups).
//!
//! What is exported and where it is measured:
//!
//! - `LOG_APPENDED_RECORDS`, `LOG_APPENDED_BYTES` (counters): in `Partition::append`, what one call
//!   wrote to the segment files: its records, and its encoded batches, headers included. Batches
//!   a failing call wrote before it failed are counted (they stay in the log).
//! - `LOG_APPEND_DURATION` (histogram): one observation per `Partition::append` call, that is per
//!   [`Topic::append`](crate::Topic::append) and per partition a [`Topic::send`](crate::Topic::send)
//!   writes to; from entering the partition to returning: writer lock wait, encoding, writes, rolls
//!   and, under `Durability::EveryBatch`, the wait for the group-commit `fdatasync`. Failed calls
//!   are observed too.
//! - `LOG_FSYNC_DURATION` (histogram): each `fdatasync` of a partition's active segment: group
//!   commits (under `EveryBatch`), background and explicit flushes, and the sync of a segment being
//!   rolled under `EveryBatch`. Not timed: directory syncs and syncs of segments sealed since the
//!   last flush.
//! - `LOG_RECOVERY_TRUNCATIONS` (counter): at registration, one per partition that
//!   [`Log::recovery`](crate::Log::recovery) lists with a torn tail cut.
//! - At scrape time, by [`LogCollector`], from the live topic map: `LOG_END_OFFSET`,
//!   `LOG_START_OFFSET`, `LOG_SEGMENTS`, `LOG_SIZE` per partition; and for every group with
//!   committed offsets `GROUP_COMMITTED_OFFSET`, `GROUP_LAG` (end offset − committed offset) and
//!   `GROUP_LAG_SECONDS` (wall clock − timestamp of the record at the committed offset, 0 when
//!   caught up; below the log start offset, the first record still stored stands in).
//!
//! # Cost on the append path
//!
//! Without registered metrics: one `OnceLock::get` (an acquire load and a branch) per append call
//! and per active-segment `fdatasync`; nothing else. With them, per append call (not per record):
//! two `Instant::now()`, two relaxed atomic adds and one histogram observation (a search of 19
//! bucket bounds and three atomic adds); plus a store of two integers per run of batches written,
//! local to the call. Each timed `fdatasync` adds two `Instant::now()` and one observation. The
//! handles are resolved once per partition: no lock and no map lookup is added. Scrape-time gauges
//! cost the append path nothing; a scrape reads each partition's atomics, clones its segment list
//! and reads one batch per lagging group partition.
//!
//! # Invariants
//!
//! - A partition's handles are set at most once (`OnceLock`), and a log registers at most once
//!   (its first registry wins): nothing is counted twice, whatever the number of calls.
//! - Every partition gets its handles (all series at 0) when metrics are registered, or, for a
//!   topic created later, before the topic is visible in the log's topic map.
//! - The collector holds the log weakly: a registry outliving the log does not keep the directory
//!   locked, and exports no gauges for a dropped log. (If the last handle is dropped while a scrape
//!   holds the log, the log closes on the scraping thread.)
//! - A collector's descriptors are the seven catalog gauges; a registry accepts one such collector,
//!   so it exports the gauges of the first log registered with it only.
//! - Gauges are built afresh at every scrape from the live topics, so a deleted topic's gauges are
//!   gone from the next scrape. Its counters and histograms stay until the process exits (the
//!   registry cannot remove series).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use prometheus::{GaugeVec, Opts};
use weir_metrics::catalog::{
    GROUP_COMMITTED_OFFSET, GROUP_LAG, GROUP_LAG_SECONDS, GaugeDef, LOG_APPEND_DURATION, LOG_APPENDED_BYTES,
    LOG_APPENDED_RECORDS, LOG_END_OFFSET, LOG_FSYNC_DURATION, LOG_RECOVERY_TRUNCATIONS, LOG_SEGMENTS,
    LOG_SIZE, LOG_START_OFFSET,
};
use weir_metrics::{Collector, Desc, Histogram, IntCounter, MetricFamily, Metrics};

use crate::log::WeakLog;
use crate::partition::PartitionRecovery;
use crate::topic::{Topic, now_ms};

/// What one append call wrote to the segment files so far.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Written {
    /// Records written.
    pub(crate) records: u64,
    /// Bytes of batches written, headers included.
    pub(crate) bytes: u64,
}

/// One partition's metric handles, resolved once.
pub(crate) struct PartitionMetrics {
    appended_records: IntCounter,
    appended_bytes: IntCounter,
    append_duration: Histogram,
    fsync_duration: Histogram,
}

impl PartitionMetrics {
    /// Creates (at 0) every series of the partition, the recovery counter included.
    fn new(metrics: &Metrics, topic: &str, partition: u32) -> PartitionMetrics {
        let partition = partition.to_string();
        let labels = [topic, partition.as_str()];
        metrics.counter(&LOG_RECOVERY_TRUNCATIONS, labels);
        PartitionMetrics {
            appended_records: metrics.counter(&LOG_APPENDED_RECORDS, labels),
            appended_bytes: metrics.counter(&LOG_APPENDED_BYTES, labels),
            append_duration: metrics.histogram(&LOG_APPEND_DURATION, labels),
            fsync_duration: metrics.histogram(&LOG_FSYNC_DURATION, labels),
        }
    }

    /// Accounts one append call.
    pub(crate) fn appended(&self, written: Written, took: Duration) {
        if written.records > 0 {
            self.appended_records.inc_by(written.records);
            self.appended_bytes.inc_by(written.bytes);
        }
        self.append_duration.observe(took.as_secs_f64());
    }
}

/// Runs `sync` (an `fdatasync` of an active segment), timing it if `metrics` are present.
pub(crate) fn time_fsync<T>(metrics: Option<&PartitionMetrics>, sync: impl FnOnce() -> T) -> T {
    let Some(metrics) = metrics else { return sync() };
    let start = Instant::now();
    let result = sync();
    metrics.fsync_duration.observe(start.elapsed().as_secs_f64());
    result
}

/// Gives every partition of `topic` its handles, unless it has them.
pub(crate) fn attach(metrics: &Metrics, topic: &Topic) {
    for p in &topic.inner().partitions {
        p.metrics.get_or_init(|| PartitionMetrics::new(metrics, topic.name(), p.id()));
    }
}

/// The body of [`Log::register_metrics`](crate::Log::register_metrics), called once per log.
pub(crate) fn register(metrics: &Metrics, topics: &[Topic], recovery: &[PartitionRecovery], log: WeakLog) {
    for topic in topics {
        attach(metrics, topic);
    }
    for r in recovery.iter().filter(|r| r.truncated_bytes > 0) {
        metrics
            .counter(&LOG_RECOVERY_TRUNCATIONS, [r.topic.as_str(), r.partition.to_string().as_str()])
            .inc();
    }
    metrics.register_collector(Box::new(LogCollector::new(log)));
}

/// A gauge family built for one scrape; `None` if the definition was rejected (logged).
struct Gauges<const N: usize>(Option<GaugeVec>);

impl<const N: usize> Gauges<N> {
    fn new(def: &GaugeDef<N>) -> Gauges<N> {
        let info = def.info;
        match GaugeVec::new(Opts::new(info.name, info.help), info.labels) {
            Ok(vec) => Gauges(Some(vec)),
            Err(e) => {
                tracing::error!(metric = info.name, error = %e, "invalid gauge definition");
                Gauges(None)
            }
        }
    }

    fn set(&self, labels: [&str; N], value: f64) {
        if let Some(vec) = &self.0 {
            vec.with_label_values(&labels).set(value);
        }
    }

    fn into_families(self) -> Vec<MetricFamily> {
        self.0.map(|vec| vec.collect()).unwrap_or_default()
    }
}

/// Computes the log's gauges when the registry is scraped.
struct LogCollector {
    log: WeakLog,
    /// One family per exported gauge, only for [`Collector::desc`].
    templates: Vec<GaugeVec>,
}

impl LogCollector {
    fn new(log: WeakLog) -> LogCollector {
        let templates = [
            Gauges::new(&LOG_END_OFFSET).0,
            Gauges::new(&LOG_START_OFFSET).0,
            Gauges::new(&LOG_SEGMENTS).0,
            Gauges::new(&LOG_SIZE).0,
            Gauges::new(&GROUP_COMMITTED_OFFSET).0,
            Gauges::new(&GROUP_LAG).0,
            Gauges::new(&GROUP_LAG_SECONDS).0,
        ];
        LogCollector { log, templates: templates.into_iter().flatten().collect() }
    }
}

impl Collector for LogCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.templates.iter().flat_map(|vec| vec.desc()).collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let Some(log) = self.log.upgrade() else { return Vec::new() };
        let topics: BTreeMap<String, Topic> =
            log.topic_handles().into_iter().map(|t| (t.name().to_owned(), t)).collect();

        let end = Gauges::new(&LOG_END_OFFSET);
        let start = Gauges::new(&LOG_START_OFFSET);
        let segments = Gauges::new(&LOG_SEGMENTS);
        let size = Gauges::new(&LOG_SIZE);
        for (name, topic) in &topics {
            for info in topic.describe().partitions {
                let partition = info.partition.to_string();
                let labels = [name.as_str(), partition.as_str()];
                end.set(labels, info.end_offset as f64);
                start.set(labels, info.start_offset as f64);
                segments.set(labels, info.segments as f64);
                size.set(labels, info.size_bytes as f64);
            }
        }

        let committed = Gauges::new(&GROUP_COMMITTED_OFFSET);
        let lag = Gauges::new(&GROUP_LAG);
        let lag_seconds = Gauges::new(&GROUP_LAG_SECONDS);
        let groups = log.list_groups().unwrap_or_else(|e| {
            tracing::warn!(error = %e, "metrics: cannot list consumer groups");
            Vec::new()
        });
        for group in groups {
            let description = log.groups().describe(
                &group,
                |t| topics.get(t).map(Topic::partition_count),
                |t, p| topics.get(t).and_then(|t| t.end_offset(p).ok()),
            );
            let description = match description {
                Ok(d) => d,
                Err(e) => {
                    tracing::warn!(group, error = %e, "metrics: skipping consumer group");
                    continue;
                }
            };
            for gp in description.partitions {
                let Some(offset) = gp.committed else { continue };
                let partition = gp.partition.to_string();
                let labels = [group.as_str(), gp.topic.as_str(), partition.as_str()];
                committed.set(labels, offset as f64);
                lag.set(labels, gp.end_offset.saturating_sub(offset) as f64);
                let Some(topic) = topics.get(&gp.topic) else { continue };
                match lag_ms(topic, gp.partition, offset, gp.end_offset) {
                    Ok(ms) => lag_seconds.set(labels, ms as f64 / 1000.0),
                    Err(e) => tracing::warn!(
                        group, topic = gp.topic, partition = gp.partition, error = %e,
                        "metrics: cannot read the first uncommitted record"
                    ),
                }
            }
        }

        let mut families: Vec<MetricFamily> =
            [end, start, segments, size].into_iter().flat_map(Gauges::into_families).collect();
        families.extend([committed, lag, lag_seconds].into_iter().flat_map(Gauges::into_families));
        families
    }
}

/// Milliseconds since the timestamp of the record at `committed` (the first one the group has not
/// committed; the first one still stored if retention removed it), 0 if there is none or it lies
/// in the future.
fn lag_ms(topic: &Topic, partition: u32, committed: u64, end: u64) -> crate::Result<i64> {
    let from = committed.max(topic.start_offset(partition)?);
    if from >= end {
        return Ok(0);
    }
    let records = topic.read(partition, from, 1)?;
    Ok(records.iter().find(|r| r.offset >= from).map_or(0, |r| now_ms().saturating_sub(r.timestamp).max(0)))
}
