//! The streaming server: kubelet's Exec, Attach and PortForward sessions (the CRI calls
//! return a URL here; the client upgrades to SPDY/3.1 or WebSocket on it).

mod idle;
pub(crate) mod port_forward;
pub(crate) mod pump;
pub mod server;
pub mod session;
pub(crate) mod spdy;
pub(crate) mod task;
pub(crate) mod tokens;
pub(crate) mod websocket;

pub use server::{Streaming, StreamingError};
