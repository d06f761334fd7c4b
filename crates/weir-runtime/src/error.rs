//! The runtime's error type.
//!
//! Errors say whose they are: the user's ([`Error::InvalidConfig`], [`Error::Panicked`] in user
//! code), the outside world's ([`Error::Connector`]: I/O, a full disk, a poisoned log, with the
//! original error kept as its [`source`](std::error::Error::source) so a caller can downcast it
//! and decide to retry), or Weir's own ([`Error::Internal`]: a bug to report).

/// An error from outside the runtime, kept whole.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The runtime's `Result` alias.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can fail when building or running a pipeline.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A builder setting is out of range; `field` names it.
    #[error("invalid configuration: {field}: {reason}")]
    InvalidConfig {
        /// The setting, e.g. `"parallelism"`.
        field: &'static str,
        /// Why the value is rejected.
        reason: String,
    },
    /// A source or sink failed (I/O, a full disk, a poisoned log, …). The original error is
    /// its [`source`](std::error::Error::source): downcast it, e.g. to
    /// `weir_log::Error::StorageFull` or `std::io::Error`, to decide whether to retry.
    #[error("{operator}: {source}")]
    Connector {
        /// The source or sink, e.g. `"file source access.log"`.
        operator: String,
        /// What went wrong, as the connector raised it.
        source: BoxError,
    },
    /// User code panicked inside an operator; the job stops.
    #[error("operator {operator} panicked: {message}")]
    Panicked {
        /// The task's operators, e.g. `"source -> map -> assign_timestamps"`.
        operator: String,
        /// The panic message.
        message: String,
    },
    /// A checkpoint could not be written, read or restored; the message says which and why.
    #[error("checkpoint: {0}")]
    Checkpoint(String),
    /// A bug in Weir, not in the pipeline or its input (e.g. the checkpoint coordinator ended
    /// abnormally). Please report it with the message.
    #[error("internal error (a bug in Weir): {0}")]
    Internal(String),
    /// A task stopped because another failed or the job was cancelled.
    #[error("job cancelled")]
    Cancelled,
}

impl Error {
    /// A connector error for `operator`, caused by `source`: an error (kept, for
    /// [`source`](std::error::Error::source) and downcasting) or a message (`&str`, `String`).
    pub fn connector(operator: impl Into<String>, source: impl Into<BoxError>) -> Error {
        Error::Connector { operator: operator.into(), source: source.into() }
    }
}
