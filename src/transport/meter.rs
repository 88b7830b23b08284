//! How far a WebSocket's writer is behind what was handed to it.
//!
//! The Socket.IO engine queues a client's packets in a channel of fixed capacity, and its
//! heartbeat *closes the connection* when a ping finds that channel full. A pump that keeps the
//! channel full (any replay or burst to a client slower than the server) therefore gets healthy
//! clients cut off at the next ping, or at once when the heartbeat task first runs late on a
//! busy machine. So the pump never relies on the channel being full: it counts the bytes of the
//! frames it hands over, a [`WriteMeter`] on the connection counts the bytes that reached the
//! socket, and the pump waits while more than [`WINDOW`] bytes are between the two. The engine's
//! capacity is set well above what a window can hold, so a ping always finds room.

use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;

/// Bytes a pump may have handed to the engine that have not reached the socket yet.
pub const WINDOW: u64 = 32 * 1024;
/// Packets the engine's channel holds: far more than a [`WINDOW`] of the smallest event (about
/// 60 bytes), so the heartbeat's ping always fits.
pub const ENGINE_CAPACITY: usize = 1024;
/// No write progress for this long while waiting: stop trusting the count (a frame counted
/// that never reached the socket would otherwise stall the pump for good).
const STUCK: Duration = Duration::from_secs(1);

/// Unsent bytes a WebSocket's kernel send queue may hold (`TCP_NOTSENT_LOWAT`). Left to
/// autotuning, the queue of a client slower than the server grows to megabytes: events that
/// wait there are late by seconds, and no pump or producer upstream can see it to slow down.
/// Bytes in flight are not limited, so throughput over a real network is kept.
pub const KERNEL_UNSENT: libc::c_int = 16 * 1024;

/// Bound what the kernel keeps unsent for a WebSocket connection (best effort: not every
/// socket is TCP).
pub fn limit_unsent(socket: &impl std::os::fd::AsRawFd) {
    let v = KERNEL_UNSENT;
    // SAFETY: setsockopt reads `size_of::<c_int>()` bytes from a live local value; the
    // descriptor belongs to a stream the caller holds.
    let r = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_NOTSENT_LOWAT,
            (&v as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r != 0 {
        tracing::debug!(error = %io::Error::last_os_error(), "TCP_NOTSENT_LOWAT not set");
    }
}

/// Bytes written to one connection's socket.
#[derive(Default)]
pub struct WriteMeter {
    written: AtomicU64,
    progress: Notify,
    /// The TCP socket, while its stream lives, when the connection is one.
    socket: Option<std::os::fd::RawFd>,
}

impl WriteMeter {
    pub fn written(&self) -> u64 {
        self.written.load(Ordering::Acquire)
    }

    fn add(&self, n: usize) {
        if n > 0 {
            self.written.fetch_add(n as u64, Ordering::AcqRel);
            self.progress.notify_waiters();
        }
    }
}

/// A stream whose writes are counted by a [`WriteMeter`].
pub struct Metered<S> {
    inner: S,
    meter: Arc<WriteMeter>,
}

impl<S> Metered<S> {
    pub fn new(inner: S) -> Self {
        Self { inner, meter: Arc::default() }
    }

    /// A TCP connection, whose send queue is bounded if it becomes a WebSocket.
    pub fn tcp(inner: S) -> Self
    where
        S: std::os::fd::AsRawFd,
    {
        let meter = WriteMeter { socket: Some(inner.as_raw_fd()), ..WriteMeter::default() };
        Self { inner, meter: Arc::new(meter) }
    }

    pub fn meter(&self) -> Arc<WriteMeter> {
        self.meter.clone()
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Metered<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Metered<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = r {
            self.meter.add(n);
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = r {
            self.meter.add(n);
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Meters of connections that upgrade an existing session (`?sid=` on the upgrade request),
/// found by the session's id, which is the Socket.IO socket's id. A connection that opens
/// as a WebSocket carries its meter in the request instead.
#[derive(Default)]
pub struct Upgrades(Mutex<HashMap<String, Weak<WriteMeter>>>);

impl Upgrades {
    fn insert(&self, sid: &str, meter: &Arc<WriteMeter>) {
        let mut map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        map.retain(|_, m| m.strong_count() > 0);
        map.insert(sid.to_string(), Arc::downgrade(meter));
    }

    /// Where the pump of the socket `req` opens or upgrades will find its connection's meter:
    /// in the request when it opens a session, here (by sid) when it upgrades one.
    pub fn route<B>(&self, req: &mut http::Request<B>, meter: Arc<WriteMeter>) {
        if let Some(fd) = meter.socket {
            // SAFETY: the connection making this request owns the descriptor and outlives the call.
            limit_unsent(&unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) });
        }
        match upgrade_sid(req.uri().query()) {
            Some(sid) => self.insert(sid, &meter),
            None => {
                req.extensions_mut().insert(meter);
            }
        }
    }

    pub fn take(&self, sid: &str) -> Option<Arc<WriteMeter>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).remove(sid)?.upgrade()
    }
}

/// The engine session id an upgrade request names, if any.
fn upgrade_sid(query: Option<&str>) -> Option<&str> {
    query?.split('&').find_map(|kv| kv.strip_prefix("sid=")).filter(|s| !s.is_empty())
}

/// Bytes one Socket.IO event takes on a WebSocket: `42["name",payload]` in one unmasked frame.
pub fn frame_len(name: &str, payload: &str) -> u64 {
    let body = (7 + name.len() + payload.len()) as u64;
    let header = match body {
        0..=125 => 2,
        126..=65535 => 4,
        _ => 10,
    };
    header + body
}

/// A pump's view of its connection: what it handed over against what was written.
#[derive(Default)]
pub struct Window {
    meter: Option<(Arc<WriteMeter>, u64)>,
    sent: u64,
}

impl Window {
    pub fn is_metered(&self) -> bool {
        self.meter.is_some()
    }

    /// Start counting from now on `meter`'s connection.
    pub fn attach(&mut self, meter: Arc<WriteMeter>) {
        let base = meter.written();
        self.meter = Some((meter, base));
        self.sent = 0;
    }

    pub fn sent(&mut self, bytes: u64) {
        self.sent += bytes;
    }

    fn behind(&self) -> u64 {
        match &self.meter {
            Some((m, base)) => self.sent.saturating_sub(m.written() - base),
            None => 0,
        }
    }

    /// Wait until at most [`WINDOW`] bytes are on their way.
    pub async fn wait_for_room(&mut self) {
        let Some((meter, _)) = self.meter.clone() else { return };
        loop {
            let progress = meter.progress.notified();
            tokio::pin!(progress);
            progress.as_mut().enable();
            if self.behind() <= WINDOW {
                return;
            }
            if tokio::time::timeout(STUCK, progress).await.is_err() {
                // Nothing written for a while: count from here (see STUCK).
                let written = meter.written();
                self.meter = Some((meter.clone(), written));
                self.sent = 0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn frame_lengths_follow_the_websocket_header_sizes() {
        assert_eq!(frame_len("e", "1"), 2 + 9);
        assert_eq!(frame_len("e", &"x".repeat(200)), 4 + 208);
        assert_eq!(frame_len("e", &"x".repeat(70_000)), 10 + 70_008);
    }

    #[test]
    fn the_upgrade_sid_is_read_from_the_query() {
        assert_eq!(upgrade_sid(Some("EIO=4&transport=websocket&sid=abc")), Some("abc"));
        assert_eq!(upgrade_sid(Some("EIO=4&transport=websocket")), None);
        assert_eq!(upgrade_sid(None), None);
    }

    #[tokio::test]
    async fn a_window_waits_for_the_socket_to_take_what_was_sent() {
        let (a, mut b) = tokio::io::duplex(1 << 20);
        let mut a = Metered::new(a);
        let mut w = Window::default();
        w.attach(a.meter());
        w.sent(WINDOW + 10);
        assert_eq!(w.behind(), WINDOW + 10, "more than a window is on its way");
        let waiting = tokio::spawn(async move {
            w.wait_for_room().await;
            w
        });
        a.write_all(&[0; 10]).await.unwrap();
        let w = waiting.await.unwrap();
        assert_eq!(w.behind(), WINDOW);
        let mut got = [0; 10];
        b.read_exact(&mut got).await.unwrap();
    }
}
