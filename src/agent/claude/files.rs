//! The agent profile as files in a Claude sandbox (spec §6.1), plus the transcript restore.
//!
//! Differences from the reference, all fixes it recommends: subagent files get YAML
//! frontmatter (Claude Code only registers agents that have it), YAML values are quoted,
//! names that are not plain file names are skipped with a warning, and restored subagent
//! transcripts keep their stored id (no `agent-agent-` doubling).

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::transcript::agent_key;
use crate::agent::profile::{self, mcp_command, mcp_dir_name, safe_name, yaml_str, LocalMcp};

/// Everything the Claude architecture derives from a profile.
pub struct ProfileFiles {
    pub files: Vec<(PathBuf, Vec<u8>)>,
    pub mcp_servers: Map<String, Value>,
    pub tools: Option<Vec<String>>,
    pub bundled_mcps: Vec<LocalMcp>,
}

pub fn profile_files(profile_raw: &Map<String, Value>, workspace: &Path, mcps_dir: &Path) -> ProfileFiles {
    let p = profile::parse(profile_raw);
    let claude = workspace.join(".claude");
    let mut files = Vec::new();
    if let Some(md) = &p.agent_md_file {
        files.push((workspace.join("CLAUDE.md"), md.clone().into_bytes()));
    }
    for a in p.subagents.iter().filter(|a| safe_name("subagent", &a.name)) {
        let mut fm = format!(
            "---\nname: {}\ndescription: {}\n",
            yaml_str(&a.name),
            yaml_str(a.description.as_deref().unwrap_or(""))
        );
        if let Some(t) = &a.tools {
            fm.push_str(&format!("tools: {}\n", t.join(", ")));
        }
        if let Some(m) = &a.model {
            fm.push_str(&format!("model: {}\n", yaml_str(m)));
        }
        fm.push_str("---\n\n");
        fm.push_str(&a.prompt);
        files.push((claude.join("agents").join(format!("{}.md", a.name)), fm.into_bytes()));
    }
    files.extend(profile::command_files(&p, &claude.join("commands")));
    files.extend(profile::skill_files(&p, &claude.join("skills")));
    let mut mcp_servers = Map::new();
    for m in p.bundled_mcps.iter().filter(|m| safe_name("bundled MCP", &mcp_dir_name(&m.name))) {
        let (command, args) = mcp_command(&mcps_dir.join(mcp_dir_name(&m.name)), &m.start_command);
        mcp_servers.insert(m.name.clone(), json!({ "type": "stdio", "command": command, "args": args }));
    }
    for ext in &p.external_mcps {
        if let Some(Value::String(name)) = ext.get("name") {
            let mut cfg = ext.as_object().cloned().unwrap_or_default();
            cfg.remove("name");
            mcp_servers.insert(name.clone(), Value::Object(cfg));
        }
    }
    if !mcp_servers.is_empty() {
        let doc = serde_json::to_vec_pretty(&json!({ "mcpServers": mcp_servers })).expect("json");
        files.push((claude.join(".mcp.json"), doc));
    }
    ProfileFiles { files, mcp_servers, tools: p.tools, bundled_mcps: p.bundled_mcps }
}

/// Claude Code's project folder name for a cwd: every char outside `[A-Za-z0-9]` becomes `-`;
/// names over 200 chars are cut and suffixed with a base-36 hash of the path.
pub fn encode_project_dir(real_cwd: &str) -> String {
    let enc: String = real_cwd.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect();
    if enc.chars().count() <= 200 {
        return enc;
    }
    let mut h: i32 = 0;
    for unit in real_cwd.encode_utf16() {
        h = h.wrapping_mul(31).wrapping_add(unit as i32);
    }
    let mut n = (h as i64).unsigned_abs();
    let mut digits = Vec::new();
    loop {
        digits.push(std::char::from_digit((n % 36) as u32, 36).unwrap());
        n /= 36;
        if n == 0 {
            break;
        }
    }
    let hash: String = digits.into_iter().rev().collect();
    format!("{}-{hash}", enc.chars().take(200).collect::<String>())
}

/// `$HOME/.claude/projects/<encoded workspace>`.
pub fn transcript_dir(home: &Path, workspace: &Path) -> PathBuf {
    home.join(".claude").join("projects").join(encode_project_dir(&workspace.display().to_string()))
}

#[derive(Deserialize)]
struct Combined {
    main: String,
    #[serde(default)]
    subagents: Vec<StoredSub>,
}

#[derive(Deserialize)]
struct StoredSub {
    id: String,
    #[serde(default)]
    transcript: String,
}

/// Files that restore a stored combined transcript: the main JSONL and each subagent's, where
/// Claude Code keeps them (`<dir>/<session>/subagents/agent-<id>.jsonl`).
pub fn restore_files(raw: &str, session_id: &str, dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let Ok(c) = serde_json::from_str::<Combined>(raw) else {
        if !raw.trim().is_empty() {
            tracing::warn!(session_id, "stored transcript is not the combined format; starting a fresh conversation");
        }
        return vec![];
    };
    let mut out = Vec::new();
    if !c.main.is_empty() {
        out.push((dir.join(format!("{session_id}.jsonl")), c.main.into_bytes()));
    }
    for s in c.subagents {
        let key = agent_key(&s.id);
        if safe_name("subagent transcript", key) && !s.transcript.is_empty() {
            let path = dir.join(session_id).join("subagents").join(format!("agent-{key}.jsonl"));
            out.push((path, s.transcript.into_bytes()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn project_dir_encoding() {
        assert_eq!(encode_project_dir("/workspace"), "-workspace");
        assert_eq!(encode_project_dir("/a/My_Dir.v2 with space/ünï-x"), "-a-My-Dir-v2-with-space--n--x");
        let long = format!("/{}", "a".repeat(250));
        let e = encode_project_dir(&long);
        assert!(e.starts_with(&format!("-{}", "a".repeat(199))));
        assert!(e.len() > 201);
    }

    #[test]
    fn profile_becomes_files() {
        let raw = json!({
            "id": "p", "name": "P", "agentMDFile": "# Rules",
            "subagents": [{"name": "helper", "description": "Helps: a lot", "prompt": "You help.", "tools": ["Read", "Write"]},
                          {"name": "../evil", "prompt": "x"}],
            "commands": [{"name": "hi", "prompt": "Say hi"}],
            "skills": [{"name": "s", "description": "d", "skillMd": "body",
                        "supportingFiles": [{"relativePath": "ref/a.md", "content": "A"}, {"relativePath": "../x", "content": "no"}]}],
            "bundledMCPs": [{"name": "Echo Server", "description": "", "localProjectPath": "/src/echo", "startCommand": "tsx src/index.ts --port=1", "installCommand": ""}],
            "tools": ["Read"]
        });
        let ws = Path::new("/w");
        let pf = profile_files(raw.as_object().unwrap(), ws, Path::new("/m"));
        let get = |p: &str| {
            pf.files.iter().find(|(k, _)| k == Path::new(p)).map(|(_, v)| String::from_utf8(v.clone()).unwrap())
        };
        assert_eq!(get("/w/CLAUDE.md").unwrap(), "# Rules");
        assert_eq!(
            get("/w/.claude/agents/helper.md").unwrap(),
            "---\nname: \"helper\"\ndescription: \"Helps: a lot\"\ntools: Read, Write\n---\n\nYou help."
        );
        assert!(pf.files.iter().all(|(p, _)| !p.display().to_string().contains("evil")));
        assert_eq!(get("/w/.claude/commands/hi.md").unwrap(), "Say hi");
        assert!(get("/w/.claude/skills/s/SKILL.md")
            .unwrap()
            .starts_with("---\nname: \"s\"\ndescription: \"d\"\n---\n\nbody"));
        assert_eq!(get("/w/.claude/skills/s/ref/a.md").unwrap(), "A");
        assert_eq!(pf.files.iter().filter(|(p, _)| p.starts_with("/w/.claude/skills")).count(), 2);
        assert_eq!(
            pf.mcp_servers["Echo Server"],
            json!({"type": "stdio", "command": "tsx", "args": ["/m/echo_server/src/index.ts", "--port=1"]})
        );
        assert!(get("/w/.claude/.mcp.json").is_some());
        assert_eq!(pf.tools, Some(vec!["Read".to_string()]));
    }

    #[test]
    fn restore_writes_main_and_subagents_without_double_prefix() {
        let raw = json!({"main": "{}\n", "subagents": [{"id": "agent-agent-x1", "transcript": "a\nb\n"}, {"id": "agent-../../e", "transcript": "z"}]}).to_string();
        let files = restore_files(&raw, "sid", Path::new("/t"));
        let paths: Vec<String> = files.iter().map(|(p, _)| p.display().to_string()).collect();
        assert_eq!(paths, ["/t/sid.jsonl", "/t/sid/subagents/agent-x1.jsonl"]);
        assert!(restore_files("", "sid", Path::new("/t")).is_empty());
    }
}
