//! The streaming server against a real daemon, driven by a client that is not proxrt's own
//! (tests/interop/ws_stream.py: Debian's python3-websocket speaking Kubernetes' channel
//! protocol): Exec with and without a terminal, stdin, exit codes in the error stream's
//! Status, resizes; PortForward into a pod's own network namespace and a host-network
//! pod's; URLs that are single-use; the errors the CRI calls give before any URL exists.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::pods::*;
use common::{assert_code, output_within};
use k8s_cri::v1::{AttachRequest, ExecRequest, NamespaceMode, PortForwardRequest};
use serde_json::Value;
use tonic::Code;

const CLIENT_TIMEOUT: Duration = Duration::from_secs(90);

fn client() -> Command {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/ws_stream.py");
    let probe = Command::new("/usr/bin/python3")
        .args(["-c", "import websocket"])
        .output();
    assert!(
        probe.is_ok_and(|o| o.status.success()),
        "python3 cannot import websocket: run hack/setup (Debian python3-websocket)"
    );
    let mut c = Command::new("/usr/bin/python3");
    c.arg(script).args(["--timeout", "60"]);
    c
}

/// Runs the Python client; its JSON answer.
fn run_client(env: &PodEnv, args: &[&str]) -> Value {
    let out = output_within(client().args(args), CLIENT_TIMEOUT);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "ws_stream.py {args:?}: {}\n{stdout}\n{}\n---- daemon log ----\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        env.daemon().log()
    );
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

fn exec_request(id: &str, cmd: &[&str], stdin: bool, tty: bool) -> ExecRequest {
    ExecRequest {
        container_id: id.into(),
        cmd: cmd.iter().map(|s| s.to_string()).collect(),
        tty,
        stdin,
        stdout: true,
        stderr: !tty,
    }
}

async fn exec_url(env: &mut PodEnv, req: ExecRequest) -> String {
    env.cri
        .runtime
        .exec(req)
        .await
        .unwrap_or_else(|s| panic!("Exec: {s:?}\n{}", env.daemon().log()))
        .into_inner()
        .url
}

/// A pod with its own network namespace (loopback CNI) and a long-running busybox.
async fn running(env: &mut PodEnv, name: &str) -> (Pod, String) {
    let pod = env.run_pod(env.pod_config(name)).await;
    let c = env.container_config(&pod, "main", &["sleep", "3600"]);
    let id = env.create_start(&pod, c).await;
    (pod, id)
}

async fn teardown(env: &mut PodEnv, pod: &Pod) {
    env.stop_pod(&pod.id).await.expect("StopPodSandbox");
    env.remove_pod(&pod.id).await.expect("RemovePodSandbox");
}

/// The exit code a remotecommand v4/v5 Status carries (0 for Success).
fn status_exit_code(status: &Value) -> i64 {
    match status["status"].as_str() {
        Some("Success") => 0,
        _ => {
            assert_eq!(status["reason"], "NonZeroExitCode", "{status}");
            let cause = &status["details"]["causes"][0];
            assert_eq!(cause["reason"], "ExitCode", "{status}");
            cause["message"].as_str().unwrap().parse().unwrap()
        }
    }
}

#[tokio::test]
async fn exec_without_a_tty_keeps_streams_apart_and_reports_the_exit_code() {
    let mut env = PodEnv::start().await;
    let (pod, id) = running(&mut env, "exec-pipes").await;

    // stdin reaches `cat`; v5 closes it; stdout and stderr arrive apart; exit 3.
    let script = "cat; echo to-stderr >&2; exit 3";
    let url = exec_url(
        &mut env,
        exec_request(&id, &["sh", "-c", script], true, false),
    )
    .await;
    let r = run_client(
        &env,
        &[
            "exec",
            &url,
            "--stdin",
            "hello from python\n",
            "--close-stdin",
        ],
    );
    assert_eq!(r["protocol"], "v5.channel.k8s.io");
    assert_eq!(r["stdout"], "hello from python\n");
    assert_eq!(r["stderr"], "to-stderr\n");
    assert_eq!(status_exit_code(&r["error"]), 3, "{r}");

    // Success is a Status too; v4 (no stream close) works for a command without stdin.
    let url = exec_url(&mut env, exec_request(&id, &["echo", "fine"], false, false)).await;
    let r = run_client(&env, &["exec", &url, "--protocol", "v4.channel.k8s.io"]);
    assert_eq!(r["protocol"], "v4.channel.k8s.io");
    assert_eq!(r["stdout"], "fine\n");
    assert_eq!(r["error"]["status"], "Success", "{r}");

    // A command that does not exist: the session says why (the CRI call could not know).
    let url = exec_url(
        &mut env,
        exec_request(&id, &["no-such-binary"], false, false),
    )
    .await;
    let r = run_client(&env, &["exec", &url]);
    assert_eq!(r["error"]["status"], "Failure", "{r}");
    assert!(
        r["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no-such-binary"),
        "{r}"
    );
    teardown(&mut env, &pod).await;
}

#[tokio::test]
async fn exec_with_a_tty_applies_the_clients_terminal_size() {
    let mut env = PodEnv::start().await;
    let (pod, id) = running(&mut env, "exec-tty").await;
    // The size is sent before the line `read` waits for.
    let script = "read line; stty size; [ -t 0 ] && [ -t 2 ] && echo is-a-tty; exit 7";
    let url = exec_url(
        &mut env,
        exec_request(&id, &["sh", "-c", script], true, true),
    )
    .await;
    let r = run_client(
        &env,
        &["exec", &url, "--resize", "123x45", "--stdin", "go\n"],
    );
    let stdout = r["stdout"].as_str().unwrap();
    assert!(stdout.contains("45 123"), "{r}");
    assert!(stdout.contains("is-a-tty"), "{r}");
    // A terminal's output has CRLF line ends; stderr is the terminal too.
    assert!(stdout.contains("45 123\r\n"), "{r}");
    assert_eq!(r["stderr"], "", "{r}");
    assert_eq!(status_exit_code(&r["error"]), 7, "{r}");
    teardown(&mut env, &pod).await;
}

/// Sends an upgrade request for `url` by hand; the status code and body.
fn raw_upgrade(url: &str, headers: &str) -> (u16, String) {
    let rest = url.strip_prefix("http://").expect("http URL");
    let (host, path) = rest.split_once('/').expect("a path");
    let mut s = TcpStream::connect(host).expect("connect to the streaming server");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(s, "GET /{path} HTTP/1.1\r\nHost: {host}\r\n{headers}\r\n").unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    // Read the head and whatever body came with it.
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                answer.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&answer);
                if let Some((head, body)) = text.split_once("\r\n\r\n") {
                    let len = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                        })
                        .unwrap_or(0);
                    if body.len() >= len {
                        break;
                    }
                }
            }
        }
    }
    let text = String::from_utf8_lossy(&answer).into_owned();
    let code = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (code, body)
}

const WS_HEADERS: &str = "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: v5.channel.k8s.io\r\n";

#[tokio::test]
async fn urls_are_single_use_and_bad_requests_do_not_burn_them() {
    let mut env = PodEnv::start().await;
    let (pod, id) = running(&mut env, "exec-tokens").await;
    let url = exec_url(&mut env, exec_request(&id, &["true"], false, false)).await;

    // No upgrade, a wrong method: 400, and the URL is still good.
    let (code, body) = raw_upgrade(&url, "");
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("must be upgraded"), "{body}");
    // An unknown token, a token on the wrong route: 404.
    let (base, _token) = url.rsplit_once('/').unwrap();
    let (code, body) = raw_upgrade(&format!("{base}/0123456789abcdef"), WS_HEADERS);
    assert_eq!(code, 404, "{body}");
    assert!(body.contains("used already, or expired"), "{body}");

    let r = run_client(&env, &["exec", &url]);
    assert_eq!(r["error"]["status"], "Success", "{r}");
    // Used once: gone.
    let (code, body) = raw_upgrade(&url, WS_HEADERS);
    assert_eq!(code, 404, "{body}");
    teardown(&mut env, &pod).await;
}

#[tokio::test]
async fn exec_refuses_at_the_cri_call_what_cannot_run() {
    let mut env = PodEnv::start().await;
    let (pod, id) = running(&mut env, "exec-errors").await;
    let created = env
        .create(&pod, env.container_config(&pod, "idle", &["sleep", "3600"]))
        .await
        .expect("CreateContainer");

    let r = env
        .cri
        .runtime
        .exec(exec_request("no-such-container", &["true"], false, false))
        .await;
    assert_code(r, Code::NotFound, "Exec on a missing container");
    let r = env
        .cri
        .runtime
        .exec(exec_request(&created, &["true"], false, false))
        .await;
    let s = assert_code(r, Code::FailedPrecondition, "Exec on a created container");
    assert!(s.message().contains("running"), "{s:?}");
    let mut none = exec_request(&id, &["true"], false, false);
    none.stdout = false;
    none.stderr = false;
    let r = env.cri.runtime.exec(none).await;
    assert_code(r, Code::InvalidArgument, "Exec with no stream");
    let mut both = exec_request(&id, &["true"], false, true);
    both.stderr = true;
    let r = env.cri.runtime.exec(both).await;
    assert_code(r, Code::InvalidArgument, "Exec with tty and stderr");
    let r = env
        .cri
        .runtime
        .exec(exec_request(&id, &[], false, false))
        .await;
    assert_code(r, Code::InvalidArgument, "Exec with no command");

    let r = env
        .cri
        .runtime
        .port_forward(PortForwardRequest {
            pod_sandbox_id: "no-such-pod".into(),
            port: vec![80],
        })
        .await;
    assert_code(r, Code::NotFound, "PortForward to a missing pod");
    let r = env
        .cri
        .runtime
        .port_forward(PortForwardRequest {
            pod_sandbox_id: pod.id.clone(),
            port: vec![70000],
        })
        .await;
    assert_code(r, Code::InvalidArgument, "PortForward to port 70000");
    teardown(&mut env, &pod).await;
    let r = env
        .cri
        .runtime
        .port_forward(PortForwardRequest {
            pod_sandbox_id: pod.id.clone(),
            port: vec![80],
        })
        .await;
    assert_code(r, Code::NotFound, "PortForward to a removed pod");
}

/// busybox httpd serving `page` on 127.0.0.1:`port` in the container's network namespace.
fn httpd(port: u16, page: &str) -> String {
    format!(
        "mkdir -p /tmp/www && echo {page} > /tmp/www/index.html && \
         exec httpd -f -p 127.0.0.1:{port} -h /tmp/www"
    )
}

async fn wait_served(env: &mut PodEnv, id: &str, port: u16, page: &str) {
    let url = format!("http://127.0.0.1:{port}/");
    for _ in 0..200 {
        if let Ok(r) = env.try_exec(id, &["wget", "-q", "-O-", &url], 10).await {
            if String::from_utf8_lossy(&r.stdout).contains(page) {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("httpd in {id} never served {url}\n{}", env.daemon().log());
}

async fn port_forward_url(env: &mut PodEnv, pod: &Pod, port: u16) -> String {
    env.cri
        .runtime
        .port_forward(PortForwardRequest {
            pod_sandbox_id: pod.id.clone(),
            port: vec![i32::from(port)],
        })
        .await
        .unwrap_or_else(|s| panic!("PortForward: {s:?}\n{}", env.daemon().log()))
        .into_inner()
        .url
}

#[tokio::test]
async fn port_forward_reaches_the_pods_own_loopback() {
    let mut env = PodEnv::start().await;
    let pod = env.run_pod(env.pod_config("pf-netns")).await;
    let page = format!("pod-page-{}", std::process::id());
    let c = env.container_config(&pod, "web", &["sh", "-c", &httpd(8080, &page)]);
    let id = env.create_start(&pod, c).await;
    wait_served(&mut env, &id, 8080, &page).await;

    let url = port_forward_url(&mut env, &pod, 8080).await;
    let request = "GET / HTTP/1.0\r\n\r\n";
    let r = run_client(
        &env,
        &[
            "portforward",
            &url,
            "8080",
            "--send",
            request,
            "--expect",
            &page,
        ],
    );
    assert_eq!(r["prefixes"]["0"], 8080, "{r}");
    assert_eq!(r["prefixes"]["1"], 8080, "{r}");
    assert!(r["data"].as_str().unwrap().contains(&page), "{r}");

    // Nothing listens on 8081 in the pod: the error channel says so.
    let url = port_forward_url(&mut env, &pod, 8081).await;
    let r = run_client(
        &env,
        &[
            "portforward",
            &url,
            "8081",
            "--send",
            request,
            "--expect",
            &page,
        ],
    );
    assert!(r["error"].as_str().unwrap().contains("8081"), "{r}");
    assert!(!r["data"].as_str().unwrap().contains(&page), "{r}");
    teardown(&mut env, &pod).await;
}

#[tokio::test]
async fn port_forward_reaches_a_host_network_pods_port() {
    let mut env = PodEnv::start().await;
    let mut config = env.pod_config("pf-host");
    pod_security(&mut config)
        .namespace_options
        .as_mut()
        .unwrap()
        .network = NamespaceMode::Node as i32;
    let pod = env.run_pod(config).await;
    // A free port on the host's loopback.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let page = format!("host-page-{}", std::process::id());
    let mut c = env.container_config(&pod, "web", &["sh", "-c", &httpd(port, &page)]);
    security(&mut c).namespace_options.as_mut().unwrap().network = NamespaceMode::Node as i32;
    let id = env.create_start(&pod, c).await;
    wait_served(&mut env, &id, port, &page).await;

    let url = port_forward_url(&mut env, &pod, port).await;
    let r = run_client(
        &env,
        &[
            "portforward",
            &url,
            &port.to_string(),
            "--send",
            "GET / HTTP/1.0\r\n\r\n",
            "--expect",
            &page,
        ],
    );
    assert!(r["data"].as_str().unwrap().contains(&page), "{r}");
    teardown(&mut env, &pod).await;
}

// ----- Attach -----

fn attach_request(id: &str, stdin: bool, tty: bool) -> AttachRequest {
    AttachRequest {
        container_id: id.into(),
        tty,
        stdin,
        stdout: true,
        stderr: !tty,
    }
}

async fn attach_url(env: &mut PodEnv, req: AttachRequest) -> String {
    env.cri
        .runtime
        .attach(req)
        .await
        .unwrap_or_else(|s| panic!("Attach: {s:?}\n{}", env.daemon().log()))
        .into_inner()
        .url
}

/// Starts the Python client attached to `url` in the background; returns once its
/// session is up (it says "connected" on stderr).
fn spawn_attached(url: &str, extra: &[&str]) -> std::process::Child {
    use std::io::BufRead;
    let mut child = spawn_piped(
        client().args(["attach", url]).args(extra),
        std::process::Stdio::null(),
    );
    let mut line = String::new();
    let mut err = std::io::BufReader::new(child.stderr.take().unwrap());
    err.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "connected", "ws_stream.py attach: {line}");
    child
}

/// Waits for a background client (its own waits are bounded by --timeout) and parses its
/// JSON answer. Its stdout is read first: a large answer would fill the pipe.
fn finish_client(mut child: std::process::Child) -> Value {
    let mut stdout = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "ws_stream.py attach: {status}: {stdout}");
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

#[tokio::test]
async fn attach_feeds_stdin_and_stdin_once_closes_it_after_the_first_session() {
    let mut env = PodEnv::start().await;
    let pod = env.run_pod(env.pod_config("attach-once")).await;
    let mut cfg = env.container_config(&pod, "cat", &["sh", "-c", "cat; echo stdin-closed"]);
    cfg.stdin = true;
    cfg.stdin_once = true;
    let log = pod.log_path(&cfg);
    let id = env.create_start(&pod, cfg).await;

    // The session outlives its stdin (stdin_once, no tty): cat reads EOF, the shell goes
    // on, and the session ends with the container.
    let url = attach_url(&mut env, attach_request(&id, true, false)).await;
    let r = run_client(
        &env,
        &[
            "attach",
            &url,
            "--step",
            "send:hello from python\n",
            "--step",
            "expect:hello from python\n",
            "--step",
            "close-stdin",
        ],
    );
    assert_eq!(r["stdout"], "hello from python\nstdin-closed\n", "{r}");
    assert_eq!(r["error"]["status"], "Success", "{r}");
    let st = env.wait_exit(&id).await;
    assert_eq!(st.exit_code, 0, "{st:?}");
    let records = read_log(&log);
    assert_eq!(
        log_lines(&records, "stdout"),
        ["hello from python", "stdin-closed"]
    );
    // An exited container cannot be attached to.
    let r = env
        .cri
        .runtime
        .attach(attach_request(&id, true, false))
        .await;
    assert_code(r, Code::FailedPrecondition, "Attach to an exited container");
    teardown(&mut env, &pod).await;
}

#[tokio::test]
async fn attach_to_a_tty_container_drives_its_shell_and_resizes_the_terminal() {
    let mut env = PodEnv::start().await;
    let pod = env.run_pod(env.pod_config("attach-tty")).await;
    let mut cfg = env.container_config(&pod, "sh", &["sh"]);
    cfg.stdin = true;
    cfg.tty = true;
    let log = pod.log_path(&cfg);
    let id = env.create_start(&pod, cfg).await;

    let url = attach_url(&mut env, attach_request(&id, true, true)).await;
    let r = run_client(
        &env,
        &[
            "attach",
            &url,
            "--step",
            "send:stty size; tty\n",
            "--step",
            "expect:24 80\r\n",
            "--step",
            "expect:/dev/pts/",
            "--step",
            "resize:100x30",
            "--step",
            "send:stty size\n",
            "--step",
            "expect:30 100\r\n",
            "--step",
            "send:exit 5\n",
        ],
    );
    assert_eq!(r["error"]["status"], "Success", "{r}");
    assert_eq!(r["stderr"], "", "{r}");
    let st = env.wait_exit(&id).await;
    assert_eq!(st.exit_code, 5, "{st:?}");
    // The terminal's output is in the CRI log, as stdout.
    let records = read_log(&log);
    assert!(records.iter().all(|r| r.stream == "stdout"), "{records:?}");
    let lines = log_lines(&records, "stdout");
    // (read_log splits lines as str::lines does, without the terminal's \r)
    assert!(lines.contains(&"30 100".to_string()), "{lines:?}");
    teardown(&mut env, &pod).await;
}

#[tokio::test]
async fn two_attachers_see_the_same_output_and_one_leaving_keeps_stdin_open() {
    let mut env = PodEnv::start().await;
    let pod = env.run_pod(env.pod_config("attach-two")).await;
    let mut cfg = env.container_config(&pod, "cat", &["cat"]);
    cfg.stdin = true;
    let id = env.create_start(&pod, cfg).await;

    // B only watches; A types, then closes its stdin: A's session ends there (no
    // stdin_once) and the container's stdin stays open for C.
    let url = attach_url(&mut env, attach_request(&id, false, false)).await;
    let watcher = spawn_attached(&url, &[]);
    let url = attach_url(&mut env, attach_request(&id, true, false)).await;
    let a = run_client(
        &env,
        &[
            "attach",
            &url,
            "--step",
            "send:from-a\n",
            "--step",
            "expect:from-a\n",
            "--step",
            "close-stdin",
        ],
    );
    assert_eq!(a["stdout"], "from-a\n", "{a}");
    assert_eq!(a["error"]["status"], "Success", "{a}");
    let url = attach_url(&mut env, attach_request(&id, true, false)).await;
    let c = run_client(
        &env,
        &[
            "attach",
            &url,
            "--step",
            "send:from-c\n",
            "--step",
            "expect:from-c\n",
            "--step",
            "close-stdin",
        ],
    );
    assert_eq!(c["stdout"], "from-c\n", "{c}");
    // The watcher's session ends with the container.
    env.stop_container(&id, 0).await.expect("StopContainer");
    let b = finish_client(watcher);
    assert_eq!(b["stdout"], "from-a\nfrom-c\n", "{b}");
    assert_eq!(b["error"]["status"], "Success", "{b}");
    teardown(&mut env, &pod).await;
}

#[tokio::test]
async fn a_client_that_does_not_read_is_disconnected_and_never_stalls_the_container() {
    let mut env = PodEnv::start().await;
    let pod = env.run_pod(env.pod_config("attach-slow")).await;
    // ~24 MB once /tmp/go exists: far more than the socket buffers between the monitor
    // and the client hold.
    let script = "while [ ! -e /tmp/go ]; do sleep 0.05; done; \
                  head -c 24000000 /dev/zero | tr '\\0' x; echo; echo the-end";
    let cfg = env.container_config(&pod, "flood", &["sh", "-c", script]);
    let log = pod.log_path(&cfg);
    let id = env.create_start(&pod, cfg).await;
    let url = attach_url(&mut env, attach_request(&id, false, false)).await;
    let go = tempfile::NamedTempFile::new().unwrap().into_temp_path();
    let go_path = go.to_path_buf();
    drop(go);
    let slow = spawn_attached(&url, &["--wait-file", go_path.to_str().unwrap()]);
    env.exec_ok(&id, &["touch", "/tmp/go"]).await;
    // The container finishes although its attached client reads nothing.
    let st = env.wait_exit(&id).await;
    assert_eq!(st.exit_code, 0, "{st:?}");
    let records = read_log(&log);
    let lines = log_lines(&records, "stdout");
    assert_eq!(lines.len(), 2, "{} lines", lines.len());
    assert_eq!(lines[0].len(), 24_000_000);
    assert_eq!(lines[1], "the-end");
    // Now the client reads: a prefix of the output, then the reason it was cut off.
    std::fs::write(&go_path, b"").unwrap();
    let r = finish_client(slow);
    let _ = std::fs::remove_file(&go_path);
    assert!(
        r["stdout_len"].as_u64().unwrap() < 24_000_000,
        "{}",
        r["stdout_len"]
    );
    assert_eq!(r["error"]["status"], "Failure", "{}", r["error"]);
    assert!(
        r["error"]["message"].as_str().unwrap().contains("keep up"),
        "{}",
        r["error"]
    );
    teardown(&mut env, &pod).await;
}

#[tokio::test]
async fn attach_refuses_at_the_cri_call_what_cannot_run() {
    let mut env = PodEnv::start().await;
    let (pod, id) = running(&mut env, "attach-errors").await;
    let created = env
        .create(&pod, env.container_config(&pod, "idle", &["sleep", "3600"]))
        .await
        .expect("CreateContainer");
    let r = env
        .cri
        .runtime
        .attach(attach_request("no-such-container", false, false))
        .await;
    assert_code(r, Code::NotFound, "Attach to a missing container");
    let r = env
        .cri
        .runtime
        .attach(attach_request(&created, false, false))
        .await;
    assert_code(r, Code::FailedPrecondition, "Attach to a created container");
    let mut none = attach_request(&id, false, false);
    none.stdout = false;
    none.stderr = false;
    let r = env.cri.runtime.attach(none).await;
    assert_code(r, Code::InvalidArgument, "Attach with no stream");
    let mut both = attach_request(&id, false, true);
    both.stderr = true;
    let r = env.cri.runtime.attach(both).await;
    assert_code(r, Code::InvalidArgument, "Attach with tty and stderr");
    teardown(&mut env, &pod).await;
}

/// `[streaming] idle_timeout_secs`: a session where nothing moves for that long is closed
/// without a Status; one whose output keeps coming is not.
#[tokio::test]
async fn an_idle_session_is_closed_and_a_busy_one_is_not() {
    let mut env = PodEnv::start_with("[streaming]\nidle_timeout_secs = 2\n").await;
    let (pod, id) = running(&mut env, "exec-idle").await;

    // Output every 0.2 s for 3 s: longer than the timeout, never idle for it.
    let busy = "i=0; while [ $i -lt 15 ]; do echo tick; sleep 0.2; i=$((i+1)); done; exit 4";
    let url = exec_url(
        &mut env,
        exec_request(&id, &["sh", "-c", busy], false, false),
    )
    .await;
    let r = run_client(&env, &["exec", &url]);
    assert_eq!(
        r["stdout"].as_str().unwrap().matches("tick").count(),
        15,
        "{r}"
    );
    assert_eq!(status_exit_code(&r["error"]), 4, "{r}");

    // Silent for longer than the client waits at most (60 s): only the idle timeout can
    // end this session, and it ends without the command's Status.
    let url = exec_url(
        &mut env,
        exec_request(&id, &["sh", "-c", "sleep 120; echo late"], false, false),
    )
    .await;
    let r = run_client(&env, &["exec", &url]);
    assert_eq!(r["stdout"], "", "{r}");
    assert!(r["error"].is_null(), "an idle close carries no Status: {r}");
    teardown(&mut env, &pod).await;
}

/// Not a check: how long one streaming exec of `true` takes end to end (CRI Exec, the
/// WebSocket upgrade, the process, the Status), printed for docs/benchmarks.md. Run with
/// `cargo nextest run --test streaming -E 'test(exec_latency)' --no-capture`.
#[tokio::test]
async fn exec_latency_is_printed() {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut env = PodEnv::start().await;
    let (pod, id) = running(&mut env, "exec-latency").await;
    let mut times = Vec::new();
    for _ in 0..30 {
        let start = std::time::Instant::now();
        let url = exec_url(&mut env, exec_request(&id, &["true"], false, false)).await;
        let mut req = url
            .replacen("http://", "ws://", 1)
            .into_client_request()
            .unwrap();
        req.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            "v5.channel.k8s.io".parse().unwrap(),
        );
        let host = req.uri().authority().unwrap().to_string();
        let tcp = tokio::net::TcpStream::connect(host).await.unwrap();
        let (mut ws, _) = tokio_tungstenite::client_async(req, tcp).await.unwrap();
        let mut status = Vec::new();
        while let Some(Ok(m)) = ws.next().await {
            if let tokio_tungstenite::tungstenite::Message::Binary(d) = m {
                if d.first() == Some(&3) {
                    status.extend_from_slice(&d[1..]);
                }
            }
        }
        times.push(start.elapsed());
        let v: Value = serde_json::from_slice(&status).unwrap();
        assert_eq!(v["status"], "Success", "{v}");
    }
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    eprintln!(
        "streaming exec of `true` (CRI Exec + WebSocket session), 30 runs: median {:.1} ms, p90 {:.1} ms, max {:.1} ms",
        ms(times[15]),
        ms(times[27]),
        ms(times[29])
    );
    teardown(&mut env, &pod).await;
}

/// SPDY/3.1 end to end, as kubelet's proxy and crictl speak it: the URL of a real CRI Exec
/// is opened by a client on Go's moby/spdystream (Debian's, the code Kubernetes vendors;
/// tests/interop/go-spdy-client), which negotiates v4, sends 320 KB of stdin (more than a
/// SPDY window) to `cat` in the container, and checks stdout, stderr and exit code 3.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_go_spdystream_client_execs_into_a_real_container() {
    let bin = build_go_spdy_client();
    let mut env = PodEnv::start().await;
    let (_pod, id) = running(&mut env, "exec-spdy").await;
    let script = "cat; echo to stderr >&2; exit 3";
    let url = exec_url(
        &mut env,
        exec_request(&id, &["sh", "-c", script], true, false),
    )
    .await;
    let out = output_within(
        Command::new(&bin).arg("exec-url").arg(&url),
        Duration::from_secs(60),
    );
    assert!(
        out.status.success(),
        "go-spdy-client: {}{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        env.daemon().log()
    );
}

/// Builds tests/interop/go-spdy-client against Debian's spdystream sources (GOPATH mode:
/// nothing is downloaded), its build cache beside the test binaries.
fn build_go_spdy_client() -> std::path::PathBuf {
    let gocode = Path::new("/usr/share/gocode");
    assert!(
        gocode.join("src/github.com/moby/spdystream").is_dir(),
        "no spdystream sources under {}: run hack/setup (golang-github-docker-spdystream-dev)",
        gocode.display()
    );
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe
        .ancestors()
        .nth(3)
        .unwrap_or(Path::new("/tmp"))
        .join("go-spdy-client-e2e");
    std::fs::create_dir_all(&dir).expect("go build dir");
    let bin = dir.join("go-spdy-client");
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/go-spdy-client/main.go");
    let out = Command::new("go")
        .arg("build")
        .arg("-o")
        .arg(&bin)
        .arg(&src)
        .env("GO111MODULE", "off")
        .env("GOPATH", gocode)
        .env("GOCACHE", dir.join("cache"))
        .env("GOFLAGS", "")
        .current_dir(&dir)
        .output()
        .expect("run go: run hack/setup (Debian golang-go)");
    assert!(
        out.status.success(),
        "go build of the spdystream client failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    bin
}

/// The streaming URL Python grpcio's call of `args` (cri_client.py's exec, attach or
/// portforward mode: raw protobuf on the socket) got back.
fn grpcio_url(env: &PodEnv, args: &[&str]) -> String {
    let venv = std::env::var_os("PROXRT_TEST_VENV")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| "/var/lib/proxrt-test/venv".into());
    let out = output_within(
        Command::new(venv.join("bin/python3"))
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/cri_client.py"))
            .arg(&env.daemon().socket)
            .args(args),
        CLIENT_TIMEOUT,
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "cri_client.py {args:?}: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("url="))
        .unwrap_or_else(|| panic!("no url in {stdout}"))
        .to_owned()
}

/// The whole chain without proxrt's client: Python grpcio calls CRI Exec on the socket
/// and the URL it gets is opened by the Python WebSocket client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpcio_exec_url_serves_a_websocket_client() {
    let mut env = PodEnv::start().await;
    let (pod, id) = running(&mut env, "exec-grpcio").await;
    let url = grpcio_url(&env, &["exec", &id, "sh", "-c", "echo from-grpcio; exit 2"]);
    let r = run_client(&env, &["exec", &url]);
    assert_eq!(r["stdout"], "from-grpcio\n", "{r}");
    assert_eq!(status_exit_code(&r["error"]), 2, "{r}");
    teardown(&mut env, &pod).await;
}

/// As above for Attach and PortForward.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcio_attach_and_port_forward_urls_serve_a_websocket_client() {
    let mut env = PodEnv::start().await;
    let pod = env.run_pod(env.pod_config("grpcio-streams")).await;
    let mut cfg = env.container_config(&pod, "reader", &["sh", "-c", "read l; echo got:$l"]);
    cfg.stdin = true;
    cfg.stdin_once = true;
    let reader = env.create_start(&pod, cfg).await;
    let page = format!("grpcio-page-{}", std::process::id());
    let c = env.container_config(&pod, "web", &["sh", "-c", &httpd(8080, &page)]);
    let web = env.create_start(&pod, c).await;

    // Attach as grpcio asked for it (stdin, stdout, stderr): a line in, its answer out,
    // and the session ends with the container.
    let url = grpcio_url(&env, &["attach", &reader]);
    let r = run_client(
        &env,
        &[
            "attach",
            &url,
            "--step",
            "send:hi\n",
            "--step",
            "expect:got:hi",
        ],
    );
    assert_eq!(r["error"]["status"], "Success", "{r}");
    assert_eq!(env.wait_exit(&reader).await.exit_code, 0);

    // PortForward with the port packed, as protobuf encoders send a repeated int32.
    wait_served(&mut env, &web, 8080, &page).await;
    let url = grpcio_url(&env, &["portforward", &pod.id, "8080"]);
    let r = run_client(
        &env,
        &[
            "portforward",
            &url,
            "8080",
            "--send",
            "GET / HTTP/1.0\r\n\r\n",
            "--expect",
            &page,
        ],
    );
    assert!(r["data"].as_str().unwrap().contains(&page), "{r}");
    teardown(&mut env, &pod).await;
}

// ----- proxrt's own CLI: exec -i/-t, attach, port-forward -----

fn cli(env: &PodEnv) -> Command {
    let mut c = Command::new(common::proxrt_bin());
    c.arg("--endpoint").arg(env.daemon().endpoint());
    c
}

/// `cmd` run by script(1) on a pseudo-terminal of 100 columns and 30 rows, with the
/// endpoint's CLI as `proxrt`; script's stdin is piped to the terminal.
fn on_a_terminal(env: &PodEnv, args: &str) -> Command {
    let line = format!(
        "stty cols 100 rows 30 && {} --endpoint {} {args}",
        common::proxrt_bin().display(),
        env.daemon().endpoint()
    );
    let mut c = Command::new("script");
    // -e: script exits with the command's code; output to /dev/null, not a typescript.
    c.args(["-q", "-e", "-c", &line, "/dev/null"]);
    c
}

/// The CLI run with `args` fails (exit 1) with `expected` in its error: what the CRI call
/// refused, with its code.
fn assert_cli_refuses(env: &PodEnv, args: &[&str], expected: &str) {
    let out = output_within(cli(env).args(args), CLIENT_TIMEOUT);
    assert_exit(&out, 1, &format!("proxrt {args:?}"));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(expected),
        "{out:?}"
    );
}

/// Starts `cmd` with its stdout and stderr piped (and stdin as given).
fn spawn_piped(cmd: &mut Command, stdin: std::process::Stdio) -> std::process::Child {
    cmd.stdin(stdin)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"))
}

fn assert_exit(out: &std::process::Output, code: i32, what: &str) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "{what}: stdout {:?} stderr {:?}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn the_cli_execs_with_stdin_and_with_a_terminal() {
    let mut env = PodEnv::start().await;
    let (pod, id) = running(&mut env, "cli-exec").await;

    // -i: stdin reaches cat and is closed; stdout and stderr apart; the exit code is ours.
    let out = common::output_with_input_within(
        cli(&env).args([
            "exec",
            "-i",
            &id,
            "--",
            "sh",
            "-c",
            "cat; echo err >&2; exit 4",
        ]),
        Some(b"hello from the cli\n"),
        CLIENT_TIMEOUT,
    );
    assert_exit(&out, 4, "exec -i");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello from the cli\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "err\n");

    // -t on a terminal: the container's terminal has the local size (sent before any
    // input, so before the line `read` waits for); the code comes back.
    let script = "read x; stty size; [ -t 0 ] && echo is-a-tty; exit 6";
    let out = common::output_with_input_within(
        &mut on_a_terminal(&env, &format!("exec -i -t {id} -- sh -c '{script}'")),
        Some(b"go\n"),
        CLIENT_TIMEOUT,
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert_exit(&out, 6, "exec -i -t under script(1)");
    assert!(text.contains("30 100\r\n"), "{text:?}");
    assert!(text.contains("is-a-tty"), "{text:?}");

    // -t without a local terminal falls back to pipes rather than failing.
    let out = common::output_with_input_within(
        cli(&env).args([
            "exec",
            "-t",
            &id,
            "--",
            "sh",
            "-c",
            "[ -t 1 ] || echo no-tty",
        ]),
        Some(b""),
        CLIENT_TIMEOUT,
    );
    assert_exit(&out, 0, "exec -t without a terminal");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "no-tty\n");

    // What the CRI call refuses is the CLI's error, with its code.
    assert_cli_refuses(
        &env,
        &["exec", "-i", "no-such-container", "--", "true"],
        "Exec: NotFound",
    );
    teardown(&mut env, &pod).await;
}

#[tokio::test]
async fn the_cli_attaches_to_a_container_with_stdin() {
    let mut env = PodEnv::start().await;
    let pod = env.run_pod(env.pod_config("cli-attach")).await;
    let mut cfg = env.container_config(
        &pod,
        "echo",
        &[
            "sh",
            "-c",
            "while read l; do echo got:$l; done; echo bye; exit 2",
        ],
    );
    cfg.stdin = true;
    cfg.stdin_once = true;
    let id = env.create_start(&pod, cfg).await;

    // stdin_once: the end of the CLI's stdin closes the container's; the loop ends, the
    // container exits and so does the session, after its last output.
    let out = common::output_with_input_within(
        cli(&env).args(["attach", "-i", &id]),
        Some(b"one\ntwo\n"),
        CLIENT_TIMEOUT,
    );
    assert_exit(&out, 0, "attach -i");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "got:one\ngot:two\nbye\n"
    );
    assert_eq!(env.wait_exit(&id).await.exit_code, 2);

    // The container is gone now: Attach says so and the CLI fails with it.
    assert_cli_refuses(&env, &["attach", &id], "Attach: FailedPrecondition");
    teardown(&mut env, &pod).await;
}

#[tokio::test]
async fn the_cli_attaches_to_a_tty_container_and_drives_its_shell() {
    use std::io::BufRead as _;
    let mut env = PodEnv::start().await;
    let pod = env.run_pod(env.pod_config("cli-attach-tty")).await;
    let mut cfg = env.container_config(&pod, "sh", &["sh"]);
    cfg.stdin = true;
    cfg.tty = true;
    let id = env.create_start(&pod, cfg).await;

    let mut child = spawn_piped(
        &mut on_a_terminal(&env, &format!("attach -i -t {id}")),
        std::process::Stdio::piped(),
    );
    let mut keys = child.stdin.take().unwrap();
    // The terminal's output, read apart so a marker can be waited for.
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let mut screen = std::io::BufReader::new(child.stdout.take().unwrap());
    std::thread::spawn(move || {
        let mut line = Vec::new();
        while screen.read_until(b'\n', &mut line).is_ok_and(|n| n > 0) {
            let _ = tx.send(String::from_utf8_lossy(&line).into_owned());
            line.clear();
        }
    });
    let mut seen = String::new();
    let mut wait_for = |marker: &str| {
        let deadline = std::time::Instant::now() + CLIENT_TIMEOUT;
        while !seen.contains(marker) {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match rx.recv_timeout(left) {
                Ok(chunk) => seen.push_str(&chunk),
                Err(_) => panic!("never saw {marker:?} on the terminal; saw {seen:?}"),
            }
        }
    };
    // Typed until the shell answers: keys sent before the session is up are kept by
    // the local terminal, so one round is enough, but the marker proves the path.
    keys.write_all(b"stty size; echo mark-$((6*7))\n").unwrap();
    wait_for("mark-42");
    assert!(seen.contains("30 100"), "{seen:?}");
    keys.write_all(b"exit 3\n").unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "attach -i -t: {seen:?}");
    assert_eq!(env.wait_exit(&id).await.exit_code, 3);
    teardown(&mut env, &pod).await;
}

#[tokio::test]
async fn the_cli_forwards_local_connections_into_a_pod() {
    use std::io::BufRead as _;
    let mut env = PodEnv::start().await;
    let pod = env.run_pod(env.pod_config("cli-pf")).await;
    let page = format!("cli-page-{}", std::process::id());
    let c = env.container_config(&pod, "web", &["sh", "-c", &httpd(8080, &page)]);
    let id = env.create_start(&pod, c).await;
    wait_served(&mut env, &id, 8080, &page).await;

    let mut child = spawn_piped(
        cli(&env).args(["port-forward", &pod.id, "0:8080"]),
        std::process::Stdio::null(),
    );
    let mut first = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    // "Forwarding from 127.0.0.1:PORT -> 8080"
    let local: std::net::SocketAddr = first
        .strip_prefix("Forwarding from ")
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("port-forward printed {first:?}"));
    assert!(first.trim_end().ends_with("-> 8080"), "{first:?}");
    // Two connections in turn: each gets its own URL and session.
    for _ in 0..2 {
        let mut conn = TcpStream::connect(local).unwrap();
        conn.set_read_timeout(Some(CLIENT_TIMEOUT)).unwrap();
        conn.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
        let mut answer = String::new();
        conn.read_to_string(&mut answer).unwrap();
        assert!(answer.contains(&page), "{answer:?}");
    }
    let _ = child.kill();
    let _ = child.wait();

    // A pod that does not exist fails at once, before listening.
    assert_cli_refuses(
        &env,
        &["port-forward", "no-such-pod", "0:80"],
        "PortForward: NotFound",
    );
    teardown(&mut env, &pod).await;
}
