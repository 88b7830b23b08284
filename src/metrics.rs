//! Prometheus metrics of one runtime (`GET /metrics` when `metrics` is on, and
//! `runtime.metrics()`): sessions, turns, sandboxes, adapter calls, Socket.IO clients, the
//! event log and model usage. Counters and histograms are updated where things happen;
//! gauges that describe current state are read from the runtime when scraped.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::persistence::{
    AgentProfile, AgentProfileSummary, PResult, PersistenceAdapter, SessionRecord, SessionRecordUpdate, StoredSession,
    WorkspaceFile,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Outcome {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Provider {
    provider: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Method {
    method: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Model {
    model: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModelTokens {
    model: String,
    kind: &'static str,
}

/// Seconds, from 5 ms to about 80 s.
fn short() -> Histogram {
    Histogram::new(exponential_buckets(0.005, 2.0, 15))
}

/// Seconds, from 50 ms to about 27 min.
fn long() -> Histogram {
    Histogram::new(exponential_buckets(0.05, 2.0, 16))
}

/// What the runtime is now, read when metrics are scraped.
#[derive(Debug, Default, Clone, Copy)]
pub struct Snapshot {
    pub sessions_loaded: usize,
    pub sessions_active: usize,
    pub event_log_events: usize,
    pub event_log_bytes: usize,
}

pub struct Metrics {
    registry: Registry,
    sessions_loaded: Gauge,
    sessions_active: Gauge,
    socketio_clients: Gauge,
    event_log_events: Gauge,
    event_log_bytes: Gauge,
    turns: Family<Outcome, Counter>,
    turn_seconds: Histogram,
    first_token_seconds: Histogram,
    sandbox_starts: Family<Provider, Counter>,
    sandbox_start_seconds: Family<Provider, Histogram, fn() -> Histogram>,
    adapter_seconds: Family<Method, Histogram, fn() -> Histogram>,
    adapter_failures: Family<Method, Counter>,
    tokens: Family<ModelTokens, Counter>,
    cost: Family<Model, Counter<f64, AtomicU64>>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut r = Registry::with_prefix("agent_runtime");
        let m = Self {
            sessions_loaded: Gauge::default(),
            sessions_active: Gauge::default(),
            socketio_clients: Gauge::default(),
            event_log_events: Gauge::default(),
            event_log_bytes: Gauge::default(),
            turns: Family::default(),
            turn_seconds: long(),
            first_token_seconds: short(),
            sandbox_starts: Family::default(),
            sandbox_start_seconds: Family::new_with_constructor(short),
            adapter_seconds: Family::new_with_constructor(short),
            adapter_failures: Family::default(),
            tokens: Family::default(),
            cost: Family::default(),
            registry: Registry::default(),
        };
        r.register("sessions_loaded", "Sessions held in memory", m.sessions_loaded.clone());
        r.register("sessions_active", "Loaded sessions with a running sandbox", m.sessions_active.clone());
        r.register("socketio_clients", "Connected Socket.IO clients", m.socketio_clients.clone());
        r.register("event_log_events", "Events kept in the session event logs", m.event_log_events.clone());
        r.register("event_log_bytes", "Bytes kept in the session event logs", m.event_log_bytes.clone());
        r.register("turns", "Turns by outcome: started, completed, failed, interrupted", m.turns.clone());
        r.register("turn_duration_seconds", "From a turn's start to its end", m.turn_seconds.clone());
        r.register(
            "time_to_first_token_seconds",
            "From a turn's start to the agent's first text, thinking or tool block",
            m.first_token_seconds.clone(),
        );
        r.register("sandbox_starts", "Sandboxes started, by provider", m.sandbox_starts.clone());
        r.register(
            "sandbox_start_duration_seconds",
            "Time to a ready sandbox, by provider",
            m.sandbox_start_seconds.clone(),
        );
        r.register("adapter_call_duration_seconds", "Persistence adapter calls, by method", m.adapter_seconds.clone());
        r.register(
            "adapter_call_failures",
            "Persistence adapter calls that failed, by method",
            m.adapter_failures.clone(),
        );
        r.register(
            "model_tokens",
            "Model tokens by model and kind (input, output, cache_read, cache_write)",
            m.tokens.clone(),
        );
        r.register("model_cost_usd", "Model cost in US dollars, by model (priced calls only)", m.cost.clone());
        Self { registry: r, ..m }
    }
}

impl Metrics {
    /// The Prometheus text exposition of everything, with `now` as the current state.
    pub fn render(&self, now: Snapshot) -> String {
        let set = |g: &Gauge, v: usize| {
            g.set(i64::try_from(v).unwrap_or(i64::MAX));
        };
        set(&self.sessions_loaded, now.sessions_loaded);
        set(&self.sessions_active, now.sessions_active);
        set(&self.event_log_events, now.event_log_events);
        set(&self.event_log_bytes, now.event_log_bytes);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("writing to a String");
        out
    }

    /// One more Socket.IO client, until the returned guard is dropped.
    pub fn client_connected(self: &Arc<Self>) -> ClientCounted {
        self.socketio_clients.inc();
        ClientCounted(self.clone())
    }

    pub fn turn_started(&self) {
        self.turns.get_or_create(&Outcome { outcome: "started" }).inc();
    }

    /// `outcome`: completed, failed or interrupted.
    pub fn turn_ended(&self, outcome: &'static str, took: Duration) {
        self.turns.get_or_create(&Outcome { outcome }).inc();
        self.turn_seconds.observe(took.as_secs_f64());
    }

    pub fn first_token(&self, after: Duration) {
        self.first_token_seconds.observe(after.as_secs_f64());
    }

    pub fn sandbox_started(&self, provider: &str, took: Duration) {
        let p = Provider { provider: provider.to_string() };
        self.sandbox_starts.get_or_create(&p).inc();
        self.sandbox_start_seconds.get_or_create(&p).observe(took.as_secs_f64());
    }

    pub fn model_call(&self, call: &crate::usage::Call) {
        let t = &call.tokens;
        for (kind, n) in [
            ("input", t.input_tokens),
            ("output", t.output_tokens),
            ("cache_read", t.cache_read_tokens),
            ("cache_write", t.cache_write_tokens),
        ] {
            self.tokens.get_or_create(&ModelTokens { model: call.model.clone(), kind }).inc_by(n);
        }
        if let Some(c) = call.cost_usd {
            self.cost.get_or_create(&Model { model: call.model.clone() }).inc_by(c);
        }
    }

    fn adapter_call(&self, method: &'static str, took: Duration, ok: bool) {
        self.adapter_seconds.get_or_create(&Method { method }).observe(took.as_secs_f64());
        if !ok {
            self.adapter_failures.get_or_create(&Method { method }).inc();
        }
    }
}

/// Counts a connected Socket.IO client while it lives.
pub struct ClientCounted(Arc<Metrics>);

impl Drop for ClientCounted {
    fn drop(&mut self) {
        self.0.socketio_clients.dec();
    }
}

/// A persistence adapter whose calls are timed and counted.
pub struct Measured {
    inner: Arc<dyn PersistenceAdapter>,
    metrics: Arc<Metrics>,
}

impl Measured {
    pub fn new(inner: Arc<dyn PersistenceAdapter>, metrics: Arc<Metrics>) -> Self {
        Self { inner, metrics }
    }

    async fn timed<T>(&self, method: &'static str, f: impl std::future::Future<Output = PResult<T>>) -> PResult<T> {
        let started = Instant::now();
        let span = tracing::info_span!("persistence", otel.name = method, db.operation.name = method);
        let r = tracing::Instrument::instrument(f, span).await;
        self.metrics.adapter_call(method, started.elapsed(), r.is_ok());
        r
    }
}

#[async_trait]
impl PersistenceAdapter for Measured {
    async fn list_all_sessions(&self) -> PResult<Vec<SessionRecord>> {
        self.timed("listAllSessions", self.inner.list_all_sessions()).await
    }
    async fn load_session(&self, session_id: &str) -> PResult<Option<StoredSession>> {
        self.timed("loadSession", self.inner.load_session(session_id)).await
    }
    async fn create_session_record(&self, record: &SessionRecord) -> PResult<()> {
        self.timed("createSessionRecord", self.inner.create_session_record(record)).await
    }
    async fn update_session_record(&self, session_id: &str, updates: &SessionRecordUpdate) -> PResult<()> {
        self.timed("updateSessionRecord", self.inner.update_session_record(session_id, updates)).await
    }
    async fn save_transcript(&self, session_id: &str, raw_transcript: &str) -> PResult<()> {
        self.timed("saveTranscript", self.inner.save_transcript(session_id, raw_transcript)).await
    }
    async fn save_workspace_file(&self, session_id: &str, file: &WorkspaceFile) -> PResult<()> {
        self.timed("saveWorkspaceFile", self.inner.save_workspace_file(session_id, file)).await
    }
    async fn delete_session_file(&self, session_id: &str, path: &str) -> PResult<()> {
        self.timed("deleteSessionFile", self.inner.delete_session_file(session_id, path)).await
    }
    async fn list_agent_profiles(&self) -> PResult<Vec<AgentProfileSummary>> {
        self.timed("listAgentProfiles", self.inner.list_agent_profiles()).await
    }
    async fn load_agent_profile(&self, profile_id: &str) -> PResult<Option<AgentProfile>> {
        self.timed("loadAgentProfile", self.inner.load_agent_profile(profile_id)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_histograms_and_the_scraped_state() {
        let m = Metrics::default();
        m.turn_started();
        m.turn_ended("completed", Duration::from_millis(1500));
        m.first_token(Duration::from_millis(30));
        m.sandbox_started("local", Duration::from_millis(12));
        m.model_call(&crate::usage::Call {
            model: "claude-sonnet-4-5".into(),
            conversation_id: "main".into(),
            tokens: crate::usage::Tokens { input_tokens: 10, output_tokens: 5, ..Default::default() },
            cost_usd: Some(0.25),
        });
        m.adapter_call("saveTranscript", Duration::from_millis(3), false);
        let m = Arc::new(m);
        let (gone, _a, _b) = (m.client_connected(), m.client_connected(), m.client_connected());
        drop(gone);
        let text = m.render(Snapshot { sessions_loaded: 2, ..Default::default() });
        for line in [
            "agent_runtime_sessions_loaded 2",
            "agent_runtime_socketio_clients 2",
            "agent_runtime_turns_total{outcome=\"started\"} 1",
            "agent_runtime_turns_total{outcome=\"completed\"} 1",
            "agent_runtime_turn_duration_seconds_count 1",
            "agent_runtime_time_to_first_token_seconds_count 1",
            "agent_runtime_sandbox_starts_total{provider=\"local\"} 1",
            "agent_runtime_model_tokens_total{model=\"claude-sonnet-4-5\",kind=\"output\"} 5",
            "agent_runtime_model_cost_usd_total{model=\"claude-sonnet-4-5\"} 0.25",
            "agent_runtime_adapter_call_failures_total{method=\"saveTranscript\"} 1",
        ] {
            assert!(text.contains(line), "missing {line:?} in:\n{text}");
        }
    }
}
