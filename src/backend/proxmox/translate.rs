//! CRI container + pod → the parameters of `POST /nodes/{node}/lxc`. Pure: no I/O, every
//! refusal an InvalidArgument message naming the field.

use k8s_cri::v1::{ContainerConfig, LinuxContainerResources, PodSandboxConfig};

use crate::config::ProxmoxConfig;
use crate::proxmox::{CreateLxc, NetConfig, RootFs};

/// The tag on every guest proxrt makes: `GET /nodes/{node}/lxc` finds them all again.
pub const PROXRT_TAG: &str = "proxrt";

/// PVE's smallest `memory` (MiB).
const MIN_MEMORY_MIB: u64 = 16;
const MIB: i64 = 1 << 20;

/// The create parameters of the guest for container `container_id` of `pod`, from
/// `template` (VMID left 0: the client takes one from nextid).
pub fn create_params(
    container_id: &str,
    template: &str,
    config: &ContainerConfig,
    pod: &PodSandboxConfig,
    settings: &ProxmoxConfig,
) -> Result<CreateLxc, String> {
    refuse_host_resources(config)?;
    let meta = pod.metadata.clone().unwrap_or_default();
    let resources = config
        .linux
        .as_ref()
        .and_then(|l| l.resources.clone())
        .unwrap_or_default();
    let (memory_mib, swap_mib) = memory(
        resources.memory_limit_in_bytes,
        resources.memory_swap_limit_in_bytes,
    )?;
    let (cores, cpulimit) = cpu(resources.cpu_quota, resources.cpu_period);
    let dns = pod.dns_config.clone().unwrap_or_default();
    let nonempty = |v: Vec<String>| (!v.is_empty()).then(|| v.join(" "));
    Ok(CreateLxc {
        vmid: 0,
        ostemplate: template.to_owned(),
        hostname: Some(hostname(pod)?),
        memory_mib,
        swap_mib,
        cores,
        cpulimit,
        cpuunits: cpu_weight(resources.cpu_shares),
        storage: None,
        rootfs: Some(RootFs {
            storage: settings.storage.clone(),
            size_gb: settings.rootfs_size_gb,
        }),
        net0: Some(NetConfig::dhcp(settings.bridge.clone())),
        unprivileged: Some(true),
        nesting: Some(true),
        nameserver: nonempty(dns.servers),
        searchdomain: nonempty(dns.searches),
        ostype: None,
        start: Some(false),
        tags: tags(&meta.uid),
        description: Some(format!(
            "proxrt container {container_id}\npod {}/{} uid {}",
            meta.namespace, meta.name, meta.uid
        )),
        ssh_public_keys: None,
    })
}

/// The `PUT …/config` form for new limits (UpdateContainerResources); limits not given
/// are left as they are.
pub fn config_update(r: &LinuxContainerResources) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    let (memory, swap) = memory(r.memory_limit_in_bytes, r.memory_swap_limit_in_bytes)?;
    if let (Some(m), Some(s)) = (memory, swap) {
        out.push(("memory".to_owned(), m.to_string()));
        out.push(("swap".to_owned(), s.to_string()));
    }
    if let (Some(cores), Some(limit)) = cpu(r.cpu_quota, r.cpu_period) {
        out.push(("cores".to_owned(), cores.to_string()));
        out.push((
            "cpulimit".to_owned(),
            format!("{}", (limit * 100.0).round() / 100.0),
        ));
    }
    if let Some(w) = cpu_weight(r.cpu_shares) {
        out.push(("cpuunits".to_owned(), w.to_string()));
    }
    Ok(out)
}

/// What a guest cannot take: host paths and devices need `mpN`/`devN` with host paths,
/// which PVE allows root@pam only, never an API token (docs/proxmox.md).
fn refuse_host_resources(config: &ContainerConfig) -> Result<(), String> {
    if let Some(m) = config.mounts.first() {
        return Err(format!(
            "mount {:?} → {:?}: a proxmox-lxc guest takes no CRI mounts (bind mount points \
             with host paths are root@pam only in PVE; an API token cannot set them)",
            m.host_path, m.container_path
        ));
    }
    if let Some(d) = config.devices.first() {
        return Err(format!(
            "device {:?}: a proxmox-lxc guest takes no CRI devices (device passthrough is \
             root@pam only in PVE)",
            d.host_path
        ));
    }
    Ok(())
}

/// The pod's hostname (or its name) as a DNS label PVE accepts: lowercase letters, digits
/// and `-`, at most 63 characters, starting with a letter or digit.
fn hostname(pod: &PodSandboxConfig) -> Result<String, String> {
    let raw = match pod.hostname.as_str() {
        "" => pod.metadata.as_ref().map(|m| m.name.as_str()).unwrap_or(""),
        h => h,
    };
    let mut h: String = raw
        .chars()
        .map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9' | '-' | '.') => c,
            _ => '-',
        })
        .collect();
    h.truncate(63);
    let h = h.trim_matches(|c| c == '-' || c == '.').to_owned();
    if h.is_empty() {
        return Err(format!(
            "pod hostname {raw:?} gives no usable guest hostname"
        ));
    }
    Ok(h)
}

/// `memory` and `swap` in MiB. CRI's swap limit is memory + swap (Docker's
/// `--memory-swap`); no swap limit means no swap, as kubelet runs pods.
fn memory(limit: i64, swap_limit: i64) -> Result<(Option<u64>, Option<u64>), String> {
    if limit <= 0 {
        return Ok((None, None));
    }
    let mib = |b: i64| (b as u64).div_ceil(MIB as u64);
    let memory = mib(limit);
    if memory < MIN_MEMORY_MIB {
        return Err(format!(
            "memory limit {limit} bytes is below the {MIN_MEMORY_MIB} MiB a Proxmox guest needs"
        ));
    }
    let swap = match swap_limit {
        s if s > limit => mib(s - limit),
        _ => 0,
    };
    Ok((Some(memory), Some(swap)))
}

/// `cores` and `cpulimit` from the CFS quota: 0.5 CPU → cpulimit 0.5 on one core.
fn cpu(quota: i64, period: i64) -> (Option<u32>, Option<f64>) {
    if quota <= 0 || period <= 0 {
        return (None, None);
    }
    let limit = quota as f64 / period as f64;
    let cores = (limit.ceil() as u32).clamp(1, 8192);
    (Some(cores), Some(limit.min(8192.0)))
}

/// `cpuunits` from CPU shares. PVE 7+ hosts are cgroup v2, where cpuunits is the
/// `cpu.weight` (1–10000, default 100): converted as kubelet and runc convert shares.
fn cpu_weight(shares: i64) -> Option<u32> {
    if shares <= 0 {
        return None;
    }
    let shares = shares.clamp(2, 262_144) as u64;
    Some((1 + ((shares - 2) * 9999) / 262_142) as u32)
}

/// `proxrt` and the pod uid (a PVE tag: letters, digits, `_-+.`).
fn tags(uid: &str) -> Vec<String> {
    let mut tags = vec![PROXRT_TAG.to_owned()];
    let uid: String = uid
        .chars()
        .map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9' | '_' | '-' | '+' | '.') => c,
            _ => '_',
        })
        .collect();
    match uid.trim_start_matches(['-', '+', '.']) {
        "" => {}
        u => tags.push(u.to_owned()),
    }
    tags
}

/// Whether a guest's `tags` (PVE joins them with `;`) mark it as proxrt's.
pub fn is_proxrt_guest(tags: Option<&str>) -> bool {
    tags.unwrap_or_default()
        .split([';', ',', ' '])
        .any(|t| t == PROXRT_TAG)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_cri::v1::{
        DnsConfig, LinuxContainerConfig, LinuxContainerResources, Mount, PodSandboxMetadata,
    };

    fn pod() -> PodSandboxConfig {
        PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: "db".into(),
                namespace: "prod".into(),
                uid: "6F1C2B9E-1D2C-4B9A-9D1E-0A1B2C3D4E5F".into(),
                attempt: 0,
            }),
            hostname: "DB_Primary".into(),
            dns_config: Some(DnsConfig {
                servers: vec!["10.0.0.53".into(), "10.0.0.54".into()],
                searches: vec!["prod.svc.cluster.local".into()],
                options: vec![],
            }),
            ..Default::default()
        }
    }

    fn with_resources(r: LinuxContainerResources) -> ContainerConfig {
        ContainerConfig {
            linux: Some(LinuxContainerConfig {
                resources: Some(r),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn settings() -> ProxmoxConfig {
        crate::config::Config::default().proxmox
    }

    #[test]
    fn a_pod_with_limits_becomes_a_guest_with_the_same_limits() {
        let c = with_resources(LinuxContainerResources {
            memory_limit_in_bytes: 512 * MIB,
            memory_swap_limit_in_bytes: 768 * MIB,
            cpu_quota: 150_000,
            cpu_period: 100_000,
            cpu_shares: 1024,
            ..Default::default()
        });
        let p =
            create_params("c1", "local:vztmpl/debian.tar.zst", &c, &pod(), &settings()).unwrap();
        assert_eq!(p.hostname.as_deref(), Some("db-primary"));
        assert_eq!((p.memory_mib, p.swap_mib), (Some(512), Some(256)));
        assert_eq!((p.cores, p.cpulimit), (Some(2), Some(1.5)));
        assert_eq!(p.cpuunits, Some(39));
        assert_eq!(
            p.rootfs,
            Some(RootFs {
                storage: "local-lvm".into(),
                size_gb: 8
            })
        );
        assert_eq!(p.unprivileged, Some(true));
        assert_eq!(p.nesting, Some(true));
        assert_eq!(
            p.tags,
            vec!["proxrt", "6f1c2b9e-1d2c-4b9a-9d1e-0a1b2c3d4e5f"]
        );
        assert_eq!(p.nameserver.as_deref(), Some("10.0.0.53 10.0.0.54"));
        assert_eq!(p.searchdomain.as_deref(), Some("prod.svc.cluster.local"));
        assert!(p.description.as_deref().unwrap().contains("prod/db"));
        // Every value passes the client's schema checks.
        let form = CreateLxc { vmid: 100, ..p }.to_params().unwrap();
        assert!(
            form.contains(&("net0".into(), "name=eth0,bridge=vmbr0,ip=dhcp".into())),
            "{form:?}"
        );
    }

    #[test]
    fn no_limits_leave_pve_defaults_and_no_swap_limit_means_no_swap() {
        let p = create_params(
            "c",
            "local:vztmpl/t.tar.gz",
            &ContainerConfig::default(),
            &pod(),
            &settings(),
        )
        .unwrap();
        assert_eq!(
            (p.memory_mib, p.swap_mib, p.cores, p.cpulimit, p.cpuunits),
            (None, None, None, None, None)
        );
        let c = with_resources(LinuxContainerResources {
            memory_limit_in_bytes: 100 * MIB + 1,
            ..Default::default()
        });
        let p = create_params("c", "local:vztmpl/t.tar.gz", &c, &pod(), &settings()).unwrap();
        assert_eq!((p.memory_mib, p.swap_mib), (Some(101), Some(0)));
    }

    #[test]
    fn host_mounts_devices_and_tiny_memory_are_refused_by_name() {
        let mut c = ContainerConfig::default();
        c.mounts.push(Mount {
            host_path: "/srv/data".into(),
            container_path: "/data".into(),
            ..Default::default()
        });
        let e = create_params("c", "local:vztmpl/t", &c, &pod(), &settings()).unwrap_err();
        assert!(e.contains("/srv/data") && e.contains("root@pam"), "{e}");
        let c = with_resources(LinuxContainerResources {
            memory_limit_in_bytes: 8 * MIB,
            ..Default::default()
        });
        let e = create_params("c", "local:vztmpl/t", &c, &pod(), &settings()).unwrap_err();
        assert!(e.contains("16 MiB"), "{e}");
        let mut p = pod();
        p.hostname = "___".into();
        p.metadata.as_mut().unwrap().name = "".into();
        assert!(create_params(
            "c",
            "local:vztmpl/t",
            &ContainerConfig::default(),
            &p,
            &settings()
        )
        .is_err());
    }

    #[test]
    fn proxrt_guests_are_found_by_tag() {
        assert!(is_proxrt_guest(Some("proxrt;abc")));
        assert!(is_proxrt_guest(Some("web;proxrt")));
        assert!(!is_proxrt_guest(Some("proxrtx;web")));
        assert!(!is_proxrt_guest(None));
    }
}
