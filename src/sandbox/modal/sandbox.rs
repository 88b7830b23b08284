//! [`ModalSandbox`]: the [`Sandbox`] operations on a Modal sandbox, built from exec and the
//! file API the way the reference runtime does (bulk writes as one `tar -x`, listing with
//! `find`, watching with a small polling script).

use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::{mpsc, OnceCell};

use super::client::ModalError;
use super::control::ControlPlane;
use super::exec::{run, ExecRequest, ExecTransport};
use super::fs::FileTransport;
use crate::sandbox::{
    BasePaths, ExecOptions, FileEvent, FileEventKind, FileRead, Process, SResult, Sandbox, SandboxError,
};

/// The watcher script, uploaded on first use (see `sandbox/watch.mjs`).
const WATCH_SCRIPT: &str = include_str!("../../../sandbox/watch.mjs");
const WATCH_PATH: &str = "/app/.agent-runtime/watch.mjs";

pub fn base_paths() -> BasePaths {
    BasePaths { app: "/app".into(), workspace: "/workspace".into(), home: "/root".into(), mcps: "/mcps".into() }
}

pub struct ModalSandbox {
    pub(super) id: String,
    pub(super) task_id: String,
    pub(super) paths: BasePaths,
    control: ControlPlane,
    exec: Arc<dyn ExecTransport>,
    files: Arc<dyn FileTransport>,
    terminated: AtomicBool,
    watch_script: OnceCell<()>,
}

fn io_err(path: &str) -> impl Fn(ModalError) -> SandboxError + '_ {
    move |e| SandboxError::Io { path: path.to_string(), message: e.message }
}

impl ModalSandbox {
    pub(super) fn new(
        id: String,
        task_id: String,
        control: ControlPlane,
        exec: Arc<dyn ExecTransport>,
        files: Arc<dyn FileTransport>,
    ) -> Self {
        Self {
            id,
            task_id,
            paths: base_paths(),
            control,
            exec,
            files,
            terminated: AtomicBool::new(false),
            watch_script: OnceCell::new(),
        }
    }

    /// An absolute path inside one of the sandbox's own directories (relative paths are taken
    /// from the workspace); anything else is refused.
    fn inside(&self, path: &Path) -> SResult<String> {
        if path.components().any(|c| matches!(c, Component::ParentDir)) {
            return Err(SandboxError::PathEscapes(path.display().to_string()));
        }
        let full = if path.is_absolute() { path.to_path_buf() } else { self.paths.workspace.join(path) };
        // Normalised (no `//`, `.` or trailing `/`): in-sandbox scripts compare it with what they opened.
        let full: PathBuf = full.components().collect();
        let p = &self.paths;
        if [&p.app, &p.workspace, &p.home, &p.mcps].iter().any(|root| full.starts_with(root)) {
            Ok(full.display().to_string())
        } else {
            Err(SandboxError::PathEscapes(path.display().to_string()))
        }
    }

    fn request(&self, argv: Vec<String>, workdir: Option<String>) -> ExecRequest {
        ExecRequest { task_id: self.task_id.clone(), argv, workdir, secret_ids: vec![] }
    }

    /// Run a short command to the end; non-zero exit is an error carrying stderr.
    async fn check(&self, argv: Vec<String>, stdin: &[u8], what: &str) -> SResult<Vec<u8>> {
        let (code, out, err) = run(&*self.exec, self.request(argv, None), stdin).await.map_err(io_err(what))?;
        if code != 0 {
            return Err(SandboxError::Io {
                path: what.to_string(),
                message: format!("exit {code}: {}", String::from_utf8_lossy(&err).trim()),
            });
        }
        Ok(out)
    }
}

#[async_trait]
impl Sandbox for ModalSandbox {
    fn id(&self) -> &str {
        &self.id
    }

    fn paths(&self) -> &BasePaths {
        &self.paths
    }

    fn uses_host_toolchain(&self) -> bool {
        false
    }

    async fn exec(&self, argv: &[String], opts: ExecOptions) -> SResult<Process> {
        if self.terminated.load(Ordering::SeqCst) {
            return Err(SandboxError::Terminated);
        }
        let program = argv.first().cloned().unwrap_or_default();
        let spawn = |e: ModalError| SandboxError::Spawn { program: program.clone(), message: e.message };
        let workdir = opts.cwd.as_deref().map(|c| self.inside(c)).transpose()?;
        let mut req = self.request(argv.to_vec(), workdir);
        if !opts.env.is_empty() {
            // As the official SDK does: per-exec environment travels as an ephemeral secret.
            req.secret_ids.push(self.control.secret(opts.env).await.map_err(spawn)?);
        }
        self.exec.exec(req).await.map_err(spawn)
    }

    async fn read_regular(&self, path: &Path, limit: u64) -> SResult<FileRead> {
        if self.terminated.load(Ordering::SeqCst) {
            return Err(SandboxError::Terminated);
        }
        let p = self.inside(path)?;
        super::fs::read_regular(&*self.exec, &self.task_id, &p, limit).await.map_err(io_err(&p))
    }

    async fn write_file(&self, path: &Path, content: &[u8]) -> SResult<()> {
        let p = self.inside(path)?;
        if let Some(parent) = Path::new(&p).parent() {
            self.mkdir(parent).await?;
        }
        self.files.write(&self.task_id, &p, content).await.map_err(io_err(&p))
    }

    /// One `tar -x` for all files: a single exec instead of one round of calls per file.
    async fn write_files(&self, files: &[(PathBuf, Vec<u8>)]) -> SResult<()> {
        if files.is_empty() {
            return Ok(());
        }
        let mut tar = tar::Builder::new(Vec::new());
        let now = chrono::Utc::now().timestamp().max(0) as u64;
        for (path, content) in files {
            let p = self.inside(path)?;
            let mut h = tar::Header::new_gnu();
            h.set_size(content.len() as u64);
            h.set_mode(0o644);
            h.set_mtime(now);
            h.set_entry_type(tar::EntryType::Regular);
            tar.append_data(&mut h, p.trim_start_matches('/'), content.as_slice())
                .map_err(|e| SandboxError::Io { path: p.clone(), message: e.to_string() })?;
        }
        let archive = tar.into_inner().map_err(|e| SandboxError::Io { path: "tar".into(), message: e.to_string() })?;
        let argv = ["tar", "-x", "-f", "-", "-C", "/"].map(String::from).to_vec();
        self.check(argv, &archive, "bulk upload (tar -x)").await.map(|_| ())
    }

    /// One `find -printf` for the whole listing (size, time, path); where `find` cannot print
    /// (not GNU findutils), one `stat` per file.
    async fn list_files_meta(&self, dir: &Path) -> SResult<Vec<(String, crate::sandbox::beneath::Meta)>> {
        let d = self.inside(dir)?;
        let script = r#"cd -P -- "$1" 2>/dev/null || exit 0
[ "$(pwd -P)" = "$1" ] || exit 0
exec find . -type f -printf '%s %T@ %P\0'"#;
        let argv = ["sh", "-c", script, "sh", &d].map(String::from).to_vec();
        let Ok(out) = self.check(argv, &[], &d).await else {
            return crate::sandbox::list_files_meta_each(self, dir).await;
        };
        let mut files = Vec::new();
        for rec in out.split(|b| *b == 0).filter(|r| !r.is_empty()) {
            let rec = String::from_utf8_lossy(rec);
            let mut parts = rec.splitn(3, ' ');
            let (Some(size), Some(time), Some(path)) = (parts.next(), parts.next(), parts.next()) else { continue };
            let (Ok(size), Ok(secs)) = (size.parse::<u64>(), time.parse::<f64>()) else { continue };
            let meta = crate::sandbox::beneath::Meta { size, modified_ms: Some((secs * 1000.0) as i64) };
            files.push((path.to_string(), meta));
        }
        files.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(files)
    }

    /// One `stat` instead of reading the file; the parent must be reached without a link and
    /// the file must be a regular file (not a link).
    async fn file_meta(&self, path: &Path) -> SResult<Option<crate::sandbox::beneath::Meta>> {
        let p = self.inside(path)?;
        let script = r#"d=$(dirname -- "$1"); n=$(basename -- "$1")
cd -P -- "$d" 2>/dev/null || exit 0
[ "$(pwd -P)" = "$d" ] || exit 0
if [ -f "$n" ] && [ ! -L "$n" ]; then exec stat -c '%s %Y' -- "$n"; fi"#;
        let argv = ["sh", "-c", script, "sh", &p].map(String::from).to_vec();
        let out = self.check(argv, &[], &p).await?;
        let text = String::from_utf8_lossy(&out);
        let mut fields = text.split_whitespace().map(|f| f.parse::<i64>().ok());
        Ok(match (fields.next().flatten(), fields.next().flatten()) {
            (Some(size), Some(secs)) => {
                Some(crate::sandbox::beneath::Meta { size: size.max(0) as u64, modified_ms: Some(secs * 1000) })
            }
            _ => None,
        })
    }

    async fn remove_file(&self, path: &Path) -> SResult<bool> {
        let p = self.inside(path)?;
        // As `list_files`: the parent directory must be reached without a link; the entry
        // itself is removed, never what a link there points to.
        let script = r#"d=$(dirname -- "$1"); n=$(basename -- "$1")
cd -P -- "$d" 2>/dev/null || { echo missing; exit 0; }
[ "$(pwd -P)" = "$d" ] || { echo "a symbolic link is on the way (links are not followed)" >&2; exit 3; }
if [ -d "$n" ] && [ ! -L "$n" ]; then echo "a directory (only files are removed)" >&2; exit 4; fi
if [ -e "$n" ] || [ -L "$n" ]; then rm -f -- "$n" && echo removed; else echo missing; fi"#;
        let argv = ["sh", "-c", script, "sh", &p].map(String::from).to_vec();
        let out = self.check(argv, &[], &p).await?;
        Ok(out.starts_with(b"removed"))
    }

    async fn mkdir(&self, path: &Path) -> SResult<()> {
        let p = self.inside(path)?;
        self.check(vec!["mkdir".into(), "-p".into(), p.clone()], &[], &p).await.map(|_| ())
    }

    async fn list_files(&self, dir: &Path) -> SResult<Vec<String>> {
        let d = self.inside(dir)?;
        // A missing directory lists as empty, like the local provider. One reached through a
        // symbolic link (the directory itself or a parent) lists as empty too: `pwd -P` is
        // where `cd` really went. `find` (without -L) neither follows nor lists links.
        let script = r#"cd -P -- "$1" 2>/dev/null || exit 0
[ "$(pwd -P)" = "$1" ] || { echo "$1 is reached through a symbolic link; not listed" >&2; exit 0; }
exec find . -type f -print0"#;
        let argv = ["sh", "-c", script, "sh", &d].map(String::from).to_vec();
        let out = self.check(argv, &[], &d).await?;
        let mut files: Vec<String> = out
            .split(|b| *b == 0)
            .filter(|s| !s.is_empty())
            .map(|s| String::from_utf8_lossy(s).trim_start_matches("./").to_string())
            .collect();
        files.sort();
        Ok(files)
    }

    async fn watch(&self, dir: &Path) -> SResult<mpsc::Receiver<FileEvent>> {
        let d = self.inside(dir)?;
        self.watch_script
            .get_or_try_init(|| async { self.write_file(Path::new(WATCH_PATH), WATCH_SCRIPT.as_bytes()).await })
            .await?;
        let argv = ["node", WATCH_PATH, &d].map(String::from).to_vec();
        let proc = self.exec(&argv, ExecOptions::default()).await?;
        let mut lines = crate::sandbox::lines(proc.stdout);
        let (tx, rx) = mpsc::channel(1024);
        tokio::spawn(async move {
            while let Some(line) = lines.recv().await {
                let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else { continue };
                let kind = match v["kind"].as_str() {
                    Some("created") => FileEventKind::Created,
                    Some("modified") => FileEventKind::Modified,
                    Some("deleted") => FileEventKind::Deleted,
                    _ => continue,
                };
                let Some(path) = v["path"].as_str() else { continue };
                if tx.send(FileEvent { kind, path: path.to_string() }).await.is_err() {
                    return;
                }
            }
        });
        Ok(rx)
    }

    async fn poll(&self) -> Option<i32> {
        match self.control.poll(&self.id).await {
            Ok(r) => r,
            Err(e) if e.code == tonic::Code::NotFound => Some(137),
            // Unknown is not dead: a control-plane hiccup must not throw the sandbox away.
            Err(e) => {
                tracing::warn!(sandbox_id = %self.id, error = %e, "Modal sandbox poll failed");
                None
            }
        }
    }

    async fn terminate(&self) {
        if self.terminated.swap(true, Ordering::SeqCst) {
            return;
        }
        match self.control.terminate(&self.id).await {
            Ok(_) => tracing::info!(sandbox_id = %self.id, "Modal sandbox terminated"),
            Err(e) => tracing::warn!(sandbox_id = %self.id, error = %e, "Modal sandbox terminate failed"),
        }
    }
}
