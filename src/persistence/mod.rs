//! The `PersistenceAdapter` contract (implemented by the user, usually in JavaScript) and the
//! records that cross it.
//!
//! [`bridge::JsonAdapter`] turns any untyped adapter (a function that takes a method name and
//! JSON arguments and eventually returns JSON) into a typed [`PersistenceAdapter`] that bounds
//! every call with a timeout and reports wrong shapes by method and field.

pub mod bridge;
pub mod memory;
pub mod retry;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::agent::Architecture;
use crate::time::millis;

/// A file in a session's workspace; `path` is relative to the workspace root.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WorkspaceFile {
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
}

/// The list-level record of a session (`PersistedSessionListData`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionRecord {
    pub session_id: String,
    #[serde(rename = "type")]
    pub architecture: Architecture,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_options: Option<Map<String, Value>>,
    pub agent_profile_reference: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "millis::deserialize_opt", skip_serializing_if = "Option::is_none")]
    pub last_activity: Option<i64>,
    #[serde(default, deserialize_with = "millis::deserialize_opt", skip_serializing_if = "Option::is_none")]
    pub created_at: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Map<String, Value>>,
}

/// The full stored session (`PersistedSessionData`): the record plus [`StoredContent`].
#[derive(Debug, Clone, PartialEq)]
pub struct StoredSession {
    pub record: SessionRecord,
    pub raw_transcript: Option<String>,
    pub workspace_files: Vec<WorkspaceFile>,
}

/// The non-record fields of `PersistedSessionData`. Decoded apart from the record (rather than
/// with `serde(flatten)`, which loses field paths) so shape errors name the field.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredContent {
    #[serde(default)]
    pub raw_transcript: Option<String>,
    /// Accepted for type compatibility; the runtime reads subagents from `rawTranscript`.
    #[serde(default)]
    pub subagents: Option<Vec<Value>>,
    /// Lenient: an adapter that omits it (or returns null) means "no files".
    #[serde(default, deserialize_with = "files_or_null")]
    pub workspace_files: Vec<WorkspaceFile>,
}

fn files_or_null<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<WorkspaceFile>, D::Error> {
    Ok(Option::<Vec<WorkspaceFile>>::deserialize(d)?.unwrap_or_default())
}

/// Partial update of a session record (`Partial<PersistedSessionListData>`); only set fields are sent.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionRecordUpdate {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_options: Option<Map<String, Value>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_activity: Option<i64>,
    /// Sent whole (the adapter replaces the record's metadata with it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Map<String, Value>>,
}

/// `AgentProfileListData`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentProfileSummary {
    pub id: String,
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// `AgentProfile`. The fields the runtime reads are typed; `raw` keeps the object as given
/// (skills, subagents, MCP servers, ...) for the agent architectures.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentProfile {
    pub id: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub default_workspace_files: Option<Vec<WorkspaceFile>>,
    #[serde(skip)]
    pub raw: Map<String, Value>,
}

/// Why a persistence call failed. Every variant names the adapter method.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PersistenceError {
    #[error("persistence.{method} failed: {message}")]
    Failed { method: &'static str, message: String },
    #[error("persistence.{method} returned an invalid value: {detail}")]
    WrongShape { method: &'static str, detail: String },
    #[error("persistence.{method} did not settle within {ms} ms")]
    Timeout { method: &'static str, ms: u64 },
    #[error("persistence.{method} could not be called: the JavaScript environment is closing")]
    Closed { method: &'static str },
}

impl PersistenceError {
    pub fn method(&self) -> &'static str {
        match self {
            Self::Failed { method, .. }
            | Self::WrongShape { method, .. }
            | Self::Timeout { method, .. }
            | Self::Closed { method } => method,
        }
    }
    pub fn code(&self) -> &'static str {
        match self {
            Self::Failed { .. } => "PERSISTENCE_FAILED",
            Self::WrongShape { .. } => "PERSISTENCE_WRONG_SHAPE",
            Self::Timeout { .. } => "PERSISTENCE_TIMEOUT",
            Self::Closed { .. } => "PERSISTENCE_CLOSED",
        }
    }
}

pub type PResult<T> = std::result::Result<T, PersistenceError>;

/// The user's storage layer, as the reference defines it.
#[async_trait]
pub trait PersistenceAdapter: Send + Sync + 'static {
    async fn list_all_sessions(&self) -> PResult<Vec<SessionRecord>>;
    async fn load_session(&self, session_id: &str) -> PResult<Option<StoredSession>>;
    async fn create_session_record(&self, record: &SessionRecord) -> PResult<()>;
    async fn update_session_record(&self, session_id: &str, updates: &SessionRecordUpdate) -> PResult<()>;
    async fn save_transcript(&self, session_id: &str, raw_transcript: &str) -> PResult<()>;
    async fn save_workspace_file(&self, session_id: &str, file: &WorkspaceFile) -> PResult<()>;
    async fn delete_session_file(&self, session_id: &str, path: &str) -> PResult<()>;
    async fn list_agent_profiles(&self) -> PResult<Vec<AgentProfileSummary>>;
    async fn load_agent_profile(&self, profile_id: &str) -> PResult<Option<AgentProfile>>;
}
