//! The shared event log and the event bus between nodes.
//!
//! [`ClusterLog`] is the [`EventLog`] of a clustered runtime: this process's copy
//! ([`MemoryLog`]: the events of the sessions it owns, numbered here, and those other nodes
//! published) in front of the sessions' Redis streams. The owner's appends are queued, in bus
//! order, for the publisher task, which writes them in batches through `publish.lua` (fenced by
//! the lease token). The reader task follows the bus stream and this node's inbox.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use redis::aio::ConnectionManager;
use redis::Value;
use serde_json::Value as Json;
use tokio::sync::mpsc;

use super::{redis_io, scripts, Cluster, PREFIX};
use crate::event_log::{EventLog, LogRead, LoggedEvent, MemoryLog};
use crate::events::DomainEvent;
use crate::sync::Locked as _;

/// How long a session's stream outlives its last event.
const LOG_TTL_SECS: u64 = 24 * 3600;
/// Entries the bus stream keeps (approximately): enough for any reader that is merely slow.
const BUS_LENGTH: u64 = 100_000;
/// Events per publish script call.
const BATCH: usize = 256;

/// What the publisher task sends, in order.
pub enum Outgoing {
    Event { session: String, token: String, seq: u64, epoch: String, name: &'static str, payload: String, runtime: String },
    /// `sessions:changed`.
    ListChanged,
    /// Give up the session's lease (after its events above).
    Release { session: String, token: String },
    /// Answer when everything before is sent.
    Flush(tokio::sync::oneshot::Sender<()>),
}

pub struct ClusterLog {
    local: Arc<MemoryLog>,
    cluster: Arc<Cluster>,
}

impl ClusterLog {
    pub fn new(cluster: Arc<Cluster>, local: Arc<MemoryLog>) -> Self {
        Self { local, cluster }
    }
}

/// `{epoch, last seq, reset, name, payload, ...}` → a read.
fn decode_read(a: &[Value]) -> LogRead {
    let epoch = a.first().and_then(redis_io::text).unwrap_or_default();
    let last = a.get(1).and_then(redis_io::int).unwrap_or(0);
    let reset = a.get(2).and_then(redis_io::int) == Some(1);
    let events = a
        .get(3..)
        .unwrap_or_default()
        .chunks(2)
        .filter_map(|pair| {
            let [name, payload] = pair else { return None };
            let payload: Json = serde_json::from_slice(&redis_io::bytes(payload)?).ok()?;
            Some(LoggedEvent {
                event_id: payload.get("eventId")?.as_str()?.to_string(),
                seq: payload.get("seq")?.as_u64()?,
                event: static_name(&redis_io::text(name)?)?,
                payload,
            })
        })
        .collect();
    let last_event_id = (!epoch.is_empty() && last > 0).then(|| format!("{epoch}-{last}"));
    LogRead { events, last_event_id, reset }
}

/// Event names read from Redis as the `'static` names events carry. Only `session:*` names,
/// and only so many: a name is kept for the life of the process.
pub fn static_name(name: &str) -> Option<&'static str> {
    if let Some(n) = crate::events::known_event(name) {
        return Some(n);
    }
    static NAMES: Mutex<Option<HashSet<&'static str>>> = Mutex::new(None);
    let mut names = NAMES.locked();
    let names = names.get_or_insert_with(HashSet::new);
    if let Some(n) = names.get(name) {
        return Some(n);
    }
    if !name.starts_with("session:") || name.len() > 64 || names.len() >= 256 {
        return None;
    }
    let leaked: &'static str = Box::leak(name.to_string().into_boxed_str());
    names.insert(leaked);
    Some(leaked)
}

impl EventLog for ClusterLog {
    fn append(&self, session_id: &str, event: &'static str, payload: &mut Json) -> u64 {
        let seq = self.local.append(session_id, event, payload);
        // Only the holder speaks for a session (a warm or lost one is not published).
        if let Some(token) = self.cluster.token(session_id) {
            let epoch = payload
                .get("eventId")
                .and_then(Json::as_str)
                .and_then(|e| e.rsplit_once('-'))
                .map(|(e, _)| e.to_string())
                .unwrap_or_default();
            let runtime = match (event, payload.get("runtime")) {
                ("session:status", Some(r)) if r.get("isLoaded") == Some(&Json::Bool(false)) => "-".to_string(),
                ("session:status", Some(r)) => {
                    let mut r = r.clone();
                    r["ownerNodeId"] = Json::from(self.cluster.node_id());
                    r.to_string()
                }
                _ => String::new(),
            };
            let _ = self.cluster.publisher.send(Outgoing::Event {
                session: session_id.to_string(),
                token,
                seq,
                epoch,
                name: event,
                payload: payload.to_string(),
                runtime,
            });
        }
        seq
    }

    fn read_since(&self, session_id: &str, since: Option<&str>, limit: usize) -> LogRead {
        self.local.read_since(session_id, since, limit)
    }

    fn last_event_id(&self, session_id: &str) -> Option<String> {
        self.local.last_event_id(session_id)
    }

    /// This process's copy only: the shared log stays for replay on any node.
    fn forget(&self, session_id: &str) {
        self.local.forget(session_id);
    }

    fn size(&self) -> (usize, usize) {
        self.local.size()
    }

    fn read_tail(&self, session_id: &str, since: Option<&str>, limit: usize) -> Option<LogRead> {
        self.local.tail(session_id, since, limit)
    }

    fn read_durable<'a>(&'a self, session_id: &'a str, since: Option<&'a str>, limit: usize) -> BoxFuture<'a, LogRead> {
        Box::pin(async move {
            // Held here from `since` on. From the start (no `since`) only Redis knows: this
            // copy may begin anywhere.
            if let Some(read) = since.and_then(|_| self.local.tail(session_id, since, limit)) {
                if read.last_event_id.is_some() {
                    return read;
                }
            }
            match self.cluster.read_log(session_id, since, limit).await {
                Ok(read) => read,
                Err(e) => {
                    tracing::warn!(session_id, error = %e, "could not read the shared event log; answering from this node's copy");
                    self.local.read_since(session_id, since, limit)
                }
            }
        })
    }

    fn insert_numbered(&self, session_id: &str, event: &'static str, payload: &Json) {
        self.local.insert_numbered(session_id, event, payload);
    }
}

impl Cluster {
    pub(super) async fn read_log(&self, session_id: &str, since: Option<&str>, limit: usize) -> redis::RedisResult<LogRead> {
        let (epoch, seq) = match since.and_then(|s| s.rsplit_once('-')) {
            Some((e, s)) => (e.to_string(), s.parse::<u64>().unwrap_or(u64::MAX).to_string()),
            // Not `epoch-seq` at all: no epoch matches it.
            None if since.is_some() => ("\u{0}".to_string(), "0".to_string()),
            None => (String::new(), "0".to_string()),
        };
        let (epoch, seq) = (&epoch, &seq);
        let answer: Value = self
            .with_conn(|mut c| async move {
                scripts::read()
                    .key(format!("{PREFIX}log:{session_id}"))
                    .key(format!("{PREFIX}logmeta:{session_id}"))
                    .arg(epoch)
                    .arg(seq)
                    .arg(limit.min(10_000))
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        Ok(decode_read(redis_io::array(&answer)))
    }

    /// Continue session `id`'s numbering where the shared log ends (a node taking it over),
    /// so ids clients hold stay valid.
    pub async fn adopt_log(&self, id: &str) -> crate::error::Result<()> {
        let Some(local) = self.local_log.get() else { return Ok(()) };
        let read = self.read_log(id, None, 0).await.map_err(|e| self.unavailable(e))?;
        match read.last_event_id.as_deref().and_then(|l| l.rsplit_once('-')) {
            Some((epoch, seq)) => local.adopt(id, epoch, seq.parse::<u64>().unwrap_or(0) + 1),
            None => local.forget(id),
        }
        Ok(())
    }

    /// Publish queued events in order, a batch per script call; while Redis is away the batch
    /// waits and is sent again (an event the log has already is refused by its seq, not doubled).
    pub(super) async fn publish_loop(self: Arc<Self>, mut rx: mpsc::UnboundedReceiver<Outgoing>) {
        let mut batch: Vec<Outgoing> = Vec::new();
        while let Some(first) = rx.recv().await {
            batch.push(first);
            while batch.len() < BATCH {
                match rx.try_recv() {
                    Ok(o) => batch.push(o),
                    Err(_) => break,
                }
            }
            let mut pause = Duration::from_millis(50);
            loop {
                match self.send_batch(&batch).await {
                    Ok(()) => break,
                    Err(e) => {
                        self.set_redis_up(false);
                        tracing::debug!(error = %e, "publishing events failed; retrying");
                        tokio::time::sleep(pause).await;
                        pause = (pause * 2).min(Duration::from_secs(2));
                    }
                }
            }
            self.set_redis_up(true);
            for o in batch.drain(..) {
                if let Outgoing::Flush(tx) = o {
                    let _ = tx.send(());
                }
            }
        }
    }

    async fn send_batch(&self, batch: &[Outgoing]) -> redis::RedisResult<()> {
        let mut c = self.conn().map_err(|e| redis::RedisError::from(std::io::Error::other(e.to_string())))?;
        // Runs of events go in one script call; releases and flushes keep their place.
        let mut events: Vec<&Outgoing> = Vec::new();
        for o in batch {
            match o {
                Outgoing::Event { .. } | Outgoing::ListChanged => events.push(o),
                Outgoing::Release { session, token } => {
                    self.publish_events(&mut c, &events).await?;
                    events.clear();
                    let _: i64 = scripts::release()
                        .key(Self::lease_key(session))
                        .arg(token)
                        .invoke_async(&mut c)
                        .await?;
                }
                Outgoing::Flush(_) => {}
            }
        }
        self.publish_events(&mut c, &events).await?;
        Ok(())
    }

    async fn publish_events(&self, c: &mut ConnectionManager, events: &[&Outgoing]) -> redis::RedisResult<()> {
        if events.is_empty() {
            return Ok(());
        }
        let limits = self.local_log.get().map(|l| l.limits()).unwrap_or_default();
        let mut inv = scripts::publish().prepare_invoke();
        inv.arg(PREFIX)
            .arg(self.node_id())
            .arg(limits.max_events)
            .arg(limits.max_bytes)
            .arg(LOG_TTL_SECS)
            .arg(BUS_LENGTH)
            .arg(self.config.lease_ttl.as_millis() as u64);
        for o in events {
            match o {
                Outgoing::Event { session, token, seq, epoch, name, payload, runtime } => {
                    inv.arg(session).arg(token).arg(seq).arg(epoch).arg(*name).arg(payload).arg(runtime);
                }
                _ => {
                    inv.arg("").arg("").arg(0).arg("").arg("sessions:changed").arg("null").arg("");
                }
            }
        }
        let answer: Value = inv.invoke_async(c).await?;
        for (o, r) in events.iter().zip(redis_io::array(&answer)) {
            if let Outgoing::Event { session, seq, .. } = o {
                match redis_io::int(r) {
                    Some(0) => self.lost(session),
                    Some(-1) => tracing::debug!(session_id = %session, seq, "event already in the shared log"),
                    _ => {}
                }
            }
        }
        Ok(())
    }

    /// Follow the bus (other nodes' events) and this node's inbox (forwarded requests and
    /// their answers), from the ids they ended at when the node started.
    pub(super) async fn read_loop(self: Arc<Self>, mut conn: ConnectionManager, start: [String; 2]) {
        let [mut bus_id, mut inbox_id] = start;
        let (bus_key, inbox_key) = (self.bus_key(), self.inbox_key(self.node_id()));
        let mut pause = Duration::from_millis(50);
        loop {
            let answer: redis::RedisResult<Value> = redis::cmd("XREAD")
                .arg("COUNT")
                .arg(BATCH)
                .arg("BLOCK")
                .arg(2000)
                .arg("STREAMS")
                .arg(&bus_key)
                .arg(&inbox_key)
                .arg(&bus_id)
                .arg(&inbox_id)
                .query_async(&mut conn)
                .await;
            let answer = match answer {
                Ok(a) => a,
                Err(e) => {
                    self.set_redis_up(false);
                    tracing::debug!(error = %e, "reading the cluster bus failed; retrying");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(2));
                    continue;
                }
            };
            pause = Duration::from_millis(50);
            self.set_redis_up(true);
            for (key, entries) in redis_io::streams(&answer) {
                let Some(last) = entries.last().map(|e| e.id.clone()) else { continue };
                if key == bus_key {
                    for e in &entries {
                        self.deliver(e);
                    }
                    bus_id = last;
                } else if key == inbox_key {
                    for e in entries {
                        self.clone().on_inbox(e);
                    }
                    inbox_id = last;
                }
            }
        }
    }

    /// Hand another node's event to this node's bus.
    fn deliver(&self, e: &redis_io::Entry) {
        if e.text("n") == self.node_id() {
            return;
        }
        let Some(bus) = self.bus.get() else { return };
        let session = e.text("s");
        if session.is_empty() {
            if e.text("e") == "sessions:changed" {
                bus.emit_remote(DomainEvent { remote: true, ..DomainEvent::sessions_changed() });
            }
            return;
        }
        // Ours now: what the previous holder published is in the log already.
        if self.holds(session) {
            return;
        }
        let Some(name) = static_name(e.text("e")) else { return };
        let Ok(payload) = serde_json::from_slice::<Json>(e.get("p").unwrap_or_default()) else { return };
        let unloaded = name == "session:status" && payload["runtime"]["isLoaded"] == Json::Bool(false);
        bus.emit_remote(DomainEvent { name, session_id: Some(session.to_string()), payload, remote: true });
        if unloaded {
            // Its copy here goes with it; the shared log keeps it for replay.
            if let Some(l) = self.local_log.get() {
                l.forget(session);
            }
        }
    }

    /// The runtime state of each of `ids` held by some node, for the session list: what its
    /// holder last published (a session not yet started: loaded, no sandbox), with
    /// `ownerNodeId` the holder now.
    pub async fn runtime_states(&self, ids: &[String]) -> crate::error::Result<std::collections::HashMap<String, Json>> {
        let mut out = std::collections::HashMap::new();
        if ids.is_empty() {
            return Ok(out);
        }
        let mut pipe = redis::pipe();
        pipe.cmd("MGET").arg(ids.iter().map(|id| Self::lease_key(id)).collect::<Vec<_>>());
        pipe.cmd("HMGET").arg(format!("{PREFIX}runtime")).arg(ids);
        let pipe = &pipe;
        let (leases, states): (Vec<Option<String>>, Vec<Option<String>>) =
            self.with_conn(|mut c| async move { pipe.query_async(&mut c).await }).await.map_err(|e| self.unavailable(e))?;
        for ((id, lease), state) in ids.iter().zip(leases).zip(states) {
            let Some(owner) = lease.as_deref().map(super::node_of) else { continue };
            let mut runtime = state
                .and_then(|s| serde_json::from_str::<Json>(&s).ok())
                .unwrap_or_else(|| serde_json::json!({ "isLoaded": true, "sandbox": null }));
            runtime["ownerNodeId"] = Json::from(owner);
            out.insert(id.clone(), runtime);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn a_read_of_the_shared_log_decodes_to_the_events_as_numbered() {
        let p1 = r#"{"sessionId":"s","eventId":"ep-7","seq":7}"#;
        let answer = [bulk("ep"), Value::Int(8), Value::Int(0), bulk("session:status"), bulk(p1), bulk("session:made:up"), bulk(r#"{"eventId":"ep-8","seq":8}"#)];
        let read = decode_read(&answer);
        assert!(!read.reset);
        assert_eq!(read.last_event_id.as_deref(), Some("ep-8"));
        assert_eq!(read.events.iter().map(|e| (e.seq, e.event)).collect::<Vec<_>>(), [(7, "session:status"), (8, "session:made:up")]);
        let reset = decode_read(&[bulk(""), Value::Int(0), Value::Int(1)]);
        assert!(reset.reset && reset.last_event_id.is_none() && reset.events.is_empty());
    }

    #[test]
    fn names_from_redis_are_bounded_to_session_events() {
        assert_eq!(static_name("session:status"), Some("session:status"));
        assert_eq!(static_name("session:queue:changed"), static_name("session:queue:changed"));
        assert_eq!(static_name("evil"), None);
        assert_eq!(static_name(&format!("session:{}", "x".repeat(100))), None);
    }
}
