//! Consumer groups: durable committed offsets and in-process membership.
//!
//! Committed offsets of group `g` live in `groups/g.json`, replaced atomically on every commit
//! (temporary file, fsync, rename, fsync of the directory): after a crash the file holds either
//! the previous or the new commit, never a mix. The file carries a CRC-32C of its contents (the
//! `meta` module): one whose checksum does not match fails the group with [`Error::Metadata`],
//! so a flipped bit never moves a committed offset silently.
//!
//! Members of a group (consumers in this process) share the partitions of the topics they
//! subscribe to. Every join or leave starts a new generation; each member picks up its new
//! assignment on its next poll. The assignment is Kafka's range assignor: for each topic, the
//! subscribed members in join order each get a contiguous range of partitions. A partition that
//! moves to another member resumes from the group's committed offset, so records consumed but
//! not committed before a rebalance are delivered again (at-least-once, as in Kafka).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::fsutil;
use crate::meta;
use crate::name;

/// A member's identity within its group.
pub(crate) type MemberId = u64;

/// One partition of a group: where the group stands and how far behind it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GroupPartition {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: u32,
    /// The committed offset (the next offset the group will read), if any.
    pub committed: Option<u64>,
    /// The partition's end offset.
    pub end_offset: u64,
    /// `end_offset - committed`, if the group has committed.
    pub lag: Option<u64>,
    /// The member that owns the partition now, if one does.
    pub member: Option<u64>,
}

/// A group's members and partitions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GroupDescription {
    /// The group's name.
    pub group: String,
    /// Live members in this process.
    pub members: usize,
    /// The generation (bumped on every join and leave).
    pub generation: u64,
    /// Every partition the group has committed to or owns, by topic and partition.
    pub partitions: Vec<GroupPartition>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct OffsetsFile {
    version: u32,
    offsets: Vec<CommittedOffset>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CommittedOffset {
    topic: String,
    partition: u32,
    offset: u64,
}

#[derive(Debug, Default)]
pub(crate) struct GroupState {
    path: PathBuf,
    /// Read from a log opened read-only: never written, read anew on each use.
    read_only: bool,
    offsets: BTreeMap<(String, u32), u64>,
    /// Members in join order, with the topics each subscribes to.
    members: BTreeMap<MemberId, Vec<String>>,
    generation: u64,
}

impl GroupState {
    pub(crate) fn committed(&self, topic: &str, partition: u32) -> Option<u64> {
        self.offsets.get(&(topic.to_owned(), partition)).copied()
    }

    pub(crate) fn generation(&self) -> u64 {
        self.generation
    }

    /// The partitions of `topic` (with `partitions` partitions) that `member` owns.
    pub(crate) fn assigned(&self, member: MemberId, topic: &str, partitions: u32) -> std::ops::Range<u32> {
        let subscribed: Vec<MemberId> =
            self.members.iter().filter(|(_, t)| t.iter().any(|t| t == topic)).map(|(m, _)| *m).collect();
        let Some(k) = subscribed.iter().position(|m| *m == member) else { return 0..0 };
        range_assign(partitions, subscribed.len() as u32, k as u32)
    }

    fn owner(&self, topic: &str, partitions: u32, partition: u32) -> Option<MemberId> {
        self.members.keys().copied().find(|&m| self.assigned(m, topic, partitions).contains(&partition))
    }

    /// Records and persists committed offsets.
    pub(crate) fn commit(&mut self, offsets: impl IntoIterator<Item = (String, u32, u64)>) -> Result<()> {
        if self.read_only {
            return self.persist();
        }
        for (topic, partition, offset) in offsets {
            self.offsets.insert((topic, partition), offset);
        }
        self.persist()
    }

    fn persist(&self) -> Result<()> {
        if self.read_only {
            let dir = self.path.parent().and_then(Path::parent).unwrap_or(&self.path).to_owned();
            return Err(Error::ReadOnly { dir, op: "commit offsets" });
        }
        let file = OffsetsFile {
            version: 1,
            offsets: self
                .offsets
                .iter()
                .map(|((topic, partition), offset)| CommittedOffset {
                    topic: topic.clone(),
                    partition: *partition,
                    offset: *offset,
                })
                .collect(),
        };
        meta::write_json(&file, &self.path)
    }
}

/// Partition range `[start, end)` of member `k` of `members` under the range assignor: the first
/// `partitions % members` members get one extra partition.
pub(crate) fn range_assign(partitions: u32, members: u32, k: u32) -> std::ops::Range<u32> {
    if members == 0 || k >= members {
        return 0..0;
    }
    let per = partitions / members;
    let extra = partitions % members;
    let start = k * per + k.min(extra);
    let len = per + u32::from(k < extra);
    start..start + len
}

/// All groups of a log.
pub(crate) struct Groups {
    dir: PathBuf,
    groups: Mutex<HashMap<String, Arc<Mutex<GroupState>>>>,
    next_member: std::sync::atomic::AtomicU64,
    read_only: bool,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Groups {
    pub(crate) fn open(dir: PathBuf) -> Result<Groups> {
        fsutil::create_dir_all(&dir)?;
        Ok(Groups { dir, groups: Mutex::new(HashMap::new()), next_member: 1.into(), read_only: false })
    }

    /// The groups of a log opened read-only: committed offsets are read from their files on
    /// every use (the writer commits), and never written. The directory is not created.
    pub(crate) fn open_read_only(dir: PathBuf) -> Groups {
        Groups { dir, groups: Mutex::new(HashMap::new()), next_member: 1.into(), read_only: true }
    }

    /// The state of `group`, loading its committed offsets on first use; a new group if it has
    /// none.
    pub(crate) fn get(&self, group: &str) -> Result<Arc<Mutex<GroupState>>> {
        self.load(group, true)?.ok_or_else(|| Error::UnknownGroup(group.to_owned()))
    }

    /// The state of a group that has committed offsets or members, else [`Error::UnknownGroup`].
    pub(crate) fn existing(&self, group: &str) -> Result<Arc<Mutex<GroupState>>> {
        self.load(group, false)?.ok_or_else(|| Error::UnknownGroup(group.to_owned()))
    }

    fn load(&self, group: &str, create: bool) -> Result<Option<Arc<Mutex<GroupState>>>> {
        name::validate("group", group)?;
        let mut groups = lock(&self.groups);
        let path = self.dir.join(format!("{group}.json"));
        let cached = groups.get(group).cloned();
        if let Some(g) = &cached
            && !self.read_only
        {
            return Ok(Some(g.clone()));
        }
        let offsets = match std::fs::read(&path) {
            Ok(bytes) => {
                let file: OffsetsFile = meta::from_json(&bytes, &path)?;
                if file.version != 1 {
                    let reason = format!("unsupported version {}", file.version);
                    return Err(Error::Metadata { path, reason });
                }
                file.offsets.into_iter().map(|c| ((c.topic, c.partition), c.offset)).collect()
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !create && cached.is_none() => {
                return Ok(None);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(Error::io("read committed offsets", &path)(e)),
        };
        if let Some(g) = cached {
            // Read-only: the writer's latest commit.
            lock(&g).offsets = offsets;
            return Ok(Some(g));
        }
        let state = GroupState { path, read_only: self.read_only, offsets, ..GroupState::default() };
        let state = Arc::new(Mutex::new(state));
        groups.insert(group.to_owned(), state.clone());
        Ok(Some(state))
    }

    /// Adds a member subscribed to `topics`; starts a new generation.
    pub(crate) fn join(&self, group: &str, topics: Vec<String>) -> Result<MemberId> {
        let state = self.get(group)?;
        let id = self.next_member.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut s = lock(&state);
        s.members.insert(id, topics);
        s.generation += 1;
        Ok(id)
    }

    /// Removes a member; starts a new generation.
    pub(crate) fn leave(&self, group: &str, member: MemberId) {
        if let Some(state) = lock(&self.groups).get(group) {
            let mut s = lock(state);
            if s.members.remove(&member).is_some() {
                s.generation += 1;
            }
        }
    }

    /// Names of groups with committed offsets on disk or members in this process, sorted.
    pub(crate) fn list(&self) -> Result<Vec<String>> {
        let mut names: Vec<String> = lock(&self.groups)
            .iter()
            .filter(|(_, g)| {
                let g = lock(g);
                !g.members.is_empty() || !g.offsets.is_empty()
            })
            .map(|(name, _)| name.clone())
            .collect();
        let entries = match std::fs::read_dir(&self.dir) {
            Err(e) if self.read_only && e.kind() == std::io::ErrorKind::NotFound => return Ok(names),
            other => other.map_err(Error::io("list groups", &self.dir))?,
        };
        for entry in entries {
            let entry = entry.map_err(Error::io("list groups", &self.dir))?;
            let file = entry.file_name();
            if let Some(name) = file.to_str().and_then(|f| f.strip_suffix(".json"))
                && name::validate("group", name).is_ok()
            {
                names.push(name.to_owned());
            }
        }
        names.sort();
        names.dedup();
        Ok(names)
    }

    /// The highest offset any group committed, per (topic, partition), from the files on disk.
    /// A file that cannot be read is skipped with a warning (the group itself then fails with
    /// [`Error::Metadata`] when used).
    pub(crate) fn highest_committed(&self) -> Result<BTreeMap<(String, u32), u64>> {
        let mut highest = BTreeMap::new();
        for group in self.list()? {
            let state = match self.existing(&group) {
                Ok(state) => state,
                Err(e) => {
                    tracing::warn!(group, error = %e, "committed offsets unreadable; not used by recovery");
                    continue;
                }
            };
            for (key, &offset) in &lock(&state).offsets {
                let entry = highest.entry(key.clone()).or_insert(0);
                *entry = offset.max(*entry);
            }
        }
        Ok(highest)
    }

    /// Deletes a group without members: its offsets file and its state.
    pub(crate) fn delete(&self, group: &str) -> Result<()> {
        let state = self.existing(group)?;
        let mut groups = lock(&self.groups);
        let s = lock(&state);
        if !s.members.is_empty() {
            return Err(Error::GroupActive { group: group.to_owned(), members: s.members.len() });
        }
        match std::fs::remove_file(&s.path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(Error::io("delete committed offsets", &s.path)(e));
            }
            _ => {}
        }
        fsutil::sync_dir(&self.dir)?;
        drop(s);
        groups.remove(group);
        Ok(())
    }

    /// Forgets the committed offsets of a deleted topic in every group that has them.
    pub(crate) fn forget_topic(&self, topic: &str) -> Result<()> {
        for group in self.list()? {
            let state = self.existing(&group)?;
            let mut s = lock(&state);
            let before = s.offsets.len();
            s.offsets.retain(|(t, _), _| t != topic);
            if s.offsets.len() != before {
                s.persist()?;
            }
        }
        Ok(())
    }

    /// Describes a group: for each partition it committed to or owns, the committed offset, the
    /// end offset (from `end_offset`, `None` for a topic that no longer exists) and the lag.
    pub(crate) fn describe(
        &self,
        group: &str,
        partitions_of: impl Fn(&str) -> Option<u32>,
        end_offset: impl Fn(&str, u32) -> Option<u64>,
    ) -> Result<GroupDescription> {
        let state = self.existing(group)?;
        let s = lock(&state);
        let mut keys: Vec<(String, u32)> = s.offsets.keys().cloned().collect();
        let mut topics: Vec<&String> = s.members.values().flatten().collect();
        topics.sort();
        topics.dedup();
        for topic in topics {
            if let Some(n) = partitions_of(topic) {
                keys.extend((0..n).filter(|&p| s.owner(topic, n, p).is_some()).map(|p| (topic.clone(), p)));
            }
        }
        keys.sort();
        keys.dedup();
        let partitions = keys
            .into_iter()
            .filter_map(|(topic, partition)| {
                let end = end_offset(&topic, partition)?;
                let committed = s.committed(&topic, partition);
                let member = partitions_of(&topic).and_then(|n| s.owner(&topic, n, partition));
                Some(GroupPartition {
                    lag: committed.map(|c| end.saturating_sub(c)),
                    topic,
                    partition,
                    committed,
                    end_offset: end,
                    member,
                })
            })
            .collect();
        Ok(GroupDescription {
            group: group.to_owned(),
            members: s.members.len(),
            generation: s.generation,
            partitions,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_assignor_covers_every_partition_once() {
        for partitions in 0..20 {
            for members in 1..8 {
                let mut seen = vec![0; partitions as usize];
                for k in 0..members {
                    for p in range_assign(partitions, members, k) {
                        seen[p as usize] += 1;
                    }
                }
                assert!(seen.iter().all(|&n| n == 1), "{partitions} partitions, {members} members: {seen:?}");
            }
        }
        assert_eq!(range_assign(5, 2, 0), 0..3);
        assert_eq!(range_assign(5, 2, 1), 3..5);
        assert_eq!(range_assign(1, 2, 1), 1..1);
    }

    #[test]
    fn commits_survive_reopen_and_bad_files_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        {
            let groups = Groups::open(dir.path().to_owned()).unwrap();
            let g = groups.get("g").unwrap();
            lock(&g).commit([("t".to_owned(), 0, 5), ("t".to_owned(), 1, 7)]).unwrap();
        }
        let groups = Groups::open(dir.path().to_owned()).unwrap();
        let g = groups.get("g").unwrap();
        assert_eq!(lock(&g).committed("t", 1), Some(7));
        assert_eq!(groups.list().unwrap(), vec!["g".to_owned()]);

        std::fs::write(dir.path().join("bad.json"), b"{not json").unwrap();
        let err = groups.get("bad").unwrap_err();
        assert!(matches!(err, Error::Metadata { .. }), "{err}");
        assert!(matches!(groups.get("../x"), Err(Error::InvalidName { kind: "group", .. })));
        assert!(matches!(groups.existing("ghost"), Err(Error::UnknownGroup(_))));
        assert!(
            !groups.list().unwrap().contains(&"ghost".to_owned()),
            "looking a group up must not create it"
        );
    }
}
