//! Finding and killing every process of a local sandbox.
//!
//! Each process the sandbox launches is held by a pidfd: a signal through it reaches that
//! process or nothing, never an unrelated one that reused its pid, and exited ones are pruned.
//! Under bubblewrap that is enough: killing `bwrap` kills its PID namespace's init
//! (`--die-with-parent`), and the kernel then kills everything in the namespace. Every process
//! also carries the sandbox's marker in its environment, which finds what a plain-mode process
//! started in turn — background jobs, `setsid` daemons that left the process group. Limit of the
//! marker: a process that replaces its environment on exec (`env -i ...`) is no longer found;
//! only bubblewrap's PID namespace catches those.

use std::collections::HashMap;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::sync::Mutex;

/// A pidfd for `pid`, or `None` when it has already gone (or the kernel predates pidfds, 5.3).
fn pidfd_open(pid: i32) -> Option<OwnedFd> {
    // SAFETY: a syscall with integer arguments; a non-negative result is a new descriptor we own.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    // SAFETY: see above; nothing else owns this descriptor.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// A pidfd becomes readable when its process has exited.
fn exited(fd: &OwnedFd) -> bool {
    let mut p = libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
    // SAFETY: one valid pollfd, zero timeout.
    let n = unsafe { libc::poll(&mut p, 1, 0) };
    n != 0
}

fn kill(fd: &OwnedFd) -> bool {
    // SAFETY: a syscall on a descriptor we own; no info struct.
    unsafe { libc::syscall(libc::SYS_pidfd_send_signal, fd.as_raw_fd(), libc::SIGKILL, std::ptr::null::<u8>(), 0) == 0 }
}

/// The processes one sandbox launched that may still run.
#[derive(Default)]
pub struct Launched(Mutex<Vec<OwnedFd>>);

impl Launched {
    /// Track `pid`, a child not yet reaped (so the pid is still its own).
    pub fn add(&self, pid: i32) {
        let mut fds = self.0.lock().unwrap();
        fds.retain(|fd| !exited(fd));
        fds.extend(pidfd_open(pid));
    }

    /// How many are still running.
    #[cfg(test)]
    pub fn running(&self) -> usize {
        let mut fds = self.0.lock().unwrap();
        fds.retain(|fd| !exited(fd));
        fds.len()
    }

    /// Hand the pidfds over for [`kill_all`].
    pub fn take(&self) -> Vec<OwnedFd> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

/// SIGKILL the launched processes, then every process of this user whose environment holds
/// `entry` (`NAME=value`). Blocking (reads /proc).
pub fn kill_all(launched: Vec<OwnedFd>, entry: &str) {
    for fd in launched.iter().filter(|fd| !exited(fd)) {
        kill(fd);
    }
    kill_marked(entry);
}

/// Scan /proc until a round finds no process with the marker that was not already killed
/// (processes may fork while we look; bounded rounds).
fn kill_marked(entry: &str) {
    let needle = format!("{entry}\0").into_bytes();
    // SAFETY: no preconditions.
    let (uid, me) = unsafe { (libc::geteuid(), libc::getpid()) };
    let mut killed: HashMap<i32, Option<OwnedFd>> = HashMap::new();
    for _ in 0..64 {
        let mut new = 0;
        let Ok(dir) = std::fs::read_dir("/proc") else { return };
        for e in dir.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else { continue };
            if pid == me || e.metadata().map_or(true, |m| uid != 0 && m.uid() != uid) {
                continue;
            }
            if killed.get(&pid).is_some_and(|fd| fd.as_ref().is_none_or(|fd| !exited(fd))) {
                continue;
            }
            // The pidfd first: if it is still alive after the read, the environment read was its.
            let fd = pidfd_open(pid);
            let Ok(env) = std::fs::read(format!("/proc/{pid}/environ")) else { continue };
            let marked =
                env.starts_with(&needle) || env.windows(needle.len() + 1).any(|w| w[0] == 0 && w[1..] == needle);
            if !marked {
                continue;
            }
            let sent = match &fd {
                Some(fd) => kill(fd),
                // SAFETY: no memory preconditions (kernels without pidfds: a small pid-reuse window).
                None => unsafe { libc::kill(pid, libc::SIGKILL) == 0 },
            };
            if sent {
                new += 1;
                killed.insert(pid, fd);
            }
        }
        if new == 0 {
            return;
        }
    }
}
