//! Reports from `privledger watch` agents, one per Docker host: what each report is,
//! and how the ledger records them. Every report carries its host's next number and
//! becomes exactly one entry naming the host, so the host's last number in the state
//! says what has been recorded: a repeat is acknowledged, a gap refused.

use serde::{Deserialize, Serialize};

use super::events::RawEvent;
use super::observe::{observation, ContainerFacts, ObserveConfig, Seen};
use super::watcher::{stale, unvouched, Stale};
use super::Error;
use crate::ledger::error::Cause;
use crate::ledger::event::{Alert, AlertKind, Lifecycle, ObservedVia};
use crate::ledger::{names, Command, Error as LedgerError, Ledger};

/// What an agent saw.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum HostItem {
    /// A daemon event of a container lifecycle step, with the inspect made when it was
    /// seen (create and start).
    Event {
        event: RawEvent,
        facts: Option<ContainerFacts>,
    },
    /// A container the agent's listing found when it attached.
    Reconciled(ContainerFacts),
    /// The daemon no longer held the agent's cursor: events between may be lost.
    Gap {
        from_ns: i64,
        to_ns: i64,
        details: String,
    },
}

/// One numbered report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostReport {
    pub number: u64,
    pub item: HostItem,
}

/// What the ledger did with a request's reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HostReceipt {
    /// The host's last recorded number after the request.
    pub last: u64,
    pub recorded: u64,
    pub duplicates: u64,
}

/// Whether an agent forwards this event: a lifecycle step (anything else records
/// nothing, and a number must always produce an entry).
pub fn forwarded(ev: &RawEvent) -> bool {
    ev.typ == "container" && ev.lifecycle().is_some_and(Lifecycle::is_daemon_step)
}

/// Records `reports` of `host` in order, by `actor` (the agent's token). Reports up to
/// the host's last number are acknowledged as duplicates; the first one beyond the
/// next is refused with nothing after it recorded.
pub async fn record(
    ledger: &Ledger,
    cfg: &ObserveConfig,
    actor: &str,
    host: &str,
    reports: Vec<HostReport>,
) -> Result<HostReceipt, Error> {
    names::host(host)?;
    let mut r = HostReceipt::default();
    for rep in reports {
        let st = ledger.snapshot();
        let last = st.host_last(host);
        if rep.number <= last {
            r.duplicates += 1;
            continue;
        }
        let number = rep.number;
        let (cmd, observed) = match rep.item {
            HostItem::Event { event, .. } if !forwarded(&event) => {
                let why = LedgerError::UnknownKind(format!(
                    "{:?} {:?} is not a container lifecycle event",
                    event.typ, event.action
                ));
                (refused(host, number, &why), None)
            }
            HostItem::Event { event, facts } => {
                let mut o = observation(
                    cfg,
                    Seen::event(&event, ObservedVia::Agent),
                    facts.as_ref(),
                    st.container(&event.id),
                );
                o.host = Some(host.to_string());
                o.host_seq = Some(rep.number);
                (Command::RecordContainer(o.clone()), Some(o))
            }
            HostItem::Reconciled(f) => {
                let mut o = observation(
                    cfg,
                    Seen::reconcile(Lifecycle::Reconciled, &f.id, crate::ledger::now_ns()),
                    Some(&f),
                    st.container(&f.id),
                );
                o.host = Some(host.to_string());
                o.host_seq = Some(rep.number);
                (Command::RecordContainer(o.clone()), Some(o))
            }
            HostItem::Gap {
                from_ns,
                to_ns,
                details,
            } => (
                Command::RaiseAlert(Alert {
                    window_from_ns: Some(from_ns),
                    window_to_ns: Some(to_ns),
                    host: Some(host.to_string()),
                    host_seq: Some(rep.number),
                    ..Alert::new(AlertKind::DockerEventGap, format!("host {host}: {details}"))
                }),
                None,
            ),
        };
        let mut submitted = ledger.submit(actor, None, cmd).await;
        let mut observed = observed;
        if let Err(e) = &submitted {
            if e.cause() == Cause::BadInput {
                // Refused for what it says, it would be refused on every retry and
                // hold back every later report of the host: its number is recorded
                // as a gap instead, naming why.
                observed = None;
                submitted = ledger.submit(actor, None, refused(host, number, e)).await;
            }
        }
        let c = match submitted {
            Ok(c) => c,
            // Recorded meanwhile by a request that raced this one.
            Err(LedgerError::HostOutOfOrder { expected, got, .. }) if got < expected => {
                r.duplicates += 1;
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        r.recorded += 1;
        if let Some(o) = observed.filter(|o| {
            matches!(
                o.lifecycle(),
                Some(Lifecycle::Create | Lifecycle::Start | Lifecycle::Reconciled)
            )
        }) {
            for (alert, key) in unvouched(ledger, &o, c.entry.seq)? {
                ledger
                    .submit(actor, Some(key), Command::RaiseAlert(alert))
                    .await?;
            }
        }
    }
    r.last = ledger.snapshot().host_last(host);
    Ok(r)
}

/// What takes the number of a report the ledger cannot record as it came: a gap in
/// what the ledger knows of the host, with the reason.
fn refused(host: &str, number: u64, why: &LedgerError) -> Command {
    Command::RaiseAlert(Alert {
        host: Some(host.to_string()),
        host_seq: Some(number),
        ..Alert::new(
            AlertKind::DockerEventGap,
            format!("host {host}: report {number} was refused and not recorded: {why}"),
        )
    })
}

/// Until `shutdown`: after every change of access (and once at start), a
/// `stale_grant` alert for each running container on an agent's host whose user lost
/// what it holds (the agents cannot see revocations; the ledger can). Alert only: the
/// ledger cannot stop a container on another host. On a cluster node that does not
/// write, the alerts are the writer's to record.
pub async fn check_hosts(ledger: Ledger, shutdown: impl std::future::Future<Output = ()>) {
    tokio::pin!(shutdown);
    let mut restored = std::collections::HashSet::new();
    let mut trigger = None;
    loop {
        let from = ledger.snapshot().seq + 1;
        for s in stale(&ledger, trigger, &mut restored, |c| c.host.is_some()) {
            let Stale { alert, key, .. } = s;
            match ledger
                .submit(
                    crate::ledger::ACTOR_DOCKER,
                    Some(key),
                    Command::RaiseAlert(alert),
                )
                .await
            {
                Ok(c) if !c.replayed => {
                    tracing::warn!(seq = c.entry.seq, details = %s.details, "alert")
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::debug!(error = %e, "a remote host's stale grant not recorded here")
                }
            }
        }
        let mut changes =
            match ledger.stream(from, true, crate::ledger::StreamFilter::access_changes(), 2) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "following access changes for agents' hosts");
                    return;
                }
            };
        let next = tokio::select! {
            e = changes.recv() => e,
            () = &mut shutdown => return,
        };
        match next {
            Some(Ok(entries)) => trigger = entries.last().map(|e| e.seq),
            _ => return,
        }
    }
}
