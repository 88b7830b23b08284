//! The Socket.IO server spoken to over Engine.IO long-polling, as socket.io-client does, with
//! no Node in the loop: handshake, connect, join with ack, events to the room only.

use std::sync::Arc;

use agent_runtime::persistence::memory::MemoryAdapter;
use agent_runtime::session::CreateSessionArgs;
use agent_runtime::transport::access::{Authorizer, Handshake, Origins};
use agent_runtime::transport::rest::PlainRequest;
use agent_runtime::transport::socketio::{handle_polling, start, RealtimeOptions, RealtimeService};
use agent_runtime::{AgentRuntime, RuntimeOptions};
use http_body_util::{BodyExt, Full};
use serde_json::Value;
use tower::ServiceExt;

async fn request(svc: &RealtimeService, method: &str, uri: &str, body: &str) -> (u16, String) {
    let req =
        http::Request::builder().method(method).uri(uri).body(Full::new(bytes::Bytes::from(body.to_string()))).unwrap();
    let res = svc.clone().oneshot(req).await.unwrap();
    let status = res.status().as_u16();
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

struct Client {
    svc: RealtimeService,
    sid: String,
}

impl Client {
    async fn connect(svc: &RealtimeService) -> Client {
        let (st, open) = request(svc, "GET", "/socket.io/?EIO=4&transport=polling", "").await;
        assert_eq!(st, 200, "{open}");
        assert!(open.starts_with('0'), "{open}");
        let sid = serde_json::from_str::<Value>(&open[1..]).unwrap()["sid"].as_str().unwrap().to_string();
        let c = Client { svc: svc.clone(), sid };
        c.send("40").await;
        let connected = c.poll().await;
        assert!(connected.starts_with("40"), "{connected}");
        c
    }
    fn uri(&self) -> String {
        format!("/socket.io/?EIO=4&transport=polling&sid={}", self.sid)
    }
    async fn send(&self, packet: &str) {
        let (st, body) = request(&self.svc, "POST", &self.uri(), packet).await;
        assert_eq!((st, body.as_str()), (200, "ok"));
    }
    /// One long-poll: the packets the server had queued (separated by 0x1e).
    async fn poll(&self) -> String {
        request(&self.svc, "GET", &self.uri(), "").await.1
    }
    async fn poll_until(&self, needle: &str) -> String {
        let mut all = String::new();
        for _ in 0..10 {
            all.push_str(&self.poll().await);
            if all.contains(needle) {
                return all;
            }
        }
        panic!("never saw {needle} in {all}");
    }
}

#[tokio::test]
async fn join_ack_status_and_room_scoped_events() {
    let rt = AgentRuntime::new(RuntimeOptions::default(), Arc::new(MemoryAdapter::with_profile("p")));
    let args = |_: ()| CreateSessionArgs {
        agent_profile_ref: "p".into(),
        architecture: Some(agent_runtime::agent::Architecture::ClaudeAgentSdk),
        ..Default::default()
    };
    let a = rt.sessions.create_session(args(())).await.unwrap();
    let b = rt.sessions.create_session(args(())).await.unwrap();
    let realtime = start(rt.clone(), &RealtimeOptions::default());
    let svc = realtime.service.clone();

    let alice = Client::connect(&svc).await;
    let bob = Client::connect(&svc).await;
    alice.send(&format!(r#"420["session:join","{}"]"#, a.session_id)).await;
    let got = alice.poll_until("430").await;
    assert!(got.contains(r#"42["session:status",{"#), "{got}");
    assert!(got.contains(r#"430[{"success":true}]"#), "{got}");
    bob.send(&format!(r#"421["session:join","{}"]"#, b.session_id)).await;
    bob.poll_until("431").await;

    bob.send(r#"422["session:join","no-such-session"]"#).await;
    let got = bob.poll_until("432").await;
    assert!(got.contains(r#"432[{"success":false,"error":"Session not found"}]"#), "{got}");

    // An event of session A reaches A's room only.
    let opts = serde_json::json!({"model": "m"}).as_object().unwrap().clone();
    a.update_session_options(opts).await.unwrap();
    let got = alice.poll_until("session:options:update").await;
    assert!(got.contains(&a.session_id));
    b.update_session_options(Default::default()).await.unwrap();
    let got = bob.poll_until("session:options:update").await;
    assert!(got.contains(&b.session_id) && !got.contains(&a.session_id), "{got}");

    // sessions:list goes to everyone on a list change.
    rt.sessions.unload_session(&b.session_id).await.unwrap();
    let got = alice.poll_until("sessions:list").await;
    assert!(got.contains(r#"42["sessions:list",["#), "{got}");

    alice.send(&format!(r#"423["session:leave","{}"]"#, a.session_id)).await;
    assert!(alice.poll_until("433").await.contains(r#"433[{"success":true}]"#));
}

#[tokio::test]
async fn malformed_packets_do_not_take_the_server_down() {
    let rt = AgentRuntime::new(RuntimeOptions::default(), Arc::new(MemoryAdapter::with_profile("p")));
    let realtime = start(rt.clone(), &RealtimeOptions::default());
    let svc = realtime.service.clone();
    let c = Client::connect(&svc).await;
    // Garbage, an unknown event, a join without an ack, a join with a non-string id.
    for p in ["4zzz", r#"42["no:such:event",1]"#, r#"42["session:join","x"]"#, r#"425["session:join",5]"#] {
        let _ = request(&svc, "POST", &c.uri(), p).await;
    }
    let (st, _) = request(&svc, "GET", "/socket.io/?EIO=4&transport=polling&sid=unknown", "").await;
    assert_eq!(st, 400);
    // The server still serves new clients.
    Client::connect(&svc).await;
}

fn new_runtime() -> (Arc<AgentRuntime>, Arc<MemoryAdapter>) {
    let adapter = Arc::new(MemoryAdapter::with_profile("p"));
    (AgentRuntime::new(RuntimeOptions::default(), adapter.clone()), adapter)
}

async fn new_session(rt: &AgentRuntime) -> Arc<agent_runtime::session::AgentSession> {
    rt.sessions
        .create_session(CreateSessionArgs {
            agent_profile_ref: "p".into(),
            architecture: Some(agent_runtime::agent::Architecture::ClaudeAgentSdk),
            ..Default::default()
        })
        .await
        .unwrap()
}

/// A session option whose value is `bytes` long, so each event has a known size.
fn big_options(tag: usize, bytes: usize) -> serde_json::Map<String, Value> {
    serde_json::json!({ "model": format!("m{tag}-{}", "x".repeat(bytes)) }).as_object().unwrap().clone()
}

#[tokio::test]
async fn a_client_that_stops_reading_is_disconnected_after_its_byte_budget_and_others_keep_receiving() {
    let (rt, _) = new_runtime();
    let a = new_session(&rt).await;
    const BUDGET: usize = 64 * 1024;
    const EVENT: usize = 4 * 1024;
    const WINDOW: usize = 16; // packets the engine holds beyond the outbox
    let opts = RealtimeOptions { max_buffered_packets: WINDOW, max_buffered_bytes: BUDGET, ..Default::default() };
    let realtime = start(rt.clone(), &opts);
    let svc = realtime.service.clone();
    let slow = Client::connect(&svc).await;
    let fast = Client::connect(&svc).await;
    for (n, c) in [(1, &slow), (2, &fast)] {
        c.send(&format!(r#"42{n}["session:join","{}"]"#, a.session_id)).await;
        c.poll_until(&format!("43{n}")).await;
    }
    assert_eq!(realtime.io.sockets().len(), 2);
    let in_room = || realtime.io.to(format!("session:{}", a.session_id)).sockets().len();
    // Well under the budget (plus the engine's window): the slow client is kept.
    let under = BUDGET / EVENT / 2;
    for i in 0..under {
        a.update_session_options(big_options(i, EVENT)).await.unwrap();
        fast.poll_until(&format!("\"m{i}-")).await;
    }
    assert_eq!(in_room(), 2, "a client within its byte budget stays");
    // Past budget + window: it is dropped; the fast client gets every event.
    let total = (BUDGET / EVENT) + WINDOW + 4;
    for i in under..total {
        a.update_session_options(big_options(i, EVENT)).await.unwrap();
        fast.poll_until(&format!("\"m{i}-")).await;
    }
    assert_eq!(in_room(), 1, "the slow client left the room once over its byte budget");
    let gone = async {
        while realtime.io.sockets().len() != 1 {
            let _ = slow.poll().await; // long-poll: returns when the server sends or closes
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(10), gone).await.expect("slow client disconnected");
}

#[tokio::test]
async fn a_closed_server_leaves_the_event_bus_and_stops_listing_sessions() {
    let (rt, adapter) = new_runtime();
    let before = rt.events.subscriber_count();
    let realtime = start(rt.clone(), &RealtimeOptions::default());
    assert_eq!(rt.events.subscriber_count(), before + 1);
    let c = Client::connect(&realtime.service).await;
    new_session(&rt).await;
    c.poll_until("sessions:list").await;
    realtime.close();
    assert_eq!(rt.events.subscriber_count(), before, "close() removes the bridge from the bus");
    let lists = || adapter.calls().iter().filter(|c| *c == "listAllSessions").count();
    let seen = lists();
    new_session(&rt).await;
    rt.events.emit(agent_runtime::DomainEvent::sessions_changed());
    // The list task ends on close; let any (wrongly) remaining one run before counting.
    for _ in 0..50 {
        tokio::task::yield_now().await;
    }
    assert_eq!(lists(), seen, "no listAllSessions from a closed server");
    // Dropping an unclosed server lets go of the bus too.
    let other = start(rt.clone(), &RealtimeOptions::default());
    drop(other);
    assert_eq!(rt.events.subscriber_count(), before);
}

/// An authorizer as a backend would write one: user `alice` may watch `allowed` only; the
/// list goes to admins.
struct Tenants {
    allowed: String,
}

#[async_trait::async_trait]
impl Authorizer for Tenants {
    async fn join(&self, h: &Handshake, session_id: &str) -> Result<bool, String> {
        match h.auth.get("user").and_then(Value::as_str) {
            Some("alice") => Ok(session_id == self.allowed),
            Some("hangs") => std::future::pending().await,
            Some("throws") => Err("backend exploded".into()),
            _ => Ok(false),
        }
    }
    async fn list(&self, h: &Handshake) -> Result<bool, String> {
        Ok(h.auth.get("role").and_then(Value::as_str) == Some("admin") && h.query.contains_key("EIO"))
    }
}

impl Client {
    async fn connect_with(svc: &RealtimeService, auth: &str) -> Client {
        let (_, open) = request(svc, "GET", "/socket.io/?EIO=4&transport=polling", "").await;
        let sid = serde_json::from_str::<Value>(&open[1..]).unwrap()["sid"].as_str().unwrap().to_string();
        let c = Client { svc: svc.clone(), sid };
        c.send(&format!("40{auth}")).await;
        assert!(c.poll().await.starts_with("40"));
        c
    }
}

#[tokio::test]
async fn authorize_decides_joins_and_who_gets_the_session_list() {
    let (rt, _) = new_runtime();
    let mine = new_session(&rt).await;
    let theirs = new_session(&rt).await;
    let opts = RealtimeOptions {
        authorizer: Some(Arc::new(Tenants { allowed: mine.session_id.clone() })),
        authorize_timeout: std::time::Duration::from_millis(200),
        ..Default::default()
    };
    let realtime = start(rt.clone(), &opts);
    let svc = realtime.service.clone();
    let alice = Client::connect_with(&svc, r#"{"user":"alice"}"#).await;
    let admin = Client::connect_with(&svc, r#"{"user":"bob","role":"admin"}"#).await;
    alice.send(&format!(r#"421["session:join","{}"]"#, theirs.session_id)).await;
    let got = alice.poll_until("431").await;
    assert!(got.contains(r#"431[{"success":false,"error":"Not authorized to join this session"}]"#), "{got}");
    alice.send(&format!(r#"422["session:join","{}"]"#, mine.session_id)).await;
    assert!(alice.poll_until("432").await.contains(r#"432[{"success":true}]"#));
    // A hanging and a failing callback deny (after the timeout), and the server carries on.
    for (n, who) in [(3, "hangs"), (4, "throws")] {
        let c = Client::connect_with(&svc, &format!(r#"{{"user":"{who}"}}"#)).await;
        c.send(&format!(r#"42{n}["session:join","{}"]"#, mine.session_id)).await;
        assert!(c.poll_until(&format!("43{n}")).await.contains("Not authorized"));
    }
    // Events of the denied session never reach alice; those of hers do.
    theirs.update_session_options(big_options(1, 8)).await.unwrap();
    mine.update_session_options(big_options(2, 8)).await.unwrap();
    let got = alice.poll_until("session:options:update").await;
    assert!(got.contains(&mine.session_id) && !got.contains(&theirs.session_id), "{got}");
    // sessions:list reaches the admin only.
    new_session(&rt).await;
    admin.poll_until("sessions:list").await;
    mine.update_session_options(big_options(3, 8)).await.unwrap();
    let got = alice.poll_until("\"m3-").await;
    assert!(!got.contains("sessions:list"), "{got}");
}

#[tokio::test]
async fn invalid_ids_disallowed_origins_and_host_paths() {
    let (rt, _) = new_runtime();
    let a = new_session(&rt).await;
    let opts =
        RealtimeOptions { allowed_origins: Origins::only(vec!["https://app.example".into()]), ..Default::default() };
    let realtime = start(rt.clone(), &opts);
    let c = Client::connect(&realtime.service).await;
    let long = "x".repeat(300);
    for (n, id) in [(1, "../../etc/passwd"), (2, long.as_str())] {
        c.send(&format!(r#"42{n}["session:join","{id}"]"#)).await;
        let got = c.poll_until(&format!("43{n}")).await;
        assert!(got.contains("Invalid session id"), "{got}");
    }
    // Polling from a page of another origin is refused; the allowed one and non-browser pass.
    let polling = |origin: Option<&str>| PlainRequest {
        method: "GET".into(),
        url: "/socket.io/?EIO=4&transport=polling".into(),
        headers: origin.map(|o| vec!["Origin".to_string(), o.to_string()]).unwrap_or_default(),
        body: Default::default(),
        oversized: false,
    };
    assert_eq!(handle_polling(&realtime, polling(Some("https://evil.example")), None).await.status, 403);
    assert_eq!(handle_polling(&realtime, polling(Some("https://app.example")), None).await.status, 200);
    assert_eq!(handle_polling(&realtime, polling(None), None).await.status, 200);
    // A session error naming host paths reaches clients without them.
    c.send(&format!(r#"423["session:join","{}"]"#, a.session_id)).await;
    c.poll_until("433").await;
    let root = rt.options.sandbox_root.display().to_string();
    let home = std::env::var("HOME").unwrap_or_default();
    let msg = format!("Runner exited: cannot open {root}/{}/workspace/x (home {home}/.claude)", a.session_id);
    rt.events.emit(agent_runtime::DomainEvent::error(&a.session_id, &msg, Some("RUNNER_FAILED")));
    let got = c.poll_until("RUNNER_FAILED").await;
    assert!(got.contains("<sandbox-root>/") && !got.contains(&root), "{got}");
    if home.matches('/').count() >= 2 {
        assert!(!got.contains(&format!("{home}/.claude")), "{got}");
    }
}
