//! The workspace as the REST API offers it: list, read, write, delete and archive files of a
//! session, in its running sandbox when there is one, else in its stored files.
//!
//! With a sandbox, writes and deletes go to the sandbox (link-free, like every other file
//! operation there) and the workspace watcher announces and persists them as it does for the
//! agent's own changes. Without one, the session's stored files change, the change is
//! announced (`session:file:*`) and queued in the outbox; activation materializes them.

use std::sync::Arc;

use serde::Serialize;

use super::agent_session::AgentSession;
use crate::error::{Error, Result};
use crate::persistence::WorkspaceFile;
use crate::sandbox::{FileRead, Sandbox, SandboxError};
use crate::sync::Locked as _;

/// Longest workspace path accepted from a client, in bytes.
pub const MAX_PATH_BYTES: usize = 4096;

/// Check a workspace path given by a client: relative, `/`-separated, no `..`, `.` or empty
/// segments, no NUL, not ending in `/`. The message names what is wrong.
pub fn check_path(path: &str) -> std::result::Result<(), String> {
    if path.is_empty() {
        return Err("Invalid file path: it is empty".into());
    }
    if path.len() > MAX_PATH_BYTES {
        return Err(format!("Invalid file path: longer than {MAX_PATH_BYTES} bytes"));
    }
    if path.contains('\0') {
        return Err("Invalid file path: it contains a NUL character".into());
    }
    if path.starts_with('/') || path.starts_with('\\') {
        return Err(format!("Invalid file path {path:?}: it must be relative to the workspace, not absolute"));
    }
    if path.ends_with('/') {
        return Err(format!("Invalid file path {path:?}: it names a directory, not a file"));
    }
    for seg in path.split('/') {
        match seg {
            ".." => return Err(format!("Invalid file path {path:?}: '..' would leave the workspace")),
            "." | "" => return Err(format!("Invalid file path {path:?}: empty or '.' segments are not allowed")),
            _ => {}
        }
    }
    Ok(())
}

/// One file of a workspace listing.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FileInfo {
    pub path: String,
    pub size: u64,
    /// ISO 8601; `null` for stored files (their time is not kept).
    pub modified_at: Option<String>,
}

/// What a workspace write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    Created,
    Modified,
}

impl AgentSession {
    /// Refuse paths the client may not name: malformed ones and the architecture's own.
    pub fn check_workspace_path(&self, path: &str) -> Result<()> {
        check_path(path).map_err(Error::InvalidInput)?;
        let owned = self.ctx.architecture(self.architecture).ok().and_then(|a| {
            a.ignored_paths().iter().find(|p| path.starts_with(**p) || path == p.trim_end_matches('/')).copied()
        });
        if let Some(prefix) = owned {
            return Err(Error::InvalidInput(format!(
                "Invalid file path {path:?}: {prefix} belongs to the agent's configuration, not the workspace"
            )));
        }
        Ok(())
    }

    /// The running sandbox, if any (a dead one counts as none: the next turn replaces it and
    /// materializes the stored files).
    async fn running(live: &Option<super::activation::Live>) -> Option<Arc<dyn Sandbox>> {
        let l = live.as_ref()?;
        l.sandbox.poll().await.is_none().then(|| l.sandbox.clone())
    }

    fn file_limit(&self) -> u64 {
        self.ctx.options.max_workspace_file_bytes as u64
    }

    /// Every workspace file with its size (and time, from a sandbox), sorted by path.
    pub async fn list_workspace(&self) -> Result<Vec<FileInfo>> {
        let live = self.live.lock().await;
        let Some(sb) = Self::running(&live).await else {
            let d = self.data.locked();
            let mut out: Vec<FileInfo> = d
                .workspace_files
                .iter()
                .filter(|f| check_path(&f.path).is_ok() && !self.ignored(&f.path))
                .map(|f| FileInfo {
                    path: f.path.clone(),
                    size: f.content.as_ref().map_or(0, |c| c.len() as u64),
                    modified_at: None,
                })
                .collect();
            out.sort_by(|a, b| a.path.cmp(&b.path));
            return Ok(out);
        };
        drop(live);
        let ws = sb.paths().workspace.clone();
        let mut out = Vec::new();
        for (path, meta) in sb.list_files_meta(&ws).await?.into_iter().filter(|(p, _)| !self.ignored(p)) {
            out.push(FileInfo { path, size: meta.size, modified_at: meta.modified_ms.map(crate::time::iso_of_ms) });
        }
        Ok(out)
    }

    /// A file's content; `None` when there is none. Something there that is not read (a link,
    /// a directory, over `maxWorkspaceFileBytes`) is an `InvalidInput` naming why.
    pub async fn read_workspace_file(&self, path: &str) -> Result<Option<Vec<u8>>> {
        self.check_workspace_path(path)?;
        let live = self.live.lock().await;
        let Some(sb) = Self::running(&live).await else {
            let d = self.data.locked();
            return Ok(d
                .workspace_files
                .iter()
                .find(|f| f.path == path)
                .map(|f| f.content.clone().unwrap_or_default().into_bytes()));
        };
        drop(live);
        match sb.read_regular(&sb.paths().workspace.join(path), self.file_limit()).await? {
            FileRead::Content(b) => Ok(Some(b)),
            FileRead::Missing => Ok(None),
            FileRead::Skipped(why) => Err(Error::InvalidInput(format!("{path} is not read: {why}"))),
        }
    }

    /// Write a file. With a sandbox the watcher announces and persists it; without, the stored
    /// files change here (text only: stored files are UTF-8).
    pub async fn write_workspace_file(&self, path: &str, content: Vec<u8>) -> Result<Written> {
        self.check_workspace_path(path)?;
        let limit = self.file_limit();
        if content.len() as u64 > limit {
            return Err(Error::InvalidInput(format!("{path} is larger than maxWorkspaceFileBytes ({limit} bytes)")));
        }
        // Held while the stored files change, so an activation either sees the new file or
        // comes first (and the write then goes to its sandbox).
        let live = self.live.lock().await;
        if let Some(sb) = Self::running(&live).await {
            drop(live);
            let full = sb.paths().workspace.join(path);
            let existed = sb.file_meta(&full).await.ok().flatten().is_some();
            sb.write_file(&full, &content).await.map_err(|e| cause(path, "write", e))?;
            return Ok(if existed { Written::Modified } else { Written::Created });
        }
        // A session on its way out has stored what it will store.
        if self.is_closing() {
            return Err(Error::SessionClosing(self.session_id.clone()));
        }
        let text = String::from_utf8(content).map_err(|_| {
            Error::InvalidInput(format!(
                "{path}: binary content can only be written while the session's sandbox runs \
                 (stored workspace files are UTF-8 text)"
            ))
        })?;
        let _files = self.files_lock.lock().await;
        let file = WorkspaceFile { path: path.to_string(), content: Some(text) };
        // A file where a directory is (or the reverse) could not be materialized.
        if let Some(other) = self.data.locked().workspace_files.iter().find_map(|f| conflict(path, &f.path)) {
            return Err(Error::InvalidInput(other));
        }
        Ok(match self.store_file(file) {
            Some(true) => Written::Created,
            _ => Written::Modified,
        })
    }

    /// Delete a file; `false` when there was none.
    pub async fn delete_workspace_file(&self, path: &str) -> Result<bool> {
        self.check_workspace_path(path)?;
        let live = self.live.lock().await;
        if let Some(sb) = Self::running(&live).await {
            drop(live);
            return sb.remove_file(&sb.paths().workspace.join(path)).await.map_err(|e| cause(path, "delete", e));
        }
        if self.is_closing() {
            return Err(Error::SessionClosing(self.session_id.clone()));
        }
        let _files = self.files_lock.lock().await;
        Ok(self.forget_stored_file(path))
    }

    /// The workspace as a tar archive (regular files only; what cannot be read is left out).
    pub async fn workspace_archive(&self) -> Result<Vec<u8>> {
        let live = self.live.lock().await;
        let files: Vec<(String, Vec<u8>, u64)> = match Self::running(&live).await {
            None => {
                let now = chrono::Utc::now().timestamp().max(0) as u64;
                let d = self.data.locked();
                d.workspace_files
                    .iter()
                    .filter(|f| check_path(&f.path).is_ok() && !self.ignored(&f.path))
                    .map(|f| (f.path.clone(), f.content.clone().unwrap_or_default().into_bytes(), now))
                    .collect()
            }
            Some(sb) => {
                drop(live);
                let ws = sb.paths().workspace.clone();
                let mut files = Vec::new();
                for (path, meta) in sb.list_files_meta(&ws).await?.into_iter().filter(|(p, _)| !self.ignored(p)) {
                    let full = ws.join(&path);
                    let mtime = meta.modified_ms.map_or(0, |ms| (ms / 1000).max(0) as u64);
                    match sb.read_regular(&full, self.file_limit()).await? {
                        FileRead::Content(b) => files.push((path, b, mtime)),
                        FileRead::Missing => {}
                        FileRead::Skipped(why) => {
                            tracing::debug!(session_id = %self.session_id, %path, %why, "archive: file left out")
                        }
                    }
                }
                files
            }
        };
        let mut sorted = files;
        sorted.sort_by(|a, b| a.0.cmp(&b.0));
        tar_of(&sorted).map_err(|e| Error::Sandbox(format!("Could not build the workspace archive: {e}")))
    }
}

/// Why a file at `path` cannot sit beside the stored file `other`: one would be the other's
/// directory.
fn conflict(path: &str, other: &str) -> Option<String> {
    if other.len() > path.len() && other.starts_with(path) && other.as_bytes()[path.len()] == b'/' {
        return Some(format!("Invalid file path {path:?}: it is a directory in the workspace (it holds {other})"));
    }
    if path.len() > other.len() && path.starts_with(other) && path.as_bytes()[other.len()] == b'/' {
        return Some(format!("Invalid file path {path:?}: {other} is a file, not a directory"));
    }
    None
}

/// Why a sandbox file operation failed, without the sandbox's paths (the client named the
/// file; where the sandbox keeps it is not its business).
fn cause(path: &str, what: &str, e: SandboxError) -> Error {
    match e {
        SandboxError::Io { message, .. } => Error::InvalidInput(format!("Could not {what} {path}: {message}")),
        e => Error::Sandbox(format!("Could not {what} {path}: {e}")),
    }
}

/// A tar archive of `(path, content, mtime seconds)` entries.
pub fn tar_of(files: &[(String, Vec<u8>, u64)]) -> std::io::Result<Vec<u8>> {
    let mut tar = tar::Builder::new(Vec::new());
    for (path, content, mtime) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(content.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(*mtime);
        h.set_entry_type(tar::EntryType::Regular);
        tar.append_data(&mut h, path, content.as_slice())?;
    }
    tar.into_inner()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_checked() {
        for ok in ["a.txt", "dir/b.md", "x/y/z", ".hidden", "a..b", "..a", "sp ace/ü.txt"] {
            assert!(check_path(ok).is_ok(), "{ok}");
        }
        let bad = |p: &str, what: &str| {
            let e = check_path(p).unwrap_err();
            assert!(e.contains(what), "{p:?}: {e}");
        };
        bad("", "empty");
        bad("../x", "'..'");
        bad("a/../../x", "'..'");
        bad("a/..", "'..'");
        bad("/etc/passwd", "absolute");
        bad("\\x", "absolute");
        bad("a\0b", "NUL");
        bad("a//b", "segments");
        bad("./a", "segments");
        bad("dir/", "directory");
        bad(&"a".repeat(MAX_PATH_BYTES + 1), "longer than");
    }

    #[test]
    fn files_and_directories_do_not_collide() {
        assert!(conflict("notes", "notes/a.txt").unwrap().contains("is a directory"));
        assert!(conflict("seed.txt/x", "seed.txt").unwrap().contains("is a file"));
        assert_eq!(conflict("notes.txt", "notes/a.txt"), None);
        assert_eq!(conflict("notes/a.txt", "notes/a.txt"), None);
        assert_eq!(conflict("note", "notes/a.txt"), None);
    }

    #[test]
    fn archives_hold_the_files() {
        let data = tar_of(&[("a.txt".into(), b"abc".to_vec(), 5), ("d/b.bin".into(), vec![0, 255], 6)]).unwrap();
        let mut ar = tar::Archive::new(std::io::Cursor::new(data));
        let mut seen = Vec::new();
        for e in ar.entries().unwrap() {
            let mut e = e.unwrap();
            let mut buf = Vec::new();
            std::io::Read::read_to_end(&mut e, &mut buf).unwrap();
            seen.push((e.path().unwrap().display().to_string(), buf));
        }
        assert_eq!(seen, [("a.txt".to_string(), b"abc".to_vec()), ("d/b.bin".to_string(), vec![0, 255])]);
    }
}
