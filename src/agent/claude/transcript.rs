//! The stored Claude transcript: `{ main: <JSONL>, subagents: [{ id: "agent-<x>", transcript: <JSONL> }] }`.
//!
//! Parsing never fails: a blob that is not this shape yields no blocks (with a warning), as in
//! the reference. Unlike the reference, only subagents that a Task tool result in the main
//! conversation names are listed; Claude Code's own warm-up sidechains are left out.

use std::collections::HashSet;

use serde::Deserialize;

use super::message::{line_to_blocks, LineContext};
use crate::agent::blocks::{Block, ParsedTranscript, SubagentConversation};
use crate::agent::ident::bounded;

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

/// Below this size one thread parses; above it the lines are split across the cores.
const PARALLEL_BYTES: usize = 2 << 20;

/// Blocks of one JSONL transcript, in line order.
pub fn parse_jsonl(jsonl: &str) -> Vec<Block> {
    let now = crate::time::now_iso();
    let lines: Vec<&str> = jsonl.lines().collect();
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get()).min(8);
    if jsonl.len() < PARALLEL_BYTES || workers < 2 {
        return parse_lines(&lines, 0, &now);
    }
    let chunk = lines.len().div_ceil(workers).max(1);
    std::thread::scope(|scope| {
        let handles: Vec<_> = lines
            .chunks(chunk)
            .enumerate()
            .map(|(i, part)| {
                let now = &now;
                scope.spawn(move || parse_lines(part, i * chunk, now))
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().expect("transcript worker panicked")).collect()
    })
}

fn parse_lines(lines: &[&str], first_line: usize, now: &str) -> Vec<Block> {
    let mut ctx = LineContext::new(now.to_string());
    let mut out = Vec::with_capacity(lines.len());
    for (i, line) in lines.iter().enumerate() {
        let line = line.trim();
        if !line.is_empty() {
            out.extend(line_to_blocks(line, &format!("l{}", first_line + i), &mut ctx));
        }
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
        // Subagent ids in blocks are bounded (see `agent::ident`); compare in that form.
        .filter(|s| started.contains(bounded(agent_key(&s.id)).as_ref()))
        .map(|s| SubagentConversation { id: bounded(&s.id).into_owned(), blocks: parse_jsonl(&s.transcript) })
        .filter(|s| s.blocks.len() > 1)
        .collect();
    ParsedTranscript { blocks, subagents }
}
