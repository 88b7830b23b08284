//! Fuzz-style tests, seeded and bounded in time: the REST JSON bodies, the Engine.IO / Socket.IO
//! packet path, the Claude and OpenCode live converters and both transcript parsers get random
//! and mutated input (recorded fixtures with fields dropped, types changed, huge strings, deep
//! nesting, lines repeated or cut). They must not panic, must answer bad input with a clear error,
//! and must produce output bounded by their input.
//!
//! Every case runs under its own seed; a failure prints it. Reproduce one with
//! `FUZZ_SEED=<seed> FUZZ_CASES=1 cargo test --test fuzz`. More cases: `FUZZ_CASES=5000`.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use agent_runtime::agent::claude::stream::ClaudeStream;
use agent_runtime::agent::opencode::stream::OpenCodeStream;
use agent_runtime::agent::stream::AgentEvent;
use agent_runtime::agent::Architecture;
use agent_runtime::persistence::memory::MemoryAdapter;
use agent_runtime::session::CreateSessionArgs;
use agent_runtime::transport::rest::{handle_plain, router, PlainRequest};
use agent_runtime::transport::socketio::{start, RealtimeOptions, RealtimeService};
use agent_runtime::{AgentRuntime, RuntimeOptions};
use futures::FutureExt;
use http_body_util::{BodyExt, Full};
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use tower::ServiceExt;

// ---------------------------------------------------------------------------------------------
// Seeds and the mutator

fn cases(default: u64) -> std::ops::Range<u64> {
    let n = std::env::var("FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(default);
    let base = std::env::var("FUZZ_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or(0x5eed_0000);
    base..base + n
}

/// Run one case; on panic, say which seed and fail.
fn with_seed(seed: u64, f: impl FnOnce(&mut StdRng)) {
    let mut rng = StdRng::seed_from_u64(seed);
    if let Err(e) = std::panic::catch_unwind(AssertUnwindSafe(|| f(&mut rng))) {
        eprintln!("fuzz case failed: FUZZ_SEED={seed} FUZZ_CASES=1");
        std::panic::resume_unwind(e);
    }
}

async fn with_seed_async<F: std::future::Future<Output = ()>>(seed: u64, f: impl FnOnce(StdRng) -> F) {
    let rng = StdRng::seed_from_u64(seed);
    if let Err(e) = AssertUnwindSafe(f(rng)).catch_unwind().await {
        eprintln!("fuzz case failed: FUZZ_SEED={seed} FUZZ_CASES=1");
        std::panic::resume_unwind(e);
    }
}

/// Keys our converters and routes look at, so added fields land where they matter.
const KEYS: &[&str] = &[
    "type",
    "subtype",
    "id",
    "uuid",
    "index",
    "message",
    "content",
    "content_block",
    "delta",
    "text",
    "thinking",
    "partial_json",
    "tool_use_id",
    "parent_tool_use_id",
    "agent_id",
    "task_id",
    "status",
    "event",
    "model",
    "timestamp",
    "toolUseResult",
    "agentId",
    "prompt",
    "usage",
    "result",
    "is_error",
    "error",
    "properties",
    "info",
    "part",
    "partID",
    "messageID",
    "sessionID",
    "role",
    "modelID",
    "tokens",
    "cost",
    "state",
    "metadata",
    "sessionId",
    "summary",
    "time",
    "start",
    "end",
    "created",
    "tool",
    "callID",
    "input",
    "output",
    "main",
    "subagents",
    "transcript",
    "export",
    "messages",
    "parts",
    "agentProfileRef",
    "architecture",
    "sessionOptions",
    "defaultWorkspaceFiles",
    "path",
    "field",
];

const ODD_STRINGS: &[&str] = &[
    "",
    " ",
    "\u{0}",
    "é",
    "🦀🦀",
    "\u{202e}rtl",
    "../../etc/passwd",
    "agent-agent-x",
    "agent-",
    "main",
    "<task_metadata>x</task_metadata>",
    "\n\n<task_metadata>\n</task_metadata>\n",
    "completed",
    "error",
    "task",
    "tool",
    "text",
    "reasoning",
    "user",
    "assistant",
    "success",
    "stream_event",
    "content_block_delta",
    "claude-agent-sdk",
    "opencode",
    "NaN",
    "-1",
    "1e400",
];

fn huge_string(rng: &mut StdRng) -> String {
    let len = *[1 << 10, 1 << 13, 1 << 16].choose(rng).unwrap();
    let unit = *["x", "é", "🦀", "ab\n"].choose(rng).unwrap();
    unit.repeat(len / unit.len())
}

fn random_scalar(rng: &mut StdRng, strings: &[String]) -> Value {
    match rng.random_range(0..10) {
        0 => Value::Null,
        1 => json!(rng.random::<bool>()),
        2 => json!(*[0i64, -1, 1, i64::MIN, i64::MAX].choose(rng).unwrap()),
        3 => json!(u64::MAX),
        4 => json!(*[0.5f64, -1e308, 1e308, f64::MIN_POSITIVE].choose(rng).unwrap()),
        5 => json!(huge_string(rng)),
        6 | 7 if !strings.is_empty() => json!(strings.choose(rng).unwrap()),
        _ => json!(*ODD_STRINGS.choose(rng).unwrap()),
    }
}

fn random_value(rng: &mut StdRng, strings: &[String], depth: u32) -> Value {
    if depth == 0 || rng.random_bool(0.5) {
        return random_scalar(rng, strings);
    }
    let n = rng.random_range(0..4);
    if rng.random::<bool>() {
        Value::Array((0..n).map(|_| random_value(rng, strings, depth - 1)).collect())
    } else {
        Value::Object(
            (0..n).map(|_| (KEYS.choose(rng).unwrap().to_string(), random_value(rng, strings, depth - 1))).collect(),
        )
    }
}

/// `v` inside `depth` levels of arrays or objects. Kept shallow enough for `Value`'s own
/// recursive clone and drop; deeper nesting is made as text ([`nest_text`]).
fn nest(v: Value, depth: usize, rng: &mut StdRng) -> Value {
    let as_array = rng.random::<bool>();
    (0..depth.min(200)).fold(v, |inner, _| if as_array { json!([inner]) } else { json!({ "content": inner }) })
}

/// `json` inside `depth` levels of arrays or objects, as text (past any recursion limit).
fn nest_text(json: &str, depth: usize, rng: &mut StdRng) -> String {
    let (open, close) = if rng.random::<bool>() { ("[", "]") } else { (r#"{"content":"#, "}") };
    format!("{}{json}{}", open.repeat(depth), close.repeat(depth))
}

/// JSON pointers of every node (iteratively: values may be nested deeply).
fn pointers(v: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![(String::new(), v)];
    while let Some((p, v)) = stack.pop() {
        match v {
            Value::Array(a) => {
                for (i, x) in a.iter().enumerate() {
                    stack.push((format!("{p}/{i}"), x));
                }
            }
            Value::Object(o) => {
                for (k, x) in o {
                    stack.push((format!("{p}/{}", k.replace('~', "~0").replace('/', "~1")), x));
                }
            }
            _ => {}
        }
        out.push(p);
    }
    out
}

/// Every string in `v` (used to make mutated values refer to each other, as ids do).
fn strings_of(v: &Value, out: &mut Vec<String>) {
    let mut stack = vec![v];
    while let Some(v) = stack.pop() {
        match v {
            Value::String(s) if s.len() < 200 => out.push(s.clone()),
            Value::Array(a) => stack.extend(a),
            Value::Object(o) => stack.extend(o.values()),
            _ => {}
        }
    }
}

/// One random structural mutation somewhere in `v`.
fn mutate(rng: &mut StdRng, v: &mut Value, strings: &[String]) {
    let ps = pointers(v);
    let p = ps.choose(rng).unwrap().clone();
    let Some(node) = v.pointer_mut(&p) else { return };
    match rng.random_range(0..10) {
        // A huge string shared by many copies of an element: what one field repeated into
        // every block would turn into.
        9 => {
            let ps = pointers(v);
            let strs: Vec<&String> = ps.iter().filter(|p| v.pointer(p).is_some_and(Value::is_string)).collect();
            let arrays: Vec<&String> = ps.iter().filter(|p| v.pointer(p).is_some_and(Value::is_array)).collect();
            let (Some(sp), Some(ap)) =
                (strs.choose(rng).map(|s| s.to_string()), arrays.choose(rng).map(|s| s.to_string()))
            else {
                return;
            };
            let big = json!("é".repeat(8 << 10));
            if let Some(x) = v.pointer_mut(&sp) {
                *x = big;
            }
            if let Some(Value::Array(a)) = v.pointer_mut(&ap) {
                if let Some(x) = a.first().cloned() {
                    a.extend(std::iter::repeat_n(x, 200));
                }
            }
        }
        // Drop a field or an element.
        0 => match node {
            Value::Object(o) if !o.is_empty() => {
                let k = o.keys().nth(rng.random_range(0..o.len())).unwrap().clone();
                o.remove(&k);
            }
            Value::Array(a) if !a.is_empty() => {
                a.remove(rng.random_range(0..a.len()));
            }
            _ => *node = Value::Null,
        },
        // Change the type.
        1 | 2 => *node = random_scalar(rng, strings),
        3 => *node = random_value(rng, strings, 3),
        // A huge string.
        4 => *node = json!(huge_string(rng)),
        // Deep nesting (past serde_json's recursion limit of 128 some of the time).
        5 => {
            let depth = *[8usize, 60, 120, 126, 129, 200].choose(rng).unwrap();
            let inner = std::mem::take(node);
            *node = nest(inner, depth, rng);
        }
        // A new field.
        6 => {
            if let Value::Object(o) = node {
                o.insert(KEYS.choose(rng).unwrap().to_string(), random_value(rng, strings, 2));
            } else {
                *node = random_value(rng, strings, 2);
            }
        }
        // Many copies of an element.
        7 => {
            if let Value::Array(a) = node {
                if let Some(x) = a.first().cloned() {
                    let n = *[10usize, 100, 500].choose(rng).unwrap();
                    a.extend(std::iter::repeat_n(x, n));
                }
            }
        }
        // Another string of the same input (an id that now matches something else).
        _ => {
            if !strings.is_empty() {
                *node = json!(strings.choose(rng).unwrap());
            }
        }
    }
}

fn mutated(rng: &mut StdRng, v: &Value, strings: &[String]) -> Value {
    let mut v = v.clone();
    for _ in 0..rng.random_range(1..4) {
        mutate(rng, &mut v, strings);
    }
    v
}

fn cut_at_char(s: &str, at: usize) -> &str {
    let mut i = at.min(s.len());
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    &s[..i]
}

/// A mutated JSONL stream: lines mutated as JSON, dropped, repeated, swapped, cut or replaced.
fn mutated_lines(rng: &mut StdRng, lines: &[&str]) -> Vec<String> {
    let values: Vec<Option<Value>> = lines.iter().map(|l| serde_json::from_str(l).ok()).collect();
    let mut strings = Vec::new();
    for v in values.iter().flatten() {
        strings_of(v, &mut strings);
    }
    let mut out: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
    let edits = rng.random_range(1..8);
    for _ in 0..edits {
        if out.is_empty() {
            break;
        }
        let i = rng.random_range(0..out.len());
        match rng.random_range(0..10) {
            0..=4 => {
                if let Ok(v) = serde_json::from_str::<Value>(&out[i]) {
                    out[i] = mutated(rng, &v, &strings).to_string();
                }
            }
            5 => {
                out.remove(i);
            }
            6 => {
                let n = *[2usize, 10, 100].choose(rng).unwrap();
                let l = out[i].clone();
                for _ in 0..n {
                    out.insert(i, l.clone());
                }
            }
            7 => {
                let j = rng.random_range(0..out.len());
                out.swap(i, j);
            }
            8 => {
                let at = rng.random_range(0..=out[i].len());
                out[i] = cut_at_char(&out[i], at).to_string();
            }
            _ => {
                out[i] = match rng.random_range(0..4) {
                    0 => "[".repeat(100_000),
                    1 => {
                        let depth = *[129usize, 1000, 100_000].choose(rng).unwrap();
                        nest_text(&out[i], depth, rng)
                    }
                    2 => random_value(rng, &strings, 4).to_string(),
                    _ => String::from_utf8_lossy(&(0..64).map(|_| rng.random::<u8>()).collect::<Vec<_>>()).into(),
                };
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Output size

/// Serialized length of anything serializable.
fn json_len<T: serde::Serialize + ?Sized>(v: &T) -> usize {
    serde_json::to_vec(v).map(|v| v.len()).unwrap_or(0)
}

fn size_of_event(e: &AgentEvent) -> usize {
    match e {
        AgentEvent::BlockStart { conversation_id, block } | AgentEvent::BlockComplete { conversation_id, block } => {
            conversation_id.len() + json_len(block)
        }
        AgentEvent::TextDelta { conversation_id, block_id, delta } => {
            conversation_id.len() + block_id.len() + delta.len()
        }
        AgentEvent::BlockUpdate { conversation_id, block_id, updates } => {
            conversation_id.len() + block_id.len() + json_len(updates)
        }
        AgentEvent::MetadataUpdate { conversation_id, metadata } => conversation_id.len() + json_len(metadata),
        AgentEvent::SubagentDiscovered { subagent_id } | AgentEvent::SubagentCompleted { subagent_id, .. } => {
            subagent_id.len()
        }
        AgentEvent::Error { message } => message.len(),
    }
}

/// Output may repeat its input a few times (a delta, then the completed block) and add a
/// bounded amount per event (ids, timestamps, type names); what no event may do is carry a
/// large piece of input that other events carry too.
const K: usize = 4;
const PER_EVENT: usize = 2048;

fn assert_bounded(input: usize, output: usize, events: usize, what: &str) {
    let limit = K * input + PER_EVENT * events + 4096;
    assert!(output <= limit, "{what}: {output} bytes out of {input} bytes in ({events} events; limit {limit})");
}

// ---------------------------------------------------------------------------------------------
// Converters and parsers

fn fixture(rel: &str) -> String {
    std::fs::read_to_string(format!("{}/tests/fixtures/{rel}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

fn claude_streams() -> Vec<String> {
    ["sdk-write.jsonl", "sdk-subagent.jsonl", "sdk-error.jsonl"]
        .iter()
        .map(|f| fixture(&format!("claude/recorded/{f}")))
        .collect()
}

fn opencode_streams() -> Vec<String> {
    ["write.jsonl", "subagent.jsonl", "tool-error.jsonl", "retry.jsonl", "resume.jsonl"]
        .iter()
        .map(|f| fixture(&format!("opencode/{f}")))
        .collect()
}

fn run_converter(lines: &[String], mut push: impl FnMut(&str) -> Vec<AgentEvent>, what: &str) {
    let input: usize = lines.iter().map(|l| l.len() + 1).sum();
    let mut output = 0;
    let mut events = 0;
    for l in lines {
        for e in push(l) {
            output += size_of_event(&e);
            events += 1;
        }
    }
    assert_bounded(input, output, events, what);
}

#[test]
fn claude_stream_converter_survives_mutated_streams() {
    let streams = claude_streams();
    for seed in cases(300) {
        with_seed(seed, |rng| {
            let src = streams.choose(rng).unwrap();
            let lines = mutated_lines(rng, &src.lines().collect::<Vec<_>>());
            let mut s = ClaudeStream::new();
            run_converter(&lines, |l| s.push_line(l), "claude stream");
        });
    }
}

#[test]
fn opencode_stream_converter_survives_mutated_streams() {
    let streams = opencode_streams();
    for seed in cases(300) {
        with_seed(seed, |rng| {
            let src = streams.choose(rng).unwrap();
            let lines = mutated_lines(rng, &src.lines().collect::<Vec<_>>());
            // The main session id is sometimes one the stream uses, sometimes not.
            let main = if rng.random::<bool>() { "ses_0123456789ab_0iatx8od".to_string() } else { first_session(src) };
            let mut s = OpenCodeStream::new(&main);
            run_converter(&lines, |l| s.push_line(l), "opencode stream");
        });
    }
}

fn first_session(jsonl: &str) -> String {
    jsonl
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find_map(|v| v.pointer("/properties/info/sessionID").and_then(Value::as_str).map(str::to_string))
        .unwrap_or_default()
}

fn parse_bounded(arch: Architecture, raw: &str) {
    let parsed = arch.parse_transcript(raw);
    let events = parsed.blocks.len() + parsed.subagents.iter().map(|s| s.blocks.len() + 1).sum::<usize>();
    let output =
        json_len(&parsed.blocks) + parsed.subagents.iter().map(|s| s.id.len() + json_len(&s.blocks)).sum::<usize>();
    assert_bounded(raw.len(), output, events, arch.as_str());
}

#[test]
fn claude_transcript_parser_survives_mutated_transcripts() {
    // Combined transcripts: the stored fixtures and ones built from the recorded streams.
    let mut sources: Vec<Value> = ["claude/combined-task.json", "claude/recorded/combined-real.json"]
        .iter()
        .map(|f| serde_json::from_str(&fixture(f)).unwrap())
        .collect();
    sources.push(json!({ "main": claude_streams().join("\n"), "subagents": [{ "id": "agent-x", "transcript": claude_streams()[1] }] }));
    for seed in cases(120) {
        with_seed(seed, |rng| {
            let src = sources.choose(rng).unwrap();
            let raw = match rng.random_range(0..3) {
                // Mutate the JSONL inside the combined blob.
                0 | 1 => {
                    let mut combined = src.clone();
                    let main = combined["main"].as_str().unwrap_or_default().to_string();
                    combined["main"] = json!(mutated_lines(rng, &main.lines().collect::<Vec<_>>()).join("\n"));
                    if let Some(subs) = combined["subagents"].as_array_mut() {
                        for s in subs {
                            let t = s["transcript"].as_str().unwrap_or_default().to_string();
                            s["transcript"] = json!(mutated_lines(rng, &t.lines().collect::<Vec<_>>()).join("\n"));
                        }
                    }
                    combined.to_string()
                }
                // Mutate the blob itself.
                _ => {
                    let mut strings = Vec::new();
                    strings_of(src, &mut strings);
                    mutated(rng, src, &strings).to_string()
                }
            };
            parse_bounded(Architecture::ClaudeAgentSdk, &raw);
        });
    }
}

#[test]
fn opencode_transcript_parser_survives_mutated_exports() {
    let export: Value = serde_json::from_str(&fixture("opencode/export.json")).unwrap();
    let combined = json!({ "main": export, "subagents": [{ "id": "ses_child", "export": export }] });
    // A task whose child export was not stored: its conversation comes from the summary.
    let summarized = json!({ "info": { "id": "ses_main" }, "messages": [
        { "info": { "id": "msg_u", "role": "user", "time": { "created": 1 } }, "parts": [{ "id": "p0", "type": "text", "text": "go" }] },
        { "info": { "id": "msg_a", "role": "assistant", "modelID": "m", "time": { "created": 2 } }, "parts": [
            { "id": "p1", "type": "text", "text": "asking", "time": { "start": 3, "end": 4 } },
            { "id": "p2", "type": "tool", "tool": "task", "callID": "c1", "state": { "status": "completed",
              "input": { "prompt": "look", "subagent_type": "explore" }, "output": "done",
              "time": { "start": 5, "end": 9 },
              "metadata": { "sessionId": "ses_kid", "summary": [
                  { "id": "t1", "tool": "read", "state": { "status": "completed", "title": "a.txt" } },
                  { "id": "t2", "type": "tool", "tool": "bash", "callID": "c2",
                    "state": { "status": "error", "input": { "command": "x" }, "error": "boom" } } ] } } }
        ] }
    ] });
    let sources = [export.clone(), combined, summarized];
    let mut strings = Vec::new();
    for src in &sources {
        strings_of(src, &mut strings);
    }
    for seed in cases(300) {
        with_seed(seed, |rng| {
            let src = sources.choose(rng).unwrap();
            let mut v = src.clone();
            for _ in 0..rng.random_range(1..6) {
                mutate(rng, &mut v, &strings);
            }
            let mut raw = v.to_string();
            if rng.random_range(0..8) == 0 {
                let at = rng.random_range(0..=raw.len());
                raw = cut_at_char(&raw, at).to_string();
            }
            parse_bounded(Architecture::OpenCode, &raw);
        });
    }
}

// ---------------------------------------------------------------------------------------------
// REST bodies

async fn call(
    r: &agent_runtime::transport::rest::Router,
    method: &str,
    url: &str,
    headers: Vec<String>,
    body: Vec<u8>,
) -> (u16, Value) {
    let req = PlainRequest { method: method.into(), url: url.into(), headers, body: body.into(), oversized: false };
    let res = handle_plain(r, 1 << 20, req).await;
    let v = serde_json::from_slice(&res.body).unwrap_or(Value::String(String::from_utf8_lossy(&res.body).into()));
    (res.status, v)
}

/// A valid body for a route, to mutate from.
fn valid_body(route: &str) -> Value {
    match route {
        "create" => json!({
            "agentProfileRef": "p", "architecture": "claude-agent-sdk",
            "sessionOptions": { "model": "m" }, "defaultWorkspaceFiles": [{ "path": "a.txt", "content": "hi" }],
        }),
        "options" => json!({ "sessionOptions": { "model": "m", "nested": { "a": [1, 2] } } }),
        "messages" => json!({ "content": "hello" }),
        _ => json!({}),
    }
}

/// A runtime on an in-memory adapter, with one Claude session created.
async fn runtime_with_a_session() -> (Arc<AgentRuntime>, String) {
    let rt = AgentRuntime::new(RuntimeOptions::default(), Arc::new(MemoryAdapter::with_profile("p")));
    let args = CreateSessionArgs {
        agent_profile_ref: "p".into(),
        architecture: Some(Architecture::ClaudeAgentSdk),
        ..Default::default()
    };
    let id = rt.sessions.create_session(args).await.unwrap().session_id.clone();
    (rt, id)
}

/// The field names a route's body has, one of which a 400 should name when a field is wrong.
const FIELDS: &[&str] =
    &["agentProfileRef", "architecture", "sessionOptions", "defaultWorkspaceFiles", "content", "path"];

#[tokio::test]
async fn rest_routes_answer_mutated_bodies_with_clear_errors() {
    let (rt, existing) = runtime_with_a_session().await;
    let r = router(rt.clone(), "secret");
    for seed in cases(400) {
        let existing = existing.clone();
        let r = r.clone();
        with_seed_async(seed, |mut rng| async move {
            let rng = &mut rng;
            let route =
                *["create", "options", "messages", "sync", "create-alias", "message-alias"].choose(rng).unwrap();
            // Messages go to a session that does not exist: the body is checked first, and no
            // turn (no sandbox) ever starts.
            let (method, url, body_route) = match route {
                "create" => ("POST", "/api/sessions".to_string(), "create"),
                "create-alias" => ("POST", "/sessions/create".to_string(), "create"),
                "options" => ("PATCH", format!("/api/sessions/{existing}/options"), "options"),
                "messages" => ("POST", "/api/sessions/no-such-session/messages".to_string(), "messages"),
                "message-alias" => ("POST", "/sessions/no-such-session/message".to_string(), "messages"),
                _ => ("POST", format!("/api/sessions/{existing}/sync"), "sync"),
            };
            let valid = valid_body(body_route);
            let mut strings = Vec::new();
            strings_of(&valid, &mut strings);
            let body: Vec<u8> = match rng.random_range(0..6) {
                0 => valid.to_string().into_bytes(),
                1 => {
                    let s = mutated(rng, &valid, &strings).to_string();
                    cut_at_char(&s, rng.random_range(0..=s.len())).as_bytes().to_vec()
                }
                2 => (0..rng.random_range(0..256)).map(|_| rng.random::<u8>()).collect(),
                _ => mutated(rng, &valid, &strings).to_string().into_bytes(),
            };
            let mut headers = vec!["authorization".to_string(), "Bearer secret".to_string()];
            match rng.random_range(0..8) {
                0 => headers = vec![],
                1 => headers[1] = (*ODD_STRINGS.choose(rng).unwrap()).to_string(),
                2 => headers.extend(["content-type".into(), (*ODD_STRINGS.choose(rng).unwrap()).into()]),
                3 => headers.extend(["x-odd".into(), huge_string(rng)]),
                _ => headers.extend(["content-type".into(), "application/json".into()]),
            }
            let authorized = headers.get(1).is_some_and(|h| h == "Bearer secret" || h == "secret");
            let (status, v) = call(&r, method, &url, headers, body.clone()).await;
            let ctx = format!(
                "{method} {url} body {:?} -> {status} {v}",
                String::from_utf8_lossy(&body).chars().take(300).collect::<String>()
            );
            assert!((200..300).contains(&status) || (400..500).contains(&status), "{ctx}");
            if status >= 400 {
                let error = v["error"].as_str().unwrap_or_else(|| panic!("a JSON error body: {ctx}"));
                assert!(v["code"].is_string(), "{ctx}");
                if !authorized {
                    // Headers that are not even valid HTTP are refused before auth.
                    assert!(status == 401 || error.starts_with("Invalid request:"), "{ctx}");
                } else if status == 400
                    && error.starts_with("Invalid request body:")
                    && error != "Invalid request body: expected a JSON object"
                {
                    assert!(
                        FIELDS.iter().any(|f| error.contains(f)) || error.contains("missing field"),
                        "names a field: {ctx}"
                    );
                }
            }
        })
        .await;
    }
    // Still serving a well-formed request.
    let (st, _) = call(
        &r,
        "POST",
        "/api/sessions",
        vec!["authorization".into(), "Bearer secret".into()],
        valid_body("create").to_string().into_bytes(),
    )
    .await;
    assert_eq!(st, 201);
}

// ---------------------------------------------------------------------------------------------
// Engine.IO / Socket.IO packets

async fn request(svc: &RealtimeService, method: &str, uri: &str, body: Vec<u8>) -> (u16, String) {
    let req = match http::Request::builder().method(method).uri(uri).body(Full::new(bytes::Bytes::from(body))) {
        Ok(r) => r,
        Err(_) => return (0, String::new()),
    };
    let res = svc.clone().oneshot(req).await.unwrap();
    let status = res.status().as_u16();
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

/// Connect over polling and join `session`; the server must answer like for any client.
async fn well_formed_client(svc: &RealtimeService, session: &str) {
    let (st, open) = request(svc, "GET", "/socket.io/?EIO=4&transport=polling", vec![]).await;
    assert_eq!(st, 200, "{open}");
    let sid = serde_json::from_str::<Value>(&open[1..]).unwrap()["sid"].as_str().unwrap().to_string();
    let uri = format!("/socket.io/?EIO=4&transport=polling&sid={sid}");
    assert_eq!(request(svc, "POST", &uri, b"40".to_vec()).await, (200, "ok".into()));
    assert!(request(svc, "GET", &uri, vec![]).await.1.starts_with("40"));
    assert_eq!(request(svc, "POST", &uri, format!(r#"421["session:join","{session}"]"#).into_bytes()).await.0, 200);
    let mut all = String::new();
    for _ in 0..10 {
        all.push_str(&request(svc, "GET", &uri, vec![]).await.1);
        if all.contains("431") {
            break;
        }
    }
    assert!(all.contains(r#"431[{"success":true}]"#), "{all}");
}

/// Engine.IO polling payloads: packets separated by 0x1e; `4` is a message carrying a
/// Socket.IO packet (`<type>[<attachments>-][<nsp>,][<ack id>]<json>`).
fn socketio_packet(rng: &mut StdRng, session: &str) -> Vec<u8> {
    let valid = [
        format!(r#"42["session:join","{session}"]"#),
        format!(r#"421["session:leave","{session}"]"#),
        r#"42["session:join",5]"#.to_string(),
        "40".into(),
        "41".into(),
        "2".into(),
        "3".into(),
        "6".into(),
        r#"451-["session:join",{"_placeholder":true,"num":0}]"#.into(),
        "40/admin,".into(),
        r#"42/nope,7["x"]"#.into(),
        r#"4299999999999999999999["session:join","x"]"#.into(),
    ];
    let mut p = valid.choose(rng).unwrap().clone();
    match rng.random_range(0..8) {
        0 => {}
        1 => p = cut_at_char(&p, rng.random_range(0..=p.len())).to_string(),
        2 => {
            // A mutated JSON argument.
            let v = random_value(rng, &[session.to_string()], 4);
            p = format!(r#"42{}["session:join",{v}]"#, if rng.random::<bool>() { "3" } else { "" });
        }
        3 => p = format!("42{}", nest_text(r#""session:join""#, *[10usize, 127, 129, 5000].choose(rng).unwrap(), rng)),
        4 => p = format!(r#"42["{}",1]"#, huge_string(rng)),
        5 => return (0..rng.random_range(0..512)).map(|_| rng.random::<u8>()).collect(),
        6 => p = format!("4{}", "[".repeat(rng.random_range(1..100_000))),
        _ => p.insert(
            rng.random_range(0..=p.len()).min(p.len()),
            *['\u{1e}', '\u{0}', 'é', '"', '['].choose(rng).unwrap(),
        ),
    }
    if !p.is_char_boundary(p.len()) {
        p.clear();
    }
    // Sometimes several packets in one payload.
    let n = if rng.random_range(0..4) == 0 { rng.random_range(2..5) } else { 1 };
    vec![p; n].join("\u{1e}").into_bytes()
}

#[tokio::test]
async fn socketio_polling_survives_mutated_packets() {
    let (rt, session) = runtime_with_a_session().await;
    let realtime = start(rt.clone(), &RealtimeOptions::default());
    let svc = realtime.service.clone();
    for seed in cases(300) {
        let svc = svc.clone();
        let session = session.clone();
        with_seed_async(seed, |mut rng| async move {
            let rng = &mut rng;
            // A fresh Engine.IO session, connected to the namespace half of the time.
            let (st, open) = request(&svc, "GET", "/socket.io/?EIO=4&transport=polling", vec![]).await;
            assert_eq!(st, 200, "{open}");
            let sid = serde_json::from_str::<Value>(&open[1..]).unwrap()["sid"].as_str().unwrap().to_string();
            if rng.random::<bool>() {
                request(&svc, "POST", &format!("/socket.io/?EIO=4&transport=polling&sid={sid}"), b"40".to_vec()).await;
            }
            for _ in 0..rng.random_range(1..4) {
                let uri = match rng.random_range(0..10) {
                    0 => format!(
                        "/socket.io/?EIO={}&transport=polling&sid={sid}",
                        *["3", "5", "x", ""].choose(rng).unwrap()
                    ),
                    1 => format!("/socket.io/?EIO=4&transport=websocket&sid={sid}"),
                    2 => format!("/socket.io/?EIO=4&transport=polling&sid={}", *ODD_STRINGS.choose(rng).unwrap()),
                    3 => "/socket.io/?EIO=4&transport=polling&sid=%ZZ".into(),
                    _ => format!("/socket.io/?EIO=4&transport=polling&sid={sid}"),
                };
                let method = if rng.random_range(0..10) == 0 {
                    *["PUT", "DELETE", "OPTIONS"].choose(rng).unwrap()
                } else {
                    "POST"
                };
                let (status, body) = request(&svc, method, &uri, socketio_packet(rng, &session)).await;
                // 0: the URI could not even be built into a request.
                assert!(status == 0 || (200..500).contains(&status), "{method} {uri} -> {status} {body}");
            }
        })
        .await;
    }
    // The server keeps serving a well-formed client.
    well_formed_client(&svc, &session).await;
}

// ---------------------------------------------------------------------------------------------
// Regressions found by the generator above (its seeds 0x5eed0000 + 27, 69 and 95 at the
// time; the inputs are kept here in a generator-independent form).

const BIG: usize = 64 << 10;

fn stream_output(lines: &[String], mut push: impl FnMut(&str) -> Vec<AgentEvent>) -> (usize, usize, usize) {
    let input = lines.iter().map(|l| l.len() + 1).sum();
    let events: Vec<AgentEvent> = lines.iter().flat_map(|l| push(l)).collect();
    (input, events.iter().map(size_of_event).sum(), events.len())
}

#[test]
fn regression_opencode_summary_entry_that_is_not_an_object() {
    let raw = json!({ "messages": [{ "info": { "id": "m", "role": "assistant" }, "parts": [{
        "id": "p", "type": "tool", "tool": "task",
        "state": { "status": "completed", "metadata": { "sessionId": "ses_kid", "summary": ["x", 5, [1], null, true] } },
    }] }] })
    .to_string();
    let parsed = Architecture::OpenCode.parse_transcript(&raw);
    assert_eq!(parsed.blocks.len(), 1, "the task's subagent block");
}

#[test]
fn regression_claude_shared_fields_are_not_repeated_unbounded() {
    let huge = "x".repeat(BIG);
    // One assistant line: a huge model, message id and timestamp shared by 200 text items.
    let items: Vec<Value> = (0..200).map(|_| json!({ "type": "text", "text": "a" })).collect();
    let assistant = json!({ "type": "assistant", "uuid": huge, "timestamp": huge,
        "message": { "id": huge, "model": huge, "content": items } });
    // One user line: a Task result with a huge prompt shared by 200 tool results.
    let results: Vec<Value> =
        (0..200).map(|i| json!({ "type": "tool_result", "tool_use_id": format!("t{i}"), "content": "" })).collect();
    let user = json!({ "type": "user", "message": { "content": results },
        "toolUseResult": { "agentId": huge, "status": "completed", "prompt": huge, "content": huge } });
    let raw = json!({ "main": format!("{assistant}\n{user}\n"), "subagents": [] }).to_string();
    parse_bounded(Architecture::ClaudeAgentSdk, &raw);

    // The live stream: a huge message id and model, then many small block starts and deltas.
    let mut lines = vec![json!({ "type": "stream_event", "event": { "type": "message_start", "message": { "id": huge, "model": huge } } }).to_string()];
    for i in 0..200 {
        lines.push(json!({ "type": "stream_event", "event": { "type": "content_block_start", "index": i, "content_block": { "type": "text" } } }).to_string());
        lines.push(json!({ "type": "stream_event", "event": { "type": "content_block_delta", "index": i, "delta": { "type": "text_delta", "text": "a" } } }).to_string());
    }
    // A huge subagent id, then many small lines of that subagent.
    lines
        .push(json!({ "type": "system", "subtype": "task_started", "task_id": huge, "tool_use_id": "tu" }).to_string());
    for _ in 0..200 {
        lines.push(json!({ "type": "tool_progress", "tool_use_id": "x", "parent_tool_use_id": "tu" }).to_string());
    }
    let mut s = ClaudeStream::new();
    let (input, output, events) = stream_output(&lines, |l| s.push_line(l));
    assert_bounded(input, output, events, "claude stream");
}

#[test]
fn regression_opencode_shared_fields_are_not_repeated_unbounded() {
    let huge = "x".repeat(BIG);
    // The export: a huge model shared by 200 text parts.
    let parts: Vec<Value> = (0..200).map(|i| json!({ "id": format!("p{i}"), "type": "text", "text": "a" })).collect();
    let raw = json!({ "messages": [{ "info": { "id": "m", "role": "assistant", "modelID": huge }, "parts": parts }] })
        .to_string();
    parse_bounded(Architecture::OpenCode, &raw);

    // The live stream: a huge model, and a part of a huge child session, then many small lines.
    let mut lines = vec![json!({ "type": "message.updated", "properties": { "info": { "id": "m", "role": "assistant", "modelID": huge, "sessionID": "main" } } }).to_string()];
    for i in 0..200 {
        lines.push(json!({ "type": "message.part.updated", "properties": { "part": { "id": format!("p{i}"), "type": "text", "messageID": "m", "sessionID": "main" } } }).to_string());
    }
    lines.push(json!({ "type": "message.part.updated", "properties": { "part": { "id": "c", "type": "text", "messageID": "m2", "sessionID": huge } } }).to_string());
    for _ in 0..200 {
        lines.push(
            json!({ "type": "message.part.delta", "properties": { "partID": "c", "messageID": "m2", "delta": "a" } })
                .to_string(),
        );
    }
    let mut s = OpenCodeStream::new("main");
    let (input, output, events) = stream_output(&lines, |l| s.push_line(l));
    assert_bounded(input, output, events, "opencode stream");
}
