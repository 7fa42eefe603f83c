//! etcd's Lease service against a real three-node Flotilla cluster, through the generated
//! gRPC client: grants (the id chosen or not, the TTL raised to the minimum), keep-alives,
//! time-to-live with keys, the list, puts on missing leases refused, expiry deleting a
//! lease's keys at one revision (seen by a watcher), revocation through a follower, TTLs across
//! a leader change, and etcd's Lock service over leases. Base ports 23650, 23850, 23950.

mod support;

use std::time::Duration;

use server::proto::etcdserverpb::kv_client::KvClient;
use server::proto::etcdserverpb::lease_client::LeaseClient;
use server::proto::etcdserverpb::watch_client::WatchClient;
use server::proto::etcdserverpb::watch_request::RequestUnion;
use server::proto::etcdserverpb::{
    LeaseGrantRequest, LeaseKeepAliveRequest, LeaseLeasesRequest, LeaseRevokeRequest,
    LeaseTimeToLiveRequest, PutRequest, RangeRequest, WatchCreateRequest, WatchRequest,
};
use server::proto::mvccpb::event::EventType;
use support::Cluster;
use tonic::transport::Channel;

async fn connect(endpoint: &str) -> Channel {
    Channel::from_shared(format!("http://{endpoint}"))
        .expect("a valid URL")
        .connect()
        .await
        .expect("the member accepts a connection")
}

fn block_on<T>(future: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
        .block_on(future)
}

async fn put_with_lease(
    kv: &mut KvClient<Channel>,
    key: &str,
    lease: i64,
) -> Result<i64, tonic::Status> {
    kv.put(PutRequest {
        key: key.into(),
        value: b"held".to_vec(),
        lease,
        ..PutRequest::default()
    })
    .await
    .map(|response| response.into_inner().header.expect("a header").revision)
}

/// A lease of 60 s, granted through `leases`; its id.
async fn grant_60s(leases: &LeaseClient<Channel>) -> i64 {
    leases
        .clone()
        .lease_grant(LeaseGrantRequest { ttl: 60, id: 0 })
        .await
        .expect("a grant")
        .into_inner()
        .id
}

async fn exists(kv: &mut KvClient<Channel>, key: &str) -> bool {
    let response = kv
        .range(RangeRequest {
            key: key.into(),
            ..RangeRequest::default()
        })
        .await
        .expect("the read");
    !response.into_inner().kvs.is_empty()
}

#[test]
fn leases_are_granted_kept_alive_expire_with_their_keys_and_are_revoked() {
    // Election timeout 500 ms: the minimum TTL is 1 s.
    let cluster = Cluster::start(3, 23650, &[]);
    let leader = cluster.wait_for_leader(&[0, 1, 2]);
    let follower = (0..3).find(|&index| index != leader).expect("a follower");
    block_on(async {
        // Everything through a follower: it forwards what the leader must answer.
        let channel = connect(&cluster.nodes[follower].endpoint()).await;
        let mut lease = LeaseClient::new(channel.clone());
        let mut kv = KvClient::new(channel.clone());

        // A server-chosen id; a TTL below the minimum is raised to it.
        let granted = lease
            .lease_grant(LeaseGrantRequest { ttl: 0, id: 0 })
            .await
            .expect("the grant")
            .into_inner();
        assert!(granted.id > 0);
        assert_eq!(granted.ttl, 1);
        // A chosen id, and the same id again refused with etcd's error.
        let chosen = 0x1234;
        let granted = lease
            .lease_grant(LeaseGrantRequest { ttl: 3, id: chosen })
            .await
            .expect("the grant of a chosen id")
            .into_inner();
        assert_eq!((granted.id, granted.ttl), (chosen, 3));
        let again = lease
            .lease_grant(LeaseGrantRequest { ttl: 3, id: chosen })
            .await
            .expect_err("a lease id in use");
        assert_eq!(again.message(), "etcdserver: lease already exists");
        let listed = lease
            .lease_leases(LeaseLeasesRequest {})
            .await
            .expect("the list")
            .into_inner();
        assert!(listed.leases.iter().any(|status| status.id == chosen));

        // Keys on the lease, and a put on a missing lease refused.
        put_with_lease(&mut kv, "session/a", chosen)
            .await
            .expect("put a");
        put_with_lease(&mut kv, "session/b", chosen)
            .await
            .expect("put b");
        let missing = put_with_lease(&mut kv, "session/c", 999).await;
        assert_eq!(
            missing.expect_err("a missing lease").message(),
            "etcdserver: requested lease not found"
        );
        let live = lease
            .lease_time_to_live(LeaseTimeToLiveRequest {
                id: chosen,
                keys: true,
            })
            .await
            .expect("time to live")
            .into_inner();
        assert_eq!(live.granted_ttl, 3);
        assert!((0..=3).contains(&live.ttl), "{live:?}");
        assert_eq!(live.keys, [b"session/a".to_vec(), b"session/b".to_vec()]);

        // Kept alive past its TTL, the keys stay.
        let (requests, receiver) = tokio::sync::mpsc::channel(4);
        let mut answers = lease
            .lease_keep_alive(tonic::codegen::tokio_stream::wrappers::ReceiverStream::new(
                receiver,
            ))
            .await
            .expect("the keep-alive stream")
            .into_inner();
        for _ in 0..8 {
            requests
                .send(LeaseKeepAliveRequest { id: chosen })
                .await
                .expect("the stream takes requests");
            let answer = answers.message().await.expect("an answer").expect("more");
            assert_eq!((answer.id, answer.ttl), (chosen, 3));
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        assert!(
            exists(&mut kv, "session/a").await,
            "kept alive for 4 s, TTL 3 s"
        );

        // Left alone, it expires: both keys go at one revision, which a watcher sees.
        let (watch_requests, watch_receiver) = tokio::sync::mpsc::channel(1);
        watch_requests
            .send(WatchRequest {
                request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
                    key: b"session/".to_vec(),
                    range_end: b"session0".to_vec(),
                    ..WatchCreateRequest::default()
                })),
            })
            .await
            .expect("the watch request");
        let mut watch = WatchClient::new(channel.clone())
            .watch(tonic::codegen::tokio_stream::wrappers::ReceiverStream::new(
                watch_receiver,
            ))
            .await
            .expect("the watch stream")
            .into_inner();
        let created = watch.message().await.expect("created").expect("more");
        assert!(created.created);
        drop(requests);
        let deleted = tokio::time::timeout(Duration::from_secs(10), watch.message())
            .await
            .expect("the lease expires within 10 s")
            .expect("the stream")
            .expect("more");
        let kinds: Vec<(i32, Vec<u8>, i64)> = deleted
            .events
            .iter()
            .map(|event| {
                let kv = event.kv.as_ref().expect("a kv");
                (event.r#type, kv.key.clone(), kv.mod_revision)
            })
            .collect();
        assert_eq!(kinds.len(), 2, "{kinds:?}");
        assert!(kinds.iter().all(
            |(kind, _, revision)| *kind == EventType::Delete as i32 && *revision == kinds[0].2
        ));
        assert!(!exists(&mut kv, "session/a").await);
        let expired = lease
            .lease_time_to_live(LeaseTimeToLiveRequest {
                id: chosen,
                keys: false,
            })
            .await
            .expect("time to live of an expired lease")
            .into_inner();
        assert_eq!(expired.ttl, -1);

        // Revoked at once, with its key.
        let revocable = lease
            .lease_grant(LeaseGrantRequest { ttl: 60, id: 0 })
            .await
            .expect("a grant")
            .into_inner()
            .id;
        put_with_lease(&mut kv, "session/r", revocable)
            .await
            .expect("put r");
        lease
            .lease_revoke(LeaseRevokeRequest { id: revocable })
            .await
            .expect("the revoke");
        assert!(!exists(&mut kv, "session/r").await);
        let twice = lease
            .lease_revoke(LeaseRevokeRequest { id: revocable })
            .await
            .expect_err("a revoked lease");
        assert_eq!(twice.message(), "etcdserver: requested lease not found");
    });
}

/// Across a leader change a lease keeps the TTL it had left, as the old leader checkpointed
/// it, instead of starting its whole TTL again: a lease of 10 s left alone, whose leader is
/// killed 6 s in, expires about 10 s after its grant (never before, and well before the 16 s
/// a restarted TTL would give).
#[test]
fn a_lease_left_alone_expires_on_time_across_a_leader_change() {
    let mut cluster = Cluster::start(
        3,
        23850,
        &["--experimental-lease-checkpoint-interval", "1s"],
    );
    let all = [0, 1, 2];
    let leader = cluster.wait_for_leader(&all);
    let survivors: Vec<usize> = all
        .iter()
        .copied()
        .filter(|&index| index != leader)
        .collect();
    let (granted_at, id) = block_on(async {
        let channel = connect(&cluster.nodes[leader].endpoint()).await;
        let id = LeaseClient::new(channel.clone())
            .lease_grant(LeaseGrantRequest { ttl: 10, id: 0 })
            .await
            .expect("the grant")
            .into_inner()
            .id;
        let granted_at = std::time::Instant::now();
        put_with_lease(&mut KvClient::new(channel), "held", id)
            .await
            .expect("the put");
        (granted_at, id)
    });
    std::thread::sleep(Duration::from_secs(6).saturating_sub(granted_at.elapsed()));
    cluster.nodes[leader].kill();
    cluster.wait_for_leader(&survivors);
    let gone_after = block_on(async {
        let mut kv = KvClient::new(connect(&cluster.nodes[survivors[0]].endpoint()).await);
        loop {
            let held = kv
                .range(RangeRequest {
                    key: b"held".to_vec(),
                    serializable: true,
                    ..RangeRequest::default()
                })
                .await
                .map(|response| !response.into_inner().kvs.is_empty())
                .unwrap_or(true);
            if !held || granted_at.elapsed() > Duration::from_secs(30) {
                return granted_at.elapsed();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    assert!(
        gone_after >= Duration::from_millis(9500),
        "lease {id:x} expired {gone_after:?} after its grant, before its TTL"
    );
    assert!(
        gone_after <= Duration::from_millis(14500),
        "lease {id:x} outlived its TTL by {:?} across one leader change",
        gone_after.saturating_sub(Duration::from_secs(10))
    );
}

/// etcd's Lock service: a lock held under one lease makes a second locker wait until it is
/// unlocked; the next holder's key is newer (its create revision is a fencing token); a
/// revoked lease releases its lock; a missing lease is refused.
#[test]
fn the_lock_service_serializes_holders() {
    use server::proto::v3lockpb::lock_client::LockClient;
    use server::proto::v3lockpb::{LockRequest, UnlockRequest};

    let cluster = Cluster::start(3, 23950, &[]);
    let leader = cluster.wait_for_leader(&[0, 1, 2]);
    let follower = (0..3).find(|&index| index != leader).expect("a follower");
    block_on(async {
        let channel = connect(&cluster.nodes[follower].endpoint()).await;
        let mut leases = LeaseClient::new(channel.clone());
        let (first_lease, second_lease, third_lease) = (
            grant_60s(&leases).await,
            grant_60s(&leases).await,
            grant_60s(&leases).await,
        );
        let mut lock = LockClient::new(channel.clone());
        let first = lock
            .lock(LockRequest {
                name: b"the-lock".to_vec(),
                lease: first_lease,
            })
            .await
            .expect("the first lock")
            .into_inner()
            .key;
        assert_eq!(first, format!("the-lock/{first_lease:x}").into_bytes());

        let mut second_locker = lock.clone();
        let second = tokio::spawn(async move {
            second_locker
                .lock(LockRequest {
                    name: b"the-lock".to_vec(),
                    lease: second_lease,
                })
                .await
                .map(|response| response.into_inner().key)
        });
        tokio::time::sleep(Duration::from_millis(1000)).await;
        assert!(!second.is_finished(), "the second locker did not wait");
        lock.unlock(UnlockRequest { key: first.clone() })
            .await
            .expect("the unlock");
        let second = tokio::time::timeout(Duration::from_secs(10), second)
            .await
            .expect("the second lock within 10 s of the unlock")
            .expect("the task")
            .expect("the second lock");
        assert_eq!(second, format!("the-lock/{second_lease:x}").into_bytes());

        // The third waits for the second, whose lease is revoked: that releases it.
        let mut third_locker = lock.clone();
        let third = tokio::spawn(async move {
            third_locker
                .lock(LockRequest {
                    name: b"the-lock".to_vec(),
                    lease: third_lease,
                })
                .await
                .map(|response| response.into_inner().key)
        });
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(!third.is_finished(), "the third locker did not wait");
        leases
            .lease_revoke(LeaseRevokeRequest { id: second_lease })
            .await
            .expect("the revoke");
        let third = tokio::time::timeout(Duration::from_secs(10), third)
            .await
            .expect("the third lock within 10 s of the revoke")
            .expect("the task")
            .expect("the third lock");
        let mut kv = KvClient::new(channel.clone());
        let held = kv
            .range(RangeRequest {
                key: third.clone(),
                ..RangeRequest::default()
            })
            .await
            .expect("the read")
            .into_inner();
        assert_eq!(held.kvs.len(), 1);
        assert_eq!(held.kvs[0].lease, third_lease);

        let refused = lock
            .lock(LockRequest {
                name: b"the-lock".to_vec(),
                lease: 12345,
            })
            .await
            .expect_err("a missing lease");
        assert_eq!(refused.message(), "etcdserver: requested lease not found");
    });
}

/// etcd's Election service: the first campaigner leads, a second waits; the leader proclaims
/// a new value, which an observer sees; when the leader resigns the second leads; a candidate
/// that no longer leads cannot proclaim.
#[test]
fn the_election_service_elects_one_leader_at_a_time() {
    use server::proto::v3electionpb::election_client::ElectionClient;
    use server::proto::v3electionpb::{
        CampaignRequest, LeaderRequest, ProclaimRequest, ResignRequest,
    };

    let cluster = Cluster::start(3, 24050, &[]);
    let leader = cluster.wait_for_leader(&[0, 1, 2]);
    let follower = (0..3).find(|&index| index != leader).expect("a follower");
    block_on(async {
        let channel = connect(&cluster.nodes[follower].endpoint()).await;
        let leases = LeaseClient::new(channel.clone());
        let (alice_lease, bob_lease) = (grant_60s(&leases).await, grant_60s(&leases).await);
        let mut election = ElectionClient::new(channel.clone());
        let name = b"the-election".to_vec();
        let alice = election
            .campaign(CampaignRequest {
                name: name.clone(),
                lease: alice_lease,
                value: b"alice".to_vec(),
            })
            .await
            .expect("alice's campaign")
            .into_inner()
            .leader
            .expect("a leader key");
        let mut observer = election
            .observe(LeaderRequest { name: name.clone() })
            .await
            .expect("the observer")
            .into_inner();
        let seen = observer.message().await.expect("observed").expect("more");
        assert_eq!(seen.kv.expect("a kv").value, b"alice");

        let mut bob_campaigner = election.clone();
        let bob_name = name.clone();
        let bob = tokio::spawn(async move {
            bob_campaigner
                .campaign(CampaignRequest {
                    name: bob_name,
                    lease: bob_lease,
                    value: b"bob".to_vec(),
                })
                .await
                .map(|response| response.into_inner().leader.expect("a leader key"))
        });
        tokio::time::sleep(Duration::from_millis(1000)).await;
        assert!(!bob.is_finished(), "bob led while alice did");

        election
            .proclaim(ProclaimRequest {
                leader: Some(alice.clone()),
                value: b"alice again".to_vec(),
            })
            .await
            .expect("alice proclaims");
        let seen = observer.message().await.expect("observed").expect("more");
        assert_eq!(seen.kv.expect("a kv").value, b"alice again");
        let current = election
            .leader(LeaderRequest { name: name.clone() })
            .await
            .expect("the leader")
            .into_inner();
        assert_eq!(current.kv.expect("a kv").key, alice.key);

        election
            .resign(ResignRequest {
                leader: Some(alice.clone()),
            })
            .await
            .expect("alice resigns");
        let bob = tokio::time::timeout(Duration::from_secs(10), bob)
            .await
            .expect("bob leads within 10 s of the resignation")
            .expect("the task")
            .expect("bob's campaign");
        assert_eq!(bob.key, format!("the-election/{bob_lease:x}").into_bytes());
        assert!(bob.rev > alice.rev);
        let seen = observer.message().await.expect("observed").expect("more");
        assert_eq!(seen.kv.expect("a kv").value, b"bob");
        let refused = election
            .proclaim(ProclaimRequest {
                leader: Some(alice),
                value: b"usurper".to_vec(),
            })
            .await
            .expect_err("alice no longer leads");
        assert_eq!(refused.message(), "etcdserver: election: not leader");
    });
}

/// A locker that gives up waiting (its call is canceled) leaves no key behind: otherwise the
/// lock would pass to a caller that is gone and stay stuck until its lease expired.
#[test]
fn a_canceled_lock_call_removes_its_key() {
    use server::proto::v3lockpb::lock_client::LockClient;
    use server::proto::v3lockpb::LockRequest;

    let cluster = Cluster::start(1, 24150, &[]);
    block_on(async {
        let channel = connect(&cluster.nodes[0].endpoint()).await;
        let mut leases = LeaseClient::new(channel.clone());
        let (holder, quitter) = (grant_60s(&leases).await, grant_60s(&leases).await);
        let mut lock = LockClient::new(channel.clone());
        lock.lock(LockRequest {
            name: b"busy".to_vec(),
            lease: holder,
        })
        .await
        .expect("the holder's lock");
        let waited = tokio::time::timeout(
            Duration::from_millis(500),
            lock.lock(LockRequest {
                name: b"busy".to_vec(),
                lease: quitter,
            }),
        )
        .await;
        assert!(waited.is_err(), "the second locker should still be waiting");
        let quitter_key = format!("busy/{quitter:x}");
        let mut kv = KvClient::new(channel);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while exists(&mut kv, &quitter_key).await {
            assert!(
                std::time::Instant::now() < deadline,
                "{quitter_key} is still there 10 s after its locker gave up"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let _ = leases.lease_revoke(LeaseRevokeRequest { id: holder }).await;
    });
}
