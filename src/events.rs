//! Domain events and the bus that carries them.
//!
//! Names and payloads are the reference's (spec §1.9). Subscribers are called synchronously in
//! emit order, so every subscriber sees one session's events in the order they happened.

use std::sync::{Arc, RwLock};

use serde::Serialize;
use serde_json::{json, Value};

use crate::session::RuntimeState;

#[derive(Debug, Clone, PartialEq)]
pub struct DomainEvent {
    /// Event name, e.g. `session:status`.
    pub name: &'static str,
    /// The session the event belongs to (its Socket.IO room), if any.
    pub session_id: Option<String>,
    /// The payload object, `Null` for `sessions:changed`.
    pub payload: Value,
}

impl DomainEvent {
    fn session(name: &'static str, session_id: &str, payload: Value) -> Self {
        Self { name, session_id: Some(session_id.to_string()), payload }
    }

    pub fn sessions_changed() -> Self {
        Self { name: "sessions:changed", session_id: None, payload: Value::Null }
    }

    pub fn status(session_id: &str, runtime: &RuntimeState) -> Self {
        Self::session("session:status", session_id, json!({ "sessionId": session_id, "runtime": runtime }))
    }

    pub fn options_update(session_id: &str, options: &impl Serialize) -> Self {
        Self::session("session:options:update", session_id, json!({ "sessionId": session_id, "options": options }))
    }

    pub fn transcript_changed(session_id: &str, content: &str) -> Self {
        Self::session("session:transcript:changed", session_id, json!({ "sessionId": session_id, "content": content }))
    }

    pub fn error(session_id: &str, message: &str, code: Option<&str>) -> Self {
        let mut error = json!({ "message": message });
        if let Some(c) = code {
            error["code"] = json!(c);
        }
        Self::session("session:error", session_id, json!({ "sessionId": session_id, "error": error }))
    }
}

type Subscriber = Arc<dyn Fn(&DomainEvent) + Send + Sync>;

/// Fan-out of domain events to in-process subscribers (the JS bridge, later Socket.IO).
#[derive(Clone, Default)]
pub struct EventBus {
    subscribers: Arc<RwLock<Vec<Subscriber>>>,
}

impl EventBus {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn subscribe(&self, f: impl Fn(&DomainEvent) + Send + Sync + 'static) {
        self.subscribers.write().unwrap().push(Arc::new(f));
    }

    pub fn emit(&self, event: DomainEvent) {
        let subs = self.subscribers.read().unwrap().clone();
        for s in subs {
            s(&event);
        }
    }
}

/// The event names clients can receive, as `'static` names for events that arrive from JS.
pub fn known_event(name: &str) -> Option<&'static str> {
    const NAMES: &[&str] = &[
        "sessions:changed",
        "session:status",
        "session:block:start",
        "session:block:delta",
        "session:block:update",
        "session:block:complete",
        "session:metadata:update",
        "session:options:update",
        "session:subagent:discovered",
        "session:subagent:completed",
        "session:file:created",
        "session:file:modified",
        "session:file:deleted",
        "session:error",
    ];
    NAMES.iter().copied().find(|n| *n == name)
}
