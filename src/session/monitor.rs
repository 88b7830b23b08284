//! The monitor of one live sandbox: health checks, periodic syncs, the idle timeout.

use crate::sync::Locked as _;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use super::agent_session::AgentSession;
use super::SessionManager;
use crate::sandbox::Sandbox;
use crate::time::now_ms;

fn ticker(period: Duration) -> tokio::time::Interval {
    let mut i = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    i
}

/// Health checks and periodic syncs for one sandbox.
pub(super) async fn monitor(session: Weak<AgentSession>, sandbox: Arc<dyn Sandbox>) {
    let opts = match session.upgrade() {
        Some(s) => s.ctx.options.clone(),
        None => return,
    };
    let mut health = ticker(opts.health_interval);
    let mut sync = ticker(opts.sync_interval);
    loop {
        tokio::select! {
            _ = health.tick() => {
                let Some(s) = session.upgrade() else { return };
                match sandbox.poll().await {
                    Some(code) => return s.on_sandbox_dead(&sandbox, code).await,
                    None => {
                        if let Some(st) = s.data.locked().sandbox.as_mut() {
                            st.last_health_check = now_ms();
                        }
                    }
                }
            }
            _ = sync.tick() => {
                let Some(s) = session.upgrade() else { return };
                if !s.busy.load(Ordering::SeqCst) {
                    if let Err(e) = s.sync_to_storage().await {
                        tracing::warn!(session_id = %s.session_id, error = %e, "periodic sync failed");
                    }
                }
            }
        }
    }
}

/// The idle timeout, for every loaded session (with a sandbox or not), and unloads that could
/// not store everything yet, tried again. One task per manager.
pub(super) async fn idle_sweep(manager: Weak<SessionManager>, idle_timeout: Duration) {
    let mut tick = ticker((idle_timeout / 4).clamp(Duration::from_millis(20), Duration::from_secs(5)));
    loop {
        tick.tick().await;
        let Some(m) = manager.upgrade() else { return };
        for s in m.loaded() {
            let quiet = now_ms() - s.data.locked().last_activity;
            let due = s.unload_wanted.load(Ordering::SeqCst) || quiet >= idle_timeout.as_millis() as i64;
            if !due || !s.is_idle() || s.is_closing() {
                continue;
            }
            tracing::info!(session_id = %s.session_id, idle_ms = quiet, "idle: unloading session");
            let (m, id) = (m.clone(), s.session_id.clone());
            tokio::spawn(async move {
                if let Err(e) = m.unload_session(&id).await {
                    tracing::warn!(session_id = %id, error = %e, "idle unload did not complete; will try again");
                }
            });
        }
    }
}
