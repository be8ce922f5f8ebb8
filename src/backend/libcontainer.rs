//! The default backend: youki's libcontainer, called in-process by a per-container
//! monitor forked from the single-threaded zygote (see src/monitor).

use std::path::PathBuf;
use std::sync::Arc;

use oci_spec::runtime::Spec;

use super::{Backend, BackendError, CreateParams};
use crate::monitor::{CreateRequest, RuntimeKind, Zygote};

pub struct LibcontainerBackend {
    zygote: Arc<Zygote>,
    /// libcontainer's own state root (`<run_dir>/libcontainer`).
    state_root: PathBuf,
    max_log_line_size: usize,
    exec_max_output: usize,
}

impl LibcontainerBackend {
    pub fn new(
        zygote: Arc<Zygote>,
        state_root: PathBuf,
        max_log_line_size: usize,
        exec_max_output: usize,
    ) -> Self {
        LibcontainerBackend {
            zygote,
            state_root,
            max_log_line_size,
            exec_max_output,
        }
    }
}

#[tonic::async_trait]
impl Backend for LibcontainerBackend {
    fn name(&self) -> &'static str {
        "libcontainer"
    }

    fn prepare_spec(&self, spec: &mut Spec) -> Result<(), BackendError> {
        // libcontainer 0.7 reads SCMP_CMP_MASKED_EQ's two values the other way round from
        // runc and crun: without this the default profile's clone rule allows every clone.
        if let Some(linux) = spec.linux_mut() {
            if let Some(seccomp) = linux.seccomp().clone() {
                let fixed =
                    crate::spec::for_libcontainer(&seccomp).map_err(|e| BackendError::Failed {
                        backend: "libcontainer",
                        kind: crate::error::Kind::Internal,
                        message: e.to_string(),
                    })?;
                linux.set_seccomp(Some(fixed));
            }
        }
        Ok(())
    }

    async fn create(&self, p: CreateParams) -> Result<(), BackendError> {
        self.zygote
            .create_container(CreateRequest {
                id: p.id,
                bundle: p.bundle,
                state_dir: p.run_dir,
                libcontainer_root: self.state_root.clone(),
                log_path: p.log_path,
                max_log_line_size: self.max_log_line_size,
                oom_score_adj: p.oom_score_adj,
                exec_max_output: self.exec_max_output,
                tty: p.tty,
                runtime: RuntimeKind::Libcontainer,
            })
            .await?;
        Ok(())
    }
}
