//! Session lifecycle against real local sandboxes, with a shell script as the agent: what is
//! kept when storage fails, unload and queued turns, runaway turns, idle unload and limits.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agent_runtime::agent::architecture::{AgentArchitecture, SessionSetup, StreamConverter};
use agent_runtime::agent::stream::AgentEvent;
use agent_runtime::agent::Architecture;
use agent_runtime::events::EventBus;
use agent_runtime::persistence::memory::MemoryAdapter;
use agent_runtime::persistence::retry::RetryPolicy;
use agent_runtime::persistence::{PersistenceAdapter, WorkspaceFile};
use agent_runtime::sandbox::local::LocalProvider;
use agent_runtime::sandbox::{ExecOptions, Process, SResult, Sandbox};
use agent_runtime::session::{AgentSession, CreateSessionArgs, MessageMode, SessionContext, SessionManager};
use agent_runtime::RuntimeOptions;
use async_trait::async_trait;

/// An agent whose turn is `sh -c <script>` with the prompt in `$PROMPT`; its transcript is the
/// file `transcript` in the sandbox's home, appended to by the script.
struct ScriptAgent;

const SCRIPT_RUNNER: &str = r#"while IFS= read -r line; do
  case "$line" in
  *'"type":"turn"'*)
    id=$(printf '%s\n' "$line" | sed 's/.*"turnId":"\([^"]*\)".*/\1/')
    prompt=$(printf '%s\n' "$line" | sed 's/.*"prompt":"\(.*\)"}$/\1/; s/\\"/"/g')
    echo "$T: $prompt" >> "$T"
    eval "$prompt" </dev/null
    printf '{"type":"runner","event":"turn_end","turnId":"%s","status":"completed"}\n' "$id" ;;
  esac
done"#;

struct NoEvents;
impl StreamConverter for NoEvents {
    fn push_line(&mut self, _line: &str) -> Vec<AgentEvent> {
        vec![]
    }
}

#[async_trait]
impl AgentArchitecture for ScriptAgent {
    /// The profile's configuration: a file under `.claude/`, which the agent owns.
    async fn initialize(&self, sb: &dyn Sandbox, _setup: &SessionSetup<'_>) -> SResult<()> {
        sb.write_file(&sb.paths().workspace.join(".claude/settings.json"), b"profile").await
    }
    fn ignored_paths(&self) -> &'static [&'static str] {
        &[".claude/"]
    }
    /// A long-lived runner in sh: each turn's prompt is a shell command, run to its end (so an
    /// interrupt is ignored: the kill path); `exit N` ends the runner mid-turn.
    async fn start_runner(&self, sb: &dyn Sandbox, _setup: &SessionSetup<'_>) -> SResult<Process> {
        let home = sb.paths().home.display().to_string();
        let mut opts = ExecOptions::default();
        opts.env.insert("T".into(), format!("{home}/transcript"));
        sb.exec(&["sh".into(), "-c".into(), SCRIPT_RUNNER.into()], opts).await
    }
    fn runner_start(&self, _sb: &dyn Sandbox, _setup: &SessionSetup<'_>) -> serde_json::Value {
        serde_json::json!({ "type": "start" })
    }
    fn stream(&self, _session_id: &str) -> Box<dyn StreamConverter> {
        Box::new(NoEvents)
    }
    async fn read_transcript(&self, sb: &dyn Sandbox, _session_id: &str) -> SResult<Option<String>> {
        let t = sb.paths().home.join("transcript");
        Ok(sb.read_file(&t).await?.map(|b| String::from_utf8_lossy(&b).into_owned()))
    }
}

struct Harness {
    adapter: Arc<MemoryAdapter>,
    manager: Arc<SessionManager>,
    events: Arc<Mutex<Vec<(String, serde_json::Value)>>>,
    root: PathBuf,
}

impl Drop for Harness {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

fn harness(options: serde_json::Value) -> Harness {
    let adapter = Arc::new(MemoryAdapter::with_profile("p"));
    let root = std::env::temp_dir().join(format!("arn-lifecycle-{}", uuid::Uuid::new_v4().simple()));
    harness_on(adapter, root, options)
}

/// A runtime over existing storage and sandbox root: the same backend after a restart.
fn harness_on(adapter: Arc<MemoryAdapter>, root: PathBuf, options: serde_json::Value) -> Harness {
    let options = RuntimeOptions::from_json(options).unwrap();
    let bus = EventBus::new();
    let events = Arc::new(Mutex::new(Vec::new()));
    let seen = events.clone();
    bus.subscribe(move |e| seen.lock().unwrap().push((e.name.to_string(), e.payload.clone())));
    let agent: Arc<dyn AgentArchitecture> = Arc::new(ScriptAgent);
    let manager = SessionManager::new(SessionContext {
        persistence: adapter.clone(),
        events: bus,
        retry: RetryPolicy { attempts: 2, first_delay: Duration::from_millis(5) },
        sandboxes: Ok(Arc::new(LocalProvider::plain(root.clone()).unwrap())),
        claude: agent.clone(),
        opencode: agent,
        options,
        manager: Default::default(),
        active_sandboxes: Default::default(),
        shutting_down: Default::default(),
        model_proxy: Default::default(),
        metrics: Default::default(),
        cluster: None,
    });
    Harness { adapter, manager, events, root }
}

impl Harness {
    async fn session(&self) -> Arc<AgentSession> {
        let args = CreateSessionArgs {
            agent_profile_ref: "p".into(),
            architecture: Some(Architecture::ClaudeAgentSdk),
            default_workspace_files: Some(vec![WorkspaceFile { path: "keep.txt".into(), content: Some("k".into()) }]),
            ..Default::default()
        };
        self.manager.create_session(args).await.unwrap()
    }

    fn sandbox_dirs(&self) -> usize {
        std::fs::read_dir(&self.root).map(|d| d.count()).unwrap_or(0)
    }

    async fn stored_transcript(&self, id: &str) -> Option<String> {
        self.adapter.load_session(id).await.unwrap().unwrap().raw_transcript
    }

    async fn wait_for<F: Fn() -> bool>(&self, what: &str, f: F) {
        let polled = async {
            while !f() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(20), polled).await.unwrap_or_else(|_| panic!("timed out: {what}"));
    }
}

#[tokio::test]
async fn unload_keeps_the_session_and_its_sandbox_until_its_state_is_stored() {
    let h = harness(serde_json::json!({ "idleTimeoutMs": 100 }));
    let s = h.session().await;
    s.send_message("true", MessageMode::Queue).unwrap().run.await.unwrap();
    assert_eq!(h.sandbox_dirs(), 1);
    // Storage goes down; the agent's last turn exists only in the sandbox and in memory.
    h.adapter.fail_writes.store(u32::MAX, Ordering::SeqCst);
    let e = h.manager.unload_session(&s.session_id).await.unwrap_err();
    assert_eq!(e.code(), "PERSISTENCE_FAILED");
    assert!(h.manager.is_loaded(&s.session_id), "kept loaded");
    assert_eq!(h.sandbox_dirs(), 1, "sandbox not terminated");
    assert!(!h.manager.unstored_sessions().is_empty(), "reported (health is degraded)");
    assert!(h
        .events
        .lock()
        .unwrap()
        .iter()
        .any(|(n, p)| n == "session:error" && p["error"]["code"] == "PERSISTENCE_FAILED"));
    // Storage comes back: the sweep retries the unload, which now stores and stops it.
    h.adapter.fail_writes.store(0, Ordering::SeqCst);
    h.wait_for("the retried unload", || !h.manager.is_loaded(&s.session_id)).await;
    assert_eq!(h.sandbox_dirs(), 0);
    assert!(h.stored_transcript(&s.session_id).await.unwrap().contains(": true"));
    assert!(h.manager.unstored_sessions().is_empty());
}

#[tokio::test]
async fn shutdown_gives_up_after_its_bound_and_names_the_unstored_sessions() {
    let h = harness(serde_json::json!({ "shutdownTimeoutMs": 300 }));
    let s = h.session().await;
    s.send_message("true", MessageMode::Queue).unwrap().run.await.unwrap();
    h.adapter.fail_writes.store(u32::MAX, Ordering::SeqCst);
    let unstored = h.manager.shutdown(Duration::from_millis(300)).await;
    assert_eq!(unstored, std::slice::from_ref(&s.session_id));
    assert_eq!(h.sandbox_dirs(), 0, "stopped anyway once the bound passed");
}

#[tokio::test]
async fn a_turn_queued_behind_an_unload_creates_no_sandbox() {
    let h = harness(serde_json::json!({}));
    let s = h.session().await;
    // A running turn, and one waiting behind it.
    let first = tokio::spawn(s.send_message("sleep 30", MessageMode::Queue).unwrap().run);
    let second = tokio::spawn(s.send_message("true", MessageMode::Queue).unwrap().run);
    h.wait_for("the first turn's sandbox", || s.has_sandbox()).await;
    h.manager.unload_session(&s.session_id).await.unwrap();
    assert!(first.await.unwrap().is_err(), "the running turn ended with its sandbox");
    let e = second.await.unwrap().unwrap_err();
    assert_eq!(e.code(), "SESSION_UNLOADING");
    assert_eq!(h.sandbox_dirs(), 0, "no sandbox left behind");
    // The next message goes to a fresh instance.
    let again = h.manager.load_session(&s.session_id).await.unwrap();
    assert!(!Arc::ptr_eq(&again, &s));
}

#[tokio::test]
async fn a_runaway_turn_is_stopped_after_turn_timeout_and_the_session_goes_on() {
    let h = harness(serde_json::json!({ "turnTimeoutMs": 500 }));
    let s = h.session().await;
    let turn =
        tokio::time::timeout(Duration::from_secs(20), s.send_message("sleep 600", MessageMode::Queue).unwrap().run);
    let e = turn.await.expect("the turn was stopped").unwrap_err();
    assert!(e.to_string().contains("turnTimeoutMs"), "{e}");
    assert!(!s.has_sandbox(), "the runaway's sandbox was stopped");
    assert!(h.stored_transcript(&s.session_id).await.unwrap().contains("sleep 600"), "what it wrote was kept");
    s.send_message("true", MessageMode::Queue).unwrap().run.await.unwrap();
}

#[tokio::test]
async fn a_turn_ends_when_the_runner_exits_even_if_a_grandchild_keeps_stdout_open() {
    let h = harness(serde_json::json!({ "turnTimeoutMs": 60000 }));
    let s = h.session().await;
    // Before: the turn waited for end of file, which the backgrounded sleep holds off.
    let turn = tokio::time::timeout(
        Duration::from_secs(20),
        s.send_message("sleep 600 & echo started", MessageMode::Queue).unwrap().run,
    );
    turn.await.expect("the turn ended with its runner").unwrap();
}

#[tokio::test]
async fn sessions_loaded_without_a_sandbox_are_unloaded_when_idle() {
    let h = harness(serde_json::json!({ "idleTimeoutMs": 50 }));
    let s = h.session().await;
    let id = s.session_id.clone();
    drop(s);
    h.wait_for("idle unload", || !h.manager.is_loaded(&id)).await;
    h.manager.load_session(&id).await.unwrap();
    h.wait_for("idle unload after a load", || !h.manager.is_loaded(&id)).await;
}

#[tokio::test]
async fn limits_refuse_with_clear_errors() {
    let h = harness(serde_json::json!({ "maxLoadedSessions": 2, "maxActiveSandboxes": 1, "maxQueuedMessages": 1 }));
    let a = h.session().await;
    let b = h.session().await;
    // A third session makes room by unloading the longest-idle one.
    let c = h.session().await;
    assert_eq!(h.manager.loaded_count(), 2);
    let left: Vec<_> = [a, b].into_iter().filter(|s| h.manager.is_loaded(&s.session_id)).collect();
    assert_eq!(left.len(), 1, "one idle session was unloaded");
    let b = left[0].clone();
    // One sandbox at a time: b takes it, c is refused.
    let running = tokio::spawn(b.send_message("sleep 30", MessageMode::Queue).unwrap().run);
    h.wait_for("b's sandbox", || b.has_sandbox()).await;
    let e = c.send_message("true", MessageMode::Queue).err().unwrap();
    assert_eq!(e.code(), "CAPACITY_EXCEEDED");
    assert!(e.to_string().contains("maxActiveSandboxes"), "{e}");
    // One message may wait behind the running one; the next is refused.
    let queued = tokio::spawn(b.send_message("true", MessageMode::Queue).unwrap().run);
    let e = b.send_message("true", MessageMode::Queue).err().unwrap();
    assert_eq!(e.code(), "QUEUE_FULL");
    h.manager.unload_session(&b.session_id).await.unwrap();
    let _ = running.await;
    let _ = queued.await;
}

#[tokio::test]
async fn a_file_deleted_while_the_watcher_is_not_looking_is_deleted_in_storage() {
    let h = harness(serde_json::json!({}));
    let s = h.session().await;
    s.send_message("rm keep.txt; echo new > new.txt", MessageMode::Queue).unwrap().run.await.unwrap();
    h.manager.unload_session(&s.session_id).await.unwrap();
    let stored = h.adapter.load_session(&s.session_id).await.unwrap().unwrap();
    let paths: Vec<_> = stored.workspace_files.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(paths, ["new.txt"]);
}

#[tokio::test]
async fn workspace_files_cannot_replace_the_profiles_files() {
    let h = harness(serde_json::json!({}));
    let args = CreateSessionArgs {
        agent_profile_ref: "p".into(),
        architecture: Some(Architecture::ClaudeAgentSdk),
        default_workspace_files: Some(vec![WorkspaceFile {
            path: ".claude/settings.json".into(),
            content: Some("planted".into()),
        }]),
        ..Default::default()
    };
    let s = h.manager.create_session(args).await.unwrap();
    s.send_message("cat .claude/settings.json >> \"$T\"", MessageMode::Queue).unwrap().run.await.unwrap();
    let transcript = h.stored_transcript(&s.session_id).await.unwrap();
    assert!(transcript.ends_with("profile"), "{transcript}");
}

#[tokio::test]
async fn an_accepted_message_is_stored_before_it_is_confirmed_and_hidden_from_views() {
    let h = harness(serde_json::json!({}));
    let s = h.session().await;
    let turn = s.send_message("echo hello", MessageMode::Queue).unwrap();
    s.confirm_stored(&turn.message_id).await.unwrap();
    let record = h.adapter.load_session(&s.session_id).await.unwrap().unwrap().record;
    let ledger = &record.metadata.as_ref().unwrap()["_agentRuntime"];
    assert_eq!(ledger["pending"][0]["content"], "echo hello");
    let state: serde_json::Value = serde_json::from_str(&s.state_json()).unwrap();
    assert!(state.get("metadata").is_none(), "clients do not see the runtime's bookkeeping: {state}");
    let listed = h.manager.all_sessions().await.unwrap();
    assert!(listed[0].get("metadata").is_none(), "{listed:?}");
    turn.run.await.unwrap();
    // Answered: the ledger no longer holds it.
    h.manager.unload_session(&s.session_id).await.unwrap();
    let record = h.adapter.load_session(&s.session_id).await.unwrap().unwrap().record;
    let ledger = record.metadata.unwrap_or_default().get("_agentRuntime").cloned().unwrap_or_default();
    assert_eq!(ledger.get("pending"), Some(&serde_json::json!([])), "{ledger}");
    assert_eq!(ledger.get("sandboxes"), Some(&serde_json::json!([])), "{ledger}");
    assert!(ledger["usage"]["sandboxSeconds"].as_f64().unwrap() > 0.0, "the sandbox's time is kept: {ledger}");
}

#[tokio::test]
async fn a_message_that_cannot_be_stored_is_refused_and_never_runs() {
    let h = harness(serde_json::json!({}));
    let s = h.session().await;
    h.adapter.fail_writes.store(2, Ordering::SeqCst); // one round of the retry policy
    let turn = s.send_message("echo should-not-run", MessageMode::Queue).unwrap();
    let e = s.confirm_stored(&turn.message_id).await.unwrap_err();
    assert_eq!(e.code(), "PERSISTENCE_FAILED");
    turn.run.await.unwrap();
    assert!(!s.has_sandbox(), "withdrawn: no turn ran");
    s.send_message("true", MessageMode::Queue).unwrap().run.await.unwrap();
    assert!(!h.stored_transcript(&s.session_id).await.unwrap_or_default().contains("should-not-run"));
}

#[tokio::test]
async fn after_a_crash_accepted_messages_run_interrupted_ones_are_reported_and_sandboxes_are_reaped() {
    let h = harness(serde_json::json!({}));
    let (adapter, root) = (h.adapter.clone(), h.root.clone());
    let s = h.session().await;
    let id = s.session_id.clone();
    // A first message runs and leaves its sandbox; a second is cut short (its turn began);
    // a third was accepted and never started. Then the process dies.
    s.send_message("echo one", MessageMode::Queue).unwrap().run.await.unwrap();
    let second = tokio::spawn(s.send_message("sleep 30", MessageMode::Queue).unwrap().run);
    let third = s.send_message("echo three", MessageMode::Queue).unwrap();
    s.confirm_stored(&third.message_id).await.unwrap();
    h.wait_for("the second turn to start", || s.is_busy()).await;
    s.confirm_stored(&third.message_id).await.unwrap();
    second.abort();
    let old: Vec<_> = std::fs::read_dir(&h.root).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(old.len(), 1);
    std::mem::forget(third.run);
    std::mem::forget(s);
    std::mem::forget(h);

    let h = harness_on(adapter, root, serde_json::json!({}));
    let s = h.manager.load_session(&id).await.unwrap();
    h.wait_for("the third message to run", || {
        s.state_json().contains("\"sandboxId\"") && !s.is_busy() && s.is_stored() && h.sandbox_dirs() == 1
    })
    .await;
    h.wait_for("its transcript to be stored", || {
        futures::executor::block_on(h.stored_transcript(&id)).unwrap_or_default().contains("echo three")
    })
    .await;
    let events = h.events.lock().unwrap().clone();
    assert!(
        events.iter().any(|(n, p)| n == "session:error" && p["error"]["code"] == "MESSAGE_INTERRUPTED"),
        "{events:?}"
    );
    // The earlier run's sandbox is gone; only the new one is there.
    h.wait_for("the earlier sandbox to be reaped", || !old[0].exists()).await;
    assert_eq!(h.sandbox_dirs(), 1);
}

/// No process on this machine runs `sleep <secs>` (the runner's tools are gone).
fn sleeping(secs: &str) -> bool {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok())
        .any(|e| std::fs::read(e.path().join("cmdline")).is_ok_and(|c| c == format!("sleep\0{secs}\0").as_bytes()))
}

fn end_blocks(h: &Harness) -> Vec<serde_json::Value> {
    h.events
        .lock()
        .unwrap()
        .iter()
        .filter(|(n, p)| n == "session:block:complete" && p["block"]["metadata"]["stopReason"].is_string())
        .map(|(_, p)| p["block"].clone())
        .collect()
}

#[tokio::test]
async fn an_interrupt_the_agent_ignores_kills_its_runner_after_the_grace() {
    let h = harness(serde_json::json!({ "interruptGraceMs": 300 }));
    let s = h.session().await;
    assert!(!s.interrupt(false), "nothing running: nothing interrupted");
    let turn = tokio::spawn(s.send_message("sleep 611", MessageMode::Queue).unwrap().run);
    h.wait_for("the turn to run its tool", || sleeping("611")).await;
    let asked = std::time::Instant::now();
    assert!(s.interrupt(false));
    assert!(s.interrupt(false), "twice is harmless");
    tokio::time::timeout(Duration::from_millis(2300), turn).await.expect("ended within grace + 2 s").unwrap().unwrap();
    assert!(asked.elapsed() >= Duration::from_millis(300), "the agent had its grace");
    let ends = end_blocks(&h);
    assert_eq!(ends.len(), 1, "{ends:?}");
    assert_eq!(ends[0]["metadata"]["stopReason"], "interrupted");
    assert!(!h.events.lock().unwrap().iter().any(|(n, _)| n == "session:error"), "an interrupt is not an error");
    h.wait_for("no process of the turn left", || !sleeping("611")).await;
    // The next message starts a new runner in the same sandbox.
    s.send_message("echo after", MessageMode::Queue).unwrap().run.await.unwrap();
    assert!(h.stored_transcript(&s.session_id).await.unwrap().contains(": echo after"));
    assert_eq!(end_blocks(&h)[1]["metadata"]["stopReason"], "completed");
}

#[tokio::test]
async fn the_queue_is_ordered_visible_and_editable() {
    let h = harness(serde_json::json!({}));
    let s = h.session().await;
    let first = tokio::spawn(s.send_message("sleep 612", MessageMode::Queue).unwrap().run);
    h.wait_for("the first turn", || sleeping("612")).await;
    let a = s.send_message("echo a", MessageMode::Queue).unwrap();
    let b = s.send_message("echo b", MessageMode::Queue).unwrap();
    let c = s.send_message("echo c", MessageMode::Queue).unwrap();
    assert_eq!((a.position, b.position, c.position), (1, 2, 3));
    let queue: Vec<_> = s.queue_view().into_iter().map(|q| q.preview).collect();
    assert_eq!(queue, ["echo a", "echo b", "echo c"]);
    s.remove_queued(&b.message_id).unwrap();
    assert_eq!(s.remove_queued(&b.message_id).unwrap_err().code(), "NOT_FOUND");
    // `interrupt` mode stops the running turn and goes first.
    let now = s.send_message("echo now", MessageMode::Interrupt).unwrap();
    assert_eq!(now.position, 1);
    let (a, b, c, now) = (tokio::spawn(a.run), tokio::spawn(b.run), tokio::spawn(c.run), tokio::spawn(now.run));
    for t in [first, now, a, b, c] {
        tokio::time::timeout(Duration::from_secs(20), t).await.unwrap().unwrap().unwrap();
    }
    let t = h.stored_transcript(&s.session_id).await.unwrap();
    let order: Vec<_> = t.lines().filter_map(|l| l.split(": ").nth(1)).collect();
    assert_eq!(order, ["sleep 612", "echo now", "echo a", "echo c"], "{t}");
    let changes = h.events.lock().unwrap().iter().filter(|(n, _)| n == "session:queue:changed").count();
    assert!(changes >= 6, "every change is announced ({changes})");
    assert!(s.queue_view().is_empty());
}

/// Pids of this harness's runners (the sh loop, found by its script and sandbox root).
fn runners(h: &Harness) -> Vec<i32> {
    let root = h.root.display().to_string();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
            String::from_utf8_lossy(&cmd).contains("while IFS= read") && String::from_utf8_lossy(&env).contains(&root)
        })
        .collect()
}

#[tokio::test]
async fn one_runner_serves_every_turn_exits_when_idle_and_comes_back() {
    let h = harness(serde_json::json!({ "runnerIdleMs": 400 }));
    let s = h.session().await;
    s.send_message("echo one", MessageMode::Queue).unwrap().run.await.unwrap();
    let first = runners(&h);
    assert_eq!(first.len(), 1, "one runner");
    s.send_message("echo two", MessageMode::Queue).unwrap().run.await.unwrap();
    assert_eq!(runners(&h), first, "the same process took the second turn");
    h.wait_for("the idle runner to exit", || runners(&h).is_empty()).await;
    assert!(s.has_sandbox(), "the sandbox stays");
    s.send_message("echo three", MessageMode::Queue).unwrap().run.await.unwrap();
    let again = runners(&h);
    assert_eq!(again.len(), 1);
    // Killed between turns: the next message starts another, transparently.
    unsafe { libc::kill(again[0], libc::SIGKILL) };
    h.wait_for("the runner to die", || runners(&h).is_empty()).await;
    s.send_message("echo four", MessageMode::Queue).unwrap().run.await.unwrap();
    let t = h.stored_transcript(&s.session_id).await.unwrap();
    assert!(["one", "two", "three", "four"].iter().all(|w| t.contains(&format!(": echo {w}"))), "{t}");
    assert!(!h.events.lock().unwrap().iter().any(|(n, _)| n == "session:error"));
}

#[tokio::test]
async fn a_runner_that_dies_mid_turn_fails_that_turn_only() {
    let h = harness(serde_json::json!({}));
    let s = h.session().await;
    let e = s.send_message("exit 3", MessageMode::Queue).unwrap().run.await.unwrap_err();
    assert!(e.to_string().contains("exited with code 3"), "{e}");
    let ends = end_blocks(&h);
    assert_eq!(ends.last().unwrap()["metadata"]["stopReason"], "error");
    assert_eq!(ends.last().unwrap()["subtype"], "error");
    s.send_message("echo fine", MessageMode::Queue).unwrap().run.await.unwrap();
    assert_eq!(end_blocks(&h).last().unwrap()["metadata"]["stopReason"], "completed");
}
