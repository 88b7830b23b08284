//! Session leases: taking, renewing, checking (the fence) and releasing them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::Value;

use super::{node_of, redis_io, scripts, Cluster};
use crate::error::{Error, Result};
use crate::sync::Locked as _;

/// Who holds a session when this node could not take it.
#[derive(Debug, Clone, PartialEq)]
pub enum Taken {
    /// This node holds it now (or held it already).
    Ours,
    /// Another node does.
    By(String),
}

impl Cluster {
    /// Take session `id` for this node unless another one holds it.
    pub async fn acquire(&self, id: &str) -> Result<Taken> {
        if self.holds(id) {
            return Ok(Taken::Ours);
        }
        let ttl = self.config.lease_ttl.as_millis() as u64;
        // Twice is harmless: a second taking by the same node only moves the counter on.
        let answer: Value = self
            .with_conn(|mut c| async move {
                scripts::acquire()
                    .key(Self::lease_key(id))
                    .key(Self::fence_key(id))
                    .arg(self.node_id())
                    .arg(ttl)
                    .invoke_async(&mut c)
                    .await
            })
            .await
            .map_err(|e| self.unavailable(e))?;
        self.set_redis_up(true);
        let a = redis_io::array(&answer);
        let (won, token) = match a {
            [won, token] => (redis_io::int(won) == Some(1), redis_io::text(token).unwrap_or_default()),
            _ => return Err(Error::Cluster(format!("unexpected answer from the lease script: {answer:?}"))),
        };
        if !won {
            return Ok(Taken::By(node_of(&token).to_string()));
        }
        self.owned.locked().insert(id.to_string(), token);
        tracing::debug!(session_id = id, node_id = %self.config.node_id, "lease taken");
        Ok(Taken::Ours)
    }

    /// The node holding session `id` now, if any.
    pub async fn holder(&self, id: &str) -> Result<Option<String>> {
        if self.holds(id) {
            return Ok(Some(self.node_id().to_string()));
        }
        let v: Option<String> = self
            .with_conn(|mut c| async move { redis::cmd("GET").arg(Self::lease_key(id)).query_async(&mut c).await })
            .await
            .map_err(|e| self.unavailable(e))?;
        self.set_redis_up(true);
        Ok(v.map(|t| node_of(&t).to_string()))
    }

    /// The fence: does this node still hold session `id`? Checked in Redis before each write
    /// to persistence; renews the lease on the way.
    pub async fn check(&self, id: &str) -> Result<()> {
        let Some(token) = self.token(id) else {
            return Err(Error::Cluster(format!("this node ({}) does not hold session {id}", self.node_id())));
        };
        let held = self.renew(&[(id.to_string(), token)]).await?;
        if held.first() == Some(&true) {
            return Ok(());
        }
        self.lost(id);
        Err(Error::Cluster(format!("this node ({}) lost session {id} to another node", self.node_id())))
    }

    /// Let go of session `id` once every event it queued is published.
    pub fn release(&self, id: &str) {
        if let Some(token) = self.owned.locked().remove(id) {
            let _ = self.publisher.send(super::log::Outgoing::Release { session: id.to_string(), token });
        }
    }

    async fn renew(&self, leases: &[(String, String)]) -> Result<Vec<bool>> {
        let mut inv = scripts::renew().prepare_invoke();
        inv.arg(self.config.lease_ttl.as_millis() as u64);
        for (id, token) in leases {
            inv.arg(Self::lease_key(id)).arg(Self::fence_key(id)).arg(token);
        }
        let inv = &inv;
        let answer: Value =
            self.with_conn(|mut c| async move { inv.invoke_async(&mut c).await }).await.map_err(|e| self.unavailable(e))?;
        self.set_redis_up(true);
        Ok(redis_io::array(&answer).iter().map(|v| redis_io::int(v) == Some(1)).collect())
    }

    /// Renew every lease a third of the TTL apart (sooner while Redis fails); a lease found
    /// taken by another node is lost.
    pub(super) async fn renew_loop(self: Arc<Self>) {
        let every = self.config.lease_ttl / 3;
        let mut last_ok = Instant::now();
        loop {
            let leases: Vec<(String, String)> =
                self.owned.locked().iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            let pause = match self.renew_all(&leases).await {
                Ok(()) => {
                    last_ok = Instant::now();
                    every
                }
                Err(e) => {
                    if last_ok.elapsed() > self.config.lease_ttl {
                        tracing::warn!(error = %e, "leases not renewed for longer than their TTL: other nodes may take these sessions once Redis is back");
                    }
                    Duration::from_millis(500).min(every)
                }
            };
            tokio::time::sleep(pause).await;
        }
    }

    async fn renew_all(&self, leases: &[(String, String)]) -> Result<()> {
        for chunk in leases.chunks(200) {
            let held = self.renew(chunk).await?;
            for ((id, token), held) in chunk.iter().zip(held) {
                // Released or retaken in the meantime: not this round's to judge.
                if !held && self.token(id).as_deref() == Some(token) {
                    self.lost(id);
                }
            }
        }
        if leases.is_empty() {
            let mut c = self.conn()?;
            redis::cmd("PING").query_async::<String>(&mut c).await.map_err(|e| self.unavailable(e))?;
            self.set_redis_up(true);
        }
        Ok(())
    }

    pub(super) fn unavailable(&self, e: redis::RedisError) -> Error {
        self.set_redis_up(false);
        Error::Cluster(format!("Redis is unreachable ({e}); the cluster cannot decide who holds sessions now"))
    }
}
