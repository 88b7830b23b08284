//! Forwarding: a request for a session another node holds is put on that node's inbox stream;
//! the owner runs it (only while it still holds the session, and only before the request's
//! deadline) and puts the answer on the asker's inbox.
//!
//! At most once: a request is never run after its deadline, nor by a node that lost the
//! session, nor retried by the asker. When the owner does not answer (its lease went away or
//! the wait ran out) the asker gets [`ForwardError::Unreachable`].

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use super::{redis_io, Cluster};
use crate::sync::Locked as _;

/// How long an owner has to answer a forwarded request.
pub const FORWARD_TIMEOUT: Duration = Duration::from_secs(60);
/// Inbox entries kept per node (approximately).
const INBOX_LENGTH: u64 = 10_000;
/// Largest answer body sent back (a workspace archive is the big one).
const MAX_ANSWER_BYTES: usize = 64 * 1024 * 1024;

#[derive(Debug, Clone)]
pub struct ForwardRequest {
    pub session: String,
    pub method: String,
    /// Origin-form (`/api/sessions/x?y`).
    pub url: String,
    /// Flat `[name, value, ...]`.
    pub headers: Vec<String>,
    pub body: Bytes,
}

#[derive(Debug, Clone)]
pub struct ForwardResponse {
    pub status: u16,
    pub headers: Vec<String>,
    pub body: Bytes,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ForwardError {
    /// The owner let go of the session before running the request: route it again.
    NotOwner,
    /// The owner did not answer.
    Unreachable(String),
}

pub(super) enum Reply {
    Answer(ForwardResponse),
    NotOwner,
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

impl Cluster {
    /// Run `req` on `owner` and return its answer.
    pub async fn forward(&self, owner: &str, req: ForwardRequest) -> Result<ForwardResponse, ForwardError> {
        let unreachable = |why: String| ForwardError::Unreachable(why);
        // The request itself is sent once (at most once); a ping first heals a connection that
        // Redis dropped (a restart), so that one send does not fail for nothing.
        self.with_conn(|mut c| async move { redis::cmd("PING").query_async::<String>(&mut c).await })
            .await
            .map_err(|e| unreachable(self.unavailable(e).to_string()))?;
        let mut c = self.conn().map_err(|e| unreachable(e.to_string()))?;
        let id = uuid::Uuid::new_v4().simple().to_string();
        let (tx, mut rx) = tokio::sync::oneshot::channel();
        self.pending.locked().insert(id.clone(), tx);
        let _cleanup = Pending { cluster: self, id: id.clone() };
        let headers = serde_json::to_string(&req.headers).unwrap_or_else(|_| "[]".into());
        let deadline = now_ms() + FORWARD_TIMEOUT.as_millis() as u64;
        let sent: redis::RedisResult<String> = redis::cmd("XADD")
            .arg(self.inbox_key(owner))
            .arg("MAXLEN")
            .arg("~")
            .arg(INBOX_LENGTH)
            .arg("*")
            .arg("k")
            .arg("req")
            .arg("id")
            .arg(&id)
            .arg("from")
            .arg(self.node_id())
            .arg("s")
            .arg(&req.session)
            .arg("m")
            .arg(&req.method)
            .arg("u")
            .arg(&req.url)
            .arg("h")
            .arg(headers)
            .arg("b")
            .arg(req.body.as_ref())
            .arg("d")
            .arg(deadline)
            .query_async(&mut c)
            .await;
        sent.map_err(|e| unreachable(self.unavailable(e).to_string()))?;
        self.expire_inbox(&mut c, owner).await;
        let started = tokio::time::Instant::now();
        loop {
            tokio::select! {
                reply = &mut rx => {
                    return match reply {
                        Ok(Reply::Answer(a)) => Ok(a),
                        Ok(Reply::NotOwner) => Err(ForwardError::NotOwner),
                        Err(_) => Err(unreachable("the forwarding node is shutting down".into())),
                    };
                }
                _ = tokio::time::sleep(Duration::from_millis(250)) => {}
            }
            // An owner that died or was cut off loses its lease: stop waiting for it then.
            match self.holder(&req.session).await {
                Ok(Some(n)) if n == owner => {}
                Ok(_) => return Err(unreachable(format!("node {owner} stopped holding session {} before answering", req.session))),
                Err(e) => return Err(unreachable(e.to_string())),
            }
            if started.elapsed() > FORWARD_TIMEOUT {
                return Err(unreachable(format!("node {owner} did not answer within {} s", FORWARD_TIMEOUT.as_secs())));
            }
        }
    }

    /// An inbox goes an hour after its last message (node ids of processes long gone).
    async fn expire_inbox(&self, c: &mut redis::aio::ConnectionManager, node: &str) {
        let _: redis::RedisResult<i64> = redis::cmd("EXPIRE").arg(self.inbox_key(node)).arg(3600).query_async(c).await;
    }

    /// An inbox entry: a request to run, or the answer to one this node sent.
    pub(super) fn on_inbox(self: Arc<Self>, e: redis_io::Entry) {
        match e.text("k") {
            "rep" => {
                let tx = self.pending.locked().remove(e.text("id"));
                if let Some(tx) = tx {
                    let reply = match e.text("st").parse::<u16>() {
                        Ok(0) | Err(_) => Reply::NotOwner,
                        Ok(status) => Reply::Answer(ForwardResponse {
                            status,
                            headers: serde_json::from_str(e.text("h")).unwrap_or_default(),
                            body: Bytes::copy_from_slice(e.get("b").unwrap_or_default()),
                        }),
                    };
                    let _ = tx.send(reply);
                }
            }
            "req" => {
                tokio::spawn(async move { self.run_forwarded(e).await });
            }
            _ => {}
        }
    }

    async fn run_forwarded(&self, e: redis_io::Entry) {
        let deadline: u64 = e.text("d").parse().unwrap_or(0);
        if now_ms() > deadline {
            // The asker has given up: running it now could run it twice.
            tracing::info!(from = e.text("from"), "dropping a forwarded request past its deadline");
            return;
        }
        let req = ForwardRequest {
            session: e.text("s").to_string(),
            method: e.text("m").to_string(),
            url: e.text("u").to_string(),
            headers: serde_json::from_str(e.text("h")).unwrap_or_default(),
            body: Bytes::copy_from_slice(e.get("b").unwrap_or_default()),
        };
        let handler = self.handler.locked().clone();
        let answer = match handler {
            Some(h) if self.holds(&req.session) => Some(h(req).await),
            _ => None,
        };
        let Ok(mut c) = self.conn() else { return };
        let mut cmd = redis::cmd("XADD");
        cmd.arg(self.inbox_key(e.text("from")))
            .arg("MAXLEN")
            .arg("~")
            .arg(INBOX_LENGTH)
            .arg("*")
            .arg("k")
            .arg("rep")
            .arg("id")
            .arg(e.text("id"));
        match &answer {
            Some(a) if a.body.len() <= MAX_ANSWER_BYTES => {
                let headers = serde_json::to_string(&a.headers).unwrap_or_else(|_| "[]".into());
                cmd.arg("st").arg(a.status).arg("h").arg(headers).arg("b").arg(a.body.as_ref());
            }
            Some(a) => {
                let body = serde_json::json!({
                    "error": format!("The answer ({} bytes) is larger than a forwarded answer may be ({MAX_ANSWER_BYTES} bytes)", a.body.len()),
                    "code": "ANSWER_TOO_LARGE",
                });
                cmd.arg("st").arg(502).arg("h").arg(r#"["content-type","application/json"]"#).arg("b").arg(body.to_string());
            }
            None => {
                cmd.arg("st").arg(0);
            }
        }
        if let Err(err) = cmd.query_async::<String>(&mut c).await {
            tracing::warn!(error = %err, to = e.text("from"), "could not send the answer to a forwarded request");
        }
        self.expire_inbox(&mut c, e.text("from")).await;
    }
}

/// Takes the wait out of the pending table however `forward` ends.
struct Pending<'a> {
    cluster: &'a Cluster,
    id: String,
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        self.cluster.pending.locked().remove(&self.id);
    }
}
