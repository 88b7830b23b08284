//! Workspace file events. One OS watcher (inotify on Linux, through `notify`) serves every local
//! sandbox of the process — one instance each would exhaust `fs.inotify.max_user_instances`
//! (often 128) — and its events are dispatched by path to each watch's channel. When no OS
//! watcher can be made, a polling one takes its place. Links are never followed: not by the
//! watcher, not when a new directory is scanned (that goes through [`super::beneath`]).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use notify::{EventKind, RecursiveMode, Watcher};
use tokio::sync::{mpsc, Notify};

use super::beneath;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileEventKind {
    Created,
    Modified,
    Deleted,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileEvent {
    pub kind: FileEventKind,
    /// Relative to the watched directory, `/`-separated.
    pub path: String,
}

/// Raw events held per watch before its task takes them; past that, the watch rescans.
const RAW_QUEUE: usize = 4096;
/// How often the polling fallback looks.
const POLL_INTERVAL: Duration = Duration::from_millis(500);

/// One watched directory: where its raw events go.
struct Route {
    id: u64,
    dir: PathBuf,
    raw: mpsc::Sender<(FileEventKind, PathBuf)>,
    /// Events were dropped (queue full, or the OS queue overflowed): rescan everything.
    overflowed: Arc<AtomicBool>,
    wake: Arc<Notify>,
}

impl Route {
    fn lost_events(&self) {
        self.overflowed.store(true, Ordering::SeqCst);
        self.wake.notify_one();
    }
}

/// The process's watcher and the watches it serves.
pub struct WatchHub {
    watcher: Mutex<Box<dyn Watcher + Send>>,
    routes: Arc<Mutex<Vec<Route>>>,
    next_id: AtomicU64,
}

fn kind_of(kind: &EventKind) -> Option<FileEventKind> {
    use notify::event::{MetadataKind, ModifyKind, RemoveKind, RenameMode};
    Some(match kind {
        EventKind::Create(_) => FileEventKind::Created,
        EventKind::Modify(ModifyKind::Name(RenameMode::From)) => FileEventKind::Deleted,
        // `Both` repeats a `From` and a `To` already reported.
        EventKind::Modify(ModifyKind::Name(RenameMode::Both)) => return None,
        EventKind::Modify(ModifyKind::Name(_)) => FileEventKind::Created,
        // The polling watcher's "content changed"; inotify's attribute changes are not.
        EventKind::Modify(ModifyKind::Metadata(MetadataKind::WriteTime)) => FileEventKind::Modified,
        EventKind::Modify(ModifyKind::Metadata(_)) => return None,
        EventKind::Modify(_) => FileEventKind::Modified,
        EventKind::Remove(RemoveKind::Folder) => return None,
        EventKind::Remove(_) => FileEventKind::Deleted,
        _ => return None,
    })
}

/// Runs on the watcher's thread: never blocks (a full queue marks the watch for a rescan).
fn dispatch(routes: &Mutex<Vec<Route>>, res: notify::Result<notify::Event>) {
    let routes = routes.lock().unwrap();
    let ev = match res {
        Ok(ev) => ev,
        Err(e) => {
            tracing::debug!(error = %e, "file watcher error");
            return;
        }
    };
    if ev.need_rescan() {
        routes.iter().for_each(Route::lost_events);
    }
    let Some(kind) = kind_of(&ev.kind) else { return };
    for p in ev.paths {
        for r in routes.iter().filter(|r| p.starts_with(&r.dir)) {
            if r.raw.try_send((kind, p.clone())).is_err() {
                r.lost_events();
            }
        }
    }
}

impl WatchHub {
    /// The process-wide hub, made on first use.
    pub fn global() -> &'static WatchHub {
        static HUB: OnceLock<WatchHub> = OnceLock::new();
        HUB.get_or_init(|| WatchHub::new(false))
    }

    /// An OS watcher, or the polling one when `poll` or when no OS watcher can be made (out of
    /// inotify instances, say).
    pub fn new(poll: bool) -> Self {
        let routes: Arc<Mutex<Vec<Route>>> = Arc::default();
        let handler = {
            let routes = routes.clone();
            move |res| dispatch(&routes, res)
        };
        let config = notify::Config::default().with_follow_symlinks(false);
        let os = if poll { None } else { Some(notify::RecommendedWatcher::new(handler.clone(), config)) };
        let watcher: Box<dyn Watcher + Send> = match os {
            Some(Ok(w)) => Box::new(w),
            other => {
                if let Some(Err(e)) = other {
                    tracing::warn!(error = %e, "no OS file watcher; workspace changes are polled every {POLL_INTERVAL:?}");
                }
                Box::new(
                    notify::PollWatcher::new(handler, config.with_poll_interval(POLL_INTERVAL))
                        .expect("the polling watcher needs no OS resources"),
                )
            }
        };
        Self { watcher: Mutex::new(watcher), routes, next_id: AtomicU64::new(0) }
    }

    /// Watch `rel` under the sandbox directory `root`, recursively: events with paths relative
    /// to it, until the receiver is dropped. Directory events are not reported. Blocking (the
    /// watcher walks the tree to add its watches).
    pub fn watch(&'static self, root: &Path, rel: &Path) -> notify::Result<mpsc::Receiver<FileEvent>> {
        let dir = root.join(rel);
        let (raw_tx, raw_rx) = mpsc::channel(RAW_QUEUE);
        let (tx, rx) = mpsc::channel(1024);
        let id = self.next_id.fetch_add(1, Ordering::SeqCst);
        let overflowed = Arc::new(AtomicBool::new(false));
        let wake = Arc::new(Notify::new());
        // Routed before the watch starts, so no early event is lost.
        let route = Route { id, dir: dir.clone(), raw: raw_tx, overflowed: overflowed.clone(), wake: wake.clone() };
        self.routes.lock().unwrap().push(route);
        if let Err(e) = self.watcher.lock().unwrap().watch(&dir, RecursiveMode::Recursive) {
            self.unroute(id);
            return Err(e);
        }
        let w = Watch { hub: self, id, dir, root: root.to_path_buf(), rel: rel.to_path_buf(), tx };
        tokio::spawn(w.run(raw_rx, overflowed, wake));
        Ok(rx)
    }

    fn unroute(&self, id: u64) -> Option<Route> {
        let mut routes = self.routes.lock().unwrap();
        let i = routes.iter().position(|r| r.id == id)?;
        Some(routes.swap_remove(i))
    }

    #[cfg(test)]
    fn watched(&self) -> usize {
        self.routes.lock().unwrap().len()
    }
}

/// One watch's task state; dropping it stops the watch.
struct Watch {
    hub: &'static WatchHub,
    id: u64,
    /// Host path of the watched directory (what event paths start with).
    dir: PathBuf,
    /// The sandbox directory and the watched one relative to it, for link-free scans.
    root: PathBuf,
    rel: PathBuf,
    tx: mpsc::Sender<FileEvent>,
}

impl Drop for Watch {
    fn drop(&mut self) {
        let Some(r) = self.hub.unroute(self.id) else { return };
        if !self.hub.routes.lock().unwrap().iter().any(|o| o.dir == r.dir) {
            // An error means it is gone already (its directory was removed): nothing to undo.
            let _ = self.hub.watcher.lock().unwrap().unwatch(&r.dir);
        }
    }
}

impl Watch {
    async fn run(
        self,
        mut raw: mpsc::Receiver<(FileEventKind, PathBuf)>,
        overflowed: Arc<AtomicBool>,
        wake: Arc<Notify>,
    ) {
        let this = Arc::new(self);
        loop {
            tokio::select! {
                ev = raw.recv() => {
                    let Some((kind, p)) = ev else { return };
                    if !this.handle(kind, p).await {
                        return;
                    }
                }
                _ = wake.notified() => {
                    if overflowed.swap(false, Ordering::SeqCst) && !this.scan(this.rel.clone()).await {
                        return;
                    }
                }
                _ = this.tx.closed() => return,
            }
        }
    }

    /// Forward one event; `false` once nobody listens.
    async fn handle(self: &Arc<Self>, kind: FileEventKind, p: PathBuf) -> bool {
        let Ok(rel) = p.strip_prefix(&self.dir) else { return true };
        if rel.as_os_str().is_empty() {
            return true;
        }
        if kind != FileEventKind::Deleted {
            let (root, under) = (self.root.clone(), self.rel.join(rel));
            let is_dir =
                tokio::task::spawn_blocking(move || beneath::entry(&root, &under) == beneath::Entry::Directory)
                    .await
                    .unwrap_or(false);
            if is_dir {
                // Files written into a new directory before its watch was added produce no
                // events of their own: report what is there now, and again once the watch is
                // surely in place. Repeats are harmless (unchanged files are skipped).
                let sub = self.rel.join(rel);
                let me = self.clone();
                tokio::spawn(async move {
                    for delay in [50, 250] {
                        tokio::time::sleep(Duration::from_millis(delay)).await;
                        if !me.scan(sub.clone()).await {
                            return;
                        }
                    }
                });
                return self.scan(self.rel.join(rel)).await;
            }
        }
        let path = rel.to_string_lossy().replace('\\', "/");
        self.tx.send(FileEvent { kind, path }).await.is_ok()
    }

    /// Report every regular file under `sub` (relative to the sandbox directory) as created.
    async fn scan(&self, sub: PathBuf) -> bool {
        let root = self.root.clone();
        let prefix = match sub.strip_prefix(&self.rel) {
            Ok(p) if !p.as_os_str().is_empty() => format!("{}/", p.to_string_lossy()),
            _ => String::new(),
        };
        let files = tokio::task::spawn_blocking(move || beneath::list_files(&root, &sub, &[]).unwrap_or_default())
            .await
            .unwrap_or_default();
        for f in files {
            let ev = FileEvent { kind: FileEventKind::Created, path: format!("{prefix}{f}") };
            if self.tx.send(ev).await.is_err() {
                return false;
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sandbox_dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!("arn-watch-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(d.join("workspace")).unwrap();
        d.canonicalize().unwrap()
    }

    async fn next(rx: &mut mpsc::Receiver<FileEvent>) -> FileEvent {
        let e = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await;
        e.expect("a file event").expect("watcher alive")
    }

    /// Events until `path` is reported created; panics on a timeout.
    async fn until_created(rx: &mut mpsc::Receiver<FileEvent>, path: &str) -> Vec<FileEvent> {
        let mut seen = Vec::new();
        loop {
            let e = next(rx).await;
            let done = e.kind == FileEventKind::Created && e.path == path;
            seen.push(e);
            if done {
                return seen;
            }
        }
    }

    #[tokio::test]
    async fn links_to_the_host_are_not_walked() {
        let root = sandbox_dir();
        let ws = root.join("workspace");
        let mut rx = WatchHub::global().watch(&root, Path::new("workspace")).unwrap();
        std::os::unix::fs::symlink("/", ws.join("root")).unwrap();
        std::os::unix::fs::symlink("/proc/self/environ", ws.join("env.txt")).unwrap();
        // A new directory holding a link to `/`: scanned, but the link is not entered.
        std::fs::create_dir(ws.join("d")).unwrap();
        std::os::unix::fs::symlink("/", ws.join("d/up")).unwrap();
        std::fs::write(ws.join("d/f.txt"), "x").unwrap();
        std::fs::write(ws.join("done.txt"), "x").unwrap();
        let seen = until_created(&mut rx, "done.txt").await;
        // The link entries themselves may be reported (and are then skipped when read); nothing
        // beneath them is.
        let beneath_links: Vec<_> =
            seen.iter().filter(|e| e.path.starts_with("root/") || e.path.starts_with("d/up/")).collect();
        assert!(beneath_links.is_empty(), "walked through a link: {beneath_links:?}");
        assert!(seen.iter().any(|e| e.path == "d/f.txt"), "{seen:?}");
        drop(rx);
        let _ = std::fs::remove_dir_all(root);
    }

    fn inotify_instances() -> usize {
        std::fs::read_dir("/proc/self/fd")
            .unwrap()
            .flatten()
            .filter(|e| std::fs::read_link(e.path()).is_ok_and(|l| l.to_string_lossy().contains("inotify")))
            .count()
    }

    #[tokio::test]
    async fn many_watches_share_one_inotify_instance() {
        let dirs: Vec<PathBuf> = (0..20).map(|_| sandbox_dir()).collect();
        let mut rxs: Vec<_> =
            dirs.iter().map(|d| WatchHub::global().watch(d, Path::new("workspace")).unwrap()).collect();
        assert!(inotify_instances() <= 1, "{} inotify instances for 20 watches", inotify_instances());
        for (i, d) in dirs.iter().enumerate() {
            std::fs::write(d.join(format!("workspace/own-{i}.txt")), "x").unwrap();
        }
        for (i, rx) in rxs.iter_mut().enumerate() {
            let seen = until_created(rx, &format!("own-{i}.txt")).await;
            assert!(seen.iter().all(|e| e.path == format!("own-{i}.txt")), "watch {i} saw {seen:?}");
        }
        // A dropped receiver ends its watch.
        let before = WatchHub::global().watched();
        drop(rxs);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while WatchHub::global().watched() > before.saturating_sub(20) {
            assert!(tokio::time::Instant::now() < deadline, "watches not removed");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        for d in dirs {
            let _ = std::fs::remove_dir_all(d);
        }
    }

    #[tokio::test]
    async fn the_polling_fallback_reports_changes() {
        let hub: &'static WatchHub = Box::leak(Box::new(WatchHub::new(true)));
        let root = sandbox_dir();
        let mut rx = hub.watch(&root, Path::new("workspace")).unwrap();
        std::fs::create_dir(root.join("workspace/sub")).unwrap();
        std::fs::write(root.join("workspace/sub/p.txt"), "x").unwrap();
        until_created(&mut rx, "sub/p.txt").await;
        std::fs::remove_file(root.join("workspace/sub/p.txt")).unwrap();
        loop {
            let e = next(&mut rx).await;
            if e.kind == FileEventKind::Deleted && e.path == "sub/p.txt" {
                break;
            }
        }
        let _ = std::fs::remove_dir_all(root);
    }
}
