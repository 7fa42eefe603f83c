//! The in-memory layout of the store and the encoding of one stored key version.
//!
//! Layout (Rationale: reads at the current revision, reads at a past revision and compaction
//! each find what they need without walking everything):
//! - `keys`: key → every version of it until compaction, oldest first, deletes as
//!   tombstones. A read at the current revision looks at each key's newest version; a read at
//!   revision R binary-searches the key's versions for the newest at or below R.
//!   Rationale for no index by revision (which write happened when): it cost about a fifth of
//!   the store's memory, and compaction, which needs it, is rare and walks the keys instead.
//! - counters: current revision, compacted revision, applied Raft index.
//! - `metadata`: name → opaque bytes the runtime stores (e.g. the initial members).
//! - `members`: member id → `MemberAttributes`.

use std::collections::BTreeMap;
use std::ops::Bound;

use super::error::MvccError;
use crate::proto::flotillapb::MemberAttributes;

/// The whole state of the store, guarded by the store's lock.
#[derive(Debug)]
pub(crate) struct State {
    /// Every key with any version, each with its versions in increasing revision order.
    pub keys: BTreeMap<Vec<u8>, Vec<Version>>,
    /// How many versions `keys` holds in all.
    pub version_count: u64,
    /// Opaque values set by the runtime.
    pub metadata: BTreeMap<String, Vec<u8>>,
    /// Member attributes applied through the log.
    pub members: BTreeMap<u64, MemberAttributes>,
    /// The revision of the newest write.
    pub current_revision: i64,
    /// The revision of the last compaction (0 before any).
    pub compacted_revision: i64,
    /// The index of the last Raft entry applied.
    pub applied_index: u64,
    /// An estimate of the bytes the key-value data takes: keys, values and a fixed cost per
    /// version. What the quota and the Status call report as the database size.
    pub size_bytes: u64,
    /// The most recent writes, oldest first: each version's revision and key, at most
    /// [`RECENT_CHANGES_MAX`]. Rationale: a watcher that is caught up asks for the changes
    /// since a recent revision, which this answers in the time of the changes themselves;
    /// searching every key of its range for them took time in the size of the range, on
    /// every revision, for every watcher.
    pub recent_changes: std::collections::VecDeque<(Revision, Vec<u8>)>,
    /// `recent_changes` holds every write at this revision and later.
    pub recent_changes_from: i64,
    /// The leases granted and not revoked: id to TTL in seconds. When a lease expires is the
    /// leader's business, not the store's; the store only knows which exist.
    pub leases: BTreeMap<i64, i64>,
    /// For leases the leader checkpointed: the remaining TTL it recorded, in seconds.
    pub lease_remaining: BTreeMap<i64, i64>,
}

/// How many recent writes the store remembers in order, for watchers.
pub(crate) const RECENT_CHANGES_MAX: usize = 65_536;

/// Bytes counted per stored version on top of its key and value: the revision, the record's
/// fields and the allocation's header.
pub(crate) const VERSION_OVERHEAD_BYTES: u64 = 64;

impl State {
    /// A fresh store: revision 1, nothing applied.
    pub(crate) fn new() -> Self {
        State {
            keys: BTreeMap::new(),
            version_count: 0,
            metadata: BTreeMap::new(),
            members: BTreeMap::new(),
            current_revision: INITIAL_REVISION,
            compacted_revision: 0,
            applied_index: 0,
            size_bytes: 0,
            recent_changes: std::collections::VecDeque::new(),
            recent_changes_from: 0,
            leases: BTreeMap::new(),
            lease_remaining: BTreeMap::new(),
        }
    }

    /// Remembers a write among the recent changes, forgetting the oldest when full.
    pub(crate) fn record_recent_change(&mut self, revision: Revision, key: &[u8]) {
        if self.recent_changes.len() == RECENT_CHANGES_MAX {
            if let Some((oldest, _)) = self.recent_changes.pop_front() {
                // What is left may hold only part of the oldest revision's writes.
                self.recent_changes_from = oldest.main + 1;
            }
        }
        self.recent_changes.push_back((revision, key.to_vec()));
    }

    /// The bytes one version of `key` is counted as.
    pub(crate) fn version_size_bytes(key: &[u8], record: &VersionRecord) -> u64 {
        (key.len() + record.value.len()) as u64 + VERSION_OVERHEAD_BYTES
    }
}

/// One stored version of a key and the revision that wrote it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Version {
    /// The revision of the write.
    pub revision: Revision,
    /// What it wrote.
    pub record: VersionRecord,
}

impl Version {
    /// True if this version records a deletion.
    pub(crate) fn is_tombstone(&self) -> bool {
        self.record.version == 0
    }
}

/// The revision of a fresh store, as etcd's: the first write gets revision 2, so that clients
/// that treat revision 0 or 1 specially behave as against etcd.
pub(crate) const INITIAL_REVISION: i64 = 1;

/// A point in the store's history: the main revision counts write transactions, the sub
/// revision counts writes inside one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Revision {
    /// The write transaction's revision.
    pub main: i64,
    /// The write's position inside its transaction, from 0.
    pub sub: i64,
}

/// One stored version of a key. A tombstone (the key was deleted) has version 0, as a live
/// key's version is always at least 1.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct VersionRecord {
    /// The main revision of the put that created the key (0 for a tombstone).
    pub create_revision: i64,
    /// Puts since creation, 1 on creation; 0 marks a tombstone.
    pub version: i64,
    /// The lease attached to this version, 0 for none.
    pub lease: i64,
    /// The value. (A boxed slice: no spare capacity, and 8 bytes smaller than a `Vec`, per
    /// version kept.)
    pub value: Box<[u8]>,
}

/// Bytes before the value in an encoded record: create revision, version, lease.
pub(crate) const RECORD_HEADER_BYTES: usize = 24;

impl VersionRecord {
    /// The record that marks a deletion.
    pub(crate) fn tombstone() -> Self {
        VersionRecord {
            create_revision: 0,
            version: 0,
            lease: 0,
            value: Box::default(),
        }
    }

    /// Decodes a record as snapshot images carry it: create revision, version and lease as
    /// fixed-width little-endian fields, then the value.
    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, MvccError> {
        if bytes.len() < RECORD_HEADER_BYTES {
            return Err(MvccError::Corrupt(format!(
                "version record of {} bytes, shorter than its {RECORD_HEADER_BYTES}-byte header",
                bytes.len()
            )));
        }
        Ok(VersionRecord {
            create_revision: read_i64(&bytes[0..8]),
            version: read_i64(&bytes[8..16]),
            lease: read_i64(&bytes[16..24]),
            value: bytes[RECORD_HEADER_BYTES..].into(),
        })
    }
}

fn read_i64(bytes: &[u8]) -> i64 {
    let mut array = [0u8; 8];
    array.copy_from_slice(bytes);
    i64::from_le_bytes(array)
}

/// The keys a request covers, decoded from etcd's (key, range_end) convention.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum KeyRange<'a> {
    /// `range_end` empty: only `key`.
    Single(&'a [u8]),
    /// `range_end` is "\0": every key at or after `key`.
    From(&'a [u8]),
    /// [start, end); empty when end <= start.
    Between(&'a [u8], &'a [u8]),
}

impl<'a> KeyRange<'a> {
    /// Decodes etcd's convention: an empty `range_end` names one key, "\0" means "to the end
    /// of the keyspace", anything else is an exclusive end.
    pub(crate) fn new(key: &'a [u8], range_end: &'a [u8]) -> Self {
        match range_end {
            [] => KeyRange::Single(key),
            [0] => KeyRange::From(key),
            end => KeyRange::Between(key, end),
        }
    }

    /// True if `candidate` is in the range.
    pub(crate) fn contains(&self, candidate: &[u8]) -> bool {
        match *self {
            KeyRange::Single(key) => candidate == key,
            KeyRange::From(start) => candidate >= start,
            KeyRange::Between(start, end) => candidate >= start && candidate < end,
        }
    }

    /// True if no key can be in the range (an end at or before the start).
    pub(crate) fn is_empty(&self) -> bool {
        matches!(*self, KeyRange::Between(start, end) if end <= start)
    }

    /// The range as bounds of an ordered map of keys. Call only on a range that is not
    /// empty (a map panics on a start after the end).
    pub(crate) fn bounds(&self) -> (Bound<&'a [u8]>, Bound<&'a [u8]>) {
        match *self {
            KeyRange::Single(key) => (Bound::Included(key), Bound::Included(key)),
            KeyRange::From(start) => (Bound::Included(start), Bound::Unbounded),
            KeyRange::Between(start, end) => (Bound::Included(start), Bound::Excluded(end)),
        }
    }
}
