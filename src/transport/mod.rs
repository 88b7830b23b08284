//! HTTP concerns shared by every transport: the API-key check, the `{ error, code }` envelope,
//! CORS as the reference's Hono app answers it, and request bodies.

pub mod access;
pub mod cluster_route;
pub mod control;
pub mod meter;
pub mod openapi;
pub mod outbox;
pub mod redact;
pub mod rest;
pub mod socketio;
pub mod sse;
pub mod static_routes;

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, Method, Request, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};
use subtle::ConstantTimeEq;

/// An error answered as `{ error, code }` with a status.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub error: String,
    pub code: &'static str,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, error: impl Into<String>) -> Self {
        Self { status, error: error.into(), code }
    }
    pub fn bad_request(error: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "INVALID_REQUEST", error)
    }
    pub fn payload_too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "PAYLOAD_TOO_LARGE",
            format!("Request body is larger than the limit of {limit} bytes"),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, axum::Json(json!({ "error": self.error, "code": self.code }))).into_response()
    }
}

/// Compare a presented token with the key without leaking where they differ or how long the key
/// is: both are hashed to 32 bytes first, and those are compared in constant time. An empty key
/// matches nothing (a server configured without a key refuses everyone, as the reference does).
pub fn key_matches(presented: &str, key: &str) -> bool {
    use sha2::{Digest, Sha256};
    let a = Sha256::digest(presented.as_bytes());
    let b = Sha256::digest(key.as_bytes());
    !key.is_empty() && bool::from(a.as_slice().ct_eq(b.as_slice()))
}

/// `Authorization: Bearer <key>` (prefix case-sensitive, as the reference) or the bare key.
pub fn check_api_key(headers: &HeaderMap, key: &str) -> Result<(), ApiError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Err(ApiError::new(StatusCode::UNAUTHORIZED, "AUTH_REQUIRED", "Missing Authorization header"));
    };
    let value = value.to_str().unwrap_or("");
    let token = value.strip_prefix("Bearer ").unwrap_or(value);
    if key_matches(token, key) {
        Ok(())
    } else {
        Err(ApiError::new(StatusCode::UNAUTHORIZED, "INVALID_API_KEY", "Invalid API key"))
    }
}

/// Parse a JSON object body into `T`. Malformed JSON and schema failures are 400s whose message
/// names the problem (`Invalid request body: architecture: unknown variant ...`). An empty body
/// reads as `{}`, so a missing body reports the missing fields.
pub fn parse_json_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let value: Value = if body.iter().all(u8::is_ascii_whitespace) {
        json!({})
    } else {
        serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("Malformed JSON in request body: {e}")))?
    };
    if !value.is_object() {
        return Err(ApiError::bad_request("Invalid request body: expected a JSON object"));
    }
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." {
            ApiError::bad_request(format!("Invalid request body: {inner}"))
        } else {
            ApiError::bad_request(format!("Invalid request body: {path}: {inner}"))
        }
    })
}

const ALLOW_METHODS: &str = "GET,HEAD,PUT,POST,DELETE,PATCH";

/// CORS as Hono's `cors()` defaults: `*` origin on every response, preflights answered 204.
/// Never with `Access-Control-Allow-Credentials`: the key travels in `Authorization`, which a
/// page can only send deliberately, so `*` exposes nothing a cookie would.
pub async fn cors(req: Request<Body>, next: Next) -> Response {
    if req.method() == Method::OPTIONS {
        let mut res = StatusCode::NO_CONTENT.into_response();
        let h = res.headers_mut();
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
        h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static(ALLOW_METHODS));
        if let Some(req_headers) = req.headers().get(header::ACCESS_CONTROL_REQUEST_HEADERS) {
            h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, req_headers.clone());
            h.append(header::VARY, HeaderValue::from_static("Access-Control-Request-Headers"));
        }
        return res;
    }
    let mut res = next.run(req).await;
    res.headers_mut().insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_key_forms() {
        let mut h = HeaderMap::new();
        assert_eq!(check_api_key(&h, "k").unwrap_err().code, "AUTH_REQUIRED");
        h.insert(header::AUTHORIZATION, "Bearer k".parse().unwrap());
        assert!(check_api_key(&h, "k").is_ok());
        h.insert(header::AUTHORIZATION, "k".parse().unwrap());
        assert!(check_api_key(&h, "k").is_ok());
        h.insert(header::AUTHORIZATION, "bearer k".parse().unwrap());
        assert_eq!(check_api_key(&h, "k").unwrap_err().code, "INVALID_API_KEY");
        h.insert(header::AUTHORIZATION, "Bearer kk".parse().unwrap());
        assert_eq!(check_api_key(&h, "k").unwrap_err().code, "INVALID_API_KEY");
    }

    #[test]
    fn an_empty_key_matches_nothing() {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, "Bearer ".parse().unwrap());
        assert_eq!(check_api_key(&h, "").unwrap_err().code, "INVALID_API_KEY");
        h.insert(header::AUTHORIZATION, "".parse().unwrap());
        assert_eq!(check_api_key(&h, "").unwrap_err().code, "INVALID_API_KEY");
        assert!(!key_matches("", ""));
        assert!(key_matches("a-long-key", "a-long-key") && !key_matches("a-long-kez", "a-long-key"));
    }

    #[derive(serde::Deserialize, Debug)]
    #[allow(dead_code)]
    struct Msg {
        content: String,
    }

    #[test]
    fn body_errors_name_the_problem() {
        assert!(parse_json_body::<Msg>(b"{oops").unwrap_err().error.starts_with("Malformed JSON"));
        let e = parse_json_body::<Msg>(b"").unwrap_err().error;
        assert!(e.contains("missing field `content`"), "{e}");
        let e = parse_json_body::<Msg>(br#"{"content": 3}"#).unwrap_err().error;
        assert!(e.contains("content: invalid type: integer `3`, expected a string"), "{e}");
        let e = parse_json_body::<Msg>(br#"["x"]"#).unwrap_err().error;
        assert!(e.contains("expected a JSON object"), "{e}");
    }
}
