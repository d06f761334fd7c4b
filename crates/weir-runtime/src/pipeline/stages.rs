//! The terminal stages of a lane: broadcasting to several channels and writing to a sink.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use futures::future::BoxFuture;
use tokio::sync::mpsc;

use crate::batch::Message;
use crate::checkpoint::{AckOf, Part, PartSnapshot};
use crate::error::{Error, Result};
use crate::metrics::SinkMetrics;
use crate::operator::Stage;
use crate::sink::{Sink, SinkWriter};

/// The end of a chain that hands every message to several channels (at least two): a copy to
/// each but the last, the message itself to the last. A branch whose receiver is gone (a
/// stream dropped without a sink, or a downstream task that failed) is left out from then on;
/// once all are gone, the chain is cancelled.
pub(super) struct Broadcast<T> {
    pub(super) senders: Vec<mpsc::Sender<Message<T>>>,
    pub(super) blocked_ns: Arc<AtomicU64>,
}

impl<T: Clone + Send + 'static> Stage<T> for Broadcast<T> {
    fn push(&mut self, msg: Message<T>) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            let last = self.senders.len().saturating_sub(1);
            let mut msg = Some(msg);
            let mut gone = false;
            for (i, tx) in self.senders.iter().enumerate() {
                let m = if i == last { msg.take() } else { msg.clone() };
                let Some(m) = m else { break };
                gone |= crate::exchange::send(tx, m, &self.blocked_ns).await.is_err();
            }
            if gone {
                self.senders.retain(|tx| !tx.is_closed());
                if self.senders.is_empty() {
                    return Err(Error::Cancelled);
                }
            }
            Ok(())
        })
    }
}

/// The end of a chain that writes to a sink. In a checkpointed pipeline (`part`), the writer
/// pre-commits at every barrier and at the end, and the committables go to the coordinator.
pub(super) struct SinkStage<W> {
    pub(super) writer: W,
    pub(super) metrics: Option<SinkMetrics>,
    pub(super) part: Option<Part>,
    pub(super) last_barrier: u64,
    /// The sink's [`Sink::destination`], encoded, saved with each snapshot.
    pub(super) destination: Vec<u8>,
}

impl<W> SinkStage<W> {
    async fn pre_commit<T: Send + 'static>(&mut self, of: AckOf) -> Result<()>
    where
        W: SinkWriter<T>,
    {
        let Some(part) = &self.part else { return Ok(()) };
        let id = match of {
            AckOf::Barrier(id) => id,
            AckOf::End { .. } => self.last_barrier + 1,
        };
        self.last_barrier = id;
        let committables = self.writer.pre_commit(id).await?.into_iter().collect();
        let meta = self.destination.clone();
        part.ack(of, Ok(PartSnapshot { committables, meta, ..PartSnapshot::default() }), false);
        Ok(())
    }
}

impl<T: Send + 'static, W: SinkWriter<T>> Stage<T> for SinkStage<W> {
    fn push(&mut self, msg: Message<T>) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            match msg {
                Message::Data(batch) => {
                    let facts = self
                        .metrics
                        .is_some()
                        .then(|| (batch.len(), batch.timestamps.iter().copied().max(), batch.read_at()));
                    self.writer.write_batch(batch).await?;
                    if let (Some(m), Some((records, newest, read_at))) = (self.metrics.as_mut(), facts) {
                        m.wrote(records, newest, read_at, self.writer.bytes_written());
                    }
                    Ok(())
                }
                Message::End => {
                    self.pre_commit(AckOf::End { exhausted: true }).await?;
                    self.writer.finish().await
                }
                Message::Barrier(id) => self.pre_commit(AckOf::Barrier(id)).await,
                Message::Watermark(w) => {
                    self.writer.on_watermark(w);
                    Ok(())
                }
                Message::Idle | Message::SplitStart(_) | Message::SplitEnd(_) => Ok(()),
            }
        })
    }
}

/// A sink stage whose writer is created when the task starts.
pub(super) struct DeferredSink<S, W> {
    pub(super) sink: Arc<S>,
    pub(super) subtask: usize,
    pub(super) parallelism: usize,
    pub(super) metrics: Option<SinkMetrics>,
    pub(super) part: Option<Part>,
    pub(super) writer: Option<SinkStage<W>>,
}

impl<T, S> Stage<T> for DeferredSink<S, S::Writer>
where
    T: Send + 'static,
    S: Sink<T> + Sync,
{
    fn push(&mut self, msg: Message<T>) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            if self.writer.is_none() {
                let writer = match self.part {
                    Some(_) => self.sink.transactional_writer(self.subtask, self.parallelism)?,
                    None => self.sink.writer(self.subtask, self.parallelism)?,
                };
                let (metrics, part) = (self.metrics.take(), self.part.take());
                let destination = match (&part, self.sink.destination()) {
                    (Some(_), Some(d)) => crate::checkpoint::encode(&d)?,
                    _ => Vec::new(),
                };
                self.writer = Some(SinkStage { writer, metrics, part, last_barrier: 0, destination });
            }
            match self.writer.as_mut() {
                Some(w) => w.push(msg).await,
                None => Ok(()),
            }
        })
    }
}
