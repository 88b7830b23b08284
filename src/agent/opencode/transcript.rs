//! The stored OpenCode transcript -> blocks (spec §7.4, §7.5).
//!
//! The stored transcript is the session's `opencode export` JSON (`{ info, messages: [{ info,
//! parts }] }`), or, when the session ran task subagents, `{ main: <export>, subagents: [{ id,
//! export }] }` with the child sessions' own exports. Parsing never fails: a blob of neither
//! shape yields no blocks (with a warning) instead of making the session unloadable.
//!
//! A subagent's conversation is its child export when stored; otherwise it is rebuilt from the
//! task tool's `metadata.summary`, which only lists the child's tool calls.

use std::collections::{HashMap, HashSet};

use serde_json::{json, Value};

use super::parts::blocks_at;
use crate::agent::blocks::{Block, ParsedTranscript, SubagentConversation};
use crate::agent::ident::bounded;

fn s<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

fn parts(message: &Value) -> impl Iterator<Item = &Value> {
    message.get("parts").and_then(Value::as_array).into_iter().flatten()
}

/// The messages of an export, or `None` when it is not one.
fn messages(export: &Value) -> Option<&Vec<Value>> {
    export.get("messages")?.as_array()
}

/// Parse a stored transcript: a plain export or the `{ main, subagents }` combination.
pub fn parse_export(raw: &str) -> ParsedTranscript {
    if raw.trim().is_empty() {
        return ParsedTranscript::default();
    }
    let root: Value = match serde_json::from_str(raw) {
        Ok(v) => v,
        Err(e) => {
            tracing::warn!(error = %e, "stored OpenCode transcript is not JSON; showing no blocks");
            return ParsedTranscript::default();
        }
    };
    let main = root.get("main").unwrap_or(&root);
    let Some(main_messages) = messages(main) else {
        tracing::warn!("stored OpenCode transcript is not an OpenCode export; showing no blocks");
        return ParsedTranscript::default();
    };

    // Child exports stored beside the main one (combined form only).
    let mut children: HashMap<&str, Vec<Block>> = HashMap::new();
    for child in root.get("main").and(root.get("subagents")).and_then(Value::as_array).into_iter().flatten() {
        match (s(child, "id"), child.get("export").and_then(messages)) {
            (Some(id), Some(msgs)) => {
                children.insert(id, conversation(msgs));
            }
            _ => {
                tracing::warn!(id = s(child, "id"), "stored OpenCode subagent export is unreadable; using its summary")
            }
        }
    }

    // One conversation per child session a task tool started, in the order they started.
    let mut seen = HashSet::new();
    let mut subagents = Vec::new();
    for part in main_messages.iter().flat_map(parts) {
        let Some(child) = task_child(part) else { continue };
        if !seen.insert(child) {
            continue;
        }
        let blocks = match children.remove(child) {
            Some(full) if !full.is_empty() => full,
            _ => summary_blocks(part),
        };
        if !blocks.is_empty() {
            subagents.push(SubagentConversation { id: child.to_string(), blocks });
        }
    }
    if !children.is_empty() {
        tracing::debug!(ids = ?children.keys().collect::<Vec<_>>(), "stored OpenCode subagents no task tool started; left out");
    }

    ParsedTranscript { blocks: conversation(main_messages), subagents }
}

/// The child session a `task` tool part started, if it got that far.
fn task_child(part: &Value) -> Option<&str> {
    if s(part, "type") != Some("tool") || s(part, "tool") != Some("task") {
        return None;
    }
    part.pointer("/state/metadata/sessionId").and_then(Value::as_str)
}

/// The blocks of one export's messages, in order.
fn conversation(messages: &[Value]) -> Vec<Block> {
    let mut out = Vec::new();
    for message in messages {
        let info = message.get("info").unwrap_or(&Value::Null);
        let created = info.pointer("/time/created");
        match s(info, "role") {
            Some("user") => {
                // Synthetic parts are OpenCode's own additions (file contents, reminders), not what the user typed.
                let text = parts(message)
                    .filter(|p| s(p, "type") == Some("text") && p.get("synthetic") != Some(&Value::Bool(true)))
                    .filter_map(|p| s(p, "text"))
                    .collect::<Vec<_>>()
                    .join("\n");
                if let (false, Some(id)) = (text.trim().is_empty(), s(info, "id")) {
                    out.push(Block::UserMessage {
                        id: id.to_string(),
                        timestamp: super::parts::iso(created),
                        content: Value::String(text),
                    });
                }
            }
            Some("assistant") => {
                // Every part of the message carries the model: bounded (see `agent::ident`).
                let model = s(info, "modelID").map(bounded);
                for part in parts(message) {
                    out.extend(blocks_at(part, model.as_deref(), created));
                }
            }
            _ => {}
        }
    }
    out
}

/// A subagent conversation from a task tool's `metadata.summary`. OpenCode 1.x stores there
/// only `{ id, tool, state: { status, title? } }` per child tool call (no `type`, input or
/// output); older versions stored whole tool parts. Nested task tools produce nothing.
fn summary_blocks(task: &Value) -> Vec<Block> {
    let started = task.pointer("/state/time/start");
    let summary = task.pointer("/state/metadata/summary").and_then(Value::as_array);
    let mut out = Vec::new();
    for item in summary.into_iter().flatten() {
        if s(item, "tool") == Some("task") {
            continue;
        }
        let blocks = match item {
            Value::Object(o) if !o.contains_key("type") => {
                let mut full = o.clone();
                full.insert("type".into(), json!("tool"));
                blocks_at(&Value::Object(full), None, started)
            }
            // Anything else (including a summary entry that is not an object) as it is.
            _ => blocks_at(item, None, started),
        };
        let state = item.get("state").unwrap_or(&Value::Null);
        let has_result = state.get("output").is_some() || state.get("error").is_some();
        // A result with nothing in it would only show an empty box.
        out.extend(blocks.into_iter().filter(|b| has_result || !matches!(b, Block::ToolResult { .. })));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::blocks::ToolStatus;

    const EXPORT: &str = include_str!("../../../tests/fixtures/opencode/export.json");
    const CHILD: &str = "ses_deb69c945ffektCANxM6K7VY4Y";

    fn kind(b: &Block) -> &'static str {
        match b {
            Block::UserMessage { .. } => "user",
            Block::AssistantText { .. } => "text",
            Block::ToolUse { .. } => "tool_use",
            Block::ToolResult { .. } => "tool_result",
            Block::Thinking { .. } => "thinking",
            Block::System { .. } => "system",
            Block::Subagent { .. } => "subagent",
            Block::Error { .. } => "error",
        }
    }

    fn find<'a>(blocks: &'a [Block], id: &str) -> &'a Block {
        blocks.iter().find(|b| b.id() == id).unwrap_or_else(|| panic!("no block {id}"))
    }

    #[test]
    fn fixture_block_sequence() {
        let t = parse_export(EXPORT);
        let kinds: Vec<&str> = t.blocks.iter().map(kind).collect();
        #[rustfmt::skip]
        assert_eq!(kinds, [
            // think, then write haiku.txt
            "user", "system", "thinking", "text", "tool_use", "tool_result", "system", "system", "text", "system",
            // read missing.txt
            "user", "system", "text", "tool_use", "tool_result", "system", "system", "text", "system",
            // the task subagent
            "user", "system", "text", "subagent", "system", "system", "text", "system",
            // the failed turn: its assistant message has no parts, only `info.error`
            "user",
            // the later turn
            "user", "system", "text", "system",
        ]);

        let users: Vec<&Value> = t
            .blocks
            .iter()
            .filter_map(|b| match b {
                Block::UserMessage { content, .. } => Some(content),
                _ => None,
            })
            .collect();
        assert_eq!(
            users,
            [
                "think, then write haiku.txt",
                "read missing.txt",
                "ask the helper subagent to check the plan",
                "fail with 500",
                "and now say hello"
            ]
        );
        match &t.blocks[0] {
            Block::UserMessage { id, timestamp, .. } => {
                assert_eq!(id, "msg_214961ce5001jf0mCm93R1kF48");
                assert_eq!(timestamp, "2026-11-25T21:21:51.845Z");
            }
            b => panic!("{b:?}"),
        }
        assert!(matches!(&t.blocks[2], Block::Thinking { id, content, timestamp }
            if id == "prt_214961e3e001RYqRN9fSDwcZeM" && content == "The user asked: think, then write haiku.txt. Let me plan." && timestamp == "2026-11-25T21:21:52.190Z"));
        assert!(
            matches!(&t.blocks[3], Block::AssistantText { content, model: Some(m), .. } if content == "I'll write haiku.txt." && m == "claude-sonnet-4-5")
        );
    }

    #[test]
    fn fixture_tools() {
        let t = parse_export(EXPORT);
        match find(&t.blocks, "prt_214961e51001wMSuQlHuZ0xNr7") {
            Block::ToolUse { tool_name, tool_use_id, input, status, display_name, .. } => {
                assert_eq!((tool_name.as_str(), tool_use_id.as_str()), ("write", "toolu_fake000003"));
                assert_eq!(*status, ToolStatus::Success);
                assert_eq!(input["content"], "Old pond\nfrog jumps in\nsound of water\n");
                assert_eq!(display_name.as_deref(), Some("tmp/octest/ws-SM2ZnZ/haiku.txt"));
            }
            b => panic!("{b:?}"),
        }
        match find(&t.blocks, "prt_214961e51001wMSuQlHuZ0xNr7_result") {
            Block::ToolResult { tool_use_id, output, is_error, duration_ms, timestamp, .. } => {
                assert_eq!(tool_use_id, "toolu_fake000003");
                assert_eq!(output, "");
                assert!(!is_error);
                assert_eq!(*duration_ms, Some(11.0));
                assert_eq!(timestamp, "2026-11-25T21:21:52.228Z");
            }
            b => panic!("{b:?}"),
        }
        assert!(matches!(find(&t.blocks, "prt_214962bb8001sbfZzyyy7So61G"),
            Block::ToolUse { tool_name, status: ToolStatus::Error, display_name: None, .. } if tool_name == "read"));
        assert!(matches!(find(&t.blocks, "prt_214962bb8001sbfZzyyy7So61G_result"),
            Block::ToolResult { is_error: true, output, tool_use_id, .. }
                if output == "Error: File not found: /tmp/octest/ws-SM2ZnZ/missing.txt" && tool_use_id == "toolu_fake000009"));
    }

    #[test]
    fn fixture_steps() {
        let t = parse_export(EXPORT);
        match find(&t.blocks, "prt_214961e18001i8BwWUKjCaSrjl") {
            Block::System { subtype, message, metadata: Some(m), timestamp, .. } => {
                assert_eq!((subtype.as_str(), message.as_str()), ("status", "Step started"));
                assert!(m.is_empty(), "this OpenCode records no snapshot: {m:?}");
                // No time of its own: dated at its message's creation, not at load time.
                assert_eq!(timestamp, "2026-11-25T21:21:51.958Z");
            }
            b => panic!("{b:?}"),
        }
        match find(&t.blocks, "prt_214961e690010QrEdF7KsHdjSF") {
            Block::System { subtype, message, metadata: Some(m), .. } => {
                assert_eq!((subtype.as_str(), message.as_str()), ("status", "Step finished: tool-calls"));
                assert_eq!(
                    Value::Object(m.clone()),
                    json!({ "reason": "tool-calls", "cost": 0.000333,
                    "tokens": { "input": 11, "output": 20, "reasoning": 0, "cache": { "read": 0, "write": 0 } } })
                );
            }
            b => panic!("{b:?}"),
        }
        assert!(
            matches!(find(&t.blocks, "prt_2149650c0001QHOTjL6yd5VSxp"), Block::System { message, .. } if message == "Step finished: stop")
        );
        // The export keeps no retry part: retries only show up live, as `session.status` events.
        assert!(!t.blocks.iter().any(|b| matches!(b, Block::System { subtype, .. } if subtype == "error")));
    }

    #[test]
    fn fixture_subagent() {
        let t = parse_export(EXPORT);
        match find(&t.blocks, "prt_2149636c1001KNMZRVvybhZOED") {
            Block::Subagent { subagent_id, name, input, status, output, duration_ms, tool_use_id, .. } => {
                assert!(subagent_id.starts_with("ses_"));
                assert_eq!(subagent_id, CHILD);
                assert_eq!(name.as_deref(), Some("general"));
                assert_eq!(input, "Check this: ask the helper subagent to check the plan");
                assert_eq!(*status, ToolStatus::Success);
                assert_eq!(output.as_deref(), Some("Helper here: I looked at \"Check this: ask the helper subagent to check the plan\" and all is well."));
                assert_eq!(*duration_ms, Some(415.0));
                assert_eq!(tool_use_id.as_deref(), Some("toolu_fake000016"));
            }
            b => panic!("{b:?}"),
        }
        // The child ran no tools, so its summary is empty and yields no conversation.
        assert!(t.subagents.is_empty());
    }

    /// The child session's own export, as `opencode export` prints it (shapes from the live run).
    fn child_export() -> Value {
        json!({
            "info": { "id": CHILD, "parentID": "ses_0123456789ab_0iatx8od", "title": "Ask the helper (@general subagent)",
                      "version": "1.0.152", "projectID": "global", "directory": "/w", "time": { "created": 1795641718458_i64, "updated": 1795641718757_i64 } },
            "messages": [
                { "info": { "id": "msg_2149636d5001QIK1wsCBNirFGl", "sessionID": CHILD, "role": "user", "time": { "created": 1795641718487_i64 } },
                  "parts": [
                      { "id": "prt_c1", "type": "text", "text": "Check this: ask the helper subagent to check the plan" },
                      { "id": "prt_c2", "type": "text", "text": "<system-reminder>hidden</system-reminder>", "synthetic": true },
                  ] },
                { "info": { "id": "msg_2149636fe001XiJsiYLf3bOf78", "sessionID": CHILD, "role": "assistant", "modelID": "claude-sonnet-4-5",
                            "time": { "created": 1795641718526_i64, "completed": 1795641718721_i64 } },
                  "parts": [
                      { "id": "prt_2149637270015YO9LoxZGMaWyN", "type": "step-start" },
                      { "id": "prt_2149637390015hZwkSGx3mVJws", "type": "text", "text": "Helper here: all is well.",
                        "time": { "start": 1795641718620_i64, "end": 1795641718620_i64 } },
                      { "id": "prt_214963765001QVAT4CGRKOIUzZ", "type": "step-finish", "reason": "stop" },
                  ] },
            ],
        })
    }

    #[test]
    fn combined_form_uses_child_exports() {
        let main: Value = serde_json::from_str(EXPORT).unwrap();
        let raw = json!({ "main": main, "subagents": [
            { "id": CHILD, "export": child_export() },
            { "id": "ses_not_started_by_a_task", "export": child_export() },
        ] })
        .to_string();
        let t = parse_export(&raw);
        assert_eq!(t.blocks, parse_export(EXPORT).blocks);
        assert_eq!(t.subagents.len(), 1, "only children a task tool started are listed");
        let sub = &t.subagents[0];
        assert_eq!(sub.id, CHILD);
        assert_eq!(sub.blocks.iter().map(kind).collect::<Vec<_>>(), ["user", "system", "text", "system"]);
        assert!(matches!(&sub.blocks[0], Block::UserMessage { id, content, .. }
            if id == "msg_2149636d5001QIK1wsCBNirFGl" && content == "Check this: ask the helper subagent to check the plan"));
        assert!(
            matches!(&sub.blocks[2], Block::AssistantText { content, .. } if content == "Helper here: all is well.")
        );

        // An unreadable child export falls back to the (here empty) summary.
        let raw = json!({ "main": main, "subagents": [{ "id": CHILD, "export": "oops" }] }).to_string();
        assert!(parse_export(&raw).subagents.is_empty());
    }

    #[test]
    fn summary_conversation() {
        let export = json!({ "info": {}, "messages": [
            { "info": { "id": "msg_a", "role": "assistant", "modelID": "m", "time": { "created": 1000 } }, "parts": [
                { "id": "prt_task", "type": "tool", "tool": "task", "callID": "call_1", "state": {
                    "status": "completed", "input": { "description": "look", "subagent_type": "explore" }, "output": "ok",
                    "time": { "start": 2000, "end": 3000 },
                    "metadata": { "sessionId": "ses_child", "summary": [
                        // OpenCode 1.x summary items: no type, input or output.
                        { "id": "prt_s1", "tool": "grep", "state": { "status": "completed", "title": "foo" } },
                        { "id": "prt_s2", "tool": "task", "state": { "status": "running" } },
                        // An older, whole tool part.
                        { "id": "prt_s3", "type": "tool", "tool": "read", "callID": "call_2",
                          "state": { "status": "error", "input": { "filePath": "x" }, "error": "missing", "time": { "start": 2100, "end": 2200 } } },
                    ] } } },
            ] },
        ] });
        let t = parse_export(&export.to_string());
        assert!(
            matches!(&t.blocks[0], Block::Subagent { input, name: Some(n), .. } if input == "look" && n == "explore")
        );
        assert_eq!(t.subagents.len(), 1);
        let sub = &t.subagents[0];
        assert_eq!(sub.id, "ses_child");
        assert_eq!(sub.blocks.iter().map(Block::id).collect::<Vec<_>>(), ["prt_s1", "prt_s3", "prt_s3_result"]);
        assert!(
            matches!(&sub.blocks[0], Block::ToolUse { tool_name, status: ToolStatus::Success, display_name: Some(d), timestamp, .. }
            if tool_name == "grep" && d == "foo" && timestamp == "1970-01-01T00:00:02.000Z")
        );
    }

    #[test]
    fn synthetic_and_empty_user_parts() {
        let export = json!({ "messages": [
            { "info": { "id": "msg_u", "role": "user", "time": { "created": 0 } }, "parts": [
                { "id": "p1", "type": "text", "text": "one" },
                { "id": "p2", "type": "text", "text": "injected", "synthetic": true },
                { "id": "p3", "type": "file", "url": "file:///x" },
                { "id": "p4", "type": "text", "text": "two" },
            ] },
            { "info": { "id": "msg_e", "role": "user", "time": { "created": 0 } }, "parts": [
                { "id": "p5", "type": "text", "text": "only synthetic", "synthetic": true },
            ] },
        ] });
        let t = parse_export(&export.to_string());
        assert_eq!(t.blocks.len(), 1);
        assert!(matches!(&t.blocks[0], Block::UserMessage { content, .. } if content == "one\ntwo"));
    }

    #[test]
    fn deterministic() {
        let a = parse_export(EXPORT);
        let b = parse_export(EXPORT);
        assert_eq!(a, b);
        let ids: Vec<&str> = a.blocks.iter().map(Block::id).collect();
        assert_eq!(ids.iter().collect::<HashSet<_>>().len(), ids.len(), "ids are unique");
    }

    #[test]
    fn invalid_input_is_empty() {
        for raw in ["", "not json", "{\"info\":{}}", "[1,2]", "{\"main\":{}}", "{\"messages\":3}"] {
            assert_eq!(parse_export(raw), ParsedTranscript::default(), "{raw}");
        }
        // A message without parts or role is skipped, not fatal.
        assert!(parse_export(r#"{"messages":[{"info":{}},{}]}"#).blocks.is_empty());
    }
}
