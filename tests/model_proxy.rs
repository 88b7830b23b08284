//! The model proxy against a scripted upstream: faults pass through as the SDKs expect, a hung
//! upstream becomes an API error, and a client that goes away cancels the upstream request (and
//! what it used so far still counts).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agent_runtime::model_proxy::{Meter, ModelProxy, ProxyOptions};
use agent_runtime::usage::{Call, Pricing};
use axum::body::Body;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;

#[derive(Default)]
struct Recorder {
    calls: Mutex<Vec<Call>>,
    refuse: AtomicBool,
}

impl Meter for Recorder {
    fn admit(&self) -> Result<(), String> {
        if self.refuse.load(Ordering::SeqCst) {
            Err("Budget exceeded: maxTokens 1 reached".into())
        } else {
            Ok(())
        }
    }
    fn record(&self, call: Call) {
        self.calls.lock().unwrap().push(call);
    }
}

/// Set when the upstream notices its client (the proxy) went away mid-answer.
static CANCELLED: AtomicBool = AtomicBool::new(false);

struct DropFlag;
impl Drop for DropFlag {
    fn drop(&mut self) {
        CANCELLED.store(true, Ordering::SeqCst);
    }
}

async fn upstream(req: axum::extract::Request) -> Response {
    let key = req.headers().get("x-api-key").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    assert_eq!(key, "real-key", "the upstream gets the real key");
    match req.uri().path() {
        "/v1/messages/hang" => {
            tokio::time::sleep(Duration::from_secs(30)).await;
            "late".into_response()
        }
        "/v1/messages/busy" => (
            axum::http::StatusCode::TOO_MANY_REQUESTS,
            [("retry-after", "7")],
            r#"{"type":"error","error":{"type":"rate_limit_error","message":"slow down"}}"#,
        )
            .into_response(),
        _ => {
            // message_start with usage, then deltas forever (until the client goes).
            let start = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"model\":\"claude-sonnet-4-5\",\"usage\":{\"input_tokens\":11,\"output_tokens\":1}}}\n\n";
            let flag = DropFlag;
            let deltas = futures::stream::unfold(flag, |flag| async move {
                tokio::time::sleep(Duration::from_millis(5)).await;
                let chunk = "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"delta\":{\"type\":\"text_delta\",\"text\":\"x\"}}\n\n";
                Some((Ok::<_, std::io::Error>(bytes::Bytes::from_static(chunk.as_bytes())), flag))
            });
            let body =
                futures::stream::once(async move { Ok(bytes::Bytes::from_static(start.as_bytes())) }).chain(deltas);
            Response::builder().header("content-type", "text/event-stream").body(Body::from_stream(body)).unwrap()
        }
    }
}

async fn start() -> (ModelProxy, Arc<Recorder>, String) {
    // This test's own client (reqwest without a built-in TLS provider) needs one installed.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up: SocketAddr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, axum::Router::new().fallback(upstream)).await.unwrap() });
    let proxy = ModelProxy::start(
        ProxyOptions {
            listen: "127.0.0.1:0".parse().unwrap(),
            public_url: None,
            upstream: format!("http://{up}"),
            api_key: "real-key".into(),
            read_timeout: Duration::from_millis(500),
        },
        Pricing::default(),
    )
    .await
    .unwrap();
    let meter = Arc::new(Recorder::default());
    let as_meter: Arc<dyn Meter> = meter.clone();
    let token = proxy.grant("s1", Arc::downgrade(&as_meter));
    // The grant holds a weak reference: keep the meter alive through `meter`.
    drop(as_meter);
    (proxy, meter, token)
}

fn post(proxy: &ModelProxy, path: &str, token: &str) -> reqwest::RequestBuilder {
    reqwest::Client::new().post(format!("{}{path}", proxy.base_url())).header("x-api-key", token).body("{}")
}

#[tokio::test]
async fn faults_pass_through_and_a_hung_upstream_is_an_api_error() {
    let (proxy, meter, token) = start().await;
    let busy = post(&proxy, "/v1/messages/busy", &token).send().await.unwrap();
    assert_eq!(busy.status(), 429, "passed through, so the SDK's own retry logic works");
    assert_eq!(busy.headers()["retry-after"], "7");
    assert!(busy.text().await.unwrap().contains("rate_limit_error"));
    let hung = post(&proxy, "/v1/messages/hang", &token).send().await.unwrap();
    assert_eq!(hung.status(), 504);
    let body: serde_json::Value = serde_json::from_str(&hung.text().await.unwrap()).unwrap();
    assert_eq!(body["error"]["type"], "api_error");
    assert!(meter.calls.lock().unwrap().is_empty(), "nothing used, nothing counted");
    // A spent budget: refused before the upstream sees anything.
    meter.refuse.store(true, Ordering::SeqCst);
    let refused = post(&proxy, "/v1/messages", &token).send().await.unwrap();
    assert_eq!(refused.status(), 400);
    assert!(refused.text().await.unwrap().contains("Budget exceeded"));
    // A revoked token is refused.
    proxy.revoke("s1");
    assert_eq!(post(&proxy, "/v1/messages/busy", &token).send().await.unwrap().status(), 401);
}

#[tokio::test]
async fn a_client_that_goes_away_cancels_the_upstream_and_what_it_used_counts() {
    let (proxy, meter, token) = start().await;
    let res = post(&proxy, "/v1/messages", &token).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let mut stream = res.bytes_stream();
    let mut seen = 0;
    while seen < 5 {
        stream.next().await.unwrap().unwrap();
        seen += 1;
    }
    drop(stream); // the sandbox's request is gone
    for _ in 0..200 {
        if CANCELLED.load(Ordering::SeqCst) && !meter.calls.lock().unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(CANCELLED.load(Ordering::SeqCst), "the upstream request was dropped");
    let calls = meter.calls.lock().unwrap();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].tokens.input_tokens, 11);
    assert_eq!(calls[0].model, "claude-sonnet-4-5");
}
