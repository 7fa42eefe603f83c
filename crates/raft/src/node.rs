//! [`Node`]: one Raft node as a deterministic state machine, and [`Ready`], what it asks the
//! application to do.

use std::collections::VecDeque;

use bytes::Bytes;

use crate::confchange;
use crate::config::{Config, ConfigError, ProposeError, ReadIndexError, ReadMode, TransferError};
use crate::log::RaftLog;
use crate::progress::{ReplicationState, Tracker};
use crate::quorum::VoteResult;
use crate::storage::LogStorage;
use crate::types::{
    AppendOutcome, ConfigChange, ConfigState, Entry, EntryPayload, HardState, Message, MessageBody,
    NodeId, ReadState, Role, Snapshot,
};

/// Who leads, as far as this node knows, and its own role. Not persisted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SoftState {
    /// The leader this node follows (itself when leader), if known.
    pub leader: Option<NodeId>,
    /// This node's role.
    pub role: Role,
}

/// Work the core hands to the application. Handle the fields in this order, then call
/// [`Node::advance`]:
///
/// 1. Persist `snapshot` (if any), then `entries`, then `hard_state` (if any) to stable
///    storage. Entries replace any stored entries from their first index on. When `must_sync`
///    is true, the write must be durable (fdatasync) BEFORE step 2.
/// 2. Only AFTER step 1, send `messages`. A vote or an acknowledgement sent before the state
///    behind it is durable can be forgotten in a crash and break safety.
/// 3. Install `snapshot` in the state machine, then apply `committed_entries` in order,
///    exactly once each. (They are committed; some may be in `entries` of this same Ready,
///    which is why they are applied after step 1.)
/// 4. Serve each of `read_states` once the applied index has reached its `index`.
/// 5. Call [`Node::advance`]: only then does the core count the entries as persisted and the
///    committed entries as applied. Call nothing else on the node between [`Node::ready`] and
///    [`Node::advance`].
///
/// Two things MAY be done earlier, BEFORE step 1, so that this node's own disk write is not on
/// the commit path (the Raft thesis, section 10.2.1, "write to its disk in parallel"):
///
/// - Send `early_messages`. They are a leader's replication messages (appends, heartbeats,
///   snapshots, TimeoutNow) of a term that earlier Readys made durable, and they depend on
///   nothing this Ready persists: a leader counts its own entries towards the commit index only
///   once [`Node::advance`] says they are persisted, so a follower's acknowledgement never
///   stands in for the leader's own write. If the node crashes before step 1, the followers
///   may hold entries it lost; that is an uncommitted suffix like any other.
/// - Apply the first `committed_entries_persisted` of `committed_entries`, in order: earlier
///   Readys persisted them, so they do not wait for this Ready's write. Apply the rest after
///   step 1 as usual.
#[derive(Debug, Default)]
#[must_use = "a Ready must be handled and followed by Node::advance"]
pub struct Ready {
    /// Set when the leader or the role changed.
    pub soft_state: Option<SoftState>,
    /// Set when the hard state changed; persist it.
    pub hard_state: Option<HardState>,
    /// A snapshot from the leader to persist and install.
    pub snapshot: Option<Snapshot>,
    /// Entries to persist.
    pub entries: Vec<Entry>,
    /// Messages to send once `entries`, `hard_state` and `snapshot` are persisted.
    pub messages: Vec<Message>,
    /// Messages that may be sent at once, before anything is persisted (see above).
    pub early_messages: Vec<Message>,
    /// Committed entries to apply, in order.
    pub committed_entries: Vec<Entry>,
    /// How many of `committed_entries`, from the first, earlier Readys persisted: those may
    /// be applied before this Ready is persisted (see above).
    pub committed_entries_persisted: usize,
    /// Linearizable reads released by the core.
    pub read_states: Vec<ReadState>,
    /// Whether step 1 needs an fdatasync: true when entries, a snapshot, the term or the vote
    /// changed, or when the committed entries include a membership change. Otherwise a new
    /// commit index alone can be written lazily: it is learned again from the leader after a
    /// crash.
    pub must_sync: bool,
}

/// Counts of input the core ignored or refused. None of it changed any state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Messages addressed to another node, or from node 0 or from this node itself.
    pub misaddressed_messages: u64,
    /// Messages of an older term.
    pub stale_term_messages: u64,
    /// Responses from nodes that are not in the configuration.
    pub unknown_sender_messages: u64,
    /// Messages whose content cannot be right: an index beyond the log, entries out of order,
    /// a second leader in one term.
    pub malformed_messages: u64,
    /// Answers to requests this node no longer has open (late, duplicated or reordered).
    pub stale_responses: u64,
    /// A second vote reply from the same node in one election.
    pub duplicate_votes: u64,
    /// Snapshots at or below the commit index.
    pub rejected_snapshots: u64,
    /// Vote requests ignored because this node heard from a leader within the lease.
    pub votes_ignored_in_lease: u64,
    /// Committed membership changes that could not apply to the configuration.
    pub rejected_config_changes: u64,
}

/// A snapshot of a node's state, for operators and tests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    /// The node's id.
    pub id: NodeId,
    /// Its role.
    pub role: Role,
    /// The leader it knows of.
    pub leader: Option<NodeId>,
    /// Term, vote and commit index.
    pub hard_state: HardState,
    /// The applied index.
    pub applied_index: u64,
    /// The index of the last entry.
    pub last_index: u64,
    /// The applied membership.
    pub config: ConfigState,
    /// On a leader, its view of every node.
    pub progress: Vec<ProgressStatus>,
    /// On a leader handing over leadership, the target.
    pub transfer_target: Option<NodeId>,
}

/// The leader's view of one node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProgressStatus {
    /// The node.
    pub id: NodeId,
    /// The highest index known to match.
    pub match_index: u64,
    /// The next index to send.
    pub next_index: u64,
    /// How the leader replicates to it.
    pub state: crate::ReplicationState,
    /// Whether it only learns.
    pub is_learner: bool,
    /// Whether it was heard from since the last check-quorum round.
    pub recent_active: bool,
}

/// What a Ready handed out, so that [`Node::advance`] knows what is now done.
#[derive(Debug)]
struct HandedOut {
    snapshot_index: Option<u64>,
    last_entry_index: Option<u64>,
    last_committed_index: Option<u64>,
    config_changes: Vec<ConfigChange>,
    committed_bytes: u64,
}

/// A read waiting for its confirmation round.
#[derive(Debug)]
struct PendingRead {
    round: u64,
    index: u64,
    requester: NodeId,
    context: u64,
}

/// How an election starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Campaign {
    PreElection,
    Election,
    Transfer,
}

/// SplitMix64: a tiny deterministic generator for election timeouts. Rationale: the core takes
/// its randomness as a seed from outside and never reads a global source, so runs replay.
#[derive(Debug)]
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// Bound on reads waiting for a confirmation round or for the leader's first commit; beyond it
/// the oldest are dropped (their clients time out and retry).
const PENDING_READS_MAX: usize = 65_536;

/// Bound on remembered heartbeat broadcasts; older ones can no longer extend a lease.
const HEARTBEAT_ROUNDS_MAX: usize = 64;

/// One Raft node: the only way to drive the core.
///
/// Feed it ticks ([`Node::tick`]), messages from peers ([`Node::step`]), proposals
/// ([`Node::propose`]) and reads ([`Node::read_index`]); then, whenever [`Node::has_ready`],
/// take a [`Ready`], handle it as its documentation says, and call [`Node::advance`].
pub struct Node<S: LogStorage> {
    id: NodeId,
    config: Config,
    term: u64,
    vote: Option<NodeId>,
    role: Role,
    leader: Option<NodeId>,
    log: RaftLog<S>,
    tracker: Tracker,
    messages: Vec<Message>,
    election_elapsed_ticks: u64,
    heartbeat_elapsed_ticks: u64,
    randomized_election_timeout_ticks: u64,
    random: Random,
    transfer_target: Option<NodeId>,
    /// No membership change may be proposed until the entry at this index is applied.
    pending_config_index: u64,
    uncommitted_bytes: u64,
    /// Appends (new entries or a new commit index) wait to be sent until the next Ready, so
    /// that many proposals share one message.
    append_flush_pending: bool,
    /// The round of the latest heartbeat broadcast; each broadcast starts a new one.
    read_round: u64,
    read_round_broadcast_pending: bool,
    /// Recent broadcasts: (round, tick sent), oldest first; bounded.
    heartbeat_rounds: VecDeque<(u64, u64)>,
    /// This node's own clock, in ticks since it started.
    ticks_elapsed: u64,
    /// With lease reads: the leader serves reads without a round until this tick.
    lease_until_tick: u64,
    pending_reads: VecDeque<PendingRead>,
    /// Reads that arrived before this leader committed an entry of its term.
    reads_waiting_for_commit: Vec<(NodeId, u64)>,
    read_states: Vec<ReadState>,
    previous_hard_state: HardState,
    previous_soft_state: SoftState,
    handed_out: Option<HandedOut>,
    counters: Counters,
    /// A TimeoutNow arrived while a committed membership change was unapplied.
    transfer_campaign_pending: bool,
}

impl<S: LogStorage> Node<S> {
    /// Starts a node from what `storage` holds: its hard state, configuration and log.
    pub fn new(config: Config, storage: S) -> Result<Node<S>, ConfigError> {
        config.validate()?;
        let (hard_state, config_state) = storage.initial_state();
        let log = RaftLog::new(storage, hard_state.commit, config.applied_index);
        let mut tracker = Tracker::new(config.inflight_messages_max, config.inflight_bytes_max);
        tracker.set_config(config_state, log.last_index() + 1);
        let soft_state = SoftState {
            leader: None,
            role: Role::Follower,
        };
        let mut node = Node {
            id: config.id,
            random: Random(config.random_seed ^ config.id.rotate_left(32)),
            config,
            term: hard_state.term,
            vote: hard_state.vote,
            role: Role::Follower,
            leader: None,
            log,
            tracker,
            messages: Vec::new(),
            election_elapsed_ticks: 0,
            heartbeat_elapsed_ticks: 0,
            randomized_election_timeout_ticks: 0,
            transfer_target: None,
            pending_config_index: 0,
            uncommitted_bytes: 0,
            append_flush_pending: false,
            read_round: 0,
            read_round_broadcast_pending: false,
            heartbeat_rounds: VecDeque::new(),
            ticks_elapsed: 0,
            lease_until_tick: 0,
            pending_reads: VecDeque::new(),
            reads_waiting_for_commit: Vec::new(),
            read_states: Vec::new(),
            previous_hard_state: hard_state,
            previous_soft_state: soft_state,
            handed_out: None,
            counters: Counters::default(),
            transfer_campaign_pending: false,
        };
        node.reset_election_timer();
        Ok(node)
    }

    // ----- Reading the state -------------------------------------------------------------

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// The current term.
    pub fn term(&self) -> u64 {
        self.term
    }

    /// The current role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The leader this node knows of.
    pub fn leader(&self) -> Option<NodeId> {
        self.leader
    }

    /// The commit index.
    pub fn commit_index(&self) -> u64 {
        self.log.committed
    }

    /// The applied index (as reported through [`Node::advance`]).
    pub fn applied_index(&self) -> u64 {
        self.log.applied
    }

    /// The index of the last entry in the log.
    pub fn last_index(&self) -> u64 {
        self.log.last_index()
    }

    /// The term of the entry at `index`, if the log still holds it.
    pub fn term_at(&self, index: u64) -> Option<u64> {
        self.log.term(index).ok()
    }

    /// The applied membership.
    pub fn config_state(&self) -> &ConfigState {
        &self.tracker.config
    }

    /// Counts of input that was ignored or refused.
    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// The stable storage, to read.
    pub fn storage(&self) -> &S {
        &self.log.storage
    }

    /// The stable storage, to persist what a Ready asks and to create snapshots and compact.
    pub fn storage_mut(&mut self) -> &mut S {
        &mut self.log.storage
    }

    /// A summary of the node's state.
    pub fn status(&self) -> Status {
        let progress = if self.role == Role::Leader {
            self.tracker
                .progress
                .iter()
                .map(|(&id, progress)| ProgressStatus {
                    id,
                    match_index: progress.match_index,
                    next_index: progress.next_index,
                    state: progress.state,
                    is_learner: progress.is_learner,
                    recent_active: progress.recent_active,
                })
                .collect()
        } else {
            Vec::new()
        };
        Status {
            id: self.id,
            role: self.role,
            leader: self.leader,
            hard_state: self.hard_state(),
            applied_index: self.log.applied,
            last_index: self.log.last_index(),
            config: self.tracker.config.clone(),
            progress,
            transfer_target: self.transfer_target,
        }
    }

    fn hard_state(&self) -> HardState {
        HardState {
            term: self.term,
            vote: self.vote,
            commit: self.log.committed,
        }
    }

    fn soft_state(&self) -> SoftState {
        SoftState {
            leader: self.leader,
            role: self.role,
        }
    }

    /// True if the configuration plants `bug` (only with the `planted-bugs` feature, which
    /// exists so the simulator can prove it catches these bugs).
    #[allow(unused_variables)]
    fn has_planted_bug(&self, bug: crate::config::PlantedBug) -> bool {
        #[cfg(feature = "planted-bugs")]
        {
            self.config.planted_bug == Some(bug)
        }
        #[cfg(not(feature = "planted-bugs"))]
        {
            false
        }
    }

    /// True if this node may campaign: it votes, and no snapshot is still being installed.
    fn is_promotable(&self) -> bool {
        self.tracker.config.is_voter(self.id) && !self.log.has_pending_snapshot()
    }

    // ----- Time ----------------------------------------------------------------------------

    /// Advances the node's clock by one tick.
    pub fn tick(&mut self) {
        self.assert_not_between_ready_and_advance();
        self.ticks_elapsed += 1;
        match self.role {
            Role::Leader => self.tick_leader(),
            Role::Follower | Role::PreCandidate | Role::Candidate => self.tick_election(),
        }
    }

    fn tick_election(&mut self) {
        self.election_elapsed_ticks += 1;
        if self.is_promotable()
            && self.election_elapsed_ticks >= self.randomized_election_timeout_ticks
        {
            let campaign = if self.config.pre_vote {
                Campaign::PreElection
            } else {
                Campaign::Election
            };
            self.campaign(campaign);
        }
    }

    fn tick_leader(&mut self) {
        self.heartbeat_elapsed_ticks += 1;
        self.election_elapsed_ticks += 1;
        if self.election_elapsed_ticks >= self.config.election_timeout_min_ticks {
            self.election_elapsed_ticks = 0;
            if self.config.check_quorum {
                if !self.tracker.quorum_active() {
                    self.become_follower(self.term, None);
                    return;
                }
                for (&id, progress) in self.tracker.progress.iter_mut() {
                    progress.recent_active = id == self.id;
                }
            }
            // A transfer that has not finished within an election timeout is abandoned; a
            // leader that was removed tries again.
            self.transfer_target = None;
            if !self.tracker.config.is_voter(self.id) {
                self.hand_over_after_removal();
            }
        }
        if self.heartbeat_elapsed_ticks >= self.config.heartbeat_ticks {
            self.heartbeat_elapsed_ticks = 0;
            self.broadcast_heartbeat();
        }
    }

    fn reset_election_timer(&mut self) {
        self.election_elapsed_ticks = 0;
        self.heartbeat_elapsed_ticks = 0;
        let span = self.config.election_timeout_max_ticks - self.config.election_timeout_min_ticks;
        self.randomized_election_timeout_ticks =
            self.config.election_timeout_min_ticks + self.random.next() % span;
    }

    // ----- Role changes --------------------------------------------------------------------

    fn become_follower(&mut self, term: u64, leader: Option<NodeId>) {
        if term != self.term {
            assert!(term > self.term, "a term never goes backwards");
            self.term = term;
            self.vote = None;
        }
        self.role = Role::Follower;
        self.leader = leader;
        self.reset_role_state();
    }

    fn become_pre_candidate(&mut self) {
        assert!(self.role != Role::Leader, "a leader does not campaign");
        // A pre-candidate changes neither its term nor its vote: that is the point.
        self.role = Role::PreCandidate;
        self.leader = None;
        self.reset_role_state();
    }

    fn become_candidate(&mut self) {
        assert!(self.role != Role::Leader, "a leader does not campaign");
        self.term += 1;
        self.vote = Some(self.id);
        self.role = Role::Candidate;
        self.leader = None;
        self.reset_role_state();
    }

    fn become_leader(&mut self) {
        assert!(
            self.role == Role::Candidate,
            "only a candidate becomes leader"
        );
        self.role = Role::Leader;
        self.leader = Some(self.id);
        self.reset_role_state();
        let next_index = self.log.last_index() + 1;
        let persisted_index = self.log.persisted_index();
        for (&id, progress) in self.tracker.progress.iter_mut() {
            progress.match_index = 0;
            progress.next_index = next_index;
            progress.become_probe();
            progress.next_index = next_index;
            // Only answers heard in this term count for check-quorum.
            progress.recent_active = id == self.id;
            progress.read_round_acknowledged = 0;
            progress.commit_sent = 0;
            if id == self.id {
                progress.match_index = persisted_index;
                progress.become_replicate();
                progress.next_index = next_index;
            }
        }
        // Membership changes wait until everything before this term is applied, since the
        // leader cannot know whether an unapplied change is among those entries.
        self.pending_config_index = self.log.last_index();
        // Committing an entry of its own term is how a new leader learns the commit index
        // (and until then it cannot serve reads).
        let entry = Entry {
            term: self.term,
            index: next_index,
            payload: EntryPayload::Empty,
        };
        self.log.append(vec![entry]);
        self.append_flush_pending = true;
    }

    /// State that does not survive a change of role or term.
    fn reset_role_state(&mut self) {
        self.transfer_campaign_pending = false;
        self.reset_election_timer();
        self.tracker.reset_votes();
        self.transfer_target = None;
        self.uncommitted_bytes = 0;
        self.append_flush_pending = false;
        self.read_round_broadcast_pending = false;
        self.heartbeat_rounds.clear();
        self.lease_until_tick = 0;
        self.pending_reads.clear();
        self.reads_waiting_for_commit.clear();
    }

    // ----- Elections -----------------------------------------------------------------------

    /// Starts an election now (a pre-vote first if configured), as if the election timeout
    /// had passed. Ignored on a leader and on a node that does not vote.
    pub fn campaign_now(&mut self) {
        self.assert_not_between_ready_and_advance();
        if self.role == Role::Leader {
            return;
        }
        let campaign = if self.config.pre_vote {
            Campaign::PreElection
        } else {
            Campaign::Election
        };
        self.campaign(campaign);
    }

    fn campaign(&mut self, campaign: Campaign) {
        if !self.is_promotable() || self.has_unapplied_config_change() {
            // A node that may be about to leave the configuration must not disrupt it.
            self.reset_election_timer();
            return;
        }
        let pre_vote = campaign == Campaign::PreElection;
        if pre_vote {
            self.become_pre_candidate();
        } else {
            self.become_candidate();
        }
        let vote_term = if pre_vote { self.term + 1 } else { self.term };
        self.tracker.record_vote(self.id, true);
        if self.tracker.tally_votes() == VoteResult::Won {
            // A single voter wins at once.
            if pre_vote {
                self.campaign(Campaign::Election);
            } else {
                self.become_leader();
            }
            return;
        }
        let last_log_index = self.log.last_index();
        let last_log_term = self.log.last_term();
        for id in self.tracker.voter_ids() {
            if id == self.id {
                continue;
            }
            self.send(
                id,
                vote_term,
                MessageBody::VoteRequest {
                    pre_vote,
                    last_log_index,
                    last_log_term,
                    leadership_transfer: campaign == Campaign::Transfer,
                },
            );
        }
    }

    fn has_unapplied_config_change(&self) -> bool {
        if self.log.committed <= self.log.applied {
            return false;
        }
        match self
            .log
            .slice(self.log.applied + 1, self.log.committed + 1, u64::MAX)
        {
            Ok(entries) => entries.iter().any(Entry::is_config_change),
            Err(_) => false,
        }
    }

    fn handle_vote_request(
        &mut self,
        message: &Message,
        pre_vote: bool,
        last_log_index: u64,
        last_log_term: u64,
    ) {
        let from = message.from;
        // A node votes again for the same candidate (the reply may have been lost), votes for
        // anyone if it has neither voted nor heard from a leader in this term, and answers any
        // pre-vote for a later term.
        let can_vote = self.vote == Some(from)
            || (self.vote.is_none() && self.leader.is_none())
            || (pre_vote && message.term > self.term);
        let up_to_date = self.log.is_up_to_date(last_log_index, last_log_term)
            || self.has_planted_bug(crate::config::PlantedBug::VoteWithoutLogCheck);
        if can_vote && up_to_date {
            // The answer carries the candidate's term: for a pre-vote, that is the term it
            // would campaign in, and it must not look stale to the pre-candidate.
            self.send(
                from,
                message.term,
                MessageBody::VoteResponse {
                    pre_vote,
                    granted: true,
                },
            );
            if !pre_vote {
                self.election_elapsed_ticks = 0;
                self.vote = Some(from);
            }
        } else {
            self.send(
                from,
                self.term,
                MessageBody::VoteResponse {
                    pre_vote,
                    granted: false,
                },
            );
        }
    }

    fn handle_vote_response(&mut self, from: NodeId, pre_vote: bool, granted: bool) {
        let expected_pre_vote = self.role == Role::PreCandidate;
        if pre_vote != expected_pre_vote {
            self.counters.stale_responses += 1;
            return;
        }
        if !self.tracker.record_vote(from, granted) {
            self.counters.duplicate_votes += 1;
            return;
        }
        match self.tracker.tally_votes() {
            VoteResult::Won => {
                if pre_vote {
                    self.campaign(Campaign::Election);
                } else {
                    self.become_leader();
                }
            }
            VoteResult::Lost => self.become_follower(self.term, None),
            VoteResult::Pending => {}
        }
    }

    // ----- Messages ------------------------------------------------------------------------

    /// Handles a message from a peer. Bad input (wrong address, old term, unknown sender,
    /// impossible content) is ignored and counted in [`Node::counters`]; it never panics.
    pub fn step(&mut self, message: Message) {
        self.assert_not_between_ready_and_advance();
        if message.to != self.id || message.from == 0 || message.from == self.id {
            self.counters.misaddressed_messages += 1;
            return;
        }
        if message.term > self.term {
            if !self.handle_higher_term(&message) {
                return;
            }
        } else if message.term < self.term {
            self.handle_lower_term(&message);
            return;
        }
        match message.body {
            MessageBody::VoteRequest {
                pre_vote,
                last_log_index,
                last_log_term,
                ..
            } => self.handle_vote_request(&message, pre_vote, last_log_index, last_log_term),
            _ => match self.role {
                Role::Leader => self.step_leader(message),
                Role::PreCandidate | Role::Candidate => self.step_candidate(message),
                Role::Follower => self.step_follower(message),
            },
        }
    }

    /// A message of a later term. Returns false if the message is to be dropped.
    fn handle_higher_term(&mut self, message: &Message) -> bool {
        match message.body {
            MessageBody::VoteRequest {
                pre_vote,
                leadership_transfer,
                ..
            } => {
                let in_lease = self.config.check_quorum
                    && self.leader.is_some()
                    && self.election_elapsed_ticks < self.config.election_timeout_min_ticks;
                if in_lease && !leadership_transfer {
                    // We heard from a leader moments ago: this candidate is cut off from it,
                    // and must not depose it.
                    self.counters.votes_ignored_in_lease += 1;
                    return false;
                }
                if !pre_vote {
                    self.become_follower(message.term, None);
                }
            }
            // A granted pre-vote carries the term we would campaign in; it is not a reason
            // to step down.
            MessageBody::VoteResponse {
                pre_vote: true,
                granted: true,
            } => {}
            MessageBody::AppendEntries { .. }
            | MessageBody::Heartbeat { .. }
            | MessageBody::InstallSnapshot { .. } => {
                self.become_follower(message.term, Some(message.from))
            }
            _ => self.become_follower(message.term, None),
        }
        true
    }

    fn handle_lower_term(&mut self, message: &Message) {
        self.counters.stale_term_messages += 1;
        match message.body {
            MessageBody::AppendEntries { .. } | MessageBody::Heartbeat { .. }
                if self.config.check_quorum || self.config.pre_vote =>
            {
                // A leader of an old term that was cut off would never learn of the new term
                // when pre-vote keeps this node from campaigning: tell it.
                self.send(
                    message.from,
                    self.term,
                    MessageBody::AppendEntriesResponse {
                        outcome: AppendOutcome::Accepted { match_index: 0 },
                    },
                );
            }
            MessageBody::VoteRequest { pre_vote, .. } => {
                // Refused with our term, so that the candidate catches up with it rather than
                // campaigning on in a term nobody will vote in.
                self.send(
                    message.from,
                    self.term,
                    MessageBody::VoteResponse {
                        pre_vote,
                        granted: false,
                    },
                );
            }
            _ => {}
        }
    }

    fn step_leader(&mut self, message: Message) {
        let from = message.from;
        if !self.tracker.progress.contains_key(&from) {
            self.counters.unknown_sender_messages += 1;
            return;
        }
        match message.body {
            MessageBody::AppendEntriesResponse { outcome } => {
                self.handle_append_response(from, outcome)
            }
            MessageBody::HeartbeatResponse { read_round } => {
                self.handle_heartbeat_response(from, read_round)
            }
            MessageBody::ReadIndexRequest { context } => self.leader_read_index(from, context),
            MessageBody::AppendEntries { .. }
            | MessageBody::Heartbeat { .. }
            | MessageBody::InstallSnapshot { .. } => {
                // Two leaders in one term cannot happen between correct nodes.
                self.counters.malformed_messages += 1;
            }
            MessageBody::VoteResponse { .. }
            | MessageBody::TimeoutNow
            | MessageBody::ReadIndexResponse { .. }
            | MessageBody::VoteRequest { .. } => self.counters.stale_responses += 1,
        }
    }

    fn step_candidate(&mut self, message: Message) {
        match message.body {
            MessageBody::AppendEntries { .. }
            | MessageBody::Heartbeat { .. }
            | MessageBody::InstallSnapshot { .. } => {
                // Someone won this term: follow it.
                self.become_follower(message.term, Some(message.from));
                self.step_follower(message);
            }
            MessageBody::VoteResponse { pre_vote, granted } => {
                self.handle_vote_response(message.from, pre_vote, granted)
            }
            _ => self.counters.stale_responses += 1,
        }
    }

    fn step_follower(&mut self, message: Message) {
        let from = message.from;
        match message.body {
            MessageBody::AppendEntries {
                prev_log_index,
                prev_log_term,
                entries,
                leader_commit,
            } => {
                self.election_elapsed_ticks = 0;
                self.leader = Some(from);
                self.handle_append_entries(
                    from,
                    message.term,
                    prev_log_index,
                    prev_log_term,
                    entries,
                    leader_commit,
                );
            }
            MessageBody::Heartbeat {
                leader_commit,
                read_round,
            } => {
                self.election_elapsed_ticks = 0;
                self.leader = Some(from);
                if leader_commit > self.log.last_index() {
                    self.counters.malformed_messages += 1;
                } else {
                    self.log.commit_to(leader_commit);
                }
                self.send(
                    from,
                    self.term,
                    MessageBody::HeartbeatResponse { read_round },
                );
            }
            MessageBody::InstallSnapshot { snapshot } => {
                self.election_elapsed_ticks = 0;
                self.leader = Some(from);
                self.handle_snapshot(from, snapshot);
            }
            MessageBody::TimeoutNow => {
                // The leader asks us to take over: no pre-vote, since it steps aside. If a
                // committed membership change is still unapplied here (the leader's removal of
                // itself, typically), campaign as soon as it is applied.
                if self.has_unapplied_config_change() {
                    self.transfer_campaign_pending = true;
                } else {
                    self.campaign(Campaign::Transfer);
                }
            }
            MessageBody::ReadIndexResponse { context, index } => {
                self.read_states.push(ReadState { index, context });
            }
            MessageBody::VoteResponse { .. }
            | MessageBody::AppendEntriesResponse { .. }
            | MessageBody::HeartbeatResponse { .. }
            | MessageBody::ReadIndexRequest { .. }
            | MessageBody::VoteRequest { .. } => self.counters.stale_responses += 1,
        }
    }

    fn send(&mut self, to: NodeId, term: u64, body: MessageBody) {
        self.messages.push(Message {
            from: self.id,
            to,
            term,
            body,
        });
    }

    // ----- Replication: follower side ------------------------------------------------------

    fn handle_append_entries(
        &mut self,
        from: NodeId,
        message_term: u64,
        prev_log_index: u64,
        prev_log_term: u64,
        entries: Vec<Entry>,
        leader_commit: u64,
    ) {
        let well_formed = prev_log_term <= message_term
            && entries.iter().enumerate().all(|(position, entry)| {
                entry.index == prev_log_index + 1 + position as u64 && entry.term <= message_term
            })
            && entries.windows(2).all(|pair| pair[0].term <= pair[1].term)
            && entries
                .first()
                .is_none_or(|entry| entry.term >= prev_log_term);
        if !well_formed {
            self.counters.malformed_messages += 1;
            return;
        }
        if prev_log_index < self.log.committed {
            // Everything up to the commit index matches already; say so, and the leader
            // continues from there.
            let match_index = self.log.committed;
            self.send_append_response(from, AppendOutcome::Accepted { match_index });
            return;
        }
        if self.has_planted_bug(crate::config::PlantedBug::TruncateOnEveryAppend)
            && self.log.matches_term(prev_log_index, prev_log_term)
        {
            let last_new_index = prev_log_index + entries.len() as u64;
            self.log
                .truncate_and_append_unchecked(prev_log_index, entries);
            self.log.commit_to(leader_commit.min(last_new_index));
            self.send_append_response(
                from,
                AppendOutcome::Accepted {
                    match_index: last_new_index,
                },
            );
            return;
        }
        match self
            .log
            .maybe_append(prev_log_index, prev_log_term, leader_commit, entries)
        {
            Some(last_new_index) => self.send_append_response(
                from,
                AppendOutcome::Accepted {
                    match_index: last_new_index,
                },
            ),
            None => {
                let probe_index = prev_log_index.min(self.log.last_index());
                let (hint_index, hint_term) =
                    self.log.find_conflict_by_term(probe_index, prev_log_term);
                self.send_append_response(
                    from,
                    AppendOutcome::Rejected {
                        rejected_index: prev_log_index,
                        hint_index,
                        hint_term,
                    },
                );
            }
        }
    }

    fn send_append_response(&mut self, to: NodeId, outcome: AppendOutcome) {
        self.send(
            to,
            self.term,
            MessageBody::AppendEntriesResponse { outcome },
        );
    }

    fn handle_snapshot(&mut self, from: NodeId, snapshot: Snapshot) {
        let index = snapshot.meta.index;
        let term = snapshot.meta.term;
        if index <= self.log.committed {
            self.counters.rejected_snapshots += 1;
            let match_index = self.log.committed;
            self.send_append_response(from, AppendOutcome::Accepted { match_index });
            return;
        }
        // The snapshot's configuration need not name this node: a node being added receives
        // an older snapshot and then the entries that add it.
        if self.log.matches_term(index, term) {
            // We hold the entry already: the snapshot only tells us it is committed.
            self.log.commit_to(index);
        } else {
            self.log.restore(snapshot.clone());
            self.tracker.set_config(snapshot.meta.config, index + 1);
        }
        let match_index = self.log.last_index();
        self.send_append_response(from, AppendOutcome::Accepted { match_index });
    }

    // ----- Replication: leader side --------------------------------------------------------

    fn handle_append_response(&mut self, from: NodeId, outcome: AppendOutcome) {
        let last_index = self.log.last_index();
        match outcome {
            AppendOutcome::Rejected {
                rejected_index,
                hint_index,
                hint_term,
            } => {
                if rejected_index > last_index || hint_index > rejected_index {
                    self.counters.malformed_messages += 1;
                    return;
                }
                self.heard_from(from);
                let next_probe_index = if hint_term > 0 {
                    self.log.find_conflict_by_term(hint_index, hint_term).0
                } else {
                    hint_index
                };
                let progress = self
                    .tracker
                    .progress
                    .get_mut(&from)
                    .expect("checked by step_leader");
                if progress.maybe_decrease_to(rejected_index, next_probe_index) {
                    if progress.state == ReplicationState::Replicate {
                        progress.become_probe();
                    }
                    self.send_append(from, true);
                } else {
                    self.counters.stale_responses += 1;
                }
            }
            AppendOutcome::Accepted { match_index } => {
                if match_index > last_index {
                    self.counters.malformed_messages += 1;
                    return;
                }
                let first_index = self.log.first_index();
                let progress = self.heard_from(from);
                let was_paused = progress.is_paused();
                let equal_probe = progress.state == ReplicationState::Probe
                    && progress.match_index == match_index;
                let previous_match = progress.match_index;
                if !progress.maybe_update(match_index) && !equal_probe {
                    // An answer to a commit-only message repeats the match index; only an
                    // older one is stale.
                    if match_index < previous_match {
                        self.counters.stale_responses += 1;
                    }
                    return;
                }
                match progress.state {
                    ReplicationState::Probe => progress.become_replicate(),
                    ReplicationState::Snapshot => {
                        // The follower holds the snapshot (or more), or the log can feed it
                        // again: either way, back to streaming entries.
                        if progress.match_index + 1 >= first_index
                            || progress.match_index >= progress.pending_snapshot_index
                        {
                            progress.become_probe();
                            progress.become_replicate();
                        }
                    }
                    ReplicationState::Replicate => progress.inflights.free_up_to(match_index),
                }
                let progress_match = progress.match_index;
                if self.maybe_commit() {
                    self.append_flush_pending = true;
                } else if was_paused {
                    self.send_append(from, false);
                }
                // Fill the window as far as it goes.
                while self.send_append(from, false) {}
                if self.transfer_target == Some(from) && progress_match == last_index {
                    self.send(from, self.term, MessageBody::TimeoutNow);
                }
            }
        }
    }

    /// The progress of a node the leader just heard from, marked active for check-quorum.
    fn heard_from(&mut self, from: NodeId) -> &mut crate::progress::Progress {
        let progress = self
            .tracker
            .progress
            .get_mut(&from)
            .expect("checked by step_leader");
        progress.recent_active = true;
        progress
    }

    fn handle_heartbeat_response(&mut self, from: NodeId, read_round: u64) {
        let last_index = self.log.last_index();
        let round_is_known = read_round <= self.read_round;
        let progress = self.heard_from(from);
        progress.probe_sent = false;
        if progress.state == ReplicationState::Replicate && progress.inflights.is_full() {
            // The window may be full of lost messages; let one more through.
            progress.inflights.free_first_one();
        }
        if round_is_known {
            progress.read_round_acknowledged = progress.read_round_acknowledged.max(read_round);
        }
        let behind = progress.match_index < last_index;
        if !round_is_known {
            self.counters.malformed_messages += 1;
        }
        if behind {
            self.send_append(from, true);
        }
        self.release_confirmed_reads();
    }

    /// Advances the commit index to what a quorum holds, if that entry is of this term (an
    /// entry of an earlier term is committed only by an entry of this term after it: the
    /// paper's Figure 8). Returns true if the commit index moved.
    fn maybe_commit(&mut self) -> bool {
        #[allow(unused_mut)]
        let mut quorum_index = self.tracker.committed_index();
        #[cfg(feature = "planted-bugs")]
        if self.has_planted_bug(crate::config::PlantedBug::JointCommitByIncomingOnly) {
            quorum_index = self.tracker.incoming_committed_index();
        }
        let committed =
            if self.has_planted_bug(crate::config::PlantedBug::CommitOlderTermByCounting) {
                let previous = self.log.committed;
                self.log.commit_to(quorum_index.min(self.log.last_index()));
                self.log.committed > previous
            } else {
                self.log.maybe_commit(quorum_index, self.term)
            };
        if !committed {
            return false;
        }
        if !self.reads_waiting_for_commit.is_empty() {
            for (requester, context) in std::mem::take(&mut self.reads_waiting_for_commit) {
                self.leader_read_index(requester, context);
            }
        }
        true
    }

    /// Sends `to` an AppendEntries (or a snapshot) if its progress allows. With
    /// `send_if_empty` false, sends only when there are entries. Returns true if it sent.
    fn send_append(&mut self, to: NodeId, send_if_empty: bool) -> bool {
        if to == self.id {
            return false;
        }
        let Some(progress) = self.tracker.progress.get(&to) else {
            return false;
        };
        if progress.is_paused() {
            return false;
        }
        let next_index = progress.next_index;
        let prev_log_index = next_index - 1;
        let prev_log_term = self.log.term(prev_log_index);
        let entries = self
            .log
            .entries_from(next_index, self.config.message_bytes_max);
        let (Ok(prev_log_term), Ok(entries)) = (prev_log_term, entries) else {
            return self.send_snapshot(to);
        };
        if entries.is_empty() && !send_if_empty {
            return false;
        }
        let committed = self.log.committed;
        let bytes: u64 = entries.iter().map(Entry::size_bytes).sum();
        let last = entries.last().map_or(prev_log_index, |entry| entry.index);
        let progress = self.tracker.progress.get_mut(&to).expect("looked up above");
        progress.sent_entries(entries.len(), bytes, last);
        progress.commit_sent = committed;
        self.send(
            to,
            self.term,
            MessageBody::AppendEntries {
                prev_log_index,
                prev_log_term,
                entries,
                leader_commit: committed,
            },
        );
        true
    }

    fn send_snapshot(&mut self, to: NodeId) -> bool {
        let progress = self
            .tracker
            .progress
            .get(&to)
            .expect("checked by the caller");
        if !progress.recent_active {
            // Not worth a snapshot until the node shows it is alive.
            return false;
        }
        let Ok(snapshot) = self.log.snapshot() else {
            return false;
        };
        assert!(
            snapshot.meta.index > 0,
            "entries were compacted without a snapshot"
        );
        let progress = self
            .tracker
            .progress
            .get_mut(&to)
            .expect("checked by the caller");
        progress.become_snapshot(snapshot.meta.index);
        self.send(to, self.term, MessageBody::InstallSnapshot { snapshot });
        true
    }

    fn broadcast_heartbeat(&mut self) {
        let committed = self.log.committed;
        // Every broadcast is a new round, so that the leader knows when the heartbeat a quorum
        // answered was sent: reads registered before it are confirmed, and a lease runs from it.
        self.read_round += 1;
        let read_round = self.read_round;
        self.read_round_broadcast_pending = false;
        if self.heartbeat_rounds.len() >= HEARTBEAT_ROUNDS_MAX {
            self.heartbeat_rounds.pop_front();
        }
        self.heartbeat_rounds
            .push_back((read_round, self.ticks_elapsed));
        if let Some(progress) = self.tracker.progress.get_mut(&self.id) {
            progress.read_round_acknowledged = read_round;
        }
        let targets: Vec<(NodeId, u64)> = self
            .tracker
            .progress
            .iter()
            .filter(|(&id, _)| id != self.id)
            .map(|(&id, progress)| (id, progress.match_index))
            .collect();
        for (id, match_index) in targets {
            // Never tell a follower to commit beyond what it is known to hold.
            let leader_commit = committed.min(match_index);
            self.send(
                id,
                self.term,
                MessageBody::Heartbeat {
                    leader_commit,
                    read_round,
                },
            );
        }
    }

    /// Sends what proposals and commits left waiting: entries to every follower that can take
    /// them, then the new commit index to those that have not heard it.
    fn flush_appends(&mut self) {
        self.append_flush_pending = false;
        if self.role != Role::Leader {
            return;
        }
        let committed = self.log.committed;
        let peers: Vec<NodeId> = self
            .tracker
            .progress
            .keys()
            .copied()
            .filter(|&id| id != self.id)
            .collect();
        for id in peers {
            while self.send_append(id, false) {}
            let commit_sent = self.tracker.progress[&id].commit_sent;
            if commit_sent < committed {
                self.send_append(id, true);
            }
        }
    }

    // ----- Proposals -----------------------------------------------------------------------

    /// Proposes an application command. On the leader, appends it and returns its index;
    /// the command is applied when an entry at that index with the current term commits.
    pub fn propose(&mut self, data: Bytes) -> Result<u64, ProposeError> {
        self.append_proposal(EntryPayload::Normal(data))
    }

    /// Proposes a membership change. It takes effect when its entry is applied.
    pub fn propose_config_change(&mut self, change: ConfigChange) -> Result<u64, ProposeError> {
        if self.role == Role::Leader {
            if self.pending_config_index > self.log.applied {
                return Err(ProposeError::ConfigChangePending);
            }
            // Refuse now what could not apply, rather than commit an entry that does nothing.
            confchange::apply(&self.tracker.config, &change)
                .map_err(ProposeError::InvalidConfigChange)?;
        }
        let index = self.append_proposal(EntryPayload::ConfigChange(change))?;
        self.pending_config_index = index;
        Ok(index)
    }

    fn append_proposal(&mut self, payload: EntryPayload) -> Result<u64, ProposeError> {
        self.assert_not_between_ready_and_advance();
        if self.role != Role::Leader {
            return Err(ProposeError::NotLeader {
                leader: self.leader,
            });
        }
        if self.transfer_target.is_some() {
            return Err(ProposeError::LeadershipTransferInProgress);
        }
        let index = self.log.last_index() + 1;
        let entry = Entry {
            term: self.term,
            index,
            payload,
        };
        let size_bytes = entry.size_bytes();
        if self.uncommitted_bytes > 0
            && self.uncommitted_bytes + size_bytes > self.config.uncommitted_bytes_max
        {
            return Err(ProposeError::Overloaded);
        }
        self.uncommitted_bytes += size_bytes;
        self.log.append(vec![entry]);
        self.append_flush_pending = true;
        Ok(index)
    }

    // ----- Leadership transfer -------------------------------------------------------------

    /// Hands leadership to `target`: the leader stops taking proposals, brings the target's
    /// log up to date and tells it to campaign. Abandoned after an election timeout.
    pub fn transfer_leadership(&mut self, target: NodeId) -> Result<(), TransferError> {
        self.assert_not_between_ready_and_advance();
        if self.role != Role::Leader {
            return Err(TransferError::NotLeader {
                leader: self.leader,
            });
        }
        if target == self.id {
            return Ok(());
        }
        let is_voter = self
            .tracker
            .progress
            .get(&target)
            .is_some_and(|progress| !progress.is_learner);
        if !is_voter {
            return Err(TransferError::NotVoter(target));
        }
        if self.transfer_target == Some(target) {
            return Ok(());
        }
        self.transfer_target = Some(target);
        self.election_elapsed_ticks = 0;
        let caught_up = self.tracker.progress[&target].match_index == self.log.last_index();
        if caught_up {
            self.send(target, self.term, MessageBody::TimeoutNow);
        } else {
            self.send_append(target, true);
        }
        Ok(())
    }

    /// A leader that is no longer a voter starts a transfer to the voter whose log is longest;
    /// retried at each election timeout until some voter takes over.
    fn hand_over_after_removal(&mut self) {
        let target = self
            .tracker
            .voter_ids()
            .into_iter()
            .filter(|&id| id != self.id)
            .max_by_key(|id| {
                self.tracker
                    .progress
                    .get(id)
                    .map_or(0, |progress| progress.match_index)
            });
        let Some(target) = target else { return };
        self.transfer_target = Some(target);
        self.election_elapsed_ticks = 0;
        if self.tracker.progress[&target].match_index == self.log.last_index() {
            self.send(target, self.term, MessageBody::TimeoutNow);
        } else {
            self.send_append(target, true);
        }
    }

    // ----- Reads ---------------------------------------------------------------------------

    /// Starts a linearizable read. Once the core knows the read is safe, a [`ReadState`] with
    /// the same `context` comes out in a Ready: serve the read when the applied index reaches
    /// its index. On a follower the request goes to the leader.
    pub fn read_index(&mut self, context: u64) -> Result<(), ReadIndexError> {
        self.assert_not_between_ready_and_advance();
        match self.role {
            Role::Leader => {
                self.leader_read_index(self.id, context);
                Ok(())
            }
            Role::Follower => {
                let Some(leader) = self.leader else {
                    return Err(ReadIndexError::NoLeader);
                };
                self.send(leader, self.term, MessageBody::ReadIndexRequest { context });
                Ok(())
            }
            Role::PreCandidate | Role::Candidate => Err(ReadIndexError::NoLeader),
        }
    }

    fn leader_read_index(&mut self, requester: NodeId, context: u64) {
        let committed = self.log.committed;
        if self.log.term(committed) != Ok(self.term) {
            // Until an entry of its term commits, a new leader does not know the true commit
            // index: it may be missing entries its predecessor committed.
            if self.reads_waiting_for_commit.len() < PENDING_READS_MAX {
                self.reads_waiting_for_commit.push((requester, context));
            }
            return;
        }
        let lease_valid = self.config.read_mode == ReadMode::LeaseBased
            && self.ticks_elapsed < self.lease_until_tick;
        let unconfirmed =
            self.has_planted_bug(crate::config::PlantedBug::ReadWithoutQuorumConfirmation);
        if self.tracker.is_single_voter(self.id) || lease_valid || unconfirmed {
            self.release_read(requester, context, committed);
            return;
        }
        // The read waits for the next broadcast, which every read until then shares.
        self.read_round_broadcast_pending = true;
        if self.pending_reads.len() >= PENDING_READS_MAX {
            self.pending_reads.pop_front();
        }
        self.pending_reads.push_back(PendingRead {
            round: self.read_round + 1,
            index: committed,
            requester,
            context,
        });
    }

    fn release_confirmed_reads(&mut self) {
        let confirmed_round = self.tracker.confirmed_read_round();
        // A quorum answered the heartbeat of `confirmed_round`, so each of them refuses votes
        // for an election timeout after it received it, which was after it was sent: no other
        // leader can be elected until then (if clocks run at the same rate).
        while let Some(&(round, sent_tick)) = self.heartbeat_rounds.front() {
            if round > confirmed_round {
                break;
            }
            self.heartbeat_rounds.pop_front();
            let lease_until = sent_tick + self.config.election_timeout_min_ticks;
            self.lease_until_tick = self.lease_until_tick.max(lease_until);
        }
        while let Some(read) = self.pending_reads.front() {
            if read.round > confirmed_round {
                break;
            }
            let read = self.pending_reads.pop_front().expect("front exists");
            self.release_read(read.requester, read.context, read.index);
        }
    }

    fn release_read(&mut self, requester: NodeId, context: u64, index: u64) {
        if requester == self.id {
            self.read_states.push(ReadState { index, context });
        } else {
            self.send(
                requester,
                self.term,
                MessageBody::ReadIndexResponse { context, index },
            );
        }
    }

    // ----- Feedback from the transport -----------------------------------------------------

    /// The transport could not reach `peer`: stop streaming to it and probe instead.
    pub fn report_unreachable(&mut self, peer: NodeId) {
        self.assert_not_between_ready_and_advance();
        if self.role != Role::Leader {
            return;
        }
        if let Some(progress) = self.tracker.progress.get_mut(&peer) {
            if progress.state == ReplicationState::Replicate {
                progress.become_probe();
            }
        }
    }

    /// The transport finished sending a snapshot to `peer`, or failed to. Either way the
    /// leader probes again; after a failure it waits for the next heartbeat answer first.
    pub fn report_snapshot(&mut self, peer: NodeId, success: bool) {
        self.assert_not_between_ready_and_advance();
        if self.role != Role::Leader {
            return;
        }
        if let Some(progress) = self.tracker.progress.get_mut(&peer) {
            if progress.state != ReplicationState::Snapshot {
                return;
            }
            if !success {
                progress.pending_snapshot_index = 0;
            }
            progress.become_probe();
            progress.probe_sent = true;
        }
    }

    // ----- Ready and advance ---------------------------------------------------------------

    fn assert_not_between_ready_and_advance(&self) {
        assert!(
            self.handed_out.is_none(),
            "the node was driven between ready() and advance()"
        );
    }

    /// True if there is anything for the application to do.
    pub fn has_ready(&self) -> bool {
        self.handed_out.is_none()
            && (self.soft_state() != self.previous_soft_state
                || self.hard_state() != self.previous_hard_state
                || !self.messages.is_empty()
                || self.log.has_unstable_entries()
                || self.log.has_unstable_snapshot()
                || self.log.has_next_committed_entries()
                || !self.read_states.is_empty()
                || self.append_flush_pending
                || self.read_round_broadcast_pending)
    }

    /// Takes the work to do. See [`Ready`] for what to do with it, in which order.
    ///
    /// # Panics
    /// If the previous Ready was not followed by [`Node::advance`].
    pub fn ready(&mut self) -> Ready {
        assert!(
            self.handed_out.is_none(),
            "ready() called again before advance()"
        );
        if self.append_flush_pending {
            self.flush_appends();
        }
        if self.read_round_broadcast_pending && self.role == Role::Leader {
            self.broadcast_heartbeat();
        }
        let soft_state = self.soft_state();
        let hard_state = self.hard_state();
        // Read before this Ready's entries are handed out: what earlier Readys persisted.
        let persisted_index = self.log.persisted_index();
        let snapshot = self.log.take_unstable_snapshot();
        // Committed entries first: some may still be unstable, and those are moved out next.
        let committed_entries = self
            .log
            .take_committed_entries(self.config.committed_bytes_per_ready_max);
        let entries = self.log.take_unstable_entries();
        let config_changes: Vec<ConfigChange> = committed_entries
            .iter()
            .filter_map(|entry| match &entry.payload {
                EntryPayload::ConfigChange(change) => Some(change.clone()),
                _ => None,
            })
            .collect();
        // A commit index that applies a membership change is synced too: if it were lost in a
        // crash, the node could restart in the old configuration with nobody left to tell it
        // otherwise (a removed leader, for one, may be gone).
        let must_sync = !entries.is_empty()
            || snapshot.is_some()
            || hard_state.term != self.previous_hard_state.term
            || hard_state.vote != self.previous_hard_state.vote
            || !config_changes.is_empty();
        self.handed_out = Some(HandedOut {
            snapshot_index: snapshot.as_ref().map(|snapshot| snapshot.meta.index),
            last_entry_index: entries.last().map(|entry| entry.index),
            last_committed_index: committed_entries.last().map(|entry| entry.index),
            config_changes,
            committed_bytes: committed_entries.iter().map(Entry::size_bytes).sum(),
        });
        let committed_entries_persisted = if snapshot.is_some() {
            // The snapshot is installed at step 3, before any committed entry.
            0
        } else {
            committed_entries
                .iter()
                .take_while(|entry| entry.index <= persisted_index)
                .count()
        };
        // A leader's messages may leave before this Ready is persisted only if their term
        // was durable already: a term first reached in this Ready (a lone voter that just won
        // an election, with learners to feed) could be lost in a crash and then be won a
        // second time with another log.
        let mut messages = std::mem::take(&mut self.messages);
        let mut early_messages = Vec::new();
        if hard_state.term == self.previous_hard_state.term
            && messages.iter().any(is_replication_message)
        {
            let all = std::mem::take(&mut messages);
            (early_messages, messages) = all.into_iter().partition(is_replication_message);
        }
        let ready = Ready {
            soft_state: (soft_state != self.previous_soft_state).then_some(soft_state),
            hard_state: (hard_state != self.previous_hard_state).then_some(hard_state),
            snapshot,
            entries,
            messages,
            early_messages,
            committed_entries,
            committed_entries_persisted,
            read_states: std::mem::take(&mut self.read_states),
            must_sync,
        };
        self.previous_soft_state = soft_state;
        self.previous_hard_state = hard_state;
        ready
    }

    /// Tells the core that the last Ready was handled: its entries, hard state and snapshot
    /// are persisted, its messages sent and its committed entries applied.
    ///
    /// Applies membership changes among those entries, and on a leader counts its own newly
    /// persisted entries towards the commit index.
    pub fn advance(&mut self) {
        let handed_out = self
            .handed_out
            .take()
            .expect("advance() called without ready()");
        if let Some(index) = handed_out.snapshot_index {
            self.log.stable_snapshot_to(index);
        }
        if let Some(index) = handed_out.last_entry_index {
            self.log.stable_to(index);
            if self.role == Role::Leader {
                let persisted_index = self.log.persisted_index();
                if let Some(progress) = self.tracker.progress.get_mut(&self.id) {
                    progress.maybe_update(persisted_index);
                }
                if self.maybe_commit() {
                    self.append_flush_pending = true;
                }
            }
        }
        if let Some(index) = handed_out.last_committed_index {
            self.log.applied_to(index);
            if self.role == Role::Leader {
                self.uncommitted_bytes = self
                    .uncommitted_bytes
                    .saturating_sub(handed_out.committed_bytes);
            }
            for change in &handed_out.config_changes {
                self.apply_config_change(change);
            }
            if self.transfer_campaign_pending
                && self.role == Role::Follower
                && !self.has_unapplied_config_change()
            {
                self.transfer_campaign_pending = false;
                self.campaign(Campaign::Transfer);
            }
        }
    }

    // ----- Membership ----------------------------------------------------------------------

    fn apply_config_change(&mut self, change: &ConfigChange) {
        let next = match confchange::apply(&self.tracker.config, change) {
            Ok(next) => next,
            Err(_) => {
                // Every node applies the same entries in the same order, so every node
                // refuses this change alike.
                self.counters.rejected_config_changes += 1;
                return;
            }
        };
        self.tracker.set_config(next, self.log.last_index() + 1);
        if self.role != Role::Leader {
            return;
        }
        if !self.tracker.config.is_voter(self.id) {
            // Removed or demoted. Stepping down at once could strand the change: the others
            // may hold the entry without knowing it is committed, and this node, no longer a
            // voter, would neither campaign nor vote for them. So it keeps leading without
            // counting itself, and hands over to the most up-to-date voter.
            self.hand_over_after_removal();
            self.append_flush_pending = true;
            return;
        }
        if let Some(target) = self.transfer_target {
            if !self.tracker.config.is_voter(target) {
                self.transfer_target = None;
            }
        }
        // Quorums changed: the commit index may move, and new nodes need the log.
        if self.maybe_commit() {
            self.append_flush_pending = true;
        }
        self.append_flush_pending = true;
        let config = &self.tracker.config;
        if config.is_joint() && config.auto_leave && self.log.applied >= self.pending_config_index {
            let index = self.log.last_index() + 1;
            let entry = Entry {
                term: self.term,
                index,
                payload: EntryPayload::ConfigChange(ConfigChange::leave_joint()),
            };
            self.log.append(vec![entry]);
            self.pending_config_index = index;
        }
    }
}

/// True for the messages only a leader sends to replicate its log and keep its lead; see
/// [`Ready::early_messages`].
fn is_replication_message(message: &Message) -> bool {
    matches!(
        message.body,
        MessageBody::AppendEntries { .. }
            | MessageBody::Heartbeat { .. }
            | MessageBody::InstallSnapshot { .. }
            | MessageBody::TimeoutNow
    )
}
