//! One HTTPS client for the Proxmox VE API over one or more endpoints.
//!
//! - Auth: `Authorization: PVEAPIToken=<user@realm!tokenid>=<secret>` (no CSRF token is
//!   needed with API tokens); the header is marked sensitive and never logged.
//! - Responses: `{"data": …}` on success; errors become `ProxmoxError` variants with PVE's
//!   message (from the JSON `message`, else the HTTP reason phrase, where pveproxy also
//!   puts it).
//! - Retries, with exponential backoff, only where a repeat cannot do harm:
//!   * connection failures (refused, reset or failed handshake): the request never
//!     left, so any method is retried, and the next endpoint is tried first (failover);
//!   * reads (GET) after a timeout, a connection lost mid-request, or a gateway-type
//!     5xx (502/503/504, pveproxy's 595/596).
//!
//!   A POST/PUT/DELETE that may have reached PVE is never repeated: creating a guest
//!   twice, or acting on a VMID reused meanwhile, is worse than an error. A 500 is not
//!   retried either: PVE uses it for definitive answers ("already exists").
//! - Timeouts: `connect_timeout` per connection, `request_timeout` per attempt.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use reqwest::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use reqwest::{Method, Url};
use serde_json::Value;
use tracing::{debug, trace};

use super::error::ProxmoxError;
use super::form::encode_form;
use super::secret::Secret;
use super::tls::{self, TlsMode};

/// PVE's API port, used when an endpoint names none.
pub const DEFAULT_PORT: u16 = 8006;

#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Tries in all, the first included (1: no retry).
    pub attempts: u32,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 4,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(2),
        }
    }
}

/// Everything a `Client` needs; `from_config` builds it from `[proxmox]`.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// `https://host[:port]`, tried in order (port 8006 when not given).
    pub endpoints: Vec<String>,
    /// The node guests are created on.
    pub node: String,
    /// `user@realm!tokenid`.
    pub token_id: String,
    pub secret: Secret,
    pub tls: TlsMode,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    pub retry: RetryPolicy,
}

impl ClientOptions {
    pub fn new(
        endpoints: Vec<String>,
        node: impl Into<String>,
        token_id: impl Into<String>,
        secret: Secret,
        tls: TlsMode,
    ) -> ClientOptions {
        ClientOptions {
            endpoints,
            node: node.into(),
            token_id: token_id.into(),
            secret,
            tls,
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
            retry: RetryPolicy::default(),
        }
    }

    /// From a validated `[proxmox]` section: reads the token secret file (and checks the
    /// CA file) now, so a misconfiguration is reported once, at startup.
    pub fn from_config(c: &crate::config::ProxmoxConfig) -> Result<ClientOptions, ProxmoxError> {
        if c.endpoints.is_empty() {
            return Err(ProxmoxError::Config(
                crate::config::ProxmoxConfig::NO_ENDPOINTS.into(),
            ));
        }
        let secret = Secret::from_file(&c.token_secret_file)?;
        let tls = if c.insecure {
            TlsMode::Insecure
        } else if !c.fingerprint.is_empty() {
            TlsMode::Fingerprint(c.fingerprint.parse().map_err(ProxmoxError::Config)?)
        } else if !c.ca_file.as_os_str().is_empty() {
            TlsMode::CaFile(c.ca_file.clone())
        } else {
            TlsMode::System
        };
        Ok(ClientOptions::new(
            c.endpoints.clone(),
            c.node.clone(),
            c.token_id.clone(),
            secret,
            tls,
        ))
    }
}

/// `user@realm!tokenid`, as PVE accepts it.
pub(crate) fn check_token_id(id: &str) -> Result<(), String> {
    let ok = id.split_once('@').and_then(|(user, rest)| {
        let (realm, token) = rest.split_once('!')?;
        let word = |s: &str, extra: &[u8]| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b) || extra.contains(&b))
        };
        (word(user, b"") && word(realm, b"") && word(token, b"")).then_some(())
    });
    ok.ok_or_else(|| format!("{id:?} is not an API token id like \"proxrt@pve!cri\""))
}

/// An endpoint as the base URL of the API: `https://host:port/api2/json`.
pub(crate) fn endpoint_url(endpoint: &str) -> Result<Url, String> {
    let mut url = Url::parse(endpoint).map_err(|e| format!("{endpoint:?}: {e}"))?;
    if url.scheme() != "https" {
        return Err(format!(
            "{endpoint:?}: the Proxmox API is served over https only"
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("{endpoint:?}: no host"));
    }
    if !matches!(url.path(), "" | "/") || url.query().is_some() || !url.username().is_empty() {
        return Err(format!(
            "{endpoint:?}: give only https://host[:port] (the API path is added)"
        ));
    }
    // The url crate forgets an explicit default port (":443"): look at what was written.
    let authority = endpoint["https://".len()..].split('/').next().unwrap_or("");
    let port_written = authority
        .rsplit_once(':')
        .is_some_and(|(_, p)| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    if url.port().is_none() && !port_written {
        // `https://pve1` means PVE's port, not 443.
        let _ = url.set_port(Some(DEFAULT_PORT));
    }
    url.set_path("/api2/json");
    Ok(url)
}

pub struct Client {
    http: reqwest::Client,
    endpoints: Vec<Url>,
    node: String,
    auth: HeaderValue,
    retry: RetryPolicy,
    request_timeout: Duration,
    /// The endpoint that answered last: tried first next time.
    preferred: AtomicUsize,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field(
                "endpoints",
                &self.endpoints.iter().map(Url::as_str).collect::<Vec<_>>(),
            )
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

impl Client {
    pub fn new(opts: ClientOptions) -> Result<Client, ProxmoxError> {
        if opts.endpoints.is_empty() {
            return Err(ProxmoxError::Config(
                crate::config::ProxmoxConfig::NO_ENDPOINTS.into(),
            ));
        }
        let endpoints = opts
            .endpoints
            .iter()
            .map(|e| endpoint_url(e).map_err(ProxmoxError::Config))
            .collect::<Result<Vec<_>, _>>()?;
        check_token_id(&opts.token_id).map_err(ProxmoxError::Config)?;
        let mut auth = HeaderValue::from_str(&format!(
            "PVEAPIToken={}={}",
            opts.token_id,
            opts.secret.expose()
        ))
        // The error would not quote the value, but say nothing that could help guess it.
        .map_err(|_| {
            ProxmoxError::Config("the token secret is not valid in an HTTP header".into())
        })?;
        auth.set_sensitive(true);
        let mut builder = reqwest::Client::builder()
            // A PVE API is reached directly: an HTTP(S)_PROXY meant for registries must not
            // see the token.
            .no_proxy()
            .http1_only()
            .connect_timeout(opts.connect_timeout)
            .pool_idle_timeout(Duration::from_secs(30))
            .user_agent(concat!("proxrt/", env!("CARGO_PKG_VERSION")));
        builder = match tls::client_config(&opts.tls)? {
            Some(config) => builder.tls_backend_preconfigured(config),
            None => builder.tls_backend_rustls(),
        };
        let http = builder
            .build()
            .map_err(|e| ProxmoxError::Config(format!("HTTP client: {e}")))?;
        Ok(Client {
            http,
            endpoints,
            node: opts.node,
            auth,
            retry: opts.retry,
            request_timeout: opts.request_timeout,
            preferred: AtomicUsize::new(0),
        })
    }

    /// The node guests are created on.
    pub fn node(&self) -> &str {
        &self.node
    }

    pub(crate) async fn get(
        &self,
        segments: &[&str],
        query: &[(String, String)],
    ) -> Result<Value, ProxmoxError> {
        self.call(Method::GET, segments, query, None).await
    }

    pub(crate) async fn post(
        &self,
        segments: &[&str],
        form: &[(String, String)],
    ) -> Result<Value, ProxmoxError> {
        self.call(Method::POST, segments, &[], Some(form)).await
    }

    pub(crate) async fn put(
        &self,
        segments: &[&str],
        form: &[(String, String)],
    ) -> Result<Value, ProxmoxError> {
        self.call(Method::PUT, segments, &[], Some(form)).await
    }

    pub(crate) async fn delete(
        &self,
        segments: &[&str],
        query: &[(String, String)],
    ) -> Result<Value, ProxmoxError> {
        self.call(Method::DELETE, segments, query, None).await
    }

    /// One API call with retries and failover; returns the response's `data`.
    pub(crate) async fn call(
        &self,
        method: Method,
        segments: &[&str],
        query: &[(String, String)],
        form: Option<&[(String, String)]>,
    ) -> Result<Value, ProxmoxError> {
        let path = format!("/{}", segments.join("/"));
        let read = method == Method::GET;
        let mut backoff = self.retry.initial_backoff;
        let mut attempt = 1;
        loop {
            let err = match self
                .try_endpoints(&method, &path, segments, query, form)
                .await
            {
                Ok(data) => return Ok(data),
                Err(e) => e,
            };
            let retry = match &err {
                ProxmoxError::Connect { .. } => true,
                ProxmoxError::Timeout { .. } | ProxmoxError::Transport { .. } => read,
                ProxmoxError::Server { status, .. } => {
                    read && matches!(status, 502 | 503 | 504 | 595 | 596)
                }
                _ => false,
            };
            if !retry || attempt >= self.retry.attempts {
                return Err(err);
            }
            debug!(%method, %path, attempt, error = %err, ?backoff, "proxmox call failed, retrying");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(self.retry.max_backoff);
            attempt += 1;
        }
    }

    /// Tries each endpoint once, starting with the one that answered last, moving on
    /// only when the connection could not be made.
    async fn try_endpoints(
        &self,
        method: &Method,
        path: &str,
        segments: &[&str],
        query: &[(String, String)],
        form: Option<&[(String, String)]>,
    ) -> Result<Value, ProxmoxError> {
        let n = self.endpoints.len();
        let first = self.preferred.load(Ordering::Relaxed) % n;
        let mut failure: Option<ProxmoxError> = None;
        for k in 0..n {
            let i = (first + k) % n;
            match self.send(i, method, path, segments, query, form).await {
                Err(
                    e @ (ProxmoxError::Connect { .. }
                    | ProxmoxError::Tls { .. }
                    | ProxmoxError::FingerprintMismatch { .. }),
                ) => {
                    debug!(endpoint = %self.endpoints[i], error = %e, "endpoint failed, trying the next");
                    // Report a TLS problem over a plain connection failure: it is the one
                    // an operator must fix.
                    if failure.as_ref().is_none_or(ProxmoxError::is_connect) {
                        failure = Some(e);
                    }
                }
                other => {
                    if k > 0 {
                        self.preferred.store(i, Ordering::Relaxed);
                    }
                    return other;
                }
            }
        }
        Err(failure.unwrap_or_else(|| ProxmoxError::Config("no endpoint".into())))
    }

    fn url(&self, i: usize, segments: &[&str], query: &[(String, String)]) -> Url {
        let mut url = self.endpoints[i].clone();
        if let Ok(mut s) = url.path_segments_mut() {
            // Each segment is percent-encoded as a whole: a UPID's ':' and '!' or a
            // storage id stay inside their segment.
            s.pop_if_empty().extend(segments);
        }
        if !query.is_empty() {
            url.set_query(Some(&encode_form(query)));
        }
        url
    }

    async fn send(
        &self,
        i: usize,
        method: &Method,
        path: &str,
        segments: &[&str],
        query: &[(String, String)],
        form: Option<&[(String, String)]>,
    ) -> Result<Value, ProxmoxError> {
        let endpoint = self.endpoints[i].origin().ascii_serialization();
        let url = self.url(i, segments, query);
        let mut req = self
            .http
            .request(method.clone(), url)
            .header(AUTHORIZATION, self.auth.clone())
            .timeout(self.request_timeout);
        if let Some(form) = form {
            // Parameter names only: values may hold passwords or keys.
            trace!(%method, %path, params = ?form.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(), "proxmox request");
            req = req
                .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(encode_form(form));
        } else {
            trace!(%method, %path, "proxmox request");
        }
        let started = Instant::now();
        let result = self.exchange(req, &endpoint, method, path).await;
        crate::metrics::proxmox_call(
            call_name(method, segments),
            call_outcome(&result),
            started.elapsed(),
        );
        result
    }

    /// Sends one request and decodes PVE's answer.
    async fn exchange(
        &self,
        req: reqwest::RequestBuilder,
        endpoint: &str,
        method: &Method,
        path: &str,
    ) -> Result<Value, ProxmoxError> {
        let started = Instant::now();
        let sent = |e: reqwest::Error| self.send_error(e, endpoint, method, path);
        let resp = req.send().await.map_err(sent)?;
        let status = resp.status();
        let reason = resp
            .extensions()
            .get::<hyper::ext::ReasonPhrase>()
            .and_then(|r| std::str::from_utf8(r.as_bytes()).ok())
            .or(status.canonical_reason())
            .unwrap_or("")
            .to_owned();
        let body = resp.bytes().await.map_err(sent)?;
        debug!(
            %method,
            %path,
            %endpoint,
            status = status.as_u16(),
            elapsed_us = started.elapsed().as_micros() as u64,
            "proxmox call"
        );
        decode(method, path, status.as_u16(), &reason, &body)
    }

    fn send_error(
        &self,
        e: reqwest::Error,
        endpoint: &str,
        method: &Method,
        path: &str,
    ) -> ProxmoxError {
        if let Some(found) = tls::tls_failure(&e) {
            return match found {
                Ok((expected, actual)) => ProxmoxError::FingerprintMismatch {
                    endpoint: endpoint.to_owned(),
                    expected: expected.to_string(),
                    actual: actual.to_string(),
                },
                Err(message) => ProxmoxError::Tls {
                    endpoint: endpoint.to_owned(),
                    message,
                },
            };
        }
        if e.is_connect() {
            return ProxmoxError::Connect {
                endpoint: endpoint.to_owned(),
                message: error_chain(&e),
            };
        }
        if e.is_timeout() {
            return ProxmoxError::Timeout {
                method: method.to_string(),
                path: path.to_owned(),
                endpoint: endpoint.to_owned(),
                timeout: self.request_timeout,
            };
        }
        ProxmoxError::Transport {
            method: method.to_string(),
            path: path.to_owned(),
            endpoint: endpoint.to_owned(),
            message: error_chain(&e),
        }
    }
}

/// "a: b: c" from an error and its sources, without reqwest's URL (which is in the
/// variant's fields already).
fn error_chain(e: &reqwest::Error) -> String {
    let mut out = String::new();
    let mut cur: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(x) = cur {
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&x.to_string());
        cur = x.source();
    }
    if out.is_empty() {
        out = e.to_string();
    }
    out
}

/// PVE's envelope: `{"data": …}`, or an error with `message` and, for 400, `errors`.
fn decode(
    method: &Method,
    path: &str,
    status: u16,
    reason: &str,
    body: &[u8],
) -> Result<Value, ProxmoxError> {
    let json: Option<Value> = serde_json::from_slice(body).ok();
    if (200..300).contains(&status) {
        return match json {
            Some(Value::Object(mut o)) => Ok(o.remove("data").unwrap_or(Value::Null)),
            _ => Err(ProxmoxError::Decode {
                method: method.to_string(),
                path: path.to_owned(),
                message: format!("HTTP {status} without a JSON object body"),
            }),
        };
    }
    let message = json
        .as_ref()
        .and_then(|j| j.get("message"))
        .and_then(Value::as_str)
        .unwrap_or(reason)
        .trim_end()
        .to_owned();
    let (method, path) = (method.to_string(), path.to_owned());
    Err(match status {
        400 => {
            let errors = json
                .as_ref()
                .and_then(|j| j.get("errors"))
                .and_then(Value::as_object)
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| {
                            let v = v
                                .as_str()
                                .map(str::to_owned)
                                .unwrap_or_else(|| v.to_string());
                            (k.clone(), v.trim_end().to_owned())
                        })
                        .collect()
                })
                .unwrap_or_default();
            ProxmoxError::BadRequest {
                method,
                path,
                message,
                errors,
            }
        }
        401 => ProxmoxError::Unauthorized {
            method,
            path,
            message,
        },
        403 => ProxmoxError::Forbidden {
            method,
            path,
            message,
        },
        501 => ProxmoxError::NotImplemented {
            method,
            path,
            message,
        },
        500..=599 => ProxmoxError::Server {
            method,
            path,
            status,
            message,
        },
        _ => ProxmoxError::Http {
            method,
            path,
            status,
            message,
        },
    })
}

/// The API call as a metrics label: the path's template, never a VMID, node or UPID.
fn call_name(method: &Method, segments: &[&str]) -> &'static str {
    let get = *method == Method::GET;
    match (method.as_str(), segments) {
        (_, ["version"]) => "GET /version",
        (_, ["cluster", "nextid"]) => "GET /cluster/nextid",
        ("POST", ["nodes", _, "lxc"]) => "POST /nodes/{node}/lxc",
        (_, ["nodes", _, "lxc"]) => "GET /nodes/{node}/lxc",
        ("DELETE", ["nodes", _, "lxc", _]) => "DELETE /nodes/{node}/lxc/{vmid}",
        (_, ["nodes", _, "lxc", _, "status", "current"]) => {
            "GET /nodes/{node}/lxc/{vmid}/status/current"
        }
        (_, ["nodes", _, "lxc", _, "status", "start"]) => {
            "POST /nodes/{node}/lxc/{vmid}/status/start"
        }
        (_, ["nodes", _, "lxc", _, "status", "stop"]) => {
            "POST /nodes/{node}/lxc/{vmid}/status/stop"
        }
        (_, ["nodes", _, "lxc", _, "status", "shutdown"]) => {
            "POST /nodes/{node}/lxc/{vmid}/status/shutdown"
        }
        (_, ["nodes", _, "lxc", _, "config"]) if get => "GET /nodes/{node}/lxc/{vmid}/config",
        (_, ["nodes", _, "lxc", _, "config"]) => "PUT /nodes/{node}/lxc/{vmid}/config",
        (_, ["nodes", _, "lxc", _, "interfaces"]) => "GET /nodes/{node}/lxc/{vmid}/interfaces",
        (_, ["nodes", _, "tasks", _, "status"]) => "GET /nodes/{node}/tasks/{upid}/status",
        (_, ["nodes", _, "tasks", _, "log"]) => "GET /nodes/{node}/tasks/{upid}/log",
        (_, ["nodes", _, "storage", _, "content"]) => "GET /nodes/{node}/storage/{storage}/content",
        _ => "other",
    }
}

/// How a call ended, as one of the few words the metrics label takes.
fn call_outcome(result: &Result<Value, ProxmoxError>) -> &'static str {
    match result {
        Ok(_) => "ok",
        Err(ProxmoxError::Timeout { .. }) => "timeout",
        Err(ProxmoxError::Connect { .. } | ProxmoxError::Transport { .. }) => "connect",
        Err(ProxmoxError::Tls { .. } | ProxmoxError::FingerprintMismatch { .. }) => "tls",
        Err(
            ProxmoxError::BadRequest { .. }
            | ProxmoxError::Unauthorized { .. }
            | ProxmoxError::Forbidden { .. },
        ) => "http_4xx",
        Err(ProxmoxError::Server { .. } | ProxmoxError::NotImplemented { .. }) => "http_5xx",
        Err(_) => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_get_the_api_path_and_pve_port() {
        assert_eq!(
            endpoint_url("https://pve1").unwrap().as_str(),
            "https://pve1:8006/api2/json"
        );
        assert_eq!(
            endpoint_url("https://10.0.0.1:443/").unwrap().as_str(),
            "https://10.0.0.1/api2/json"
        );
        assert!(endpoint_url("http://pve1:8006").is_err());
        assert!(endpoint_url("https://pve1:8006/api2/json").is_err());
        assert!(endpoint_url("pve1:8006").is_err());
    }

    #[test]
    fn options_from_config_read_the_secret_and_pick_the_tls_mode() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("token");
        std::fs::write(&secret, "0123-abcd\n").unwrap();
        let mut c = crate::config::Config::default().proxmox;
        let e = ClientOptions::from_config(&c).unwrap_err();
        assert_eq!(
            e.to_string(),
            "Proxmox client configuration: no [proxmox] endpoints configured"
        );
        c.endpoints = vec!["https://pve1".into()];
        c.token_secret_file = secret.clone();
        let o = ClientOptions::from_config(&c).unwrap();
        assert_eq!(o.secret.expose(), "0123-abcd");
        assert!(matches!(o.tls, TlsMode::System));
        assert!(!format!("{o:?}").contains("0123-abcd"));
        c.fingerprint = ["ab"; 32].join(":");
        assert!(
            matches!(ClientOptions::from_config(&c).unwrap().tls, TlsMode::Fingerprint(f) if f.0 == [0xab; 32])
        );
        c.fingerprint.clear();
        c.ca_file = "/etc/pve/pve-root-ca.pem".into();
        assert!(matches!(
            ClientOptions::from_config(&c).unwrap().tls,
            TlsMode::CaFile(_)
        ));
        c.insecure = true;
        assert!(matches!(
            ClientOptions::from_config(&c).unwrap().tls,
            TlsMode::Insecure
        ));
        c.token_secret_file = dir.path().join("missing");
        assert!(matches!(
            ClientOptions::from_config(&c),
            Err(ProxmoxError::TokenFile { .. })
        ));
        // Client::new accepts the options (the CA file is only read when it exists).
        c.insecure = false;
        c.ca_file = std::path::PathBuf::new();
        c.token_secret_file = secret;
        assert_eq!(
            Client::new(ClientOptions::from_config(&c).unwrap())
                .unwrap()
                .node(),
            "pve"
        );
    }

    #[test]
    fn token_ids_need_user_realm_and_token() {
        assert!(check_token_id("proxrt@pve!cri").is_ok());
        assert!(check_token_id("root@pam!proxrt-1").is_ok());
        for bad in [
            "proxrt@pve",
            "proxrt!cri",
            "@pve!cri",
            "a@b!",
            "a b@pve!c",
            "a@pve!c=d",
        ] {
            assert!(check_token_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn envelope_decoding() {
        let m = Method::POST;
        assert_eq!(
            decode(&m, "/x", 200, "OK", br#"{"data":"105"}"#).unwrap(),
            Value::String("105".into())
        );
        let e = decode(
            &m,
            "/x",
            400,
            "Parameter verification failed.",
            br#"{"data":null,"message":"Parameter verification failed.\n","errors":{"vmid":"invalid format - value does not look like a valid VM ID\n"}}"#,
        )
        .unwrap_err();
        match e {
            ProxmoxError::BadRequest {
                errors, message, ..
            } => {
                assert_eq!(message, "Parameter verification failed.");
                assert_eq!(
                    errors["vmid"],
                    "invalid format - value does not look like a valid VM ID"
                );
            }
            other => panic!("{other:?}"),
        }
        // 401 has no body: the reason phrase is the message.
        let e = decode(&m, "/x", 401, "authentication failure", b"").unwrap_err();
        assert!(
            matches!(e, ProxmoxError::Unauthorized { ref message, .. } if message == "authentication failure")
        );
        let e = decode(
            &m,
            "/x",
            500,
            "x",
            b"{\"data\":null,\"message\":\"CT 105 already exists on node 'pve'\\n\"}",
        )
        .unwrap_err();
        assert!(e.is_already_exists());
        assert!(matches!(
            decode(&m, "/x", 200, "OK", b"<html>"),
            Err(ProxmoxError::Decode { .. })
        ));
        assert!(matches!(
            decode(&m, "/x", 501, "x", b""),
            Err(ProxmoxError::NotImplemented { .. })
        ));
        assert!(matches!(
            decode(&m, "/x", 404, "x", b""),
            Err(ProxmoxError::Http { status: 404, .. })
        ));
        assert!(matches!(
            decode(&m, "/x", 596, "x", b""),
            Err(ProxmoxError::Server { status: 596, .. })
        ));
    }
}
