//! The model proxy: sandboxes reach the model API only through it. Each session gets a random
//! token that its sandbox uses as its API key; the proxy finds the session by that token, puts
//! the real key on the request, forwards it to the upstream (the host's `ANTHROPIC_BASE_URL`,
//! else Anthropic) and streams the answer back as it arrives, reading `usage` on the way. The
//! real key never enters a sandbox; a token dies with its session.
//!
//! Both agents speak the Messages API through `ANTHROPIC_BASE_URL` (Claude Code and OpenCode's
//! anthropic provider), so one choke point counts, prices and limits every call.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::serve::ListenerExt;
use futures::StreamExt;
use http::{HeaderMap, HeaderName, StatusCode};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::sync::RwLocked as _;
use crate::usage::{Call, Pricing, Tokens};

/// The upstream's own request limit.
pub const MAX_REQUEST_BYTES: usize = 32 * 1024 * 1024;

/// What the proxy asks of the session a call is for.
pub trait Meter: Send + Sync {
    /// Before a call is forwarded: `Err(why)` refuses it (a budget is spent).
    fn admit(&self) -> Result<(), String>;
    /// After a response (whole, cut off, or failed): what it used.
    fn record(&self, call: Call);
    /// The span a model call belongs to (the session's running turn).
    fn span(&self) -> tracing::Span {
        tracing::Span::none()
    }
}

/// No `Debug`: it holds the key.
#[derive(Clone)]
pub struct ProxyOptions {
    /// Where the proxy listens (loopback by default: local sandboxes share the host's network).
    pub listen: SocketAddr,
    /// Where sandboxes reach it, when not at `listen` (Modal: a URL the user exposes).
    pub public_url: Option<String>,
    /// Where calls go: `https://api.anthropic.com` unless the host's environment says otherwise.
    pub upstream: String,
    /// The real key, put on every forwarded call.
    pub api_key: String,
    /// No answer (headers, or the next chunk of a stream) for this long fails the call.
    pub read_timeout: Duration,
}

struct Grant {
    session_id: String,
    meter: Weak<dyn Meter>,
}

struct Inner {
    /// By the SHA-256 of the token: a lookup compares digests, never the token itself.
    grants: RwLock<HashMap<[u8; 32], Grant>>,
    upstream: String,
    api_key: String,
    pricing: Pricing,
    /// Models already warned about for having no price.
    unpriced: Arc<std::sync::Mutex<std::collections::HashSet<String>>>,
    client: reqwest::Client,
}

pub struct ModelProxy {
    inner: Arc<Inner>,
    pub addr: SocketAddr,
    public_url: Option<String>,
    /// Ends the proxy's thread (and every call it serves) when dropped or sent.
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for ModelProxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl ModelProxy {
    pub async fn start(opts: ProxyOptions, pricing: Pricing) -> std::io::Result<Self> {
        let client = reqwest::Client::builder()
            .tls_backend_preconfigured(tls_config())
            .connect_timeout(Duration::from_secs(15))
            .read_timeout(opts.read_timeout)
            // The body passes through untouched (and `usage` is read from it).
            .no_gzip()
            .no_brotli()
            .no_deflate()
            .no_zstd()
            .build()
            .map_err(std::io::Error::other)?;
        let inner = Arc::new(Inner {
            grants: RwLock::default(),
            upstream: opts.upstream.trim_end_matches('/').to_string(),
            api_key: opts.api_key,
            pricing,
            unpriced: Arc::default(),
            client,
        });
        let app = axum::Router::new().fallback(forward).with_state(inner.clone());
        let listener = std::net::TcpListener::bind(opts.listen)?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        // Its own thread and single-threaded runtime: a chunk goes from the upstream connection
        // to the sandbox's without waking another thread (a cross-thread hand-off per chunk
        // costs more than the forwarding itself).
        std::thread::Builder::new().name("model-proxy".into()).spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(e) => return tracing::error!(error = %e, "model proxy runtime could not start"),
            };
            rt.block_on(async move {
                let listener = match tokio::net::TcpListener::from_std(listener) {
                    Ok(l) => l,
                    Err(e) => return tracing::error!(error = %e, "model proxy could not listen"),
                };
                // Without it, an answer's first bytes on a reused connection wait ~40 ms for
                // the client's delayed ACK (every tool loop of an agent).
                let listener = listener.tap_io(|tcp| {
                    let _ = tcp.set_nodelay(true);
                });
                tokio::select! {
                    r = axum::serve(listener, app) => if let Err(e) = r {
                        tracing::error!(error = %e, "model proxy stopped");
                    },
                    _ = stopped => {}
                }
            });
        })?;
        tracing::info!(%addr, upstream = %inner.upstream, "model proxy");
        Ok(Self { inner, addr, public_url: opts.public_url, stop: Some(stop) })
    }

    /// The base URL sandboxes use (`ANTHROPIC_BASE_URL`).
    pub fn base_url(&self) -> String {
        self.public_url.clone().unwrap_or_else(|| format!("http://{}", self.addr))
    }

    /// Sandboxes outside this host can reach it (`publicUrl` is set).
    pub fn is_public(&self) -> bool {
        self.public_url.is_some()
    }

    /// A new token for `session_id` (any earlier one of that session stops working).
    pub fn grant(&self, session_id: &str, meter: Weak<dyn Meter>) -> String {
        let token = format!("arn-{}", hex(&rand::random::<[u8; 24]>()));
        let mut grants = self.inner.grants.write_locked();
        grants.retain(|_, g| g.session_id != session_id);
        grants.insert(digest(&token), Grant { session_id: session_id.to_string(), meter });
        token
    }

    /// The session unloaded: its token stops working.
    pub fn revoke(&self, session_id: &str) {
        self.inner.grants.write_locked().retain(|_, g| g.session_id != session_id);
    }

    pub fn pricing(&self) -> &Pricing {
        &self.inner.pricing
    }
}

/// TLS on ring (the provider the Modal client's tonic already links) with Mozilla's roots:
/// no C toolchain needed, no system store assumed.
fn tls_config() -> rustls::ClientConfig {
    let roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("ring supports the default TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// An error the SDKs understand (`{ type: "error", error: { type, message } }`).
fn api_error(status: StatusCode, kind: &str, message: impl Into<String>) -> Response {
    let body = json!({ "type": "error", "error": { "type": kind, "message": message.into() } });
    (status, axum::Json(body)).into_response()
}

/// Headers that describe one hop, or carry a key: never forwarded.
fn hop_or_key(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "host"
            | "content-length"
            | "connection"
            | "keep-alive"
            | "transfer-encoding"
            | "upgrade"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "x-api-key"
            | "authorization"
            | "accept-encoding"
    )
}

fn presented_key(h: &HeaderMap) -> Option<&str> {
    if let Some(k) = h.get("x-api-key") {
        return k.to_str().ok();
    }
    h.get(http::header::AUTHORIZATION)?.to_str().ok()?.strip_prefix("Bearer ")
}

async fn forward(State(inner): State<Arc<Inner>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let Some(meter) = presented_key(&parts.headers).and_then(|k| {
        let grants = inner.grants.read_locked();
        grants.get(&digest(k)).and_then(|g| g.meter.upgrade())
    }) else {
        return api_error(StatusCode::UNAUTHORIZED, "authentication_error", "invalid x-api-key");
    };
    if let Err(why) = meter.admit() {
        // Not retried by the SDKs (a 4xx other than 429), and shown to the agent as it is.
        return api_error(StatusCode::BAD_REQUEST, "invalid_request_error", why);
    }
    if parts.headers.get(http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<usize>().ok())
        > Some(MAX_REQUEST_BYTES)
    {
        return too_large();
    }
    let body = match http_body_util::Limited::new(body, MAX_REQUEST_BYTES).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => return too_large(),
        Err(e) => return api_error(StatusCode::BAD_REQUEST, "invalid_request_error", format!("unreadable body: {e}")),
    };
    let requested_model = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v.get("model").and_then(Value::as_str).map(str::to_string));
    // Claude Code marks a subagent's calls with its id.
    let conversation_id =
        parts.headers.get("x-claude-code-agent-id").and_then(|v| v.to_str().ok()).unwrap_or("main").to_string();
    let path = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let mut out = inner.client.request(parts.method.clone(), format!("{}{path}", inner.upstream));
    for (name, value) in &parts.headers {
        if !hop_or_key(name) {
            out = out.header(name, value);
        }
    }
    let counted = path.starts_with("/v1/messages") && !path.starts_with("/v1/messages/count_tokens");
    let tap_model = requested_model.clone();
    let upstream = match out.header("x-api-key", &inner.api_key).body(body).send().await {
        Ok(r) => r,
        Err(e) => {
            let (status, what) = if e.is_timeout() {
                (StatusCode::GATEWAY_TIMEOUT, "the model API did not answer in time")
            } else {
                (StatusCode::BAD_GATEWAY, "the model API could not be reached")
            };
            tracing::warn!(error = %without_url(&e), "model proxy: {what}");
            return api_error(status, "api_error", what);
        }
    };
    let status = upstream.status();
    let mut headers = HeaderMap::new();
    for (name, value) in upstream.headers() {
        if !hop_or_key(name) {
            headers.append(name.clone(), value.clone());
        }
    }
    let sse = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
    let mut tap = counted.then(|| Tap {
        span: model_span(&*meter, tap_model.as_deref()),
        meter,
        pricing: inner.pricing.clone(),
        unpriced: inner.unpriced.clone(),
        model: requested_model,
        conversation_id,
        sse,
        line: Vec::new(),
        whole: Vec::new(),
        tokens: Tokens::default(),
        seen: false,
    });
    // Chunks go on as they come; dropping the body (the sandbox went away) drops the upstream
    // request too, and the tap records what was used so far.
    let stream = upstream.bytes_stream().map(move |chunk| {
        if let (Ok(c), Some(t)) = (&chunk, tap.as_mut()) {
            t.feed(c);
        }
        chunk.map_err(|e| std::io::Error::other(without_url(&e)))
    });
    let mut res = Response::new(Body::from_stream(stream));
    *res.status_mut() = status;
    *res.headers_mut() = headers;
    res
}

fn too_large() -> Response {
    api_error(
        StatusCode::PAYLOAD_TOO_LARGE,
        "request_too_large",
        format!("request body is larger than {MAX_REQUEST_BYTES} bytes"),
    )
}

/// A reqwest error's text without the URL (it names the upstream, which is no secret, but the
/// query of a misconfigured one might be).
fn without_url(e: &reqwest::Error) -> String {
    let mut s = e.to_string();
    if let Some(u) = e.url() {
        s = s.replace(u.as_str(), "<upstream>");
    }
    s
}

/// A model call's trace span (OpenTelemetry GenAI names), under the session's running turn.
fn model_span(meter: &dyn Meter, model: Option<&str>) -> tracing::Span {
    let model = model.unwrap_or("unknown");
    tracing::info_span!(
        parent: &meter.span(),
        "chat",
        otel.name = %format_args!("chat {model}"),
        otel.kind = "client",
        gen_ai.operation.name = "chat",
        gen_ai.provider.name = "anthropic",
        gen_ai.request.model = model,
        gen_ai.response.model = tracing::field::Empty,
        gen_ai.usage.input_tokens = tracing::field::Empty,
        gen_ai.usage.output_tokens = tracing::field::Empty,
    )
}

/// Reads `usage` out of a response as it passes: SSE `message_start` / `message_delta`
/// events, or a JSON body's `usage`. Records once, when the body is done or dropped.
struct Tap {
    /// Ends when the tap does, with the call's usage recorded on it.
    span: tracing::Span,
    meter: Arc<dyn Meter>,
    pricing: Pricing,
    unpriced: Arc<std::sync::Mutex<std::collections::HashSet<String>>>,
    model: Option<String>,
    conversation_id: String,
    sse: bool,
    /// An SSE line cut by a chunk boundary.
    line: Vec<u8>,
    /// A JSON body, up to a bound.
    whole: Vec<u8>,
    tokens: Tokens,
    seen: bool,
}

/// A JSON answer larger than this is not read for usage.
const MAX_JSON_USAGE_BODY: usize = 4 * 1024 * 1024;

impl Tap {
    fn feed(&mut self, chunk: &[u8]) {
        if !self.sse {
            if self.whole.len() + chunk.len() <= MAX_JSON_USAGE_BODY {
                self.whole.extend_from_slice(chunk);
            }
            return;
        }
        let mut rest = chunk;
        while let Some(i) = rest.iter().position(|&b| b == b'\n') {
            if self.line.is_empty() {
                self.line_done(&rest[..i]);
            } else {
                let mut line = std::mem::take(&mut self.line);
                line.extend_from_slice(&rest[..i]);
                self.line_done(&line);
            }
            rest = &rest[i + 1..];
        }
        self.line.extend_from_slice(rest);
    }

    fn line_done(&mut self, line: &[u8]) {
        // Most lines are text deltas: only the few that carry usage are parsed.
        let Some(data) = line.strip_prefix(b"data:") else { return };
        if !contains(data, b"\"usage\"") {
            return;
        }
        let Ok(v) = serde_json::from_slice::<Value>(data) else { return };
        match v.get("type").and_then(Value::as_str) {
            Some("message_start") => {
                let m = &v["message"];
                if let Some(model) = m.get("model").and_then(Value::as_str) {
                    self.model = Some(model.to_string());
                }
                self.usage(&m["usage"]);
            }
            Some("message_delta") => self.usage(&v["usage"]),
            _ => {}
        }
    }

    /// Counts in a later event are totals so far: the latest wins.
    fn usage(&mut self, u: &Value) {
        let get = |k: &str| u.get(k).and_then(Value::as_u64);
        let t = &mut self.tokens;
        for (field, key) in [
            (&mut t.input_tokens, "input_tokens"),
            (&mut t.output_tokens, "output_tokens"),
            (&mut t.cache_read_tokens, "cache_read_input_tokens"),
            (&mut t.cache_write_tokens, "cache_creation_input_tokens"),
        ] {
            if let Some(n) = get(key) {
                *field = n;
                self.seen = true;
            }
        }
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

impl Drop for Tap {
    fn drop(&mut self) {
        if !self.sse {
            if let Ok(v) = serde_json::from_slice::<Value>(&self.whole) {
                if let Some(model) = v.get("model").and_then(Value::as_str) {
                    self.model = Some(model.to_string());
                }
                self.usage(&v["usage"].clone());
            }
        }
        if !self.seen {
            return;
        }
        let model = self.model.clone().unwrap_or_else(|| "unknown".into());
        self.span.record("gen_ai.response.model", model.as_str());
        // As i64: tracing-opentelemetry exports a u64 field as a string.
        let int = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        self.span.record("gen_ai.usage.input_tokens", int(self.tokens.input_tokens));
        self.span.record("gen_ai.usage.output_tokens", int(self.tokens.output_tokens));
        let cost_usd = self.pricing.price(&model).map(|p| p.cost(&self.tokens));
        if cost_usd.is_none() && self.unpriced.lock().unwrap_or_else(|e| e.into_inner()).insert(model.clone()) {
            tracing::warn!(%model, "no price for this model: its calls are counted in tokens, costUsd null (add it to config pricing)");
        }
        self.meter.record(Call {
            model,
            conversation_id: std::mem::take(&mut self.conversation_id),
            tokens: self.tokens,
            cost_usd,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Recorder(Mutex<Vec<Call>>);
    impl Meter for Recorder {
        fn admit(&self) -> Result<(), String> {
            Ok(())
        }
        fn record(&self, call: Call) {
            self.0.lock().unwrap().push(call);
        }
    }

    fn tap(meter: Arc<Recorder>, sse: bool) -> Tap {
        Tap {
            span: tracing::Span::none(),
            meter,
            pricing: Pricing::default(),
            unpriced: Arc::default(),
            model: Some("requested".into()),
            conversation_id: "main".into(),
            sse,
            line: vec![],
            whole: vec![],
            tokens: Tokens::default(),
            seen: false,
        }
    }

    #[test]
    fn usage_is_read_from_a_stream_cut_anywhere() {
        let stream = concat!(
            "event: message_start\n",
            "data: {\"type\":\"message_start\",\"message\":{\"model\":\"claude-sonnet-4-5-20250929\",\"usage\":{\"input_tokens\":120,\"cache_read_input_tokens\":30,\"cache_creation_input_tokens\":7,\"output_tokens\":1}}}\n\n",
            "event: content_block_delta\n",
            "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"usage\"}}\n\n",
            "event: message_delta\n",
            "data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":42}}\n\n",
        )
        .as_bytes();
        for cut in [1, 7, 64, stream.len()] {
            let rec = Arc::new(Recorder::default());
            let mut t = tap(rec.clone(), true);
            for piece in stream.chunks(cut) {
                t.feed(piece);
            }
            drop(t);
            let calls = rec.0.lock().unwrap();
            assert_eq!(calls.len(), 1);
            let c = &calls[0];
            assert_eq!(c.model, "claude-sonnet-4-5-20250929");
            let want = Tokens { input_tokens: 120, output_tokens: 42, cache_read_tokens: 30, cache_write_tokens: 7 };
            assert_eq!(c.tokens, want, "cut {cut}");
            let cost = c.cost_usd.unwrap();
            assert!((cost - (120.0 * 3.0 + 42.0 * 15.0 + 30.0 * 0.3 + 7.0 * 3.75) / 1e6).abs() < 1e-12);
        }
    }

    #[test]
    fn usage_is_read_from_a_json_answer_and_nothing_is_recorded_without_it() {
        let rec = Arc::new(Recorder::default());
        let mut t = tap(rec.clone(), false);
        t.feed(br#"{"model":"mystery","usage":{"input_tokens":5,"output_tokens":6}}"#);
        drop(t);
        let mut t = tap(rec.clone(), false);
        t.feed(br#"{"type":"error","error":{"type":"overloaded_error"}}"#);
        drop(t);
        let calls = rec.0.lock().unwrap();
        assert_eq!(calls.len(), 1);
        assert_eq!((calls[0].tokens.input_tokens, calls[0].tokens.output_tokens), (5, 6));
        assert_eq!(calls[0].cost_usd, None, "an unknown model is counted, not priced");
    }
}
