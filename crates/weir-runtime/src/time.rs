//! Event time: timestamp assignment and watermark generation.
//!
//! Watermark rules:
//! 1. Per source split (partition, file), the watermark is the largest timestamp seen minus the
//!    out-of-orderness bound, minus 1 ms: `Watermark(t)` promises no later record has a timestamp
//!    `<= t` (Flink's convention). With [`Watermarks::monotonic`] the bound is 0.
//! 2. A task's watermark is the minimum over its splits that are not idle; a split is idle when it
//!    sent nothing for the idle timeout ([`Watermarks::with_idle_timeout`]). A task emits a
//!    watermark only when it rises.
//!    A split announced up front ([`Message::SplitStart`](crate::Message::SplitStart): a log
//!    partition) counts from the start, with no records yet, so its first records cannot be
//!    late merely because another split was read first.
//!    A split that ended ([`Message::SplitEnd`](crate::Message::SplitEnd): a file read to its
//!    end, a bounded partition) leaves the minimum; the watermark never goes down.
//! 3. A task with several inputs (after an exchange) forwards the minimum over its inputs that
//!    have not ended.
//! 4. A bounded source ends with `Watermark(Timestamp::MAX)`, which fires every window.
//! 5. Idleness is decided by the clock only for unbounded sources: with a bounded source
//!    ([`Source::is_bounded`](crate::Source::is_bounded)) the idle timeout does not apply to the
//!    `assign_timestamps` fused into the source's task, and the source sends no `Idle`, so a
//!    split holds the watermark back until it sends records or ends.
//! 6. Punctuated watermarks
//!    ([`Stream::assign_timestamps_punctuated`](crate::Stream::assign_timestamps_punctuated)):
//!    a split's watermark is the largest watermark its records carry, and timestamps do not
//!    move it. This is how a watermark crosses a process boundary (a Kafka repartition topic
//!    whose writers send their watermark in heartbeat records): a record behind the carried
//!    watermark is late downstream exactly when it was behind its writer's watermark.
//!    Rules 2–5 apply unchanged.
//!
//! What this makes deterministic is said in the crate docs ("Determinism").

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::batch::{Batch, Timestamp};
use crate::operator::{Collector, Operator};

tokio::task_local! {
    /// Set in a source's task: whether the source is bounded ([`Source::is_bounded`](crate::Source::is_bounded)).
    pub(crate) static BOUNDED_SOURCE: bool;
}

/// How watermarks follow the timestamps of the records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Watermarks {
    bound_ms: i64,
    idle_timeout: Option<Duration>,
}

impl Watermarks {
    /// Records may arrive up to `bound` later than the largest timestamp seen so far.
    pub fn bounded_out_of_orderness(bound: Duration) -> Self {
        Watermarks { bound_ms: bound.as_millis() as i64, idle_timeout: None }
    }

    /// Timestamps never decrease within a split.
    pub fn monotonic() -> Self {
        Watermarks { bound_ms: 0, idle_timeout: None }
    }

    /// A split that sends nothing for `timeout` stops holding the watermark back, until it sends
    /// again. Default: no timeout (a silent split holds the watermark back).
    pub fn with_idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = Some(timeout);
        self
    }

    /// The out-of-orderness bound in milliseconds.
    pub fn bound_ms(&self) -> i64 {
        self.bound_ms
    }
}

struct SplitState {
    /// The split's own watermark.
    watermark: Timestamp,
    last_seen: Instant,
}

/// Assigns a timestamp to every record and emits watermarks: from the timestamps (bounded
/// out-of-orderness), or from the watermarks the records carry (`punctuation`, rule 6).
pub(crate) struct AssignTimestamps<F, P> {
    pub(crate) f: Arc<F>,
    pub(crate) strategy: Watermarks,
    punctuation: Option<Arc<P>>,
    splits: HashMap<u32, SplitState>,
    emitted: Timestamp,
    /// When the first message arrived: a subtask without any split is idle from then on.
    started: Option<Instant>,
    /// Whether `Idle` was sent since the last batch.
    idle: bool,
    /// Whether the idle timeout was dropped, at the first message, because the task reads a
    /// bounded source.
    resolved: bool,
}

impl<F, P> AssignTimestamps<F, P> {
    pub(crate) fn new(f: Arc<F>, strategy: Watermarks, punctuation: Option<Arc<P>>) -> Self {
        AssignTimestamps {
            f,
            strategy,
            punctuation,
            splits: HashMap::new(),
            emitted: Timestamp::MIN,
            started: None,
            idle: false,
            resolved: false,
        }
    }

    /// At the first message: a task reading a bounded source never decides idleness by the
    /// clock.
    fn resolve(&mut self) {
        if !self.resolved {
            self.resolved = true;
            if BOUNDED_SOURCE.try_with(|b| *b).unwrap_or(false) {
                self.strategy.idle_timeout = None;
            }
        }
    }

    /// The minimum watermark over the splits that are not idle.
    fn current(&self, now: Instant) -> Option<Timestamp> {
        self.splits
            .values()
            .filter(|s| self.strategy.idle_timeout.is_none_or(|t| now.duration_since(s.last_seen) < t))
            .map(|s| s.watermark)
            .min()
    }

    /// Whether every split (or, before the first batch, the subtask) has been silent for the
    /// idle timeout.
    fn all_idle(&self, now: Instant) -> bool {
        let Some(timeout) = self.strategy.idle_timeout else { return false };
        let silent = |since: Instant| now.duration_since(since) >= timeout;
        match self.started {
            Some(started) if self.splits.is_empty() => silent(started),
            _ => !self.splits.is_empty() && self.splits.values().all(|s| silent(s.last_seen)),
        }
    }
}

impl<T, F, P> Operator<T, T> for AssignTimestamps<F, P>
where
    T: Send + 'static,
    F: Fn(&T) -> Timestamp + Send + Sync + 'static,
    P: Fn(&T) -> Option<Timestamp> + Send + Sync + 'static,
{
    fn process_batch(&mut self, mut batch: Batch<T>, out: &mut Collector<T>) {
        let f = &*self.f;
        batch.timestamps.clear();
        batch.timestamps.extend(batch.records.iter().map(f));
        let mark = match &self.punctuation {
            None => batch
                .timestamps
                .iter()
                .copied()
                .max()
                .map(|max| max.saturating_sub(self.strategy.bound_ms).saturating_sub(1)),
            Some(p) => batch.records.iter().filter_map(|r| p(r)).max(),
        };
        self.resolve();
        let now = Instant::now();
        self.started.get_or_insert(now);
        self.idle = false;
        let split = self
            .splits
            .entry(batch.split)
            .or_insert(SplitState { watermark: Timestamp::MIN, last_seen: now });
        split.last_seen = now;
        if let Some(mark) = mark {
            split.watermark = split.watermark.max(mark);
        }
        out.batch(batch);
        if let Some(w) = self.current(now)
            && w > self.emitted
        {
            self.emitted = w;
            out.watermark(w);
        }
    }

    /// The source was silent for a tick: a split may have gone idle. Emits the watermark if it
    /// rose (an idle split stopped holding it back), and `Idle` once every split is idle.
    fn on_idle(&mut self, out: &mut Collector<T>) {
        self.resolve();
        let now = Instant::now();
        self.started.get_or_insert(now);
        if let Some(w) = self.current(now)
            && w > self.emitted
        {
            self.emitted = w;
            out.watermark(w);
        }
        if !self.idle && self.all_idle(now) {
            self.idle = true;
            out.idle();
        }
    }

    /// A split announced before its first records holds the watermark back from now on.
    fn on_split_start(&mut self, split: u32, out: &mut Collector<T>) {
        self.resolve();
        let now = Instant::now();
        self.started.get_or_insert(now);
        self.splits.entry(split).or_insert(SplitState { watermark: Timestamp::MIN, last_seen: now });
        out.split_start(split);
    }

    /// A finished split stops holding the watermark back.
    fn on_split_end(&mut self, split: u32, out: &mut Collector<T>) {
        self.resolve();
        if self.splits.remove(&split).is_some()
            && let Some(w) = self.current(Instant::now())
            && w > self.emitted
        {
            self.emitted = w;
            out.watermark(w);
        }
        out.split_end(split);
    }

    /// Upstream watermarks are replaced by this operator's, except the final one.
    fn on_watermark(&mut self, watermark: Timestamp, out: &mut Collector<T>) {
        if watermark == Timestamp::MAX && self.emitted < Timestamp::MAX {
            self.emitted = Timestamp::MAX;
            out.watermark(watermark);
        }
    }
}

/// Milliseconds since the Unix epoch, by the wall clock.
pub(crate) fn now_ms() -> Timestamp {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as Timestamp)
}

/// Processing time: every record gets the wall-clock time it passes this operator, and the
/// watermark follows the clock, also while the source is silent (on its idle ticks), so
/// processing-time windows close on time without new data.
///
/// The wall clock is read once, at the first message; from then on the time advances with
/// tokio's clock, so a paused clock (`tokio::time::pause`) drives processing time too.
pub(crate) struct ProcessingTime {
    emitted: Timestamp,
    /// The wall-clock time and tokio's instant at the first message.
    anchor: Option<(Timestamp, Instant)>,
}

impl ProcessingTime {
    pub(crate) fn new() -> Self {
        ProcessingTime { emitted: Timestamp::MIN, anchor: None }
    }

    /// Milliseconds since the Unix epoch, on tokio's clock.
    fn now_ms(&mut self) -> Timestamp {
        let (wall, at) = *self.anchor.get_or_insert_with(|| (now_ms(), Instant::now()));
        wall.saturating_add(at.elapsed().as_millis().min(i64::MAX as u128) as Timestamp)
    }

    fn advance<T>(&mut self, out: &mut Collector<T>) {
        let w = self.now_ms() - 1;
        if w > self.emitted {
            self.emitted = w;
            out.watermark(w);
        }
    }
}

impl<T: Send + 'static> Operator<T, T> for ProcessingTime {
    fn process_batch(&mut self, mut batch: Batch<T>, out: &mut Collector<T>) {
        let now = self.now_ms();
        batch.timestamps.clear();
        batch.timestamps.resize(batch.records.len(), now);
        out.batch(batch);
        self.advance(out);
    }

    fn on_watermark(&mut self, watermark: Timestamp, out: &mut Collector<T>) {
        if watermark == Timestamp::MAX {
            self.emitted = Timestamp::MAX;
            out.watermark(watermark);
        }
    }

    fn on_idle(&mut self, out: &mut Collector<T>) {
        self.advance(out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::Message;

    /// No punctuation: watermarks from the timestamps.
    type Unpunctuated = fn(&i64) -> Option<i64>;

    fn timestamps(strategy: Watermarks) -> AssignTimestamps<impl Fn(&i64) -> i64, Unpunctuated> {
        AssignTimestamps::new(Arc::new(|t: &i64| *t), strategy, None)
    }

    fn run<P: Fn(&i64) -> Option<i64> + Send + Sync + 'static>(
        op: &mut AssignTimestamps<impl Fn(&i64) -> i64 + Send + Sync + 'static, P>,
        split: u32,
        ts: Vec<i64>,
    ) -> Vec<i64> {
        let mut out = Collector::default();
        op.process_batch(Batch::from_split(split, ts), &mut out);
        let mut marks = Vec::new();
        for m in out.take_for_test() {
            if let Message::Watermark(w) = m {
                marks.push(w);
            }
        }
        marks
    }

    #[test]
    fn watermark_is_max_minus_bound_minus_one_and_only_rises() {
        let mut op = timestamps(Watermarks::bounded_out_of_orderness(Duration::from_millis(100)));
        assert_eq!(run(&mut op, 0, vec![1_000, 1_200, 1_100]), vec![1_099]);
        assert_eq!(run(&mut op, 0, vec![900]), Vec::<i64>::new());
        assert_eq!(run(&mut op, 0, vec![1_500]), vec![1_399]);
    }

    // On tokio's paused clock: the split goes idle when the clock says so, however slowly the
    // test runs.
    #[tokio::test(start_paused = true)]
    async fn splits_merge_by_minimum_and_idle_splits_stop_counting() {
        let mut op = timestamps(Watermarks::monotonic().with_idle_timeout(Duration::from_millis(50)));
        assert_eq!(run(&mut op, 0, vec![1_000]), vec![999]);
        assert_eq!(run(&mut op, 1, vec![500]), Vec::<i64>::new(), "split 1 holds the watermark at 499");
        assert_eq!(run(&mut op, 0, vec![2_000]), Vec::<i64>::new());
        tokio::time::advance(Duration::from_millis(80)).await;
        // Split 1 is idle now; split 0's watermark counts alone.
        assert_eq!(run(&mut op, 0, vec![3_000]), vec![2_999]);
    }

    #[test]
    fn punctuated_watermarks_follow_the_marks_not_the_timestamps() {
        // Records ending in 5 carry a watermark: themselves.
        let mark = |t: &i64| (t % 10 == 5).then_some(*t);
        let mut op =
            AssignTimestamps::new(Arc::new(|t: &i64| *t), Watermarks::monotonic(), Some(Arc::new(mark)));
        assert_eq!(run(&mut op, 0, vec![1_000, 9_000]), Vec::<i64>::new(), "timestamps move nothing");
        assert_eq!(run(&mut op, 0, vec![2_005, 1_000]), vec![2_005]);
        assert_eq!(run(&mut op, 1, vec![1_005]), Vec::<i64>::new(), "split 1 holds the watermark at 1 005");
        assert_eq!(run(&mut op, 1, vec![3_005]), Vec::<i64>::new(), "split 0 holds it at 2 005");
        assert_eq!(run(&mut op, 0, vec![905, 4_005]), vec![3_005], "the minimum over the splits");
    }

    #[test]
    fn an_ended_split_stops_counting() {
        let mut op = timestamps(Watermarks::monotonic());
        assert_eq!(run(&mut op, 0, vec![1_000]), vec![999]);
        assert_eq!(run(&mut op, 1, vec![5_000]), Vec::<i64>::new(), "split 0 holds the watermark at 999");
        let mut out = Collector::default();
        op.on_split_end(0, &mut out);
        assert_eq!(out.take_for_test(), vec![Message::Watermark(4_999), Message::SplitEnd(0)]);
        op.on_split_end(1, &mut out);
        assert_eq!(out.take_for_test(), vec![Message::SplitEnd(1)], "no split left: the watermark stays");
    }

    #[test]
    fn an_announced_split_holds_the_watermark_until_it_sends() {
        let mut op = timestamps(Watermarks::monotonic());
        let mut out = Collector::default();
        op.on_split_start(1, &mut out);
        assert_eq!(out.take_for_test(), vec![Message::SplitStart(1)]);
        assert_eq!(run(&mut op, 0, vec![5_000]), Vec::<i64>::new(), "split 1 has sent nothing yet");
        assert_eq!(run(&mut op, 1, vec![1_000]), vec![999]);
        assert_eq!(run(&mut op, 1, vec![9_000]), vec![4_999]);
    }
}
