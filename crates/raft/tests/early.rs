//! What a `Ready` lets the application do before persisting: which messages may leave early
//! and which committed entries may be applied early. Each test drives nodes through the public
//! API alone, persisting into `MemoryStorage` as the contract says.

use bytes::Bytes;
use raft::{Config, ConfigState, MemoryStorage, Message, MessageBody, Node, Ready, Role};

fn node(id: u64, config: ConfigState) -> Node<MemoryStorage> {
    Node::new(Config::new(id), MemoryStorage::new_with_config(config)).unwrap()
}

/// Takes one Ready, persists it, advances, and returns it with every message still in it.
fn handle(node: &mut Node<MemoryStorage>) -> Ready {
    let mut ready = node.ready();
    if let Some(snapshot) = &ready.snapshot {
        node.storage_mut().apply_snapshot(snapshot.clone());
    }
    node.storage_mut().append(&ready.entries);
    if let Some(hard_state) = ready.hard_state {
        node.storage_mut().set_hard_state(hard_state);
    }
    ready.entries.clear();
    node.advance();
    ready
}

fn is_vote(message: &Message) -> bool {
    matches!(
        message.body,
        MessageBody::VoteRequest { .. } | MessageBody::VoteResponse { .. }
    )
}

fn is_append(message: &Message) -> bool {
    matches!(message.body, MessageBody::AppendEntries { .. })
}

/// Delivers every message (early ones first) until nothing is left to do.
fn settle(nodes: &mut [Node<MemoryStorage>], readys: &mut Vec<(u64, Ready)>) {
    loop {
        let mut queue: Vec<Message> = Vec::new();
        for node in nodes.iter_mut() {
            while node.has_ready() {
                let id = node.id();
                let ready = handle(node);
                queue.extend(ready.early_messages.iter().cloned());
                queue.extend(ready.messages.iter().cloned());
                readys.push((id, ready));
            }
        }
        if queue.is_empty() {
            return;
        }
        for message in queue {
            let to = message.to;
            nodes[(to - 1) as usize].step(message);
        }
    }
}

/// Three voters, node 1 elected leader; returns every Ready handled on the way.
fn three_with_leader() -> (Vec<Node<MemoryStorage>>, Vec<(u64, Ready)>) {
    let config = ConfigState::with_voters([1, 2, 3]);
    let mut nodes: Vec<_> = (1..=3).map(|id| node(id, config.clone())).collect();
    nodes[0].campaign_now();
    let mut readys = Vec::new();
    settle(&mut nodes, &mut readys);
    assert_eq!(nodes[0].role(), Role::Leader);
    (nodes, readys)
}

#[test]
fn votes_and_their_answers_wait_for_the_hard_state() {
    let (_, readys) = three_with_leader();
    let votes: Vec<&Message> = readys
        .iter()
        .flat_map(|(_, ready)| ready.messages.iter())
        .filter(|message| is_vote(message))
        .collect();
    assert!(votes.len() >= 4, "two requests and two answers: {votes:?}");
    for (id, ready) in &readys {
        assert!(
            !ready.early_messages.iter().any(is_vote),
            "node {id} may send a vote message before persisting: {ready:?}"
        );
    }
}

#[test]
fn a_leader_sends_its_appends_before_persisting_them() {
    let (mut nodes, _) = three_with_leader();
    nodes[0].propose(Bytes::from("x")).unwrap();
    let ready = nodes[0].ready();
    assert_eq!(ready.entries.len(), 1);
    assert_eq!(
        ready.early_messages.iter().filter(|m| is_append(m)).count(),
        2
    );
    assert!(!ready.messages.iter().any(is_append));
    drop(ready);
}

#[test]
fn entries_persisted_by_earlier_readys_may_be_applied_early() {
    let (mut nodes, _) = three_with_leader();
    nodes[0].propose(Bytes::from("first")).unwrap();
    let first = handle(&mut nodes[0]);
    let first_index = first
        .early_messages
        .iter()
        .find_map(|message| match &message.body {
            MessageBody::AppendEntries { entries, .. } => entries.last().map(|e| e.index),
            _ => None,
        })
        .expect("the leader sent its entry");
    // The followers persist and answer; the leader takes the answers and, in the same
    // round, a second proposal.
    for message in first.early_messages {
        let to = message.to;
        nodes[(to - 1) as usize].step(message);
    }
    let mut answers = Vec::new();
    for follower in &mut nodes[1..] {
        while follower.has_ready() {
            answers.extend(handle(follower).messages);
        }
    }
    for answer in answers {
        nodes[0].step(answer);
    }
    nodes[0].propose(Bytes::from("second")).unwrap();
    let ready = nodes[0].ready();
    let committed: Vec<u64> = ready.committed_entries.iter().map(|e| e.index).collect();
    assert!(committed.contains(&first_index), "{committed:?}");
    assert_eq!(
        ready.entries.len(),
        1,
        "the second proposal is not persisted yet"
    );
    assert_eq!(
        ready.committed_entries_persisted,
        ready.committed_entries.len(),
        "every committed entry was persisted by an earlier Ready"
    );
    drop(ready);
}

#[test]
fn a_lone_voter_applies_its_own_entries_only_after_persisting_them() {
    let mut node = node(1, ConfigState::with_voters([1]));
    node.campaign_now();
    while node.has_ready() {
        let _ = handle(&mut node);
    }
    node.propose(Bytes::from("x")).unwrap();
    let ready = handle(&mut node);
    assert!(
        ready.committed_entries.is_empty(),
        "committed before its only copy was persisted: {ready:?}"
    );
    let ready = node.ready();
    assert_eq!(ready.committed_entries.len(), 1);
    assert_eq!(ready.committed_entries_persisted, 1);
    drop(ready);
}

#[test]
fn a_term_won_in_this_ready_keeps_the_appends_until_it_is_persisted() {
    // One voter and a learner: the voter wins at once, in the Ready that raises its term.
    let config = ConfigState {
        learners: vec![2],
        ..ConfigState::with_voters([1])
    };
    let mut node = node(1, config);
    node.campaign_now();
    let ready = node.ready();
    assert_eq!(node.role(), Role::Leader);
    assert!(ready.hard_state.is_some());
    assert!(
        ready.early_messages.is_empty(),
        "{:?}",
        ready.early_messages
    );
    assert!(ready.messages.iter().any(is_append), "{:?}", ready.messages);
    drop(ready);
}
