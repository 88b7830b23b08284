//! What an agent run produces, architecture-independent: the reference's StreamEvents plus the
//! subagent lifecycle and run errors.

use serde_json::{Map, Value};

use super::blocks::Block;

#[derive(Debug, Clone, PartialEq)]
pub enum AgentEvent {
    BlockStart {
        conversation_id: String,
        block: Block,
    },
    TextDelta {
        conversation_id: String,
        block_id: String,
        delta: String,
    },
    BlockUpdate {
        conversation_id: String,
        block_id: String,
        updates: Map<String, Value>,
    },
    BlockComplete {
        conversation_id: String,
        block: Block,
    },
    MetadataUpdate {
        conversation_id: String,
        metadata: Map<String, Value>,
    },
    SubagentDiscovered {
        subagent_id: String,
    },
    SubagentCompleted {
        subagent_id: String,
        failed: bool,
    },
    /// The run failed; the message is for the user.
    Error {
        message: String,
    },
}

pub const MAIN: &str = "main";
