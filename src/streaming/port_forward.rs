//! PortForward's dialer for pods on this host: a TCP connection to 127.0.0.1:port inside
//! the pod's network namespace.
//!
//! A socket belongs to the network namespace it was created in, whichever thread uses it
//! later: a short-lived thread joins the pod's namespace (setns on its own thread only),
//! creates and connects the socket there, and hands it to the runtime.

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::PathBuf;
use std::sync::Arc;

use super::session::Dialer;

/// Connects inside the network namespace at `netns` (a `/proc/<pid>/ns/net` or bind-mounted
/// namespace file); None: the host's (host-network pods).
pub(crate) fn netns_dialer(netns: Option<PathBuf>) -> Dialer {
    let netns = Arc::new(netns);
    Arc::new(move |port| {
        let netns = netns.clone();
        Box::pin(async move {
            let Some(path) = netns.as_ref().clone() else {
                let s = tokio::net::TcpStream::connect((Ipv4Addr::LOCALHOST, port)).await?;
                let _ = s.set_nodelay(true);
                return Ok(s);
            };
            let std_stream = tokio::task::spawn_blocking(move || connect_in(&path, port))
                .await
                .map_err(io::Error::other)??;
            std_stream.set_nonblocking(true)?;
            let _ = std_stream.set_nodelay(true);
            tokio::net::TcpStream::from_std(std_stream)
        })
    })
}

/// On a thread of its own (it must not come back to the host's namespace and serve other
/// tasks): joins the namespace and connects.
fn connect_in(netns: &std::path::Path, port: u16) -> io::Result<std::net::TcpStream> {
    let file = std::fs::File::open(netns).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("open the pod's network namespace {}: {e}", netns.display()),
        )
    })?;
    std::thread::Builder::new()
        .name("proxrt-pf-dial".into())
        .spawn(move || {
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(|e| io::Error::other(format!("join the pod's network namespace: {e}")))?;
            std::net::TcpStream::connect(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port))
        })?
        .join()
        .map_err(|_| io::Error::other("port-forward dial thread panicked"))?
}
