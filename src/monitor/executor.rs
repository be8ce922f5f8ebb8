//! The libcontainer `Executor` for container and exec processes.

use std::sync::Arc;

use libcontainer::oci_spec::runtime::Spec;
use libcontainer::workload::default::DefaultExecutor;
use libcontainer::workload::{Executor, ExecutorError, ExecutorValidationError};

use super::process::reset_signals;
use super::seccomp_bpf::ContainerFilter;

/// libcontainer's default executor (validate the executable in `$PATH`, then `execvp`),
/// after resetting the signal mask and every handler to its default. The monitor blocks
/// SIGCHLD and ignores SIGPIPE, and both would otherwise be inherited by the container's
/// process across exec (docs/libcontainer.md pitfall 5: `yes | head` would never end).
/// With a compiled seccomp filter (`seccomp_bpf.rs`), the init loads it in `validate`,
/// where libcontainer would have loaded the spec's.
#[derive(Clone)]
pub(crate) struct CleanSignalsExecutor {
    pub seccomp: Option<Arc<ContainerFilter>>,
}

impl Executor for CleanSignalsExecutor {
    fn exec(&self, spec: &Spec) -> Result<(), ExecutorError> {
        reset_signals();
        DefaultExecutor {}.exec(spec)
    }

    fn validate(&self, spec: &Spec) -> Result<(), ExecutorValidationError> {
        if let Some(filter) = &self.seccomp {
            filter
                .load_in_init()
                .map_err(ExecutorValidationError::ArgValidationError)?;
        }
        DefaultExecutor {}.validate(spec)
    }
}
