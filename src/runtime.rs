//! `AgentRuntime`: owns the options, the event bus and the session manager.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::agent::architecture::RunnerAssets;
use crate::agent::claude::ClaudeArchitecture;
use crate::agent::opencode::OpenCodeArchitecture;
use crate::config::{ProviderKind, RuntimeOptions};
use crate::error::{Error, Result};
use crate::events::EventBus;
use crate::persistence::retry::RetryPolicy;
use crate::persistence::PersistenceAdapter;
use crate::sandbox::local::{LocalProvider, LocalSettings};
use crate::sandbox::modal::{self, Credentials, ModalProvider, ModalSettings};
use crate::sandbox::SandboxProvider;

/// Modal app used when `modal.appName` is not given.
pub const DEFAULT_MODAL_APP: &str = "agent-runtime";
use crate::session::ledger::Ledger;
use crate::cluster::{fence::Fenced, log::ClusterLog, Cluster};
use crate::session::{SessionContext, SessionManager};

pub struct AgentRuntime {
    pub options: RuntimeOptions,
    pub events: EventBus,
    pub sessions: Arc<SessionManager>,
    pub metrics: Arc<crate::metrics::Metrics>,
    sandboxes: Option<Arc<dyn SandboxProvider>>,
    shut_down: AtomicBool,
    /// Several servers sharing Redis (`cluster` option).
    pub cluster: Option<Arc<Cluster>>,
    /// Why the `cluster` option could not be used (reported by `start()`).
    cluster_error: Option<String>,
}

impl AgentRuntime {
    pub fn new(options: RuntimeOptions, persistence: Arc<dyn PersistenceAdapter>) -> Arc<Self> {
        let (cluster, cluster_error) = match options.cluster.clone().map(Cluster::new) {
            None => (None, None),
            Some(Ok(c)) => (Some(c), None),
            Some(Err(e)) => (None, Some(e)),
        };
        let events = match (options.event_log, &cluster) {
            (limits, Some(c)) => {
                let local = Arc::new(crate::event_log::MemoryLog::new(limits.unwrap_or_default()));
                let bus = EventBus::with_log(Arc::new(ClusterLog::new(c.clone(), local.clone())));
                c.attach(bus.clone(), local);
                let publisher = c.clone();
                bus.subscribe(move |e| {
                    if !e.remote && e.name == "sessions:changed" {
                        publisher.list_changed();
                    }
                });
                bus
            }
            (Some(limits), None) => EventBus::with_log(Arc::new(crate::event_log::MemoryLog::new(limits))),
            (None, None) => EventBus::unlogged(),
        };
        let sandboxes: std::result::Result<Arc<dyn SandboxProvider>, String> = match options.provider {
            ProviderKind::Local => {
                if !options.provider_explicit {
                    // Allowed only outside production (see `config::choose_provider`).
                    tracing::warn!(
                        "no Modal credentials (modal.tokenId, modal.tokenSecret): agents will run on this host \
                         with the local sandbox provider; set sandbox.provider: \"local\" if that is intended \
                         (without it this is refused when NODE_ENV=production)"
                    );
                }
                local_provider(&options, production()).inspect_err(|e| tracing::error!("{e}"))
            }
            ProviderKind::Modal => modal_provider(&options),
        };
        let assets = RunnerAssets {
            runner_dir: options.host.runner_dir.clone().map(Into::into),
            node: options.host.node.clone().unwrap_or_else(|| "node".into()),
            claude_sdk_entry: options.host.claude_sdk_entry.clone(),
            open_code_modules: options.host.open_code_modules.clone(),
            bundled_mcp_roots: options.bundled_mcp_roots.clone(),
        };
        let metrics = Arc::new(crate::metrics::Metrics::default());
        let persistence: Arc<dyn PersistenceAdapter> = match &cluster {
            Some(c) => Arc::new(Fenced::new(persistence, c.clone())),
            None => persistence,
        };
        let persistence: Arc<dyn PersistenceAdapter> =
            Arc::new(crate::metrics::Measured::new(persistence, metrics.clone()));
        let sessions = SessionManager::new(SessionContext {
            persistence,
            metrics: metrics.clone(),
            events: events.clone(),
            retry: RetryPolicy::default(),
            sandboxes: sandboxes.clone(),
            claude: Arc::new(ClaudeArchitecture::new(assets.clone())),
            opencode: Arc::new(OpenCodeArchitecture::new(assets)),
            options: options.clone(),
            manager: Default::default(),
            active_sandboxes: Default::default(),
            shutting_down: Default::default(),
            model_proxy: Default::default(),
            cluster: cluster.clone(),
        });
        Arc::new(Self {
            options,
            events,
            sessions,
            metrics,
            sandboxes: sandboxes.ok(),
            shut_down: AtomicBool::new(false),
            cluster,
            cluster_error,
        })
    }

    /// Kill every sandbox process now (the host is exiting). Synchronous on purpose.
    pub fn kill_sandboxes(&self) {
        if let Some(p) = &self.sandboxes {
            p.kill_all();
        }
    }

    /// `start()`: one `listAllSessions()` call, which also checks that the adapter answers.
    /// Sessions whose ledger holds accepted messages or sandboxes (a previous run ended without
    /// finishing them) are loaded, which runs or reports the messages and stops the sandboxes.
    pub async fn start(self: &Arc<Self>) -> Result<()> {
        if let Some(e) = &self.cluster_error {
            return Err(Error::Config(e.clone()));
        }
        if let Some(c) = &self.cluster {
            self.join_cluster(c).await?;
        }
        self.sessions.context().model_proxy().await?;
        let records = self.sessions.context().persistence.list_all_sessions().await?;
        tracing::info!(sessions = records.len(), "runtime started");
        self.sessions.fill_pool();
        for mut r in records {
            if !Ledger::take_from(&mut r.metadata).has_unfinished() {
                continue;
            }
            let sessions = self.sessions.clone();
            tokio::spawn(async move {
                match sessions.load_session(&r.session_id).await {
                    Ok(_) => {}
                    // Another node runs it.
                    Err(e @ Error::OwnedElsewhere { .. }) => tracing::debug!(session_id = %r.session_id, "{e}"),
                    Err(e) => {
                        tracing::warn!(session_id = %r.session_id, error = %e, "could not resume a session left unfinished")
                    }
                }
            });
        }
        Ok(())
    }

    /// Connect to Redis, serve requests other nodes forward (through the REST router, whose
    /// checks the forwarding node made), and drop sessions whose lease is lost.
    async fn join_cluster(self: &Arc<Self>, c: &Arc<Cluster>) -> Result<()> {
        c.start().await?;
        let router = crate::transport::rest::unkeyed_router(self.clone(), crate::transport::rest::Mode::Forwarded);
        let max_body = self.options.max_body_bytes;
        c.set_handler(Arc::new(move |req| {
            let router = router.clone();
            Box::pin(async move { crate::transport::cluster_route::run_forwarded(&router, max_body, req).await })
        }));
        let sessions = Arc::downgrade(&self.sessions);
        c.on_lost(Arc::new(move |id| {
            if let Some(m) = sessions.upgrade() {
                m.drop_lost(id);
            }
        }));
        Ok(())
    }

    /// The Prometheus text exposition of this runtime's metrics.
    pub fn metrics_text(&self) -> String {
        let loaded = self.sessions.loaded();
        let (event_log_events, event_log_bytes) = self.events.log().size();
        self.metrics.render(crate::metrics::Snapshot {
            sessions_loaded: loaded.len(),
            sessions_active: loaded.iter().filter(|s| s.has_sandbox()).count(),
            event_log_events,
            event_log_bytes,
        })
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

    /// Unload (store and terminate) every session, trying for at most `shutdownTimeoutMs` to
    /// store them; returns the ids whose latest state could not be stored.
    pub async fn shutdown(&self) -> Vec<String> {
        self.shut_down.store(true, Ordering::SeqCst);
        if self.cluster.is_some() {
            // Another node takes these sessions next: let running turns finish here first
            // (new messages are refused now), for half the time shutdown may take.
            let settle = async {
                while self.sessions.loaded().iter().any(|s| !s.is_idle()) {
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            };
            let _ = tokio::time::timeout(self.options.shutdown_timeout / 2, settle).await;
        }
        let unstored = self.sessions.shutdown(self.options.shutdown_timeout).await;
        self.kill_sandboxes();
        if let Some(c) = &self.cluster {
            // The sessions' last events and lease releases go out before the node does.
            c.stop().await;
        }
        tracing::info!("runtime shut down");
        crate::logging::flush_traces();
        unstored
    }
}

/// Whether `NODE_ENV` of this process is `production`.
fn production() -> bool {
    std::env::var("NODE_ENV").is_ok_and(|v| v == "production")
}

/// The local provider, unless it cannot isolate sandboxes and that is not acceptable here.
fn local_provider(options: &RuntimeOptions, production: bool) -> std::result::Result<Arc<dyn SandboxProvider>, String> {
    let host = &options.host;
    let settings = LocalSettings {
        network: options.sandbox_network,
        node: host.node.clone().unwrap_or_else(|| "node".into()),
        packages: host.claude_sdk_entry.iter().chain(&host.open_code_modules).cloned().collect(),
    };
    let provider = LocalProvider::new(options.sandbox_root.clone(), &settings)?;
    if let Some(why) = provider.unisolated_reason() {
        accept_unisolated(why, production, options.allow_unisolated)?;
    }
    Ok(Arc::new(provider))
}

/// Local sandboxes without bubblewrap: refused in production unless `sandbox.allowUnisolated`,
/// else one loud warning per runtime.
fn accept_unisolated(why: &str, production: bool, allowed: bool) -> std::result::Result<(), String> {
    let risk = "local sandboxes are NOT isolated: every agent can read and change the other sessions' \
                sandboxes and anything this user can on the host (files, processes, the network, the runtime's \
                environment)";
    if production && !allowed {
        return Err(format!(
            "{risk}, because bubblewrap is not usable ({why}). Refusing to run agents with NODE_ENV=production: \
             install bubblewrap (apt-get install bubblewrap) and allow unprivileged user namespaces, use Modal, \
             or set sandbox.allowUnisolated: true to accept the risk"
        ));
    }
    tracing::warn!(
        "{risk}, because bubblewrap is not usable ({why}); install bubblewrap (apt-get install bubblewrap) for isolation"
    );
    Ok(())
}

/// The Modal provider from `modal: { tokenId, tokenSecret, appName }` and `MODAL_SERVER_URL`.
fn modal_provider(options: &RuntimeOptions) -> std::result::Result<Arc<dyn SandboxProvider>, String> {
    let m = &options.modal;
    let creds = Credentials {
        token_id: m.token_id.clone().unwrap_or_default(),
        token_secret: m.token_secret.clone().unwrap_or_default(),
    };
    if creds.token_id.is_empty() || creds.token_secret.is_empty() {
        return Err("the Modal sandbox provider needs modal.tokenId and modal.tokenSecret".into());
    }
    let settings = ModalSettings {
        server_url: modal::server_url(),
        app_name: m.app_name.clone().filter(|a| !a.is_empty()).unwrap_or_else(|| DEFAULT_MODAL_APP.into()),
        sandbox: Default::default(),
    };
    ModalProvider::new(creds, settings).map(|p| Arc::new(p) as Arc<dyn SandboxProvider>).map_err(|e| e.message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unisolated_local_sandboxes_are_refused_in_production_unless_allowed() {
        let e = accept_unisolated("bwrap not found on PATH", true, false).unwrap_err();
        assert!(e.contains("NOT isolated") && e.contains("bwrap not found on PATH"), "{e}");
        assert!(e.contains("sandbox.allowUnisolated") && e.contains("apt-get install bubblewrap"), "{e}");
        assert!(accept_unisolated("x", true, true).is_ok());
        assert!(accept_unisolated("x", false, false).is_ok());
    }

    #[test]
    fn a_refused_local_provider_is_the_reason_agents_cannot_run() {
        let root = std::env::temp_dir().join(format!("arn-rt-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&root).unwrap();
        std::fs::set_permissions(&root, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
        let options = RuntimeOptions { sandbox_root: root.clone(), ..Default::default() };
        let e = local_provider(&options, false).err().unwrap();
        assert!(e.contains("writable by group or others"), "{e}");
        let _ = std::fs::remove_dir_all(root);
    }
}
