//! Offline recovery: a new admin token, recorded as a ledger entry, for a stopped
//! server whose admin tokens are all lost or revoked.
//!
//! Whoever may open the data directory can read and rewrite the ledger anyway, so the
//! directory's owner (and only they: the directory is checked as at `serve`) is the
//! one trusted to mint an admin. The store's lock refuses it while a server runs.

use std::path::{Path, PathBuf};

use crate::ledger::event::Role;
use crate::ledger::log::LogStore;
use crate::ledger::{hash_secret, new_secret, Command, Ledger, LedgerConfig, ACTOR_SYSTEM};
use crate::store::{OpenOptions, SledStore};

/// What recovery did.
#[derive(Debug)]
pub struct Recovered {
    pub name: String,
    pub seq: u64,
    pub secret_file: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum RecoveryError {
    #[error("{0} holds no ledger (no {1}); there is nothing to recover")]
    NoLedger(PathBuf, &'static str),
    #[error(transparent)]
    Fs(#[from] crate::private_fs::FsError),
    #[error(
        "cannot open the ledger in {dir} (is its server still running? stop it first): {source}"
    )]
    Store {
        dir: PathBuf,
        source: crate::ledger::log::StoreError,
    },
    #[error(transparent)]
    Ledger(#[from] crate::ledger::Error),
}

/// Issues admin token `admin-recovered-N` (the first N free) into the ledger in `dir`
/// and writes its secret to `dir/admin.token` (mode 0600, replacing the old file).
pub async fn admin_token(dir: &Path) -> Result<Recovered, RecoveryError> {
    if !dir.join("ledger.sled").exists() {
        return Err(RecoveryError::NoLedger(dir.to_path_buf(), "ledger.sled"));
    }
    // Owner only, never --allow-unsafe-data-dir: this mints an admin.
    crate::private_fs::ensure_private_dir(dir, false)?;
    let opts = OpenOptions::default();
    let owned = dir.to_path_buf();
    let store = tokio::task::spawn_blocking(move || SledStore::open_with(&owned, &opts))
        .await
        .map_err(|e| crate::ledger::Error::TaskFailed {
            task: "open store",
            reason: e.to_string(),
        })?
        .map_err(|source| RecoveryError::Store {
            dir: dir.to_path_buf(),
            source,
        })?;
    let store: std::sync::Arc<dyn LogStore> = std::sync::Arc::new(store);
    let ledger = tokio::task::spawn_blocking(move || Ledger::open(store, LedgerConfig::default()))
        .await
        .map_err(|e| crate::ledger::Error::TaskFailed {
            task: "load ledger",
            reason: e.to_string(),
        })??;
    let st = ledger.snapshot();
    let name = (1..)
        .map(|n| format!("admin-recovered-{n}"))
        .find(|n| st.token(n).is_none())
        .unwrap_or_else(|| "admin-recovered".into());
    let secret = new_secret()?;
    let secret_file = dir.join(crate::config::ADMIN_TOKEN_FILE);
    // The secret is on disk before the token exists: a crash in between leaves an
    // unusable file, never a usable token nobody holds.
    crate::private_fs::write_private_atomic(&secret_file, format!("{secret}\n").as_bytes())?;
    let c = ledger
        .submit(
            ACTOR_SYSTEM,
            None,
            Command::CreateToken {
                name: name.clone(),
                role: Role::Admin,
                secret_sha256: hash_secret(&secret),
                expires_at_ns: None,
            },
        )
        .await;
    ledger.shutdown().await;
    let c = c?;
    Ok(Recovered {
        name,
        seq: c.entry.seq,
        secret_file,
    })
}
