//! Messages between the daemon, the zygote, monitors and sandbox setup processes.
//!
//! - daemon ⇄ zygote: one SOCK_SEQPACKET datagram per message, `u32 LE length ‖ JSON`;
//!   a `Forked` reply carries the daemon's end of the new report socket (SCM_RIGHTS).
//! - monitor/sandbox → daemon on the report socket (SOCK_STREAM): one `u32 LE length ‖ JSON`
//!   `Report`, answered by the single byte `ACK` when the daemon has taken ownership.
//! - client → monitor on `monitor.sock`: one JSON line per connection (`MonitorRequest`),
//!   answered by one JSON line (`MonitorReply`); an exec reply is followed by the raw
//!   stdout then stderr bytes whose lengths the header gives.

use std::io::{self, Write};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::sandbox::{SandboxCreated, SandboxRequest};
use super::zygote::CreateRequest;
use super::MonitorError;

/// Largest frame on the zygote socket (one SOCK_SEQPACKET datagram, which must fit the
/// socket's send buffer) and on report sockets.
pub(crate) const MAX_FRAME: usize = 64 * 1024;
/// Largest request line a monitor accepts from a client.
pub(crate) const MAX_REQUEST_LINE: usize = 1 << 20;
/// The daemon's acknowledgement of a report.
pub(crate) const ACK: u8 = b'k';
/// How long a forked child waits for the daemon's `ACK` before it undoes its work.
pub(crate) const ACK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// The child's side of the create/acknowledge exchange: whether the daemon sent `ACK`
/// on `report` within `ACK_TIMEOUT` (a closed socket or silence means it went away).
pub(crate) fn acknowledged(report: &mut std::os::unix::net::UnixStream) -> bool {
    use std::io::Read;
    use std::os::fd::AsRawFd;
    match super::process::poll_one(report.as_raw_fd(), libc::POLLIN, Some(ACK_TIMEOUT)) {
        Ok(true) => {
            let mut byte = [0u8; 1];
            matches!(report.read(&mut byte), Ok(1) if byte[0] == ACK)
        }
        _ => false,
    }
}

#[derive(Serialize, Deserialize, Debug)]
#[serde(rename_all = "snake_case", tag = "op")]
pub(crate) enum ZygoteRequest {
    Create { seq: u64, req: CreateRequest },
    Sandbox { seq: u64, req: SandboxRequest },
}

#[derive(Serialize, Deserialize, Debug)]
#[serde(rename_all = "snake_case", tag = "result")]
pub(crate) enum ZygoteReply {
    /// The child was forked; its report socket is attached.
    Forked {
        seq: u64,
    },
    Error {
        seq: u64,
        message: String,
    },
}

impl ZygoteReply {
    pub(crate) fn seq(&self) -> u64 {
        match self {
            ZygoteReply::Forked { seq } | ZygoteReply::Error { seq, .. } => *seq,
        }
    }
}

/// Who is to blame for a failure, so the daemon can pick the gRPC code.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Fault {
    /// The request or its spec is malformed.
    Invalid,
    /// The container is in the wrong state for the request.
    State,
    /// Everything else.
    Internal,
}

#[derive(Serialize, Deserialize, Debug)]
#[serde(rename_all = "snake_case", tag = "result")]
pub(crate) enum Report {
    Created { init_pid: i32, monitor_pid: i32 },
    Sandbox(SandboxCreated),
    Failed { message: String, fault: Fault },
}

#[derive(Serialize, Deserialize, Debug)]
#[serde(rename_all = "snake_case", tag = "op")]
pub(crate) enum MonitorRequest {
    Start,
    Signal {
        signal: i32,
    },
    Wait,
    Exec {
        args: Vec<String>,
        timeout_ms: Option<u64>,
    },
    /// A streaming exec (CRI Exec): answered by `ExecStarted` carrying the daemon's ends
    /// of the process's stdio, then `ExecExited` when it exits.
    ExecStream {
        args: Vec<String>,
        tty: bool,
        stdin: bool,
        stdout: bool,
        stderr: bool,
    },
    ReopenLog,
}

/// Which fds an `ExecStarted` reply carries (SCM_RIGHTS, in this order: stdin, stdout,
/// stderr, pty; those that are true).
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct ExecFds {
    /// The write end of the process's stdin pipe.
    pub stdin: bool,
    /// The read end of its stdout pipe.
    pub stdout: bool,
    /// The read end of its stderr pipe.
    pub stderr: bool,
    /// The master side of its terminal (stdin, stdout and stderr at once).
    pub pty: bool,
}

impl ExecFds {
    pub(crate) fn count(&self) -> usize {
        [self.stdin, self.stdout, self.stderr, self.pty]
            .iter()
            .filter(|b| **b)
            .count()
    }
}

#[derive(Serialize, Deserialize, Debug)]
#[serde(rename_all = "snake_case", tag = "result")]
pub(crate) enum MonitorReply {
    Ok,
    /// The container has exited and status.json is final.
    Exited,
    /// Followed on the connection by `stdout_len` then `stderr_len` raw bytes.
    Exec {
        exit_code: i32,
        timed_out: bool,
        stdout_len: usize,
        stderr_len: usize,
    },
    /// A streaming exec runs; the fds are attached to this line.
    ExecStarted {
        fds: ExecFds,
    },
    /// A streaming exec's process exited (status, or 128 + the signal).
    ExecExited {
        exit_code: i32,
    },
    Error {
        message: String,
        fault: Fault,
    },
}

impl MonitorReply {
    pub(crate) fn error(fault: Fault, message: impl Into<String>) -> Self {
        MonitorReply::Error {
            message: message.into(),
            fault,
        }
    }
}

/// `u32 LE length ‖ JSON`.
pub(crate) fn encode_frame<T: Serialize>(value: &T) -> Vec<u8> {
    // Serializing these plain structs cannot fail.
    let json = serde_json::to_vec(value).unwrap_or_default();
    let mut out = Vec::with_capacity(json.len() + 4);
    out.extend_from_slice(&(json.len() as u32).to_le_bytes());
    out.extend_from_slice(&json);
    out
}

/// Decodes a whole frame (one datagram).
pub(crate) fn decode_frame<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, MonitorError> {
    if bytes.len() < 4 {
        return Err(MonitorError::Protocol(format!(
            "short frame ({} bytes)",
            bytes.len()
        )));
    }
    let len = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
    if len != bytes.len() - 4 {
        return Err(MonitorError::Protocol(format!(
            "frame says {len} bytes, carries {}",
            bytes.len() - 4
        )));
    }
    serde_json::from_slice(&bytes[4..]).map_err(|e| MonitorError::Protocol(e.to_string()))
}

/// Writes one frame to a blocking stream.
pub(crate) fn write_frame<T: Serialize>(w: &mut impl Write, value: &T) -> io::Result<()> {
    w.write_all(&encode_frame(value))
}

/// Reads one frame from a blocking stream.
#[cfg(test)]
pub(crate) fn read_frame<T: DeserializeOwned>(
    r: &mut impl std::io::Read,
) -> Result<T, MonitorError> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len)
        .map_err(|e| MonitorError::io("read frame length", e))?;
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(MonitorError::Protocol(format!("frame of {len} bytes")));
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body)
        .map_err(|e| MonitorError::io("read frame", e))?;
    serde_json::from_slice(&body).map_err(|e| MonitorError::Protocol(e.to_string()))
}

/// One JSON line.
pub(crate) fn encode_line<T: Serialize>(value: &T) -> Vec<u8> {
    let mut out = serde_json::to_vec(value).unwrap_or_default();
    out.push(b'\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_reject_bad_lengths() {
        let frame = encode_frame(&ZygoteReply::Forked { seq: 7 });
        let back: ZygoteReply = decode_frame(&frame).unwrap();
        assert_eq!(back.seq(), 7);
        assert!(decode_frame::<ZygoteReply>(&frame[..frame.len() - 1]).is_err());
        assert!(decode_frame::<ZygoteReply>(&frame[..2]).is_err());

        let mut cursor = io::Cursor::new(encode_frame(&Report::Created {
            init_pid: 5,
            monitor_pid: 6,
        }));
        let report: Report = read_frame(&mut cursor).unwrap();
        assert!(matches!(
            report,
            Report::Created {
                init_pid: 5,
                monitor_pid: 6
            }
        ));
    }

    #[test]
    fn requests_are_one_json_line() {
        let line = encode_line(&MonitorRequest::Exec {
            args: vec!["ls".into()],
            timeout_ms: Some(5),
        });
        assert_eq!(line.iter().filter(|&&b| b == b'\n').count(), 1);
        let text = std::str::from_utf8(&line).unwrap();
        assert!(text.contains(r#""op":"exec""#), "{text}");
        let back: MonitorRequest = serde_json::from_slice(&line).unwrap();
        assert!(matches!(
            back,
            MonitorRequest::Exec {
                timeout_ms: Some(5),
                ..
            }
        ));
    }
}
