//! Import: `docker events` lines recorded after the fact (marked `source: import`),
//! for the time the watcher was not attached.

use super::events::RawEvent;
use super::observe::{observation, ObserveConfig, Seen};
use crate::ledger::event::ObservedVia;
use crate::ledger::{Command, Error, Ledger, ACTOR_DOCKER};

/// Records imported `docker events` lines (marked `source: import`), skipping what
/// the ledger already holds; returns (recorded, already held, ignored as noise).
pub async fn import(
    ledger: &Ledger,
    cfg: &ObserveConfig,
    events: &[RawEvent],
) -> Result<(u64, u64, u64), Error> {
    let (mut recorded, mut held, mut ignored) = (0, 0, 0);
    for ev in events {
        if ev.lifecycle().is_none() {
            ignored += 1;
            continue;
        }
        let st = ledger.snapshot();
        let o = observation(
            cfg,
            Seen::event(ev, ObservedVia::Import),
            None,
            st.container(&ev.id),
        );
        let c = ledger
            .submit(ACTOR_DOCKER, Some(ev.key()), Command::RecordContainer(o))
            .await?;
        if c.replayed {
            held += 1;
        } else {
            recorded += 1;
        }
    }
    Ok((recorded, held, ignored))
}
