//! `SessionManager`: the loaded sessions, create / load / unload, and the list view.

mod activation;
mod agent_session;
mod monitor;
pub mod outbox;
mod state;
mod turn;
mod workspace;

pub use agent_session::{AgentSession, CreateSessionArgs, SessionContext};
pub use state::{RuntimeState, SandboxState, SandboxStatus};

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
}

impl SessionManager {
    pub fn new(ctx: SessionContext) -> Arc<Self> {
        let m = Arc::new(Self { ctx: Arc::new(ctx), sessions: Default::default(), loading: Default::default() });
        let _ = m.ctx.manager.set(Arc::downgrade(&m));
        m
    }

    pub fn context(&self) -> &SessionContext {
        &self.ctx
    }

    pub fn get(&self, id: &str) -> Option<Arc<AgentSession>> {
        self.sessions.read().unwrap().get(id).cloned()
    }

    pub fn is_loaded(&self, id: &str) -> bool {
        self.sessions.read().unwrap().contains_key(id)
    }

    pub fn loaded_ids(&self) -> Vec<String> {
        self.sessions.read().unwrap().keys().cloned().collect()
    }

    pub fn loaded_count(&self) -> usize {
        self.sessions.read().unwrap().len()
    }

    fn insert(&self, session: Arc<AgentSession>) {
        self.sessions.write().unwrap().insert(session.session_id.clone(), session);
        self.ctx.events.emit(DomainEvent::sessions_changed());
    }

    pub async fn create_session(&self, args: CreateSessionArgs) -> Result<Arc<AgentSession>> {
        let session = AgentSession::create(args, self.ctx.clone()).await.inspect_err(|e| {
            tracing::error!(error = %e, "failed to create session");
        })?;
        tracing::info!(session_id = %session.session_id, architecture = session.architecture.as_str(), "session created");
        self.insert(session.clone());
        Ok(session)
    }

    /// Return the loaded session, or load it from persistence (once, however many callers ask).
    pub async fn load_session(self: &Arc<Self>, id: &str) -> Result<Arc<AgentSession>> {
        if let Some(s) = self.get(id) {
            return Ok(s);
        }
        let fut = {
            let mut loading = self.loading.lock().unwrap();
            loading
                .entry(id.to_string())
                .or_insert_with(|| {
                    let this = self.clone();
                    let id = id.to_string();
                    async move {
                        let result = AgentSession::load(&id, this.ctx.clone()).await;
                        if let Ok(s) = &result {
                            // A create or load may have won the race while we waited on the adapter.
                            if let Some(existing) = this.get(&id) {
                                this.loading.lock().unwrap().remove(&id);
                                return Ok(existing);
                            }
                            this.insert(s.clone());
                            tracing::info!(session_id = %id, "session loaded");
                        }
                        this.loading.lock().unwrap().remove(&id);
                        result
                    }
                    .boxed()
                    .shared()
                })
                .clone()
        };
        fut.await
    }

    /// Unload: destroy, drop from memory, then announce `isLoaded: false` and the list change.
    /// The events are sent even when destroy fails, so clients never see a ghost session.
    pub async fn unload_session(&self, id: &str) -> Result<()> {
        let Some(session) = self.get(id) else {
            return Err(Error::SessionNotLoaded(id.to_string()));
        };
        let result = session.destroy().await;
        self.sessions.write().unwrap().remove(id);
        self.ctx.events.emit(DomainEvent::status(id, &RuntimeState::UNLOADED));
        self.ctx.events.emit(DomainEvent::sessions_changed());
        tracing::info!(session_id = %id, "session unloaded");
        result
    }

    /// The persisted list enriched with each session's runtime state (`SessionListItem[]`).
    pub async fn all_sessions(&self) -> Result<Vec<Value>> {
        let records = self.ctx.persistence.list_all_sessions().await?;
        Ok(records
            .into_iter()
            .map(|r| {
                let runtime = self.get(&r.session_id).map(|s| s.runtime_state()).unwrap_or(RuntimeState::UNLOADED);
                let mut v = serde_json::to_value(&r).expect("record serializes");
                v["runtime"] = json!(runtime);
                v
            })
            .collect())
    }

    /// Unload every session, all at once; errors are logged and do not stop the others.
    pub async fn shutdown(&self) {
        let ids = self.loaded_ids();
        let results = futures::future::join_all(ids.iter().map(|id| self.unload_session(id))).await;
        for (id, r) in ids.iter().zip(results) {
            if let Err(e) = r {
                tracing::error!(session_id = %id, error = %e, "error while unloading session at shutdown");
            }
        }
    }
}
