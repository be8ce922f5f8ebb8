//! RunPodSandbox: reserve the name, lay out the pod's files, make its namespaces,
//! persist the record. Every step pushes its undo; a failure leaves nothing.

use std::path::Path;
use std::sync::Arc;

use k8s_cri::v1::{NamespaceMode, PodSandboxConfig};

use super::files;
use super::{
    sandbox_name, Sandbox, SandboxError, SandboxNamespaces, SandboxRecord, SandboxState,
    RECORD_FILE,
};
use crate::daemon::Daemon;
use crate::image::content::random_hex;
use crate::monitor::{teardown_sandbox, SandboxRequest};
use crate::rollback::Rollback;

/// Size of a pod's private /dev/shm (kubelet's and containerd's default).
const SHM_SIZE: &str = "size=65536k";

pub async fn run_pod_sandbox(
    d: &Daemon,
    config: PodSandboxConfig,
    runtime_handler: &str,
) -> Result<String, SandboxError> {
    let name = sandbox_name(&config)?;
    let (backend, backend_reason) = d.select_sandbox_backend(runtime_handler, &config)?;
    let id = random_hex(32);
    let mut rb = Rollback::new(format!("run pod sandbox {id}"));

    d.names().reserve(&name, &id)?;
    {
        let (names, name, id) = (d.names_arc(), name.clone(), id.clone());
        rb.push("name", move || names.release(&name, &id));
    }

    let ns = config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .and_then(|s| s.namespace_options.clone())
        .unwrap_or_default();
    let host_net = ns.network == NamespaceMode::Node as i32;
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
        files::check_hostname(&hostname).map_err(SandboxError::Invalid)?;
    }
    let resolv = files::resolv_conf(config.dns_config.as_ref()).map_err(SandboxError::Invalid)?;

    let state_dir = d.sandboxes().dir().join(&id);
    let run_dir = d.config().daemon.run_dir.join("s").join(&id[..16]);
    for dir in [&state_dir, &run_dir] {
        std::fs::create_dir_all(dir)
            .map_err(|e| SandboxError::io(format!("create {}", dir.display()), e))?;
        let dir = dir.clone();
        rb.push("dir", move || {
            let _ = std::fs::remove_dir_all(&dir);
        });
    }

    let io = |what: &Path, e| SandboxError::io(format!("write {}", what.display()), e);
    let write = |path: &Path, text: &str| std::fs::write(path, text).map_err(|e| io(path, e));
    write(&run_dir.join("hostname"), &format!("{hostname}\n"))?;
    if host_net {
        copy_host_file("/etc/hosts", &run_dir.join("hosts"))?;
    } else {
        write(&run_dir.join("hosts"), &files::hosts(&hostname))?;
    }
    match resolv {
        Some(text) => write(&run_dir.join("resolv.conf"), &text)?,
        None => copy_host_file("/etc/resolv.conf", &run_dir.join("resolv.conf"))?,
    }

    let shm = run_dir.join("shm");
    let shm_mounted = !host_ipc;
    if shm_mounted {
        std::fs::create_dir_all(&shm).map_err(|e| io(&shm, e))?;
        use nix::mount::{mount, umount2, MntFlags, MsFlags};
        mount(
            Some("shm"),
            &shm,
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            Some(format!("mode=1777,{SHM_SIZE}").as_str()),
        )
        .map_err(|e| {
            SandboxError::io(
                format!("mount /dev/shm tmpfs on {}", shm.display()),
                e.into(),
            )
        })?;
        let shm = shm.clone();
        rb.push("shm mount", move || {
            let _ = umount2(&shm, MntFlags::MNT_DETACH);
        });
    }

    let sysctls = config
        .linux
        .as_ref()
        .map(|l| l.sysctls.clone())
        .unwrap_or_default();
    let ns_dir = run_dir.join("ns");
    let created = d
        .zygote()
        .spawn_sandbox(SandboxRequest {
            id: id.clone(),
            dir: ns_dir.clone(),
            new_net: !host_net,
            new_ipc: !host_ipc,
            new_uts: !host_net,
            new_pid: pod_pid,
            // An empty hostname keeps the kernel's default in the new uts namespace.
            hostname: (!host_net && !hostname.is_empty()).then(|| hostname.clone()),
            sysctls: sysctls.into_iter().collect(),
        })
        .await?;
    {
        let (dir, pid) = (ns_dir.clone(), created.holder_pid);
        rb.push("namespaces", move || {
            if let Err(e) = teardown_sandbox(&dir, Some(pid)) {
                tracing::warn!(error = %e, "tear down namespaces during rollback");
            }
        });
    }

    let record = SandboxRecord {
        id: id.clone(),
        name,
        config,
        runtime_handler: runtime_handler.to_owned(),
        backend,
        backend_reason,
        created_at: chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default(),
        state: SandboxState::Ready,
        holder_pid: Some(created.holder_pid),
        namespaces: SandboxNamespaces {
            net: created.net_ns,
            ipc: created.ipc_ns,
            uts: created.uts_ns,
            pid: created.pid_ns,
        },
        hostname,
        run_dir,
        shm_mounted,
    };
    crate::store::write_json(&state_dir.join(RECORD_FILE), &record)?;
    rb.commit();
    d.sandboxes().insert(Arc::new(Sandbox::new(record)));
    tracing::info!(sandbox = %id, "pod sandbox ready");
    Ok(id)
}

fn copy_host_file(from: &str, to: &Path) -> Result<(), SandboxError> {
    match std::fs::copy(from, to) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => std::fs::write(to, "")
            .map_err(|e| SandboxError::io(format!("write {}", to.display()), e)),
        Err(e) => Err(SandboxError::io(
            format!("copy {from} to {}", to.display()),
            e,
        )),
    }
}
