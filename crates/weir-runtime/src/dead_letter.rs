//! Dead letters: records an operator could not handle, kept with the reason instead of stopping
//! the pipeline.
//!
//! A fallible operator ([`Stream::try_map`](crate::Stream::try_map)) sends each failure — the
//! record's origin (topic/partition/offset, file/line), its raw payload and the error — to the
//! pipeline's dead-letter output, and counts it. The pipeline's dead-letter sink is set with
//! [`Pipeline::dead_letters`](crate::Pipeline::dead_letters); without one, dead letters are
//! logged as `tracing` warnings (and counted), and [`Pipeline::run`](crate::Pipeline::run)
//! prints a summary on stderr at the end (counts per operator and the first
//! [`FIRST_DEAD_LETTERS`] letters), so they are visible without a `tracing` subscriber.
//!
//! The dead-letter output is a bounded channel like every other: a flood of bad records waits
//! for a slow dead-letter sink (backpressure) instead of filling memory.
//!
//! Whatever the output, every dead letter is counted in
//! [`JobReport::dead_letters`](crate::JobReport::dead_letters) and, per operator, in
//! [`JobReport::dead_letters_by_operator`](crate::JobReport::dead_letters_by_operator).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

/// A record that failed, with where it came from and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// The operator that failed, e.g. `"try_map"`.
    pub operator: String,
    /// Where the record came from, e.g. `"access.log:17"` or `"access/2@1041"`.
    pub origin: String,
    /// The raw record, as text (lossy for binary data).
    pub payload: String,
    /// The error.
    pub error: String,
}

/// A record that can say where it came from and what it looked like, so a failure to handle it
/// can be reported as a [`DeadLetter`].
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot say where it came from, so a fallible step cannot send it to the dead letters",
    note = "make the step before keep its input: `try_map_traced` instead of `try_map`, `parsed_traced` instead of `parsed`",
    note = "or implement `Traceable` for `{Self}`"
)]
pub trait Traceable {
    /// Where the record came from.
    fn origin(&self) -> String;
    /// The raw record.
    fn payload(&self) -> String;
}

impl Traceable for String {
    fn origin(&self) -> String {
        String::new()
    }
    fn payload(&self) -> String {
        self.clone()
    }
}

/// How many dead letters a [`JobReport`](crate::JobReport) keeps as examples.
pub const FIRST_DEAD_LETTERS: usize = 5;

/// Dead letters per operator, and the first few of them.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    pub(crate) by_operator: BTreeMap<String, u64>,
    pub(crate) first: Vec<DeadLetter>,
}

/// The sending side of the dead-letter output, shared by a pipeline's operators.
#[derive(Clone, Debug)]
pub(crate) struct DeadLetters {
    tx: mpsc::Sender<Vec<DeadLetter>>,
    count: Arc<AtomicU64>,
    tally: Arc<Mutex<Tally>>,
}

impl DeadLetters {
    /// The output, holding at most `capacity` batches of letters before senders wait.
    pub(crate) fn new(capacity: usize) -> (DeadLetters, mpsc::Receiver<Vec<DeadLetter>>, Arc<AtomicU64>) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let count = Arc::new(AtomicU64::new(0));
        (DeadLetters { tx, count: count.clone(), tally: Arc::default() }, rx, count)
    }

    /// The counts per operator and the first letters, updated as letters are sent.
    pub(crate) fn tally(&self) -> Arc<Mutex<Tally>> {
        self.tally.clone()
    }

    /// Counts `letters` and sends them, waiting while the output is full.
    pub(crate) async fn send(&self, letters: Vec<DeadLetter>) {
        self.count.fetch_add(letters.len() as u64, Ordering::Relaxed);
        {
            let mut t = self.tally.lock().unwrap_or_else(PoisonError::into_inner);
            for l in &letters {
                match t.by_operator.get_mut(&l.operator) {
                    Some(n) => *n += 1,
                    None => {
                        t.by_operator.insert(l.operator.clone(), 1);
                    }
                }
            }
            let room = FIRST_DEAD_LETTERS.saturating_sub(t.first.len());
            t.first.extend(letters.iter().take(room).cloned());
        }
        if let Err(e) = self.tx.send(letters).await {
            for l in e.0 {
                tracing::warn!(
                    origin = l.origin,
                    error = l.error,
                    "dead letter after the dead-letter output closed"
                );
            }
        }
    }
}
