//! Session manager and REST router against the in-memory adapter (no Node involved).

use std::sync::{Arc, Mutex};

use agent_runtime::persistence::memory::MemoryAdapter;
use agent_runtime::persistence::{PersistenceAdapter, SessionRecord, StoredSession, WorkspaceFile};
use agent_runtime::session::CreateSessionArgs;
use agent_runtime::transport::rest::{handle_plain, router, PlainRequest};
use agent_runtime::{AgentRuntime, RuntimeOptions};
use serde_json::{json, Value};

type Seen = Arc<Mutex<Vec<(String, Value)>>>;

fn runtime(adapter: Arc<MemoryAdapter>) -> (Arc<AgentRuntime>, Seen) {
    let rt = AgentRuntime::new(RuntimeOptions::default(), adapter);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    rt.events.subscribe(move |e| s.lock().unwrap().push((e.name.to_string(), e.payload.clone())));
    (rt, seen)
}

fn args(profile: &str) -> CreateSessionArgs {
    CreateSessionArgs {
        agent_profile_ref: profile.into(),
        architecture: Some(agent_runtime::agent::Architecture::ClaudeAgentSdk),
        ..Default::default()
    }
}

#[tokio::test]
async fn create_calls_adapter_in_reference_order() {
    let adapter = Arc::new(MemoryAdapter::with_profile("p"));
    adapter.profiles.lock().unwrap()[0].default_workspace_files =
        Some(vec![WorkspaceFile { path: "README.md".into(), content: Some("hi".into()) }]);
    let (rt, events) = runtime(adapter.clone());
    let s = rt.sessions.create_session(args("p")).await.unwrap();
    assert_eq!(
        adapter.calls(),
        ["loadAgentProfile", "createSessionRecord", "saveTranscript", "saveWorkspaceFile", "updateSessionRecord"]
    );
    let state: Value = serde_json::from_str(&s.state_json()).unwrap();
    assert_eq!(state["workspaceFiles"], json!([{"path": "README.md", "content": "hi"}]));
    assert_eq!(state["runtime"], json!({"isLoaded": true, "sandbox": null, "queue": [], "pendingRequests": []}));
    assert_eq!(events.lock().unwrap().iter().map(|e| e.0.as_str()).collect::<Vec<_>>(), ["sessions:changed"]);
}

#[tokio::test]
async fn unknown_profile_is_an_error_and_nothing_is_written() {
    let adapter = Arc::new(MemoryAdapter::with_profile("p"));
    let (rt, _) = runtime(adapter.clone());
    let err = rt.sessions.create_session(args("nope")).await.err().unwrap();
    assert_eq!(err.code(), "AGENT_PROFILE_NOT_FOUND");
    assert_eq!(adapter.calls(), ["loadAgentProfile"]);
}

fn stored(id: &str, transcript: Option<&str>) -> StoredSession {
    StoredSession {
        record: SessionRecord {
            session_id: id.into(),
            architecture: agent_runtime::agent::Architecture::ClaudeAgentSdk,
            session_options: None,
            agent_profile_reference: "p".into(),
            name: Some("named".into()),
            last_activity: Some(42),
            created_at: Some(7),
            metadata: None,
        },
        raw_transcript: transcript.map(str::to_string),
        workspace_files: vec![],
    }
}

#[tokio::test]
async fn concurrent_loads_share_one_adapter_call() {
    let adapter = Arc::new(MemoryAdapter::with_profile("p"));
    adapter
        .sessions
        .lock()
        .unwrap()
        .insert("s1".into(), stored("s1", Some(include_str!("fixtures/claude/combined-task.json"))));
    let (rt, events) = runtime(adapter.clone());
    let (a, b) = tokio::join!(rt.sessions.load_session("s1"), rt.sessions.load_session("s1"));
    assert!(Arc::ptr_eq(&a.unwrap(), &b.unwrap()));
    assert_eq!(adapter.calls(), ["loadSession", "loadAgentProfile"]);
    assert_eq!(events.lock().unwrap().len(), 1);
    let state: Value = serde_json::from_str(&rt.sessions.get("s1").unwrap().state_json()).unwrap();
    assert_eq!(state["blocks"].as_array().unwrap().len(), 11);
    assert_eq!(state["subagents"].as_array().unwrap().len(), 1);
    assert_eq!(state["lastActivity"], 42, "the persisted lastActivity is kept");
    assert_eq!(state["name"], "named");
}

#[tokio::test]
async fn unload_emits_status_then_list_change() {
    let adapter = Arc::new(MemoryAdapter::with_profile("p"));
    let (rt, events) = runtime(adapter.clone());
    let s = rt.sessions.create_session(args("p")).await.unwrap();
    events.lock().unwrap().clear();
    rt.sessions.unload_session(&s.session_id).await.unwrap();
    let ev = events.lock().unwrap().clone();
    assert_eq!(ev[0].0, "session:status");
    assert_eq!(ev[0].1["runtime"], json!({"isLoaded": false, "sandbox": null}));
    assert_eq!(ev[1].0, "sessions:changed");
    assert!(!rt.sessions.is_loaded(&s.session_id));
    assert_eq!(rt.sessions.unload_session(&s.session_id).await.unwrap_err().code(), "SESSION_NOT_FOUND");
}

#[tokio::test]
async fn options_update_persists_then_emits() {
    let adapter = Arc::new(MemoryAdapter::with_profile("p"));
    let (rt, events) = runtime(adapter.clone());
    let s = rt.sessions.create_session(args("p")).await.unwrap();
    let opts = json!({"model": "claude-opus"}).as_object().unwrap().clone();
    s.update_session_options(opts.clone()).await.unwrap();
    let stored = adapter.load_session(&s.session_id).await.unwrap().unwrap();
    assert_eq!(stored.record.session_options, Some(opts));
    let last = events.lock().unwrap().last().cloned().unwrap();
    assert_eq!(last.0, "session:options:update");
    assert_eq!(last.1["options"]["model"], "claude-opus");
}

async fn call(rt: &Arc<AgentRuntime>, method: &str, url: &str, body: &str, key: Option<&str>) -> (u16, Value) {
    let r = router(rt.clone(), "secret");
    let mut headers = vec!["content-type".to_string(), "application/json".to_string()];
    if let Some(k) = key {
        headers.extend(["authorization".to_string(), format!("Bearer {k}")]);
    }
    let req = PlainRequest {
        method: method.into(),
        url: url.into(),
        headers,
        body: body.to_string().into(),
        oversized: false,
    };
    let res = handle_plain(&r, rt.options.max_body_bytes, req).await;
    let v = serde_json::from_slice(&res.body).unwrap_or(Value::String(String::from_utf8_lossy(&res.body).into()));
    (res.status, v)
}

#[tokio::test]
async fn rest_routes_and_errors() {
    let adapter = Arc::new(MemoryAdapter::with_profile("p"));
    let (rt, _) = runtime(adapter);
    let k = Some("secret");
    assert_eq!(call(&rt, "GET", "http://h/health", "", None).await, (200, json!({"status": "ok"})));
    assert_eq!(call(&rt, "GET", "/api/sessions", "", None).await.0, 401);
    assert_eq!(call(&rt, "GET", "/api/sessions", "", Some("wrong")).await.1["code"], "INVALID_API_KEY");
    assert_eq!(call(&rt, "GET", "/api/unknown", "", None).await.0, 401, "auth runs before routing");
    assert_eq!(call(&rt, "GET", "/api/unknown", "", k).await, (404, json!("404 Not Found")));

    let (st, created) =
        call(&rt, "POST", "/api/sessions", r#"{"agentProfileRef":"p","architecture":"opencode"}"#, k).await;
    assert_eq!(st, 201);
    let id = created["sessionId"].as_str().unwrap().to_string();
    assert!(id.starts_with("ses_"));
    assert_eq!(created["sessionOptions"], json!({}));

    let (st, list) = call(&rt, "GET", "/sessions", "", k).await;
    assert_eq!(st, 200);
    assert_eq!(list["sessions"][0]["runtime"]["isLoaded"], true);

    let (st, b) = call(&rt, "POST", "/api/sessions", r#"{"architecture":"claude-agent-sdk"}"#, k).await;
    assert_eq!((st, b["code"].as_str()), (400, Some("INVALID_REQUEST")));
    assert!(b["error"].as_str().unwrap().contains("agentProfileRef"));

    let (st, b) =
        call(&rt, "PATCH", &format!("/api/sessions/{id}/options"), r#"{"sessionOptions":{"model":"m"}}"#, k).await;
    assert_eq!((st, b["sessionOptions"]["model"].as_str()), (200, Some("m")));
    assert_eq!(call(&rt, "POST", &format!("/api/sessions/{id}/sync"), "", k).await.0, 200);
    assert_eq!(call(&rt, "DELETE", &format!("/api/sessions/{id}"), "", k).await.0, 200);
    assert_eq!(call(&rt, "DELETE", &format!("/api/sessions/{id}"), "", k).await.0, 404);
    assert_eq!(call(&rt, "POST", &format!("/api/sessions/{id}/sync"), "", k).await.0, 404);
    // GET loads it again from persistence.
    assert_eq!(call(&rt, "GET", &format!("/api/sessions/{id}"), "", k).await.0, 200);
    assert_eq!(call(&rt, "GET", "/api/sessions/missing", "", k).await.1["code"], "SESSION_NOT_FOUND");
    assert_eq!(call(&rt, "PUT", "/api/sessions", "", k).await.0, 404, "wrong method is a 404 as in Hono");
}

#[tokio::test]
async fn rest_reports_unstored_sessions_and_refuses_after_shutdown() {
    let adapter = Arc::new(MemoryAdapter::with_profile("p"));
    let (rt, _) = runtime(adapter.clone());
    let k = Some("secret");
    let (_, created) =
        call(&rt, "POST", "/api/sessions", r#"{"agentProfileRef":"p","architecture":"opencode"}"#, k).await;
    let id = created["sessionId"].as_str().unwrap().to_string();
    // Storage fails: a sync cannot store the session, so its unload is refused, the session
    // stays, and /health says so.
    adapter.fail_writes.store(u32::MAX, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(call(&rt, "POST", &format!("/api/sessions/{id}/sync"), "", k).await.0, 500);
    let (st, b) = call(&rt, "DELETE", &format!("/api/sessions/{id}"), "", k).await;
    assert_eq!((st, b["code"].as_str()), (500, Some("SESSION_DESTROY_FAILED")), "{b}");
    assert!(rt.sessions.is_loaded(&id));
    let (st, health) = call(&rt, "GET", "/health", "", None).await;
    assert_eq!(st, 200);
    assert_eq!(health["status"], "degraded");
    assert_eq!(health["unstoredSessions"], 1);
    // Storage recovers; after shutdown every API route answers 503.
    adapter.fail_writes.store(0, std::sync::atomic::Ordering::SeqCst);
    assert!(rt.shutdown().await.is_empty());
    let (st, b) = call(&rt, "GET", "/api/sessions", "", k).await;
    assert_eq!((st, b["code"].as_str()), (503, Some("RUNTIME_SHUT_DOWN")));
    let stored = adapter.load_session(&id).await.unwrap().unwrap();
    assert!(stored.record.last_activity.is_some());
}

/// Panics on the first `loadSession`, then delegates.
struct PanicsOnce(MemoryAdapter, std::sync::atomic::AtomicBool);

#[async_trait::async_trait]
impl PersistenceAdapter for PanicsOnce {
    async fn list_all_sessions(&self) -> agent_runtime::persistence::PResult<Vec<SessionRecord>> {
        self.0.list_all_sessions().await
    }
    async fn load_session(&self, id: &str) -> agent_runtime::persistence::PResult<Option<StoredSession>> {
        if !self.1.swap(true, std::sync::atomic::Ordering::SeqCst) {
            panic!("adapter bug");
        }
        self.0.load_session(id).await
    }
    async fn create_session_record(&self, r: &SessionRecord) -> agent_runtime::persistence::PResult<()> {
        self.0.create_session_record(r).await
    }
    async fn update_session_record(
        &self,
        id: &str,
        u: &agent_runtime::persistence::SessionRecordUpdate,
    ) -> agent_runtime::persistence::PResult<()> {
        self.0.update_session_record(id, u).await
    }
    async fn save_transcript(&self, id: &str, raw: &str) -> agent_runtime::persistence::PResult<()> {
        self.0.save_transcript(id, raw).await
    }
    async fn save_workspace_file(&self, id: &str, f: &WorkspaceFile) -> agent_runtime::persistence::PResult<()> {
        self.0.save_workspace_file(id, f).await
    }
    async fn delete_session_file(&self, id: &str, path: &str) -> agent_runtime::persistence::PResult<()> {
        self.0.delete_session_file(id, path).await
    }
    async fn list_agent_profiles(
        &self,
    ) -> agent_runtime::persistence::PResult<Vec<agent_runtime::persistence::AgentProfileSummary>> {
        self.0.list_agent_profiles().await
    }
    async fn load_agent_profile(
        &self,
        id: &str,
    ) -> agent_runtime::persistence::PResult<Option<agent_runtime::persistence::AgentProfile>> {
        self.0.load_agent_profile(id).await
    }
}

#[tokio::test]
async fn a_load_that_panics_fails_that_call_only() {
    let inner = MemoryAdapter::with_profile("p");
    inner.sessions.lock().unwrap().insert("s1".into(), stored("s1", None));
    let rt = AgentRuntime::new(RuntimeOptions::default(), Arc::new(PanicsOnce(inner, Default::default())));
    assert!(rt.sessions.load_session("s1").await.is_err());
    // Before: the shared load future was poisoned and every later load of s1 panicked too.
    assert!(rt.sessions.load_session("s1").await.is_ok());
}
