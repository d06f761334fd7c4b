//! Operator state in checkpoints: key groups, and the writer and reader operators use.
//!
//! # Key groups
//!
//! Keyed state is addressed by *key group*: `hash(key) mod KEY_GROUPS`, with the same
//! specified hash the exchange routes by ([`key_hash`](crate::key_hash): CRC-32C of the key's
//! postcard encoding, stable across builds and Rust releases). Subtask `i` of `n` owns the contiguous groups
//! `[ceil(i·G/n), ceil((i+1)·G/n))` (G = [`KEY_GROUPS`]), and the exchange sends a key to the
//! owner of its group, so a subtask's state is exactly the state of its groups. A checkpoint
//! stores each subtask's state group by group; restoring at another parallelism hands every
//! new subtask the groups it now owns, from whichever old subtasks wrote them (as Flink does).
//! `KEY_GROUPS` is also the highest parallelism a pipeline accepts.
//!
//! # Entries
//!
//! A group's bytes are `(key, value)` pairs encoded with postcard one after the other. An
//! operator may write several entries for one key (one per window). Operator-wide values (a
//! watermark) go to `meta`, one per subtask; a restored subtask sees the metas of every old
//! subtask.
//!
//! # Restore check
//!
//! [`StateReader::entries`] hashes every restored key again and fails, naming the operator and
//! the key group, if the key no longer belongs to the group it was saved in: state is never
//! handed to a subtask the exchange would not route its key to.

use std::collections::BTreeMap;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::format::PartSnapshot;
use crate::error::{Error, Result};
use crate::exchange::key_hash;

/// The number of key groups, and so the highest parallelism a pipeline accepts.
pub const KEY_GROUPS: u32 = 1024;

/// The key group of a key's hash ([`key_hash`](crate::key_hash) for typed keys): `hash mod
/// KEY_GROUPS`.
pub fn key_group(hash: u64) -> u16 {
    (hash % u64::from(KEY_GROUPS)) as u16
}

/// The subtask of `parallelism` that owns key group `group`.
pub(crate) fn subtask_of_group(group: u16, parallelism: usize) -> usize {
    usize::from(group) * parallelism / KEY_GROUPS as usize
}

/// The subtask of `parallelism` that handles keys with `hash`: the owner of the hash's key
/// group. Custom [`Partitioner`](crate::Partitioner)s route by it so their keyed state can be
/// checkpointed and rescaled.
pub fn subtask_for_hash(hash: u64, parallelism: usize) -> usize {
    subtask_of_group(key_group(hash), parallelism)
}

fn encode_error(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Checkpoint(format!("cannot encode {what}: {e}"))
}

/// Encodes a value for a checkpoint (postcard), e.g. a source position.
pub fn encode<V: Serialize>(value: &V) -> Result<Vec<u8>> {
    postcard::to_stdvec(value).map_err(|e| encode_error("a value", e))
}

/// Decodes what [`encode`] wrote.
pub fn decode<V: DeserializeOwned>(bytes: &[u8]) -> Result<V> {
    postcard::from_bytes(bytes).map_err(|e| Error::Checkpoint(format!("cannot decode a saved value: {e}")))
}

/// Where an operator writes its state when a checkpoint barrier passes it.
#[derive(Debug, Default)]
pub struct StateWriter {
    groups: BTreeMap<u16, Vec<u8>>,
    meta: Vec<u8>,
}

impl StateWriter {
    /// Saves `value` under `key` (in the key's group; several values per key are fine).
    pub fn put<K: Serialize, V: Serialize>(&mut self, key: &K, value: &V) -> Result<()> {
        let buf = self.groups.entry(key_group(key_hash(key))).or_default();
        postcard::to_io(&(key, value), buf).map_err(|e| encode_error("keyed state", e))?;
        Ok(())
    }

    /// Saves `value` in the key group of a key whose routing hash is `hash` (the hash a custom
    /// [`Partitioner`](crate::Partitioner) passed to [`subtask_for_hash`]); read back with
    /// [`StateReader::values`]. `put(key, value)` is `put_hashed(hash(key), &(key, value))`.
    pub fn put_hashed<V: Serialize>(&mut self, hash: u64, value: &V) -> Result<()> {
        let buf = self.groups.entry(key_group(hash)).or_default();
        postcard::to_io(value, buf).map_err(|e| encode_error("keyed state", e))?;
        Ok(())
    }

    /// Saves the operator-wide value of this subtask (replacing an earlier one).
    pub fn set_meta<V: Serialize>(&mut self, value: &V) -> Result<()> {
        self.meta = encode(value)?;
        Ok(())
    }

    pub(crate) fn into_part(self) -> PartSnapshot {
        PartSnapshot { keyed: self.groups.into_iter().collect(), meta: self.meta, ..PartSnapshot::default() }
    }
}

/// The state a restored operator subtask reads: its key groups' entries, from the checkpoint's
/// subtasks whatever their parallelism was.
#[derive(Debug, Clone, Copy)]
pub struct StateReader<'a> {
    parts: &'a [PartSnapshot],
    subtask: usize,
    parallelism: usize,
    /// The operator's uid, for errors.
    uid: &'a str,
}

impl<'a> StateReader<'a> {
    pub(crate) fn new(parts: &'a [PartSnapshot], subtask: usize, parallelism: usize, uid: &'a str) -> Self {
        StateReader { parts, subtask, parallelism, uid }
    }

    /// Every `(key, value)` saved in the key groups this subtask owns. An entry whose key no
    /// longer hashes to the key group it was saved in is an error naming the operator and the
    /// group (the state would otherwise sit on a subtask that never sees the key's records).
    pub fn entries<K: Serialize + DeserializeOwned + 'a, V: DeserializeOwned + 'a>(
        &self,
    ) -> impl Iterator<Item = Result<(K, V)>> + 'a {
        let uid = self.uid;
        self.grouped::<(K, V)>().map(move |entry| {
            let (group, (k, v)) = entry?;
            let now = key_group(key_hash(&k));
            if now != group {
                return Err(Error::Checkpoint(format!(
                    "operator `{uid}`: a key saved in key group {group} now hashes to key group {now} \
                     (was the key type changed?); the checkpoint cannot be restored into this pipeline"
                )));
            }
            Ok((k, v))
        })
    }

    /// Every value saved with [`StateWriter::put_hashed`] in the key groups this subtask owns.
    pub fn values<V: DeserializeOwned + 'a>(&self) -> impl Iterator<Item = Result<V>> + 'a {
        self.grouped::<V>().map(|entry| entry.map(|(_, v)| v))
    }

    /// Every value in the key groups this subtask owns, with its group.
    fn grouped<V: DeserializeOwned + 'a>(&self) -> impl Iterator<Item = Result<(u16, V)>> + 'a {
        let (subtask, parallelism, uid) = (self.subtask, self.parallelism, self.uid);
        self.parts
            .iter()
            .flat_map(|p| p.keyed.iter())
            .filter(move |(group, _)| subtask_of_group(*group, parallelism) == subtask)
            .flat_map(move |(group, bytes)| Entries {
                bytes,
                group: *group,
                uid,
                failed: false,
                _v: std::marker::PhantomData,
            })
    }

    /// The operator-wide values the old subtasks saved (one per subtask that saved one).
    pub fn metas<V: DeserializeOwned>(&self) -> Result<Vec<V>> {
        self.parts.iter().filter(|p| !p.meta.is_empty()).map(|p| decode(&p.meta)).collect()
    }
}

struct Entries<'a, V> {
    bytes: &'a [u8],
    group: u16,
    uid: &'a str,
    failed: bool,
    _v: std::marker::PhantomData<fn() -> V>,
}

impl<V: DeserializeOwned> Iterator for Entries<'_, V> {
    type Item = Result<(u16, V)>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.bytes.is_empty() || self.failed {
            return None;
        }
        match postcard::take_from_bytes::<V>(self.bytes) {
            Ok((kv, rest)) => {
                self.bytes = rest;
                Some(Ok((self.group, kv)))
            }
            Err(e) => {
                self.failed = true;
                Some(Err(Error::Checkpoint(format!(
                    "operator `{}`: key group {} does not decode as this operator's state (was the job \
                     changed?): {e}",
                    self.uid, self.group
                ))))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_are_split_contiguously_and_completely() {
        for n in [1, 2, 3, 4, 7, 1024] {
            let mut last = 0;
            for g in 0..KEY_GROUPS as u16 {
                let s = subtask_of_group(g, n);
                assert!(s < n && s >= last, "group {g} of {n}");
                last = s;
            }
            assert_eq!(last, n - 1);
        }
    }

    #[test]
    fn state_written_at_two_subtasks_is_read_back_at_one_three_and_four() {
        let mut parts = Vec::new();
        for subtask in 0..2 {
            let mut w = StateWriter::default();
            for key in 0..1000u32 {
                if subtask_for_hash(key_hash(&key), 2) == subtask {
                    w.put(&key, &(key * 2)).unwrap();
                    w.put(&key, &(key * 3)).unwrap();
                }
            }
            w.set_meta(&(subtask as i64)).unwrap();
            parts.push(w.into_part());
        }
        for n in [1, 3, 4] {
            let mut seen = Vec::new();
            for subtask in 0..n {
                let r = StateReader::new(&parts, subtask, n, "window-test");
                for kv in r.entries::<u32, u32>() {
                    let (k, v) = kv.unwrap();
                    assert_eq!(subtask_for_hash(key_hash(&k), n), subtask);
                    seen.push((k, v));
                }
                assert_eq!(r.metas::<i64>().unwrap(), vec![0, 1]);
            }
            seen.sort_unstable();
            let want: Vec<_> = (0..1000u32).flat_map(|k| [(k, k * 2), (k, k * 3)]).collect();
            assert_eq!(seen, want, "parallelism {n}");
        }
    }

    #[test]
    fn state_of_another_type_is_an_error_not_a_panic() {
        let mut w = StateWriter::default();
        w.put(&"key", &1u8).unwrap();
        let parts = [w.into_part()];
        let r = StateReader::new(&parts, 0, 1, "window-test");
        let got: Vec<_> = r.entries::<u64, String>().collect();
        assert!(got.iter().any(Result::is_err));
    }

    #[test]
    fn a_key_saved_in_another_key_group_is_refused_naming_the_operator() {
        // A key whose group differs from the group it is stored under: what a checkpoint of a
        // build with another hash, or of another key type, looks like.
        let key = 7u32;
        let wrong = (key_group(key_hash(&key)) + 1) % KEY_GROUPS as u16;
        let mut bytes = Vec::new();
        postcard::to_io(&(key, 1u8), &mut bytes).unwrap();
        let parts = [PartSnapshot { keyed: vec![(wrong, bytes)], ..PartSnapshot::default() }];
        let r = StateReader::new(&parts, 0, 1, "window-counts");
        let got: Vec<_> = r.entries::<u32, u8>().collect();
        let Some(Err(e)) = got.first() else { panic!("restored {got:?}") };
        let message = e.to_string();
        assert!(
            message.contains("window-counts") && message.contains(&format!("key group {wrong}")),
            "{message}"
        );
    }
}
