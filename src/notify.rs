//! systemd's readiness protocol (sd_notify(3)) for `Type=notify`: one datagram per state
//! change to the unix socket named by `$NOTIFY_SOCKET` (a path, or `@name` for an
//! abstract socket). Without the variable (not started by systemd) nothing is sent.

use std::ffi::OsString;
use std::os::unix::net::UnixDatagram;

/// Where the daemon's state changes go; taken from the environment once, at startup.
#[derive(Debug, Default)]
pub struct Notifier {
    socket: Option<OsString>,
}

impl Notifier {
    /// Takes `$NOTIFY_SOCKET` and removes it from the environment, as sd_notify's
    /// `unset_environment` does: crun, which proxrt runs, would otherwise take it as its
    /// own and hand it to containers. Call while the process has one thread.
    pub fn from_env() -> Notifier {
        let socket = std::env::var_os("NOTIFY_SOCKET").filter(|s| !s.is_empty());
        if socket.is_some() {
            // Racy only against other threads touching the environment: there are none yet.
            std::env::remove_var("NOTIFY_SOCKET");
        }
        Notifier { socket }
    }

    /// A notifier for `socket` (tests).
    pub fn to(socket: impl Into<OsString>) -> Notifier {
        Notifier {
            socket: Some(socket.into()),
        }
    }

    /// The daemon serves its socket.
    pub fn ready(&self, status: &str) {
        self.send(&format!("READY=1\nSTATUS={status}\n"));
    }

    /// The daemon is shutting down.
    pub fn stopping(&self) {
        self.send("STOPPING=1\nSTATUS=shutting down\n");
    }

    /// A failed notification is logged and otherwise ignored: systemd will time the
    /// start out, which says more than a daemon refusing to run would.
    fn send(&self, state: &str) {
        let Some(socket) = &self.socket else {
            return;
        };
        if let Err(e) = send_to(socket, state) {
            tracing::warn!(socket = ?socket, error = %e, "sd_notify");
        }
    }
}

fn send_to(socket: &OsString, state: &str) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt as _;
    let sock = UnixDatagram::unbound()?;
    let bytes = socket.as_bytes();
    let sent = match bytes.strip_prefix(b"@") {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt as _;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
            sock.send_to_addr(state.as_bytes(), &addr)?
        }
        None => sock.send_to(state.as_bytes(), socket)?,
    };
    if sent != state.len() {
        return Err(std::io::Error::other(format!(
            "sent {sent} of {} bytes",
            state.len()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn abstract_and_path_sockets_receive_the_state() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let listener = UnixDatagram::bind(&path).unwrap();
        Notifier::to(&path).ready("serving");
        let mut buf = [0u8; 256];
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1\nSTATUS=serving\n");

        use std::os::linux::net::SocketAddrExt as _;
        let name = format!("proxrt-notify-test-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let listener = UnixDatagram::bind_addr(&addr).unwrap();
        Notifier::to(format!("@{name}")).stopping();
        let n = listener.recv(&mut buf).unwrap();
        assert!(buf[..n].starts_with(b"STOPPING=1\n"));
    }

    #[test]
    fn no_socket_sends_nothing() {
        Notifier::default().ready("x");
    }
}
