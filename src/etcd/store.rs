//! The log store of a cluster node: an append is one etcd transaction, fenced on the
//! writer's election key and on the head, that puts the write-once batch key and the
//! new head; only once it commits does the batch go to this node's own copy (sled),
//! which every read is served from.

use std::sync::Arc;

use prost::Message;
use tokio::sync::watch;
use tracing::warn;

use super::client::{equal, put, read, Etcd};
use super::keys::{Batch, Head, Keys};
use super::node::Role;
use super::pb::etcdserverpb as rpc;
use crate::ledger::event::Seq;
use crate::ledger::log::{
    AppendBatch, LogStore, RawEntry, StoreError, StoreResult, StoredCheckpoint, Witness,
};

pub struct ClusterStore {
    local: Arc<dyn LogStore>,
    etcd: Arc<Etcd>,
    keys: Keys,
    node_id: String,
    roles: Arc<watch::Sender<Role>>,
    /// The writer thread is no runtime thread: it waits for etcd on this runtime.
    rt: tokio::runtime::Handle,
}

impl ClusterStore {
    pub(super) fn new(
        local: Arc<dyn LogStore>,
        etcd: Arc<Etcd>,
        keys: Keys,
        node_id: String,
        roles: Arc<watch::Sender<Role>>,
        rt: tokio::runtime::Handle,
    ) -> ClusterStore {
        ClusterStore {
            local,
            etcd,
            keys,
            node_id,
            roles,
            rt,
        }
    }

    /// Gives up the writer's role (the election loop resigns and campaigns again once
    /// this node has caught up with whatever the cluster's log holds).
    fn step_down(&self, reason: &str) {
        warn!(reason, "no longer the cluster's writer");
        self.roles.send_if_modified(|r| {
            let was = matches!(r, Role::Writer { .. });
            if was {
                *r = Role::Follower { writer: None };
            }
            was
        });
    }

    fn not_writer(reason: impl Into<String>) -> StoreError {
        StoreError::NotWriter {
            reason: reason.into(),
        }
    }

    /// The transaction that appends `batch`: it commits only while `election_key`
    /// still exists with the create revision this node won with (the lease is alive
    /// and was never lost), the head is the one the batch extends, and the batch key
    /// was never written.
    fn transaction(
        &self,
        batch: &AppendBatch<'_>,
        election_key: &[u8],
        rev: i64,
    ) -> rpc::TxnRequest {
        use rpc::compare::{CompareTarget, TargetUnion};
        let head_key = self.keys.head();
        let batch_key = self.keys.batch(batch.prev.seq + 1);
        let head_is_prev = if batch.prev.seq == 0 {
            equal(
                head_key.clone(),
                CompareTarget::Version,
                TargetUnion::Version(0),
            )
        } else {
            equal(
                head_key.clone(),
                CompareTarget::Value,
                TargetUnion::Value(Head::of(batch.prev).encode_to_vec()),
            )
        };
        let last = batch.entries.last().map_or(batch.prev, |e| Witness {
            seq: e.seq,
            hash: e.hash,
        });
        let record = Batch::new(batch.prev, batch.entries, batch.idempotency, &self.node_id);
        rpc::TxnRequest {
            compare: vec![
                equal(
                    election_key.to_vec(),
                    CompareTarget::Create,
                    TargetUnion::CreateRevision(rev),
                ),
                head_is_prev,
                equal(
                    batch_key.clone(),
                    CompareTarget::Version,
                    TargetUnion::Version(0),
                ),
            ],
            success: vec![
                put(batch_key, record.encode_to_vec()),
                put(head_key.clone(), Head::of(last).encode_to_vec()),
            ],
            failure: vec![read(head_key)],
        }
    }
}

impl LogStore for ClusterStore {
    fn append(&self, batch: AppendBatch<'_>) -> StoreResult<()> {
        // Metadata alone (a cursor) is this node's own.
        let Some(last) = batch.entries.last() else {
            return self.local.append(batch);
        };
        let (key, rev) = match &*self.roles.borrow() {
            Role::Writer { key, rev, .. } => (key.clone(), *rev),
            Role::Follower { writer } => {
                return Err(Self::not_writer(match writer {
                    Some(w) => format!("the writer is node {} at {}", w.node_id, w.url),
                    None => "no writer is elected yet".into(),
                }))
            }
        };
        let txn = self.transaction(&batch, &key, rev);
        let new_head = Head::of(Witness {
            seq: last.seq,
            hash: last.hash,
        })
        .encode_to_vec();
        match self.rt.block_on(self.etcd.txn(txn)) {
            Ok(r) if r.succeeded => {}
            Ok(r) => {
                // A member that timed out may have committed this very transaction
                // before another was asked: then the head is exactly this batch's.
                let found = r.responses.into_iter().find_map(|op| match op.response {
                    Some(rpc::response_op::Response::ResponseRange(rr)) => {
                        rr.kvs.into_iter().next().map(|kv| kv.value)
                    }
                    _ => None,
                });
                if found.as_deref() != Some(new_head.as_slice()) {
                    let reason = "fenced: the writer's lease is gone or the cluster's head moved";
                    self.step_down(reason);
                    return Err(Self::not_writer(reason));
                }
            }
            Err(e) => {
                // The outcome is unknown: whoever writes next reads the head first.
                let reason = format!("etcd did not confirm the batch ({e})");
                self.step_down(&reason);
                return Err(StoreError::Unconfirmed {
                    reason,
                    local_failed: false,
                });
            }
        }
        self.local.append(batch).map_err(|e| {
            // Recorded in the cluster's log; this node gets it back by following it.
            let reason = format!("the batch is in etcd but not in this node's store: {e}");
            self.step_down(&reason);
            StoreError::Unconfirmed {
                reason,
                local_failed: true,
            }
        })
    }

    fn store_replicated(&self, batch: AppendBatch<'_>) -> StoreResult<()> {
        self.local.append(batch)
    }

    fn recover(&self, head: Witness) -> StoreResult<()> {
        self.local.recover(head)
    }

    fn get(&self, seq: Seq) -> StoreResult<Option<RawEntry>> {
        self.local.get(seq)
    }

    fn range(&self, from: Seq, to: Seq, limit: usize) -> StoreResult<Vec<RawEntry>> {
        self.local.range(from, to, limit)
    }

    fn last(&self) -> StoreResult<Option<RawEntry>> {
        self.local.last()
    }

    fn earliest(&self) -> StoreResult<Option<Seq>> {
        self.local.earliest()
    }

    fn witness(&self) -> StoreResult<Option<Witness>> {
        self.local.witness()
    }

    fn idempotency_get(&self, key: &[u8]) -> StoreResult<Option<Seq>> {
        self.local.idempotency_get(key)
    }

    fn meta_get(&self, key: &str) -> StoreResult<Option<Vec<u8>>> {
        self.local.meta_get(key)
    }

    fn put_checkpoint(&self, seq: Seq, bytes: &[u8]) -> StoreResult<()> {
        self.local.put_checkpoint(seq, bytes)
    }

    fn prune_checkpoints(&self, newest: usize, window: u64) -> StoreResult<()> {
        self.local.prune_checkpoints(newest, window)
    }

    fn checkpoint_seqs(&self) -> StoreResult<Vec<Seq>> {
        self.local.checkpoint_seqs()
    }

    fn open_checkpoint(&self, seq: Seq) -> StoreResult<StoredCheckpoint> {
        self.local.open_checkpoint(seq)
    }

    fn read_only(&self) -> bool {
        self.local.read_only()
    }
}
