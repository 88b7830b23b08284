//! Mapping of sandbox paths onto the host.
//!
//! A sandbox's `/` is the directory R = `<root>/<sandbox id>`. Commands still run on the host,
//! so only paths that clearly belong to the sandbox are rewritten: everything else (`/bin/sh`,
//! `/usr/lib/...`, `/dev/null`) must keep pointing at the host.

use std::path::{Path, PathBuf};

/// Directories every sandbox root gets at creation.
pub const SANDBOX_DIRS: [&str; 5] = ["app", "workspace", "root", "mcps", "tmp"];

/// Host directories that are never redirected, even if a command created a same-named
/// directory inside R (e.g. `tar -xf - -C /` of an archive containing `usr/`).
const HOST_DIRS: [&str; 16] = [
    "bin", "boot", "dev", "etc", "home", "lib", "lib32", "lib64", "nix", "opt", "proc", "run", "sbin", "sys", "usr",
    "var",
];

/// Translates one argv element, env value or workdir.
///
/// `/` becomes R; `/<top>` or `/<top>/...` becomes `R/<top>...` when `<top>` is a top-level entry
/// of R (the standard dirs, or anything created there later that does not shadow a host dir).
pub fn translate(root: &Path, s: &str) -> String {
    if s == "/" {
        return root.to_string_lossy().into_owned();
    }
    let Some(rest) = s.strip_prefix('/') else {
        return s.to_string();
    };
    let top = rest.split('/').next().unwrap_or("");
    if is_sandbox_top(root, top) {
        format!("{}{}", root.to_string_lossy(), s)
    } else {
        s.to_string()
    }
}

fn is_sandbox_top(root: &Path, top: &str) -> bool {
    if top.is_empty() || top == "." || top == ".." {
        return false;
    }
    if SANDBOX_DIRS.contains(&top) {
        return true;
    }
    !HOST_DIRS.contains(&top) && root.join(top).symlink_metadata().is_ok()
}

/// Path used by the file API: every absolute path lives under R, a relative one is taken
/// relative to R (Modal's resolution of relative paths is unverified; R is the best guess).
pub fn file_api_path(root: &Path, path: &str) -> PathBuf {
    root.join(path.trim_start_matches('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn translates_only_sandbox_paths() {
        let root = Path::new("/tmp/fake/sb-1");
        assert_eq!(translate(root, "/"), "/tmp/fake/sb-1");
        assert_eq!(translate(root, "/workspace"), "/tmp/fake/sb-1/workspace");
        assert_eq!(translate(root, "/app/x.ts"), "/tmp/fake/sb-1/app/x.ts");
        assert_eq!(translate(root, "/apps"), "/apps");
        assert_eq!(translate(root, "/bin/sh"), "/bin/sh");
        assert_eq!(translate(root, "/usr/bin/env"), "/usr/bin/env");
        assert_eq!(translate(root, "workspace"), "workspace");
        assert_eq!(translate(root, "--cwd=/workspace"), "--cwd=/workspace");
        assert_eq!(file_api_path(root, "/etc/x"), Path::new("/tmp/fake/sb-1/etc/x"));
        assert_eq!(file_api_path(root, "a/b"), Path::new("/tmp/fake/sb-1/a/b"));
    }
}
