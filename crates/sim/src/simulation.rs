//! One simulation run: a cluster of real [`Node`]s, a simulated clock and network, a nemesis
//! that injects faults, clients, and the invariant checks, all in one thread and driven by one
//! seeded random stream.
//!
//! Everything that happens is an event in one queue ordered by (time, sequence number), so the
//! order is total and the same on every run of a seed. Time is counted in units of which
//! [`TICK`] make one node tick; each node ticks at its own moments, about once per [`TICK`].

use std::collections::{BTreeMap, VecDeque};
use std::panic::{catch_unwind, AssertUnwindSafe};

use raft::{
    Config, ConfigChange, ConfigChangeStep, ConfigState, ConfigTransition, EntryPayload, HardState,
    LogStorage, MemoryStorage, Message, MessageBody, Node, NodeId, ReadMode, Ready, Role,
};
use server::shell::{
    Answer as ShellAnswer, NodeShell, Outcome as ShellOutcome, Refused, ShellConfig, ShellError,
    ShellObserver, SnapshotJob,
};
use storage::Bootstrap;

use crate::config::{SimConfig, StorageKind};
use crate::invariants::{Invariants, Violation};
use crate::kv::{request_id, Action, Answer, ClientId, Command, KvMachine, KvStore};
use crate::linearizability::{self, History, Operation, OperationId, Response};
use crate::node_storage::{crash_mode, DurableLog, NodeDisk, NodeSnapshotWriter, NodeStorage};
use crate::rng::SimRng;
use crate::trace::{DropReason, Event, MessageSummary, OpSummary, Trace};

/// Time units per tick. Rationale: network delays are a fraction of a tick, so a unit finer than
/// a tick lets messages arrive between two ticks, as they do on a real network.
pub const TICK: u64 = 10;

/// The election timeout range every node uses, in ticks (the core's defaults).
const ELECTION_MIN_TICKS: u64 = 15;
const ELECTION_MAX_TICKS: u64 = 30;

/// Once the faults heal, a leader must be elected and a write commit within this many ticks:
/// ten of the longest election timeouts.
pub const LIVENESS_BOUND_TICKS: u64 = 10 * ELECTION_MAX_TICKS;

/// The bound when a voter of the configuration is down for good (its disk is damaged and the
/// operator left it down). Rationale: the cluster then runs on a bare quorum in which often only
/// one node's log can win an election, and it must time out first; each round succeeds with
/// probability about 1/3, so ten rounds fail about once in a few thousand such runs (seen:
/// elected after 316 to 402 ticks), thirty practically never.
pub const LIVENESS_BOUND_BARE_QUORUM_TICKS: u64 = 3 * LIVENESS_BOUND_TICKS;

/// A client waits this long for an answer before it tries another node.
const ATTEMPT_TIMEOUT_TICKS: u64 = 3 * ELECTION_MAX_TICKS;

/// A client gives up on an operation this long after invoking it; the outcome is then unknown.
const OPERATION_DEADLINE_TICKS: u64 = 4 * ATTEMPT_TIMEOUT_TICKS;

/// Mixed into the seed for [`World::disk_rng`].
const DISK_RANDOM_STREAM: u64 = 0xD15C_D15C_D15C_D15C;

/// The most nodes the nemesis adds beyond the founding members.
const JOINERS_MAX: u64 = 3;

/// What a run found, and what it did.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// The seed.
    pub seed: u64,
    /// The hash of every event: equal for two runs of the same seed and code.
    pub trace_hash: u64,
    /// The first broken property, if any.
    pub violation: Option<Violation>,
    /// The events just before the violation (empty when there is none).
    pub recent_events: Vec<String>,
    /// Every event, when the configuration asked to keep them.
    pub trace: Option<Vec<String>>,
    /// Counts of what happened.
    pub stats: Stats,
}

/// Counts of what a run did, for the summary and for tuning.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Events recorded in the trace.
    pub events: u64,
    /// Simulated time at the end, in ticks.
    pub ticks: u64,
    /// Client operations invoked.
    pub ops_invoked: u64,
    /// Client operations that got an answer.
    pub ops_completed: u64,
    /// Client operations given up on (outcome unknown).
    pub ops_indeterminate: u64,
    /// Messages delivered.
    pub messages_delivered: u64,
    /// Messages dropped.
    pub messages_dropped: u64,
    /// Crashes.
    pub crashes: u64,
    /// The highest term any node reached.
    pub max_term: u64,
    /// The highest committed index.
    pub committed_index: u64,
    /// Membership changes applied.
    pub config_changes: u64,
    /// Snapshots installed from a leader.
    pub snapshots_installed: u64,
    /// Whether this seed used lease-based reads.
    pub lease_reads: bool,
    /// Restarts whose recovery discarded a torn write at the end of the WAL.
    pub torn_tails: u64,
    /// Nodes stopped by a failed write or fsync.
    pub storage_failures: u64,
    /// Nodes whose disk the nemesis damaged; each refused to start.
    pub corrupted_nodes: u64,
    /// Failed nodes an operator replaced with a new member (removed, added, promoted).
    pub replacements: u64,
}

/// Runs one seed. Never panics: a panic inside the core or the driver is reported as a
/// violation of the property "no panic".
pub fn run(seed: u64, config: &SimConfig) -> Outcome {
    let mut simulation = Simulation::new(seed, config.clone());
    let result = catch_unwind(AssertUnwindSafe(|| simulation.run_to_end()));
    if let Err(payload) = result {
        let message = payload
            .downcast_ref::<&str>()
            .map(|text| text.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic without a message".to_string());
        let time = simulation.world.now;
        simulation.world.fail(Violation {
            property: "no panic",
            detail: message,
            time,
        });
    }
    simulation.outcome(seed)
}

/// A node's lifecycle in the simulation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Status {
    Up,
    Crashed,
    /// Refused to start: its disk is damaged. It stays down for good.
    Failed,
    /// Removed from the configuration and shut down for good.
    Removed,
}

/// One simulated server: the core, its durable storage and its state machine.
struct SimNode {
    id: NodeId,
    config: Config,
    /// The node shell around the core, its storage and its state machine, as the server runs
    /// it; `None` while crashed or removed.
    shell: Option<Shell>,
    /// With `MemoryStorage`, what survived the last crash. While the node runs, the storage
    /// inside the node is the durable state: the shell writes to it only at the persist step
    /// of a Ready.
    durable: Option<MemoryStorage>,
    /// With the WAL: the node's own disk, which outlives its crashes.
    disk: Option<NodeDisk>,
    /// With the WAL, after a crash between two events: what the log held durably, for the
    /// restart to compare.
    durable_at_crash: Option<DurableLog>,
    /// Hard states written without a sync since the last sync of this life.
    unsynced_hard_states: Vec<HardState>,
    /// The damage the nemesis did to this node's disk: its next start must fail.
    corrupted: Option<String>,
    /// A snapshot file the shell asked for, written "off the loop": at a later event.
    snapshot_job: Option<SnapshotJob<NodeSnapshotWriter>>,
    status: Status,
    /// Counts restarts, so that events for an earlier life are ignored.
    incarnation: u64,
    /// The index of the last entry applied in this life (or restored from a snapshot).
    applied: u64,
    /// The commit index this life has persisted, to check that it never goes backwards.
    commit_seen: u64,
    paused: bool,
    /// Ticks that passed while paused, delivered at once on resume if `jump_on_resume`.
    missed_ticks: u64,
    jump_on_resume: bool,
    /// Messages that arrived while paused, with their sender's incarnation.
    held: Vec<(Message, u64)>,
}

/// The node shell as the simulator instantiates it: the same type the server's runtime drives,
/// over the simulated node's storage and the simulated clients' store.
type Shell = NodeShell<NodeStorage, KvMachine, SimWaiter>;

/// Who waits for an answer from a node's shell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SimWaiter {
    /// A client's attempt, by the client's index.
    Client { index: usize, waiting: Waiting },
    /// The liveness probe (its completion is seen where it applies).
    Probe,
    /// The operator's membership change.
    Operator,
}

/// What a client is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Waiting {
    /// For the write with this request id to be applied on the node.
    Write(u64),
    /// For the read of this attempt (numbered by the world) to be released.
    Read(u64),
}

/// A client's operation in flight.
#[derive(Clone, Copy, Debug)]
struct Pending {
    op: OpSummary,
    history_id: OperationId,
    request: u64,
    attempts: u64,
    invoked_at: u64,
    /// The node, its incarnation, and what the client waits for there.
    target: Option<(NodeId, u64, Waiting)>,
}

#[derive(Debug)]
struct Client {
    id: ClientId,
    next_request: u64,
    pending: Option<Pending>,
    leader_hint: Option<NodeId>,
    /// Bumped whenever the client's state changes, so that stale wake-ups are ignored.
    generation: u64,
}

/// Feedback from the transport to a sender, applied between Readys.
#[derive(Clone, Copy, Debug)]
enum Feedback {
    Unreachable {
        sender: NodeId,
        incarnation: u64,
        peer: NodeId,
    },
    Snapshot {
        sender: NodeId,
        incarnation: u64,
        peer: NodeId,
        success: bool,
    },
}

/// Something scheduled to happen.
#[derive(Debug)]
enum Ev {
    Tick {
        node: NodeId,
        incarnation: u64,
    },
    Deliver {
        message: Message,
        sender_incarnation: u64,
    },
    Feedback(Feedback),
    ClientWake {
        client: usize,
        generation: u64,
    },
    Nemesis,
    EndPartition {
        generation: u64,
    },
    EndNetworkFaults {
        generation: u64,
    },
    Restart {
        node: NodeId,
    },
    Crash {
        node: NodeId,
        incarnation: u64,
        restart_at: u64,
    },
    Isolate {
        node: NodeId,
        until: u64,
    },
    Resume {
        node: NodeId,
        incarnation: u64,
    },
    /// The snapshot file a node's shell asked for is written now, and adopted.
    SnapshotWritten {
        node: NodeId,
        incarnation: u64,
    },
    Heal,
    Probe,
    /// The operator's next step in replacing a failed node.
    Operator,
}

/// The simulated network's current faults.
#[derive(Debug, Default)]
struct Network {
    /// Directed links that are cut: (from, to).
    blocked: std::collections::BTreeSet<(NodeId, NodeId)>,
    /// Nodes cut off from everyone, until the given time.
    isolated_until: BTreeMap<NodeId, u64>,
    partition_generation: u64,
    loss_per_mille: u64,
    duplicate_per_mille: u64,
    spike_per_mille: u64,
    spike_max: u64,
    faults_generation: u64,
}

/// The parameters the seed chooses once at the start.
#[derive(Clone, Copy, Debug)]
struct Params {
    lease_reads: bool,
    pre_vote: bool,
    check_quorum: bool,
    message_bytes_max: u64,
    inflight_messages_max: usize,
    delay_max: u64,
    snapshot_every: u64,
    fault_gap_max_ticks: u64,
    think_max_ticks: u64,
    keys: u64,
}

/// What the nemesis can do next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    Partition,
    Network,
    Crash,
    /// Every running node crashes at once, and each restarts on its own a little later.
    CrashAll,
    /// For a while, every node that grants a vote crashes right after and restarts at once.
    CrashVoters,
    /// For a while, every new leader is cut off or crashed moments after its election.
    LeaderChurn,
    Pause,
    ClockJump,
    Membership,
    Transfer,
    /// A node's next fsync fails: it stops in the middle of a write.
    DiskFailure,
    /// A bit flips in an old record of a crashed node's disk.
    Corrupt,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Chaos,
    Healed { at: u64 },
    Done,
}

/// Everything but the nodes, so that a node and the world can be borrowed together.
struct World {
    config: SimConfig,
    params: Params,
    rng: SimRng,
    /// The storage's own random choices: WAL layouts, how crashes treat unsynced writes, what
    /// is damaged, the operator's response. Rationale: a separate stream, so that a seed runs
    /// the same schedule of faults and requests with `--storage wal` as with `memory`, and a
    /// difference in outcome comes from the storage alone.
    disk_rng: SimRng,
    now: u64,
    sequence: u64,
    queue: BTreeMap<(u64, u64), Ev>,
    network: Network,
    trace: Trace,
    invariants: Invariants,
    violation: Option<Violation>,
    violation_events: Vec<String>,
    clients: Vec<Client>,
    history: History,
    next_value: u64,
    next_read_attempt: u64,
    /// The last value each key was seen to hold by a completed operation.
    known_values: BTreeMap<u64, Option<u64>>,
    /// Writes acknowledged to a client: (client, request).
    acknowledged_writes: Vec<(ClientId, u64)>,
    /// The newest applied configuration and the index of its entry.
    latest_config: (u64, ConfigState),
    /// Nodes that were ever in a configuration.
    ever_member: std::collections::BTreeSet<NodeId>,
    to_remove: Vec<NodeId>,
    feedback: Vec<Feedback>,
    /// Until this time the nemesis crashes every node that grants a vote, right after it sent
    /// the grant, and restarts it at once.
    crash_voters_until: u64,
    /// Nodes to crash once the current event is handled, and when to restart them.
    crash_requests: Vec<(NodeId, u64)>,
    /// Until this time every new leader is crashed moments after its election: many short
    /// terms whose leaders leave divergent, partly replicated tails (the paper's Figure 8).
    leader_churn_until: u64,
    phase: Phase,
    probe_request: u64,
    probe_done_at: Option<u64>,
    stats: Stats,
    /// Failed nodes the operator replaces, one after the other.
    replacements: VecDeque<Replacement>,
    /// Membership changes proposed and not yet known applied: each one's log index and the
    /// voter sets that will need a quorum if it applies. Until a configuration at or after that
    /// index applies, faults must leave those quorums healthy too. Rationale for keeping all of
    /// them: a change proposed by an earlier leader may still commit after a later leader's.
    proposed_quorums: Vec<(u64, Vec<Vec<NodeId>>)>,
}

/// An operator replacing a node whose disk is damaged: remove it, start a new empty node, add
/// it as a learner, promote it once it has caught up. Rationale for a new id: the damaged
/// node's votes are lost with its disk; under its old id, a wiped node could vote twice in a
/// term.
#[derive(Clone, Copy, Debug)]
struct Replacement {
    failed: NodeId,
    new: Option<NodeId>,
}

/// The whole simulation.
struct Simulation {
    nodes: BTreeMap<NodeId, SimNode>,
    world: World,
    next_joiner: NodeId,
}

fn summarize(message: &Message) -> MessageSummary {
    let (index, detail) = match &message.body {
        MessageBody::VoteRequest {
            last_log_index,
            last_log_term,
            ..
        } => (*last_log_index, *last_log_term),
        MessageBody::VoteResponse { granted, .. } => (0, u64::from(*granted)),
        MessageBody::AppendEntries {
            prev_log_index,
            entries,
            ..
        } => (*prev_log_index, entries.len() as u64),
        MessageBody::AppendEntriesResponse { outcome } => match outcome {
            raft::AppendOutcome::Accepted { match_index } => (*match_index, 1),
            raft::AppendOutcome::Rejected { rejected_index, .. } => (*rejected_index, 0),
        },
        MessageBody::Heartbeat {
            leader_commit,
            read_round,
        } => (*leader_commit, *read_round),
        MessageBody::HeartbeatResponse { read_round } => (0, *read_round),
        MessageBody::InstallSnapshot { snapshot } => (snapshot.meta.index, snapshot.meta.term),
        MessageBody::TimeoutNow => (0, 0),
        MessageBody::ReadIndexRequest { context } => (0, *context),
        MessageBody::ReadIndexResponse { context, index } => (*index, *context),
    };
    MessageSummary {
        from: message.from,
        to: message.to,
        term: message.term,
        kind: message.body.kind_name(),
        index,
        detail,
    }
}

fn to_history_operation(op: OpSummary) -> Operation {
    match op {
        OpSummary::Put { key, value } => Operation::Put { key, value },
        OpSummary::Get { key } => Operation::Get { key },
        OpSummary::CompareAndSwap { key, expected, new } => {
            Operation::CompareAndSwap { key, expected, new }
        }
    }
}

/// The voter sets that need a quorum while `change` moves away from `config` and after: the
/// current voters and the incoming ones. (Rationale for counting both even for a one-step
/// change: until it applies, the old set still decides.)
fn quorums_after(config: &ConfigState, change: &ConfigChange) -> Vec<Vec<NodeId>> {
    let mut incoming = config.voters.clone();
    for step in &change.steps {
        match *step {
            ConfigChangeStep::AddVoter(id) => {
                if !incoming.contains(&id) {
                    incoming.push(id);
                }
            }
            ConfigChangeStep::AddLearner(id) | ConfigChangeStep::RemoveNode(id) => {
                incoming.retain(|&voter| voter != id);
            }
        }
    }
    let mut quorums = vec![config.voters.clone(), incoming];
    if config.is_joint() {
        quorums.push(config.voters_outgoing.clone());
    }
    quorums
}

/// The driver's own planted bugs, named whether or not the feature that plants them is on.
#[derive(Clone, Copy, Debug)]
#[cfg_attr(not(feature = "planted-bugs"), allow(dead_code))]
enum DriverBug {
    AckBeforeCommit,
    StaleLocalRead,
}

#[cfg(feature = "planted-bugs")]
fn has_bug(config: &SimConfig, bug: crate::config::PlantedBug) -> bool {
    config.planted_bug == Some(bug)
}

impl Network {
    /// Cuts the links from every node of `side_a` to every node of `side_b`, and back if
    /// `both_ways`.
    fn cut(&mut self, side_a: &[NodeId], side_b: &[NodeId], both_ways: bool) {
        for &a in side_a {
            for &b in side_b {
                self.blocked.insert((a, b));
                if both_ways {
                    self.blocked.insert((b, a));
                }
            }
        }
    }

    /// Whether a message from `from` to `to` cannot pass at `now`.
    fn is_cut(&self, from: NodeId, to: NodeId, now: u64) -> bool {
        let isolated = |id: NodeId| {
            self.isolated_until
                .get(&id)
                .is_some_and(|&until| until > now)
        };
        self.blocked.contains(&(from, to)) || isolated(from) || isolated(to)
    }
}

impl World {
    fn schedule(&mut self, at: u64, event: Ev) {
        self.sequence += 1;
        self.queue.insert((at, self.sequence), event);
    }

    fn record(&mut self, event: Event) {
        self.trace.record(self.now, event);
    }

    fn note(&mut self, text: String) {
        self.record(Event::Note(text));
    }

    /// Records the first violation; later ones are consequences.
    fn fail(&mut self, violation: Violation) {
        if self.violation.is_none() {
            self.violation_events = self.trace.recent_lines();
            self.violation = Some(violation);
        }
    }

    fn check(&mut self, result: Result<(), Violation>) {
        if let Err(violation) = result {
            self.fail(violation);
        }
    }

    fn fail_now(&mut self, property: &'static str, detail: String) {
        let time = self.now;
        self.fail(Violation {
            property,
            detail,
            time,
        });
    }

    /// True if the run plants `bug` in the driver (only with the `planted-bugs` feature).
    #[allow(unused_variables)]
    fn driver_bug(&self, bug: DriverBug) -> bool {
        #[cfg(feature = "planted-bugs")]
        {
            use crate::config::PlantedBug;
            let planted = match bug {
                DriverBug::AckBeforeCommit => PlantedBug::AckBeforeCommit,
                DriverBug::StaleLocalRead => PlantedBug::StaleLocalRead,
            };
            has_bug(&self.config, planted)
        }
        #[cfg(not(feature = "planted-bugs"))]
        {
            false
        }
    }

    /// Puts a message on the network: dropped, delayed, perhaps duplicated.
    fn send(&mut self, message: Message, sender_incarnation: u64) {
        let summary = summarize(&message);
        let is_snapshot = matches!(message.body, MessageBody::InstallSnapshot { .. });
        if self.network.is_cut(message.from, message.to, self.now) {
            self.drop_message(
                summary,
                DropReason::Partitioned,
                sender_incarnation,
                is_snapshot,
            );
            return;
        }
        if self.rng.chance(self.network.loss_per_mille) {
            self.drop_message(summary, DropReason::Lost, sender_incarnation, is_snapshot);
            return;
        }
        let copies = if self.rng.chance(self.network.duplicate_per_mille) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let delay = if self.rng.chance(self.network.spike_per_mille) {
                self.rng.range(TICK, self.network.spike_max.max(TICK))
            } else {
                self.rng.range(1, self.params.delay_max)
            };
            self.record(Event::Send {
                message: summary,
                delay,
            });
            let message = message.clone();
            self.schedule(
                self.now + delay,
                Ev::Deliver {
                    message,
                    sender_incarnation,
                },
            );
        }
    }

    fn drop_message(
        &mut self,
        summary: MessageSummary,
        reason: DropReason,
        sender_incarnation: u64,
        is_snapshot: bool,
    ) {
        self.stats.messages_dropped += 1;
        self.record(Event::Drop {
            message: summary,
            reason,
        });
        let sender = summary.from;
        let peer = summary.to;
        if is_snapshot {
            // The transport learns that a snapshot did not get through, and says so: otherwise
            // the leader would wait for it forever.
            self.feedback.push(Feedback::Snapshot {
                sender,
                incarnation: sender_incarnation,
                peer,
                success: false,
            });
        } else if reason != DropReason::Lost {
            // A cut link or a dead peer is visible to the transport; random loss is not.
            self.feedback.push(Feedback::Unreachable {
                sender,
                incarnation: sender_incarnation,
                peer,
            });
        }
    }

    fn think_ticks(&mut self) -> u64 {
        self.rng.range(1, self.params.think_max_ticks)
    }

    /// The shell of `node` answered a waiter: complete the client's attempt if it still waits
    /// for exactly that answer there, or send it elsewhere soon if it was refused.
    fn on_answer(
        &mut self,
        node: NodeId,
        incarnation: u64,
        machine: &KvMachine,
        answer: ShellAnswer<SimWaiter, Answer>,
    ) {
        let SimWaiter::Client { index, waiting } = answer.waiter else {
            return;
        };
        let Some(pending) = self.clients[index].pending else {
            return;
        };
        if pending.target != Some((node, incarnation, waiting)) {
            return;
        }
        match (answer.outcome, pending.op) {
            (ShellOutcome::Applied(Answer::Put), _) => self.complete(index, Response::Put),
            (ShellOutcome::Applied(Answer::CompareAndSwap(swapped)), _) => {
                self.complete(index, Response::CompareAndSwap(swapped));
            }
            (ShellOutcome::ReadReady, OpSummary::Get { key }) => {
                self.complete(index, Response::Get(machine.kv.get(key)));
            }
            (ShellOutcome::Failed(ShellError::NoLeader | ShellError::NotLeader { .. }), _) => {
                // A read the node could not register: try again soon, elsewhere.
                self.clients[index].leader_hint = None;
                let generation = self.clients[index].generation;
                let at = self.now + self.rng.range(TICK / 2, 2 * TICK);
                self.schedule(
                    at,
                    Ev::ClientWake {
                        client: index,
                        generation,
                    },
                );
            }
            // A timeout, a stop, or an answer of another kind: the client's own timeout
            // sends it elsewhere.
            _ => {}
        }
    }

    /// The client at `index` got `response` for its pending operation.
    fn complete(&mut self, index: usize, response: Response) {
        let client = &mut self.clients[index];
        let pending = client
            .pending
            .take()
            .expect("a pending operation to complete");
        client.generation += 1;
        let client_id = client.id;
        let generation = client.generation;
        self.history.complete(pending.history_id, response);
        self.stats.ops_completed += 1;
        let value = match (pending.op, response) {
            (OpSummary::Put { key, value }, _) => {
                self.known_values.insert(key, Some(value));
                self.acknowledged_writes.push((client_id, pending.request));
                None
            }
            (OpSummary::Get { key }, Response::Get(value)) => {
                self.known_values.insert(key, value);
                value
            }
            (OpSummary::CompareAndSwap { key, new, .. }, Response::CompareAndSwap(swapped)) => {
                if swapped {
                    self.known_values.insert(key, Some(new));
                    self.acknowledged_writes.push((client_id, pending.request));
                }
                Some(u64::from(swapped))
            }
            _ => None,
        };
        self.record(Event::Complete {
            client: client_id,
            op: pending.op,
            value,
        });
        let wake = self.now + self.think_ticks() * TICK;
        self.schedule(
            wake,
            Ev::ClientWake {
                client: index,
                generation,
            },
        );
    }
}

impl SimNode {
    fn shell(&mut self) -> &mut Shell {
        self.shell.as_mut().expect("the node is running")
    }

    fn is_running(&self) -> bool {
        self.status == Status::Up && self.shell.is_some()
    }
}

/// Has the node's shell carry out every Ready it has, exactly as the server's runtime does,
/// with the simulator's checks as the shell's observer; then sends what the shell sent, hands
/// its answers to the clients, and schedules the snapshot file it asked for. Transport feedback
/// produced meanwhile (a cut link, a snapshot that did not get through) is given to the node
/// between rounds, as the core requires, and may produce more Readys.
fn process(sim_node: &mut SimNode, world: &mut World) {
    loop {
        let id = sim_node.id;
        let incarnation = sim_node.incarnation;
        let Some(shell) = sim_node.shell.as_mut() else {
            return;
        };
        let mut outbox = Vec::new();
        let mut checks = Checks {
            world: &mut *world,
            id,
            incarnation,
            applied: &mut sim_node.applied,
            commit_seen: &mut sim_node.commit_seen,
            unsynced_hard_states: &mut sim_node.unsynced_hard_states,
            config_applied: None,
        };
        let handled = shell.handle_readies(&mut outbox, &mut checks);
        let config_applied = checks.config_applied;
        for message in outbox {
            world.send(message, incarnation);
        }
        let answers = shell.take_answers();
        for answer in answers {
            world.on_answer(id, incarnation, shell.state_machine(), answer);
        }
        if let Err(error) = handled {
            storage_failed(sim_node, world, &error);
            return;
        }
        after_readies(sim_node, world, config_applied);
        if world.feedback.is_empty() {
            return;
        }
        for feedback in std::mem::take(&mut world.feedback) {
            give_feedback(sim_node, feedback);
        }
    }
}

/// Gives one item of transport feedback to its sender, if that life of it still runs.
fn give_feedback(sim_node: &mut SimNode, feedback: Feedback) {
    let (sender, incarnation) = match feedback {
        Feedback::Unreachable {
            sender,
            incarnation,
            ..
        }
        | Feedback::Snapshot {
            sender,
            incarnation,
            ..
        } => (sender, incarnation),
    };
    if sender != sim_node.id || incarnation != sim_node.incarnation || !sim_node.is_running() {
        return;
    }
    match feedback {
        Feedback::Unreachable { peer, .. } => sim_node.shell().report_unreachable(peer),
        Feedback::Snapshot { peer, success, .. } => sim_node.shell().report_snapshot(peer, success),
    }
}

/// The simulator's checks, as the observer of one node's shell for one call: each hook checks
/// what the shell just did against Raft's invariants and records it in the trace.
struct Checks<'a> {
    world: &'a mut World,
    id: NodeId,
    incarnation: u64,
    applied: &'a mut u64,
    commit_seen: &'a mut u64,
    unsynced_hard_states: &'a mut Vec<HardState>,
    /// The index of the last membership change applied during the call, if any.
    config_applied: Option<u64>,
}

impl ShellObserver<NodeStorage, KvMachine> for Checks<'_> {
    fn on_ready(&mut self, node: &Node<NodeStorage>, ready: &Ready) {
        let (id, world) = (self.id, &mut *self.world);
        let now = world.now;
        let Some(soft_state) = ready.soft_state else {
            return;
        };
        let term = node.term();
        world.record(Event::Role {
            node: id,
            role: soft_state.role,
            term,
            leader: soft_state.leader,
        });
        world.stats.max_term = world.stats.max_term.max(term);
        if soft_state.role == Role::Leader {
            let result = world.invariants.on_leader(now, term, id);
            world.check(result);
            let first_index = node.storage().first_index();
            let result = world
                .invariants
                .on_new_leader_log(now, id, term, first_index, |index| node.term_at(index));
            world.check(result);
            if now < world.leader_churn_until {
                churn_new_leader(world, id, self.incarnation);
            }
        }
    }

    fn on_persisted(
        &mut self,
        node: &Node<NodeStorage>,
        entries: &[raft::Entry],
        hard_state: Option<HardState>,
        must_sync: bool,
    ) {
        let (id, world) = (self.id, &mut *self.world);
        let now = world.now;
        if let (Some(first), Some(last)) = (entries.first(), entries.last()) {
            for entry in entries {
                let result = world.invariants.on_persist(now, id, entry);
                world.check(result);
            }
            world.record(Event::Persist {
                node: id,
                first: first.index,
                last: last.index,
                term: last.term,
            });
        }
        if must_sync {
            self.unsynced_hard_states.clear();
        } else {
            self.unsynced_hard_states.extend(hard_state);
        }
        let Some(hard_state) = hard_state else {
            return;
        };
        if hard_state.commit < *self.commit_seen {
            world.fail_now(
                "commit index never decreases",
                format!(
                    "n{id}'s commit index went from {} to {}",
                    self.commit_seen, hard_state.commit
                ),
            );
        }
        for index in *self.commit_seen + 1..=hard_state.commit {
            if let Some(term) = node.term_at(index) {
                let result = world
                    .invariants
                    .on_commit(now, id, hard_state.term, index, term);
                world.check(result);
            }
        }
        // The paper's rule (5.4.2): a leader commits by counting replicas only entries of its
        // own term, so its commit index only ever moves to one. Rationale: breaking the rule is
        // unsafe only in rare schedules (Figure 8); checking it directly catches it at once.
        if hard_state.commit > *self.commit_seen
            && node.role() == Role::Leader
            && world.config.check_commit_rule
        {
            let commit_term = node.term_at(hard_state.commit);
            if commit_term != Some(hard_state.term) {
                world.fail_now(
                    "a leader commits only entries of its own term by counting",
                    format!(
                        "n{id}, leader of term {}, moved its commit index to {} whose term is {commit_term:?}",
                        hard_state.term, hard_state.commit
                    ),
                );
            }
        }
        *self.commit_seen = (*self.commit_seen).max(hard_state.commit);
        world.stats.committed_index = world.stats.committed_index.max(hard_state.commit);
        world.record(Event::HardState {
            node: id,
            term: hard_state.term,
            vote: hard_state.vote,
            commit: hard_state.commit,
        });
    }

    fn on_send(&mut self, _node: &Node<NodeStorage>, messages: &[Message], early: bool) {
        let world = &mut *self.world;
        if !early
            && world.now < world.crash_voters_until
            && messages.iter().any(|message| {
                matches!(
                    message.body,
                    MessageBody::VoteResponse {
                        pre_vote: false,
                        granted: true
                    }
                )
            })
        {
            // Restart at once, so that the node can be asked again in the same term.
            let restart_at = world.now + world.rng.range(1, TICK);
            world.crash_requests.push((self.id, restart_at));
        }
    }

    fn on_applied(&mut self, node: &Node<NodeStorage>, entry: &raft::Entry, machine: &KvMachine) {
        let (id, world) = (self.id, &mut *self.world);
        let now = world.now;
        if entry.index != *self.applied + 1 {
            world.fail_now(
                "entries are applied in order, exactly once",
                format!(
                    "n{id} was handed index {} to apply after applying {}",
                    entry.index, self.applied
                ),
            );
            return;
        }
        *self.applied = entry.index;
        match &entry.payload {
            EntryPayload::Normal(data) => {
                if let Some(command) = Command::decode(data.as_ref()) {
                    if command.client == 0 && world.probe_done_at.is_none() {
                        world.probe_done_at = Some(now);
                        world.note(format!(
                            "liveness probe {} applied on n{id}",
                            command.request
                        ));
                    }
                }
            }
            EntryPayload::ConfigChange(_) => self.config_applied = Some(entry.index),
            EntryPayload::Empty => {}
        }
        world.record(Event::Apply {
            node: id,
            index: entry.index,
            term: entry.term,
        });
        let state_hash = machine
            .hash_after(entry.index)
            .expect("the machine hashes every entry it applies");
        let result = world
            .invariants
            .on_apply(now, id, node.term(), entry, state_hash);
        world.check(result);
    }

    fn on_restored(&mut self, _node: &Node<NodeStorage>, index: u64, machine: &KvMachine) {
        let (id, world) = (self.id, &mut *self.world);
        if index <= *self.applied {
            world.fail_now(
                "applied index never decreases",
                format!(
                    "n{id} installs a snapshot at {index} having applied {}",
                    self.applied
                ),
            );
        }
        *self.applied = index;
        world.stats.snapshots_installed += 1;
        world.record(Event::InstallSnapshot { node: id, index });
        let result = world
            .invariants
            .check_state(world.now, id, index, machine.kv.state_hash());
        world.check(result);
    }
}

/// A write or fsync failed: the node must stop (FORMAT.md: after a failed fsync nothing written
/// can be trusted). It is modelled as a power failure in the middle of the write, so the crash
/// loses or tears what was not synced, and the node restarts from its disk a little later.
fn storage_failed(sim_node: &mut SimNode, world: &mut World, error: &str) {
    let id = sim_node.id;
    world.stats.storage_failures += 1;
    world.note(format!("n{id}'s storage fails ({error}); the node stops"));
    power_off(sim_node, world, false);
    let at = world.now + world.disk_rng.range(1, 60) * TICK;
    world.schedule(at, Ev::Restart { node: id });
}

/// The node loses power: the process and everything in flight are gone, and so is whatever its
/// disk had not synced (with the WAL the seed chooses whether the unsynced tail is dropped or
/// torn). `between_events` says that no write was in progress, so that the restart can check
/// that everything synced is still there.
fn power_off(sim_node: &mut SimNode, world: &mut World, between_events: bool) {
    let id = sim_node.id;
    let Some(shell) = sim_node.shell.take() else {
        return;
    };
    match shell.node().storage() {
        NodeStorage::Memory(memory) => sim_node.durable = Some(MemoryStorage::clone(memory)),
        NodeStorage::Wal(log) => {
            let unsynced = std::mem::take(&mut sim_node.unsynced_hard_states);
            sim_node.durable_at_crash = between_events.then(|| DurableLog::of(log, unsynced));
        }
    }
    sim_node.unsynced_hard_states.clear();
    drop(shell);
    let mut how = String::new();
    if let Some(disk) = &sim_node.disk {
        disk.disk.set_fail_syncs(false);
        let mode = crash_mode(&mut world.disk_rng);
        disk.disk.crash(mode);
        how = match mode {
            storage::CrashMode::DropUnsynced => " (unsynced writes lost)".to_owned(),
            storage::CrashMode::TearUnsynced { .. } => " (unsynced writes torn)".to_owned(),
        };
    }
    sim_node.status = Status::Crashed;
    sim_node.paused = false;
    abandon_held(std::mem::take(&mut sim_node.held), world);
    sim_node.snapshot_job = None;
    world.stats.crashes += 1;
    world.note(format!("n{id} crashes{how}"));
}

/// Messages held for a paused node that will now never be delivered: each snapshot among them
/// is reported failed to its sender, as a real transport reports a broken stream. Rationale:
/// the core leaves the snapshot state only on that report or on an answer from the follower;
/// without either, it would wait forever.
fn abandon_held(held: Vec<(Message, u64)>, world: &mut World) {
    let now = world.now;
    for (message, sender_incarnation) in held {
        if matches!(message.body, MessageBody::InstallSnapshot { .. }) {
            let feedback = Feedback::Snapshot {
                sender: message.from,
                incarnation: sender_incarnation,
                peer: message.to,
                success: false,
            };
            world.schedule(now, Ev::Feedback(feedback));
        }
    }
}

/// The nemesis strikes a leader moments after its election, before or while it replicates:
/// cut off from everyone (at once, so that not even its first AppendEntries leaves, or a few
/// network delays later), or crashed. Many short terms with divergent, partly replicated tails
/// follow: the ground of the paper's Figure 8.
fn churn_new_leader(world: &mut World, id: NodeId, incarnation: u64) {
    let now = world.now;
    let strike_at = if world.rng.chance(400) {
        now
    } else {
        now + world.rng.range(1, 4 * world.params.delay_max)
    };
    if world.rng.chance(700) {
        let until = strike_at + world.rng.range(10, 6 * ELECTION_MAX_TICKS) * TICK;
        if strike_at == now {
            world.network.isolated_until.insert(id, until);
            world.note(format!("n{id} is cut off from everyone until t={until}"));
        } else {
            world.schedule(strike_at, Ev::Isolate { node: id, until });
        }
    } else {
        let restart_at = strike_at + world.rng.range(1, 20) * TICK;
        world.schedule(
            strike_at,
            Ev::Crash {
                node: id,
                incarnation,
                restart_at,
            },
        );
    }
}

/// After a round of Readys: track membership, and schedule the snapshot file the shell asked
/// for, to be written a little later, as the server writes it on another thread.
fn after_readies(sim_node: &mut SimNode, world: &mut World, config_applied: Option<u64>) {
    let id = sim_node.id;
    if let Some(index) = config_applied {
        let config = sim_node.shell().node().config_state().clone();
        world.stats.config_changes += 1;
        if index > world.latest_config.0 {
            world.note(format!(
                "n{id} applied the configuration at {index}: {config:?}"
            ));
            for &member in &config.all_nodes() {
                world.ever_member.insert(member);
            }
            let all = config.all_nodes();
            world.to_remove = world
                .ever_member
                .iter()
                .copied()
                .filter(|member| !all.contains(member))
                .collect();
            world.latest_config = (index, config);
        }
    }
    if let Some(job) = sim_node.shell().take_snapshot_job() {
        world.note(format!(
            "n{id} takes a snapshot at {}",
            job.snapshot.meta.index
        ));
        sim_node.snapshot_job = Some(job);
        // Rationale: a large image takes the server's blocking thread a while to write (0.7 s
        // for 125 MB); up to ten ticks gives crashes, elections and compactions time to fall
        // in between.
        let at = world.now + world.rng.range(1, 10 * TICK);
        let incarnation = sim_node.incarnation;
        world.schedule(
            at,
            Ev::SnapshotWritten {
                node: id,
                incarnation,
            },
        );
    }
}

/// A node's shell over `storage`, with the state machine restored from the log's snapshot, as
/// the server's runtime builds it at start.
fn build_shell(world: &World, config: Config, storage: NodeStorage) -> Shell {
    let snapshot = storage.snapshot().expect("storage has one");
    let machine = KvMachine::from_snapshot(&snapshot.data);
    let shell_config = ShellConfig {
        snapshot_entries: world.params.snapshot_every,
        // Rationale: longer than a client's own attempt timeout, so that the clients decide
        // when to try elsewhere, as etcd's clients do; the shell only bounds what it holds.
        request_timeout_ticks: OPERATION_DEADLINE_TICKS,
        waiters_max: 10_000,
        read_round_overdue_ticks: 2,
        first_request_id: config.id << 48,
    };
    let node = Node::new(config, storage).expect("a valid configuration");
    #[allow(unused_mut)]
    let mut shell = NodeShell::new(node, machine, snapshot.meta.index, shell_config);
    #[cfg(feature = "planted-bugs")]
    if let Some(crate::config::PlantedBug::Shell(bug)) = world.config.planted_bug {
        shell.plant(bug);
    }
    shell
}

impl Simulation {
    fn new(seed: u64, config: SimConfig) -> Simulation {
        let mut rng = SimRng::new(seed);
        let lease_reads = config.faults.lease && rng.chance(300);
        // Every valid setting of the core gets its share of seeds: pre-vote and check-quorum
        // off, one entry per message (which is what exposes the paper's Figure 8), a window of
        // one message in flight.
        let pre_vote = rng.chance(800);
        let check_quorum = lease_reads || rng.chance(800);
        let message_bytes_max = rng.pick(&[1, 1, 200, 4096]);
        let inflight_messages_max = rng.pick(&[1, 4, 16, 64]);
        let params = Params {
            lease_reads,
            pre_vote,
            check_quorum,
            message_bytes_max,
            inflight_messages_max,
            delay_max: rng.range(2, TICK),
            snapshot_every: rng.range(20, 120),
            fault_gap_max_ticks: rng.range(40, 150),
            // Spread the operations over the chaos phase: each client's mean think time leaves
            // room for its share of them, and for operations that take long under faults.
            think_max_ticks: (config.chaos_ticks * config.clients as u64
                / config.ops.max(1) as u64)
                .max(2),
            keys: (2 * config.clients as u64).max(4),
        };
        let trace = Trace::new(config.recent_events, config.keep_trace);
        let founders: Vec<NodeId> = (1..=config.nodes as u64).collect();
        let initial = ConfigState::with_voters(founders.iter().copied());
        let clients = (0..config.clients)
            .map(|index| Client {
                id: index as u64 + 1,
                next_request: 1,
                pending: None,
                leader_hint: None,
                generation: 0,
            })
            .collect();
        let mut world = World {
            params,
            rng,
            disk_rng: SimRng::new(seed ^ DISK_RANDOM_STREAM),
            now: 0,
            sequence: 0,
            queue: BTreeMap::new(),
            network: Network::default(),
            trace,
            invariants: Invariants::new(KvStore::default().state_hash()),
            violation: None,
            violation_events: Vec::new(),
            clients,
            history: History::new(),
            next_value: 1,
            next_read_attempt: 1,
            known_values: BTreeMap::new(),
            acknowledged_writes: Vec::new(),
            latest_config: (1, initial.clone()),
            ever_member: founders.iter().copied().collect(),
            to_remove: Vec::new(),
            feedback: Vec::new(),
            crash_voters_until: 0,
            crash_requests: Vec::new(),
            leader_churn_until: 0,
            phase: Phase::Chaos,
            probe_request: 0,
            probe_done_at: None,
            stats: Stats {
                lease_reads,
                ..Stats::default()
            },
            replacements: VecDeque::new(),
            proposed_quorums: Vec::new(),
            config,
        };
        let seed_for_nodes = world.rng.next_u64();
        let mut simulation = Simulation {
            nodes: BTreeMap::new(),
            world,
            next_joiner: founders.len() as u64 + 1,
        };
        let description = format!(
            "seed {seed}: {} nodes, {} reads, pre-vote {pre_vote}, check-quorum {check_quorum}, \
             message bytes {message_bytes_max}, in flight {inflight_messages_max}, snapshot every {} \
             entries, faults {}, storage {}",
            founders.len(),
            if lease_reads { "lease" } else { "ReadIndex" },
            params.snapshot_every,
            simulation.world.config.faults,
            simulation.world.config.storage
        );
        simulation.world.note(description);
        for &id in &founders {
            let bootstrap = Bootstrap::Founder(initial.clone());
            simulation.start_node(id, bootstrap, seed_for_nodes);
        }
        for client in 0..simulation.world.clients.len() {
            let at = simulation.world.rng.range(1, 20) * TICK;
            simulation.world.schedule(
                at,
                Ev::ClientWake {
                    client,
                    generation: 0,
                },
            );
        }
        if !simulation.world.config.faults.is_none() {
            let at = simulation.world.rng.range(20, 60) * TICK;
            simulation.world.schedule(at, Ev::Nemesis);
        }
        let heal_at = simulation.world.config.chaos_ticks * TICK;
        simulation.world.schedule(heal_at, Ev::Heal);
        simulation
    }

    fn node_config(&self, id: NodeId, seed_for_nodes: u64) -> Config {
        let mut config = Config::new(id);
        config.election_timeout_min_ticks = ELECTION_MIN_TICKS;
        config.election_timeout_max_ticks = ELECTION_MAX_TICKS;
        config.random_seed = seed_for_nodes ^ id.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        if self.world.params.lease_reads {
            config.read_mode = ReadMode::LeaseBased;
        }
        config.pre_vote = self.world.params.pre_vote;
        config.check_quorum = self.world.params.check_quorum;
        // Small messages and windows, so that flow control and batching are exercised.
        config.message_bytes_max = self.world.params.message_bytes_max;
        config.inflight_messages_max = self.world.params.inflight_messages_max;
        #[cfg(feature = "planted-bugs")]
        if let Some(crate::config::PlantedBug::Core(bug)) = self.world.config.planted_bug {
            config.planted_bug = Some(bug);
        }
        config
    }

    /// Starts a node on a fresh disk: a founding member from the bootstrap snapshot, a joiner
    /// empty.
    fn start_node(&mut self, id: NodeId, bootstrap: Bootstrap, seed_for_nodes: u64) {
        let config = self.node_config(id, seed_for_nodes);
        let (storage, disk) = match self.world.config.storage {
            StorageKind::Memory => {
                let memory = match bootstrap {
                    Bootstrap::Founder(initial) => MemoryStorage::new_with_config(initial),
                    Bootstrap::Joiner => MemoryStorage::default(),
                };
                (NodeStorage::Memory(Box::new(memory)), None)
            }
            StorageKind::Wal => {
                let disk = NodeDisk::new(id, bootstrap, &mut self.world.disk_rng);
                let (log, _) = disk.open().expect("a fresh simulated disk opens");
                (NodeStorage::Wal(Box::new(log)), Some(disk))
            }
        };
        let applied = storage.first_index() - 1;
        let commit_seen = storage.durable_hard_state().commit;
        let shell = build_shell(&self.world, config.clone(), storage);
        let sim_node = SimNode {
            id,
            config,
            shell: Some(shell),
            durable: None,
            disk,
            durable_at_crash: None,
            unsynced_hard_states: Vec::new(),
            corrupted: None,
            snapshot_job: None,
            status: Status::Up,
            incarnation: 1,
            applied,
            commit_seen,
            paused: false,
            missed_ticks: 0,
            jump_on_resume: false,
            held: Vec::new(),
        };
        self.nodes.insert(id, sim_node);
        let at = self.world.now + self.world.rng.range(1, TICK);
        self.world.schedule(
            at,
            Ev::Tick {
                node: id,
                incarnation: 1,
            },
        );
    }

    fn run_to_end(&mut self) {
        let hard_limit =
            (self.world.config.chaos_ticks + 2 * LIVENESS_BOUND_BARE_QUORUM_TICKS) * TICK;
        while self.world.violation.is_none() && self.world.phase != Phase::Done {
            let Some(((at, _), event)) = self.world.queue.pop_first() else {
                break;
            };
            self.world.now = at;
            if at > hard_limit {
                self.world.fail_now(
                    "the run ends",
                    "the simulation ran past its time limit".into(),
                );
                break;
            }
            self.handle(event);
            self.remove_nodes();
            for (id, restart_at) in std::mem::take(&mut self.world.crash_requests) {
                self.crash(id);
                self.world.schedule(restart_at, Ev::Restart { node: id });
            }
        }
        self.world.stats.ticks = self.world.now / TICK;
        if self.world.violation.is_none() {
            self.final_checks();
        }
    }

    fn handle(&mut self, event: Ev) {
        match event {
            Ev::Tick { node, incarnation } => self.on_tick(node, incarnation),
            Ev::Deliver {
                message,
                sender_incarnation,
            } => self.deliver(message, sender_incarnation),
            Ev::Feedback(feedback) => {
                let sender = match feedback {
                    Feedback::Unreachable { sender, .. } | Feedback::Snapshot { sender, .. } => {
                        sender
                    }
                };
                if let Some(sim_node) = self.nodes.get_mut(&sender) {
                    give_feedback(sim_node, feedback);
                    process(sim_node, &mut self.world);
                }
            }
            Ev::ClientWake { client, generation } => self.on_client_wake(client, generation),
            Ev::Nemesis => self.on_nemesis(),
            Ev::EndPartition { generation } => {
                if self.world.network.partition_generation == generation {
                    self.world.network.blocked.clear();
                    self.world.note("partition heals".into());
                }
            }
            Ev::EndNetworkFaults { generation } => {
                if self.world.network.faults_generation == generation {
                    self.clear_network_faults();
                }
            }
            Ev::Restart { node } => self.restart(node),
            Ev::Isolate { node, until } => {
                if self.world.phase == Phase::Chaos {
                    self.world.network.isolated_until.insert(node, until);
                    self.world
                        .note(format!("n{node} is cut off from everyone until t={until}"));
                }
            }
            Ev::Crash {
                node,
                incarnation,
                restart_at,
            } => {
                let chaos = self.world.phase == Phase::Chaos;
                if chaos
                    && self
                        .nodes
                        .get(&node)
                        .is_some_and(|n| n.incarnation == incarnation && n.is_running())
                {
                    self.crash(node);
                    self.world.schedule(restart_at, Ev::Restart { node });
                }
            }
            Ev::Resume { node, incarnation } => self.resume(node, incarnation),
            Ev::SnapshotWritten { node, incarnation } => {
                if let Some(sim_node) = self.nodes.get_mut(&node) {
                    if sim_node.incarnation == incarnation && sim_node.is_running() {
                        if let Some(job) = sim_node.snapshot_job.take() {
                            let written = job.write(None);
                            if let Err(error) = sim_node.shell().adopt_snapshot(written) {
                                storage_failed(sim_node, &mut self.world, &error);
                            } else {
                                process(sim_node, &mut self.world);
                            }
                        }
                    }
                }
            }
            Ev::Heal => self.heal(),
            Ev::Probe => self.on_probe(),
            Ev::Operator => self.on_operator(),
        }
    }

    // ----- Nodes -------------------------------------------------------------------------------

    fn on_tick(&mut self, id: NodeId, incarnation: u64) {
        let Some(sim_node) = self.nodes.get_mut(&id) else {
            return;
        };
        if sim_node.incarnation != incarnation || !sim_node.is_running() {
            return;
        }
        let next = self.world.now + self.world.rng.range(TICK - 1, TICK + 1);
        self.world.schedule(
            next,
            Ev::Tick {
                node: id,
                incarnation,
            },
        );
        if sim_node.paused {
            sim_node.missed_ticks += 1;
            return;
        }
        self.world.record(Event::Tick { node: id, count: 1 });
        sim_node.shell().tick();
        process(sim_node, &mut self.world);
    }

    fn deliver(&mut self, message: Message, sender_incarnation: u64) {
        let summary = summarize(&message);
        let is_snapshot = matches!(message.body, MessageBody::InstallSnapshot { .. });
        let to = message.to;
        let running = self.nodes.get(&to).is_some_and(SimNode::is_running);
        if !running {
            self.world.drop_message(
                summary,
                DropReason::ReceiverDown,
                sender_incarnation,
                is_snapshot,
            );
            self.flush_feedback();
            return;
        }
        if self.world.network.is_cut(message.from, to, self.world.now) {
            self.world.drop_message(
                summary,
                DropReason::Partitioned,
                sender_incarnation,
                is_snapshot,
            );
            self.flush_feedback();
            return;
        }
        let sim_node = self.nodes.get_mut(&to).expect("running");
        if sim_node.paused {
            sim_node.held.push((message, sender_incarnation));
            return;
        }
        self.world.stats.messages_delivered += 1;
        self.world.record(Event::Deliver { message: summary });
        sim_node.shell().step(message);
        process(sim_node, &mut self.world);
        if is_snapshot {
            self.world.feedback.push(Feedback::Snapshot {
                sender: summary.from,
                incarnation: sender_incarnation,
                peer: to,
                success: true,
            });
            self.flush_feedback();
        }
    }

    /// Hands pending transport feedback to its senders.
    fn flush_feedback(&mut self) {
        for feedback in std::mem::take(&mut self.world.feedback) {
            let now = self.world.now;
            self.world.schedule(now, Ev::Feedback(feedback));
        }
    }

    fn crash(&mut self, id: NodeId) {
        let Some(sim_node) = self.nodes.get_mut(&id) else {
            return;
        };
        // Only what the persist step wrote (and, with the WAL, synced) survives.
        power_off(sim_node, &mut self.world, true);
    }

    /// Opens the node's storage after a crash: `MemoryStorage` as it was, or the WAL reopened
    /// from the disk. `None` if the node cannot start.
    fn reopen_storage(&mut self, id: NodeId) -> Option<NodeStorage> {
        let sim_node = self.nodes.get_mut(&id).expect("exists");
        if let Some(memory) = sim_node.durable.take() {
            return Some(NodeStorage::Memory(Box::new(memory)));
        }
        let disk = sim_node
            .disk
            .as_ref()
            .expect("a node without memory storage has a disk");
        let opened = disk.open();
        let expected = sim_node.durable_at_crash.take();
        let corrupted = sim_node.corrupted.clone();
        let world = &mut self.world;
        match (opened, corrupted) {
            (Ok((log, report)), None) => {
                world.note(format!("n{id} reopens its storage: {report}"));
                if report.torn_tail.is_some() {
                    world.stats.torn_tails += 1;
                }
                if let Some(expected) = expected {
                    let reopened = DurableLog::of(&log, Vec::new());
                    if !expected.is_kept_by(&reopened) {
                        world.fail_now(
                            "what a sync made durable survives a crash",
                            format!(
                                "n{id} synced {expected:?} but reopened {reopened:?} ({report})"
                            ),
                        );
                    }
                }
                Some(NodeStorage::Wal(Box::new(log)))
            }
            (Ok(_), Some(damage)) => {
                world.fail_now(
                    "a damaged old record stops the node",
                    format!("n{id} started from a disk with a flipped {damage}"),
                );
                None
            }
            (Err(error @ storage::Error::Corrupt { .. }), Some(damage)) => {
                world.note(format!(
                    "n{id} refuses to start: {error} (the nemesis flipped {damage})"
                ));
                sim_node.status = Status::Failed;
                if world.disk_rng.chance(500) {
                    world.note(format!("operator: n{id} stays down"));
                } else {
                    world.note(format!("operator: n{id} is replaced by a new member"));
                    world.replacements.push_back(Replacement {
                        failed: id,
                        new: None,
                    });
                    if world.replacements.len() == 1 {
                        let at = world.now + TICK;
                        world.schedule(at, Ev::Operator);
                    }
                }
                None
            }
            (Err(error), damage) => {
                world.fail_now(
                    "a node restarts from its own disk",
                    format!("n{id} cannot open its storage: {error} (damage done: {damage:?})"),
                );
                sim_node.status = Status::Failed;
                None
            }
        }
    }

    fn restart(&mut self, id: NodeId) {
        let Some(sim_node) = self.nodes.get_mut(&id) else {
            return;
        };
        if sim_node.status != Status::Crashed {
            return;
        }
        let Some(storage) = self.reopen_storage(id) else {
            return;
        };
        let snapshot = storage.snapshot().expect("storage has one");
        let sim_node = self.nodes.get(&id).expect("exists");
        let mut config = sim_node.config.clone();
        // The state machine restarts from the snapshot; the core replays committed entries
        // after it. Each life gets its own election-timeout stream.
        config.applied_index = snapshot.meta.index;
        config.random_seed = config.random_seed.wrapping_add(sim_node.incarnation);
        let commit_seen = storage.durable_hard_state().commit.max(snapshot.meta.index);
        let shell = build_shell(&self.world, config, storage);
        let state = shell.state_machine().kv.state_hash();
        let sim_node = self.nodes.get_mut(&id).expect("exists");
        sim_node.applied = snapshot.meta.index;
        sim_node.commit_seen = commit_seen;
        sim_node.incarnation += 1;
        sim_node.status = Status::Up;
        sim_node.shell = Some(shell);
        let incarnation = sim_node.incarnation;
        self.world.note(format!(
            "n{id} restarts from its durable state (snapshot at {})",
            snapshot.meta.index
        ));
        let result =
            self.world
                .invariants
                .check_state(self.world.now, id, snapshot.meta.index, state);
        self.world.check(result);
        let at = self.world.now + self.world.rng.range(1, TICK);
        self.world.schedule(
            at,
            Ev::Tick {
                node: id,
                incarnation,
            },
        );
        let sim_node = self.nodes.get_mut(&id).expect("exists");
        process(sim_node, &mut self.world);
    }

    fn pause(&mut self, id: NodeId, duration_ticks: u64) {
        let jump = self.world.params.lease_reads || self.world.rng.chance(500);
        let Some(sim_node) = self.nodes.get_mut(&id) else {
            return;
        };
        if !sim_node.is_running() || sim_node.paused {
            return;
        }
        sim_node.paused = true;
        sim_node.missed_ticks = 0;
        sim_node.jump_on_resume = jump;
        let incarnation = sim_node.incarnation;
        self.world
            .note(format!("n{id} pauses for {duration_ticks} ticks"));
        let at = self.world.now + duration_ticks * TICK;
        self.world.schedule(
            at,
            Ev::Resume {
                node: id,
                incarnation,
            },
        );
    }

    fn resume(&mut self, id: NodeId, incarnation: u64) {
        let Some(sim_node) = self.nodes.get_mut(&id) else {
            return;
        };
        if sim_node.incarnation != incarnation || !sim_node.is_running() || !sim_node.paused {
            return;
        }
        sim_node.paused = false;
        let missed = std::mem::take(&mut sim_node.missed_ticks);
        // Rationale: a paused process whose clock kept running sees all the missed time at once
        // when it wakes; it must count it before it serves anything, or a lease would outlive
        // its term. Without the jump the node's clock simply stood still.
        if sim_node.jump_on_resume && missed > 0 {
            self.world.record(Event::Tick {
                node: id,
                count: missed,
            });
            for _ in 0..missed {
                sim_node.shell().tick();
            }
            process(sim_node, &mut self.world);
        }
        self.world
            .note(format!("n{id} resumes ({missed} ticks missed)"));
        let mut held = std::mem::take(&mut sim_node.held).into_iter();
        for (message, sender_incarnation) in held.by_ref() {
            let sim_node = self.nodes.get_mut(&id).expect("exists");
            let summary = summarize(&message);
            let is_snapshot = matches!(message.body, MessageBody::InstallSnapshot { .. });
            self.world.stats.messages_delivered += 1;
            self.world.record(Event::Deliver { message: summary });
            sim_node.shell().step(message);
            process(sim_node, &mut self.world);
            if is_snapshot {
                // The transport held the snapshot's stream open while the process was frozen;
                // now it went through, and the sender learns so, as in `deliver`.
                let now = self.world.now;
                let feedback = Feedback::Snapshot {
                    sender: summary.from,
                    incarnation: sender_incarnation,
                    peer: id,
                    success: true,
                };
                self.world.schedule(now, Ev::Feedback(feedback));
            }
            if !self.nodes[&id].is_running() {
                break;
            }
        }
        abandon_held(held.collect(), &mut self.world);
    }

    fn clock_jump(&mut self, id: NodeId, ticks: u64) {
        let Some(sim_node) = self.nodes.get_mut(&id) else {
            return;
        };
        if !sim_node.is_running() || sim_node.paused {
            return;
        }
        self.world.record(Event::Tick {
            node: id,
            count: ticks,
        });
        for _ in 0..ticks {
            sim_node.shell().tick();
        }
        process(sim_node, &mut self.world);
    }

    /// Shuts down nodes whose removal from the configuration every remaining voter has
    /// applied.
    ///
    /// Rationale: the configuration takes effect when applied. Shut a removed node down as soon
    /// as the change commits, and voters that have not yet learned the commit still count it
    /// (in a joint configuration, they need its vote): with it gone they can never elect. The
    /// operator waits until the voters have applied the change.
    fn remove_nodes(&mut self) {
        if self.world.to_remove.is_empty() {
            return;
        }
        let (config_index, config) = &self.world.latest_config;
        // A voter whose disk is damaged never starts again: the operator does not wait for it.
        let voters_applied = config
            .voters
            .iter()
            .chain(&config.voters_outgoing)
            .filter_map(|voter| self.nodes.get(voter))
            .filter(|sim_node| sim_node.status != Status::Failed)
            .all(|sim_node| sim_node.is_running() && sim_node.applied >= *config_index);
        if !voters_applied {
            return;
        }
        for id in std::mem::take(&mut self.world.to_remove) {
            let Some(sim_node) = self.nodes.get_mut(&id) else {
                continue;
            };
            if sim_node.status == Status::Removed {
                continue;
            }
            sim_node.shell = None;
            sim_node.status = Status::Removed;
            abandon_held(std::mem::take(&mut sim_node.held), &mut self.world);
            self.world
                .note(format!("n{id} is removed from the cluster and shut down"));
        }
    }

    /// The running, unpaused leader of the highest term.
    fn current_leader(&self) -> Option<NodeId> {
        self.nodes
            .values()
            .filter(|sim_node| sim_node.is_running() && !sim_node.paused)
            .filter_map(|sim_node| {
                let node = sim_node.shell.as_ref()?.node();
                (node.role() == Role::Leader).then_some((node.term(), sim_node.id))
            })
            .max()
            .map(|(_, id)| id)
    }

    fn running_ids(&self) -> Vec<NodeId> {
        self.nodes
            .values()
            .filter(|sim_node| sim_node.is_running())
            .map(|sim_node| sim_node.id)
            .collect()
    }

    /// Nodes not removed: the ones the network can name.
    fn live_ids(&self) -> Vec<NodeId> {
        self.nodes
            .values()
            .filter(|sim_node| sim_node.status != Status::Removed)
            .map(|sim_node| sim_node.id)
            .collect()
    }

    // ----- Nemesis -----------------------------------------------------------------------------

    fn on_nemesis(&mut self) {
        if self.world.phase != Phase::Chaos {
            return;
        }
        let faults = self.world.config.faults;
        let wal = self.world.config.storage == StorageKind::Wal;
        let candidates = [
            (Fault::Partition, faults.partition),
            (
                Fault::Network,
                faults.loss || faults.duplicate || faults.delay,
            ),
            (Fault::Crash, faults.crash),
            (Fault::CrashAll, faults.crash),
            (Fault::CrashVoters, faults.crash),
            (Fault::LeaderChurn, faults.crash || faults.partition),
            (Fault::Pause, faults.pause),
            (Fault::ClockJump, faults.clock),
            (Fault::Membership, faults.membership),
            (Fault::Transfer, faults.transfer),
            (Fault::DiskFailure, faults.disk && wal),
            (Fault::Corrupt, faults.corrupt && wal),
        ];
        let kinds: Vec<Fault> = candidates
            .iter()
            .filter(|(_, enabled)| *enabled)
            .map(|(fault, _)| *fault)
            .collect();
        if !kinds.is_empty() {
            match self.world.rng.pick(&kinds) {
                Fault::Partition => self.start_partition(),
                Fault::Network => self.start_network_faults(),
                Fault::Crash => {
                    let targets = self.running_ids();
                    if !targets.is_empty() {
                        let target = self.pick_target(&targets);
                        self.crash(target);
                        let at = self.world.now + self.world.rng.range(5, 150) * TICK;
                        self.world.schedule(at, Ev::Restart { node: target });
                    }
                }
                Fault::CrashAll => {
                    // A power failure of the whole cluster: every node loses what it had not
                    // synced, and each comes back on its own a little later, from its disk
                    // alone, as a whole-cluster restart of the server does.
                    let targets = self.running_ids();
                    self.world
                        .note(format!("nemesis: every node crashes ({targets:?})"));
                    for target in targets {
                        self.crash(target);
                        let at = self.world.now + self.world.rng.range(5, 60) * TICK;
                        self.world.schedule(at, Ev::Restart { node: target });
                    }
                }
                Fault::CrashVoters => {
                    let until = self.world.now + self.world.rng.range(50, 300) * TICK;
                    self.world.note(format!(
                        "nemesis: nodes that grant a vote crash until t={until}"
                    ));
                    self.world.crash_voters_until = until;
                }
                Fault::LeaderChurn => {
                    let until = self.world.now + self.world.rng.range(50, 300) * TICK;
                    self.world.note(format!(
                        "nemesis: new leaders are cut off or crash until t={until}"
                    ));
                    self.world.leader_churn_until = until;
                }
                Fault::Pause => {
                    let targets = self.running_ids();
                    if !targets.is_empty() {
                        let target = self.pick_target(&targets);
                        let duration = self.world.rng.range(5, 3 * ELECTION_MAX_TICKS);
                        self.pause(target, duration);
                    }
                }
                Fault::ClockJump => {
                    // Rationale: with lease reads only a leader's clock may jump ahead (its
                    // lease then ends early, which is safe); a follower whose clock runs ahead
                    // breaks the documented assumption of lease reads.
                    let target = if self.world.params.lease_reads {
                        self.current_leader()
                    } else {
                        let targets = self.running_ids();
                        (!targets.is_empty()).then(|| self.world.rng.pick(&targets))
                    };
                    if let Some(target) = target {
                        let ticks = self
                            .world
                            .rng
                            .range(ELECTION_MIN_TICKS, 3 * ELECTION_MAX_TICKS);
                        self.world
                            .note(format!("n{target}'s clock jumps {ticks} ticks"));
                        self.clock_jump(target, ticks);
                    }
                }
                Fault::Membership => self.change_membership(),
                Fault::Transfer => self.transfer_leadership(),
                Fault::DiskFailure => {
                    let targets = self.running_ids();
                    if !targets.is_empty() {
                        let target = self.pick_target(&targets);
                        if let Some(disk) = &self.nodes[&target].disk {
                            disk.disk.set_fail_syncs(true);
                            self.world
                                .note(format!("nemesis: n{target}'s next fsync fails"));
                        }
                    }
                }
                Fault::Corrupt => self.corrupt_a_disk(),
            }
        }
        let gap = self
            .world
            .rng
            .range(5, self.world.params.fault_gap_max_ticks);
        let at = self.world.now + gap * TICK;
        self.world.schedule(at, Ev::Nemesis);
    }

    /// Half the time the leader, otherwise any of `targets`.
    fn pick_target(&mut self, targets: &[NodeId]) -> NodeId {
        if self.world.rng.chance(500) {
            if let Some(leader) = self.current_leader() {
                return leader;
            }
        }
        self.world.rng.pick(targets)
    }

    fn start_partition(&mut self) {
        let mut ids = self.live_ids();
        if ids.len() < 2 {
            return;
        }
        self.world.rng.shuffle(&mut ids);
        // Put the leader first half the time, so that it lands in the smaller side (a leader
        // cut off with a minority) or, when the cut side is the larger, with the majority.
        if let Some(leader) = self.current_leader() {
            if self.world.rng.chance(500) {
                let position = ids.iter().position(|&id| id == leader).expect("live");
                ids.swap(0, position);
            }
        }
        let network = &mut self.world.network;
        network.blocked.clear();
        network.partition_generation += 1;
        let generation = network.partition_generation;
        let kind = if ids.len() >= 3 {
            self.world.rng.below(3)
        } else {
            self.world.rng.below(2)
        };
        let description = match kind {
            0 => {
                // Symmetric: a minority (or the majority) cut off from the rest.
                let split = self.world.rng.range(1, ids.len() as u64 - 1) as usize;
                let (side_a, side_b) = ids.split_at(split);
                self.world.network.cut(side_a, side_b, true);
                format!("partition {side_a:?} | {side_b:?}")
            }
            1 => {
                // One-way: the first group cannot reach the second, the reverse still works.
                let split = self.world.rng.range(1, ids.len() as u64 - 1) as usize;
                let (side_a, side_b) = ids.split_at(split);
                self.world.network.cut(side_a, side_b, false);
                format!("one-way partition {side_a:?} -/-> {side_b:?}")
            }
            _ => {
                // A bridge: two sides that cannot talk, and one node that sees both.
                let (bridge, rest) = ids.split_last().expect("three or more nodes");
                let split = self.world.rng.range(1, rest.len() as u64 - 1) as usize;
                let (side_a, side_b) = rest.split_at(split);
                self.world.network.cut(side_a, side_b, true);
                format!("bridge n{bridge} between {side_a:?} and {side_b:?}")
            }
        };
        self.world.note(description);
        let at = self.world.now + self.world.rng.range(10, 8 * ELECTION_MAX_TICKS) * TICK;
        self.world.schedule(at, Ev::EndPartition { generation });
    }

    fn start_network_faults(&mut self) {
        let faults = self.world.config.faults;
        let rng = &mut self.world.rng;
        let loss = if faults.loss { rng.range(0, 200) } else { 0 };
        let duplicate = if faults.duplicate {
            rng.range(0, 100)
        } else {
            0
        };
        let spike = if faults.delay { rng.range(0, 150) } else { 0 };
        let spike_max = rng.range(2, 30) * TICK;
        let duration = rng.range(20, 6 * ELECTION_MAX_TICKS);
        let network = &mut self.world.network;
        network.loss_per_mille = loss;
        network.duplicate_per_mille = duplicate;
        network.spike_per_mille = spike;
        network.spike_max = spike_max;
        network.faults_generation += 1;
        let generation = network.faults_generation;
        self.world.note(format!(
            "network: loss {loss}/1000, duplication {duplicate}/1000, delay spikes {spike}/1000 up to {spike_max}"
        ));
        let at = self.world.now + duration * TICK;
        self.world.schedule(at, Ev::EndNetworkFaults { generation });
    }

    fn clear_network_faults(&mut self) {
        let network = &mut self.world.network;
        network.loss_per_mille = 0;
        network.duplicate_per_mille = 0;
        network.spike_per_mille = 0;
        self.world.note("network faults end".into());
    }

    /// The applied configuration of a running node.
    fn running_config(&self, id: NodeId) -> ConfigState {
        self.nodes[&id]
            .shell
            .as_ref()
            .expect("running")
            .node()
            .config_state()
            .clone()
    }

    fn transfer_leadership(&mut self) {
        let Some(leader) = self.current_leader() else {
            return;
        };
        let voters = self.running_config(leader).voters;
        let others: Vec<NodeId> = voters.into_iter().filter(|&id| id != leader).collect();
        if others.is_empty() {
            return;
        }
        let target = self.world.rng.pick(&others);
        let sim_node = self.nodes.get_mut(&leader).expect("exists");
        let result = sim_node.shell().transfer_leadership(target);
        self.world.note(format!(
            "n{leader} transfers leadership to n{target}: {result:?}"
        ));
        process(sim_node, &mut self.world);
    }

    /// An operator's membership change, proposed at the leader.
    fn change_membership(&mut self) {
        let Some(leader) = self.current_leader() else {
            return;
        };
        let config = self.running_config(leader);
        let founders = self.world.config.nodes;
        let change = if config.is_joint() {
            if config.auto_leave {
                return;
            }
            ConfigChange::leave_joint()
        } else {
            let mut options: Vec<u8> = Vec::new();
            let joiners = self.next_joiner - founders as u64 - 1;
            if config.learners.is_empty() && joiners < JOINERS_MAX {
                options.push(0);
            }
            if !config.learners.is_empty() && config.voters.len() <= founders + 1 {
                options.push(1);
                if config.voters.len() >= 2 {
                    options.push(3);
                }
            }
            if config.voters.len() > founders.saturating_sub(1).max(1) {
                options.push(2);
            }
            if options.is_empty() {
                return;
            }
            let voters = config.voters.clone();
            match self.world.rng.pick(&options) {
                0 => {
                    let id = self.next_joiner;
                    self.next_joiner += 1;
                    let seed = self.world.rng.next_u64();
                    self.start_node(id, Bootstrap::Joiner, seed);
                    self.world
                        .note(format!("n{id} starts empty, to join as a learner"));
                    ConfigChange::new([ConfigChangeStep::AddLearner(id)])
                }
                1 => {
                    let learner = self.world.rng.pick(&config.learners);
                    ConfigChange::new([ConfigChangeStep::AddVoter(learner)])
                }
                2 => {
                    let voter = self.world.rng.pick(&voters);
                    if self.world.rng.chance(300) {
                        // A demotion goes through a joint configuration.
                        ConfigChange::new([ConfigChangeStep::AddLearner(voter)])
                    } else {
                        ConfigChange::new([ConfigChangeStep::RemoveNode(voter)])
                    }
                }
                _ => {
                    let learner = self.world.rng.pick(&config.learners);
                    let voter = self.world.rng.pick(&voters);
                    let transition = self.world.rng.pick(&[
                        ConfigTransition::Auto,
                        ConfigTransition::JointAutoLeave,
                        ConfigTransition::JointExplicitLeave,
                    ]);
                    ConfigChange {
                        steps: vec![
                            ConfigChangeStep::AddVoter(learner),
                            ConfigChangeStep::RemoveNode(voter),
                        ],
                        transition,
                    }
                }
            }
        };
        // Rationale: with a node down for good (a damaged disk), a removal could leave a
        // configuration whose quorum can never be reached; an operator would not do that.
        let quorums = quorums_after(&config, &change);
        if !self.quorums_stay_healthy(&quorums, None) {
            return;
        }
        self.propose_change(leader, change, &config);
    }

    /// Proposes a membership change at `leader`, whose applied configuration is `config`, and
    /// remembers the quorums it will need.
    fn propose_change(&mut self, leader: NodeId, change: ConfigChange, config: &ConfigState) {
        let sim_node = self.nodes.get_mut(&leader).expect("exists");
        let result = sim_node
            .shell()
            .propose_config_change(change.clone(), SimWaiter::Operator)
            .map_err(|refused| refused.error);
        self.world
            .note(format!("n{leader} proposes {change:?}: {result:?}"));
        if let Ok(index) = result {
            let applied_index = self.world.latest_config.0;
            let proposed = &mut self.world.proposed_quorums;
            proposed.retain(|(earlier, _)| *earlier > applied_index);
            proposed.push((index, quorums_after(config, &change)));
        }
        let sim_node = self.nodes.get_mut(&leader).expect("exists");
        process(sim_node, &mut self.world);
    }

    /// Whether a node counts against every quorum for good: its disk is damaged, or it was
    /// shut down after its removal.
    fn is_stuck(&self, id: NodeId) -> bool {
        self.nodes.get(&id).is_some_and(|sim_node| {
            matches!(sim_node.status, Status::Failed | Status::Removed)
                || sim_node.corrupted.is_some()
        })
    }

    /// The voter sets that need a quorum: the applied configuration's, and those of every
    /// proposed change until a configuration at or after it applies.
    fn quorums_needed(&self) -> Vec<Vec<NodeId>> {
        let (applied_index, config) = &self.world.latest_config;
        let mut quorums = vec![config.voters.clone()];
        if config.is_joint() {
            quorums.push(config.voters_outgoing.clone());
        }
        for (index, proposed) in &self.world.proposed_quorums {
            if index > applied_index {
                quorums.extend(proposed.iter().cloned());
            }
        }
        quorums
    }

    /// How long after the heal a write must commit: longer while a voter is down for good.
    fn liveness_bound_ticks(&self) -> u64 {
        let (_, config) = &self.world.latest_config;
        let voter_down_for_good = config
            .voters
            .iter()
            .chain(&config.voters_outgoing)
            .any(|&voter| self.is_stuck(voter));
        // A set of voters with no node to spare beyond its majority (two voters, as in a joint
        // configuration of {2, 4} and {1, 2}) elects only a node whose log all of it accepts,
        // often one node alone: the same odds as a bare quorum (seed 3526: n4 alone could win,
        // and lost the race to time out first for fifteen rounds in a row).
        let no_spare = [&config.voters, &config.voters_outgoing]
            .into_iter()
            .any(|voters| {
                let runnable = voters
                    .iter()
                    .filter(|&&voter| !self.is_stuck(voter))
                    .count();
                voters.len() > 1 && runnable <= voters.len() / 2 + 1
            });
        if voter_down_for_good || no_spare {
            LIVENESS_BOUND_BARE_QUORUM_TICKS
        } else {
            LIVENESS_BOUND_TICKS
        }
    }

    /// Whether each of `quorums` keeps a majority of nodes that can run, should `also_lost`
    /// also be lost for good; without pre-vote, a set that lost a node for good must keep a
    /// majority and one more.
    ///
    /// Rationale for the spare without pre-vote: a voter that lags in an older configuration
    /// keeps raising its term with elections it cannot win, and the core ignores vote requests
    /// of a lower term (as etcd does), so on a bare quorum the one node that can win may never
    /// catch up with that voter's term (seed 3710 before this rule: n2 down for good, n3 behind
    /// at term 44, n4 asking in terms 35 to 37).
    fn quorums_stay_healthy(&self, quorums: &[Vec<NodeId>], also_lost: Option<NodeId>) -> bool {
        let spare = usize::from(!self.world.params.pre_vote);
        quorums.iter().all(|voters| {
            let healthy = voters
                .iter()
                .filter(|&&voter| Some(voter) != also_lost && !self.is_stuck(voter))
                .count();
            healthy == voters.len() || healthy > voters.len() / 2 + spare
        })
    }

    /// Flips a bit in an old record on the disk of one node, crashed for the purpose, on a
    /// minority of the nodes: at most (founders - 1) / 2 over the run, and only where every
    /// quorum keeps a majority of healthy nodes without it. Rationale: the simulator checks
    /// liveness after the faults heal, and no protocol survives losing a quorum's disks.
    fn corrupt_a_disk(&mut self) {
        let budget = (self.world.config.nodes as u64).saturating_sub(1) / 2;
        if self.world.stats.corrupted_nodes >= budget {
            return;
        }
        let quorums = self.quorums_needed();
        let candidates: Vec<NodeId> = self
            .nodes
            .values()
            // Not a node removed but not yet shut down either: voters that have not applied
            // its removal still count on it.
            .filter(|sim_node| {
                sim_node.disk.is_some()
                    && matches!(sim_node.status, Status::Up | Status::Crashed)
                    && sim_node.corrupted.is_none()
                    && !self.world.to_remove.contains(&sim_node.id)
            })
            .map(|sim_node| sim_node.id)
            .filter(|&id| self.quorums_stay_healthy(&quorums, Some(id)))
            .collect();
        if candidates.is_empty() {
            return;
        }
        let target = self.world.rng.pick(&candidates);
        if self.nodes[&target].is_running() {
            self.crash(target);
            let at = self.world.now + self.world.rng.range(5, 150) * TICK;
            self.world.schedule(at, Ev::Restart { node: target });
        }
        let sim_node = self.nodes.get_mut(&target).expect("exists");
        let disk = sim_node.disk.as_ref().expect("filtered");
        match disk.corrupt_old_record(&mut self.world.disk_rng) {
            Ok(damage) => {
                self.world
                    .note(format!("nemesis: on n{target}'s disk, flips {damage}"));
                self.world.stats.corrupted_nodes += 1;
                sim_node.corrupted = Some(damage);
            }
            Err(reason) => self.world.fail_now(
                "the simulator can damage an old record",
                format!("n{target}: {reason}"),
            ),
        }
    }

    /// The operator's next step in replacing the first failed node in line: remove it, start
    /// a new empty node and add it as a learner, promote it once it has applied the latest
    /// configuration. Each step is proposed again until the applied configuration shows it.
    fn on_operator(&mut self) {
        let Some(mut replacement) = self.world.replacements.front().copied() else {
            return;
        };
        let again_at = self.world.now + ELECTION_MIN_TICKS * TICK;
        let Some(leader) = self.current_leader() else {
            self.world.schedule(again_at, Ev::Operator);
            return;
        };
        let (config_index, config) = self.world.latest_config.clone();
        let members = config.all_nodes();
        let change = if config.is_joint() {
            // Another change is under way; an explicit one waits for its leave.
            (!config.auto_leave).then(ConfigChange::leave_joint)
        } else {
            match replacement.new {
                None if members.contains(&replacement.failed) => {
                    Some(ConfigChange::new([ConfigChangeStep::RemoveNode(
                        replacement.failed,
                    )]))
                }
                None => {
                    let id = self.next_joiner;
                    self.next_joiner += 1;
                    let seed = self.world.rng.next_u64();
                    self.start_node(id, Bootstrap::Joiner, seed);
                    self.world.note(format!(
                        "operator: n{id} starts empty, to replace n{}",
                        replacement.failed
                    ));
                    replacement.new = Some(id);
                    Some(ConfigChange::new([ConfigChangeStep::AddLearner(id)]))
                }
                Some(new)
                    if config.voters.contains(&new)
                        || (self.world.ever_member.contains(&new) && !members.contains(&new))
                        || matches!(self.nodes[&new].status, Status::Failed | Status::Removed) =>
                {
                    // Promoted; or another change removed the new node again (it is shut down
                    // soon, and must not be added back), or its own disk failed for good:
                    // either way this replacement is over.
                    self.world.note(format!(
                        "operator: replacing n{} ends with n{new} {:?}",
                        replacement.failed, self.nodes[&new].status
                    ));
                    self.world.stats.replacements += 1;
                    self.world.replacements.pop_front();
                    if !self.world.replacements.is_empty() {
                        self.world.schedule(again_at, Ev::Operator);
                    }
                    return;
                }
                Some(new) if !members.contains(&new) => {
                    Some(ConfigChange::new([ConfigChangeStep::AddLearner(new)]))
                }
                Some(new) => (self.nodes[&new].applied >= config_index)
                    .then(|| ConfigChange::new([ConfigChangeStep::AddVoter(new)])),
            }
        };
        if let Some(front) = self.world.replacements.front_mut() {
            *front = replacement;
        }
        if let Some(change) = change {
            let quorums = quorums_after(&config, &change);
            if self.quorums_stay_healthy(&quorums, None) {
                self.propose_change(leader, change, &config);
            }
        }
        self.world.schedule(again_at, Ev::Operator);
    }

    // ----- Healing and liveness ----------------------------------------------------------------

    fn heal(&mut self) {
        for sim_node in self.nodes.values() {
            if let Some(disk) = &sim_node.disk {
                disk.disk.set_fail_syncs(false);
            }
        }
        self.world.network.blocked.clear();
        self.world.network.partition_generation += 1;
        self.world.network.faults_generation += 1;
        self.clear_network_faults();
        self.world.crash_voters_until = 0;
        self.world.leader_churn_until = 0;
        self.world.network.isolated_until.clear();
        self.world.note("all faults heal".into());
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        for id in ids {
            let sim_node = &self.nodes[&id];
            if sim_node.status == Status::Crashed {
                self.restart(id);
            } else if sim_node.paused {
                let incarnation = sim_node.incarnation;
                self.resume(id, incarnation);
            }
        }
        self.world.phase = Phase::Healed { at: self.world.now };
        let now = self.world.now;
        self.world
            .schedule(now + ELECTION_MAX_TICKS * TICK, Ev::Probe);
    }

    /// After the heal: a leader must be elected and a write commit within the bound; then the
    /// clients finish what they have in flight.
    fn on_probe(&mut self) {
        let Phase::Healed { at: healed_at } = self.world.phase else {
            return;
        };
        let elapsed_ticks = (self.world.now - healed_at) / TICK;
        if let Some(done_at) = self.world.probe_done_at {
            let clients_idle = self
                .world
                .clients
                .iter()
                .all(|client| client.pending.is_none());
            let bound_ticks = self.liveness_bound_ticks();
            if clients_idle || elapsed_ticks > bound_ticks + OPERATION_DEADLINE_TICKS {
                self.world.note(format!(
                    "liveness: a write committed {} ticks after the heal",
                    (done_at - healed_at) / TICK
                ));
                self.world.phase = Phase::Done;
                return;
            }
        } else if elapsed_ticks > self.liveness_bound_ticks() {
            let bound_ticks = self.liveness_bound_ticks();
            let leader = self.current_leader();
            self.world.fail_now(
                "liveness",
                format!(
                    "no write committed within {bound_ticks} ticks of the heal (leader now: {leader:?})"
                ),
            );
            return;
        } else if let Some(leader) = self.current_leader() {
            self.world.probe_request += 1;
            let command = Command {
                client: 0,
                request: self.world.probe_request,
                action: Action::Probe,
            };
            let sim_node = self.nodes.get_mut(&leader).expect("exists");
            let result = sim_node
                .shell()
                .propose(
                    request_id(command.client, command.request),
                    command.encode(),
                    SimWaiter::Probe,
                )
                .map_err(|refused| refused.error);
            self.world.note(format!(
                "liveness probe {} proposed at n{leader}: {result:?}",
                command.request
            ));
            process(sim_node, &mut self.world);
        }
        let at = self.world.now + ELECTION_MIN_TICKS * TICK;
        self.world.schedule(at, Ev::Probe);
    }

    // ----- Clients -----------------------------------------------------------------------------

    fn on_client_wake(&mut self, index: usize, generation: u64) {
        let client = &self.world.clients[index];
        if client.generation != generation {
            return;
        }
        match client.pending {
            Some(pending) => {
                if self.world.now >= pending.invoked_at + OPERATION_DEADLINE_TICKS * TICK {
                    self.give_up(index);
                } else {
                    self.attempt(index);
                }
            }
            None => {
                let ops_left = (self.world.stats.ops_invoked as usize) < self.world.config.ops;
                if self.world.phase == Phase::Chaos && ops_left {
                    self.invoke(index);
                }
            }
        }
    }

    fn give_up(&mut self, index: usize) {
        let client = &mut self.world.clients[index];
        let pending = client.pending.take().expect("pending");
        client.generation += 1;
        let generation = client.generation;
        let client_id = client.id;
        self.world.history.indeterminate(pending.history_id);
        self.world.stats.ops_indeterminate += 1;
        self.world.record(Event::GiveUp {
            client: client_id,
            op: pending.op,
        });
        let at = self.world.now + self.world.think_ticks() * TICK;
        self.world.schedule(
            at,
            Ev::ClientWake {
                client: index,
                generation,
            },
        );
    }

    fn invoke(&mut self, index: usize) {
        let world = &mut self.world;
        let key = world.rng.below(world.params.keys);
        let roll = world.rng.below(100);
        let op = if roll < 45 {
            let value = world.next_value;
            world.next_value += 1;
            OpSummary::Put { key, value }
        } else if roll < 75 {
            OpSummary::Get { key }
        } else {
            let known = world.known_values.get(&key).copied().flatten();
            let expected = if world.rng.chance(800) {
                known
            } else if world.rng.chance(500) {
                None
            } else {
                Some(world.rng.range(1, world.next_value))
            };
            let new = world.next_value;
            world.next_value += 1;
            OpSummary::CompareAndSwap { key, expected, new }
        };
        let client = &mut world.clients[index];
        let request = client.next_request;
        client.next_request += 1;
        let history_id = world.history.invoke(client.id, to_history_operation(op));
        world.stats.ops_invoked += 1;
        client.pending = Some(Pending {
            op,
            history_id,
            request,
            attempts: 0,
            invoked_at: world.now,
            target: None,
        });
        self.attempt(index);
    }

    /// Sends the pending operation to the node the client believes leads, or to any node.
    fn attempt(&mut self, index: usize) {
        let running = self.running_ids();
        let client = &self.world.clients[index];
        let hinted = client.leader_hint.filter(|id| running.contains(id));
        let mut pending = client.pending.expect("pending");
        let is_read = matches!(pending.op, OpSummary::Get { .. });
        let target = match hinted {
            Some(id) if !(is_read && self.world.driver_bug(DriverBug::StaleLocalRead)) => Some(id),
            _ if running.is_empty() => None,
            _ => Some(self.world.rng.pick(&running)),
        };
        pending.attempts += 1;
        pending.target = None;
        let client = &mut self.world.clients[index];
        client.generation += 1;
        client.pending = Some(pending);
        let generation = client.generation;
        let client_id = client.id;
        let Some(target) = target else {
            let at = self.world.now + TICK;
            self.world.schedule(
                at,
                Ev::ClientWake {
                    client: index,
                    generation,
                },
            );
            return;
        };
        self.world.record(Event::Invoke {
            client: client_id,
            node: target,
            op: pending.op,
            attempt: pending.attempts,
        });
        let sim_node = self.nodes.get_mut(&target).expect("running");
        let incarnation = sim_node.incarnation;
        if sim_node.paused {
            // The request sits unanswered in a frozen process: the client times out.
            let at = self.world.now + ATTEMPT_TIMEOUT_TICKS * TICK;
            self.world.schedule(
                at,
                Ev::ClientWake {
                    client: index,
                    generation,
                },
            );
            return;
        }
        let retry_soon = self.world.now + self.world.rng.range(TICK / 2, 2 * TICK);
        match pending.op {
            OpSummary::Get { key } => {
                if self.world.driver_bug(DriverBug::StaleLocalRead) {
                    let value = sim_node.shell().state_machine().kv.get(key);
                    self.world.complete(index, Response::Get(value));
                    return;
                }
                let attempt = self.world.next_read_attempt;
                self.world.next_read_attempt += 1;
                let waiting = Waiting::Read(attempt);
                self.set_target(index, target, incarnation, waiting);
                let at = self.world.now + ATTEMPT_TIMEOUT_TICKS * TICK;
                self.world.schedule(
                    at,
                    Ev::ClientWake {
                        client: index,
                        generation,
                    },
                );
                // The shell registers the read with the core when it handles its Readys, and
                // answers it (or refuses it, without a leader) then.
                let sim_node = self.nodes.get_mut(&target).expect("running");
                sim_node.shell().read(SimWaiter::Client { index, waiting });
            }
            OpSummary::Put { key, value } => {
                let action = Action::Put { key, value };
                self.propose_write(
                    index,
                    target,
                    incarnation,
                    pending.request,
                    action,
                    generation,
                    retry_soon,
                );
            }
            OpSummary::CompareAndSwap { key, expected, new } => {
                let action = Action::CompareAndSwap { key, expected, new };
                self.propose_write(
                    index,
                    target,
                    incarnation,
                    pending.request,
                    action,
                    generation,
                    retry_soon,
                );
            }
        }
        let sim_node = self.nodes.get_mut(&target).expect("exists");
        process(sim_node, &mut self.world);
    }

    #[allow(clippy::too_many_arguments)]
    fn propose_write(
        &mut self,
        index: usize,
        target: NodeId,
        incarnation: u64,
        request: u64,
        action: Action,
        generation: u64,
        retry_soon: u64,
    ) {
        let client_id = self.world.clients[index].id;
        let command = Command {
            client: client_id,
            request,
            action,
        };
        let sim_node = self.nodes.get_mut(&target).expect("running");
        if self.world.driver_bug(DriverBug::AckBeforeCommit) {
            let proposed = sim_node.shell().propose(
                request_id(client_id, request),
                command.encode(),
                SimWaiter::Probe,
            );
            if proposed.is_ok() {
                let response = match sim_node.shell().state_machine().kv.peek(&action) {
                    Answer::CompareAndSwap(swapped) => Response::CompareAndSwap(swapped),
                    _ => Response::Put,
                };
                self.world.complete(index, response);
                return;
            }
        }
        let waiting = Waiting::Write(request);
        // Set before proposing: the shell may answer within the call's handling.
        self.set_target(index, target, incarnation, waiting);
        let sim_node = self.nodes.get_mut(&target).expect("running");
        let proposed = sim_node.shell().propose(
            request_id(client_id, request),
            command.encode(),
            SimWaiter::Client { index, waiting },
        );
        match proposed {
            Ok(_) => {
                self.world.clients[index].leader_hint = Some(target);
                let at = self.world.now + ATTEMPT_TIMEOUT_TICKS * TICK;
                self.world.schedule(
                    at,
                    Ev::ClientWake {
                        client: index,
                        generation,
                    },
                );
            }
            Err(Refused { error, .. }) => {
                if let Some(pending) = self.world.clients[index].pending.as_mut() {
                    pending.target = None;
                }
                let hint = match error {
                    ShellError::NotLeader { leader } => leader,
                    ShellError::NoLeader => None,
                    _ => Some(target),
                };
                self.world.clients[index].leader_hint = hint;
                self.world.schedule(
                    retry_soon,
                    Ev::ClientWake {
                        client: index,
                        generation,
                    },
                );
            }
        }
    }

    fn set_target(&mut self, index: usize, node: NodeId, incarnation: u64, waiting: Waiting) {
        if let Some(pending) = self.world.clients[index].pending.as_mut() {
            pending.target = Some((node, incarnation, waiting));
        }
    }

    // ----- The end -----------------------------------------------------------------------------

    fn final_checks(&mut self) {
        let result = linearizability::check(&self.world.history);
        if !result.is_ok() {
            self.world.fail_now("linearizability", result.to_string());
            return;
        }
        let committed: std::collections::BTreeSet<(u64, u64)> =
            self.world.invariants.committed_requests().collect();
        let lost = self
            .world
            .acknowledged_writes
            .iter()
            .find(|write| !committed.contains(write))
            .copied();
        if let Some((client, request)) = lost {
            self.world.fail_now(
                "acknowledged writes are durable",
                format!("client {client}'s request {request} was acknowledged but is not in the committed log"),
            );
            return;
        }
        // Every running node that has applied as far as the others must hold the same state;
        // the per-index state check has compared them all along, this compares the ends.
        let applied_max = self
            .nodes
            .values()
            .filter(|n| n.is_running())
            .map(|n| n.applied)
            .max();
        let mut states = self
            .nodes
            .values()
            .filter(|n| n.is_running() && Some(n.applied) == applied_max)
            .map(|n| {
                let shell = n.shell.as_ref().expect("running");
                (n.id, shell.state_machine().kv.state_hash())
            });
        if let Some((first_id, first_state)) = states.next() {
            if let Some((other, _)) = states.find(|&(_, state)| state != first_state) {
                self.world.fail_now(
                    "state machine safety",
                    format!(
                        "n{first_id} and n{other} applied the same index but hold different states"
                    ),
                );
            }
        }
    }

    fn outcome(self, seed: u64) -> Outcome {
        let world = self.world;
        let mut stats = world.stats;
        stats.events = world.trace.count();
        Outcome {
            seed,
            trace_hash: world.trace.hash(),
            recent_events: if world.violation.is_some() {
                world.violation_events
            } else {
                Vec::new()
            },
            violation: world.violation,
            trace: world.trace.all_lines(),
            stats,
        }
    }
}
