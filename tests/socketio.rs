//! The Socket.IO server spoken to over Engine.IO long-polling, as socket.io-client does, with
//! no Node in the loop: handshake, connect, join with ack, events to the room only.

use std::sync::Arc;

use agent_runtime::persistence::memory::MemoryAdapter;
use agent_runtime::session::CreateSessionArgs;
use agent_runtime::transport::socketio::{start, RealtimeOptions, RealtimeService};
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
    assert!(got.contains(r#"432[{"error":"Session not found","success":false}]"#), "{got}");

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

#[tokio::test]
async fn a_client_that_stops_reading_is_disconnected_and_others_keep_receiving() {
    let rt = AgentRuntime::new(RuntimeOptions::default(), Arc::new(MemoryAdapter::with_profile("p")));
    let a = rt
        .sessions
        .create_session(CreateSessionArgs {
            agent_profile_ref: "p".into(),
            architecture: Some(agent_runtime::agent::Architecture::ClaudeAgentSdk),
            ..Default::default()
        })
        .await
        .unwrap();
    let realtime = start(rt.clone(), &RealtimeOptions { max_buffered_packets: 8, ..Default::default() });
    let svc = realtime.service.clone();
    let slow = Client::connect(&svc).await;
    let fast = Client::connect(&svc).await;
    for (n, c) in [(1, &slow), (2, &fast)] {
        c.send(&format!(r#"42{n}["session:join","{}"]"#, a.session_id)).await;
        c.poll_until(&format!("43{n}")).await;
    }
    assert_eq!(realtime.io.sockets().len(), 2);
    for i in 0..20 {
        let opts = serde_json::json!({ "model": format!("m{i}") }).as_object().unwrap().clone();
        a.update_session_options(opts).await.unwrap();
        fast.poll_until(&format!("\"m{i}\"")).await;
    }
    // Its buffer held what it could; once it reads, it gets the disconnect.
    let backlog = slow.poll().await;
    let held = backlog.matches("session:options:update").count();
    assert!(held <= 8, "bounded by the buffer: {held}");
    let gone = async {
        while realtime.io.sockets().len() != 1 {
            let _ = slow.poll().await; // long-poll: returns when the server sends or closes
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(10), gone).await.expect("slow client disconnected");
}
