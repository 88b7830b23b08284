//! How a turn ends, whatever the agent managed to say: every block it started is completed,
//! tools still running are marked failed, and exactly one end block carries
//! `metadata.stopReason` (`completed`, `interrupted` or `error`).

use std::collections::HashMap;

use serde_json::{json, Map, Value};

use super::blocks::{Block, ToolStatus};
use super::stream::{AgentEvent, MAIN};

/// Why a turn ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    Completed,
    Interrupted,
    Error,
}

impl StopReason {
    pub fn as_str(self) -> &'static str {
        match self {
            StopReason::Completed => "completed",
            StopReason::Interrupted => "interrupted",
            StopReason::Error => "error",
        }
    }
}

/// Watches one turn's events on their way out; at the end, says what is left to close.
#[derive(Default)]
pub struct TurnTracker {
    /// Started and not completed: the block as started, with the text streamed into it.
    open: HashMap<String, (String, Block)>,
    /// Order of `open`'s keys, so closing follows the order blocks started in.
    order: Vec<String>,
    /// Tool calls completed as blocks whose result has not come.
    running_tools: HashMap<String, (String, Block)>,
    /// The agent's own end block (its result), held back until the turn's reason is known.
    end: Option<Block>,
}

fn is_end_block(conversation_id: &str, block: &Block) -> bool {
    conversation_id == MAIN
        && matches!(block, Block::System { subtype, .. } if subtype == "session_end" || subtype == "error")
}

impl TurnTracker {
    /// Note `ev`; returns it unless it is the end block (held for [`Self::finish`]).
    pub fn observe(&mut self, ev: AgentEvent) -> Option<AgentEvent> {
        match &ev {
            AgentEvent::BlockStart { conversation_id, block } => {
                let id = block.id().to_string();
                if !self.open.contains_key(&id) {
                    self.order.push(id.clone());
                }
                self.open.insert(id, (conversation_id.clone(), block.clone()));
            }
            AgentEvent::TextDelta { block_id, delta, .. } => {
                if let Some((_, Block::AssistantText { content, .. } | Block::Thinking { content, .. })) =
                    self.open.get_mut(block_id)
                {
                    content.push_str(delta);
                }
            }
            AgentEvent::BlockUpdate { block_id, updates, .. } => {
                let settled = matches!(updates.get("status").and_then(Value::as_str), Some("success" | "error"));
                if settled {
                    self.running_tools.remove(block_id);
                }
            }
            AgentEvent::BlockComplete { conversation_id, block } => {
                if is_end_block(conversation_id, block) {
                    self.end = Some(block.clone());
                    return None;
                }
                let id = block.id();
                self.open.remove(id);
                match block {
                    Block::ToolUse { status: ToolStatus::Pending | ToolStatus::Running, .. }
                    | Block::Subagent { status: ToolStatus::Pending | ToolStatus::Running, .. } => {
                        self.running_tools.insert(id.to_string(), (conversation_id.clone(), block.clone()));
                    }
                    Block::ToolResult { tool_use_id, .. } => {
                        self.running_tools.retain(
                            |_, (_, b)| !matches!(b, Block::ToolUse { tool_use_id: t, .. } if t == tool_use_id),
                        );
                    }
                    _ => {
                        self.running_tools.remove(id);
                    }
                }
            }
            _ => {}
        }
        Some(ev)
    }

    /// The events that end the turn: open blocks completed as they stand (a tool that never got
    /// its result as failed, when the turn did not complete), then the end block with
    /// `stopReason` (the agent's own, or one made here; `error` is the failure's message).
    pub fn finish(&mut self, reason: StopReason, session_id: &str, error: Option<&str>) -> Vec<AgentEvent> {
        let mut out = Vec::new();
        for id in std::mem::take(&mut self.order) {
            let Some((conversation_id, mut block)) = self.open.remove(&id) else { continue };
            if let Block::ToolUse { status, .. } | Block::Subagent { status, .. } = &mut block {
                *status = ToolStatus::Error;
            }
            out.push(AgentEvent::BlockComplete { conversation_id, block });
        }
        if reason != StopReason::Completed {
            let mut tools: Vec<_> = self.running_tools.drain().collect();
            tools.sort_by(|a, b| a.0.cmp(&b.0));
            for (id, (conversation_id, _)) in tools {
                let mut updates = Map::new();
                updates.insert("status".into(), json!("error"));
                out.push(AgentEvent::BlockUpdate { conversation_id, block_id: id, updates });
            }
        }
        let now = crate::time::now_iso();
        let made = |subtype: &str, message: String| Block::System {
            id: format!("{session_id}_end_{}", uuid::Uuid::new_v4().simple()),
            timestamp: now.clone(),
            subtype: subtype.into(),
            message,
            metadata: None,
        };
        let mut end = match (reason, self.end.take()) {
            (StopReason::Completed, Some(b)) => b,
            (StopReason::Completed, None) => made("session_end", "Session completed".into()),
            (StopReason::Interrupted, _) => made("session_end", "Session interrupted".into()),
            (StopReason::Error, Some(b @ Block::System { .. })) if matches!(&b, Block::System { subtype, .. } if subtype == "error") => {
                b
            }
            (StopReason::Error, _) => {
                made("error", format!("Session ended with error: {}", error.unwrap_or("unknown error")))
            }
        };
        if let Block::System { metadata, .. } = &mut end {
            metadata.get_or_insert_with(Map::new).insert("stopReason".into(), json!(reason.as_str()));
        }
        out.push(AgentEvent::BlockComplete { conversation_id: MAIN.into(), block: end });
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(id: &str) -> Block {
        Block::AssistantText { id: id.into(), timestamp: "t".into(), content: String::new(), model: None }
    }
    fn tool(id: &str, status: ToolStatus) -> Block {
        Block::ToolUse {
            id: id.into(),
            timestamp: "t".into(),
            tool_name: "Bash".into(),
            tool_use_id: id.into(),
            input: json!({}),
            status,
            display_name: None,
        }
    }
    fn start(b: Block) -> AgentEvent {
        AgentEvent::BlockStart { conversation_id: MAIN.into(), block: b }
    }
    fn complete(b: Block) -> AgentEvent {
        AgentEvent::BlockComplete { conversation_id: MAIN.into(), block: b }
    }
    fn stop_reason(ev: &AgentEvent) -> (String, String) {
        let AgentEvent::BlockComplete { block: Block::System { subtype, metadata, .. }, .. } = ev else {
            panic!("not an end block: {ev:?}")
        };
        (subtype.clone(), metadata.as_ref().unwrap()["stopReason"].as_str().unwrap().to_string())
    }

    #[test]
    fn an_interrupted_turn_completes_partial_text_and_fails_running_tools() {
        let mut t = TurnTracker::default();
        t.observe(start(text("a")));
        t.observe(AgentEvent::TextDelta { conversation_id: MAIN.into(), block_id: "a".into(), delta: "Hel".into() });
        t.observe(start(tool("t1", ToolStatus::Pending)));
        t.observe(complete(tool("t1", ToolStatus::Pending)));
        t.observe(start(tool("t2", ToolStatus::Pending)));
        let out = t.finish(StopReason::Interrupted, "s", None);
        assert_eq!(out.len(), 4, "{out:#?}");
        assert!(
            matches!(&out[0], AgentEvent::BlockComplete { block: Block::AssistantText { content, .. }, .. } if content == "Hel")
        );
        assert!(
            matches!(&out[1], AgentEvent::BlockComplete { block: Block::ToolUse { id, status: ToolStatus::Error, .. }, .. } if id == "t2")
        );
        assert!(
            matches!(&out[2], AgentEvent::BlockUpdate { block_id, updates, .. } if block_id == "t1" && updates["status"] == "error")
        );
        assert_eq!(stop_reason(&out[3]), ("session_end".into(), "interrupted".into()));
    }

    #[test]
    fn the_agents_end_block_is_held_and_marked() {
        let mut t = TurnTracker::default();
        let end = Block::System {
            id: "r".into(),
            timestamp: "t".into(),
            subtype: "session_end".into(),
            message: "Session completed successfully".into(),
            metadata: Some(Map::new()),
        };
        assert!(t.observe(complete(end)).is_none(), "held back");
        t.observe(complete(tool("t1", ToolStatus::Pending)));
        t.observe(complete(Block::ToolResult {
            id: "r1".into(),
            timestamp: "t".into(),
            tool_use_id: "t1".into(),
            output: json!("ok"),
            is_error: false,
            duration_ms: None,
        }));
        let out = t.finish(StopReason::Completed, "s", None);
        assert_eq!(out.len(), 1);
        assert_eq!(stop_reason(&out[0]), ("session_end".into(), "completed".into()));
    }

    #[test]
    fn a_failed_turn_never_ends_as_completed() {
        let mut t = TurnTracker::default();
        let completed = Block::System {
            id: "r".into(),
            timestamp: "t".into(),
            subtype: "session_end".into(),
            message: "Session completed".into(),
            metadata: None,
        };
        t.observe(complete(completed));
        let out = t.finish(StopReason::Error, "s", Some("the model API kept failing"));
        let (subtype, reason) = stop_reason(&out[0]);
        assert_eq!((subtype.as_str(), reason.as_str()), ("error", "error"));
        let AgentEvent::BlockComplete { block: Block::System { message, .. }, .. } = &out[0] else { unreachable!() };
        assert!(message.contains("the model API kept failing"), "{message}");
    }
}
