//! Live stream conversion on stdout recorded from real runs of the Claude Agent SDK (driven by
//! the bundled fake Messages API): text, thinking, tool use and result, a subagent, an error.

use agent_runtime::agent::blocks::Block;
use agent_runtime::agent::claude::stream::ClaudeStream;
use agent_runtime::agent::claude::transcript::parse_combined;
use agent_runtime::agent::stream::AgentEvent;
use serde_json::{json, Value};

fn run(jsonl: &str) -> Vec<AgentEvent> {
    let mut s = ClaudeStream::new();
    jsonl.lines().flat_map(|l| s.push_line(l)).collect()
}

fn block_json(b: &Block) -> Value {
    serde_json::to_value(b).unwrap()
}

/// (kind, conversation, block id, block type) per event, for compact assertions.
fn shape(events: &[AgentEvent]) -> Vec<(String, String, String)> {
    events
        .iter()
        .map(|e| match e {
            AgentEvent::BlockStart { conversation_id, block } => {
                ("start".into(), conversation_id.clone(), block.id().into())
            }
            AgentEvent::TextDelta { conversation_id, block_id, .. } => {
                ("delta".into(), conversation_id.clone(), block_id.clone())
            }
            AgentEvent::BlockUpdate { conversation_id, block_id, .. } => {
                ("update".into(), conversation_id.clone(), block_id.clone())
            }
            AgentEvent::BlockComplete { conversation_id, block } => {
                ("complete".into(), conversation_id.clone(), block.id().into())
            }
            AgentEvent::MetadataUpdate { conversation_id, .. } => {
                ("metadata".into(), conversation_id.clone(), String::new())
            }
            AgentEvent::SubagentDiscovered { subagent_id } => ("discovered".into(), String::new(), subagent_id.clone()),
            AgentEvent::SubagentCompleted { subagent_id, .. } => {
                ("completed".into(), String::new(), subagent_id.clone())
            }
            AgentEvent::Error { .. } => ("error".into(), String::new(), String::new()),
        })
        .collect()
}

const WRITE: &str = include_str!("fixtures/claude/recorded/sdk-write.jsonl");
const SUBAGENT: &str = include_str!("fixtures/claude/recorded/sdk-subagent.jsonl");
const ERROR: &str = include_str!("fixtures/claude/recorded/sdk-error.jsonl");
const TRANSCRIPT: &str = include_str!("fixtures/claude/recorded/combined-real.json");

#[test]
fn every_streamed_block_starts_streams_and_completes_once_with_its_id() {
    let events = run(WRITE);
    let s = shape(&events);
    let starts: Vec<&(String, String, String)> = s.iter().filter(|e| e.0 == "start").collect();
    assert_eq!(starts.len(), 4, "thinking, text, tool_use, then the final text: {s:#?}");
    for (_, conv, id) in &starts {
        assert_eq!(conv, "main");
        assert!(!id.is_empty());
        let completes = s.iter().filter(|e| e.0 == "complete" && &e.2 == id).count();
        assert_eq!(completes, 1, "block {id} completes exactly once");
        let first_delta = s.iter().position(|e| e.0 == "delta" && &e.2 == id);
        let start = s.iter().position(|e| e.0 == "start" && &e.2 == id).unwrap();
        let complete = s.iter().position(|e| e.0 == "complete" && &e.2 == id).unwrap();
        if let Some(d) = first_delta {
            assert!(start < d && d < complete, "start < deltas < complete for {id}");
        }
    }
    assert!(s.iter().all(|e| e.0 != "delta" || !e.2.is_empty()), "deltas carry the block id");
}

#[test]
fn final_contents_thinking_text_tool_and_status() {
    let events = run(WRITE);
    let completes: Vec<Value> = events
        .iter()
        .filter_map(|e| match e {
            AgentEvent::BlockComplete { block, .. } => Some(block_json(block)),
            _ => None,
        })
        .collect();
    let by_type = |t: &str| completes.iter().filter(|b| b["type"] == t).cloned().collect::<Vec<_>>();
    assert_eq!(by_type("thinking")[0]["content"], "The user asked: think, then write haiku.txt. Let me plan.");
    assert_eq!(by_type("assistant_text")[0]["content"], "I'll write haiku.txt.");
    let tool = &by_type("tool_use")[0];
    assert_eq!(tool["toolName"], "Write");
    assert_eq!(tool["input"]["file_path"], "haiku.txt");
    assert_eq!(tool["input"]["content"], "Old pond\nfrog jumps in\nsound of water\n");
    let result = &by_type("tool_result")[0];
    assert_eq!(result["toolUseId"], tool["id"]);
    assert_eq!(result["isError"], false);
    let session_end = completes.iter().find(|b| b["subtype"] == "session_end").unwrap();
    assert!(session_end["message"].as_str().unwrap().starts_with("Session completed successfully (2 turns, $"));
    assert!(completes.iter().any(|b| b["subtype"] == "session_start"));
    // The tool use is settled once its result is in.
    let settled = events.iter().any(|e| {
        matches!(e, AgentEvent::BlockUpdate { block_id, updates, .. }
        if *block_id == tool["id"] && updates["status"] == "success")
    });
    assert!(settled);
    let cost = events.iter().rev().find_map(|e| match e {
        AgentEvent::MetadataUpdate { metadata, .. } if metadata.contains_key("costUSD") => Some(metadata.clone()),
        _ => None,
    });
    assert!(cost.unwrap()["usage"]["totalTokens"].as_u64().unwrap() > 0);
    assert!(!events.iter().any(|e| matches!(e, AgentEvent::Error { .. })));
}

#[test]
fn subagent_is_discovered_completed_and_has_its_conversation() {
    let events = run(SUBAGENT);
    let s = shape(&events);
    let discovered: Vec<_> = s.iter().filter(|e| e.0 == "discovered").collect();
    assert_eq!(discovered.len(), 1);
    let id = discovered[0].2.clone();
    assert_eq!(id, "agent-aca0d69ca71053236");
    assert!(s.iter().any(|e| e.0 == "completed" && e.2 == id));
    // The subagent's prompt lands in its own conversation.
    let sub_blocks: Vec<Value> = events
        .iter()
        .filter_map(|e| match e {
            AgentEvent::BlockComplete { conversation_id, block } if *conversation_id == id => Some(block_json(block)),
            _ => None,
        })
        .collect();
    assert_eq!(sub_blocks[0]["type"], "user_message");
    // The Agent tool result becomes a subagent block in main.
    let sub_block = events.iter().find_map(|e| match e {
        AgentEvent::BlockComplete { conversation_id, block: b @ Block::Subagent { .. } }
            if conversation_id == "main" =>
        {
            Some(block_json(b))
        }
        _ => None,
    });
    let sub_block = sub_block.expect("subagent block");
    assert_eq!(sub_block["subagentId"], json!(id));
    assert_eq!(sub_block["status"], "success");
}

#[test]
fn errors_end_the_run_with_a_message() {
    let events = run(ERROR);
    let msg = events.iter().find_map(|e| match e {
        AgentEvent::Error { message } => Some(message.clone()),
        _ => None,
    });
    assert!(msg.unwrap().contains("API Error: 500"));
}

#[test]
fn live_ids_match_the_ids_of_the_saved_transcript() {
    let parsed = parse_combined(TRANSCRIPT);
    let saved: std::collections::HashSet<String> = parsed.blocks.iter().map(|b| b.id().to_string()).collect();
    for jsonl in [WRITE, SUBAGENT] {
        for e in run(jsonl) {
            if let AgentEvent::BlockComplete { conversation_id, block } = e {
                let streamed =
                    matches!(block, Block::AssistantText { .. } | Block::Thinking { .. } | Block::ToolUse { .. });
                if conversation_id == "main" && streamed {
                    assert!(saved.contains(block.id()), "live id {} not in the transcript", block.id());
                }
            }
        }
    }
    assert_eq!(parsed.subagents.len(), 1, "the real run's one subagent is listed");
}

#[test]
fn garbage_lines_are_ignored() {
    let mut s = ClaudeStream::new();
    assert!(s.push_line("not json").is_empty());
    assert!(s.push_line("").is_empty());
    assert!(s.push_line(r#"{"type":"stream_event","event":{"type":"content_block_delta","index":9}}"#).is_empty());
}
