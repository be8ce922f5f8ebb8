//! The kernel's cgroup migration lock, taken ahead of the move that needs it.
//!
//! Moving a process between cgroups (a write to `cgroup.procs`: libcontainer's or crun's
//! intermediate process joining the container's cgroup) takes the kernel's global `cgroup_threadgroup_rwsem` for
//! writing. That lock is a per-CPU rwsem: when no move happened within about the last RCU
//! grace period, the writer first waits for a full grace period (`rcu_sync_enter`), 4–16 ms
//! on the test VM and the largest single wait in a CreateContainer (docs/benchmarks.md,
//! "The cgroup migration lock"). Once a writer has been through, further writers pass at
//! once for about one more grace period.
//!
//! So when a create begins, the daemon writes its own pid into the
//! `cgroup.procs` of the cgroup it is already in, on a blocking thread: for the kernel a
//! move to where the process already is (nothing changes), but it takes the lock, and the
//! grace period then elapses while the daemon builds the bundle and the zygote forks the
//! monitor, so the real move later finds the lock warm. A cgroup v2 mounted with
//! `favordynmods` never waits; the write is then merely cheap. Failure is harmless (the
//! real move pays the wait) and only logged.
//!
//! Not for an exec or a pod: the exec child and the pod's holder join their v1 cgroups
//! through `tasks` and start in their v2 cgroup (`monitor::cgroup_join_files`,
//! monitor/sandbox.rs), neither of which takes the lock, and a warm-up would only make
//! every fork, exec and exit on the host wait for its grace period (a writer waiting for
//! the lock holds them off).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Where the daemon is: the `cgroup.procs` files of its own cgroups, one per hierarchy.
type Locate = dyn Fn() -> Vec<PathBuf> + Send + Sync;

pub struct MigrationLock {
    locate: Box<Locate>,
    /// A warm-up is waiting for its grace period: another one would wait for the same.
    in_flight: AtomicBool,
}

impl MigrationLock {
    /// For the daemon itself, its cgroups read from `/proc/self/cgroup` at each warm-up,
    /// so a daemon an operator moved is warmed where it is now. (A move landing between
    /// that read and the write, microseconds apart, would be undone by the write.) Where
    /// each hierarchy is mounted comes from the cgroup lines of the mount table read once,
    /// here (`monitor::remember_cgroup_mounts`): the table grows with every pod.
    pub fn for_this_process() -> Arc<MigrationLock> {
        crate::monitor::remember_cgroup_mounts();
        Arc::new(MigrationLock::new(|| {
            crate::monitor::cgroup_procs_files(nix::unistd::getpid()).unwrap_or_default()
        }))
    }

    #[cfg(test)]
    pub(crate) fn with_locator(
        locate: impl Fn() -> Vec<PathBuf> + Send + Sync + 'static,
    ) -> Arc<MigrationLock> {
        Arc::new(MigrationLock::new(locate))
    }

    fn new(locate: impl Fn() -> Vec<PathBuf> + Send + Sync + 'static) -> MigrationLock {
        MigrationLock {
            locate: Box::new(locate),
            in_flight: AtomicBool::new(false),
        }
    }

    /// Starts a warm-up on a blocking thread and returns at once (also outside a tokio
    /// runtime: then it does nothing).
    pub fn warm(self: &Arc<Self>) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if self.in_flight.swap(true, Ordering::AcqRel) {
            return;
        }
        let lock = Arc::clone(self);
        runtime.spawn_blocking(move || {
            if let Err(e) = lock.warm_now() {
                tracing::debug!("cgroup migration lock not warmed: {e}");
            }
            lock.in_flight.store(false, Ordering::Release);
        });
    }

    /// The warm-up itself, blocking: writes this process's pid into the first of its own
    /// `cgroup.procs` files that takes it.
    pub(crate) fn warm_now(&self) -> Result<PathBuf, String> {
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

    #[test]
    fn the_first_writable_file_gets_this_process_pid() {
        let dir = tempfile::tempdir().unwrap();
        let gone = dir.path().join("gone/cgroup.procs");
        let procs = dir.path().join("cgroup.procs");
        std::fs::write(&procs, "").unwrap();
        let (a, b) = (gone.clone(), procs.clone());
        let lock = MigrationLock::with_locator(move || vec![a.clone(), b.clone()]);
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
        let lock = MigrationLock::with_locator(move || vec![m.clone()]);
        let err = lock.warm_now().unwrap_err();
        assert!(err.contains("cgroup.procs"), "{err}");
        assert!(!missing.exists());
        let none = MigrationLock::with_locator(Vec::new);
        assert_eq!(
            none.warm_now().unwrap_err(),
            "no cgroup found for this process"
        );
    }

    #[test]
    fn the_daemon_moved_into_its_own_cgroup_stays_where_it_was() {
        let before = std::fs::read_to_string("/proc/self/cgroup").unwrap();
        let lock = MigrationLock::for_this_process();
        let written = lock.warm_now();
        let after = std::fs::read_to_string("/proc/self/cgroup").unwrap();
        assert_eq!(before, after);
        // Root in the test VM (and on hosts): the write is taken.
        if nix::unistd::geteuid().is_root() {
            let file = written.unwrap();
            assert!(file.ends_with("cgroup.procs"), "{}", file.display());
        }
    }

    #[tokio::test]
    async fn warm_ups_do_not_pile_up_while_one_waits() {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let rx = std::sync::Mutex::new(rx);
        let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let seen = Arc::clone(&calls);
        let lock = MigrationLock::with_locator(move || {
            seen.fetch_add(1, Ordering::SeqCst);
            let _ = rx.lock().unwrap().recv();
            Vec::new()
        });
        lock.warm();
        while calls.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        lock.warm();
        lock.warm();
        tx.send(()).unwrap();
        while lock.in_flight.load(Ordering::Acquire) {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        lock.warm();
        tx.send(()).unwrap();
        while calls.load(Ordering::SeqCst) < 2 || lock.in_flight.load(Ordering::Acquire) {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }
}
