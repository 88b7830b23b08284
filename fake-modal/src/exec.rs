//! Commands run by `ContainerExec` and the command router's `TaskExecStart`: real local
//! processes whose output is kept as numbered batches, so that output readers can resume by
//! batch index (classic API) or by byte offset (router) like they do against Modal.

use std::collections::BTreeMap;
use std::io::PipeReader;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agent_runtime::sandbox::modal::proto::{self as pb, router as rpb};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;
use tokio::sync::{mpsc, Notify};
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use crate::util::{lock, long_poll};

/// Everything needed to start one command.
pub struct ExecSpec {
    pub argv: Vec<String>,
    pub cwd: PathBuf,
    pub env: BTreeMap<String, String>,
    pub timeout_secs: u32,
    /// Fault `split_utf8`: chunks with non-ASCII bytes become 1-byte batches.
    pub split_utf8: bool,
    /// `Sink::Pipe` or `Sink::Null`.
    pub stdout: Sink,
    /// `Sink::Stdout` = `2>&1`.
    pub stderr: Sink,
}

/// Where a command's stdout or stderr goes. Classic execs always pipe both; the router can
/// discard them or merge stderr into stdout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sink {
    Pipe,
    Null,
    Stdout,
}

/// How the main process ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(i32),
}

impl Exit {
    /// Exit code as a shell reports it: signals become 128 + signal number.
    pub fn code(self) -> i32 {
        match self {
            Exit::Code(code) => code,
            Exit::Signal(sig) => 128 + sig,
        }
    }
}

pub struct Exec {
    /// Process group id (= pid of the leader); `None` when the program could not be started.
    pgid: Option<i32>,
    /// Woken on every change of `state` (new output, closed pipe, exit).
    notify: Notify,
    state: Mutex<ExecState>,
}

struct ExecState {
    /// Index 0 = stdout, 1 = stderr.
    outputs: [Output; 2],
    exit: Option<Exit>,
    stdin: Option<mpsc::UnboundedSender<Vec<u8>>>,
    /// Next `message_index` that `ContainerExecPutInput` applies (Modal's indexes start at 1).
    next_input: u64,
    /// Bytes taken by `TaskExecStdinWrite` so far (its offsets count bytes, not messages).
    stdin_written: u64,
    /// Fault `cut_output_once` has been used for this exec.
    output_cut: bool,
    /// Fault `router_cut_stdio_once` has been used for this exec.
    stdio_cut: bool,
}

#[derive(Default)]
struct Output {
    /// Batch `i` (1-based on the wire) is `batches[i - 1]`.
    batches: Vec<Vec<u8>>,
    /// The pipe reached EOF: no batch will be added any more.
    closed: bool,
}

impl Exec {
    /// Starts the command. A program that cannot be started still yields an exec that failed the
    /// way a shell would report it (exit 127 and a message on stderr), as Modal does.
    pub fn spawn(spec: ExecSpec) -> Arc<Exec> {
        let (stdout, stderr, merged) = match child_stdio(&spec) {
            Ok(stdio) => stdio,
            Err(err) => return Self::failed_to_start(&spec, &err),
        };
        let mut cmd = Command::new(&spec.argv[0]);
        cmd.args(&spec.argv[1..])
            .current_dir(&spec.cwd)
            .env_clear()
            .envs(&spec.env)
            .stdin(Stdio::piped())
            .stdout(stdout)
            .stderr(stderr)
            // Own process group, so terminating the sandbox also kills what the command started.
            .process_group(0)
            // Safety net when the fake is dropped without shutdown (e.g. a panicking test).
            .kill_on_drop(true);

        let spawned = cmd.spawn();
        // Our copies of a merged pipe's write end must go, or its reader never sees EOF.
        drop(cmd);
        let mut child = match spawned {
            Ok(child) => child,
            Err(err) => return Self::failed_to_start(&spec, &err),
        };
        let merged = merged.and_then(|r| tokio::net::unix::pipe::Receiver::from_owned_fd(r.into()).ok());
        let pgid = child.id().map(|pid| pid as i32);
        let (stdin_tx, stdin_rx) = mpsc::unbounded_channel();
        // An output nobody reads (discarded or merged away) is complete from the start.
        let closed = [child.stdout.is_none() && merged.is_none(), child.stderr.is_none()];
        let outputs = closed.map(|closed| Output { closed, ..Output::default() });
        let exec =
            Arc::new(Exec { pgid, notify: Notify::new(), state: Mutex::new(ExecState::new(outputs, Some(stdin_tx))) });

        if let Some(stdin) = child.stdin.take() {
            tokio::spawn(write_stdin(stdin, stdin_rx));
        }
        if let Some(stdout) = child.stdout.take() {
            tokio::spawn(read_output(exec.clone(), 0, stdout, spec.split_utf8));
        }
        if let Some(merged) = merged {
            tokio::spawn(read_output(exec.clone(), 0, merged, spec.split_utf8));
        }
        if let Some(stderr) = child.stderr.take() {
            tokio::spawn(read_output(exec.clone(), 1, stderr, spec.split_utf8));
        }
        if spec.timeout_secs > 0 {
            let exec = exec.clone();
            let limit = Duration::from_secs(spec.timeout_secs.into());
            tokio::spawn(async move {
                tokio::time::sleep(limit).await;
                if exec.exit().is_none() {
                    exec.kill();
                }
            });
        }
        let waiter = exec.clone();
        tokio::spawn(async move {
            let exit = match child.wait().await {
                Ok(status) => exit_of(status),
                Err(_) => Exit::Code(255),
            };
            lock(&waiter.state).exit = Some(exit);
            waiter.notify.notify_waiters();
        });
        exec
    }

    fn failed_to_start(spec: &ExecSpec, err: &std::io::Error) -> Arc<Exec> {
        let program = &spec.argv[0];
        let (message, code) = if !spec.cwd.is_dir() {
            (format!("cd: {}: No such file or directory\n", spec.cwd.display()), 1)
        } else {
            match err.kind() {
                std::io::ErrorKind::NotFound => (format!("{program}: command not found\n"), 127),
                std::io::ErrorKind::PermissionDenied => (format!("{program}: Permission denied\n"), 126),
                _ => (format!("{program}: {err}\n"), 127),
            }
        };
        let mut outputs = [true, true].map(|closed| Output { closed, ..Output::default() });
        // The shell's message goes wherever the command's stderr would have gone.
        match (spec.stderr, spec.stdout) {
            (Sink::Pipe, _) => outputs[1].batches.push(message.into_bytes()),
            (Sink::Stdout, Sink::Pipe) => outputs[0].batches.push(message.into_bytes()),
            _ => {}
        }
        let mut state = ExecState::new(outputs, None);
        state.exit = Some(Exit::Code(code));
        Arc::new(Exec { pgid: None, notify: Notify::new(), state: Mutex::new(state) })
    }

    pub fn exit(&self) -> Option<Exit> {
        lock(&self.state).exit
    }

    pub fn exit_code(&self) -> Option<i32> {
        self.exit().map(Exit::code)
    }

    pub fn is_running(&self) -> bool {
        self.pgid.is_some() && self.exit().is_none()
    }

    /// SIGKILLs the whole process group (also after the leader exited: it may have left
    /// background children holding the output pipes open).
    pub fn kill(&self) {
        if let Some(pgid) = self.pgid {
            // SAFETY: plain syscall; an already empty group just yields ESRCH.
            unsafe {
                libc::killpg(pgid, libc::SIGKILL);
            }
        }
    }

    /// Applies one stdin message. Indexes already applied (client retries) and out-of-order
    /// indexes are ignored, so a retried write never reaches the process twice.
    pub fn put_input(&self, input: pb::RuntimeInputMessage) {
        let mut st = lock(&self.state);
        if input.message_index != st.next_input {
            return;
        }
        st.next_input += 1;
        if let Some(tx) = &st.stdin {
            if !input.message.is_empty() {
                let _ = tx.send(input.message);
            }
        }
        if input.eof {
            // Dropping the sender ends the writer task, which closes the pipe.
            st.stdin = None;
        }
    }

    /// Applies one `TaskExecStdinWrite`: only the bytes beyond what was already written reach
    /// the process, so a retried write is harmless. A write leaving a gap is refused.
    pub fn write_stdin(&self, offset: u64, data: &[u8], eof: bool) -> Result<(), String> {
        let mut st = lock(&self.state);
        if offset > st.stdin_written {
            return Err(format!("stdin offset {offset} is beyond the {} bytes written so far", st.stdin_written));
        }
        let skip = (st.stdin_written - offset) as usize;
        if skip < data.len() {
            if let Some(tx) = &st.stdin {
                let _ = tx.send(data[skip..].to_vec());
            }
            st.stdin_written += (data.len() - skip) as u64;
        }
        if eof {
            st.stdin = None;
        }
        Ok(())
    }

    /// Long-polls for the exit code.
    pub async fn wait(&self, timeout: Duration) -> Option<i32> {
        long_poll(&self.notify, Instant::now() + timeout, || self.exit_code()).await
    }

    /// Waits for the exit however long it takes (router clients bound it with a deadline and
    /// retry, so an abandoned call just drops this future).
    pub async fn wait_exit(&self) -> Exit {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(exit) = self.exit() {
                return exit;
            }
            notified.await;
        }
    }

    /// Serves one `ContainerExecGetOutput` call: batches after `last_batch_index`, then either
    /// the final batch with `exit_code` or, after `timeout`, the end of the stream (the client
    /// reopens). With `cut_output_once` the first stream of the exec that delivers data ends
    /// right after its first batch.
    pub fn output_stream(
        self: Arc<Self>,
        fd: pb::FileDescriptor,
        last_batch_index: u64,
        timeout: Duration,
        raw_bytes: bool,
        cut_output_once: bool,
    ) -> ReceiverStream<Result<pb::RuntimeOutputBatch, Status>> {
        let (tx, rx) = mpsc::channel(16);
        let slot = if fd == pb::FileDescriptor::Stderr { 1 } else { 0 };
        tokio::spawn(async move {
            let deadline = Instant::now() + timeout;
            let mut last = last_batch_index;
            loop {
                let notified = self.notify.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();

                let (fresh, finished, cut) = {
                    let mut st = lock(&self.state);
                    let out = &st.outputs[slot];
                    let fresh: Vec<Vec<u8>> = out.batches.iter().skip(last as usize).cloned().collect();
                    let all = out.batches.len() as u64;
                    let finished = if out.closed { st.exit.map(|exit| (exit.code(), all.max(last))) } else { None };
                    let cut = cut_output_once && !fresh.is_empty() && !st.output_cut;
                    if cut {
                        st.output_cut = true;
                    }
                    (fresh, finished, cut)
                };
                for data in fresh {
                    last += 1;
                    let item = pb::RuntimeOutputMessage {
                        file_descriptor: fd as i32,
                        // Without get_raw_bytes Modal sends text; a client that forgets the flag
                        // then finds no message_bytes, which is what we want tests to notice.
                        message: if raw_bytes { String::new() } else { String::from_utf8_lossy(&data).into_owned() },
                        message_bytes: if raw_bytes { data } else { Vec::new() },
                    };
                    let batch = pb::RuntimeOutputBatch { items: vec![item], batch_index: last, exit_code: None };
                    if tx.send(Ok(batch)).await.is_err() || cut {
                        return;
                    }
                }
                if let Some((code, index)) = finished {
                    let batch = pb::RuntimeOutputBatch { items: vec![], batch_index: index, exit_code: Some(code) };
                    let _ = tx.send(Ok(batch)).await;
                    return;
                }
                tokio::select! {
                    _ = notified => {}
                    _ = tokio::time::sleep_until(deadline) => return,
                    _ = tx.closed() => return,
                }
            }
        });
        ReceiverStream::new(rx)
    }

    /// Serves one `TaskExecStdioRead` call: the bytes of output `slot` (0 = stdout) from byte
    /// `offset` on, one message per stored chunk (the first one trimmed), waiting for more; the
    /// stream ends (OK) once the pipe is closed, the process has exited and all was sent. With
    /// `cut_once` the first stream of the exec that sends data fails with UNAVAILABLE after it.
    pub fn stdio_stream(
        self: Arc<Self>,
        slot: usize,
        offset: u64,
        cut_once: bool,
    ) -> ReceiverStream<Result<rpb::TaskExecStdioReadResponse, Status>> {
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(async move {
            // Reading position: batch `next`, minus `skip` bytes the client already has.
            let (mut next, mut skip) = (0usize, offset);
            loop {
                let notified = self.notify.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();

                let (fresh, finished, cut) = {
                    let mut st = lock(&self.state);
                    let out = &st.outputs[slot];
                    // Skip whole batches by length first, so a far offset copies nothing.
                    while let Some(batch) = out.batches.get(next) {
                        if batch.len() as u64 > skip {
                            break;
                        }
                        skip -= batch.len() as u64;
                        next += 1;
                    }
                    let mut fresh: Vec<Vec<u8>> = out.batches[next..].to_vec();
                    if let Some(first) = fresh.first_mut() {
                        first.drain(..skip as usize);
                        skip = 0;
                    }
                    next = out.batches.len();
                    let finished = out.closed && st.exit.is_some();
                    let cut = cut_once && !fresh.is_empty() && !st.stdio_cut;
                    if cut {
                        st.stdio_cut = true;
                    }
                    (fresh, finished, cut)
                };
                for data in fresh {
                    if tx.send(Ok(rpb::TaskExecStdioReadResponse { data })).await.is_err() {
                        return;
                    }
                    if cut {
                        let _ = tx.send(Err(Status::unavailable("injected fault: router_cut_stdio_once"))).await;
                        return;
                    }
                }
                if finished {
                    return;
                }
                tokio::select! {
                    _ = notified => {}
                    _ = tx.closed() => return,
                }
            }
        });
        ReceiverStream::new(rx)
    }
}

impl ExecState {
    fn new(outputs: [Output; 2], stdin: Option<mpsc::UnboundedSender<Vec<u8>>>) -> ExecState {
        ExecState { outputs, exit: None, stdin, next_input: 1, stdin_written: 0, output_cut: false, stdio_cut: false }
    }
}

/// The child's stdout and stderr, plus the read end of the pipe they share when stderr is merged
/// into a piped stdout: one pipe keeps the order in which the process wrote to the two.
fn child_stdio(spec: &ExecSpec) -> std::io::Result<(Stdio, Stdio, Option<PipeReader>)> {
    let pipe_or_null = |sink| if sink == Sink::Pipe { Stdio::piped() } else { Stdio::null() };
    match (spec.stdout, spec.stderr) {
        (Sink::Pipe, Sink::Stdout) => {
            let (reader, writer) = std::io::pipe()?;
            Ok((writer.try_clone()?.into(), writer.into(), Some(reader)))
        }
        // `2>&1` onto a discarded stdout discards both.
        (stdout, Sink::Stdout) => Ok((pipe_or_null(stdout), pipe_or_null(stdout), None)),
        (stdout, stderr) => Ok((pipe_or_null(stdout), pipe_or_null(stderr), None)),
    }
}

fn exit_of(status: ExitStatus) -> Exit {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => Exit::Code(code),
        (None, Some(sig)) => Exit::Signal(sig),
        (None, None) => Exit::Code(255),
    }
}

async fn write_stdin(mut stdin: tokio::process::ChildStdin, mut rx: mpsc::UnboundedReceiver<Vec<u8>>) {
    while let Some(chunk) = rx.recv().await {
        // A process that stopped reading (EPIPE) just loses the rest, as with a real pipe.
        if stdin.write_all(&chunk).await.is_err() || stdin.flush().await.is_err() {
            return;
        }
    }
}

/// Appends each read chunk as one batch.
async fn read_output(exec: Arc<Exec>, slot: usize, mut pipe: impl AsyncRead + Unpin, split_utf8: bool) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = pipe.read(&mut buf).await.unwrap_or(0);
        {
            let mut st = lock(&exec.state);
            let out = &mut st.outputs[slot];
            if n == 0 {
                out.closed = true;
            } else if split_utf8 && !buf[..n].is_ascii() {
                out.batches.extend(buf[..n].iter().map(|b| vec![*b]));
            } else {
                out.batches.push(buf[..n].to_vec());
            }
        }
        exec.notify.notify_waiters();
        if n == 0 {
            return;
        }
    }
}
