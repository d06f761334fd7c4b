//! Moving batches between tasks: the hash exchange behind `key_by`, and the merging of several
//! inputs into one.
//!
//! Every (upstream, downstream) pair of subtasks has its own bounded channel, so a downstream
//! subtask can stop reading one input while it aligns checkpoint barriers. A full channel makes
//! the sender wait: that is backpressure, and the time spent waiting is measured. Records go to
//! the subtask owning their key's key group (see `checkpoint::state`); watermarks, barriers and
//! `End` go to every subtask.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::time::Instant;

use futures::future::BoxFuture;
use serde::Serialize;
use tokio::sync::mpsc;

use crate::batch::{Batch, Message, Timestamp};
use crate::error::{Error, Result};
use crate::operator::Stage;

/// The hash that places keys on subtasks and their state in key groups (see
/// [`subtask_for_hash`](crate::subtask_for_hash)): the CRC-32C (Castagnoli) of the key's
/// postcard encoding, widened to `u64`. Both are specified formats, so a key lands in the same
/// key group in every run, process, build and Rust release, and a checkpoint taken by one build
/// restores in the next. The exchange ([`KeyPartitioner`]) and the state
/// ([`StateWriter::put`](crate::StateWriter::put), and the restore check of
/// [`StateReader::entries`](crate::StateReader::entries)) use this one function. A key postcard
/// cannot encode (a sequence of unknown length) hashes to 0; keyed state then fails to
/// checkpoint with an error naming the operator.
pub fn key_hash<K: Serialize + ?Sized>(key: &K) -> u64 {
    thread_local! {
        static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    SCRATCH.with(|scratch| {
        let mut buf = std::mem::take(&mut *scratch.borrow_mut());
        let hash = key_hash_with(&mut buf, key);
        *scratch.borrow_mut() = buf;
        hash
    })
}

/// [`key_hash`] encoding into `scratch` (cleared first), so a caller hashing many keys (the
/// exchange, a batch at a time) reuses one buffer without a thread-local per key.
fn key_hash_with<K: Serialize + ?Sized>(scratch: &mut Vec<u8>, key: &K) -> u64 {
    let mut buf = std::mem::take(scratch);
    buf.clear();
    match postcard::to_extend(key, buf) {
        Ok(bytes) => {
            let hash = u64::from(crc32c::crc32c(&bytes));
            *scratch = bytes;
            hash
        }
        Err(_) => 0,
    }
}

/// Sends a message, measuring the time spent waiting on a full channel.
pub(crate) async fn send<T>(
    tx: &mpsc::Sender<Message<T>>,
    msg: Message<T>,
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

/// The key function of a keyed stream with its closure's type erased: it appends the keys of a
/// batch's records to the vector it is given, so keyed operators make one dynamic call per
/// batch, not per record.
pub(crate) type KeysFn<K, T> = Arc<dyn Fn(&[T], &mut Vec<K>) + Send + Sync>;

/// Routes each record to subtask `hash(key) mod n`.
pub struct KeyPartitioner<KF>(pub(crate) Arc<KF>);

impl<T, K, KF> Partitioner<T> for KeyPartitioner<KF>
where
    T: Send + 'static,
    K: Serialize,
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
        let mut scratch = Vec::new();
        for record in batch.records {
            let target =
                crate::checkpoint::subtask_for_hash(key_hash_with(&mut scratch, &(self.0)(&record)), n);
            let part = &mut parts[target];
            part.records.push(record);
            if let Some(ts) = timestamps.next() {
                part.timestamps.push(ts);
            }
        }
        parts
    }
}

/// Sends every batch of upstream lane `lane` (of `lanes`) whole, in order, to downstream subtask
/// `lane * n / lanes`: the exchange that merges the lanes of a
/// [`Stream::union`](crate::Stream::union), each downstream subtask taking an even share.
pub(crate) struct Merge {
    pub(crate) lane: usize,
    pub(crate) lanes: usize,
}

impl<T: Send + 'static> Partitioner<T> for Merge {
    fn partition(&self, mut batch: Batch<T>, n: usize) -> Vec<Batch<T>> {
        let target = (self.lane * n / self.lanes.max(1)).min(n.saturating_sub(1));
        let mut parts: Vec<Batch<T>> = (0..n).map(|_| batch.derive(Vec::new(), Vec::new())).collect();
        parts[target].records = std::mem::take(&mut batch.records);
        parts[target].timestamps = std::mem::take(&mut batch.timestamps);
        for p in &mut parts {
            p.split = 0;
        }
        parts
    }
}

/// The end of an upstream chain: partitions batches over the downstream channels.
pub(crate) struct ExchangeStage<T, P> {
    pub(crate) partitioner: Arc<P>,
    pub(crate) senders: Vec<mpsc::Sender<Message<T>>>,
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
                        return send(&self.senders[0], Message::Data(batch), &self.blocked_ns).await;
                    }
                    let parts = self.partitioner.partition(batch, n);
                    for (target, part) in parts.into_iter().enumerate() {
                        if !part.is_empty() {
                            send(&self.senders[target], Message::Data(part), &self.blocked_ns).await?;
                        }
                    }
                    Ok(())
                }
                // Splits are local to the task that read them.
                Message::SplitStart(_) | Message::SplitEnd(_) => Ok(()),
                other => {
                    for tx in &self.senders {
                        send(tx, other.clone_control(), &self.blocked_ns).await?;
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

/// Merges the messages of `n` upstream subtasks, each on its own channel, into one ordered
/// input: data passes through; the watermark is the minimum over the inputs that have neither
/// ended nor gone idle and is forwarded when it rises; an input is idle from its `Idle` until it
/// sends data or a watermark, and `Idle` is forwarded when every live input is idle; `End` once
/// all ended.
///
/// Barriers are *aligned*: an input that delivered the barrier of checkpoint `c` is not read
/// again until every live input delivered it; then the barrier is forwarded and all inputs are
/// read again. So nothing sent after a barrier reaches the operator before the operator saw
/// everything sent before it, on every input: the state it snapshots at the barrier is exactly
/// the state of the records before it. A barrier of a newer checkpoint abandons an alignment in
/// progress (that checkpoint was given up); barriers of older ones are ignored.
pub(crate) struct Inputs<T> {
    rx: Vec<mpsc::Receiver<Message<T>>>,
    watermarks: Vec<Timestamp>,
    ended: Vec<bool>,
    idle: Vec<bool>,
    current: Timestamp,
    /// The checkpoint being aligned, and the inputs that delivered its barrier.
    aligning: Option<u64>,
    blocked: Vec<bool>,
    /// Where the next poll starts, so no input starves the others.
    next_poll: usize,
    /// Messages decided but not yet returned.
    pending: std::collections::VecDeque<Message<T>>,
}

impl<T> Inputs<T> {
    pub(crate) fn new(rx: Vec<mpsc::Receiver<Message<T>>>) -> Self {
        let n = rx.len();
        Inputs {
            rx,
            watermarks: vec![Timestamp::MIN; n],
            ended: vec![false; n],
            idle: vec![false; n],
            current: Timestamp::MIN,
            aligning: None,
            blocked: vec![false; n],
            next_poll: 0,
            pending: std::collections::VecDeque::new(),
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

    /// Forwards the barrier being aligned if every live input delivered it.
    fn check_aligned(&mut self) {
        let Some(id) = self.aligning else { return };
        if (0..self.rx.len()).all(|i| self.ended[i] || self.blocked[i]) {
            self.aligning = None;
            self.blocked.iter_mut().for_each(|b| *b = false);
            self.pending.push_back(Message::Barrier(id));
        }
    }

    /// The next message of any input that is neither ended nor blocked; an input whose
    /// senders are gone (upstream failed or was cancelled) reads as ended.
    fn poll_any(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<(usize, Message<T>)> {
        let n = self.rx.len();
        for k in 0..n {
            let i = (self.next_poll + k) % n;
            if self.ended[i] || self.blocked[i] {
                continue;
            }
            if let std::task::Poll::Ready(msg) = self.rx[i].poll_recv(cx) {
                self.next_poll = (i + 1) % n;
                return std::task::Poll::Ready((i, msg.unwrap_or(Message::End)));
            }
        }
        std::task::Poll::Pending
    }

    /// The next merged message; `None` once every input ended and `End` was returned.
    pub(crate) async fn next(&mut self) -> Option<Message<T>> {
        loop {
            if let Some(msg) = self.pending.pop_front() {
                return Some(msg);
            }
            if self.live() == 0 {
                return None;
            }
            let (from, msg) = std::future::poll_fn(|cx| self.poll_any(cx)).await;
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
                    match self.aligning {
                        Some(current) if id < current => continue,
                        Some(current) if id == current => {}
                        _ => {
                            self.aligning = Some(id);
                            self.blocked.iter_mut().for_each(|b| *b = false);
                        }
                    }
                    self.blocked[from] = true;
                    self.check_aligned();
                }
                // Only a fork's channel carries it (an exchange drops it): same task's splits.
                Message::SplitStart(split) => return Some(Message::SplitStart(split)),
                Message::SplitEnd(split) => return Some(Message::SplitEnd(split)),
                Message::End => {
                    self.ended[from] = true;
                    self.check_aligned();
                    if self.live() == 0 {
                        self.pending.push_back(Message::End);
                    } else if let Some(w) = self.advance() {
                        self.pending.push_back(Message::Watermark(w));
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
        let (tx0, rx0) = mpsc::channel(16);
        let (tx1, rx1) = mpsc::channel(16);
        let mut inputs = Inputs::<u8>::new(vec![rx0, rx1]);
        tx0.send(Message::Watermark(10)).await.unwrap();
        tx1.send(Message::Watermark(5)).await.unwrap();
        tx1.send(Message::Watermark(20)).await.unwrap();
        tx0.send(Message::End).await.unwrap();
        tx1.send(Message::End).await.unwrap();
        let mut got = Vec::new();
        while let Some(m) = inputs.next().await {
            let end = m == Message::End;
            got.push(m);
            if end {
                break;
            }
        }
        // Which watermarks show depends on how the inputs interleave; the minimum rules.
        assert_eq!(got[0], Message::Watermark(5), "{got:?}");
        assert_eq!(got[got.len() - 2..], [Message::Watermark(20), Message::End], "{got:?}");
        let marks: Vec<i64> =
            got.iter().filter_map(|m| if let Message::Watermark(w) = m { Some(*w) } else { None }).collect();
        assert!(marks.windows(2).all(|w| w[0] < w[1]), "{got:?}");
    }

    fn batch(v: u8) -> Message<u8> {
        Message::Data(Batch::new(vec![v]))
    }

    /// Drains what `inputs` has now (stops when it would wait).
    async fn ready(inputs: &mut Inputs<u8>) -> Vec<Message<u8>> {
        let mut got = Vec::new();
        while let Ok(Some(m)) =
            tokio::time::timeout(std::time::Duration::from_millis(20), inputs.next()).await
        {
            got.push(m);
        }
        got
    }

    #[tokio::test]
    async fn an_input_that_delivered_a_barrier_is_blocked_until_all_have() {
        let (tx0, rx0) = mpsc::channel(16);
        let (tx1, rx1) = mpsc::channel(16);
        let mut inputs = Inputs::new(vec![rx0, rx1]);
        // Input 0: 1, barrier, 2 (after the barrier). Input 1: 3, then later its barrier and 4.
        for m in [batch(1), Message::Barrier(7), batch(2)] {
            tx0.send(m).await.unwrap();
        }
        tx1.send(batch(3)).await.unwrap();
        let got = ready(&mut inputs).await;
        assert_eq!(got, vec![batch(1), batch(3)], "2 came after input 0's barrier: held back");
        tx1.send(Message::Barrier(7)).await.unwrap();
        tx1.send(batch(4)).await.unwrap();
        let got = ready(&mut inputs).await;
        assert_eq!(got[0], Message::Barrier(7));
        let mut rest: Vec<_> = got[1..].to_vec();
        rest.sort_by_key(|m| if let Message::Data(b) = m { b.records[0] } else { 0 });
        assert_eq!(rest, vec![batch(2), batch(4)]);
    }

    #[tokio::test]
    async fn an_input_ending_completes_the_alignment_and_a_newer_barrier_abandons_it() {
        let (tx0, rx0) = mpsc::channel(16);
        let (tx1, rx1) = mpsc::channel(16);
        let mut inputs = Inputs::new(vec![rx0, rx1]);
        tx0.send(Message::Barrier(1)).await.unwrap();
        tx0.send(batch(1)).await.unwrap();
        tx1.send(Message::End).await.unwrap();
        let got = ready(&mut inputs).await;
        assert_eq!(got, vec![Message::Barrier(1), batch(1)]);

        let (tx0, rx0) = mpsc::channel(16);
        let (tx1, rx1) = mpsc::channel(16);
        let mut inputs = Inputs::new(vec![rx0, rx1]);
        // Input 1 never sends barrier 1 (its source skipped the abandoned checkpoint).
        tx0.send(Message::Barrier(1)).await.unwrap();
        tx0.send(Message::Barrier(2)).await.unwrap();
        tx1.send(Message::Barrier(2)).await.unwrap();
        let got = ready(&mut inputs).await;
        assert_eq!(got, vec![Message::Barrier(2)]);
    }

    #[test]
    fn key_hash_is_the_crc32c_of_the_postcard_encoding() {
        // Pinned values: a change here moves every key to another key group, and breaks the
        // restore of every existing checkpoint (bump the checkpoint format version).
        assert_eq!(key_hash(&42u16), u64::from(crc32c::crc32c(&[42])));
        assert_eq!(key_hash("user-7"), u64::from(crc32c::crc32c(b"\x06user-7")));
        assert_eq!(key_hash(&"user-7".to_owned()), key_hash("user-7"));
        assert_eq!(key_hash(&300u32), u64::from(crc32c::crc32c(&[0xac, 0x02])));
        assert_ne!(key_hash(&"a"), key_hash(&"b"));
    }
}
