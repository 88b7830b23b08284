//! REST in a cluster: a session route runs where the session is held. This node runs it when it
//! holds the session or nobody does (then loading takes it); otherwise the request, checked
//! here (key, body limit), goes to the holder and its answer is this one's.

use axum::body::{Body, Bytes};
use axum::http::{request::Parts, HeaderName, HeaderValue, Request, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;

use super::rest::{handle_plain, PlainRequest, RestState, Router};
use super::ApiError;
use crate::cluster::{Cluster, ForwardError, ForwardRequest, ForwardResponse};

/// Routing attempts: a holder that let go between the lookup and the request sends it back.
const TRIES: usize = 3;

/// Headers that stay here: the key (checked already; never copied into Redis) and the
/// connection's own.
fn forwardable(name: &HeaderName) -> bool {
    !matches!(
        name.as_str(),
        "authorization" | "cookie" | "host" | "connection" | "content-length" | "transfer-encoding" | "keep-alive"
    )
}

pub(super) async fn route(st: &RestState, cluster: &Cluster, id: &str, parts: Parts, body: Bytes, next: Next) -> Response {
    for _ in 0..TRIES {
        let here = st.runtime.sessions.is_loaded(id) || cluster.holds(id);
        let owner = if here {
            None
        } else {
            match cluster.holder(id).await {
                Ok(h) => h.filter(|n| n != cluster.node_id()),
                Err(e) => return unavailable("CLUSTER_UNAVAILABLE", e.to_string()),
            }
        };
        let Some(owner) = owner else {
            let req = Request::from_parts(parts.clone(), Body::from(body.clone()));
            let res = next.clone().run(req).await;
            // Another node took it while this one was about to: ask that one.
            if res.status() == StatusCode::SERVICE_UNAVAILABLE {
                let (p, b) = res.into_parts();
                let b = b.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                if !b.windows(15).any(|w| w == b"OWNED_ELSEWHERE") {
                    return Response::from_parts(p, Body::from(b));
                }
                continue;
            }
            return res;
        };
        let headers = parts
            .headers
            .iter()
            .filter(|(k, _)| forwardable(k))
            .flat_map(|(k, v)| [k.as_str().to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned()])
            .collect();
        let url = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/").to_string();
        let req = ForwardRequest { session: id.to_string(), method: parts.method.to_string(), url, headers, body: body.clone() };
        match cluster.forward(&owner, req).await {
            Ok(answer) => return into_response(answer, &owner),
            Err(ForwardError::NotOwner) => continue,
            Err(ForwardError::Unreachable(why)) => {
                return unavailable("OWNER_UNREACHABLE", format!("The node holding session {id} did not answer: {why}"))
            }
        }
    }
    unavailable("OWNER_UNREACHABLE", format!("Session {id} changed hands while this request was routed; try again"))
}

fn unavailable(code: &'static str, error: String) -> Response {
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, code, error).into_response()
}

fn into_response(answer: ForwardResponse, owner: &str) -> Response {
    let mut res = Response::new(Body::from(answer.body));
    *res.status_mut() = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::BAD_GATEWAY);
    for pair in answer.headers.chunks_exact(2) {
        if let (Ok(k), Ok(v)) = (HeaderName::try_from(pair[0].as_str()), HeaderValue::try_from(pair[1].as_str())) {
            if forwardable(&k) {
                res.headers_mut().append(k, v);
            }
        }
    }
    if let Ok(v) = HeaderValue::try_from(owner) {
        res.headers_mut().insert("x-agent-runtime-node", v);
    }
    res
}

/// Run a request another node forwarded, through the router made for them.
pub async fn run_forwarded(router: &Router, max_body: usize, req: ForwardRequest) -> ForwardResponse {
    let plain = PlainRequest { method: req.method, url: req.url, headers: req.headers, body: req.body, oversized: false };
    let mut res = handle_plain(router, max_body, plain).await;
    let mut body = res.body.to_vec();
    if let Some(mut chunks) = res.stream.take() {
        while let Some(chunk) = chunks.next().await {
            body.extend_from_slice(&chunk);
        }
    }
    ForwardResponse { status: res.status, headers: res.headers, body: Bytes::from(body) }
}
