//! The one place ledger errors become gRPC statuses.

use tonic::Status;

use super::error::{AuthError, LimitError, RequestError};
use tracing::error;

use crate::ledger::error::Cause;
use crate::ledger::log::StoreError;
use crate::ledger::Error;

impl From<Error> for Status {
    fn from(e: Error) -> Status {
        let msg = match &e {
            Error::Store(s @ (StoreError::CannotWrite { .. } | StoreError::ReadOnly)) => {
                format!("{s}; nothing was recorded")
            }
            Error::Store(s @ StoreError::NotWriter { .. }) => s.to_string(),
            Error::Store(_) => format!("ledger storage is not available: {e}"),
            _ => e.to_string(),
        };
        match e.cause() {
            Cause::BadInput => Status::invalid_argument(msg),
            Cause::Missing => Status::not_found(msg),
            Cause::Exists => Status::already_exists(msg),
            Cause::NotAllowed => Status::failed_precondition(msg),
            Cause::Forbidden => Status::permission_denied(msg),
            // Fail closed: the caller learns nothing was stored.
            Cause::Unavailable => Status::unavailable(msg),
            Cause::StorageFailing => {
                error!(error = %e, "ledger storage error");
                Status::unavailable(msg)
            }
            // Opaque to the caller; the details go to the log.
            Cause::Damaged => {
                error!(error = %e, "stored ledger is damaged");
                Status::internal("the stored ledger is damaged; run verify")
            }
            Cause::Internal => {
                error!(error = %e, "ledger inconsistency");
                Status::internal(msg)
            }
        }
    }
}

impl From<RequestError> for Status {
    fn from(e: RequestError) -> Status {
        Status::invalid_argument(e.to_string())
    }
}

impl From<AuthError> for Status {
    fn from(e: AuthError) -> Status {
        match e {
            AuthError::RoleNotAllowed { .. } => Status::permission_denied(e.to_string()),
            _ => Status::unauthenticated(e.to_string()),
        }
    }
}

impl From<LimitError> for Status {
    fn from(e: LimitError) -> Status {
        Status::resource_exhausted(e.to_string())
    }
}

/// The gRPC name of a status code (`NOT_FOUND`), for metrics labels and messages.
pub fn code_name(c: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match c {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}
