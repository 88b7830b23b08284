//! Socket.IO behind the user's Node `http.Server`: long-polling requests cross as one napi call
//! each; a WebSocket upgrade on a plain TCP socket is handed to tokio by file descriptor, so its
//! frames never pass through JS.

use std::os::fd::FromRawFd;

use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use agent_runtime::transport::socketio::{self, Realtime};
use napi::bindgen_prelude::*;
use napi_derive::napi;

use crate::HttpResponse;

#[napi]
pub struct RealtimeServer {
    pub(crate) realtime: Realtime,
}

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
    ) -> Result<HttpResponse> {
        let req = crate::plain_request(method, url, headers, body, false);
        Ok(socketio::handle_polling(&self.realtime.service, req).await.into())
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
        let service = self.realtime.service.clone();
        napi::bindgen_prelude::spawn(async move {
            match tokio::net::TcpStream::from_std(std) {
                Ok(stream) => {
                    if let Err(e) = socketio::serve_websocket(service, stream, &url, &headers).await {
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
    pub fn pipe(&self, url: String, headers: Vec<String>, on_data: Function<Option<Buffer>, bool>) -> Result<Pipe> {
        let send: ThreadsafeFunction<Option<Buffer>, bool, Option<Buffer>, Status, false, true> =
            on_data.build_threadsafe_function().callee_handled::<false>().weak::<true>().build()?;
        let (ours, theirs) = tokio::io::duplex(256 * 1024);
        let (mut read_half, mut write_half) = tokio::io::split(ours);
        let (in_tx, mut in_rx) = mpsc::unbounded_channel::<Option<bytes::Bytes>>();
        let drained = std::sync::Arc::new(tokio::sync::Notify::new());
        let service = self.realtime.service.clone();
        napi::bindgen_prelude::spawn(async move {
            if let Err(e) = socketio::serve_websocket(service, theirs, &url, &headers).await {
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
        napi::bindgen_prelude::spawn(async move {
            while let Some(Some(chunk)) = in_rx.recv().await {
                if write_half.write_all(&chunk).await.is_err() {
                    return;
                }
            }
            let _ = write_half.shutdown().await;
        });
        Ok(Pipe { incoming: in_tx, drained })
    }

    /// An event emitted on the JS EventBus by user code: forwarded to clients like a runtime
    /// event. Unknown names are ignored (the reference bridges only its own events).
    #[napi]
    pub fn publish(&self, name: String, payload: String) {
        let Some(name) = agent_runtime::events::known_event(&name) else { return };
        let payload: serde_json::Value = serde_json::from_str(&payload).unwrap_or(serde_json::Value::Null);
        let session_id = payload.get("sessionId").and_then(serde_json::Value::as_str).map(str::to_string);
        self.realtime.publish(agent_runtime::DomainEvent { name, session_id, payload });
    }

    /// Disconnect every client.
    #[napi]
    pub async fn close(&self) -> Result<()> {
        for s in self.realtime.io.sockets() {
            let _ = s.disconnect();
        }
        Ok(())
    }

    #[napi(getter)]
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

    /// Stop accepting and disconnect Socket.IO clients.
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
}

#[napi]
impl Pipe {
    /// Bytes received from the client.
    #[napi]
    pub fn write(&self, chunk: Buffer) {
        let _ = self.incoming.send(Some(bytes::Bytes::copy_from_slice(&chunk)));
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
