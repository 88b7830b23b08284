//! Core of `agent-runtime-native`: a plain async Rust library with no napi dependency.
//!
//! Modules, one per concept of the reference runtime:
//! - [`config`]: runtime options (timeouts, limits, log level) and their validation.
//! - [`events`]: domain events (`session:status`, `session:block:*`, `sessions:changed`, ...) and the bus.
//! - [`persistence`]: the `PersistenceAdapter` contract, its record types, and the JSON bridge
//!   that turns an untyped adapter (the JS one) into a typed, time-bounded one.
//! - [`agent`]: conversation blocks and the per-architecture transcript parsers.
//! - [`session`]: `SessionManager` and `AgentSession` (lifecycle, state, persistence order).
//! - [`runtime`]: `AgentRuntime`, which owns all of the above.
//! - [`cluster`]: several processes sharing Redis (leases, the shared event log, forwarding).
//! - [`transport`]: the REST router (axum), served through `fetch` from JS or natively.
//! - [`model_proxy`] and [`usage`]: the model API seen from sandboxes (keys stay on the host),
//!   token usage, prices and budgets.
//!
//! Not to be confused with the top-level `sandbox/` folder of the npm package, which holds
//! scripts that run *inside* a sandbox.

pub mod agent;
pub mod cluster;
pub mod config;
pub mod error;
pub mod event_log;
pub mod events;
pub mod json;
pub mod logging;
pub mod metrics;
pub mod model_proxy;
pub mod persistence;
pub mod runtime;
pub mod sandbox;
pub mod session;
pub mod sync;
pub mod time;
pub mod transport;
pub mod usage;

pub use config::RuntimeOptions;
pub use error::{Error, Result};
pub use events::{DomainEvent, EventBus};
pub use runtime::AgentRuntime;
