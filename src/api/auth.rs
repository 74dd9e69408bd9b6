//! Bearer-token authentication (an interceptor) and per-RPC role checks.

use tonic::{Request, Status};

use crate::ledger::event::Role;
use crate::ledger::{hash_secret, Ledger};

/// The authenticated caller, put in request extensions by [`Authenticator`].
#[derive(Debug, Clone)]
pub struct Caller {
    pub name: String,
    pub role: Role,
}

/// Resolves `authorization: Bearer <secret>` against the tokens in the ledger's
/// current state (in memory, no lock, no I/O).
#[derive(Clone)]
pub struct Authenticator {
    ledger: Ledger,
}

impl Authenticator {
    pub fn new(ledger: Ledger) -> Self {
        Authenticator { ledger }
    }
}

impl tonic::service::Interceptor for Authenticator {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        let value = req.metadata().get("authorization").ok_or_else(|| {
            Status::unauthenticated("missing bearer token (authorization header)")
        })?;
        let value = value
            .to_str()
            .map_err(|_| Status::unauthenticated("malformed authorization header"))?;
        let secret = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
            .ok_or_else(|| Status::unauthenticated("authorization must be `Bearer <token>`"))?
            .trim();
        let state = self.ledger.snapshot();
        let token = state
            .token_by_hash(&hash_secret(secret))
            .ok_or_else(|| Status::unauthenticated("unknown or revoked token"))?;
        let caller = Caller {
            name: token.name.clone(),
            role: token.role,
        };
        req.extensions_mut().insert(caller);
        Ok(req)
    }
}

pub const ADMIN: &[Role] = &[Role::Admin];
pub const READERS: &[Role] = &[Role::Admin, Role::Auditor];
pub const SPAWNERS: &[Role] = &[Role::Admin, Role::Spawner];
pub const CHECKERS: &[Role] = &[Role::Admin, Role::Spawner, Role::Auditor];

/// The caller, if its role is one of `allowed`.
pub fn require<T>(req: &Request<T>, allowed: &[Role], rpc: &str) -> Result<Caller, Status> {
    let caller = req
        .extensions()
        .get::<Caller>()
        .cloned()
        .ok_or_else(|| Status::unauthenticated("not authenticated"))?;
    if allowed.contains(&caller.role) {
        Ok(caller)
    } else {
        Err(Status::permission_denied(format!(
            "token {:?} has role {}; {rpc} needs {}",
            caller.name,
            caller.role.as_str(),
            allowed
                .iter()
                .map(|r| r.as_str())
                .collect::<Vec<_>>()
                .join(" or ")
        )))
    }
}
