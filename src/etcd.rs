//! Cluster mode on etcd (DESIGN §8): the only module that knows etcd's API.
//!
//! Every node keeps the whole chain in its own store and its state in memory; etcd
//! holds the shared log and decides who writes:
//! - [`client`]: a thin etcd v3 client over tonic (etcd's protos are vendored and
//!   compiled with protox, so no system `protoc` is needed), failing over between
//!   members.
//! - [`keys`]: the key layout and the values stored under it.
//! - [`store`]: the [`LogStore`](crate::ledger::log::LogStore) of a cluster node: an
//!   append is one etcd transaction fenced on the writer's election key and the head,
//!   then the node's own copy; reads are local.
//! - [`node`]: the election (on a lease), following the log (watch, verify, apply,
//!   catch up by ranges), the heartbeat that bounds how stale a node may answer.
//! - [`archive`]: sealing the oldest batches out of etcd into anchored segment files,
//!   and catching a node up from them.

pub mod archive;
pub mod client;
pub mod keys;
pub mod node;
pub mod store;

pub use client::{Etcd, EtcdError, EtcdOptions};
pub use node::{Cluster, ClusterConfig, Role};
pub use store::ClusterStore;

/// etcd's generated API (client stubs only), in the packages its protos name.
#[allow(clippy::all, missing_docs, rust_2018_idioms)]
pub mod pb {
    pub mod mvccpb {
        tonic::include_proto!("mvccpb");
    }
    pub mod authpb {
        tonic::include_proto!("authpb");
    }
    pub mod etcdserverpb {
        tonic::include_proto!("etcdserverpb");
    }
    pub mod v3electionpb {
        tonic::include_proto!("v3electionpb");
    }
}
