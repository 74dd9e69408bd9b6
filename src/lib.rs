//! privledger: a tamper-evident privilege ledger and spawn-time authorizer for Docker
//! on multi-user container platforms (JupyterHub with DockerSpawner and the like).
//!
//! # Layout
//! - [`ledger`]: the domain. Events and their kinds, commands and their validation,
//!   the derived state, the pure policy, correlation rules, and the `Ledger` handle
//!   (single writer with group commit, point in time, streams, verify). Knows
//!   neither tonic, nor sled, nor bollard.
//! - [`ledger::log`]: the log-store interface the ledger owns; [`store`] implements it
//!   on sled (blocks of entries, idempotency buckets, head witness, checkpoint files).
//! - [`docker`]: Docker's formats turned into observations, the watcher behind a
//!   small daemon seam ([`docker::source`]), import; only `docker::daemon` knows bollard.
//! - [`proxy`]: the limited socket, a Docker API proxy per limited user (hyper on
//!   Unix sockets); every mutating call and refusal recorded in the ledger.
//! - [`etcd`]: cluster mode (DESIGN §8): the fenced append to etcd, election,
//!   followers, the archive; the only module that knows etcd's API.
//! - [`agent`]: `privledger watch`, the Docker agent of one host for a remote ledger.
//! - [`private_fs`]: the data directory's files: private modes, no symlink followed.
//! - [`api`]: tonic handlers, request conversion, the one error → status mapping,
//!   and bearer-token authentication.
//! - [`server`]: opens the store, builds the ledger, the gRPC stack and the watcher,
//!   serves until shutdown, drains.
//! - [`config`]: the TOML file, flags and environment, validated before any bind.
//! - [`metrics`]: opt-in Prometheus metrics; [`telemetry`]: logging; [`signal`]:
//!   shutdown signals.
//! - [`cli`]: the command-line client (same binary); [`client`]: the connected
//!   gRPC clients it (and the tests and load generator) use.
//!
//! Dependency direction: `server → {api, docker, proxy, etcd} → ledger → ledger::log`
//! (the trait), implemented by `store` (sled) and, on a cluster node, by [`etcd`]
//! (the shared log in etcd, the node's copy in `store`). Only `server`, `agent` (and
//! tests) name `store`; below `api` only `etcd` knows tonic, as etcd's client; `api`
//! opens a limited user's socket through [`ledger::limited`] without knowing the
//! proxy, and sees a cluster node through [`api::cluster::ClusterView`] without
//! knowing etcd. [`agent`] (`privledger watch`) is an edge like `cli`: it wires
//! `docker::agent`, `store::outbox` and a gRPC client.

#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]

pub mod agent;
pub mod api;
pub mod cli;
pub mod client;
pub mod config;
pub mod docker;
pub mod etcd;
pub mod ledger;
pub mod metrics;
pub mod private_fs;
pub mod proxy;
pub mod recovery;
pub mod safe_text;
pub mod server;
pub mod signal;
pub mod store;
pub mod telemetry;

/// Generated protobuf types and gRPC stubs for `privledger.v1`.
pub mod pb {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("privledger.v1");

    /// Encoded descriptor set, served by gRPC reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("privledger_descriptor");
}
