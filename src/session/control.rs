//! Reaching a running agent: interrupt, the visible queue, and the tool calls and questions
//! that wait for a person. Decisions are the session's (rules, first answer wins, timeouts);
//! the runner only asks and waits (docs/RUNNER.md).

use crate::sync::Locked as _;
use std::collections::VecDeque;
use std::sync::Arc;

use serde_json::{json, Map, Value};

use super::agent_session::AgentSession;
use super::permissions::{Decision, Policy, Rules};
use super::state::{QueuedMessage, RequestView};
use crate::agent::runner::{PermissionKind, RunnerWriter};
use crate::agent::stream::MAIN;
use crate::error::{Error, Result};
use crate::time::{iso_of_ms, now_ms};

/// Answered request ids remembered for "already resolved" (409) rather than "unknown" (404).
const RESOLVED_MEMORY: usize = 1000;
/// `permissionTimeoutMs` when the session options do not set it.
const DEFAULT_PERMISSION_TIMEOUT_MS: u64 = 600_000;

#[derive(Default)]
pub(super) struct ControlState {
    /// The session's runner, while one lives (between turns too: policy changes reach it).
    pub writer: Option<RunnerWriter>,
    /// Requests waiting for an answer, oldest first.
    requests: Vec<Waiting>,
    resolved: VecDeque<String>,
    /// Rules added by answers with `remember`, for the rest of the session.
    remembered: Rules,
}

struct Waiting {
    view: RequestView,
    timer: tokio::task::AbortHandle,
}

/// A person's answer to a tool call.
#[derive(Debug, Clone, Default)]
pub struct PermissionAnswer {
    pub allow: bool,
    pub updated_input: Option<Map<String, Value>>,
    pub message: Option<String>,
    pub remember: bool,
}

/// Who settled a request.
#[derive(Debug, Clone, Copy)]
enum ResolvedBy {
    User,
    Timeout,
    Interrupt,
    Rule,
}

impl ResolvedBy {
    fn as_str(self) -> &'static str {
        match self {
            ResolvedBy::User => "user",
            ResolvedBy::Timeout => "timeout",
            ResolvedBy::Interrupt => "interrupt",
            ResolvedBy::Rule => "rule",
        }
    }
}

/// The line that answers request `id` on the runner's stdin.
fn answer_line(id: &str, allow: bool, updated_input: Option<&Map<String, Value>>, message: Option<&str>) -> Value {
    let mut line = json!({ "type": "permission", "requestId": id, "behavior": if allow { "allow" } else { "deny" } });
    if let Some(u) = updated_input {
        line["updatedInput"] = Value::Object(u.clone());
    }
    if let Some(m) = message {
        line["message"] = json!(m);
    }
    line
}

impl AgentSession {
    /// The session's tool-call policy now.
    pub(super) fn policy(&self) -> Policy {
        let options = self.session_options();
        let remembered = self.control.locked().remembered.clone();
        Policy::of(&options, &self.profile.raw, &remembered)
    }

    /// Tell a live runner whether tool calls must come to the host (options or rules changed).
    pub(super) fn policy_changed(&self) {
        let ask = self.policy().runner_asks();
        if let Some(w) = &self.control.locked().writer {
            w.send(&json!({ "type": "policy", "ask": ask }));
        }
    }

    /// Stop the running turn (see the README's Interrupt section). With `clear_queue`, waiting
    /// messages are dropped too. Returns whether a turn was running.
    pub fn interrupt(&self, clear_queue: bool) -> bool {
        if clear_queue {
            let dropped = {
                let mut d = self.data.locked();
                let before = d.ledger.pending.len();
                d.ledger.pending.retain(|p| p.started);
                before - d.ledger.pending.len()
            };
            if dropped > 0 {
                self.store_ledger();
                self.queue_changed();
            }
        }
        if !self.is_busy() {
            return false;
        }
        // Anything waiting for a person is denied first, so the agent is not stuck in a prompt.
        self.resolve_all(ResolvedBy::Interrupt, "The turn was interrupted.");
        if let Some(w) = &self.control.locked().writer {
            w.send(&json!({ "type": "interrupt" }));
        }
        self.interrupt_tx.send_replace(true);
        true
    }

    /// Messages waiting for their turn, in the order they will run.
    pub fn queue_view(&self) -> Vec<QueuedMessage> {
        let d = self.data.locked();
        d.ledger
            .pending
            .iter()
            .filter(|p| !p.started)
            .map(|p| QueuedMessage {
                message_id: p.id.clone(),
                mode: p.mode.as_str(),
                preview: p.content.chars().take(100).collect(),
                enqueued_at: iso_of_ms(p.accepted_at),
            })
            .collect()
    }

    /// Announce the queue (`session:queue:changed`).
    pub(super) fn queue_changed(&self) {
        let queue = self.queue_view();
        self.emit(self.session_event("session:queue:changed", json!({ "queue": queue })));
    }

    /// Remove a message that has not started. `NotFound` if it started or never was.
    pub fn remove_queued(&self, message_id: &str) -> Result<()> {
        let removed = {
            let mut d = self.data.locked();
            let before = d.ledger.pending.len();
            d.ledger.pending.retain(|p| p.started || p.id != message_id);
            before != d.ledger.pending.len()
        };
        if !removed {
            return Err(Error::NotFound(format!(
                "message {message_id} is not waiting in session {}'s queue (it started already, or never was)",
                self.session_id
            )));
        }
        self.store_ledger();
        self.turns.wake();
        self.queue_changed();
        Ok(())
    }

    /// Requests waiting for a person.
    pub fn pending_requests(&self) -> Vec<RequestView> {
        self.control.locked().requests.iter().map(|w| w.view.clone()).collect()
    }

    /// The runner asks about a tool call: the rules settle it, or it waits for a person.
    pub(super) fn on_permission_request(
        self: &Arc<Self>,
        writer: &RunnerWriter,
        kind: PermissionKind,
        request_id: String,
        tool_name: String,
        tool_use_id: String,
        input: Value,
    ) {
        if kind == PermissionKind::Tool {
            match self.policy().decide(&tool_name, &input) {
                Decision::Allow => {
                    writer.send(&answer_line(&request_id, true, None, None));
                    return;
                }
                Decision::Deny(rule) => {
                    let why = format!("Denied by the session's permission rule {rule:?}.");
                    writer.send(&answer_line(&request_id, false, None, Some(&why)));
                    self.emit(self.resolved_event(kind, &request_id, "deny", ResolvedBy::Rule));
                    return;
                }
                Decision::Ask => {}
            }
        }
        let timeout_ms = self
            .session_options()
            .get("permissionTimeoutMs")
            .and_then(Value::as_u64)
            .filter(|n| *n > 0)
            .unwrap_or(DEFAULT_PERMISSION_TIMEOUT_MS);
        let now = now_ms();
        let questions =
            (kind == PermissionKind::Question).then(|| input.get("questions").cloned().unwrap_or(json!([])));
        let view = RequestView {
            kind: if kind == PermissionKind::Question { "question" } else { "permission" },
            request_id: request_id.clone(),
            conversation_id: MAIN.into(),
            tool_name,
            tool_use_id,
            input,
            questions,
            requested_at: iso_of_ms(now),
            expires_at: iso_of_ms(now + timeout_ms as i64),
        };
        let weak = Arc::downgrade(self);
        let id = request_id.clone();
        let timer = tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(timeout_ms)).await;
            if let Some(s) = weak.upgrade() {
                let why = format!("No one answered within {} s; the tool call was denied.", timeout_ms / 1000);
                s.resolve(&id, false, None, Some(&why), ResolvedBy::Timeout);
            }
        })
        .abort_handle();
        let mut payload = serde_json::to_value(&view).expect("request serializes");
        payload.as_object_mut().expect("object").remove("type");
        let name = if kind == PermissionKind::Question {
            "session:question:requested"
        } else {
            "session:permission:requested"
        };
        self.control.locked().requests.push(Waiting { view, timer });
        self.emit(self.session_event(name, payload));
    }

    /// A person answers a tool call. First answer wins: a later one is `AlreadyResolved`.
    pub fn respond_permission(&self, request_id: &str, answer: PermissionAnswer) -> Result<()> {
        let tool = self.find_request(request_id, "permission")?.tool_name;
        if answer.remember {
            let mut c = self.control.locked();
            let rules = if answer.allow { &mut c.remembered.allow } else { &mut c.remembered.deny };
            rules.push(tool);
        }
        let message =
            answer.message.clone().or_else(|| (!answer.allow).then(|| "The user denied this tool call.".to_string()));
        if !self.resolve(request_id, answer.allow, answer.updated_input.as_ref(), message.as_deref(), ResolvedBy::User)
        {
            return Err(self.already_resolved(request_id));
        }
        if answer.remember {
            self.policy_changed();
        }
        Ok(())
    }

    /// A person answers a question: `answers` maps each question's text to the chosen label(s)
    /// or free text; several labels are joined as the agent expects for multi-select.
    pub fn answer_question(&self, request_id: &str, answers: &Map<String, Value>) -> Result<()> {
        let mut joined = Map::new();
        for (question, answer) in answers {
            let text = match answer {
                Value::String(s) => s.clone(),
                Value::Array(items) if items.iter().all(Value::is_string) => {
                    items.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(", ")
                }
                other => {
                    return Err(Error::InvalidInput(format!(
                        "answers[{question:?}] must be a string or an array of strings, got {other}"
                    )))
                }
            };
            joined.insert(question.clone(), json!(text));
        }
        let mut updated = match self.find_request(request_id, "question")?.input {
            Value::Object(o) => o,
            _ => Map::new(),
        };
        updated.insert("answers".into(), Value::Object(joined));
        if !self.resolve(request_id, true, Some(&updated), None, ResolvedBy::User) {
            return Err(self.already_resolved(request_id));
        }
        Ok(())
    }

    /// The waiting request `id` of `kind`.
    fn find_request(&self, id: &str, kind: &str) -> Result<RequestView> {
        let c = self.control.locked();
        if let Some(w) = c.requests.iter().find(|w| w.view.request_id == id) {
            if w.view.kind != kind {
                return Err(Error::InvalidInput(format!(
                    "request {id} is a {}, not a {kind}: answer it at /{}s/{id}",
                    w.view.kind, w.view.kind
                )));
            }
            return Ok(w.view.clone());
        }
        if c.resolved.iter().any(|r| r == id) {
            return Err(self.already_resolved(id));
        }
        Err(Error::NotFound(format!("no {kind} request {id} in session {}", self.session_id)))
    }

    fn already_resolved(&self, id: &str) -> Error {
        Error::AlreadyResolved(format!("request {id} was already answered"))
    }

    fn resolved_event(
        &self,
        kind: PermissionKind,
        id: &str,
        behavior: &str,
        by: ResolvedBy,
    ) -> crate::events::DomainEvent {
        let name =
            if kind == PermissionKind::Question { "session:question:resolved" } else { "session:permission:resolved" };
        self.session_event(name, json!({ "requestId": id, "behavior": behavior, "resolvedBy": by.as_str() }))
    }

    /// Settle request `id` (if still waiting): answer the runner, announce it. False if it was
    /// not waiting.
    fn resolve(
        &self,
        id: &str,
        allow: bool,
        updated_input: Option<&Map<String, Value>>,
        message: Option<&str>,
        by: ResolvedBy,
    ) -> bool {
        let (waiting, writer) = {
            let mut c = self.control.locked();
            let Some(i) = c.requests.iter().position(|w| w.view.request_id == id) else { return false };
            let w = c.requests.remove(i);
            c.resolved.push_back(id.to_string());
            if c.resolved.len() > RESOLVED_MEMORY {
                c.resolved.pop_front();
            }
            (w, c.writer.clone())
        };
        waiting.timer.abort();
        if let Some(writer) = writer {
            writer.send(&answer_line(id, allow, updated_input, message));
        }
        let kind = if waiting.view.kind == "question" { PermissionKind::Question } else { PermissionKind::Tool };
        let behavior = if allow { "allow" } else { "deny" };
        self.emit(self.resolved_event(kind, id, behavior, by));
        true
    }

    /// Deny every waiting request (interrupt, or the turn ended without them).
    fn resolve_all(&self, by: ResolvedBy, message: &str) {
        let ids: Vec<String> = self.control.locked().requests.iter().map(|w| w.view.request_id.clone()).collect();
        for id in ids {
            self.resolve(&id, false, None, Some(message), by);
        }
    }

    /// The turn is over: whatever still waits is moot.
    pub(super) fn end_turn_requests(&self) {
        self.resolve_all(ResolvedBy::Interrupt, "The turn ended.");
    }
}
