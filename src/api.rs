//! gRPC handlers for `privledger.v1` (Admin, Authorizer, Audit): check the caller's
//! role, convert the request, call the ledger, convert the answer. No logic of their
//! own beyond that.

pub mod admission;
pub mod auth;
pub mod cluster;
pub mod convert;
pub mod error;
pub mod host_reports;
pub mod layers;
pub mod status;
pub mod streams;

#[cfg(test)]
mod fuzz_tests;

use std::pin::Pin;

use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};
use tracing::instrument;

use crate::docker::{ObserveConfig, RawEvent};
use crate::ledger::event::{Event, SocketAccess, Subject};
use crate::ledger::limited::LimitedSockets;
use crate::ledger::{hash_secret, Command, Committed, Error, Ledger, StreamFilter};
use crate::pb;
use auth::{require, ADMIN, CHECKERS, GROUP_READERS, MEMBERS, READERS, SPAWNERS, WATCHERS};
use convert as cv;
use error::RequestError;

/// Chunks (of up to 1024 entries) buffered per audit stream before the producer waits
/// for the consumer: with the chunk being encoded and the HTTP/2 send buffer, what a
/// consumer that stops reading holds on the server.
const STREAM_BUFFER: usize = 1;

/// Limits on what clients may hold open.
#[derive(Debug, Clone, Copy)]
pub struct ApiLimits {
    pub streams: streams::StreamLimits,
    /// A stream whose consumer takes nothing for this long is ended.
    pub stream_stall: Option<std::time::Duration>,
}

impl From<&crate::config::net::Limits> for ApiLimits {
    fn from(l: &crate::config::net::Limits) -> Self {
        ApiLimits {
            streams: streams::StreamLimits {
                per_token: l.streams_per_token,
                total: l.max_streams,
            },
            stream_stall: Some(l.stream_stall_timeout),
        }
    }
}

/// The three services over one ledger.
#[derive(Clone)]
pub struct Api {
    ledger: Ledger,
    /// How imported Docker events are judged.
    observe: std::sync::Arc<ObserveConfig>,
    /// Opens a limited user's socket before their decision is answered.
    sockets: Option<std::sync::Arc<dyn LimitedSockets>>,
    streams: streams::Streams,
    stream_stall: Option<std::time::Duration>,
    /// Cluster mode: this node's role and the writer.
    cluster: Option<std::sync::Arc<dyn cluster::ClusterView>>,
}

/// How long CheckAccess waits for this node to reach a `min_seq` before asking the
/// writer: a follower applies a batch within milliseconds of its commit.
const MIN_SEQ_WAIT: std::time::Duration = std::time::Duration::from_millis(500);

impl Api {
    pub fn new(ledger: Ledger, observe: ObserveConfig) -> Self {
        let defaults = ApiLimits::from(&crate::config::net::Limits::default());
        Api {
            ledger,
            observe: std::sync::Arc::new(observe),
            sockets: None,
            streams: streams::Streams::new(defaults.streams),
            stream_stall: defaults.stream_stall,
            cluster: None,
        }
    }

    pub fn with_cluster(mut self, view: std::sync::Arc<dyn cluster::ClusterView>) -> Self {
        self.cluster = Some(view);
        self
    }

    /// Refuses an answer about current access from a node out of touch with the
    /// cluster for longer than its bound: fail closed, and say why.
    fn fresh_enough(&self) -> Result<(), Status> {
        // A single node has nothing to be behind: no cost on its CheckAccess.
        let Some(c) = self.cluster.as_ref() else {
            return Ok(());
        };
        match c.stale(self.ledger.snapshot().seq) {
            Some(why) => Err(Status::unavailable(why)),
            None => Ok(()),
        }
    }

    /// CheckAccess answered by the writer, for a caller that needs a seq this node
    /// has not applied yet. The caller's token goes along: the writer authenticates it.
    async fn ask_writer_check_access(
        &self,
        req: Request<pb::CheckAccessRequest>,
    ) -> Result<Response<pb::Access>, Status> {
        let head = *self.ledger.watch_head().borrow();
        let beyond = || -> Status {
            Error::BeyondHead {
                seq: req.get_ref().min_seq,
                head,
            }
            .into()
        };
        let Some(c) = self.cluster.as_ref() else {
            return Err(beyond());
        };
        if c.is_writer() || req.metadata().get(cluster::FORWARDED_BY).is_some() {
            return Err(beyond());
        }
        let ch = c.writer_channel().map_err(Status::unavailable)?;
        let mut ask = Request::new(req.get_ref().clone());
        if let Some(a) = req.metadata().get("authorization") {
            ask.metadata_mut().insert("authorization", a.clone());
        }
        if let Ok(me) = c.node_id().parse() {
            ask.metadata_mut().insert(cluster::FORWARDED_BY, me);
        }
        pb::authorizer_client::AuthorizerClient::new(ch)
            .check_access(ask)
            .await
    }

    /// Waits (briefly) until this node has applied `min_seq`; false if it has not.
    async fn reached(&self, min_seq: u64) -> Result<bool, Status> {
        let mut head = self.ledger.watch_head();
        if *head.borrow() >= min_seq {
            return Ok(true);
        }
        if self.cluster.is_none() {
            return Err(Error::BeyondHead {
                seq: min_seq,
                head: *head.borrow(),
            }
            .into());
        }
        let waited = tokio::time::timeout(MIN_SEQ_WAIT, head.wait_for(|h| *h >= min_seq)).await;
        Ok(matches!(waited, Ok(Ok(_))))
    }

    pub fn with_limits(mut self, limits: ApiLimits) -> Self {
        self.streams = streams::Streams::new(limits.streams);
        self.stream_stall = limits.stream_stall;
        self
    }

    pub fn with_limited_sockets(mut self, s: std::sync::Arc<dyn LimitedSockets>) -> Self {
        self.sockets = Some(s);
        self
    }

    async fn submit(
        &self,
        caller: &auth::Caller,
        request_id: String,
        cmd: Command,
    ) -> Result<Committed, Status> {
        Ok(self
            .ledger
            .submit_from(
                &caller.name,
                caller.cert.as_deref(),
                cv::request_id(request_id),
                cmd,
            )
            .await?)
    }
}

/// The command of a member change by the group sync (`None` for an admin, whose
/// changes carry no reason). A sync changes one member at a time and says why.
fn sync_member(
    caller: &auth::Caller,
    r: &pb::MemberRequest,
    add: bool,
) -> Result<Option<Command>, RequestError> {
    if caller.role != crate::ledger::event::Role::Sync {
        return Ok(None);
    }
    if !r.users.is_empty() {
        return Err(RequestError::Refused(
            "the group sync changes one member at a time",
        ));
    }
    Ok(Some(Command::SyncMember {
        group: r.group.clone(),
        user: r.user.clone(),
        add,
        reason: r.reason.clone(),
    }))
}

/// A request's `reason`: none when empty (proto3 cannot tell unset from empty).
fn reason_of(r: String) -> Option<String> {
    (!r.is_empty()).then_some(r)
}

fn receipt(c: &Committed) -> pb::MutationReceipt {
    receipt_of(c, 1)
}

/// The receipt of a mutation that appended `entries` consecutive entries.
fn receipt_of(c: &Committed, entries: usize) -> pb::MutationReceipt {
    pb::MutationReceipt {
        seq: c.entry.seq,
        replayed: c.replayed,
        first_seq: c.entry.seq.saturating_sub(entries.saturating_sub(1) as u64),
    }
}

// === impl Admin ===

#[tonic::async_trait]
impl pb::admin_server::Admin for Api {
    #[instrument(skip_all)]
    async fn create_group(
        &self,
        req: Request<pb::CreateGroupRequest>,
    ) -> Result<Response<pb::Group>, Status> {
        let caller = require(&req, ADMIN, "CreateGroup")?;
        let r = req.into_inner();
        let c = self
            .submit(
                &caller,
                r.request_id,
                Command::CreateGroup {
                    group: r.name.clone(),
                },
            )
            .await?;
        let name = match &c.entry.event {
            Event::GroupCreated { group } => group.clone(),
            _ => r.name,
        };
        Ok(Response::new(cv::pb_group(
            &c.state,
            &name,
            c.entry.seq,
            c.replayed,
        )))
    }

    #[instrument(skip_all)]
    async fn delete_group(
        &self,
        req: Request<pb::DeleteGroupRequest>,
    ) -> Result<Response<pb::MutationReceipt>, Status> {
        let caller = require(&req, ADMIN, "DeleteGroup")?;
        let r = req.into_inner();
        let c = self
            .submit(
                &caller,
                r.request_id,
                Command::DeleteGroup {
                    group: r.name,
                    reason: reason_of(r.reason),
                },
            )
            .await?;
        Ok(Response::new(receipt(&c)))
    }

    #[instrument(skip_all)]
    async fn list_groups(
        &self,
        req: Request<pb::ListGroupsRequest>,
    ) -> Result<Response<pb::ListGroupsResponse>, Status> {
        require(&req, GROUP_READERS, "ListGroups")?;
        let st = self.ledger.snapshot();
        let mut groups: Vec<pb::GroupSummary> = st
            .groups()
            .map(|(name, g)| pb::GroupSummary {
                name: name.to_string(),
                builtin: g.builtin,
                member_count: g.members.len() as u32,
                active_grant_count: st.open_grants_of(&Subject::Group(name.to_string())).count()
                    as u32,
                created_seq: g.created_seq,
                synced: g.synced,
            })
            .collect();
        groups.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(Response::new(pb::ListGroupsResponse {
            groups,
            seq: st.seq,
        }))
    }

    #[instrument(skip_all)]
    async fn get_group(
        &self,
        req: Request<pb::GetGroupRequest>,
    ) -> Result<Response<pb::Group>, Status> {
        require(&req, GROUP_READERS, "GetGroup")?;
        let name = req.into_inner().name;
        crate::ledger::names::group(&name)?;
        let st = self.ledger.snapshot();
        let g = st
            .group(&name)
            .ok_or_else(|| Error::NoSuchGroup(name.clone()))?;
        Ok(Response::new(cv::pb_group(
            &st,
            &name,
            g.created_seq,
            false,
        )))
    }

    #[instrument(skip_all)]
    async fn add_member(
        &self,
        req: Request<pb::MemberRequest>,
    ) -> Result<Response<pb::MutationReceipt>, Status> {
        let caller = require(&req, MEMBERS, "AddMember")?;
        let r = req.into_inner();
        if let Some(cmd) = sync_member(&caller, &r, true)? {
            let c = self.submit(&caller, r.request_id, cmd).await?;
            return Ok(Response::new(receipt(&c)));
        }
        let mut users = r.users;
        if !r.user.is_empty() || users.is_empty() {
            users.insert(0, r.user);
        }
        let n = users.len();
        let reason = reason_of(r.reason);
        let cmd = if n == 1 {
            Command::AddMember {
                group: r.group,
                user: users.remove(0),
                reason,
            }
        } else {
            Command::AddMembers {
                group: r.group,
                users,
                reason,
            }
        };
        let c = self.submit(&caller, r.request_id, cmd).await?;
        Ok(Response::new(receipt_of(&c, n)))
    }

    #[instrument(skip_all)]
    async fn remove_member(
        &self,
        req: Request<pb::MemberRequest>,
    ) -> Result<Response<pb::MutationReceipt>, Status> {
        let caller = require(&req, MEMBERS, "RemoveMember")?;
        let r = req.into_inner();
        if let Some(cmd) = sync_member(&caller, &r, false)? {
            let c = self.submit(&caller, r.request_id, cmd).await?;
            return Ok(Response::new(receipt(&c)));
        }
        if !r.users.is_empty() {
            return Err(RequestError::OneAtATime("RemoveMember removes one user (`user`)").into());
        }
        let c = self
            .submit(
                &caller,
                r.request_id,
                Command::RemoveMember {
                    group: r.group,
                    user: r.user,
                    reason: reason_of(r.reason),
                },
            )
            .await?;
        Ok(Response::new(receipt(&c)))
    }

    #[instrument(skip_all)]
    async fn set_group_sync(
        &self,
        req: Request<pb::SetGroupSyncRequest>,
    ) -> Result<Response<pb::Group>, Status> {
        let caller = require(&req, ADMIN, "SetGroupSync")?;
        let r = req.into_inner();
        let group = r.group.clone();
        let cmd = Command::SetGroupSync {
            group: r.group,
            synced: r.synced,
            reason: r.reason,
        };
        let c = self.submit(&caller, r.request_id, cmd).await?;
        Ok(Response::new(cv::pb_group(
            &c.state,
            &group,
            c.entry.seq,
            c.replayed,
        )))
    }

    #[instrument(skip_all)]
    async fn issue_grant(
        &self,
        req: Request<pb::IssueGrantRequest>,
    ) -> Result<Response<pb::Grant>, Status> {
        let caller = require(&req, ADMIN, "IssueGrant")?;
        let r = req.into_inner();
        let cmd = Command::IssueGrant {
            subject: cv::subject(r.subject)?,
            spec: cv::grant_spec(r.spec)?,
            expires_at_ns: r.expires_at.as_ref().map(cv::time_ns).transpose()?,
            reason: r.reason,
        };
        let c = self.submit(&caller, r.request_id, cmd).await?;
        let g = c
            .state
            .grant(c.entry.seq)
            .ok_or(Error::Inconsistent("issued grant not in state"))?;
        Ok(Response::new(pb::Grant {
            replayed: c.replayed,
            ..cv::pb_grant(g)
        }))
    }

    #[instrument(skip_all)]
    async fn revoke_grant(
        &self,
        req: Request<pb::RevokeGrantRequest>,
    ) -> Result<Response<pb::Grant>, Status> {
        let caller = require(&req, ADMIN, "RevokeGrant")?;
        let r = req.into_inner();
        let c = self
            .submit(
                &caller,
                r.request_id,
                Command::RevokeGrant {
                    grant_id: r.grant_id,
                    reason: r.reason,
                },
            )
            .await?;
        let id = match &c.entry.event {
            Event::GrantRevoked { grant_id, .. } => *grant_id,
            _ => r.grant_id,
        };
        let g = c
            .state
            .grant(id)
            .ok_or(Error::Inconsistent("revoked grant not in state"))?;
        Ok(Response::new(pb::Grant {
            replayed: c.replayed,
            ..cv::pb_grant(g)
        }))
    }

    #[instrument(skip_all)]
    async fn list_grants(
        &self,
        req: Request<pb::ListGrantsRequest>,
    ) -> Result<Response<pb::ListGrantsResponse>, Status> {
        require(&req, READERS, "ListGrants")?;
        let r = req.into_inner();
        let subject = match r.subject {
            Some(s) => Some(cv::subject(Some(s))?),
            None => None,
        };
        let st = self.ledger.snapshot();
        let grants = st
            .grants()
            .filter(|g| r.include_inactive || g.ended.is_none())
            .filter(|g| subject.as_ref().is_none_or(|s| &g.subject == s))
            .map(cv::pb_grant)
            .collect();
        Ok(Response::new(pb::ListGrantsResponse {
            grants,
            seq: st.seq,
        }))
    }

    #[instrument(skip_all)]
    async fn create_token(
        &self,
        req: Request<pb::CreateTokenRequest>,
    ) -> Result<Response<pb::CreateTokenResponse>, Status> {
        let caller = require(&req, ADMIN, "CreateToken")?;
        let r = req.into_inner();
        let role = cv::role(r.role)?;
        let expires_at_ns = r.expires_at.as_ref().map(cv::time_ns).transpose()?;
        let secret = crate::ledger::new_secret()?;
        let c = self
            .submit(
                &caller,
                r.request_id,
                Command::CreateToken {
                    name: r.name,
                    role,
                    secret_sha256: hash_secret(&secret),
                    expires_at_ns,
                },
            )
            .await?;
        let (name, role) = match &c.entry.event {
            Event::TokenIssued { name, role, .. } => (name.clone(), *role),
            _ => return Err(Error::Inconsistent("unexpected entry for a token").into()),
        };
        Ok(Response::new(pb::CreateTokenResponse {
            name,
            role: cv::pb_role(role),
            // Only the hash is stored: a replay cannot show the secret again.
            secret: if c.replayed { String::new() } else { secret },
            seq: c.entry.seq,
            replayed: c.replayed,
        }))
    }

    #[instrument(skip_all)]
    async fn list_tokens(
        &self,
        req: Request<pb::ListTokensRequest>,
    ) -> Result<Response<pb::ListTokensResponse>, Status> {
        require(&req, ADMIN, "ListTokens")?;
        let st = self.ledger.snapshot();
        let mut tokens: Vec<_> = st.tokens().map(cv::pb_token).collect();
        tokens.sort_by_key(|t| t.created_seq);
        Ok(Response::new(pb::ListTokensResponse { tokens }))
    }

    #[instrument(skip_all)]
    async fn revoke_token(
        &self,
        req: Request<pb::RevokeTokenRequest>,
    ) -> Result<Response<pb::MutationReceipt>, Status> {
        let caller = require(&req, ADMIN, "RevokeToken")?;
        let r = req.into_inner();
        let c = self
            .submit(&caller, r.request_id, Command::RevokeToken { name: r.name })
            .await?;
        Ok(Response::new(receipt(&c)))
    }

    #[instrument(skip_all)]
    async fn import_docker_events(
        &self,
        req: Request<pb::ImportDockerEventsRequest>,
    ) -> Result<Response<pb::ImportDockerEventsResponse>, Status> {
        require(&req, ADMIN, "ImportDockerEvents")?;
        Ok(Response::new(self.import(req.into_inner().events).await?))
    }

    #[instrument(skip_all)]
    async fn record_host_events(
        &self,
        req: Request<pb::RecordHostEventsRequest>,
    ) -> Result<Response<pb::RecordHostEventsResponse>, Status> {
        let caller = require(&req, WATCHERS, "RecordHostEvents")?;
        let r = req.into_inner();
        if caller.role == crate::ledger::event::Role::Watcher && caller.name != r.host_id {
            return Err(Status::permission_denied(format!(
                "watcher token {:?} records for host {:?} (the host it is named after), not {:?}",
                caller.name, caller.name, r.host_id
            )));
        }
        let reports = host_reports::reports(r.events)?;
        let receipt = crate::docker::remote::record(
            &self.ledger,
            &self.observe,
            &caller.name,
            &r.host_id,
            reports,
        )
        .await
        .map_err(|e| match e {
            crate::docker::Error::Ledger(l) => Status::from(l),
            other => Status::internal(other.to_string()),
        })?;
        Ok(Response::new(pb::RecordHostEventsResponse {
            last_number: receipt.last,
            recorded: receipt.recorded,
            duplicates: receipt.duplicates,
        }))
    }
}

impl Api {
    async fn import(
        &self,
        events: Vec<pb::DockerEvent>,
    ) -> Result<pb::ImportDockerEventsResponse, Status> {
        let events: Vec<RawEvent> = events
            .into_iter()
            .map(host_reports::raw_event)
            .collect::<Result<_, _>>()?;
        let (recorded, already_held, ignored) =
            crate::docker::import::import(&self.ledger, &self.observe, &events).await?;
        Ok(pb::ImportDockerEventsResponse {
            recorded,
            already_held,
            ignored,
        })
    }
}

// === impl Authorizer ===

#[tonic::async_trait]
impl pb::authorizer_server::Authorizer for Api {
    #[instrument(skip_all)]
    async fn authorize_spawn(
        &self,
        req: Request<pb::AuthorizeSpawnRequest>,
    ) -> Result<Response<pb::Decision>, Status> {
        let caller = require(&req, SPAWNERS, "AuthorizeSpawn")?;
        let r = req.into_inner();
        let c = self
            .submit(
                &caller,
                r.request_id,
                Command::AuthorizeSpawn {
                    user: r.user,
                    server_name: r.server_name,
                    image: r.image,
                },
            )
            .await?;
        if let (Event::SpawnDecided(d), Some(s)) = (&c.entry.event, &self.sockets) {
            if d.allowed && d.socket == SocketAccess::Limited {
                // Answered only once the socket the decision names accepts.
                s.open(&d.user, &d.decision_id)
                    .await
                    .map_err(Error::SocketNotOpened)?;
            }
        }
        match &c.entry.event {
            Event::SpawnDecided(d) => Ok(Response::new(cv::pb_decision(
                d,
                c.entry.seq,
                c.entry.time_ns,
                &c.state,
                c.replayed,
            ))),
            _ => Err(Error::Inconsistent("unexpected entry for a decision").into()),
        }
    }

    async fn check_access(
        &self,
        req: Request<pb::CheckAccessRequest>,
    ) -> Result<Response<pb::Access>, Status> {
        require(&req, CHECKERS, "CheckAccess")?;
        let at = cv::position(req.get_ref().at)?;
        if at.is_none() {
            self.fresh_enough()?;
        }
        let min_seq = req.get_ref().min_seq;
        if min_seq > 0 && !self.reached(min_seq).await? {
            return self.ask_writer_check_access(req).await;
        }
        let r = req.into_inner();
        let access = match at {
            None => self.ledger.check_access(&r.user)?,
            Some(at) => self.ledger.check_access_at(&r.user, at).await?,
        };
        Ok(Response::new(cv::pb_access_with(
            &access,
            !r.omit_provenance,
        )))
    }

    #[instrument(skip_all)]
    async fn who_has_access(
        &self,
        req: Request<pb::WhoHasAccessRequest>,
    ) -> Result<Response<pb::WhoHasAccessResponse>, Status> {
        require(&req, READERS, "WhoHasAccess")?;
        let at = cv::position(req.into_inner().at)?;
        if at.is_none() {
            self.fresh_enough()?;
        }
        let (users, seq) = self.ledger.who_has_access(at).await?;
        Ok(Response::new(pb::WhoHasAccessResponse {
            users: users.iter().map(cv::pb_access).collect(),
            seq,
        }))
    }

    #[instrument(skip_all)]
    async fn access_intervals(
        &self,
        req: Request<pb::AccessIntervalsRequest>,
    ) -> Result<Response<pb::AccessIntervalsResponse>, Status> {
        require(&req, READERS, "AccessIntervals")?;
        let r = req.into_inner();
        let (from, to) = (cv::position(r.from)?, cv::position(r.to)?);
        let level = crate::ledger::intervals::Level {
            socket: cv::socket_access(r.socket)?,
            privileged: r.privileged,
        };
        let user = (!r.user.is_empty()).then_some(r.user);
        let report = self.ledger.access_intervals(from, to, user, level).await?;
        Ok(Response::new(cv::pb_intervals(&report)))
    }
}

// === impl Audit ===

type EntryStream = Pin<Box<dyn Stream<Item = Result<pb::Entry, Status>> + Send>>;

#[tonic::async_trait]
impl pb::audit_server::Audit for Api {
    type StreamStream = EntryStream;

    #[instrument(skip_all)]
    async fn stream(
        &self,
        req: Request<pb::StreamRequest>,
    ) -> Result<Response<EntryStream>, Status> {
        let caller = require(&req, READERS, "Stream")?;
        let r = req.into_inner();
        let filter = StreamFilter::parse(&r.kinds, (!r.subject.is_empty()).then_some(r.subject))?;
        let slot = self.streams.take(&caller.name)?;
        let rx = self.ledger.stream_records(
            r.from_seq,
            r.follow,
            filter,
            STREAM_BUFFER,
            self.stream_stall,
        )?;
        let s = futures_util::StreamExt::flat_map(ReceiverStream::new(rx), |item| {
            let items: Vec<Result<pb::Entry, Status>> = match item {
                Ok(chunk) => chunk.into_iter().map(|e| Ok(cv::pb_entry(e))).collect(),
                Err(e) => vec![Err(Status::from(e))],
            };
            futures_util::stream::iter(items)
        });
        Ok(Response::new(streams::guarded(
            Box::pin(s),
            &self.ledger,
            &caller,
            slot,
        )))
    }

    #[instrument(skip_all)]
    async fn head(
        &self,
        req: Request<pb::HeadRequest>,
    ) -> Result<Response<pb::HeadResponse>, Status> {
        require(&req, READERS, "Head")?;
        let h = self.ledger.head()?;
        let (writable, write_problem) = cv::write_status(&self.ledger.write_status());
        Ok(Response::new(pb::HeadResponse {
            seq: h.seq,
            hash: h.hash.to_vec(),
            earliest_seq: h.earliest_seq,
            time: Some(cv::timestamp(h.time_ns)),
            writable,
            write_problem,
            role: self.cluster.as_ref().map_or("", |c| c.role()).to_string(),
            node_id: self
                .cluster
                .as_ref()
                .map(|c| c.node_id().to_string())
                .unwrap_or_default(),
            writer_id: self
                .cluster
                .as_ref()
                .and_then(|c| c.writer_id())
                .unwrap_or_default(),
            cluster_head_seq: self.cluster.as_ref().map_or(0, |c| c.cluster_head()),
        }))
    }

    #[instrument(skip_all)]
    async fn verify(
        &self,
        req: Request<pb::VerifyRequest>,
    ) -> Result<Response<pb::VerifyResponse>, Status> {
        require(&req, READERS, "Verify")?;
        let r = req.into_inner();
        let rep = self.ledger.verify(r.from_seq, r.to_seq).await?;
        let (first_bad_seq, problem) = match rep.first_bad {
            Some((s, p)) => (Some(s), p),
            None => (None, String::new()),
        };
        Ok(Response::new(pb::VerifyResponse {
            ok: first_bad_seq.is_none(),
            checked: rep.checked,
            first_bad_seq,
            problem,
            from_seq: rep.from_seq,
            to_seq: rep.to_seq,
            head_hash: rep.last_hash.to_vec(),
        }))
    }
}
