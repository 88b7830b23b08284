//! Domain events and the bus that carries them.
//!
//! Names and payloads are the reference's (spec §1.9). Subscribers are called synchronously in
//! emit order, so every subscriber sees one session's events in the order they happened.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock, Weak};

use serde::Serialize;
use serde_json::{json, Value};

use crate::event_log::{EventLog, LogLimits, MemoryLog, NoLog};
use crate::session::RuntimeState;

#[derive(Debug, Clone, PartialEq)]
pub struct DomainEvent {
    /// Event name, e.g. `session:status`.
    pub name: &'static str,
    /// The session the event belongs to (its Socket.IO room), if any.
    pub session_id: Option<String>,
    /// The payload object, `Null` for `sessions:changed`.
    pub payload: Value,
    /// Published by another node of the cluster (numbered there already); not this process's
    /// to publish again or to hand to `runtime.eventBus`.
    pub remote: bool,
}

impl DomainEvent {
    fn session(name: &'static str, session_id: &str, payload: Value) -> Self {
        Self { name, session_id: Some(session_id.to_string()), payload, remote: false }
    }

    pub fn sessions_changed() -> Self {
        Self { name: "sessions:changed", session_id: None, payload: Value::Null, remote: false }
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

    /// `session:usage`: one model call's tokens and cost, the turn's and the session's so far.
    pub fn usage(session_id: &str, payload: Value) -> Self {
        Self::session("session:usage", session_id, payload)
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

/// Fan-out of domain events to in-process subscribers (the JS bridge, Socket.IO servers).
/// Session events are numbered and kept in the event log first (see [`crate::event_log`]).
#[derive(Clone)]
pub struct EventBus {
    inner: Arc<Subscribers>,
    log: Arc<dyn EventLog>,
    /// One session event at a time: its number is given and it is delivered under this lock,
    /// so every subscriber sees a session's events in `seq` order.
    sequencer: Arc<std::sync::Mutex<()>>,
    /// False with `eventLog: false`: events go out as the reference sends them.
    numbered: bool,
}

impl Default for EventBus {
    fn default() -> Self {
        Self::with_log(Arc::new(MemoryLog::new(LogLimits::default())))
    }
}

impl DomainEvent {
    /// A session's stream event: numbered, logged, sent to its clients. Not the transcript
    /// (whole, on every change; clients never receive it) nor the global session list.
    pub fn is_stream_event(&self) -> bool {
        self.session_id.is_some() && !matches!(self.name, "session:transcript:changed" | "session:subagent:changed")
    }
}

#[derive(Default)]
struct Subscribers {
    list: RwLock<Vec<(u64, Subscriber)>>,
    next_id: AtomicU64,
}

impl Subscribers {
    /// A subscriber that panicked while the list was locked must not stop the bus for good.
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Vec<(u64, Subscriber)>> {
        self.list.read().unwrap_or_else(PoisonError::into_inner)
    }
    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Vec<(u64, Subscriber)>> {
        self.list.write().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A subscription that ends when dropped (a closed server stops receiving events).
#[must_use = "dropping a Subscription unsubscribes at once"]
pub struct Subscription {
    bus: Weak<Subscribers>,
    id: u64,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if let Some(bus) = self.bus.upgrade() {
            bus.write().retain(|(id, _)| *id != self.id);
        }
    }
}

impl EventBus {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with_log(log: Arc<dyn EventLog>) -> Self {
        Self { inner: Arc::default(), log, sequencer: Arc::default(), numbered: true }
    }

    /// A bus whose events are neither numbered nor kept (`eventLog: false`).
    pub fn unlogged() -> Self {
        Self { numbered: false, ..Self::with_log(Arc::new(NoLog)) }
    }

    /// The session event log.
    pub fn log(&self) -> &Arc<dyn EventLog> {
        &self.log
    }

    /// While held, no session event is numbered or delivered: a reader of the log that also
    /// subscribes (a Socket.IO join with `since`) sees neither a gap nor a repeat.
    pub fn hold_order(&self) -> std::sync::MutexGuard<'_, ()> {
        self.sequencer.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Subscribe for the bus's lifetime.
    pub fn subscribe(&self, f: impl Fn(&DomainEvent) + Send + Sync + 'static) {
        std::mem::forget(self.subscription(f));
    }

    /// Subscribe until the returned handle is dropped.
    pub fn subscription(&self, f: impl Fn(&DomainEvent) + Send + Sync + 'static) -> Subscription {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        self.inner.write().push((id, Arc::new(f)));
        Subscription { bus: Arc::downgrade(&self.inner), id }
    }

    /// Current subscribers, for checking that closed servers let go of the bus.
    pub fn subscriber_count(&self) -> usize {
        self.inner.read().len()
    }

    pub fn emit(&self, mut event: DomainEvent) {
        let _order = if self.numbered && event.is_stream_event() {
            let guard = self.sequencer.lock().unwrap_or_else(PoisonError::into_inner);
            let id = event.session_id.as_deref().unwrap_or_default();
            self.log.append(id, event.name, &mut event.payload);
            Some(guard)
        } else {
            None
        };
        // Listed after the order is taken: a subscriber added while it was held gets this event.
        let subs: Vec<Subscriber> = self.inner.read().iter().map(|(_, s)| s.clone()).collect();
        for s in subs {
            s(&event);
        }
    }
}

impl EventBus {
    /// An event from another node: kept in this process's copy of the log as numbered there,
    /// then delivered like a local one (in the order the owner published them).
    pub fn emit_remote(&self, event: DomainEvent) {
        debug_assert!(event.remote);
        let _order = self.sequencer.lock().unwrap_or_else(PoisonError::into_inner);
        if event.is_stream_event() {
            if let Some(id) = event.session_id.as_deref() {
                self.log.insert_numbered(id, event.name, &event.payload);
            }
        }
        let subs: Vec<Subscriber> = self.inner.read().iter().map(|(_, s)| s.clone()).collect();
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
        "session:usage",
    ];
    NAMES.iter().copied().find(|n| *n == name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn a_dropped_subscription_stops_receiving() {
        let bus = EventBus::new();
        let seen = Arc::new(AtomicUsize::new(0));
        let s = seen.clone();
        let sub = bus.subscription(move |_| {
            s.fetch_add(1, Ordering::Relaxed);
        });
        bus.subscribe(|_| {});
        assert_eq!(bus.subscriber_count(), 2);
        bus.emit(DomainEvent::sessions_changed());
        drop(sub);
        assert_eq!(bus.subscriber_count(), 1);
        bus.emit(DomainEvent::sessions_changed());
        assert_eq!(seen.load(Ordering::Relaxed), 1);
    }
}
