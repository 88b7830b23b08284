//! The sandbox layer: where an agent's processes and files live.
//!
//! [`Sandbox`] has the reference's primitive operations (exec with streamed output, files,
//! directories, listing, watching, polling, terminate, base paths); providers create them.
//! `local` runs processes on this machine, each sandbox in its own directories; Modal plugs in
//! behind the same traits. (Not to be confused with the package's top-level `sandbox/` folder,
//! which holds the scripts that run *inside* a sandbox.)

pub mod beneath;
pub mod env;
pub mod local;
pub mod modal;
mod watch;

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};
use std::pin::Pin;

use async_trait::async_trait;
use futures::future::BoxFuture;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;

pub use watch::{FileEvent, FileEventKind};

#[derive(Debug, Clone, thiserror::Error)]
pub enum SandboxError {
    #[error("sandbox path {0:?} is outside the sandbox")]
    PathEscapes(String),
    #[error("could not start {program:?} in the sandbox: {message}")]
    Spawn { program: String, message: String },
    #[error("sandbox I/O failed on {path:?}: {message}")]
    Io { path: String, message: String },
    #[error("sandbox is terminated")]
    Terminated,
    #[error("could not create sandbox: {0}")]
    Create(String),
    /// Something the configuration does not allow (the message names the option).
    #[error("{0}")]
    Refused(String),
}

pub type SResult<T> = Result<T, SandboxError>;

/// The directories a sandbox exposes, as paths seen from inside it.
#[derive(Debug, Clone, PartialEq)]
pub struct BasePaths {
    pub app: PathBuf,
    pub workspace: PathBuf,
    pub home: PathBuf,
    pub mcps: PathBuf,
}

#[derive(Debug, Clone, Default)]
pub struct ExecOptions {
    /// Working directory; the workspace when unset.
    pub cwd: Option<PathBuf>,
    /// Added to (and overriding) the sandbox's environment.
    pub env: BTreeMap<String, String>,
}

/// A started process. Output is raw bytes; callers split lines (see [`lines`]).
pub struct Process {
    pub stdout: Pin<Box<dyn AsyncRead + Send>>,
    pub stderr: Pin<Box<dyn AsyncRead + Send>>,
    pub stdin: Option<Pin<Box<dyn AsyncWrite + Send>>>,
    /// Resolves to the exit code (negative signal number when killed by a signal).
    pub exit: BoxFuture<'static, i32>,
    /// Kill the process and everything it started, where the provider can do that directly
    /// (local: its process group); `None` on Modal, which has no per-exec kill.
    pub kill: Option<std::sync::Arc<dyn Fn() + Send + Sync>>,
}

/// What a sandbox is created with.
#[derive(Debug, Clone, Default)]
pub struct SandboxSpec {
    /// Environment of every process in the sandbox.
    pub env: BTreeMap<String, String>,
}

/// Largest runtime-owned file (a transcript) read back from a sandbox.
pub const MAX_INTERNAL_FILE_BYTES: u64 = 512 * 1024 * 1024;

/// What [`Sandbox::read_regular`] found.
#[derive(Debug, Clone, PartialEq)]
pub enum FileRead {
    /// Nothing at that path.
    Missing,
    Content(Vec<u8>),
    /// Something there that is not read, and why (a link, not a regular file, over the limit).
    Skipped(String),
}

#[async_trait]
pub trait Sandbox: Send + Sync + 'static {
    fn id(&self) -> &str;
    fn paths(&self) -> &BasePaths;
    /// Whether processes here can run this host's Node and its installed agent SDKs (local
    /// sandboxes); otherwise the sandbox image brings its own (`node` on PATH, SDKs in `/app`).
    fn uses_host_toolchain(&self) -> bool {
        true
    }
    async fn exec(&self, argv: &[String], opts: ExecOptions) -> SResult<Process>;
    /// Read a regular file of at most `limit` bytes. Never through a symbolic link and never a
    /// FIFO, device or socket (the agent controls what is in its sandbox; the runtime must not
    /// be led outside it or blocked); the size is checked before any byte is read.
    async fn read_regular(&self, path: &Path, limit: u64) -> SResult<FileRead>;
    /// [`Sandbox::read_regular`] for the runtime's own files (transcripts): `None` when missing,
    /// an error when it is not a regular file or larger than [`MAX_INTERNAL_FILE_BYTES`].
    async fn read_file(&self, path: &Path) -> SResult<Option<Vec<u8>>> {
        match self.read_regular(path, MAX_INTERNAL_FILE_BYTES).await? {
            FileRead::Missing => Ok(None),
            FileRead::Content(b) => Ok(Some(b)),
            FileRead::Skipped(why) => Err(SandboxError::Io { path: path.display().to_string(), message: why }),
        }
    }
    async fn write_file(&self, path: &Path, content: &[u8]) -> SResult<()>;
    /// Write many files; parent directories are created.
    async fn write_files(&self, files: &[(PathBuf, Vec<u8>)]) -> SResult<()> {
        for (p, c) in files {
            self.write_file(p, c).await?;
        }
        Ok(())
    }
    /// Size and modification time of a regular file (never through a link); `None` when there
    /// is no regular file at `path`. The default reads the file (no modification time).
    async fn file_meta(&self, path: &Path) -> SResult<Option<beneath::Meta>> {
        Ok(match self.read_regular(path, MAX_INTERNAL_FILE_BYTES).await? {
            FileRead::Content(b) => Some(beneath::Meta { size: b.len() as u64, modified_ms: None }),
            _ => None,
        })
    }
    /// [`Sandbox::list_files`] with each file's [`Sandbox::file_meta`] (files gone in between
    /// are left out). Providers where each call is a round trip list both at once.
    async fn list_files_meta(&self, dir: &Path) -> SResult<Vec<(String, beneath::Meta)>> {
        list_files_meta_each(self, dir).await
    }
    /// Remove a file (a link itself, never its target); `false` when nothing was there. A
    /// directory is not removed, and a link on the way is an error.
    async fn remove_file(&self, path: &Path) -> SResult<bool>;
    async fn mkdir(&self, path: &Path) -> SResult<()>;
    /// Regular files under `dir`, recursively, as paths relative to `dir`, sorted.
    async fn list_files(&self, dir: &Path) -> SResult<Vec<String>>;
    /// File events under `dir` (paths relative to it), until the sandbox ends.
    async fn watch(&self, dir: &Path) -> SResult<mpsc::Receiver<FileEvent>>;
    /// `None` while the sandbox runs, else its exit code.
    async fn poll(&self) -> Option<i32>;
    async fn terminate(&self);
}

/// [`Sandbox::list_files_meta`] by one [`Sandbox::file_meta`] call per listed file.
pub async fn list_files_meta_each<S: Sandbox + ?Sized>(sb: &S, dir: &Path) -> SResult<Vec<(String, beneath::Meta)>> {
    let mut out = Vec::new();
    for path in sb.list_files(dir).await? {
        if let Some(meta) = sb.file_meta(&dir.join(&path)).await? {
            out.push((path, meta));
        }
    }
    Ok(out)
}

#[async_trait]
pub trait SandboxProvider: Send + Sync + 'static {
    fn name(&self) -> &'static str;
    async fn create(&self, spec: SandboxSpec) -> SResult<std::sync::Arc<dyn Sandbox>>;
    /// Terminate every sandbox this provider started (shutdown, process exit).
    fn kill_all(&self);
    /// Stop a sandbox a previous run of the runtime started and recorded (it crashed or was
    /// killed before it could). Unknown or already gone ids are no error.
    async fn reap(&self, _id: &str) {}
}

/// Resolve `path` (absolute, or relative to `base`) and refuse anything that leaves `root`.
/// Purely lexical: `..` components are rejected outright.
pub fn confine(root: &Path, base: &Path, path: &Path) -> SResult<PathBuf> {
    if path.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err(SandboxError::PathEscapes(path.display().to_string()));
    }
    let full = if path.is_absolute() { path.to_path_buf() } else { base.join(path) };
    if full.starts_with(root) {
        Ok(full)
    } else {
        Err(SandboxError::PathEscapes(path.display().to_string()))
    }
}

/// Longest line read from a process stream (a runner's output); see [`OutputLine::TooLong`].
pub const MAX_LINE_BYTES: usize = 16 * 1024 * 1024;

/// One item of a process stream read by [`output_lines`].
#[derive(Debug, Clone, PartialEq)]
pub enum OutputLine {
    /// Decoded as UTF-8 (lossy), the newline removed.
    Line(String),
    /// A line longer than the limit (in bytes): it is dropped and nothing more is read (the
    /// stream is closed, so a writer still writing gets a broken pipe).
    TooLong(usize),
}

/// Lines of a process stream, none longer than `max` bytes: memory stays bounded whatever the
/// process writes.
pub fn output_lines(r: Pin<Box<dyn AsyncRead + Send>>, max: usize) -> mpsc::Receiver<OutputLine> {
    spawn_lines(r, max, Some)
}

/// Lines of a process stream, decoded as UTF-8 (lossy) with the newline removed. Ends at a line
/// longer than [`MAX_LINE_BYTES`] (use [`output_lines`] to tell that from the end of the stream).
pub fn lines(r: Pin<Box<dyn AsyncRead + Send>>) -> mpsc::Receiver<String> {
    spawn_lines(r, MAX_LINE_BYTES, |l| match l {
        OutputLine::Line(s) => Some(s),
        OutputLine::TooLong(max) => {
            tracing::warn!("process output line longer than {max} bytes; output no longer read");
            None
        }
    })
}

fn spawn_lines<T: Send + 'static>(
    r: Pin<Box<dyn AsyncRead + Send>>,
    max: usize,
    map: fn(OutputLine) -> Option<T>,
) -> mpsc::Receiver<T> {
    use tokio::io::AsyncBufReadExt;
    let (tx, rx) = mpsc::channel(256);
    tokio::spawn(async move {
        let mut reader = tokio::io::BufReader::with_capacity(64 * 1024, r);
        let mut buf = Vec::new();
        loop {
            // `read_until` would grow the buffer without bound: take what is buffered, up to a
            // newline, and stop once the line is too long.
            let (done, eof) = match reader.fill_buf().await {
                Ok([]) | Err(_) => (0, true),
                Ok(chunk) => match chunk.iter().position(|b| *b == b'\n') {
                    Some(i) => {
                        buf.extend_from_slice(&chunk[..i]);
                        (i + 1, false)
                    }
                    None => {
                        buf.extend_from_slice(chunk);
                        let n = chunk.len();
                        reader.consume(n);
                        if buf.len() > max {
                            if let Some(t) = map(OutputLine::TooLong(max)) {
                                let _ = tx.send(t).await;
                            }
                            return;
                        }
                        continue;
                    }
                },
            };
            reader.consume(done);
            if eof && buf.is_empty() {
                return;
            }
            let item = if buf.len() > max {
                OutputLine::TooLong(max)
            } else {
                while buf.last() == Some(&b'\r') {
                    buf.pop();
                }
                OutputLine::Line(String::from_utf8_lossy(&buf).into_owned())
            };
            let stop = eof || matches!(item, OutputLine::TooLong(_));
            if let Some(t) = map(item) {
                if tx.send(t).await.is_err() {
                    return;
                }
            }
            if stop {
                return;
            }
            buf.clear();
        }
    });
    rx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_over_long_line_ends_the_read() {
        let mut input = b"short\r\nsecond\n".to_vec();
        input.extend(std::iter::repeat_n(b'x', 100_000));
        input.extend(b"\nnever read\n");
        let mut rx = output_lines(Box::pin(std::io::Cursor::new(input)), 1000);
        assert_eq!(rx.recv().await, Some(OutputLine::Line("short".into())));
        assert_eq!(rx.recv().await, Some(OutputLine::Line("second".into())));
        assert_eq!(rx.recv().await, Some(OutputLine::TooLong(1000)));
        assert_eq!(rx.recv().await, None);
        // A last line without a newline still counts; exactly `max` bytes is allowed.
        let mut rx = output_lines(Box::pin(std::io::Cursor::new(b"a\nbcd".to_vec())), 3);
        assert_eq!(rx.recv().await, Some(OutputLine::Line("a".into())));
        assert_eq!(rx.recv().await, Some(OutputLine::Line("bcd".into())));
        assert_eq!(rx.recv().await, None);
    }

    #[test]
    fn confine_rejects_escapes() {
        let root = Path::new("/sb/1");
        let ws = Path::new("/sb/1/workspace");
        assert_eq!(confine(root, ws, Path::new("a/b.txt")).unwrap(), Path::new("/sb/1/workspace/a/b.txt"));
        assert!(confine(root, ws, Path::new("../../etc/passwd")).is_err());
        assert!(confine(root, ws, Path::new("/etc/passwd")).is_err());
        assert!(confine(root, ws, Path::new("/sb/1/home/x")).is_ok());
        assert!(confine(root, ws, Path::new("/sb/10/x")).is_err());
    }
}
