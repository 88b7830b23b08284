//! The OpenCode architecture.
//!
//! `files` writes the profile where OpenCode reads it, `stream` converts a live run's events,
//! `parts` and `transcript` turn OpenCode's session export (the stored transcript) into blocks.
//! A turn runs the package's `sandbox/opencode-runner.mjs` with Node (request on stdin); the
//! runner starts OpenCode's server on a free port, so sessions side by side never collide. The
//! transcript is read back with the runner's `export` mode.

pub mod files;
pub mod parts;
pub mod stream;
pub mod transcript;

use std::collections::BTreeMap;
use std::path::Path;

use async_trait::async_trait;
use serde_json::{json, Value};
use tokio::io::AsyncReadExt;

use super::architecture::{AgentArchitecture, RunnerAssets, SessionSetup, StreamConverter};
use super::stream::AgentEvent;
use crate::sandbox::{ExecOptions, Process, SResult, Sandbox, SandboxError};

pub const RUNNER: &str = "opencode-runner.mjs";

pub struct OpenCodeArchitecture {
    assets: RunnerAssets,
}

impl OpenCodeArchitecture {
    pub fn new(assets: RunnerAssets) -> Self {
        Self { assets }
    }

    /// Node and the runner's environment for this sandbox.
    fn runner(&self, sb: &dyn Sandbox) -> (Vec<String>, ExecOptions) {
        let mut env = BTreeMap::new();
        let node = if sb.uses_host_toolchain() {
            if let Some(m) = &self.assets.open_code_modules {
                env.insert("AGENT_RUNTIME_NODE_MODULES".to_string(), m.clone());
            }
            self.assets.node.clone()
        } else {
            "node".to_string() // the image has OpenCode beside the runner, in /app/node_modules
        };
        let paths = sb.paths();
        let argv = vec![node, paths.app.join(RUNNER).display().to_string()];
        (argv, ExecOptions { cwd: Some(paths.workspace.clone()), env })
    }

    /// One export through the runner: the session's JSON, or `None` when OpenCode has none.
    async fn export(&self, sb: &dyn Sandbox, id: &str) -> SResult<Option<String>> {
        self.assets.restore_runner(sb, RUNNER).await?;
        let (mut argv, opts) = self.runner(sb);
        argv.extend(["export".to_string(), id.to_string()]);
        let mut p = sb.exec(&argv, opts).await?;
        drop(p.stdin.take());
        let mut out = String::new();
        let read = p.stdout.read_to_string(&mut out).await;
        let code = p.exit.await;
        read.map_err(|e| SandboxError::Io { path: "opencode export".into(), message: e.to_string() })?;
        if code != 0 || !out.trim_start().starts_with('{') {
            tracing::debug!(session_id = id, code, "no OpenCode export");
            return Ok(None);
        }
        Ok(Some(out))
    }
}

impl StreamConverter for stream::OpenCodeStream {
    fn push_line(&mut self, line: &str) -> Vec<AgentEvent> {
        stream::OpenCodeStream::push_line(self, line)
    }
}

/// Child sessions (task subagents) referenced by an export's task tool parts.
fn child_sessions(export: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for m in export.get("messages").and_then(Value::as_array).into_iter().flatten() {
        for p in m.get("parts").and_then(Value::as_array).into_iter().flatten() {
            if let Some(id) = p.pointer("/state/metadata/sessionId").and_then(Value::as_str) {
                if p.get("tool").and_then(Value::as_str) == Some("task") && !out.iter().any(|o| o == id) {
                    out.push(id.to_string());
                }
            }
        }
    }
    out
}

/// The main session's export out of a stored transcript (plain export or `{ main, subagents }`).
fn main_export(raw: &str) -> Option<Value> {
    let v: Value = serde_json::from_str(raw).ok()?;
    match v.get("main") {
        Some(m) => Some(m.clone()),
        None => Some(v),
    }
}

#[async_trait]
impl AgentArchitecture for OpenCodeArchitecture {
    async fn initialize(&self, sb: &dyn Sandbox, setup: &SessionSetup<'_>) -> SResult<()> {
        let paths = sb.paths().clone();
        let pf = files::profile_files(&setup.profile.raw, &paths.workspace, &paths.home, &paths.mcps);
        let mut all = pf.files;
        all.extend(self.assets.runner_files(&paths.app));
        for (name, src) in &pf.bundled_mcps {
            all.extend(self.assets.bundled_mcp_files(name, Path::new(src), &paths.mcps)?);
        }
        // The stored export waits beside the runner, which imports it when OpenCode does not
        // know the session (a fresh sandbox) and checks that the import worked.
        if let Some(export) = setup.raw_transcript.and_then(main_export) {
            let file = paths.app.join("restore").join(format!("{}.json", setup.session_id));
            all.push((file, serde_json::to_vec(&export).expect("json")));
        }
        sb.write_files(&all).await
    }

    async fn start_runner(&self, sb: &dyn Sandbox, _setup: &SessionSetup<'_>) -> SResult<Process> {
        self.assets.restore_runner(sb, RUNNER).await?;
        let (argv, opts) = self.runner(sb);
        sb.exec(&argv, opts).await
    }

    /// A message sent mid-turn is stored in the session without a reply of its own; OpenCode's
    /// loop answers it at its next step (or the runner takes it back if the loop was ending).
    fn steers(&self) -> bool {
        true
    }

    fn runner_start(&self, _sb: &dyn Sandbox, setup: &SessionSetup<'_>) -> Value {
        let mut start = json!({ "type": "start", "sessionId": setup.session_id });
        if let Some(model) = setup.session_options.get("model") {
            start["model"] = model.clone();
        }
        start
    }

    fn stream(&self, session_id: &str) -> Box<dyn StreamConverter> {
        Box::new(stream::OpenCodeStream::new(session_id))
    }

    /// `.opencode/` is OpenCode's configuration and bookkeeping (it writes `package.json` and
    /// `.gitignore` there on every start), not the user's work.
    fn ignored_paths(&self) -> &'static [&'static str] {
        &[".opencode/"]
    }

    /// The session's export; with subagents, `{ main, subagents: [{ id, export }] }` so their
    /// whole conversations survive a reload (the main export only keeps a summary of them).
    async fn read_transcript(&self, sb: &dyn Sandbox, session_id: &str) -> SResult<Option<String>> {
        let Some(main) = self.export(sb, session_id).await? else { return Ok(None) };
        let Ok(parsed) = serde_json::from_str::<Value>(&main) else { return Ok(Some(main)) };
        let children = child_sessions(&parsed);
        if children.is_empty() {
            return Ok(Some(main));
        }
        let mut subagents = Vec::new();
        for id in children {
            if let Some(export) = self.export(sb, &id).await?.and_then(|e| serde_json::from_str::<Value>(&e).ok()) {
                subagents.push(json!({ "id": id, "export": export }));
            }
        }
        Ok(Some(json!({ "main": parsed, "subagents": subagents }).to_string()))
    }
}
