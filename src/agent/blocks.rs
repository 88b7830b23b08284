//! Conversation blocks (`ConversationBlock`) as the reference serializes them.
//! Optional fields that are unset are omitted, as JSON.stringify omits `undefined`.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Block {
    UserMessage {
        id: String,
        timestamp: String,
        content: Value,
    },
    AssistantText {
        id: String,
        timestamp: String,
        content: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        model: Option<String>,
    },
    #[serde(rename_all = "camelCase")]
    ToolUse {
        id: String,
        timestamp: String,
        tool_name: String,
        tool_use_id: String,
        input: Value,
        status: ToolStatus,
        #[serde(skip_serializing_if = "Option::is_none")]
        display_name: Option<String>,
    },
    #[serde(rename_all = "camelCase")]
    ToolResult {
        id: String,
        timestamp: String,
        tool_use_id: String,
        output: Value,
        is_error: bool,
        #[serde(skip_serializing_if = "Option::is_none")]
        duration_ms: Option<f64>,
    },
    Thinking {
        id: String,
        timestamp: String,
        content: String,
    },
    System {
        id: String,
        timestamp: String,
        subtype: String,
        message: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        metadata: Option<Map<String, Value>>,
    },
    #[serde(rename_all = "camelCase")]
    Subagent {
        id: String,
        timestamp: String,
        subagent_id: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        name: Option<String>,
        input: String,
        status: ToolStatus,
        #[serde(skip_serializing_if = "Option::is_none")]
        output: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        duration_ms: Option<f64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        tool_use_id: Option<String>,
    },
    Error {
        id: String,
        timestamp: String,
        message: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        code: Option<String>,
    },
}

impl Block {
    pub fn id(&self) -> &str {
        match self {
            Block::UserMessage { id, .. }
            | Block::AssistantText { id, .. }
            | Block::ToolUse { id, .. }
            | Block::ToolResult { id, .. }
            | Block::Thinking { id, .. }
            | Block::System { id, .. }
            | Block::Subagent { id, .. }
            | Block::Error { id, .. } => id,
        }
    }
}

/// `ToolExecutionStatus` / `SubagentStatus`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ToolStatus {
    Pending,
    Running,
    Success,
    Error,
}

/// A subagent's conversation: `{ id, blocks }`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubagentConversation {
    pub id: String,
    pub blocks: Vec<Block>,
}

/// The result of parsing a stored transcript.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ParsedTranscript {
    pub blocks: Vec<Block>,
    pub subagents: Vec<SubagentConversation>,
}
