//! Checks etcd makes on a request before proposing it. The server calls these before
//! proposing, so that a bad request costs no log entry; the store runs them again when it
//! applies an entry, so that an entry that skipped them is rejected whole rather than half
//! applied.

use std::collections::BTreeSet;

use super::error::MvccError;
use super::schema::KeyRange;
use crate::proto::etcdserverpb::range_request::{SortOrder, SortTarget};
use crate::proto::etcdserverpb::request_op::Request;
use crate::proto::etcdserverpb::{
    DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest,
};

/// etcd's default for `--max-txn-ops`: the most compares, or operations in one branch, of a
/// transaction.
pub const MAX_TXN_OPERATIONS_DEFAULT: usize = 128;

/// A range needs a key and a known sort order and target.
pub fn validate_range(request: &RangeRequest) -> Result<(), MvccError> {
    if request.key.is_empty() {
        return Err(MvccError::EmptyKey);
    }
    if SortOrder::try_from(request.sort_order).is_err()
        || SortTarget::try_from(request.sort_target).is_err()
    {
        return Err(MvccError::InvalidSortOption);
    }
    Ok(())
}

/// A put needs a key, and may not both keep the old value (lease) and give a new one.
pub fn validate_put(request: &PutRequest) -> Result<(), MvccError> {
    if request.key.is_empty() {
        return Err(MvccError::EmptyKey);
    }
    if request.ignore_value && !request.value.is_empty() {
        return Err(MvccError::ValueProvided);
    }
    if request.ignore_lease && request.lease != 0 {
        return Err(MvccError::LeaseProvided);
    }
    Ok(())
}

/// A delete needs a key.
pub fn validate_delete_range(request: &DeleteRangeRequest) -> Result<(), MvccError> {
    if request.key.is_empty() {
        return Err(MvccError::EmptyKey);
    }
    Ok(())
}

/// A transaction: at most `max_operations` compares and at most that many operations per
/// branch (nested transactions get the same allowance, as in etcd), every compare and
/// operation well formed, and no key written twice: not two puts of one key, and no put of a
/// key inside a deleted range, counting nested transactions. Puts of the same key in the
/// success and the failure branch of one nested transaction are allowed, as only one runs.
///
/// Unlike etcd, a delete with `range_end` "\0" counts as covering every key from its start
/// (etcd's interval check treats it as an empty interval).
pub fn validate_txn(request: &TxnRequest, max_operations: usize) -> Result<(), MvccError> {
    validate_txn_shape(request, max_operations)?;
    written_keys(&request.success)?;
    written_keys(&request.failure)?;
    Ok(())
}

fn validate_txn_shape(request: &TxnRequest, max_operations: usize) -> Result<(), MvccError> {
    let widest = request
        .compare
        .len()
        .max(request.success.len())
        .max(request.failure.len());
    if widest > max_operations {
        return Err(MvccError::TooManyOperations);
    }
    if request.compare.iter().any(|compare| compare.key.is_empty()) {
        return Err(MvccError::EmptyKey);
    }
    for operation in request.success.iter().chain(&request.failure) {
        match &operation.request {
            Some(Request::RequestRange(range)) => validate_range(range)?,
            Some(Request::RequestPut(put)) => validate_put(put)?,
            Some(Request::RequestDeleteRange(delete)) => validate_delete_range(delete)?,
            Some(Request::RequestTxn(nested)) => validate_txn_shape(nested, max_operations)?,
            None => {}
        }
    }
    Ok(())
}

/// A deleted range, owned so that it can be passed up from nested transactions.
struct DeletedRange {
    key: Vec<u8>,
    range_end: Vec<u8>,
}

impl DeletedRange {
    fn contains(&self, key: &[u8]) -> bool {
        KeyRange::new(&self.key, &self.range_end).contains(key)
    }
}

/// The keys one branch puts and the ranges it deletes, or `DuplicateKey` if it writes a key
/// twice.
fn written_keys(
    operations: &[RequestOp],
) -> Result<(BTreeSet<Vec<u8>>, Vec<DeletedRange>), MvccError> {
    let mut deleted: Vec<DeletedRange> = operations
        .iter()
        .filter_map(|operation| match &operation.request {
            Some(Request::RequestDeleteRange(delete)) => Some(DeletedRange {
                key: delete.key.clone(),
                range_end: delete.range_end.clone(),
            }),
            _ => None,
        })
        .collect();
    let is_deleted =
        |deleted: &[DeletedRange], key: &[u8]| deleted.iter().any(|range| range.contains(key));
    let mut put = BTreeSet::new();
    for operation in operations {
        let Some(Request::RequestTxn(nested)) = &operation.request else {
            continue;
        };
        let (put_on_success, deleted_on_success) = written_keys(&nested.success)?;
        let (put_on_failure, deleted_on_failure) = written_keys(&nested.failure)?;
        for key in &put_on_success {
            if put.contains(key) || is_deleted(&deleted, key) {
                return Err(MvccError::DuplicateKey);
            }
        }
        // The success branch's keys are not in `put` yet: a key both branches put is fine.
        for key in &put_on_failure {
            if put.contains(key) || is_deleted(&deleted, key) {
                return Err(MvccError::DuplicateKey);
            }
        }
        put.extend(put_on_success);
        put.extend(put_on_failure);
        deleted.extend(deleted_on_success);
        deleted.extend(deleted_on_failure);
    }
    for operation in operations {
        let Some(Request::RequestPut(request)) = &operation.request else {
            continue;
        };
        if put.contains(&request.key) || is_deleted(&deleted, &request.key) {
            return Err(MvccError::DuplicateKey);
        }
        put.insert(request.key.clone());
    }
    Ok((put, deleted))
}
