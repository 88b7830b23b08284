//! A session's sandbox life: lazy activation with the reference's status messages, turns (one
//! at a time), the workspace watcher, and the monitor that syncs, checks health and enforces
//! the idle timeout.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::task::JoinHandle;

use super::agent_session::AgentSession;
use super::state::{RuntimeState, SandboxState, SandboxStatus};
use crate::agent::architecture::SessionSetup;
use crate::agent::blocks::Block;
use crate::agent::stream::{AgentEvent, MAIN};
use crate::error::{Error, Result};
use crate::events::DomainEvent;
use crate::persistence::WorkspaceFile;
use crate::sandbox::{lines, FileEventKind, Sandbox, SandboxSpec};
use crate::time::{now_iso, now_ms};

/// A running sandbox and the tasks that serve it; dropping it stops the tasks.
pub struct Live {
    pub sandbox: Arc<dyn Sandbox>,
    watcher: JoinHandle<()>,
    monitor: JoinHandle<()>,
}

impl Live {
    /// Stop reacting to workspace changes. Done before a sandbox is terminated: tearing it down
    /// deletes its files, and those deletions must not reach storage as the user's.
    fn stop_watching(&self) {
        self.watcher.abort();
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        self.watcher.abort();
        self.monitor.abort();
    }
}

/// First come, first served: a ticket is taken when the message is sent (synchronously), and
/// the turn waits until every earlier ticket has finished. A lock would not keep that order:
/// callers' tasks may reach it in any order.
#[derive(Default)]
pub struct TurnQueue {
    next: std::sync::atomic::AtomicU64,
    serving: std::sync::atomic::AtomicU64,
    done: tokio::sync::Notify,
}

impl TurnQueue {
    fn ticket(&self) -> u64 {
        self.next.fetch_add(1, Ordering::SeqCst)
    }

    async fn wait(&self, ticket: u64) -> TurnGuard<'_> {
        loop {
            // Registered before the check, so a turn finishing in between still wakes us.
            let notified = self.done.notified();
            if self.serving.load(Ordering::SeqCst) == ticket {
                return TurnGuard(self);
            }
            notified.await;
        }
    }
}

/// Ends a turn (however it ends) and lets the next ticket in.
struct TurnGuard<'a>(&'a TurnQueue);
impl Drop for TurnGuard<'_> {
    fn drop(&mut self) {
        self.0.serving.fetch_add(1, Ordering::SeqCst);
        self.0.done.notify_waiters();
    }
}

/// Clears the busy flag however a turn ends.
struct Busy<'a>(&'a AgentSession);
impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0.busy.store(false, Ordering::SeqCst);
        self.0.touch();
    }
}

/// Text content for a workspace file, or why it is not sent to persistence.
fn file_content(bytes: Vec<u8>, limit: usize) -> std::result::Result<String, &'static str> {
    if bytes.len() > limit {
        return Err("larger than maxWorkspaceFileBytes");
    }
    String::from_utf8(bytes).map_err(|_| "not UTF-8 text (binary files are not persisted)")
}

fn relative_ok(p: &str) -> bool {
    let path = Path::new(p);
    !p.is_empty() && path.is_relative() && path.components().all(|c| matches!(c, std::path::Component::Normal(_)))
}

impl AgentSession {
    pub(super) fn touch(&self) {
        self.data.lock().unwrap().last_activity = now_ms();
    }

    fn emit(&self, e: DomainEvent) {
        self.ctx.events.emit(e);
    }

    fn session_event(&self, name: &'static str, mut payload: Value) -> DomainEvent {
        payload["sessionId"] = json!(self.session_id);
        DomainEvent { name, session_id: Some(self.session_id.clone()), payload }
    }

    /// Set and announce the sandbox state (`None` = no sandbox).
    fn set_sandbox_state(&self, state: Option<(SandboxStatus, Option<&str>, Option<&str>)>) {
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
    /// the turn after every message sent before it (it must be driven to completion).
    pub fn send_message(
        self: &Arc<Self>,
        message: &str,
    ) -> impl std::future::Future<Output = Result<()>> + Send + 'static {
        let ticket = self.turns.ticket();
        let this = self.clone();
        let message = message.to_string();
        async move {
            let _turn = this.turns.wait(ticket).await;
            this.busy.store(true, Ordering::SeqCst);
            let _busy = Busy(&this);
            let result = this.run_turn(&message).await;
            if let Err(e) = &result {
                tracing::warn!(session_id = %this.session_id, error = %e, "turn failed");
                this.emit(DomainEvent::error(&this.session_id, &e.to_string(), Some(e.code())));
            }
            result
        }
    }

    async fn run_turn(self: &Arc<Self>, message: &str) -> Result<()> {
        let arch = self.ctx.architecture(self.architecture)?;
        let sandbox = self.ensure_sandbox().await?;
        self.touch();
        let user =
            Block::UserMessage { id: uuid::Uuid::new_v4().to_string(), timestamp: now_iso(), content: json!(message) };
        self.emit_agent_event(AgentEvent::BlockStart { conversation_id: MAIN.into(), block: user.clone() });
        self.emit_agent_event(AgentEvent::BlockComplete { conversation_id: MAIN.into(), block: user });

        let options = self.session_options();
        let setup = SessionSetup {
            session_id: &self.session_id,
            profile: &self.profile,
            session_options: &options,
            raw_transcript: None,
        };
        let mut proc = arch.start_turn(&*sandbox, &setup, message).await?;
        let mut stdout = lines(std::mem::replace(&mut proc.stdout, Box::pin(tokio::io::empty())));
        let mut stderr = lines(std::mem::replace(&mut proc.stderr, Box::pin(tokio::io::empty())));
        let stderr_tail = tokio::spawn(async move {
            let mut tail = std::collections::VecDeque::new();
            while let Some(l) = stderr.recv().await {
                tracing::debug!(line = %l, "runner stderr");
                if tail.len() == 10 {
                    tail.pop_front();
                }
                tail.push_back(l);
            }
            tail.into_iter().collect::<Vec<_>>().join("\n")
        });
        let mut converter = arch.stream(&self.session_id);
        let mut failure: Option<String> = None;
        while let Some(line) = stdout.recv().await {
            for ev in converter.push_line(&line) {
                match ev {
                    AgentEvent::Error { message } => {
                        failure.get_or_insert(message);
                    }
                    other => self.emit_agent_event(other),
                }
            }
            self.touch();
        }
        let code = proc.exit.await;
        let tail = stderr_tail.await.unwrap_or_default();
        if failure.is_none() && code != 0 {
            let detail = if tail.is_empty() { String::new() } else { format!(": {tail}") };
            failure = Some(if code < 0 {
                format!("the agent runner was killed (signal {}){detail}", -code)
            } else {
                format!("the agent runner exited with code {code}{detail}")
            });
        }
        // The transcript is the source of truth: refresh it after every turn, failed ones too.
        if let Err(e) = self.refresh_transcript(&*sandbox).await {
            tracing::warn!(session_id = %self.session_id, error = %e, "could not read the transcript after the turn");
        }
        match failure {
            Some(m) => Err(Error::AgentRun(m)),
            None => Ok(()),
        }
    }

    fn emit_agent_event(&self, ev: AgentEvent) {
        let e = match ev {
            AgentEvent::BlockStart { conversation_id, block } => {
                self.session_event("session:block:start", json!({ "conversationId": conversation_id, "block": block }))
            }
            AgentEvent::TextDelta { conversation_id, block_id, delta } => self.session_event(
                "session:block:delta",
                json!({ "conversationId": conversation_id, "blockId": block_id, "delta": delta }),
            ),
            AgentEvent::BlockUpdate { conversation_id, block_id, updates } => self.session_event(
                "session:block:update",
                json!({ "conversationId": conversation_id, "blockId": block_id, "updates": updates }),
            ),
            AgentEvent::BlockComplete { conversation_id, block } => self.session_event(
                "session:block:complete",
                json!({ "conversationId": conversation_id, "blockId": block.id(), "block": block }),
            ),
            AgentEvent::MetadataUpdate { conversation_id, metadata } => self.session_event(
                "session:metadata:update",
                json!({ "conversationId": conversation_id, "metadata": metadata }),
            ),
            AgentEvent::SubagentDiscovered { subagent_id } => self.session_event(
                "session:subagent:discovered",
                json!({ "subagent": { "id": subagent_id, "blocks": [] } }),
            ),
            AgentEvent::SubagentCompleted { subagent_id, failed } => self.session_event(
                "session:subagent:completed",
                json!({ "subagentId": subagent_id, "status": if failed { "failed" } else { "completed" } }),
            ),
            AgentEvent::Error { message } => DomainEvent::error(&self.session_id, &message, None),
        };
        self.emit(e);
    }

    /// Read the transcript back from the sandbox; if it changed, re-parse, persist (with
    /// retries) and announce it.
    async fn refresh_transcript(&self, sandbox: &dyn Sandbox) -> Result<()> {
        let arch = self.ctx.architecture(self.architecture)?;
        let Some(raw) = arch.read_transcript(sandbox, &self.session_id).await? else { return Ok(()) };
        if self.data.lock().unwrap().raw_transcript.as_deref() == Some(raw.as_str()) {
            return Ok(());
        }
        let architecture = self.architecture;
        let (raw, parsed) = tokio::task::spawn_blocking(move || {
            let parsed = architecture.parse_transcript(&raw);
            (raw, parsed)
        })
        .await
        .expect("transcript parser panicked");
        {
            let mut d = self.data.lock().unwrap();
            d.raw_transcript = Some(raw.clone());
            d.set_conversation(parsed.blocks, parsed.subagents);
        }
        let p = &self.ctx.persistence;
        self.ctx.retry.run(|| p.save_transcript(&self.session_id, &raw)).await?;
        self.emit(DomainEvent::transcript_changed(&self.session_id, &raw));
        Ok(())
    }

    /// The running sandbox, created on first use (spec §4.4); a dead one is replaced.
    async fn ensure_sandbox(self: &Arc<Self>) -> Result<Arc<dyn Sandbox>> {
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

    fn ignored(&self, path: &str) -> bool {
        match self.ctx.architecture(self.architecture) {
            Ok(a) => a.ignored_paths().iter().any(|p| path.starts_with(p)),
            Err(_) => false,
        }
    }

    /// One workspace change: update memory, announce it, persist it.
    async fn on_file_event(&self, sandbox: &dyn Sandbox, kind: FileEventKind, path: String) {
        if self.ignored(&path) {
            return;
        }
        let p = &self.ctx.persistence;
        if kind == FileEventKind::Deleted {
            let existed = {
                let mut d = self.data.lock().unwrap();
                let before = d.workspace_files.len();
                d.workspace_files.retain(|f| f.path != path);
                before != d.workspace_files.len()
            };
            if existed {
                self.emit(self.session_event("session:file:deleted", json!({ "path": path })));
                if let Err(e) = self.ctx.retry.run(|| p.delete_session_file(&self.session_id, &path)).await {
                    tracing::error!(session_id = %self.session_id, %path, error = %e, "could not delete workspace file in persistence");
                }
            }
            return;
        }
        let full = sandbox.paths().workspace.join(&path);
        let bytes = match sandbox.read_file(&full).await {
            Ok(Some(b)) => b,
            _ => return, // gone again already; its delete event follows
        };
        let content = match file_content(bytes, self.ctx.options.max_workspace_file_bytes) {
            Ok(c) => c,
            Err(why) => {
                tracing::warn!(session_id = %self.session_id, %path, why, "workspace file not persisted");
                return;
            }
        };
        let file = WorkspaceFile { path: path.clone(), content: Some(content) };
        let name = {
            let mut d = self.data.lock().unwrap();
            match d.workspace_files.iter_mut().find(|f| f.path == path) {
                Some(existing) if existing.content == file.content => return,
                Some(existing) => {
                    *existing = file.clone();
                    "session:file:modified"
                }
                None => {
                    d.workspace_files.push(file.clone());
                    "session:file:created"
                }
            }
        };
        self.emit(self.session_event(name, json!({ "file": file })));
        if let Err(e) = self.ctx.retry.run(|| p.save_workspace_file(&self.session_id, &file)).await {
            tracing::error!(session_id = %self.session_id, %path, error = %e, "could not save workspace file; the next sync retries it");
        }
    }

    /// Pull transcript and files from the sandbox (if any), then persist everything (§4.5).
    pub async fn sync_to_storage(&self) -> Result<()> {
        let sandbox = self.live.lock().await.as_ref().map(|l| l.sandbox.clone());
        if let Some(sb) = sandbox {
            self.pull_from(&*sb).await;
        }
        self.persist_state().await
    }

    /// Refresh memory from the sandbox: transcript, and every readable workspace file.
    async fn pull_from(&self, sb: &dyn Sandbox) {
        if let Err(e) = self.refresh_transcript(sb).await {
            tracing::warn!(session_id = %self.session_id, error = %e, "sync: transcript not read");
        }
        let ws = sb.paths().workspace.clone();
        let Ok(paths) = sb.list_files(&ws).await else { return };
        let limit = self.ctx.options.max_workspace_file_bytes;
        let mut files = Vec::new();
        for path in paths.into_iter().filter(|p| !self.ignored(p)) {
            match sb.read_file(&ws.join(&path)).await {
                Ok(Some(b)) => match file_content(b, limit) {
                    Ok(c) => files.push(WorkspaceFile { path, content: Some(c) }),
                    Err(why) => tracing::debug!(%path, why, "sync: workspace file skipped"),
                },
                _ => tracing::debug!(%path, "sync: workspace file unreadable, skipped"),
            }
        }
        self.data.lock().unwrap().workspace_files = files;
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
    async fn on_sandbox_dead(&self, sandbox: &Arc<dyn Sandbox>, code: i32) {
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

/// How long file events settle before they are handled: editors and agents write a temp file
/// and rename it over the target, which should read as one change of the target.
const SETTLE: Duration = Duration::from_millis(60);

async fn watch_workspace(
    session: Weak<AgentSession>,
    sandbox: Arc<dyn Sandbox>,
    mut events: tokio::sync::mpsc::Receiver<crate::sandbox::FileEvent>,
) {
    while let Some(first) = events.recv().await {
        // Coalesce a burst: the last kind per path wins, in first-seen order.
        let mut batch: Vec<(String, FileEventKind)> = vec![(first.path, first.kind)];
        let deadline = tokio::time::Instant::now() + SETTLE;
        while let Ok(Some(ev)) = tokio::time::timeout_at(deadline, events.recv()).await {
            match batch.iter_mut().find(|(p, _)| *p == ev.path) {
                Some(entry) => entry.1 = ev.kind,
                None => batch.push((ev.path, ev.kind)),
            }
        }
        let Some(s) = session.upgrade() else { return };
        for (path, kind) in batch {
            s.on_file_event(&*sandbox, kind, path).await;
        }
    }
}

fn ticker(period: Duration) -> tokio::time::Interval {
    let mut i = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    i
}

/// Health checks, periodic syncs and the idle timeout for one sandbox.
async fn monitor(session: Weak<AgentSession>, sandbox: Arc<dyn Sandbox>) {
    let opts = match session.upgrade() {
        Some(s) => s.ctx.options.clone(),
        None => return,
    };
    let mut health = ticker(opts.health_interval);
    let mut sync = ticker(opts.sync_interval);
    let mut idle = ticker((opts.idle_timeout / 4).clamp(Duration::from_millis(20), Duration::from_secs(5)));
    loop {
        tokio::select! {
            _ = health.tick() => {
                let Some(s) = session.upgrade() else { return };
                match sandbox.poll().await {
                    Some(code) => return s.on_sandbox_dead(&sandbox, code).await,
                    None => {
                        if let Some(st) = s.data.lock().unwrap().sandbox.as_mut() {
                            st.last_health_check = now_ms();
                        }
                    }
                }
            }
            _ = sync.tick() => {
                let Some(s) = session.upgrade() else { return };
                if !s.busy.load(Ordering::SeqCst) {
                    if let Err(e) = s.sync_to_storage().await {
                        tracing::warn!(session_id = %s.session_id, error = %e, "periodic sync failed");
                    }
                }
            }
            _ = idle.tick() => {
                let Some(s) = session.upgrade() else { return };
                let quiet = now_ms() - s.data.lock().unwrap().last_activity;
                if !s.busy.load(Ordering::SeqCst) && quiet >= opts.idle_timeout.as_millis() as i64 {
                    tracing::info!(session_id = %s.session_id, idle_ms = quiet, "idle timeout: unloading session");
                    if let Some(m) = s.ctx.manager.get().and_then(Weak::upgrade) {
                        let id = s.session_id.clone();
                        // A task of its own: unloading aborts this monitor.
                        tokio::spawn(async move {
                            if let Err(e) = m.unload_session(&id).await {
                                tracing::error!(session_id = %id, error = %e, "idle unload failed");
                            }
                        });
                    }
                    return;
                }
            }
        }
    }
}
