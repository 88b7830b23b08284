//! Control-plane operations on apps, secrets and sandboxes (everything except exec and files).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use tonic::Code;

use super::backoff::ReopenPolicy;
use super::client::{Connection, MResult, ModalError};
use super::image::BuildLimits;
use super::proto::generic_result::GenericStatus;
use super::proto::network_access::NetworkAccessType;
use super::proto::{
    AppGetOrCreateRequest, NetworkAccess, ObjectCreationType, Resources, Sandbox as SandboxDef, SandboxCreateRequest,
    SandboxGetTaskIdRequest, SandboxTerminateRequest, SandboxWaitRequest, SchedulerPlacement, SecretGetOrCreateRequest,
};

/// How a sandbox is created (the reference's values by default).
#[derive(Debug, Clone)]
pub struct SandboxSettings {
    pub workdir: String,
    pub timeout_secs: u32,
    pub idle_timeout_secs: u32,
    /// How long to wait for the sandbox to be scheduled and given a task.
    pub ready_timeout: Duration,
    /// Bounds on the image build (once per runtime).
    pub image: BuildLimits,
    /// How exec output streams are reopened after failures.
    pub output_reopen: ReopenPolicy,
}

impl Default for SandboxSettings {
    fn default() -> Self {
        Self {
            workdir: "/workspace".into(),
            timeout_secs: 86_400,
            idle_timeout_secs: 900,
            ready_timeout: Duration::from_secs(300),
            image: BuildLimits::default(),
            output_reopen: ReopenPolicy::default(),
        }
    }
}

#[derive(Clone)]
pub struct ControlPlane {
    pub conn: Connection,
}

impl ControlPlane {
    pub async fn app(&self, name: &str) -> MResult<String> {
        let req = AppGetOrCreateRequest {
            app_name: name.into(),
            environment_name: String::new(),
            object_creation_type: ObjectCreationType::CreateIfMissing as i32,
        };
        self.conn
            .unary("AppGetOrCreate", req, |mut c, r| async move { c.app_get_or_create(r).await })
            .await
            .map(|r| r.app_id)
            .map_err(|e| match e.code {
                Code::NotFound | Code::PermissionDenied | Code::FailedPrecondition => ModalError {
                    code: e.code,
                    message: format!(
                        "Modal app {name:?} does not exist and could not be created (modal.appName): {}",
                        e.message
                    ),
                },
                _ => e,
            })
    }

    /// An ephemeral secret holding `env` (Modal collects it when unused).
    pub async fn secret(&self, env: BTreeMap<String, String>) -> MResult<String> {
        let req = SecretGetOrCreateRequest {
            object_creation_type: ObjectCreationType::Ephemeral as i32,
            env_dict: env.into_iter().collect(),
            ..Default::default()
        };
        self.conn
            .unary("SecretGetOrCreate", req, |mut c, r| async move { c.secret_get_or_create(r).await })
            .await
            .map(|r| r.secret_id)
    }

    pub async fn create_sandbox(
        &self,
        app_id: &str,
        image_id: &str,
        secret_ids: Vec<String>,
        s: &SandboxSettings,
    ) -> MResult<String> {
        let definition = SandboxDef {
            // Keeps the container alive between execs (newer SDKs no longer default to it).
            entrypoint_args: vec!["sleep".into(), "48h".into()],
            image_id: image_id.into(),
            secret_ids,
            resources: Some(Resources::default()),
            timeout_secs: s.timeout_secs,
            workdir: Some(s.workdir.clone()),
            // Sent empty, as modal-js 0.5.4 does (no region preference).
            scheduler_placement: Some(SchedulerPlacement::default()),
            network_access: Some(NetworkAccess {
                network_access_type: NetworkAccessType::Open as i32,
                allowed_cidrs: vec![],
            }),
            idle_timeout_secs: Some(s.idle_timeout_secs),
            ..Default::default()
        };
        let req = SandboxCreateRequest { app_id: app_id.into(), definition: Some(definition) };
        self.conn
            .unary("SandboxCreate", req, |mut c, r| async move { c.sandbox_create(r).await })
            .await
            .map(|r| r.sandbox_id)
    }

    /// The sandbox's task id, polling until it is scheduled (as newer official SDKs do).
    pub async fn task_id(&self, sandbox_id: &str, within: Duration) -> MResult<String> {
        let started = Instant::now();
        loop {
            let req = SandboxGetTaskIdRequest { sandbox_id: sandbox_id.into(), timeout: None, wait_until_ready: false };
            let r = self
                .conn
                .unary("SandboxGetTaskId", req, |mut c, r| async move { c.sandbox_get_task_id(r).await })
                .await?;
            if let Some(result) = r.task_result {
                return Err(ModalError {
                    code: Code::FailedPrecondition,
                    message: format!(
                        "Modal sandbox {sandbox_id} ended before it was ready (status {}): {}",
                        result.status, result.exception
                    ),
                });
            }
            if let Some(t) = r.task_id.filter(|t| !t.is_empty()) {
                return Ok(t);
            }
            if started.elapsed() >= within {
                return Err(ModalError {
                    code: Code::DeadlineExceeded,
                    message: format!(
                        "Modal sandbox {sandbox_id} did not start within {} s",
                        within.as_secs_f64().round()
                    ),
                });
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// `None` while running, else its exit code (124 timed out, 137 terminated).
    pub async fn poll(&self, sandbox_id: &str) -> MResult<Option<i32>> {
        let req = SandboxWaitRequest { sandbox_id: sandbox_id.into(), timeout: 0.0 };
        let r = self.conn.unary("SandboxWait", req, |mut c, r| async move { c.sandbox_wait(r).await }).await?;
        Ok(r.result.and_then(|r| match GenericStatus::try_from(r.status) {
            Ok(GenericStatus::Unspecified) => None,
            Ok(GenericStatus::Timeout) => Some(124),
            Ok(GenericStatus::Terminated) => Some(137),
            _ => Some(r.exitcode),
        }))
    }

    pub async fn terminate(&self, sandbox_id: &str) -> MResult<()> {
        let req = SandboxTerminateRequest { sandbox_id: sandbox_id.into() };
        self.conn
            .unary("SandboxTerminate", req, |mut c, r| async move { c.sandbox_terminate(r).await })
            .await
            .map(|_| ())
    }
}
