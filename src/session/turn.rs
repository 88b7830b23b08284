//! Turns: one at a time in sending order, each running the architecture's runner in the
//! sandbox and turning its output into domain events; the transcript is read back after.

use crate::sync::Locked as _;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use serde_json::json;

use super::agent_session::AgentSession;
use super::ledger::{MessageMode, PendingMessage};
use super::outbox::Write;
use crate::agent::architecture::{AgentArchitecture, SessionSetup, StreamConverter};
use crate::agent::blocks::Block;
use crate::agent::runner::{Runner, RunnerEvent, RunnerLine};
use crate::agent::stream::{AgentEvent, MAIN};
use crate::agent::turn_end::{StopReason, TurnTracker};
use crate::error::{Error, Result};
use crate::events::DomainEvent;
use crate::sandbox::{OutputLine, Sandbox, MAX_LINE_BYTES};
use crate::time::{now_iso, now_ms};
use tracing::Instrument as _;

/// Turns run one at a time: the first message of the ledger that has not started runs when no
/// turn runs. The order is the ledger's, so a message can be moved ahead (`mode: "interrupt"`)
/// or taken out (DELETE, a steer that reached the running turn) while it waits.
#[derive(Default)]
pub struct TurnQueue {
    changed: tokio::sync::Notify,
}

impl TurnQueue {
    /// Something a waiting turn depends on changed: the ledger, the busy flag, closing.
    pub(super) fn wake(&self) {
        self.changed.notify_waiters();
    }
}

/// Clears the busy flag however a turn ends, and lets the next one in.
struct Busy<'a>(&'a AgentSession);
impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0.busy.store(false, Ordering::SeqCst);
        self.0.touch();
        self.0.turns.wake();
    }
}

/// An accepted message: its id in the ledger, where it stands, and its turn (drive it to
/// completion; it resolves when the message has been answered, or was withdrawn).
pub struct Turn {
    pub message_id: String,
    /// Turns ahead of it (the running one included); 0 when it starts now.
    pub position: usize,
    /// Handed to the running turn (`mode: "steer"`), not queued behind it.
    pub steered: bool,
    pub run: futures::future::BoxFuture<'static, Result<()>>,
}

/// After the runner exits, how long its output may pause before the rest is given up.
const EXIT_DRAIN_QUIET: std::time::Duration = std::time::Duration::from_millis(500);
/// How long a runner that closed its output or was killed has to exit.
const EXIT_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// How one turn ended, as far as the runner told.
struct Ending {
    reason: StopReason,
    error: Option<String>,
    /// The runner is gone (exited, killed) or must go (timed out).
    runner_done: bool,
    timed_out: bool,
}

impl AgentSession {
    /// Messages accepted and not started.
    pub(super) fn queued_count(&self) -> usize {
        self.data.locked().ledger.pending.iter().filter(|p| !p.started).count()
    }

    /// Accept a message: it is recorded in the session's ledger (stored through the adapter,
    /// see [`Turn::message_id`] and [`AgentSession::confirm_stored`]) and takes its place in
    /// line now (`mode` says where: see [`MessageMode`]). Refused at once (nothing queued) when
    /// `maxQueuedMessages` are already waiting, or when it would need a sandbox and
    /// `maxActiveSandboxes` are running.
    pub fn send_message(self: &Arc<Self>, message: &str, mode: MessageMode) -> Result<Turn> {
        self.check_budget()?;
        let o = &self.ctx.options;
        if self.queued_count() >= o.max_queued_messages {
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
            mode,
        };
        let message_id = entry.id.clone();
        let busy = self.is_busy();
        let position = {
            let mut d = self.data.locked();
            let pending = &mut d.ledger.pending;
            if mode == MessageMode::Interrupt {
                // Ahead of every message still waiting.
                let at = pending.iter().position(|p| !p.started).unwrap_or(pending.len());
                pending.insert(at, entry);
            } else {
                pending.push(entry);
            }
            let ahead = pending.iter().filter(|p| !p.started).position(|p| p.id == message_id).unwrap_or(0);
            ahead + usize::from(busy)
        };
        self.store_ledger();
        self.turns.wake();
        let mut steered = false;
        match mode {
            MessageMode::Interrupt if busy => {
                self.interrupt(false);
            }
            MessageMode::Steer if busy && self.ctx.architecture(self.architecture)?.steers() => {
                // Into the running turn; if the turn ends first, the runner says so and the
                // message keeps its place in the queue.
                if let Some(w) = &self.control.locked().writer {
                    steered = w.send(&json!({ "type": "steer", "messageId": message_id, "prompt": message }));
                }
            }
            _ => {}
        }
        self.queue_changed();
        Ok(Turn {
            message_id: message_id.clone(),
            position: if steered { 0 } else { position },
            steered,
            run: self.enqueue(message_id),
        })
    }

    /// Wait until the accepted message `id` is stored; if it cannot be, withdraw it (its turn
    /// will not run) and say why.
    pub async fn confirm_stored(&self, id: &str) -> Result<()> {
        if let Err(e) = self.outbox.flush().await {
            self.update_ledger(|l| l.pending.retain(|p| p.id != id));
            self.turns.wake();
            self.queue_changed();
            return Err(e.into());
        }
        Ok(())
    }

    /// The turn of ledger entry `id`: it runs when it is the first waiting message and no turn
    /// runs; it ends without running if the entry leaves the ledger first.
    pub(super) fn enqueue(self: &Arc<Self>, id: String) -> futures::future::BoxFuture<'static, Result<()>> {
        let this = self.clone();
        Box::pin(async move {
            let message = loop {
                // Registered before the check, so a change in between still wakes us.
                let changed = this.turns.changed.notified();
                tokio::pin!(changed);
                changed.as_mut().enable();
                if this.is_closing() {
                    // Reported when the unload cancelled it, or kept for after a restart.
                    return Err(Error::SessionClosing(this.session_id.clone()));
                }
                {
                    let mut d = this.data.locked();
                    let pending = &mut d.ledger.pending;
                    if !pending.iter().any(|p| p.id == id) {
                        return Ok(()); // withdrawn, removed, or delivered into a running turn
                    }
                    let head = pending.iter_mut().find(|p| !p.started).expect("the entry is waiting");
                    if head.id == id && !this.busy.load(Ordering::SeqCst) {
                        head.started = true;
                        // Cleared before the turn counts as running: an interrupt from now on is
                        // this turn's.
                        this.interrupt_tx.send_replace(false);
                        this.busy.store(true, Ordering::SeqCst);
                        break head.content.clone();
                    }
                }
                changed.await;
            };
            this.store_ledger();
            this.queue_changed();
            let _busy = Busy(&this);
            let metrics = this.ctx.metrics.clone();
            metrics.turn_started();
            let started = std::time::Instant::now();
            *this.first_token_clock.locked() = Some(started);
            let span = tracing::info_span!(
                "invoke_agent",
                otel.name = %format_args!("invoke_agent {}", this.architecture.as_str()),
                gen_ai.operation.name = "invoke_agent",
                gen_ai.agent.name = this.architecture.as_str(),
                gen_ai.conversation.id = %this.session_id,
                error.type = tracing::field::Empty,
            );
            *this.turn_span.locked() = Some(span.clone());
            let result = this.run_turn(&id, &message).instrument(span.clone()).await;
            *this.turn_span.locked() = None;
            if let Err(e) = &result {
                span.record("error.type", e.code());
            }
            let outcome = match &result {
                Err(_) => "failed",
                Ok(()) if *this.interrupt_tx.borrow() => "interrupted",
                Ok(()) => "completed",
            };
            metrics.turn_ended(outcome, started.elapsed());
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

    fn emit_user_message(&self, text: &str) {
        let user =
            Block::UserMessage { id: uuid::Uuid::new_v4().to_string(), timestamp: now_iso(), content: json!(text) };
        self.emit_agent_event(AgentEvent::BlockStart { conversation_id: MAIN.into(), block: user.clone() });
        self.emit_agent_event(AgentEvent::BlockComplete { conversation_id: MAIN.into(), block: user });
    }

    /// A steered message reached the running turn: it is answered there, not queued.
    fn steer_delivered(&self, message_id: &str) {
        let content = {
            let mut d = self.data.locked();
            let Some(i) = d.ledger.pending.iter().position(|p| p.id == message_id && !p.started) else { return };
            d.ledger.pending.remove(i).content
        };
        self.store_ledger();
        self.turns.wake();
        self.emit_user_message(&content);
        self.queue_changed();
    }

    async fn run_turn(self: &Arc<Self>, message_id: &str, message: &str) -> Result<()> {
        let arch = self.ctx.architecture(self.architecture)?;
        let mut interrupted = self.interrupt_tx.subscribe();
        self.runner_generation.fetch_add(1, Ordering::SeqCst);
        self.begin_turn_usage();
        // Starting a sandbox can take long. An interrupt ends the turn at once; the start-up
        // goes on by itself (never left half-done) and the sandbox serves the next message.
        let starting = tokio::spawn({
            let this = self.clone();
            async move { this.ensure_sandbox().await }.in_current_span()
        });
        let sandbox = tokio::select! {
            r = starting => match r.map_err(|e| Error::AgentRun(format!("sandbox start-up failed: {e}"))).and_then(|r| r) {
                Ok(sb) => sb,
                Err(e) => return Err(self.ended_before_running(message, e)),
            },
            _ = async { let _ = interrupted.wait_for(|i| *i).await; } => {
                self.emit_user_message(message);
                self.emit_end(StopReason::Interrupted, None);
                return Ok(());
            }
        };
        self.touch();
        let mut slot = self.runner.lock().await;
        let runner = match self.ready_runner(&mut slot, &*arch, &sandbox).await {
            Ok(r) => r,
            Err(e) => return Err(self.ended_before_running(message, e)),
        };
        self.emit_user_message(message);
        runner.send(&json!({ "type": "turn", "turnId": message_id, "prompt": message }));
        let ending = self.drive_turn(runner, &*arch, &mut interrupted).await;
        if ending.runner_done {
            *slot = None;
            self.control.locked().writer = None;
        }
        drop(slot);
        self.end_turn_requests();
        let mut tracker_end = ending.error.clone();
        if ending.reason == StopReason::Error && tracker_end.is_none() {
            tracker_end = Some("the agent failed".into());
        }
        self.files_settled().await;
        // The transcript is the source of truth: refresh it after every turn, failed ones too.
        if let Err(e) = self.refresh_transcript(&*sandbox).await {
            tracing::warn!(session_id = %self.session_id, error = %e, "could not read the transcript after the turn");
        }
        if ending.timed_out {
            // Stopping the runner means stopping its sandbox (what it holds is pulled first);
            // the next message starts a new one and resumes from the stored transcript.
            self.discard_sandbox(&sandbox).await;
        }
        self.schedule_runner_exit();
        match ending.reason {
            StopReason::Error => Err(Error::AgentRun(tracker_end.unwrap_or_default())),
            _ => Ok(()),
        }
    }

    /// A turn's end block made here (nothing of the agent's to complete).
    fn emit_end(&self, reason: StopReason, error: Option<&str>) {
        for ev in TurnTracker::default().finish(reason, &self.session_id, error) {
            self.emit_agent_event(ev);
        }
    }

    /// The turn failed before its agent ran (no sandbox, no runner): it still ends like every
    /// turn, with the user's message and an end block saying `error`.
    fn ended_before_running(&self, message: &str, e: Error) -> Error {
        self.emit_user_message(message);
        self.emit_end(StopReason::Error, Some(&e.to_string()));
        e
    }

    /// The session's runner for `sandbox`: the live one if it still fits, else a new one.
    pub(super) async fn ready_runner<'a>(
        &self,
        slot: &'a mut Option<Runner>,
        arch: &dyn AgentArchitecture,
        sandbox: &Arc<dyn Sandbox>,
    ) -> Result<&'a mut Runner> {
        let options = self.session_options();
        let setup = SessionSetup {
            session_id: &self.session_id,
            profile: &self.profile,
            session_options: &options,
            raw_transcript: None,
        };
        let start = arch.runner_start(&**sandbox, &setup);
        let fits =
            slot.as_ref().is_some_and(|r| r.exited().is_none() && r.sandbox_id == sandbox.id() && r.start == start);
        if !fits {
            if let Some(old) = slot.take() {
                // Settings changed (model, tools): the old one ends its input and exits; if it
                // does not, it is killed.
                tokio::spawn(async move {
                    if tokio::time::timeout(std::time::Duration::from_secs(10), old.exit()).await.is_err() {
                        old.send(&json!({ "type": "kill" }));
                        old.kill();
                    }
                });
            }
            let proc = arch.start_runner(&**sandbox, &setup).await?;
            let runner = Runner::new(proc, start, self.policy().runner_asks(), sandbox.id().to_string());
            self.control.locked().writer = Some(runner.writer());
            *slot = Some(runner);
        }
        Ok(slot.as_mut().expect("set above"))
    }

    /// Read the runner's output until the turn ends, however it ends.
    async fn drive_turn(
        self: &Arc<Self>,
        runner: &mut Runner,
        arch: &dyn AgentArchitecture,
        interrupted: &mut tokio::sync::watch::Receiver<bool>,
    ) -> Ending {
        let writer = runner.writer();
        let mut converter = arch.stream(&self.session_id);
        let mut tracker = TurnTracker::default();
        // The agent's own error report (converted from its output), for the message.
        let mut reported: Option<String> = None;
        let too_long = || format!("runner output line exceeds {} MiB", MAX_LINE_BYTES >> 20);
        let timeout = self.ctx.options.turn_timeout;
        let deadline = tokio::time::Instant::now() + timeout;
        let (mut turn_limit, limit_reason) = self.budget_deadline();
        let mut kill_at: Option<tokio::time::Instant> = None;
        let exit = runner.exit();
        tokio::pin!(exit);
        let mut ending = loop {
            tokio::select! {
                item = runner.lines.recv() => {
                    let line = match item {
                        Some(OutputLine::Line(l)) => l,
                        Some(_) => {
                            runner.send(&json!({ "type": "kill" }));
                            runner.kill();
                            break Ending { reason: StopReason::Error, error: Some(too_long()), runner_done: true, timed_out: false };
                        }
                        // Its stdout closed: it is exiting. The exit branch says how.
                        None => match tokio::time::timeout(EXIT_WAIT, &mut exit).await {
                            Ok(code) => break self.runner_exited(runner, code, reported.take()),
                            Err(_) => break Ending { reason: StopReason::Error, error: Some("the agent runner closed its output".into()), runner_done: true, timed_out: false },
                        },
                    };
                    match RunnerLine::parse(line) {
                        RunnerLine::Control(RunnerEvent::TurnEnd { status, error, .. }) => {
                            let reason = match status.as_str() {
                                "completed" => StopReason::Completed,
                                "interrupted" => StopReason::Interrupted,
                                _ if *self.interrupt_tx.borrow() => StopReason::Interrupted,
                                _ => StopReason::Error,
                            };
                            // The runner's account first: it saw the whole failure (retries, aborts).
                            let error = (reason == StopReason::Error).then(|| error.map(|e| e.message).or(reported.take()).unwrap_or_else(|| "the agent failed".into()));
                            break Ending { reason, error, runner_done: false, timed_out: false };
                        }
                        RunnerLine::Control(RunnerEvent::Permission { request_id, kind, tool_name, tool_use_id, input }) => {
                            self.on_permission_request(&writer, kind, request_id, tool_name, tool_use_id, input);
                        }
                        RunnerLine::Control(RunnerEvent::Steered { message_id, delivered }) => {
                            if delivered {
                                self.steer_delivered(&message_id);
                            }
                        }
                        RunnerLine::Control(RunnerEvent::Ready) => {}
                        RunnerLine::Agent(line) => {
                            self.convert(&mut *converter, &mut tracker, &mut reported, &line);
                            self.touch();
                        }
                    }
                }
                code = &mut exit => {
                    // What it wrote before exiting is in the pipe: read it while it keeps
                    // coming (a grandchild holding stdout must not keep the turn open).
                    while let Ok(Some(OutputLine::Line(l))) = tokio::time::timeout(EXIT_DRAIN_QUIET, runner.lines.recv()).await {
                        if let RunnerLine::Agent(line) = RunnerLine::parse(l) {
                            self.convert(&mut *converter, &mut tracker, &mut reported, &line);
                        }
                    }
                    break self.runner_exited(runner, code, reported.take());
                }
                _ = async { let _ = interrupted.wait_for(|i| *i).await; }, if kill_at.is_none() => {
                    kill_at = Some(tokio::time::Instant::now() + self.ctx.options.interrupt_grace);
                }
                _ = tokio::time::sleep_until(turn_limit.unwrap_or(deadline)), if turn_limit.is_some() => {
                    turn_limit = None;
                    self.stop_for_budget(&limit_reason);
                }
                _ = tokio::time::sleep_until(kill_at.unwrap_or(deadline)), if kill_at.is_some() => {
                    tracing::warn!(session_id = %self.session_id, "the agent did not stop within interruptGraceMs; killing its runner");
                    runner.send(&json!({ "type": "kill" }));
                    let killed = runner.kill();
                    let gone = tokio::time::timeout(EXIT_WAIT, &mut exit).await.is_ok();
                    break Ending { reason: StopReason::Interrupted, error: None, runner_done: true, timed_out: !gone && !killed };
                }
                _ = tokio::time::sleep_until(deadline) => {
                    runner.send(&json!({ "type": "kill" }));
                    runner.kill();
                    break Ending {
                        reason: StopReason::Error,
                        error: Some(format!("the turn ran longer than turnTimeoutMs ({} ms) and was stopped", timeout.as_millis())),
                        runner_done: true,
                        timed_out: true,
                    };
                }
            }
        };
        if ending.reason == StopReason::Error && *self.interrupt_tx.borrow() {
            ending.reason = StopReason::Interrupted;
            ending.error = None;
        }
        for ev in tracker.finish(ending.reason, &self.session_id, ending.error.as_deref()) {
            self.emit_agent_event(ev);
        }
        ending
    }

    /// One line of the agent's output: its events out (the end block held back by the
    /// tracker), its error report kept for the turn's message.
    fn convert(
        &self,
        converter: &mut dyn StreamConverter,
        tracker: &mut TurnTracker,
        reported: &mut Option<String>,
        line: &str,
    ) {
        for ev in converter.push_line(line) {
            match ev {
                AgentEvent::Error { message } => {
                    reported.get_or_insert(message);
                }
                other => {
                    if let Some(ev) = tracker.observe(other) {
                        self.emit_agent_event(ev);
                    }
                }
            }
        }
    }

    /// The runner exited during a turn.
    fn runner_exited(&self, runner: &Runner, code: i32, reported: Option<String>) -> Ending {
        let tail = runner.stderr_tail();
        let detail = if tail.is_empty() { String::new() } else { format!(": {tail}") };
        let error = if runner.stderr_overflowed() {
            format!("runner output line exceeds {} MiB", MAX_LINE_BYTES >> 20)
        } else if let Some(r) = reported {
            r
        } else if code < 0 {
            format!("the agent runner was killed (signal {}){detail}", -code)
        } else {
            format!("the agent runner exited with code {code}{detail}")
        };
        Ending { reason: StopReason::Error, error: Some(error), runner_done: true, timed_out: false }
    }

    /// After `runnerIdleMs` without a turn, the runner's input ends and it exits (the sandbox
    /// stays until the session's idle timeout).
    fn schedule_runner_exit(self: &Arc<Self>) {
        let generation = self.runner_generation.load(Ordering::SeqCst);
        let weak = Arc::downgrade(self);
        let idle = self.ctx.options.runner_idle;
        tokio::spawn(async move {
            tokio::time::sleep(idle).await;
            let Some(this) = weak.upgrade() else { return };
            if this.runner_generation.load(Ordering::SeqCst) != generation || this.is_busy() {
                return;
            }
            // A turn holds the lock while it runs: then it is not idle.
            let Ok(mut slot) = this.runner.try_lock() else { return };
            let Some(mut runner) = slot.take() else { return };
            this.control.locked().writer = None;
            drop(slot);
            tracing::debug!(session_id = %this.session_id, "runner idle; stopping it");
            // End of input: it exits on its own, or is killed.
            runner.close_input();
            if tokio::time::timeout(std::time::Duration::from_secs(10), runner.exit()).await.is_err() {
                runner.kill();
            }
        });
    }

    fn emit_agent_event(&self, ev: AgentEvent) {
        let e = match ev {
            AgentEvent::BlockStart { conversation_id, block } => {
                let e = self
                    .session_event("session:block:start", json!({ "conversationId": conversation_id, "block": block }));
                if matches!(e.payload["block"]["type"].as_str(), Some("assistant_text" | "thinking" | "tool_use")) {
                    if let Some(t) = self.first_token_clock.locked().take() {
                        self.ctx.metrics.first_token(t.elapsed());
                    }
                }
                e
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
