//! Warm sessions: new sessions whose sandbox, runner and agent CLI are started before anyone
//! asks, so the first turn after `createSession` is as quick as any later one (starting Node,
//! the SDK and Claude Code takes most of a second). Opt-in (`warmPool`), because every waiting
//! session holds a sandbox, and a Modal one costs money while it waits.
//!
//! A warm session is a real [`AgentSession`] that is not created yet: it has its id, profile
//! and default workspace, but no record in storage (its writes are held), it emits nothing, and
//! it is not among the loaded sessions. `createSession` for the same architecture, profile and
//! options, with no files of its own, takes one, stores it as a new session would be stored,
//! and starts another in its place.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use crate::error::Result;
use crate::sync::Locked as _;

use super::{AgentSession, CreateSessionArgs, SessionManager};

#[derive(Default)]
pub(super) struct WarmPool(Mutex<Pool>);

#[derive(Default)]
struct Pool {
    /// (index in `warmPool`, session), oldest first.
    waiting: Vec<(usize, Arc<AgentSession>)>,
    /// Warm sessions being prepared, by index in `warmPool`.
    starting: Vec<usize>,
    closed: bool,
}

impl WarmPool {
    fn short_of(&self, spec: usize, size: usize) -> usize {
        let p = self.0.locked();
        let have =
            p.waiting.iter().filter(|(i, _)| *i == spec).count() + p.starting.iter().filter(|i| **i == spec).count();
        size.saturating_sub(have)
    }

    fn take(&self, spec: usize) -> Option<Arc<AgentSession>> {
        let mut p = self.0.locked();
        let at = p.waiting.iter().position(|(i, _)| *i == spec)?;
        Some(p.waiting.remove(at).1)
    }

    /// Whether it was still waiting (and is now out).
    fn remove(&self, session: &Arc<AgentSession>) -> bool {
        let mut p = self.0.locked();
        let before = p.waiting.len();
        p.waiting.retain(|(_, s)| !Arc::ptr_eq(s, session));
        p.waiting.len() < before
    }
}

impl SessionManager {
    /// Start the warm sessions `warmPool` asks for that are neither waiting nor starting.
    pub fn fill_pool(self: &Arc<Self>) {
        for (i, spec) in self.ctx.options.warm_pool.iter().enumerate() {
            for _ in 0..self.pool.short_of(i, spec.size) {
                self.warm_one(i);
            }
        }
    }

    fn warm_one(self: &Arc<Self>, spec: usize) {
        {
            let mut p = self.pool.0.locked();
            if p.closed {
                return;
            }
            p.starting.push(spec);
        }
        let this = self.clone();
        tokio::spawn(async move {
            let s = &this.ctx.options.warm_pool[spec];
            let args = CreateSessionArgs {
                agent_profile_ref: s.agent_profile_ref.clone(),
                architecture: Some(s.architecture),
                session_options: s.session_options.clone(),
                default_workspace_files: None,
            };
            let prepared = AgentSession::prepare(args, this.ctx.clone()).await;
            let session = {
                let mut p = this.pool.0.locked();
                if let Some(at) = p.starting.iter().position(|i| *i == spec) {
                    p.starting.remove(at);
                }
                match prepared {
                    Ok(session) if !p.closed => {
                        session.warm.store(true, Ordering::SeqCst);
                        session.outbox.hold();
                        p.waiting.push((spec, session.clone()));
                        session
                    }
                    Ok(_) => return,
                    Err(e) => {
                        tracing::warn!(profile = %s.agent_profile_ref, error = %e, "could not prepare a warm session");
                        return;
                    }
                }
            };
            if let Err(e) = session.warm_up().await {
                // Not retried at once (a provider that is down would spin): the next take refills.
                tracing::warn!(profile = %s.agent_profile_ref, error = %e, "could not start a warm session");
                if this.pool.remove(&session) {
                    session.discard_warm().await;
                }
            }
        });
    }

    /// A warm session for a `createSession` that asks for what an entry of `warmPool` is (and
    /// no files of its own), stored as a new one; `None` when none fits or waits (the caller creates one the usual way).
    pub(super) async fn take_warm(self: &Arc<Self>, args: &CreateSessionArgs) -> Result<Option<Arc<AgentSession>>> {
        if args.default_workspace_files.as_ref().is_some_and(|f| !f.is_empty()) {
            return Ok(None);
        }
        let specs = &self.ctx.options.warm_pool;
        let fits = |s: &&crate::config::WarmSpec| {
            s.fits(args.architecture, &args.agent_profile_ref, args.session_options.as_ref())
        };
        let Some(spec) = specs.iter().position(|s| fits(&s)) else {
            return Ok(None);
        };
        let Some(session) = self.pool.take(spec) else {
            self.fill_pool();
            return Ok(None);
        };
        self.fill_pool();
        match session.claim(&args.agent_profile_ref).await {
            Ok(true) => Ok(Some(session)),
            // The profile changed since it was started: a fresh one follows it.
            Ok(false) => {
                session.discard_warm().await;
                Ok(None)
            }
            Err(e) => {
                session.discard_warm().await;
                Err(e)
            }
        }
    }

    /// Stop every warm session (shutdown); none starts after this.
    pub(super) async fn drain_pool(&self) {
        let waiting = {
            let mut p = self.pool.0.locked();
            p.closed = true;
            std::mem::take(&mut p.waiting)
        };
        futures::future::join_all(waiting.into_iter().map(|(_, s)| async move { s.discard_warm().await })).await;
    }
}

impl AgentSession {
    /// Start the sandbox and the runner (which starts the agent CLI), as a first turn would.
    async fn warm_up(self: &Arc<Self>) -> Result<()> {
        let arch = self.ctx.architecture(self.architecture)?;
        let sandbox = self.ensure_sandbox().await?;
        let mut slot = self.runner.lock().await;
        self.ready_runner(&mut slot, &*arch, &sandbox).await?;
        Ok(())
    }

    /// Become a created session: stored as `createSession` stores one, its events and writes
    /// flowing from now on. False when the profile changed since the session was started.
    async fn claim(&self, profile_ref: &str) -> Result<bool> {
        let current = self.ctx.persistence.load_agent_profile(profile_ref).await?;
        if current.as_ref() != Some(&self.profile) {
            return Ok(false);
        }
        {
            let now = crate::time::now_ms();
            let mut d = self.data.locked();
            d.created_at = now;
            d.last_activity = now;
        }
        if let Some(since) = self.sandbox_clock.locked().as_mut() {
            // Waiting does not count toward `maxSandboxSeconds`.
            *since = std::time::Instant::now();
        }
        self.store_new().await?;
        self.warm.store(false, Ordering::SeqCst);
        self.outbox.release();
        Ok(true)
    }

    /// Stop a warm session that will not be handed out: its sandbox, runner and model access.
    async fn discard_warm(&self) {
        self.begin_closing();
        self.runner.lock().await.take();
        self.abandon().await;
        self.revoke_model_access();
        self.end_closing(true);
    }
}
