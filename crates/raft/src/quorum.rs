//! Quorum arithmetic: the value a majority agrees on, and the outcome of a vote, for a plain
//! majority configuration and for a joint one.
//!
//! These are small pure functions so that they can be checked against a deliberately simple
//! model (see the property tests at the bottom).

use crate::types::NodeId;

/// The outcome of counting votes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VoteResult {
    /// A quorum granted.
    Won,
    /// A quorum can no longer grant.
    Lost,
    /// Neither yet.
    Pending,
}

/// The size of a majority of `voter_count` voters: floor(N/2)+1.
pub fn quorum_size(voter_count: usize) -> usize {
    voter_count / 2 + 1
}

/// The largest value that a majority of `voters` have reached, where `value` gives each
/// voter's (for example its match index). With no voters, `u64::MAX`, so that an empty half
/// of a joint configuration never holds the other back.
pub fn majority_value(voters: &[NodeId], value: impl Fn(NodeId) -> u64) -> u64 {
    if voters.is_empty() {
        return u64::MAX;
    }
    // Clusters are small (1 to 9 voters usually): sort a copy on the stack when we can.
    let mut on_stack = [0u64; 16];
    let mut on_heap;
    let values: &mut [u64] = if voters.len() <= on_stack.len() {
        for (slot, &id) in on_stack.iter_mut().zip(voters) {
            *slot = value(id);
        }
        &mut on_stack[..voters.len()]
    } else {
        on_heap = voters.iter().map(|&id| value(id)).collect::<Vec<u64>>();
        &mut on_heap[..]
    };
    values.sort_unstable_by(|a, b| b.cmp(a));
    // Sorted from high to low, the quorum-th value is held by a quorum of voters.
    values[quorum_size(values.len()) - 1]
}

/// The largest value that a majority of both halves of a joint configuration have reached.
pub fn joint_majority_value(
    incoming: &[NodeId],
    outgoing: &[NodeId],
    value: impl Fn(NodeId) -> u64,
) -> u64 {
    majority_value(incoming, &value).min(majority_value(outgoing, &value))
}

/// Counts a majority vote; `vote` gives each voter's vote, or `None` if it has not answered.
pub fn majority_vote(voters: &[NodeId], vote: impl Fn(NodeId) -> Option<bool>) -> VoteResult {
    if voters.is_empty() {
        return VoteResult::Won;
    }
    let mut granted = 0;
    let mut missing = 0;
    for &id in voters {
        match vote(id) {
            Some(true) => granted += 1,
            Some(false) => {}
            None => missing += 1,
        }
    }
    let quorum = quorum_size(voters.len());
    if granted >= quorum {
        VoteResult::Won
    } else if granted + missing >= quorum {
        VoteResult::Pending
    } else {
        VoteResult::Lost
    }
}

/// Counts a vote in a joint configuration: won only when both halves are won, lost as soon as
/// either half is lost.
pub fn joint_vote(
    incoming: &[NodeId],
    outgoing: &[NodeId],
    vote: impl Fn(NodeId) -> Option<bool>,
) -> VoteResult {
    let first = majority_vote(incoming, &vote);
    let second = majority_vote(outgoing, &vote);
    match (first, second) {
        (VoteResult::Won, VoteResult::Won) => VoteResult::Won,
        (VoteResult::Lost, _) | (_, VoteResult::Lost) => VoteResult::Lost,
        _ => VoteResult::Pending,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    /// The dumbest correct model: try every candidate value and keep the largest that at
    /// least floor(N/2)+1 voters have reached.
    fn model_majority_value(values: &BTreeMap<NodeId, u64>) -> u64 {
        if values.is_empty() {
            return u64::MAX;
        }
        let quorum = values.len() / 2 + 1;
        let mut best = 0;
        for &candidate in values.values() {
            let reached = values.values().filter(|&&v| v >= candidate).count();
            if reached >= quorum && candidate > best {
                best = candidate;
            }
        }
        best
    }

    /// Every way the missing votes could go; the vote is decided only if they all agree.
    fn model_vote(voters: &BTreeMap<NodeId, Option<bool>>) -> VoteResult {
        if voters.is_empty() {
            return VoteResult::Won;
        }
        let quorum = voters.len() / 2 + 1;
        let granted = voters.values().filter(|v| **v == Some(true)).count();
        let missing = voters.values().filter(|v| v.is_none()).count();
        let wins_if_all_missing_grant = granted + missing >= quorum;
        let wins_if_none_grant = granted >= quorum;
        match (wins_if_none_grant, wins_if_all_missing_grant) {
            (true, _) => VoteResult::Won,
            (false, true) => VoteResult::Pending,
            (false, false) => VoteResult::Lost,
        }
    }

    fn node_values() -> impl Strategy<Value = BTreeMap<NodeId, u64>> {
        prop::collection::btree_map(1u64..20, 0u64..50, 0..10)
    }

    fn node_votes() -> impl Strategy<Value = BTreeMap<NodeId, Option<bool>>> {
        prop::collection::btree_map(1u64..20, prop::option::of(any::<bool>()), 0..10)
    }

    proptest! {
        #[test]
        fn majority_value_matches_model(values in node_values()) {
            let ids: Vec<NodeId> = values.keys().copied().collect();
            prop_assert_eq!(majority_value(&ids, |id| values[&id]), model_majority_value(&values));
        }

        #[test]
        fn joint_value_is_the_lower_half(incoming in node_values(), outgoing in node_values()) {
            // Nodes in both halves have one value: take the incoming one for shared ids.
            let mut all = outgoing.clone();
            all.extend(incoming.iter());
            let incoming_ids: Vec<NodeId> = incoming.keys().copied().collect();
            let outgoing_ids: Vec<NodeId> = outgoing.keys().copied().collect();
            let incoming_model: BTreeMap<NodeId, u64> = incoming_ids.iter().map(|id| (*id, all[id])).collect();
            let outgoing_model: BTreeMap<NodeId, u64> = outgoing_ids.iter().map(|id| (*id, all[id])).collect();
            let expected = model_majority_value(&incoming_model).min(model_majority_value(&outgoing_model));
            prop_assert_eq!(joint_majority_value(&incoming_ids, &outgoing_ids, |id| all[&id]), expected);
        }

        #[test]
        fn committed_value_is_held_by_a_quorum(values in node_values()) {
            prop_assume!(!values.is_empty());
            let ids: Vec<NodeId> = values.keys().copied().collect();
            let committed = majority_value(&ids, |id| values[&id]);
            let holders = values.values().filter(|&&v| v >= committed).count();
            prop_assert!(holders >= quorum_size(ids.len()));
        }

        #[test]
        fn majority_vote_matches_model(votes in node_votes()) {
            let ids: Vec<NodeId> = votes.keys().copied().collect();
            prop_assert_eq!(majority_vote(&ids, |id| votes[&id]), model_vote(&votes));
        }

        #[test]
        fn joint_vote_matches_model(incoming in node_votes(), outgoing in node_votes()) {
            let mut all = outgoing.clone();
            all.extend(incoming.iter());
            let incoming_ids: Vec<NodeId> = incoming.keys().copied().collect();
            let outgoing_ids: Vec<NodeId> = outgoing.keys().copied().collect();
            let half = |ids: &[NodeId]| model_vote(&ids.iter().map(|id| (*id, all[id])).collect());
            let expected = match (half(&incoming_ids), half(&outgoing_ids)) {
                (VoteResult::Won, VoteResult::Won) => VoteResult::Won,
                (VoteResult::Lost, _) | (_, VoteResult::Lost) => VoteResult::Lost,
                _ => VoteResult::Pending,
            };
            prop_assert_eq!(joint_vote(&incoming_ids, &outgoing_ids, |id| all[&id]), expected);
        }
    }

    #[test]
    fn quorum_sizes_follow_the_table() {
        let expected = [(1, 1), (3, 2), (5, 3), (7, 4), (9, 5)];
        for (nodes, quorum) in expected {
            assert_eq!(quorum_size(nodes), quorum, "cluster of {nodes}");
        }
    }
}
