//! Several servers, one system: the runtime in N processes sharing one Redis.
//!
//! - **Ownership** ([`lease`]): a loaded session is held by exactly one node through a lease
//!   (`<prefix>lease:<id>`, TTL renewed every third of it) whose token carries a fence counter;
//!   persistence writes ([`fence::Fenced`]) and event publishes (checked inside Redis by the
//!   publish script) need the token to still hold the lease.
//! - **Events** ([`log`]): the owner numbers a session's events as one node does; each is
//!   appended to the session's Redis stream (the shared log: replay from any node) and to the
//!   bus stream every node reads, which hands it to that node's `EventBus` as a remote event.
//! - **Forwarding** ([`forward`]): a request for a session another node holds goes to that
//!   node's inbox stream and is answered with its result.
//!
//! Streams rather than pub/sub everywhere: a reader that lost its connection continues from
//! the last id it read, so a Redis restart or a slow node loses nothing.

pub mod fence;
pub mod forward;
pub mod lease;
pub mod log;
mod redis_io;

/// The Lua scripts (`lua/*.lua`), each loaded into Redis on first use (EVALSHA after that).
mod scripts {
    use redis::Script;

    macro_rules! scripts {
        ($($name:ident => $file:literal),* $(,)?) => {$(
            pub(super) fn $name() -> &'static Script {
                static S: std::sync::OnceLock<Script> = std::sync::OnceLock::new();
                S.get_or_init(|| Script::new(include_str!($file)))
            }
        )*};
    }

    scripts! {
        acquire => "lua/acquire.lua",
        renew => "lua/renew.lua",
        release => "lua/release.lua",
        publish => "lua/publish.lua",
        read => "lua/read.lua",
    }
}

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use futures::future::BoxFuture;
use redis::aio::ConnectionManager;
use tokio::sync::mpsc;

use crate::config::{redact_url, ClusterConfig};
use crate::error::{Error, Result};
use crate::events::EventBus;
use crate::sync::Locked as _;

pub use forward::{ForwardError, ForwardRequest, ForwardResponse};

/// Key prefix of everything the runtime keeps in Redis.
pub const PREFIX: &str = "arn:";

/// Runs a request forwarded by another node (the REST router, without auth: the forwarding
/// node checked it).
pub type Handler = Arc<dyn Fn(ForwardRequest) -> BoxFuture<'static, ForwardResponse> + Send + Sync>;
/// Told when a session's lease was lost (another node holds the session now).
pub type LostHook = Arc<dyn Fn(String) + Send + Sync>;

pub struct Cluster {
    pub config: ClusterConfig,
    client: redis::Client,
    /// Commands (leases, publishes, reads, forwarding).
    conn: tokio::sync::OnceCell<ConnectionManager>,
    redis_up: AtomicBool,
    /// Sessions this node holds: id → lease token.
    owned: Mutex<HashMap<String, String>>,
    publisher: mpsc::UnboundedSender<log::Outgoing>,
    publisher_rx: Mutex<Option<mpsc::UnboundedReceiver<log::Outgoing>>>,
    pending: Mutex<HashMap<String, tokio::sync::oneshot::Sender<forward::Reply>>>,
    handler: Mutex<Option<Handler>>,
    on_lost: OnceLock<LostHook>,
    bus: OnceLock<EventBus>,
    local_log: OnceLock<Arc<crate::event_log::MemoryLog>>,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    stopped: AtomicBool,
}

impl Cluster {
    pub fn new(config: ClusterConfig) -> std::result::Result<Arc<Self>, String> {
        let client = redis::Client::open(config.redis_url.as_str())
            .map_err(|e| format!("cluster.redisUrl {} is not a Redis URL: {e}", redact_url(&config.redis_url)))?;
        let (tx, rx) = mpsc::unbounded_channel();
        Ok(Arc::new(Self {
            config,
            client,
            conn: Default::default(),
            redis_up: AtomicBool::new(false),
            owned: Default::default(),
            publisher: tx,
            publisher_rx: Mutex::new(Some(rx)),
            pending: Default::default(),
            handler: Default::default(),
            on_lost: Default::default(),
            bus: Default::default(),
            local_log: Default::default(),
            tasks: Default::default(),
            stopped: AtomicBool::new(false),
        }))
    }

    pub fn node_id(&self) -> &str {
        &self.config.node_id
    }

    /// The event bus this node's remote events go to, and its copy of the log.
    pub(crate) fn attach(&self, bus: EventBus, local: Arc<crate::event_log::MemoryLog>) {
        let _ = self.bus.set(bus);
        let _ = self.local_log.set(local);
    }

    pub fn set_handler(&self, handler: Handler) {
        *self.handler.locked() = Some(handler);
    }

    pub fn on_lost(&self, hook: LostHook) {
        let _ = self.on_lost.set(hook);
    }

    /// Connect (refused with the URL, password hidden, when Redis does not answer) and start
    /// the reader, the publisher and lease renewal.
    pub async fn start(self: &Arc<Self>) -> Result<()> {
        let url = redact_url(&self.config.redis_url);
        let unreachable = |e: redis::RedisError| Error::Config(format!("cannot reach Redis at {url} (cluster.redisUrl): {e}"));
        let conn = redis_io::manager(&self.client, Duration::from_secs(3)).await.map_err(unreachable)?;
        let mut c = conn.clone();
        redis::cmd("PING").query_async::<String>(&mut c).await.map_err(unreachable)?;
        let reader_conn = redis_io::manager(&self.client, Duration::from_secs(10)).await.map_err(unreachable)?;
        let start_ids = self.stream_tails(&mut c).await.map_err(unreachable)?;
        let _ = self.conn.set(conn);
        self.redis_up.store(true, Ordering::SeqCst);
        let rx = self.publisher_rx.locked().take().ok_or_else(|| Error::Config("cluster started twice".into()))?;
        let tasks = vec![
            tokio::spawn(self.clone().read_loop(reader_conn, start_ids)),
            tokio::spawn(self.clone().publish_loop(rx)),
            tokio::spawn(self.clone().renew_loop()),
        ];
        self.tasks.locked().extend(tasks);
        tracing::info!(node_id = %self.config.node_id, redis = %url, "cluster node started");
        Ok(())
    }

    /// Where the bus and this node's inbox end now: reading starts after them.
    async fn stream_tails(&self, c: &mut ConnectionManager) -> redis::RedisResult<[String; 2]> {
        let bus = redis_io::last_id(c, &self.bus_key()).await?;
        let inbox = redis_io::last_id(c, &self.inbox_key(self.node_id())).await?;
        Ok([bus, inbox])
    }

    /// After the node's sessions are unloaded (their events queued before their releases):
    /// publish what is queued, then stop.
    pub async fn stop(&self) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        // Never started (Redis was unreachable): nothing is sending.
        let started = self.publisher_rx.locked().is_none();
        if started && self.publisher.send(log::Outgoing::Flush(tx)).is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(5), rx).await;
        }
        self.stopped.store(true, Ordering::SeqCst);
        for t in self.tasks.locked().drain(..) {
            t.abort();
        }
        self.handler.locked().take();
    }

    pub fn redis_up(&self) -> bool {
        self.redis_up.load(Ordering::SeqCst)
    }

    fn set_redis_up(&self, up: bool) {
        if self.redis_up.swap(up, Ordering::SeqCst) != up {
            if up {
                tracing::info!(node_id = %self.config.node_id, "Redis reachable again");
            } else {
                tracing::warn!(node_id = %self.config.node_id, redis = %redact_url(&self.config.redis_url), "Redis unreachable; retrying");
            }
        }
    }

    /// `sessions:changed` for the other nodes' clients.
    pub fn list_changed(&self) {
        let _ = self.publisher.send(log::Outgoing::ListChanged);
    }

    pub fn owned_count(&self) -> usize {
        self.owned.locked().len()
    }

    pub fn holds(&self, session_id: &str) -> bool {
        self.owned.locked().contains_key(session_id)
    }

    fn token(&self, session_id: &str) -> Option<String> {
        self.owned.locked().get(session_id).cloned()
    }

    fn conn(&self) -> Result<ConnectionManager> {
        self.conn.get().cloned().ok_or_else(|| Error::Config("the cluster is not started".into()))
    }

    /// Run `f` on the command connection, again (up to 3 times) when the connection was lost:
    /// the first command after a Redis restart fails and makes the manager reconnect. Only for
    /// commands that may run twice.
    async fn with_conn<T, F, Fut>(&self, mut f: F) -> redis::RedisResult<T>
    where
        F: FnMut(ConnectionManager) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let mut tries = 0u32;
        loop {
            let c = self.conn().map_err(|e| redis::RedisError::from(std::io::Error::other(e.to_string())))?;
            match f(c).await {
                Err(e) if tries < 3 && (e.is_io_error() || e.is_connection_dropped() || e.is_timeout()) => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(100 * u64::from(tries))).await;
                }
                r => return r,
            }
        }
    }

    fn bus_key(&self) -> String {
        format!("{PREFIX}bus")
    }

    fn inbox_key(&self, node: &str) -> String {
        format!("{PREFIX}inbox:{node}")
    }

    fn lease_key(id: &str) -> String {
        format!("{PREFIX}lease:{id}")
    }

    fn fence_key(id: &str) -> String {
        format!("{PREFIX}fence:{id}")
    }

    /// The session was lost to another node: this one stops acting for it.
    fn lost(&self, session_id: &str) {
        if self.owned.locked().remove(session_id).is_some() {
            tracing::warn!(session_id, node_id = %self.config.node_id, "lease lost: another node holds this session now");
            if let Some(hook) = self.on_lost.get() {
                hook(session_id.to_string());
            }
        }
    }
}

/// The node that holds a lease token (`<node>/<n>`).
fn node_of(token: &str) -> &str {
    token.rsplit_once('/').map_or(token, |(n, _)| n)
}
