//! "All capabilities" on a host whose bounding set is smaller than the kernel's list (this
//! kind of machine has no CAP_SYS_RESOURCE; a Proxmox LXC guest lacks more): privileged
//! containers and `capabilities.add: ["ALL"]`, observed from inside real containers and
//! their ExecSync processes.

mod common;

use common::pods::*;
use k8s_cri::v1::{security_profile::ProfileType, Capability, SecurityProfile};

/// A `Field:\tvalue` line of a /proc/<pid>/status text.
fn status_field<'a>(status: &'a str, field: &str) -> &'a str {
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .unwrap_or_else(|| panic!("no {field} in {status}"))
        .trim()
}

fn hex(v: &str) -> u64 {
    u64::from_str_radix(v, 16).unwrap_or_else(|e| panic!("{v:?}: {e}"))
}

/// The daemon's bounding set: what "all capabilities" means for its containers.
fn daemon_bounding_set(env: &PodEnv) -> u64 {
    let pid = env.daemon().pid().expect("daemon pid");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    hex(status_field(&status, "CapBnd"))
}

fn runtime_default() -> Option<SecurityProfile> {
    Some(SecurityProfile {
        profile_type: ProfileType::RuntimeDefault as i32,
        ..Default::default()
    })
}

#[tokio::test]
async fn privileged_container_gets_what_the_daemon_holds_and_the_hosts_devices() {
    let mut env = PodEnv::start().await;
    let bounding = daemon_bounding_set(&env);
    let mut config = env.pod_config("privileged");
    pod_security(&mut config).privileged = true;
    let pod = env.run_pod(config).await;

    let mut c = env.container_config(&pod, "priv", &["sleep", "1000"]);
    let sc = security(&mut c);
    sc.privileged = true;
    // Asked for, and not applied: a privileged container is unconfined.
    sc.seccomp = runtime_default();
    sc.masked_paths = vec!["/proc/kcore".into()];
    sc.readonly_paths = vec!["/proc/sys".into()];
    let id = env.create_start(&pod, c).await;

    let status = env.exec_ok(&id, &["cat", "/proc/self/status"]).await;
    assert_eq!(
        hex(status_field(&status, "CapEff")),
        bounding,
        "CapEff is the daemon's bounding set"
    );
    assert_eq!(hex(status_field(&status, "CapBnd")), bounding);
    assert_eq!(status_field(&status, "Seccomp"), "0", "no seccomp filter");

    // It can mount.
    let out = env
        .exec_ok(
            &id,
            &[
                "sh",
                "-c",
                "mkdir -p /mnt/t && mount -t tmpfs t /mnt/t && touch /mnt/t/f && umount /mnt/t && echo mounted",
            ],
        )
        .await;
    assert_eq!(out, "mounted\n");

    // The host's device nodes, besides the defaults every container gets.
    let inside = env.exec_ok(&id, &["ls", "-1", "/dev"]).await;
    let inside: Vec<&str> = inside.lines().collect();
    let mut host_devices = Vec::new();
    for entry in std::fs::read_dir("/dev").unwrap().flatten() {
        use std::os::unix::fs::FileTypeExt;
        let t = entry.file_type().unwrap();
        let name = entry.file_name().to_string_lossy().into_owned();
        if (t.is_char_device() || t.is_block_device()) && name != "console" {
            host_devices.push(name);
        }
    }
    assert!(
        host_devices.len() > 6,
        "this host has devices: {host_devices:?}"
    );
    let missing: Vec<&String> = host_devices
        .iter()
        .filter(|d| !inside.contains(&d.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "host devices missing inside: {missing:?}"
    );

    // Writable /sys, no masked or read-only /proc paths.
    let mounts = env.exec_ok(&id, &["cat", "/proc/self/mountinfo"]).await;
    let sys = mounts
        .lines()
        .find(|l| l.split(' ').nth(4) == Some("/sys"))
        .unwrap_or_else(|| panic!("no /sys in {mounts}"));
    assert!(
        sys.split(' ').nth(5).unwrap().starts_with("rw"),
        "/sys: {sys}"
    );
    for path in ["/proc/kcore", "/proc/sys", "/proc/keys"] {
        assert!(
            !mounts.lines().any(|l| l.split(' ').nth(4) == Some(path)),
            "{path} is masked or read-only: {mounts}"
        );
    }

    // The main process too.
    let mut main = env.container_config(
        &pod,
        "priv-main",
        &["sh", "-c", "grep -E '^(CapEff|Seccomp):' /proc/self/status"],
    );
    security(&mut main).privileged = true;
    let log = pod.log_path(&main);
    let id = env.create_start(&pod, main).await;
    let status = env.wait_exit(&id).await;
    assert_eq!(status.exit_code, 0);
    let out = log_lines(&read_log(&log), "stdout").join("\n");
    assert_eq!(hex(status_field(&out, "CapEff")), bounding, "{out}");
    assert_eq!(status_field(&out, "Seccomp"), "0", "{out}");
    env.remove_pod(&pod.id).await.unwrap();
}

#[tokio::test]
async fn all_capabilities_without_privileged_stay_confined() {
    let mut env = PodEnv::start().await;
    let bounding = daemon_bounding_set(&env);
    let pod = env.run_pod(env.pod_config("all-caps")).await;
    let mut c = env.container_config(
        &pod,
        "all",
        &[
            "sh",
            "-c",
            "grep -E '^(CapEff|Seccomp):' /proc/self/status; sleep 1000",
        ],
    );
    let sc = security(&mut c);
    sc.capabilities = Some(Capability {
        add_capabilities: vec!["ALL".into()],
        ..Default::default()
    });
    sc.seccomp = runtime_default();
    let log = pod.log_path(&c);
    let id = env.create_start(&pod, c).await;

    let records = wait_log(&log, "two status lines", |r| {
        log_lines(r, "stdout").len() >= 2
    })
    .await;
    let out = log_lines(&records, "stdout").join("\n");
    assert_eq!(hex(status_field(&out, "CapEff")), bounding, "{out}");
    assert_eq!(status_field(&out, "Seccomp"), "2", "still filtered: {out}");

    let status = env.exec_ok(&id, &["cat", "/proc/self/status"]).await;
    assert_eq!(hex(status_field(&status, "CapEff")), bounding);
    assert_eq!(
        status_field(&status, "Seccomp"),
        "2",
        "ExecSync is filtered too"
    );
    env.remove_pod(&pod.id).await.unwrap();
}

/// ExecSync takes the main process's identity: user, groups, capabilities, no_new_privs,
/// cwd and environment (it used to come from libcontainer's tenant exec; proxrt now enters
/// the container itself).
#[tokio::test]
async fn exec_has_the_main_process_identity() {
    let mut env = PodEnv::start().await;
    let pod = env.run_pod(env.pod_config("identity")).await;
    let probe =
        "id -u; id -g; grep -E '^(Groups|CapEff|CapBnd|NoNewPrivs|Seccomp):' /proc/self/status; \
                 pwd; echo HOME=$HOME FOO=$FOO";
    let mut c = env.container_config(
        &pod,
        "nobody",
        &[
            "sh",
            "-c",
            &format!("{{ {probe}; }} > /tmp/main.txt; sleep 1000"),
        ],
    );
    c.working_dir = "/tmp".into();
    c.envs = vec![key_value("FOO", "bar")];
    let sc = security(&mut c);
    sc.run_as_user = Some(k8s_cri::v1::Int64Value { value: 65534 });
    sc.supplemental_groups = vec![1234];
    sc.no_new_privs = true;
    sc.seccomp = runtime_default();
    let id = env.create_start(&pod, c).await;

    let main = loop {
        let r = env
            .try_exec(&id, &["cat", "/tmp/main.txt"], 5)
            .await
            .unwrap();
        let out = String::from_utf8_lossy(&r.stdout).into_owned();
        if out.contains("FOO=") {
            break out;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    let exec = env.exec_ok(&id, &["sh", "-c", probe]).await;
    assert_eq!(exec, main, "ExecSync and the main process");
    assert!(main.starts_with("65534\n65534\n"), "{main}");
    assert!(main.contains("NoNewPrivs:\t1"), "{main}");
    assert!(main.contains("Seccomp:\t2"), "{main}");
    assert!(main.contains("/tmp\nHOME=/home FOO=bar"), "{main}");
    env.remove_pod(&pod.id).await.unwrap();
}
