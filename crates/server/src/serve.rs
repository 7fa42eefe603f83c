//! One Flotilla node as a process: opens the data directory, starts the peer transport, the
//! node runtime and the client gRPC services, and runs until asked to stop.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};

use raft::ConfigState;
use storage::Bootstrap;
use tokio::sync::mpsc;

use crate::authority::TolerantAuthority;
use crate::config::{InitialClusterState, ServeConfig, TICK_INTERVAL};
use crate::identity::Identity;
use crate::metrics::Metrics;
use crate::mvcc::{
    ApplyOutcome, MvccError, MvccOptions, MvccReader, MvccStore, Response as MvccResponse,
};
use crate::proto::etcdserverpb::cluster_server::ClusterServer;
use crate::proto::etcdserverpb::kv_server::KvServer;
use crate::proto::etcdserverpb::lease_server::LeaseServer;
use crate::proto::etcdserverpb::maintenance_server::MaintenanceServer;
use crate::proto::etcdserverpb::watch_server::WatchServer;
use crate::proto::flotillapb::internal_server::InternalServer;
use crate::proto::flotillapb::{InternalRequest, MemberAttributes};
use crate::runtime::{
    self, Applied, NodeHandle, PeerNetwork, RuntimeConfig, ServerError, StateMachine,
};
use crate::services::{
    ClusterService, InternalService, KvService, MaintenanceService, ServiceState,
};
use crate::transport::{Transport, TransportConfig};

/// The MVCC store as the runtime's state machine.
pub struct KvStateMachine {
    store: Arc<Mutex<MvccStore>>,
    /// For reads that need not wait for an apply holding the store's lock.
    reader: MvccReader,
    /// For a founding member: the initial members, encoded, that the founders' bootstrap
    /// snapshot (which carries no image) stands for.
    initial_members: Option<Vec<u8>>,
}

impl KvStateMachine {
    /// Wraps a store shared with the services. `initial_members` (encoded, length-delimited
    /// `MemberAttributes`) is what a founding member's store holds when it starts from the
    /// bootstrap snapshot; None for a member that joined a running cluster.
    pub fn new(store: Arc<Mutex<MvccStore>>, initial_members: Option<Vec<u8>>) -> KvStateMachine {
        let reader = store.lock().expect("store lock").reader();
        KvStateMachine {
            store,
            reader,
            initial_members,
        }
    }
}

impl StateMachine for KvStateMachine {
    fn applied_index(&self) -> u64 {
        self.store.lock().expect("store lock").applied_index()
    }

    fn apply(
        &self,
        entries: Vec<(u64, Option<InternalRequest>)>,
    ) -> Result<runtime::RequestOutcomes, String> {
        let batch: Vec<(u64, InternalRequest)> = entries
            .into_iter()
            .map(|(index, request)| (index, request.unwrap_or_default()))
            .collect();
        let results = self.store.lock().expect("store lock").apply_batch(&batch);
        Ok(results
            .into_iter()
            .filter_map(|result| {
                let outcome = match result.outcome {
                    ApplyOutcome::Skipped => return None,
                    ApplyOutcome::Applied(MvccResponse::Empty) => return None,
                    ApplyOutcome::Applied(MvccResponse::Put(response)) => {
                        Ok(Applied::Put(response))
                    }
                    ApplyOutcome::Applied(MvccResponse::DeleteRange(response)) => {
                        Ok(Applied::DeleteRange(response))
                    }
                    ApplyOutcome::Applied(MvccResponse::Txn(response)) => {
                        Ok(Applied::Txn(response))
                    }
                    ApplyOutcome::Applied(MvccResponse::Compaction(response)) => {
                        Ok(Applied::Compaction(response))
                    }
                    ApplyOutcome::Applied(MvccResponse::Member) => Ok(Applied::Member),
                    ApplyOutcome::Applied(MvccResponse::LeaseGrant(response)) => {
                        Ok(Applied::LeaseGrant(response))
                    }
                    ApplyOutcome::Applied(MvccResponse::LeaseRevoke(response)) => {
                        Ok(Applied::LeaseRevoke(response))
                    }
                    ApplyOutcome::Applied(MvccResponse::Alarm(response)) => {
                        Ok(Applied::Alarm(response))
                    }
                    ApplyOutcome::Rejected(error) => Err(state_machine_error(error)),
                };
                Some((result.request_id, outcome))
            })
            .collect())
    }

    fn snapshot(&self) -> Result<bytes::Bytes, String> {
        self.store
            .lock()
            .expect("store lock")
            .snapshot()
            .map_err(|error| error.to_string())
    }

    fn restore(&self, image: &[u8]) -> Result<(), String> {
        let mut store = self.store.lock().expect("store lock");
        if image.is_empty() {
            // The founders' bootstrap snapshot (index 1) carries no image: it stands for the
            // store a founder starts with, empty but for the initial members. A leader that has
            // made no snapshot of its own sends it to a member joining with an empty data
            // directory, whose store is empty; the members' attributes arrive with the log
            // after it.
            if store.applied_index() > 1 {
                return Err(format!(
                    "an empty snapshot image cannot replace a store applied up to {}",
                    store.applied_index()
                ));
            }
            if let Some(encoded) = &self.initial_members {
                crate::members::record_initial_members(&mut store, encoded);
            }
            store.record_applied_index(1);
            return Ok(());
        }
        store.restore(image).map_err(|error| error.to_string())
    }

    fn members(&self) -> Vec<MemberAttributes> {
        crate::members::all_members(&self.reader)
    }
}

fn state_machine_error(error: MvccError) -> ServerError {
    ServerError::StateMachine(error.grpc_code(), error.to_string())
}

/// A running node.
pub struct RunningNode {
    /// The runtime's handle.
    pub handle: NodeHandle,
    /// The addresses the client services listen on.
    pub client_addresses: Vec<SocketAddr>,
    transport: Arc<Transport>,
    servers: Vec<tokio::task::JoinHandle<()>>,
}

impl RunningNode {
    /// Stops serving clients and peers.
    pub async fn shutdown(self) {
        for server in &self.servers {
            server.abort();
        }
        self.transport.shutdown().await;
    }
}

/// Counts each new leader the member learns of (its first included), as etcd's
/// `leader_changes_seen_total` does.
async fn count_leader_changes(node: NodeHandle, metrics: Arc<Metrics>) {
    let mut status = node.watch_status();
    let mut leader = None;
    loop {
        let now = status.borrow_and_update().leader;
        if now.is_some() && now != leader {
            metrics.leader_changes.inc();
        }
        leader = now.or(leader);
        if status.changed().await.is_err() {
            return;
        }
    }
}

fn has_existing_data(member_directory: &Path) -> bool {
    std::fs::read_dir(member_directory.join("wal"))
        .map(|mut entries| entries.next().is_some())
        .unwrap_or(false)
}

async fn resolve_address(address: &str) -> Result<SocketAddr, String> {
    tokio::net::lookup_host(address)
        .await
        .map_err(|error| format!("resolving {address}: {error}"))?
        .next()
        .ok_or_else(|| format!("{address} resolves to no address"))
}

/// Starts a node from checked flags.
pub async fn start(config: ServeConfig) -> Result<RunningNode, String> {
    let args = &config.args;
    let member_directory = config.data_dir.join("member");
    std::fs::create_dir_all(&member_directory)
        .map_err(|error| format!("creating {}: {error}", member_directory.display()))?;
    let existing = has_existing_data(&member_directory);
    let identity = resolve_identity(&config, &member_directory, existing)?;
    let member_id = identity.member_id;
    let store = MvccStore::new(MvccOptions::default());
    let founders: Vec<MemberAttributes> = identity
        .founders
        .iter()
        .map(|(id, name, peer_urls)| MemberAttributes {
            id: *id,
            name: name.clone(),
            peer_urls: peer_urls.clone(),
            client_urls: if *id == member_id {
                config.client_urls.clone()
            } else {
                Vec::new()
            },
            is_learner: false,
            removed: false,
        })
        .collect();
    // Only read for an empty data directory: a log on disk starts from itself.
    let bootstrap = if founders.is_empty() {
        Bootstrap::Joiner
    } else {
        Bootstrap::Founder(ConfigState::with_voters(
            founders.iter().map(|member| member.id),
        ))
    };
    let store = Arc::new(Mutex::new(store));
    let initial_members =
        (!founders.is_empty()).then(|| crate::members::encode_initial_members(&founders));
    let peer_address = resolve_address(&config.peer_listen_address).await?;
    let (inbound_sender, inbound) = mpsc::channel(65_536);
    // A founder knows the cluster id from the founding members. A member joining a running
    // cluster does not (its --initial-cluster lists the members of today): it takes the id
    // from the first peer that connects to it, as an etcd member joining learns it from its
    // peers (see TransportConfig::cluster_id), and records it as soon as it has it.
    let transport = Transport::start(
        TransportConfig::new(member_id, identity.cluster_id, peer_address),
        inbound_sender,
    )
    .await
    .map_err(|error| format!("starting the peer transport: {error}"))?;
    let network = Arc::new(transport);
    let known_members = founders.iter().map(|member| (member.id, &member.peer_urls));
    let flagged_members = config.initial_members.iter().map(|member| {
        (
            crate::cluster::member_id(&member.peer_urls, &args.initial_cluster_token),
            &member.peer_urls,
        )
    });
    for (id, peer_urls) in known_members.chain(flagged_members) {
        if id == member_id {
            continue;
        }
        if let Some(address) = crate::members::peer_address(peer_urls) {
            PeerNetwork::set_peer(network.as_ref(), id, address);
        }
    }
    let mut servers = Vec::new();
    if identity.cluster_id == 0 {
        servers.push(tokio::spawn(record_learned_cluster_id(
            Arc::clone(&network),
            identity.clone(),
            member_directory.clone(),
        )));
    }
    let metrics = Metrics::new(member_id, args.quota_backend_bytes);
    let runtime_config = RuntimeConfig {
        id: member_id,
        cluster_id: identity.cluster_id,
        log_directory: member_directory.clone(),
        bootstrap,
        tick_interval: TICK_INTERVAL,
        heartbeat_ticks: config.heartbeat_ticks.max(1),
        election_timeout_ticks: config.election_timeout_ticks.max(2),
        snapshot_entries: args.snapshot_count.max(1),
        request_timeout: std::time::Duration::from_secs(5),
        request_queue_max: 65_536,
        wal_fsync_seconds: Some(metrics.wal_fsync_seconds.clone()),
    };
    let state_machine = Arc::new(KvStateMachine::new(Arc::clone(&store), initial_members));
    let handle = runtime::start(runtime_config, Arc::clone(&network), state_machine, inbound)?;
    let transport_for_ids = Arc::clone(&network);
    let reader = store.lock().expect("store lock").reader();
    let state = ServiceState::new(
        handle.clone(),
        reader,
        args.initial_cluster_token.clone(),
        args.max_request_bytes,
        args.quota_backend_bytes,
        Box::new(move || transport_for_ids.cluster_id()),
        Arc::clone(&metrics),
    );
    let (ready_sender, ready_receiver) = tokio::sync::watch::channel(false);
    // One lessor per member, whatever the number of client listeners.
    let lease_service = Arc::new(crate::lease::LeaseService::new(
        Arc::clone(&state),
        crate::lease::LessorConfig {
            election_timeout: std::time::Duration::from_millis(args.election_timeout),
            checkpoint_interval: args.experimental_lease_checkpoint_interval,
        },
    ));
    crate::compactor::start(Arc::clone(&state), config.compaction);
    if !args.experimental_corrupt_check_time.is_zero() {
        crate::corruption::check_periodically(
            Arc::clone(&state),
            args.experimental_corrupt_check_time,
        );
    }
    if args.experimental_initial_corrupt_check {
        let mut ready = ready_receiver.clone();
        let state = Arc::clone(&state);
        servers.push(tokio::spawn(async move {
            if ready.wait_for(|published| *published).await.is_ok() {
                crate::corruption::check_at_start(state);
            }
        }));
    }
    let http_state = Arc::new(crate::http::HttpState {
        services: Arc::clone(&state),
        metrics: Arc::clone(&metrics),
        transport: Arc::clone(&network),
    });
    servers.push(tokio::spawn(count_leader_changes(
        handle.clone(),
        Arc::clone(&metrics),
    )));
    for address in &config.metrics_listen_addresses {
        let address = resolve_address(address).await?;
        let listener = tokio::net::TcpListener::bind(address)
            .await
            .map_err(|error| format!("listening for metrics on {address}: {error}"))?;
        let router = tonic::transport::Server::builder()
            .accept_http1(true)
            .add_routes(tonic::service::Routes::from(crate::http::routes(
                Arc::clone(&http_state),
            )));
        // Served at once, before the member is ready, as etcd serves its metrics URLs: a
        // member that waits for its peers must still be seen to be alive.
        servers.push(tokio::spawn(async move {
            let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
            if let Err(error) = router.serve_with_incoming(incoming).await {
                tracing::error!("metrics service stopped: {error}");
            }
        }));
    }
    let mut client_addresses = Vec::new();
    for address in &config.client_listen_addresses {
        let address = resolve_address(address).await?;
        let listener = tokio::net::TcpListener::bind(address)
            .await
            .map_err(|error| format!("listening for clients on {address}: {error}"))?;
        client_addresses.push(listener.local_addr().map_err(|error| error.to_string())?);
        // Room for the request plus its framing: larger requests fail with a clear status.
        let message_bytes_max = args.max_request_bytes + 64 * 1024;
        let grpc = tonic::service::Routes::new(
            KvServer::new(KvService(Arc::clone(&state)))
                .max_decoding_message_size(message_bytes_max),
        )
        .add_service(ClusterServer::new(ClusterService(Arc::clone(&state))))
        .add_service(MaintenanceServer::new(MaintenanceService(Arc::clone(
            &state,
        ))))
        .add_service(InternalServer::new(InternalService(Arc::clone(&state))))
        .add_service(WatchServer::new(crate::watch::WatchService::new(
            Arc::clone(&state),
            args.experimental_watch_progress_notify_interval,
        )))
        .add_service(LeaseServer::new(Arc::clone(&lease_service)))
        .add_service(crate::proto::v3lockpb::lock_server::LockServer::new(
            crate::lock::LockService::new(Arc::clone(&state)),
        ))
        .add_service(
            crate::proto::v3electionpb::election_server::ElectionServer::new(
                crate::election::ElectionService::new(Arc::clone(&state)),
            ),
        );
        // gRPC, health and metrics share the port, as etcd's do: HTTP/1.1 requests reach the
        // HTTP routes, gRPC's HTTP/2 the services.
        let routes = grpc
            .into_axum_router()
            .merge(crate::http::routes(Arc::clone(&http_state)))
            .merge(crate::gateway::routes(
                Arc::clone(&state),
                Arc::clone(&lease_service),
            ))
            .fallback(crate::http::not_found)
            .layer(axum::middleware::from_fn_with_state(
                Arc::clone(&metrics),
                crate::http::record_grpc,
            ));
        let router = tonic::transport::Server::builder()
            .accept_http1(true)
            .add_routes(tonic::service::Routes::from(routes));
        let incoming = tokio_stream_listener(listener);
        let mut ready = ready_receiver.clone();
        servers.push(tokio::spawn(async move {
            // Bound now, so that a port in use fails the start; served once this member's
            // attributes are in the log, as etcd serves clients only once it has published
            // itself. Until then connections wait in the listen backlog.
            if ready.wait_for(|published| *published).await.is_err() {
                return;
            }
            if let Err(error) = router.serve_with_incoming(incoming).await {
                tracing::error!("client service stopped: {error}");
            }
        }));
    }
    let own = MemberAttributes {
        id: member_id,
        name: args.name.clone(),
        peer_urls: config.peer_urls.clone(),
        client_urls: config.client_urls.clone(),
        is_learner: false,
        removed: false,
    };
    servers.push(tokio::spawn(publish_attributes(
        Arc::clone(&state),
        own,
        ready_sender,
    )));
    Ok(RunningNode {
        handle,
        client_addresses,
        transport: network,
        servers,
    })
}

/// Who this member is: from its data directory when that holds state (the flags that name
/// the initial cluster are then ignored, as etcd ignores them), from the flags otherwise, and
/// recorded durably before the member talks to anyone.
fn resolve_identity(
    config: &ServeConfig,
    member_directory: &Path,
    existing: bool,
) -> Result<Identity, String> {
    let args = &config.args;
    let from_flags = Identity {
        member_id: config.member_id,
        cluster_id: match args.initial_cluster_state {
            InitialClusterState::New => config.cluster_id,
            InitialClusterState::Existing => 0,
        },
        founders: match args.initial_cluster_state {
            InitialClusterState::New => config
                .initial_members
                .iter()
                .map(|member| {
                    (
                        crate::cluster::member_id(&member.peer_urls, &args.initial_cluster_token),
                        member.name.clone(),
                        member.peer_urls.clone(),
                    )
                })
                .collect(),
            InitialClusterState::Existing => Vec::new(),
        },
    };
    let stored = Identity::load(member_directory).map_err(|error| error.to_string())?;
    match stored {
        Some(stored) if existing => {
            // Another member's data, of another cluster: the flags' member id derives from
            // this member's own peer URLs and token, which membership changes elsewhere do not
            // move, so both differing means the directory is not this member's.
            let flags_cluster_id = config.cluster_id;
            if stored.member_id != config.member_id
                && stored.cluster_id != 0
                && stored.cluster_id != flags_cluster_id
            {
                return Err(format!(
                    "the data directory {} belongs to member {:x} of cluster {:x}, but the flags \
                     describe member {:x} of cluster {:x}: give this member its own data \
                     directory, or an empty one",
                    member_directory.display(),
                    stored.member_id,
                    stored.cluster_id,
                    config.member_id,
                    flags_cluster_id
                ));
            }
            tracing::info!(
                "member {:x} of cluster {:x} resumes from {}; --initial-cluster, \
                 --initial-cluster-state and --initial-cluster-token are ignored",
                stored.member_id,
                stored.cluster_id,
                member_directory.display()
            );
            Ok(stored)
        }
        _ => {
            if existing {
                // A log written before the identity file existed: the flags still say who
                // the member is, as they did then.
                tracing::info!(
                    "recording the identity of member {:x} in {}",
                    from_flags.member_id,
                    member_directory.display()
                );
            }
            from_flags
                .save(member_directory)
                .map_err(|error| format!("recording the member's identity: {error}"))?;
            Ok(from_flags)
        }
    }
}

/// Records the cluster id a joining member learned from its peers, once it has, so that it
/// knows it at its next start even if no peer can tell it then (a whole-cluster restart).
async fn record_learned_cluster_id(
    transport: Arc<Transport>,
    mut identity: Identity,
    member_directory: std::path::PathBuf,
) {
    let mut interval = tokio::time::interval(std::time::Duration::from_millis(50));
    loop {
        interval.tick().await;
        let cluster_id = transport.cluster_id();
        if cluster_id == 0 {
            continue;
        }
        identity.cluster_id = cluster_id;
        let saved = tokio::task::spawn_blocking(move || identity.save(&member_directory)).await;
        match saved {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::error!("recording the learned cluster id: {error}"),
            Err(error) => tracing::error!("recording the learned cluster id: {error}"),
        }
        return;
    }
}

/// Publishes this node's name and client URLs through the log, so that every node can list
/// them and forward writes to it when it leads; retried until the log shows them.
async fn publish_attributes(
    state: Arc<ServiceState>,
    attributes: MemberAttributes,
    ready: tokio::sync::watch::Sender<bool>,
) {
    // Rationale for 100 ms: until its attributes are committed a member serves no client, and
    // the other members list it without client URLs.
    let mut interval = tokio::time::interval(std::time::Duration::from_millis(100));
    loop {
        interval.tick().await;
        if state.is_published(&attributes) {
            tracing::info!(
                "member {:x} published its name and client URLs; serving clients",
                attributes.id
            );
            let _ = ready.send(true);
            return;
        }
        if let Err(status) = state.publish_self(attributes.clone()).await {
            tracing::debug!("publishing this member's attributes: {}", status.message());
        }
    }
}

/// A client's connection, as tonic serves it.
type ClientConnection = TolerantAuthority<tokio::net::TcpStream>;

/// Accepted connections as the stream tonic serves.
///
/// Each connection gets TCP_NODELAY: gRPC writes a response as several small writes, and with
/// Nagle's algorithm the second waits for the client's delayed acknowledgement, about 40 ms.
/// Each is read through [`TolerantAuthority`], so that requests whose `:authority` carries a
/// scheme, as etcdctl's `endpoint status` sends them, are served rather than reset by h2.
fn tokio_stream_listener(
    listener: tokio::net::TcpListener,
) -> impl tokio_stream::Stream<Item = Result<ClientConnection, std::io::Error>> {
    use tokio_stream::StreamExt as _;
    tokio_stream::wrappers::TcpListenerStream::new(listener).map(|accepted| {
        let stream = accepted?;
        stream.set_nodelay(true)?;
        Ok(TolerantAuthority::new(stream))
    })
}

/// Runs a node until Ctrl-C or SIGTERM.
pub async fn serve(config: ServeConfig) -> Result<(), String> {
    let running = start(config).await?;
    tracing::info!(
        "member {:x} serving clients on {:?}",
        running.handle.id(),
        running.client_addresses
    );
    shutdown_signal().await;
    running.shutdown().await;
    Ok(())
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(signal) => signal,
                Err(_) => {
                    let _ = interrupt.await;
                    return;
                }
            };
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}
