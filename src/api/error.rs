//! What can be wrong with a request before it reaches the ledger: a field that does
//! not convert, or a caller who may not make it. `status` maps both.

use crate::ledger::event::Role;

/// A request field that does not convert to a ledger value.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error("unknown {field} value {value}")]
    UnknownEnum { field: &'static str, value: i32 },
    #[error("{0} is required")]
    Missing(&'static str),
    #[error("{0}; `users` is for AddMember")]
    OneAtATime(&'static str),
    #[error("{0}")]
    Refused(&'static str),
    #[error("timestamp nanos {0} out of range")]
    NanosOutOfRange(i32),
    #[error("timestamp {0}s is out of range")]
    SecondsOutOfRange(i64),
    #[error("{0}")]
    Invalid(String),
    #[error("at most {max} {what} per request")]
    TooMany { what: &'static str, max: usize },
}

/// A limit a caller reached: RESOURCE_EXHAUSTED, nothing done.
#[derive(Debug, thiserror::Error)]
pub enum LimitError {
    #[error("token {token:?} already has {limit} open audit streams (the limit per token); close one first")]
    StreamsPerToken { token: String, limit: usize },
    #[error("the server already has {0} open audit streams (its limit); retry later")]
    Streams(usize),
}

/// Why a caller is refused before any handler runs.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("missing bearer token (authorization header)")]
    MissingToken,
    #[error("malformed authorization header")]
    MalformedHeader,
    #[error("authorization must be `Bearer <token>`")]
    NotBearer,
    #[error("unknown or revoked token")]
    UnknownToken,
    #[error("the token has expired")]
    Expired,
    #[error("token {0:?} was revoked or expired; its stream ended")]
    TokenEnded(String),
    #[error("not authenticated")]
    NotAuthenticated,
    #[error("token {token:?} has role {role}; {rpc} needs {}", needs.iter().map(|r| r.as_str()).collect::<Vec<_>>().join(" or "))]
    RoleNotAllowed {
        token: String,
        role: Role,
        rpc: &'static str,
        needs: &'static [Role],
    },
}
