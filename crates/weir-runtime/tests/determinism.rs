//! A bounded run gives the same results however fast each subtask runs: no split or subtask of
//! a bounded source is declared idle by the clock, so which records are late depends only on
//! the data.

#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

use std::time::Duration;

use weir_runtime::{Batch, CollectSink, Count, Pipeline, Source, SourceReader, TumblingWindows, Watermarks};

/// A bounded source: subtask `i` reads the batches `lanes[i]` (none past the end of `lanes`),
/// waiting `delays[i]` before each.
struct Lanes {
    lanes: Vec<Vec<Vec<i64>>>,
    delays: Vec<Duration>,
}

struct LaneReader {
    batches: std::vec::IntoIter<Vec<i64>>,
    split: u32,
    delay: Duration,
}

impl Source for Lanes {
    type Item = i64;
    type Reader = LaneReader;
    fn name(&self) -> String {
        "lanes".into()
    }
    fn reader(&self, subtask: usize, _: usize) -> weir_runtime::Result<LaneReader> {
        Ok(LaneReader {
            batches: self.lanes.get(subtask).cloned().unwrap_or_default().into_iter(),
            split: subtask as u32,
            delay: self.delays.get(subtask).copied().unwrap_or_default(),
        })
    }
    fn is_bounded(&self) -> bool {
        true
    }
}

impl SourceReader for LaneReader {
    type Item = i64;
    async fn next_batch(&mut self) -> weir_runtime::Result<Option<Batch<i64>>> {
        let Some(records) = self.batches.next() else { return Ok(None) };
        tokio::time::sleep(self.delay).await;
        Ok(Some(Batch::from_split(self.split, records)))
    }
}

/// Late records and window counts of a run where subtask `i` waits `delays[i]` before each
/// batch; subtask 0 has no input at all. Subtask 1 reads seconds 0 to 3, subtask 2 the same
/// and then seconds 9 to 11 (70 batches).
async fn run(delays: Vec<Duration>) -> (u64, Vec<(i64, u64)>) {
    let slow = (0..4).map(|s| vec![s * 1_000 + 100]).collect();
    let fast = (0..4).chain(9..12).flat_map(|s| (0..10).map(move |i| vec![s * 1_000 + 150 + i])).collect();
    let lanes = vec![vec![], slow, fast];
    let p = Pipeline::builder("bounded").parallelism(3).build().unwrap();
    let out = CollectSink::new();
    let strategy = Watermarks::monotonic().with_idle_timeout(Duration::from_millis(500));
    p.source(Lanes { lanes, delays })
        .assign_timestamps(|t| *t, strategy)
        .key_by(|_| 'k')
        .window(TumblingWindows::of(Duration::from_secs(1)))
        .aggregate(Count)
        .sink(out.clone());
    let report = p.run().await.unwrap();
    let mut fired: Vec<(i64, u64)> = out.take().into_iter().map(|r| (r.window_start, r.value)).collect();
    fired.sort_unstable();
    (report.late_records, fired)
}

/// On a paused clock: the delays pass in virtual time. Subtask 1 waits 2 s before each batch,
/// far beyond the idle timeout (500 ms), while subtask 2 keeps sending every 100 ms.
#[tokio::test(start_paused = true)]
async fn a_slow_subtask_of_a_bounded_source_changes_no_result() {
    let at_once = run(vec![Duration::ZERO; 3]).await;
    let expected = [(0, 11), (1_000, 11), (2_000, 11), (3_000, 11), (9_000, 10), (10_000, 10), (11_000, 10)];
    assert_eq!(at_once, (0, expected.to_vec()));
    let slow = run(vec![Duration::ZERO, Duration::from_secs(2), Duration::from_millis(100)]).await;
    assert_eq!(slow, at_once, "the slow subtask's records were classified by timing");
}
