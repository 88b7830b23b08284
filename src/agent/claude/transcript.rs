//! The stored Claude transcript: `{ main: <JSONL>, subagents: [{ id: "agent-<x>", transcript: <JSONL> }] }`.
//!
//! Parsing never fails: a blob that is not this shape yields no blocks (with a warning), as in
//! the reference. Unlike the reference, only subagents that a Task tool result in the main
//! conversation names are listed; Claude Code's own warm-up sidechains are left out.

use std::collections::HashSet;

use serde::Deserialize;

use super::message::line_to_blocks;
use crate::agent::blocks::{Block, ParsedTranscript, SubagentConversation};

#[derive(Deserialize)]
struct Combined {
    main: String,
    subagents: Vec<StoredSubagent>,
}

#[derive(Deserialize)]
struct StoredSubagent {
    id: String,
    #[serde(default)]
    transcript: String,
}

/// `agent-agent-x` (written by the reference's restore bug) and `agent-x` both mean agent `x`.
pub fn agent_key(id: &str) -> &str {
    let mut s = id;
    while let Some(rest) = s.strip_prefix("agent-") {
        s = rest;
    }
    s
}

/// Blocks of one JSONL transcript, in line order.
pub fn parse_jsonl(jsonl: &str) -> Vec<Block> {
    let now = crate::time::now_iso();
    let mut out = Vec::new();
    for (n, line) in jsonl.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        out.extend(line_to_blocks(line, &format!("l{n}"), &now));
    }
    out
}

/// Parse the combined transcript blob.
pub fn parse_combined(raw: &str) -> ParsedTranscript {
    if raw.trim().is_empty() {
        return ParsedTranscript::default();
    }
    let combined: Combined = match serde_json::from_str(raw) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "stored Claude transcript is not the combined JSON format; showing no blocks");
            return ParsedTranscript::default();
        }
    };
    let blocks = parse_jsonl(&combined.main);
    let started: HashSet<&str> = blocks
        .iter()
        .filter_map(|b| match b {
            Block::Subagent { subagent_id, .. } => Some(agent_key(subagent_id)),
            _ => None,
        })
        .collect();
    let subagents = combined
        .subagents
        .iter()
        .filter(|s| started.contains(agent_key(&s.id)))
        .map(|s| SubagentConversation {
            id: s.id.clone(),
            blocks: parse_jsonl(&s.transcript),
        })
        .filter(|s| s.blocks.len() > 1)
        .collect();
    ParsedTranscript { blocks, subagents }
}
