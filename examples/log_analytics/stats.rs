//! The five statistics of the job, defined once: the one-process pipeline (`main.rs`) and the
//! scale-out task groups (`scale_out.rs`) build them from these functions, and write the same
//! rows. Each aggregation takes parsed requests with event time and gives window results; each
//! row function turns a window result into the rows of its kind.

use std::cmp::Reverse;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use weir::runtime::{Count, Quantile, SessionWindows, SlidingWindows, Stream, TumblingWindows, WindowResult};

use crate::MINUTE;
use crate::access_log::AccessLogEntry;

/// "2xx" for 2, as [`AccessLogEntry::status_class`] names it.
pub(crate) fn status_class_name(class: u8) -> &'static str {
    match class {
        1 => "1xx",
        2 => "2xx",
        3 => "3xx",
        4 => "4xx",
        _ => "5xx",
    }
}

/// One parsed request, as the analytics need it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Access {
    pub(crate) ts: i64,
    pub(crate) client: Arc<str>,
    pub(crate) path: Arc<str>,
    /// The status's hundreds digit: 2 for 2xx (a small owned key; see `status_class_name`).
    pub(crate) status_class: u8,
    pub(crate) bytes: u64,
    /// Request time in ms, if the line has one.
    pub(crate) time_ms: Option<f64>,
}

impl From<AccessLogEntry> for Access {
    fn from(e: AccessLogEntry) -> Self {
        Access {
            ts: e.timestamp_ms,
            status_class: (e.status / 100).min(5) as u8,
            client: e.client.into(),
            path: e.path.into(),
            bytes: e.bytes,
            time_ms: e.request_time_ms,
        }
    }
}

/// Year, month and day of a day number since 1970-01-01 (Howard Hinnant's `civil_from_days`).
pub(crate) fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// `2026-11-24T00:16:00.000Z` for any time (the access-log parser accepts years 0–9999).
pub(crate) fn rfc3339(ms: i64) -> String {
    let (secs, millis) = (ms.div_euclid(1000), ms.rem_euclid(1000));
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}Z", rem / 3600, rem / 60 % 60, rem % 60)
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct StatusRow {
    pub(crate) window_start: String,
    pub(crate) window_end: String,
    pub(crate) status_class: &'static str,
    pub(crate) requests: u64,
    pub(crate) bytes: u64,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct PathRow {
    pub(crate) window_start: String,
    pub(crate) window_end: String,
    pub(crate) path: Arc<str>,
    pub(crate) requests: u64,
    pub(crate) rank: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) p50_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) p95_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) p99_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) p50_bytes: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) p95_bytes: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) p99_bytes: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct ClientRow {
    pub(crate) window_start: String,
    pub(crate) window_end: String,
    pub(crate) client: Arc<str>,
    pub(crate) requests: u64,
    pub(crate) rank: usize,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct AlertRow {
    pub(crate) window_start: String,
    pub(crate) window_end: String,
    pub(crate) requests: u64,
    pub(crate) errors: u64,
    pub(crate) error_ratio: f64,
    pub(crate) threshold: f64,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct SessionRow {
    pub(crate) window_start: String,
    pub(crate) window_end: String,
    pub(crate) client: Arc<str>,
    pub(crate) pages: u64,
    pub(crate) duration_s: f64,
}

/// A path's requests and percentiles (p50, p95, p99) in a minute.
pub(crate) type PathStats = WindowResult<Arc<str>, (u64, Option<f64>, Option<f64>, Option<f64>)>;
/// A client's requests in a 5-minute window.
pub(crate) type ClientCount = WindowResult<Arc<str>, u64>;
/// Requests and 5xx responses.
pub(crate) type Errors = WindowResult<(), (u64, u64)>;
/// A client's session: requests, first and last request time.
pub(crate) type Session = WindowResult<Arc<str>, (u64, i64, i64)>;

/// How the 10 busiest paths of a window rank: by requests, ties by path.
pub(crate) fn path_rank(s: &PathStats) -> (u64, Reverse<Arc<str>>) {
    (s.value.0, Reverse(s.key.clone()))
}

/// How the 10 busiest clients of a window rank: by requests, ties by client.
pub(crate) fn client_rank(c: &ClientCount) -> (u64, Reverse<Arc<str>>) {
    (c.value, Reverse(c.key.clone()))
}

/// Requests and bytes per minute by status class.
pub(crate) fn status_counts(events: Stream<Access>) -> Stream<WindowResult<u8, (u64, u64)>> {
    events
        .key_by(|a| a.status_class)
        .window(TumblingWindows::of(MINUTE))
        .aggregate_with(|a| (a.count(), a.sum(|a| a.bytes)))
}

/// Per minute, the 10 busiest paths with percentiles of request times (`time_mode`) or of
/// response sizes.
pub(crate) fn top_paths(
    events: Stream<Access>,
    time_mode: bool,
) -> Stream<WindowResult<i64, Vec<PathStats>>> {
    let value = move |a: &Access| match (time_mode, a.time_ms) {
        (true, ms) => ms.unwrap_or(f64::NAN),
        (false, _) => a.bytes as f64,
    };
    events
        .key_by(|a| a.path.clone())
        .window(TumblingWindows::of(MINUTE))
        .aggregate((Count, Quantile::of(0.5, value), Quantile::of(0.95, value), Quantile::of(0.99, value)))
        .key_by(|r| r.window_start)
        .window(TumblingWindows::of(MINUTE))
        .aggregate_with(|a| a.top_by(10, path_rank))
}

/// Per 5-minute window sliding by 1 (keyed by its start), the 10 busiest clients.
pub(crate) fn top_clients(events: Stream<Access>) -> Stream<WindowResult<i64, Vec<ClientCount>>> {
    events
        .key_by(|a| a.client.clone())
        .window(SlidingWindows::of(5 * MINUTE, MINUTE))
        .aggregate(Count)
        .key_by(|r| r.window_start)
        .window(TumblingWindows::of(MINUTE))
        .aggregate_with(|a| a.top_by(10, client_rank))
}

/// Requests and 5xx responses per minute.
pub(crate) fn error_counts(events: Stream<Access>) -> Stream<Errors> {
    events
        .key_by(|_| ())
        .window(TumblingWindows::of(MINUTE))
        .aggregate_with(|a| (a.count(), a.sum(|a| u64::from(a.status_class == 5))))
}

/// Sessions per client: 30 minutes without a request end one.
pub(crate) fn sessions(events: Stream<Access>) -> Stream<Session> {
    events
        .key_by(|a| a.client.clone())
        .window(SessionWindows::with_gap(30 * MINUTE))
        .aggregate_with(|a| (a.count(), a.min(|a| a.ts), a.max(|a| a.ts)))
}

pub(crate) fn status_row(r: WindowResult<u8, (u64, u64)>) -> StatusRow {
    StatusRow {
        window_start: rfc3339(r.window_start),
        window_end: rfc3339(r.window_end),
        status_class: status_class_name(r.key),
        requests: r.value.0,
        bytes: r.value.1,
    }
}

/// The rows of a window's top paths, ranked from 1.
pub(crate) fn path_rows(top: Vec<PathStats>, time_mode: bool) -> Vec<PathRow> {
    top.into_iter()
        .enumerate()
        .map(|(i, r)| {
            let (requests, p50, p95, p99) = r.value;
            let (ms, bytes) = if time_mode {
                ((p50, p95, p99), (None, None, None))
            } else {
                ((None, None, None), (p50, p95, p99))
            };
            PathRow {
                window_start: rfc3339(r.window_start),
                window_end: rfc3339(r.window_end),
                path: r.key,
                requests,
                rank: i + 1,
                p50_ms: ms.0,
                p95_ms: ms.1,
                p99_ms: ms.2,
                p50_bytes: bytes.0,
                p95_bytes: bytes.1,
                p99_bytes: bytes.2,
            }
        })
        .collect()
}

/// The rows of a window's top clients, ranked from 1.
pub(crate) fn client_rows(top: Vec<ClientCount>) -> Vec<ClientRow> {
    top.into_iter()
        .enumerate()
        .map(|(i, r)| ClientRow {
            window_start: rfc3339(r.window_start),
            window_end: rfc3339(r.window_end),
            client: r.key,
            requests: r.value,
            rank: i + 1,
        })
        .collect()
}

/// The alert of a minute whose share of 5xx responses is over `threshold`.
pub(crate) fn alert_row(r: Errors, threshold: f64) -> Option<AlertRow> {
    let (requests, errors) = r.value;
    (errors as f64 > threshold * requests as f64).then(|| AlertRow {
        window_start: rfc3339(r.window_start),
        window_end: rfc3339(r.window_end),
        requests,
        errors,
        error_ratio: errors as f64 / requests as f64,
        threshold,
    })
}

pub(crate) fn session_row(r: Session) -> SessionRow {
    SessionRow {
        window_start: rfc3339(r.window_start),
        window_end: rfc3339(r.window_end),
        client: r.key,
        pages: r.value.0,
        duration_s: (r.value.2 - r.value.1) as f64 / 1000.0,
    }
}
