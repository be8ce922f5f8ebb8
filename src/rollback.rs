//! The one rollback mechanism: a LIFO stack of undo steps.
//!
//! Each step of a create path that makes something (a name reservation, a directory, a
//! mount, a cgroup, a process) pushes the closure that unmakes it, right next to the
//! step. `commit()` at the end disarms the stack; dropping it un-committed runs the
//! undos newest first, so a failure anywhere leaves nothing behind.

type Undo = Box<dyn FnOnce() + Send>;

#[must_use = "a Rollback undoes everything when dropped without commit()"]
pub struct Rollback {
    what: String,
    steps: Vec<(&'static str, Undo)>,
}

impl Rollback {
    /// `what` names the operation in the log lines of a rollback ("create container abc").
    pub fn new(what: impl Into<String>) -> Self {
        Rollback {
            what: what.into(),
            steps: Vec::new(),
        }
    }

    /// Registers how to undo the step that just succeeded.
    pub fn push(&mut self, step: &'static str, undo: impl FnOnce() + Send + 'static) {
        self.steps.push((step, Box::new(undo)));
    }

    /// Registers an undo that must await (a backend's `remove_pod`, a remote call). It runs
    /// to completion on drop like any other undo: on the daemon's multi-threaded runtime
    /// the worker hands its other tasks off while it waits (`block_in_place`); elsewhere
    /// (a current-thread runtime, no runtime) it runs on a thread of its own.
    pub fn push_async<F, Fut>(&mut self, step: &'static str, undo: F)
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        self.push(step, move || block_on_undo(undo()));
    }

    /// Creates `dir` and its parents; undone by removing `dir` with all it holds by
    /// then, mounts detached first and never walked into (`mounts::remove_tree`).
    /// Replaces the create-then-push loop every create path wrote for its state and run
    /// directories.
    pub fn create_dir_all(&mut self, dir: &std::path::Path) -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        let dir = dir.to_owned();
        self.push("dir", move || {
            if let Err(e) = crate::mounts::remove_tree(&dir) {
                tracing::warn!(dir = %dir.display(), error = %e, "rollback: remove dir");
            }
        });
        Ok(())
    }

    /// The operation succeeded: keep everything it made.
    pub fn commit(mut self) {
        self.steps.clear();
    }
}

impl Drop for Rollback {
    fn drop(&mut self) {
        while let Some((step, undo)) = self.steps.pop() {
            tracing::debug!(operation = %self.what, step, "rolling back");
            undo();
        }
    }
}

fn block_on_undo<Fut: std::future::Future<Output = ()> + Send + 'static>(fut: Fut) {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(|| h.block_on(fut))
        }
        _ => {
            let ran =
                std::thread::spawn(move || {
                    match tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    {
                        Ok(rt) => rt.block_on(fut),
                        Err(e) => tracing::error!(error = %e, "rollback: no runtime for an undo"),
                    }
                })
                .join();
            if ran.is_err() {
                tracing::error!("rollback: an undo panicked");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[test]
    fn undoes_in_reverse_order_when_dropped() {
        let log = Arc::new(Mutex::new(Vec::new()));
        {
            let mut rb = Rollback::new("test");
            for i in 0..3 {
                let log = log.clone();
                rb.push("step", move || log.lock().unwrap().push(i));
            }
        }
        assert_eq!(*log.lock().unwrap(), vec![2, 1, 0]);
    }

    #[test]
    fn commit_keeps_everything() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut rb = Rollback::new("test");
        let l = log.clone();
        rb.push("step", move || l.lock().unwrap().push(1));
        rb.commit();
        assert!(log.lock().unwrap().is_empty());
    }

    #[test]
    fn async_undos_run_to_completion_in_order_on_any_runtime() {
        for multi in [true, false] {
            let rt = if multi {
                tokio::runtime::Builder::new_multi_thread()
                    .enable_all()
                    .build()
            } else {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
            }
            .unwrap();
            let log = Arc::new(Mutex::new(Vec::new()));
            let l = log.clone();
            rt.block_on(async move {
                let mut rb = Rollback::new("test");
                let a = l.clone();
                rb.push("sync", move || a.lock().unwrap().push("sync"));
                let b = l.clone();
                rb.push_async("async", move || async move {
                    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                    b.lock().unwrap().push("async");
                });
            });
            assert_eq!(*log.lock().unwrap(), vec!["async", "sync"], "multi {multi}");
        }
    }

    #[test]
    fn created_dirs_are_removed_unless_committed() {
        let root = tempfile::tempdir().unwrap();
        let (kept, undone) = (root.path().join("kept/a"), root.path().join("undone/b"));
        let mut rb = Rollback::new("test");
        rb.create_dir_all(&kept).unwrap();
        rb.commit();
        let mut rb = Rollback::new("test");
        rb.create_dir_all(&undone).unwrap();
        std::fs::write(undone.join("file"), "x").unwrap();
        assert!(undone.is_dir());
        drop(rb);
        assert!(kept.is_dir());
        assert!(!undone.exists());
    }
}
