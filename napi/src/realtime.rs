//! Socket.IO behind the user's Node `http.Server`: long-polling requests cross as one napi call
//! each; a WebSocket upgrade on a plain TCP socket is handed to tokio by file descriptor, so its
//! frames never pass through JS.

use std::os::fd::FromRawFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use agent_runtime::transport::access::{Authorizer, Handshake};
use async_trait::async_trait;
use serde::Deserialize;

use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use agent_runtime::transport::socketio::{self, Realtime};
use napi::bindgen_prelude::*;
use napi_derive::napi;

use crate::HttpResponse;

#[napi]
pub struct RealtimeServer {
    pub(crate) realtime: Arc<Realtime>,
}

/// Options of `createWebSocketServer` / `listen` as the JS glue passes them (already checked
/// there; checked again here because the napi surface can be called directly).
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SocketOptions {
    path: Option<String>,
    api_key: Option<String>,
    allowed_origins: Option<Vec<String>>,
    authorize_timeout_ms: Option<f64>,
    max_buffered_bytes: Option<f64>,
    max_http_buffer_size: Option<f64>,
}

impl SocketOptions {
    pub fn into_core(self, authorize: Option<AuthorizeFn>) -> Result<socketio::RealtimeOptions> {
        let invalid = |m: &str| Error::new(Status::InvalidArg, m.to_string());
        let mut o = socketio::RealtimeOptions::default();
        if let Some(p) = self.path {
            o.path = p;
        }
        if let Some(k) = self.api_key {
            if k.is_empty() {
                return Err(invalid("apiKey must be a non-empty string"));
            }
            o.api_key = Some(k);
        }
        if let Some(list) = self.allowed_origins {
            o.allowed_origins = agent_runtime::transport::access::Origins::only(list);
        }
        if let Some(ms) = self.authorize_timeout_ms {
            if !(ms.is_finite() && ms >= 1.0) {
                return Err(invalid("authorizeTimeoutMs must be a positive number of milliseconds"));
            }
            o.authorize_timeout = std::time::Duration::from_millis(ms as u64);
        }
        if let Some(n) = self.max_buffered_bytes {
            if !(n.is_finite() && n >= 1.0) {
                return Err(invalid("maxBufferedBytes must be a positive number of bytes"));
            }
            o.max_buffered_bytes = n as usize;
        }
        if let Some(n) = self.max_http_buffer_size {
            if !(n.is_finite() && n >= 1.0) {
                return Err(invalid("maxHttpBufferSize must be a positive number of bytes"));
            }
            o.max_payload = n as u64;
        }
        if let Some(call) = authorize {
            o.authorizer = Some(Arc::new(JsAuthorizer { call }));
        }
        Ok(o)
    }
}

pub fn parse_options(options: serde_json::Value) -> Result<SocketOptions> {
    serde_json::from_value(options).map_err(|e| Error::new(Status::InvalidArg, format!("invalid socket options: {e}")))
}

/// `(kind, handshakeJson, sessionId) => Promise<{ allow } | { error }>`; the JS glue calls the
/// user's `authorize` / `authorizeList` and never rejects.
pub type AuthorizeFn = ThreadsafeFunction<
    FnArgs<(String, String, Option<String>)>,
    Promise<serde_json::Value>,
    FnArgs<(String, String, Option<String>)>,
    Status,
    false,
    true,
>;

struct JsAuthorizer {
    call: AuthorizeFn,
}

impl JsAuthorizer {
    async fn ask(
        &self,
        kind: &str,
        handshake: &Handshake,
        session_id: Option<&str>,
    ) -> std::result::Result<bool, String> {
        let hs = serde_json::to_string(handshake).map_err(|e| e.to_string())?;
        let args = (kind.to_string(), hs, session_id.map(str::to_string)).into();
        let promise = self.call.call_async_catch(args).await.map_err(|e| e.reason.clone())?;
        let answer = promise.await.map_err(|e| e.reason.clone())?;
        match (answer.get("allow"), answer.get("error")) {
            (Some(serde_json::Value::Bool(b)), _) => Ok(*b),
            (_, Some(serde_json::Value::String(e))) => Err(e.clone()),
            _ => Err(format!("unexpected authorization answer {answer}")),
        }
    }
}

#[async_trait]
impl Authorizer for JsAuthorizer {
    async fn join(&self, handshake: &Handshake, session_id: &str) -> std::result::Result<bool, String> {
        self.ask("join", handshake, Some(session_id)).await
    }
    async fn list(&self, handshake: &Handshake) -> std::result::Result<bool, String> {
        self.ask("list", handshake, None).await
    }
}

/// Bytes received from a piped (TLS) client that the engine has not read yet.
const MAX_PIPED_IN_BYTES: usize = 8 * 1024 * 1024;

#[napi]
impl RealtimeServer {
    /// A non-upgrade request under the Socket.IO path (long-polling).
    #[napi]
    pub async fn handle(
        &self,
        method: String,
        url: String,
        headers: Vec<String>,
        body: Option<Buffer>,
        peer: Option<String>,
    ) -> Result<HttpResponse> {
        let req = crate::plain_request(method, url, headers, body, false);
        Ok(socketio::handle_polling(&self.realtime, req, peer).await.into())
    }

    /// Take over the TCP connection `fd` of an upgrade request (Node then destroys its handle;
    /// the duplicated descriptor keeps the connection open).
    #[napi]
    pub fn adopt(&self, fd: i32, url: String, headers: Vec<String>) -> Result<()> {
        // SAFETY: fcntl on a caller-provided descriptor; failure is reported, not assumed.
        let dup = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
        if dup < 0 {
            return Err(Error::new(Status::GenericFailure, format!("cannot duplicate socket fd {fd}")));
        }
        // SAFETY: `dup` is a fresh descriptor we own.
        let std = unsafe { std::net::TcpStream::from_raw_fd(dup) };
        std.set_nonblocking(true).map_err(|e| Error::from_reason(e.to_string()))?;
        let _ = std.set_nodelay(true);
        agent_runtime::transport::meter::limit_unsent(&std);
        let peer = std.peer_addr().ok().map(|a| a.ip().to_string());
        let realtime = self.realtime.clone();
        napi::bindgen_prelude::spawn(async move {
            match tokio::net::TcpStream::from_std(std) {
                Ok(stream) => {
                    if let Err(e) = socketio::serve_websocket(&realtime, stream, &url, &headers, peer).await {
                        tracing::debug!(error = %e, "websocket connection ended with an error");
                    }
                }
                Err(e) => tracing::warn!(error = %e, "could not adopt websocket connection"),
            }
        });
        Ok(())
    }

    /// Serve a WebSocket whose bytes stay in Node (a TLS socket of an `https.Server`): the JS
    /// glue feeds received bytes to `Pipe.write` and sends what `on_data` gets; `on_data(null)`
    /// means the server closed. `on_data` returns false while the socket's buffer is full; the
    /// pipe then waits for `Pipe.drained()` before sending more, so a slow client cannot make
    /// memory grow here.
    #[napi]
    pub fn pipe(
        &self,
        url: String,
        headers: Vec<String>,
        peer: Option<String>,
        on_data: Function<Option<Buffer>, bool>,
    ) -> Result<Pipe> {
        let send: ThreadsafeFunction<Option<Buffer>, bool, Option<Buffer>, Status, false, true> =
            on_data.build_threadsafe_function().callee_handled::<false>().weak::<true>().build()?;
        let (ours, theirs) = tokio::io::duplex(256 * 1024);
        let (mut read_half, mut write_half) = tokio::io::split(ours);
        let (in_tx, mut in_rx) = mpsc::unbounded_channel::<Option<bytes::Bytes>>();
        let drained = std::sync::Arc::new(tokio::sync::Notify::new());
        let realtime = self.realtime.clone();
        napi::bindgen_prelude::spawn(async move {
            if let Err(e) = socketio::serve_websocket(&realtime, theirs, &url, &headers, peer).await {
                tracing::debug!(error = %e, "piped websocket ended with an error");
            }
        });
        let wait = drained.clone();
        napi::bindgen_prelude::spawn(async move {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = match read_half.read(&mut buf).await {
                    Ok(0) | Err(_) => {
                        send.call(None, ThreadsafeFunctionCallMode::NonBlocking);
                        return;
                    }
                    Ok(n) => n,
                };
                match send.call_async_catch(Some(buf[..n].to_vec().into())).await {
                    Ok(true) => {}
                    Ok(false) => wait.notified().await,
                    Err(_) => return,
                }
            }
        });
        let in_bytes = Arc::new(AtomicUsize::new(0));
        let written = in_bytes.clone();
        napi::bindgen_prelude::spawn(async move {
            while let Some(Some(chunk)) = in_rx.recv().await {
                let ok = write_half.write_all(&chunk).await.is_ok();
                written.fetch_sub(chunk.len(), Ordering::Relaxed);
                if !ok {
                    return;
                }
            }
            let _ = write_half.shutdown().await;
        });
        Ok(Pipe { incoming: in_tx, drained, in_bytes })
    }

    /// An event emitted on the JS EventBus by user code: forwarded to clients like a runtime
    /// event. Unknown names are ignored (the reference bridges only its own events).
    #[napi]
    pub fn publish(&self, name: String, payload: String) {
        let Some(name) = agent_runtime::events::known_event(&name) else { return };
        let payload: serde_json::Value = serde_json::from_str(&payload).unwrap_or(serde_json::Value::Null);
        let session_id = payload.get("sessionId").and_then(serde_json::Value::as_str).map(str::to_string);
        self.realtime.publish(agent_runtime::DomainEvent { name, session_id, payload, remote: false });
    }

    /// Disconnect every client and stop bridging the runtime's events to this server.
    #[napi]
    pub fn close(&self) {
        self.realtime.close();
    }

    #[napi(getter, catch_unwind)]
    pub fn clients_count(&self) -> u32 {
        self.realtime.io.sockets().len() as u32
    }

    /// Rooms with at least one client (`session:<id>`), for inspection.
    #[napi]
    pub async fn rooms(&self) -> Result<Vec<String>> {
        let rooms = self.realtime.io.rooms().await.map_err(|e| Error::from_reason(format!("{e:?}")))?;
        Ok(rooms.into_iter().map(|r| r.to_string()).collect())
    }
}

/// A native listener started by `runtime.listen`.
#[napi]
pub struct NativeListener {
    pub(crate) inner: socketio::Listener,
}

#[napi]
impl NativeListener {
    #[napi(getter)]
    pub fn port(&self) -> u32 {
        self.inner.addr.port() as u32
    }

    #[napi(getter)]
    pub fn host(&self) -> String {
        self.inner.addr.ip().to_string()
    }

    /// Stop accepting, disconnect Socket.IO clients, stop bridging events to them.
    #[napi]
    pub fn close(&self) {
        self.inner.close();
    }
}

/// The JS side of a piped WebSocket.
#[napi]
pub struct Pipe {
    incoming: mpsc::UnboundedSender<Option<bytes::Bytes>>,
    drained: std::sync::Arc<tokio::sync::Notify>,
    in_bytes: Arc<AtomicUsize>,
}

#[napi]
impl Pipe {
    /// Bytes received from the client. False when the engine has fallen more than
    /// `MAX_PIPED_IN_BYTES` behind: the glue then drops the client.
    #[napi]
    pub fn write(&self, chunk: Buffer) -> bool {
        if self.in_bytes.load(Ordering::Relaxed) + chunk.len() > MAX_PIPED_IN_BYTES {
            tracing::warn!(
                limit = MAX_PIPED_IN_BYTES,
                "dropping a piped websocket client: its input is not being read"
            );
            let _ = self.incoming.send(None);
            return false;
        }
        self.in_bytes.fetch_add(chunk.len(), Ordering::Relaxed);
        let _ = self.incoming.send(Some(bytes::Bytes::copy_from_slice(&chunk)));
        true
    }

    /// The client's side ended.
    #[napi]
    pub fn end(&self) {
        let _ = self.incoming.send(None);
    }

    /// The socket drained after `on_data` returned false.
    #[napi]
    pub fn drained(&self) {
        self.drained.notify_one();
    }
}
