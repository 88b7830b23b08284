//! The per-session event log: every session event gets a `seq` (1, 2, … per session) and an
//! opaque `eventId`, and the most recent ones are kept so a client that was away can read what
//! it missed. Behind a trait: in memory by default; a shared store for several servers can
//! implement the same calls.
//!
//! An `eventId` is `<log epoch>-<seq>`: the epoch is new for every log a session gets (a load,
//! a restart), so an id from before reads as unknown and the reader is told to `reset`.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use serde::Serialize;
use serde_json::Value;

use crate::sync::Locked as _;

/// One logged event.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LoggedEvent {
    pub event_id: String,
    pub seq: u64,
    /// The event's name (`session:block:delta`, …).
    pub event: &'static str,
    pub payload: Value,
}

/// What a read found.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LogRead {
    pub events: Vec<LoggedEvent>,
    /// The newest event of the session (null before its first).
    pub last_event_id: Option<String>,
    /// `since` is not in the log (too old, another session's, or from before a restart): the
    /// reader must refetch the state; nothing was returned.
    pub reset: bool,
}

/// Bounds of what the log keeps per session.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LogLimits {
    pub max_events: usize,
    pub max_bytes: usize,
}

impl Default for LogLimits {
    fn default() -> Self {
        Self { max_events: 10_000, max_bytes: 8 * 1024 * 1024 }
    }
}

pub trait EventLog: Send + Sync {
    /// Stamp `payload` (adds `eventId` and `seq`) and keep it; returns its `seq`. Calls for one
    /// session must not overlap (the bus serializes them), so seq order is delivery order.
    fn append(&self, session_id: &str, event: &'static str, payload: &mut Value) -> u64;
    /// Events after `since` (all kept ones with `None`), at most `limit`.
    fn read_since(&self, session_id: &str, since: Option<&str>, limit: usize) -> LogRead;
    /// The newest event id of the session.
    fn last_event_id(&self, session_id: &str) -> Option<String>;
    /// The session left memory: forget its events.
    fn forget(&self, session_id: &str);
    /// Events and bytes kept over all sessions (for metrics; 0 where not known).
    fn size(&self) -> (usize, usize) {
        (0, 0)
    }
    /// The read made under the bus's order lock, just before a reader joins the live events.
    /// `None`: this process cannot answer it yet (in a cluster its copy of another node's
    /// events may be behind the reader or have a gap): read [`read_durable`](Self::read_durable)
    /// and try again.
    fn read_tail(&self, session_id: &str, since: Option<&str>, limit: usize) -> Option<LogRead> {
        Some(self.read_since(session_id, since, limit))
    }
    /// [`read_since`](Self::read_since) from wherever the whole log is (in a cluster: Redis,
    /// when this process's copy does not reach back to `since`).
    fn read_durable<'a>(&'a self, session_id: &'a str, since: Option<&'a str>, limit: usize) -> BoxFuture<'a, LogRead> {
        Box::pin(std::future::ready(self.read_since(session_id, since, limit)))
    }
    /// An event another node numbered (it carries `eventId` and `seq`): keep it as it is.
    fn insert_numbered(&self, _session_id: &str, _event: &'static str, _payload: &Value) {}
}

/// The embedded default.
pub struct MemoryLog {
    limits: LogLimits,
    sessions: Mutex<HashMap<String, Arc<Mutex<SessionLog>>>>,
}

struct SessionLog {
    epoch: String,
    next_seq: u64,
    /// Kept as written JSON: a third of the memory of a `Value` tree, and its size is exact.
    events: VecDeque<Kept>,
    bytes: usize,
}

struct Kept {
    seq: u64,
    event: &'static str,
    payload: Box<str>,
}

impl Kept {
    fn size(&self) -> usize {
        self.payload.len() + self.event.len() + std::mem::size_of::<Kept>()
    }

    fn read(&self, epoch: &str) -> LoggedEvent {
        LoggedEvent {
            event_id: format!("{epoch}-{}", self.seq),
            seq: self.seq,
            event: self.event,
            payload: serde_json::from_str(&self.payload).unwrap_or(Value::Null),
        }
    }
}

impl MemoryLog {
    pub fn new(limits: LogLimits) -> Self {
        Self { limits, sessions: Mutex::default() }
    }

    pub fn limits(&self) -> LogLimits {
        self.limits
    }

    /// Continue session `id`'s log at `epoch`/`next_seq` (a node taking a session over). What
    /// this process already holds is kept when it is the same log up to there.
    pub fn adopt(&self, id: &str, epoch: &str, next_seq: u64) {
        let mut sessions = self.sessions.locked();
        if let Some(l) = sessions.get(id) {
            let l = l.locked();
            if l.epoch == epoch && l.next_seq == next_seq {
                return;
            }
        }
        sessions.insert(id.to_string(), Arc::new(Mutex::new(SessionLog::empty(epoch.to_string(), next_seq))));
    }

    /// Keep an event numbered elsewhere. One that does not follow what is held (another
    /// epoch, a gap) starts the held copy again from it.
    pub fn insert_numbered(&self, id: &str, event: &'static str, payload: &Value) {
        let Some((epoch, seq)) = payload.get("eventId").and_then(Value::as_str).and_then(|e| {
            let (epoch, seq) = e.rsplit_once('-')?;
            Some((epoch.to_string(), seq.parse::<u64>().ok()?))
        }) else {
            return;
        };
        let log = self.session(id);
        let mut l = log.locked();
        if seq < l.next_seq && l.epoch == epoch {
            return; // Held already.
        }
        if l.epoch != epoch || seq != l.next_seq {
            *l = SessionLog::empty(epoch, seq);
        }
        l.next_seq = seq + 1;
        self.keep(&mut l, Kept { seq, event, payload: payload.to_string().into_boxed_str() });
    }

    fn keep(&self, l: &mut SessionLog, kept: Kept) {
        l.bytes += kept.size();
        l.events.push_back(kept);
        while l.events.len() > self.limits.max_events || (l.bytes > self.limits.max_bytes && l.events.len() > 1) {
            if let Some(k) = l.events.pop_front() {
                l.bytes -= k.size();
            }
        }
    }

    /// What this process holds after `since`, if it can tell: `None` when `since` is of
    /// another epoch, before what is held (a gap), or after it (events still on their way).
    /// Nothing held reads as nothing after `since`.
    pub fn tail(&self, id: &str, since: Option<&str>, limit: usize) -> Option<LogRead> {
        let Some(log) = self.sessions.locked().get(id).cloned() else {
            return Some(LogRead::default());
        };
        let l = log.locked();
        if let Some(since) = since {
            let seq = seq_of(since, &l.epoch)?;
            let first_kept = l.events.front().map(|k| k.seq).unwrap_or(l.next_seq);
            if seq + 1 < first_kept || seq >= l.next_seq {
                return None;
            }
        }
        drop(l);
        Some(self.read_since(id, since, limit))
    }

    fn session(&self, id: &str) -> Arc<Mutex<SessionLog>> {
        self.sessions
            .locked()
            .entry(id.to_string())
            .or_insert_with(|| {
                Arc::new(Mutex::new(SessionLog::empty(uuid::Uuid::new_v4().simple().to_string()[..12].to_string(), 1)))
            })
            .clone()
    }
}

impl SessionLog {
    fn empty(epoch: String, next_seq: u64) -> Self {
        Self { epoch, next_seq, events: VecDeque::new(), bytes: 0 }
    }
}

/// `epoch-seq` → seq, if `id` belongs to this epoch.
fn seq_of(id: &str, epoch: &str) -> Option<u64> {
    let (e, seq) = id.rsplit_once('-')?;
    (e == epoch).then(|| seq.parse().ok()).flatten()
}

impl EventLog for MemoryLog {
    fn append(&self, session_id: &str, event: &'static str, payload: &mut Value) -> u64 {
        let log = self.session(session_id);
        let mut l = log.locked();
        let seq = l.next_seq;
        l.next_seq += 1;
        if let Value::Object(o) = payload {
            o.insert("eventId".into(), Value::String(format!("{}-{seq}", l.epoch)));
            o.insert("seq".into(), Value::from(seq));
        }
        self.keep(&mut l, Kept { seq, event, payload: payload.to_string().into_boxed_str() });
        seq
    }

    fn read_since(&self, session_id: &str, since: Option<&str>, limit: usize) -> LogRead {
        let Some(log) = self.sessions.locked().get(session_id).cloned() else {
            return LogRead { events: vec![], last_event_id: None, reset: since.is_some() };
        };
        let l = log.locked();
        let last_event_id = l.events.back().map(|k| format!("{}-{}", l.epoch, k.seq));
        let first_kept = l.events.front().map(|k| k.seq).unwrap_or(l.next_seq);
        let after = match since {
            None => 0,
            Some(id) => match seq_of(id, &l.epoch) {
                // Known, and nothing after it was dropped.
                Some(seq) if seq < l.next_seq && seq + 1 >= first_kept => seq,
                _ => return LogRead { events: vec![], last_event_id, reset: true },
            },
        };
        // Seqs are contiguous: the first wanted one is found by position, not by a scan.
        let skip = (after + 1).saturating_sub(first_kept) as usize;
        let events = l.events.iter().skip(skip).take(limit).map(|k| k.read(&l.epoch)).collect();
        LogRead { events, last_event_id, reset: false }
    }

    fn last_event_id(&self, session_id: &str) -> Option<String> {
        let log = self.sessions.locked().get(session_id).cloned()?;
        let l = log.locked();
        l.events.back().map(|k| format!("{}-{}", l.epoch, k.seq))
    }

    fn forget(&self, session_id: &str) {
        self.sessions.locked().remove(session_id);
    }

    fn size(&self) -> (usize, usize) {
        let logs: Vec<_> = self.sessions.locked().values().cloned().collect();
        logs.iter().fold((0, 0), |(n, b), l| {
            let l = l.locked();
            (n + l.events.len(), b + l.bytes)
        })
    }
}

/// `eventLog: false`: nothing is numbered or kept; every `since` reads as unknown.
pub struct NoLog;

impl EventLog for NoLog {
    fn append(&self, _: &str, _: &'static str, _: &mut Value) -> u64 {
        0
    }
    fn read_since(&self, _: &str, since: Option<&str>, _: usize) -> LogRead {
        LogRead { events: vec![], last_event_id: None, reset: since.is_some() }
    }
    fn last_event_id(&self, _: &str) -> Option<String> {
        None
    }
    fn forget(&self, _: &str) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn append(log: &MemoryLog, s: &str, n: usize) -> Vec<LoggedEvent> {
        let mut out = vec![];
        for i in 0..n {
            let mut payload = json!({ "sessionId": s, "delta": i });
            let seq = log.append(s, "session:block:delta", &mut payload);
            let event_id = payload["eventId"].as_str().unwrap().to_string();
            out.push(LoggedEvent { event_id, seq, event: "session:block:delta", payload });
        }
        out
    }

    #[test]
    fn events_are_numbered_per_session_and_read_after_an_id() {
        let log = MemoryLog::new(LogLimits::default());
        let a = append(&log, "a", 3);
        append(&log, "b", 2);
        assert_eq!(a.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2, 3]);
        assert_eq!(a[0].payload["seq"], 1);
        assert_eq!(a[0].payload["eventId"], a[0].event_id.as_str());
        let keys: Vec<_> = a[0].payload.as_object().unwrap().keys().cloned().collect();
        assert_eq!(keys, ["sessionId", "delta", "eventId", "seq"], "the reference's fields first");
        let r = log.read_since("a", Some(&a[0].event_id), 100);
        assert_eq!(r.events.iter().map(|e| e.seq).collect::<Vec<_>>(), [2, 3]);
        assert_eq!(r.last_event_id.as_deref(), Some(a[2].event_id.as_str()));
        assert!(!r.reset);
        assert_eq!(log.read_since("a", None, 2).events.len(), 2, "limit");
        assert!(log.read_since("a", Some(&a[2].event_id), 100).events.is_empty(), "up to date");
    }

    #[test]
    fn unknown_foreign_garbage_and_dropped_ids_reset() {
        let log = MemoryLog::new(LogLimits { max_events: 5, max_bytes: usize::MAX });
        let a = append(&log, "a", 8);
        let b = append(&log, "b", 1);
        for since in [b[0].event_id.as_str(), "garbage", "x-1", "", &a[0].event_id, "deadbeef-99"] {
            let r = log.read_since("a", Some(since), 100);
            assert!(r.reset && r.events.is_empty(), "{since}");
        }
        // The oldest kept id is 4: reading after 3 loses nothing, after 2 would.
        assert!(!log.read_since("a", Some(&a[2].event_id), 100).reset);
        assert!(log.read_since("a", Some(&a[1].event_id), 100).reset);
        // After a restart (a new log) old ids are unknown.
        log.forget("a");
        append(&log, "a", 1);
        assert!(log.read_since("a", Some(&a[7].event_id), 100).reset);
    }

    #[test]
    fn memory_stays_within_its_bounds() {
        let log = MemoryLog::new(LogLimits { max_events: 1000, max_bytes: 64 * 1024 });
        append(&log, "a", 100_000);
        let l = log.session("a");
        let l = l.locked();
        assert!(l.events.len() <= 1000);
        assert!(l.bytes <= 64 * 1024, "{}", l.bytes);
        assert_eq!(l.next_seq, 100_001);
    }

    #[test]
    fn a_copy_of_another_nodes_events_keeps_their_numbers_and_knows_what_it_cannot_answer() {
        let owner = MemoryLog::new(LogLimits::default());
        let copy = MemoryLog::new(LogLimits::default());
        let a = append(&owner, "a", 5);
        // This node started after event 2: it holds 3.. only.
        for e in &a[2..] {
            copy.insert_numbered("a", e.event, &e.payload);
        }
        assert_eq!(copy.last_event_id("a"), owner.last_event_id("a"));
        assert_eq!(copy.tail("a", Some(&a[2].event_id), 10).unwrap().events.len(), 2);
        assert!(copy.tail("a", Some(&a[0].event_id), 10).is_none(), "a gap: read the shared log first");
        assert!(copy.tail("a", Some("other-1"), 10).is_none(), "another epoch");
        let ahead = format!("{}-9", a[0].event_id.rsplit_once('-').unwrap().0);
        assert!(copy.tail("a", Some(&ahead), 10).is_none(), "events still on their way");
        assert_eq!(copy.tail("b", Some(&a[0].event_id), 10), Some(LogRead::default()), "nothing held");
        // Held already: not kept twice.
        copy.insert_numbered("a", a[4].event, &a[4].payload);
        assert_eq!(copy.read_since("a", None, 100).events.len(), 3);
    }

    #[test]
    fn a_node_taking_a_session_over_continues_its_numbering() {
        let log = MemoryLog::new(LogLimits::default());
        log.adopt("a", "e1", 8);
        let mut payload = serde_json::json!({});
        assert_eq!(log.append("a", "session:status", &mut payload), 8);
        assert_eq!(payload["eventId"], "e1-8");
        // The same log continued: what is held stays.
        log.adopt("a", "e1", 9);
        assert_eq!(log.read_since("a", None, 10).events.len(), 1);
        log.adopt("a", "e2", 1);
        assert!(log.read_since("a", None, 10).events.is_empty());
    }
}
