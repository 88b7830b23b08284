//! A fake of Modal's control plane (`modal.client.ModalClient`) for tests.
//!
//! It serves plaintext gRPC (h2c) on 127.0.0.1 and runs sandbox commands as local processes:
//! each sandbox's `/` is a directory `<root>/<sandbox id>` (see [`paths`] for what is mapped).
//! Commands start through the classic `ContainerExec*` calls or, if enabled, through the task
//! command router, which is served on the same port.
//! Both our Rust client and the official `modal` npm SDK (pointed at it with
//! `MODAL_SERVER_URL=http://127.0.0.1:PORT`) can talk to it. Faults can be injected to exercise
//! client retry/resume paths, and every request can be recorded for golden-file comparisons.

mod exec;
mod fs;
mod image;
pub mod paths;
mod record;
mod router;
mod service;
mod state;
mod util;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use agent_runtime::sandbox::modal::proto::modal_client_server::ModalClientServer;
use agent_runtime::sandbox::modal::proto::router::task_command_router_server::TaskCommandRouterServer;
use serde::Deserialize;
use tokio::task::JoinHandle;
use tonic::transport::server::TcpIncoming;

use crate::service::Service;
use crate::state::Shared;
use crate::util::lock;

/// Largest gRPC message either way; the official SDK allows 100 MiB (e.g. a tar upload on stdin).
const MAX_MESSAGE: usize = 100 << 20;

/// Injected misbehaviour. Deserializable from JSON with these (snake_case) field names.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// New images "build" for this long (log lines streamed by `ImageJoinStreaming`).
    pub image_build_ms: u64,
    /// New image builds fail with this message.
    pub image_build_fail: Option<String>,
    /// The first `ImageJoinStreaming` stream ends after its first log entry, without a result.
    pub image_join_cut_once: bool,
    /// Every `ImageJoinStreaming` stream ends at once, without a message.
    pub image_join_close_always: bool,
    /// `SandboxGetTaskId` answers without a task id for the first n calls per sandbox.
    pub task_id_empty_times: u32,
    /// `SandboxGetTaskId` never answers with a task id.
    pub task_id_never: bool,
    /// The first `ContainerExecGetOutput` stream of each exec that delivers data ends after it.
    pub cut_output_once: bool,
    /// Every `ContainerExecGetOutput` stream ends at once, without a batch.
    pub output_close_always: bool,
    /// Output chunks containing non-ASCII bytes are sent as 1-byte batches.
    pub split_utf8: bool,
    /// Unary methods (router ones included) whose first call fails with UNAVAILABLE without
    /// doing anything.
    pub unavailable_once: Vec<String>,
    /// Unary methods (router ones included) whose first call does the work and then fails with
    /// UNAVAILABLE.
    pub lost_response_once: Vec<String>,
    /// `AppGetOrCreate` may not create apps (PERMISSION_DENIED).
    pub deny_app_create: bool,
    /// Not a fault: the fake offers the task command router (`TaskGetCommandRouterAccess`
    /// succeeds). Off, that call fails with FAILED_PRECONDITION as for tasks without one.
    pub router: bool,
    /// The first router call (any method) fails with UNAUTHENTICATED "token expired".
    pub router_unauthenticated_once: bool,
    /// The first `TaskExecStdioRead` stream of each exec that sends data fails with
    /// UNAVAILABLE right after its first chunk.
    pub router_cut_stdio_once: bool,
}

#[derive(Clone, Debug)]
pub struct FakeConfig {
    /// Directory holding one subdirectory per sandbox (created if missing).
    pub root: PathBuf,
    /// Linked as `/app/node_modules` into every sandbox.
    pub node_modules: Option<PathBuf>,
    /// JSON-lines file every received request is appended to.
    pub record: Option<PathBuf>,
    pub faults: Faults,
}

impl Default for FakeConfig {
    fn default() -> Self {
        FakeConfig {
            root: std::env::temp_dir().join(format!("fake-modal-{}", uuid::Uuid::new_v4())),
            node_modules: None,
            record: None,
            faults: Faults::default(),
        }
    }
}

/// A running fake. Cheap to clone; all clones control the same server.
#[derive(Clone)]
pub struct FakeModal {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Arc<Shared>,
    addr: SocketAddr,
    server: Mutex<Option<JoinHandle<()>>>,
}

impl FakeModal {
    /// Starts serving on a free port of 127.0.0.1.
    pub async fn start(config: FakeConfig) -> std::io::Result<FakeModal> {
        Self::start_on(config, SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    /// Starts serving on `addr` (port 0 = any free port).
    pub async fn start_on(mut config: FakeConfig, addr: SocketAddr) -> std::io::Result<FakeModal> {
        std::fs::create_dir_all(&config.root)?;
        // Canonical, so paths the fake hands out match what processes see (e.g. `pwd`).
        config.root = config.root.canonicalize()?;
        let shared = Arc::new(Shared::new(config)?);
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let service = Arc::new(Service {
            shared: shared.clone(),
            // https although served in plaintext: clients talk plaintext to a router on localhost.
            router_url: format!("https://{addr}"),
            router_start: Default::default(),
        });
        let control = ModalClientServer::from_arc(service.clone())
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE);
        let router = TaskCommandRouterServer::from_arc(service)
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE);
        let server = tokio::spawn(async move {
            let result = tonic::transport::Server::builder()
                .add_service(control)
                .add_service(router)
                // No Nagle: small request/response pairs would otherwise wait ~40 ms for
                // delayed ACKs on every exec round trip.
                .serve_with_incoming(TcpIncoming::from(listener).with_nodelay(Some(true)))
                .await;
            if let Err(e) = result {
                eprintln!("fake-modal: server stopped: {e}");
            }
        });
        Ok(FakeModal { inner: Arc::new(Inner { shared, addr, server: Mutex::new(Some(server)) }) })
    }

    pub fn addr(&self) -> SocketAddr {
        self.inner.addr
    }

    /// `http://127.0.0.1:PORT`, the value for `MODAL_SERVER_URL`.
    pub fn url(&self) -> String {
        format!("http://{}", self.inner.addr)
    }

    /// Every request received so far, in arrival order (same form as the record file).
    pub fn records(&self) -> Vec<serde_json::Value> {
        self.inner.shared.records()
    }

    /// [`FakeModal::records`] with the time each request arrived.
    pub fn timed_records(&self) -> Vec<(serde_json::Value, std::time::Instant)> {
        self.inner.shared.timed_records()
    }

    /// Forgets every auth token issued so far (as after a server-side expiry or rotation): calls
    /// carrying one fail with UNAUTHENTICATED until the client fetches a new one.
    pub fn revoke_auth_tokens(&self) {
        self.inner.shared.state().tokens.clear();
    }

    /// Same for the command-router JWTs.
    pub fn revoke_router_tokens(&self) {
        self.inner.shared.state().router_tokens.clear();
    }

    /// Host directory standing for the sandbox's `/`.
    pub fn sandbox_root(&self, sandbox_id: &str) -> Option<PathBuf> {
        self.inner.shared.state().sandbox(sandbox_id).map(|s| s.root.clone())
    }

    /// Ids of all sandboxes created so far, in creation order.
    pub fn sandbox_ids(&self) -> Vec<String> {
        self.inner.shared.state().sandboxes.iter().map(|s| s.id.clone()).collect()
    }

    /// The env a secret was created with (values as sent, not path-translated).
    pub fn secret_env(&self, secret_id: &str) -> Option<BTreeMap<String, String>> {
        self.inner.shared.state().secrets.get(secret_id).cloned()
    }

    /// Terminates a sandbox "from outside" (like the Modal dashboard). False if unknown.
    pub fn terminate_sandbox(&self, id: &str) -> bool {
        let sandbox = self.inner.shared.state().sandbox(id);
        match sandbox {
            Some(sb) => {
                sb.terminate();
                true
            }
            None => false,
        }
    }

    pub fn terminate_all(&self) {
        self.inner.shared.terminate_all();
    }

    /// Exec processes whose main process has not exited yet, over all sandboxes.
    pub fn running_processes(&self) -> usize {
        let sandboxes = self.inner.shared.state().sandboxes.clone();
        sandboxes.iter().map(|s| s.running_processes()).sum()
    }

    /// Terminates every sandbox (killing its processes) and stops serving. Open streams are
    /// dropped rather than drained: clients may hold long-polls for up to a minute.
    pub async fn shutdown(&self) {
        self.terminate_all();
        let server = lock(&self.inner.server).take();
        if let Some(server) = server {
            server.abort();
            let _ = server.await;
        }
    }
}
