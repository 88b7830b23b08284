//! The OpenCode live converter on event streams recorded from real offline runs of OpenCode
//! 1.0.152 (the runner's stdout, `tests/fixtures/opencode/*.jsonl`) and its export of the same
//! session (`export.json`).

use std::collections::{HashMap, HashSet};

use agent_runtime::agent::blocks::{Block, ToolStatus};
use agent_runtime::agent::opencode::stream::OpenCodeStream;
use agent_runtime::agent::opencode::transcript::parse_export;
use agent_runtime::agent::stream::AgentEvent;

const MAIN: &str = "ses_0123456789ab_0iatx8od";

fn fixture(name: &str) -> String {
    std::fs::read_to_string(format!("{}/tests/fixtures/opencode/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

/// The main session id of a recorded stream (the first user message's session).
fn main_session(lines: &str) -> String {
    let v: serde_json::Value = lines
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .find(|v: &serde_json::Value| v["type"] == "message.updated" && v["properties"]["info"]["role"] == "user")
        .unwrap();
    v["properties"]["info"]["sessionID"].as_str().unwrap().to_string()
}

fn convert(name: &str) -> Vec<AgentEvent> {
    let text = fixture(name);
    let mut s = OpenCodeStream::new(&main_session(&text));
    text.lines().flat_map(|l| s.push_line(l)).collect()
}

fn completes(events: &[AgentEvent], conv: &str) -> Vec<Block> {
    events
        .iter()
        .filter_map(|e| match e {
            AgentEvent::BlockComplete { conversation_id, block } if conversation_id == conv => Some(block.clone()),
            _ => None,
        })
        .collect()
}

/// Every block starts at most once and completes exactly once; deltas and updates only follow a start.
fn check_lifecycle(events: &[AgentEvent]) {
    let mut started = HashSet::new();
    let mut done: HashMap<String, usize> = HashMap::new();
    for e in events {
        match e {
            AgentEvent::BlockStart { block, .. } => {
                assert!(started.insert(block.id().to_string()), "{} starts once", block.id())
            }
            AgentEvent::TextDelta { block_id, .. } | AgentEvent::BlockUpdate { block_id, .. } => {
                assert!(started.contains(block_id), "{block_id} updated before it started")
            }
            AgentEvent::BlockComplete { block, .. } => *done.entry(block.id().to_string()).or_default() += 1,
            _ => {}
        }
    }
    for id in &started {
        assert_eq!(done.get(id), Some(&1), "{id} completes once");
    }
    assert!(done.values().all(|n| *n == 1), "nothing completes twice: {done:?}");
}

fn kinds(blocks: &[Block]) -> Vec<&'static str> {
    blocks
        .iter()
        .map(|b| match b {
            Block::UserMessage { .. } => "user",
            Block::AssistantText { .. } => "text",
            Block::Thinking { .. } => "thinking",
            Block::ToolUse { .. } => "tool_use",
            Block::ToolResult { .. } => "tool_result",
            Block::System { subtype, .. } if subtype == "session_end" => "end",
            Block::System { .. } => "system",
            Block::Subagent { .. } => "subagent",
            Block::Error { .. } => "error",
        })
        .collect()
}

#[test]
fn text_reasoning_and_a_write_tool() {
    let events = convert("write.jsonl");
    check_lifecycle(&events);
    let blocks = completes(&events, "main");
    assert_eq!(
        kinds(&blocks),
        ["system", "thinking", "text", "tool_use", "tool_result", "system", "system", "text", "system", "end"]
    );
    // The prompt is the user's, not an (empty) assistant block.
    assert!(!blocks
        .iter()
        .any(|b| matches!(b, Block::AssistantText { content, .. } if content.contains("think, then write"))));
    let Block::ToolUse { id, tool_name, status, input, .. } = &blocks[3] else { panic!() };
    assert_eq!((tool_name.as_str(), *status), ("write", ToolStatus::Success));
    assert!(input["filePath"].as_str().unwrap().ends_with("/haiku.txt"));
    let Block::ToolResult { id: rid, is_error, .. } = &blocks[4] else { panic!() };
    assert_eq!((rid.clone(), *is_error), (format!("{id}_result"), false));
    // Streamed text arrives as deltas on the block's real id; the completion carries all of it.
    let Block::AssistantText { id: tid, content, .. } = &blocks[2] else { panic!() };
    let streamed: String = events
        .iter()
        .filter_map(|e| match e {
            AgentEvent::TextDelta { block_id, delta, .. } if block_id == tid => Some(delta.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(&streamed, content);
    let usage: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            AgentEvent::MetadataUpdate { metadata, .. } => Some(metadata),
            _ => None,
        })
        .collect();
    assert!(
        !usage.is_empty()
            && usage.iter().all(|m| m["costUSD"].is_number() && m["usage"]["inputTokens"].as_u64() > Some(0))
    );
    assert!(!events.iter().any(|e| matches!(e, AgentEvent::Error { .. })));
}

#[test]
fn a_failing_tool_is_an_error_result() {
    let events = convert("tool-error.jsonl");
    check_lifecycle(&events);
    let blocks = completes(&events, "main");
    let tool = blocks.iter().find(|b| matches!(b, Block::ToolUse { .. })).unwrap();
    let Block::ToolUse { tool_name, status, id, .. } = tool else { unreachable!() };
    assert_eq!((tool_name.as_str(), *status), ("read", ToolStatus::Error));
    let result = blocks.iter().find(|b| b.id() == format!("{id}_result")).unwrap();
    assert!(matches!(result, Block::ToolResult { is_error: true, .. }));
}

#[test]
fn a_task_tool_is_a_subagent_with_its_own_conversation() {
    let events = convert("subagent.jsonl");
    check_lifecycle(&events);
    let child = "ses_deb69c945ffektCANxM6K7VY4Y";
    let pos = |f: &dyn Fn(&AgentEvent) -> bool| events.iter().position(f).unwrap();
    let discovered = pos(&|e| matches!(e, AgentEvent::SubagentDiscovered { subagent_id } if subagent_id == child));
    let completed =
        pos(&|e| matches!(e, AgentEvent::SubagentCompleted { subagent_id, failed: false } if subagent_id == child));
    assert!(discovered < completed);
    let main = completes(&events, "main");
    let sub = main.iter().find(|b| matches!(b, Block::Subagent { .. })).unwrap();
    let Block::Subagent { subagent_id, name, status, output, .. } = sub else { unreachable!() };
    assert_eq!((subagent_id.as_str(), name.as_deref(), *status), (child, Some("general"), ToolStatus::Success));
    assert!(
        output.as_deref().unwrap().contains("Helper here") && !output.as_deref().unwrap().contains("task_metadata")
    );
    let theirs = completes(&events, child);
    assert!(theirs
        .iter()
        .any(|b| matches!(b, Block::AssistantText { content, .. } if content.contains("Helper here"))));
    // Only the main session's idle ends the turn.
    assert_eq!(kinds(&main).last(), Some(&"end"));
    assert!(!kinds(&theirs).contains(&"end"));
}

#[test]
fn endless_retries_end_in_one_error() {
    let events = convert("retry.jsonl");
    let errors: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            AgentEvent::Error { message } => Some(message),
            _ => None,
        })
        .collect();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].contains("model API kept failing"), "{}", errors[0]);
}

#[test]
fn live_ids_are_the_ids_a_reload_shows() {
    let parsed = parse_export(&fixture("export.json"));
    let stored: HashSet<String> = parsed.blocks.iter().map(|b| b.id().to_string()).collect();
    for name in ["write.jsonl", "tool-error.jsonl", "subagent.jsonl", "resume.jsonl"] {
        for b in completes(&convert(name), "main") {
            if matches!(
                b,
                Block::AssistantText { .. }
                    | Block::Thinking { .. }
                    | Block::ToolUse { .. }
                    | Block::ToolResult { .. }
                    | Block::Subagent { .. }
            ) {
                assert!(stored.contains(b.id()), "{name}: live {} is in the export", b.id());
            }
        }
    }
    assert_eq!(parse_export(&fixture("export.json")), parsed, "deterministic");
}

#[test]
fn newer_delta_events_stream_text_too() {
    let mut s = OpenCodeStream::new(MAIN);
    let lines = [
        r#"{"type":"message.updated","properties":{"info":{"id":"msg_u","sessionID":"ses_0123456789ab_0iatx8od","role":"user"}}}"#,
        r#"{"type":"message.part.updated","properties":{"part":{"id":"prt_u","sessionID":"ses_0123456789ab_0iatx8od","messageID":"msg_u","type":"text","text":"hi"}}}"#,
        r#"{"type":"message.updated","properties":{"info":{"id":"msg_a","sessionID":"ses_0123456789ab_0iatx8od","role":"assistant","modelID":"m"}}}"#,
        r#"{"type":"message.part.updated","properties":{"part":{"id":"prt_t","sessionID":"ses_0123456789ab_0iatx8od","messageID":"msg_a","type":"text","text":"","time":{"start":1}}}}"#,
        r#"{"type":"message.part.delta","properties":{"sessionID":"ses_0123456789ab_0iatx8od","messageID":"msg_a","partID":"prt_t","field":"text","delta":"Hel"}}"#,
        r#"{"type":"message.part.delta","properties":{"sessionID":"ses_0123456789ab_0iatx8od","messageID":"msg_a","partID":"prt_t","field":"text","delta":"lo"}}"#,
        r#"{"type":"message.part.updated","properties":{"part":{"id":"prt_t","sessionID":"ses_0123456789ab_0iatx8od","messageID":"msg_a","type":"text","text":"Hello","time":{"start":1,"end":2}}}}"#,
        r#"{"type":"session.idle","properties":{"sessionID":"ses_0123456789ab_0iatx8od"}}"#,
    ];
    let events: Vec<_> = lines.iter().flat_map(|l| s.push_line(l)).collect();
    check_lifecycle(&events);
    let deltas: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            AgentEvent::TextDelta { delta, .. } => Some(delta.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(deltas, ["Hel", "lo"]);
    let blocks = completes(&events, "main");
    assert_eq!(kinds(&blocks), ["text", "end"]);
    assert!(
        matches!(&blocks[0], Block::AssistantText { content, model, .. } if content == "Hello" && model.as_deref() == Some("m"))
    );
}
