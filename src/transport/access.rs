//! Who may use the Socket.IO server: the handshake a backend decides on, its authorization
//! hook (join a session's room, receive the global session list), allowed browser origins.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use http::header::ORIGIN;
use http::HeaderMap;
use serde::Serialize;
use serde_json::Value;

/// The remote address of a connection that reached us through Node (Node knows it; the
/// request we rebuild does not).
#[derive(Clone, Debug)]
pub struct PeerAddr(pub String);

/// What an authorization callback sees of a client: its first HTTP request and its auth payload.
#[derive(Clone, Debug, Serialize)]
pub struct Handshake {
    /// Lower-case names; repeated headers joined with ", ".
    pub headers: BTreeMap<String, String>,
    pub query: BTreeMap<String, String>,
    /// The Socket.IO `auth` payload of the connect packet (`null` when none).
    pub auth: Value,
    /// Remote IP address, when known.
    pub address: Option<String>,
    pub url: String,
}

impl Handshake {
    pub fn new(parts: &http::request::Parts, auth: Value) -> Self {
        let mut headers: BTreeMap<String, String> = BTreeMap::new();
        for (k, v) in &parts.headers {
            let v = String::from_utf8_lossy(v.as_bytes());
            headers
                .entry(k.as_str().to_string())
                .and_modify(|e| {
                    e.push_str(", ");
                    e.push_str(&v);
                })
                .or_insert_with(|| v.into_owned());
        }
        let query =
            axum::extract::Query::<BTreeMap<String, String>>::try_from_uri(&parts.uri).map(|q| q.0).unwrap_or_default();
        let address = parts.extensions.get::<PeerAddr>().map(|p| p.0.clone());
        let url = parts.uri.path_and_query().map(|p| p.as_str().to_string()).unwrap_or_default();
        Self { headers, query, auth, address, url }
    }
}

/// The backend's say on who sees what. An `Err` (a callback that threw or rejected) denies.
#[async_trait]
pub trait Authorizer: Send + Sync {
    /// May this client join `session:<session_id>` (run on every `session:join`)?
    async fn join(&self, handshake: &Handshake, session_id: &str) -> Result<bool, String>;
    /// May this client receive the global `sessions:list` broadcast (run once, on connect)?
    async fn list(&self, handshake: &Handshake) -> Result<bool, String>;
}

/// Run one authorization question: a callback that fails or does not answer in time denies,
/// with a log line naming why.
pub async fn ask<F>(what: &str, timeout: Duration, question: F) -> bool
where
    F: std::future::Future<Output = Result<bool, String>>,
{
    match tokio::time::timeout(timeout, question).await {
        Ok(Ok(allowed)) => allowed,
        Ok(Err(e)) => {
            tracing::warn!(what, error = %e, "authorization callback failed: denied");
            false
        }
        Err(_) => {
            tracing::warn!(what, timeout_ms = timeout.as_millis() as u64, "authorization callback timed out: denied");
            false
        }
    }
}

/// Browser origins allowed to open a Socket.IO connection. Requests without an `Origin` header
/// are not from a browser page (cross-site WebSocket hijacking needs a browser) and pass.
#[derive(Clone, Debug, Default)]
pub struct Origins(Option<Arc<[String]>>);

impl Origins {
    pub fn any() -> Self {
        Self(None)
    }
    pub fn only(list: Vec<String>) -> Self {
        Self(Some(list.into()))
    }
    pub fn allows(&self, headers: &HeaderMap) -> bool {
        let Some(list) = &self.0 else { return true };
        match headers.get(ORIGIN) {
            None => true,
            Some(o) => o.to_str().is_ok_and(|o| list.iter().any(|a| a == o)),
        }
    }
}

/// The refusal of a request whose origin is not allowed.
pub fn forbidden_origin() -> http::Response<String> {
    http::Response::builder()
        .status(http::StatusCode::FORBIDDEN)
        .header(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body("Origin not allowed".to_string())
        .expect("static response")
}

/// Session ids are what the runtime generates (UUIDs, OpenCode's `ses_...`) or what a backend
/// stores; anything outside this is refused before it reaches storage or a room name.
pub fn validate_session_id(id: &str) -> Result<(), String> {
    const MAX: usize = 256;
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-');
    if !id.is_empty() && id.len() <= MAX && id.chars().all(ok_char) {
        return Ok(());
    }
    let shown: String = id.chars().take(64).collect();
    let more = if id.chars().count() > 64 { "..." } else { "" };
    Err(format!("Invalid session id {shown:?}{more}: expected 1 to {MAX} characters from A-Z a-z 0-9 . _ : -"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_are_valid_and_odd_ones_are_not() {
        for ok in ["0b6d0c8e-5a55-4a8a-9d7e-1c1f2b3a4d5e", "ses_019ad3c1e2f0_k3j9x0a1b2c", "no-such-session", "a:b.c"] {
            assert!(validate_session_id(ok).is_ok(), "{ok}");
        }
        let long = "x".repeat(257);
        for bad in ["", "../etc", "a b", "é", "a/b", long.as_str()] {
            let e = validate_session_id(bad).unwrap_err();
            assert!(e.starts_with("Invalid session id"), "{e}");
        }
        assert!(validate_session_id(&long).unwrap_err().contains("..."));
    }

    #[test]
    fn origins() {
        let mut h = HeaderMap::new();
        let only = Origins::only(vec!["https://app.example".into()]);
        assert!(only.allows(&h), "no Origin: not a browser page");
        h.insert(ORIGIN, "https://evil.example".parse().unwrap());
        assert!(!only.allows(&h));
        assert!(Origins::any().allows(&h));
        h.insert(ORIGIN, "https://app.example".parse().unwrap());
        assert!(only.allows(&h));
    }
}
