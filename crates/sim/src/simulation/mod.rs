//! One simulation run: a cluster of real [`Node`]s, a simulated clock and network, a nemesis
//! that injects faults, clients, and the invariant checks, all in one thread and driven by one
//! seeded random stream.
//!
//! Everything that happens is an event in one queue ordered by (time, sequence number), so the
//! order is total and the same on every run of a seed. Time is counted in units of which
//! [`TICK`] make one node tick; each node ticks at its own moments, about once per [`TICK`].
//!
//! This file holds the world (clock, event queue, network, clients' records) and the event
//! loop; each other job has its file: `driver` (a node's shell and the checks observing it),
//! `nodes` (ticks, deliveries, crashes, restarts, pauses), `nemesis` (the faults), `operator`
//! (replacing failed nodes), `liveness` (healing and the probe), `clients`, `checks` (the
//! end-of-run checks).

use std::collections::{BTreeMap, VecDeque};
use std::panic::{catch_unwind, AssertUnwindSafe};

use raft::{
    Config, ConfigChange, ConfigChangeStep, ConfigState, ConfigTransition, EntryPayload, HardState,
    LogStorage, MemoryStorage, Message, MessageBody, Node, NodeId, ReadMode, Ready, Role,
};
use server::runtime::{encode_proposal, Applied};
use server::shell::{
    Answer as ShellAnswer, NodeShell, Outcome as ShellOutcome, Refused, ShellConfig, ShellError,
    ShellObserver, SnapshotJob,
};
use storage::Bootstrap;

use crate::config::{SimConfig, StorageKind};
use crate::invariants::{Invariants, Violation};
use crate::kv::{self, Answer, ClientId, KvMachine};
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

/// Mixed into the seed for the choice of the seed's fault kinds (swarm testing). Rationale for
/// a stream of its own: a seed that keeps every fault kind runs exactly as it did before swarm
/// testing existed.
const SWARM_RANDOM_STREAM: u64 = 0x5A3A_5A3A_5A3A_5A3A;

/// The most events one run may handle (a seed handles about 10,000); see the watchdog in
/// `run_to_end`.
const EVENTS_MAX: u64 = 5_000_000;

/// The most rounds of Readys and transport feedback one node may go through for one event.
const ROUNDS_PER_EVENT_MAX: u64 = 100_000;

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
    /// The term and vote last made durable (synced, with the WAL), for the check that no
    /// message leaves before the term and vote it depends on are durable.
    synced_hard_state: HardState,
    paused: bool,
    /// Ticks that passed while paused, delivered at once on resume if `jump_on_resume`.
    missed_ticks: u64,
    jump_on_resume: bool,
    /// Messages that arrived while paused, with their sender's incarnation.
    held: Vec<(Message, u64)>,
}

/// The node shell as the simulator instantiates it: the same type the server's runtime drives,
/// over the simulated node's storage and the server's own state machine.
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
    /// A compaction the simulator asked for (its outcome is checked through the state).
    Compaction,
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
    attempts: u64,
    invoked_at: u64,
    /// The node, its incarnation, and what the client waits for there.
    target: Option<(NodeId, u64, Waiting)>,
}

#[derive(Debug)]
struct Client {
    id: ClientId,
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
    /// The fault kinds this seed's nemesis may choose, one bit per [`Fault`] (swarm testing).
    fault_kinds: u32,
    /// A targeted schedule: membership changes prefer swapping a voter through a joint
    /// configuration left explicitly, and the nemesis stays joint for long stretches (it
    /// proposes the leave at one membership event in five), so that elections, crashes and
    /// partitions fall while joint.
    hold_joint: bool,
}

/// Whether this seed holds joint configurations (from the swarm's stream, so that the other
/// choices of the seed stay as they were).
fn swarm_hold_joint(seed: u64) -> bool {
    SimRng::new(seed ^ SWARM_RANDOM_STREAM ^ HOLD_JOINT_RANDOM_STREAM).chance(250)
}

/// Salts the swarm stream for the joint-holding choice.
const HOLD_JOINT_RANDOM_STREAM: u64 = 0x6a6f_696e_7421;

/// Swarm testing, as FoundationDB's simulation does it: half the seeds keep every fault kind;
/// each of the others keeps each kind with even odds, so that a seed with few kinds hits
/// each of them far more often and reaches combinations that every kind at a low rate
/// rarely does. The kinds the configuration allows are filtered afterwards.
fn swarm_fault_kinds(seed: u64) -> u32 {
    let mut rng = SimRng::new(seed ^ SWARM_RANDOM_STREAM);
    if rng.chance(500) {
        return u32::MAX;
    }
    (0..FAULT_KINDS).fold(0, |kinds, kind| {
        if rng.chance(500) {
            kinds | (1 << kind)
        } else {
            kinds
        }
    })
}

/// How many kinds of [`Fault`] there are: `StaleLeaderReads` is the last.
const FAULT_KINDS: u32 = Fault::StaleLeaderReads as u32 + 1;

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
    /// The leader is cut off, and half of the clients' reads go to it meanwhile.
    StaleLeaderReads,
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
    /// The request ids of the writes acknowledged to a client.
    acknowledged_writes: Vec<u64>,
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
    /// Every vote granted, by voter and term: the candidate it went to. Kept across crashes,
    /// so that a node that forgot its vote is caught the moment it grants another.
    votes_granted: BTreeMap<(NodeId, u64), NodeId>,
    /// A cut-off old leader that half of the clients' reads go to, until the given time.
    stale_reads_to: Option<(NodeId, u64)>,
    /// What each node has durably stored, for the commit quorum check.
    stored: BTreeMap<NodeId, StoredLog>,
    /// Events handled so far, for the watchdog.
    events_handled: u64,
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
    /// Wakes client `index` at `at`, if it is still in `generation` by then.
    fn wake_client(&mut self, index: usize, at: u64, generation: u64) {
        self.schedule(
            at,
            Ev::ClientWake {
                client: index,
                generation,
            },
        );
    }

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
            (ShellOutcome::Applied(Ok(Applied::Put(_))), OpSummary::Put { .. }) => {
                self.complete(index, Response::Put);
            }
            (
                ShellOutcome::Applied(Ok(Applied::Txn(response))),
                OpSummary::CompareAndSwap { .. },
            ) => {
                self.complete(index, Response::CompareAndSwap(response.succeeded));
            }
            (ShellOutcome::Applied(outcome), _) => {
                self.fail_now(
                    "writes apply as proposed",
                    format!("a client's {:?} was answered {outcome:?}", pending.op),
                );
            }
            (ShellOutcome::ReadReady, OpSummary::Get { key }) => {
                self.complete(index, Response::Get(machine.get(key)));
            }
            (ShellOutcome::Failed(ShellError::NoLeader | ShellError::NotLeader { .. }), _) => {
                // A read the node could not register: try again soon, elsewhere.
                self.clients[index].leader_hint = None;
                let generation = self.clients[index].generation;
                let at = self.now + self.rng.range(TICK / 2, 2 * TICK);
                self.wake_client(index, at, generation);
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
        let request_id = match pending.target {
            Some((_, _, Waiting::Write(id))) => Some(id),
            _ => None,
        };
        self.history.complete(pending.history_id, response);
        self.stats.ops_completed += 1;
        let value = match (pending.op, response) {
            (OpSummary::Put { key, value }, _) => {
                self.known_values.insert(key, Some(value));
                self.acknowledged_writes.extend(request_id);
                None
            }
            (OpSummary::Get { key }, Response::Get(value)) => {
                self.known_values.insert(key, value);
                value
            }
            (OpSummary::CompareAndSwap { key, new, .. }, Response::CompareAndSwap(swapped)) => {
                if swapped {
                    self.known_values.insert(key, Some(new));
                    self.acknowledged_writes.extend(request_id);
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
        self.wake_client(index, wake, generation);
    }
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
            fault_kinds: swarm_fault_kinds(seed),
            hold_joint: swarm_hold_joint(seed),
        };
        let trace = Trace::new(config.recent_events, config.keep_trace);
        let founders: Vec<NodeId> = (1..=config.nodes as u64).collect();
        let initial = ConfigState::with_voters(founders.iter().copied());
        let clients = (0..config.clients)
            .map(|index| Client {
                id: index as u64 + 1,
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
            invariants: Invariants::new(KvMachine::new().state_hash()),
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
            votes_granted: BTreeMap::new(),
            stored: BTreeMap::new(),
            stale_reads_to: None,
            events_handled: 0,
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
            simulation.world.wake_client(client, at, 0);
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
                    Bootstrap::Restored(_) => unreachable!("the simulator restores no backups"),
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
        let synced_hard_state = storage.durable_hard_state();
        self.world
            .stored
            .insert(id, StoredLog::from_snapshot(applied));
        let shell = build_shell(&self.world, config.clone(), storage, 1);
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
            synced_hard_state,
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
            self.world.events_handled += 1;
            if self.world.events_handled > EVENTS_MAX {
                // Rationale: a bug that makes the cluster busy forever without time passing
                // (a message storm at one instant) must fail its seed, not hang the batch.
                self.world.fail_now(
                    "the run ends",
                    format!("the watchdog stopped the run after {EVENTS_MAX} events"),
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
}

mod checks;
mod clients;
mod driver;
mod liveness;
mod nemesis;
mod nodes;
mod operator;

use driver::*;
