//! The runtime's error type.

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
    /// A source or sink failed (I/O, a broken connection, …).
    #[error("{operator}: {message}")]
    Connector {
        /// The source or sink, e.g. `"source file:access.log"`.
        operator: String,
        /// What went wrong.
        message: String,
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
    /// A task stopped because another failed or the job was cancelled.
    #[error("job cancelled")]
    Cancelled,
}

impl Error {
    /// A connector error for `operator` with `message`.
    pub fn connector(operator: impl Into<String>, message: impl std::fmt::Display) -> Error {
        Error::Connector { operator: operator.into(), message: message.to_string() }
    }
}
