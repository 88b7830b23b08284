//! Structured one-line logs on stderr through `tracing`.
//!
//! Level: the runtime's `logLevel`, else `LOG_LEVEL`, else `info`. Installed once per process;
//! later runtimes only adjust nothing (the first wins), which matches one Node process = one logger.

use std::sync::Once;

static INIT: Once = Once::new();

/// Map the reference's level names (pino's: trace/debug/info/warn/error/fatal) to tracing's.
pub fn normalize_level(level: &str) -> Option<&'static str> {
    match level.trim().to_ascii_lowercase().as_str() {
        "trace" => Some("trace"),
        "debug" => Some("debug"),
        "info" => Some("info"),
        "warn" | "warning" => Some("warn"),
        "error" | "fatal" => Some("error"),
        "silent" | "off" => Some("off"),
        _ => None,
    }
}

pub fn init(level: Option<&str>) {
    INIT.call_once(|| {
        let env_level = std::env::var("LOG_LEVEL").ok();
        let level = level
            .and_then(normalize_level)
            .or_else(|| env_level.as_deref().and_then(normalize_level))
            .unwrap_or("info");
        let filter = tracing_subscriber::EnvFilter::new(format!("agent_runtime={level},agent_runtime_node={level}"));
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .with_ansi(false)
            .with_target(false)
            .compact()
            .try_init();
    });
}
