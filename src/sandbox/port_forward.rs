//! PortForward: which pod, and how to reach its ports.

use super::{SandboxError, SandboxState};
use crate::backend::BackendError;
use crate::context::Ctx;
use crate::error::Kind;
use crate::streaming::session::Dialer;

/// Checks that the pod's ports can be forwarded now (CRI PortForward, before the URL is
/// handed out); returns its full id.
pub fn check_port_forward(ctx: &Ctx<'_>, id: &str) -> Result<String, SandboxError> {
    let s = ctx.sandboxes.get(id)?;
    let r = s.record();
    if r.state != SandboxState::Ready {
        return Err(SandboxError::NotReady {
            id: r.id,
            state: "NotReady",
        });
    }
    let backend = ctx.backends.get(&r.backend)?;
    if let Some(why) = backend.streaming_unsupported() {
        return Err(BackendError::Failed {
            backend: backend.name(),
            kind: Kind::FailedPrecondition,
            message: why,
        }
        .into());
    }
    Ok(r.id)
}

/// The dialer for the pod's ports (at session time: the pod may have stopped since).
pub fn pod_dialer(ctx: &Ctx<'_>, id: &str) -> Result<Dialer, SandboxError> {
    let id = check_port_forward(ctx, id)?;
    let r = ctx.sandboxes.get(&id)?.record();
    Ok(ctx.backends.get(&r.backend)?.pod_dialer(&r)?)
}
