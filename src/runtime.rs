//! `AgentRuntime`: owns the options, the event bus and the session manager.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::config::{ProviderKind, RuntimeOptions};
use crate::error::{Error, Result};
use crate::events::EventBus;
use crate::persistence::retry::RetryPolicy;
use crate::persistence::PersistenceAdapter;
use crate::session::{SessionContext, SessionManager};

pub struct AgentRuntime {
    pub options: RuntimeOptions,
    pub events: EventBus,
    pub sessions: Arc<SessionManager>,
    shut_down: AtomicBool,
}

impl AgentRuntime {
    pub fn new(options: RuntimeOptions, persistence: Arc<dyn PersistenceAdapter>) -> Arc<Self> {
        let events = EventBus::new();
        let sessions = SessionManager::new(SessionContext {
            persistence,
            events: events.clone(),
            retry: RetryPolicy::default(),
        });
        if options.provider == ProviderKind::Local && !options.modal.has_tokens() {
            tracing::warn!(
                "no Modal tokens configured: sessions will use the local sandbox provider"
            );
        }
        Arc::new(Self {
            options,
            events,
            sessions,
            shut_down: AtomicBool::new(false),
        })
    }

    /// `start()`: one `listAllSessions()` call, which also checks that the adapter answers.
    pub async fn start(&self) -> Result<()> {
        let n = self
            .sessions
            .context()
            .persistence
            .list_all_sessions()
            .await?
            .len();
        tracing::info!(sessions = n, "runtime started");
        Ok(())
    }

    pub fn is_healthy(&self) -> bool {
        !self.shut_down.load(Ordering::SeqCst)
    }

    pub fn ensure_running(&self) -> Result<()> {
        if self.is_healthy() {
            Ok(())
        } else {
            Err(Error::ShutDown)
        }
    }

    /// Unload (sync and terminate) every session; returns when all are done.
    pub async fn shutdown(&self) {
        self.shut_down.store(true, Ordering::SeqCst);
        self.sessions.shutdown().await;
        tracing::info!("runtime shut down");
    }
}
