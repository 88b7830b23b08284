//! Everything the fake remembers: apps, images, secrets, sandboxes, execs (classic and router),
//! open files, issued tokens, the idempotency cache, one-shot faults and the request recording.

use std::any::Any;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::fs::File;
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agent_runtime::sandbox::modal::proto::{self as pb, generic_result::GenericStatus};
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::exec::Exec;
use crate::fs::FsResult;
use crate::image::ImageBuild;
use crate::util::{lock, long_poll};
use crate::FakeConfig;

/// How many idempotency keys are remembered (oldest forgotten first). Retries follow within
/// seconds, so this only bounds memory in long end-to-end runs.
const IDEMPOTENCY_CAPACITY: usize = 10_000;

/// The cached answer of a unary call, shared by all attempts carrying the same key. The async
/// mutex also makes a concurrent duplicate wait for the first attempt instead of redoing it.
pub type IdempotencySlot = Arc<tokio::sync::Mutex<Option<Box<dyn Any + Send + Sync>>>>;

pub struct Shared {
    pub config: FakeConfig,
    pub state: Mutex<State>,
    /// Every request with its arrival time.
    records: Mutex<Vec<(Value, std::time::Instant)>>,
    record_file: Mutex<Option<File>>,
}

#[derive(Default)]
pub struct State {
    counters: HashMap<&'static str, u64>,
    pub tokens: HashSet<String>,
    /// App name → app id.
    pub apps: HashMap<String, String>,
    pub images: HashMap<String, Arc<ImageBuild>>,
    pub secrets: HashMap<String, BTreeMap<String, String>>,
    /// In creation order.
    pub sandboxes: Vec<Arc<Sandbox>>,
    pub execs: HashMap<String, Arc<Exec>>,
    /// Command-router execs by (task id, client-chosen exec id).
    pub router_execs: HashMap<(String, String), Arc<Exec>>,
    /// Command-router JWTs issued, with the task each is for.
    pub router_tokens: HashMap<String, String>,
    pub fs_results: HashMap<String, FsResult>,
    pub files: HashMap<String, OpenFile>,
    idempotency: HashMap<(String, String), IdempotencySlot>,
    idempotency_order: VecDeque<(String, String)>,
    /// One-shot faults already used, as "<fault>:<method>".
    fired: HashSet<String>,
}

pub struct OpenFile {
    pub sandbox_id: String,
    pub file: Arc<Mutex<File>>,
}

impl State {
    /// Next value of the counter for `prefix`, starting at 1.
    pub fn next(&mut self, prefix: &'static str) -> u64 {
        let n = self.counters.entry(prefix).or_insert(0);
        *n += 1;
        *n
    }

    pub fn next_id(&mut self, prefix: &'static str) -> String {
        format!("{prefix}-{}", self.next(prefix))
    }

    /// `sb-` + 22 characters of [0-9A-Za-z]: the shape of real (V1) sandbox ids, which newer
    /// SDKs use to pick their code path. Derived from a counter, so runs are reproducible.
    pub fn next_sandbox_id(&mut self) -> String {
        const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
        let n = self.next("sb");
        let digest = Sha256::digest(format!("fake-modal-sandbox-{n}").as_bytes());
        let suffix: String = digest.iter().take(22).map(|b| ALPHABET[*b as usize % 62] as char).collect();
        format!("sb-{suffix}")
    }

    /// Uses up a one-shot fault; true only the first time for this `kind` and `method`.
    pub fn fire_once(&mut self, kind: &str, method: &str) -> bool {
        self.fired.insert(format!("{kind}:{method}"))
    }

    pub fn idempotency_slot(&mut self, method: &str, key: &str) -> IdempotencySlot {
        let k = (method.to_string(), key.to_string());
        if let Some(slot) = self.idempotency.get(&k) {
            return slot.clone();
        }
        if self.idempotency_order.len() >= IDEMPOTENCY_CAPACITY {
            if let Some(old) = self.idempotency_order.pop_front() {
                self.idempotency.remove(&old);
            }
        }
        let slot = IdempotencySlot::default();
        self.idempotency.insert(k.clone(), slot.clone());
        self.idempotency_order.push_back(k);
        slot
    }

    pub fn sandbox(&self, id: &str) -> Option<Arc<Sandbox>> {
        self.sandboxes.iter().find(|s| s.id == id).cloned()
    }

    pub fn sandbox_by_task(&self, task_id: &str) -> Option<Arc<Sandbox>> {
        self.sandboxes.iter().find(|s| s.task_id == task_id).cloned()
    }
}

impl Shared {
    pub fn new(config: FakeConfig) -> std::io::Result<Shared> {
        let record_file = match &config.record {
            Some(path) => Some(std::fs::OpenOptions::new().create(true).append(true).open(path)?),
            None => None,
        };
        Ok(Shared {
            config,
            state: Mutex::new(State::default()),
            records: Mutex::new(Vec::new()),
            record_file: Mutex::new(record_file),
        })
    }

    pub fn state(&self) -> std::sync::MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// Keeps the record in memory and, if configured, appends it as one JSON line.
    pub fn record(&self, entry: Value) {
        if let Some(file) = lock(&self.record_file).as_mut() {
            // Best effort: a full disk must not turn into failing RPCs.
            let _ = writeln!(file, "{entry}").and_then(|_| file.flush());
        }
        lock(&self.records).push((entry, std::time::Instant::now()));
    }

    pub fn records(&self) -> Vec<Value> {
        lock(&self.records).iter().map(|(v, _)| v.clone()).collect()
    }

    pub fn timed_records(&self) -> Vec<(Value, std::time::Instant)> {
        lock(&self.records).clone()
    }

    pub fn terminate_all(&self) {
        let sandboxes = self.state().sandboxes.clone();
        for sb in sandboxes {
            sb.terminate();
        }
    }
}

/// One sandbox: a directory standing in for its filesystem plus the processes run "inside".
pub struct Sandbox {
    pub id: String,
    pub task_id: String,
    /// Host directory that stands for the sandbox's `/`.
    pub root: PathBuf,
    /// Environment of every process started in the sandbox (already path-translated).
    pub env: BTreeMap<String, String>,
    pub definition: pb::Sandbox,
    notify: Notify,
    st: Mutex<SandboxState>,
}

#[derive(Default)]
struct SandboxState {
    result: Option<pb::GenericResult>,
    execs: Vec<Arc<Exec>>,
    task_id_calls: u32,
}

impl Sandbox {
    pub fn new(
        id: String,
        task_id: String,
        root: PathBuf,
        env: BTreeMap<String, String>,
        definition: pb::Sandbox,
    ) -> Sandbox {
        Sandbox { id, task_id, root, env, definition, notify: Notify::new(), st: Mutex::default() }
    }

    pub fn result(&self) -> Option<pb::GenericResult> {
        lock(&self.st).result.clone()
    }

    /// Counts a `SandboxGetTaskId` call and returns how many there were, this one included.
    pub fn count_task_id_call(&self) -> u32 {
        let mut st = lock(&self.st);
        st.task_id_calls += 1;
        st.task_id_calls
    }

    /// Registers a started exec, unless the sandbox was terminated meanwhile (then it is killed
    /// right away and false returned).
    pub fn add_exec(&self, exec: Arc<Exec>) -> bool {
        let mut st = lock(&self.st);
        if st.result.is_some() {
            drop(st);
            exec.kill();
            return false;
        }
        st.execs.push(exec);
        true
    }

    pub fn running_processes(&self) -> usize {
        lock(&self.st).execs.iter().filter(|e| e.is_running()).count()
    }

    /// Marks the sandbox terminated and kills all its process groups. Returns the result it
    /// already had, if any (terminating twice is fine).
    pub fn terminate(&self) -> Option<pb::GenericResult> {
        let (existing, execs) = {
            let mut st = lock(&self.st);
            let existing = st.result.clone();
            if existing.is_none() {
                st.result = Some(pb::GenericResult {
                    status: GenericStatus::Terminated as i32,
                    exitcode: 137,
                    ..Default::default()
                });
            }
            (existing, st.execs.clone())
        };
        for exec in execs {
            exec.kill();
        }
        self.notify.notify_waiters();
        existing
    }

    /// Long-polls for the sandbox's result.
    pub async fn wait(&self, timeout: Duration) -> Option<pb::GenericResult> {
        long_poll(&self.notify, Instant::now() + timeout, || self.result()).await
    }
}
