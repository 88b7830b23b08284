//! The Socket.IO server (spec §3), on socketioxide: rooms `session:<id>`, `session:join` /
//! `session:leave` with the reference's acks, and the bridge from domain events to clients.
//!
//! The engine is a tower service; how connections reach it (Node's server, or a native
//! listener) is the caller's business.

use std::sync::Arc;

use engineioxide::service::NotFoundService;
use serde_json::{json, Value};
use socketioxide::extract::{AckSender, SocketRef, State, TryData};
use socketioxide::handler::ConnectHandler;
use socketioxide::service::SocketIoService;
use socketioxide::SocketIo;
use tokio::sync::mpsc;

use crate::events::DomainEvent;
use crate::runtime::AgentRuntime;

pub type RealtimeService = SocketIoService<NotFoundService>;

/// Options of `createWebSocketServer`.
#[derive(Debug, Clone)]
pub struct RealtimeOptions {
    /// Request path, `/socket.io` by default.
    pub path: String,
    /// Events a slow client may have queued before it is disconnected.
    pub max_buffered_packets: usize,
    /// Largest accepted HTTP long-polling body (Engine.IO `maxHttpBufferSize`).
    pub max_payload: u64,
    /// When set, clients must connect with `auth: { token: <this key> }`.
    pub api_key: Option<String>,
}

impl Default for RealtimeOptions {
    fn default() -> Self {
        Self { path: "/socket.io".into(), max_buffered_packets: 4096, max_payload: 1_000_000, api_key: None }
    }
}

pub struct Realtime {
    pub io: SocketIo,
    pub service: RealtimeService,
    queue: mpsc::UnboundedSender<DomainEvent>,
}

impl Realtime {
    /// Send an event to clients as if the runtime had emitted it (events the user emits on the
    /// JS EventBus reach Socket.IO this way, as they do in the reference).
    pub fn publish(&self, e: DomainEvent) {
        let _ = self.queue.send(e);
    }
}

#[derive(Clone)]
struct RequiredToken(Option<Arc<str>>);

fn room(session_id: &str) -> String {
    format!("session:{session_id}")
}

fn builder(runtime: &Arc<AgentRuntime>, opts: &RealtimeOptions) -> socketioxide::SocketIoBuilder {
    SocketIo::builder()
        .req_path(opts.path.clone())
        .max_buffer_size(opts.max_buffered_packets)
        .max_payload(opts.max_payload)
        .with_state(runtime.clone())
        .with_state(RequiredToken(opts.api_key.as_deref().map(Arc::from)))
}

fn serve_namespace(runtime: Arc<AgentRuntime>, io: &SocketIo) -> mpsc::UnboundedSender<DomainEvent> {
    io.ns("/", on_connect.with(check_token));
    bridge(runtime, io.clone())
}

/// Build the server and start bridging the runtime's events to it. Must run inside tokio.
pub fn start(runtime: Arc<AgentRuntime>, opts: &RealtimeOptions) -> Realtime {
    let (service, io) = builder(&runtime, opts).build_svc();
    let queue = serve_namespace(runtime, &io);
    Realtime { io, service, queue }
}

/// A running native listener (`runtime.listen`): REST and Socket.IO on one port, no JS in the
/// data path.
pub struct Listener {
    pub addr: std::net::SocketAddr,
    pub io: SocketIo,
    task: tokio::task::JoinHandle<()>,
}

impl Listener {
    pub fn close(&self) {
        for s in self.io.sockets() {
            let _ = s.disconnect();
        }
        self.task.abort();
    }
}

/// Serve the REST router and Socket.IO on `addr` with hyper (through axum).
pub async fn listen(
    runtime: Arc<AgentRuntime>,
    addr: &str,
    rest_api_key: &str,
    opts: &RealtimeOptions,
) -> std::io::Result<Listener> {
    let (layer, io) = builder(&runtime, opts).build_layer();
    let _queue = serve_namespace(runtime.clone(), &io);
    let app = super::rest::router(runtime, rest_api_key).layer(layer);
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "native listener stopped");
        }
    });
    tracing::info!(%addr, "native listener: REST and Socket.IO");
    Ok(Listener { addr, io, task })
}

/// Opt-in handshake auth: `auth: { token }` must equal the key (compared in constant time).
async fn check_token(TryData(auth): TryData<Value>, State(required): State<RequiredToken>) -> Result<(), &'static str> {
    let Some(key) = required.0 else { return Ok(()) };
    let token = auth.ok().and_then(|a| a.get("token").and_then(Value::as_str).map(str::to_string));
    match token {
        Some(t) if super::key_matches(&t, &key) => Ok(()),
        Some(_) => Err("Invalid API key"),
        None => Err("Missing auth token"),
    }
}

/// Handlers are registered synchronously, before the connect future is spawned, so an event a
/// client sends right after connecting is never missed.
fn on_connect(socket: SocketRef) -> impl std::future::Future<Output = ()> {
    socket.on("session:join", join);
    socket.on("session:leave", leave);
    std::future::ready(())
}

async fn join(socket: SocketRef, TryData(id): TryData<String>, ack: AckSender, State(rt): State<Arc<AgentRuntime>>) {
    let Ok(id) = id else {
        let _ = ack.send(&json!({ "success": false, "error": "session:join expects a session id string" }));
        return;
    };
    match rt.sessions.load_session(&id).await {
        Ok(session) => {
            socket.join(room(&id));
            let status = json!({ "sessionId": id, "runtime": session.runtime_state() });
            let _ = socket.emit("session:status", &status);
            let _ = ack.send(&json!({ "success": true }));
        }
        Err(e) if e.is_not_found() => {
            let _ = ack.send(&json!({ "success": false, "error": "Session not found" }));
        }
        Err(e) => {
            let _ = ack.send(&json!({ "success": false, "error": e.to_string() }));
        }
    }
}

async fn leave(socket: SocketRef, TryData(id): TryData<String>, ack: AckSender) {
    if let Ok(id) = id {
        socket.leave(room(&id));
    }
    let _ = ack.send(&json!({ "success": true }));
}

/// Rooms up to this size get one send per client, so a client whose buffer is full can be
/// told apart and disconnected; larger rooms get one broadcast (one serialization) instead.
const PER_CLIENT_ROOM: usize = 32;

async fn emit_to_room(io: &SocketIo, session_id: &str, name: &'static str, payload: &Value) {
    let sockets = io.to(room(session_id)).sockets();
    if sockets.len() > PER_CLIENT_ROOM {
        if let Err(err) = io.to(room(session_id)).emit(name, payload).await {
            tracing::warn!(event = name, error = %err, "event dropped for clients whose buffers are full");
        }
        return;
    }
    for s in sockets {
        if let Err(socketioxide::SendError::Socket(socketioxide::SocketError::InternalChannelFull)) =
            s.emit(name, payload)
        {
            tracing::warn!(socket = %s.id, session_id, "disconnecting a client too slow to take its events (buffer full)");
            disconnect_when_possible(s);
        }
    }
}

/// A full client cannot even be sent its disconnect packet: take it out of every room at once
/// (so nothing more queues up for it), then disconnect it as soon as its buffer has room.
fn disconnect_when_possible(s: SocketRef) {
    s.leave_all();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_millis(100));
        loop {
            tick.tick().await;
            if !s.connected() {
                return;
            }
            match s.clone().disconnect() {
                Err(socketioxide::SocketError::InternalChannelFull) => continue,
                _ => return,
            }
        }
    });
}

/// Domain events -> clients, in order: one task drains a queue fed synchronously by the bus.
fn bridge(runtime: Arc<AgentRuntime>, io: SocketIo) -> mpsc::UnboundedSender<DomainEvent> {
    let (tx, mut rx) = mpsc::unbounded_channel::<DomainEvent>();
    let from_bus = tx.clone();
    runtime.events.subscribe(move |e| {
        let _ = from_bus.send(e.clone());
    });
    let weak = Arc::downgrade(&runtime);
    drop(runtime);
    tokio::spawn(async move {
        while let Some(e) = rx.recv().await {
            match (e.name, e.session_id.as_deref()) {
                ("sessions:changed", _) => {
                    let Some(rt) = weak.upgrade() else { return };
                    let list = match rt.sessions.all_sessions().await {
                        Ok(l) => l,
                        Err(err) => {
                            tracing::warn!(error = %err, "sessions:list not sent: the adapter failed");
                            continue;
                        }
                    };
                    if let Err(err) = io.emit("sessions:list", &list).await {
                        tracing::debug!(error = %err, "sessions:list broadcast incomplete");
                    }
                }
                ("session:transcript:changed" | "session:subagent:changed", _) => {}
                ("session:error", Some(id)) => {
                    let error = &e.payload["error"];
                    let body = json!({ "message": error["message"], "code": error.get("code").cloned().unwrap_or(Value::Null), "sessionId": id });
                    emit_to_room(&io, id, "error", &body).await;
                }
                (name, Some(id)) => emit_to_room(&io, id, name, &e.payload).await,
                _ => {}
            }
        }
    });
    tx
}

/// Answer one non-upgrade request (HTTP long-polling) under the Socket.IO path.
pub async fn handle_polling(service: &RealtimeService, req: super::rest::PlainRequest) -> super::rest::PlainResponse {
    use http_body_util::BodyExt;
    use tower::ServiceExt;
    let mut builder = http::Request::builder().method(req.method.as_str()).uri(path_and_query(&req.url));
    for pair in req.headers.chunks_exact(2) {
        builder = builder.header(pair[0].as_str(), pair[1].as_str());
    }
    let Ok(request) = builder.body(http_body_util::Full::new(req.body)) else {
        return super::rest::PlainResponse { status: 400, headers: vec![], body: "Bad request".into() };
    };
    let response = match service.clone().oneshot(request).await {
        Ok(r) => r,
        Err(never) => match never {},
    };
    let (parts, body) = response.into_parts();
    let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let headers = parts
        .headers
        .iter()
        .flat_map(|(k, v)| [k.as_str().to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned()])
        .collect();
    super::rest::PlainResponse { status: parts.status.as_u16(), headers, body }
}

fn path_and_query(url: &str) -> String {
    match url.parse::<http::Uri>() {
        Ok(u) => u.path_and_query().map(|p| p.as_str().to_string()).unwrap_or_else(|| "/".into()),
        Err(_) => "/".into(),
    }
}

/// Serve a WebSocket on a stream whose HTTP upgrade request was already read (by Node): answer
/// the handshake with 101 and hand the stream to the engine.
pub async fn serve_websocket<S>(
    service: RealtimeService,
    mut stream: S,
    url: &str,
    headers: &[String],
) -> Result<(), String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    use tokio::io::AsyncWriteExt;
    use tower::ServiceExt;
    let key = headers
        .chunks_exact(2)
        .find(|p| p[0].eq_ignore_ascii_case("sec-websocket-key"))
        .map(|p| p[1].clone())
        .ok_or("websocket upgrade without Sec-WebSocket-Key")?;
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    let head = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.map_err(|e| e.to_string())?;
    let mut builder = http::Request::builder().method("GET").uri(path_and_query(url));
    for pair in headers.chunks_exact(2) {
        builder = builder.header(pair[0].as_str(), pair[1].as_str());
    }
    let request = builder.body(()).map_err(|e| e.to_string())?;
    service.oneshot((stream, request)).await.map(drop).map_err(|e| format!("{e:?}"))
}
