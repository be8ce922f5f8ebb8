//! Named crash points (issue 12, item 8): where the crash-consistency tests
//! (`tests/crash.rs`) kill the daemon, one step at a time, to prove that a restart
//! finishes or undoes whatever the step had begun.
//!
//! Only builds with `--features failpoints` have them (the `fail` crate, configured by
//! the `FAILPOINTS` environment variable when `proxrt serve` starts, as
//! `FAILPOINTS="pod.holder=return"`); everywhere else `crash_point!` is nothing. The one
//! action they take is SIGKILL to the daemon itself: no destructor, no rollback, no
//! flush runs, as with an OOM kill or a power cut of the daemon alone.

/// Marks a step after which the daemon may be killed by a test: `crash_point!("pod.holder")`.
/// Names are `<operation>.<what has just been done>`; docs/security.md lists them.
#[macro_export]
macro_rules! crash_point {
    ($name:literal) => {
        #[cfg(feature = "failpoints")]
        $crate::crash::reached($name);
    };
}

/// Kills the daemon when the test configured `name` (any action: `return`, `1*return`).
#[cfg(feature = "failpoints")]
pub fn reached(name: &str) {
    fail::eval(name, |_| {
        tracing::warn!(crash_point = name, "crash point: SIGKILL");
        let _ = nix::sys::signal::kill(nix::unistd::getpid(), nix::sys::signal::Signal::SIGKILL);
        // SIGKILL is not blockable: nothing after this line runs.
        loop {
            std::thread::park();
        }
    });
}

/// Marks a step a test may slow down to make a race visible (`FAILPOINTS` with a
/// `sleep(ms)` action, as `FAILPOINTS="run_pod_sandbox.intent_sync=sleep(300)"`):
/// `slow_point!("run_pod_sandbox.intent_sync")`. Nothing without the feature.
#[macro_export]
macro_rules! slow_point {
    ($name:literal) => {
        #[cfg(feature = "failpoints")]
        $crate::crash::slowed($name);
    };
}

/// Sleeps when the test configured `name` with `sleep(ms)`; other actions do nothing.
#[cfg(feature = "failpoints")]
pub fn slowed(name: &str) {
    fail::eval(name, |_| ());
}

/// Reads `FAILPOINTS` (a no-op without the feature). Keep the guard for the daemon's life.
pub fn setup() -> Guard {
    #[cfg(feature = "failpoints")]
    {
        Guard(Some(fail::FailScenario::setup()))
    }
    #[cfg(not(feature = "failpoints"))]
    {
        Guard(None)
    }
}

/// Holds the crash points' configuration while the daemon runs.
pub struct Guard(#[allow(dead_code)] Option<GuardInner>);

#[cfg(feature = "failpoints")]
type GuardInner = fail::FailScenario<'static>;
#[cfg(not(feature = "failpoints"))]
type GuardInner = ();
