//! etcd's Lease service, and the leader's lessor that decides when leases expire.
//!
//! Which leases exist is replicated state (the MVCC store applies grants and revokes from the
//! log, so every member deletes a revoked lease's keys at the same revision). When a lease
//! expires is decided by the leader alone, from its own clock: it keeps every lease's expiry
//! in memory, renews it on each keep-alive, and proposes the revocation of a lease whose
//! expiry passed. Keep-alives and time-to-live questions go to the leader (a follower
//! forwards them), as in etcd.
//!
//! Failover: every checkpoint interval the leader records each lease's remaining TTL through
//! the log (etcd's lease checkpointing, on by default here), and a keep-alive of a
//! checkpointed lease clears its checkpoint. A new leader gives every lease its remaining TTL
//! as last checkpointed (its whole TTL without a checkpoint) plus an election timeout, from the
//! moment it takes over: a holder that kept its lease alive is not expired because the leader
//! changed, and leader churn cannot keep a lease whose holder is gone alive forever: a new
//! leader checkpoints one election timeout after taking over, once the extension it gave is
//! spent, so each change adds at most an election timeout and the time since the last
//! checkpoint. Left for later: a leader that could not run for
//! longer than a TTL (a long pause) may expire leases as soon as it resumes.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tonic::{Request, Response, Status, Streaming};

use crate::proto::etcdserverpb::lease_client::LeaseClient;
use crate::proto::etcdserverpb::lease_server::Lease;
use crate::proto::etcdserverpb::{
    LeaseGrantRequest, LeaseGrantResponse, LeaseKeepAliveRequest, LeaseKeepAliveResponse,
    LeaseLeasesRequest, LeaseLeasesResponse, LeaseRevokeRequest, LeaseRevokeResponse, LeaseStatus,
    LeaseTimeToLiveRequest, LeaseTimeToLiveResponse,
};
use crate::proto::flotillapb::{internal_request, LeaseCheckpoint, LeaseCheckpoints};
use crate::runtime::{Applied, ServerError};
use crate::services::{to_status, ServiceState};

/// The largest TTL a lease may be granted, in seconds, as etcd's.
pub const LEASE_TTL_MAX_SECONDS: i64 = 9_000_000_000;

/// How often the leader looks for expired leases.
const EXPIRY_CHECK_INTERVAL: Duration = Duration::from_millis(100);

/// How long the leader waits before proposing an expired lease's revocation again.
const REVOKE_RETRY: Duration = Duration::from_secs(2);

/// Keep-alive answers queued for one stream.
const KEEP_ALIVE_QUEUE_MAX: usize = 64;

/// The smallest TTL, in seconds, for an election timeout: one and a half of them, rounded up,
/// as etcd computes it, so that a lease outlives the election that follows a leader's loss.
pub fn lease_ttl_min_seconds(election_timeout: Duration) -> i64 {
    let millis = election_timeout.as_millis() as i64 * 3 / 2;
    (millis + 999) / 1000
}

/// The leader's view of when each lease expires.
#[derive(Default)]
struct Expiries {
    /// The term this member has led in, when it leads.
    leader_term: Option<u64>,
    /// Each lease's expiry, on this member's clock.
    expiry: HashMap<i64, Instant>,
}

/// The Lease service of one member, with its lessor.
pub struct LeaseService {
    state: Arc<ServiceState>,
    expiries: Arc<Mutex<Expiries>>,
    election_timeout: Duration,
}

/// The lessor's settings.
#[derive(Clone, Copy, Debug)]
pub struct LessorConfig {
    /// The election timeout: a new leader adds it to every lease, and the minimum TTL
    /// derives from it.
    pub election_timeout: Duration,
    /// How often the leader checkpoints leases' remaining TTLs through the log.
    pub checkpoint_interval: Duration,
}

impl LeaseService {
    /// The service over a member's shared state; starts the lessor's task, which acts only
    /// while this member leads.
    pub fn new(state: Arc<ServiceState>, config: LessorConfig) -> LeaseService {
        let expiries = Arc::new(Mutex::new(Expiries::default()));
        tokio::spawn(run_lessor(
            Arc::clone(&state),
            Arc::clone(&expiries),
            config,
        ));
        LeaseService {
            state,
            expiries,
            election_timeout: config.election_timeout,
        }
    }

    fn is_leader(&self) -> Result<Option<u64>, Status> {
        let status = self.state.node.status();
        match status.leader {
            None => Err(to_status(ServerError::NoLeader)),
            Some(leader) if leader == status.id => Ok(None),
            Some(leader) => Ok(Some(leader)),
        }
    }

    async fn leader_client(
        &self,
        leader: u64,
    ) -> Result<LeaseClient<tonic::transport::Channel>, Status> {
        Ok(LeaseClient::new(
            self.state.leader_channel_waiting(leader).await?,
        ))
    }

    /// Renews a lease on the leader's clock.
    fn renew(&self, id: i64, ttl: i64) {
        let mut expiries = self.expiries.lock().expect("no lessor panics");
        if expiries.leader_term.is_some() {
            expiries
                .expiry
                .insert(id, Instant::now() + Duration::from_secs(ttl.max(0) as u64));
        }
    }

    /// A keep-alive of one lease: on the leader, renewed (TTL 0 if it does not exist), else
    /// forwarded to it.
    async fn keep_alive_once(&self, id: i64) -> Result<LeaseKeepAliveResponse, Status> {
        if let Some(leader) = self.is_leader()? {
            let mut client = self.leader_client(leader).await?;
            let mut answers = client
                .lease_keep_alive(tonic::codegen::tokio_stream::iter([
                    LeaseKeepAliveRequest { id },
                ]))
                .await?
                .into_inner();
            let mut answer = answers
                .message()
                .await?
                .ok_or_else(|| to_status(ServerError::LeaderChanged))?;
            answer.header = Some(self.state.header(self.state.reader.current_revision()));
            return Ok(answer);
        }
        let ttl = match self.state.reader.lease_ttl(id) {
            Some(ttl) => {
                self.renew(id, ttl);
                if self.state.reader.lease_checkpointed(id) {
                    // Renewed, the lease has its whole TTL again: a successor must not take
                    // the older checkpoint's remaining TTL for it.
                    let clear = internal_request::Request::LeaseCheckpoints(LeaseCheckpoints {
                        checkpoints: vec![LeaseCheckpoint {
                            id,
                            remaining_ttl: 0,
                        }],
                    });
                    let state = Arc::clone(&self.state);
                    tokio::spawn(async move {
                        if let Err(error) = state.node.propose(clear).await {
                            tracing::debug!("clearing lease {id:x}'s checkpoint: {error}");
                        }
                    });
                }
                ttl
            }
            None => 0,
        };
        Ok(LeaseKeepAliveResponse {
            header: Some(self.state.header(self.state.reader.current_revision())),
            id,
            ttl,
        })
    }
}

/// A unique lease id for a grant that did not choose one: positive, from the clock and the
/// member's id. Rationale: members grant concurrently and a collision is refused by the
/// store ("lease already exists"), so ids need only be unlikely to repeat.
fn new_lease_id(member_id: u64, taken: impl Fn(i64) -> bool) -> i64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_nanos() as u64);
    lease_id_from(nanos ^ member_id.rotate_left(32), taken)
}

/// The first id from `seed` on that is positive and not `taken`.
fn lease_id_from(seed: u64, taken: impl Fn(i64) -> bool) -> i64 {
    let mut candidate = seed;
    loop {
        // SplitMix64's finalizer spreads consecutive clock readings over the whole range.
        let mut mixed = candidate;
        mixed = (mixed ^ (mixed >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        mixed = (mixed ^ (mixed >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        mixed ^= mixed >> 31;
        let id = (mixed & (i64::MAX as u64)) as i64;
        if id != 0 && !taken(id) {
            return id;
        }
        candidate = candidate.wrapping_add(1);
    }
}

type KeepAliveStream = Pin<
    Box<dyn tokio_stream::Stream<Item = Result<LeaseKeepAliveResponse, Status>> + Send + 'static>,
>;

#[tonic::async_trait]
impl Lease for Arc<LeaseService> {
    async fn lease_grant(
        &self,
        request: Request<LeaseGrantRequest>,
    ) -> Result<Response<LeaseGrantResponse>, Status> {
        let request = request.into_inner();
        if request.ttl > LEASE_TTL_MAX_SECONDS {
            return Err(Status::out_of_range("etcdserver: too large lease TTL"));
        }
        if request.id < 0 {
            return Err(Status::invalid_argument(
                "etcdserver: lease ID must be positive",
            ));
        }
        // As etcd: while the store is out of space, no new lease (it would hold new keys).
        if self
            .state
            .alarm_raised(crate::proto::etcdserverpb::AlarmType::Nospace)
        {
            return Err(Status::resource_exhausted(
                "etcdserver: mvcc: database space exceeded",
            ));
        }
        let ttl = request
            .ttl
            .max(lease_ttl_min_seconds(self.election_timeout));
        let id = if request.id != 0 {
            request.id
        } else {
            new_lease_id(self.state.node.id(), |id| {
                self.state.reader.lease_ttl(id).is_some()
            })
        };
        let granted = self
            .state
            .propose_or_forward(
                internal_request::Request::LeaseGrant(LeaseGrantRequest { ttl, id }),
                |applied| match applied {
                    Applied::LeaseGrant(response) => Some(response),
                    _ => None,
                },
                |leader| async move {
                    LeaseClient::new(leader)
                        .lease_grant(LeaseGrantRequest { ttl, id })
                        .await
                },
            )
            .await?;
        // A no-op unless this member leads (a follower's leader renews it in its own call).
        self.renew(granted.get_ref().id, granted.get_ref().ttl);
        Ok(granted)
    }

    async fn lease_revoke(
        &self,
        request: Request<LeaseRevokeRequest>,
    ) -> Result<Response<LeaseRevokeResponse>, Status> {
        let request = request.into_inner();
        let revoked = self
            .state
            .propose_or_forward(
                internal_request::Request::LeaseRevoke(request),
                |applied| match applied {
                    Applied::LeaseRevoke(response) => Some(response),
                    _ => None,
                },
                |leader| async move { LeaseClient::new(leader).lease_revoke(request).await },
            )
            .await?;
        self.expiries
            .lock()
            .expect("no lessor panics")
            .expiry
            .remove(&request.id);
        Ok(revoked)
    }

    type LeaseKeepAliveStream = KeepAliveStream;

    async fn lease_keep_alive(
        &self,
        request: Request<Streaming<LeaseKeepAliveRequest>>,
    ) -> Result<Response<Self::LeaseKeepAliveStream>, Status> {
        let mut requests = request.into_inner();
        let (answers, stream) = mpsc::channel(KEEP_ALIVE_QUEUE_MAX);
        let service = Arc::clone(self);
        tokio::spawn(async move {
            loop {
                let request = match requests.message().await {
                    Ok(Some(request)) => request,
                    Ok(None) | Err(_) => return,
                };
                let answer = service.keep_alive_once(request.id).await;
                let failed = answer.is_err();
                if answers.send(answer).await.is_err() || failed {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(stream),
        )))
    }

    async fn lease_time_to_live(
        &self,
        request: Request<LeaseTimeToLiveRequest>,
    ) -> Result<Response<LeaseTimeToLiveResponse>, Status> {
        let request = request.into_inner();
        if let Some(leader) = self.is_leader()? {
            let mut response = self
                .leader_client(leader)
                .await?
                .lease_time_to_live(request)
                .await?
                .into_inner();
            response.header = Some(self.state.header(self.state.reader.current_revision()));
            return Ok(Response::new(response));
        }
        let header = Some(self.state.header(self.state.reader.current_revision()));
        let Some(granted_ttl) = self.state.reader.lease_ttl(request.id) else {
            return Ok(Response::new(LeaseTimeToLiveResponse {
                header,
                id: request.id,
                ttl: -1,
                granted_ttl: 0,
                keys: Vec::new(),
            }));
        };
        let expiry = self
            .expiries
            .lock()
            .expect("no lessor panics")
            .expiry
            .get(&request.id)
            .copied();
        // A lease this leader has not taken over yet has its whole TTL left.
        let remaining = expiry.map_or(granted_ttl, |expiry| {
            expiry.saturating_duration_since(Instant::now()).as_secs() as i64
        });
        Ok(Response::new(LeaseTimeToLiveResponse {
            header,
            id: request.id,
            ttl: remaining,
            granted_ttl,
            keys: if request.keys {
                self.state.reader.lease_keys(request.id)
            } else {
                Vec::new()
            },
        }))
    }

    async fn lease_leases(
        &self,
        _: Request<LeaseLeasesRequest>,
    ) -> Result<Response<LeaseLeasesResponse>, Status> {
        let leases = self
            .state
            .reader
            .leases()
            .into_iter()
            .map(|(id, _)| LeaseStatus { id })
            .collect();
        Ok(Response::new(LeaseLeasesResponse {
            header: Some(self.state.header(self.state.reader.current_revision())),
            leases,
        }))
    }
}

/// The leader's lessor: while this member leads, it tracks every lease's expiry, proposes the
/// revocation of each that passed it, and checkpoints the remaining TTLs every
/// `checkpoint_interval`; it forgets everything when leadership goes.
async fn run_lessor(
    state: Arc<ServiceState>,
    expiries: Arc<Mutex<Expiries>>,
    config: LessorConfig,
) {
    let mut interval = tokio::time::interval(EXPIRY_CHECK_INTERVAL);
    let mut last_checkpoint = Instant::now();
    loop {
        interval.tick().await;
        let status = state.node.status();
        let leads = status.leader == Some(status.id);
        let leases = if leads {
            state.reader.leases_remaining()
        } else {
            Vec::new()
        };
        let now = Instant::now();
        let checkpoint_due = now.duration_since(last_checkpoint) >= config.checkpoint_interval;
        let (expired, checkpoints, took_over) = {
            let mut expiries = expiries.lock().expect("no lessor panics");
            if !leads {
                expiries.leader_term = None;
                expiries.expiry.clear();
                continue;
            }
            let taking_over = expiries.leader_term != Some(status.term);
            if taking_over {
                // Every lease gets what it had left at the last checkpoint, and an election
                // timeout, from now: its holder may have renewed it on the old leader a
                // moment ago.
                expiries.expiry.clear();
                expiries.leader_term = Some(status.term);
            }
            let extension = if taking_over {
                config.election_timeout
            } else {
                Duration::ZERO
            };
            let existing: std::collections::HashSet<i64> =
                leases.iter().map(|&(id, _)| id).collect();
            expiries.expiry.retain(|id, _| existing.contains(id));
            for &(id, remaining) in &leases {
                expiries.expiry.entry(id).or_insert_with(|| {
                    now + extension + Duration::from_secs(remaining.max(0) as u64)
                });
            }
            let expired: Vec<i64> = expiries
                .expiry
                .iter()
                .filter(|(_, &expiry)| expiry <= now)
                .map(|(&id, _)| id)
                .collect();
            for id in &expired {
                expiries.expiry.insert(*id, now + REVOKE_RETRY);
            }
            let checkpoints: Vec<LeaseCheckpoint> = if checkpoint_due {
                expiries
                    .expiry
                    .iter()
                    .filter(|(id, _)| !expired.contains(id))
                    .map(|(&id, &expiry)| LeaseCheckpoint {
                        id,
                        // Rounded up: a checkpoint never shortens a lease.
                        remaining_ttl: expiry
                            .saturating_duration_since(now)
                            .as_millis()
                            .div_ceil(1000) as i64,
                    })
                    .filter(|checkpoint| checkpoint.remaining_ttl > 0)
                    .collect()
            } else {
                Vec::new()
            };
            (expired, checkpoints, taking_over)
        };
        if checkpoint_due {
            last_checkpoint = now;
        }
        if took_over {
            // The first checkpoint one election timeout after taking over: by then the
            // extension given at takeover is spent, so what is recorded is no more than what
            // the last leader recorded, and leaders that follow each other quickly cannot
            // keep extending a lease whose holder is gone.
            let wait = config
                .checkpoint_interval
                .saturating_sub(config.election_timeout);
            last_checkpoint = now.checked_sub(wait).unwrap_or(now);
        }
        if !checkpoints.is_empty() {
            let state = Arc::clone(&state);
            tokio::spawn(async move {
                let checkpoint =
                    internal_request::Request::LeaseCheckpoints(LeaseCheckpoints { checkpoints });
                if let Err(error) = state.node.propose(checkpoint).await {
                    tracing::debug!("checkpointing leases: {error}");
                }
            });
        }
        for id in expired {
            let state = Arc::clone(&state);
            tokio::spawn(async move {
                let revoke = internal_request::Request::LeaseRevoke(LeaseRevokeRequest { id });
                if let Err(error) = state.node.propose(revoke).await {
                    tracing::debug!("revoking expired lease {id:x}: {error}");
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_minimum_ttl_is_one_and_a_half_election_timeouts_rounded_up() {
        assert_eq!(lease_ttl_min_seconds(Duration::from_millis(1000)), 2);
        assert_eq!(lease_ttl_min_seconds(Duration::from_millis(500)), 1);
        assert_eq!(lease_ttl_min_seconds(Duration::from_millis(2000)), 3);
    }

    #[test]
    fn new_lease_ids_are_positive_and_skip_taken_ones() {
        for seed in [0, 1, u64::MAX, 0x8000_0000_0000_0000] {
            let first = lease_id_from(seed, |_| false);
            assert!(first > 0);
            let second = lease_id_from(seed, |id| id == first);
            assert!(second > 0);
            assert_ne!(second, first);
        }
        assert!(new_lease_id(7, |_| false) > 0);
    }
}
