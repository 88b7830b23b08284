//! Runtime options: the reference's `RuntimeConfig` minus the persistence adapter (which the
//! binding supplies as an object), plus the limits this runtime adds. Validation errors name
//! the field, e.g. `idleTimeoutMs must be a positive number of milliseconds`.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::Deserialize;

/// `modal: { tokenId, tokenSecret, appName }`. Debug output never shows the secret.
#[derive(Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ModalConfig {
    #[serde(default)]
    pub token_id: Option<String>,
    #[serde(default)]
    pub token_secret: Option<String>,
    #[serde(default)]
    pub app_name: Option<String>,
}

impl fmt::Debug for ModalConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ModalConfig")
            .field("token_id", &self.token_id.as_ref().map(|_| "<set>"))
            .field("token_secret", &self.token_secret.as_ref().map(|_| "<redacted>"))
            .field("app_name", &self.app_name)
            .finish()
    }
}

impl ModalConfig {
    /// Both token fields are non-empty strings: the rule for choosing the Modal provider.
    pub fn has_tokens(&self) -> bool {
        let set = |v: &Option<String>| v.as_deref().is_some_and(|s| !s.is_empty());
        set(&self.token_id) && set(&self.token_secret)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    Local,
    Modal,
}

/// The provider that runs sessions. Without Modal credentials the local provider runs agents on
/// this host: outside production that is a fallback (the runtime warns), in production
/// (`NODE_ENV=production`) only an explicit `sandbox.provider: "local"` allows it, so a missing
/// secret cannot silently move untrusted agents onto the server.
pub fn choose_provider(
    explicit: Option<ProviderKind>,
    modal: &ModalConfig,
    node_env: Option<&str>,
) -> Result<ProviderKind, String> {
    let production = node_env.is_some_and(|e| e.trim().eq_ignore_ascii_case("production"));
    match explicit {
        Some(ProviderKind::Local) => Ok(ProviderKind::Local),
        _ if modal.has_tokens() => Ok(ProviderKind::Modal),
        Some(ProviderKind::Modal) if production => Err(
            "sandbox.provider is \"modal\" but modal.tokenId and modal.tokenSecret are not both set (NODE_ENV=production)"
                .into(),
        ),
        Some(ProviderKind::Modal) => Ok(ProviderKind::Modal),
        None if production => Err("modal.tokenId and modal.tokenSecret are not both set and NODE_ENV=production: \
             refusing to fall back to the local provider, which would run agents on this host; set the Modal \
             tokens, or set sandbox.provider: \"local\" to run agents on this host deliberately"
            .into()),
        None => Ok(ProviderKind::Local),
    }
}

/// `eventLog`: what the per-session event log keeps.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EventLogConfig {
    #[serde(default)]
    pub max_events: Option<f64>,
    #[serde(default)]
    pub max_bytes: Option<f64>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct SandboxConfig {
    #[serde(default)]
    pub provider: Option<ProviderKind>,
    /// Local provider: where sandbox directories are created.
    #[serde(default)]
    pub root: Option<String>,
    /// Extra environment for every sandbox process.
    #[serde(default)]
    pub env: Option<BTreeMap<String, String>>,
    /// Local provider: the network a sandbox sees.
    #[serde(default)]
    pub network: Option<SandboxNetwork>,
    /// Local provider: run sandboxes without bubblewrap even when `NODE_ENV` is `production`.
    #[serde(default, rename = "allowUnisolated")]
    pub allow_unisolated: Option<bool>,
}

/// `sandbox.network`: `"host"` shares the host's network (the default); `"none"` gives each
/// local sandbox its own network namespace with only a loopback interface.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SandboxNetwork {
    #[default]
    Host,
    None,
}

/// Environment variables whose values may be secrets: Debug shows only the names.
#[derive(Clone, Default)]
pub struct SecretEnv(pub BTreeMap<String, String>);

impl fmt::Debug for SecretEnv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.0.keys()).finish()
    }
}

/// Facts about the host the JS glue fills in (not user configuration).
#[derive(Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HostInfo {
    /// The Node binary that runs runner scripts.
    #[serde(default)]
    pub node: Option<String>,
    /// The package's `sandbox/` folder.
    #[serde(default)]
    pub runner_dir: Option<String>,
    #[serde(default)]
    pub claude_sdk_entry: Option<String>,
    /// The node_modules folder holding `opencode-ai` and `@opencode-ai/sdk`, when installed.
    #[serde(default)]
    pub open_code_modules: Option<String>,
    /// Host environment passed to sandboxes (ANTHROPIC_API_KEY, ANTHROPIC_BASE_URL when set).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Default root for local sandboxes.
    #[serde(default)]
    pub tmp_dir: Option<String>,
}

impl fmt::Debug for HostInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HostInfo")
            .field("node", &self.node)
            .field("runner_dir", &self.runner_dir)
            .field("claude_sdk_entry", &self.claude_sdk_entry)
            .field("open_code_modules", &self.open_code_modules)
            .field("env", &self.env.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// The raw shape as it arrives from JavaScript.
#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawOptions {
    modal: Option<ModalConfig>,
    sandbox: Option<SandboxConfig>,
    idle_timeout_ms: Option<f64>,
    sync_interval_ms: Option<f64>,
    persistence_timeout_ms: Option<f64>,
    max_body_bytes: Option<f64>,
    health_check_interval_ms: Option<f64>,
    max_workspace_file_bytes: Option<f64>,
    log_level: Option<String>,
    shutdown_timeout_ms: Option<f64>,
    turn_timeout_ms: Option<f64>,
    interrupt_grace_ms: Option<f64>,
    runner_idle_ms: Option<f64>,
    /// `false`, or the log's bounds.
    event_log: Option<serde_json::Value>,
    /// `false`, or where the model proxy listens and is reached.
    model_proxy: Option<serde_json::Value>,
    pricing: Option<std::collections::BTreeMap<String, crate::usage::Price>>,
    budget: Option<crate::usage::Budget>,
    max_loaded_sessions: Option<f64>,
    max_active_sandboxes: Option<f64>,
    max_queued_messages: Option<f64>,
    bundled_mcp_roots: Option<Vec<String>>,
    warm_pool: Option<Vec<WarmSpec>>,
    /// `true`, or `{ public }`: serve `GET /metrics`.
    metrics: Option<serde_json::Value>,
    /// `{ redisUrl, nodeId?, leaseTtlMs? }`: several servers sharing Redis.
    cluster: Option<RawCluster>,
    #[serde(rename = "__host")]
    host: Option<HostInfo>,
}

#[derive(Debug, Clone)]
pub struct RuntimeOptions {
    pub modal: ModalConfig,
    pub provider: ProviderKind,
    /// The provider was named in the config (no "defaulted to local" warning then).
    pub provider_explicit: bool,
    pub idle_timeout: Duration,
    pub sync_interval: Duration,
    /// Bound on every persistence adapter call, so a promise that never settles cannot hang
    /// a request or `shutdown()`.
    pub persistence_timeout: Duration,
    /// Largest accepted REST request body.
    pub max_body_bytes: usize,
    /// How often a session's sandbox is checked for life.
    pub health_interval: Duration,
    /// Workspace files larger than this (or not UTF-8 text) are not sent to persistence.
    pub max_workspace_file_bytes: usize,
    pub sandbox_root: std::path::PathBuf,
    /// Environment of every sandbox process (host keys plus `sandbox.env`); never logged.
    pub sandbox_env: SecretEnv,
    pub sandbox_network: SandboxNetwork,
    /// Local sandboxes may run without bubblewrap in production.
    pub allow_unisolated: bool,
    pub host: HostInfo,
    pub log_level: Option<String>,
    /// How long shutdown keeps trying to store sessions before it stops them anyway.
    pub shutdown_timeout: Duration,
    /// A turn running longer than this is stopped with an error.
    pub turn_timeout: Duration,
    /// After an interrupt, how long the agent has to stop before its runner is killed.
    pub interrupt_grace: Duration,
    /// An idle runner (no turn for this long) exits; the next turn starts one again.
    pub runner_idle: Duration,
    /// What the session event log keeps per session; `None` (`eventLog: false`): no numbering,
    /// no log, no replay.
    pub event_log: Option<crate::event_log::LogLimits>,
    /// Sessions held in memory at once; idle ones are unloaded to make room, else 503.
    pub max_loaded_sessions: usize,
    /// Sandboxes running at once; a turn that needs one more is refused (503).
    pub max_active_sandboxes: usize,
    /// Messages waiting per session; more are refused (429).
    pub max_queued_messages: usize,
    /// Host folders a profile's `bundledMCPs[].localProjectPath` may name; none by default.
    pub bundled_mcp_roots: Vec<std::path::PathBuf>,
    /// The model proxy (keys outside sandboxes, usage, budgets); `None` with `modelProxy: false`.
    pub model_proxy: Option<ModelProxyConfig>,
    /// Prices by model (config `pricing` over the built-in table).
    pub pricing: crate::usage::Pricing,
    /// Budget of every session unless its `sessionOptions.budget` says otherwise.
    pub budget: crate::usage::Budget,
    /// New sessions kept started (sandbox, runner, agent CLI) for `createSession` to hand out.
    pub warm_pool: Vec<WarmSpec>,
    /// `GET /metrics` is served (`None`: 404); `Some(true)`: without the API key.
    pub metrics_public: Option<bool>,
    /// Several servers sharing Redis (`cluster`, or `AGENT_RUNTIME_REDIS_URL`); `None`: one node.
    pub cluster: Option<ClusterConfig>,
}

#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawCluster {
    redis_url: Option<String>,
    node_id: Option<String>,
    lease_ttl_ms: Option<f64>,
}

/// `cluster`: where the shared state lives and how long a node's hold on a session lasts
/// without renewal.
#[derive(Clone, PartialEq)]
pub struct ClusterConfig {
    pub redis_url: String,
    /// Unique per process; given, or `<host>-<random>`.
    pub node_id: String,
    pub lease_ttl: Duration,
}

impl fmt::Debug for ClusterConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterConfig")
            .field("redis_url", &redact_url(&self.redis_url))
            .field("node_id", &self.node_id)
            .field("lease_ttl", &self.lease_ttl)
            .finish()
    }
}

/// `redis://user:secret@host` → `redis://user:***@host`: URLs are logged and put in errors.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_string() };
    let (authority, path) = rest.split_once('/').map_or((rest, None), |(a, p)| (a, Some(p)));
    let authority = match authority.rsplit_once('@') {
        Some((cred, host)) => match cred.split_once(':') {
            Some((user, _)) => format!("{user}:***@{host}"),
            None => format!("***@{host}"),
        },
        None => authority.to_string(),
    };
    match path {
        Some(p) => format!("{scheme}://{authority}/{p}"),
        None => format!("{scheme}://{authority}"),
    }
}

fn cluster(raw: Option<RawCluster>, env_url: Option<String>) -> Result<Option<ClusterConfig>, String> {
    let raw = match (raw, env_url.filter(|u| !u.is_empty())) {
        (Some(r), env) => RawCluster { redis_url: r.redis_url.or(env), ..r },
        (None, Some(url)) => RawCluster { redis_url: Some(url), ..Default::default() },
        (None, None) => return Ok(None),
    };
    let redis_url = raw.redis_url.filter(|u| !u.is_empty()).ok_or(
        "cluster.redisUrl is required (or set AGENT_RUNTIME_REDIS_URL), e.g. redis://127.0.0.1:6379",
    )?;
    if !(redis_url.starts_with("redis://") || redis_url.starts_with("rediss://") || redis_url.starts_with("unix://")) {
        return Err(format!(
            "cluster.redisUrl must start with redis://, rediss:// or unix:// (got {})",
            redact_url(&redis_url)
        ));
    }
    let node_id = match raw.node_id {
        Some(n) if n.is_empty() || n.len() > 64 || !n.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) => {
            return Err(format!("cluster.nodeId must be 1 to 64 letters, digits, '-', '_' or '.' (got {n:?})"))
        }
        Some(n) => n,
        None => {
            let host = std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty()).unwrap_or_else(|| "node".into());
            let host: String = host.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '-').take(40).collect();
            format!("{host}-{}", &uuid::Uuid::new_v4().simple().to_string()[..8])
        }
    };
    let lease_ttl = match raw.lease_ttl_ms {
        None => Duration::from_secs(15),
        Some(ms) if ms.is_finite() && (1000.0..=600_000.0).contains(&ms) => Duration::from_millis(ms as u64),
        Some(ms) => return Err(format!("cluster.leaseTtlMs must be from 1000 to 600000 ms (got {ms})")),
    };
    Ok(Some(ClusterConfig { redis_url, node_id, lease_ttl }))
}

fn metrics(v: Option<serde_json::Value>) -> Result<Option<bool>, String> {
    use serde_json::Value;
    match v {
        None | Some(Value::Bool(false)) | Some(Value::Null) => Ok(None),
        Some(Value::Bool(true)) => Ok(Some(false)),
        Some(Value::Object(o)) => {
            if let Some(k) = o.keys().find(|k| k.as_str() != "public") {
                return Err(format!("metrics.{k} is not an option (only metrics.public)"));
            }
            match o.get("public") {
                None => Ok(Some(false)),
                Some(Value::Bool(b)) => Ok(Some(*b)),
                Some(_) => Err("metrics.public must be a boolean".into()),
            }
        }
        Some(_) => Err("metrics must be true, false or { public: boolean }".into()),
    }
}

/// `warmPool[]`: how many new sessions of one architecture and profile wait ready.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WarmSpec {
    pub architecture: crate::agent::Architecture,
    pub agent_profile_ref: String,
    /// Only a `createSession` with exactly these options takes one (none: one with none).
    #[serde(default)]
    pub session_options: Option<serde_json::Map<String, serde_json::Value>>,
    #[serde(default = "one")]
    pub size: usize,
}

impl WarmSpec {
    /// Whether a `createSession` for these asks for what a session of this entry is.
    pub fn fits(
        &self,
        architecture: Option<crate::agent::Architecture>,
        profile: &str,
        options: Option<&serde_json::Map<String, serde_json::Value>>,
    ) -> bool {
        let empty = serde_json::Map::new();
        Some(self.architecture) == architecture
            && self.agent_profile_ref == profile
            && self.session_options.as_ref().unwrap_or(&empty) == options.unwrap_or(&empty)
    }
}

fn one() -> usize {
    1
}

/// At most this many warm sessions per entry: each holds a sandbox.
const MAX_WARM: usize = 16;

fn warm_pool(specs: Vec<WarmSpec>) -> Result<Vec<WarmSpec>, String> {
    for (i, s) in specs.iter().enumerate() {
        if s.agent_profile_ref.is_empty() {
            return Err(format!("warmPool[{i}].agentProfileRef must not be empty"));
        }
        if !(1..=MAX_WARM).contains(&s.size) {
            return Err(format!("warmPool[{i}].size must be between 1 and {MAX_WARM} (got {})", s.size));
        }
        if specs[..i].iter().any(|o| o.fits(Some(s.architecture), &s.agent_profile_ref, s.session_options.as_ref())) {
            return Err(format!("warmPool[{i}] repeats an entry listed before it"));
        }
    }
    Ok(specs)
}

/// `modelProxy`: where the proxy listens, and how sandboxes reach it.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelProxyConfig {
    pub host: String,
    pub port: u16,
    /// Where sandboxes that cannot reach the host's loopback (Modal) find it.
    pub public_url: Option<String>,
    /// No answer from the model API (headers or the next chunk) for this long fails the call.
    pub timeout: Duration,
}

impl Default for ModelProxyConfig {
    fn default() -> Self {
        Self { host: "127.0.0.1".into(), port: 0, public_url: None, timeout: Duration::from_secs(600) }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawModelProxy {
    host: Option<String>,
    port: Option<f64>,
    public_url: Option<String>,
    timeout_ms: Option<f64>,
}

/// `modelProxy`: `false` turns it off (sandboxes get the key, as the reference does).
fn model_proxy(v: Option<serde_json::Value>) -> Result<Option<ModelProxyConfig>, String> {
    let Some(raw) = off_or_object::<RawModelProxy>(v, "modelProxy", "{ publicUrl, host, port }")? else {
        return Ok(None);
    };
    let d = ModelProxyConfig::default();
    let port = match raw.port {
        None => d.port,
        Some(p) if p.fract() == 0.0 && (0.0..=65535.0).contains(&p) => p as u16,
        Some(p) => return Err(format!("modelProxy.port must be a port number (0-65535), got {p}")),
    };
    if let Some(u) = &raw.public_url {
        if !(u.starts_with("http://") || u.starts_with("https://")) || u.len() < 10 {
            return Err(format!("modelProxy.publicUrl must be an http(s) URL, got {u:?}"));
        }
    }
    Ok(Some(ModelProxyConfig {
        host: raw.host.unwrap_or(d.host),
        port,
        public_url: raw.public_url.map(|u| u.trim_end_matches('/').to_string()),
        timeout: positive_ms("modelProxy.timeoutMs", raw.timeout_ms, d.timeout)?,
    }))
}

impl Default for RuntimeOptions {
    fn default() -> Self {
        Self {
            modal: ModalConfig::default(),
            provider: ProviderKind::Local,
            provider_explicit: false,
            idle_timeout: Duration::from_millis(900_000),
            sync_interval: Duration::from_millis(60_000),
            persistence_timeout: Duration::from_millis(30_000),
            max_body_bytes: 10 * 1024 * 1024,
            health_interval: Duration::from_millis(30_000),
            max_workspace_file_bytes: 10 * 1024 * 1024,
            sandbox_root: std::env::temp_dir().join("agent-runtime-native"),
            sandbox_env: SecretEnv::default(),
            sandbox_network: SandboxNetwork::Host,
            allow_unisolated: false,
            host: HostInfo::default(),
            log_level: None,
            shutdown_timeout: Duration::from_millis(30_000),
            turn_timeout: Duration::from_millis(30 * 60_000),
            interrupt_grace: Duration::from_millis(5_000),
            runner_idle: Duration::from_millis(300_000),
            event_log: Some(crate::event_log::LogLimits::default()),
            max_loaded_sessions: 10_000,
            max_active_sandboxes: 100,
            max_queued_messages: 100,
            bundled_mcp_roots: Vec::new(),
            model_proxy: Some(ModelProxyConfig::default()),
            pricing: crate::usage::Pricing::default(),
            budget: crate::usage::Budget::default(),
            warm_pool: Vec::new(),
            metrics_public: None,
            cluster: None,
        }
    }
}

fn count(field: &str, v: Option<f64>, default: usize) -> Result<usize, String> {
    match v {
        None => Ok(default),
        Some(n) if n.is_finite() && n >= 1.0 && n.fract() == 0.0 => Ok(n as usize),
        Some(_) => Err(format!("{field} must be a whole number, at least 1")),
    }
}

fn positive_ms(field: &str, v: Option<f64>, default: Duration) -> Result<Duration, String> {
    match v {
        None => Ok(default),
        // At least 1: intervals of zero length would spin (and tokio refuses them).
        Some(n) if n.is_finite() && n >= 1.0 => Ok(Duration::from_millis(n as u64)),
        Some(_) => Err(format!("{field} must be a number of milliseconds, at least 1")),
    }
}

/// A feature that is on by default: absent → its defaults, `false` → off (`None`), an object →
/// its settings; errors name `field`.
fn off_or_object<T: serde::de::DeserializeOwned + Default>(
    v: Option<serde_json::Value>,
    field: &str,
    shape: &str,
) -> Result<Option<T>, String> {
    match v {
        None => Ok(Some(T::default())),
        Some(serde_json::Value::Bool(false)) => Ok(None),
        Some(v @ serde_json::Value::Object(_)) => serde_path_to_error::deserialize(v).map(Some).map_err(|e| {
            let path = e.path().to_string();
            format!("invalid runtime config at {field}.{path}: {}", e.into_inner())
        }),
        Some(other) => Err(format!("{field} must be false or {shape}, got {other}")),
    }
}

/// `eventLog`: `false` turns the log off; an object sets its bounds.
fn event_log(
    v: Option<serde_json::Value>,
    d: crate::event_log::LogLimits,
) -> Result<Option<crate::event_log::LogLimits>, String> {
    let Some(c) = off_or_object::<EventLogConfig>(v, "eventLog", "{ maxEvents, maxBytes }")? else {
        return Ok(None);
    };
    Ok(Some(crate::event_log::LogLimits {
        max_events: count("eventLog.maxEvents", c.max_events, d.max_events)?,
        max_bytes: count("eventLog.maxBytes", c.max_bytes, d.max_bytes)?,
    }))
}

impl RuntimeOptions {
    /// Parse and validate the JSON options. The error names the offending field.
    pub fn from_json(v: serde_json::Value) -> Result<Self, String> {
        Self::from_json_env(v, std::env::var("NODE_ENV").ok().as_deref())
    }

    /// [`RuntimeOptions::from_json`] with `NODE_ENV` given (tests must not mutate the process env).
    pub fn from_json_env(v: serde_json::Value, node_env: Option<&str>) -> Result<Self, String> {
        let raw: RawOptions = serde_path_to_error::deserialize(v).map_err(|e| {
            let path = e.path().to_string();
            format!("invalid runtime config at {path}: {}", e.into_inner())
        })?;
        let d = Self::default();
        if let Some(level) = &raw.log_level {
            if crate::logging::normalize_level(level).is_none() {
                return Err(format!("logLevel must be one of trace, debug, info, warn, error, fatal (got {level:?})"));
            }
        }
        let max_body = match raw.max_body_bytes {
            None => d.max_body_bytes,
            Some(n) if n.is_finite() && n >= 1.0 => n as usize,
            Some(_) => return Err("maxBodyBytes must be a positive number of bytes".into()),
        };
        let modal = raw.modal.unwrap_or_default();
        let sandbox = raw.sandbox.clone().unwrap_or_default();
        let host = raw.host.unwrap_or_default();
        let mut sandbox_env = host.env.clone();
        sandbox_env.extend(sandbox.env.clone().unwrap_or_default());
        let sandbox_root = sandbox
            .root
            .clone()
            .or_else(|| host.tmp_dir.clone().map(|t| format!("{t}/agent-runtime-native")))
            .map(std::path::PathBuf::from)
            .unwrap_or(d.sandbox_root.clone());
        let max_file = match raw.max_workspace_file_bytes {
            None => d.max_workspace_file_bytes,
            Some(n) if n.is_finite() && n >= 0.0 => n as usize,
            Some(_) => return Err("maxWorkspaceFileBytes must be a non-negative number of bytes".into()),
        };
        let mut bundled_mcp_roots = Vec::new();
        for r in raw.bundled_mcp_roots.unwrap_or_default() {
            if !std::path::Path::new(&r).is_absolute() {
                return Err(format!("bundledMcpRoots must be absolute folder paths (got {r:?})"));
            }
            bundled_mcp_roots.push(r.into());
        }
        let provider = choose_provider(sandbox.provider, &modal, node_env)?;
        let cluster = cluster(raw.cluster, std::env::var("AGENT_RUNTIME_REDIS_URL").ok())?;
        let event_log = event_log(raw.event_log, d.event_log.unwrap_or_default())?;
        if cluster.is_some() && event_log.is_none() {
            return Err("eventLog: false cannot be combined with cluster: the nodes share one numbered event log".into());
        }
        Ok(Self {
            idle_timeout: positive_ms("idleTimeoutMs", raw.idle_timeout_ms, d.idle_timeout)?,
            sync_interval: positive_ms("syncIntervalMs", raw.sync_interval_ms, d.sync_interval)?,
            persistence_timeout: positive_ms(
                "persistenceTimeoutMs",
                raw.persistence_timeout_ms,
                d.persistence_timeout,
            )?,
            max_body_bytes: max_body,
            health_interval: positive_ms("healthCheckIntervalMs", raw.health_check_interval_ms, d.health_interval)?,
            max_workspace_file_bytes: max_file,
            sandbox_root,
            sandbox_env: SecretEnv(sandbox_env),
            sandbox_network: sandbox.network.unwrap_or_default(),
            allow_unisolated: sandbox.allow_unisolated.unwrap_or(false),
            host,
            log_level: raw.log_level,
            shutdown_timeout: positive_ms("shutdownTimeoutMs", raw.shutdown_timeout_ms, d.shutdown_timeout)?,
            turn_timeout: positive_ms("turnTimeoutMs", raw.turn_timeout_ms, d.turn_timeout)?,
            interrupt_grace: positive_ms("interruptGraceMs", raw.interrupt_grace_ms, d.interrupt_grace)?,
            runner_idle: positive_ms("runnerIdleMs", raw.runner_idle_ms, d.runner_idle)?,
            event_log,
            model_proxy: model_proxy(raw.model_proxy)?,
            pricing: crate::usage::Pricing::with_overrides(raw.pricing.unwrap_or_default()),
            budget: match raw.budget {
                Some(b) => b.validated("budget")?,
                None => d.budget,
            },
            max_loaded_sessions: count("maxLoadedSessions", raw.max_loaded_sessions, d.max_loaded_sessions)?,
            max_active_sandboxes: count("maxActiveSandboxes", raw.max_active_sandboxes, d.max_active_sandboxes)?,
            max_queued_messages: count("maxQueuedMessages", raw.max_queued_messages, d.max_queued_messages)?,
            bundled_mcp_roots,
            warm_pool: warm_pool(raw.warm_pool.unwrap_or_default())?,
            metrics_public: metrics(raw.metrics)?,
            cluster,
            modal,
            provider_explicit: sandbox.provider.is_some(),
            provider,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn cluster_options_are_checked_and_urls_never_show_their_password() {
        let c = cluster(
            Some(RawCluster { redis_url: Some("redis://:s3cret@h:6379/0".into()), node_id: Some("a-1".into()), lease_ttl_ms: None }),
            None,
        )
        .unwrap()
        .unwrap();
        assert_eq!((c.node_id.as_str(), c.lease_ttl), ("a-1", Duration::from_secs(15)));
        assert!(!format!("{c:?}").contains("s3cret"));
        assert_eq!(redact_url("redis://user:pw@h:1/2"), "redis://user:***@h:1/2");
        assert_eq!(redact_url("redis://pw@h"), "redis://***@h");
        assert_eq!(redact_url("redis://h:1"), "redis://h:1");
        // From the environment alone, with a generated node id.
        let c = cluster(None, Some("redis://h".into())).unwrap().unwrap();
        assert!(!c.node_id.is_empty() && !c.node_id.contains('/'));
        assert_eq!(cluster(None, None).unwrap(), None);
        for (raw, field) in [
            (RawCluster { redis_url: None, ..Default::default() }, "cluster.redisUrl is required"),
            (RawCluster { redis_url: Some("http://pw@h".into()), ..Default::default() }, "must start with redis://"),
            (RawCluster { redis_url: Some("redis://h".into()), node_id: Some("a/b".into()), ..Default::default() }, "cluster.nodeId"),
            (RawCluster { redis_url: Some("redis://h".into()), lease_ttl_ms: Some(10.0), ..Default::default() }, "cluster.leaseTtlMs"),
        ] {
            let e = cluster(Some(raw), None).unwrap_err();
            assert!(e.contains(field) && !e.contains("pw@"), "{e}");
        }
        let e = RuntimeOptions::from_json_env(json!({ "cluster": { "redisUrl": "redis://h" }, "eventLog": false }), None).unwrap_err();
        assert!(e.contains("eventLog: false cannot be combined with cluster"), "{e}");
    }

    #[test]
    fn warm_pool_entries_are_checked_by_name() {
        let o = RuntimeOptions::from_json(
            json!({"warmPool": [{"architecture": "claude-agent-sdk", "agentProfileRef": "default"}]}),
        )
        .unwrap();
        assert_eq!(o.warm_pool[0].size, 1);
        assert!(o.warm_pool[0].fits(
            Some(crate::agent::Architecture::ClaudeAgentSdk),
            "default",
            Some(&Default::default())
        ));
        assert!(!o.warm_pool[0].fits(Some(crate::agent::Architecture::OpenCode), "default", None));
        for (bad, says) in [
            (
                json!([{"architecture": "claude-agent-sdk", "agentProfileRef": "default", "size": 0}]),
                "warmPool[0].size",
            ),
            (json!([{"architecture": "claude-agent-sdk", "agentProfileRef": ""}]), "warmPool[0].agentProfileRef"),
            (json!([{"architecture": "gpt", "agentProfileRef": "default"}]), "warmPool[0].architecture"),
            (
                json!([{"architecture": "opencode", "agentProfileRef": "a"}, {"architecture": "opencode", "agentProfileRef": "a", "size": 2}]),
                "warmPool[1] repeats",
            ),
            (json!([{"architecture": "opencode", "agentProfileRef": "a", "sise": 2}]), "sise"),
        ] {
            let e = RuntimeOptions::from_json(json!({ "warmPool": bad })).unwrap_err();
            assert!(e.contains(says), "{e}");
        }
    }

    #[test]
    fn defaults_and_provider_rule() {
        let o = RuntimeOptions::from_json(json!({})).unwrap();
        assert_eq!(o.provider, ProviderKind::Local);
        assert_eq!(o.idle_timeout, Duration::from_secs(900));
        let o = RuntimeOptions::from_json(json!({"modal": {"tokenId": "ak-1", "tokenSecret": "as-2", "appName": "x"}}))
            .unwrap();
        assert_eq!(o.provider, ProviderKind::Modal);
        let o = RuntimeOptions::from_json(json!({"modal": {"tokenId": "", "tokenSecret": "s"}})).unwrap();
        assert_eq!(o.provider, ProviderKind::Local);
    }

    #[test]
    fn missing_modal_tokens_fall_back_to_local_only_outside_production() {
        let prod = Some("production");
        let empty = json!({"modal": {"tokenId": "", "tokenSecret": ""}});
        for env in [None, Some("development"), Some("test")] {
            let o = RuntimeOptions::from_json_env(empty.clone(), env).unwrap();
            assert_eq!((o.provider, o.provider_explicit), (ProviderKind::Local, false), "{env:?}");
        }
        for config in [empty.clone(), json!({"modal": {"tokenId": "ak-1"}}), json!({})] {
            let e = RuntimeOptions::from_json_env(config.clone(), prod).unwrap_err();
            assert!(e.contains("modal.tokenId") && e.contains("sandbox.provider: \"local\""), "{config}: {e}");
            assert!(e.contains("run agents on this host"), "{e}");
        }
        let e =
            RuntimeOptions::from_json_env(json!({"sandbox": {"provider": "modal"}}), Some(" Production ")).unwrap_err();
        assert!(e.contains("modal.tokenSecret"), "{e}");
        // Deliberate choices stay possible in production.
        let local = json!({"modal": {"tokenId": ""}, "sandbox": {"provider": "local"}});
        assert_eq!(RuntimeOptions::from_json_env(local, prod).unwrap().provider, ProviderKind::Local);
        let modal = json!({"modal": {"tokenId": "ak-1", "tokenSecret": "as-2"}});
        assert_eq!(RuntimeOptions::from_json_env(modal, prod).unwrap().provider, ProviderKind::Modal);
    }

    #[test]
    fn errors_name_the_field() {
        let e = RuntimeOptions::from_json(json!({"idleTimeoutMs": -1})).unwrap_err();
        assert!(e.contains("idleTimeoutMs"), "{e}");
        let e = RuntimeOptions::from_json(json!({"modal": {"tokenId": 5}})).unwrap_err();
        assert!(e.contains("modal.tokenId"), "{e}");
        let e = RuntimeOptions::from_json(json!({"logLevel": "loud"})).unwrap_err();
        assert!(e.contains("logLevel"), "{e}");
        // Below one millisecond an interval would be zero (tokio panics on that).
        for field in [
            "healthCheckIntervalMs",
            "syncIntervalMs",
            "turnTimeoutMs",
            "shutdownTimeoutMs",
            "interruptGraceMs",
            "runnerIdleMs",
        ] {
            let e = RuntimeOptions::from_json(json!({ field: 0.5 })).unwrap_err();
            assert!(e.contains(field), "{e}");
        }
        let e = RuntimeOptions::from_json(json!({"eventLog": {"maxEvents": 0}})).unwrap_err();
        assert!(e.contains("eventLog.maxEvents"), "{e}");
        let e = RuntimeOptions::from_json(json!({"eventLog": {"maxBytes": "big"}})).unwrap_err();
        assert!(e.contains("eventLog") && e.contains("maxBytes"), "{e}");
        let e = RuntimeOptions::from_json(json!({"eventLog": true})).unwrap_err();
        assert!(e.contains("eventLog must be false"), "{e}");
        assert_eq!(RuntimeOptions::from_json(json!({"eventLog": false})).unwrap().event_log, None);
        for field in ["maxLoadedSessions", "maxActiveSandboxes", "maxQueuedMessages"] {
            let e = RuntimeOptions::from_json(json!({ field: 0 })).unwrap_err();
            assert!(e.contains(field), "{e}");
            let e = RuntimeOptions::from_json(json!({ field: 1.5 })).unwrap_err();
            assert!(e.contains(field), "{e}");
        }
        let e = RuntimeOptions::from_json(json!({"bundledMcpRoots": ["mcps"]})).unwrap_err();
        assert!(e.contains("bundledMcpRoots"), "{e}");
        let o = RuntimeOptions::from_json(json!({"bundledMcpRoots": ["/srv/mcps"]})).unwrap();
        assert_eq!(o.bundled_mcp_roots, [std::path::PathBuf::from("/srv/mcps")]);
        let e = RuntimeOptions::from_json(json!({"sandbox": {"network": "bridge"}})).unwrap_err();
        assert!(e.contains("sandbox.network") && e.contains("none"), "{e}");
        let e = RuntimeOptions::from_json(json!({"sandbox": {"allowUnisolated": "yes"}})).unwrap_err();
        assert!(e.contains("sandbox.allowUnisolated"), "{e}");
    }

    #[test]
    fn sandbox_isolation_options() {
        let o = RuntimeOptions::from_json(json!({})).unwrap();
        assert_eq!((o.sandbox_network, o.allow_unisolated), (SandboxNetwork::Host, false));
        let o = RuntimeOptions::from_json(json!({"sandbox": {"network": "none", "allowUnisolated": true}})).unwrap();
        assert_eq!((o.sandbox_network, o.allow_unisolated), (SandboxNetwork::None, true));
    }

    #[test]
    fn debug_hides_secret() {
        let o = RuntimeOptions::from_json(json!({"modal": {"tokenId": "ak-1", "tokenSecret": "as-secret"}})).unwrap();
        let s = format!("{o:?}");
        assert!(!s.contains("as-secret") && !s.contains("ak-1"), "{s}");
    }
}
