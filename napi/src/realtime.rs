//! Socket.IO behind the user's Node `http.Server`: long-polling requests cross as one napi call
//! each; a WebSocket upgrade on a plain TCP socket is handed to tokio by file descriptor, so its
//! frames never pass through JS.

use std::os::fd::FromRawFd;

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
