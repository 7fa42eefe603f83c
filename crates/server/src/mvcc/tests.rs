//! Tests of the store through its public API: each test states one etcd semantic.

use super::{
    validate_put, validate_range, validate_txn, ApplyOutcome, ApplyResult, MvccError, MvccOptions,
    MvccStore, Response, MAX_TXN_OPERATIONS_DEFAULT,
};
use crate::proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use crate::proto::etcdserverpb::range_request::{SortOrder, SortTarget};
use crate::proto::etcdserverpb::request_op::Request as Operation;
use crate::proto::etcdserverpb::response_op::Response as OperationResponse;
use crate::proto::etcdserverpb::{
    CompactionRequest, Compare, DeleteRangeRequest, DeleteRangeResponse, PutRequest, PutResponse,
    RangeRequest, RangeResponse, RequestOp, TxnRequest, TxnResponse,
};
use crate::proto::etcdserverpb::{LeaseGrantRequest, LeaseRevokeRequest};
use crate::proto::flotillapb::internal_request::Request;
use crate::proto::flotillapb::{InternalRequest, MemberAttributes};
use crate::proto::mvccpb::event::EventType;
use crate::proto::mvccpb::KeyValue;

mod model;

/// A store with a Raft index counter.
struct Fixture {
    store: MvccStore,
    next_index: u64,
    options: MvccOptions,
}

impl Fixture {
    fn new() -> Self {
        Self::with_options(MvccOptions::default())
    }

    fn with_options(options: MvccOptions) -> Self {
        Fixture {
            store: MvccStore::new(options.clone()),
            next_index: 1,
            options,
        }
    }

    /// What a restart does to the store: a new one, restored from the old one's snapshot
    /// image (the runtime then replays the log after the image's applied index).
    fn reopened(self) -> Self {
        let image = self.store.snapshot().unwrap();
        let mut store = MvccStore::new(self.options.clone());
        store.restore(&image).unwrap();
        Fixture {
            store,
            next_index: self.next_index,
            options: self.options,
        }
    }

    fn apply(&mut self, request: Request) -> ApplyResult {
        let index = self.next_index;
        self.next_index += 1;
        let entry = InternalRequest {
            id: index * 10,
            request: Some(request),
        };
        let mut results = self.store.apply_batch(&[(index, entry)]);
        assert_eq!(results.len(), 1);
        results.remove(0)
    }

    fn outcome(&mut self, request: Request) -> Result<Response, MvccError> {
        match self.apply(request).outcome {
            ApplyOutcome::Applied(response) => Ok(response),
            ApplyOutcome::Rejected(error) => Err(error),
            ApplyOutcome::Skipped => panic!("a fresh index was skipped"),
        }
    }

    fn grant(&mut self, id: i64, ttl: i64) {
        self.outcome(Request::LeaseGrant(LeaseGrantRequest { ttl, id }))
            .unwrap();
    }

    fn put(&mut self, key: &str, value: &str) -> PutResponse {
        match self.outcome(Request::Put(put(key, value))).unwrap() {
            Response::Put(response) => response,
            other => panic!("a put answered {other:?}"),
        }
    }

    fn delete(&mut self, key: &str, range_end: &str) -> DeleteRangeResponse {
        let request = DeleteRangeRequest {
            key: key.into(),
            range_end: range_end.into(),
            prev_kv: true,
        };
        match self.outcome(Request::DeleteRange(request)).unwrap() {
            Response::DeleteRange(response) => response,
            other => panic!("a delete answered {other:?}"),
        }
    }

    fn txn(&mut self, request: TxnRequest) -> Result<TxnResponse, MvccError> {
        self.outcome(Request::Txn(request))
            .map(|response| match response {
                Response::Txn(response) => response,
                other => panic!("a txn answered {other:?}"),
            })
    }

    fn compact(&mut self, revision: i64) -> Result<Response, MvccError> {
        self.outcome(Request::Compaction(CompactionRequest {
            revision,
            physical: false,
        }))
    }

    fn range(&self, request: RangeRequest) -> Result<RangeResponse, MvccError> {
        self.store.range(&request)
    }

    fn get(&self, key: &str) -> Option<KeyValue> {
        let mut response = self.range(range(key, "")).unwrap();
        assert!(response.kvs.len() <= 1);
        response.kvs.pop()
    }

    fn get_at(&self, key: &str, revision: i64) -> Result<Option<KeyValue>, MvccError> {
        let request = RangeRequest {
            revision,
            ..range(key, "")
        };
        Ok(self.range(request)?.kvs.pop())
    }

    fn keys(&self, request: RangeRequest) -> Vec<String> {
        let response = self.range(request).unwrap();
        response
            .kvs
            .iter()
            .map(|kv| String::from_utf8(kv.key.clone()).unwrap())
            .collect()
    }
}

fn put(key: &str, value: &str) -> PutRequest {
    PutRequest {
        key: key.into(),
        value: value.into(),
        ..Default::default()
    }
}

fn range(key: &str, range_end: &str) -> RangeRequest {
    RangeRequest {
        key: key.into(),
        range_end: range_end.into(),
        ..Default::default()
    }
}

fn put_operation(key: &str, value: &str) -> RequestOp {
    RequestOp {
        request: Some(Operation::RequestPut(put(key, value))),
    }
}

fn range_operation(key: &str, range_end: &str) -> RequestOp {
    RequestOp {
        request: Some(Operation::RequestRange(range(key, range_end))),
    }
}

fn delete_operation(key: &str, range_end: &str) -> RequestOp {
    RequestOp {
        request: Some(Operation::RequestDeleteRange(DeleteRangeRequest {
            key: key.into(),
            range_end: range_end.into(),
            prev_kv: false,
        })),
    }
}

fn txn_operation(request: TxnRequest) -> RequestOp {
    RequestOp {
        request: Some(Operation::RequestTxn(request)),
    }
}

fn compare(key: &str, result: CompareResult, operand: TargetUnion) -> Compare {
    let target = match operand {
        TargetUnion::Version(_) => CompareTarget::Version,
        TargetUnion::CreateRevision(_) => CompareTarget::Create,
        TargetUnion::ModRevision(_) => CompareTarget::Mod,
        TargetUnion::Value(_) => CompareTarget::Value,
        TargetUnion::Lease(_) => CompareTarget::Lease,
    };
    Compare {
        result: result as i32,
        target: target as i32,
        key: key.into(),
        range_end: Vec::new(),
        target_union: Some(operand),
    }
}

fn value_of(kv: &KeyValue) -> &str {
    std::str::from_utf8(&kv.value).unwrap()
}

// ---------------------------------------------------------------------------------------------
// Revisions and versions

#[test]
fn a_fresh_store_is_at_revision_one_with_nothing_applied() {
    let fixture = Fixture::new();
    assert_eq!(fixture.store.current_revision(), 1);
    assert_eq!(fixture.store.compacted_revision(), 0);
    assert_eq!(fixture.store.applied_index(), 0);
    let response = fixture.range(range("missing", "")).unwrap();
    assert!(response.kvs.is_empty());
    assert_eq!(response.count, 0);
    assert_eq!(response.header.unwrap().revision, 1);
}

#[test]
fn each_put_advances_the_revision_and_the_key_version() {
    let mut fixture = Fixture::new();
    let first = fixture.put("a", "1");
    assert_eq!(first.header.unwrap().revision, 2);
    let kv = fixture.get("a").unwrap();
    assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (2, 2, 1));

    fixture.put("b", "x");
    let second = fixture.put("a", "2");
    assert_eq!(second.header.unwrap().revision, 4);
    let kv = fixture.get("a").unwrap();
    assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (2, 4, 2));
    assert_eq!(value_of(&kv), "2");
    assert_eq!(fixture.store.current_revision(), 4);
}

#[test]
fn a_put_returns_the_previous_key_value_only_when_asked() {
    let mut fixture = Fixture::new();
    fixture.put("a", "1");
    assert!(fixture.put("a", "2").prev_kv.is_none());
    let request = PutRequest {
        prev_kv: true,
        ..put("a", "3")
    };
    let Response::Put(response) = fixture.outcome(Request::Put(request)).unwrap() else {
        panic!("not a put response");
    };
    let previous = response.prev_kv.unwrap();
    assert_eq!(value_of(&previous), "2");
    assert_eq!(previous.version, 2);
}

#[test]
fn delete_resets_the_version_and_recreation_gets_a_new_create_revision() {
    let mut fixture = Fixture::new();
    fixture.put("a", "1"); // 2
    fixture.put("a", "2"); // 3
    let deleted = fixture.delete("a", "");
    assert_eq!(deleted.deleted, 1);
    assert_eq!(deleted.header.unwrap().revision, 4);
    assert_eq!(value_of(&deleted.prev_kvs[0]), "2");
    assert!(fixture.get("a").is_none());

    fixture.put("a", "3"); // 5
    let kv = fixture.get("a").unwrap();
    assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (5, 5, 1));
}

#[test]
fn deleting_nothing_does_not_advance_the_revision() {
    let mut fixture = Fixture::new();
    fixture.put("a", "1");
    let deleted = fixture.delete("zzz", "");
    assert_eq!(deleted.deleted, 0);
    assert_eq!(deleted.header.unwrap().revision, 2);
    assert_eq!(fixture.store.current_revision(), 2);
    // The entry still counts as applied.
    assert_eq!(fixture.store.applied_index(), 2);
}

#[test]
fn delete_range_deletes_every_key_in_the_range_at_one_revision() {
    let mut fixture = Fixture::new();
    for key in ["a", "b", "c", "d"] {
        fixture.put(key, key);
    }
    let deleted = fixture.delete("b", "d");
    assert_eq!(deleted.deleted, 2);
    assert_eq!(fixture.store.current_revision(), 6);
    assert_eq!(fixture.keys(range("a", "\0")), ["a", "d"]);
    let deleted = fixture.delete("a", "\0");
    assert_eq!(deleted.deleted, 2);
    assert_eq!(fixture.keys(range("\0", "\0")), Vec::<String>::new());
}

#[test]
fn applied_entries_report_their_events() {
    let mut fixture = Fixture::with_options(MvccOptions {
        record_events: true,
        ..MvccOptions::default()
    });
    let created = fixture.apply(Request::Put(put("a", "1")));
    assert_eq!(created.request_id, 10);
    assert_eq!(created.events.len(), 1);
    assert_eq!(created.events[0].r#type, EventType::Put as i32);
    assert!(created.events[0].prev_kv.is_none());

    let deleted = fixture.apply(Request::DeleteRange(DeleteRangeRequest {
        key: "a".into(),
        ..Default::default()
    }));
    let event = &deleted.events[0];
    assert_eq!(event.r#type, EventType::Delete as i32);
    assert_eq!(event.kv.as_ref().unwrap().mod_revision, 3);
    assert_eq!(value_of(event.prev_kv.as_ref().unwrap()), "1");
}

// ---------------------------------------------------------------------------------------------
// Ranges

fn abcde() -> Fixture {
    let mut fixture = Fixture::new();
    for (key, value) in [("a", "5"), ("b", "4"), ("c", "3"), ("d", "2"), ("e", "1")] {
        fixture.put(key, value);
    }
    fixture
}

#[test]
fn range_end_selects_one_key_an_interval_a_prefix_or_everything_after_a_key() {
    let mut fixture = abcde();
    fixture.put("ca", "x");
    fixture.put("cb", "y");
    assert_eq!(fixture.keys(range("c", "")), ["c"]);
    assert_eq!(fixture.keys(range("b", "d")), ["b", "c", "ca", "cb"]);
    // A prefix: the client passes the prefix with its last byte incremented.
    assert_eq!(fixture.keys(range("c", "d")), ["c", "ca", "cb"]);
    assert_eq!(fixture.keys(range("cb", "\0")), ["cb", "d", "e"]);
    assert_eq!(fixture.keys(range("\0", "\0")).len(), 7);
    assert!(
        fixture.keys(range("d", "b")).is_empty(),
        "an end before the key is an empty range"
    );
}

#[test]
fn limit_cuts_the_response_sets_more_and_count_is_the_total() {
    let fixture = abcde();
    let response = fixture
        .range(RangeRequest {
            limit: 2,
            ..range("a", "\0")
        })
        .unwrap();
    assert_eq!(response.kvs.len(), 2);
    assert!(response.more);
    assert_eq!(response.count, 5);

    let exact = fixture
        .range(RangeRequest {
            limit: 5,
            ..range("a", "\0")
        })
        .unwrap();
    assert!(!exact.more);
    assert_eq!(exact.kvs.len(), 5);
}

#[test]
fn sort_orders_by_each_target_and_defaults_to_ascending_for_non_key_targets() {
    let mut fixture = abcde();
    fixture.put("a", "6"); // a: version 2, mod 7
    let sorted = |order: SortOrder, target: SortTarget| {
        fixture.keys(RangeRequest {
            sort_order: order as i32,
            sort_target: target as i32,
            ..range("a", "\0")
        })
    };
    assert_eq!(
        sorted(SortOrder::None, SortTarget::Key),
        ["a", "b", "c", "d", "e"]
    );
    assert_eq!(
        sorted(SortOrder::Descend, SortTarget::Key),
        ["e", "d", "c", "b", "a"]
    );
    assert_eq!(
        sorted(SortOrder::Ascend, SortTarget::Value),
        ["e", "d", "c", "b", "a"]
    );
    assert_eq!(
        sorted(SortOrder::None, SortTarget::Value),
        ["e", "d", "c", "b", "a"]
    );
    assert_eq!(
        sorted(SortOrder::Descend, SortTarget::Value),
        ["a", "b", "c", "d", "e"]
    );
    assert_eq!(
        sorted(SortOrder::Descend, SortTarget::Mod),
        ["a", "e", "d", "c", "b"]
    );
    assert_eq!(
        sorted(SortOrder::Ascend, SortTarget::Create),
        ["a", "b", "c", "d", "e"]
    );
    assert_eq!(
        sorted(SortOrder::Descend, SortTarget::Create),
        ["e", "d", "c", "b", "a"]
    );
    // Ties keep key order.
    assert_eq!(
        sorted(SortOrder::Descend, SortTarget::Version),
        ["a", "b", "c", "d", "e"]
    );
    assert_eq!(
        sorted(SortOrder::Ascend, SortTarget::Version),
        ["b", "c", "d", "e", "a"]
    );
}

#[test]
fn sorting_happens_before_the_limit() {
    let fixture = abcde();
    let response = fixture
        .range(RangeRequest {
            limit: 2,
            sort_order: SortOrder::Descend as i32,
            sort_target: SortTarget::Key as i32,
            ..range("a", "\0")
        })
        .unwrap();
    let keys: Vec<_> = response.kvs.iter().map(|kv| kv.key.clone()).collect();
    assert_eq!(keys, [b"e".to_vec(), b"d".to_vec()]);
    assert!(response.more);
}

#[test]
fn an_unknown_sort_option_is_refused() {
    let fixture = abcde();
    let request = RangeRequest {
        sort_order: 7,
        ..range("a", "")
    };
    assert!(matches!(
        fixture.range(request.clone()),
        Err(MvccError::InvalidSortOption)
    ));
    assert!(matches!(
        validate_range(&request),
        Err(MvccError::InvalidSortOption)
    ));
    assert!(matches!(
        validate_range(&range("", "")),
        Err(MvccError::EmptyKey)
    ));
}

#[test]
fn keys_only_drops_values_and_count_only_drops_key_values() {
    let fixture = abcde();
    let keys_only = fixture
        .range(RangeRequest {
            keys_only: true,
            ..range("a", "c")
        })
        .unwrap();
    assert_eq!(keys_only.kvs.len(), 2);
    assert!(keys_only
        .kvs
        .iter()
        .all(|kv| kv.value.is_empty() && kv.version == 1));
    let count_only = fixture
        .range(RangeRequest {
            count_only: true,
            ..range("a", "\0")
        })
        .unwrap();
    assert!(count_only.kvs.is_empty());
    assert_eq!(count_only.count, 5);
    assert!(!count_only.more);
}

#[test]
fn revision_filters_prune_key_values_but_not_the_count() {
    let mut fixture = abcde(); // a..e created at 2..6
    fixture.put("b", "again"); // b: create 3, mod 7
    let filtered = |request: RangeRequest| {
        let response = fixture.range(request).unwrap();
        assert_eq!(response.count, 5);
        response
            .kvs
            .iter()
            .map(|kv| String::from_utf8(kv.key.clone()).unwrap())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        filtered(RangeRequest {
            min_mod_revision: 6,
            ..range("a", "\0")
        }),
        ["b", "e"]
    );
    assert_eq!(
        filtered(RangeRequest {
            max_mod_revision: 4,
            ..range("a", "\0")
        }),
        ["a", "c"]
    );
    assert_eq!(
        filtered(RangeRequest {
            min_create_revision: 5,
            ..range("a", "\0")
        }),
        ["d", "e"]
    );
    assert_eq!(
        filtered(RangeRequest {
            max_create_revision: 3,
            ..range("a", "\0")
        }),
        ["a", "b"]
    );
    let both = RangeRequest {
        min_create_revision: 3,
        max_mod_revision: 5,
        limit: 1,
        ..range("a", "\0")
    };
    let response = fixture.range(both).unwrap();
    assert_eq!(response.kvs.len(), 1);
    assert_eq!(response.kvs[0].key, b"c");
    assert!(response.more, "d also passes the filters");
}

#[test]
fn responses_are_cut_at_the_byte_cap_but_carry_at_least_one_key_value() {
    let mut fixture = Fixture::with_options(MvccOptions {
        max_response_bytes: 250,
        ..MvccOptions::default()
    });
    for key in ["a", "b", "c", "d"] {
        fixture.put(key, &"v".repeat(100));
    }
    let response = fixture.range(range("a", "\0")).unwrap();
    assert_eq!(response.kvs.len(), 2);
    assert!(response.more);
    assert_eq!(response.count, 4);

    fixture.put("big", &"v".repeat(1000));
    let big = fixture.range(range("big", "")).unwrap();
    assert_eq!(big.kvs.len(), 1);
    assert!(!big.more);
}

#[test]
fn reads_at_a_past_revision_see_the_store_as_it_was() {
    let mut fixture = Fixture::new();
    fixture.put("a", "1"); // 2
    fixture.put("b", "1"); // 3
    fixture.put("a", "2"); // 4
    fixture.delete("b", ""); // 5
    fixture.put("c", "1"); // 6

    assert!(fixture.get_at("a", 1).unwrap().is_none());
    assert_eq!(value_of(&fixture.get_at("a", 3).unwrap().unwrap()), "1");
    assert_eq!(fixture.get_at("a", 4).unwrap().unwrap().version, 2);
    assert!(fixture.get_at("b", 5).unwrap().is_none());
    let b_then = fixture.get_at("b", 4).unwrap().unwrap();
    assert_eq!((b_then.create_revision, b_then.mod_revision), (3, 3));

    let at_four = fixture
        .range(RangeRequest {
            revision: 4,
            ..range("a", "\0")
        })
        .unwrap();
    assert_eq!(at_four.count, 2);
    assert_eq!(
        at_four.header.unwrap().revision,
        6,
        "the header carries the current revision"
    );
    let at_five = RangeRequest {
        revision: 5,
        ..range("a", "\0")
    };
    assert_eq!(fixture.keys(at_five), ["a"]);
    let descending = RangeRequest {
        revision: 3,
        sort_order: SortOrder::Descend as i32,
        ..range("a", "\0")
    };
    assert_eq!(fixture.keys(descending), ["b", "a"]);
}

#[test]
fn a_future_revision_is_refused_and_zero_means_current() {
    let mut fixture = Fixture::new();
    fixture.put("a", "1");
    assert!(matches!(
        fixture.get_at("a", 3),
        Err(MvccError::FutureRevision)
    ));
    assert!(fixture.get_at("a", 0).unwrap().is_some());
    assert!(fixture.get_at("a", -4).unwrap().is_some());
}

// ---------------------------------------------------------------------------------------------
// Compaction

#[test]
fn compaction_refuses_old_and_future_revisions() {
    let mut fixture = Fixture::new();
    fixture.put("a", "1");
    fixture.put("a", "2");
    assert!(matches!(fixture.compact(4), Err(MvccError::FutureRevision)));
    assert!(matches!(fixture.compact(0), Err(MvccError::Compacted)));
    fixture.compact(2).unwrap();
    assert!(matches!(fixture.compact(2), Err(MvccError::Compacted)));
    assert!(matches!(fixture.compact(1), Err(MvccError::Compacted)));
    assert_eq!(fixture.store.compacted_revision(), 2);
    fixture.compact(3).unwrap();
    assert_eq!(
        fixture.store.current_revision(),
        3,
        "compaction is not a write"
    );
}

#[test]
fn compaction_removes_history_below_its_revision_only() {
    let mut fixture = Fixture::new();
    fixture.put("a", "1"); // 2
    fixture.put("a", "2"); // 3
    fixture.put("b", "1"); // 4
    fixture.delete("b", ""); // 5
    fixture.put("c", "1"); // 6
    fixture.put("a", "3"); // 7
    let size_before = fixture.store.snapshot().unwrap().len();
    fixture.compact(5).unwrap();

    assert!(matches!(fixture.get_at("a", 4), Err(MvccError::Compacted)));
    // The compacted revision itself stays readable.
    let a_at_five = fixture.get_at("a", 5).unwrap().unwrap();
    assert_eq!(
        (
            value_of(&a_at_five),
            a_at_five.version,
            a_at_five.create_revision
        ),
        ("2", 2, 2)
    );
    assert!(fixture.get_at("b", 5).unwrap().is_none());
    assert_eq!(value_of(&fixture.get_at("a", 6).unwrap().unwrap()), "2");
    assert_eq!(value_of(&fixture.get("a").unwrap()), "3");
    assert_eq!(fixture.keys(range("a", "\0")), ["a", "c"]);
    let size_after = fixture.store.snapshot().unwrap().len();
    assert!(
        size_after < size_before,
        "the removed versions are gone: {size_after} < {size_before}"
    );

    // Recreating a key whose tombstone was compacted starts it afresh.
    fixture.put("b", "2"); // 8
    let b = fixture.get("b").unwrap();
    assert_eq!((b.create_revision, b.version), (8, 1));
    fixture.compact(8).unwrap();
    assert_eq!(fixture.keys(range("a", "\0")), ["a", "b", "c"]);
}

// ---------------------------------------------------------------------------------------------
// Transactions

#[test]
fn compares_on_each_target_with_each_result() {
    let mut fixture = Fixture::new();
    fixture.put("a", "m"); // 2
    fixture.grant(9, 60);
    let lease_put = PutRequest {
        lease: 9,
        ..put("a", "m")
    };
    fixture.outcome(Request::Put(lease_put)).unwrap(); // 3: version 2, create 2, mod 3, lease 9
    let cases: Vec<(TargetUnion, i64)> = vec![
        (TargetUnion::Version(2), 0),
        (TargetUnion::CreateRevision(2), 0),
        (TargetUnion::ModRevision(3), 0),
        (TargetUnion::Lease(9), 0),
        (TargetUnion::Value(b"m".to_vec()), 0),
    ];
    let shifted = |operand: &TargetUnion, by: i64| match operand {
        TargetUnion::Version(value) => TargetUnion::Version(value + by),
        TargetUnion::CreateRevision(value) => TargetUnion::CreateRevision(value + by),
        TargetUnion::ModRevision(value) => TargetUnion::ModRevision(value + by),
        TargetUnion::Lease(value) => TargetUnion::Lease(value + by),
        TargetUnion::Value(_) => TargetUnion::Value(match by {
            -1 => b"l".to_vec(),
            0 => b"m".to_vec(),
            _ => b"n".to_vec(),
        }),
    };
    for (operand, _) in &cases {
        // (result, operand shift, expected): the stored field compared against the operand.
        for (result, by, expected) in [
            (CompareResult::Equal, 0, true),
            (CompareResult::Equal, 1, false),
            (CompareResult::NotEqual, 1, true),
            (CompareResult::NotEqual, 0, false),
            (CompareResult::Greater, -1, true),
            (CompareResult::Greater, 0, false),
            (CompareResult::Less, 1, true),
            (CompareResult::Less, 0, false),
        ] {
            let request = TxnRequest {
                compare: vec![compare("a", result, shifted(operand, by))],
                ..Default::default()
            };
            let response = fixture.txn(request).unwrap();
            assert_eq!(
                response.succeeded, expected,
                "{operand:?} {result:?} shifted by {by}"
            );
        }
    }
}

#[test]
fn compares_on_a_missing_key_use_zero_and_a_value_compare_fails() {
    let mut fixture = Fixture::new();
    let holds = |fixture: &mut Fixture, compare: Compare| {
        fixture
            .txn(TxnRequest {
                compare: vec![compare],
                ..Default::default()
            })
            .unwrap()
            .succeeded
    };
    assert!(holds(
        &mut fixture,
        compare("nope", CompareResult::Equal, TargetUnion::Version(0))
    ));
    assert!(holds(
        &mut fixture,
        compare("nope", CompareResult::Equal, TargetUnion::CreateRevision(0))
    ));
    assert!(!holds(
        &mut fixture,
        compare("nope", CompareResult::Equal, TargetUnion::Value(Vec::new()))
    ));
    assert!(!holds(
        &mut fixture,
        compare(
            "nope",
            CompareResult::NotEqual,
            TargetUnion::Value(b"x".to_vec())
        )
    ));
}

#[test]
fn a_compare_with_range_end_must_hold_for_every_key_in_the_range() {
    let mut fixture = Fixture::new();
    fixture.put("k1", "x");
    fixture.put("k2", "x");
    fixture.put("k3", "y");
    let over = |range_end: &str| Compare {
        range_end: range_end.into(),
        ..compare(
            "k1",
            CompareResult::Equal,
            TargetUnion::Value(b"x".to_vec()),
        )
    };
    let holds = |fixture: &mut Fixture, compare: Compare| {
        fixture
            .txn(TxnRequest {
                compare: vec![compare],
                ..Default::default()
            })
            .unwrap()
            .succeeded
    };
    assert!(holds(&mut fixture, over("k3")));
    assert!(!holds(&mut fixture, over("k4")));
    assert!(!holds(&mut fixture, over("\0")));
}

#[test]
fn a_txn_runs_one_branch_and_its_writes_share_one_revision() {
    let mut fixture = Fixture::new();
    fixture.put("a", "1"); // 2
    let request = |expected: &str| TxnRequest {
        compare: vec![compare(
            "a",
            CompareResult::Equal,
            TargetUnion::Value(expected.into()),
        )],
        success: vec![
            put_operation("b", "yes"),
            put_operation("c", "yes"),
            range_operation("b", "d"),
        ],
        failure: vec![put_operation("b", "no"), range_operation("a", "")],
    };
    let response = fixture.txn(request("1")).unwrap();
    assert!(response.succeeded);
    assert_eq!(response.header.unwrap().revision, 3);
    assert_eq!(response.responses.len(), 3);
    assert!(matches!(
        response.responses[0].response,
        Some(OperationResponse::ResponsePut(_))
    ));
    let Some(OperationResponse::ResponseRange(seen)) = &response.responses[2].response else {
        panic!("the third response is not a range");
    };
    assert_eq!(
        seen.kvs.len(),
        2,
        "a range inside a txn sees the txn's earlier writes"
    );
    let b = fixture.get("b").unwrap();
    let c = fixture.get("c").unwrap();
    assert_eq!((b.mod_revision, c.mod_revision), (3, 3));
    assert_eq!(value_of(&b), "yes");

    let response = fixture.txn(request("other")).unwrap();
    assert!(!response.succeeded);
    assert_eq!(response.responses.len(), 2);
    assert_eq!(value_of(&fixture.get("b").unwrap()), "no");
    assert_eq!(fixture.store.current_revision(), 4);
}

#[test]
fn a_read_only_txn_does_not_advance_the_revision() {
    let mut fixture = Fixture::new();
    fixture.put("a", "1");
    let response = fixture
        .txn(TxnRequest {
            success: vec![range_operation("a", "")],
            ..Default::default()
        })
        .unwrap();
    assert!(response.succeeded, "no compares: success");
    assert_eq!(response.header.unwrap().revision, 2);
    assert_eq!(fixture.store.current_revision(), 2);
}

#[test]
fn a_txn_may_delete_and_put_different_keys() {
    let mut fixture = Fixture::new();
    fixture.put("a", "1");
    fixture.put("b", "1");
    let response = fixture
        .txn(TxnRequest {
            success: vec![
                delete_operation("a", ""),
                put_operation("b", "2"),
                delete_operation("zz", ""),
            ],
            ..Default::default()
        })
        .unwrap();
    let Some(OperationResponse::ResponseDeleteRange(deleted)) = &response.responses[0].response
    else {
        panic!("not a delete response");
    };
    assert_eq!(deleted.deleted, 1);
    assert!(fixture.get("a").is_none());
    assert_eq!(fixture.get("b").unwrap().mod_revision, 4);
    assert_eq!(fixture.store.current_revision(), 4);
}

#[test]
fn nested_txns_take_their_branch_from_the_state_before_the_outer_txn() {
    let mut fixture = Fixture::new();
    fixture.put("flag", "old"); // 2
    let nested = TxnRequest {
        compare: vec![compare(
            "flag",
            CompareResult::Equal,
            TargetUnion::Value(b"old".to_vec()),
        )],
        success: vec![put_operation("seen", "old")],
        failure: vec![put_operation("seen", "new")],
    };
    let outer = TxnRequest {
        success: vec![put_operation("flag", "new"), txn_operation(nested)],
        ..Default::default()
    };
    let response = fixture.txn(outer).unwrap();
    let Some(OperationResponse::ResponseTxn(inner)) = &response.responses[1].response else {
        panic!("not a txn response");
    };
    assert!(inner.succeeded);
    assert_eq!(value_of(&fixture.get("seen").unwrap()), "old");
    assert_eq!(
        fixture.get("seen").unwrap().mod_revision,
        fixture.get("flag").unwrap().mod_revision
    );
}

#[test]
fn validate_txn_rejects_duplicate_keys_as_etcd_does() {
    let check = |request: TxnRequest| validate_txn(&request, MAX_TXN_OPERATIONS_DEFAULT);
    let success = |operations: Vec<RequestOp>| TxnRequest {
        success: operations,
        ..Default::default()
    };
    let duplicate = |result: Result<(), MvccError>| matches!(result, Err(MvccError::DuplicateKey));

    assert!(duplicate(check(success(vec![
        put_operation("a", "1"),
        put_operation("a", "2")
    ]))));
    assert!(duplicate(check(success(vec![
        delete_operation("a", "c"),
        put_operation("b", "2")
    ]))));
    assert!(duplicate(check(success(vec![
        delete_operation("a", "\0"),
        put_operation("z", "2")
    ]))));
    assert!(check(success(vec![
        delete_operation("a", "c"),
        put_operation("c", "2")
    ]))
    .is_ok());
    assert!(check(success(vec![
        delete_operation("a", "c"),
        delete_operation("b", "d")
    ]))
    .is_ok());
    // Branches of one txn never both run.
    let both_branches = TxnRequest {
        success: vec![put_operation("a", "1")],
        failure: vec![put_operation("a", "2")],
        ..Default::default()
    };
    assert!(check(both_branches.clone()).is_ok());
    // ...but inside a nested txn, its puts meet the outer txn's.
    assert!(duplicate(check(success(vec![
        put_operation("a", "0"),
        txn_operation(both_branches.clone())
    ]))));
    assert!(duplicate(check(success(vec![
        delete_operation("a", ""),
        txn_operation(both_branches.clone())
    ]))));
    assert!(check(success(vec![
        put_operation("b", "0"),
        txn_operation(both_branches)
    ]))
    .is_ok());
}

#[test]
fn validate_txn_checks_sizes_and_keys() {
    let many = TxnRequest {
        success: (0..4)
            .map(|index| put_operation(&format!("k{index}"), "v"))
            .collect(),
        ..Default::default()
    };
    assert!(matches!(
        validate_txn(&many, 3),
        Err(MvccError::TooManyOperations)
    ));
    assert!(validate_txn(&many, 4).is_ok());
    let empty_compare = TxnRequest {
        compare: vec![compare("", CompareResult::Equal, TargetUnion::Version(0))],
        ..Default::default()
    };
    assert!(matches!(
        validate_txn(&empty_compare, 8),
        Err(MvccError::EmptyKey)
    ));
    let nested_empty = TxnRequest {
        failure: vec![txn_operation(TxnRequest {
            success: vec![put_operation("", "v")],
            ..Default::default()
        })],
        ..Default::default()
    };
    assert!(matches!(
        validate_txn(&nested_empty, 8),
        Err(MvccError::EmptyKey)
    ));
}

#[test]
fn a_rejected_txn_leaves_the_store_as_it_was_and_later_entries_still_apply() {
    let mut fixture = Fixture::new();
    fixture.put("a", "1"); // 2
    fixture.put("a", "2"); // 3
    fixture.compact(3).unwrap();
    let reads_compacted = TxnRequest {
        success: vec![
            put_operation("b", "1"),
            RequestOp {
                request: Some(Operation::RequestRange(RangeRequest {
                    revision: 2,
                    ..range("a", "")
                })),
            },
        ],
        ..Default::default()
    };
    let duplicate = TxnRequest {
        success: vec![put_operation("c", "1"), put_operation("c", "2")],
        ..Default::default()
    };
    let ignores_missing = TxnRequest {
        success: vec![
            put_operation("d", "1"),
            RequestOp {
                request: Some(Operation::RequestPut(PutRequest {
                    key: "missing".into(),
                    ignore_value: true,
                    ..Default::default()
                })),
            },
        ],
        ..Default::default()
    };
    let entries: Vec<(u64, InternalRequest)> = [
        Request::Txn(reads_compacted),
        Request::Txn(duplicate),
        Request::Txn(ignores_missing),
        Request::Put(put("e", "1")),
    ]
    .into_iter()
    .enumerate()
    .map(|(offset, request)| {
        (
            10 + offset as u64,
            InternalRequest {
                id: offset as u64,
                request: Some(request),
            },
        )
    })
    .collect();
    let results = fixture.store.apply_batch(&entries);
    assert!(matches!(
        results[0].outcome,
        ApplyOutcome::Rejected(MvccError::Compacted)
    ));
    assert!(matches!(
        results[1].outcome,
        ApplyOutcome::Rejected(MvccError::DuplicateKey)
    ));
    assert!(matches!(
        results[2].outcome,
        ApplyOutcome::Rejected(MvccError::KeyNotFound)
    ));
    assert!(results[..3].iter().all(|result| result.events.is_empty()));
    assert!(matches!(
        results[3].outcome,
        ApplyOutcome::Applied(Response::Put(_))
    ));
    assert_eq!(fixture.keys(range("a", "\0")), ["a", "e"]);
    assert_eq!(
        fixture.get("e").unwrap().mod_revision,
        4,
        "rejected entries took no revision"
    );
    assert_eq!(fixture.store.applied_index(), 13);
}

// ---------------------------------------------------------------------------------------------
// Put options

#[test]
fn ignore_value_and_ignore_lease_keep_the_old_ones_and_need_the_key() {
    let mut fixture = Fixture::new();
    let missing = PutRequest {
        key: "a".into(),
        ignore_value: true,
        ..Default::default()
    };
    assert!(matches!(
        fixture.outcome(Request::Put(missing.clone())),
        Err(MvccError::KeyNotFound)
    ));
    assert_eq!(fixture.store.current_revision(), 1);

    fixture.grant(5, 60);
    fixture.grant(6, 60);
    fixture
        .outcome(Request::Put(PutRequest {
            lease: 5,
            ..put("a", "kept")
        }))
        .unwrap();
    fixture
        .outcome(Request::Put(PutRequest {
            lease: 6,
            ..missing
        }))
        .unwrap();
    let kv = fixture.get("a").unwrap();
    assert_eq!((value_of(&kv), kv.lease, kv.version), ("kept", 6, 2));
    let keep_lease = PutRequest {
        ignore_lease: true,
        ..put("a", "new")
    };
    fixture.outcome(Request::Put(keep_lease)).unwrap();
    let kv = fixture.get("a").unwrap();
    assert_eq!((value_of(&kv), kv.lease), ("new", 6));

    let with_value = PutRequest {
        ignore_value: true,
        ..put("a", "v")
    };
    assert!(matches!(
        validate_put(&with_value),
        Err(MvccError::ValueProvided)
    ));
    let with_lease = PutRequest {
        ignore_lease: true,
        lease: 1,
        ..put("a", "v")
    };
    assert!(matches!(
        validate_put(&with_lease),
        Err(MvccError::LeaseProvided)
    ));
    assert!(matches!(
        validate_put(&put("", "v")),
        Err(MvccError::EmptyKey)
    ));
}

// ---------------------------------------------------------------------------------------------
// Errors

#[test]
fn errors_carry_etcds_messages_and_codes() {
    let cases = [
        (
            MvccError::Compacted,
            "etcdserver: mvcc: required revision has been compacted",
            tonic::Code::OutOfRange,
        ),
        (
            MvccError::FutureRevision,
            "etcdserver: mvcc: required revision is a future revision",
            tonic::Code::OutOfRange,
        ),
        (
            MvccError::DuplicateKey,
            "etcdserver: duplicate key given in txn request",
            tonic::Code::InvalidArgument,
        ),
        (
            MvccError::EmptyKey,
            "etcdserver: key is not provided",
            tonic::Code::InvalidArgument,
        ),
        (
            MvccError::KeyNotFound,
            "etcdserver: key not found",
            tonic::Code::InvalidArgument,
        ),
        (
            MvccError::TooManyOperations,
            "etcdserver: too many operations in txn request",
            tonic::Code::InvalidArgument,
        ),
    ];
    for (error, message, code) in cases {
        assert_eq!(error.to_string(), message);
        assert_eq!(error.grpc_code(), code);
        let status = tonic::Status::from(error);
        assert_eq!(status.message(), message);
    }
}

// ---------------------------------------------------------------------------------------------
// Persistence, replay, metadata

#[test]
fn state_and_applied_index_survive_a_restart() {
    let mut fixture = Fixture::new();
    fixture.put("a", "1");
    fixture.put("a", "2");
    fixture.delete("a", "");
    fixture.put("b", "1");
    fixture.compact(3).unwrap();
    let mut fixture = fixture.reopened();
    assert_eq!(fixture.store.current_revision(), 5);
    assert_eq!(fixture.store.compacted_revision(), 3);
    assert_eq!(fixture.store.applied_index(), 5);
    assert!(fixture.get("a").is_none());
    assert_eq!(value_of(&fixture.get_at("a", 3).unwrap().unwrap()), "2");
    assert_eq!(fixture.get("b").unwrap().mod_revision, 5);
    fixture.put("a", "3");
    assert_eq!(fixture.get("a").unwrap().create_revision, 6);
}

#[test]
fn replayed_entries_at_or_below_the_applied_index_are_skipped() {
    let mut fixture = Fixture::new();
    let entries: Vec<(u64, InternalRequest)> = (1..=3)
        .map(|index| {
            (
                index,
                InternalRequest {
                    id: index,
                    request: Some(Request::Put(put("a", "v"))),
                },
            )
        })
        .collect();
    fixture.store.apply_batch(&entries);
    assert_eq!(fixture.get("a").unwrap().version, 3);
    let mut fixture = fixture.reopened();

    let mut replay = entries.clone();
    replay.push((
        4,
        InternalRequest {
            id: 4,
            request: Some(Request::Put(put("a", "v"))),
        },
    ));
    let results = fixture.store.apply_batch(&replay);
    assert!(results[..3]
        .iter()
        .all(|result| matches!(result.outcome, ApplyOutcome::Skipped)));
    assert!(matches!(results[3].outcome, ApplyOutcome::Applied(_)));
    assert_eq!(fixture.get("a").unwrap().version, 4);
    assert_eq!(fixture.store.applied_index(), 4);
    // All skipped: nothing changes.
    let again = fixture.store.apply_batch(&replay);
    assert!(again
        .iter()
        .all(|result| matches!(result.outcome, ApplyOutcome::Skipped)));
    assert_eq!(fixture.get("a").unwrap().version, 4);
}

#[test]
fn empty_entries_and_recorded_indexes_advance_the_applied_index_only() {
    let mut fixture = Fixture::new();
    let results = fixture
        .store
        .apply_batch(&[(1, InternalRequest::default())]);
    assert!(matches!(
        results[0].outcome,
        ApplyOutcome::Applied(Response::Empty)
    ));
    fixture.store.record_applied_index(5);
    assert_eq!(fixture.store.applied_index(), 5);
    assert_eq!(fixture.store.current_revision(), 1);
    fixture.store.record_applied_index(3);
    assert_eq!(
        fixture.store.applied_index(),
        5,
        "an old index does not move it back"
    );
}

#[test]
fn metadata_is_replaced_by_name_and_carried_by_snapshots() {
    let mut fixture = Fixture::new();
    fixture.store.set_metadata("initial-members", b"1 2 3");
    assert_eq!(fixture.store.metadata("initial-members").unwrap(), b"1 2 3");
    fixture.store.set_metadata("initial-members", b"1 2");
    fixture.put("a", "1");
    let fixture = fixture.reopened();
    assert_eq!(fixture.store.metadata("initial-members").unwrap(), b"1 2");
    assert_eq!(fixture.store.metadata("other"), None);
}

#[test]
fn member_attributes_are_applied_and_replaced_by_id() {
    let mut fixture = Fixture::new();
    let member = MemberAttributes {
        id: 7,
        name: "seven".into(),
        peer_urls: vec!["http://127.0.0.1:2380".into()],
        ..Default::default()
    };
    assert!(matches!(
        fixture.outcome(Request::Member(member.clone())),
        Ok(Response::Member)
    ));
    fixture
        .outcome(Request::Member(MemberAttributes {
            id: 3,
            ..member.clone()
        }))
        .unwrap();
    let removed = MemberAttributes {
        removed: true,
        ..member.clone()
    };
    fixture.outcome(Request::Member(removed.clone())).unwrap();
    let members = fixture.store.members();
    assert_eq!(members.len(), 2);
    assert_eq!(members[0].id, 3);
    assert_eq!(members[1], removed);
    assert_eq!(
        fixture.store.current_revision(),
        1,
        "members are not key-value writes"
    );
}

#[test]
fn a_reader_sees_committed_batches() {
    let mut fixture = Fixture::new();
    let reader = fixture.store.reader();
    fixture.put("a", "1");
    let handle = std::thread::spawn(move || reader.range(&range("a", "")).unwrap());
    let response = handle.join().unwrap();
    assert_eq!(response.kvs.len(), 1);
    assert_eq!(fixture.store.reader().current_revision(), 2);
}

// ---------------------------------------------------------------------------------------------
// Snapshots

fn populated() -> Fixture {
    let mut fixture = Fixture::new();
    fixture.put("a", "1"); // 2
    fixture.put("b", "1"); // 3
    fixture.put("a", "2"); // 4
    fixture.delete("b", ""); // 5
    fixture.put("c", "1"); // 6
    fixture.compact(3).unwrap();
    fixture.put("b", "2"); // 7
    fixture
        .outcome(Request::Member(MemberAttributes {
            id: 1,
            name: "one".into(),
            ..Default::default()
        }))
        .unwrap();
    fixture.store.set_metadata("raft_configuration", b"1");
    fixture.store.record_applied_index(20);
    fixture
}

fn every_read(fixture: &Fixture) -> Vec<Result<RangeResponse, String>> {
    (0..=9)
        .map(|revision| {
            fixture
                .range(RangeRequest {
                    revision,
                    ..range("\0", "\0")
                })
                .map_err(|error| error.to_string())
        })
        .collect()
}

#[test]
fn a_snapshot_restores_the_same_state_elsewhere() {
    let source = populated();
    let image = source.store.snapshot().unwrap();
    let mut target = Fixture::new();
    target.put("only-here", "x");
    target.store.restore(&image).unwrap();

    assert_eq!(target.store.applied_index(), 20);
    assert_eq!(target.store.current_revision(), 7);
    assert_eq!(target.store.compacted_revision(), 3);
    assert_eq!(every_read(&target), every_read(&source));
    assert!(target.get("only-here").is_none());
    assert_eq!(target.store.members(), source.store.members());
    assert_eq!(target.store.metadata("raft_configuration").unwrap(), b"1");
    assert_eq!(
        target.store.snapshot().unwrap(),
        image,
        "the image is a function of the state"
    );

    // The restored store carries on where the source would.
    target.next_index = 21;
    target.put("a", "3");
    let a = target.get("a").unwrap();
    assert_eq!((a.mod_revision, a.version, a.create_revision), (8, 3, 2));
    let target = target.reopened();
    assert_eq!(target.store.applied_index(), 21);
}

#[test]
fn a_damaged_image_is_refused_and_the_store_is_unchanged() {
    let source = populated();
    let image = source.store.snapshot().unwrap();
    let mut target = Fixture::new();
    target.put("mine", "x");
    for position in [0, 9, image.len() / 2, image.len() - 1] {
        let mut damaged = image.to_vec();
        damaged[position] ^= 0x40;
        assert!(
            matches!(target.store.restore(&damaged), Err(MvccError::Corrupt(_))),
            "flip at {position}"
        );
    }
    assert!(matches!(
        target.store.restore(&image[..image.len() - 3]),
        Err(MvccError::Corrupt(_))
    ));
    assert!(matches!(
        target.store.restore(&[]),
        Err(MvccError::Corrupt(_))
    ));
    assert_eq!(value_of(&target.get("mine").unwrap()), "x");
    assert_eq!(target.store.applied_index(), 1);
}

#[test]
fn changes_replay_history_from_a_revision_with_previous_values() {
    let mut fixture = Fixture::new();
    fixture.put("a", "1"); // 2
    fixture.put("b", "1"); // 3
    fixture.put("a", "2"); // 4
    fixture.delete("a", ""); // 5
    fixture
        .txn(TxnRequest {
            success: vec![put_operation("a", "3"), put_operation("c", "1")],
            ..Default::default()
        })
        .unwrap(); // 6
    let reader = fixture.store.reader();

    let (events, next) = reader.changes(b"a", b"", 3, 100).unwrap();
    assert_eq!(next, 7);
    let summary: Vec<_> = events
        .iter()
        .map(|event| {
            let kv = event.kv.as_ref().unwrap();
            let previous = event
                .prev_kv
                .as_ref()
                .map(|previous| value_of(previous).to_string());
            (
                event.r#type,
                kv.mod_revision,
                value_of(kv).to_string(),
                previous,
            )
        })
        .collect();
    let put = EventType::Put as i32;
    let delete = EventType::Delete as i32;
    assert_eq!(
        summary,
        [
            (put, 4, "2".to_string(), Some("1".to_string())),
            (delete, 5, String::new(), Some("2".to_string())),
            (put, 6, "3".to_string(), None),
        ]
    );

    // A limit stops at a revision boundary, never inside a transaction.
    let (events, next) = reader.changes(b"a", b"\0", 5, 2).unwrap();
    assert_eq!(
        events.len(),
        3,
        "the delete at 5 and both writes of the txn at 6"
    );
    assert_eq!(next, 7);
    let (events, next) = reader.changes(b"a", b"\0", 2, 1).unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(next, 3);

    fixture.compact(4).unwrap();
    assert!(matches!(
        reader.changes(b"a", b"", 3, 10),
        Err(MvccError::Compacted)
    ));
    assert_eq!(reader.changes(b"a", b"", 4, 10).unwrap().0.len(), 3);
}

/// The recent writes answer a caught-up watcher's question exactly as a search of every key
/// of its range does: a store restored from a snapshot (which knows no recent writes from
/// before the image) and the original give the same changes from every revision, for every
/// range, whichever way each finds them.
#[test]
fn changes_from_the_recent_writes_equal_those_found_by_searching_the_keys() {
    let mut original = Fixture::new();
    let keys = ["a", "ab", "b", "ba", "c"];
    let mut step = 0;
    let write = |fixture: &mut Fixture, step: usize| match step % 4 {
        0 | 1 => {
            fixture.put(keys[step % keys.len()], &step.to_string());
        }
        2 => {
            fixture.delete(keys[(step / 2) % keys.len()], "");
        }
        _ => {
            fixture
                .txn(TxnRequest {
                    success: vec![
                        put_operation(keys[(step + 1) % keys.len()], "t"),
                        put_operation(keys[(step + 3) % keys.len()], "u"),
                    ],
                    ..Default::default()
                })
                .unwrap();
        }
    };
    for _ in 0..30 {
        write(&mut original, step);
        step += 1;
    }
    let image = original.store.snapshot().unwrap();
    let mut restored = Fixture::new();
    restored.store.restore(&image).unwrap();
    restored.next_index = original.next_index;
    for _ in 0..30 {
        write(&mut original, step);
        write(&mut restored, step);
        step += 1;
    }
    let current = original.store.current_revision();
    assert_eq!(restored.store.current_revision(), current);
    let (original, restored) = (original.store.reader(), restored.store.reader());
    for (key, range_end) in [("a", ""), ("a", "b"), ("b", "\0"), ("", "\0"), ("ab", "c")] {
        for start in 1..=current + 1 {
            let expected = original.changes(key.as_bytes(), range_end.as_bytes(), start, 1000);
            let found = restored.changes(key.as_bytes(), range_end.as_bytes(), start, 1000);
            assert_eq!(
                found.unwrap(),
                expected.unwrap(),
                "{key:?}..{range_end:?} from {start}"
            );
        }
    }
}

/// Past its bound the store forgets its oldest recent writes, and a watcher that asks from
/// before them is answered by searching the keys, with nothing missing.
#[test]
fn changes_from_before_the_remembered_writes_are_still_complete() {
    let mut fixture = Fixture::new();
    let writes = super::schema::RECENT_CHANGES_MAX + 10;
    for number in 0..writes {
        fixture.put(if number % 2 == 0 { "even" } else { "odd" }, "v");
    }
    let reader = fixture.store.reader();
    let (events, next) = reader.changes(b"even", b"", 2, usize::MAX).unwrap();
    assert_eq!(events.len(), writes.div_ceil(2));
    assert_eq!(next, fixture.store.current_revision() + 1);
    let (recent, _) = reader
        .changes(
            b"odd",
            b"",
            fixture.store.current_revision() - 3,
            usize::MAX,
        )
        .unwrap();
    assert_eq!(recent.len(), 2);
}

/// Leases: a put names an existing one or fails; a grant of an id in use fails; a revoke
/// deletes every key attached, all at one revision, and the lease goes; leases survive a
/// snapshot.
#[test]
fn leases_are_granted_attached_revoked_with_their_keys_and_kept_in_snapshots() {
    let mut fixture = Fixture::new();
    let with_lease = |key: &str, lease: i64| PutRequest {
        lease,
        ..put(key, "v")
    };
    assert!(matches!(
        fixture.outcome(Request::Put(with_lease("a", 7))),
        Err(MvccError::LeaseNotFound)
    ));
    fixture.grant(7, 30);
    assert!(matches!(
        fixture.outcome(Request::LeaseGrant(LeaseGrantRequest { ttl: 5, id: 7 })),
        Err(MvccError::LeaseExists)
    ));
    fixture.outcome(Request::Put(with_lease("a", 7))).unwrap();
    fixture.outcome(Request::Put(with_lease("b", 7))).unwrap();
    fixture.put("c", "free");
    let reader = fixture.store.reader();
    assert_eq!(reader.leases(), [(7, 30)]);
    assert_eq!(reader.leases_remaining(), [(7, 30)]);
    assert_eq!(reader.lease_keys(7), [b"a".to_vec(), b"b".to_vec()]);
    // A checkpoint of its remaining TTL (one of a missing lease is ignored).
    let checkpoint = |id: i64, remaining_ttl: i64| crate::proto::flotillapb::LeaseCheckpoint {
        id,
        remaining_ttl,
    };
    fixture
        .outcome(Request::LeaseCheckpoints(
            crate::proto::flotillapb::LeaseCheckpoints {
                checkpoints: vec![checkpoint(7, 12), checkpoint(8, 5)],
            },
        ))
        .unwrap();
    assert_eq!(reader.leases_remaining(), [(7, 12)]);
    assert!(reader.lease_checkpointed(7));

    let mut fixture = fixture.reopened();
    let reader = fixture.store.reader();
    assert_eq!(reader.leases(), [(7, 30)]);
    assert_eq!(reader.leases_remaining(), [(7, 12)], "kept in the snapshot");
    let before = fixture.store.current_revision();
    let revoked = fixture.apply(Request::LeaseRevoke(LeaseRevokeRequest { id: 7 }));
    assert!(matches!(
        revoked.outcome,
        ApplyOutcome::Applied(Response::LeaseRevoke(_))
    ));
    assert_eq!(fixture.store.current_revision(), before + 1);
    assert!(fixture.get("a").is_none());
    assert!(fixture.get("b").is_none());
    assert!(fixture.get("c").is_some());
    assert!(reader.leases().is_empty());
    assert!(matches!(
        fixture.outcome(Request::LeaseRevoke(LeaseRevokeRequest { id: 7 })),
        Err(MvccError::LeaseNotFound)
    ));
    let (events, _) = reader.changes(b"a", b"\0", before + 1, 10).unwrap();
    assert_eq!(events.len(), 2);
    assert!(events
        .iter()
        .all(|event| event.r#type == EventType::Delete as i32
            && event.kv.as_ref().unwrap().mod_revision == before + 1));
}

#[test]
fn defragmenting_changes_no_data_and_alarms_survive_a_restart() {
    use crate::proto::etcdserverpb::{alarm_request::AlarmAction, AlarmRequest, AlarmType};
    let mut fixture = Fixture::new();
    for number in 0..50 {
        fixture.put(&format!("key{}", number % 7), &format!("value {number}"));
    }
    fixture.delete("key3", "");
    fixture.compact(40).unwrap();
    let before = fixture.store.hash_kv(0).unwrap();
    let image_before = fixture.store.snapshot().unwrap();
    assert!(fixture.store.reader().defragment() > 0);
    assert_eq!(fixture.store.hash_kv(0).unwrap(), before);
    assert_eq!(fixture.store.snapshot().unwrap(), image_before);

    let raise = AlarmRequest {
        action: AlarmAction::Activate as i32,
        member_id: 7,
        alarm: AlarmType::Nospace as i32,
    };
    match fixture.outcome(Request::Alarm(raise)).unwrap() {
        Response::Alarm(response) => assert_eq!(response.alarms.len(), 1),
        other => panic!("an alarm answered {other:?}"),
    }
    // Raising it again changes nothing, and says so.
    match fixture.outcome(Request::Alarm(raise)).unwrap() {
        Response::Alarm(response) => assert!(response.alarms.is_empty()),
        other => panic!("an alarm answered {other:?}"),
    }
    let mut fixture = fixture.reopened();
    assert_eq!(
        fixture.store.reader().alarms(),
        [(7, AlarmType::Nospace as i32)]
    );
    let clear = AlarmRequest {
        action: AlarmAction::Deactivate as i32,
        ..raise
    };
    fixture.outcome(Request::Alarm(clear)).unwrap();
    assert!(fixture.store.reader().alarms().is_empty());
}
