//! The MVCC key-value store: the state machine that committed Raft entries are applied to,
//! with etcd's v3 semantics, persisted in a redb database.
//!
//! Every write transaction (a put, a delete that deletes something, a txn with any write)
//! advances one global revision; a txn's writes share one revision, told apart by sub
//! revisions. Every version of every key is kept, deletes as tombstones, until a compaction,
//! so reads at past revisions work. Per key: create revision, mod revision, version (1 on
//! creation, +1 per put, gone on delete), value and lease, as in etcd.
//!
//! Contract with the runtime (the node loop):
//! - Apply committed entries in log order, each exactly once, through
//!   [`MvccStore::apply_batch`]: a batch is one redb write transaction that also records the
//!   last applied Raft index, so the store's state and its applied index are never out of
//!   step. After a restart, replay the log from [`MvccStore::applied_index`]` + 1`; entries at
//!   or below it are skipped (reported as [`ApplyOutcome::Skipped`]), so replaying more is
//!   harmless.
//! - An entry that carries no request (an empty entry, a configuration change) is applied as
//!   an `InternalRequest` with `request: None`, or through
//!   [`MvccStore::record_applied_index`], so the applied index still advances.
//! - Data that must commit together with an applied index (the Raft configuration after a
//!   configuration change) is staged with [`MvccStore::set_metadata`] BEFORE the batch or
//!   `record_applied_index` call that carries that index.
//! - Validate client requests with [`validate_put`], [`validate_delete_range`],
//!   [`validate_range`] and [`validate_txn`] BEFORE proposing them; the store checks again
//!   when applying, but a rejected entry still costs a log entry.
//! - Reads ([`MvccReader::range`]) run in their own read transaction, concurrently with a
//!   batch being applied; a reader sees whole batches only.
//!
//! ```
//! use server::mvcc::{ApplyOutcome, MvccOptions, MvccStore, Response};
//! use server::proto::etcdserverpb::{PutRequest, RangeRequest};
//! use server::proto::flotillapb::{internal_request::Request, InternalRequest};
//!
//! let directory = tempfile::tempdir().unwrap();
//! let mut store = MvccStore::open(directory.path().join("kv.redb"), MvccOptions::default()).unwrap();
//! let put = PutRequest { key: b"greeting".to_vec(), value: b"hello".to_vec(), ..Default::default() };
//! let entry = InternalRequest { id: 7, request: Some(Request::Put(put)) };
//! let results = store.apply_batch(&[(1, entry)]).unwrap();
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

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use prost::Message;
use redb::{Database, ReadTransaction, ReadableTable, ReadableTableMetadata, WriteTransaction};

pub use error::MvccError;
pub use validate::{
    validate_delete_range, validate_put, validate_range, validate_txn, MAX_TXN_OPERATIONS_DEFAULT,
};

use read::View;
use schema::{
    VersionRecord, HISTORY, INITIAL_REVISION, LIVE, MEMBERS, METADATA, REVISIONS, STATE,
    STATE_APPLIED_INDEX, STATE_COMPACTED_REVISION, STATE_CURRENT_REVISION,
};
use write::{EntryWriter, WriteTables};

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
}

/// 4 MiB less room for the response's header and framing.
pub const MAX_RESPONSE_BYTES_DEFAULT: usize = 4 * 1024 * 1024 - 64 * 1024;

impl Default for MvccOptions {
    fn default() -> Self {
        MvccOptions {
            max_response_bytes: MAX_RESPONSE_BYTES_DEFAULT,
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
    /// revision, and the deleted key-value as `prev_kv`.
    pub events: Vec<Event>,
}

/// The MVCC store. One owner applies entries (`&mut self`); any number of [`MvccReader`]s
/// read concurrently.
pub struct MvccStore {
    database: Arc<Database>,
    path: PathBuf,
    options: MvccOptions,
    current_revision: i64,
    compacted_revision: i64,
    applied_index: u64,
    /// Metadata to write in the next write transaction. Keyed by name, so it holds at most
    /// one value per name.
    staged_metadata: BTreeMap<String, Vec<u8>>,
}

/// The counters of a store, as one transaction sees them.
#[derive(Clone, Copy, Debug)]
struct Counters {
    current_revision: i64,
    compacted_revision: i64,
    applied_index: u64,
}

impl MvccStore {
    /// Opens the store at `path`, creating an empty one (revision 1, nothing applied) if the
    /// file does not exist.
    pub fn open(path: impl AsRef<Path>, options: MvccOptions) -> Result<Self, MvccError> {
        let path = path.as_ref().to_path_buf();
        let database = Database::create(&path)?;
        let transaction = database.begin_write()?;
        let counters = {
            // Opening every table creates missing ones, so readers never meet a missing table.
            let mut tables = WriteTables::open(&transaction)?;
            if tables.state.get(STATE_CURRENT_REVISION)?.is_none() {
                let fresh = Counters {
                    current_revision: INITIAL_REVISION,
                    compacted_revision: 0,
                    applied_index: 0,
                };
                store_counters(&mut tables, fresh)?;
            }
            read_counters(&tables.state)?
        };
        transaction.commit()?;
        Ok(MvccStore {
            database: Arc::new(database),
            path,
            options,
            current_revision: counters.current_revision,
            compacted_revision: counters.compacted_revision,
            applied_index: counters.applied_index,
            staged_metadata: BTreeMap::new(),
        })
    }

    /// A handle for reading concurrently with this store's writes.
    pub fn reader(&self) -> MvccReader {
        MvccReader {
            database: Arc::clone(&self.database),
            path: self.path.clone(),
            max_response_bytes: self.options.max_response_bytes,
        }
    }

    /// Applies committed entries, in order, in one write transaction that also records the
    /// last index as applied (and writes metadata staged by [`MvccStore::set_metadata`]).
    /// Entries at or below the applied index are skipped. Returns one result per entry.
    ///
    /// On `Err` (a storage failure) nothing of the batch was committed: the store, its
    /// applied index and the staged metadata are as before the call.
    ///
    /// Indexes must increase through the batch (the runtime applies the log in order).
    pub fn apply_batch(
        &mut self,
        entries: &[(u64, InternalRequest)],
    ) -> Result<Vec<ApplyResult>, MvccError> {
        for pair in entries.windows(2) {
            assert!(pair[0].0 < pair[1].0, "a batch's indexes increase");
        }
        let starting = self.counters();
        let pending = entries
            .iter()
            .any(|(index, _)| *index > starting.applied_index);
        if !pending && self.staged_metadata.is_empty() {
            return Ok(entries
                .iter()
                .map(|(index, request)| skipped(*index, request))
                .collect());
        }
        let transaction = self.database.begin_write()?;
        match self.apply_in(&transaction, entries, starting) {
            Ok((results, counters)) => {
                transaction.commit()?;
                self.current_revision = counters.current_revision;
                self.compacted_revision = counters.compacted_revision;
                self.applied_index = counters.applied_index;
                self.staged_metadata.clear();
                Ok(results)
            }
            Err(error) => {
                abort(transaction);
                Err(error)
            }
        }
    }

    fn apply_in(
        &self,
        transaction: &WriteTransaction,
        entries: &[(u64, InternalRequest)],
        starting: Counters,
    ) -> Result<(Vec<ApplyResult>, Counters), MvccError> {
        let mut tables = WriteTables::open(transaction)?;
        for (name, value) in &self.staged_metadata {
            tables.metadata.insert(name.as_str(), value.as_slice())?;
        }
        let mut counters = starting;
        let mut results = Vec::with_capacity(entries.len());
        for (index, request) in entries {
            if *index <= counters.applied_index {
                results.push(skipped(*index, request));
                continue;
            }
            let mut writer = EntryWriter::new(
                &mut tables,
                counters.current_revision,
                counters.compacted_revision,
                self.options.max_response_bytes,
            );
            let outcome = match apply_request(&mut writer, request.request.as_ref()) {
                Ok(response) => ApplyOutcome::Applied(response),
                Err(error) if error.is_store_failure() => return Err(error),
                Err(error) => {
                    // Every check runs before a request's first write; a rejection after one
                    // would commit half a request.
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
            counters.current_revision = writer.working_revision();
            counters.compacted_revision = writer.compacted_revision;
            counters.applied_index = *index;
            results.push(ApplyResult {
                index: *index,
                request_id: request.id,
                outcome,
                events,
            });
        }
        store_counters(&mut tables, counters)?;
        Ok((results, counters))
    }

    /// Records `index` as applied for an entry that does not touch the key-value data (and
    /// commits staged metadata with it). An index at or below the applied index changes
    /// nothing but still commits staged metadata.
    pub fn record_applied_index(&mut self, index: u64) -> Result<(), MvccError> {
        self.apply_batch(&[(index, InternalRequest::default())])
            .map(|_| ())
    }

    /// Stages an opaque metadata value (e.g. the encoded Raft configuration) to be written
    /// in the same transaction as the next [`MvccStore::apply_batch`] or
    /// [`MvccStore::record_applied_index`], so that it becomes durable together with the
    /// applied index that goes with it. A second value for the same name replaces the first.
    /// [`MvccStore::restore`] drops staged values.
    pub fn set_metadata(&mut self, name: &str, value: &[u8]) {
        self.staged_metadata
            .insert(name.to_string(), value.to_vec());
    }

    /// The committed metadata value of that name (staged values are not visible yet).
    pub fn metadata(&self, name: &str) -> Result<Option<Vec<u8>>, MvccError> {
        self.reader().metadata(name)
    }

    /// Every member whose attributes were applied, by id, removed ones included (they carry
    /// `removed: true`).
    pub fn members(&self) -> Result<Vec<MemberAttributes>, MvccError> {
        self.reader().members()
    }

    /// etcd's Range on the committed state; see [`MvccReader::range`].
    pub fn range(&self, request: &RangeRequest) -> Result<RangeResponse, MvccError> {
        self.reader().range(request)
    }

    /// The revision of the newest write (1 for a fresh store).
    pub fn current_revision(&self) -> i64 {
        self.current_revision
    }

    /// The revision of the last compaction; 0 before any.
    pub fn compacted_revision(&self) -> i64 {
        self.compacted_revision
    }

    /// The index of the last Raft entry applied; 0 before any.
    pub fn applied_index(&self) -> u64 {
        self.applied_index
    }

    /// The size of the database file. It does not shrink after compaction: redb reuses the
    /// freed pages.
    pub fn db_size_bytes(&self) -> Result<u64, MvccError> {
        self.reader().db_size_bytes()
    }

    fn counters(&self) -> Counters {
        Counters {
            current_revision: self.current_revision,
            compacted_revision: self.compacted_revision,
            applied_index: self.applied_index,
        }
    }

    /// The whole committed state as one image (format in the `snapshot` module: versioned,
    /// crc32c-checksummed), taken from one read transaction so it is consistent. The image
    /// is built in memory; its size is about the live data's.
    pub fn snapshot(&self) -> Result<bytes::Bytes, MvccError> {
        let transaction = self.database.begin_read()?;
        let counters = read_counters(&transaction.open_table(STATE)?)?;
        let mut image = snapshot::ImageWriter::new(
            counters.applied_index,
            counters.current_revision,
            counters.compacted_revision,
        );
        let metadata = transaction.open_table(METADATA)?;
        image.count(metadata.len()?);
        for entry in metadata.iter()? {
            let (name, value) = entry?;
            image.bytes(name.value().as_bytes())?;
            image.bytes(value.value())?;
        }
        let members = transaction.open_table(MEMBERS)?;
        image.count(members.len()?);
        for entry in members.iter()? {
            let (id, encoded) = entry?;
            image.u64(id.value());
            image.bytes(encoded.value())?;
        }
        let history = transaction.open_table(HISTORY)?;
        image.count(history.len()?);
        for entry in history.iter()? {
            let (stored_key, record) = entry?;
            let (key, main, sub) = stored_key.value();
            image.bytes(key)?;
            image.i64(main);
            image.i64(sub);
            image.bytes(record.value())?;
        }
        Ok(bytes::Bytes::from(image.finish()))
    }

    /// Replaces the whole state with a [`MvccStore::snapshot`] image, applied index
    /// included, in one write transaction: readers see the old state or the new, never a
    /// mix. The image is checked completely first; on `Err` the store is unchanged.
    pub fn restore(&mut self, image: &[u8]) -> Result<(), MvccError> {
        let image = snapshot::decode(image)?;
        let counters = Counters {
            current_revision: image.current_revision,
            compacted_revision: image.compacted_revision,
            applied_index: image.applied_index,
        };
        let transaction = self.database.begin_write()?;
        match restore_in(&transaction, &image, counters) {
            Ok(()) => transaction.commit()?,
            Err(error) => {
                abort(transaction);
                return Err(error);
            }
        }
        self.current_revision = counters.current_revision;
        self.compacted_revision = counters.compacted_revision;
        self.applied_index = counters.applied_index;
        self.staged_metadata.clear();
        Ok(())
    }
}

/// Drops a failed write transaction. Rationale: the caller reports the error that made it
/// fail; an abort that fails too changes nothing (redb never commits an aborted
/// transaction), so it is only logged.
fn abort(transaction: WriteTransaction) {
    if let Err(error) = transaction.abort() {
        tracing::warn!("aborting a failed write transaction: {error}");
    }
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
    writer: &mut EntryWriter<'_, '_>,
    request: Option<&Request>,
) -> Result<Response, MvccError> {
    Ok(match request {
        None => Response::Empty,
        Some(Request::Put(put)) => Response::Put(writer.put(put)?),
        Some(Request::DeleteRange(delete)) => Response::DeleteRange(writer.delete_range(delete)?),
        Some(Request::Txn(txn)) => Response::Txn(writer.txn(txn)?),
        Some(Request::Compaction(compaction)) => Response::Compaction(writer.compact(compaction)?),
        Some(Request::Member(member)) => {
            writer.member(member)?;
            Response::Member
        }
    })
}

fn restore_in(
    transaction: &WriteTransaction,
    image: &snapshot::Image<'_>,
    counters: Counters,
) -> Result<(), MvccError> {
    transaction.delete_table(HISTORY)?;
    transaction.delete_table(LIVE)?;
    transaction.delete_table(REVISIONS)?;
    transaction.delete_table(STATE)?;
    transaction.delete_table(METADATA)?;
    transaction.delete_table(MEMBERS)?;
    let mut tables = WriteTables::open(transaction)?;
    for (name, value) in &image.metadata {
        tables.metadata.insert(*name, *value)?;
    }
    for (id, encoded) in &image.members {
        tables.members.insert(*id, *encoded)?;
    }
    // History is in key order, so a key's newest version is the last before the key changes.
    let mut newest: Option<(&[u8], i64, i64, bool)> = None;
    for &(key, main, sub, record) in &image.history {
        tables.history.insert((key, main, sub), record)?;
        tables.revisions.insert((main, sub), key)?;
        if let Some((previous_key, previous_main, previous_sub, tombstone)) = newest {
            if previous_key != key && !tombstone {
                tables
                    .live
                    .insert(previous_key, (previous_main, previous_sub))?;
            }
        }
        newest = Some((key, main, sub, VersionRecord::encoded_is_tombstone(record)?));
    }
    if let Some((key, main, sub, false)) = newest {
        tables.live.insert(key, (main, sub))?;
    }
    store_counters(&mut tables, counters)
}

fn store_counters(tables: &mut WriteTables<'_>, counters: Counters) -> Result<(), MvccError> {
    let non_negative =
        |revision: i64| u64::try_from(revision).expect("revisions are never negative");
    tables.state.insert(
        STATE_CURRENT_REVISION,
        non_negative(counters.current_revision),
    )?;
    tables.state.insert(
        STATE_COMPACTED_REVISION,
        non_negative(counters.compacted_revision),
    )?;
    tables
        .state
        .insert(STATE_APPLIED_INDEX, counters.applied_index)?;
    Ok(())
}

fn read_counters(state: &impl ReadableTable<&'static str, u64>) -> Result<Counters, MvccError> {
    let read = |name: &str| -> Result<u64, MvccError> {
        state
            .get(name)?
            .map(|guard| guard.value())
            .ok_or_else(|| MvccError::Corrupt(format!("state row {name} is missing")))
    };
    let revision = |name: &str| -> Result<i64, MvccError> {
        i64::try_from(read(name)?)
            .map_err(|_| MvccError::Corrupt(format!("state row {name} is out of range")))
    };
    Ok(Counters {
        current_revision: revision(STATE_CURRENT_REVISION)?,
        compacted_revision: revision(STATE_COMPACTED_REVISION)?,
        applied_index: read(STATE_APPLIED_INDEX)?,
    })
}

/// Reads the store concurrently with writes: each call runs in its own redb read
/// transaction and sees the state after some whole batch. Cheap to clone.
#[derive(Clone)]
pub struct MvccReader {
    database: Arc<Database>,
    path: PathBuf,
    max_response_bytes: usize,
}

impl MvccReader {
    fn begin(&self) -> Result<(ReadTransaction, Counters), MvccError> {
        let transaction = self.database.begin_read()?;
        let counters = read_counters(&transaction.open_table(STATE)?)?;
        Ok((transaction, counters))
    }

    /// etcd's Range: a single key (`range_end` empty), [key, range_end), or every key from
    /// `key` on (`range_end` "\0"), at `revision` (<= 0: the current one), with etcd's sort,
    /// filter, `limit`, `keys_only` and `count_only` semantics. The response is also cut to
    /// the store's `max_response_bytes`, with `more` set. `header.revision` is the current
    /// revision; the caller fills the header's other fields.
    pub fn range(&self, request: &RangeRequest) -> Result<RangeResponse, MvccError> {
        let (transaction, counters) = self.begin()?;
        let history = transaction.open_table(HISTORY)?;
        let live = transaction.open_table(LIVE)?;
        let view = View {
            history: &history,
            live: &live,
            current_revision: counters.current_revision,
            compacted_revision: counters.compacted_revision,
        };
        view.range(request, self.max_response_bytes)
    }

    /// The committed metadata value of that name.
    pub fn metadata(&self, name: &str) -> Result<Option<Vec<u8>>, MvccError> {
        let transaction = self.database.begin_read()?;
        let table = transaction.open_table(METADATA)?;
        Ok(table.get(name)?.map(|guard| guard.value().to_vec()))
    }

    /// Every member whose attributes were applied, by id, removed ones included.
    pub fn members(&self) -> Result<Vec<MemberAttributes>, MvccError> {
        let transaction = self.database.begin_read()?;
        let table = transaction.open_table(MEMBERS)?;
        let mut members = Vec::new();
        for entry in table.iter()? {
            let (_, encoded) = entry?;
            members.push(
                MemberAttributes::decode(encoded.value())
                    .map_err(|error| MvccError::Corrupt(format!("member record: {error}")))?,
            );
        }
        Ok(members)
    }

    /// The size of the store's file.
    pub fn db_size_bytes(&self) -> Result<u64, MvccError> {
        let metadata = std::fs::metadata(&self.path)
            .map_err(|error| MvccError::Storage(Box::new(error.into())))?;
        Ok(metadata.len())
    }

    /// The committed current revision.
    pub fn current_revision(&self) -> Result<i64, MvccError> {
        Ok(self.begin()?.1.current_revision)
    }

    /// The committed compacted revision.
    pub fn compacted_revision(&self) -> Result<i64, MvccError> {
        Ok(self.begin()?.1.compacted_revision)
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
        let (transaction, counters) = self.begin()?;
        if start_revision < counters.compacted_revision {
            return Err(MvccError::Compacted);
        }
        let history = transaction.open_table(HISTORY)?;
        let revisions = transaction.open_table(REVISIONS)?;
        let range = schema::KeyRange::new(key, range_end);
        let mut events: Vec<Event> = Vec::new();
        let mut next_revision = start_revision.max(counters.current_revision + 1);
        for entry in revisions.range((start_revision, i64::MIN)..)? {
            let (revision, changed_key) = entry?;
            let (main, sub) = revision.value();
            let changed_key = changed_key.value();
            if !range.contains(changed_key) {
                continue;
            }
            // Stop only at a revision boundary, so a watcher never sees half of a
            // transaction (which etcd's limit on txn operations keeps small).
            let last_revision = events
                .last()
                .and_then(|event| event.kv.as_ref())
                .map(|kv| kv.mod_revision);
            if events.len() >= max_events && last_revision != Some(main) {
                next_revision = main;
                break;
            }
            events.push(change_event(&history, changed_key, main, sub)?);
        }
        Ok((events, next_revision))
    }
}

/// The watch event for the version of `key` written at (main, sub).
fn change_event(
    history: &impl ReadableTable<(&'static [u8], i64, i64), &'static [u8]>,
    key: &[u8],
    main: i64,
    sub: i64,
) -> Result<Event, MvccError> {
    use crate::proto::mvccpb::{event::EventType, KeyValue};
    let decode = |stored: &[u8]| VersionRecord::decode(stored);
    let Some(stored) = history.get((key, main, sub))? else {
        return Err(MvccError::Corrupt(format!(
            "revision {main}.{sub} has no stored version"
        )));
    };
    let record = decode(stored.value())?;
    let previous = match history
        .range((key, i64::MIN, i64::MIN)..(key, main, sub))?
        .next_back()
    {
        Some(entry) => {
            let (stored_key, stored) = entry?;
            let previous = decode(stored.value())?;
            (previous.version != 0).then(|| KeyValue {
                key: key.to_vec(),
                create_revision: previous.create_revision,
                mod_revision: stored_key.value().1,
                version: previous.version,
                value: previous.value,
                lease: previous.lease,
            })
        }
        None => None,
    };
    let (event_type, kv) = if record.version == 0 {
        (
            EventType::Delete,
            KeyValue {
                key: key.to_vec(),
                mod_revision: main,
                ..Default::default()
            },
        )
    } else {
        let kv = KeyValue {
            key: key.to_vec(),
            create_revision: record.create_revision,
            mod_revision: main,
            version: record.version,
            value: record.value,
            lease: record.lease,
        };
        (EventType::Put, kv)
    };
    Ok(Event {
        r#type: event_type as i32,
        kv: Some(kv),
        prev_kv: previous,
    })
}
