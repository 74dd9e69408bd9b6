//! The one place ledger errors become gRPC statuses.

use tonic::Status;
use tracing::error;

use crate::ledger::log::StoreError;
use crate::ledger::Error;

impl From<Error> for Status {
    fn from(e: Error) -> Status {
        match e {
            Error::InvalidArgument(m) => Status::invalid_argument(m),
            Error::NotFound(m) => Status::not_found(m),
            Error::AlreadyExists(m) => Status::already_exists(m),
            Error::FailedPrecondition(m) => Status::failed_precondition(m),
            // Fail closed: the caller learns nothing was stored.
            Error::Unavailable(m) => Status::unavailable(m),
            Error::Store(e @ (StoreError::CannotWrite { .. } | StoreError::ReadOnly)) => {
                Status::unavailable(format!("{e}; nothing was recorded"))
            }
            e @ Error::Store(
                StoreError::Read { .. }
                | StoreError::HeadMoved { .. }
                | StoreError::Unusable { .. },
            ) => {
                error!(error = %e, "ledger storage error");
                Status::unavailable(format!("ledger storage is not available: {e}"))
            }
            // Opaque to the caller; the details go to the log.
            e @ (Error::Corrupt { .. }
            | Error::Refused { .. }
            | Error::Store(StoreError::Damaged { .. })) => {
                error!(error = %e, "stored ledger is damaged");
                Status::internal("the stored ledger is damaged; run verify")
            }
        }
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
