//! Server-Sent Events: `GET /api/sessions/{id}/events/stream`. A session's stream events as
//! `id:` / `event:` / `data:` frames, first the logged ones after `Last-Event-ID` (or `?since=`),
//! then live ones, with no gap and no repeat; a comment every 15 s keeps proxies from closing an
//! idle stream.
//!
//! One bus subscription per REST server feeds every open stream: each has its own byte-bounded
//! outbox, so a client that falls more than the bound behind is ended (an `error` event with
//! `code: "slow_consumer"`) instead of holding the others up or growing memory; it reconnects
//! with its last id and loses nothing the log still holds. A stream ends when its session
//! unloads (its ids then read as unknown: the reconnect gets `reset`). Dropping the body (the
//! client went away) takes the stream out at once.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use bytes::Bytes;
use futures::Stream;
use serde_json::{json, Value};

use super::outbox::Outbox;
use crate::events::{DomainEvent, EventBus, Subscription};
use crate::sync::Locked as _;

/// Bytes that may wait for one stream before it is ended as too slow (as Socket.IO's default).
pub const DEFAULT_MAX_BUFFERED_BYTES: usize = 16 * 1024 * 1024;
/// Events one read of the log replays.
const REPLAY_PAGE: usize = 500;
/// How often an idle stream gets a comment line.
pub const HEARTBEAT: Duration = Duration::from_secs(15);

/// The open streams of one REST server.
pub struct Streams {
    bus: EventBus,
    open: Mutex<HashMap<String, Vec<Arc<Entry>>>>,
    next_id: AtomicU64,
    max_buffered_bytes: usize,
    heartbeat: Duration,
    _subscription: Subscription,
}

struct Entry {
    id: u64,
    outbox: Outbox<Bytes>,
    /// Ended for falling behind (its outbox was dropped): the client is told why.
    slow: AtomicBool,
}

impl Streams {
    pub fn new(bus: &EventBus, max_buffered_bytes: usize) -> Arc<Self> {
        Self::with_heartbeat(bus, max_buffered_bytes, HEARTBEAT)
    }

    pub fn with_heartbeat(bus: &EventBus, max_buffered_bytes: usize, heartbeat: Duration) -> Arc<Self> {
        Arc::new_cyclic(|me: &Weak<Self>| {
            let me = me.clone();
            let subscription = bus.subscription(move |e| {
                if let Some(s) = me.upgrade() {
                    s.dispatch(e);
                }
            });
            Self {
                bus: bus.clone(),
                open: Mutex::default(),
                next_id: AtomicU64::new(1),
                max_buffered_bytes,
                heartbeat,
                _subscription: subscription,
            }
        })
    }

    /// Streams open now (all sessions).
    pub fn open_count(&self) -> usize {
        self.open.locked().values().map(Vec::len).sum()
    }

    /// Runs on the emitter's thread in `seq` order: it only formats once and queues.
    fn dispatch(&self, e: &DomainEvent) {
        if !e.is_stream_event() {
            return;
        }
        let Some(id) = e.session_id.as_deref() else { return };
        let open = self.open.locked();
        let Some(entries) = open.get(id) else { return };
        let frame = frame(e.name, &e.payload);
        // The unload's status is the session's last event: deliver it, then end.
        let unloaded = e.name == "session:status" && e.payload.pointer("/runtime/isLoaded") == Some(&json!(false));
        for entry in entries {
            if entry.outbox.push(frame.clone()).is_err() && !entry.outbox.is_closed() {
                tracing::warn!(
                    session_id = id,
                    limit = self.max_buffered_bytes,
                    "ending an event stream too slow to take its events"
                );
                entry.slow.store(true, Ordering::Relaxed);
                entry.outbox.close();
            }
            if unloaded {
                entry.outbox.finish();
            }
        }
    }

    /// Open a stream of session `id`: with `since`, the logged events after it first (or a
    /// `reset` event when the log does not know it); without, live events from now.
    pub fn open(self: &Arc<Self>, id: &str, since: Option<&str>) -> impl Stream<Item = Result<Bytes, std::io::Error>> {
        let entry = Arc::new(Entry {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            outbox: Outbox::new(self.max_buffered_bytes),
            slow: AtomicBool::new(false),
        });
        let guard = Registered { streams: Arc::downgrade(self), session: id.to_string(), entry };
        let mut pump = Pump {
            // Sets the reconnect delay and gets the headers through proxies at once.
            first: [Bytes::from_static(b"retry: 2000\n\n")].into(),
            cursor: since.map(str::to_string),
            guard,
            tick: None,
            heartbeat: self.heartbeat,
            done: false,
            lag_tries: 0,
        };
        if pump.cursor.is_none() {
            self.go_live(&mut pump);
        }
        futures::stream::unfold(pump, Pump::next)
    }

    /// Replay the stream's next page of the log; the last one is read under the bus's order
    /// lock and the stream joins the live events there, so they meet with no gap or repeat.
    /// Pages are read only as the client takes them: a long backlog is never all in memory.
    async fn catch_up(&self, pump: &mut Pump) {
        let Some(cursor) = pump.cursor.clone() else { return };
        let session = pump.guard.session.clone();
        let read = self.bus.log().read_durable(&session, Some(&cursor), REPLAY_PAGE).await;
        if read.reset {
            reset_frame(pump, &session, read.last_event_id);
            pump.cursor = None;
            self.go_live(pump);
            return;
        }
        if let Some(last) = read.events.last() {
            pump.cursor = Some(last.event_id.clone());
            pump.first.extend(read.events.iter().map(|e| frame(e.event, &e.payload)));
            if read.events.len() == REPLAY_PAGE {
                return;
            }
        }
        if !self.go_live(pump) {
            // In a cluster this node's copy of the events lags Redis: give it a moment, then
            // tell the client to start over rather than wait forever.
            pump.lag_tries += 1;
            if pump.lag_tries > 2000 {
                reset_frame(pump, &session, read.last_event_id);
                pump.cursor = None;
                self.go_live(pump);
            } else {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    }

    /// Under the order lock: what is left after the cursor, then membership of the live stream.
    /// False (nothing done) when this process cannot tell yet what follows the cursor.
    fn go_live(&self, pump: &mut Pump) -> bool {
        let session = pump.guard.session.clone();
        let _order = self.bus.hold_order();
        if let Some(cursor) = pump.cursor.as_deref() {
            let Some(read) = self.bus.log().read_tail(&session, Some(cursor), usize::MAX) else {
                return false;
            };
            if read.reset {
                // Unknown, too old, or dropped from the log while the client caught up.
                reset_frame(pump, &session, read.last_event_id.clone());
            }
            pump.first.extend(read.events.iter().map(|e| frame(e.event, &e.payload)));
            pump.cursor = None;
        }
        self.open.locked().entry(session).or_default().push(pump.guard.entry.clone());
        true
    }

    fn close(&self, session: &str, entry_id: u64) {
        let mut open = self.open.locked();
        if let Some(list) = open.get_mut(session) {
            list.retain(|e| e.id != entry_id);
            if list.is_empty() {
                open.remove(session);
            }
        }
    }
}

/// Takes the stream out of [`Streams`] when the body is dropped.
struct Registered {
    streams: Weak<Streams>,
    session: String,
    entry: Arc<Entry>,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.entry.outbox.close();
        if let Some(s) = self.streams.upgrade() {
            s.close(&self.session, self.entry.id);
        }
    }
}

struct Pump {
    /// Frames to send before anything from the outbox.
    first: std::collections::VecDeque<Bytes>,
    /// Catching up: the last id replayed (not yet in the live stream).
    cursor: Option<String>,
    guard: Registered,
    tick: Option<tokio::time::Interval>,
    heartbeat: Duration,
    done: bool,
    /// Tries to go live while this process's copy of the log lagged (cluster).
    lag_tries: u32,
}

impl Pump {
    async fn next(mut self) -> Option<(Result<Bytes, std::io::Error>, Self)> {
        while self.first.is_empty() && self.cursor.is_some() {
            match self.guard.streams.upgrade() {
                Some(streams) => streams.catch_up(&mut self).await,
                None => return None, // the server is gone
            }
        }
        if let Some(f) = self.first.pop_front() {
            return Some((Ok(f), self));
        }
        if self.done {
            return None;
        }
        let heartbeat = self.heartbeat;
        let tick = self.tick.get_or_insert_with(|| {
            let mut t = tokio::time::interval_at(tokio::time::Instant::now() + heartbeat, heartbeat);
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            t
        });
        let entry = &self.guard.entry;
        tokio::select! {
            item = entry.outbox.next() => match item {
                Some(f) => Some((Ok(f), self)),
                None => {
                    self.done = true;
                    if entry.slow.load(Ordering::Relaxed) {
                        Some((Ok(slow_consumer_frame(&self.guard.session)), self))
                    } else {
                        None
                    }
                }
            },
            _ = tick.tick() => Some((Ok(Bytes::from_static(b": keep-alive\n\n")), self)),
        }
    }
}

fn reset_frame(pump: &mut Pump, session: &str, last_event_id: Option<String>) {
    let body = json!({ "sessionId": session, "reset": true, "lastEventId": last_event_id });
    pump.first.push_back(Bytes::from(format!("event: reset\ndata: {body}\n\n")));
}

fn slow_consumer_frame(session: &str) -> Bytes {
    let body = json!({
        "sessionId": session,
        "message": "Too slow to take this session's events: reconnect with Last-Event-ID to resume",
        "code": "slow_consumer",
        "reason": "slow_consumer",
    });
    Bytes::from(format!("event: error\ndata: {body}\n\n"))
}

/// One event as an SSE frame. JSON written compactly has no line breaks, so `data:` is one line.
fn frame(name: &str, payload: &Value) -> Bytes {
    let data = payload.to_string();
    let mut out = String::with_capacity(data.len() + name.len() + 48);
    if let Some(id) = payload.get("eventId").and_then(Value::as_str) {
        out.push_str("id: ");
        out.push_str(id);
        out.push('\n');
    }
    out.push_str("event: ");
    out.push_str(name);
    out.push_str("\ndata: ");
    out.push_str(&data);
    out.push_str("\n\n");
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    fn delta(bus: &EventBus, session: &str, text: &str) {
        bus.emit(DomainEvent {
            name: "session:block:delta",
            session_id: Some(session.into()),
            payload: json!({ "sessionId": session, "delta": text }),
            remote: false,
        });
    }

    async fn frames(s: &mut (impl Stream<Item = Result<Bytes, std::io::Error>> + Unpin), n: usize) -> Vec<String> {
        let mut out = vec![];
        while out.len() < n {
            let f = s.next().await.expect("a frame").unwrap();
            out.push(String::from_utf8(f.to_vec()).unwrap());
        }
        out
    }

    #[tokio::test]
    async fn resumes_after_an_id_then_streams_live() {
        let bus = EventBus::new();
        let streams = Streams::new(&bus, DEFAULT_MAX_BUFFERED_BYTES);
        for w in ["a", "b", "c"] {
            delta(&bus, "s", w);
        }
        let first = bus.log().read_since("s", None, 1).events[0].event_id.clone();
        let mut s = Box::pin(streams.open("s", Some(&first)));
        delta(&bus, "s", "d");
        delta(&bus, "other", "x");
        let got = frames(&mut s, 4).await;
        assert_eq!(got[0], "retry: 2000\n\n");
        assert!(got[1].starts_with(&format!(
            "id: {}-2\nevent: session:block:delta\ndata: {{",
            first.rsplit_once('-').unwrap().0
        )));
        assert!(
            got[1].contains(r#""delta":"b""#) && got[2].contains(r#""delta":"c""#) && got[3].contains(r#""delta":"d""#)
        );
        assert!(got[3].ends_with("\"seq\":4}\n\n"), "{}", got[3]);
        assert_eq!(streams.open_count(), 1);
        drop(s);
        assert_eq!(streams.open_count(), 0, "a dropped body leaves nothing behind");
    }

    #[tokio::test]
    async fn an_unknown_id_says_reset() {
        let bus = EventBus::new();
        let streams = Streams::new(&bus, DEFAULT_MAX_BUFFERED_BYTES);
        delta(&bus, "s", "a");
        let mut s = Box::pin(streams.open("s", Some("nope-3")));
        let got = frames(&mut s, 2).await;
        assert!(got[1].starts_with("event: reset\ndata: "), "{}", got[1]);
        assert!(got[1].contains(r#""reset":true"#));
    }

    #[tokio::test]
    async fn a_slow_stream_is_ended_with_a_reason_and_its_id_still_resumes() {
        let bus = EventBus::new();
        let streams = Streams::new(&bus, 1000);
        let mut s = Box::pin(streams.open("s", None));
        frames(&mut s, 1).await;
        delta(&bus, "s", "first");
        let seen = frames(&mut s, 1).await.remove(0);
        let last_id = seen.lines().next().unwrap().strip_prefix("id: ").unwrap().to_string();
        for _ in 0..50 {
            delta(&bus, "s", &"x".repeat(100));
        }
        let end = frames(&mut s, 1).await.remove(0);
        assert!(end.starts_with("event: error\n") && end.contains(r#""code":"slow_consumer""#), "{end}");
        assert!(s.next().await.is_none(), "then the stream ends");
        let mut again = Box::pin(streams.open("s", Some(&last_id)));
        let got = frames(&mut again, 51).await;
        assert_eq!(got.iter().filter(|f| f.contains("xxxx")).count(), 50, "nothing lost");
    }

    #[tokio::test]
    async fn a_long_backlog_is_replayed_page_by_page_and_meets_live_events() {
        let bus = EventBus::new();
        let streams = Streams::new(&bus, 10_000);
        for i in 0..1200 {
            delta(&bus, "s", &i.to_string());
        }
        let first = bus.log().read_since("s", None, 1).events[0].event_id.clone();
        let mut s = Box::pin(streams.open("s", Some(&first)));
        let mut seqs = vec![];
        let mut frames_read = 0;
        while seqs.last() != Some(&1300) {
            let f = frames(&mut s, 1).await.remove(0);
            frames_read += 1;
            if frames_read == 300 {
                // Live events while the stream is still catching up (and beyond its bound of
                // 10 kB, which the replay must not count against it).
                assert_eq!(streams.open_count(), 0, "not live yet");
                for i in 0..100 {
                    delta(&bus, "s", &format!("live {i}"));
                }
            }
            if let Some(seq) = f.split("\"seq\":").nth(1) {
                seqs.push(seq.trim_end_matches("}\n\n").parse::<u64>().unwrap());
            }
        }
        assert_eq!(seqs, (2..=1300).collect::<Vec<_>>());
        assert_eq!(streams.open_count(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_stream_gets_a_heartbeat() {
        let bus = EventBus::new();
        let streams = Streams::new(&bus, DEFAULT_MAX_BUFFERED_BYTES);
        let mut s = Box::pin(streams.open("s", None));
        frames(&mut s, 1).await;
        assert_eq!(frames(&mut s, 1).await[0], ": keep-alive\n\n");
    }

    #[tokio::test]
    async fn an_unloaded_session_ends_its_streams() {
        let bus = EventBus::new();
        let streams = Streams::new(&bus, DEFAULT_MAX_BUFFERED_BYTES);
        let mut s = Box::pin(streams.open("s", None));
        bus.emit(DomainEvent::status("s", &crate::session::RuntimeState::UNLOADED));
        let got = frames(&mut s, 2).await;
        assert!(got[1].contains("event: session:status"));
        assert!(s.next().await.is_none());
    }
}
