//! The persistence side of the fence: every write for a session first checks, in Redis, that
//! this node's lease token still holds it. A node cut off past its lease (paused, partitioned)
//! finds another token there and writes nothing; the session's outbox keeps the write and the
//! node drops the session.

use std::sync::Arc;

use async_trait::async_trait;

use super::Cluster;
use crate::persistence::{
    AgentProfile, AgentProfileSummary, PResult, PersistenceAdapter, PersistenceError, SessionRecord,
    SessionRecordUpdate, StoredSession, WorkspaceFile,
};

pub struct Fenced {
    inner: Arc<dyn PersistenceAdapter>,
    cluster: Arc<Cluster>,
}

impl Fenced {
    pub fn new(inner: Arc<dyn PersistenceAdapter>, cluster: Arc<Cluster>) -> Self {
        Self { inner, cluster }
    }

    async fn check(&self, method: &'static str, session_id: &str) -> PResult<()> {
        self.cluster.check(session_id).await.map_err(|e| PersistenceError::Failed { method, message: e.to_string() })
    }
}

#[async_trait]
impl PersistenceAdapter for Fenced {
    async fn list_all_sessions(&self) -> PResult<Vec<SessionRecord>> {
        self.inner.list_all_sessions().await
    }
    async fn load_session(&self, session_id: &str) -> PResult<Option<StoredSession>> {
        self.inner.load_session(session_id).await
    }
    /// A new session is taken as it is first stored (its id is new: nobody else holds it).
    async fn create_session_record(&self, record: &SessionRecord) -> PResult<()> {
        let method = "createSessionRecord";
        match self.cluster.acquire(&record.session_id).await {
            Ok(super::lease::Taken::Ours) => {}
            Ok(super::lease::Taken::By(node)) => {
                let message = format!("session {} is held by node {node}", record.session_id);
                return Err(PersistenceError::Failed { method, message });
            }
            Err(e) => return Err(PersistenceError::Failed { method, message: e.to_string() }),
        }
        self.inner.create_session_record(record).await
    }
    async fn update_session_record(&self, session_id: &str, updates: &SessionRecordUpdate) -> PResult<()> {
        self.check("updateSessionRecord", session_id).await?;
        self.inner.update_session_record(session_id, updates).await
    }
    async fn save_transcript(&self, session_id: &str, raw_transcript: &str) -> PResult<()> {
        self.check("saveTranscript", session_id).await?;
        self.inner.save_transcript(session_id, raw_transcript).await
    }
    async fn save_workspace_file(&self, session_id: &str, file: &WorkspaceFile) -> PResult<()> {
        self.check("saveWorkspaceFile", session_id).await?;
        self.inner.save_workspace_file(session_id, file).await
    }
    async fn delete_session_file(&self, session_id: &str, path: &str) -> PResult<()> {
        self.check("deleteSessionFile", session_id).await?;
        self.inner.delete_session_file(session_id, path).await
    }
    async fn list_agent_profiles(&self) -> PResult<Vec<AgentProfileSummary>> {
        self.inner.list_agent_profiles().await
    }
    async fn load_agent_profile(&self, profile_id: &str) -> PResult<Option<AgentProfile>> {
        self.inner.load_agent_profile(profile_id).await
    }
}
