//! Errors of feature views.

/// What went wrong with a feature view.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FeatureError {
    /// The view's definition is invalid (the caller's mistake; fix the definition).
    #[error("feature view {view}: {field} {reason}")]
    InvalidConfig {
        /// The view.
        view: String,
        /// The field (`entity`, `tile`, `feature <name>`, `input <name>`).
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A lookup asked for a time before the horizon (the watermark minus the allowed
    /// lateness): the history it would need has been pruned. Retrying cannot help.
    #[error("feature view {view}: a lookup at {at} is before the horizon {horizon}")]
    BeforeHorizon {
        /// The view.
        view: String,
        /// The lookup time, ms since the epoch.
        at: i64,
        /// The horizon, ms since the epoch.
        horizon: i64,
    },
}

/// `Result` with [`FeatureError`].
pub type Result<T, E = FeatureError> = std::result::Result<T, E>;
