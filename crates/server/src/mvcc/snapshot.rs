//! The snapshot image: the store's whole state as one checksummed byte string.
//!
//! Format (all integers little-endian):
//! ```text
//! magic "FLOTMVCC" | format version u8 = 2
//! applied index u64 | current revision i64 | compacted revision i64
//! metadata count u64,  each: name length u32, name (UTF-8), value length u32, value
//! member count u64,    each: member id u64, length u32, protobuf MemberAttributes
//! lease count u64,     each: lease id i64, TTL in seconds i64, remaining TTL checkpointed
//!                      (0: none) i64                                  (format 2 and later)
//! history count u64,   each: key length u32, key, main i64, sub i64, length u32, record
//! crc32c u32 of every byte before it
//! ```
//! Format 1, from before leases, has no lease section; it still restores, with none.
//! History entries are in (key, main, sub) order; the revision index is derived from them on
//! restore, so it is not sent.
//!
//! Rationale for a format of its own: the image carries only data, in an order that restores
//! without sorting, and it does not depend on how the store lays its state out in memory, so
//! nodes of different versions can exchange snapshots.

use prost::Message;

use super::error::MvccError;
use super::schema::{VersionRecord, RECORD_HEADER_BYTES};
use crate::proto::flotillapb::MemberAttributes;

const MAGIC: &[u8; 8] = b"FLOTMVCC";
const FORMAT_VERSION: u8 = 2;
/// The format before leases, still read.
const FORMAT_VERSION_WITHOUT_LEASES: u8 = 1;
const CHECKSUM_BYTES: usize = 4;

/// A decoded image, borrowing from the bytes it was decoded from.
pub(crate) struct Image<'a> {
    pub applied_index: u64,
    pub current_revision: i64,
    pub compacted_revision: i64,
    pub metadata: Vec<(&'a str, &'a [u8])>,
    pub members: Vec<(u64, &'a [u8])>,
    /// (lease id, TTL, checkpointed remaining TTL or 0), in seconds, in increasing id order.
    pub leases: Vec<(i64, i64, i64)>,
    /// (key, main, sub, encoded record), in strictly increasing (key, main, sub) order.
    pub history: Vec<(&'a [u8], i64, i64, &'a [u8])>,
}

/// Writes an image incrementally; `finish` appends the checksum.
pub(crate) struct ImageWriter {
    bytes: Vec<u8>,
}

impl ImageWriter {
    /// Starts an image with its header, with room for `capacity_bytes` in all.
    pub(crate) fn new(
        applied_index: u64,
        current_revision: i64,
        compacted_revision: i64,
        capacity_bytes: usize,
    ) -> Self {
        let mut bytes = Vec::with_capacity(capacity_bytes);
        bytes.extend_from_slice(MAGIC);
        bytes.push(FORMAT_VERSION);
        bytes.extend_from_slice(&applied_index.to_le_bytes());
        bytes.extend_from_slice(&current_revision.to_le_bytes());
        bytes.extend_from_slice(&compacted_revision.to_le_bytes());
        ImageWriter { bytes }
    }

    /// Starts a section of `count` items.
    pub(crate) fn count(&mut self, count: u64) {
        self.bytes.extend_from_slice(&count.to_le_bytes());
    }

    pub(crate) fn u64(&mut self, value: u64) {
        self.bytes.extend_from_slice(&value.to_le_bytes());
    }

    pub(crate) fn i64(&mut self, value: i64) {
        self.bytes.extend_from_slice(&value.to_le_bytes());
    }

    /// A length-prefixed byte string.
    pub(crate) fn bytes(&mut self, value: &[u8]) -> Result<(), MvccError> {
        let length = u32::try_from(value.len())
            .map_err(|_| MvccError::Corrupt(format!("a stored item of {} bytes", value.len())))?;
        self.bytes.extend_from_slice(&length.to_le_bytes());
        self.bytes.extend_from_slice(value);
        Ok(())
    }

    /// A length-prefixed version record (create revision, version, lease, value) written in
    /// place.
    pub(crate) fn record(&mut self, record: &VersionRecord) -> Result<(), MvccError> {
        let length = u32::try_from(RECORD_HEADER_BYTES + record.value.len()).map_err(|_| {
            MvccError::Corrupt(format!("a stored value of {} bytes", record.value.len()))
        })?;
        self.bytes.extend_from_slice(&length.to_le_bytes());
        self.bytes
            .extend_from_slice(&record.create_revision.to_le_bytes());
        self.bytes.extend_from_slice(&record.version.to_le_bytes());
        self.bytes.extend_from_slice(&record.lease.to_le_bytes());
        self.bytes.extend_from_slice(&record.value);
        Ok(())
    }

    /// The finished image.
    pub(crate) fn finish(mut self) -> Vec<u8> {
        let checksum = crc32c::crc32c(&self.bytes);
        self.bytes.extend_from_slice(&checksum.to_le_bytes());
        self.bytes
    }
}

/// Reads fields off the front of the image's body.
struct Cursor<'a> {
    rest: &'a [u8],
}

impl<'a> Cursor<'a> {
    fn take(&mut self, length: usize) -> Result<&'a [u8], MvccError> {
        if self.rest.len() < length {
            return Err(corrupt("ends inside a field"));
        }
        let (taken, rest) = self.rest.split_at(length);
        self.rest = rest;
        Ok(taken)
    }

    fn array8(&mut self) -> Result<[u8; 8], MvccError> {
        let mut array = [0u8; 8];
        array.copy_from_slice(self.take(8)?);
        Ok(array)
    }

    fn u64(&mut self) -> Result<u64, MvccError> {
        Ok(u64::from_le_bytes(self.array8()?))
    }

    fn i64(&mut self) -> Result<i64, MvccError> {
        Ok(i64::from_le_bytes(self.array8()?))
    }

    fn bytes(&mut self) -> Result<&'a [u8], MvccError> {
        let mut length = [0u8; 4];
        length.copy_from_slice(self.take(4)?);
        let length = usize::try_from(u32::from_le_bytes(length)).expect("u32 fits in usize");
        self.take(length)
    }

    /// A section's item count, refused if the remaining bytes cannot hold that many items
    /// of at least `item_bytes_min` each (Rationale: a corrupt count must not make us
    /// reserve memory for it).
    fn count(&mut self, item_bytes_min: usize) -> Result<usize, MvccError> {
        let count = self.u64()?;
        let fits = usize::try_from(count)
            .ok()
            .filter(|count| count.saturating_mul(item_bytes_min) <= self.rest.len());
        fits.ok_or_else(|| corrupt("a section counts more items than the image holds"))
    }
}

fn corrupt(what: &str) -> MvccError {
    MvccError::Corrupt(format!("snapshot image {what}"))
}

/// Decodes and checks an image completely: checksum, version, every record and member,
/// the order of the history, the revisions against the counters. Nothing is trusted that
/// was not checked, so a restore can fail before it touches the store.
pub(crate) fn decode(image: &[u8]) -> Result<Image<'_>, MvccError> {
    if image.len() < MAGIC.len() + 1 + CHECKSUM_BYTES {
        return Err(corrupt("is too short"));
    }
    let (body, checksum) = image.split_at(image.len() - CHECKSUM_BYTES);
    let mut stored = [0u8; CHECKSUM_BYTES];
    stored.copy_from_slice(checksum);
    if crc32c::crc32c(body) != u32::from_le_bytes(stored) {
        return Err(corrupt("fails its checksum"));
    }
    let mut cursor = Cursor { rest: body };
    if cursor.take(MAGIC.len())? != MAGIC {
        return Err(corrupt("is not a Flotilla MVCC image"));
    }
    let version = cursor.take(1)?[0];
    if version != FORMAT_VERSION && version != FORMAT_VERSION_WITHOUT_LEASES {
        return Err(MvccError::Corrupt(format!(
            "snapshot image format {version} is not supported"
        )));
    }
    let applied_index = cursor.u64()?;
    let current_revision = cursor.i64()?;
    let compacted_revision = cursor.i64()?;
    if current_revision < 1 || compacted_revision < 0 || compacted_revision > current_revision {
        return Err(corrupt("has impossible revisions"));
    }

    let metadata_count = cursor.count(8)?;
    let mut metadata = Vec::with_capacity(metadata_count);
    for _ in 0..metadata_count {
        let name = std::str::from_utf8(cursor.bytes()?)
            .map_err(|_| corrupt("has a non-UTF-8 metadata name"))?;
        metadata.push((name, cursor.bytes()?));
    }

    let member_count = cursor.count(12)?;
    let mut members = Vec::with_capacity(member_count);
    for _ in 0..member_count {
        let id = cursor.u64()?;
        let encoded = cursor.bytes()?;
        let member =
            MemberAttributes::decode(encoded).map_err(|_| corrupt("has an undecodable member"))?;
        if member.id != id {
            return Err(corrupt("files a member under another id"));
        }
        members.push((id, encoded));
    }

    let mut leases: Vec<(i64, i64, i64)> = Vec::new();
    if version >= FORMAT_VERSION {
        let lease_count = cursor.count(24)?;
        leases.reserve(lease_count);
        for _ in 0..lease_count {
            let id = cursor.i64()?;
            let ttl = cursor.i64()?;
            let remaining = cursor.i64()?;
            if id <= 0
                || leases
                    .last()
                    .is_some_and(|&(previous, _, _)| previous >= id)
            {
                return Err(corrupt("holds lease ids out of order"));
            }
            leases.push((id, ttl, remaining));
        }
    }

    let history_count = cursor.count(24)?;
    let mut history: Vec<(&[u8], i64, i64, &[u8])> = Vec::with_capacity(history_count);
    for _ in 0..history_count {
        let key = cursor.bytes()?;
        let main = cursor.i64()?;
        let sub = cursor.i64()?;
        let record = cursor.bytes()?;
        VersionRecord::decode(record)?;
        if main < 1 || main > current_revision || sub < 0 {
            return Err(corrupt("holds a version outside the store's revisions"));
        }
        if let Some(&(previous_key, previous_main, previous_sub, _)) = history.last() {
            if (previous_key, previous_main, previous_sub) >= (key, main, sub) {
                return Err(corrupt("holds history out of order"));
            }
        }
        history.push((key, main, sub, record));
    }
    if !cursor.rest.is_empty() {
        return Err(corrupt("has bytes after its last section"));
    }
    Ok(Image {
        applied_index,
        current_revision,
        compacted_revision,
        metadata,
        members,
        leases,
        history,
    })
}
