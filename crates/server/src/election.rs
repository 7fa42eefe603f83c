//! etcd's Election service (`v3electionpb.Election`): the election recipe of clientv3's
//! concurrency package, run by the server for clients that call it instead of carrying it.
//!
//! A candidate in election N under lease L is the key `N/<L in hex>`, attached to L, holding
//! its value; the leader is the candidate whose key is oldest (lowest create revision). A
//! campaign creates the key (or finds it) and returns once no older one remains; proclaiming
//! changes the leader's value while it still leads; resigning deletes its key; the lease's
//! expiry or revocation ends a candidacy too.

use std::pin::Pin;
use std::sync::Arc;

use tokio::sync::mpsc;
use tonic::{Request, Response, Status};

use crate::keys::prefix_end;
use crate::lock::Recipes;
use crate::proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use crate::proto::etcdserverpb::kv_server::Kv;
use crate::proto::etcdserverpb::range_request::{SortOrder, SortTarget};
use crate::proto::etcdserverpb::request_op::Request as Operation;
use crate::proto::etcdserverpb::{
    Compare, DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest,
};
use crate::proto::mvccpb::KeyValue;
use crate::proto::v3electionpb::election_server::Election;
use crate::proto::v3electionpb::{
    CampaignRequest, CampaignResponse, LeaderKey, LeaderRequest, LeaderResponse, ProclaimRequest,
    ProclaimResponse, ResignRequest, ResignResponse,
};
use crate::services::ServiceState;

/// Observe answers queued for one stream.
const OBSERVE_QUEUE_MAX: usize = 16;

fn not_leader() -> Status {
    Status::failed_precondition("etcdserver: election: not leader")
}

fn no_leader() -> Status {
    Status::failed_precondition("etcdserver: election: no leader")
}

/// The Election service of one member.
pub struct ElectionService {
    recipes: Arc<Recipes>,
}

impl ElectionService {
    /// The service over a member's shared state.
    pub fn new(state: Arc<ServiceState>) -> ElectionService {
        ElectionService {
            recipes: Arc::new(Recipes::new(state)),
        }
    }
}

/// The election's candidates' prefix.
fn prefix_of(name: &[u8]) -> Vec<u8> {
    let mut prefix = name.to_vec();
    prefix.push(b'/');
    prefix
}

/// The leader of the election with this prefix: its oldest candidate, in this member's store.
fn leader_of(recipes: &Recipes, prefix: &[u8]) -> Result<Option<KeyValue>, Status> {
    let found = recipes
        .state
        .reader
        .range(&RangeRequest {
            key: prefix.to_vec(),
            range_end: prefix_end(prefix),
            sort_order: SortOrder::Ascend as i32,
            sort_target: SortTarget::Create as i32,
            limit: 1,
            ..RangeRequest::default()
        })
        .map_err(Status::from)?;
    Ok(found.kvs.into_iter().next())
}

/// The compare that holds while `leader` still leads: its key has the create revision it had.
fn still_leads(leader: &LeaderKey) -> Compare {
    Compare {
        result: CompareResult::Equal as i32,
        target: CompareTarget::Create as i32,
        key: leader.key.clone(),
        target_union: Some(TargetUnion::CreateRevision(leader.rev)),
        ..Compare::default()
    }
}

type ObserveStream =
    Pin<Box<dyn tokio_stream::Stream<Item = Result<LeaderResponse, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl Election for ElectionService {
    async fn campaign(
        &self,
        request: Request<CampaignRequest>,
    ) -> Result<Response<CampaignResponse>, Status> {
        let request = request.into_inner();
        if request.name.is_empty() {
            return Err(Status::invalid_argument("etcdserver: key is not provided"));
        }
        if request.lease <= 0 {
            return Err(Status::not_found("etcdserver: requested lease not found"));
        }
        let prefix = prefix_of(&request.name);
        let mut key = prefix.clone();
        key.extend_from_slice(format!("{:x}", request.lease).as_bytes());
        let candidacy = self
            .recipes
            .create_if_missing(&key, request.value.clone(), request.lease)
            .await?;
        let (revision, existing_value) = (candidacy.create_revision, candidacy.existing_value);
        let leader = LeaderKey {
            name: request.name.clone(),
            key: key.clone(),
            rev: revision,
            lease: request.lease,
        };
        // A candidate campaigning again with another value proclaims it, as etcd's does.
        if existing_value.is_some_and(|value| value != request.value) {
            self.proclaim_value(&leader, request.value.clone()).await?;
        }
        while let Some(older) = self.recipes.predecessor(&prefix, revision)? {
            self.recipes.deleted(&older).await?;
            if !self.recipes.exists(&key)? {
                return Err(Status::not_found("etcdserver: requested lease not found"));
            }
        }
        Ok(Response::new(CampaignResponse {
            header: Some(self.recipes.header()),
            leader: Some(leader),
        }))
    }

    async fn proclaim(
        &self,
        request: Request<ProclaimRequest>,
    ) -> Result<Response<ProclaimResponse>, Status> {
        let request = request.into_inner();
        let leader = request.leader.ok_or_else(not_leader)?;
        self.proclaim_value(&leader, request.value).await?;
        Ok(Response::new(ProclaimResponse {
            header: Some(self.recipes.header()),
        }))
    }

    async fn leader(
        &self,
        request: Request<LeaderRequest>,
    ) -> Result<Response<LeaderResponse>, Status> {
        let prefix = prefix_of(&request.into_inner().name);
        let kv = leader_of(&self.recipes, &prefix)?.ok_or_else(no_leader)?;
        Ok(Response::new(LeaderResponse {
            header: Some(self.recipes.header()),
            kv: Some(kv),
        }))
    }

    type ObserveStream = ObserveStream;

    async fn observe(
        &self,
        request: Request<LeaderRequest>,
    ) -> Result<Response<Self::ObserveStream>, Status> {
        let prefix = prefix_of(&request.into_inner().name);
        let (answers, stream) = mpsc::channel(OBSERVE_QUEUE_MAX);
        let recipes = Arc::clone(&self.recipes);
        tokio::spawn(async move {
            let mut applied = recipes.state.node.watch_status();
            // The leader's key and the revision of its value last sent.
            let mut sent: Option<(Vec<u8>, i64)> = None;
            loop {
                match leader_of(&recipes, &prefix) {
                    Ok(Some(kv)) => {
                        let current = (kv.key.clone(), kv.mod_revision);
                        if sent.as_ref() != Some(&current) {
                            let answer = LeaderResponse {
                                header: Some(recipes.header()),
                                kv: Some(kv),
                            };
                            if answers.send(Ok(answer)).await.is_err() {
                                return;
                            }
                            sent = Some(current);
                        }
                    }
                    Ok(None) => {}
                    Err(status) => {
                        let _ = answers.send(Err(status)).await;
                        return;
                    }
                }
                tokio::select! {
                    changed = applied.changed() => if changed.is_err() { return },
                    () = answers.closed() => return,
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(stream),
        )))
    }

    async fn resign(
        &self,
        request: Request<ResignRequest>,
    ) -> Result<Response<ResignResponse>, Status> {
        let leader = request.into_inner().leader.ok_or_else(not_leader)?;
        let txn = TxnRequest {
            compare: vec![still_leads(&leader)],
            success: vec![RequestOp {
                request: Some(Operation::RequestDeleteRange(DeleteRangeRequest {
                    key: leader.key.clone(),
                    ..DeleteRangeRequest::default()
                })),
            }],
            failure: Vec::new(),
        };
        let answered = self.recipes.kv().txn(Request::new(txn)).await?.into_inner();
        Ok(Response::new(ResignResponse {
            header: answered.header.map(|_| self.recipes.header()),
        }))
    }
}

impl ElectionService {
    /// Sets the leader's value if it still leads (its key has the create revision it had).
    async fn proclaim_value(&self, leader: &LeaderKey, value: Vec<u8>) -> Result<(), Status> {
        let txn = TxnRequest {
            compare: vec![still_leads(leader)],
            success: vec![RequestOp {
                request: Some(Operation::RequestPut(PutRequest {
                    key: leader.key.clone(),
                    value,
                    lease: leader.lease,
                    ..PutRequest::default()
                })),
            }],
            failure: Vec::new(),
        };
        let answered = self.recipes.kv().txn(Request::new(txn)).await?.into_inner();
        if answered.succeeded {
            Ok(())
        } else {
            Err(not_leader())
        }
    }
}
