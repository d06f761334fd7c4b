//! Moving batches between tasks: the hash exchange behind `key_by`, and the merging of several
//! inputs into one.
//!
//! Every downstream subtask has one bounded channel; each upstream subtask holds a sender to
//! each and tags what it sends with its own index. A full channel makes the sender wait: that is
//! backpressure, and the time spent waiting is measured. Records go to subtask
//! `hash(key) mod n`; watermarks, barriers and `End` go to every subtask.

use std::hash::{BuildHasher, Hash};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use futures::future::BoxFuture;
use tokio::sync::mpsc;

use crate::batch::{Batch, Message, Timestamp};
use crate::error::{Error, Result};
use crate::operator::Stage;

/// A message and the index of the upstream subtask that sent it.
pub(crate) type Tagged<T> = (usize, Message<T>);

/// The hash that places keys on subtasks: SipHash with fixed keys, so a key goes to the same
/// subtask in every run and process.
pub(crate) fn key_hash<K: Hash>(key: &K) -> u64 {
    std::hash::BuildHasherDefault::<std::hash::DefaultHasher>::default().hash_one(key)
}

/// Sends a message, measuring the time spent waiting on a full channel.
pub(crate) async fn send<T>(
    tx: &mpsc::Sender<Tagged<T>>,
    msg: Tagged<T>,
    blocked_ns: &AtomicU64,
) -> Result<()> {
    match tx.try_send(msg) {
        Ok(()) => Ok(()),
        Err(mpsc::error::TrySendError::Full(msg)) => {
            let started = Instant::now();
            let sent = tx.send(msg).await.map_err(|_| Error::Cancelled);
            blocked_ns.fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
            sent
        }
        Err(mpsc::error::TrySendError::Closed(_)) => Err(Error::Cancelled),
    }
}

/// Decides which downstream subtask gets which records of a batch.
///
/// [`Stream::key_by`](crate::Stream::key_by) uses [`KeyPartitioner`]: one key per record. A
/// batch type whose elements hold many rows (an Arrow `RecordBatch`) implements its own, splitting
/// each element by hashed key columns; the rest of the exchange (channels, backpressure, watermark
/// merging) is the same for both.
pub trait Partitioner<T>: Send + Sync + 'static {
    /// Splits `batch` into `n` batches, one per downstream subtask (empty ones are skipped).
    fn partition(&self, batch: Batch<T>, n: usize) -> Vec<Batch<T>>;
}

/// Routes each record to subtask `hash(key) mod n`.
pub struct KeyPartitioner<KF>(pub(crate) Arc<KF>);

impl<T, K, KF> Partitioner<T> for KeyPartitioner<KF>
where
    T: Send + 'static,
    K: Hash,
    KF: Fn(&T) -> K + Send + Sync + 'static,
{
    fn partition(&self, batch: Batch<T>, n: usize) -> Vec<Batch<T>> {
        let has_ts = !batch.timestamps.is_empty();
        let per = batch.records.len() / n + 1;
        let mut parts: Vec<Batch<T>> = (0..n)
            .map(|_| {
                let mut part =
                    batch.derive(Vec::with_capacity(per), Vec::with_capacity(if has_ts { per } else { 0 }));
                part.split = 0;
                part
            })
            .collect();
        let mut timestamps = batch.timestamps.into_iter();
        for record in batch.records {
            let target = (key_hash(&(self.0)(&record)) % n as u64) as usize;
            let part = &mut parts[target];
            part.records.push(record);
            if let Some(ts) = timestamps.next() {
                part.timestamps.push(ts);
            }
        }
        parts
    }
}

/// The end of an upstream chain: partitions batches over the downstream channels.
pub(crate) struct ExchangeStage<T, P> {
    pub(crate) partitioner: Arc<P>,
    pub(crate) me: usize,
    pub(crate) senders: Vec<mpsc::Sender<Tagged<T>>>,
    pub(crate) blocked_ns: Arc<AtomicU64>,
}

impl<T, P> Stage<T> for ExchangeStage<T, P>
where
    T: Send + 'static,
    P: Partitioner<T>,
{
    fn push(&mut self, msg: Message<T>) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            let n = self.senders.len();
            match msg {
                Message::Data(batch) => {
                    if n == 1 {
                        // Splits end at an exchange, whatever the parallelism.
                        let mut batch = batch;
                        batch.split = 0;
                        return send(&self.senders[0], (self.me, Message::Data(batch)), &self.blocked_ns)
                            .await;
                    }
                    let parts = self.partitioner.partition(batch, n);
                    for (target, part) in parts.into_iter().enumerate() {
                        if !part.is_empty() {
                            send(&self.senders[target], (self.me, Message::Data(part)), &self.blocked_ns)
                                .await?;
                        }
                    }
                    Ok(())
                }
                // Splits are local to the task that read them.
                Message::SplitStart(_) | Message::SplitEnd(_) => Ok(()),
                other => {
                    for tx in &self.senders {
                        send(tx, (self.me, other.clone_control()), &self.blocked_ns).await?;
                    }
                    Ok(())
                }
            }
        })
    }
}

impl<T> Message<T> {
    /// A copy of a control message (`Data` becomes `End`, never used so).
    fn clone_control(&self) -> Message<T> {
        match self {
            Message::Watermark(w) => Message::Watermark(*w),
            Message::Barrier(id) => Message::Barrier(*id),
            Message::Idle => Message::Idle,
            Message::SplitStart(split) => Message::SplitStart(*split),
            Message::SplitEnd(split) => Message::SplitEnd(*split),
            Message::Data(_) | Message::End => Message::End,
        }
    }
}

/// Merges the tagged messages of `n` upstream subtasks into one ordered input: data passes
/// through; the watermark is the minimum over the inputs that have neither ended nor gone idle
/// and is forwarded when it rises; an input is idle from its `Idle` until it sends data or a
/// watermark, and `Idle` is forwarded when every live input is idle; a barrier is forwarded once
/// every live input sent it; `End` once all ended.
pub(crate) struct Inputs<T> {
    rx: mpsc::Receiver<Tagged<T>>,
    watermarks: Vec<Timestamp>,
    ended: Vec<bool>,
    idle: Vec<bool>,
    current: Timestamp,
    barriers: Vec<(u64, usize)>,
}

impl<T> Inputs<T> {
    pub(crate) fn new(rx: mpsc::Receiver<Tagged<T>>, n: usize) -> Self {
        Inputs {
            rx,
            watermarks: vec![Timestamp::MIN; n],
            ended: vec![false; n],
            idle: vec![false; n],
            current: Timestamp::MIN,
            barriers: Vec::new(),
        }
    }

    fn live(&self) -> usize {
        self.ended.iter().filter(|e| !**e).count()
    }

    /// The merged watermark if it rose. Idle inputs do not count, but while one is idle the
    /// watermark is carried only by inputs still running: not by inputs at `Timestamp::MAX`
    /// (finished), which would fire every window before the idle input's next records.
    fn advance(&mut self) -> Option<Timestamp> {
        let live = || (0..self.ended.len()).filter(|&i| !self.ended[i]);
        let any_idle = live().any(|i| self.idle[i]);
        let min = match live().filter(|&i| !self.idle[i]).map(|i| self.watermarks[i]).min() {
            // An idle input may still send: inputs that finished (at MAX) or none at all must not
            // carry the watermark past it. Only inputs that are still running can.
            Some(Timestamp::MAX) | None if any_idle => return None,
            Some(min) => min,
            None => Timestamp::MAX,
        };
        (min > self.current).then(|| {
            self.current = min;
            min
        })
    }

    /// The next merged message; `None` once every input ended and `End` was returned.
    pub(crate) async fn next(&mut self) -> Option<Message<T>> {
        loop {
            let Some((from, msg)) = self.rx.recv().await else {
                // Every sender is gone: upstream failed or was cancelled.
                return if self.live() == 0 { None } else { Some(Message::End) };
            };
            match msg {
                Message::Data(b) => {
                    self.idle[from] = false;
                    return Some(Message::Data(b));
                }
                Message::Idle => {
                    if !self.idle[from] {
                        self.idle[from] = true;
                        if let Some(w) = self.advance() {
                            return Some(Message::Watermark(w));
                        }
                        if (0..self.idle.len()).all(|i| self.ended[i] || self.idle[i]) {
                            return Some(Message::Idle);
                        }
                    }
                }
                Message::Watermark(w) => {
                    self.idle[from] = false;
                    self.watermarks[from] = self.watermarks[from].max(w);
                    if let Some(w) = self.advance() {
                        return Some(Message::Watermark(w));
                    }
                }
                Message::Barrier(id) => {
                    let live = self.live();
                    let entry = match self.barriers.iter_mut().find(|(b, _)| *b == id) {
                        Some(e) => e,
                        None => {
                            self.barriers.push((id, 0));
                            self.barriers.last_mut()?
                        }
                    };
                    entry.1 += 1;
                    if entry.1 >= live {
                        self.barriers.retain(|(b, _)| *b != id);
                        return Some(Message::Barrier(id));
                    }
                }
                // Only a fork's channel carries it (an exchange drops it): same task's splits.
                Message::SplitStart(split) => return Some(Message::SplitStart(split)),
                Message::SplitEnd(split) => return Some(Message::SplitEnd(split)),
                Message::End => {
                    self.ended[from] = true;
                    if self.live() == 0 {
                        return Some(Message::End);
                    }
                    if let Some(w) = self.advance() {
                        return Some(Message::Watermark(w));
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn watermark_is_the_minimum_of_live_inputs() {
        let (tx, rx) = mpsc::channel(16);
        let mut inputs = Inputs::<u8>::new(rx, 2);
        tx.send((0, Message::Watermark(10))).await.unwrap();
        tx.send((1, Message::Watermark(5))).await.unwrap();
        tx.send((1, Message::Watermark(20))).await.unwrap();
        tx.send((0, Message::End)).await.unwrap();
        tx.send((1, Message::End)).await.unwrap();
        let mut got = Vec::new();
        while let Some(m) = inputs.next().await {
            let end = m == Message::End;
            got.push(m);
            if end {
                break;
            }
        }
        assert_eq!(
            got,
            vec![Message::Watermark(5), Message::Watermark(10), Message::Watermark(20), Message::End]
        );
    }

    #[test]
    fn key_hash_is_stable() {
        assert_eq!(key_hash(&42u16), key_hash(&42u16));
        assert_ne!(key_hash(&"a"), key_hash(&"b"));
    }
}
