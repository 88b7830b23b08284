//! The JS `PersistenceAdapter` as a core [`RawAdapter`]: one threadsafe function that the JS
//! glue implements as `(method, args) => Promise<{ ok } | { error }>`.
//!
//! The glue never rejects: it catches the adapter's throws and rejections and reports their
//! message, and sends the value as JSON text (a stored transcript beside it as a plain string).
//! So a rejection seen here can only mean the value could not be converted: a wrong shape.

use agent_runtime::persistence::bridge::{CallFailure, RawAdapter};
use async_trait::async_trait;
use napi::bindgen_prelude::*;
use napi::threadsafe_function::ThreadsafeFunction;
use serde_json::Value;

pub type AdapterFn =
    ThreadsafeFunction<FnArgs<(String, Value)>, Promise<Value>, FnArgs<(String, Value)>, Status, false, true>;

pub struct JsAdapter {
    pub call: AdapterFn,
}

#[async_trait]
impl RawAdapter for JsAdapter {
    async fn call(&self, method: &'static str, args: Vec<Value>) -> std::result::Result<Value, CallFailure> {
        let promise = match self.call.call_async_catch((method.to_string(), Value::Array(args)).into()).await {
            Ok(p) => p,
            Err(e) if e.status == Status::Closing => return Err(CallFailure::Closed),
            Err(e) => return Err(CallFailure::Failed(e.reason.clone())),
        };
        let settled = promise.await.map_err(|e| CallFailure::Unreadable(e.reason.clone()))?;
        let Value::Object(mut m) = settled else {
            return Err(CallFailure::Unreadable("unexpected bridge value".into()));
        };
        if let Some(Value::String(detail)) = m.remove("shapeError") {
            return Err(CallFailure::Unreadable(detail));
        }
        if let Some(err) = m.remove("error") {
            return Err(CallFailure::Failed(match err {
                Value::String(s) => s,
                other => other.to_string(),
            }));
        }
        let Some(Value::String(json)) = m.remove("ok") else {
            return Err(CallFailure::Unreadable("unexpected bridge value".into()));
        };
        let mut value: Value = serde_json::from_str(&json).map_err(|e| CallFailure::Unreadable(e.to_string()))?;
        if let (Some(transcript), Value::Object(obj)) = (m.remove("transcript"), &mut value) {
            obj.insert("rawTranscript".into(), transcript);
        }
        Ok(value)
    }
}
