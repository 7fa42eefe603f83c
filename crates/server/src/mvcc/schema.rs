//! The redb tables and the encoding of one stored key version.
//!
//! Layout (Rationale: reads at the current revision, reads at a past revision and compaction
//! each get a table ordered the way they walk it):
//! - `history`: (key, main revision, sub revision) → [`VersionRecord`]. Every version of every
//!   key until compaction, deletes as tombstones. Ordered by key, then revision, so a read at
//!   revision R finds each key's newest version at or below R with one backwards seek.
//! - `live`: key → (main, sub) revision of the key's current version; absent once deleted.
//!   Reads at the current revision (the common case) and the write path walk this small table
//!   instead of the history, and skip deleted keys without touching them.
//! - `revisions`: (main, sub) → key. The order in which writes happened: compaction walks only
//!   the writes since the previous compaction, and a watcher can catch up from a revision.
//! - `state`: name → u64: current revision, compacted revision, applied Raft index.
//! - `metadata`: name → opaque bytes the runtime stores (e.g. the Raft configuration).
//! - `members`: member id → encoded `MemberAttributes`.

use redb::TableDefinition;

use super::error::MvccError;

/// (key, main revision, sub revision) → encoded [`VersionRecord`].
pub(crate) const HISTORY: TableDefinition<(&[u8], i64, i64), &[u8]> =
    TableDefinition::new("history");
/// key → (main, sub) revision of its live version.
pub(crate) const LIVE: TableDefinition<&[u8], (i64, i64)> = TableDefinition::new("live");
/// (main, sub) revision → key written at that revision.
pub(crate) const REVISIONS: TableDefinition<(i64, i64), &[u8]> = TableDefinition::new("revisions");
/// The store's counters, see the `STATE_*` names.
pub(crate) const STATE: TableDefinition<&str, u64> = TableDefinition::new("state");
/// Opaque metadata blobs given by the runtime.
pub(crate) const METADATA: TableDefinition<&str, &[u8]> = TableDefinition::new("metadata");
/// Member id → protobuf-encoded `MemberAttributes`.
pub(crate) const MEMBERS: TableDefinition<u64, &[u8]> = TableDefinition::new("members");

/// `state` row: the revision of the newest write.
pub(crate) const STATE_CURRENT_REVISION: &str = "current_revision";
/// `state` row: the revision of the last compaction (0 before any).
pub(crate) const STATE_COMPACTED_REVISION: &str = "compacted_revision";
/// `state` row: the index of the last Raft entry applied.
pub(crate) const STATE_APPLIED_INDEX: &str = "applied_index";

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
    /// The value.
    pub value: Vec<u8>,
}

/// Bytes before the value in an encoded record: create revision, version, lease.
const RECORD_HEADER_BYTES: usize = 24;

impl VersionRecord {
    /// The record that marks a deletion.
    pub(crate) fn tombstone() -> Self {
        VersionRecord {
            create_revision: 0,
            version: 0,
            lease: 0,
            value: Vec::new(),
        }
    }

    /// Fixed-width little-endian fields, then the value. Rationale: a tombstone check reads
    /// one field without decoding the value.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(RECORD_HEADER_BYTES + self.value.len());
        bytes.extend_from_slice(&self.create_revision.to_le_bytes());
        bytes.extend_from_slice(&self.version.to_le_bytes());
        bytes.extend_from_slice(&self.lease.to_le_bytes());
        bytes.extend_from_slice(&self.value);
        bytes
    }

    /// Decodes a record written by [`VersionRecord::encode`].
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
            value: bytes[RECORD_HEADER_BYTES..].to_vec(),
        })
    }

    /// Reads only the tombstone mark of an encoded record.
    pub(crate) fn encoded_is_tombstone(bytes: &[u8]) -> Result<bool, MvccError> {
        if bytes.len() < RECORD_HEADER_BYTES {
            return Err(MvccError::Corrupt(format!(
                "version record of {} bytes",
                bytes.len()
            )));
        }
        Ok(read_i64(&bytes[8..16]) == 0)
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
}
