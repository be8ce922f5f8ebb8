//! The single-use tokens in streaming URLs: Exec, Attach and PortForward store what they
//! validated under a random token; the server takes it out once (kubelet's request cache:
//! one minute to use it, a bounded number in flight).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::session::StreamOpts;

/// How long a URL stays usable (kubelet's token cache TTL).
pub(crate) const TOKEN_TTL: Duration = Duration::from_secs(60);
/// At most this many URLs wait to be used (kubelet's `maxInFlight`).
pub(crate) const MAX_IN_FLIGHT: usize = 1000;
/// Random bytes per token (hex in the URL).
const TOKEN_BYTES: usize = 16;

/// What a URL was issued for, as the CRI call validated it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum StreamRequest {
    Exec {
        container_id: String,
        cmd: Vec<String>,
        opts: StreamOpts,
    },
    /// Issued by the Attach RPC (the attach branch wires it).
    #[allow(dead_code)]
    Attach {
        container_id: String,
        opts: StreamOpts,
    },
    PortForward {
        sandbox_id: String,
        /// The ports the PortForward call named (a client may name its own per stream).
        ports: Vec<u16>,
    },
}

impl StreamRequest {
    /// The URL path segment: `/exec/…`, `/attach/…`, `/portforward/…`.
    pub(crate) fn route(&self) -> &'static str {
        match self {
            StreamRequest::Exec { .. } => "exec",
            StreamRequest::Attach { .. } => "attach",
            StreamRequest::PortForward { .. } => "portforward",
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{max} streaming URLs are waiting to be used; try again later", max = MAX_IN_FLIGHT)]
pub(crate) struct TooManyInFlight;

/// The pending requests by token.
#[derive(Default)]
pub(crate) struct Tokens {
    pending: Mutex<HashMap<String, (StreamRequest, Instant)>>,
}

impl Tokens {
    /// Stores `req` under a new random token and returns the token.
    pub(crate) fn insert(&self, req: StreamRequest) -> Result<String, TooManyInFlight> {
        self.insert_at(req, Instant::now())
    }

    fn insert_at(&self, req: StreamRequest, now: Instant) -> Result<String, TooManyInFlight> {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        pending.retain(|_, (_, issued)| now.saturating_duration_since(*issued) < TOKEN_TTL);
        if pending.len() >= MAX_IN_FLIGHT {
            return Err(TooManyInFlight);
        }
        loop {
            let token = new_token();
            if !pending.contains_key(&token) {
                pending.insert(token.clone(), (req, now));
                return Ok(token);
            }
        }
    }

    /// Takes the request stored under `token` if it is there, unexpired and for `route`;
    /// a token is gone after this whatever the answer.
    pub(crate) fn take(&self, token: &str, route: &str) -> Option<StreamRequest> {
        self.take_at(token, route, Instant::now())
    }

    fn take_at(&self, token: &str, route: &str, now: Instant) -> Option<StreamRequest> {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        let (req, issued) = pending.remove(token)?;
        (now.saturating_duration_since(issued) < TOKEN_TTL && req.route() == route).then_some(req)
    }
}

fn new_token() -> String {
    let mut buf = [0u8; TOKEN_BYTES];
    // getrandom only fails when the kernel has no entropy source at all; a token from
    // the clock would be guessable, so that is fatal to the request, not silently weak.
    if let Err(e) = getrandom::fill(&mut buf) {
        panic!("no random source for a streaming token: {e}");
    }
    hex::encode(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exec() -> StreamRequest {
        StreamRequest::Exec {
            container_id: "c1".into(),
            cmd: vec!["sh".into()],
            opts: StreamOpts {
                stdin: true,
                stdout: true,
                stderr: false,
                tty: true,
            },
        }
    }

    #[test]
    fn a_token_is_used_once() {
        let t = Tokens::default();
        let token = t.insert(exec()).unwrap();
        assert_eq!(token.len(), 2 * TOKEN_BYTES);
        assert_eq!(t.take(&token, "exec"), Some(exec()));
        assert_eq!(t.take(&token, "exec"), None);
    }

    #[test]
    fn a_token_for_another_route_is_refused_and_gone() {
        let t = Tokens::default();
        let token = t.insert(exec()).unwrap();
        assert_eq!(t.take(&token, "attach"), None);
        assert_eq!(t.take(&token, "exec"), None);
        assert_eq!(t.take("nonsense", "exec"), None);
    }

    #[test]
    fn a_token_expires() {
        let t = Tokens::default();
        let now = Instant::now();
        let token = t.insert_at(exec(), now).unwrap();
        assert_eq!(t.take_at(&token, "exec", now + TOKEN_TTL), None);
        let token = t.insert_at(exec(), now).unwrap();
        let later = now + TOKEN_TTL - Duration::from_secs(1);
        assert_eq!(t.take_at(&token, "exec", later), Some(exec()));
    }

    #[test]
    fn in_flight_requests_are_bounded_and_expired_ones_make_room() {
        let t = Tokens::default();
        let now = Instant::now();
        let tokens: Vec<_> = (0..MAX_IN_FLIGHT)
            .map(|_| t.insert_at(exec(), now).unwrap())
            .collect();
        assert_eq!(t.insert_at(exec(), now), Err(TooManyInFlight));
        // Using one makes room for one.
        assert!(t.take_at(&tokens[0], "exec", now).is_some());
        assert!(t.insert_at(exec(), now).is_ok());
        assert_eq!(t.insert_at(exec(), now), Err(TooManyInFlight));
        // All expired: room again.
        assert!(t.insert_at(exec(), now + TOKEN_TTL).is_ok());
    }
}
