//! Host paths out of messages sent to Socket.IO clients: runner stderr tails and adapter errors
//! name the sandbox root, the package directory or the user's home, which a browser client (often
//! unauthenticated) has no business learning. The backend's own channels (REST, the JS EventBus)
//! keep the full text for its logs.

use std::path::{Path, PathBuf};

use crate::config::RuntimeOptions;

#[derive(Clone, Debug, Default)]
pub struct Redactor {
    /// (path, placeholder), longest path first so the most specific wins.
    rules: Vec<(String, &'static str)>,
}

impl Redactor {
    pub fn for_runtime(opts: &RuntimeOptions) -> Self {
        let mut paths: Vec<(PathBuf, &'static str)> = vec![(opts.sandbox_root.clone(), "<sandbox-root>")];
        let host = &opts.host;
        if let Some(dir) = host.runner_dir.as_deref().map(Path::new).and_then(Path::parent) {
            paths.push((dir.to_path_buf(), "<package>"));
        }
        if let Some(m) = &host.open_code_modules {
            paths.push((PathBuf::from(m), "<node_modules>"));
        }
        if let Some(entry) = &host.claude_sdk_entry {
            if let Some(nm) = Path::new(entry).ancestors().find(|a| a.ends_with("node_modules")) {
                paths.push((nm.to_path_buf(), "<node_modules>"));
            }
        }
        if let Some(tmp) = &host.tmp_dir {
            paths.push((PathBuf::from(tmp), "<tmp>"));
        }
        if let Some(home) = std::env::var_os("HOME") {
            paths.push((PathBuf::from(home), "~"));
        }
        Self::new(paths)
    }

    pub fn new(paths: Vec<(PathBuf, &'static str)>) -> Self {
        let mut rules = Vec::new();
        for (p, placeholder) in paths {
            let real = std::fs::canonicalize(&p).ok();
            for p in std::iter::once(p).chain(real) {
                let s = p.to_string_lossy().trim_end_matches('/').to_string();
                // "/" or "/home" would mangle every message; only specific directories count.
                if p.components().count() >= 3 && !rules.iter().any(|(r, _)| *r == s) {
                    rules.push((s, placeholder));
                }
            }
        }
        rules.sort_by_key(|(r, _)| std::cmp::Reverse(r.len()));
        Self { rules }
    }

    pub fn apply(&self, text: &str) -> String {
        let mut out = text.to_string();
        for (path, placeholder) in &self.rules {
            if out.contains(path.as_str()) {
                out = out.replace(path.as_str(), placeholder);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_paths_are_replaced_most_specific_first() {
        let r = Redactor::new(vec![
            (PathBuf::from("/home/me"), "~"),
            (PathBuf::from("/home/me/app/node_modules/agent-runtime-native"), "<package>"),
            (PathBuf::from("/tmp/agent-runtime-native"), "<sandbox-root>"),
            (PathBuf::from("/"), "<root>"),
        ]);
        let msg =
            "Runner exited: Error: Cannot find module '/home/me/app/node_modules/agent-runtime-native/sandbox/x.mjs' \
                   (cwd /tmp/agent-runtime-native/abc/workspace, config /home/me/.claude)";
        assert_eq!(
            r.apply(msg),
            "Runner exited: Error: Cannot find module '<package>/sandbox/x.mjs' (cwd <sandbox-root>/abc/workspace, config ~/.claude)"
        );
    }
}
