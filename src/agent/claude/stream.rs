//! Live conversion of the Claude runner's stdout (one SDK message per line) into [`AgentEvent`]s.
//!
//! Follows the reference (spec §6.7) and fixes its quirks: streamed text and thinking blocks
//! carry a real id (`<message id>_<index>`, the id the transcript parser gives the same block)
//! on start, deltas and completion; every streamed block gets exactly one `block_complete` with
//! its final content; tool input is assembled from its JSON deltas; a tool's status moves to
//! success/error when its result arrives; subagents are announced and completed; messages of a
//! subagent go to the subagent's conversation (`agent-<id>`).

use std::collections::{HashMap, HashSet};

use serde_json::{json, Value};

use super::message::{content_block_id, line_to_blocks, LineContext};
use crate::agent::blocks::{Block, ToolStatus};
use crate::agent::ident::bounded;
use crate::agent::stream::{AgentEvent, MAIN};

enum Kind {
    Text,
    Thinking,
    Tool { name: String },
}

struct Active {
    id: String,
    kind: Kind,
    text: String,
    json: String,
    timestamp: String,
}

#[derive(Default)]
struct Conversation {
    /// API message currently streaming, and its model.
    message: Option<(String, Option<String>)>,
    /// Streaming blocks by content index.
    active: HashMap<usize, Active>,
}

pub struct ClaudeStream {
    ctx: LineContext,
    conversations: HashMap<String, Conversation>,
    /// Block ids already completed (streamed blocks are completed once).
    completed: HashSet<String>,
    /// Agent tool use id -> subagent id.
    subagent_by_tool: HashMap<String, String>,
    line_no: usize,
}

impl Default for ClaudeStream {
    fn default() -> Self {
        Self::new()
    }
}

fn str_of<'a>(v: &'a Value, k: &str) -> Option<&'a str> {
    v.get(k).and_then(Value::as_str)
}

impl ClaudeStream {
    pub fn new() -> Self {
        Self {
            ctx: LineContext::new(crate::time::now_iso()),
            conversations: HashMap::new(),
            completed: HashSet::new(),
            subagent_by_tool: HashMap::new(),
            line_no: 0,
        }
    }

    fn conversation_of(&self, msg: &Value) -> String {
        // Conversation ids go into every event: bounded (see `agent::ident`).
        if let Some(agent) = str_of(msg, "agent_id") {
            return format!("agent-{}", bounded(agent));
        }
        match str_of(msg, "parent_tool_use_id") {
            Some(tool) => self.subagent_by_tool.get(tool).cloned().unwrap_or_else(|| bounded(tool).into_owned()),
            None => MAIN.to_string(),
        }
    }

    /// Convert one stdout line. Lines that are not JSON are ignored (logged at debug).
    pub fn push_line(&mut self, line: &str) -> Vec<AgentEvent> {
        self.line_no += 1;
        let line = line.trim();
        if line.is_empty() {
            return vec![];
        }
        let msg: Value = match serde_json::from_str(line) {
            Ok(v) => v,
            Err(_) => {
                tracing::debug!(line, "runner printed a non-JSON line");
                return vec![];
            }
        };
        self.ctx.now = crate::time::now_iso();
        let conv = self.conversation_of(&msg);
        match (str_of(&msg, "type").unwrap_or(""), str_of(&msg, "subtype")) {
            ("stream_event", _) => self.stream_event(conv, msg.get("event").unwrap_or(&Value::Null)),
            ("system", Some("error")) => {
                let message =
                    msg.pointer("/error/message").and_then(Value::as_str).unwrap_or("Unknown SDK error").to_string();
                vec![AgentEvent::Error { message }]
            }
            ("system", Some("task_started")) => {
                let Some(task) = str_of(&msg, "task_id") else { return vec![] };
                let id = format!("agent-{}", bounded(task));
                if let Some(tool) = str_of(&msg, "tool_use_id") {
                    self.subagent_by_tool.insert(tool.to_string(), id.clone());
                }
                vec![AgentEvent::SubagentDiscovered { subagent_id: id }]
            }
            ("system", Some("task_notification")) => {
                let Some(task) = str_of(&msg, "task_id") else { return vec![] };
                let failed = !matches!(str_of(&msg, "status"), Some("completed"));
                vec![AgentEvent::SubagentCompleted { subagent_id: format!("agent-{}", bounded(task)), failed }]
            }
            ("tool_progress", _) => match str_of(&msg, "tool_use_id") {
                Some(id) => vec![update(conv, id, json!({"status": "running"}))],
                None => vec![],
            },
            ("result", sub) => self.result(line, &msg, sub),
            _ => self.complete_message(conv, line),
        }
    }

    fn stream_event(&mut self, conv: String, ev: &Value) -> Vec<AgentEvent> {
        let index = ev.get("index").and_then(Value::as_u64).unwrap_or(0) as usize;
        let now = self.ctx.now.clone();
        let state = self.conversations.entry(conv.clone()).or_default();
        match str_of(ev, "type").unwrap_or("") {
            "message_start" => {
                let m = ev.get("message").unwrap_or(&Value::Null);
                // Every block of the message carries these: bounded (see `agent::ident`).
                let id = bounded(str_of(m, "id").unwrap_or("msg")).into_owned();
                state.message = Some((id, str_of(m, "model").map(|m| bounded(m).into_owned())));
                state.active.clear();
                vec![]
            }
            "content_block_start" => {
                let Some((msg_id, model)) = state.message.clone() else { return vec![] };
                let cb = ev.get("content_block").unwrap_or(&Value::Null);
                let (kind, id, block) = match str_of(cb, "type") {
                    Some("text") => {
                        let id = content_block_id(&msg_id, index);
                        let b = Block::AssistantText {
                            id: id.clone(),
                            timestamp: now.clone(),
                            content: String::new(),
                            model,
                        };
                        (Kind::Text, id, b)
                    }
                    Some("thinking") => {
                        let id = content_block_id(&msg_id, index);
                        let b = Block::Thinking { id: id.clone(), timestamp: now.clone(), content: String::new() };
                        (Kind::Thinking, id, b)
                    }
                    Some("tool_use") => {
                        let id = str_of(cb, "id").unwrap_or_default().to_string();
                        let name = str_of(cb, "name").unwrap_or_default().to_string();
                        let b = Block::ToolUse {
                            id: id.clone(),
                            timestamp: now.clone(),
                            tool_name: name.clone(),
                            tool_use_id: id.clone(),
                            input: json!({}),
                            status: ToolStatus::Pending,
                            display_name: None,
                        };
                        (Kind::Tool { name }, id, b)
                    }
                    _ => return vec![],
                };
                state
                    .active
                    .insert(index, Active { id, kind, text: String::new(), json: String::new(), timestamp: now });
                vec![AgentEvent::BlockStart { conversation_id: conv, block }]
            }
            "content_block_delta" => {
                let Some(a) = state.active.get_mut(&index) else { return vec![] };
                let d = ev.get("delta").unwrap_or(&Value::Null);
                let piece = match str_of(d, "type") {
                    Some("text_delta") => str_of(d, "text"),
                    Some("thinking_delta") => str_of(d, "thinking"),
                    Some("input_json_delta") => {
                        a.json.push_str(str_of(d, "partial_json").unwrap_or(""));
                        None
                    }
                    _ => None,
                };
                match piece {
                    Some(p) if !p.is_empty() => {
                        a.text.push_str(p);
                        vec![AgentEvent::TextDelta {
                            conversation_id: conv,
                            block_id: a.id.clone(),
                            delta: p.to_string(),
                        }]
                    }
                    _ => vec![],
                }
            }
            "content_block_stop" => {
                // Normally the SDK's complete `assistant` message came first and completed the
                // block; if it did not, complete it from what was streamed.
                let Some(a) = state.active.remove(&index) else { return vec![] };
                let model = state.message.as_ref().and_then(|m| m.1.clone());
                if self.completed.contains(&a.id) {
                    return vec![];
                }
                self.completed.insert(a.id.clone());
                vec![AgentEvent::BlockComplete { conversation_id: conv, block: streamed_block(a, model) }]
            }
            "message_delta" => match ev.get("usage") {
                Some(u) => {
                    let input = u.get("input_tokens").and_then(Value::as_u64).unwrap_or(0);
                    let output = u.get("output_tokens").and_then(Value::as_u64).unwrap_or(0);
                    let usage = json!({"inputTokens": input, "outputTokens": output, "totalTokens": input + output});
                    vec![metadata(conv, json!({ "usage": usage }))]
                }
                None => vec![],
            },
            _ => vec![],
        }
    }

    /// A complete (non-stream) SDK message: its blocks by the transcript rules. Blocks that were
    /// streamed are completed here with their final content; tool results also settle the
    /// status of their tool use.
    fn complete_message(&mut self, conv: String, line: &str) -> Vec<AgentEvent> {
        let blocks = line_to_blocks(line, &format!("live{}", self.line_no), &mut self.ctx);
        let mut out = Vec::with_capacity(blocks.len());
        for block in blocks {
            let id = block.id().to_string();
            if !self.completed.insert(id.clone()) {
                continue;
            }
            let settles = match &block {
                Block::ToolResult { tool_use_id, is_error, .. } => Some((tool_use_id.clone(), *is_error)),
                Block::Subagent { tool_use_id: Some(t), status, .. } => Some((t.clone(), *status == ToolStatus::Error)),
                _ => None,
            };
            let block = match block {
                // A tool use completes when it is fully known; it runs after that.
                Block::ToolUse { id, timestamp, tool_name, tool_use_id, input, display_name, .. } => Block::ToolUse {
                    id,
                    timestamp,
                    tool_name,
                    tool_use_id,
                    input,
                    status: ToolStatus::Running,
                    display_name,
                },
                b => b,
            };
            out.push(AgentEvent::BlockComplete { conversation_id: conv.clone(), block });
            if let Some((tool, failed)) = settles {
                let status = if failed { "error" } else { "success" };
                let target = if self.subagent_by_tool.contains_key(&tool) { MAIN.to_string() } else { conv.clone() };
                out.push(update(target, &tool, json!({ "status": status })));
            }
        }
        out
    }

    fn result(&mut self, line: &str, msg: &Value, subtype: Option<&str>) -> Vec<AgentEvent> {
        let mut out = Vec::new();
        let ok = subtype == Some("success") && !msg.get("is_error").and_then(Value::as_bool).unwrap_or(false);
        if subtype == Some("success") {
            let u = msg.get("usage").unwrap_or(&Value::Null);
            let n = |k: &str| u.get(k).and_then(Value::as_u64).unwrap_or(0);
            let mut meta = json!({
                "usage": {
                    "inputTokens": n("input_tokens"),
                    "outputTokens": n("output_tokens"),
                    "cacheReadTokens": n("cache_read_input_tokens"),
                    "cacheWriteTokens": n("cache_creation_input_tokens"),
                    "totalTokens": n("input_tokens") + n("output_tokens"),
                }
            });
            if let Some(c) = msg.get("total_cost_usd") {
                meta["costUSD"] = c.clone();
            }
            out.push(metadata(MAIN.to_string(), meta));
        }
        out.extend(self.complete_message(MAIN.to_string(), line));
        if !ok {
            let text = str_of(msg, "result").map(str::to_string);
            let message = text.unwrap_or_else(|| format!("SDK execution failed: {}", subtype.unwrap_or("unknown")));
            out.push(AgentEvent::Error { message });
        }
        out
    }
}

fn update(conv: String, block_id: &str, updates: Value) -> AgentEvent {
    let Value::Object(updates) = updates else { unreachable!() };
    AgentEvent::BlockUpdate { conversation_id: conv, block_id: block_id.to_string(), updates }
}

fn metadata(conv: String, m: Value) -> AgentEvent {
    let Value::Object(metadata) = m else { unreachable!() };
    AgentEvent::MetadataUpdate { conversation_id: conv, metadata }
}

fn streamed_block(a: Active, model: Option<String>) -> Block {
    match a.kind {
        Kind::Text => Block::AssistantText { id: a.id, timestamp: a.timestamp, content: a.text, model },
        Kind::Thinking => Block::Thinking { id: a.id, timestamp: a.timestamp, content: a.text },
        Kind::Tool { name } => Block::ToolUse {
            id: a.id.clone(),
            timestamp: a.timestamp,
            tool_name: name,
            tool_use_id: a.id,
            input: serde_json::from_str(&a.json).unwrap_or_else(|_| json!({})),
            status: ToolStatus::Running,
            display_name: None,
        },
    }
}
