//! Dead letters: records an operator could not handle, kept with the reason instead of stopping
//! the pipeline.
//!
//! A fallible operator ([`Stream::try_map`](crate::Stream::try_map)) sends each failure — the
//! record's origin (topic/partition/offset, file/line), its raw payload and the error — to the
//! pipeline's dead-letter output, and counts it. The pipeline's dead-letter sink is set with
//! [`Pipeline::dead_letters`](crate::Pipeline::dead_letters); without one, dead letters are
//! logged as `tracing` warnings (and counted).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

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

/// The sending side of the dead-letter output, shared by a pipeline's operators.
#[derive(Clone, Debug)]
pub(crate) struct DeadLetters {
    tx: mpsc::UnboundedSender<Vec<DeadLetter>>,
    count: Arc<AtomicU64>,
}

impl DeadLetters {
    pub(crate) fn new() -> (DeadLetters, mpsc::UnboundedReceiver<Vec<DeadLetter>>, Arc<AtomicU64>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let count = Arc::new(AtomicU64::new(0));
        (DeadLetters { tx, count: count.clone() }, rx, count)
    }

    pub(crate) fn send(&self, letters: Vec<DeadLetter>) {
        self.count.fetch_add(letters.len() as u64, Ordering::Relaxed);
        if let Err(e) = self.tx.send(letters) {
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
