//! SPDY/3.1, as kubelet's proxy, kubectl and crictl speak it to a CRI streaming server
//! (Kubernetes' httpstream/spdy on top of moby/spdystream): the framing (`frame`), one
//! connection's streams (`session`), and the two protocols on top: remotecommand for exec
//! and attach, and port-forward.
//!
//! The HTTP server negotiates the upgrade (`Upgrade: SPDY/3.1`, `X-Stream-Protocol-Version`)
//! and hands the upgraded connection and the chosen subprotocol here.

use std::future::Future;
use std::io;

use tokio::io::{AsyncRead, AsyncWrite};

use super::session::{Dialer, Outcome, StdioStreams, StreamOpts};

mod frame;
mod portforward;
mod remotecommand;
mod session;
#[cfg(test)]
mod tests;

/// The subprotocols this adapter serves, in the server's preference order.
pub(crate) const REMOTECOMMAND_PROTOCOLS: [&str; 4] = [
    "v4.channel.k8s.io",
    "v3.channel.k8s.io",
    "v2.channel.k8s.io",
    "channel.k8s.io",
];
pub(crate) const PORTFORWARD_PROTOCOL: &str = portforward::PROTOCOL;

/// Serves one exec or attach session on an upgraded connection; `run` gets the client's
/// streams and its Outcome is sent on the error stream before the connection closes.
pub(crate) async fn serve_remotecommand<IO, F, Fut>(
    io: IO,
    protocol: &str,
    opts: StreamOpts,
    run: F,
) -> io::Result<()>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    F: FnOnce(StdioStreams) -> Fut + Send + 'static,
    Fut: Future<Output = Outcome> + Send + 'static,
{
    remotecommand::serve(
        io,
        protocol,
        opts,
        run,
        remotecommand::STREAM_CREATION_TIMEOUT,
    )
    .await
}

/// Serves one port-forward session: each data stream is spliced to `dialer(port)`.
pub(crate) async fn serve_portforward<IO>(
    io: IO,
    protocol: &str,
    ports: Vec<u16>,
    dialer: Dialer,
) -> io::Result<()>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    portforward::serve(io, protocol, ports, dialer).await
}
