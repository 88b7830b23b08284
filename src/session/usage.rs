//! A session's side of the model proxy: the token its sandbox uses as its API key, what its
//! model calls used (`session:usage`, `runtime.usage`, stored with its ledger), and its budget.

use std::sync::Arc;

use serde_json::{json, Value};

use super::AgentSession;
use crate::error::{Error, Result};
use crate::events::DomainEvent;
use crate::model_proxy::{Meter, ModelProxy};
use crate::sync::Locked as _;
use crate::usage::{Budget, Call, Sum};

/// The running turn's share.
#[derive(Debug, Default)]
pub struct TurnUsage {
    pub sum: Sum,
    /// The budget stop was announced in this turn (once is enough).
    pub stopped: bool,
}

impl super::SessionContext {
    /// The model proxy, started on first use when it is on and there is a key to keep out of
    /// sandboxes (without `ANTHROPIC_API_KEY` in their environment there is nothing to protect
    /// or count).
    pub async fn model_proxy(&self) -> Result<Option<Arc<ModelProxy>>> {
        self.model_proxy.get_or_try_init(|| start_proxy(&self.options)).await.cloned()
    }
}

async fn start_proxy(options: &crate::config::RuntimeOptions) -> Result<Option<Arc<ModelProxy>>> {
    let Some(cfg) = &options.model_proxy else { return Ok(None) };
    let env = &options.sandbox_env.0;
    let Some(api_key) = env.get("ANTHROPIC_API_KEY").filter(|k| !k.is_empty()) else {
        tracing::info!("model proxy not started: no ANTHROPIC_API_KEY for sandboxes");
        return Ok(None);
    };
    let listen = format!("{}:{}", cfg.host, cfg.port)
        .parse()
        .map_err(|e| Error::Config(format!("modelProxy.host/port: {e}")))?;
    let opts = crate::model_proxy::ProxyOptions {
        listen,
        public_url: cfg.public_url.clone(),
        upstream: env.get("ANTHROPIC_BASE_URL").cloned().unwrap_or_else(|| "https://api.anthropic.com".into()),
        api_key: api_key.clone(),
        read_timeout: cfg.timeout,
    };
    let proxy = ModelProxy::start(opts, options.pricing.clone())
        .await
        .map_err(|e| Error::Config(format!("the model proxy cannot listen on {listen}: {e}")))?;
    if matches!(options.provider, crate::config::ProviderKind::Modal) && cfg.public_url.is_none() {
        tracing::warn!(
            "Modal sandboxes cannot reach this host's loopback: they get ANTHROPIC_API_KEY itself; set \
             modelProxy.publicUrl to where the model proxy is reachable to keep the key out of them"
        );
    }
    Ok(Some(Arc::new(proxy)))
}

impl AgentSession {
    /// The environment of a new sandbox: the model API through the proxy, with this session's
    /// token as its key, when the proxy runs and the sandbox can reach it.
    pub(super) async fn model_env(
        self: &Arc<Self>,
        env: &mut std::collections::BTreeMap<String, String>,
        remote: bool,
    ) -> Result<()> {
        let Some(proxy) = self.ctx.model_proxy().await? else { return Ok(()) };
        if remote && !proxy.is_public() {
            return Ok(()); // Modal without modelProxy.publicUrl: the key goes in (warned at start).
        }
        let me: Arc<dyn Meter> = self.clone();
        let token = proxy.grant(&self.session_id, Arc::downgrade(&me));
        env.insert("ANTHROPIC_BASE_URL".into(), proxy.base_url());
        env.insert("ANTHROPIC_API_KEY".into(), token);
        // Nothing else that could carry a credential of the host's.
        env.remove("ANTHROPIC_AUTH_TOKEN");
        Ok(())
    }

    /// The session unloaded: its token stops working.
    pub(super) fn revoke_model_access(&self) {
        if let Some(Some(proxy)) = self.ctx.model_proxy.get() {
            proxy.revoke(&self.session_id);
        }
    }

    /// `sessionOptions.budget` over the runtime's `budget`.
    pub fn budget(&self) -> Budget {
        let own = self
            .data
            .locked()
            .session_options
            .get("budget")
            .and_then(|b| serde_json::from_value::<Budget>(b.clone()).ok())
            .unwrap_or_default();
        own.over(self.ctx.options.budget)
    }

    /// Sandbox lifetime so far: ended sandboxes plus the running one.
    pub fn sandbox_seconds(&self) -> f64 {
        let running = self.sandbox_clock.locked().map(|t| t.elapsed().as_secs_f64()).unwrap_or(0.0);
        self.data.locked().ledger.usage.sandbox_seconds + running
    }

    /// Why no more model calls may be made (`None`: within budget).
    pub fn budget_spent(&self) -> Option<String> {
        let used = self.data.locked().ledger.usage.total.clone();
        self.budget().exceeded(&used, self.sandbox_seconds())
    }

    /// Refuse a new message when the budget is spent (402 over REST).
    pub(super) fn check_budget(&self) -> Result<()> {
        match self.budget_spent() {
            Some(why) => Err(Error::BudgetExceeded(format!(
                "Budget exceeded for session {}: {why}; raise sessionOptions.budget to go on",
                self.session_id
            ))),
            None => Ok(()),
        }
    }

    /// When the running turn must stop for its budget (`maxTurnMs` from now, or the sandbox
    /// time `maxSandboxSeconds` leaves), whichever comes first, and which limit it is.
    pub(super) fn budget_deadline(&self) -> (Option<tokio::time::Instant>, String) {
        let budget = self.budget();
        let now = tokio::time::Instant::now();
        let by_turn = budget
            .max_turn_ms
            .map(|ms| (now + std::time::Duration::from_millis(ms as u64), format!("maxTurnMs {ms} reached")));
        let by_sandbox = budget.max_sandbox_seconds.map(|max| {
            let left = (max - self.sandbox_seconds()).max(0.0);
            (now + std::time::Duration::from_secs_f64(left), format!("maxSandboxSeconds {max} reached"))
        });
        match [by_turn, by_sandbox].into_iter().flatten().min_by_key(|(at, _)| *at) {
            Some((at, why)) => (Some(at), why),
            None => (None, String::new()),
        }
    }

    /// A turn begins: its usage starts from zero.
    pub(super) fn begin_turn_usage(&self) {
        *self.turn_usage.locked() = TurnUsage::default();
    }

    /// The budget ran out during a turn: say so once, and stop the turn the interrupt way.
    pub(super) fn stop_for_budget(&self, why: &str) {
        let first = !std::mem::replace(&mut self.turn_usage.locked().stopped, true);
        if first {
            tracing::warn!(session_id = %self.session_id, "{why}: stopping the turn");
            self.ctx.events.emit(DomainEvent::error(
                &self.session_id,
                &format!("Budget exceeded: {why}"),
                Some("BUDGET_EXCEEDED"),
            ));
            self.interrupt(false);
        }
    }

    /// `runtime.usage` (null before the first model call).
    pub fn usage_view(&self) -> Option<Value> {
        let d = self.data.locked();
        let mut usage = d.ledger.usage.clone();
        drop(d);
        usage.sandbox_seconds = self.sandbox_seconds();
        (usage.total.calls > 0 || usage.sandbox_seconds > 0.0).then(|| serde_json::to_value(&usage).unwrap_or_default())
    }
}

impl Meter for AgentSession {
    fn admit(&self) -> std::result::Result<(), String> {
        match self.budget_spent() {
            None => Ok(()),
            Some(why) => {
                self.stop_for_budget(&why);
                Err(format!("Budget exceeded: {why}"))
            }
        }
    }

    fn span(&self) -> tracing::Span {
        self.turn_span.locked().clone().unwrap_or_else(tracing::Span::none)
    }

    fn record(&self, call: Call) {
        self.ctx.metrics.model_call(&call);
        let (turn, total) = {
            let mut d = self.data.locked();
            d.ledger.usage.add(&call);
            let mut t = self.turn_usage.locked();
            t.sum.add(&call);
            (t.sum.clone(), d.ledger.usage.total.clone())
        };
        self.store_ledger();
        let payload = json!({
            "sessionId": self.session_id,
            "call": call,
            "turn": turn,
            "total": total,
            "costUsd": total.cost_usd,
        });
        self.ctx.events.emit(DomainEvent::usage(&self.session_id, payload));
    }
}
