//! Serializable runtime state of a session (`SessionRuntimeState`).

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SandboxStatus {
    Starting,
    Ready,
    Unhealthy,
    Terminated,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SandboxState {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sandbox_id: Option<String>,
    pub status: SandboxStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status_message: Option<String>,
    pub restart_count: u32,
    pub last_health_check: i64,
}

/// `{ isLoaded, sandbox }`, and in a session's state also its queue and the requests waiting
/// for a person (extra fields: a reference client ignores them).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RuntimeState {
    pub is_loaded: bool,
    pub sandbox: Option<SandboxState>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue: Option<Vec<QueuedMessage>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pending_requests: Option<Vec<RequestView>>,
    /// Tokens and cost so far, by model and conversation (after the first model call).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<serde_json::Value>,
    /// In a cluster: the node that holds the session.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner_node_id: Option<String>,
}

impl RuntimeState {
    pub const UNLOADED: RuntimeState =
        RuntimeState { is_loaded: false, sandbox: None, queue: None, pending_requests: None, usage: None, owner_node_id: None };

    /// Just `{ isLoaded, sandbox }` (status events).
    pub fn of_sandbox(sandbox: Option<SandboxState>) -> Self {
        RuntimeState { is_loaded: true, sandbox, queue: None, pending_requests: None, usage: None, owner_node_id: None }
    }
}

/// A message waiting for its turn (`runtime.queue[]`, `session:queue:changed`).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct QueuedMessage {
    pub message_id: String,
    pub mode: &'static str,
    /// The start of its text.
    pub preview: String,
    pub enqueued_at: String,
}

/// A tool call or question waiting for a person (`runtime.pendingRequests[]`, and the payload
/// of `session:permission:requested` / `session:question:requested`).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestView {
    /// `"permission"` or `"question"`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub request_id: String,
    pub conversation_id: String,
    pub tool_name: String,
    pub tool_use_id: String,
    pub input: serde_json::Value,
    /// A question's questions (the tool's own shape).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub questions: Option<serde_json::Value>,
    pub requested_at: String,
    pub expires_at: String,
}
