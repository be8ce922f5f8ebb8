//! Owned test data from which a [`SpecInput`] is borrowed, so each test changes only the
//! field it is about.

use std::path::PathBuf;

use k8s_cri::v1::{
    ContainerConfig, LinuxContainerConfig, LinuxContainerResources, LinuxContainerSecurityContext,
    PodSandboxConfig,
};

use super::{HostView, ResolvedDevice, SandboxView, SpecInput, UserDb};

pub(crate) struct Fixture {
    pub container_id: String,
    pub config: ContainerConfig,
    pub sandbox_config: PodSandboxConfig,
    pub image: oci_spec::image::Config,
    pub rootfs: PathBuf,
    pub users: UserDb,
    pub sandbox: SandboxView,
    pub host: HostView,
    pub cgroups_path: String,
    pub seccomp_localhost: Option<String>,
    pub devices: Vec<ResolvedDevice>,
}

impl Fixture {
    /// A pod with its own net/ipc/uts/pid namespaces and sandbox files, on a cgroup v2 host;
    /// an empty container config and image config.
    pub fn new() -> Fixture {
        Fixture {
            container_id: "c0ffee".into(),
            config: ContainerConfig::default(),
            sandbox_config: PodSandboxConfig::default(),
            image: oci_spec::image::Config::default(),
            rootfs: "/rootfs".into(),
            users: UserDb::default(),
            sandbox: SandboxView {
                net_ns: Some("/run/netns/pod".into()),
                ipc_ns: Some("/proc/100/ns/ipc".into()),
                uts_ns: Some("/proc/100/ns/uts".into()),
                pid_ns: Some("/proc/100/ns/pid".into()),
                target_pid_ns: None,
                hostname: "web-7d4b9c".into(),
                hostname_path: Some("/run/proxrt/pod/hostname".into()),
                hosts_path: Some("/run/proxrt/pod/hosts".into()),
                resolv_conf_path: Some("/run/proxrt/pod/resolv.conf".into()),
                shm_path: Some("/run/proxrt/pod/shm".into()),
                privileged: false,
            },
            host: HostView {
                oom_score_adj_min: -1000,
                cgroup_v2: true,
                hugepage_sizes: vec!["2MB".into(), "1GB".into()],
                capabilities: super::capabilities::all_capabilities(),
                // A Proxmox host: AppArmor enforces and the default profile is loaded.
                apparmor: crate::apparmor::AppArmorHost::Enabled {
                    default: Ok(crate::apparmor::DEFAULT_PROFILE.into()),
                },
            },
            cgroups_path: "/kubepods/pod-uid/ctr".into(),
            seccomp_localhost: None,
            devices: Vec::new(),
        }
    }

    pub fn input(&self) -> SpecInput<'_> {
        SpecInput {
            container_id: &self.container_id,
            config: &self.config,
            sandbox_config: &self.sandbox_config,
            image: &self.image,
            rootfs: &self.rootfs,
            users: &self.users,
            sandbox: &self.sandbox,
            host: &self.host,
            cgroups_path: &self.cgroups_path,
            seccomp_localhost: self.seccomp_localhost.as_deref(),
            devices: &self.devices,
        }
    }

    /// The container's security context, created empty if missing.
    pub fn security_context(&mut self) -> &mut LinuxContainerSecurityContext {
        self.config
            .linux
            .get_or_insert_with(LinuxContainerConfig::default)
            .security_context
            .get_or_insert_with(LinuxContainerSecurityContext::default)
    }

    /// The container's resources, created empty if missing.
    pub fn resources(&mut self) -> &mut LinuxContainerResources {
        self.config
            .linux
            .get_or_insert_with(LinuxContainerConfig::default)
            .resources
            .get_or_insert_with(LinuxContainerResources::default)
    }
}
