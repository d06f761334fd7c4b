//! Errors of the SQL layer.

/// The `Result` of this crate.
pub type Result<T, E = SqlError> = std::result::Result<T, E>;

/// What can go wrong between SQL text and a running pipeline.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SqlError {
    /// The text is not valid SQL or not a valid Weir statement.
    #[error("SQL syntax: {0}")]
    Parse(String),
    /// DataFusion rejected the query (unknown column, type error, …).
    #[error("{0}")]
    Plan(String),
    /// A valid query the streaming engine cannot run; the message says what to write instead.
    #[error("not supported on a stream: {0}")]
    Unsupported(String),
    /// A source or sink is configured wrongly; `field` names the option.
    #[error("{object}: option {field}: {reason}")]
    Option {
        /// The source or sink.
        object: String,
        /// The option.
        field: String,
        /// What is wrong.
        reason: String,
    },
    /// Running the pipeline failed.
    #[error(transparent)]
    Runtime(#[from] weir_runtime::Error),
    /// The pipeline of a script failed ([`Script::run`](crate::Script::run)); `report` counts
    /// what it dead-lettered and dropped as late until then, so a caller that prints the report
    /// itself can still show it.
    #[error("{source}")]
    Job {
        /// Why the job failed.
        source: weir_runtime::Error,
        /// The job's counters up to the failure.
        report: Box<weir_runtime::JobReport>,
    },
    /// The embedded log failed.
    #[error(transparent)]
    Log(#[from] weir_log::Error),
}

impl From<datafusion::error::DataFusionError> for SqlError {
    fn from(e: datafusion::error::DataFusionError) -> Self {
        // DataFusion's messages name the column or function; drop its error-kind prefixes.
        let message = match e.find_root() {
            datafusion::error::DataFusionError::Plan(m)
            | datafusion::error::DataFusionError::Execution(m) => m.clone(),
            root => root.to_string(),
        };
        SqlError::Plan(message)
    }
}

impl From<datafusion::arrow::error::ArrowError> for SqlError {
    fn from(e: datafusion::arrow::error::ArrowError) -> Self {
        SqlError::Plan(e.to_string())
    }
}
