//! The tower layer around the tonic server that times every gRPC call and counts its
//! status code.
//!
//! It sits at the service level (`Server::builder().layer(..)`), above the routes and
//! below the connection: the unix socket's `AuthorityRewrite` wrapper works on the
//! connection's bytes and is not affected by it. A call is finished when its response
//! body ends (a unary answer's trailers carry `grpc-status`) or, for an error answered
//! with headers only (tonic's trailers-only response), when that body is dropped. A
//! body dropped before any status was seen is a call the client gave up: `Canceled`.

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tonic::Code;

/// Adds `RpcMetrics` to every service of the server.
#[derive(Debug, Clone, Default)]
pub struct RpcMetricsLayer;

impl<S> tower::Layer<S> for RpcMetricsLayer {
    type Service = RpcMetrics<S>;

    fn layer(&self, inner: S) -> RpcMetrics<S> {
        RpcMetrics { inner }
    }
}

#[derive(Debug, Clone)]
pub struct RpcMetrics<S> {
    inner: S,
}

impl<S, ReqBody, ResBody> tower::Service<http::Request<ReqBody>> for RpcMetrics<S>
where
    S: tower::Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<Observed<ResBody>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<ReqBody>) -> Self::Future {
        let (service, method) = method_labels(req.uri().path());
        let started = Instant::now();
        let response = self.inner.call(req);
        Box::pin(async move {
            let response = response.await;
            let mut call = Call {
                service,
                method,
                started,
                code: None,
            };
            match response {
                Ok(response) => {
                    call.code = grpc_status(response.headers());
                    Ok(response.map(|inner| Observed {
                        inner,
                        call: Some(call),
                    }))
                }
                Err(e) => {
                    call.finish(Code::Internal);
                    Err(e)
                }
            }
        })
    }
}

/// A call in flight: what it will be counted as.
struct Call {
    service: String,
    method: String,
    started: Instant,
    /// From the response headers (trailers-only) or, later, the trailers.
    code: Option<Code>,
}

impl Call {
    fn finish(self, code: Code) {
        super::rpc_finished(&self.service, &self.method, code, self.started.elapsed());
    }
}

/// A response body that finishes its call's metrics when it ends or is dropped.
pub struct Observed<B> {
    inner: B,
    call: Option<Call>,
}

impl<B> Observed<B> {
    fn finish(&mut self, fallback: Code) {
        if let Some(call) = self.call.take() {
            let code = call.code.unwrap_or(fallback);
            call.finish(code);
        }
    }
}

impl<B> Drop for Observed<B> {
    fn drop(&mut self) {
        self.finish(Code::Cancelled);
    }
}

impl<B> Body for Observed<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(trailers) = frame.trailers_ref() {
                    if let (Some(call), Some(code)) = (this.call.as_mut(), grpc_status(trailers)) {
                        call.code = Some(code);
                    }
                    this.finish(Code::Unknown);
                }
            }
            // An error while sending the body: the client never gets a status.
            Poll::Ready(Some(Err(_))) => this.finish(Code::Unknown),
            Poll::Ready(None) => this.finish(Code::Unknown),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

fn grpc_status(headers: &http::HeaderMap) -> Option<Code> {
    let value = headers.get("grpc-status")?.to_str().ok()?;
    Some(Code::from_i32(value.parse().ok()?))
}

/// Distinct (service, method) pairs given their own series; calls to paths beyond that
/// (a client making up method names: each answered Unimplemented) share one.
const MAX_METHODS: usize = 200;
static SEEN_METHODS: Mutex<Option<HashSet<(String, String)>>> = Mutex::new(None);

/// `/runtime.v1.RuntimeService/PullImage` → (`runtime.v1.RuntimeService`, `PullImage`).
fn method_labels(path: &str) -> (String, String) {
    let other = || ("other".to_owned(), "other".to_owned());
    let Some((service, method)) = path.strip_prefix('/').and_then(|p| p.split_once('/')) else {
        return other();
    };
    let plain = |s: &str| {
        !s.is_empty()
            && s.len() <= 100
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_')
    };
    if !plain(service) || !plain(method) {
        return other();
    }
    let key = (service.to_owned(), method.to_owned());
    let mut seen = SEEN_METHODS.lock().unwrap_or_else(|e| e.into_inner());
    let seen = seen.get_or_insert_with(HashSet::new);
    if seen.contains(&key) || seen.len() < MAX_METHODS {
        seen.insert(key.clone());
        key
    } else {
        other()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_labels_split_the_path_and_refuse_odd_ones() {
        assert_eq!(
            method_labels("/runtime.v1.RuntimeService/PullImage"),
            ("runtime.v1.RuntimeService".into(), "PullImage".into())
        );
        for odd in ["/", "", "/x", "/a/b/c", "/a b/c", "/a/{id}"] {
            assert_eq!(
                method_labels(odd),
                ("other".into(), "other".into()),
                "{odd}"
            );
        }
    }

    #[test]
    fn status_header_is_read() {
        let mut h = http::HeaderMap::new();
        assert_eq!(grpc_status(&h), None);
        h.insert("grpc-status", http::HeaderValue::from_static("5"));
        assert_eq!(grpc_status(&h), Some(Code::NotFound));
    }
}
