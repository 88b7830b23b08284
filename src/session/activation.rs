//! Sandbox activation and teardown: lazy creation with the reference's status messages, the
//! tasks that serve a live sandbox, and what happens when it dies or the session unloads.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use serde_json::Value;
use tokio::task::JoinHandle;

use super::agent_session::AgentSession;
use super::state::{RuntimeState, SandboxState, SandboxStatus};
use super::monitor::monitor;
use super::workspace::{relative_ok, watch_workspace};
use crate::agent::architecture::SessionSetup;
use crate::error::{Error, Result};
use crate::events::DomainEvent;
use crate::sandbox::{Sandbox, SandboxSpec};
use crate::time::now_ms;

/// A running sandbox and the tasks that serve it; dropping it stops the tasks.
pub struct Live {
    pub sandbox: Arc<dyn Sandbox>,
    watcher: JoinHandle<()>,
    monitor: JoinHandle<()>,
}

impl Live {
    /// Stop reacting to workspace changes. Done before a sandbox is terminated: tearing it down
    /// deletes its files, and those deletions must not reach storage as the user's.
    pub(super) fn stop_watching(&self) {
        self.watcher.abort();
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        self.watcher.abort();
        self.monitor.abort();
    }
}

impl AgentSession {
    /// Set and announce the sandbox state (`None` = no sandbox).
    pub(super) fn set_sandbox_state(&self, state: Option<(SandboxStatus, Option<&str>, Option<&str>)>) {
        let runtime = {
            let mut d = self.data.lock().unwrap();
            d.sandbox = state.map(|(status, message, id)| SandboxState {
                sandbox_id: id.map(str::to_string),
                status,
                status_message: message.map(str::to_string),
                restart_count: self.restarts.load(Ordering::SeqCst),
                last_health_check: now_ms(),
            });
            RuntimeState { is_loaded: true, sandbox: d.sandbox.clone() }
        };
        self.emit(DomainEvent::status(&self.session_id, &runtime));
    }

    fn starting(&self, message: &str, id: Option<&str>) {
        self.set_sandbox_state(Some((SandboxStatus::Starting, Some(message), id)));
    }

    /// Run one agent turn. Messages sent while a turn runs wait for it (in order).
    /// Run one agent turn. The message's place in line is taken now; the returned future runs
    /// The running sandbox, created on first use (spec §4.4); a dead one is replaced.
    pub(super) async fn ensure_sandbox(self: &Arc<Self>) -> Result<Arc<dyn Sandbox>> {
        let mut live = self.live.lock().await;
        if let Some(l) = live.as_ref() {
            if l.sandbox.poll().await.is_none() {
                return Ok(l.sandbox.clone());
            }
            *live = None;
            self.restarts.fetch_add(1, Ordering::SeqCst);
        }
        self.starting("Preparing...", None);
        match self.activate().await {
            Ok(l) => {
                let sb = l.sandbox.clone();
                *live = Some(l);
                Ok(sb)
            }
            Err((e, created)) => {
                if let Some(sb) = created {
                    sb.terminate().await;
                }
                self.set_sandbox_state(None);
                Err(e)
            }
        }
    }

    async fn activate(self: &Arc<Self>) -> std::result::Result<Live, (Error, Option<Arc<dyn Sandbox>>)> {
        let provider = self.ctx.sandboxes.clone().map_err(|m| (Error::Sandbox(m), None))?;
        let arch = self.ctx.architecture(self.architecture).map_err(|e| (e, None))?;
        self.starting("Creating sandbox container...", None);
        let mut env = self.ctx.options.sandbox_env.0.clone();
        if let Some(Value::Object(vars)) = self.profile.raw.get("environmentVariables") {
            env.extend(vars.iter().filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_string()))));
        }
        let sb = provider.create(SandboxSpec { env }).await.map_err(|e| (e.into(), None))?;
        let fail = |e: Error| (e, Some(sb.clone()));
        let id = sb.id().to_string();
        self.starting("Setting up session files...", Some(&id));
        let (raw, files, options) = {
            let d = self.data.lock().unwrap();
            (d.raw_transcript.clone(), d.workspace_files.clone(), d.session_options.clone())
        };
        let setup = SessionSetup {
            session_id: &self.session_id,
            profile: &self.profile,
            session_options: &options,
            raw_transcript: raw.as_deref().filter(|r| !r.is_empty()),
        };
        arch.initialize(&*sb, &setup).await.map_err(|e| fail(e.into()))?;
        // The session's workspace files become real files before the agent starts.
        let ws = sb.paths().workspace.clone();
        let materialize: Vec<_> = files
            .iter()
            .filter(|f| relative_ok(&f.path))
            .filter_map(|f| f.content.as_ref().map(|c| (ws.join(&f.path), c.clone().into_bytes())))
            .collect();
        sb.write_files(&materialize).await.map_err(|e| fail(e.into()))?;
        self.starting("Initializing file watchers...", Some(&id));
        let events = sb.watch(&ws).await.map_err(|e| fail(e.into()))?;
        let watcher = tokio::spawn(watch_workspace(Arc::downgrade(self), sb.clone(), events));
        let monitor = tokio::spawn(monitor(Arc::downgrade(self), sb.clone()));
        self.set_sandbox_state(Some((SandboxStatus::Ready, Some("Ready"), Some(&id))));
        tracing::info!(session_id = %self.session_id, sandbox_id = %id, "sandbox ready");
        Ok(Live { sandbox: sb, watcher, monitor })
    }

    /// Stop the sandbox: pull and persist its state first, then terminate it whatever happened.
    pub async fn destroy(&self) -> Result<()> {
        let live = self.live.lock().await.take();
        let Some(live) = live else { return Ok(()) };
        self.pull_from(&*live.sandbox).await;
        let result = self.persist_state().await;
        live.stop_watching();
        live.sandbox.terminate().await;
        drop(live);
        self.data.lock().unwrap().sandbox = None;
        result
    }

    /// The sandbox died under us: say so; the next message starts a new one.
    pub(super) async fn on_sandbox_dead(&self, sandbox: &Arc<dyn Sandbox>, code: i32) {
        let mut live = self.live.lock().await;
        let ours = live.as_ref().is_some_and(|l| Arc::ptr_eq(&l.sandbox, sandbox));
        if !ours {
            return;
        }
        tracing::warn!(session_id = %self.session_id, sandbox_id = sandbox.id(), code, "sandbox stopped");
        let id = sandbox.id().to_string();
        let message = format!("Sandbox stopped (exit code {code})");
        self.set_sandbox_state(Some((SandboxStatus::Terminated, Some(&message), Some(&id))));
        // Dropping Live aborts this very task last; take it out first and let it go after.
        let gone = live.take();
        if let Some(g) = &gone {
            g.stop_watching();
        }
        self.restarts.fetch_add(1, Ordering::SeqCst);
        drop(live);
        sandbox.terminate().await;
        tokio::spawn(async move { drop(gone) });
    }
}
