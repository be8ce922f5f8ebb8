//! systemd's `Type=notify` protocol: a test listener on `NOTIFY_SOCKET` (a real unix
//! datagram socket, by path and by abstract name) gets READY=1 once the daemon serves its
//! socket and STOPPING=1 when it is told to stop.

mod common;

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

use common::{version_answers, TestDaemon};

fn receive(listener: &UnixDatagram) -> String {
    let mut buf = [0u8; 4096];
    let n = listener
        .recv(&mut buf)
        .expect("a notification within the timeout");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

fn ready_then_stopping(listener: &UnixDatagram, notify_socket: &str) {
    listener
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut d = TestDaemon::start_with_env("", &[("NOTIFY_SOCKET", notify_socket)]);
    // TestDaemon::start returns once Version answers; READY=1 was sent before that.
    let ready = receive(listener);
    assert!(ready.lines().any(|l| l == "READY=1"), "{ready:?}");
    assert!(ready.contains(&d.socket.display().to_string()), "{ready:?}");
    assert!(version_answers(&d.endpoint()));

    let (status, killed) = d.stop();
    assert!(status.success() && !killed, "{status}");
    let stopping = receive(listener);
    assert!(stopping.lines().any(|l| l == "STOPPING=1"), "{stopping:?}");
}

#[test]
fn ready_and_stopping_reach_a_path_socket() {
    let dir = common::temp_dir("proxrt-notify-");
    let path = dir.path().join("notify.sock");
    let listener = UnixDatagram::bind(&path).expect("bind the notify socket");
    ready_then_stopping(&listener, &path.display().to_string());
}

#[test]
fn ready_and_stopping_reach_an_abstract_socket() {
    use std::os::linux::net::SocketAddrExt as _;
    let name = format!("proxrt-test-notify-{}", common::random_hex(8));
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let listener = UnixDatagram::bind_addr(&addr).expect("bind the abstract notify socket");
    ready_then_stopping(&listener, &format!("@{name}"));
}
