//! The OpenAPI 3.1 document of the REST API (`GET /api/openapi.json`), generated with utoipa
//! from the handlers' `#[utoipa::path]` annotations in [`super::rest`] and the schemas here
//! (most handlers answer with these very types).
//! The seed's aliases are copies of the operations they alias. A test checks that the
//! document lists exactly the routes of [`super::rest::ROUTES`], the table the router is built
//! from.

#![allow(dead_code)] // some schema types describe JSON built elsewhere (`json!`, cached state) and are never constructed

use std::sync::OnceLock;

use serde::Serialize;
use utoipa::openapi::path::{Operation, PathItem};
use utoipa::openapi::security::{
    ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme,
};
use utoipa::{Modify, OpenApi, ToSchema};

/// Every error: `{ error, code }`.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong, naming the field or value at fault.
    pub error: String,
    /// A stable code, e.g. `INVALID_REQUEST`, `SESSION_NOT_FOUND`, `FILE_NOT_FOUND`.
    pub code: String,
}

/// The errors most session routes can answer, documented once (`responses(..., SessionErrors)`).
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)] // only its documentation is used
pub enum SessionErrors {
    #[response(status = 400, description = "Invalid input (the message names it)")]
    Invalid(ErrorBody),
    #[response(status = 401, description = "Missing or wrong API key")]
    Unauthorized(ErrorBody),
    #[response(status = 404, description = "Not found")]
    NotFound(ErrorBody),
    #[response(status = 500, description = "Failed (adapter or sandbox)")]
    Failed(ErrorBody),
    #[response(status = 503, description = "No capacity now, or shutting down")]
    Unavailable(ErrorBody),
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    Ok,
    Degraded,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Health {
    pub status: HealthStatus,
    /// Sessions whose state cannot be stored yet (only when degraded).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unstored_sessions: Option<u64>,
    /// With the `cluster` option: this node and its link to Redis.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterHealth>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterHealth {
    /// `up` or `down`.
    pub redis: &'static str,
    pub node_id: String,
    /// Sessions this node holds the lease of.
    pub owned_sessions: u64,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SessionCreated {
    pub session_id: String,
    /// The session's runtime state (`{ isLoaded, sandbox, ... }`).
    #[schema(value_type = Object)]
    pub runtime: serde_json::Value,
    pub created_at: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub session_options: serde_json::Value,
}

#[derive(Serialize, ToSchema)]
pub struct SessionList {
    /// Stored sessions (`PersistedSessionListData` with `runtime`).
    #[schema(value_type = Vec<Object>)]
    pub sessions: Vec<serde_json::Value>,
}

/// The session's full state (`AgentSessionState`: blocks, workspace files, runtime, ...).
#[derive(Serialize, ToSchema)]
#[schema(value_type = Object)]
pub struct SessionState(serde_json::Value);

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SessionDone {
    pub success: bool,
    pub session_id: String,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OptionsUpdated {
    pub success: bool,
    pub session_id: String,
    #[schema(value_type = Object)]
    pub session_options: serde_json::Value,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum MessageModeName {
    Queue,
    Steer,
    Interrupt,
}

#[derive(Serialize, ToSchema)]
pub struct MessageRequest {
    pub content: String,
    /// `queue` (default): after what is queued; `steer`: into the running turn;
    /// `interrupt`: stop the running turn and run this next.
    pub mode: Option<MessageModeName>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MessageAccepted {
    pub success: bool,
    pub session_id: String,
    pub message_id: String,
    pub queued: bool,
    pub position: u64,
    /// Only with `mode: "steer"`: delivered into the running turn.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub steered: Option<bool>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct QueuedRemoved {
    pub success: bool,
    pub session_id: String,
    pub message_id: String,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct InterruptRequest {
    /// Also drop every queued message.
    pub clear_queue: Option<bool>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Interrupted {
    pub success: bool,
    pub session_id: String,
    /// Whether a turn was running.
    pub interrupted: bool,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Behavior {
    Allow,
    Deny,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PermissionAnswerBody {
    pub behavior: Behavior,
    /// Replaces the tool's input (allow only).
    #[schema(value_type = Option<Object>)]
    pub updated_input: Option<serde_json::Value>,
    pub message: Option<String>,
    /// Apply the same decision to later calls of this tool in the session.
    pub remember: Option<bool>,
}

/// A question's answer: one option's label, or several.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub enum Answer {
    One(String),
    Many(Vec<String>),
}

#[derive(Serialize, ToSchema)]
pub struct QuestionAnswersBody {
    /// Each question's text mapped to its answer.
    pub answers: std::collections::BTreeMap<String, Answer>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RequestAnswered {
    pub success: bool,
    pub session_id: String,
    pub request_id: String,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventsRead {
    /// `{ eventId, seq, name, payload }`, oldest first.
    #[schema(value_type = Vec<Object>)]
    pub events: Vec<serde_json::Value>,
    pub last_event_id: Option<String>,
    /// `since` is not in the log: refetch the state; no events were returned.
    pub reset: bool,
}

#[derive(Serialize, ToSchema)]
pub struct ProfileList {
    #[schema(value_type = Vec<Object>)]
    pub profiles: Vec<serde_json::Value>,
}

#[derive(Serialize, ToSchema)]
pub struct FileList {
    pub files: Vec<crate::session::files::FileInfo>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FileWritten {
    pub success: bool,
    pub session_id: String,
    pub path: String,
    pub size: u64,
    /// `false` when the file existed and was replaced.
    pub created: bool,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FileDeleted {
    pub success: bool,
    pub session_id: String,
    pub path: String,
}

/// Raw bytes (a file's content, an archive).
#[derive(Serialize, ToSchema)]
#[schema(value_type = String, content_media_type = "application/octet-stream")]
pub struct Binary(Vec<u8>);

/// A UTF-8 text file's content.
#[derive(Serialize, ToSchema)]
#[schema(value_type = String)]
pub struct Text(String);

/// The seed's aliases: `(method, alias, the route it serves the same as)`.
pub const ALIASES: &[(&str, &str, &str)] = &[
    ("POST", "/sessions/create", "/api/sessions"),
    ("GET", "/sessions", "/api/sessions"),
    ("GET", "/sessions/{id}", "/api/sessions/{id}"),
    ("POST", "/sessions/{id}/message", "/api/sessions/{id}/messages"),
    ("GET", "/agent-profiles", "/api/agent-profiles"),
];

/// Routes anyone may call (no key).
pub const PUBLIC: &[&str] = &["/health", "/api/openapi.json"];

fn operation<'a>(item: &'a mut PathItem, method: &str) -> &'a mut Option<Operation> {
    match method {
        "GET" => &mut item.get,
        "POST" => &mut item.post,
        "PUT" => &mut item.put,
        "PATCH" => &mut item.patch,
        "DELETE" => &mut item.delete,
        "HEAD" => &mut item.head,
        "OPTIONS" => &mut item.options,
        other => panic!("no such method in the route table: {other}"),
    }
}

struct Finish;

impl Modify for Finish {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("The API key as `Authorization: Bearer <key>` (the bare key is accepted too)"))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "token",
            SecurityScheme::ApiKey(ApiKey::Query(ApiKeyValue::with_description(
                "token",
                "The API key as `?token=`, on the event stream only (EventSource cannot send headers)",
            ))),
        );
        let paths = &mut doc.paths.paths;
        for (method, alias, primary) in ALIASES {
            let mut op = paths
                .get_mut(*primary)
                .and_then(|item| operation(item, method).clone())
                .unwrap_or_else(|| panic!("alias {alias} names {method} {primary}, which is not documented"));
            op.operation_id = op.operation_id.map(|id| format!("{id}_alias_{}", alias.replace(['/', '{', '}'], "_")));
            op.summary = op.summary.map(|s| format!("{s} (alias of {primary})"));
            let item = paths.entry(alias.to_string()).or_default();
            *operation(item, method) = Some(op);
        }
        for path in PUBLIC {
            if let Some(op) = paths.get_mut(*path).and_then(|item| item.get.as_mut()) {
                op.security = Some(vec![]);
            }
        }
        if let Some(op) = paths.get_mut("/api/sessions/{id}/events/stream").and_then(|item| item.get.as_mut()) {
            op.security = Some(vec![
                SecurityRequirement::new::<_, _, &str>("bearer", []),
                SecurityRequirement::new::<_, _, &str>("token", []),
            ]);
        }
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "agent-runtime-native REST API",
        description = "Sessions of agents in sandboxes: create, message, control, events, workspace files. \
                       Every error is `{ error, code }`.",
    ),
    paths(
        super::rest::health,
        super::rest::metrics,
        super::rest::openapi_document,
        super::rest::create_session,
        super::rest::list_sessions,
        super::rest::get_session,
        super::rest::delete_session,
        super::rest::sync_session,
        super::rest::update_options,
        super::rest::send_message,
        super::rest::remove_queued,
        super::rest::interrupt,
        super::rest::session_events,
        super::rest::session_event_stream,
        super::rest::respond_permission,
        super::rest::answer_question,
        super::rest::list_files,
        super::rest::get_file,
        super::rest::put_file,
        super::rest::delete_file,
        super::rest::workspace_archive,
        super::rest::list_profiles,
    ),
    components(schemas(ErrorBody, crate::persistence::WorkspaceFile, crate::agent::Architecture)),
    security(("bearer" = [])),
    modifiers(&Finish),
)]
pub struct ApiDoc;

/// The document as JSON, built once.
pub fn document_json() -> String {
    static DOC: OnceLock<String> = OnceLock::new();
    DOC.get_or_init(|| ApiDoc::openapi().to_json().expect("the OpenAPI document serializes")).clone()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use serde_json::Value;

    use super::*;

    fn documented() -> BTreeSet<(String, String)> {
        let doc: Value = serde_json::from_str(&document_json()).unwrap();
        let mut out = BTreeSet::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for method in item.as_object().unwrap().keys() {
                if ["get", "post", "put", "patch", "delete", "head", "options"].contains(&method.as_str()) {
                    out.insert((method.to_uppercase(), path.clone()));
                }
            }
        }
        out
    }

    #[test]
    fn the_document_lists_exactly_the_routes() {
        let routes: BTreeSet<(String, String)> =
            super::super::rest::ROUTES.iter().map(|(m, p)| (m.to_string(), p.replace("{*", "{"))).collect();
        let doc = documented();
        let missing: Vec<_> = routes.difference(&doc).collect();
        let extra: Vec<_> = doc.difference(&routes).collect();
        assert!(missing.is_empty(), "routes not in the OpenAPI document: {missing:?}");
        assert!(extra.is_empty(), "documented routes the router does not serve: {extra:?}");
    }

    #[test]
    fn the_document_is_openapi_3_1_with_the_key_and_the_error_envelope() {
        let doc: Value = serde_json::from_str(&document_json()).unwrap();
        assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
        assert_eq!(doc["components"]["securitySchemes"]["bearer"]["scheme"], "bearer");
        assert_eq!(doc["security"][0]["bearer"], serde_json::json!([]));
        assert_eq!(doc["paths"]["/health"]["get"]["security"], serde_json::json!([]));
        let error = &doc["components"]["schemas"]["ErrorBody"];
        assert_eq!(error["required"], serde_json::json!(["error", "code"]));
        // Every operation documents its answers, and every protected one a 401 envelope.
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                let responses = op["responses"].as_object().unwrap();
                assert!(!responses.is_empty(), "{method} {path}");
                if !PUBLIC.contains(&path.as_str()) {
                    let unauthorized = &responses["401"]["content"]["application/json"]["schema"]["$ref"];
                    assert_eq!(unauthorized, "#/components/schemas/ErrorBody", "{method} {path}");
                }
            }
        }
    }

    /// Every documented route reaches a handler: the router's fallback (plain-text 404) never
    /// answers it.
    #[tokio::test]
    async fn every_documented_route_reaches_a_handler() {
        // Metrics on, so `/metrics` answers from its handler.
        let options = crate::config::RuntimeOptions { metrics_public: Some(false), ..Default::default() };
        let runtime = crate::runtime::AgentRuntime::new(
            options,
            std::sync::Arc::new(crate::persistence::memory::MemoryAdapter::with_profile("p")),
        );
        let router = super::super::rest::router(runtime, "k");
        for (method, path) in documented() {
            let concrete = path
                .replace("{id}", "no-such-session")
                .replace("{message_id}", "m1")
                .replace("{request_id}", "r1")
                .replace("{path}", "a.txt");
            let req = axum::http::Request::builder()
                .method(method.as_str())
                .uri(&concrete)
                .header("authorization", "Bearer k")
                .body(axum::body::Body::from("{}"))
                .unwrap();
            use tower::ServiceExt;
            let res = router.clone().oneshot(req).await.unwrap();
            let plain =
                res.headers().get("content-type").is_some_and(|v| v.to_str().unwrap_or("").starts_with("text/plain"));
            assert!(
                !(res.status() == axum::http::StatusCode::NOT_FOUND && plain),
                "{method} {concrete} fell through to the router's fallback"
            );
        }
    }
}
