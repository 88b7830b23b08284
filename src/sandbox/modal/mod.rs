//! The Modal provider: each sandbox is a Modal sandbox, driven over Modal's gRPC control plane.
//!
//! - `client`: the channel, headers, auth token and retries.
//! - `control`: apps, ephemeral secrets, sandbox create/poll/terminate.
//! - `image`: the sandbox image recipe and its build.
//! - `exec` / `fs`: commands and single-file I/O, each behind a transport trait; `router`: the
//!   command-router exec path, chosen per sandbox when its task offers one.
//! - `sandbox`: [`ModalSandbox`], the [`Sandbox`] operations on top.
//! - `proto`: message types generated from `proto/modal.proto`.

mod backoff;
mod client;
mod control;
pub mod exec;
pub mod fs;
pub mod image;
pub mod proto;
mod router;
mod sandbox;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use async_trait::async_trait;
use futures::future::{BoxFuture, FutureExt, Shared};

pub use backoff::ReopenPolicy;
pub use client::{server_url, Connection, Credentials, ModalError, DEFAULT_SERVER_URL};
pub use control::{ControlPlane, SandboxSettings};
pub use image::BuildLimits;
pub use sandbox::ModalSandbox;

use super::{SResult, Sandbox, SandboxError, SandboxProvider, SandboxSpec};

type ImageBuild = Shared<BoxFuture<'static, Result<String, ModalError>>>;

#[derive(Debug, Clone)]
pub struct ModalSettings {
    pub server_url: String,
    pub app_name: String,
    pub sandbox: SandboxSettings,
}

pub struct ModalProvider {
    control: ControlPlane,
    settings: ModalSettings,
    token_id: String,
    token_secret: String,
    exec: Arc<dyn exec::ExecTransport>,
    files: Arc<dyn fs::FileTransport>,
    /// App id, found once per runtime.
    app_id: tokio::sync::Mutex<Option<String>>,
    /// The image build, shared by every creation that needs it (the recipe is fixed per package
    /// version, so there is one). A future rather than a lock held across the build: waiting
    /// creations wait for the build itself, a cancelled creation does not abort or restart it,
    /// and a failed build is not kept (the next creation starts over).
    image: Mutex<Option<ImageBuild>>,
    live: Mutex<HashMap<String, Weak<ModalSandbox>>>,
}

impl ModalProvider {
    pub fn new(creds: Credentials, settings: ModalSettings) -> Result<Self, ModalError> {
        let conn = Connection::new(&settings.server_url, &creds)?;
        tracing::info!(server = %conn.url(), app = %settings.app_name, "Modal sandbox provider");
        Ok(Self {
            exec: Arc::new(exec::ClassicExec::new(conn.clone(), settings.sandbox.output_reopen)),
            files: Arc::new(fs::ClassicFiles::new(conn.clone())),
            control: ControlPlane { conn },
            settings,
            token_id: creds.token_id,
            token_secret: creds.token_secret,
            app_id: Default::default(),
            image: Mutex::new(None),
            live: Mutex::new(HashMap::new()),
        })
    }

    pub fn connection(&self) -> &Connection {
        &self.control.conn
    }

    async fn app_id(&self) -> Result<String, ModalError> {
        let mut slot = self.app_id.lock().await;
        if let Some(id) = slot.as_ref() {
            return Ok(id.clone());
        }
        let id = self.control.app(&self.settings.app_name).await?;
        *slot = Some(id.clone());
        Ok(id)
    }

    async fn image_id(&self, app_id: &str) -> Result<String, ModalError> {
        let build = {
            let mut slot = self.image.lock().unwrap();
            match slot.as_ref() {
                Some(b) if !matches!(b.peek(), Some(Err(_))) => b.clone(),
                _ => {
                    let (conn, app_id, limits) =
                        (self.control.conn.clone(), app_id.to_string(), self.settings.sandbox.image);
                    // Spawned: the build goes on even if every creation waiting for it is dropped.
                    let task = tokio::spawn(async move {
                        let started = std::time::Instant::now();
                        let id = image::build(&conn, &app_id, &limits).await?;
                        tracing::info!(image_id = %id, ms = started.elapsed().as_millis() as u64, "Modal image ready");
                        Ok(id)
                    });
                    let b = async move {
                        task.await.unwrap_or_else(|e| {
                            Err(ModalError { code: tonic::Code::Internal, message: format!("Modal image build: {e}") })
                        })
                    }
                    .boxed()
                    .shared();
                    *slot = Some(b.clone());
                    b
                }
            }
        };
        build.await
    }

    /// The task's command router when it has one (what current official SDKs use), else the
    /// classic exec calls. `AGENT_RUNTIME_MODAL_EXEC=classic` forces the classic path.
    async fn exec_for(&self, sandbox_id: &str, task_id: &str) -> Arc<dyn exec::ExecTransport> {
        if std::env::var("AGENT_RUNTIME_MODAL_EXEC").is_ok_and(|v| v == "classic") {
            return self.exec.clone();
        }
        match router::RouterExec::connect(&self.control, task_id).await {
            Ok(Some(r)) => {
                tracing::info!(sandbox_id, "Modal exec through the task command router");
                Arc::new(Arc::new(r))
            }
            Ok(None) => self.exec.clone(),
            Err(e) => {
                tracing::warn!(sandbox_id, error = %e, "task command router unavailable; using classic exec");
                self.exec.clone()
            }
        }
    }

    async fn start(&self, spec: SandboxSpec) -> Result<Arc<ModalSandbox>, ModalError> {
        let app_id = self.app_id().await?;
        let image_id = self.image_id(&app_id).await?;
        let mut env: BTreeMap<String, String> = BTreeMap::new();
        env.insert("HOME".into(), "/root".into());
        env.insert("IS_SANDBOX".into(), "1".into());
        env.insert("LANG".into(), "C.UTF-8".into());
        env.extend(spec.env);
        let secret = self.control.secret(env).await?;
        let s = &self.settings.sandbox;
        let id = self.control.create_sandbox(&app_id, &image_id, vec![secret], s).await?;
        let task_id = match self.control.task_id(&id, s.ready_timeout).await {
            Ok(t) => t,
            Err(e) => {
                let _ = self.control.terminate(&id).await;
                return Err(e);
            }
        };
        let exec = self.exec_for(&id, &task_id).await;
        let sb = Arc::new(ModalSandbox::new(id.clone(), task_id, self.control.clone(), exec, self.files.clone()));
        {
            // Pruned as we go: one entry per sandbox ever created would grow without bound.
            let mut live = self.live.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            live.retain(|_, w| w.strong_count() > 0);
            live.insert(id.clone(), Arc::downgrade(&sb));
        }
        tracing::info!(sandbox_id = %id, "Modal sandbox created");
        Ok(sb)
    }
}

#[async_trait]
impl SandboxProvider for ModalProvider {
    fn name(&self) -> &'static str {
        "modal"
    }

    async fn create(&self, mut spec: SandboxSpec) -> SResult<Arc<dyn Sandbox>> {
        let dropped = crate::sandbox::env::drop_reserved(&mut spec.env);
        if !dropped.is_empty() {
            tracing::warn!(names = ?dropped, "reserved environment variables ignored (the runtime sets them)");
        }
        self.start(spec).await.map(|s| s as Arc<dyn Sandbox>).map_err(|e| SandboxError::Create(e.message))
    }

    async fn reap(&self, id: &str) {
        match self.control.terminate(id).await {
            Ok(()) => tracing::info!(sandbox_id = %id, "Modal sandbox of an earlier run terminated"),
            Err(e) => {
                tracing::warn!(sandbox_id = %id, error = %e.message, "could not terminate a Modal sandbox of an earlier run")
            }
        }
    }

    /// Terminate every sandbox still alive, from a thread of its own: this runs at process exit,
    /// when the runtime's tasks may no longer be polled. Bounded to a few seconds.
    fn kill_all(&self) {
        let ids: Vec<String> =
            self.live.lock().unwrap().drain().filter_map(|(id, w)| w.upgrade().map(|_| id)).collect();
        if ids.is_empty() {
            return;
        }
        let creds = Credentials { token_id: self.token_id.clone(), token_secret: self.token_secret.clone() };
        let url = self.settings.server_url.clone();
        let worker = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
            rt.block_on(async move {
                let Ok(conn) = Connection::new(&url, &creds) else { return };
                let control = ControlPlane { conn };
                let all = futures::future::join_all(ids.iter().map(|id| control.terminate(id)));
                let _ = tokio::time::timeout(Duration::from_secs(5), all).await;
            });
        });
        let _ = worker.join();
    }
}
