//! The registry an application creates and hands to its pipelines and its log.

use std::any::Any;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use prometheus::core::Collector;
use prometheus::{
    Counter, CounterVec, Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter,
    IntCounterVec, Opts,
};

use crate::catalog::{CounterDef, GaugeDef, HistogramDef, MetricInfo};

/// A metrics registry: no global state; cheap to clone (clones share the registry).
///
/// Handles ([`IntCounter`], [`Gauge`], [`Histogram`]) are looked up once, when an operator or
/// partition starts, and then updated with atomics only.
#[derive(Clone, Default)]
pub struct Metrics {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    registry: prometheus::Registry,
    /// The metric families registered so far, by name.
    families: Mutex<HashMap<&'static str, Box<dyn Any + Send>>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let families = self.inner.families.lock().unwrap_or_else(PoisonError::into_inner).len();
        f.debug_struct("Metrics").field("families", &families).finish()
    }
}

impl Metrics {
    /// An empty registry.
    pub fn new() -> Self {
        Metrics::default()
    }

    /// The family of `info`, registered on first use by `make`.
    fn family<V, F>(&self, info: &MetricInfo, make: F) -> V
    where
        V: Collector + Clone + Send + 'static,
        F: FnOnce() -> prometheus::Result<V>,
    {
        let mut families = self.inner.families.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(v) = families.get(info.name).and_then(|f| f.downcast_ref::<V>()) {
            return v.clone();
        }
        // Fails only for an invalid name or label name: the catalog's tests build every entry.
        #[allow(clippy::expect_used)]
        let family = make().expect("catalog entries are valid metric definitions");
        if let Err(e) = self.inner.registry.register(Box::new(family.clone())) {
            tracing::error!(metric = info.name, error = %e, "metric not registered");
        }
        families.insert(info.name, Box::new(family.clone()));
        family
    }

    /// The counter of `def` with these label values (registered and set to 0 on first use, so
    /// dashboards show 0 rather than no data).
    pub fn counter<const N: usize>(&self, def: &CounterDef<N>, labels: [&str; N]) -> IntCounter {
        let info = def.info;
        self.family(&info, || IntCounterVec::new(Opts::new(info.name, info.help), info.labels))
            .with_label_values(&labels)
    }

    /// The counter of `def` with these label values, counting fractions (seconds).
    pub fn float_counter<const N: usize>(&self, def: &CounterDef<N>, labels: [&str; N]) -> Counter {
        let info = def.info;
        self.family(&info, || CounterVec::new(Opts::new(info.name, info.help), info.labels))
            .with_label_values(&labels)
    }

    /// The gauge of `def` with these label values.
    pub fn gauge<const N: usize>(&self, def: &GaugeDef<N>, labels: [&str; N]) -> Gauge {
        let info = def.info;
        self.family(&info, || GaugeVec::new(Opts::new(info.name, info.help), info.labels))
            .with_label_values(&labels)
    }

    /// The histogram of `def` with these label values.
    pub fn histogram<const N: usize>(&self, def: &HistogramDef<N>, labels: [&str; N]) -> Histogram {
        let info = def.info;
        self.family(&info, || {
            HistogramVec::new(
                HistogramOpts::new(info.name, info.help).buckets(def.buckets.to_vec()),
                info.labels,
            )
        })
        .with_label_values(&labels)
    }

    /// Adds a collector whose values are computed when `/metrics` is scraped (e.g. a log's
    /// offsets and sizes). It must only export names of the catalog.
    pub fn register_collector(&self, collector: Box<dyn Collector>) {
        if let Err(e) = self.inner.registry.register(collector) {
            tracing::error!(error = %e, "metrics collector not registered");
        }
    }

    /// Everything registered, in the Prometheus text format (version 0.0.4).
    pub fn encode(&self) -> String {
        let mut out = Vec::new();
        let families = self.inner.registry.gather();
        if let Err(e) = prometheus::TextEncoder::new().encode(&families, &mut out) {
            tracing::error!(error = %e, "encoding metrics");
        }
        String::from_utf8(out).unwrap_or_default()
    }
}

/// The content type of [`Metrics::encode`]'s output.
pub const TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::{LOG_FSYNC_DURATION, OPERATOR_RECORDS_IN, OPERATOR_WATERMARK};

    #[test]
    fn every_catalog_entry_registers() {
        use crate::catalog::{CATALOG, Kind};
        let m = Metrics::new();
        for info in CATALOG {
            let labels: Vec<&str> = info.labels.to_vec();
            let opts = Opts::new(info.name, info.help);
            let c: Box<dyn Collector> = match info.kind {
                Kind::Counter => Box::new(IntCounterVec::new(opts, &labels).unwrap()),
                Kind::Gauge => Box::new(GaugeVec::new(opts, &labels).unwrap()),
                Kind::Histogram => {
                    Box::new(HistogramVec::new(HistogramOpts::new(info.name, info.help), &labels).unwrap())
                }
            };
            m.inner.registry.register(c).unwrap();
        }
    }

    #[test]
    fn handles_share_one_family_and_start_at_zero() {
        let m = Metrics::new();
        let a = m.counter(&OPERATOR_RECORDS_IN, ["p", "map", "0"]);
        let _b = m.counter(&OPERATOR_RECORDS_IN, ["p", "map", "1"]);
        a.inc_by(5);
        m.gauge(&OPERATOR_WATERMARK, ["p", "window", "0"]).set(1.5e9);
        m.histogram(&LOG_FSYNC_DURATION, ["t", "0"]).observe(0.002);
        let text = m.encode();
        assert!(
            text.contains(r#"weir_operator_records_in_total{operator="map",pipeline="p",subtask="0"} 5"#),
            "{text}"
        );
        assert!(
            text.contains(r#"weir_operator_records_in_total{operator="map",pipeline="p",subtask="1"} 0"#),
            "{text}"
        );
        assert!(text.contains("# TYPE weir_operator_records_in_total counter"), "{text}");
        assert!(text.contains("# TYPE weir_log_fsync_duration_seconds histogram"), "{text}");
        assert!(
            text.contains(r#"weir_log_fsync_duration_seconds_bucket{partition="0",topic="t",le="0.0025"} 1"#),
            "{text}"
        );
        assert!(text.contains("weir_operator_watermark_timestamp_seconds"), "{text}");
    }
}
