//! Reads: ranges and transaction compares over the store's state, either as a reader sees it
//! or inside the batch being applied (so that a range inside a transaction sees that
//! transaction's earlier writes, as in etcd).

use std::cmp::Ordering;

use prost::Message;

use super::error::MvccError;
use super::schema::{KeyRange, State, Version};
use crate::proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use crate::proto::etcdserverpb::range_request::{SortOrder, SortTarget};
use crate::proto::etcdserverpb::{Compare, RangeRequest, RangeResponse, ResponseHeader};
use crate::proto::mvccpb::KeyValue;

/// Bytes counted per key-value on top of its encoded length: the field tag and length prefix
/// of the repeated field in `RangeResponse`.
const KEY_VALUE_FRAMING_BYTES: usize = 6;

/// A key and the version of it a read found.
pub(crate) type Found<'t> = (&'t [u8], &'t Version);

/// The store as a read sees it: its state and its revision counters.
pub(crate) struct View<'t> {
    /// The state.
    pub state: &'t State,
    /// The newest revision visible here (inside a batch, including the entry's writes).
    pub current_revision: i64,
    /// Reads below this revision fail.
    pub compacted_revision: i64,
}

impl<'t> View<'t> {
    /// The state as a reader sees it, at its counters.
    pub(crate) fn of(state: &'t State) -> Self {
        View {
            state,
            current_revision: state.current_revision,
            compacted_revision: state.compacted_revision,
        }
    }

    /// The revision a request reads at: its own, or the current one for `requested <= 0`.
    pub(crate) fn resolve_revision(&self, requested: i64) -> Result<i64, MvccError> {
        if requested <= 0 {
            return Ok(self.current_revision);
        }
        if requested > self.current_revision {
            return Err(MvccError::FutureRevision);
        }
        if requested < self.compacted_revision {
            return Err(MvccError::Compacted);
        }
        Ok(requested)
    }

    /// The keys in `range` that exist at `revision`, in key order, each with its version
    /// then.
    pub(crate) fn keys_at(&self, range: KeyRange<'_>, revision: i64) -> Vec<Found<'t>> {
        if range.is_empty() {
            return Vec::new();
        }
        let mut found = Vec::new();
        for (key, versions) in self.state.keys.range::<[u8], _>(range.bounds()) {
            if let Some(version) = version_at(versions, revision) {
                found.push((key.as_slice(), version));
            }
        }
        found
    }

    /// The key's current key-value, if it exists.
    pub(crate) fn current(&self, key: &[u8]) -> Option<KeyValue> {
        let versions = self.state.keys.get(key)?;
        version_at(versions, self.current_revision).map(|version| key_value(key, version))
    }

    /// etcd's Range: the keys at the requested revision, filtered by the revision bounds,
    /// sorted, then cut to `limit` and to `max_response_bytes` (at least one key-value is
    /// returned if any matches, so a client paging with the last key always progresses).
    /// `count` is the number of keys in the range before the revision filters, as etcd's.
    pub(crate) fn range(
        &self,
        request: &RangeRequest,
        max_response_bytes: usize,
    ) -> Result<RangeResponse, MvccError> {
        let sort_order =
            SortOrder::try_from(request.sort_order).map_err(|_| MvccError::InvalidSortOption)?;
        let sort_target =
            SortTarget::try_from(request.sort_target).map_err(|_| MvccError::InvalidSortOption)?;
        let revision = self.resolve_revision(request.revision)?;
        let candidates = self.keys_at(KeyRange::new(&request.key, &request.range_end), revision);
        let count = i64::try_from(candidates.len()).expect("a key count fits in i64");
        let header = Some(ResponseHeader {
            revision: self.current_revision,
            ..Default::default()
        });
        if request.count_only {
            return Ok(RangeResponse {
                header,
                kvs: Vec::new(),
                more: false,
                count,
            });
        }

        // etcd sorts ascending when a target other than the key is named without an order;
        // key order, ascending, is the order the keys are already in.
        let sort_order = match (sort_order, sort_target) {
            (SortOrder::None, SortTarget::Key) | (SortOrder::Ascend, SortTarget::Key) => {
                SortOrder::None
            }
            (SortOrder::None, _) => SortOrder::Ascend,
            (order, _) => order,
        };
        let limit = usize::try_from(request.limit)
            .ok()
            .filter(|limit| *limit > 0);
        let limit = limit.unwrap_or(usize::MAX);
        let filtered = has_revision_filters(request);

        let mut budget = ResponseBudget {
            limit,
            remaining_bytes: max_response_bytes,
            kvs: Vec::new(),
        };
        let more = if !filtered && sort_target == SortTarget::Key {
            // Key order without filters: load only the key-values that are returned.
            let ordered: Box<dyn Iterator<Item = &Found<'_>>> = if sort_order == SortOrder::Descend
            {
                Box::new(candidates.iter().rev())
            } else {
                Box::new(candidates.iter())
            };
            let mut full = false;
            for (key, found) in ordered {
                if !budget.admit(key_value(key, found), request.keys_only) {
                    full = true;
                    break;
                }
            }
            full
        } else {
            let mut all = Vec::with_capacity(candidates.len());
            for (key, found) in &candidates {
                let key_value = key_value(key, found);
                if passes_revision_filters(request, &key_value) {
                    all.push(key_value);
                }
            }
            if sort_order != SortOrder::None {
                all.sort_by(|left, right| {
                    let ordering = compare_by_target(sort_target, left, right);
                    if sort_order == SortOrder::Descend {
                        ordering.reverse()
                    } else {
                        ordering
                    }
                });
            }
            let total = all.len();
            for key_value in all {
                if !budget.admit(key_value, request.keys_only) {
                    break;
                }
            }
            budget.kvs.len() < total
        };
        Ok(RangeResponse {
            header,
            kvs: budget.kvs,
            more,
            count,
        })
    }

    /// etcd's compare: true if every key in the compare's range satisfies it. With no key in
    /// the range, a value compare fails (a missing value cannot be told from an empty one)
    /// and other targets compare against zero.
    pub(crate) fn compare(&self, compare: &Compare) -> bool {
        let (Ok(target), Ok(result)) = (
            CompareTarget::try_from(compare.target),
            CompareResult::try_from(compare.result),
        ) else {
            // An unknown target or result cannot hold.
            return false;
        };
        let keys = self.keys_at(
            KeyRange::new(&compare.key, &compare.range_end),
            self.current_revision,
        );
        if keys.is_empty() {
            if target == CompareTarget::Value {
                return false;
            }
            return compare_key_value(
                target,
                result,
                compare.target_union.as_ref(),
                &KeyValue::default(),
            );
        }
        for (key, found) in &keys {
            let key_value = key_value(key, found);
            if !compare_key_value(target, result, compare.target_union.as_ref(), &key_value) {
                return false;
            }
        }
        true
    }
}

/// The newest version at or below `revision`, unless that is a tombstone (the key did not
/// exist then). Versions are in increasing revision order.
pub(crate) fn version_at(versions: &[Version], revision: i64) -> Option<&Version> {
    let newer_from = versions.partition_point(|version| version.revision.main <= revision);
    let version = versions[..newer_from].last()?;
    (!version.is_tombstone()).then_some(version)
}

/// The key-value a client sees for one stored version.
pub(crate) fn key_value(key: &[u8], version: &Version) -> KeyValue {
    KeyValue {
        key: key.to_vec(),
        create_revision: version.record.create_revision,
        mod_revision: version.revision.main,
        version: version.record.version,
        value: version.record.value.to_vec(),
        lease: version.record.lease,
    }
}

/// Collects key-values while both the count limit and the byte cap allow.
struct ResponseBudget {
    limit: usize,
    remaining_bytes: usize,
    kvs: Vec<KeyValue>,
}

impl ResponseBudget {
    /// Adds the key-value if it fits; false if it did not (the response is full).
    fn admit(&mut self, mut key_value: KeyValue, keys_only: bool) -> bool {
        if self.kvs.len() >= self.limit {
            return false;
        }
        if keys_only {
            key_value.value = Vec::new();
        }
        let size_bytes = key_value.encoded_len() + KEY_VALUE_FRAMING_BYTES;
        if size_bytes > self.remaining_bytes && !self.kvs.is_empty() {
            return false;
        }
        self.remaining_bytes = self.remaining_bytes.saturating_sub(size_bytes);
        self.kvs.push(key_value);
        true
    }
}

fn has_revision_filters(request: &RangeRequest) -> bool {
    request.min_mod_revision != 0
        || request.max_mod_revision != 0
        || request.min_create_revision != 0
        || request.max_create_revision != 0
}

/// etcd's filters: a bound of 0 is no bound.
fn passes_revision_filters(request: &RangeRequest, key_value: &KeyValue) -> bool {
    let above = |bound: i64, value: i64| bound != 0 && value > bound;
    let below = |bound: i64, value: i64| bound != 0 && value < bound;
    !(above(request.max_mod_revision, key_value.mod_revision)
        || below(request.min_mod_revision, key_value.mod_revision)
        || above(request.max_create_revision, key_value.create_revision)
        || below(request.min_create_revision, key_value.create_revision))
}

fn compare_by_target(target: SortTarget, left: &KeyValue, right: &KeyValue) -> Ordering {
    match target {
        SortTarget::Key => left.key.cmp(&right.key),
        SortTarget::Version => left.version.cmp(&right.version),
        SortTarget::Create => left.create_revision.cmp(&right.create_revision),
        SortTarget::Mod => left.mod_revision.cmp(&right.mod_revision),
        SortTarget::Value => left.value.cmp(&right.value),
    }
}

/// Compares one key-value's field against the compare's operand. An operand of another
/// kind than the target counts as zero (or the empty value), as in etcd.
fn compare_key_value(
    target: CompareTarget,
    result: CompareResult,
    operand: Option<&TargetUnion>,
    key_value: &KeyValue,
) -> bool {
    let ordering = match target {
        CompareTarget::Value => {
            let expected: &[u8] = match operand {
                Some(TargetUnion::Value(value)) => value,
                _ => &[],
            };
            key_value.value.as_slice().cmp(expected)
        }
        CompareTarget::Version => {
            let expected = match operand {
                Some(TargetUnion::Version(version)) => *version,
                _ => 0,
            };
            key_value.version.cmp(&expected)
        }
        CompareTarget::Create => {
            let expected = match operand {
                Some(TargetUnion::CreateRevision(revision)) => *revision,
                _ => 0,
            };
            key_value.create_revision.cmp(&expected)
        }
        CompareTarget::Mod => {
            let expected = match operand {
                Some(TargetUnion::ModRevision(revision)) => *revision,
                _ => 0,
            };
            key_value.mod_revision.cmp(&expected)
        }
        CompareTarget::Lease => {
            let expected = match operand {
                Some(TargetUnion::Lease(lease)) => *lease,
                _ => 0,
            };
            key_value.lease.cmp(&expected)
        }
    };
    match result {
        CompareResult::Equal => ordering == Ordering::Equal,
        CompareResult::NotEqual => ordering != Ordering::Equal,
        CompareResult::Greater => ordering == Ordering::Greater,
        CompareResult::Less => ordering == Ordering::Less,
    }
}

/// The keys whose current version is attached to `lease`, in key order.
pub(crate) fn keys_with_lease(state: &State, lease: i64) -> Vec<Vec<u8>> {
    state
        .keys
        .iter()
        .filter(|(_, versions)| {
            versions
                .last()
                .is_some_and(|version| !version.is_tombstone() && version.record.lease == lease)
        })
        .map(|(key, _)| key.clone())
        .collect()
}
