//! etcd's Lock service (`v3lockpb.Lock`): the lock recipe of clientv3's concurrency package,
//! run by the server for clients that call it instead of carrying the recipe.
//!
//! A lock named N held under lease L is the key `N/<L in hex>`, attached to L: created if
//! missing (a txn on its create revision), then held once no key under `N/` has an older
//! create revision; the caller waits for each older one to go. Unlock deletes the key; so does
//! the lease's expiry or revocation.
//!
//! What a lease-based lock guarantees (docs/OPERATIONS.md says it for users): while the
//! holder's lease lives nobody else holds the lock; a holder paused past its TTL may still
//! believe it holds it. The key's create revision grows with each holder: a fencing token.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::keys::prefix_end;
use crate::proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use crate::proto::etcdserverpb::kv_server::Kv;
use crate::proto::etcdserverpb::range_request::{SortOrder, SortTarget};
use crate::proto::etcdserverpb::request_op::Request as Operation;
use crate::proto::etcdserverpb::response_op::Response as OperationResponse;
use crate::proto::etcdserverpb::{
    Compare, DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest,
};
use crate::proto::v3lockpb::lock_server::Lock;
use crate::proto::v3lockpb::{LockRequest, LockResponse, UnlockRequest, UnlockResponse};
use crate::services::{KvService, ServiceState};

/// The Lock service of one member.
pub struct LockService {
    recipes: Recipes,
}

impl LockService {
    /// The service over a member's shared state.
    pub fn new(state: Arc<ServiceState>) -> LockService {
        LockService {
            recipes: Recipes::new(state),
        }
    }
}

/// What the lock and election recipes do with the store: writes through the KV service's one
/// write path (so a follower forwards them and answers once it applied them), reads and waits
/// on this member's own store.
pub(crate) struct Recipes {
    pub(crate) state: Arc<ServiceState>,
}

impl Recipes {
    pub(crate) fn new(state: Arc<ServiceState>) -> Recipes {
        Recipes { state }
    }

    pub(crate) fn kv(&self) -> KvService {
        KvService(Arc::clone(&self.state))
    }

    /// A response header at this member's current revision.
    pub(crate) fn header(&self) -> crate::proto::etcdserverpb::ResponseHeader {
        self.state.header(self.state.reader.current_revision())
    }

    /// Whether `key` exists in this member's store.
    pub(crate) fn exists(&self, key: &[u8]) -> Result<bool, Status> {
        let found = self
            .state
            .reader
            .range(&RangeRequest {
                key: key.to_vec(),
                count_only: true,
                ..RangeRequest::default()
            })
            .map_err(Status::from)?;
        Ok(found.count > 0)
    }

    /// Waits until this member's store no longer has `key`.
    pub(crate) async fn deleted(&self, key: &[u8]) -> Result<(), Status> {
        let mut applied = self.state.node.watch_status();
        while self.exists(key)? {
            if applied.changed().await.is_err() {
                return Err(Status::unavailable("etcdserver: server stopped"));
            }
        }
        Ok(())
    }

    /// Creates `key` with `value` on `lease` unless it exists (a txn on its create revision),
    /// as both recipes start; says whether it was created, its create revision, and, when it
    /// existed, its value.
    pub(crate) async fn create_if_missing(
        &self,
        key: &[u8],
        value: Vec<u8>,
        lease: i64,
    ) -> Result<Candidacy, Status> {
        let txn = TxnRequest {
            compare: vec![Compare {
                result: CompareResult::Equal as i32,
                target: CompareTarget::Create as i32,
                key: key.to_vec(),
                target_union: Some(TargetUnion::CreateRevision(0)),
                ..Compare::default()
            }],
            success: vec![RequestOp {
                request: Some(Operation::RequestPut(PutRequest {
                    key: key.to_vec(),
                    value,
                    lease,
                    ..PutRequest::default()
                })),
            }],
            failure: vec![RequestOp {
                request: Some(Operation::RequestRange(RangeRequest {
                    key: key.to_vec(),
                    ..RangeRequest::default()
                })),
            }],
        };
        let answered = self.kv().txn(Request::new(txn)).await?.into_inner();
        if answered.succeeded {
            let create_revision = answered.header.as_ref().map_or(0, |header| header.revision);
            return Ok(Candidacy {
                created: true,
                create_revision,
                existing_value: None,
            });
        }
        let existing = answered
            .responses
            .into_iter()
            .find_map(|response| match response.response {
                Some(OperationResponse::ResponseRange(range)) => range.kvs.into_iter().next(),
                _ => None,
            })
            // Gone between the compare and the read is impossible in one txn; a key that is
            // missing here means the lease expired at once.
            .ok_or_else(|| Status::not_found("etcdserver: requested lease not found"))?;
        Ok(Candidacy {
            created: false,
            create_revision: existing.create_revision,
            existing_value: Some(existing.value),
        })
    }

    /// The newest key under `prefix` created before `revision`, if any.
    pub(crate) fn predecessor(
        &self,
        prefix: &[u8],
        revision: i64,
    ) -> Result<Option<Vec<u8>>, Status> {
        let found = self
            .state
            .reader
            .range(&RangeRequest {
                key: prefix.to_vec(),
                range_end: prefix_end(prefix),
                max_create_revision: revision - 1,
                sort_order: SortOrder::Descend as i32,
                sort_target: SortTarget::Create as i32,
                limit: 1,
                keys_only: true,
                ..RangeRequest::default()
            })
            .map_err(Status::from)?;
        Ok(found.kvs.into_iter().next().map(|kv| kv.key))
    }
}

/// What [`Recipes::create_if_missing`] found or made.
pub(crate) struct Candidacy {
    /// True if the key was created now.
    pub(crate) created: bool,
    /// The key's create revision.
    pub(crate) create_revision: i64,
    /// The key's value, when it existed already.
    pub(crate) existing_value: Option<Vec<u8>>,
}

/// Deletes a lock key the caller gave up waiting for (its call was dropped), unless disarmed.
struct Abandoned {
    state: Arc<ServiceState>,
    key: Option<Vec<u8>>,
}

impl Drop for Abandoned {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            let kv = KvService(Arc::clone(&self.state));
            tokio::spawn(async move {
                let delete = DeleteRangeRequest {
                    key,
                    ..DeleteRangeRequest::default()
                };
                if let Err(status) = kv.delete_range(Request::new(delete)).await {
                    tracing::debug!("removing an abandoned lock key: {}", status.message());
                }
            });
        }
    }
}

#[tonic::async_trait]
impl Lock for LockService {
    async fn lock(&self, request: Request<LockRequest>) -> Result<Response<LockResponse>, Status> {
        let request = request.into_inner();
        if request.name.is_empty() {
            return Err(Status::invalid_argument("etcdserver: key is not provided"));
        }
        if request.lease <= 0 {
            return Err(Status::not_found("etcdserver: requested lease not found"));
        }
        let mut prefix = request.name.clone();
        prefix.push(b'/');
        let mut key = prefix.clone();
        key.extend_from_slice(format!("{:x}", request.lease).as_bytes());
        // Created if missing, as the lease's own: a holder asking again gets its own key.
        let candidacy = self
            .recipes
            .create_if_missing(&key, Vec::new(), request.lease)
            .await?;
        let my_revision = candidacy.create_revision;
        let mut abandoned = Abandoned {
            state: Arc::clone(&self.recipes.state),
            key: candidacy.created.then(|| key.clone()),
        };
        // Held once nobody created a key under the name before this one.
        while let Some(older) = self.recipes.predecessor(&prefix, my_revision)? {
            self.recipes.deleted(&older).await?;
            if !self.recipes.exists(&key)? {
                abandoned.key = None;
                return Err(Status::not_found("etcdserver: requested lease not found"));
            }
        }
        abandoned.key = None;
        Ok(Response::new(LockResponse {
            header: Some(self.recipes.header()),
            key,
        }))
    }

    async fn unlock(
        &self,
        request: Request<UnlockRequest>,
    ) -> Result<Response<UnlockResponse>, Status> {
        let delete = DeleteRangeRequest {
            key: request.into_inner().key,
            ..DeleteRangeRequest::default()
        };
        let deleted = self
            .recipes
            .kv()
            .delete_range(Request::new(delete))
            .await?
            .into_inner();
        Ok(Response::new(UnlockResponse {
            header: deleted.header,
        }))
    }
}
