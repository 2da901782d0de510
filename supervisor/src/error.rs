//! What a call to the worker can fail with.

use std::time::Duration;

use crate::Phase;

/// Why [`crate::SupervisorHandle::call`] produced no answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CallError {
    /// No worker is ready (failed, stopped). Retry after `retry_after`.
    #[error("usage worker is not ready ({phase})")]
    Unavailable { phase: Phase, retry_after: Duration },
    /// The worker exited or lost its connection while the job ran. Retryable.
    #[error("usage worker exited while computing; it is being restarted")]
    WorkerDied,
    /// This exact query was in flight when two workers died; it is refused for a while.
    #[error("refusing a query that was running when {deaths} usage workers died")]
    Poisoned { deaths: u32 },
    /// The worker answered with a typed error.
    #[error("{0}")]
    Worker(#[from] ipc_proto::WorkerError),
}

impl CallError {
    /// Whether the same call may succeed if retried later.
    pub fn retryable(&self) -> bool {
        match self {
            CallError::Unavailable { .. } | CallError::WorkerDied => true,
            CallError::Poisoned { .. } => false,
            CallError::Worker(error) => matches!(
                error.kind,
                ipc_proto::WorkerErrorKind::OverBudget | ipc_proto::WorkerErrorKind::Cancelled
            ),
        }
    }
}
