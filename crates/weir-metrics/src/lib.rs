//! `weir-metrics`: the metric catalog, the registry and the `/metrics` endpoint.
//!
//! - [`catalog`] names every metric Weir exports (name, type, unit, help, labels) — the only
//!   place a name is spelled; the README table and the dashboard checks read it.
//! - [`Metrics`] is a registry the application creates and passes to its pipelines and its log
//!   (no hidden global). Code looks a handle up once and then updates it with atomics; hot paths
//!   keep plain local counts and add them per batch.
//! - [`serve`] (feature `server`, default) serves `GET /metrics` and `GET /healthz` on tokio,
//!   on `127.0.0.1:9898` unless configured otherwise; a non-loopback address must be allowed
//!   explicitly.
//!
//! # Why the `prometheus` crate
//!
//! The exposition is the classic Prometheus text format (0.0.4), produced by the `prometheus`
//! crate. The official `prometheus-client` crate only writes OpenMetrics, where a counter's
//! family is declared without `_total` and its sample carries it; Prometheus 2.42's
//! `promtool check metrics` (what Debian ships and what our dashboard test runs) reads that as
//! a second, undocumented family ("no help text"). The text format passes it cleanly and every
//! Prometheus version scrapes it.

pub mod catalog;
mod registry;
#[cfg(feature = "server")]
mod server;

pub use prometheus::core::{Collector, Desc};
pub use prometheus::proto::MetricFamily;
pub use prometheus::{Counter, Gauge, Histogram, IntCounter};
pub use registry::{Metrics, TEXT_CONTENT_TYPE};
#[cfg(feature = "server")]
pub use server::{MetricsServer, ServerConfig, serve};

/// Errors of this crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A setting is invalid.
    #[error("invalid metrics configuration: {field}: {reason}")]
    InvalidConfig {
        /// The setting.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The endpoint could not be served.
    #[error("metrics endpoint on {addr}: {source}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
}
