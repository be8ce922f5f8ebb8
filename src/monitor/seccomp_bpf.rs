//! Seccomp filters compiled to BPF once and loaded as they are.
//!
//! libseccomp builds a filter from its rules in the process that loads it: for the
//! default profile (~370 system calls, three architectures) that took a container's init
//! ~14 ms of every CreateContainer on this project's machine, and each ExecSync's entering
//! process as long again (perf: libseccomp was a fifth of all CPU time over a run of
//! restricted pods). The program depends on nothing but the profile (and the kernel, the
//! same for every container of a host), so the daemon compiles each profile once
//! ([`Program::compile`]), the container's init and each exec load the instructions with
//! one `seccomp(2)` ([`Program::load`]).
//!
//! [`Program::compile`] builds the filter exactly as libcontainer 0.7's
//! `seccomp::initialize_seccomp` does (the same translation of actions, operators and
//! architectures, the same skipping of names this libseccomp cannot resolve, duplicate
//! argument indices split into rules of their own, `SCMP_FLTATR_CTL_NNP` off) and exports
//! it instead of loading it; the load passes the flags libseccomp's `seccomp_load` would.
//! A profile with `SCMP_ACT_NOTIFY` (its listener fd must travel to the runtime), a flag
//! other than log, spec-allow and tsync, or a program longer than the kernel loads is not
//! compiled: libcontainer loads it (or fails to) itself, as before.
//!
//! The program travels in the container's bundle, as `seccomp.bpf` ([`FILTER_FILE`]: the
//! instructions as the kernel reads them, which `scmp_bpf_disasm` shows), not in the
//! create request (a datagram of at most 64 KiB, and a program may take 32 KiB); the
//! request says how to load it ([`FilterLoad`]).

use std::io::{Read, Seek};

use libseccomp::{
    ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall,
};
use oci_spec::runtime::{
    Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompFilterFlag, LinuxSeccompOperator,
};
use serde::{Deserialize, Serialize};

/// The compiled program's file in a container's bundle.
pub const FILTER_FILE: &str = "seccomp.bpf";

/// The kernel's longest program (`BPF_MAXINSNS`).
const MAX_INSNS: usize = 4096;
const SECCOMP_SET_MODE_FILTER: libc::c_ulong = 1;
const SECCOMP_FILTER_FLAG_TSYNC: u32 = 1;
const SECCOMP_FILTER_FLAG_LOG: u32 = 2;
const SECCOMP_FILTER_FLAG_SPEC_ALLOW: u32 = 4;

/// A seccomp filter as BPF instructions and the flags of its load.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Program {
    /// The instructions, each a `struct sock_filter`'s 8 bytes in this host's byte order
    /// as libseccomp exports them (a `u64` each: aligned for `sock_filter`, whose own
    /// type has no `Eq`).
    insns: Vec<u64>,
    /// `SECCOMP_FILTER_FLAG_*`.
    flags: u32,
}

impl Program {
    /// The program libcontainer would load for `seccomp` (a spec in libcontainer's form:
    /// `spec::for_libcontainer`); None when libcontainer has to load it itself (a notify
    /// action, or a flag this does not pass). Fails where libseccomp refuses the profile.
    pub fn compile(seccomp: &LinuxSeccomp) -> Result<Option<Program>, String> {
        let Some(flags) = load_flags(seccomp) else {
            return Ok(None);
        };
        if uses_notify(seccomp) {
            return Ok(None);
        }
        let filter = build(seccomp)?;
        let insns = export(&filter)?;
        if insns.len() > MAX_INSNS {
            return Ok(None);
        }
        Ok(Some(Program { insns, flags }))
    }

    /// A program of `filter`'s rules, loaded without flags.
    pub fn export(filter: &ScmpFilterContext) -> Result<Program, String> {
        Ok(Program {
            insns: export(filter)?,
            flags: 0,
        })
    }

    /// Makes the program this thread's seccomp filter (inherited by its children and kept
    /// across exec). Needs `no_new_privs` or `CAP_SYS_ADMIN`. Allocates nothing: safe in
    /// a child forked from a multi-threaded process.
    pub fn load(&self) -> std::io::Result<()> {
        const _: () = assert!(
            std::mem::size_of::<libc::sock_filter>() == 8
                && std::mem::align_of::<libc::sock_filter>() <= std::mem::align_of::<u64>()
        );
        let len = u16::try_from(self.insns.len()).map_err(std::io::Error::other)?;
        let prog = libc::sock_fprog {
            len,
            filter: self.insns.as_ptr().cast::<libc::sock_filter>().cast_mut(),
        };
        // SAFETY: `prog` points at `len` instructions: `insns` holds each one's 8 bytes as
        // libseccomp wrote them, in memory aligned for `sock_filter` (asserted above), alive
        // for the call; the kernel copies them.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                SECCOMP_SET_MODE_FILTER,
                self.flags as libc::c_ulong,
                &prog as *const libc::sock_fprog,
            )
        };
        match rc {
            0 => Ok(()),
            _ => Err(std::io::Error::last_os_error()),
        }
    }

    /// A program without instructions, which the kernel refuses.
    #[cfg(test)]
    pub fn empty() -> Program {
        Program {
            insns: Vec::new(),
            flags: 0,
        }
    }

    /// The instructions as the kernel reads them.
    pub fn bytes(&self) -> Vec<u8> {
        self.insns.iter().flat_map(|i| i.to_ne_bytes()).collect()
    }

    /// The load flags.
    pub fn flags(&self) -> u32 {
        self.flags
    }

    /// A program of `bytes` (as [`Program::bytes`] gives them), loaded with `flags`.
    pub fn from_bytes(bytes: &[u8], flags: u32) -> Result<Program, String> {
        match insns(bytes) {
            Some(insns) if insns.len() <= MAX_INSNS => Ok(Program { insns, flags }),
            _ => Err(format!("{} bytes are not a seccomp program", bytes.len())),
        }
    }
}

/// libseccomp's load flags for the spec's, or None for one it sets only with a listener.
fn load_flags(seccomp: &LinuxSeccomp) -> Option<u32> {
    let mut flags = 0;
    for flag in seccomp.flags().iter().flatten() {
        flags |= match flag {
            LinuxSeccompFilterFlag::SeccompFilterFlagLog => SECCOMP_FILTER_FLAG_LOG,
            LinuxSeccompFilterFlag::SeccompFilterFlagTsync => SECCOMP_FILTER_FLAG_TSYNC,
            LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow => SECCOMP_FILTER_FLAG_SPEC_ALLOW,
            LinuxSeccompFilterFlag::SeccompFilterFlagWaitKillableRecv => return None,
        };
    }
    Some(flags)
}

fn uses_notify(seccomp: &LinuxSeccomp) -> bool {
    seccomp.default_action() == LinuxSeccompAction::ScmpActNotify
        || seccomp
            .syscalls()
            .iter()
            .flatten()
            .any(|s| s.action() == LinuxSeccompAction::ScmpActNotify)
}

/// The filter context libcontainer 0.7's `initialize_seccomp` builds before its load.
fn build(seccomp: &LinuxSeccomp) -> Result<ScmpFilterContext, String> {
    let default_action = action(seccomp.default_action(), seccomp.default_errno_ret())?;
    let mut ctx =
        ScmpFilterContext::new(default_action).map_err(|e| format!("new seccomp filter: {e}"))?;
    for flag in seccomp.flags().iter().flatten() {
        match flag {
            LinuxSeccompFilterFlag::SeccompFilterFlagLog => ctx.set_ctl_log(true),
            LinuxSeccompFilterFlag::SeccompFilterFlagTsync => ctx.set_ctl_tsync(true),
            LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow => ctx.set_ctl_ssb(true),
            LinuxSeccompFilterFlag::SeccompFilterFlagWaitKillableRecv => ctx.set_ctl_waitkill(true),
        }
        .map_err(|e| format!("seccomp flag {flag:?}: {e}"))?;
    }
    for &a in seccomp.architectures().iter().flatten() {
        ctx.add_arch(arch(a))
            .map_err(|e| format!("seccomp architecture {a:?}: {e}"))?;
    }
    ctx.set_ctl_nnp(false)
        .map_err(|e| format!("seccomp SCMP_FLTATR_CTL_NNP: {e}"))?;
    for syscall in seccomp.syscalls().iter().flatten() {
        let act = action(syscall.action(), syscall.errno_ret())?;
        if act == default_action {
            continue;
        }
        for name in syscall.names() {
            // Names this libseccomp does not know are skipped, as libcontainer does.
            let Ok(sc) = ScmpSyscall::from_name(name) else {
                continue;
            };
            let rule = |ctx: &mut ScmpFilterContext, cmps: &[ScmpArgCompare]| {
                match cmps.is_empty() && syscall.args().is_none() {
                    true => ctx.add_rule(act, sc).map(|_| ()),
                    false => ctx.add_rule_conditional(act, sc, cmps).map(|_| ()),
                }
                .map_err(|e| format!("seccomp rule for {name}: {e}"))
            };
            let cmps: Vec<ScmpArgCompare> = syscall
                .args()
                .iter()
                .flatten()
                .map(|a| {
                    ScmpArgCompare::new(a.index() as u32, op(a.op(), a.value_two()), a.value())
                })
                .collect();
            let mut indices: Vec<usize> =
                syscall.args().iter().flatten().map(|a| a.index()).collect();
            indices.sort_unstable();
            let duplicate_index = indices.windows(2).any(|w| w[0] == w[1]);
            // libseccomp compares each argument at most once per rule: with an index
            // twice, each comparison is a rule of its own (runc's way, and libcontainer's).
            if duplicate_index {
                for c in &cmps {
                    rule(&mut ctx, std::slice::from_ref(c))?;
                }
            } else {
                rule(&mut ctx, &cmps)?;
            }
        }
    }
    Ok(ctx)
}

/// libcontainer 0.7's `translate_action` (`SCMP_ACT_KILL` kills the thread; errno and
/// trace default to EPERM).
fn action(action: LinuxSeccompAction, errno: Option<u32>) -> Result<ScmpAction, String> {
    let errno = errno.map(|e| e as i32).unwrap_or(libc::EPERM);
    Ok(match action {
        LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => {
            ScmpAction::KillThread
        }
        LinuxSeccompAction::ScmpActTrap => ScmpAction::Trap,
        LinuxSeccompAction::ScmpActErrno => ScmpAction::Errno(errno),
        LinuxSeccompAction::ScmpActTrace => ScmpAction::Trace(
            errno
                .try_into()
                .map_err(|_| format!("seccomp trace action: errno {errno} out of range"))?,
        ),
        LinuxSeccompAction::ScmpActAllow => ScmpAction::Allow,
        LinuxSeccompAction::ScmpActKillProcess => ScmpAction::KillProcess,
        LinuxSeccompAction::ScmpActNotify => ScmpAction::Notify,
        LinuxSeccompAction::ScmpActLog => ScmpAction::Log,
    })
}

fn op(op: LinuxSeccompOperator, datum_b: Option<u64>) -> ScmpCompareOp {
    match op {
        LinuxSeccompOperator::ScmpCmpNe => ScmpCompareOp::NotEqual,
        LinuxSeccompOperator::ScmpCmpLt => ScmpCompareOp::Less,
        LinuxSeccompOperator::ScmpCmpLe => ScmpCompareOp::LessOrEqual,
        LinuxSeccompOperator::ScmpCmpEq => ScmpCompareOp::Equal,
        LinuxSeccompOperator::ScmpCmpGe => ScmpCompareOp::GreaterEqual,
        LinuxSeccompOperator::ScmpCmpGt => ScmpCompareOp::Greater,
        LinuxSeccompOperator::ScmpCmpMaskedEq => ScmpCompareOp::MaskedEqual(datum_b.unwrap_or(0)),
    }
}

fn arch(arch: Arch) -> ScmpArch {
    match arch {
        Arch::ScmpArchNative => ScmpArch::Native,
        Arch::ScmpArchX86 => ScmpArch::X86,
        Arch::ScmpArchX86_64 => ScmpArch::X8664,
        Arch::ScmpArchX32 => ScmpArch::X32,
        Arch::ScmpArchArm => ScmpArch::Arm,
        Arch::ScmpArchAarch64 => ScmpArch::Aarch64,
        Arch::ScmpArchMips => ScmpArch::Mips,
        Arch::ScmpArchMips64 => ScmpArch::Mips64,
        Arch::ScmpArchMips64n32 => ScmpArch::Mips64N32,
        Arch::ScmpArchMipsel => ScmpArch::Mipsel,
        Arch::ScmpArchMipsel64 => ScmpArch::Mipsel64,
        Arch::ScmpArchMipsel64n32 => ScmpArch::Mipsel64N32,
        Arch::ScmpArchPpc => ScmpArch::Ppc,
        Arch::ScmpArchPpc64 => ScmpArch::Ppc64,
        Arch::ScmpArchPpc64le => ScmpArch::Ppc64Le,
        Arch::ScmpArchS390 => ScmpArch::S390,
        Arch::ScmpArchS390x => ScmpArch::S390X,
        Arch::ScmpArchRiscv64 => ScmpArch::Riscv64,
        Arch::ScmpArchParisc => ScmpArch::Parisc,
        Arch::ScmpArchParisc64 => ScmpArch::Parisc64,
        Arch::ScmpArchLoongarch64 => ScmpArch::Loongarch64,
        Arch::ScmpArchM68k => ScmpArch::M68k,
        Arch::ScmpArchSh => ScmpArch::Sh,
        Arch::ScmpArchSheb => ScmpArch::Sheb,
    }
}

/// The filter's BPF program as libseccomp would load it.
fn export(filter: &ScmpFilterContext) -> Result<Vec<u64>, String> {
    // Into a memory file, whatever its size (a pipe would block a long program's write).
    let fd = rustix::fs::memfd_create(c"proxrt-seccomp", rustix::fs::MemfdFlags::CLOEXEC)
        .map_err(|e| format!("memfd for the seccomp program: {e}"))?;
    filter
        .export_bpf(&fd)
        .map_err(|e| format!("export the seccomp program: {e}"))?;
    let mut file = std::fs::File::from(fd);
    let mut bytes = Vec::new();
    file.seek(std::io::SeekFrom::Start(0))
        .and_then(|_| file.read_to_end(&mut bytes))
        .map_err(|e| format!("read the seccomp program: {e}"))?;
    insns(&bytes).ok_or_else(|| format!("libseccomp exported {} bytes of BPF", bytes.len()))
}

/// 8 bytes per instruction; None for anything else, or no instruction at all.
fn insns(bytes: &[u8]) -> Option<Vec<u64>> {
    if bytes.is_empty() || !bytes.len().is_multiple_of(8) {
        return None;
    }
    Some(
        bytes
            .chunks_exact(8)
            .map(|c| u64::from_ne_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
            .collect(),
    )
}

/// A container's compiled filter: loaded by the container's init just before it reports
/// ready (libcontainer's executor `validate`, which runs where libcontainer would load a
/// `no_new_privs` process's filter: after capabilities, cwd and environment), and by each
/// exec's entering process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerFilter {
    pub program: Program,
    /// Without `no_new_privs`, loading a filter needs `CAP_SYS_ADMIN`, which libcontainer
    /// drops before the executor runs (it loads such a filter itself before dropping
    /// them). For such a container the daemon adds `CAP_SYS_ADMIN` to the effective and
    /// permitted sets of the spec libcontainer reads (never to the bounding set) and puts
    /// the capabilities the container asked for here: the init sets them again right
    /// after the load, with libcontainer's own calls, as libcontainer would have right
    /// after its load. None: the spec's capabilities are the container's.
    pub capabilities: Option<Box<oci_spec::runtime::LinuxCapabilities>>,
}

/// What the create request says of the bundle's [`FILTER_FILE`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FilterLoad {
    /// `SECCOMP_FILTER_FLAG_*` of the load.
    pub flags: u32,
    /// [`ContainerFilter::capabilities`].
    pub capabilities: Option<Box<oci_spec::runtime::LinuxCapabilities>>,
}

impl ContainerFilter {
    /// Writes the program into `bundle` (the daemon).
    pub fn write(&self, bundle: &std::path::Path) -> Result<(), crate::store::StoreError> {
        crate::store::replace_file(&bundle.join(FILTER_FILE), &self.program.bytes())
    }

    /// What the create request says of it.
    pub fn request(&self) -> FilterLoad {
        FilterLoad {
            flags: self.program.flags,
            capabilities: self.capabilities.clone(),
        }
    }

    /// The filter the daemon wrote into `bundle` (the monitor).
    pub fn read(bundle: &std::path::Path, load: &FilterLoad) -> Result<ContainerFilter, String> {
        let path = bundle.join(FILTER_FILE);
        let bytes = std::fs::read(&path).map_err(|e| format!("read {}: {e}", path.display()))?;
        Ok(ContainerFilter {
            program: Program::from_bytes(&bytes, load.flags)
                .map_err(|e| format!("{}: {e}", path.display()))?,
            capabilities: load.capabilities.clone(),
        })
    }

    /// In the container's init, before `InitReady`.
    pub fn load_in_init(&self) -> Result<(), String> {
        self.program
            .load()
            .map_err(|e| format!("load the seccomp filter: {e}"))?;
        if let Some(caps) = &self.capabilities {
            let syscall = libcontainer::syscall::syscall::create_syscall();
            libcontainer::capabilities::reset_effective(syscall.as_ref())
                .and_then(|()| libcontainer::capabilities::drop_privileges(caps, syscall.as_ref()))
                .map_err(|e| format!("set capabilities after the seccomp filter: {e}"))?;
        }
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::HashSet;
    use std::os::fd::AsRawFd;

    use oci_spec::runtime::{Capability, LinuxSeccompArgBuilder, LinuxSyscallBuilder};

    use super::*;

    const PTRACE_SECCOMP_GET_FILTER: libc::c_uint = 0x420c;

    /// The filter a process has loaded, read back by `ptrace(PTRACE_SECCOMP_GET_FILTER)`.
    fn loaded_filter(pid: libc::pid_t) -> Vec<u8> {
        // SAFETY: attaching to our own child, which waits in pause() below.
        assert_eq!(
            unsafe { libc::ptrace(libc::PTRACE_ATTACH, pid, 0, 0) },
            0,
            "ptrace attach: {}",
            std::io::Error::last_os_error()
        );
        let mut status = 0;
        // SAFETY: waits for the attach's stop of the child.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        // SAFETY: a null buffer asks for the instruction count of filter 0 (the last).
        let count = unsafe { libc::ptrace(PTRACE_SECCOMP_GET_FILTER, pid, 0, 0) };
        assert!(count > 0, "{}", std::io::Error::last_os_error());
        let mut insns = vec![0u64; count as usize];
        // SAFETY: the buffer holds `count` instructions of 8 bytes.
        let got = unsafe { libc::ptrace(PTRACE_SECCOMP_GET_FILTER, pid, 0, insns.as_mut_ptr()) };
        assert_eq!(got, count);
        insns.iter().flat_map(|i| i.to_ne_bytes()).collect()
    }

    /// What libcontainer's `initialize_seccomp` loads for `profile`, in a forked child (with
    /// no_new_privs, as for a process that has it), read back from outside.
    fn what_libcontainer_loads(profile: &LinuxSeccomp) -> Vec<u8> {
        let (ready_r, ready_w) = nix::unistd::pipe().unwrap();
        // SAFETY: the child loads the filter (libseccomp allocates: glibc's malloc is
        // usable after fork), says so and waits to be killed.
        match unsafe { libc::fork() } {
            0 => {
                drop(ready_r);
                let ok = nix::sys::prctl::set_no_new_privs().is_ok()
                    && libcontainer::seccomp::initialize_seccomp(profile).is_ok();
                let _ = nix::unistd::write(&ready_w, &[ok as u8]);
                loop {
                    // SAFETY: waits for a signal.
                    unsafe { libc::pause() };
                }
            }
            pid => {
                drop(ready_w);
                let mut ok = [0u8];
                let read = nix::unistd::read(ready_r.as_raw_fd(), &mut ok);
                let filter = (read == Ok(1) && ok[0] == 1).then(|| loaded_filter(pid));
                // SAFETY: kills and reaps the child forked above.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                    libc::waitpid(pid, std::ptr::null_mut(), 0);
                }
                filter.expect("libcontainer loaded the profile")
            }
        }
    }

    fn default_profile(caps: &[Capability]) -> LinuxSeccomp {
        let caps: HashSet<Capability> = caps.iter().copied().collect();
        let profile = crate::spec::seccomp::default_profile(&caps).unwrap();
        crate::spec::for_libcontainer(&profile).unwrap()
    }

    /// A profile with what the default one lacks: errno and trace actions, an argument
    /// compared twice, flags, a name libseccomp does not know, a rule with the default's
    /// own action.
    fn odd_profile() -> LinuxSeccomp {
        let mut p = default_profile(&[]);
        p.set_default_action(LinuxSeccompAction::ScmpActErrno);
        p.set_default_errno_ret(Some(38));
        p.set_flags(Some(vec![
            LinuxSeccompFilterFlag::SeccompFilterFlagLog,
            LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow,
        ]));
        let arg = |index, value, op| {
            LinuxSeccompArgBuilder::default()
                .index(index)
                .value(value)
                .op(op)
                .build()
                .unwrap()
        };
        let mut calls = p.syscalls().clone().unwrap();
        calls.push(
            LinuxSyscallBuilder::default()
                .names(vec!["personality".into(), "no_such_call".into()])
                .action(LinuxSeccompAction::ScmpActAllow)
                .args(vec![
                    arg(0usize, 8u64, LinuxSeccompOperator::ScmpCmpEq),
                    arg(0, 0xffff_ffff, LinuxSeccompOperator::ScmpCmpEq),
                ])
                .build()
                .unwrap(),
        );
        calls.push(
            LinuxSyscallBuilder::default()
                .names(vec!["ptrace".into()])
                .action(LinuxSeccompAction::ScmpActTrace)
                .errno_ret(7u32)
                .build()
                .unwrap(),
        );
        calls.push(
            LinuxSyscallBuilder::default()
                .names(vec!["kexec_load".into()])
                .action(LinuxSeccompAction::ScmpActErrno)
                .errno_ret(38u32)
                .build()
                .unwrap(),
        );
        p.set_syscalls(Some(calls));
        p
    }

    #[test]
    fn a_compiled_profile_is_the_program_libcontainer_loads_for_it() {
        let profiles = [
            (
                "default, default capabilities",
                default_profile(&[Capability::Chown, Capability::Kill]),
            ),
            ("default, every capability dropped", default_profile(&[])),
            (
                "default, CAP_SYS_ADMIN",
                default_profile(&[Capability::SysAdmin]),
            ),
            ("odd", odd_profile()),
        ];
        for (what, profile) in profiles {
            let program = Program::compile(&profile).unwrap().expect(what);
            assert!(
                program.insns.len() > 100,
                "{what}: {} instructions",
                program.insns.len()
            );
            assert!(
                program.bytes() == what_libcontainer_loads(&profile),
                "{what}: the compiled program differs from libcontainer's"
            );
        }
    }

    #[test]
    fn the_flags_are_those_libseccomp_loads_with() {
        let odd = Program::compile(&odd_profile()).unwrap().unwrap();
        assert_eq!(
            odd.flags,
            SECCOMP_FILTER_FLAG_LOG | SECCOMP_FILTER_FLAG_SPEC_ALLOW
        );
        assert_eq!(
            Program::compile(&default_profile(&[]))
                .unwrap()
                .unwrap()
                .flags,
            0
        );
    }

    /// `profile` with a notify rule (mkdir), which only libcontainer can load.
    pub(crate) fn with_notify_rule(mut profile: LinuxSeccomp) -> LinuxSeccomp {
        let mut calls = profile.syscalls().clone().unwrap_or_default();
        calls.push(
            LinuxSyscallBuilder::default()
                .names(vec!["mkdir".into()])
                .action(LinuxSeccompAction::ScmpActNotify)
                .build()
                .unwrap(),
        );
        profile.set_syscalls(Some(calls));
        profile
    }

    #[test]
    fn notify_profiles_and_listener_flags_are_left_to_libcontainer() {
        let notify = with_notify_rule(default_profile(&[]));
        assert_eq!(Program::compile(&notify).unwrap(), None);

        let mut waitkill = default_profile(&[]);
        waitkill.set_flags(Some(vec![
            LinuxSeccompFilterFlag::SeccompFilterFlagWaitKillableRecv,
        ]));
        assert_eq!(Program::compile(&waitkill).unwrap(), None);
    }

    #[test]
    fn a_program_goes_through_the_bundle_as_the_kernel_reads_it() {
        let dir = tempfile::tempdir().unwrap();
        let filter = ContainerFilter {
            program: Program::compile(&odd_profile()).unwrap().unwrap(),
            capabilities: None,
        };
        filter.write(dir.path()).unwrap();
        let load = filter.request();
        let file = std::fs::read(dir.path().join(FILTER_FILE)).unwrap();
        assert_eq!(file, filter.program.bytes());
        assert_eq!(ContainerFilter::read(dir.path(), &load).unwrap(), filter);

        std::fs::write(dir.path().join(FILTER_FILE), b"abc").unwrap();
        let e = ContainerFilter::read(dir.path(), &load).unwrap_err();
        assert!(e.contains("not a seccomp program"), "{e}");
        std::fs::write(dir.path().join(FILTER_FILE), vec![0u8; 8 * (MAX_INSNS + 1)]).unwrap();
        assert!(ContainerFilter::read(dir.path(), &load).is_err());
        std::fs::remove_file(dir.path().join(FILTER_FILE)).unwrap();
        let e = ContainerFilter::read(dir.path(), &load).unwrap_err();
        assert!(e.contains(FILTER_FILE), "{e}");
    }

    #[test]
    fn a_program_longer_than_the_kernel_loads_is_left_to_libcontainer() {
        // As in backend_conformance's test of a filter the kernel refuses.
        let mut p = LinuxSeccomp::default();
        p.set_default_action(LinuxSeccompAction::ScmpActAllow);
        let arg = |value| {
            LinuxSeccompArgBuilder::default()
                .index(0usize)
                .value(value)
                .op(LinuxSeccompOperator::ScmpCmpEq)
                .build()
                .unwrap()
        };
        let calls = Vec::from_iter((0..6000u64).map(|v| {
            LinuxSyscallBuilder::default()
                .names(vec!["personality".into()])
                .action(LinuxSeccompAction::ScmpActErrno)
                .args(vec![arg(v)])
                .build()
                .unwrap()
        }));
        p.set_syscalls(Some(calls[..500].to_vec()));
        assert!(Program::compile(&p).unwrap().is_some(), "500 values fit");
        p.set_syscalls(Some(calls));
        assert_eq!(Program::compile(&p).unwrap(), None);
    }
}
