//! The Socket.IO server (spec §3), on socketioxide: rooms `session:<id>`, `session:join` /
//! `session:leave` with the reference's acks, and the bridge from domain events to clients.
//!
//! The engine is a tower service; how connections reach it (Node's server, or a native
//! listener) is the caller's business.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use engineioxide::service::NotFoundService;
use serde_json::value::RawValue;
use serde_json::{json, Map, Value};
use socketioxide::extract::{AckSender, SocketRef, State, TryData};
use socketioxide::handler::ConnectHandler;
use socketioxide::service::SocketIoService;
use socketioxide::SocketIo;
use tokio::sync::Notify;

use super::access::{self, Authorizer, Handshake, Origins};
use super::meter;
use super::outbox::{self, Item, Outbox, Weigh};
use super::redact::Redactor;
use crate::events::{DomainEvent, Subscription};
use crate::runtime::AgentRuntime;
use crate::session::AgentSession;

pub type RealtimeService = SocketIoService<NotFoundService>;

/// Options of `createWebSocketServer` (and of the Socket.IO side of `runtime.listen`).
#[derive(Clone)]
pub struct RealtimeOptions {
    /// Request path, `/socket.io` by default.
    pub path: String,
    /// Packets the engine's channel holds for one client beyond its byte-bounded outbox. A
    /// WebSocket's pump keeps far fewer in it (see [`meter`]); long-polling fills it.
    pub max_buffered_packets: usize,
    /// Bytes of events that may wait for one client before it is disconnected as too slow.
    pub max_buffered_bytes: usize,
    /// Largest accepted HTTP long-polling body (Engine.IO `maxHttpBufferSize`).
    pub max_payload: u64,
    /// When set, clients must connect with `auth: { token: <this key> }`.
    pub api_key: Option<String>,
    /// When set, decides every `session:join` and who receives `sessions:list`.
    pub authorizer: Option<Arc<dyn Authorizer>>,
    /// An authorization callback that has not answered by then denies.
    pub authorize_timeout: Duration,
    /// Browser origins allowed to connect (both transports); any when unset, as the reference.
    pub allowed_origins: Origins,
}

impl Default for RealtimeOptions {
    fn default() -> Self {
        Self {
            path: "/socket.io".into(),
            max_buffered_packets: meter::ENGINE_CAPACITY,
            max_buffered_bytes: 16 * 1024 * 1024,
            max_payload: 1_000_000,
            api_key: None,
            authorizer: None,
            authorize_timeout: Duration::from_secs(10),
            allowed_origins: Origins::any(),
        }
    }
}

/// What connections of one server share (the socketioxide state).
struct Shared {
    runtime: std::sync::Weak<AgentRuntime>,
    api_key: Option<Arc<str>>,
    authorizer: Option<Arc<dyn Authorizer>>,
    authorize_timeout: Duration,
    max_buffered_bytes: usize,
    origins: Origins,
    redactor: Redactor,
    /// A `sessions:list` is due (coalesced: one fetch covers every change before it).
    list_due: Notify,
    closed: AtomicBool,
    tokio: tokio::runtime::Handle,
    /// Write meters of WebSocket upgrades, until their socket's pump takes them.
    upgrades: meter::Upgrades,
}

/// Per-connection state, kept in the socket's extensions.
struct Client {
    handshake: Handshake,
    may_list: bool,
    outbox: Outbox,
    /// Counted in the runtime's metrics while connected.
    _counted: Option<crate::metrics::ClientCounted>,
    /// A producer that paces itself to this client waits for it (see [`Hub::publish`]); off
    /// once the client took nothing for [`PACE_MAX_WAIT`], on again when it caught up.
    paced: AtomicBool,
}

/// A room's clients are behind once this much waits in their outboxes...
const PACE_HIGH: usize = 16 * 1024;
/// ...and caught up again at this much.
const PACE_LOW: usize = 4 * 1024;
/// The longest one publish waits for a client that takes nothing: a stuck client then stops
/// pacing anyone and is left to the outbox's byte limit.
const PACE_MAX_WAIT: Duration = Duration::from_millis(200);

/// The server side shared by both ways of serving: its namespace, its bus subscription.
pub struct Hub {
    pub io: SocketIo,
    shared: Arc<Shared>,
    subscription: Mutex<Option<Subscription>>,
}

impl Hub {
    /// Send an event to clients as if the runtime had emitted it (events the user emits on the
    /// JS EventBus reach Socket.IO this way, as they do in the reference).
    ///
    /// The producer is paced to its audience: when most of the room's clients are behind, this
    /// blocks (the caller is JS's synchronous `emit`) until they have caught up, so a burst
    /// waits at its source instead of in memory, where every later event would queue behind it.
    pub fn publish(&self, e: DomainEvent) {
        let behind = dispatch(&self.shared, &self.io, &e);
        // Only a thread outside tokio may block (JS's is); inside, nothing waits.
        if !behind.is_empty() && tokio::runtime::Handle::try_current().is_err() {
            self.shared.tokio.block_on(catch_up_with(behind));
        }
    }

    /// Stop bridging events (the bus subscription goes) and disconnect every client.
    pub fn close(&self) {
        // Disconnect handlers are spawned: callable from a thread outside tokio (JS's).
        let _tokio = self.shared.tokio.enter();
        self.subscription.lock().unwrap_or_else(PoisonError::into_inner).take();
        self.shared.closed.store(true, Ordering::Relaxed);
        self.shared.list_due.notify_one();
        for s in self.io.sockets() {
            let _ = s.disconnect();
        }
    }

    /// The allowed-origins check of the upgrade and polling requests that reach us from Node.
    pub fn origin_allowed(&self, headers: &http::HeaderMap) -> bool {
        self.shared.origins.allows(headers)
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        self.shared.closed.store(true, Ordering::Relaxed);
        self.shared.list_due.notify_one();
    }
}

pub struct Realtime {
    pub hub: Hub,
    pub service: RealtimeService,
}

impl std::ops::Deref for Realtime {
    type Target = Hub;
    fn deref(&self) -> &Hub {
        &self.hub
    }
}

fn room(session_id: &str) -> String {
    format!("session:{session_id}")
}

fn builder(shared: &Arc<Shared>, opts: &RealtimeOptions) -> socketioxide::SocketIoBuilder {
    SocketIo::builder()
        .req_path(opts.path.clone())
        .max_buffer_size(opts.max_buffered_packets.max(1))
        .max_payload(opts.max_payload)
        .with_state(shared.clone())
}

fn shared(runtime: &Arc<AgentRuntime>, opts: &RealtimeOptions) -> Arc<Shared> {
    Arc::new(Shared {
        runtime: Arc::downgrade(runtime),
        api_key: opts.api_key.as_deref().map(Arc::from),
        authorizer: opts.authorizer.clone(),
        authorize_timeout: opts.authorize_timeout,
        max_buffered_bytes: opts.max_buffered_bytes.max(1),
        origins: opts.allowed_origins.clone(),
        redactor: Redactor::for_runtime(&runtime.options),
        list_due: Notify::new(),
        closed: AtomicBool::new(false),
        tokio: tokio::runtime::Handle::current(),
        upgrades: meter::Upgrades::default(),
    })
}

/// Register the namespace and bridge the runtime's events to it.
fn hub(runtime: &Arc<AgentRuntime>, io: SocketIo, shared: Arc<Shared>) -> Hub {
    io.ns("/", on_connect.with(admit));
    let (bus_io, bus_shared) = (io.clone(), shared.clone());
    let subscription = runtime.events.subscription(move |e| {
        dispatch(&bus_shared, &bus_io, e);
    });
    tokio::spawn(send_lists(shared.clone(), io.clone()));
    Hub { io, shared, subscription: Mutex::new(Some(subscription)) }
}

/// Build the server and start bridging the runtime's events to it. Must run inside tokio.
pub fn start(runtime: Arc<AgentRuntime>, opts: &RealtimeOptions) -> Realtime {
    let shared = shared(&runtime, opts);
    let (service, io) = builder(&shared, opts).build_svc();
    Realtime { hub: hub(&runtime, io, shared), service }
}

/// A running native listener (`runtime.listen`): REST and Socket.IO on one port, no JS in the
/// data path.
pub struct Listener {
    pub addr: std::net::SocketAddr,
    pub hub: Hub,
    task: tokio::task::JoinHandle<()>,
}

impl Listener {
    pub fn close(&self) {
        self.hub.close();
        self.task.abort();
    }
}

/// Serve the REST router, Socket.IO and `pages` (see [`super::static_routes`]) on `addr` with
/// hyper (through axum).
pub async fn listen(
    runtime: Arc<AgentRuntime>,
    addr: &str,
    rest_api_key: &str,
    opts: &RealtimeOptions,
    pages: axum::Router,
) -> std::io::Result<Listener> {
    let shared = shared(&runtime, opts);
    let (layer, io) = builder(&shared, opts).build_layer();
    let hub = hub(&runtime, io, shared.clone());
    let origins = opts.allowed_origins.clone();
    let path = opts.path.clone();
    // Outermost, so a refused origin never reaches the engine.
    let meters = shared.clone();
    let guard = axum::middleware::from_fn(move |mut req: axum::extract::Request, next: axum::middleware::Next| {
        let ours = req.uri().path().starts_with(&path);
        let refused = ours && !origins.allows(req.headers());
        if ours {
            // Who is calling, and the meter of the connection a WebSocket would run on.
            if let Some(peer) = req.extensions().get::<axum::extract::ConnectInfo<Peer>>().map(|c| c.0.clone()) {
                req.extensions_mut().insert(access::PeerAddr(peer.addr.ip().to_string()));
                if req.headers().contains_key(http::header::UPGRADE) {
                    meters.upgrades.route(&mut req, peer.meter);
                }
            }
        }
        async move {
            if refused {
                use axum::response::IntoResponse;
                return access::forbidden_origin().into_response();
            }
            next.run(req).await
        }
    });
    let streams = super::sse::Streams::new(&runtime.events, opts.max_buffered_bytes);
    // Pages (the web console) answer their own paths; everything else is the REST router's.
    let app = pages.merge(super::rest::router_with(runtime, rest_api_key, streams)).layer(layer).layer(guard);
    let listener = MeteredListener(tokio::net::TcpListener::bind(addr).await?);
    let addr = listener.0.local_addr()?;
    let task = tokio::spawn(async move {
        let app = app.into_make_service_with_connect_info::<Peer>();
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "native listener stopped");
        }
    });
    tracing::info!(%addr, "native listener: REST and Socket.IO");
    Ok(Listener { addr, hub, task })
}

/// `runtime.listen`'s connections, each with a [`meter::WriteMeter`] for its WebSocket.
struct MeteredListener(tokio::net::TcpListener);

/// A connection's peer and meter, given to every request on it.
#[derive(Clone)]
struct Peer {
    addr: std::net::SocketAddr,
    meter: Arc<meter::WriteMeter>,
}

impl std::fmt::Debug for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.addr.fmt(f)
    }
}

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, MeteredListener>> for Peer {
    fn connect_info(stream: axum::serve::IncomingStream<'_, MeteredListener>) -> Self {
        stream.remote_addr().clone()
    }
}

impl axum::serve::Listener for MeteredListener {
    type Io = meter::Metered<tokio::net::TcpStream>;
    type Addr = Peer;

    async fn accept(&mut self) -> (Self::Io, Peer) {
        loop {
            match self.0.accept().await {
                Ok((stream, addr)) => {
                    let _ = stream.set_nodelay(true);
                    let io = meter::Metered::tcp(stream);
                    let meter = io.meter();
                    return (io, Peer { addr, meter });
                }
                // Out of descriptors and the like: wait instead of spinning (as axum does).
                Err(e) => {
                    tracing::debug!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Peer> {
        Ok(Peer { addr: self.0.local_addr()?, meter: Arc::default() })
    }
}

/// Connect middleware: the opt-in handshake token (compared in constant time), then the
/// client's state, with whether it may see the session list decided once.
async fn admit(
    socket: SocketRef,
    TryData(auth): TryData<Value>,
    State(shared): State<Arc<Shared>>,
) -> Result<(), &'static str> {
    let auth = auth.unwrap_or(Value::Null);
    if let Some(key) = &shared.api_key {
        match auth.get("token").and_then(Value::as_str) {
            Some(t) if super::key_matches(t, key) => {}
            Some(_) => return Err("Invalid API key"),
            None => return Err("Missing auth token"),
        }
    }
    let handshake = Handshake::new(socket.req_parts(), auth);
    let may_list = match &shared.authorizer {
        None => true,
        Some(a) => access::ask("sessions:list", shared.authorize_timeout, a.list(&handshake)).await,
    };
    let outbox = Outbox::new(shared.max_buffered_bytes);
    let counted = shared.runtime.upgrade().map(|rt| rt.metrics.client_connected());
    socket.extensions.insert(Arc::new(Client {
        handshake,
        may_list,
        outbox,
        _counted: counted,
        paced: AtomicBool::new(true),
    }));
    Ok(())
}

fn client(s: &SocketRef) -> Option<Arc<Client>> {
    s.extensions.get::<Arc<Client>>()
}

/// Handlers are registered synchronously, before the connect future is spawned, so an event a
/// client sends right after connecting is never missed.
fn on_connect(socket: SocketRef, State(shared): State<Arc<Shared>>) -> impl std::future::Future<Output = ()> {
    socket.on("session:join", join);
    socket.on("session:leave", leave);
    socket.on("session:interrupt", interrupt);
    socket.on("session:permission:respond", respond_permission);
    socket.on("session:question:respond", respond_question);
    if let Some(c) = client(&socket) {
        socket.on_disconnect(|s: SocketRef| async move {
            if let Some(c) = client(&s) {
                c.outbox.close();
            }
        });
        tokio::spawn(pump(socket.clone(), c, shared));
    }
    std::future::ready(())
}

/// Move a client's events from its outbox into the engine as the engine takes them. On a
/// WebSocket, no more than a window of bytes is left unwritten at a time, so the engine's
/// channel always has room for its heartbeat (see [`meter`]).
async fn pump(socket: SocketRef, client: Arc<Client>, shared: Arc<Shared>) {
    let mut window = meter::Window::default();
    if let Some(m) = socket.req_parts().extensions.get::<Arc<meter::WriteMeter>>() {
        tracing::debug!(socket = %socket.id, "websocket writes metered");
        window.attach(m.clone());
    }
    while let Some(item) = client.outbox.next().await {
        if !window.is_metered() {
            // A long-polling session may have upgraded since.
            let upgraded = socket.transport_type() == socketioxide::TransportType::Websocket;
            if let Some(m) = upgraded.then(|| shared.upgrades.take(&socket.id.to_string())).flatten() {
                tracing::debug!(socket = %socket.id, "upgraded websocket writes metered");
                window.attach(m);
            }
        }
        window.wait_for_room().await;
        let mut attempt = 0;
        loop {
            match socket.emit(item.name, &*item.payload) {
                Ok(()) => break,
                Err(socketioxide::SendError::Socket(socketioxide::SocketError::InternalChannelFull)) => {
                    outbox::wait_for_room(attempt).await;
                    attempt += 1;
                }
                Err(e) => {
                    tracing::debug!(socket = %socket.id, error = %e, "event not sent; client gone");
                    return;
                }
            }
        }
        window.sent(meter::frame_len(item.name, item.payload.get()));
    }
}

async fn join(socket: SocketRef, TryData(arg): TryData<Value>, ack: AckSender, State(shared): State<Arc<Shared>>) {
    // The reference's form is a bare id; `{ sessionId, since }` also replays what was missed.
    let target = match arg {
        Ok(Value::String(id)) => Ok((id, None)),
        Ok(Value::Object(o)) => match (o.get("sessionId"), o.get("since")) {
            (Some(Value::String(id)), None | Some(Value::Null)) => Ok((id.clone(), Some(None))),
            (Some(Value::String(id)), Some(Value::String(since))) if !since.is_empty() && since.len() <= 200 => {
                Ok((id.clone(), Some(Some(since.clone()))))
            }
            (Some(Value::String(_)), Some(_)) => Err("since must be an eventId string".to_string()),
            _ => Err("session:join expects a session id string or { sessionId, since }".to_string()),
        },
        _ => Err("session:join expects a session id string".to_string()),
    };
    let mut ack = Some(ack);
    let answer = match target {
        Ok((id, replay)) => try_join(&socket, &shared, id, replay, &mut ack).await,
        Err(e) => Err(e),
    };
    // A join with `since` answered already (before its replay).
    let Some(ack) = ack else { return };
    let _ = match answer {
        Ok(()) => ack.send(&json!({ "success": true })),
        Err(error) => ack.send(&json!({ "success": false, "error": error })),
    };
}

/// Join room `id`. With `replay` (the object form) the ack is sent here, first:
/// `{ success, lastEventId, replayed, reset? }`; then the logged events after `since` go to this
/// socket, then live ones, with no gap and no repeat.
async fn try_join(
    socket: &SocketRef,
    shared: &Shared,
    id: String,
    replay: Option<Option<String>>,
    ack: &mut Option<AckSender>,
) -> Result<(), String> {
    access::validate_session_id(&id)?;
    if let Some(a) = &shared.authorizer {
        let allowed = match client(socket) {
            Some(c) => access::ask("session:join", shared.authorize_timeout, a.join(&c.handshake, &id)).await,
            None => false,
        };
        if !allowed {
            // A denied rejoin also ends an earlier membership: access can be revoked.
            socket.leave(room(&id));
            return Err("Not authorized to join this session".into());
        }
    }
    let rt = shared.runtime.upgrade().ok_or("The runtime is shutting down")?;
    let session = match rt.sessions.load_session(&id).await {
        Ok(session) => Some(session),
        // In a cluster: held by another node; its events come here through the cluster.
        Err(crate::error::Error::OwnedElsewhere { .. }) => None,
        Err(e) if e.is_not_found() => return Err("Session not found".into()),
        Err(e) => return Err(shared.redactor.apply(&e.to_string())),
    };
    let c = client(socket).ok_or("Not connected")?;
    // The reference's form gets the snapshot before its ack, as there; after a replay it is
    // queued behind it (an emit straight into a full engine would be lost).
    let direct = replay.is_none();
    let send = |name: &'static str, payload: &Value| {
        if direct {
            let _ = socket.emit(name, payload);
        } else {
            queue_event(&c, name, payload);
        }
    };
    match replay {
        None => socket.join(room(&id)),
        Some(since) => {
            if let Err(why) = catch_up(socket, shared, &rt, &c, &id, since, ack).await {
                // Acked already: the client learns it the way a slow one does, and rejoins.
                tracing::info!(socket = %socket.id, session_id = %id, "{why}");
                c.outbox.close();
                disconnect_when_possible(&shared.tokio, socket.clone());
                return Ok(());
            }
        }
    }
    let (runtime, pending) = match &session {
        Some(s) => (json!(s.runtime_state()), s.pending_requests().iter().filter_map(|r| serde_json::to_value(r).ok()).collect()),
        None => {
            // The holder's state, through the REST route (forwarded there).
            let state = via_rest(&rt, "GET", format!("/api/sessions/{id}"), Value::Null).await.map_err(|(e, _)| e)?;
            let r = &state["runtime"];
            let pending = r["pendingRequests"].as_array().cloned().unwrap_or_default();
            (json!({ "isLoaded": r["isLoaded"], "sandbox": r["sandbox"] }), pending)
        }
    };
    let status = json!({ "sessionId": id, "runtime": runtime });
    send("session:status", &redact_status(&shared.redactor, status));
    // A tab that joins late (or again after a refresh) can answer what is waiting.
    for mut payload in pending {
        let question = payload.get("type").and_then(Value::as_str) == Some("question");
        let name = if question { "session:question:requested" } else { "session:permission:requested" };
        if let Some(o) = payload.as_object_mut() {
            o.remove("type");
            o.insert("sessionId".into(), json!(id));
        }
        send(name, &payload);
    }
    Ok(())
}

fn queue_event(c: &Client, name: &'static str, payload: &Value) {
    if let Ok(raw) = RawValue::from_string(payload.to_string()) {
        let _ = c.outbox.push(Item { name, payload: Arc::from(raw) });
    }
}

/// Most events one read of the log replays; the rest follow as the client takes them.
const REPLAY_PAGE: usize = 500;
/// Handoffs tried before a client that cannot catch up with a fast session is refused.
const HANDOFF_TRIES: usize = 8;

/// Answer the join, then send `socket` the logged events after `since` (none without it) as
/// fast as it takes them, then join it to the room under the bus's order lock, so backlog and
/// live events meet with no gap and no repeat. The ack goes first, while the connection's
/// buffers are empty: behind a backlog the engine could refuse it, and an ack cannot be retried.
/// The backlog is fed at the client's pace (never past its buffer); only a tail that fits in its
/// buffer is read and queued under the lock.
async fn catch_up(
    socket: &SocketRef,
    shared: &Shared,
    rt: &AgentRuntime,
    c: &Client,
    id: &str,
    mut since: Option<String>,
    ack: &mut Option<AckSender>,
) -> Result<(), String> {
    let log = rt.events.log();
    let now = log.read_durable(id, since.as_deref(), 0).await;
    let seq = |e: &Option<String>| e.as_deref().and_then(|e| e.rsplit_once('-')?.1.parse::<u64>().ok()).unwrap_or(0);
    let backlog = if now.reset || since.is_none() { 0 } else { seq(&now.last_event_id).saturating_sub(seq(&since)) };
    let mut answer = json!({ "success": true, "lastEventId": now.last_event_id, "replayed": backlog });
    if now.reset {
        // Too old or unknown: nothing is replayed, the client refetches the state.
        answer["reset"] = json!(true);
        since = None;
    }
    if let Some(a) = ack.take() {
        let _ = a.send(&answer);
    }
    let dropped = || "the log dropped events this client had not caught up with".to_string();
    let mut handoffs = 0;
    // In a cluster this node's copy of another node's events can lag what Redis has: wait
    // (briefly) for it to catch up with the reader.
    let lag_deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while handoffs < HANDOFF_TRIES {
        while since.is_some() {
            let read = log.read_durable(id, since.as_deref(), REPLAY_PAGE).await;
            if read.reset {
                return Err(dropped());
            }
            if read.events.is_empty() {
                break;
            }
            let full = read.events.len() == REPLAY_PAGE;
            since = read.events.last().map(|e| e.event_id.clone());
            feed(c, client_items(shared, id, &read.events)).await?;
            if !full {
                break;
            }
        }
        let tail = {
            let _order = rt.events.hold_order();
            let limit = if since.is_some() { usize::MAX } else { 0 };
            match log.read_tail(id, since.as_deref(), limit) {
                None => None,
                Some(read) if read.reset => return Err(dropped()),
                Some(read) => {
                    let items = client_items(shared, id, &read.events);
                    let size: usize = items.iter().map(Weigh::weight).sum();
                    if c.outbox.queued_bytes() + size <= c.outbox.limit() {
                        for item in items {
                            c.outbox.push(item).map_err(|_| "disconnected".to_string())?;
                        }
                        socket.join(room(id));
                        return Ok(());
                    }
                    Some((items, read.events.last().map(|e| e.event_id.clone())))
                }
            }
        };
        match tail {
            // The tail does not fit yet: feed it at the client's pace and try the handoff again.
            Some((items, last)) => {
                feed(c, items).await?;
                since = last;
                handoffs += 1;
            }
            None if tokio::time::Instant::now() > lag_deadline => {
                return Err("this node's copy of the session's events did not catch up".into())
            }
            None => tokio::time::sleep(Duration::from_millis(5)).await,
        }
    }
    Err("the session streams faster than this connection takes its events".into())
}

/// Logged events as this server's clients receive them.
fn client_items(shared: &Shared, id: &str, events: &[crate::event_log::LoggedEvent]) -> Vec<Item> {
    events
        .iter()
        .filter_map(|e| {
            let (name, body) = client_form(shared, e.event, id, &e.payload)?;
            let raw = RawValue::from_string(body.to_string()).ok()?;
            Some(Item { name, payload: Arc::from(raw) })
        })
        .collect()
}

/// Queue `items` for one client, each once its buffer has room for it.
async fn feed(c: &Client, items: Vec<Item>) -> Result<(), String> {
    for item in items {
        if !c.outbox.wait_for_room(c.outbox.limit().saturating_sub(item.weight())).await {
            return Err("disconnected".into());
        }
        c.outbox.push(item).map_err(|_| "disconnected".to_string())?;
    }
    Ok(())
}

/// The loaded session `id`, if this socket joined it (joining is where access is decided).
fn joined_session(socket: &SocketRef, shared: &Shared, id: &str) -> Result<Arc<AgentSession>, String> {
    access::validate_session_id(id)?;
    if !socket.rooms().iter().any(|r| *r == room(id)) {
        return Err(format!("Join session {id} first (session:join)"));
    }
    let rt = shared.runtime.upgrade().ok_or("The runtime is shutting down")?;
    rt.sessions.get(id).ok_or_else(|| "Session not found".to_string())
}

fn answer(ack: AckSender, result: Result<Value, (String, Option<&'static str>)>) {
    let _ = match result {
        Ok(mut v) => {
            v["success"] = json!(true);
            ack.send(&v)
        }
        Err((error, None)) => ack.send(&json!({ "success": false, "error": error })),
        Err((error, Some(code))) => ack.send(&json!({ "success": false, "error": error, "code": code })),
    };
}

/// `session:interrupt (sessionId, ack)` → `{ success, interrupted }`.
async fn interrupt(socket: SocketRef, TryData(id): TryData<Value>, ack: AckSender, State(shared): State<Arc<Shared>>) {
    let (id, clear_queue) = match &id {
        Ok(Value::String(id)) => (id.clone(), false),
        Ok(Value::Object(o)) if o.get("sessionId").is_some_and(Value::is_string) => (
            o["sessionId"].as_str().unwrap_or_default().to_string(),
            o.get("clearQueue").and_then(Value::as_bool).unwrap_or(false),
        ),
        _ => return answer(ack, Err(("session:interrupt expects a session id string".to_string(), None))),
    };
    let result = match joined_target(&socket, &shared, &id) {
        Err(e) => Err((e, None)),
        Ok(Target::Local(session)) => Ok(json!({ "interrupted": session.interrupt(clear_queue) })),
        Ok(Target::Elsewhere(rt)) => {
            let path = format!("/api/sessions/{id}/interrupt");
            via_rest(&rt, "POST", path, json!({ "clearQueue": clear_queue }))
                .await
                .map(|v| json!({ "interrupted": v.get("interrupted").cloned().unwrap_or(Value::Bool(false)) }))
        }
    };
    answer(ack, result);
}

/// Where a control for a joined session runs.
enum Target {
    Local(Arc<AgentSession>),
    /// In a cluster, not loaded here: the REST call, routed to the session's holder.
    Elsewhere(Arc<AgentRuntime>),
}

/// The session `id` this socket joined, here or (in a cluster) wherever it is held.
fn joined_target(socket: &SocketRef, shared: &Shared, id: &str) -> Result<Target, String> {
    match joined_session(socket, shared, id) {
        Ok(s) => Ok(Target::Local(s)),
        Err(e) => {
            let rt = shared.runtime.upgrade().ok_or("The runtime is shutting down")?;
            let joined = socket.rooms().iter().any(|r| *r == room(id));
            if rt.cluster.is_some() && joined {
                Ok(Target::Elsewhere(rt))
            } else {
                Err(e)
            }
        }
    }
}

/// Run a REST call for this process (no key; in a cluster routed to the session's holder) and
/// give its JSON answer, or its `{ error, code }`.
async fn via_rest(
    rt: &Arc<AgentRuntime>,
    method: &str,
    path: String,
    body: Value,
) -> Result<Value, (String, Option<&'static str>)> {
    let router = super::rest::unkeyed_router(rt.clone(), super::rest::Mode::Internal);
    let req = super::rest::PlainRequest {
        method: method.into(),
        url: path,
        headers: vec!["content-type".into(), "application/json".into()],
        body: body.to_string().into(),
        oversized: false,
    };
    let res = super::rest::handle_plain(&router, rt.options.max_body_bytes, req).await;
    let v: Value = serde_json::from_slice(&res.body).unwrap_or(Value::Null);
    if (200..300).contains(&res.status) {
        return Ok(v);
    }
    const CODES: &[&str] = &[
        "OWNER_UNREACHABLE",
        "CLUSTER_UNAVAILABLE",
        "NOT_FOUND",
        "SESSION_NOT_FOUND",
        "ALREADY_RESOLVED",
        "INVALID_REQUEST",
    ];
    let code = v.get("code").and_then(Value::as_str).and_then(|c| CODES.iter().copied().find(|k| *k == c));
    Err((v.get("error").and_then(Value::as_str).unwrap_or("The request failed").to_string(), code))
}

/// The `{ sessionId, requestId, ... }` payload of a respond event, and where it goes.
fn respond_target(
    socket: &SocketRef,
    shared: &Shared,
    event: &str,
    data: &Result<Value, impl std::fmt::Display>,
) -> Result<(Target, String, String, Map<String, Value>), (String, Option<&'static str>)> {
    let bad = |m: String| (m, Some("INVALID_REQUEST"));
    let Ok(Value::Object(o)) = data else {
        return Err(bad(format!("{event} expects an object {{ sessionId, requestId, ... }}")));
    };
    let id = o.get("sessionId").and_then(Value::as_str).ok_or_else(|| bad("sessionId must be a string".into()))?;
    let request_id =
        o.get("requestId").and_then(Value::as_str).ok_or_else(|| bad("requestId must be a string".into()))?;
    let target = joined_target(socket, shared, id).map_err(|e| (e, Some("NOT_FOUND")))?;
    Ok((target, id.to_string(), request_id.to_string(), o.clone()))
}

/// The answer to a respond event, run here or by the session's holder (`kind`: the REST
/// route's segment, `permissions` or `questions`).
async fn respond(
    target: (Target, String, String, Map<String, Value>),
    kind: &str,
    local: impl FnOnce(&AgentSession, &str, &Map<String, Value>) -> Result<(), (String, Option<&'static str>)>,
) -> Result<Value, (String, Option<&'static str>)> {
    let (target, id, rid, o) = target;
    match target {
        Target::Local(s) => local(&s, &rid, &o)?,
        Target::Elsewhere(rt) => {
            let path = format!("/api/sessions/{id}/{kind}/{}", percent_encoding::utf8_percent_encode(&rid, percent_encoding::NON_ALPHANUMERIC));
            via_rest(&rt, "POST", path, Value::Object(o)).await?;
        }
    }
    Ok(json!({ "requestId": rid }))
}

async fn respond_permission(
    socket: SocketRef,
    TryData(data): TryData<Value>,
    ack: AckSender,
    State(shared): State<Arc<Shared>>,
) {
    let result = match respond_target(&socket, &shared, "session:permission:respond", &data) {
        Err(e) => Err(e),
        Ok(t) => {
            respond(t, "permissions", |s, rid, o| {
                let a = super::control::permission_answer_of(o).map_err(|m| (m, Some("INVALID_REQUEST")))?;
                s.respond_permission(rid, a).map_err(|e| (e.to_string(), Some(e.code())))
            })
            .await
        }
    };
    answer(ack, result);
}

async fn respond_question(
    socket: SocketRef,
    TryData(data): TryData<Value>,
    ack: AckSender,
    State(shared): State<Arc<Shared>>,
) {
    let result = match respond_target(&socket, &shared, "session:question:respond", &data) {
        Err(e) => Err(e),
        Ok(t) => {
            respond(t, "questions", |s, rid, o| {
                let answers = super::control::question_answers_of(o).map_err(|m| (m, Some("INVALID_REQUEST")))?;
                s.answer_question(rid, &answers).map_err(|e| (e.to_string(), Some(e.code())))
            })
            .await
        }
    };
    answer(ack, result);
}

async fn leave(socket: SocketRef, TryData(id): TryData<String>, ack: AckSender) {
    if let Ok(id) = id {
        socket.leave(room(&id));
    }
    let _ = ack.send(&json!({ "success": true }));
}

/// A domain event to the clients that should get it. Runs on the emitter's thread, in emit
/// order; it only queues (serialized once), so a slow client never holds the emitter up. Gives
/// back the clients a pacing producer should wait for (see [`Hub::publish`]).
fn dispatch(shared: &Arc<Shared>, io: &SocketIo, e: &DomainEvent) -> Vec<Arc<Client>> {
    match (e.name, e.session_id.as_deref()) {
        ("sessions:changed", _) => shared.list_due.notify_one(),
        (name, Some(id)) => {
            if let Some((name, body)) = client_form(shared, name, id, &e.payload) {
                return fan_out(shared, io.to(room(id)).sockets(), name, &body);
            }
        }
        _ => {}
    }
    Vec::new()
}

/// Wait until each client is caught up. One that takes nothing for [`PACE_MAX_WAIT`] stops
/// pacing; a slow one that keeps taking is waited for, which is the point.
async fn catch_up_with(behind: Vec<Arc<Client>>) {
    futures::future::join_all(behind.into_iter().map(|c| async move {
        let mut queued = c.outbox.queued_bytes();
        while tokio::time::timeout(PACE_MAX_WAIT, c.outbox.wait_for_room(PACE_LOW)).await.is_err() {
            let now = c.outbox.queued_bytes();
            if now >= queued {
                c.paced.store(false, Ordering::Relaxed);
                return;
            }
            queued = now;
        }
    }))
    .await;
}

/// A session event as its room's clients receive it (none for events they never get).
fn client_form(shared: &Shared, name: &'static str, id: &str, payload: &Value) -> Option<(&'static str, Value)> {
    match name {
        "session:transcript:changed" | "session:subagent:changed" => None,
        "session:error" => {
            let error = &payload["error"];
            let message = error["message"].as_str().map(|m| Value::String(shared.redactor.apply(m)));
            let mut body = json!({ "message": message.unwrap_or(Value::Null), "code": error.get("code").cloned().unwrap_or(Value::Null), "sessionId": id });
            for k in ["eventId", "seq"] {
                if let Some(v) = payload.get(k) {
                    body[k] = v.clone();
                }
            }
            Some(("error", body))
        }
        "session:status" => Some((name, redact_status(&shared.redactor, payload.clone()))),
        _ => Some((name, payload.clone())),
    }
}

/// A sandbox status message can carry a runner's error text.
fn redact_status(r: &Redactor, mut status: Value) -> Value {
    if let Some(Value::String(m)) = status.pointer_mut("/runtime/sandbox/statusMessage") {
        *m = r.apply(m);
    }
    status
}

/// Queue an event for a room's clients. Gives back the paced clients that are behind when they
/// are most of the room (a minority of slow clients does not hold a producer back).
fn fan_out(shared: &Arc<Shared>, sockets: Vec<SocketRef>, name: &'static str, payload: &Value) -> Vec<Arc<Client>> {
    let mut behind = Vec::new();
    if sockets.is_empty() {
        return behind;
    }
    let Ok(raw) = RawValue::from_string(payload.to_string()) else { return behind };
    let item = Item { name, payload: Arc::from(raw) };
    let audience = sockets.len();
    for s in sockets {
        let Some(c) = client(&s) else { continue };
        match c.outbox.push(item.clone()) {
            Ok(queued) if queued > PACE_HIGH => {
                // A long-polling client drains through requests that may need the very thread
                // that would wait for it.
                let websocket = s.transport_type() == socketioxide::TransportType::Websocket;
                if websocket && c.paced.load(Ordering::Relaxed) {
                    behind.push(c);
                }
            }
            Ok(queued) => {
                if queued <= PACE_LOW && !c.paced.load(Ordering::Relaxed) {
                    c.paced.store(true, Ordering::Relaxed);
                }
            }
            Err(over) => {
                if !s.connected() {
                    continue;
                }
                tracing::warn!(
                    socket = %s.id,
                    queued_bytes = over.queued_bytes,
                    limit = shared.max_buffered_bytes,
                    "disconnecting a client too slow to take its events"
                );
                c.outbox.close();
                disconnect_when_possible(&shared.tokio, s);
            }
        }
    }
    if behind.len() * 2 < audience {
        behind.clear();
    }
    behind
}

/// A full client cannot even be sent its disconnect packet: take it out of every room at once
/// (so nothing more queues up for it), then, as soon as its buffer has room, tell it why
/// (`error` with `code: "slow_consumer"`) and disconnect it (the engine's heartbeat closes it
/// anyway once a ping finds the buffer full). It resumes by joining with `since`.
fn disconnect_when_possible(tokio: &tokio::runtime::Handle, s: SocketRef) {
    s.leave_all();
    tokio.spawn(async move {
        let reason = json!({
            "message": "Too slow to take this session's events: rejoin with { sessionId, since } to resume",
            "code": "slow_consumer",
            "reason": "slow_consumer",
        });
        let mut told = false;
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        loop {
            tick.tick().await;
            if !s.connected() {
                return;
            }
            if !told {
                match s.emit("error", &reason) {
                    Err(socketioxide::SendError::Socket(socketioxide::SocketError::InternalChannelFull)) => continue,
                    _ => told = true,
                }
            }
            match s.clone().disconnect() {
                Err(socketioxide::SocketError::InternalChannelFull) => continue,
                _ => return,
            }
        }
    });
}

/// `sessions:list` to every client allowed to see it, after each burst of list changes. Its
/// own task, so a slow `listAllSessions` never delays room events.
async fn send_lists(shared: Arc<Shared>, io: SocketIo) {
    loop {
        shared.list_due.notified().await;
        if shared.closed.load(Ordering::Relaxed) {
            return;
        }
        let Some(rt) = shared.runtime.upgrade() else { return };
        let list = match rt.sessions.all_sessions().await {
            Ok(l) => l,
            Err(err) => {
                tracing::warn!(error = %err, "sessions:list not sent: the adapter failed");
                continue;
            }
        };
        drop(rt);
        let allowed = io.sockets().into_iter().filter(|s| client(s).is_some_and(|c| c.may_list)).collect();
        fan_out(&shared, allowed, "sessions:list", &Value::Array(list));
    }
}

/// Answer one non-upgrade request (HTTP long-polling) under the Socket.IO path.
/// `peer` is the remote address Node saw, for the authorization handshake.
pub async fn handle_polling(
    realtime: &Realtime,
    req: super::rest::PlainRequest,
    peer: Option<String>,
) -> super::rest::PlainResponse {
    use http_body_util::BodyExt;
    use tower::ServiceExt;
    let mut builder = http::Request::builder().method(req.method.as_str()).uri(path_and_query(&req.url));
    for pair in req.headers.chunks_exact(2) {
        builder = builder.header(pair[0].as_str(), pair[1].as_str());
    }
    if let Some(p) = peer {
        builder = builder.extension(access::PeerAddr(p));
    }
    let Ok(request) = builder.body(http_body_util::Full::new(req.body)) else {
        return super::rest::PlainResponse::full(400, vec![], "Bad request".into());
    };
    if !realtime.origin_allowed(request.headers()) {
        let body = access::forbidden_origin().into_body();
        return super::rest::PlainResponse::full(403, vec![], body.into());
    }
    let response = match realtime.service.clone().oneshot(request).await {
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
    super::rest::PlainResponse::full(parts.status.as_u16(), headers, body)
}

fn path_and_query(url: &str) -> String {
    match url.parse::<http::Uri>() {
        Ok(u) => u.path_and_query().map(|p| p.as_str().to_string()).unwrap_or_else(|| "/".into()),
        Err(_) => "/".into(),
    }
}

/// Serve a WebSocket on a stream whose HTTP upgrade request was already read (by Node): answer
/// the handshake with 101 (or 403 for an origin that is not allowed) and hand the stream to the
/// engine.
pub async fn serve_websocket<S>(
    realtime: &Realtime,
    mut stream: S,
    url: &str,
    headers: &[String],
    peer: Option<String>,
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
    let mut builder = http::Request::builder().method("GET").uri(path_and_query(url));
    for pair in headers.chunks_exact(2) {
        builder = builder.header(pair[0].as_str(), pair[1].as_str());
    }
    if let Some(p) = peer {
        builder = builder.extension(access::PeerAddr(p));
    }
    let mut request = builder.body(()).map_err(|e| e.to_string())?;
    if !realtime.origin_allowed(request.headers()) {
        let body = "Origin not allowed";
        let head = format!(
            "HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = stream.write_all(head.as_bytes()).await;
        let _ = stream.shutdown().await;
        return Err("websocket upgrade refused: origin not allowed".into());
    }
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    let head = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.map_err(|e| e.to_string())?;
    // Count what is written to it, for its socket's pump.
    let stream = meter::Metered::new(stream);
    realtime.hub.shared.upgrades.route(&mut request, stream.meter());
    realtime.service.clone().oneshot((stream, request)).await.map(drop).map_err(|e| format!("{e:?}"))
}
