//! Forwards core domain events to the JS `EventBus` (an `EventEmitter`).
//!
//! Payloads cross as JSON strings (one `JSON.parse` on the JS side beats building the object
//! through napi calls). When no JS listener is registered the flag is off and an event costs
//! one atomic load. Events waiting for the JS thread are bounded in bytes: while JS is too busy
//! to take them, further events are dropped with a log line instead of growing memory.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use agent_runtime::{DomainEvent, EventBus};
use napi::bindgen_prelude::*;
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};

pub type EventFn = ThreadsafeFunction<FnArgs<(String, String)>, (), FnArgs<(String, String)>, Status, false, true>;

/// Bytes of events that may wait for the JS thread.
const MAX_QUEUED_BYTES: usize = 64 * 1024 * 1024;

/// Gives an event's bytes back when JS has taken it (or the call was abandoned).
struct Queued {
    bytes: Arc<AtomicUsize>,
    size: usize,
}

impl Drop for Queued {
    fn drop(&mut self) {
        self.bytes.fetch_sub(self.size, Ordering::Relaxed);
    }
}

pub fn forward(bus: &EventBus, sink: EventFn, enabled: Arc<AtomicBool>) {
    let queued = Arc::new(AtomicUsize::new(0));
    let dropped = AtomicU64::new(0);
    bus.subscribe(move |e: &DomainEvent| {
        // Another node's events reach its own `runtime.eventBus`, not this one's.
        if !enabled.load(Ordering::Relaxed) || e.remote {
            return;
        }
        let payload = if e.payload.is_null() { String::new() } else { e.payload.to_string() };
        let size = payload.len() + e.name.len();
        if queued.load(Ordering::Relaxed) + size > MAX_QUEUED_BYTES {
            if dropped.fetch_add(1, Ordering::Relaxed) == 0 {
                tracing::warn!(
                    event = e.name,
                    limit = MAX_QUEUED_BYTES,
                    "the JS thread is not taking events: dropping EventBus events until it catches up"
                );
            }
            return;
        }
        let lost = dropped.swap(0, Ordering::Relaxed);
        if lost > 0 {
            tracing::warn!(dropped = lost, "the JS thread caught up; EventBus events were dropped meanwhile");
        }
        queued.fetch_add(size, Ordering::Relaxed);
        let ticket = Queued { bytes: queued.clone(), size };
        // NonBlocking on napi's queue keeps emit order and never waits; the ticket bounds it.
        sink.call_with_return_value(
            (e.name.to_string(), payload).into(),
            ThreadsafeFunctionCallMode::NonBlocking,
            move |_, _| {
                drop(ticket);
                Ok(())
            },
        );
    });
}
