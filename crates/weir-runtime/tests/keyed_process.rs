//! Keyed process functions with event-time timers.

#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use weir_runtime::{
    CollectSink, KeyedProcess, MemorySource, Pipeline, ProcessContext, Timestamp, Watermarks,
};

/// For each key: counts the records in the second after its first record, and emits the count
/// when a timer fires at the end of that second. Records of a key reach the function in any
/// order (they come from several source subtasks), so it keeps the timestamps seen, moves the
/// start when an earlier record arrives, and answers when the timer of the current start fires:
/// by then the watermark guarantees every record of that second has arrived.
#[derive(Clone, Default)]
struct CountFirstSecond {
    seen: HashMap<u8, Vec<Timestamp>>,
}

impl KeyedProcess<u8, (Timestamp, u8)> for CountFirstSecond {
    type Out = (u8, Timestamp, u64);

    fn process(&mut self, key: &u8, record: (Timestamp, u8), ctx: &mut ProcessContext<'_, u8, Self::Out>) {
        let seen = self.seen.entry(*key).or_default();
        if seen.iter().all(|&t| record.0 < t) {
            ctx.register_timer(record.0 + 1_000);
            ctx.register_timer(record.0 + 1_000); // twice: fires once
        }
        seen.push(record.0);
    }

    fn on_timer(&mut self, key: &u8, at: Timestamp, ctx: &mut ProcessContext<'_, u8, Self::Out>) {
        let Some(seen) = self.seen.get(key) else { return };
        let start = seen.iter().copied().min().unwrap_or(at);
        if at == start + 1_000 {
            let n = seen.iter().filter(|&&t| t < at).count() as u64;
            ctx.emit_at((*key, start, n), at);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timers_fire_once_per_key_when_the_watermark_passes() {
    // Key k's records arrive every 100 ms from k * 500 ms; keys interleave, so the input is out
    // of order by up to 1.5 s, within the 2 s bound.
    let events: Vec<(Timestamp, u8)> =
        (0..200).map(|i| ((i / 4) * 100 + (i % 4) * 500, (i % 4) as u8)).collect();
    let mut sorted = events.clone();
    sorted.sort();
    let mut want = BTreeMap::new();
    for k in 0..4u8 {
        let first = sorted.iter().find(|e| e.1 == k).unwrap().0;
        let n = sorted.iter().filter(|e| e.1 == k && e.0 < first + 1_000).count() as u64;
        want.insert(k, (first, n));
    }
    for parallelism in [1, 3] {
        let p = Pipeline::builder("timers").parallelism(parallelism).handle_signals(false).build().unwrap();
        let out = CollectSink::new();
        p.source(MemorySource::new(events.clone()).batch_size(7))
            .assign_timestamps(|e| e.0, Watermarks::bounded_out_of_orderness(Duration::from_millis(2_000)))
            .key_by(|e| e.1)
            .process(CountFirstSecond::default())
            .sink(out.clone());
        p.run().await.unwrap();
        let got = out.take();
        assert_eq!(got.len(), 4, "one firing per key: {got:?}");
        let got: BTreeMap<u8, (Timestamp, u64)> = got.into_iter().map(|(k, s, n)| (k, (s, n))).collect();
        assert_eq!(got, want, "parallelism {parallelism}");
    }
}
