//! Small helpers shared by the modules.

use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;

use tokio::sync::Notify;
use tokio::time::Instant;

/// Locks a std mutex, ignoring poisoning: the fake must keep serving after a panicking task.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Waits until `ready` yields a value or `deadline` passes (then the last check decides).
/// The notification is armed before each check, so a change between check and wait is not lost.
pub async fn long_poll<T>(notify: &Notify, deadline: Instant, mut ready: impl FnMut() -> Option<T>) -> Option<T> {
    loop {
        let notified = notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if let Some(v) = ready() {
            return Some(v);
        }
        if tokio::time::timeout_at(deadline, notified).await.is_err() {
            return ready();
        }
    }
}

/// A long-poll `timeout` field (seconds, float) as a Duration; negative/NaN count as 0 and
/// absurd values are capped so a bad client cannot park a call forever.
pub fn secs(timeout: f32) -> Duration {
    if timeout.is_finite() && timeout > 0.0 {
        Duration::from_secs_f32(timeout.min(3600.0))
    } else {
        Duration::ZERO
    }
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs()
}

/// A JWT-shaped token with these claims, made unique by `n`. Clients only decode the payload
/// (for `exp`); the signature is never checked, by them or by the fake.
pub fn jwt(claims: &serde_json::Value, n: u64) -> String {
    let b64 = |s: String| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
    format!("{}.{}.sig{n}", b64(r#"{"alg":"none"}"#.to_string()), b64(claims.to_string()))
}
