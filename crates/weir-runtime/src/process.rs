//! Keyed process functions: per-record code with event-time timers, Flink's
//! `KeyedProcessFunction`.
//!
//! A [`KeyedProcess`] sees every record of its keys with the record's timestamp, can emit any
//! number of outputs, and can register event-time timers for the current key. A timer fires
//! (calling [`KeyedProcess::on_timer`]) once the watermark reaches its time; timers registered
//! twice for the same key and time fire once. State is the implementor's own fields (e.g. a
//! `HashMap<K, _>`): a subtask sees all records of its keys.

use std::collections::{BTreeMap, HashSet};
use std::hash::Hash;

use crate::batch::{Batch, Timestamp};
use crate::exchange::KeysFn;
use crate::operator::{Collector, Operator};

/// Per-key processing with timers; see the [module docs](crate::process).
pub trait KeyedProcess<K, T>: Send + 'static {
    /// What it emits.
    type Out: Send + 'static;

    /// Handles one record of `key`.
    fn process(&mut self, key: &K, record: T, ctx: &mut ProcessContext<'_, K, Self::Out>);

    /// A timer registered for `key` at `timestamp` fired. Default: nothing.
    fn on_timer(&mut self, _key: &K, _timestamp: Timestamp, _ctx: &mut ProcessContext<'_, K, Self::Out>) {}
}

/// What a [`KeyedProcess`] can do while handling a record or a timer.
pub struct ProcessContext<'a, K, O> {
    key: &'a K,
    timestamp: Option<Timestamp>,
    watermark: Timestamp,
    out: &'a mut Vec<(O, Option<Timestamp>)>,
    timers: &'a mut BTreeMap<Timestamp, HashSet<K>>,
}

impl<K: Hash + Eq + Clone, O> ProcessContext<'_, K, O> {
    /// The timestamp of the record (or of the timer) being handled.
    pub fn timestamp(&self) -> Option<Timestamp> {
        self.timestamp
    }

    /// The current watermark.
    pub fn watermark(&self) -> Timestamp {
        self.watermark
    }

    /// Emits `value` with the current timestamp.
    pub fn emit(&mut self, value: O) {
        self.out.push((value, self.timestamp));
    }

    /// Emits `value` with an explicit timestamp.
    pub fn emit_at(&mut self, value: O, timestamp: Timestamp) {
        self.out.push((value, Some(timestamp)));
    }

    /// Registers an event-time timer for the current key.
    pub fn register_timer(&mut self, timestamp: Timestamp) {
        self.timers.entry(timestamp).or_default().insert(self.key.clone());
    }
}

pub(crate) struct ProcessOperator<K, T, P> {
    keys: KeysFn<K, T>,
    /// The keys of the batch being handled (kept to reuse its allocation).
    scratch: Vec<K>,
    process: P,
    watermark: Timestamp,
    timers: BTreeMap<Timestamp, HashSet<K>>,
}

impl<K, T, P> ProcessOperator<K, T, P> {
    pub(crate) fn new(keys: KeysFn<K, T>, process: P) -> Self {
        ProcessOperator {
            keys,
            scratch: Vec::new(),
            process,
            watermark: Timestamp::MIN,
            timers: BTreeMap::new(),
        }
    }
}

fn emit<O>(results: Vec<(O, Option<Timestamp>)>, out: &mut Collector<O>) {
    let timed = results.iter().all(|(_, t)| t.is_some());
    let timestamps = if timed { results.iter().filter_map(|(_, t)| *t).collect() } else { Vec::new() };
    let mut batch = Batch::new(results.into_iter().map(|(o, _)| o).collect());
    batch.timestamps = timestamps;
    out.batch(batch);
}

impl<K, T, P> Operator<T, P::Out> for ProcessOperator<K, T, P>
where
    K: Hash + Eq + Clone + Send + 'static,
    T: Send + 'static,
    P: KeyedProcess<K, T>,
{
    fn process_batch(&mut self, batch: Batch<T>, out: &mut Collector<P::Out>) {
        let mut results = Vec::new();
        let timestamps = batch.timestamps;
        let mut keys = std::mem::take(&mut self.scratch);
        keys.clear();
        (self.keys)(&batch.records, &mut keys);
        for ((i, record), key) in batch.records.into_iter().enumerate().zip(keys.drain(..)) {
            let mut ctx = ProcessContext {
                key: &key,
                timestamp: timestamps.get(i).copied(),
                watermark: self.watermark,
                out: &mut results,
                timers: &mut self.timers,
            };
            self.process.process(&key, record, &mut ctx);
        }
        self.scratch = keys;
        emit(results, out);
    }

    fn on_watermark(&mut self, watermark: Timestamp, out: &mut Collector<P::Out>) {
        self.watermark = self.watermark.max(watermark);
        let mut results = Vec::new();
        // Timers may register further due timers; fire until none is due.
        while let Some(entry) = self.timers.first_entry() {
            if *entry.key() > self.watermark {
                break;
            }
            let (at, keys) = entry.remove_entry();
            for key in keys {
                let mut ctx = ProcessContext {
                    key: &key,
                    timestamp: Some(at),
                    watermark: self.watermark,
                    out: &mut results,
                    timers: &mut self.timers,
                };
                self.process.on_timer(&key, at, &mut ctx);
            }
        }
        emit(results, out);
        out.watermark(watermark);
    }
}
