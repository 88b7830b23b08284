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

/// `{ isLoaded, sandbox }`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RuntimeState {
    pub is_loaded: bool,
    pub sandbox: Option<SandboxState>,
}

impl RuntimeState {
    pub const UNLOADED: RuntimeState = RuntimeState { is_loaded: false, sandbox: None };
}
