//! The REST API (spec §2) as an axum router. The same router answers `fetch` calls from JS
//! (one napi crossing per request) and can be served on a native listener.
//!
//! Routes: the table in [`route_table!`] below (also [`ROUTES`]): `GET /health` and
//! `GET /api/openapi.json` (no auth); under auth the sessions API, control (interrupt, queued
//! messages, permissions, questions), the event log and its SSE stream, the workspace files
//! (`/api/sessions/{id}/files`, `/files/{*path}`, `/archive`), agent profiles, and the seed's
//! documented aliases. The OpenAPI document ([`super::openapi`]) is checked against the table.

use std::sync::Arc;
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{Request, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Json;
pub use axum::Router;
use http_body_util::BodyExt;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::openapi as doc;
use super::{check_api_key, cors, parse_json_body, ApiError};
use crate::agent::Architecture;
use crate::error::Error;
use crate::runtime::AgentRuntime;
use crate::session::{AgentSession, CreateSessionArgs, MessageMode};

#[derive(Clone)]
pub struct RestState {
    pub runtime: Arc<AgentRuntime>,
    pub api_key: Arc<str>,
    /// Open Server-Sent Event streams.
    pub streams: Arc<super::sse::Streams>,
    pub mode: Mode,
}

/// Who a router serves.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// HTTP clients: the API key is checked; in a cluster, session routes go to their holder.
    Public,
    /// This process's own calls (Socket.IO controls for sessions held elsewhere): no key,
    /// routed like public ones.
    Internal,
    /// Requests another node checked and forwarded here: no key, run here.
    Forwarded,
}

/// Build the router for one `createRestServer({ apiKey })` call.
pub fn router(runtime: Arc<AgentRuntime>, api_key: &str) -> Router {
    let streams = super::sse::Streams::new(&runtime.events, super::sse::DEFAULT_MAX_BUFFERED_BYTES);
    router_with(runtime, api_key, streams)
}

/// Every route the router serves, as `METHOD "path" => handler`: the router is built from this
/// table and [`ROUTES`] lists it, so the OpenAPI document can be checked against it
/// (`super::openapi`).
macro_rules! route_table {
    ($($method:ident $path:literal => $handler:ident),* $(,)?) => {
        /// `(method, path)` of every route, in axum's syntax (`{id}`, `{*path}`).
        pub const ROUTES: &[(&str, &str)] = &[$((stringify!($method), $path)),*];

        fn add_routes(r: Router<RestState>) -> Router<RestState> {
            r$(.route($path, axum::routing::on(axum::routing::MethodFilter::$method, $handler)))*
        }
    };
}

route_table! {
    GET "/health" => health,
    GET "/metrics" => metrics,
    GET "/api/openapi.json" => openapi_document,
    POST "/api/sessions" => create_session,
    GET "/api/sessions" => list_sessions,
    GET "/api/sessions/{id}" => get_session,
    DELETE "/api/sessions/{id}" => delete_session,
    POST "/api/sessions/{id}/sync" => sync_session,
    PATCH "/api/sessions/{id}/options" => update_options,
    POST "/api/sessions/{id}/messages" => send_message,
    DELETE "/api/sessions/{id}/messages/{message_id}" => remove_queued,
    POST "/api/sessions/{id}/interrupt" => interrupt,
    GET "/api/sessions/{id}/events" => session_events,
    GET "/api/sessions/{id}/events/stream" => session_event_stream,
    POST "/api/sessions/{id}/permissions/{request_id}" => respond_permission,
    POST "/api/sessions/{id}/questions/{request_id}" => answer_question,
    GET "/api/sessions/{id}/files" => list_files,
    GET "/api/sessions/{id}/files/{*path}" => get_file,
    PUT "/api/sessions/{id}/files/{*path}" => put_file,
    DELETE "/api/sessions/{id}/files/{*path}" => delete_file,
    GET "/api/sessions/{id}/archive" => workspace_archive,
    GET "/api/agent-profiles" => list_profiles,
    POST "/sessions/create" => create_session,
    GET "/sessions" => list_sessions,
    GET "/sessions/{id}" => get_session,
    POST "/sessions/{id}/message" => send_message,
    GET "/agent-profiles" => list_profiles,
}

/// [`router`] serving its event streams from `streams`.
pub fn router_with(runtime: Arc<AgentRuntime>, api_key: &str, streams: Arc<super::sse::Streams>) -> Router {
    let state = RestState { runtime, api_key: Arc::from(api_key), streams, mode: Mode::Public };
    build(state)
}

/// A router without the API key: for requests other nodes forward ([`Mode::Forwarded`]) or
/// this process makes ([`Mode::Internal`]).
pub fn unkeyed_router(runtime: Arc<AgentRuntime>, mode: Mode) -> Router {
    let streams = super::sse::Streams::new(&runtime.events, super::sse::DEFAULT_MAX_BUFFERED_BYTES);
    build(RestState { runtime, api_key: Arc::from(""), streams, mode })
}

fn build(state: RestState) -> Router {
    let not_found =
        || async { (StatusCode::NOT_FOUND, [("content-type", "text/plain; charset=UTF-8")], "404 Not Found") };
    add_routes(Router::new())
        .fallback(not_found)
        .method_not_allowed_fallback(not_found)
        .layer(middleware::from_fn_with_state(state.clone(), auth_and_limits))
        .layer(middleware::from_fn(cors))
        .layer(DefaultBodyLimit::disable())
        .with_state(state)
}

/// The Prometheus exposition, when `metrics` is on (else the same 404 as any unknown path).
#[utoipa::path(
    get,
    path = "/metrics",
    operation_id = "metrics",
    tag = "meta",
    summary = "Prometheus metrics (OpenMetrics text); served with the runtime option `metrics`, without a key with `metrics: { public: true }`",
    responses(
        (status = 200, description = "OpenMetrics text", content_type = "application/openmetrics-text", body = crate::transport::openapi::Text),
        (status = 401, description = "Missing or wrong API key", body = crate::transport::openapi::ErrorBody),
        (status = 404, description = "Metrics are off", content_type = "text/plain", body = crate::transport::openapi::Text)
    )
)]
async fn metrics(State(st): State<RestState>) -> Response {
    if st.runtime.options.metrics_public.is_none() {
        return (StatusCode::NOT_FOUND, [("content-type", "text/plain; charset=UTF-8")], "404 Not Found")
            .into_response();
    }
    let content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8";
    ([("content-type", content_type)], st.runtime.metrics_text()).into_response()
}

fn needs_auth(path: &str) -> bool {
    if path == OPENAPI_PATH {
        return false;
    }
    path == "/api"
        || path.starts_with("/api/")
        || path == "/sessions"
        || path.starts_with("/sessions/")
        || path == "/agent-profiles"
}

/// Auth before routing (so unknown `/api/...` paths also need the key, as in the reference),
/// the body limit, and one debug log line per request.
async fn auth_and_limits(state: State<RestState>, req: Request<Body>, next: Next) -> Response {
    let method = req.method().clone();
    let route = req.extensions().get::<axum::extract::MatchedPath>().map(|m| m.as_str().to_string());
    let route = route.unwrap_or_else(|| "unmatched".into());
    let span = tracing::info_span!(
        "http",
        otel.name = %format_args!("{method} {route}"),
        otel.kind = "server",
        http.request.method = %method,
        http.route = %route,
        http.response.status_code = tracing::field::Empty,
    );
    let res = tracing::Instrument::instrument(checked(state, req, next), span.clone()).await;
    // As i64: tracing-opentelemetry exports an unsigned field as a string.
    span.record("http.response.status_code", i64::from(res.status().as_u16()));
    res
}

async fn checked(State(st): State<RestState>, req: Request<Body>, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let private_metrics = path == "/metrics" && st.runtime.options.metrics_public == Some(false);
    if (needs_auth(&path) || private_metrics) && st.mode == Mode::Public {
        if let Err(e) = check_api_key(req.headers(), &st.api_key).or_else(|e| stream_token(&req, &st.api_key).ok_or(e))
        {
            return e.into_response();
        }
        if let Err(e) = st.runtime.ensure_running() {
            return refused(e).into_response();
        }
    }
    let limit = st.runtime.options.max_body_bytes;
    let (parts, body) = req.into_parts();
    let body = match http_body_util::Limited::new(body, limit).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => {
            return ApiError::payload_too_large(limit).into_response();
        }
        Err(e) => return ApiError::bad_request(format!("Could not read request body: {e}")).into_response(),
    };
    let res = match (&st.runtime.cluster, routed_session(&path)) {
        (Some(cluster), Some(id)) if st.mode != Mode::Forwarded => {
            super::cluster_route::route(&st, cluster, id, parts, body, next).await
        }
        _ => next.run(Request::from_parts(parts, Body::from(body))).await,
    };
    tracing::debug!(%method, %path, status = res.status().as_u16(), elapsed_ms = started.elapsed().as_millis() as u64, "http");
    res
}

/// The session a request is about, when it must run where the session is held: every
/// session route but the event stream (served from the shared log wherever the client is).
fn routed_session(path: &str) -> Option<&str> {
    let rest = path.strip_prefix("/api/sessions/").or_else(|| path.strip_prefix("/sessions/"))?;
    let (id, tail) = rest.split_once('/').unwrap_or((rest, ""));
    (!id.is_empty() && id != "create" && tail != "events/stream").then_some(id)
}

/// A browser's `EventSource` cannot send headers: an event stream also takes the key as
/// `?token=` (when no `Authorization` header was sent; compared in constant time).
fn stream_token(req: &Request<Body>, key: &str) -> Option<()> {
    if !req.uri().path().ends_with("/events/stream") || req.headers().contains_key(axum::http::header::AUTHORIZATION) {
        return None;
    }
    let axum::extract::Query(q) =
        axum::extract::Query::<std::collections::HashMap<String, String>>::try_from_uri(req.uri()).ok()?;
    super::key_matches(q.get("token")?, key).then_some(())
}

/// `{ status: "ok" }` as in the reference; `"degraded"` with how many sessions' state cannot be
/// stored (kept loaded, retried), so a load balancer or an operator sees data at risk. Only a
/// count: this route needs no key (ids and errors are in the log).
#[utoipa::path(
    get,
    path = "/health",
    operation_id = "health",
    tag = "meta",
    summary = "Liveness and stored-state health",
    responses(
        (status = 200, description = "ok or degraded", body = crate::transport::openapi::Health)
    )
)]
async fn health(State(st): State<RestState>) -> Json<doc::Health> {
    let unstored = st.runtime.sessions.unstored_sessions().len();
    let cluster = st.runtime.cluster.as_ref().map(|c| doc::ClusterHealth {
        redis: if c.redis_up() { "up" } else { "down" },
        node_id: c.node_id().to_string(),
        owned_sessions: c.owned_count() as u64,
    });
    let degraded = unstored > 0 || cluster.as_ref().is_some_and(|c| c.redis == "down");
    Json(doc::Health {
        status: if degraded { doc::HealthStatus::Degraded } else { doc::HealthStatus::Ok },
        unstored_sessions: (unstored > 0).then_some(unstored as u64),
        cluster,
    })
}

/// The `{id}` of a session route, refused with 400 when it is not a plausible session id.
struct SessionId(String);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for SessionId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &S) -> Result<Self, ApiError> {
        let Path(id) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::bad_request(format!("Invalid session id in path: {e}")))?;
        super::access::validate_session_id(&id).map_err(ApiError::bad_request)?;
        Ok(SessionId(id))
    }
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct CreateBody {
    agent_profile_ref: String,
    architecture: Architecture,
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    session_options: Option<Map<String, Value>>,
    #[serde(default)]
    default_workspace_files: Option<Vec<crate::persistence::WorkspaceFile>>,
}

#[utoipa::path(
    post,
    path = "/api/sessions",
    operation_id = "createSession",
    tag = "sessions",
    summary = "Create a session",
    request_body = CreateBody,
    responses(
        (status = 201, description = "Created", body = crate::transport::openapi::SessionCreated),
        (status = 400, description = "Invalid input (the message names it)", body = crate::transport::openapi::ErrorBody),
        (status = 401, description = "Missing or wrong API key", body = crate::transport::openapi::ErrorBody),
        (status = 500, description = "Failed (adapter or sandbox)", body = crate::transport::openapi::ErrorBody),
        (status = 503, description = "No capacity now, or shutting down", body = crate::transport::openapi::ErrorBody)
    )
)]
async fn create_session(State(st): State<RestState>, body: Bytes) -> Result<Response, ApiError> {
    let b: CreateBody = parse_json_body(&body)?;
    let args = CreateSessionArgs {
        agent_profile_ref: b.agent_profile_ref,
        architecture: Some(b.architecture),
        session_options: b.session_options,
        default_workspace_files: b.default_workspace_files,
    };
    let session = st.runtime.sessions.create_session(args).await.map_err(|e| match e {
        Error::AgentProfileNotFound(_) | Error::InvalidInput(_) => {
            ApiError::new(StatusCode::BAD_REQUEST, e.code(), e.to_string())
        }
        e => failed("Failed to create session", "SESSION_CREATE_FAILED", e),
    })?;
    let data = session.persisted_list_data();
    let body = json!({
        "sessionId": session.session_id,
        "runtime": session.runtime_state(),
        "createdAt": data["createdAt"],
        "sessionOptions": data["sessionOptions"],
    });
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

#[utoipa::path(
    get,
    path = "/api/sessions",
    operation_id = "listSessions",
    tag = "sessions",
    summary = "List stored sessions",
    responses(
        (status = 200, description = "Sessions", body = crate::transport::openapi::SessionList),
        (status = 401, description = "Missing or wrong API key", body = crate::transport::openapi::ErrorBody),
        (status = 500, description = "Failed (adapter or sandbox)", body = crate::transport::openapi::ErrorBody),
        (status = 503, description = "No capacity now, or shutting down", body = crate::transport::openapi::ErrorBody)
    )
)]
async fn list_sessions(State(st): State<RestState>) -> Result<Json<Value>, ApiError> {
    let sessions = st
        .runtime
        .sessions
        .all_sessions()
        .await
        .map_err(|e| failed("Failed to list sessions", "SESSION_LIST_FAILED", e))?;
    Ok(Json(json!({ "sessions": sessions })))
}

fn failed(what: &str, code: &'static str, e: Error) -> ApiError {
    match e {
        e @ (Error::Capacity(_)
        | Error::QueueFull(_)
        | Error::SessionClosing(_)
        | Error::ShutDown
        | Error::Cluster(_)
        | Error::OwnedElsewhere { .. }) => refused(e),
        e @ (Error::InvalidInput(_) | Error::NotFound(_) | Error::AlreadyResolved(_)) => rejected(e),
        e => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, code, format!("{what}: {e}")),
    }
}

/// Limits and lifecycle: 429 for a full queue (try again after the running turns), 503 for
/// what has no room now or is going away.
fn refused(e: Error) -> ApiError {
    let status = match e {
        Error::QueueFull(_) => StatusCode::TOO_MANY_REQUESTS,
        Error::BudgetExceeded(_) => StatusCode::PAYMENT_REQUIRED,
        Error::Capacity(_)
        | Error::SessionClosing(_)
        | Error::ShutDown
        | Error::Cluster(_)
        | Error::OwnedElsewhere { .. } => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    ApiError::new(status, e.code(), e.to_string())
}

/// What the caller named or sent is wrong: 400, 404 (no such message or request), 409 (the
/// request was answered already).
fn rejected(e: Error) -> ApiError {
    let status = match e {
        Error::NotFound(_) => StatusCode::NOT_FOUND,
        Error::AlreadyResolved(_) => StatusCode::CONFLICT,
        _ => StatusCode::BAD_REQUEST,
    };
    ApiError::new(status, e.code(), e.to_string())
}

fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "SESSION_NOT_FOUND", "Session not found")
}

/// Load-if-needed, mapping "does not exist" to 404 and adapter failures to 500.
async fn load(st: &RestState, id: &str) -> Result<Arc<AgentSession>, ApiError> {
    st.runtime.sessions.load_session(id).await.map_err(|e| match e {
        e if e.is_not_found() => not_found(),
        Error::AgentProfileNotFound(_) => ApiError::new(StatusCode::NOT_FOUND, e.code(), e.to_string()),
        e => failed("Failed to load session", "SESSION_GET_FAILED", e),
    })
}

fn loaded(st: &RestState, id: &str) -> Result<Arc<AgentSession>, ApiError> {
    st.runtime.sessions.get(id).ok_or_else(not_found)
}

#[utoipa::path(
    get,
    path = "/api/sessions/{id}",
    operation_id = "getSession",
    tag = "sessions",
    summary = "A session's full state (loads it)",
    params(("id" = String, Path, description = "Session id")),
    responses(
        (status = 200, description = "AgentSessionState", body = crate::transport::openapi::SessionState),
        crate::transport::openapi::SessionErrors
    )
)]
async fn get_session(State(st): State<RestState>, SessionId(id): SessionId) -> Result<Response, ApiError> {
    let session = load(&st, &id).await?;
    // The state is serialized once in the core; send it as is.
    Ok(([("content-type", "application/json")], session.state_json()).into_response())
}

#[utoipa::path(
    delete,
    path = "/api/sessions/{id}",
    operation_id = "unloadSession",
    tag = "sessions",
    summary = "Store and unload a loaded session (stops its sandbox)",
    params(("id" = String, Path, description = "Session id")),
    responses(
        (status = 200, description = "Unloaded", body = crate::transport::openapi::SessionDone),
        crate::transport::openapi::SessionErrors
    )
)]
async fn delete_session(
    State(st): State<RestState>,
    SessionId(id): SessionId,
) -> Result<Json<doc::SessionDone>, ApiError> {
    loaded(&st, &id)?;
    st.runtime
        .sessions
        .unload_session(&id)
        .await
        .map_err(|e| failed("Failed to destroy session", "SESSION_DESTROY_FAILED", e))?;
    Ok(Json(doc::SessionDone { success: true, session_id: id }))
}

#[utoipa::path(
    post,
    path = "/api/sessions/{id}/sync",
    operation_id = "syncSession",
    tag = "sessions",
    summary = "Pull the sandbox's transcript and files and store everything",
    params(("id" = String, Path, description = "Session id")),
    responses(
        (status = 200, description = "Stored", body = crate::transport::openapi::SessionDone),
        crate::transport::openapi::SessionErrors
    )
)]
async fn sync_session(
    State(st): State<RestState>,
    SessionId(id): SessionId,
) -> Result<Json<doc::SessionDone>, ApiError> {
    let session = loaded(&st, &id)?;
    session.sync_to_storage().await.map_err(|e| failed("Failed to sync session", "SESSION_SYNC_FAILED", e))?;
    Ok(Json(doc::SessionDone { success: true, session_id: id }))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct OptionsBody {
    #[schema(value_type = Object)]
    session_options: Map<String, Value>,
}

#[utoipa::path(
    patch,
    path = "/api/sessions/{id}/options",
    operation_id = "updateSessionOptions",
    tag = "sessions",
    summary = "Replace the session's options",
    params(("id" = String, Path, description = "Session id")),
    request_body = OptionsBody,
    responses(
        (status = 200, description = "Updated", body = crate::transport::openapi::OptionsUpdated),
        crate::transport::openapi::SessionErrors
    )
)]
async fn update_options(
    State(st): State<RestState>,
    SessionId(id): SessionId,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let b: OptionsBody = parse_json_body(&body)?;
    let session = load(&st, &id).await?;
    session
        .update_session_options(b.session_options.clone())
        .await
        .map_err(|e| failed("Failed to update session options", "SESSION_OPTIONS_UPDATE_FAILED", e))?;
    Ok(Json(json!({ "success": true, "sessionId": id, "sessionOptions": b.session_options })))
}

#[derive(Deserialize)]
struct MessageBody {
    content: String,
    #[serde(default)]
    mode: Option<String>,
}

#[utoipa::path(
    post,
    path = "/api/sessions/{id}/messages",
    operation_id = "sendMessage",
    tag = "sessions",
    summary = "Send a message (answers once it is stored, before it runs)",
    params(("id" = String, Path, description = "Session id")),
    request_body = crate::transport::openapi::MessageRequest,
    responses(
        (status = 200, description = "Accepted", body = crate::transport::openapi::MessageAccepted),
        (status = 400, description = "Invalid input (the message names it)", body = crate::transport::openapi::ErrorBody),
        (status = 401, description = "Missing or wrong API key", body = crate::transport::openapi::ErrorBody),
        (status = 402, description = "The session's budget is spent", body = crate::transport::openapi::ErrorBody),
        (status = 404, description = "Not found", body = crate::transport::openapi::ErrorBody),
        (status = 429, description = "The session's queue is full", body = crate::transport::openapi::ErrorBody),
        (status = 500, description = "Failed (adapter or sandbox)", body = crate::transport::openapi::ErrorBody),
        (status = 501, description = "No sandbox provider or agent architecture", body = crate::transport::openapi::ErrorBody),
        (status = 503, description = "No capacity now, or shutting down", body = crate::transport::openapi::ErrorBody)
    )
)]
async fn send_message(
    State(st): State<RestState>,
    SessionId(id): SessionId,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let b: MessageBody = parse_json_body(&body)?;
    let mode = match b.mode.as_deref() {
        None => MessageMode::Queue,
        Some(m) => MessageMode::parse(m).ok_or_else(|| {
            ApiError::bad_request(format!(
                "Invalid request body: mode must be \"queue\", \"steer\" or \"interrupt\", got {m:?}"
            ))
        })?,
    };
    let session = load(&st, &id).await?;
    // What cannot run at all is refused here; everything else is reported over events, as the
    // reference does: the answer comes before the run.
    let ctx = st.runtime.sessions.context();
    if let Err(e) = ctx.architecture(session.architecture) {
        return Err(ApiError::new(StatusCode::NOT_IMPLEMENTED, e.code(), e.to_string()));
    }
    if let Err(m) = &ctx.sandboxes {
        return Err(ApiError::new(StatusCode::NOT_IMPLEMENTED, "SANDBOX_UNAVAILABLE", m.clone()));
    }
    // The message takes its place in the session's queue now, in request order.
    let turn = session.send_message(&b.content, mode).map_err(refused)?;
    let (message_id, position, steered) = (turn.message_id.clone(), turn.position, turn.steered);
    // Answered only once the message is stored: a 200 means it will run (or, after a crash,
    // be run or reported by the restarted runtime). The turn is driven either way, to keep the
    // queue moving; a withdrawn message does not run.
    let stored = session.confirm_stored(&turn.message_id).await;
    tokio::spawn(async move {
        // Failures were already sent as `session:error`.
        let _ = turn.run.await;
    });
    if let Err(e) = stored {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            e.code(),
            format!("The message could not be stored, so it was not accepted: {e}"),
        ));
    }
    let mut res = json!({
        "success": true,
        "sessionId": id,
        "messageId": message_id,
        "queued": position > 0,
        "position": position,
    });
    if mode == MessageMode::Steer {
        res["steered"] = json!(steered);
    }
    Ok(Json(res))
}

/// Most events one read returns.
const MAX_EVENTS_PER_READ: usize = 1000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EventsQuery {
    #[serde(default)]
    since: Option<String>,
    #[serde(default)]
    limit: Option<String>,
}

/// `GET /api/sessions/:id/events?since=&limit=`: what the session's log holds after `since`.
#[utoipa::path(
    get,
    path = "/api/sessions/{id}/events",
    operation_id = "readEvents",
    tag = "sessions",
    summary = "Events from the session's log after `since`",
    params(("id" = String, Path, description = "Session id"), ("since" = Option<String>, Query, description = "An eventId; events after it"), ("limit" = Option<u32>, Query, description = "1 to 1000 (default 1000)")),
    responses(
        (status = 200, description = "A page of events", body = crate::transport::openapi::EventsRead),
        crate::transport::openapi::SessionErrors
    )
)]
async fn session_events(
    State(st): State<RestState>,
    SessionId(id): SessionId,
    uri: axum::http::Uri,
) -> Result<Json<Value>, ApiError> {
    let axum::extract::Query(q) = axum::extract::Query::<EventsQuery>::try_from_uri(&uri)
        .map_err(|e| ApiError::bad_request(format!("Invalid query: {}", e.body_text())))?;
    let limit = match q.limit.as_deref() {
        None => MAX_EVENTS_PER_READ,
        Some(l) => match l.parse::<usize>() {
            Ok(n) if n >= 1 => n.min(MAX_EVENTS_PER_READ),
            _ => {
                return Err(ApiError::bad_request(format!(
                    "Invalid query: limit must be an integer from 1 to {MAX_EVENTS_PER_READ}, got {l:?}"
                )))
            }
        },
    };
    if q.since.as_ref().is_some_and(|s| s.is_empty() || s.len() > 200) {
        return Err(ApiError::bad_request("Invalid query: since must be an eventId (1 to 200 characters)"));
    }
    load(&st, &id).await?;
    let read = st.runtime.events.log().read_durable(&id, q.since.as_deref(), limit).await;
    Ok(Json(serde_json::to_value(read).expect("log read serializes")))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StreamQuery {
    #[serde(default)]
    since: Option<String>,
    /// The API key, checked before routing (see `stream_token`).
    #[serde(default)]
    #[allow(dead_code)]
    token: Option<String>,
}

/// `GET /api/sessions/:id/events/stream`: Server-Sent Events, resuming after `Last-Event-ID`
/// (an `EventSource` reconnecting sends it) or else `?since=`.
#[utoipa::path(
    get,
    path = "/api/sessions/{id}/events/stream",
    operation_id = "streamEvents",
    tag = "sessions",
    summary = "Server-Sent Events: the log after `since` / `Last-Event-ID`, then live events",
    params(("id" = String, Path, description = "Session id"), ("since" = Option<String>, Query, description = "An eventId to resume after"), ("token" = Option<String>, Query, description = "The API key, for EventSource (no Authorization header)"), ("Last-Event-ID" = Option<String>, Header, description = "Resume after this eventId (sent by a reconnecting EventSource)")),
    responses(
        (status = 200, description = "text/event-stream frames: id (eventId), event (name), data (JSON payload)", content_type = "text/event-stream", body = String),
        crate::transport::openapi::SessionErrors
    )
)]
async fn session_event_stream(
    State(st): State<RestState>,
    SessionId(id): SessionId,
    headers: axum::http::HeaderMap,
    uri: axum::http::Uri,
) -> Result<Response, ApiError> {
    let axum::extract::Query(q) = axum::extract::Query::<StreamQuery>::try_from_uri(&uri)
        .map_err(|e| ApiError::bad_request(format!("Invalid query: {}", e.body_text())))?;
    let since = match headers.get("last-event-id") {
        Some(v) => Some(
            v.to_str()
                .ok()
                .filter(|s| !s.is_empty() && s.len() <= 200)
                .ok_or_else(|| {
                    ApiError::bad_request("Invalid Last-Event-ID header: expected an eventId (1 to 200 characters)")
                })?
                .to_string(),
        ),
        None => q.since,
    };
    if since.as_ref().is_some_and(|s| s.is_empty() || s.len() > 200) {
        return Err(ApiError::bad_request("Invalid query: since must be an eventId (1 to 200 characters)"));
    }
    // In a cluster a session held elsewhere streams from the shared log, unloaded here.
    let held_elsewhere = match &st.runtime.cluster {
        Some(c) if !st.runtime.sessions.is_loaded(&id) => c.holder(&id).await.ok().flatten().is_some_and(|n| n != c.node_id()),
        _ => false,
    };
    if !held_elsewhere {
        load(&st, &id).await?;
    }
    let stream = st.streams.open(&id, since.as_deref());
    let headers = [
        (axum::http::header::CONTENT_TYPE, "text/event-stream; charset=utf-8"),
        (axum::http::header::CACHE_CONTROL, "no-cache"),
        (axum::http::HeaderName::from_static("x-accel-buffering"), "no"),
    ];
    Ok((headers, Body::from_stream(stream)).into_response())
}

/// A path with a session id and a second id (a message or a request).
struct SessionItem(String, String);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for SessionItem {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &S) -> Result<Self, ApiError> {
        let Path((id, item)) = Path::<(String, String)>::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::bad_request(format!("Invalid path: {e}")))?;
        super::access::validate_session_id(&id).map_err(ApiError::bad_request)?;
        if item.is_empty() || item.len() > 200 {
            return Err(ApiError::bad_request("Invalid id in path: expected 1 to 200 characters"));
        }
        Ok(SessionItem(id, item))
    }
}

#[utoipa::path(
    delete,
    path = "/api/sessions/{id}/messages/{message_id}",
    operation_id = "removeQueuedMessage",
    tag = "sessions",
    summary = "Withdraw a queued message",
    params(("id" = String, Path, description = "Session id"), ("message_id" = String, Path, description = "The queued message's id")),
    responses(
        (status = 200, description = "Removed", body = crate::transport::openapi::QueuedRemoved),
        crate::transport::openapi::SessionErrors
    )
)]
async fn remove_queued(
    State(st): State<RestState>,
    SessionItem(id, message_id): SessionItem,
) -> Result<Json<doc::QueuedRemoved>, ApiError> {
    let session = loaded(&st, &id)?;
    session.remove_queued(&message_id).map_err(rejected)?;
    Ok(Json(doc::QueuedRemoved { success: true, session_id: id, message_id }))
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct InterruptBody {
    #[serde(default)]
    clear_queue: bool,
}

#[utoipa::path(
    post,
    path = "/api/sessions/{id}/interrupt",
    operation_id = "interrupt",
    tag = "sessions",
    summary = "Stop the running turn",
    params(("id" = String, Path, description = "Session id")),
    request_body(content = Option<crate::transport::openapi::InterruptRequest>, description = "Optional; an empty body is `{}`"),
    responses(
        (status = 200, description = "Done", body = crate::transport::openapi::Interrupted),
        crate::transport::openapi::SessionErrors
    )
)]
async fn interrupt(
    State(st): State<RestState>,
    SessionId(id): SessionId,
    body: Bytes,
) -> Result<Json<doc::Interrupted>, ApiError> {
    let b: InterruptBody = parse_json_body(&body)?;
    let session = load(&st, &id).await?;
    let interrupted = session.interrupt(b.clear_queue);
    Ok(Json(doc::Interrupted { success: true, session_id: id, interrupted }))
}

#[utoipa::path(
    post,
    path = "/api/sessions/{id}/permissions/{request_id}",
    operation_id = "respondPermission",
    tag = "sessions",
    summary = "Allow or deny a pending tool call",
    params(("id" = String, Path, description = "Session id"), ("request_id" = String, Path, description = "The pending request's id")),
    request_body = crate::transport::openapi::PermissionAnswerBody,
    responses(
        (status = 200, description = "Answered", body = crate::transport::openapi::RequestAnswered),
        (status = 400, description = "Invalid input (the message names it)", body = crate::transport::openapi::ErrorBody),
        (status = 401, description = "Missing or wrong API key", body = crate::transport::openapi::ErrorBody),
        (status = 404, description = "Not found", body = crate::transport::openapi::ErrorBody),
        (status = 409, description = "Already answered", body = crate::transport::openapi::ErrorBody),
        (status = 500, description = "Failed (adapter or sandbox)", body = crate::transport::openapi::ErrorBody),
        (status = 503, description = "No capacity now, or shutting down", body = crate::transport::openapi::ErrorBody)
    )
)]
async fn respond_permission(
    State(st): State<RestState>,
    SessionItem(id, request_id): SessionItem,
    body: Bytes,
) -> Result<Json<doc::RequestAnswered>, ApiError> {
    let answer = super::control::permission_answer(&body)?;
    let session = loaded(&st, &id).map_err(|_| no_request(&id, &request_id))?;
    session.respond_permission(&request_id, answer).map_err(rejected)?;
    Ok(Json(doc::RequestAnswered { success: true, session_id: id, request_id }))
}

#[utoipa::path(
    post,
    path = "/api/sessions/{id}/questions/{request_id}",
    operation_id = "answerQuestion",
    tag = "sessions",
    summary = "Answer a pending question of the agent",
    params(("id" = String, Path, description = "Session id"), ("request_id" = String, Path, description = "The pending request's id")),
    request_body = crate::transport::openapi::QuestionAnswersBody,
    responses(
        (status = 200, description = "Answered", body = crate::transport::openapi::RequestAnswered),
        (status = 400, description = "Invalid input (the message names it)", body = crate::transport::openapi::ErrorBody),
        (status = 401, description = "Missing or wrong API key", body = crate::transport::openapi::ErrorBody),
        (status = 404, description = "Not found", body = crate::transport::openapi::ErrorBody),
        (status = 409, description = "Already answered", body = crate::transport::openapi::ErrorBody),
        (status = 500, description = "Failed (adapter or sandbox)", body = crate::transport::openapi::ErrorBody),
        (status = 503, description = "No capacity now, or shutting down", body = crate::transport::openapi::ErrorBody)
    )
)]
async fn answer_question(
    State(st): State<RestState>,
    SessionItem(id, request_id): SessionItem,
    body: Bytes,
) -> Result<Json<doc::RequestAnswered>, ApiError> {
    let answers = super::control::question_answers(&body)?;
    let session = loaded(&st, &id).map_err(|_| no_request(&id, &request_id))?;
    session.answer_question(&request_id, &answers).map_err(rejected)?;
    Ok(Json(doc::RequestAnswered { success: true, session_id: id, request_id }))
}

/// Requests live in loaded sessions only.
fn no_request(id: &str, request_id: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "NOT_FOUND",
        format!("no request {request_id} in session {id} (it is not loaded)"),
    )
}

#[utoipa::path(
    get,
    path = "/api/agent-profiles",
    operation_id = "listAgentProfiles",
    tag = "profiles",
    summary = "Agent profiles from persistence",
    responses(
        (status = 200, description = "Profiles", body = crate::transport::openapi::ProfileList),
        (status = 401, description = "Missing or wrong API key", body = crate::transport::openapi::ErrorBody),
        (status = 500, description = "Failed (adapter or sandbox)", body = crate::transport::openapi::ErrorBody),
        (status = 503, description = "No capacity now, or shutting down", body = crate::transport::openapi::ErrorBody)
    )
)]
async fn list_profiles(State(st): State<RestState>) -> Result<Json<Value>, ApiError> {
    let profiles = st
        .runtime
        .sessions
        .context()
        .persistence
        .list_agent_profiles()
        .await
        .map_err(|e| failed("Failed to list agent profiles", "AGENT_PROFILES_LIST_FAILED", e.into()))?;
    Ok(Json(json!({ "profiles": profiles })))
}

/// Where the OpenAPI document is served (no key needed, like `/health`).
pub const OPENAPI_PATH: &str = "/api/openapi.json";

#[utoipa::path(
    get,
    path = "/api/openapi.json",
    operation_id = "openapi",
    tag = "meta",
    summary = "This OpenAPI document",
    responses(
        (status = 200, description = "OpenAPI 3.1 document", content_type = "application/json", body = Object)
    )
)]
async fn openapi_document() -> Response {
    ([("content-type", "application/json")], super::openapi::document_json()).into_response()
}

/// The `{id}` and `{*path}` of a workspace file route; the path is checked by the session
/// (relative, no `..`, no NUL, not the agent's configuration).
struct SessionFile(String, String);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for SessionFile {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &S) -> Result<Self, ApiError> {
        let Path((id, path)) = Path::<(String, String)>::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::bad_request(format!("Invalid path: {e}")))?;
        super::access::validate_session_id(&id).map_err(ApiError::bad_request)?;
        crate::session::files::check_path(&path).map_err(ApiError::bad_request)?;
        Ok(SessionFile(id, path))
    }
}

fn file_error(e: Error) -> ApiError {
    match e {
        e @ Error::InvalidInput(_) => rejected(e),
        e => failed("Workspace file operation failed", "WORKSPACE_FILE_FAILED", e),
    }
}

fn no_file(path: &str) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "FILE_NOT_FOUND", format!("No file {path:?} in the workspace"))
}

/// `GET /api/sessions/:id/files`: `{ files: [{ path, size, modifiedAt }] }`.
#[utoipa::path(
    get,
    path = "/api/sessions/{id}/files",
    operation_id = "listFiles",
    tag = "files",
    summary = "Workspace files (from the running sandbox, else the stored files)",
    params(("id" = String, Path, description = "Session id")),
    responses(
        (status = 200, description = "Files, sorted by path", body = crate::transport::openapi::FileList),
        crate::transport::openapi::SessionErrors
    )
)]
async fn list_files(State(st): State<RestState>, SessionId(id): SessionId) -> Result<Json<doc::FileList>, ApiError> {
    let session = load(&st, &id).await?;
    let files = session.list_workspace().await.map_err(file_error)?;
    Ok(Json(doc::FileList { files }))
}

/// `GET /api/sessions/:id/files/*path`: the content, as text when it is UTF-8.
#[utoipa::path(
    get,
    path = "/api/sessions/{id}/files/{path}",
    operation_id = "getFile",
    tag = "files",
    summary = "A workspace file's content",
    params(("id" = String, Path, description = "Session id"), ("path" = String, Path, description = "Relative to the workspace; no `..`, absolute paths, NUL or links")),
    responses(
        (status = 200, description = "The content: text/plain when UTF-8, else application/octet-stream", content((crate::transport::openapi::Text = "text/plain"), (crate::transport::openapi::Binary = "application/octet-stream"))),
        crate::transport::openapi::SessionErrors
    )
)]
async fn get_file(State(st): State<RestState>, SessionFile(id, path): SessionFile) -> Result<Response, ApiError> {
    let session = load(&st, &id).await?;
    let content = session.read_workspace_file(&path).await.map_err(file_error)?.ok_or_else(|| no_file(&path))?;
    let kind =
        if std::str::from_utf8(&content).is_ok() { "text/plain; charset=utf-8" } else { "application/octet-stream" };
    Ok(([(axum::http::header::CONTENT_TYPE, kind)], content).into_response())
}

/// `PUT /api/sessions/:id/files/*path`: the raw body becomes the file.
#[utoipa::path(
    put,
    path = "/api/sessions/{id}/files/{path}",
    operation_id = "putFile",
    tag = "files",
    summary = "Write a workspace file (the raw body is the content)",
    params(("id" = String, Path, description = "Session id"), ("path" = String, Path, description = "Relative to the workspace; no `..`, absolute paths, NUL or links")),
    request_body(content = crate::transport::openapi::Binary, content_type = "application/octet-stream", description = "The file's bytes (any content type)"),
    responses(
        (status = 200, description = "Written", body = crate::transport::openapi::FileWritten),
        (status = 400, description = "Invalid input (the message names it)", body = crate::transport::openapi::ErrorBody),
        (status = 401, description = "Missing or wrong API key", body = crate::transport::openapi::ErrorBody),
        (status = 404, description = "Not found", body = crate::transport::openapi::ErrorBody),
        (status = 413, description = "Body larger than the limit", body = crate::transport::openapi::ErrorBody),
        (status = 500, description = "Failed (adapter or sandbox)", body = crate::transport::openapi::ErrorBody),
        (status = 503, description = "No capacity now, or shutting down", body = crate::transport::openapi::ErrorBody)
    )
)]
async fn put_file(
    State(st): State<RestState>,
    SessionFile(id, path): SessionFile,
    body: Bytes,
) -> Result<Json<doc::FileWritten>, ApiError> {
    let limit = st.runtime.options.max_workspace_file_bytes;
    if body.len() > limit {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "PAYLOAD_TOO_LARGE",
            format!("File content is larger than maxWorkspaceFileBytes ({limit} bytes)"),
        ));
    }
    let session = load(&st, &id).await?;
    let size = body.len();
    let written = session.write_workspace_file(&path, body.to_vec()).await.map_err(file_error)?;
    let created = written == crate::session::files::Written::Created;
    Ok(Json(doc::FileWritten { success: true, session_id: id, path, size: size as u64, created }))
}

/// `DELETE /api/sessions/:id/files/*path`: `{ success: true }`, 404 when there is no such file.
#[utoipa::path(
    delete,
    path = "/api/sessions/{id}/files/{path}",
    operation_id = "deleteFile",
    tag = "files",
    summary = "Delete a workspace file",
    params(("id" = String, Path, description = "Session id"), ("path" = String, Path, description = "Relative to the workspace")),
    responses(
        (status = 200, description = "Deleted", body = crate::transport::openapi::FileDeleted),
        crate::transport::openapi::SessionErrors
    )
)]
async fn delete_file(
    State(st): State<RestState>,
    SessionFile(id, path): SessionFile,
) -> Result<Json<doc::FileDeleted>, ApiError> {
    let session = load(&st, &id).await?;
    if !session.delete_workspace_file(&path).await.map_err(file_error)? {
        return Err(no_file(&path));
    }
    Ok(Json(doc::FileDeleted { success: true, session_id: id, path }))
}

/// `GET /api/sessions/:id/archive`: the workspace as a tar archive.
#[utoipa::path(
    get,
    path = "/api/sessions/{id}/archive",
    operation_id = "getArchive",
    tag = "files",
    summary = "The workspace as a tar archive",
    params(("id" = String, Path, description = "Session id")),
    responses(
        (status = 200, description = "A tar archive of the workspace's regular files", content_type = "application/x-tar", body = crate::transport::openapi::Binary),
        crate::transport::openapi::SessionErrors
    )
)]
async fn workspace_archive(State(st): State<RestState>, SessionId(id): SessionId) -> Result<Response, ApiError> {
    let session = load(&st, &id).await?;
    let tar = session.workspace_archive().await.map_err(file_error)?;
    let disposition = format!("attachment; filename=\"{id}-workspace.tar\"");
    Ok((
        [
            (axum::http::header::CONTENT_TYPE, "application/x-tar".to_string()),
            (axum::http::header::CONTENT_DISPOSITION, disposition),
        ],
        tar,
    )
        .into_response())
}

/// A request as plain data, the shape the JS `fetch` glue hands over in one call.
pub struct PlainRequest {
    pub method: String,
    /// Absolute (`http://host/path?q`) or origin-form (`/path?q`).
    pub url: String,
    /// Flat `[name, value, name, value, ...]`.
    pub headers: Vec<String>,
    pub body: Bytes,
    /// The caller stopped reading because the body passed the limit.
    pub oversized: bool,
}

pub struct PlainResponse {
    pub status: u16,
    /// Flat `[name, value, ...]`.
    pub headers: Vec<String>,
    pub body: Bytes,
    /// A body of unknown length (an event stream): read it as it comes instead of `body`.
    pub stream: Option<BodyChunks>,
}

/// A response body read as it comes; dropping it releases what produces it.
pub struct BodyChunks(Body);

impl BodyChunks {
    /// The next non-empty chunk; `None` at the end (or when the body failed).
    pub async fn next(&mut self) -> Option<Bytes> {
        loop {
            match self.0.frame().await? {
                Ok(f) => match f.into_data() {
                    Ok(d) if !d.is_empty() => return Some(d),
                    _ => continue,
                },
                Err(_) => return None,
            }
        }
    }
}

impl PlainResponse {
    /// A response whose whole body is known.
    pub fn full(status: u16, headers: Vec<String>, body: Bytes) -> Self {
        Self { status, headers, body, stream: None }
    }
}

/// Answer one plain request with `router`.
pub async fn handle_plain(router: &Router, max_body: usize, req: PlainRequest) -> PlainResponse {
    let response = match build_request(req, max_body) {
        Ok(r) => {
            use tower::ServiceExt;
            router.clone().oneshot(r).await.unwrap_or_else(|never| match never {})
        }
        Err(e) => e.into_response(),
    };
    let (parts, body) = response.into_parts();
    let mut headers = Vec::with_capacity(parts.headers.len() * 2);
    for (k, v) in &parts.headers {
        headers.push(k.as_str().to_string());
        headers.push(String::from_utf8_lossy(v.as_bytes()).into_owned());
    }
    let status = parts.status.as_u16();
    if axum::body::HttpBody::size_hint(&body).exact().is_none() {
        return PlainResponse { status, headers, body: Bytes::new(), stream: Some(BodyChunks(body)) };
    }
    let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    PlainResponse::full(status, headers, body)
}

fn build_request(req: PlainRequest, max_body: usize) -> Result<Request<Body>, ApiError> {
    if req.oversized {
        return Err(ApiError::payload_too_large(max_body));
    }
    let uri: axum::http::Uri =
        req.url.parse().map_err(|e| ApiError::bad_request(format!("Invalid URL {:?}: {e}", req.url)))?;
    let path_and_query = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let method = axum::http::Method::from_bytes(req.method.as_bytes())
        .map_err(|_| ApiError::bad_request(format!("Invalid HTTP method {:?}", req.method)))?;
    let mut builder = Request::builder().method(method).uri(path_and_query);
    for pair in req.headers.chunks_exact(2) {
        builder = builder.header(pair[0].as_str(), pair[1].as_str());
    }
    builder.body(Body::from(req.body)).map_err(|e| ApiError::bad_request(format!("Invalid request: {e}")))
}

#[cfg(test)]
mod tests {
    #[test]
    fn session_routes_run_where_the_session_is_held_but_event_streams_stay() {
        assert_eq!(super::routed_session("/api/sessions/abc"), Some("abc"));
        assert_eq!(super::routed_session("/api/sessions/abc/messages"), Some("abc"));
        assert_eq!(super::routed_session("/api/sessions/abc/files/a/b.txt"), Some("abc"));
        assert_eq!(super::routed_session("/sessions/abc/message"), Some("abc"));
        assert_eq!(super::routed_session("/api/sessions/abc/events/stream"), None);
        assert_eq!(super::routed_session("/api/sessions"), None);
        assert_eq!(super::routed_session("/sessions/create"), None);
        assert_eq!(super::routed_session("/api/agent-profiles"), None);
    }
}
