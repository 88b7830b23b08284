//! Files beneath a directory, never through a symbolic link.
//!
//! The agent owns everything inside its sandbox and can swap any entry for a link (to `/`, or to
//! `/proc/self/environ`, which the runtime would resolve to *its own* environment) or for a FIFO
//! at any moment. So a path is never resolved as text: each component is opened relative to the
//! directory opened before it with `O_NOFOLLOW`, and what was opened is checked with `fstat`.
//! A link anywhere on the way is refused; links inside are left out of listings and not read.
//! Blocking calls: run them off the async runtime (`spawn_blocking`).

use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path};

use rustix::fs::{AtFlags, Dir, FileType, Mode, OFlags, Stat};
use rustix::io::Errno;

use super::FileRead;

const DIR: OFlags = OFlags::RDONLY.union(OFlags::DIRECTORY).union(OFlags::NOFOLLOW).union(OFlags::CLOEXEC);
/// Non-blocking, so that a FIFO swapped in after the type check cannot hang the open.
const FILE: OFlags = OFlags::NOFOLLOW.union(OFlags::NONBLOCK).union(OFlags::CLOEXEC).union(OFlags::NOCTTY);

/// Deepest directory nesting a listing walks: each level holds a descriptor open, and an agent
/// can nest directories without end.
pub const MAX_DEPTH: usize = 128;

fn names(rel: &Path) -> io::Result<Vec<&OsStr>> {
    rel.components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(Ok(n)),
            Component::CurDir => None,
            _ => Some(Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} is not a relative path inside the sandbox", rel.display()),
            ))),
        })
        .collect()
}

fn link_refused(e: io::Error) -> io::Error {
    if e.raw_os_error() == Some(Errno::LOOP.raw_os_error()) {
        io::Error::other("a symbolic link is on the way (links are not followed)")
    } else if e.raw_os_error() == Some(Errno::NOTDIR.raw_os_error()) {
        // `O_DIRECTORY | O_NOFOLLOW` on a link answers ENOTDIR.
        io::Error::other("a symbolic link or a file is on the way (links are not followed)")
    } else {
        e
    }
}

/// The directory at `names` under `root`, creating missing ones when `create`.
fn open_dir(root: &Path, names: &[&OsStr], create: bool) -> io::Result<OwnedFd> {
    let mut dir = rustix::fs::open(root, DIR, Mode::empty())?;
    for n in names {
        dir = match rustix::fs::openat(&dir, *n, DIR, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::NOENT) if create => {
                match rustix::fs::mkdirat(&dir, *n, Mode::from_bits_truncate(0o755)) {
                    Ok(()) | Err(Errno::EXIST) => {}
                    Err(e) => return Err(e.into()),
                }
                rustix::fs::openat(&dir, *n, DIR, Mode::empty())?
            }
            Err(e) => return Err(e.into()),
        };
    }
    Ok(dir)
}

/// Why an entry of this type is not read or written as a file, if it is not a regular file.
fn not_regular(st: &Stat) -> Option<&'static str> {
    match FileType::from_raw_mode(st.st_mode) {
        FileType::RegularFile => None,
        FileType::Symlink => Some("a symbolic link (links are not followed)"),
        FileType::Directory => Some("a directory"),
        FileType::Fifo => Some("not a regular file (a FIFO)"),
        FileType::Socket => Some("not a regular file (a socket)"),
        FileType::CharacterDevice | FileType::BlockDevice => Some("not a regular file (a device)"),
        FileType::Unknown => Some("not a regular file"),
    }
}

/// `rel` under `root` when it is a regular file of at most `limit` bytes. The size comes from
/// the opened file's metadata before anything is read, and no more than `limit` bytes are read.
pub fn read_regular(root: &Path, rel: &Path, limit: u64) -> io::Result<FileRead> {
    let names = names(rel)?;
    let Some((last, parents)) = names.split_last() else { return Ok(FileRead::Skipped("a directory".into())) };
    let dir = match open_dir(root, parents, false) {
        Ok(d) => d,
        Err(e) if matches!(Errno::from_io_error(&e), Some(Errno::NOENT | Errno::NOTDIR)) => {
            return Ok(FileRead::Missing)
        }
        Err(e) if Errno::from_io_error(&e) == Some(Errno::LOOP) => {
            return Ok(FileRead::Skipped("a symbolic link is on its path (links are not followed)".into()))
        }
        Err(e) => return Err(e),
    };
    // The type before opening: opening a FIFO or a device has effects of its own.
    match rustix::fs::statat(&dir, *last, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => {
            if let Some(why) = not_regular(&st) {
                return Ok(FileRead::Skipped(why.into()));
            }
        }
        Err(Errno::NOENT) => return Ok(FileRead::Missing),
        Err(e) => return Err(e.into()),
    }
    let fd = match rustix::fs::openat(&dir, *last, FILE | OFlags::RDONLY, Mode::empty()) {
        Ok(fd) => fd,
        Err(Errno::NOENT) => return Ok(FileRead::Missing),
        Err(Errno::LOOP) => return Ok(FileRead::Skipped("a symbolic link (links are not followed)".into())),
        Err(e) => return Err(e.into()),
    };
    // What was opened, which may not be what was there a moment ago.
    let st = rustix::fs::fstat(&fd)?;
    if let Some(why) = not_regular(&st) {
        return Ok(FileRead::Skipped(why.into()));
    }
    let too_big = || FileRead::Skipped(format!("larger than {limit} bytes"));
    let size = st.st_size.max(0) as u64;
    if size > limit {
        return Ok(too_big());
    }
    let mut buf = Vec::with_capacity(size as usize);
    // One byte more than allowed tells a file that grew since the check.
    File::from(fd).take(limit.saturating_add(1)).read_to_end(&mut buf)?;
    if buf.len() as u64 > limit {
        return Ok(too_big());
    }
    Ok(FileRead::Content(buf))
}

/// Write `content` to `rel` under `root`, creating parent directories. A link (symbolic or
/// hard), FIFO or socket the agent left at that name is replaced, never written through; a
/// link on the way is an error.
pub fn write_file(root: &Path, rel: &Path, content: &[u8]) -> io::Result<()> {
    let names = names(rel)?;
    let Some((last, parents)) = names.split_last() else {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "no file name"));
    };
    let dir = open_dir(root, parents, true).map_err(link_refused)?;
    if let Ok(st) = rustix::fs::statat(&dir, *last, AtFlags::SYMLINK_NOFOLLOW) {
        let kind = FileType::from_raw_mode(st.st_mode);
        // A hard link's other names may be outside the sandbox: replace it too.
        let shared = kind == FileType::RegularFile && st.st_nlink > 1;
        if shared || !matches!(kind, FileType::RegularFile | FileType::Directory) {
            rustix::fs::unlinkat(&dir, *last, AtFlags::empty())?;
        }
    }
    let fd = rustix::fs::openat(&dir, *last, FILE | OFlags::WRONLY | OFlags::CREATE, Mode::from_bits_truncate(0o644))
        .map_err(|e| link_refused(e.into()))?;
    if let Some(why) = not_regular(&rustix::fs::fstat(&fd)?) {
        return Err(io::Error::other(format!("not written: {why}")));
    }
    rustix::fs::ftruncate(&fd, 0)?;
    File::from(fd).write_all(content)
}

/// Size and modification time of a file, read without following links.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    pub size: u64,
    /// Milliseconds since the epoch.
    pub modified_ms: Option<i64>,
}

/// [`Meta`] of `rel` under `root` when it is a regular file reached without links; `None` for
/// anything else (missing, a link, a directory, a FIFO).
pub fn stat_regular(root: &Path, rel: &Path) -> io::Result<Option<Meta>> {
    let names = names(rel)?;
    let Some((last, parents)) = names.split_last() else { return Ok(None) };
    let dir = match open_dir(root, parents, false) {
        Ok(d) => d,
        Err(e) if matches!(Errno::from_io_error(&e), Some(Errno::NOENT | Errno::NOTDIR | Errno::LOOP)) => {
            return Ok(None)
        }
        Err(e) => return Err(e),
    };
    match rustix::fs::statat(&dir, *last, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) if not_regular(&st).is_none() => Ok(Some(Meta {
            size: st.st_size.max(0) as u64,
            modified_ms: Some(st.st_mtime * 1000 + st.st_mtime_nsec as i64 / 1_000_000),
        })),
        Ok(_) | Err(Errno::NOENT) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Remove the file (or link, FIFO, ...) `rel` under `root`; `false` when nothing was there. A
/// directory is not removed, and a link on the way is an error (what it points to is untouched).
pub fn remove_file(root: &Path, rel: &Path) -> io::Result<bool> {
    let names = names(rel)?;
    let Some((last, parents)) = names.split_last() else {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "no file name"));
    };
    let dir = match open_dir(root, parents, false) {
        Ok(d) => d,
        Err(e) if matches!(Errno::from_io_error(&e), Some(Errno::NOENT | Errno::NOTDIR)) => return Ok(false),
        Err(e) => return Err(link_refused(e)),
    };
    match rustix::fs::statat(&dir, *last, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Directory => {
            Err(io::Error::other("a directory (only files are removed)"))
        }
        Ok(_) => match rustix::fs::unlinkat(&dir, *last, AtFlags::empty()) {
            Ok(()) => Ok(true),
            Err(Errno::NOENT) => Ok(false),
            Err(e) => Err(e.into()),
        },
        Err(Errno::NOENT) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Create the directory `rel` under `root` and its parents; a link on the way is an error.
pub fn mkdir_all(root: &Path, rel: &Path) -> io::Result<()> {
    open_dir(root, &names(rel)?, true).map(drop).map_err(link_refused)
}

/// What is at `rel` under `root`, without following a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entry {
    Missing,
    Directory,
    /// A regular file, a link or anything else that is not a directory.
    Other,
}

pub fn entry(root: &Path, rel: &Path) -> Entry {
    let Ok(names) = names(rel) else { return Entry::Missing };
    let Some((last, parents)) = names.split_last() else { return Entry::Directory };
    let Ok(dir) = open_dir(root, parents, false) else { return Entry::Missing };
    match rustix::fs::statat(&dir, *last, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Directory => Entry::Directory,
        Ok(_) => Entry::Other,
        Err(_) => Entry::Missing,
    }
}

/// Regular files under the directory `rel` of `root`, recursively, as `/`-separated paths
/// relative to it, sorted. Links (to files or directories) are left out, as are entries named
/// in `skip` and directories nested deeper than [`MAX_DEPTH`]. Nothing when `rel` is not a
/// directory reached without links.
pub fn list_files(root: &Path, rel: &Path, skip: &[&str]) -> io::Result<Vec<String>> {
    let dir = match open_dir(root, &names(rel)?, false) {
        Ok(d) => d,
        Err(e) if matches!(Errno::from_io_error(&e), Some(Errno::NOENT | Errno::NOTDIR | Errno::LOOP)) => {
            return Ok(Vec::new())
        }
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    walk(dir, "", 0, skip, &mut out);
    out.sort();
    Ok(out)
}

fn walk(dir: OwnedFd, prefix: &str, depth: usize, skip: &[&str], out: &mut Vec<String>) {
    let Ok(mut entries) = Dir::new(dir) else { return };
    let mut subdirs = Vec::new();
    while let Some(Ok(e)) = entries.read() {
        let name = OsStr::from_bytes(e.file_name().to_bytes());
        if name == "." || name == ".." || skip.iter().any(|s| name == *s) {
            continue;
        }
        let Ok(fd) = entries.fd() else { return };
        let kind = match e.file_type() {
            FileType::Unknown => match rustix::fs::statat(fd, name, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) => FileType::from_raw_mode(st.st_mode),
                Err(_) => continue,
            },
            k => k,
        };
        let path = format!("{prefix}{}", name.to_string_lossy());
        match kind {
            FileType::RegularFile => out.push(path),
            FileType::Directory if depth < MAX_DEPTH => {
                // O_NOFOLLOW again: the entry may have become a link since it was read.
                if let Ok(sub) = rustix::fs::openat(fd, name, DIR, Mode::empty()) {
                    subdirs.push((sub, path));
                }
            }
            FileType::Directory => tracing::warn!(%path, "directory nested too deep; not listed"),
            _ => {}
        }
        // Descend as we go, so at most one descriptor per level is open.
        for (sub, path) in subdirs.drain(..) {
            walk(sub, &format!("{path}/"), depth + 1, skip, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp() -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("arn-beneath-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(d.join("ws")).unwrap();
        d
    }

    #[test]
    fn reads_and_lists_without_following_links() {
        let root = tmp();
        let ws = root.join("ws");
        std::fs::write(ws.join("a.txt"), "a").unwrap();
        std::fs::create_dir(ws.join("d")).unwrap();
        std::fs::write(ws.join("d/b.txt"), "b").unwrap();
        std::os::unix::fs::symlink("/proc/self/environ", ws.join("env.txt")).unwrap();
        std::os::unix::fs::symlink("/", ws.join("root")).unwrap();
        std::os::unix::fs::symlink(ws.join("d"), ws.join("inner")).unwrap();
        let r = |p: &str| read_regular(&root, Path::new(p), 1 << 20).unwrap();
        assert_eq!(r("ws/a.txt"), FileRead::Content(b"a".to_vec()));
        assert!(matches!(r("ws/env.txt"), FileRead::Skipped(why) if why.contains("symbolic link")));
        // Through a link to a directory: as if nothing were there (the walk stops at the link).
        assert_eq!(r("ws/root/etc/passwd"), FileRead::Missing);
        assert_eq!(r("ws/inner/b.txt"), FileRead::Missing);
        assert_eq!(r("ws/nope"), FileRead::Missing);
        assert_eq!(r("ws/a.txt/x"), FileRead::Missing);
        assert_eq!(list_files(&root, Path::new("ws"), &[]).unwrap(), ["a.txt", "d/b.txt"]);
        assert!(list_files(&root, Path::new("ws/root"), &[]).unwrap().is_empty());
        assert!(list_files(&root, Path::new("ws/root/etc"), &[]).unwrap().is_empty());
        assert_eq!(entry(&root, Path::new("ws/root")), Entry::Other);
        assert_eq!(entry(&root, Path::new("ws/d")), Entry::Directory);
        let _ = std::fs::remove_dir_all(root);
    }

    #[test]
    fn writes_replace_links_instead_of_writing_through_them() {
        let root = tmp();
        let outside = root.join("outside.txt");
        std::fs::write(&outside, "host").unwrap();
        std::os::unix::fs::symlink(&outside, root.join("ws/sym")).unwrap();
        std::fs::hard_link(&outside, root.join("ws/hard")).unwrap();
        std::os::unix::fs::symlink(root.join("ws"), root.join("ws/dirlink")).unwrap();
        write_file(&root, Path::new("ws/sym"), b"new").unwrap();
        write_file(&root, Path::new("ws/hard"), b"new").unwrap();
        assert!(write_file(&root, Path::new("ws/dirlink/x"), b"new").is_err());
        assert!(mkdir_all(&root, Path::new("ws/dirlink/sub")).is_err());
        assert_eq!(std::fs::read_to_string(&outside).unwrap(), "host");
        assert_eq!(std::fs::read_to_string(root.join("ws/sym")).unwrap(), "new");
        assert_eq!(std::fs::read_to_string(root.join("ws/hard")).unwrap(), "new");
        assert!(!root.join("ws/x").exists() && !root.join("ws/sub").exists());
        let _ = std::fs::remove_dir_all(root);
    }

    #[test]
    fn stat_and_remove_do_not_follow_links() {
        let root = tmp();
        let outside = root.join("outside.txt");
        std::fs::write(&outside, "host").unwrap();
        std::fs::write(root.join("ws/a.txt"), "abc").unwrap();
        std::os::unix::fs::symlink(&outside, root.join("ws/sym")).unwrap();
        std::os::unix::fs::symlink(&root, root.join("ws/dirlink")).unwrap();
        let meta = stat_regular(&root, Path::new("ws/a.txt")).unwrap().unwrap();
        assert_eq!(meta.size, 3);
        assert!(meta.modified_ms.unwrap() > 0);
        assert_eq!(stat_regular(&root, Path::new("ws/sym")).unwrap(), None);
        assert_eq!(stat_regular(&root, Path::new("ws/dirlink/outside.txt")).unwrap(), None);
        assert_eq!(stat_regular(&root, Path::new("ws/nope")).unwrap(), None);
        // Through a link to a directory: refused or nothing there, never the file behind it.
        assert!(!remove_file(&root, Path::new("ws/dirlink/outside.txt")).unwrap_or(false));
        assert!(remove_file(&root, Path::new("ws")).is_err());
        assert!(remove_file(&root, Path::new("ws/sym")).unwrap());
        assert!(remove_file(&root, Path::new("ws/a.txt")).unwrap());
        assert!(!remove_file(&root, Path::new("ws/a.txt")).unwrap());
        assert!(!remove_file(&root, Path::new("ws/no/such")).unwrap());
        assert_eq!(std::fs::read_to_string(&outside).unwrap(), "host");
        let _ = std::fs::remove_dir_all(root);
    }

    #[test]
    fn listing_depth_is_bounded() {
        let root = tmp();
        let mut deep = root.join("ws");
        for _ in 0..MAX_DEPTH + 5 {
            deep.push("d");
        }
        std::fs::create_dir_all(&deep).unwrap();
        std::fs::write(deep.join("f"), "x").unwrap();
        std::fs::write(root.join("ws/top"), "x").unwrap();
        assert_eq!(list_files(&root, Path::new("ws"), &[]).unwrap(), ["top"]);
        let _ = std::fs::remove_dir_all(root);
    }
}
