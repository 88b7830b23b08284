//! The Claude Agent SDK architecture.
//!
//! `files` writes the profile into the sandbox, `message` converts one SDK/transcript message
//! into blocks, `stream` converts a live run, `transcript` parses the stored combined transcript.
//! A turn runs the package's `sandbox/claude-runner.mjs` with Node; its request (prompt
//! included) goes on stdin.

pub mod files;
pub mod message;
pub mod stream;
pub mod transcript;

use std::collections::BTreeMap;
use std::path::Path;

use async_trait::async_trait;
use serde_json::{json, Value};

use super::architecture::{AgentArchitecture, RunnerAssets, SessionSetup, StreamConverter};
use super::stream::AgentEvent;
use crate::sandbox::{ExecOptions, Process, SResult, Sandbox};

pub const RUNNER: &str = "claude-runner.mjs";

pub struct ClaudeArchitecture {
    assets: RunnerAssets,
}

impl ClaudeArchitecture {
    pub fn new(assets: RunnerAssets) -> Self {
        Self { assets }
    }
}

impl StreamConverter for stream::ClaudeStream {
    fn push_line(&mut self, line: &str) -> Vec<AgentEvent> {
        stream::ClaudeStream::push_line(self, line)
    }
}

#[async_trait]
impl AgentArchitecture for ClaudeArchitecture {
    async fn initialize(&self, sb: &dyn Sandbox, setup: &SessionSetup<'_>) -> SResult<()> {
        let paths = sb.paths().clone();
        let pf = files::profile_files(&setup.profile.raw, &paths.workspace, &paths.mcps);
        let mut all = pf.files;
        all.extend(self.assets.runner_files(&paths.app));
        for m in &pf.bundled_mcps {
            if let Some(src) = &m.local_project_path {
                all.extend(self.assets.bundled_mcp_files(&m.name, Path::new(src), &paths.mcps)?);
            }
        }
        let tdir = files::transcript_dir(&paths.home, &paths.workspace);
        sb.mkdir(&tdir).await?;
        sb.mkdir(&paths.workspace.join(".claude")).await?;
        if let Some(raw) = setup.raw_transcript {
            all.extend(files::restore_files(raw, setup.session_id, &tdir));
        }
        sb.write_files(&all).await
    }

    async fn start_runner(&self, sb: &dyn Sandbox, _setup: &SessionSetup<'_>) -> SResult<Process> {
        let paths = sb.paths();
        let mut env = BTreeMap::new();
        // The one switch that stops Claude Code's telemetry, title and probe requests.
        env.insert("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC".into(), "1".into());
        env.insert("DISABLE_AUTOUPDATER".into(), "1".into());
        env.insert("DISABLE_TELEMETRY".into(), "1".into());
        env.insert("DISABLE_ERROR_REPORTING".into(), "1".into());
        // A local sandbox runs this host's Node and SDK; a remote one has its own in the image.
        let node = if sb.uses_host_toolchain() {
            if let Some(entry) = &self.assets.claude_sdk_entry {
                env.insert("CLAUDE_AGENT_SDK_ENTRY".into(), entry.clone());
            }
            self.assets.node.clone()
        } else {
            "node".to_string()
        };
        self.assets.restore_runner(sb, RUNNER).await?;
        let runner = paths.app.join(RUNNER).display().to_string();
        sb.exec(&[node, runner], ExecOptions { cwd: Some(paths.workspace.clone()), env }).await
    }

    fn runner_start(&self, sb: &dyn Sandbox, setup: &SessionSetup<'_>) -> Value {
        let paths = sb.paths();
        let pf = files::profile_files(&setup.profile.raw, &paths.workspace, &paths.mcps);
        let mut start = json!({
            "type": "start",
            "sessionId": setup.session_id,
            "tools": pf.tools,
            "mcpServers": pf.mcp_servers,
        });
        if let Some(Value::String(model)) = setup.session_options.get("model") {
            start["model"] = json!(model);
        }
        start
    }

    /// Streaming input: a message sent mid-turn is read with the next tool result.
    fn steers(&self) -> bool {
        true
    }

    fn stream(&self, _session_id: &str) -> Box<dyn StreamConverter> {
        Box::new(stream::ClaudeStream::new())
    }

    /// `.claude/` holds the profile's agents, commands and skills: configuration, not work.
    fn ignored_paths(&self) -> &'static [&'static str] {
        &[".claude/"]
    }

    async fn read_transcript(&self, sb: &dyn Sandbox, session_id: &str) -> SResult<Option<String>> {
        let paths = sb.paths();
        // Claude Code names the folder after the real cwd of the process, which is the
        // workspace as the sandbox sees it; look in every project folder to be sure.
        let projects = paths.home.join(".claude").join("projects");
        let own = format!("{session_id}.jsonl");
        // One listing serves both: which folder holds the session, and its subagent files.
        let listing = sb.list_files(&projects).await?;
        let folder = listing.iter().find_map(|rel| {
            let (folder, name) = rel.split_once('/')?;
            (name == own).then(|| folder.to_string())
        });
        let folder = folder.unwrap_or_else(|| files::encode_project_dir(&paths.workspace.display().to_string()));
        let dir = projects.join(&folder);
        let main = match sb.read_file(&dir.join(&own)).await? {
            Some(b) if !b.is_empty() => String::from_utf8_lossy(&b).into_owned(),
            _ => return Ok(None),
        };
        let nested = format!("{session_id}/subagents/");
        let prefix = format!("{folder}/");
        let mut subagents = Vec::new();
        for rel in listing.iter().filter_map(|r| r.strip_prefix(&prefix)) {
            let name = rel.rsplit('/').next().unwrap_or(rel);
            let is_sub = name.starts_with("agent-") && name.ends_with(".jsonl");
            let here = rel.starts_with(&nested) || !rel.contains('/');
            if !is_sub || !here {
                continue;
            }
            let Some(bytes) = sb.read_file(&dir.join(rel)).await? else { continue };
            let text = String::from_utf8_lossy(&bytes).into_owned();
            // Older Claude Code wrote one-line placeholders and other sessions' agents beside ours.
            if text.lines().filter(|l| !l.trim().is_empty()).count() <= 1 || !text.contains(session_id) {
                continue;
            }
            let id = name.trim_end_matches(".jsonl").to_string();
            subagents.push(json!({ "id": id, "transcript": text }));
        }
        Ok(Some(json!({ "main": main, "subagents": subagents }).to_string()))
    }
}
