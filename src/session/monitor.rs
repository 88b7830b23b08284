//! The monitor of one live sandbox: health checks, periodic syncs, the idle timeout.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use super::agent_session::AgentSession;
use crate::sandbox::Sandbox;
use crate::time::now_ms;


fn ticker(period: Duration) -> tokio::time::Interval {
    let mut i = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    i
}

/// Health checks, periodic syncs and the idle timeout for one sandbox.
pub(super) async fn monitor(session: Weak<AgentSession>, sandbox: Arc<dyn Sandbox>) {
    let opts = match session.upgrade() {
        Some(s) => s.ctx.options.clone(),
        None => return,
    };
    let mut health = ticker(opts.health_interval);
    let mut sync = ticker(opts.sync_interval);
    let mut idle = ticker((opts.idle_timeout / 4).clamp(Duration::from_millis(20), Duration::from_secs(5)));
    loop {
        tokio::select! {
            _ = health.tick() => {
                let Some(s) = session.upgrade() else { return };
                match sandbox.poll().await {
                    Some(code) => return s.on_sandbox_dead(&sandbox, code).await,
                    None => {
                        if let Some(st) = s.data.lock().unwrap().sandbox.as_mut() {
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
            _ = idle.tick() => {
                let Some(s) = session.upgrade() else { return };
                let quiet = now_ms() - s.data.lock().unwrap().last_activity;
                if !s.busy.load(Ordering::SeqCst) && quiet >= opts.idle_timeout.as_millis() as i64 {
                    tracing::info!(session_id = %s.session_id, idle_ms = quiet, "idle timeout: unloading session");
                    if let Some(m) = s.ctx.manager.get().and_then(Weak::upgrade) {
                        let id = s.session_id.clone();
                        // A task of its own: unloading aborts this monitor.
                        tokio::spawn(async move {
                            if let Err(e) = m.unload_session(&id).await {
                                tracing::error!(session_id = %id, error = %e, "idle unload failed");
                            }
                        });
                    }
                    return;
                }
            }
        }
    }
}
