//! The pipeline DSL: [`Stream`], [`KeyedStream`] and [`WindowedStream`].

use super::{Context, Lane, TaskContext, TaskFn};
use std::hash::Hash;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use tokio::sync::mpsc;

use crate::aggregate::Aggregator;
use crate::batch::{Batch, Message, Timestamp};
use crate::checkpoint::Committer;
use crate::dead_letter::Traceable;
use crate::error::{Error, Result};
use crate::exchange::{ExchangeStage, KeyPartitioner, Partitioner};
use crate::operator::{OpStage, Operator, Stage};
use crate::ops::{Filter, FlatMap, Inspect, Map, TryMap};
use crate::sink::Sink;
use crate::time::{AssignTimestamps, Watermarks};
use crate::window::{LateRecords, WindowOperator, WindowResult, WindowSpec};

use super::job::{SinkCommitter, inputs_lane};
use super::stages::{Broadcast, DeferredSink};

/// A stream of `T` records: the lanes of its parallel subtasks.
pub struct Stream<T> {
    pub(super) ctx: Context,
    pub(super) lanes: Vec<Lane<T>>,
    /// What is upstream (sources and operator kinds), from which operators' default ids are
    /// derived (see [`Stream::uid`]).
    pub(super) origin: Arc<str>,
    /// The default id of the checkpointed operator that made this stream, if any.
    pub(super) made_by: Option<Arc<str>>,
}

impl<T> std::fmt::Debug for Stream<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stream").field("lanes", &self.lanes.len()).finish_non_exhaustive()
    }
}

impl<T: Send + 'static> Stream<T> {
    /// Extends every lane with an operator made by `make`, fused into the lane's task.
    pub fn operator<U, O>(self, name: &str, make: impl Fn() -> O) -> Stream<U>
    where
        U: Send + 'static,
        O: Operator<T, U>,
    {
        let label = self.ctx.metrics.as_ref().map(|m| m.unique_name(name));
        let checkpointed = self.lanes.iter().all(|l| l.checkpointed);
        let parts = self.ctx.parts(name, &self.origin, self.lanes.len(), checkpointed);
        let made_by = parts.first().and_then(|p| p.as_ref()).map(|p| p.uid.clone());
        let origin: Arc<str> = format!("{}/{name}", self.origin).into();
        let lanes = self
            .lanes
            .into_iter()
            .zip(parts)
            .enumerate()
            .map(|(subtask, (lane, part))| {
                let op = make();
                let stateful = op.state_stats().is_some();
                let metrics = self
                    .ctx
                    .metrics
                    .as_ref()
                    .zip(label.as_deref())
                    .map(|(m, l)| m.operator(l, subtask, stateful));
                let close = lane.close;
                let dead_letters = self.ctx.dead_letters.clone();
                let late_count = self.ctx.late_count.clone();
                Lane {
                    name: format!("{} -> {name}", lane.name),
                    checkpointed,
                    close: Box::new(move |next: Box<dyn Stage<U>>| {
                        close(Box::new(OpStage::new(op, next, metrics, dead_letters, late_count, part)))
                    }),
                }
            })
            .collect();
        Stream { ctx: self.ctx, lanes, origin, made_by }
    }

    /// Names the operator that made this stream `uid` in checkpoints (as Flink's `uid`): its
    /// state is restored from the checkpoint's state of `uid`, whatever else changed in the
    /// program. Without one an operator's id is derived from its kind and what is upstream of
    /// it (sources and operator kinds): stable across runs and builds of the same program, and
    /// changed (so the restore refuses the old state rather than misplace it) when an operator
    /// is added or removed upstream. Give ids to the stateful operators (windows, sinks) of a
    /// job whose program will change. Without checkpoints, or on a stream no operator made
    /// (a `fork`, `union`, `key_by`), it does nothing; an id used twice fails the pipeline's
    /// run with [`Error::InvalidConfig`].
    ///
    /// Operators downstream of a named one derive their default ids from its uid instead of
    /// everything upstream of it: naming the windows keeps the ids of what follows them (the
    /// sinks, which cannot be named) when the program changes upstream of the windows.
    pub fn uid(mut self, uid: &str) -> Stream<T> {
        if let (Some(shared), Some(made_by)) = (&self.ctx.checkpoint, &self.made_by) {
            if let Err(e) = shared.rename(made_by, uid) {
                let reason = e.to_string();
                return self.invalid("operator uid", reason);
            }
            self.origin = format!("uid:{uid}").into();
        }
        self
    }

    /// Transforms every record.
    pub fn map<U, F>(self, f: F) -> Stream<U>
    where
        U: Send + 'static,
        F: Fn(T) -> U + Send + Sync + 'static,
    {
        let f = Arc::new(f);
        self.operator("map", || Map(f.clone()))
    }

    /// Keeps the records for which `f` is true.
    pub fn filter<F>(self, f: F) -> Stream<T>
    where
        F: Fn(&T) -> bool + Send + Sync + 'static,
    {
        let f = Arc::new(f);
        self.operator("filter", || Filter(f.clone()))
    }

    /// Replaces every record by the records `f` returns (each keeps the input's timestamp).
    pub fn flat_map<U, I, F>(self, f: F) -> Stream<U>
    where
        U: Send + 'static,
        I: IntoIterator<Item = U>,
        F: Fn(T) -> I + Send + Sync + 'static,
    {
        let f = Arc::new(f);
        self.operator("flat_map", || FlatMap(f.clone()))
    }

    /// Calls `f` on every record, passing it on unchanged.
    pub fn inspect<F>(self, f: F) -> Stream<T>
    where
        F: Fn(&T) + Send + Sync + 'static,
    {
        let f = Arc::new(f);
        self.operator("inspect", || Inspect(f.clone()))
    }

    /// Transforms every record with a function that can fail. A failure never stops the
    /// pipeline: the record's origin, payload and the error go to the dead-letter output (see
    /// [`Pipeline::dead_letters`](super::Pipeline::dead_letters)) and are counted in [`JobReport::dead_letters`](super::JobReport::dead_letters).
    pub fn try_map<U, E, F>(self, f: F) -> Stream<U>
    where
        T: Traceable,
        U: Send + 'static,
        E: std::fmt::Display,
        F: Fn(&T) -> Result<U, E> + Send + Sync + 'static,
    {
        let f = Arc::new(f);
        self.operator("try_map", || TryMap { f: f.clone(), operator: "try_map".into() })
    }

    /// Gives every record an event timestamp (ms) and starts generating watermarks per source
    /// split with `strategy` (see the `time` module for the rules).
    pub fn assign_timestamps<F>(self, f: F, strategy: Watermarks) -> Stream<T>
    where
        F: Fn(&T) -> Timestamp + Send + Sync + 'static,
    {
        let f = Arc::new(f);
        self.operator("assign_timestamps", || AssignTimestamps::new(f.clone(), strategy))
    }

    /// Two streams with the same records, so one stream can feed several sinks or branches. Each
    /// lane hands every message to both branches over bounded channels (a slow branch holds
    /// back both, as in Flink).
    pub fn fork(self) -> (Stream<T>, Stream<T>)
    where
        T: Clone,
    {
        let capacity = self.ctx.channel_capacity;
        let mut left = Vec::with_capacity(self.lanes.len());
        let mut right = Vec::with_capacity(self.lanes.len());
        for (subtask, lane) in self.lanes.into_iter().enumerate() {
            let (ltx, lrx) = mpsc::channel::<Message<T>>(capacity);
            let (rtx, rrx) = mpsc::channel::<Message<T>>(capacity);
            let checkpointed = lane.checkpointed;
            let blocked = Arc::new(AtomicU64::new(0));
            let stage = Broadcast { senders: [ltx, rtx], blocked_ns: blocked.clone() };
            let name = format!("{} -> fork", lane.name);
            self.ctx.add_task(name, subtask, blocked, (lane.close)(Box::new(stage)));
            left.push(inputs_lane(format!("{} (left)", lane.name), vec![lrx], checkpointed));
            right.push(inputs_lane(format!("{} (right)", lane.name), vec![rrx], checkpointed));
        }
        let (l, r) = (format!("{}/fork-left", self.origin), format!("{}/fork-right", self.origin));
        (
            Stream { ctx: self.ctx.clone(), lanes: left, origin: l.into(), made_by: None },
            Stream { ctx: self.ctx, lanes: right, origin: r.into(), made_by: None },
        )
    }

    /// Gives every record the wall-clock time it arrives as its timestamp, with watermarks that
    /// follow the clock: windows after this are processing-time windows, and they close on time
    /// even when no record arrives.
    pub fn assign_processing_time(self) -> Stream<T> {
        self.operator("assign_processing_time", crate::time::ProcessingTime::new)
    }

    /// Merges another stream of the same records into this one.
    pub fn union(mut self, other: Stream<T>) -> Stream<T> {
        self.lanes.extend(other.lanes);
        self.origin = format!("({}|{})", self.origin, other.origin).into();
        self.made_by = None;
        self
    }

    /// Partitions the stream by key: records with equal keys go to the same subtask (a hash
    /// exchange over bounded channels).
    pub fn key_by<K, KF>(self, key: KF) -> KeyedStream<K, T, KF>
    where
        K: Hash + Eq + Clone + Send + serde::Serialize + 'static,
        KF: Fn(&T) -> K + Send + Sync + 'static,
    {
        let key = Arc::new(key);
        let stream = self.exchange(KeyPartitioner(key.clone()), "key_by", "keyed");
        KeyedStream { stream, key, _k: std::marker::PhantomData }
    }

    /// Redistributes the stream over the pipeline's subtasks with `partitioner` (the exchange
    /// behind [`Stream::key_by`], for batch types that route rows themselves).
    pub fn partition_by<P: Partitioner<T>>(self, partitioner: P) -> Stream<T> {
        self.exchange(partitioner, "exchange", "exchanged")
    }

    /// Closes the lanes with an exchange named `closing` and opens new ones named `opening`.
    fn exchange<P: Partitioner<T>>(self, partitioner: P, closing: &str, opening: &str) -> Stream<T> {
        let partitioner = Arc::new(partitioner);
        let n = self.ctx.parallelism;
        let checkpointed = self.lanes.iter().all(|l| l.checkpointed);
        // One channel per (upstream, downstream) pair: receivers[d][u].
        let mut receivers: Vec<Vec<mpsc::Receiver<Message<T>>>> = (0..n).map(|_| Vec::new()).collect();
        for (me, lane) in self.lanes.into_iter().enumerate() {
            let senders = receivers
                .iter_mut()
                .map(|rx| {
                    let (tx, r) = mpsc::channel::<Message<T>>(self.ctx.channel_capacity);
                    rx.push(r);
                    tx
                })
                .collect();
            let blocked = Arc::new(AtomicU64::new(0));
            let stage =
                ExchangeStage { partitioner: partitioner.clone(), senders, blocked_ns: blocked.clone() };
            let name = format!("{} -> {closing}", lane.name);
            self.ctx.add_task(name, me, blocked, (lane.close)(Box::new(stage)));
        }
        let lanes =
            receivers.into_iter().map(|rx| inputs_lane(opening.to_owned(), rx, checkpointed)).collect();
        let origin = format!("{}/{closing}", self.origin).into();
        Stream { ctx: self.ctx, lanes, origin, made_by: None }
    }

    /// Writes every record to `sink`, one writer per subtask.
    pub fn sink<S: Sink<T>>(self, sink: S) {
        let sink = Arc::new(sink);
        let parallelism = self.lanes.len();
        let label = self.ctx.metrics.as_ref().map(|m| m.unique_name("sink"));
        let checkpointed = self.lanes.iter().all(|l| l.checkpointed);
        let parts = self.ctx.parts("sink", &self.origin, parallelism, checkpointed);
        if let (Some(shared), Some(Some(part))) = (&self.ctx.checkpoint, parts.first()) {
            let committer: Arc<dyn Committer> =
                Arc::new(SinkCommitter(sink.clone(), std::marker::PhantomData));
            shared
                .committers
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push((part.uid.clone(), committer));
        }
        for ((subtask, lane), part) in self.lanes.into_iter().enumerate().zip(parts) {
            let sink = sink.clone();
            let name = format!("{} -> sink {}", lane.name, sink.name());
            let metrics = self.ctx.metrics.as_ref().zip(label.as_deref()).map(|(m, l)| m.sink(l, subtask));
            let head = DeferredSink { sink, subtask, parallelism, metrics, part, writer: None };
            let run = (lane.close)(Box::new(head));
            self.ctx.add_task(name, subtask, Arc::new(AtomicU64::new(0)), run);
        }
    }
}

/// A stream partitioned by key; see [`Stream::key_by`].
pub struct KeyedStream<K, T, KF> {
    stream: Stream<T>,
    key: Arc<KF>,
    _k: std::marker::PhantomData<fn() -> K>,
}

impl<K, T, KF> KeyedStream<K, T, KF>
where
    K: Hash + Eq + Clone + Send + 'static,
    T: Send + 'static,
    KF: Fn(&T) -> K + Send + Sync + 'static,
{
    /// Groups the records of each key into event-time windows.
    pub fn window(self, spec: WindowSpec) -> WindowedStream<K, T, KF> {
        WindowedStream { keyed: self, spec, lateness: 0, late: None }
    }

    /// Runs `process` on every record with its key, with event-time timers (see
    /// [`KeyedProcess`](crate::KeyedProcess)). Each subtask gets its own clone of `process`.
    pub fn process<P>(self, process: P) -> Stream<P::Out>
    where
        P: crate::process::KeyedProcess<K, T> + Clone,
    {
        let key = self.key.clone();
        self.stream.operator("process", || crate::process::ProcessOperator::new(key.clone(), process.clone()))
    }

    /// The stream again, still partitioned by key.
    pub fn into_stream(self) -> Stream<T> {
        self.stream
    }
}

/// A keyed stream cut into windows; see [`KeyedStream::window`].
pub struct WindowedStream<K, T, KF> {
    keyed: KeyedStream<K, T, KF>,
    spec: WindowSpec,
    lateness: i64,
    late: Option<mpsc::Sender<Batch<T>>>,
}

impl<K, T, KF> WindowedStream<K, T, KF>
where
    K: Hash + Eq + Clone + Send + 'static,
    T: Send + 'static,
    KF: Fn(&T) -> K + Send + Sync + 'static,
{
    /// Keeps windows open for `lateness` after they fire, updating and re-firing them for records
    /// that arrive late but within it. Default: zero.
    pub fn allowed_lateness(mut self, lateness: Duration) -> Self {
        self.lateness = lateness.as_millis().min(i64::MAX as u128) as i64;
        self
    }

    /// The records that arrive after their windows' allowed lateness, as a stream of their own
    /// (one lane) to sink. Without it they are only counted ([`JobReport::late_records`](super::JobReport::late_records)).
    pub fn late_records(&mut self) -> Stream<T> {
        let (tx, mut rx) = mpsc::channel::<Batch<T>>(self.keyed.stream.ctx.channel_capacity);
        self.late = Some(tx);
        self.keyed.stream.ctx.inner.lock().unwrap_or_else(PoisonError::into_inner).late_output = true;
        let lane = Lane {
            name: "late records".to_owned(),
            checkpointed: false,
            close: Box::new(move |mut head: Box<dyn Stage<T>>| -> TaskFn {
                Box::new(move |_ctx: TaskContext| {
                    Box::pin(async move {
                        while let Some(batch) = rx.recv().await {
                            head.push(Message::Data(batch)).await?;
                        }
                        head.push(Message::Watermark(Timestamp::MAX)).await?;
                        head.push(Message::End).await
                    })
                })
            }),
        };
        let origin = format!("{}/late", self.keyed.stream.origin).into();
        Stream { ctx: self.keyed.stream.ctx.clone(), lanes: vec![lane], origin, made_by: None }
    }

    /// Aggregates each window of each key with `agg`, emitting a [`WindowResult`] when the
    /// window fires.
    ///
    /// # Panics
    ///
    /// Never; an invalid window size is reported by [`WindowSpec`]'s checks as a
    /// [`Error::InvalidConfig`] when the pipeline runs.
    pub fn aggregate<A: Aggregator<T>>(self, agg: A) -> Stream<WindowResult<K, A::Output>>
    where
        K: serde::Serialize + serde::de::DeserializeOwned,
    {
        let agg = Arc::new(agg);
        let key = self.keyed.key.clone();
        let spec = self.spec;
        let lateness = self.lateness;
        let late = LateRecords { tx: self.late.clone() };
        let invalid = spec.validate().err();
        let stream = self.keyed.stream.operator("window", || {
            WindowOperator::new(key.clone(), spec, agg.clone(), lateness, late.clone())
        });
        match invalid {
            None => stream,
            Some((field, reason)) => stream.invalid(field, reason),
        }
    }
}

impl<K, T, KF> WindowedStream<K, T, KF>
where
    K: Hash + Eq + Clone + Send + 'static,
    T: Clone + Send + 'static,
    KF: Fn(&T) -> K + Send + Sync + 'static,
{
    /// Folds each window of each key with `f(accumulated, next)`; the result's value is `None`
    /// never (a window exists only once a record arrived) but typed as `Option<T>`.
    pub fn reduce<F>(self, f: F) -> Stream<WindowResult<K, Option<T>>>
    where
        F: Fn(T, &T) -> T + Send + Sync + 'static,
        K: serde::Serialize + serde::de::DeserializeOwned,
        T: serde::Serialize + serde::de::DeserializeOwned,
    {
        self.aggregate(crate::aggregate::Reduce::with(f))
    }
}

impl<T: Send + 'static> Stream<T> {
    /// A stream whose tasks fail with [`Error::InvalidConfig`] naming `field` when the pipeline
    /// runs.
    fn invalid(self, field: &'static str, reason: String) -> Stream<T> {
        let lanes = self
            .lanes
            .into_iter()
            .map(|lane| {
                let reason = reason.clone();
                Lane {
                    name: lane.name,
                    checkpointed: lane.checkpointed,
                    close: Box::new(move |_next: Box<dyn Stage<T>>| -> TaskFn {
                        Box::new(move |_ctx| {
                            Box::pin(async move { Err(Error::InvalidConfig { field, reason }) })
                        })
                    }),
                }
            })
            .collect();
        Stream { ctx: self.ctx, lanes, origin: self.origin, made_by: self.made_by }
    }
}
