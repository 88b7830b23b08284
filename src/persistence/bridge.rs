//! From an untyped adapter (method name + JSON arguments -> JSON) to a typed [`PersistenceAdapter`].
//!
//! This is where a JS adapter's answers are checked: every call is bounded by a timeout, and
//! a value of the wrong shape becomes [`PersistenceError::WrongShape`] naming the field.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::de::DeserializeOwned;
use serde_json::{json, Map, Value};

use super::*;

/// How an untyped call can fail before its value is inspected.
#[derive(Debug, Clone)]
pub enum CallFailure {
    /// The adapter threw or its promise rejected; the message is the adapter's.
    Failed(String),
    /// The adapter returned something that could not be carried over as JSON.
    Unreadable(String),
    /// The host environment is gone (e.g. Node is exiting).
    Closed,
}

/// One adapter method call, untyped. Implemented by the napi binding with a threadsafe function.
#[async_trait]
pub trait RawAdapter: Send + Sync + 'static {
    async fn call(&self, method: &'static str, args: Vec<Value>) -> Result<Value, CallFailure>;
}

/// A typed adapter over a [`RawAdapter`], with a per-call timeout.
pub struct JsonAdapter<R> {
    raw: Arc<R>,
    timeout: Duration,
    /// Writes that timed out but may still be running in JavaScript (a timeout cannot cancel
    /// a promise), by the target they write.
    unsettled: std::sync::Mutex<HashMap<String, tokio::task::JoinHandle<Result<Value, CallFailure>>>>,
}

impl<R: RawAdapter> JsonAdapter<R> {
    pub fn new(raw: R, timeout: Duration) -> Self {
        Self { raw: Arc::new(raw), timeout, unsettled: Default::default() }
    }

    /// A write to `target` (a session's transcript, one of its paths, its record). An earlier
    /// write to the same target that timed out is given up to one more timeout to settle
    /// first, so it cannot land after this newer one.
    async fn write(&self, target: String, method: &'static str, args: Vec<Value>) -> PResult<()> {
        let earlier = self.unsettled.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&target);
        if let Some(h) = earlier {
            if tokio::time::timeout(self.timeout, h).await.is_err() {
                tracing::warn!(method, "an earlier timed-out write to the same target has still not settled");
            }
        }
        let raw = self.raw.clone();
        let mut task = tokio::spawn(async move { raw.call(method, args).await });
        match tokio::time::timeout(self.timeout, &mut task).await {
            Err(_) => {
                let mut unsettled = self.unsettled.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                // Settled ones are of no interest any more (their target may never be written again).
                unsettled.retain(|_, h| !h.is_finished());
                unsettled.insert(target, task);
                Err(PersistenceError::Timeout { method, ms: self.timeout.as_millis() as u64 })
            }
            Ok(joined) => {
                let r = joined.unwrap_or_else(|e| Err(CallFailure::Failed(format!("adapter call panicked: {e}"))));
                Self::settled(method, r).map(drop)
            }
        }
    }

    fn settled(method: &'static str, r: Result<Value, CallFailure>) -> PResult<Value> {
        match r {
            Ok(v) => Ok(v),
            Err(CallFailure::Failed(message)) => Err(PersistenceError::Failed { method, message }),
            Err(CallFailure::Unreadable(detail)) => Err(PersistenceError::WrongShape { method, detail }),
            Err(CallFailure::Closed) => Err(PersistenceError::Closed { method }),
        }
    }

    async fn call(&self, method: &'static str, args: Vec<Value>) -> PResult<Value> {
        match tokio::time::timeout(self.timeout, self.raw.call(method, args)).await {
            Err(_) => Err(PersistenceError::Timeout { method, ms: self.timeout.as_millis() as u64 }),
            Ok(r) => Self::settled(method, r),
        }
    }

    async fn typed<T: DeserializeOwned>(&self, method: &'static str, args: Vec<Value>) -> PResult<T> {
        let v = self.call(method, args).await?;
        decode(method, v)
    }
}

/// Deserialize with the path of the offending field in the message (`[0].sessionId: invalid type ...`).
pub fn decode<T: DeserializeOwned>(method: &'static str, v: Value) -> PResult<T> {
    serde_path_to_error::deserialize(v).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let detail = if path == "." { inner.to_string() } else { format!("{path}: {inner}") };
        PersistenceError::WrongShape { method, detail }
    })
}

fn to_value<T: Serialize>(v: &T) -> Value {
    serde_json::to_value(v).expect("persistence records serialize to JSON")
}

#[async_trait]
impl<R: RawAdapter> PersistenceAdapter for JsonAdapter<R> {
    async fn list_all_sessions(&self) -> PResult<Vec<SessionRecord>> {
        self.typed("listAllSessions", vec![]).await
    }
    async fn load_session(&self, session_id: &str) -> PResult<Option<StoredSession>> {
        const M: &str = "loadSession";
        let mut record = match self.call(M, vec![json!(session_id)]).await? {
            Value::Null => return Ok(None),
            Value::Object(map) => map,
            other => return decode::<SessionRecord>(M, other).map(|_| None),
        };
        // Move the (possibly huge) content fields out, then decode each part with field paths.
        let content: Map<String, Value> = ["rawTranscript", "subagents", "workspaceFiles"]
            .into_iter()
            .filter_map(|k| record.remove(k).map(|v| (k.to_string(), v)))
            .collect();
        let record: SessionRecord = decode(M, Value::Object(record))?;
        let content: StoredContent = decode(M, Value::Object(content))?;
        Ok(Some(StoredSession {
            record,
            raw_transcript: content.raw_transcript,
            workspace_files: content.workspace_files,
        }))
    }
    async fn create_session_record(&self, record: &SessionRecord) -> PResult<()> {
        self.call("createSessionRecord", vec![to_value(record)]).await.map(drop)
    }
    async fn update_session_record(&self, session_id: &str, updates: &SessionRecordUpdate) -> PResult<()> {
        let target = format!("record\0{session_id}");
        self.write(target, "updateSessionRecord", vec![json!(session_id), to_value(updates)]).await
    }
    async fn save_transcript(&self, session_id: &str, raw_transcript: &str) -> PResult<()> {
        let target = format!("transcript\0{session_id}");
        self.write(target, "saveTranscript", vec![json!(session_id), json!(raw_transcript)]).await
    }
    async fn save_workspace_file(&self, session_id: &str, file: &WorkspaceFile) -> PResult<()> {
        let target = format!("file\0{session_id}\0{}", file.path);
        self.write(target, "saveWorkspaceFile", vec![json!(session_id), to_value(file)]).await
    }
    async fn delete_session_file(&self, session_id: &str, path: &str) -> PResult<()> {
        let target = format!("file\0{session_id}\0{path}");
        self.write(target, "deleteSessionFile", vec![json!(session_id), json!(path)]).await
    }
    async fn list_agent_profiles(&self) -> PResult<Vec<AgentProfileSummary>> {
        self.typed("listAgentProfiles", vec![]).await
    }
    async fn load_agent_profile(&self, profile_id: &str) -> PResult<Option<AgentProfile>> {
        const M: &str = "loadAgentProfile";
        match self.call(M, vec![json!(profile_id)]).await? {
            Value::Null => Ok(None),
            Value::Object(map) => {
                let mut profile: AgentProfile = decode(M, Value::Object(map.clone()))?;
                profile.raw = map;
                Ok(Some(profile))
            }
            other => decode::<AgentProfile>(M, other).map(|_| None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// Answers every call from a script of results.
    struct Scripted(Mutex<Vec<Result<Value, CallFailure>>>);

    #[async_trait]
    impl RawAdapter for Scripted {
        async fn call(&self, _m: &'static str, _a: Vec<Value>) -> Result<Value, CallFailure> {
            let next = self.0.lock().unwrap().pop();
            match next {
                Some(r) => r,
                None => futures::future::pending().await,
            }
        }
    }

    fn adapter(results: Vec<Result<Value, CallFailure>>) -> JsonAdapter<Scripted> {
        JsonAdapter::new(Scripted(Mutex::new(results)), Duration::from_millis(50))
    }

    #[tokio::test]
    async fn wrong_shape_names_method_and_field() {
        let a = adapter(vec![Ok(json!({"sessionId": 5, "type": "claude-agent-sdk", "agentProfileReference": "p"}))]);
        let err = a.load_session("s").await.unwrap_err();
        assert_eq!(err.method(), "loadSession");
        let msg = err.to_string();
        assert!(msg.contains("sessionId"), "{msg}");
        assert!(msg.contains("expected a string"), "{msg}");
    }

    #[tokio::test]
    async fn list_item_error_has_index() {
        let a = adapter(vec![Ok(json!([{"sessionId": "a", "type": "nope", "agentProfileReference": "p"}]))]);
        let msg = a.list_all_sessions().await.unwrap_err().to_string();
        assert!(msg.starts_with("persistence.listAllSessions returned an invalid value: [0].type"), "{msg}");
    }

    #[tokio::test]
    async fn null_means_absent_and_missing_files_default() {
        let a = adapter(vec![Ok(Value::Null)]);
        assert_eq!(a.load_session("x").await.unwrap(), None);
        let a = adapter(vec![Ok(
            json!({"sessionId": "a", "type": "opencode", "agentProfileReference": "p", "createdAt": 1.7e12}),
        )]);
        let s = a.load_session("a").await.unwrap().unwrap();
        assert!(s.workspace_files.is_empty());
        assert_eq!(s.record.created_at, Some(1_700_000_000_000));
    }

    #[tokio::test]
    async fn rejection_and_timeout() {
        let a = adapter(vec![Err(CallFailure::Failed("db down".into()))]);
        let e = a.save_transcript("s", "").await.unwrap_err();
        assert_eq!(e.to_string(), "persistence.saveTranscript failed: db down");
        let a = adapter(vec![]);
        let e = a.save_transcript("s", "").await.unwrap_err();
        assert_eq!(e, PersistenceError::Timeout { method: "saveTranscript", ms: 50 });
    }

    /// Each call takes the delay given in its transcript argument, then records it as landed.
    #[derive(Default)]
    struct Slow(Mutex<Vec<String>>);

    #[async_trait]
    impl RawAdapter for Slow {
        async fn call(&self, _m: &'static str, a: Vec<Value>) -> Result<Value, CallFailure> {
            let text = a[1].as_str().unwrap().to_string();
            let ms: u64 = text.split(':').next().unwrap().parse().unwrap();
            tokio::time::sleep(Duration::from_millis(ms)).await;
            self.0.lock().unwrap().push(text);
            Ok(Value::Null)
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_timed_out_write_settles_before_the_next_one_to_the_same_target() {
        let a = JsonAdapter::new(Slow::default(), Duration::from_millis(50));
        // The first save times out but its promise lands later; the retry must land after it.
        assert!(a.save_transcript("s", "80:old").await.is_err());
        a.save_transcript("s", "0:new").await.unwrap();
        assert_eq!(*a.raw.0.lock().unwrap(), ["80:old", "0:new"]);
        // Another target does not wait.
        assert!(a.save_transcript("s", "80:old2").await.is_err());
        a.save_transcript("t", "0:other").await.unwrap();
        assert_eq!(a.raw.0.lock().unwrap().last().unwrap(), "0:other");
    }
}
