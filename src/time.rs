//! Wall-clock helpers in the units the reference exposes (ms since epoch, ISO-8601 strings).

use chrono::{SecondsFormat, Utc};

/// Milliseconds since the Unix epoch, like JavaScript's `Date.now()`.
pub fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

/// ISO-8601 with milliseconds and `Z`, like JavaScript's `new Date().toISOString()`.
pub fn now_iso() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// `ms` since the epoch as [`now_iso`] writes it.
pub fn iso_of_ms(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms).unwrap_or_default().to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Serde helper: accept any JSON number for a millisecond timestamp (JS numbers may be floats).
pub mod millis {
    use serde::{Deserialize, Deserializer};

    pub fn deserialize_opt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
        let v: Option<f64> = Option::deserialize(d)?;
        Ok(v.filter(|f| f.is_finite()).map(|f| f.round() as i64))
    }
}
