//! The local provider: each sandbox is a directory tree on this machine
//! (`<root>/<id>/{app,workspace,home,mcps,tmp}`) whose processes run with the sandbox's
//! environment only. With a usable bubblewrap every process runs in a namespace that sees only
//! what a runner needs (see `bubblewrap`); without it, isolation is by directories and
//! environment only, and the runtime says so. Terminate (and shutdown, and the host process
//! exiting) kills every process of the sandbox (see `reap`).

mod bubblewrap;
#[cfg(test)]
mod isolation_tests;
mod reap;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};

use async_trait::async_trait;
use futures::FutureExt;
use tokio::sync::mpsc;

use super::*;
use crate::config::SandboxNetwork;
use bubblewrap::Bubblewrap;

/// How local sandboxes are set up.
#[derive(Debug, Clone, Default)]
pub struct LocalSettings {
    pub network: SandboxNetwork,
    /// The Node binary runners run with (bound read-only into sandboxes).
    pub node: String,
    /// Host files or folders of the runner's packages (the Claude Agent SDK entry, OpenCode's
    /// node_modules); the node_modules folders holding them are bound read-only.
    pub packages: Vec<String>,
}

pub struct LocalProvider {
    root: PathBuf,
    /// `Err` says why sandboxes here run without bubblewrap.
    bubblewrap: std::result::Result<Bubblewrap, String>,
    live: Mutex<HashMap<String, Weak<LocalSandbox>>>,
}

/// Create the sandbox root 0700, or accept an existing one only when it is a directory this
/// user owns that nobody else can write (a predictable path in a shared `/tmp` may have been
/// planted by another user, to read or replace what sandboxes keep there).
fn prepare_root(root: &Path) -> std::result::Result<(), String> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    let shown = root.display();
    if let Some(parent) = root.parent() {
        std::fs::create_dir_all(parent).map_err(|e| format!("sandbox root {shown}: {e}"))?;
    }
    match std::fs::DirBuilder::new().mode(0o700).create(root) {
        Ok(()) => return Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(format!("sandbox root {shown}: {e}")),
    }
    // SAFETY: no preconditions.
    let me = unsafe { libc::geteuid() };
    let link = std::fs::symlink_metadata(root).map_err(|e| format!("sandbox root {shown}: {e}"))?;
    let meta = std::fs::metadata(root).map_err(|e| format!("sandbox root {shown}: {e}"))?;
    let fix = "remove it or set sandbox.root to a directory of your own";
    if !meta.is_dir() {
        return Err(format!("sandbox root {shown} is not a directory; {fix}"));
    }
    for (what, m) in [("", &link), (" (where the link points)", &meta)] {
        if m.uid() != me {
            return Err(format!(
                "sandbox root {shown}{what} is owned by uid {}, not by this process (uid {me}); {fix}",
                m.uid()
            ));
        }
    }
    if meta.mode() & 0o022 != 0 {
        return Err(format!(
            "sandbox root {shown} is writable by group or others (mode {:o}); chmod 700 it or {fix}",
            meta.mode() & 0o7777
        ));
    }
    Ok(())
}

impl LocalProvider {
    /// Sandboxes go under `root` (see `prepare_root`), in bubblewrap when it works here. The
    /// error names what is wrong (the root; `network: "none"` without bubblewrap).
    pub fn new(root: PathBuf, settings: &LocalSettings) -> std::result::Result<Self, String> {
        prepare_root(&root)?;
        let packages: Vec<&str> = settings.packages.iter().map(String::as_str).collect();
        let toolchain = bubblewrap::toolchain(&settings.node, &packages, &root);
        let bubblewrap = Bubblewrap::new(settings.network, toolchain);
        match &bubblewrap {
            Ok(b) => {
                tracing::info!(root = %root.display(), layout = ?b, "local sandbox provider: bubblewrap isolation");
            }
            Err(why) if settings.network == SandboxNetwork::None => {
                return Err(format!("sandbox.network \"none\" needs bubblewrap, which is not usable here: {why}"));
            }
            Err(_) => {}
        }
        Ok(Self { root, bubblewrap, live: Mutex::new(HashMap::new()) })
    }

    /// Plain processes, never bubblewrap.
    pub fn plain(root: PathBuf) -> std::result::Result<Self, String> {
        prepare_root(&root)?;
        Ok(Self { root, bubblewrap: Err("plain provider".into()), live: Mutex::new(HashMap::new()) })
    }

    /// Why sandboxes of this provider are not isolated from each other and the host, if so.
    pub fn unisolated_reason(&self) -> Option<&str> {
        self.bubblewrap.as_ref().err().map(String::as_str)
    }
}

#[async_trait]
impl SandboxProvider for LocalProvider {
    fn name(&self) -> &'static str {
        "local"
    }

    async fn create(&self, spec: SandboxSpec) -> SResult<Arc<dyn Sandbox>> {
        use std::os::unix::fs::DirBuilderExt;
        let id = format!("local-{}", uuid::Uuid::new_v4().simple());
        let dir = self.root.join(&id);
        let io = |e: std::io::Error| SandboxError::Create(format!("{}: {e}", dir.display()));
        std::fs::DirBuilder::new().mode(0o700).create(&dir).map_err(io)?;
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
        let mut extra = spec.env;
        let dropped = super::env::drop_reserved(&mut extra);
        if !dropped.is_empty() {
            tracing::warn!(sandbox_id = %id, names = ?dropped, "sandbox environment: ignored names the runtime reserves (or that are not valid)");
        }
        let mut env = BTreeMap::new();
        env.insert("PATH".into(), std::env::var("PATH").unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".into()));
        env.insert("HOME".into(), paths.home.display().to_string());
        env.insert("TMPDIR".into(), dir.join("tmp").display().to_string());
        env.insert("IS_SANDBOX".into(), "1".into());
        env.insert("LANG".into(), "C.UTF-8".into());
        env.extend(extra);
        let sb = Arc::new(LocalSandbox {
            id: id.clone(),
            bubblewrap: self.bubblewrap.as_ref().ok().cloned(),
            dir,
            paths,
            env,
            launched: reap::Launched::default(),
            terminated: AtomicBool::new(false),
        });
        {
            // Pruned as we go: one entry per sandbox ever created would grow without bound.
            let mut live = self.live.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            live.retain(|_, w| w.strong_count() > 0);
            live.insert(id.clone(), Arc::downgrade(&sb));
        }
        tracing::info!(sandbox_id = %id, "local sandbox created");
        Ok(sb)
    }

    /// An earlier run's sandbox: its processes normally died with that run (parent-death
    /// signal, bubblewrap's `--die-with-parent`); stragglers and its directory go now.
    async fn reap(&self, id: &str) {
        let ours = id.strip_prefix("local-").is_some_and(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_hexdigit()));
        if !ours || self.live.lock().unwrap().contains_key(id) {
            return;
        }
        // Processes that outlived it (plain mode) carry its marker.
        let entry = format!("{}={id}", super::env::SANDBOX_MARKER);
        let _ = tokio::task::spawn_blocking(move || reap::kill_all(Vec::new(), &entry)).await;
        if tokio::fs::remove_dir_all(self.root.join(id)).await.is_ok() {
            tracing::info!(sandbox_id = %id, "local sandbox of an earlier run removed");
        }
    }

    fn kill_all(&self) {
        let live: Vec<_> = self.live.lock().unwrap().drain().filter_map(|(_, w)| w.upgrade()).collect();
        for sb in live {
            reap::kill_all(sb.launched.take(), &sb.marker());
        }
    }
}

pub struct LocalSandbox {
    id: String,
    bubblewrap: Option<Bubblewrap>,
    dir: PathBuf,
    paths: BasePaths,
    env: BTreeMap<String, String>,
    /// The processes `exec` started.
    launched: reap::Launched,
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

    /// The environment entry every process of this sandbox carries.
    fn marker(&self) -> String {
        format!("{}={}", super::env::SANDBOX_MARKER, self.id)
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
        let full: Vec<std::ffi::OsString> = match &self.bubblewrap {
            Some(b) => b.command(&self.dir, &cwd).into_iter().chain(argv.iter().map(Into::into)).collect(),
            None => argv.iter().map(Into::into).collect(),
        };
        let mut cmd = tokio::process::Command::new(&full[0]);
        cmd.args(&full[1..])
            .current_dir(&cwd)
            .env_clear()
            .envs(&self.env)
            .envs(&opts.env)
            .env(super::env::SANDBOX_MARKER, &self.id)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // SAFETY: setsid and prctl are async-signal-safe. setsid: its own session and process
        // group, no controlling terminal of the host. PDEATHSIG: the kernel SIGKILLs the child
        // when the thread that spawned it dies, so a crashed host leaves no runner behind.
        unsafe {
            cmd.pre_exec(|| {
                libc::setsid();
                #[cfg(target_os = "linux")]
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let mut child =
            cmd.spawn().map_err(|e| SandboxError::Spawn { program: program.clone(), message: e.to_string() })?;
        if let Some(pid) = child.id() {
            self.launched.add(pid as i32);
        }
        let stdout = Box::pin(child.stdout.take().expect("piped"));
        let stderr = Box::pin(child.stderr.take().expect("piped"));
        let stdin = child.stdin.take().map(|s| Box::pin(s) as Pin<Box<dyn AsyncWrite + Send>>);
        // setsid made the child a process group leader: killing the group reaches what it
        // started (bubblewrap's namespace goes with it). Not after it was reaped: the id may be
        // another process's by then.
        let exited = Arc::new(AtomicBool::new(false));
        let kill = child.id().map(|pid| {
            let exited = exited.clone();
            Arc::new(move || {
                if !exited.load(Ordering::SeqCst) {
                    // SAFETY: plain syscall on a process group we created.
                    unsafe { libc::kill(-(pid as i32), libc::SIGKILL) };
                }
            }) as Arc<dyn Fn() + Send + Sync>
        });
        let exit = async move {
            use std::os::unix::process::ExitStatusExt;
            let code = match child.wait().await {
                Ok(st) => st.code().unwrap_or_else(|| -st.signal().unwrap_or(9)),
                Err(_) => -1,
            };
            exited.store(true, Ordering::SeqCst);
            code
        }
        .boxed();
        Ok(Process { stdout, stderr, stdin, exit, kill })
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

    async fn file_meta(&self, path: &Path) -> SResult<Option<beneath::Meta>> {
        let rel = self.rel(path)?;
        self.beneath(path, move |root| beneath::stat_regular(root, &rel)).await
    }

    async fn remove_file(&self, path: &Path) -> SResult<bool> {
        let rel = self.rel(path)?;
        self.beneath(path, move |root| beneath::remove_file(root, &rel)).await
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
        let (launched, marker) = (self.launched.take(), self.marker());
        let _ = tokio::task::spawn_blocking(move || reap::kill_all(launched, &marker)).await;
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
        (LocalProvider::new(root.clone(), &LocalSettings::default()).unwrap(), root)
    }

    #[tokio::test]
    async fn exec_streams_output_with_env_and_stdin() {
        let (p, root) = provider();
        exec_roundtrip(p).await;
        exec_roundtrip(LocalProvider::plain(root.clone()).unwrap()).await;
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
    async fn the_provider_forgets_sandboxes_once_they_are_gone() {
        let (p, root) = provider();
        for _ in 0..3 {
            let sb = p.create(SandboxSpec::default()).await.unwrap();
            sb.terminate().await;
        }
        let kept = p.create(SandboxSpec::default()).await.unwrap();
        assert_eq!(p.live.lock().unwrap().len(), 1, "only the live sandbox is tracked");
        kept.terminate().await;
        let _ = std::fs::remove_dir_all(root);
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
