//! The process model (docs/architecture.md, "The process model"): a single-threaded zygote, one monitor
//! process per container, and pod namespace holders.
//!
//! ```text
//! proxrt serve (tokio, many threads)
//!   │  socketpair (SOCK_SEQPACKET, length-prefixed JSON; replies carry an fd)
//!   ▼
//! zygote (forked or re-exec'd before any thread exists; never multi-threaded)
//!   │  fork → fork (the middle process exits at once: monitors are re-parented to init,
//!   │  so they survive `kill -9` of the daemon and of the zygote)
//!   ├──▶ monitor (one per container, single-threaded for life, child subreaper)
//!   │      libcontainer build() or `crun create` → report init pid → serve <state_dir>/monitor.sock
//!   │      stdout/stderr pipes → CRI log; reaps the init; status.json; delete; exits
//!   │      └──▶ exec child (one per ExecSync: enters the container itself, see enter.rs,
//!   │           or runs `crun exec --detach`; collects output)
//!   └──▶ sandbox setup (unshare, hostname, lo up, sysctls, bind-mounts the ns files)
//!          └──▶ holder ("proxrt-pause": pid 1 of the pod's pid namespace, sleeps, reaps)
//! ```
//!
//! Why: libcontainer clones and runs Rust code in the child, which deadlocks when the caller
//! is multi-threaded (docs/libcontainer.md pitfall 1), and it `chdir`s process-wide (pitfall 2).
//! A monitor per container also lets containers and their logs outlive the daemon.
//!
//! Creation is a handshake: the zygote answers with one end of a fresh socketpair whose other
//! end the new monitor (or sandbox setup process) holds. The monitor reports the init pid (or
//! the error, after cleaning up) on it and waits for a one-byte acknowledgement; if the daemon
//! dies or drops the request before acknowledging, the monitor deletes the container and exits,
//! so a cancelled create never leaks a container.

mod cgroup_join;
mod client;
mod container;
mod create_template;
mod crun;
mod enter;
mod exec;
mod exec_stream;
mod executor;
mod holder_confine;
mod mntns;
mod mount_attr;
mod oom;
pub mod premount;
mod process;
mod propagation;
mod protocol;
pub(crate) mod sandbox;
pub mod seccomp_bpf;
mod spare;
mod status;
mod zygote;

use std::io;
use std::path::PathBuf;

#[cfg(test)]
pub(crate) use client::{attach_session_for_tests, encode_attach_output_for_tests};
pub use client::{
    AttachEvent, AttachInput, AttachOutput, AttachStreams, ExecSession, ExecStreamRequest,
    ExecSyncRequest, ExecSyncResult, ExitStatus, MonitorClient,
};
pub use container::kill_cgroup;
pub(crate) use container::remove_cgroup_leaf;
pub(crate) use enter::{cgroup_procs_files, remember_cgroup_mounts};
pub(crate) use process::pidfd_open;
pub use sandbox::{teardown_sandbox, SandboxCreated, SandboxRequest, HOLDER_NAME};
pub(crate) use status::write_status;
pub use status::{read_status, ContainerStatusFile, STATUS_FILE};
pub use zygote::{
    zygote_main, CreateRequest, Created, RuntimeKind, Zygote, ZYGOTE_FD, ZYGOTE_SUBCOMMAND,
};

use crate::error::{Classify, Kind};

/// Name of the monitor's unix socket inside a container's state dir.
pub const MONITOR_SOCKET: &str = "monitor.sock";

/// What went wrong talking to the zygote, a monitor, or a sandbox holder.
#[derive(Debug, thiserror::Error)]
pub enum MonitorError {
    /// The request cannot be served as asked (bad id, tty, path too long, bad sysctl).
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// The zygote could not be started.
    #[error("spawn zygote: {0}")]
    Spawn(String),
    /// The zygote closed its socket or died: no more containers can be created.
    #[error("zygote is gone: {0}")]
    ZygoteGone(String),
    /// libcontainer (or the monitor around it) failed to create the container; the text is
    /// libcontainer's. Everything the attempt made was removed before this was returned.
    #[error("create container {id}: {message}")]
    Create {
        /// The container id.
        id: String,
        /// libcontainer's error, with its causes.
        message: String,
    },
    /// Setting up a pod's namespaces failed; everything it made was removed.
    #[error("create sandbox {id}: {message}")]
    Sandbox {
        /// The sandbox id.
        id: String,
        /// What failed, with its cause.
        message: String,
    },
    /// No monitor answers on the state dir's socket (exited, or killed).
    #[error("monitor for {state_dir} is not running")]
    MonitorGone {
        /// The container's state dir (where monitor.sock would be).
        state_dir: PathBuf,
    },
    /// The monitor refused the request because of the container's state
    /// (start twice, exec before start or after exit).
    #[error("{op}: {message}")]
    WrongState {
        /// The request (`start`, `exec`, ...).
        op: &'static str,
        /// The monitor's explanation.
        message: String,
    },
    /// The monitor failed to carry out the request.
    #[error("{op}: {message}")]
    Failed {
        /// The request (`start`, `exec`, ...).
        op: &'static str,
        /// The monitor's explanation, with its cause.
        message: String,
    },
    /// A malformed message on one of the sockets.
    #[error("protocol: {0}")]
    Protocol(String),
    /// The operation did not finish in time.
    #[error("{0} timed out")]
    Timeout(String),
    /// A socket or file operation of the daemon's side failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// status.json could not be read or written.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

impl MonitorError {
    /// The monitor did not answer in time or is gone: whoever supervises the container
    /// now, it is not that monitor.
    pub fn is_unresponsive(&self) -> bool {
        matches!(
            self,
            MonitorError::MonitorGone { .. } | MonitorError::Timeout(_)
        )
    }

    pub(crate) fn io(what: impl Into<String>, source: io::Error) -> Self {
        MonitorError::Io {
            what: what.into(),
            source,
        }
    }
}

impl Classify for MonitorError {
    fn kind(&self) -> Kind {
        match self {
            MonitorError::InvalidRequest(_) => Kind::InvalidArgument,
            MonitorError::MonitorGone { .. } | MonitorError::WrongState { .. } => {
                Kind::FailedPrecondition
            }
            MonitorError::Timeout(_) => Kind::DeadlineExceeded,
            MonitorError::Spawn(_)
            | MonitorError::ZygoteGone(_)
            | MonitorError::Create { .. }
            | MonitorError::Sandbox { .. }
            | MonitorError::Failed { .. }
            | MonitorError::Protocol(_)
            | MonitorError::Io { .. }
            | MonitorError::Store(_) => Kind::Internal,
        }
    }
}
