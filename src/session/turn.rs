//! Turns: one at a time in sending order, each running the architecture's runner in the
//! sandbox and turning its output into domain events; the transcript is read back after.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use serde_json::json;

use super::agent_session::AgentSession;
use crate::agent::architecture::SessionSetup;
use crate::agent::blocks::Block;
use crate::agent::stream::{AgentEvent, MAIN};
use crate::error::{Error, Result};
use crate::events::DomainEvent;
use crate::sandbox::{output_lines, OutputLine, Sandbox, MAX_LINE_BYTES};
use crate::time::now_iso;

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

impl AgentSession {
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
        let mut stdout =
            output_lines(std::mem::replace(&mut proc.stdout, Box::pin(tokio::io::empty())), MAX_LINE_BYTES);
        let mut stderr =
            output_lines(std::mem::replace(&mut proc.stderr, Box::pin(tokio::io::empty())), MAX_LINE_BYTES);
        // A runner's line is held whole in memory: one past the limit fails the turn.
        let too_long = || format!("runner output line exceeds {} MiB", MAX_LINE_BYTES >> 20);
        let stderr_tail = tokio::spawn(async move {
            let mut tail = std::collections::VecDeque::new();
            while let Some(item) = stderr.recv().await {
                let OutputLine::Line(l) = item else { return Err(()) };
                tracing::debug!(line = %l, "runner stderr");
                if tail.len() == 10 {
                    tail.pop_front();
                }
                // Kept for the error message: a few lines, each cut short.
                tail.push_back(l.chars().take(2000).collect::<String>());
            }
            Ok(tail.into_iter().collect::<Vec<_>>().join("\n"))
        });
        let mut converter = arch.stream(&self.session_id);
        let mut failure: Option<String> = None;
        while let Some(item) = stdout.recv().await {
            let OutputLine::Line(line) = item else {
                failure.get_or_insert_with(too_long);
                break;
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
        }
        let code = proc.exit.await;
        let tail = match stderr_tail.await {
            Ok(Ok(tail)) => tail,
            Ok(Err(())) => {
                failure.get_or_insert_with(too_long);
                String::new()
            }
            Err(_) => String::new(),
        };
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
    pub(super) async fn refresh_transcript(&self, sandbox: &dyn Sandbox) -> Result<()> {
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
}
