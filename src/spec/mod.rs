//! CRI -> OCI runtime spec translation, as pure functions.
//!
//! [`container_spec`] turns a CRI `ContainerConfig` (plus what the pod, the image and the host
//! provide, all resolved by the caller beforehand) into an OCI runtime [`Spec`]. It is a
//! sequence of small `apply_*` steps, one concern each, in the spirit of containerd's spec
//! opts and CRI-O's translator:
//!
//! | step | file | what |
//! |------|------|------|
//! | [`process::apply_process`] | `process.rs` | argv, env, cwd, terminal |
//! | [`user::apply_user`] | `user.rs` | uid, gid, supplementary groups |
//! | [`namespaces::apply_namespaces`] | `namespaces.rs` | which namespaces are new, joined or the host's |
//! | [`mounts::apply_mounts`] | `mounts.rs` | default mounts, sandbox files, CRI bind mounts, propagation |
//! | [`capabilities::apply_capabilities`] | `capabilities.rs` | capability sets |
//! | [`security::apply_security`] | `security.rs` | no_new_privs, read-only rootfs, masked/readonly paths, apparmor |
//! | [`devices::apply_devices`] | `devices.rs` | device nodes and the device cgroup |
//! | [`resources::apply_resources`] | `resources.rs` | cgroup limits, oom_score_adj |
//! | [`seccomp::apply_seccomp`] | `seccomp.rs` | seccomp filter (default profile in `seccomp_default.rs`) |
//!
//! Beside the spec: [`stop_signal`] (`signal.rs`) for StopContainer, [`seccomp_localhost_path`]
//! (which profile file the caller must read first) and [`for_libcontainer`] (a libcontainer
//! 0.7 quirk the backend must correct for).
//!
//! Nothing here touches the filesystem except [`read_user_db`], which the caller runs before
//! building the input. Host facts (device numbers, namespace paths, cgroup version, the
//! seccomp profile file) are read by the caller and passed in, so every rule is testable
//! without root.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use k8s_cri::v1::{ContainerConfig, LinuxContainerSecurityContext, PodSandboxConfig};
use oci_spec::runtime::{Linux, LinuxResources, Process, Root, Spec};

use crate::error::{Classify, Kind};

pub mod capabilities;
pub mod devices;
pub mod mounts;
pub mod namespaces;
pub mod process;
pub mod resources;
pub mod seccomp;
mod seccomp_default;
pub mod security;
pub mod signal;
pub mod unified;
pub mod user;

// Test data; also what the criterion benches translate (src/bench_api.rs).
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) mod fixture;
#[cfg(test)]
pub(crate) mod proptests;

pub use devices::ResolvedDevice;
pub use seccomp::{for_libcontainer, seccomp_localhost_path};
pub use signal::stop_signal;
#[cfg(test)]
use user::parse_group;
pub use user::{parse_passwd, read_user_db, UserDb};

/// Annotation telling runtimes and hooks that this spec is an application container (not a
/// sandbox/pause container); containerd and CRI-O set the same key.
pub const ANNOTATION_CONTAINER_TYPE: &str = "io.kubernetes.cri.container-type";
pub const ANNOTATION_CONTAINER_NAME: &str = "io.kubernetes.cri.container-name";
pub const ANNOTATION_SANDBOX_NAME: &str = "io.kubernetes.cri.sandbox-name";
pub const ANNOTATION_SANDBOX_NAMESPACE: &str = "io.kubernetes.cri.sandbox-namespace";
pub const ANNOTATION_SANDBOX_UID: &str = "io.kubernetes.cri.sandbox-uid";
pub const ANNOTATION_IMAGE_NAME: &str = "io.kubernetes.cri.image-name";
/// The annotations crun (and youki) read as instructions rather than as information: a
/// raw seccomp program in place of the profile, a seccomp listener socket, files for the
/// hooks' output, groups kept, another handler. Set by proxrt alone, never copied from a
/// request (containerd and CRI-O pass a request's annotations only when allow-listed).
pub const RUNTIME_ANNOTATION_PREFIX: &str = "run.oci.";

/// Everything [`container_spec`] needs, resolved by the caller. Paths are host paths.
#[derive(Debug, Clone, Copy)]
pub struct SpecInput<'a> {
    pub container_id: &'a str,
    pub config: &'a ContainerConfig,
    pub sandbox_config: &'a PodSandboxConfig,
    /// The image config (Entrypoint, Cmd, Env, WorkingDir, User, StopSignal).
    pub image: &'a oci_spec::image::Config,
    /// Absolute path of the prepared rootfs.
    pub rootfs: &'a Path,
    /// Parsed /etc/passwd and /etc/group of the rootfs (may be empty), see [`read_user_db`].
    pub users: &'a UserDb,
    pub sandbox: &'a SandboxView,
    pub host: &'a HostView,
    /// The cgroup path to put in `linux.cgroupsPath` (already decided by the caller).
    pub cgroups_path: &'a str,
    /// Contents of the `localhost/<path>` seccomp profile file, read by the caller when the
    /// config asks for a localhost profile.
    pub seccomp_localhost: Option<&'a str>,
    /// `config.devices`, stat'ed on the host by the caller (one entry per device node; a
    /// host directory may expand to several). The spec is built from this list only.
    pub devices: &'a [ResolvedDevice],
}

/// What the pod provides. Paths are host paths.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SandboxView {
    /// None = host network (NODE).
    pub net_ns: Option<PathBuf>,
    /// None = host ipc.
    pub ipc_ns: Option<PathBuf>,
    /// None = host uts.
    pub uts_ns: Option<PathBuf>,
    /// Some = the pod's pid namespace (pod-level sharing); the container picks via its own
    /// NamespaceOption.
    pub pid_ns: Option<PathBuf>,
    /// For NamespaceMode::TARGET: the target container's pid namespace, resolved by the caller.
    pub target_pid_ns: Option<PathBuf>,
    pub hostname: String,
    pub hostname_path: Option<PathBuf>,
    pub hosts_path: Option<PathBuf>,
    pub resolv_conf_path: Option<PathBuf>,
    /// The pod's /dev/shm (None + host ipc => bind the host's /dev/shm).
    pub shm_path: Option<PathBuf>,
    /// The sandbox's `security_context.privileged`.
    pub privileged: bool,
}

/// Facts about the host, read once by the daemon.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostView {
    /// The lowest oom_score_adj the daemon may set (0 where root lacks CAP_SYS_RESOURCE).
    pub oom_score_adj_min: i32,
    pub cgroup_v2: bool,
    /// Hugepage sizes the host supports, in the CRI/cgroup spelling ("2MB", "1GB").
    pub hugepage_sizes: Vec<String>,
    /// The daemon's own bounding set: what "all capabilities" (privileged, `ALL`) means here.
    pub capabilities: oci_spec::runtime::Capabilities,
    /// Whether AppArmor enforces here, and the RuntimeDefault profile.
    pub apparmor: crate::apparmor::AppArmorHost,
}

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("container has no command: command and args are empty and the image has no Entrypoint or Cmd")]
    EmptyCommand,
    #[error("{what} contains a NUL byte: {value:?}")]
    NulByte { what: &'static str, value: String },
    #[error("working directory {0:?} is not an absolute path")]
    RelativeWorkingDir(String),
    #[error("environment variable {key:?}: {reason}")]
    InvalidEnv { key: String, reason: &'static str },
    #[error("user {0:?} not found in /etc/passwd of the image")]
    UserNotFound(String),
    #[error("group {0:?} not found in /etc/group of the image")]
    GroupNotFound(String),
    #[error("invalid user {user:?}: {reason}")]
    InvalidUser { user: String, reason: String },
    #[error("run_as_group is set but neither run_as_user nor run_as_username is")]
    GroupWithoutUser,
    #[error("read {path} of the image: {source}")]
    ReadUserDb {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} of the image: {reason}")]
    BadUserDbFile { path: String, reason: String },
    #[error("mount {destination:?}: {reason}")]
    InvalidMount { destination: String, reason: String },
    #[error("mount {destination:?}: BIDIRECTIONAL propagation needs a privileged container")]
    BidirectionalNeedsPrivileged { destination: String },
    #[error("device {path:?}: {reason}")]
    InvalidDevice { path: String, reason: String },
    #[error("unknown capability {0:?}")]
    UnknownCapability(String),
    #[error("capability {0} is not in the runtime's bounding set: this host cannot grant it")]
    CapabilityNotHeld(String),
    #[error("ambient capability {0} is not in the container's capability set")]
    AmbientNotInSet(String),
    #[error("container {container} is privileged but its sandbox is not")]
    PrivilegedNotAllowed { container: String },
    #[error("{namespace} namespace: {reason}")]
    InvalidNamespace {
        namespace: &'static str,
        reason: String,
    },
    #[error("{namespace} namespace: {reason}")]
    NamespaceUnavailable {
        namespace: &'static str,
        reason: String,
    },
    #[error("{0} is not supported")]
    Unsupported(String),
    #[error("resources: {field}: {reason}")]
    InvalidResource { field: &'static str, reason: String },
    #[error(
        "resources: unified cgroup settings {keys:?} need cgroup v2, this host uses cgroup v1"
    )]
    UnifiedOnCgroupV1 { keys: Vec<String> },
    #[error("seccomp profile {profile:?}: {reason}")]
    InvalidSeccomp { profile: String, reason: String },
    #[error(
        "seccomp profile {path:?}: its contents were not passed in (the caller reads the file)"
    )]
    SeccompNotLoaded { path: String },
    #[error("apparmor profile {profile:?}: {reason}")]
    InvalidApparmor { profile: String, reason: String },
    #[error(
        "AppArmor enforces on this host but its RuntimeDefault profile is not loaded: {reason}"
    )]
    AppArmorDefaultUnavailable { reason: String },
    #[error("apparmor profile {profile:?} is not loaded on this host (load it with apparmor_parser first)")]
    AppArmorNotLoaded { profile: String },
    #[error("image StopSignal {0:?} is not a signal name or number")]
    InvalidStopSignal(String),
    #[error("build OCI spec: {0}")]
    Build(#[from] oci_spec::OciSpecError),
}

impl Classify for SpecError {
    fn kind(&self) -> Kind {
        match self {
            SpecError::PrivilegedNotAllowed { .. }
            | SpecError::NamespaceUnavailable { .. }
            | SpecError::CapabilityNotHeld(_)
            | SpecError::BidirectionalNeedsPrivileged { .. }
            | SpecError::AppArmorDefaultUnavailable { .. }
            | SpecError::AppArmorNotLoaded { .. } => Kind::FailedPrecondition,
            SpecError::ReadUserDb { .. }
            | SpecError::SeccompNotLoaded { .. }
            | SpecError::Build(_) => Kind::Internal,
            SpecError::EmptyCommand
            | SpecError::NulByte { .. }
            | SpecError::RelativeWorkingDir(_)
            | SpecError::InvalidEnv { .. }
            | SpecError::UserNotFound(_)
            | SpecError::GroupNotFound(_)
            | SpecError::InvalidUser { .. }
            | SpecError::GroupWithoutUser
            | SpecError::BadUserDbFile { .. }
            | SpecError::InvalidMount { .. }
            | SpecError::InvalidDevice { .. }
            | SpecError::UnknownCapability(_)
            | SpecError::AmbientNotInSet(_)
            | SpecError::InvalidNamespace { .. }
            | SpecError::Unsupported(_)
            | SpecError::InvalidResource { .. }
            | SpecError::UnifiedOnCgroupV1 { .. }
            | SpecError::InvalidSeccomp { .. }
            | SpecError::InvalidApparmor { .. }
            | SpecError::InvalidStopSignal(_) => Kind::InvalidArgument,
        }
    }
}

/// Builds the OCI runtime spec of an application container.
pub fn container_spec(input: &SpecInput) -> Result<Spec, SpecError> {
    reject_unsupported(input.config)?;
    let privileged = check_privileged(input)?;
    let mut spec = base_spec(input);

    process::apply_process(&mut spec, input)?;
    user::apply_user(&mut spec, input)?;
    let plan = namespaces::apply_namespaces(&mut spec, input)?;
    mounts::apply_mounts(&mut spec, input, privileged, &plan)?;
    capabilities::apply_capabilities(&mut spec, input, privileged)?;
    security::apply_security(&mut spec, input, privileged)?;
    devices::apply_devices(&mut spec, input, privileged)?;
    resources::apply_resources(&mut spec, input)?;
    // Last: the default seccomp profile depends on the capabilities chosen above.
    seccomp::apply_seccomp(&mut spec, input, privileged)?;
    apply_annotations(&mut spec, input);
    Ok(spec)
}

/// The container's Linux security context, if the request has one.
pub(crate) fn security_context(config: &ContainerConfig) -> Option<&LinuxContainerSecurityContext> {
    config.linux.as_ref()?.security_context.as_ref()
}

/// Whether the request asks for a privileged container (whether it may is
/// [`check_privileged`]'s question).
pub fn security_context_privileged(config: &ContainerConfig) -> bool {
    security_context(config).is_some_and(|sc| sc.privileged)
}

/// Whether the container runs privileged. CRI: a privileged container MUST only run in a
/// sandbox that was itself created privileged (so the pod could take precautions for it).
pub fn check_privileged(input: &SpecInput) -> Result<bool, SpecError> {
    let wanted = security_context(input.config).is_some_and(|sc| sc.privileged);
    if wanted && !input.sandbox.privileged {
        return Err(SpecError::PrivilegedNotAllowed {
            container: container_label(input),
        });
    }
    Ok(wanted)
}

/// Request fields proxrt cannot honour: refused rather than silently ignored.
fn reject_unsupported(config: &ContainerConfig) -> Result<(), SpecError> {
    if !config.cdi_devices.is_empty() {
        return Err(SpecError::Unsupported("CDI devices".into()));
    }
    Ok(())
}

/// A name for messages: the CRI container name if there is one, else the id.
fn container_label(input: &SpecInput) -> String {
    match input.config.metadata.as_ref() {
        Some(m) if !m.name.is_empty() => format!("{:?} ({})", m.name, input.container_id),
        _ => input.container_id.to_string(),
    }
}

/// A spec with every field the steps below own set to "nothing yet". oci-spec's `Default`
/// impls carry runc's example values (`sh`, RLIMIT_NOFILE 1024, a hostname "youki", default
/// capabilities and masked paths); none of them may leak into a container by accident.
fn base_spec(input: &SpecInput) -> Spec {
    let mut root = Root::default();
    root.set_path(input.rootfs.to_path_buf());
    root.set_readonly(Some(false));

    let mut spec = Spec::default();
    spec.set_version(oci_spec::runtime::VERSION.to_string());
    spec.set_root(Some(root));
    spec.set_hostname(None);
    spec.set_domainname(None);
    spec.set_mounts(Some(Vec::new()));
    spec.set_annotations(Some(HashMap::new()));
    spec.set_hooks(None);
    spec.set_process(Some(empty_process()));
    spec.set_linux(Some(empty_linux(input.cgroups_path)));
    spec
}

fn empty_process() -> Process {
    let mut p = Process::default();
    p.set_terminal(Some(false));
    p.set_args(None);
    p.set_env(None);
    p.set_cwd(PathBuf::from("/"));
    p.set_capabilities(None);
    // No rlimits: the container inherits the runtime's (containerd sets none either; kubelet
    // has no field for them).
    p.set_rlimits(None);
    p.set_no_new_privileges(Some(false));
    p.set_apparmor_profile(None);
    p.set_selinux_label(None);
    p.set_oom_score_adj(None);
    p
}

fn empty_linux(cgroups_path: &str) -> Linux {
    let mut l = Linux::default();
    l.set_namespaces(Some(Vec::new()));
    l.set_masked_paths(None);
    l.set_readonly_paths(None);
    l.set_resources(Some(LinuxResources::default()));
    l.set_devices(None);
    l.set_seccomp(None);
    l.set_rootfs_propagation(None);
    // Sysctls are the pod's (applied to the sandbox's namespaces), never per container.
    l.set_sysctl(None);
    l.set_cgroups_path(Some(PathBuf::from(cgroups_path)));
    l
}

/// The spec's process. `base_spec` always sets one; the fallback only serves steps called on a
/// hand-made spec in tests.
pub(crate) fn process_mut(spec: &mut Spec) -> &mut Process {
    spec.process_mut().get_or_insert_with(empty_process)
}

pub(crate) fn linux_mut(spec: &mut Spec) -> &mut Linux {
    spec.linux_mut().get_or_insert_with(|| empty_linux(""))
}

pub(crate) fn resources_mut(spec: &mut Spec) -> &mut LinuxResources {
    linux_mut(spec)
        .resources_mut()
        .get_or_insert_with(LinuxResources::default)
}

/// CRI annotations are copied as sent (kubelet reads them back through ContainerStatus, from
/// the record), except those the runtime would obey ([`RUNTIME_ANNOTATION_PREFIX`]), then
/// the `io.kubernetes.cri.*` keys hooks and tools expect from containerd are added.
fn apply_annotations(spec: &mut Spec, input: &SpecInput) {
    let mut annotations: HashMap<String, String> = input
        .config
        .annotations
        .iter()
        .filter(|(key, _)| !key.starts_with(RUNTIME_ANNOTATION_PREFIX))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    annotations.insert(ANNOTATION_CONTAINER_TYPE.into(), "container".into());
    if let Some(m) = &input.config.metadata {
        annotations.insert(ANNOTATION_CONTAINER_NAME.into(), m.name.clone());
    }
    if let Some(m) = &input.sandbox_config.metadata {
        annotations.insert(ANNOTATION_SANDBOX_NAME.into(), m.name.clone());
        annotations.insert(ANNOTATION_SANDBOX_NAMESPACE.into(), m.namespace.clone());
        annotations.insert(ANNOTATION_SANDBOX_UID.into(), m.uid.clone());
    }
    if let Some(image) = &input.config.image {
        annotations.insert(ANNOTATION_IMAGE_NAME.into(), image.image.clone());
    }
    spec.set_annotations(Some(annotations));
}

#[cfg(test)]
mod tests {
    use super::fixture::Fixture;
    use super::*;
    use k8s_cri::v1::{
        Capability, ContainerMetadata, Device, ImageSpec, Int64Value, KeyValue,
        LinuxContainerConfig, LinuxContainerResources, Mount as CriMount, MountPropagation,
        NamespaceMode, NamespaceOption, PodSandboxMetadata, SecurityProfile,
    };
    use oci_spec::runtime::{LinuxNamespaceType, LinuxSeccompAction};

    /// What kubelet sends for a typical Deployment container (nginx-like, non-root, with a
    /// ConfigMap volume, resource limits and RuntimeDefault seccomp).
    fn kubelet_like() -> Fixture {
        let mut f = Fixture::new();
        f.config = ContainerConfig {
            metadata: Some(ContainerMetadata {
                name: "web".into(),
                attempt: 0,
            }),
            image: Some(ImageSpec {
                image: "sha256:0123".into(),
                user_specified_image: "docker.io/library/nginx:1.27".into(),
                ..Default::default()
            }),
            command: vec![],
            args: vec!["-g".into(), "daemon off;".into()],
            working_dir: String::new(),
            envs: vec![
                KeyValue {
                    key: "KUBERNETES_SERVICE_HOST".into(),
                    value: "10.96.0.1".into(),
                },
                KeyValue {
                    key: "KUBERNETES_SERVICE_PORT".into(),
                    value: "443".into(),
                },
            ],
            mounts: vec![
                CriMount {
                    container_path: "/etc/nginx/conf.d".into(),
                    host_path: "/var/lib/kubelet/pods/uid/volumes/kubernetes.io~configmap/conf"
                        .into(),
                    readonly: true,
                    ..Default::default()
                },
                CriMount {
                    container_path: "/var/run/secrets/kubernetes.io/serviceaccount".into(),
                    host_path: "/var/lib/kubelet/pods/uid/volumes/kubernetes.io~projected/token"
                        .into(),
                    readonly: true,
                    ..Default::default()
                },
                CriMount {
                    container_path: "/etc/hosts".into(),
                    host_path: "/var/lib/kubelet/pods/uid/etc-hosts".into(),
                    ..Default::default()
                },
                CriMount {
                    container_path: "/dev/termination-log".into(),
                    host_path: "/var/lib/kubelet/pods/uid/containers/web/abcd".into(),
                    ..Default::default()
                },
            ],
            devices: vec![Device {
                container_path: "/dev/fuse".into(),
                host_path: "/dev/fuse".into(),
                permissions: "rwm".into(),
            }],
            annotations: [(
                "io.kubernetes.container.hash".to_string(),
                "1a2b".to_string(),
            )]
            .into(),
            log_path: "web/0.log".into(),
            linux: Some(LinuxContainerConfig {
                resources: Some(LinuxContainerResources {
                    cpu_period: 100_000,
                    cpu_quota: 50_000,
                    cpu_shares: 512,
                    memory_limit_in_bytes: 256 << 20,
                    oom_score_adj: 968,
                    ..Default::default()
                }),
                security_context: Some(LinuxContainerSecurityContext {
                    capabilities: Some(Capability {
                        add_capabilities: vec!["NET_ADMIN".into()],
                        drop_capabilities: vec!["NET_RAW".into()],
                        add_ambient_capabilities: vec![],
                    }),
                    namespace_options: Some(NamespaceOption {
                        network: NamespaceMode::Pod as i32,
                        pid: NamespaceMode::Container as i32,
                        ipc: NamespaceMode::Pod as i32,
                        ..Default::default()
                    }),
                    run_as_user: Some(Int64Value { value: 101 }),
                    run_as_group: Some(Int64Value { value: 101 }),
                    supplemental_groups: vec![2000],
                    no_new_privs: true,
                    masked_paths: vec![],
                    readonly_paths: vec![],
                    seccomp: Some(SecurityProfile {
                        profile_type: 0, // RuntimeDefault
                        localhost_ref: String::new(),
                    }),
                    ..Default::default()
                }),
            }),
            ..Default::default()
        };
        f.sandbox_config.metadata = Some(PodSandboxMetadata {
            name: "web-7d4b9c".into(),
            uid: "uid".into(),
            namespace: "default".into(),
            attempt: 0,
        });
        f.image = serde_json::from_str(
            r#"{"Entrypoint":["/docker-entrypoint.sh"],"Cmd":["nginx","-g","daemon off;"],
                "Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin","NGINX_VERSION=1.27.0"],
                "StopSignal":"SIGQUIT"}"#,
        )
        .unwrap();
        f.users = UserDb {
            users: parse_passwd(
                "root:x:0:0:root:/root:/bin/sh\nnginx:x:101:101:nginx:/nonexistent:/bin/false\n",
            ),
            groups: parse_group("root:x:0:\nnginx:x:101:\nwww:x:33:nginx\n"),
        };
        f.devices = vec![ResolvedDevice {
            container_path: "/dev/fuse".into(),
            kind: 'c',
            major: 10,
            minor: 229,
            file_mode: 0o666,
            uid: 0,
            gid: 0,
            permissions: "rwm".into(),
        }];
        f
    }

    #[test]
    fn full_spec_from_kubelet_like_config_round_trips_through_json() {
        let f = kubelet_like();
        let spec = container_spec(&f.input()).unwrap();

        let json = serde_json::to_string_pretty(&spec).unwrap();
        let back: Spec = serde_json::from_str(&json).unwrap();
        assert_eq!(back, spec);

        let p = back.process().as_ref().unwrap();
        assert_eq!(
            p.args().as_deref().unwrap(),
            ["/docker-entrypoint.sh", "-g", "daemon off;"]
        );
        let env = p.env().as_deref().unwrap();
        assert_eq!(env[0], format!("PATH={}", process::DEFAULT_PATH));
        assert!(env.contains(&"NGINX_VERSION=1.27.0".to_string()));
        assert!(env.contains(&"KUBERNETES_SERVICE_PORT=443".to_string()));
        assert!(env.contains(&"HOSTNAME=web-7d4b9c".to_string()));
        assert_eq!(p.cwd(), Path::new("/"));
        assert_eq!((p.user().uid(), p.user().gid()), (101, 101));
        assert_eq!(
            p.user().additional_gids().as_deref().unwrap(),
            [101, 33, 2000]
        );
        assert_eq!(p.no_new_privileges(), Some(true));
        assert_eq!(p.oom_score_adj(), Some(968));
        let caps = p.capabilities().as_ref().unwrap();
        let bounding = caps.bounding().as_ref().unwrap();
        assert!(bounding.contains(&oci_spec::runtime::Capability::NetAdmin));
        assert!(!bounding.contains(&oci_spec::runtime::Capability::NetRaw));

        let linux = back.linux().as_ref().unwrap();
        assert_eq!(
            linux.cgroups_path().as_deref(),
            Some(Path::new("/kubepods/pod-uid/ctr"))
        );
        let ns: Vec<_> = linux
            .namespaces()
            .as_deref()
            .unwrap()
            .iter()
            .map(|n| (n.typ(), n.path().clone()))
            .collect();
        assert!(ns.contains(&(LinuxNamespaceType::Network, Some("/run/netns/pod".into()))));
        assert!(ns.contains(&(LinuxNamespaceType::Pid, None)));
        assert!(ns.contains(&(LinuxNamespaceType::Mount, None)));
        let seccomp = linux.seccomp().as_ref().unwrap();
        assert_eq!(seccomp.default_action(), LinuxSeccompAction::ScmpActErrno);
        assert!(linux
            .masked_paths()
            .as_ref()
            .unwrap()
            .contains(&"/proc/kcore".to_string()));
        let devices = linux.devices().as_deref().unwrap();
        assert_eq!(devices[0].path(), Path::new("/dev/fuse"));
        let cpu = linux.resources().as_ref().unwrap().cpu().as_ref().unwrap();
        assert_eq!(cpu.quota(), Some(50_000));

        let mounts = back.mounts().as_deref().unwrap();
        let hosts: Vec<_> = mounts
            .iter()
            .filter(|m| m.destination() == Path::new("/etc/hosts"))
            .collect();
        assert_eq!(hosts.len(), 1, "the CRI /etc/hosts replaces the sandbox's");
        assert_eq!(
            hosts[0].source().as_deref(),
            Some(Path::new("/var/lib/kubelet/pods/uid/etc-hosts"))
        );
        assert!(mounts
            .iter()
            .any(|m| m.destination() == Path::new("/etc/resolv.conf")));

        let annotations = back.annotations().as_ref().unwrap();
        assert_eq!(annotations[ANNOTATION_CONTAINER_TYPE], "container");
        assert_eq!(annotations["io.kubernetes.container.hash"], "1a2b");
        assert_eq!(annotations[ANNOTATION_SANDBOX_NAMESPACE], "default");
        assert!(back.hostname().is_none());
        assert_eq!(back.root().as_ref().unwrap().path(), Path::new("/rootfs"));
    }

    #[test]
    fn annotations_the_runtime_would_obey_stay_out_of_the_spec() {
        let mut f = Fixture::new();
        f.config.command = vec!["/bin/true".into()];
        for (key, value) in [
            ("run.oci.seccomp_bpf_data", "AAAAAAAAAAA="),
            ("run.oci.hooks.stdout", "/etc/passwd"),
            ("run.oci.keep_original_groups", "1"),
            ("example.com/run.oci.note", "kept"),
            ("RUN.OCI.upper", "kept: another key to crun"),
        ] {
            f.config.annotations.insert(key.into(), value.into());
        }
        let spec = container_spec(&f.input()).unwrap();
        let annotations = spec.annotations().as_ref().unwrap();
        assert!(
            !annotations.keys().any(|k| k.starts_with("run.oci.")),
            "{annotations:?}"
        );
        assert_eq!(annotations["example.com/run.oci.note"], "kept");
        assert_eq!(annotations["RUN.OCI.upper"], "kept: another key to crun");
        assert_eq!(annotations[ANNOTATION_CONTAINER_TYPE], "container");
    }

    #[test]
    fn base_spec_carries_no_oci_spec_example_defaults() {
        let mut f = Fixture::new();
        f.config.command = vec!["/bin/true".into()];
        let spec = container_spec(&f.input()).unwrap();
        let p = spec.process().as_ref().unwrap();
        assert!(p.rlimits().is_none());
        // The fixture's host enforces AppArmor: proxrt's default, not oci-spec's example.
        assert_eq!(p.apparmor_profile().as_deref(), Some("proxrt-default"));
        assert!(spec.hostname().is_none());
        let linux = spec.linux().as_ref().unwrap();
        assert!(linux.sysctl().is_none());
        assert!(linux.rootfs_propagation().is_none());
        assert_eq!(spec.root().as_ref().unwrap().readonly(), Some(false));
    }

    #[test]
    fn privileged_container_in_unprivileged_sandbox_is_a_failed_precondition() {
        let mut f = Fixture::new();
        f.config.command = vec!["/bin/true".into()];
        f.security_context().privileged = true;
        let err = container_spec(&f.input()).unwrap_err();
        assert!(
            matches!(err, SpecError::PrivilegedNotAllowed { .. }),
            "{err}"
        );
        assert_eq!(err.kind(), Kind::FailedPrecondition);

        f.sandbox.privileged = true;
        assert!(container_spec(&f.input()).is_ok());
    }

    #[test]
    fn privileged_container_gets_the_host_view() {
        let mut f = kubelet_like();
        f.sandbox.privileged = true;
        f.security_context().privileged = true;
        f.security_context().apparmor = Some(SecurityProfile {
            profile_type: 2, // Localhost
            localhost_ref: "k8s-web".into(),
        });
        let spec = container_spec(&f.input()).unwrap();
        let p = spec.process().as_ref().unwrap();
        let caps = p
            .capabilities()
            .as_ref()
            .unwrap()
            .bounding()
            .clone()
            .unwrap();
        assert_eq!(caps.len(), capabilities::ALL_CAPABILITIES.len());
        assert!(p.apparmor_profile().is_none());
        let linux = spec.linux().as_ref().unwrap();
        assert!(linux.seccomp().is_none());
        assert!(linux.masked_paths().as_ref().unwrap().is_empty());
        assert!(linux.readonly_paths().as_ref().unwrap().is_empty());
        let rules = linux
            .resources()
            .as_ref()
            .unwrap()
            .devices()
            .clone()
            .unwrap();
        assert_eq!(rules.len(), 1);
        assert!(rules[0].allow());
        let sys = spec
            .mounts()
            .as_deref()
            .unwrap()
            .iter()
            .find(|m| m.destination() == Path::new("/sys"))
            .unwrap();
        assert!(sys.options().as_ref().unwrap().contains(&"rw".to_string()));
    }

    #[test]
    fn cdi_devices_are_refused() {
        let mut f = Fixture::new();
        f.config.command = vec!["/bin/true".into()];
        f.config.cdi_devices = vec![k8s_cri::v1::CdiDevice {
            name: "vendor.com/gpu=0".into(),
        }];
        let err = container_spec(&f.input()).unwrap_err();
        assert_eq!(err.kind(), Kind::InvalidArgument, "{err}");
    }

    #[test]
    fn error_messages_carry_context() {
        let err = SpecError::UserNotFound("nobody2".into());
        assert_eq!(
            err.to_string(),
            "user \"nobody2\" not found in /etc/passwd of the image"
        );
        assert_eq!(err.kind(), Kind::InvalidArgument);
    }

    #[test]
    fn propagation_enum_is_read_as_sent() {
        // Guards the i32 <-> enum mapping the mount step relies on.
        assert_eq!(
            MountPropagation::try_from(2).unwrap(),
            MountPropagation::PropagationBidirectional
        );
    }
}
