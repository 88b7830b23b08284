//! Which tool calls may run unasked: a session's `permissionMode` and its allow/deny rules
//! (agent profile, `sessionOptions.permissions`, and answers given with `remember`).

use serde_json::{Map, Value};

/// `sessionOptions.permissionMode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PermissionMode {
    /// The reference's behaviour: nothing asks (deny rules still hold).
    #[default]
    Bypass,
    /// Every call the rules do not settle waits for a person.
    Ask,
    /// File edits run; the rest is as `Ask`.
    AcceptEdits,
}

/// What happens to one tool call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// Denied by this rule.
    Deny(String),
    Ask,
}

/// Tool names (both agents') whose calls edit files.
const EDIT_TOOLS: &[&str] = &["write", "edit", "multiedit", "notebookedit", "patch"];

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Rules {
    pub allow: Vec<String>,
    pub deny: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Policy {
    pub mode: PermissionMode,
    pub rules: Rules,
}

/// Check the permission fields of session options; the error names the field.
pub fn validate_options(options: &Map<String, Value>) -> Result<(), String> {
    mode_of(options)?;
    rules_of(options.get("permissions"), "sessionOptions.permissions")?;
    if let Some(b) = options.get("budget").filter(|b| !b.is_null()) {
        let budget: crate::usage::Budget = serde_json::from_value(b.clone()).map_err(|e| {
            format!(
                "sessionOptions.budget: {e} (expected {{ maxCostUsd?, maxTokens?, maxTurnMs?, maxSandboxSeconds? }})"
            )
        })?;
        budget.validated("sessionOptions.budget")?;
    }
    for key in ["permissionTimeoutMs", "interruptGraceMs"] {
        if let Some(v) = options.get(key) {
            if !v.as_u64().is_some_and(|n| n > 0) {
                return Err(format!("sessionOptions.{key} must be a positive integer (milliseconds), got {v}"));
            }
        }
    }
    Ok(())
}

fn mode_of(options: &Map<String, Value>) -> Result<PermissionMode, String> {
    match options.get("permissionMode") {
        None | Some(Value::Null) => Ok(PermissionMode::Bypass),
        Some(Value::String(s)) if s == "bypass" => Ok(PermissionMode::Bypass),
        Some(Value::String(s)) if s == "ask" => Ok(PermissionMode::Ask),
        Some(Value::String(s)) if s == "acceptEdits" => Ok(PermissionMode::AcceptEdits),
        Some(v) => {
            Err(format!("sessionOptions.permissionMode must be \"bypass\", \"ask\" or \"acceptEdits\", got {v}"))
        }
    }
}

fn rules_of(v: Option<&Value>, field: &str) -> Result<Rules, String> {
    let Some(v) = v.filter(|v| !v.is_null()) else { return Ok(Rules::default()) };
    let Value::Object(o) = v else {
        return Err(format!("{field} must be an object {{ allow?: string[], deny?: string[] }}"));
    };
    let list = |key: &str| -> Result<Vec<String>, String> {
        match o.get(key) {
            None | Some(Value::Null) => Ok(vec![]),
            Some(Value::Array(items)) => items
                .iter()
                .map(|i| {
                    i.as_str().map(str::to_string).ok_or_else(|| format!("{field}.{key} must hold strings, got {i}"))
                })
                .collect(),
            Some(other) => Err(format!("{field}.{key} must be an array of strings, got {other}")),
        }
    };
    Ok(Rules { allow: list("allow")?, deny: list("deny")? })
}

impl Policy {
    /// The policy of a session: its options over its profile, plus what was remembered.
    pub fn of(options: &Map<String, Value>, profile: &Map<String, Value>, remembered: &Rules) -> Self {
        let mode = mode_of(options).unwrap_or_default();
        let mut rules = Rules::default();
        for r in [
            rules_of(profile.get("permissions"), "profile.permissions").unwrap_or_default(),
            rules_of(options.get("permissions"), "sessionOptions.permissions").unwrap_or_default(),
            remembered.clone(),
        ] {
            rules.allow.extend(r.allow);
            rules.deny.extend(r.deny);
        }
        Policy { mode, rules }
    }

    /// Whether the runner must bring tool calls to the host at all.
    pub fn runner_asks(&self) -> bool {
        self.mode != PermissionMode::Bypass || !self.rules.deny.is_empty()
    }

    pub fn decide(&self, tool: &str, input: &Value) -> Decision {
        if let Some(rule) = self.rules.deny.iter().find(|r| rule_matches(r, tool, input)) {
            return Decision::Deny(rule.clone());
        }
        if self.mode == PermissionMode::Bypass || self.rules.allow.iter().any(|r| rule_matches(r, tool, input)) {
            return Decision::Allow;
        }
        if self.mode == PermissionMode::AcceptEdits && EDIT_TOOLS.contains(&tool.to_ascii_lowercase().as_str()) {
            return Decision::Allow;
        }
        Decision::Ask
    }
}

/// The argument a rule's `(pattern)` is matched against: the command, path or URL of the call.
fn primary_argument(input: &Value) -> String {
    for key in ["command", "file_path", "filePath", "notebook_path", "path", "url", "pattern"] {
        if let Some(s) = input.get(key).and_then(Value::as_str) {
            return s.to_string();
        }
    }
    input.to_string()
}

/// `Name`, `Name(pattern)`; `*` matches anything in either part, names ignore case (the
/// agents spell the same tool `Bash` and `bash`).
pub fn rule_matches(rule: &str, tool: &str, input: &Value) -> bool {
    let rule = rule.trim();
    let (name, pattern) = match rule.split_once('(') {
        Some((n, rest)) if rest.ends_with(')') => (n.trim(), Some(&rest[..rest.len() - 1])),
        _ => (rule, None),
    };
    if !glob(&name.to_ascii_lowercase(), &tool.to_ascii_lowercase()) {
        return false;
    }
    pattern.is_none_or(|p| glob(p, &primary_argument(input)))
}

/// `*` is any run of characters, everything else is literal.
fn glob(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !text.starts_with(first) || text.len() < first.len() + last.len() || !text.ends_with(last) {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(i) => rest = &rest[i + mid.len()..],
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn policy(options: Value) -> Policy {
        Policy::of(options.as_object().unwrap(), &Map::new(), &Rules::default())
    }

    #[test]
    fn rules_match_names_and_arguments() {
        let git = json!({ "command": "git status" });
        assert!(rule_matches("Bash", "Bash", &git));
        assert!(rule_matches("Bash", "bash", &git), "names ignore case across agents");
        assert!(rule_matches("Bash(git *)", "Bash", &git));
        assert!(!rule_matches("Bash(git *)", "Bash", &json!({ "command": "rm -rf /" })));
        assert!(!rule_matches("Bash(git *)", "Bash", &json!({ "command": "echo git x" })));
        assert!(rule_matches("mcp__github__*", "mcp__github__create_issue", &json!({})));
        assert!(!rule_matches("mcp__github__*", "mcp__gitlab__x", &json!({})));
        assert!(rule_matches("Write(src/*)", "Write", &json!({ "file_path": "src/a/b.rs" })));
        assert!(rule_matches("Read(*.env)", "read", &json!({ "filePath": "/w/.env" })));
        assert!(!rule_matches("Read", "ReadMcpResourceTool", &json!({})));
    }

    #[test]
    fn deny_wins_and_modes_decide_the_rest() {
        let p =
            policy(json!({ "permissionMode": "ask", "permissions": { "allow": ["Bash"], "deny": ["Bash(rm *)"] } }));
        assert_eq!(p.decide("Bash", &json!({ "command": "ls" })), Decision::Allow);
        assert_eq!(p.decide("Bash", &json!({ "command": "rm -rf x" })), Decision::Deny("Bash(rm *)".into()));
        assert_eq!(p.decide("Read", &json!({ "file_path": "a" })), Decision::Ask, "ask mode asks even for reads");
        let edits = policy(json!({ "permissionMode": "acceptEdits" }));
        assert_eq!(edits.decide("Write", &json!({})), Decision::Allow);
        assert_eq!(edits.decide("edit", &json!({})), Decision::Allow);
        assert_eq!(edits.decide("Bash", &json!({})), Decision::Ask);
        let bypass = policy(json!({ "permissions": { "deny": ["WebFetch"] } }));
        assert!(bypass.runner_asks(), "a deny rule needs the runner to ask");
        assert_eq!(bypass.decide("WebFetch", &json!({})), Decision::Deny("WebFetch".into()));
        assert_eq!(bypass.decide("Bash", &json!({})), Decision::Allow);
        assert!(!policy(json!({})).runner_asks());
    }

    #[test]
    fn remembered_and_profile_rules_join_the_options() {
        let remembered = Rules { allow: vec!["Bash".into()], deny: vec![] };
        let profile = json!({ "permissions": { "deny": ["Write"] } });
        let p = Policy::of(
            json!({ "permissionMode": "ask" }).as_object().unwrap(),
            profile.as_object().unwrap(),
            &remembered,
        );
        assert_eq!(p.decide("Bash", &json!({ "command": "x" })), Decision::Allow);
        assert_eq!(p.decide("Write", &json!({})), Decision::Deny("Write".into()));
    }

    #[test]
    fn bad_options_are_named() {
        let bad = |v: Value| validate_options(v.as_object().unwrap()).unwrap_err();
        assert!(bad(json!({ "permissionMode": "always" })).contains("permissionMode"));
        assert!(bad(json!({ "permissions": { "allow": "Bash" } })).contains("permissions.allow"));
        assert!(bad(json!({ "permissions": { "deny": [1] } })).contains("permissions.deny"));
        assert!(bad(json!({ "permissionTimeoutMs": -5 })).contains("permissionTimeoutMs"));
        assert!(validate_options(
            json!({ "permissionMode": "ask", "permissions": { "allow": ["Read"] } }).as_object().unwrap()
        )
        .is_ok());
    }
}
