//! The protocol's plain Rust types: log entries, hard state, snapshots, configurations and
//! messages. No wire encoding lives here; the transport and the WAL convert at the edges.

use bytes::Bytes;

/// A node's identity within one cluster. Zero is reserved for "nobody".
pub type NodeId = u64;

/// One entry of the replicated log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The term of the leader that created the entry.
    pub term: u64,
    /// The entry's position in the log; the first entry ever written has index 1.
    pub index: u64,
    /// What the entry carries.
    pub payload: EntryPayload,
}

/// The content of a log entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EntryPayload {
    /// The entry a new leader appends to commit its term; the application skips it.
    Empty,
    /// An application command. The bytes are shared, never copied, on their way to followers
    /// and to storage.
    Normal(Bytes),
    /// A membership change, applied by the core when the entry is applied.
    ConfigChange(ConfigChange),
}

/// Bytes counted for an entry besides its payload, so that empty entries still count against
/// byte limits.
pub(crate) const ENTRY_OVERHEAD_BYTES: u64 = 24;

impl Entry {
    /// The size this entry counts for against message, in-flight and batch limits.
    pub fn size_bytes(&self) -> u64 {
        let payload = match &self.payload {
            EntryPayload::Empty => 0,
            EntryPayload::Normal(data) => data.len() as u64,
            EntryPayload::ConfigChange(change) => 16 * change.steps.len() as u64 + 8,
        };
        ENTRY_OVERHEAD_BYTES + payload
    }

    /// True for an entry that changes the membership.
    pub fn is_config_change(&self) -> bool {
        matches!(self.payload, EntryPayload::ConfigChange(_))
    }
}

/// The state a node must persist before it sends any message that depends on it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HardState {
    /// The latest term this node has seen.
    pub term: u64,
    /// The candidate this node voted for in `term`, if any.
    pub vote: Option<NodeId>,
    /// The highest log index known to be committed.
    pub commit: u64,
}

/// A membership: who votes and who only learns.
///
/// While `voters_outgoing` is not empty the cluster is in a joint configuration, and every
/// decision needs a majority of `voters` and a majority of `voters_outgoing`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConfigState {
    /// The voters of the (incoming) configuration, sorted.
    pub voters: Vec<NodeId>,
    /// The voters of the outgoing configuration while joint, sorted; empty otherwise.
    pub voters_outgoing: Vec<NodeId>,
    /// Nodes that receive the log but neither vote nor count for a quorum, sorted.
    pub learners: Vec<NodeId>,
    /// Voters of the outgoing configuration that become learners when the joint
    /// configuration is left, sorted.
    pub learners_next: Vec<NodeId>,
    /// Whether the leader leaves the joint configuration by itself once it is applied.
    pub auto_leave: bool,
}

impl ConfigState {
    /// A plain configuration of the given voters and no learners.
    pub fn with_voters(voters: impl IntoIterator<Item = NodeId>) -> ConfigState {
        let mut voters: Vec<NodeId> = voters.into_iter().collect();
        voters.sort_unstable();
        voters.dedup();
        ConfigState {
            voters,
            ..ConfigState::default()
        }
    }

    /// True while the configuration is joint.
    pub fn is_joint(&self) -> bool {
        !self.voters_outgoing.is_empty()
    }

    /// True if `id` votes in either half of the configuration.
    pub fn is_voter(&self, id: NodeId) -> bool {
        self.voters.contains(&id) || self.voters_outgoing.contains(&id)
    }

    /// Every node the configuration names, voters and learners, sorted and without repeats.
    pub fn all_nodes(&self) -> Vec<NodeId> {
        let mut all: Vec<NodeId> = self
            .voters
            .iter()
            .chain(&self.voters_outgoing)
            .chain(&self.learners)
            .chain(&self.learners_next)
            .copied()
            .collect();
        all.sort_unstable();
        all.dedup();
        all
    }
}

/// One step of a membership change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigChangeStep {
    /// Make the node a voter (promotes a learner).
    AddVoter(NodeId),
    /// Make the node a learner (demotes a voter through a joint configuration).
    AddLearner(NodeId),
    /// Remove the node from the configuration.
    RemoveNode(NodeId),
}

impl ConfigChangeStep {
    /// The node the step is about.
    pub fn node(&self) -> NodeId {
        match *self {
            ConfigChangeStep::AddVoter(id)
            | ConfigChangeStep::AddLearner(id)
            | ConfigChangeStep::RemoveNode(id) => id,
        }
    }
}

/// How a membership change moves between configurations.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ConfigTransition {
    /// A change of at most one voter is applied directly; a larger one goes through a joint
    /// configuration that the leader leaves by itself.
    #[default]
    Auto,
    /// Always through a joint configuration that the leader leaves by itself.
    JointAutoLeave,
    /// Always through a joint configuration that the application leaves by proposing
    /// [`ConfigChange::leave_joint`].
    JointExplicitLeave,
}

/// A membership change, carried in a log entry and applied when that entry is applied.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConfigChange {
    /// The steps, applied together. An empty list means "leave the joint configuration".
    pub steps: Vec<ConfigChangeStep>,
    /// How the change moves between configurations.
    pub transition: ConfigTransition,
}

impl ConfigChange {
    /// A change made of the given steps with the automatic transition.
    pub fn new(steps: impl IntoIterator<Item = ConfigChangeStep>) -> ConfigChange {
        ConfigChange {
            steps: steps.into_iter().collect(),
            transition: ConfigTransition::Auto,
        }
    }

    /// The change that leaves a joint configuration.
    pub fn leave_joint() -> ConfigChange {
        ConfigChange::default()
    }

    /// True if this change leaves a joint configuration.
    pub fn is_leave_joint(&self) -> bool {
        self.steps.is_empty()
    }
}

/// What a snapshot stands for: the log up to and including `index`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SnapshotMeta {
    /// The index of the last entry the snapshot covers.
    pub index: u64,
    /// The term of that entry.
    pub term: u64,
    /// The membership as of `index`.
    pub config: ConfigState,
}

/// A state-machine snapshot. The core moves `data` as an opaque value.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// What the snapshot covers.
    pub meta: SnapshotMeta,
    /// The application's serialized state machine.
    pub data: Bytes,
}

/// A linearizable read released by the core: serve it once the applied index reaches `index`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadState {
    /// The commit index recorded when the read was requested.
    pub index: u64,
    /// The value the application passed to [`crate::Node::read_index`].
    pub context: u64,
}

/// A node's role.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// Follows a leader, or waits for one.
    Follower,
    /// Asks whether it could win an election, without raising its term.
    PreCandidate,
    /// Asks for votes in a term of its own.
    Candidate,
    /// Replicates the log and decides commits.
    Leader,
}

/// A message between two nodes. Every message carries the sender's term.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// The sender.
    pub from: NodeId,
    /// The receiver.
    pub to: NodeId,
    /// The sender's term; for a pre-vote request, the term the sender would campaign in.
    pub term: u64,
    /// What the message says.
    pub body: MessageBody,
}

/// The outcome of an AppendEntries or InstallSnapshot request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AppendOutcome {
    /// The follower's log now matches the leader's up to `match_index`.
    Accepted {
        /// The highest index known to match the leader's log.
        match_index: u64,
    },
    /// The follower's log has no entry at `rejected_index` with the expected term.
    Rejected {
        /// The previous index the request named.
        rejected_index: u64,
        /// The follower's hint: its index at which the leader should try again...
        hint_index: u64,
        /// ...and the term of the follower's entry there (0 if it has none).
        hint_term: u64,
    },
}

/// The kinds of message, with their fields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MessageBody {
    /// RequestVote, or its pre-vote form.
    VoteRequest {
        /// A pre-vote asks "would you vote for me?" without raising anyone's term.
        pre_vote: bool,
        /// The index of the candidate's last entry.
        last_log_index: u64,
        /// The term of the candidate's last entry.
        last_log_term: u64,
        /// Set when the leader asked for this election, so that leases do not block it.
        leadership_transfer: bool,
    },
    /// The answer to a [`MessageBody::VoteRequest`].
    VoteResponse {
        /// Answers a pre-vote.
        pre_vote: bool,
        /// Whether the vote was granted.
        granted: bool,
    },
    /// AppendEntries: entries following `prev_log_index`, and the leader's commit index.
    AppendEntries {
        /// The index of the entry before `entries`.
        prev_log_index: u64,
        /// The term of that entry.
        prev_log_term: u64,
        /// Consecutive entries starting at `prev_log_index + 1`; possibly none.
        entries: Vec<Entry>,
        /// The leader's commit index.
        leader_commit: u64,
    },
    /// The answer to AppendEntries or InstallSnapshot.
    AppendEntriesResponse {
        /// Accepted with a match index, or rejected with a hint.
        outcome: AppendOutcome,
    },
    /// The leader's heartbeat; also the confirmation round for ReadIndex.
    Heartbeat {
        /// The leader's commit index, capped at what the follower is known to hold.
        leader_commit: u64,
        /// The leader's latest read-confirmation round, echoed in the response.
        read_round: u64,
    },
    /// The answer to a heartbeat.
    HeartbeatResponse {
        /// The round of the heartbeat being answered.
        read_round: u64,
    },
    /// A snapshot for a follower whose next entry the leader no longer has.
    InstallSnapshot {
        /// The snapshot.
        snapshot: Snapshot,
    },
    /// Sent by a leader to the target of a leadership transfer: campaign now.
    TimeoutNow,
    /// A follower asks the leader for a read index on behalf of its client.
    ReadIndexRequest {
        /// The follower's context, returned in the response.
        context: u64,
    },
    /// The leader's answer: the follower may serve the read once it has applied `index`.
    ReadIndexResponse {
        /// The follower's context.
        context: u64,
        /// The read index.
        index: u64,
    },
}

impl MessageBody {
    /// A short name for logs and transcripts.
    pub fn kind_name(&self) -> &'static str {
        match self {
            MessageBody::VoteRequest { pre_vote: true, .. } => "PreVote",
            MessageBody::VoteRequest {
                pre_vote: false, ..
            } => "Vote",
            MessageBody::VoteResponse { pre_vote: true, .. } => "PreVoteResponse",
            MessageBody::VoteResponse {
                pre_vote: false, ..
            } => "VoteResponse",
            MessageBody::AppendEntries { .. } => "AppendEntries",
            MessageBody::AppendEntriesResponse { .. } => "AppendEntriesResponse",
            MessageBody::Heartbeat { .. } => "Heartbeat",
            MessageBody::HeartbeatResponse { .. } => "HeartbeatResponse",
            MessageBody::InstallSnapshot { .. } => "InstallSnapshot",
            MessageBody::TimeoutNow => "TimeoutNow",
            MessageBody::ReadIndexRequest { .. } => "ReadIndexRequest",
            MessageBody::ReadIndexResponse { .. } => "ReadIndexResponse",
        }
    }
}
