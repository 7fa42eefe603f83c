//! The state machine the simulated nodes run: the server's own MVCC store behind the server's
//! own entry decoding ([`server::runtime::Decoding`] over [`server::serve::KvStateMachine`]),
//! and the requests the simulated clients send it, built as etcd's clients build them.
//!
//! The clients' model is a map of `u64` keys to `u64` values (what the linearizability checker
//! reasons about); here those become etcd requests: a put is a `PutRequest`, a compare-and-swap
//! a `TxnRequest` whose compare is the key's value (or, for "absent", its create revision 0, as
//! etcd's lock recipe writes it) and whose success branch puts the new value, a read a
//! `RangeRequest` served from the store once the shell releases the read.
//!
//! Rationale for no request de-duplication: etcd has none. A client whose attempt timed out
//! does not know whether it took effect, so the simulator records it as indeterminate and
//! goes on with a new operation, never a retry of the same write (a retried compare-and-swap
//! could apply twice). The checker treats indeterminate operations as optional.

use std::hash::Hasher;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use prost::Message as _;
use server::mvcc::{MvccOptions, MvccStore};
use server::proto::etcdserverpb::{
    compare, request_op, CompactionRequest, Compare, PutRequest, RangeRequest, RequestOp,
    TxnRequest,
};
use server::proto::flotillapb::{internal_request, InternalRequest};
use server::runtime::{Applied, Decoding, RequestOutcomes, ServerError};
use server::serve::KvStateMachine;
use server::shell::ShellStateMachine;

use crate::trace::Fnv64;

/// A client of the simulated store. Client 0 is the simulator's own liveness probe.
pub type ClientId = u64;

/// What an applied client request answers, as the server's runtime hands it back.
pub type Answer = Result<Applied, ServerError>;

/// The key the liveness probe writes; no client operation touches it.
pub const PROBE_KEY: &[u8] = b"probe";

/// The etcd key of the model's key `key`.
pub fn key_bytes(key: u64) -> Vec<u8> {
    format!("key/{key:05}").into_bytes()
}

/// The etcd value of the model's value `value`.
fn value_bytes(value: u64) -> Vec<u8> {
    value.to_string().into_bytes()
}

/// The model's value of an etcd value the clients wrote.
///
/// # Panics
/// On a value no simulated client writes: only they write these keys.
fn parse_value(bytes: &[u8]) -> u64 {
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|text| text.parse().ok())
        .expect("a value a simulated client wrote")
}

/// A put of `value` at `key`.
pub fn put_request(key: u64, value: u64) -> internal_request::Request {
    internal_request::Request::Put(put(key, value))
}

fn put(key: u64, value: u64) -> PutRequest {
    PutRequest {
        key: key_bytes(key),
        value: value_bytes(value),
        ..PutRequest::default()
    }
}

/// The compare-and-swap of `key` from `expected` (`None`: absent) to `new`, as a txn.
pub fn compare_and_swap_request(
    key: u64,
    expected: Option<u64>,
    new: u64,
) -> internal_request::Request {
    let (target, target_union) = match expected {
        Some(value) => (
            compare::CompareTarget::Value,
            compare::TargetUnion::Value(value_bytes(value)),
        ),
        None => (
            compare::CompareTarget::Create,
            compare::TargetUnion::CreateRevision(0),
        ),
    };
    let compare = Compare {
        result: compare::CompareResult::Equal as i32,
        target: target as i32,
        key: key_bytes(key),
        target_union: Some(target_union),
        ..Compare::default()
    };
    internal_request::Request::Txn(TxnRequest {
        compare: vec![compare],
        success: vec![RequestOp {
            request: Some(request_op::Request::RequestPut(put(key, new))),
        }],
        failure: Vec::new(),
    })
}

/// A compaction of the store's history up to `revision`.
pub fn compaction_request(revision: i64) -> internal_request::Request {
    internal_request::Request::Compaction(CompactionRequest {
        revision,
        physical: false,
    })
}

/// The liveness probe's write.
pub fn probe_request(number: u64) -> internal_request::Request {
    internal_request::Request::Put(PutRequest {
        key: PROBE_KEY.to_vec(),
        value: value_bytes(number),
        ..PutRequest::default()
    })
}

/// The request id and whether it is the liveness probe's, of a log entry's bytes; `None` for
/// bytes that are no client request.
pub fn decode_request(data: &[u8]) -> Option<(u64, bool)> {
    let entry = InternalRequest::decode(data).ok()?;
    let request = entry.request?;
    let probe = matches!(&request, internal_request::Request::Put(put) if put.key == PROBE_KEY);
    Some((entry.id, probe))
}

/// The server's state machine as a simulated node's shell runs it, plus the state's hash after
/// each applied batch (for the per-index checks) and direct reads for the clients.
pub struct KvMachine {
    machine: Decoding<KvStateMachine>,
    store: Arc<Mutex<MvccStore>>,
    /// The last index of the last applied batch, and the state's hash after it.
    last_batch: Option<(u64, u64)>,
}

impl KvMachine {
    /// An empty store, as a member's runtime starts with before restoring its snapshot.
    pub fn new() -> KvMachine {
        let store = Arc::new(Mutex::new(MvccStore::new(MvccOptions::default())));
        let machine = Decoding::new(Arc::new(KvStateMachine::new(Arc::clone(&store), None)));
        KvMachine {
            machine,
            store,
            last_batch: None,
        }
    }

    /// The value of `key`, read from the store as a serializable range would.
    pub fn get(&self, key: u64) -> Option<u64> {
        let request = RangeRequest {
            key: key_bytes(key),
            ..RangeRequest::default()
        };
        let store = self.store.lock().expect("store lock");
        let response = store.range(&request).expect("a plain range succeeds");
        response.kvs.first().map(|kv| parse_value(&kv.value))
    }

    /// The store's current revision.
    pub fn current_revision(&self) -> i64 {
        self.store.lock().expect("store lock").current_revision()
    }

    /// Whether a compare-and-swap from `expected` would swap now, without applying it. Only the
    /// planted bug that acknowledges writes before they commit uses it.
    pub fn would_swap(&self, key: u64, expected: Option<u64>) -> bool {
        self.get(key) == expected
    }

    /// A hash of the state clients can see: the revisions and every current key-value with its
    /// metadata.
    pub fn state_hash(&self) -> u64 {
        let store = self.store.lock().expect("store lock");
        let everything = RangeRequest {
            key: vec![0],
            range_end: vec![0],
            ..RangeRequest::default()
        };
        let response = store.range(&everything).expect("a plain range succeeds");
        let mut hash = Fnv64::new();
        hash.write_i64(store.current_revision());
        hash.write_i64(store.compacted_revision());
        for kv in &response.kvs {
            hash.write(&kv.key);
            hash.write(&kv.value);
            hash.write_i64(kv.create_revision);
            hash.write_i64(kv.mod_revision);
            hash.write_i64(kv.version);
            hash.write_i64(kv.lease);
        }
        hash.finish()
    }

    /// The state hash right after `index`, if `index` ended the last applied batch.
    pub fn hash_after(&self, index: u64) -> Option<u64> {
        self.last_batch
            .filter(|&(last, _)| last == index)
            .map(|(_, hash)| hash)
    }
}

impl Default for KvMachine {
    fn default() -> Self {
        KvMachine::new()
    }
}

impl ShellStateMachine for KvMachine {
    type Response = Answer;

    fn apply(&mut self, entries: &[raft::Entry]) -> Result<RequestOutcomes, String> {
        let outcomes = self.machine.apply(entries)?;
        self.last_batch = entries.last().map(|entry| (entry.index, self.state_hash()));
        Ok(outcomes)
    }

    fn snapshot(&mut self) -> Result<Bytes, String> {
        self.machine.snapshot()
    }

    fn restore(&mut self, snapshot: &raft::Snapshot) -> Result<(), String> {
        self.last_batch = None;
        self.machine.restore(snapshot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft::{Entry, EntryPayload};
    use server::runtime::encode_proposal;

    fn entry(index: u64, id: u64, request: internal_request::Request) -> Entry {
        Entry {
            index,
            term: 1,
            payload: EntryPayload::Normal(encode_proposal(id, request)),
        }
    }

    fn swapped(answer: &Answer) -> bool {
        match answer {
            Ok(Applied::Txn(response)) => response.succeeded,
            other => panic!("not a txn's answer: {other:?}"),
        }
    }

    #[test]
    fn puts_and_compare_and_swaps_apply_as_the_model_says() {
        let mut machine = KvMachine::new();
        let outcomes = machine
            .apply(&[
                entry(2, 10, compare_and_swap_request(1, None, 5)),
                entry(3, 11, compare_and_swap_request(1, None, 6)),
                entry(4, 12, compare_and_swap_request(1, Some(5), 7)),
                entry(5, 13, compare_and_swap_request(1, Some(5), 8)),
                entry(6, 14, put_request(2, 9)),
            ])
            .expect("applies");
        let ids: Vec<u64> = outcomes.iter().map(|(id, _)| *id).collect();
        assert_eq!(ids, [10, 11, 12, 13, 14]);
        let swaps: Vec<bool> = outcomes[..4].iter().map(|(_, a)| swapped(a)).collect();
        assert_eq!(swaps, [true, false, true, false]);
        assert!(matches!(outcomes[4].1, Ok(Applied::Put(_))));
        assert_eq!(machine.get(1), Some(7));
        assert_eq!(machine.get(2), Some(9));
        assert_eq!(machine.get(3), None);
        assert!(machine.would_swap(3, None));
        assert!(!machine.would_swap(1, Some(5)));
        assert_eq!(machine.hash_after(6), Some(machine.state_hash()));
        assert_eq!(machine.hash_after(5), None, "only a batch's end is hashed");
    }

    #[test]
    fn a_snapshot_restores_the_same_state_and_hash() {
        let mut machine = KvMachine::new();
        machine
            .apply(&[
                entry(2, 1, put_request(4, 1)),
                entry(3, 2, put_request(4, 2)),
            ])
            .expect("applies");
        let image = machine.snapshot().expect("snapshots");
        let mut restored = KvMachine::new();
        let snapshot = raft::Snapshot {
            meta: raft::SnapshotMeta {
                index: 3,
                term: 1,
                config: raft::ConfigState::with_voters([1]),
            },
            data: image,
        };
        restored.restore(&snapshot).expect("restores");
        assert_eq!(restored.get(4), Some(2));
        assert_eq!(restored.state_hash(), machine.state_hash());
        // A compaction changes what the hash covers; one of a compacted revision is refused
        // and changes nothing.
        machine
            .apply(&[entry(4, 3, compaction_request(2))])
            .expect("applies");
        assert_ne!(restored.state_hash(), machine.state_hash());
        let compacted = machine.state_hash();
        let outcomes = machine
            .apply(&[entry(5, 4, compaction_request(1))])
            .expect("applies");
        assert!(outcomes[0].1.is_err(), "{:?}", outcomes[0].1);
        assert_eq!(machine.state_hash(), compacted);
        assert_ne!(KvMachine::new().state_hash(), machine.state_hash());
    }

    #[test]
    fn entries_name_their_request_and_the_probe() {
        let put = encode_proposal(7, put_request(1, 1));
        assert_eq!(decode_request(&put), Some((7, false)));
        let probe = encode_proposal(8, probe_request(1));
        assert_eq!(decode_request(&probe), Some((8, true)));
        assert_eq!(decode_request(b"\xff\xff not a request"), None);
    }
}
