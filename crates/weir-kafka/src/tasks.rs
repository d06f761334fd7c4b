//! Scale-out: one pipeline per input partition, partitions spread over processes by a Kafka
//! consumer group (Kafka Streams' task model, with Weir's runtime inside each task).
//!
//! Start the same program N times: every process joins the consumer group with a membership
//! consumer (`cooperative-sticky` assignment) that never reads records; for every partition the
//! group assigns to it, the process builds the user's pipeline for that partition (a *task*)
//! and runs it; for every partition revoked, it stops that task first (the callback waits for
//! it) and then lets the partition go. A process that dies loses its partitions after the
//! session timeout; the survivors take them over.
//!
//! # State and exactly once
//!
//! A task checkpoints into `<checkpoint dir>/<group>/<topic>-<partition>`, a directory every
//! process reaches (a shared file system), or under a prefix of an object store
//! ([`KafkaTasks::checkpoint_store`]: S3, GCS, Azure in production), so the task's
//! state follows its partition. Its Kafka sink is exactly-once with a transactional id per
//! task (`<prefix>-<partition>`): the new owner's `init_transactions` fences the previous owner
//! and aborts its open transaction at once, and the transaction that commits a checkpoint's
//! output also commits the task's input offsets to the group (so `kafka-consumer-groups.sh
//! --describe` shows the true lag) and the marker that names the checkpoint. The new owner
//! restores the newest checkpoint that marker allows (see [`crate::sink`]), so a partition's
//! output is exactly once across owners, killed or not.
//!
//! # Keys
//!
//! Keyed state is per task, so a `key_by` inside a task is correct only when every record of a
//! key is in one input partition: the topic is keyed by that key. A task pipeline with a
//! `key_by` is refused unless it says so with [`Task::copartitioned`]. For another key, write the
//! records keyed by it to a second topic from one task group (that topic is the repartition
//! topic) and aggregate it in a second one; the first task group's sink sets the record
//! timestamps and sends its watermark in heartbeats, from which the second takes event time
//! and watermarks again (see [`crate::sink`]).
//!
//! A task that fails is restarted from its last committed checkpoint after a second, as long
//! as the process owns its partition; an invalid configuration stops the whole run.

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, ConsumerGroupMetadata, Rebalance,
};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tokio::sync::mpsc;
use weir_runtime::{Checkpointing, Error, Pipeline, PipelineBuilder, Result};

use crate::config::KafkaConfig;
use crate::metrics::{GroupMetrics, TaskMetrics};
use crate::sink::KafkaSink;
use crate::source::KafkaSource;

/// How long a revoke waits for its tasks to stop before it lets the partitions go anyway
/// (fencing keeps a late task from committing).
const REVOKE_WAIT: Duration = Duration::from_secs(30);
/// How long a failed task waits before it restarts.
const RESTART_BACKOFF: Duration = Duration::from_secs(1);

/// Where tasks checkpoint.
#[derive(Clone)]
enum Location {
    Dir(PathBuf),
    Store(Arc<dyn object_store::ObjectStore>, String),
}

impl std::fmt::Debug for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::Dir(dir) => write!(f, "{}", dir.display()),
            Location::Store(store, prefix) => write!(f, "{store}/{prefix}"),
        }
    }
}

/// What a task's source and sink share with the group's membership.
pub(crate) struct TaskLink {
    pub(crate) partition: i32,
    /// The source's positions at the last barrier, for the sink's transaction.
    positions: Mutex<Vec<(String, i32, i64)>>,
    /// An exactly-once sink commits the source's offsets in its transactions.
    pub(crate) transactional: AtomicBool,
    /// The pipeline said its `key_by` keys are the topic's ([`Task::copartitioned`]).
    copartitioned: AtomicBool,
    membership: Option<Arc<BaseConsumer<Membership>>>,
    /// With [`KafkaTasks::metrics`].
    pub(crate) metrics: Option<TaskMetrics>,
    /// The membership's group metadata, refreshed by its polling thread.
    metadata: Arc<GroupMetadata>,
}

/// The group metadata of this process's membership, as its polling thread last read it: asking
/// librdkafka from a task would block while a rebalance callback runs, and the callback waits
/// for the tasks it revokes.
#[derive(Default)]
pub(crate) struct GroupMetadata(Mutex<Option<Arc<ConsumerGroupMetadata>>>);

impl GroupMetadata {
    fn refresh(&self, consumer: &BaseConsumer<Membership>) {
        let fresh = consumer.group_metadata().map(Arc::new);
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = fresh;
    }

    fn get(&self) -> Option<Arc<ConsumerGroupMetadata>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

impl std::fmt::Debug for TaskLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskLink").field("partition", &self.partition).finish_non_exhaustive()
    }
}

impl TaskLink {
    pub(crate) fn set_positions(&self, positions: Vec<(String, i32, i64)>) {
        *self.positions.lock().unwrap_or_else(PoisonError::into_inner) = positions;
    }

    pub(crate) fn take_positions(&self) -> Vec<(String, i32, i64)> {
        std::mem::take(&mut *self.positions.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// The group metadata of this process's membership (its generation fences a zombie's
    /// offset commits).
    pub(crate) fn group_metadata(&self) -> Option<Arc<ConsumerGroupMetadata>> {
        self.metadata.get()
    }

    /// Commits offsets as the group member (an at-least-once task).
    pub(crate) fn commit(
        &self,
        offsets: &[(String, i32, i64)],
    ) -> std::result::Result<(), rdkafka::error::KafkaError> {
        let Some(m) = &self.membership else { return Ok(()) };
        let mut tpl = TopicPartitionList::new();
        for (topic, partition, offset) in offsets {
            tpl.add_partition_offset(topic, *partition, Offset::Offset(*offset))?;
        }
        crate::coordinator::ask(|| m.commit(&tpl, CommitMode::Sync))
    }
}

/// One task: a partition of the input topic, and what its pipeline is built from.
pub struct Task {
    partition: i32,
    config: KafkaConfig,
    topic: String,
    group: String,
    checkpointing: Checkpointing,
    link: Arc<TaskLink>,
}

impl std::fmt::Debug for Task {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Task")
            .field("topic", &self.topic)
            .field("partition", &self.partition)
            .finish_non_exhaustive()
    }
}

impl Task {
    /// The input partition.
    pub fn partition(&self) -> i32 {
        self.partition
    }

    /// A pipeline builder for this task: named `<name>-<partition>`, parallelism 1,
    /// checkpointed into the task's directory, signals left to the task group.
    /// With [`KafkaTasks::metrics`], the pipeline exports its metrics there too.
    pub fn pipeline(&self, name: &str) -> PipelineBuilder {
        let name = format!("{name}-{}", self.partition);
        let builder = Pipeline::builder(name.clone())
            .parallelism(1)
            .checkpointing(self.checkpointing.clone())
            .handle_signals(false);
        match &self.link.metrics {
            Some(m) => {
                m.named(&name);
                builder.metrics(m.registry().clone())
            }
            None => builder,
        }
    }

    /// The task's source: its partition of the input topic, for the group.
    pub fn source(&self) -> KafkaSource {
        let mut source = KafkaSource::new(self.config.clone(), [self.topic.clone()], self.group.clone());
        source.task = Some(self.link.clone());
        source
    }

    /// `source` made this task's: its partition of the task group's topic, read for the task
    /// group's consumer group, with `source`'s other settings (start offset, batch size,
    /// repartition writers, metrics). For a source configured elsewhere (a SQL statement's).
    pub fn source_from(&self, mut source: KafkaSource) -> KafkaSource {
        source.topics = vec![self.topic.clone()];
        source.group = self.group.clone();
        source.task = Some(self.link.clone());
        source.committer = Arc::default();
        source
    }

    /// Says that every `key_by` of this task's pipeline keys records as the input topic is keyed
    /// (records of one key are all in one partition: the topic is keyed by that key, as a
    /// repartition topic written with [`KafkaSink::repartition`] keyed by it is). Without it, a
    /// task pipeline with a `key_by` is refused: its keyed state would silently hold only the
    /// records of its partition.
    pub fn copartitioned(&self) {
        self.link.copartitioned.store(true, Ordering::SeqCst);
    }

    /// `sink`, made the task's: an exactly-once sink gets the transactional id
    /// `<prefix>-<partition>` and commits the task's input offsets in its transactions.
    pub fn sink<T>(&self, mut sink: KafkaSink<T>) -> KafkaSink<T> {
        if matches!(sink.delivery(), crate::Delivery::ExactlyOnce { .. }) {
            self.link.transactional.store(true, Ordering::SeqCst);
        }
        sink.task = Some(self.link.clone());
        // Its own transactions (`<prefix>-<partition>`), also when `sink` is a clone of one
        // that made its transactions already.
        sink.txn = Arc::default();
        sink
    }
}

enum Event {
    Assign(Vec<i32>),
    Revoke(Vec<i32>, std::sync::mpsc::Sender<()>),
}

/// The membership consumer's callbacks: tell the task group what moved.
struct Membership {
    events: mpsc::UnboundedSender<Event>,
    metrics: Option<GroupMetrics>,
}

impl ClientContext for Membership {}

impl ConsumerContext for Membership {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            if let (Some(m), true) = (&self.metrics, tpl.count() > 0) {
                m.revoked(consumer.assignment_lost());
            }
            let partitions: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
            let (done, wait) = std::sync::mpsc::channel();
            if self.events.send(Event::Revoke(partitions, done)).is_ok() {
                let _ = wait.recv_timeout(REVOKE_WAIT);
            }
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Some(m) = &self.metrics {
            if matches!(rebalance, Rebalance::Assign(tpl) if tpl.count() > 0) {
                m.assigned();
            }
            m.owned(consumer.assignment().map_or(0, |a| a.count()));
        }
        if let Rebalance::Assign(tpl) = rebalance {
            // The membership consumer reads nothing: the tasks do.
            if let Err(e) = consumer.pause(tpl) {
                tracing::warn!(error = %e, "pausing the membership consumer's partitions");
            }
            let partitions: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
            let _ = self.events.send(Event::Assign(partitions));
        }
    }
}

/// Runs one pipeline per partition of a topic that this process owns in a consumer group; see
/// the [module docs](crate::tasks).
///
/// ```no_run
/// use weir_kafka::{KafkaConfig, KafkaRecord, KafkaSink, KafkaTasks};
///
/// # async fn run() -> weir_runtime::Result<()> {
/// let config = KafkaConfig::new("127.0.0.1:9092");
/// let out = KafkaSink::bytes(config.clone(), "upper").exactly_once("upper");
/// KafkaTasks::new(config, "lines", "upper-job")
///     .checkpoint_dir("/shared/checkpoints")
///     .run(
///         move |task| {
///             let p = task.pipeline("upper").build()?;
///             p.source(task.source())
///                 .map(|r: KafkaRecord| r.value.to_ascii_uppercase())
///                 .sink(task.sink(out.clone()));
///             Ok(p)
///         },
///         async { tokio::signal::ctrl_c().await.ok(); },
///     )
///     .await
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct KafkaTasks {
    config: KafkaConfig,
    topic: String,
    group: String,
    checkpoints: Option<Location>,
    interval: Duration,
    session_timeout: Duration,
    metrics: Option<weir_runtime::Metrics>,
}

impl KafkaTasks {
    /// Tasks over the partitions of `topic`, spread by the consumer group `group`.
    pub fn new(config: KafkaConfig, topic: impl Into<String>, group: impl Into<String>) -> Self {
        KafkaTasks {
            config,
            topic: topic.into(),
            group: group.into(),
            checkpoints: None,
            interval: Duration::from_secs(1),
            session_timeout: Duration::from_secs(10),
            metrics: None,
        }
    }

    /// Where tasks checkpoint (this or [`KafkaTasks::checkpoint_store`] is required): a
    /// directory every process of the group reaches.
    pub fn checkpoint_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.checkpoints = Some(Location::Dir(dir.into()));
        self
    }

    /// Tasks checkpoint on an object store (S3, GCS, Azure) under `prefix`, which every process
    /// of the group reaches: task `p` under `<prefix>/<group>/<topic>-<p>`.
    pub fn checkpoint_store(
        mut self,
        store: Arc<dyn object_store::ObjectStore>,
        prefix: impl Into<String>,
    ) -> Self {
        self.checkpoints = Some(Location::Store(store, prefix.into()));
        self
    }

    /// How often tasks checkpoint (and commit their transactions). Default: 1 s.
    pub fn checkpoint_interval(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }

    /// How long the group waits for a silent process before it hands its partitions to the
    /// others. Default: 10 s.
    pub fn session_timeout(mut self, timeout: Duration) -> Self {
        self.session_timeout = timeout;
        self
    }

    /// Exports the group's metrics into `metrics`: the partitions this process owns and its
    /// rebalances, and every task pipeline's runtime and Kafka metrics (lag, committed offsets,
    /// transactions), labelled with the task pipeline's name; see [`crate::metrics`].
    pub fn metrics(mut self, metrics: &weir_runtime::Metrics) -> Self {
        self.metrics = Some(metrics.clone());
        self
    }

    fn task(
        &self,
        partition: i32,
        location: &Location,
        membership: &Arc<BaseConsumer<Membership>>,
        metadata: &Arc<GroupMetadata>,
    ) -> Task {
        let task = format!("{}-{partition}", self.topic);
        let checkpointing = match location {
            Location::Dir(dir) => Checkpointing::to_dir(dir.join(&self.group).join(task)),
            Location::Store(store, prefix) => {
                Checkpointing::to_store(store.clone(), format!("{prefix}/{}/{task}", self.group))
            }
        }
        .interval(self.interval);
        let link = Arc::new(TaskLink {
            partition,
            positions: Mutex::new(Vec::new()),
            transactional: AtomicBool::new(false),
            copartitioned: AtomicBool::new(false),
            membership: Some(membership.clone()),
            metadata: metadata.clone(),
            metrics: self
                .metrics
                .as_ref()
                .map(|m| TaskMetrics::new(m, format!("{}-{partition}", self.group))),
        });
        Task {
            partition,
            config: self.config.clone(),
            topic: self.topic.clone(),
            group: self.group.clone(),
            checkpointing,
            link,
        }
    }

    /// Joins the group and runs the tasks of the partitions it assigns to this process, each
    /// with the pipeline `build` makes for it, until `shutdown` completes (then every task is
    /// stopped where it is: the next owner resumes from its last commit).
    ///
    /// # Errors
    ///
    /// An invalid configuration (of the group, or of a task's pipeline), a missing topic, a
    /// broker refusing the client (a failed authentication or TLS handshake, at once), or the
    /// group's consumer failing to start.
    pub async fn run<F>(self, build: F, shutdown: impl Future<Output = ()>) -> Result<()>
    where
        F: Fn(&Task) -> Result<Pipeline> + Send + Sync + 'static,
    {
        let Some(location) = self.checkpoints.clone() else {
            return Err(Error::InvalidConfig {
                field: "checkpoint_dir",
                reason: "a task group needs a checkpoint directory every process reaches".into(),
            });
        };
        // A missing topic, or a broker that refuses the client (authentication, TLS), fails here at
        // once, naming the brokers: the group's consumer would retry for ever.
        let group_error = |e| Error::connector(format!("kafka task group {}", self.group), e);
        let (config, topic) = (self.config.clone(), self.topic.clone());
        tokio::task::spawn_blocking(move || config.topic_partitions(&topic))
            .await
            .map_err(|e| group_error(e.to_string()))?
            .map_err(group_error)?;
        let (events_tx, mut events) = mpsc::unbounded_channel();
        let group_metrics = self.metrics.as_ref().map(|m| GroupMetrics::new(m, &self.group, &self.topic));
        let mut c = self.config.client(false)?;
        c.set("group.id", &self.group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("partition.assignment.strategy", "cooperative-sticky")
            .set("session.timeout.ms", self.session_timeout.as_millis().to_string())
            .set("heartbeat.interval.ms", (self.session_timeout.as_millis() / 4).max(100).to_string());
        let membership: Arc<BaseConsumer<Membership>> = Arc::new(
            self.config
                .create(&c, Membership { events: events_tx, metrics: group_metrics.clone() })
                .map_err(|e| Error::connector(format!("kafka task group {}", self.group), e))?,
        );
        membership
            .subscribe(&[&self.topic])
            .map_err(|e| Error::connector(format!("kafka task group {}", self.group), e))?;
        let polling = Arc::new(AtomicBool::new(true));
        let metadata = Arc::new(GroupMetadata::default());
        let poller = {
            let (membership, polling, metadata) = (membership.clone(), polling.clone(), metadata.clone());
            std::thread::Builder::new()
                .name(format!("weir-kafka-group-{}", self.group))
                .spawn(move || {
                    while polling.load(Ordering::Relaxed) {
                        if let Some(Err(e)) = membership.poll(Duration::from_millis(100)) {
                            tracing::warn!(error = %e, "kafka task group consumer");
                        }
                        metadata.refresh(&membership);
                    }
                })
                .map_err(|e| Error::connector(format!("kafka task group {}", self.group), e))?
        };
        let build = Arc::new(build);
        let (done_tx, mut done) = mpsc::unbounded_channel::<(i32, Result<()>)>();
        let mut running: HashMap<i32, tokio::task::JoinHandle<()>> = HashMap::new();
        tokio::pin!(shutdown);
        let result = loop {
            tokio::select! {
                () = &mut shutdown => break Ok(()),
                Some((partition, result)) = done.recv() => {
                    running.remove(&partition);
                    if let Err(e) = result {
                        break Err(e);
                    }
                }
                Some(event) = events.recv() => match event {
                    Event::Assign(partitions) => {
                        tracing::info!(group = %self.group, ?partitions, "tasks assigned");
                        for p in partitions {
                            let task = self.task(p, &location, &membership, &metadata);
                            let (build, done_tx) = (build.clone(), done_tx.clone());
                            let handle = tokio::spawn(async move {
                                let result = run_task(&task, &*build).await;
                                let _ = done_tx.send((task.partition, result));
                            });
                            if let Some(old) = running.insert(p, handle) {
                                old.abort();
                            }
                        }
                    }
                    Event::Revoke(partitions, ack) => {
                        tracing::info!(group = %self.group, ?partitions, "tasks revoked");
                        for p in partitions {
                            if let Some(handle) = running.remove(&p) {
                                handle.abort();
                                let _ = handle.await;
                            }
                        }
                        let _ = ack.send(());
                    }
                },
            }
        };
        for (_, handle) in running.drain() {
            handle.abort();
            let _ = handle.await;
        }
        polling.store(false, Ordering::Relaxed);
        let _ = tokio::task::spawn_blocking(move || poller.join()).await;
        if let Some(m) = &group_metrics {
            m.owned(0);
        }
        drop(events);
        result
    }
}

/// Runs a task's pipeline, restarting it after a failure (from its last commit); returns when
/// it ends, or with an invalid configuration.
async fn run_task<F>(task: &Task, build: &F) -> Result<()>
where
    F: Fn(&Task) -> Result<Pipeline>,
{
    loop {
        let pipeline = build(task)?;
        let key_bys = pipeline.key_bys();
        if !key_bys.is_empty() && !task.link.copartitioned.load(Ordering::SeqCst) {
            return Err(Error::InvalidConfig {
                field: "key_by",
                reason: format!(
                    "the pipeline of task {} of topic {} keys its records (a key_by after {}), but a task \
                     reads one partition, so keyed state is right only if every record of a key is in that \
                     partition. If the topic is keyed by the same key, say so with Task::copartitioned(); \
                     otherwise write the records keyed by it to a repartition topic from one task group \
                     (KafkaSink::repartition) and key them in a second (see weir_kafka::tasks)",
                    task.partition, task.topic, key_bys[0]
                ),
            });
        }
        match pipeline.run().await {
            Ok(_) => return Ok(()),
            Err(e @ Error::InvalidConfig { .. }) => return Err(e),
            Err(e) => {
                tracing::warn!(partition = task.partition, error = %e, "task failed; restarting from its last commit");
                tokio::time::sleep(RESTART_BACKOFF).await;
            }
        }
    }
}
