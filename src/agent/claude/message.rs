//! One Claude message (a transcript JSONL line or an SDK stdout message) -> blocks.
//!
//! Follows the reference's rules (spec §6.6) with two deliberate differences that no client
//! can observe as a contract change: block timestamps come from the message when it has one,
//! and generated ids are derived from the message uuid so re-parsing yields the same ids.

use serde::Deserialize;
use serde_json::value::RawValue;
use std::collections::HashMap;

use serde_json::{Map, Value};

use crate::agent::blocks::{Block, ToolStatus};
use crate::agent::ident::bounded;

/// The parts of a line every conversion needs; deserialized without building a full `Value`.
#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    subtype: Option<String>,
    #[serde(default)]
    uuid: Option<String>,
    #[serde(default)]
    timestamp: Option<String>,
    #[serde(default)]
    message: Option<MessageBody>,
    /// `toolUseResult` in transcripts, `tool_use_result` in live SDK messages.
    #[serde(default, borrow, rename = "toolUseResult", alias = "tool_use_result")]
    tool_use_result: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct MessageBody {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    content: Content,
}

/// A content item of any kind; unused fields stay `None`.
#[derive(Deserialize)]
struct Item {
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    input: Option<Value>,
    #[serde(default)]
    tool_use_id: Option<String>,
    #[serde(default)]
    content: Option<Value>,
    #[serde(default)]
    is_error: Option<bool>,
    #[serde(default)]
    thinking: Option<String>,
}

/// The fields of a Task tool's `toolUseResult` that make a subagent block.
#[derive(Deserialize)]
struct TaskResult {
    #[serde(default, rename = "agentId")]
    agent_id: Option<String>,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    prompt: Option<String>,
    #[serde(default)]
    content: Option<Value>,
    #[serde(default, rename = "totalDurationMs")]
    total_duration_ms: Option<f64>,
    #[serde(default)]
    subagent_type: Option<String>,
}

/// State carried from line to line of one conversation.
pub struct LineContext {
    /// Timestamp for messages that carry none.
    pub now: String,
    /// Content blocks seen so far per API message id. Claude Code writes (and the SDK streams)
    /// one line per content block, so this recovers each block's index in its message.
    blocks_per_message: HashMap<String, usize>,
}

impl LineContext {
    pub fn new(now: String) -> Self {
        Self { now, blocks_per_message: HashMap::new() }
    }

    /// Index of the next content block of API message `msg_id`.
    fn next_index(&mut self, msg_id: &str) -> usize {
        let n = self.blocks_per_message.entry(msg_id.to_string()).or_insert(0);
        *n += 1;
        *n - 1
    }
}

/// The id of content block `index` of API message `msg_id`, for blocks that have no id of their
/// own (text, thinking). The live stream knows the same two facts at `content_block_start`, so a
/// streamed block and the block parsed later from the transcript share this id.
pub fn content_block_id(msg_id: &str, index: usize) -> String {
    format!("{}_{index}", bounded(msg_id))
}

/// Generates block ids that are stable for a given message.
struct Ids<'a> {
    base: &'a str,
    n: usize,
}

impl Ids<'_> {
    fn next(&mut self) -> String {
        self.n += 1;
        format!("block_{}_{}", self.base, self.n)
    }
}

/// `message.content`: a string or an array of items, read in one pass.
#[derive(Default)]
enum Content {
    Text(String),
    Items(Vec<Item>),
    #[default]
    None,
}

impl<'de> Deserialize<'de> for Content {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Content;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string or an array of content items")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Content, E> {
                Ok(Content::Text(v.to_owned()))
            }
            fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Content, E> {
                Ok(Content::Text(v))
            }
            fn visit_unit<E: serde::de::Error>(self) -> Result<Content, E> {
                Ok(Content::None)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Content, A::Error> {
                let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(2));
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(Content::Items(items))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Content, A::Error> {
                while map.next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?.is_some() {}
                Ok(Content::None)
            }
        }
        d.deserialize_any(V)
    }
}

fn text_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Array(items) => items
            .iter()
            .filter(|i| i.get("type").and_then(Value::as_str) == Some("text"))
            .filter_map(|i| i.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

/// Copy the listed keys of `obj` that are present into a new map (JS leaves `undefined` out).
fn pick(obj: &Map<String, Value>, keys: &[&str]) -> Map<String, Value> {
    keys.iter().filter_map(|k| obj.get(*k).map(|v| (k.to_string(), v.clone()))).collect()
}

fn str_field<'a>(obj: &'a Map<String, Value>, k: &str) -> Option<&'a str> {
    obj.get(k).and_then(Value::as_str)
}

/// Convert one line. `fallback_base` seeds ids when the message has no uuid (e.g. its line
/// number). Unparseable lines yield nothing.
pub fn line_to_blocks(line: &str, fallback_base: &str, ctx: &mut LineContext) -> Vec<Block> {
    match convert(line, fallback_base, ctx) {
        Ok(blocks) => blocks,
        Err(e) => {
            tracing::debug!(error = %e, "skipping unparseable Claude message");
            Vec::new()
        }
    }
}

fn convert(line: &str, fallback_base: &str, ctx: &mut LineContext) -> Result<Vec<Block>, serde_json::Error> {
    let env: Envelope = serde_json::from_str(line)?;
    // Shared by every block of the line: bounded (see `agent::ident`).
    let timestamp = env.timestamp.as_deref().map_or_else(|| ctx.now.clone(), |t| bounded(t).into_owned());
    let uuid = env.uuid.as_deref().map(|u| bounded(u).into_owned());
    let base = bounded(uuid.as_deref().unwrap_or(fallback_base));
    let mut ids = Ids { base: &base, n: 0 };
    let mut out = Vec::new();
    match env.kind.as_str() {
        "user" => {
            let content = env.message.map(|m| m.content).unwrap_or_default();
            match content {
                Content::Items(items) if items.iter().any(|i| i.kind == "tool_result") => {
                    // The Task result belongs to the line's (one) tool result, never to more.
                    let mut task: Option<TaskResult> = env
                        .tool_use_result
                        .and_then(|r| serde_json::from_str::<TaskResult>(r.get()).ok())
                        .filter(|t| t.agent_id.is_some());
                    for item in items.into_iter().filter(|i| i.kind == "tool_result") {
                        let tool_use_id = item.tool_use_id.clone().unwrap_or_default();
                        out.push(match task.take() {
                            Some(t) => Block::Subagent {
                                id: ids.next(),
                                timestamp: timestamp.clone(),
                                subagent_id: format!("agent-{}", bounded(t.agent_id.as_deref().unwrap_or_default())),
                                name: t.subagent_type,
                                input: t.prompt.unwrap_or_default(),
                                status: if t.status.as_deref() == Some("completed") {
                                    ToolStatus::Success
                                } else {
                                    ToolStatus::Error
                                },
                                output: t.content.as_ref().map(text_of),
                                duration_ms: t.total_duration_ms,
                                tool_use_id: Some(tool_use_id),
                            },
                            None => Block::ToolResult {
                                id: ids.next(),
                                timestamp: timestamp.clone(),
                                tool_use_id,
                                output: item.content.unwrap_or(Value::Null),
                                is_error: item.is_error.unwrap_or(false),
                                duration_ms: None,
                            },
                        });
                    }
                }
                other => {
                    let text = match other {
                        Content::Text(s) => s,
                        Content::Items(items) => items
                            .into_iter()
                            .filter(|i| i.kind == "text")
                            .filter_map(|i| i.text)
                            .collect::<Vec<_>>()
                            .join("\n"),
                        Content::None => String::new(),
                    };
                    let id = uuid.clone().unwrap_or_else(|| ids.next());
                    out.push(Block::UserMessage { id, timestamp, content: Value::String(text) });
                }
            }
        }
        "assistant" => {
            let (msg_id, model, content) = match env.message {
                Some(m) => (m.id, m.model.map(|m| bounded(&m).into_owned()), m.content),
                None => (None, None, Content::None),
            };
            if let Content::Items(items) = content {
                for item in items {
                    let positional = msg_id.as_deref().map(|m| content_block_id(m, ctx.next_index(m)));
                    let mut own_id = || item.id.clone().or(positional.clone()).unwrap_or_else(|| ids.next());
                    match item.kind.as_str() {
                        "text" => out.push(Block::AssistantText {
                            id: own_id(),
                            timestamp: timestamp.clone(),
                            content: item.text.unwrap_or_default(),
                            model: model.clone(),
                        }),
                        "tool_use" => {
                            let id = item.id.unwrap_or_default();
                            out.push(Block::ToolUse {
                                id: id.clone(),
                                timestamp: timestamp.clone(),
                                tool_name: item.name.unwrap_or_default(),
                                tool_use_id: id,
                                input: item.input.unwrap_or_else(|| Value::Object(Map::new())),
                                status: ToolStatus::Success,
                                display_name: None,
                            })
                        }
                        "thinking" => out.push(Block::Thinking {
                            id: own_id(),
                            timestamp: timestamp.clone(),
                            content: item.thinking.unwrap_or_default(),
                        }),
                        other => tracing::debug!(kind = other, "skipping assistant content item"),
                    }
                }
            }
        }
        "system" | "result" | "auth_status" => {
            // Rare lines: read them whole.
            let obj: Map<String, Value> = serde_json::from_str(line)?;
            let id = uuid.clone().unwrap_or_else(|| ids.next());
            if let Some(b) = system_like(&env.kind, env.subtype.as_deref(), &obj, id, timestamp) {
                out.push(b);
            }
        }
        other => tracing::trace!(kind = other, "no blocks for message type"),
    }
    Ok(out)
}

fn system_block(id: String, timestamp: String, subtype: &str, message: String, metadata: Map<String, Value>) -> Block {
    Block::System { id, timestamp, subtype: subtype.into(), message, metadata: Some(metadata) }
}

fn system_like(kind: &str, subtype: Option<&str>, o: &Map<String, Value>, id: String, ts: String) -> Option<Block> {
    Some(match (kind, subtype) {
        ("system", Some("init")) => {
            let model = str_field(o, "model").unwrap_or("undefined");
            let msg = format!("Session initialized with {model}");
            system_block(
                id,
                ts,
                "session_start",
                msg,
                pick(o, &["model", "tools", "permissionMode", "agents", "mcp_servers"]),
            )
        }
        ("system", Some("status")) => {
            let msg = format!("Status: {}", str_field(o, "status").unwrap_or("ready"));
            system_block(id, ts, "status", msg, pick(o, &["status"]))
        }
        ("system", Some("hook_response")) => {
            let msg = format!(
                "Hook {} ({})",
                str_field(o, "hook_name").unwrap_or("undefined"),
                str_field(o, "hook_event").unwrap_or("undefined")
            );
            system_block(
                id,
                ts,
                "hook_response",
                msg,
                pick(o, &["hook_name", "hook_event", "stdout", "stderr", "exit_code"]),
            )
        }
        ("system", Some("compact_boundary")) => {
            let meta = o.get("compact_metadata").cloned().unwrap_or(Value::Null);
            let trigger = meta.get("trigger").and_then(Value::as_str).unwrap_or("undefined");
            let msg = format!("Compact boundary ({trigger})");
            let meta = match meta {
                Value::Object(m) => m,
                _ => Map::new(),
            };
            system_block(id, ts, "status", msg, meta)
        }
        ("result", sub) => {
            let success = sub == Some("success");
            let msg = if success {
                let turns = o.get("num_turns").map(|v| v.to_string()).unwrap_or_else(|| "undefined".into());
                let cost = o.get("total_cost_usd").and_then(Value::as_f64).unwrap_or(0.0);
                format!("Session completed successfully ({turns} turns, ${cost:.4})")
            } else {
                format!("Session ended with error: {}", sub.unwrap_or("undefined"))
            };
            let meta = pick(o, &["duration_ms", "num_turns", "total_cost_usd", "usage", "modelUsage", "errors"]);
            system_block(id, ts, if success { "session_end" } else { "error" }, msg, meta)
        }
        ("auth_status", _) => {
            let authenticating = o.get("isAuthenticating").and_then(Value::as_bool).unwrap_or(false);
            let msg = if authenticating { "Authenticating..." } else { "Authentication complete" };
            system_block(id, ts, "auth_status", msg.into(), pick(o, &["isAuthenticating", "output", "error"]))
        }
        _ => return None,
    })
}
