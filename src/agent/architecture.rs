//! The agent-architecture interface: what differs between Claude Agent SDK and OpenCode when a
//! session runs in a sandbox.

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use serde_json::{Map, Value};

use super::stream::AgentEvent;
use crate::persistence::AgentProfile;
use crate::sandbox::{FileRead, Process, SResult, Sandbox, SandboxError};

/// What a session hands its architecture.
pub struct SessionSetup<'a> {
    pub session_id: &'a str,
    pub profile: &'a AgentProfile,
    pub session_options: &'a Map<String, Value>,
    /// The stored raw transcript, restored into the sandbox so the conversation resumes.
    pub raw_transcript: Option<&'a str>,
}

/// Where the host keeps things the sandbox needs (runner scripts, agent SDKs).
#[derive(Debug, Clone, Default)]
pub struct RunnerAssets {
    /// The package's `sandbox/` folder (runner scripts), copied into the sandbox's app dir.
    pub runner_dir: Option<PathBuf>,
    /// The Node binary that runs the runner.
    pub node: String,
    /// Entry file of `@anthropic-ai/claude-agent-sdk` on this host, if installed here.
    pub claude_sdk_entry: Option<String>,
    /// This host's node_modules folder with OpenCode and its SDK, if installed here.
    pub open_code_modules: Option<String>,
    /// Host folders a profile's `bundledMCPs[].localProjectPath` may name (config
    /// `bundledMcpRoots`); none by default, so a profile cannot copy host files into a sandbox.
    pub bundled_mcp_roots: Vec<PathBuf>,
}

/// Converts one run's stdout lines to events.
pub trait StreamConverter: Send {
    fn push_line(&mut self, line: &str) -> Vec<AgentEvent>;
}

#[async_trait]
pub trait AgentArchitecture: Send + Sync + 'static {
    /// Write the profile's files (and the restored transcript) into the sandbox.
    async fn initialize(&self, sandbox: &dyn Sandbox, setup: &SessionSetup<'_>) -> SResult<()>;
    /// Start the session's long-lived runner (docs/RUNNER.md); the host sends it
    /// [`Self::runner_start`] first.
    async fn start_runner(&self, sandbox: &dyn Sandbox, setup: &SessionSetup<'_>) -> SResult<Process>;
    /// The runner's `start` line for this session and its current options (without `ask`, which
    /// the host adds). A runner started with a different one is replaced before the next turn.
    fn runner_start(&self, sandbox: &dyn Sandbox, setup: &SessionSetup<'_>) -> Value;
    /// Whether the runner can deliver a message into a running turn (`steer`).
    fn steers(&self) -> bool {
        false
    }
    /// A converter for one turn's output of session `session_id`.
    fn stream(&self, session_id: &str) -> Box<dyn StreamConverter>;
    /// The session's transcript as stored (`rawTranscript`), read back from the sandbox.
    async fn read_transcript(&self, sandbox: &dyn Sandbox, session_id: &str) -> SResult<Option<String>>;
    /// Workspace paths (relative, `/`-separated prefixes) that are the agent's bookkeeping, not user files.
    fn ignored_paths(&self) -> &'static [&'static str] {
        &[]
    }
}

/// Files never copied from a bundled MCP folder (installed, not uploaded).
const MCP_SKIP: &[&str] = &["node_modules", "package-lock.json", "yarn.lock", "pnpm-lock.yaml"];

/// Every regular file under `dir` with its path relative to `dir`; links are not followed.
fn read_tree(dir: &Path, skip: &[&str]) -> Vec<(PathBuf, Vec<u8>)> {
    use crate::sandbox::{beneath, FileRead, MAX_INTERNAL_FILE_BYTES};
    let files = beneath::list_files(dir, Path::new(""), skip).unwrap_or_default();
    files
        .into_iter()
        .filter_map(|rel| match beneath::read_regular(dir, Path::new(&rel), MAX_INTERNAL_FILE_BYTES) {
            Ok(FileRead::Content(b)) => Some((PathBuf::from(rel), b)),
            _ => None,
        })
        .collect()
}

impl RunnerAssets {
    /// The package's runner scripts, placed under the sandbox's app folder.
    pub fn runner_files(&self, app: &Path) -> Vec<(PathBuf, Vec<u8>)> {
        let Some(dir) = &self.runner_dir else { return vec![] };
        read_tree(dir, &[]).into_iter().map(|(r, b)| (app.join(r), b)).collect()
    }

    /// Put runner script `name` back if the agent deleted or changed it (its app folder is
    /// writable where bubblewrap cannot bind it read-only: plain local sandboxes, Modal), so a
    /// turn always runs the package's runner. Call before every run of it.
    pub async fn restore_runner(&self, sb: &dyn Sandbox, name: &str) -> SResult<()> {
        let Some(dir) = &self.runner_dir else { return Ok(()) };
        let Ok(expected) = tokio::fs::read(dir.join(name)).await else { return Ok(()) };
        let path = sb.paths().app.join(name);
        match sb.read_regular(&path, expected.len() as u64).await? {
            FileRead::Content(b) if b == expected => Ok(()),
            _ => {
                tracing::warn!(sandbox_id = sb.id(), runner = name, "runner script was removed or changed; restored");
                sb.write_file(&path, &expected).await
            }
        }
    }

    /// A bundled MCP server's folder (sources, not installed packages) as files under
    /// `mcps_dir`; refused unless the folder is inside one of [`Self::bundled_mcp_roots`].
    pub fn bundled_mcp_files(&self, name: &str, src: &Path, mcps_dir: &Path) -> SResult<Vec<(PathBuf, Vec<u8>)>> {
        let refuse = |why: String| {
            SandboxError::Refused(format!(
                "bundledMCPs {name:?}: localProjectPath {:?} {why}",
                src.display().to_string()
            ))
        };
        // Real paths on both sides: `..` and links cannot lead out of a root.
        let real = std::fs::canonicalize(src).map_err(|e| refuse(format!("cannot be read ({e})")))?;
        let allowed =
            self.bundled_mcp_roots.iter().filter_map(|r| std::fs::canonicalize(r).ok()).any(|r| real.starts_with(r));
        if !allowed {
            return Err(refuse(if self.bundled_mcp_roots.is_empty() {
                "is not copied: no bundledMcpRoots are configured (list the folders that hold your MCP servers in the runtime config's bundledMcpRoots)".into()
            } else {
                "is outside every folder in bundledMcpRoots".into()
            }));
        }
        let dest = mcps_dir.join(crate::agent::profile::mcp_dir_name(name));
        Ok(read_tree(&real, MCP_SKIP).into_iter().map(|(r, b)| (dest.join(r), b)).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::claude::ClaudeArchitecture;
    use crate::agent::opencode::OpenCodeArchitecture;
    use crate::sandbox::local::LocalProvider;
    use crate::sandbox::{ExecOptions, SandboxProvider, SandboxSpec};
    use tokio::io::AsyncReadExt;

    #[test]
    fn bundled_mcp_folders_come_only_from_configured_roots_without_links() {
        let base = std::env::temp_dir().join(format!("arn-mcp-{}", uuid::Uuid::new_v4().simple()));
        let (roots, outside) = (base.join("mcps"), base.join("elsewhere"));
        std::fs::create_dir_all(roots.join("echo/src")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(roots.join("echo/src/index.ts"), "serve()").unwrap();
        std::fs::write(outside.join("secret.env"), "KEY=1").unwrap();
        std::os::unix::fs::symlink(&outside, roots.join("echo/linked")).unwrap();
        std::os::unix::fs::symlink(outside.join("secret.env"), roots.join("echo/secret.env")).unwrap();
        std::os::unix::fs::symlink(&outside, roots.join("escape")).unwrap();
        let mcps = Path::new("/sb/mcps");

        let none = RunnerAssets::default();
        let e = none.bundled_mcp_files("Echo", &roots.join("echo"), mcps).unwrap_err().to_string();
        assert!(e.contains("localProjectPath") && e.contains("bundledMcpRoots"), "{e}");

        let assets = RunnerAssets { bundled_mcp_roots: vec![roots.clone()], ..Default::default() };
        let files = assets.bundled_mcp_files("Echo", &roots.join("echo"), mcps).unwrap();
        let names: Vec<_> = files.iter().map(|(p, _)| p.display().to_string()).collect();
        assert_eq!(names, ["/sb/mcps/echo/src/index.ts"], "links inside the folder are not followed");
        for outside_root in [outside.clone(), roots.join("escape"), roots.join("echo/../../elsewhere")] {
            let e = assets.bundled_mcp_files("Echo", &outside_root, mcps).unwrap_err().to_string();
            assert!(e.contains("outside every folder in bundledMcpRoots"), "{outside_root:?}: {e}");
        }
        let _ = std::fs::remove_dir_all(base);
    }

    async fn turn(arch: &dyn AgentArchitecture, sb: &dyn Sandbox, setup: &SessionSetup<'_>) -> String {
        let mut p = arch.start_runner(sb, setup).await.unwrap();
        drop(p.stdin.take());
        let mut out = String::new();
        p.stdout.read_to_string(&mut out).await.unwrap();
        p.exit.await;
        out.trim().to_string()
    }

    #[tokio::test]
    async fn a_deleted_or_replaced_runner_is_restored_before_the_next_turn() {
        let base = std::env::temp_dir().join(format!("arn-runner-{}", uuid::Uuid::new_v4().simple()));
        let runners = base.join("runners");
        std::fs::create_dir_all(&runners).unwrap();
        // Shell scripts stand in for the runners, with `sh` as "Node".
        for name in [crate::agent::claude::RUNNER, crate::agent::opencode::RUNNER] {
            std::fs::write(runners.join(name), "cat >/dev/null; echo runner ok\n").unwrap();
        }
        let assets = RunnerAssets { runner_dir: Some(runners), node: "sh".into(), ..Default::default() };
        let archs: [(Box<dyn AgentArchitecture>, &str); 2] = [
            (Box::new(ClaudeArchitecture::new(assets.clone())), crate::agent::claude::RUNNER),
            (Box::new(OpenCodeArchitecture::new(assets)), crate::agent::opencode::RUNNER),
        ];
        let profile: AgentProfile = serde_json::from_value(serde_json::json!({ "id": "p" })).unwrap();
        let options = Map::new();
        let setup =
            SessionSetup { session_id: "s1", profile: &profile, session_options: &options, raw_transcript: None };
        let provider = LocalProvider::plain(base.join("sandboxes")).unwrap();
        for (arch, runner) in &archs {
            let sb = provider.create(SandboxSpec::default()).await.unwrap();
            arch.initialize(&*sb, &setup).await.unwrap();
            assert_eq!(turn(&**arch, &*sb, &setup).await, "runner ok");
            for attack in [format!("rm app/{runner}"), format!("echo 'echo hijacked' > app/{runner}")] {
                let argv = vec!["sh".to_string(), "-c".to_string(), attack.clone()];
                let cwd = Some(sb.paths().app.parent().unwrap().to_path_buf());
                assert_eq!(sb.exec(&argv, ExecOptions { cwd, ..Default::default() }).await.unwrap().exit.await, 0);
                assert_eq!(turn(&**arch, &*sb, &setup).await, "runner ok", "after {attack}");
            }
            sb.terminate().await;
        }
        let _ = std::fs::remove_dir_all(base);
    }
}
