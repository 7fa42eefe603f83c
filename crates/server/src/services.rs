//! etcd's v3 gRPC services (KV, Cluster, Maintenance) over a node's runtime and its MVCC
//! store; Watch is in [`crate::watch`], Lease in [`crate::lease`]. Calls not served yet answer
//! gRPC's Unimplemented, with a message naming the service and method (see [`not_served`]).
//!
//! Writes may arrive at any node: a follower forwards them to the leader's client URL and
//! relays the answer. Reads are linearizable by default (a ReadIndex round, shared by all reads
//! that arrive together) and served locally when `serializable` is set.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tonic::transport::Channel;
use tonic::{Code, Request, Response, Status};

use crate::mvcc::MvccReader;
use crate::proto::etcdserverpb::cluster_client::ClusterClient;
use crate::proto::etcdserverpb::cluster_server::Cluster;
use crate::proto::etcdserverpb::kv_client::KvClient;
use crate::proto::etcdserverpb::kv_server::Kv;
use crate::proto::etcdserverpb::maintenance_server::Maintenance;
use crate::proto::etcdserverpb::{
    alarm_request, AlarmMember, AlarmRequest, AlarmResponse, AlarmType, CompactionRequest,
    CompactionResponse, DefragmentRequest, DefragmentResponse, DeleteRangeRequest,
    DeleteRangeResponse, HashKvRequest, HashKvResponse, HashRequest, HashResponse, Member,
    MemberAddRequest, MemberAddResponse, MemberListRequest, MemberListResponse,
    MemberPromoteRequest, MemberPromoteResponse, MemberRemoveRequest, MemberRemoveResponse,
    MemberUpdateRequest, MemberUpdateResponse, MoveLeaderRequest, MoveLeaderResponse, PutRequest,
    PutResponse, RangeRequest, RangeResponse, ResponseHeader, SnapshotRequest, SnapshotResponse,
    StatusRequest, StatusResponse, TxnRequest, TxnResponse,
};
use crate::proto::flotillapb::internal_client::InternalClient;
use crate::proto::flotillapb::internal_server::Internal;
use crate::proto::flotillapb::{internal_request, MemberAttributes, PublishMemberResponse};
use crate::runtime::{Applied, NodeHandle, ServerError};

/// The version Flotilla reports in Status: the etcd API level it implements, so that clients
/// that check it accept Flotilla.
pub const REPORTED_VERSION: &str = "3.4.0";

/// How long a write to forward may wait for the leader's client URL to be known here.
/// Rationale: a new member publishes its URL through the log every 500 ms until it is
/// recorded, so a few seconds cover a cluster's start; a client's own timeout is 5 s.
pub const LEADER_URL_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// Everything the services share.
pub struct ServiceState {
    /// The node's runtime.
    pub node: NodeHandle,
    /// Reads of the key-value store.
    pub reader: MvccReader,
    /// The cluster token, to derive the ids of added members.
    pub cluster_token: String,
    /// Largest request accepted, in bytes.
    pub max_request_bytes: usize,
    /// Size of the store beyond which writes are refused.
    pub quota_bytes: u64,
    /// Channels to the leader, by client URL, for forwarding.
    leader_channels: Mutex<HashMap<String, Channel>>,
    /// The cluster id in force: a joining node learns it from its peers after it starts.
    cluster_id: Box<dyn Fn() -> u64 + Send + Sync>,
    /// The member's metrics, which the write path counts into.
    pub metrics: Arc<crate::metrics::Metrics>,
}

impl ServiceState {
    /// Shared state for the services of one node.
    pub fn new(
        node: NodeHandle,
        reader: MvccReader,
        cluster_token: String,
        max_request_bytes: usize,
        quota_bytes: u64,
        cluster_id: Box<dyn Fn() -> u64 + Send + Sync>,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> Arc<ServiceState> {
        Arc::new(ServiceState {
            node,
            reader,
            cluster_token,
            max_request_bytes,
            quota_bytes,
            leader_channels: Mutex::new(HashMap::new()),
            cluster_id,
            metrics,
        })
    }

    /// A response header at `revision`, with this member's ids and term.
    pub(crate) fn header(&self, revision: i64) -> ResponseHeader {
        ResponseHeader {
            cluster_id: (self.cluster_id)(),
            member_id: self.node.id(),
            revision,
            raft_term: self.node.status().term,
        }
    }

    fn current_revision(&self) -> i64 {
        self.reader.current_revision()
    }

    fn members(&self) -> Vec<MemberAttributes> {
        crate::members::all_members(&self.reader)
    }

    /// Waits until this member's store has applied up to `revision` (revisions are the same
    /// on every member, one per write), up to the request timeout.
    async fn wait_for_revision(&self, revision: i64) -> Result<(), Status> {
        let mut status = self.node.watch_status();
        let waited = tokio::time::timeout(self.node.request_timeout(), async {
            // Each applied batch publishes a new status; the store is checked after each.
            while self.current_revision() < revision {
                if status.changed().await.is_err() {
                    return Err(to_status(ServerError::Stopped));
                }
            }
            Ok(())
        })
        .await;
        waited.unwrap_or_else(|_| Err(to_status(ServerError::Timeout)))
    }

    /// A channel to the leader, if it is another node whose client URL is known.
    pub fn leader_channel(&self, leader: u64) -> Result<Channel, Status> {
        let members = self.members();
        let url = members
            .iter()
            .find(|member| member.id == leader && !member.removed)
            .and_then(|member| member.client_urls.first().cloned())
            .ok_or_else(|| to_status(ServerError::NoLeader))?;
        let mut channels = self.leader_channels.lock().expect("channels lock");
        if let Some(channel) = channels.get(&url) {
            return Ok(channel.clone());
        }
        let channel = Channel::from_shared(url.clone())
            .map_err(|error| Status::unavailable(format!("leader URL {url}: {error}")))?
            .connect_lazy();
        channels.insert(url, channel.clone());
        Ok(channel)
    }

    /// [`ServiceState::leader_channel`], waiting up to [`LEADER_URL_WAIT`] for the URL. The
    /// leader's client URL reaches the other members through the log shortly after the leader
    /// starts (see `serve::publish_attributes`); a request that arrives in between waits for
    /// it rather than failing with "no leader" while every node names one.
    pub async fn leader_channel_waiting(&self, leader: u64) -> Result<Channel, Status> {
        let deadline = tokio::time::Instant::now() + LEADER_URL_WAIT;
        loop {
            match self.leader_channel(leader) {
                Ok(channel) => return Ok(channel),
                Err(status) if tokio::time::Instant::now() >= deadline => return Err(status),
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
            }
        }
    }

    /// Records this node's attributes through the log: directly when it leads, through the
    /// leader otherwise. Done once the log shows them.
    pub async fn publish_self(&self, attributes: MemberAttributes) -> Result<(), Status> {
        let status = self.node.status();
        match status.leader {
            None => Err(to_status(ServerError::NoLeader)),
            Some(leader) if leader == status.id => self
                .node
                .propose(internal_request::Request::Member(attributes))
                .await
                .map(|_| ())
                .map_err(to_status),
            Some(leader) => {
                let mut client = InternalClient::new(self.leader_channel(leader)?);
                client.publish_member(attributes).await.map(|_| ())
            }
        }
    }

    /// True once the log holds these attributes.
    pub fn is_published(&self, attributes: &MemberAttributes) -> bool {
        // The log's own records, not the initial members each node writes for itself.
        let applied = self.reader.members();
        applied.iter().any(|member| {
            member.id == attributes.id
                && member.name == attributes.name
                && member.client_urls == attributes.client_urls
        })
    }
}

/// A forwarded request that failed on the way (the leader died or moved) is, to the client,
/// a leader change to retry; an answer from the leader passes through unchanged.
fn forwarding_error(status: Status) -> Status {
    let reached_leader = !matches!(
        status.code(),
        Code::Unavailable | Code::Unknown | Code::Cancelled
    ) || status.message().starts_with("etcdserver:");
    if reached_leader {
        status
    } else {
        Status::unavailable("etcdserver: leader changed")
    }
}

/// The answer to a call of an etcd method Flotilla does not serve yet: gRPC's Unimplemented,
/// naming the service and the method, as `etcdserverpb.Service/Method`, the path a gRPC client
/// called. Rationale: tonic's own answer for a method it has no handler for carries no message,
/// so a client printed "rpc error: code = Unimplemented desc = " and left its user to guess
/// which call was refused, and whether by a bug or by design.
pub fn not_served(service: &str, method: &str) -> Status {
    not_served_at(&format!("etcdserverpb.{service}"), service, method)
}

/// [`not_served`] for a service of any package: `package_service` is its full name
/// (`etcdserverpb.Auth`), `service` its short one.
pub fn not_served_at(package_service: &str, service: &str, method: &str) -> Status {
    Status::unimplemented(format!(
        "the {service} service's {method} is not served by Flotilla yet \
         ({package_service}/{method})"
    ))
}

/// Maps runtime errors to gRPC statuses with etcd's codes and messages.
pub fn to_status(error: ServerError) -> Status {
    let code = match &error {
        ServerError::NoLeader
        | ServerError::NotLeader { .. }
        | ServerError::Timeout
        | ServerError::LeaderChanged
        | ServerError::Stopped => Code::Unavailable,
        ServerError::TooManyRequests => Code::ResourceExhausted,
        ServerError::ConfigChangeInProgress => Code::Unavailable,
        ServerError::InvalidConfigChange(_) => Code::FailedPrecondition,
        ServerError::StateMachine(code, _) => *code,
    };
    Status::new(code, error.to_string())
}

/// Refuses a write of `bytes` that is larger than `--max-request-bytes`, or, for a write that
/// takes space (`takes_space`: a put, a txn with a put), one that would take the store past
/// `--quota-backend-bytes` (etcd counts a request's size against its quota) or comes while the
/// NOSPACE alarm is raised, with etcd's errors. Going past the quota raises the alarm for this
/// member, through the log, as etcd does; writes that take space stay refused everywhere until
/// an operator disarms it (`etcdctl alarm disarm`) after freeing room. Deletes and compactions
/// are never refused, so room can be freed. The quota keeps a runaway client from exhausting
/// the node's memory and snapshots.
fn check_write(state: &Arc<ServiceState>, bytes: usize, takes_space: bool) -> Result<(), Status> {
    if bytes > state.max_request_bytes {
        return Err(Status::invalid_argument("etcdserver: request is too large"));
    }
    if !takes_space {
        return Ok(());
    }
    let no_space = || Status::resource_exhausted("etcdserver: mvcc: database space exceeded");
    if state.alarm_raised(AlarmType::Nospace) {
        return Err(no_space());
    }
    // Through the reader: the store's lock is held by the runtime while it applies, and a
    // write request must not wait for that.
    let size_bytes = state.reader.size_bytes().saturating_add(bytes as u64);
    if size_bytes > state.quota_bytes {
        state.raise_alarm(AlarmType::Nospace);
        return Err(no_space());
    }
    Ok(())
}

/// Whether a txn puts anything, in either branch, nested txns included.
fn txn_puts(txn: &TxnRequest) -> bool {
    use crate::proto::etcdserverpb::request_op::Request as Op;
    txn.success
        .iter()
        .chain(&txn.failure)
        .any(|op| match &op.request {
            Some(Op::RequestPut(_)) => true,
            Some(Op::RequestTxn(nested)) => txn_puts(nested),
            _ => false,
        })
}

impl ServiceState {
    /// Whether `alarm` is raised for any member.
    pub fn alarm_raised(&self, alarm: AlarmType) -> bool {
        self.reader
            .alarms()
            .iter()
            .any(|&(_, kind)| kind == alarm as i32)
    }

    /// Raises `alarm` for this member through the log, in the background (through the
    /// leader, from a follower).
    pub(crate) fn raise_alarm(self: &Arc<Self>, alarm: AlarmType) {
        self.raise_alarm_for(self.node.id(), alarm);
    }

    /// Raises `alarm` for `member_id` through the log, in the background.
    pub(crate) fn raise_alarm_for(self: &Arc<Self>, member_id: u64, alarm: AlarmType) {
        if self.reader.alarms().contains(&(member_id, alarm as i32)) {
            return;
        }
        let request = AlarmRequest {
            action: alarm_request::AlarmAction::Activate as i32,
            member_id,
            alarm: alarm as i32,
        };
        tracing::warn!(
            "raising the {} alarm for member {member_id:x}",
            alarm.as_str_name()
        );
        let state = Arc::clone(self);
        tokio::spawn(async move {
            if let Err(status) = state.change_alarm(request).await {
                tracing::warn!("raising the alarm failed: {}", status.message());
            }
        });
    }

    /// Raises or clears an alarm through the log.
    async fn change_alarm(&self, request: AlarmRequest) -> Result<Response<AlarmResponse>, Status> {
        self.propose_or_forward(
            internal_request::Request::Alarm(request),
            |applied| match applied {
                Applied::Alarm(response) => Some(response),
                _ => None,
            },
            |channel| async move {
                crate::proto::etcdserverpb::maintenance_client::MaintenanceClient::new(channel)
                    .alarm(request)
                    .await
            },
        )
        .await
    }
}

/// The KV service.
pub struct KvService(pub Arc<ServiceState>);

/// A write's response: where its header is.
pub(crate) trait WriteResponse: Send + 'static {
    fn header_mut(&mut self) -> &mut Option<ResponseHeader>;
}

macro_rules! write_response {
    ($($response:ty),*) => {$(
        impl WriteResponse for $response {
            fn header_mut(&mut self) -> &mut Option<ResponseHeader> {
                &mut self.header
            }
        }
    )*};
}

write_response!(
    PutResponse,
    DeleteRangeResponse,
    TxnResponse,
    CompactionResponse,
    crate::proto::etcdserverpb::LeaseGrantResponse,
    crate::proto::etcdserverpb::LeaseRevokeResponse,
    AlarmResponse
);

impl ServiceState {
    /// The one path of every write through the log: proposed here when this member leads, and
    /// answered once applied; otherwise forwarded to the leader over `forward`'s channel, and
    /// answered once this member has applied it too, as etcd answers only after the member the
    /// client asked has applied the write. Rationale: a client that writes through a follower
    /// and then reads that follower serializably must see its own write (13 to 52 misses in
    /// 1,000 before).
    pub(crate) async fn propose_or_forward<T, F>(
        &self,
        request: internal_request::Request,
        unpack: fn(Applied) -> Option<T>,
        forward: impl FnOnce(Channel) -> F,
    ) -> Result<Response<T>, Status>
    where
        T: WriteResponse,
        F: std::future::Future<Output = Result<Response<T>, Status>>,
    {
        // Rationale: a put, delete or txn answered by the leader is applied here once this
        // member reaches the revision in the answer; a compaction, a lease grant or an alarm
        // moves no revision, so for those a ReadIndex round shows when this member has applied
        // everything the leader had committed when it answered.
        let moves_revision = matches!(
            request,
            internal_request::Request::Put(_)
                | internal_request::Request::DeleteRange(_)
                | internal_request::Request::Txn(_)
        );
        self.metrics.proposals_pending.inc();
        let proposed = self.node.propose(request).await;
        self.metrics.proposals_pending.dec();
        if matches!(&proposed, Err(error) if !matches!(error, ServerError::NotLeader { .. } | ServerError::StateMachine(..)))
        {
            self.metrics.proposals_failed.inc();
        }
        let mut response = match proposed {
            Ok(applied) => unpack(applied)
                .ok_or_else(|| Status::internal("a write applied as another kind"))?,
            Err(ServerError::NotLeader {
                leader: Some(leader),
            }) if leader != self.node.id() => {
                let channel = self.leader_channel_waiting(leader).await?;
                let mut response = forward(channel)
                    .await
                    .map_err(forwarding_error)?
                    .into_inner();
                if moves_revision {
                    let revision = response
                        .header_mut()
                        .as_ref()
                        .map_or(0, |header| header.revision);
                    self.wait_for_revision(revision).await?;
                } else {
                    self.node.read_index().await.map_err(to_status)?;
                }
                response
            }
            Err(error) => return Err(to_status(error)),
        };
        fill_header(self, response.header_mut());
        Ok(Response::new(response))
    }
}

fn fill_header(state: &ServiceState, header: &mut Option<ResponseHeader>) {
    let revision = header
        .as_ref()
        .map_or_else(|| state.current_revision(), |h| h.revision);
    *header = Some(state.header(revision));
}

#[tonic::async_trait]
impl Kv for KvService {
    async fn range(
        &self,
        request: Request<RangeRequest>,
    ) -> Result<Response<RangeResponse>, Status> {
        let request = request.into_inner();
        crate::mvcc::validate_range(&request).map_err(Status::from)?;
        if !request.serializable {
            self.0.node.read_index().await.map_err(to_status)?;
        }
        let mut response = self.0.reader.range(&request).map_err(Status::from)?;
        fill_header(&self.0, &mut response.header);
        Ok(Response::new(response))
    }

    async fn put(&self, request: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        let request = request.into_inner();
        crate::mvcc::validate_put(&request).map_err(Status::from)?;
        check_write(&self.0, request.key.len() + request.value.len(), true)?;
        self.0
            .propose_or_forward(
                internal_request::Request::Put(request.clone()),
                |applied| match applied {
                    Applied::Put(response) => Some(response),
                    _ => None,
                },
                |leader| async move { KvClient::new(leader).put(request).await },
            )
            .await
    }

    async fn delete_range(
        &self,
        request: Request<DeleteRangeRequest>,
    ) -> Result<Response<DeleteRangeResponse>, Status> {
        let request = request.into_inner();
        crate::mvcc::validate_delete_range(&request).map_err(Status::from)?;
        self.0
            .propose_or_forward(
                internal_request::Request::DeleteRange(request.clone()),
                |applied| match applied {
                    Applied::DeleteRange(response) => Some(response),
                    _ => None,
                },
                |leader| async move { KvClient::new(leader).delete_range(request).await },
            )
            .await
    }

    async fn txn(&self, request: Request<TxnRequest>) -> Result<Response<TxnResponse>, Status> {
        let request = request.into_inner();
        check_write(
            &self.0,
            prost::Message::encoded_len(&request),
            txn_puts(&request),
        )?;
        crate::mvcc::validate_txn(&request, crate::mvcc::MAX_TXN_OPERATIONS_DEFAULT)
            .map_err(Status::from)?;
        self.0
            .propose_or_forward(
                internal_request::Request::Txn(request.clone()),
                |applied| match applied {
                    Applied::Txn(response) => Some(response),
                    _ => None,
                },
                |leader| async move { KvClient::new(leader).txn(request).await },
            )
            .await
    }

    async fn compact(
        &self,
        request: Request<CompactionRequest>,
    ) -> Result<Response<CompactionResponse>, Status> {
        let request = request.into_inner();
        self.0
            .propose_or_forward(
                internal_request::Request::Compaction(request),
                |applied| match applied {
                    Applied::Compaction(response) => Some(response),
                    _ => None,
                },
                |leader| async move { KvClient::new(leader).compact(request).await },
            )
            .await
    }
}

/// The Cluster service.
pub struct ClusterService(pub Arc<ServiceState>);

impl ClusterService {
    fn member_list(&self) -> Vec<Member> {
        let status = self.0.node.status();
        let mut members: Vec<Member> = self
            .0
            .members()
            .into_iter()
            .filter(|member| !member.removed)
            .map(|member| Member {
                id: member.id,
                name: member.name,
                peer_ur_ls: member.peer_urls,
                client_ur_ls: member.client_urls,
                // The configuration says, once the node's status has caught up with it; a
                // member added as a learner just now is a learner until it is a voter.
                is_learner: status.config.learners.contains(&member.id)
                    || (member.is_learner && !status.config.voters.contains(&member.id)),
            })
            .collect();
        members.sort_by_key(|member| member.id);
        members
    }

    /// None when this node leads; a client of the leader when another node does, so that
    /// membership calls sent to any member work, as with etcd.
    async fn leader_or_forward(&self) -> Result<Option<ClusterClient<Channel>>, Status> {
        let status = self.0.node.status();
        match status.leader {
            None => Err(to_status(ServerError::NoLeader)),
            Some(leader) if leader == status.id => Ok(None),
            Some(leader) => Ok(Some(ClusterClient::new(
                self.0.leader_channel_waiting(leader).await?,
            ))),
        }
    }

    async fn record_member(&self, attributes: MemberAttributes) -> Result<(), Status> {
        match self
            .0
            .node
            .propose(internal_request::Request::Member(attributes))
            .await
        {
            Ok(_) => Ok(()),
            Err(error) => Err(to_status(error)),
        }
    }
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn member_add(
        &self,
        request: Request<MemberAddRequest>,
    ) -> Result<Response<MemberAddResponse>, Status> {
        let request = request.into_inner();
        if let Some(mut leader) = self.leader_or_forward().await? {
            return leader.member_add(request).await.map_err(forwarding_error);
        }
        if request.peer_ur_ls.is_empty() {
            return Err(Status::invalid_argument(
                "etcdserver: peer URLs are not provided",
            ));
        }
        for url in &request.peer_ur_ls {
            crate::cluster::host_and_port(url)
                .map_err(|error| Status::invalid_argument(error.to_string()))?;
        }
        let id = crate::cluster::member_id(&request.peer_ur_ls, &self.0.cluster_token);
        if self
            .0
            .members()
            .iter()
            .any(|member| member.id == id && !member.removed)
        {
            return Err(Status::failed_precondition(
                "etcdserver: member ID already exist",
            ));
        }
        let attributes = MemberAttributes {
            id,
            name: String::new(),
            peer_urls: request.peer_ur_ls.clone(),
            client_urls: Vec::new(),
            is_learner: request.is_learner,
            removed: false,
        };
        self.record_member(attributes).await?;
        let step = if request.is_learner {
            raft::ConfigChangeStep::AddLearner(id)
        } else {
            raft::ConfigChangeStep::AddVoter(id)
        };
        self.0
            .node
            .change_config(raft::ConfigChange::new([step]))
            .await
            .map_err(to_status)?;
        let members = self.member_list();
        let member = members.iter().find(|member| member.id == id).cloned();
        Ok(Response::new(MemberAddResponse {
            header: Some(self.0.header(self.0.current_revision())),
            member,
            members,
        }))
    }

    async fn member_remove(
        &self,
        request: Request<MemberRemoveRequest>,
    ) -> Result<Response<MemberRemoveResponse>, Status> {
        let id = request.into_inner().id;
        if let Some(mut leader) = self.leader_or_forward().await? {
            return leader
                .member_remove(MemberRemoveRequest { id })
                .await
                .map_err(forwarding_error);
        }
        let Some(mut attributes) = self
            .0
            .members()
            .into_iter()
            .find(|member| member.id == id && !member.removed)
        else {
            return Err(Status::not_found("etcdserver: member not found"));
        };
        // The attributes first, while this member surely leads. Rationale: a leader that
        // removes itself hands leadership over as soon as the change applies, so recording
        // them after the change failed with "leader changed" and the call had to be repeated;
        // etcd removes a leader in one call.
        attributes.removed = true;
        self.record_member(attributes.clone()).await?;
        let changed = self
            .0
            .node
            .change_config(raft::ConfigChange::new([
                raft::ConfigChangeStep::RemoveNode(id),
            ]))
            .await;
        if let Err(error) = changed {
            // The member stays: listed again, so that the removal can be retried.
            attributes.removed = false;
            if let Err(status) = self.record_member(attributes).await {
                tracing::warn!(
                    "member {id:x} was not removed, but it could not be listed again: {}",
                    status.message()
                );
            }
            return Err(to_status(error));
        }
        Ok(Response::new(MemberRemoveResponse {
            header: Some(self.0.header(self.0.current_revision())),
            members: self.member_list(),
        }))
    }

    async fn member_update(
        &self,
        request: Request<MemberUpdateRequest>,
    ) -> Result<Response<MemberUpdateResponse>, Status> {
        let request = request.into_inner();
        if let Some(mut leader) = self.leader_or_forward().await? {
            return leader
                .member_update(request)
                .await
                .map_err(forwarding_error);
        }
        let Some(mut attributes) = self
            .0
            .members()
            .into_iter()
            .find(|member| member.id == request.id && !member.removed)
        else {
            return Err(Status::not_found("etcdserver: member not found"));
        };
        for url in &request.peer_ur_ls {
            crate::cluster::host_and_port(url)
                .map_err(|error| Status::invalid_argument(error.to_string()))?;
        }
        attributes.peer_urls = request.peer_ur_ls;
        self.record_member(attributes).await?;
        Ok(Response::new(MemberUpdateResponse {
            header: Some(self.0.header(self.0.current_revision())),
            members: self.member_list(),
        }))
    }

    async fn member_list(
        &self,
        request: Request<MemberListRequest>,
    ) -> Result<Response<MemberListResponse>, Status> {
        if request.into_inner().linearizable {
            self.0.node.read_index().await.map_err(to_status)?;
        }
        Ok(Response::new(MemberListResponse {
            header: Some(self.0.header(self.0.current_revision())),
            members: self.member_list(),
        }))
    }

    async fn member_promote(
        &self,
        request: Request<MemberPromoteRequest>,
    ) -> Result<Response<MemberPromoteResponse>, Status> {
        let id = request.into_inner().id;
        if let Some(mut leader) = self.leader_or_forward().await? {
            return leader
                .member_promote(MemberPromoteRequest { id })
                .await
                .map_err(forwarding_error);
        }
        let status = self.0.node.status();
        if !status.config.learners.contains(&id) {
            if status.config.all_nodes().contains(&id) {
                return Err(Status::failed_precondition(
                    "etcdserver: can only promote a learner member",
                ));
            }
            return Err(Status::not_found("etcdserver: member not found"));
        }
        self.0
            .node
            .change_config(raft::ConfigChange::new([raft::ConfigChangeStep::AddVoter(
                id,
            )]))
            .await
            .map_err(to_status)?;
        Ok(Response::new(MemberPromoteResponse {
            header: Some(self.0.header(self.0.current_revision())),
            members: self.member_list(),
        }))
    }
}

/// The Maintenance service: Status, Hash, HashKV, Snapshot (a backup), Alarm, Defragment and
/// MoveLeader.
pub struct MaintenanceService(pub Arc<ServiceState>);

type SnapshotStream = tonic::codegen::BoxStream<SnapshotResponse>;

#[tonic::async_trait]
impl Maintenance for MaintenanceService {
    /// GET lists the alarms this member has applied; ACTIVATE and DEACTIVATE go through the
    /// log, and answer with the alarm that changed.
    async fn alarm(
        &self,
        request: Request<AlarmRequest>,
    ) -> Result<Response<AlarmResponse>, Status> {
        let request = request.into_inner();
        if request.action == alarm_request::AlarmAction::Get as i32 {
            let alarms = self
                .0
                .reader
                .alarms()
                .into_iter()
                .map(|(member_id, alarm)| AlarmMember { member_id, alarm })
                .collect();
            return Ok(Response::new(AlarmResponse {
                header: Some(self.0.header(self.0.current_revision())),
                alarms,
            }));
        }
        self.0.change_alarm(request).await
    }

    async fn status(&self, _: Request<StatusRequest>) -> Result<Response<StatusResponse>, Status> {
        let status = self.0.node.status();
        let database_size_bytes = self.0.reader.size_bytes() as i64;
        Ok(Response::new(StatusResponse {
            header: Some(self.0.header(self.0.current_revision())),
            version: REPORTED_VERSION.to_string(),
            db_size: database_size_bytes,
            leader: status.leader.unwrap_or(0),
            raft_index: status.commit_index,
            raft_term: status.term,
            raft_applied_index: status.applied_index,
            errors: status
                .errors
                .iter()
                .cloned()
                .chain(self.0.reader.alarms().into_iter().map(|(member, kind)| {
                    let name = AlarmType::try_from(kind).map_or("NONE", |kind| kind.as_str_name());
                    format!("memberID:{member} alarm:{name} ")
                }))
                .collect(),
            db_size_in_use: database_size_bytes,
            is_learner: status.config.learners.contains(&status.id),
        }))
    }

    /// The store lives in memory: defragmenting rebuilds it densely and hands the memory it
    /// no longer needs back to the operating system (see [`crate::mvcc::MvccReader::defragment`]).
    async fn defragment(
        &self,
        _: Request<DefragmentRequest>,
    ) -> Result<Response<DefragmentResponse>, Status> {
        let reader = self.0.reader.clone();
        let (versions, resident_before, resident_after) = tokio::task::spawn_blocking(move || {
            let before = resident_bytes();
            let versions = reader.defragment();
            release_free_memory();
            (versions, before, resident_bytes())
        })
        .await
        .map_err(|error| Status::internal(format!("defragmenting: {error}")))?;
        tracing::info!(
            "defragmented the store ({versions} versions kept); resident memory {} -> {} bytes",
            resident_before.map_or("unknown".to_string(), |bytes| bytes.to_string()),
            resident_after.map_or("unknown".to_string(), |bytes| bytes.to_string()),
        );
        Ok(Response::new(DefragmentResponse {
            header: Some(self.0.header(self.0.current_revision())),
        }))
    }

    /// etcd hashes its whole database file here; Flotilla has none, so this is the HashKV of
    /// the current revision, which covers the same key-value data.
    async fn hash(&self, _: Request<HashRequest>) -> Result<Response<HashResponse>, Status> {
        let hash = self.0.reader.hash_kv(0).map_err(Status::from)?;
        Ok(Response::new(HashResponse {
            header: Some(self.0.header(hash.hash_revision)),
            hash: hash.hash,
        }))
    }

    async fn hash_kv(
        &self,
        request: Request<HashKvRequest>,
    ) -> Result<Response<HashKvResponse>, Status> {
        let revision = request.into_inner().revision;
        let hash = self.0.reader.hash_kv(revision).map_err(Status::from)?;
        Ok(Response::new(HashKvResponse {
            header: Some(self.0.header(self.0.current_revision())),
            hash: hash.hash,
            compact_revision: hash.compact_revision,
            hash_revision: hash.hash_revision,
        }))
    }

    type SnapshotStream = SnapshotStream;

    /// Streams a backup (see [`crate::backup`]): this member's state as of one applied batch,
    /// taken on a blocking thread while writes go on, in chunks of 32 KiB as etcd sends them,
    /// then the footer, then the SHA-256 trailer in a last message.
    async fn snapshot(
        &self,
        _: Request<SnapshotRequest>,
    ) -> Result<Response<Self::SnapshotStream>, Status> {
        const CHUNK_BYTES: usize = 32 * 1024;
        let reader = self.0.reader.clone();
        let image = tokio::task::spawn_blocking(move || reader.snapshot())
            .await
            .map_err(|error| Status::internal(format!("taking the snapshot: {error}")))?
            .map_err(Status::from)?;
        let header = self.0.header(self.0.current_revision());
        let footer = crate::backup::footer(image.len());
        let trailer = crate::backup::checksum(&[&image, &footer]);
        let total_bytes = image.len() + footer.len() + trailer.len();
        let mut messages = Vec::with_capacity(image.len() / CHUNK_BYTES + 2);
        let mut sent_bytes = 0;
        for start in (0..image.len()).step_by(CHUNK_BYTES) {
            let chunk = image.slice(start..(start + CHUNK_BYTES).min(image.len()));
            sent_bytes += chunk.len();
            messages.push(Ok(SnapshotResponse {
                header: Some(header),
                remaining_bytes: (total_bytes - sent_bytes) as u64,
                blob: chunk.to_vec(),
                version: REPORTED_VERSION.to_string(),
            }));
        }
        messages.push(Ok(SnapshotResponse {
            header: Some(header),
            remaining_bytes: trailer.len() as u64,
            blob: footer,
            version: REPORTED_VERSION.to_string(),
        }));
        messages.push(Ok(SnapshotResponse {
            header: Some(header),
            remaining_bytes: 0,
            blob: trailer.to_vec(),
            version: REPORTED_VERSION.to_string(),
        }));
        Ok(Response::new(Box::pin(tokio_stream::iter(messages))))
    }

    async fn move_leader(
        &self,
        request: Request<MoveLeaderRequest>,
    ) -> Result<Response<MoveLeaderResponse>, Status> {
        let target = request.into_inner().target_id;
        self.0
            .node
            .transfer_leadership(target)
            .await
            .map_err(to_status)?;
        Ok(Response::new(MoveLeaderResponse {
            header: Some(self.0.header(self.0.current_revision())),
        }))
    }
}

/// The process's resident memory, where the system tells it.
fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

/// Hands free heap memory back to the operating system (glibc keeps freed memory otherwise).
fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free pages of the heap to the system; it is safe to
    // call at any time from any thread.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Flotilla's node-to-node service on the client port.
pub struct InternalService(pub Arc<ServiceState>);

#[tonic::async_trait]
impl Internal for InternalService {
    async fn publish_member(
        &self,
        request: Request<MemberAttributes>,
    ) -> Result<Response<PublishMemberResponse>, Status> {
        let attributes = request.into_inner();
        let known = self
            .0
            .members()
            .into_iter()
            .find(|member| member.id == attributes.id && !member.removed);
        let Some(known) = known else {
            return Err(Status::not_found("etcdserver: member not found"));
        };
        // Only the name and client URLs are published this way; the rest stays as recorded.
        let updated = MemberAttributes {
            name: attributes.name,
            client_urls: attributes.client_urls,
            ..known
        };
        self.0
            .node
            .propose(internal_request::Request::Member(updated))
            .await
            .map_err(to_status)?;
        Ok(Response::new(PublishMemberResponse {}))
    }
}
