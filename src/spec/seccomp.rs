//! The seccomp filter: none, proxrt's RuntimeDefault profile, or a node-local profile file.

use std::collections::{BTreeSet, HashSet};
use std::path::PathBuf;

use k8s_cri::v1::security_profile::ProfileType;
use k8s_cri::v1::{ContainerConfig, LinuxContainerSecurityContext, SecurityProfile};
use oci_spec::runtime::{
    Arch, Capability, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg, LinuxSeccompArgBuilder,
    LinuxSeccompFilterFlag, LinuxSeccompOperator, LinuxSyscall, Spec,
};
use serde::Deserialize;

use super::capabilities::{effective_capabilities, parse_capability};
use super::seccomp_default::{
    AF_VSOCK, ALLOWED, CAPABILITY_GATED, CLONE_NAMESPACE_FLAGS, PERSONALITY_VALUES,
};
use super::{linux_mut, security_context, SpecError, SpecInput};

/// What the request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SeccompChoice {
    Unconfined,
    RuntimeDefault,
    /// A profile file on the node, by absolute path.
    Localhost(PathBuf),
}

pub fn apply_seccomp(
    spec: &mut Spec,
    input: &SpecInput,
    privileged: bool,
) -> Result<(), SpecError> {
    let seccomp = match seccomp_choice(security_context(input.config), privileged)? {
        SeccompChoice::Unconfined => None,
        SeccompChoice::RuntimeDefault => Some(default_profile(&effective_capabilities(spec))?),
        SeccompChoice::Localhost(path) => {
            let shown = path.display().to_string();
            let text = input.seccomp_localhost.ok_or(SpecError::SeccompNotLoaded {
                path: shown.clone(),
            })?;
            Some(parse_profile(&shown, text, &effective_capabilities(spec))?)
        }
    };
    linux_mut(spec).set_seccomp(seccomp);
    Ok(())
}

/// The profile file the caller must read (into `SpecInput::seccomp_localhost`) before
/// building the spec, if the request names one. A privileged container runs unconfined and
/// needs none.
pub fn seccomp_localhost_path(config: &ContainerConfig) -> Result<Option<PathBuf>, SpecError> {
    let sc = security_context(config);
    let privileged = sc.is_some_and(|s| s.privileged);
    Ok(match seccomp_choice(sc, privileged)? {
        SeccompChoice::Localhost(path) => Some(path),
        _ => None,
    })
}

/// The structured `seccomp` field wins; else the deprecated `seccomp_profile_path` string:
/// "" and "unconfined" are unconfined, "runtime/default" and "docker/default" the default
/// profile, `localhost/<absolute path>` a node file. Privileged containers are unconfined.
#[allow(deprecated)] // seccomp_profile_path: the deprecated string form the suite still sends
pub fn seccomp_choice(
    sc: Option<&LinuxContainerSecurityContext>,
    privileged: bool,
) -> Result<SeccompChoice, SpecError> {
    let Some(sc) = sc else {
        return Ok(SeccompChoice::Unconfined);
    };
    if privileged {
        return Ok(SeccompChoice::Unconfined);
    }
    if let Some(profile) = &sc.seccomp {
        return choice_from_profile(profile);
    }
    let legacy = sc.seccomp_profile_path.as_str();
    match legacy {
        "" | "unconfined" => Ok(SeccompChoice::Unconfined),
        "runtime/default" | "docker/default" => Ok(SeccompChoice::RuntimeDefault),
        _ => match legacy.strip_prefix("localhost/") {
            Some(path) => localhost(legacy, path),
            None => Err(SpecError::InvalidSeccomp {
                profile: legacy.to_string(),
                reason: "expected unconfined, runtime/default or localhost/<path>".into(),
            }),
        },
    }
}

fn choice_from_profile(profile: &SecurityProfile) -> Result<SeccompChoice, SpecError> {
    match ProfileType::try_from(profile.profile_type) {
        Ok(ProfileType::RuntimeDefault) => Ok(SeccompChoice::RuntimeDefault),
        Ok(ProfileType::Unconfined) => Ok(SeccompChoice::Unconfined),
        Ok(ProfileType::Localhost) => {
            let r = profile.localhost_ref.as_str();
            localhost(r, r.strip_prefix("localhost/").unwrap_or(r))
        }
        Err(_) => Err(SpecError::InvalidSeccomp {
            profile: format!("type {} {:?}", profile.profile_type, profile.localhost_ref),
            reason: "unknown profile type (expected RuntimeDefault, Unconfined or Localhost)"
                .into(),
        }),
    }
}

fn localhost(shown: &str, path: &str) -> Result<SeccompChoice, SpecError> {
    if !path.starts_with('/') || path.contains('\0') {
        return Err(SpecError::InvalidSeccomp {
            profile: shown.to_string(),
            reason: "a localhost profile must be an absolute path on the node".into(),
        });
    }
    Ok(SeccompChoice::Localhost(PathBuf::from(path)))
}

/// The architectures the filter covers: the host's and the 32-bit ABIs its kernel also runs.
/// A syscall made through another ABI than the listed ones is killed by the filter's arch
/// check rather than slipping past rules written for the native numbers.
pub fn default_architectures() -> Option<Vec<Arch>> {
    if cfg!(target_arch = "x86_64") {
        Some(vec![
            Arch::ScmpArchX86_64,
            Arch::ScmpArchX86,
            Arch::ScmpArchX32,
        ])
    } else if cfg!(target_arch = "aarch64") {
        Some(vec![Arch::ScmpArchAarch64, Arch::ScmpArchArm])
    } else {
        None
    }
}

/// proxrt's RuntimeDefault profile for a container holding `caps` (its effective set).
pub fn default_profile(caps: &HashSet<Capability>) -> Result<LinuxSeccomp, SpecError> {
    let sys_admin = caps.contains(&Capability::SysAdmin);
    let mut allowed: BTreeSet<&str> = ALLOWED.iter().copied().collect();
    for (cap, names) in CAPABILITY_GATED {
        if caps.contains(cap) {
            allowed.extend(names.iter().copied());
        }
    }
    if sys_admin {
        allowed.insert("clone");
        allowed.insert("clone3");
    }

    let mut syscalls = vec![syscall(
        allowed.into_iter(),
        LinuxSeccompAction::ScmpActAllow,
        None,
    )];
    for value in PERSONALITY_VALUES {
        syscalls.push(syscall(
            ["personality"].into_iter(),
            LinuxSeccompAction::ScmpActAllow,
            Some(vec![arg(0, *value, None, LinuxSeccompOperator::ScmpCmpEq)?]),
        ));
    }
    syscalls.push(syscall(
        ["socket"].into_iter(),
        LinuxSeccompAction::ScmpActAllow,
        Some(vec![arg(
            0,
            AF_VSOCK,
            None,
            LinuxSeccompOperator::ScmpCmpNe,
        )?]),
    ));
    if !sys_admin {
        // runtime-spec MASKED_EQ: (arg & value) == valueTwo. See `for_libcontainer`.
        syscalls.push(syscall(
            ["clone"].into_iter(),
            LinuxSeccompAction::ScmpActAllow,
            Some(vec![arg(
                0,
                CLONE_NAMESPACE_FLAGS,
                Some(0),
                LinuxSeccompOperator::ScmpCmpMaskedEq,
            )?]),
        ));
        // clone3 passes its flags in memory, out of the filter's reach: say "not implemented"
        // so libc falls back to clone, which the rule above can inspect.
        let mut clone3 = syscall(
            ["clone3"].into_iter(),
            LinuxSeccompAction::ScmpActErrno,
            None,
        );
        clone3.set_errno_ret(Some(libc::ENOSYS as u32));
        syscalls.push(clone3);
    }

    let mut profile = LinuxSeccomp::default();
    profile.set_default_action(LinuxSeccompAction::ScmpActErrno);
    profile.set_default_errno_ret(Some(libc::EPERM as u32));
    profile.set_architectures(default_architectures());
    profile.set_syscalls(Some(syscalls));
    Ok(profile)
}

/// libcontainer 0.7 reads SCMP_CMP_MASKED_EQ as `(arg & valueTwo) == value`, the reverse of
/// the runtime-spec, runc and crun (`(arg & value) == valueTwo`). Fed the spec-correct clone
/// rule, it builds `(arg & 0) == 0x7E020000`, which libseccomp reduces to "always": clone with
/// CLONE_NEWUSER/CLONE_NEWNET/... is then allowed without anyone noticing (checked against
/// libcontainer 0.7's `initialize_seccomp`: namespace clones succeed without this swap and get
/// EPERM with it; plain fork and threads work either way). The libcontainer backend must pass
/// its seccomp through this; crun gets the spec as built.
pub fn for_libcontainer(seccomp: &LinuxSeccomp) -> Result<LinuxSeccomp, SpecError> {
    let mut out = seccomp.clone();
    let syscalls = out.syscalls().clone().map(|calls| {
        calls
            .into_iter()
            .map(|mut call| {
                let args = call.args().clone().map(|args| {
                    args.into_iter()
                        .map(|a| {
                            if a.op() == LinuxSeccompOperator::ScmpCmpMaskedEq {
                                return arg(
                                    a.index(),
                                    a.value_two().unwrap_or(0),
                                    Some(a.value()),
                                    a.op(),
                                );
                            }
                            Ok(a)
                        })
                        .collect::<Result<Vec<_>, SpecError>>()
                });
                call.set_args(args.transpose()?);
                Ok(call)
            })
            .collect::<Result<Vec<_>, SpecError>>()
    });
    out.set_syscalls(syscalls.transpose()?);
    Ok(out)
}

fn syscall<'a>(
    names: impl Iterator<Item = &'a str>,
    action: LinuxSeccompAction,
    args: Option<Vec<LinuxSeccompArg>>,
) -> LinuxSyscall {
    let mut s = LinuxSyscall::default();
    s.set_names(names.map(String::from).collect());
    s.set_action(action);
    s.set_args(args);
    s
}

fn arg(
    index: usize,
    value: u64,
    value_two: Option<u64>,
    op: LinuxSeccompOperator,
) -> Result<LinuxSeccompArg, SpecError> {
    // LinuxSeccompArg has getters but no setters: its builder is the only way in.
    let mut b = LinuxSeccompArgBuilder::default()
        .index(index)
        .value(value)
        .op(op);
    if let Some(two) = value_two {
        b = b.value_two(two);
    }
    Ok(b.build()?)
}

/// A profile file: the OCI `linux.seccomp` object, or Docker's profile format (which adds
/// `archMap`, a single `name`, and `includes`/`excludes` conditions on capabilities and
/// architectures). Unknown fields (`comment`, ...) are ignored.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ProfileFile {
    default_action: LinuxSeccompAction,
    #[serde(default)]
    default_errno_ret: Option<u32>,
    #[serde(default)]
    architectures: Option<Vec<Arch>>,
    #[serde(default)]
    arch_map: Option<Vec<ArchMapEntry>>,
    #[serde(default)]
    flags: Option<Vec<LinuxSeccompFilterFlag>>,
    #[serde(default)]
    listener_path: Option<PathBuf>,
    #[serde(default)]
    listener_metadata: Option<String>,
    #[serde(default)]
    syscalls: Option<Vec<ProfileSyscall>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ArchMapEntry {
    architecture: Arch,
    #[serde(default)]
    sub_architectures: Option<Vec<Arch>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ProfileSyscall {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    names: Option<Vec<String>>,
    action: LinuxSeccompAction,
    #[serde(default)]
    errno_ret: Option<u32>,
    #[serde(default)]
    args: Option<Vec<LinuxSeccompArg>>,
    #[serde(default)]
    includes: Option<Condition>,
    #[serde(default)]
    excludes: Option<Condition>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Condition {
    #[serde(default)]
    caps: Option<Vec<String>>,
    #[serde(default)]
    arches: Option<Vec<String>>,
    /// Not evaluated: proxrt does not pass the kernel version in; every kernel it supports is
    /// newer than the minimums Docker's profile uses (4.8 for ptrace).
    #[serde(default)]
    #[allow(dead_code)]
    min_kernel: Option<String>,
}

/// Docker's architecture names (Go's GOARCH) for the host, as `includes.arches` uses them.
fn native_go_arch() -> &'static str {
    if cfg!(target_arch = "x86_64") {
        "amd64"
    } else if cfg!(target_arch = "aarch64") {
        "arm64"
    } else {
        std::env::consts::ARCH
    }
}

fn native_scmp_arch() -> Option<Arch> {
    default_architectures().and_then(|a| a.first().copied())
}

/// Parses a localhost profile into the spec's seccomp object, evaluating Docker-style
/// conditions against the container's effective capabilities.
pub fn parse_profile(
    shown: &str,
    text: &str,
    caps: &HashSet<Capability>,
) -> Result<LinuxSeccomp, SpecError> {
    let invalid = |reason: String| SpecError::InvalidSeccomp {
        profile: shown.to_string(),
        reason,
    };
    if text.trim().is_empty() {
        return Err(invalid("the file is empty".into()));
    }
    let mut de = serde_json::Deserializer::from_str(text);
    let file: ProfileFile =
        serde_path_to_error::deserialize(&mut de).map_err(|e| invalid(e.to_string()))?;

    let mut architectures = file.architectures.unwrap_or_default();
    if let Some(map) = file.arch_map {
        // Docker's archMap: the entry for this host, with its 32-bit sub-architectures.
        if let Some(entry) = map
            .into_iter()
            .find(|e| Some(e.architecture) == native_scmp_arch())
        {
            architectures.push(entry.architecture);
            architectures.extend(entry.sub_architectures.unwrap_or_default());
        }
    }
    let mut seen = HashSet::new();
    architectures.retain(|a| seen.insert(*a as u32));

    let mut syscalls = Vec::new();
    for (i, entry) in file.syscalls.unwrap_or_default().into_iter().enumerate() {
        if !applies(entry.includes.as_ref(), entry.excludes.as_ref(), caps) {
            continue;
        }
        let mut names = entry.names.unwrap_or_default();
        names.extend(entry.name);
        names.retain(|n| !n.is_empty());
        if names.is_empty() {
            return Err(invalid(format!("syscalls[{i}] names no system call")));
        }
        // Docker writes `"args": []` for "no condition".
        let args = entry.args.filter(|a| !a.is_empty());
        let mut s = syscall(names.iter().map(String::as_str), entry.action, args);
        s.set_errno_ret(entry.errno_ret);
        syscalls.push(s);
    }

    let mut profile = LinuxSeccomp::default();
    profile.set_default_action(file.default_action);
    profile.set_default_errno_ret(file.default_errno_ret);
    profile.set_architectures((!architectures.is_empty()).then_some(architectures));
    profile.set_flags(file.flags);
    profile.set_listener_path(file.listener_path);
    profile.set_listener_metadata(file.listener_metadata);
    profile.set_syscalls(Some(syscalls));
    Ok(profile)
}

/// Docker's semantics: every `includes.caps` held and the host among `includes.arches`;
/// no `excludes.caps` held and the host not among `excludes.arches`. A capability name this
/// build does not know counts as not held.
fn applies(
    includes: Option<&Condition>,
    excludes: Option<&Condition>,
    caps: &HashSet<Capability>,
) -> bool {
    let held = |name: &String| parse_capability(name).is_ok_and(|c| caps.contains(&c));
    let on_host = |arch: &String| arch == native_go_arch();
    if let Some(inc) = includes {
        if !inc.caps.as_deref().unwrap_or_default().iter().all(held) {
            return false;
        }
        if let Some(arches) = inc.arches.as_deref().filter(|a| !a.is_empty()) {
            if !arches.iter().any(on_host) {
                return false;
            }
        }
    }
    if let Some(exc) = excludes {
        if exc.caps.as_deref().unwrap_or_default().iter().any(held) {
            return false;
        }
        if exc
            .arches
            .as_deref()
            .unwrap_or_default()
            .iter()
            .any(on_host)
        {
            return false;
        }
    }
    true
}

#[cfg(test)]
#[allow(deprecated)]
mod tests {
    use super::super::capabilities::{all_capabilities, DEFAULT_CAPABILITIES};
    use super::super::fixture::Fixture;
    use super::*;
    use crate::error::{Classify, Kind};

    fn default_caps() -> HashSet<Capability> {
        DEFAULT_CAPABILITIES.into_iter().collect()
    }

    fn allowed_names(p: &LinuxSeccomp) -> HashSet<String> {
        p.syscalls()
            .as_deref()
            .unwrap_or_default()
            .iter()
            .filter(|s| s.action() == LinuxSeccompAction::ScmpActAllow && s.args().is_none())
            .flat_map(|s| s.names().clone())
            .collect()
    }

    fn rules_for<'a>(p: &'a LinuxSeccomp, name: &str) -> Vec<&'a LinuxSyscall> {
        p.syscalls()
            .as_deref()
            .unwrap_or_default()
            .iter()
            .filter(|s| s.names().iter().any(|n| n == name))
            .collect()
    }

    fn sc_with(profile: Option<SecurityProfile>, legacy: &str) -> LinuxContainerSecurityContext {
        LinuxContainerSecurityContext {
            seccomp: profile,
            seccomp_profile_path: legacy.into(),
            ..Default::default()
        }
    }

    fn profile(t: ProfileType, r: &str) -> SecurityProfile {
        SecurityProfile {
            profile_type: t as i32,
            localhost_ref: r.into(),
        }
    }

    #[test]
    fn choice_from_structured_field() {
        let cases = [
            (
                profile(ProfileType::RuntimeDefault, ""),
                SeccompChoice::RuntimeDefault,
            ),
            (
                profile(ProfileType::Unconfined, ""),
                SeccompChoice::Unconfined,
            ),
            (
                profile(ProfileType::Localhost, "/var/lib/kubelet/seccomp/a.json"),
                SeccompChoice::Localhost("/var/lib/kubelet/seccomp/a.json".into()),
            ),
        ];
        for (p, want) in cases {
            // The structured field wins over the deprecated string.
            let sc = sc_with(Some(p), "unconfined");
            assert_eq!(seccomp_choice(Some(&sc), false).unwrap(), want);
        }
    }

    #[test]
    fn choice_from_deprecated_string() {
        let cases = [
            ("", SeccompChoice::Unconfined),
            ("unconfined", SeccompChoice::Unconfined),
            ("runtime/default", SeccompChoice::RuntimeDefault),
            ("docker/default", SeccompChoice::RuntimeDefault),
            (
                "localhost//etc/p.json",
                SeccompChoice::Localhost("/etc/p.json".into()),
            ),
        ];
        for (s, want) in cases {
            assert_eq!(
                seccomp_choice(Some(&sc_with(None, s)), false).unwrap(),
                want,
                "{s}"
            );
        }
        assert_eq!(
            seccomp_choice(None, false).unwrap(),
            SeccompChoice::Unconfined
        );
    }

    #[test]
    fn choice_errors() {
        for s in ["bogus", "localhost/relative.json", "localhost/"] {
            let err = seccomp_choice(Some(&sc_with(None, s)), false).unwrap_err();
            assert_eq!(err.kind(), Kind::InvalidArgument, "{s}");
        }
        let sc = sc_with(Some(profile(ProfileType::Localhost, "")), "");
        assert!(seccomp_choice(Some(&sc), false).is_err());
        let sc = sc_with(
            Some(SecurityProfile {
                profile_type: 9,
                localhost_ref: String::new(),
            }),
            "",
        );
        assert!(seccomp_choice(Some(&sc), false).is_err());
    }

    #[test]
    fn errors_name_the_value() {
        for s in ["bogus", "localhost/relative.json", "docker/bogus"] {
            let err = seccomp_choice(Some(&sc_with(None, s)), false).unwrap_err();
            assert!(err.to_string().contains(&format!("{s:?}")), "{err}");
        }
        let sc = sc_with(Some(profile(ProfileType::Localhost, "rel/p.json")), "");
        let err = seccomp_choice(Some(&sc), false).unwrap_err();
        assert!(err.to_string().contains("\"rel/p.json\""), "{err}");
        let sc = sc_with(
            Some(SecurityProfile {
                profile_type: 9,
                localhost_ref: String::new(),
            }),
            "",
        );
        let err = seccomp_choice(Some(&sc), false).unwrap_err();
        assert!(
            err.to_string().contains("type 9")
                && err
                    .to_string()
                    .contains("expected RuntimeDefault, Unconfined or Localhost"),
            "{err}"
        );
        // The typed Localhost field as some clients send it, with the string form's prefix.
        let sc = sc_with(
            Some(profile(ProfileType::Localhost, "localhost//p.json")),
            "",
        );
        assert_eq!(
            seccomp_choice(Some(&sc), false).unwrap(),
            SeccompChoice::Localhost("/p.json".into())
        );
    }

    #[test]
    fn privileged_is_unconfined_whatever_is_asked() {
        for legacy in ["runtime/default", "localhost//p.json", "bogus"] {
            let sc = sc_with(None, legacy);
            assert_eq!(
                seccomp_choice(Some(&sc), true).unwrap(),
                SeccompChoice::Unconfined,
                "{legacy}"
            );
        }
        let config = ContainerConfig {
            linux: Some(k8s_cri::v1::LinuxContainerConfig {
                security_context: Some(LinuxContainerSecurityContext {
                    privileged: true,
                    seccomp: Some(profile(ProfileType::Localhost, "/p.json")),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(seccomp_localhost_path(&config).unwrap(), None);
    }

    #[test]
    fn privileged_is_unconfined() {
        let sc = sc_with(Some(profile(ProfileType::RuntimeDefault, "")), "");
        assert_eq!(
            seccomp_choice(Some(&sc), true).unwrap(),
            SeccompChoice::Unconfined
        );
    }

    #[test]
    fn default_profile_denies_with_eperm_and_allows_the_basics() {
        let p = default_profile(&default_caps()).unwrap();
        assert_eq!(p.default_action(), LinuxSeccompAction::ScmpActErrno);
        assert_eq!(p.default_errno_ret(), Some(libc::EPERM as u32));
        let allowed = allowed_names(&p);
        assert!(allowed.len() > 300, "{}", allowed.len());
        for name in [
            "read",
            "write",
            "openat",
            "execve",
            "futex",
            "epoll_wait",
            "chroot",
            "faccessat2",
            "rseq",
        ] {
            assert!(allowed.contains(name), "{name}");
        }
        for name in [
            "keyctl",
            "io_uring_setup",
            "kexec_load",
            "pivot_root",
            "open_by_handle_at",
        ] {
            assert!(rules_for(&p, name).is_empty(), "{name}");
        }
        if cfg!(target_arch = "x86_64") {
            assert_eq!(
                p.architectures().as_deref().unwrap()[0],
                Arch::ScmpArchX86_64
            );
        }
    }

    #[test]
    fn default_profile_gates_by_capability() {
        let p = default_profile(&default_caps()).unwrap();
        let allowed = allowed_names(&p);
        for name in [
            "mount",
            "umount2",
            "unshare",
            "setns",
            "ptrace",
            "process_vm_readv",
            "bpf",
            "reboot",
            "init_module",
        ] {
            assert!(
                !allowed.contains(name),
                "{name} allowed without its capability"
            );
        }

        let mut caps = default_caps();
        caps.insert(Capability::SysPtrace);
        let allowed = allowed_names(&default_profile(&caps).unwrap());
        assert!(allowed.contains("ptrace") && allowed.contains("process_vm_readv"));
        assert!(!allowed.contains("mount"));

        caps.insert(Capability::SysAdmin);
        let allowed = allowed_names(&default_profile(&caps).unwrap());
        for name in ["mount", "unshare", "setns", "clone", "clone3", "bpf"] {
            assert!(allowed.contains(name), "{name}");
        }

        let mut no_chroot = default_caps();
        no_chroot.remove(&Capability::SysChroot);
        assert!(!allowed_names(&default_profile(&no_chroot).unwrap()).contains("chroot"));
    }

    #[test]
    fn default_profile_clone_without_sys_admin_refuses_namespace_flags() {
        let p = default_profile(&default_caps()).unwrap();
        let clone = rules_for(&p, "clone");
        assert_eq!(clone.len(), 1);
        let a = clone[0].args().as_ref().unwrap()[0];
        assert_eq!(a.op(), LinuxSeccompOperator::ScmpCmpMaskedEq);
        assert_eq!(a.value(), 0x7E02_0000, "the mask of every CLONE_NEW* flag");
        assert_eq!(a.value_two(), Some(0));
        let clone3 = rules_for(&p, "clone3");
        assert_eq!(clone3[0].action(), LinuxSeccompAction::ScmpActErrno);
        assert_eq!(clone3[0].errno_ret(), Some(libc::ENOSYS as u32));

        let mut caps = default_caps();
        caps.insert(Capability::SysAdmin);
        let p = default_profile(&caps).unwrap();
        assert!(rules_for(&p, "clone").iter().all(|r| r.args().is_none()));
    }

    #[test]
    fn default_profile_personality_and_socket_rules() {
        let p = default_profile(&default_caps()).unwrap();
        let personality = rules_for(&p, "personality");
        assert_eq!(personality.len(), PERSONALITY_VALUES.len());
        assert!(personality
            .iter()
            .all(|r| r.args().as_ref().unwrap()[0].op() == LinuxSeccompOperator::ScmpCmpEq));
        let socket = rules_for(&p, "socket");
        let a = socket[0].args().as_ref().unwrap()[0];
        assert_eq!((a.value(), a.op()), (40, LinuxSeccompOperator::ScmpCmpNe));
    }

    #[test]
    fn default_profile_names_are_unique_and_serializable() {
        let p = default_profile(&all_capabilities()).unwrap();
        let json = serde_json::to_string(&p).unwrap();
        let back: LinuxSeccomp = serde_json::from_str(&json).unwrap();
        assert_eq!(back, p);
        let names: Vec<_> = p.syscalls().as_ref().unwrap()[0].names().clone();
        let unique: HashSet<_> = names.iter().collect();
        assert_eq!(unique.len(), names.len());
    }

    #[test]
    fn libcontainer_form_swaps_masked_eq_operands_only() {
        let p = default_profile(&default_caps()).unwrap();
        let l = for_libcontainer(&p).unwrap();
        let clone = rules_for(&l, "clone")[0].args().as_ref().unwrap()[0];
        assert_eq!((clone.value(), clone.value_two()), (0, Some(0x7E02_0000)));
        let socket = rules_for(&l, "socket")[0].args().as_ref().unwrap()[0];
        assert_eq!(socket.value(), 40);
        assert_eq!(
            for_libcontainer(&l).unwrap(),
            p,
            "swapping twice is the identity"
        );
    }

    const OCI_PROFILE: &str = r#"{
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": 38,
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_AARCH64"],
        "flags": ["SECCOMP_FILTER_FLAG_LOG"],
        "syscalls": [
            {"names": ["read", "write"], "action": "SCMP_ACT_ALLOW"},
            {"names": ["personality"], "action": "SCMP_ACT_ALLOW",
             "args": [{"index": 0, "value": 8, "op": "SCMP_CMP_EQ"}]},
            {"names": ["mkdir"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13}
        ]
    }"#;

    #[test]
    fn localhost_oci_profile_is_parsed() {
        let p = parse_profile("/p.json", OCI_PROFILE, &default_caps()).unwrap();
        assert_eq!(p.default_action(), LinuxSeccompAction::ScmpActErrno);
        assert_eq!(p.default_errno_ret(), Some(38));
        assert_eq!(p.architectures().as_ref().unwrap().len(), 2);
        assert_eq!(
            p.flags().as_deref(),
            Some(&[LinuxSeccompFilterFlag::SeccompFilterFlagLog][..])
        );
        let calls = p.syscalls().as_ref().unwrap();
        assert_eq!(calls.len(), 3);
        assert_eq!(calls[1].args().as_ref().unwrap()[0].value(), 8);
        assert_eq!(calls[2].errno_ret(), Some(13));
    }

    #[test]
    fn localhost_docker_profile_conditions_are_evaluated() {
        let text = r#"{
            "defaultAction": "SCMP_ACT_ERRNO",
            "archMap": [
                {"architecture": "SCMP_ARCH_X86_64", "subArchitectures": ["SCMP_ARCH_X86", "SCMP_ARCH_X32"]},
                {"architecture": "SCMP_ARCH_AARCH64", "subArchitectures": ["SCMP_ARCH_ARM"]}
            ],
            "syscalls": [
                {"names": ["read"], "action": "SCMP_ACT_ALLOW", "args": [], "comment": "", "includes": {}, "excludes": {}},
                {"name": "write", "action": "SCMP_ACT_ALLOW", "args": null},
                {"names": ["mount"], "action": "SCMP_ACT_ALLOW", "includes": {"caps": ["CAP_SYS_ADMIN"]}},
                {"names": ["clone"], "action": "SCMP_ACT_ALLOW", "excludes": {"caps": ["CAP_SYS_ADMIN"]},
                 "args": [{"index": 0, "value": 2114060288, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}]},
                {"names": ["arch_prctl"], "action": "SCMP_ACT_ALLOW", "includes": {"arches": ["amd64", "x32"]}},
                {"names": ["ptrace"], "action": "SCMP_ACT_ALLOW", "includes": {"minKernel": "4.8"}},
                {"names": ["ioperm"], "action": "SCMP_ACT_ALLOW", "includes": {"caps": ["CAP_FUTURE_THING"]}}
            ]
        }"#;
        let names = |caps: &HashSet<Capability>| -> Vec<String> {
            parse_profile("/d.json", text, caps)
                .unwrap()
                .syscalls()
                .as_ref()
                .unwrap()
                .iter()
                .flat_map(|s| s.names().clone())
                .collect()
        };
        let plain = names(&default_caps());
        assert!(plain.contains(&"read".to_string()) && plain.contains(&"write".to_string()));
        assert!(!plain.contains(&"mount".to_string()));
        assert!(plain.contains(&"clone".to_string()));
        assert!(plain.contains(&"ptrace".to_string()));
        assert!(!plain.contains(&"ioperm".to_string()));
        assert_eq!(
            plain.contains(&"arch_prctl".to_string()),
            cfg!(target_arch = "x86_64")
        );

        let admin = names(&all_capabilities());
        assert!(admin.contains(&"mount".to_string()));
        assert!(!admin.contains(&"clone".to_string()));

        let p = parse_profile("/d.json", text, &default_caps()).unwrap();
        if cfg!(target_arch = "x86_64") {
            assert_eq!(
                p.architectures().as_deref().unwrap(),
                [Arch::ScmpArchX86_64, Arch::ScmpArchX86, Arch::ScmpArchX32]
            );
        }
    }

    #[test]
    fn malformed_localhost_profiles_are_invalid_argument() {
        for text in [
            "",
            "   ",
            "not json",
            "{}",
            r#"{"defaultAction": "SCMP_ACT_MAYBE"}"#,
            r#"{"defaultAction": "SCMP_ACT_ERRNO", "architectures": ["SCMP_ARCH_VAX"]}"#,
            r#"{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["read"]}]}"#,
            r#"{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": [], "action": "SCMP_ACT_ALLOW"}]}"#,
            r#"{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ALLOW",
                "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_SOMETIMES"}]}]}"#,
        ] {
            let err = parse_profile("/bad.json", text, &default_caps()).unwrap_err();
            assert!(matches!(err, SpecError::InvalidSeccomp { .. }), "{text}");
            assert_eq!(err.kind(), Kind::InvalidArgument);
            assert!(err.to_string().contains("/bad.json"));
        }
        // serde_path_to_error says where.
        let err = parse_profile(
            "/bad.json",
            r#"{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["read"], "action": "NOPE"}]}"#,
            &default_caps(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("syscalls[0].action"), "{err}");
    }

    #[test]
    fn apply_localhost_needs_the_file_contents() {
        let mut f = Fixture::new();
        f.security_context().seccomp = Some(profile(ProfileType::Localhost, "/etc/proxrt/p.json"));
        let mut spec = Spec::default();
        let err = apply_seccomp(&mut spec, &f.input(), false).unwrap_err();
        assert!(matches!(err, SpecError::SeccompNotLoaded { .. }));
        assert_eq!(err.kind(), Kind::Internal);

        assert_eq!(
            seccomp_localhost_path(&f.config).unwrap(),
            Some(PathBuf::from("/etc/proxrt/p.json"))
        );
        f.seccomp_localhost = Some(OCI_PROFILE.into());
        apply_seccomp(&mut spec, &f.input(), false).unwrap();
        let s = spec.linux().as_ref().unwrap().seccomp().as_ref().unwrap();
        assert_eq!(s.default_errno_ret(), Some(38));

        f.seccomp_localhost = Some("{".into());
        let err = apply_seccomp(&mut spec, &f.input(), false).unwrap_err();
        assert_eq!(err.kind(), Kind::InvalidArgument);
    }

    #[test]
    fn apply_runtime_default_uses_the_specs_capabilities() {
        let mut f = Fixture::new();
        f.security_context().seccomp = Some(profile(ProfileType::RuntimeDefault, ""));
        let mut spec = Spec::default();
        let mut caps = oci_spec::runtime::LinuxCapabilities::default();
        caps.set_effective(Some([Capability::SysPtrace].into_iter().collect()));
        super::super::process_mut(&mut spec).set_capabilities(Some(caps));
        apply_seccomp(&mut spec, &f.input(), false).unwrap();
        let s = spec.linux().as_ref().unwrap().seccomp().clone().unwrap();
        assert!(allowed_names(&s).contains("ptrace"));
        assert!(
            !allowed_names(&s).contains("chroot"),
            "chroot needs SYS_CHROOT"
        );

        apply_seccomp(&mut spec, &f.input(), true).unwrap();
        assert!(spec.linux().as_ref().unwrap().seccomp().is_none());
    }
}
