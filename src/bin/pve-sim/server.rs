//! HTTPS front: TLS, PVE's request parsing rules, token auth with PVE's delay, fault
//! rules, the `/_sim/` control endpoints, and PVE's response envelope.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::api::{err, not_implemented, Reply, Sim};
use crate::faults::{Action, Faults};
use crate::params::{parse_form, parse_json, percent_decode, Params};

/// Returned by the service to make hyper drop the connection without an answer.
#[derive(Debug)]
struct Dropped;

impl std::fmt::Display for Dropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection dropped by fault injection")
    }
}

impl std::error::Error for Dropped {}

pub async fn serve(listener: TcpListener, acceptor: TlsAcceptor, sim: Arc<Sim>) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        if sim.faults().take_close() {
            // RST rather than FIN: what a crashed or firewalled proxy looks like.
            let _ = tcp.set_zero_linger();
            drop(tcp);
            continue;
        }
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let sim = sim.clone();
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(tcp).await else {
                return;
            };
            let svc = hyper::service::service_fn(move |req| {
                let sim = sim.clone();
                async move { handle(sim, req).await }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tls), svc)
                .await;
        });
    }
}

fn json_response(status: u16, body: Value, reason: Option<&str>) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body.to_string())));
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    resp.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/json;charset=UTF-8"),
    );
    if let Some(r) = reason {
        set_reason(&mut resp, r);
    }
    resp
}

/// pveproxy puts the error message in the status line too.
fn set_reason(resp: &mut Response<Full<Bytes>>, message: &str) {
    let line: String = message
        .lines()
        .next()
        .unwrap_or("")
        .chars()
        .filter(|c| *c == ' ' || c.is_ascii_graphic())
        .collect();
    if let Ok(r) = hyper::ext::ReasonPhrase::try_from(line.into_bytes()) {
        resp.extensions_mut().insert(r);
    }
}

fn respond(reply: Reply) -> Response<Full<Bytes>> {
    match reply {
        Reply::Data(v) => json_response(200, json!({ "data": v }), None),
        Reply::DataTotal(v, n) => json_response(200, json!({ "data": v, "total": n }), None),
        Reply::Error {
            status,
            message,
            errors,
        } => {
            let mut body = json!({"data": null, "message": format!("{message}\n")});
            if let Some(e) = errors {
                body["errors"] = json!(e
                    .into_iter()
                    .map(|(k, v)| (k, format!("{v}\n")))
                    .collect::<std::collections::BTreeMap<_, _>>());
            }
            json_response(status, body, Some(&message))
        }
    }
}

fn empty(status: u16, reason: &str) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::new()));
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::UNAUTHORIZED);
    set_reason(&mut resp, reason);
    resp
}

async fn handle(sim: Arc<Sim>, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Dropped> {
    let method = req.method().as_str().to_owned();
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or("").to_owned();
    let content_type = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        });
    let auth = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = match Limited::new(req.into_body(), 1 << 20).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return Ok(respond(err(413, "request entity too large"))),
    };
    if let Some(ctl) = path.strip_prefix("/_sim/") {
        return Ok(control(&sim, &method, ctl, &body));
    }
    let result = api(&sim, &method, &path, &query, content_type, auth, &body).await;
    let status = match &result {
        Ok(r) => r.status().as_u16(),
        Err(_) => 0,
    };
    let mut log = sim.requests.lock().unwrap_or_else(|e| e.into_inner());
    log.push(json!({"method": method, "path": path, "status": status}));
    result
}

async fn api(
    sim: &Arc<Sim>,
    method: &str,
    path: &str,
    query: &str,
    content_type: Option<String>,
    auth: Option<String>,
    body: &Bytes,
) -> Result<Response<Full<Bytes>>, Dropped> {
    let Some(api_path) = path.strip_prefix("/api2/json") else {
        return Ok(empty(404, "Not Found"));
    };
    let segments: Vec<String> = api_path
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| percent_decode(s, false))
        .collect();
    // Request checks pveproxy makes before any handler runs.
    if matches!(method, "GET" | "DELETE" | "HEAD") && !body.is_empty() {
        return Ok(respond(err(
            501,
            format!("Unexpected content for method '{method}'"),
        )));
    }
    let mut params = Params::new();
    parse_form(query, &mut params);
    match content_type.as_deref() {
        Some("application/json") => {
            if let Err(m) = parse_json(body, &mut params) {
                return Ok(respond(err(500, m)));
            }
        }
        None | Some("application/x-www-form-urlencoded") => {
            parse_form(&String::from_utf8_lossy(body), &mut params)
        }
        // Any content type is fine when there is no content.
        Some(_) if body.is_empty() => {}
        Some(other) => {
            return Ok(respond(err(
                415,
                format!("unsupported content type '{other}'"),
            )));
        }
    }
    // API token auth. A failure is answered only after a delay, with no body.
    let user = auth
        .as_deref()
        .and_then(|a| a.strip_prefix("PVEAPIToken="))
        .and_then(|a| a.split_once('='))
        .filter(|(id, secret)| *id == sim.settings.token_id && *secret == sim.settings.secret)
        .map(|(id, _)| id.to_owned());
    let Some(user) = user else {
        tokio::time::sleep(sim.settings.auth_delay).await;
        let reason = if auth.is_some() {
            "authentication failure"
        } else {
            "No ticket"
        };
        return Ok(empty(401, reason));
    };
    let rule = sim
        .faults()
        .take_rule(method, &format!("/{}", segments.join("/")));
    let mut drop_after = false;
    if let Some(r) = rule {
        if r.delay_ms > 0 {
            tokio::time::sleep(Duration::from_millis(r.delay_ms)).await;
        }
        match r.action {
            Action::Status => {
                let m = r
                    .message
                    .unwrap_or_else(|| "simulated failure (pve-sim)".into());
                return Ok(respond(err(r.status, m)));
            }
            Action::Reset => return Err(Dropped),
            Action::ResetAfter => drop_after = true,
            Action::Delay => {}
        }
    }
    if segments.is_empty() {
        return Ok(respond(not_implemented(method, &segments)));
    }
    let reply = sim.handle(method, &segments, params, &user).await;
    if drop_after {
        return Err(Dropped);
    }
    Ok(respond(reply))
}

fn control(sim: &Arc<Sim>, method: &str, path: &str, body: &Bytes) -> Response<Full<Bytes>> {
    let data = |v: Value| json_response(200, json!({ "data": v }), None);
    match (method, path.trim_end_matches('/')) {
        ("GET", "guests") => data(sim.guests_json()),
        // The guest stops by itself (`poweroff` inside it), with no task.
        ("POST", p) if p.starts_with("guests/") && p.ends_with("/poweroff") => {
            let vmid = p
                .trim_start_matches("guests/")
                .trim_end_matches("/poweroff")
                .parse::<u32>();
            match vmid.map(|v| sim.power_off(v)) {
                Ok(true) => data(Value::Null),
                _ => respond(err(404, format!("no running guest at /_sim/{p}"))),
            }
        }
        ("GET", "tasks") => data(sim.tasks_json()),
        ("GET", "requests") => data(Value::Array(
            sim.requests
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        )),
        ("DELETE", "requests") => {
            sim.requests
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clear();
            data(Value::Null)
        }
        ("GET", "faults") => data(serde_json::to_value(&*sim.faults()).unwrap_or(Value::Null)),
        ("POST", "faults") => match serde_json::from_slice::<Faults>(body) {
            Ok(f) => {
                sim.faults().merge(f);
                data(Value::Null)
            }
            Err(e) => respond(err(400, format!("bad faults: {e}"))),
        },
        ("DELETE", "faults") => {
            *sim.faults() = Faults::default();
            data(Value::Null)
        }
        _ => respond(err(
            404,
            format!("no control endpoint {method} /_sim/{path}"),
        )),
    }
}
