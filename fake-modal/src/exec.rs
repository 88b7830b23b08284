//! Commands run by `ContainerExec`: real local processes whose output is kept as numbered
//! batches, so that output readers can resume by index like they do against Modal.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agent_runtime::sandbox::modal::proto as pb;
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
    exit_code: Option<i32>,
    stdin: Option<mpsc::UnboundedSender<Vec<u8>>>,
    /// Next `message_index` that `ContainerExecPutInput` applies (Modal's indexes start at 1).
    next_input: u64,
    /// Fault `cut_output_once` has been used for this exec.
    output_cut: bool,
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
        let mut cmd = Command::new(&spec.argv[0]);
        cmd.args(&spec.argv[1..])
            .current_dir(&spec.cwd)
            .env_clear()
            .envs(&spec.env)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Own process group, so terminating the sandbox also kills what the command started.
            .process_group(0)
            // Safety net when the fake is dropped without shutdown (e.g. a panicking test).
            .kill_on_drop(true);

        let mut child = match cmd.spawn() {
            Ok(child) => child,
            Err(err) => return Self::failed_to_start(&spec, &err),
        };
        let pgid = child.id().map(|pid| pid as i32);
        let (stdin_tx, stdin_rx) = mpsc::unbounded_channel();
        let exec = Arc::new(Exec {
            pgid,
            notify: Notify::new(),
            state: Mutex::new(ExecState {
                outputs: Default::default(),
                exit_code: None,
                stdin: Some(stdin_tx),
                next_input: 1,
                output_cut: false,
            }),
        });

        if let Some(stdin) = child.stdin.take() {
            tokio::spawn(write_stdin(stdin, stdin_rx));
        }
        if let Some(stdout) = child.stdout.take() {
            tokio::spawn(read_output(exec.clone(), 0, stdout, spec.split_utf8));
        }
        if let Some(stderr) = child.stderr.take() {
            tokio::spawn(read_output(exec.clone(), 1, stderr, spec.split_utf8));
        }
        if spec.timeout_secs > 0 {
            let exec = exec.clone();
            let limit = Duration::from_secs(spec.timeout_secs.into());
            tokio::spawn(async move {
                tokio::time::sleep(limit).await;
                if exec.exit_code().is_none() {
                    exec.kill();
                }
            });
        }
        let waiter = exec.clone();
        tokio::spawn(async move {
            let code = match child.wait().await {
                Ok(status) => exit_code(status),
                Err(_) => 255,
            };
            lock(&waiter.state).exit_code = Some(code);
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
        let closed = |batches: Vec<Vec<u8>>| Output { batches, closed: true };
        Arc::new(Exec {
            pgid: None,
            notify: Notify::new(),
            state: Mutex::new(ExecState {
                outputs: [closed(vec![]), closed(vec![message.into_bytes()])],
                exit_code: Some(code),
                stdin: None,
                next_input: 1,
                output_cut: false,
            }),
        })
    }

    pub fn exit_code(&self) -> Option<i32> {
        lock(&self.state).exit_code
    }

    pub fn is_running(&self) -> bool {
        self.pgid.is_some() && self.exit_code().is_none()
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

    /// Long-polls for the exit code.
    pub async fn wait(&self, timeout: Duration) -> Option<i32> {
        long_poll(&self.notify, Instant::now() + timeout, || self.exit_code()).await
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
                    let finished = if out.closed { st.exit_code.map(|code| (code, all.max(last))) } else { None };
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
}

/// Exit code as a shell reports it: signals become 128 + signal number.
fn exit_code(status: ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => code,
        (None, Some(sig)) => 128 + sig,
        (None, None) => 255,
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
