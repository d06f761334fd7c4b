//! The pipeline DSL: [`Stream`], [`KeyedStream`] and [`WindowedStream`].

use super::{Context, Lane, TaskContext, TaskFn};
use std::hash::Hash;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::mpsc;
use weir_metrics::Metrics;

use crate::aggregate::{Aggregator, Aggs};
use crate::batch::{Batch, Message, Timestamp};
use crate::checkpoint::Committer;
use crate::dead_letter::Traceable;
use crate::error::{Error, Result};
use crate::exchange::{ExchangeStage, KeyPartitioner, KeysFn, Partitioner};
use crate::operator::{OpStage, Operator, Stage};
use crate::ops::{Filter, FlatMap, Inspect, Map, Traced, TryMap, TryMapTraced};
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
    /// The metrics label of the operator that made this stream, if any (see [`Stream::name`]).
    pub(super) label: Option<Arc<Mutex<String>>>,
}

impl<T> std::fmt::Debug for Stream<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stream").field("lanes", &self.lanes.len()).finish_non_exhaustive()
    }
}

impl<T: Send + 'static> Stream<T> {
    /// Extends every lane with `op`, fused into the lane's task: each subtask runs its own clone
    /// of `op` (as [`KeyedStream::process`] does). `name` is the operator's kind in metrics
    /// labels (made unique: a second `"enrich"` is `"enrich_2"`; see [`Stream::name`]) and in
    /// its default checkpoint id.
    ///
    /// # Examples
    ///
    /// ```
    /// use weir_runtime::{Batch, CollectSink, Collector, MemorySource, Operator, Pipeline};
    ///
    /// /// Adds `by` to every record.
    /// #[derive(Clone)]
    /// struct AddTo {
    ///     by: i64,
    /// }
    ///
    /// impl Operator<i64, i64> for AddTo {
    ///     fn process_batch(&mut self, mut batch: Batch<i64>, out: &mut Collector<i64>) {
    ///         batch.records.iter_mut().for_each(|r| *r += self.by);
    ///         out.batch(batch);
    ///     }
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> weir_runtime::Result<()> {
    /// let p = Pipeline::builder("add").parallelism(2).handle_signals(false).build()?;
    /// let out = CollectSink::new();
    /// p.source(MemorySource::new(vec![1i64, 2, 3])).operator("add", AddTo { by: 10 }).sink(out.clone());
    /// p.run().await?;
    /// let mut got = out.take();
    /// got.sort();
    /// assert_eq!(got, [11, 12, 13]);
    /// # Ok(())
    /// # }
    /// ```
    pub fn operator<U, O>(self, name: &str, op: O) -> Stream<U>
    where
        U: Send + 'static,
        O: Operator<T, U> + Clone,
    {
        self.operator_with(name, move || op.clone())
    }

    /// [`Stream::operator`] with an operator made by `make` for each subtask.
    fn operator_with<U, O>(self, name: &str, make: impl Fn() -> O) -> Stream<U>
    where
        U: Send + 'static,
        O: Operator<T, U>,
    {
        let label = self.ctx.metrics.as_ref().map(|m| Arc::new(Mutex::new(m.unique_name(name))));
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
                // Created when the lane closes, after a `name` given to the stream.
                let metrics = self.ctx.metrics.clone().zip(label.clone());
                let close = lane.close;
                let dead_letters = self.ctx.dead_letters.clone();
                let late_count = self.ctx.late_count.clone();
                Lane {
                    name: format!("{} -> {name}", lane.name),
                    checkpointed,
                    close: Box::new(move |next: Box<dyn Stage<U>>| {
                        let metrics = metrics.map(|(m, l)| {
                            m.operator(&l.lock().unwrap_or_else(PoisonError::into_inner), subtask, stateful)
                        });
                        close(Box::new(OpStage::new(op, next, metrics, dead_letters, late_count, part)))
                    }),
                }
            })
            .collect();
        Stream { ctx: self.ctx, lanes, origin, made_by, label }
    }

    /// Names the operator that made this stream `name` in metrics labels (the `operator` label,
    /// made unique like the default names), instead of its kind: two windows show as
    /// `per_minute` and `per_hour` rather than `window` and `window_2`. A display name only:
    /// checkpoint ids stay as they were (see [`Stream::uid`]). On a stream no operator made (a
    /// source, [`Stream::split`], [`Stream::union`], [`KeyedStream::into_stream`]) it does
    /// nothing.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use weir_runtime::{Count, DiscardSink, MemorySource, Pipeline, TumblingWindows, Watermarks};
    ///
    /// let p = Pipeline::builder("named").build()?;
    /// p.source(MemorySource::new(vec![(1_000i64, 'a')]))
    ///     .assign_timestamps(|e| e.0, Watermarks::monotonic())
    ///     .key_by(|e| e.1)
    ///     .window(TumblingWindows::of(Duration::from_secs(60)))
    ///     .aggregate(Count)
    ///     .name("per_minute")
    ///     .sink(DiscardSink);
    /// # Ok::<(), weir_runtime::Error>(())
    /// ```
    pub fn name(self, name: &str) -> Stream<T> {
        if let (Some(label), Some(metrics)) = (&self.label, &self.ctx.metrics) {
            *label.lock().unwrap_or_else(PoisonError::into_inner) = metrics.unique_name(name);
        }
        self
    }

    /// The registry the pipeline exports its metrics to ([`PipelineBuilder::metrics`]) and the
    /// pipeline's name, its `pipeline` label: for operators that export metrics of their own
    /// (feature views do). `None` when the pipeline exports no metrics.
    ///
    /// [`PipelineBuilder::metrics`]: crate::PipelineBuilder::metrics
    pub fn metrics(&self) -> Option<(&Metrics, &str)> {
        self.ctx.metrics.as_ref().map(|m| m.registry())
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

    /// Declares that this stream carries the late records its operator counted as dropped
    /// ([`DropReason::Late`](crate::DropReason::Late)): the job's report
    /// ([`JobReport::late_output`](crate::JobReport)) then tells them as output, not as losses.
    /// For operators whose output is their late records, such as a feature view's; a window's
    /// late records have [`WindowedStream::late_records`].
    pub fn late_output(self) -> Stream<T> {
        self.ctx.inner.lock().unwrap_or_else(PoisonError::into_inner).late_output = true;
        self
    }

    /// Transforms every record.
    pub fn map<U, F>(self, f: F) -> Stream<U>
    where
        U: Send + 'static,
        F: Fn(T) -> U + Send + Sync + 'static,
    {
        let f = Arc::new(f);
        self.operator_with("map", || Map(f.clone()))
    }

    /// Keeps the records for which `f` is true.
    pub fn filter<F>(self, f: F) -> Stream<T>
    where
        F: Fn(&T) -> bool + Send + Sync + 'static,
    {
        let f = Arc::new(f);
        self.operator_with("filter", || Filter(f.clone()))
    }

    /// Replaces every record by the records `f` returns (each keeps the input's timestamp).
    pub fn flat_map<U, I, F>(self, f: F) -> Stream<U>
    where
        U: Send + 'static,
        I: IntoIterator<Item = U>,
        F: Fn(T) -> I + Send + Sync + 'static,
    {
        let f = Arc::new(f);
        self.operator_with("flat_map", || FlatMap(f.clone()))
    }

    /// Calls `f` on every record, passing it on unchanged.
    pub fn inspect<F>(self, f: F) -> Stream<T>
    where
        F: Fn(&T) + Send + Sync + 'static,
    {
        let f = Arc::new(f);
        self.operator_with("inspect", || Inspect(f.clone()))
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
        self.operator_with("try_map", || TryMap { f: f.clone(), operator: "try_map".into() })
    }

    /// [`Stream::try_map`] whose results keep the record they were made from ([`Traced`]), so
    /// a second fallible step can send a failure to the dead letters with the record's origin
    /// and raw payload: `try_map_traced(parse).try_map(check)`. A [`Traced`] dereferences to
    /// the value.
    ///
    /// # Examples
    ///
    /// ```
    /// use weir_runtime::{CollectSink, DeadLetter, MemorySource, Pipeline, Traceable};
    ///
    /// /// A line of a file.
    /// #[derive(Debug, Clone)]
    /// struct Line(u64, String);
    ///
    /// impl Traceable for Line {
    ///     fn origin(&self) -> String {
    ///         format!("readings.txt:{}", self.0)
    ///     }
    ///     fn payload(&self) -> String {
    ///         self.1.clone()
    ///     }
    /// }
    ///
    /// fn plausible(celsius: &f64) -> Result<f64, String> {
    ///     if (-90.0..=60.0).contains(celsius) { Ok(*celsius) } else { Err(format!("{celsius} °C")) }
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> weir_runtime::Result<()> {
    /// let p = Pipeline::builder("checks").parallelism(1).handle_signals(false).build()?;
    /// let (out, dead) = (CollectSink::new(), CollectSink::<DeadLetter>::new());
    /// p.dead_letters(dead.clone());
    /// let lines = vec![Line(1, "21.5".into()), Line(2, "x".into()), Line(3, "999".into())];
    /// p.source(MemorySource::new(lines))
    ///     .try_map_traced(|l| l.1.parse::<f64>())
    ///     .try_map(|c| plausible(c))
    ///     .sink(out.clone());
    /// p.run().await?;
    /// assert_eq!(out.take(), [21.5]);
    /// let dead = dead.take();
    /// assert_eq!(dead[1].origin, "readings.txt:3", "the second step's failure keeps its origin");
    /// assert_eq!((dead[1].payload.as_str(), dead[1].error.as_str()), ("999", "999 °C"));
    /// # Ok(())
    /// # }
    /// ```
    pub fn try_map_traced<U, E, F>(self, f: F) -> Stream<Traced<T, U>>
    where
        T: Traceable,
        U: Send + 'static,
        E: std::fmt::Display,
        F: Fn(&T) -> Result<U, E> + Send + Sync + 'static,
    {
        let f = Arc::new(f);
        self.operator_with("try_map", || TryMapTraced { f: f.clone(), operator: "try_map".into() })
    }

    /// Gives every record an event timestamp (ms) and starts generating watermarks per source
    /// split with `strategy` (see the [`time`](crate::time) module for the rules).
    pub fn assign_timestamps<F>(self, f: F, strategy: Watermarks) -> Stream<T>
    where
        F: Fn(&T) -> Timestamp + Send + Sync + 'static,
    {
        let f = Arc::new(f);
        self.operator_with("assign_timestamps", || {
            AssignTimestamps::<F, fn(&T) -> Option<Timestamp>>::new(f.clone(), strategy, None)
        })
    }

    /// Gives every record an event timestamp (ms) with `f`, and takes the watermarks from the
    /// records instead of from their timestamps: `watermark(record)` is the watermark a record
    /// carries (`None` for most), and each split's watermark is the largest carried so far
    /// (Flink's punctuated watermarks; rule 6 of the [`time`](crate::time) module). A split
    /// silent for `idle_timeout`, if given, stops holding the watermark back.
    ///
    /// This is how event time crosses a process boundary: the reader of a Kafka repartition
    /// topic takes its writers' watermarks from their heartbeat records.
    pub fn assign_timestamps_punctuated<F, P>(
        self,
        f: F,
        watermark: P,
        idle_timeout: Option<Duration>,
    ) -> Stream<T>
    where
        F: Fn(&T) -> Timestamp + Send + Sync + 'static,
        P: Fn(&T) -> Option<Timestamp> + Send + Sync + 'static,
    {
        let (f, watermark) = (Arc::new(f), Arc::new(watermark));
        let mut strategy = Watermarks::monotonic();
        if let Some(timeout) = idle_timeout {
            strategy = strategy.with_idle_timeout(timeout);
        }
        self.operator_with("assign_timestamps", || {
            AssignTimestamps::new(f.clone(), strategy, Some(watermark.clone()))
        })
    }

    /// `n` streams with the same records, so one stream can feed any number of sinks or
    /// branches. Each lane hands every message to the `n` branches from the task that produced
    /// it, over one bounded channel per branch (a slow branch holds back all of them, as in
    /// Flink); every branch but the last gets a copy. A branch dropped without a sink is left
    /// out. `broadcast(1)` is the stream itself, and `broadcast(0)` drops it. See
    /// [`Stream::split`] for a fixed number of branches.
    pub fn broadcast(self, n: usize) -> Vec<Stream<T>>
    where
        T: Clone,
    {
        let branches =
            (0..n).map(|i| (format!("{}/branch-{i}", self.origin), format!("branch {i}"))).collect();
        self.fan_out(branches, "broadcast")
    }

    /// [`Stream::broadcast`] into `N` streams, as an array to destructure.
    ///
    /// # Examples
    ///
    /// ```
    /// use weir_runtime::{CollectSink, MemorySource, Pipeline};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> weir_runtime::Result<()> {
    /// let p = Pipeline::builder("fan-out").parallelism(2).handle_signals(false).build()?;
    /// let (all, even, big) = (CollectSink::new(), CollectSink::new(), CollectSink::new());
    /// let [a, b, c] = p.source(MemorySource::new((1..=10).collect::<Vec<i64>>())).split();
    /// a.sink(all.clone());
    /// b.filter(|x| x % 2 == 0).sink(even.clone());
    /// c.filter(|x| *x > 8).sink(big.clone());
    /// p.run().await?;
    /// assert_eq!((all.take().len(), even.take().len(), big.take().len()), (10, 5, 2));
    /// # Ok(())
    /// # }
    /// ```
    pub fn split<const N: usize>(self) -> [Stream<T>; N]
    where
        T: Clone,
    {
        let branches = self.broadcast(N);
        match branches.try_into() {
            Ok(array) => array,
            Err(_) => unreachable!("broadcast(N) returns N streams"),
        }
    }

    /// Two streams with the same records: [`Stream::split`] into two.
    pub fn fork(self) -> (Stream<T>, Stream<T>)
    where
        T: Clone,
    {
        // The branches keep the origins (hence default checkpoint ids) and task names forks
        // always had.
        let branches = vec![
            (format!("{}/fork-left", self.origin), "left".to_owned()),
            (format!("{}/fork-right", self.origin), "right".to_owned()),
        ];
        let mut branches = self.fan_out(branches, "fork").into_iter();
        match (branches.next(), branches.next()) {
            (Some(left), Some(right)) => (left, right),
            _ => unreachable!("fan_out returns a stream per origin"),
        }
    }

    /// One stream per `(origin, name)` in `branches`, each with every record: the lanes close
    /// with a [`Broadcast`] (a task named after `kind`) to one channel per branch.
    fn fan_out(self, branches: Vec<(String, String)>, kind: &str) -> Vec<Stream<T>>
    where
        T: Clone,
    {
        let n = branches.len();
        let (origins, names): (Vec<String>, Vec<String>) = branches.into_iter().unzip();
        match n {
            0 => return Vec::new(),
            1 => return vec![self],
            _ => {}
        }
        let capacity = self.ctx.channel_capacity;
        let mut lanes: Vec<Vec<Lane<T>>> = (0..n).map(|_| Vec::with_capacity(self.lanes.len())).collect();
        for (subtask, lane) in self.lanes.into_iter().enumerate() {
            let checkpointed = lane.checkpointed;
            let mut senders = Vec::with_capacity(n);
            for (branch, name) in lanes.iter_mut().zip(&names) {
                let (tx, rx) = mpsc::channel::<Message<T>>(capacity);
                senders.push(tx);
                branch.push(inputs_lane(format!("{} ({name})", lane.name), vec![rx], checkpointed));
            }
            let blocked = Arc::new(AtomicU64::new(0));
            let stage = Broadcast { senders, blocked_ns: blocked.clone() };
            let name = format!("{} -> {kind}", lane.name);
            self.ctx.add_task(name, subtask, blocked, (lane.close)(Box::new(stage)));
        }
        lanes
            .into_iter()
            .zip(origins)
            .map(|(lanes, origin)| Stream {
                ctx: self.ctx.clone(),
                lanes,
                origin: origin.into(),
                made_by: None,
                label: None,
            })
            .collect()
    }

    /// Gives every record the wall-clock time it arrives as its timestamp, with watermarks that
    /// follow the clock: windows after this are processing-time windows, and they close on time
    /// even when no record arrives.
    pub fn assign_processing_time(self) -> Stream<T> {
        self.operator_with("assign_processing_time", crate::time::ProcessingTime::new)
    }

    /// Merges another stream of the same records into this one. The merged stream runs at the
    /// pipeline's parallelism, as each of its inputs does (an exchange merges their subtasks:
    /// each upstream subtask's batches go, in order, to one downstream subtask, spread evenly),
    /// so what follows it, a sink included, has as many subtasks as anywhere else in the
    /// pipeline.
    pub fn union(mut self, other: Stream<T>) -> Stream<T> {
        self.lanes.extend(other.lanes);
        self.origin = format!("({}|{})", self.origin, other.origin).into();
        self.made_by = None;
        self.label = None;
        if self.lanes.len() > self.ctx.parallelism {
            let lanes = self.lanes.len();
            return self.exchange_per_lane(
                |lane| Arc::new(crate::exchange::Merge { lane, lanes }),
                "union",
                "unioned",
            );
        }
        self
    }

    /// Partitions the stream by key: records with equal keys go to the same subtask (a hash
    /// exchange over bounded channels). `key` runs once per record in the exchange and once in
    /// the keyed operator after it, a batch at a time.
    pub fn key_by<K, KF>(self, key: KF) -> KeyedStream<K, T>
    where
        K: Hash + Eq + Clone + Send + serde::Serialize + 'static,
        KF: Fn(&T) -> K + Send + Sync + 'static,
    {
        let key = Arc::new(key);
        self.ctx.add_key_by(self.origin.clone());
        let stream = self.exchange(KeyPartitioner(key.clone()), "key_by", "keyed");
        // One dynamic call per batch, not per record.
        let keys: KeysFn<K, T> = Arc::new(move |records: &[T], out: &mut Vec<K>| {
            out.extend(records.iter().map(|r| key(r)));
        });
        KeyedStream { stream, keys }
    }

    /// Redistributes the stream over the pipeline's subtasks with `partitioner` (the exchange
    /// behind [`Stream::key_by`], for batch types that route rows themselves).
    pub fn partition_by<P: Partitioner<T>>(self, partitioner: P) -> Stream<T> {
        self.exchange(partitioner, "exchange", "exchanged")
    }

    /// Closes the lanes with an exchange named `closing` and opens new ones named `opening`.
    fn exchange<P: Partitioner<T>>(self, partitioner: P, closing: &str, opening: &str) -> Stream<T> {
        let partitioner = Arc::new(partitioner);
        self.exchange_per_lane(move |_| partitioner.clone(), closing, opening)
    }

    /// [`Stream::exchange`] with a partitioner per upstream lane: `partitioner(lane)`.
    fn exchange_per_lane<P: Partitioner<T>>(
        self,
        partitioner: impl Fn(usize) -> Arc<P>,
        closing: &str,
        opening: &str,
    ) -> Stream<T> {
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
            let stage = ExchangeStage { partitioner: partitioner(me), senders, blocked_ns: blocked.clone() };
            let name = format!("{} -> {closing}", lane.name);
            self.ctx.add_task(name, me, blocked, (lane.close)(Box::new(stage)));
        }
        let lanes =
            receivers.into_iter().map(|rx| inputs_lane(opening.to_owned(), rx, checkpointed)).collect();
        let origin = format!("{}/{closing}", self.origin).into();
        Stream { ctx: self.ctx, lanes, origin, made_by: None, label: None }
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

/// A stream partitioned by key; see [`Stream::key_by`]. Its type names only the key and the
/// records (the key function is kept behind an `Arc`), so it can be a struct field or a
/// function's argument.
///
/// One keyed stream feeds several windows (or processes) with [`KeyedStream::split`]: they
/// share one exchange.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use weir_runtime::{
///     CollectSink, KeyedStream, MemorySource, Pipeline, Stream, TumblingWindows, Watermarks, WindowResult,
/// };
///
/// /// Requests per minute and per hour of each client, from one exchange.
/// fn per_minute_and_hour(
///     by_client: KeyedStream<String, (i64, String)>,
/// ) -> (Stream<WindowResult<String, u64>>, Stream<WindowResult<String, u64>>) {
///     let [minute, hour] = by_client.split();
///     (
///         minute.window(TumblingWindows::of(Duration::from_secs(60))).aggregate_with(|a| a.count()),
///         hour.window(TumblingWindows::of(Duration::from_secs(3600))).aggregate_with(|a| a.count()),
///     )
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> weir_runtime::Result<()> {
/// let p = Pipeline::builder("clients").parallelism(2).handle_signals(false).build()?;
/// let requests = vec![(1_000i64, "a".to_owned()), (61_000, "a".to_owned()), (62_000, "b".to_owned())];
/// let keyed = p
///     .source(MemorySource::new(requests))
///     .assign_timestamps(|r| r.0, Watermarks::monotonic())
///     .key_by(|r| r.1.clone());
/// let (minutes, hours) = per_minute_and_hour(keyed);
/// let (m, h) = (CollectSink::new(), CollectSink::new());
/// minutes.sink(m.clone());
/// hours.sink(h.clone());
/// p.run().await?;
/// assert_eq!(m.take().len(), 3, "a in two minutes, b in one");
/// let mut hours = h.take();
/// hours.sort_by(|x, y| x.key.cmp(&y.key));
/// assert_eq!(hours.iter().map(|r| (r.key.as_str(), r.value)).collect::<Vec<_>>(), [("a", 2), ("b", 1)]);
/// # Ok(())
/// # }
/// ```
pub struct KeyedStream<K, T> {
    stream: Stream<T>,
    keys: KeysFn<K, T>,
}

impl<K, T> std::fmt::Debug for KeyedStream<K, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyedStream")
            .field("key", &std::any::type_name::<K>())
            .field("stream", &self.stream)
            .finish()
    }
}

impl<K, T> KeyedStream<K, T>
where
    K: Hash + Eq + Clone + Send + 'static,
    T: Send + 'static,
{
    /// Groups the records of each key into event-time windows.
    pub fn window(self, spec: WindowSpec) -> WindowedStream<K, T> {
        WindowedStream { keyed: self, spec, lateness: 0, late: None }
    }

    /// Runs `process` on every record with its key, with event-time timers (see
    /// [`KeyedProcess`](crate::KeyedProcess)). Each subtask gets its own clone of `process`.
    pub fn process<P>(self, process: P) -> Stream<P::Out>
    where
        P: crate::process::KeyedProcess<K, T> + Clone,
    {
        let keys = self.keys;
        self.stream
            .operator_with("process", || crate::process::ProcessOperator::new(keys.clone(), process.clone()))
    }

    /// `n` keyed streams with the same records, partitioned as this one (one exchange for all):
    /// e.g. a window per minute and one per hour of the same keys. See [`Stream::broadcast`].
    pub fn broadcast(self, n: usize) -> Vec<KeyedStream<K, T>>
    where
        T: Clone,
    {
        let keys = self.keys;
        self.stream
            .broadcast(n)
            .into_iter()
            .map(|stream| KeyedStream { stream, keys: keys.clone() })
            .collect()
    }

    /// [`KeyedStream::broadcast`] into `N` keyed streams, as an array to destructure.
    pub fn split<const N: usize>(self) -> [KeyedStream<K, T>; N]
    where
        T: Clone,
    {
        match self.broadcast(N).try_into() {
            Ok(array) => array,
            Err(_) => unreachable!("broadcast(N) returns N streams"),
        }
    }

    /// The stream again, still partitioned by key.
    pub fn into_stream(self) -> Stream<T> {
        self.stream
    }
}

/// A keyed stream cut into windows; see [`KeyedStream::window`]. Nameable, as
/// [`KeyedStream`].
pub struct WindowedStream<K, T> {
    keyed: KeyedStream<K, T>,
    spec: WindowSpec,
    lateness: i64,
    late: Option<mpsc::Sender<Batch<T>>>,
}

impl<K, T> std::fmt::Debug for WindowedStream<K, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WindowedStream")
            .field("keyed", &self.keyed)
            .field("spec", &self.spec)
            .field("lateness_ms", &self.lateness)
            .field("late_records", &self.late.is_some())
            .finish()
    }
}

impl<K, T> WindowedStream<K, T>
where
    K: Hash + Eq + Clone + Send + 'static,
    T: Send + 'static,
{
    /// Keeps windows open for `lateness` after they fire, updating and re-firing them for records
    /// that arrive late but within it. Default: zero.
    pub fn allowed_lateness(mut self, lateness: Duration) -> Self {
        self.lateness = lateness.as_millis().min(i64::MAX as u128) as i64;
        self
    }

    /// Hands `to` the records that arrive after their windows' allowed lateness, as a stream of
    /// their own (one lane) to sink, and goes on with the windows (Flink's
    /// `sideOutputLateData`). Without it they are only counted
    /// ([`JobReport::late_records`](super::JobReport::late_records)).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use weir_runtime::{CollectSink, MemorySource, Pipeline, TumblingWindows, Watermarks};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> weir_runtime::Result<()> {
    /// let p = Pipeline::builder("late").parallelism(1).handle_signals(false).build()?;
    /// let (counts, late) = (CollectSink::new(), CollectSink::new());
    /// p.source(MemorySource::new(vec![5_000i64, 1_000]).batch_size(1))
    ///     .assign_timestamps(|t| *t, Watermarks::monotonic())
    ///     .key_by(|_| 0u8)
    ///     .window(TumblingWindows::of(Duration::from_secs(1)))
    ///     .late_records(|records| records.sink(late.clone()))
    ///     .aggregate_with(|a| a.count())
    ///     .sink(counts.clone());
    /// p.run().await?;
    /// assert_eq!(late.take(), [1_000]);
    /// assert_eq!(counts.take().len(), 1);
    /// # Ok(())
    /// # }
    /// ```
    pub fn late_records(mut self, to: impl FnOnce(Stream<T>)) -> Self {
        to(self.late_stream());
        self
    }

    /// The late records' stream; see [`WindowedStream::late_records`].
    fn late_stream(&mut self) -> Stream<T> {
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
        Stream { ctx: self.keyed.stream.ctx.clone(), lanes: vec![lane], origin, made_by: None, label: None }
    }

    /// Aggregates each window of each key with `agg`, emitting a [`WindowResult`] when the
    /// window fires. [`WindowedStream::aggregate_with`] builds the aggregator from closures
    /// without type annotations.
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
        let keys = self.keyed.keys.clone();
        let spec = self.spec;
        let lateness = self.lateness;
        let late = LateRecords { tx: self.late.clone() };
        let invalid = spec.validate().err();
        let stream = self.keyed.stream.operator_with("window", || {
            WindowOperator::new(keys.clone(), spec, agg.clone(), lateness, late.clone())
        });
        match invalid {
            None => stream,
            Some((field, reason)) => stream.invalid(field, reason),
        }
    }

    /// Aggregates each window with the aggregator `build` makes from [`Aggs`], which knows the
    /// record type: its extractor closures need no type annotations, and a tuple computes
    /// several aggregates in one pass.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use weir_runtime::{CollectSink, MemorySource, Pipeline, TumblingWindows, Watermarks};
    ///
    /// #[derive(Clone)]
    /// struct Access {
    ///     at: i64,
    ///     path: &'static str,
    ///     bytes: u64,
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> weir_runtime::Result<()> {
    /// let p = Pipeline::builder("bytes").parallelism(1).handle_signals(false).build()?;
    /// let out = CollectSink::new();
    /// let log = vec![
    ///     Access { at: 1_000, path: "/", bytes: 100 },
    ///     Access { at: 2_000, path: "/", bytes: 300 },
    /// ];
    /// p.source(MemorySource::new(log))
    ///     .assign_timestamps(|a| a.at, Watermarks::monotonic())
    ///     .key_by(|a| a.path.to_owned())
    ///     .window(TumblingWindows::of(Duration::from_secs(60)))
    ///     .aggregate_with(|a| (a.count(), a.sum(|e| e.bytes), a.max(|e| e.bytes), a.avg(|e| e.bytes as f64)))
    ///     .sink(out.clone());
    /// p.run().await?;
    /// assert_eq!(out.take()[0].value, (2, 400, 300, 200.0));
    /// # Ok(())
    /// # }
    /// ```
    pub fn aggregate_with<A, B>(self, build: B) -> Stream<WindowResult<K, A::Output>>
    where
        A: Aggregator<T>,
        B: FnOnce(Aggs<T>) -> A,
        K: serde::Serialize + serde::de::DeserializeOwned,
    {
        self.aggregate(build(Aggs::new()))
    }
}

impl<K, T> WindowedStream<K, T>
where
    K: Hash + Eq + Clone + Send + 'static,
    T: Clone + Send + 'static,
{
    /// Folds each window of each key with `f(accumulated, next)`; the result's value is `None`
    /// never (a window exists only once a record arrived) but typed as `Option<T>`
    /// ([`Reduce`](crate::Reduce) is an aggregator of its own, whose empty state is `None`).
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
        Stream { ctx: self.ctx, lanes, origin: self.origin, made_by: self.made_by, label: self.label }
    }
}
