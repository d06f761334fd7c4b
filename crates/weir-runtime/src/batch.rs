//! Batches and the messages that carry them between tasks.

use tokio::time::Instant;

/// Event time and watermarks: milliseconds since the Unix epoch.
pub type Timestamp = i64;

/// A batch of records, the unit that moves between operators and tasks.
///
/// `timestamps` is empty until event time is assigned (see
/// [`Stream::assign_timestamps`](crate::Stream::assign_timestamps)); from then on it holds one
/// timestamp per record, and one-to-one operators keep the two in step. `split` names the source
/// split (partition, file) the records came from; watermarks are tracked per split. An
/// operator that makes new records from a batch builds its output with [`Batch::derive`], which
/// keeps the split and the time the source read the input (for the end-to-end latency metric).
#[derive(Debug, Clone, PartialEq)]
pub struct Batch<T> {
    /// The records.
    pub records: Vec<T>,
    /// One event timestamp per record, or empty.
    pub timestamps: Vec<Timestamp>,
    /// The source split the records came from (0 after an exchange).
    pub split: u32,
    /// When a source read the records this batch stems from.
    read_at: Option<Instant>,
    /// When a log appended the newest record this batch stems from, if the source knows it.
    appended_ms: Option<i64>,
}

impl<T> Batch<T> {
    /// A batch of records without timestamps from split 0.
    pub fn new(records: Vec<T>) -> Self {
        Batch { records, timestamps: Vec::new(), split: 0, read_at: None, appended_ms: None }
    }

    /// A batch of records from a source split.
    pub fn from_split(split: u32, records: Vec<T>) -> Self {
        Batch { records, timestamps: Vec::new(), split, read_at: None, appended_ms: None }
    }

    /// A batch of other records made from this one: same split, read time and append time,
    /// and `timestamps` (one per record, or empty).
    pub fn derive<U>(&self, records: Vec<U>, timestamps: Vec<Timestamp>) -> Batch<U> {
        Batch { records, timestamps, split: self.split, read_at: self.read_at, appended_ms: self.appended_ms }
    }

    /// When a source read the records this batch stems from (set by the pipeline as a source
    /// hands a batch on; kept by [`Batch::derive`]).
    pub fn read_at(&self) -> Option<Instant> {
        self.read_at
    }

    /// Sets the time a source read the records this batch stems from.
    pub fn set_read_at(&mut self, at: Option<Instant>) {
        self.read_at = at;
    }

    /// When a log appended the newest record this batch stems from, in milliseconds since the
    /// Unix epoch: set by a source reading a topic that keeps append time (a log topic of
    /// [`TimestampType::LogAppendTime`](weir_log::TimestampType::LogAppendTime), or a Kafka
    /// topic of `message.timestamp.type=LogAppendTime`), `None` otherwise; kept by
    /// [`Batch::derive`], and given to the batches an operator builds anew (window results,
    /// process output) from the newest input it saw.
    pub fn appended_ms(&self) -> Option<i64> {
        self.appended_ms
    }

    /// Sets [`Batch::appended_ms`].
    pub fn set_appended_ms(&mut self, ms: Option<i64>) {
        self.appended_ms = ms;
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether the batch has no records.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// The timestamp of record `i`, if timestamps are assigned.
    pub fn timestamp(&self, i: usize) -> Option<Timestamp> {
        self.timestamps.get(i).copied()
    }
}

/// What flows through a channel or a chain of operators.
///
/// Ordering rules: messages from one sender arrive in order. A `Watermark(t)` promises that no
/// record with a timestamp `<= t` follows on that input; watermarks only rise. `Barrier(id)`
/// separates the records before checkpoint `id` from those after it. `End` is the last message
/// an input sends; it is preceded by `Watermark(Timestamp::MAX)` on bounded inputs, which fires
/// every window. `Idle` excludes a sender from the watermark minimum until it sends again.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Message<T> {
    /// Records.
    Data(Batch<T>),
    /// Event time has advanced to this timestamp.
    Watermark(Timestamp),
    /// A checkpoint barrier.
    Barrier(u64),
    /// The sender has nothing to send for now: leave it out of the watermark minimum until it
    /// sends data or a watermark again. A source sends it every tick it is silent;
    /// `assign_timestamps` turns those ticks into one `Idle` once all its splits are idle.
    Idle,
    /// The subtask will read the source split with this id: it holds the watermark back
    /// (like a split that sent records no newer than `Timestamp::MIN`) until it sends records,
    /// goes idle or ends. Sent by sources that know their splits up front (log partitions), so
    /// a split whose first records come later cannot find the watermark already past them.
    /// Local to a task's chain, like `SplitEnd`.
    SplitStart(u32),
    /// The source split with this id (see [`Batch::split`]) sent its last record: it no longer
    /// counts in the watermark of the subtask that read it. Local to a task's chain; an exchange
    /// does not forward it (after an exchange, splits have no meaning).
    SplitEnd(u32),
    /// The input is finished.
    End,
}
