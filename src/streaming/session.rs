//! What an exec, attach or port-forward session looks like to the runtime side, whatever
//! wire protocol carried it (SPDY/3.1 in `spdy/`, WebSocket in `websocket.rs`).
//!
//! A protocol adapter turns an upgraded connection into these channels; the runtime side
//! (`exec.rs`, `attach.rs`, `port_forward.rs`) never sees frames.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::mpsc;

/// Which streams the CRI request asked for (the flags of ExecRequest / AttachRequest).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamOpts {
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

/// A terminal size from the client's resize stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TermSize {
    pub width: u16,
    pub height: u16,
}

/// The client's side of an exec or attach, as channels.
pub struct StdioStreams {
    /// The client's stdin, chunk by chunk; every sender dropped means EOF. None: the client
    /// opened no stdin stream.
    pub stdin: Option<mpsc::Receiver<Bytes>>,
    /// Bytes for the client's stdout. Sending fails once the client has gone.
    pub stdout: Option<mpsc::Sender<Bytes>>,
    /// None with a tty (the terminal carries both).
    pub stderr: Option<mpsc::Sender<Bytes>>,
    /// Terminal resizes (tty sessions only).
    pub resize: Option<mpsc::Receiver<TermSize>>,
}

/// How an exec or attach ended; sent to the client on the error stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Success,
    /// The process exited with a non-zero code.
    ExitCode(i32),
    /// The session could not run (container gone, exec failed): the message the client shows.
    Failure(String),
}

impl Outcome {
    /// The Kubernetes `metav1.Status` that the error stream carries in remotecommand
    /// v4/v5 (what kubectl and crictl decode to an exit code).
    pub fn status_json(&self) -> Vec<u8> {
        let v = match self {
            Outcome::Success => serde_json::json!({"metadata": {}, "status": "Success"}),
            Outcome::ExitCode(code) => serde_json::json!({
                "metadata": {},
                "status": "Failure",
                "message": format!("command terminated with non-zero exit code: {code}"),
                "reason": "NonZeroExitCode",
                "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
            }),
            Outcome::Failure(message) => serde_json::json!({
                "metadata": {},
                "status": "Failure",
                "message": message,
                "reason": "InternalError",
            }),
        };
        serde_json::to_vec(&v).unwrap_or_default()
    }
}

/// Opens a TCP connection to `port` on the pod's loopback, inside the pod's network
/// namespace (port-forward's data streams are spliced to what it returns).
pub type Dialer = Arc<
    dyn Fn(u16) -> Pin<Box<dyn Future<Output = io::Result<tokio::net::TcpStream>> + Send>>
        + Send
        + Sync,
>;
