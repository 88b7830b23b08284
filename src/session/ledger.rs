//! The runtime's own bookkeeping for a session, stored with it through the adapter's existing
//! `updateSessionRecord` (under one key of the record's `metadata`): messages accepted but not
//! yet answered, the sandboxes started for it, and its usage. A restarted runtime runs (or reports) those
//! messages and stops those sandboxes. Clients never see the key: views strip it.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The key under the record's `metadata`.
pub const KEY: &str = "_agentRuntime";

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Ledger {
    #[serde(default)]
    pub pending: Vec<PendingMessage>,
    #[serde(default)]
    pub sandboxes: Vec<SandboxRef>,
    /// Tokens and cost so far (counted by the model proxy), kept across reloads.
    #[serde(default, skip_serializing_if = "is_unused")]
    pub usage: crate::usage::SessionUsage,
}

fn is_unused(u: &crate::usage::SessionUsage) -> bool {
    *u == crate::usage::SessionUsage::default()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PendingMessage {
    pub id: String,
    pub content: String,
    pub accepted_at: i64,
    /// Its turn began: after a crash it is reported, not run again (it may have had effects).
    #[serde(default)]
    pub started: bool,
    /// How it was sent (`queue`, `steer`, `interrupt`).
    #[serde(default, skip_serializing_if = "MessageMode::is_queue")]
    pub mode: MessageMode,
}

/// How a message meets a running turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MessageMode {
    /// After the turns before it, in sending order.
    #[default]
    Queue,
    /// Into the running turn, read before the agent's next step (queued where it cannot be).
    Steer,
    /// Stop the running turn, then run first.
    Interrupt,
}

impl MessageMode {
    fn is_queue(&self) -> bool {
        *self == MessageMode::Queue
    }

    pub fn as_str(self) -> &'static str {
        match self {
            MessageMode::Queue => "queue",
            MessageMode::Steer => "steer",
            MessageMode::Interrupt => "interrupt",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "queue" => Some(MessageMode::Queue),
            "steer" => Some(MessageMode::Steer),
            "interrupt" => Some(MessageMode::Interrupt),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SandboxRef {
    pub provider: String,
    pub id: String,
}

impl Ledger {
    /// Messages or sandboxes a restarted runtime must see to (usage alone is not unfinished).
    pub fn has_unfinished(&self) -> bool {
        !self.pending.is_empty() || !self.sandboxes.is_empty()
    }

    /// Split stored metadata into the user's part and the ledger (a malformed ledger is
    /// dropped with a warning: it is ours, not the user's).
    pub fn take_from(metadata: &mut Option<Map<String, Value>>) -> Ledger {
        let Some(raw) = metadata.as_mut().and_then(|m| m.remove(KEY)) else { return Ledger::default() };
        if metadata.as_ref().is_some_and(|m| m.is_empty()) {
            *metadata = None;
        }
        serde_json::from_value(raw).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "stored runtime bookkeeping is unreadable; ignored");
            Ledger::default()
        })
    }

    /// The user's metadata with the ledger under [`KEY`] (or without it when empty).
    pub fn merged_into(&self, metadata: &Option<Map<String, Value>>) -> Map<String, Value> {
        let mut m = metadata.clone().unwrap_or_default();
        if *self != Ledger::default() {
            m.insert(KEY.into(), serde_json::to_value(self).expect("ledger serializes"));
        }
        m
    }

    /// Remove the ledger key from a record's metadata as shown to clients.
    pub fn strip(metadata: &mut Option<Map<String, Value>>) {
        Self::take_from(metadata);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn round_trips_beside_the_users_metadata() {
        let ledger = Ledger {
            pending: vec![PendingMessage {
                id: "m1".into(),
                content: "hi".into(),
                accepted_at: 5,
                started: false,
                mode: MessageMode::Queue,
            }],
            sandboxes: vec![SandboxRef { provider: "local".into(), id: "local-1".into() }],
            usage: Default::default(),
        };
        let user = json!({ "title": "mine" }).as_object().cloned();
        let mut stored = Some(ledger.merged_into(&user));
        assert_eq!(stored.as_ref().unwrap()["title"], "mine");
        assert_eq!(Ledger::take_from(&mut stored), ledger);
        assert_eq!(stored, user);
        // Nothing to keep: the key is not written, and metadata that was absent stays absent.
        assert!(!Ledger::default().merged_into(&user).contains_key(KEY));
        let mut only_ours = Some(ledger.merged_into(&None));
        Ledger::take_from(&mut only_ours);
        assert_eq!(only_ours, None);
    }

    #[test]
    fn a_malformed_ledger_is_ignored() {
        let mut m = json!({ KEY: "garbage", "x": 1 }).as_object().cloned();
        assert_eq!(Ledger::take_from(&mut m), Ledger::default());
        assert_eq!(m, json!({ "x": 1 }).as_object().cloned());
    }
}
