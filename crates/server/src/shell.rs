//! The node shell: the one place where a [`raft::Ready`] is carried out.
//!
//! [`NodeShell`] owns a [`raft::Node`], its log, its state machine and the clients waiting on
//! it, and knows nothing of threads, clocks, sockets or etcd: time arrives as ticks, messages
//! leave through the [`ShellNetwork`] each call is given, and a client is an opaque token that
//! comes back in an [`Answer`]. The server's runtime wraps it in a tokio loop with channels;
//! the simulator drives the same shell over a simulated disk and network, with its checks as
//! the [`ShellObserver`] it hands each call.
//!
//! For each Ready, in this order (the contract of [`raft::Ready`]):
//! 0. the leader's replication messages (`early_messages`) leave, and the committed entries
//!    that earlier Readys persisted are applied and answered, both before persisting;
//! 1. the snapshot, the entries and the hard state are persisted: one write, and one
//!    fdatasync when `must_sync` (or a snapshot) says so;
//! 2. the other messages leave, only now that what they depend on is durable;
//! 3. the snapshot is restored into the state machine, then the rest of the committed entries
//!    are applied and their proposers answered;
//! 4. the core is advanced (it applies membership changes then), membership proposers are
//!    answered, and reads the core released are answered once the state machine has applied
//!    up to their read index.
//!
//! After the Readys, when enough entries were applied since the last snapshot, the shell takes
//! an image of the state machine and hands back a [`SnapshotJob`] for the caller to write off
//! the loop; [`NodeShell::adopt_snapshot`] compacts the log once the file is durable.

use std::collections::{BTreeMap, HashMap, VecDeque};

use bytes::Bytes;
use raft::{
    ConfigChange, ConfigState, Entry, EntryPayload, HardState, LogStorage, Message, Node, NodeId,
    ProposeError, ReadIndexError, Ready, Snapshot, SnapshotMeta,
};

/// What the shell needs of its log beyond what the core reads through [`LogStorage`].
pub trait ShellLog: LogStorage {
    /// Writes a snapshot file on another thread (or later), for [`SnapshotJob`].
    type SnapshotWriter;
    /// Step 1 of the Ready contract: the snapshot, the entries and the hard state, in that
    /// order, durable on return when `must_sync` is true; otherwise written, and possibly lost
    /// in a crash (a lone commit index, which the leader tells again).
    fn persist(
        &mut self,
        snapshot: Option<&Snapshot>,
        entries: &[Entry],
        hard_state: Option<HardState>,
        must_sync: bool,
    ) -> Result<(), String>;
    /// The metadata a snapshot of the state as of `index` would carry, or None if it would
    /// not be newer than the log's snapshot or `index` is not in the log.
    fn snapshot_meta_at(&self, index: u64, config: ConfigState) -> Option<SnapshotMeta>;
    /// A writer for a snapshot file, to use AFTER [`ShellLog::snapshot_meta_at`] and BEFORE
    /// [`ShellLog::adopt_snapshot`].
    fn snapshot_writer(&self) -> Self::SnapshotWriter;
    /// Compacts the log to a snapshot whose file is durable. False, changing nothing, if the
    /// log moved on meanwhile.
    fn adopt_snapshot(&mut self, snapshot: Snapshot) -> Result<bool, String>;
}

/// Writes a snapshot's file durably.
pub trait SnapshotWriter {
    /// Saves `snapshot` durably, `pacing` saying how gently.
    fn save(&self, snapshot: &Snapshot, pacing: Option<storage::SavePacing>) -> Result<(), String>;
}

impl<D: storage::Disk> ShellLog for storage::DiskLog<D> {
    type SnapshotWriter = storage::SnapshotStore<D>;

    fn persist(
        &mut self,
        snapshot: Option<&Snapshot>,
        entries: &[Entry],
        hard_state: Option<HardState>,
        must_sync: bool,
    ) -> Result<(), String> {
        if let Some(snapshot) = snapshot {
            self.install_snapshot(snapshot.clone())
                .map_err(|error| format!("installing a snapshot: {error}"))?;
        }
        self.stage_ready(hard_state, entries)
            .map_err(|error| format!("writing the log: {error}"))?;
        if must_sync || snapshot.is_some() {
            self.sync()
                .map_err(|error| format!("syncing the log: {error}"))
        } else {
            self.write()
                .map_err(|error| format!("writing the log: {error}"))
        }
    }

    fn snapshot_meta_at(&self, index: u64, config: ConfigState) -> Option<SnapshotMeta> {
        storage::DiskLog::snapshot_meta_at(self, index, config)
    }

    fn snapshot_writer(&self) -> storage::SnapshotStore<D> {
        self.snapshot_store()
    }

    fn adopt_snapshot(&mut self, snapshot: Snapshot) -> Result<bool, String> {
        storage::DiskLog::adopt_snapshot(self, snapshot.meta)
            .map_err(|error| format!("compacting the log to a snapshot: {error}"))
    }
}

impl<D: storage::Disk> SnapshotWriter for storage::SnapshotStore<D> {
    fn save(&self, snapshot: &Snapshot, pacing: Option<storage::SavePacing>) -> Result<(), String> {
        self.save_paced(snapshot, pacing)
            .map(|_| ())
            .map_err(|error| format!("saving a snapshot: {error}"))
    }
}

/// What the shell needs of its peer network.
pub trait ShellNetwork {
    /// Queues messages for their receivers; never blocks.
    fn send(&mut self, messages: Vec<Message>);
}

/// Messages collected in order, for a caller that sends them itself after the call.
impl ShellNetwork for Vec<Message> {
    fn send(&mut self, messages: Vec<Message>) {
        self.extend(messages);
    }
}

/// What the shell needs of its state machine. Its requests are opaque bytes in entries; it
/// answers each proposal it recognizes by the id the proposer put in the request.
pub trait ShellStateMachine {
    /// What a proposer is answered with once its entry is applied.
    type Response;
    /// Applies committed entries in order (each exactly once, starting right after the
    /// applied index), returning the id and response of each proposal among them. An error
    /// stops the node: the state machine could not apply what every other member applies.
    fn apply(&mut self, entries: &[Entry]) -> Result<Vec<(u64, Self::Response)>, String>;
    /// An image of the whole state as of the last applied entry.
    fn snapshot(&mut self) -> Result<Bytes, String>;
    /// Replaces the whole state with an image from [`ShellStateMachine::snapshot`].
    fn restore(&mut self, snapshot: &Snapshot) -> Result<(), String>;
}

/// Hooks for checks, called at fixed points of the Ready's handling; the server's observer
/// does nothing, the simulator's checks invariants. Each hook sees what the shell is about to
/// do or has just done, and cannot change it.
pub trait ShellObserver<L: LogStorage, M> {
    /// A Ready was taken, before anything of it is carried out.
    fn on_ready(&mut self, _node: &Node<L>, _ready: &Ready) {}
    /// Step 1 is done: `entries` and `hard_state` are in the log (durable if `must_sync`).
    fn on_persisted(
        &mut self,
        _node: &Node<L>,
        _entries: &[Entry],
        _hard_state: Option<HardState>,
        _must_sync: bool,
    ) {
    }
    /// Messages are about to leave (`early`: before step 1).
    fn on_send(&mut self, _node: &Node<L>, _messages: &[Message], _early: bool) {}
    /// `entry` was applied to `state_machine`.
    fn on_applied(&mut self, _node: &Node<L>, _entry: &Entry, _state_machine: &M) {}
    /// A snapshot from the leader was restored into `state_machine`.
    fn on_restored(&mut self, _node: &Node<L>, _index: u64, _state_machine: &M) {}
}

/// The observer that checks nothing.
impl<L: LogStorage, M> ShellObserver<L, M> for () {}

/// Why a request was not carried out, as a proposer or reader sees it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ShellError {
    /// There is no leader now.
    #[error("no leader")]
    NoLeader,
    /// Another node leads; requests must go there.
    #[error("not the leader (leader: {leader:?})")]
    NotLeader {
        /// The leader this node knows of.
        leader: Option<NodeId>,
    },
    /// Leadership is moving to another node.
    #[error("leadership is being transferred")]
    LeaderChanged,
    /// Too many requests are waiting.
    #[error("too many requests")]
    TooManyRequests,
    /// A membership change is still in progress.
    #[error("a membership change is in progress")]
    ConfigChangeInProgress,
    /// The membership change or leadership transfer is not valid.
    #[error("{0}")]
    InvalidConfigChange(String),
    /// The request waited longer than its timeout.
    #[error("timed out")]
    Timeout,
    /// The node stopped.
    #[error("the node stopped")]
    Stopped,
}

impl From<ProposeError> for ShellError {
    fn from(error: ProposeError) -> ShellError {
        match error {
            ProposeError::NotLeader { leader: None } => ShellError::NoLeader,
            ProposeError::NotLeader { leader } => ShellError::NotLeader { leader },
            ProposeError::LeadershipTransferInProgress => ShellError::LeaderChanged,
            ProposeError::Overloaded => ShellError::TooManyRequests,
            ProposeError::ConfigChangePending => ShellError::ConfigChangeInProgress,
            ProposeError::InvalidConfigChange(error) => {
                ShellError::InvalidConfigChange(error.to_string())
            }
        }
    }
}

/// What a waiting client is answered with.
#[derive(Debug, PartialEq)]
pub enum Outcome<R> {
    /// Its proposal was applied; the state machine's response.
    Applied(R),
    /// Its membership change was applied; the configuration now.
    ConfigChanged(ConfigState),
    /// Its linearizable read may be served from the state machine now.
    ReadReady,
    /// It failed.
    Failed(ShellError),
}

/// A request the shell refused at once, with the caller's token back.
#[derive(Debug, PartialEq)]
pub struct Refused<W> {
    /// The token the request came with.
    pub waiter: W,
    /// Why it was refused.
    pub error: ShellError,
}

impl<W> Refused<W> {
    fn new(waiter: W, error: ShellError) -> Refused<W> {
        Refused { waiter, error }
    }
}

/// An answer for the client behind `waiter`.
#[derive(Debug, PartialEq)]
pub struct Answer<W, R> {
    /// The token the client was registered with.
    pub waiter: W,
    /// What it is answered with.
    pub outcome: Outcome<R>,
}

/// A snapshot image to write off the loop with [`SnapshotJob::write`], then to hand to
/// [`NodeShell::adopt_snapshot`].
pub struct SnapshotJob<S> {
    /// The snapshot: its metadata and the state machine's image.
    pub snapshot: Snapshot,
    writer: S,
}

impl<S: SnapshotWriter> SnapshotJob<S> {
    /// Writes the snapshot's file durably; what [`NodeShell::adopt_snapshot`] takes.
    pub fn write(self, pacing: Option<storage::SavePacing>) -> Result<Snapshot, String> {
        self.writer.save(&self.snapshot, pacing)?;
        Ok(self.snapshot)
    }
}

/// Settings of a shell.
#[derive(Clone, Debug)]
pub struct ShellConfig {
    /// Applied entries past the last snapshot at which the next one is taken.
    pub snapshot_entries: u64,
    /// Ticks a client may wait for its entry to apply or its read to be released.
    pub request_timeout_ticks: u64,
    /// Bound on the proposals, membership changes and reads waiting at once.
    pub waiters_max: usize,
    /// Ticks after which reads registered with the core but not released no longer hold the
    /// queued ones back (a lost heartbeat round must not stall the queue).
    pub read_round_overdue_ticks: u64,
    /// The first request id; ids increase from it. Rationale: ids from different lives of a
    /// node (or different nodes) should not collide in the log.
    pub first_request_id: u64,
}

/// Bugs planted in the shell, for the simulator to prove it catches them (only with the
/// `planted-bugs` feature).
#[cfg(feature = "planted-bugs")]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShellBug {
    /// A Ready's hard state is persisted with the next Ready instead of its own, so messages
    /// of a new term (a vote) leave before the term and vote are durable.
    HardStateOneReadyLate,
    /// `must_sync` is ignored: only entries and snapshots are synced, so a new term or vote
    /// alone is written without a sync.
    SyncOnlyEntries,
    /// The log is compacted to a snapshot as soon as its image is taken, before its file is
    /// written and synced: a crash in between leaves a log whose start is in no file.
    AdoptBeforeSaved,
}

/// A client token with the tick after which it times out.
struct Waiting<W> {
    waiter: W,
    deadline_tick: u64,
}

/// The shell around one Raft node; see the module documentation.
pub struct NodeShell<L: ShellLog, M: ShellStateMachine, W> {
    node: Node<L>,
    state_machine: M,
    config: ShellConfig,
    ticks: u64,
    next_request_id: u64,
    /// Proposals by request id.
    proposals: HashMap<u64, Waiting<W>>,
    /// Membership changes by log index.
    config_changes: BTreeMap<u64, Waiting<W>>,
    /// Reads that arrived while earlier ones were waiting for their heartbeat round; they go
    /// to the core together, to share the next round.
    reads_queued: Vec<Waiting<W>>,
    /// Reads registered with the core, by context, until the core releases them.
    reads_requested: HashMap<u64, Waiting<W>>,
    /// No waiter's deadline is before this tick.
    next_expiry_tick: u64,
    /// The tick at which the reads now in the core were registered.
    reads_requested_tick: u64,
    /// Released reads waiting for the applied index to reach theirs.
    reads_released: VecDeque<(u64, Waiting<W>)>,
    answers: Vec<Answer<W, M::Response>>,
    snapshot_index: u64,
    snapshot_job: Option<SnapshotJob<L::SnapshotWriter>>,
    snapshot_saving: bool,
    config_applied: bool,
    #[cfg(feature = "planted-bugs")]
    planted: Vec<ShellBug>,
    #[cfg(feature = "planted-bugs")]
    late_hard_state: Option<HardState>,
}

impl<L: ShellLog, M: ShellStateMachine, W> NodeShell<L, M, W> {
    /// A shell around `node`, whose state machine already holds the log's snapshot at
    /// `snapshot_index` (the core replays the committed entries after it).
    pub fn new(node: Node<L>, state_machine: M, snapshot_index: u64, config: ShellConfig) -> Self {
        NodeShell {
            node,
            state_machine,
            next_request_id: config.first_request_id,
            config,
            ticks: 0,
            proposals: HashMap::new(),
            config_changes: BTreeMap::new(),
            reads_queued: Vec::new(),
            reads_requested: HashMap::new(),
            reads_requested_tick: 0,
            next_expiry_tick: u64::MAX,
            reads_released: VecDeque::new(),
            answers: Vec::new(),
            snapshot_index,
            snapshot_job: None,
            snapshot_saving: false,
            config_applied: false,
            #[cfg(feature = "planted-bugs")]
            planted: Vec::new(),
            #[cfg(feature = "planted-bugs")]
            late_hard_state: None,
        }
    }

    /// Plants `bug` in this shell.
    #[cfg(feature = "planted-bugs")]
    pub fn plant(&mut self, bug: ShellBug) {
        self.planted.push(bug);
    }

    #[cfg(feature = "planted-bugs")]
    fn has_bug(&self, bug: ShellBug) -> bool {
        self.planted.contains(&bug)
    }

    /// The Raft node, to read its state.
    pub fn node(&self) -> &Node<L> {
        &self.node
    }

    /// The state machine, to read it.
    pub fn state_machine(&self) -> &M {
        &self.state_machine
    }

    /// The state machine, for changes outside the log (none may change what it applies).
    pub fn state_machine_mut(&mut self) -> &mut M {
        &mut self.state_machine
    }

    /// The index of the newest snapshot in the log.
    pub fn snapshot_index(&self) -> u64 {
        self.snapshot_index
    }

    /// One tick: the core's clock moves, and clients past their deadline are answered with
    /// [`ShellError::Timeout`].
    pub fn tick(&mut self) {
        self.ticks += 1;
        self.node.tick();
        self.expire_waiters();
    }

    /// Steps a message from a peer.
    pub fn step(&mut self, message: Message) {
        self.node.step(message);
    }

    /// Tells the core a peer could not be reached.
    pub fn report_unreachable(&mut self, peer: NodeId) {
        self.node.report_unreachable(peer);
    }

    /// Tells the core whether a snapshot reached a peer.
    pub fn report_snapshot(&mut self, peer: NodeId, success: bool) {
        self.node.report_snapshot(peer, success);
    }

    /// A new request id, for the caller to put in the request it proposes with it.
    pub fn next_request_id(&mut self) -> u64 {
        self.next_request_id = self.next_request_id.wrapping_add(1);
        self.next_request_id
    }

    /// Proposes `data`, which carries `request_id`; `waiter` is answered with the state
    /// machine's response once the entry is applied here. Returns the entry's index, or the
    /// waiter back with why the proposal was refused (nothing was proposed then).
    pub fn propose(&mut self, request_id: u64, data: Bytes, waiter: W) -> Result<u64, Refused<W>> {
        let (index, waiting) = self.admit(waiter, |node| node.propose(data))?;
        self.proposals.insert(request_id, waiting);
        Ok(index)
    }

    /// Proposes a membership change; `waiter` is answered with the configuration once the
    /// core has applied it here. Returns the entry's index, or the waiter back with why the
    /// change was refused.
    pub fn propose_config_change(
        &mut self,
        change: ConfigChange,
        waiter: W,
    ) -> Result<u64, Refused<W>> {
        let (index, waiting) = self.admit(waiter, |node| node.propose_config_change(change))?;
        self.config_changes.insert(index, waiting);
        Ok(index)
    }

    /// Proposes with `propose` if the waiters' bound leaves room, and gives the waiter its
    /// deadline; or hands the waiter back with why nothing was proposed.
    fn admit(
        &mut self,
        waiter: W,
        propose: impl FnOnce(&mut Node<L>) -> Result<u64, ProposeError>,
    ) -> Result<(u64, Waiting<W>), Refused<W>> {
        if self.waiting_count() >= self.config.waiters_max {
            return Err(Refused::new(waiter, ShellError::TooManyRequests));
        }
        match propose(&mut self.node) {
            Ok(index) => Ok((index, self.waiting(waiter))),
            Err(error) => Err(Refused::new(waiter, error.into())),
        }
    }

    /// Asks for a linearizable read; `waiter` is answered with [`Outcome::ReadReady`] once the
    /// state machine may serve it.
    pub fn read(&mut self, waiter: W) {
        if self.waiting_count() >= self.config.waiters_max {
            self.fail(waiter, ShellError::TooManyRequests);
            return;
        }
        let waiting = self.waiting(waiter);
        self.reads_queued.push(waiting);
    }

    /// Hands leadership to `target`.
    pub fn transfer_leadership(&mut self, target: NodeId) -> Result<(), ShellError> {
        self.node
            .transfer_leadership(target)
            .map_err(|error| ShellError::InvalidConfigChange(error.to_string()))
    }

    /// Hands queued reads to the core and carries out every Ready, again while releasing reads
    /// lets queued ones go; messages leave through `network`, and `observer` sees each step.
    /// An error means the node must stop: its log or its state machine failed, and nothing
    /// after the failed step was done.
    pub fn handle_readies(
        &mut self,
        network: &mut impl ShellNetwork,
        observer: &mut impl ShellObserver<L, M>,
    ) -> Result<(), String> {
        loop {
            self.submit_queued_reads();
            while self.node.has_ready() {
                let ready = self.node.ready();
                self.handle_ready(ready, network, observer)?;
            }
            if self.reads_queued.is_empty() || !self.reads_requested.is_empty() {
                break;
            }
        }
        self.maybe_snapshot()
    }

    /// The answers for waiting clients since the last call.
    pub fn take_answers(&mut self) -> Vec<Answer<W, M::Response>> {
        std::mem::take(&mut self.answers)
    }

    /// True once, after a membership change was applied (or a snapshot restored) since the
    /// last call: the caller may need to connect to new peers.
    pub fn take_config_applied(&mut self) -> bool {
        std::mem::take(&mut self.config_applied)
    }

    /// A snapshot to write off the loop, if one is due; the shell takes no other until
    /// [`NodeShell::adopt_snapshot`] is called with this one's result.
    pub fn take_snapshot_job(&mut self) -> Option<SnapshotJob<L::SnapshotWriter>> {
        self.snapshot_job.take()
    }

    /// Compacts the log to a snapshot [`SnapshotJob::write`] saved, or gives up on one it
    /// could not save (the error stops the node, as any storage failure does).
    pub fn adopt_snapshot(&mut self, saved: Result<Snapshot, String>) -> Result<(), String> {
        self.snapshot_saving = false;
        let snapshot = saved?;
        let index = snapshot.meta.index;
        if self.node.storage_mut().adopt_snapshot(snapshot)? {
            self.snapshot_index = index;
        }
        Ok(())
    }

    /// Answers every waiting client with [`ShellError::Stopped`]; for a node that stops.
    pub fn fail_all_waiters(&mut self) {
        let waiters: Vec<W> = self
            .proposals
            .drain()
            .map(|(_, waiting)| waiting.waiter)
            .chain(
                std::mem::take(&mut self.config_changes)
                    .into_values()
                    .map(|waiting| waiting.waiter),
            )
            .chain(self.reads_queued.drain(..).map(|waiting| waiting.waiter))
            .chain(
                self.reads_requested
                    .drain()
                    .map(|(_, waiting)| waiting.waiter),
            )
            .chain(
                self.reads_released
                    .drain(..)
                    .map(|(_, waiting)| waiting.waiter),
            )
            .collect();
        for waiter in waiters {
            self.fail(waiter, ShellError::Stopped);
        }
    }

    fn handle_ready(
        &mut self,
        mut ready: Ready,
        network: &mut impl ShellNetwork,
        observer: &mut impl ShellObserver<L, M>,
    ) -> Result<(), String> {
        observer.on_ready(&self.node, &ready);
        // 0. What the contract allows before persisting: the leader's replication messages
        // leave now, so the followers write in parallel with this node, and entries that
        // earlier Readys persisted are applied (and their clients answered) without waiting
        // for this Ready's fdatasync.
        let early_messages = std::mem::take(&mut ready.early_messages);
        observer.on_send(&self.node, &early_messages, true);
        network.send(early_messages);
        let mut committed = std::mem::take(&mut ready.committed_entries);
        let committed_later = committed.split_off(ready.committed_entries_persisted);
        self.apply(&committed, observer)?;
        // 1. Persist: one write, and one fdatasync when the Ready needs it.
        let snapshot = ready.snapshot.take();
        let entries = std::mem::take(&mut ready.entries);
        #[allow(unused_mut)]
        let (mut hard_state, mut must_sync) = (ready.hard_state, ready.must_sync);
        #[cfg(feature = "planted-bugs")]
        {
            if self.has_bug(ShellBug::HardStateOneReadyLate) {
                hard_state = std::mem::replace(&mut self.late_hard_state, hard_state);
            }
            if self.has_bug(ShellBug::SyncOnlyEntries) {
                must_sync = !entries.is_empty() || snapshot.is_some();
            }
        }
        self.node
            .storage_mut()
            .persist(snapshot.as_ref(), &entries, hard_state, must_sync)?;
        observer.on_persisted(&self.node, &entries, hard_state, must_sync);
        // 2. Send what depends on the state just persisted.
        let messages = std::mem::take(&mut ready.messages);
        observer.on_send(&self.node, &messages, false);
        network.send(messages);
        // 3. Apply: the snapshot, then the rest of the committed entries.
        if let Some(snapshot) = &snapshot {
            self.state_machine
                .restore(snapshot)
                .map_err(|error| format!("restoring a snapshot: {error}"))?;
            self.snapshot_index = snapshot.meta.index;
            self.config_applied = true;
            observer.on_restored(&self.node, snapshot.meta.index, &self.state_machine);
        }
        self.apply(&committed_later, observer)?;
        let config_change_indexes: Vec<u64> = committed
            .iter()
            .chain(&committed_later)
            .filter(|entry| matches!(entry.payload, EntryPayload::ConfigChange(_)))
            .map(|entry| entry.index)
            .collect();
        let read_states = std::mem::take(&mut ready.read_states);
        // 4. Advance: the core applies membership changes now.
        self.node.advance();
        for index in config_change_indexes {
            self.config_applied = true;
            if let Some(waiting) = self.config_changes.remove(&index) {
                let config = self.node.config_state().clone();
                self.answer(waiting.waiter, Outcome::ConfigChanged(config));
            }
        }
        for read in read_states {
            if let Some(waiting) = self.reads_requested.remove(&read.context) {
                self.reads_released.push_back((read.index, waiting));
            }
        }
        self.release_reads();
        Ok(())
    }

    /// Applies committed entries in one state machine batch and answers their proposers.
    fn apply(
        &mut self,
        entries: &[Entry],
        observer: &mut impl ShellObserver<L, M>,
    ) -> Result<(), String> {
        if entries.is_empty() {
            return Ok(());
        }
        let responses = self
            .state_machine
            .apply(entries)
            .map_err(|error| format!("applying entries: {error}"))?;
        for entry in entries {
            observer.on_applied(&self.node, entry, &self.state_machine);
        }
        for (request_id, response) in responses {
            if let Some(waiting) = self.proposals.remove(&request_id) {
                self.answer(waiting.waiter, Outcome::Applied(response));
            }
        }
        Ok(())
    }

    /// Registers the queued reads with the core, all at once so that they share one heartbeat
    /// round, when no earlier reads are still waiting for theirs (or those are overdue).
    ///
    /// Rationale: a read must be registered before the round that confirms it is sent, so a
    /// read arriving while a round is in flight cannot use that round anyway; starting one
    /// round per loop iteration instead sent a heartbeat to every follower per few reads
    /// (measured: 35-40 us of leader CPU per linearizable read before, 30-33 us after). etcd's
    /// read loop also confirms one read index at a time.
    fn submit_queued_reads(&mut self) {
        if self.reads_queued.is_empty() {
            return;
        }
        let round_overdue =
            self.ticks >= self.reads_requested_tick + self.config.read_round_overdue_ticks;
        if !self.reads_requested.is_empty() && !round_overdue {
            return;
        }
        self.reads_requested_tick = self.ticks;
        for waiting in std::mem::take(&mut self.reads_queued) {
            let context = self.next_request_id();
            match self.node.read_index(context) {
                Ok(()) => {
                    self.reads_requested.insert(context, waiting);
                }
                Err(ReadIndexError::NoLeader) => self.fail(waiting.waiter, ShellError::NoLeader),
            }
        }
    }

    fn release_reads(&mut self) {
        let applied = self.node.applied_index();
        let mut still_waiting = VecDeque::new();
        for (index, waiting) in std::mem::take(&mut self.reads_released) {
            if index <= applied {
                self.answer(waiting.waiter, Outcome::ReadReady);
            } else {
                still_waiting.push_back((index, waiting));
            }
        }
        self.reads_released = still_waiting;
    }

    /// Takes a snapshot image once enough entries were applied since the last, between two
    /// batches; its file is written off the loop ([`NodeShell::take_snapshot_job`]).
    ///
    /// Rationale: writing and syncing the file took most of the time (0.7 s of 1.1 s for a
    /// 125 MB image), and every node stalled for it, on its commit path, every
    /// `--snapshot-count` entries.
    fn maybe_snapshot(&mut self) -> Result<(), String> {
        let applied = self.node.applied_index();
        if self.snapshot_saving || applied < self.snapshot_index + self.config.snapshot_entries {
            return Ok(());
        }
        let config = self.node.config_state().clone();
        let Some(meta) = self.node.storage().snapshot_meta_at(applied, config) else {
            return Ok(());
        };
        let data = self
            .state_machine
            .snapshot()
            .map_err(|error| format!("taking a snapshot image: {error}"))?;
        self.snapshot_saving = true;
        let snapshot = Snapshot { meta, data };
        #[cfg(feature = "planted-bugs")]
        if self.has_bug(ShellBug::AdoptBeforeSaved)
            && self.node.storage_mut().adopt_snapshot(snapshot.clone())?
        {
            self.snapshot_index = snapshot.meta.index;
        }
        self.snapshot_job = Some(SnapshotJob {
            snapshot,
            writer: self.node.storage().snapshot_writer(),
        });
        Ok(())
    }

    /// Answers every client past its deadline with [`ShellError::Timeout`].
    fn expire_waiters(&mut self) {
        // Rationale: checked first, so that a tick with nothing expired (almost every tick)
        // moves no tokens.
        if self.ticks < self.next_expiry_tick {
            return;
        }
        let now = self.ticks;
        let live = |waiting: &Waiting<W>| waiting.deadline_tick > now;
        let mut expired: Vec<Waiting<W>> = Vec::new();
        expired.extend(
            split_off_expired(&mut self.proposals, |(_, waiting)| live(waiting))
                .into_iter()
                .map(|(_, waiting)| waiting),
        );
        expired.extend(
            split_off_expired(&mut self.config_changes, |(_, waiting)| live(waiting))
                .into_iter()
                .map(|(_, waiting)| waiting),
        );
        expired.extend(
            split_off_expired(&mut self.reads_requested, |(_, waiting)| live(waiting))
                .into_iter()
                .map(|(_, waiting)| waiting),
        );
        expired.extend(
            split_off_expired(&mut self.reads_released, |(_, waiting)| live(waiting))
                .into_iter()
                .map(|(_, waiting)| waiting),
        );
        expired.extend(split_off_expired(&mut self.reads_queued, live));
        self.next_expiry_tick = self
            .proposals
            .values()
            .chain(self.config_changes.values())
            .chain(self.reads_requested.values())
            .chain(self.reads_released.iter().map(|(_, waiting)| waiting))
            .chain(&self.reads_queued)
            .map(|waiting| waiting.deadline_tick)
            .min()
            .unwrap_or(u64::MAX);
        for waiting in expired {
            self.fail(waiting.waiter, ShellError::Timeout);
        }
    }

    fn waiting(&mut self, waiter: W) -> Waiting<W> {
        let deadline_tick = self.ticks + self.config.request_timeout_ticks;
        self.next_expiry_tick = self.next_expiry_tick.min(deadline_tick);
        Waiting {
            waiter,
            deadline_tick,
        }
    }

    fn waiting_count(&self) -> usize {
        self.proposals.len()
            + self.config_changes.len()
            + self.reads_queued.len()
            + self.reads_requested.len()
            + self.reads_released.len()
    }

    fn answer(&mut self, waiter: W, outcome: Outcome<M::Response>) {
        self.answers.push(Answer { waiter, outcome });
    }

    fn fail(&mut self, waiter: W, error: ShellError) {
        self.answer(waiter, Outcome::Failed(error));
    }
}

/// Moves the items of `collection` that are not `live` out of it, in its own order.
fn split_off_expired<C, T>(collection: &mut C, live: impl Fn(&T) -> bool) -> Vec<T>
where
    C: Default + IntoIterator<Item = T> + FromIterator<T>,
{
    let (keep, expired): (Vec<T>, Vec<T>) = std::mem::take(collection)
        .into_iter()
        .partition(|item| live(item));
    *collection = keep.into_iter().collect();
    expired
}
