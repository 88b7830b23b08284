//! Fixed responses at fixed paths, for pages the Node side ships (the web console) when Rust
//! serves HTTP itself (`runtime.listen`). What is served, with which headers, is decided where
//! the files live; this only answers GET and HEAD with it.

use axum::body::Body;
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use bytes::Bytes;

/// One path's whole answer.
#[derive(Clone)]
pub struct StaticRoute {
    pub path: String,
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

/// A router answering each route's path; a bad path, status or header is refused by name.
pub fn router<S: Clone + Send + Sync + 'static>(routes: Vec<StaticRoute>) -> Result<Router<S>, String> {
    let mut router = Router::new();
    for r in routes {
        if !r.path.starts_with('/') || r.path.contains(['{', '}', '*']) {
            return Err(format!("static route path {:?} must start with / and hold no pattern", r.path));
        }
        let status =
            StatusCode::from_u16(r.status).map_err(|_| format!("static route {}: bad status {}", r.path, r.status))?;
        let mut headers = Vec::new();
        for (k, v) in &r.headers {
            let name = HeaderName::try_from(k.as_str())
                .map_err(|_| format!("static route {}: bad header name {k:?}", r.path))?;
            let value =
                HeaderValue::try_from(v.as_str()).map_err(|_| format!("static route {}: bad value of {k}", r.path))?;
            headers.push((name, value));
        }
        let body = r.body;
        // GET routes answer HEAD too (axum drops the body).
        router = router.route(
            &r.path,
            get(move || {
                let (headers, body) = (headers.clone(), body.clone());
                async move {
                    let mut res = Response::new(Body::from(body));
                    *res.status_mut() = status;
                    res.headers_mut().extend(headers);
                    res
                }
            }),
        );
    }
    Ok(router)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::ServiceExt;

    fn route(path: &str) -> StaticRoute {
        StaticRoute {
            path: path.into(),
            status: 200,
            headers: vec![("content-type".into(), "text/plain".into())],
            body: Bytes::from_static(b"hi"),
        }
    }

    #[tokio::test]
    async fn serves_get_and_head_and_refuses_patterns() {
        let app: Router = router(vec![route("/c/")]).unwrap();
        let req = |m: &str| axum::http::Request::builder().method(m).uri("/c/").body(Body::empty()).unwrap();
        let res = app.clone().oneshot(req("GET")).await.unwrap();
        assert_eq!(res.headers()["content-type"], "text/plain");
        let body = axum::body::to_bytes(res.into_body(), 10).await.unwrap();
        assert_eq!(&body[..], b"hi");
        let head = app.oneshot(req("HEAD")).await.unwrap();
        assert_eq!(axum::body::to_bytes(head.into_body(), 10).await.unwrap().len(), 0);
        assert!(router::<()>(vec![route("/c/{x}")]).unwrap_err().contains("pattern"));
        assert!(router::<()>(vec![route("c")]).is_err());
    }
}
