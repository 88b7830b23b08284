//! The JS `PersistenceAdapter` as a core [`RawAdapter`]: one threadsafe function that the JS
//! glue implements as `(method, args) => Promise<{ ok } | { error }>`.
//!
//! The glue never rejects: it catches the adapter's throws and rejections and reports their
//! message, and it normalizes the value (undefined -> null, bytes -> string). So a rejection
//! seen here can only mean the value could not be converted, which is a wrong shape.

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
        match settled {
            Value::Object(mut m) => {
                if let Some(Value::String(detail)) = m.remove("shapeError") {
                    Err(CallFailure::Unreadable(detail))
                } else if let Some(err) = m.remove("error") {
                    let msg = match err {
                        Value::String(s) => s,
                        other => other.to_string(),
                    };
                    Err(CallFailure::Failed(msg))
                } else {
                    Ok(m.remove("ok").unwrap_or(Value::Null))
                }
            }
            other => Err(CallFailure::Unreadable(format!("unexpected bridge value {other}"))),
        }
    }
}
