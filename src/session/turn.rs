//! Turns: one at a time in sending order, each running the architecture's runner in the
//! sandbox and turning its output into domain events; the transcript is read back after.

use crate::sync::Locked as _;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use serde_json::json;

use super::agent_session::AgentSession;
use super::ledger::PendingMessage;
use super::outbox::Write;
use crate::agent::architecture::SessionSetup;
use crate::agent::blocks::Block;
use crate::agent::stream::{AgentEvent, MAIN};
use crate::error::{Error, Result};
use crate::events::DomainEvent;
use crate::sandbox::{output_lines, OutputLine, Sandbox, MAX_LINE_BYTES};
use crate::time::{now_iso, now_ms};

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
    /// Turns taken and not finished (the running one included).
    pub(super) fn len(&self) -> u64 {
        self.next.load(Ordering::SeqCst) - self.serving.load(Ordering::SeqCst)
    }

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

/// An accepted message: its id in the ledger, and its turn (drive it to completion).
pub struct Turn {
    pub message_id: String,
    pub run: futures::future::BoxFuture<'static, Result<()>>,
}

/// After the runner exits, how long its output may pause before the rest is given up.
const EXIT_DRAIN_QUIET: std::time::Duration = std::time::Duration::from_millis(500);

impl AgentSession {
    /// Accept a message: it is recorded in the session's ledger (stored through the adapter,
    /// see [`Turn::message_id`] and [`AgentSession::confirm_stored`]) and takes its place in
    /// line now; the returned turn runs after every message sent before it and must be driven
    /// to completion. Refused at once (nothing queued) when `maxQueuedMessages` are already
    /// waiting, or when it would need a sandbox and `maxActiveSandboxes` are running.
    pub fn send_message(self: &Arc<Self>, message: &str) -> Result<Turn> {
        let o = &self.ctx.options;
        let waiting = self.turns.len().saturating_sub(u64::from(self.busy.load(Ordering::SeqCst)));
        if waiting >= o.max_queued_messages as u64 {
            return Err(Error::QueueFull(format!(
                "maxQueuedMessages ({}) reached for session {}: wait for the running turns",
                o.max_queued_messages, self.session_id
            )));
        }
        if !self.has_sandbox() && self.ctx.active_sandboxes.load(Ordering::SeqCst) >= o.max_active_sandboxes {
            return Err(Error::Capacity(format!(
                "maxActiveSandboxes ({}) reached: no sandbox can be started now",
                o.max_active_sandboxes
            )));
        }
        let entry = PendingMessage {
            id: uuid::Uuid::new_v4().to_string(),
            content: message.to_string(),
            accepted_at: now_ms(),
            started: false,
        };
        let message_id = entry.id.clone();
        self.update_ledger(|l| l.pending.push(entry));
        Ok(Turn { message_id: message_id.clone(), run: self.enqueue(message_id) })
    }

    /// Wait until the accepted message `id` is stored; if it cannot be, withdraw it (its turn
    /// will not run) and say why.
    pub async fn confirm_stored(&self, id: &str) -> Result<()> {
        if let Err(e) = self.outbox.flush().await {
            self.update_ledger(|l| l.pending.retain(|p| p.id != id));
            return Err(e.into());
        }
        Ok(())
    }

    /// The turn of ledger entry `id`, in line from now.
    pub(super) fn enqueue(self: &Arc<Self>, id: String) -> futures::future::BoxFuture<'static, Result<()>> {
        let ticket = self.turns.ticket();
        let this = self.clone();
        Box::pin(async move {
            let _turn = this.turns.wait(ticket).await;
            if this.is_closing() {
                // Reported when the unload cancelled it, or kept for after a restart.
                return Err(Error::SessionClosing(this.session_id.clone()));
            }
            let message = {
                let mut d = this.data.locked();
                let Some(entry) = d.ledger.pending.iter_mut().find(|p| p.id == id) else {
                    return Ok(()); // withdrawn: it could not be stored, the sender was told
                };
                entry.started = true;
                entry.content.clone()
            };
            this.store_ledger();
            this.busy.store(true, Ordering::SeqCst);
            let _busy = Busy(&this);
            let result = this.run_turn(&message).await;
            this.update_ledger(|l| l.pending.retain(|p| p.id != id));
            if let Err(e) = &result {
                tracing::warn!(session_id = %this.session_id, error = %e, "turn failed");
                this.emit(DomainEvent::error(&this.session_id, &e.to_string(), Some(e.code())));
            }
            result
        })
    }

    /// After a load: stop sandboxes an earlier run left, report messages whose turn was cut
    /// short by a restart, and run the ones that never started, in their order.
    pub(super) fn resume(self: &Arc<Self>) {
        let (sandboxes, interrupted, waiting) = {
            let d = self.data.locked();
            let l = &d.ledger;
            let (started, waiting): (Vec<_>, Vec<_>) = l.pending.iter().cloned().partition(|p| p.started);
            (l.sandboxes.clone(), started, waiting)
        };
        if sandboxes.is_empty() && interrupted.is_empty() && waiting.is_empty() {
            return;
        }
        for m in &interrupted {
            let text = format!("Message {} was interrupted by a runtime restart and was not run again", m.id);
            self.emit(DomainEvent::error(&self.session_id, &text, Some("MESSAGE_INTERRUPTED")));
        }
        self.update_ledger(|l| {
            l.sandboxes.clear();
            l.pending.retain(|p| !p.started);
        });
        if let Ok(provider) = self.ctx.sandboxes.clone() {
            tokio::spawn(async move {
                for s in sandboxes.iter().filter(|s| s.provider == provider.name()) {
                    provider.reap(&s.id).await;
                }
            });
        }
        for m in waiting {
            tracing::info!(session_id = %self.session_id, message_id = %m.id, "running a message accepted before a restart");
            tokio::spawn(self.enqueue(m.id));
        }
    }

    /// The session is being unloaded (not shut down): messages not yet answered will not be,
    /// and each sender is told.
    pub(super) fn cancel_pending(&self) {
        let cancelled = std::mem::take(&mut self.data.locked().ledger.pending);
        for m in cancelled.iter().filter(|m| !m.started) {
            let text = format!("Message {} was not run: the session was unloaded", m.id);
            self.emit(DomainEvent::error(&self.session_id, &text, Some("MESSAGE_CANCELLED")));
        }
        if !cancelled.is_empty() {
            self.store_ledger();
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
        let mut stdout =
            output_lines(std::mem::replace(&mut proc.stdout, Box::pin(tokio::io::empty())), MAX_LINE_BYTES);
        let mut stderr =
            output_lines(std::mem::replace(&mut proc.stderr, Box::pin(tokio::io::empty())), MAX_LINE_BYTES);
        // A runner's line is held whole in memory: one past the limit fails the turn.
        let too_long = || format!("runner output line exceeds {} MiB", MAX_LINE_BYTES >> 20);
        // The last lines of stderr, for the error message (a few, each cut short). Kept outside
        // the reading task so a grandchild holding stderr open cannot keep the turn waiting.
        let tail = Arc::new(std::sync::Mutex::new(std::collections::VecDeque::new()));
        let stderr_overflow = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut stderr_task = tokio::spawn({
            let (tail, overflow) = (tail.clone(), stderr_overflow.clone());
            async move {
                while let Some(item) = stderr.recv().await {
                    let OutputLine::Line(l) = item else {
                        overflow.store(true, Ordering::SeqCst);
                        return;
                    };
                    tracing::debug!(line = %l, "runner stderr");
                    let mut t = tail.locked();
                    if t.len() == 10 {
                        t.pop_front();
                    }
                    t.push_back(l.chars().take(2000).collect::<String>());
                }
            }
        });
        let mut converter = arch.stream(&self.session_id);
        let mut failure: Option<String> = None;
        // Handles one item of stdout; false when reading must stop.
        let mut handle = |item: OutputLine| -> bool {
            let OutputLine::Line(line) = item else {
                failure.get_or_insert_with(too_long);
                return false;
            };
            for ev in converter.push_line(&line) {
                match ev {
                    AgentEvent::Error { message } => {
                        failure.get_or_insert(message);
                    }
                    other => self.emit_agent_event(other),
                }
            }
            self.touch();
            true
        };
        let timeout = self.ctx.options.turn_timeout;
        let deadline = tokio::time::Instant::now() + timeout;
        let mut exit = proc.exit;
        let mut code = None;
        loop {
            tokio::select! {
                item = stdout.recv() => {
                    if !item.is_some_and(&mut handle) {
                        break;
                    }
                }
                c = &mut exit => {
                    code = Some(c);
                    // What the runner wrote before it exited is already in the pipe; read it
                    // while it keeps coming, but a grandchild that inherited stdout and lives on
                    // must not keep the turn open.
                    while let Ok(Some(i)) = tokio::time::timeout(EXIT_DRAIN_QUIET, stdout.recv()).await {
                        if !handle(i) {
                            break;
                        }
                    }
                    break;
                }
                _ = tokio::time::sleep_until(deadline) => break,
            }
        }
        drop(stdout);
        let code = match code {
            Some(c) => Some(c),
            None => tokio::time::timeout_at(deadline, exit).await.ok(),
        };
        let timed_out = code.is_none();
        // Let the stderr reader reach the end (it normally does with the runner), then stop it.
        if tokio::time::timeout(EXIT_DRAIN_QUIET, &mut stderr_task).await.is_err() {
            stderr_task.abort();
        }
        if stderr_overflow.load(Ordering::SeqCst) {
            failure.get_or_insert_with(too_long);
        }
        let tail = tail.locked().iter().cloned().collect::<Vec<_>>().join("\n");
        let detail = if tail.is_empty() { String::new() } else { format!(": {tail}") };
        match code {
            None => {
                failure = Some(format!(
                    "the turn ran longer than turnTimeoutMs ({} ms) and was stopped",
                    timeout.as_millis()
                ));
            }
            Some(code) if failure.is_none() && code != 0 => {
                failure = Some(if code < 0 {
                    format!("the agent runner was killed (signal {}){detail}", -code)
                } else {
                    format!("the agent runner exited with code {code}{detail}")
                });
            }
            Some(_) => {}
        }
        // The transcript is the source of truth: refresh it after every turn, failed ones too.
        if let Err(e) = self.refresh_transcript(&*sandbox).await {
            tracing::warn!(session_id = %self.session_id, error = %e, "could not read the transcript after the turn");
        }
        if timed_out {
            // Stopping the runner means stopping its sandbox (what it holds is pulled first);
            // the next message starts a new one and resumes from the stored transcript.
            self.discard_sandbox(&sandbox).await;
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
    pub(super) async fn refresh_transcript(&self, sandbox: &dyn Sandbox) -> Result<()> {
        let arch = self.ctx.architecture(self.architecture)?;
        let Some(raw) = arch.read_transcript(sandbox, &self.session_id).await? else { return Ok(()) };
        if self.data.locked().raw_transcript.as_deref() == Some(raw.as_str()) {
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
            let mut d = self.data.locked();
            d.raw_transcript = Some(raw.clone());
            d.set_conversation(parsed.blocks, parsed.subagents);
        }
        self.outbox.push([Write::Transcript(raw.clone())]);
        let stored = self.outbox.flush().await;
        self.emit(DomainEvent::transcript_changed(&self.session_id, &raw));
        stored?;
        Ok(())
    }
}
