//! Operators: the code that runs inside a task, one batch at a time.
//!
//! An [`Operator`] has one required method, [`Operator::process_batch`], and hooks with defaults
//! for watermarks, checkpoint barriers and the end of input. Operators of a task are fused into a
//! chain: each pushes its output into a [`Collector`], and the chain hands the collected messages
//! to the next operator in the same task, with no channel or copy in between.

use futures::future::BoxFuture;

use crate::batch::{Batch, Message, Timestamp};
use crate::error::Result;

/// Collects what an operator emits while it handles one message.
#[derive(Debug)]
pub struct Collector<T> {
    messages: Vec<Message<T>>,
}

impl<T> Default for Collector<T> {
    fn default() -> Self {
        Collector { messages: Vec::new() }
    }
}

impl<T> Collector<T> {
    /// Emits a batch (empty batches are dropped).
    pub fn batch(&mut self, batch: Batch<T>) {
        if !batch.is_empty() {
            self.messages.push(Message::Data(batch));
        }
    }

    /// Emits a watermark.
    pub fn watermark(&mut self, watermark: Timestamp) {
        self.messages.push(Message::Watermark(watermark));
    }

    /// Emits a checkpoint barrier.
    pub fn barrier(&mut self, id: u64) {
        self.messages.push(Message::Barrier(id));
    }

    /// Says this operator's output is idle (see [`Message::Idle`]).
    pub fn idle(&mut self) {
        self.messages.push(Message::Idle);
    }

    /// Says a source split ended (see [`Message::SplitEnd`]).
    pub fn split_end(&mut self, split: u32) {
        self.messages.push(Message::SplitEnd(split));
    }

    fn take(&mut self) -> Vec<Message<T>> {
        std::mem::take(&mut self.messages)
    }

    #[cfg(test)]
    pub(crate) fn take_for_test(&mut self) -> Vec<Message<T>> {
        self.take()
    }
}

/// A streaming operator from `In` records to `Out` records.
///
/// Watermarks, barriers and the end of input are forwarded unchanged unless an operator overrides
/// the hook; an operator that holds records back (a window) emits them from `on_watermark` or
/// `on_end`.
pub trait Operator<In, Out>: Send + 'static {
    /// Handles one batch of input.
    fn process_batch(&mut self, batch: Batch<In>, out: &mut Collector<Out>);

    /// Event time advanced. Default: forward the watermark.
    fn on_watermark(&mut self, watermark: Timestamp, out: &mut Collector<Out>) {
        out.watermark(watermark);
    }

    /// A checkpoint barrier passed. Default: forward it.
    fn on_barrier(&mut self, id: u64, out: &mut Collector<Out>) {
        out.barrier(id);
    }

    /// The input is idle (see [`Message::Idle`]). Default: forward it.
    fn on_idle(&mut self, out: &mut Collector<Out>) {
        out.idle();
    }

    /// A source split ended (see [`Message::SplitEnd`]). Default: forward it.
    fn on_split_end(&mut self, split: u32, out: &mut Collector<Out>) {
        out.split_end(split);
    }

    /// The input ended; emit what is still held. Default: nothing. The chain forwards `End`.
    fn on_end(&mut self, _out: &mut Collector<Out>) {}
}

/// One link of a task's chain: accepts messages, passes results on.
pub(crate) trait Stage<T>: Send {
    fn push(&mut self, msg: Message<T>) -> BoxFuture<'_, Result<()>>;
}

/// An operator and the rest of the chain after it.
pub(crate) struct OpStage<In, Out, O> {
    op: O,
    out: Collector<Out>,
    next: Box<dyn Stage<Out>>,
    _in: std::marker::PhantomData<fn(In)>,
}

impl<In, Out, O> OpStage<In, Out, O> {
    pub(crate) fn new(op: O, next: Box<dyn Stage<Out>>) -> Self {
        OpStage { op, out: Collector::default(), next, _in: std::marker::PhantomData }
    }
}

impl<In, Out, O> Stage<In> for OpStage<In, Out, O>
where
    In: Send + 'static,
    Out: Send + 'static,
    O: Operator<In, Out>,
{
    fn push(&mut self, msg: Message<In>) -> BoxFuture<'_, Result<()>> {
        let end = matches!(msg, Message::End);
        match msg {
            Message::Data(batch) => self.op.process_batch(batch, &mut self.out),
            Message::Watermark(w) => self.op.on_watermark(w, &mut self.out),
            Message::Barrier(id) => self.op.on_barrier(id, &mut self.out),
            Message::Idle => self.op.on_idle(&mut self.out),
            Message::SplitEnd(split) => self.op.on_split_end(split, &mut self.out),
            Message::End => self.op.on_end(&mut self.out),
        }
        let mut messages = self.out.take();
        if end {
            messages.push(Message::End);
        }
        Box::pin(async move {
            for m in messages {
                self.next.push(m).await?;
            }
            Ok(())
        })
    }
}
