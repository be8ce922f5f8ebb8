//! Typed errors of the Proxmox client, and their gRPC codes.
//!
//! PVE answers most semantic failures with HTTP 500 and a message ("CT 105 already
//! exists on node 'pve'"): the message is kept verbatim (minus its trailing newline) so a
//! user sees what Proxmox said, and `grpc_code` reads it only where the meaning is clear.
//! No variant ever holds the token secret: errors carry method, path and endpoint only.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ProxmoxError {
    /// 400 "Parameter verification failed." with PVE's per-parameter reasons.
    #[error("{method} {path}: {message} ({})", format_param_errors(errors))]
    BadRequest {
        method: String,
        path: String,
        message: String,
        errors: BTreeMap<String, String>,
    },
    /// 401: PVE answers a bad or missing token only after a deliberate delay (~3 s).
    #[error("{method} {path}: authentication failed (401 {message}): check token_id and the token secret file")]
    Unauthorized {
        method: String,
        path: String,
        message: String,
    },
    /// 403, e.g. "Permission check failed (/vms/105, VM.Allocate)".
    #[error("{method} {path}: permission denied (403): {message}")]
    Forbidden {
        method: String,
        path: String,
        message: String,
    },
    /// 500 (and other 5xx but 501): PVE's message kept as it is.
    #[error("{method} {path}: Proxmox VE error ({status}): {message}")]
    Server {
        method: String,
        path: String,
        status: u16,
        message: String,
    },
    /// 501: PVE refuses e.g. a body on GET/DELETE: a bug in the client.
    #[error("{method} {path}: not implemented by Proxmox VE (501): {message}")]
    NotImplemented {
        method: String,
        path: String,
        message: String,
    },
    /// Any other HTTP status (404 for an unknown API path, …).
    #[error("{method} {path}: unexpected HTTP status {status}: {message}")]
    Http {
        method: String,
        path: String,
        status: u16,
        message: String,
    },
    /// No connection could be made (refused, unreachable, DNS, reset during the
    /// handshake): the request never left, so it was safe to retry and fail over.
    #[error("{endpoint}: cannot connect: {message}")]
    Connect { endpoint: String, message: String },
    /// The pinned fingerprint does not match the server's leaf certificate.
    #[error("{endpoint}: TLS: certificate fingerprint mismatch: pinned {expected}, server presented {actual}")]
    FingerprintMismatch {
        endpoint: String,
        expected: String,
        actual: String,
    },
    /// Other TLS failures (unknown CA, expired, wrong host name).
    #[error("{endpoint}: TLS: {message}")]
    Tls { endpoint: String, message: String },
    /// No answer within the per-request timeout.
    #[error("{method} {path}: no answer from {endpoint} within {timeout:?}")]
    Timeout {
        method: String,
        path: String,
        endpoint: String,
        timeout: Duration,
    },
    /// The connection failed after the request may have reached the server: not retried
    /// unless the call is a read.
    #[error(
        "{method} {path}: connection to {endpoint} failed after the request was sent: {message}"
    )]
    Transport {
        method: String,
        path: String,
        endpoint: String,
        message: String,
    },
    /// A 200 whose body is not what the API schema promises.
    #[error("{method} {path}: unexpected response: {message}")]
    Decode {
        method: String,
        path: String,
        message: String,
    },
    /// A create whose POST may have reached PVE before the connection failed: the guest
    /// may or may not exist, so the caller must look for `vmid` before giving it up.
    #[error("create of CT {vmid}: outcome unknown: {source}")]
    CreateOutcomeUnknown {
        vmid: u32,
        #[source]
        source: Box<ProxmoxError>,
    },
    /// A task ended with an error exit status; `log_tail` is the end of its log.
    #[error("task {upid} failed: {exitstatus}{}", format_tail(log_tail))]
    TaskFailed {
        upid: String,
        exitstatus: String,
        log_tail: Vec<String>,
    },
    /// A task still ran when the caller's deadline passed (it may still finish).
    #[error("task {upid} still running after {waited:?}")]
    TaskTimeout { upid: String, waited: Duration },
    #[error("invalid UPID {upid:?}: {reason}")]
    BadUpid { upid: String, reason: String },
    /// Refused before sending: a value PVE would refuse (or misread).
    #[error("invalid parameter {param}: {message}")]
    InvalidParam { param: String, message: String },
    #[error("token secret file {}: {message}", path.display())]
    TokenFile { path: PathBuf, message: String },
    #[error("CA file {}: {message}", path.display())]
    CaFile { path: PathBuf, message: String },
    #[error("Proxmox client configuration: {0}")]
    Config(String),
}

fn format_param_errors(errors: &BTreeMap<String, String>) -> String {
    if errors.is_empty() {
        return "no parameter named".into();
    }
    errors
        .iter()
        .map(|(k, v)| format!("{k}: {}", v.trim_end()))
        .collect::<Vec<_>>()
        .join("; ")
}

fn format_tail(tail: &[String]) -> String {
    match tail.is_empty() {
        true => String::new(),
        false => format!("; log tail: {}", tail.join(" | ")),
    }
}

/// What a PVE message says, where it is clear. PVE's wording is stable across releases
/// (these are `die` strings in pve-container and pve-common).
fn code_for_message(message: &str) -> Option<tonic::Code> {
    use tonic::Code;
    let m = message.to_ascii_lowercase();
    if m.contains("already exists") {
        Some(Code::AlreadyExists)
    } else if m.contains("does not exist") || m.contains("no such") {
        Some(Code::NotFound)
    } else if m.contains("already running")
        || m.contains("not running")
        || m.contains("container is running")
        || m.contains("is locked")
        || m.contains("can't lock file")
    {
        Some(Code::FailedPrecondition)
    } else if m.contains("only root can") || m.contains("permission check failed") {
        Some(Code::PermissionDenied)
    } else {
        None
    }
}

impl ProxmoxError {
    /// The gRPC code a CRI call failing with this error should return.
    pub fn grpc_code(&self) -> tonic::Code {
        use tonic::Code;
        match self {
            ProxmoxError::BadRequest { .. }
            | ProxmoxError::InvalidParam { .. }
            | ProxmoxError::BadUpid { .. } => Code::InvalidArgument,
            ProxmoxError::Unauthorized { .. } => Code::Unauthenticated,
            ProxmoxError::Forbidden { .. } => Code::PermissionDenied,
            ProxmoxError::Server { message, .. } => {
                code_for_message(message).unwrap_or(Code::Internal)
            }
            ProxmoxError::TaskFailed { exitstatus, .. } => {
                code_for_message(exitstatus).unwrap_or(Code::Internal)
            }
            ProxmoxError::NotImplemented { .. }
            | ProxmoxError::Http { .. }
            | ProxmoxError::Decode { .. } => Code::Internal,
            ProxmoxError::Connect { .. }
            | ProxmoxError::Timeout { .. }
            | ProxmoxError::Transport { .. }
            | ProxmoxError::Tls { .. }
            | ProxmoxError::FingerprintMismatch { .. }
            | ProxmoxError::CreateOutcomeUnknown { .. } => Code::Unavailable,
            ProxmoxError::TaskTimeout { .. } => Code::DeadlineExceeded,
            ProxmoxError::TokenFile { .. }
            | ProxmoxError::CaFile { .. }
            | ProxmoxError::Config(_) => Code::FailedPrecondition,
        }
    }

    /// The error's class, for the one place errors become gRPC codes (`cri::errors`).
    pub fn kind(&self) -> crate::error::Kind {
        use crate::error::Kind;
        use tonic::Code;
        match self.grpc_code() {
            Code::InvalidArgument => Kind::InvalidArgument,
            Code::NotFound => Kind::NotFound,
            Code::AlreadyExists => Kind::AlreadyExists,
            Code::FailedPrecondition => Kind::FailedPrecondition,
            Code::Unavailable => Kind::Unavailable,
            Code::DeadlineExceeded => Kind::DeadlineExceeded,
            Code::PermissionDenied => Kind::PermissionDenied,
            Code::Unauthenticated => Kind::Unauthenticated,
            _ => Kind::Internal,
        }
    }

    /// The error as a gRPC status, with the full message (PVE's text included).
    pub fn to_status(&self) -> tonic::Status {
        tonic::Status::new(self.grpc_code(), self.to_string())
    }

    /// PVE's message for errors that carry one.
    pub fn pve_message(&self) -> Option<&str> {
        match self {
            ProxmoxError::BadRequest { message, .. }
            | ProxmoxError::Unauthorized { message, .. }
            | ProxmoxError::Forbidden { message, .. }
            | ProxmoxError::Server { message, .. }
            | ProxmoxError::NotImplemented { message, .. }
            | ProxmoxError::Http { message, .. } => Some(message),
            ProxmoxError::TaskFailed { exitstatus, .. } => Some(exitstatus),
            _ => None,
        }
    }

    /// A 500 saying the VMID is taken: the signal to pick another one.
    pub fn is_already_exists(&self) -> bool {
        matches!(self, ProxmoxError::Server { message, .. } if message.contains("already exists"))
    }

    /// Connection failures, where the next endpoint may do better.
    pub(crate) fn is_connect(&self) -> bool {
        matches!(self, ProxmoxError::Connect { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    fn server(message: &str) -> ProxmoxError {
        ProxmoxError::Server {
            method: "POST".into(),
            path: "/nodes/pve/lxc".into(),
            status: 500,
            message: message.into(),
        }
    }

    #[test]
    fn pve_500_messages_map_to_codes_and_are_kept() {
        for (message, code) in [
            ("CT 105 already exists on node 'pve'", Code::AlreadyExists),
            (
                "Configuration file 'nodes/pve/lxc/999.conf' does not exist",
                Code::NotFound,
            ),
            ("CT 105 already running", Code::FailedPrecondition),
            ("CT 105 not running", Code::FailedPrecondition),
            (
                "unable to destroy CT 105 - container is running",
                Code::FailedPrecondition,
            ),
            (
                "can't lock file '/run/lock/lxc/pve-config-105.lock' - got timeout",
                Code::FailedPrecondition,
            ),
            (
                "Only root can pass arbitrary filesystem paths.",
                Code::PermissionDenied,
            ),
            ("something nobody expected", Code::Internal),
        ] {
            let e = server(message);
            assert_eq!(e.grpc_code(), code, "{message}");
            assert!(e.to_string().contains(message));
            assert!(e.to_status().message().contains(message));
        }
        assert!(server("CT 105 already exists on node 'pve'").is_already_exists());
    }

    #[test]
    fn other_kinds_map_to_codes() {
        let m = |s: &str| s.to_owned();
        let mut errors = BTreeMap::new();
        errors.insert(
            m("vmid"),
            m("invalid format - value does not look like a valid VM ID"),
        );
        let cases = [
            (
                ProxmoxError::BadRequest {
                    method: m("POST"),
                    path: m("/x"),
                    message: m("Parameter verification failed."),
                    errors,
                },
                Code::InvalidArgument,
            ),
            (
                ProxmoxError::Unauthorized {
                    method: m("GET"),
                    path: m("/x"),
                    message: m("authentication failure"),
                },
                Code::Unauthenticated,
            ),
            (
                ProxmoxError::Forbidden {
                    method: m("GET"),
                    path: m("/x"),
                    message: m("Permission check failed (/vms/105, VM.Allocate)"),
                },
                Code::PermissionDenied,
            ),
            (
                ProxmoxError::Connect {
                    endpoint: m("https://pve:8006"),
                    message: m("refused"),
                },
                Code::Unavailable,
            ),
            (
                ProxmoxError::Timeout {
                    method: m("GET"),
                    path: m("/x"),
                    endpoint: m("https://pve:8006"),
                    timeout: Duration::from_secs(1),
                },
                Code::Unavailable,
            ),
            (
                ProxmoxError::TaskTimeout {
                    upid: m("UPID:…"),
                    waited: Duration::from_secs(1),
                },
                Code::DeadlineExceeded,
            ),
            (
                ProxmoxError::TaskFailed {
                    upid: m("UPID:…"),
                    exitstatus: m("CT 105 already running"),
                    log_tail: vec![],
                },
                Code::FailedPrecondition,
            ),
            (
                ProxmoxError::TaskFailed {
                    upid: m("UPID:…"),
                    exitstatus: m("unable to create CT 105 - disk full"),
                    log_tail: vec![m("extracting archive"), m("TASK ERROR: disk full")],
                },
                Code::Internal,
            ),
            (
                ProxmoxError::NotImplemented {
                    method: m("GET"),
                    path: m("/x"),
                    message: m("Unexpected content for method 'GET'"),
                },
                Code::Internal,
            ),
        ];
        for (e, code) in cases {
            assert_eq!(e.grpc_code(), code, "{e}");
        }
    }

    #[test]
    fn display_keeps_the_errors_map_and_log_tail() {
        let mut errors = BTreeMap::new();
        errors.insert(
            "vmid".to_owned(),
            "value must have a minimum value of 100\n".to_owned(),
        );
        let e = ProxmoxError::BadRequest {
            method: "POST".into(),
            path: "/nodes/pve/lxc".into(),
            message: "Parameter verification failed.".into(),
            errors,
        };
        assert_eq!(
            e.to_string(),
            "POST /nodes/pve/lxc: Parameter verification failed. (vmid: value must have a minimum value of 100)"
        );
        let t = ProxmoxError::TaskFailed {
            upid: "U".into(),
            exitstatus: "boom".into(),
            log_tail: vec!["a".into(), "TASK ERROR: boom".into()],
        };
        assert_eq!(
            t.to_string(),
            "task U failed: boom; log tail: a | TASK ERROR: boom"
        );
    }
}
