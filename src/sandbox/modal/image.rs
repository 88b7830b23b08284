//! The sandbox image: `node:22-slim` plus the agent SDKs at the versions this package pins,
//! built as the official SDK builds a registry image with Dockerfile commands (one layer for
//! the base, one for the commands on top of it), so the recipe hashes the same way on Modal
//! and later sessions hit Modal's image cache.

use std::collections::VecDeque;
use std::time::Duration;

use base64::Engine;
use futures::StreamExt;

use super::client::{Connection, MResult, ModalError};
use super::proto::generic_result::GenericStatus;
use super::proto::{BaseImage, GenericResult, Image, ImageGetOrCreateRequest, ImageJoinStreamingRequest};

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

/// Build (or find cached) every layer in order; returns the last layer's image id.
pub async fn build(conn: &Connection, app_id: &str) -> MResult<String> {
    let version = builder_version();
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
            None => join(conn, &resp.image_id).await?, // checks the result with the build log
        }
        previous = Some(resp.image_id);
    }
    Ok(previous.expect("two layers"))
}

/// Follow a build until it has a result, reopening the stream where it stopped.
async fn join(conn: &Connection, image_id: &str) -> MResult<()> {
    let mut last_entry_id = String::new();
    let mut tail: VecDeque<String> = VecDeque::new();
    loop {
        let req = ImageJoinStreamingRequest {
            image_id: image_id.into(),
            timeout: 55.0,
            last_entry_id: last_entry_id.clone(),
        };
        let mut stream = conn
            .stream("ImageJoinStreaming", req, Duration::from_secs(70), |mut c, r| async move {
                c.image_join_streaming(r).await
            })
            .await?;
        while let Some(item) = stream.next().await {
            let Ok(msg) = item else { break }; // reopen from the last entry
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
                return check(image_id, &r, &tail);
            }
        }
    }
}

fn check(image_id: &str, r: &GenericResult, tail: &VecDeque<String>) -> MResult<()> {
    let logs = if tail.is_empty() {
        String::new()
    } else {
        format!("\nlast build log lines:\n{}", tail.iter().cloned().collect::<Vec<_>>().join("\n"))
    };
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

    #[test]
    fn layers_are_base_then_commands() {
        let l = layers();
        assert_eq!(l[0], vec!["FROM node:22-slim".to_string()]);
        assert_eq!(l[1][0], "FROM base");
        assert!(l[1].iter().any(|c| c.contains("base64 -d > /app/package.json")));
    }
}
