//! A thin etcd v3 client over tonic: the few calls cluster mode makes (ranges,
//! transactions, watches, leases, the election API, alarms), each failing over from a
//! member that does not answer to the next.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::{Code, Status, Streaming};

use super::pb::etcdserverpb as rpc;
use super::pb::mvccpb::KeyValue;
use super::pb::v3electionpb as election;
use crate::client::{ClientError, ConnectOptions};

use rpc::kv_client::KvClient;
use rpc::lease_client::LeaseClient;
use rpc::maintenance_client::MaintenanceClient;
use rpc::watch_client::WatchClient;

/// How to reach the etcd cluster.
#[derive(Debug, Clone)]
pub struct EtcdOptions {
    /// Client URLs of the members (`http://127.0.0.1:2379`, or `https://` with TLS).
    pub endpoints: Vec<String>,
    /// The CA that signed the members' certificates, and this node's client
    /// certificate and key, for members that require them.
    pub tls: ConnectOptions,
    /// Each unary call to one member must be answered within this.
    pub call_timeout: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    #[error("etcd endpoint: {0}")]
    Endpoint(#[from] ClientError),
    #[error("no etcd endpoint given")]
    NoEndpoints,
    /// No member answered; the last one's reason.
    #[error("etcd did not answer {what}: {last}")]
    Unreachable { what: &'static str, last: String },
    /// A member answered with an error that another member would answer too.
    #[error("etcd refused {what}: {status}")]
    Refused { what: &'static str, status: Status },
    #[error("etcd answered {what} without {missing}")]
    Incomplete {
        what: &'static str,
        missing: &'static str,
    },
}

/// A connection to every member, used one at a time: the last one that answered.
pub struct Etcd {
    members: Vec<(String, Channel)>,
    current: AtomicUsize,
    call_timeout: Duration,
}

/// Errors worth asking another member about: it is down, partitioned, or lost its
/// quorum ("etcdserver: no leader", "request timed out").
fn try_another(s: &Status) -> bool {
    matches!(
        s.code(),
        Code::Unavailable | Code::DeadlineExceeded | Code::Unknown | Code::Cancelled
    ) || s.message().contains("etcdserver: leader changed")
}

/// `key`'s `target` equals `value`: a transaction's condition.
pub fn equal(
    key: Vec<u8>,
    target: rpc::compare::CompareTarget,
    value: rpc::compare::TargetUnion,
) -> rpc::Compare {
    rpc::Compare {
        result: rpc::compare::CompareResult::Equal as i32,
        target: target as i32,
        key,
        range_end: Vec::new(),
        target_union: Some(value),
    }
}

/// A transaction's put.
pub fn put(key: Vec<u8>, value: Vec<u8>) -> rpc::RequestOp {
    rpc::RequestOp {
        request: Some(rpc::request_op::Request::RequestPut(rpc::PutRequest {
            key,
            value,
            ..Default::default()
        })),
    }
}

/// A transaction's read of one key.
pub fn read(key: Vec<u8>) -> rpc::RequestOp {
    rpc::RequestOp {
        request: Some(rpc::request_op::Request::RequestRange(rpc::RangeRequest {
            key,
            ..Default::default()
        })),
    }
}

/// A transaction's removal of the keys in `[key, end)`.
pub fn delete_range(key: Vec<u8>, end: Vec<u8>) -> rpc::RequestOp {
    rpc::RequestOp {
        request: Some(rpc::request_op::Request::RequestDeleteRange(
            rpc::DeleteRangeRequest {
                key,
                range_end: end,
                ..Default::default()
            },
        )),
    }
}

/// The range end that makes a range or a watch cover every key starting with `prefix`.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // All 0xff: to the end of the keyspace.
    vec![0]
}

impl Etcd {
    /// Channels to every member, connected lazily (a member that is down now is
    /// tried again when another fails).
    pub fn connect(opts: &EtcdOptions) -> Result<Etcd, EtcdError> {
        if opts.endpoints.is_empty() {
            return Err(EtcdError::NoEndpoints);
        }
        let members = opts
            .endpoints
            .iter()
            .map(|url| {
                let ep = opts
                    .tls
                    .endpoint(url)?
                    .connect_timeout(opts.call_timeout)
                    .tcp_nodelay(true)
                    .http2_keep_alive_interval(Duration::from_secs(5))
                    .keep_alive_timeout(opts.call_timeout)
                    .keep_alive_while_idle(true);
                Ok((url.clone(), ep.connect_lazy()))
            })
            .collect::<Result<Vec<_>, EtcdError>>()?;
        Ok(Etcd {
            members,
            current: AtomicUsize::new(0),
            call_timeout: opts.call_timeout,
        })
    }

    /// Runs `call` on the member that last answered, then on each other one while
    /// they fail in a way another might not.
    async fn call<T, F, Fut>(&self, what: &'static str, mut call: F) -> Result<T, EtcdError>
    where
        F: FnMut(Channel) -> Fut,
        Fut: std::future::Future<Output = Result<T, Status>>,
    {
        let n = self.members.len();
        let start = self.current.load(Ordering::Relaxed);
        let mut last = String::new();
        for i in 0..n {
            let idx = (start + i) % n;
            let (url, ch) = &self.members[idx];
            match tokio::time::timeout(self.call_timeout, call(ch.clone())).await {
                Ok(Ok(v)) => {
                    self.current.store(idx, Ordering::Relaxed);
                    return Ok(v);
                }
                Ok(Err(s)) if try_another(&s) => last = format!("{url}: {}", s.message()),
                Ok(Err(status)) => return Err(EtcdError::Refused { what, status }),
                Err(_) => last = format!("{url}: no answer within {:?}", self.call_timeout),
            }
        }
        Err(EtcdError::Unreachable { what, last })
    }

    /// The member after the current one: a stream that broke is reopened elsewhere.
    fn next_member(&self) {
        let n = self.members.len();
        let _ = self
            .current
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |c| Some((c + 1) % n));
    }

    fn channel(&self) -> Channel {
        let idx = self.current.load(Ordering::Relaxed) % self.members.len();
        self.members[idx].1.clone()
    }

    /// Keys in `[key, end)` (or just `key` when `end` is empty), at most `limit` (0: no
    /// limit). Linearizable: what any member answers includes every committed write.
    pub async fn range(
        &self,
        key: &[u8],
        end: &[u8],
        limit: i64,
    ) -> Result<rpc::RangeResponse, EtcdError> {
        let req = rpc::RangeRequest {
            key: key.to_vec(),
            range_end: end.to_vec(),
            limit,
            ..Default::default()
        };
        self.call("a range read", |ch| {
            let req = req.clone();
            async move { Ok(KvClient::new(ch).range(req).await?.into_inner()) }
        })
        .await
    }

    /// One key's value and the revision the answer was read at.
    pub async fn get(&self, key: &[u8]) -> Result<(Option<KeyValue>, i64), EtcdError> {
        let r = self.range(key, &[], 1).await?;
        let rev = r.header.map_or(0, |h| h.revision);
        Ok((r.kvs.into_iter().next(), rev))
    }

    /// One transaction. A member that does not answer may still have committed it:
    /// callers make their transactions safe to repeat (compare on what they change).
    pub async fn txn(&self, req: rpc::TxnRequest) -> Result<rpc::TxnResponse, EtcdError> {
        self.call("a transaction", |ch| {
            let req = req.clone();
            async move { Ok(KvClient::new(ch).txn(req).await?.into_inner()) }
        })
        .await
    }

    /// Discards the history before `revision` (watches from before it are cancelled
    /// with `compact_revision`; the keys themselves stay).
    pub async fn compact(&self, revision: i64) -> Result<(), EtcdError> {
        self.call("a compaction", |ch| async move {
            KvClient::new(ch)
                .compact(rpc::CompactionRequest {
                    revision,
                    physical: true,
                })
                .await?;
            Ok(())
        })
        .await
    }

    /// A lease of `ttl` seconds; returns its id and the TTL etcd granted.
    pub async fn lease_grant(&self, ttl: i64) -> Result<(i64, i64), EtcdError> {
        let r = self
            .call("a lease grant", |ch| async move {
                Ok(LeaseClient::new(ch)
                    .lease_grant(rpc::LeaseGrantRequest { ttl, id: 0 })
                    .await?
                    .into_inner())
            })
            .await?;
        Ok((r.id, r.ttl))
    }

    /// Renews the lease once; returns the TTL left (0: the lease is gone).
    pub async fn lease_keep_alive(&self, id: i64) -> Result<i64, EtcdError> {
        self.call("a lease renewal", |ch| async move {
            let (tx, rx) = mpsc::channel(1);
            let _ = tx.send(rpc::LeaseKeepAliveRequest { id }).await;
            let mut answers = LeaseClient::new(ch)
                .lease_keep_alive(ReceiverStream::new(rx))
                .await?
                .into_inner();
            let first = answers.message().await?;
            drop(tx);
            Ok(first.map_or(0, |r| r.ttl))
        })
        .await
    }

    pub async fn lease_revoke(&self, id: i64) -> Result<(), EtcdError> {
        self.call("a lease revocation", |ch| async move {
            LeaseClient::new(ch)
                .lease_revoke(rpc::LeaseRevokeRequest { id })
                .await?;
            Ok(())
        })
        .await
    }

    /// Waits until this lease's candidacy for `name` is the oldest, i.e. elected; the
    /// answer names the election key and its create revision (the fencing token).
    /// Not bounded by the call timeout: it waits for the current leader to go.
    pub async fn campaign(
        &self,
        name: &[u8],
        lease: i64,
        value: Vec<u8>,
    ) -> Result<election::LeaderKey, EtcdError> {
        let req = election::CampaignRequest {
            name: name.to_vec(),
            lease,
            value,
        };
        let r = election::election_client::ElectionClient::new(self.channel())
            .campaign(req)
            .await;
        match r {
            Ok(r) => r.into_inner().leader.ok_or(EtcdError::Incomplete {
                what: "a campaign",
                missing: "the leader key",
            }),
            Err(s) => {
                self.next_member();
                Err(EtcdError::Unreachable {
                    what: "a campaign",
                    last: s.message().to_string(),
                })
            }
        }
    }

    /// The current leader's key and value for `name`, if any.
    pub async fn leader(&self, name: &[u8]) -> Result<Option<KeyValue>, EtcdError> {
        let req = election::LeaderRequest {
            name: name.to_vec(),
        };
        let r = self
            .call("a leader lookup", |ch| {
                let req = req.clone();
                async move {
                    match election::election_client::ElectionClient::new(ch)
                        .leader(req)
                        .await
                    {
                        Ok(r) => Ok(r.into_inner().kv),
                        // etcd's way of saying nobody is elected (not "etcdserver: no
                        // leader", a member without quorum: another member may answer).
                        Err(s) if s.message().contains("election: no leader") => Ok(None),
                        Err(s) => Err(s),
                    }
                }
            })
            .await?;
        Ok(r)
    }

    pub async fn resign(&self, leader: election::LeaderKey) -> Result<(), EtcdError> {
        self.call("a resignation", |ch| {
            let leader = leader.clone();
            async move {
                election::election_client::ElectionClient::new(ch)
                    .resign(election::ResignRequest {
                        leader: Some(leader),
                    })
                    .await?;
                Ok(())
            }
        })
        .await
    }

    /// Watches `[key, end)` from `start_revision`. The stream ends (or reports
    /// `compact_revision`) when the member goes or the revision was compacted; the
    /// caller reads what it missed by ranges and watches again.
    pub async fn watch(
        &self,
        key: &[u8],
        end: &[u8],
        start_revision: i64,
    ) -> Result<Watch, EtcdError> {
        let create = rpc::WatchRequest {
            request_union: Some(rpc::watch_request::RequestUnion::CreateRequest(
                rpc::WatchCreateRequest {
                    key: key.to_vec(),
                    range_end: end.to_vec(),
                    start_revision,
                    // Progress reports keep a quiet watch's revision (and this
                    // node's contact with etcd) fresh.
                    progress_notify: true,
                    ..Default::default()
                },
            )),
        };
        let (tx, rx) = mpsc::channel(1);
        let _ = tx.send(create).await;
        let ch = self.channel();
        let mut req = tonic::Request::new(ReceiverStream::new(rx));
        // etcd's "require leader": a member that loses its leader (cut off from the
        // others) ends the watch instead of holding it open with nothing to say.
        req.metadata_mut().insert(
            "hasleader",
            tonic::metadata::MetadataValue::from_static("true"),
        );
        let opened = tokio::time::timeout(self.call_timeout, WatchClient::new(ch).watch(req)).await;
        match opened {
            Ok(Ok(r)) => Ok(Watch {
                events: r.into_inner(),
                _requests: tx,
            }),
            Ok(Err(s)) => {
                self.next_member();
                Err(EtcdError::Unreachable {
                    what: "a watch",
                    last: s.message().to_string(),
                })
            }
            Err(_) => {
                self.next_member();
                Err(EtcdError::Unreachable {
                    what: "a watch",
                    last: "no answer".into(),
                })
            }
        }
    }

    /// After a watch broke: the next one opens on another member.
    pub fn watch_broke(&self) {
        self.next_member();
    }

    /// The alarms raised in the cluster (NOSPACE when the quota is full).
    pub async fn alarms(&self) -> Result<Vec<rpc::AlarmType>, EtcdError> {
        let r = self
            .call("an alarm list", |ch| async move {
                Ok(MaintenanceClient::new(ch)
                    .alarm(rpc::AlarmRequest {
                        action: rpc::alarm_request::AlarmAction::Get as i32,
                        member_id: 0,
                        alarm: rpc::AlarmType::None as i32,
                    })
                    .await?
                    .into_inner())
            })
            .await?;
        Ok(r.alarms
            .iter()
            .filter_map(|a| rpc::AlarmType::try_from(a.alarm).ok())
            .filter(|a| *a != rpc::AlarmType::None)
            .collect())
    }
}

/// An open watch: its events, and the request side, held open (closing it would
/// end the watch).
pub struct Watch {
    pub events: Streaming<rpc::WatchResponse>,
    _requests: mpsc::Sender<rpc::WatchRequest>,
}

#[cfg(test)]
mod tests {
    use super::prefix_end;

    #[test]
    fn a_prefix_end_covers_every_key_with_the_prefix_and_no_other() {
        assert_eq!(prefix_end(b"/a/log/"), b"/a/log0".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"\xff\xff"), vec![0]);
    }
}
