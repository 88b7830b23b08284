//! Exec through the sandbox's task command router — the path official SDKs use since
//! modal-js 0.7: a gRPC server on the worker itself, reached with a per-task JWT. Chosen per
//! sandbox when `TaskGetCommandRouterAccess` succeeds; otherwise the classic path is used.
//!
//! The router numbers output by byte offset (not batch), takes client-chosen exec ids (so a
//! retried start cannot start twice) and stdin by offset (so a retried write is applied once).

use std::future::Future;
use std::time::Duration;

use async_trait::async_trait;
use futures::{FutureExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tonic::metadata::AsciiMetadataValue;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};
use tonic::{Code, Request, Status};

use super::client::{is_retryable, MResult, ModalError};
use super::control::ControlPlane;
use super::exec::{ExecRequest, ExecTransport};
use super::proto::router::task_command_router_client::TaskCommandRouterClient;
use super::proto::router::{
    task_exec_wait_response::ExitStatus, TaskExecStartRequest, TaskExecStderrConfig, TaskExecStdinWriteRequest,
    TaskExecStdioFileDescriptor, TaskExecStdioReadRequest, TaskExecStdoutConfig, TaskExecWaitRequest,
};
use super::proto::TaskGetCommandRouterAccessRequest;
use crate::sandbox::Process;

const ATTEMPTS: u32 = 10;
const PIPE: usize = 256 * 1024;
const STDIN_CHUNK: usize = 1 << 20;
const MAX_MESSAGE: usize = 100 << 20;

struct Access {
    client: TaskCommandRouterClient<Channel>,
    bearer: AsciiMetadataValue,
    /// Bumped by each refresh, so a caller can tell whether the token it was refused with has
    /// been replaced meanwhile.
    generation: u64,
}

pub struct RouterExec {
    control: ControlPlane,
    task_id: String,
    /// The router's address, fixed for the task (a token refresh must not move it).
    url: String,
    access: tokio::sync::RwLock<Access>,
    /// Held while fetching a new token: concurrent refusals make one refresh, not one each.
    refreshing: tokio::sync::Mutex<()>,
}

fn fail(message: String) -> ModalError {
    ModalError { code: Code::FailedPrecondition, message }
}

/// Whether the control plane is local (a fake or a tunnel): the official SDK then talks to the
/// router in plaintext, and so do we.
fn local_host(control_url: &str) -> bool {
    let host = control_url.split("://").nth(1).unwrap_or(control_url);
    let host = host.split(['/', '?']).next().unwrap_or("");
    let host = host.rsplit_once(':').map_or(host, |(h, _)| h);
    matches!(host, "localhost" | "127.0.0.1" | "[::1]" | "::1" | "172.21.0.1")
}

impl RouterExec {
    /// The router of `task_id`, or `None` when the task has none (older workers, fakes).
    pub async fn connect(control: &ControlPlane, task_id: &str) -> MResult<Option<Self>> {
        let (url, access) = match Self::fetch_access(control, task_id, None).await {
            Ok(x) => x,
            Err(e) if matches!(e.code, Code::FailedPrecondition | Code::Unimplemented | Code::NotFound) => {
                return Ok(None)
            }
            Err(e) => return Err(e),
        };
        Ok(Some(Self {
            control: control.clone(),
            task_id: task_id.into(),
            url,
            access: tokio::sync::RwLock::new(access),
            refreshing: tokio::sync::Mutex::new(()),
        }))
    }

    async fn fetch_access(control: &ControlPlane, task_id: &str, same_url: Option<&str>) -> MResult<(String, Access)> {
        let req = TaskGetCommandRouterAccessRequest { task_id: task_id.into() };
        let r =
            control
                .conn
                .unary("TaskGetCommandRouterAccess", req, |mut c, r| async move {
                    c.task_get_command_router_access(r).await
                })
                .await?;
        if let Some(u) = same_url.filter(|u| *u != r.url) {
            return Err(fail(format!("the task command router moved from {u} to {} during the session", r.url)));
        }
        let Some(rest) = r.url.strip_prefix("https://") else {
            return Err(fail(format!("the task command router URL {:?} is not https", r.url)));
        };
        let hostport = if rest.contains(':') {
            rest.trim_end_matches('/').to_string()
        } else {
            format!("{}:443", rest.trim_end_matches('/'))
        };
        let bad = |e: String| fail(format!("task command router {}: {e}", r.url));
        let endpoint = if local_host(control.conn.url()) {
            Endpoint::from_shared(format!("http://{hostport}")).map_err(|e| bad(e.to_string()))?
        } else {
            Endpoint::from_shared(format!("https://{hostport}"))
                .map_err(|e| bad(e.to_string()))?
                .tls_config(ClientTlsConfig::new().with_webpki_roots())
                .map_err(|e| bad(e.to_string()))?
        };
        let channel = endpoint
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_timeout(Duration::from_secs(10))
            .keep_alive_while_idle(true)
            .tcp_nodelay(true)
            .connect_lazy();
        let client = TaskCommandRouterClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE);
        let bearer =
            AsciiMetadataValue::try_from(format!("Bearer {}", r.jwt)).map_err(|_| bad("token is not ASCII".into()))?;
        Ok((r.url, Access { client, bearer, generation: 0 }))
    }

    /// Replace the token of `generation` with a fresh one, unless another caller already has.
    async fn refresh(&self, generation: u64) -> MResult<()> {
        let _one = self.refreshing.lock().await;
        if self.access.read().await.generation != generation {
            return Ok(());
        }
        let (_, mut fresh) = Self::fetch_access(&self.control, &self.task_id, Some(&self.url)).await?;
        fresh.generation = generation + 1;
        *self.access.write().await = fresh;
        Ok(())
    }

    /// One router call: bearer token, retries with backoff on transient codes, and one token
    /// refresh when the router says the token is no longer good.
    async fn call<T, R, F, Fut>(&self, method: &'static str, msg: T, deadline: Option<Duration>, f: F) -> MResult<R>
    where
        T: Clone,
        F: Fn(TaskCommandRouterClient<Channel>, Request<T>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<R>, Status>>,
    {
        let mut delay = Duration::from_millis(10);
        let mut refreshed = false;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let (client, bearer, generation) = {
                let a = self.access.read().await;
                (a.client.clone(), a.bearer.clone(), a.generation)
            };
            let mut r = Request::new(msg.clone());
            r.metadata_mut().insert("authorization", bearer);
            if let Some(d) = deadline {
                r.set_timeout(d);
            }
            match f(client, r).await {
                Ok(resp) => return Ok(resp.into_inner()),
                Err(s) if s.code() == Code::Unauthenticated && !refreshed => {
                    refreshed = true;
                    self.refresh(generation).await?;
                }
                Err(s) if is_retryable(s.code()) && attempt < ATTEMPTS => {
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(1));
                }
                Err(s) => {
                    return Err(ModalError {
                        code: s.code(),
                        message: format!("Modal task command router {method} failed ({:?}): {}", s.code(), s.message()),
                    })
                }
            }
        }
    }
}

#[async_trait]
impl ExecTransport for std::sync::Arc<RouterExec> {
    async fn exec(&self, req: ExecRequest) -> MResult<Process> {
        let exec_id = uuid::Uuid::new_v4().to_string();
        let start = TaskExecStartRequest {
            task_id: self.task_id.clone(),
            exec_id: exec_id.clone(),
            command_args: req.argv,
            stdout_config: TaskExecStdoutConfig::Pipe as i32,
            stderr_config: TaskExecStderrConfig::Pipe as i32,
            workdir: req.workdir,
            secret_ids: req.secret_ids,
            ..Default::default()
        };
        self.call("TaskExecStart", start, Some(Duration::from_secs(60)), |mut c, r| async move {
            c.task_exec_start(r).await
        })
        .await?;
        let (stdout, out_w) = tokio::io::duplex(PIPE);
        let (stderr, err_w) = tokio::io::duplex(PIPE);
        let (stdin_w, stdin_r) = tokio::io::duplex(PIPE);
        tokio::spawn(read(self.clone(), exec_id.clone(), TaskExecStdioFileDescriptor::Stdout, out_w));
        tokio::spawn(read(self.clone(), exec_id.clone(), TaskExecStdioFileDescriptor::Stderr, err_w));
        tokio::spawn(write(self.clone(), exec_id.clone(), stdin_r));
        let me = self.clone();
        Ok(Process {
            stdout: Box::pin(stdout),
            stderr: Box::pin(stderr),
            stdin: Some(Box::pin(stdin_w)),
            exit: async move { wait(&me, &exec_id).await.unwrap_or(-1) }.boxed(),
            kill: None,
        })
    }
}

/// Copy one fd to `out`, reopening after a broken stream at the byte where it broke.
async fn read(r: std::sync::Arc<RouterExec>, exec_id: String, fd: TaskExecStdioFileDescriptor, mut out: DuplexStream) {
    let mut offset = 0u64;
    let mut failures = 0;
    loop {
        let req = TaskExecStdioReadRequest {
            task_id: r.task_id.clone(),
            exec_id: exec_id.clone(),
            offset,
            file_descriptor: fd as i32,
        };
        let opened =
            r.call("TaskExecStdioRead", req, None, |mut c, q| async move { c.task_exec_stdio_read(q).await }).await;
        let mut stream = match opened {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(exec_id, error = %e, "Modal exec output lost");
                return;
            }
        };
        loop {
            match stream.next().await {
                Some(Ok(chunk)) => {
                    failures = 0;
                    offset += chunk.data.len() as u64;
                    if out.write_all(&chunk.data).await.is_err() {
                        return;
                    }
                }
                None => return, // the end of this output
                Some(Err(s)) if is_retryable(s.code()) && failures < ATTEMPTS => {
                    failures += 1;
                    tokio::time::sleep(Duration::from_millis(10 << failures.min(6))).await;
                    break;
                }
                Some(Err(s)) => {
                    tracing::warn!(exec_id, error = %s, "Modal exec output failed");
                    return;
                }
            }
        }
    }
}

async fn write(r: std::sync::Arc<RouterExec>, exec_id: String, mut input: DuplexStream) {
    let mut offset = 0u64;
    let mut buf = vec![0u8; STDIN_CHUNK];
    loop {
        let n = input.read(&mut buf).await.unwrap_or(0);
        let req = TaskExecStdinWriteRequest {
            task_id: r.task_id.clone(),
            exec_id: exec_id.clone(),
            offset,
            data: buf[..n].to_vec(),
            eof: n == 0,
        };
        if let Err(e) = r
            .call("TaskExecStdinWrite", req, Some(Duration::from_secs(60)), |mut c, q| async move {
                c.task_exec_stdin_write(q).await
            })
            .await
        {
            tracing::warn!(exec_id, error = %e, "Modal exec stdin failed");
            return;
        }
        offset += n as u64;
        if n == 0 {
            return;
        }
    }
}

/// Exit code (128 + signal when killed by one), waiting in 60 s slices.
async fn wait(r: &RouterExec, exec_id: &str) -> MResult<i32> {
    loop {
        let req = TaskExecWaitRequest { task_id: r.task_id.clone(), exec_id: exec_id.into() };
        match r
            .call(
                "TaskExecWait",
                req,
                Some(Duration::from_secs(60)),
                |mut c, q| async move { c.task_exec_wait(q).await },
            )
            .await
        {
            Ok(resp) => {
                return Ok(match resp.exit_status {
                    Some(ExitStatus::Code(c)) => c,
                    Some(ExitStatus::Signal(s)) => 128 + s,
                    None => 0,
                })
            }
            Err(e) if e.code == Code::DeadlineExceeded => continue,
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_control_planes_mean_a_plaintext_router() {
        assert!(local_host("http://127.0.0.1:5000"));
        assert!(local_host("http://localhost:80/x"));
        assert!(!local_host("https://api.modal.com:443"));
    }
}
