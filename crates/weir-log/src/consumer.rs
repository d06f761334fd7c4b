//! Consumers: read topics in batches, alone or as members of a group.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

use crate::damage::{DamagePolicy, DamagedRange};
use crate::error::{Error, Result};
use crate::group::{GroupState, MemberId, lock};
use crate::log::Log;
use crate::record::StoredRecord;
use crate::topic::Topic;

/// Where a consumer starts in a partition for which its group has no committed offset (or whose
/// committed offset was removed by retention).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AutoOffsetReset {
    /// The earliest offset still stored.
    Earliest,
    /// The end: only records appended from now on.
    #[default]
    Latest,
    /// Fail with [`Error::OffsetOutOfRange`] instead.
    None,
}

/// Settings of a [`Consumer`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerConfig {
    /// The group; `None` consumes every partition of the topics alone, without committing.
    /// Default: `None`.
    pub group: Option<String>,
    /// The topics to read. Required.
    pub topics: Vec<String>,
    /// See [`AutoOffsetReset`]. Default: `Latest`, as in Kafka.
    pub auto_offset_reset: AutoOffsetReset,
    /// Soft limit on the bytes one poll returns (at least one batch is returned when any record
    /// is available). Default: 1 MiB.
    pub max_poll_bytes: usize,
    /// Read only these partitions of every topic (manual assignment, Kafka's `assign()`). Such a
    /// consumer does not join the group's membership; with a group it still starts from, and
    /// commits to, the group's offsets. Default: `None` (all partitions, or the group's share).
    pub partitions: Option<Vec<u32>>,
    /// What a poll does when it reaches records lost to damage on disk. Default:
    /// [`DamagePolicy::Fail`]: the poll returns the records before the damage, and the next
    /// fails with [`Error::Corrupt`] naming the lost range (the position stays there; `seek`
    /// past it to go on). With [`DamagePolicy::Skip`] the consumer steps over it, logs a
    /// warning and lists it in [`Consumer::skipped`].
    pub on_damage: DamagePolicy,
}

impl ConsumerConfig {
    /// A configuration reading `topic`, with the defaults.
    pub fn new(topic: impl Into<String>) -> Self {
        ConsumerConfig {
            group: None,
            topics: vec![topic.into()],
            auto_offset_reset: AutoOffsetReset::default(),
            max_poll_bytes: 1 << 20,
            partitions: None,
            on_damage: DamagePolicy::Fail,
        }
    }

    /// Sets [`ConsumerConfig::group`].
    pub fn group(mut self, group: impl Into<String>) -> Self {
        self.group = Some(group.into());
        self
    }

    /// Sets [`ConsumerConfig::partitions`].
    pub fn partitions(mut self, partitions: impl IntoIterator<Item = u32>) -> Self {
        self.partitions = Some(partitions.into_iter().collect());
        self
    }

    /// Sets [`ConsumerConfig::on_damage`].
    pub fn on_damage(mut self, policy: DamagePolicy) -> Self {
        self.on_damage = policy;
        self
    }

    /// Sets [`ConsumerConfig::auto_offset_reset`].
    pub fn auto_offset_reset(mut self, reset: AutoOffsetReset) -> Self {
        self.auto_offset_reset = reset;
        self
    }
}

/// Records of one partition returned by a poll, in offset order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumedBatch {
    /// The topic.
    pub topic: Arc<str>,
    /// The partition.
    pub partition: u32,
    /// The records.
    pub records: Vec<StoredRecord>,
}

struct Assigned {
    topic: Topic,
    partition: u32,
    position: u64,
}

/// Reads topics of a [`Log`] in batches. Created by [`Log::consumer`].
///
/// A consumer in a group owns a share of the partitions (see the [`group`](crate::group) module);
/// positions advance as records are returned and are saved by [`Consumer::commit`].
/// Dropping the consumer leaves the group, and the others take over its partitions from the
/// committed offsets.
pub struct Consumer {
    log: Log,
    config: ConsumerConfig,
    topics: Vec<Topic>,
    /// The group's state and, unless manually assigned, this consumer's membership.
    group: Option<(Arc<Mutex<GroupState>>, Option<MemberId>)>,
    generation: u64,
    assigned: Vec<Assigned>,
    next: usize,
    /// Damaged ranges stepped over under [`DamagePolicy::Skip`].
    skipped: Vec<DamagedRange>,
}

impl std::fmt::Debug for Consumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer").field("config", &self.config).finish_non_exhaustive()
    }
}

impl Consumer {
    pub(crate) fn new(log: Log, config: ConsumerConfig) -> Result<Consumer> {
        if config.topics.is_empty() {
            return Err(Error::InvalidConfig { field: "topics", reason: "no topic to consume".into() });
        }
        if config.max_poll_bytes == 0 {
            return Err(Error::InvalidConfig {
                field: "max_poll_bytes",
                reason: "must be greater than zero".into(),
            });
        }
        let topics = config.topics.iter().map(|t| log.topic(t)).collect::<Result<Vec<_>>>()?;
        for t in &topics {
            let n = t.partition_count();
            if let Some(&partition) = config.partitions.iter().flatten().find(|&&p| p >= n) {
                return Err(Error::UnknownPartition { topic: t.name().to_owned(), partition, partitions: n });
            }
        }
        let group = match &config.group {
            Some(g) if config.partitions.is_none() => {
                let member = log.groups().join(g, config.topics.clone())?;
                Some((log.groups().get(g)?, Some(member)))
            }
            Some(g) => Some((log.groups().get(g)?, None)),
            None => None,
        };
        let mut consumer = Consumer {
            log,
            config,
            topics,
            group,
            generation: 0,
            assigned: Vec::new(),
            next: 0,
            skipped: Vec::new(),
        };
        consumer.notify_topics();
        consumer.refresh_assignment()?;
        Ok(consumer)
    }

    /// Wakes every waiter on our topics (members of our group must see the new generation).
    fn notify_topics(&self) {
        for t in &self.topics {
            t.inner().notify.notify_waiters();
        }
    }

    /// Picks up a new assignment after a rebalance. A consumer outside a group's membership owns
    /// its configured partitions, or all of them.
    fn refresh_assignment(&mut self) -> Result<()> {
        let fixed = self.config.partitions.as_deref();
        let wanted: Vec<(usize, u32)> = match &self.group {
            Some((state, Some(member))) => {
                let s = lock(state);
                if s.generation() == self.generation {
                    return Ok(());
                }
                self.generation = s.generation();
                self.topics
                    .iter()
                    .enumerate()
                    .flat_map(|(i, t)| {
                        s.assigned(*member, t.name(), t.partition_count()).map(move |p| (i, p))
                    })
                    .collect()
            }
            _ if !self.assigned.is_empty() => return Ok(()),
            _ => self
                .topics
                .iter()
                .enumerate()
                .flat_map(|(i, t)| {
                    let n = t.partition_count();
                    (0..n).filter(move |p| fixed.is_none_or(|f| f.contains(p))).map(move |p| (i, p))
                })
                .collect(),
        };
        let mut assigned = Vec::with_capacity(wanted.len());
        for (i, partition) in wanted {
            let topic = &self.topics[i];
            let kept = self
                .assigned
                .iter()
                .find(|a| a.partition == partition && a.topic.name() == topic.name())
                .map(|a| a.position);
            let position = match kept {
                Some(p) => p,
                None => self.starting_position(topic, partition)?,
            };
            assigned.push(Assigned { topic: topic.clone(), partition, position });
        }
        self.assigned = assigned;
        self.next = 0;
        Ok(())
    }

    /// The committed offset if there is a usable one, else the reset policy's choice.
    fn starting_position(&self, topic: &Topic, partition: u32) -> Result<u64> {
        let committed = self.group.as_ref().and_then(|(s, _)| lock(s).committed(topic.name(), partition));
        let (start, end) = (topic.start_offset(partition)?, topic.end_offset(partition)?);
        match committed {
            Some(c) if (start..=end).contains(&c) => Ok(c),
            _ => self.reset(topic, partition, committed.unwrap_or(start)),
        }
    }

    fn reset(&self, topic: &Topic, partition: u32, offset: u64) -> Result<u64> {
        match self.config.auto_offset_reset {
            AutoOffsetReset::Earliest => topic.start_offset(partition),
            AutoOffsetReset::Latest => topic.end_offset(partition),
            AutoOffsetReset::None => Err(Error::OffsetOutOfRange {
                topic: topic.name().to_owned(),
                partition,
                offset,
                earliest: topic.start_offset(partition)?,
                latest: topic.end_offset(partition)?,
            }),
        }
    }

    /// The partitions this consumer owns now, as (topic, partition).
    pub fn assignment(&self) -> Vec<(String, u32)> {
        self.assigned.iter().map(|a| (a.topic.name().to_owned(), a.partition)).collect()
    }

    /// The next offset this consumer will read from a partition it owns.
    pub fn position(&self, topic: &str, partition: u32) -> Option<u64> {
        self.find(topic, partition).map(|a| a.position)
    }

    fn find(&self, topic: &str, partition: u32) -> Option<&Assigned> {
        self.assigned.iter().find(|a| a.partition == partition && a.topic.name() == topic)
    }

    /// Moves the position of an owned partition. The next poll reads from `offset`.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownPartition`] if this consumer does not own the partition.
    pub fn seek(&mut self, topic: &str, partition: u32, offset: u64) -> Result<()> {
        match self.assigned.iter_mut().find(|a| a.partition == partition && a.topic.name() == topic) {
            Some(a) => {
                a.position = offset;
                Ok(())
            }
            None => Err(Error::UnknownPartition {
                topic: topic.to_owned(),
                partition,
                partitions: self.log.topic(topic).map_or(0, |t| t.partition_count()),
            }),
        }
    }

    /// Moves every owned partition to its earliest offset.
    pub fn seek_to_beginning(&mut self) -> Result<()> {
        for a in &mut self.assigned {
            a.position = a.topic.start_offset(a.partition)?;
        }
        Ok(())
    }

    /// Moves every owned partition to its end.
    pub fn seek_to_end(&mut self) -> Result<()> {
        for a in &mut self.assigned {
            a.position = a.topic.end_offset(a.partition)?;
        }
        Ok(())
    }

    /// Moves every owned partition to its first record with a timestamp `>= timestamp_ms`
    /// (to its end if there is none).
    pub fn seek_to_timestamp(&mut self, timestamp_ms: i64) -> Result<()> {
        for a in &mut self.assigned {
            a.position = match a.topic.offset_for_timestamp(a.partition, timestamp_ms)? {
                Some(o) => o,
                None => a.topic.end_offset(a.partition)?,
            };
        }
        Ok(())
    }

    /// Returns what is available now without waiting: up to about
    /// [`ConsumerConfig::max_poll_bytes`], taking partitions in turn so none starves.
    ///
    /// # Errors
    ///
    /// [`Error::Corrupt`] and [`Error::Io`] from reading; [`Error::OffsetOutOfRange`] when a
    /// position fell below the log start and the reset policy is `None` (other policies reset
    /// and log a warning).
    pub fn poll_now(&mut self) -> Result<Vec<ConsumedBatch>> {
        self.refresh_assignment()?;
        let mut out = Vec::new();
        let mut budget = self.config.max_poll_bytes;
        let n = self.assigned.len();
        for k in 0..n {
            if budget == 0 {
                break;
            }
            let i = (self.next + k) % n;
            let mut records = Vec::new();
            let mut skipped = Vec::new();
            let skip = self.config.on_damage == DamagePolicy::Skip;
            let a = &self.assigned[i];
            let read = |a: &Assigned, records: &mut Vec<StoredRecord>, skipped: &mut Vec<DamagedRange>| {
                a.topic.read_with(a.partition, a.position, budget, records, skip.then_some(skipped))
            };
            match read(a, &mut records, &mut skipped) {
                Err(Error::OffsetOutOfRange { earliest, latest, offset, .. })
                    if self.config.auto_offset_reset != AutoOffsetReset::None =>
                {
                    let reset = self.reset(&a.topic, a.partition, offset)?;
                    tracing::warn!(
                        topic = a.topic.name(),
                        partition = a.partition,
                        offset,
                        earliest,
                        latest,
                        reset,
                        "consumer position out of range; reset"
                    );
                    self.assigned[i].position = reset;
                    read(&self.assigned[i], &mut records, &mut skipped)?;
                }
                other => other?,
            }
            let a = &mut self.assigned[i];
            if let Some(range) = skipped.last() {
                a.position = a.position.max(range.offsets.end);
            }
            self.skipped.append(&mut skipped);
            let Some(last) = records.last() else { continue };
            a.position = last.offset + 1;
            budget = budget.saturating_sub(records.iter().map(|r| r.value.len() + 32).sum());
            out.push(ConsumedBatch { topic: a.topic.name_arc(), partition: a.partition, records });
        }
        if n > 0 {
            self.next = (self.next + 1) % n;
        }
        Ok(out)
    }

    /// Waits up to `timeout` for records, then returns them as [`Consumer::poll_now`] does;
    /// empty if none arrived in time. Wakes as soon as an append publishes records (no polling
    /// loop) and picks up rebalances.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: positions only move when records are returned.
    pub async fn poll(&mut self, timeout: Duration) -> Result<Vec<ConsumedBatch>> {
        let deadline = crate::topic::deadline(timeout);
        let notifies: Vec<Arc<Notify>> = self.topics.iter().map(|t| t.inner().notify.clone()).collect();
        loop {
            let mut waits: Vec<_> = notifies.iter().map(|n| Box::pin(n.notified())).collect();
            for w in &mut waits {
                w.as_mut().enable();
            }
            let got = self.poll_now()?;
            if !got.is_empty() {
                return Ok(got);
            }
            if tokio::time::timeout_at(deadline, futures::future::select_all(waits)).await.is_err() {
                return Ok(Vec::new());
            }
        }
    }

    /// Saves this consumer's positions of its owned partitions as the group's committed offsets
    /// (durably: see the crate docs). A consumer without a group has nothing to commit.
    ///
    /// A position past a partition's end offset (after a [`Consumer::seek`] there) is committed
    /// as the end offset: recovery takes committed offsets as offsets the log handed out (see
    /// the crate docs, "Recovery"), and none past the end was.
    pub fn commit(&mut self) -> Result<()> {
        let Some((state, _)) = &self.group else { return Ok(()) };
        let mut offsets: Vec<(String, u32, u64)> = Vec::with_capacity(self.assigned.len());
        for a in &self.assigned {
            let end = a.topic.end_offset(a.partition)?;
            offsets.push((a.topic.name().to_owned(), a.partition, a.position.min(end)));
        }
        lock(state).commit(offsets)
    }

    /// Every damaged range this consumer stepped over under [`DamagePolicy::Skip`], in the order
    /// it met them: the records it did not deliver, by topic, partition and offsets.
    pub fn skipped(&self) -> &[DamagedRange] {
        &self.skipped
    }

    /// Per owned partition: (topic, partition, end offset − position).
    pub fn lag(&self) -> Vec<(String, u32, u64)> {
        self.assigned
            .iter()
            .map(|a| {
                let end = a.topic.end_offset(a.partition).unwrap_or(a.position);
                (a.topic.name().to_owned(), a.partition, end.saturating_sub(a.position))
            })
            .collect()
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        if let (Some((_, Some(member))), Some(group)) = (&self.group, &self.config.group) {
            self.log.groups().leave(group, *member);
            self.notify_topics();
        }
    }
}
