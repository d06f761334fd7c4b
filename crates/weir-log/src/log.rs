//! The log: a directory of topics, their consumer groups, and the background maintenance.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, OnceLock, PoisonError, RwLock, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::config::{Durability, LogOptions, TopicConfig};
use crate::consumer::{Consumer, ConsumerConfig};
use crate::error::{Error, Result};
use crate::group::{GroupDescription, Groups};
use crate::partition::{Partition, PartitionRecovery};
use crate::segment::Origin;
use crate::topic::{Topic, TopicDescription, now_ms};
use crate::{fsutil, meta, name};

const TOPIC_META: &str = "topic.json";

/// An embedded, persistent, partitioned log, opened on a directory.
///
/// Cheap to clone: clones share one open log. Safe to use from many threads and tasks at once.
/// One process at a time may open a directory with [`Log::open`]: an OS lock (`flock`) on the
/// directory itself enforces it, so deleting the `.lock` file does not let a second writer in.
/// Any number of readers may open it beside that writer with [`Log::open_read_only`].
///
/// # Examples
///
/// ```
/// use weir_log::{Log, LogOptions, Record, TopicConfig};
///
/// # fn main() -> weir_log::Result<()> {
/// let dir = tempfile::tempdir().expect("temp dir");
/// let log = Log::open(dir.path(), LogOptions::default())?;
/// let topic = log.create_topic("events", TopicConfig::with_partitions(1))?;
/// let appended = topic.append(0, &[Record::new("hello").with_key("k")])?;
/// assert_eq!(appended.base_offset, 0);
/// let records = topic.read(0, 0, 1 << 20)?;
/// assert_eq!(&records[0].value[..], b"hello");
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Log {
    inner: Arc<LogInner>,
}

impl std::fmt::Debug for Log {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Log").field("dir", &self.inner.shared.dir).finish_non_exhaustive()
    }
}

/// What the maintenance thread needs; it never holds [`LogInner`], so dropping the last `Log`
/// stops it.
struct Shared {
    dir: PathBuf,
    options: LogOptions,
    topics: RwLock<BTreeMap<String, Topic>>,
    /// Topics whose files exist but failed to open, with why.
    broken: RwLock<BTreeMap<String, Arc<Error>>>,
    /// Opened by [`Log::open_read_only`]: a view of a directory another process may write.
    read_only: bool,
}

struct LogInner {
    shared: Arc<Shared>,
    groups: Groups,
    recovery: Vec<PartitionRecovery>,
    /// The registry given to the first [`Log::register_metrics`] call.
    metrics: OnceLock<weir_metrics::Metrics>,
    stop: Option<mpsc::Sender<()>>,
    maintenance: Option<JoinHandle<()>>,
    /// Held for the log's lifetime; dropped last: the directory, locked, and `.lock`, locked too
    /// (which excludes older versions that locked only that file). `None` when read-only.
    _lock: Option<(File, File)>,
}

impl Shared {
    fn topics(&self) -> Vec<Topic> {
        self.topics.read().unwrap_or_else(PoisonError::into_inner).values().cloned().collect()
    }

    fn topics_dir(&self) -> PathBuf {
        self.dir.join("topics")
    }

    fn flush_all(&self) {
        for t in self.topics() {
            if let Err(e) = t.flush() {
                tracing::error!(topic = t.name(), error = %e, "background fdatasync failed");
            }
        }
    }

    /// Records each partition's end offset: on close (`closing`), or what the last `fdatasync`
    /// made durable.
    fn record_ends(&self, closing: bool) {
        for t in self.topics() {
            for p in &t.inner().partitions {
                if closing { p.record_end_on_close() } else { p.record_synced_end() }
            }
        }
    }

    fn enforce_retention(&self) -> Result<usize> {
        if self.read_only {
            return Ok(0);
        }
        let now = now_ms();
        let mut removed = 0;
        for t in self.topics() {
            for p in &t.inner().partitions {
                removed += p.enforce_retention(now)?;
            }
        }
        Ok(removed)
    }
}

impl Log {
    /// Opens (creating if needed) the log in `dir` and recovers every partition: torn or corrupt
    /// segment tails are cut off (see the crate docs), and [`Log::recovery`] reports what was.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] naming a bad option; [`Error::Locked`] if another process has the
    /// directory open; [`Error::Io`] and [`Error::Metadata`] for unreadable files.
    pub fn open(dir: impl AsRef<Path>, options: LogOptions) -> Result<Log> {
        options.validate()?;
        let dir = dir.as_ref().to_owned();
        fsutil::create_dir_all(&dir)?;
        let lock = lock_dir(&dir)?;

        let shared = Arc::new(Shared {
            dir: dir.clone(),
            options: options.clone(),
            topics: RwLock::new(BTreeMap::new()),
            broken: RwLock::new(BTreeMap::new()),
            read_only: false,
        });
        let topics_dir = shared.topics_dir();
        fsutil::create_dir_all(&topics_dir)?;
        // Leftovers of a create or delete that a crash interrupted.
        for leftover in ["tmp", "trash"] {
            let path = dir.join(leftover);
            if path.exists() {
                std::fs::remove_dir_all(&path).map_err(Error::io("remove leftovers", &path))?;
            }
        }
        let groups = Groups::open(dir.join("groups"))?;
        let committed = groups.highest_committed()?;
        let mut recovery = Vec::new();
        let mut topics = BTreeMap::new();
        let mut broken = BTreeMap::new();
        for entry in std::fs::read_dir(&topics_dir).map_err(Error::io("list topics", &topics_dir))? {
            let entry = entry.map_err(Error::io("list topics", &topics_dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name::validate("topic", &name).is_err() {
                tracing::warn!(path = %entry.path().display(), "ignoring directory that is not a topic");
                continue;
            }
            // One topic that cannot be opened leaves the others usable.
            match open_topic(&name, entry.path(), options.durability, Some(&committed)) {
                Ok((topic, reports)) => {
                    recovery.extend(reports.into_iter().filter(|r| !r.is_clean()));
                    topics.insert(name, topic);
                }
                Err(e) => {
                    tracing::error!(topic = %name, error = %e, "topic could not be opened; the others are available");
                    broken.insert(name, Arc::new(e));
                }
            }
        }
        *shared.topics.write().unwrap_or_else(PoisonError::into_inner) = topics;
        *shared.broken.write().unwrap_or_else(PoisonError::into_inner) = broken;
        shared.enforce_retention()?;

        let (stop, stopped) = mpsc::channel();
        let worker = shared.clone();
        let maintenance = std::thread::Builder::new()
            .name("weir-log-maintenance".into())
            .spawn(move || maintain(&worker, &stopped))
            .map_err(Error::io("start maintenance thread", &dir))?;
        tracing::info!(dir = %dir.display(), durability = ?options.durability, topics = shared.topics().len(), "log opened");
        Ok(Log {
            inner: Arc::new(LogInner {
                shared,
                groups,
                recovery,
                metrics: OnceLock::new(),
                stop: Some(stop),
                maintenance: Some(maintenance),
                _lock: Some(lock),
            }),
        })
    }

    /// Opens the log in `dir` read-only, beside the process that may own it: takes no lock,
    /// runs no recovery, writes nothing. It sees what the writer has published (see the crate
    /// docs, "Readers beside a writer") and follows it: a background thread looks for new
    /// records, segments, topics and deletions every 100 ms (or call [`Log::catch_up`]), and
    /// consumers and [`Topic::wait_for`] wake when it finds records.
    ///
    /// Appends, topic creation and deletion, and group commits fail with [`Error::ReadOnly`].
    /// Consumers work, with or without a group (a group's committed offsets are read, not
    /// changed).
    ///
    /// # Examples
    ///
    /// ```
    /// use weir_log::{Error, Log, LogOptions, Record, TopicConfig};
    ///
    /// # fn main() -> weir_log::Result<()> {
    /// let dir = tempfile::tempdir().expect("temp dir");
    /// let writer = Log::open(dir.path(), LogOptions::default())?;
    /// let events = writer.create_topic("events", TopicConfig::with_partitions(1))?;
    /// events.append(0, &[Record::new("first")])?;
    ///
    /// // Beside the writer (here in the same process; usually another one).
    /// let reader = Log::open_read_only(dir.path())?;
    /// let seen = reader.topic("events")?;
    /// assert_eq!(&seen.read(0, 0, 1 << 20)?[0].value[..], b"first");
    /// assert!(matches!(seen.append(0, &[Record::new("no")]), Err(Error::ReadOnly { .. })));
    ///
    /// events.append(0, &[Record::new("second")])?;
    /// reader.catch_up()?; // or wait: a background thread looks every 100 ms
    /// assert_eq!(seen.end_offset(0)?, 2);
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if `dir` is not a log directory (it is never created).
    pub fn open_read_only(dir: impl AsRef<Path>) -> Result<Log> {
        let dir = dir.as_ref().to_owned();
        let topics_dir = dir.join("topics");
        std::fs::read_dir(&topics_dir).map_err(Error::io("open log directory", &topics_dir))?;
        let shared = Arc::new(Shared {
            dir: dir.clone(),
            options: LogOptions::default(),
            topics: RwLock::new(BTreeMap::new()),
            broken: RwLock::new(BTreeMap::new()),
            read_only: true,
        });
        shared.catch_up_topics()?;
        let groups = Groups::open_read_only(dir.join("groups"));
        let (stop, stopped) = mpsc::channel();
        let worker = shared.clone();
        let follower = std::thread::Builder::new()
            .name("weir-log-follow".into())
            .spawn(move || follow(&worker, &stopped))
            .map_err(Error::io("start follower thread", &dir))?;
        tracing::debug!(dir = %dir.display(), topics = shared.topics().len(), "log opened read-only");
        Ok(Log {
            inner: Arc::new(LogInner {
                shared,
                groups,
                recovery: Vec::new(),
                metrics: OnceLock::new(),
                stop: Some(stop),
                maintenance: Some(follower),
                _lock: None,
            }),
        })
    }

    /// Whether the log was opened with [`Log::open_read_only`].
    pub fn is_read_only(&self) -> bool {
        self.inner.shared.read_only
    }

    /// For a log opened read-only, looks at the directory now: records, segments and topics the
    /// writer added, segments retention deleted, topics deleted (the background thread does this
    /// every 100 ms). Does nothing for a log opened for writing.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if the directory cannot be listed.
    pub fn catch_up(&self) -> Result<()> {
        if self.inner.shared.read_only { self.inner.shared.catch_up_topics() } else { Ok(()) }
    }

    /// The directory the log lives in.
    pub fn dir(&self) -> &Path {
        &self.inner.shared.dir
    }

    /// The options the log was opened with.
    pub fn options(&self) -> &LogOptions {
        &self.inner.shared.options
    }

    /// What recovery found and changed when this log was opened: one entry per partition that
    /// had a torn tail cut off, holds damaged ranges found on open (listed on every open while
    /// they are on disk), had stray segment files moved aside, or was recreated. Empty for an
    /// intact log, whether it was shut down cleanly or not.
    pub fn recovery(&self) -> &[PartitionRecovery] {
        &self.inner.recovery
    }

    /// Topics whose files exist but could not be opened, with why (sorted by name). Every other
    /// topic works; these fail with [`Error::TopicUnavailable`] until repaired (then reopen) or
    /// deleted with [`Log::delete_topic`].
    pub fn unavailable_topics(&self) -> Vec<(String, Arc<Error>)> {
        let broken = self.inner.shared.broken.read().unwrap_or_else(PoisonError::into_inner);
        broken.iter().map(|(name, e)| (name.clone(), e.clone())).collect()
    }

    pub(crate) fn groups(&self) -> &Groups {
        &self.inner.groups
    }

    /// Handles to every live topic (a snapshot).
    pub(crate) fn topic_handles(&self) -> Vec<Topic> {
        self.inner.shared.topics()
    }

    /// Exports this log's metrics to `metrics`, under the names and meanings of
    /// `weir_metrics::catalog` (`weir_log_*`, `weir_consumer_group_*`), for the topics that exist
    /// now and those created later:
    ///
    /// - counted as it happens, per partition: records and bytes appended, the time of each
    ///   append call (waiting for durability included) and of each `fdatasync` of the active
    ///   segment; and the torn tails [`Log::recovery`] lists. Every existing partition's series
    ///   start at 0, so dashboards show 0 rather than no data.
    /// - computed when the registry is scraped: each live partition's end and start offsets,
    ///   segments and size; for every consumer group with committed offsets, per partition, the
    ///   committed offset, the lag in records and the lag in seconds (now minus the timestamp of
    ///   the record at the committed offset; 0 when caught up). A deleted topic's gauges are gone
    ///   from the next scrape.
    ///
    /// Cost: until this is called, one atomic load per append call. After, per append call (not
    /// per record) two clock reads, two atomic adds and one histogram observation; no lock or
    /// lookup is added.
    ///
    /// Only the first call takes effect: calling it again (with the same or another registry)
    /// does nothing, so nothing is counted twice. The registry holds the log weakly: it does not
    /// keep the log open, and exports no gauges for it once every `Log` handle is dropped.
    ///
    /// A registry holds the scrape-time gauges of one log only: if a second log (or this
    /// directory, reopened) registers with the same registry, the registry rejects its gauges and
    /// logs an error; its counters and histograms still work.
    pub fn register_metrics(&self, metrics: &weir_metrics::Metrics) {
        if self.inner.metrics.set(metrics.clone()).is_err() {
            tracing::debug!(dir = %self.dir().display(), "log metrics already registered; ignored");
            return;
        }
        // After `set`: a topic created from here on attaches itself in `create_topic` (under the
        // topics lock), one created before is in this snapshot; attaching twice is harmless.
        crate::metrics::register(
            metrics,
            &self.topic_handles(),
            self.recovery(),
            WeakLog(Arc::downgrade(&self.inner)),
        );
    }

    /// Creates a topic and returns a handle to it. Creation is atomic: the topic's directory is
    /// built under `tmp/` and renamed into place.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidName`], [`Error::InvalidConfig`] (naming the field),
    /// [`Error::TopicExists`], [`Error::Io`].
    pub fn create_topic(&self, name: &str, config: TopicConfig) -> Result<Topic> {
        self.writable("create a topic")?;
        self.create_topic_with(name, config, |name, dir, durability| open_topic(name, dir, durability, None))
    }

    /// [`Log::create_topic`], opening the committed topic with `open`.
    fn create_topic_with(
        &self,
        name: &str,
        config: TopicConfig,
        open: impl FnOnce(&str, PathBuf, Durability) -> Result<(Topic, Vec<PartitionRecovery>)>,
    ) -> Result<Topic> {
        name::validate("topic", name)?;
        config.validate()?;
        let shared = &self.inner.shared;
        let mut topics = shared.topics.write().unwrap_or_else(PoisonError::into_inner);
        let final_dir = shared.topics_dir().join(name);
        let broken = shared.broken.read().unwrap_or_else(PoisonError::into_inner).contains_key(name);
        if topics.contains_key(name) || broken || final_dir.exists() {
            return Err(Error::TopicExists(name.to_owned()));
        }
        // Everything is built under tmp/ (removed on open if a crash leaves it) and committed by
        // one rename; a failure before it leaves nothing, a failure opening it undoes it.
        let tmp = shared.dir.join("tmp").join(name);
        let built = build_topic(&tmp, &config);
        if let Err(e) = built {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e);
        }
        std::fs::rename(&tmp, &final_dir).map_err(Error::io("move new topic into place", &final_dir))?;
        fsutil::sync_dir(&shared.topics_dir())?;
        let topic = match open(name, final_dir.clone(), shared.options.durability) {
            Ok((topic, _)) => topic,
            Err(e) => {
                tracing::error!(topic = name, error = %e, "new topic could not be opened; creation undone");
                if let Err(undo) = self.discard(name, &final_dir) {
                    tracing::error!(topic = name, error = %undo, "undoing the creation failed");
                }
                return Err(e);
            }
        };
        if let Some(metrics) = self.inner.metrics.get() {
            crate::metrics::attach(metrics, &topic);
        }
        topics.insert(name.to_owned(), topic.clone());
        tracing::info!(topic = name, partitions = config.partitions, "topic created");
        Ok(topic)
    }

    /// Removes a topic directory: moved to `trash/` first, so a crash cannot leave half of it.
    fn discard(&self, name: &str, dir: &Path) -> Result<()> {
        let shared = &self.inner.shared;
        let trash = shared.dir.join("trash");
        fsutil::create_dir_all(&trash)?;
        let doomed = trash.join(format!("{name}-{}", now_ms()));
        std::fs::rename(dir, &doomed).map_err(Error::io("move topic to trash", &doomed))?;
        fsutil::sync_dir(&shared.topics_dir())?;
        std::fs::remove_dir_all(&doomed).map_err(Error::io("delete topic", &doomed))
    }

    /// A handle to an existing topic.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownTopic`]; [`Error::TopicUnavailable`] for a topic that could not be opened
    /// (see [`Log::unavailable_topics`]).
    pub fn topic(&self, name: &str) -> Result<Topic> {
        let shared = &self.inner.shared;
        let topics = shared.topics.read().unwrap_or_else(PoisonError::into_inner);
        topics.get(name).cloned().ok_or_else(|| {
            match shared.broken.read().unwrap_or_else(PoisonError::into_inner).get(name) {
                Some(e) => Error::TopicUnavailable { topic: name.to_owned(), source: e.clone() },
                None => Error::UnknownTopic(name.to_owned()),
            }
        })
    }

    /// The topic if it exists, else creates it with `config`.
    pub fn topic_or_create(&self, name: &str, config: TopicConfig) -> Result<Topic> {
        match self.create_topic(name, config) {
            Err(Error::TopicExists(_)) => self.topic(name),
            other => other,
        }
    }

    /// Names of all topics, sorted.
    pub fn topics(&self) -> Vec<String> {
        self.inner.shared.topics.read().unwrap_or_else(PoisonError::into_inner).keys().cloned().collect()
    }

    /// A topic's configuration and partitions.
    pub fn describe_topic(&self, name: &str) -> Result<TopicDescription> {
        Ok(self.topic(name)?.describe())
    }

    /// Deletes a topic, its data and the groups' committed offsets for it. Handles to it fail
    /// from then on. The directory is first moved to `trash/`, so a crash mid-delete cannot leave
    /// a half-deleted topic behind. Also deletes a topic that could not be opened (see
    /// [`Log::unavailable_topics`]).
    pub fn delete_topic(&self, name: &str) -> Result<()> {
        self.writable("delete a topic")?;
        let shared = &self.inner.shared;
        let mut topics = shared.topics.write().unwrap_or_else(PoisonError::into_inner);
        let dir = match topics.remove(name) {
            Some(topic) => {
                for p in &topic.inner().partitions {
                    p.mark_deleted();
                }
                topic.inner().notify.notify_waiters();
                topic.inner().dir.clone()
            }
            None => {
                let mut broken = shared.broken.write().unwrap_or_else(PoisonError::into_inner);
                broken.remove(name).ok_or_else(|| Error::UnknownTopic(name.to_owned()))?;
                shared.topics_dir().join(name)
            }
        };
        self.discard(name, &dir)?;
        drop(topics);
        self.inner.groups.forget_topic(name)?;
        tracing::info!(topic = name, "topic deleted");
        Ok(())
    }

    /// Changes a topic's retention (`None`: no limit), as Kafka's `kafka-configs --alter` does
    /// for `retention.bytes` and `retention.ms`: written to its `topic.json` atomically, in
    /// force for its partitions from the next retention check (every
    /// [`LogOptions::retention_check_interval`], or [`Log::enforce_retention`]). Returns the new
    /// configuration. The other settings of a topic do not change after creation.
    ///
    /// # Examples
    ///
    /// ```
    /// use weir_log::{Log, LogOptions, TopicConfig};
    ///
    /// # fn main() -> weir_log::Result<()> {
    /// let dir = tempfile::tempdir().expect("temp dir");
    /// let log = Log::open(dir.path(), LogOptions::default())?;
    /// let t = log.create_topic("t", TopicConfig::with_partitions(1))?;
    /// let week = 7 * 24 * 3600 * 1000;
    /// log.set_topic_retention("t", None, Some(week))?;
    /// assert_eq!(t.config().retention_ms, Some(week));
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::UnknownTopic`], [`Error::TopicUnavailable`], [`Error::InvalidConfig`] naming the
    /// field, [`Error::ReadOnly`], [`Error::Io`].
    pub fn set_topic_retention(
        &self,
        name: &str,
        retention_bytes: Option<u64>,
        retention_ms: Option<u64>,
    ) -> Result<TopicConfig> {
        self.writable("change a topic's retention")?;
        let topic = self.topic(name)?;
        let config = TopicConfig { retention_bytes, retention_ms, ..TopicConfig::clone(&topic.config()) };
        config.validate()?;
        // Under the topics lock, so a concurrent delete cannot interleave.
        let topics = self.inner.shared.topics.read().unwrap_or_else(PoisonError::into_inner);
        if !topics.contains_key(name) {
            return Err(Error::UnknownTopic(name.to_owned()));
        }
        meta::write_json(&config, &topic.inner().dir.join(TOPIC_META))?;
        topic.set_config(config.clone());
        drop(topics);
        tracing::info!(topic = name, ?retention_bytes, ?retention_ms, "topic retention changed");
        Ok(config)
    }

    /// Applies retention to every partition now; returns how many segments were deleted.
    pub fn enforce_retention(&self) -> Result<usize> {
        self.inner.shared.enforce_retention()
    }

    /// `fdatasync`s every partition with unsynced appends.
    pub fn flush(&self) -> Result<()> {
        self.inner.shared.topics().iter().try_for_each(Topic::flush)
    }

    /// A consumer of the configured topics. With a group, it joins the group and shares the
    /// topics' partitions with the group's other members.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownTopic`], [`Error::InvalidName`] for a bad group name,
    /// [`Error::InvalidConfig`].
    pub fn consumer(&self, config: ConsumerConfig) -> Result<Consumer> {
        Consumer::new(self.clone(), config)
    }

    /// Names of the groups with committed offsets or live members, sorted.
    pub fn list_groups(&self) -> Result<Vec<String>> {
        self.inner.groups.list()
    }

    /// Sets a group's committed offsets for partitions of `topic`, as Kafka's
    /// `kafka-consumer-groups --reset-offsets --execute` does: each `(partition, offset)` is
    /// written (backwards too), an offset past the partition's end as the end (see
    /// [`Consumer::commit`]); the group's other committed offsets stay. Durable and atomic, as
    /// every commit. Consumers of the group in this process that already hold a position keep
    /// it; the next consumer to take a partition starts from the new offset.
    ///
    /// # Examples
    ///
    /// ```
    /// use weir_log::{Log, LogOptions, Record, TopicConfig};
    ///
    /// # fn main() -> weir_log::Result<()> {
    /// let dir = tempfile::tempdir().expect("temp dir");
    /// let log = Log::open(dir.path(), LogOptions::default())?;
    /// let t = log.create_topic("t", TopicConfig::with_partitions(2))?;
    /// t.append(0, &[Record::new("a"), Record::new("b")])?;
    /// log.commit_offsets("g", "t", [(0, 2), (1, 0)])?;
    /// log.commit_offsets("g", "t", [(0, 0)])?; // back to the start of partition 0
    /// let committed: Vec<_> = log.describe_group("g")?.partitions.iter().map(|p| p.committed).collect();
    /// assert_eq!(committed, [Some(0), Some(0)]);
    /// log.delete_group("g")?;
    /// assert!(log.list_groups()?.is_empty());
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::InvalidName`] for a bad group name, [`Error::UnknownTopic`],
    /// [`Error::UnknownPartition`], [`Error::ReadOnly`], [`Error::Metadata`] for an unreadable
    /// group file, [`Error::Io`].
    pub fn commit_offsets(
        &self,
        group: &str,
        topic: &str,
        offsets: impl IntoIterator<Item = (u32, u64)>,
    ) -> Result<()> {
        self.writable("commit offsets")?;
        let t = self.topic(topic)?;
        let offsets = offsets
            .into_iter()
            .map(|(p, offset)| Ok((topic.to_owned(), p, offset.min(t.end_offset(p)?))))
            .collect::<Result<Vec<_>>>()?;
        let state = self.inner.groups.get(group)?;
        crate::group::lock(&state).commit(offsets)
    }

    /// Deletes a consumer group: its committed offsets (its file) are removed. Like Kafka, only
    /// a group without live members.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownGroup`], [`Error::GroupActive`] while consumers of this process are
    /// members, [`Error::ReadOnly`], [`Error::Io`].
    pub fn delete_group(&self, group: &str) -> Result<()> {
        self.writable("delete a group")?;
        self.inner.groups.delete(group)?;
        tracing::info!(group, "consumer group deleted");
        Ok(())
    }

    /// A group's members, committed offsets, end offsets and lag per partition.
    pub fn describe_group(&self, group: &str) -> Result<GroupDescription> {
        self.inner.groups.describe(
            group,
            |t| self.topic(t).ok().map(|t| t.partition_count()),
            |t, p| self.topic(t).ok().and_then(|t| t.end_offset(p).ok()),
        )
    }
}

impl Log {
    /// [`Error::ReadOnly`] for `op` if the log was opened read-only.
    pub(crate) fn writable(&self, op: &'static str) -> Result<()> {
        match self.inner.shared.read_only {
            true => Err(Error::ReadOnly { dir: self.dir().to_owned(), op }),
            false => Ok(()),
        }
    }
}

/// A [`Log`] that does not keep it open (held by the metrics collector).
pub(crate) struct WeakLog(Weak<LogInner>);

impl WeakLog {
    /// The log, unless every handle to it was dropped.
    pub(crate) fn upgrade(&self) -> Option<Log> {
        self.0.upgrade().map(|inner| Log { inner })
    }
}

/// Opens a topic's partitions. `committed` is `None` for a topic being created, else the highest
/// offset each partition's consumer groups committed (a missing partition directory of an
/// existing topic is recreated past it; see the `recovery` module).
fn open_topic(
    name: &str,
    dir: PathBuf,
    durability: Durability,
    committed: Option<&BTreeMap<(String, u32), u64>>,
) -> Result<(Topic, Vec<PartitionRecovery>)> {
    let config = read_topic_config(&dir)?;
    let notify = Arc::new(Notify::new());
    let mut partitions = Vec::with_capacity(config.partitions as usize);
    let mut reports = Vec::new();
    for p in 0..config.partitions {
        let origin = Origin { topic: name.to_owned(), partition: p };
        let existing = committed.map(|c| c.get(&(name.to_owned(), p)).copied().unwrap_or(0));
        let (partition, report) = Partition::open(
            dir.join(p.to_string()),
            origin,
            config.clone(),
            durability,
            notify.clone(),
            existing,
        )?;
        partitions.push(partition);
        reports.push(report);
    }
    Ok((Topic::new(name, dir, config, partitions, notify), reports))
}

/// A topic's configuration, from its `topic.json`.
fn read_topic_config(dir: &Path) -> Result<Arc<TopicConfig>> {
    let meta_path = dir.join(TOPIC_META);
    let bytes = std::fs::read(&meta_path).map_err(Error::io("read topic configuration", &meta_path))?;
    let config: TopicConfig = meta::from_json(&bytes, &meta_path)?;
    config.validate()?;
    Ok(Arc::new(config))
}

/// Opens a topic's partitions read-only (see [`Partition::open_read_only`]).
fn open_topic_read_only(name: &str, dir: PathBuf) -> Result<Topic> {
    let config = read_topic_config(&dir)?;
    let notify = Arc::new(Notify::new());
    let partitions = (0..config.partitions)
        .map(|p| {
            let origin = Origin { topic: name.to_owned(), partition: p };
            Partition::open_read_only(dir.join(p.to_string()), origin, config.clone(), notify.clone())
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Topic::new(name, dir, config, partitions, notify))
}

impl Shared {
    /// A read-only view's look at the directory: topics created since are opened (a topic still
    /// being created, or unreadable, is retried next time and listed as unavailable), topics
    /// deleted are dropped (handles to them fail), and every partition catches up.
    fn catch_up_topics(&self) -> Result<()> {
        let topics_dir = self.topics_dir();
        let mut present = Vec::new();
        for entry in std::fs::read_dir(&topics_dir).map_err(Error::io("list topics", &topics_dir))? {
            let entry = entry.map_err(Error::io("list topics", &topics_dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name::validate("topic", &name).is_ok() {
                present.push((name, entry.path()));
            }
        }
        let known = self.topics();
        for topic in &known {
            if !present.iter().any(|(name, _)| name == topic.name()) {
                self.topics.write().unwrap_or_else(PoisonError::into_inner).remove(topic.name());
                for p in &topic.inner().partitions {
                    p.mark_deleted();
                }
                topic.inner().notify.notify_waiters();
                continue;
            }
            for p in &topic.inner().partitions {
                if let Err(e) = p.catch_up() {
                    tracing::warn!(topic = topic.name(), partition = p.id(), error = %e, "reading the writer's new records failed");
                }
            }
        }
        let mut broken = BTreeMap::new();
        for (name, path) in present {
            if known.iter().any(|t| t.name() == name) {
                continue;
            }
            match open_topic_read_only(&name, path) {
                Ok(topic) => {
                    self.topics.write().unwrap_or_else(PoisonError::into_inner).insert(name, topic);
                }
                Err(e) => {
                    broken.insert(name, Arc::new(e));
                }
            }
        }
        *self.broken.write().unwrap_or_else(PoisonError::into_inner) = broken;
        Ok(())
    }
}

/// How often a read-only view looks for what the writer published.
const FOLLOW_EVERY: Duration = Duration::from_millis(100);

/// The thread of a read-only view: catches up every [`FOLLOW_EVERY`] until the log is dropped.
fn follow(shared: &Shared, stopped: &mpsc::Receiver<()>) {
    loop {
        match stopped.recv_timeout(FOLLOW_EVERY) {
            Err(RecvTimeoutError::Timeout) => {}
            Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
        }
        if let Err(e) = shared.catch_up_topics() {
            tracing::warn!(dir = %shared.dir.display(), error = %e, "following the log failed");
        }
    }
}

/// Takes the directory's lock: `flock` on the directory itself (the exclusion: a directory
/// cannot be deleted and recreated under a live owner without its contents going too), then on
/// `.lock`, the file older versions locked, which stays only for them and for operators to see.
fn lock_dir(dir: &Path) -> Result<(File, File)> {
    let locked = |file: &File, path: &Path| {
        file.try_lock().map_err(|e| match e {
            std::fs::TryLockError::WouldBlock => Error::Locked { dir: dir.to_owned(), pid: lock_owner(dir) },
            std::fs::TryLockError::Error(e) => Error::io("lock", path)(e),
        })
    };
    let dir_handle = File::open(dir).map_err(Error::io("open log directory", dir))?;
    locked(&dir_handle, dir)?;
    let lock_path = dir.join(".lock");
    let lock_file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(Error::io("open lock file", &lock_path))?;
    locked(&lock_file, &lock_path)?;
    // For the error another process gets (informational: the lock is the flock, not this).
    let pid = format!("{}\n", std::process::id());
    if let Err(e) = lock_file.set_len(0).and_then(|()| (&lock_file).write_all(pid.as_bytes())) {
        tracing::debug!(path = %lock_path.display(), error = %e, "could not write the pid into the lock file");
    }
    Ok((dir_handle, lock_file))
}

/// The process id the owner of `dir` wrote into `.lock`, if it can be read.
fn lock_owner(dir: &Path) -> Option<u32> {
    std::fs::read_to_string(dir.join(".lock")).ok()?.trim().parse().ok()
}

/// Writes a new topic's configuration and partition directories under `tmp`, durably.
fn build_topic(tmp: &Path, config: &TopicConfig) -> Result<()> {
    if tmp.exists() {
        std::fs::remove_dir_all(tmp).map_err(Error::io("remove leftovers", tmp))?;
    }
    fsutil::create_dir_all(tmp)?;
    meta::write_json(config, &tmp.join(TOPIC_META))?;
    for p in 0..config.partitions {
        let dir = tmp.join(p.to_string());
        std::fs::create_dir(&dir).map_err(Error::io("create partition directory", &dir))?;
    }
    fsutil::sync_dir(tmp)?;
    if let Some(parent) = tmp.parent() {
        fsutil::sync_dir(parent)?;
    }
    Ok(())
}

/// How often the maintenance thread records the partitions' durable end offsets.
const RECORD_END_EVERY: Duration = Duration::from_secs(5);

/// The maintenance thread: periodic `fdatasync` under `Durability::Interval`, periodic
/// retention, and every [`RECORD_END_EVERY`] the end offsets made durable (see the `recovery`
/// module). Exits when the log is dropped (the channel disconnects).
fn maintain(shared: &Shared, stopped: &mpsc::Receiver<()>) {
    let sync_every = match shared.options.durability {
        Durability::Interval(d) => Some(d),
        _ => None,
    };
    let retention_every = shared.options.retention_check_interval;
    let tick = sync_every.map_or(retention_every, |d| d.min(retention_every)).min(RECORD_END_EVERY);
    let (mut last_sync, mut last_retention, mut last_end) = (Instant::now(), Instant::now(), Instant::now());
    loop {
        match stopped.recv_timeout(tick) {
            Err(RecvTimeoutError::Timeout) => {}
            Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
        }
        if sync_every.is_some_and(|d| last_sync.elapsed() >= d) {
            last_sync = Instant::now();
            shared.flush_all();
        }
        if last_end.elapsed() >= RECORD_END_EVERY {
            last_end = Instant::now();
            shared.record_ends(false);
        }
        if last_retention.elapsed() >= retention_every {
            last_retention = Instant::now();
            if let Err(e) = shared.enforce_retention() {
                tracing::error!(error = %e, "retention failed");
            }
        }
    }
}

impl Drop for LogInner {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(handle) = self.maintenance.take() {
            let _ = handle.join();
        }
        if self.shared.read_only {
            return;
        }
        if matches!(self.shared.options.durability, Durability::Interval(_)) {
            self.shared.flush_all();
        }
        self.shared.record_ends(true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_topic_creation_that_fails_half_way_leaves_nothing_committed() {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = Log::open(dir.path(), LogOptions::default()).expect("open");
        // The partitions fail to open after the topic's directory was moved into place.
        let failing = |_: &str, dir: PathBuf, _: Durability| -> Result<(Topic, Vec<PartitionRecovery>)> {
            Err(Error::io("open partition", dir.join("300"))(std::io::Error::other("too many open files")))
        };
        let err = log.create_topic_with("t", TopicConfig::with_partitions(600), failing).unwrap_err();
        assert!(matches!(err, Error::Io { .. }), "{err}");
        assert!(log.topics().is_empty());
        assert!(!dir.path().join("topics/t").exists());
        drop(log);
        // The directory reopens, without the topic, and the name is free.
        let log = Log::open(dir.path(), LogOptions::default()).expect("reopen");
        assert!(log.topics().is_empty());
        log.create_topic("t", TopicConfig::with_partitions(600)).expect("create");
    }
}
