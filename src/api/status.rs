//! The one place ledger errors become gRPC statuses.

use tonic::{Code, Status};

use super::error::{AuthError, RequestError};
use tracing::error;

use crate::ledger::log::StoreError;
use crate::ledger::Error;

impl From<Error> for Status {
    fn from(e: Error) -> Status {
        let code = match &e {
            Error::InvalidText { .. }
            | Error::InvalidGrant(_)
            | Error::ExpiryNotInFuture(_)
            | Error::UnknownKind(_)
            | Error::BeyondHead { .. }
            | Error::ReversedRange { .. }
            | Error::BeforeEarliest { .. }
            | Error::RequestIdReused { .. }
            | Error::InvalidCheckpointRecord(_)
            | Error::Unencodable(_) => Code::InvalidArgument,
            Error::NoSuchGroup(_)
            | Error::NoSuchBuiltinGroup(_)
            | Error::NotAMember { .. }
            | Error::NoSuchGrant(_)
            | Error::NoSuchToken(_) => Code::NotFound,
            Error::GroupExists(_)
            | Error::BuiltinGroupExists(_)
            | Error::AlreadyAMember { .. }
            | Error::TokenNameTaken { .. } => Code::AlreadyExists,
            Error::BuiltinGroup(_)
            | Error::BuiltinGrant(_)
            | Error::NotExpired(_)
            | Error::GrantEnded { .. }
            | Error::TokenRevoked { .. } => Code::FailedPrecondition,
            // Fail closed: the caller learns nothing was stored.
            Error::ReadOnly
            | Error::ShuttingDown
            | Error::WriterStopped
            | Error::NotRecorded(_)
            | Error::NoRandomness(_)
            | Error::ThreadNotStarted { .. }
            | Error::TaskFailed { .. } => Code::Unavailable,
            Error::Store(e @ (StoreError::CannotWrite { .. } | StoreError::ReadOnly)) => {
                return Status::unavailable(format!("{e}; nothing was recorded"));
            }
            Error::Store(
                StoreError::Read { .. }
                | StoreError::HeadMoved { .. }
                | StoreError::Unusable { .. },
            ) => {
                error!(error = %e, "ledger storage error");
                return Status::unavailable(format!("ledger storage is not available: {e}"));
            }
            // Opaque to the caller; the details go to the log.
            Error::Corrupt { .. }
            | Error::Refused { .. }
            | Error::Store(StoreError::Damaged { .. }) => {
                error!(error = %e, "stored ledger is damaged");
                return Status::internal("the stored ledger is damaged; run verify");
            }
            Error::Inconsistent(_) => {
                error!(error = %e, "ledger inconsistency");
                return Status::internal(e.to_string());
            }
        };
        Status::new(code, e.to_string())
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
