//! What differs between the two host backends: the engine that creates a container under
//! its monitor, youki's libcontainer in-process or the crun binary. Everything else (pods,
//! bundles, monitors, logs, exec) is the same `HostBackend`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use oci_spec::runtime::Spec;

use super::super::crun::CrunProbe;
use super::super::{BackendError, PreparedSpec};
use super::seccomp_filters::FilterCache;
use crate::error::Kind;
use crate::monitor::RuntimeKind;

pub enum Engine {
    /// libcontainer, called in the monitor; `root` is its state root
    /// (`<run_dir>/libcontainer`); `filters`, the seccomp profiles compiled so far.
    Libcontainer { root: PathBuf, filters: FilterCache },
    /// crun, run by the monitor for each operation; `root` is its `--root`
    /// (`<run_dir>/crun`); `filters` as for libcontainer, handed to crun compiled.
    Crun {
        probe: CrunProbe,
        root: PathBuf,
        filters: FilterCache,
    },
}

/// crun loads this annotation's program (base64) in place of compiling the spec's seccomp
/// profile; it still reads the profile for the load's flags and a listener.
pub const CRUN_SECCOMP_BPF_DATA: &str = "run.oci.seccomp_bpf_data";

impl Engine {
    pub fn libcontainer(root: PathBuf) -> Engine {
        Engine::Libcontainer {
            root,
            filters: FilterCache::default(),
        }
    }

    pub fn crun(probe: CrunProbe, root: PathBuf) -> Engine {
        Engine::Crun {
            probe,
            root,
            filters: FilterCache::default(),
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Engine::Libcontainer { .. } => "libcontainer",
            Engine::Crun { .. } => "crun",
        }
    }

    /// The runtime's state root.
    pub fn root(&self) -> &Path {
        match self {
            Engine::Libcontainer { root, .. } | Engine::Crun { root, .. } => root,
        }
    }

    pub fn unavailable_reason(&self) -> Option<String> {
        match self {
            Engine::Libcontainer { .. } => None,
            Engine::Crun { probe, .. } => probe.unavailable.clone(),
        }
    }

    pub fn describe(&self) -> serde_json::Value {
        let mut v = match self {
            Engine::Libcontainer { .. } => serde_json::json!({}),
            Engine::Crun { probe, .. } => {
                let mut v = serde_json::to_value(probe).unwrap_or_default();
                if let Some(map) = v.as_object_mut() {
                    // The registry reports availability itself ("available", "reason").
                    map.remove("unavailable");
                }
                v
            }
        };
        v["root"] = self.root().display().to_string().into();
        v
    }

    /// The engine's own fixes to a spec (spec/ writes what runc and crun read).
    /// `own_namespace`: containers are created in a mount namespace of their own
    /// (`CreateRequest::pods_mount`), where the monitor can attach premounts.
    pub fn prepare_spec(
        &self,
        spec: &mut Spec,
        own_namespace: bool,
    ) -> Result<PreparedSpec, BackendError> {
        match self {
            // crun reads the spec as runc does, oomScoreAdj and seccomp argument order
            // included.
            Engine::Crun { filters, .. } => {
                hand_crun_its_filter(spec, filters);
                Ok(PreparedSpec::default())
            }
            Engine::Libcontainer { filters, .. } => {
                prepare_for_libcontainer(spec, own_namespace, filters)
            }
        }
    }

    /// How the monitor creates the container.
    pub fn runtime_kind(&self) -> Result<RuntimeKind, BackendError> {
        match self {
            Engine::Libcontainer { .. } => Ok(RuntimeKind::Libcontainer),
            Engine::Crun { probe, .. } => {
                if let Some(reason) = &probe.unavailable {
                    return Err(refused(format!(
                        "crun is not available on this host: {reason}"
                    )));
                }
                let path = probe
                    .binary
                    .clone()
                    .ok_or_else(|| refused("crun binary not found".into()))?;
                Ok(RuntimeKind::Crun {
                    path,
                    v1_view: probe.v1_view,
                })
            }
        }
    }
}

fn refused(message: String) -> BackendError {
    BackendError::Failed {
        backend: "crun",
        kind: Kind::FailedPrecondition,
        message,
    }
}

/// crun (1.8, as Debian builds it: its own cache of compiled profiles needs libgcrypt)
/// compiles the spec's seccomp profile with libseccomp at every create, ~15 ms for the
/// default profile on this project's machine. The daemon's compiled program, the same
/// libseccomp translation of the same profile (a test compares them), goes to crun in
/// [`CRUN_SECCOMP_BPF_DATA`] instead; the profile stays in the spec for crun's flags and
/// listener. A profile not compiled here (notify, or one libseccomp refuses) stays crun's
/// to compile or refuse, as before. Requests never set the annotation themselves
/// (`spec::RUNTIME_ANNOTATION_PREFIX`).
fn hand_crun_its_filter(spec: &mut Spec, filters: &FilterCache) {
    let Some(profile) = spec.linux().as_ref().and_then(|l| l.seccomp().clone()) else {
        return;
    };
    // The cache holds programs of profiles in libcontainer's form, read as crun reads the
    // profile itself.
    let program = match crate::spec::for_libcontainer(&profile) {
        Ok(profile) => filters.compiled(&profile),
        Err(e) => {
            tracing::debug!("seccomp profile left to crun: {e}");
            None
        }
    };
    if let Some(program) = program {
        let data = base64::engine::general_purpose::STANDARD.encode(program.bytes());
        spec.annotations_mut()
            .get_or_insert_with(HashMap::new)
            .insert(CRUN_SECCOMP_BPF_DATA.into(), data);
    }
}

/// libcontainer 0.7's quirks, worked around in the spec (docs/libcontainer.md).
fn prepare_for_libcontainer(
    spec: &mut Spec,
    own_namespace: bool,
    filters: &FilterCache,
) -> Result<PreparedSpec, BackendError> {
    let mut prepared = PreparedSpec::default();
    if let Some(p) = spec.process_mut() {
        // libcontainer writes the spec's oomScoreAdj into its caller's own
        // /proc/self/oom_score_adj: the monitor writes it into the container's init instead.
        prepared.oom_score_adj = p.oom_score_adj();
        p.set_oom_score_adj(None);
        // An explicit `noNewPrivileges: false` makes libcontainer load seccomp after
        // dropping capabilities, where without CAP_SYS_ADMIN the kernel refuses it; absent,
        // it loads it before, as runc does. Both mean "no no_new_privs" to every runtime.
        if p.no_new_privileges() == Some(false) {
            p.set_no_new_privileges(None);
        }
    }
    // libcontainer reads SCMP_CMP_MASKED_EQ's two values the other way round from runc and
    // crun: without this the default profile's clone rule allows every clone.
    if let Some(linux) = spec.linux_mut() {
        if let Some(seccomp) = linux.seccomp().clone() {
            let fixed = crate::spec::for_libcontainer(&seccomp)
                .map_err(|e| BackendError::internal("libcontainer", e.to_string()))?;
            linux.set_seccomp(Some(fixed));
        }
    }
    // Compiled once per profile by the daemon rather than by libseccomp in every init and
    // exec (~14 ms each for the default profile on this project's machine).
    prepared.seccomp = filters.take(spec);
    // The pod's files, /dev and what is in it (pts, shm, mqueue), private binds (and /sys
    // on the host's network) are mounted by the monitor, each in a few system calls,
    // rather than through libcontainer's hardened path resolution; only in a mount
    // namespace of the create's own, never in the host's.
    if own_namespace {
        use crate::monitor::premount::{take, SourceKind};
        prepared.premounts = take(spec, |source| match std::fs::metadata(source) {
            Ok(m) if m.is_file() => Some(SourceKind::File),
            Ok(m) if m.is_dir() => Some(SourceKind::Dir),
            _ => None,
        });
    }
    Ok(prepared)
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::{ProcessBuilder, SpecBuilder};

    fn spec_with(oom: Option<i32>, nnp: Option<bool>) -> Spec {
        let mut p = ProcessBuilder::default().build().unwrap();
        p.set_oom_score_adj(oom);
        p.set_no_new_privileges(nnp);
        SpecBuilder::default().process(p).build().unwrap()
    }

    #[test]
    fn libcontainer_takes_oom_score_adj_out_of_the_spec_and_crun_keeps_it() {
        let lc = Engine::libcontainer("/run/l".into());
        let mut spec = spec_with(Some(500), Some(false));
        let prepared = lc.prepare_spec(&mut spec, true).unwrap();
        assert_eq!(prepared.oom_score_adj, Some(500));
        let p = spec.process().as_ref().unwrap();
        assert_eq!(p.oom_score_adj(), None);
        assert_eq!(p.no_new_privileges(), None);

        let crun = Engine::crun(CrunProbe::unavailable("test"), "/run/crun".into());
        let mut spec = spec_with(Some(500), Some(false));
        assert_eq!(
            crun.prepare_spec(&mut spec, true).unwrap(),
            PreparedSpec::default()
        );
        let p = spec.process().as_ref().unwrap();
        assert_eq!(p.oom_score_adj(), Some(500));
        assert_eq!(p.no_new_privileges(), Some(false));
    }

    #[test]
    fn libcontainer_takes_the_pods_files_out_only_for_a_namespace_of_the_creates_own() {
        let dir = tempfile::tempdir().unwrap();
        let hosts = dir.path().join("hosts");
        std::fs::write(&hosts, "").unwrap();
        let mut f = crate::spec::fixture::Fixture::new();
        f.config.command = vec!["/bin/sh".into()];
        f.sandbox.hosts_path = Some(hosts.clone());
        let spec = crate::spec::container_spec(&f.input()).unwrap();
        let count = |s: &Spec| s.mounts().as_ref().map_or(0, Vec::len);
        let lc = Engine::libcontainer("/run/l".into());
        for own_namespace in [true, false] {
            let mut s = spec.clone();
            let prepared = lc.prepare_spec(&mut s, own_namespace).unwrap();
            let taken = prepared.premounts.len();
            assert_eq!(count(&s) + taken, count(&spec));
            let hosts_taken = prepared
                .premounts
                .iter()
                .any(|p| p.mount.source().as_deref() == Some(hosts.as_path()));
            assert_eq!(hosts_taken, own_namespace);
            // The /dev tmpfs with it; nothing at all for the host's namespace.
            assert_eq!(taken > 1, own_namespace, "{:#?}", prepared.premounts);
        }
    }

    #[test]
    fn crun_is_handed_the_compiled_program_beside_the_profile() {
        use crate::monitor::seccomp_bpf::{tests::with_notify_rule, Program};
        use oci_spec::runtime::LinuxBuilder;
        let profile = crate::spec::seccomp::default_profile(&Default::default()).unwrap();
        let with_profile = |profile: &oci_spec::runtime::LinuxSeccomp| {
            SpecBuilder::default()
                .linux(
                    LinuxBuilder::default()
                        .seccomp(profile.clone())
                        .build()
                        .unwrap(),
                )
                .build()
                .unwrap()
        };
        let crun = Engine::crun(CrunProbe::unavailable("test"), "/run/crun".into());
        let mut spec = with_profile(&profile);
        assert_eq!(
            crun.prepare_spec(&mut spec, true).unwrap(),
            PreparedSpec::default()
        );
        assert_eq!(
            spec.linux().as_ref().unwrap().seccomp().as_ref(),
            Some(&profile),
            "the profile stays, as crun reads it"
        );
        let data = &spec.annotations().as_ref().unwrap()[CRUN_SECCOMP_BPF_DATA];
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(data)
            .unwrap();
        // The program of the profile read as crun reads it: libcontainer's form of it.
        let expected = Program::compile(&crate::spec::for_libcontainer(&profile).unwrap())
            .unwrap()
            .unwrap();
        assert_eq!(bytes, expected.bytes());
        assert_ne!(
            bytes,
            Program::compile(&profile).unwrap().unwrap().bytes(),
            "the default profile's clone rule compares masked values"
        );

        // Nothing to hand over: no profile, or one only crun can load (notify).
        for mut spec in [
            SpecBuilder::default().build().unwrap(),
            with_profile(&with_notify_rule(profile.clone())),
        ] {
            crun.prepare_spec(&mut spec, true).unwrap();
            let annotations = spec.annotations().clone().unwrap_or_default();
            assert!(!annotations.contains_key(CRUN_SECCOMP_BPF_DATA));
        }
    }

    #[test]
    fn an_unavailable_crun_refuses_to_create_with_its_reason() {
        let crun = Engine::crun(CrunProbe::unavailable("no binary here"), "/run/crun".into());
        let e = crun.runtime_kind().unwrap_err();
        assert!(e.to_string().contains("no binary here"), "{e}");
        assert_eq!(crate::error::Classify::kind(&e), Kind::FailedPrecondition);
    }
}
