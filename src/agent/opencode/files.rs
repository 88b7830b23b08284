//! The agent profile as files in an OpenCode sandbox (spec §7.1).
//!
//! Differences from the reference: `AGENTS.md` goes where OpenCode reads it (its global rules
//! file, `$HOME/.config/opencode/AGENTS.md`) instead of `.opencode/AGENTS.md`, which OpenCode
//! never looks at — and not into the workspace, where it would become a user file; agent files
//! get frontmatter (`description`, `mode: subagent`) so OpenCode registers them; names that are
//! not plain file names are skipped.

use std::path::{Path, PathBuf};

use serde_json::{json, Map, Value};

use crate::agent::profile::{self, mcp_command, mcp_dir_name, safe_name, yaml_str};

pub struct ProfileFiles {
    pub files: Vec<(PathBuf, Vec<u8>)>,
    /// Bundled MCP folders to copy: (name, local path).
    pub bundled_mcps: Vec<(String, String)>,
}

pub fn profile_files(profile_raw: &Map<String, Value>, workspace: &Path, home: &Path, mcps_dir: &Path) -> ProfileFiles {
    let p = profile::parse(profile_raw);
    let dot = workspace.join(".opencode");
    let mut files = Vec::new();
    if let Some(md) = &p.agent_md_file {
        files.push((home.join(".config").join("opencode").join("AGENTS.md"), md.clone().into_bytes()));
    }
    for a in p.subagents.iter().filter(|a| safe_name("subagent", &a.name)) {
        let mut md =
            format!("---\ndescription: {}\nmode: subagent\n", yaml_str(a.description.as_deref().unwrap_or(&a.name)));
        if let Some(m) = &a.model {
            md.push_str(&format!("model: {}\n", yaml_str(m)));
        }
        md.push_str("---\n\n");
        md.push_str(&a.prompt);
        files.push((dot.join("agent").join(format!("{}.md", a.name)), md.into_bytes()));
    }
    files.extend(profile::command_files(&p, &dot.join("command")));
    files.extend(profile::skill_files(&p, &dot.join("skills")));
    let mut config = json!({ "permission": { "bash": "allow", "edit": "allow", "external_directory": "deny" } });
    if !p.skills.is_empty() {
        config["plugin"] = json!(["opencode-skills"]);
    }
    let mut mcp = Map::new();
    for m in p.bundled_mcps.iter().filter(|m| safe_name("bundled MCP", &mcp_dir_name(&m.name))) {
        let (command, args) = mcp_command(&mcps_dir.join(mcp_dir_name(&m.name)), &m.start_command);
        let mut cmd = vec![command];
        cmd.extend(args);
        mcp.insert(m.name.clone(), json!({ "type": "local", "command": cmd, "enabled": true }));
    }
    if !mcp.is_empty() {
        config["mcp"] = Value::Object(mcp);
    }
    files.push((dot.join("opencode.json"), serde_json::to_vec_pretty(&config).expect("json")));
    let bundled_mcps = p.bundled_mcps.into_iter().filter_map(|m| Some((m.name, m.local_project_path?))).collect();
    ProfileFiles { files, bundled_mcps }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profile_becomes_opencode_files() {
        let raw = json!({
            "id": "p", "name": "P", "agentMDFile": "# Rules",
            "subagents": [{"name": "helper", "description": "Helps: a lot", "prompt": "You help."}, {"name": "../x", "prompt": ""}],
            "commands": [{"name": "hi", "prompt": "Say hi"}],
            "bundledMCPs": [{"name": "Echo Server", "localProjectPath": "/src/echo", "startCommand": "tsx src/index.ts"}],
        });
        let pf = profile_files(raw.as_object().unwrap(), Path::new("/w"), Path::new("/h"), Path::new("/mcps"));
        let by: std::collections::HashMap<_, _> =
            pf.files.iter().map(|(p, b)| (p.display().to_string(), String::from_utf8_lossy(b).into_owned())).collect();
        assert_eq!(by["/h/.config/opencode/AGENTS.md"], "# Rules");
        assert_eq!(
            by["/w/.opencode/agent/helper.md"],
            "---\ndescription: \"Helps: a lot\"\nmode: subagent\n---\n\nYou help."
        );
        assert_eq!(by["/w/.opencode/command/hi.md"], "Say hi");
        assert!(!by.keys().any(|k| k.contains("..")));
        let cfg: Value = serde_json::from_str(&by["/w/.opencode/opencode.json"]).unwrap();
        assert_eq!(cfg["permission"]["external_directory"], "deny");
        assert_eq!(cfg["mcp"]["Echo Server"]["command"], json!(["tsx", "/mcps/echo_server/src/index.ts"]));
        assert_eq!(pf.bundled_mcps, vec![("Echo Server".to_string(), "/src/echo".to_string())]);
    }
}
