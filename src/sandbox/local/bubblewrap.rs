//! The bubblewrap launcher of local sandboxes: what of the host a sandbox sees.
//!
//! Only what a runner executes from, read-only: the system directories, `/etc` with its secrets
//! masked, Node's installation and the node_modules folders holding the agent SDKs. Then its
//! own sandbox directory read-write with the runner code (`app/`) read-only again, a private
//! `/tmp`, its own `/proc` (PID namespace) and a minimal `/dev`. Not bound: `/run` (the host's
//! sockets), `/home`, `/var`, `/sys`, other sandboxes and the host application's files.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::config::SandboxNetwork;

/// Where programs execute from; on a merged-/usr host most of these are symbolic links.
const SYSTEM_DIRS: &[&str] = &["/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"];
/// Readable by root only on the host, but a runtime running as root would hand them over.
const MASKED_FILES: &[&str] = &["/etc/shadow", "/etc/shadow-", "/etc/gshadow", "/etc/gshadow-"];
const MASKED_DIRS: &[&str] = &["/etc/ssl/private"];

#[derive(Debug, Clone)]
pub struct Bubblewrap {
    /// Absolute path of `bwrap`, resolved from the runtime's own environment.
    program: PathBuf,
    network: SandboxNetwork,
    /// Host folders bound read-only besides the system ones (Node's installation, the
    /// node_modules folders of the runner's packages).
    toolchain: Vec<PathBuf>,
}

impl Bubblewrap {
    /// Probe bubblewrap (see [`detect`]) and fix the layout of every sandbox of a provider.
    pub fn new(network: SandboxNetwork, toolchain: Vec<PathBuf>) -> Result<Self, String> {
        Ok(Self { program: detect(network)?, network, toolchain })
    }

    /// The argv (program included) that runs a command in sandbox `dir`, working in `cwd`;
    /// the command follows.
    pub fn command(&self, dir: &Path, cwd: &Path) -> Vec<OsString> {
        let mut a = vec![self.program.clone().into_os_string()];
        a.extend(system_args(self.network));
        for p in &self.toolchain {
            a.extend(bind("--ro-bind", p));
        }
        a.extend(bind("--bind", dir));
        // After the writable bind, so the agent cannot delete or replace its runner.
        a.extend(bind("--ro-bind", &dir.join("app")));
        a.extend(["--chdir".into(), cwd.into(), "--".into()]);
        a
    }
}

fn bind(how: &str, p: &Path) -> [OsString; 3] {
    [how.into(), p.into(), p.into()]
}

/// Everything of the layout that does not depend on the sandbox.
fn system_args(network: SandboxNetwork) -> Vec<OsString> {
    let mut a: Vec<OsString> =
        ["--die-with-parent", "--unshare-pid", "--unshare-ipc", "--new-session"].into_iter().map(Into::into).collect();
    if network == SandboxNetwork::None {
        a.push("--unshare-net".into());
    }
    for d in SYSTEM_DIRS {
        let path = Path::new(d);
        match std::fs::symlink_metadata(path) {
            Ok(m) if m.file_type().is_symlink() => {
                if let Ok(target) = std::fs::read_link(path) {
                    a.extend(["--symlink".into(), target.into(), path.into()]);
                }
            }
            Ok(m) if m.is_dir() => a.extend(bind("--ro-bind", path)),
            _ => {}
        }
    }
    a.extend(bind("--ro-bind", Path::new("/etc")));
    let mut masked: Vec<PathBuf> = MASKED_FILES.iter().map(PathBuf::from).collect();
    // The host's SSH private keys; the public ones and the client configuration stay.
    if let Ok(entries) = std::fs::read_dir("/etc/ssh") {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with("ssh_host_") && name.ends_with("_key") {
                masked.push(e.path());
            }
        }
    }
    for f in masked.iter().filter(|f| f.symlink_metadata().is_ok_and(|m| m.is_file())) {
        a.extend(["--ro-bind".into(), "/dev/null".into(), f.into()]);
    }
    for d in MASKED_DIRS.iter().map(Path::new).filter(|d| d.symlink_metadata().is_ok_and(|m| m.is_dir())) {
        a.extend(["--tmpfs".into(), d.into(), "--remount-ro".into(), d.into()]);
    }
    // A resolver configuration kept under /run (systemd-resolved) is the one file of it needed.
    if network == SandboxNetwork::Host {
        if let Ok(target) = std::fs::canonicalize("/etc/resolv.conf") {
            if !target.starts_with("/etc") && !target.starts_with("/usr") {
                a.extend(bind("--ro-bind-try", &target));
            }
        }
    }
    a.extend(["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"].map(OsString::from));
    a
}

/// `name` on the runtime's own PATH (absolute entries only), never on a sandbox's.
fn find_on_path(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .filter(|d| d.is_absolute())
        .map(|d| d.join(name))
        .find(|p| std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0))
}

/// `bwrap`, found and able to build our layout here (it needs unprivileged user namespaces or
/// a setuid install, which containers often lack). Probed once per process and network mode;
/// `AGENT_RUNTIME_NO_BWRAP` turns it off.
pub fn detect(network: SandboxNetwork) -> Result<PathBuf, String> {
    if std::env::var_os("AGENT_RUNTIME_NO_BWRAP").is_some() {
        return Err("disabled by AGENT_RUNTIME_NO_BWRAP".into());
    }
    static PROBES: [OnceLock<Result<PathBuf, String>>; 2] = [OnceLock::new(), OnceLock::new()];
    PROBES[network as usize]
        .get_or_init(|| {
            let program = find_on_path("bwrap").ok_or("bwrap not found on PATH")?;
            let out = std::process::Command::new(&program)
                .args(system_args(network))
                .args(["--chdir", "/", "--", "true"])
                .output()
                .map_err(|e| format!("{} could not start: {e}", program.display()))?;
            if out.status.success() {
                Ok(program)
            } else {
                Err(format!("{} failed: {}", program.display(), String::from_utf8_lossy(&out.stderr).trim()))
            }
        })
        .clone()
}

/// The host folders a runner needs besides the system ones: Node's installation (the folder
/// above its `bin/`) and, for each package path, the outermost node_modules folder holding it
/// (the SDKs load peer and platform packages beside them). Paths the system binds already cover
/// are left out, and so is anything overlapping `sandbox_root` (it would expose other sandboxes).
pub fn toolchain(node: &str, packages: &[&str], sandbox_root: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = Vec::new();
    let node = if node.contains('/') { Some(PathBuf::from(node)) } else { find_on_path(node) };
    if let Some(dir) = node.and_then(|n| std::fs::canonicalize(n).ok()).and_then(|n| n.parent().map(Path::to_path_buf))
    {
        let prefix = match (dir.file_name(), dir.parent()) {
            (Some(b), Some(p)) if b == "bin" => p.to_path_buf(),
            _ => dir,
        };
        out.push(prefix);
    }
    for p in packages.iter().filter_map(|p| std::fs::canonicalize(p).ok()) {
        let outermost = p.ancestors().filter(|a| a.file_name().is_some_and(|n| n == "node_modules")).last();
        let folder = match outermost {
            Some(m) => m.to_path_buf(),
            None if p.is_dir() => p,
            None => p.parent().map(Path::to_path_buf).unwrap_or(p),
        };
        out.push(folder);
    }
    let root = std::fs::canonicalize(sandbox_root).unwrap_or_else(|_| sandbox_root.to_path_buf());
    let system = |p: &Path| SYSTEM_DIRS.iter().chain(&["/etc"]).any(|d| p.starts_with(d));
    let mut kept: Vec<PathBuf> = Vec::new();
    for p in out {
        if system(&p) || kept.iter().any(|k| p.starts_with(k)) {
            continue;
        }
        if p.starts_with(&root) || root.starts_with(&p) {
            tracing::warn!(path = %p.display(), root = %root.display(), "not bound into sandboxes: it overlaps the sandbox root");
            continue;
        }
        kept.retain(|k| !k.starts_with(&p));
        kept.push(p);
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toolchain_binds_node_prefix_and_outermost_node_modules_but_nothing_near_the_root() {
        let base = std::env::temp_dir().join(format!("arn-tc-{}", uuid::Uuid::new_v4().simple()));
        let node = base.join("nvm/v22/bin/node");
        let sdk = base.join("app/node_modules/@x/sdk/node_modules/inner/entry.mjs");
        let oc = base.join("app/node_modules");
        let root = base.join("sandboxes");
        let beside_root = root.join("node_modules/y/entry.mjs");
        for f in [&node, &sdk, &beside_root] {
            std::fs::create_dir_all(f.parent().unwrap()).unwrap();
            std::fs::write(f, "").unwrap();
        }
        let s = |p: &Path| p.display().to_string();
        let got = toolchain(&s(&node), &[&s(&sdk), &s(&oc), &s(&beside_root), "/usr/lib/node_modules"], &root);
        let base = std::fs::canonicalize(&base).unwrap();
        assert_eq!(got, [base.join("nvm/v22"), base.join("app/node_modules")]);
        let _ = std::fs::remove_dir_all(base);
    }
}
