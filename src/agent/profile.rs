//! The parts of an agent profile that become files in a sandbox, shared by the architectures
//! (each writes them where its agent looks), and the name and path checks they all need.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::{Map, Value};

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct ProfileParts {
    #[serde(default, rename = "agentMDFile")]
    pub agent_md_file: Option<String>,
    #[serde(default)]
    pub subagents: Vec<Subagent>,
    #[serde(default)]
    pub commands: Vec<Command>,
    #[serde(default)]
    pub skills: Vec<Skill>,
    #[serde(default, rename = "bundledMCPs")]
    pub bundled_mcps: Vec<LocalMcp>,
    #[serde(default, rename = "externalMCPs")]
    pub external_mcps: Vec<Value>,
    #[serde(default)]
    pub tools: Option<Vec<String>>,
}

#[derive(Deserialize)]
pub struct Subagent {
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub prompt: String,
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub tools: Option<Vec<String>>,
}

#[derive(Deserialize)]
pub struct Command {
    pub name: String,
    #[serde(default)]
    pub prompt: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Skill {
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub skill_md: String,
    #[serde(default)]
    pub supporting_files: Vec<SupportingFile>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SupportingFile {
    pub relative_path: String,
    #[serde(default)]
    pub content: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LocalMcp {
    pub name: String,
    #[serde(default)]
    pub local_project_path: Option<String>,
    #[serde(default)]
    pub start_command: String,
}

/// A single path segment we are willing to use as a file name.
pub fn safe_name(kind: &str, name: &str) -> bool {
    let ok = !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\\', '\0']);
    if !ok {
        tracing::warn!(kind, name, "skipping profile entry whose name is not a plain file name");
    }
    ok
}

/// A relative path that stays inside its folder.
pub fn safe_relative(p: &str) -> bool {
    let path = Path::new(p);
    !p.is_empty() && path.is_relative() && path.components().all(|c| matches!(c, std::path::Component::Normal(_)))
}

pub fn yaml_str(s: &str) -> String {
    serde_json::to_string(s).expect("strings serialize") // a JSON string is a valid YAML double-quoted scalar
}

/// Normalized folder name of a bundled MCP server, as the reference: lowercase, spaces to `_`.
pub fn mcp_dir_name(name: &str) -> String {
    name.to_lowercase().replace(' ', "_")
}

/// The reference's start-command rewrite: the first token is the command; later tokens that look
/// like relative paths are resolved against the server's folder.
pub fn mcp_command(server_dir: &Path, start: &str) -> (String, Vec<String>) {
    let mut parts = start.split_whitespace();
    let cmd = parts.next().unwrap_or_default().to_string();
    let args = parts
        .map(|t| {
            if t.starts_with('-') || t.starts_with('/') || t.contains('=') {
                t.to_string()
            } else {
                server_dir.join(t).display().to_string()
            }
        })
        .collect();
    (cmd, args)
}

/// The profile's file-bearing parts; unreadable fields give an empty profile (logged).
pub fn parse(profile_raw: &Map<String, Value>) -> ProfileParts {
    serde_json::from_value(Value::Object(profile_raw.clone())).unwrap_or_else(|e| {
        tracing::warn!(error = %e, "agent profile fields could not be read; writing no profile files");
        ProfileParts::default()
    })
}

/// One `<name>.md` per command (its prompt) in `dir`.
pub fn command_files(p: &ProfileParts, dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    p.commands
        .iter()
        .filter(|c| safe_name("command", &c.name))
        .map(|c| (dir.join(format!("{}.md", c.name)), c.prompt.clone().into_bytes()))
        .collect()
}

/// `<dir>/<skill>/SKILL.md` (with name/description frontmatter) and its supporting files.
pub fn skill_files(p: &ProfileParts, dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut files = Vec::new();
    for s in p.skills.iter().filter(|s| safe_name("skill", &s.name)) {
        let dir = dir.join(&s.name);
        let md = format!(
            "---\nname: {}\ndescription: {}\n---\n\n{}",
            yaml_str(&s.name),
            yaml_str(s.description.as_deref().unwrap_or("")),
            s.skill_md
        );
        files.push((dir.join("SKILL.md"), md.into_bytes()));
        for f in &s.supporting_files {
            if safe_relative(&f.relative_path) {
                files.push((dir.join(&f.relative_path), f.content.clone().into_bytes()));
            } else {
                tracing::warn!(skill = %s.name, path = %f.relative_path, "skipping supporting file outside its skill folder");
            }
        }
    }
    files
}
