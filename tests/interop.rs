//! Clients that are not proxrt's own, against a real daemon: grpcio (Python, from PyPI
//! in the venv hack/setup makes), grpc-go (built here from Debian's
//! golang-google-grpc-dev, dialing the bare socket path the way older kubelets and
//! crictl ≤ 1.26 do) and a raw HTTP/2 client that sends any `:authority` it likes.
//! Each must be served whatever it puts in `:authority` (docs/kubelet.md, src/authority).
//!
//! A missing tool fails the test and says to run hack/setup.

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use common::{output_within, TestDaemon};
use loona_hpack::{Decoder, Encoder};

/// A client that hangs should fail the test, not hang it.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(120);

/// The daemon logs the authorities its unix socket layer replaces at debug level.
const DEBUG_AUTHORITY: &str = "[daemon]\nlog_level = \"info,proxrt::authority=debug\"\n";
const REPLACED: &str = "the server would refuse this :authority";

fn repo_file(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn show(out: &Output) -> String {
    format!(
        "{}\n---- stdout ----\n{}---- stderr ----\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// What every client prints when the three calls went as kubelet expects.
fn assert_served(client: &str, out: &Output, d: &TestDaemon) {
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("all ok"),
        "{client} failed: {}\n---- daemon log ----\n{}",
        show(out),
        d.log()
    );
    for line in [
        "Version ok runtime_name=proxrt runtime_api_version=v1",
        "ListContainers ok containers=0",
        "ContainerStatus unknown id: NOT_FOUND ok",
    ] {
        assert!(stdout.contains(line), "{client}: no {line:?} in\n{stdout}");
    }
}

// ---------------------------------------------------------------------------------------
// grpcio
// ---------------------------------------------------------------------------------------

/// The venv's python, with grpcio (hack/setup makes it).
fn grpcio_python() -> PathBuf {
    let venv = std::env::var_os("PROXRT_TEST_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/lib/proxrt-test/venv"));
    let python = venv.join("bin/python3");
    let probe = Command::new(&python).args(["-c", "import grpc"]).output();
    match probe {
        Ok(out) if out.status.success() => python,
        Ok(out) => panic!(
            "{} cannot import grpc ({}): run hack/setup",
            python.display(),
            show(&out)
        ),
        Err(e) => panic!(
            "no grpcio venv at {} ({e}): run hack/setup (or set PROXRT_TEST_VENV)",
            venv.display()
        ),
    }
}

fn grpcio_client(mode: &str) -> (TestDaemon, Output) {
    let python = grpcio_python();
    let d = TestDaemon::start_with(DEBUG_AUTHORITY);
    let out = output_within(
        Command::new(python)
            .arg(repo_file("tests/interop/cri_client.py"))
            .arg(&d.socket)
            .arg(mode),
        CLIENT_TIMEOUT,
    );
    assert_served("grpcio", &out, &d);
    (d, out)
}

/// Runs the grpcio client (not proxrt's) with `args` against `env`'s daemon; it must
/// exit 0 and print `ok`. Returns what it printed.
fn grpcio_on(env: &common::pods::PodEnv, args: &[&str], ok: &str) -> String {
    let out = output_within(
        Command::new(grpcio_python())
            .arg(repo_file("tests/interop/cri_client.py"))
            .arg(&env.daemon().socket)
            .args(args),
        CLIENT_TIMEOUT,
    );
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success() && stdout.contains(ok),
        "grpcio {} failed: {}\n---- daemon log ----\n{}",
        args[0],
        show(&out),
        env.daemon().log()
    );
    stdout
}

#[test]
fn grpcio_with_its_default_authority() {
    let (d, _) = grpcio_client("default");
    // grpcio ≥ 1.57 sends the %-encoded socket path (1.85: without its leading slash).
    let log = d.log();
    let replaced = log.lines().find(|l| l.contains(REPLACED));
    assert!(
        replaced.is_some_and(|l| l.contains("%2Frun%2Fproxrt.sock")),
        "grpcio did not send the %-encoded socket path; daemon log:\n{log}"
    );
}

#[test]
fn grpcio_with_the_socket_path_as_authority() {
    let (d, _) = grpcio_client("path");
    let wanted = format!("authority={}", d.socket.display());
    assert!(
        d.log().contains(REPLACED) && d.log().contains(&wanted),
        "no replaced {wanted:?} in the daemon log:\n{}",
        d.log()
    );
}

#[test]
fn grpcio_with_localhost() {
    let (d, _) = grpcio_client("localhost");
    assert!(
        !d.log().contains(REPLACED),
        "localhost is valid: nothing to replace; daemon log:\n{}",
        d.log()
    );
}

/// ListContainerStats from grpcio, of a running container: the figures a Python client
/// decodes from the wire are there (CPU time and memory of a live cgroup).
#[tokio::test]
async fn grpcio_list_container_stats() {
    let mut env = common::pods::PodEnv::start().await;
    let pod = env.run_pod(env.pod_config("pystats")).await;
    let id = env.start_sleeper(&pod, "sleeper").await;
    let stdout = grpcio_on(&env, &["stats", &id], "all ok");
    let line = stdout
        .lines()
        .find(|l| l.starts_with("ListContainerStats ok"))
        .unwrap_or_else(|| panic!("no ListContainerStats line in\n{stdout}"));
    let figure = |name: &str| -> u64 {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(name)?.strip_prefix('='))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {line:?}"))
    };
    assert!(line.contains(&format!("id={id}")), "{line}");
    assert!(figure("cpu_ns") > 0, "{line}");
    assert!(figure("cpu_timestamp") > 0, "{line}");
    assert!(figure("working_set") > 0, "{line}");
    env.remove_pod(&pod.id).await.unwrap();
}

/// kubelet's teardown of a pod, from grpcio: StopContainer, ContainerStatus (EXITED),
/// ListContainerStats of the exited container (no cgroup figures: its monitor removes the
/// cgroup after answering the exit), RemoveContainer twice (the second finds nothing and
/// succeeds), StopPodSandbox, RemovePodSandbox twice, and NOT_FOUND after; each answer
/// decoded from the wire. The container's and the pod's state dirs have left the store
/// when the answers come; their files go after (`mounts::retire_tree_later`).
#[tokio::test]
async fn grpcio_tears_a_pod_down() {
    let mut env = common::pods::PodEnv::start().await;
    let pod = env.run_pod(env.pod_config("pyteardown")).await;
    let id = env.start_sleeper(&pod, "sleeper").await;
    let stdout = grpcio_on(&env, &["teardown", &id, &pod.id], "all ok");
    let stats = format!("ListContainerStats ok id={id} cpu=False memory=False");
    for line in [
        "StopContainer ok",
        "ContainerStatus ok state=2 ",
        &stats,
        "RemoveContainer ok",
        "RemoveContainer again ok",
        "ContainerStatus NOT_FOUND ok",
        "StopPodSandbox ok",
        "RemovePodSandbox ok",
        "RemovePodSandbox again ok",
        "PodSandboxStatus NOT_FOUND ok",
    ] {
        assert!(stdout.contains(line), "no {line:?} in\n{stdout}");
    }
    assert!(
        !stdout.contains("finished_at=0 "),
        "an exited container without its finish time:\n{stdout}"
    );
    let root = &env.daemon().root;
    let (containers, sandboxes) = (root.join("containers"), root.join("sandboxes"));
    assert!(
        !containers.join(&id).exists(),
        "the container's dir is in the store"
    );
    assert!(
        !sandboxes.join(&pod.id).exists(),
        "the pod's dir is in the store"
    );
    let removing = |dir: &Path| -> Vec<String> {
        std::fs::read_dir(dir)
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.starts_with(".removing-"))
                    .collect()
            })
            .unwrap_or_default()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !(removing(&containers).is_empty() && removing(&sandboxes).is_empty())
        && std::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(removing(&containers), Vec::<String>::new());
    assert_eq!(removing(&sandboxes), Vec::<String>::new());
}

/// ExecSync from grpcio (the call kubelet's exec probes make): the command runs in the
/// container's cgroups, which the exec joins without a move through a v1 `cgroup.procs`
/// and, on cgroup v2, by being created in its cgroup (monitor/cgroup_join.rs), and the
/// exit code and output decoded from the wire are the command's.
async fn grpcio_exec_sync_in_the_containers_cgroups(mut env: common::pods::PodEnv) {
    let pod = env.run_pod(env.pod_config("pyexec")).await;
    let id = env.start_sleeper(&pod, "sleeper").await;
    let script = "cat /proc/self/cgroup; echo --; cat /proc/1/cgroup; exit 3";
    let stdout = grpcio_on(
        &env,
        &["execsync", &id, "sh", "-c", script],
        "ExecSync ok exit_code=3",
    );
    let output = stdout
        .split_once("stdout:\n")
        .expect("the command's output")
        .1;
    let (exec_view, init_view) = output.split_once("--\n").expect("both cgroup files");
    assert!(!exec_view.trim().is_empty(), "{stdout}");
    assert_eq!(
        exec_view.trim(),
        init_view.trim(),
        "the exec is not in the init's cgroups"
    );
    env.remove_pod(&pod.id).await.unwrap();
}

#[tokio::test]
async fn grpcio_exec_sync_on_this_host() {
    grpcio_exec_sync_in_the_containers_cgroups(common::pods::PodEnv::start().await).await;
}

#[tokio::test]
async fn grpcio_exec_sync_on_a_pure_cgroup_v2_host() {
    grpcio_exec_sync_in_the_containers_cgroups(
        common::pods::PodEnv::start_in_cgroup_v2_view("").await,
    )
    .await;
}

/// grpcio's `mode` (`create` or `create-confined`): a busybox container sleeping in
/// `pod`, with `host_path` at /vol, created and started; its id.
fn grpcio_create(
    env: &common::pods::PodEnv,
    pod: &common::pods::Pod,
    mode: &str,
    host_path: &Path,
) -> String {
    let meta = pod.config.metadata.clone().unwrap();
    let stdout = grpcio_on(
        env,
        &[
            mode,
            &pod.id,
            &meta.name,
            &meta.uid,
            &meta.namespace,
            common::pods::BUSYBOX,
            host_path.to_str().unwrap(),
            "/vol",
            "sleep",
            "1000",
        ],
        "StartContainer ok",
    );
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("created id="))
        .expect("the created container's id")
        .to_owned()
}

/// CreateContainer and StartContainer from grpcio, with a hostPath volume whose directory
/// has a tmpfs mounted below it before the daemon started: the container is created from
/// the create template (monitor/create_template.rs, which leaves that mount out) with the
/// volume cloned from the host's namespace, so the container sees the file on the tmpfs
/// (ExecSync, grpcio too), and the metrics count one create from the template, whose
/// monitor was the zygote's spare.
#[tokio::test]
async fn grpcio_creates_a_container_from_the_create_template() {
    let dir = common::temp_dir("proxrt-pycreate-");
    let vol = dir.path().join("vol");
    let mut mounts = common::HostMounts::default();
    mounts.tmpfs(&vol.join("below"));
    std::fs::write(vol.join("below/mark"), "below\n").unwrap();
    let mut env = common::pods::PodEnv::start_with("[metrics]\naddress = \"127.0.0.1:0\"\n").await;
    let pod = env.run_pod(env.pod_config("pycreate")).await;
    let id = grpcio_create(&env, &pod, "create", &vol);
    let seen = grpcio_on(
        &env,
        &["execsync", &id, "cat", "/vol/below/mark"],
        "ExecSync ok exit_code=0",
    );
    assert!(seen.ends_with("stdout:\nbelow\n"), "{seen}");
    // The pod's files, attached by the monitor (premount.rs), and the cgroup view, made
    // read-only after the create (propagation.rs), as a grpcio client's container has them.
    let hostname = grpcio_on(
        &env,
        &["execsync", &id, "cat", "/etc/hostname"],
        "ExecSync ok exit_code=0",
    );
    let expected = format!("stdout:\n{}\n", pod.config.hostname);
    assert!(hostname.ends_with(&expected), "{hostname}");
    let cgroup = grpcio_on(
        &env,
        &[
            "execsync",
            &id,
            "sh",
            "-c",
            "grep ' /sys/fs/cgroup ' /proc/self/mountinfo | cut -d' ' -f6",
        ],
        "ExecSync ok exit_code=0",
    );
    assert!(cgroup.contains("stdout:\nro,"), "{cgroup}");
    // /dev and the filesystems in it (the monitor makes them: premount.rs), as seen inside.
    let dev = grpcio_on(
        &env,
        &[
            "execsync",
            &id,
            "sh",
            "-c",
            "grep -E ' /dev(/pts|/shm|/mqueue)? ' /proc/self/mountinfo | cut -d' ' -f5,8",
        ],
        "ExecSync ok exit_code=0",
    );
    let expected = "stdout:\n/dev tmpfs\n/dev/shm tmpfs\n/dev/pts devpts\n/dev/mqueue mqueue\n";
    assert!(dev.ends_with(expected), "{dev}");
    let views = common::metrics::counts(
        env.daemon(),
        "proxrt_container_creates_by_view_total",
        "view",
        &["template"],
    );
    assert_eq!(views, [1.0], "(template)");
    // Its monitor was the zygote's spare, forked before grpcio's call came.
    let monitors = common::metrics::counts(
        env.daemon(),
        "proxrt_container_monitors_by_origin_total",
        "from",
        &["spare", "fork"],
    );
    assert_eq!(monitors, [1.0, 0.0], "(spare, fork)");
    env.remove_pod(&pod.id).await.unwrap();
}

/// A container confined as kubelet's `seccompDefault` asks, created, started and exec'd
/// into from grpcio: RuntimeDefault seccomp without no_new_privs, every capability dropped
/// but CHOWN (bit 0) and NET_BIND_SERVICE (bit 10). The main process (pid 1 of its own pid
/// namespace) and the ExecSync'd one are filtered and hold exactly those: on the
/// libcontainer backend the init loads the daemon's compiled filter with CAP_SYS_ADMIN
/// lent for the load only (monitor/seccomp_bpf.rs). The request's annotations come back
/// in ContainerStatus, but not the `run.oci.*` one into the runtime's config.json.
#[tokio::test]
async fn grpcio_runs_a_runtime_default_container_with_the_capabilities_asked_for() {
    let dir = common::temp_dir("proxrt-pyconfined-");
    let mut env = common::pods::PodEnv::start().await;
    let pod = env.run_pod(env.pod_config("pyconfined")).await;
    let id = grpcio_create(&env, &pod, "create-confined", dir.path());
    let status = "grep -E '^(Cap|NoNewPrivs|Seccomp)' /proc/self/status /proc/1/status";
    let seen = grpcio_on(
        &env,
        &["execsync", &id, "sh", "-c", status],
        "ExecSync ok exit_code=0",
    );
    let lines: Vec<&str> = seen
        .split_once("stdout:\n")
        .expect("the command's output")
        .1
        .lines()
        .collect();
    for who in ["/proc/self/status", "/proc/1/status"] {
        let of: Vec<&str> = lines
            .iter()
            .filter_map(|l| l.strip_prefix(who).and_then(|l| l.strip_prefix(':')))
            .collect();
        assert_eq!(
            of,
            [
                "CapInh:\t0000000000000000",
                "CapPrm:\t0000000000000401",
                "CapEff:\t0000000000000401",
                "CapBnd:\t0000000000000401",
                "CapAmb:\t0000000000000000",
                "NoNewPrivs:\t0",
                "Seccomp:\t2",
                "Seccomp_filters:\t1",
            ],
            "{who}: {seen}"
        );
    }
    // Its annotations: all returned by ContainerStatus, but the one crun would obey kept
    // out of the runtime's config.json (spec::RUNTIME_ANNOTATION_PREFIX).
    let annotations = env.status(&id).await.annotations;
    assert_eq!(
        annotations.get("example.com/note").map(String::as_str),
        Some("kept")
    );
    assert_eq!(
        annotations
            .get("run.oci.seccomp_bpf_data")
            .map(String::as_str),
        Some("")
    );
    let bundle = env
        .daemon()
        .root
        .join("containers")
        .join(&id)
        .join("bundle");
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(bundle.join("config.json")).unwrap()).unwrap();
    assert_eq!(
        config["annotations"]["example.com/note"], "kept",
        "{config}"
    );
    assert_eq!(
        config["annotations"].get("run.oci.seccomp_bpf_data"),
        None,
        "{config}"
    );
    env.remove_pod(&pod.id).await.unwrap();
}

/// UpdateContainerResources from grpcio: the new memory limit reaches the container's
/// cgroup and ContainerStatus.
#[tokio::test]
async fn grpcio_update_container_resources() {
    let mut env = common::pods::PodEnv::start().await;
    let pod = env.run_pod(env.pod_config("pyupdate")).await;
    let id = env.start_sleeper(&pod, "sleeper").await;
    let limit: i64 = 96 << 20;
    grpcio_on(&env, &["update", &id, &limit.to_string()], "all ok");
    let status = env.status(&id).await;
    let memory = status
        .resources
        .and_then(|r| r.linux)
        .map(|l| l.memory_limit_in_bytes);
    assert_eq!(memory, Some(limit));
    let rel = format!("{}/proxrt-{id}", env.cgroup_parent.trim_start_matches('/'));
    let file = [
        format!("/sys/fs/cgroup/memory/{rel}/memory.limit_in_bytes"),
        format!("/sys/fs/cgroup/{rel}/memory.max"),
    ]
    .into_iter()
    .find(|p| std::path::Path::new(p).exists())
    .expect("the container's memory cgroup file");
    assert_eq!(
        std::fs::read_to_string(&file).unwrap().trim(),
        limit.to_string()
    );
    env.remove_pod(&pod.id).await.unwrap();
}

/// GetContainerEvents from grpcio, a server-streaming call decoded by hand: a pod's and a
/// container's life arrives as kubelet's Evented PLEG reads it (type, id, the pod's uid and
/// state, the containers' states).
#[tokio::test]
async fn grpcio_get_container_events() {
    use std::io::BufRead;
    let python = grpcio_python();
    let mut env = common::pods::PodEnv::start().await;
    let mut child = Command::new(python)
        .arg(repo_file("tests/interop/cri_client.py"))
        .arg(&env.daemon().socket)
        .args(["events", "8"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, lines) = std::sync::mpsc::channel();
    let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    std::thread::spawn(move || {
        for line in stdout.lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let next = || {
        lines
            .recv_timeout(CLIENT_TIMEOUT)
            .expect("a line from the grpcio client")
    };
    assert_eq!(next(), "subscribed");

    let config = env.pod_config("pyevents");
    let uid = config.metadata.as_ref().unwrap().uid.clone();
    let pod = env.run_pod(config).await;
    let id = env.start_sleeper(&pod, "sleeper").await;
    env.stop_container(&id, 0).await.unwrap();
    env.remove_pod(&pod.id).await.unwrap();

    let events: Vec<String> = (0..8).map(|_| next()).collect();
    let status = child.wait().unwrap();
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(
        status.success(),
        "grpcio events: {status}\n{stderr}\n{events:#?}"
    );
    let field = |line: &str, name: &str| -> String {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(name)?.strip_prefix('='))
            .unwrap_or_else(|| panic!("no {name} in {line:?}"))
            .to_owned()
    };
    // (type, subject, pod state, the containers' id:state list)
    let (created, started, stopped, deleted) = ("0", "1", "2", "3");
    let (ready, notready) = ("0", "1");
    let want = [
        (created, &pod.id, ready, String::new()),
        (started, &pod.id, ready, String::new()),
        (created, &id, ready, format!("{id}:0")),
        (started, &id, ready, format!("{id}:1")),
        (stopped, &id, ready, format!("{id}:2")),
        (stopped, &pod.id, notready, format!("{id}:2")),
        (deleted, &id, notready, String::new()),
        (deleted, &pod.id, notready, String::new()),
    ];
    for (line, (kind, subject, pod_state, containers)) in events.iter().zip(want) {
        assert_eq!(field(line, "type"), kind, "{line}");
        assert_eq!(&field(line, "id"), subject, "{line}");
        assert_eq!(field(line, "pod"), pod.id, "{line}");
        assert_eq!(field(line, "pod_uid"), uid, "{line}");
        assert_eq!(field(line, "pod_state"), pod_state, "{line}");
        assert_eq!(field(line, "containers"), containers, "{line}");
        assert!(
            field(line, "created_at").parse::<i64>().unwrap() > 0,
            "{line}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// grpc-go
// ---------------------------------------------------------------------------------------

/// Builds tests/interop/go-cri-client against Debian's grpc-go sources (GOPATH mode:
/// nothing is downloaded). The build cache lives in the target dir.
fn build_go_client() -> PathBuf {
    let gocode = Path::new("/usr/share/gocode");
    assert!(
        gocode.join("src/google.golang.org/grpc").is_dir(),
        "no grpc-go sources under {}: run hack/setup (Debian golang-google-grpc-dev)",
        gocode.display()
    );
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let bin = tmp.join("go-cri-client");
    let out = Command::new("go")
        .arg("build")
        .arg("-o")
        .arg(&bin)
        .arg(repo_file("tests/interop/go-cri-client/main.go"))
        .env("GO111MODULE", "off")
        .env("GOPATH", gocode)
        .env("GOCACHE", tmp.join("go-build-cache"))
        .env("GOFLAGS", "")
        .current_dir(tmp)
        .output()
        .unwrap_or_else(|e| panic!("run go ({e}): run hack/setup (Debian golang-go)"));
    assert!(
        out.status.success(),
        "go build of the grpc-go client failed: {}",
        show(&out)
    );
    bin
}

#[test]
fn grpc_go_dialing_the_socket_path() {
    let bin = build_go_client();
    let d = TestDaemon::start_with(DEBUG_AUTHORITY);
    let out = output_within(Command::new(bin).arg(&d.socket), CLIENT_TIMEOUT);
    assert_served("grpc-go", &out, &d);
    let wanted = format!("authority={}", d.socket.display());
    assert!(
        d.log().contains(&wanted),
        "grpc-go did not send the socket path as :authority; daemon log:\n{}",
        d.log()
    );
}

// ---------------------------------------------------------------------------------------
// A raw HTTP/2 client
// ---------------------------------------------------------------------------------------

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const HEADERS: u8 = 0x1;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;

/// One HTTP/2 connection, written by hand: the client's HPACK encoder indexes fields
/// in its dynamic table, as real clients' do.
struct RawClient {
    conn: UnixStream,
    encoder: Encoder<'static>,
    decoder: Decoder<'static>,
    next_stream: u32,
}

/// What came back on one stream.
#[derive(Debug, Default)]
struct Reply {
    headers: Vec<(String, String)>,
    data: Vec<u8>,
}

impl Reply {
    fn get(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = (payload.len() as u32).to_be_bytes();
    let mut out = len[1..].to_vec();
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

impl RawClient {
    fn connect(socket: &Path) -> RawClient {
        let conn = UnixStream::connect(socket).expect("connect to the daemon's socket");
        conn.set_read_timeout(Some(Duration::from_secs(30)))
            .expect("read timeout");
        let mut c = RawClient {
            conn,
            encoder: Encoder::new(),
            decoder: Decoder::new(),
            next_stream: 1,
        };
        let mut hello = PREFACE.to_vec();
        hello.extend(frame(0x4, 0, 0, &[]));
        c.conn.write_all(&hello).expect("send preface");
        c
    }

    /// A unary call with `authority` as `:authority` (none when None).
    fn call(&mut self, authority: Option<&str>, method: &str, message: &[u8]) -> Reply {
        let stream = self.next_stream;
        self.next_stream += 2;
        let path = format!("/runtime.v1.RuntimeService/{method}");
        let mut fields: Vec<(&str, &str)> = vec![(":method", "POST"), (":scheme", "http")];
        fields.push((":path", &path));
        if let Some(a) = authority {
            fields.push((":authority", a));
        }
        fields.extend([
            ("content-type", "application/grpc"),
            ("te", "trailers"),
            ("user-agent", "proxrt-raw-h2-test"),
            ("x-request-marker", "the same value on every request"),
        ]);
        let block = self
            .encoder
            .encode(fields.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())));
        let mut grpc = vec![0];
        grpc.extend_from_slice(&(message.len() as u32).to_be_bytes());
        grpc.extend_from_slice(message);
        let mut bytes = frame(HEADERS, END_HEADERS, stream, &block);
        bytes.extend(frame(0x0, END_STREAM, stream, &grpc));
        self.conn.write_all(&bytes).expect("send request");
        self.read_reply(stream)
    }

    fn read_frame(&mut self) -> (u8, u8, u32, Vec<u8>) {
        let mut head = [0u8; 9];
        self.conn
            .read_exact(&mut head)
            .expect("the daemon closed the connection or did not answer");
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
        let mut payload = vec![0; len];
        self.conn.read_exact(&mut payload).expect("frame payload");
        (head[3], head[4], stream, payload)
    }

    fn read_reply(&mut self, stream: u32) -> Reply {
        let mut reply = Reply::default();
        let mut block = Vec::new();
        // END_STREAM of the HEADERS frame whose block is being read.
        let mut block_ends_stream = false;
        loop {
            let (kind, flags, on, payload) = self.read_frame();
            match kind {
                0x4 if flags & 1 == 0 => {
                    let ack = frame(0x4, 1, 0, &[]);
                    self.conn.write_all(&ack).expect("ack settings");
                }
                0x6 if flags & 1 == 0 => {
                    let pong = frame(0x6, 1, 0, &payload);
                    self.conn.write_all(&pong).expect("answer ping");
                }
                0x3 => panic!(
                    "stream {on} reset by the daemon: error code {:?}",
                    payload.get(..4)
                ),
                0x7 => panic!(
                    "connection closed by the daemon (GOAWAY {:?}): {}",
                    payload.get(4..8),
                    String::from_utf8_lossy(payload.get(8..).unwrap_or_default())
                ),
                // HEADERS and CONTINUATION: decoded on every stream, the table is shared.
                0x1 | 0x9 => {
                    if kind == HEADERS {
                        block_ends_stream = flags & END_STREAM != 0;
                    }
                    block.extend_from_slice(&payload);
                    if flags & END_HEADERS != 0 {
                        let fields = self
                            .decoder
                            .decode(&block)
                            .expect("decode the daemon's headers");
                        block.clear();
                        if on == stream {
                            reply.headers.extend(fields.into_iter().map(|(n, v)| {
                                (
                                    String::from_utf8_lossy(&n).into_owned(),
                                    String::from_utf8_lossy(&v).into_owned(),
                                )
                            }));
                        }
                    }
                    if on == stream && flags & END_HEADERS != 0 && block_ends_stream {
                        return reply;
                    }
                }
                0x0 if on == stream => {
                    reply.data.extend_from_slice(&payload);
                    if flags & END_STREAM != 0 {
                        return reply;
                    }
                }
                _ => {}
            }
        }
    }
}

/// Calls Version and ListContainers with `authority`, and ContainerStatus of an unknown
/// id (NotFound: grpc-status 5).
fn three_calls(c: &mut RawClient, authority: Option<&str>) {
    let what = format!("authority {authority:?}");
    let version = c.call(authority, "Version", b"\x0a\x02v1");
    assert_eq!(version.get(":status"), Some("200"), "{what}: {version:?}");
    assert_eq!(version.get("grpc-status"), Some("0"), "{what}: {version:?}");
    assert!(
        version.data.windows(6).any(|w| w == b"proxrt"),
        "{what}: Version reply {:?}",
        version.data
    );
    let list = c.call(authority, "ListContainers", b"");
    assert_eq!(list.get("grpc-status"), Some("0"), "{what}: {list:?}");
    let id = "0123456789abcdef".repeat(4);
    let mut req = vec![0x0a, id.len() as u8];
    req.extend_from_slice(id.as_bytes());
    let status = c.call(authority, "ContainerStatus", &req);
    assert_eq!(status.get("grpc-status"), Some("5"), "{what}: {status:?}");
}

#[test]
fn raw_http2_any_authority_on_one_connection() {
    let d = TestDaemon::start();
    let socket = d.socket.display().to_string();
    let encoded = socket.replace('/', "%2F");
    // Absent first (the connection passes as sent), then refused ones (from then on
    // every block is re-encoded), then valid and absent again; the client's dynamic
    // table carries fields from one request to the next throughout.
    let mut c = RawClient::connect(&d.socket);
    for authority in [
        None,
        None,
        Some(socket.as_str()),
        Some(encoded.as_str()),
        Some("localhost"),
        None,
        Some(""),
        Some(socket.as_str()),
    ] {
        three_calls(&mut c, authority);
    }
    // Refused from the first request on.
    let mut c = RawClient::connect(&d.socket);
    for _ in 0..3 {
        three_calls(&mut c, Some(&socket));
    }
    // Valid first: the rest of the connection goes to the server undecoded (gRPC
    // clients keep one authority per connection); it keeps working as it is.
    let mut c = RawClient::connect(&d.socket);
    for _ in 0..3 {
        three_calls(&mut c, Some("localhost"));
    }
}

#[test]
fn raw_http2_many_requests_cycle_the_dynamic_table() {
    let d = TestDaemon::start();
    let socket = d.socket.display().to_string();
    let mut c = RawClient::connect(&d.socket);
    let mut statuses = HashMap::new();
    for i in 0..300 {
        // A new value each time: the client's table fills and evicts (4 KiB).
        let authority = match i % 3 {
            0 => socket.clone(),
            1 => format!("localhost:{}", 1000 + i),
            _ => format!("{socket}.{i}"),
        };
        let reply = c.call(Some(&authority), "Version", b"\x0a\x02v1");
        *statuses
            .entry(reply.get("grpc-status").unwrap_or("none").to_owned())
            .or_insert(0) += 1;
    }
    assert_eq!(statuses, HashMap::from([("0".to_owned(), 300)]));
}

/// ListContainers from grpcio, of a pod with a running and a created container: the
/// daemon writes this answer from cached bytes (cri/list_containers_wire.rs), so a
/// decoder that is not prost's reads every field back as ContainerStatus gives it.
#[tokio::test]
async fn grpcio_list_containers_reads_every_field() {
    let mut env = common::pods::PodEnv::start().await;
    let pod = env.run_pod(env.pod_config("pylist")).await;
    let mut running = env.container_config(&pod, "running", &["sleep", "1000"]);
    running.labels.insert("app".into(), "web".into());
    running.annotations.insert("note".into(), "x".into());
    let running = env.create_start(&pod, running).await;
    let created = env
        .create(
            &pod,
            env.container_config(&pod, "created", &["sleep", "1000"]),
        )
        .await
        .unwrap();
    let stdout = grpcio_on(&env, &["list", &pod.id], "all ok");
    let lines: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("container "))
        .collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    for id in [&running, &created] {
        let s = env.status(id).await;
        let line = lines
            .iter()
            .find(|l| l.contains(&format!("id={id} ")))
            .unwrap_or_else(|| panic!("{id} not listed:\n{stdout}"));
        let mut labels: Vec<String> = s.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        labels.sort();
        let image = s
            .image
            .as_ref()
            .map(|i| i.image.clone())
            .unwrap_or_default();
        let want = format!(
            "container id={id} pod={} name={} image={image} image_ref={} state={} \
             created_at={} labels={} annotations={} image_id={}",
            pod.id,
            s.metadata.as_ref().unwrap().name,
            s.image_ref,
            s.state,
            s.created_at,
            labels.join(","),
            s.annotations.len(),
            s.image_id,
        );
        assert_eq!(*line, want);
    }
    env.remove_pod(&pod.id).await.unwrap();
}
