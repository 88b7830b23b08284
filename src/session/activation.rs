//! Sandbox activation and teardown: lazy creation with the reference's status messages, the
//! tasks that serve a live sandbox, and what happens when it dies or the session unloads.

use crate::sync::Locked as _;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use serde_json::Value;
use tokio::task::JoinHandle;

use super::agent_session::{AgentSession, SandboxSlot};
use super::ledger::SandboxRef;
use super::monitor::monitor;
use super::state::{RuntimeState, SandboxState, SandboxStatus};
use super::workspace::{relative_ok, watch_workspace};
use crate::agent::architecture::SessionSetup;
use crate::error::{Error, Result};
use crate::events::DomainEvent;
use crate::sandbox::{Sandbox, SandboxSpec};
use crate::time::now_ms;

/// A running sandbox and the tasks that serve it; dropping it stops the tasks.
pub struct Live {
    pub sandbox: Arc<dyn Sandbox>,
    _slot: SandboxSlot,
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
            let mut d = self.data.locked();
            d.sandbox = state.map(|(status, message, id)| SandboxState {
                sandbox_id: id.map(str::to_string),
                status,
                status_message: message.map(str::to_string),
                restart_count: self.restarts.load(Ordering::SeqCst),
                last_health_check: now_ms(),
            });
            RuntimeState::of_sandbox(d.sandbox.clone())
        };
        self.emit(DomainEvent::status(&self.session_id, &runtime));
    }

    fn starting(&self, message: &str, id: Option<&str>) {
        self.set_sandbox_state(Some((SandboxStatus::Starting, Some(message), id)));
    }

    /// The running sandbox, created on first use (spec §4.4); a dead one is replaced.
    pub(super) async fn ensure_sandbox(self: &Arc<Self>) -> Result<Arc<dyn Sandbox>> {
        let mut live = self.live.lock().await;
        // Checked under the lock unload holds while it stores and stops the sandbox, so no
        // sandbox is created for a session on its way out.
        if self.is_closing() {
            return Err(Error::SessionClosing(self.session_id.clone()));
        }
        if let Some(l) = live.as_ref() {
            if l.sandbox.poll().await.is_none() {
                return Ok(l.sandbox.clone());
            }
            *live = None;
            self.restarts.fetch_add(1, Ordering::SeqCst);
        }
        let max = self.ctx.options.max_active_sandboxes;
        let Some(slot) = SandboxSlot::try_take(&self.ctx.active_sandboxes, max) else {
            return Err(Error::Capacity(format!("maxActiveSandboxes ({max}) reached: no sandbox can be started now")));
        };
        self.starting("Preparing...", None);
        let provider = self.ctx.sandboxes.as_ref().map(|p| p.name()).unwrap_or("none");
        let span =
            tracing::info_span!("create_sandbox", sandbox.provider = provider, sandbox.id = tracing::field::Empty);
        match tracing::Instrument::instrument(self.activate(slot), span.clone()).await {
            Ok(l) => {
                let sb = l.sandbox.clone();
                span.record("sandbox.id", sb.id());
                *live = Some(l);
                *self.sandbox_clock.locked() = Some(std::time::Instant::now());
                Ok(sb)
            }
            Err((e, created)) => {
                if let Some(sb) = created {
                    self.stop_sandbox(&sb).await;
                }
                self.set_sandbox_state(None);
                Err(e)
            }
        }
    }

    async fn activate(
        self: &Arc<Self>,
        slot: SandboxSlot,
    ) -> std::result::Result<Live, (Error, Option<Arc<dyn Sandbox>>)> {
        let provider = self.ctx.sandboxes.clone().map_err(|m| (Error::Sandbox(m), None))?;
        let arch = self.ctx.architecture(self.architecture).map_err(|e| (e, None))?;
        self.starting("Creating sandbox container...", None);
        let mut env = self.ctx.options.sandbox_env.0.clone();
        if let Some(Value::Object(vars)) = self.profile.raw.get("environmentVariables") {
            env.extend(vars.iter().filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_string()))));
        }
        self.model_env(&mut env, provider.name() != "local").await.map_err(|e| (e, None))?;
        let started = std::time::Instant::now();
        let sb = provider.create(SandboxSpec { env }).await.map_err(|e| (e.into(), None))?;
        let fail = |e: Error| (e, Some(sb.clone()));
        let id = sb.id().to_string();
        // Recorded with the session, so a runtime that crashes before stopping it can.
        self.update_ledger(|l| l.sandboxes.push(SandboxRef { provider: provider.name().into(), id: id.clone() }));
        self.starting("Setting up session files...", Some(&id));
        let (raw, files, options) = {
            let d = self.data.locked();
            (d.raw_transcript.clone(), d.workspace_files.clone(), d.session_options.clone())
        };
        let setup = SessionSetup {
            session_id: &self.session_id,
            profile: &self.profile,
            session_options: &options,
            raw_transcript: raw.as_deref().filter(|r| !r.is_empty()),
        };
        // The session's workspace files become real files before the agent starts. First, so
        // the profile's files written after them win: a stored or default workspace file must
        // not replace the agent's configuration or hooks (paths the architecture owns are not
        // materialized at all).
        let ws = sb.paths().workspace.clone();
        let materialize: Vec<_> = files
            .iter()
            .filter(|f| relative_ok(&f.path) && !self.ignored(&f.path))
            .filter_map(|f| f.content.as_ref().map(|c| (ws.join(&f.path), c.clone().into_bytes())))
            .collect();
        sb.write_files(&materialize).await.map_err(|e| fail(e.into()))?;
        arch.initialize(&*sb, &setup).await.map_err(|e| fail(e.into()))?;
        self.starting("Initializing file watchers...", Some(&id));
        let events = sb.watch(&ws).await.map_err(|e| fail(e.into()))?;
        let watcher = tokio::spawn(watch_workspace(Arc::downgrade(self), sb.clone(), events));
        let monitor = tokio::spawn(monitor(Arc::downgrade(self), sb.clone()));
        self.set_sandbox_state(Some((SandboxStatus::Ready, Some("Ready"), Some(&id))));
        self.ctx.metrics.sandbox_started(provider.name(), started.elapsed());
        tracing::info!(session_id = %self.session_id, sandbox_id = %id, "sandbox ready");
        Ok(Live { sandbox: sb, _slot: slot, watcher, monitor })
    }

    /// Stop a sandbox and drop it from the ledger.
    async fn stop_sandbox(&self, sandbox: &Arc<dyn Sandbox>) {
        sandbox.terminate().await;
        let id = sandbox.id().to_string();
        let lived = self.sandbox_clock.locked().take().map(|t| t.elapsed().as_secs_f64()).unwrap_or(0.0);
        self.update_ledger(|l| {
            l.sandboxes.retain(|s| s.id != id);
            l.usage.sandbox_seconds += lived;
        });
    }

    /// Store everything, then stop the sandbox. When storing fails the sandbox stays (watched
    /// again) and the error is returned: the caller keeps the session loaded, and the outbox
    /// keeps retrying, because the sandbox may hold the only copy of the last turn.
    pub async fn destroy(self: &Arc<Self>) -> Result<()> {
        let mut live = self.live.lock().await;
        if let Some(l) = live.as_ref() {
            // First: the watcher must not see the teardown; the pull then reconciles whatever
            // it had not delivered yet.
            l.stop_watching();
            self.pull_from(&*l.sandbox).await;
        }
        // Without a sandbox nothing changed that the outbox does not already hold (the
        // reference makes no adapter calls then either).
        let stored =
            if live.is_some() { self.persist_state().await } else { self.outbox.flush().await.map_err(Into::into) };
        if let Err(e) = stored {
            if let Some(l) = live.as_mut() {
                let ws = l.sandbox.paths().workspace.clone();
                match l.sandbox.watch(&ws).await {
                    Ok(events) => {
                        l.watcher = tokio::spawn(watch_workspace(Arc::downgrade(self), l.sandbox.clone(), events))
                    }
                    Err(w) => {
                        tracing::warn!(session_id = %self.session_id, error = %w, "could not resume watching the workspace")
                    }
                }
            }
            return Err(e);
        }
        if let Some(l) = live.take() {
            self.stop_sandbox(&l.sandbox).await;
            // The ledger without it; best effort (a stale entry only costs a no-op reap).
            let _ = tokio::time::timeout(std::time::Duration::from_secs(5), self.outbox.flush()).await;
        }
        self.data.locked().sandbox = None;
        Ok(())
    }

    /// Stop this sandbox (a runaway turn) after pulling what it holds; the next turn starts a
    /// new one.
    pub(super) async fn discard_sandbox(self: &Arc<Self>, sandbox: &Arc<dyn Sandbox>) {
        let mut live = self.live.lock().await;
        if !live.as_ref().is_some_and(|l| Arc::ptr_eq(&l.sandbox, sandbox)) {
            return;
        }
        if let Some(l) = live.as_ref() {
            l.stop_watching();
        }
        self.pull_from(&**sandbox).await;
        let gone = live.take();
        drop(live);
        self.stop_sandbox(sandbox).await;
        self.set_sandbox_state(None);
        drop(gone);
    }

    /// Stop the sandbox without storing (shutdown gave up on storage).
    pub(super) async fn abandon(&self) {
        if let Some(l) = self.live.lock().await.take() {
            l.stop_watching();
            self.stop_sandbox(&l.sandbox).await;
        }
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
        self.stop_sandbox(sandbox).await;
        tokio::spawn(async move { drop(gone) });
    }
}
