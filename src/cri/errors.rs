//! The one place domain errors become gRPC statuses.

use tonic::{Code, Status};

use crate::error::{Classify, Kind};

pub fn code(kind: Kind) -> Code {
    match kind {
        Kind::InvalidArgument => Code::InvalidArgument,
        Kind::NotFound => Code::NotFound,
        Kind::AlreadyExists => Code::AlreadyExists,
        Kind::FailedPrecondition => Code::FailedPrecondition,
        Kind::Unavailable => Code::Unavailable,
        Kind::DeadlineExceeded => Code::DeadlineExceeded,
        Kind::PermissionDenied => Code::PermissionDenied,
        Kind::Unauthenticated => Code::Unauthenticated,
        Kind::DataLoss => Code::DataLoss,
        Kind::Internal => Code::Internal,
    }
}

/// Maps any domain error to a status carrying its full message.
pub fn to_status<E: Classify + std::fmt::Display>(e: E) -> Status {
    let code = code(e.kind());
    if code == Code::Internal {
        tracing::error!(error = %e, "internal error");
    }
    Status::new(code, e.to_string())
}

/// A request field that is missing or malformed.
pub fn invalid(message: impl Into<String>) -> Status {
    Status::invalid_argument(message.into())
}
