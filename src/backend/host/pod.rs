//! A host pod: the files its containers see, a private /dev/shm, namespaces made by the
//! zygote and held open by a holder process (`proxrt-pause`, pid 1 of the pod's pid
//! namespace when it has one), and, when the pod has its own network namespace, its CNI
//! network (src/network). Every step pushes its undo; a failure leaves nothing.

use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures_util::future::BoxFuture;
use k8s_cri::v1::{NamespaceMode, PodSandboxConfig};
use nix::mount::{mount, umount2, MntFlags, MsFlags};

use super::{files, holder_cgroup};
use crate::backend::{BackendError, PodParams, PodRuntime};
use crate::error::Kind;
use crate::intent::PodIntent;
use crate::monitor::{pidfd_open, teardown_sandbox, SandboxRequest, Zygote, HOLDER_NAME};
use crate::network::{AttachRequest, Network, NetworkError};
use crate::rollback::Rollback;
use crate::sandbox::{SandboxNamespaces, SandboxPaths, SandboxRecord};

/// Size of a pod's private /dev/shm (kubelet's and containerd's default).
const SHM_SIZE: &str = "size=65536k";

fn invalid(message: String) -> BackendError {
    BackendError::Failed {
        backend: "host",
        kind: Kind::InvalidArgument,
        message,
    }
}

fn io(what: String, e: std::io::Error) -> BackendError {
    BackendError::internal("host", format!("{what}: {e}"))
}

fn network_error(e: NetworkError) -> BackendError {
    use crate::error::Classify;
    BackendError::Failed {
        backend: "host",
        kind: e.kind(),
        message: e.to_string(),
    }
}

/// Whether the pod shares the node's network namespace (no CNI).
pub(super) fn host_network(config: &PodSandboxConfig) -> bool {
    crate::sandbox::namespace_options(config).network == NamespaceMode::Node as i32
}

pub(super) async fn run(
    zygote: &Zygote,
    network: &Arc<Network>,
    pod: &PodParams<'_>,
) -> Result<PodRuntime, BackendError> {
    let config = pod.config;
    let ns = crate::sandbox::namespace_options(config);
    let host_net = host_network(config);
    let host_ipc = ns.ipc == NamespaceMode::Node as i32;
    let pod_pid = ns.pid == NamespaceMode::Pod as i32;
    let hostname = if host_net {
        nix::unistd::gethostname()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_default()
    } else {
        config.hostname.clone()
    };
    if !host_net && !hostname.is_empty() {
        files::check_hostname(&hostname).map_err(invalid)?;
    }
    let resolv = files::resolv_conf(config.dns_config.as_ref()).map_err(invalid)?;

    let mut rb = Rollback::new(format!("run host pod {}", pod.id));
    let paths = SandboxPaths::of_run_dir(pod.run_dir);
    let run_dir = pod.run_dir.to_owned();
    std::fs::create_dir_all(&run_dir)
        .map_err(|e| io(format!("create {}", run_dir.display()), e))?;
    {
        let dir = run_dir.clone();
        rb.push("run dir", move || {
            let _ = std::fs::remove_dir_all(&dir);
        });
    }

    let write = |path: &Path, text: &str| {
        std::fs::write(path, text)
            .and_then(|()| make_world_readable(path))
            .map_err(|e| io(format!("write {}", path.display()), e))
    };
    write(&paths.hostname(), &format!("{hostname}\n"))?;
    if host_net {
        copy_host_file("/etc/hosts", &paths.hosts())?;
    } else {
        write(&paths.hosts(), &files::hosts(&hostname, None))?;
    }
    match resolv {
        Some(text) => write(&paths.resolv_conf(), &text)?,
        None => copy_host_file("/etc/resolv.conf", &paths.resolv_conf())?,
    }

    let shm = paths.shm();
    let shm_mounted = !host_ipc;
    if shm_mounted {
        std::fs::create_dir_all(&shm).map_err(|e| io(format!("create {}", shm.display()), e))?;
        mount(
            Some("shm"),
            &shm,
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            Some(format!("mode=1777,{SHM_SIZE}").as_str()),
        )
        .map_err(|e| {
            io(
                format!("mount /dev/shm tmpfs on {}", shm.display()),
                e.into(),
            )
        })?;
        let shm = shm.clone();
        rb.push("shm mount", move || {
            let _ = umount2(&shm, MntFlags::MNT_DETACH);
        });
        crate::crash_point!("run_pod_sandbox.shm");
    }

    // The holder's own leaf under the pod's cgroup, made before it exists so that the
    // rollback (last in, first out) removes it after the holder is gone.
    let cgroup_parent = config
        .linux
        .as_ref()
        .map(|l| l.cgroup_parent.as_str())
        .unwrap_or("");
    let holder_dirs = match holder_cgroup::leaf(cgroup_parent, pod.id).map_err(invalid)? {
        Some(leaf) => {
            let dirs = holder_cgroup::create(Path::new(CGROUP_BASE), &leaf)
                .map_err(|e| io("create the pod holder's cgroup".into(), e))?;
            let made = dirs.clone();
            rb.push("holder cgroup", move || {
                if let Err(e) = holder_cgroup::remove(&made, HOLDER_CGROUP_PATIENCE) {
                    tracing::warn!(error = %e, "rollback: the pod holder's cgroup");
                }
            });
            dirs
        }
        None => Vec::new(),
    };

    let sysctls = config
        .linux
        .as_ref()
        .map(|l| l.sysctls.clone())
        .unwrap_or_default();
    let ns_dir = paths.ns_dir();
    let holder_file = paths.holder();
    let created = zygote
        .spawn_sandbox(
            SandboxRequest {
                id: pod.id.to_owned(),
                dir: ns_dir.clone(),
                new_net: !host_net,
                new_ipc: !host_ipc,
                new_uts: !host_net,
                new_pid: pod_pid,
                // An empty hostname keeps the kernel's default in the new uts namespace.
                hostname: (!host_net && !hostname.is_empty()).then(|| hostname.clone()),
                sysctls: sysctls.into_iter().collect(),
                // The holder starts there: no move through cgroup.procs (sandbox.rs).
                cgroup_dirs: holder_dirs.clone(),
            },
            // Before the holder is kept: a daemon killed from here on leaves its pid.
            |created| {
                std::fs::write(&holder_file, created.holder_pid.to_string())
                    .map_err(|e| format!("write {}: {e}", holder_file.display()))
            },
        )
        .await?;
    crate::crash_point!("run_pod_sandbox.holder");
    {
        let (dir, pid) = (ns_dir.clone(), created.holder_pid);
        rb.push("namespaces", move || {
            if let Err(e) = teardown_sandbox(&dir, Some(pid)) {
                tracing::warn!(error = %e, "rollback: tear down pod namespaces");
            }
        });
    }
    crate::crash_point!("run_pod_sandbox.holder_cgroup");

    let network = match &created.net_ns {
        Some(netns) => {
            // CNI's allocations outlive a reboot: the intent that undoes them comes first.
            pod.intent_on_disk
                .wait()
                .await
                .map_err(|e| io("sync the pod's intent".into(), std::io::Error::other(e)))?;
            let attached = network
                .attach(AttachRequest {
                    id: pod.id,
                    config,
                    netns,
                })
                .await
                .map_err(network_error)?;
            {
                let (network, attached, netns) = (network.clone(), attached.clone(), netns.clone());
                rb.push_async("cni network", move || async move {
                    if let Err(e) = network.detach(&attached, Some(&netns)).await {
                        tracing::warn!(error = %e, "rollback: CNI DEL");
                    }
                });
            }
            crate::crash_point!("run_pod_sandbox.network");
            let ip = attached.ips.first().map(String::as_str);
            write(&paths.hosts(), &files::hosts(&hostname, ip))?;
            Some(attached)
        }
        None => None,
    };
    rb.commit();
    Ok(PodRuntime {
        network,
        hostname,
        holder_pid: Some(created.holder_pid),
        namespaces: SandboxNamespaces {
            pid_inode: created.pid_ns.as_deref().and_then(ns_inode),
            ipc_inode: created.ipc_ns.as_deref().and_then(ns_inode),
            uts_inode: created.uts_ns.as_deref().and_then(ns_inode),
            net: created.net_ns,
            ipc: created.ipc_ns,
            uts: created.uts_ns,
            pid: created.pid_ns,
        },
        shm_mounted,
    })
}

/// CNI DEL (while the netns still exists), then kills the holder and unmounts the
/// namespace files. A failed DEL fails the stop before anything else goes, so that a
/// retry finds the namespace still there.
pub(super) async fn stop(network: &Network, pod: &SandboxRecord) -> Result<(), BackendError> {
    if let Some(attached) = &pod.network {
        network
            .detach(attached, pod.namespaces.net.as_deref())
            .await
            .map_err(network_error)?;
    }
    // The pid is killed only while its namespaces are still this pod's: once the holder
    // is gone, its recycled pid may name any process (another pod's holder too, which
    // the name check in `teardown_sandbox` would not tell apart without ns files).
    let pid = pod.holder_pid.filter(|_| same_namespaces(pod));
    let dir = pod.paths().ns_dir();
    let holder_dirs = holder_dirs(pod.cgroup_parent(), &pod.id);
    tokio::task::spawn_blocking(move || teardown_sandbox(&dir, pid))
        .await
        .map_err(|e| BackendError::internal("host", format!("teardown task: {e}")))??;
    // The holder is gone: its leaf goes beside the answer (an rmdir per cgroup v1
    // hierarchy, and the wait until the exited holder has left it); RemovePodSandbox tries
    // again and fails if it cannot.
    if !holder_dirs.is_empty() {
        tokio::task::spawn_blocking(move || {
            if let Err(e) = holder_cgroup::remove(&holder_dirs, HOLDER_CGROUP_PATIENCE) {
                tracing::warn!(error = %e, "stop pod: the holder's cgroup");
            }
        });
    }
    Ok(())
}

/// Where the pod's holder cgroup leaves are now (none without a cgroup parent).
fn holder_dirs(cgroup_parent: &str, pod_id: &str) -> Vec<PathBuf> {
    match holder_cgroup::leaf(cgroup_parent, pod_id) {
        Ok(Some(leaf)) => holder_cgroup::existing(Path::new(CGROUP_BASE), &leaf),
        _ => Vec::new(),
    }
}

/// Where the cgroup hierarchies are mounted.
const CGROUP_BASE: &str = "/sys/fs/cgroup";
/// How long an exiting holder gets to leave its cgroup before its removal fails.
const HOLDER_CGROUP_PATIENCE: std::time::Duration = std::time::Duration::from_secs(2);

/// Unmounts /dev/shm, removes the holder's cgroup and the run dir (after `stop`).
pub(super) fn remove(pod: &SandboxRecord) -> Result<(), BackendError> {
    let paths = pod.paths();
    holder_cgroup::remove(
        &holder_dirs(pod.cgroup_parent(), &pod.id),
        HOLDER_CGROUP_PATIENCE,
    )
    .map_err(|e| BackendError::internal("host", e))?;
    if pod.shm_mounted {
        match umount2(&paths.shm(), MntFlags::MNT_DETACH) {
            Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
            Err(e) => return Err(io(format!("unmount {}", paths.shm().display()), e.into())),
        }
    }
    crate::mounts::remove_tree(&paths.run_dir)
        .map_err(|e| io(format!("remove {}", paths.run_dir.display()), e))
}

/// Undoes whatever `run` made of a pod whose record was never written (the daemon was
/// killed in RunPodSandbox; found by the next start from its intent): CNI DEL while the
/// network namespace is still held (a pod never attached is fine), the holder found by
/// the pid written before it was kept (checked by name and namespaces before it is
/// killed), the namespace files, its cgroup, /dev/shm and the run dir.
pub(super) async fn abandon(network: &Network, intent: &PodIntent) -> Result<(), BackendError> {
    let paths = SandboxPaths::of_run_dir(&intent.run_dir);
    let own_network =
        crate::sandbox::namespace_options(&intent.config).network != NamespaceMode::Node as i32;
    let mut problems = Vec::new();
    if own_network {
        let netns = paths.ns_dir().join("net");
        if let Err(e) = network
            .release(&intent.id, &intent.config, Some(&netns))
            .await
        {
            problems.push(e.to_string());
        }
    }
    let holder = std::fs::read_to_string(paths.holder())
        .ok()
        .and_then(|p| p.trim().parse::<i32>().ok());
    let cgroup_parent = intent
        .config
        .linux
        .as_ref()
        .map(|l| l.cgroup_parent.clone())
        .unwrap_or_default();
    let id = intent.id.clone();
    let rest = tokio::task::spawn_blocking(move || {
        let mut problems = Vec::new();
        if let Err(e) = teardown_sandbox(&paths.ns_dir(), holder) {
            problems.push(e.to_string());
        }
        if let Err(e) =
            holder_cgroup::remove(&holder_dirs(&cgroup_parent, &id), HOLDER_CGROUP_PATIENCE)
        {
            problems.push(e);
        }
        if let Err(e) = crate::mounts::remove_tree(&paths.run_dir) {
            problems.push(format!("remove {}: {e}", paths.run_dir.display()));
        }
        problems
    })
    .await
    .map_err(|e| BackendError::internal("host", format!("undo task: {e}")))?;
    problems.extend(rest);
    if problems.is_empty() {
        Ok(())
    } else {
        Err(BackendError::internal("host", problems.join("; ")))
    }
}

/// Whether a ready pod's namespaces still exist: its holder runs (when it has one), the
/// pid, ipc and uts namespaces reached through it are still the ones the pod was made
/// with (a recycled pid would hand a new container another process's namespaces), and
/// its namespace file (net) is still mounted.
pub(super) fn alive(r: &SandboxRecord) -> bool {
    let holder_ok = match r.holder_pid {
        Some(pid) => std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .is_ok_and(|c| c.trim_end() == HOLDER_NAME),
        None => true,
    };
    let identities_ok = same_namespaces(r);
    let files_ok = [&r.namespaces.net, &r.namespaces.ipc, &r.namespaces.uts]
        .into_iter()
        .flatten()
        .all(|p| p.exists());
    holder_ok && identities_ok && files_ok
}

/// Whether every namespace recorded with its inode still has it (records from before
/// inodes were kept pass).
fn same_namespaces(r: &SandboxRecord) -> bool {
    r.namespaces
        .identities()
        .into_iter()
        .all(|(path, inode)| match (path, inode) {
            (Some(path), Some(inode)) => ns_inode(path) == Some(inode),
            _ => true,
        })
}

/// The inode of a namespace file (`/proc/<pid>/ns/pid`): what identifies the namespace.
fn ns_inode(path: &Path) -> Option<u64> {
    std::fs::metadata(path).ok().map(|m| m.ino())
}

/// Resolves when the pod's holder exits (its pidfd turns readable); at once when it is
/// already gone or its pid now names another process. None for a pod without a holder.
pub(super) fn gone(r: &SandboxRecord) -> Option<BoxFuture<'static, ()>> {
    let pid = r.holder_pid?;
    let pidfd = match pidfd_open(pid) {
        Ok(fd) => fd,
        Err(_) => return Some(Box::pin(async {})),
    };
    // The pidfd pins whichever process has the pid now: check it is still this pod's
    // holder (the pid could have been recycled since the record was written).
    if !alive(r) {
        return Some(Box::pin(async {}));
    }
    Some(Box::pin(async move {
        // SAFETY: `pidfd` is owned by this future and outlives the registration, which is
        // dropped at the end of the match, before it.
        let registered = unsafe {
            tokio::io::unix::AsyncFd::register_with_interest(
                Fd(pidfd.as_raw_fd()),
                tokio::io::Interest::READABLE,
            )
        };
        match registered {
            Ok(fd) => {
                let _ = fd.readable().await;
            }
            Err(e) => {
                tracing::warn!(pid, error = %e, "cannot watch the pod holder; its death is seen at the next restart");
                std::future::pending::<()>().await;
            }
        }
    }))
}

/// A borrowed descriptor for the reactor (the owner keeps it open).
struct Fd(std::os::fd::RawFd);

impl std::os::fd::AsRawFd for Fd {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.0
    }
}

fn copy_host_file(from: &str, to: &Path) -> Result<(), BackendError> {
    match std::fs::copy(from, to) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::write(to, "").map_err(|e| io(format!("write {}", to.display()), e))?
        }
        Err(e) => return Err(io(format!("copy {from} to {}", to.display()), e)),
    }
    make_world_readable(to).map_err(|e| io(format!("chmod {}", to.display()), e))
}

/// hostname, hosts and resolv.conf are bind-mounted into containers whose processes may
/// run as any user: 0644, whatever the daemon's umask (077) made them.
fn make_world_readable(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644))
}
