//! The local provider: each sandbox is a directory tree on this machine
//! (`<root>/<id>/{app,workspace,home,mcps,tmp}`) and its processes run in their own process
//! groups with the sandbox's environment only. Terminate (and shutdown, and the host process
//! exiting) kills every process group. Isolation is by directories and environment, not by
//! namespaces.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};

use async_trait::async_trait;
use futures::FutureExt;
use tokio::sync::mpsc;

use super::*;

pub struct LocalProvider {
    root: PathBuf,
    bubblewrap: bool,
    live: Mutex<HashMap<String, Weak<LocalSandbox>>>,
}

/// Arguments that make bubblewrap run a command with the host's file system read-only, only
/// the sandbox directory writable, its own `/proc` and PID namespace, and everything killed
/// when bubblewrap's parent goes away.
fn bubblewrap_prefix(dir: &Path, cwd: &Path) -> Vec<String> {
    let d = dir.display().to_string();
    let mut a: Vec<String> = ["bwrap", "--die-with-parent", "--unshare-pid", "--unshare-ipc", "--ro-bind", "/", "/"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    // No private /tmp: the host paths the runner needs (Node, the agent SDK) may live there.
    // TMPDIR points into the sandbox directory instead.
    a.extend(["--dev", "/dev", "--proc", "/proc"].map(String::from));
    a.extend(["--bind".into(), d.clone(), d, "--chdir".into(), cwd.display().to_string(), "--".into()]);
    a
}

/// Whether `bwrap` is installed and can build the sandbox we ask for (it needs user namespaces
/// or privileges, which containers often lack). Checked once per process.
fn bubblewrap_works() -> std::result::Result<(), String> {
    static PROBE: std::sync::OnceLock<std::result::Result<(), String>> = std::sync::OnceLock::new();
    PROBE
        .get_or_init(|| {
            if std::env::var_os("AGENT_RUNTIME_NO_BWRAP").is_some() {
                return Err("disabled by AGENT_RUNTIME_NO_BWRAP".into());
            }
            let tmp = std::env::temp_dir();
            let argv = bubblewrap_prefix(&tmp, &tmp);
            match std::process::Command::new(&argv[0]).args(&argv[1..]).arg("true").output() {
                Ok(o) if o.status.success() => Ok(()),
                Ok(o) => Err(String::from_utf8_lossy(&o.stderr).trim().to_string()),
                Err(e) => Err(format!("bwrap not found ({e})")),
            }
        })
        .clone()
}

impl LocalProvider {
    /// Sandboxes go under `root` (created if missing).
    pub fn new(root: PathBuf) -> Self {
        let bubblewrap = match bubblewrap_works() {
            Ok(()) => {
                tracing::info!(root = %root.display(), "local sandbox provider: bubblewrap isolation (read-only host, private PIDs)");
                true
            }
            Err(why) => {
                tracing::info!(root = %root.display(), why = %why, "local sandbox provider: plain processes in per-sandbox directories (no bubblewrap)");
                false
            }
        };
        Self { root, bubblewrap, live: Mutex::new(HashMap::new()) }
    }

    /// Plain processes, never bubblewrap.
    pub fn plain(root: PathBuf) -> Self {
        Self { root, bubblewrap: false, live: Mutex::new(HashMap::new()) }
    }
}

#[async_trait]
impl SandboxProvider for LocalProvider {
    fn name(&self) -> &'static str {
        "local"
    }

    async fn create(&self, spec: SandboxSpec) -> SResult<Arc<dyn Sandbox>> {
        let id = format!("local-{}", uuid::Uuid::new_v4().simple());
        let dir = self.root.join(&id);
        let io = |e: std::io::Error| SandboxError::Create(format!("{}: {e}", dir.display()));
        for sub in ["app", "workspace", "home", "mcps", "tmp"] {
            tokio::fs::create_dir_all(dir.join(sub)).await.map_err(io)?;
        }
        // Canonical paths: tools inside (Claude Code among them) derive folder names from the
        // real cwd, so the paths we hand out must already be real.
        let dir = tokio::fs::canonicalize(&dir).await.map_err(io)?;
        let paths = BasePaths {
            app: dir.join("app"),
            workspace: dir.join("workspace"),
            home: dir.join("home"),
            mcps: dir.join("mcps"),
        };
        let mut env = BTreeMap::new();
        env.insert("PATH".into(), std::env::var("PATH").unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".into()));
        env.insert("HOME".into(), paths.home.display().to_string());
        env.insert("TMPDIR".into(), dir.join("tmp").display().to_string());
        env.insert("IS_SANDBOX".into(), "1".into());
        env.insert("LANG".into(), "C.UTF-8".into());
        env.extend(spec.env);
        let sb = Arc::new(LocalSandbox {
            id: id.clone(),
            bubblewrap: self.bubblewrap,
            dir,
            paths,
            env,
            groups: Mutex::new(Vec::new()),
            terminated: AtomicBool::new(false),
        });
        self.live.lock().unwrap().insert(id.clone(), Arc::downgrade(&sb));
        tracing::info!(sandbox_id = %id, "local sandbox created");
        Ok(sb)
    }

    /// An earlier run's sandbox: its processes died with that run (parent-death signal, or
    /// bubblewrap's `--die-with-parent`); what is left is its directory.
    async fn reap(&self, id: &str) {
        let ours = id.strip_prefix("local-").is_some_and(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_hexdigit()));
        if !ours || self.live.lock().unwrap().contains_key(id) {
            return;
        }
        if tokio::fs::remove_dir_all(self.root.join(id)).await.is_ok() {
            tracing::info!(sandbox_id = %id, "local sandbox of an earlier run removed");
        }
    }

    fn kill_all(&self) {
        let live: Vec<_> = self.live.lock().unwrap().drain().filter_map(|(_, w)| w.upgrade()).collect();
        for sb in live {
            sb.kill_groups();
        }
    }
}

pub struct LocalSandbox {
    id: String,
    bubblewrap: bool,
    dir: PathBuf,
    paths: BasePaths,
    env: BTreeMap<String, String>,
    /// Process group ids of running processes.
    groups: Mutex<Vec<i32>>,
    terminated: AtomicBool,
}

impl LocalSandbox {
    fn host(&self, path: &Path) -> SResult<PathBuf> {
        confine(&self.dir, &self.paths.workspace, path)
    }

    fn kill_groups(&self) {
        for pgid in self.groups.lock().unwrap().drain(..) {
            // SAFETY: killpg has no memory-safety preconditions.
            unsafe {
                libc::killpg(pgid, libc::SIGKILL);
            }
        }
    }

    fn io_err(path: &Path, e: std::io::Error) -> SandboxError {
        SandboxError::Io { path: path.display().to_string(), message: e.to_string() }
    }
}

#[async_trait]
impl Sandbox for LocalSandbox {
    fn id(&self) -> &str {
        &self.id
    }

    fn paths(&self) -> &BasePaths {
        &self.paths
    }

    async fn exec(&self, argv: &[String], opts: ExecOptions) -> SResult<Process> {
        if self.terminated.load(Ordering::SeqCst) {
            return Err(SandboxError::Terminated);
        }
        let program = argv.first().cloned().unwrap_or_default();
        let cwd = match &opts.cwd {
            Some(c) => self.host(c)?,
            None => self.paths.workspace.clone(),
        };
        let full: Vec<String> = if self.bubblewrap {
            bubblewrap_prefix(&self.dir, &cwd).into_iter().chain(argv.iter().cloned()).collect()
        } else {
            argv.to_vec()
        };
        let mut cmd = tokio::process::Command::new(&full[0]);
        cmd.args(&full[1..])
            .current_dir(&cwd)
            .env_clear()
            .envs(&self.env)
            .envs(&opts.env)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        #[cfg(target_os = "linux")]
        // SAFETY: prctl is async-signal-safe; it only asks the kernel to SIGKILL the child when
        // the thread that spawned it dies, so a crashed host leaves no runner behind.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let mut child =
            cmd.spawn().map_err(|e| SandboxError::Spawn { program: program.clone(), message: e.to_string() })?;
        let pgid = child.id().map(|p| p as i32);
        if let Some(g) = pgid {
            self.groups.lock().unwrap().push(g);
        }
        let stdout = Box::pin(child.stdout.take().expect("piped"));
        let stderr = Box::pin(child.stderr.take().expect("piped"));
        let stdin = child.stdin.take().map(|s| Box::pin(s) as Pin<Box<dyn AsyncWrite + Send>>);
        let exit = async move {
            use std::os::unix::process::ExitStatusExt;
            match child.wait().await {
                Ok(st) => st.code().unwrap_or_else(|| -st.signal().unwrap_or(9)),
                Err(_) => -1,
            }
        }
        .boxed();
        Ok(Process { stdout, stderr, stdin, exit })
    }

    async fn read_regular(&self, path: &Path, limit: u64) -> SResult<FileRead> {
        let p = self.host(path)?;
        match tokio::fs::read(&p).await {
            Ok(b) if b.len() as u64 > limit => Ok(FileRead::Skipped(format!("larger than {limit} bytes"))),
            Ok(b) => Ok(FileRead::Content(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(FileRead::Missing),
            Err(e) => Err(Self::io_err(path, e)),
        }
    }

    async fn write_file(&self, path: &Path, content: &[u8]) -> SResult<()> {
        let p = self.host(path)?;
        if let Some(parent) = p.parent() {
            tokio::fs::create_dir_all(parent).await.map_err(|e| Self::io_err(path, e))?;
        }
        tokio::fs::write(&p, content).await.map_err(|e| Self::io_err(path, e))
    }

    async fn mkdir(&self, path: &Path) -> SResult<()> {
        let p = self.host(path)?;
        tokio::fs::create_dir_all(&p).await.map_err(|e| Self::io_err(path, e))
    }

    async fn list_files(&self, dir: &Path) -> SResult<Vec<String>> {
        let p = self.host(dir)?;
        let mut out: Vec<String> = tokio::task::spawn_blocking(move || {
            super::files_under(&p, &[])
                .into_iter()
                .filter_map(|f| f.strip_prefix(&p).ok().map(|r| r.to_string_lossy().replace('\\', "/")))
                .collect()
        })
        .await
        .unwrap_or_default();
        out.sort();
        Ok(out)
    }

    async fn watch(&self, dir: &Path) -> SResult<mpsc::Receiver<FileEvent>> {
        let p = self.host(dir)?;
        super::watch::watch_dir(&p)
            .map_err(|e| SandboxError::Io { path: dir.display().to_string(), message: e.to_string() })
    }

    async fn poll(&self) -> Option<i32> {
        if self.terminated.load(Ordering::SeqCst) || !self.dir.exists() {
            Some(137)
        } else {
            None
        }
    }

    async fn terminate(&self) {
        if self.terminated.swap(true, Ordering::SeqCst) {
            return;
        }
        self.kill_groups();
        let _ = tokio::fs::remove_dir_all(&self.dir).await;
        tracing::info!(sandbox_id = %self.id, "local sandbox terminated");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    fn provider() -> (LocalProvider, PathBuf) {
        let root = std::env::temp_dir().join(format!("arn-test-{}", uuid::Uuid::new_v4().simple()));
        (LocalProvider::new(root.clone()), root)
    }

    #[tokio::test]
    async fn exec_streams_output_with_env_and_stdin() {
        let (p, root) = provider();
        exec_roundtrip(p).await;
        exec_roundtrip(LocalProvider::plain(root.clone())).await;
        let _ = std::fs::remove_dir_all(root);
    }

    #[tokio::test]
    async fn bubblewrap_keeps_the_host_read_only() {
        if let Err(why) = bubblewrap_works() {
            eprintln!("bubblewrap not usable here ({why}); the isolation check needs it");
            return;
        }
        let (p, root) = provider();
        let sb = p.create(SandboxSpec::default()).await.unwrap();
        let outside = std::env::current_dir().unwrap().join("target").join("bwrap-escape-check");
        let script = format!("touch {} 2>/dev/null && echo escaped; touch inside && echo ok", outside.display());
        let argv: Vec<String> = vec!["sh".into(), "-c".into(), script];
        let proc = sb.exec(&argv, ExecOptions::default()).await.unwrap();
        let mut out = lines(proc.stdout);
        assert_eq!(out.recv().await.as_deref(), Some("ok"));
        assert!(!outside.exists());
        assert!(sb.paths().workspace.join("inside").exists());
        sb.terminate().await;
        let _ = std::fs::remove_dir_all(root);
    }

    async fn exec_roundtrip(p: LocalProvider) {
        let mut spec = SandboxSpec::default();
        spec.env.insert("GREETING".into(), "hi".into());
        let sb = p.create(spec).await.unwrap();
        let argv: Vec<String> = ["sh", "-c", "read x; echo \"$GREETING $x $IS_SANDBOX $(pwd)\"; echo err >&2; exit 3"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let mut proc = sb.exec(&argv, ExecOptions::default()).await.unwrap();
        let mut stdin = proc.stdin.take().unwrap();
        stdin.write_all(b"there\n").await.unwrap();
        drop(stdin);
        let mut out = lines(proc.stdout);
        let mut err = lines(proc.stderr);
        let line = out.recv().await.unwrap();
        assert_eq!(line, format!("hi there 1 {}", sb.paths().workspace.display()));
        assert_eq!(err.recv().await.unwrap(), "err");
        assert_eq!(proc.exit.await, 3);
        sb.terminate().await;
    }

    #[tokio::test]
    async fn files_are_confined_and_listed_recursively() {
        let (p, root) = provider();
        let sb = p.create(SandboxSpec::default()).await.unwrap();
        sb.write_file(Path::new("a/b.txt"), b"x").await.unwrap();
        sb.write_file(Path::new("c.txt"), b"y").await.unwrap();
        assert_eq!(sb.read_file(Path::new("a/b.txt")).await.unwrap(), Some(b"x".to_vec()));
        assert_eq!(sb.read_file(Path::new("nope")).await.unwrap(), None);
        assert!(matches!(sb.write_file(Path::new("../../x"), b"").await, Err(SandboxError::PathEscapes(_))));
        let ws = sb.paths().workspace.clone();
        assert_eq!(sb.list_files(&ws).await.unwrap(), ["a/b.txt", "c.txt"]);
        sb.terminate().await;
        assert_eq!(sb.poll().await, Some(137));
        assert!(sb.exec(&["true".into()], ExecOptions::default()).await.is_err());
        let _ = std::fs::remove_dir_all(root);
    }

    #[tokio::test]
    async fn terminate_kills_the_process_group() {
        let (p, root) = provider();
        let sb = p.create(SandboxSpec::default()).await.unwrap();
        let argv: Vec<String> = ["sh", "-c", "sleep 30 & sleep 30"].iter().map(|s| s.to_string()).collect();
        let proc = sb.exec(&argv, ExecOptions::default()).await.unwrap();
        sb.terminate().await;
        let code = tokio::time::timeout(std::time::Duration::from_secs(5), proc.exit).await.unwrap();
        assert_eq!(code, -9);
        let _ = std::fs::remove_dir_all(root);
    }

    async fn next(rx: &mut mpsc::Receiver<FileEvent>) -> FileEvent {
        let e = tokio::time::timeout(std::time::Duration::from_secs(5), rx.recv()).await;
        e.expect("a file event").expect("watcher alive")
    }

    #[tokio::test]
    async fn watch_reports_create_modify_delete() {
        let (p, root) = provider();
        let sb = p.create(SandboxSpec::default()).await.unwrap();
        let ws = sb.paths().workspace.clone();
        sb.mkdir(&ws.join("d")).await.unwrap();
        let mut rx = sb.watch(&ws).await.unwrap();
        sb.write_file(Path::new("d/new.txt"), b"1").await.unwrap();
        let mut e = next(&mut rx).await;
        while e.kind != FileEventKind::Created {
            e = next(&mut rx).await;
        }
        assert_eq!(e.path, "d/new.txt");
        std::fs::remove_file(ws.join("d/new.txt")).unwrap();
        while e.kind != FileEventKind::Deleted {
            e = next(&mut rx).await;
        }
        assert_eq!(e.path, "d/new.txt");
        // A file written into a directory created after the watch started is reported too.
        sb.write_file(Path::new("fresh/dir/f.txt"), b"2").await.unwrap();
        while !(e.kind == FileEventKind::Created && e.path == "fresh/dir/f.txt") {
            e = next(&mut rx).await;
        }
        sb.terminate().await;
        let _ = std::fs::remove_dir_all(root);
    }
}
