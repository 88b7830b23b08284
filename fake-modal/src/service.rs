//! The `modal.client.ModalClient` service: per-RPC behaviour plus the cross-cutting parts every
//! call goes through (recording, credentials, injected faults, idempotency). The same `Service`
//! also serves the task command router (see [`crate::router`]).

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use agent_runtime::sandbox::modal::proto::{
    self as pb, container_filesystem_exec_request::FileExecRequestOneof, modal_client_server::ModalClient,
};
use futures::stream::{self, BoxStream, StreamExt};
use serde_json::json;
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status};

use crate::exec::{Exec, ExecSpec, Sink};
use crate::fs::{self, FsError, FsResult};
use crate::image::{image_id, ImageBuild};
use crate::paths::{file_api_path, translate, SANDBOX_DIRS};
use crate::record::{entry, ToJson};
use crate::state::{OpenFile, Sandbox, Shared};
use crate::util::{jwt, lock, secs, unix_now};

pub struct Service {
    pub shared: Arc<Shared>,
    /// What `TaskGetCommandRouterAccess` hands out: this server, which also serves the router.
    pub router_url: String,
    /// Serializes router starts, so a duplicate `exec_id` never runs twice.
    pub router_start: tokio::sync::Mutex<()>,
}

pub(crate) type Stream<T> = BoxStream<'static, Result<T, Status>>;

pub(crate) fn header<'a>(meta: &'a MetadataMap, name: &str) -> Option<&'a str> {
    meta.get(name).and_then(|v| v.to_str().ok()).filter(|v| !v.is_empty())
}

impl Service {
    pub(crate) fn faults(&self) -> &crate::Faults {
        &self.shared.config.faults
    }

    /// Records the request, then checks the credentials headers.
    fn admit<R: ToJson>(&self, method: &str, meta: &MetadataMap, req: &R) -> Result<(), Status> {
        self.shared.record(entry(method, meta, req));
        let (Some(token_id), Some(_secret)) = (header(meta, "x-modal-token-id"), header(meta, "x-modal-token-secret"))
        else {
            return Err(Status::unauthenticated("missing credentials"));
        };
        if method == "AuthTokenGet" {
            // Tests simulate wrong credentials with token ids starting with "ak-bad".
            if token_id.starts_with("ak-bad") {
                return Err(Status::unauthenticated("invalid token id or secret"));
            }
            return Ok(());
        }
        match header(meta, "x-modal-auth-token") {
            Some(token) if self.shared.state().tokens.contains(token) => Ok(()),
            Some(_) => Err(Status::unauthenticated("invalid auth token")),
            None => Err(Status::unauthenticated("missing auth token")),
        }
    }

    /// Runs a unary call: admission, the `unavailable_once` / `lost_response_once` faults, and
    /// the idempotency cache, which makes a retry with the same `x-idempotency-key` get the first
    /// attempt's answer without redoing the work (as Modal does).
    async fn unary<Req, Resp, Fut>(
        &self,
        method: &'static str,
        request: Request<Req>,
        work: impl FnOnce(Req) -> Fut + Send,
    ) -> Result<Response<Resp>, Status>
    where
        Req: ToJson + Send,
        Resp: Clone + Send + Sync + 'static,
        Fut: Future<Output = Result<Resp, Status>> + Send,
    {
        let (meta, _, req) = request.into_parts();
        self.admit(method, &meta, &req)?;
        if self.faults().unavailable_once.iter().any(|m| m == method)
            && self.shared.state().fire_once("unavailable_once", method)
        {
            return Err(Status::unavailable("injected fault: unavailable_once"));
        }
        let slot = header(&meta, "x-idempotency-key").map(|key| self.shared.state().idempotency_slot(method, key));
        let resp = match slot {
            Some(slot) => {
                let mut cached = slot.lock().await;
                if let Some(resp) = cached.as_ref().and_then(|b| b.downcast_ref::<Resp>()) {
                    return Ok(Response::new(resp.clone()));
                }
                let resp = work(req).await?;
                *cached = Some(Box::new(resp.clone()));
                resp
            }
            None => work(req).await?,
        };
        if self.faults().lost_response_once.iter().any(|m| m == method)
            && self.shared.state().fire_once("lost_response_once", method)
        {
            return Err(Status::unavailable("injected fault: lost_response_once"));
        }
        Ok(Response::new(resp))
    }

    fn sandbox(&self, id: &str) -> Result<Arc<Sandbox>, Status> {
        self.shared.state().sandbox(id).ok_or_else(|| Status::not_found(format!("Sandbox {id} not found")))
    }

    /// The sandbox running `task_id`, which must still be running.
    pub(crate) fn running_task(&self, task_id: &str) -> Result<Arc<Sandbox>, Status> {
        let sb = self
            .shared
            .state()
            .sandbox_by_task(task_id)
            .ok_or_else(|| Status::not_found(format!("Task {task_id} not found")))?;
        if sb.result().is_some() {
            return Err(Status::failed_precondition(format!("Sandbox {} has already finished", sb.id)));
        }
        Ok(sb)
    }

    fn exec(&self, id: &str) -> Result<Arc<Exec>, Status> {
        self.shared.state().execs.get(id).cloned().ok_or_else(|| Status::not_found(format!("Exec {id} not found")))
    }

    /// Merged env of the given secrets (later ids win).
    fn secrets_env(&self, ids: &[String]) -> Result<BTreeMap<String, String>, Status> {
        let st = self.shared.state();
        let mut env = BTreeMap::new();
        for id in ids {
            let secret = st.secrets.get(id).ok_or_else(|| Status::not_found(format!("Secret {id} not found")))?;
            env.extend(secret.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        Ok(env)
    }

    async fn auth_token(&self) -> Result<pb::AuthTokenGetResponse, Status> {
        let mut st = self.shared.state();
        let token = jwt(&json!({ "exp": unix_now() + 3600 }), st.next("token"));
        st.tokens.insert(token.clone());
        Ok(pb::AuthTokenGetResponse { token })
    }

    async fn router_access(
        &self,
        req: pb::TaskGetCommandRouterAccessRequest,
    ) -> Result<pb::TaskGetCommandRouterAccessResponse, Status> {
        let task_id = req.task_id;
        if self.shared.state().sandbox_by_task(&task_id).is_none() {
            return Err(Status::not_found(format!("Task {task_id} not found")));
        }
        // What Modal answers for tasks without a router; clients fall back to ContainerExec.
        if !self.faults().router {
            return Err(Status::failed_precondition("command router is not available for this task"));
        }
        let mut st = self.shared.state();
        let token = jwt(&json!({ "exp": unix_now() + 3600, "task_id": task_id }), st.next("router-token"));
        st.router_tokens.insert(token.clone(), task_id);
        Ok(pb::TaskGetCommandRouterAccessResponse { jwt: token, url: self.router_url.clone() })
    }

    async fn app(&self, req: pb::AppGetOrCreateRequest) -> Result<pb::AppGetOrCreateResponse, Status> {
        let mut st = self.shared.state();
        if let Some(app_id) = st.apps.get(&req.app_name) {
            return Ok(pb::AppGetOrCreateResponse { app_id: app_id.clone() });
        }
        if req.object_creation_type == pb::ObjectCreationType::Unspecified as i32 {
            return Err(Status::not_found(format!("App '{}' not found", req.app_name)));
        }
        if self.faults().deny_app_create {
            return Err(Status::permission_denied("app creation is disabled for this workspace"));
        }
        let app_id = st.next_id("ap");
        st.apps.insert(req.app_name, app_id.clone());
        Ok(pb::AppGetOrCreateResponse { app_id })
    }

    async fn image(&self, req: pb::ImageGetOrCreateRequest) -> Result<pb::ImageGetOrCreateResponse, Status> {
        let image = req.image.ok_or_else(|| Status::invalid_argument("image is required"))?;
        let id = image_id(&image, &req.builder_version);
        let faults = self.faults();
        let mut st = self.shared.state();
        let build = st.images.entry(id.clone()).or_insert_with(|| {
            if faults.image_build_ms > 0 || faults.image_build_fail.is_some() {
                ImageBuild::start(
                    image.dockerfile_commands.clone(),
                    faults.image_build_ms,
                    faults.image_build_fail.clone(),
                )
            } else {
                ImageBuild::built()
            }
        });
        Ok(pb::ImageGetOrCreateResponse { image_id: id, result: build.result() })
    }

    async fn secret(&self, req: pb::SecretGetOrCreateRequest) -> Result<pb::SecretGetOrCreateResponse, Status> {
        let mut st = self.shared.state();
        let secret_id = st.next_id("st");
        st.secrets.insert(secret_id.clone(), req.env_dict.into_iter().collect());
        Ok(pb::SecretGetOrCreateResponse { secret_id })
    }

    async fn create_sandbox(&self, req: pb::SandboxCreateRequest) -> Result<pb::SandboxCreateResponse, Status> {
        let definition = req.definition.ok_or_else(|| Status::invalid_argument("definition is required"))?;
        let secret_env = self.secrets_env(&definition.secret_ids)?;
        let (id, task_id) = {
            let mut st = self.shared.state();
            (st.next_sandbox_id(), st.next_id("ta"))
        };
        let root = self.shared.config.root.join(&id);
        prepare_root(&root, self.shared.config.node_modules.as_deref(), definition.workdir.as_deref())
            .map_err(|e| Status::internal(format!("creating sandbox root {}: {e}", root.display())))?;

        let mut env = BTreeMap::new();
        env.insert("PATH".into(), std::env::var("PATH").unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".into()));
        env.insert("HOME".into(), translate(&root, "/root"));
        env.insert("TMPDIR".into(), translate(&root, "/tmp"));
        env.insert("LANG".into(), "C.UTF-8".into());
        // The secret's values may name sandbox paths (e.g. HOME=/root); they win over the defaults.
        env.extend(secret_env.into_iter().map(|(k, v)| (k, translate(&root, &v))));

        let sandbox = Arc::new(Sandbox::new(id.clone(), task_id, root, env, definition));
        self.shared.state().sandboxes.push(sandbox);
        Ok(pb::SandboxCreateResponse { sandbox_id: id })
    }

    async fn task_id(&self, req: pb::SandboxGetTaskIdRequest) -> Result<pb::SandboxGetTaskIdResponse, Status> {
        let sb = self.sandbox(&req.sandbox_id)?;
        if let Some(result) = sb.result() {
            return Ok(pb::SandboxGetTaskIdResponse { task_id: None, task_result: Some(result) });
        }
        // Simulates a sandbox that is not scheduled yet (clients must poll).
        let calls = sb.count_task_id_call();
        if self.faults().task_id_never || calls <= self.faults().task_id_empty_times {
            return Ok(pb::SandboxGetTaskIdResponse::default());
        }
        Ok(pb::SandboxGetTaskIdResponse { task_id: Some(sb.task_id.clone()), task_result: None })
    }

    async fn wait_sandbox(&self, req: pb::SandboxWaitRequest) -> Result<pb::SandboxWaitResponse, Status> {
        let sb = self.sandbox(&req.sandbox_id)?;
        Ok(pb::SandboxWaitResponse { result: sb.wait(secs(req.timeout)).await })
    }

    async fn terminate(&self, req: pb::SandboxTerminateRequest) -> Result<pb::SandboxTerminateResponse, Status> {
        let sb = self.sandbox(&req.sandbox_id)?;
        Ok(pb::SandboxTerminateResponse { existing_result: sb.terminate() })
    }

    /// How a command runs in a sandbox, the same for both exec paths: argv and workdir
    /// path-translated, the sandbox's env plus the given secrets, both outputs piped.
    pub(crate) fn exec_spec(
        &self,
        sb: &Sandbox,
        command: &[String],
        workdir: Option<&String>,
        secret_ids: &[String],
        timeout_secs: u32,
    ) -> Result<ExecSpec, Status> {
        let mut env = sb.env.clone();
        env.extend(self.secrets_env(secret_ids)?.into_iter().map(|(k, v)| (k, translate(&sb.root, &v))));
        let cwd = match workdir.or(sb.definition.workdir.as_ref()) {
            Some(dir) => sb.root.join(translate(&sb.root, dir)), // join keeps absolute paths as they are
            None => sb.root.clone(),
        };
        Ok(ExecSpec {
            argv: command.iter().map(|a| translate(&sb.root, a)).collect(),
            cwd,
            env,
            timeout_secs,
            split_utf8: self.faults().split_utf8,
            stdout: Sink::Pipe,
            stderr: Sink::Pipe,
        })
    }

    /// Starts the command as one of the sandbox's processes (killed when it is terminated).
    pub(crate) fn spawn_in(&self, sb: &Sandbox, spec: ExecSpec) -> Result<Arc<Exec>, Status> {
        let exec = Exec::spawn(spec);
        if !sb.add_exec(exec.clone()) {
            return Err(Status::failed_precondition(format!("Sandbox {} has already finished", sb.id)));
        }
        Ok(exec)
    }

    async fn start_exec(&self, req: pb::ContainerExecRequest) -> Result<pb::ContainerExecResponse, Status> {
        if req.command.is_empty() {
            return Err(Status::invalid_argument("command is empty"));
        }
        let sb = self.running_task(&req.task_id)?;
        let spec = self.exec_spec(&sb, &req.command, req.workdir.as_ref(), &req.secret_ids, req.timeout_secs)?;
        let exec_id = self.shared.state().next_id("ex");
        let exec = self.spawn_in(&sb, spec)?;
        self.shared.state().execs.insert(exec_id.clone(), exec);
        Ok(pb::ContainerExecResponse { exec_id })
    }

    async fn put_input(&self, req: pb::ContainerExecPutInputRequest) -> Result<pb::Empty, Status> {
        let exec = self.exec(&req.exec_id)?;
        let input = req.input.ok_or_else(|| Status::invalid_argument("input is required"))?;
        exec.put_input(input);
        Ok(pb::Empty {})
    }

    async fn wait_exec(&self, req: pb::ContainerExecWaitRequest) -> Result<pb::ContainerExecWaitResponse, Status> {
        let exec = self.exec(&req.exec_id)?;
        let exit_code = exec.wait(secs(req.timeout)).await;
        Ok(pb::ContainerExecWaitResponse { exit_code, completed: exit_code.is_some() })
    }

    async fn fs_exec(
        &self,
        req: pb::ContainerFilesystemExecRequest,
    ) -> Result<pb::ContainerFilesystemExecResponse, Status> {
        let sb = self.running_task(&req.task_id)?;
        let op = req.file_exec_request_oneof.ok_or_else(|| Status::invalid_argument("no file operation given"))?;
        let mut file_descriptor = None;
        let result = match op {
            FileExecRequestOneof::FileOpenRequest(open) => {
                let host = file_api_path(&sb.root, &open.path);
                let mode = open.mode.clone();
                let opened = blocking(move || fs::open(&host, &open.path, &mode)).await?;
                match opened {
                    Ok(file) => {
                        let mut st = self.shared.state();
                        let fd = st.next_id("fd");
                        let handle = OpenFile { sandbox_id: sb.id.clone(), file: Arc::new(Mutex::new(file)) };
                        st.files.insert(fd.clone(), handle);
                        file_descriptor = Some(fd);
                        FsResult::ok(vec![])
                    }
                    Err(e) => FsResult::err(e),
                }
            }
            FileExecRequestOneof::FileCloseRequest(close) => {
                let mut st = self.shared.state();
                match st.files.get(&close.file_descriptor) {
                    Some(h) if h.sandbox_id == sb.id => {
                        st.files.remove(&close.file_descriptor);
                        FsResult::ok(vec![])
                    }
                    _ => FsResult::err(FsError::bad_descriptor(&close.file_descriptor)),
                }
            }
            FileExecRequestOneof::FileReadRequest(read) => {
                self.with_file(&sb, read.file_descriptor, move |f, fd| fs::read(f, read.n, fd)).await?
            }
            FileExecRequestOneof::FileWriteRequest(write) => {
                let data = write.data;
                self.with_file(&sb, write.file_descriptor, move |f, fd| fs::write(f, &data, fd).map(|_| vec![])).await?
            }
            FileExecRequestOneof::FileFlushRequest(flush) => {
                self.with_file(&sb, flush.file_descriptor, |f, fd| fs::flush(f, fd).map(|_| vec![])).await?
            }
        };
        let mut st = self.shared.state();
        let exec_id = st.next_id("ex");
        st.fs_results.insert(exec_id.clone(), result);
        Ok(pb::ContainerFilesystemExecResponse { exec_id, file_descriptor })
    }

    /// Runs a file operation on an open descriptor of this sandbox, off the async threads.
    async fn with_file(
        &self,
        sb: &Sandbox,
        fd: String,
        op: impl FnOnce(&mut std::fs::File, &str) -> Result<Vec<Vec<u8>>, FsError> + Send + 'static,
    ) -> Result<FsResult, Status> {
        let file = match self.shared.state().files.get(&fd) {
            Some(h) if h.sandbox_id == sb.id => h.file.clone(),
            _ => return Ok(FsResult::err(FsError::bad_descriptor(&fd))),
        };
        let outcome = blocking(move || op(&mut lock(&file), &fd)).await?;
        Ok(match outcome {
            Ok(output) => FsResult::ok(output),
            Err(e) => FsResult::err(e),
        })
    }
}

/// Runs blocking file I/O on tokio's blocking pool.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, Status> {
    tokio::task::spawn_blocking(f).await.map_err(|e| Status::internal(format!("file operation failed: {e}")))
}

/// Creates the sandbox's root with its standard directories and its workdir (a container starts
/// in its workdir, so it exists); `node_modules` (if given) is linked into `/app` so agent
/// scripts find their packages without an install step.
fn prepare_root(root: &Path, node_modules: Option<&Path>, workdir: Option<&str>) -> std::io::Result<()> {
    for dir in SANDBOX_DIRS {
        std::fs::create_dir_all(root.join(dir))?;
    }
    if let Some(dir) = workdir.map(|w| PathBuf::from(translate(root, w))) {
        // Only inside the sandbox: a workdir like /usr/src stays a host path and is left alone.
        if dir.starts_with(root) {
            std::fs::create_dir_all(dir)?;
        }
    }
    if let Some(target) = node_modules {
        let link: PathBuf = root.join("app/node_modules");
        if link.symlink_metadata().is_err() {
            std::os::unix::fs::symlink(target, link)?;
        }
    }
    Ok(())
}

#[tonic::async_trait]
impl ModalClient for Service {
    async fn auth_token_get(
        &self,
        request: Request<pb::AuthTokenGetRequest>,
    ) -> Result<Response<pb::AuthTokenGetResponse>, Status> {
        self.unary("AuthTokenGet", request, |_| self.auth_token()).await
    }

    async fn app_get_or_create(
        &self,
        request: Request<pb::AppGetOrCreateRequest>,
    ) -> Result<Response<pb::AppGetOrCreateResponse>, Status> {
        self.unary("AppGetOrCreate", request, |r| self.app(r)).await
    }

    async fn image_get_or_create(
        &self,
        request: Request<pb::ImageGetOrCreateRequest>,
    ) -> Result<Response<pb::ImageGetOrCreateResponse>, Status> {
        self.unary("ImageGetOrCreate", request, |r| self.image(r)).await
    }

    type ImageJoinStreamingStream = Stream<pb::ImageJoinStreamingResponse>;

    async fn image_join_streaming(
        &self,
        request: Request<pb::ImageJoinStreamingRequest>,
    ) -> Result<Response<Self::ImageJoinStreamingStream>, Status> {
        self.admit("ImageJoinStreaming", request.metadata(), request.get_ref())?;
        if self.faults().image_join_close_always {
            return Ok(Response::new(stream::empty().boxed()));
        }
        let req = request.into_inner();
        let (build, cut) = {
            let mut st = self.shared.state();
            let build = st
                .images
                .get(&req.image_id)
                .cloned()
                .ok_or_else(|| Status::not_found(format!("Image {} not found", req.image_id)))?;
            // Only a stream that has a log entry to send can be cut after it.
            let cut = self.faults().image_join_cut_once
                && build.has_logs_after(&req.last_entry_id)
                && st.fire_once("image_join_cut_once", "");
            (build, cut)
        };
        Ok(Response::new(build.join_stream(&req.last_entry_id, secs(req.timeout), cut).boxed()))
    }

    async fn secret_get_or_create(
        &self,
        request: Request<pb::SecretGetOrCreateRequest>,
    ) -> Result<Response<pb::SecretGetOrCreateResponse>, Status> {
        self.unary("SecretGetOrCreate", request, |r| self.secret(r)).await
    }

    async fn sandbox_create(
        &self,
        request: Request<pb::SandboxCreateRequest>,
    ) -> Result<Response<pb::SandboxCreateResponse>, Status> {
        self.unary("SandboxCreate", request, |r| self.create_sandbox(r)).await
    }

    async fn sandbox_get_task_id(
        &self,
        request: Request<pb::SandboxGetTaskIdRequest>,
    ) -> Result<Response<pb::SandboxGetTaskIdResponse>, Status> {
        self.unary("SandboxGetTaskId", request, |r| self.task_id(r)).await
    }

    async fn sandbox_wait(
        &self,
        request: Request<pb::SandboxWaitRequest>,
    ) -> Result<Response<pb::SandboxWaitResponse>, Status> {
        self.unary("SandboxWait", request, |r| self.wait_sandbox(r)).await
    }

    async fn sandbox_terminate(
        &self,
        request: Request<pb::SandboxTerminateRequest>,
    ) -> Result<Response<pb::SandboxTerminateResponse>, Status> {
        self.unary("SandboxTerminate", request, |r| self.terminate(r)).await
    }

    async fn container_exec(
        &self,
        request: Request<pb::ContainerExecRequest>,
    ) -> Result<Response<pb::ContainerExecResponse>, Status> {
        self.unary("ContainerExec", request, |r| self.start_exec(r)).await
    }

    type ContainerExecGetOutputStream = Stream<pb::RuntimeOutputBatch>;

    async fn container_exec_get_output(
        &self,
        request: Request<pb::ContainerExecGetOutputRequest>,
    ) -> Result<Response<Self::ContainerExecGetOutputStream>, Status> {
        self.admit("ContainerExecGetOutput", request.metadata(), request.get_ref())?;
        if self.faults().output_close_always {
            return Ok(Response::new(stream::empty().boxed()));
        }
        let req = request.into_inner();
        let exec = self.exec(&req.exec_id)?;
        let fd = match pb::FileDescriptor::try_from(req.file_descriptor) {
            Ok(fd @ (pb::FileDescriptor::Stdout | pb::FileDescriptor::Stderr)) => fd,
            _ => return Err(Status::invalid_argument("file_descriptor must be STDOUT or STDERR")),
        };
        let stream = exec.output_stream(
            fd,
            req.last_batch_index,
            secs(req.timeout),
            req.get_raw_bytes,
            self.faults().cut_output_once,
        );
        Ok(Response::new(stream.boxed()))
    }

    async fn container_exec_put_input(
        &self,
        request: Request<pb::ContainerExecPutInputRequest>,
    ) -> Result<Response<pb::Empty>, Status> {
        self.unary("ContainerExecPutInput", request, |r| self.put_input(r)).await
    }

    async fn container_exec_wait(
        &self,
        request: Request<pb::ContainerExecWaitRequest>,
    ) -> Result<Response<pb::ContainerExecWaitResponse>, Status> {
        self.unary("ContainerExecWait", request, |r| self.wait_exec(r)).await
    }

    async fn container_filesystem_exec(
        &self,
        request: Request<pb::ContainerFilesystemExecRequest>,
    ) -> Result<Response<pb::ContainerFilesystemExecResponse>, Status> {
        self.unary("ContainerFilesystemExec", request, |r| self.fs_exec(r)).await
    }

    async fn task_get_command_router_access(
        &self,
        request: Request<pb::TaskGetCommandRouterAccessRequest>,
    ) -> Result<Response<pb::TaskGetCommandRouterAccessResponse>, Status> {
        self.unary("TaskGetCommandRouterAccess", request, |r| self.router_access(r)).await
    }

    type ContainerFilesystemExecGetOutputStream = Stream<pb::FilesystemRuntimeOutputBatch>;

    async fn container_filesystem_exec_get_output(
        &self,
        request: Request<pb::ContainerFilesystemExecGetOutputRequest>,
    ) -> Result<Response<Self::ContainerFilesystemExecGetOutputStream>, Status> {
        self.admit("ContainerFilesystemExecGetOutput", request.metadata(), request.get_ref())?;
        let exec_id = &request.get_ref().exec_id;
        let batch = self
            .shared
            .state()
            .fs_results
            .get(exec_id)
            .map(FsResult::batch)
            .ok_or_else(|| Status::not_found(format!("Exec {exec_id} not found")))?;
        Ok(Response::new(stream::iter([Ok(batch)]).boxed()))
    }
}
