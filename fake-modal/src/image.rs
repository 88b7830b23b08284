//! Images: content-addressed ids and simulated builds whose logs `ImageJoinStreaming` replays.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use agent_runtime::sandbox::modal::proto::{self as pb, generic_result::GenericStatus};
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, Notify};
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use crate::util::lock;

/// `im-` + hash of the recipe, so the same recipe maps to the same id (Modal's cache hit).
pub fn image_id(image: &pb::Image, builder_version: &str) -> String {
    let mut h = Sha256::new();
    // Length prefixes keep ["ab","c"] and ["a","bc"] apart.
    let mut field = |s: &str| {
        h.update((s.len() as u64).to_le_bytes());
        h.update(s.as_bytes());
    };
    field("dockerfile_commands");
    for cmd in &image.dockerfile_commands {
        field(cmd);
    }
    field("base_images");
    for base in &image.base_images {
        field(&base.docker_tag);
        field(&base.image_id);
    }
    field("builder_version");
    field(builder_version);
    let digest = h.finalize();
    let hex: String = digest.iter().take(12).map(|b| format!("{b:02x}")).collect();
    format!("im-{hex}")
}

pub struct ImageBuild {
    notify: Notify,
    state: Mutex<BuildState>,
}

struct BuildState {
    /// Log entry `i` has entry id `i + 1`.
    logs: Vec<pb::TaskLogs>,
    result: Option<pb::GenericResult>,
}

fn log_line(data: String, fd: pb::FileDescriptor) -> pb::TaskLogs {
    pb::TaskLogs { data, file_descriptor: fd as i32 }
}

impl ImageBuild {
    /// An image that is already built.
    pub fn built() -> Arc<ImageBuild> {
        Arc::new(ImageBuild {
            notify: Notify::new(),
            state: Mutex::new(BuildState { logs: Vec::new(), result: Some(success()) }),
        })
    }

    /// Starts a simulated build taking about `build_ms`: one "Step i/n" log line per command,
    /// then the failure message (if `fail`) and the result. The first line exists immediately,
    /// so a join stream opened right away always has something to send.
    pub fn start(commands: Vec<String>, build_ms: u64, fail: Option<String>) -> Arc<ImageBuild> {
        let n = commands.len().max(1);
        let mut lines: Vec<pb::TaskLogs> = commands
            .iter()
            .enumerate()
            .map(|(i, cmd)| log_line(format!("Step {}/{n} : {cmd}\n", i + 1), pb::FileDescriptor::Stdout))
            .collect();
        if lines.is_empty() {
            lines.push(log_line("Building image\n".into(), pb::FileDescriptor::Stdout));
        }
        if let Some(msg) = &fail {
            lines.push(log_line(format!("{msg}\n"), pb::FileDescriptor::Stderr));
        }
        let first = lines.remove(0);
        let build = Arc::new(ImageBuild {
            notify: Notify::new(),
            state: Mutex::new(BuildState { logs: vec![first], result: None }),
        });
        let step = Duration::from_millis(build_ms / (lines.len() as u64 + 1));
        let b = build.clone();
        tokio::spawn(async move {
            for line in lines {
                tokio::time::sleep(step).await;
                lock(&b.state).logs.push(line);
                b.notify.notify_waiters();
            }
            tokio::time::sleep(step).await;
            let result = match fail {
                Some(exception) => {
                    pb::GenericResult { status: GenericStatus::Failure as i32, exception, ..Default::default() }
                }
                None => success(),
            };
            lock(&b.state).result = Some(result);
            b.notify.notify_waiters();
        });
        build
    }

    pub fn result(&self) -> Option<pb::GenericResult> {
        lock(&self.state).result.clone()
    }

    /// Whether a join stream resuming after `last_entry_id` would send a log entry now.
    pub fn has_logs_after(&self, last_entry_id: &str) -> bool {
        lock(&self.state).logs.len() > entry_index(last_entry_id)
    }

    /// Serves one `ImageJoinStreaming` call: log entries after `last_entry_id`, then the result
    /// with `eof`; the stream ends without a result after `timeout` (the client reopens), or
    /// after the first entry when `cut` (fault `image_join_cut_once`).
    pub fn join_stream(
        self: Arc<Self>,
        last_entry_id: &str,
        timeout: Duration,
        cut: bool,
    ) -> ReceiverStream<Result<pb::ImageJoinStreamingResponse, Status>> {
        let (tx, rx) = mpsc::channel(16);
        let mut sent = entry_index(last_entry_id);
        tokio::spawn(async move {
            let deadline = Instant::now() + timeout;
            loop {
                let notified = self.notify.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                let (fresh, result) = {
                    let st = lock(&self.state);
                    (st.logs.iter().skip(sent).cloned().collect::<Vec<_>>(), st.result.clone())
                };
                for log in fresh {
                    sent += 1;
                    let msg = pb::ImageJoinStreamingResponse {
                        task_logs: vec![log],
                        entry_id: sent.to_string(),
                        ..Default::default()
                    };
                    if tx.send(Ok(msg)).await.is_err() || cut {
                        return;
                    }
                }
                if let Some(result) = result {
                    let msg = pb::ImageJoinStreamingResponse { result: Some(result), eof: true, ..Default::default() };
                    let _ = tx.send(Ok(msg)).await;
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

fn success() -> pb::GenericResult {
    pb::GenericResult { status: GenericStatus::Success as i32, ..Default::default() }
}

/// Number of entries a client that saw `last_entry_id` already has ("" = none).
fn entry_index(last_entry_id: &str) -> usize {
    last_entry_id.parse().unwrap_or(0)
}
