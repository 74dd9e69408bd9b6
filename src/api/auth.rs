//! Bearer-token authentication (an interceptor) and per-RPC role checks.

use tonic::{Request, Status};

use super::error::AuthError;

use crate::ledger::event::Role;
use crate::ledger::{hash_secret, now_ns, Ledger};

/// What the server knows of the connection a request came on (set by the accept
/// loop, read here).
#[derive(Debug, Clone, Default)]
pub struct ConnInfo {
    pub remote: Option<std::net::SocketAddr>,
    /// The verified client certificate's identity (mutual TLS).
    pub client_cert: Option<std::sync::Arc<str>>,
}

/// The authenticated caller, put in request extensions by [`Authenticator`].
#[derive(Debug, Clone)]
pub struct Caller {
    pub name: String,
    pub role: Role,
    /// The client certificate it presented, recorded with what it does.
    pub cert: Option<std::sync::Arc<str>>,
    /// Whether the caller is a token in the ledger (not the read-only forensic
    /// admin): its streams end when that token is revoked or expires.
    pub ledger_token: bool,
}

/// Resolves `authorization: Bearer <secret>` against the tokens in the ledger's
/// current state (in memory, no lock, no I/O).
#[derive(Clone)]
pub struct Authenticator {
    ledger: Ledger,
    /// Read-only forensics: the SHA-256 of the data directory's `admin.token` secret,
    /// accepted as an admin even when the damaged ledger no longer shows its token
    /// (whoever can read that file can read the whole ledger anyway).
    forensic_admin: Option<String>,
}

impl Authenticator {
    pub fn new(ledger: Ledger) -> Self {
        Authenticator {
            ledger,
            forensic_admin: None,
        }
    }

    /// Also accepts the secret stored in `admin_token_file` as an admin.
    pub fn with_forensic_admin(mut self, admin_token_file: &std::path::Path) -> Self {
        self.forensic_admin = std::fs::read_to_string(admin_token_file)
            .ok()
            .map(|s| hash_secret(s.trim()));
        self
    }
}

impl tonic::service::Interceptor for Authenticator {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        let value = req
            .metadata()
            .get("authorization")
            .ok_or(AuthError::MissingToken)?;
        let value = value.to_str().map_err(|_| AuthError::MalformedHeader)?;
        let secret = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
            .ok_or(AuthError::NotBearer)?
            .trim();
        let cert = req
            .extensions()
            .get::<ConnInfo>()
            .and_then(|c| c.client_cert.clone());
        let state = self.ledger.snapshot();
        // Looked up by the secret's SHA-256, never compared with the secret itself:
        // how long the lookup takes says nothing about any secret.
        let hash = hash_secret(secret);
        let caller = match state.token_by_hash(&hash) {
            Some(token) if !token.usable_at(now_ns()) => return Err(AuthError::Expired.into()),
            Some(token) => Caller {
                name: token.name.clone(),
                role: token.role,
                cert,
                ledger_token: true,
            },
            None if self.forensic_admin.as_deref().is_some_and(|f| {
                constant_time_eq::constant_time_eq(f.as_bytes(), hash.as_bytes())
            }) =>
            {
                Caller {
                    name: "admin".into(),
                    role: Role::Admin,
                    cert,
                    ledger_token: false,
                }
            }
            None => return Err(AuthError::UnknownToken.into()),
        };
        req.extensions_mut().insert(caller);
        Ok(req)
    }
}

pub const ADMIN: &[Role] = &[Role::Admin];
pub const READERS: &[Role] = &[Role::Admin, Role::Auditor];
pub const SPAWNERS: &[Role] = &[Role::Admin, Role::Spawner];
pub const CHECKERS: &[Role] = &[Role::Admin, Role::Spawner, Role::Auditor];
/// Who reads groups: readers, and the group sync (to compare with the hub's).
pub const GROUP_READERS: &[Role] = &[Role::Admin, Role::Auditor, Role::Sync];
/// Who changes members: admins (groups not synced) and the sync (synced groups).
pub const MEMBERS: &[Role] = &[Role::Admin, Role::Sync];
/// Docker observations from an agent's host.
pub const WATCHERS: &[Role] = &[Role::Admin, Role::Watcher];

/// The caller, if its role is one of `allowed`.
pub fn require<T>(
    req: &Request<T>,
    allowed: &'static [Role],
    rpc: &'static str,
) -> Result<Caller, AuthError> {
    let caller = req
        .extensions()
        .get::<Caller>()
        .cloned()
        .ok_or(AuthError::NotAuthenticated)?;
    if allowed.contains(&caller.role) {
        Ok(caller)
    } else {
        Err(AuthError::RoleNotAllowed {
            token: caller.name,
            role: caller.role,
            rpc,
            needs: allowed,
        })
    }
}
