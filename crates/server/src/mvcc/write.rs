//! Writes: applying one log entry's request to the store's state.
//!
//! Every check that can reject a request runs before the request's first write (as etcd's
//! applier checks a transaction's whole chosen path first), so a rejected request leaves the
//! state as it was although it is shared with the rest of the batch.

use super::error::MvccError;
use super::read::{self, key_value, version_at, View};
use super::schema::{KeyRange, Revision, State, Version, VersionRecord};
use super::validate::{validate_delete_range, validate_put, validate_txn};
use crate::proto::etcdserverpb::request_op::Request;
use crate::proto::etcdserverpb::response_op::Response as ResponseKind;
use crate::proto::etcdserverpb::{
    AlarmMember, AlarmRequest, CompactionRequest, CompactionResponse, DeleteRangeRequest,
    DeleteRangeResponse, LeaseGrantRequest, LeaseGrantResponse, LeaseRevokeRequest,
    LeaseRevokeResponse, PutRequest, PutResponse, ResponseHeader, ResponseOp, TxnRequest,
    TxnResponse,
};
use crate::proto::flotillapb::{LeaseCheckpoints, MemberAttributes};
use crate::proto::mvccpb::event::EventType;
use crate::proto::mvccpb::{Event, KeyValue};

/// Applies one entry's request. All its writes share the main revision one above the
/// current; `next_sub` counts them.
pub(crate) struct EntryWriter<'a> {
    state: &'a mut State,
    /// The store's revision before this entry.
    current_revision: i64,
    /// The compacted revision, raised by a compaction in this entry.
    pub compacted_revision: i64,
    /// Writes made so far; the next write's sub revision.
    next_sub: i64,
    /// True once anything changed, compaction included.
    modified: bool,
    /// The changes made, in order, for watchers (when `record_events`).
    pub events: Vec<Event>,
    record_events: bool,
    max_response_bytes: usize,
}

impl<'a> EntryWriter<'a> {
    /// A writer for one entry against the state as the batch left it so far.
    pub(crate) fn new(
        state: &'a mut State,
        max_response_bytes: usize,
        record_events: bool,
    ) -> Self {
        EntryWriter {
            record_events,
            current_revision: state.current_revision,
            compacted_revision: state.compacted_revision,
            state,
            next_sub: 0,
            modified: false,
            events: Vec::new(),
            max_response_bytes,
        }
    }

    /// The revision after the writes made so far: one above the entry's starting revision
    /// once anything was written, else unchanged (a delete of nothing or a read-only
    /// transaction does not advance the revision).
    pub(crate) fn working_revision(&self) -> i64 {
        if self.next_sub > 0 {
            self.current_revision + 1
        } else {
            self.current_revision
        }
    }

    /// True once anything changed: a request error after this point would leave a partial
    /// write behind.
    pub(crate) fn modified(&self) -> bool {
        self.modified
    }

    fn view(&self) -> View<'_> {
        View {
            state: self.state,
            current_revision: self.working_revision(),
            compacted_revision: self.compacted_revision,
        }
    }

    fn header(&self) -> Option<ResponseHeader> {
        Some(ResponseHeader {
            revision: self.working_revision(),
            ..Default::default()
        })
    }

    pub(crate) fn put(&mut self, request: &PutRequest) -> Result<PutResponse, MvccError> {
        validate_put(request)?;
        let main = self.current_revision + 1;
        let working_revision = self.working_revision();
        let versions = self.state.keys.get(request.key.as_slice());
        let previous = versions.and_then(|versions| version_at(versions, working_revision));
        if (request.ignore_value || request.ignore_lease) && previous.is_none() {
            return Err(MvccError::KeyNotFound);
        }
        if request.lease != 0 && !self.state.leases.contains_key(&request.lease) {
            return Err(MvccError::LeaseNotFound);
        }
        let (create_revision, version) = match previous {
            Some(previous) => (previous.record.create_revision, previous.record.version + 1),
            None => (main, 1),
        };
        let record = VersionRecord {
            create_revision,
            version,
            lease: match (previous, request.ignore_lease) {
                (Some(previous), true) => previous.record.lease,
                _ => request.lease,
            },
            value: match (previous, request.ignore_value) {
                (Some(previous), true) => previous.record.value.clone(),
                _ => request.value.as_slice().into(),
            },
        };
        // Only what is asked for is copied out: the previous key-value for the response, and
        // both for the event.
        let previous_key_value = if request.prev_kv || self.record_events {
            previous.map(|previous| key_value(&request.key, previous))
        } else {
            None
        };
        if self.record_events {
            let key_value = KeyValue {
                key: request.key.clone(),
                create_revision,
                mod_revision: main,
                version,
                value: record.value.to_vec(),
                lease: record.lease,
            };
            self.events.push(Event {
                r#type: EventType::Put as i32,
                kv: Some(key_value),
                prev_kv: previous_key_value.clone(),
            });
        }
        self.write_version(&request.key, record);
        Ok(PutResponse {
            header: self.header(),
            prev_kv: if request.prev_kv {
                previous_key_value
            } else {
                None
            },
        })
    }

    pub(crate) fn delete_range(
        &mut self,
        request: &DeleteRangeRequest,
    ) -> Result<DeleteRangeResponse, MvccError> {
        validate_delete_range(request)?;
        let doomed: Vec<KeyValue> = {
            let view = self.view();
            let range = KeyRange::new(&request.key, &request.range_end);
            view.keys_at(range, view.current_revision)
                .into_iter()
                .map(|(key, version)| key_value(key, version))
                .collect()
        };
        for previous in &doomed {
            let revision = self.write_version(&previous.key, VersionRecord::tombstone());
            if !self.record_events {
                continue;
            }
            self.events.push(Event {
                r#type: EventType::Delete as i32,
                kv: Some(KeyValue {
                    key: previous.key.clone(),
                    mod_revision: revision.main,
                    ..Default::default()
                }),
                prev_kv: Some(previous.clone()),
            });
        }
        Ok(DeleteRangeResponse {
            header: self.header(),
            deleted: i64::try_from(doomed.len()).expect("a key count fits in i64"),
            prev_kvs: if request.prev_kv { doomed } else { Vec::new() },
        })
    }

    /// Stores one version at the next sub revision.
    fn write_version(&mut self, key: &[u8], record: VersionRecord) -> Revision {
        let revision = Revision {
            main: self.current_revision + 1,
            sub: self.next_sub,
        };
        self.state.size_bytes += State::version_size_bytes(key, &record);
        let version = Version { revision, record };
        match self.state.keys.get_mut(key) {
            Some(versions) => {
                assert!(
                    versions.last().is_none_or(|last| last.revision < revision),
                    "a key's versions are written in revision order"
                );
                // Rationale: a key rewritten often keeps many versions; doubling its list would
                // leave up to half of it unused (64 bytes a slot), growing it by an eighth
                // leaves at most an eighth, at a copying cost that stays linear.
                if versions.len() == versions.capacity() {
                    versions.reserve_exact((versions.len() / 8).max(1));
                }
                versions.push(version);
            }
            None => {
                self.state.keys.insert(key.to_vec(), vec![version]);
            }
        }
        self.state.record_recent_change(revision, key);
        self.state.version_count += 1;
        self.next_sub += 1;
        self.modified = true;
        revision
    }

    /// etcd's Txn. Every compare on the path the transaction will take, nested transactions'
    /// included, is evaluated against the store as it was before the transaction, and every
    /// operation on that path is checked, before the first write.
    pub(crate) fn txn(&mut self, request: &TxnRequest) -> Result<TxnResponse, MvccError> {
        validate_txn(request, usize::MAX)?;
        let mut path = Vec::new();
        self.plan(request, &mut path)?;
        let mut decisions = path.into_iter();
        let response = self.execute(request, &mut decisions)?;
        assert!(
            decisions.next().is_none(),
            "the plan and the execution walk the same path"
        );
        Ok(response)
    }

    /// Records, depth first, whether each transaction on the path succeeds, and checks the
    /// operations on the path.
    fn plan(&self, request: &TxnRequest, path: &mut Vec<bool>) -> Result<(), MvccError> {
        let view = self.view();
        let mut succeeded = true;
        for compare in &request.compare {
            if !view.compare(compare) {
                succeeded = false;
                break;
            }
        }
        path.push(succeeded);
        let branch = if succeeded {
            &request.success
        } else {
            &request.failure
        };
        for operation in branch {
            match &operation.request {
                Some(Request::RequestRange(range)) => {
                    view.resolve_revision(range.revision)?;
                }
                Some(Request::RequestPut(put)) => {
                    // The duplicate-key check guarantees no earlier operation of this
                    // transaction writes this key, so the state before it is what counts.
                    if (put.ignore_value || put.ignore_lease) && view.current(&put.key).is_none() {
                        return Err(MvccError::KeyNotFound);
                    }
                    if put.lease != 0 && !view.state.leases.contains_key(&put.lease) {
                        return Err(MvccError::LeaseNotFound);
                    }
                }
                Some(Request::RequestTxn(nested)) => self.plan(nested, path)?,
                Some(Request::RequestDeleteRange(_)) | None => {}
            }
        }
        Ok(())
    }

    fn execute(
        &mut self,
        request: &TxnRequest,
        decisions: &mut impl Iterator<Item = bool>,
    ) -> Result<TxnResponse, MvccError> {
        let succeeded = decisions
            .next()
            .expect("the plan holds a decision for every transaction run");
        let branch = if succeeded {
            &request.success
        } else {
            &request.failure
        };
        let mut responses = Vec::with_capacity(branch.len());
        for operation in branch {
            let response = match &operation.request {
                Some(Request::RequestRange(range)) => Some(ResponseKind::ResponseRange(
                    self.view().range(range, self.max_response_bytes)?,
                )),
                Some(Request::RequestPut(put)) => Some(ResponseKind::ResponsePut(self.put(put)?)),
                Some(Request::RequestDeleteRange(delete)) => Some(
                    ResponseKind::ResponseDeleteRange(self.delete_range(delete)?),
                ),
                Some(Request::RequestTxn(nested)) => {
                    Some(ResponseKind::ResponseTxn(self.execute(nested, decisions)?))
                }
                None => None,
            };
            responses.push(ResponseOp { response });
        }
        Ok(TxnResponse {
            header: self.header(),
            succeeded,
            responses,
        })
    }

    /// etcd's Compact: removes every version older than `revision` except each key's newest
    /// version at `revision`, and that too if it is a tombstone. Reads at `revision` and
    /// later are unchanged; reads below it fail with `Compacted`.
    pub(crate) fn compact(
        &mut self,
        request: &CompactionRequest,
    ) -> Result<CompactionResponse, MvccError> {
        let revision = request.revision;
        if revision <= self.compacted_revision {
            return Err(MvccError::Compacted);
        }
        if revision > self.current_revision {
            return Err(MvccError::FutureRevision);
        }
        // Every key is looked at (etcd's compaction walks its whole key index too); a key
        // whose oldest version is above `revision` has nothing to give up.
        let mut emptied = Vec::new();
        let mut removed_count = 0u64;
        let mut removed_bytes = 0u64;
        for (key, versions) in self.state.keys.iter_mut() {
            let at_or_below = versions.partition_point(|version| version.revision.main <= revision);
            let Some(newest) = versions[..at_or_below].last() else {
                continue;
            };
            let removed = if newest.is_tombstone() {
                at_or_below
            } else {
                at_or_below - 1
            };
            for version in versions.drain(..removed) {
                removed_count += 1;
                removed_bytes += State::version_size_bytes(key, &version.record);
            }
            if versions.is_empty() {
                emptied.push(key.clone());
            }
        }
        for key in emptied {
            self.state.keys.remove(&key);
        }
        self.state.version_count -= removed_count;
        self.state.size_bytes = self.state.size_bytes.saturating_sub(removed_bytes);
        self.compacted_revision = revision;
        self.modified = true;
        Ok(CompactionResponse {
            header: self.header(),
        })
    }

    /// Records a member's attributes, replacing what was known of that member.
    pub(crate) fn member(&mut self, member: &MemberAttributes) {
        self.state.members.insert(member.id, member.clone());
        self.modified = true;
    }

    /// Raises or clears an alarm; answers with the alarm that changed (none if it was
    /// already so), as etcd does.
    pub(crate) fn alarm(&mut self, request: &AlarmRequest) -> Vec<AlarmMember> {
        use crate::proto::etcdserverpb::alarm_request::AlarmAction;
        let mut alarms = super::alarms_of(self.state);
        let alarm = (request.member_id, request.alarm);
        let changed = match AlarmAction::try_from(request.action) {
            Ok(AlarmAction::Activate) if request.alarm != 0 => alarms.insert(alarm),
            Ok(AlarmAction::Deactivate) => alarms.remove(&alarm),
            _ => false,
        };
        if !changed {
            return Vec::new();
        }
        let mut encoded = Vec::with_capacity(alarms.len() * 12);
        for (member, kind) in &alarms {
            encoded.extend_from_slice(&member.to_le_bytes());
            encoded.extend_from_slice(&kind.to_le_bytes());
        }
        self.state
            .metadata
            .insert(super::ALARMS_METADATA.to_string(), encoded);
        self.modified = true;
        vec![AlarmMember {
            member_id: alarm.0,
            alarm: alarm.1,
        }]
    }

    /// etcd's LeaseGrant, with the id and TTL the proposer chose.
    pub(crate) fn lease_grant(
        &mut self,
        request: &LeaseGrantRequest,
    ) -> Result<LeaseGrantResponse, MvccError> {
        if request.id <= 0 {
            return Err(MvccError::Corrupt(format!(
                "a lease grant with id {} reached the log",
                request.id
            )));
        }
        if self.state.leases.contains_key(&request.id) {
            return Err(MvccError::LeaseExists);
        }
        self.state.leases.insert(request.id, request.ttl);
        self.modified = true;
        Ok(LeaseGrantResponse {
            header: self.header(),
            id: request.id,
            ttl: request.ttl,
            error: String::new(),
        })
    }

    /// Records the leader's checkpoints of leases' remaining TTLs; checkpoints of leases that
    /// no longer exist are ignored.
    pub(crate) fn lease_checkpoints(&mut self, checkpoints: &LeaseCheckpoints) {
        for checkpoint in &checkpoints.checkpoints {
            if !self.state.leases.contains_key(&checkpoint.id) {
                continue;
            }
            if checkpoint.remaining_ttl > 0 {
                self.state
                    .lease_remaining
                    .insert(checkpoint.id, checkpoint.remaining_ttl);
            } else {
                self.state.lease_remaining.remove(&checkpoint.id);
            }
        }
        self.modified = true;
    }

    /// etcd's LeaseRevoke: the lease goes, and every key attached to it is deleted, all at
    /// one revision.
    pub(crate) fn lease_revoke(
        &mut self,
        request: &LeaseRevokeRequest,
    ) -> Result<LeaseRevokeResponse, MvccError> {
        if self.state.leases.remove(&request.id).is_none() {
            return Err(MvccError::LeaseNotFound);
        }
        self.state.lease_remaining.remove(&request.id);
        self.modified = true;
        let attached = read::keys_with_lease(self.state, request.id);
        for key in attached {
            self.delete_range(&DeleteRangeRequest {
                key,
                ..DeleteRangeRequest::default()
            })?;
        }
        Ok(LeaseRevokeResponse {
            header: self.header(),
        })
    }
}
