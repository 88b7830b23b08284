//! The workspace: watcher events read, announced and persisted; full pulls for syncs.

use crate::sync::Locked as _;
use std::path::Path;
use std::sync::{Arc, Weak};
use std::time::Duration;

use serde_json::json;

use super::agent_session::AgentSession;
use super::outbox::Write;
use crate::error::Result;
use crate::persistence::WorkspaceFile;
use crate::sandbox::{FileEventKind, FileRead, Sandbox};

/// Text content for a workspace file, or why it is not sent to persistence. The size limit
/// was applied by the read (from metadata, before reading).
fn file_content(read: FileRead) -> std::result::Result<String, String> {
    match read {
        FileRead::Content(bytes) => {
            String::from_utf8(bytes).map_err(|_| "not UTF-8 text (binary files are not persisted)".to_string())
        }
        FileRead::Skipped(why) => Err(why),
        FileRead::Missing => Err("gone".into()),
    }
}

pub(super) fn relative_ok(p: &str) -> bool {
    let path = Path::new(p);
    !p.is_empty() && path.is_relative() && path.components().all(|c| matches!(c, std::path::Component::Normal(_)))
}

impl AgentSession {
    pub(super) fn ignored(&self, path: &str) -> bool {
        match self.ctx.architecture(self.architecture) {
            Ok(a) => a.ignored_paths().iter().any(|p| path.starts_with(p)),
            Err(_) => false,
        }
    }

    /// One workspace change: update memory, announce it, persist it.
    async fn on_file_event(&self, sandbox: &dyn Sandbox, kind: FileEventKind, path: String) {
        if self.ignored(&path) {
            return;
        }
        // One at a time with syncs' pulls, so a pull's older view of this path cannot be
        // queued after this newer one.
        let _files = self.files_lock.lock().await;
        let full = sandbox.paths().workspace.join(&path);
        let limit = self.ctx.options.max_workspace_file_bytes as u64;
        let read = match kind {
            FileEventKind::Deleted => FileRead::Missing,
            _ => match sandbox.read_regular(&full, limit).await {
                Ok(r) => r,
                Err(e) => {
                    tracing::debug!(session_id = %self.session_id, %path, error = %e, "workspace file unreadable");
                    return;
                }
            },
        };
        // Gone, whatever the event said (a rename reported as one event names its source as
        // well as its target).
        if read == FileRead::Missing {
            self.forget_stored_file(&path);
            return;
        }
        let content = match file_content(read) {
            Ok(c) => c,
            Err(why) => {
                tracing::warn!(session_id = %self.session_id, %path, %why, "workspace file not persisted");
                return;
            }
        };
        self.store_file(WorkspaceFile { path, content: Some(content) });
    }

    /// Keep `file` among the stored files, announce it and queue its save. `None` when it was
    /// already stored as it is (nothing announced); else whether it is new. Callers hold
    /// `files_lock`.
    pub(super) fn store_file(&self, file: WorkspaceFile) -> Option<bool> {
        let created = {
            let mut d = self.data.locked();
            match d.workspace_files.iter_mut().find(|f| f.path == file.path) {
                Some(existing) if existing.content == file.content => return None,
                Some(existing) => {
                    *existing = file.clone();
                    false
                }
                None => {
                    d.workspace_files.push(file.clone());
                    true
                }
            }
        };
        let name = if created { "session:file:created" } else { "session:file:modified" };
        self.emit(self.session_event(name, json!({ "file": file })));
        self.outbox.push([Write::SaveFile(file)]);
        Some(created)
    }

    /// Drop `path` from the stored files, announce it and queue its deletion; false when it
    /// was not stored. Callers hold `files_lock`.
    pub(super) fn forget_stored_file(&self, path: &str) -> bool {
        let existed = {
            let mut d = self.data.locked();
            let before = d.workspace_files.len();
            d.workspace_files.retain(|f| f.path != path);
            before != d.workspace_files.len()
        };
        if existed {
            self.emit(self.session_event("session:file:deleted", json!({ "path": path })));
            self.outbox.push([Write::DeleteFile(path.to_string())]);
        }
        existed
    }

    /// Pull transcript and files from the sandbox (if any), then persist everything (§4.5).
    pub async fn sync_to_storage(&self) -> Result<()> {
        let sandbox = self.live.lock().await.as_ref().map(|l| l.sandbox.clone());
        if let Some(sb) = sandbox {
            self.pull_from(&*sb).await;
        }
        self.persist_state().await
    }

    /// Refresh memory from the sandbox: the transcript, and the workspace as it is now. Files
    /// that are gone (changes the watcher did not deliver) are announced and deleted from
    /// storage; files that could not be read keep their last known content.
    pub(super) async fn pull_from(&self, sb: &dyn Sandbox) {
        if let Err(e) = self.refresh_transcript(sb).await {
            tracing::warn!(session_id = %self.session_id, error = %e, "sync: transcript not stored yet");
        }
        let _files = self.files_lock.lock().await;
        let ws = sb.paths().workspace.clone();
        let Ok(paths) = sb.list_files(&ws).await else { return };
        let limit = self.ctx.options.max_workspace_file_bytes as u64;
        let known = self.data.locked().workspace_files.clone();
        let mut files = Vec::new();
        for path in paths.into_iter().filter(|p| !self.ignored(p)) {
            let read = sb.read_regular(&ws.join(&path), limit).await;
            let keep = || known.iter().find(|f| f.path == path).cloned();
            match read.map(file_content) {
                Ok(Ok(c)) => files.push(WorkspaceFile { path, content: Some(c) }),
                Ok(Err(why)) => {
                    tracing::debug!(%path, %why, "sync: workspace file skipped");
                    files.extend(keep());
                }
                Err(e) => {
                    tracing::debug!(%path, error = %e, "sync: workspace file unreadable, last content kept");
                    files.extend(keep());
                }
            }
        }
        let gone: Vec<String> = known
            .iter()
            .filter(|k| !self.ignored(&k.path) && !files.iter().any(|f| f.path == k.path))
            .map(|k| k.path.clone())
            .collect();
        self.data.locked().workspace_files = files;
        for path in gone {
            self.emit(self.session_event("session:file:deleted", json!({ "path": path })));
            self.outbox.push([Write::DeleteFile(path)]);
        }
    }
}

/// How long file events settle before they are handled: editors and agents write a temp file
/// and rename it over the target, which should read as one change of the target.
const SETTLE: Duration = Duration::from_millis(60);

pub(super) async fn watch_workspace(
    session: Weak<AgentSession>,
    sandbox: Arc<dyn Sandbox>,
    mut events: tokio::sync::mpsc::Receiver<crate::sandbox::FileEvent>,
) {
    while let Some(first) = events.recv().await {
        // Counted from its first event until handled, so a turn's end can wait for the files
        // the turn wrote (see `AgentSession::files_settled`).
        let counted = session.upgrade().map(|s| FileBatch::start(&s));
        // Coalesce a burst: the last kind per path wins, in first-seen order.
        let mut batch: Vec<(String, FileEventKind)> = vec![(first.path, first.kind)];
        let deadline = tokio::time::Instant::now() + SETTLE;
        while let Ok(Some(ev)) = tokio::time::timeout_at(deadline, events.recv()).await {
            match batch.iter_mut().find(|(p, _)| *p == ev.path) {
                Some(entry) => entry.1 = ev.kind,
                None => batch.push((ev.path, ev.kind)),
            }
        }
        let Some(s) = session.upgrade() else { return };
        for (path, kind) in batch {
            s.on_file_event(&*sandbox, kind, path).await;
        }
        drop(counted);
    }
}

/// A batch of file events being handled.
struct FileBatch(Arc<AgentSession>);

impl FileBatch {
    fn start(s: &Arc<AgentSession>) -> Self {
        s.files_in_flight.send_modify(|n| *n += 1);
        FileBatch(s.clone())
    }
}

impl Drop for FileBatch {
    fn drop(&mut self) {
        self.0.files_in_flight.send_modify(|n| *n = n.saturating_sub(1));
    }
}

impl AgentSession {
    /// Wait (bounded) until file events already received are handled: a turn's files are in
    /// the session's state before the turn's end is announced with the transcript.
    pub(super) async fn files_settled(&self) {
        let mut rx = self.files_in_flight.subscribe();
        let _ = tokio::time::timeout(Duration::from_secs(2), rx.wait_for(|n| *n == 0)).await;
    }
}
