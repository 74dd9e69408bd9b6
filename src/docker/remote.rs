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
use crate::ledger::event::{Alert, AlertKind, Event, Lifecycle, ObservedVia};
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
        let number = rep.number;
        let cmd = command(cfg, &ledger.snapshot(), host, rep);
        // An observation is recorded under a key naming its report: a repeat of it
        // is answered with the entry first recorded, whose alerts are then raised
        // again (each once per container and kind) — the request that recorded it
        // may have failed before they were, and the agent's retry is all that
        // comes back for them.
        let key = matches!(cmd, Command::RecordContainer(_)).then(|| report_key(host, number));
        let mut submitted = ledger.submit(actor, key, cmd).await;
        if let Err(e) = &submitted {
            if e.cause() == Cause::BadInput {
                // Refused for what it says, it would be refused on every retry and
                // hold back every later report of the host: its number is recorded
                // as a gap instead, naming why.
                submitted = ledger.submit(actor, None, refused(host, number, e)).await;
            }
        }
        let c = match submitted {
            Ok(c) => c,
            // Recorded before (without a key: a gap, a refusal), or meanwhile by a
            // request that raced this one.
            Err(LedgerError::HostOutOfOrder { expected, got, .. }) if got < expected => {
                r.duplicates += 1;
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        if c.replayed {
            r.duplicates += 1;
        } else {
            r.recorded += 1;
        }
        let Event::DockerContainer(o) = &c.entry.event else {
            continue;
        };
        if matches!(
            o.lifecycle(),
            Some(Lifecycle::Create | Lifecycle::Start | Lifecycle::Reconciled)
        ) {
            for (alert, key) in unvouched(ledger, o, c.entry.seq)? {
                ledger
                    .submit(actor, Some(key), Command::RaiseAlert(alert))
                    .await?;
            }
        }
    }
    r.last = ledger.snapshot().host_last(host);
    Ok(r)
}

/// The idempotency key of a host's report `number`.
fn report_key(host: &str, number: u64) -> String {
    format!("host-report:{host}:{number}")
}

/// What the ledger records for a report, given its state `st`.
fn command(cfg: &ObserveConfig, st: &crate::ledger::State, host: &str, rep: HostReport) -> Command {
    let number = rep.number;
    let o = match rep.item {
        HostItem::Event { event, .. } if !forwarded(&event) => {
            let why = LedgerError::UnknownKind(format!(
                "{:?} {:?} is not a container lifecycle event",
                event.typ, event.action
            ));
            return refused(host, number, &why);
        }
        HostItem::Event { event, facts } => observation(
            cfg,
            Seen::event(&event, ObservedVia::Agent),
            facts.as_ref(),
            st.container(&event.id),
        ),
        HostItem::Reconciled(f) => observation(
            cfg,
            Seen::reconcile(Lifecycle::Reconciled, &f.id, crate::ledger::now_ns()),
            Some(&f),
            st.container(&f.id),
        ),
        HostItem::Gap {
            from_ns,
            to_ns,
            details,
        } => {
            return Command::RaiseAlert(Alert {
                window_from_ns: Some(from_ns),
                window_to_ns: Some(to_ns),
                host: Some(host.to_string()),
                host_seq: Some(number),
                ..Alert::new(AlertKind::DockerEventGap, format!("host {host}: {details}"))
            })
        }
    };
    Command::RecordContainer(crate::ledger::event::ContainerObserved {
        host: Some(host.to_string()),
        host_seq: Some(number),
        ..o
    })
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
    let mut triggers = vec![None];
    loop {
        let from = ledger.snapshot().seq + 1;
        let mut found = Vec::new();
        for trigger in triggers.drain(..) {
            // Each change judged at its own position (see `judged_at`).
            match super::watcher::judged_at(&ledger, trigger).await {
                Ok(judged) => found.extend(stale(&ledger, trigger, &judged, &mut restored, |c| {
                    c.host.is_some()
                })),
                Err(e) => {
                    tracing::warn!(error = %e, "judging a change of access for agents' hosts")
                }
            }
        }
        for s in found {
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
            Some(Ok(entries)) => triggers = entries.iter().map(|e| Some(e.seq)).collect(),
            _ => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn privileged_create(number: u64) -> HostReport {
        HostReport {
            number,
            item: HostItem::Event {
                event: RawEvent {
                    typ: "container".into(),
                    action: "create".into(),
                    id: "c1".into(),
                    time_nano: 1,
                    attributes: Default::default(),
                },
                facts: Some(ContainerFacts {
                    id: "c1".into(),
                    name: "/rogue".into(),
                    image: "busybox".into(),
                    labels: Default::default(),
                    mounts: Vec::new(),
                    privileged: true,
                    running: false,
                }),
            },
        }
    }

    fn privileged_alerts(ledger: &Ledger) -> usize {
        let head = ledger.snapshot().seq;
        (1..=head)
            .filter_map(|s| ledger.entry(s).unwrap())
            .filter(|e| {
                matches!(&e.event, Event::Alert(a)
                    if a.alert == AlertKind::UnauthorizedPrivileged
                        && a.container_id.as_deref() == Some("c1"))
            })
            .count()
    }

    #[tokio::test]
    async fn a_repeated_report_raises_the_alerts_its_first_request_did_not_live_to_raise() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = crate::ledger::tests::open(dir.path(), 10_000);
        let cfg = ObserveConfig::new("/var/run/docker.sock");
        // The first request recorded report 1, then died (a client gone, the writer
        // deposed) before the alert: only the observation is in the ledger.
        let first = command(&cfg, &ledger.snapshot(), "host-a", privileged_create(1));
        ledger
            .submit("host-a", Some(report_key("host-a", 1)), first)
            .await
            .unwrap();
        assert_eq!(privileged_alerts(&ledger), 0);
        let send = |n| {
            record(
                &ledger,
                &cfg,
                "host-a",
                "host-a",
                vec![privileged_create(n)],
            )
        };
        // The agent's retry: a duplicate, and the alert is raised now, once.
        for _ in 0..2 {
            let r = send(1).await.unwrap();
            assert_eq!((r.last, r.recorded, r.duplicates), (1, 0, 1));
            assert_eq!(privileged_alerts(&ledger), 1);
        }
        // A new report is recorded, and its alert (the same container) not again.
        let r = send(2).await.unwrap();
        assert_eq!((r.last, r.recorded, r.duplicates), (2, 1, 0));
        assert_eq!(privileged_alerts(&ledger), 1);
    }
}
