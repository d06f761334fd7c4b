//! `weir-log`: Weir's embedded, persistent, partitioned log.
//!
//! A [`Log`] opened on a directory holds topics; a topic has N partitions; a partition is an
//! append-only sequence of records numbered by dense offsets `0, 1, 2, …`. Producers append
//! batches; consumers read batches from an offset or a timestamp, wait for new data, and, as
//! members of a consumer group, share partitions and commit their positions. Retention deletes
//! old segments by size and age. It is Kafka's log, embedded: no broker, no network, one
//! directory.
//!
//! ```text
//!   Topic::append / send ──► Partition (one writer) ──► active segment ──► page cache ──► disk
//!                                  │  roll by size/age          ▲ fdatasync: None / Interval / EveryBatch
//!                                  ▼                            │
//!                     sealed segments … (retention deletes the oldest)
//!   Consumer::poll ◄── reads by offset (index) or timestamp (time column of the index), lock-free
//! ```
//!
//! # On-disk format
//!
//! ```text
//! <dir>/                                   locked (flock on the directory): one process at a time
//! <dir>/.lock                              the owner's process id; also locked (older versions locked only it)
//! <dir>/topics/<topic>/topic.json          the TopicConfig (JSON, CRC-32C), written atomically at creation
//! <dir>/topics/<topic>/<partition>/
//!     00000000000000000000.log             segment: batches back to back; name = base offset
//!     00000000000000000000.index           sparse offset + time index of that segment
//!     00000000000000081920.log             next segment: base offset = previous end offset
//!     log-start-offset                     the log start once retention deleted segments (CRC-32C)
//!     end-offset                           an end offset the log durably reached (CRC-32C; see Recovery)
//!     quarantine/                          stray segment files moved aside by recovery; never read
//! <dir>/groups/<group>.json                committed offsets of a consumer group (JSON, CRC-32C)
//! <dir>/tmp/, <dir>/trash/                 topic creation and deletion in progress
//! ```
//!
//! A segment is a sequence of record batches. A batch has a 38-byte header — base offset,
//! length, CRC-32C, format version, record count, first and max timestamp — followed by its
//! records, each varint-delta encoded against the batch header (the shape of Kafka's RecordBatch
//! v2; the exact layout is in the `batch` module). The CRC covers every byte of the batch but
//! the CRC field itself, base offset included. All integers are little-endian.
//!
//! The index (the `index` module) has one 20-byte entry per ~4 KiB of segment: relative offset,
//! byte position, the largest timestamp of everything before that position, and a CRC, so one
//! file answers both "where is offset o" and "where can a scan for time t start".
//!
//! The metadata files carry a CRC-32C too (the `meta` module):
//!
//! - `topic.json` and `groups/<group>.json` are pretty-printed JSON objects with one more
//!   member, `"crc32c"`: the CRC-32C (a number) of the object without that member in canonical
//!   form (compact, members sorted by name at every level). A group file is
//!   `{"version": 1, "offsets": [{"topic", "partition", "offset"}, …], "crc32c"}`; `topic.json`
//!   is the [`TopicConfig`]'s fields and `"crc32c"`.
//! - `log-start-offset` and `end-offset` are one line: `<offset> crc32c=<hex>`, the CRC-32C of
//!   the decimal digits as 8 lowercase hex digits, e.g. `230 crc32c=faa78442`.
//!
//! Files without a checksum (a JSON object without `"crc32c"`, a bare decimal number: the format
//! before checksums) are read as they are and get one the next time they are written. A file
//! whose checksum does not match is treated as unreadable (see below): a flipped bit never
//! silently moves a committed offset, the log start or end, or changes a topic's configuration.
//! All metadata files are replaced atomically (temporary file, fsync, rename, fsync of the
//! directory).
//!
//! # Invariants
//!
//! 1. Offsets are dense: in a partition, every batch starts at the offset where the previous one
//!    ended, across segments too; a segment file is named by its first offset.
//! 2. A batch is written whole by one positional write and published to readers only after the
//!    write completed (under `EveryBatch`: after `fdatasync`). Readers never see a partial batch.
//! 3. Only the last (active) segment is written to; the others are sealed and immutable until
//!    retention deletes them whole. Retention never deletes the active segment.
//! 4. Indexes are caches, never the truth: each is checked against its segment on open, cut back,
//!    and extended or rebuilt from the segment's batches.
//! 5. Names of topics and groups are validated (Kafka's rule) before they touch a path.
//!
//! # Exclusion and file handles
//!
//! [`Log::open`] takes an OS lock (`flock`) on the log directory itself and holds it until the
//! last handle is dropped; a second open, from this process or another, fails with
//! [`Error::Locked`]. Deleting `.lock` releases nothing: the lock lives on the directory's open
//! handle, not on a name that can be unlinked. (`.lock` is locked too, for older versions that
//! locked only it.)
//!
//! The owner writes its process id into `.lock`; [`Error::Locked`] names it.
//!
//! # Readers beside a writer
//!
//! [`Log::open_read_only`] opens a directory another process (or another `Log`) owns, to list and
//! describe topics and groups and to consume, without taking the lock. A read-only log:
//!
//! - never writes, creates, truncates, moves or deletes a file, and runs no recovery: files
//!   (segments and indexes) are opened read-only; index entries it lacks are kept in memory;
//! - sees, per partition, a prefix of the log: the complete batches (checked: header, offset
//!   sequence, CRC-32C) that the writer has written to its segment files. A batch being written,
//!   or a torn tail a crash left, is simply not visible yet; nothing is cut. (It reads what the
//!   writer wrote, not only what it synced: under `Durability::EveryBatch` a record can be seen
//!   shortly before its append returns, and one a power loss then takes is one the writer never
//!   acknowledged.)
//! - follows the writer: every 100 ms (or at [`Log::catch_up`]) it reads the batches appended
//!   since, opens segments the writer rolled to (the one left behind is sealed, so damage in it
//!   is damage, as for the writer), drops segments retention deleted (the log start moves; a
//!   position in them gets [`Error::OffsetOutOfRange`], which consumers reset), opens topics
//!   created and drops topics deleted; consumers and [`Topic::wait_for`] wake when records
//!   appear;
//! - reads consumer groups' committed offsets from their files on each use, so
//!   [`Log::describe_group`] shows the writer's latest commit, and refuses changes (appends,
//!   topic creation and deletion, commits) with [`Error::ReadOnly`].
//!
//! A topic still being created, or whose files cannot be read, is listed by
//! [`Log::unavailable_topics`] and tried again at the next look. A topic's configuration is read
//! when the view opens it: retention changed since ([`Log::set_topic_retention`]) shows after a
//! reopen. If the writer restarts and its recovery changes files (it only cuts what no reader
//! saw, or moves strays aside), reopen.
//!
//! Segment files are opened when used and cached: the process keeps at most a quarter of its
//! `ulimit -n` (16 to 4096) segment files open, closing the least recently used when it needs
//! another, after syncing any unsynced writes (a failure of that sync is reported by the
//! partition's next sync, which poisons it). Index files are opened only to be read on open or
//! written. So a log of 10 000 partitions opens, appends and reads under the default
//! `ulimit -n 1024`. Topic creation is atomic: the topic is built under `tmp/`, committed by one
//! rename, and undone if it then fails to open. A topic that cannot be opened (say, an
//! unreadable `topic.json`) does not stop the log from opening: it is listed by
//! [`Log::unavailable_topics`], fails with [`Error::TopicUnavailable`], and can be deleted.
//!
//! # Recovery
//!
//! A torn tail exists only at the end of a partition's **last** segment: it is what a write
//! interrupted by a crash leaves. Anything else wrong on disk is damage, and recovery never
//! deletes intact data to get rid of it. On open, per partition, in offset order:
//!
//! 1. Segment files are listed by name. A file whose first intact batch has another base
//!    offset than its name, or whose name lies inside the offsets of the segment before it, or a
//!    last file without a single intact batch named past the previous segment's end, is a stray
//!    copy: it is moved to `quarantine/` (never read), logged and listed.
//! 2. In each segment, index entries are checked from the last one backwards until one points at
//!    a batch header with the expected offset; from there every batch to the end of the file is
//!    verified: header shape, offset sequence, CRC-32C. A batch that fails starts a damaged range;
//!    the scan resynchronises at the next intact batch (the one the damaged header's length
//!    points at if it checks out, else the first position where a header with plausible offsets
//!    and a matching CRC-32C starts) and goes on. The range ends there, or at the end of the file
//!    if nothing intact follows.
//! 3. Damage that runs to the end of the last segment is the torn tail: the file is cut there,
//!    the index cut back, the cut fsynced. This is the only cut. Appends continue at the end of
//!    the last intact batch.
//! 4. Every other damaged range is kept on disk and becomes a [`DamagedRange`]: the file, the
//!    byte range, the offsets lost (up to the next intact batch, or to the next segment's base
//!    offset). So is every run of offsets no segment holds: a segment that ends short of the
//!    next one's base offset (cut at a batch boundary, emptied), a missing middle segment, and a
//!    missing first segment (offsets between the recorded `log-start-offset`, 0 if none, and the
//!    first segment). Every intact batch before and after stays readable.
//! 5. A partition directory of an existing topic that is missing or holds no segment is
//!    recreated empty, starting at the highest offset any consumer group committed for it or its
//!    recorded `end-offset` (its records are lost; no offset handed out is handed out again) and
//!    recorded as its log start.
//! 6. Each partition records in `end-offset` (written atomically) an end offset it has reached
//!    durably: at every roll once the sealed segment is synced, every 5 seconds from the
//!    background thread (the end made durable by the last `fdatasync`) and on a clean close
//!    (after the final sync; under [`Durability::None`], which never syncs on its own, the end
//!    written). Never per append. If the segments end below the higher of it and the highest
//!    offset a consumer group committed for the partition, the end of the log was lost (a last
//!    segment deleted, or cut at a batch boundary): the missing offsets are a [`DamagedRange`]
//!    ("end of the log lost") and an empty segment named by that offset is created, where
//!    appends continue, so no offset is handed out twice. Under `EveryBatch` the recorded value
//!    never runs ahead of synced data, so a torn tail of a batch that was never acknowledged is
//!    never reported as a loss. (A group commit of a position past the end is committed as the
//!    end: it names no record.)
//!
//! Everything found is logged as a `tracing` warning and listed by [`Log::recovery`] (damaged
//! ranges on every open while they are on disk). Recovery is idempotent: it depends only on the
//! bytes on disk, the recorded offsets and the committed offsets, and its changes (the cut,
//! moving strays aside, recreating a partition, a segment past a lost end) leave bytes that
//! recover to the same log, so two opens give the same end offsets and the same reads, and an
//! offset once handed out is not handed out again — except the offsets of a torn tail cut from
//! the last segment, and under `Interval` or `None` the end of the log written since the last
//! record of `end-offset` (and not committed by a group) if it is lost or cut by hand.
//!
//! Damage before a segment's last index entry is not looked for on open (that would read every
//! segment); reads find it and treat it the same way, logging it once.
//!
//! Reads never return a damaged record and never skip one silently. A read that reaches a
//! damaged range returns the intact records before it; a read starting inside it fails with
//! [`Error::Corrupt`] naming the offsets, file and bytes lost. With [`DamagePolicy::Skip`]
//! ([`Topic::read_skipping_damage`], [`ConsumerConfig::on_damage`]) reads step over it, log a
//! warning and report what they skipped. A lookup by timestamp that meets damage fails with
//! [`Error::Corrupt`].
//!
//! A damaged `topic.json` makes that topic unavailable (listed by [`Log::unavailable_topics`],
//! [`Error::TopicUnavailable`] naming the file; it can be deleted) while the log and the other
//! topics open and work; no data is touched. A damaged group offsets file fails that group with
//! [`Error::Metadata`] naming the file, and nothing else (recovery does not use its offsets). A
//! damaged `log-start-offset` or `end-offset` is logged and not used: the log starts at its
//! first segment, and its end is checked only against the groups' commits; nothing is deleted.
//! "Damaged" includes a checksum that does not match.

//! # Durability
//!
//! See [`Durability`] for what each mode survives. Under `EveryBatch`, concurrent appenders to a
//! partition share one `fdatasync` (group commit: whoever finds no sync in flight syncs everything
//! written so far, the others wait for it), and a rolled segment is synced, with its directory
//! entry, before the next segment takes writes. Under `Interval`, a roll syncs nothing; the next
//! background flush syncs the segments sealed since the last one, the directory and the active
//! segment. Committed group offsets are always written durably and atomically.
//!
//! # Metrics
//!
//! [`Log::register_metrics`] exports the log to a `weir_metrics::Metrics` registry: appended
//! records and bytes, append and `fdatasync` durations, recovery truncations, and, computed when
//! the registry is scraped, each partition's offsets, segments and size and each consumer group's
//! committed offsets and lag. Until it is called, the append path pays one atomic load per call.
//!
//! # Concurrency
//!
//! [`Log`], [`Topic`] are cheap-to-clone handles, `Send + Sync`. Appends to one partition are
//! serialized by its writer lock; appends to different partitions run in parallel; reads take
//! no lock held during I/O (see the `partition` module). Async waiting for new data uses tokio's
//! `Notify` and needs a tokio runtime; everything else is plain blocking code.

mod batch;
mod config;
pub mod consumer;
pub mod damage;
mod error;
#[doc(hidden)]
pub mod fault;
pub mod fs;
mod fsutil;
pub mod group;
mod handles;
mod index;
mod log;
mod meta;
mod metrics;
mod name;
mod partition;
mod partitioner;
mod record;
mod recovery;
mod segment;
mod topic;

pub use config::{
    Durability, LogOptions, MAX_MS, MAX_RETENTION_CHECK_INTERVAL, MAX_SYNC_INTERVAL, TimestampType,
    TopicConfig,
};
pub use consumer::{AutoOffsetReset, ConsumedBatch, Consumer, ConsumerConfig};
pub use damage::{DamagePolicy, DamagedRange, SkippingRead};
pub use error::{Error, Result};
pub use group::{GroupDescription, GroupPartition};
pub use log::Log;
pub use name::MAX_NAME_LEN;
pub use partition::{Appended, PartitionInfo, PartitionRecovery};
pub use partitioner::{murmur2, partition_for_key};
pub use record::{Header, Record, StoredRecord};
pub use topic::{RecordPosition, Topic, TopicDescription};

/// Bytes of a batch header, for callers sizing buffers and benchmarks.
pub const BATCH_HEADER_LEN: usize = batch::HEADER_LEN;

#[cfg(test)]
mod send_sync {
    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn handles_are_send_and_sync() {
        assert_send_sync::<super::Log>();
        assert_send_sync::<super::Topic>();
        assert_send_sync::<super::Consumer>();
        assert_send_sync::<super::Error>();
    }
}
