//! The bodies of the control routes and events (answers to tool calls and questions), checked
//! the same way for REST and Socket.IO: every error names the field.

use serde_json::{Map, Value};

use super::ApiError;
use crate::session::PermissionAnswer;

/// `{ behavior: "allow" | "deny", updatedInput?, message?, remember? }`.
pub fn permission_answer_of(v: &Map<String, Value>) -> Result<PermissionAnswer, String> {
    let allow = match v.get("behavior") {
        Some(Value::String(b)) if b == "allow" => true,
        Some(Value::String(b)) if b == "deny" => false,
        Some(other) => return Err(format!("behavior must be \"allow\" or \"deny\", got {other}")),
        None => return Err("behavior is required (\"allow\" or \"deny\")".into()),
    };
    let updated_input = match v.get("updatedInput") {
        None | Some(Value::Null) => None,
        Some(Value::Object(o)) => Some(o.clone()),
        Some(other) => return Err(format!("updatedInput must be an object, got {}", kind(other))),
    };
    let message = match v.get("message") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(other) => return Err(format!("message must be a string, got {}", kind(other))),
    };
    let remember = match v.get("remember") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(other) => return Err(format!("remember must be a boolean, got {}", kind(other))),
    };
    Ok(PermissionAnswer { allow, updated_input, message, remember })
}

/// `{ answers: { [question]: string | string[] } }`.
pub fn question_answers_of(v: &Map<String, Value>) -> Result<Map<String, Value>, String> {
    match v.get("answers") {
        Some(Value::Object(a)) => Ok(a.clone()),
        Some(other) => {
            Err(format!("answers must be an object mapping each question to its answer, got {}", kind(other)))
        }
        None => Err("answers is required: an object mapping each question to its answer".into()),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn body(bytes: &[u8]) -> Result<Map<String, Value>, ApiError> {
    let v: Value = super::parse_json_body(bytes)?;
    Ok(v.as_object().cloned().unwrap_or_default())
}

pub fn permission_answer(bytes: &[u8]) -> Result<PermissionAnswer, ApiError> {
    permission_answer_of(&body(bytes)?).map_err(|m| ApiError::bad_request(format!("Invalid request body: {m}")))
}

pub fn question_answers(bytes: &[u8]) -> Result<Map<String, Value>, ApiError> {
    question_answers_of(&body(bytes)?).map_err(|m| ApiError::bad_request(format!("Invalid request body: {m}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn answers_are_checked_field_by_field() {
        let of = |v: Value| permission_answer_of(v.as_object().unwrap());
        assert!(of(json!({ "behavior": "allow", "remember": true })).unwrap().remember);
        assert!(of(json!({ "behavior": "yes" })).unwrap_err().contains("behavior"));
        assert!(of(json!({})).unwrap_err().contains("behavior"));
        assert!(of(json!({ "behavior": "deny", "updatedInput": "x" })).unwrap_err().contains("updatedInput"));
        assert!(of(json!({ "behavior": "deny", "message": 5 })).unwrap_err().contains("message"));
        assert!(of(json!({ "behavior": "deny", "remember": "yes" })).unwrap_err().contains("remember"));
        let q = |v: Value| question_answers_of(v.as_object().unwrap());
        assert!(q(json!({ "answers": { "Which?": "red" } })).is_ok());
        assert!(q(json!({ "answers": ["red"] })).unwrap_err().contains("answers"));
    }
}
