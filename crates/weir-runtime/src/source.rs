//! Sources: where records enter a pipeline.
//!
//! A [`Source`] is a description; at run time it makes one [`SourceReader`] per parallel subtask.
//! A reader returns batches until it returns `Ok(None)` (a bounded source is exhausted); an
//! unbounded reader waits for data instead. Batches carry the split they came from, so event
//! time is tracked per split.

use std::future::Future;
use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::batch::Batch;
use crate::checkpoint::SplitPositions;
use crate::error::Result;

/// Typed positions: a reader saves a serde value per split and finds the same value again,
/// without encoding bytes by hand. The bytes are the checkpoint's encoding of the value
/// ([`encode`](crate::encode)), so positions saved either way restore either way.
impl SplitPositions {
    /// The position saved for `split`, as the type the reader saved with
    /// [`SplitPositions::encode`]; `None` if none was saved.
    ///
    /// # Errors
    ///
    /// [`Error::Checkpoint`](crate::Error::Checkpoint) if the saved bytes are not a `P` (the
    /// program changed its position type).
    pub fn position<P: DeserializeOwned>(&self, split: u32) -> Result<Option<P>> {
        self.get(split).map(crate::checkpoint::decode).transpose()
    }

    /// What [`SourceReader::positions`] returns for typed positions: `(split, position)`
    /// pairs, each position encoded as a checkpoint stores it. A position the encoding cannot
    /// write (a sequence of unknown length) is left out with an error logged: its split would
    /// be read again from the start after a restore.
    pub fn encode<P: Serialize>(positions: impl IntoIterator<Item = (u32, P)>) -> Vec<(u32, Vec<u8>)> {
        positions
            .into_iter()
            .filter_map(|(split, p)| match crate::checkpoint::encode(&p) {
                Ok(bytes) => Some((split, bytes)),
                Err(e) => {
                    tracing::error!(split, error = %e, "a source position cannot be saved in checkpoints");
                    None
                }
            })
            .collect()
    }
}

/// Positions as [`SourceReader::positions`] returns them (e.g. to test that a reader resumes
/// where another stopped).
impl FromIterator<(u32, Vec<u8>)> for SplitPositions {
    fn from_iter<I: IntoIterator<Item = (u32, Vec<u8>)>>(positions: I) -> Self {
        SplitPositions(positions.into_iter().collect())
    }
}

/// A description of where records come from.
///
/// # Implementing
///
/// A source names itself and makes one [`SourceReader`] per subtask; the reader returns
/// batches (`Ok(None)` once a bounded source is exhausted). To resume after a restore, a
/// source implements [`Source::reader_at`] and its reader [`SourceReader::positions`], with
/// typed positions ([`SplitPositions::encode`], [`SplitPositions::position`]). Here, numbers
/// `0..up_to`, subtask `i` of `p` reading those `≡ i (mod p)` as split `i`:
///
/// ```
/// use weir_runtime::{Batch, CollectSink, Pipeline, Result, Source, SourceReader, SplitPositions};
///
/// struct Numbers {
///     up_to: u64,
/// }
///
/// struct NumbersReader {
///     split: u32,
///     next: u64,
///     step: u64,
///     up_to: u64,
/// }
///
/// impl Source for Numbers {
///     type Item = u64;
///     type Reader = NumbersReader;
///
///     fn name(&self) -> String {
///         format!("numbers:{}", self.up_to)
///     }
///
///     fn reader(&self, subtask: usize, parallelism: usize) -> Result<NumbersReader> {
///         let split = u32::try_from(subtask).unwrap_or(u32::MAX);
///         Ok(NumbersReader { split, next: subtask as u64, step: parallelism as u64, up_to: self.up_to })
///     }
///
///     fn reader_at(&self, subtask: usize, parallelism: usize, positions: &SplitPositions) -> Result<NumbersReader> {
///         let mut reader = self.reader(subtask, parallelism)?;
///         if let Some(next) = positions.position::<u64>(reader.split)? {
///             reader.next = next;
///         }
///         Ok(reader)
///     }
/// }
///
/// impl SourceReader for NumbersReader {
///     type Item = u64;
///
///     async fn next_batch(&mut self) -> Result<Option<Batch<u64>>> {
///         let batch: Vec<u64> = (self.next..self.up_to).step_by(self.step as usize).take(100).collect();
///         let Some(last) = batch.last() else { return Ok(None) };
///         self.next = last + self.step;
///         Ok(Some(Batch::from_split(self.split, batch)))
///     }
///
///     fn positions(&self) -> Vec<(u32, Vec<u8>)> {
///         SplitPositions::encode([(self.split, self.next)])
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<()> {
/// let p = Pipeline::builder("numbers").parallelism(2).handle_signals(false).build()?;
/// let out = CollectSink::new();
/// p.source(Numbers { up_to: 1_000 }).sink(out.clone());
/// p.run().await?;
/// assert_eq!(out.take().iter().sum::<u64>(), 999 * 1_000 / 2);
///
/// // A reader resumes where another one's positions say.
/// let numbers = Numbers { up_to: 1_000 };
/// let mut first = numbers.reader(1, 2)?;
/// first.next_batch().await?;
/// let saved: SplitPositions = first.positions().into_iter().collect();
/// let mut resumed = numbers.reader_at(1, 2, &saved)?;
/// assert_eq!(resumed.next_batch().await?.unwrap().records[0], 201);
/// # Ok(())
/// # }
/// ```
pub trait Source: Send + Sync + 'static {
    /// The records it produces.
    type Item: Send + 'static;
    /// The reader of one subtask.
    type Reader: SourceReader<Item = Self::Item>;

    /// A short name for task names and errors, e.g. `"file:access.log"`.
    fn name(&self) -> String;

    /// The reader of subtask `subtask` of `parallelism` (it reads its share of the splits).
    fn reader(&self, subtask: usize, parallelism: usize) -> Result<Self::Reader>;

    /// Whether every reader ends by itself (a file read once, a topic up to its end offsets at
    /// start, records in memory). The runtime then never decides by the clock that a split or a
    /// subtask is idle (no [`Watermarks::with_idle_timeout`](crate::Watermarks::with_idle_timeout)
    /// applies): every split holds the watermark back until it sends records or ends, so the
    /// same input gives the same results, late records included, however fast each subtask
    /// runs. Default: `false` (unbounded).
    fn is_bounded(&self) -> bool {
        false
    }

    /// The reader of subtask `subtask` of `parallelism` in a checkpointed pipeline, resuming at
    /// `positions` (those every subtask saved in the restored checkpoint, whatever the
    /// parallelism was; empty on a fresh start). Its positions are committed only by
    /// [`Source::commit`]. Default: [`Source::reader`], reading from the start again: such a
    /// source is replayed in full after a restore.
    fn reader_at(
        &self,
        subtask: usize,
        parallelism: usize,
        positions: &SplitPositions,
    ) -> Result<Self::Reader> {
        if !positions.is_empty() {
            tracing::warn!(source = %self.name(), "this source cannot resume at a checkpoint's positions; reading it from the start");
        }
        self.reader(subtask, parallelism)
    }

    /// A checkpoint holding `positions` (of every subtask) is complete: make them the source's
    /// committed positions (e.g. a consumer group's offsets). Called again with the restored
    /// checkpoint's positions on a restore. Default: nothing.
    fn commit(&self, _positions: &SplitPositions) -> Result<()> {
        Ok(())
    }

    /// Progress an earlier run committed for this source outside a checkpoint (e.g. a consumer
    /// group's committed offsets), described for a message; `None` if none. A checkpointed
    /// pipeline that finds no checkpoint to restore refuses to start while a source reports
    /// some, unless started from scratch. Default: `None`.
    fn committed_progress(&self) -> Result<Option<String>> {
        Ok(None)
    }
}

/// Reads batches for one subtask.
pub trait SourceReader: Send + 'static {
    /// The records it produces.
    type Item: Send + 'static;

    /// The next batch, or `None` when a bounded source is exhausted.
    ///
    /// # Cancel safety
    ///
    /// Must be cancel safe: the pipeline drops the future when it stops.
    fn next_batch(&mut self) -> impl Future<Output = Result<Option<Batch<Self::Item>>>> + Send;

    /// A split this reader has read to its end and will send nothing more from, if any. The
    /// pipeline asks after every batch, until `None`, and sends [`Message::SplitEnd`] down the
    /// chain: from then on the split no longer holds the subtask's watermark back. A split must
    /// be reported only after its last batch was returned. Default: none (the splits of a
    /// bounded source end with it).
    ///
    /// [`Message::SplitEnd`]: crate::Message::SplitEnd
    fn finished_split(&mut self) -> Option<u32> {
        None
    }

    /// The splits this reader will read, if it knows them when it starts (log partitions); each
    /// holds the watermark back until it sends records, goes idle or ends (see
    /// [`Message::SplitStart`](crate::Message::SplitStart)). Default: none (splits count from
    /// their first batch, as files read one after the other do).
    fn splits(&self) -> Vec<u32> {
        Vec::new()
    }

    /// Where reading resumes, for a checkpoint: `(split, position)` for every split this reader
    /// has read from, made with [`SplitPositions::encode`] from typed positions (read back with
    /// [`SplitPositions::position`]). Called between batches. Default: none (see
    /// [`Source::reader_at`]).
    fn positions(&self) -> Vec<(u32, Vec<u8>)> {
        Vec::new()
    }

    /// Bytes read so far (file bytes, record keys and values), for the
    /// `weir_operator_input_bytes_total` metric. Default: 0 (not measured).
    fn bytes_read(&self) -> u64 {
        0
    }
}

/// A bounded source over records in memory; subtask `i` of `p` reads chunks `i, i + p, …` of
/// `batch_size` records, in order, as one split (split `i`). For tests and examples. In a
/// checkpointed pipeline it resumes at the next chunk (restore at the same parallelism).
#[derive(Debug, Clone)]
pub struct MemorySource<T> {
    records: Arc<Vec<T>>,
    batch_size: usize,
}

impl<T: Clone + Send + Sync + 'static> MemorySource<T> {
    /// A source of `records`, in batches of 1024.
    pub fn new(records: Vec<T>) -> Self {
        MemorySource { records: Arc::new(records), batch_size: 1024 }
    }

    /// Sets the batch size (at least 1). Default: 1024.
    pub fn batch_size(mut self, n: usize) -> Self {
        self.batch_size = n.max(1);
        self
    }
}

impl<T: Clone + Send + Sync + 'static> Source for MemorySource<T> {
    type Item = T;
    type Reader = MemoryReader<T>;

    fn name(&self) -> String {
        "memory".to_owned()
    }

    fn is_bounded(&self) -> bool {
        true
    }

    fn reader_at(
        &self,
        subtask: usize,
        parallelism: usize,
        positions: &SplitPositions,
    ) -> Result<MemoryReader<T>> {
        let mut reader = self.reader(subtask, parallelism)?;
        if let Some(chunk) = positions.position(reader.split)? {
            reader.chunk = chunk;
        }
        Ok(reader)
    }

    fn reader(&self, subtask: usize, parallelism: usize) -> Result<MemoryReader<T>> {
        Ok(MemoryReader {
            records: self.records.clone(),
            batch_size: self.batch_size,
            chunk: subtask,
            step: parallelism.max(1),
            split: u32::try_from(subtask).unwrap_or(u32::MAX),
        })
    }
}

/// The reader of a [`MemorySource`].
#[derive(Debug)]
pub struct MemoryReader<T> {
    records: Arc<Vec<T>>,
    batch_size: usize,
    chunk: usize,
    step: usize,
    /// The subtask's chunks are one split: a chunk read to its end must not hold the watermark
    /// back as a split of its own that never advances again.
    split: u32,
}

impl<T: Clone + Send + Sync + 'static> SourceReader for MemoryReader<T> {
    type Item = T;

    async fn next_batch(&mut self) -> Result<Option<Batch<T>>> {
        let start = self.chunk * self.batch_size;
        if start >= self.records.len() {
            return Ok(None);
        }
        let end = (start + self.batch_size).min(self.records.len());
        let batch = Batch::from_split(self.split, self.records[start..end].to_vec());
        self.chunk += self.step;
        Ok(Some(batch))
    }

    fn positions(&self) -> Vec<(u32, Vec<u8>)> {
        SplitPositions::encode([(self.split, self.chunk)])
    }
}
