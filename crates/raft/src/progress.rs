//! The leader's view of each follower: how much of the log it holds, what is in flight to it,
//! and whether it has been heard from recently. Also the membership and the vote count.

use std::collections::{BTreeMap, VecDeque};

use crate::quorum::{joint_majority_value, joint_vote, VoteResult};
use crate::types::{ConfigState, NodeId};

/// How the leader is currently replicating to one follower.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplicationState {
    /// The leader does not know where the follower's log matches; it sends one AppendEntries
    /// at a time and waits for the answer.
    Probe,
    /// The follower's log matches; the leader streams entries, bounded by the in-flight window.
    Replicate,
    /// The follower needs a snapshot; nothing else is sent until it is installed or fails.
    Snapshot,
}

/// A bounded window of AppendEntries messages in flight to one follower: their last indexes
/// and sizes. Full when either the message count or the byte total reaches its maximum.
#[derive(Clone, Debug)]
pub(crate) struct Inflights {
    /// (last index of the message, bytes of its entries), oldest first.
    messages: VecDeque<(u64, u64)>,
    bytes: u64,
    messages_max: usize,
    bytes_max: u64,
}

impl Inflights {
    pub(crate) fn new(messages_max: usize, bytes_max: u64) -> Inflights {
        assert!(
            messages_max > 0,
            "the in-flight window must allow one message"
        );
        Inflights {
            messages: VecDeque::new(),
            bytes: 0,
            messages_max,
            bytes_max,
        }
    }

    pub(crate) fn add(&mut self, last_index: u64, bytes: u64) {
        assert!(
            !self.is_full(),
            "a message was sent through a full in-flight window"
        );
        if let Some(&(previous, _)) = self.messages.back() {
            assert!(
                last_index > previous,
                "in-flight messages must have growing indexes"
            );
        }
        self.messages.push_back((last_index, bytes));
        self.bytes += bytes;
    }

    /// Frees every message whose last index is at or below `index`: the follower has it.
    pub(crate) fn free_up_to(&mut self, index: u64) {
        while let Some(&(last_index, bytes)) = self.messages.front() {
            if last_index > index {
                break;
            }
            self.messages.pop_front();
            self.bytes -= bytes;
        }
    }

    /// Frees the oldest message, so that a heartbeat response can unblock a stuck window.
    pub(crate) fn free_first_one(&mut self) {
        if let Some((_, bytes)) = self.messages.pop_front() {
            self.bytes -= bytes;
        }
    }

    pub(crate) fn is_full(&self) -> bool {
        self.messages.len() >= self.messages_max || self.bytes >= self.bytes_max
    }

    #[cfg(test)]
    pub(crate) fn count(&self) -> usize {
        self.messages.len()
    }

    pub(crate) fn reset(&mut self) {
        self.messages.clear();
        self.bytes = 0;
    }
}

/// The leader's record of one node.
#[derive(Clone, Debug)]
pub(crate) struct Progress {
    /// The highest index known to match the leader's log.
    pub match_index: u64,
    /// The index of the next entry to send.
    pub next_index: u64,
    pub state: ReplicationState,
    /// In the Snapshot state: the index of the snapshot being sent.
    pub pending_snapshot_index: u64,
    /// In the Probe state: a probe is out and unanswered, so no other is sent.
    pub probe_sent: bool,
    pub inflights: Inflights,
    /// Heard from since the last check-quorum round.
    pub recent_active: bool,
    pub is_learner: bool,
    /// The highest read-confirmation round the node has answered.
    pub read_round_acknowledged: u64,
    /// The commit index last sent to the node.
    pub commit_sent: u64,
}

impl Progress {
    pub(crate) fn new(next_index: u64, inflights: Inflights, is_learner: bool) -> Progress {
        Progress {
            match_index: 0,
            next_index,
            state: ReplicationState::Probe,
            pending_snapshot_index: 0,
            probe_sent: false,
            inflights,
            // A new node is given the benefit of the doubt, so that adding it does not make
            // check-quorum step the leader down at once.
            recent_active: true,
            is_learner,
            read_round_acknowledged: 0,
            commit_sent: 0,
        }
    }

    fn reset_state(&mut self, state: ReplicationState) {
        self.probe_sent = false;
        self.pending_snapshot_index = 0;
        self.state = state;
        self.inflights.reset();
    }

    pub(crate) fn become_probe(&mut self) {
        if self.state == ReplicationState::Snapshot {
            // The snapshot may have arrived: resume after it rather than before it.
            let pending = self.pending_snapshot_index;
            self.reset_state(ReplicationState::Probe);
            self.next_index = (self.match_index + 1).max(pending + 1);
        } else {
            self.reset_state(ReplicationState::Probe);
            self.next_index = self.match_index + 1;
        }
    }

    pub(crate) fn become_replicate(&mut self) {
        self.reset_state(ReplicationState::Replicate);
        self.next_index = self.match_index + 1;
    }

    pub(crate) fn become_snapshot(&mut self, snapshot_index: u64) {
        self.reset_state(ReplicationState::Snapshot);
        self.pending_snapshot_index = snapshot_index;
    }

    /// Records that the node holds the log up to `index`. Returns true if that is news.
    pub(crate) fn maybe_update(&mut self, index: u64) -> bool {
        let updated = index > self.match_index;
        if updated {
            self.match_index = index;
            self.probe_sent = false;
        }
        self.next_index = self.next_index.max(index + 1);
        updated
    }

    /// Handles a rejection of the AppendEntries whose previous index was `rejected_index`,
    /// with the follower's hint that its log may match up to `match_hint`. Returns false if
    /// the rejection is stale (answers an older message) and changes nothing then.
    pub(crate) fn maybe_decrease_to(&mut self, rejected_index: u64, match_hint: u64) -> bool {
        if self.state == ReplicationState::Replicate {
            if rejected_index <= self.match_index {
                return false;
            }
            self.next_index = self.match_index + 1;
            return true;
        }
        if self.next_index.checked_sub(1) != Some(rejected_index) {
            return false;
        }
        self.next_index = rejected_index.min(match_hint + 1).max(self.match_index + 1);
        self.probe_sent = false;
        true
    }

    /// Records that an AppendEntries with `entry_count` entries ending at `last_index` went out.
    pub(crate) fn sent_entries(&mut self, entry_count: usize, bytes: u64, last_index: u64) {
        match self.state {
            ReplicationState::Replicate => {
                if entry_count > 0 {
                    self.next_index = last_index + 1;
                    self.inflights.add(last_index, bytes);
                }
            }
            ReplicationState::Probe => self.probe_sent = true,
            ReplicationState::Snapshot => {
                panic!("entries sent to a follower that is waiting for a snapshot")
            }
        }
    }

    pub(crate) fn is_paused(&self) -> bool {
        match self.state {
            ReplicationState::Probe => self.probe_sent,
            ReplicationState::Replicate => self.inflights.is_full(),
            ReplicationState::Snapshot => true,
        }
    }
}

/// The membership, with a [`Progress`] for every node in it, and the votes of an election.
#[derive(Clone, Debug)]
pub(crate) struct Tracker {
    pub config: ConfigState,
    pub progress: BTreeMap<NodeId, Progress>,
    pub votes: BTreeMap<NodeId, bool>,
    inflight_messages_max: usize,
    inflight_bytes_max: u64,
}

impl Tracker {
    pub(crate) fn new(inflight_messages_max: usize, inflight_bytes_max: u64) -> Tracker {
        Tracker {
            config: ConfigState::default(),
            progress: BTreeMap::new(),
            votes: BTreeMap::new(),
            inflight_messages_max,
            inflight_bytes_max,
        }
    }

    /// Switches to `config`, keeping the progress of nodes that stay and starting new nodes
    /// at `next_index`.
    pub(crate) fn set_config(&mut self, config: ConfigState, next_index: u64) {
        let all = config.all_nodes();
        self.progress.retain(|id, _| all.binary_search(id).is_ok());
        for id in all {
            let is_learner = !config.is_voter(id);
            let inflights = Inflights::new(self.inflight_messages_max, self.inflight_bytes_max);
            self.progress
                .entry(id)
                .and_modify(|progress| progress.is_learner = is_learner)
                .or_insert_with(|| Progress::new(next_index, inflights, is_learner));
        }
        self.config = config;
    }

    /// The highest index a quorum of voters holds.
    pub(crate) fn committed_index(&self) -> u64 {
        joint_majority_value(&self.config.voters, &self.config.voters_outgoing, |id| {
            self.progress
                .get(&id)
                .map_or(0, |progress| progress.match_index)
        })
    }

    /// The highest index a quorum of the incoming voters holds, the outgoing ones ignored: only
    /// for the planted bug that commits by it.
    #[cfg(feature = "planted-bugs")]
    pub(crate) fn incoming_committed_index(&self) -> u64 {
        joint_majority_value(&self.config.voters, &[], |id| {
            self.progress
                .get(&id)
                .map_or(0, |progress| progress.match_index)
        })
    }

    /// The highest read round a quorum of voters has confirmed.
    pub(crate) fn confirmed_read_round(&self) -> u64 {
        joint_majority_value(&self.config.voters, &self.config.voters_outgoing, |id| {
            self.progress
                .get(&id)
                .map_or(0, |progress| progress.read_round_acknowledged)
        })
    }

    /// True if a quorum of voters has been heard from since the last check.
    pub(crate) fn quorum_active(&self) -> bool {
        let active =
            joint_majority_value(&self.config.voters, &self.config.voters_outgoing, |id| {
                self.progress
                    .get(&id)
                    .map_or(0, |progress| u64::from(progress.recent_active))
            });
        active >= 1
    }

    pub(crate) fn reset_votes(&mut self) {
        self.votes.clear();
    }

    /// Records a vote; returns false if the node had already voted (a duplicate reply).
    pub(crate) fn record_vote(&mut self, id: NodeId, granted: bool) -> bool {
        if self.votes.contains_key(&id) {
            return false;
        }
        self.votes.insert(id, granted);
        true
    }

    pub(crate) fn tally_votes(&self) -> VoteResult {
        joint_vote(&self.config.voters, &self.config.voters_outgoing, |id| {
            self.votes.get(&id).copied()
        })
    }

    /// Every voter of either half, sorted and without repeats.
    pub(crate) fn voter_ids(&self) -> Vec<NodeId> {
        let mut ids: Vec<NodeId> = self
            .config
            .voters
            .iter()
            .chain(&self.config.voters_outgoing)
            .copied()
            .collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    /// True if `id` is the only voter: it decides everything on its own.
    pub(crate) fn is_single_voter(&self, id: NodeId) -> bool {
        self.config.voters == [id] && self.config.voters_outgoing.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inflights_fill_by_count_and_by_bytes() {
        let mut by_count = Inflights::new(2, u64::MAX);
        by_count.add(5, 10);
        assert!(!by_count.is_full());
        by_count.add(9, 10);
        assert!(by_count.is_full());
        by_count.free_up_to(5);
        assert!(!by_count.is_full());
        assert_eq!(by_count.count(), 1);

        let mut by_bytes = Inflights::new(100, 1000);
        by_bytes.add(1, 600);
        assert!(!by_bytes.is_full());
        by_bytes.add(2, 400);
        assert!(by_bytes.is_full());
        by_bytes.free_first_one();
        assert!(!by_bytes.is_full());
    }

    #[test]
    fn stale_rejections_change_nothing() {
        let mut progress = Progress::new(11, Inflights::new(4, u64::MAX), false);
        progress.match_index = 5;
        progress.become_replicate();
        progress.sent_entries(3, 30, 8);
        assert_eq!(progress.next_index, 9);
        // A rejection of index 4 answers a message older than what is known to match.
        assert!(!progress.maybe_decrease_to(4, 4));
        assert_eq!(progress.next_index, 9);
        // A rejection above the match index sends the leader back to the match index.
        assert!(progress.maybe_decrease_to(7, 6));
        assert_eq!(progress.next_index, 6);
    }

    #[test]
    fn probe_rejection_uses_the_hint_but_not_below_the_match() {
        let mut progress = Progress::new(21, Inflights::new(4, u64::MAX), false);
        progress.match_index = 3;
        assert!(progress.maybe_decrease_to(20, 10));
        assert_eq!(progress.next_index, 11);
        assert!(progress.maybe_decrease_to(10, 0));
        assert_eq!(progress.next_index, 4);
        // A rejection of an index the leader is no longer probing is stale.
        assert!(!progress.maybe_decrease_to(10, 0));
    }
}
