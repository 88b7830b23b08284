//! napi binding of `agent-runtime`: the only crate that names napi.
//!
//! Surface (wrapped by the hand-written `index.js`): `NativeRuntime.create(options, adapterCall,
//! onEvent)`, its session methods keyed by session id, and `RestServer.handle` (one call per
//! HTTP request). Everything big crosses as JSON strings or Buffers.

#![deny(clippy::all)]

mod events;
mod persistence;
mod realtime;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use agent_runtime::persistence::bridge::JsonAdapter;
use agent_runtime::session::{AgentSession, CreateSessionArgs, MessageMode};
use agent_runtime::transport::rest::{self, PlainRequest};
use agent_runtime::{AgentRuntime, RuntimeOptions};
use napi::bindgen_prelude::*;
use napi_derive::napi;
use serde_json::Value;

/// Serializing our own plain data cannot fail; no panic across the boundary even so.
fn json_text(v: &impl serde::Serialize) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "null".into())
}

fn to_napi(e: agent_runtime::Error) -> Error {
    Error::new(Status::GenericFailure, format!("[{}] {e}", e.code()))
}

#[napi]
pub struct NativeRuntime {
    rt: Arc<AgentRuntime>,
    forwarding: Arc<AtomicBool>,
}

#[napi]
impl NativeRuntime {
    /// Validate options and build the runtime. An invalid option throws `InvalidArg` with a
    /// message naming the field (the JS glue turns it into a TypeError).
    #[napi(factory)]
    pub fn create(
        options: Value,
        adapter_call: Function<FnArgs<(String, Value)>, Promise<Value>>,
        on_event: Function<FnArgs<(String, String)>, ()>,
    ) -> Result<Self> {
        let options = RuntimeOptions::from_json(options).map_err(|m| Error::new(Status::InvalidArg, m))?;
        agent_runtime::logging::init(options.log_level.as_deref());
        let call = adapter_call.build_threadsafe_function().callee_handled::<false>().weak::<true>().build()?;
        let sink = on_event.build_threadsafe_function().callee_handled::<false>().weak::<true>().build()?;
        let adapter = JsonAdapter::new(persistence::JsAdapter { call }, options.persistence_timeout);
        let rt = AgentRuntime::new(options, Arc::new(adapter));
        let forwarding = Arc::new(AtomicBool::new(false));
        events::forward(&rt.events, sink, forwarding.clone());
        Ok(Self { rt, forwarding })
    }

    /// Turn event forwarding to JS on or off (on while the JS EventBus has listeners).
    #[napi]
    pub fn set_event_forwarding(&self, on: bool) {
        self.forwarding.store(on, Ordering::Relaxed);
    }

    #[napi]
    pub async fn start(&self) -> Result<()> {
        self.rt.start().await.map_err(to_napi)
    }

    #[napi]
    pub async fn shutdown(&self) -> Result<()> {
        self.rt.shutdown().await;
        Ok(())
    }

    /// Kill every sandbox process now; for `process.on('exit')`, where nothing async runs.
    #[napi(catch_unwind)]
    pub fn kill_sandboxes(&self) {
        self.rt.kill_sandboxes();
    }

    /// The Prometheus text exposition of the runtime's metrics (`runtime.metrics()`).
    #[napi]
    pub fn metrics(&self) -> String {
        self.rt.metrics_text()
    }

    #[napi(catch_unwind)]
    pub fn is_healthy(&self) -> bool {
        self.rt.is_healthy()
    }

    /// Resolves to the new session id.
    #[napi]
    pub async fn create_session(&self, args: Value) -> Result<String> {
        self.rt.ensure_running().map_err(to_napi)?;
        let args: CreateSessionArgs = from_json_arg(args)?;
        let s = self.rt.sessions.create_session(args).await.map_err(to_napi)?;
        Ok(s.session_id.clone())
    }

    #[napi]
    pub async fn load_session(&self, session_id: String) -> Result<String> {
        self.rt.ensure_running().map_err(to_napi)?;
        let s = self.rt.sessions.load_session(&session_id).await.map_err(to_napi)?;
        Ok(s.session_id.clone())
    }

    #[napi]
    pub async fn unload_session(&self, session_id: String) -> Result<()> {
        self.rt.sessions.unload_session(&session_id).await.map_err(to_napi)
    }

    /// `SessionListItem[]` as JSON.
    #[napi]
    pub async fn get_all_sessions(&self) -> Result<String> {
        let list = self.rt.sessions.all_sessions().await.map_err(to_napi)?;
        Ok(Value::Array(list).to_string())
    }

    #[napi(catch_unwind)]
    pub fn is_loaded(&self, session_id: String) -> bool {
        self.rt.sessions.is_loaded(&session_id)
    }

    #[napi(catch_unwind)]
    pub fn loaded_ids(&self) -> Vec<String> {
        self.rt.sessions.loaded_ids()
    }

    /// `getState()` minus blocks and subagents, plus `conversationVersion`; null when not loaded.
    #[napi(catch_unwind)]
    pub fn session_state_meta(&self, session_id: String) -> Option<String> {
        self.rt.sessions.get(&session_id).map(|s| s.state_meta_json())
    }

    /// `{ version, blocks, subagents }` as JSON; null when not loaded. The JSON is ASCII, so
    /// the JS string is created as latin1: a copy, not a UTF-8 transcode.
    #[napi(ts_return_type = "string | null", catch_unwind)]
    pub fn session_conversation<'e>(&self, env: &'e Env, session_id: String) -> Result<Option<napi::JsString<'e>>> {
        match self.rt.sessions.get(&session_id) {
            None => Ok(None),
            Some(s) => env.create_string_latin1(s.conversation_json()).map(Some),
        }
    }

    #[napi(catch_unwind)]
    pub fn session_runtime_state(&self, session_id: String) -> Option<String> {
        self.rt.sessions.get(&session_id).map(|s| json_text(&s.runtime_state()))
    }

    #[napi(catch_unwind)]
    pub fn session_list_data(&self, session_id: String) -> Option<String> {
        self.rt.sessions.get(&session_id).map(|s| s.persisted_list_data().to_string())
    }

    #[napi]
    pub async fn update_session_options(&self, session_id: String, options: Value) -> Result<()> {
        let Value::Object(options) = options else {
            return Err(Error::new(Status::InvalidArg, "sessionOptions must be an object"));
        };
        self.session(&session_id)?.update_session_options(options).await.map_err(to_napi)
    }

    #[napi]
    pub async fn sync_session(&self, session_id: String) -> Result<()> {
        self.session(&session_id)?.sync_to_storage().await.map_err(to_napi)
    }

    #[napi]
    pub async fn destroy_session(&self, session_id: String) -> Result<()> {
        self.session(&session_id)?.destroy().await.map_err(to_napi)
    }

    #[napi(ts_return_type = "Promise<void>")]
    pub fn send_message<'e>(
        &self,
        env: &'e Env,
        session_id: String,
        message: String,
        mode: Option<String>,
    ) -> Result<PromiseRaw<'e, ()>> {
        let mode = match mode.as_deref() {
            None => MessageMode::Queue,
            Some(m) => MessageMode::parse(m).ok_or_else(|| {
                Error::new(Status::InvalidArg, format!("mode must be \"queue\", \"steer\" or \"interrupt\", got {m:?}"))
            })?,
        };
        // Queued synchronously, so messages run in the order JS sent them.
        let turn = self.session(&session_id)?.send_message(&message, mode).map_err(to_napi)?;
        env.spawn_future(async move { turn.run.await.map_err(to_napi) })
    }

    /// Stop the running turn; true if one was running.
    #[napi(catch_unwind)]
    pub fn interrupt(&self, session_id: String, clear_queue: Option<bool>) -> Result<bool> {
        Ok(self.session(&session_id)?.interrupt(clear_queue.unwrap_or(false)))
    }

    /// Remove a message that waits in the queue.
    #[napi(catch_unwind)]
    pub fn remove_queued_message(&self, session_id: String, message_id: String) -> Result<()> {
        self.session(&session_id)?.remove_queued(&message_id).map_err(to_napi)
    }

    /// Answer a tool call that waits for a person (`{ behavior, updatedInput?, message?, remember? }`).
    #[napi(catch_unwind)]
    pub fn respond_permission(&self, session_id: String, request_id: String, answer: Value) -> Result<()> {
        let Value::Object(answer) = answer else {
            return Err(Error::new(Status::InvalidArg, "the answer must be an object { behavior, ... }"));
        };
        let answer = agent_runtime::transport::control::permission_answer_of(&answer)
            .map_err(|m| Error::new(Status::InvalidArg, m))?;
        self.session(&session_id)?.respond_permission(&request_id, answer).map_err(to_napi)
    }

    /// Answer a question (`answers`: question text → label(s) or text).
    #[napi(catch_unwind)]
    pub fn answer_question(&self, session_id: String, request_id: String, answers: Value) -> Result<()> {
        let Value::Object(answers) = answers else {
            return Err(Error::new(
                Status::InvalidArg,
                "answers must be an object mapping each question to its answer",
            ));
        };
        self.session(&session_id)?.answer_question(&request_id, &answers).map_err(to_napi)
    }

    /// A Socket.IO server bridged to this runtime's events (`createWebSocketServer`). `options`:
    /// `{ path?, apiKey?, allowedOrigins?, authorizeTimeoutMs?, maxBufferedBytes?,
    /// maxHttpBufferSize? }`; `authorize` is the glue's bridge to the user's callbacks.
    #[napi]
    pub fn realtime_server(
        &self,
        options: Value,
        authorize: Option<AuthorizeJs<'_>>,
    ) -> Result<realtime::RealtimeServer> {
        let opts = realtime::parse_options(options)?.into_core(authorizer(authorize)?)?;
        let rt = self.rt.clone();
        let realtime = napi::bindgen_prelude::within_runtime_if_available(move || {
            agent_runtime::transport::socketio::start(rt, &opts)
        });
        Ok(realtime::RealtimeServer { realtime: Arc::new(realtime) })
    }

    /// Serve REST and Socket.IO natively on `host:port` (`runtime.listen`). `options` as for
    /// `realtime_server` (its `apiKey` protects Socket.IO).
    #[napi(ts_return_type = "Promise<NativeListener>")]
    pub fn listen<'e>(
        &self,
        env: &'e Env,
        host: String,
        port: u32,
        api_key: String,
        options: Value,
        authorize: Option<AuthorizeJs<'_>>,
        pages: Option<Vec<StaticPage>>,
    ) -> Result<PromiseRaw<'e, realtime::NativeListener>> {
        if api_key.is_empty() {
            return Err(Error::new(Status::InvalidArg, "apiKey must be a non-empty string"));
        }
        let opts = realtime::parse_options(options)?.into_core(authorizer(authorize)?)?;
        let pages = pages
            .unwrap_or_default()
            .into_iter()
            .map(|p| {
                let headers = p.headers.chunks(2).filter_map(|kv| Some((kv.first()?.clone(), kv.get(1)?.clone())));
                agent_runtime::transport::static_routes::StaticRoute {
                    path: p.path,
                    status: p.status,
                    headers: headers.collect(),
                    body: bytes::Bytes::from(p.body.to_vec()),
                }
            })
            .collect();
        let pages =
            agent_runtime::transport::static_routes::router(pages).map_err(|e| Error::new(Status::InvalidArg, e))?;
        let addr = format!("{host}:{port}");
        let rt = self.rt.clone();
        env.spawn_future(async move {
            let l = agent_runtime::transport::socketio::listen(rt, &addr, &api_key, &opts, pages)
                .await
                .map_err(|e| Error::new(Status::GenericFailure, format!("cannot listen on {addr}: {e}")))?;
            Ok(realtime::NativeListener { inner: l })
        })
    }

    /// A REST handler bound to `api_key` (`createRestServer({ apiKey, maxBufferedBytes })`).
    #[napi]
    pub fn rest_server(&self, api_key: String, max_buffered_bytes: Option<f64>) -> Result<RestServer> {
        if api_key.is_empty() {
            return Err(Error::new(Status::InvalidArg, "apiKey must be a non-empty string"));
        }
        let max_buffered =
            max_buffered_bytes.map(|n| n as usize).unwrap_or(agent_runtime::transport::sse::DEFAULT_MAX_BUFFERED_BYTES);
        let streams = agent_runtime::transport::sse::Streams::new(&self.rt.events, max_buffered);
        Ok(RestServer {
            router: rest::router_with(self.rt.clone(), &api_key, streams.clone()),
            streams,
            max_body: self.rt.options.max_body_bytes as u32,
        })
    }
}

impl NativeRuntime {
    fn session(&self, id: &str) -> Result<Arc<AgentSession>> {
        self.rt.sessions.get(id).ok_or_else(|| to_napi(agent_runtime::Error::SessionNotLoaded(id.to_string())))
    }
}

/// A page `runtime.listen` serves as given (the web console's files): headers as name, value,
/// name, value, ...
#[napi(object)]
pub struct StaticPage {
    pub path: String,
    pub status: u16,
    pub headers: Vec<String>,
    pub body: Buffer,
}

/// The glue's `(kind, handshakeJson, sessionId) => Promise<{ allow } | { error }>`.
type AuthorizeJs<'a> = Function<'a, FnArgs<(String, String, Option<String>)>, Promise<Value>>;

fn authorizer(f: Option<AuthorizeJs<'_>>) -> Result<Option<realtime::AuthorizeFn>> {
    f.map(|f| f.build_threadsafe_function().callee_handled::<false>().weak::<true>().build()).transpose()
}

fn from_json_arg<T: serde::de::DeserializeOwned>(v: Value) -> Result<T> {
    serde_json::from_value(v).map_err(|e| Error::new(Status::InvalidArg, format!("invalid argument: {e}")))
}

#[napi(object, object_from_js = false)]
pub struct HttpResponse {
    pub status: u32,
    pub headers: Vec<String>,
    pub body: Buffer,
    /// Set instead of `body` for a body of unknown length (an event stream).
    pub stream: Option<BodyStream>,
}

impl From<rest::PlainResponse> for HttpResponse {
    fn from(r: rest::PlainResponse) -> Self {
        HttpResponse {
            status: r.status as u32,
            headers: r.headers,
            body: r.body.to_vec().into(),
            stream: r.stream.map(BodyStream::new),
        }
    }
}

/// A response body read chunk by chunk from JS (the glue wraps it in a `ReadableStream`).
/// Closing it, or dropping it, drops the body: the server side lets go at once.
#[napi]
pub struct BodyStream {
    body: tokio::sync::Mutex<Option<rest::BodyChunks>>,
    closed: std::sync::atomic::AtomicBool,
    close_now: tokio::sync::Notify,
}

impl BodyStream {
    fn new(body: rest::BodyChunks) -> Self {
        Self {
            body: tokio::sync::Mutex::new(Some(body)),
            closed: Default::default(),
            close_now: tokio::sync::Notify::new(),
        }
    }
}

#[napi]
impl BodyStream {
    /// The next chunk, or `null` at the end.
    #[napi]
    pub async fn next(&self) -> Result<Option<Buffer>> {
        use std::sync::atomic::Ordering;
        let mut slot = self.body.lock().await;
        let Some(body) = slot.as_mut() else { return Ok(None) };
        let chunk = if self.closed.load(Ordering::SeqCst) {
            None
        } else {
            tokio::select! {
                c = body.next() => c,
                // A close while waiting leaves a permit, so it is never missed.
                _ = self.close_now.notified() => None,
            }
        };
        if chunk.is_none() {
            *slot = None;
        }
        Ok(chunk.map(|c| c.to_vec().into()))
    }

    /// Stop reading: the server side is released (also when a read is waiting).
    #[napi]
    pub fn close(&self) {
        self.closed.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Ok(mut slot) = self.body.try_lock() {
            *slot = None;
        }
        self.close_now.notify_one();
    }
}

/// A request from the JS glue (method, URL, flat raw headers, body bytes) as plain data.
pub(crate) fn plain_request(
    method: String,
    url: String,
    headers: Vec<String>,
    body: Option<Buffer>,
    oversized: bool,
) -> PlainRequest {
    let body = body.map(|b| bytes::Bytes::copy_from_slice(&b)).unwrap_or_default();
    PlainRequest { method, url, headers, body, oversized }
}

#[napi]
pub struct RestServer {
    router: rest::Router,
    streams: Arc<agent_runtime::transport::sse::Streams>,
    /// Body limit, so the JS glue stops reading a body past it.
    #[napi(readonly)]
    pub max_body: u32,
}

#[napi]
impl RestServer {
    /// Event streams (SSE) open now.
    #[napi]
    pub fn open_streams(&self) -> u32 {
        self.streams.open_count() as u32
    }

    /// Answer one request: method, URL, flat raw headers, body bytes. One crossing each way.
    #[napi]
    pub async fn handle(
        &self,
        method: String,
        url: String,
        headers: Vec<String>,
        body: Option<Buffer>,
        oversized: bool,
    ) -> Result<HttpResponse> {
        let req = plain_request(method, url, headers, body, oversized);
        Ok(rest::handle_plain(&self.router, self.max_body as usize, req).await.into())
    }
}
