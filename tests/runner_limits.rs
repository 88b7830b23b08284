//! What a runner writes cannot exhaust the runtime: an over-long output line fails the turn.

use std::sync::{Arc, Mutex};

use agent_runtime::persistence::memory::MemoryAdapter;
use agent_runtime::session::CreateSessionArgs;
use agent_runtime::{AgentRuntime, RuntimeOptions};
use serde_json::{json, Value};

type Events = Arc<Mutex<Vec<(String, Value)>>>;

/// A runtime whose "Claude runner" is `script` (run by this host's Node in a local sandbox).
fn runtime_with_runner(script: &str) -> (Arc<AgentRuntime>, Events, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("arn-runner-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(dir.join("runner")).unwrap();
    std::fs::write(dir.join("runner/claude-runner.mjs"), script).unwrap();
    let options = RuntimeOptions::from_json(json!({
        "sandbox": { "provider": "local", "root": dir.join("sandboxes") },
        "__host": { "node": "node", "runnerDir": dir.join("runner") },
    }))
    .unwrap();
    let rt = AgentRuntime::new(options, Arc::new(MemoryAdapter::with_profile("p")));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    rt.events.subscribe(move |e| s.lock().unwrap().push((e.name.to_string(), e.payload.clone())));
    (rt, seen, dir)
}

#[tokio::test]
async fn an_over_long_runner_line_fails_the_turn() {
    // 17 MiB without a newline, then a line that must never be read.
    let (rt, events, dir) =
        runtime_with_runner("process.stdout.write('x'.repeat(17 * 1024 * 1024)); process.stdout.write('\\n{}\\n');");
    let args = CreateSessionArgs {
        agent_profile_ref: "p".into(),
        architecture: Some(agent_runtime::agent::Architecture::ClaudeAgentSdk),
        ..Default::default()
    };
    let s = rt.sessions.create_session(args).await.unwrap();
    let turn = tokio::time::timeout(
        std::time::Duration::from_secs(60),
        s.send_message("hi", agent_runtime::session::MessageMode::Queue).unwrap().run,
    )
    .await;
    let err = turn.expect("the turn ended").expect_err("the turn failed");
    assert_eq!(err.code(), "AGENT_RUN_FAILED");
    assert!(err.to_string().contains("runner output line exceeds 16 MiB"), "{err}");
    let errors: Vec<Value> =
        events.lock().unwrap().iter().filter(|(n, _)| n == "session:error").map(|(_, p)| p.clone()).collect();
    assert!(errors.iter().any(|p| p.to_string().contains("runner output line exceeds 16 MiB")), "{errors:?}");
    rt.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}
