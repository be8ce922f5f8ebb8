//! Messages between the daemon, the zygote, monitors and sandbox setup processes.
//!
//! - daemon ⇄ zygote: one SOCK_SEQPACKET datagram per message, `u32 LE length ‖ JSON`;
//!   a `Forked` reply carries the daemon's end of the new report socket (SCM_RIGHTS).
//! - monitor/sandbox → daemon on the report socket (SOCK_STREAM): one `u32 LE length ‖ JSON`
//!   `Report`, answered by the single byte `ACK` when the daemon has taken ownership.
//! - client → monitor on `monitor.sock`: one JSON line per connection (`MonitorRequest`),
//!   answered by one JSON line (`MonitorReply`); an exec reply is followed by the raw
//!   stdout then stderr bytes whose lengths the header gives. An attach reply (`Ok`) is
//!   followed by attach frames in both directions for as long as the session lasts
//!   ([`AttachFrame`]).

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

/// The mount namespace a container was created in (`container/view.rs`).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum CreateViewKind {
    /// The host's own: the daemon's pods dir is not a mount of its own.
    #[default]
    Host,
    /// A copy of the host's without the pods dir; `template_unfit`: why the create
    /// template did not serve, when there was one.
    Copy { template_unfit: Option<String> },
    /// A copy of the zygote's create template, what the spec names cloned into it.
    Template,
}

impl CreateViewKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            CreateViewKind::Host => "host",
            CreateViewKind::Copy { .. } => "copy",
            CreateViewKind::Template => "template",
        }
    }
}

#[derive(Serialize, Deserialize, Debug)]
#[serde(rename_all = "snake_case", tag = "result")]
pub(crate) enum Report {
    Created {
        init_pid: i32,
        monitor_pid: i32,
        #[serde(default)]
        view: CreateViewKind,
        /// The monitor was the zygote's spare (`spare.rs`), not forked for this create.
        #[serde(default)]
        spare: bool,
    },
    Sandbox(SandboxCreated),
    Failed {
        message: String,
        fault: Fault,
    },
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
    /// Joins the container's stdio: the `Ok` reply is followed by [`AttachFrame`]s.
    /// Output the client did not ask for is not sent; `stdin` is ignored when the
    /// container has no stdin.
    Attach {
        stdin: bool,
        stdout: bool,
        stderr: bool,
    },
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

/// One frame of an attach session: `kind u8 ‖ length u32 LE ‖ payload`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum AttachFrame {
    /// client → monitor: bytes for the container's stdin (or terminal).
    Stdin(Vec<u8>),
    /// client → monitor: the client's stdin ended.
    StdinEof,
    /// client → monitor: the terminal's new size (tty containers).
    Resize {
        width: u16,
        height: u16,
    },
    /// monitor → client: container output.
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
    /// monitor → client: the container has exited and all its output was sent; the
    /// monitor closes the connection after this frame.
    Exited,
}

/// Largest payload of one attach frame (output is sent in chunks of at most this).
pub(crate) const MAX_ATTACH_PAYLOAD: usize = 64 * 1024;
const ATTACH_HEADER: usize = 5;

impl AttachFrame {
    /// Appends the frame's bytes to `out`.
    pub(crate) fn encode_into(&self, out: &mut Vec<u8>) {
        let size;
        let (kind, data): (u8, &[u8]) = match self {
            AttachFrame::Stdin(d) => (0, d),
            AttachFrame::Stdout(d) => (1, d),
            AttachFrame::Stderr(d) => (2, d),
            AttachFrame::Exited => (3, &[]),
            AttachFrame::StdinEof => (4, &[]),
            AttachFrame::Resize { width, height } => {
                size = [width.to_le_bytes(), height.to_le_bytes()].concat();
                (5, &size)
            }
        };
        out.push(kind);
        out.extend_from_slice(&(data.len() as u32).to_le_bytes());
        out.extend_from_slice(data);
    }

    /// An output frame of `stream` (0 stdout, 1 stderr) carrying `data`.
    pub(crate) fn encode_output(stream: usize, data: &[u8], out: &mut Vec<u8>) {
        out.push(if stream == 0 { 1 } else { 2 });
        out.extend_from_slice(&(data.len() as u32).to_le_bytes());
        out.extend_from_slice(data);
    }

    /// Decodes the frame at the start of `buf`: None while it is incomplete, else the frame
    /// and how many bytes it took. An unknown kind or an oversize frame is an error.
    pub(crate) fn decode(buf: &[u8]) -> Result<Option<(AttachFrame, usize)>, String> {
        if buf.len() < ATTACH_HEADER {
            return Ok(None);
        }
        let len = u32::from_le_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
        if len > MAX_ATTACH_PAYLOAD {
            return Err(format!("attach frame of {len} bytes"));
        }
        let Some(data) = buf.get(ATTACH_HEADER..ATTACH_HEADER + len) else {
            return Ok(None);
        };
        let frame = match buf[0] {
            0 => AttachFrame::Stdin(data.to_vec()),
            1 => AttachFrame::Stdout(data.to_vec()),
            2 => AttachFrame::Stderr(data.to_vec()),
            3 => AttachFrame::Exited,
            4 => AttachFrame::StdinEof,
            5 if len == 4 => AttachFrame::Resize {
                width: u16::from_le_bytes([data[0], data[1]]),
                height: u16::from_le_bytes([data[2], data[3]]),
            },
            kind => return Err(format!("attach frame of kind {kind} and {len} bytes")),
        };
        Ok(Some((frame, ATTACH_HEADER + len)))
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
            view: CreateViewKind::Copy {
                template_unfit: Some("why".into()),
            },
            spare: true,
        }));
        let report: Report = read_frame(&mut cursor).unwrap();
        assert!(matches!(
            report,
            Report::Created {
                init_pid: 5,
                monitor_pid: 6,
                view: CreateViewKind::Copy {
                    template_unfit: Some(ref why),
                },
                spare: true,
            } if why == "why"
        ));
    }

    #[test]
    fn attach_frames_round_trip_split_anywhere() {
        let frames = vec![
            AttachFrame::Stdin(b"hello".to_vec()),
            AttachFrame::StdinEof,
            AttachFrame::Resize {
                width: 132,
                height: 43,
            },
            AttachFrame::Stdout(vec![7; 1000]),
            AttachFrame::Stderr(Vec::new()),
            AttachFrame::Exited,
        ];
        let mut wire = Vec::new();
        for f in &frames {
            f.encode_into(&mut wire);
        }
        let mut out = Vec::new();
        AttachFrame::encode_output(1, b"err", &mut out);
        assert_eq!(
            AttachFrame::decode(&out).unwrap(),
            Some((AttachFrame::Stderr(b"err".to_vec()), out.len()))
        );
        // Fed in pieces of every size, the same frames come out.
        for step in [1, 3, 7, 4096] {
            let (mut buf, mut got) = (Vec::new(), Vec::new());
            for piece in wire.chunks(step) {
                buf.extend_from_slice(piece);
                while let Some((f, n)) = AttachFrame::decode(&buf).unwrap() {
                    got.push(f);
                    buf.drain(..n);
                }
            }
            assert_eq!(got, frames, "step {step}");
        }
    }

    #[test]
    fn bad_attach_frames_are_errors() {
        assert!(AttachFrame::decode(&[9, 0, 0, 0, 0]).is_err());
        assert!(AttachFrame::decode(&[5, 3, 0, 0, 0, 1, 2, 3]).is_err());
        let huge = ((MAX_ATTACH_PAYLOAD + 1) as u32).to_le_bytes();
        assert!(AttachFrame::decode(&[0, huge[0], huge[1], huge[2], huge[3]]).is_err());
        assert_eq!(AttachFrame::decode(&[0, 2, 0, 0, 0, 1]).unwrap(), None);
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
