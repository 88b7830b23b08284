//! Running a command in a Modal sandbox.
//!
//! [`ExecTransport`] is the seam: [`ClassicExec`] speaks the control-plane calls modal-js 0.5.x
//! uses (`ContainerExec*`), which is what the reference runtime runs on; the task command
//! router that newer SDKs use can be added beside it.
//!
//! Output is resumable: batches are numbered, and a reader that loses its stream reopens it
//! after the last batch it saw, so nothing is lost or repeated. Bytes are handed on raw; line
//! splitting (and UTF-8 decoding of whole lines) happens in the caller, so a multi-byte
//! character split across batches survives.

use std::time::Duration;

use async_trait::async_trait;
use futures::{FutureExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

use super::backoff::{Backoff, ReopenPolicy};
use super::client::{is_retryable, Connection, MResult, ModalError};
use super::proto::{
    ContainerExecGetOutputRequest, ContainerExecPutInputRequest, ContainerExecRequest, ContainerExecWaitRequest,
    FileDescriptor, RuntimeInputMessage,
};
use crate::sandbox::Process;

/// Long-poll length the server honours; the client deadline leaves room for the answer.
const POLL_SECS: f32 = 55.0;
const POLL_DEADLINE: Duration = Duration::from_secs(70);
const PIPE: usize = 256 * 1024;
/// Largest stdin message.
const STDIN_CHUNK: usize = 1 << 20;

#[derive(Debug, Clone, Default)]
pub struct ExecRequest {
    pub task_id: String,
    pub argv: Vec<String>,
    pub workdir: Option<String>,
    /// Ephemeral secrets holding per-exec environment.
    pub secret_ids: Vec<String>,
}

#[async_trait]
pub trait ExecTransport: Send + Sync + 'static {
    async fn exec(&self, req: ExecRequest) -> MResult<Process>;
}

pub struct ClassicExec {
    conn: Connection,
    reopen: ReopenPolicy,
}

impl ClassicExec {
    pub fn new(conn: Connection, reopen: ReopenPolicy) -> Self {
        Self { conn, reopen }
    }
}

#[async_trait]
impl ExecTransport for ClassicExec {
    async fn exec(&self, req: ExecRequest) -> MResult<Process> {
        let msg = ContainerExecRequest {
            task_id: req.task_id,
            command: req.argv,
            workdir: req.workdir,
            secret_ids: req.secret_ids,
            ..Default::default()
        };
        let exec_id =
            self.conn.unary("ContainerExec", msg, |mut c, r| async move { c.container_exec(r).await }).await?.exec_id;
        let (stdout, out_w) = tokio::io::duplex(PIPE);
        let (stderr, err_w) = tokio::io::duplex(PIPE);
        let (stdin_w, stdin_r) = tokio::io::duplex(PIPE);
        // Both streams are read right away: an unread stderr must not stall the process.
        tokio::spawn(read_output(self.conn.clone(), exec_id.clone(), FileDescriptor::Stdout, self.reopen, out_w));
        tokio::spawn(read_output(self.conn.clone(), exec_id.clone(), FileDescriptor::Stderr, self.reopen, err_w));
        tokio::spawn(write_input(self.conn.clone(), exec_id.clone(), stdin_r));
        let conn = self.conn.clone();
        Ok(Process {
            stdout: Box::pin(stdout),
            stderr: Box::pin(stderr),
            stdin: Some(Box::pin(stdin_w)),
            exit: async move { wait(&conn, &exec_id).await.unwrap_or(-1) }.boxed(),
            kill: None,
        })
    }
}

/// Copy one fd's batches into `out` until the batch that carries the exit code. A stream that
/// breaks or closes without progress is reopened after a backoff pause, a bounded number of
/// times in a row; then the output ends here (logged).
async fn read_output(
    conn: Connection,
    exec_id: String,
    fd: FileDescriptor,
    policy: ReopenPolicy,
    mut out: DuplexStream,
) {
    let mut last = 0u64;
    let mut backoff = Backoff::new(policy);
    loop {
        let req = ContainerExecGetOutputRequest {
            exec_id: exec_id.clone(),
            timeout: POLL_SECS,
            last_batch_index: last,
            file_descriptor: fd as i32,
            get_raw_bytes: true,
        };
        let opened_at = tokio::time::Instant::now();
        let mut progressed = false;
        let problem: String;
        match conn
            .stream("ContainerExecGetOutput", req, POLL_DEADLINE, |mut c, r| async move {
                c.container_exec_get_output(r).await
            })
            .await
        {
            Ok(mut stream) => loop {
                match stream.next().await {
                    Some(Ok(batch)) => {
                        progressed = true;
                        if batch.batch_index > last || batch.exit_code.is_some() {
                            last = last.max(batch.batch_index);
                            for item in batch.items {
                                if out.write_all(&item.message_bytes).await.is_err() {
                                    return; // nobody reads this fd any more
                                }
                            }
                        }
                        if batch.exit_code.is_some() {
                            return; // dropping `out` is the reader's end of file
                        }
                    }
                    // Ended without an exit code: the long poll ran out (or the stream broke); resume.
                    None => {
                        problem = "the stream ended without an exit code".into();
                        break;
                    }
                    Some(Err(s)) if is_retryable(s.code()) => {
                        problem = format!("{:?}: {}", s.code(), s.message());
                        break;
                    }
                    Some(Err(s)) => {
                        tracing::warn!(exec_id, fd = ?fd, error = %s, "Modal exec output failed");
                        return;
                    }
                }
            },
            Err(e) if is_retryable(e.code) => problem = e.message,
            Err(e) => {
                tracing::warn!(exec_id, fd = ?fd, error = %e, "Modal exec output lost");
                return;
            }
        }
        match backoff.after(progressed, opened_at.elapsed()) {
            None => {}
            Some(Ok(delay)) => tokio::time::sleep(delay).await,
            Some(Err(n)) => {
                tracing::warn!(exec_id, fd = ?fd, failures = n, last = %problem, "Modal exec output lost: giving up");
                return;
            }
        }
    }
}

/// Send stdin in numbered messages (the server applies each index once), then end of file.
async fn write_input(conn: Connection, exec_id: String, mut input: DuplexStream) {
    let mut index = 0u64;
    let mut buf = vec![0u8; STDIN_CHUNK];
    loop {
        let n = input.read(&mut buf).await.unwrap_or(0);
        index += 1;
        let msg = RuntimeInputMessage { message: buf[..n].to_vec(), message_index: index, eof: n == 0 };
        let req = ContainerExecPutInputRequest { exec_id: exec_id.clone(), input: Some(msg) };
        if let Err(e) = conn
            .unary("ContainerExecPutInput", req, |mut c, r| async move { c.container_exec_put_input(r).await })
            .await
        {
            tracing::warn!(exec_id, error = %e, "Modal exec stdin failed");
            return;
        }
        if n == 0 {
            return;
        }
    }
}

/// The exit code, by long-polling until the command has finished.
pub async fn wait(conn: &Connection, exec_id: &str) -> MResult<i32> {
    loop {
        let req = ContainerExecWaitRequest { exec_id: exec_id.into(), timeout: POLL_SECS };
        let r = conn.unary("ContainerExecWait", req, |mut c, r| async move { c.container_exec_wait(r).await }).await?;
        if r.completed {
            return Ok(r.exit_code.unwrap_or(0));
        }
    }
}

/// Run to completion with `stdin`, returning (exit code, stdout, stderr).
pub async fn run(t: &dyn ExecTransport, req: ExecRequest, stdin: &[u8]) -> MResult<(i32, Vec<u8>, Vec<u8>)> {
    let mut p = t.exec(req).await?;
    if let Some(mut w) = p.stdin.take() {
        let io = |e: std::io::Error| ModalError { code: tonic::Code::Internal, message: format!("stdin: {e}") };
        w.write_all(stdin).await.map_err(io)?;
        w.shutdown().await.map_err(io)?;
    }
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let (a, b) = tokio::join!(p.stdout.read_to_end(&mut out), p.stderr.read_to_end(&mut err));
    let _ = (a, b);
    Ok((p.exit.await, out, err))
}
