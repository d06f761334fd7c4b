//! The tables on stdout: one per minute of event time, in window order, with the minute's
//! status classes, its top paths and the top clients of the five minutes that end with it.
//!
//! The pipeline's subtasks hand their window results to a [`Report`] (a few records per
//! minute, not per request); [`Report::take_ready`] formats the minutes that are complete: a
//! minute is complete once a status result two minutes later has arrived (every window of the
//! minute has fired by then: they all close on the same watermark), or when the job has ended.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::{Arc, Mutex, PoisonError};

/// How many top paths and clients a table shows (the files have all ten).
const SHOWN: usize = 5;
const MINUTE_MS: i64 = 60_000;

/// One top path of a minute: requests and p50/p95/p99 (of ms or bytes).
pub(crate) type TopPath = (Arc<str>, u64, [Option<f64>; 3]);

#[derive(Debug, Default)]
struct Minute {
    /// Requests and bytes by status class (2 for 2xx).
    status: BTreeMap<u8, (u64, u64)>,
    paths: Vec<TopPath>,
    clients: Vec<(Arc<str>, u64)>,
}

#[derive(Debug, Default)]
struct State {
    minutes: BTreeMap<i64, Minute>,
    newest_status: Option<i64>,
}

/// The minutes seen so far; clones share them.
#[derive(Debug, Clone)]
pub(crate) struct Report {
    state: Arc<Mutex<State>>,
    /// The unit of the path percentiles: `ms` or `bytes`.
    unit: &'static str,
    /// The alert threshold (share of 5xx).
    threshold: f64,
}

impl Report {
    pub(crate) fn new(unit: &'static str, threshold: f64) -> Report {
        Report { state: Arc::default(), unit, threshold }
    }

    fn with<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        f(&mut self.state.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Requests and bytes of status class `class` in the minute starting at `minute`.
    pub(crate) fn status(&self, minute: i64, class: u8, requests: u64, bytes: u64) {
        self.with(|s| {
            s.minutes.entry(minute).or_default().status.insert(class, (requests, bytes));
            s.newest_status = s.newest_status.max(Some(minute));
        });
    }

    /// The top paths of the minute starting at `minute`, most requested first.
    pub(crate) fn paths(&self, minute: i64, top: Vec<TopPath>) {
        self.with(|s| s.minutes.entry(minute).or_default().paths = top);
    }

    /// The top clients of the five minutes ending at `end`, most requests first.
    pub(crate) fn clients(&self, end: i64, top: Vec<(Arc<str>, u64)>) {
        self.with(|s| s.minutes.entry(end - MINUTE_MS).or_default().clients = top);
    }

    /// The tables of the complete minutes (all of them if `ended`), in window order; they are
    /// not returned again.
    pub(crate) fn take_ready(&self, ended: bool) -> String {
        let ready: Vec<(i64, Minute)> = self.with(|s| {
            let upto = if ended { i64::MAX } else { s.newest_status.map_or(i64::MIN, |n| n - 2 * MINUTE_MS) };
            let later = s.minutes.split_off(&upto.saturating_add(1));
            std::mem::replace(&mut s.minutes, later).into_iter().collect()
        });
        let mut out = String::new();
        for (start, m) in ready.iter().filter(|(_, m)| !m.status.is_empty()) {
            self.table(&mut out, *start, m);
        }
        out
    }

    fn table(&self, out: &mut String, start: i64, m: &Minute) {
        let requests: u64 = m.status.values().map(|v| v.0).sum();
        let errors = m.status.get(&5).map_or(0, |v| v.0);
        let share = |n: u64| if requests == 0 { 0.0 } else { 100.0 * n as f64 / requests as f64 };
        let alert = if errors as f64 > self.threshold * requests as f64 {
            format!("  ALERT: over {:.1} %", 100.0 * self.threshold)
        } else {
            String::new()
        };
        let _ = writeln!(
            out,
            "{} – {}  {requests} requests, 5xx {:.1} %{alert}",
            minute_name(start),
            &minute_name(start + MINUTE_MS)[11..],
            share(errors)
        );
        let paths = &m.paths[..m.paths.len().min(SHOWN)];
        let clients = &m.clients[..m.clients.len().min(SHOWN)];
        let width = paths
            .iter()
            .map(|p| shorten(&p.0).chars().count())
            .chain(clients.iter().map(|c| c.0.chars().count()))
            .chain([24])
            .max()
            .unwrap_or(24);
        let _ = writeln!(out, "  {:<width$} {:>9} {:>8} {:>12}", "status", "requests", "share", "bytes");
        for (class, (n, bytes)) in &m.status {
            let _ =
                writeln!(out, "  {:<width$} {n:>9} {:>6.1} % {bytes:>12}", format!("{class}xx"), share(*n));
        }
        if !paths.is_empty() {
            let unit = self.unit;
            let (p50, p95, p99) = (format!("p50 {unit}"), format!("p95 {unit}"), format!("p99 {unit}"));
            let _ =
                writeln!(out, "  {:<width$} {:>9} {p50:>10} {p95:>10} {p99:>10}", "top paths", "requests");
            for (path, n, q) in paths {
                let q = q.map(|v| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.1}")));
                let _ = writeln!(
                    out,
                    "  {:<width$} {n:>9} {:>10} {:>10} {:>10}",
                    shorten(path),
                    q[0],
                    q[1],
                    q[2]
                );
            }
        }
        if !clients.is_empty() {
            let _ = writeln!(out, "  {:<width$} {:>9}", "top clients (5 min)", "requests");
            for (client, n) in clients {
                let _ = writeln!(out, "  {client:<width$} {n:>9}");
            }
        }
        out.push('\n');
    }
}

/// `2026-11-24 00:16 UTC` would be longer; `2026-11-24T00:16Z` sorts and parses.
fn minute_name(ms: i64) -> String {
    let full = super::stats::rfc3339(ms);
    format!("{}Z", &full[..16])
}

/// A path cut to 48 characters (`…` at the end), so one long URL does not widen the table.
fn shorten(path: &str) -> std::borrow::Cow<'_, str> {
    const MAX: usize = 48;
    if path.chars().nth(MAX).is_none() {
        return path.into();
    }
    let cut = path.char_indices().nth(MAX - 1).map_or(path.len(), |(i, _)| i);
    format!("{}…", &path[..cut]).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_795_478_400_000; // 2026-11-24T00:00:00Z

    #[test]
    fn one_table_per_minute_in_window_order_with_every_class_rounded() {
        let r = Report::new("ms", 0.05);
        // Subtasks report out of order, and classes of one minute from different subtasks.
        r.status(T0 + MINUTE_MS, 2, 10, 1000);
        r.status(T0, 5, 1, 10);
        r.status(T0, 2, 2, 20);
        r.paths(T0, vec![("/a".into(), 2, [Some(1.234_56), Some(2.0), None])]);
        r.clients(T0 + MINUTE_MS, vec![("10.0.0.1".into(), 3)]);
        assert_eq!(r.take_ready(false), "", "no minute is complete before a later one");
        r.status(T0 + 3 * MINUTE_MS, 2, 1, 1);
        let ready = r.take_ready(false);
        assert_eq!(ready.matches(" requests, 5xx ").count(), 2, "{ready}");
        let first = ready.find("2026-11-24T00:00Z – 00:01Z  3 requests, 5xx 33.3 %  ALERT: over 5.0 %");
        let second = ready.find("2026-11-24T00:01Z – 00:02Z  10 requests, 5xx 0.0 %");
        assert!(first.is_some_and(|f| second.is_some_and(|s| f < s)), "{ready}");
        assert!(ready.contains("  66.7 % "), "{ready}");
        assert!(ready.contains("1.2        2.0          -"), "{ready}");
        assert!(ready.contains("10.0.0.1"), "{ready}");
        assert_eq!(r.take_ready(false), "", "a minute is printed once");
        assert!(r.take_ready(true).contains("2026-11-24T00:03Z"));
    }

    #[test]
    fn long_paths_are_shortened() {
        assert_eq!(shorten("/a"), "/a");
        let long = "/".repeat(100);
        assert_eq!(shorten(&long).chars().count(), 48);
        assert_eq!(shorten(&"é".repeat(48)), "é".repeat(48));
    }
}
