//! The libcontainer `Executor` for container and exec processes.

use libcontainer::oci_spec::runtime::Spec;
use libcontainer::workload::default::DefaultExecutor;
use libcontainer::workload::{Executor, ExecutorError, ExecutorValidationError};

use super::process::reset_signals;

/// libcontainer's default executor (validate the executable in `$PATH`, then `execvp`),
/// after resetting the signal mask and every handler to its default. The monitor blocks
/// SIGCHLD and ignores SIGPIPE, and both would otherwise be inherited by the container's
/// process across exec (docs/libcontainer.md pitfall 5: `yes | head` would never end).
#[derive(Clone)]
pub(crate) struct CleanSignalsExecutor;

impl Executor for CleanSignalsExecutor {
    fn exec(&self, spec: &Spec) -> Result<(), ExecutorError> {
        reset_signals();
        DefaultExecutor {}.exec(spec)
    }

    fn validate(&self, spec: &Spec) -> Result<(), ExecutorValidationError> {
        DefaultExecutor {}.validate(spec)
    }
}
