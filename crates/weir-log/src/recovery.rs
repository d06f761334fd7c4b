//! Recovery of one partition's segment files on open.
//!
//! The rules (the crate docs state them for users):
//!
//! 1. Only a torn tail of the partition's **last** segment is cut: damage there after which no
//!    intact batch follows in the file. That is what an interrupted write leaves.
//! 2. Damage anywhere else (in a sealed segment, or in the middle of the last one) is kept on
//!    disk and reported as a [`DamagedRange`]; every intact batch before and after it stays.
//! 3. Offsets no segment holds (a deleted or emptied segment, a segment cut short) are a
//!    [`DamagedRange`] too; the segments after them stay.
//! 4. A `.log` file that cannot belong where its name puts it — its first intact batch has
//!    another base offset, or its name lies inside the offsets of the segment before it — is a
//!    stray copy: it is moved to `quarantine/` in the partition directory (never read) and
//!    reported.
//! 5. A partition directory of an existing topic that is gone or holds no segment is recreated
//!    empty, starting at the highest offset any consumer group committed for it, so no offset a
//!    group has seen is handed out again; it is reported as recreated.
//!
//! Nothing here depends on anything but the bytes on disk (and the committed offsets), and the
//! only changes it makes (the cut of a torn tail, moving strays aside, recreating a partition)
//! leave bytes that recover to the same log: two opens of the same bytes give the same log.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::damage::DamagedRange;
use crate::error::{Error, Result};
use crate::fsutil;
use crate::partition::PartitionRecovery;
use crate::segment::{self, Origin, Recovered, Segment};

/// Where stray segment files are moved, inside the partition directory.
pub(crate) const QUARANTINE: &str = "quarantine";
/// The file recording the partition's log start offset once retention has deleted segments
/// (or the partition was recreated past offset 0): a decimal number. Absent means 0.
pub(crate) const LOG_START: &str = "log-start-offset";

/// A partition's segments after recovery, the damaged ranges reads must know about (non-empty
/// ones, by offset), and the report.
pub(crate) struct RecoveredPartition {
    pub(crate) segments: Vec<Arc<Segment>>,
    /// The log start offset: the first segment's base offset, or the recorded log start if a
    /// first segment went missing (its offsets are then a damaged range).
    pub(crate) start_offset: u64,
    pub(crate) damaged: Vec<DamagedRange>,
    pub(crate) report: PartitionRecovery,
}

/// Recovers the partition in `dir`. `existing` is `None` for a partition being created, else
/// the highest offset any consumer group committed for it (0 if none): the partition must
/// already exist, and is recreated at that offset if it does not.
pub(crate) fn recover(
    dir: &Path,
    origin: &Origin,
    index_interval: u64,
    existing: Option<u64>,
) -> Result<RecoveredPartition> {
    let missing_dir = existing.is_some() && !dir.exists();
    fsutil::create_dir_all(dir)?;
    let mut report = PartitionRecovery {
        topic: origin.topic.clone(),
        partition: origin.partition,
        truncated_bytes: 0,
        damaged: Vec::new(),
        quarantined: Vec::new(),
        recreated: false,
        end_offset: 0,
    };
    let mut bases = list_segments(dir)?;
    bases.sort_unstable();

    let mut kept: Vec<Recovered> = Vec::with_capacity(bases.len());
    for base in bases {
        let path = dir.join(segment::file_name(base, "log"));
        let misnamed = Segment::misnamed_first_batch(&path, base)?;
        let overlaps = kept.last().is_some_and(|prev| base < prev.segment.next_offset());
        let reason = match misnamed {
            Some(first) => format!("its first batch has offset {first}, not {base}"),
            _ if overlaps => "its offsets lie inside the previous segment's".to_owned(),
            _ => {
                kept.push(Segment::recover(dir, base, index_interval)?);
                continue;
            }
        };
        let moved = quarantine(dir, base)?;
        tracing::warn!(
            topic = %origin.topic, partition = origin.partition, file = %path.display(),
            moved_to = %moved.display(), reason, "stray segment file moved aside, not read"
        );
        report.quarantined.push(moved);
    }

    let mut changed = !report.quarantined.is_empty();
    if kept.is_empty() {
        let base = existing.unwrap_or(0);
        if let Some(floor) = existing {
            report.recreated = true;
            let what = if missing_dir { "directory is missing" } else { "directory holds no segment" };
            tracing::warn!(
                topic = %origin.topic, partition = origin.partition, dir = %dir.display(), start_offset = floor,
                "partition {what}: its records are lost; recreated empty, starting at the highest \
                 offset a consumer group committed so that no offset is handed out twice"
            );
        }
        let segment = Segment::create(dir, base)?;
        report.end_offset = base;
        if base > 0 {
            record_log_start(dir, base)?;
        }
        fsutil::sync_dir(dir)?;
        if let Some(parent) = dir.parent() {
            fsutil::sync_dir(parent)?;
        }
        let segments = vec![Arc::new(segment)];
        return Ok(RecoveredPartition { segments, start_offset: base, damaged: Vec::new(), report });
    }

    // A last segment without one intact batch, named past the end of the one before it, is not
    // a torn first write (the active segment starts where the previous one ends): it is a
    // stray, and cutting it would move the end offset to its name.
    if kept.len() >= 2
        && let [.., prev, last] = &kept[..]
        && last.segment.base_offset > prev.segment.next_offset()
        && last.segment.next_offset() == last.segment.base_offset
        && last.damage.first().is_some_and(|d| d.position == 0 && d.end_offset.is_none())
        && let Some(stray) = kept.pop()
    {
        let base = stray.segment.base_offset;
        drop(stray);
        let moved = quarantine(dir, base)?;
        tracing::warn!(
            topic = %origin.topic, partition = origin.partition, moved_to = %moved.display(),
            "stray segment file without an intact batch, named past the log's end, moved aside"
        );
        report.quarantined.push(moved);
        changed = true;
    }

    // A torn tail of the last segment: damage after which nothing intact follows.
    if let Some(last) = kept.last_mut()
        && last.damage.last().is_some_and(|d| d.end_offset.is_none())
        && let Some(torn) = last.damage.pop()
    {
        let cut = last.segment.cut_tail(torn.position)?;
        report.truncated_bytes = cut;
        changed = true;
        tracing::warn!(
            topic = %origin.topic, partition = origin.partition, segment = %last.segment.path.display(),
            position = torn.position, bytes = cut, reason = torn.reason,
            "recovery cut a torn tail off the last segment"
        );
    }

    // Offsets between the recorded log start and the first segment: a deleted first segment.
    let first_base = kept[0].segment.base_offset;
    let recorded = read_log_start(dir);
    if recorded < first_base {
        report.damaged.push(DamagedRange {
            topic: origin.topic.clone(),
            partition: origin.partition,
            offsets: recorded..first_base,
            path: dir.to_owned(),
            bytes: 0..0,
            reason: format!(
                "no segment holds these offsets: the log starts at {recorded}, but its first segment \
                 at {first_base} (a segment file is missing)"
            ),
        });
    }
    let start_offset = recorded.min(first_base);

    let next_bases: Vec<Option<u64>> =
        kept.iter().skip(1).map(|r| Some(r.segment.base_offset)).chain([None]).collect();
    let mut segments = Vec::with_capacity(kept.len());
    for (recovered, next_base) in kept.into_iter().zip(next_bases) {
        let Recovered { segment, damage } = recovered;
        let end = next_base.unwrap_or_else(|| segment.next_offset());
        let runs_to_end = damage.last().is_some_and(|d| d.end_offset.is_none());
        for d in damage {
            report.damaged.push(segment.damaged_range(origin, d, end));
        }
        if let Some(next_base) = next_base
            && !runs_to_end
            && segment.next_offset() < next_base
        {
            let (from, size) = (segment.next_offset(), segment.size());
            report.damaged.push(DamagedRange {
                topic: origin.topic.clone(),
                partition: origin.partition,
                offsets: from..next_base,
                path: segment.path.clone(),
                bytes: size..size,
                reason: format!(
                    "no segment holds these offsets: this segment ends at offset {from} and the next \
                     starts at {next_base} (a segment file is missing, empty or was cut short)"
                ),
            });
        }
        segments.push(Arc::new(segment));
    }
    for range in &report.damaged {
        tracing::warn!(
            topic = %origin.topic, partition = origin.partition, file = %range.path.display(),
            offsets = ?range.offsets, bytes = ?range.bytes, reason = range.reason,
            "records lost to damage on disk; reads stop there unless told to skip"
        );
    }
    if changed {
        fsutil::sync_dir(dir)?;
    }
    report.end_offset = segments.last().map_or(0, |s| s.next_offset());
    let damaged = report.damaged.iter().filter(|r| !r.offsets.is_empty()).cloned().collect();
    Ok(RecoveredPartition { segments, start_offset, damaged, report })
}

/// The recorded log start offset; 0 if none is recorded (or the record is unreadable, which
/// at worst reports offsets retention removed as lost: loud, never silent).
fn read_log_start(dir: &Path) -> u64 {
    let path = dir.join(LOG_START);
    match std::fs::read_to_string(&path) {
        Ok(text) => text.trim().parse().unwrap_or_else(|_| {
            tracing::warn!(file = %path.display(), "unreadable log start offset; assuming 0");
            0
        }),
        Err(_) => 0,
    }
}

/// Records the partition's log start offset, durably and atomically.
pub(crate) fn record_log_start(dir: &Path, offset: u64) -> Result<()> {
    fsutil::write_atomic(&dir.join(LOG_START), format!("{offset}\n").as_bytes())
}

/// Moves the segment file starting at `base` (by name) to `quarantine/`, under a name not taken
/// yet, and removes its index (a cache). Returns the new path.
fn quarantine(dir: &Path, base: u64) -> Result<PathBuf> {
    let from = dir.join(segment::file_name(base, "log"));
    let into = dir.join(QUARANTINE);
    fsutil::create_dir_all(&into)?;
    let name = segment::file_name(base, "log");
    let mut to = into.join(&name);
    for n in 1.. {
        if !to.exists() {
            break;
        }
        to = into.join(format!("{name}.{n}"));
    }
    std::fs::rename(&from, &to).map_err(Error::io("move stray segment to quarantine", &to))?;
    let index = dir.join(segment::file_name(base, "index"));
    match std::fs::remove_file(&index) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::io("remove index", &index)(e)),
        _ => Ok(to),
    }
}

/// Base offsets of the `.log` files in a partition directory; removes leftovers (index files
/// without a segment).
fn list_segments(dir: &Path) -> Result<Vec<u64>> {
    let mut bases = Vec::new();
    let mut indexes = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(Error::io("list partition", dir))? {
        let entry = entry.map_err(Error::io("list partition", dir))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        // Only names the log writes: a zero-padded base offset and an extension.
        let parsed = name
            .split_once('.')
            .and_then(|(stem, ext)| Some((stem.parse::<u64>().ok()?, ext)))
            .filter(|&(base, ext)| *name == segment::file_name(base, ext));
        match parsed {
            Some((base, "log")) => bases.push(base),
            Some((base, "index")) => indexes.push(base),
            _ if name == QUARANTINE || name == LOG_START => {}
            _ => {
                tracing::warn!(file = %entry.path().display(), "ignoring unexpected file in partition directory")
            }
        }
    }
    for base in indexes.into_iter().filter(|b| !bases.contains(b)) {
        let path = dir.join(segment::file_name(base, "index"));
        std::fs::remove_file(&path).map_err(Error::io("remove stray index", &path))?;
    }
    Ok(bases)
}
