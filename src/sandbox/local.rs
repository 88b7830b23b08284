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

    /// `path` relative to the sandbox directory, where every file operation starts and from
    /// which no link is followed (the agent can replace anything below it).
    fn rel(&self, path: &Path) -> SResult<PathBuf> {
        let full = self.host(path)?;
        Ok(full.strip_prefix(&self.dir).expect("confined").to_path_buf())
    }

    /// Run a blocking [`beneath`] operation on the sandbox directory.
    async fn beneath<T: Send + 'static>(
        &self,
        path: &Path,
        op: impl FnOnce(&Path) -> std::io::Result<T> + Send + 'static,
    ) -> SResult<T> {
        let root = self.dir.clone();
        match tokio::task::spawn_blocking(move || op(&root)).await {
            Ok(r) => r.map_err(|e| Self::io_err(path, e)),
            Err(e) => Err(SandboxError::Io { path: path.display().to_string(), message: e.to_string() }),
        }
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
        let rel = self.rel(path)?;
        self.beneath(path, move |root| beneath::read_regular(root, &rel, limit)).await
    }

    async fn write_file(&self, path: &Path, content: &[u8]) -> SResult<()> {
        let rel = self.rel(path)?;
        let content = content.to_vec();
        self.beneath(path, move |root| beneath::write_file(root, &rel, &content)).await
    }

    async fn write_files(&self, files: &[(PathBuf, Vec<u8>)]) -> SResult<()> {
        let files = files.iter().map(|(p, c)| Ok((p.clone(), self.rel(p)?, c.clone()))).collect::<SResult<Vec<_>>>()?;
        let root = self.dir.clone();
        tokio::task::spawn_blocking(move || {
            for (p, rel, c) in files {
                beneath::write_file(&root, &rel, &c).map_err(|e| Self::io_err(&p, e))?;
            }
            Ok(())
        })
        .await
        .map_err(|e| SandboxError::Io { path: "workspace files".into(), message: e.to_string() })?
    }

    async fn mkdir(&self, path: &Path) -> SResult<()> {
        let rel = self.rel(path)?;
        self.beneath(path, move |root| beneath::mkdir_all(root, &rel)).await
    }

    async fn list_files(&self, dir: &Path) -> SResult<Vec<String>> {
        let rel = self.rel(dir)?;
        self.beneath(dir, move |root| beneath::list_files(root, &rel, &[])).await
    }

    async fn watch(&self, dir: &Path) -> SResult<mpsc::Receiver<FileEvent>> {
        let rel = self.rel(dir)?;
        let root = self.dir.clone();
        let hub = super::watch::WatchHub::global();
        tokio::task::spawn_blocking(move || hub.watch(&root, &rel))
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r.map_err(|e| e.to_string()))
            .map_err(|message| SandboxError::Io { path: dir.display().to_string(), message })
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
    use std::time::Duration;
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

    /// A host folder outside the sandbox holding `secret.txt`.
    fn host_folder() -> PathBuf {
        let d = std::env::temp_dir().join(format!("arn-host-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("secret.txt"), "host secret").unwrap();
        d
    }

    #[tokio::test]
    async fn links_out_of_the_sandbox_are_never_followed() {
        let (p, root) = provider();
        let sb = p.create(SandboxSpec::default()).await.unwrap();
        let ws = sb.paths().workspace.clone();
        let host = host_folder();
        let link = |target: &Path, name: &str| std::os::unix::fs::symlink(target, ws.join(name)).unwrap();
        link(Path::new("/proc/self/environ"), "env.txt");
        link(Path::new("/"), "root");
        link(&host, "hostdir");
        link(&host.join("secret.txt"), "secret.txt");
        sb.write_file(Path::new("mine.txt"), b"mine").await.unwrap();
        let limit = 1 << 20;

        // Reads: links are skipped, and so is anything reached through one.
        for name in ["env.txt", "secret.txt"] {
            let r = sb.read_regular(Path::new(name), limit).await.unwrap();
            let read_it = matches!(r, FileRead::Content(_));
            assert!(matches!(&r, FileRead::Skipped(why) if why.contains("symbolic link")), "{name}: read {read_it}");
        }
        for name in ["root/etc/passwd", "hostdir/secret.txt"] {
            let r = sb.read_regular(Path::new(name), limit).await.unwrap();
            assert!(!matches!(r, FileRead::Content(_)), "{name} read through a link");
        }
        // Listings: only the sandbox's own regular files; nothing under a link, not even as the root.
        assert_eq!(sb.list_files(&ws).await.unwrap(), ["mine.txt"]);
        assert!(sb.list_files(&ws.join("root")).await.unwrap().is_empty());
        assert!(sb.list_files(&ws.join("hostdir")).await.unwrap().is_empty());

        // Writes: a link at the name is replaced, never written through; a link on the way refuses.
        sb.write_file(Path::new("secret.txt"), b"restored").await.unwrap();
        assert_eq!(std::fs::read_to_string(host.join("secret.txt")).unwrap(), "host secret");
        assert_eq!(std::fs::read_to_string(ws.join("secret.txt")).unwrap(), "restored");
        assert!(!std::fs::symlink_metadata(ws.join("secret.txt")).unwrap().is_symlink());
        let files = [(PathBuf::from("hostdir/planted.txt"), b"x".to_vec())];
        assert!(sb.write_files(&files).await.is_err());
        assert!(sb.mkdir(&ws.join("hostdir/sub")).await.is_err());
        assert!(!host.join("planted.txt").exists() && !host.join("sub").exists(), "wrote into the host folder");

        // The transcript read goes through the same operations: a projects folder linked to
        // the host yields nothing of the host's.
        let projects = sb.paths().home.join(".claude/projects");
        std::fs::create_dir_all(host.join("p")).unwrap();
        std::fs::write(host.join("p/s1.jsonl"), "{\"host\":1}\n{\"sessionId\":\"s1\"}\n").unwrap();
        std::fs::create_dir_all(projects.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(&host, &projects).unwrap();
        let claude = crate::agent::claude::ClaudeArchitecture::new(Default::default());
        use crate::agent::architecture::AgentArchitecture;
        assert_eq!(claude.read_transcript(&*sb, "s1").await.unwrap(), None);

        sb.terminate().await;
        let _ = std::fs::remove_dir_all(root);
        let _ = std::fs::remove_dir_all(host);
    }

    fn rss_bytes() -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let kb = status.lines().find_map(|l| l.strip_prefix("VmRSS:")).unwrap().trim().trim_end_matches(" kB");
        kb.trim().parse::<u64>().unwrap() * 1024
    }

    #[tokio::test]
    async fn huge_and_special_files_are_skipped_unread() {
        let (p, root) = provider();
        let sb = p.create(SandboxSpec::default()).await.unwrap();
        let ws = sb.paths().workspace.clone();
        let mut rx = sb.watch(&ws).await.unwrap();
        // 2 GiB, sparse: costs no disk, but reading it whole would cost 2 GiB of memory.
        std::fs::File::create(ws.join("sparse.bin")).unwrap().set_len(2 << 30).unwrap();
        let fifo = std::ffi::CString::new(ws.join("pipe").as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
        std::os::unix::fs::symlink(ws.join("pipe"), ws.join("pipe-link")).unwrap();
        let before = rss_bytes();
        let read = |name: &'static str| {
            let sb = sb.clone();
            async move {
                let r = tokio::time::timeout(Duration::from_secs(5), sb.read_regular(Path::new(name), 10 << 20)).await;
                r.unwrap_or_else(|_| panic!("reading {name} blocked")).unwrap()
            }
        };
        assert_eq!(read("sparse.bin").await, FileRead::Skipped(format!("larger than {} bytes", 10 << 20)));
        assert!(
            rss_bytes() < before + (512 << 20),
            "reading a skipped file grew memory by {} MiB",
            (rss_bytes() - before) >> 20
        );
        assert!(matches!(read("pipe").await, FileRead::Skipped(why) if why.contains("FIFO")));
        assert!(matches!(read("pipe-link").await, FileRead::Skipped(why) if why.contains("symbolic link")));
        // The watcher is not held up by them either.
        sb.write_file(Path::new("after.txt"), b"1").await.unwrap();
        let mut e = next(&mut rx).await;
        while e.path != "after.txt" {
            e = next(&mut rx).await;
        }
        sb.terminate().await;
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
