//! The environment names the runtime owns inside a sandbox. A profile's `environmentVariables`
//! come from whoever wrote the profile, `sandbox.env` from the backend; neither may take over
//! what the runtime sets itself (where the sandbox lives, how the runner starts) nor inject code
//! into the processes the runtime launches (the dynamic loader's and Node's preload variables).

use std::collections::BTreeMap;

/// Set by the runtime for every sandbox process (the local provider's marker included).
pub const RESERVED_NAMES: &[&str] = &[
    "PATH",
    "HOME",
    "TMPDIR",
    "IS_SANDBOX",
    "NODE_OPTIONS",
    "NODE_PATH",
    "CLAUDE_AGENT_SDK_ENTRY",
    "AGENT_RUNTIME_NODE_MODULES",
    SANDBOX_MARKER,
];

/// Whole families: the dynamic loader's variables (`LD_PRELOAD`, `LD_LIBRARY_PATH`, ...).
pub const RESERVED_PREFIXES: &[&str] = &["LD_"];

/// Carries the sandbox's id in every process it starts, so all of them can be found again.
pub const SANDBOX_MARKER: &str = "AGENT_RUNTIME_SANDBOX";

pub fn is_reserved(name: &str) -> bool {
    RESERVED_NAMES.contains(&name) || RESERVED_PREFIXES.iter().any(|p| name.starts_with(p))
}

/// Remove the reserved names, and names or values no process environment can hold (empty name,
/// `=` or NUL in it, NUL in the value). Returns the names removed, for a warning; values are never
/// reported (they may be secrets).
pub fn drop_reserved(env: &mut BTreeMap<String, String>) -> Vec<String> {
    let mut dropped = Vec::new();
    env.retain(|k, v| {
        let invalid = k.is_empty() || k.contains(['=', '\0']) || v.contains('\0');
        let keep = !invalid && !is_reserved(k);
        if !keep {
            dropped.push(k.clone());
        }
        keep
    });
    dropped
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_and_invalid_names_are_dropped_and_named() {
        let mut env: BTreeMap<String, String> = [
            ("PATH", "/evil"),
            ("LD_PRELOAD", "/x.so"),
            ("NODE_OPTIONS", "--require /x"),
            ("AGENT_RUNTIME_SANDBOX", "other"),
            ("A=B", "1"),
            ("NUL", "a\0b"),
            ("ANTHROPIC_API_KEY", "secret-value"),
            ("AGENT_RUNTIME_OPENCODE_MAX_RETRIES", "0"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let dropped = drop_reserved(&mut env);
        assert_eq!(dropped, ["A=B", "AGENT_RUNTIME_SANDBOX", "LD_PRELOAD", "NODE_OPTIONS", "NUL", "PATH"]);
        assert_eq!(env.keys().collect::<Vec<_>>(), ["AGENT_RUNTIME_OPENCODE_MAX_RETRIES", "ANTHROPIC_API_KEY"]);
    }
}
