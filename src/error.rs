//! The crate's error type. Every variant has a stable string code (used in REST bodies and
//! JS errors) and a message that names what was wrong.

use crate::persistence::PersistenceError;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    #[error("Session {0} not found in persistence")]
    SessionNotFound(String),
    #[error("Session {0} is not loaded")]
    SessionNotLoaded(String),
    #[error("Agent profile {0} not found in persistence")]
    AgentProfileNotFound(String),
    #[error("{0}")]
    InvalidInput(String),
    #[error(transparent)]
    Persistence(#[from] PersistenceError),
    #[error("{0}")]
    NotImplemented(&'static str),
    #[error("runtime is shut down")]
    ShutDown,
    #[error("{0}")]
    Sandbox(String),
    #[error("{0}")]
    AgentRun(String),
    #[error("Session {0} is being unloaded")]
    SessionClosing(String),
    #[error("{0}")]
    Capacity(String),
    #[error("{0}")]
    QueueFull(String),
    /// Something named in the request (a queued message, a pending request) does not exist.
    #[error("{0}")]
    NotFound(String),
    /// A request was answered already: the first answer won.
    #[error("{0}")]
    AlreadyResolved(String),
    /// The runtime's configuration cannot be used (a port taken, a bad address).
    #[error("{0}")]
    Config(String),
    /// The session's budget is spent (raise it with `sessionOptions.budget`).
    #[error("{0}")]
    BudgetExceeded(String),
    /// The cluster cannot act now (Redis unreachable, a lease lost, an owner not answering).
    #[error("{0}")]
    Cluster(String),
    /// Another node of the cluster holds the session.
    #[error("Session {session} is held by node {node}")]
    OwnedElsewhere { session: String, node: String },
}

impl Error {
    pub fn code(&self) -> &'static str {
        match self {
            Error::SessionNotFound(_) | Error::SessionNotLoaded(_) => "SESSION_NOT_FOUND",
            Error::AgentProfileNotFound(_) => "AGENT_PROFILE_NOT_FOUND",
            Error::InvalidInput(_) => "INVALID_REQUEST",
            Error::Persistence(e) => e.code(),
            Error::NotImplemented(_) => "NOT_IMPLEMENTED",
            Error::ShutDown => "RUNTIME_SHUT_DOWN",
            Error::Sandbox(_) => "SANDBOX_ERROR",
            Error::AgentRun(_) => "AGENT_RUN_FAILED",
            Error::SessionClosing(_) => "SESSION_UNLOADING",
            Error::Capacity(_) => "CAPACITY_EXCEEDED",
            Error::QueueFull(_) => "QUEUE_FULL",
            Error::NotFound(_) => "NOT_FOUND",
            Error::AlreadyResolved(_) => "ALREADY_RESOLVED",
            Error::Config(_) => "INVALID_CONFIG",
            Error::BudgetExceeded(_) => "BUDGET_EXCEEDED",
            Error::Cluster(_) => "CLUSTER_UNAVAILABLE",
            Error::OwnedElsewhere { .. } => "OWNED_ELSEWHERE",
        }
    }

    /// True for "the thing asked for does not exist" (404 over REST).
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::SessionNotFound(_) | Error::SessionNotLoaded(_) | Error::NotFound(_))
    }
}

impl From<crate::sandbox::SandboxError> for Error {
    fn from(e: crate::sandbox::SandboxError) -> Self {
        Error::Sandbox(e.to_string())
    }
}
