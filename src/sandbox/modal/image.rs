//! The sandbox image: `node:22-slim` plus the agent SDKs at the versions this package pins,
//! built as the official SDK builds a registry image with Dockerfile commands (one layer for
//! the base, one for the commands on top of it), so the recipe hashes the same way on Modal
//! and later sessions hit Modal's image cache.

use std::collections::VecDeque;
use std::future::Future;
use std::time::Duration;

use base64::Engine;
use futures::stream::BoxStream;
use futures::StreamExt;
use tokio::time::Instant;

use super::backoff::{Backoff, ReopenPolicy};
use super::client::{is_retryable, Connection, MResult, ModalError};
use super::proto::generic_result::GenericStatus;
use super::proto::{
    BaseImage, GenericResult, Image, ImageGetOrCreateRequest, ImageJoinStreamingRequest, ImageJoinStreamingResponse,
};

pub const BASE_IMAGE: &str = "node:22-slim";
const DEFAULT_BUILDER_VERSION: &str = "2024.10";
/// The same versions the package uses locally (checked by a test against package.json).
pub const CLAUDE_AGENT_SDK_VERSION: &str = "0.3.332";
pub const OPENCODE_VERSION: &str = "1.0.152";
/// Build log lines kept for an error message.
const LOG_TAIL: usize = 20;

/// `/app/package.json` inside the image: the runner scripts' dependencies.
/// Written out by hand: the bytes (key order included) are part of the image's identity.
pub fn app_package_json() -> String {
    format!(
        r#"{{"name":"agent-runtime-sandbox","private":true,"type":"module","dependencies":{{"@anthropic-ai/claude-agent-sdk":"{CLAUDE_AGENT_SDK_VERSION}","@opencode-ai/sdk":"{OPENCODE_VERSION}","opencode-ai":"{OPENCODE_VERSION}"}}}}"#
    )
}

/// The Dockerfile commands of the second layer. The runner scripts themselves are uploaded when
/// a sandbox starts, so changing them does not invalidate the image.
pub fn dockerfile_commands() -> Vec<String> {
    let pkg = base64::engine::general_purpose::STANDARD.encode(app_package_json());
    vec![
        // OpenCode searches with the system's ripgrep (it would download one otherwise).
        "RUN apt-get update && apt-get install -y --no-install-recommends ripgrep && rm -rf /var/lib/apt/lists/*"
            .into(),
        "RUN mkdir -p /app /workspace /mcps".into(),
        format!("RUN echo '{pkg}' | base64 -d > /app/package.json"),
        "WORKDIR /app".into(),
        "RUN npm install --omit=dev --no-audit --no-fund".into(),
        "WORKDIR /workspace".into(),
    ]
}

pub fn builder_version() -> String {
    std::env::var("MODAL_IMAGE_BUILDER_VERSION")
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| DEFAULT_BUILDER_VERSION.into())
}

/// The two layers, base first.
pub fn layers() -> Vec<Vec<String>> {
    let mut top = vec!["FROM base".to_string()];
    top.extend(dockerfile_commands());
    vec![vec![format!("FROM {BASE_IMAGE}")], top]
}

/// How long an image build may take, and how its log stream is reopened.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BuildLimits {
    /// Whole build, all layers (Modal's own build timeout is longer; a build that has not
    /// finished by then is reported as failed, and the next sandbox creation starts over).
    pub timeout: Duration,
    pub reopen: ReopenPolicy,
}

impl Default for BuildLimits {
    fn default() -> Self {
        Self { timeout: Duration::from_secs(30 * 60), reopen: ReopenPolicy::default() }
    }
}

/// Build (or find cached) every layer in order; returns the last layer's image id.
pub async fn build(conn: &Connection, app_id: &str, limits: &BuildLimits) -> MResult<String> {
    let version = builder_version();
    let deadline = Instant::now() + limits.timeout;
    let mut previous: Option<String> = None;
    for commands in layers() {
        let image = Image {
            base_images: previous
                .iter()
                .map(|id| BaseImage { image_id: id.clone(), docker_tag: "base".into() })
                .collect(),
            dockerfile_commands: commands,
            secret_ids: vec![],
        };
        let req = ImageGetOrCreateRequest {
            image: Some(image),
            app_id: app_id.into(),
            force_build: false,
            builder_version: version.clone(),
        };
        let resp =
            conn.unary("ImageGetOrCreate", req, |mut c, r| async move { c.image_get_or_create(r).await }).await?;
        match resp.result.filter(|r| r.status != GenericStatus::Unspecified as i32) {
            Some(r) => check(&resp.image_id, &r, &VecDeque::new())?,
            None => {
                let open = |last_entry_id: String| {
                    let req =
                        ImageJoinStreamingRequest { image_id: resp.image_id.clone(), timeout: 55.0, last_entry_id };
                    async move {
                        let s = conn
                            .stream("ImageJoinStreaming", req, Duration::from_secs(70), |mut c, r| async move {
                                c.image_join_streaming(r).await
                            })
                            .await?;
                        Ok(s.boxed())
                    }
                };
                join(open, &resp.image_id, deadline, limits).await?; // checks the result
            }
        }
        previous = Some(resp.image_id);
    }
    Ok(previous.expect("two layers"))
}

type JoinStream = BoxStream<'static, Result<ImageJoinStreamingResponse, tonic::Status>>;

/// Follow a build until it has a result or `deadline` passes. `open(last_entry_id)` opens the
/// log stream where the previous one stopped.
async fn join<O, F>(open: O, image_id: &str, deadline: Instant, limits: &BuildLimits) -> MResult<()>
where
    O: FnMut(String) -> F,
    F: Future<Output = MResult<JoinStream>>,
{
    let mut tail: VecDeque<String> = VecDeque::new();
    match tokio::time::timeout_at(deadline, follow(open, image_id, limits.reopen, &mut tail)).await {
        Ok(r) => r,
        Err(_) => Err(ModalError {
            code: tonic::Code::DeadlineExceeded,
            message: format!(
                "Modal image build {image_id} did not finish within {:?}{}",
                limits.timeout,
                log_tail(&tail)
            ),
        }),
    }
}

async fn follow<O, F>(mut open: O, image_id: &str, policy: ReopenPolicy, tail: &mut VecDeque<String>) -> MResult<()>
where
    O: FnMut(String) -> F,
    F: Future<Output = MResult<JoinStream>>,
{
    let mut last_entry_id = String::new();
    let mut backoff = Backoff::new(policy);
    loop {
        let opened = Instant::now();
        let mut progressed = false;
        let mut problem = String::from("it ended without a result");
        match open(last_entry_id.clone()).await {
            Ok(mut stream) => {
                while let Some(item) = stream.next().await {
                    let msg = match item {
                        Ok(msg) => msg,
                        Err(s) if is_retryable(s.code()) => {
                            problem = format!("{:?}: {}", s.code(), s.message());
                            break; // reopen from the last entry
                        }
                        Err(s) => {
                            return Err(ModalError {
                                code: s.code(),
                                message: format!("Modal image build {image_id}: {:?}: {}", s.code(), s.message()),
                            })
                        }
                    };
                    progressed = true;
                    if !msg.entry_id.is_empty() {
                        last_entry_id = msg.entry_id.clone();
                    }
                    for log in &msg.task_logs {
                        for line in log.data.lines().filter(|l| !l.trim().is_empty()) {
                            tracing::debug!(image_id, line, "image build");
                            if tail.len() == LOG_TAIL {
                                tail.pop_front();
                            }
                            tail.push_back(line.to_string());
                        }
                    }
                    if let Some(r) = msg.result.filter(|r| r.status != GenericStatus::Unspecified as i32) {
                        return check(image_id, &r, tail);
                    }
                }
            }
            Err(e) if is_retryable(e.code) => problem = e.message,
            Err(e) => return Err(e),
        }
        match backoff.after(progressed, opened.elapsed()) {
            None => {}
            Some(Ok(delay)) => {
                tracing::debug!(image_id, ?delay, problem, "Modal image build stream reopens after a pause");
                tokio::time::sleep(delay).await;
            }
            Some(Err(n)) => {
                return Err(ModalError {
                    code: tonic::Code::Unavailable,
                    message: format!(
                        "Modal image build {image_id}: its log stream failed {n} times in a row without progress \
                         (last: {problem}); giving up{}",
                        log_tail(tail)
                    ),
                })
            }
        }
    }
}

fn log_tail(tail: &VecDeque<String>) -> String {
    if tail.is_empty() {
        String::new()
    } else {
        format!("\nlast build log lines:\n{}", tail.iter().cloned().collect::<Vec<_>>().join("\n"))
    }
}

fn check(image_id: &str, r: &GenericResult, tail: &VecDeque<String>) -> MResult<()> {
    let logs = log_tail(tail);
    let fail =
        |what: String| Err(ModalError { code: tonic::Code::FailedPrecondition, message: format!("{what}{logs}") });
    match GenericStatus::try_from(r.status) {
        Ok(GenericStatus::Success) => Ok(()),
        Ok(GenericStatus::Failure) => fail(format!("Modal image build failed for {image_id}: {}", r.exception)),
        Ok(GenericStatus::Terminated) => fail(format!("Modal image build {image_id} was terminated")),
        Ok(GenericStatus::Timeout) => fail(format!("Modal image build {image_id} timed out")),
        _ => fail(format!("Modal image build {image_id} ended with status {}: {}", r.status, r.exception)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sdk_pin_matches_package_json() {
        let pkg: serde_json::Value =
            serde_json::from_str(include_str!("../../../package.json")).expect("package.json parses");
        let dep = &pkg["dependencies"]["@anthropic-ai/claude-agent-sdk"];
        assert_eq!(dep.as_str(), Some(CLAUDE_AGENT_SDK_VERSION), "image and local provider must run the same SDK");
        let app: serde_json::Value = serde_json::from_str(&app_package_json()).expect("valid JSON");
        assert_eq!(app["dependencies"]["@anthropic-ai/claude-agent-sdk"], *dep);
        for name in ["opencode-ai", "@opencode-ai/sdk"] {
            assert_eq!(pkg["devDependencies"][name].as_str(), Some(OPENCODE_VERSION), "{name}");
            assert_eq!(app["dependencies"][name].as_str(), Some(OPENCODE_VERSION), "{name}");
        }
    }

    fn limits(timeout_secs: u64) -> BuildLimits {
        BuildLimits {
            timeout: Duration::from_secs(timeout_secs),
            reopen: ReopenPolicy {
                first_delay: Duration::from_millis(100),
                max_delay: Duration::from_secs(1),
                max_failures: 6,
                healthy_after: Duration::from_secs(10),
            },
        }
    }

    /// A log stream with these messages, arriving `every` apart.
    fn stream_of(msgs: Vec<ImageJoinStreamingResponse>, every: Duration) -> JoinStream {
        futures::stream::iter(msgs)
            .then(move |m| async move {
                tokio::time::sleep(every).await;
                Ok(m)
            })
            .boxed()
    }

    #[tokio::test(start_paused = true)]
    async fn a_stream_that_keeps_closing_is_reopened_a_bounded_number_of_times_with_growing_pauses() {
        let opens = std::sync::Mutex::new(Vec::new());
        let started = Instant::now();
        let open = |_last: String| {
            opens.lock().unwrap().push(started.elapsed());
            async { Ok(stream_of(vec![], Duration::ZERO)) }
        };
        let l = limits(3600);
        let e = join(open, "im-1", Instant::now() + l.timeout, &l).await.unwrap_err();
        assert!(e.message.contains("failed 7 times in a row without progress"), "{e}");
        let at = opens.lock().unwrap().clone();
        assert_eq!(at.len(), 7, "first open + 6 reopens: {at:?}");
        let gaps: Vec<Duration> = at.windows(2).map(|w| w[1] - w[0]).collect();
        for (gap, step) in gaps.iter().zip([100u64, 200, 400, 800, 1000, 1000]) {
            let step = Duration::from_millis(step);
            assert!(*gap >= step / 2 && *gap <= step, "gap {gap:?} for step {step:?}: {gaps:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_build_that_never_finishes_ends_at_the_deadline_with_its_log() {
        let log = |i: u32| ImageJoinStreamingResponse {
            task_logs: vec![super::super::proto::TaskLogs { data: format!("step {i}\n"), ..Default::default() }],
            entry_id: i.to_string(),
            ..Default::default()
        };
        let mut n = 0;
        let open = |_last: String| {
            n += 1;
            let msgs = vec![log(n)];
            // Progress every time (a log line), so only the deadline can end it.
            async move { Ok(stream_of(msgs, Duration::from_secs(1))) }
        };
        let l = limits(120);
        let started = Instant::now();
        let e = join(open, "im-2", Instant::now() + l.timeout, &l).await.unwrap_err();
        assert_eq!(e.code, tonic::Code::DeadlineExceeded);
        assert!(e.message.contains("did not finish within 120s") && e.message.contains("step 1"), "{e}");
        assert_eq!(started.elapsed(), Duration::from_secs(120));
    }

    #[tokio::test(start_paused = true)]
    async fn reopens_resume_after_the_last_entry_and_return_the_result() {
        let mut asked = Vec::new();
        let open = |last: String| {
            asked.push(last.clone());
            let msgs = if last.is_empty() {
                vec![ImageJoinStreamingResponse { entry_id: "7".into(), ..Default::default() }]
            } else {
                vec![ImageJoinStreamingResponse {
                    result: Some(GenericResult { status: GenericStatus::Success as i32, ..Default::default() }),
                    eof: true,
                    ..Default::default()
                }]
            };
            async move { Ok(stream_of(msgs, Duration::ZERO)) }
        };
        let l = limits(60);
        join(open, "im-3", Instant::now() + l.timeout, &l).await.expect("built");
        assert_eq!(asked, vec!["".to_string(), "7".to_string()]);
    }

    #[test]
    fn layers_are_base_then_commands() {
        let l = layers();
        assert_eq!(l[0], vec!["FROM node:22-slim".to_string()]);
        assert_eq!(l[1][0], "FROM base");
        assert!(l[1].iter().any(|c| c.contains("base64 -d > /app/package.json")));
    }
}
