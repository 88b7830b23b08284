//! One client's queue of events waiting to be sent, bounded in bytes.
//!
//! The Socket.IO engine buffers a fixed number of packets per client whatever their size, so
//! events first wait here, where their size is known; one task per client moves them into the
//! engine as it takes them (an SSE stream pulls its frames from one the same way). A client that
//! lets more than the limit pile up is too slow: the caller disconnects it, and the others are
//! not held back.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde_json::value::RawValue;
use tokio::sync::Notify;

/// An event serialized once for all its recipients.
#[derive(Clone)]
pub struct Item {
    pub name: &'static str,
    pub payload: Arc<RawValue>,
}

/// What a queued thing weighs against the outbox's byte limit.
pub trait Weigh {
    fn weight(&self) -> usize;
}

impl Weigh for Item {
    fn weight(&self) -> usize {
        self.payload.get().len() + self.name.len()
    }
}

impl Weigh for bytes::Bytes {
    fn weight(&self) -> usize {
        self.len()
    }
}

pub struct Outbox<T = Item> {
    state: Mutex<State<T>>,
    ready: Notify,
    /// Something was taken out (or the outbox closed): room may have been made.
    taken: Notify,
    limit: usize,
}

struct State<T> {
    queue: VecDeque<T>,
    bytes: usize,
    closed: bool,
    /// Nothing more is taken; what is queued still goes out.
    finishing: bool,
}

/// The outbox is over its byte limit (or closed): the client must go.
#[derive(Debug)]
pub struct Overflow {
    pub queued_bytes: usize,
}

impl<T: Weigh> Outbox<T> {
    pub fn new(limit: usize) -> Self {
        let state = State { queue: VecDeque::new(), bytes: 0, closed: false, finishing: false };
        Self { state: Mutex::new(state), ready: Notify::new(), taken: Notify::new(), limit }
    }

    /// Queue an event; gives back the bytes now queued. One event larger than the limit still
    /// goes through an empty outbox, so a big file event does not disconnect every client.
    pub fn push(&self, item: T) -> Result<usize, Overflow> {
        let size = item.weight();
        let mut st = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if st.closed || st.finishing {
            return Err(Overflow { queued_bytes: st.bytes });
        }
        if !st.queue.is_empty() && st.bytes + size > self.limit {
            return Err(Overflow { queued_bytes: st.bytes + size });
        }
        st.bytes += size;
        let queued = st.bytes;
        st.queue.push_back(item);
        drop(st);
        self.ready.notify_one();
        Ok(queued)
    }

    /// Drop everything queued and end the pump.
    pub fn close(&self) {
        let mut st = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        st.closed = true;
        st.queue.clear();
        st.bytes = 0;
        drop(st);
        self.ready.notify_one();
        self.taken.notify_waiters();
    }

    /// The byte limit.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Wait until at most `bytes` are queued (true) or the outbox is closed (false): a producer
    /// with a backlog (a replay) feeds it as the client takes it, never past the limit.
    pub async fn wait_for_room(&self, bytes: usize) -> bool {
        loop {
            let taken = self.taken.notified();
            tokio::pin!(taken);
            // Registered before the check, so a take in between still wakes us.
            taken.as_mut().enable();
            {
                let st = self.state.lock().unwrap_or_else(PoisonError::into_inner);
                if st.closed {
                    return false;
                }
                if st.bytes <= bytes {
                    return true;
                }
            }
            taken.await;
        }
    }

    /// Take nothing more, and end the pump once what is queued has gone.
    pub fn finish(&self) {
        self.state.lock().unwrap_or_else(PoisonError::into_inner).finishing = true;
        self.ready.notify_one();
    }

    pub fn is_closed(&self) -> bool {
        self.state.lock().unwrap_or_else(PoisonError::into_inner).closed
    }

    pub fn queued_bytes(&self) -> usize {
        self.state.lock().unwrap_or_else(PoisonError::into_inner).bytes
    }

    /// The next event, or `None` once closed.
    pub async fn next(&self) -> Option<T> {
        loop {
            {
                let mut st = self.state.lock().unwrap_or_else(PoisonError::into_inner);
                if st.closed {
                    return None;
                }
                if let Some(item) = st.queue.pop_front() {
                    st.bytes -= item.weight();
                    drop(st);
                    self.taken.notify_waiters();
                    return Some(item);
                }
                if st.finishing {
                    return None;
                }
            }
            // A push between the check and here leaves a permit: no wake-up is lost.
            self.ready.notified().await;
        }
    }
}

/// How long to wait before offering an event again to an engine whose buffer is full: first
/// yield (its writer is usually just behind), then back off up to 50 ms.
pub async fn wait_for_room(attempt: u32) {
    if attempt < 32 {
        tokio::task::yield_now().await;
    } else {
        let ms = 1u64 << (attempt - 32).min(6);
        tokio::time::sleep(Duration::from_millis(ms.min(50))).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(len: usize) -> Item {
        let s = format!("\"{}\"", "x".repeat(len - 2));
        Item { name: "e", payload: Arc::from(RawValue::from_string(s).unwrap()) }
    }

    #[tokio::test]
    async fn bounded_in_bytes_with_one_oversized_event_allowed() {
        let o: Outbox = Outbox::new(100);
        o.push(item(500)).expect("a single big event passes an empty outbox");
        assert!(o.push(item(10)).is_err(), "nothing more while over the limit");
        assert_eq!(o.next().await.unwrap().payload.get().len(), 500);
        for _ in 0..9 {
            o.push(item(10)).unwrap();
        }
        assert_eq!(o.queued_bytes(), 99);
        assert!(o.push(item(10)).is_err());
        o.close();
        assert!(o.next().await.is_none());
    }

    #[tokio::test]
    async fn a_finished_outbox_drains_then_ends() {
        let o: Outbox = Outbox::new(100);
        o.push(item(10)).unwrap();
        o.finish();
        assert!(o.push(item(10)).is_err(), "nothing new once finishing");
        assert!(o.next().await.is_some());
        assert!(o.next().await.is_none());
    }
}
