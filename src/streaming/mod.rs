//! The streaming server: kubelet's Exec, Attach and PortForward sessions (the CRI calls
//! return a URL here; the client upgrades to SPDY/3.1 or WebSocket on it).

pub(crate) mod session;
pub(crate) mod spdy;
