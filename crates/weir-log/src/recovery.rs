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
//!    empty, starting at the highest offset any consumer group committed for it or its recorded
//!    end offset, so no offset a group has seen is handed out again; it is reported as recreated.
//! 6. When the segments end below the offset the log is known to have reached — its recorded
//!    end offset (`end-offset`, written only with values already durable under the durability
//!    mode in force) or a consumer group's commit — the end of the log was lost (a deleted last
//!    segment, one cut at a batch boundary): the missing offsets are a [`DamagedRange`] and an
//!    empty segment named by the reached offset is created, where appends continue, so that no
//!    offset is handed out twice and the next open finds the same gap.
//!
//! 7. A damaged `log-start-offset` or `end-offset` (its checksum does not match) is logged and
//!    not used: the log start is then the first segment's base offset, and the end is checked
//!    only against the groups' commits. Nothing is deleted because of it.
//!
//! Nothing here depends on anything but the bytes on disk (and the committed offsets), and the
//! only changes it makes (the cut of a torn tail, moving strays aside, recreating a partition)
//! leave bytes that recover to the same log: two opens of the same bytes give the same log.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::damage::DamagedRange;
use crate::error::{Error, Result};
use crate::partition::PartitionRecovery;
use crate::segment::{self, Origin, Recovered, Segment};
use crate::{fsutil, meta};

/// Where stray segment files are moved, inside the partition directory.
pub(crate) const QUARANTINE: &str = "quarantine";
/// The file recording the partition's log start offset once retention has deleted segments
/// (or the partition was recreated past offset 0): a checksummed decimal number (the `meta`
/// module). Absent means 0.
pub(crate) const LOG_START: &str = "log-start-offset";
/// The file recording an offset the partition's log is known to have reached durably (its end
/// offset at a roll, a periodic flush or a clean close): a checksummed decimal number (the
/// `meta` module). Absent means 0.
pub(crate) const END_OFFSET: &str = "end-offset";

/// A partition's segments after recovery, the damaged ranges reads must know about (non-empty
/// ones, by offset), and the report.
pub(crate) struct RecoveredPartition {
    pub(crate) segments: Vec<Arc<Segment>>,
    /// The log start offset: the first segment's base offset, or the recorded log start if a
    /// first segment went missing (its offsets are then a damaged range).
    pub(crate) start_offset: u64,
    pub(crate) damaged: Vec<DamagedRange>,
    pub(crate) report: PartitionRecovery,
    /// The end offset recorded in [`END_OFFSET`] (0 if none).
    pub(crate) recorded_end: u64,
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
    let recorded_end = read_offset(dir, END_OFFSET, "end offset").unwrap_or(0);
    if kept.is_empty() {
        let base = existing.unwrap_or(0).max(recorded_end);
        if let Some(floor) = existing {
            report.recreated = true;
            let what = if missing_dir { "directory is missing" } else { "directory holds no segment" };
            tracing::warn!(
                topic = %origin.topic, partition = origin.partition, dir = %dir.display(), start_offset = floor,
                "partition {what}: its records are lost; recreated empty, starting at the highest \
                 offset a consumer group committed or the recorded end offset, so that no offset is \
                 handed out twice"
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
        return Ok(RecoveredPartition {
            segments,
            start_offset: base,
            damaged: Vec::new(),
            report,
            recorded_end,
        });
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

    // The end of the log lost: the segments end below the offset the log had durably reached
    // or a group committed. Appends continue there, in a new (empty) last segment; the offsets
    // between are reported below as a gap before it.
    let reached = recorded_end.max(existing.unwrap_or(0));
    let end = kept.last().map_or(0, |r| r.segment.next_offset());
    let mut end_lost = None;
    if end < reached {
        tracing::warn!(
            topic = %origin.topic, partition = origin.partition, end, reached,
            "the end of the log was lost: its segments end below the offset it had reached; \
             appends continue past it so that no offset is handed out twice"
        );
        kept.push(Recovered { segment: Segment::create(dir, reached)?, damage: Vec::new() });
        changed = true;
    }
    if kept.len() >= 2 && kept.last().is_some_and(|r| r.segment.is_empty()) {
        end_lost = kept.last().map(|r| r.segment.base_offset);
    }

    // Offsets between the recorded log start and the first segment: a deleted first segment.
    let first_base = kept[0].segment.base_offset;
    let recorded = read_offset(dir, LOG_START, "log start offset").unwrap_or(first_base);
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
            let reason = if end_lost == Some(next_base) {
                format!(
                    "end of the log lost: the log had reached offset {next_base} (its recorded end \
                     offset or a consumer group's commit), but its segments end at {from} (a last \
                     segment was deleted or cut short); appends continue at {next_base}"
                )
            } else {
                format!(
                    "no segment holds these offsets: this segment ends at offset {from} and the next \
                     starts at {next_base} (a segment file is missing, empty or was cut short)"
                )
            };
            report.damaged.push(DamagedRange {
                topic: origin.topic.clone(),
                partition: origin.partition,
                offsets: from..next_base,
                path: segment.path.clone(),
                bytes: size..size,
                reason,
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
    Ok(RecoveredPartition { segments, start_offset, damaged, report, recorded_end })
}

/// The offset recorded in the file `name` of `dir` (0 if there is none), or `None` if the file
/// is damaged: its checksum does not match, or it does not parse. A damaged record is logged and
/// not used: recovery then goes by what the segments say (for the log start, the first segment;
/// for the end offset, the segments' end and the groups' commits), and never deletes anything
/// because of it. The file is rewritten, with a checksum, the next time the offset is recorded.
fn read_offset(dir: &Path, name: &str, what: &str) -> Option<u64> {
    let path = dir.join(name);
    match std::fs::read(&path) {
        Ok(bytes) => {
            let offset = std::str::from_utf8(&bytes).ok().and_then(meta::parse_offset);
            if offset.is_none() {
                tracing::warn!(
                    file = %path.display(),
                    "damaged {what} record (checksum mismatch or unparseable); not used, going by the segments"
                );
            }
            offset
        }
        Err(_) => Some(0),
    }
}

/// Records an offset the partition's log has durably reached, atomically and durably.
pub(crate) fn record_end(dir: &Path, offset: u64) -> Result<()> {
    meta::write_offset(&dir.join(END_OFFSET), offset)
}

/// Records the partition's log start offset, durably and atomically.
pub(crate) fn record_log_start(dir: &Path, offset: u64) -> Result<()> {
    meta::write_offset(&dir.join(LOG_START), offset)
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
    let (bases, indexes) = list_files(dir, true)?;
    for base in indexes.into_iter().filter(|b| !bases.contains(b)) {
        let path = dir.join(segment::file_name(base, "index"));
        std::fs::remove_file(&path).map_err(Error::io("remove stray index", &path))?;
    }
    Ok(bases)
}

/// Base offsets of the `.log` and `.index` files in a partition directory, warning about other
/// files if `warn`.
fn list_files(dir: &Path, warn: bool) -> Result<(Vec<u64>, Vec<u64>)> {
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
            _ if [QUARANTINE, LOG_START, END_OFFSET].contains(&&*name) => {}
            _ if warn => {
                tracing::warn!(file = %entry.path().display(), "ignoring unexpected file in partition directory")
            }
            _ => {}
        }
    }
    Ok((bases, indexes))
}

/// Brings a reader's view of a partition another process writes up to date with its files,
/// without writing anything (see the crate docs, "Readers beside a writer"):
///
/// - segments whose files retention deleted are dropped from the front of `segments`;
/// - the last known segment is read on from where the view ended: sealed if a later segment
///   exists (its damage is damage), else only up to the first batch not complete yet;
/// - later segment files are added in offset order, each read whole; the last one's incomplete
///   tail (a write in progress, or torn) is not visible. A file named inside the offsets of the
///   segment before it (a stray copy recovery would move aside) is not read.
///
/// Returns the damaged ranges found. An empty `segments` is filled from the directory.
pub(crate) fn catch_up(
    dir: &Path,
    origin: &Origin,
    index_interval: u64,
    segments: &mut Vec<Arc<Segment>>,
) -> Result<Vec<DamagedRange>> {
    let (mut bases, _) = list_files(dir, false)?;
    bases.sort_unstable();
    let gone = segments.iter().take_while(|s| bases.binary_search(&s.base_offset).is_err()).count();
    segments.drain(..gone.min(segments.len().saturating_sub(1)));
    if segments.len() == 1 && bases.binary_search(&segments[0].base_offset).is_err() {
        // Every file this view knew is gone: start over from what is there.
        segments.clear();
    }
    let known = segments.last().map(|s| s.base_offset);
    let new: Vec<u64> = bases.into_iter().filter(|&b| known.is_none_or(|k| b > k)).collect();
    let mut damaged = Vec::new();
    if let Some(last) = segments.last() {
        let end = new.first().copied().unwrap_or(u64::MAX);
        for d in last.catch_up(index_interval, !new.is_empty())? {
            damaged.push(last.damaged_range(origin, d, end));
        }
    }
    for (i, &base) in new.iter().enumerate() {
        if segments.last().is_some_and(|prev| base < prev.next_offset()) {
            continue;
        }
        let Recovered { segment, mut damage } = match Segment::open_read_only(dir, base, index_interval) {
            Ok(r) => r,
            // Deleted by retention since it was listed.
            Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        let next_base = new.get(i + 1).copied();
        if next_base.is_none()
            && let Some(torn) = damage.pop_if(|d| d.end_offset.is_none())
        {
            segment.hide_from(torn.position);
        }
        let end = next_base.unwrap_or_else(|| segment.next_offset());
        for d in damage {
            damaged.push(segment.damaged_range(origin, d, end));
        }
        segments.push(Arc::new(segment));
    }
    Ok(damaged)
}
