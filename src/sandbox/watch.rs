//! Workspace file events, from the OS watcher (inotify on Linux) through `notify`.

use std::path::{Path, PathBuf};

use notify::{EventKind, RecursiveMode, Watcher};
use tokio::sync::mpsc;

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

/// Watch `dir` recursively. The watcher lives as long as the receiver is read: it stops when
/// the receiver is dropped. Directory events are not reported.
pub fn watch_dir(dir: &Path) -> notify::Result<mpsc::Receiver<FileEvent>> {
    let (tx, rx) = mpsc::channel(1024);
    let root: PathBuf = dir.to_path_buf();
    let (raw_tx, mut raw_rx) = mpsc::unbounded_channel::<notify::Event>();
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        if let Ok(ev) = res {
            let _ = raw_tx.send(ev);
        }
    })?;
    watcher.watch(dir, RecursiveMode::Recursive)?;
    tokio::spawn(async move {
        let _keep = watcher; // dropped (and stopped) when this task ends
        while let Some(ev) = raw_rx.recv().await {
            let kind = match ev.kind {
                EventKind::Create(_) => FileEventKind::Created,
                EventKind::Modify(notify::event::ModifyKind::Name(notify::event::RenameMode::From)) => {
                    FileEventKind::Deleted
                }
                EventKind::Modify(notify::event::ModifyKind::Name(_)) => FileEventKind::Created,
                EventKind::Modify(notify::event::ModifyKind::Metadata(_)) => continue,
                EventKind::Modify(_) => FileEventKind::Modified,
                EventKind::Remove(notify::event::RemoveKind::Folder) => continue,
                EventKind::Remove(_) => FileEventKind::Deleted,
                _ => continue,
            };
            let mut paths = Vec::new();
            for p in ev.paths {
                if kind != FileEventKind::Deleted && p.is_dir() {
                    // Files written into a new directory before its watch was added produce no
                    // events of their own: report what is there now, and again once the watch
                    // is surely in place. Repeats are harmless (unchanged files are skipped).
                    paths.extend(super::files_under(&p, &[]));
                    tokio::spawn(rescan(p.clone(), root.clone(), tx.clone()));
                } else {
                    paths.push(p);
                }
            }
            for p in paths {
                let Ok(rel) = p.strip_prefix(&root) else { continue };
                let rel = rel.to_string_lossy().replace('\\', "/");
                if rel.is_empty() {
                    continue;
                }
                if tx.send(FileEvent { kind, path: rel }).await.is_err() {
                    return;
                }
            }
        }
    });
    Ok(rx)
}

async fn rescan(dir: PathBuf, root: PathBuf, tx: mpsc::Sender<FileEvent>) {
    for delay in [50, 250] {
        tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
        for p in super::files_under(&dir, &[]) {
            let Ok(rel) = p.strip_prefix(&root) else { continue };
            let path = rel.to_string_lossy().replace('\\', "/");
            if tx.send(FileEvent { kind: FileEventKind::Created, path }).await.is_err() {
                return;
            }
        }
    }
}
