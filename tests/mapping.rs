//! Each CRI → OCI mapping observed from inside a real container: users and groups,
//! capabilities, read-only rootfs, masked and read-only paths, mount propagation, env,
//! working dir, hostname, resolv.conf, cgroup limits and a localhost seccomp profile.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::pods::*;
use k8s_cri::v1::{
    security_profile::ProfileType, Capability, ContainerConfig, DnsConfig, Int64Value, Mount,
    MountPropagation, NamespaceMode, SecurityProfile,
};
use nix::mount::{mount, umount2, MntFlags, MsFlags};

/// What a container printed and how it ended.
struct Output {
    exit_code: i32,
    stdout: Vec<String>,
    stderr: Vec<String>,
}

/// Runs `cfg` to its end in `pod` and returns its output (from the CRI log).
async fn run(env: &mut PodEnv, pod: &Pod, cfg: ContainerConfig) -> Output {
    let (status, log) = env.run_to_exit(pod, cfg).await;
    Output {
        exit_code: status.exit_code,
        stdout: log_lines(&log, "stdout"),
        stderr: log_lines(&log, "stderr"),
    }
}

/// A container config running `script` under `sh -c`.
fn script(env: &PodEnv, pod: &Pod, name: &str, script: &str) -> ContainerConfig {
    env.container_config(pod, name, &["sh", "-c", script])
}

#[tokio::test]
async fn users_and_groups() {
    let mut env = PodEnv::start().await;
    let pod = env.run_pod(env.pod_config("users")).await;
    let ids = "id -u; id -g; id -G";

    let c = script(&env, &pod, "default", ids);

    let out = run(&mut env, &pod, c).await;
    assert_eq!(
        out.stdout,
        ["0", "0", "0"],
        "image user is root: {:?}",
        out.stderr
    );

    let mut c = script(&env, &pod, "uid", ids);
    security(&mut c).run_as_user = Some(Int64Value { value: 1 });
    let out = run(&mut env, &pod, c).await;
    assert_eq!(
        out.stdout,
        ["1", "1", "1"],
        "uid 1 is daemon, whose group is 1: {:?}",
        out.stderr
    );

    let mut c = script(&env, &pod, "uid-unknown", ids);
    security(&mut c).run_as_user = Some(Int64Value { value: 4242 });
    let out = run(&mut env, &pod, c).await;
    assert_eq!(
        out.stdout,
        ["4242", "0", "0"],
        "a uid not in /etc/passwd gets gid 0"
    );

    let mut c = script(
        &env,
        &pod,
        "groups",
        &format!("{ids}; grep ^Groups: /proc/self/status"),
    );
    let sc = security(&mut c);
    sc.run_as_user = Some(Int64Value { value: 1 });
    sc.run_as_group = Some(Int64Value { value: 65534 });
    sc.supplemental_groups = vec![1234, 5678];
    let out = run(&mut env, &pod, c).await;
    assert_eq!(out.stdout[..2], ["1", "65534"], "{:?}", out.stdout);
    let mut groups: Vec<&str> = out.stdout[2].split_whitespace().collect();
    groups.sort();
    assert_eq!(
        groups,
        ["1234", "5678", "65534"],
        "primary + supplemental groups: {:?}",
        out.stdout
    );
    let mut status_groups: Vec<&str> = out.stdout[3]
        .trim_start_matches("Groups:")
        .split_whitespace()
        .collect();
    status_groups.sort();
    assert_eq!(status_groups, ["1234", "5678", "65534"]);

    let mut c = script(&env, &pod, "username", &format!("{ids}; id -un"));
    security(&mut c).run_as_username = "nobody".into();
    let out = run(&mut env, &pod, c).await;
    assert_eq!(out.stdout, ["65534", "65534", "65534", "nobody"]);
}

/// The container's effective capability set, from /proc/self/status.
async fn cap_eff(env: &mut PodEnv, pod: &Pod, name: &str, caps: Option<Capability>) -> u64 {
    let mut c = script(env, pod, name, "grep ^CapEff: /proc/self/status");
    security(&mut c).capabilities = caps;
    let out = run(env, pod, c).await;
    assert_eq!(out.exit_code, 0, "{:?}", out.stderr);
    let hex = out.stdout[0].trim_start_matches("CapEff:").trim();
    u64::from_str_radix(hex, 16).unwrap_or_else(|e| panic!("CapEff {hex:?}: {e}"))
}

#[tokio::test]
async fn capabilities_add_and_drop() {
    const CHOWN: u64 = 1 << 0;
    const NET_ADMIN: u64 = 1 << 12;
    const NET_RAW: u64 = 1 << 13;
    const SYS_ADMIN: u64 = 1 << 21;
    const SYS_TIME: u64 = 1 << 25;
    let mut env = PodEnv::start().await;
    let pod = env.run_pod(env.pod_config("caps")).await;
    let caps = |add: &[&str], drop: &[&str]| {
        Some(Capability {
            add_capabilities: add.iter().map(|s| s.to_string()).collect(),
            drop_capabilities: drop.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        })
    };

    let default = cap_eff(&mut env, &pod, "default", None).await;
    assert_eq!(
        default, 0xa80425fb,
        "containerd's default set: {default:#x}"
    );
    let added = cap_eff(
        &mut env,
        &pod,
        "add",
        caps(&["NET_ADMIN", "CAP_SYS_TIME"], &[]),
    )
    .await;
    assert_eq!(added, default | NET_ADMIN | SYS_TIME, "{added:#x}");
    assert_eq!(added & SYS_ADMIN, 0);
    let dropped = cap_eff(&mut env, &pod, "drop", caps(&[], &["NET_RAW", "CAP_CHOWN"])).await;
    assert_eq!(dropped, default & !(NET_RAW | CHOWN), "{dropped:#x}");
    let only = cap_eff(&mut env, &pod, "only", caps(&["CHOWN"], &["ALL"])).await;
    assert_eq!(only, CHOWN, "drop ALL then add CHOWN: {only:#x}");
    let none = cap_eff(&mut env, &pod, "none", caps(&[], &["ALL"])).await;
    assert_eq!(none, 0);

    // Observed, not just listed: without CAP_CHOWN, chown fails.
    let mut c = script(&env, &pod, "chown", "touch /tmp/f && chown 1 /tmp/f");
    security(&mut c).capabilities = caps(&[], &["CHOWN"]);
    let out = run(&mut env, &pod, c).await;
    assert_ne!(
        out.exit_code, 0,
        "chown without CAP_CHOWN: {:?}",
        out.stdout
    );
}

#[tokio::test]
async fn readonly_rootfs_masked_and_readonly_paths() {
    let mut env = PodEnv::start().await;
    let pod = env.run_pod(env.pod_config("protect")).await;

    let mut c = script(&env, &pod, "ro", "touch /newfile");
    security(&mut c).readonly_rootfs = true;
    let out = run(&mut env, &pod, c).await;
    assert_ne!(out.exit_code, 0, "write to a read-only rootfs");
    assert!(
        out.stderr
            .iter()
            .any(|l| l.contains("Read-only file system")),
        "{:?}",
        out.stderr
    );
    let c = script(&env, &pod, "rw", "touch /newfile && echo written");
    let out = run(&mut env, &pod, c).await;
    assert_eq!(
        out.stdout,
        ["written"],
        "the rootfs is writable by default: {:?}",
        out.stderr
    );

    // Default masked paths: files become /dev/null (char 1:3; /proc/kcore is among them
    // but not every kernel has it), directories an empty read-only tmpfs; /proc/sys is
    // read-only.
    let check = "stat -c '%F %t:%T' /proc/keys /proc/timer_list; wc -c < /proc/keys; ls -A /proc/acpi | wc -l; \
                 grep ' /proc/acpi ' /proc/self/mounts | cut -d' ' -f3,4 | cut -d, -f1; \
                 grep ' /proc/sys ' /proc/self/mounts | cut -d' ' -f4 | cut -d, -f1; grep ^NoNewPrivs: /proc/self/status";
    let c = script(&env, &pod, "defaults", check);
    let out = run(&mut env, &pod, c).await;
    assert_eq!(
        out.stdout,
        [
            "character special file 1:3",
            "character special file 1:3",
            "0",
            "0",
            "tmpfs ro",
            "ro",
            "NoNewPrivs:\t0"
        ],
        "masked /proc/keys, /proc/timer_list, /proc/acpi; read-only /proc/sys: {:?}",
        out.stderr
    );
    let c = script(
        &env,
        &pod,
        "write-sys",
        "echo 1 > /proc/sys/kernel/domainname",
    );
    let out = run(&mut env, &pod, c).await;
    assert_ne!(out.exit_code, 0, "/proc/sys is read-only");

    // Lists as sent replace the defaults: /proc/cpuinfo masked, /proc/keys no longer.
    let mut c = script(
        &env,
        &pod,
        "custom",
        "stat -c '%F %t:%T' /proc/cpuinfo; wc -c < /proc/cpuinfo; stat -c '%F' /proc/keys; \
         grep -c ' /proc/sys ' /proc/self/mounts; \
         grep ' /etc ' /proc/self/mounts | cut -d' ' -f4 | cut -d, -f1; grep ^NoNewPrivs: /proc/self/status",
    );
    let sc = security(&mut c);
    sc.masked_paths = vec!["/proc/cpuinfo".into()];
    sc.readonly_paths = vec!["/etc".into()];
    sc.no_new_privs = true;
    let out = run(&mut env, &pod, c).await;
    assert_eq!(
        out.stdout,
        [
            "character special file 1:3",
            "0",
            "regular empty file",
            "0",
            "ro",
            "NoNewPrivs:\t1"
        ],
        "{:?}",
        out.stderr
    );
}

/// A host directory made a shared mount point (what kubelet's volume dirs are), with
/// everything mounted below it unmounted on drop.
struct SharedDir {
    path: PathBuf,
}

impl SharedDir {
    fn new(path: PathBuf) -> SharedDir {
        SharedDir::with(path, &[MsFlags::MS_PRIVATE, MsFlags::MS_SHARED])
    }

    /// A private mount point: nothing made below it propagates anywhere.
    fn private(path: PathBuf) -> SharedDir {
        SharedDir::with(path, &[MsFlags::MS_PRIVATE])
    }

    fn with(path: PathBuf, propagation: &[MsFlags]) -> SharedDir {
        fs::create_dir_all(&path).unwrap();
        mount(
            Some(&path),
            &path,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .expect("bind the dir onto itself");
        let dir = SharedDir { path };
        // Private first: a peer group of its own, whatever the host's / is, so that what
        // the test mounts below propagates to its containers and nowhere else.
        for &flag in propagation {
            mount(None::<&str>, &dir.path, None::<&str>, flag, None::<&str>)
                .expect("set the dir's propagation");
        }
        dir
    }
}

impl Drop for SharedDir {
    fn drop(&mut self) {
        // Lazily, submounts included: containers may still see their copies.
        for _ in 0..8 {
            if umount2(&self.path, MntFlags::MNT_DETACH).is_err() {
                break;
            }
        }
    }
}

fn tmpfs(at: &Path) {
    mount(
        Some("proxrt-test"),
        at,
        Some("tmpfs"),
        MsFlags::empty(),
        Some("size=1m"),
    )
    .expect("mount tmpfs");
}

/// A bind of `dir` at `container_path`.
fn bind(dir: &Path, container_path: &str, propagation: MountPropagation, readonly: bool) -> Mount {
    Mount {
        container_path: container_path.into(),
        host_path: dir.display().to_string(),
        propagation: propagation as i32,
        readonly,
        ..Default::default()
    }
}

#[tokio::test]
async fn mount_propagation_host_to_container() {
    let mut env = PodEnv::start().await;
    let pod = env.run_pod(env.pod_config("volumes")).await;
    let volume = SharedDir::new(env.daemon().dir().join("volume"));
    fs::create_dir(volume.path.join("later")).unwrap();
    fs::write(volume.path.join("file"), "from the host\n").unwrap();

    let mut slave = env.container_config(&pod, "slave", &["sleep", "1000"]);
    slave.mounts = vec![bind(
        &volume.path,
        "/data",
        MountPropagation::PropagationHostToContainer,
        false,
    )];
    let slave = env.create_start(&pod, slave).await;
    let mut ro = env.container_config(&pod, "ro", &["sleep", "1000"]);
    ro.mounts = vec![bind(
        &volume.path,
        "/data",
        MountPropagation::PropagationPrivate,
        true,
    )];
    let ro = env.create_start(&pod, ro).await;
    assert_eq!(
        env.exec_ok(&slave, &["cat", "/data/file"]).await,
        "from the host\n"
    );
    assert_eq!(
        env.exec_ok(&ro, &["cat", "/data/file"]).await,
        "from the host\n"
    );

    // Mounted on the host after the container started.
    let later = volume.path.join("later");
    tmpfs(&later);
    fs::write(later.join("hello"), "mounted later\n").unwrap();
    assert_eq!(
        env.exec_ok(&slave, &["cat", "/data/later/hello"]).await,
        "mounted later\n",
        "HOST_TO_CONTAINER sees a mount made on the host after it started"
    );

    // Writes go through a rw bind; a readonly one refuses them.
    env.exec_ok(&slave, &["sh", "-c", "echo from-slave > /data/written"])
        .await;
    assert_eq!(
        fs::read_to_string(volume.path.join("written")).unwrap(),
        "from-slave\n"
    );
    let r = env
        .try_exec(&ro, &["sh", "-c", "echo x > /data/refused"], 10)
        .await
        .unwrap();
    assert_ne!(r.exit_code, 0, "write through a readonly mount");
    assert!(!volume.path.join("refused").exists());

    // Unmounted on the host: the slave follows.
    umount2(&later, MntFlags::MNT_DETACH).unwrap();
    assert_eq!(env.exec_ok(&slave, &["ls", "-A", "/data/later"]).await, "");
    env.remove_pod(&pod.id).await.unwrap();
}

#[tokio::test]
async fn private_mount_does_not_see_later_host_mounts() {
    let mut env = PodEnv::start().await;
    let pod = env.run_pod(env.pod_config("private")).await;
    let volume = SharedDir::new(env.daemon().dir().join("volume"));
    fs::create_dir(volume.path.join("later")).unwrap();
    let mut c = env.container_config(&pod, "private", &["sleep", "1000"]);
    c.mounts = vec![bind(
        &volume.path,
        "/data",
        MountPropagation::PropagationPrivate,
        false,
    )];
    let id = env.create_start(&pod, c).await;
    let later = volume.path.join("later");
    tmpfs(&later);
    fs::write(later.join("hello"), "mounted later\n").unwrap();
    let mounts = env
        .exec_ok(&id, &["grep", " /data", "/proc/self/mountinfo"])
        .await;
    assert_eq!(
        env.exec_ok(&id, &["ls", "-A", "/data/later"]).await,
        "",
        "PRIVATE: {mounts}"
    );
    assert!(
        !mounts.contains("master:"),
        "a PRIVATE mount is no slave: {mounts}"
    );
    env.remove_pod(&pod.id).await.unwrap();
}

/// The mounts under the daemon's temp dir, as /proc/self/mountinfo lists them.
fn mounts_under(dir: &Path) -> Vec<String> {
    let dir = dir.display().to_string();
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.contains(&dir))
        .map(|l| l.split(' ').skip(3).collect::<Vec<_>>().join(" "))
        .collect()
}

/// PRIVATE, HOST_TO_CONTAINER and BIDIRECTIONAL, each way, with real mounts: one privileged
/// container (so it may mount) binds the same shared host dir three times.
#[tokio::test]
async fn mount_propagation_both_ways() {
    let mut env = PodEnv::start().await;
    let before = mounts_under(env.daemon().dir());
    let mut config = env.pod_config("both-ways");
    pod_security(&mut config).privileged = true;
    let pod = env.run_pod(config).await;
    let volume = SharedDir::new(env.daemon().dir().join("volume"));
    for dir in ["from-host", "private-c", "slave-c", "shared-c"] {
        fs::create_dir(volume.path.join(dir)).unwrap();
    }
    let mut c = env.container_config(&pod, "mounts", &["sleep", "1000"]);
    security(&mut c).privileged = true;
    c.mounts = vec![
        bind(
            &volume.path,
            "/private",
            MountPropagation::PropagationPrivate,
            false,
        ),
        bind(
            &volume.path,
            "/slave",
            MountPropagation::PropagationHostToContainer,
            false,
        ),
        bind(
            &volume.path,
            "/shared",
            MountPropagation::PropagationBidirectional,
            false,
        ),
    ];
    let id = env.create_start(&pod, c).await;

    // Host → container: HOST_TO_CONTAINER and BIDIRECTIONAL see it, PRIVATE does not.
    let from_host = volume.path.join("from-host");
    tmpfs(&from_host);
    fs::write(from_host.join("hello"), "from the host\n").unwrap();
    let seen = env
        .exec_ok(
            &id,
            &[
                "sh",
                "-c",
                "for m in private slave shared; do echo $m $(cat /$m/from-host/hello 2>/dev/null); done",
            ],
        )
        .await;
    assert_eq!(
        seen, "private\nslave from the host\nshared from the host\n",
        "host to container"
    );

    // Container → host: only BIDIRECTIONAL's mount reaches the host.
    for (via, dir) in [
        ("private", "private-c"),
        ("slave", "slave-c"),
        ("shared", "shared-c"),
    ] {
        env.exec_ok(
            &id,
            &[
                "sh",
                "-c",
                &format!("mount -t tmpfs c /{via}/{dir} && echo made > /{via}/{dir}/file"),
            ],
        )
        .await;
    }
    let reached: Vec<bool> = ["private-c", "slave-c", "shared-c"]
        .iter()
        .map(|d| volume.path.join(d).join("file").exists())
        .collect();
    assert_eq!(
        reached,
        [false, false, true],
        "container to host (private, slave, shared)"
    );

    env.remove_pod(&pod.id).await.unwrap();
    drop(volume);
    assert_eq!(
        mounts_under(env.daemon().dir()),
        before,
        "mounts left behind"
    );
}

#[tokio::test]
async fn bidirectional_needs_privileged_and_a_shared_source() {
    let mut env = PodEnv::start().await;
    let mut config = env.pod_config("bidi");
    pod_security(&mut config).privileged = true;
    let pod = env.run_pod(config).await;
    let shared = SharedDir::new(env.daemon().dir().join("shared"));
    let private = SharedDir::private(env.daemon().dir().join("private"));
    fs::create_dir(private.path.join("sub")).unwrap();

    let mut c = env.container_config(&pod, "unprivileged", &["sleep", "1000"]);
    c.mounts = vec![bind(
        &shared.path,
        "/data",
        MountPropagation::PropagationBidirectional,
        false,
    )];
    let s = env.create(&pod, c).await.unwrap_err();
    assert_eq!(s.code(), tonic::Code::FailedPrecondition, "{s:?}");
    assert!(s.message().contains("privileged"), "{s:?}");

    let mut c = env.container_config(&pod, "not-shared", &["sleep", "1000"]);
    security(&mut c).privileged = true;
    let sub = private.path.join("sub");
    c.mounts = vec![bind(
        &sub,
        "/data",
        MountPropagation::PropagationBidirectional,
        false,
    )];
    let s = env.create(&pod, c).await.unwrap_err();
    assert_eq!(s.code(), tonic::Code::FailedPrecondition, "{s:?}");
    assert!(s.message().contains("shared mount"), "{s:?}");
    env.remove_pod(&pod.id).await.unwrap();
}

#[tokio::test]
async fn env_cwd_hostname_and_resolv_conf() {
    let mut env = PodEnv::start().await;
    let mut config = env.pod_config("webhost");
    config.dns_config = Some(DnsConfig {
        servers: vec!["10.96.0.10".into(), "1.1.1.1".into()],
        searches: vec![
            "default.svc.cluster.local".into(),
            "svc.cluster.local".into(),
        ],
        options: vec!["ndots:5".into()],
    });
    let pod = env.run_pod(config).await;

    let mut c = script(
        &env,
        &pod,
        "main",
        "echo \"FOO=$FOO\"; echo \"EMPTY=[$EMPTY]\"; echo \"PATH=$PATH\"; echo \"HOSTNAME=$HOSTNAME\"; pwd; hostname; cat /etc/hostname",
    );
    c.envs = vec![
        key_value("FOO", "bar baz"),
        key_value("EMPTY", ""),
        key_value("FOO", "last wins"),
    ];
    c.working_dir = "/srv/app/deep".into();
    let out = run(&mut env, &pod, c).await;
    assert_eq!(out.exit_code, 0, "{:?}", out.stderr);
    assert_eq!(
        out.stdout,
        [
            "FOO=last wins",
            "EMPTY=[]",
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "HOSTNAME=webhost",
            "/srv/app/deep",
            "webhost",
            "webhost",
        ]
    );

    // An env var overriding the image's PATH.
    let mut c = script(&env, &pod, "path", "echo $PATH");
    c.envs = vec![key_value("PATH", "/bin")];
    assert_eq!(run(&mut env, &pod, c).await.stdout, ["/bin"]);

    let c = script(&env, &pod, "resolv", "cat /etc/resolv.conf");

    let out = run(&mut env, &pod, c).await;
    assert_eq!(
        out.stdout,
        [
            "nameserver 10.96.0.10",
            "nameserver 1.1.1.1",
            "search default.svc.cluster.local svc.cluster.local",
            "options ndots:5",
        ]
    );
    // Without DNSConfig the pod gets the node's resolv.conf.
    let plain = env.run_pod(env.pod_config("plain")).await;
    let c = script(&env, &plain, "resolv", "cat /etc/resolv.conf");
    let out = run(&mut env, &plain, c).await;
    let host: Vec<String> = fs::read_to_string("/etc/resolv.conf")
        .unwrap_or_default()
        .lines()
        .map(String::from)
        .collect();
    assert_eq!(out.stdout, host);
}

/// The host cgroup dir of a running container's init in hierarchy `controller`.
fn host_cgroup(pid: i64, controller: &str) -> PathBuf {
    let cgroup = fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let path = cgroup
        .lines()
        .find_map(|l| {
            let mut parts = l.splitn(3, ':');
            let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
            controllers
                .split(',')
                .any(|c| c == controller)
                .then(|| path.to_owned())
        })
        .unwrap_or_else(|| panic!("no {controller} line in /proc/{pid}/cgroup:\n{cgroup}"));
    Path::new("/sys/fs/cgroup")
        .join(controller)
        .join(path.trim_start_matches('/'))
}

#[tokio::test]
async fn memory_and_cpu_limits_reach_the_cgroup() {
    let mut env = PodEnv::start().await;
    let pod = env.run_pod(env.pod_config("limits")).await;
    let mut c = env.container_config(&pod, "main", &["sleep", "1000"]);
    let r = resources(&mut c);
    r.memory_limit_in_bytes = 64 << 20;
    r.cpu_period = 100_000;
    r.cpu_quota = 50_000;
    r.cpu_shares = 512;
    let id = env.create_start(&pod, c).await;
    let pid = env.container_info(&id).await["pid"]
        .as_i64()
        .expect("verbose info has the pid");

    let read = |p: PathBuf| {
        fs::read_to_string(&p)
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
            .trim()
            .to_owned()
    };
    if Path::new("/sys/fs/cgroup/memory/memory.limit_in_bytes").exists() {
        let mem = host_cgroup(pid, "memory");
        assert!(
            mem.starts_with(
                Path::new("/sys/fs/cgroup/memory").join(env.cgroup_parent.trim_start_matches('/'))
            ),
            "the container's cgroup is under the pod's cgroup parent: {}",
            mem.display()
        );
        assert_eq!(
            read(mem.join("memory.limit_in_bytes")),
            (64u64 << 20).to_string()
        );
        let cpu = host_cgroup(pid, "cpu");
        assert_eq!(read(cpu.join("cpu.cfs_quota_us")), "50000");
        assert_eq!(read(cpu.join("cpu.cfs_period_us")), "100000");
        assert_eq!(read(cpu.join("cpu.shares")), "512");
        // And from inside, where /sys/fs/cgroup shows the container's own cgroup.
        let inside = env
            .exec_ok(&id, &["cat", "/sys/fs/cgroup/memory/memory.limit_in_bytes"])
            .await;
        assert_eq!(inside.trim(), (64u64 << 20).to_string());
    } else {
        let path = fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
        let rel = path
            .lines()
            .find_map(|l| l.strip_prefix("0::"))
            .expect("cgroup v2 line")
            .to_owned();
        let dir = Path::new("/sys/fs/cgroup").join(rel.trim_start_matches('/'));
        assert_eq!(read(dir.join("memory.max")), (64u64 << 20).to_string());
        assert_eq!(read(dir.join("cpu.max")), "50000 100000");
        let inside = env
            .exec_ok(&id, &["cat", "/sys/fs/cgroup/memory.max"])
            .await;
        assert_eq!(inside.trim(), (64u64 << 20).to_string());
    }
}

#[tokio::test]
async fn localhost_seccomp_profile_blocks_mkdir() {
    let mut env = PodEnv::start().await;
    let pod = env.run_pod(env.pod_config("seccomp")).await;
    let profile = env.daemon().dir().join("no-mkdir.json");
    fs::write(
        &profile,
        r#"{
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1, "comment": "EPERM"}]
        }"#,
    )
    .unwrap();
    let test = "touch /tmp/file && echo touched; mkdir /tmp/x && echo made";

    let mut c = script(&env, &pod, "blocked", test);
    security(&mut c).seccomp = Some(SecurityProfile {
        profile_type: ProfileType::Localhost as i32,
        localhost_ref: profile.display().to_string(),
    });
    let out = run(&mut env, &pod, c).await;
    assert_eq!(
        out.stdout,
        ["touched"],
        "only mkdir is denied: {:?}",
        out.stderr
    );
    assert_ne!(out.exit_code, 0);
    assert!(
        out.stderr
            .iter()
            .any(|l| l.contains("Operation not permitted")),
        "{:?}",
        out.stderr
    );

    // The deprecated string form the conformance suite still sends.
    #[allow(deprecated)]
    let legacy = {
        let mut c = script(&env, &pod, "legacy", test);
        security(&mut c).seccomp_profile_path = format!("localhost/{}", profile.display());
        c
    };
    let out = run(&mut env, &pod, legacy).await;
    assert_eq!(out.stdout, ["touched"], "{:?}", out.stderr);

    // With no_new_privs (loaded after the capabilities are dropped) as well.
    let mut c = script(&env, &pod, "nnp", test);
    let sc = security(&mut c);
    sc.no_new_privs = true;
    sc.seccomp = Some(SecurityProfile {
        profile_type: ProfileType::Localhost as i32,
        localhost_ref: profile.display().to_string(),
    });
    let out = run(&mut env, &pod, c).await;
    assert_eq!(out.stdout, ["touched"], "{:?}", out.stderr);

    // The runtime's default profile allows mkdir.
    let mut c = script(&env, &pod, "default", test);
    security(&mut c).seccomp = Some(SecurityProfile {
        profile_type: ProfileType::RuntimeDefault as i32,
        ..Default::default()
    });
    let out = run(&mut env, &pod, c).await;
    assert_eq!(out.stdout, ["touched", "made"], "{:?}", out.stderr);
    assert_eq!(out.exit_code, 0);
}

#[tokio::test]
async fn runtime_default_seccomp_writes_nothing_into_the_container_log() {
    let mut env = PodEnv::start().await;
    let pod = env.run_pod(env.pod_config("quiet")).await;
    let mut c = script(&env, &pod, "default", "echo only-this");
    security(&mut c).seccomp = Some(SecurityProfile {
        profile_type: ProfileType::RuntimeDefault as i32,
        ..Default::default()
    });
    let out = run(&mut env, &pod, c).await;
    assert_eq!(out.stdout, ["only-this"]);
    assert_eq!(
        out.stderr,
        Vec::<String>::new(),
        "the container wrote nothing to stderr"
    );
}

/// The fields of the mountinfo line (as a container printed its own) whose mount point is
/// `point`: (root, per-mount options, optional fields such as `shared:N`).
fn mountinfo_entry(lines: &[String], point: &str) -> Option<(String, String, Vec<String>)> {
    let found: Vec<_> = lines
        .iter()
        .filter_map(|l| {
            let fields: Vec<&str> = l.split(' ').collect();
            let dash = fields.iter().position(|f| *f == "-")?;
            (fields.get(4) == Some(&point)).then(|| {
                (
                    fields[3].to_string(),
                    fields[5].to_string(),
                    fields[6..dash].iter().map(|s| s.to_string()).collect(),
                )
            })
        })
        .collect();
    assert!(found.len() <= 1, "{point} mounted twice: {found:?}");
    found.into_iter().next()
}

/// `image` with /bin/busybox (the host's busybox-static) added, imported as
/// `proxrt.test/<name>:1`; returns the reference.
async fn import_with_busybox(env: &mut PodEnv, name: &str, image: common::TestImage) -> String {
    let busybox = fs::read("/bin/busybox").expect("busybox-static is installed");
    let layout = env.daemon().dir().join(name);
    image
        .executable("bin/busybox", &busybox)
        .write_layout(&layout);
    env.import_layout(&layout, &format!("proxrt.test/{name}:1"))
        .await
}

/// `c` with `image` (a reference the daemon has) instead of the test's busybox.
fn from_image(mut c: ContainerConfig, image: &str) -> ContainerConfig {
    c.image = Some(k8s_cri::v1::ImageSpec {
        image: image.into(),
        ..Default::default()
    });
    c
}

/// Creates `c` in `pod`: its id and the mounts' destinations of its config.json.
async fn create_reading_spec(
    env: &mut PodEnv,
    pod: &Pod,
    c: ContainerConfig,
) -> (String, Vec<String>) {
    let id = env.create(pod, c).await.unwrap();
    let in_spec = runtime_spec_destinations(env, &id).await;
    (id, in_spec)
}

/// The mounts' destinations of the config.json libcontainer was given for `id`.
async fn runtime_spec_destinations(env: &mut PodEnv, id: &str) -> Vec<String> {
    let info = env.container_info(id).await;
    let bundle = PathBuf::from(info["bundle"].as_str().expect("bundle in the info"));
    let spec: serde_json::Value =
        serde_json::from_slice(&fs::read(bundle.join("config.json")).unwrap()).unwrap();
    spec["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["destination"].as_str().unwrap().to_string())
        .collect()
}

/// The pod's files and a single-file volume are attached by the monitor before
/// libcontainer runs (monitor/premount.rs), not through config.json: in the container
/// they are the same mounts libcontainer makes — each once, of the same file, read-only
/// exactly when asked, private. (/dev with them: `dev_made_by_the_monitor_is_the_dev_libcontainer_makes`.)
#[tokio::test]
async fn the_pods_files_are_mounted_by_the_monitor_as_libcontainer_mounts_them() {
    let mut env = PodEnv::start().await;
    let pod = env.run_pod(env.pod_config("files")).await;
    let hostname = pod.config.hostname.clone();
    let conf = env.daemon().dir().join("app.conf");
    fs::write(&conf, "from a file volume\n").unwrap();
    let premounted = [
        "/etc/hostname",
        "/etc/hosts",
        "/etc/resolv.conf",
        "/etc/app.conf",
    ];
    for (name, readonly_rootfs, readonly_volume) in [("rw", false, true), ("ro", true, false)] {
        let mut c = script(
            &env,
            &pod,
            name,
            "cat /proc/self/mountinfo; echo ---; cat /etc/hostname /etc/app.conf",
        );
        c.mounts = vec![Mount {
            readonly: readonly_volume,
            ..bind(
                &conf,
                "/etc/app.conf",
                MountPropagation::PropagationPrivate,
                false,
            )
        }];
        security(&mut c).readonly_rootfs = readonly_rootfs;
        let log = pod.log_path(&c);
        let (id, in_spec) = create_reading_spec(&mut env, &pod, c).await;
        for d in premounted {
            assert!(!in_spec.contains(&d.to_string()), "{d} in config.json");
        }
        for d in ["/proc", "/sys/fs/cgroup"] {
            assert!(in_spec.contains(&d.to_string()), "{d}: {in_spec:?}");
        }
        env.start_container(&id).await.unwrap();
        let status = env.wait_exit(&id).await;
        let out = log_lines(&read_log(&log), "stdout");
        assert_eq!(status.exit_code, 0, "{out:?}");
        let split = out.iter().position(|l| l == "---").expect("the separator");
        let (mountinfo, rest) = (&out[..split], &out[split + 1..]);
        assert_eq!(rest, [hostname.as_str(), "from a file volume"]);
        for d in premounted {
            let (root, options, optional) = mountinfo_entry(mountinfo, d)
                .unwrap_or_else(|| panic!("{d} not mounted: {mountinfo:#?}"));
            let source = if d == "/etc/app.conf" {
                "/app.conf"
            } else {
                &d[4..]
            };
            assert!(root.ends_with(source), "{d}: root {root}");
            let readonly = if d == "/etc/app.conf" {
                readonly_volume
            } else {
                readonly_rootfs
            };
            assert_eq!(
                options.split(',').next(),
                Some(if readonly { "ro" } else { "rw" }),
                "{d}: {options}"
            );
            assert!(optional.is_empty(), "{d} is not private: {optional:?}");
        }
        env.remove_container(&id).await.unwrap();
    }
    env.remove_pod(&pod.id).await.unwrap();
}

/// /dev, /dev/pts, the pod's /dev/shm, /dev/mqueue and, for a pod on the host's network,
/// /sys are made by the monitor (monitor/premount.rs) exactly as libcontainer makes them:
/// the same mount table below /dev and /sys (but for the mounts' ids and device numbers)
/// and the same nodes and links in /dev as a container whose image has no /dev or /sys,
/// for which they go back to libcontainer; and the message queues are the pod's.
#[tokio::test]
async fn dev_made_by_the_monitor_is_the_dev_libcontainer_makes() {
    let mut env = PodEnv::start().await;
    let bare = import_with_busybox(&mut env, "no-dev", common::TestImage::new()).await;
    let mut config = env.pod_config("dev");
    pod_security(&mut config)
        .namespace_options
        .get_or_insert_with(pod_namespaces)
        .network = NamespaceMode::Node as i32;
    let pod = env.run_pod(config).await;
    let show = "cat /proc/self/mountinfo; echo ---; \
        /bin/busybox stat -c '%n %A %u %g %t %T %F' /dev /dev/* /dev/pts/* /dev/shm /dev/mqueue; \
        echo ---; /bin/busybox ls /dev/mqueue";
    let termination_log = env.daemon().dir().join("termination-log");
    fs::write(&termination_log, "").unwrap();
    let made_here = [
        "/dev",
        "/dev/pts",
        "/dev/shm",
        "/dev/mqueue",
        "/sys",
        "/dev/termination-log",
    ];
    let mut seen = Vec::new();
    for (name, image) in [("monitor", None), ("libcontainer", Some(&bare))] {
        // A message queue made in the first is seen in the second, of the same pod.
        let script = match image {
            None => format!("/bin/busybox touch /dev/mqueue/proxrt-q && {show}"),
            Some(_) => show.to_string(),
        };
        let mut c = env.container_config(&pod, name, &["/bin/busybox", "sh", "-c", &script]);
        // As kubelet's termination log: a file in /dev.
        c.mounts = vec![bind(
            &termination_log,
            "/dev/termination-log",
            MountPropagation::PropagationPrivate,
            false,
        )];
        if let Some(image) = image {
            c = from_image(c, image);
        }
        let log = pod.log_path(&c);
        let (id, in_spec) = create_reading_spec(&mut env, &pod, c).await;
        for d in made_here {
            let by_libcontainer = name == "libcontainer";
            assert_eq!(
                in_spec.contains(&d.to_string()),
                by_libcontainer,
                "{name}: {d}"
            );
        }
        for d in ["/proc", "/sys/fs/cgroup"] {
            assert!(in_spec.contains(&d.to_string()), "{name}: {d}");
        }
        env.start_container(&id).await.unwrap();
        let status = env.wait_exit(&id).await;
        let out = log_lines(&read_log(&log), "stdout");
        assert_eq!(status.exit_code, 0, "{name}: {out:?}");
        let split = out.iter().position(|l| l == "---").expect("the separator");
        let queues = out.iter().rposition(|l| l == "---").expect("the separator");
        assert_eq!(out[queues + 1..], ["proxrt-q"], "{name}: the pod's queues");
        let mounts = dev_and_sys_mounts(&out[..split], &id);
        for d in made_here.iter().chain(&["/sys/fs/cgroup"]) {
            let prefix = format!("{d} ");
            assert!(
                mounts.iter().any(|m| m.starts_with(&prefix)),
                "{name}: {d} in {mounts:#?}"
            );
        }
        seen.push((mounts, out[split + 1..queues].to_vec()));
        env.remove_container(&id).await.unwrap();
    }
    assert_eq!(
        seen[0].0, seen[1].0,
        "the mounts: the monitor's, then libcontainer's"
    );
    assert_eq!(
        seen[0].1, seen[1].1,
        "/dev's nodes: the monitor's, then libcontainer's"
    );
    assert!(
        seen[0]
            .1
            .iter()
            .any(|l| l.starts_with("/dev/null crw-rw-rw- 0 0 1 3")),
        "{:#?}",
        seen[0].1
    );
    env.remove_pod(&pod.id).await.unwrap();
}

/// The mounts of `mountinfo` on or below /dev and /sys, each as its mount point, its
/// parent's mount point, and the rest of its line but the ids and device numbers, with
/// the container's `id` (in its cgroups' paths) written `<id>`.
fn dev_and_sys_mounts(mountinfo: &[String], id: &str) -> Vec<String> {
    let points: std::collections::HashMap<&str, &str> = mountinfo
        .iter()
        .filter_map(|l| {
            let mut f = l.split(' ');
            let mount_id = f.next()?;
            Some((mount_id, f.nth(3)?))
        })
        .collect();
    let mut mounts: Vec<String> = mountinfo
        .iter()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            let point = *f.get(4)?;
            (point.starts_with("/dev") || point.starts_with("/sys")).then(|| {
                let parent = points.get(f[1]).copied().unwrap_or("?");
                format!("{point} in {parent}: {} {}", f[3], f[5..].join(" ")).replace(id, "<id>")
            })
        })
        .collect();
    mounts.sort();
    mounts
}

/// A pod file whose place in the image is not a plain file in a plain directory (here
/// /etc/hosts is a symlink) goes back into config.json for libcontainer, which mounts it
/// where the symlink leads, as it always did; the other pod files are still attached by
/// the monitor.
#[tokio::test]
async fn a_pod_file_the_monitor_cannot_attach_is_left_to_libcontainer() {
    let mut env = PodEnv::start().await;
    let layout = common::TestImage::new()
        .file("elsewhere/hosts", b"from the image\n")
        .symlink("etc/hosts", "/elsewhere/hosts");
    let image = import_with_busybox(&mut env, "symlinked-hosts", layout).await;
    let pod = env.run_pod(env.pod_config("symlinked")).await;
    let c = env.container_config(
        &pod,
        "reader",
        &["/bin/busybox", "cat", "/elsewhere/hosts", "/etc/hostname"],
    );
    let c = from_image(c, &image);
    let log = pod.log_path(&c);
    let (id, in_spec) = create_reading_spec(&mut env, &pod, c).await;
    assert!(in_spec.contains(&"/etc/hosts".to_string()), "{in_spec:?}");
    assert!(
        !in_spec.contains(&"/etc/hostname".to_string()),
        "{in_spec:?}"
    );
    env.start_container(&id).await.unwrap();
    let status = env.wait_exit(&id).await;
    let out = log_lines(&read_log(&log), "stdout");
    assert_eq!(status.exit_code, 0, "{out:?}");
    let pod_hosts = fs::read_to_string(
        env.daemon()
            .dir()
            .join("run")
            .join("s")
            .join(&pod.id[..16])
            .join("hosts"),
    );
    let pod_hosts = pod_hosts.expect("the pod's hosts file");
    let mut expected: Vec<&str> = pod_hosts.lines().collect();
    expected.push(pod.config.hostname.as_str());
    assert_eq!(out, expected);
    env.remove_container(&id).await.unwrap();
    env.remove_pod(&pod.id).await.unwrap();
}
