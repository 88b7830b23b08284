//! Forwards core domain events to the JS `EventBus` (an `EventEmitter`).
//!
//! Payloads cross as JSON strings (one `JSON.parse` on the JS side beats building the object
//! through napi calls). When no JS listener is registered the flag is off and an event costs
//! one atomic load.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use agent_runtime::{DomainEvent, EventBus};
use napi::bindgen_prelude::*;
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};

pub type EventFn = ThreadsafeFunction<FnArgs<(String, String)>, (), FnArgs<(String, String)>, Status, false, true>;

pub fn forward(bus: &EventBus, sink: EventFn, enabled: Arc<AtomicBool>) {
    bus.subscribe(move |e: &DomainEvent| {
        if !enabled.load(Ordering::Relaxed) {
            return;
        }
        let payload = if e.payload.is_null() { String::new() } else { e.payload.to_string() };
        // NonBlocking on an unbounded queue: never waits, keeps emit order.
        sink.call((e.name.to_string(), payload).into(), ThreadsafeFunctionCallMode::NonBlocking);
    });
}
