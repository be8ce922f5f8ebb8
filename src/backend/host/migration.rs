//! The kernel's cgroup migration lock, taken ahead of the move that needs it.
//!
//! Moving a process between cgroups (a write to `cgroup.procs`: libcontainer's or crun's
//! intermediate process joining the container's cgroup) takes the kernel's global
//! `cgroup_threadgroup_rwsem` for writing. That lock is a per-CPU rwsem: when no move happened within about the last RCU
//! grace period, the writer first waits for a full grace period (`rcu_sync_enter`), 4–16 ms
//! on the test VM and the largest single wait in a CreateContainer (docs/benchmarks.md,
//! "The cgroup migration lock"). Once a writer has been through, further writers pass at
//! once for about one more grace period.
//!
//! So when a create begins, the daemon writes its own pid into the
//! `cgroup.procs` of the cgroup it is already in, on a thread of its own: for the kernel
//! a move to where the process already is (nothing changes), but it takes the lock, and
//! the grace period then elapses while the daemon builds the bundle and the zygote forks
//! the monitor, so the real move later finds the lock warm. A cgroup v2 mounted with
//! `favordynmods` never waits; the write is then merely cheap. Failure is harmless (the
//! real move pays the wait) and only logged.
//!
//! A create reaches its move 3–5 ms after it begins, and a grace period lasts 6–16 ms on
//! the test VM, so a create alone still waits for the rest of one. Creates come in bursts
//! (a node starting pods, a deployment rolled out), so the thread then keeps the lock
//! warm: it writes again every [`REWARM_EVERY`], within the ~15 ms the lock stays warm
//! after a writer, until `[runtime] keep_cgroup_lock_warm_ms` (1 s) have passed since the
//! last create began. Each write is a move to nowhere: microseconds holding the lock,
//! without a grace period once warm. Meanwhile the host's forks and exits take the
//! lock's slower shared path, as on a host mounted with `favordynmods`, whose trade-off
//! this is, for a second after a create. `0`: one write per create, as before.
//!
//! A pod warms it too, once its holder runs: kubelet creates the pod's first container
//! next (after PodSandboxStatus and ImageStatus), and the grace period passes in between.
//! Not before the holder, nor for an exec: the exec child and the pod's holder join their
//! v1 cgroups through `tasks` and start in their v2 cgroup (`monitor::cgroup_join_files`,
//! monitor/sandbox.rs), neither of which takes the lock, and a warm-up then would only
//! hold off their cgroup changes (a writer holds `cgroup_mutex` while it waits for its
//! grace period).

use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// How often a warm lock is taken again to keep it warm: the lock goes cold 15–20 ms
/// after the last writer on the test VM (docs/benchmarks.md, "2026-12-02, eleventh
/// session: the cgroup migration lock kept warm").
pub const REWARM_EVERY: Duration = Duration::from_millis(8);

/// Where the daemon is: the `cgroup.procs` files of its own cgroups, one per hierarchy.
type Locate = dyn Fn() -> Vec<PathBuf> + Send + Sync;

pub struct MigrationLock {
    shared: Arc<Shared>,
}

/// What the warming thread shares with the lock (not the lock itself: the thread ends
/// when the lock is dropped).
struct Shared {
    locate: Box<Locate>,
    /// How long after the last `warm` the lock is kept warm.
    keep_warm: Duration,
    state: Mutex<Warming>,
    /// Wakes the warming thread when it is idle, or when the lock is dropped.
    wake: Condvar,
}

#[derive(Default)]
struct Warming {
    /// The warming thread is writing (or about to): a `warm` then only moves `until`.
    busy: bool,
    /// Keep writing until then.
    until: Option<Instant>,
    /// The warming thread exists (made at the first `warm`).
    started: bool,
    /// The lock is gone: the thread ends.
    closed: bool,
}

impl MigrationLock {
    /// For the daemon itself, its cgroups read from `/proc/self/cgroup` at each warm-up,
    /// so a daemon an operator moved is warmed where it is now. (A move landing between
    /// that read and the write, microseconds apart, would be undone by the write.) Where
    /// each hierarchy is mounted comes from the cgroup lines of the mount table read once,
    /// here (`monitor::remember_cgroup_mounts`): the table grows with every pod.
    pub fn for_this_process(keep_warm: Duration) -> Arc<MigrationLock> {
        crate::monitor::remember_cgroup_mounts();
        Arc::new(MigrationLock::new(keep_warm, || {
            crate::monitor::cgroup_procs_files(nix::unistd::getpid()).unwrap_or_default()
        }))
    }

    #[cfg(test)]
    pub(crate) fn with_locator(
        keep_warm: Duration,
        locate: impl Fn() -> Vec<PathBuf> + Send + Sync + 'static,
    ) -> Arc<MigrationLock> {
        Arc::new(MigrationLock::new(keep_warm, locate))
    }

    fn new(
        keep_warm: Duration,
        locate: impl Fn() -> Vec<PathBuf> + Send + Sync + 'static,
    ) -> MigrationLock {
        MigrationLock {
            shared: Arc::new(Shared {
                locate: Box::new(locate),
                keep_warm,
                state: Mutex::new(Warming::default()),
                wake: Condvar::new(),
            }),
        }
    }

    /// Has the lock taken on the warming thread and kept warm for `keep_warm` from now;
    /// returns at once. A warm-up under way (still waiting for its grace period, or
    /// keeping the lock warm) is not repeated, only lengthened.
    pub fn warm(&self) {
        let shared = &self.shared;
        let mut state = shared.lock_state();
        let until = Instant::now() + shared.keep_warm;
        state.until = Some(state.until.map_or(until, |u| u.max(until)));
        if state.busy {
            return;
        }
        state.busy = true;
        if state.started {
            shared.wake.notify_one();
            return;
        }
        let thread = Arc::clone(shared);
        let spawned = std::thread::Builder::new()
            .name("cgroup-warm".into())
            .spawn(move || thread.keep_warm_loop());
        match spawned {
            Ok(_) => state.started = true,
            Err(e) => {
                state.busy = false;
                tracing::debug!("cgroup migration lock not warmed: no thread: {e}");
            }
        }
    }

    /// The warm-up itself, blocking (see [`Shared::warm_now`]).
    #[cfg(test)]
    pub(crate) fn warm_now(&self) -> Result<PathBuf, String> {
        self.shared.warm_now()
    }
}

impl Drop for MigrationLock {
    fn drop(&mut self) {
        self.shared.lock_state().closed = true;
        self.shared.wake.notify_one();
    }
}

impl Shared {
    fn lock_state(&self) -> std::sync::MutexGuard<'_, Warming> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The warming thread: idle until a `warm`, then writes every [`REWARM_EVERY`]
    /// until the last `warm`'s `keep_warm` is over (once with none), or a write fails;
    /// ends when the lock is dropped.
    fn keep_warm_loop(&self) {
        let mut state = self.lock_state();
        loop {
            while !state.busy && !state.closed {
                state = self
                    .wake
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner);
            }
            if state.closed {
                return;
            }
            drop(state);
            let written = self.warm_now();
            state = self.lock_state();
            if let Err(e) = written {
                tracing::debug!("cgroup migration lock not warmed: {e}");
                state.busy = false;
                continue;
            }
            let now = Instant::now();
            match state.until {
                Some(until) if until > now => {
                    let pause = REWARM_EVERY.min(until - now);
                    drop(state);
                    std::thread::sleep(pause);
                    state = self.lock_state();
                }
                _ => state.busy = false,
            }
        }
    }

    /// The warm-up itself, blocking: writes this process's pid into the first of its own
    /// `cgroup.procs` files that takes it.
    fn warm_now(&self) -> Result<PathBuf, String> {
        let files = (self.locate)();
        let pid = std::process::id().to_string();
        let mut last = "no cgroup found for this process".to_owned();
        for file in files {
            // Not `fs::write`: it would create the file if the cgroup is gone.
            let written = std::fs::OpenOptions::new()
                .write(true)
                .open(&file)
                .and_then(|mut f| std::io::Write::write_all(&mut f, pid.as_bytes()));
            match written {
                Ok(()) => return Ok(file),
                Err(e) => last = format!("{}: {e}", file.display()),
            }
        }
        Err(last)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn the_first_writable_file_gets_this_process_pid() {
        let dir = tempfile::tempdir().unwrap();
        let gone = dir.path().join("gone/cgroup.procs");
        let procs = dir.path().join("cgroup.procs");
        std::fs::write(&procs, "").unwrap();
        let (a, b) = (gone.clone(), procs.clone());
        let lock = MigrationLock::with_locator(Duration::ZERO, move || vec![a.clone(), b.clone()]);
        assert_eq!(lock.warm_now().unwrap(), procs);
        assert_eq!(
            std::fs::read_to_string(&procs).unwrap(),
            std::process::id().to_string()
        );
        assert!(!gone.exists(), "a missing cgroup is never created");
    }

    #[test]
    fn nothing_to_write_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("cgroup.procs");
        let m = missing.clone();
        let lock = MigrationLock::with_locator(Duration::ZERO, move || vec![m.clone()]);
        let err = lock.warm_now().unwrap_err();
        assert!(err.contains("cgroup.procs"), "{err}");
        assert!(!missing.exists());
        let none = MigrationLock::with_locator(Duration::ZERO, Vec::new);
        assert_eq!(
            none.warm_now().unwrap_err(),
            "no cgroup found for this process"
        );
    }

    #[test]
    fn the_daemon_moved_into_its_own_cgroup_stays_where_it_was() {
        let before = std::fs::read_to_string("/proc/self/cgroup").unwrap();
        let lock = MigrationLock::for_this_process(Duration::ZERO);
        let written = lock.warm_now();
        let after = std::fs::read_to_string("/proc/self/cgroup").unwrap();
        assert_eq!(before, after);
        // Root in the test VM (and on hosts): the write is taken.
        if nix::unistd::geteuid().is_root() {
            let file = written.unwrap();
            assert!(file.ends_with("cgroup.procs"), "{}", file.display());
        }
    }

    /// A lock whose writes go into a file of `dir` and are counted, and which, while
    /// `gate` is held, block as a write waiting for its grace period would.
    fn counting(
        keep_warm: Duration,
        dir: &tempfile::TempDir,
    ) -> (Arc<MigrationLock>, Arc<AtomicUsize>, Arc<Mutex<()>>) {
        let procs = dir.path().join("cgroup.procs");
        std::fs::write(&procs, "").unwrap();
        let calls = Arc::new(AtomicUsize::new(0));
        let gate = Arc::new(Mutex::new(()));
        let (seen, held) = (Arc::clone(&calls), Arc::clone(&gate));
        let lock = MigrationLock::with_locator(keep_warm, move || {
            seen.fetch_add(1, Ordering::SeqCst);
            drop(held.lock().unwrap());
            vec![procs.clone()]
        });
        (lock, calls, gate)
    }

    fn idle(lock: &MigrationLock) -> bool {
        !lock.shared.lock_state().busy
    }

    fn wait_for(what: &str, done: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !done() {
            assert!(Instant::now() < deadline, "{what}");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn warm_ups_do_not_pile_up_while_one_waits() {
        let dir = tempfile::tempdir().unwrap();
        let (lock, calls, gate) = counting(Duration::ZERO, &dir);
        let held = gate.lock().unwrap();
        lock.warm();
        wait_for("the first write", || calls.load(Ordering::SeqCst) == 1);
        lock.warm();
        lock.warm();
        drop(held);
        wait_for("the warm-up's end", || idle(&lock));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        lock.warm();
        wait_for("a second warm-up", || {
            calls.load(Ordering::SeqCst) == 2 && idle(&lock)
        });
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn the_lock_is_kept_warm_for_the_window_after_the_last_warm_up() {
        let window = Duration::from_millis(150);
        let dir = tempfile::tempdir().unwrap();
        let (lock, calls, _gate) = counting(window, &dir);
        let started = Instant::now();
        lock.warm();
        std::thread::sleep(window / 2);
        let lengthened = Instant::now();
        lock.warm();
        wait_for("the window's end", || idle(&lock));
        let ended = Instant::now();
        assert!(
            ended >= lengthened + window,
            "stopped {:?} after the last warm-up, before its window",
            ended - lengthened
        );
        // A write at once, then one per REWARM_EVERY at most, and a last one at the
        // window's end.
        let written = calls.load(Ordering::SeqCst);
        let most = ((ended - started).as_millis() / REWARM_EVERY.as_millis()) as usize + 2;
        assert!(written >= 2, "kept warm by {written} write(s)");
        assert!(written <= most, "{written} writes in {:?}", ended - started);
        std::thread::sleep(4 * REWARM_EVERY);
        assert_eq!(
            calls.load(Ordering::SeqCst),
            written,
            "writes after the window"
        );
    }

    #[test]
    fn a_failed_write_ends_the_keeping_warm() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("cgroup.procs");
        let calls = Arc::new(AtomicUsize::new(0));
        let seen = Arc::clone(&calls);
        let lock = MigrationLock::with_locator(Duration::from_secs(60), move || {
            seen.fetch_add(1, Ordering::SeqCst);
            vec![missing.clone()]
        });
        lock.warm();
        wait_for("the failed write", || idle(&lock));
        std::thread::sleep(4 * REWARM_EVERY);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn the_warming_thread_ends_with_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let (lock, calls, _gate) = counting(Duration::from_secs(60), &dir);
        let shared = Arc::downgrade(&lock.shared);
        lock.warm();
        wait_for("a write", || calls.load(Ordering::SeqCst) >= 1);
        drop(lock);
        wait_for("the thread's end", || shared.upgrade().is_none());
    }
}
