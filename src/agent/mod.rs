//! Agent architectures (Claude Agent SDK, OpenCode): what differs per agent.
//!
//! Today: session id formats and transcript -> blocks parsing. The sandbox-facing half
//! (session files, runner command, live stream conversion) joins this module with the
//! sandbox layer.

pub mod architecture;
pub mod blocks;
pub mod claude;
pub mod ident;
pub mod opencode;
pub mod profile;
pub mod runner;
pub mod stream;
pub mod turn_end;

use rand::Rng;
use serde::{Deserialize, Serialize};

use blocks::ParsedTranscript;

/// `AGENT_ARCHITECTURE_TYPE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
pub enum Architecture {
    #[serde(rename = "claude-agent-sdk")]
    ClaudeAgentSdk,
    #[serde(rename = "opencode")]
    OpenCode,
}

impl Architecture {
    pub fn as_str(self) -> &'static str {
        match self {
            Architecture::ClaudeAgentSdk => "claude-agent-sdk",
            Architecture::OpenCode => "opencode",
        }
    }

    /// A new session id in the reference's format for this architecture: a v4 UUID for Claude
    /// (reused as Claude Code's own session id), `ses_<12 hex ms>_<base36>` for OpenCode.
    pub fn new_session_id(self) -> String {
        match self {
            Architecture::ClaudeAgentSdk => uuid::Uuid::new_v4().to_string(),
            Architecture::OpenCode => {
                let mut rng = rand::rng();
                let suffix: String =
                    (0..11).map(|_| std::char::from_digit(rng.random_range(0..36), 36).unwrap()).collect();
                format!("ses_{:012x}_{suffix}", crate::time::now_ms())
            }
        }
    }

    /// Parse a stored raw transcript into blocks and subagent conversations.
    pub fn parse_transcript(self, raw: &str) -> ParsedTranscript {
        match self {
            Architecture::ClaudeAgentSdk => claude::transcript::parse_combined(raw),
            Architecture::OpenCode => opencode::transcript::parse_export(raw),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_id_formats() {
        let c = Architecture::ClaudeAgentSdk.new_session_id();
        assert!(uuid::Uuid::parse_str(&c).is_ok());
        let o = Architecture::OpenCode.new_session_id();
        let parts: Vec<&str> = o.split('_').collect();
        assert_eq!(parts.len(), 3, "{o}");
        assert_eq!(parts[0], "ses");
        assert_eq!(parts[1].len(), 12);
        assert!(i64::from_str_radix(parts[1], 16).is_ok());
        assert_eq!(parts[2].len(), 11);
    }
}
