//! The core's settings, and the errors its operations return.

use crate::confchange::ConfigChangeError;
use crate::types::NodeId;

/// How the leader confirms it is still leader before it releases a read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ReadMode {
    /// ReadIndex: every read waits for one heartbeat round answered by a quorum (many reads
    /// share one round). Safe whatever the clocks do.
    #[default]
    Safe,
    /// Lease reads: while its lease lasts, the leader answers at once, without a heartbeat
    /// round; when it has lapsed, a read confirms leadership with a round as in `Safe` mode
    /// (which renews the lease).
    ///
    /// The lease runs for `election_timeout_min_ticks` from the sending of the latest heartbeat
    /// that a quorum answered. Each of those followers heard the heartbeat after it was sent,
    /// and with check-quorum refuses votes for `election_timeout_min_ticks` after hearing from
    /// its leader; so no other leader can be elected before the lease ends.
    ///
    /// Assumption: clocks on all nodes tick at the same rate. If a follower's ticks run faster
    /// than the leader's, its refusal ends before the leader's lease does, a new leader can be
    /// elected while the old one still serves reads, and those reads can be stale. Use `Safe`
    /// where that cannot be ruled out. Requires `check_quorum`.
    LeaseBased,
}

/// The settings of one node. [`Config::new`] gives the defaults; change fields as needed.
#[derive(Clone, Debug)]
pub struct Config {
    /// This node's id; not 0.
    pub id: NodeId,
    /// The lower bound of the randomized election timeout, in ticks (inclusive). With a 10 ms
    /// tick the default, 15, is 150 ms. Also the span of check-quorum and of a lease.
    pub election_timeout_min_ticks: u64,
    /// The upper bound of the randomized election timeout, in ticks (exclusive). Default 30.
    pub election_timeout_max_ticks: u64,
    /// How often the leader sends heartbeats, in ticks. Default 5 (50 ms).
    pub heartbeat_ticks: u64,
    /// Ask "would you vote for me?" before raising the term, so that a node that was cut off
    /// cannot disrupt a healthy leader when it returns. Default on.
    pub pre_vote: bool,
    /// A leader that has not heard from a quorum within an election timeout steps down; a
    /// follower that has heard from a leader within one ignores vote requests. Default on.
    pub check_quorum: bool,
    /// How reads are confirmed. Default [`ReadMode::Safe`].
    pub read_mode: ReadMode,
    /// The most entry bytes one AppendEntries carries (at least one entry is always sent).
    /// Default 1 MiB.
    pub message_bytes_max: u64,
    /// The most AppendEntries in flight to one follower. Default 256.
    pub inflight_messages_max: usize,
    /// The most entry bytes in flight to one follower. Default 64 MiB.
    pub inflight_bytes_max: u64,
    /// The most bytes of proposals the leader holds uncommitted; beyond it proposals are
    /// refused with [`ProposeError::Overloaded`]. Default 64 MiB.
    pub uncommitted_bytes_max: u64,
    /// The most bytes of committed entries one Ready hands out. Default 64 MiB.
    pub committed_bytes_per_ready_max: u64,
    /// The index the application's state machine has applied already, for a restart that
    /// should not replay entries the state machine holds. The configuration that
    /// [`crate::LogStorage::initial_state`] returns must be the one as of this index.
    pub applied_index: u64,
    /// The seed of the core's own random source (election timeouts). Give each node and each
    /// run its own, for example from the operating system; the simulator gives one per seed.
    pub random_seed: u64,
    /// A deliberate bug, for proving that the simulator catches it. Only with the
    /// `planted-bugs` feature; never enable it outside tests.
    #[cfg(feature = "planted-bugs")]
    pub planted_bug: Option<PlantedBug>,
}

/// Bugs the simulator must catch, planted in the core on request. The feature that enables
/// them exists for the simulator's detection tests only.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(not(feature = "planted-bugs"), allow(dead_code))]
pub enum PlantedBug {
    /// Grant a vote without checking that the candidate's log is at least as up to date.
    VoteWithoutLogCheck,
    /// Commit an entry of an earlier term once a quorum stores it (the paper's Figure 8).
    CommitOlderTermByCounting,
    /// Truncate the log after the previous index on every AppendEntries, as the seed sketch did.
    TruncateOnEveryAppend,
    /// While joint, commit what a quorum of the incoming configuration holds, ignoring the
    /// outgoing one.
    JointCommitByIncomingOnly,
    /// Release a ReadIndex read at once, without a quorum confirming the leader still leads.
    ReadWithoutQuorumConfirmation,
}

impl Config {
    /// The defaults for node `id`.
    pub fn new(id: NodeId) -> Config {
        Config {
            id,
            election_timeout_min_ticks: 15,
            election_timeout_max_ticks: 30,
            heartbeat_ticks: 5,
            pre_vote: true,
            check_quorum: true,
            read_mode: ReadMode::Safe,
            message_bytes_max: 1 << 20,
            inflight_messages_max: 256,
            inflight_bytes_max: 64 << 20,
            uncommitted_bytes_max: 64 << 20,
            committed_bytes_per_ready_max: 64 << 20,
            applied_index: 0,
            random_seed: id,
            #[cfg(feature = "planted-bugs")]
            planted_bug: None,
        }
    }

    /// Checks that the settings make sense together.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let fail = |reason: &str| Err(ConfigError(reason.to_string()));
        if self.id == 0 {
            return fail("node id 0 is reserved");
        }
        if self.heartbeat_ticks == 0 {
            return fail("heartbeat_ticks must be at least 1");
        }
        if self.election_timeout_min_ticks <= self.heartbeat_ticks {
            return fail("election_timeout_min_ticks must be greater than heartbeat_ticks");
        }
        if self.election_timeout_max_ticks <= self.election_timeout_min_ticks {
            return fail(
                "election_timeout_max_ticks must be greater than election_timeout_min_ticks",
            );
        }
        if self.inflight_messages_max == 0 {
            return fail("inflight_messages_max must be at least 1");
        }
        if self.inflight_bytes_max == 0 {
            return fail("inflight_bytes_max must be at least 1");
        }
        if self.message_bytes_max == 0 {
            return fail("message_bytes_max must be at least 1");
        }
        if self.read_mode == ReadMode::LeaseBased && !self.check_quorum {
            return fail("lease-based reads require check_quorum");
        }
        Ok(())
    }
}

/// Settings that do not make sense; the message says which.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "invalid raft configuration: {}", self.0)
    }
}

impl std::error::Error for ConfigError {}

/// Why a proposal was refused. Nothing was appended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProposeError {
    /// Only the leader takes proposals; `leader` is the one this node knows of, if any.
    NotLeader {
        /// The known leader.
        leader: Option<NodeId>,
    },
    /// The leader is handing over leadership and takes no proposals meanwhile.
    LeadershipTransferInProgress,
    /// Too many bytes are proposed and not yet committed; try again later.
    Overloaded,
    /// A membership change is still unapplied; one at a time.
    ConfigChangePending,
    /// The membership change cannot apply to the current configuration.
    InvalidConfigChange(ConfigChangeError),
}

impl std::fmt::Display for ProposeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProposeError::NotLeader {
                leader: Some(leader),
            } => {
                write!(f, "not the leader; the leader is node {leader}")
            }
            ProposeError::NotLeader { leader: None } => {
                f.write_str("not the leader; no leader known")
            }
            ProposeError::LeadershipTransferInProgress => {
                f.write_str("leadership transfer in progress")
            }
            ProposeError::Overloaded => f.write_str("too many uncommitted proposals"),
            ProposeError::ConfigChangePending => {
                f.write_str("a membership change is still being applied")
            }
            ProposeError::InvalidConfigChange(error) => {
                write!(f, "invalid membership change: {error}")
            }
        }
    }
}

impl std::error::Error for ProposeError {}

/// Why a linearizable read could not be started.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReadIndexError {
    /// No leader is known to confirm the read.
    NoLeader,
}

impl std::fmt::Display for ReadIndexError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("no leader is known")
    }
}

impl std::error::Error for ReadIndexError {}

/// Why a leadership transfer could not be started.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TransferError {
    /// Only the leader can hand over leadership.
    NotLeader {
        /// The known leader.
        leader: Option<NodeId>,
    },
    /// The target is not a voter of the configuration.
    NotVoter(NodeId),
}

impl std::fmt::Display for TransferError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TransferError::NotLeader { .. } => f.write_str("not the leader"),
            TransferError::NotVoter(id) => write!(f, "node {id} is not a voter"),
        }
    }
}

impl std::error::Error for TransferError {}
