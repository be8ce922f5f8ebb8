//! What kind of failure a domain error is, so that one place (`cri::errors`) can
//! map every module's errors to gRPC codes.
//!
//! Each module keeps its own `thiserror` enum and says, per variant, which kind it is.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The request is malformed (bad reference, bad config, bad path).
    InvalidArgument,
    /// The id or name does not exist.
    NotFound,
    /// A name or id is taken.
    AlreadyExists,
    /// The object is in the wrong state (sandbox not ready, image in use).
    FailedPrecondition,
    /// Something outside proxrt did not answer (registry unreachable, Proxmox down).
    Unavailable,
    /// The caller's deadline passed.
    DeadlineExceeded,
    /// The caller is not allowed (registry auth refused, a Proxmox token lacking a
    /// privilege).
    PermissionDenied,
    /// Credentials were refused (a Proxmox API token PVE does not accept).
    Unauthenticated,
    /// Content did not match its digest (corrupt download or store).
    DataLoss,
    /// A bug or a host fault: disk, kernel, a corrupt state file.
    Internal,
}

/// Implemented by every domain error enum.
pub trait Classify {
    fn kind(&self) -> Kind;
}

/// An error and its sources, one after the other: top-level messages ("failed to
/// create container", "error sending request") say little without them. A source
/// whose text the message already quotes is not repeated.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}
