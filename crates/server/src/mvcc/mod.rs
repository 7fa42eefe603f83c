//! The MVCC key-value store: the state machine that committed Raft entries are applied to,
//! with etcd's v3 semantics, held in memory.
//!
//! Every write transaction (a put, a delete that deletes something, a txn with any write)
//! advances one global revision; a txn's writes share one revision, told apart by sub
//! revisions. Every version of every key is kept, deletes as tombstones, until a compaction,
//! so reads at past revisions work. Per key: create revision, mod revision, version (1 on
//! creation, +1 per put, gone on delete), value and lease, as in etcd.
//!
//! Durability is the Raft log's, not the store's (Rationale: measured, a durable B-tree
//! commit per applied batch cost more CPU per put than all the rest of a write; see
//! docs/PERFORMANCE.md). An entry is applied only after it is durable in the WAL, so the
//! store can always be rebuilt: from the newest snapshot image ([`MvccStore::snapshot`], which
//! the runtime saves through the WAL's snapshot files), then by applying the log after it.
//!
//! Contract with the runtime (the node loop):
//! - At start, [`MvccStore::restore`] the newest snapshot image BEFORE applying anything, then
//!   apply the log after the snapshot's index.
//! - Apply committed entries in log order, each exactly once, through
//!   [`MvccStore::apply_batch`]; the batch also records the last applied Raft index. Entries
//!   at or below [`MvccStore::applied_index`] are skipped (reported as
//!   [`ApplyOutcome::Skipped`]), so replaying more is harmless.
//! - An entry that carries no request (an empty entry, a configuration change) is applied as
//!   an `InternalRequest` with `request: None`, or through
//!   [`MvccStore::record_applied_index`], so the applied index still advances.
//! - Validate client requests with [`validate_put`], [`validate_delete_range`],
//!   [`validate_range`] and [`validate_txn`] BEFORE proposing them; the store checks again
//!   when applying, but a rejected entry still costs a log entry.
//! - Reads ([`MvccReader::range`]) run concurrently with a batch being applied; a reader sees
//!   whole batches only (the batch holds the state's write lock).
//!
//! ```
//! use server::mvcc::{ApplyOutcome, MvccOptions, MvccStore, Response};
//! use server::proto::etcdserverpb::{PutRequest, RangeRequest};
//! use server::proto::flotillapb::{internal_request::Request, InternalRequest};
//!
//! let mut store = MvccStore::new(MvccOptions::default());
//! let put = PutRequest { key: b"greeting".to_vec(), value: b"hello".to_vec(), ..Default::default() };
//! let entry = InternalRequest { id: 7, request: Some(Request::Put(put)) };
//! let results = store.apply_batch(&[(1, entry)]);
//! assert!(matches!(results[0].outcome, ApplyOutcome::Applied(Response::Put(_))));
//! assert_eq!(store.current_revision(), 2); // a fresh store is at revision 1, as etcd's
//!
//! let read = store.range(&RangeRequest { key: b"greeting".to_vec(), ..Default::default() }).unwrap();
//! assert_eq!(read.kvs[0].value, b"hello");
//! ```

mod error;
mod read;
mod schema;
mod snapshot;
mod validate;
mod write;

#[cfg(test)]
mod tests;

use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

pub use error::MvccError;
pub use validate::{
    validate_delete_range, validate_put, validate_range, validate_txn, MAX_TXN_OPERATIONS_DEFAULT,
};

use read::View;
use schema::{Revision, State, Version, VersionRecord};
use write::EntryWriter;

use crate::proto::etcdserverpb::{
    CompactionResponse, DeleteRangeResponse, PutResponse, RangeRequest, RangeResponse, TxnResponse,
};
use crate::proto::flotillapb::internal_request::Request;
use crate::proto::flotillapb::{InternalRequest, MemberAttributes};
use crate::proto::mvccpb::Event;

/// Tunables of the store.
#[derive(Clone, Debug)]
pub struct MvccOptions {
    /// The most bytes of key-values one range response carries; a response cut short sets
    /// `more`, and always carries at least one key-value if any matched. Rationale: etcd
    /// relies on the gRPC message limit (2 GiB in its Go client), but tonic-based clients
    /// refuse messages over 4 MiB by default, so the default stays under that.
    pub max_response_bytes: usize,
    /// Whether applied entries report their key changes in [`ApplyResult::events`].
    /// Rationale for off by default: building them copies every written key-value twice, and
    /// a node without watchers throws them away.
    pub record_events: bool,
}

/// 4 MiB less room for the response's header and framing.
pub const MAX_RESPONSE_BYTES_DEFAULT: usize = 4 * 1024 * 1024 - 64 * 1024;

impl Default for MvccOptions {
    fn default() -> Self {
        MvccOptions {
            max_response_bytes: MAX_RESPONSE_BYTES_DEFAULT,
            record_events: false,
        }
    }
}

/// The response to one applied request. Headers carry the store's revision; the caller fills
/// in cluster id, member id and Raft term.
#[derive(Clone, Debug, PartialEq)]
pub enum Response {
    /// The entry carried no request (an empty or configuration-change entry).
    Empty,
    /// A put's response.
    Put(PutResponse),
    /// A delete's response.
    DeleteRange(DeleteRangeResponse),
    /// A transaction's response.
    Txn(TxnResponse),
    /// A compaction's response.
    Compaction(CompactionResponse),
    /// Member attributes were recorded.
    Member,
    /// A lease was granted.
    LeaseGrant(crate::proto::etcdserverpb::LeaseGrantResponse),
    /// A lease was revoked, and its keys deleted.
    LeaseRevoke(crate::proto::etcdserverpb::LeaseRevokeResponse),
    /// An alarm was raised or cleared: the one that changed, if any.
    Alarm(crate::proto::etcdserverpb::AlarmResponse),
}

/// What became of one entry of a batch.
#[derive(Debug)]
pub enum ApplyOutcome {
    /// The entry's index was at or below the applied index: it was applied before (a replay
    /// after a restart) and was not applied again.
    Skipped,
    /// The entry was applied.
    Applied(Response),
    /// The request failed (e.g. a read of a compacted revision inside a txn); the store is as
    /// it was before the entry, and the entry counts as applied.
    Rejected(MvccError),
}

/// The result of applying one entry.
#[derive(Debug)]
pub struct ApplyResult {
    /// The entry's Raft index.
    pub index: u64,
    /// The proposer's request id from the entry, to answer the waiting client.
    pub request_id: u64,
    /// What happened.
    pub outcome: ApplyOutcome,
    /// The key changes the entry made, in order, for watchers: a put's event carries the new
    /// key-value and the previous one if any; a delete's carries the key and the deletion's
    /// revision, and the deleted key-value as `prev_kv`. Empty unless
    /// [`MvccOptions::record_events`] is set.
    pub events: Vec<Event>,
}

/// The MVCC store. One owner applies entries (`&mut self`); any number of [`MvccReader`]s
/// read concurrently.
pub struct MvccStore {
    state: Arc<RwLock<State>>,
    options: MvccOptions,
}

impl MvccStore {
    /// An empty store: revision 1, nothing applied.
    pub fn new(options: MvccOptions) -> Self {
        MvccStore {
            state: Arc::new(RwLock::new(State::new())),
            options,
        }
    }

    /// A handle for reading concurrently with this store's writes.
    pub fn reader(&self) -> MvccReader {
        MvccReader {
            state: Arc::clone(&self.state),
            max_response_bytes: self.options.max_response_bytes,
        }
    }

    fn read(&self) -> RwLockReadGuard<'_, State> {
        read_lock(&self.state)
    }

    fn write(&self) -> RwLockWriteGuard<'_, State> {
        // A panic while applying is a broken invariant that stops the node; the state is not
        // used after it, so a poisoned lock is only ever seen on the way down.
        self.state
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Applies committed entries, in order, as one step that also records the last index as
    /// applied: readers see the state before the batch or after it. Entries at or below the
    /// applied index are skipped. Returns one result per entry.
    ///
    /// Indexes must increase through the batch (the runtime applies the log in order).
    pub fn apply_batch(&mut self, entries: &[(u64, InternalRequest)]) -> Vec<ApplyResult> {
        for pair in entries.windows(2) {
            assert!(pair[0].0 < pair[1].0, "a batch's indexes increase");
        }
        let max_response_bytes = self.options.max_response_bytes;
        let record_events = self.options.record_events;
        let mut state = self.write();
        let mut results = Vec::with_capacity(entries.len());
        for (index, request) in entries {
            if *index <= state.applied_index {
                results.push(skipped(*index, request));
                continue;
            }
            let mut writer = EntryWriter::new(&mut state, max_response_bytes, record_events);
            let outcome = match apply_request(&mut writer, request.request.as_ref()) {
                Ok(response) => ApplyOutcome::Applied(response),
                Err(error) => {
                    // Every check runs before a request's first write; a rejection after one
                    // would leave half a request applied.
                    assert!(
                        !writer.modified(),
                        "a request is rejected before it writes: {error}"
                    );
                    ApplyOutcome::Rejected(error)
                }
            };
            let events = match outcome {
                ApplyOutcome::Applied(_) => std::mem::take(&mut writer.events),
                _ => Vec::new(),
            };
            let current_revision = writer.working_revision();
            let compacted_revision = writer.compacted_revision;
            state.current_revision = current_revision;
            state.compacted_revision = compacted_revision;
            state.applied_index = *index;
            results.push(ApplyResult {
                index: *index,
                request_id: request.id,
                outcome,
                events,
            });
        }
        results
    }

    /// Records `index` as applied for an entry that does not touch the key-value data. An
    /// index at or below the applied index changes nothing.
    pub fn record_applied_index(&mut self, index: u64) {
        self.apply_batch(&[(index, InternalRequest::default())]);
    }

    /// Sets an opaque metadata value (e.g. the encoded initial members); it is part of the
    /// state, so snapshots carry it. A second value for the same name replaces the first.
    pub fn set_metadata(&mut self, name: &str, value: &[u8]) {
        self.write()
            .metadata
            .insert(name.to_string(), value.to_vec());
    }

    /// The metadata value of that name.
    pub fn metadata(&self, name: &str) -> Option<Vec<u8>> {
        self.reader().metadata(name)
    }

    /// Every member whose attributes were applied, by id, removed ones included (they carry
    /// `removed: true`).
    pub fn members(&self) -> Vec<MemberAttributes> {
        self.reader().members()
    }

    /// etcd's Range on the applied state; see [`MvccReader::range`].
    pub fn range(&self, request: &RangeRequest) -> Result<RangeResponse, MvccError> {
        self.reader().range(request)
    }

    /// The revision of the newest write (1 for a fresh store).
    pub fn current_revision(&self) -> i64 {
        self.read().current_revision
    }

    /// The revision of the last compaction; 0 before any.
    pub fn compacted_revision(&self) -> i64 {
        self.read().compacted_revision
    }

    /// The index of the last Raft entry applied; 0 before any.
    pub fn applied_index(&self) -> u64 {
        self.read().applied_index
    }

    /// An estimate of the bytes the key-value data takes (see [`MvccReader::size_bytes`]).
    pub fn size_bytes(&self) -> u64 {
        self.read().size_bytes
    }

    /// The whole state as one image (format in the `snapshot` module: versioned,
    /// crc32c-checksummed), taken under the read lock so it is consistent. The image is built
    /// in memory; its size is about the data's.
    pub fn snapshot(&self) -> Result<bytes::Bytes, MvccError> {
        image_of(&self.read())
    }

    /// etcd's HashKV; see [`MvccReader::hash_kv`].
    pub fn hash_kv(&self, revision: i64) -> Result<KvHash, MvccError> {
        self.reader().hash_kv(revision)
    }

    /// Makes this store, restored from a backup image, the state a new cluster's log starts
    /// from: applied up to `index` (the new log's first snapshot) and no members (the new
    /// cluster records its own). Key-values, their history, revisions, leases and other
    /// metadata stay as the backup had them.
    pub fn start_new_log(&mut self, index: u64) {
        let mut state = self.write();
        state.applied_index = index;
        state.members.clear();
    }

    /// Replaces the whole state with a [`MvccStore::snapshot`] image, applied index
    /// included, in one step: readers see the old state or the new, never a mix. The image
    /// is checked completely first; on `Err` the store is unchanged.
    pub fn restore(&mut self, image: &[u8]) -> Result<(), MvccError> {
        let image = snapshot::decode(image)?;
        let mut restored = State::new();
        // The image has no order of writes: the recent ones start after it.
        restored.recent_changes_from = image.current_revision + 1;
        restored.current_revision = image.current_revision;
        restored.compacted_revision = image.compacted_revision;
        restored.applied_index = image.applied_index;
        for (name, value) in &image.metadata {
            restored
                .metadata
                .insert((*name).to_string(), value.to_vec());
        }
        for (id, encoded) in &image.members {
            let member = <MemberAttributes as prost::Message>::decode(*encoded)
                .map_err(|error| MvccError::Corrupt(format!("member record: {error}")))?;
            restored.members.insert(*id, member);
        }
        restored.leases = image.leases.iter().map(|&(id, ttl, _)| (id, ttl)).collect();
        restored.lease_remaining = image
            .leases
            .iter()
            .filter(|&&(_, _, remaining)| remaining > 0)
            .map(|&(id, _, remaining)| (id, remaining))
            .collect();
        // The history is in (key, revision) order: each key's versions arrive together,
        // oldest first.
        for &(key, main, sub, record) in &image.history {
            let record = VersionRecord::decode(record)?;
            let revision = Revision { main, sub };
            restored.size_bytes += State::version_size_bytes(key, &record);
            restored.version_count += 1;
            let version = Version { revision, record };
            match restored.keys.get_mut(key) {
                Some(versions) => versions.push(version),
                None => {
                    restored.keys.insert(key.to_vec(), vec![version]);
                }
            }
        }
        for versions in restored.keys.values_mut() {
            versions.shrink_to_fit();
        }
        *self.write() = restored;
        Ok(())
    }
}

fn read_lock(state: &RwLock<State>) -> RwLockReadGuard<'_, State> {
    // See MvccStore::write on poisoning.
    state
        .read()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The metadata name of the raised alarms: (member id u64, alarm type i32) little-endian, in
/// order. Rationale: metadata travels in snapshots already, so alarms survive a restart and
/// reach a member that catches up by snapshot without a change to the image format.
pub(crate) const ALARMS_METADATA: &str = "alarms";

/// The raised alarms: (member id, alarm type).
pub(crate) fn alarms_of(state: &State) -> std::collections::BTreeSet<(u64, i32)> {
    let Some(encoded) = state.metadata.get(ALARMS_METADATA) else {
        return Default::default();
    };
    encoded
        .chunks_exact(12)
        .map(|chunk| {
            let member = u64::from_le_bytes(chunk[..8].try_into().expect("8 bytes"));
            let kind = i32::from_le_bytes(chunk[8..].try_into().expect("4 bytes"));
            (member, kind)
        })
        .collect()
}

/// What [`MvccReader::hash_kv`] answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KvHash {
    /// The hash.
    pub hash: u32,
    /// The revision it covers up to.
    pub hash_revision: i64,
    /// The store's compacted revision: hashes compare only between equal ones.
    pub compact_revision: i64,
    /// How many keys exist at `hash_revision`.
    pub keys: u64,
}

fn image_of(state: &State) -> Result<bytes::Bytes, MvccError> {
    // Each version takes its key and value plus 48 bytes of lengths and fields; the
    // size estimate counts 64, so one allocation holds the image.
    let mut image = snapshot::ImageWriter::new(
        state.applied_index,
        state.current_revision,
        state.compacted_revision,
        usize::try_from(state.size_bytes).unwrap_or(0) + 4096,
    );
    image.count(state.metadata.len() as u64);
    for (name, value) in &state.metadata {
        image.bytes(name.as_bytes())?;
        image.bytes(value)?;
    }
    image.count(state.members.len() as u64);
    for (id, member) in &state.members {
        image.u64(*id);
        image.bytes(&prost::Message::encode_to_vec(member))?;
    }
    image.count(state.leases.len() as u64);
    for (&id, &ttl) in &state.leases {
        image.i64(id);
        image.i64(ttl);
        image.i64(state.lease_remaining.get(&id).copied().unwrap_or(0));
    }
    image.count(state.version_count);
    for (key, versions) in &state.keys {
        for version in versions {
            image.bytes(key)?;
            image.i64(version.revision.main);
            image.i64(version.revision.sub);
            image.record(&version.record)?;
        }
    }
    Ok(bytes::Bytes::from(image.finish()))
}

fn skipped(index: u64, request: &InternalRequest) -> ApplyResult {
    ApplyResult {
        index,
        request_id: request.id,
        outcome: ApplyOutcome::Skipped,
        events: Vec::new(),
    }
}

fn apply_request(
    writer: &mut EntryWriter<'_>,
    request: Option<&Request>,
) -> Result<Response, MvccError> {
    Ok(match request {
        None => Response::Empty,
        Some(Request::Put(put)) => Response::Put(writer.put(put)?),
        Some(Request::DeleteRange(delete)) => Response::DeleteRange(writer.delete_range(delete)?),
        Some(Request::Txn(txn)) => Response::Txn(writer.txn(txn)?),
        Some(Request::Compaction(compaction)) => Response::Compaction(writer.compact(compaction)?),
        Some(Request::Member(member)) => {
            writer.member(member);
            Response::Member
        }
        Some(Request::LeaseGrant(grant)) => Response::LeaseGrant(writer.lease_grant(grant)?),
        Some(Request::LeaseRevoke(revoke)) => Response::LeaseRevoke(writer.lease_revoke(revoke)?),
        Some(Request::Alarm(alarm)) => Response::Alarm(crate::proto::etcdserverpb::AlarmResponse {
            header: None,
            alarms: writer.alarm(alarm),
        }),
        Some(Request::LeaseCheckpoints(checkpoints)) => {
            writer.lease_checkpoints(checkpoints);
            Response::Empty
        }
    })
}

/// Reads the store concurrently with writes: each call holds the state's read lock for its
/// duration and sees the state after some whole batch. Cheap to clone.
#[derive(Clone)]
pub struct MvccReader {
    state: Arc<RwLock<State>>,
    max_response_bytes: usize,
}

impl MvccReader {
    /// etcd's Range: a single key (`range_end` empty), [key, range_end), or every key from
    /// `key` on (`range_end` "\0"), at `revision` (<= 0: the current one), with etcd's sort,
    /// filter, `limit`, `keys_only` and `count_only` semantics. The response is also cut to
    /// the store's `max_response_bytes`, with `more` set. `header.revision` is the current
    /// revision; the caller fills the header's other fields.
    pub fn range(&self, request: &RangeRequest) -> Result<RangeResponse, MvccError> {
        let state = read_lock(&self.state);
        View::of(&state).range(request, self.max_response_bytes)
    }

    /// etcd's Defragment, for a store in memory: rebuilds the key index densely and drops the
    /// spare capacity that compactions and deletes leave behind, under the write lock (applies
    /// wait for it, as etcd's defragmentation blocks writes). Returns the versions kept.
    pub fn defragment(&self) -> u64 {
        let mut state = self
            .state
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let keys = std::mem::take(&mut state.keys);
        // Collecting a sorted iterator builds the tree's nodes full.
        state.keys = keys
            .into_iter()
            .map(|(mut key, mut versions)| {
                key.shrink_to_fit();
                versions.shrink_to_fit();
                (key, versions)
            })
            .collect();
        state.recent_changes.shrink_to_fit();
        state.version_count
    }

    /// The raised alarms, by member id and alarm type (etcd's `AlarmType` numbers).
    pub fn alarms(&self) -> Vec<(u64, i32)> {
        alarms_of(&read_lock(&self.state)).into_iter().collect()
    }

    /// The whole state as one image, as [`MvccStore::snapshot`] takes it; for a backup.
    pub fn snapshot(&self) -> Result<bytes::Bytes, MvccError> {
        image_of(&read_lock(&self.state))
    }

    /// etcd's HashKV: a hash of every version at or below `revision` (0: the current
    /// revision) that compaction kept, with the revision hashed and the compacted revision.
    /// Members holding the same history give the same hash at the same revision, so they can
    /// be checked against each other; it is not the number etcd computes (its store differs).
    pub fn hash_kv(&self, revision: i64) -> Result<KvHash, MvccError> {
        let state = read_lock(&self.state);
        let revision = if revision <= 0 {
            state.current_revision
        } else {
            revision
        };
        if revision > state.current_revision {
            return Err(MvccError::FutureRevision);
        }
        if revision < state.compacted_revision {
            return Err(MvccError::Compacted);
        }
        let mut hash = 0u32;
        let mut keys = 0u64;
        for (key, versions) in &state.keys {
            let mut live = false;
            for version in versions.iter().take_while(|v| v.revision.main <= revision) {
                let record = &version.record;
                hash = crc32c::crc32c_append(hash, &(key.len() as u64).to_le_bytes());
                hash = crc32c::crc32c_append(hash, key);
                for number in [
                    version.revision.main,
                    version.revision.sub,
                    record.create_revision,
                    record.version,
                    record.lease,
                    record.value.len() as i64,
                ] {
                    hash = crc32c::crc32c_append(hash, &number.to_le_bytes());
                }
                hash = crc32c::crc32c_append(hash, &record.value);
                live = record.version != 0;
            }
            keys += u64::from(live);
        }
        hash = crc32c::crc32c_append(hash, &revision.to_le_bytes());
        Ok(KvHash {
            hash,
            hash_revision: revision,
            compact_revision: state.compacted_revision,
            keys,
        })
    }

    /// The metadata value of that name.
    pub fn metadata(&self, name: &str) -> Option<Vec<u8>> {
        read_lock(&self.state).metadata.get(name).cloned()
    }

    /// Every member whose attributes were applied, by id, removed ones included.
    pub fn members(&self) -> Vec<MemberAttributes> {
        read_lock(&self.state).members.values().cloned().collect()
    }

    /// An estimate of the bytes the key-value data takes: keys and values of every version
    /// kept, plus a fixed cost per version. Etcd reports its database file's size here; this
    /// store has no file, and this is the figure that grows and shrinks with what is kept.
    pub fn size_bytes(&self) -> u64 {
        read_lock(&self.state).size_bytes
    }

    /// The current revision.
    pub fn current_revision(&self) -> i64 {
        read_lock(&self.state).current_revision
    }

    /// The compacted revision.
    pub fn compacted_revision(&self) -> i64 {
        read_lock(&self.state).compacted_revision
    }

    /// Every lease granted and not revoked: id and TTL in seconds, by id.
    pub fn leases(&self) -> Vec<(i64, i64)> {
        let state = read_lock(&self.state);
        state.leases.iter().map(|(&id, &ttl)| (id, ttl)).collect()
    }

    /// Every lease with the TTL it has left as far as the log knows: the last checkpoint's
    /// remaining TTL, or its whole TTL without one. By id.
    pub fn leases_remaining(&self) -> Vec<(i64, i64)> {
        let state = read_lock(&self.state);
        state
            .leases
            .iter()
            .map(|(&id, &ttl)| (id, state.lease_remaining.get(&id).copied().unwrap_or(ttl)))
            .collect()
    }

    /// Whether a checkpoint of this lease's remaining TTL is in force.
    pub fn lease_checkpointed(&self, id: i64) -> bool {
        read_lock(&self.state).lease_remaining.contains_key(&id)
    }

    /// The TTL a lease was granted with, if it exists.
    pub fn lease_ttl(&self, id: i64) -> Option<i64> {
        read_lock(&self.state).leases.get(&id).copied()
    }

    /// The keys attached to a lease, in key order.
    pub fn lease_keys(&self, id: i64) -> Vec<Vec<u8>> {
        read::keys_with_lease(&read_lock(&self.state), id)
    }

    /// The changes to keys in the range (etcd's key and `range_end` convention) made at
    /// `start_revision` or later, oldest first, at most `max_events` of them, as watch
    /// events: each with `prev_kv` (the key's version before the change) when one exists.
    /// For a watcher catching up from a past revision; new changes come from
    /// [`ApplyResult::events`]. `Compacted` if `start_revision` is below the compacted
    /// revision (etcd cancels such a watch); a start above the current revision gives none.
    /// Returns the events and the revision to continue from. `max_events` is exceeded only
    /// to finish the last revision's writes.
    pub fn changes(
        &self,
        key: &[u8],
        range_end: &[u8],
        start_revision: i64,
        max_events: usize,
    ) -> Result<(Vec<Event>, i64), MvccError> {
        let state = read_lock(&self.state);
        if start_revision < state.compacted_revision {
            return Err(MvccError::Compacted);
        }
        let range = schema::KeyRange::new(key, range_end);
        // The writes in the range since the start, in the order they happened: from the
        // recent changes when they reach back that far, else from every key of the range.
        let mut changed: Vec<(Revision, &[u8])> = Vec::new();
        if range.is_empty() {
        } else if start_revision >= state.recent_changes_from {
            let since = state
                .recent_changes
                .partition_point(|(revision, _)| revision.main < start_revision);
            changed.extend(
                state
                    .recent_changes
                    .range(since..)
                    .filter(|(_, changed_key)| range.contains(changed_key))
                    .map(|(revision, changed_key)| (*revision, changed_key.as_slice())),
            );
        } else {
            for (changed_key, versions) in state.keys.range::<[u8], _>(range.bounds()) {
                let since =
                    versions.partition_point(|version| version.revision.main < start_revision);
                changed.extend(
                    versions[since..]
                        .iter()
                        .map(|version| (version.revision, changed_key.as_slice())),
                );
            }
            changed.sort_unstable();
        }
        let mut events: Vec<Event> = Vec::new();
        let mut next_revision = start_revision.max(state.current_revision + 1);
        for (revision, changed_key) in changed {
            // Stop only at a revision boundary, so a watcher never sees half of a
            // transaction (which etcd's limit on txn operations keeps small).
            let last_revision = events
                .last()
                .and_then(|event| event.kv.as_ref())
                .map(|kv| kv.mod_revision);
            if events.len() >= max_events && last_revision != Some(revision.main) {
                next_revision = revision.main;
                break;
            }
            events.push(change_event(&state, changed_key, revision)?);
        }
        Ok((events, next_revision))
    }
}

/// The watch event for the version of `key` written at `revision`.
fn change_event(state: &State, key: &[u8], revision: Revision) -> Result<Event, MvccError> {
    use crate::proto::mvccpb::{event::EventType, KeyValue};
    let missing = || MvccError::Corrupt(format!("revision {revision:?} has no stored version"));
    let versions = state.keys.get(key).ok_or_else(missing)?;
    let position = versions
        .binary_search_by(|version| version.revision.cmp(&revision))
        .map_err(|_| missing())?;
    let version = &versions[position];
    let previous = position
        .checked_sub(1)
        .map(|before| &versions[before])
        .filter(|before| !before.is_tombstone())
        .map(|before| read::key_value(key, before));
    let (event_type, kv) = if version.is_tombstone() {
        (
            EventType::Delete,
            KeyValue {
                key: key.to_vec(),
                mod_revision: revision.main,
                ..Default::default()
            },
        )
    } else {
        (EventType::Put, read::key_value(key, version))
    };
    Ok(Event {
        r#type: event_type as i32,
        kv: Some(kv),
        prev_kv: previous,
    })
}
