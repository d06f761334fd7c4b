//! Windows over event time: tumbling, sliding and session windows, keyed, with allowed lateness.
//!
//! Semantics (as Flink's):
//! - Windows are half-open `[start, end)`. Tumbling and sliding windows are aligned to the epoch
//!   plus an optional offset: a tumbling window of size `s` containing `t` starts at
//!   `t - (t - offset) mod s`.
//! - A window fires when the watermark reaches `end - 1`, emitting one [`WindowResult`] per key
//!   with its aggregate. The result's timestamp is `end - 1`.
//! - Session windows: each record opens `[t, t + gap)`; windows of a key that overlap or touch
//!   (`a.start <= b.end && a.end >= b.start`) merge, their aggregates merged.
//! - Allowed lateness `L`: a window's state is kept until the watermark reaches `end - 1 + L`. A
//!   record for a window that already fired but is within `L` updates it, and the window fires
//!   again with the updated result. A record whose window is past `end - 1 + L` is late: it goes
//!   to the late side output (if the pipeline has one) and is counted, never silently dropped.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::Hash;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;

use crate::aggregate::Aggregator;
use crate::batch::{Batch, Timestamp};
use crate::checkpoint::{StateReader, StateWriter};
use crate::error::Result;
use crate::exchange::KeysFn;
use crate::operator::{Collector, Operator, StateStats};

/// The kind of window and its sizes, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum WindowSpec {
    /// Fixed-size windows that do not overlap.
    Tumbling {
        /// Window length.
        size: i64,
        /// Shift from epoch alignment.
        offset: i64,
    },
    /// Fixed-size windows starting every `slide`.
    Sliding {
        /// Window length.
        size: i64,
        /// Distance between window starts.
        slide: i64,
        /// Shift from epoch alignment.
        offset: i64,
    },
    /// Windows that close after a gap of inactivity per key.
    Session {
        /// The inactivity gap.
        gap: i64,
    },
}

fn ms(d: Duration) -> i64 {
    d.as_millis().min(i64::MAX as u128) as i64
}

/// Tumbling windows.
#[derive(Debug, Clone, Copy)]
pub struct TumblingWindows;

impl TumblingWindows {
    /// Windows of `size`, aligned to the epoch.
    pub fn of(size: Duration) -> WindowSpec {
        WindowSpec::Tumbling { size: ms(size), offset: 0 }
    }
}

/// Sliding (hopping) windows.
#[derive(Debug, Clone, Copy)]
pub struct SlidingWindows;

impl SlidingWindows {
    /// Windows of `size` starting every `slide`, aligned to the epoch.
    pub fn of(size: Duration, slide: Duration) -> WindowSpec {
        WindowSpec::Sliding { size: ms(size), slide: ms(slide), offset: 0 }
    }
}

/// Session windows.
#[derive(Debug, Clone, Copy)]
pub struct SessionWindows;

impl SessionWindows {
    /// Sessions that end after `gap` without records of the key.
    pub fn with_gap(gap: Duration) -> WindowSpec {
        WindowSpec::Session { gap: ms(gap) }
    }
}

impl WindowSpec {
    /// Shifts tumbling and sliding windows from epoch alignment by `offset`.
    pub fn with_offset(self, offset: Duration) -> WindowSpec {
        match self {
            WindowSpec::Tumbling { size, .. } => WindowSpec::Tumbling { size, offset: ms(offset) },
            WindowSpec::Sliding { size, slide, .. } => {
                WindowSpec::Sliding { size, slide, offset: ms(offset) }
            }
            s @ WindowSpec::Session { .. } => s,
        }
    }

    /// Checks sizes; the error names the bad one.
    pub(crate) fn validate(&self) -> Result<(), (&'static str, String)> {
        match *self {
            WindowSpec::Tumbling { size, .. } if size <= 0 => {
                Err(("window size", "must be at least 1 ms".into()))
            }
            WindowSpec::Sliding { size, slide, .. } if size <= 0 || slide <= 0 => {
                Err(("window size/slide", "must be at least 1 ms".into()))
            }
            WindowSpec::Sliding { size, slide, .. } if size % slide != 0 => Err((
                "window slide",
                format!("the size {size} ms must be a multiple of the slide {slide} ms"),
            )),
            WindowSpec::Session { gap } if gap <= 0 => Err(("session gap", "must be at least 1 ms".into())),
            _ => Ok(()),
        }
    }

    /// Start of the last window of period `period` that starts at or before `t`; `None` if it
    /// would start before `i64::MIN`.
    fn aligned_start(t: i64, period: i64, offset: i64) -> Option<i64> {
        // In i128: `t - offset` overflows for `t` near `i64::MIN`; the remainder fits an i64.
        t.checked_sub((i128::from(t) - i128::from(offset)).rem_euclid(i128::from(period)) as i64)
    }

    /// Calls `f(start, end)` for each window `[start, end)` containing `t` (ms): one tumbling
    /// window, `size / slide` sliding ones, or a session's initial `[t, t + gap)`. Overflow-safe
    /// at the ends of time: a window that would start before `i64::MIN` or end after `i64::MAX`
    /// does not exist, so a `t` only in such windows gets none.
    pub fn for_each_window(&self, t: i64, mut f: impl FnMut(i64, i64)) {
        match *self {
            // A window that would end after `i64::MAX` does not exist: a record only in such
            // windows is late.
            WindowSpec::Tumbling { size, offset } => {
                let Some(start) = Self::aligned_start(t, size, offset) else { return };
                if let Some(end) = start.checked_add(size) {
                    f(start, end);
                }
            }
            WindowSpec::Sliding { size, slide, offset } => {
                // The windows of `t` start at or before this one: none if it does not exist.
                let Some(mut start) = Self::aligned_start(t, slide, offset) else { return };
                while start > t.saturating_sub(size) {
                    if let Some(end) = start.checked_add(size) {
                        f(start, end);
                    }
                    let Some(next) = start.checked_sub(slide) else { break };
                    start = next;
                }
            }
            WindowSpec::Session { gap } => {
                if let Some(end) = t.checked_add(gap) {
                    f(t, end);
                }
            }
        }
    }
}

/// One window's result for one key.
///
/// In human-readable formats (JSON) it serialises as
/// `{"key": …, "start": "2026-11-24T00:16:00.000Z", "end": "…Z", "value": …}`: the bounds in RFC
/// 3339 (UTC, milliseconds; a bound outside the years 0000–9999 stays a number of ms), read back
/// from either form. Compact formats (checkpoints) keep the bounds as numbers.
///
/// # Examples
///
/// ```
/// use weir_runtime::WindowResult;
///
/// let r = WindowResult { key: "/", window_start: 1_795_479_360_000, window_end: 1_795_479_420_000, value: 7 };
/// let json = serde_json::to_string(&r).unwrap();
/// assert_eq!(json, r#"{"key":"/","start":"2026-11-24T00:16:00.000Z","end":"2026-11-24T00:17:00.000Z","value":7}"#);
/// assert_eq!(serde_json::from_str::<WindowResult<&str, u64>>(&json).unwrap(), r);
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct WindowResult<K, V> {
    /// The key.
    pub key: K,
    /// Window start (inclusive), ms since the epoch.
    #[serde(rename = "start", with = "bound")]
    pub window_start: Timestamp,
    /// Window end (exclusive), ms since the epoch.
    #[serde(rename = "end", with = "bound")]
    pub window_end: Timestamp,
    /// The aggregate.
    pub value: V,
}

/// `2026-11-24T00:16:00.000Z`: a timestamp (ms since the epoch) in RFC 3339, UTC, with
/// milliseconds; `None` outside the years 0000–9999, which RFC 3339 cannot write.
pub fn format_rfc3339(t: Timestamp) -> Option<String> {
    let (secs, millis) = (t.div_euclid(1000), t.rem_euclid(1000));
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    (0..=9999).contains(&y).then(|| {
        format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}Z", rem / 3600, rem / 60 % 60, rem % 60)
    })
}

/// Year, month and day of a day number since 1970-01-01 (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
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

/// The day number since 1970-01-01 of a date (Howard Hinnant's `days_from_civil`).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Reads an RFC 3339 timestamp (`Z` or a `±hh:mm` offset, any fraction of a second, cut to ms).
fn parse_rfc3339(s: &str) -> Option<Timestamp> {
    let b = s.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let part = s.get(r)?;
        part.bytes().all(|c| c.is_ascii_digit()).then(|| part.parse().ok())?
    };
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (y, mo, d, h, mi, sec) =
        (num(0..4)?, num(5..7)?, num(8..10)?, num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let mut i = 19;
    let mut millis = 0;
    if b[i] == b'.' {
        let digits = b[i + 1..].iter().take_while(|c| c.is_ascii_digit()).count();
        if digits == 0 {
            return None;
        }
        let ms_digits = &s[i + 1..i + 1 + digits.min(3)];
        millis = ms_digits.parse::<i64>().ok()? * 10_i64.pow(3 - ms_digits.len() as u32);
        i += 1 + digits;
    }
    let offset_min = match b.get(i)? {
        b'Z' | b'z' if i + 1 == b.len() => 0,
        sign @ (b'+' | b'-') if i + 6 == b.len() && b[i + 3] == b':' => {
            let m = num(i + 1..i + 3)? * 60 + num(i + 4..i + 6)?;
            if *sign == b'-' { -m } else { m }
        }
        _ => return None,
    };
    let secs = days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + sec - offset_min * 60;
    Some(secs * 1000 + millis)
}

/// A window bound: RFC 3339 text in human-readable formats, ms in the others.
mod bound {
    use serde::{Deserializer, Serializer, de};

    use crate::batch::Timestamp;

    pub(super) fn serialize<S: Serializer>(t: &Timestamp, s: S) -> Result<S::Ok, S::Error> {
        match super::format_rfc3339(*t).filter(|_| s.is_human_readable()) {
            Some(text) => s.serialize_str(&text),
            None => s.serialize_i64(*t),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Timestamp, D::Error> {
        struct Bound;
        impl de::Visitor<'_> for Bound {
            type Value = Timestamp;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an RFC 3339 timestamp or milliseconds since the epoch")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Timestamp, E> {
                Ok(v)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Timestamp, E> {
                Timestamp::try_from(v).map_err(|_| E::invalid_value(de::Unexpected::Unsigned(v), &self))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Timestamp, E> {
                super::parse_rfc3339(v).ok_or_else(|| E::invalid_value(de::Unexpected::Str(v), &self))
            }
        }
        if d.is_human_readable() { d.deserialize_any(Bound) } else { d.deserialize_i64(Bound) }
    }
}

/// Where late records go.
pub(crate) struct LateRecords<T> {
    /// Bounded: a window waits while the late output is full (see [`Collector::defer`]).
    pub(crate) tx: Option<mpsc::Sender<Batch<T>>>,
}

impl<T> Clone for LateRecords<T> {
    fn clone(&self) -> Self {
        LateRecords { tx: self.tx.clone() }
    }
}

struct Session<A> {
    start: i64,
    end: i64,
    acc: A,
}

/// The keyed window operator.
pub(crate) struct WindowOperator<K, T, A: Aggregator<T>> {
    keys: KeysFn<K, T>,
    /// The keys of the batch being handled (kept to reuse its allocation).
    scratch: Vec<K>,
    spec: WindowSpec,
    agg: Arc<A>,
    lateness: i64,
    late: LateRecords<T>,
    watermark: Timestamp,
    /// Tumbling and sliding: window end -> key -> state.
    windows: BTreeMap<i64, HashMap<K, A::Acc>>,
    /// Session windows of each key, sorted by start, and the ends to look at.
    sessions: HashMap<K, Vec<Session<A::Acc>>>,
    session_timers: BTreeMap<i64, HashSet<K>>,
    /// Results emitted so far.
    fired: u64,
    /// The state size as last computed, and when (recomputed at most every second: it walks
    /// the state).
    stats: std::cell::Cell<Option<(tokio::time::Instant, StateStats)>>,
}

impl<K, T, A> WindowOperator<K, T, A>
where
    K: Hash + Eq + Clone + Send + 'static,
    T: Send + 'static,
    A: Aggregator<T>,
{
    pub(crate) fn new(
        keys: KeysFn<K, T>,
        spec: WindowSpec,
        agg: Arc<A>,
        lateness: i64,
        late: LateRecords<T>,
    ) -> Self {
        WindowOperator {
            keys,
            scratch: Vec::new(),
            spec,
            agg,
            lateness,
            late,
            watermark: Timestamp::MIN,
            windows: BTreeMap::new(),
            sessions: HashMap::new(),
            session_timers: BTreeMap::new(),
            fired: 0,
            stats: std::cell::Cell::new(None),
        }
    }

    /// Walks the state: distinct keys, windows per key, and their approximate bytes.
    /// The estimated bytes of one window's state.
    fn entry_bytes(&self) -> u64 {
        (std::mem::size_of::<K>() + std::mem::size_of::<A::Acc>() + 2 * std::mem::size_of::<usize>()) as u64
    }

    fn measure(&self) -> StateStats {
        let entry = self.entry_bytes() as usize;
        let (keys, windows) = match self.spec {
            WindowSpec::Session { .. } => {
                (self.sessions.len(), self.sessions.values().map(Vec::len).sum::<usize>())
            }
            WindowSpec::Tumbling { .. } | WindowSpec::Sliding { .. } => {
                let windows = self.windows.values().map(HashMap::len).sum::<usize>();
                let keys = if self.windows.len() <= 1 {
                    windows
                } else {
                    self.windows.values().flat_map(HashMap::keys).collect::<HashSet<_>>().len()
                };
                (keys, windows)
            }
        };
        StateStats {
            keys: keys as u64,
            windows: windows as u64,
            bytes: (windows * entry) as u64,
            fired: self.fired,
        }
    }

    /// Whether a window ending at `end` is past its allowed lateness.
    fn expired(&self, end: i64) -> bool {
        (end - 1).saturating_add(self.lateness) <= self.watermark
    }

    fn result(&self, key: K, start: i64, end: i64, acc: &A::Acc, out: &mut Vec<WindowResult<K, A::Output>>) {
        out.push(WindowResult { key, window_start: start, window_end: end, value: self.agg.finish(acc) });
    }

    /// Adds a record to a tumbling or sliding window; returns whether it was late for every window.
    fn add_fixed(&mut self, key: &K, ts: i64, record: &T, refired: &mut Vec<(K, i64)>) -> bool {
        let mut late = true;
        let spec = self.spec;
        spec.for_each_window(ts, |_start, end| {
            if self.expired(end) {
                return;
            }
            late = false;
            let by_key = self.windows.entry(end).or_default();
            let acc = match by_key.get_mut(key) {
                Some(acc) => acc,
                None => by_key.entry(key.clone()).or_insert_with(|| self.agg.create()),
            };
            self.agg.add(acc, record);
            if end - 1 <= self.watermark {
                refired.push((key.clone(), end));
            }
        });
        late
    }

    /// Adds a record to the key's sessions, merging; returns whether it was late.
    fn add_session(&mut self, key: &K, ts: i64, gap: i64, record: &T, refired: &mut Vec<(K, i64)>) -> bool {
        let sessions = self.sessions.entry(key.clone()).or_default();
        let (mut start, mut end) = (ts, ts.saturating_add(gap));
        let mut new = self.agg.create();
        self.agg.add(&mut new, record);
        // Merge every session that overlaps or touches the new one, handing the aggregator the
        // states in time order (earlier first), as `Aggregator::merge` expects: the sessions by
        // start (the list is sorted), the new record's state after those that start at or
        // before it.
        let mut before: Option<A::Acc> = None;
        let mut after: Option<A::Acc> = None;
        let mut i = 0;
        while i < sessions.len() {
            let s = &sessions[i];
            if s.start <= end && s.end >= start {
                let s = sessions.remove(i);
                start = start.min(s.start);
                end = end.max(s.end);
                let side = if s.start <= ts { &mut before } else { &mut after };
                match side {
                    Some(acc) => self.agg.merge(acc, s.acc),
                    None => *side = Some(s.acc),
                }
            } else {
                i += 1;
            }
        }
        let mut acc = match before {
            Some(mut acc) => {
                self.agg.merge(&mut acc, new);
                acc
            }
            None => new,
        };
        if let Some(later) = after {
            self.agg.merge(&mut acc, later);
        }
        if (end - 1).saturating_add(self.lateness) <= self.watermark {
            // Entirely late: put back nothing new (the merged sessions were already emitted
            // and purged, so none can be here).
            return true;
        }
        let pos = sessions.partition_point(|s| s.start < start);
        sessions.insert(pos, Session { start, end, acc });
        // A set: records that join a session without moving its end must not fire it again.
        self.session_timers.entry(end).or_default().insert(key.clone());
        if end - 1 <= self.watermark {
            refired.push((key.clone(), end));
        }
        false
    }

    /// Emits the windows `refired` names; returns how many.
    fn emit_refired(&self, refired: Vec<(K, i64)>, out: &mut Collector<WindowResult<K, A::Output>>) -> u64 {
        if refired.is_empty() {
            return 0;
        }
        let mut results = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for (key, end) in refired {
            if !seen.insert((key.clone(), end)) {
                continue;
            }
            match self.spec {
                WindowSpec::Session { .. } => {
                    if let Some(s) = self.sessions.get(&key).and_then(|v| v.iter().find(|s| s.end == end)) {
                        self.result(key, s.start, s.end, &s.acc, &mut results);
                    }
                }
                WindowSpec::Tumbling { size, .. } | WindowSpec::Sliding { size, .. } => {
                    if let Some(acc) = self.windows.get(&end).and_then(|m| m.get(&key)) {
                        self.result(key, end - size, end, acc, &mut results);
                    }
                }
            }
        }
        let n = results.len() as u64;
        emit(results, out);
        n
    }
}

fn emit<K, V>(results: Vec<WindowResult<K, V>>, out: &mut Collector<WindowResult<K, V>>) {
    let timestamps = results.iter().map(|r| r.window_end - 1).collect();
    let mut batch = Batch::new(results);
    batch.timestamps = timestamps;
    out.batch(batch);
}

impl<K, T, A> Operator<T, WindowResult<K, A::Output>> for WindowOperator<K, T, A>
where
    K: Hash + Eq + Clone + Send + Serialize + DeserializeOwned + 'static,
    T: Send + 'static,
    A: Aggregator<T>,
{
    /// Saves `(watermark, fired)` as the subtask's meta, and per key `(start, end, acc)` for
    /// each window or session it has open.
    fn snapshot(&mut self, state: &mut StateWriter) -> Result<()> {
        state.set_meta(&(self.watermark, self.fired))?;
        match self.spec {
            WindowSpec::Session { .. } => {
                for (key, sessions) in &self.sessions {
                    for s in sessions {
                        state.put(key, &(s.start, s.end, &s.acc))?;
                    }
                }
            }
            WindowSpec::Tumbling { size, .. } | WindowSpec::Sliding { size, .. } => {
                for (&end, by_key) in &self.windows {
                    for (key, acc) in by_key {
                        state.put(key, &(end - size, end, acc))?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Rebuilds the windows of the key groups this subtask owns; the watermark is the lowest
    /// the old subtasks saved (they all saw the same watermarks before the barrier).
    fn restore(&mut self, state: &StateReader<'_>) -> Result<()> {
        let metas: Vec<(Timestamp, u64)> = state.metas()?;
        if let Some(w) = metas.iter().map(|m| m.0).min() {
            self.watermark = w;
        }
        for entry in state.entries::<K, (i64, i64, A::Acc)>() {
            let (key, (start, end, acc)) = entry?;
            match self.spec {
                WindowSpec::Session { .. } => {
                    let list = self.sessions.entry(key.clone()).or_default();
                    let pos = list.partition_point(|s| s.start < start);
                    list.insert(pos, Session { start, end, acc });
                    self.session_timers.entry(end).or_default().insert(key);
                }
                WindowSpec::Tumbling { .. } | WindowSpec::Sliding { .. } => {
                    self.windows.entry(end).or_default().insert(key, acc);
                }
            }
        }
        Ok(())
    }

    fn process_batch(&mut self, batch: Batch<T>, out: &mut Collector<WindowResult<K, A::Output>>) {
        if batch.timestamps.len() != batch.records.len() {
            // Without event time there is nothing to window by: every record is late.
            tracing::warn!(
                records = batch.records.len(),
                "records without timestamps reached a window; call assign_timestamps first"
            );
        }
        let mut refired = Vec::new();
        let mut late = Vec::new();
        let mut keys = std::mem::take(&mut self.scratch);
        keys.clear();
        (self.keys)(&batch.records, &mut keys);
        for ((i, record), key) in batch.records.into_iter().enumerate().zip(keys.drain(..)) {
            let Some(ts) = batch.timestamps.get(i).copied() else {
                late.push(record);
                continue;
            };
            let is_late = match self.spec {
                WindowSpec::Session { gap } => self.add_session(&key, ts, gap, &record, &mut refired),
                _ => self.add_fixed(&key, ts, &record, &mut refired),
            };
            if is_late {
                late.push(record);
            }
        }
        self.scratch = keys;
        self.fired += self.emit_refired(refired, out);
        if !late.is_empty() {
            out.dropped(crate::operator::DropReason::Late, late.len() as u64);
            if let Some(tx) = &self.late.tx {
                let (tx, late) = (tx.clone(), Batch::new(late));
                out.defer(Box::pin(async move {
                    // A late output nobody reads (its stream was never sunk) drops them.
                    let _ = tx.send(late).await;
                }));
            }
        }
    }

    fn on_watermark(&mut self, watermark: Timestamp, out: &mut Collector<WindowResult<K, A::Output>>) {
        if watermark <= self.watermark {
            return;
        }
        let previous = self.watermark;
        self.watermark = watermark;
        let mut results = Vec::new();
        match self.spec {
            WindowSpec::Session { .. } => {
                // Fire sessions whose end passed, drop those past lateness.
                let due: Vec<i64> =
                    self.session_timers.range(..=watermark.saturating_add(1)).map(|(e, _)| *e).collect();
                for end in due {
                    let fire = end - 1 > previous && end - 1 <= watermark;
                    let keys = if self.expired(end) {
                        self.session_timers.remove(&end).unwrap_or_default()
                    } else {
                        self.session_timers.get(&end).cloned().unwrap_or_default()
                    };
                    for key in keys {
                        let Some(list) = self.sessions.get_mut(&key) else { continue };
                        if fire && let Some(s) = list.iter().find(|s| s.end == end) {
                            results.push(WindowResult {
                                key: key.clone(),
                                window_start: s.start,
                                window_end: s.end,
                                value: self.agg.finish(&s.acc),
                            });
                        }
                        if (end - 1).saturating_add(self.lateness) <= watermark {
                            list.retain(|s| s.end != end);
                            if list.is_empty() {
                                self.sessions.remove(&key);
                            }
                        }
                    }
                }
            }
            WindowSpec::Tumbling { size, .. } | WindowSpec::Sliding { size, .. } => {
                let first_unfired = previous.saturating_add(2);
                for (&end, by_key) in self.windows.range(first_unfired..=watermark.saturating_add(1)) {
                    for (key, acc) in by_key {
                        results.push(WindowResult {
                            key: key.clone(),
                            window_start: end - size,
                            window_end: end,
                            value: self.agg.finish(acc),
                        });
                    }
                }
                let lateness = self.lateness;
                while let Some((&end, _)) = self.windows.first_key_value() {
                    if (end - 1).saturating_add(lateness) > watermark {
                        break;
                    }
                    self.windows.pop_first();
                }
            }
        }
        self.fired += results.len() as u64;
        emit(results, out);
        out.watermark(watermark);
    }

    /// Called after every message: the open windows and their bytes of tumbling and sliding
    /// windows are counted each time (a sum over the open window ends); the distinct keys, and
    /// everything of session windows, at most once a second.
    fn state_stats(&self) -> Option<StateStats> {
        let now = tokio::time::Instant::now();
        match self.stats.get() {
            Some((at, stats)) if now.duration_since(at) < std::time::Duration::from_secs(1) => {
                let fresh = match self.spec {
                    WindowSpec::Session { .. } => stats,
                    WindowSpec::Tumbling { .. } | WindowSpec::Sliding { .. } => {
                        let windows = self.windows.values().map(HashMap::len).sum::<usize>() as u64;
                        StateStats { windows, bytes: windows * self.entry_bytes(), ..stats }
                    }
                };
                Some(StateStats { fired: self.fired, ..fresh })
            }
            _ => {
                let stats = self.measure();
                self.stats.set(Some((now, stats)));
                Some(stats)
            }
        }
    }
}

#[cfg(test)]
mod rfc3339_tests {
    use super::*;

    #[test]
    fn bounds_round_trip_through_rfc3339_in_every_representable_year() {
        for t in [0, -1, 1_795_479_360_123, -62_167_219_200_000, 253_402_300_799_999, 951_782_400_000] {
            let text = format_rfc3339(t).unwrap();
            assert_eq!(parse_rfc3339(&text), Some(t), "{text}");
        }
        assert_eq!(format_rfc3339(0).as_deref(), Some("1970-01-01T00:00:00.000Z"));
        assert_eq!(format_rfc3339(-62_167_219_200_001), None, "before year 0");
        assert_eq!(format_rfc3339(i64::MAX), None);
        assert_eq!(parse_rfc3339("2026-11-24T01:16:00.5+01:00"), Some(1_795_479_360_500));
        assert_eq!(parse_rfc3339("2026-11-24T00:16:00Z"), Some(1_795_479_360_000));
        for bad in ["2026-11-24", "2026-13-24T00:16:00Z", "2026-11-24T00:16:00", "2026-11-24T00:16:00.Z", "x"]
        {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }

    #[test]
    fn window_results_keep_numeric_bounds_in_compact_formats_and_outside_rfc3339() {
        let r = WindowResult { key: 1u8, window_start: i64::MIN, window_end: 5, value: 2u64 };
        let bytes = postcard::to_stdvec(&r).unwrap();
        assert_eq!(postcard::from_bytes::<WindowResult<u8, u64>>(&bytes).unwrap(), r);
        let json = serde_json::to_string(&r).unwrap();
        assert_eq!(
            json,
            format!(r#"{{"key":1,"start":{},"end":"1970-01-01T00:00:00.005Z","value":2}}"#, i64::MIN)
        );
        assert_eq!(serde_json::from_str::<WindowResult<u8, u64>>(&json).unwrap(), r);
    }
}
