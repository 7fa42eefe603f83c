//! The safety properties checked at every step, against a global record of what the cluster
//! has elected, persisted, committed and applied.
//!
//! Each check returns the first broken property as a [`Violation`]; the simulator stops there.

use std::collections::BTreeMap;
use std::fmt;
use std::hash::Hasher;

use raft::{Entry, EntryPayload, NodeId};

use crate::kv::decode_request;
use crate::trace::Fnv64;

/// A broken property.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// The property, in the paper's words ("election safety", "log matching", ...).
    pub property: &'static str,
    /// What exactly was seen.
    pub detail: String,
    /// The simulated time it was seen at.
    pub time: u64,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} violated at t={}: {}",
            self.property, self.time, self.detail
        )
    }
}

/// What is known about one committed index.
#[derive(Clone, Copy, Debug, Default)]
struct CommittedSlot {
    /// The term of the committed entry (0: not known yet).
    term: u64,
    /// The lowest term of a node that reported the index committed: the term it was committed
    /// in. (A leader commits in its own term; followers learn of it in that term or later.)
    commit_term: u64,
    /// The hash of its payload, once some node applied it.
    payload: Option<u64>,
    /// The hash of the state machine after applying it.
    state: Option<u64>,
    /// The request id it carries, if it is a client request.
    request: Option<u64>,
}

/// The global record the properties are checked against.
#[derive(Debug, Default)]
pub struct Invariants {
    /// The leader of each term.
    leaders: BTreeMap<u64, NodeId>,
    /// Indexed by log index; index 0 is unused and index 1 is the bootstrap snapshot.
    committed: Vec<CommittedSlot>,
    /// The highest index any node has reported committed.
    committed_max: u64,
    /// Payload hash of every (index, term) ever persisted by any node.
    persisted: BTreeMap<(u64, u64), u64>,
}

/// A hash of an entry's payload: equal payloads, equal hashes.
pub fn payload_hash(entry: &Entry) -> u64 {
    let mut hash = Fnv64::new();
    match &entry.payload {
        EntryPayload::Empty => hash.write_u8(0),
        EntryPayload::Normal(data) => {
            hash.write_u8(1);
            hash.write(data);
        }
        EntryPayload::ConfigChange(change) => {
            hash.write_u8(2);
            hash.write(format!("{change:?}").as_bytes());
        }
    }
    hash.finish()
}

fn violation(property: &'static str, time: u64, detail: String) -> Result<(), Violation> {
    Err(Violation {
        property,
        detail,
        time,
    })
}

impl Invariants {
    /// A record for a cluster whose founding members start from the bootstrap snapshot at
    /// index 1, term 1, holding an empty state machine.
    pub fn new(bootstrap_state: u64) -> Invariants {
        let bootstrap = CommittedSlot {
            term: 1,
            commit_term: 1,
            payload: Some(0),
            state: Some(bootstrap_state),
            request: None,
        };
        Invariants {
            committed: vec![CommittedSlot::default(), bootstrap],
            committed_max: 1,
            ..Invariants::default()
        }
    }

    fn slot(&mut self, index: u64) -> &mut CommittedSlot {
        let index = index as usize;
        if self.committed.len() <= index {
            self.committed.resize(index + 1, CommittedSlot::default());
        }
        &mut self.committed[index]
    }

    /// The highest index known committed.
    pub fn committed_max(&self) -> u64 {
        self.committed_max
    }

    /// The term of committed index `index`, if known.
    pub fn committed_term(&self, index: u64) -> Option<u64> {
        self.committed
            .get(index as usize)
            .map(|slot| slot.term)
            .filter(|&term| term > 0)
    }

    /// Election safety: at most one leader per term.
    pub fn on_leader(&mut self, time: u64, term: u64, node: NodeId) -> Result<(), Violation> {
        match self.leaders.get(&term) {
            Some(&leader) if leader != node => violation(
                "election safety",
                time,
                format!("n{node} became leader of term {term}, which n{leader} already leads"),
            ),
            _ => {
                self.leaders.insert(term, node);
                Ok(())
            }
        }
    }

    /// Leader completeness: a new leader's log holds every entry committed in an earlier term.
    /// (A leader of an older term that learns of its victory late need not hold entries
    /// committed in later terms.)
    /// `term_at(i)` is the leader's term at `i` (`None` when it has no entry there); entries the
    /// leader has compacted away are not asked about.
    pub fn on_new_leader_log(
        &self,
        time: u64,
        node: NodeId,
        term: u64,
        first_index: u64,
        term_at: impl Fn(u64) -> Option<u64>,
    ) -> Result<(), Violation> {
        for index in first_index.max(2)..=self.committed_max {
            let Some(committed_term) = self.committed_term(index) else {
                continue;
            };
            if self.committed[index as usize].commit_term >= term {
                continue;
            }
            let found = term_at(index);
            if found != Some(committed_term) {
                return violation(
                    "leader completeness",
                    time,
                    format!(
                        "n{node}, leader of term {term}, has {} at index {index}, where term \
                         {committed_term} was committed",
                        found.map_or("no entry".to_string(), |found| format!("term {found}"))
                    ),
                );
            }
        }
        Ok(())
    }

    /// Log matching: two entries with the same index and term carry the same payload.
    pub fn on_persist(&mut self, time: u64, node: NodeId, entry: &Entry) -> Result<(), Violation> {
        let hash = payload_hash(entry);
        match self.persisted.get(&(entry.index, entry.term)) {
            Some(&known) if known != hash => violation(
                "log matching",
                time,
                format!(
                    "n{node} persisted an entry at {}/{} whose payload differs from another \
                     node's entry at the same index and term",
                    entry.index, entry.term
                ),
            ),
            Some(_) => Ok(()),
            None => {
                self.persisted.insert((entry.index, entry.term), hash);
                Ok(())
            }
        }
    }

    /// Node `node`, in term `node_term`, reports index `index` committed with term `term`:
    /// the committed log never changes (log matching on committed prefixes, and leader
    /// completeness in effect).
    pub fn on_commit(
        &mut self,
        time: u64,
        node: NodeId,
        node_term: u64,
        index: u64,
        term: u64,
    ) -> Result<(), Violation> {
        let slot = self.slot(index);
        if slot.term == 0 {
            slot.term = term;
            slot.commit_term = node_term;
        } else if slot.term == term {
            slot.commit_term = slot.commit_term.min(node_term);
        } else if slot.term != term {
            let known = slot.term;
            return violation(
                "committed log is immutable",
                time,
                format!("n{node} committed index {index} with term {term}, but term {known} was committed there"),
            );
        }
        self.committed_max = self.committed_max.max(index);
        Ok(())
    }

    /// State machine safety: every node applies the same entry at each index and reaches the
    /// same state. `state_after` is the node's state hash after the entry, when its state
    /// machine hashed there (at the end of each applied batch): states are compared at every
    /// index where two nodes both hashed.
    pub fn on_apply(
        &mut self,
        time: u64,
        node: NodeId,
        node_term: u64,
        entry: &Entry,
        state_after: Option<u64>,
    ) -> Result<(), Violation> {
        self.on_commit(time, node, node_term, entry.index, entry.term)?;
        let payload = payload_hash(entry);
        let request = match &entry.payload {
            EntryPayload::Normal(data) => decode_request(data).map(|(id, _)| id),
            _ => None,
        };
        let slot = self.slot(entry.index);
        match slot.payload {
            None => {
                slot.payload = Some(payload);
                slot.request = request;
            }
            Some(known) if known != payload => {
                return violation(
                    "state machine safety",
                    time,
                    format!(
                        "n{node} applied a different entry at index {} than another node",
                        entry.index
                    ),
                );
            }
            Some(_) => {}
        }
        match state_after {
            Some(state) => self.check_state(time, node, entry.index, state),
            None => Ok(()),
        }
    }

    /// A node's state machine after installing a snapshot at `index` (or after applying it)
    /// must equal every other node's state at that index.
    pub fn check_state(
        &mut self,
        time: u64,
        node: NodeId,
        index: u64,
        state: u64,
    ) -> Result<(), Violation> {
        let slot = self.slot(index);
        match slot.state {
            None => {
                slot.state = Some(state);
                Ok(())
            }
            Some(known) if known != state => violation(
                "state machine safety",
                time,
                format!("n{node}'s state after index {index} differs from another node's"),
            ),
            Some(_) => Ok(()),
        }
    }

    /// The ids of the requests in the committed log, as far as nodes applied it.
    pub fn committed_requests(&self) -> impl Iterator<Item = u64> + '_ {
        self.committed.iter().filter_map(|slot| slot.request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn entry(index: u64, term: u64, data: &'static str) -> Entry {
        Entry {
            index,
            term,
            payload: EntryPayload::Normal(Bytes::from_static(data.as_bytes())),
        }
    }

    #[test]
    fn two_leaders_in_one_term_are_caught() {
        let mut invariants = Invariants::new(0);
        assert!(invariants.on_leader(1, 2, 1).is_ok());
        assert!(invariants.on_leader(2, 2, 1).is_ok());
        assert!(invariants.on_leader(3, 3, 2).is_ok());
        let error = invariants
            .on_leader(4, 2, 3)
            .expect_err("second leader of term 2");
        assert_eq!(error.property, "election safety");
    }

    #[test]
    fn different_payloads_at_one_index_and_term_are_caught() {
        let mut invariants = Invariants::new(0);
        assert!(invariants.on_persist(1, 1, &entry(2, 2, "a")).is_ok());
        assert!(invariants.on_persist(1, 2, &entry(2, 2, "a")).is_ok());
        assert!(invariants.on_persist(1, 2, &entry(2, 3, "b")).is_ok());
        let error = invariants
            .on_persist(1, 3, &entry(2, 2, "b"))
            .expect_err("log matching");
        assert_eq!(error.property, "log matching");
    }

    #[test]
    fn a_changed_committed_entry_or_state_is_caught() {
        let mut invariants = Invariants::new(0);
        assert!(invariants
            .on_apply(1, 1, 2, &entry(2, 2, "a"), Some(10))
            .is_ok());
        assert!(invariants
            .on_apply(2, 2, 2, &entry(2, 2, "a"), Some(10))
            .is_ok());
        let error = invariants
            .on_apply(3, 3, 2, &entry(2, 2, "b"), Some(10))
            .expect_err("payload");
        assert_eq!(error.property, "state machine safety");
        let error = invariants
            .on_apply(3, 3, 2, &entry(2, 2, "a"), Some(11))
            .expect_err("state");
        assert_eq!(error.property, "state machine safety");
        let error = invariants.on_commit(4, 3, 3, 2, 3).expect_err("term");
        assert_eq!(error.property, "committed log is immutable");
    }

    #[test]
    fn a_leader_missing_a_committed_entry_is_caught() {
        let mut invariants = Invariants::new(0);
        assert!(invariants.on_commit(1, 1, 2, 2, 2).is_ok());
        assert!(invariants.on_commit(1, 1, 2, 3, 2).is_ok());
        let complete = |index: u64| (index <= 3).then_some(2);
        assert!(invariants.on_new_leader_log(2, 2, 3, 1, complete).is_ok());
        let short = |index: u64| (index <= 2).then_some(2);
        let error = invariants
            .on_new_leader_log(2, 3, 3, 1, short)
            .expect_err("missing");
        assert_eq!(error.property, "leader completeness");
        // A leader of the term the entry was committed in, or of an earlier one that learns of
        // its election late, need not hold it.
        assert!(invariants.on_new_leader_log(2, 3, 2, 1, short).is_ok());
        // Entries the leader compacted away are not asked about.
        assert!(invariants.on_new_leader_log(2, 3, 3, 4, |_| None).is_ok());
    }
}
