//! Which namespaces the container gets: new ones, the pod's (joined by path) or the host's
//! (no entry at all).

use std::path::{Path, PathBuf};

use k8s_cri::v1::{NamespaceMode, NamespaceOption};
use oci_spec::runtime::{LinuxNamespace, LinuxNamespaceType, Spec};

use super::{linux_mut, security_context, HostView, SandboxView, SpecError, SpecInput};

/// The namespaces decided for a container, with the facts other steps need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamespacePlan {
    pub namespaces: Vec<LinuxNamespace>,
    /// The container shares the host's IPC namespace (so /dev/shm is the host's).
    pub host_ipc: bool,
    pub host_network: bool,
    pub host_pid: bool,
}

/// Sets `linux.namespaces` and returns the plan.
pub fn apply_namespaces(spec: &mut Spec, input: &SpecInput) -> Result<NamespacePlan, SpecError> {
    let options = security_context(input.config).and_then(|sc| sc.namespace_options.as_ref());
    let plan = plan_namespaces(options, input.sandbox, input.host)?;
    linux_mut(spec).set_namespaces(Some(plan.namespaces.clone()));
    Ok(plan)
}

/// - network, ipc: POD joins the sandbox's (the host's when the sandbox has none), NODE is the
///   host's; kubelet never sends CONTAINER or TARGET for them.
/// - pid: POD joins the sandbox's (which must exist), CONTAINER is a new one, NODE the host's,
///   TARGET the target container's (resolved by the caller).
/// - uts: always the sandbox's (the host's when the sandbox has none): the pod has one hostname.
/// - mount: always new. cgroup: new on cgroup v2 only, where it hides the host's hierarchy; on
///   v1 runtimes bind the container's own cgroups instead.
/// - user: never (user-namespaced pods are refused).
pub fn plan_namespaces(
    options: Option<&NamespaceOption>,
    sandbox: &SandboxView,
    host: &HostView,
) -> Result<NamespacePlan, SpecError> {
    let default_options = NamespaceOption::default();
    let options = options.unwrap_or(&default_options);
    reject_user_namespace(options)?;

    let mut namespaces = Vec::new();
    let net = shared_with_pod("network", options.network, sandbox.net_ns.as_deref())?;
    let ipc = shared_with_pod("ipc", options.ipc, sandbox.ipc_ns.as_deref())?;
    let pid = pid_namespace(options, sandbox)?;
    let uts = sandbox
        .uts_ns
        .clone()
        .map(Joined::Path)
        .unwrap_or(Joined::Host);

    for (typ, joined) in [
        (LinuxNamespaceType::Pid, &pid),
        (LinuxNamespaceType::Network, &net),
        (LinuxNamespaceType::Ipc, &ipc),
        (LinuxNamespaceType::Uts, &uts),
    ] {
        if let Some(ns) = joined.entry(typ) {
            namespaces.push(ns);
        }
    }
    namespaces.push(new_namespace(LinuxNamespaceType::Mount));
    if host.cgroup_v2 {
        namespaces.push(new_namespace(LinuxNamespaceType::Cgroup));
    }

    Ok(NamespacePlan {
        namespaces,
        host_ipc: ipc == Joined::Host,
        host_network: net == Joined::Host,
        host_pid: pid == Joined::Host,
    })
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Joined {
    /// A fresh namespace.
    New,
    /// An existing namespace, by path.
    Path(PathBuf),
    /// The host's: no entry in the spec.
    Host,
}

impl Joined {
    fn entry(&self, typ: LinuxNamespaceType) -> Option<LinuxNamespace> {
        match self {
            Joined::New => Some(new_namespace(typ)),
            Joined::Path(path) => {
                let mut ns = new_namespace(typ);
                ns.set_path(Some(path.clone()));
                Some(ns)
            }
            Joined::Host => None,
        }
    }
}

fn new_namespace(typ: LinuxNamespaceType) -> LinuxNamespace {
    let mut ns = LinuxNamespace::default();
    ns.set_typ(typ);
    ns.set_path(None);
    ns
}

fn mode(namespace: &'static str, raw: i32) -> Result<NamespaceMode, SpecError> {
    NamespaceMode::try_from(raw).map_err(|_| SpecError::InvalidNamespace {
        namespace,
        reason: format!("unknown mode {raw}"),
    })
}

fn shared_with_pod(
    namespace: &'static str,
    raw: i32,
    sandbox_path: Option<&Path>,
) -> Result<Joined, SpecError> {
    match mode(namespace, raw)? {
        NamespaceMode::Pod => Ok(sandbox_path.map_or(Joined::Host, |p| Joined::Path(p.into()))),
        NamespaceMode::Node => Ok(Joined::Host),
        other => Err(SpecError::InvalidNamespace {
            namespace,
            reason: format!("mode {} is not supported", other.as_str_name()),
        }),
    }
}

fn pid_namespace(options: &NamespaceOption, sandbox: &SandboxView) -> Result<Joined, SpecError> {
    match mode("pid", options.pid)? {
        NamespaceMode::Pod => sandbox.pid_ns.clone().map(Joined::Path).ok_or_else(|| {
            SpecError::NamespaceUnavailable {
                namespace: "pid",
                reason: "mode POD but the sandbox has no shared pid namespace".into(),
            }
        }),
        NamespaceMode::Container => Ok(Joined::New),
        NamespaceMode::Node => Ok(Joined::Host),
        NamespaceMode::Target => {
            if options.target_id.is_empty() {
                return Err(SpecError::InvalidNamespace {
                    namespace: "pid",
                    reason: "mode TARGET without a target_id".into(),
                });
            }
            sandbox
                .target_pid_ns
                .clone()
                .map(Joined::Path)
                .ok_or_else(|| SpecError::NamespaceUnavailable {
                    namespace: "pid",
                    reason: format!(
                        "mode TARGET but target container {} has no pid namespace to join",
                        options.target_id
                    ),
                })
        }
    }
}

/// kubelet asks for a pod user namespace (hostUsers: false) with mode POD and id mappings;
/// proxrt does not create user namespaces, and running such a pod as real root would be the
/// opposite of what was asked.
fn reject_user_namespace(options: &NamespaceOption) -> Result<(), SpecError> {
    if let Some(userns) = &options.userns_options {
        if mode("user", userns.mode)? != NamespaceMode::Node {
            return Err(SpecError::Unsupported(format!(
                "user namespace mode {}",
                NamespaceMode::try_from(userns.mode)
                    .map(|m| m.as_str_name())
                    .unwrap_or("?")
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::fixture::Fixture;
    use super::*;
    use crate::error::{Classify, Kind};
    use k8s_cri::v1::UserNamespace;

    fn opts(network: NamespaceMode, pid: NamespaceMode, ipc: NamespaceMode) -> NamespaceOption {
        NamespaceOption {
            network: network as i32,
            pid: pid as i32,
            ipc: ipc as i32,
            ..Default::default()
        }
    }

    fn find(plan: &NamespacePlan, typ: LinuxNamespaceType) -> Option<Option<PathBuf>> {
        plan.namespaces
            .iter()
            .find(|n| n.typ() == typ)
            .map(|n| n.path().clone())
    }

    fn pod() -> SandboxView {
        Fixture::new().sandbox
    }

    fn v2() -> HostView {
        HostView {
            cgroup_v2: true,
            ..Default::default()
        }
    }

    #[test]
    fn pod_mode_joins_sandbox_namespaces() {
        let o = opts(NamespaceMode::Pod, NamespaceMode::Pod, NamespaceMode::Pod);
        let plan = plan_namespaces(Some(&o), &pod(), &v2()).unwrap();
        assert_eq!(
            find(&plan, LinuxNamespaceType::Network),
            Some(Some("/run/netns/pod".into()))
        );
        assert_eq!(
            find(&plan, LinuxNamespaceType::Ipc),
            Some(Some("/proc/100/ns/ipc".into()))
        );
        assert_eq!(
            find(&plan, LinuxNamespaceType::Pid),
            Some(Some("/proc/100/ns/pid".into()))
        );
        assert_eq!(
            find(&plan, LinuxNamespaceType::Uts),
            Some(Some("/proc/100/ns/uts".into()))
        );
        assert_eq!(find(&plan, LinuxNamespaceType::Mount), Some(None));
        assert_eq!(find(&plan, LinuxNamespaceType::Cgroup), Some(None));
        assert!(find(&plan, LinuxNamespaceType::User).is_none());
        assert!(!plan.host_ipc && !plan.host_network && !plan.host_pid);
    }

    #[test]
    fn node_mode_uses_host_namespaces() {
        let o = opts(
            NamespaceMode::Node,
            NamespaceMode::Node,
            NamespaceMode::Node,
        );
        let plan = plan_namespaces(Some(&o), &pod(), &v2()).unwrap();
        assert!(find(&plan, LinuxNamespaceType::Network).is_none());
        assert!(find(&plan, LinuxNamespaceType::Ipc).is_none());
        assert!(find(&plan, LinuxNamespaceType::Pid).is_none());
        assert!(plan.host_ipc && plan.host_network && plan.host_pid);
    }

    #[test]
    fn pod_mode_without_sandbox_path_means_host() {
        let mut sandbox = pod();
        sandbox.net_ns = None;
        sandbox.ipc_ns = None;
        sandbox.uts_ns = None;
        let o = opts(
            NamespaceMode::Pod,
            NamespaceMode::Container,
            NamespaceMode::Pod,
        );
        let plan = plan_namespaces(Some(&o), &sandbox, &v2()).unwrap();
        assert!(find(&plan, LinuxNamespaceType::Network).is_none());
        assert!(find(&plan, LinuxNamespaceType::Ipc).is_none());
        assert!(find(&plan, LinuxNamespaceType::Uts).is_none());
        assert!(plan.host_ipc && plan.host_network);
    }

    #[test]
    fn container_pid_is_new() {
        let o = opts(
            NamespaceMode::Pod,
            NamespaceMode::Container,
            NamespaceMode::Pod,
        );
        let plan = plan_namespaces(Some(&o), &pod(), &v2()).unwrap();
        assert_eq!(find(&plan, LinuxNamespaceType::Pid), Some(None));
    }

    #[test]
    fn pod_pid_without_sandbox_pid_ns_is_an_error() {
        let mut sandbox = pod();
        sandbox.pid_ns = None;
        let o = opts(NamespaceMode::Pod, NamespaceMode::Pod, NamespaceMode::Pod);
        let err = plan_namespaces(Some(&o), &sandbox, &v2()).unwrap_err();
        assert_eq!(err.kind(), Kind::FailedPrecondition, "{err}");
    }

    #[test]
    fn missing_options_mean_pod_for_everything() {
        // The CRI default (all zero) is POD, including pid.
        let plan = plan_namespaces(None, &pod(), &v2()).unwrap();
        assert_eq!(
            find(&plan, LinuxNamespaceType::Pid),
            Some(Some("/proc/100/ns/pid".into()))
        );
    }

    #[test]
    fn target_pid_joins_target() {
        let mut sandbox = pod();
        sandbox.target_pid_ns = Some("/proc/200/ns/pid".into());
        let mut o = opts(
            NamespaceMode::Pod,
            NamespaceMode::Target,
            NamespaceMode::Pod,
        );
        o.target_id = "target".into();
        let plan = plan_namespaces(Some(&o), &sandbox, &v2()).unwrap();
        assert_eq!(
            find(&plan, LinuxNamespaceType::Pid),
            Some(Some("/proc/200/ns/pid".into()))
        );
    }

    #[test]
    fn target_without_resolved_target_is_an_error() {
        let mut o = opts(
            NamespaceMode::Pod,
            NamespaceMode::Target,
            NamespaceMode::Pod,
        );
        o.target_id = "target".into();
        let err = plan_namespaces(Some(&o), &pod(), &v2()).unwrap_err();
        assert!(
            matches!(err, SpecError::NamespaceUnavailable { .. }),
            "{err}"
        );
        assert!(err.to_string().contains("target"));

        o.target_id.clear();
        let mut sandbox = pod();
        sandbox.target_pid_ns = Some("/proc/200/ns/pid".into());
        let err = plan_namespaces(Some(&o), &sandbox, &v2()).unwrap_err();
        assert_eq!(err.kind(), Kind::InvalidArgument);
    }

    #[test]
    fn cgroup_namespace_only_on_v2() {
        let plan = plan_namespaces(None, &pod(), &HostView::default()).unwrap();
        assert!(find(&plan, LinuxNamespaceType::Cgroup).is_none());
    }

    #[test]
    fn unsupported_modes_are_rejected() {
        let o = opts(
            NamespaceMode::Container,
            NamespaceMode::Pod,
            NamespaceMode::Pod,
        );
        assert!(matches!(
            plan_namespaces(Some(&o), &pod(), &v2()),
            Err(SpecError::InvalidNamespace {
                namespace: "network",
                ..
            })
        ));
        let mut o = opts(NamespaceMode::Pod, NamespaceMode::Pod, NamespaceMode::Pod);
        o.ipc = 42;
        assert!(matches!(
            plan_namespaces(Some(&o), &pod(), &v2()),
            Err(SpecError::InvalidNamespace {
                namespace: "ipc",
                ..
            })
        ));
    }

    #[test]
    fn pod_user_namespace_is_unsupported() {
        let mut o = opts(NamespaceMode::Pod, NamespaceMode::Pod, NamespaceMode::Pod);
        o.userns_options = Some(UserNamespace {
            mode: NamespaceMode::Pod as i32,
            ..Default::default()
        });
        let err = plan_namespaces(Some(&o), &pod(), &v2()).unwrap_err();
        assert!(matches!(err, SpecError::Unsupported(_)), "{err}");
        o.userns_options = Some(UserNamespace {
            mode: NamespaceMode::Node as i32,
            ..Default::default()
        });
        assert!(plan_namespaces(Some(&o), &pod(), &v2()).is_ok());
    }

    #[test]
    fn apply_namespaces_writes_the_spec() {
        let f = Fixture::new();
        let mut spec = Spec::default();
        apply_namespaces(&mut spec, &f.input()).unwrap();
        let ns = spec
            .linux()
            .as_ref()
            .unwrap()
            .namespaces()
            .as_ref()
            .unwrap();
        assert!(ns.iter().any(|n| n.typ() == LinuxNamespaceType::Mount));
    }
}
