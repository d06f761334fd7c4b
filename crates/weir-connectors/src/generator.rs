//! A generator source: `n` records made by a function of their index, for benchmarks and demos.
//!
//! Subtask `s` of `p` makes the records with indices `s, s + p, s + 2p, … < n`, so every subtask
//! advances through the index space at the same pace (an event time derived from the index
//! rises evenly across subtasks). Each subtask is one split (its batches' `split` is `s`).
//!
//! Without a rate the records are made as fast as the pipeline takes them. With
//! [`GeneratorSource::rate`], the total rate is shared evenly by the subtasks; each paces itself
//! against its start time (so a slow consumer is caught up in bursts of at most one batch),
//! emitting what is due and sleeping until the next record is due.
//!
//! In a checkpointed pipeline a subtask's position is the next index it makes; a restored
//! generator resumes there, at the same parallelism only (another one is refused: the indices
//! of a subtask depend on it).
//!
//! # Cancel safety
//!
//! [`GeneratorReader::next_batch`]'s only await is the rate limiter's sleep, before anything is
//! made: dropping the future loses nothing.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use weir_runtime::{Batch, Result, Source, SourceReader, SplitPositions};

use crate::{DEFAULT_BATCH_SIZE, check_batch_size};

/// Makes `n` records with a function of their index; see the [module docs](crate::generator).
///
/// # Examples
///
/// ```
/// use weir_connectors::GeneratorSource;
/// use weir_runtime::{CollectSink, Pipeline};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> weir_runtime::Result<()> {
/// let p = Pipeline::builder("gen").parallelism(2).handle_signals(false).build()?;
/// let out = CollectSink::new();
/// p.source(GeneratorSource::new(1_000, |i| i * 2)).sink(out.clone());
/// p.run().await?;
/// assert_eq!(out.take().len(), 1_000);
/// # Ok(())
/// # }
/// ```
pub struct GeneratorSource<F> {
    count: u64,
    make: Arc<F>,
    rate: Option<f64>,
    batch_size: usize,
}

impl<F> std::fmt::Debug for GeneratorSource<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GeneratorSource")
            .field("count", &self.count)
            .field("rate", &self.rate)
            .field("batch_size", &self.batch_size)
            .finish_non_exhaustive()
    }
}

impl<F> Clone for GeneratorSource<F> {
    fn clone(&self) -> Self {
        GeneratorSource {
            count: self.count,
            make: self.make.clone(),
            rate: self.rate,
            batch_size: self.batch_size,
        }
    }
}

impl<T, F> GeneratorSource<F>
where
    T: Send + 'static,
    F: Fn(u64) -> T + Send + Sync + 'static,
{
    /// `count` records, record `i` being `make(i)`; as fast as possible, in batches of 1024.
    /// `u64::MAX` makes a practically endless source.
    pub fn new(count: u64, make: F) -> Self {
        GeneratorSource { count, make: Arc::new(make), rate: None, batch_size: DEFAULT_BATCH_SIZE }
    }

    /// Limits the total rate to `per_second` records per second, shared by the subtasks
    /// (greater than 0, checked when the source starts). Default: unlimited.
    pub fn rate(mut self, per_second: f64) -> Self {
        self.rate = Some(per_second);
        self
    }

    /// Most records per batch (at least 1, checked when the source starts). Default: 1024.
    pub fn batch_size(mut self, n: usize) -> Self {
        self.batch_size = n;
        self
    }
}

impl<T, F> Source for GeneratorSource<F>
where
    T: Send + 'static,
    F: Fn(u64) -> T + Send + Sync + 'static,
{
    type Item = T;
    type Reader = GeneratorReader<F>;

    fn name(&self) -> String {
        "generator".to_owned()
    }

    fn reader_at(
        &self,
        subtask: usize,
        parallelism: usize,
        positions: &SplitPositions,
    ) -> Result<GeneratorReader<F>> {
        let mut reader = self.reader(subtask, parallelism)?;
        if let Some(p) = positions.get(reader.split) {
            let (next, step): (u64, u64) = weir_runtime::decode(p)?;
            if step != reader.step {
                return Err(weir_runtime::Error::InvalidConfig {
                    field: "parallelism",
                    reason: format!(
                        "a generator checkpointed at parallelism {step} resumes only at that parallelism, not {}",
                        reader.step
                    ),
                });
            }
            reader.next = next;
        }
        Ok(reader)
    }

    fn reader(&self, subtask: usize, parallelism: usize) -> Result<GeneratorReader<F>> {
        check_batch_size(self.batch_size)?;
        let per_subtask = match self.rate {
            Some(r) if !(r.is_finite() && r > 0.0) => {
                return Err(weir_runtime::Error::InvalidConfig {
                    field: "rate",
                    reason: format!("{r} is not a positive number of records per second"),
                });
            }
            Some(r) => Some(r / parallelism.max(1) as f64),
            None => None,
        };
        Ok(GeneratorReader {
            make: self.make.clone(),
            next: subtask as u64,
            step: parallelism.max(1) as u64,
            count: self.count,
            split: u32::try_from(subtask).unwrap_or(u32::MAX),
            batch_size: self.batch_size,
            rate: per_subtask,
            start: None,
            made: 0,
        })
    }
}

/// The reader of one [`GeneratorSource`] subtask.
pub struct GeneratorReader<F> {
    make: Arc<F>,
    /// The next index to make.
    next: u64,
    step: u64,
    count: u64,
    split: u32,
    batch_size: usize,
    /// Records per second for this subtask.
    rate: Option<f64>,
    start: Option<Instant>,
    /// Records made so far.
    made: u64,
}

impl<F> std::fmt::Debug for GeneratorReader<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GeneratorReader")
            .field("next", &self.next)
            .field("split", &self.split)
            .finish_non_exhaustive()
    }
}

impl<T, F> SourceReader for GeneratorReader<F>
where
    T: Send + 'static,
    F: Fn(u64) -> T + Send + Sync + 'static,
{
    type Item = T;

    async fn next_batch(&mut self) -> Result<Option<Batch<T>>> {
        if self.next >= self.count {
            return Ok(None);
        }
        let remaining = (self.count - 1 - self.next) / self.step + 1;
        let mut n = remaining.min(self.batch_size as u64);
        if let Some(rate) = self.rate {
            let start = *self.start.get_or_insert_with(Instant::now);
            loop {
                // Records due by now; the first one is due at once.
                let due = (start.elapsed().as_secs_f64() * rate) as u64 + 1;
                if due > self.made {
                    n = n.min(due - self.made);
                    break;
                }
                // A rate so low that the next record is out of `Instant`'s range: wait an hour
                // at a time.
                let wait = Duration::try_from_secs_f64(self.made as f64 / rate).ok();
                match wait.and_then(|w| start.checked_add(w)) {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => tokio::time::sleep(Duration::from_secs(3600)).await,
                }
            }
        }
        let mut records = Vec::with_capacity(n as usize);
        let mut i = self.next;
        for _ in 0..n {
            records.push((self.make)(i));
            i = i.saturating_add(self.step);
        }
        self.next = i;
        self.made += n;
        Ok(Some(Batch::from_split(self.split, records)))
    }

    fn positions(&self) -> Vec<(u32, Vec<u8>)> {
        weir_runtime::encode(&(self.next, self.step)).map(|p| vec![(self.split, p)]).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    async fn drain<F: Fn(u64) -> u64 + Send + Sync + 'static>(mut r: GeneratorReader<F>) -> Vec<Batch<u64>> {
        let mut out = Vec::new();
        while let Some(b) = r.next_batch().await.unwrap() {
            out.push(b);
        }
        out
    }

    #[tokio::test]
    async fn subtasks_share_the_indices_and_name_their_split() {
        let source = GeneratorSource::new(10, |i| i).batch_size(2);
        let batches = drain(source.reader(1, 3).unwrap()).await;
        let got: Vec<u64> = batches.iter().flat_map(|b| b.records.clone()).collect();
        assert_eq!(got, [1, 4, 7]);
        assert!(batches.iter().all(|b| b.split == 1 && b.len() <= 2));
        assert!(drain(GeneratorSource::new(2, |i| i).reader(3, 4).unwrap()).await.is_empty());
    }

    #[tokio::test]
    async fn the_last_index_does_not_overflow() {
        let source = GeneratorSource::new(u64::MAX, |i| i);
        let mut r = source.reader(0, 1).unwrap();
        r.next = u64::MAX - 2;
        let got: Vec<u64> = drain(r).await.into_iter().flat_map(|b| b.records).collect();
        assert_eq!(got, [u64::MAX - 2, u64::MAX - 1]);
    }

    #[test]
    fn bad_rates_are_rejected_naming_the_field() {
        for rate in [0.0, -1.0, f64::NAN] {
            let err = GeneratorSource::new(1, |i| i).rate(rate).reader(0, 1).unwrap_err();
            assert!(matches!(err, weir_runtime::Error::InvalidConfig { field: "rate", .. }), "{err}");
        }
    }
}
