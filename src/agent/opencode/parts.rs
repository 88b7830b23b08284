//! One OpenCode message part -> its complete blocks (spec §7.5), shared by the export parser
//! and the live stream converter.
//!
//! Differences from the reference: ids the reference generates at random (a tool's result, a
//! subtask's subagent id) are derived from the part id, so a reload yields the ids the live
//! stream used; blank text/reasoning parts produce nothing (the live stream never completes
//! them either); a retry's message is read from `error.data.message` where OpenCode puts it;
//! a task tool's output loses the `<task_metadata>` trailer OpenCode appends for the model.

use chrono::{DateTime, SecondsFormat};
use serde_json::{json, Map, Value};

use crate::agent::blocks::{Block, ToolStatus};

fn s<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

/// OpenCode tool state -> block status (`mapToolStatus`).
pub fn tool_status(status: &str) -> ToolStatus {
    match status {
        "running" => ToolStatus::Running,
        "completed" => ToolStatus::Success,
        "error" => ToolStatus::Error,
        _ => ToolStatus::Pending,
    }
}

/// Milliseconds since the epoch -> `toISOString()` form; anything else -> now.
pub fn iso(ms: Option<&Value>) -> String {
    ms_to_iso(ms).unwrap_or_else(crate::time::now_iso)
}

fn ms_to_iso(ms: Option<&Value>) -> Option<String> {
    let f = ms?.as_f64().filter(|f| f.is_finite())?;
    // JS `new Date(x)` truncates fractional milliseconds.
    let dt = DateTime::from_timestamp_millis(f.trunc() as i64)?;
    Some(dt.to_rfc3339_opts(SecondsFormat::Millis, true))
}

/// The first usable time of `primary`, else `fallback` (a message's creation time), else now.
fn at(primary: Option<&Value>, fallback: Option<&Value>) -> String {
    ms_to_iso(primary).or_else(|| ms_to_iso(fallback)).unwrap_or_else(crate::time::now_iso)
}

/// Id of the `tool_result` block of a tool part.
pub fn result_id(part_id: &str) -> String {
    format!("{part_id}_result")
}

/// `end - start` of a `{ start, end }` time object, when both are numbers.
fn duration(time: Option<&Value>) -> Option<f64> {
    let t = time?;
    Some(t.get("end")?.as_f64()? - t.get("start")?.as_f64()?)
}

/// OpenCode appends `\n\n<task_metadata>…</task_metadata>` to a task's output for the model;
/// it is bookkeeping, not the subagent's answer.
fn strip_task_metadata(output: &str) -> &str {
    match output.rfind("<task_metadata>") {
        Some(i) if output[i..].trim_end().ends_with("</task_metadata>") => output[..i].trim_end_matches(['\n', '\r']),
        _ => output,
    }
}

/// A `task` tool part whose child session is known -> its `subagent` block.
pub fn subagent_block(part: &Value) -> Option<Block> {
    let state = part.get("state")?;
    let child = state.pointer("/metadata/sessionId").and_then(Value::as_str)?;
    if s(part, "tool") != Some("task") {
        return None;
    }
    let input = state.get("input").unwrap_or(&Value::Null);
    // JS `prompt || description || ''`: empty strings fall through.
    let prompt = [s(input, "prompt"), s(input, "description")].into_iter().flatten().find(|p| !p.is_empty());
    Some(Block::Subagent {
        id: s(part, "id").unwrap_or_default().to_string(),
        timestamp: iso(state.pointer("/time/start")),
        subagent_id: child.to_string(),
        name: s(input, "subagent_type").map(str::to_string),
        input: prompt.unwrap_or_default().to_string(),
        status: tool_status(s(state, "status").unwrap_or_default()),
        output: s(state, "output").map(|o| strip_task_metadata(o).to_string()),
        duration_ms: duration(state.get("time")),
        tool_use_id: s(part, "callID").map(str::to_string),
    })
}

/// The complete blocks of one assistant part (spec §7.5).
pub fn part_blocks(part: &Value, model: Option<&str>) -> Vec<Block> {
    blocks_at(part, model, None)
}

/// [`part_blocks`], dating parts that carry no time of their own (step markers, agent and
/// subtask parts) at `fallback` ms rather than now, so a reload shows stable timestamps.
pub(super) fn blocks_at(part: &Value, model: Option<&str>, fallback: Option<&Value>) -> Vec<Block> {
    let (Some(id), Some(kind)) = (s(part, "id"), s(part, "type")) else { return vec![] };
    let own_time = part.pointer("/time/start");
    let timestamp = || at(own_time, fallback);
    let text = || s(part, "text").filter(|t| !t.trim().is_empty()).map(str::to_string);
    match kind {
        "text" => text()
            .map(|content| Block::AssistantText {
                id: id.into(),
                timestamp: timestamp(),
                content,
                model: model.map(str::to_string),
            })
            .into_iter()
            .collect(),
        "reasoning" => text()
            .map(|content| Block::Thinking { id: id.into(), timestamp: timestamp(), content })
            .into_iter()
            .collect(),
        "tool" => match subagent_block(part) {
            Some(block) => vec![block],
            None => tool_blocks(id, part, fallback),
        },
        "step-start" => {
            let metadata = fields(part, &["snapshot"]);
            vec![system(id, timestamp(), "status", "Step started".into(), metadata)]
        }
        "step-finish" => {
            let reason = s(part, "reason").unwrap_or("unknown");
            let metadata = fields(part, &["reason", "snapshot", "cost", "tokens"]);
            vec![system(id, timestamp(), "status", format!("Step finished: {reason}"), metadata)]
        }
        "retry" => {
            let error = part.get("error").unwrap_or(&Value::Null);
            let message = error
                .pointer("/data/message")
                .or_else(|| error.get("message"))
                .and_then(Value::as_str)
                .unwrap_or("Unknown error");
            let attempt = match part.get("attempt") {
                Some(Value::String(a)) => a.clone(),
                Some(a) if !a.is_null() => a.to_string(),
                _ => "?".into(),
            };
            let metadata = fields(part, &["attempt", "error"]);
            let ts = at(part.pointer("/time/created"), fallback);
            vec![system(id, ts, "error", format!("Retry attempt {attempt}: {message}"), metadata)]
        }
        "agent" => vec![Block::Subagent {
            id: id.into(),
            timestamp: timestamp(),
            subagent_id: s(part, "name").unwrap_or(id).to_string(),
            name: s(part, "name").map(str::to_string),
            input: part.pointer("/source/value").and_then(Value::as_str).unwrap_or_default().to_string(),
            status: ToolStatus::Success,
            output: None,
            duration_ms: None,
            tool_use_id: None,
        }],
        "subtask" => vec![Block::Subagent {
            id: id.into(),
            timestamp: timestamp(),
            subagent_id: id.into(),
            name: s(part, "agent").map(str::to_string),
            input: s(part, "prompt").unwrap_or_default().to_string(),
            status: ToolStatus::Pending,
            output: None,
            duration_ms: None,
            tool_use_id: None,
        }],
        // file, snapshot, patch, compaction and anything newer: nothing to show.
        _ => vec![],
    }
}

/// A plain tool part -> `tool_use`, plus its `tool_result` once it has finished.
fn tool_blocks(id: &str, part: &Value, fallback: Option<&Value>) -> Vec<Block> {
    let state = part.get("state").unwrap_or(&Value::Null);
    let status = s(state, "status").unwrap_or_default();
    let tool_use_id = s(part, "callID").unwrap_or_default().to_string();
    let mut out = vec![Block::ToolUse {
        id: id.into(),
        timestamp: at(state.pointer("/time/start"), fallback),
        tool_name: s(part, "tool").unwrap_or_default().to_string(),
        tool_use_id: tool_use_id.clone(),
        input: state.get("input").filter(|i| !i.is_null()).cloned().unwrap_or_else(|| json!({})),
        status: tool_status(status),
        display_name: s(state, "title").map(str::to_string),
    }];
    if matches!(status, "completed" | "error") {
        let is_error = status == "error";
        let output = state.get(if is_error { "error" } else { "output" }).cloned().unwrap_or(Value::Null);
        out.push(Block::ToolResult {
            id: result_id(id),
            timestamp: at(state.pointer("/time/end"), fallback),
            tool_use_id,
            output,
            is_error,
            duration_ms: duration(state.get("time")),
        });
    }
    out
}

/// The listed keys of `part` that are present (absent keys are omitted, like `undefined`).
fn fields(part: &Value, keys: &[&str]) -> Map<String, Value> {
    keys.iter().filter_map(|k| part.get(*k).filter(|v| !v.is_null()).map(|v| (k.to_string(), v.clone()))).collect()
}

fn system(id: &str, timestamp: String, subtype: &str, message: String, metadata: Map<String, Value>) -> Block {
    Block::System { id: id.into(), timestamp, subtype: subtype.into(), message, metadata: Some(metadata) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses() {
        assert_eq!(tool_status("pending"), ToolStatus::Pending);
        assert_eq!(tool_status("running"), ToolStatus::Running);
        assert_eq!(tool_status("completed"), ToolStatus::Success);
        assert_eq!(tool_status("error"), ToolStatus::Error);
        assert_eq!(tool_status("weird"), ToolStatus::Pending);
    }

    #[test]
    fn iso_matches_js() {
        assert_eq!(iso(Some(&json!(1795641711845_i64))), "2026-11-25T21:21:51.845Z");
        assert_eq!(iso(Some(&json!(0))), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso(Some(&json!(1.9))), "1970-01-01T00:00:00.001Z");
        // Not a number: now, in the same format.
        for v in [None, Some(&json!("x")), Some(&json!(1e300))] {
            let now = iso(v);
            assert!(DateTime::parse_from_rfc3339(&now).is_ok() && now.ends_with('Z') && now.len() == 24, "{now}");
        }
    }

    #[test]
    fn task_metadata_is_stripped() {
        let out = "All good.\n\n<task_metadata>\nsession_id: ses_x\n</task_metadata>";
        assert_eq!(strip_task_metadata(out), "All good.");
        assert_eq!(
            strip_task_metadata("plain <task_metadata> mention, then more"),
            "plain <task_metadata> mention, then more"
        );
    }

    #[test]
    fn running_tool_has_no_result_and_pending_task_is_a_tool() {
        let running = json!({ "id": "prt_1", "type": "tool", "tool": "bash", "callID": "c1",
            "state": { "status": "running", "input": { "command": "ls" }, "title": "ls", "time": { "start": 5 } } });
        let b = part_blocks(&running, None);
        assert_eq!(b.len(), 1);
        assert!(
            matches!(&b[0], Block::ToolUse { status: ToolStatus::Running, display_name: Some(t), .. } if t == "ls")
        );

        // A task that never got a child session is an ordinary (failed) tool.
        let task = json!({ "id": "prt_2", "type": "tool", "tool": "task", "callID": "c2",
            "state": { "status": "error", "input": {}, "error": "boom", "time": { "start": 5, "end": 9 } } });
        let b = part_blocks(&task, None);
        assert!(matches!(&b[1], Block::ToolResult { id, is_error: true, output, duration_ms: Some(d), .. }
            if id == "prt_2_result" && output == "boom" && *d == 4.0));
    }

    #[test]
    fn retry_agent_subtask_and_ignored_parts() {
        let retry = json!({ "id": "prt_r", "type": "retry", "attempt": 2, "time": { "created": 1000 },
            "error": { "name": "APIError", "data": { "message": "overloaded", "isRetryable": true } } });
        match &part_blocks(&retry, None)[0] {
            Block::System { id, subtype, message, metadata: Some(m), timestamp } => {
                assert_eq!(
                    (id.as_str(), subtype.as_str(), message.as_str()),
                    ("prt_r", "error", "Retry attempt 2: overloaded")
                );
                assert_eq!(m["attempt"], json!(2));
                assert_eq!(timestamp, "1970-01-01T00:00:01.000Z");
            }
            b => panic!("{b:?}"),
        }
        let bare = json!({ "id": "prt_r2", "type": "retry", "attempt": 1, "error": {} });
        assert!(
            matches!(&part_blocks(&bare, None)[0], Block::System { message, .. } if message == "Retry attempt 1: Unknown error")
        );

        let agent = json!({ "id": "prt_a", "type": "agent", "name": "plan", "source": { "value": "@plan", "start": 0, "end": 5 } });
        assert!(
            matches!(&part_blocks(&agent, None)[0], Block::Subagent { subagent_id, input, status: ToolStatus::Success, .. }
            if subagent_id == "plan" && input == "@plan")
        );
        let subtask =
            json!({ "id": "prt_s", "type": "subtask", "agent": "general", "prompt": "go", "description": "d" });
        assert!(
            matches!(&part_blocks(&subtask, None)[0], Block::Subagent { subagent_id, name: Some(n), status: ToolStatus::Pending, .. }
            if subagent_id == "prt_s" && n == "general")
        );

        for kind in ["file", "snapshot", "patch", "compaction", "something-new"] {
            assert!(part_blocks(&json!({ "id": "p", "type": kind }), None).is_empty(), "{kind}");
        }
        assert!(part_blocks(&json!({ "id": "p", "type": "text", "text": "  \n" }), None).is_empty());
        assert!(part_blocks(&json!({ "type": "text", "text": "no id" }), None).is_empty());
    }

    #[test]
    fn step_metadata_omits_absent_keys() {
        let start = json!({ "id": "p1", "type": "step-start" });
        assert!(matches!(&part_blocks(&start, None)[0], Block::System { metadata: Some(m), .. } if m.is_empty()));
        let start = json!({ "id": "p1", "type": "step-start", "snapshot": "abc" });
        assert!(
            matches!(&part_blocks(&start, None)[0], Block::System { metadata: Some(m), .. } if m["snapshot"] == "abc")
        );
    }
}
