//! What the server appends on its own: built-in groups restored at start-up, and
//! grants expiring as their time passes.

use std::time::Duration;

use tracing::{info, warn};

use super::event::{self, GrantSpec};
use super::time::now_ns;
use super::{Command, Error, Ledger, ACTOR_SYSTEM};

impl Ledger {
    /// Makes the configured built-in groups exist with their configured grants, and
    /// records that the server started. Appends only what is missing or changed.
    pub async fn start_up(
        &self,
        builtins: &[(String, GrantSpec)],
        version: &str,
    ) -> Result<(), Error> {
        let new_ledger = self.snapshot().seq == 0;
        for (name, spec) in builtins {
            let st = self.snapshot();
            if !st.group(name).is_some_and(|g| g.builtin) {
                if new_ledger {
                    // A new ledger: creating the configured groups is its first step.
                    info!(group = %name, "creating the built-in group");
                } else {
                    warn!(group = %name, "built-in group missing; restoring it");
                }
                self.submit(
                    ACTOR_SYSTEM,
                    None,
                    Command::RestoreBuiltinGroup {
                        group: name.clone(),
                    },
                )
                .await?;
            }
            let st = self.snapshot();
            let current: Vec<_> = st
                .open_grants_of(&event::Subject::Group(name.clone()))
                .filter(|g| g.builtin)
                .map(|g| (g.id, g.spec.clone()))
                .collect();
            if current.iter().any(|(_, s)| s == spec) && current.len() == 1 {
                continue;
            }
            for (id, _) in current {
                self.submit(
                    ACTOR_SYSTEM,
                    None,
                    Command::ReplaceBuiltinGrant { grant_id: id },
                )
                .await?;
            }
            self.submit(
                ACTOR_SYSTEM,
                None,
                Command::IssueBuiltinGrant {
                    group: name.clone(),
                    spec: spec.clone(),
                },
            )
            .await?;
        }
        self.submit(
            ACTOR_SYSTEM,
            None,
            Command::ServerStarted {
                version: version.to_string(),
            },
        )
        .await?;
        Ok(())
    }

    /// Appends `grant_expired` for every grant whose expiry has passed, then waits
    /// for the next expiry (or a new grant) until `shutdown` resolves.
    pub async fn run_expiry(&self, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut head = self.inner.head.clone();
        loop {
            let now = now_ns();
            let st = self.snapshot();
            let mut wait = Duration::from_secs(60);
            if let Some((exp, id)) = st.next_expiry() {
                if exp <= now {
                    match self
                        .submit(ACTOR_SYSTEM, None, Command::ExpireGrant { grant_id: id })
                        .await
                    {
                        Ok(c) => info!(grant = id, seq = c.entry.seq, "grant expired"),
                        // A cluster follower: the writer records it, and this node
                        // applies it (access is judged by time meanwhile).
                        Err(Error::Store(super::log::StoreError::NotWriter { .. })) => {
                            wait = Duration::from_secs(1);
                        }
                        Err(e) if e.is_unavailable() => {
                            warn!(error = %e, "cannot record an expiry now");
                            wait = Duration::from_secs(1);
                        }
                        Err(e) => warn!(grant = id, error = %e, "expiry refused"),
                    }
                    if wait != Duration::from_secs(1) {
                        continue;
                    }
                } else {
                    wait = wait.min(Duration::from_nanos((exp - now) as u64));
                }
            }
            tokio::select! {
                _ = &mut shutdown => return,
                _ = tokio::time::sleep(wait) => {}
                r = head.changed() => if r.is_err() { return },
            }
        }
    }
}
