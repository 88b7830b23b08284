//! Claude transcript -> blocks, on a realistic combined transcript (thinking, text, tool use and
//! results, an error result, a Task subagent, a compact boundary, a warm-up sidechain).

use agent_runtime::agent::claude::message::{line_to_blocks as convert_line, LineContext};
use agent_runtime::agent::claude::transcript::parse_combined;
use agent_runtime::agent::Architecture;
use serde_json::{json, Value};

const COMBINED: &str = include_str!("fixtures/claude/combined-task.json");

fn line_to_blocks(line: &str, base: &str, now: &str) -> Vec<agent_runtime::agent::blocks::Block> {
    convert_line(line, base, &mut LineContext::new(now.to_string()))
}

fn blocks_json(blocks: &impl serde::Serialize) -> Value {
    serde_json::to_value(blocks).unwrap()
}

#[test]
fn main_conversation_blocks() {
    let parsed = parse_combined(COMBINED);
    let b = blocks_json(&parsed.blocks);
    let model = "claude-sonnet-4-5-20250929";
    let expected = json!([
        {"type": "user_message", "id": "u1", "timestamp": "2025-11-20T10:00:00.000Z",
         "content": "Write a haiku to haiku.txt, then ask a reviewer to check it"},
        {"type": "thinking", "id": "msg_01_0", "timestamp": "2025-11-20T10:00:01.000Z",
         "content": "I should write the file first."},
        {"type": "assistant_text", "id": "msg_01_1", "timestamp": "2025-11-20T10:00:02.000Z",
         "content": "I'll write the haiku now.", "model": model},
        {"type": "tool_use", "id": "toolu_01", "timestamp": "2025-11-20T10:00:03.000Z", "toolName": "Write",
         "toolUseId": "toolu_01", "status": "success",
         "input": {"file_path": "/workspace/haiku.txt", "content": "Old pond\nfrog jumps in\nsound of water\n"}},
        {"type": "tool_result", "id": "block_u2_1", "timestamp": "2025-11-20T10:00:04.000Z", "toolUseId": "toolu_01",
         "output": "File created successfully at: /workspace/haiku.txt", "isError": false},
        {"type": "tool_use", "id": "toolu_02", "timestamp": "2025-11-20T10:00:05.000Z", "toolName": "Task",
         "toolUseId": "toolu_02", "status": "success",
         "input": {"description": "Review haiku", "prompt": "Review the haiku in haiku.txt", "subagent_type": "reviewer"}},
        {"type": "subagent", "id": "block_u3_1", "timestamp": "2025-11-20T10:00:09.000Z",
         "subagentId": "agent-9f3c2a1b", "input": "Review the haiku in haiku.txt", "status": "success",
         "output": "The haiku is good.\nSyllables check out.", "durationMs": 4200.0, "toolUseId": "toolu_02"},
        {"type": "tool_use", "id": "toolu_03", "timestamp": "2025-11-20T10:00:10.000Z", "toolName": "Bash",
         "toolUseId": "toolu_03", "status": "success",
         "input": {"command": "ls nope", "description": "List a missing file"}},
        {"type": "tool_result", "id": "block_u4_1", "timestamp": "2025-11-20T10:00:11.000Z", "toolUseId": "toolu_03",
         "output": "Exit code 2\nls: cannot access 'nope': No such file or directory", "isError": true},
        {"type": "system", "id": "s1", "timestamp": "2025-11-20T10:00:12.000Z", "subtype": "status",
         "message": "Compact boundary (manual)", "metadata": {"trigger": "manual", "preTokens": 1000}},
        {"type": "assistant_text", "id": "msg_04_0", "timestamp": "2025-11-20T10:00:13.000Z",
         "content": "Done: haiku.txt is written and reviewed.", "model": model},
    ]);
    assert_eq!(b, expected);
}

#[test]
fn only_task_started_subagents_are_listed() {
    let parsed = parse_combined(COMBINED);
    let ids: Vec<&str> = parsed.subagents.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(ids, ["agent-9f3c2a1b"], "the warm-up sidechain must be left out");
    let kinds: Vec<String> = blocks_json(&parsed.subagents[0].blocks)
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["type"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(kinds, ["user_message", "tool_use", "tool_result", "assistant_text"]);
}

#[test]
fn parsing_is_deterministic() {
    assert_eq!(parse_combined(COMBINED), parse_combined(COMBINED));
}

#[test]
fn legacy_double_prefixed_subagent_ids_still_match() {
    let mut v: Value = serde_json::from_str(COMBINED).unwrap();
    v["subagents"][0]["id"] = json!("agent-agent-9f3c2a1b");
    let parsed = parse_combined(&v.to_string());
    assert_eq!(parsed.subagents.len(), 1);
    assert_eq!(parsed.subagents[0].id, "agent-agent-9f3c2a1b");
}

#[test]
fn invalid_blobs_yield_nothing() {
    for raw in ["", "not json", "{\"main\": 5}", "[1,2]", "{\"main\": \"{broken\\n\", \"subagents\": []}"] {
        let p = parse_combined(raw);
        assert!(p.blocks.is_empty() && p.subagents.is_empty(), "{raw}");
    }
    assert!(Architecture::ClaudeAgentSdk.parse_transcript("garbage").blocks.is_empty());
}

#[test]
fn sdk_system_result_and_auth_messages() {
    let now = "2026-01-01T00:00:00.000Z";
    let init = json!({"type": "system", "subtype": "init", "uuid": "i1", "session_id": "s", "model": "claude-x",
        "tools": ["Read"], "permissionMode": "bypassPermissions", "mcp_servers": [], "cwd": "/workspace"});
    let b = blocks_json(&line_to_blocks(&init.to_string(), "x", now));
    assert_eq!(b[0]["subtype"], "session_start");
    assert_eq!(b[0]["message"], "Session initialized with claude-x");
    assert_eq!(b[0]["timestamp"], now);
    assert_eq!(
        b[0]["metadata"],
        json!({"model": "claude-x", "tools": ["Read"], "permissionMode": "bypassPermissions", "mcp_servers": []})
    );

    let ok = json!({"type": "result", "subtype": "success", "uuid": "r1", "num_turns": 3, "total_cost_usd": 0.012345,
        "duration_ms": 900, "usage": {"input_tokens": 1}, "is_error": false, "result": "hi"});
    let b = blocks_json(&line_to_blocks(&ok.to_string(), "x", now));
    assert_eq!(b[0]["subtype"], "session_end");
    assert_eq!(b[0]["message"], "Session completed successfully (3 turns, $0.0123)");
    assert_eq!(b[0]["metadata"]["duration_ms"], 900);

    let err = json!({"type": "result", "subtype": "error_max_turns", "uuid": "r2"});
    let b = blocks_json(&line_to_blocks(&err.to_string(), "x", now));
    assert_eq!(b[0]["subtype"], "error");
    assert_eq!(b[0]["message"], "Session ended with error: error_max_turns");

    let auth = json!({"type": "auth_status", "uuid": "au", "isAuthenticating": true, "output": []});
    let b = blocks_json(&line_to_blocks(&auth.to_string(), "x", now));
    assert_eq!(b[0]["message"], "Authenticating...");

    for ignored in [json!({"type": "stream_event"}), json!({"type": "tool_progress"}), json!({"type": "summary"})] {
        assert!(line_to_blocks(&ignored.to_string(), "x", now).is_empty());
    }
}

#[test]
fn user_content_arrays_and_unknown_items() {
    let now = "t";
    let user = json!({"type": "user", "message": {"content": [{"type": "text", "text": "a"}, {"type": "image"}, {"type": "text", "text": "b"}]}});
    let b = blocks_json(&line_to_blocks(&user.to_string(), "l7", now));
    assert_eq!(b[0]["content"], "a\nb");
    assert_eq!(b[0]["id"], "block_l7_1");
    let asst = json!({"type": "assistant", "message": {"content": [{"type": "redacted_thinking", "data": "x"}, {"type": "text", "text": "ok"}]}});
    let b = blocks_json(&line_to_blocks(&asst.to_string(), "l8", now));
    assert_eq!(b.as_array().unwrap().len(), 1);
    assert!(b[0].get("model").is_none(), "absent model is omitted, not null");
}
