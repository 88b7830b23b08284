//! The connection to Modal's control plane: one HTTP/2 channel per runtime, the headers the
//! official SDK sends, the short-lived auth token, and retries of unary calls with one
//! idempotency key per call (so a retried create cannot create twice).

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use tonic::metadata::{AsciiMetadataValue, MetadataMap};
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};
use tonic::{Code, Request, Status};

use super::proto::modal_client_client::ModalClientClient;
use super::proto::AuthTokenGetRequest;

pub const DEFAULT_SERVER_URL: &str = "https://api.modal.com:443";
/// What the control plane sees us as: the JS SDK's client type and behaviour level (the
/// protocol we speak is the one modal-js 0.5.x speaks; a new client type number may be refused).
const CLIENT_TYPE: &str = "8";
const CLIENT_VERSION: &str = "1.0.0";
const LIBMODAL_VERSION: &str = concat!("agent-runtime-native/", env!("CARGO_PKG_VERSION"));
/// Large enough for whole-file reads and big output batches.
const MAX_MESSAGE: usize = 100 << 20;
const ATTEMPTS: u32 = 4;
/// Default lifetime when a token carries no `exp`.
const TOKEN_FALLBACK_SECS: i64 = 20 * 60;
/// Refresh this long before expiry.
const TOKEN_MARGIN_SECS: i64 = 300;

/// A failed control-plane call, with the message a user can act on. Never contains the secret.
#[derive(Debug, Clone)]
pub struct ModalError {
    pub code: Code,
    pub message: String,
}

impl std::fmt::Display for ModalError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ModalError {}

pub type MResult<T> = Result<T, ModalError>;

pub struct Credentials {
    pub token_id: String,
    pub token_secret: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials {{ token_id: {:?}, token_secret: <redacted> }}", short_id(&self.token_id))
    }
}

/// Enough of a token id to recognise it in an error message.
pub fn short_id(token_id: &str) -> String {
    let head: String = token_id.chars().take(8).collect();
    if head.len() < token_id.len() {
        format!("{head}…")
    } else {
        head
    }
}

pub fn is_retryable(code: Code) -> bool {
    matches!(code, Code::DeadlineExceeded | Code::Unavailable | Code::Cancelled | Code::Internal | Code::Unknown)
}

struct Token {
    value: AsciiMetadataValue,
    expires: i64,
}

#[derive(Clone)]
pub struct Connection {
    inner: Arc<Inner>,
}

struct Inner {
    url: String,
    endpoint: Endpoint,
    /// Made on first use: creating a channel needs a running Tokio runtime, which the caller
    /// of [`Connection::new`] may not be in.
    channel: std::sync::OnceLock<Channel>,
    token_id: AsciiMetadataValue,
    token_secret: AsciiMetadataValue,
    short_token_id: String,
    token: tokio::sync::Mutex<Option<Token>>,
}

/// `MODAL_SERVER_URL` when set, else Modal's public endpoint.
pub fn server_url() -> String {
    std::env::var("MODAL_SERVER_URL").ok().filter(|s| !s.trim().is_empty()).unwrap_or_else(|| DEFAULT_SERVER_URL.into())
}

impl Connection {
    /// Lazy: nothing is sent until the first call, so a runtime starts even when Modal is down.
    pub fn new(url: &str, creds: &Credentials) -> MResult<Self> {
        let bad = |m: String| ModalError { code: Code::InvalidArgument, message: m };
        let given = url.trim().trim_end_matches('/');
        let full = secure_url(given).map_err(bad)?;
        let url = full.clone();
        let mut ep = Endpoint::from_shared(full.clone())
            .map_err(|e| bad(format!("MODAL_SERVER_URL {url:?} is not a valid URL: {e}")))?
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_timeout(Duration::from_secs(10))
            .keep_alive_while_idle(true)
            .initial_stream_window_size(64 << 20)
            .initial_connection_window_size(64 << 20)
            .connect_timeout(Duration::from_secs(15))
            .tcp_nodelay(true);
        if full.starts_with("https://") {
            ep = ep
                .tls_config(ClientTlsConfig::new().with_webpki_roots())
                .map_err(|e| bad(format!("TLS setup for {url} failed: {e}")))?;
        }
        let header = |name: &str, v: &str| {
            AsciiMetadataValue::try_from(v)
                .map_err(|_| bad(format!("modal.{name} contains characters not allowed in a header")))
        };
        Ok(Self {
            inner: Arc::new(Inner {
                url,
                endpoint: ep,
                channel: std::sync::OnceLock::new(),
                token_id: header("tokenId", &creds.token_id)?,
                token_secret: header("tokenSecret", &creds.token_secret)?,
                short_token_id: short_id(&creds.token_id),
                token: tokio::sync::Mutex::new(None),
            }),
        })
    }

    pub fn url(&self) -> &str {
        &self.inner.url
    }

    fn client(&self) -> ModalClientClient<Channel> {
        let channel = self.inner.channel.get_or_init(|| self.inner.endpoint.connect_lazy());
        ModalClientClient::new(channel.clone())
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE)
    }

    fn static_headers(&self, md: &mut MetadataMap) {
        md.insert("x-modal-client-type", AsciiMetadataValue::from_static(CLIENT_TYPE));
        md.insert("x-modal-client-version", AsciiMetadataValue::from_static(CLIENT_VERSION));
        md.insert("x-modal-libmodal-version", AsciiMetadataValue::from_static(LIBMODAL_VERSION));
        md.insert("x-modal-token-id", self.inner.token_id.clone());
        md.insert("x-modal-token-secret", self.inner.token_secret.clone());
    }

    /// The auth token, fetched on first use and refreshed shortly before it expires. The lock
    /// makes the refresh single-flight.
    async fn auth_token(&self) -> MResult<AsciiMetadataValue> {
        let mut slot = self.inner.token.lock().await;
        let now = chrono::Utc::now().timestamp();
        if let Some(t) = slot.as_ref() {
            if now < t.expires - TOKEN_MARGIN_SECS {
                return Ok(t.value.clone());
            }
        }
        let resp = self
            .attempts("AuthTokenGet", AuthTokenGetRequest {}, None, |mut c, r| async move { c.auth_token_get(r).await })
            .await?;
        if resp.token.is_empty() {
            return Err(ModalError { code: Code::Internal, message: "Modal returned an empty auth token".into() });
        }
        let value = AsciiMetadataValue::try_from(resp.token.as_str()).map_err(|_| ModalError {
            code: Code::Internal,
            message: "Modal returned an auth token that is not ASCII".into(),
        })?;
        let expires = jwt_exp(&resp.token).unwrap_or(now + TOKEN_FALLBACK_SECS);
        *slot = Some(Token { value: value.clone(), expires });
        Ok(value)
    }

    /// Forget `used` after the server refused it, unless a fresh one has replaced it already
    /// (concurrent callers then share that one refresh).
    async fn drop_token(&self, used: &AsciiMetadataValue) {
        let mut slot = self.inner.token.lock().await;
        if slot.as_ref().is_some_and(|t| t.value == *used) {
            *slot = None;
        }
    }

    fn request<T>(&self, msg: T, deadline: Duration, token: AsciiMetadataValue) -> Request<T> {
        let mut r = Request::new(msg);
        r.set_timeout(deadline);
        self.static_headers(r.metadata_mut());
        r.metadata_mut().insert("x-modal-auth-token", token);
        r
    }

    /// A unary call, retried on transient codes with the same idempotency key on every attempt.
    /// A refused auth token (expired or revoked early) is dropped and the call made once more
    /// with a fresh one.
    pub async fn unary<Req, Resp, F, Fut>(&self, method: &'static str, msg: Req, call: F) -> MResult<Resp>
    where
        Req: Clone,
        F: Fn(ModalClientClient<Channel>, Request<Req>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<Resp>, Status>>,
    {
        let token = self.auth_token().await?;
        match self.attempts(method, msg.clone(), Some(token.clone()), &call).await {
            Err(e) if e.code == Code::Unauthenticated => {
                tracing::debug!(method, "Modal refused the auth token; fetching a new one");
                self.drop_token(&token).await;
                let fresh = self.auth_token().await?;
                self.attempts(method, msg, Some(fresh), &call).await
            }
            r => r,
        }
    }

    /// The retry loop; `token` is the auth token (absent only for `AuthTokenGet` itself).
    async fn attempts<Req, Resp, F, Fut>(
        &self,
        method: &'static str,
        msg: Req,
        token: Option<AsciiMetadataValue>,
        call: F,
    ) -> MResult<Resp>
    where
        Req: Clone,
        F: Fn(ModalClientClient<Channel>, Request<Req>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<Resp>, Status>>,
    {
        let key = AsciiMetadataValue::try_from(uuid::Uuid::new_v4().to_string()).expect("uuid is ascii");
        let started = Instant::now();
        let mut delay = Duration::from_millis(100);
        let mut last = None;
        for attempt in 0..ATTEMPTS {
            let mut r = Request::new(msg.clone());
            r.set_timeout(Duration::from_secs(60));
            let md = r.metadata_mut();
            self.static_headers(md);
            if let Some(t) = &token {
                md.insert("x-modal-auth-token", t.clone());
            }
            md.insert("x-idempotency-key", key.clone());
            md.insert("x-retry-attempt", AsciiMetadataValue::try_from(attempt.to_string()).expect("digits"));
            if attempt > 0 {
                let secs = format!("{:.3}", started.elapsed().as_secs_f64());
                md.insert("x-retry-delay", AsciiMetadataValue::try_from(secs).expect("digits"));
            }
            match call(self.client(), r).await {
                Ok(resp) => return Ok(resp.into_inner()),
                Err(s) if is_retryable(s.code()) && attempt + 1 < ATTEMPTS => {
                    tracing::debug!(method, attempt, code = ?s.code(), "Modal call failed; retrying");
                    last = Some(s);
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(1));
                }
                Err(s) => return Err(self.describe(method, s, attempt + 1)),
            }
        }
        Err(self.describe(method, last.expect("at least one attempt"), ATTEMPTS))
    }

    /// A server-streaming call (not retried on transient codes here: the readers resume by index
    /// themselves); a refused auth token is replaced once, as for unary calls.
    pub async fn stream<Req, Resp, F, Fut>(
        &self,
        method: &'static str,
        msg: Req,
        deadline: Duration,
        call: F,
    ) -> MResult<tonic::Streaming<Resp>>
    where
        Req: Clone,
        F: Fn(ModalClientClient<Channel>, Request<Req>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<tonic::Streaming<Resp>>, Status>>,
    {
        let token = self.auth_token().await?;
        match call(self.client(), self.request(msg.clone(), deadline, token.clone())).await {
            Ok(r) => Ok(r.into_inner()),
            Err(s) if s.code() == Code::Unauthenticated => {
                self.drop_token(&token).await;
                let fresh = self.auth_token().await?;
                let r = call(self.client(), self.request(msg, deadline, fresh)).await;
                r.map(|r| r.into_inner()).map_err(|s| self.describe(method, s, 2))
            }
            Err(s) => Err(self.describe(method, s, 1)),
        }
    }

    pub fn describe(&self, method: &str, s: Status, attempts: u32) -> ModalError {
        let message = match s.code() {
            Code::Unavailable if attempts > 1 => format!(
                "Modal control plane at {} is unreachable ({method} failed {attempts} times): {}",
                self.inner.url,
                s.message()
            ),
            Code::Unavailable => {
                format!("Modal control plane at {} is unreachable ({method}): {}", self.inner.url, s.message())
            }
            Code::Unauthenticated | Code::PermissionDenied if method == "AuthTokenGet" => format!(
                "Modal rejected the credentials for token id {} (check modal.tokenId and modal.tokenSecret): {}",
                self.inner.short_token_id,
                s.message()
            ),
            Code::Unauthenticated => format!(
                "Modal rejected the credentials for token id {} ({method}): {}",
                self.inner.short_token_id,
                s.message()
            ),
            _ => format!("Modal {method} failed ({:?}): {}", s.code(), s.message()),
        };
        ModalError { code: s.code(), message }
    }
}

/// `url` with its scheme: a bare host means https (the official SDK would speak plaintext to
/// it, sending the token unencrypted); plaintext `http://` is accepted only for this machine
/// (a local fake or tunnel).
fn secure_url(url: &str) -> Result<String, String> {
    let full = if url.contains("://") { url.to_string() } else { format!("https://{url}") };
    let uri: http::Uri = full.parse().map_err(|e| format!("MODAL_SERVER_URL {url:?} is not a valid URL: {e}"))?;
    match uri.scheme_str() {
        Some("https") => Ok(full),
        Some("http") if uri.host().is_some_and(is_loopback) => Ok(full),
        Some("http") => Err(format!(
            "MODAL_SERVER_URL {url:?} would send the Modal token unencrypted over the network: use https:// \
             (http:// is accepted only for localhost, 127.0.0.1 or ::1)"
        )),
        _ => Err(format!("MODAL_SERVER_URL {url:?} must start with https://")),
    }
}

fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost") || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The `exp` claim of a JWT, without verifying it (the server does that).
fn jwt_exp(token: &str) -> Option<i64> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
    serde_json::from_slice::<serde_json::Value>(&bytes).ok()?.get("exp")?.as_i64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_jwt_expiry() {
        let enc = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        let t = format!("{}.{}.sig", enc(r#"{"alg":"none"}"#), enc(r#"{"exp":1700000000}"#));
        assert_eq!(jwt_exp(&t), Some(1700000000));
        assert_eq!(jwt_exp("not-a-jwt"), None);
    }

    #[test]
    fn server_urls_without_tls_are_refused_unless_local() {
        let creds = Credentials { token_id: "ak-1".into(), token_secret: "as-2".into() };
        let url = |u: &str| Connection::new(u, &creds).map(|c| c.url().to_string()).map_err(|e| e.message);
        assert_eq!(url("api.modal.com:443").unwrap(), "https://api.modal.com:443", "a bare host is https");
        assert_eq!(url("https://api.modal.com/").unwrap(), "https://api.modal.com");
        for local in ["http://127.0.0.1:5000", "http://localhost:80", "http://[::1]:9", "http://127.1.2.3:1"] {
            assert_eq!(url(local).unwrap(), local, "a local fake may be plaintext");
        }
        let e = url("http://10.0.0.5:80").unwrap_err();
        assert!(e.contains("MODAL_SERVER_URL") && e.contains("unencrypted") && e.contains("https://"), "{e}");
        assert!(url("http://localhost.example.com").is_err());
        assert!(url("ftp://api.modal.com").unwrap_err().contains("must start with https://"));
    }

    #[test]
    fn credentials_never_print_the_secret() {
        let c = Credentials { token_id: "ak-1234567890".into(), token_secret: "as-topsecret".into() };
        let s = format!("{c:?}");
        assert!(!s.contains("topsecret") && s.contains("ak-12345…"), "{s}");
    }
}
