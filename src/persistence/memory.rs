//! An in-memory [`PersistenceAdapter`] for Rust tests: stores everything and logs each call.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Mutex;

use async_trait::async_trait;

use super::*;

#[derive(Default)]
pub struct MemoryAdapter {
    pub sessions: Mutex<BTreeMap<String, StoredSession>>,
    pub profiles: Mutex<Vec<AgentProfile>>,
    /// Method names in call order.
    pub calls: Mutex<Vec<String>>,
    /// This many upcoming writes fail (fault injection).
    pub fail_writes: AtomicU32,
    /// Every write takes this long.
    pub write_delay_ms: AtomicU64,
}

impl MemoryAdapter {
    pub fn with_profile(id: &str) -> Self {
        let a = Self::default();
        a.profiles.lock().unwrap().push(AgentProfile {
            id: id.into(),
            name: format!("Profile {id}"),
            default_workspace_files: None,
            raw: Default::default(),
        });
        a
    }

    pub fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }

    fn log(&self, m: &str) {
        self.calls.lock().unwrap().push(m.to_string());
    }

    /// Log a write, wait the configured delay, and fail it if failures are still owed.
    async fn write(&self, method: &'static str) -> PResult<()> {
        self.log(method);
        let delay = self.write_delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
        }
        let failing = self.fail_writes.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok();
        if failing {
            return Err(PersistenceError::Failed { method, message: "injected failure".into() });
        }
        Ok(())
    }
}

#[async_trait]
impl PersistenceAdapter for MemoryAdapter {
    async fn list_all_sessions(&self) -> PResult<Vec<SessionRecord>> {
        self.log("listAllSessions");
        Ok(self.sessions.lock().unwrap().values().map(|s| s.record.clone()).collect())
    }
    async fn load_session(&self, id: &str) -> PResult<Option<StoredSession>> {
        self.log("loadSession");
        Ok(self.sessions.lock().unwrap().get(id).cloned())
    }
    async fn create_session_record(&self, record: &SessionRecord) -> PResult<()> {
        self.log("createSessionRecord");
        self.sessions.lock().unwrap().insert(
            record.session_id.clone(),
            StoredSession { record: record.clone(), raw_transcript: None, workspace_files: vec![] },
        );
        Ok(())
    }
    async fn update_session_record(&self, id: &str, u: &SessionRecordUpdate) -> PResult<()> {
        self.write("updateSessionRecord").await?;
        if let Some(s) = self.sessions.lock().unwrap().get_mut(id) {
            if let Some(o) = &u.session_options {
                s.record.session_options = Some(o.clone());
            }
            if let Some(t) = u.last_activity {
                s.record.last_activity = Some(t);
            }
            if let Some(m) = &u.metadata {
                s.record.metadata = Some(m.clone());
            }
        }
        Ok(())
    }
    async fn save_transcript(&self, id: &str, raw: &str) -> PResult<()> {
        self.write("saveTranscript").await?;
        if let Some(s) = self.sessions.lock().unwrap().get_mut(id) {
            s.raw_transcript = Some(raw.to_string());
        }
        Ok(())
    }
    async fn save_workspace_file(&self, id: &str, file: &WorkspaceFile) -> PResult<()> {
        self.write("saveWorkspaceFile").await?;
        if let Some(s) = self.sessions.lock().unwrap().get_mut(id) {
            s.workspace_files.retain(|f| f.path != file.path);
            s.workspace_files.push(file.clone());
        }
        Ok(())
    }
    async fn delete_session_file(&self, id: &str, path: &str) -> PResult<()> {
        self.write("deleteSessionFile").await?;
        if let Some(s) = self.sessions.lock().unwrap().get_mut(id) {
            s.workspace_files.retain(|f| f.path != path);
        }
        Ok(())
    }
    async fn list_agent_profiles(&self) -> PResult<Vec<AgentProfileSummary>> {
        self.log("listAgentProfiles");
        Ok(self
            .profiles
            .lock()
            .unwrap()
            .iter()
            .map(|p| AgentProfileSummary { id: p.id.clone(), name: p.name.clone(), description: None })
            .collect())
    }
    async fn load_agent_profile(&self, id: &str) -> PResult<Option<AgentProfile>> {
        self.log("loadAgentProfile");
        Ok(self.profiles.lock().unwrap().iter().find(|p| p.id == id).cloned())
    }
}
