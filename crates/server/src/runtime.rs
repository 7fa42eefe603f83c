//! The node runtime: one task per node that drives the Raft core.
//!
//! The loop ticks the core, steps peer messages and client requests, and handles each `Ready`
//! exactly as its contract says: send the leader's replication messages and apply the
//! committed entries already persisted (both allowed before persisting), persist through the
//! WAL (one write and one fdatasync for all the entries and hard state of the Ready — group
//! commit: whatever queued up while the previous fdatasync ran goes down together), then send
//! the rest, then apply the remaining committed entries to the state machine (one batch per
//! step), then answer waiting clients and release reads, then advance.
//!
//! Rationale for one loop that does its disk work inline (on a blocking-friendly thread): the
//! leader's appends are already on their way while it writes, so the followers' writes and its
//! own overlap, and batching across Readys gives group commit.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use prost::Message as _;
use raft::{
    ConfigChange, ConfigState, EntryPayload, Node, NodeId, ProposeError, ReadIndexError, Role,
};
use storage::{Bootstrap, DiskLog, DiskLogOptions, StdDisk};
use tokio::sync::{mpsc, oneshot, watch};

use crate::proto::flotillapb::{internal_request, InternalRequest, MemberAttributes};

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
    /// The state machine refused the request (its message is etcd's).
    #[error("{0}")]
    StateMachine(String),
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

/// A reply waiting for its entry, with its deadline.
struct Waiter<T> {
    reply: oneshot::Sender<Result<T, ServerError>>,
    deadline: Instant,
}

/// The loop's state.
struct Runtime<N: PeerNetwork, M: StateMachine> {
    config: RuntimeConfig,
    node: Node<DiskLog<StdDisk>>,
    network: Arc<N>,
    state_machine: Arc<M>,
    /// Proposals by request id.
    proposals: HashMap<u64, Waiter<Applied>>,
    /// Membership changes by log index.
    config_changes: BTreeMap<u64, Waiter<ConfigState>>,
    /// Reads by context, until the core releases them.
    reads_requested: HashMap<u64, Waiter<()>>,
    /// Reads that arrived while earlier ones were waiting for their heartbeat round; they go
    /// to the core together, to share the next round.
    reads_queued: Vec<Waiter<()>>,
    /// When the reads now in the core were handed to it.
    reads_requested_since: Instant,
    /// Released reads waiting for the applied index to reach theirs.
    reads_released: VecDeque<(u64, Waiter<()>)>,
    next_request_id: u64,
    snapshot_index: u64,
    /// Applied entries past `snapshot_index` at which this node snapshots: the configured
    /// count plus a few percent that differ by node (Rationale: nodes that snapshot at the
    /// same index pause together).
    snapshot_entries: u64,
    /// Set while a snapshot file is being written on another thread.
    snapshot_saving: bool,
    /// Where that thread reports the saved snapshot (or why it failed).
    snapshot_saved: mpsc::Sender<Result<raft::SnapshotMeta, String>>,
    status: watch::Sender<NodeStatus>,
    known_peers: BTreeMap<NodeId, String>,
}

/// What applying some committed entries changed, for the rest of the Ready's handling.
#[derive(Default)]
struct AppliedEntries {
    /// The index of the last entry applied.
    last_index: Option<u64>,
    /// Indexes of the membership changes among them, to answer once the core applied them.
    config_change_indexes: Vec<u64>,
    /// True if the members or their addresses may have changed.
    members_changed: bool,
}

impl AppliedEntries {
    /// Adds what a later batch changed.
    fn merge(&mut self, later: AppliedEntries) {
        self.last_index = later.last_index.or(self.last_index);
        self.config_change_indexes
            .extend(later.config_change_indexes);
        self.members_changed |= later.members_changed;
    }
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
        StdDisk,
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
    let report_text = report.to_string();
    if !report_text.is_empty() {
        tracing::warn!("{report_text}");
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
    let snapshot_entries =
        config.snapshot_entries + random_seed(config.id) % (config.snapshot_entries / 20 + 1);
    let handle = NodeHandle {
        id: config.id,
        cluster_id: config.cluster_id,
        requests: requests_sender,
        status: status_receiver,
        request_timeout: config.request_timeout,
    };
    let runtime = Runtime {
        next_request_id: random_seed(config.id.rotate_left(17)),
        config,
        node,
        network,
        state_machine,
        proposals: HashMap::new(),
        config_changes: BTreeMap::new(),
        reads_requested: HashMap::new(),
        reads_queued: Vec::new(),
        reads_requested_since: Instant::now(),
        reads_released: VecDeque::new(),
        snapshot_index,
        snapshot_entries,
        snapshot_saving: false,
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
        mut snapshot_saved: mpsc::Receiver<Result<raft::SnapshotMeta, String>>,
    ) {
        let mut ticker = tokio::time::interval(self.config.tick_interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        self.update_peers();
        loop {
            tokio::select! {
                _ = ticker.tick() => {
                    self.node.tick();
                    self.expire_waiters();
                    let (unreachable, snapshots) = self.network.take_reports();
                    for peer in unreachable {
                        self.node.report_unreachable(peer);
                    }
                    for (peer, success) in snapshots {
                        self.node.report_snapshot(peer, success);
                    }
                }
                message = inbound.recv() => {
                    let Some(message) = message else { break };
                    self.node.step(message);
                    for _ in 0..BATCH_MAX {
                        match inbound.try_recv() {
                            Ok(message) => self.node.step(message),
                            Err(_) => break,
                        }
                    }
                }
                saved = snapshot_saved.recv() => {
                    let Some(saved) = saved else { break };
                    if let Err(error) = self.adopt_snapshot(saved) {
                        tracing::error!("stopping node {}: {error}", self.config.id);
                        self.status.send_modify(|status| status.errors.push(error));
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
            if let Err(error) = self.handle_readies_and_reads() {
                tracing::error!("stopping node {}: {error}", self.config.id);
                self.status.send_modify(|status| status.errors.push(error));
                break;
            }
            self.publish_status();
        }
        self.fail_all_waiters();
    }

    fn handle_request(&mut self, request: Request) {
        let deadline = Instant::now() + self.config.request_timeout;
        match request {
            Request::Propose { request, reply } => {
                if self.proposals.len() >= WAITERS_MAX {
                    let _ = reply.send(Err(ServerError::TooManyRequests));
                    return;
                }
                self.next_request_id = self.next_request_id.wrapping_add(1);
                let id = self.next_request_id;
                let entry = InternalRequest {
                    id,
                    request: Some(request),
                };
                match self.node.propose(Bytes::from(entry.encode_to_vec())) {
                    Ok(_) => {
                        self.proposals.insert(id, Waiter { reply, deadline });
                    }
                    Err(error) => {
                        let _ = reply.send(Err(propose_error(error)));
                    }
                }
            }
            Request::ReadIndex { reply } => {
                if self.reads_requested.len() + self.reads_queued.len() >= WAITERS_MAX {
                    let _ = reply.send(Err(ServerError::TooManyRequests));
                    return;
                }
                self.reads_queued.push(Waiter { reply, deadline });
            }
            Request::ConfigChange { change, reply } => {
                match self.node.propose_config_change(change) {
                    Ok(index) => {
                        self.config_changes
                            .insert(index, Waiter { reply, deadline });
                    }
                    Err(error) => {
                        let _ = reply.send(Err(propose_error(error)));
                    }
                }
            }
            Request::TransferLeadership { target, reply } => {
                let result = self
                    .node
                    .transfer_leadership(target)
                    .map_err(|error| ServerError::InvalidConfigChange(error.to_string()));
                let _ = reply.send(result);
            }
        }
    }

    /// Hands queued reads to the core when it may start a round for them, and handles every
    /// Ready; again if releasing reads let queued ones go.
    fn handle_readies_and_reads(&mut self) -> Result<(), String> {
        loop {
            self.submit_queued_reads();
            self.handle_readies()?;
            if self.reads_queued.is_empty() || !self.reads_requested.is_empty() {
                return Ok(());
            }
        }
    }

    /// Registers the queued reads with the core, all at once so that they share one heartbeat
    /// round, when no earlier reads are still waiting for theirs (or those have waited two
    /// ticks: a lost round must not hold the queue up).
    ///
    /// Rationale: a read must be registered before the round that confirms it is sent, so a
    /// read arriving while a round is in flight cannot use that round anyway; starting one round
    /// per loop iteration instead sent a heartbeat to every follower per few reads (measured:
    /// 35-40 us of leader CPU per linearizable read before, 30-33 us after). etcd's read loop
    /// also confirms one read index at a time.
    fn submit_queued_reads(&mut self) {
        if self.reads_queued.is_empty() {
            return;
        }
        let round_overdue = self.reads_requested_since.elapsed() >= self.config.tick_interval * 2;
        if !self.reads_requested.is_empty() && !round_overdue {
            return;
        }
        self.reads_requested_since = Instant::now();
        for waiter in std::mem::take(&mut self.reads_queued) {
            self.next_request_id = self.next_request_id.wrapping_add(1);
            let context = self.next_request_id;
            match self.node.read_index(context) {
                Ok(()) => {
                    self.reads_requested.insert(context, waiter);
                }
                Err(ReadIndexError::NoLeader) => {
                    let _ = waiter.reply.send(Err(ServerError::NoLeader));
                }
            }
        }
    }

    fn handle_readies(&mut self) -> Result<(), String> {
        while self.node.has_ready() {
            let mut ready = self.node.ready();
            // 0. What the contract allows before persisting: the leader's replication messages
            // leave now, so the followers write in parallel with this node, and entries that
            // earlier Readys persisted are applied (and their clients answered) without
            // waiting for this Ready's fdatasync.
            self.network.send(std::mem::take(&mut ready.early_messages));
            let mut committed = std::mem::take(&mut ready.committed_entries);
            let committed_later = committed.split_off(ready.committed_entries_persisted);
            let mut applied = self.apply(committed)?;
            // 1. Persist: one write and one fdatasync for the whole Ready.
            let entries = std::mem::take(&mut ready.entries);
            let snapshot = ready.snapshot.take();
            let must_sync = ready.must_sync;
            let hard_state = ready.hard_state;
            let storage = self.node.storage_mut();
            tokio::task::block_in_place(|| -> Result<(), String> {
                if let Some(snapshot) = &snapshot {
                    storage
                        .install_snapshot(snapshot.clone())
                        .map_err(|error| format!("installing a snapshot: {error}"))?;
                }
                storage
                    .stage_ready(hard_state, &entries)
                    .map_err(|error| format!("writing the log: {error}"))?;
                if must_sync || snapshot.is_some() {
                    storage
                        .sync()
                        .map_err(|error| format!("syncing the log: {error}"))?;
                } else {
                    storage
                        .write()
                        .map_err(|error| format!("writing the log: {error}"))?;
                }
                Ok(())
            })?;
            // 2. Send.
            self.network.send(std::mem::take(&mut ready.messages));
            // 3. Apply: the snapshot, then the rest of the committed entries.
            if let Some(snapshot) = &snapshot {
                let state_machine = Arc::clone(&self.state_machine);
                tokio::task::block_in_place(|| state_machine.restore(&snapshot.data))
                    .map_err(|error| format!("restoring a snapshot: {error}"))?;
                self.snapshot_index = snapshot.meta.index;
                applied.members_changed = true;
            }
            applied.merge(self.apply(committed_later)?);
            let read_states = std::mem::take(&mut ready.read_states);
            // 5. Advance: the core applies membership changes now.
            self.node.advance();
            for index in applied.config_change_indexes {
                if let Some(waiter) = self.config_changes.remove(&index) {
                    let _ = waiter.reply.send(Ok(self.node.config_state().clone()));
                }
            }
            // 4. Reads, once applied far enough (applying is synchronous here).
            for read in read_states {
                if let Some(waiter) = self.reads_requested.remove(&read.context) {
                    self.reads_released.push_back((read.index, waiter));
                }
            }
            self.release_reads();
            if applied.members_changed {
                self.update_peers();
            }
            if let Some(index) = applied.last_index {
                self.maybe_snapshot(index)?;
            }
        }
        Ok(())
    }

    /// Applies committed entries in one state machine batch and answers their proposers.
    fn apply(&mut self, committed: Vec<raft::Entry>) -> Result<AppliedEntries, String> {
        let mut applied = AppliedEntries {
            last_index: committed.last().map(|entry| entry.index),
            ..AppliedEntries::default()
        };
        let mut batch = Vec::with_capacity(committed.len());
        for entry in committed {
            match entry.payload {
                EntryPayload::Normal(data) => match InternalRequest::decode(data) {
                    Ok(request) => {
                        applied.members_changed |=
                            matches!(request.request, Some(internal_request::Request::Member(_)));
                        batch.push((entry.index, Some(request)));
                    }
                    Err(error) => {
                        // Every node decodes the same bytes alike, so every node skips it.
                        tracing::error!("entry {} does not decode: {error}", entry.index);
                        batch.push((entry.index, None));
                    }
                },
                EntryPayload::ConfigChange(_) => {
                    applied.config_change_indexes.push(entry.index);
                    applied.members_changed = true;
                    batch.push((entry.index, None));
                }
                EntryPayload::Empty => batch.push((entry.index, None)),
            }
        }
        if !batch.is_empty() {
            let outcomes = self
                .state_machine
                .apply(batch)
                .map_err(|error| format!("applying entries: {error}"))?;
            for (id, outcome) in outcomes {
                if let Some(waiter) = self.proposals.remove(&id) {
                    let _ = waiter.reply.send(outcome);
                }
            }
        }
        Ok(applied)
    }

    fn release_reads(&mut self) {
        let applied = self.node.applied_index();
        let mut waiting = VecDeque::new();
        for (index, waiter) in self.reads_released.drain(..) {
            if index <= applied {
                let _ = waiter.reply.send(Ok(()));
            } else {
                waiting.push_back((index, waiter));
            }
        }
        self.reads_released = waiting;
    }

    /// Takes a snapshot once enough entries were applied since the last: the image is taken
    /// here, between two batches, and its file written on another thread; the log is
    /// compacted to it when that thread reports ([`Runtime::adopt_snapshot`]).
    ///
    /// Rationale: writing and syncing the file took most of the time (0.7 s of 1.1 s for a
    /// 125 MB image), and every node stalled for it, on its commit path, every
    /// `--snapshot-count` entries.
    fn maybe_snapshot(&mut self, applied: u64) -> Result<(), String> {
        if self.snapshot_saving || applied < self.snapshot_index + self.snapshot_entries {
            return Ok(());
        }
        let config = self.node.config_state().clone();
        let Some(meta) = self.node.storage_mut().snapshot_meta_at(applied, config) else {
            return Ok(());
        };
        let started = Instant::now();
        let state_machine = Arc::clone(&self.state_machine);
        let image = tokio::task::block_in_place(|| state_machine.snapshot())
            .map_err(|error| format!("taking a snapshot image: {error}"))?;
        let image_time = started.elapsed();
        let store = self.node.storage_mut().snapshot_store();
        let report = self.snapshot_saved.clone();
        self.snapshot_saving = true;
        tokio::task::spawn_blocking(move || {
            let image_bytes = image.len();
            let snapshot = raft::Snapshot {
                meta: meta.clone(),
                data: image,
            };
            let saved = store
                .save_paced(&snapshot, Some(SNAPSHOT_SAVE_PACING))
                .map(|_| meta)
                .map_err(|error| format!("saving a snapshot: {error}"));
            tracing::info!(
                index = snapshot.meta.index,
                image_bytes,
                image_ms = image_time.as_millis() as u64,
                total_ms = started.elapsed().as_millis() as u64,
                "snapshot saved"
            );
            // The loop is gone if the node stopped meanwhile; the file is then just the
            // newest snapshot on disk, as after a crash here.
            let _ = report.blocking_send(saved);
        });
        Ok(())
    }

    /// Compacts the log to a snapshot whose file is now durable.
    fn adopt_snapshot(&mut self, saved: Result<raft::SnapshotMeta, String>) -> Result<(), String> {
        self.snapshot_saving = false;
        let meta = saved?;
        let index = meta.index;
        let storage = self.node.storage_mut();
        let adopted = tokio::task::block_in_place(|| storage.adopt_snapshot(meta))
            .map_err(|error| format!("compacting the log to a snapshot: {error}"))?;
        if adopted {
            self.snapshot_index = index;
        }
        Ok(())
    }

    /// Connects the transport to every member the log knows of, and forgets removed ones.
    fn update_peers(&mut self) {
        let config = self.node.config_state().clone();
        let mut wanted = BTreeMap::new();
        for member in self.state_machine.members() {
            if member.removed || member.id == self.config.id {
                continue;
            }
            let Some(url) = member.peer_urls.first() else {
                continue;
            };
            if let Ok(address) = crate::cluster::host_and_port(url) {
                wanted.insert(member.id, address);
            }
        }
        // A member in the Raft configuration whose attributes are not applied yet keeps the
        // address it had.
        for id in config.all_nodes() {
            if let Some(address) = self.known_peers.get(&id) {
                wanted.entry(id).or_insert_with(|| address.clone());
            }
        }
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

    fn expire_waiters(&mut self) {
        let now = Instant::now();
        self.proposals.retain(|_, waiter| waiter.deadline > now);
        self.config_changes
            .retain(|_, waiter| waiter.deadline > now);
        self.reads_requested
            .retain(|_, waiter| waiter.deadline > now);
        self.reads_queued.retain(|waiter| waiter.deadline > now);
        self.reads_released
            .retain(|(_, waiter)| waiter.deadline > now);
        // Dropped replies answer their callers with a timeout (the handle's own deadline
        // fires at the same moment).
    }

    fn fail_all_waiters(&mut self) {
        for (_, waiter) in self.proposals.drain() {
            let _ = waiter.reply.send(Err(ServerError::Stopped));
        }
        for (_, waiter) in std::mem::take(&mut self.config_changes) {
            let _ = waiter.reply.send(Err(ServerError::Stopped));
        }
        for (_, waiter) in self.reads_requested.drain() {
            let _ = waiter.reply.send(Err(ServerError::Stopped));
        }
        for waiter in self.reads_queued.drain(..) {
            let _ = waiter.reply.send(Err(ServerError::Stopped));
        }
        for (_, waiter) in self.reads_released.drain(..) {
            let _ = waiter.reply.send(Err(ServerError::Stopped));
        }
    }

    fn publish_status(&mut self) {
        let status = NodeStatus {
            id: self.config.id,
            leader: self.node.leader(),
            role: role_name(self.node.role()).to_string(),
            term: self.node.term(),
            commit_index: self.node.commit_index(),
            applied_index: self.node.applied_index(),
            config: self.node.config_state().clone(),
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

fn propose_error(error: ProposeError) -> ServerError {
    match error {
        ProposeError::NotLeader { leader: None } => ServerError::NoLeader,
        ProposeError::NotLeader { leader } => ServerError::NotLeader { leader },
        ProposeError::LeadershipTransferInProgress => ServerError::LeaderChanged,
        ProposeError::Overloaded => ServerError::TooManyRequests,
        ProposeError::ConfigChangePending => ServerError::ConfigChangeInProgress,
        ProposeError::InvalidConfigChange(error) => {
            ServerError::InvalidConfigChange(error.to_string())
        }
    }
}
