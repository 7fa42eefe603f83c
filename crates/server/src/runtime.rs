//! The node runtime: one tokio task per node around its [`NodeShell`].
//!
//! The loop ticks the shell, steps peer messages and client requests into it, has it carry
//! out every `Ready` (the shell is the one place the Ready contract is carried out; see
//! [`crate::shell`]), hands its answers back to the waiting callers, writes snapshot files on
//! a blocking thread, and keeps the transport connected to the members the log knows.
//!
//! Rationale for one loop that does its disk work inline (on a blocking-friendly thread): the
//! leader's appends are already on their way while it writes, so the followers' writes and its
//! own overlap, and batching across Readys gives group commit.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use prost::Message as _;
use raft::{ConfigChange, ConfigState, EntryPayload, Node, NodeId, Role};
use storage::{Bootstrap, DiskLog, DiskLogOptions};

use crate::metrics::TimedDisk;
use tokio::sync::{mpsc, oneshot, watch};

use crate::proto::flotillapb::{internal_request, InternalRequest, MemberAttributes};
use crate::shell::{
    Answer, NodeShell, Outcome, Refused, ShellConfig, ShellError, ShellNetwork, ShellStateMachine,
};

/// Errors a client sees, with etcd's messages where clients rely on them.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ServerError {
    /// No leader is known (an election is in progress, or this node is cut off).
    #[error("etcdserver: no leader")]
    NoLeader,
    /// This node is not the leader; the request should go to `leader`.
    #[error("etcdserver: not leader")]
    NotLeader {
        /// The leader this node knows of.
        leader: Option<NodeId>,
    },
    /// The request did not complete in time; it may or may not have taken effect.
    #[error("etcdserver: request timed out")]
    Timeout,
    /// The leader is overloaded with uncommitted proposals.
    #[error("etcdserver: too many requests")]
    TooManyRequests,
    /// Leadership is being handed over; retry shortly.
    #[error("etcdserver: leader changed")]
    LeaderChanged,
    /// A membership change is already in progress.
    #[error("etcdserver: unhealthy cluster")]
    ConfigChangeInProgress,
    /// The membership change is not valid for the current configuration.
    #[error("etcdserver: {0}")]
    InvalidConfigChange(String),
    /// The node is stopping or has stopped (for example after a disk error).
    #[error("etcdserver: server stopped")]
    Stopped,
    /// The state machine refused the request, with the gRPC code and message etcd answers
    /// it with.
    #[error("{1}")]
    StateMachine(tonic::Code, String),
}

impl From<ShellError> for ServerError {
    fn from(error: ShellError) -> ServerError {
        match error {
            ShellError::NoLeader => ServerError::NoLeader,
            ShellError::NotLeader { leader } => ServerError::NotLeader { leader },
            ShellError::LeaderChanged => ServerError::LeaderChanged,
            ShellError::TooManyRequests => ServerError::TooManyRequests,
            ShellError::ConfigChangeInProgress => ServerError::ConfigChangeInProgress,
            ShellError::InvalidConfigChange(message) => ServerError::InvalidConfigChange(message),
            ShellError::Timeout => ServerError::Timeout,
            ShellError::Stopped => ServerError::Stopped,
        }
    }
}

/// Each applied request's id and outcome, as [`StateMachine::apply`] returns them.
pub type RequestOutcomes = Vec<(u64, Result<Applied, ServerError>)>;

/// What the runtime needs of a state machine. Applied on the runtime's task; read from any.
///
/// The state machine need not be durable: at start the runtime restores it from the newest
/// snapshot in the log's directory and then applies the committed log after that snapshot.
pub trait StateMachine: Send + Sync + 'static {
    /// The Raft index of the last entry applied.
    fn applied_index(&self) -> u64;
    /// Applies committed entries in order, in one transaction: each a Raft index and the
    /// request it carries (None for entries without one, which only advance the applied
    /// index). Entries at or below [`StateMachine::applied_index`] are skipped. Returns, for
    /// each applied request, its id and its outcome.
    fn apply(
        &self,
        entries: Vec<(u64, Option<InternalRequest>)>,
    ) -> Result<RequestOutcomes, String>;
    /// A serialized image of the whole state, for a follower that needs a snapshot.
    fn snapshot(&self) -> Result<Bytes, String>;
    /// Replaces the whole state with an image from [`StateMachine::snapshot`].
    fn restore(&self, image: &[u8]) -> Result<(), String>;
    /// The members recorded through the log.
    fn members(&self) -> Vec<MemberAttributes>;
}

/// The outcome of an applied request, by kind.
#[derive(Clone, Debug, PartialEq)]
pub enum Applied {
    /// A put.
    Put(crate::proto::etcdserverpb::PutResponse),
    /// A delete.
    DeleteRange(crate::proto::etcdserverpb::DeleteRangeResponse),
    /// A transaction.
    Txn(crate::proto::etcdserverpb::TxnResponse),
    /// A compaction.
    Compaction(crate::proto::etcdserverpb::CompactionResponse),
    /// Member attributes recorded.
    Member,
    /// A lease granted.
    LeaseGrant(crate::proto::etcdserverpb::LeaseGrantResponse),
    /// A lease revoked with its keys.
    LeaseRevoke(crate::proto::etcdserverpb::LeaseRevokeResponse),
    /// An alarm raised or cleared.
    Alarm(crate::proto::etcdserverpb::AlarmResponse),
}

/// What the runtime needs of the peer transport.
pub trait PeerNetwork: Send + Sync + 'static {
    /// Queues messages for their receivers; never blocks.
    fn send(&self, messages: Vec<raft::Message>);
    /// Connects to (or updates) a peer.
    fn set_peer(&self, id: NodeId, address: String);
    /// Forgets a peer.
    fn remove_peer(&self, id: NodeId);
    /// Peers found unreachable since the last call, and finished snapshot sends
    /// (peer, success).
    fn take_reports(&self) -> (Vec<NodeId>, Vec<(NodeId, bool)>);
}

/// Settings of one node's runtime.
#[derive(Clone, Debug)]
pub struct RuntimeConfig {
    /// This node's member id.
    pub id: NodeId,
    /// The cluster's id, for response headers.
    pub cluster_id: u64,
    /// Where the WAL and snapshots live (`<data dir>/member`).
    pub log_directory: PathBuf,
    /// What an empty data directory starts from.
    pub bootstrap: Bootstrap,
    /// The length of one tick.
    pub tick_interval: Duration,
    /// Heartbeat interval in ticks.
    pub heartbeat_ticks: u64,
    /// Minimum election timeout in ticks (the maximum is twice it).
    pub election_timeout_ticks: u64,
    /// Applied entries between two snapshots.
    pub snapshot_entries: u64,
    /// How long a client request may wait for its entry to apply or its read to be released.
    pub request_timeout: Duration,
    /// Bound on client requests queued for the loop.
    pub request_queue_max: usize,
    /// Where the WAL's fdatasync latencies go, if anywhere.
    pub wal_fsync_seconds: Option<prometheus::Histogram>,
}

/// A client request for the loop.
enum Request {
    Propose {
        request: internal_request::Request,
        reply: oneshot::Sender<Result<Applied, ServerError>>,
    },
    ReadIndex {
        reply: oneshot::Sender<Result<(), ServerError>>,
    },
    ConfigChange {
        change: ConfigChange,
        reply: oneshot::Sender<Result<ConfigState, ServerError>>,
    },
    TransferLeadership {
        target: NodeId,
        reply: oneshot::Sender<Result<(), ServerError>>,
    },
}

/// What the loop publishes after each round, for status calls and the dev command.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeStatus {
    /// This node's id.
    pub id: NodeId,
    /// The leader it knows of.
    pub leader: Option<NodeId>,
    /// Its role, as text ("follower", "candidate", "leader", ...).
    pub role: String,
    /// Its term.
    pub term: u64,
    /// Its commit index.
    pub commit_index: u64,
    /// Its applied index.
    pub applied_index: u64,
    /// The applied Raft configuration.
    pub config: ConfigState,
    /// Set when the node stopped on an error.
    pub errors: Vec<String>,
}

/// A cloneable handle for the services: sends requests to the loop and waits for answers.
#[derive(Clone)]
pub struct NodeHandle {
    id: NodeId,
    cluster_id: u64,
    requests: mpsc::Sender<Request>,
    status: watch::Receiver<NodeStatus>,
    request_timeout: Duration,
}

impl NodeHandle {
    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// The cluster id.
    pub fn cluster_id(&self) -> u64 {
        self.cluster_id
    }

    /// The latest published status.
    pub fn status(&self) -> NodeStatus {
        self.status.borrow().clone()
    }

    /// How long a request may wait for the loop to answer it.
    pub fn request_timeout(&self) -> Duration {
        self.request_timeout
    }

    /// A receiver that sees every status change.
    pub fn watch_status(&self) -> watch::Receiver<NodeStatus> {
        self.status.clone()
    }

    async fn call<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, ServerError>>) -> Request,
    ) -> Result<T, ServerError> {
        let (reply, answer) = oneshot::channel();
        self.requests
            .try_send(make(reply))
            .map_err(|error| match error {
                mpsc::error::TrySendError::Full(_) => ServerError::TooManyRequests,
                mpsc::error::TrySendError::Closed(_) => ServerError::Stopped,
            })?;
        match tokio::time::timeout(self.request_timeout, answer).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(ServerError::Stopped),
            Err(_) => Err(ServerError::Timeout),
        }
    }

    /// Proposes a request and waits until it is applied here; returns its outcome.
    pub async fn propose(
        &self,
        request: internal_request::Request,
    ) -> Result<Applied, ServerError> {
        self.call(|reply| Request::Propose { request, reply }).await
    }

    /// Waits until a linearizable read may be served from the local state machine.
    pub async fn read_index(&self) -> Result<(), ServerError> {
        self.call(|reply| Request::ReadIndex { reply }).await
    }

    /// Proposes a Raft membership change and waits until it is applied here.
    pub async fn change_config(&self, change: ConfigChange) -> Result<ConfigState, ServerError> {
        self.call(|reply| Request::ConfigChange { change, reply })
            .await
    }

    /// Hands leadership to `target`.
    pub async fn transfer_leadership(&self, target: NodeId) -> Result<(), ServerError> {
        self.call(|reply| Request::TransferLeadership { target, reply })
            .await
    }
}

/// The caller behind a request the shell holds: where its answer goes.
enum Reply {
    Propose(oneshot::Sender<Result<Applied, ServerError>>),
    Read(oneshot::Sender<Result<(), ServerError>>),
    ConfigChange(oneshot::Sender<Result<ConfigState, ServerError>>),
}

/// The shell's network: the transport, shared with the loop (which also connects peers).
struct SendThrough<N>(Arc<N>);

impl<N: PeerNetwork> ShellNetwork for SendThrough<N> {
    fn send(&mut self, messages: Vec<raft::Message>) {
        if !messages.is_empty() {
            self.0.send(messages);
        }
    }
}

/// The shell's state machine as the server runs it: decodes each entry's [`InternalRequest`]
/// for the [`StateMachine`], which the services also read, and notes when the member list may
/// have changed. Public so that the simulator runs exactly this adaptor over the same
/// [`StateMachine`] the server serves from.
pub struct Decoding<M> {
    inner: Arc<M>,
    members_changed: bool,
}

impl<M> Decoding<M> {
    /// The adaptor around `inner`.
    pub fn new(inner: Arc<M>) -> Self {
        Decoding {
            inner,
            members_changed: false,
        }
    }

    /// The state machine it applies to.
    pub fn inner(&self) -> &Arc<M> {
        &self.inner
    }
}

/// The bytes of a log entry proposing `request` under the shell's request id `id` (from
/// [`NodeShell::next_request_id`]), as every proposal of a client request is encoded.
pub fn encode_proposal(id: u64, request: internal_request::Request) -> Bytes {
    let entry = InternalRequest {
        id,
        request: Some(request),
    };
    Bytes::from(entry.encode_to_vec())
}

impl<M: StateMachine> ShellStateMachine for Decoding<M> {
    type Response = Result<Applied, ServerError>;

    fn apply(&mut self, entries: &[raft::Entry]) -> Result<RequestOutcomes, String> {
        let mut batch = Vec::with_capacity(entries.len());
        for entry in entries {
            match &entry.payload {
                EntryPayload::Normal(data) => match InternalRequest::decode(data.clone()) {
                    Ok(request) => {
                        self.members_changed |=
                            matches!(request.request, Some(internal_request::Request::Member(_)));
                        batch.push((entry.index, Some(request)));
                    }
                    Err(error) => {
                        // Every node decodes the same bytes alike, so every node skips it.
                        tracing::error!("entry {} does not decode: {error}", entry.index);
                        batch.push((entry.index, None));
                    }
                },
                EntryPayload::ConfigChange(_) | EntryPayload::Empty => {
                    batch.push((entry.index, None));
                }
            }
        }
        self.inner.apply(batch)
    }

    fn snapshot(&mut self) -> Result<Bytes, String> {
        self.inner.snapshot()
    }

    fn restore(&mut self, snapshot: &raft::Snapshot) -> Result<(), String> {
        self.members_changed = true;
        self.inner.restore(&snapshot.data)
    }
}

/// The node's shell, as the runtime instantiates it.
type Shell<M> = NodeShell<DiskLog<TimedDisk>, Decoding<M>, Reply>;

/// The loop's state.
struct Runtime<N: PeerNetwork, M: StateMachine> {
    config: RuntimeConfig,
    shell: Shell<M>,
    network: Arc<N>,
    sender: SendThrough<N>,
    state_machine: Arc<M>,
    /// Where the thread writing a snapshot file reports it saved (or why it failed).
    snapshot_saved: mpsc::Sender<Result<raft::Snapshot, String>>,
    status: watch::Sender<NodeStatus>,
    known_peers: BTreeMap<NodeId, String>,
}

/// How a snapshot file is written beside the WAL: 4 MiB at a time, each synced, with a short
/// pause, so that the WAL's fdatasync never waits behind much of it.
const SNAPSHOT_SAVE_PACING: storage::SavePacing = storage::SavePacing {
    chunk_bytes: 4 * 1024 * 1024,
    pause: Duration::from_millis(2),
};

/// Bound on proposals and reads a node tracks; beyond it new ones are refused.
const WAITERS_MAX: usize = 100_000;

/// Opens the node's log, starts its loop on the current tokio runtime, and returns a handle.
pub fn start<N: PeerNetwork, M: StateMachine>(
    config: RuntimeConfig,
    network: Arc<N>,
    state_machine: Arc<M>,
    inbound: mpsc::Receiver<raft::Message>,
) -> Result<NodeHandle, String> {
    let (disk_log, report) = DiskLog::open(
        TimedDisk::new(config.wal_fsync_seconds.clone()),
        &config.log_directory,
        DiskLogOptions::default(),
        config.bootstrap.clone(),
    )
    .map_err(|error| {
        format!(
            "opening the log in {}: {error}",
            config.log_directory.display()
        )
    })?;
    if report.is_notable() {
        tracing::warn!("{report}");
    } else {
        tracing::info!("{report}");
    }
    // The state machine lives in memory: rebuild it from the newest snapshot, then (below)
    // the core replays the committed log after it.
    let snapshot = disk_log
        .read_snapshot()
        .map_err(|error| format!("reading the newest snapshot: {error}"))?;
    let snapshot_index = snapshot.meta.index;
    if snapshot.meta.index > state_machine.applied_index() {
        state_machine
            .restore(&snapshot.data)
            .map_err(|error| format!("restoring snapshot {}: {error}", snapshot.meta.index))?;
    }
    let mut raft_config = raft::Config::new(config.id);
    raft_config.heartbeat_ticks = config.heartbeat_ticks;
    raft_config.election_timeout_min_ticks = config.election_timeout_ticks;
    raft_config.election_timeout_max_ticks = config.election_timeout_ticks * 2;
    // Replay from the snapshot: the core re-applies membership changes since then, and the
    // state machine skips what it already holds.
    raft_config.applied_index = snapshot_index;
    raft_config.random_seed = random_seed(config.id);
    let node = Node::new(raft_config, disk_log).map_err(|error| error.to_string())?;
    let (requests_sender, requests) = mpsc::channel(config.request_queue_max);
    let initial_status = NodeStatus {
        id: config.id,
        ..NodeStatus::default()
    };
    let (status_sender, status_receiver) = watch::channel(initial_status);
    let (snapshot_saved_sender, snapshot_saved) = mpsc::channel(1);
    // Applied entries past the last snapshot at which this node snapshots: the configured
    // count plus a few percent that differ by node (Rationale: nodes that snapshot at the same
    // index pause together).
    let snapshot_entries =
        config.snapshot_entries + random_seed(config.id) % (config.snapshot_entries / 20 + 1);
    let tick_nanos = config.tick_interval.as_nanos().max(1);
    let shell_config = ShellConfig {
        snapshot_entries,
        request_timeout_ticks: config.request_timeout.as_nanos().div_ceil(tick_nanos) as u64,
        waiters_max: WAITERS_MAX,
        read_round_overdue_ticks: 2,
        first_request_id: random_seed(config.id.rotate_left(17)),
    };
    let shell = NodeShell::new(
        node,
        Decoding::new(Arc::clone(&state_machine)),
        snapshot_index,
        shell_config,
    );
    let handle = NodeHandle {
        id: config.id,
        cluster_id: config.cluster_id,
        requests: requests_sender,
        status: status_receiver,
        request_timeout: config.request_timeout,
    };
    let runtime = Runtime {
        config,
        shell,
        sender: SendThrough(Arc::clone(&network)),
        network,
        state_machine,
        snapshot_saved: snapshot_saved_sender,
        status: status_sender,
        known_peers: BTreeMap::new(),
    };
    tokio::spawn(runtime.run(inbound, requests, snapshot_saved));
    Ok(handle)
}

/// A seed from the clock and the id: elections must not be in lockstep across nodes or runs.
fn random_seed(salt: u64) -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_nanos() as u64);
    nanos ^ salt.wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::Follower => "follower",
        Role::PreCandidate => "pre-candidate",
        Role::Candidate => "candidate",
        Role::Leader => "leader",
    }
}

/// Messages and requests handled per round before the Ready is taken: enough to batch many
/// into one fsync, few enough to keep ticks on time.
const BATCH_MAX: usize = 4096;

impl<N: PeerNetwork, M: StateMachine> Runtime<N, M> {
    async fn run(
        mut self,
        mut inbound: mpsc::Receiver<raft::Message>,
        mut requests: mpsc::Receiver<Request>,
        mut snapshot_saved: mpsc::Receiver<Result<raft::Snapshot, String>>,
    ) {
        let mut ticker = tokio::time::interval(self.config.tick_interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        self.update_peers();
        loop {
            tokio::select! {
                _ = ticker.tick() => {
                    self.shell.tick();
                    let (unreachable, snapshots) = self.network.take_reports();
                    for peer in unreachable {
                        self.shell.report_unreachable(peer);
                    }
                    for (peer, success) in snapshots {
                        self.shell.report_snapshot(peer, success);
                    }
                }
                message = inbound.recv() => {
                    let Some(message) = message else { break };
                    self.shell.step(message);
                    for _ in 0..BATCH_MAX {
                        match inbound.try_recv() {
                            Ok(message) => self.shell.step(message),
                            Err(_) => break,
                        }
                    }
                }
                saved = snapshot_saved.recv() => {
                    let Some(saved) = saved else { break };
                    let shell = &mut self.shell;
                    if let Err(error) = tokio::task::block_in_place(|| shell.adopt_snapshot(saved)) {
                        self.stop(error);
                        break;
                    }
                }
                request = requests.recv() => {
                    let Some(request) = request else { break };
                    self.handle_request(request);
                    for _ in 0..BATCH_MAX {
                        match requests.try_recv() {
                            Ok(request) => self.handle_request(request),
                            Err(_) => break,
                        }
                    }
                }
            }
            let (shell, sender) = (&mut self.shell, &mut self.sender);
            let handled = tokio::task::block_in_place(|| shell.handle_readies(sender, &mut ()));
            self.deliver_answers();
            if let Err(error) = handled {
                self.stop(error);
                break;
            }
            if self.shell.take_config_applied()
                | std::mem::take(&mut self.shell.state_machine_mut().members_changed)
            {
                self.update_peers();
            }
            if let Some(job) = self.shell.take_snapshot_job() {
                self.write_snapshot(job);
            }
            self.publish_status();
        }
        self.shell.fail_all_waiters();
        self.deliver_answers();
    }

    /// Records why the node stops, for status calls.
    fn stop(&mut self, error: String) {
        tracing::error!("stopping node {}: {error}", self.config.id);
        self.status.send_modify(|status| status.errors.push(error));
    }

    fn handle_request(&mut self, request: Request) {
        match request {
            Request::Propose { request, reply } => {
                let id = self.shell.next_request_id();
                let proposed =
                    self.shell
                        .propose(id, encode_proposal(id, request), Reply::Propose(reply));
                if let Err(Refused { waiter, error }) = proposed {
                    Self::deliver(waiter, Outcome::Failed(error));
                }
            }
            Request::ReadIndex { reply } => self.shell.read(Reply::Read(reply)),
            Request::ConfigChange { change, reply } => {
                let proposed = self
                    .shell
                    .propose_config_change(change, Reply::ConfigChange(reply));
                if let Err(Refused { waiter, error }) = proposed {
                    Self::deliver(waiter, Outcome::Failed(error));
                }
            }
            Request::TransferLeadership { target, reply } => {
                let result = self
                    .shell
                    .transfer_leadership(target)
                    .map_err(ServerError::from);
                let _ = reply.send(result);
            }
        }
    }

    /// Hands the shell's answers to the callers waiting for them. A caller that gave up has
    /// dropped its receiver; its answer is dropped too.
    fn deliver_answers(&mut self) {
        for Answer { waiter, outcome } in self.shell.take_answers() {
            Self::deliver(waiter, outcome);
        }
    }

    /// Hands one answer to the caller waiting for it.
    fn deliver(waiter: Reply, outcome: Outcome<Result<Applied, ServerError>>) {
        {
            match (waiter, outcome) {
                (Reply::Propose(reply), Outcome::Applied(result)) => {
                    let _ = reply.send(result);
                }
                (Reply::Read(reply), Outcome::ReadReady) => {
                    let _ = reply.send(Ok(()));
                }
                (Reply::ConfigChange(reply), Outcome::ConfigChanged(config)) => {
                    let _ = reply.send(Ok(config));
                }
                (Reply::Propose(reply), Outcome::Failed(error)) => {
                    let _ = reply.send(Err(error.into()));
                }
                (Reply::Read(reply), Outcome::Failed(error)) => {
                    let _ = reply.send(Err(error.into()));
                }
                (Reply::ConfigChange(reply), Outcome::Failed(error)) => {
                    let _ = reply.send(Err(error.into()));
                }
                (_, outcome) => {
                    unreachable!("the shell answers each request with its own kind: {outcome:?}")
                }
            }
        }
    }

    /// Writes a snapshot file on a blocking thread, paced, and reports it to the loop.
    fn write_snapshot(
        &mut self,
        job: crate::shell::SnapshotJob<storage::SnapshotStore<TimedDisk>>,
    ) {
        let report = self.snapshot_saved.clone();
        tokio::task::spawn_blocking(move || {
            let started = Instant::now();
            let index = job.snapshot.meta.index;
            let image_bytes = job.snapshot.data.len();
            let saved = job.write(Some(SNAPSHOT_SAVE_PACING));
            tracing::info!(
                index,
                image_bytes,
                write_ms = started.elapsed().as_millis() as u64,
                "snapshot saved"
            );
            // The loop is gone if the node stopped meanwhile; the file is then just the
            // newest snapshot on disk, as after a crash here.
            let _ = report.blocking_send(saved);
        });
    }

    /// Connects the transport to every member the log knows of, and forgets removed ones.
    fn update_peers(&mut self) {
        let wanted = crate::members::peer_addresses(
            &self.state_machine.members(),
            self.shell.node().config_state(),
            self.config.id,
            &self.known_peers,
        );
        for (id, address) in &wanted {
            if self.known_peers.get(id) != Some(address) {
                self.network.set_peer(*id, address.clone());
            }
        }
        for id in self.known_peers.keys() {
            if !wanted.contains_key(id) {
                self.network.remove_peer(*id);
            }
        }
        self.known_peers = wanted;
    }

    fn publish_status(&mut self) {
        let node = self.shell.node();
        let status = NodeStatus {
            id: self.config.id,
            leader: node.leader(),
            role: role_name(node.role()).to_string(),
            term: node.term(),
            commit_index: node.commit_index(),
            applied_index: node.applied_index(),
            config: node.config_state().clone(),
            errors: Vec::new(),
        };
        self.status.send_if_modified(|current| {
            if *current == status {
                false
            } else {
                *current = status;
                true
            }
        });
    }
}
