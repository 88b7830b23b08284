//! `SessionManager`: the loaded sessions, create / load / unload, and the list view.

mod activation;
mod agent_session;
mod control;
pub mod files;
pub mod ledger;
mod monitor;
pub mod outbox;
pub mod permissions;
mod pool;
mod state;
mod turn;
mod usage;
mod workspace;

pub use agent_session::{AgentSession, CreateSessionArgs, SessionContext};
pub use control::PermissionAnswer;
pub use ledger::MessageMode;
pub use state::{QueuedMessage, RequestView, RuntimeState, SandboxState, SandboxStatus};
pub use turn::Turn;

use crate::sync::{Locked as _, RwLocked as _};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use futures::future::{BoxFuture, FutureExt, Shared};
use serde_json::{json, Value};

use crate::error::{Error, Result};
use crate::events::DomainEvent;

type LoadFuture = Shared<BoxFuture<'static, Result<Arc<AgentSession>>>>;

pub struct SessionManager {
    ctx: Arc<SessionContext>,
    sessions: RwLock<HashMap<String, Arc<AgentSession>>>,
    /// Loads in flight, so concurrent loads of one id share one adapter call and one instance.
    loading: Mutex<HashMap<String, LoadFuture>>,
    sweep: std::sync::OnceLock<()>,
    /// Sessions started ahead of `createSession` (`warmPool`).
    pool: pool::WarmPool,
}

impl SessionManager {
    pub fn new(ctx: SessionContext) -> Arc<Self> {
        let m = Arc::new(Self {
            ctx: Arc::new(ctx),
            sessions: Default::default(),
            loading: Default::default(),
            sweep: Default::default(),
            pool: Default::default(),
        });
        let _ = m.ctx.manager.set(Arc::downgrade(&m));
        m
    }

    pub fn context(&self) -> &SessionContext {
        &self.ctx
    }

    pub fn get(&self, id: &str) -> Option<Arc<AgentSession>> {
        self.sessions.read_locked().get(id).cloned()
    }

    pub fn is_loaded(&self, id: &str) -> bool {
        self.sessions.read_locked().contains_key(id)
    }

    pub fn loaded_ids(&self) -> Vec<String> {
        self.sessions.read_locked().keys().cloned().collect()
    }

    pub fn loaded(&self) -> Vec<Arc<AgentSession>> {
        self.sessions.read_locked().values().cloned().collect()
    }

    pub fn loaded_count(&self) -> usize {
        self.sessions.read_locked().len()
    }

    fn insert(self: &Arc<Self>, session: Arc<AgentSession>) {
        // Started with the first session (always inside the async runtime; the manager may be
        // built outside one).
        self.sweep.get_or_init(|| {
            tokio::spawn(monitor::idle_sweep(Arc::downgrade(self), self.ctx.options.idle_timeout));
        });
        self.sessions.write_locked().insert(session.session_id.clone(), session);
        self.ctx.events.emit(DomainEvent::sessions_changed());
    }

    /// Below `maxLoadedSessions`, or made so by unloading the longest-idle stored session.
    async fn make_room(&self) -> Result<()> {
        let max = self.ctx.options.max_loaded_sessions;
        while self.loaded_count() >= max {
            let mut idle: Vec<_> =
                self.loaded().into_iter().filter(|s| s.is_idle() && !s.is_closing() && s.is_stored()).collect();
            idle.sort_by_key(|s| s.data.locked().last_activity);
            let Some(victim) = idle.first() else {
                return Err(Error::Capacity(format!(
                    "maxLoadedSessions ({max}) reached and every loaded session is in use"
                )));
            };
            tracing::info!(session_id = %victim.session_id, "unloading the longest-idle session to make room");
            self.unload_session(&victim.session_id).await?;
        }
        Ok(())
    }

    pub async fn create_session(self: &Arc<Self>, args: CreateSessionArgs) -> Result<Arc<AgentSession>> {
        self.make_room().await?;
        let warm = self.take_warm(&args).await.inspect_err(|e| {
            tracing::error!(error = %e, "failed to create session");
        })?;
        let session = match warm {
            Some(s) => s,
            None => AgentSession::create(args, self.ctx.clone()).await.inspect_err(|e| {
                tracing::error!(error = %e, "failed to create session");
            })?,
        };
        tracing::info!(session_id = %session.session_id, architecture = session.architecture.as_str(), "session created");
        self.insert(session.clone());
        Ok(session)
    }

    /// Return the loaded session, or load it from persistence (once, however many callers ask).
    /// A session being unloaded is waited for: it either stays (its state could not be stored)
    /// or is loaded afresh, never running twice.
    pub async fn load_session(self: &Arc<Self>, id: &str) -> Result<Arc<AgentSession>> {
        loop {
            match self.get(id) {
                Some(s) if s.is_closing() => s.closing_done().await,
                Some(s) => return Ok(s),
                None => break,
            }
        }
        let fut = {
            let mut loading = self.loading.locked();
            loading
                .entry(id.to_string())
                .or_insert_with(|| {
                    let this = self.clone();
                    let id = id.to_string();
                    async move {
                        if let Err(e) = this.make_room().await {
                            this.loading.locked().remove(&id);
                            return Err(e);
                        }
                        if let Err(e) = this.take_lease(&id).await {
                            this.loading.locked().remove(&id);
                            return Err(e);
                        }
                        // A panic in a load must not poison the shared future for later callers.
                        let result = std::panic::AssertUnwindSafe(AgentSession::load(&id, this.ctx.clone()))
                            .catch_unwind()
                            .await
                            .unwrap_or_else(|_| Err(Error::Sandbox(format!("loading session {id} panicked"))));
                        if let (Err(_), Some(c)) = (&result, &this.ctx.cluster) {
                            c.release(&id);
                        }
                        if let Ok(s) = &result {
                            // A create or load may have won the race while we waited on the adapter.
                            if let Some(existing) = this.get(&id) {
                                this.loading.locked().remove(&id);
                                return Ok(existing);
                            }
                            this.insert(s.clone());
                            tracing::info!(session_id = %id, "session loaded");
                            s.resume();
                        }
                        this.loading.locked().remove(&id);
                        result
                    }
                    .boxed()
                    .shared()
                })
                .clone()
        };
        fut.await
    }

    /// Unload: store everything and stop the sandbox, drop from memory, then announce
    /// `isLoaded: false` and the list change. When the session's state cannot be stored it
    /// stays loaded (with its sandbox) and the error is returned; the idle sweep tries again.
    pub async fn unload_session(&self, id: &str) -> Result<()> {
        let Some(session) = self.get(id) else {
            return Err(Error::SessionNotLoaded(id.to_string()));
        };
        let begun = session.begin_closing();
        if begun && !self.ctx.shutting_down.load(std::sync::atomic::Ordering::SeqCst) {
            // At shutdown they stay in the ledger and run after the restart.
            session.cancel_pending();
        }
        if !begun {
            // Another unload is under way: its outcome is ours.
            session.closing_done().await;
            return match self.get(id) {
                Some(s) if Arc::ptr_eq(&s, &session) => Err(Error::SessionClosing(id.to_string())),
                _ => Ok(()),
            };
        }
        if let Err(e) = session.destroy().await {
            session.unload_wanted.store(true, std::sync::atomic::Ordering::SeqCst);
            session.end_closing(false);
            tracing::error!(session_id = %id, error = %e, "session kept loaded: its state is not stored yet");
            return Err(e);
        }
        self.sessions.write_locked().remove(id);
        session.revoke_model_access();
        session.end_closing(true);
        self.ctx.events.emit(DomainEvent::status(id, &RuntimeState::UNLOADED));
        // Its last event logged, the session's log goes with it (ids from it then read as
        // unknown: `reset`; in a cluster the shared log stays).
        self.ctx.events.log().forget(id);
        if let Some(c) = &self.ctx.cluster {
            c.release(id);
        }
        self.ctx.events.emit(DomainEvent::sessions_changed());
        tracing::info!(session_id = %id, "session unloaded");
        Ok(())
    }

    /// In a cluster: hold session `id`'s lease before loading it (another node holding it:
    /// [`Error::OwnedElsewhere`]), and continue its event numbering from the shared log.
    async fn take_lease(&self, id: &str) -> Result<()> {
        let Some(c) = &self.ctx.cluster else { return Ok(()) };
        match c.acquire(id).await? {
            crate::cluster::lease::Taken::Ours => {}
            crate::cluster::lease::Taken::By(node) => {
                return Err(Error::OwnedElsewhere { session: id.to_string(), node });
            }
        }
        if let Err(e) = c.adopt_log(id).await {
            c.release(id);
            return Err(e);
        }
        Ok(())
    }

    /// Another node holds session `id` now: stop its sandbox and forget it here, storing
    /// nothing (the fence would refuse it; the new holder loaded what was stored).
    pub fn drop_lost(self: &Arc<Self>, id: String) {
        let this = self.clone();
        tokio::spawn(async move {
            let Some(session) = this.sessions.write_locked().remove(&id) else { return };
            session.begin_closing();
            session.abandon().await;
            session.revoke_model_access();
            session.end_closing(true);
            this.ctx.events.log().forget(&id);
            tracing::warn!(session_id = %id, "session dropped: another node holds it now");
        });
    }

    /// Loaded sessions with writes owed to storage that are failing, and the last error.
    pub fn unstored_sessions(&self) -> Vec<(String, String)> {
        let sessions: Vec<_> = self.sessions.read_locked().values().cloned().collect();
        sessions.iter().filter_map(|s| s.storage_error().map(|e| (s.session_id.clone(), e.to_string()))).collect()
    }

    /// The persisted list enriched with each session's runtime state (`SessionListItem[]`).
    pub async fn all_sessions(&self) -> Result<Vec<Value>> {
        let records = self.ctx.persistence.list_all_sessions().await?;
        // In a cluster the other nodes' sessions are loaded too, there.
        let (node, remote) = match &self.ctx.cluster {
            Some(c) => {
                let ids: Vec<String> =
                    records.iter().filter(|r| !self.is_loaded(&r.session_id)).map(|r| r.session_id.clone()).collect();
                (Some(c.node_id()), c.runtime_states(&ids).await.unwrap_or_default())
            }
            None => (None, Default::default()),
        };
        Ok(records
            .into_iter()
            .map(|mut r| {
                ledger::Ledger::strip(&mut r.metadata);
                let runtime = match self.get(&r.session_id) {
                    Some(s) => {
                        let mut runtime = json!(s.runtime_state());
                        if let Some(n) = node {
                            runtime["ownerNodeId"] = json!(n);
                        }
                        runtime
                    }
                    None => remote.get(&r.session_id).cloned().unwrap_or_else(|| json!(RuntimeState::UNLOADED)),
                };
                let mut v = serde_json::to_value(&r).expect("record serializes");
                v["runtime"] = runtime;
                v
            })
            .collect())
    }

    /// Unload every session, all at once, retrying those whose state cannot be stored until
    /// `deadline`; then stop what is left anyway. Returns the ids that could not be stored.
    pub async fn shutdown(&self, deadline: std::time::Duration) -> Vec<String> {
        self.ctx.shutting_down.store(true, std::sync::atomic::Ordering::SeqCst);
        self.drain_pool().await;
        let attempts = async {
            let mut pause = std::time::Duration::from_millis(100);
            loop {
                let ids = self.loaded_ids();
                let results = futures::future::join_all(ids.iter().map(|id| self.unload_session(id))).await;
                if results.iter().all(Result::is_ok) {
                    return;
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(std::time::Duration::from_secs(5));
            }
        };
        if tokio::time::timeout(deadline, attempts).await.is_ok() {
            return vec![];
        }
        let failed = self.loaded_ids();
        tracing::error!(sessions = ?failed, "shutdown: these sessions' latest state could not be stored");
        for id in &failed {
            if let Some(s) = self.get(id) {
                s.abandon().await;
            }
        }
        failed
    }
}
