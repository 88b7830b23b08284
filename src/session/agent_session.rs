//! One session: its conversation state, its persistence calls in the reference's order, and
//! (with the sandbox layer) its agent runs.

use crate::sync::Locked as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use super::activation::Live;
use super::ledger::Ledger;
use super::outbox::{Outbox, Write};
use super::state::{RuntimeState, SandboxState};
use crate::agent::architecture::AgentArchitecture;
use crate::agent::blocks::{Block, SubagentConversation};
use crate::agent::Architecture;
use crate::config::RuntimeOptions;
use crate::error::{Error, Result};
use crate::events::{DomainEvent, EventBus};
use crate::json::to_ascii_string;
use crate::persistence::retry::RetryPolicy;
use crate::persistence::{
    AgentProfile, PersistenceAdapter, SessionRecord, SessionRecordUpdate, StoredSession, WorkspaceFile,
};
use crate::sandbox::SandboxProvider;
use crate::time::now_ms;

/// What every session shares with its manager.
pub struct SessionContext {
    pub persistence: Arc<dyn PersistenceAdapter>,
    pub events: EventBus,
    pub retry: RetryPolicy,
    /// Where sandboxes come from; `Err` explains why this runtime cannot run agents.
    pub sandboxes: std::result::Result<Arc<dyn SandboxProvider>, String>,
    pub claude: Arc<dyn AgentArchitecture>,
    pub opencode: Arc<dyn AgentArchitecture>,
    pub options: RuntimeOptions,
    /// The manager, for sessions that unload themselves (idle timeout).
    pub manager: std::sync::OnceLock<std::sync::Weak<super::SessionManager>>,
    /// Sandboxes running now, against `maxActiveSandboxes`.
    pub active_sandboxes: Arc<std::sync::atomic::AtomicUsize>,
    /// The runtime is shutting down: unloads keep accepted messages for after the restart.
    pub shutting_down: std::sync::atomic::AtomicBool,
    /// The model proxy, started with the runtime or the first sandbox (`None`: sandboxes get
    /// the key).
    pub model_proxy: tokio::sync::OnceCell<Option<Arc<crate::model_proxy::ModelProxy>>>,
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Several servers sharing Redis (`None`: this process is the whole system).
    pub cluster: Option<Arc<crate::cluster::Cluster>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Closing {
    Open,
    Unloading,
    Closed,
}

/// One of the `maxActiveSandboxes` places, held by a live sandbox; freed on drop.
pub struct SandboxSlot(Arc<std::sync::atomic::AtomicUsize>);

impl SandboxSlot {
    pub fn try_take(count: &Arc<std::sync::atomic::AtomicUsize>, max: usize) -> Option<Self> {
        count
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| (n < max).then_some(n + 1))
            .ok()
            .map(|_| Self(count.clone()))
    }
}

impl Drop for SandboxSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl SessionContext {
    pub fn architecture(&self, a: Architecture) -> Result<Arc<dyn AgentArchitecture>> {
        match a {
            Architecture::ClaudeAgentSdk => Ok(self.claude.clone()),
            Architecture::OpenCode => Ok(self.opencode.clone()),
        }
    }
}

/// Process-wide, so a version never repeats across sessions or reloads.
static CONVERSATION_VERSION: AtomicU64 = AtomicU64::new(1);

struct Conversation {
    blocks: Vec<Block>,
    subagents: Vec<SubagentConversation>,
    /// Changes whenever blocks or subagents change; lets the JS side cache its parsed copy.
    version: u64,
    /// `blocks` and `subagents` serialized once; state reads of a big session then cost a copy.
    json_cache: Option<(Arc<RawValue>, Arc<RawValue>)>,
}

impl Conversation {
    fn new(blocks: Vec<Block>, subagents: Vec<SubagentConversation>) -> Self {
        let version = CONVERSATION_VERSION.fetch_add(1, Ordering::Relaxed);
        Self { blocks, subagents, version, json_cache: None }
    }

    fn json(&mut self) -> (Arc<RawValue>, Arc<RawValue>) {
        self.json_cache
            .get_or_insert_with(|| {
                let raw = |s: String| Arc::from(RawValue::from_string(s).expect("serializer output is JSON"));
                (raw(to_ascii_string(&self.blocks)), raw(to_ascii_string(&self.subagents)))
            })
            .clone()
    }
}

pub(super) struct SessionData {
    conversation: Conversation,
    pub(super) raw_transcript: Option<String>,
    pub(super) workspace_files: Vec<WorkspaceFile>,
    pub(super) session_options: Map<String, Value>,
    pub(super) created_at: i64,
    pub(super) last_activity: i64,
    name: Option<String>,
    metadata: Option<Map<String, Value>>,
    pub(super) sandbox: Option<SandboxState>,
    /// Accepted messages and started sandboxes, stored with the record (see `ledger`).
    pub(super) ledger: Ledger,
}

impl SessionData {
    pub(super) fn set_conversation(&mut self, blocks: Vec<Block>, subagents: Vec<SubagentConversation>) {
        self.conversation = Conversation::new(blocks, subagents);
    }
}

pub struct AgentSession {
    pub session_id: String,
    pub architecture: Architecture,
    pub(super) profile: AgentProfile,
    pub(super) data: Mutex<SessionData>,
    pub(super) ctx: Arc<SessionContext>,
    /// Turns run one at a time, in the order the messages were sent.
    pub(super) turns: super::turn::TurnQueue,
    /// Writes owed to storage, ordered per target and retried until they land.
    pub(super) outbox: Arc<Outbox>,
    /// Held while workspace changes are applied to memory and queued (watcher events, pulls).
    pub(super) files_lock: tokio::sync::Mutex<()>,
    /// The running sandbox and its background tasks.
    pub(super) live: tokio::sync::Mutex<Option<Live>>,
    pub(super) busy: std::sync::atomic::AtomicBool,
    /// Open, closing (being unloaded) or closed (unloaded; this instance is done). Once not
    /// open: no new sandbox, queued turns give up.
    closing: tokio::sync::watch::Sender<Closing>,
    /// An unload was asked for but could not store everything yet; the sweep retries it.
    pub(super) unload_wanted: std::sync::atomic::AtomicBool,
    pub(super) restarts: std::sync::atomic::AtomicU32,
    /// The session's long-lived agent process (held by the running turn).
    pub(super) runner: tokio::sync::Mutex<Option<crate::agent::runner::Runner>>,
    /// Counts turns, so an idle runner's exit timer knows whether a turn came since.
    pub(super) runner_generation: AtomicU64,
    /// Interrupt, queue and requests waiting for a person (see `control`).
    pub(super) control: Mutex<super::control::ControlState>,
    /// Set by an interrupt, cleared when a turn starts; the running turn watches it.
    pub(super) interrupt_tx: tokio::sync::watch::Sender<bool>,
    /// Batches of workspace events received and not yet handled (see `files_settled`).
    pub(super) files_in_flight: tokio::sync::watch::Sender<usize>,
    /// The running turn's model usage and whether its budget stop was announced (see `usage`).
    pub(super) turn_usage: Mutex<super::usage::TurnUsage>,
    /// Since when the current sandbox runs (its lifetime counts toward `maxSandboxSeconds`).
    pub(super) sandbox_clock: Mutex<Option<std::time::Instant>>,
    /// Waiting in the warm pool (see `pool`): started but not created; nothing is emitted and
    /// storage writes are held.
    pub(super) warm: std::sync::atomic::AtomicBool,
    /// When the running turn started, until its first model block (time to first token).
    pub(super) first_token_clock: Mutex<Option<std::time::Instant>>,
    /// The running turn's trace span: model calls made through the proxy are its children.
    pub(super) turn_span: Mutex<Option<tracing::Span>>,
}

/// `CreateSessionArgs`.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateSessionArgs {
    pub agent_profile_ref: String,
    pub architecture: Option<Architecture>,
    #[serde(default)]
    pub session_options: Option<Map<String, Value>>,
    #[serde(default)]
    pub default_workspace_files: Option<Vec<WorkspaceFile>>,
}

/// `getPersistedListData()`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ListData<'a> {
    session_id: &'a str,
    #[serde(rename = "type")]
    architecture: Architecture,
    agent_profile_reference: &'a str,
    session_options: &'a Map<String, Value>,
    last_activity: i64,
    pub(super) created_at: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: &'a Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    metadata: &'a Option<Map<String, Value>>,
}

/// `getState()`: list data plus runtime, blocks, files and subagents.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct StateView<'a> {
    #[serde(flatten)]
    list: ListData<'a>,
    runtime: RuntimeState,
    blocks: &'a RawValue,
    workspace_files: &'a [WorkspaceFile],
    subagents: &'a RawValue,
    /// The newest event of the session: stream from here to miss nothing after this state.
    last_event_id: Option<String>,
}

impl AgentSession {
    fn new(
        session_id: String,
        architecture: Architecture,
        profile: AgentProfile,
        data: SessionData,
        ctx: Arc<SessionContext>,
    ) -> Self {
        Self {
            outbox: Outbox::new(session_id.clone(), ctx.persistence.clone(), ctx.retry, ctx.events.clone()),
            session_id,
            architecture,
            profile,
            data: Mutex::new(data),
            files_lock: Default::default(),
            ctx,
            turns: Default::default(),
            live: Default::default(),
            busy: Default::default(),
            closing: tokio::sync::watch::Sender::new(Closing::Open),
            unload_wanted: Default::default(),
            restarts: Default::default(),
            runner: Default::default(),
            runner_generation: Default::default(),
            control: Default::default(),
            interrupt_tx: tokio::sync::watch::Sender::new(false),
            files_in_flight: tokio::sync::watch::Sender::new(0),
            turn_usage: Mutex::default(),
            sandbox_clock: Mutex::default(),
            warm: Default::default(),
            first_token_clock: Mutex::default(),
            turn_span: Mutex::default(),
        }
    }

    /// Create a new session: persistence calls in the reference's order (spec §4.1).
    pub(crate) async fn create(args: CreateSessionArgs, ctx: Arc<SessionContext>) -> Result<Arc<Self>> {
        let session = Self::prepare(args, ctx).await?;
        session.store_new().await?;
        Ok(session)
    }

    /// A new session in memory only: nothing is stored yet.
    pub(super) async fn prepare(args: CreateSessionArgs, ctx: Arc<SessionContext>) -> Result<Arc<Self>> {
        let architecture = args.architecture.ok_or_else(|| Error::InvalidInput("architecture is required".into()))?;
        let profile = ctx
            .persistence
            .load_agent_profile(&args.agent_profile_ref)
            .await?
            .ok_or_else(|| Error::AgentProfileNotFound(args.agent_profile_ref.clone()))?;
        let session_id = architecture.new_session_id();
        let now = now_ms();
        let mut files = profile.default_workspace_files.clone().unwrap_or_default();
        files.extend(args.default_workspace_files.unwrap_or_default());
        let session_options = args.session_options.unwrap_or_default();
        super::permissions::validate_options(&session_options).map_err(Error::InvalidInput)?;
        let data = SessionData {
            conversation: Conversation::new(vec![], vec![]),
            raw_transcript: Some(String::new()),
            workspace_files: files,
            session_options,
            created_at: now,
            last_activity: now,
            name: None,
            metadata: None,
            sandbox: None,
            ledger: Ledger::default(),
        };
        Ok(Arc::new(Self::new(session_id, architecture, profile, data, ctx)))
    }

    /// Store a session made by [`prepare`](Self::prepare): its record, empty transcript and
    /// first workspace files.
    pub(super) async fn store_new(&self) -> Result<()> {
        let (record, files, now) = {
            let d = self.data.locked();
            let record = SessionRecord {
                session_id: self.session_id.clone(),
                architecture: self.architecture,
                session_options: Some(d.session_options.clone()),
                agent_profile_reference: self.profile.id.clone(),
                name: None,
                last_activity: None,
                created_at: Some(d.created_at),
                metadata: None,
            };
            (record, d.workspace_files.clone(), d.last_activity)
        };
        let (p, id) = (&self.ctx.persistence, &self.session_id);
        p.create_session_record(&record).await?;
        p.save_transcript(id, "").await?;
        futures::future::try_join_all(files.iter().map(|f| p.save_workspace_file(id, f))).await?;
        p.update_session_record(id, &SessionRecordUpdate { last_activity: Some(now), ..Default::default() }).await?;
        Ok(())
    }

    /// Load a stored session (spec §4.2). Parsing the transcript runs on a blocking thread so a
    /// 50 MB transcript does not stall the async workers.
    pub(crate) async fn load(session_id: &str, ctx: Arc<SessionContext>) -> Result<Arc<Self>> {
        let p = &ctx.persistence;
        let stored: StoredSession =
            p.load_session(session_id).await?.ok_or_else(|| Error::SessionNotFound(session_id.to_string()))?;
        let profile_ref = stored.record.agent_profile_reference.clone();
        let profile = p.load_agent_profile(&profile_ref).await?.ok_or(Error::AgentProfileNotFound(profile_ref))?;
        let architecture = stored.record.architecture;
        let (raw, parsed) = match stored.raw_transcript {
            None => (None, Default::default()),
            Some(raw) if raw.is_empty() => (Some(raw), Default::default()),
            Some(raw) => tokio::task::spawn_blocking(move || {
                let parsed = architecture.parse_transcript(&raw);
                (Some(raw), parsed)
            })
            .await
            .expect("transcript parser panicked"),
        };
        let now = now_ms();
        let mut r = stored.record;
        let ledger = Ledger::take_from(&mut r.metadata);
        let data = SessionData {
            conversation: Conversation::new(parsed.blocks, parsed.subagents),
            raw_transcript: raw,
            workspace_files: stored.workspace_files,
            session_options: r.session_options.unwrap_or_default(),
            created_at: r.created_at.unwrap_or(now),
            last_activity: r.last_activity.unwrap_or(now),
            name: r.name,
            metadata: r.metadata,
            sandbox: None,
            ledger,
        };
        Ok(Arc::new(Self::new(session_id.to_string(), architecture, profile, data, ctx)))
    }

    pub(super) fn touch(&self) {
        self.data.locked().last_activity = now_ms();
    }

    pub(super) fn emit(&self, e: DomainEvent) {
        if !self.warm.load(Ordering::Relaxed) {
            self.ctx.events.emit(e);
        }
    }

    pub(super) fn session_event(&self, name: &'static str, mut payload: Value) -> DomainEvent {
        payload["sessionId"] = serde_json::json!(self.session_id);
        DomainEvent { name, session_id: Some(self.session_id.clone()), payload, remote: false }
    }

    /// A turn is running.
    pub fn is_busy(&self) -> bool {
        self.busy.load(Ordering::SeqCst)
    }

    /// No turn running or waiting.
    pub fn is_idle(&self) -> bool {
        !self.busy.load(Ordering::SeqCst) && self.queued_count() == 0
    }

    /// Whether a sandbox is running for this session.
    pub fn has_sandbox(&self) -> bool {
        self.data.locked().sandbox.is_some()
    }

    /// Being unloaded, or unloaded.
    pub fn is_closing(&self) -> bool {
        *self.closing.borrow() != Closing::Open
    }

    /// Mark the session as closing; false if it was not open (another unload is under way).
    pub(super) fn begin_closing(&self) -> bool {
        self.closing.send_if_modified(|c| std::mem::replace(c, Closing::Unloading) == Closing::Open)
    }

    /// The unload ended: `closed` for good, or open again (its state could not be stored).
    pub(super) fn end_closing(&self, closed: bool) {
        self.closing.send_replace(if closed { Closing::Closed } else { Closing::Open });
    }

    /// Wait until no unload is under way.
    pub(super) async fn closing_done(&self) {
        let mut rx = self.closing.subscribe();
        let _ = rx.wait_for(|c| *c != Closing::Unloading).await;
    }

    /// Nothing owed to storage.
    pub fn is_stored(&self) -> bool {
        self.outbox.is_clean()
    }

    /// The last storage failure while writes are still owed.
    pub fn storage_error(&self) -> Option<crate::persistence::PersistenceError> {
        self.outbox.status().last_error
    }

    pub fn agent_profile(&self) -> &AgentProfile {
        &self.profile
    }

    /// `{ isLoaded, sandbox }`, as the reference's status payloads carry it.
    pub fn runtime_state(&self) -> RuntimeState {
        RuntimeState::of_sandbox(self.data.locked().sandbox.clone())
    }

    /// The runtime part of the session's state: sandbox, queue and waiting requests.
    pub fn runtime_state_full(&self) -> RuntimeState {
        let sandbox = self.data.locked().sandbox.clone();
        RuntimeState {
            is_loaded: true,
            sandbox,
            queue: Some(self.queue_view()),
            pending_requests: Some(self.pending_requests()),
            usage: self.usage_view(),
            owner_node_id: self.ctx.cluster.as_ref().map(|c| c.node_id().to_string()),
        }
    }

    fn list_data<'a>(&'a self, d: &'a SessionData) -> ListData<'a> {
        ListData {
            session_id: &self.session_id,
            architecture: self.architecture,
            agent_profile_reference: &self.profile.id,
            session_options: &d.session_options,
            last_activity: d.last_activity,
            created_at: d.created_at,
            name: &d.name,
            metadata: &d.metadata,
        }
    }

    /// `getPersistedListData()` as a JSON value.
    pub fn persisted_list_data(&self) -> Value {
        let d = self.data.locked();
        serde_json::to_value(self.list_data(&d)).expect("list data serializes")
    }

    /// `getState()` without `blocks` and `subagents`, plus `conversationVersion`: what the JS
    /// side needs to decide whether its parsed copy of the conversation is still current.
    pub fn state_meta_json(&self) -> String {
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Meta<'a> {
            #[serde(flatten)]
            list: ListData<'a>,
            runtime: RuntimeState,
            workspace_files: &'a [WorkspaceFile],
            last_event_id: Option<String>,
            conversation_version: u64,
        }
        let runtime = self.runtime_state_full();
        let d = self.data.locked();
        let meta = Meta {
            list: self.list_data(&d),
            runtime,
            workspace_files: &d.workspace_files,
            last_event_id: self.ctx.events.log().last_event_id(&self.session_id),
            conversation_version: d.conversation.version,
        };
        serde_json::to_string(&meta).expect("state serializes")
    }

    /// `{ version, blocks, subagents }` as ASCII-only JSON (see [`crate::json`]).
    pub fn conversation_json(&self) -> String {
        let mut d = self.data.locked();
        let (blocks, subagents) = d.conversation.json();
        let version = d.conversation.version;
        drop(d);
        let mut out = String::with_capacity(blocks.get().len() + subagents.get().len() + 48);
        out.push_str(&format!("{{\"version\":{version},\"blocks\":"));
        out.push_str(blocks.get());
        out.push_str(",\"subagents\":");
        out.push_str(subagents.get());
        out.push('}');
        out
    }

    /// `getState()` serialized to a JSON string (`RuntimeSessionData`).
    pub fn state_json(&self) -> String {
        let runtime = self.runtime_state_full();
        let mut d = self.data.locked();
        let (blocks, subagents) = d.conversation.json();
        let view = StateView {
            list: self.list_data(&d),
            runtime,
            blocks: &blocks,
            workspace_files: &d.workspace_files,
            subagents: &subagents,
            last_event_id: self.ctx.events.log().last_event_id(&self.session_id),
        };
        serde_json::to_string(&view).expect("state serializes")
    }

    pub fn session_options(&self) -> Map<String, Value> {
        self.data.locked().session_options.clone()
    }

    /// Replace the options (no merge), persist them, then announce them (spec §1.8). Permission
    /// settings apply from the next tool call.
    pub async fn update_session_options(&self, options: Map<String, Value>) -> Result<()> {
        super::permissions::validate_options(&options).map_err(Error::InvalidInput)?;
        self.data.locked().session_options = options.clone();
        self.policy_changed();
        let update = SessionRecordUpdate { session_options: Some(options.clone()), ..Default::default() };
        self.ctx.persistence.update_session_record(&self.session_id, &update).await?;
        self.ctx.events.emit(DomainEvent::options_update(&self.session_id, &options));
        Ok(())
    }

    /// Queue the ledger's current state for storage (with the user's metadata beside it).
    pub(super) fn store_ledger(&self) {
        let metadata = {
            let d = self.data.locked();
            d.ledger.merged_into(&d.metadata)
        };
        self.outbox.push([Write::Record(SessionRecordUpdate { metadata: Some(metadata), ..Default::default() })]);
    }

    /// Change the ledger and queue it for storage.
    pub(super) fn update_ledger(&self, f: impl FnOnce(&mut Ledger)) {
        f(&mut self.data.locked().ledger);
        self.store_ledger();
    }

    /// Persist the in-memory state (spec §4.5): transcript, every workspace file, lastActivity.
    /// Writes are retried. The transcript written is the one held in memory (created, loaded or
    /// read back from the sandbox), never an empty stand-in for one we could not read.
    pub(super) async fn persist_state(&self) -> Result<()> {
        let (raw, files, last_activity) = {
            let d = self.data.locked();
            (d.raw_transcript.clone(), d.workspace_files.clone(), d.last_activity)
        };
        // The reference's order: the transcript, then the files, then the record's lastActivity
        // once the content is stored. Whatever fails stays owed (the outbox keeps retrying it).
        // (Ledger changes are queued when they happen.)
        let mut stored = Ok(());
        if let Some(raw) = raw {
            self.outbox.push([Write::Transcript(raw)]);
            stored = self.outbox.flush().await;
        }
        self.outbox.push(files.into_iter().map(Write::SaveFile));
        stored = stored.and(self.outbox.flush().await);
        if stored.is_ok() {
            let record = SessionRecordUpdate { last_activity: Some(last_activity), ..Default::default() };
            self.outbox.push([Write::Record(record)]);
            stored = self.outbox.flush().await;
        }
        Ok(stored?)
    }
}
