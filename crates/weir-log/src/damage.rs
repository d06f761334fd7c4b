//! Records lost to damage on disk, and what reads do when they reach them.
//!
//! A [`DamagedRange`] is a run of offsets of one partition that no intact batch holds: a batch
//! that fails its checks in a segment (bit rot, a hole left by a power loss), the offsets between
//! a segment's last intact batch and the next segment's base offset (a segment cut short or
//! emptied), offsets no segment file holds at all (a deleted segment), or the end of the log
//! lost (segments ending below the end offset the partition recorded or a group committed). Recovery finds the
//! damage after each segment's last index entry when the log is opened and lists it in
//! [`Log::recovery`](crate::Log::recovery); reads find the rest when they reach it. Either way
//! the range is exact: its first offset is the first one lost, its end the first offset of the
//! next intact batch (found by scanning forward for a batch whose header, offsets and CRC-32C
//! all check out).
//!
//! Reads never skip a damaged range silently. By default ([`DamagePolicy::Fail`]) a read that
//! reaches one returns the intact records before it, and the next read, starting in the range,
//! fails with [`Error::Corrupt`] naming it. With [`DamagePolicy::Skip`]
//! the read steps over the range, logs a warning and reports what it skipped.

use std::ops::Range;
use std::path::PathBuf;

use crate::error::Error;
use crate::record::StoredRecord;

/// A run of offsets of a partition lost to damage on disk; see the [module docs](crate::damage).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct DamagedRange {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: u32,
    /// The offsets lost: `offsets.start` is the first, `offsets.end` the first intact one after.
    /// Empty when the damaged bytes held no records (garbage between two intact batches).
    pub offsets: Range<u64>,
    /// The segment file holding the damaged bytes, or the partition directory when no file
    /// holds the offsets (a missing segment).
    pub path: PathBuf,
    /// The damaged bytes in `path`: from the start of the first bad batch to the start of the
    /// next intact one (or the end of the file). Empty for a missing or short segment.
    pub bytes: Range<u64>,
    /// What was found wrong.
    pub reason: String,
}

impl DamagedRange {
    /// The number of records lost.
    pub fn records(&self) -> u64 {
        self.offsets.end.saturating_sub(self.offsets.start)
    }

    /// The error a read reaching this range returns.
    pub(crate) fn to_error(&self) -> Error {
        Error::Corrupt {
            topic: self.topic.clone(),
            partition: self.partition,
            offset: self.offsets.start,
            end_offset: self.offsets.end,
            path: self.path.clone(),
            position: self.bytes.start,
            end_position: self.bytes.end,
            reason: self.reason.clone(),
        }
    }
}

/// What a read does when it reaches a [`DamagedRange`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum DamagePolicy {
    /// Return the intact records before the range; a read starting in it fails with
    /// [`Error::Corrupt`] naming it. The default: nothing is skipped
    /// unless asked for.
    #[default]
    Fail,
    /// Step over the range (with a `tracing` warning) and report it as skipped.
    Skip,
}

/// What [`Topic::read_skipping_damage`](crate::Topic::read_skipping_damage) returns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SkippingRead {
    /// The intact records read, in offset order.
    pub records: Vec<StoredRecord>,
    /// The damaged ranges stepped over, in offset order.
    pub skipped: Vec<DamagedRange>,
}
