//! The task command router (`modal.task_command_router.TaskCommandRouter`), the exec path of
//! newer official SDKs. Real Modal serves it from the worker running the task, at the URL that
//! `TaskGetCommandRouterAccess` hands out; the fake serves it on the control plane's port.
//! Router calls carry no `x-modal-*` headers, only `authorization: Bearer <jwt>` with a JWT
//! issued for the request's task.

use std::future::Future;
use std::sync::Arc;

use agent_runtime::sandbox::modal::proto::router::{
    self as rpb, task_command_router_server::TaskCommandRouter, task_exec_poll_response, task_exec_wait_response,
    TaskExecStderrConfig, TaskExecStdioFileDescriptor, TaskExecStdoutConfig,
};
use futures::StreamExt;
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status};

use crate::exec::{Exec, ExecSpec, Exit, Sink};
use crate::record::{entry, ToJson};
use crate::service::{header, Service, Stream};

/// Every router request names its task; the bearer token must have been issued for it.
trait ForTask: ToJson {
    fn task_id(&self) -> &str;
}

macro_rules! for_task {
    ($($t:ty),*) => {
        $(impl ForTask for $t {
            fn task_id(&self) -> &str {
                &self.task_id
            }
        })*
    };
}

for_task!(
    rpb::TaskExecStartRequest,
    rpb::TaskExecStdinWriteRequest,
    rpb::TaskExecStdioReadRequest,
    rpb::TaskExecWaitRequest,
    rpb::TaskExecPollRequest
);

impl Service {
    /// Records a router call, then checks its bearer token. The `router_unauthenticated_once`
    /// fault fails the first call that passed (as an expired token would).
    fn router_admit<R: ForTask>(&self, method: &str, meta: &MetadataMap, req: &R) -> Result<(), Status> {
        self.shared.record(entry(method, meta, req));
        let token = header(meta, "authorization")
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| Status::unauthenticated("missing authorization"))?;
        let mut st = self.shared.state();
        if st.router_tokens.get(token).map(String::as_str) != Some(req.task_id()) {
            return Err(Status::unauthenticated("invalid token for this task"));
        }
        if self.faults().router_unauthenticated_once && st.fire_once("router_unauthenticated_once", "") {
            return Err(Status::unauthenticated("token expired"));
        }
        Ok(())
    }

    /// Runs a unary router call: admission plus the `unavailable_once` / `lost_response_once`
    /// faults. No idempotency-key cache: router requests are idempotent by design (client-chosen
    /// exec ids, stdin offsets), which is what those faults let tests check.
    async fn router_unary<Req, Resp, Fut>(
        &self,
        method: &'static str,
        request: Request<Req>,
        work: impl FnOnce(Req) -> Fut + Send,
    ) -> Result<Response<Resp>, Status>
    where
        Req: ForTask + Send,
        Fut: Future<Output = Result<Resp, Status>> + Send,
    {
        let (meta, _, req) = request.into_parts();
        self.router_admit(method, &meta, &req)?;
        let fires = |fault: &'static str, methods: &[String]| {
            methods.iter().any(|m| m == method) && self.shared.state().fire_once(fault, method)
        };
        if fires("unavailable_once", &self.faults().unavailable_once) {
            return Err(Status::unavailable("injected fault: unavailable_once"));
        }
        let resp = work(req).await?;
        if fires("lost_response_once", &self.faults().lost_response_once) {
            return Err(Status::unavailable("injected fault: lost_response_once"));
        }
        Ok(Response::new(resp))
    }

    fn router_exec(&self, task_id: &str, exec_id: &str) -> Result<Arc<Exec>, Status> {
        let key = (task_id.to_string(), exec_id.to_string());
        let exec = self.shared.state().router_execs.get(&key).cloned();
        exec.ok_or_else(|| Status::not_found(format!("Exec {exec_id} not found")))
    }

    async fn router_start(&self, req: rpb::TaskExecStartRequest) -> Result<rpb::TaskExecStartResponse, Status> {
        if req.exec_id.is_empty() {
            return Err(Status::invalid_argument("exec_id is required"));
        }
        if req.command_args.is_empty() {
            return Err(Status::invalid_argument("command is empty"));
        }
        let stdout = match TaskExecStdoutConfig::try_from(req.stdout_config) {
            Ok(TaskExecStdoutConfig::Pipe) => Sink::Pipe,
            Ok(TaskExecStdoutConfig::Devnull) => Sink::Null,
            Err(_) => return Err(Status::invalid_argument("unknown stdout_config")),
        };
        let stderr = match TaskExecStderrConfig::try_from(req.stderr_config) {
            Ok(TaskExecStderrConfig::Pipe) => Sink::Pipe,
            Ok(TaskExecStderrConfig::Devnull) => Sink::Null,
            Ok(TaskExecStderrConfig::Stdout) => Sink::Stdout,
            Err(_) => return Err(Status::invalid_argument("unknown stderr_config")),
        };
        let key = (req.task_id.clone(), req.exec_id.clone());
        // Held from the check to the insert, so concurrent duplicates cannot both start.
        let _serial = self.router_start.lock().await;
        // A retried start (same client-chosen id) must not run the command again.
        if self.shared.state().router_execs.contains_key(&key) {
            return Ok(rpb::TaskExecStartResponse {});
        }
        let sb = self.running_task(&req.task_id)?;
        let timeout_secs = req.timeout_secs.unwrap_or(0);
        let spec = self.exec_spec(&sb, &req.command_args, req.workdir.as_ref(), &req.secret_ids, timeout_secs)?;
        let exec = self.spawn_in(&sb, ExecSpec { stdout, stderr, ..spec })?;
        self.shared.state().router_execs.insert(key, exec);
        Ok(rpb::TaskExecStartResponse {})
    }

    async fn router_stdin(
        &self,
        req: rpb::TaskExecStdinWriteRequest,
    ) -> Result<rpb::TaskExecStdinWriteResponse, Status> {
        let exec = self.router_exec(&req.task_id, &req.exec_id)?;
        exec.write_stdin(req.offset, &req.data, req.eof).map_err(Status::invalid_argument)?;
        Ok(rpb::TaskExecStdinWriteResponse {})
    }

    async fn router_wait(&self, req: rpb::TaskExecWaitRequest) -> Result<rpb::TaskExecWaitResponse, Status> {
        use task_exec_wait_response::ExitStatus;
        let exec = self.router_exec(&req.task_id, &req.exec_id)?;
        let exit_status = match exec.wait_exit().await {
            Exit::Code(code) => ExitStatus::Code(code),
            Exit::Signal(sig) => ExitStatus::Signal(sig),
        };
        Ok(rpb::TaskExecWaitResponse { exit_status: Some(exit_status) })
    }

    async fn router_poll(&self, req: rpb::TaskExecPollRequest) -> Result<rpb::TaskExecPollResponse, Status> {
        use task_exec_poll_response::ExitStatus;
        let exec = self.router_exec(&req.task_id, &req.exec_id)?;
        let exit_status = exec.exit().map(|exit| match exit {
            Exit::Code(code) => ExitStatus::Code(code),
            Exit::Signal(sig) => ExitStatus::Signal(sig),
        });
        Ok(rpb::TaskExecPollResponse { exit_status })
    }
}

#[tonic::async_trait]
impl TaskCommandRouter for Service {
    async fn task_exec_start(
        &self,
        request: Request<rpb::TaskExecStartRequest>,
    ) -> Result<Response<rpb::TaskExecStartResponse>, Status> {
        self.router_unary("TaskExecStart", request, |r| self.router_start(r)).await
    }

    async fn task_exec_stdin_write(
        &self,
        request: Request<rpb::TaskExecStdinWriteRequest>,
    ) -> Result<Response<rpb::TaskExecStdinWriteResponse>, Status> {
        self.router_unary("TaskExecStdinWrite", request, |r| self.router_stdin(r)).await
    }

    type TaskExecStdioReadStream = Stream<rpb::TaskExecStdioReadResponse>;

    async fn task_exec_stdio_read(
        &self,
        request: Request<rpb::TaskExecStdioReadRequest>,
    ) -> Result<Response<Self::TaskExecStdioReadStream>, Status> {
        let (meta, _, req) = request.into_parts();
        self.router_admit("TaskExecStdioRead", &meta, &req)?;
        let exec = self.router_exec(&req.task_id, &req.exec_id)?;
        let slot = match TaskExecStdioFileDescriptor::try_from(req.file_descriptor) {
            Ok(TaskExecStdioFileDescriptor::Stdout) => 0,
            Ok(TaskExecStdioFileDescriptor::Stderr) => 1,
            Err(_) => return Err(Status::invalid_argument("file_descriptor must be STDOUT or STDERR")),
        };
        let stream = exec.stdio_stream(slot, req.offset, self.faults().router_cut_stdio_once);
        Ok(Response::new(stream.boxed()))
    }

    async fn task_exec_wait(
        &self,
        request: Request<rpb::TaskExecWaitRequest>,
    ) -> Result<Response<rpb::TaskExecWaitResponse>, Status> {
        self.router_unary("TaskExecWait", request, |r| self.router_wait(r)).await
    }

    async fn task_exec_poll(
        &self,
        request: Request<rpb::TaskExecPollRequest>,
    ) -> Result<Response<rpb::TaskExecPollResponse>, Status> {
        self.router_unary("TaskExecPoll", request, |r| self.router_poll(r)).await
    }
}
