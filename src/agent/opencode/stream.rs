//! Live conversion of the OpenCode runner's stdout (one OpenCode event per line) into
//! [`AgentEvent`]s, per session (no state shared between sessions).
//!
//! Follows the reference (spec §7.3) and fixes its quirks: the user's own text part starts no
//! block; every block starts once and completes once with its final content, under the id the
//! export parser gives it (`part.id`, `<part id>_result` for a tool's result), so live ids equal
//! reloaded ids; text deltas are read from both the older `message.part.updated` + `delta` shape
//! and the newer `message.part.delta` events; a `task` tool is a subagent (discovered when its
//! child session is known, completed with the tool); child sessions' parts go to the child's
//! conversation; usage and cost become `session:metadata:update`; a runner error line or an
//! OpenCode `session.error` ends the turn with an error.

use std::collections::{HashMap, HashSet};

use serde_json::{json, Map, Value};

use super::parts::{iso, part_blocks, subagent_block, tool_status};
use crate::agent::blocks::Block;
use crate::agent::ident::bounded;
use crate::agent::stream::{AgentEvent, MAIN};

struct Active {
    conv: String,
    session: String,
    /// Deltas so far (text and reasoning parts).
    text: String,
    /// For task tools: the child session once known.
    subagent: Option<String>,
}

pub struct OpenCodeStream {
    main: String,
    /// Message ids of user messages: their parts are the prompt, not agent output.
    user_messages: HashSet<String>,
    models: HashMap<String, String>,
    active: HashMap<String, Active>,
    /// Part ids already completed (updates after that are ignored).
    done: HashSet<String>,
    /// Child session id -> the task part that spawned it.
    children: HashMap<String, String>,
    last_metadata: Option<Value>,
    ends: usize,
}

fn s<'a>(v: &'a Value, k: &str) -> Option<&'a str> {
    v.get(k).and_then(Value::as_str)
}

impl OpenCodeStream {
    pub fn new(main_session: &str) -> Self {
        Self {
            main: main_session.to_string(),
            user_messages: HashSet::new(),
            models: HashMap::new(),
            active: HashMap::new(),
            done: HashSet::new(),
            children: HashMap::new(),
            last_metadata: None,
            ends: 0,
        }
    }

    fn conversation(&self, session: &str) -> String {
        if session == self.main {
            MAIN.to_string()
        } else {
            // Goes into every event of the conversation: bounded (see `agent::ident`).
            bounded(session).into_owned()
        }
    }

    pub fn push_line(&mut self, line: &str) -> Vec<AgentEvent> {
        let Ok(ev) = serde_json::from_str::<Value>(line) else {
            tracing::debug!(line, "OpenCode runner printed a non-JSON line");
            return vec![];
        };
        let props = ev.get("properties").unwrap_or(&Value::Null);
        match s(&ev, "type").unwrap_or("") {
            "system" if s(&ev, "subtype") == Some("error") => {
                let message = ev.pointer("/error/message").and_then(Value::as_str).unwrap_or("OpenCode runner failed");
                vec![AgentEvent::Error { message: message.to_string() }]
            }
            "message.updated" => self.message(props.get("info").unwrap_or(&Value::Null)),
            "message.part.updated" => {
                let part = props.get("part").unwrap_or(&Value::Null);
                self.part(part, s(props, "delta"))
            }
            "message.part.delta" => self.delta(props),
            "session.idle" => self.idle(s(props, "sessionID").unwrap_or("")),
            "session.error" if s(props, "sessionID").is_none_or(|id| id == self.main) => {
                let e = props.get("error").unwrap_or(&Value::Null);
                let message = e
                    .pointer("/data/message")
                    .or_else(|| e.get("message"))
                    .or_else(|| e.get("name"))
                    .and_then(Value::as_str)
                    .unwrap_or("OpenCode reported a session error");
                vec![AgentEvent::Error { message: message.to_string() }]
            }
            _ => vec![],
        }
    }

    fn message(&mut self, info: &Value) -> Vec<AgentEvent> {
        let Some(id) = s(info, "id") else { return vec![] };
        if s(info, "role") == Some("user") {
            self.user_messages.insert(id.to_string());
            return vec![];
        }
        if let Some(m) = s(info, "modelID") {
            self.models.insert(id.to_string(), bounded(m).into_owned());
        }
        if s(info, "sessionID") != Some(self.main.as_str()) {
            return vec![];
        }
        let (Some(t), Some(cost)) = (info.get("tokens"), info.get("cost")) else { return vec![] };
        let n = |p: &str| t.pointer(p).and_then(Value::as_u64).unwrap_or(0);
        let meta = json!({
            "usage": {
                "inputTokens": n("/input"),
                "outputTokens": n("/output"),
                "thinkingTokens": n("/reasoning"),
                "cacheReadTokens": n("/cache/read"),
                "cacheWriteTokens": n("/cache/write"),
                "totalTokens": n("/input").saturating_add(n("/output")),
            },
            "costUSD": cost,
            "model": info.get("modelID").cloned().unwrap_or(Value::Null),
        });
        // The same figures are announced several times per message; say each change once.
        if self.last_metadata.as_ref() == Some(&meta) || n("/input").saturating_add(n("/output")) == 0 {
            return vec![];
        }
        self.last_metadata = Some(meta.clone());
        let Value::Object(metadata) = meta else { unreachable!() };
        vec![AgentEvent::MetadataUpdate { conversation_id: MAIN.into(), metadata }]
    }

    fn part(&mut self, part: &Value, delta: Option<&str>) -> Vec<AgentEvent> {
        let (Some(id), Some(kind)) = (s(part, "id"), s(part, "type")) else { return vec![] };
        let message = s(part, "messageID").unwrap_or("");
        if self.user_messages.contains(message) || self.done.contains(id) {
            return vec![];
        }
        let session = s(part, "sessionID").unwrap_or(&self.main).to_string();
        let conv = self.conversation(&session);
        let model = self.models.get(message).cloned();
        match kind {
            "text" | "reasoning" => {
                let mut out = self.start_streamed(id, kind, part, &conv, &session, model.as_deref());
                if let Some(d) = delta.filter(|d| !d.is_empty()) {
                    out.extend(self.push_delta(id, d));
                }
                if part.pointer("/time/end").is_some() {
                    out.extend(self.finish(id, part, model.as_deref()));
                }
                out
            }
            "tool" => self.tool(id, part, conv, session, model.as_deref()),
            // Step markers, retries, agent/subtask parts: complete as soon as they appear.
            _ => {
                let blocks = part_blocks(part, model.as_deref());
                if blocks.is_empty() {
                    return vec![];
                }
                self.done.insert(id.to_string());
                blocks
                    .into_iter()
                    .map(|block| AgentEvent::BlockComplete { conversation_id: conv.clone(), block })
                    .collect()
            }
        }
    }

    fn start_streamed(
        &mut self,
        id: &str,
        kind: &str,
        part: &Value,
        conv: &str,
        session: &str,
        model: Option<&str>,
    ) -> Vec<AgentEvent> {
        if self.active.contains_key(id) {
            return vec![];
        }
        self.active.insert(
            id.into(),
            Active { conv: conv.into(), session: session.into(), text: String::new(), subagent: None },
        );
        let timestamp = iso(part.pointer("/time/start"));
        let block = if kind == "reasoning" {
            Block::Thinking { id: id.into(), timestamp, content: String::new() }
        } else {
            Block::AssistantText { id: id.into(), timestamp, content: String::new(), model: model.map(str::to_string) }
        };
        vec![AgentEvent::BlockStart { conversation_id: conv.into(), block }]
    }

    fn push_delta(&mut self, id: &str, delta: &str) -> Vec<AgentEvent> {
        let Some(a) = self.active.get_mut(id) else { return vec![] };
        a.text.push_str(delta);
        vec![AgentEvent::TextDelta { conversation_id: a.conv.clone(), block_id: id.into(), delta: delta.into() }]
    }

    /// The newer event shape: `{ sessionID, messageID, partID, field: "text", delta }`.
    fn delta(&mut self, p: &Value) -> Vec<AgentEvent> {
        let (Some(id), Some(delta)) = (s(p, "partID"), s(p, "delta")) else { return vec![] };
        if s(p, "field").is_some_and(|f| f != "text") || self.user_messages.contains(s(p, "messageID").unwrap_or("")) {
            return vec![];
        }
        if self.done.contains(id) {
            return vec![];
        }
        let mut out = Vec::new();
        if !self.active.contains_key(id) {
            // A delta before its part was announced: it is text (reasoning parts are announced first).
            let session = s(p, "sessionID").unwrap_or(&self.main).to_string();
            let conv = self.conversation(&session);
            let model = self.models.get(s(p, "messageID").unwrap_or("")).cloned();
            out.extend(self.start_streamed(id, "text", &Value::Null, &conv, &session, model.as_deref()));
        }
        out.extend(self.push_delta(id, delta));
        out
    }

    /// Complete a streamed part with its final content (the part's own text when it has one).
    fn finish(&mut self, id: &str, part: &Value, model: Option<&str>) -> Vec<AgentEvent> {
        let Some(a) = self.active.remove(id) else { return vec![] };
        self.done.insert(id.to_string());
        let text = s(part, "text").map(str::to_string).unwrap_or(a.text);
        if text.trim().is_empty() {
            return vec![];
        }
        let timestamp = iso(part.pointer("/time/start"));
        let block = if s(part, "type") == Some("reasoning") {
            Block::Thinking { id: id.into(), timestamp, content: text }
        } else {
            Block::AssistantText { id: id.into(), timestamp, content: text, model: model.map(str::to_string) }
        };
        vec![AgentEvent::BlockComplete { conversation_id: a.conv, block }]
    }

    fn tool(&mut self, id: &str, part: &Value, conv: String, session: String, model: Option<&str>) -> Vec<AgentEvent> {
        let state = part.get("state").unwrap_or(&Value::Null);
        let status = s(state, "status").unwrap_or("pending");
        let finished = matches!(status, "completed" | "error");
        let child = state.pointer("/metadata/sessionId").and_then(Value::as_str);
        let is_task = s(part, "tool") == Some("task");
        let mut out = Vec::new();
        // A task tool is shown as a subagent once its child session exists.
        if is_task && (child.is_some() || self.active.get(id).is_some_and(|a| a.subagent.is_some())) {
            if let (Some(child), false) = (child, self.active.contains_key(id)) {
                self.children.insert(child.to_string(), id.to_string());
                self.active.insert(
                    id.into(),
                    Active { conv: conv.clone(), session, text: String::new(), subagent: Some(child.into()) },
                );
                out.push(AgentEvent::SubagentDiscovered { subagent_id: child.to_string() });
                if let Some(block) = subagent_block(part) {
                    out.push(AgentEvent::BlockStart { conversation_id: conv.clone(), block });
                }
            } else if !finished {
                out.push(update(&conv, id, json!({ "status": tool_status(status) })));
            }
            if finished {
                let a = self.active.remove(id);
                self.done.insert(id.to_string());
                if let Some(block) = subagent_block(part) {
                    out.push(AgentEvent::BlockComplete { conversation_id: conv, block });
                }
                if let Some(child) = a.and_then(|a| a.subagent) {
                    out.push(AgentEvent::SubagentCompleted { subagent_id: child, failed: status == "error" });
                }
            }
            return out;
        }
        if is_task && !finished {
            return out; // wait for the child session before showing anything
        }
        if !self.active.contains_key(id) && !finished {
            self.active.insert(id.into(), Active { conv: conv.clone(), session, text: String::new(), subagent: None });
            let block = Block::ToolUse {
                id: id.into(),
                timestamp: iso(state.pointer("/time/start")),
                tool_name: s(part, "tool").unwrap_or("").into(),
                tool_use_id: s(part, "callID").unwrap_or("").into(),
                input: state.get("input").cloned().unwrap_or_else(|| json!({})),
                status: tool_status(status),
                display_name: s(state, "title").map(str::to_string),
            };
            out.push(AgentEvent::BlockStart { conversation_id: conv, block });
            return out;
        }
        if !finished {
            let mut u = json!({ "status": tool_status(status) });
            if let Some(input) = state.get("input").filter(|i| i.as_object().is_some_and(|o| !o.is_empty())) {
                u["input"] = input.clone();
            }
            if let Some(t) = s(state, "title") {
                u["displayName"] = json!(t);
            }
            out.push(update(&conv, id, u));
            return out;
        }
        self.active.remove(id);
        self.done.insert(id.to_string());
        out.push(update(&conv, id, json!({ "status": tool_status(status) })));
        out.extend(
            part_blocks(part, model)
                .into_iter()
                .map(|block| AgentEvent::BlockComplete { conversation_id: conv.clone(), block }),
        );
        out
    }

    /// A session went idle: its unfinished parts complete with what they have; the main
    /// session's idle ends the turn.
    fn idle(&mut self, session: &str) -> Vec<AgentEvent> {
        let ids: Vec<String> = self
            .active
            .iter()
            .filter(|(_, a)| session == self.main || a.session == session)
            .map(|(id, _)| id.clone())
            .collect();
        let mut out = Vec::new();
        for id in ids {
            let Some(a) = self.active.remove(&id) else { continue };
            self.done.insert(id.clone());
            if a.subagent.is_some() || a.text.trim().is_empty() {
                continue;
            }
            let block = Block::AssistantText { id, timestamp: crate::time::now_iso(), content: a.text, model: None };
            out.push(AgentEvent::BlockComplete { conversation_id: a.conv, block });
        }
        if session == self.main {
            self.ends += 1;
            let mut meta = Map::new();
            meta.insert("sessionId".into(), json!(self.main));
            let block = Block::System {
                id: format!("{}_end_{}", self.main, self.ends),
                timestamp: crate::time::now_iso(),
                subtype: "session_end".into(),
                message: "Session completed".into(),
                metadata: Some(meta),
            };
            out.push(AgentEvent::BlockComplete { conversation_id: MAIN.into(), block });
        }
        out
    }
}

fn update(conv: &str, block_id: &str, updates: Value) -> AgentEvent {
    let Value::Object(updates) = updates else { unreachable!() };
    AgentEvent::BlockUpdate { conversation_id: conv.into(), block_id: block_id.into(), updates }
}
