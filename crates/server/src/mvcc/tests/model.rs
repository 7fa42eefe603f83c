//! The store against a deliberately simple model: a map from key to every version it ever
//! had, scanned linearly. Random sequences of batched writes, compactions, restarts and reads
//! at random revisions must give the same answers from both.

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::{range, Fixture};
use crate::mvcc::{ApplyOutcome, MvccError};
use crate::proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use crate::proto::etcdserverpb::request_op::Request as Operation;
use crate::proto::etcdserverpb::{
    CompactionRequest, Compare, DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest,
};
use crate::proto::flotillapb::internal_request::Request;
use crate::proto::flotillapb::InternalRequest;
use crate::proto::mvccpb::KeyValue;

const KEYS: [&str; 6] = ["a", "ab", "b", "c", "d", "e"];

/// One key's versions: (revision, value, or None for a delete).
type Versions = Vec<(i64, Option<Vec<u8>>)>;

/// Every version of every key.
#[derive(Default)]
struct Model {
    history: BTreeMap<Vec<u8>, Versions>,
    current_revision: i64,
    compacted_revision: i64,
}

impl Model {
    fn new() -> Self {
        Model {
            current_revision: 1,
            ..Default::default()
        }
    }

    fn key_value_at(&self, key: &[u8], revision: i64) -> Option<KeyValue> {
        let versions: Vec<_> = self
            .history
            .get(key)?
            .iter()
            .filter(|(at, _)| *at <= revision)
            .collect();
        let (mod_revision, value) = versions.last()?;
        let value = value.clone()?;
        // The versions since the last delete, this one included.
        let since_delete: Vec<_> = versions
            .iter()
            .rev()
            .take_while(|(_, value)| value.is_some())
            .collect();
        Some(KeyValue {
            key: key.to_vec(),
            create_revision: since_delete.last().unwrap().0,
            mod_revision: *mod_revision,
            version: since_delete.len() as i64,
            value,
            lease: 0,
        })
    }

    fn in_range(key: &[u8], start: &[u8], end: &[u8]) -> bool {
        match end {
            [] => key == start,
            [0] => key >= start,
            end => key >= start && key < end,
        }
    }

    fn read(&self, start: &[u8], end: &[u8], revision: i64) -> Result<Vec<KeyValue>, String> {
        let revision = if revision <= 0 {
            self.current_revision
        } else {
            revision
        };
        if revision > self.current_revision {
            return Err(MvccError::FutureRevision.to_string());
        }
        if revision < self.compacted_revision {
            return Err(MvccError::Compacted.to_string());
        }
        Ok(self
            .history
            .keys()
            .filter(|key| Self::in_range(key, start, end))
            .filter_map(|key| self.key_value_at(key, revision))
            .collect())
    }

    fn put(&mut self, key: &[u8], value: &[u8], revision: i64) {
        self.history
            .entry(key.to_vec())
            .or_default()
            .push((revision, Some(value.to_vec())));
    }

    fn delete(&mut self, start: &[u8], end: &[u8], revision: i64) -> usize {
        let doomed: Vec<Vec<u8>> = self
            .read(start, end, 0)
            .unwrap()
            .into_iter()
            .map(|key_value| key_value.key)
            .collect();
        for key in &doomed {
            self.history.get_mut(key).unwrap().push((revision, None));
        }
        doomed.len()
    }

    fn apply(&mut self, write: &Write) {
        let next = self.current_revision + 1;
        let wrote = match write {
            Write::Put { key, value } => {
                self.put(KEYS[*key].as_bytes(), &[*value], next);
                true
            }
            Write::Delete { key, end } => {
                self.delete(KEYS[*key].as_bytes(), &end_bytes(*end), next) > 0
            }
            Write::Compact { back } => {
                let target = self.current_revision - back;
                if target > self.compacted_revision && target <= self.current_revision {
                    self.compacted_revision = target;
                }
                false
            }
            Write::Txn {
                compared,
                version,
                put_key,
                deleted,
            } => {
                let current = self.key_value_at(KEYS[*compared].as_bytes(), self.current_revision);
                if current.map_or(0, |key_value| key_value.version) == *version {
                    self.put(KEYS[*put_key].as_bytes(), b"txn", next);
                    self.delete(KEYS[*deleted].as_bytes(), b"", next);
                    true
                } else {
                    self.delete(KEYS[*deleted].as_bytes(), b"", next) > 0
                }
            }
        };
        if wrote {
            self.current_revision = next;
        }
    }
}

/// `end` chooses a range end: 0 for a single key, 1 for "\0", else a key.
fn end_bytes(end: usize) -> Vec<u8> {
    match end {
        0 => Vec::new(),
        1 => vec![0],
        other => KEYS[other % KEYS.len()].as_bytes().to_vec(),
    }
}

#[derive(Clone, Debug)]
enum Write {
    Put {
        key: usize,
        value: u8,
    },
    Delete {
        key: usize,
        end: usize,
    },
    /// Compacts at `back` revisions below the current one.
    Compact {
        back: i64,
    },
    /// If `compared` has version `version`: put `put_key` and delete `deleted` (skipped when
    /// they are one key, which etcd refuses); else delete `deleted`.
    Txn {
        compared: usize,
        version: i64,
        put_key: usize,
        deleted: usize,
    },
}

impl Write {
    fn request(&self, current_revision: i64) -> Request {
        match self {
            Write::Put { key, value } => Request::Put(PutRequest {
                key: KEYS[*key].into(),
                value: vec![*value],
                ..Default::default()
            }),
            Write::Delete { key, end } => Request::DeleteRange(DeleteRangeRequest {
                key: KEYS[*key].into(),
                range_end: end_bytes(*end),
                prev_kv: false,
            }),
            Write::Compact { back } => Request::Compaction(CompactionRequest {
                revision: current_revision - back,
                physical: false,
            }),
            Write::Txn {
                compared,
                version,
                put_key,
                deleted,
            } => {
                let delete = RequestOp {
                    request: Some(Operation::RequestDeleteRange(DeleteRangeRequest {
                        key: KEYS[*deleted].into(),
                        ..Default::default()
                    })),
                };
                let put = RequestOp {
                    request: Some(Operation::RequestPut(PutRequest {
                        key: KEYS[*put_key].into(),
                        value: b"txn".to_vec(),
                        ..Default::default()
                    })),
                };
                Request::Txn(TxnRequest {
                    compare: vec![Compare {
                        result: CompareResult::Equal as i32,
                        target: CompareTarget::Version as i32,
                        key: KEYS[*compared].into(),
                        range_end: Vec::new(),
                        target_union: Some(TargetUnion::Version(*version)),
                    }],
                    success: vec![put, delete.clone()],
                    failure: vec![delete],
                })
            }
        }
    }
}

#[derive(Clone, Debug)]
enum Step {
    Batch(Vec<Write>),
    Read { key: usize, end: usize, back: i64 },
    Reopen,
}

fn write_strategy() -> impl Strategy<Value = Write> {
    prop_oneof![
        5 => (0..KEYS.len(), any::<u8>()).prop_map(|(key, value)| Write::Put { key, value }),
        2 => (0..KEYS.len(), 0..8usize).prop_map(|(key, end)| Write::Delete { key, end }),
        1 => (-1..6i64).prop_map(|back| Write::Compact { back }),
        2 => (0..KEYS.len(), 0..3i64, 0..KEYS.len(), 0..KEYS.len()).prop_filter_map(
            "a txn may not put and delete one key",
            |(compared, version, put_key, deleted)| {
                (put_key != deleted).then_some(Write::Txn { compared, version, put_key, deleted })
            }
        ),
    ]
}

fn step_strategy() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => proptest::collection::vec(write_strategy(), 1..5).prop_map(Step::Batch),
        4 => (0..KEYS.len(), 0..8usize, -2..8i64).prop_map(|(key, end, back)| Step::Read { key, end, back }),
        1 => Just(Step::Reopen),
    ]
}

fn store_read(fixture: &Fixture, request: RangeRequest) -> Result<Vec<KeyValue>, String> {
    fixture
        .range(request)
        .map(|response| response.kvs)
        .map_err(|error| error.to_string())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 40, ..ProptestConfig::default() })]

    #[test]
    fn the_store_answers_as_the_model(steps in proptest::collection::vec(step_strategy(), 1..40)) {
        let mut fixture = Fixture::new();
        let mut model = Model::new();
        for step in &steps {
            match step {
                Step::Batch(writes) => {
                    // The request is built from the revision before the batch, so compaction
                    // targets are computed by the model at the same point.
                    let mut entries = Vec::new();
                    let mut expected_revision = model.current_revision;
                    for write in writes {
                        let index = fixture.next_index;
                        fixture.next_index += 1;
                        entries.push((index, InternalRequest { id: index, request: Some(write.request(expected_revision)) }));
                        model.apply(write);
                        expected_revision = model.current_revision;
                    }
                    let results = fixture.store.apply_batch(&entries);
                    prop_assert!(results.iter().all(|result| !matches!(result.outcome, ApplyOutcome::Skipped)));
                }
                Step::Read { key, end, back } => {
                    let revision = model.current_revision - back;
                    let request = RangeRequest { revision, ..range(KEYS[*key], "") };
                    let request = RangeRequest { range_end: end_bytes(*end), ..request };
                    prop_assert_eq!(
                        store_read(&fixture, request.clone()),
                        model.read(&request.key, &request.range_end, revision)
                    );
                }
                Step::Reopen => fixture = fixture.reopened(),
            }
            prop_assert_eq!(fixture.store.current_revision(), model.current_revision);
            prop_assert_eq!(fixture.store.compacted_revision(), model.compacted_revision);
        }
        for revision in 0..=model.current_revision + 1 {
            let request = RangeRequest { revision, ..range("\0", "\0") };
            prop_assert_eq!(store_read(&fixture, request), model.read(b"\0", b"\0", revision));
        }
    }
}
