//! `RecordHostEvents`: an agent's reports as the wire carries them, turned into
//! [`HostReport`]s, and the rule that a watcher token reports for its own host only.

use crate::docker::observe::ContainerFacts;
use crate::docker::remote::{HostItem, HostReport};
use crate::docker::RawEvent;
use crate::pb;

use super::error::RequestError;

/// Most reports one request carries (an agent sends its outbox in pieces).
pub const MAX_REPORTS: usize = 1024;

/// A daemon event as the wire carries it.
pub fn raw_event(e: pb::DockerEvent) -> Result<RawEvent, RequestError> {
    if e.id.is_empty() || e.action.is_empty() {
        return Err(RequestError::Missing("every event's id and action"));
    }
    Ok(RawEvent {
        typ: e.r#type,
        action: e.action,
        id: e.id,
        time_nano: e.time_nano,
        attributes: e.attributes.into_iter().collect(),
    })
}

fn facts(f: pb::ContainerFacts) -> Result<ContainerFacts, RequestError> {
    if f.id.is_empty() {
        return Err(RequestError::Missing("the container id of every inspect"));
    }
    Ok(ContainerFacts {
        id: f.id,
        name: f.name,
        image: f.image,
        labels: f.labels.into_iter().collect(),
        mounts: f
            .mounts
            .into_iter()
            .map(|m| (m.source, m.destination, m.rw))
            .collect(),
        privileged: f.privileged,
        running: f.running,
    })
}

/// The reports of a request, in order; numbers must rise by one.
pub fn reports(events: Vec<pb::HostEvent>) -> Result<Vec<HostReport>, RequestError> {
    if events.len() > MAX_REPORTS {
        return Err(RequestError::TooMany {
            what: "reports",
            max: MAX_REPORTS,
        });
    }
    let mut out: Vec<HostReport> = Vec::with_capacity(events.len());
    for e in events {
        if e.number == 0 {
            return Err(RequestError::Missing("every report's number (from 1)"));
        }
        if let Some(prev) = out.last() {
            if prev.number.checked_add(1) != Some(e.number) {
                return Err(RequestError::Invalid(format!(
                    "report numbers must rise by one within a request ({} after {})",
                    e.number, prev.number
                )));
            }
        }
        let item = match e.what {
            Some(pb::host_event::What::Event(ev)) => HostItem::Event {
                event: raw_event(ev)?,
                facts: e.facts.map(facts).transpose()?,
            },
            Some(pb::host_event::What::Reconciled(f)) => HostItem::Reconciled(facts(f)?),
            Some(pb::host_event::What::Gap(g)) => HostItem::Gap {
                from_ns: g.from_unix_nanos,
                to_ns: g.to_unix_nanos,
                details: g.details,
            },
            None => return Err(RequestError::Missing("what every report saw")),
        };
        out.push(HostReport {
            number: e.number,
            item,
        });
    }
    Ok(out)
}

/// The wire form of a report (the agent's side).
pub fn to_wire(r: &HostReport) -> pb::HostEvent {
    let wire_facts = |f: &ContainerFacts| pb::ContainerFacts {
        id: f.id.clone(),
        name: f.name.clone(),
        image: f.image.clone(),
        labels: f.labels.clone().into_iter().collect(),
        mounts: f
            .mounts
            .iter()
            .map(|(s, d, rw)| pb::Mount {
                source: s.clone(),
                destination: d.clone(),
                rw: *rw,
            })
            .collect(),
        privileged: f.privileged,
        running: f.running,
    };
    let (what, facts) = match &r.item {
        HostItem::Event { event, facts } => (
            pb::host_event::What::Event(pb::DockerEvent {
                r#type: event.typ.clone(),
                action: event.action.clone(),
                id: event.id.clone(),
                time_nano: event.time_nano,
                attributes: event.attributes.clone().into_iter().collect(),
            }),
            facts.as_ref().map(wire_facts),
        ),
        HostItem::Reconciled(f) => (pb::host_event::What::Reconciled(wire_facts(f)), None),
        HostItem::Gap {
            from_ns,
            to_ns,
            details,
        } => (
            pb::host_event::What::Gap(pb::EventGap {
                from_unix_nanos: *from_ns,
                to_unix_nanos: *to_ns,
                details: details.clone(),
            }),
            None,
        ),
    };
    pb::HostEvent {
        number: r.number,
        what: Some(what),
        facts,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(n: u64) -> pb::HostEvent {
        pb::HostEvent {
            number: n,
            what: Some(pb::host_event::What::Event(pb::DockerEvent {
                r#type: "container".into(),
                action: "start".into(),
                id: "abc".into(),
                time_nano: 1,
                attributes: Default::default(),
            })),
            facts: None,
        }
    }

    #[test]
    fn reports_round_trip_and_bad_ones_are_refused() {
        let r = reports(vec![ev(3), ev(4)]).unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!(to_wire(&r[1]), ev(4));
        for bad in [
            vec![ev(0)],
            vec![ev(3), ev(5)],
            vec![ev(3), ev(3)],
            vec![ev(u64::MAX), ev(0)],
            vec![ev(u64::MAX), ev(1)],
            vec![pb::HostEvent {
                what: None,
                ..ev(1)
            }],
        ] {
            assert!(reports(bad.clone()).is_err(), "{bad:?}");
        }
        assert!(reports((1..=MAX_REPORTS as u64 + 1).map(ev).collect()).is_err());
    }
}
