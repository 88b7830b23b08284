//! The few Redis shapes the cluster reads, decoded from `redis::Value` by hand (stream entries
//! are flat field lists), and connection set-up.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::Value;

/// A connection that reconnects by itself after Redis restarts; commands time out after
/// `response` (a blocking read must allow for its block time).
pub(super) async fn manager(client: &redis::Client, response: Duration) -> redis::RedisResult<ConnectionManager> {
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(Some(response))
        .set_number_of_retries(1)
        .set_max_delay(Duration::from_secs(2));
    ConnectionManager::new_with_config(client.clone(), config).await
}

/// The id of a stream's newest entry (`0-0` for none).
pub(super) async fn last_id(c: &mut ConnectionManager, key: &str) -> redis::RedisResult<String> {
    let v: Value = redis::cmd("XREVRANGE").arg(key).arg("+").arg("-").arg("COUNT").arg(1).query_async(c).await?;
    Ok(entries(&v).into_iter().next().map(|e| e.id).unwrap_or_else(|| "0-0".into()))
}

/// One stream entry: its id and fields.
pub(super) struct Entry {
    pub id: String,
    pub fields: Vec<(String, Vec<u8>)>,
}

impl Entry {
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.fields.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_slice())
    }

    pub fn text(&self, name: &str) -> &str {
        self.get(name).and_then(|v| std::str::from_utf8(v).ok()).unwrap_or_default()
    }
}

pub(super) fn bytes(v: &Value) -> Option<Vec<u8>> {
    match v {
        Value::BulkString(b) => Some(b.clone()),
        Value::SimpleString(s) => Some(s.as_bytes().to_vec()),
        Value::Int(n) => Some(n.to_string().into_bytes()),
        Value::Okay => Some(b"OK".to_vec()),
        _ => None,
    }
}

pub(super) fn text(v: &Value) -> Option<String> {
    bytes(v).and_then(|b| String::from_utf8(b).ok())
}

pub(super) fn int(v: &Value) -> Option<i64> {
    match v {
        Value::Int(n) => Some(*n),
        v => text(v)?.parse().ok(),
    }
}

fn items(v: &Value) -> &[Value] {
    match v {
        Value::Array(a) | Value::Set(a) => a,
        _ => &[],
    }
}

/// `[[id, [k, v, ...]], ...]` (XRANGE / XREVRANGE).
pub(super) fn entries(v: &Value) -> Vec<Entry> {
    items(v)
        .iter()
        .filter_map(|e| {
            let [id, fields] = items(e) else { return None };
            let fields = items(fields)
                .chunks(2)
                .filter_map(|kv| match kv {
                    [k, v] => Some((text(k)?, bytes(v)?)),
                    _ => None,
                })
                .collect();
            Some(Entry { id: text(id)?, fields })
        })
        .collect()
}

/// XREAD's `[[key, entries], ...]` (or a map in RESP3) → (key, entries).
pub(super) fn streams(v: &Value) -> Vec<(String, Vec<Entry>)> {
    match v {
        Value::Map(m) => m.iter().filter_map(|(k, e)| Some((text(k)?, entries(e)))).collect(),
        v => items(v)
            .iter()
            .filter_map(|s| {
                let [k, e] = items(s) else { return None };
                Some((text(k)?, entries(e)))
            })
            .collect(),
    }
}

/// A script's array answer.
pub(super) fn array(v: &Value) -> &[Value] {
    items(v)
}
