//! [`DockerSource`] on a real daemon, through bollard: the only file that knows it.

use std::collections::HashMap;

use bollard::models::{ContainerInspectResponse, EventMessage};
use bollard::query_parameters::{
    EventsOptions, InspectContainerOptions, ListContainersOptions, StopContainerOptions,
};
use bollard::{Docker, API_DEFAULT_VERSION};
use futures_util::StreamExt;
use tracing::debug;

use super::events::RawEvent;
use super::observe::ContainerFacts;
use super::source::{DockerSource, EventStream};
use super::Error;
use crate::ledger::event::UnixNanos;

/// A connected daemon.
pub struct Daemon {
    docker: Docker,
}

impl Daemon {
    /// Connects to `unix:///path`, `/path` or `tcp://host:port`, agreeing on the
    /// daemon's API version.
    pub async fn connect(endpoint: &str) -> Result<Daemon, Error> {
        let docker = if let Some(path) = endpoint.strip_prefix("unix://") {
            Docker::connect_with_unix(path, 120, API_DEFAULT_VERSION)?
        } else if endpoint.starts_with('/') {
            Docker::connect_with_unix(endpoint, 120, API_DEFAULT_VERSION)?
        } else {
            Docker::connect_with_http(endpoint, 120, API_DEFAULT_VERSION)?
        };
        // bollard speaks its newest API by default; the daemon may be older (this
        // machine's speaks 1.41), so agree on the daemon's version.
        Ok(Daemon {
            docker: docker.negotiate_version().await?,
        })
    }
}

impl DockerSource for Daemon {
    fn api_version(&self) -> String {
        self.docker.client_version().to_string()
    }

    fn events(&self, since: UnixNanos, until: Option<UnixNanos>) -> EventStream<'_> {
        let options = EventsOptions {
            since: Some(since_arg(since)),
            until: until.map(since_arg),
            filters: Some(HashMap::from([(
                "type".to_string(),
                vec!["container".to_string()],
            )])),
        };
        Box::pin(
            self.docker
                .events(Some(options))
                .filter_map(|m| async move {
                    match m {
                        Ok(m) => raw_event(m).map(Ok),
                        Err(e) => Some(Err(Error::Docker(e))),
                    }
                }),
        )
    }

    async fn inspect(&self, id: &str) -> Option<ContainerFacts> {
        match self
            .docker
            .inspect_container(id, None::<InspectContainerOptions>)
            .await
        {
            Ok(i) => Some(facts(i)),
            Err(e) => {
                debug!(container = id, error = %e, "inspect failed; using event attributes");
                None
            }
        }
    }

    async fn list(&self) -> Result<Vec<String>, Error> {
        let list = self
            .docker
            .list_containers(Some(ListContainersOptions {
                all: true,
                ..Default::default()
            }))
            .await?;
        Ok(list.into_iter().filter_map(|c| c.id).collect())
    }

    async fn stop(&self, id: &str) -> Result<(), String> {
        self.docker
            .stop_container(
                id,
                Some(StopContainerOptions {
                    t: Some(10),
                    signal: None,
                }),
            )
            .await
            .map_err(|e| e.to_string())
    }
}

/// Docker's `since`/`until`: seconds with a nanosecond fraction.
fn since_arg(ns: i64) -> String {
    format!(
        "{}.{:09}",
        ns.div_euclid(1_000_000_000),
        ns.rem_euclid(1_000_000_000)
    )
}

fn raw_event(m: EventMessage) -> Option<RawEvent> {
    let actor = m.actor?;
    Some(RawEvent {
        typ: m.typ.map(|t| t.to_string()).unwrap_or_default(),
        action: m.action?,
        id: actor.id?,
        time_nano: m
            .time_nano
            .or(m.time.map(|t| t.saturating_mul(1_000_000_000)))?,
        attributes: actor.attributes.unwrap_or_default().into_iter().collect(),
    })
}

fn facts(i: ContainerInspectResponse) -> ContainerFacts {
    let config = i.config.unwrap_or_default();
    ContainerFacts {
        id: i.id.unwrap_or_default(),
        name: i
            .name
            .unwrap_or_default()
            .trim_start_matches('/')
            .to_string(),
        image: config.image.unwrap_or_default(),
        labels: config.labels.unwrap_or_default().into_iter().collect(),
        mounts: i
            .mounts
            .unwrap_or_default()
            .into_iter()
            // Only binds reach a host path: a tmpfs or volume has none.
            .filter(|m| m.typ.as_deref().is_none_or(|t| t.is_empty() || t == "bind"))
            .map(|m| {
                (
                    m.source.unwrap_or_default(),
                    m.destination.unwrap_or_default(),
                    m.rw.unwrap_or(true),
                )
            })
            .collect(),
        privileged: i.host_config.and_then(|h| h.privileged).unwrap_or(false),
        running: i.state.and_then(|s| s.running).unwrap_or(false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_argument_has_nanoseconds() {
        assert_eq!(since_arg(1_795_460_649_405_692_940), "1795460649.405692940");
        assert_eq!(since_arg(5), "0.000000005");
    }
}
