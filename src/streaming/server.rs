//! The streaming server: plain HTTP/1.1 on `[streaming] address`, where the URLs that
//! Exec, Attach and PortForward return are upgraded to SPDY/3.1 or WebSocket.
//!
//! Everything about the request is checked before its token is taken (a malformed request
//! does not burn a URL): the route, the method, that it asks for an upgrade, a subprotocol
//! both sides speak. Then the token is taken (unknown, used, expired: 404), the 101 is
//! sent, and the session runs on the upgraded connection through the protocol adapter.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderMap, HeaderValue, CONNECTION, CONTENT_TYPE, UPGRADE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;

use super::idle;
use super::session::{Dialer, Outcome, StdioStreams, StreamOpts};
use super::tokens::{StreamRequest, Tokens, TooManyInFlight};
use super::websocket;
use crate::daemon::Daemon;

/// remotecommand subprotocols over SPDY, newest first (v5 exists on WebSocket only): what
/// the SPDY adapter serves.
pub(crate) const SPDY_REMOTECOMMAND: &[&str] = &super::spdy::REMOTECOMMAND_PROTOCOLS;
/// remotecommand subprotocols over WebSocket.
pub(crate) const WS_REMOTECOMMAND: &[&str] = &[
    "v5.channel.k8s.io",
    "v4.channel.k8s.io",
    "v3.channel.k8s.io",
    "v2.channel.k8s.io",
    "channel.k8s.io",
];
/// port-forward over SPDY.
pub(crate) const SPDY_PORTFORWARD: &[&str] = &[super::spdy::PORTFORWARD_PROTOCOL];
/// port-forward over WebSocket (kubelet's: the port is the first frame of each channel).
pub(crate) const WS_PORTFORWARD: &[&str] = &["v4.channel.k8s.io", "channel.k8s.io"];

#[derive(Debug, thiserror::Error)]
pub enum StreamingError {
    #[error("streaming address {address}: {source}")]
    Bind {
        address: SocketAddr,
        source: std::io::Error,
    },
    #[error("{0}")]
    TooMany(String),
    #[error("the streaming server is not listening (the daemon is starting or stopping)")]
    NotListening,
}

impl crate::error::Classify for StreamingError {
    fn kind(&self) -> crate::error::Kind {
        match self {
            StreamingError::Bind { .. } => crate::error::Kind::Internal,
            StreamingError::TooMany(_) | StreamingError::NotListening => {
                crate::error::Kind::Unavailable
            }
        }
    }
}

/// What the daemon keeps of the streaming server: the pending tokens and where it listens.
pub struct Streaming {
    tokens: Tokens,
    base_url: OnceLock<String>,
    idle_timeout: Duration,
}

impl Streaming {
    pub fn new(idle_timeout: Duration) -> Streaming {
        Streaming {
            tokens: Tokens::default(),
            base_url: OnceLock::new(),
            idle_timeout,
        }
    }

    /// Stores a validated request and returns the URL the client upgrades on.
    pub(crate) fn url_for(&self, req: StreamRequest) -> Result<String, StreamingError> {
        let base = self.base_url.get().ok_or(StreamingError::NotListening)?;
        let route = req.route();
        let token = self
            .tokens
            .insert(req)
            .map_err(|e: TooManyInFlight| StreamingError::TooMany(e.to_string()))?;
        Ok(format!("{base}/{route}/{token}"))
    }

    /// Where the server listens: URLs are handed out from now on.
    pub fn listening_on(&self, address: SocketAddr) {
        let _ = self.base_url.set(format!("http://{address}"));
    }

    /// `http://<address>` once the server is bound; for `proxrt info`.
    pub fn base_url(&self) -> Option<&str> {
        self.base_url.get().map(String::as_str)
    }
}

/// Binds the streaming address; done before the daemon reports ready, so that a port in
/// use stops startup with the address named.
pub async fn bind(address: SocketAddr) -> Result<TcpListener, StreamingError> {
    TcpListener::bind(address)
        .await
        .map_err(|source| StreamingError::Bind { address, source })
}

/// Serves streaming requests on `listener` until the process exits. URLs are handed out
/// from here on.
pub async fn serve(listener: TcpListener, daemon: Arc<Daemon>) {
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                // EMFILE and friends: wait rather than spin.
                tracing::warn!(error = %e, "streaming server: accept");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let daemon = daemon.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let daemon = daemon.clone();
                async move { Ok::<_, Infallible>(handle(req, daemon)) }
            });
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades()
                .await
            {
                tracing::debug!(error = %e, "streaming server: connection");
            }
        });
    }
}

/// Which framing the client asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Wire {
    Spdy,
    WebSocket,
}

/// An upgrade request that passed every check but the token.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Upgrade {
    pub route: &'static str,
    pub token: String,
    pub wire: Wire,
    /// The negotiated subprotocol.
    pub protocol: String,
    /// Whether the 101 names the protocol (a WebSocket client that offered none gets none).
    pub announce: bool,
    /// `Sec-WebSocket-Accept` for a WebSocket upgrade.
    pub ws_accept: Option<String>,
    /// `port` query parameters (WebSocket port-forward names its ports there).
    pub ports: Vec<u16>,
}

/// A refused request: the status and a body saying why.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Refusal {
    pub status: StatusCode,
    pub message: String,
    /// The subprotocols the server speaks, for a failed negotiation.
    pub supported: Vec<&'static str>,
}

fn refuse(status: StatusCode, message: impl Into<String>) -> Refusal {
    Refusal {
        status,
        message: message.into(),
        supported: Vec::new(),
    }
}

fn handle(mut req: Request<hyper::body::Incoming>, daemon: Arc<Daemon>) -> Response<Full<Bytes>> {
    let upgrade = match check(req.method(), req.uri(), req.headers()) {
        Ok(u) => u,
        Err(r) => return refusal_response(r),
    };
    let Some(session) = daemon
        .streaming()
        .tokens
        .take(&upgrade.token, upgrade.route)
    else {
        return refusal_response(refuse(
            StatusCode::NOT_FOUND,
            format!(
                "no {} session for this URL: it is unknown, was used already, or expired \
                 (a URL is valid once, for one minute)",
                upgrade.route
            ),
        ));
    };
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = response.headers_mut();
    h.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    match upgrade.wire {
        Wire::Spdy => {
            h.insert(UPGRADE, HeaderValue::from_static("SPDY/3.1"));
            if let Ok(v) = HeaderValue::from_str(&upgrade.protocol) {
                h.insert("X-Stream-Protocol-Version", v);
            }
        }
        Wire::WebSocket => {
            h.insert(UPGRADE, HeaderValue::from_static("websocket"));
            if let Some(accept) = upgrade.ws_accept.as_deref() {
                if let Ok(v) = HeaderValue::from_str(accept) {
                    h.insert("Sec-WebSocket-Accept", v);
                }
            }
            if upgrade.announce {
                if let Ok(v) = HeaderValue::from_str(&upgrade.protocol) {
                    h.insert("Sec-WebSocket-Protocol", v);
                }
            }
        }
    }
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let io = match on_upgrade.await {
            Ok(io) => TokioIo::new(io),
            Err(e) => {
                tracing::debug!(error = %e, "streaming: upgrade failed");
                return;
            }
        };
        let (io, watch) = idle::watch(io, daemon.streaming().idle_timeout);
        let route = upgrade.route;
        tokio::select! {
            r = run_session(io, upgrade, session, daemon.clone()) => {
                if let Err(e) = r {
                    tracing::debug!(error = %e, route, "streaming session ended with an error");
                }
            }
            _ = watch.expired() => {
                tracing::info!(route, "streaming session idle for too long; closed");
            }
        }
    });
    response
}

fn refusal_response(r: Refusal) -> Response<Full<Bytes>> {
    let mut message = r.message;
    if !message.ends_with('\n') {
        message.push('\n');
    }
    let mut response = Response::new(Full::new(Bytes::from(message)));
    *response.status_mut() = r.status;
    let h = response.headers_mut();
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    for p in r.supported {
        h.append("X-Stream-Protocol-Version", HeaderValue::from_static(p));
    }
    response
}

/// Checks an upgrade request without touching its token: route, method, upgrade headers,
/// subprotocol.
pub(crate) fn check(
    method: &Method,
    uri: &hyper::Uri,
    headers: &HeaderMap,
) -> Result<Upgrade, Refusal> {
    let path = uri.path().trim_end_matches('/');
    let mut parts = path.trim_start_matches('/').splitn(2, '/');
    let route = match parts.next() {
        Some("exec") => "exec",
        Some("attach") => "attach",
        Some("portforward") => "portforward",
        _ => {
            return Err(refuse(
                StatusCode::NOT_FOUND,
                "proxrt's streaming server serves /exec/<token>, /attach/<token> and \
                 /portforward/<token> (URLs from the CRI Exec, Attach and PortForward calls)",
            ))
        }
    };
    let token = match parts.next() {
        Some(t) if !t.is_empty() && !t.contains('/') => t.to_owned(),
        _ => {
            return Err(refuse(
                StatusCode::NOT_FOUND,
                format!("/{route}/ needs the token from the CRI call: /{route}/<token>"),
            ))
        }
    };
    if method != Method::GET && method != Method::POST {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            format!("{method} is not supported here: /{route}/<token> takes GET or POST with an upgrade to SPDY/3.1 or websocket"),
        ));
    }
    let asks_upgrade = header_tokens(headers, CONNECTION.as_str())
        .iter()
        .any(|t| t.eq_ignore_ascii_case("upgrade"));
    let upgrade_to = headers
        .get(UPGRADE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .trim()
        .to_owned();
    let wire = if !asks_upgrade || upgrade_to.is_empty() {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            format!("/{route}/<token> must be upgraded: send `Connection: Upgrade` and `Upgrade: SPDY/3.1` or `Upgrade: websocket`"),
        ));
    } else if upgrade_to.eq_ignore_ascii_case("SPDY/3.1") {
        Wire::Spdy
    } else if upgrade_to.eq_ignore_ascii_case("websocket") {
        Wire::WebSocket
    } else {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            format!("cannot upgrade to {upgrade_to:?}: SPDY/3.1 and websocket are supported"),
        ));
    };
    let ports =
        query_ports(uri.query().unwrap_or("")).map_err(|m| refuse(StatusCode::BAD_REQUEST, m))?;
    let portforward = route == "portforward";
    let (offered, supported, default) = match (wire, portforward) {
        (Wire::Spdy, false) => (
            header_tokens(headers, "X-Stream-Protocol-Version"),
            SPDY_REMOTECOMMAND,
            "channel.k8s.io",
        ),
        (Wire::Spdy, true) => (
            header_tokens(headers, "X-Stream-Protocol-Version"),
            SPDY_PORTFORWARD,
            "portforward.k8s.io",
        ),
        (Wire::WebSocket, false) => (
            header_tokens(headers, "Sec-WebSocket-Protocol"),
            WS_REMOTECOMMAND,
            "channel.k8s.io",
        ),
        (Wire::WebSocket, true) => (
            header_tokens(headers, "Sec-WebSocket-Protocol"),
            WS_PORTFORWARD,
            "channel.k8s.io",
        ),
    };
    // The client's order is its preference (kubelet's negotiation); a client that offers
    // nothing gets the oldest protocol, as kubelet does.
    let (protocol, announce) = if offered.is_empty() {
        (default.to_owned(), false)
    } else {
        match offered
            .iter()
            .find(|p| supported.contains(&p.as_str()))
        {
            Some(p) => (p.clone(), true),
            None => {
                return Err(Refusal {
                    status: StatusCode::FORBIDDEN,
                    message: format!(
                        "unable to upgrade: none of the offered protocols {offered:?} is supported (supported: {supported:?})"
                    ),
                    supported: supported.to_vec(),
                })
            }
        }
    };
    let ws_accept =
        match wire {
            Wire::WebSocket => {
                let version = headers
                    .get("Sec-WebSocket-Version")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                let key = headers.get("Sec-WebSocket-Key").map(|v| v.as_bytes());
                match key {
                    Some(key) if version.trim() == "13" => {
                        Some(tokio_tungstenite::tungstenite::handshake::derive_accept_key(key))
                    }
                    _ => return Err(refuse(
                        StatusCode::BAD_REQUEST,
                        "a websocket upgrade needs Sec-WebSocket-Key and Sec-WebSocket-Version: 13",
                    )),
                }
            }
            Wire::Spdy => None,
        };
    Ok(Upgrade {
        route,
        token,
        wire,
        protocol,
        announce,
        ws_accept,
        ports,
    })
}

/// A header's comma-separated values, over every occurrence, in order.
fn header_tokens(headers: &HeaderMap, name: &str) -> Vec<String> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty())
        .collect()
}

/// The `port` parameters of a query (kubelet's WebSocket port-forward: `?port=80&port=443`;
/// `ports=80,443` is taken too).
fn query_ports(query: &str) -> Result<Vec<u16>, String> {
    let pairs: Vec<(String, String)> =
        serde_urlencoded::from_str(query).map_err(|e| format!("bad query string: {e}"))?;
    let mut ports = Vec::new();
    for (k, v) in pairs {
        if k != "port" && k != "ports" {
            continue;
        }
        for p in v.split(',').filter(|p| !p.is_empty()) {
            match p.trim().parse::<u16>() {
                Ok(n) if n > 0 => ports.push(n),
                _ => return Err(format!("bad port {p:?} in the query: a number 1-65535")),
            }
        }
    }
    Ok(ports)
}

/// Runs the session the token was issued for on the upgraded connection.
async fn run_session<IO>(
    io: IO,
    upgrade: Upgrade,
    session: StreamRequest,
    daemon: Arc<Daemon>,
) -> std::io::Result<()>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (wire, protocol) = (upgrade.wire, upgrade.protocol.as_str());
    match session {
        StreamRequest::Exec {
            container_id,
            cmd,
            opts,
        } => {
            let run = move |streams: StdioStreams| async move {
                crate::container::exec_stream(&daemon.ctx(), &container_id, cmd, opts, streams)
                    .await
            };
            remotecommand(wire, io, protocol, opts, run).await
        }
        StreamRequest::Attach { container_id, opts } => {
            let run = move |streams: StdioStreams| async move {
                crate::container::attach(&daemon.ctx(), &container_id, opts, streams).await
            };
            remotecommand(wire, io, protocol, opts, run).await
        }
        StreamRequest::PortForward { sandbox_id, ports } => {
            let ports = if upgrade.ports.is_empty() {
                ports
            } else {
                upgrade.ports
            };
            let dialer = match crate::sandbox::pod_dialer(&daemon.ctx(), &sandbox_id) {
                Ok(d) => d,
                Err(e) => {
                    tracing::warn!(sandbox = %sandbox_id, error = %e, "port-forward");
                    let message = e.to_string();
                    let failing: Dialer = Arc::new(move |_port| {
                        let message = message.clone();
                        Box::pin(async move { Err(std::io::Error::other(message)) })
                    });
                    failing
                }
            };
            match wire {
                Wire::WebSocket => websocket::serve_portforward(io, protocol, ports, dialer).await,
                Wire::Spdy => spdy_portforward(io, protocol, ports, dialer).await,
            }
        }
    }
}

async fn remotecommand<IO, F, Fut>(
    wire: Wire,
    io: IO,
    protocol: &str,
    opts: StreamOpts,
    run: F,
) -> std::io::Result<()>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    F: FnOnce(StdioStreams) -> Fut + Send + 'static,
    Fut: Future<Output = Outcome> + Send + 'static,
{
    match wire {
        Wire::WebSocket => websocket::serve_remotecommand(io, protocol, opts, run).await,
        Wire::Spdy => spdy_remotecommand(io, protocol, opts, run).await,
    }
}

use super::spdy::{
    serve_portforward as spdy_portforward, serve_remotecommand as spdy_remotecommand,
};

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                hyper::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    fn uri(s: &str) -> hyper::Uri {
        s.parse().unwrap()
    }

    const WS: &[(&str, &str)] = &[
        ("Connection", "keep-alive, Upgrade"),
        ("Upgrade", "websocket"),
        ("Sec-WebSocket-Version", "13"),
        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ];

    #[test]
    fn websocket_takes_the_clients_first_supported_protocol() {
        let mut h = headers(WS);
        h.append(
            "Sec-WebSocket-Protocol",
            HeaderValue::from_static("v9.channel.k8s.io, v4.channel.k8s.io"),
        );
        h.append(
            "Sec-WebSocket-Protocol",
            HeaderValue::from_static("v5.channel.k8s.io"),
        );
        let u = check(&Method::GET, &uri("/exec/abc"), &h).unwrap();
        assert_eq!(u.route, "exec");
        assert_eq!(u.token, "abc");
        assert_eq!(u.wire, Wire::WebSocket);
        assert_eq!(u.protocol, "v4.channel.k8s.io");
        assert!(u.announce);
        // RFC 6455's example key and answer.
        assert_eq!(u.ws_accept.as_deref(), Some("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="));
    }

    #[test]
    fn spdy_negotiates_with_x_stream_protocol_version() {
        let h = headers(&[
            ("Connection", "Upgrade"),
            ("Upgrade", "SPDY/3.1"),
            ("X-Stream-Protocol-Version", "v4.channel.k8s.io"),
            ("X-Stream-Protocol-Version", "v3.channel.k8s.io"),
        ]);
        let u = check(&Method::POST, &uri("/attach/t"), &h).unwrap();
        assert_eq!(
            (u.wire, u.protocol.as_str()),
            (Wire::Spdy, "v4.channel.k8s.io")
        );
        let h = headers(&[
            ("Connection", "Upgrade"),
            ("Upgrade", "SPDY/3.1"),
            ("X-Stream-Protocol-Version", "portforward.k8s.io"),
        ]);
        let u = check(&Method::POST, &uri("/portforward/t"), &h).unwrap();
        assert_eq!(u.protocol, "portforward.k8s.io");
    }

    #[test]
    fn no_common_protocol_is_forbidden_and_lists_ours() {
        let h = headers(&[
            ("Connection", "Upgrade"),
            ("Upgrade", "SPDY/3.1"),
            ("X-Stream-Protocol-Version", "v5.channel.k8s.io"),
        ]);
        let r = check(&Method::POST, &uri("/exec/t"), &h).unwrap_err();
        assert_eq!(r.status, StatusCode::FORBIDDEN);
        assert_eq!(r.supported, SPDY_REMOTECOMMAND);
    }

    #[test]
    fn a_client_offering_no_protocol_gets_the_oldest() {
        let u = check(&Method::GET, &uri("/exec/t"), &headers(WS)).unwrap();
        assert_eq!(u.protocol, "channel.k8s.io");
        assert!(!u.announce);
    }

    #[test]
    fn wrong_method_or_no_upgrade_is_a_bad_request() {
        let r = check(&Method::PUT, &uri("/exec/t"), &headers(WS)).unwrap_err();
        assert_eq!(r.status, StatusCode::BAD_REQUEST);
        assert!(r.message.contains("PUT"), "{}", r.message);
        let r = check(&Method::GET, &uri("/exec/t"), &HeaderMap::new()).unwrap_err();
        assert_eq!(r.status, StatusCode::BAD_REQUEST);
        assert!(r.message.contains("must be upgraded"), "{}", r.message);
        let h = headers(&[("Connection", "Upgrade"), ("Upgrade", "h2c")]);
        let r = check(&Method::GET, &uri("/exec/t"), &h).unwrap_err();
        assert_eq!(r.status, StatusCode::BAD_REQUEST);
        let h = headers(&[("Connection", "Upgrade"), ("Upgrade", "websocket")]);
        let r = check(&Method::GET, &uri("/exec/t"), &h).unwrap_err();
        assert!(r.message.contains("Sec-WebSocket-Key"), "{}", r.message);
    }

    #[test]
    fn unknown_routes_and_missing_tokens_are_not_found() {
        for path in ["/", "/logs/t", "/exec", "/exec/", "/exec/a/b"] {
            let r = check(&Method::GET, &uri(path), &headers(WS)).unwrap_err();
            assert_eq!(r.status, StatusCode::NOT_FOUND, "{path}");
        }
    }

    #[test]
    fn port_forward_ports_come_from_the_query() {
        let u = check(
            &Method::GET,
            &uri("/portforward/t?port=80&port=8080"),
            &headers(WS),
        )
        .unwrap();
        assert_eq!(u.ports, vec![80, 8080]);
        let r = check(&Method::GET, &uri("/portforward/t?port=x"), &headers(WS)).unwrap_err();
        assert_eq!(r.status, StatusCode::BAD_REQUEST);
        let r = check(&Method::GET, &uri("/portforward/t?port=0"), &headers(WS)).unwrap_err();
        assert_eq!(r.status, StatusCode::BAD_REQUEST);
    }
}
