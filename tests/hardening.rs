//! Issue 12 ("Hardening"), items 2, 3, 5 and 6, observed on real daemons, containers,
//! files and cgroups:
//! - the state root, `images/`, `containers/`, `sandboxes/` and the run dir's trees are
//!   0700 and the daemon's umask is 077, while a non-root container still reads its
//!   /etc/hosts and resolv.conf and its root stays 0755;
//! - paths from requests are confined: log paths stay under the pod's log directory
//!   (no `..`, no absolute path, no symlink followed), `..` in a cgroup parent is refused,
//!   pid mode TARGET only joins a container of the same pod;
//! - a container writing without pause (`yes`) does not make its monitor deaf:
//!   ReopenContainerLog, StopContainer and RemoveContainer complete;
//! - a container whose monitor was SIGKILLed can still be stopped and removed, and is
//!   reported EXITED with a reason.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use common::pods::*;
use k8s_cri::v1::{ContainerState, Int64Value, NamespaceMode, ReopenContainerLogRequest};
use tonic::Code;

/// Long enough for any of these RPCs on a busy 2-core machine; a deaf monitor makes them
/// hang forever, which this turns into a failure.
const RPC_DEADLINE: Duration = Duration::from_secs(60);

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("stat {}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

/// The `Umask:` line of /proc/<pid>/status.
fn umask_of(pid: u32) -> u32 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let v = status
        .lines()
        .find_map(|l| l.strip_prefix("Umask:"))
        .expect("Umask in /proc/<pid>/status")
        .trim();
    u32::from_str_radix(v, 8).unwrap()
}

#[tokio::test]
async fn state_dirs_are_private_and_containers_still_read_their_files() {
    let mut env = PodEnv::start().await;
    let pod = env.run_pod(env.pod_config("private-dirs")).await;
    let mut c = env.container_config(
        &pod,
        "nobody",
        &[
            "sh",
            "-c",
            "stat -c %a / .; cat /etc/hosts /etc/resolv.conf /etc/hostname >/dev/null && \
             touch /tmp/x && ls . && echo readable",
        ],
    );
    // A working directory the image lacks is made by the daemon: 0755 like runc's.
    c.working_dir = "/srv/app".into();
    security(&mut c).run_as_user = Some(Int64Value { value: 65534 });
    let log = pod.log_path(&c);
    let id = env.create_start(&pod, c).await;
    let status = env.wait_exit(&id).await;
    let out = log_lines(&read_log(&log), "stdout");
    assert_eq!(
        (status.exit_code, out.clone()),
        (0, vec!["755".into(), "755".into(), "readable".into()]),
        "a non-root container reads its pod files and its root is 0755: {:?}",
        log_lines(&read_log(&log), "stderr")
    );

    let d = env.daemon();
    assert_eq!(umask_of(d.pid().unwrap()), 0o077, "the daemon's umask");
    let mut private = vec![
        d.root.clone(),
        d.root.join("images"),
        d.root.join("containers"),
        d.root.join("sandboxes"),
        d.run_dir.join("c"),
        d.run_dir.join("s"),
    ];
    private.extend(
        ["libcontainer", "crun"]
            .iter()
            .map(|r| d.run_dir.join(r))
            .filter(|p| p.exists()),
    );
    for dir in &private {
        assert_eq!(mode(dir), 0o700, "{} is private", dir.display());
    }
    // The socket stays reachable by its group (0660, in a run dir others may traverse).
    assert_eq!(mode(&d.socket), 0o660, "CRI socket");
    assert_eq!(mode(&d.run_dir) & 0o700, 0o700);
    // The log file kubelet reads (as root) is there and well-formed.
    assert!(log.is_file());
    env.remove_pod(&pod.id).await.unwrap();
}

#[tokio::test]
async fn log_paths_are_confined_to_the_log_directory() {
    let mut env = PodEnv::start().await;
    let pod = env.run_pod(env.pod_config("log-confined")).await;
    let log_dir = Path::new(&pod.config.log_directory).to_owned();
    std::fs::create_dir_all(&log_dir).unwrap();
    let outside = tempfile::tempdir().unwrap();
    let target = outside.path().join("profile.sh");
    std::fs::write(&target, "").unwrap();

    for (n, path) in ["../escape.log", "/tmp/absolute.log", "a/../../escape.log"]
        .iter()
        .enumerate()
    {
        let mut c = env.container_config(&pod, &format!("bad{n}"), &["echo", "pwned"]);
        c.log_path = path.to_string();
        let err = env.create(&pod, c).await.expect_err(path);
        assert_eq!(err.code(), Code::InvalidArgument, "{path}: {err:?}");
    }

    // A symlink as the log file, and as a directory on the way to it.
    std::os::unix::fs::symlink(&target, log_dir.join("link.log")).unwrap();
    std::os::unix::fs::symlink(outside.path(), log_dir.join("linkdir")).unwrap();
    for (n, path) in ["link.log", "linkdir/profile.sh"].iter().enumerate() {
        let mut c = env.container_config(&pod, &format!("sym{n}"), &["echo", "pwned"]);
        c.log_path = path.to_string();
        if let Ok(id) = env.create(&pod, c).await {
            let _ = env.start_container(&id).await;
            let _ = env.wait_exit(&id).await;
        }
        assert_eq!(
            std::fs::read_to_string(&target).unwrap(),
            "",
            "{path}: container output went through a symlink out of the log directory"
        );
    }

    // A plain nested path still works.
    let mut c = env.container_config(&pod, "nested", &["echo", "fine"]);
    c.log_path = "nested/deeper/0.log".into();
    let (status, records) = env.run_to_exit(&pod, c).await;
    assert_eq!(status.exit_code, 0);
    assert_eq!(log_lines(&records, "stdout"), vec!["fine".to_string()]);
    env.remove_pod(&pod.id).await.unwrap();
}

#[tokio::test]
async fn cgroup_parent_with_dot_dot_is_refused() {
    let mut env = PodEnv::start().await;
    let mut config = env.pod_config("cg-escape");
    config.linux.as_mut().unwrap().cgroup_parent = format!("{}/../../escape", env.cgroup_parent);
    let err = env
        .try_run_pod(config)
        .await
        .expect_err("cgroup parent with ..");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
}

#[tokio::test]
async fn pid_target_must_be_in_the_same_pod() {
    let mut env = PodEnv::start().await;
    let a = env.run_pod(env.pod_config("target-a")).await;
    let b = env.run_pod(env.pod_config("target-b")).await;
    let target = env.start_sleeper(&a, "t").await;

    let mut other = env.container_config(&b, "joiner", &["sleep", "1000"]);
    let ns = security(&mut other).namespace_options.as_mut().unwrap();
    ns.pid = NamespaceMode::Target as i32;
    ns.target_id = target.clone();
    let err = env
        .create(&b, other)
        .await
        .expect_err("TARGET in another pod");
    assert!(
        matches!(err.code(), Code::InvalidArgument | Code::FailedPrecondition),
        "{err:?}"
    );

    let mut same = env.container_config(&a, "joiner", &["sleep", "1000"]);
    let ns = security(&mut same).namespace_options.as_mut().unwrap();
    ns.pid = NamespaceMode::Target as i32;
    ns.target_id = target.clone();
    let id = env.create_start(&a, same).await;
    let ps = env.exec_ok(&id, &["ps", "-o", "args"]).await;
    assert!(ps.contains("sleep 1000"), "shares the target's pids: {ps}");
    env.remove_pod(&a.id).await.unwrap();
    env.remove_pod(&b.id).await.unwrap();
}

/// Fails the test instead of hanging when an RPC does not come back.
async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(RPC_DEADLINE, f)
        .await
        .unwrap_or_else(|_| panic!("{what} did not complete within {RPC_DEADLINE:?}"))
}

#[tokio::test]
async fn a_flooding_container_does_not_make_its_monitor_deaf() {
    let mut env = PodEnv::start().await;
    let pod = env.run_pod(env.pod_config("flood")).await;
    // Several writers keep the pipe full: the monitor never sees it empty.
    let c = env.container_config(&pod, "yes", &["sh", "-c", "yes & yes & yes & exec yes"]);
    let log = pod.log_path(&c);
    let id = env.create_start(&pod, c).await;
    // Let the pipe fill up and the monitor fall behind.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        log.metadata().map(|m| m.len()).unwrap_or(0) > 0,
        "yes writes"
    );

    let rotated = log.with_extension("log.1");
    std::fs::rename(&log, &rotated).unwrap();
    let reopen = env
        .cri
        .runtime
        .reopen_container_log(ReopenContainerLogRequest {
            container_id: id.clone(),
        });
    within("ReopenContainerLog", reopen)
        .await
        .expect("ReopenContainerLog");
    assert!(log.exists(), "a new log file after ReopenContainerLog");
    let _ = std::fs::remove_file(&rotated);

    within("StopContainer", env.stop_container(&id, 2))
        .await
        .expect("StopContainer");
    let s = env.status(&id).await;
    assert_eq!(s.state, ContainerState::ContainerExited as i32, "{s:?}");
    within("RemoveContainer", env.remove_container(&id))
        .await
        .expect("RemoveContainer");
    env.remove_pod(&pod.id).await.unwrap();
}

/// The monitor pid of a container, from its status.json under the daemon's run dir.
fn monitor_pid(env: &PodEnv, id: &str) -> i32 {
    let path = env
        .daemon()
        .run_dir
        .join("c")
        .join(&id[..16])
        .join("status.json");
    let text = std::fs::read_to_string(&path).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["monitor_pid"].as_i64().expect("monitor_pid") as i32
}

#[tokio::test]
async fn a_container_whose_monitor_died_can_be_stopped_and_removed() {
    let mut env = PodEnv::start().await;
    let pod = env.run_pod(env.pod_config("orphan")).await;
    let stopped = env.start_sleeper(&pod, "stopped").await;
    let removed = env.start_sleeper(&pod, "removed").await;
    for id in [&stopped, &removed] {
        let pid = monitor_pid(&env, id);
        assert!(comm(pid).starts_with("proxrt"), "{pid} is the monitor");
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !is_dead(pid) && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    within("StopContainer", env.stop_container(&stopped, 2))
        .await
        .expect("StopContainer of a container whose monitor died");
    let s = env.status(&stopped).await;
    assert_eq!(s.state, ContainerState::ContainerExited as i32, "{s:?}");
    assert!(!s.message.is_empty(), "the reason is reported: {s:?}");
    let cgroups = cgroup_dirs_of(&env.cgroup_parent, &format!("proxrt-{stopped}"));
    assert!(cgroups.is_empty(), "cgroups left: {cgroups:?}");

    within("RemoveContainer", env.remove_container(&removed))
        .await
        .expect("RemoveContainer of a container whose monitor died");
    within("RemoveContainer", env.remove_container(&stopped))
        .await
        .expect("RemoveContainer");
    for id in [&stopped, &removed] {
        let state = env.daemon().run_dir.join("libcontainer").join(id);
        assert!(!state.exists(), "{} left", state.display());
    }
    env.remove_pod(&pod.id).await.unwrap();
}

/// Item 1: in a pod with `shareProcessNamespace: true` the holder is every container's
/// `/proc/1`. A container with SYS_PTRACE used to read the host's root through
/// `/proc/1/root` and the host's mount table in `/proc/1/mountinfo`, and the holder ran
/// with every capability. Now its root is an empty read-only tmpfs in a mount namespace
/// of its own, with no capabilities, no_new_privs and a seccomp filter.
#[tokio::test]
async fn the_pod_holder_gives_nothing_away_through_proc_1() {
    let mut env = PodEnv::start().await;
    let mut config = env.pod_config("holder-confined");
    pod_security(&mut config)
        .namespace_options
        .get_or_insert_with(pod_namespaces)
        .pid = NamespaceMode::Pod as i32;
    let pod = env.run_pod(config.clone()).await;
    let mut c = env.container_config(&pod, "peek", &["sleep", "3600"]);
    let sc = security(&mut c);
    sc.namespace_options.get_or_insert_with(pod_namespaces).pid = NamespaceMode::Pod as i32;
    sc.capabilities = Some(k8s_cri::v1::Capability {
        add_capabilities: vec!["SYS_PTRACE".into()],
        ..Default::default()
    });
    let id = env.create_start(&pod, c).await;

    let comm = env.exec_ok(&id, &["cat", "/proc/1/comm"]).await;
    assert_eq!(comm.trim(), "proxrt-pause", "pid 1 is the holder");
    let root = env.exec_ok(&id, &["ls", "-A", "/proc/1/root/"]).await;
    assert_eq!(
        root.trim(),
        "",
        "the holder's root is empty, not the host's"
    );
    let mounts = env.exec_ok(&id, &["cat", "/proc/1/mountinfo"]).await;
    assert_eq!(
        mounts.lines().count(),
        1,
        "one mount (its empty root), not the host's table:\n{mounts}"
    );
    assert!(
        mounts.contains(" tmpfs ") && mounts.contains(" ro"),
        "{mounts}"
    );
    let status = env.exec_ok(&id, &["cat", "/proc/1/status"]).await;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap_or_else(|| panic!("{name} in /proc/1/status:\n{status}"))
            .trim()
            .to_owned()
    };
    for caps in ["CapInh:", "CapPrm:", "CapEff:", "CapBnd:", "CapAmb:"] {
        assert_eq!(field(caps), "0000000000000000", "{caps}");
    }
    assert_eq!(field("NoNewPrivs:"), "1");
    assert_eq!(field("Seccomp:"), "2", "a seccomp filter is loaded");

    // Still the pod's init: it reaps, and stopping the pod ends it and its containers.
    env.exec_ok(&id, &["sh", "-c", "sleep 0 & wait"]).await;
    env.stop_pod(&pod.id).await.expect("stop pod");
    env.remove_pod(&pod.id).await.expect("remove pod");
}

/// Pod holders join one mount namespace the zygote made (monitor/holder_confine.rs)
/// instead of each copying the host's mount table, which holds two mounts per pod, and
/// throwing the copy away: every holder's namespace is that one, it is not the daemon's,
/// its one mount is the empty read-only tmpfs, and a holder there still gives nothing
/// away (the test above). A pod that ends leaves the namespace to the others.
#[tokio::test]
async fn pod_holders_share_one_empty_mount_namespace() {
    let mut env = PodEnv::start().await;
    let pods = [
        env.run_pod(env.pod_config("holders-a")).await,
        env.run_pod(env.pod_config("holders-b")).await,
    ];
    let holder_of = |env: &PodEnv, id: &str| {
        let (_, record) = sandbox_record(env, id);
        record["holder_pid"].as_i64().expect("holder pid") as i32
    };
    let holders: Vec<i32> = pods.iter().map(|p| holder_of(&env, &p.id)).collect();
    let ns = |pid: i32| std::fs::read_link(format!("/proc/{pid}/ns/mnt")).expect("ns/mnt");
    let daemon = env.daemon().pid().unwrap();
    assert_eq!(
        ns(holders[0]),
        ns(holders[1]),
        "two holders, two namespaces"
    );
    assert_ne!(ns(holders[0]), ns(daemon as i32));
    for holder in &holders {
        let table = std::fs::read_to_string(format!("/proc/{holder}/mountinfo")).unwrap();
        assert_eq!(table.lines().count(), 1, "{table}");
        assert!(
            table.contains(" / / ro,") && table.contains(" tmpfs "),
            "{table}"
        );
        let held: Vec<String> = std::fs::read_dir(format!("/proc/{holder}/fd"))
            .unwrap()
            .flatten()
            .filter_map(|fd| std::fs::read_link(fd.path()).ok())
            .map(|target| target.display().to_string())
            .collect();
        assert!(
            held.iter().all(|t| !t.starts_with("mnt:")),
            "the holder keeps a handle on a mount namespace: {held:?}"
        );
    }
    env.stop_pod(&pods[0].id).await.expect("stop pod");
    env.remove_pod(&pods[0].id).await.expect("remove pod");
    let third = env.run_pod(env.pod_config("holders-c")).await;
    assert_eq!(ns(holder_of(&env, &third.id)), ns(holders[1]));
    for pod in [&pods[1], &third] {
        env.stop_pod(&pod.id).await.expect("stop pod");
        env.remove_pod(&pod.id).await.expect("remove pod");
    }
}

/// Item 7: a pod holder that dies under a running pod (killed, OOM) is noticed at once:
/// the pod turns NotReady (kubelet then makes a new one), containers of a shared pid
/// namespace die with it, no new container joins what is left, and the pod still stops
/// and goes away cleanly. Before the fix the pod stayed READY until the daemon restarted,
/// and CreateContainer went on to join whatever `/proc/<holder pid>/ns/pid` named.
#[tokio::test]
async fn a_dead_pod_holder_turns_the_pod_not_ready_at_once() {
    let mut env = PodEnv::start().await;
    let before = env.settled_snapshot().await;
    let mut config = env.pod_config("holder-dies");
    pod_security(&mut config)
        .namespace_options
        .get_or_insert_with(pod_namespaces)
        .pid = NamespaceMode::Pod as i32;
    let pod = env.run_pod(config).await;
    let mut c = env.container_config(&pod, "shared", &["sleep", "3600"]);
    security(&mut c)
        .namespace_options
        .get_or_insert_with(pod_namespaces)
        .pid = NamespaceMode::Pod as i32;
    let id = env.create_start(&pod, c).await;

    let (_, record) = sandbox_record(&env, &pod.id);
    let holder = record["holder_pid"].as_i64().expect("holder pid") as i32;
    assert_eq!(comm(holder), "proxrt-pause");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(holder),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill the holder");

    // No restart, no Stop: the daemon notices by itself.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let state = env.pod_status(&pod.id).await.expect("pod status").state;
        if state == k8s_cri::v1::PodSandboxState::SandboxNotready as i32 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the pod is still READY 20 s after its holder died\n{}",
            env.daemon().log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Its pid namespace died with pid 1, and the container with it.
    let exited = env.wait_exit(&id).await;
    assert_eq!(exited.state, ContainerState::ContainerExited as i32);

    no_container_joins(&mut env, &pod, "a dead pod").await;

    env.stop_pod(&pod.id).await.expect("stop pod");
    env.remove_pod(&pod.id).await.expect("remove pod");
    env.assert_back_to(&before, "after a pod whose holder died")
        .await;
}

/// The pod's record file and what it holds.
fn sandbox_record(env: &PodEnv, pod_id: &str) -> (std::path::PathBuf, serde_json::Value) {
    let path = env
        .daemon()
        .root
        .join("sandboxes")
        .join(pod_id)
        .join("sandbox.json");
    let record = serde_json::from_slice(&std::fs::read(&path).expect("sandbox record"))
        .expect("sandbox record is JSON");
    (path, record)
}

/// CreateContainer in `pod` is refused with FailedPrecondition: no container joins `what`.
async fn no_container_joins(env: &mut PodEnv, pod: &Pod, what: &str) {
    let late = env.container_config(pod, "late", &["sleep", "1"]);
    let err = env
        .create(pod, late)
        .await
        .expect_err(&format!("no container joins {what}"));
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
}

/// A process named like a holder, in the host's namespaces: what a pod's recorded holder
/// pid may name once the holder is gone and the pid was recycled.
fn stranger_named_holder() -> std::process::Child {
    std::process::Command::new("python3")
        .args([
            "-c",
            "import ctypes, sys, time\n\
             ctypes.CDLL(None).prctl(15, b'proxrt-pause', 0, 0, 0)\n\
             print('named', flush=True)\n\
             time.sleep(600)",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("start python3")
}

/// Item 7 with ipc and uts reached through the holder (`/proc/<holder>/ns/…`, issue 13:
/// no bind mount per namespace): the pod's record names a pid that is now another
/// process with the holder's name (a recycled pid, simulated by pointing the record at
/// a stranger). The pod is NOT READY after the restart (the ipc namespace's recorded
/// inode is not the stranger's: without it the pod stayed READY and a new container
/// joined the stranger's namespace), no container joins, and neither StopPodSandbox
/// nor RemovePodSandbox kills the stranger.
#[tokio::test]
async fn a_recycled_holder_pid_is_neither_joined_nor_killed() {
    let mut env = PodEnv::start().await;
    env.settled_snapshot().await;
    let before = env.work_snapshot();
    let mut config = env.pod_config("recycled");
    // Host network: no net namespace file whose inode would also tell the processes apart.
    let ns = pod_security(&mut config)
        .namespace_options
        .get_or_insert_with(pod_namespaces);
    ns.network = NamespaceMode::Node as i32;
    let pod = env.run_pod(config).await;
    let (record_path, mut record) = sandbox_record(&env, &pod.id);
    let holder = record["holder_pid"].as_i64().expect("holder pid") as i32;
    assert_eq!(
        record["namespaces"]["ipc"],
        format!("/proc/{holder}/ns/ipc"),
        "{record}"
    );

    env.kill9();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(holder),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill the holder");
    let mut stranger = stranger_named_holder();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(stranger.stdout.take().expect("stdout")),
        &mut line,
    )
    .expect("stranger named");
    let pid = stranger.id() as i32;
    assert_eq!(comm(pid), "proxrt-pause");
    // Everything the record says of pid `holder` now says it of the stranger.
    let text = serde_json::to_string(&record)
        .expect("JSON")
        .replace(&format!("/proc/{holder}/"), &format!("/proc/{pid}/"));
    record = serde_json::from_str(&text).expect("JSON");
    record["holder_pid"] = pid.into();
    std::fs::write(&record_path, serde_json::to_vec(&record).expect("JSON")).expect("write");
    env.restart().await;

    let status = env.pod_status(&pod.id).await.expect("pod status");
    assert_eq!(
        status.state,
        k8s_cri::v1::PodSandboxState::SandboxNotready as i32,
        "a pod whose namespaces are gone is not ready"
    );
    no_container_joins(&mut env, &pod, "the stranger's namespaces").await;
    env.stop_pod(&pod.id).await.expect("stop pod");
    env.remove_pod(&pod.id).await.expect("remove pod");
    assert!(
        stranger.try_wait().expect("wait").is_none(),
        "StopPodSandbox killed a process that is not the pod's holder"
    );
    stranger.kill().expect("kill the stranger");
    stranger.wait().expect("reap the stranger");
    env.assert_work_back_to(&before, "after a pod whose holder pid was recycled")
        .await;
}

/// Item 4 on a host without AppArmor (this one: the kernel has no AppArmor module): every
/// profile request is accepted and none is applied, and the Status says so. (Where
/// AppArmor enforces, the spec decisions are unit tests in src/spec/security.rs and the
/// probe and profile in src/apparmor.rs.)
#[tokio::test]
async fn without_apparmor_profiles_are_accepted_and_the_status_says_so() {
    let enforced = std::fs::read_to_string("/sys/module/apparmor/parameters/enabled")
        .is_ok_and(|v| v.trim() == "Y");
    if enforced {
        eprintln!("skipped: AppArmor enforces on this host; this test is for hosts without it");
        return;
    }
    let mut env = PodEnv::start().await;
    let status = env
        .cri
        .runtime
        .status(k8s_cri::v1::StatusRequest { verbose: true })
        .await
        .expect("Status")
        .into_inner();
    let apparmor = status.info.get("apparmor").expect("info.apparmor");
    assert!(
        apparmor.starts_with("disabled: ") && apparmor.contains("accepted and not applied"),
        "{apparmor}"
    );
    let pod = env.run_pod(env.pod_config("apparmor")).await;
    for (name, profile) in [
        ("localhost", "localhost/k8s-never-loaded"),
        ("default", "runtime/default"),
    ] {
        let mut c = env.container_config(
            &pod,
            name,
            &["sh", "-c", "cat /proc/self/attr/current 2>&1; true"],
        );
        #[allow(deprecated)]
        {
            security(&mut c).apparmor_profile = profile.into();
        }
        let id = env.create_start(&pod, c).await;
        let st = env.wait_exit(&id).await;
        assert_eq!(st.exit_code, 0, "{profile}: {st:?}");
    }
    env.stop_pod(&pod.id).await.expect("StopPodSandbox");
    env.remove_pod(&pod.id).await.expect("RemovePodSandbox");
}

/// The pod holder starts in its leaf: it is created in the v2 leaf by
/// `clone3(CLONE_INTO_CGROUP)` and joins each v1 leaf through `tasks` itself ("0": a
/// thread moving itself takes no global lock). strace (not proxrt) on
/// the daemon and on the zygote and its spare (the setup process), sees no move through
/// any `cgroup.procs` during RunPodSandbox: nothing waits for the kernel's cgroup
/// migration lock (an RCU grace period when it is cold).
async fn the_pod_holder_starts_in_its_cgroup(mut env: PodEnv, v1: bool) {
    let daemon = env.daemon().pid().expect("daemon running");
    let zygote = std::fs::read_to_string(format!("/proc/{daemon}/task/{daemon}/children"))
        .unwrap()
        .split_whitespace()
        .map(|p| p.parse::<i32>().unwrap())
        .find(|p| comm(*p) == "proxrt-zygote")
        .expect("the daemon's zygote") as u32;
    let dir = env.daemon().dir().to_owned();
    let daemon_trace = common::Strace::attach(daemon, "write", &dir.join("d.out")).await;
    let zygote_trace = common::Strace::attach_all(
        &zygote_and_spare(zygote as i32),
        &[],
        "write,clone3",
        &dir.join("z.out"),
    )
    .await;
    let pod = env.run_pod(env.pod_config("holder-start")).await;
    let (daemon_trace, zygote_trace) = (daemon_trace.finish(), zygote_trace.finish());

    let (_, record) = sandbox_record(&env, &pod.id);
    let holder = record["holder_pid"].as_i64().expect("holder pid") as i32;
    let cgroups = std::fs::read_to_string(format!("/proc/{holder}/cgroup")).unwrap();
    let leaf = format!("proxrt-pause-{}", pod.id);
    assert!(
        cgroups.contains(&leaf),
        "holder {holder} not in {leaf}: {cgroups}"
    );
    let mut writes = common::cgroup_writes(&daemon_trace);
    writes.extend(common::cgroup_writes(&zygote_trace));
    // The daemon's own pid into its own cgroup, after the pod runs, is the warm-up for
    // the pod's first container (backend/host/migration.rs), not a move.
    let moves: Vec<_> = writes
        .iter()
        .filter(|(file, data)| file.ends_with("/cgroup.procs") && *data != daemon.to_string())
        .collect();
    assert!(moves.is_empty(), "moved through cgroup.procs: {moves:?}");
    if v1 {
        assert!(
            writes
                .iter()
                .any(|(file, data)| file.ends_with(&format!("{leaf}/tasks")) && data == "0"),
            "no join through the leaf's tasks: {writes:?}"
        );
    } else {
        assert!(
            zygote_trace
                .lines()
                .any(|l| l.contains("clone3(") && l.contains("CLONE_INTO_CGROUP")),
            "the holder was not cloned into its cgroup: {zygote_trace}"
        );
    }
    env.stop_pod(&pod.id).await.expect("StopPodSandbox");
    env.remove_pod(&pod.id).await.expect("RemovePodSandbox");
}

#[tokio::test]
async fn the_pod_holder_starts_in_its_cgroup_on_this_host() {
    let v1 = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .any(|l| l.contains(" - cgroup "));
    the_pod_holder_starts_in_its_cgroup(PodEnv::start().await, v1).await;
}

#[tokio::test]
async fn the_pod_holder_starts_in_its_cgroup_on_a_pure_cgroup_v2_host() {
    the_pod_holder_starts_in_its_cgroup(PodEnv::start_in_cgroup_v2_view("").await, false).await;
}

/// The pod holder's cgroup leaf (`<cgroup_parent>/proxrt-pause-<pod id>`) in every
/// hierarchy that has it; at least one.
fn holder_leaves(env: &PodEnv, pod: &Pod) -> Vec<std::path::PathBuf> {
    let leaf = format!(
        "{}/proxrt-pause-{}",
        env.cgroup_parent.trim_start_matches('/'),
        pod.id
    );
    let dirs: Vec<_> = cgroup_roots()
        .into_iter()
        .map(|root| root.join(&leaf))
        .filter(|d| d.join("cgroup.procs").is_file())
        .collect();
    assert!(!dirs.is_empty(), "no {leaf} in any hierarchy");
    dirs
}

/// Item 1, the rest: the pod holder lives in a leaf of the pod's cgroup
/// (`<cgroup_parent>/proxrt-pause-<pod id>`) in every hierarchy, and the leaf goes with the
/// pod: StopPodSandbox removes it beside its answer (so soon after it, not necessarily by
/// then), RemovePodSandbox before its own. Before: the holder stayed in the daemon's
/// cgroup.
#[tokio::test]
async fn the_pod_holder_is_in_the_pods_cgroup_until_the_pod_stops() {
    let mut env = PodEnv::start().await;
    let pod = env.run_pod(env.pod_config("holder-cgroup")).await;
    let dirs = holder_leaves(&env, &pod);
    for dir in &dirs {
        let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap();
        let pids: Vec<i32> = procs.lines().map(|l| l.trim().parse().unwrap()).collect();
        assert_eq!(pids.len(), 1, "{}: {procs:?}", dir.display());
        assert_eq!(comm(pids[0]), "proxrt-pause", "{}", dir.display());
    }
    env.stop_pod(&pod.id).await.expect("StopPodSandbox");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while dirs.iter().any(|d| d.exists()) && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for dir in &dirs {
        assert!(!dir.exists(), "{} left after StopPodSandbox", dir.display());
    }
    env.remove_pod(&pod.id).await.expect("RemovePodSandbox");
}

/// RemovePodSandbox right after StopPodSandbox, before the leaf StopPodSandbox removes
/// beside its answer can be gone: it is gone when RemovePodSandbox answers.
#[tokio::test]
async fn the_pod_holders_cgroup_is_gone_when_remove_answers() {
    let mut env = PodEnv::start().await;
    let pod = env.run_pod(env.pod_config("holder-cgroup-rm")).await;
    let dirs = holder_leaves(&env, &pod);
    env.stop_pod(&pod.id).await.expect("StopPodSandbox");
    env.remove_pod(&pod.id).await.expect("RemovePodSandbox");
    for dir in &dirs {
        assert!(
            !dir.exists(),
            "{} left after RemovePodSandbox",
            dir.display()
        );
    }
}

/// A container's view of its cgroups (/sys/fs/cgroup) is read-only, on a cgroup v1 or
/// hybrid host too, where libcontainer 0.7 mounts a tmpfs with a read-write bind of each
/// hierarchy whatever the mount's `ro` (monitor/propagation.rs makes the tree read-only
/// after the create): the container can neither raise its own limits nor make
/// sub-cgroups. Checked from inside, on this host's layout and on a pure cgroup v2 view.
#[tokio::test]
async fn a_containers_cgroups_are_read_only() {
    let script = "grep -E ' /sys/fs/cgroup(/| )' /proc/self/mountinfo | cut -d' ' -f5,6; \
         for f in memory/memory.limit_in_bytes memory.max pids/pids.max pids.max; do \
           [ -e /sys/fs/cgroup/$f ] && echo 1234567 2>/dev/null > /sys/fs/cgroup/$f && echo wrote $f; \
         done; \
         for d in sub memory/sub pids/sub; do mkdir /sys/fs/cgroup/$d 2>/dev/null && echo made $d; done; \
         true";
    for v2_view in [false, true] {
        let mut env = match v2_view {
            false => PodEnv::start().await,
            true => PodEnv::start_in_cgroup_v2_view("").await,
        };
        let pod = env.run_pod(env.pod_config("cgroups-ro")).await;
        let c = env.container_config(&pod, "writer", &["sh", "-c", script]);
        let log = pod.log_path(&c);
        let id = env.create_start(&pod, c).await;
        let status = env.wait_exit(&id).await;
        let out = log_lines(&read_log(&log), "stdout");
        assert_eq!(status.exit_code, 0, "{out:?}");
        let mounts: Vec<&String> = out.iter().filter(|l| l.starts_with('/')).collect();
        assert!(
            !mounts.is_empty(),
            "v2 view {v2_view}: no cgroup mount: {out:?}"
        );
        for m in &mounts {
            let options = m.split(' ').nth(1).unwrap_or_default();
            assert!(
                options.split(',').next() == Some("ro"),
                "v2 view {v2_view}: {m} is writable: {out:?}"
            );
        }
        let wrote: Vec<&String> = out.iter().filter(|l| !l.starts_with('/')).collect();
        assert!(wrote.is_empty(), "v2 view {v2_view}: {wrote:?}");
        env.remove_container(&id).await.unwrap();
        env.remove_pod(&pod.id).await.unwrap();
    }
}
