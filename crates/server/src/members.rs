//! The member list and the peer addresses it gives: who the members are (the founders a
//! founding member's bootstrap snapshot stands for, overridden by the attributes applied
//! through the log) and where each is reached.
//!
//! Rationale for a module of its own: the services list members and the process start-up and
//! the runtime connect peers from the same records; with the list here neither depends on the
//! other for it.

use std::collections::BTreeMap;

use prost::Message as _;
use raft::{ConfigState, NodeId};

use crate::mvcc::{MvccReader, MvccStore};
use crate::proto::flotillapb::MemberAttributes;

/// The metadata name under which a founding member records the initial members' attributes.
const INITIAL_MEMBERS_METADATA: &str = "initial-members";

/// The founders' attributes as a founding member's store records them at index 1.
pub fn encode_initial_members(founders: &[MemberAttributes]) -> Vec<u8> {
    let mut encoded = Vec::new();
    for member in founders {
        member
            .encode_length_delimited(&mut encoded)
            .expect("a Vec grows as needed");
    }
    encoded
}

/// Records the founders (from [`encode_initial_members`]) in a store that starts from the
/// founders' bootstrap snapshot.
pub fn record_initial_members(store: &mut MvccStore, encoded: &[u8]) {
    store.set_metadata(INITIAL_MEMBERS_METADATA, encoded);
}

/// Every member: the initial ones recorded at founding, overridden by those applied through
/// the log.
pub fn all_members(store: &MvccReader) -> Vec<MemberAttributes> {
    let mut by_id: BTreeMap<NodeId, MemberAttributes> = BTreeMap::new();
    if let Some(encoded) = store.metadata(INITIAL_MEMBERS_METADATA) {
        let mut buffer = &encoded[..];
        while !buffer.is_empty() {
            match MemberAttributes::decode_length_delimited(&mut buffer) {
                Ok(member) => {
                    by_id.insert(member.id, member);
                }
                Err(_) => break,
            }
        }
    }
    for member in store.members() {
        by_id.insert(member.id, member);
    }
    by_id.into_values().collect()
}

/// The `host:port` a member's peers dial: its first peer URL's, if it parses.
pub fn peer_address(peer_urls: &[String]) -> Option<String> {
    peer_urls
        .first()
        .and_then(|url| crate::cluster::host_and_port(url).ok())
}

/// The peers member `own` should be connected to, with their addresses: every member not
/// removed, and every member of the Raft `config` whose attributes are not applied yet at the
/// address it had in `known` (a member added a moment ago, or a founder listed by the flags).
pub fn peer_addresses(
    members: &[MemberAttributes],
    config: &ConfigState,
    own: NodeId,
    known: &BTreeMap<NodeId, String>,
) -> BTreeMap<NodeId, String> {
    let mut wanted = BTreeMap::new();
    for member in members {
        if member.removed || member.id == own {
            continue;
        }
        if let Some(address) = peer_address(&member.peer_urls) {
            wanted.insert(member.id, address);
        }
    }
    for id in config.all_nodes() {
        if let Some(address) = known.get(&id) {
            wanted.entry(id).or_insert_with(|| address.clone());
        }
    }
    wanted
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: NodeId, port: u16, removed: bool) -> MemberAttributes {
        MemberAttributes {
            id,
            name: format!("n{id}"),
            peer_urls: vec![format!("http://127.0.0.1:{port}")],
            client_urls: Vec::new(),
            is_learner: false,
            removed,
        }
    }

    #[test]
    fn peers_are_the_members_not_removed_and_configured_ones_still_unlisted() {
        let members = [
            member(1, 2380, false),
            member(2, 22380, false),
            member(3, 32380, true),
        ];
        let config = ConfigState::with_voters([1, 2, 4]);
        let known = BTreeMap::from([
            (4, "127.0.0.1:42380".to_string()),
            (5, "127.0.0.1:52380".to_string()),
        ]);
        let wanted = peer_addresses(&members, &config, 1, &known);
        assert_eq!(
            wanted,
            BTreeMap::from([
                (2, "127.0.0.1:22380".to_string()),
                (4, "127.0.0.1:42380".to_string()),
            ])
        );
    }

    #[test]
    fn initial_members_round_trip_through_their_encoding() {
        let founders = [member(1, 2380, false), member(2, 22380, false)];
        let encoded = encode_initial_members(&founders);
        let mut buffer = &encoded[..];
        let mut decoded = Vec::new();
        while !buffer.is_empty() {
            decoded.push(MemberAttributes::decode_length_delimited(&mut buffer).unwrap());
        }
        assert_eq!(decoded, founders);
    }
}
