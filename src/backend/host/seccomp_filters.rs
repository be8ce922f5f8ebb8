//! The seccomp filters of host containers, compiled by the daemon once per profile
//! (`monitor/seccomp_bpf.rs`): taken out of the spec libcontainer reads, handed to crun
//! beside it (engine.rs).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use oci_spec::runtime::{Capability, LinuxCapabilities, Process, Spec};

use crate::monitor::seccomp_bpf::{ContainerFilter, Program};

/// Distinct profiles kept compiled: a node runs a few (RuntimeDefault for each capability
/// set asked for, the operators' Localhost profiles); past this many the cache starts over.
const KEPT: usize = 64;

/// Compiled programs by profile (its JSON, so two equal profiles share one).
#[derive(Default)]
pub struct FilterCache {
    programs: Mutex<HashMap<Vec<u8>, Arc<Program>>>,
}

impl FilterCache {
    /// Takes the spec's seccomp profile out of `spec` and returns it compiled, with the
    /// spec's capabilities widened when the init needs CAP_SYS_ADMIN for the load
    /// ([`ContainerFilter::capabilities`]). Leaves the spec alone (libcontainer loads the
    /// profile itself, as before) when it has none, when the profile is one that is not
    /// compiled (notify) or when libseccomp refuses it here: the runtime then reports
    /// that refusal as it always did.
    pub fn take(&self, spec: &mut Spec) -> Option<ContainerFilter> {
        let profile = spec.linux().as_ref()?.seccomp().clone()?;
        let program = self.compiled(&profile)?;
        if let Some(linux) = spec.linux_mut() {
            linux.set_seccomp(None);
        }
        let capabilities = spec
            .process_mut()
            .as_mut()
            .and_then(widen_for_the_load)
            .map(Box::new);
        Some(ContainerFilter {
            program: Program::clone(&program),
            capabilities,
        })
    }

    /// The program of `profile` (in libcontainer's form: `spec::for_libcontainer`),
    /// compiled at its first use. None for a profile that is not compiled here (notify)
    /// or that libseccomp refuses: the runtime then compiles or refuses it, as it always
    /// did.
    pub fn compiled(&self, profile: &oci_spec::runtime::LinuxSeccomp) -> Option<Arc<Program>> {
        match self.program(profile) {
            Ok(program) => program,
            Err(e) => {
                tracing::debug!("seccomp profile left to the runtime: {e}");
                None
            }
        }
    }

    fn program(
        &self,
        profile: &oci_spec::runtime::LinuxSeccomp,
    ) -> Result<Option<Arc<Program>>, String> {
        let key = serde_json::to_vec(profile).map_err(|e| e.to_string())?;
        if let Some(p) = self.lock().get(&key) {
            return Ok(Some(p.clone()));
        }
        // Compiled outside the lock: a first create of another profile does not wait.
        let Some(program) = Program::compile(profile)? else {
            return Ok(None);
        };
        let program = Arc::new(program);
        let mut programs = self.lock();
        if programs.len() >= KEPT {
            programs.clear();
        }
        programs.insert(key, program.clone());
        Ok(Some(program))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Vec<u8>, Arc<Program>>> {
        self.programs.lock().unwrap_or_else(|e| e.into_inner())
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().len()
    }
}

/// A process without `no_new_privs` can load a filter only with CAP_SYS_ADMIN in its
/// effective set. libcontainer loads such a process's filter before it drops
/// capabilities; the compiled one is loaded after (libcontainer's executor runs last), so
/// CAP_SYS_ADMIN is added to the effective and permitted sets libcontainer sets — never to
/// the bounding set: nothing exec'd can gain it — and the init sets the capabilities the
/// process asked for (returned here) right after the load. None: nothing to widen (the
/// process has `no_new_privs`, keeps CAP_SYS_ADMIN, or has no capabilities section, which
/// libcontainer leaves as they are).
fn widen_for_the_load(process: &mut Process) -> Option<LinuxCapabilities> {
    if process.no_new_privileges() == Some(true) {
        return None;
    }
    let asked = process.capabilities().clone()?;
    // libcontainer raises the effective set to the permitted one before setting the spec's.
    let effective = asked.effective().as_ref().or(asked.permitted().as_ref());
    if effective.is_none_or(|e| e.contains(&Capability::SysAdmin)) {
        return None;
    }
    let mut widened = asked.clone();
    if let Some(mut e) = asked.effective().clone() {
        e.insert(Capability::SysAdmin);
        widened.set_effective(Some(e));
    }
    if let Some(mut p) = asked.permitted().clone() {
        p.insert(Capability::SysAdmin);
        widened.set_permitted(Some(p));
    }
    process.set_capabilities(Some(widened));
    Some(asked)
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use oci_spec::runtime::{
        LinuxBuilder, LinuxCapabilitiesBuilder, LinuxSeccompAction, ProcessBuilder, SpecBuilder,
    };

    use super::*;
    use crate::monitor::seccomp_bpf::tests::with_notify_rule;

    fn caps(list: &[Capability]) -> HashSet<Capability> {
        list.iter().copied().collect()
    }

    fn spec(nnp: Option<bool>, effective: &[Capability]) -> Spec {
        let profile = crate::spec::seccomp::default_profile(&caps(effective)).unwrap();
        let capabilities = LinuxCapabilitiesBuilder::default()
            .bounding(caps(effective))
            .effective(caps(effective))
            .permitted(caps(effective))
            .inheritable(caps(&[]))
            .ambient(caps(&[]))
            .build()
            .unwrap();
        let mut process = ProcessBuilder::default()
            .capabilities(capabilities)
            .build()
            .unwrap();
        process.set_no_new_privileges(nnp);
        SpecBuilder::default()
            .process(process)
            .linux(LinuxBuilder::default().seccomp(profile).build().unwrap())
            .build()
            .unwrap()
    }

    fn capabilities(spec: &Spec) -> LinuxCapabilities {
        spec.process()
            .as_ref()
            .unwrap()
            .capabilities()
            .clone()
            .unwrap()
    }

    #[test]
    fn the_profile_leaves_the_spec_compiled_once_per_profile() {
        let cache = FilterCache::default();
        let mut a = spec(Some(true), &[Capability::Chown]);
        let mut b = a.clone();
        let first = cache.take(&mut a).unwrap();
        assert_eq!(a.linux().as_ref().unwrap().seccomp(), &None);
        let second = cache.take(&mut b).unwrap();
        assert_eq!(first, second);
        assert_eq!(cache.len(), 1);
        // Another capability set, another profile.
        cache.take(&mut spec(Some(true), &[Capability::SysAdmin]));
        assert_eq!(cache.len(), 2);
        // Nothing to take twice.
        assert_eq!(cache.take(&mut a), None);
    }

    #[test]
    fn with_no_new_privs_or_cap_sys_admin_the_capabilities_stay_as_asked() {
        let cache = FilterCache::default();
        for (nnp, effective) in [
            (Some(true), vec![Capability::Chown]),
            (None, vec![Capability::SysAdmin, Capability::Chown]),
        ] {
            let mut s = spec(nnp, &effective);
            let before = capabilities(&s);
            let filter = cache.take(&mut s).unwrap();
            assert_eq!(filter.capabilities, None);
            assert_eq!(capabilities(&s), before);
        }
        // No capabilities section: libcontainer keeps every capability.
        let mut s = spec(None, &[]);
        s.process_mut().as_mut().unwrap().set_capabilities(None);
        assert_eq!(cache.take(&mut s).unwrap().capabilities, None);
    }

    #[test]
    fn without_no_new_privs_cap_sys_admin_is_lent_for_the_load_never_bounding() {
        let cache = FilterCache::default();
        let mut s = spec(None, &[Capability::Chown, Capability::Kill]);
        let asked = capabilities(&s);
        let filter = cache.take(&mut s).unwrap();
        assert_eq!(filter.capabilities, Some(Box::new(asked.clone())));
        let lent = capabilities(&s);
        let with_admin = caps(&[Capability::Chown, Capability::Kill, Capability::SysAdmin]);
        assert_eq!(lent.effective(), &Some(with_admin.clone()));
        assert_eq!(lent.permitted(), &Some(with_admin));
        assert_eq!(lent.bounding(), asked.bounding());
        assert_eq!(lent.inheritable(), asked.inheritable());
        assert_eq!(lent.ambient(), asked.ambient());
    }

    #[test]
    fn a_profile_not_compiled_stays_in_the_spec_for_libcontainer() {
        let cache = FilterCache::default();
        let mut s = spec(None, &[]);
        let mut linux = s.linux().clone().unwrap();
        let profile = linux.seccomp().clone().unwrap();
        linux.set_seccomp(Some(with_notify_rule(profile)));
        s.set_linux(Some(linux));
        let before = s.clone();
        assert_eq!(cache.take(&mut s), None);
        assert_eq!(s, before);
        assert_eq!(cache.len(), 0);

        // One libseccomp refuses (an errno out of range for a trace action) likewise.
        let mut s = spec(None, &[]);
        let mut linux = s.linux().clone().unwrap();
        let mut profile = linux.seccomp().clone().unwrap();
        profile.set_default_action(LinuxSeccompAction::ScmpActTrace);
        profile.set_default_errno_ret(Some(1 << 20));
        linux.set_seccomp(Some(profile));
        s.set_linux(Some(linux));
        let before = s.clone();
        assert_eq!(cache.take(&mut s), None);
        assert_eq!(s, before);
    }
}
